//! The component link keeps what it wrote until the server confirms it (an XEP-0199
//! ping answered after it), and writes it again on the next stream if the stream ends
//! first — the case of a server that dies with stanzas read but not handled, which a
//! real Prosody cannot be made to do on cue. The server here is a plain TCP socket
//! speaking just enough XEP-0114 (stream header with an id, `<handshake/>`); the gateway
//! side is the real adapter behind the real broker.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

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
    let (s, rest, _) = accept_any(listener).await;
    (s, rest)
}

/// Like [`accept`], also saying for which domain the stream is (its header's `to`).
async fn accept_any(listener: &TcpListener) -> (TcpStream, String, String) {
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the gateway connects")
        .expect("accept");
    let mut buf = String::new();
    read_until(&mut s, &mut buf, "stream:stream").await;
    read_until(&mut s, &mut buf, ">").await;
    let domain = attr(&buf, "stream:stream", "to").unwrap_or_default();
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
    (s, rest, domain)
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
    start_with(
        vec![(COMPONENT.into(), "secret".into())],
        Duration::from_secs(30),
    )
    .await
}

async fn start_with(
    components: Vec<(String, String)>,
    ping_interval: Duration,
) -> (TcpListener, MemoryAdapter, Submitter, BrokerHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = listener.local_addr().expect("addr").to_string();
    let (mut broker, handle) = Broker::new(CoreConfig::default(), Arc::new(gateway_map(None)));
    let xmpp = XmppAdapter::start(
        XmppConfig {
            name: "xmpp".into(),
            server,
            components,
            user_domains: vec!["xmpp.test".into()],
            outbound: OutboundOptions::default(),
            ping_interval,
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

/// Issue 13 (ejabberd's `hosts:` listener delivers each stanza on any of the
/// connections): the answer to one link's confirmation barrier comes on the other link's
/// stream, and only to a barrier sent again after the first went unanswered. It still
/// confirms: after the first stream drops, nothing is written again. Before, the
/// barrier waited forever on its own stream and everything was written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrier_is_retried_and_its_answer_counts_on_any_stream() {
    const OTHER: &str = "other.xmpp.test";
    let (listener, _sip, from_sip, _broker) = start_with(
        vec![
            (COMPONENT.into(), "secret".into()),
            (OTHER.into(), "secret2".into()),
        ],
        Duration::from_secs(1),
    )
    .await;
    // Link 0 first (the other link asks it whether its stream carries the other domain:
    // the server says no, as a server does for a component that is not connected).
    let (mut first, mut buf, domain) = accept_any(&listener).await;
    assert_eq!(domain, COMPONENT);
    read_until(&mut first, &mut buf, "cpim-route-").await;
    read_until(&mut first, &mut buf, "</iq>").await;
    let probe = &buf[buf.find("<iq").expect("probe")..];
    assert_eq!(attr(probe, "iq", "to").as_deref(), Some(OTHER), "{probe}");
    let probe_id = attr(probe, "iq", "id").expect("probe id");
    first
        .write_all(
            format!(
                "<iq type='error' id='{probe_id}' from='{OTHER}' to='{COMPONENT}'><error type='cancel'>\
                 <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            )
            .as_bytes(),
        )
        .await
        .expect("probe answer");
    let (mut second, _, domain) = accept_any(&listener).await;
    assert_eq!(domain, OTHER);
    buf.clear();

    from_sip
        .submit(Inbound::new(
            Event::Message(Message::text("confirmed elsewhere")),
            Address::parse("sip:alice@sip.test").expect("address"),
            Address::parse("sip:bob@xmpp.test").expect("address"),
        ))
        .await
        .expect("accepted");
    read_until(&mut first, &mut buf, "</message>").await;
    read_until(&mut first, &mut buf, "cpim-ack-").await;
    read_until(&mut first, &mut buf, "</iq>").await;
    let first_barrier = ack_ids(&buf)[0].clone();
    // Unanswered: a new barrier follows within about a ping interval.
    let deadline = Instant::now() + Duration::from_secs(3);
    let retried = loop {
        if let Some(id) = ack_ids(&buf).into_iter().find(|id| *id != first_barrier) {
            break id;
        }
        assert!(Instant::now() < deadline, "no second barrier: {buf}");
        let mut chunk = [0u8; 4096];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), first.read(&mut chunk)).await
        {
            buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    };
    // Its answer comes on the other stream.
    second
        .write_all(
            format!("<iq type='result' id='{retried}' from='xmpp.test' to='{COMPONENT}'/>")
                .as_bytes(),
        )
        .await
        .expect("answer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(first);

    let (mut again, mut buf, domain) = accept_any(&listener).await;
    assert_eq!(domain, COMPONENT);
    let mut chunk = [0u8; 4096];
    let quiet = Instant::now() + Duration::from_millis(700);
    while let Some(left) = quiet.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, again.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            _ => break,
        }
    }
    assert!(
        !buf.contains("<message"),
        "a stanza confirmed on the other stream was written again: {buf}"
    );
    drop(second);
}

/// The ids of the confirmation barriers in `xml`, in order.
fn ack_ids(xml: &str) -> Vec<String> {
    xml.match_indices("cpim-ack-")
        .map(|(at, _)| {
            xml[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect()
        })
        .collect()
}
