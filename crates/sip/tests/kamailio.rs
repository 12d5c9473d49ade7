//! The SIP adapter behind a real Kamailio that record-routes (RFC 3261 §12.2): the
//! gateway's in-dialog requests (SUBSCRIBE refreshes, NOTIFYs) follow the dialog's route
//! set to the remote target, and a refresh the far end no longer knows is re-established
//! instead of ending the watchers' subscription. The phones are plain UDP sockets
//! registered at Kamailio.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use cpim::address::Address;
use cpim::event::{Event, Subscription, SubscriptionOp};
use cpim_broker::envelope::Inbound;
use cpim_sip::transport::{Peer, Transport};
use cpim_test_support::kamailio::Kamailio;
use support::{header_of, reply, status_of};
use tokio::net::UdpSocket;

/// A phone: a UDP socket registered at Kamailio as `user@sip.test`.
struct Phone {
    socket: UdpSocket,
    me: SocketAddr,
    user: &'static str,
}

impl Phone {
    async fn register(user: &'static str, kamailio: SocketAddr) -> Phone {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = socket.local_addr().unwrap();
        let phone = Phone { socket, me, user };
        let register = format!(
            "REGISTER sip:sip.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKreg{user}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@sip.test>;tag=r{user}\r\nTo: <sip:{user}@sip.test>\r\n\
             Call-ID: reg-{user}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@{me}>\r\n\
             Expires: 600\r\nContent-Length: 0\r\n\r\n"
        );
        phone.send(&register, kamailio).await;
        let (got, _) = phone
            .next(Duration::from_secs(5))
            .await
            .expect("REGISTER answered");
        assert_eq!(status_of(&got), 200, "{}", String::from_utf8_lossy(&got));
        phone
    }

    fn contact(&self) -> String {
        format!("sip:{}@{}", self.user, self.me)
    }

    async fn send(&self, text: &str, to: SocketAddr) {
        self.socket.send_to(text.as_bytes(), to).await.unwrap();
    }

    /// The next message within `wait`.
    async fn next(&self, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = tokio::time::timeout(wait, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some((buf[..n].to_vec(), from))
    }

    /// The next request (responses are skipped) within `wait`.
    async fn next_request(&self, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (m, from) = self.next(left).await?;
            if !m.starts_with(b"SIP/2.0 ") {
                return Some((m, from));
            }
        }
    }

    /// The next response within `wait`.
    async fn next_response(&self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (m, from) = self.next(left).await?;
            if m.starts_with(b"SIP/2.0 ") {
                return Some(m);
            }
            // A request meanwhile (a NOTIFY): answered 200.
            self.send(&reply(&m, 200, "", &[]), from).await;
        }
    }
}

fn all_headers(msg: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(msg).to_string();
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
        .collect()
}

