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

criterion_group!(benches, commits);
criterion_main!(benches);
