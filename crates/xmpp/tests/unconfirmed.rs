//! The component link keeps what it wrote until the server confirms it (an XEP-0199
//! ping answered after it), and writes it again on the next stream if the stream ends
//! first — the case of a server that dies with stanzas read but not handled, which a
//! real Prosody cannot be made to do on cue. The server here is a plain TCP socket
//! speaking just enough XEP-0114 (stream header with an id, `<handshake/>`); the gateway
//! side is the real adapter behind the real broker.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use cpim::event::{Event, Message};
use cpim::Address;
use cpim_broker::core::CoreConfig;
use cpim_broker::testing::MemoryAdapter;
use cpim_broker::{AddressStyle, Broker, BrokerHandle, Inbound, Submitter};
use cpim_xmpp::translate::OutboundOptions;
use cpim_xmpp::{XmppAdapter, XmppConfig};

use support::{gateway_map, COMPONENT};

/// Reads from `s` into `buf` until `needle` is in it (5 s at most).
async fn read_until(s: &mut TcpStream, buf: &mut String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut chunk = [0u8; 4096];
    while !buf.contains(needle) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no {needle:?} from the gateway; got {buf:?}"));
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            other => panic!("the stream ended before {needle:?} ({other:?}); got {buf:?}"),
        }
    }
}

/// Accepts the gateway's next component stream and completes the handshake.
async fn accept(listener: &TcpListener) -> (TcpStream, String) {
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the gateway connects")
        .expect("accept");
    let mut buf = String::new();
    read_until(&mut s, &mut buf, "stream:stream").await;
    read_until(&mut s, &mut buf, ">").await;
    s.write_all(
        format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams' from='{COMPONENT}' id='s1'>"
        )
        .as_bytes(),
    )
    .await
    .expect("header");
    read_until(&mut s, &mut buf, "</handshake>").await;
    s.write_all(b"<handshake/>").await.expect("handshake");
    let rest = buf
        .split_once("</handshake>")
        .map(|(_, r)| r.to_owned())
        .unwrap_or_default();
    (s, rest)
}

/// The value of attribute `name` in the first `<tag` of `xml`.
fn attr(xml: &str, tag: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag} "))?;
    let head = &xml[start..start + xml[start..].find('>')?];
    let at = head.find(&format!("{name}="))? + name.len() + 1;
    let quote = head[at..].chars().next()?;
    let value = &head[at + 1..];
    Some(value[..value.find(quote)?].to_owned())
}

/// The real adapter behind the real broker, connecting to a plain socket listening here;
/// the far side is an in-memory SIP network.
async fn start() -> (TcpListener, MemoryAdapter, Submitter, BrokerHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = listener.local_addr().expect("addr").to_string();
    let (mut broker, handle) = Broker::new(CoreConfig::default(), Arc::new(gateway_map(None)));
    let xmpp = XmppAdapter::start(
        XmppConfig {
            name: "xmpp".into(),
            server,
            components: vec![(COMPONENT.into(), "secret".into())],
            user_domains: vec!["xmpp.test".into()],
            outbound: OutboundOptions::default(),
            ping_interval: Duration::from_secs(30),
            limits: Default::default(),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
        },
        broker.context("xmpp"),
    );
    let sip = MemoryAdapter::new("sip", AddressStyle::Sip, &["sip.test"]);
    let from_sip = broker.context("sip").submitter;
    broker.add_adapter(xmpp);
    broker.add_adapter(Arc::new(sip.clone()));
    broker.start();
    (listener, sip, from_sip, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_stanzas_are_written_again_on_the_next_stream_and_confirmed_ones_are_not() {
    let (listener, _sip, from_sip, _broker) = start().await;

    // First stream: the message is written, then the ack barrier; the server reads
    // both and dies without answering.
    let (mut s, mut buf) = accept(&listener).await;
    from_sip
        .submit(Inbound::new(
            Event::Message(Message::text("hello once")),
            Address::parse("sip:alice@sip.test").expect("address"),
            Address::parse("sip:bob@xmpp.test").expect("address"),
        ))
        .await
        .expect("accepted");
    read_until(&mut s, &mut buf, "</message>").await;
    read_until(&mut s, &mut buf, "urn:xmpp:ping").await;
    let id = attr(&buf, "message", "id").expect("the message has an id");
    assert!(buf.contains("hello once"));
    drop(s);

    // Second stream: the same stanza again, first thing; this time the barrier is
    // answered.
    let (mut s, mut buf) = accept(&listener).await;
    read_until(&mut s, &mut buf, "</message>").await;
    assert_eq!(
        attr(&buf, "message", "id").as_deref(),
        Some(id.as_str()),
        "same id"
    );
    assert!(buf.contains("hello once"));
    read_until(&mut s, &mut buf, "urn:xmpp:ping").await;
    read_until(&mut s, &mut buf, "</iq>").await;
    let ping = &buf[buf.rfind("<iq").expect("the barrier")..];
    let ping_id = attr(ping, "iq", "id").expect("ping id");
    assert!(ping_id.starts_with("cpim-ack-"), "{ping}");
    s.write_all(
        format!("<iq type='result' id='{ping_id}' from='xmpp.test' to='{COMPONENT}'/>").as_bytes(),
    )
    .await
    .expect("answer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);

    // Third stream: confirmed, so nothing is written again.
    let (mut s, mut buf) = accept(&listener).await;
    let mut chunk = [0u8; 4096];
    let quiet = Instant::now() + Duration::from_millis(700);
    while let Some(left) = quiet.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            _ => break,
        }
    }
    assert!(
        !buf.contains("<message"),
        "a confirmed stanza was sent again: {buf}"
    );
}

/// Issue 13 (defence in depth against a misbehaving server): a stanza whose `from` is not
/// a user the server may speak for — a gateway escape domain, another network's domain
/// — is refused with `forbidden` and never reaches the other network; the server's own
/// users' stanzas still go through on the same stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stanza_from_a_domain_the_server_does_not_serve_is_refused() {
    let (listener, sip, _from_sip, _broker) = start().await;
    let (mut s, mut buf) = accept(&listener).await;
    for (n, from) in [
        (1, "mallory@gw.xmpp.test/x"),
        (2, "bob\\40sip.test@gw.xmpp.test"),
        (3, "bob@sip.test/x"),
    ] {
        s.write_all(
            format!(
                "<message from='{from}' to='bob\\40sip.test@{COMPONENT}' id='forged-{n}'><body>forged</body></message>"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
        read_until(&mut s, &mut buf, &format!("id='forged-{n}'")).await;
        read_until(&mut s, &mut buf, "</message>").await;
        let reply = &buf[buf.find(&format!("id='forged-{n}'")).expect("reply")..];
        assert!(reply.contains("forbidden"), "{from}: {buf}");
        buf.clear();
    }
    s.write_all(
        format!(
            "<message from='juliet@xmpp.test/r' to='bob\\40sip.test@{COMPONENT}' id='ok-1'><body>genuine</body></message>"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    while sip.count() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = sip.received();
    assert_eq!(
        received.len(),
        1,
        "only the server's own user: {received:#?}"
    );
    assert_eq!(received[0].from.to_string(), "sip:juliet@xmpp.test;gr=r");
}
