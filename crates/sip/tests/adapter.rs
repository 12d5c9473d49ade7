//! The SIP adapter against plain UDP/TCP peers on loopback: what SIPp scenarios cannot
//! easily check (transport choice by size, IMDN bodies).

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use cpim::address::Address;
use cpim::condition::Condition;
use cpim::event::{Event, Message, NotificationStatus};
use cpim_broker::envelope::Inbound;
use cpim_broker::testing::Behavior;
use cpim_sip::transport::{Peer, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use support::{failure_of, header_of, status_of, take_message};

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
    support::reply(request, status, "", &[]).into_bytes()
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
    // The 202 and the IMDN travel separately (the answer is sent when the broker has
    // taken the message, the failure comes from the delivery): either may come first.
    let mut got_202 = false;
    let mut imdn = None;
    while !got_202 || imdn.is_none() {
        let (n, from) = tokio::time::timeout(Duration::from_secs(10), far.udp.recv_from(&mut buf))
            .await
            .expect("the 202 and the IMDN arrive")
            .unwrap();
        let m = buf[..n].to_vec();
        if m.starts_with(b"SIP/2.0 ") {
            assert_eq!(status_of(&m), 202, "{}", String::from_utf8_lossy(&m));
            got_202 = true;
            continue;
        }
        far.udp.send_to(&answer(&m, 200), from).await.unwrap();
        imdn = Some(m);
    }
    let imdn = imdn.unwrap_or_default();
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

/// Issue 13: Linphone sends its IMDNs with `Content-Encoding: deflate`; the gateway
/// answered `400 (invalid IMDN: not valid UTF-8)`, and Linphone re-sent them at every
/// start. The body is decoded (RFC 3261 §20.12) and the notification goes on; a coding
/// the gateway does not know gets 415 with `Accept-Encoding` (§21.4.13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3261_20_12_a_deflated_imdn_like_linphones_is_decoded_and_relayed() {
    let gw = support::gateway(&[], |_| {}).await;
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = phone.local_addr().unwrap();
    let imdn = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                <imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>gw-42</message-id>\
                <datetime>2026-12-06T10:00:00Z</datetime><delivery-notification><status>\
                <delivered/></status></delivery-notification></imdn>";
    let cpim = format!(
        "From: <sip:alice@sip.test>\r\nTo: <sip:dora@mem.test>\r\n\
         DateTime: 2026-12-06T10:00:01Z\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
         imdn.Message-ID: n-1\r\n\r\nContent-Type: message/imdn+xml\r\n\
         Content-Disposition: notification\r\nContent-Length: {}\r\n\r\n{imdn}",
        imdn.len()
    );
    let deflated = miniz_oxide::deflate::compress_to_vec_zlib(cpim.as_bytes(), 6);
    let request = |n: u32, coding: &str| {
        let mut r = format!(
            "MESSAGE sip:dora@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKlin{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=l{n}\r\nTo: <sip:dora@mem.test>\r\n\
             Call-ID: lin{n}\r\nCSeq: 1 MESSAGE\r\nContent-Type: message/cpim\r\n\
             Content-Encoding: {coding}\r\nContent-Length: {}\r\n\r\n",
            deflated.len()
        )
        .into_bytes();
        r.extend_from_slice(&deflated);
        r
    };
    let mut buf = vec![0u8; 8192];
    phone.send_to(&request(1, "deflate"), gw.udp).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), phone.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let status = status_of(&buf[..n]);
    assert!(
        (200..300).contains(&status),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(gw.mem.wait_for(1, Duration::from_secs(5)).await, 1);
    let received = gw.mem.received();
    let seen = format!("{:?}", received[0].event);
    assert!(
        seen.contains("gw-42") && seen.contains("Delivered"),
        "{seen}"
    );
    // A coding the gateway does not decode.
    phone.send_to(&request(2, "br"), gw.udp).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), phone.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_of(&buf[..n]), 415);
    assert_eq!(
        header_of(&buf[..n], "Accept-Encoding").as_deref(),
        Some("gzip, deflate, identity")
    );
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

/// Issue 13: a SIP request may speak only for SIP users. A `From` of another network's
/// users (here the far side's `mem.test`) got 202 and was delivered under that name; it
/// gets 403 at once, and nothing is delivered.
#[tokio::test]
async fn a_from_of_another_networks_user_is_forbidden() {
    let gw = support::gateway(&[], |_| {}).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 8192];
    for (n, from, status) in [
        (1, "sip:bob@mem.test", 403),
        (2, "sip:BOB@MEM.TEST;gr=x", 403),
        (3, "sip:alice@sip.test", 202),
    ] {
        let body = "who am I";
        let request = format!(
            "MESSAGE sip:dora@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKforge{n}\r\n\
             Max-Forwards: 70\r\nFrom: <{from}>;tag=f{n}\r\nTo: <sip:dora@mem.test>\r\n\
             Call-ID: forge{n}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            client.local_addr().unwrap(),
            body.len()
        );
        client.send_to(request.as_bytes(), gw.udp).await.unwrap();
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            status_of(&buf[..len]),
            status,
            "From {from}: {}",
            String::from_utf8_lossy(&buf[..len])
        );
    }
    assert_eq!(gw.mem.wait_for(1, Duration::from_secs(5)).await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = gw.mem.received();
    assert_eq!(
        received.len(),
        1,
        "only the SIP user's message: {received:#?}"
    );
    assert_eq!(received[0].from.to_string(), "sip:alice@sip.test");
}

