//! Store and forward, end to end: one `cpim-gateway run` process (spool on, as in the
//! sample configuration) under load from SIPp and an HTTP client (curl), delivering to a
//! SIP phone (a UDP socket), an HTTP receiver (axum) and a real Prosody.
//!
//! - `kill -9` under load, start again: every message that got 202 arrives, under one
//!   gateway id (receivers drop repeats by id), none is lost.
//! - Prosody stopped for 10 s under load: nothing lost, order kept.
//! - The webhook receiver failing for 30 s: nothing lost, order kept.
//!
//! All on loopback, every process stopped by the test.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use cpim_test_support::xmpp as support;

use cpim_test_support::net::wait_until;
use cpim_test_support::sipp;

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use axum::Router;
use tokio::net::UdpSocket;

use common::{free_port, sip_body, sip_header, sip_reply, GatewayProcess};
use sipp::{Sipp, SippOptions, Transport};
use support::{Prosody, ProsodyOpts, XmppClient, COMPONENT};

const TOKEN: &str = "durability-token-0123456789";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cpim-durability-{name}-{}-{}",
        std::process::id(),
        cpim_broker::envelope::unix_now_ms()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

// ---------------------------------------------------------------------------------------
// Far sides.

/// The SIP phone (the gateway's outbound proxy): answers every MESSAGE 200 after
/// `delay` and keeps (Call-ID, body) in arrival order.
#[derive(Clone)]
struct Phone {
    got: Arc<Mutex<Vec<(String, String)>>>,
    addr: SocketAddr,
}

impl Phone {
    async fn start(delay: Duration) -> Phone {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let phone = Phone {
            got: got.clone(),
            addr,
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if !msg.starts_with("MESSAGE ") {
                    continue;
                }
                let call_id = sip_header(&msg, "Call-ID").unwrap_or_default();
                if let Ok(mut g) = got.lock() {
                    g.push((call_id, sip_body(&msg).to_owned()));
                }
                tokio::time::sleep(delay).await;
                let _ = socket
                    .send_to(sip_reply(&msg, 200, "").as_bytes(), from)
                    .await;
            }
        });
        phone
    }

    fn received(&self) -> Vec<(String, String)> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// The application's HTTP receiver: keeps (event id, text) in arrival order; answers
/// 503 while `failing`, each transaction after `delay`.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, String)>>>,
    failing: Arc<AtomicBool>,
    refused: Arc<Mutex<u64>>,
    delay: Duration,
}

