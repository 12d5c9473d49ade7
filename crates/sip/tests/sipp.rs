//! The SIP adapter against SIPp (Debian `sip-tester`, installed by scripts/setup.sh):
//! SIPp as a UAC sending MESSAGE/OPTIONS/SUBSCRIBE/PUBLISH to the gateway, and as the
//! UAS or presentity the gateway sends to. The broker's in-memory adapter is the far
//! side (`mem.test`). Everything on 127.0.0.1, ports picked by the test.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use cpim::address::Address;
use cpim::condition::Condition;
use cpim::event::{Event, Message, NotificationStatus, Subscription, SubscriptionOp};
use cpim::presence::Presence;
use cpim_broker::envelope::Inbound;
use cpim_broker::testing::Behavior;
use cpim_sip::transport::{Peer, Transport as SipTransport};

use cpim_test_support::net::wait_until;
use cpim_test_support::sipp::{Sipp, SippOptions, Transport};

fn require_sipp() {
    assert!(
        Sipp::available(),
        "sipp is not installed: run scripts/setup.sh (Debian package sip-tester)"
    );
}

fn uac(gateway: SocketAddr, transport: Transport) -> SippOptions {
    SippOptions::uac(gateway)
        .transport(transport)
        .timeout(Duration::from_secs(20))
}

/// Runs a SIPp process to completion off the async runtime.
async fn finish(
    sipp: Sipp,
    timeout: Duration,
) -> Result<cpim_test_support::sipp::SippReport, String> {
    tokio::task::spawn_blocking(move || sipp.wait(timeout))
        .await
        .unwrap()
}

