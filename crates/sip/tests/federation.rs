//! Federation (issue 16): users of `remote_domains` are reached where DNS says their
//! servers are (RFC 3263), with dnsmasq as the domain's DNS server on a loopback port
//! and plain UDP/TCP sockets as the servers.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use cpim::address::Address;
use cpim::condition::Condition;
use cpim::event::{Event, Message};
use cpim_broker::envelope::Inbound;
use cpim_broker::testing::Behavior;
use cpim_test_support::dnsmasq::Dnsmasq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use support::{header_of, take_message};

const REMOTE: &str = "carrier.test";

async fn gateway_for(dns: &Dnsmasq) -> support::Gateway {
    let nameserver = dns.addr;
    let gw = support::gateway(&[REMOTE], |c| {
        c.remote.listed = vec![REMOTE.into()];
        c.nameservers = vec![nameserver];
    })
    .await;
    gw.mem.set_behavior(Behavior::Deliver);
    gw
}

async fn send(gw: &support::Gateway, text: &str) {
    let inbound = Inbound::new(
        Event::Message(Message::text(text)),
        Address::parse("sip:carol@mem.test").unwrap(),
        Address::parse(&format!("sip:bob@{REMOTE}")).unwrap(),
    );
    gw.from_mem.submit(inbound).await.unwrap();
}

/// The next SIP message on a stream (TCP or TLS), within 10 s.
async fn read_message<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut acc = Vec::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        if let Some(m) = take_message(&mut acc) {
            return m;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a message within 10 s")
            .unwrap();
        assert!(n > 0, "connection closed");
        acc.extend_from_slice(&buf[..n]);
    }
}

/// The next request on a TCP listener: the connection and the request.
async fn next_tcp(listener: &TcpListener) -> (tokio::net::TcpStream, Vec<u8>) {
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("a connection within 10 s")
        .unwrap();
    let request = read_message(&mut stream).await;
    (stream, request)
}

async fn next_udp(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
        .await
        .expect("a request within 10 s")
        .unwrap();
    (buf[..n].to_vec(), from)
}

fn answer(request: &[u8], status: u16) -> Vec<u8> {
    support::reply(request, status, "", &[]).into_bytes()
}

async fn delivered(gw: &support::Gateway, n: u64) {
    let metrics = gw.broker.metrics().adapter("sip");
    cpim_test_support::net::wait_until("delivered", Duration::from_secs(10), || {
        metrics.delivered_count() >= n
    })
    .await;
}

/// RFC 3263 §4.1: NAPTR first (TCP at order 10 before UDP at order 20), then the SRV
/// records of the chosen service by priority, then each target's address; §4.3: a
/// target that refuses the connection moves the request on to the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3263_naptr_then_srv_by_priority_and_the_next_target_when_one_is_down() {
    // sip1 (priority 10) has nothing listening; sip2 (priority 20) listens on TCP and,
    // on the same port, UDP — which NAPTR puts after TCP, so it must stay silent.
    let down = support::free_port();
    let up = support::free_port();
    let tcp = TcpListener::bind(("127.0.0.1", up)).await.unwrap();
    let udp = UdpSocket::bind(("127.0.0.1", up)).await.unwrap();
    let dns = Dnsmasq::start(
        support::free_port(),
        &[REMOTE],
        60,
        &format!(
            "naptr-record={REMOTE},20,10,s,SIP+D2U,,_sip._udp.{REMOTE}\n\
             naptr-record={REMOTE},10,10,s,SIP+D2T,,_sip._tcp.{REMOTE}\n\
             naptr-record={REMOTE},5,10,u,E2U+sip,!^.*$!sip:info@{REMOTE}!\n\
             srv-host=_sip._tcp.{REMOTE},sip2.{REMOTE},{up},20,10\n\
             srv-host=_sip._tcp.{REMOTE},sip1.{REMOTE},{down},10,10\n\
             srv-host=_sip._udp.{REMOTE},sip2.{REMOTE},{up},10,10\n\
             host-record=sip1.{REMOTE},127.0.0.1\n\
             host-record=sip2.{REMOTE},127.0.0.1"
        ),
    );
    let gw = gateway_for(&dns).await;
    send(&gw, "over dns").await;
    let (mut stream, request) = next_tcp(&tcp).await;
    assert!(
        request.starts_with(format!("MESSAGE sip:bob@{REMOTE} SIP/2.0\r\n").as_bytes()),
        "{}",
        String::from_utf8_lossy(&request)
    );
    assert!(header_of(&request, "Via")
        .unwrap()
        .starts_with("SIP/2.0/TCP"));
    assert!(request.ends_with(b"over dns"));
    stream.write_all(&answer(&request, 200)).await.unwrap();
    delivered(&gw, 1).await;
    let mut buf = [0u8; 16];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), udp.recv_from(&mut buf))
            .await
            .is_err(),
        "nothing over UDP"
    );
    assert!(dns.queries_for(REMOTE) >= 1, "{}", dns.log());
    assert!(
        dns.queries_for(&format!("_sip._tcp.{REMOTE}")) >= 1,
        "{}",
        dns.log()
    );
    assert_eq!(
        dns.queries_for(&format!("_sip._udp.{REMOTE}")),
        0,
        "{}",
        dns.log()
    );
}