/// Issue 13: a request over TCP announcing a body larger than the gateway takes got
/// `400`; it is `413 Request Entity Too Large` (RFC 3261 §21.4.11), and the connection
/// is closed (the stream cannot be resynchronised).
#[tokio::test]
async fn a_body_larger_than_allowed_is_413() {
    let gw = support::gateway(&[], |_| {}).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.tcp).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let head = format!(
        "MESSAGE sip:dora@mem.test SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKbig1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=b1\r\nTo: <sip:dora@mem.test>\r\n\
         Call-ID: big1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 10000000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&[b'x'; 1000]).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "the gateway closes the connection");
    assert_eq!(
        status_of(&response),
        413,
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert_eq!(header_of(&response, "Call-ID").as_deref(), Some("big1"));
    assert_eq!(gw.mem.count(), 0);
}

/// Issue 13: TCP connections had no cap and no timeouts; idle peers took every file
/// descriptor and unfinished headers held memory. Beyond the per-IP cap a connection is
/// closed at once; an unfinished message is cut after `message_timeout`, an idle
/// connection after `idle_timeout`; a freed place takes a new connection, and UDP
/// answers meanwhile.
#[tokio::test]
async fn stream_connections_are_capped_and_timed_out() {
    use cpim_sip::transport::StreamLimits;
    let gw = support::gateway(&[], |c| {
        c.stream_limits = StreamLimits {
            max_connections: 10,
            max_per_ip: 3,
            idle_timeout: Duration::from_secs(2),
            message_timeout: Duration::from_millis(300),
        }
    })
    .await;
    let started = std::time::Instant::now();
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(tokio::net::TcpStream::connect(gw.tcp).await.unwrap());
    }
    // The fourth from the same address is closed at once.
    let mut fourth = tokio::net::TcpStream::connect(gw.tcp).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(500), fourth.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the fourth connection was kept: {read:?}"
    );
    // An unfinished message is cut long before the idle timeout.
    kept[0]
        .write_all(b"OPTIONS sip:gw@sip.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9")
        .await
        .unwrap();
    let read = tokio::time::timeout(Duration::from_millis(1500), kept[0].read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the unfinished message was kept: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(1800));
    // The idle ones go after the idle timeout.
    for stream in &mut kept[1..] {
        let read = tokio::time::timeout(Duration::from_secs(4), stream.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection was kept: {read:?}"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "closed before the idle timeout"
    );
    // Their places are free again: a new connection is served.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fresh = tokio::net::TcpStream::connect(gw.tcp).await.unwrap();
    let local = fresh.local_addr().unwrap();
    fresh
        .write_all(
            format!(
                "OPTIONS sip:gw@sip.test SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKcap1\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:t@sip.test>;tag=1\r\nTo: <sip:gw@sip.test>\r\n\
                 Call-ID: cap1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), fresh.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        status_of(&buf[..n]),
        200,
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// Reads one request from a UDP socket (skipping responses), with its source.
async fn next_request(socket: &UdpSocket) -> (Vec<u8>, std::net::SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
            .await
            .expect("a request arrives")
            .unwrap();
        if !buf[..n].starts_with(b"SIP/2.0 ") {
            return (buf[..n].to_vec(), from);
        }
    }
}

fn digest_field(value: &str, name: &str) -> String {
    cpim_sip::auth::digest_params(value).unwrap()[name].clone()
}

/// A peer that answers 503 without Retry-After is down for now: the message waits and is
/// sent again (RFC 3261 §21.5.4), and every attempt carries the same Call-ID — the
/// gateway id — so that a receiver can tell a repeat (store and forward, issue 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_without_retry_after_is_retried_under_the_same_call_id() {
    let far = Peer2::bind().await;
    let proxy = far.addr();
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: Transport::Udp,
            addr: proxy,
        });
    })
    .await;
    let accepted = gw
        .from_mem
        .submit(Inbound::new(
            Event::Message(Message::text("try me again")),
            Address::parse("sip:carol@mem.test").unwrap(),
            Address::parse("sip:bob@sip.test").unwrap(),
        ))
        .await
        .unwrap();
    let (first, from) = next_request(&far.udp).await;
    far.udp.send_to(&answer(&first, 503), from).await.unwrap();
    let (second, from) = next_request(&far.udp).await;
    far.udp.send_to(&answer(&second, 200), from).await.unwrap();
    let call_id = format!("{}@gw", accepted.id);
    assert_eq!(
        header_of(&first, "Call-ID").as_deref(),
        Some(call_id.as_str())
    );
    assert_eq!(
        header_of(&second, "Call-ID").as_deref(),
        Some(call_id.as_str())
    );
    assert_ne!(header_of(&first, "CSeq"), header_of(&second, "CSeq"));
    assert!(String::from_utf8_lossy(&second).contains("try me again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3261_22_3_proxy_challenge_is_answered_with_the_configured_credentials() {
    let far = Peer2::bind().await;
    let proxy = far.addr();
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: Transport::Udp,
            addr: proxy,
        });
        c.credentials = vec![cpim_sip::auth::Credential {
            realm: Some("proxy.test".into()),
            username: "gateway".into(),
            password: "s3cret".into(),
        }];
    })
    .await;
    gw.from_mem
        .submit(Inbound::new(
            Event::Message(Message::text("through the proxy")),
            Address::parse("sip:carol@mem.test").unwrap(),
            Address::parse("sip:bob@sip.test").unwrap(),
        ))
        .await
        .unwrap();
    let (first, from) = next_request(&far.udp).await;
    let mut challenge = String::from_utf8(answer(&first, 407)).unwrap();
    challenge = challenge.replace(
        "Content-Length: 0",
        "Proxy-Authenticate: Digest realm=\"proxy.test\", nonce=\"n0nce\", qop=\"auth\", algorithm=MD5\r\nContent-Length: 0",
    );
    far.udp.send_to(challenge.as_bytes(), from).await.unwrap();
    let (second, from) = next_request(&far.udp).await;
    let auth = header_of(&second, "Proxy-Authorization").expect("credentials on the retry");
    // The response digest, computed independently with rsipstack (RFC 2617 §3.2.2).
    let expected = rsipstack::dialog::authenticate::compute_digest(
        "gateway",
        "s3cret",
        "proxy.test",
        "n0nce",
        &rsipstack::sip::Method::Message,
        &digest_field(&auth, "uri"),
        rsipstack::sip::headers::auth::Algorithm::Md5,
        Some(&rsipstack::sip::headers::auth::AuthQop::Auth {
            cnonce: digest_field(&auth, "cnonce"),
            nc: 1,
        }),
    );
    assert_eq!(digest_field(&auth, "response"), expected, "{auth}");
    assert_eq!(digest_field(&auth, "username"), "gateway");
    let cseq = |m: &[u8]| header_of(m, "CSeq").unwrap();
    assert_ne!(
        cseq(&first),
        cseq(&second),
        "a new CSeq for the new request"
    );
    far.udp.send_to(&answer(&second, 200), from).await.unwrap();
    let metrics = gw.broker.metrics().adapter("sip");
    for _ in 0..100 {
        if metrics.delivered_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metrics.delivered_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3261_10_softphone_registers_with_digest_and_is_reached_at_its_contact() {
    let gw = support::gateway(&[], |c| {
        c.registrar = vec![(
            "sip.test".into(),
            vec![cpim_sip::auth::RegistrarUser {
                username: "alice".into(),
                password: "wonder".into(),
            }],
        )];
    })
    .await;
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = phone.local_addr().unwrap();
    let register = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:sip.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKreg{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=p1\r\nTo: <sip:alice@sip.test>\r\n\
             Call-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:alice@{me}>\r\nExpires: 600\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        )
    };
    let mut buf = vec![0u8; 8192];
    phone
        .send_to(register(1, "").as_bytes(), gw.udp)
        .await
        .unwrap();
    let (n, _) = phone.recv_from(&mut buf).await.unwrap();
    assert_eq!(status_of(&buf[..n]), 401);
    let www = header_of(&buf[..n], "WWW-Authenticate").unwrap();
    let nonce = digest_field(&www, "nonce");
    let response = rsipstack::dialog::authenticate::compute_digest(
        "alice",
        "wonder",
        "sip.test",
        &nonce,
        &rsipstack::sip::Method::Register,
        "sip:sip.test",
        rsipstack::sip::headers::auth::Algorithm::Md5,
        None,
    );
    let auth = format!(
        "Authorization: Digest username=\"alice\", realm=\"sip.test\", nonce=\"{nonce}\", uri=\"sip:sip.test\", response=\"{response}\", algorithm=MD5\r\n"
    );
    phone
        .send_to(register(2, &auth).as_bytes(), gw.udp)
        .await
        .unwrap();
    let (n, _) = phone.recv_from(&mut buf).await.unwrap();
    assert_eq!(
        status_of(&buf[..n]),
        200,
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(header_of(&buf[..n], "Contact")
        .unwrap()
        .contains(&me.to_string()));
    // Wrong password: 403.
    let bad = auth.replace(&response, "00000000000000000000000000000000");
    phone
        .send_to(register(3, &bad).as_bytes(), gw.udp)
        .await
        .unwrap();
    let (n, _) = phone.recv_from(&mut buf).await.unwrap();
    assert_eq!(status_of(&buf[..n]), 403);
    // A message for alice goes to where she registered from.
    gw.from_mem
        .submit(Inbound::new(
            Event::Message(Message::text("ring ring")),
            Address::parse("sip:carol@mem.test").unwrap(),
            Address::parse("sip:alice@sip.test").unwrap(),
        ))
        .await
        .unwrap();
    let (m, from) = next_request(&phone).await;
    assert!(m.starts_with(b"MESSAGE sip:alice@sip.test SIP/2.0\r\n"));
    assert!(m.ends_with(b"ring ring"));
    phone.send_to(&answer(&m, 200), from).await.unwrap();
}

/// Issue 13: with the gateway as registrar, anyone could write as `alice@sip.test` (and
/// publish her presence) without her password. A MESSAGE or PUBLISH speaking for a
/// registrar account is challenged (407, RFC 3261 §22.3) and goes through only with that
/// account's own credentials; another account's valid password does not do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3261_22_3_requests_for_registrar_accounts_need_that_accounts_credentials() {
    let account = |u: &str, p: &str| cpim_sip::auth::RegistrarUser {
        username: u.into(),
        password: p.into(),
    };
    let gw = support::gateway(&[], |c| {
        c.registrar = vec![(
            "sip.test".into(),
            vec![account("alice", "wonder"), account("mallory", "mine")],
        )];
    })
    .await;
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = phone.local_addr().unwrap();
    let exchange = async |request: String| {
        let mut buf = vec![0u8; 8192];
        phone.send_to(request.as_bytes(), gw.udp).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), phone.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf.truncate(n);
        buf
    };
    let message = |n: u32, auth: &str| {
        let body = "it is me";
        format!(
            "MESSAGE sip:dora@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKauth{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=a{n}\r\nTo: <sip:dora@mem.test>\r\n\
             Call-ID: auth{n}\r\nCSeq: {n} MESSAGE\r\nContent-Type: text/plain\r\n{auth}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let proxy_auth = |user: &str, password: &str, nonce: &str, method: &str, uri: &str| {
        let method: rsipstack::sip::Method = method.parse().unwrap();
        let response = rsipstack::dialog::authenticate::compute_digest(
            user,
            password,
            "sip.test",
            nonce,
            &method,
            uri,
            rsipstack::sip::headers::auth::Algorithm::Md5,
            None,
        );
        format!(
            "Proxy-Authorization: Digest username=\"{user}\", realm=\"sip.test\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5\r\n"
        )
    };
    // No credentials: challenged, nothing delivered.
    let challenge = exchange(message(1, "")).await;
    assert_eq!(
        status_of(&challenge),
        407,
        "{}",
        String::from_utf8_lossy(&challenge)
    );
    let nonce = digest_field(
        &header_of(&challenge, "Proxy-Authenticate").unwrap(),
        "nonce",
    );
    // Mallory's own valid credentials: forbidden.
    let hers = proxy_auth("mallory", "mine", &nonce, "MESSAGE", "sip:dora@mem.test");
    assert_eq!(status_of(&exchange(message(2, &hers)).await), 403);
    // Alice's: accepted and delivered.
    let alices = proxy_auth("alice", "wonder", &nonce, "MESSAGE", "sip:dora@mem.test");
    assert_eq!(status_of(&exchange(message(3, &alices)).await), 202);
    assert_eq!(gw.mem.wait_for(1, Duration::from_secs(5)).await, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = gw.mem.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(received[0].from.to_string(), "sip:alice@sip.test");
    // PUBLISH of her presence is challenged the same way.
    let pidf = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:alice@sip.test\"><tuple id=\"t\"><status><basic>closed</basic></status></tuple></presence>";
    let publish = format!(
        "PUBLISH sip:alice@sip.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKpub1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=p1\r\nTo: <sip:alice@sip.test>\r\n\
         Call-ID: pub1\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 600\r\n\
         Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{pidf}",
        pidf.len()
    );
    assert_eq!(status_of(&exchange(publish).await), 407);
}

/// Registers `user` (password `password`) from `phone` with `Contact: <sip:user@addr{params}>`.
async fn register(
    phone: &UdpSocket,
    gw: std::net::SocketAddr,
    user: &str,
    password: &str,
    params: &str,
) {
    let me = phone.local_addr().unwrap();
    let request = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:sip.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKreg{user}{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@sip.test>;tag=p1\r\nTo: <sip:{user}@sip.test>\r\n\
             Call-ID: reg-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{me}{params}>\r\n\
             Expires: 600\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    let mut buf = vec![0u8; 8192];
    phone.send_to(request(1, "").as_bytes(), gw).await.unwrap();
    let (n, _) = phone.recv_from(&mut buf).await.unwrap();
    assert_eq!(status_of(&buf[..n]), 401);
    let nonce = digest_field(&header_of(&buf[..n], "WWW-Authenticate").unwrap(), "nonce");
    let response = rsipstack::dialog::authenticate::compute_digest(
        user,
        password,
        "sip.test",
        &nonce,
        &rsipstack::sip::Method::Register,
        "sip:sip.test",
        rsipstack::sip::headers::auth::Algorithm::Md5,
        None,
    );
    let auth = format!(
        "Authorization: Digest username=\"{user}\", realm=\"sip.test\", nonce=\"{nonce}\", uri=\"sip:sip.test\", response=\"{response}\", algorithm=MD5\r\n"
    );
    phone
        .send_to(request(2, &auth).as_bytes(), gw)
        .await
        .unwrap();
    let (n, _) = phone.recv_from(&mut buf).await.unwrap();
    assert_eq!(status_of(&buf[..n]), 200);
}

/// Issue 13: a message for an unregistered user of the gateway's own registrar domain
/// made the gateway look its own domain up in DNS (`remote-server-not-found`). It waits
/// for the user to register and is delivered then (`unregistered_users = "store"`), or
/// fails at once with `recipient-unavailable` (`"refuse"`). A message too large for UDP
/// to a phone registered over UDP fails at once with `policy-violation` (RFC 7572 §6)
/// when its contact says `transport=udp` or it takes no TCP — instead of being retried
/// for a day while the messages after it wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrar_users_are_reached_where_they_registered_or_told_why_not() {
    let accounts = || {
        vec![(
            "sip.test".into(),
            ["alice", "bob", "carol"]
                .iter()
                .map(|u| cpim_sip::auth::RegistrarUser {
                    username: (*u).into(),
                    password: "pw".into(),
                })
                .collect(),
        )]
    };
    let gw = support::gateway(&[], |c| c.registrar = accounts()).await;
    let message = |text: &str, to: &str| {
        Inbound::new(
            Event::Message(Message::text(text)),
            Address::parse("sip:dora@mem.test").unwrap(),
            Address::parse(to).unwrap(),
        )
    };
    // Stored until alice registers, then delivered where she registered from.
    gw.from_mem
        .submit(message("waiting for you", "sip:alice@sip.test"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(gw.mem.received().is_empty(), "{:#?}", gw.mem.received());
    let alice = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    register(&alice, gw.udp, "alice", "pw", "").await;
    let (m, from) = next_request(&alice).await;
    assert!(m.ends_with(b"waiting for you"));
    alice.send_to(&answer(&m, 200), from).await.unwrap();
    // Too large for UDP: bob's contact says UDP only; carol has no TCP listener.
    let big = "x".repeat(4000);
    let bob = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    register(&bob, gw.udp, "bob", "pw", ";transport=udp").await;
    let carol = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    register(&carol, gw.udp, "carol", "pw", "").await;
    let started = std::time::Instant::now();
    gw.from_mem
        .submit(message(&big, "sip:bob@sip.test"))
        .await
        .unwrap();
    gw.from_mem
        .submit(message(&big, "sip:carol@sip.test"))
        .await
        .unwrap();
    assert_eq!(gw.mem.wait_for(2, Duration::from_secs(10)).await, 2);
    assert!(started.elapsed() < Duration::from_secs(5), "failed at once");
    let failures: Vec<_> = gw.mem.received().iter().map(failure_of).collect();
    assert_eq!(
        failures,
        vec![Some(Condition::PolicyViolation); 2],
        "{:#?}",
        gw.mem.received()
    );
    // A small message after it is not held up.
    gw.from_mem
        .submit(message("small", "sip:carol@sip.test"))
        .await
        .unwrap();
    let (m, from) = next_request(&carol).await;
    assert!(m.ends_with(b"small"));
    carol.send_to(&answer(&m, 200), from).await.unwrap();

    // By policy: refused at once.
    let gw = support::gateway(&[], |c| {
        c.registrar = accounts();
        c.unregistered_store = false;
    })
    .await;
    gw.from_mem
        .submit(message("anyone there?", "sip:alice@sip.test"))
        .await
        .unwrap();
    assert_eq!(gw.mem.wait_for(1, Duration::from_secs(5)).await, 1);
    assert_eq!(
        failure_of(&gw.mem.received()[0]),
        Some(Condition::RecipientUnavailable),
        "{:#?}",
        gw.mem.received()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc6665_subscribe_faults_489_423_481() {
    let gw = support::gateway(&[], |_| {}).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = client.local_addr().unwrap();
    let mut buf = vec![0u8; 8192];
    // 489 for an event package the gateway does not serve (RFC 6665 §8.2.1).
    let subscribe = format!(
        "SUBSCRIBE sip:bob@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKev1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=e1\r\nTo: <sip:bob@mem.test>\r\n\
         Call-ID: ev1\r\nCSeq: 1 SUBSCRIBE\r\nEvent: dialog\r\nContact: <sip:alice@{me}>\r\n\
         Expires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    client.send_to(subscribe.as_bytes(), gw.udp).await.unwrap();
    let (n, _) = client.recv_from(&mut buf).await.unwrap();
    assert_eq!(status_of(&buf[..n]), 489);
    assert_eq!(
        header_of(&buf[..n], "Allow-Events").as_deref(),
        Some("presence, presence.winfo")
    );
    // 423 with Min-Expires for too short a subscription.
    let brief = subscribe
        .replace("Event: dialog", "Event: presence")
        .replace("Expires: 600", "Expires: 5")
        .replace("z9hG4bKev1", "z9hG4bKev2");
    client.send_to(brief.as_bytes(), gw.udp).await.unwrap();
    let (n, _) = client.recv_from(&mut buf).await.unwrap();
    assert_eq!(status_of(&buf[..n]), 423);
    assert_eq!(header_of(&buf[..n], "Min-Expires").as_deref(), Some("60"));
    // 481 for a refresh of a subscription that does not exist.
    let stale = subscribe
        .replace("Event: dialog", "Event: presence")
        .replace("To: <sip:bob@mem.test>", "To: <sip:bob@mem.test>;tag=gone")
        .replace("z9hG4bKev1", "z9hG4bKev3");
    client.send_to(stale.as_bytes(), gw.udp).await.unwrap();
    let (n, _) = client.recv_from(&mut buf).await.unwrap();
    assert_eq!(status_of(&buf[..n]), 481);
}

/// A SIP watcher's dialog dies with the gateway process; the spool keeps enough of it
/// that the restarted gateway ends it with `terminated;reason=deactivated` (RFC 6665
/// §4.1.3: subscribe again at once) instead of leaving the watcher without updates until
/// its refresh gets 481.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc6665_4_1_3_watchers_of_the_last_run_are_deactivated_after_a_restart() {
    let dir = std::env::temp_dir().join(format!(
        "cpim-sip-restart-{}-{}",
        std::process::id(),
        cpim_broker::envelope::unix_now_ms()
    ));
    let spool = dir.join("spool.log");
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = client.local_addr().unwrap();
    let mut buf = vec![0u8; 8192];
    let gw = support::gateway_on_spool(&spool).await;
    let subscribe = format!(
        "SUBSCRIBE sip:bob@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKrs1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=w1\r\nTo: <sip:bob@mem.test>\r\n\
         Call-ID: restart1\r\nCSeq: 1 SUBSCRIBE\r\nEvent: presence\r\nContact: <sip:alice@{me}>\r\n\
         Expires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    client.send_to(subscribe.as_bytes(), gw.udp).await.unwrap();
    let mut local_tag = None;
    let mut last_cseq = 0u32;
    // The 200 (with the gateway's tag) and the first NOTIFY, in either order.
    while local_tag.is_none() || last_cseq == 0 {
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("the gateway answers")
            .unwrap();
        let m = buf[..n].to_vec();
        if m.starts_with(b"SIP/2.0 ") {
            assert_eq!(status_of(&m), 200);
            let to = header_of(&m, "To").unwrap();
            local_tag = to.split("tag=").nth(1).map(str::to_owned);
        } else {
            last_cseq = header_of(&m, "CSeq")
                .and_then(|c| c.split_whitespace().next()?.parse().ok())
                .unwrap();
            client.send_to(&answer(&m, 200), from).await.unwrap();
        }
    }
    // Kept within a tick; then the gateway goes away without a goodbye.
    tokio::time::sleep(Duration::from_millis(800)).await;
    gw.broker.stop();
    drop(gw);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let gw = support::gateway_on_spool(&spool).await;
    let notify = loop {
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("the restarted gateway ends the dialog")
            .unwrap();
        let m = buf[..n].to_vec();
        if m.starts_with(b"NOTIFY ") {
            client.send_to(&answer(&m, 200), from).await.unwrap();
            break String::from_utf8_lossy(&m).to_string();
        }
    };
    assert!(
        notify.starts_with(&format!("NOTIFY sip:alice@{me} SIP/2.0\r\n")),
        "{notify}"
    );
    let m = notify.as_bytes();
    assert_eq!(header_of(m, "Call-ID").as_deref(), Some("restart1"));
    assert_eq!(
        header_of(m, "Subscription-State").as_deref(),
        Some("terminated;reason=deactivated")
    );
    let from = header_of(m, "From").unwrap();
    assert!(
        from.ends_with(&format!("tag={}", local_tag.unwrap())),
        "the dialog's own tags: {from}"
    );
    assert!(header_of(m, "To").unwrap().ends_with("tag=w1"));
    let cseq: u32 = header_of(m, "CSeq")
        .and_then(|c| c.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(cseq > last_cseq, "CSeq {cseq} after {last_cseq}");
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Self-signed certificate for 127.0.0.1 made with the openssl command line.
fn self_signed(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs (scripts/setup.sh installs it)");
    assert!(status.success());
    (
        std::fs::read(dir.join("cert.pem")).unwrap(),
        std::fs::read(dir.join("key.pem")).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_answers_options_and_takes_a_message() {
    let dir = std::env::temp_dir().join(format!("cpim-sip-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed(&dir);
    let port = support::free_port();
    let gw = support::gateway(&[], |c| {
        c.listen.push(cpim_sip::transport::Listen {
            transport: Transport::Tls,
            address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        });
        c.tls = Some((cert.clone(), key));
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&cert) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let body = "over TLS";
    let request = format!(
        "MESSAGE sip:bob@mem.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bKtls1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=t1\r\nTo: <sip:bob@mem.test>\r\n\
         Call-ID: tls1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut acc = Vec::new();
    let mut buf = vec![0u8; 8192];
    let response = loop {
        if let Some(m) = take_message(&mut acc) {
            break m;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        acc.extend_from_slice(&buf[..n]);
    };
    assert_eq!(status_of(&response), 202);
    assert_eq!(gw.mem.wait_for(1, Duration::from_secs(5)).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertised_host_is_written_in_via_and_contact() {
    let far = Peer2::bind().await;
    let proxy = far.addr();
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: Transport::Udp,
            addr: proxy,
        });
        c.advertise = Some("gw.example.net".into());
    })
    .await;
    // An upstream subscription carries both (a Contact for the NOTIFYs).
    gw.from_mem
        .submit(Inbound::new(
            Event::Subscription(cpim::event::Subscription::new(
                cpim::event::SubscriptionOp::Subscribe,
            )),
            Address::parse("sip:carol@mem.test").unwrap(),
            Address::parse("sip:bob@sip.test").unwrap(),
        ))
        .await
        .unwrap();
    let (request, from) = next_request(&far.udp).await;
    assert!(request.starts_with(b"SUBSCRIBE sip:bob@sip.test SIP/2.0\r\n"));
    let port = gw.udp.port();
    assert!(
        header_of(&request, "Via")
            .unwrap()
            .starts_with(&format!("SIP/2.0/UDP gw.example.net:{port};")),
        "{}",
        String::from_utf8_lossy(&request)
    );
    assert_eq!(
        header_of(&request, "Contact").unwrap(),
        format!("<sip:gw@gw.example.net:{port}>")
    );
    far.udp.send_to(&answer(&request, 403), from).await.unwrap();
}

/// SIGTERM's drain: a MESSAGE in flight when the gateway stops still gets its response
/// read and reported; a new MESSAGE meanwhile gets 503 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_reads_responses_in_flight_and_refuses_new_work_with_503() {
    let far = Peer2::bind().await;
    let proxy = far.addr();
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: Transport::Udp,
            addr: proxy,
        });
    })
    .await;
    gw.from_mem
        .submit(Inbound::new(
            Event::Message(Message::text("in flight at the stop")),
            Address::parse("sip:carol@mem.test").unwrap(),
            Address::parse("sip:bob@sip.test").unwrap(),
        ))
        .await
        .unwrap();
    let (request, from) = next_request(&far.udp).await;
    gw.broker.stop();
    // A new MESSAGE while stopping: 503 + Retry-After.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let late = format!(
        "MESSAGE sip:dora@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKlate1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=l1\r\nTo: <sip:dora@mem.test>\r\n\
         Call-ID: late1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nlate",
        client.local_addr().unwrap()
    );
    client.send_to(late.as_bytes(), gw.udp).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        status_of(&buf[..n]),
        503,
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(header_of(&buf[..n], "Retry-After").is_some());
    // The answer to the request in flight comes after the stop began: still counted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    far.udp.send_to(&answer(&request, 200), from).await.unwrap();
    let metrics = gw.broker.metrics().adapter("sip");
    for _ in 0..100 {
        if metrics.delivered_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metrics.delivered_count(),
        1,
        "the in-flight MESSAGE completed during the drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpim_domains_get_message_cpim() {
    let far = Peer2::bind().await;
    let proxy = far.addr();
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: Transport::Udp,
            addr: proxy,
        });
        c.cpim_domains = vec!["sip.test".into()];
    })
    .await;
    gw.from_mem
        .submit(Inbound::new(
            Event::Message(Message::text("wrapped")),
            Address::parse("sip:carol@mem.test").unwrap(),
            Address::parse("sip:bob@sip.test").unwrap(),
        ))
        .await
        .unwrap();
    let (request, from) = next_request(&far.udp).await;
    assert_eq!(
        header_of(&request, "Content-Type").as_deref(),
        Some("message/cpim")
    );
    let body = String::from_utf8_lossy(&request).to_string();
    let cpim = body.split_once("\r\n\r\n").unwrap().1;
    let parsed = cpim::message::CpimMessage::parse(cpim.as_bytes()).unwrap();
    assert_eq!(parsed.content().body(), b"wrapped");
    assert_eq!(
        parsed
            .from()
            .unwrap()
            .unwrap()
            .address()
            .unwrap()
            .to_string(),
        "sip:carol@mem.test"
    );
    far.udp.send_to(&answer(&request, 200), from).await.unwrap();
}

/// A baresip-like text-only UA: `text/plain` is answered 200, anything else 415 with
/// `Accept: text/plain`. Returns every request it got.
async fn text_only_ua(socket: &UdpSocket, wanted: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut texts = 0;
    while texts < wanted {
        let (request, from) = next_request(socket).await;
        let plain = header_of(&request, "Content-Type")
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("text/plain"));
        let response = if plain {
            texts += 1;
            answer(&request, 200)
        } else {
            let head = String::from_utf8(answer(&request, 415)).unwrap();
            head.replace(
                "Content-Length: 0",
                "Accept: text/plain\r\nContent-Length: 0",
            )
            .into_bytes()
        };
        socket.send_to(&response, from).await.unwrap();
        got.push(request);
    }
    got
}

fn content_type(request: &[u8]) -> String {
    header_of(request, "Content-Type").unwrap_or_default()
}

/// Issue 13: XMPP clients and apps ask for receipts by default; the gateway then sent
/// `message/cpim`, a text-only phone answered 415 + `Accept: text/plain`, and the text
/// never arrived (`not-acceptable`). A contact that has not shown it takes CPIM gets the
/// text as it is (its 200 still confirms delivery); one configured for CPIM that refuses
/// it gets the text again as `text/plain` at once, and is remembered; one that wrote
/// CPIM itself gets CPIM with the IMDN request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3261_21_4_13_a_text_only_phone_gets_the_text_whatever_the_sender_asked() {
    let far = Peer2::bind().await;
    let proxy = far.addr();
    let gw = support::gateway(&["cpim.test"], |c| {
        c.outbound_proxy = Some(Peer {
            transport: Transport::Udp,
            addr: proxy,
        });
        c.cpim_domains = vec!["cpim.test".into()];
    })
    .await;
    let send = |text: &str, to: &str| {
        let mut m = Message::text(text);
        m.receipts.delivered = true;
        m.receipts.displayed = true;
        Inbound::new(
            Event::Message(m),
            Address::parse("sip:carol@mem.test").unwrap(),
            Address::parse(to).unwrap(),
        )
    };
    // Unknown contact, receipts asked: plain text, and the 200 is a delivery receipt.
    gw.from_mem
        .submit(send("one", "sip:bob@sip.test"))
        .await
        .unwrap();
    let got = text_only_ua(&far.udp, 1).await;
    assert_eq!(got.len(), 1, "no CPIM attempt first");
    assert!(content_type(&got[0]).starts_with("text/plain"));
    assert!(got[0].ends_with(b"one"));
    // The sender asked for a display notification too: none can come from plain text,
    // and it hears so after the delivery receipt.
    let statuses = |from: usize, n: usize| -> Vec<NotificationStatus> {
        gw.mem.received()[from..from + n]
            .iter()
            .map(|e| match &e.event {
                Event::Notification(n) => n.status.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(gw.mem.wait_for(2, Duration::from_secs(5)).await, 2);
    assert_eq!(
        statuses(0, 2),
        [
            NotificationStatus::Delivered,
            NotificationStatus::DisplayUnknown
        ]
    );
    // Configured for CPIM, but this phone refuses it: the text follows at once.
    gw.from_mem
        .submit(send("two", "sip:dan@cpim.test"))
        .await
        .unwrap();
    let got = text_only_ua(&far.udp, 1).await;
    assert_eq!(got.len(), 2);
    assert_eq!(content_type(&got[0]), "message/cpim");
    assert!(content_type(&got[1]).starts_with("text/plain"));
    assert!(got[1].ends_with(b"two"));
    assert_eq!(
        header_of(&got[0], "Call-ID"),
        header_of(&got[1], "Call-ID"),
        "the same message"
    );
    assert_eq!(gw.mem.wait_for(4, Duration::from_secs(5)).await, 4);
    assert_eq!(
        statuses(2, 2),
        [
            NotificationStatus::Delivered,
            NotificationStatus::DisplayUnknown
        ]
    );
    // Remembered: the next message to dan goes as text straight away.
    gw.from_mem
        .submit(send("three", "sip:dan@cpim.test"))
        .await
        .unwrap();
    let got = text_only_ua(&far.udp, 1).await;
    assert_eq!(got.len(), 1, "{:?}", content_type(&got[0]));
    assert!(got[0].ends_with(b"three"));
    // A contact that writes CPIM itself takes it: erin gets CPIM with the IMDN request.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cpim = "From: <sip:erin@sip.test>\r\nTo: <sip:carol@mem.test>\r\n\
                DateTime: 2026-12-06T10:00:00Z\r\n\r\nContent-Type: text/plain\r\n\r\nhello";
    let request = format!(
        "MESSAGE sip:carol@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKerin1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:erin@sip.test>;tag=e1\r\nTo: <sip:carol@mem.test>\r\n\
         Call-ID: erin1\r\nCSeq: 1 MESSAGE\r\nContent-Type: message/cpim\r\nContent-Length: {}\r\n\r\n{cpim}",
        client.local_addr().unwrap(),
        cpim.len()
    );
    client.send_to(request.as_bytes(), gw.udp).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_of(&buf[..n]), 202);
    gw.from_mem
        .submit(send("four", "sip:erin@sip.test"))
        .await
        .unwrap();
    let (m, from) = next_request(&far.udp).await;
    assert_eq!(content_type(&m), "message/cpim");
    assert!(String::from_utf8_lossy(&m).contains("imdn.Disposition-Notification"));
    far.udp.send_to(&answer(&m, 200), from).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3261_12_1_1_subscribe_2xx_copies_record_route() {
    let gw = support::gateway(&[], |_| {}).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = client.local_addr().unwrap();
    let subscribe = format!(
        "SUBSCRIBE sip:bob@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKrr1\r\n\
         Record-Route: <sip:{me};lr;n=1>\r\nRecord-Route: <sip:{me};lr;n=2>\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=rr\r\nTo: <sip:bob@mem.test>\r\n\
         Call-ID: rr1\r\nCSeq: 1 SUBSCRIBE\r\nEvent: presence\r\nContact: <sip:alice@{me}>\r\n\
         Expires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    client.send_to(subscribe.as_bytes(), gw.udp).await.unwrap();
    let mut buf = vec![0u8; 8192];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let m = String::from_utf8_lossy(&buf[..n]).to_string();
        if m.starts_with("SIP/2.0 200") {
            let rr: Vec<&str> = m
                .lines()
                .filter(|l| l.starts_with("Record-Route:"))
                .collect();
            assert_eq!(
                rr,
                [
                    format!("Record-Route: <sip:{me};lr;n=1>"),
                    format!("Record-Route: <sip:{me};lr;n=2>")
                ],
                "{m}"
            );
            break;
        }
    }
}

/// Everything the gateway sends `client` within `window`; requests (NOTIFYs) are
/// answered 200.
async fn gather(client: &UdpSocket, window: Duration) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Ok((n, from))) =
        tokio::time::timeout_at(deadline, client.recv_from(&mut buf)).await
    {
        let m = buf[..n].to_vec();
        if !m.starts_with(b"SIP/2.0 ") {
            client.send_to(&answer(&m, 200), from).await.unwrap();
        }
        out.push(m);
    }
    out
}

fn notifies_of<'a>(got: &'a [Vec<u8>], call_id: &str) -> Vec<&'a Vec<u8>> {
    got.iter()
        .filter(|m| {
            m.starts_with(b"NOTIFY ") && header_of(m, "Call-ID").as_deref() == Some(call_id)
        })
        .collect()
}

/// The gateway's tag in the 200 among `got`.
fn to_tag_of_200(got: &[Vec<u8>]) -> String {
    let ok = got
        .iter()
        .find(|m| m.starts_with(b"SIP/2.0 200"))
        .expect("200");
    let to = header_of(ok, "To").unwrap();
    to.split("tag=").nth(1).unwrap().to_owned()
}

fn body_of(m: &[u8]) -> String {
    let text = String::from_utf8_lossy(m).to_string();
    text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

fn mem_subscriptions(gw: &support::Gateway) -> Vec<(cpim::event::SubscriptionOp, bool)> {
    gw.mem
        .received()
        .into_iter()
        .filter_map(|e| match e.event {
            Event::Subscription(s) => Some((s.op, s.aggregate)),
            _ => None,
        })
        .collect()
}

/// RFC 6665 §4.4.3 and §4.2.1.4 with a watcher on two devices: a fetch (`Expires: 0`
/// out of dialog) returns the current state and touches nothing else; ending one dialog
/// ends only that dialog; a second device's first NOTIFY already carries the state; only
/// the last dialog's end reaches the presentity's network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc6665_4_4_3_a_fetch_or_one_dialogs_end_leaves_the_other_dialog_alone() {
    use cpim::event::{PresenceUpdate, Subscription, SubscriptionOp};
    use cpim::presence::Presence;
    let gw = support::gateway(&[], |_| {}).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = client.local_addr().unwrap();
    let subscribe = |call_id: &str, tag: &str, to_tag: Option<&str>, expires: u32| {
        let to = match to_tag {
            Some(t) => format!("<sip:bob@mem.test>;tag={t}"),
            None => "<sip:bob@mem.test>".to_owned(),
        };
        format!(
            "SUBSCRIBE sip:bob@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}{expires}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag={tag}\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: {} SUBSCRIBE\r\nEvent: presence\r\nContact: <sip:alice@{me}>\r\n\
             Expires: {expires}\r\nContent-Length: 0\r\n\r\n",
            if expires == 0 { 9 } else { 1 }
        )
    };
    let publish = |basic: &str| {
        let submitter = gw.from_mem.clone();
        let pidf = format!(
            "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@mem.test\"><tuple id=\"t\"><status><basic>{basic}</basic>{show}</status></tuple></presence>",
            show = if basic == "open" { "<show xmlns=\"jabber:client\">dnd</show>" } else { "" }
        );
        async move {
            let inbound = Inbound::new(
                Event::Presence(PresenceUpdate {
                    presence: Presence::parse(pidf.as_bytes()).unwrap(),
                }),
                Address::parse("sip:bob@mem.test").unwrap(),
                Address::parse("sip:alice@sip.test").unwrap(),
            );
            submitter.submit(inbound).await.unwrap();
        }
    };

    // Device 1 subscribes; bob's side approves and is online.
    client
        .send_to(subscribe("dev1", "w1", None, 600).as_bytes(), gw.udp)
        .await
        .unwrap();
    let got = gather(&client, Duration::from_millis(600)).await;
    let tag1 = to_tag_of_200(&got);
    assert_eq!(
        mem_subscriptions(&gw),
        [(SubscriptionOp::Subscribe, false)],
        "bob's side is asked"
    );
    gw.from_mem
        .submit(Inbound::new(
            Event::Subscription(Subscription::new(SubscriptionOp::Approve)),
            Address::parse("sip:bob@mem.test").unwrap(),
            Address::parse("sip:alice@sip.test").unwrap(),
        ))
        .await
        .unwrap();
    publish("open").await;
    let got = gather(&client, Duration::from_millis(800)).await;
    assert!(
        notifies_of(&got, "dev1")
            .iter()
            .any(|n| body_of(n).contains("<basic>open</basic>")
                && body_of(n).contains("urn:ietf:params:xml:ns:pidf:rpid")
                && body_of(n).contains("busy")),
        "device 1 sees bob online and busy (RFC 4480, as phones show it): {got:?}"
    );
    let asked_before = mem_subscriptions(&gw);

    // A fetch beside it: the current state, terminated; device 1 is left alone.
    client
        .send_to(subscribe("fetch1", "w2", None, 0).as_bytes(), gw.udp)
        .await
        .unwrap();
    let got = gather(&client, Duration::from_millis(800)).await;
    let fetched = notifies_of(&got, "fetch1");
    assert_eq!(fetched.len(), 1, "one NOTIFY for the fetch");
    assert_eq!(
        header_of(fetched[0], "Subscription-State").as_deref(),
        Some("terminated;reason=timeout")
    );
    assert!(
        body_of(fetched[0]).contains("<basic>open</basic>"),
        "the fetch returns the state: {}",
        body_of(fetched[0])
    );
    assert!(notifies_of(&got, "dev1").is_empty(), "device 1 untouched");
    assert_eq!(
        mem_subscriptions(&gw),
        asked_before,
        "nothing reaches bob's side"
    );

    // Device 2: its first NOTIFY is active and shows bob online.
    client
        .send_to(subscribe("dev2", "w3", None, 600).as_bytes(), gw.udp)
        .await
        .unwrap();
    let got = gather(&client, Duration::from_millis(800)).await;
    let tag2 = to_tag_of_200(&got);
    let first = notifies_of(&got, "dev2");
    assert!(!first.is_empty(), "device 2 is notified");
    assert!(
        header_of(first[0], "Subscription-State")
            .unwrap()
            .starts_with("active"),
        "{}",
        String::from_utf8_lossy(first[0])
    );
    assert!(body_of(first[0]).contains("<basic>open</basic>"));

    // Device 2 ends its dialog: only that one ends.
    client
        .send_to(subscribe("dev2", "w3", Some(&tag2), 0).as_bytes(), gw.udp)
        .await
        .unwrap();
    let got = gather(&client, Duration::from_millis(800)).await;
    assert!(notifies_of(&got, "dev2")
        .iter()
        .any(|n| header_of(n, "Subscription-State")
            .unwrap()
            .starts_with("terminated")));
    assert!(notifies_of(&got, "dev1").is_empty(), "device 1 untouched");
    assert!(
        !mem_subscriptions(&gw).contains(&(SubscriptionOp::Unsubscribe, true)),
        "bob's side still has a watcher: {:?}",
        mem_subscriptions(&gw)
    );
    // Device 1 still follows bob.
    publish("closed").await;
    let got = gather(&client, Duration::from_millis(800)).await;
    let later = notifies_of(&got, "dev1");
    assert!(
        later
            .iter()
            .any(|n| body_of(n).contains("<basic>closed</basic>")
                && header_of(n, "Subscription-State")
                    .unwrap()
                    .starts_with("active")),
        "device 1 still gets bob's changes: {got:?}"
    );
    // The last dialog's end is the watcher's end at bob's side.
    client
        .send_to(subscribe("dev1", "w1", Some(&tag1), 0).as_bytes(), gw.udp)
        .await
        .unwrap();
    let _ = gather(&client, Duration::from_millis(800)).await;
    assert!(
        mem_subscriptions(&gw).contains(&(SubscriptionOp::Unsubscribe, true)),
        "{:?}",
        mem_subscriptions(&gw)
    );
}

/// The subscription events the in-memory network received, in order, as (op, aggregate).
fn mem_subscription_ops(gw: &support::Gateway) -> Vec<cpim::event::SubscriptionOp> {
    mem_subscriptions(gw)
        .into_iter()
        .map(|(op, _)| op)
        .collect()
}

/// RFC 7248 §4.1: a watcher of another network asking for a SIP user's presence is
/// approved (XMPP `subscribed`) when the SIP side authorizes the gateway's SUBSCRIBE —
/// its first `active` NOTIFY — not when the request arrives; a `pending` NOTIFY keeps it
/// waiting, and a refusal reaches it as a denial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7248_4_1_a_watcher_is_approved_on_the_first_active_notify_not_before() {
    use cpim::event::{Subscription, SubscriptionOp};
    let ua = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ua_addr = ua.local_addr().unwrap();
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: Transport::Udp,
            addr: ua_addr,
        });
    })
    .await;
    let ask = |watcher: &str, presentity: &str| {
        Inbound::new(
            Event::Subscription(Subscription::new(SubscriptionOp::Subscribe)),
            Address::parse(watcher).unwrap(),
            Address::parse(presentity).unwrap(),
        )
    };
    gw.from_mem
        .submit(ask("sip:bob@mem.test", "sip:carol@sip.test"))
        .await
        .unwrap();
    let (subscribe, from) = next_request(&ua).await;
    assert!(subscribe.starts_with(b"SUBSCRIBE sip:carol@sip.test "));
    let to = header_of(&subscribe, "To").unwrap();
    let ok = support::reply(&subscribe, 200, "carol", &[("Expires", "600".to_owned())]);
    ua.send_to(ok.as_bytes(), from).await.unwrap();
    let contact = header_of(&subscribe, "Contact").unwrap();
    let target = contact
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();
    let notify = |cseq: u32, state: &str, body: &str| {
        format!(
            "NOTIFY {target} SIP/2.0\r\nVia: SIP/2.0/UDP {ua_addr};branch=z9hG4bKcn{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: {to};tag=carol\r\nTo: {}\r\nCall-ID: {}\r\n\
             CSeq: {cseq} NOTIFY\r\nEvent: presence\r\nSubscription-State: {state}\r\n\
             Contact: <sip:carol@{ua_addr}>\r\n{}Content-Length: {}\r\n\r\n{body}",
            header_of(&subscribe, "From").unwrap(),
            header_of(&subscribe, "Call-ID").unwrap(),
            if body.is_empty() {
                ""
            } else {
                "Content-Type: application/pidf+xml\r\n"
            },
            body.len()
        )
    };
    // carol has not decided: pending, no body. bob is not approved.
    ua.send_to(notify(1, "pending;expires=600", "").as_bytes(), from)
        .await
        .unwrap();
    let (got, _) = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = vec![0u8; 8192];
        loop {
            let (n, f) = ua.recv_from(&mut buf).await.unwrap();
            if buf[..n].starts_with(b"SIP/2.0 ") {
                return (buf[..n].to_vec(), f);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(status_of(&got), 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        mem_subscription_ops(&gw),
        Vec::<SubscriptionOp>::new(),
        "no approval before the SIP side authorized"
    );
    // carol authorizes: bob is approved, then gets her state.
    let pidf = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:carol@sip.test\"><tuple id=\"p\"><status><basic>open</basic></status></tuple></presence>";
    ua.send_to(notify(2, "active;expires=600", pidf).as_bytes(), from)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let events: Vec<&'static str> = gw
            .mem
            .received()
            .into_iter()
            .filter_map(|e| match e.event {
                Event::Subscription(s) if s.op == SubscriptionOp::Approve => Some("approve"),
                Event::Presence(_) => Some("presence"),
                _ => None,
            })
            .collect();
        if events == ["approve", "presence"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob: approval then state, got {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The broker's own subscription for its approved watcher reuses the dialog: no
    // second SUBSCRIBE.
    let more = tokio::time::timeout(Duration::from_millis(600), async {
        let mut buf = vec![0u8; 8192];
        loop {
            let (n, _) = ua.recv_from(&mut buf).await.unwrap();
            if buf[..n].starts_with(b"SUBSCRIBE ") {
                return buf[..n].to_vec();
            }
        }
    })
    .await;
    assert!(
        more.is_err(),
        "one SUBSCRIBE only: {:?}",
        more.map(|m| String::from_utf8_lossy(&m).to_string())
    );

    // dave asks for erin, who refuses (403): dave hears the refusal.
    gw.from_mem
        .submit(ask("sip:dave@mem.test", "sip:erin@sip.test"))
        .await
        .unwrap();
    let (subscribe, from) = next_request(&ua).await;
    assert!(subscribe.starts_with(b"SUBSCRIBE sip:erin@sip.test "));
    ua.send_to(&answer(&subscribe, 403), from).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let denied = gw.mem.received().into_iter().any(|e| {
            e.to.to_string().contains("dave")
                && matches!(e.event, Event::Subscription(ref s) if s.op == SubscriptionOp::Deny)
        });
        if denied {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "dave is refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A UA standing for SIP presentities behind the gateway's outbound proxy: answers the
/// gateway's SUBSCRIBEs as told and sends NOTIFYs in their dialogs.
struct Presentity {
    ua: UdpSocket,
}

impl Presentity {
    /// The next SUBSCRIBE within `wait`, with where it came from.
    async fn subscribe(&self, wait: Duration) -> Option<(Vec<u8>, std::net::SocketAddr)> {
        tokio::time::timeout(wait, async {
            let mut buf = vec![0u8; 8192];
            loop {
                let (n, f) = self.ua.recv_from(&mut buf).await.unwrap();
                if buf[..n].starts_with(b"SUBSCRIBE ") {
                    return (buf[..n].to_vec(), f);
                }
            }
        })
        .await
        .ok()
    }

    /// Accepts `subscribe` for `expires` seconds with tag `tag` and sends an active
    /// NOTIFY with an open state.
    async fn accept(&self, subscribe: &[u8], from: std::net::SocketAddr, tag: &str, expires: u32) {
        let me = self.ua.local_addr().unwrap();
        let to = header_of(subscribe, "To").unwrap();
        let ok = support::reply(
            subscribe,
            200,
            tag,
            &[
                ("Expires", expires.to_string()),
                ("Contact", format!("<sip:carol@{me}>")),
            ],
        );
        self.ua.send_to(ok.as_bytes(), from).await.unwrap();
        let contact = header_of(subscribe, "Contact").unwrap();
        let target = contact
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_owned();
        let to = to.split(";tag=").next().unwrap().to_owned();
        let body = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:carol@sip.test\"><tuple id=\"p\"><status><basic>open</basic></status></tuple></presence>";
        let notify = format!(
            "NOTIFY {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKpn{tag}{expires}\r\n\
             Max-Forwards: 70\r\nFrom: {to};tag={tag}\r\nTo: {}\r\nCall-ID: {}\r\n\
             CSeq: 1 NOTIFY\r\nEvent: presence\r\nSubscription-State: active;expires={expires}\r\n\
             Contact: <sip:carol@{me}>\r\nContent-Type: application/pidf+xml\r\n\
             Content-Length: {}\r\n\r\n{body}",
            header_of(subscribe, "From").unwrap(),
            header_of(subscribe, "Call-ID").unwrap(),
            body.len()
        );
        self.ua.send_to(notify.as_bytes(), from).await.unwrap();
    }
}

/// RFC 7248 §4.3.2 / issue 13: when a SIP user's dialog is lost (its refresh gets 481)
/// and the gateway cannot subscribe anew (500), the watchers on other networks are told
/// the subscription ended (`giveup`: XMPP `unavailable`, not `unsubscribed`) instead of
/// keeping the last open state, and the gateway does not keep re-subscribing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7248_4_3_2_a_lost_dialog_that_cannot_be_made_again_ends_the_watchers_view() {
    use cpim::event::{Subscription, SubscriptionOp};
    let p = Presentity {
        ua: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    };
    let ua_addr = p.ua.local_addr().unwrap();
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: Transport::Udp,
            addr: ua_addr,
        });
    })
    .await;
    gw.from_mem
        .submit(Inbound::new(
            Event::Subscription(Subscription::new(SubscriptionOp::Subscribe)),
            Address::parse("sip:bob@mem.test").unwrap(),
            Address::parse("sip:carol@sip.test").unwrap(),
        ))
        .await
        .unwrap();
    let (first, from) = p
        .subscribe(Duration::from_secs(5))
        .await
        .expect("SUBSCRIBE");
    p.accept(&first, from, "c1", 4).await;
    // The refresh (after 2 s): carol's phone lost the dialog. Before it, RFC 7248 §7:
    // the watcher is probed (in carol's name).
    let (refresh, from) = p.subscribe(Duration::from_secs(6)).await.expect("refresh");
    assert!(
        gw.mem.received().into_iter().any(|e| {
            matches!(e.event, Event::Subscription(ref s) if s.op == SubscriptionOp::Probe)
                && e.from.to_string().contains("carol")
                && e.to.to_string().contains("bob")
        }),
        "bob was probed before the refresh: {:?}",
        mem_subscriptions(&gw)
    );
    assert_eq!(header_of(&refresh, "Call-ID"), header_of(&first, "Call-ID"));
    p.ua.send_to(&answer(&refresh, 481), from).await.unwrap();
    // A new subscription, which fails.
    let (again, from) = p
        .subscribe(Duration::from_secs(5))
        .await
        .expect("a new SUBSCRIBE");
    assert_ne!(header_of(&again, "Call-ID"), header_of(&first, "Call-ID"));
    p.ua.send_to(&answer(&again, 500), from).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ended = gw.mem.received().into_iter().any(|e| {
            matches!(e.event, Event::Subscription(ref s)
                if s.op == SubscriptionOp::Deny && s.reason.as_deref() == Some("giveup"))
        });
        if ended {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob is told carol's subscription ended: {:?}",
            mem_subscriptions(&gw)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        p.subscribe(Duration::from_millis(1500)).await.is_none(),
        "no SUBSCRIBE loop after giving up"
    );
}

