#!/usr/bin/python3
"""Load test: SIPp MESSAGE traffic at fixed rates through one cpim-gateway process
into Prosody (a counting XMPP receiver) and into an HTTP receiver (webhook app).

Reports per spool mode, target and rate: sent, delivered, loss, throughput (delivered
per second from the first send to the last arrival), latency percentiles (the send time
travels in the body), the gateway's CPU seconds per 10 000 messages and its peak RSS
(from /proc). With both spool modes, a last table compares them. Everything runs on
127.0.0.1 with ports picked here; every process started here is stopped here.

    /usr/bin/python3 bench/load.py                     # rates 2000 5000 8000 10000, 5 s each
    /usr/bin/python3 bench/load.py --rates 1000 --seconds 3 --targets http
    /usr/bin/python3 bench/load.py --targets http --spool off on   # the cost of durability

Needs: prosody, sip-tester (sipp) — scripts/setup.sh installs them — and a release build
of the gateway (built here when missing).
"""

import argparse
import base64
import http.server
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAIN = "xmpp.test"
COMPONENT = "gw.xmpp.test"
ALIAS = "sip.gw.xmpp.test"
SECRET = "bench-secret"
TOKEN = "bench-token-0123456789"


def free_port():
    while True:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()


def wait_port(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


class Recorder:
    """Arrival times and latencies (ms) of bodies `t=<date>\\t<time>\\t<epoch> n=<k>`."""

    PATTERN = re.compile(r"t=[^\t]*\t[^\t]*\t(\d+\.\d+) n=(\d+)")

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = set()
        self.latencies = []
        self.last = 0.0

    def reset(self):
        with self.lock:
            self.seen.clear()
            self.latencies.clear()
            self.last = 0.0

    def record(self, text, now):
        for m in self.PATTERN.finditer(text):
            n = int(m.group(2))
            with self.lock:
                if n in self.seen:
                    continue
                self.seen.add(n)
                self.latencies.append((now - float(m.group(1))) * 1000.0)
                self.last = max(self.last, now)

    def count(self):
        with self.lock:
            return len(self.seen)


# --------------------------------------------------------------------------------------
# Prosody and a counting XMPP client (plain TCP, SASL PLAIN: loopback only)


def start_prosody(work, extra_components=(), extra_users=()):
    """Prosody with the gateway's two components (and `extra_components`), user `recv`
    (and `extra_users`, each with password `<user>-pass`)."""
    c2s, comp = free_port(), free_port()
    extra = "".join(f'Component "{c}"\n    component_secret = "{SECRET}"\n' for c in extra_components)
    cfg = os.path.join(work, "prosody.cfg.lua")
    for d in ("data", "certs"):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    with open(cfg, "w") as f:
        f.write(f"""run_as_root = true
pidfile = "{work}/prosody.pid"
data_path = "{work}/data"
certificates = "{work}/certs"
log = {{ {{ levels = {{ min = "error" }}, to = "file", filename = "{work}/prosody.log" }} }}
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ }}
component_ports = {{ {comp} }}
component_interfaces = {{ "127.0.0.1" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping" }}
modules_disabled = {{ "s2s"; "s2s_auth_certs" }}
VirtualHost "{DOMAIN}"
Component "{COMPONENT}"
    component_secret = "{SECRET}"
Component "{ALIAS}"
    component_secret = "{SECRET}"
{extra}""")
    proc = subprocess.Popen(["prosody", "-F", "--config", cfg], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(c2s)
    wait_port(comp)
    for user in ("recv", *extra_users):
        subprocess.run(["prosodyctl", "--config", cfg, "register", user, DOMAIN, f"{user}-pass"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, c2s, comp


class XmppReceiver(threading.Thread):
    def __init__(self, port, recorder, user="recv"):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.recorder = recorder
        self.user = user
        self.buf = ""

    def _read_until(self, needle):
        while needle not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise SystemExit("XMPP stream closed during login")
            self.buf += data.decode("utf-8", "replace")
        head, _, self.buf = self.buf.partition(needle)
        return head

    def _open(self):
        self.sock.sendall(f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' "
                          "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
                          .encode())
        self._read_until("</stream:features>")

    def login(self):
        self._open()
        token = base64.b64encode(f"\0{self.user}\0{self.user}-pass".encode()).decode()
        self.sock.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
                          .encode())
        self._read_until("<success")
        self._read_until(">")
        self.buf = ""
        self._open()
        self.sock.sendall(b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                          b"<resource>bench</resource></bind></iq>")
        self._read_until("</iq>")
        self.sock.sendall(b"<presence><priority>1</priority></presence>")

    def chunks(self):
        """What the stream brings, read by read, until it closes."""
        while True:
            try:
                data = self.sock.recv(262144)
            except OSError:
                return
            if not data:
                return
            yield data

    def run(self):
        tail = ""
        for data in self.chunks():
            now = time.time()
            text = tail + data.decode("utf-8", "replace")
            cut = text.rfind("</message>")
            if cut < 0:
                tail = text[-65536:]
                continue
            self.recorder.record(text[:cut], now)
            tail = text[cut:]


# --------------------------------------------------------------------------------------
# HTTP receiver (the webhook app)


def events_server(on_event):
    """An app's URL: answers every transaction 200 and hands each event to
    `on_event(event, arrival time)`."""
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            now = time.time()
            try:
                for event in json.loads(body).get("events", []):
                    on_event(event, now)
            except ValueError:
                pass
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_http(recorder):
    def on_event(event, now):
        if event.get("type") == "message":
            recorder.record(event.get("text", ""), now)

    return events_server(on_event)


# --------------------------------------------------------------------------------------
# The gateway


def gateway_binary():
    # CPIM_GATEWAY_BINARY: measure another build (e.g. an older commit's) instead.
    if os.environ.get("CPIM_GATEWAY_BINARY"):
        return os.environ["CPIM_GATEWAY_BINARY"]
    binary = os.path.join(ROOT, "target", "release", "cpim-gateway")
    # Always asked: a no-op when the binary is up to date, a rebuild when it is stale.
    print("checking the release binary ...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "cpim-gateway"],
                   cwd=ROOT, check=True)
    return binary


def start_gateway(work, comp, hooks, spool, sip_extra=""):
    sip, api, admin = free_port(), free_port(), free_port()
    cfg = os.path.join(work, "gateway.toml")
    with open(cfg, "w") as f:
        f.write(f"""[gateway]
data_dir = "data-spool-{spool}"
spool = {"true" if spool == "on" else "false"}
queue_per_destination = 100000
queue_total = 1000000

[admin]
listen = "127.0.0.1:{admin}"

[adapters.sip]
type = "sip"
domains = ["sip.test"]
listen = [{{ transport = "udp", address = "127.0.0.1:{sip}" }}]
{sip_extra}

[adapters.xmpp]
type = "xmpp"
server = "127.0.0.1:{comp}"
user_domains = ["{DOMAIN}"]
message_type = "chat"

[[adapters.xmpp.components]]
domain = "{COMPONENT}"
secret = "{SECRET}"

[[adapters.xmpp.components]]
domain = "{ALIAS}"
secret = "{SECRET}"

[adapters.webhook]
type = "webhook"
listen = "127.0.0.1:{api}"

[[adapters.webhook.apps]]
name = "bench"
domains = ["app.test"]
token = "{TOKEN}"
url = "http://127.0.0.1:{hooks}/hooks"

[[aliases]]
domain = "sip.test"
on = "xmpp"
as = "{ALIAS}"
""")
    log = open(os.path.join(work, "gateway.log"), "w")
    proc = subprocess.Popen([gateway_binary(), "run", "--config", cfg],
                            env=dict(os.environ, RUST_LOG="warn,cpim_xmpp=info"),
                            stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 20
    while time.time() < deadline:
        with open(os.path.join(work, "gateway.log")) as f:
            if f.read().count("component connected") >= 2:
                proc.admin = admin
                return proc, sip
        time.sleep(0.1)
    raise SystemExit("the gateway did not connect to Prosody; see " + work)


def spool_metrics(admin):
    """The spool's counters from /metrics (empty with the spool off)."""
    import urllib.request
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("cpim_spool_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def run_one(gw, sip_port, target, rate, seconds, recorder, work):
    total = rate * seconds
    recorder.reset()
    user, domain = ("recv", DOMAIN) if target == "xmpp" else ("sink", "app.test")
    cpu0 = cpu_seconds(gw.pid)
    spool0 = spool_metrics(gw.admin)
    start = time.time()
    sipp = subprocess.run(
        ["sipp", f"127.0.0.1:{sip_port}", "-sf", os.path.join(ROOT, "bench", "sipp_load.xml"),
         "-t", "u1", "-i", "127.0.0.1", "-bind_local", "-nostdin",
         "-s", user, "-set", "to_domain", domain, "-set", "from_user", "load",
         "-set", "from_domain", "sip.test",
         "-r", str(rate), "-m", str(total), "-l", str(max(1000, rate)),
         "-timeout", f"{seconds * 6 + 30}s", "-timeout_error"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sent_in = time.time() - start
    # Wait for the stragglers: stop when nothing arrived for 3 s.
    last, last_change = recorder.count(), time.time()
    while recorder.count() < total and time.time() - last_change < 3:
        time.sleep(0.1)
        if recorder.count() != last:
            last, last_change = recorder.count(), time.time()
    cpu = cpu_seconds(gw.pid) - cpu0
    got = recorder.count()
    lat = list(recorder.latencies)
    span = max(recorder.last - start, 1e-3)
    spool1 = spool_metrics(gw.admin)
    commits = spool1.get("cpim_spool_commits_total", 0) - spool0.get("cpim_spool_commits_total", 0)
    commit_s = spool1.get("cpim_spool_commit_seconds_total", 0) - spool0.get("cpim_spool_commit_seconds_total", 0)
    return {
        "spool_commits": int(commits),
        "messages_per_commit": round(got / commits, 1) if commits else None,
        "commit_ms_mean": round(commit_s / commits * 1000, 3) if commits else None,
        "target": target, "rate": rate, "sent": total, "delivered": got,
        "loss": total - got, "sipp_exit": sipp.returncode, "send_seconds": round(sent_in, 2),
        "throughput_per_s": round(got / span),
        "p50_ms": round(percentile(lat, 50), 1), "p90_ms": round(percentile(lat, 90), 1),
        "p99_ms": round(percentile(lat, 99), 1), "max_ms": round(max(lat) if lat else float("nan"), 1),
        "cpu_s_per_10k": round(cpu / max(got, 1) * 10000, 2), "peak_rss_mib": round(peak_rss_mib(gw.pid), 1),
    }


def stop_all(procs, work):
    """Stops `procs` (the last started first) and removes `work`."""
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=int, nargs="+", default=[2000, 5000, 8000, 10000])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--targets", nargs="+", default=["xmpp", "http"], choices=["xmpp", "http"])
    ap.add_argument("--spool", nargs="+", default=["on"], choices=["on", "off"],
                    help="spool modes to run, each with a fresh gateway (default: on, as shipped)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    for tool in ("prosody", "prosodyctl", "sipp"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: run scripts/setup.sh")
    work = tempfile.mkdtemp(prefix="cpim-bench-")
    procs = []
    try:
        recorder = Recorder()
        prosody, c2s, comp = start_prosody(work)
        procs.append(prosody)
        http_server = start_http(recorder)
        receiver = XmppReceiver(c2s, recorder)
        receiver.login()
        receiver.start()
        results = []
        for spool in args.spool:
            gw, sip_port = start_gateway(work, comp, http_server.server_address[1], spool)
            procs.append(gw)
            time.sleep(0.5)
            for target in args.targets:
                for rate in args.rates:
                    r = run_one(gw, sip_port, target, rate, args.seconds, recorder, work)
                    r["spool"] = spool
                    results.append(r)
                    print(json.dumps(r), flush=True)
            gw.terminate()
            gw.wait(20)
        print()
        print("| spool | target | rate/s | sent | delivered | loss | throughput/s | p50 ms | p90 ms | p99 ms | max ms | CPU s / 10k | peak RSS MiB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['spool']} | {r['target']} | {r['rate']} | {r['sent']} | {r['delivered']} | {r['loss']} | "
                  f"{r['throughput_per_s']} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                  f"{r['cpu_s_per_10k']} | {r['peak_rss_mib']} |")
        if {"on", "off"} <= set(args.spool):
            print()
            print("| target | rate/s | throughput off | throughput on | on/off | CPU s/10k off | CPU s/10k on | p50 ms off | p50 ms on |")
            print("|---|---|---|---|---|---|---|---|---|")
            by = {(r["spool"], r["target"], r["rate"]): r for r in results}
            for target in args.targets:
                for rate in args.rates:
                    off, on = by[("off", target, rate)], by[("on", target, rate)]
                    ratio = on["throughput_per_s"] / max(off["throughput_per_s"], 1)
                    print(f"| {target} | {rate} | {off['throughput_per_s']} | {on['throughput_per_s']} | {ratio:.2f} | "
                          f"{off['cpu_s_per_10k']} | {on['cpu_s_per_10k']} | {off['p50_ms']} | {on['p50_ms']} |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": os.uname().machine, "cpus": os.cpu_count(), "results": results}, f, indent=2)
    finally:
        stop_all(procs, work)


if __name__ == "__main__":
    main()
