//! The SIP adapter against plain UDP/TCP peers on loopback: what SIPp scenarios cannot
//! easily check (transport choice by size, IMDN bodies).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use cpim::address::Address;
use cpim::condition::Condition;
use cpim::event::{Event, Message};
use cpim_broker::envelope::Inbound;
use cpim_broker::testing::Behavior;
use cpim_sip::transport::{Peer, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use support::{header_of, status_of, take_message};

/// A peer that answers every request on UDP and TCP with `status`, and returns what it
/// received.
struct Peer2 {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Peer2 {
    async fn bind() -> Peer2 {
        let port = support::free_port();
        Peer2 {
            udp: UdpSocket::bind(("127.0.0.1", port)).await.unwrap(),
            tcp: TcpListener::bind(("127.0.0.1", port)).await.unwrap(),
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.udp.local_addr().unwrap()
    }
}

fn answer(request: &[u8], status: u16) -> Vec<u8> {
    let text = String::from_utf8_lossy(request).to_string();
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    let mut out = format!("SIP/2.0 {status} Whatever\r\n");
    for line in head.split("\r\n").skip(1) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if ["via", "from", "to", "call-id", "cseq"].contains(&name.as_str()) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3428_8_large_message_goes_over_tcp_small_over_udp() {
    let far = Peer2::bind().await;
    let proxy = far.addr();
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: Transport::Udp,
            addr: proxy,
        });
    })
    .await;
    gw.mem.set_behavior(Behavior::Deliver);
    let send = |text: String| {
        let submitter = gw.from_mem.clone();
        async move {
            let inbound = Inbound::new(
                Event::Message(Message::text(&text)),
                Address::parse("sip:carol@mem.test").unwrap(),
                Address::parse("sip:bob@sip.test").unwrap(),
            );
            submitter.submit(inbound).await.unwrap()
        }
    };
    // Small: UDP.
    send("small one".into()).await;
    let mut buf = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), far.udp.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let request = buf[..n].to_vec();
    assert!(request.starts_with(b"MESSAGE sip:bob@sip.test SIP/2.0\r\n"));
    assert!(header_of(&request, "Via")
        .unwrap()
        .starts_with("SIP/2.0/UDP"));
    assert!(request.ends_with(b"\r\n\r\nsmall one"));
    far.udp.send_to(&answer(&request, 200), from).await.unwrap();
    // Large: TCP to the same place (RFC 3428 §8: more than 1300 bytes).
    let big = "é".repeat(1500);
    send(big.clone()).await;
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(5), far.tcp.accept())
        .await
        .unwrap()
        .unwrap();
    let mut acc = Vec::new();
    let message = loop {
        if let Some(m) = take_message(&mut acc) {
            break m;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed");
        acc.extend_from_slice(&buf[..n]);
    };
    assert!(header_of(&message, "Via")
        .unwrap()
        .starts_with("SIP/2.0/TCP"));
    assert!(message.ends_with(big.as_bytes()));
    stream.write_all(&answer(&message, 200)).await.unwrap();
    // Both were delivered and none failed.
    let metrics = gw.broker.metrics().adapter("sip");
    for _ in 0..50 {
        if metrics.delivered_count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metrics.delivered_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc5438_failure_reaches_the_sip_sender_as_negative_delivery_imdn() {
    let far = Peer2::bind().await;
    let proxy = far.addr();
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: Transport::Udp,
            addr: proxy,
        });
    })
    .await;
    gw.mem.set_behavior(Behavior::Fail(Condition::ItemNotFound));
    let cpim = "From: <sip:alice@sip.test>\r\nTo: <sip:nobody@mem.test>\r\n\
                DateTime: 2026-11-25T10:00:00Z\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
                imdn.Message-ID: m-4711\r\nimdn.Disposition-Notification: negative-delivery\r\n\
                \r\nContent-Type: text/plain\r\n\r\nare you there?";
    let request = format!(
        "MESSAGE sip:nobody@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKimdn1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=a1\r\nTo: <sip:nobody@mem.test>\r\n\
         Call-ID: imdn1\r\nCSeq: 1 MESSAGE\r\nContent-Type: message/cpim\r\nContent-Length: {}\r\n\r\n{cpim}",
        cpim.len(),
        addr = far.addr(),
    );
    far.udp.send_to(request.as_bytes(), gw.udp).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let mut got_202 = false;
    let imdn = loop {
        let (n, from) = tokio::time::timeout(Duration::from_secs(10), far.udp.recv_from(&mut buf))
            .await
            .expect("the IMDN arrives")
            .unwrap();
        let m = buf[..n].to_vec();
        if m.starts_with(b"SIP/2.0 ") {
            assert_eq!(status_of(&m), 202, "{}", String::from_utf8_lossy(&m));
            got_202 = true;
            continue;
        }
        far.udp.send_to(&answer(&m, 200), from).await.unwrap();
        break m;
    };
    assert!(got_202, "the MESSAGE was answered 202 first");
    let text = String::from_utf8_lossy(&imdn).to_string();
    assert!(
        text.starts_with("MESSAGE sip:alice@sip.test SIP/2.0\r\n"),
        "{text}"
    );
    assert_eq!(
        header_of(&imdn, "Content-Type").as_deref(),
        Some("message/cpim")
    );
    assert!(text.contains("Content-Type: message/imdn+xml"), "{text}");
    assert!(text.contains("<message-id>m-4711</message-id>"), "{text}");
    assert!(text.contains("<failed/>"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3261_17_2_retransmitted_message_is_absorbed_and_answered_again() {
    let gw = support::gateway(&[], |_| {}).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let body = "once only";
    let request = format!(
        "MESSAGE sip:dora@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKrtx1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=r1\r\nTo: <sip:dora@mem.test>\r\n\
         Call-ID: rtx1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        client.local_addr().unwrap(),
        body.len()
    );
    let mut buf = vec![0u8; 8192];
    let mut responses = Vec::new();
    for _ in 0..3 {
        client.send_to(request.as_bytes(), gw.udp).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        responses.push(buf[..n].to_vec());
    }
    assert_eq!(status_of(&responses[0]), 202);
    assert!(
        responses.iter().all(|r| r == &responses[0]),
        "the same response each time"
    );
    assert_eq!(gw.mem.wait_for(1, Duration::from_secs(5)).await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.mem.count(), 1, "delivered once");
}
