//! The broker task with in-memory adapters: ordering, loss, back-pressure, failures.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cpim::event::{Event, Message, NotificationStatus};
use cpim::{Address, Condition};
use cpim_broker::core::{CoreConfig, Router};
use cpim_broker::map::{MapError, Route};
use cpim_broker::testing::{plain_map, Behavior, MemoryAdapter};
use cpim_broker::{AddressStyle, Broker, Identity, Inbound, Submitter};

fn addr(s: &str) -> Address {
    Address::parse(s).expect("test address")
}

fn text(e: &cpim_broker::Envelope) -> String {
    match &e.event {
        Event::Message(m) => String::from_utf8_lossy(&m.body).into_owned(),
        other => format!("{other:?}"),
    }
}

struct Setup {
    sip: MemoryAdapter,
    xmpp: MemoryAdapter,
    submit_sip: Submitter,
    handle: cpim_broker::BrokerHandle,
}

fn setup(config: CoreConfig) -> Setup {
    let (mut broker, handle) = Broker::new(
        config,
        Arc::new(plain_map(&[
            ("sip", AddressStyle::Sip, "sip.test"),
            ("xmpp", AddressStyle::Xmpp, "xmpp.test"),
        ])),
    );
    let sip = MemoryAdapter::new("sip", AddressStyle::Sip, &["sip.test"]);
    let xmpp = MemoryAdapter::new("xmpp", AddressStyle::Xmpp, &["xmpp.test"]);
    let submit_sip = broker.context("sip").submitter;
    broker.add_adapter(Arc::new(sip.clone()));
    broker.add_adapter(Arc::new(xmpp.clone()));
    broker.start();
    Setup {
        sip,
        xmpp,
        submit_sip,
        handle,
    }
}

/// 100 000 messages to 1 000 destinations from 10 concurrent submitters: every message
/// arrives exactly once, and per destination in the order it was accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_messages_keep_per_destination_order_and_none_is_lost() {
    const MESSAGES: usize = 100_000;
    const DESTINATIONS: usize = 1_000;
    const SUBMITTERS: usize = 10;
    let s = setup(CoreConfig::default());
    let mut tasks = Vec::new();
    for t in 0..SUBMITTERS {
        let submitter = s.submit_sip.clone();
        tasks.push(tokio::spawn(async move {
            let mut refused = 0u64;
            // Submitter t owns destinations d with d % SUBMITTERS == t, so acceptance
            // order per destination is the order of i.
            for i in (t..MESSAGES).step_by(SUBMITTERS) {
                let dest = i % DESTINATIONS;
                let inbound = || {
                    Inbound::new(
                        Event::Message(Message::text(&i.to_string())),
                        addr("sip:alice@sip.test"),
                        addr(&format!("sip:u{dest}@xmpp.test")),
                    )
                };
                loop {
                    match submitter.submit(inbound()).await {
                        Ok(_) => break,
                        Err(r) if r.condition == Condition::ResourceConstraint => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err(r) => panic!("refused: {r}"),
                    }
                }
            }
            refused
        }));
    }
    for t in tasks {
        t.await.expect("submitter task");
    }
    let got = s.xmpp.wait_for(MESSAGES, Duration::from_secs(120)).await;
    assert_eq!(got, MESSAGES);
    let mut per_dest: HashMap<String, Vec<usize>> = HashMap::new();
    for e in s.xmpp.received() {
        let n: usize = text(&e).parse().expect("numeric body");
        per_dest.entry(e.to.to_string()).or_default().push(n);
    }
    assert_eq!(per_dest.len(), DESTINATIONS);
    let mut all: Vec<usize> = Vec::with_capacity(MESSAGES);
    for (dest, bodies) in &per_dest {
        assert!(
            bodies.windows(2).all(|w| w[0] < w[1]),
            "order broken for {dest}"
        );
        all.extend(bodies);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..MESSAGES).collect::<Vec<_>>(),
        "lost or duplicated messages"
    );
    let metrics = s.handle.metrics();
    assert_eq!(metrics.adapter("sip").received_count(), MESSAGES as u64);
    assert_eq!(metrics.adapter("xmpp").delivered_count(), MESSAGES as u64);
    assert_eq!(s.sip.count(), 0, "no failure notifications");
}

#[tokio::test]
async fn failure_on_the_far_side_reaches_the_origin() {
    let s = setup(CoreConfig::default());
    s.xmpp.set_behavior(Behavior::Fail(Condition::ItemNotFound));
    let a = s
        .submit_sip
        .submit(Inbound::new(
            Event::Message(Message::text("hi")),
            addr("sip:alice@sip.test"),
            addr("sip:nobody@xmpp.test"),
        ))
        .await
        .expect("accepted");
    assert_eq!(s.sip.wait_for(1, Duration::from_secs(5)).await, 1);
    let n = &s.sip.received()[0];
    assert_eq!(n.to.to_string(), "sip:alice@sip.test");
    assert_eq!(n.from.to_string(), "sip:nobody@xmpp.test");
    match &n.event {
        Event::Notification(note) => {
            assert_eq!(note.message_id, a.id.to_string());
            assert!(matches!(
                note.status,
                NotificationStatus::Failed {
                    condition: Condition::ItemNotFound,
                    ..
                }
            ));
        }
        other => panic!("expected a notification, got {other:?}"),
    }
    assert_eq!(
        s.handle
            .metrics()
            .adapter("xmpp")
            .failed_count(Condition::ItemNotFound),
        1
    );
}