/// RFC 3263 §4.3: a 503 from the first server sends the request to the next one, and
/// without NAPTR records the SRV records of the usable transports are looked up (here
/// only UDP has any).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3263_a_503_moves_on_to_the_next_server_and_srv_works_without_naptr() {
    let first = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let second = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dns = Dnsmasq::start(
        support::free_port(),
        &[REMOTE],
        60,
        &format!(
            "srv-host=_sip._udp.{REMOTE},a.{REMOTE},{},10,0\n\
             srv-host=_sip._udp.{REMOTE},b.{REMOTE},{},20,0\n\
             host-record=a.{REMOTE},127.0.0.1\n\
             host-record=b.{REMOTE},127.0.0.1",
            first.local_addr().unwrap().port(),
            second.local_addr().unwrap().port()
        ),
    );
    let gw = gateway_for(&dns).await;
    send(&gw, "try the next").await;
    let (request, from) = next_udp(&first).await;
    first.send_to(&answer(&request, 503), from).await.unwrap();
    let (again, from) = next_udp(&second).await;
    assert!(again.ends_with(b"try the next"));
    assert_eq!(header_of(&again, "Call-ID"), header_of(&request, "Call-ID"));
    second.send_to(&answer(&again, 200), from).await.unwrap();
    delivered(&gw, 1).await;
    assert!(
        gw.mem.received().is_empty(),
        "no failure: {:#?}",
        gw.mem.received()
    );
    assert!(
        dns.queries_for(&format!("_sips._tcp.{REMOTE}"))
            + dns.queries_for(&format!("_sip._tcp.{REMOTE}"))
            >= 1,
        "the other transports were looked up: {}",
        dns.log()
    );
}

/// Answers are kept for their TTL (here 2 s): while it lasts the DNS server is not
/// needed (it is stopped); after it, the new records are used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3263_answers_are_cached_for_their_ttl_and_no_longer() {
    let old = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let new = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let records = |port: u16| {
        format!(
            "srv-host=_sip._udp.{REMOTE},s.{REMOTE},{port},10,0\nhost-record=s.{REMOTE},127.0.0.1"
        )
    };
    let dns_port = support::free_port();
    let mut dns = Dnsmasq::start(
        dns_port,
        &[REMOTE],
        2,
        &records(old.local_addr().unwrap().port()),
    );
    let gw = gateway_for(&dns).await;
    send(&gw, "one").await;
    let (m, from) = next_udp(&old).await;
    assert!(m.ends_with(b"one"));
    old.send_to(&answer(&m, 200), from).await.unwrap();
    // Within the TTL, without a DNS server.
    dns.stop();
    send(&gw, "two").await;
    let (m, from) = next_udp(&old).await;
    assert!(m.ends_with(b"two"));
    old.send_to(&answer(&m, 200), from).await.unwrap();
    // After it, the records the server gives now.
    let dns = Dnsmasq::start(
        dns_port,
        &[REMOTE],
        2,
        &records(new.local_addr().unwrap().port()),
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    send(&gw, "three").await;
    let (m, from) = next_udp(&new).await;
    assert!(m.ends_with(b"three"), "{}", dns.log());
    new.send_to(&answer(&m, 200), from).await.unwrap();
    delivered(&gw, 3).await;
}

