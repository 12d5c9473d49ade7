#!/usr/bin/python3
"""slixmpp test driver for cpim-xmpp's integration tests (cpim-test-support, src/xmpp.rs).

Usage: xmpp_client.py JID PASSWORD HOST PORT

Connects over plain TCP (no TLS, no STARTTLS, no DNS: HOST must be an IP literal) and
speaks JSON lines:

stdout (events, one JSON object per line, flushed after each line):
  {"kind": "session_start", "jid": full JID, "roster": {bare JID: {"subscription", "ask", "name", "groups"}}}
  {"kind": "message"|"presence"|"iq", "xml": raw stanza, "from", "to", "type", "id", ...}
      message adds "body", "subject", "thread", "lang"; presence adds "show", "status".
      Missing attributes/children are null.
  {"kind": "sent", "seq": n, "id": stanza id or null}   -- answer to every command
  {"kind": "error", "seq": n, "error": text}            -- a command that failed
  {"kind": "auth_failed"} / {"kind": "connection_failed", "error": text}
  {"kind": "disconnected", "reason": text}

stdin (commands, one JSON object per line; "seq" is echoed back in "sent"/"error"):
  {"op": "send_message", "seq": n, "to": jid, "body": text|null, "subject", "thread",
   "lang", "type", "id", "receipt": bool, "markable": bool, "chat_state": "active"|...}
  {"op": "send_presence", "seq": n, "kind": "available"|"unavailable"|"subscribe"|
   "subscribed"|"unsubscribe"|"unsubscribed"|"probe", "to": jid|null, "show", "status"}
  {"op": "send_raw", "seq": n, "xml": text}
  {"op": "close", "seq": n}

Nothing is answered automatically: subscription requests are neither accepted nor
refused (the test decides), no receipts are sent. On stdin EOF (or "close") the stream
is closed and the process exits with status 0.
"""

import asyncio
import json
import logging
import os
import sys
import threading
import xml.etree.ElementTree as ET

from slixmpp import ClientXMPP

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
NS_CLIENT = "jabber:client"
NS_RECEIPTS = "urn:xmpp:receipts"
NS_MARKERS = "urn:xmpp:chat-markers:0"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"
PRESENCE_TYPES = {
    "available": None,
    "unavailable": "unavailable",
    "subscribe": "subscribe",
    "subscribed": "subscribed",
    "unsubscribe": "unsubscribe",
    "unsubscribed": "unsubscribed",
    "probe": "probe",
}

_out_lock = threading.Lock()


def emit(obj):
    line = json.dumps(obj, ensure_ascii=False)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def child_text(xml, name):
    el = xml.find("{%s}%s" % (NS_CLIENT, name))
    if el is None:
        return None
    return el.text or ""