#[tokio::test]
async fn a_panicking_adapter_fails_the_delivery_and_the_queue_moves_on() {
    let s = setup(CoreConfig::default());
    s.xmpp.script([Behavior::Panic]);
    let send = |text: &str| {
        s.submit_sip.submit(Inbound::new(
            Event::Message(Message::text(text)),
            addr("sip:alice@sip.test"),
            addr("sip:bob@xmpp.test"),
        ))
    };
    send("boom").await.expect("accepted");
    send("next").await.expect("accepted");
    assert_eq!(s.xmpp.wait_for(2, Duration::from_secs(5)).await, 2);
    assert_eq!(s.sip.wait_for(1, Duration::from_secs(5)).await, 1);
    assert!(matches!(
        &s.sip.received()[0].event,
        Event::Notification(n) if matches!(n.status, NotificationStatus::Failed { condition: Condition::InternalServerError, .. })
    ));
}

#[tokio::test]
async fn a_stalled_destination_pushes_back_with_a_retry_hint_others_flow() {
    let s = setup(CoreConfig {
        max_queued_per_destination: 5,
        ..CoreConfig::default()
    });
    s.xmpp.set_behavior(Behavior::Stall);
    let send = |to: &str| {
        let submitter = s.submit_sip.clone();
        let to = addr(to);
        async move {
            submitter
                .submit(Inbound::new(
                    Event::Message(Message::text("x")),
                    addr("sip:alice@sip.test"),
                    to,
                ))
                .await
        }
    };
    // One in flight (stalled) plus five waiting; the seventh is refused.
    for _ in 0..6 {
        send("sip:bob@xmpp.test").await.expect("accepted");
    }
    let refused = send("sip:bob@xmpp.test").await.expect_err("queue full");
    assert_eq!(refused.condition, Condition::ResourceConstraint);
    assert!(refused.retry_after.is_some());
    assert_eq!(
        s.handle
            .metrics()
            .adapter("sip")
            .rejected_count(Condition::ResourceConstraint),
        1
    );
    // Counted against the destination's adapter too (the bounded share per destination).
    assert_eq!(s.handle.metrics().adapter("xmpp").queue_full_count(), 1);
    // Another destination is not held up by bob's queue.
    s.xmpp.set_behavior(Behavior::Deliver);
    send("sip:carol@xmpp.test").await.expect("accepted");
    assert_eq!(s.xmpp.wait_for(2, Duration::from_secs(5)).await, 2);
    assert_eq!(text(&s.xmpp.received()[1]), "x");
    assert_eq!(s.xmpp.received()[1].to.to_string(), "carol@xmpp.test");
    // Releasing bob's stalled delivery lets the queue drain in order.
    s.xmpp.release();
    assert_eq!(s.xmpp.wait_for(7, Duration::from_secs(5)).await, 7);
    assert_eq!(s.handle.metrics().adapter("xmpp").queue_depth(), 0);
}

#[tokio::test(start_paused = true)]
async fn retry_later_waits_the_given_time() {
    let s = setup(CoreConfig::default());
    s.xmpp
        .script([Behavior::RetryLater(Duration::from_secs(30))]);
    s.submit_sip
        .submit(Inbound::new(
            Event::Message(Message::text("later")),
            addr("sip:alice@sip.test"),
            addr("sip:bob@xmpp.test"),
        ))
        .await
        .expect("accepted");
    assert_eq!(s.xmpp.wait_for(1, Duration::from_secs(1)).await, 1);
    // Not retried before 30 s (time is paused and auto-advances only when idle).
    assert_eq!(s.xmpp.wait_for(2, Duration::from_secs(29)).await, 1);
    assert_eq!(s.xmpp.wait_for(2, Duration::from_secs(5)).await, 2);
}

#[tokio::test]
async fn router_swap_and_stop() {
    struct Empty;
    impl Router for Empty {
        fn resolve(&self, _: &str, a: &Address) -> Result<Route, MapError> {
            Err(MapError::UnknownIdentityDomain {
                identity: Identity::new("x", a.domain()),
            })
        }
        fn present(
            &self,
            identity: &Identity,
            _: Option<&str>,
            _: &str,
        ) -> Result<Address, MapError> {
            Err(MapError::UnknownIdentityDomain {
                identity: identity.clone(),
            })
        }
        fn owner(&self, _: &Identity) -> Option<String> {
            None
        }
    }
    let s = setup(CoreConfig::default());
    let msg = || {
        Inbound::new(
            Event::Message(Message::text("x")),
            addr("sip:alice@sip.test"),
            addr("sip:bob@xmpp.test"),
        )
    };
    s.submit_sip
        .submit(msg())
        .await
        .expect("accepted with the first map");
    assert!(s.handle.set_router(Arc::new(Empty)).await);
    let r = s
        .submit_sip
        .submit(msg())
        .await
        .expect_err("not routable with the new map");
    assert_eq!(r.condition, Condition::ItemNotFound);
    s.handle.stop();
    let r = s.submit_sip.submit(msg()).await.expect_err("stopping");
    assert_eq!(r.condition, Condition::ResourceConstraint);
    assert!(
        r.retry_after.is_some(),
        "a temporary refusal with a retry hint"
    );
}
