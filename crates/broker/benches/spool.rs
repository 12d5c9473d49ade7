//! The spool's cost: one durable commit of a batch of accepted messages (a put and a
//! dedup key each) and of their removals, for batch sizes 1, 16 and 256 — the per-commit
//! fsync against the per-message work.
//!
//! Run: `cargo bench -p cpim-broker --bench spool`.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use cpim::event::{Event, Message};
use cpim::Address;
use cpim_broker::envelope::{Envelope, MessageId};
use cpim_broker::spool::{FileSpool, Spool, SpoolOp, StoredEnvelope};
use cpim_broker::Identity;

fn record(id: u64) -> StoredEnvelope {
    let a = Address::parse("sip:alice@sip.test").expect("address");
    let b = Address::parse("bob@xmpp.test").expect("address");
    let text = format!(
        "t=2026-11-26\t10:00:00\t1764151200.123456 n={id} and some words of a chat message"
    );
    StoredEnvelope::new(
        &Envelope {
            id: MessageId(id),
            event: Event::Message(Message::text(&text)),
            from: b.clone(),
            to: b,
            sender: Identity::new("alice", "sip.test"),
            recipient: Identity::new("bob", "xmpp.test"),
            origin: "sip".into(),
            destination: "xmpp".into(),
            origin_from: a.clone(),
            origin_to: a,
            protocol_ids: Vec::new(),
            hops: 69,
            received_at_ms: 1,
        },
        2,
        Some(3),
    )
}

fn commits(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("cpim-spool-bench-{}", std::process::id()));
    let mut spool = FileSpool::open(&dir.join("spool")).expect("open");
    let mut next = 1u64;
    let mut group = c.benchmark_group("spool/commit");
    group.measurement_time(Duration::from_secs(5));
    for batch in [1u64, 16, 256] {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter(|| {
                let ids: Vec<u64> = (next..next + batch).collect();
                next += batch;
                let mut ops = Vec::with_capacity(ids.len() * 2);
                for id in &ids {
                    ops.push(SpoolOp::Put(Box::new(record(*id))));
                    ops.push(SpoolOp::Remember {
                        key: format!("sip\ncall-{id}/1"),
                        id: MessageId(*id),
                        expires_ms: u64::MAX,
                    });
                }
                spool.commit(&ops, next, 0).expect("commit");
                let removals: Vec<SpoolOp> = ids
                    .iter()
                    .map(|id| SpoolOp::Remove(MessageId(*id)))
                    .collect();
                spool.commit(&removals, next, 0).expect("commit");
            });
        });
    }
    group.finish();
    drop(spool);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, commits, subscription_saves);
criterion_main!(benches);

/// Issue 15: the presence subscriptions' share of the spool. 100 000 app watchers of one
/// SIP presentity are held; one more subscribes; the save writes what changed (one
/// record), not the table. Prints the bytes written per save once.
fn subscription_saves(c: &mut Criterion) {
    use std::sync::Arc;

    use cpim::event::{Subscription, SubscriptionOp};
    use cpim_broker::core::{Core, CoreConfig};
    use cpim_broker::envelope::{DeliveryOutcome, Inbound};
    use cpim_broker::map::{AdapterMapConfig, AddressMap, MapConfig};
    use cpim_broker::{AddressStyle, DeliveryPolicy};

    const HELD: u64 = 100_000;
    let adapter = |name: &str, style, domain: &str| AdapterMapConfig {
        name: name.into(),
        style,
        home_domains: vec![domain.into()],
        alias_domains: Vec::new(),
        escape_domains: Vec::new(),
    };
    let map = AddressMap::new(MapConfig {
        adapters: vec![
            adapter("sip", AddressStyle::Sip, "sip.test"),
            adapter("webhook", AddressStyle::Im, "app.test"),
        ],
        users: Vec::new(),
        any_domain: None,
    })
    .expect("map");
    let mut core = Core::new(
        CoreConfig {
            spool: true,
            max_queued_total: 10_000_000,
            max_queued_per_destination: 10_000_000,
            hub: cpim_broker::presence::HubConfig {
                max_subscriptions: 10_000_000,
                ..Default::default()
            },
            ..CoreConfig::default()
        },
        Arc::new(map),
    );
    core.register_adapter("sip", DeliveryPolicy::default());
    core.register_adapter("webhook", DeliveryPolicy::default());
    let bob = Address::parse("sip:bob@sip.test").expect("address");
    let mut now = Duration::ZERO;
    let subscribe = |core: &mut Core, i: u64, now: Duration| {
        let watcher = Address::parse(&format!("im:w{i}@app.test")).expect("address");
        let ask = Inbound::new(
            Event::Subscription(Subscription::new(SubscriptionOp::Subscribe)),
            watcher.clone(),
            bob.clone(),
        );
        let _ = core.accept(now, "webhook", ask);
        let approve = Inbound::new(
            Event::Subscription(Subscription::new(SubscriptionOp::Approve)),
            bob.clone(),
            watcher,
        );
        let _ = core.accept(now, "sip", approve);
        while let Some(e) = core.poll_dispatch() {
            core.complete(now, e.id, DeliveryOutcome::Accepted);
        }
    };
    for i in 0..HELD {
        subscribe(&mut core, i, now);
    }
    now += Duration::from_secs(2);
    core.handle_timeout(now);
    let _ = core.take_ops();
    let mut next = HELD;
    let mut printed = false;
    let mut group = c.benchmark_group("spool/subscriptions");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("one change of 100000 saved", |b| {
        b.iter(|| {
            subscribe(&mut core, next, now);
            next += 1;
            now += Duration::from_secs(2);
            core.handle_timeout(now);
            let ops = core.take_ops();
            if !printed {
                printed = true;
                let bytes: usize = ops
                    .iter()
                    .map(|op| match op {
                        SpoolOp::State { key, value } => {
                            key.len() + value.as_ref().map_or(0, Vec::len)
                        }
                        _ => 0,
                    })
                    .sum();
                eprintln!(
                    "subscription save after one change: {} ops, {bytes} bytes",
                    ops.len()
                );
            }
            ops
        });
    });
    group.finish();
}
