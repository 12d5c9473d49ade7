//! Address-map reload on a real SIGHUP: the new map applies to new messages, messages in
//! flight are not dropped, and a bad configuration is rejected while the old map stays.
//!
//! This test binary holds one test only: the SIGHUP handler belongs to the whole process.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cpim::event::{Event, Message};
use cpim::Address;
use cpim_broker::testing::{Behavior, MemoryAdapter};
use cpim_broker::{Adapter, AddressStyle, Inbound};
use cpim_gateway::config::Config;
use cpim_gateway::serve::{self, ReloadStatus};

const BASE: &str = r#"
[adapters.sip]
type = "sip"
domains = ["sip.test"]
listen = [{ transport = "udp", address = "127.0.0.1:25060" }]

[adapters.xmpp]
type = "xmpp"
server = "127.0.0.1:25347"
user_domains = ["xmpp.test"]

[[adapters.xmpp.components]]
domain = "gw.xmpp.test"
secret = "s1"

[[adapters.xmpp.components]]
domain = "sip.gw.xmpp.test"
secret = "s2"
"#;

const ALIAS: &str = r#"
[[aliases]]
domain = "sip.test"
on = "xmpp"
as = "sip.gw.xmpp.test"
"#;

fn temp_config(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cpim-reload-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("gateway.toml")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

fn hangup() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

async fn wait_status(
    rx: &mut tokio::sync::watch::Receiver<ReloadStatus>,
    done: impl Fn(&ReloadStatus) -> bool,
) -> ReloadStatus {
    let waited = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| done(s))).await;
    waited
        .expect("reload within 10 s")
        .expect("reloader alive")
        .clone()
}

fn message(text: &str) -> Inbound {
    Inbound::new(
        Event::Message(Message::text(text)),
        Address::parse("sip:alice@sip.test").expect("address"),
        Address::parse("sip:bob@xmpp.test").expect("address"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_address_map_without_dropping_messages() {
    let path = temp_config("sighup");
    write(&path, BASE);
    let config = Config::load(&path).expect("valid config");
    let sip = MemoryAdapter::new("sip", AddressStyle::Sip, &["sip.test"]);
    let xmpp = MemoryAdapter::new("xmpp", AddressStyle::Xmpp, &["xmpp.test"]);
    let mut submitter = None;
    let running = serve::start(&config, |broker| {
        submitter = Some(broker.context("sip").submitter);
        vec![
            Arc::new(sip.clone()) as Arc<dyn Adapter>,
            Arc::new(xmpp.clone()),
        ]
    })
    .expect("started");
    let submitter = submitter.expect("context handed out");
    let (mut status, _task) =
        serve::reload_on_sighup(path.clone(), running.broker.clone()).expect("signal handler");

    // Without an alias, SIP users appear on XMPP in the escaped form.
    submitter.submit(message("before")).await.expect("accepted");
    assert_eq!(xmpp.wait_for(1, Duration::from_secs(5)).await, 1);
    assert_eq!(
        xmpp.received()[0].from.to_string(),
        "alice\\40sip.test@gw.xmpp.test"
    );

    // Messages in flight and queued while the map changes.
    xmpp.set_behavior(Behavior::Stall);
    for i in 0..3 {
        submitter
            .submit(message(&format!("queued {i}")))
            .await
            .expect("accepted");
    }
    write(&path, &format!("{BASE}{ALIAS}"));
    hangup();
    let s = wait_status(&mut status, |s| s.applied == 1).await;
    assert_eq!(s.rejected, 0);
    xmpp.set_behavior(Behavior::Deliver);
    xmpp.release();
    submitter.submit(message("after")).await.expect("accepted");
    assert_eq!(xmpp.wait_for(5, Duration::from_secs(5)).await, 5);
    let got: Vec<(String, String)> = xmpp
        .received()
        .iter()
        .map(|e| match &e.event {
            Event::Message(m) => (
                String::from_utf8_lossy(&m.body).into_owned(),
                e.from.to_string(),
            ),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let escaped = "alice\\40sip.test@gw.xmpp.test".to_owned();
    assert_eq!(
        got,
        [
            ("before".to_owned(), escaped.clone()),
            ("queued 0".to_owned(), escaped.clone()),
            ("queued 1".to_owned(), escaped.clone()),
            ("queued 2".to_owned(), escaped),
            ("after".to_owned(), "alice@sip.gw.xmpp.test".to_owned()),
        ]
    );

    // A bad configuration is rejected; the alias map stays in force.
    write(&path, &format!("{BASE}{ALIAS}\n[gateway]\nmax_hopz = 3\n"));
    hangup();
    let s = wait_status(&mut status, |s| s.rejected == 1).await;
    assert_eq!(s.applied, 1);
    let why = s.last_error.expect("an error is kept");
    assert!(why.contains("max_hopz"), "{why}");
    submitter
        .submit(message("still aliased"))
        .await
        .expect("accepted");
    assert_eq!(xmpp.wait_for(6, Duration::from_secs(5)).await, 6);
    assert_eq!(
        xmpp.received()[5].from.to_string(),
        "alice@sip.gw.xmpp.test"
    );

    running.stop().await;
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    assert_eq!(sip.count(), 0, "no failure went back to the sender");
}