class Driver(ClientXMPP):
    def __init__(self, jid, password, host, port):
        super().__init__(jid, password)
        self.target = (host, port)
        self.use_ipv6 = False
        # Loopback only: PLAIN without TLS is allowed (ejabberd with external
        # authentication offers nothing else).
        self["feature_mechanisms"].unencrypted_plain = True
        # The test decides about subscriptions.
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False
        self.closing = False
        self.add_filter("in", self.on_incoming)
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("failed_all_auth", self.on_failed_auth)
        self.add_event_handler("connection_failed", self.on_connection_failed)
        self.add_event_handler("disconnected", self.on_disconnected)

    async def get_dns_records(self, domain, port=None):
        # Never resolve anything: always the address we were given.
        host, port = self.target
        return [(host, host, port)]

    def on_incoming(self, stanza):
        xml = stanza.xml
        tag = xml.tag.split("}")[-1]
        if tag not in ("message", "presence", "iq"):
            return stanza
        ev = {
            "kind": tag,
            "xml": str(stanza),
            "from": xml.get("from"),
            "to": xml.get("to"),
            "type": xml.get("type"),
            "id": xml.get("id"),
        }
        if tag == "message":
            ev["body"] = child_text(xml, "body")
            ev["subject"] = child_text(xml, "subject")
            ev["thread"] = child_text(xml, "thread")
            ev["lang"] = xml.get(XML_LANG)
        elif tag == "presence":
            ev["show"] = child_text(xml, "show")
            ev["status"] = child_text(xml, "status")
        emit(ev)
        return stanza

    async def on_session_start(self, _event):
        roster = {}
        try:
            await self.get_roster(timeout=10)
            node = self.client_roster
            for jid in node:
                item = node[jid]
                roster[str(jid)] = {
                    "subscription": item["subscription"],
                    "ask": item["pending_out"],
                    "name": item["name"],
                    "groups": list(item["groups"]),
                }
        except Exception as e:  # roster failures are reported, not fatal
            emit({"kind": "error", "seq": None, "error": "roster: %r" % (e,)})
        self.send_presence()
        emit({"kind": "session_start", "jid": str(self.boundjid), "roster": roster})

    def on_failed_auth(self, _event):
        emit({"kind": "auth_failed"})
        self.disconnect(wait=False)

    def on_connection_failed(self, err):
        emit({"kind": "connection_failed", "error": str(err)})
        # No retry loop: the test sees the failure and decides.
        self.cancel_connection_attempt()

    def on_disconnected(self, reason):
        emit({"kind": "disconnected", "reason": str(reason) if reason else None})

    def do_send_message(self, cmd):
        msg = self.make_message(mto=cmd["to"], mtype=cmd.get("type"))
        if cmd.get("id"):
            msg["id"] = cmd["id"]
        if cmd.get("lang"):
            msg.xml.set(XML_LANG, cmd["lang"])
        for name in ("subject", "body", "thread"):
            if cmd.get(name) is not None:
                el = ET.SubElement(msg.xml, "{%s}%s" % (NS_CLIENT, name))
                el.text = cmd[name]
        if cmd.get("chat_state"):
            ET.SubElement(msg.xml, "{%s}%s" % (NS_CHATSTATES, cmd["chat_state"]))
        if cmd.get("receipt"):
            ET.SubElement(msg.xml, "{%s}request" % NS_RECEIPTS)
        if cmd.get("markable"):
            ET.SubElement(msg.xml, "{%s}markable" % NS_MARKERS)
        if not msg["id"]:
            msg["id"] = self.new_id()
        msg.send()
        return msg["id"]

    def do_send_presence(self, cmd):
        kind = cmd.get("kind") or "available"
        if kind not in PRESENCE_TYPES:
            raise ValueError("unknown presence kind %r" % kind)
        pres = self.make_presence(
            pto=cmd.get("to"),
            pshow=cmd.get("show"),
            pstatus=cmd.get("status"),
            ptype=PRESENCE_TYPES[kind],
        )
        if cmd.get("id"):
            pres["id"] = cmd["id"]
        pres.send()
        return pres["id"] or None

    async def handle(self, cmd):
        op = cmd.get("op")
        seq = cmd.get("seq")
        try:
            if op == "send_message":
                sid = self.do_send_message(cmd)
            elif op == "send_presence":
                sid = self.do_send_presence(cmd)
            elif op == "send_raw":
                self.send_raw(cmd["xml"])
                sid = None
            elif op == "close":
                emit({"kind": "sent", "seq": seq, "id": None})
                await self.shutdown()
                return
            else:
                raise ValueError("unknown op %r" % op)
            emit({"kind": "sent", "seq": seq, "id": sid})
        except Exception as e:
            emit({"kind": "error", "seq": seq, "error": repr(e)})

    async def shutdown(self):
        if self.closing:
            return
        self.closing = True
        try:
            if self.transport is not None:
                await asyncio.wait_for(self.disconnect(wait=2.0), timeout=3)
        except Exception:
            pass
        os._exit(0)


def stdin_reader(loop, driver):
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
        except ValueError as e:
            emit({"kind": "error", "seq": None, "error": "bad json: %r" % (e,)})
            continue
        asyncio.run_coroutine_threadsafe(driver.handle(cmd), loop)
    asyncio.run_coroutine_threadsafe(driver.shutdown(), loop)


def main():
    if len(sys.argv) != 5:
        sys.stderr.write(__doc__)
        sys.exit(2)
    jid, password, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    level = logging.DEBUG if os.environ.get("XMPP_CLIENT_DEBUG") else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")

    driver = Driver(jid, password, host, port)
    driver.connect(address=(host, port), use_ssl=False, force_starttls=False, disable_starttls=True)
    loop = driver.loop
    threading.Thread(target=stdin_reader, args=(loop, driver), daemon=True).start()
    loop.run_forever()


if __name__ == "__main__":
    main()
