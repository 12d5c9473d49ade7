#!/usr/bin/python3
"""The people on each side of the gateway, for scripts/demo.sh (Debian's python3 with
python3-slixmpp; standard library otherwise). Loopback only, fixed addresses of the
sample gateway.toml:

- alice, a SIP phone: registers as sip:alice@sip.localhost at the gateway (digest), sends
  MESSAGEs (answering the gateway's 407) and answers the MESSAGEs it gets with 200;
- bob, an XMPP user of Prosody (bob@xmpp.localhost);
- the app "demo": posts to the webhook API and receives the gateway's signed
  transactions on 127.0.0.1:8081.

It sends a message each way between each pair, prints what arrived where, and exits 0
when everything arrived (1 otherwise).

Usage: demo_peers.py PROSODY_C2S_PORT
"""

import asyncio
import hashlib
import http.server
import json
import random
import sys
import threading
import time
import urllib.request

from slixmpp import ClientXMPP

GATEWAY_SIP = ("127.0.0.1", 5060)
API = "http://127.0.0.1:8080"
TOKEN = "dev-token-change-me"
ALICE = "sip:alice@sip.localhost"
ALICE_PASSWORD = "alice-dev-password"
# How the others are written on each network (see `cpim-gateway explain`).
ALICE_ON_XMPP = "alice@sip.gw.xmpp.localhost"
BOT_ON_XMPP = "bot\\40app.localhost@gw.xmpp.localhost"
BOB_ON_SIP = "sip:bob@xmpp.localhost"
BOT_ON_SIP = "sip:bot@app.localhost"

arrived = []
lock = threading.Lock()


def got(where, sender, text):
    with lock:
        arrived.append((where, text))
    print(f"  -> {where:<28} got {text!r:<36} from {sender}", flush=True)


# --- the app's webhook receiver ---------------------------------------------------------


class Hooks(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        for event in body.get("events", []):
            if event.get("type") == "message":
                got("app (webhook)", event.get("from"), event.get("text"))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args):
        pass


def post_message(frm, to, text):
    request = urllib.request.Request(
        API + "/v1/messages",
        data=json.dumps({"from": frm, "to": to, "text": text}).encode(),
        headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return answer.status


# --- alice's SIP phone ---------------------------------------------------------------------


def header(msg, name):
    for line in msg.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def digest(challenge, method, uri, user, password):
    fields = {}
    for part in challenge[len("Digest "):].split(","):
        key, _, value = part.strip().partition("=")
        fields[key] = value.strip('"')
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()
    ha1 = md5(f"{user}:{fields['realm']}:{password}")
    ha2 = md5(f"{method}:{uri}")
    cnonce, nc = f"{random.getrandbits(32):08x}", "00000001"
    response = md5(f"{ha1}:{fields['nonce']}:{nc}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="{user}", realm="{fields["realm"]}", nonce="{fields["nonce"]}", '
        f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"'
    )


class Phone(asyncio.DatagramProtocol):
    def __init__(self):
        self.waiting = {}
        self.cseq = 0

    def connection_made(self, transport):
        self.transport = transport
        self.me = "%s:%d" % transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data, addr):
        msg = data.decode(errors="replace")
        if msg.startswith("SIP/2.0 "):
            future = self.waiting.pop(header(msg, "Call-ID") + header(msg, "CSeq"), None)
            if future and not future.done() and int(msg.split(" ")[1]) >= 200:
                future.set_result(msg)
            elif future:
                self.waiting[header(msg, "Call-ID") + header(msg, "CSeq")] = future
            return
        method = msg.split(" ", 1)[0]
        if method == "MESSAGE":
            body = msg.split("\r\n\r\n", 1)[1]
            got("alice (SIP phone)", header(msg, "From"), body)
        answer = "SIP/2.0 200 OK\r\n"
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            value = header(msg, name)
            if name == "To" and "tag=" not in value:
                value += ";tag=alice"
            answer += f"{name}: {value}\r\n"
        self.transport.sendto((answer + "Content-Length: 0\r\n\r\n").encode(), addr)

    async def request(self, method, uri, to, extra="", body="", auth=None):
        call_id = f"{random.getrandbits(64):x}@alice"
        for _ in range(2):
            self.cseq += 1
            cseq = f"{self.cseq} {method}"
            lines = [
                f"{method} {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP {self.me};branch=z9hG4bK{random.getrandbits(48):x};rport",
                "Max-Forwards: 70",
                f"From: <{ALICE}>;tag=a{self.cseq}",
                f"To: <{to}>",
                f"Call-ID: {call_id}",
                f"CSeq: {cseq}",
                f"Contact: <sip:alice@{self.me}>",
            ]
            if auth:
                lines.append(auth)
            if extra:
                lines.append(extra)
            lines.append(f"Content-Length: {len(body.encode())}")
            future = asyncio.get_running_loop().create_future()
            self.waiting[call_id + cseq] = future
            self.transport.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), GATEWAY_SIP)
            answer = await asyncio.wait_for(future, 10)
            status = int(answer.split(" ")[1])
            if status in (401, 407):
                name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
                field = "Authorization" if status == 401 else "Proxy-Authorization"
                auth = f"{field}: " + digest(header(answer, name), method, uri, "alice", ALICE_PASSWORD)
                continue
            return status
        return status