fn request_line(msg: &[u8]) -> String {
    String::from_utf8_lossy(msg)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn uri_of(name_addr: &str) -> String {
    name_addr
        .split('<')
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap_or(name_addr)
        .to_owned()
}

fn tag_of(name_addr: &str) -> Option<String> {
    name_addr
        .split("tag=")
        .nth(1)
        .map(|t| t.split(';').next().unwrap_or(t).to_owned())
}

fn pidf(basic: &str) -> String {
    format!("<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:carol@sip.test\"><tuple id=\"p\"><status><basic>{basic}</basic></status></tuple></presence>")
}

/// A NOTIFY in the dialog `subscribe` created, from the notifier whose tag is `tag`,
/// following the route set (the SUBSCRIBE's Record-Route, in order).
fn notify_for(
    subscribe: &[u8],
    tag: &str,
    cseq: u32,
    me: SocketAddr,
    state: &str,
    basic: &str,
) -> String {
    let body = pidf(basic);
    let contact = uri_of(&header_of(subscribe, "Contact").unwrap());
    let from = header_of(subscribe, "From").unwrap();
    let to = header_of(subscribe, "To").unwrap();
    let call_id = header_of(subscribe, "Call-ID").unwrap();
    let routes: String = all_headers(subscribe, "Record-Route")
        .iter()
        .map(|r| format!("Route: {r}\r\n"))
        .collect();
    format!(
        "NOTIFY {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKn{call_id}{cseq}\r\n\
         {routes}Max-Forwards: 70\r\nFrom: {to};tag={tag}\r\nTo: {from}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} NOTIFY\r\nEvent: presence\r\nSubscription-State: {state}\r\n\
         Contact: <sip:carol@{me}>\r\nContent-Type: application/pidf+xml\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The ends of subscriptions the in-memory network was told of (denials, unsubscribes).
fn subscription_ends(gw: &support::Gateway) -> Vec<Subscription> {
    gw.mem
        .received()
        .into_iter()
        .filter_map(|e| match e.event {
            Event::Subscription(s)
                if matches!(s.op, SubscriptionOp::Deny | SubscriptionOp::Unsubscribe) =>
            {
                Some(s)
            }
            _ => None,
        })
        .collect()
}

fn presence_count(gw: &support::Gateway) -> usize {
    gw.mem
        .received()
        .into_iter()
        .filter(|e| matches!(e.event, Event::Presence(_)))
        .count()
}

/// The gateway subscribes to a SIP user behind Kamailio for a watcher of another
/// network: the refresh goes to the remote target (the phone's Contact) through the
/// record-routed Kamailio, so it reaches the phone instead of Kamailio's `404 Not here`;
/// when the phone has lost the dialog (481), the gateway subscribes anew, and the
/// watcher is never told the subscription ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3261_12_2_the_gateways_refreshes_follow_the_route_set_through_kamailio() {
    let kport = support::free_port();
    let kaddr = SocketAddr::from(([127, 0, 0, 1], kport));
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: Transport::Udp,
            addr: kaddr,
        });
    })
    .await;
    let kamailio = Kamailio::start(kport, support::SIP_DOMAIN, gw.udp);
    let carol = Phone::register("carol", kaddr).await;

    // bob (another network) subscribes to carol.
    gw.from_mem
        .submit(Inbound::new(
            Event::Subscription(Subscription::new(SubscriptionOp::Subscribe)),
            Address::parse("sip:bob@mem.test").unwrap(),
            Address::parse("sip:carol@sip.test").unwrap(),
        ))
        .await
        .unwrap();
    let (subscribe, from) = carol
        .next_request(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("carol gets the SUBSCRIBE:\n{}", kamailio.log()));
    assert!(request_line(&subscribe).starts_with("SUBSCRIBE "));
    assert_eq!(from, kaddr, "through Kamailio");
    assert!(
        !all_headers(&subscribe, "Record-Route").is_empty(),
        "Kamailio record-routes"
    );
    // carol accepts for 4 s (so the refresh comes after 2 s) and sends her state.
    let record_route: Vec<(&str, String)> = all_headers(&subscribe, "Record-Route")
        .into_iter()
        .map(|r| ("Record-Route", r))
        .collect();
    let mut extra = vec![
        ("Contact", format!("<{}>", carol.contact())),
        ("Expires", "4".to_owned()),
    ];
    extra.extend(record_route.iter().cloned());
    carol
        .send(&reply(&subscribe, 200, "c1", &extra), kaddr)
        .await;
    carol
        .send(
            &notify_for(&subscribe, "c1", 1, carol.me, "active;expires=4", "open"),
            kaddr,
        )
        .await;
    let ok = carol.next_response(Duration::from_secs(5)).await.unwrap();
    assert_eq!(status_of(&ok), 200, "{}", String::from_utf8_lossy(&ok));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(presence_count(&gw), 1, "bob sees carol's state");

    // The refresh: same dialog, to carol's Contact, through Kamailio.
    let (refresh, from) = carol
        .next_request(Duration::from_secs(6))
        .await
        .unwrap_or_else(|| panic!("carol gets the refresh:\n{}", kamailio.log()));
    assert_eq!(from, kaddr);
    assert_eq!(
        request_line(&refresh),
        format!("SUBSCRIBE {} SIP/2.0", carol.contact()),
        "the Request-URI is the remote target"
    );
    assert_eq!(
        header_of(&refresh, "Call-ID"),
        header_of(&subscribe, "Call-ID"),
        "{}\n{}",
        String::from_utf8_lossy(&refresh),
        kamailio.log()
    );
    assert_eq!(
        tag_of(&header_of(&refresh, "To").unwrap()).as_deref(),
        Some("c1")
    );
    assert!(
        all_headers(&refresh, "Route").is_empty(),
        "Kamailio took its own Route off: {}",
        String::from_utf8_lossy(&refresh)
    );
    assert!(
        subscription_ends(&gw).is_empty(),
        "bob is told nothing: {:?}",
        subscription_ends(&gw)
    );

    // carol's phone restarted and no longer knows the dialog: a new subscription comes,
    // out of dialog, and bob still hears nothing of it.
    carol.send(&reply(&refresh, 481, "", &[]), kaddr).await;
    let (again, from) = carol
        .next_request(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("carol is subscribed to again:\n{}", kamailio.log()));
    assert_eq!(from, kaddr);
    assert_eq!(
        request_line(&again),
        format!("SUBSCRIBE {} SIP/2.0", carol.contact()),
        "Kamailio's lookup rewrote the AOR to the contact"
    );
    assert_ne!(
        header_of(&again, "Call-ID"),
        header_of(&subscribe, "Call-ID"),
        "a new dialog"
    );
    assert_eq!(tag_of(&header_of(&again, "To").unwrap()), None);
    let mut extra = vec![
        ("Contact", format!("<{}>", carol.contact())),
        ("Expires", "600".to_owned()),
    ];
    extra.extend(
        all_headers(&again, "Record-Route")
            .into_iter()
            .map(|r| ("Record-Route", r)),
    );
    carol.send(&reply(&again, 200, "c2", &extra), kaddr).await;
    carol
        .send(
            &notify_for(&again, "c2", 1, carol.me, "active;expires=600", "closed"),
            kaddr,
        )
        .await;
    let ok = carol.next_response(Duration::from_secs(5)).await.unwrap();
    assert_eq!(status_of(&ok), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        presence_count(&gw),
        2,
        "bob keeps seeing carol's state (now closed)"
    );
    assert!(
        subscription_ends(&gw).is_empty(),
        "bob's subscription never ended: {:?}",
        subscription_ends(&gw)
    );
}

