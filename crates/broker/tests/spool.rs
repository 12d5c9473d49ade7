//! The broker task with a spool: a restart delivers what was accepted, in order, once,
//! under the same ids; group commit; a store that cannot be written refuses.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cpim::event::{Event, Message};
use cpim::{Address, Condition};
use cpim_broker::core::CoreConfig;
use cpim_broker::spool::{FileSpool, MemorySpool, Spool};
use cpim_broker::testing::{plain_map, Behavior, MemoryAdapter};
use cpim_broker::{AddressStyle, Broker, BrokerHandle, Inbound, Submitter};
use tokio::task::JoinHandle;

fn addr(s: &str) -> Address {
    Address::parse(s).expect("test address")
}

fn text(e: &cpim_broker::Envelope) -> String {
    match &e.event {
        Event::Message(m) => String::from_utf8_lossy(&m.body).into_owned(),
        other => format!("{other:?}"),
    }
}

fn message(i: usize, to: &str) -> Inbound {
    Inbound {
        dedup_key: Some(format!("call-{i}")),
        ..Inbound::new(
            Event::Message(Message::text(&format!("m{i}"))),
            addr("sip:alice@sip.test"),
            addr(to),
        )
    }
}

struct Running {
    xmpp: MemoryAdapter,
    submit: Submitter,
    handle: BrokerHandle,
    task: JoinHandle<()>,
}

fn start(spool: Box<dyn Spool>, xmpp_behavior: Behavior) -> Running {
    let (broker, handle) = Broker::new(
        CoreConfig::default(),
        Arc::new(plain_map(&[
            ("sip", AddressStyle::Sip, "sip.test"),
            ("xmpp", AddressStyle::Xmpp, "xmpp.test"),
        ])),
    );
    let mut broker = broker
        .with_spool(spool)
        .expect("spool recovers")
        .with_drain_deadline(Duration::from_millis(100));
    let sip = MemoryAdapter::new("sip", AddressStyle::Sip, &["sip.test"]);
    let xmpp = MemoryAdapter::new("xmpp", AddressStyle::Xmpp, &["xmpp.test"]);
    xmpp.set_behavior(xmpp_behavior);
    let submit = broker.context("sip").submitter;
    broker.add_adapter(Arc::new(sip));
    broker.add_adapter(Arc::new(xmpp.clone()));
    let task = broker.start();
    Running {
        xmpp,
        submit,
        handle,
        task,
    }
}

fn spool_path(name: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!(
            "cpim-broker-spool-{name}-{}-{}",
            std::process::id(),
            cpim_broker::envelope::unix_now_ms()
        ))
        .join("spool.log")
}

/// The destination never answers; the broker stops (as after a crash, nothing
/// finished). A new broker on the same file delivers every accepted message once, per
/// destination in acceptance order, under its first id, before anything new; a
/// retransmission (same dedup key) after the restart is recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_delivers_every_accepted_message_once_in_order_under_the_same_id() {
    let path = spool_path("restart");
    let first = start(
        Box::new(FileSpool::open(&path).expect("open")),
        Behavior::Stall,
    );
    let destinations = [
        "sip:bob@xmpp.test",
        "sip:carol@xmpp.test",
        "sip:dave@xmpp.test",
    ];
    let mut accepted = Vec::new();
    for i in 0..60 {
        let a = first
            .submit
            .submit(message(i, destinations[i % 3]))
            .await
            .expect("accepted");
        accepted.push(a.id);
    }
    assert_eq!(first.handle.metrics().spool().envelopes(), 60);
    first.handle.stop();
    first.task.await.expect("broker task");
    assert_eq!(
        first.xmpp.count(),
        3,
        "one in flight per destination when it stopped"
    );

    let second = start(
        Box::new(FileSpool::open(&path).expect("reopen")),
        Behavior::Deliver,
    );
    let again = second
        .submit
        .submit(message(7, destinations[1]))
        .await
        .expect("accepted");
    assert!(again.duplicate);
    assert_eq!(again.id, accepted[7]);
    let new = second
        .submit
        .submit(message(60, destinations[0]))
        .await
        .expect("accepted");
    assert!(new.id > accepted[59], "ids never repeat across restarts");
    assert_eq!(second.xmpp.wait_for(61, Duration::from_secs(10)).await, 61);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = second.xmpp.received();
    assert_eq!(got.len(), 61, "nothing twice");
    for (n, dest) in destinations.iter().enumerate() {
        let bodies: Vec<String> = got
            .iter()
            .filter(|e| e.recipient.local() == &dest[4..dest.find('@').unwrap_or(0)])
            .map(text)
            .collect();
        let mut expected: Vec<String> = (0..60)
            .filter(|i| i % 3 == n)
            .map(|i| format!("m{i}"))
            .collect();
        if n == 0 {
            expected.push("m60".to_owned());
        }
        assert_eq!(bodies, expected, "order for {dest}");
    }
    for e in &got {
        if let Some(i) = text(e)
            .strip_prefix('m')
            .and_then(|i| i.parse::<usize>().ok())
        {
            if i < 60 {
                assert_eq!(e.id, accepted[i], "same id after the restart");
            }
        }
    }
    // Delivered: the spool empties.
    for _ in 0..50 {
        if second.handle.metrics().spool().envelopes() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(second.handle.metrics().spool().envelopes(), 0);
    second.handle.stop();
    second.task.await.expect("broker task");
    let mut reopened = FileSpool::open(&path).expect("reopen");
    assert!(reopened.recover(0).expect("recover").envelopes.is_empty());
    drop(reopened);
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

/// Many concurrent senders share commits: far fewer durable writes than messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_share_one_commit() {
    let path = spool_path("group");
    let running = start(
        Box::new(FileSpool::open(&path).expect("open")),
        Behavior::Deliver,
    );
    let mut tasks = Vec::new();
    for i in 0..400 {
        let submit = running.submit.clone();
        tasks.push(tokio::spawn(async move {
            submit
                .submit(message(i, &format!("sip:u{}@xmpp.test", i % 40)))
                .await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("accepted");
    }
    assert_eq!(
        running.xmpp.wait_for(400, Duration::from_secs(10)).await,
        400
    );
    let commits = running.handle.metrics().spool().commits();
    assert!(
        commits < 200,
        "{commits} commits for 400 messages and their removals"
    );
    running.handle.stop();
    running.task.await.expect("broker task");
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

/// A spool that cannot be written: the sender hears a temporary failure and the
/// message is not delivered (it was never accepted).
#[tokio::test]
async fn a_failed_commit_refuses_the_submission() {
    let mut spool = MemorySpool::default();
    spool.failing = true;
    let running = start(Box::new(spool), Behavior::Deliver);
    let refused = running
        .submit
        .submit(message(1, "sip:bob@xmpp.test"))
        .await
        .expect_err("refused");
    assert_eq!(refused.condition, Condition::ServiceUnavailable);
    assert!(refused.retry_after.is_some());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(running.xmpp.count(), 0);
    assert_eq!(running.handle.metrics().spool().errors(), 1);
    // The same message again is not taken for a duplicate of the refused one.
    let again = running.submit.submit(message(1, "sip:bob@xmpp.test")).await;
    assert!(again.is_err());
    running.handle.stop();
    running.task.await.expect("broker task");
}
