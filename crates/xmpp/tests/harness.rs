//! The test harness itself against a real Prosody: clients exchange messages, a raw
//! XEP-0114 component authenticates and receives traffic, a restart keeps the data.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

mod support;

use std::time::Duration;

use support::{
    handshake_digest, MessageExtras, PresenceKind, Prosody, ProsodyOpts, RawComponent, XmppClient,
    COMPONENT, TIMEOUT,
};

#[tokio::test]
async fn clients_exchange_a_message() {
    let mut prosody = Prosody::start(ProsodyOpts::default()).await;
    prosody.register("alice", "alice-pass").await;
    prosody.register("bob", "bob-pass").await;

    let mut alice = XmppClient::connect(&prosody, "alice@xmpp.test", "alice-pass").await;
    let mut bob = XmppClient::connect(&prosody, "bob@xmpp.test", "bob-pass").await;
    assert!(
        alice.full_jid().starts_with("alice@xmpp.test/"),
        "{}",
        alice.full_jid()
    );

    let extras = MessageExtras {
        subject: Some("Greetings".into()),
        thread: Some("thread-1".into()),
        lang: Some("fr".into()),
        kind: Some("chat".into()),
        request_receipt: true,
        markable: true,
        chat_state: Some("active".into()),
        ..MessageExtras::default()
    };
    let id = alice
        .send_message("bob@xmpp.test", "bonjour <&> é", extras)
        .await;

    let msg = bob
        .expect(
            |e| e.is_chat_body() && e.get("id") == Some(id.as_str()),
            TIMEOUT,
        )
        .await;
    assert_eq!(msg.sender_bare(), Some("alice@xmpp.test"));
    assert_eq!(msg.get("from"), Some(alice.full_jid()));
    assert_eq!(msg.get("type"), Some("chat"));
    assert_eq!(msg.get("body"), Some("bonjour <&> é"));
    assert_eq!(msg.get("subject"), Some("Greetings"));
    assert_eq!(msg.get("thread"), Some("thread-1"));
    assert_eq!(msg.get("lang"), Some("fr"));
    let xml = msg.xml();
    for part in [
        "xml:lang=\"fr\"",
        "<subject>Greetings</subject>",
        "<thread>thread-1</thread>",
        "<body>bonjour &lt;&amp;&gt; é</body>",
        "<active xmlns=\"http://jabber.org/protocol/chatstates\"",
        "<request xmlns=\"urn:xmpp:receipts\"",
        "<markable xmlns=\"urn:xmpp:chat-markers:0\"",
    ] {
        assert!(xml.contains(part), "{part} missing in {xml}");
    }

    // Directed presence and raw XML reach the peer too.
    alice
        .send_presence(
            PresenceKind::Available,
            Some("bob@xmpp.test"),
            Some("away"),
            Some("lunch"),
        )
        .await;
    let p = bob
        .expect(
            |e| e.kind() == "presence" && e.sender_bare() == Some("alice@xmpp.test"),
            TIMEOUT,
        )
        .await;
    assert_eq!(p.get("show"), Some("away"));
    assert_eq!(p.get("status"), Some("lunch"));
    alice
        .send_raw("<message to='bob@xmpp.test' id='raw-1'><body>raw</body></message>")
        .await;
    let raw = bob.expect(|e| e.get("id") == Some("raw-1"), TIMEOUT).await;
    assert_eq!(raw.get("body"), Some("raw"));
    bob.expect_none(|e| e.is_chat_body(), Duration::from_millis(200))
        .await;

    alice.close().await;
    bob.close().await;
    prosody.stop().await;
    assert!(!prosody.is_running());
}

