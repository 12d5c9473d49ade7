#!/usr/bin/python3
"""Presence at scale: N webhook watchers of one webhook presentity, through one
cpim-gateway process (release build, spool on, `presence_interval_secs = 1`).

The watchers are users of the app `watchers` (no URL: it reads its events by SSE); the
presentity is a user of the app `pres`, whose URL (here) approves every subscription
request. Reported: the time to subscribe all N (each approved), the gateway's RSS then,
and for each of two presence changes the time until every watcher's SSE stream had it,
how many never came, the RSS after it and after a few idle seconds. Everything runs on
127.0.0.1 with ports picked here; every process started here is stopped here.

    /usr/bin/python3 bench/presence.py                 # 10 000 and 100 000 watchers
    /usr/bin/python3 bench/presence.py --watchers 1000
"""

import argparse
import http.client
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (free ports, the release binary, /proc readings)

WATCHERS_TOKEN = "watchers-token-0123456789"
PRES_TOKEN = "pres-token-0123456789abc"
PRESENTITY = "im:p@p.test"


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


class Api:
    """Keep-alive JSON requests to the gateway's API, one connection per thread."""

    def __init__(self, port, token):
        self.port, self.token = port, token
        self.local = threading.local()

    def post(self, path, body):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        for _ in range(50):
            try:
                conn.request("POST", path, data, headers)
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                time.sleep(0.05)
                continue
            if resp.status in (429, 503):
                time.sleep(float(resp.getheader("Retry-After", "1")))
                continue
            return resp.status
        return 0


def in_pool(threads, items, work):
    q = queue.Queue()
    for item in items:
        q.put(item)
    failures = []

    def run():
        while True:
            try:
                item = q.get_nowait()
            except queue.Empty:
                return
            status = work(item)
            if status not in (200, 202, 204):
                failures.append((item, status))

    pool = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return failures


class SseCounter(threading.Thread):
    """Reads the watchers app's event stream; counts presence events by note."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.lock = threading.Lock()
        self.notes = {}
        self.last = {}
        self.approvals = 0

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)
        conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {WATCHERS_TOKEN}",
                                                   "Accept": "text/event-stream"})
        resp = conn.getresponse()
        while True:
            line = resp.fp.readline()
            if not line:
                return
            if not line.startswith(b"data:"):
                continue
            try:
                event = json.loads(line[5:])
            except ValueError:
                continue
            now = time.time()
            with self.lock:
                if event.get("type") == "presence":
                    note = event.get("note")
                    self.notes[note] = self.notes.get(note, 0) + 1
                    self.last[note] = now
                elif event.get("type") == "subscription" and event.get("op") == "approve":
                    self.approvals += 1

    def count(self, note):
        with self.lock:
            return self.notes.get(note, 0)


class Approver:
    """The `pres` app's URL: every subscription request to its user is approved (through
    `self.api`, set once the gateway runs)."""

    def __init__(self):
        self.api = None
        todo = queue.Queue()

        def on_event(event, _now):
            if event.get("type") == "subscription" and event.get("op") == "subscribe":
                todo.put(event["from"])

        self.server = load.events_server(on_event)

        def approve():
            while True:
                watcher = todo.get()
                self.api.post("/v1/subscriptions/authorizations",
                              {"presentity": PRESENTITY, "watcher": watcher, "approve": True})

        for _ in range(4):
            threading.Thread(target=approve, daemon=True).start()


def start_gateway(work, hooks, watchers):
    api, admin = load.free_port(), load.free_port()
    cfg = os.path.join(work, "gateway.toml")
    with open(cfg, "w") as f:
        f.write(f"""[gateway]
data_dir = "data"
spool = true
presence_interval_secs = 1
max_subscriptions = {max(100000, 2 * watchers)}
queue_total = {max(1000000, 4 * watchers)}
queue_per_destination = 100000

[admin]
listen = "127.0.0.1:{admin}"

[adapters.webhook]
type = "webhook"
listen = "127.0.0.1:{api}"
rate_per_sec = 1000000
burst = 1000000

