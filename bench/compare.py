#!/usr/bin/python3
"""Side by side, in one run on this machine: Kamailio 5.6's `xmpp` module and this
gateway (release build, spool off and on) as the relay between SIP and XMPP.

    SIP -> XMPP:  SIPp UAC -> relay -> Prosody -> a counting XMPP client
    XMPP -> SIP:  an XMPP client -> Prosody -> relay -> a counting SIP UAS

The same Prosody, the same load and the same receivers for every relay; each relay is
started fresh, runs every rate, and is stopped. Reported per relay, direction and rate:
sent, delivered, throughput, latency percentiles (the send time travels in the body),
the relay's CPU per delivered message (all its processes, from /proc), its memory
(PSS of all its processes at the end of the rate), and
for XMPP -> SIP the errors the XMPP sender got back. A last table gives the gateway's
ratios to Kamailio. First, per rate, the baseline: the XMPP sender to the XMPP receiver
through Prosody alone (no relay, "prosody-alone"; `--no-baseline` skips it), and a table
of each relay's p99 latency over it. Everything runs on 127.0.0.1 with ports picked here; every process
started here is stopped here.

    /usr/bin/python3 bench/compare.py                        # 8000 and 12000/s, 5 s each
    /usr/bin/python3 bench/compare.py --rates 4000 --seconds 3 --relays gateway-off

Needs what scripts/setup.sh installs (prosody, sipp, kamailio) and a C compiler for
Kamailio's patched xmpp module, built once by ../shared/bench/kamailio-xmpp/ (or the
script named by KAMAILIO_XMPP_BUILD) into target/kamailio-xmpp/.
"""

import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the shared pieces: Prosody, the XMPP receiver, the gateway)

ROOT = load.ROOT
DOMAIN = load.DOMAIN
KCOMP = "kam.xmpp.test"  # Kamailio's component
UAS_USERS = 200  # distinct SIP destinations (RFC 3428: one MESSAGE pending per URI)
KAM_BUILD = os.environ.get(
    "KAMAILIO_XMPP_BUILD",
    os.path.join(os.path.dirname(ROOT), "shared", "bench", "kamailio-xmpp", "build-xmpp-module.sh"))


# --------------------------------------------------------------------------------------
# processes and their CPU


def tree_pids(pid):
    """`pid` and its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu(pid):
    total = 0.0
    for p in tree_pids(pid):
        try:
            total += load.cpu_seconds(p)
        except OSError:
            pass
    return total


def tree_pss_mib(pid):
    """The proportional set size of `pid` and its descendants now: shared memory (as
    Kamailio's) counted once, not once per process."""
    total = 0.0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) / 1024.0
        except OSError:
            pass
    return total


# --------------------------------------------------------------------------------------
# the SIP receiving end: a UAS that answers 200 and records what arrived