/// A remote domain without any SIP record or address: the sender hears
/// `remote-server-not-found`, and the DNS failure is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_domain_dns_knows_nothing_of_fails_with_remote_server_not_found() {
    let dns = Dnsmasq::start(
        support::free_port(),
        &[REMOTE],
        60,
        "host-record=other.carrier.test,127.0.0.1",
    );
    let gw = gateway_for(&dns).await;
    send(&gw, "anyone?").await;
    assert_eq!(gw.mem.wait_for(1, Duration::from_secs(10)).await, 1);
    let received = gw.mem.received();
    let condition = support::failure_of(&received[0]);
    assert_eq!(
        condition,
        Some(Condition::RemoteServerNotFound),
        "{received:#?}"
    );
    assert_eq!(
        gw.broker
            .metrics()
            .adapter("sip")
            .federation_error_count("dns"),
        1
    );
    assert!(gw
        .broker
        .metrics()
        .render()
        .contains("cpim_federation_errors_total{adapter=\"sip\",kind=\"dns\"} 1"));
}

/// One MESSAGE from `client` to the gateway, `From: <from>`; the status it got.
async fn message_from(client: &UdpSocket, gw: &support::Gateway, n: u32, from: &str) -> u16 {
    message_with(client, gw, n, from, "").await
}

/// [`message_from`] with `extra` header lines.
async fn message_with(
    client: &UdpSocket,
    gw: &support::Gateway,
    n: u32,
    from: &str,
    extra: &str,
) -> u16 {
    let body = "who am I";
    let request = format!(
        "MESSAGE sip:dora@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKfed{n}\r\n\
         Max-Forwards: 70\r\nFrom: <{from}>;tag=f{n}\r\nTo: <sip:dora@mem.test>\r\n{extra}\
         Call-ID: fed{n}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        client.local_addr().unwrap(),
        body.len()
    );
    client.send_to(request.as_bytes(), gw.udp).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    support::status_of(&buf[..len])
}

/// The senders of what reached the in-memory adapter, once `n` did (and nothing more
/// came within 300 ms).
async fn senders_of(gw: &support::Gateway, n: usize) -> Vec<String> {
    assert_eq!(gw.mem.wait_for(n, Duration::from_secs(5)).await, n);
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.mem
        .received()
        .iter()
        .map(|e| e.from.to_string())
        .collect()
}