# --- bob's XMPP client ---------------------------------------------------------------------


class Bob(ClientXMPP):
    def __init__(self, port):
        super().__init__("bob@xmpp.localhost", "bob-pass")
        self.port = port
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", self.started)
        self.add_event_handler("message", self.message)

    async def get_dns_records(self, domain, port=None):
        return [("127.0.0.1", "127.0.0.1", self.port)]  # never ask a resolver

    async def started(self, _event):
        self.send_presence()
        self.ready.set()

    def message(self, msg):
        if msg["body"]:
            got("bob (XMPP, via Prosody)", str(msg["from"]), msg["body"])


async def main(c2s_port):
    threading.Thread(
        target=http.server.HTTPServer(("127.0.0.1", 8081), Hooks).serve_forever, daemon=True
    ).start()
    loop = asyncio.get_running_loop()
    _, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    bob = Bob(c2s_port)
    bob.connect(address=("127.0.0.1", c2s_port), use_ssl=False, force_starttls=False, disable_starttls=True)
    await asyncio.wait_for(bob.ready.wait(), 15)
    status = await phone.request(
        "REGISTER", "sip:sip.localhost", ALICE, extra="Expires: 600"
    )
    print(f"alice's phone registered at the gateway: {status}", flush=True)

    sends = [
        ("alice (SIP) -> bob (XMPP)", lambda: phone.request("MESSAGE", BOB_ON_SIP, BOB_ON_SIP, "Content-Type: text/plain", "hello bob, from a SIP phone")),
        ("bob (XMPP) -> alice (SIP)", lambda: bob.send_message(mto=ALICE_ON_XMPP, mbody="hi alice, from XMPP", mtype="chat")),
        ("app -> alice (SIP)", lambda: post_message("im:bot@app.localhost", ALICE, "alice, the app here")),
        ("app -> bob (XMPP)", lambda: post_message("im:bot@app.localhost", "im:bob@xmpp.localhost", "bob, the app here")),
        ("alice (SIP) -> app", lambda: phone.request("MESSAGE", BOT_ON_SIP, BOT_ON_SIP, "Content-Type: text/plain", "app, alice here")),
        ("bob (XMPP) -> app", lambda: bob.send_message(mto=BOT_ON_XMPP, mbody="app, bob here", mtype="chat")),
    ]
    for what, send in sends:
        print(f"{what}", flush=True)
        result = send()
        if asyncio.iscoroutine(result):
            result = await result
        if isinstance(result, int):
            print(f"  (answered {result})", flush=True)
        await asyncio.sleep(1.0)
    deadline = time.time() + 10
    while len(arrived) < len(sends) and time.time() < deadline:
        await asyncio.sleep(0.2)
    bob.disconnect()
    print(f"\n{len(arrived)} of {len(sends)} messages arrived.", flush=True)
    return 0 if len(arrived) >= len(sends) else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(int(sys.argv[1]))))
    except KeyboardInterrupt:
        sys.exit(130)