class Uas(threading.Thread):
    """Answers every MESSAGE 200 OK (a retransmission too) and records its body."""

    HEADERS = re.compile(rb"^(Via|v|From|f|To|t|Call-ID|i|CSeq):[^\r\n]*\r\n", re.M | re.I)

    def __init__(self, recorder):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.recorder = recorder

    def run(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(65536)
            except OSError:
                return
            if not data.startswith(b"MESSAGE "):
                continue
            head, _, body = data.partition(b"\r\n\r\n")
            self.recorder.record(body.decode("utf-8", "replace"), time.time())
            lines = b"".join(m.group(0) for m in self.HEADERS.finditer(head + b"\r\n"))
            lines = re.sub(rb"^(To|t):([^\r\n]*)\r\n", rb"\1:\2;tag=uas\r\n", lines, count=1,
                           flags=re.M | re.I)
            try:
                self.sock.sendto(b"SIP/2.0 200 OK\r\n" + lines + b"Content-Length: 0\r\n\r\n", peer)
            except OSError:
                pass


# --------------------------------------------------------------------------------------
# the XMPP sending end


class XmppSender(load.XmppReceiver):
    """A logged-in client that sends messages at a rate and counts the errors it gets."""

    def __init__(self, port, recorder):
        super().__init__(port, recorder, user="send")
        self.errors = 0
        self.lock = threading.Lock()

    def run(self):
        for data in self.chunks():
            n = data.count(b"type='error'") + data.count(b'type="error"')
            if n:
                with self.lock:
                    self.errors += n

    def send_at(self, rate, seconds, to_of):
        """Sends rate*seconds messages, paced in 10 ms batches; returns the time taken."""
        total, start, k = rate * seconds, time.time(), 0
        per_tick = max(1, rate // 100)
        while k < total:
            batch = []
            for _ in range(min(per_tick, total - k)):
                now = time.time()
                stamp = time.strftime("%Y-%m-%d\t%H:%M:%S", time.localtime(now))
                batch.append(f"<message to='{to_of(k)}' id='b{k}' type='chat'><body>t={stamp}\t{now:.6f}"
                             f" n={k}</body></message>")
                k += 1
            self.sock.sendall("".join(batch).encode())
            due = start + k / rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
        return time.time() - start


# --------------------------------------------------------------------------------------
# the relays


def kamailio_module(work):
    out_dir = os.path.join(ROOT, "target", "kamailio-xmpp")
    so = os.path.join(out_dir, "xmpp.so")
    if not os.path.exists(so):
        print("building Kamailio's patched xmpp module ...", file=sys.stderr)
        subprocess.run(["bash", KAM_BUILD, out_dir], check=True, stdout=subprocess.DEVNULL)
    return so


def start_kamailio(work, comp, uas_port):
    sip = load.free_port()
    template = os.path.join(os.path.dirname(KAM_BUILD), "kamailio.cfg.in")
    with open(template) as f:
        cfg = f.read()
    for key, value in {
        "XMPP_SO": kamailio_module(work), "SIP_PORT": str(sip), "COMPONENT": KCOMP,
        "COMPONENT_PORT": str(comp), "SECRET": load.SECRET,
        "FALLBACK_UAS": f"sip:127.0.0.1:{uas_port}", "CTL_SOCKET": os.path.join(work, "kam.ctl"),
    }.items():
        cfg = cfg.replace(f"@{key}@", value)
    path = os.path.join(work, "kamailio.cfg")
    with open(path, "w") as f:
        f.write(cfg)
    log = open(os.path.join(work, "kamailio.log"), "w")
    proc = subprocess.Popen(["kamailio", "-f", path, "-DD", "-E", "-m", "1024", "-M", "64",
                             "-P", os.path.join(work, "kam.pid"), "-w", work],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    time.sleep(2.0)
    if proc.poll() is not None:
        raise SystemExit("Kamailio did not start; see " + os.path.join(work, "kamailio.log"))
    return proc, sip


def start_relay(name, work, comp, uas_port):
    if name == "kamailio":
        proc, sip = start_kamailio(work, comp, uas_port)
        return proc, sip
    spool = name.split("-")[1]
    sip_extra = f'outbound_proxy = "sip:127.0.0.1:{uas_port};transport=udp"'
    proc, sip = load.start_gateway(work, comp, 9, spool, sip_extra=sip_extra)
    return proc, sip


def stop(proc):
    try:
        os.killpg(proc.pid, 15)
    except OSError:
        proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------------------
# one measurement


def settle(recorder, total):
    """Waits for stragglers: stops when nothing arrived for 3 s."""
    last, last_change = recorder.count(), time.time()
    while recorder.count() < total and time.time() - last_change < 3:
        time.sleep(0.1)
        if recorder.count() != last:
            last, last_change = recorder.count(), time.time()


PROFILE = {}  # --profile DIR: where `perf record` of each gateway measurement goes


def measure(relay, proc, recorder, total, start, send, label):
    cpu0 = tree_cpu(proc.pid)
    perf = None
    if PROFILE.get("dir") and relay != "kamailio":
        data = os.path.join(PROFILE["dir"], f"{label}.perf.data")
        perf = subprocess.Popen(["perf", "record", "-q", "-F", "299", "--call-graph", "dwarf,8192",
                                 "-p", str(proc.pid), "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    extra = send()
    settle(recorder, total)
    cpu = tree_cpu(proc.pid) - cpu0
    if perf:
        perf.send_signal(2)
        perf.wait(30)
        with open(os.path.join(PROFILE["dir"], f"{label}.txt"), "w") as out:
            subprocess.run(["perf", "report", "-i", data, "--stdio",
                            "--sort", "symbol", "--children", "--percent-limit", "3", "-g", "none"],
                           stdout=out, stderr=subprocess.DEVNULL)
    got = recorder.count()
    lat = list(recorder.latencies)
    span = max(recorder.last - start, 1e-3)
    r = {
        "relay": relay, "sent": total, "delivered": got,
        "delivered_pct": round(100.0 * got / total, 1),
        "throughput_per_s": round(got / span),
        "p50_ms": round(load.percentile(lat, 50), 1), "p99_ms": round(load.percentile(lat, 99), 1),
        "cpu_us_per_msg": round(cpu / max(got, 1) * 1e6, 1),
        "pss_mib": round(tree_pss_mib(proc.pid), 1),
    }
    r.update(extra)
    return r


def unexpected(errors):
    """The responses SIPp did not expect (its calls failed on them), by status line."""
    counts = {}
    if os.path.exists(errors):
        with open(errors, errors="replace") as f:
            for line in f:
                if line.startswith("SIP/2.0 "):
                    status = line.split()[1]
                    counts[status] = counts.get(status, 0) + 1
    return counts


def sip_to_xmpp(relay, proc, sip_port, rate, seconds, recorder, work):
    total = rate * seconds
    recorder.reset()
    if relay == "kamailio":
        user, domain = f"recv*{DOMAIN}", KCOMP
    else:
        user, domain = "recv", DOMAIN
    start = time.time()
    errors = os.path.join(work, f"sipp-{relay}-{rate}-errors.log")

    def send():
        sipp = subprocess.run(
            ["sipp", f"127.0.0.1:{sip_port}", "-sf", os.path.join(work, "uac.xml"),
             "-t", "u1", "-i", "127.0.0.1", "-bind_local", "-nostdin",
             "-s", user, "-set", "to_domain", domain, "-set", "from_user", "load",
             "-set", "from_domain", "sip.test", "-r", str(rate), "-m", str(total),
             "-l", str(max(1000, rate)), "-timeout", f"{seconds * 6 + 30}s", "-timeout_error",
             "-trace_err", "-error_file", errors],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return {"sipp_exit": sipp.returncode, "sipp_unexpected": unexpected(errors)}

    r = measure(relay, proc, recorder, total, start, send, f"{relay}-sip-xmpp-{rate}")
    r.update({"path": "sip->xmpp", "rate": rate})
    return r


def xmpp_to_sip(relay, proc, rate, seconds, recorder, sender):
    total = rate * seconds
    recorder.reset()
    with sender.lock:
        sender.errors = 0
    if relay == "kamailio":
        def to_of(k):
            return f"uas{k % UAS_USERS}*127.0.0.1@{KCOMP}"
    else:
        def to_of(k):
            return f"uas{k % UAS_USERS}@{load.ALIAS}"
    start = time.time()

    def send():
        return {"send_seconds": round(sender.send_at(rate, seconds, to_of), 2)}

    r = measure(relay, proc, recorder, total, start, send, f"{relay}-xmpp-sip-{rate}")
    with sender.lock:
        r["xmpp_errors"] = sender.errors
    r.update({"path": "xmpp->sip", "rate": rate})
    return r


def prosody_alone(prosody, rate, seconds, recorder, sender):
    """The baseline: the XMPP sender to the XMPP receiver through Prosody, no relay."""
    total = rate * seconds
    recorder.reset()
    start = time.time()

    def send():
        return {"send_seconds": round(sender.send_at(rate, seconds, lambda _k: f"recv@{DOMAIN}"), 2)}

    r = measure("prosody-alone", prosody, recorder, total, start, send, f"prosody-alone-{rate}")
    r.update({"path": "xmpp->xmpp", "rate": rate})
    return r


UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="compare uac">
  <Global variables="to_domain,from_user,from_domain"/>
  <send retrans="500">
    <![CDATA[
MESSAGE sip:[service]@[$to_domain] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
Max-Forwards: 70
From: <sip:[$from_user]@[$from_domain]>;tag=[pid]SIPpTag[call_number]
To: <sip:[service]@[$to_domain]>
Call-ID: [call_id]
CSeq: 1 MESSAGE
Content-Type: text/plain;charset=UTF-8
X-Load: [$from_user]@[$from_domain] to [$to_domain]
Content-Length: [len]

t=[timestamp] n=[call_number]
]]>
  </send>
  <recv response="200" optional="true" next="done"/>
  <recv response="202"/>
  <label id="done"/>
</scenario>
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=int, nargs="+", default=[8000, 12000])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--relays", nargs="+", default=["kamailio", "gateway-off", "gateway-on"],
                    choices=["kamailio", "gateway-off", "gateway-on"])
    ap.add_argument("--paths", nargs="+", default=["sip->xmpp", "xmpp->sip"],
                    choices=["sip->xmpp", "xmpp->sip"])
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the baseline (XMPP sender to XMPP receiver through Prosody alone)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--profile", metavar="DIR",
                    help="record each gateway measurement with `perf record --call-graph dwarf` into DIR, "
                         "and its inclusive report")
    args = ap.parse_args()
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        PROFILE["dir"] = os.path.abspath(args.profile)
    for tool in ("prosody", "prosodyctl", "sipp", "kamailio"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: run scripts/setup.sh")
    work = tempfile.mkdtemp(prefix="cpim-compare-")
    procs = []
    results = []
    try:
        with open(os.path.join(work, "uac.xml"), "w") as f:
            f.write(UAC)
        if "kamailio" in args.relays:
            kamailio_module(work)
        if any(r.startswith("gateway") for r in args.relays):
            load.gateway_binary()
        recorder = load.Recorder()
        prosody, c2s, comp = load.start_prosody(work, extra_components=[KCOMP], extra_users=["send"])
        procs.append(prosody)
        receiver = load.XmppReceiver(c2s, recorder)
        receiver.login()
        receiver.start()
        sender = XmppSender(c2s, recorder)
        sender.login()
        sender.start()
        uas = Uas(recorder)
        uas.start()
        if not args.no_baseline:
            for rate in args.rates:
                r = prosody_alone(prosody, rate, args.seconds, recorder, sender)
                results.append(r)
                print(json.dumps(r), flush=True)
        for relay in args.relays:
            proc, sip_port = start_relay(relay, work, comp, uas.port)
            time.sleep(1.0)
            try:
                for path in args.paths:
                    for rate in args.rates:
                        if path == "sip->xmpp":
                            r = sip_to_xmpp(relay, proc, sip_port, rate, args.seconds, recorder, work)
                        else:
                            r = xmpp_to_sip(relay, proc, rate, args.seconds, recorder, sender)
                        results.append(r)
                        print(json.dumps(r), flush=True)
            finally:
                stop(proc)
        print()
        print("| path | rate/s | relay | delivered | throughput/s | p50 ms | p99 ms | relay µs CPU/msg | relay PSS MiB after | XMPP errors | SIPp unexpected |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in sorted(results, key=lambda r: (r["path"], r["rate"], r["relay"])):
            print(f"| {r['path']} | {r['rate']} | {r['relay']} | {r['delivered_pct']} % | {r['throughput_per_s']} | "
                  f"{r['p50_ms']} | {r['p99_ms']} | {r['cpu_us_per_msg']} | {r['pss_mib']} | "
                  f"{r.get('xmpp_errors', '')} | "
                  f"{' '.join(f'{k}: {v}' for k, v in sorted(r.get('sipp_unexpected', {}).items()))} |")
        by = {(r["relay"], r["path"], r["rate"]): r for r in results}
        if "kamailio" in args.relays:
            print()
            print("| path | rate/s | gateway | throughput ÷ Kamailio | CPU/msg ÷ Kamailio |")
            print("|---|---|---|---|---|")
            for relay in (r for r in args.relays if r != "kamailio"):
                for path in args.paths:
                    for rate in args.rates:
                        k, g = by.get(("kamailio", path, rate)), by.get((relay, path, rate))
                        if not (k and g):
                            continue
                        t = g["throughput_per_s"] / max(k["throughput_per_s"], 1)
                        c = g["cpu_us_per_msg"] / max(k["cpu_us_per_msg"], 1e-9)
                        print(f"| {path} | {rate} | {relay} | {t:.2f} | {c:.2f} |")
        base = {r["rate"]: r for r in results if r["relay"] == "prosody-alone"}
        if base:
            print()
            print("| path | rate/s | relay | p99 ms | Prosody alone p99 ms | added p99 ms |")
            print("|---|---|---|---|---|---|")
            for r in sorted(results, key=lambda r: (r["path"], r["rate"], r["relay"])):
                b = base.get(r["rate"])
                if b and r["relay"] != "prosody-alone":
                    print(f"| {r['path']} | {r['rate']} | {r['relay']} | {r['p99_ms']} | {b['p99_ms']} | "
                          f"{r['p99_ms'] - b['p99_ms']:.1f} |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"cpus": os.cpu_count(), "results": results}, f, indent=2)
    finally:
        load.stop_all(procs, work)


if __name__ == "__main__":
    main()