/// Who may speak for a remote domain: one of its SIP servers as DNS names them (here
/// 127.0.0.2, by SRV), or a network configured in `trusted_peers`. Anyone else claiming
/// the domain gets 403, counted in `cpim_federation_errors_total{kind="untrusted_peer"}`,
/// and nothing reaches the other network. (A `From` of another adapter's users is 403
/// whoever sends it: `adapter::a_from_of_another_networks_user_is_forbidden`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_peer_trusted_for_a_remote_domain_may_send_as_its_users() {
    let dns = Dnsmasq::start(
        support::free_port(),
        &[REMOTE],
        60,
        &format!(
            "srv-host=_sip._udp.{REMOTE},edge.{REMOTE},5060,10,0\nhost-record=edge.{REMOTE},127.0.0.2"
        ),
    );
    let gw = gateway_for(&dns).await;
    gw.mem.set_behavior(Behavior::Deliver);
    let server = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bob = format!("sip:bob@{REMOTE}");
    assert_eq!(message_from(&server, &gw, 1, &bob).await, 202);
    assert_eq!(message_from(&stranger, &gw, 2, &bob).await, 403);
    assert_eq!(
        message_from(
            &stranger,
            &gw,
            3,
            &format!("sip:eve@{}", REMOTE.to_uppercase())
        )
        .await,
        403
    );
    // A user of the gateway's own SIP domain is not a remote domain's.
    assert_eq!(
        message_from(&stranger, &gw, 4, "sip:alice@sip.test").await,
        202
    );
    assert_eq!(
        senders_of(&gw, 2).await,
        [bob.clone(), "sip:alice@sip.test".to_owned()]
    );
    // Over TCP the same.
    let mut stream = tokio::net::TcpStream::connect(gw.tcp).await.unwrap();
    let body = "forged over tcp";
    let request = format!(
        "MESSAGE sip:dora@mem.test SIP/2.0\r\nVia: SIP/2.0/TCP {};branch=z9hG4bKfedtcp\r\n\
         Max-Forwards: 70\r\nFrom: <{bob}>;tag=t1\r\nTo: <sip:dora@mem.test>\r\n\
         Call-ID: fedtcp\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        stream.local_addr().unwrap(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_message(&mut stream).await;
    assert_eq!(support::status_of(&answer), 403);
    let metrics = gw.broker.metrics().adapter("sip");
    assert_eq!(metrics.federation_error_count("untrusted_peer"), 3);

    // The same stranger, now in the domain's trusted_peers.
    let nameserver = dns.addr;
    let gw = support::gateway(&[REMOTE], |c| {
        c.remote.listed = vec![REMOTE.into()];
        c.nameservers = vec![nameserver];
        c.trusted_peers = vec![(REMOTE.into(), vec!["127.0.0.0/24".parse().unwrap()])];
    })
    .await;
    gw.mem.set_behavior(Behavior::Deliver);
    assert_eq!(message_from(&stranger, &gw, 5, &bob).await, 202);
    assert_eq!(gw.mem.wait_for(1, Duration::from_secs(5)).await, 1);
}

/// A trust lookup DNS does not answer never holds up the receive loop: a request
/// from the gateway's own domain sent after one that waits for DNS is answered first;
/// the waiting ones are answered 503 + Retry-After in their arrival order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_dns_delays_only_the_requests_that_need_it_and_they_get_503() {
    // A name server that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let nameserver = silent.local_addr().unwrap();
    let gw = support::gateway(&[REMOTE], |c| {
        c.remote.listed = vec![REMOTE.into()];
        c.nameservers = vec![nameserver];
    })
    .await;
    gw.mem.set_behavior(Behavior::Deliver);
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let request = |n: u32, from: &str| {
        format!(
            "MESSAGE sip:dora@mem.test SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKslow{n}\r\n\
             Max-Forwards: 70\r\nFrom: <{from}>;tag=s{n}\r\nTo: <sip:dora@mem.test>\r\n\
             Call-ID: slow{n}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
            client.local_addr().unwrap()
        )
    };
    let bob = format!("sip:bob@{REMOTE}");
    for (n, from) in [
        (1, bob.as_str()),
        (2, "sip:alice@sip.test"),
        (3, bob.as_str()),
    ] {
        client
            .send_to(request(n, from).as_bytes(), gw.udp)
            .await
            .unwrap();
    }
    let mut answers = Vec::new();
    let mut buf = vec![0u8; 8192];
    while answers.len() < 3 {
        let (len, _) = tokio::time::timeout(Duration::from_secs(15), client.recv_from(&mut buf))
            .await
            .expect("every request answered")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..len]).into_owned();
        let call_id = header_of(answer.as_bytes(), "Call-ID").unwrap_or_default();
        let retry_after = header_of(answer.as_bytes(), "Retry-After");
        answers.push((call_id, support::status_of(answer.as_bytes()), retry_after));
    }
    assert_eq!(
        answers,
        [
            ("slow2".to_owned(), 202, None),
            ("slow1".to_owned(), 503, Some("5".to_owned())),
            ("slow3".to_owned(), 503, Some("5".to_owned())),
        ]
    );
    assert_eq!(gw.mem.wait_for(1, Duration::from_secs(5)).await, 1);
}