/// Issue 13: who may see a SIP user's presence is a policy. With the default
/// (`contacts`), a watcher that shares the gateway's subscription the SIP side
/// authorized for another waits — until the SIP user subscribes to that watcher's
/// presence itself (its buddy list), which approves it; an allow-listed one passes at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_authorization_contacts_policy_waits_until_the_sip_user_follows_the_watcher() {
    use cpim::event::{Subscription, SubscriptionOp};
    let p = Presentity {
        ua: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    };
    let ua_addr = p.ua.local_addr().unwrap();
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: Transport::Udp,
            addr: ua_addr,
        });
        c.presence_allow = vec!["frank@mem.test".into()];
    })
    .await;
    let ask = |watcher: &str| {
        Inbound::new(
            Event::Subscription(Subscription::new(SubscriptionOp::Subscribe)),
            Address::parse(watcher).unwrap(),
            Address::parse("sip:carol@sip.test").unwrap(),
        )
    };
    let approved = |who: &str| {
        gw.mem.received().into_iter().any(|e| {
            e.to.to_string().contains(who)
                && matches!(e.event, Event::Subscription(ref s) if s.op == SubscriptionOp::Approve)
        })
    };
    gw.from_mem.submit(ask("sip:bob@mem.test")).await.unwrap();
    let (first, from) = p
        .subscribe(Duration::from_secs(5))
        .await
        .expect("SUBSCRIBE");
    p.accept(&first, from, "c1", 600).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !approved("bob") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob, in whose name carol was asked, is approved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // erin shares the subscription: carol was not asked about her.
    gw.from_mem.submit(ask("sip:erin@mem.test")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!approved("erin"), "erin waits");
    // An allow-listed watcher passes at once.
    gw.from_mem.submit(ask("sip:frank@mem.test")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(approved("frank"), "frank is on the allow list");
    // carol's phone subscribes to erin's presence: erin is one of her contacts now.
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = phone.local_addr().unwrap();
    let subscribe = format!(
        "SUBSCRIBE sip:erin@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbuddy\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@sip.test>;tag=buddy\r\nTo: <sip:erin@mem.test>\r\n\
         Call-ID: buddy-erin\r\nCSeq: 1 SUBSCRIBE\r\nEvent: presence\r\n\
         Contact: <sip:carol@{me}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    phone.send_to(subscribe.as_bytes(), gw.udp).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !approved("erin") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "erin is approved once carol follows her: {:?}",
            mem_subscriptions(&gw)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// RFC 6665 §4.4.3 / RFC 7248 §6.2: a fetch (`Expires: 0`) of a presentity of another
/// network, with no other dialog to answer from, is a probe of that network in the
/// watcher's name; its one NOTIFY waits for the answer and carries the state, instead
/// of going out at once without it. Without an answer it still comes, bare, soon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc6665_4_4_3_a_fetch_waits_for_the_probe_answer_and_returns_the_state() {
    use cpim::event::{PresenceUpdate, SubscriptionOp};
    use cpim::presence::Presence;
    let gw = support::gateway(&[], |_| {}).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = client.local_addr().unwrap();
    let fetch = |call_id: &str, to: &str| {
        format!(
            "SUBSCRIBE sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=f{call_id}\r\nTo: <sip:{to}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 SUBSCRIBE\r\nEvent: presence\r\nContact: <sip:alice@{me}>\r\n\
             Expires: 0\r\nContent-Length: 0\r\n\r\n"
        )
    };
    client
        .send_to(fetch("fetch-bob", "bob@mem.test").as_bytes(), gw.udp)
        .await
        .unwrap();
    // bob's network is probed in alice's name, and answers her.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let probed = gw.mem.received().into_iter().any(|e| {
            matches!(e.event, Event::Subscription(ref s) if s.op == SubscriptionOp::Probe)
                && e.from.to_string().contains("alice")
        });
        if probed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob's network is probed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pidf = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@mem.test\"><tuple id=\"t\"><status><basic>open</basic></status><note>in the lab</note></tuple></presence>";
    gw.from_mem
        .submit(Inbound::new(
            Event::Presence(PresenceUpdate {
                presence: Presence::parse(pidf.as_bytes()).unwrap(),
            }),
            Address::parse("sip:bob@mem.test").unwrap(),
            Address::parse("sip:alice@sip.test").unwrap(),
        ))
        .await
        .unwrap();
    let got = gather(&client, Duration::from_millis(1000)).await;
    let notifies = notifies_of(&got, "fetch-bob");
    assert_eq!(notifies.len(), 1, "one NOTIFY for the fetch: {got:?}");
    assert!(header_of(notifies[0], "Subscription-State")
        .unwrap()
        .starts_with("terminated"));
    assert!(
        body_of(notifies[0]).contains("in the lab"),
        "the fetch returns the state: {}",
        body_of(notifies[0])
    );

    // carol's network does not answer: the NOTIFY comes anyway, bare, within 2 s.
    client
        .send_to(fetch("fetch-carol", "carol@mem.test").as_bytes(), gw.udp)
        .await
        .unwrap();
    let got = gather(&client, Duration::from_millis(2500)).await;
    let notifies = notifies_of(&got, "fetch-carol");
    assert_eq!(notifies.len(), 1, "{got:?}");
    assert!(header_of(notifies[0], "Subscription-State")
        .unwrap()
        .starts_with("terminated"));
    assert!(body_of(notifies[0]).is_empty());
}

