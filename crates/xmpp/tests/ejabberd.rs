//! The XMPP adapter against a real ejabberd whose component listener serves both of the
//! gateway's component domains (`hosts:` with a password per domain, ejabberd's
//! documented set-up for several domains on one port). With `global_routes` at its
//! default, every component connection on that listener is a route for every one of
//! those domains, and ejabberd picks one at random for each stanza (issue 13): answers,
//! pings and messages for one domain arrive on the other domain's connection.
//!
//! The far side is the broker's in-memory adapter standing in for SIP (`sip.test`, seen
//! from XMPP as `sip.gw.xmpp.test`).

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

mod support;

use std::sync::Arc;
use std::time::Duration;

use cpim::event::{Event, Message};
use cpim::Address;
use cpim_broker::core::CoreConfig;
use cpim_broker::testing::MemoryAdapter;
use cpim_broker::{AddressStyle, Broker, BrokerHandle, Inbound, Submitter};
use cpim_xmpp::translate::OutboundOptions;
use cpim_xmpp::{XmppAdapter, XmppConfig};

use cpim_test_support::ejabberd::{Ejabberd, EjabberdOpts};
use support::{MessageExtras, XmppClient, COMPONENT, COMPONENT_SECRET, TIMEOUT};

const ALIAS: &str = "sip.gw.xmpp.test";
const ALIAS_SECRET: &str = "alias-secret";

struct Gateway {
    sip: MemoryAdapter,
    from_sip: Submitter,
    broker: BrokerHandle,
}

fn opts(global_routes: bool) -> EjabberdOpts {
    EjabberdOpts {
        components: vec![
            (COMPONENT.into(), COMPONENT_SECRET.into()),
            (ALIAS.into(), ALIAS_SECRET.into()),
        ],
        global_routes,
    }
}

async fn gateway(ejabberd: &Ejabberd) -> Gateway {
    let (mut broker, handle) = Broker::new(
        CoreConfig::default(),
        Arc::new(support::gateway_map(Some(ALIAS))),
    );
    let xmpp = XmppAdapter::start(
        XmppConfig {
            name: "xmpp".into(),
            server: ejabberd.component_addr().to_string(),
            components: vec![
                (
                    COMPONENT.into(),
                    ejabberd.component_secret(COMPONENT).into(),
                ),
                (ALIAS.into(), ejabberd.component_secret(ALIAS).into()),
            ],
            user_domains: vec!["xmpp.test".into()],
            outbound: OutboundOptions::default(),
            ping_interval: Duration::from_secs(1),
            limits: Default::default(),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        },
        broker.context("xmpp"),
    );
    let sip = MemoryAdapter::new("sip", AddressStyle::Sip, &["sip.test"]);
    let from_sip = broker.context("sip").submitter;
    broker.add_adapter(xmpp);
    broker.add_adapter(Arc::new(sip.clone()));
    broker.start();
    let gw = Gateway {
        sip,
        from_sip,
        broker: handle,
    };
    gw.wait_connected().await;
    gw
}

impl Gateway {
    async fn wait_connected(&self) {
        let metrics = self.broker.metrics().adapter("xmpp");
        for _ in 0..200 {
            if metrics.is_connected() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the XMPP adapter did not connect");
    }

    /// The bodies the far side received, in order.
    fn far_bodies(&self) -> Vec<String> {
        self.sip
            .received()
            .into_iter()
            .filter_map(|e| match &e.event {
                Event::Message(m) => Some(String::from_utf8_lossy(&m.body).into_owned()),
                _ => None,
            })
            .collect()
    }

    async fn send_from_sip(&self, text: &str, to: &str) {
        let inbound = Inbound::new(
            Event::Message(Message::text(text)),
            Address::parse("sip:bob@sip.test").expect("address"),
            Address::parse(to).expect("address"),
        );
        self.from_sip.submit(inbound).await.expect("accepted");
    }
}

/// Order, liveness and confirmations on a listener that routes both domains to both
/// connections. Before the fix: a third of the messages to the alias arrived out of
/// order, the links dropped when their ping answers went to the other connection, and
/// the confirmation barrier of a link never came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_listener_keeps_order_and_both_links_up() {
    order_and_liveness(true).await;
}

/// With `global_routes: false` each connection is a route for its own domain only (as
/// with Prosody): each domain keeps its own stream, and the same holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_listener_without_global_routes_keeps_order_and_both_links_up() {
    order_and_liveness(false).await;
}