/// RFC 3325: a trusted proxy's `P-Asserted-Identity` names the sender (the `From` may
/// be anonymous) and, the proxy being trusted, may be at a remote domain; from any
/// other peer the header is ignored: the `From` is the sender and is checked as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3325_an_identity_asserted_by_a_trusted_proxy_is_the_sender_and_no_one_elses() {
    let dns = Dnsmasq::start(
        support::free_port(),
        &[REMOTE],
        60,
        &format!(
            "srv-host=_sip._udp.{REMOTE},edge.{REMOTE},5060,10,0\nhost-record=edge.{REMOTE},127.0.0.2"
        ),
    );
    let nameserver = dns.addr;
    let gw = support::gateway(&[REMOTE], |c| {
        c.remote.listed = vec![REMOTE.into()];
        c.nameservers = vec![nameserver];
        c.trusted_proxies = vec!["127.0.0.3".parse().unwrap()];
        // With a proxy configured the gateway's own domain is guarded: the stranger
        // may send as its users because it is one of the domain's trusted peers.
        c.trusted_peers = vec![("sip.test".into(), vec!["127.0.0.1".parse().unwrap()])];
    })
    .await;
    gw.mem.set_behavior(Behavior::Deliver);
    let proxy = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bob = format!("sip:bob@{REMOTE}");
    let asserted =
        |uri: &str| format!("P-Asserted-Identity: \"Bob\" <{uri}>, <tel:+15551234567>\r\n");
    let anonymous = "sip:anonymous@anonymous.invalid";
    assert_eq!(
        message_with(&proxy, &gw, 21, anonymous, &asserted(&bob)).await,
        202
    );
    assert_eq!(
        message_with(&stranger, &gw, 22, "sip:alice@sip.test", &asserted(&bob)).await,
        202
    );
    // The stranger's own From at the remote domain is still its to prove.
    assert_eq!(
        message_with(&stranger, &gw, 23, &bob, &asserted("sip:alice@sip.test")).await,
        403
    );
    assert_eq!(
        senders_of(&gw, 2).await,
        [bob.clone(), "sip:alice@sip.test".to_owned()]
    );
}

/// The gateway's own domain, once a proxy or `trusted_peers` is configured for it, is
/// taken only from those (or a TLS peer certified for it): anyone else claiming its
/// users gets 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_domain_with_trusted_peers_is_taken_from_them_only() {
    let gw = support::gateway(&[], |c| {
        c.trusted_peers = vec![("sip.test".into(), vec!["127.0.0.2/32".parse().unwrap()])];
    })
    .await;
    gw.mem.set_behavior(Behavior::Deliver);
    let peer = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(
        message_from(&peer, &gw, 41, "sip:alice@sip.test").await,
        202
    );
    assert_eq!(
        message_from(&stranger, &gw, 42, "sip:alice@sip.test").await,
        403
    );
    assert_eq!(gw.mem.wait_for(1, Duration::from_secs(5)).await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.mem.received().len(), 1);
    let metrics = gw.broker.metrics().adapter("sip");
    assert_eq!(metrics.federation_error_count("untrusted_peer"), 1);
}