/// Issue 13 / RFC 5438 §5.3: a message held for an unregistered user of the gateway's
/// registrar reaches its sender, if it asked for notifications, as `stored` — once,
/// however often it is tried — and then as `delivered` when the user registers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc5438_a_message_held_for_an_unregistered_user_is_reported_stored_once() {
    use cpim::event::NotificationStatus;
    let gw = support::gateway(&[], |c| {
        c.registrar = vec![(
            "sip.test".into(),
            vec![cpim_sip::auth::RegistrarUser {
                username: "alice".into(),
                password: "pw".into(),
            }],
        )];
    })
    .await;
    let mut asking = Message::text("tell me when she has it");
    asking.receipts.delivered = true;
    gw.from_mem
        .submit(Inbound::new(
            Event::Message(asking),
            Address::parse("sip:dora@mem.test").unwrap(),
            Address::parse("sip:alice@sip.test").unwrap(),
        ))
        .await
        .unwrap();
    let statuses = |gw: &support::Gateway| -> Vec<NotificationStatus> {
        gw.mem
            .received()
            .into_iter()
            .filter_map(|e| match e.event {
                Event::Notification(n) => Some(n.status),
                _ => None,
            })
            .collect()
    };
    // Tried again at least once meanwhile (every 5 s at first): still one `stored`.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(7);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(statuses(&gw), vec![NotificationStatus::Stored]);
    let alice = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    register(&alice, gw.udp, "alice", "pw", "").await;
    let (m, from) = next_request(&alice).await;
    assert!(m.ends_with(b"tell me when she has it"));
    alice.send_to(&answer(&m, 200), from).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while statuses(&gw).len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            statuses(&gw)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        statuses(&gw),
        vec![NotificationStatus::Stored, NotificationStatus::Delivered]
    );
}