[[adapters.webhook.apps]]
name = "watchers"
domains = ["w.test"]
token = "{WATCHERS_TOKEN}"

[[adapters.webhook.apps]]
name = "pres"
domains = ["p.test"]
token = "{PRES_TOKEN}"
url = "http://127.0.0.1:{hooks}/hooks"
""")
    log = open(os.path.join(work, "gateway.log"), "w")
    proc = subprocess.Popen([load.gateway_binary(), "run", "--config", cfg],
                            env=dict(os.environ, RUST_LOG="warn"), cwd=work,
                            stdout=subprocess.DEVNULL, stderr=log)
    load.wait_port(api)
    return proc, api


def wait_count(counter, note, n, quiet=10):
    """Waits until `n` events with `note` arrived or none for `quiet` s."""
    last, changed = counter.count(note), time.time()
    while counter.count(note) < n and time.time() - changed < quiet:
        time.sleep(0.05)
        if counter.count(note) != last:
            last, changed = counter.count(note), time.time()
    return counter.count(note)


def run(n):
    work = tempfile.mkdtemp(prefix="cpim-presence-")
    procs = []
    try:
        approver = Approver()
        gw, port = start_gateway(work, approver.server.server_address[1], n)
        procs.append(gw)
        watchers_api, pres_api = Api(port, WATCHERS_TOKEN), Api(port, PRES_TOKEN)
        approver.api = pres_api
        counter = SseCounter(port)
        counter.start()
        pres_api.post("/v1/presence", {"from": PRESENTITY, "status": "available", "note": "0"})
        t0 = time.time()
        failures = in_pool(8, range(n), lambda i: watchers_api.post(
            "/v1/subscriptions", {"watcher": f"im:w{i}@w.test", "target": PRESENTITY}))
        deadline = time.time() + 600
        while counter.approvals < n and time.time() < deadline:
            time.sleep(0.1)
        subscribed_s = time.time() - t0
        time.sleep(2)  # the first state of each has gone out, the spool has caught up
        r = {"watchers": n, "refused": len(failures), "approved": counter.approvals,
             "subscribe_s": round(subscribed_s, 1), "rss_subscribed_mib": round(rss_mib(gw.pid), 1)}
        for note in ("1", "2"):
            cpu0 = load.cpu_seconds(gw.pid)
            t1 = time.time()
            pres_api.post("/v1/presence", {"from": PRESENTITY, "status": "away", "note": note})
            got = wait_count(counter, note, n)
            fanout = counter.last.get(note, t1) - t1
            r[f"fanout_{note}_s"] = round(fanout, 2)
            r[f"fanout_{note}_cpu_s"] = round(load.cpu_seconds(gw.pid) - cpu0, 2)
            r[f"lost_{note}"] = n - got
            r[f"rss_after_{note}_mib"] = round(rss_mib(gw.pid), 1)
            time.sleep(5)
            r[f"rss_idle_{note}_mib"] = round(rss_mib(gw.pid), 1)
        r["peak_rss_mib"] = round(load.peak_rss_mib(gw.pid), 1)
        return r
    finally:
        load.stop_all(procs, work)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--watchers", type=int, nargs="+", default=[10000, 100000])
    args = ap.parse_args()
    results = []
    for n in args.watchers:
        r = run(n)
        results.append(r)
        print(json.dumps(r), flush=True)
    print()
    print("| watchers | subscribe s | RSS MiB subscribed | fan-out 1 s (CPU s) | lost | RSS after / idle | "
          "fan-out 2 s (CPU s) | lost | RSS after / idle | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['watchers']} | {r['subscribe_s']} | {r['rss_subscribed_mib']} | "
              f"{r['fanout_1_s']} ({r['fanout_1_cpu_s']}) | {r['lost_1']} | "
              f"{r['rss_after_1_mib']} / {r['rss_idle_1_mib']} | {r['fanout_2_s']} ({r['fanout_2_cpu_s']}) | "
              f"{r['lost_2']} | {r['rss_after_2_mib']} / {r['rss_idle_2_mib']} | {r['peak_rss_mib']} |")


if __name__ == "__main__":
    main()