#[tokio::test]
async fn raw_component_handshake_and_routing() {
    let prosody =
        Prosody::start(ProsodyOpts::default().component("sip.gw.xmpp.test", "sip-secret")).await;
    prosody.register("alice", "pw").await;

    // A wrong secret is refused.
    let mut bad = RawComponent::open(&prosody, COMPONENT).await;
    let reply = bad.handshake("not-the-secret").await;
    assert!(reply.contains("not-authorized"), "{reply}");

    // The right one: <handshake/>.
    let mut comp = RawComponent::open(&prosody, COMPONENT).await;
    assert!(!comp.stream_id().is_empty());
    let reply = comp.handshake(prosody.component_secret(COMPONENT)).await;
    assert!(
        reply.starts_with("<handshake") && reply.ends_with("/>"),
        "{reply}"
    );

    // The second component has its own secret.
    let mut sip = RawComponent::connect(&prosody, "sip.gw.xmpp.test").await;

    let mut alice = XmppClient::connect(&prosody, "alice@xmpp.test", "pw").await;
    alice
        .send_message(
            "someone@gw.xmpp.test",
            "to the gateway",
            MessageExtras::default(),
        )
        .await;
    let got = comp.read_until("</message>", TIMEOUT).await;
    assert!(
        got.contains("to='someone@gw.xmpp.test'") || got.contains("to=\"someone@gw.xmpp.test\""),
        "{got}"
    );
    assert!(got.contains("<body>to the gateway</body>"), "{got}");
    assert!(got.contains(alice.full_jid()), "{got}");

    alice
        .send_message("x@sip.gw.xmpp.test", "to sip", MessageExtras::default())
        .await;
    let got = sip.read_until("</message>", TIMEOUT).await;
    assert!(got.contains("<body>to sip</body>"), "{got}");

    // And back: the component writes as someone@gw.xmpp.test, alice receives it.
    comp.send(&format!(
        "<message from='someone@gw.xmpp.test' to='{}' type='chat' id='c1'><body>hello alice</body></message>",
        alice.full_jid()
    ))
    .await;
    let m = alice.expect(|e| e.get("id") == Some("c1"), TIMEOUT).await;
    assert_eq!(m.get("from"), Some("someone@gw.xmpp.test"));
    assert_eq!(m.get("body"), Some("hello alice"));
}

#[tokio::test]
async fn restart_keeps_ports_accounts_and_rosters() {
    let mut prosody = Prosody::start(ProsodyOpts::default()).await;
    prosody.register("alice", "pw").await;
    let (c2s, comp) = (prosody.c2s_port(), prosody.component_port());

    let mut alice = XmppClient::connect(&prosody, "alice@xmpp.test", "pw").await;
    alice
        .send_raw(
            "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>\
             <item jid='bob@xmpp.test' name='Bob'><group>Friends</group></item></query></iq>",
        )
        .await;
    alice
        .expect(
            |e| e.kind() == "iq" && e.get("id") == Some("r1") && e.get("type") == Some("result"),
            TIMEOUT,
        )
        .await;

    prosody.restart().await;
    assert_eq!((prosody.c2s_port(), prosody.component_port()), (c2s, comp));
    alice.expect(|e| e.kind() == "disconnected", TIMEOUT).await;

    // A user registered after the restart and the one from before both log in.
    prosody.register("bob", "pw2").await;
    let alice = XmppClient::connect(&prosody, "alice@xmpp.test", "pw").await;
    let item = &alice.roster()["bob@xmpp.test"];
    assert_eq!(item["name"], "Bob", "roster: {}", alice.roster());
    assert_eq!(item["groups"][0], "Friends", "roster: {}", alice.roster());
    let bob = XmppClient::connect(&prosody, "bob@xmpp.test", "pw2").await;
    let wrong = XmppClient::try_connect(&prosody, "alice@xmpp.test", "wrong").await;
    assert!(wrong.is_err_and(|e| e.contains("auth_failed")));

    // The component port works after the restart too.
    RawComponent::connect(&prosody, COMPONENT).await;
    assert_eq!(
        prosody
            .log()
            .matches("Hello and welcome to Prosody")
            .count(),
        2
    );

    // An abrupt death (stale pidfile, no stream close) and a start on the same ports.
    prosody.kill();
    assert!(!prosody.is_running());
    prosody.restart().await;
    let alice = XmppClient::connect(&prosody, "alice@xmpp.test", "pw").await;
    assert_eq!(alice.roster()["bob@xmpp.test"]["name"], "Bob");

    alice.close().await;
    bob.close().await;
}

#[test]
fn handshake_digest_is_lowercase_hex_sha1() {
    // SHA-1("abc"), FIPS 180 test vector.
    assert_eq!(
        handshake_digest("ab", "c"),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
}
