//! Routing hot path: messages per second through the broker.
//!
//! - `core/accept_dispatch_complete`: the pure core alone with the real address map
//!   (resolve, present, queue, dispatch, outcome).
//! - `runtime/submit_to_delivery`: the broker task with in-memory adapters, from
//!   `Submitter::submit` to the destination adapter's `deliver`, 10 000 messages over
//!   100 destinations per iteration.
//!
//! Run: `cargo bench -p cpim-broker --bench routing`.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use cpim::event::{Event, Message};
use cpim::Address;
use cpim_broker::core::{Core, CoreConfig};
use cpim_broker::map::{AdapterMapConfig, AddressMap, MapConfig};
use cpim_broker::testing::MemoryAdapter;
use cpim_broker::{AddressStyle, Broker, DeliveryOutcome, DeliveryPolicy, Inbound};

/// The sample deployment's shape: SIP users at `sip.test`, XMPP users at `xmpp.test`,
/// SIP users seen from XMPP under the alias `sip.gw.xmpp.test`.
fn address_map() -> Arc<AddressMap> {
    let adapter = |name: &str, style, home: &str, alias: Vec<(String, String)>| AdapterMapConfig {
        name: name.to_owned(),
        style,
        home_domains: vec![home.to_owned()],
        alias_domains: alias,
        escape_domains: Vec::new(),
    };
    let config = MapConfig {
        adapters: vec![
            adapter("sip", AddressStyle::Sip, "sip.test", Vec::new()),
            adapter(
                "xmpp",
                AddressStyle::Xmpp,
                "xmpp.test",
                vec![("sip.gw.xmpp.test".to_owned(), "sip.test".to_owned())],
            ),
        ],
        users: Vec::new(),
        any_domain: None,
    };
    Arc::new(AddressMap::new(config).expect("valid map"))
}

fn inbound(i: usize, destinations: &[Address], from: &Address) -> Inbound {
    Inbound::new(
        Event::Message(Message::text("hello, this is a benchmark message")),
        from.clone(),
        destinations[i % destinations.len()].clone(),
    )
}

fn bench(c: &mut Criterion) {
    let destinations: Vec<Address> = (0..100)
        .map(|d| Address::parse(&format!("sip:user{d}@xmpp.test")).expect("address"))
        .collect();
    let from = Address::parse("sip:alice@sip.test").expect("address");

    let mut group = c.benchmark_group("core");
    group.throughput(Throughput::Elements(1));
    let mut core = Core::new(CoreConfig::default(), address_map());
    core.register_adapter("sip", DeliveryPolicy::default());
    core.register_adapter("xmpp", DeliveryPolicy::default());
    let mut i = 0usize;
    group.bench_function("accept_dispatch_complete", |b| {
        b.iter(|| {
            i += 1;
            core.accept(Duration::ZERO, "sip", inbound(i, &destinations, &from))
                .expect("accepted");
            let e = core.poll_dispatch().expect("dispatch");
            core.complete(Duration::ZERO, e.id, DeliveryOutcome::Accepted);
        });
    });
    group.finish();

    const BATCH: usize = 10_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (submitter, sink) = rt.block_on(async {
        let (mut broker, _handle) = Broker::new(CoreConfig::default(), address_map());
        let sip = MemoryAdapter::new("sip", AddressStyle::Sip, &["sip.test"]);
        let xmpp = MemoryAdapter::new("xmpp", AddressStyle::Xmpp, &["xmpp.test"]);
        let submitter = broker.context("sip").submitter;
        broker.add_adapter(Arc::new(sip));
        broker.add_adapter(Arc::new(xmpp.clone()));
        broker.start();
        (submitter, xmpp)
    });
    let mut group = c.benchmark_group("runtime");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.bench_function("submit_to_delivery", |b| {
        b.iter(|| {
            rt.block_on(async {
                let target = sink.count() + BATCH;
                let mut tasks = Vec::new();
                for t in 0..4 {
                    let submitter = submitter.clone();
                    let destinations = destinations.clone();
                    let from = from.clone();
                    tasks.push(tokio::spawn(async move {
                        for i in (t..BATCH).step_by(4) {
                            submitter
                                .submit(inbound(i, &destinations, &from))
                                .await
                                .expect("accepted");
                        }
                    }));
                }
                for t in tasks {
                    t.await.expect("task");
                }
                assert_eq!(sink.wait_for(target, Duration::from_secs(60)).await, target);
            });
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