async fn message_in(transport: Transport) {
    require_sipp();
    let gw = support::gateway(&[], |_| {}).await;
    let addr = if transport == Transport::Udp {
        gw.udp
    } else {
        gw.tcp
    };
    let uac = Sipp::start(
        "uac_message.xml",
        uac(addr, transport)
            .service("bob")
            .var("to_domain", "mem.test")
            .var("from_user", "alice")
            .var("from_domain", "sip.test")
            .var("body", "héllo ✓ from SIPp")
            .var("expect", "202")
            .calls(5)
            .rate(10.0),
    )
    .unwrap();
    finish(uac, Duration::from_secs(30)).await.unwrap();
    assert_eq!(gw.mem.wait_for(5, Duration::from_secs(5)).await, 5);
    for envelope in gw.mem.received() {
        assert_eq!(envelope.from.to_string(), "sip:alice@sip.test");
        assert_eq!(envelope.to.to_string(), "sip:bob@mem.test");
        let Event::Message(m) = &envelope.event else {
            panic!("{:?}", envelope.event)
        };
        assert_eq!(String::from_utf8_lossy(&m.body), "héllo ✓ from SIPp");
        assert!(m.thread.is_some(), "Call-ID → thread (RFC 7572)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_message_over_udp_gets_202_and_reaches_the_far_side() {
    message_in(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_message_over_tcp_gets_202_and_reaches_the_far_side() {
    message_in(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_message_to_an_unroutable_domain_gets_404() {
    require_sipp();
    let gw = support::gateway(&[], |_| {}).await;
    // No route for the domain: 404 (RFC 7247 item-not-found).
    let unknown = Sipp::start(
        "uac_message.xml",
        uac(gw.udp, Transport::Udp)
            .service("bob")
            .var("to_domain", "nowhere.test")
            .var("from_user", "alice")
            .var("from_domain", "sip.test")
            .var("body", "anyone?")
            .var("expect", "404")
            .calls(1),
    )
    .unwrap();
    finish(unknown, Duration::from_secs(20)).await.unwrap();
    assert_eq!(gw.mem.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_message_backpressure_is_503_with_retry_after() {
    require_sipp();
    let gw = support::gateway_with_core(&[], |c| c.max_queued_per_destination = 1, |_| {}).await;
    gw.mem.set_behavior(Behavior::Stall);
    // The first is in flight (stalled), the second waits, the third finds the queue full.
    let fill = Sipp::start(
        "uac_message.xml",
        uac(gw.udp, Transport::Udp)
            .service("carol")
            .var("to_domain", "mem.test")
            .var("from_user", "alice")
            .var("from_domain", "sip.test")
            .var("body", "fill")
            .var("expect", "202")
            .calls(2),
    )
    .unwrap();
    finish(fill, Duration::from_secs(20)).await.unwrap();
    let refused = Sipp::start(
        "uac_message.xml",
        uac(gw.udp, Transport::Udp)
            .service("carol")
            .var("to_domain", "mem.test")
            .var("from_user", "alice")
            .var("from_domain", "sip.test")
            .var("body", "one too many")
            .var("expect", "503")
            .calls(1),
    )
    .unwrap();
    finish(refused, Duration::from_secs(20)).await.unwrap();
    gw.mem.release();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_message_cpim_is_carried_unaltered() {
    require_sipp();
    let gw = support::gateway(&[], |_| {}).await;
    let uac = Sipp::start(
        "uac_message_cpim.xml",
        uac(gw.udp, Transport::Udp)
            .service("bob")
            .var("to_domain", "mem.test")
            .var("from_user", "alice")
            .var("from_domain", "sip.test")
            .var("body", "in CPIM")
            .var("datetime", "2026-11-25T10:00:00Z")
            .var("expect", "202")
            .calls(1),
    )
    .unwrap();
    let report = finish(uac, Duration::from_secs(20)).await.unwrap();
    assert_eq!(gw.mem.wait_for(1, Duration::from_secs(5)).await, 1);
    let Event::Message(m) = &gw.mem.received()[0].event else {
        panic!()
    };
    assert_eq!(m.body, b"in CPIM");
    let sent = report
        .sent()
        .into_iter()
        .find(|m| m.method() == Some("MESSAGE"))
        .unwrap();
    assert_eq!(
        m.cpim.as_deref(),
        Some(sent.body().as_bytes()),
        "the CPIM body byte for byte (RFC 3862 §6)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_options_lists_the_methods() {
    require_sipp();
    let gw = support::gateway(&[], |_| {}).await;
    for (transport, addr) in [(Transport::Udp, gw.udp), (Transport::Tcp, gw.tcp)] {
        let uac = Sipp::start(
            "uac_options.xml",
            uac(addr, transport)
                .service("gw")
                .var("to_domain", "sip.test")
                .var("from_user", "alice")
                .var("from_domain", "sip.test")
                .calls(1),
        )
        .unwrap();
        finish(uac, Duration::from_secs(20)).await.unwrap();
    }
}

/// A SIPp UAS answering the gateway's MESSAGEs 200, 404, 480, 503 (Retry-After 1),
/// then 200: each outcome reaches the origin (the in-memory sender) correctly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uas_answers_200_404_480_503_and_each_outcome_reaches_the_sender() {
    require_sipp();
    let port = support::free_port();
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: SipTransport::Udp,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        });
    })
    .await;
    let mut uas = Sipp::start(
        "uas_message_sequence.xml",
        SippOptions::uas()
            .transport(Transport::Udp)
            .local_port(port)
            .calls(5)
            .deadcall_wait(Duration::ZERO)
            .timeout(Duration::from_secs(30)),
    )
    .unwrap();
    uas.wait_ready(Duration::from_secs(5)).unwrap();
    for n in 1..=4 {
        let mut message = Message::text(&format!("message {n}"));
        message.receipts.delivered = true;
        message.receipts.failed = true;
        let inbound = Inbound::new(
            Event::Message(message),
            Address::parse("sip:carol@mem.test").unwrap(),
            Address::parse("sip:bob@sip.test").unwrap(),
        );
        gw.from_mem.submit(inbound).await.unwrap();
    }
    let report = finish(uas, Duration::from_secs(40)).await.unwrap();
    // In order, one at a time (RFC 3428 §8), the fourth twice (after the 503).
    let bodies: Vec<String> = report
        .received_requests("MESSAGE")
        .iter()
        .map(|m| m.body().to_owned())
        .collect();
    let texts: Vec<String> = bodies
        .iter()
        .map(|b| b.rsplit("\r\n\r\n").next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "message 1",
            "message 2",
            "message 3",
            "message 4",
            "message 4"
        ],
        "{bodies:#?}"
    );
    // What the sender heard: delivered, not found, unavailable, delivered.
    wait_until("four notifications", Duration::from_secs(10), || {
        gw.mem
            .received()
            .iter()
            .filter(|e| matches!(e.event, Event::Notification(_)))
            .count()
            >= 4
    })
    .await;
    let statuses: Vec<NotificationStatus> = gw
        .mem
        .received()
        .into_iter()
        .filter_map(|e| match e.event {
            Event::Notification(n) => Some(n.status),
            _ => None,
        })
        .collect();
    let failed = |c| NotificationStatus::Failed {
        condition: c,
        text: None,
    };
    let simplified: Vec<NotificationStatus> = statuses
        .into_iter()
        .map(|s| match s {
            NotificationStatus::Failed { condition, .. } => failed(condition),
            other => other,
        })
        .collect();
    assert_eq!(
        simplified,
        [
            NotificationStatus::Delivered,
            failed(Condition::ItemNotFound),
            failed(Condition::RecipientUnavailable),
            NotificationStatus::Delivered,
        ]
    );
}

fn pidf(entity: &str, basic: &str) -> Presence {
    Presence::parse(
        format!(
            "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{entity}\">\
             <tuple id=\"t1\"><status><basic>{basic}</basic></status></tuple></presence>"
        )
        .as_bytes(),
    )
    .unwrap()
}

/// A SIP watcher (SIPp) subscribes to an in-memory user: pending, then active with
/// the state the user publishes, then its unsubscribe ends with `terminated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_watcher_subscribe_notify_and_unsubscribe() {
    require_sipp();
    let gw = support::gateway(&[], |_| {}).await;
    let watcher = Sipp::start(
        "uac_subscribe.xml",
        uac(gw.udp, Transport::Udp)
            .service("bob")
            .var("to_domain", "mem.test")
            .var("from_user", "alice")
            .var("from_domain", "sip.test")
            .var("expires", "600")
            .calls(1),
    )
    .unwrap();
    // The authorization request reaches bob's network; bob approves and publishes.
    wait_until("the authorization request", Duration::from_secs(10), || {
        gw.mem.received().iter().any(|e| {
            matches!(&e.event, Event::Subscription(s) if s.op == SubscriptionOp::Subscribe && !s.aggregate)
        })
    })
    .await;
    let bob = Address::parse("sip:bob@mem.test").unwrap();
    let alice = Address::parse("sip:alice@sip.test").unwrap();
    gw.from_mem
        .submit(Inbound::new(
            Event::Subscription(Subscription::new(SubscriptionOp::Approve)),
            bob.clone(),
            alice.clone(),
        ))
        .await
        .unwrap();
    gw.from_mem
        .submit(Inbound::new(
            Event::Presence(cpim::event::PresenceUpdate {
                presence: pidf("sip:bob@mem.test", "open"),
            }),
            bob.clone(),
            bob.clone(),
        ))
        .await
        .unwrap();
    let report = finish(watcher, Duration::from_secs(30)).await.unwrap();
    let notifies = report.received_requests("NOTIFY");
    let states: Vec<String> = notifies
        .iter()
        .map(|n| n.header("Subscription-State").unwrap_or_default())
        .collect();
    assert!(
        states.first().is_some_and(|s| s.starts_with("pending")),
        "{states:?}"
    );
    assert!(
        states.last().is_some_and(|s| s.starts_with("terminated")),
        "{states:?}"
    );
    let open = notifies
        .iter()
        .find(|n| n.body().contains("<basic>open</basic>"))
        .expect("a NOTIFY with the published state");
    assert!(
        open.body().contains("entity=\"sip:bob@mem.test\""),
        "{}",
        open.body()
    );
    assert_eq!(
        open.header("Content-Type").as_deref(),
        Some("application/pidf+xml")
    );
    // The unsubscribe reached the broker: the last watcher left, so the gateway's
    // shared subscription towards bob's network ends too.
    wait_until("the upstream unsubscribe", Duration::from_secs(10), || {
        gw.mem.received().iter().any(|e| {
            matches!(&e.event, Event::Subscription(s) if s.op == SubscriptionOp::Unsubscribe && s.aggregate)
        })
    })
    .await;
}

/// Two in-memory watchers follow a SIP presentity (SIPp): the gateway subscribes once
/// (RFC 7248 §4), both watchers get the NOTIFY's state, and when both leave the gateway
/// unsubscribes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_presentity_one_upstream_subscription_for_two_watchers() {
    require_sipp();
    let port = support::free_port();
    let gw = support::gateway(&[], |c| {
        c.outbound_proxy = Some(Peer {
            transport: SipTransport::Udp,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        });
        // The second watcher shares the subscription the SIP side granted the first;
        // here everyone may (the `contacts` default is tested in adapter.rs).
        c.presence_authorization = cpim_sip::authorization::Policy::Open;
    })
    .await;
    let mut presentity = Sipp::start(
        "uas_presentity.xml",
        SippOptions::uas()
            .transport(Transport::Udp)
            .local_port(port)
            .service("bob")
            .var("expires", "600")
            .calls(1)
            .timeout(Duration::from_secs(30)),
    )
    .unwrap();
    presentity.wait_ready(Duration::from_secs(5)).unwrap();
    let bob = Address::parse("sip:bob@sip.test").unwrap();
    for watcher in ["carol", "dave"] {
        gw.from_mem
            .submit(Inbound::new(
                Event::Subscription(Subscription {
                    expires_secs: Some(600),
                    ..Subscription::new(SubscriptionOp::Subscribe)
                }),
                Address::parse(&format!("sip:{watcher}@mem.test")).unwrap(),
                bob.clone(),
            ))
            .await
            .unwrap();
    }
    wait_until("both watchers to get bob's state", Duration::from_secs(10), || {
        let got: Vec<String> = gw
            .mem
            .received()
            .iter()
            .filter(|e| matches!(&e.event, Event::Presence(p) if p.presence.to_xml().contains("from sipp")))
            .map(|e| e.to.to_string())
            .collect();
        got.contains(&"sip:carol@mem.test".to_owned()) && got.contains(&"sip:dave@mem.test".to_owned())
    })
    .await;
    for watcher in ["carol", "dave"] {
        gw.from_mem
            .submit(Inbound::new(
                Event::Subscription(Subscription::new(SubscriptionOp::Unsubscribe)),
                Address::parse(&format!("sip:{watcher}@mem.test")).unwrap(),
                bob.clone(),
            ))
            .await
            .unwrap();
    }
    let report = finish(presentity, Duration::from_secs(30)).await.unwrap();
    let subscribes = report.received_requests("SUBSCRIBE");
    let expires: Vec<String> = subscribes
        .iter()
        .map(|s| s.header("Expires").unwrap_or_default())
        .collect();
    assert_eq!(
        expires.len(),
        2,
        "one subscription, one unsubscribe: {expires:?}"
    );
    assert_ne!(expires[0], "0");
    assert_eq!(expires[1], "0");
}

/// A SIP user publishes (SIPp PUBLISH, refresh, removal): an in-memory watcher of that
/// user sees open, then closed when the state is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_publish_reaches_watchers_and_removal_closes() {
    require_sipp();
    // alice publishes to the gateway, which is her presence server: its policy decides,
    // and here anyone may watch her.
    let gw = support::gateway(&[], |c| {
        c.presence_authorization = cpim_sip::authorization::Policy::Open;
    })
    .await;
    let alice = Address::parse("sip:alice@sip.test").unwrap();
    gw.from_mem
        .submit(Inbound::new(
            Event::Subscription(Subscription::new(SubscriptionOp::Subscribe)),
            Address::parse("sip:carol@mem.test").unwrap(),
            alice.clone(),
        ))
        .await
        .unwrap();
    // The SIP side approves at once (the gateway is alice's presence server).
    wait_until("the approval", Duration::from_secs(10), || {
        gw.mem
            .received()
            .iter()
            .any(|e| matches!(&e.event, Event::Subscription(s) if s.op == SubscriptionOp::Approve))
    })
    .await;
    let pua = Sipp::start(
        "uac_publish.xml",
        uac(gw.udp, Transport::Udp)
            .service("alice")
            .var("to_domain", "sip.test")
            .var("from_user", "alice")
            .var("from_domain", "sip.test")
            .var("expires", "60")
            .calls(1),
    )
    .unwrap();
    let report = finish(pua, Duration::from_secs(20)).await.unwrap();
    let etags: Vec<String> = report
        .received()
        .iter()
        .filter_map(|m| m.header("SIP-ETag"))
        .collect();
    assert!(etags.len() >= 2, "{etags:?}");
    assert_ne!(
        etags[0], etags[1],
        "a refresh gets a new entity tag (RFC 3903 §6)"
    );
    wait_until(
        "open then closed at the watcher",
        Duration::from_secs(10),
        || {
            let basics: Vec<bool> = gw
                .mem
                .received()
                .iter()
                .filter_map(|e| match &e.event {
                    Event::Presence(p) => Some(p.presence.to_xml().contains("<basic>open</basic>")),
                    _ => None,
                })
                .collect();
            basics.first() == Some(&true) && basics.last() == Some(&false)
        },
    )
    .await;
}

/// The MESSAGE rate SIPp → gateway → in-memory sink, with no loss. Run by hand:
/// `cargo test --release -p cpim-sip --test sipp -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run by hand"]
async fn sipp_message_rate() {
    require_sipp();
    let gw = support::gateway(&[], |_| {}).await;
    let total: u32 = std::env::var("SIPP_RATE_TOTAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rate: f64 = std::env::var("SIPP_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000.0);
    let started = std::time::Instant::now();
    let uac = Sipp::start(
        "uac_message.xml",
        uac(gw.udp, Transport::Udp)
            .service("bob")
            .var("to_domain", "mem.test")
            .var("from_user", "alice")
            .var("from_domain", "sip.test")
            .var("body", "load")
            .var("expect", "202")
            .calls(total)
            .rate(rate)
            .timeout(Duration::from_secs(300))
            .arg("-l")
            .arg("2000"),
    )
    .unwrap();
    let result = finish(uac, Duration::from_secs(320)).await;
    let got = gw
        .mem
        .wait_for(total as usize, Duration::from_secs(30))
        .await;
    let elapsed = started.elapsed();
    println!(
        "sent {total} at target {rate}/s: {got} delivered in {:.2} s = {:.0} msg/s; sipp: {}",
        elapsed.as_secs_f64(),
        f64::from(got as u32) / elapsed.as_secs_f64(),
        if result.is_ok() {
            "all 202"
        } else {
            "failures"
        }
    );
    assert_eq!(got, total as usize, "loss");
}