async fn receive(
    State(r): State<Receiver>,
    Path(_txn): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    tokio::time::sleep(r.delay).await;
    if r.failing.load(Ordering::SeqCst) {
        if let Ok(mut n) = r.refused.lock() {
            *n += 1;
        }
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if let Ok(mut g) = r.got.lock() {
        for e in json["events"].as_array().into_iter().flatten() {
            if let (Some(id), Some(text)) = (e["id"].as_str(), e["text"].as_str()) {
                g.push((id.to_owned(), text.to_owned()));
            }
        }
    }
    StatusCode::OK
}

impl Receiver {
    async fn start(delay: Duration) -> (Receiver, SocketAddr) {
        let r = Receiver {
            delay,
            ..Receiver::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new()
            .route("/hooks/transactions/{txn}", put(receive))
            .with_state(r.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        (r, addr)
    }

    fn received(&self) -> Vec<(String, String)> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// Load.

/// SIPp sends `calls` MESSAGEs "`body` N" to `user@domain` at `rate` per second.
fn sipp_load(gw: u16, user: &str, domain: &str, body: &str, calls: u32, rate: f64) -> Sipp {
    assert!(Sipp::available(), "sipp is missing: run scripts/setup.sh");
    Sipp::start(
        "uac_message_numbered.xml",
        SippOptions::uac(SocketAddr::from(([127, 0, 0, 1], gw)))
            .transport(Transport::Udp)
            .service(user)
            .var("to_domain", domain)
            .var("from_user", "alice")
            .var("from_domain", "sip.test")
            .var("body", body)
            .calls(calls)
            .rate(rate)
            .timeout(Duration::from_secs(120)),
    )
    .expect("sipp starts")
}

/// Waits for SIPp to end; the call numbers it logged as accepted (202), in call order:
/// the order SIPp sent them (one call after the other at its rate) and so the order the
/// gateway accepted them in — its 202s may come back in another order, as each one is
/// sent when its commit is done.
async fn sipp_accepted(s: Sipp) -> Vec<u32> {
    let (report, _sipp) = tokio::task::spawn_blocking(move || s.wait_any(Duration::from_secs(150)))
        .await
        .expect("join")
        .expect("sipp ends");
    let mut accepted: Vec<u32> = report
        .log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("accepted ")?.trim().parse().ok())
        .collect();
    accepted.sort_unstable();
    accepted
}

/// The webhook client: POSTs `count` messages "w N" to `to`, one after the other, each
/// with its own Idempotency-Key, repeating one (same key) until it gets 202 — as an
/// application does when the gateway is unreachable. Returns how many answers were not
/// 202 on the way.
async fn webhook_load(api: u16, to: &'static str, count: u32, pause: Duration) -> u32 {
    let mut not_accepted = 0;
    for i in 0..count {
        let body =
            serde_json::json!({ "from": "bot@app.test", "to": to, "text": format!("w {i}") });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = common::post_message(api, TOKEN, &body, Some(&format!("w-{i}"))).await;
            if status == "202" {
                break;
            }
            not_accepted += 1;
            assert!(Instant::now() < deadline, "w {i} never accepted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(pause).await;
    }
    not_accepted
}

// ---------------------------------------------------------------------------------------
// Checks.

/// Per message text, the ids it arrived under, in arrival order.
fn by_text(got: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, text) in got {
        m.entry(text.clone()).or_default().push(id.clone());
    }
    m
}

/// Every accepted `prefix N` arrived under exactly one id (copies carry the same id, so
/// a receiver drops them); returns the number of repeated copies.
fn check_once(what: &str, got: &[(String, String)], prefix: &str, accepted: &[u32]) -> usize {
    let seen = by_text(got);
    let mut copies = 0;
    for n in accepted {
        let text = format!("{prefix} {n}");
        let ids = seen
            .get(&text)
            .unwrap_or_else(|| panic!("{what}: accepted `{text}` was never delivered"));
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "{what}: `{text}` arrived under different ids {ids:?} (a true duplicate)"
        );
        copies += ids.len() - 1;
    }
    copies
}

/// The order in which the texts first arrived, as numbers.
fn first_arrivals(got: &[(String, String)], prefix: &str) -> Vec<u32> {
    let mut seen = HashMap::new();
    let mut order = Vec::new();
    for (_, text) in got {
        let Some(n) = text
            .strip_prefix(prefix)
            .and_then(|t| t.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if seen.insert(n, ()).is_none() {
            order.push(n);
        }
    }
    order
}

fn metric(admin: u16, name: &str) -> Option<f64> {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "2",
            &format!("http://127.0.0.1:{admin}/metrics"),
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name).then(|| v.parse().ok())?
    })
}

fn gateway_config(sip: u16, admin: u16, extra: &str) -> String {
    format!(
        r#"[gateway]
data_dir = "data"

[admin]
listen = "127.0.0.1:{admin}"

[adapters.sip]
type = "sip"
domains = ["sip.test"]
listen = [{{ transport = "udp", address = "127.0.0.1:{sip}" }}]
{extra}"#
    )
}

/// The webhook adapter on `api` with the app `demo` (`app.test`) posting to `hooks`.
fn webhook_section(api: u16, hooks: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[adapters.webhook]
type = "webhook"
listen = "127.0.0.1:{api}"
{extra}
[[adapters.webhook.apps]]
name = "demo"
domains = ["app.test"]
token = "{TOKEN}"
url = "http://{hooks}/hooks"
"#
    )
}