/// Issue 13: a message the phone keeps answering `503` + `Retry-After` no longer holds
/// the messages behind it for longer than the configured head-of-line bound: it fails
/// back to its sender (`remote-server-timeout`) and the next one goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_peer_keeps_deferring_gives_way_after_the_head_of_line_bound() {
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let proxy = phone.local_addr().unwrap();
    let gw = support::gateway_with_core(
        &[],
        |core| {
            core.head_of_line_limit = Some(Duration::from_secs(2));
            core.max_delivery_attempts = 1000;
        },
        |c| {
            c.outbound_proxy = Some(Peer {
                transport: Transport::Udp,
                addr: proxy,
            });
        },
    )
    .await;
    for text in ["stuck", "fine"] {
        gw.from_mem
            .submit(Inbound::new(
                Event::Message(Message::text(text)),
                Address::parse("sip:dora@mem.test").unwrap(),
                Address::parse("sip:alice@sip.test").unwrap(),
            ))
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = tokio::time::timeout(Duration::from_secs(10), phone.recv_from(&mut buf))
            .await
            .expect("the next message comes")
            .unwrap();
        let m = buf[..n].to_vec();
        if m.ends_with(b"stuck") {
            let deferred = String::from_utf8(answer(&m, 503)).unwrap().replacen(
                "\r\nContent-Length",
                "\r\nRetry-After: 1\r\nContent-Length",
                1,
            );
            phone.send_to(deferred.as_bytes(), from).await.unwrap();
        } else if m.ends_with(b"fine") {
            phone.send_to(&answer(&m, 200), from).await.unwrap();
            break;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the second went after about 2 s, not {:?}",
        started.elapsed()
    );
    assert_eq!(gw.mem.wait_for(1, Duration::from_secs(5)).await, 1);
    assert_eq!(
        failure_of(&gw.mem.received()[0]),
        Some(Condition::RemoteServerTimeout),
        "{:#?}",
        gw.mem.received()
    );
}