async fn order_and_liveness(global_routes: bool) {
    let ejabberd = Ejabberd::start(opts(global_routes)).await;
    let gw = gateway(&ejabberd).await;
    let mut alice = XmppClient::connect(&ejabberd, "alice@xmpp.test", "alice-pass").await;

    // XMPP → SIP: 300 messages to one SIP user through the alias domain.
    const N: usize = 300;
    for i in 0..N {
        alice
            .send_message(
                &format!("bob@{ALIAS}"),
                format!("m{i}").as_str(),
                MessageExtras::default(),
            )
            .await;
    }
    let expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    let mut got = Vec::new();
    for _ in 0..200 {
        got = gw.far_bodies();
        if got.len() >= N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out_of_order = got.windows(2).filter(|w| w[0] > w[1]).count();
    assert_eq!(
        got,
        expected,
        "{out_of_order} out of order\n{}",
        ejabberd.diagnostics()
    );

    // SIP → XMPP: in order too, from both domains' users.
    for i in 0..50 {
        gw.send_from_sip(&format!("s{i}"), "sip:alice@xmpp.test")
            .await;
    }
    for i in 0..50 {
        let ev = alice.expect(|ev| ev.get("body").is_some(), TIMEOUT).await;
        assert_eq!(ev.get("body"), Some(format!("s{i}").as_str()));
    }

    // With global routes, the alias rides on the first domain's stream (one stream keeps
    // ejabberd's order); without, it has its own. Counted on the sockets: ejabberd's log
    // is written late.
    assert_eq!(
        ejabberd.component_connections(),
        if global_routes { 1 } else { 2 },
        "{}",
        ejabberd.diagnostics()
    );

    // Idle for several read timeouts (twice the 1 s ping interval): both links stay up
    // although ejabberd answers each link's pings on either connection.
    let metrics = gw.broker.metrics().adapter("xmpp");
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            metrics.is_connected(),
            "a component link dropped\n{}",
            ejabberd.diagnostics()
        );
    }
}

/// A restart of ejabberd: what the server confirmed is not written again on the new
/// streams. Before the fix a link whose barrier answer went to the other connection
/// kept everything as unconfirmed and wrote it all again after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_only_unconfirmed_stanzas_are_written_again() {
    let mut ejabberd = Ejabberd::start(opts(true)).await;
    let gw = gateway(&ejabberd).await;
    let mut alice = XmppClient::connect(&ejabberd, "alice@xmpp.test", "alice-pass").await;
    // ejabberd handles a session's stanzas in order: once this ping is answered, alice's
    // initial presence is in, and messages reach her session rather than her offline
    // store (which would hand them over later, out of order with the next ones).
    session_ready(&mut alice).await;
    for i in 0..40 {
        gw.send_from_sip(&format!("before{i}"), "sip:alice@xmpp.test")
            .await;
    }
    for i in 0..40 {
        let ev = alice.expect(|ev| ev.get("body").is_some(), TIMEOUT).await;
        assert_eq!(ev.get("body"), Some(format!("before{i}").as_str()));
    }
    // Every barrier answered (several ping intervals).
    tokio::time::sleep(Duration::from_secs(3)).await;
    alice.close().await;

    ejabberd.restart().await;
    gw.wait_connected().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    gw.send_from_sip("after", "sip:alice@xmpp.test").await;

    // alice was offline during the restart: ejabberd stores what reached it for her.
    let mut alice = XmppClient::connect(&ejabberd, "alice@xmpp.test", "alice-pass").await;
    let ev = alice.expect(|ev| ev.get("body").is_some(), TIMEOUT).await;
    assert_eq!(
        ev.get("body"),
        Some("after"),
        "a confirmed stanza was written again\n{}",
        ejabberd.diagnostics()
    );
    alice
        .expect_none(|ev| ev.get("body").is_some(), Duration::from_millis(700))
        .await;
}

/// Waits until the server has handled everything the client sent so far (an XEP-0199
/// ping to the server, answered).
async fn session_ready(client: &mut XmppClient) {
    client
        .send_raw("<iq type='get' id='ready-1' to='xmpp.test'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    client
        .expect(
            |ev| ev.kind() == "iq" && ev.get("id") == Some("ready-1"),
            TIMEOUT,
        )
        .await;
}