const READY_SIP: &str = "SIP listening";
const READY_WEBHOOK: &str = "webhook API listening";

// ---------------------------------------------------------------------------------------
// Tests.

/// Under a steady load from SIPp (SIP → HTTP app) and the webhook client (HTTP app →
/// SIP phone), the gateway is killed with SIGKILL and started again on the same spool:
/// every message that got 202 arrives at its far side under one gateway id; the webhook
/// client's messages (sent one after the other) arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_every_accepted_message_arrives_once() {
    let dir = temp_dir("kill9");
    // Slower far sides than the load: a backlog is waiting in the spool at the kill.
    let phone = Phone::start(Duration::from_millis(30)).await;
    let (app, hooks) = Receiver::start(Duration::from_millis(20)).await;
    let (sip, api, admin) = (free_port(), free_port(), free_port());
    let config = gateway_config(
        sip,
        admin,
        &format!(
            "outbound_proxy = \"sip:{};transport=udp\"\n{}",
            phone.addr,
            webhook_section(api, hooks, "")
        ),
    );
    let mut gw = GatewayProcess::start(&dir, &config, &[READY_SIP, READY_WEBHOOK]);
    let sipp = sipp_load(sip, "bob", "app.test", "s", 600, 100.0);
    let client = tokio::spawn(webhook_load(
        api,
        "sip:carol@sip.test",
        150,
        Duration::from_millis(20),
    ));

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kill = (app.received().len(), phone.received().len());
    gw.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| gw.restart(&[READY_SIP, READY_WEBHOOK, "spool recovered"]));
    let recovered: usize = gw
        .log()
        .iter()
        .find_map(|l| {
            l.split("queued=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_default();
    assert!(
        recovered > 20,
        "a backlog was in the spool at the kill: {recovered}"
    );

    let refused_web = client.await.expect("webhook client");
    let accepted_sip = sipp_accepted(sipp).await;
    assert!(
        accepted_sip.len() > 500,
        "SIPp retransmits through the restart: {} of 600 accepted",
        accepted_sip.len()
    );
    let web: Vec<u32> = (0..150).collect();
    wait_until(
        "every accepted message at its far side",
        Duration::from_secs(60),
        || {
            let texts = by_text(&app.received());
            let calls = phone.received();
            accepted_sip
                .iter()
                .all(|n| texts.contains_key(&format!("s {n}")))
                && web
                    .iter()
                    .all(|n| calls.iter().any(|(_, b)| *b == format!("w {n}")))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let copies_app = check_once("SIP → app", &app.received(), "s", &accepted_sip);
    let at_phone: Vec<(String, String)> = phone.received();
    let copies_phone = check_once("app → SIP", &at_phone, "w", &web);
    let order = first_arrivals(&at_phone, "w ");
    assert_eq!(order, web, "the webhook client's messages arrive in order");
    // Everything delivered: the spool is empty again.
    wait_until("an empty spool", Duration::from_secs(10), || {
        metric(admin, "cpim_spool_envelopes") == Some(0.0)
    })
    .await;
    eprintln!(
        "kill -9 under load: before the kill {before_kill:?} delivered (app, phone), {recovered} recovered from the spool; \
         SIP accepted {} of 600, webhook 150 of 150 ({refused_web} answers were not 202 on the way); \
         repeated copies (same id, dropped by the receiver): app {copies_app}, phone {copies_phone}",
        accepted_sip.len()
    );
    assert_eq!(gw.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Prosody killed and down for 10 s while SIPp sends to an XMPP user: the gateway keeps
/// accepting, the messages wait in the spool, and when Prosody is back every one is
/// delivered (to the user's offline storage), in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_down_for_10_s_under_load_loses_nothing() {
    let mut prosody = Prosody::start(ProsodyOpts {
        extra_modules: vec!["offline".to_owned()],
        ..ProsodyOpts::default()
    })
    .await;
    prosody.register("bob", "bob-pass").await;
    let dir = temp_dir("prosody");
    let (sip, admin) = (free_port(), free_port());
    let config = gateway_config(
        sip,
        admin,
        &format!(
            r#"
[adapters.xmpp]
type = "xmpp"
server = "{server}"
user_domains = ["xmpp.test"]
message_type = "chat"
ping_interval_secs = 1

[[adapters.xmpp.components]]
domain = "{COMPONENT}"
secret = "{secret}"
"#,
            server = prosody.component_addr(),
            secret = prosody.component_secret(COMPONENT),
        ),
    );
    let mut gw = GatewayProcess::start(&dir, &config, &[READY_SIP, "component connected"]);
    let sipp = sipp_load(sip, "bob", "xmpp.test", "x", 500, 40.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // SIGKILL: what Prosody had read but not yet handled is gone with it, so only what
    // the gateway keeps until confirmed (and writes again) saves those messages.
    prosody.kill();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    prosody.restart().await;
    let outage = down.elapsed();
    let accepted = sipp_accepted(sipp).await;
    assert_eq!(
        accepted.len(),
        500,
        "the gateway accepts while Prosody is down"
    );

    let mut bob = XmppClient::connect(&prosody, "bob@xmpp.test", "bob-pass").await;
    let mut got: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while by_text(&got).len() < accepted.len() && Instant::now() < deadline {
        if let Some(e) = bob.next_event(Duration::from_secs(1)).await {
            if e.is_chat_body() {
                let xml = e.xml().to_owned();
                let id = support::attr(&xml, "id").unwrap_or_default().to_owned();
                got.push((id, e.get("body").unwrap_or_default().to_owned()));
            }
        }
    }
    let copies = check_once("SIP → XMPP", &got, "x", &accepted);
    assert_eq!(first_arrivals(&got, "x "), accepted, "in acceptance order");
    eprintln!(
        "Prosody down {:.1} s under load: {} of 500 accepted and delivered, {copies} repeated copies (same stanza id)",
        outage.as_secs_f64(),
        accepted.len()
    );
    bob.close().await;
    assert_eq!(gw.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The application's receiver answers 503 for 30 s while SIPp sends to it: nothing is
/// lost, and the events arrive in the order they were accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receiver_failing_for_30_s_loses_nothing_and_keeps_order() {
    let dir = temp_dir("webhook");
    let (app, hooks) = Receiver::start(Duration::ZERO).await;
    let (sip, api, admin) = (free_port(), free_port(), free_port());
    let config = gateway_config(
        sip,
        admin,
        &webhook_section(api, hooks, "give_up_secs = 300\n"),
    );
    let mut gw = GatewayProcess::start(&dir, &config, &[READY_SIP, READY_WEBHOOK]);
    let sipp = sipp_load(sip, "bob", "app.test", "h", 700, 20.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let waiting = metric(admin, "cpim_spool_envelopes").unwrap_or_default();
    app.failing.store(false, Ordering::SeqCst);
    let accepted = sipp_accepted(sipp).await;
    assert_eq!(accepted.len(), 700);
    wait_until(
        "every accepted event at the app",
        Duration::from_secs(60),
        || by_text(&app.received()).len() >= accepted.len(),
    )
    .await;
    let got = app.received();
    let copies = check_once("SIP → app", &got, "h", &accepted);
    assert_eq!(first_arrivals(&got, "h "), accepted, "in acceptance order");
    let refused = app.refused.lock().map(|n| *n).unwrap_or_default();
    assert!(refused > 0, "the receiver did refuse");
    assert!(waiting > 100.0, "messages waited in the spool: {waiting}");
    eprintln!(
        "webhook receiver failing 30 s: {} of 700 delivered in order, {refused} transactions refused, \
         {waiting} messages in the spool at the end of the outage, {copies} repeated copies",
        accepted.len()
    );
    assert_eq!(gw.terminate(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