/// The next message on `socket` within `wait` that `keep` accepts (requests are answered
/// 200 as they pass, whatever `keep` says, so that nothing is retransmitted).
async fn next_matching(
    socket: &UdpSocket,
    wait: Duration,
    keep: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    tokio::time::timeout(wait, async {
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            let msg = buf[..n].to_vec();
            if !msg.starts_with(b"SIP/2.0 ") && !msg.starts_with(b"ACK ") {
                socket.send_to(&answer(&msg, 200), from).await.unwrap();
            }
            if keep(&msg) {
                return msg;
            }
        }
    })
    .await
    .ok()
}

/// RFC 3857/3858 (issue 13): a SIP user subscribes to its own watcher information and
/// sees who waits to see its presence under the `contacts` policy (pending), then that
/// watcher approved once it follows it (active). Nobody else may read that list (403),
/// and an unknown package is 489 with the packages that are known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3857_a_sip_user_sees_who_waits_to_see_its_presence() {
    use cpim::event::{Subscription, SubscriptionOp};
    let p = Presentity {
        ua: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    };
    let ua_addr = p.ua.local_addr().unwrap();
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: Transport::Udp,
            addr: ua_addr,
        });
    })
    .await;
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = phone.local_addr().unwrap();
    let winfo = |call_id: &str, from: &str, event: &str| {
        format!(
            "SUBSCRIBE sip:carol@sip.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{from}>;tag=w{call_id}\r\nTo: <sip:carol@sip.test>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 SUBSCRIBE\r\nEvent: {event}\r\n\
             Accept: application/watcherinfo+xml\r\nContact: <sip:carol@{me}>\r\nExpires: 600\r\n\
             Content-Length: 0\r\n\r\n"
        )
    };
    let is_winfo_notify = |m: &[u8]| {
        m.starts_with(b"NOTIFY ")
            && header_of(m, "Event").is_some_and(|e| e.starts_with("presence.winfo"))
    };
    // Someone else's list: refused.
    phone
        .send_to(
            winfo("wi-bob", "bob@sip.test", "presence.winfo").as_bytes(),
            gw.udp,
        )
        .await
        .unwrap();
    let refused = next_matching(&phone, Duration::from_secs(5), |m| {
        m.starts_with(b"SIP/2.0 ")
    })
    .await
    .expect("an answer");
    assert_eq!(
        status_of(&refused),
        403,
        "{}",
        String::from_utf8_lossy(&refused)
    );
    // An unknown package.
    phone
        .send_to(winfo("wi-x", "carol@sip.test", "dialog").as_bytes(), gw.udp)
        .await
        .unwrap();
    let bad = next_matching(&phone, Duration::from_secs(5), |m| {
        m.starts_with(b"SIP/2.0 ")
    })
    .await
    .expect("an answer");
    assert_eq!(status_of(&bad), 489);
    assert!(header_of(&bad, "Allow-Events")
        .unwrap()
        .contains("presence.winfo"));

    // carol's own list: 200, then an active NOTIFY with the (empty) full list.
    phone
        .send_to(
            winfo("wi-carol", "carol@sip.test", "presence.winfo").as_bytes(),
            gw.udp,
        )
        .await
        .unwrap();
    let ok = next_matching(&phone, Duration::from_secs(5), |m| {
        m.starts_with(b"SIP/2.0 ")
    })
    .await
    .expect("an answer");
    assert_eq!(status_of(&ok), 200);
    let first = next_matching(&phone, Duration::from_secs(5), is_winfo_notify)
        .await
        .expect("the first NOTIFY");
    assert!(header_of(&first, "Subscription-State")
        .unwrap()
        .starts_with("active"));
    assert_eq!(
        header_of(&first, "Content-Type").as_deref(),
        Some("application/watcherinfo+xml")
    );
    let doc = body_of(&first);
    assert!(
        doc.contains("version=\"0\"") && doc.contains("state=\"full\""),
        "{doc}"
    );
    assert!(doc.contains("resource=\"sip:carol@sip.test\""), "{doc}");
    assert!(!doc.contains("<watcher "), "{doc}");

    // bob, the first watcher, is authorized by the SIP side; erin shares the gateway's
    // subscription and waits under the policy: carol's list shows her pending.
    let ask = |watcher: &str| {
        Inbound::new(
            Event::Subscription(Subscription::new(SubscriptionOp::Subscribe)),
            Address::parse(watcher).unwrap(),
            Address::parse("sip:carol@sip.test").unwrap(),
        )
    };
    gw.from_mem.submit(ask("sip:bob@mem.test")).await.unwrap();
    let (upstream, from) = p
        .subscribe(Duration::from_secs(5))
        .await
        .expect("SUBSCRIBE");
    p.accept(&upstream, from, "c1", 600).await;
    gw.from_mem.submit(ask("sip:erin@mem.test")).await.unwrap();
    let pending = next_matching(&phone, Duration::from_secs(5), |m| {
        is_winfo_notify(m) && body_of(m).contains("erin")
    })
    .await
    .expect("a NOTIFY naming erin");
    let doc = body_of(&pending);
    assert!(doc.contains("version=\"1\""), "{doc}");
    assert!(
        doc.contains("status=\"pending\" event=\"subscribe\">sip:erin@mem.test</watcher>"),
        "{doc}"
    );

    // carol adds erin as a contact (her phone subscribes to erin's presence): erin is
    // approved, and the list says so.
    let subscribe = format!(
        "SUBSCRIBE sip:erin@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbuddy\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@sip.test>;tag=buddy\r\nTo: <sip:erin@mem.test>\r\n\
         Call-ID: buddy-erin\r\nCSeq: 1 SUBSCRIBE\r\nEvent: presence\r\n\
         Contact: <sip:carol@{me}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    phone.send_to(subscribe.as_bytes(), gw.udp).await.unwrap();
    let active = next_matching(&phone, Duration::from_secs(5), |m| {
        is_winfo_notify(m) && body_of(m).contains("status=\"active\"")
    })
    .await
    .expect("a NOTIFY with erin active");
    let doc = body_of(&active);
    assert!(
        doc.contains("status=\"active\" event=\"approved\">sip:erin@mem.test</watcher>"),
        "{doc}"
    );
    assert!(!doc.contains("pending"), "{doc}");
}