/// `remote_domains = ["*"]`: a domain no adapter claims is a SIP domain found in DNS
/// like a listed one, and trusted the same way (only its servers may speak for it);
/// a domain an adapter claims is never remote (a forged `From` of it is the broker's
/// 403, not a DNS question), and `denied_domains` are neither reached nor accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_makes_every_unclaimed_domain_remote_and_denied_domains_are_refused() {
    let port = support::free_port();
    let dns = Dnsmasq::start(
        support::free_port(),
        &["far.test", "spam.test"],
        60,
        &format!(
            "srv-host=_sip._udp.far.test,edge.far.test,{port},10,0\nhost-record=edge.far.test,127.0.0.2\n\
             srv-host=_sip._udp.spam.test,edge.spam.test,{port},10,0\nhost-record=edge.spam.test,127.0.0.2"
        ),
    );
    let nameserver = dns.addr;
    let gw = support::gateway(&["*"], |c| {
        c.remote.any = true;
        c.remote.denied = vec!["spam.test".into()];
        c.nameservers = vec![nameserver];
    })
    .await;
    gw.mem.set_behavior(Behavior::Deliver);
    let server = UdpSocket::bind(("127.0.0.2", port)).await.unwrap();
    let to = |to: &str| {
        Inbound::new(
            Event::Message(Message::text("hello")),
            Address::parse("sip:carol@mem.test").unwrap(),
            Address::parse(to).unwrap(),
        )
    };
    gw.from_mem.submit(to("sip:bob@far.test")).await.unwrap();
    let (request, from) = next_udp(&server).await;
    let text = String::from_utf8_lossy(&request).into_owned();
    assert!(text.starts_with("MESSAGE sip:bob@far.test "), "{text}");
    server.send_to(&answer(&request, 200), from).await.unwrap();
    delivered(&gw, 1).await;
    gw.from_mem.submit(to("sip:bob@spam.test")).await.unwrap();
    assert_eq!(gw.mem.wait_for(1, Duration::from_secs(10)).await, 1);
    let received = gw.mem.received();
    assert_eq!(
        support::failure_of(&received[0]),
        Some(Condition::Forbidden),
        "{received:#?}"
    );

    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // (who sends, as whom, status). mem.test is claimed by the in-memory adapter:
    // refused by the broker, DNS is not asked.
    let cases = [
        (&server, "sip:bob@far.test", 202),
        (&stranger, "sip:bob@far.test", 403),
        (&server, "sip:bob@spam.test", 403),
        (&stranger, "sip:eve@mem.test", 403),
        (&stranger, "sip:alice@sip.test", 202),
    ];
    for (n, (peer, from, status)) in (11..).zip(cases) {
        assert_eq!(message_from(peer, &gw, n, from).await, status, "{from}");
    }
    assert_eq!(dns.queries_for("mem.test"), 0);
    let metrics = gw.broker.metrics().adapter("sip");
    assert_eq!(metrics.federation_error_count("untrusted_peer"), 2);
}

/// A SIP server over TLS with `name`'s certificate, demanding a client certificate from
/// the test CA; answers one MESSAGE with 200 and returns it.
async fn tls_server(dir: &std::path::Path, name: &str) -> (TcpListener, tokio_rustls::TlsAcceptor) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let read = |f: String| std::fs::read(dir.join(f)).unwrap();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(format!("{name}.pem")))
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_slice(&read(format!("{name}.key"))).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read("ca.pem".into())) {
        roots.add(c.unwrap()).unwrap();
    }
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(clients)
        .with_single_cert(certs, key)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (
        listener,
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
    )
}