/// A SIP watcher behind Kamailio: the gateway's NOTIFYs carry the route set (the
/// SUBSCRIBE's Record-Route) and go to the watcher's Contact through Kamailio, so they
/// reach the phone instead of Kamailio's `404 Not here`; the phone's in-dialog refresh
/// and its end come back the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc3261_12_2_notifies_to_a_watcher_follow_the_route_set_through_kamailio() {
    let kport = support::free_port();
    let kaddr = SocketAddr::from(([127, 0, 0, 1], kport));
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: Transport::Udp,
            addr: kaddr,
        });
    })
    .await;
    let kamailio = Kamailio::start(kport, support::SIP_DOMAIN, gw.udp);
    let dave = Phone::register("dave", kaddr).await;
    let me = dave.me;
    let subscribe = |to_tag: Option<&str>, cseq: u32, expires: u32, routes: &[String]| {
        let (uri, to) = match to_tag {
            Some(t) => ("GATEWAY".to_owned(), format!("<sip:bob@mem.test>;tag={t}")),
            None => (
                "sip:bob@mem.test".to_owned(),
                "<sip:bob@mem.test>".to_owned(),
            ),
        };
        let routes: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
        (
            uri,
            format!(
                "Via: SIP/2.0/UDP {me};branch=z9hG4bKd{cseq}\r\n{routes}\
                 Max-Forwards: 70\r\nFrom: <sip:dave@sip.test>;tag=d1\r\nTo: {to}\r\n\
                 Call-ID: dave-sub\r\nCSeq: {cseq} SUBSCRIBE\r\nEvent: presence\r\n\
                 Contact: <sip:dave@{me}>\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n"
            ),
        )
    };
    let (uri, rest) = subscribe(None, 1, 600, &[]);
    dave.send(&format!("SUBSCRIBE {uri} SIP/2.0\r\n{rest}"), kaddr)
        .await;
    let ok = dave
        .next_response(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("dave's SUBSCRIBE is answered:\n{}", kamailio.log()));
    assert_eq!(status_of(&ok), 200, "{}", String::from_utf8_lossy(&ok));
    let gw_tag = tag_of(&header_of(&ok, "To").unwrap()).unwrap();
    let gw_contact = uri_of(&header_of(&ok, "Contact").unwrap());
    // dave's route set: the 2xx's Record-Route, reversed (one entry here).
    let mut routes = all_headers(&ok, "Record-Route");
    routes.reverse();
    assert!(!routes.is_empty(), "Kamailio record-routes");

    // The first NOTIFY (pending: bob's side has not approved) reaches dave through
    // Kamailio, addressed to his Contact.
    let (first, from) = dave
        .next_request(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("dave gets the first NOTIFY:\n{}", kamailio.log()));
    assert_eq!(from, kaddr, "through Kamailio");
    assert_eq!(
        request_line(&first),
        format!("NOTIFY {} SIP/2.0", dave.contact())
    );
    dave.send(&reply(&first, 200, "", &[]), kaddr).await;

    // bob's side approves and publishes: an active NOTIFY with the state, same way.
    gw.from_mem
        .submit(Inbound::new(
            Event::Subscription(Subscription::new(SubscriptionOp::Approve)),
            Address::parse("sip:bob@mem.test").unwrap(),
            Address::parse("sip:dave@sip.test").unwrap(),
        ))
        .await
        .unwrap();
    let (active, from) = dave
        .next_request(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("dave gets the active NOTIFY:\n{}", kamailio.log()));
    assert_eq!(from, kaddr);
    assert!(
        header_of(&active, "Subscription-State")
            .unwrap()
            .starts_with("active"),
        "{}",
        String::from_utf8_lossy(&active)
    );
    dave.send(&reply(&active, 200, "", &[]), kaddr).await;

    // dave refreshes inside the dialog through Kamailio, then ends it.
    let (_, rest) = subscribe(Some(&gw_tag), 2, 600, &routes);
    dave.send(&format!("SUBSCRIBE {gw_contact} SIP/2.0\r\n{rest}"), kaddr)
        .await;
    let ok = dave.next_response(Duration::from_secs(5)).await.unwrap();
    assert_eq!(status_of(&ok), 200, "{}", String::from_utf8_lossy(&ok));
    let (_, rest) = subscribe(Some(&gw_tag), 3, 0, &routes);
    dave.send(&format!("SUBSCRIBE {gw_contact} SIP/2.0\r\n{rest}"), kaddr)
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut terminated = false;
    while let Some((m, from)) = dave
        .next(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if m.starts_with(b"NOTIFY ") {
            dave.send(&reply(&m, 200, "", &[]), from).await;
            if header_of(&m, "Subscription-State")
                .unwrap()
                .starts_with("terminated")
            {
                assert_eq!(from, kaddr);
                terminated = true;
                break;
            }
        }
    }
    assert!(
        terminated,
        "the final NOTIFY reaches dave:\n{}",
        kamailio.log()
    );
}