/// Issue 15: when the broker fell behind, the SIP receive loop waited for room in its
/// queue, stopped reading its UDP socket, and the kernel dropped the requests that
/// followed, unanswered (10 526 at 12 000/s). Now every MESSAGE is answered while the
/// broker cannot take it: 503 with `Retry-After` at once, and 202 for those it took once
/// it runs. The broker here is not started until all were sent, so its queue (100 here)
/// fills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_answered_while_the_broker_cannot_take_more() {
    const N: usize = 400;
    const QUEUE: usize = 100;
    let (gw, broker) = support::gateway_paused(QUEUE).await;
    let client = std::sync::Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let me = client.local_addr().unwrap();
    let reader = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut statuses = std::collections::HashMap::<String, (u16, bool)>::new();
            let mut buf = vec![0u8; 8192];
            while statuses.values().filter(|(s, _)| *s >= 200).count() < N {
                let Ok(Ok((n, _))) =
                    tokio::time::timeout(Duration::from_secs(10), client.recv_from(&mut buf)).await
                else {
                    break;
                };
                let m = &buf[..n];
                let call = header_of(m, "Call-ID").unwrap_or_default();
                let retry = header_of(m, "Retry-After").is_some();
                statuses.insert(call, (status_of(m), retry));
            }
            statuses
        })
    };
    for i in 0..N {
        let request = format!(
            "MESSAGE sip:bob@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKov{i}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=ov{i}\r\nTo: <sip:bob@mem.test>\r\n\
             Call-ID: ov{i}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        );
        client.send_to(request.as_bytes(), gw.udp).await.unwrap();
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // The ones beyond the queue are refused while the broker still does not run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _running = broker.start();
    let statuses = reader.await.unwrap();
    assert_eq!(statuses.len(), N, "every MESSAGE is answered");
    let accepted = statuses.values().filter(|(s, _)| *s == 202).count();
    let shed = statuses
        .values()
        .filter(|(s, retry)| *s == 503 && *retry)
        .count();
    assert_eq!(accepted + shed, N, "202 or 503 + Retry-After: {statuses:?}");
    assert!(shed >= N - QUEUE, "beyond the queue: 503 ({shed})");
    assert!(
        accepted >= QUEUE / 2,
        "the queue's worth is accepted ({accepted})"
    );
    assert_eq!(
        gw.mem.wait_for(accepted, Duration::from_secs(10)).await,
        accepted
    );
}