/// RFC 3263 to a `SIPS+D2T` NAPTR and its `_sips._tcp` SRV target, over TLS: the
/// server's certificate is checked against the SIP domain (its `sip:carrier.test` URI
/// SAN), not the SRV target's name, with SNI = the domain, and the gateway presents its
/// own certificate (mutual TLS). A server certified for another domain is refused: the
/// sender hears `remote-server-not-found` at once, counted as `tls_verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc5922_tls_to_a_remote_domain_checks_the_domain_in_the_servers_certificate() {
    let dir = std::env::temp_dir().join(format!(
        "cpim-fed-pki-{}-{}",
        std::process::id(),
        support::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    cpim_test_support::pki::make(
        &dir,
        &[
            (
                "good",
                &format!("URI:sip:{REMOTE},DNS:wrong-target.example"),
            ),
            ("wrong", "URI:sip:other.test,DNS:other.test"),
            ("gw", "URI:sip:sip.test,DNS:sip.test"),
        ],
    );
    for (server_cert, accepted) in [("good", true), ("wrong", false)] {
        let (listener, acceptor) = tls_server(&dir, server_cert).await;
        let port = listener.local_addr().unwrap().port();
        let dns = Dnsmasq::start(
            support::free_port(),
            &[REMOTE],
            60,
            &format!(
                "naptr-record={REMOTE},10,10,s,SIPS+D2T,,_sips._tcp.{REMOTE}\n\
                 naptr-record={REMOTE},20,10,s,SIP+D2U,,_sip._udp.{REMOTE}\n\
                 srv-host=_sips._tcp.{REMOTE},sip1.{REMOTE},{port},10,0\n\
                 host-record=sip1.{REMOTE},127.0.0.1"
            ),
        );
        let nameserver = dns.addr;
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
        let (ca, cert, key) = (read("ca.pem"), read("gw.pem"), read("gw.key"));
        let gw = support::gateway(&[REMOTE], move |c| {
            c.remote.listed = vec![REMOTE.into()];
            c.nameservers = vec![nameserver];
            c.tls_client = cpim_sip::driver::tls::TlsClientSettings {
                ca_pem: Some(ca),
                system_roots: false,
                identity: Some((cert, key)),
            };
        })
        .await;
        gw.mem.set_behavior(Behavior::Deliver);
        send(&gw, "over tls").await;
        let server = async {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(_) => return None, // the gateway refused our certificate
            };
            let sni = tls.get_ref().1.server_name().map(str::to_owned);
            let client_certified = tls
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            let request = read_message(&mut tls).await;
            tls.write_all(&answer(&request, 200)).await.unwrap();
            tls.flush().await.unwrap();
            Some((request, sni, client_certified, tls))
        };
        let got = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("a connection within 10 s");
        if accepted {
            let (request, sni, client_certified, _tls) =
                got.expect("the gateway took the certificate");
            assert!(header_of(&request, "Via")
                .unwrap()
                .starts_with("SIP/2.0/TLS"));
            assert!(request.ends_with(b"over tls"));
            assert_eq!(sni.as_deref(), Some(REMOTE), "SNI is the SIP domain");
            assert!(client_certified, "the gateway presented its certificate");
            delivered(&gw, 1).await;
            assert!(gw.mem.received().is_empty(), "{:#?}", gw.mem.received());
        } else {
            assert!(
                got.is_none(),
                "the gateway refused a certificate for other.test"
            );
            assert_eq!(gw.mem.wait_for(1, Duration::from_secs(5)).await, 1);
            let received = gw.mem.received();
            let condition = support::failure_of(&received[0]);
            assert_eq!(
                condition,
                Some(Condition::RemoteServerNotFound),
                "{received:#?}"
            );
            assert_eq!(
                gw.broker
                    .metrics()
                    .adapter("sip")
                    .federation_error_count("tls_verify"),
                1
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A MESSAGE over TLS to the gateway's listener at `addr`, presenting `client`'s
/// certificate (if any); the status of the answer.
async fn tls_message_from(
    dir: &std::path::Path,
    addr: SocketAddr,
    client: Option<&str>,
    from: &str,
) -> u16 {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let read = |f: String| std::fs::read(dir.join(f)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read("ca.pem".into())) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some(name) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(&read(format!("{name}.pem")))
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(&read(format!("{name}.key"))).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let body = "who am I";
    let local = tls.get_ref().0.local_addr().unwrap();
    let request = format!(
        "MESSAGE sip:dora@mem.test SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKtls{}\r\n\
         Max-Forwards: 70\r\nFrom: <{from}>;tag=t1\r\nTo: <sip:dora@mem.test>\r\n\
         Call-ID: tls{}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        local.port(),
        local.port(),
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    support::status_of(&read_message(&mut tls).await)
}

/// RFC 5922 §7.3: a peer whose verified TLS client certificate names a remote domain
/// may send as its users, from any address; one whose certificate names another domain,
/// or that presents none, is trusted by address only (here: not one of the domain's
/// servers in DNS) and gets 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc5922_7_3_a_tls_client_certificate_naming_the_domain_may_speak_for_it() {
    let dir = std::env::temp_dir().join(format!(
        "cpim-fed-pki73-{}-{}",
        std::process::id(),
        support::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    cpim_test_support::pki::make(
        &dir,
        &[
            ("listener", "DNS:sip.test,IP:127.0.0.1"),
            ("carrier", &format!("URI:sip:{REMOTE}")),
            ("other", "URI:sip:other.test,DNS:other.test"),
        ],
    );
    let dns = Dnsmasq::start(
        support::free_port(),
        &[REMOTE],
        60,
        &format!("srv-host=_sip._udp.{REMOTE},edge.{REMOTE},5060,10,0\nhost-record=edge.{REMOTE},127.0.0.2"),
    );
    let nameserver = dns.addr;
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (ca, cert, key) = (read("ca.pem"), read("listener.pem"), read("listener.key"));
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let gw = support::gateway(&[REMOTE], move |c| {
        c.remote.listed = vec![REMOTE.into()];
        c.nameservers = vec![nameserver];
        c.listen.push(cpim_sip::transport::Listen {
            transport: cpim_sip::transport::Transport::Tls,
            address: tls_addr,
        });
        c.tls = Some((cert, key));
        c.tls_client = cpim_sip::driver::tls::TlsClientSettings {
            ca_pem: Some(ca),
            system_roots: false,
            identity: None,
        };
    })
    .await;
    gw.mem.set_behavior(Behavior::Deliver);
    let bob = format!("sip:bob@{REMOTE}");
    assert_eq!(
        tls_message_from(&dir, tls_addr, Some("carrier"), &bob).await,
        202
    );
    assert_eq!(
        tls_message_from(&dir, tls_addr, Some("other"), &bob).await,
        403
    );
    assert_eq!(tls_message_from(&dir, tls_addr, None, &bob).await, 403);
    assert_eq!(gw.mem.wait_for(1, Duration::from_secs(5)).await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.mem.received().len(), 1, "{:#?}", gw.mem.received());
    assert_eq!(
        gw.broker
            .metrics()
            .adapter("sip")
            .federation_error_count("untrusted_peer"),
        2
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `require_tls`: a remote domain is reached over TLS even where its NAPTR records
/// prefer UDP, and its users are not accepted over UDP even from its own server in DNS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_sends_over_tls_only_and_refuses_the_domain_over_udp() {
    let dir = std::env::temp_dir().join(format!(
        "cpim-fed-reqtls-{}-{}",
        std::process::id(),
        support::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    cpim_test_support::pki::make(
        &dir,
        &[
            ("good", &format!("URI:sip:{REMOTE}")),
            ("gw", "DNS:sip.test"),
        ],
    );
    let (listener, acceptor) = tls_server(&dir, "good").await;
    let port = listener.local_addr().unwrap().port();
    let udp = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let dns = Dnsmasq::start(
        support::free_port(),
        &[REMOTE],
        60,
        &format!(
            "naptr-record={REMOTE},10,10,s,SIP+D2U,,_sip._udp.{REMOTE}\n\
             naptr-record={REMOTE},20,10,s,SIPS+D2T,,_sips._tcp.{REMOTE}\n\
             srv-host=_sip._udp.{REMOTE},edge.{REMOTE},{},10,0\n\
             srv-host=_sips._tcp.{REMOTE},tls.{REMOTE},{port},10,0\n\
             host-record=edge.{REMOTE},127.0.0.2\n\
             host-record=tls.{REMOTE},127.0.0.1",
            udp.local_addr().unwrap().port()
        ),
    );
    let nameserver = dns.addr;
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (ca, cert, key) = (read("ca.pem"), read("gw.pem"), read("gw.key"));
    let gw = support::gateway(&[REMOTE], move |c| {
        c.remote.listed = vec![REMOTE.into()];
        c.require_tls = vec![REMOTE.into()];
        c.nameservers = vec![nameserver];
        c.tls_client = cpim_sip::driver::tls::TlsClientSettings {
            ca_pem: Some(ca),
            system_roots: false,
            identity: Some((cert, key)),
        };
    })
    .await;
    gw.mem.set_behavior(Behavior::Deliver);
    send(&gw, "tls only").await;
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("a TLS connection")
        .unwrap();
    let mut tls = acceptor.accept(tcp).await.expect("handshake");
    let request = read_message(&mut tls).await;
    assert!(request.ends_with(b"tls only"));
    tls.write_all(&answer(&request, 200)).await.unwrap();
    delivered(&gw, 1).await;
    let mut probe = [0u8; 16];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), udp.recv_from(&mut probe))
            .await
            .is_err(),
        "nothing over UDP"
    );
    // The domain's own UDP server (in DNS) may not send as its users: TLS is required.
    assert_eq!(
        message_from(&udp, &gw, 9, &format!("sip:bob@{REMOTE}")).await,
        403
    );
    let _ = std::fs::remove_dir_all(&dir);
}
