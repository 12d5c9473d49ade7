//! End to end: one `cpim-gateway run --config FILE` process between a real Prosody (XMPP
//! users bob and carol), SIP peers (SIPp as the sending UA; a SIP phone on a UDP/TCP
//! socket as the outbound proxy the gateway sends to) and an HTTP application (curl as
//! the client, an axum receiver for the signed transactions). All on loopback, started
//! and stopped by the test.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use cpim_test_support::xmpp as support;

use cpim_test_support::sipp;

mod common;

use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use common::{free_port, sip_header as header, sip_reply as reply, GatewayProcess};
use sipp::{Sipp, SippOptions, Transport};
use support::{MessageExtras, Prosody, ProsodyOpts, XmppClient, COMPONENT, TIMEOUT};

const TOKEN: &str = "e2e-token-0123456789";
const ALIAS: &str = "sip.gw.xmpp.test";
const ALIAS_SECRET: &str = "alias-secret";

// ---------------------------------------------------------------------------------------
// The SIP phone: the gateway's outbound proxy. Answers MESSAGE with the next scripted
// status (200 by default), SUBSCRIBE with 200 and a NOTIFY (open), records everything.

#[derive(Default)]
struct PhoneState {
    requests: Vec<String>,
    statuses: Vec<u16>,
}

#[derive(Clone)]
struct Phone {
    state: Arc<Mutex<PhoneState>>,
    addr: SocketAddr,
}

fn notify_for(subscribe: &str, phone: SocketAddr) -> Option<(String, SocketAddr)> {
    let contact = header(subscribe, "Contact")?;
    let target = contact
        .trim_start_matches('<')
        .split('>')
        .next()?
        .to_owned();
    let hostport = target.split('@').nth(1)?.split(';').next()?;
    let gw: SocketAddr = hostport.parse().ok()?;
    let to = header(subscribe, "To")?;
    let from = header(subscribe, "From")?;
    let call_id = header(subscribe, "Call-ID")?;
    let body = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{}\"><tuple id=\"p\"><status><basic>open</basic></status><note>at my desk</note></tuple></presence>",
        to.trim_start_matches('<').split('>').next().unwrap_or_default()
    );
    Some((
        format!(
            "NOTIFY {target} SIP/2.0\r\nVia: SIP/2.0/UDP {phone};branch=z9hG4bKphone{}\r\nMax-Forwards: 70\r\n\
             From: {to};tag=phone1\r\nTo: {from}\r\nCall-ID: {call_id}\r\nCSeq: 1 NOTIFY\r\n\
             Event: presence\r\nSubscription-State: active;expires=600\r\n\
             Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{body}",
            call_id.len(),
            body.len()
        ),
        gw,
    ))
}

impl Phone {
    async fn start() -> Phone {
        let port = free_port();
        let udp = Arc::new(UdpSocket::bind(("127.0.0.1", port)).await.expect("udp"));
        let tcp = TcpListener::bind(("127.0.0.1", port)).await.expect("tcp");
        let phone = Phone {
            state: Arc::new(Mutex::new(PhoneState::default())),
            addr: udp.local_addr().expect("addr"),
        };
        let p = phone.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.starts_with("SIP/2.0") {
                    continue;
                }
                let (answer, notify) = p.answer(&text);
                let _ = udp.send_to(answer.as_bytes(), from).await;
                if let Some((notify, to)) = notify {
                    let _ = udp.send_to(notify.as_bytes(), to).await;
                }
            }
        });
        let p = phone.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let p = p.clone();
                tokio::spawn(async move {
                    let mut acc: Vec<u8> = Vec::new();
                    let mut buf = vec![0u8; 65_536];
                    loop {
                        while let Some(end) = acc.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&acc[..end]).into_owned();
                            let len: usize = header(&format!("{head}\r\n\r\n"), "Content-Length")
                                .and_then(|l| l.parse().ok())
                                .unwrap_or(0);
                            if acc.len() < end + 4 + len {
                                break;
                            }
                            let msg: Vec<u8> = acc.drain(..end + 4 + len).collect();
                            let text = String::from_utf8_lossy(&msg).into_owned();
                            let (answer, _) = p.answer(&text);
                            let _ = stream.write_all(answer.as_bytes()).await;
                        }
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => acc.extend_from_slice(&buf[..n]),
                        }
                    }
                });
            }
        });
        phone
    }

    fn answer(&self, request: &str) -> (String, Option<(String, SocketAddr)>) {
        let mut state = self.state.lock().expect("lock");
        state.requests.push(request.to_owned());
        if request.starts_with("SUBSCRIBE ") {
            let expires = header(request, "Expires").unwrap_or_else(|| "600".into());
            let notify = (expires != "0")
                .then(|| notify_for(request, self.addr))
                .flatten();
            return (
                reply(request, 200, &format!("Expires: {expires}\r\n")),
                notify,
            );
        }
        let status = if state.statuses.is_empty() {
            200
        } else {
            state.statuses.remove(0)
        };
        (reply(request, status, ""), None)
    }

    fn script(&self, statuses: &[u16]) {
        self.state
            .lock()
            .expect("lock")
            .statuses
            .extend_from_slice(statuses);
    }

    fn requests(&self, method: &str) -> Vec<String> {
        self.state
            .lock()
            .expect("lock")
            .requests
            .iter()
            .filter(|r| r.starts_with(&format!("{method} ")))
            .cloned()
            .collect()
    }

    async fn wait_message(&self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(m) = self.requests("MESSAGE").into_iter().find(|m| {
                m.split_once("\r\n\r\n")
                    .is_some_and(|(_, b)| b.starts_with(needle))
            }) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no MESSAGE with {needle:?} at the phone: {:#?}",
                self.requests("MESSAGE")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The HTTP application.

#[derive(Default)]
struct Received {
    events: Vec<serde_json::Value>,
}

async fn receive(
    State(store): State<Arc<Mutex<Received>>>,
    Path(_txn): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    // The app's far-side failure: it refuses anything that says so.
    let refuse = json["events"].as_array().is_some_and(|events| {
        events
            .iter()
            .any(|e| e["text"].as_str().is_some_and(|t| t.contains("reject me")))
    });
    if refuse {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if let Ok(mut s) = store.lock() {
        s.events
            .extend(json["events"].as_array().cloned().unwrap_or_default());
    }
    StatusCode::OK
}

struct App {
    store: Arc<Mutex<Received>>,
    api: u16,
}

impl App {
    fn post(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
            .arg(format!("http://127.0.0.1:{}{path}", self.api))
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .args([
                "-H",
                "Content-Type: application/json",
                "-d",
                &body.to_string(),
            ])
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    async fn wait_event(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let found = self
                .store
                .lock()
                .ok()
                .and_then(|s| s.events.iter().find(|e| pred(e)).cloned());
            if let Some(e) = found {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} at the app: {:#?}",
                self.store
                    .lock()
                    .map(|s| s.events.clone())
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The gateway.

struct Gateway {
    process: GatewayProcess,
    sip: u16,
}

fn start_gateway(dir: &FsPath, config: &str, ready: &[&str]) -> Gateway {
    let process = GatewayProcess::start(dir, config, ready);
    let sip = config
        .split("transport = \"udp\", address = \"127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|p| p.parse().ok())
        .expect("sip port in config");
    Gateway { process, sip }
}

fn uac(gw: u16, to_user: &str, to_domain: &str, from_user: &str, body: &str) -> Sipp {
    Sipp::start(
        "uac_message.xml",
        SippOptions::uac(SocketAddr::from(([127, 0, 0, 1], gw)))
            .transport(Transport::Udp)
            .timeout(Duration::from_secs(20))
            .service(to_user)
            .var("to_domain", to_domain)
            .var("from_user", from_user)
            .var("from_domain", "sip.test")
            .var("body", body)
            .var("expect", "202")
            .calls(1),
    )
    .expect("sipp starts")
}

async fn finish(s: Sipp) {
    let result = tokio::task::spawn_blocking(move || s.wait(Duration::from_secs(30)))
        .await
        .expect("join");
    result.expect("SIPp got 202");
}

struct World {
    prosody: Prosody,
    phone: Phone,
    app: App,
    gw: Gateway,
    receiver: tokio::task::JoinHandle<()>,
}

async fn world() -> World {
    assert!(Sipp::available(), "sipp is missing: run scripts/setup.sh");
    let prosody = Prosody::start(ProsodyOpts::default().component(ALIAS, ALIAS_SECRET)).await;
    for user in ["bob", "carol", "dave"] {
        prosody.register(user, &format!("{user}-pass")).await;
    }
    let phone = Phone::start().await;
    let store = Arc::new(Mutex::new(Received::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hooks = listener.local_addr().expect("addr");
    let router = Router::new()
        .route("/hooks/transactions/{txn}", put(receive))
        .with_state(store.clone());
    let receiver = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let (sip, api) = (free_port(), free_port());
    let dir = prosody.dir().join("gw");
    std::fs::create_dir_all(&dir).expect("dir");
    let config = format!(
        r#"[adapters.sip]
type = "sip"
domains = ["sip.test"]
listen = [
  {{ transport = "udp", address = "127.0.0.1:{sip}" }},
  {{ transport = "tcp", address = "127.0.0.1:{sip}" }},
]
outbound_proxy = "sip:{phone};transport=udp"
# The default policy (`contacts`) and the app's bots always allowed.
presence_allow = ["*@app.test"]

[adapters.xmpp]
type = "xmpp"
server = "{server}"
user_domains = ["xmpp.test"]
message_type = "chat"
ping_interval_secs = 5

[[adapters.xmpp.components]]
domain = "{COMPONENT}"
secret = "{secret}"

[[adapters.xmpp.components]]
domain = "{ALIAS}"
secret = "{ALIAS_SECRET}"

[adapters.webhook]
type = "webhook"
listen = "127.0.0.1:{api}"
give_up_secs = 2

[[adapters.webhook.apps]]
name = "demo"
domains = ["app.test"]
token = "{TOKEN}"
url = "http://{hooks}/hooks"

[[aliases]]
domain = "sip.test"
on = "xmpp"
as = "{ALIAS}"

[[users]]
identity = "carol@xmpp.test"
on = "sip"
as = "sip:+15551234567@carrier.test"
"#,
        phone = phone.addr,
        server = prosody.component_addr(),
        secret = prosody.component_secret(COMPONENT),
    );
    let gw = start_gateway(
        &dir,
        &config,
        &[
            "component connected",
            "webhook API listening",
            "SIP listening",
        ],
    );
    // Both component streams up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    World {
        prosody,
        phone,
        app: App { store, api },
        gw,
        receiver,
    }
}

const HELLO: &str = "مرحبا 👋 שלום — héllo";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_messages_in_all_six_directions_with_replies() {
    let w = world().await;
    let mut bob = XmppClient::connect(&w.prosody, "bob@xmpp.test", "bob-pass").await;

    // 1. SIP → XMPP (SIPp), non-ASCII; reply XMPP → SIP.
    finish(uac(
        w.gw.sip,
        "bob",
        "xmpp.test",
        "alice",
        &format!("1 {HELLO}"),
    ))
    .await;
    let got = bob
        .expect(
            |e| e.get("body").is_some_and(|b| b.starts_with("1 ")),
            TIMEOUT,
        )
        .await;
    assert_eq!(got.get("body"), Some(format!("1 {HELLO}").as_str()));
    assert_eq!(got.sender_bare(), Some("alice@sip.gw.xmpp.test"));
    bob.send_message(
        "alice@sip.gw.xmpp.test",
        "2 reply from bob ✓",
        MessageExtras::default(),
    )
    .await;
    let m = w.phone.wait_message("2 reply from bob").await;
    assert!(
        m.starts_with("MESSAGE sip:alice@sip.test SIP/2.0\r\n"),
        "{m}"
    );
    assert!(
        header(&m, "From").is_some_and(|f| f.contains("sip:bob@xmpp.test")),
        "{m}"
    );

    // 2. SIP → webhook (SIPp); reply webhook → SIP.
    finish(uac(w.gw.sip, "bot", "app.test", "alice", "3 hi bot")).await;
    let e = w
        .app
        .wait_event("the SIP message", |e| {
            e["type"] == "message" && e["text"] == "3 hi bot"
        })
        .await;
    assert_eq!(e["from"], "im:alice@sip.test");
    assert_eq!(e["to"], "im:bot@app.test");
    let (status, body) = w.app.post(
        "/v1/messages",
        &serde_json::json!({"from": "im:bot@app.test", "to": "sip:alice@sip.test", "text": format!("4 {HELLO}")}),
    );
    assert_eq!(status, 202, "{body}");
    let m = w.phone.wait_message("4 ").await;
    assert!(m.contains(HELLO), "{m}");
    assert!(
        header(&m, "From").is_some_and(|f| f.contains("sip:bot@app.test")),
        "{m}"
    );

    // 3. webhook → XMPP; reply XMPP → webhook.
    let (status, body) = w.app.post(
        "/v1/messages",
        &serde_json::json!({"from": "im:bot@app.test", "to": "xmpp:bob@xmpp.test", "text": "5 from the app"}),
    );
    assert_eq!(status, 202, "{body}");
    let got = bob
        .expect(|e| e.get("body") == Some("5 from the app"), TIMEOUT)
        .await;
    assert_eq!(got.sender_bare(), Some("bot\\40app.test@gw.xmpp.test"));
    bob.send_message(
        "bot\\40app.test@gw.xmpp.test",
        "6 reply to the app",
        MessageExtras::default(),
    )
    .await;
    let e = w
        .app
        .wait_event("the XMPP reply", |e| {
            e["type"] == "message" && e["text"] == "6 reply to the app"
        })
        .await;
    assert!(
        e["from"]
            .as_str()
            .is_some_and(|f| f.starts_with("im:bob@xmpp.test")),
        "{e}"
    );

    // 4. A SIP user whose name needs XEP-0106 escaping, and a per-user mapped address.
    finish(uac(
        w.gw.sip,
        "bob",
        "xmpp.test",
        "d'artagnan",
        "7 escaped sender",
    ))
    .await;
    let got = bob
        .expect(|e| e.get("body") == Some("7 escaped sender"), TIMEOUT)
        .await;
    assert_eq!(got.sender_bare(), Some("d\\27artagnan@sip.gw.xmpp.test"));
    let mut carol = XmppClient::connect(&w.prosody, "carol@xmpp.test", "carol-pass").await;
    finish(uac(
        w.gw.sip,
        "+15551234567",
        "carrier.test",
        "alice",
        "8 to carol by number",
    ))
    .await;
    carol
        .expect(|e| e.get("body") == Some("8 to carol by number"), TIMEOUT)
        .await;
    carol
        .send_message(
            "alice@sip.gw.xmpp.test",
            "9 carol answers",
            MessageExtras::default(),
        )
        .await;
    let m = w.phone.wait_message("9 carol answers").await;
    assert!(
        header(&m, "From").is_some_and(|f| f.contains("sip:+15551234567@carrier.test")),
        "{m}"
    );

    // 5. Larger than the SIP UDP limit: over TCP (RFC 3428 §8).
    let big = format!("10 {}", "ü".repeat(1000));
    bob.send_message(
        "alice@sip.gw.xmpp.test",
        big.as_str(),
        MessageExtras::default(),
    )
    .await;
    let m = w.phone.wait_message("10 üüü").await;
    assert!(
        header(&m, "Via").is_some_and(|v| v.starts_with("SIP/2.0/TCP")),
        "{m}"
    );
    assert!(m.ends_with(&big));

    // 6. Failures on each far side reach the sender in its own protocol.
    // SIP far side: 404 → an XMPP error to bob.
    w.phone.script(&[404]);
    bob.send_message(
        "ghost@sip.gw.xmpp.test",
        "11 to nobody",
        MessageExtras::default(),
    )
    .await;
    let err = bob
        .expect(
            |e| {
                e.get("type") == Some("error")
                    || e.xml().contains("type=\"error\"")
                    || e.xml().contains("type='error'")
            },
            TIMEOUT,
        )
        .await;
    assert!(err.xml().contains("item-not-found"), "{err}");
    // XMPP far side: no such user → the app hears `failed`.
    let (status, body) = w.app.post(
        "/v1/messages",
        &serde_json::json!({"from": "im:bot@app.test", "to": "xmpp:nobody@xmpp.test", "text": "12 into the void"}),
    );
    assert_eq!(status, 202, "{body}");
    let id: serde_json::Value = serde_json::from_str(&body).expect("json");
    let failed = w
        .app
        .wait_event("the failure", |e| {
            e["type"] == "notification" && e["message_id"] == id["id"] && e["status"] == "failed"
        })
        .await;
    assert!(failed["condition"].is_string(), "{failed}");
    // Issue 13: written as every other event writes addresses (`im:`), not as the app
    // wrote the recipient.
    assert_eq!(failed["from"], "im:nobody@xmpp.test", "{failed}");
    assert_eq!(failed["to"], "im:bot@app.test", "{failed}");
    // Unroutable: SIP 404 before anything is accepted.
    let unroutable = Sipp::start(
        "uac_message.xml",
        SippOptions::uac(SocketAddr::from(([127, 0, 0, 1], w.gw.sip)))
            .transport(Transport::Udp)
            .timeout(Duration::from_secs(20))
            .service("x")
            .var("to_domain", "nowhere.test")
            .var("from_user", "alice")
            .var("from_domain", "sip.test")
            .var("body", "13 lost")
            .var("expect", "404")
            .calls(1),
    )
    .expect("sipp");
    finish(unroutable).await;
    // Webhook far side: the app's URL keeps failing; after the give-up time the XMPP
    // sender gets an error stanza.
    bob.send_message(
        "bot\\40app.test@gw.xmpp.test",
        "15 reject me",
        MessageExtras::default(),
    )
    .await;
    let err = bob
        .expect(
            |e| {
                e.xml().contains("15 reject me")
                    || (e.sender_bare() == Some("bot\\40app.test@gw.xmpp.test")
                        && (e.xml().contains("type=\"error\"") || e.xml().contains("type='error'")))
            },
            Duration::from_secs(15),
        )
        .await;
    assert!(err.xml().contains("error"), "{err}");

    bob.close().await;
    carol.close().await;
    w.receiver.abort();
}

/// One presentity (a SIP user behind the proxy) watched from XMPP and from the app at
/// once: one upstream SUBSCRIBE, both watchers get the NOTIFY's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_presence_of_a_sip_user_watched_from_xmpp_and_the_app() {
    let mut w = world().await;
    let mut dave = XmppClient::connect(&w.prosody, "dave@xmpp.test", "dave-pass").await;
    dave.send_presence(
        support::PresenceKind::Subscribe,
        Some("alice@sip.gw.xmpp.test"),
        None,
        None,
    )
    .await;
    let (status, body) = w.app.post(
        "/v1/subscriptions",
        &serde_json::json!({"watcher": "im:bot@app.test", "target": "sip:alice@sip.test"}),
    );
    assert!((200..300).contains(&status), "{status} {body}");
    let p = dave
        .expect(
            |e| {
                e.kind() == "presence"
                    && e.sender_bare() == Some("alice@sip.gw.xmpp.test")
                    && e.xml().contains("at my desk")
            },
            TIMEOUT,
        )
        .await;
    assert!(!p.xml().contains("unavailable"), "{p}");
    let e = w
        .app
        .wait_event("alice's presence", |e| {
            e["type"] == "presence" && e["note"] == "at my desk"
        })
        .await;
    assert_eq!(e["status"], "available", "{e}");
    let subscribes: Vec<String> = w
        .phone
        .requests("SUBSCRIBE")
        .into_iter()
        .filter(|s| header(s, "Expires").as_deref() != Some("0"))
        .collect();
    assert_eq!(
        subscribes.len(),
        1,
        "one upstream subscription: {subscribes:#?}"
    );

    // carol asks too: the SIP side authorized dave's SUBSCRIBE, not her, and alice does
    // not follow carol and did not allow her — she waits (issue 13: no presence for
    // whoever asks).
    let mut carol = XmppClient::connect(&w.prosody, "carol@xmpp.test", "carol-pass").await;
    carol
        .send_presence(
            support::PresenceKind::Subscribe,
            Some("alice@sip.gw.xmpp.test"),
            None,
            None,
        )
        .await;
    carol
        .expect_none(
            |e| e.kind() == "presence" && e.sender_bare() == Some("alice@sip.gw.xmpp.test"),
            Duration::from_millis(1500),
        )
        .await;
    // alice's phone subscribes to carol's presence — at the number carol has on SIP
    // (`[[users]]`), as in alice's buddy list: carol is approved, and sees alice.
    let (_buddy_notifies, buddy) = sip_watcher(
        SocketAddr::from(([127, 0, 0, 1], w.gw.sip)),
        "sip:+15551234567@carrier.test",
    )
    .await;
    carol
        .expect(
            |e| {
                e.kind() == "presence"
                    && e.get("type") == Some("subscribed")
                    && e.sender_bare() == Some("alice@sip.gw.xmpp.test")
            },
            TIMEOUT,
        )
        .await;
    carol
        .expect(
            |e| {
                e.kind() == "presence"
                    && e.sender_bare() == Some("alice@sip.gw.xmpp.test")
                    && e.xml().contains("at my desk")
            },
            TIMEOUT,
        )
        .await;
    carol.close().await;
    buddy.abort();

    // The gateway crashes (SIGKILL) and comes back on its spool: dave's and the app's
    // subscriptions were kept (written within a second of the change), so it subscribes
    // upstream again — a new SUBSCRIBE to the phone — and alice's state reaches both
    // watchers again without either of them doing anything.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    dave.drain();
    let app_before = presence_events(&w.app);
    tokio::task::block_in_place(|| {
        w.gw.process.kill9();
        w.gw.process.restart(&[
            "component connected",
            "webhook API listening",
            "SIP listening",
            "presence subscriptions restored",
        ]);
    });
    dave.expect(
        |e| {
            e.kind() == "presence"
                && e.sender_bare() == Some("alice@sip.gw.xmpp.test")
                && e.xml().contains("at my desk")
        },
        TIMEOUT,
    )
    .await;
    let deadline = Instant::now() + TIMEOUT;
    while presence_events(&w.app) <= app_before {
        assert!(
            Instant::now() < deadline,
            "the app's subscription did not come back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let subscribes = w
        .phone
        .requests("SUBSCRIBE")
        .into_iter()
        .filter(|s| header(s, "Expires").as_deref() != Some("0"))
        .count();
    assert_eq!(subscribes, 2, "subscribed upstream again after the restart");
    dave.close().await;
    w.receiver.abort();
}

/// How many presence events the app has received.
fn presence_events(app: &App) -> usize {
    app.store
        .lock()
        .map(|s| s.events.iter().filter(|e| e["type"] == "presence").count())
        .unwrap_or_default()
}

/// Two gateways that each send `loop.test` to the other: the hop count (SIP
/// Max-Forwards / RFC 3860 MaxForwards) stops the message; it is not relayed forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_loop_between_two_gateways_is_stopped_by_the_hop_count() {
    assert!(Sipp::available(), "sipp is missing: run scripts/setup.sh");
    let dir = std::env::temp_dir().join(format!("cpim-e2e-loop-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a")).expect("dir");
    std::fs::create_dir_all(dir.join("b")).expect("dir");
    let (a, b, admin_a) = (free_port(), free_port(), free_port());
    let config = |me: u16, other: u16, admin: Option<u16>| {
        let admin = admin
            .map(|p| format!("[admin]\nlisten = \"127.0.0.1:{p}\"\n\n"))
            .unwrap_or_default();
        format!(
            r#"{admin}[gateway]
max_hops = 20

[adapters.sip]
type = "sip"
domains = ["loop.test", "sip.test"]
listen = [{{ transport = "udp", address = "127.0.0.1:{me}" }}]
outbound_proxy = "sip:127.0.0.1:{other};transport=udp"
"#
        )
    };
    let _gw_a = start_gateway(
        &dir.join("a"),
        &config(a, b, Some(admin_a)),
        &["SIP listening"],
    );
    let _gw_b = start_gateway(&dir.join("b"), &config(b, a, None), &["SIP listening"]);
    finish(uac(a, "x", "loop.test", "alice", "round and round")).await;
    // The message bounced between A and B until the hop count ran out, then failed.
    let deadline = Instant::now() + TIMEOUT;
    let metrics = loop {
        let out = Command::new("curl")
            .args(["-sS", &format!("http://127.0.0.1:{admin_a}/metrics")])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let failed: u64 = text
            .lines()
            .filter(|l| {
                l.starts_with("cpim_failed_total{") || l.starts_with("cpim_rejected_total{")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        if failed > 0 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the loop was not stopped:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let received: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("cpim_received_total{adapter=\"sip\"}"))
        .filter_map(|l| l.rsplit(" ").next()?.parse::<u64>().ok())
        .sum();
    assert!(
        received <= 20,
        "bounded by max_hops: {received} received\n{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A SIP watcher (SIPp) follows an XMPP user: the XMPP user approves and goes online;
/// the SIP watcher is notified (open), then unsubscribes. Composing from XMPP reaches the
/// SIP side as isComposing, and a SIP 200 comes back to the app as `delivered` when the
/// app asked for a receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_sip_watcher_of_an_xmpp_user_composing_and_receipts() {
    let w = world().await;
    let mut bob = XmppClient::connect(&w.prosody, "bob@xmpp.test", "bob-pass").await;
    let watcher = Sipp::start(
        "uac_subscribe.xml",
        SippOptions::uac(SocketAddr::from(([127, 0, 0, 1], w.gw.sip)))
            .transport(Transport::Udp)
            .timeout(Duration::from_secs(25))
            .service("bob")
            .var("to_domain", "xmpp.test")
            .var("from_user", "alice")
            .var("from_domain", "sip.test")
            .var("expires", "600")
            .calls(1),
    )
    .expect("sipp");
    // bob is asked, approves and is online.
    bob.expect(
        |e| {
            e.kind() == "presence"
                && e.get("type") == Some("subscribe")
                && e.sender_bare() == Some("alice@sip.gw.xmpp.test")
        },
        TIMEOUT,
    )
    .await;
    bob.send_presence(
        support::PresenceKind::Subscribed,
        Some("alice@sip.gw.xmpp.test"),
        None,
        None,
    )
    .await;
    bob.send_presence(
        support::PresenceKind::Available,
        None,
        None,
        Some("in the lab"),
    )
    .await;
    let report = tokio::task::spawn_blocking(move || watcher.wait(Duration::from_secs(30)))
        .await
        .expect("join")
        .expect("the SIP watcher saw bob open and its unsubscribe confirmed");
    let open = report
        .received_requests("NOTIFY")
        .into_iter()
        .find(|n| n.body().contains("<basic>open</basic>"))
        .expect("a NOTIFY with bob's state");
    assert!(
        open.body().contains("entity=\"sip:bob@xmpp.test\""),
        "{}",
        open.body()
    );
    // The watcher's `Expires: 0` ends the gateway's subscription: bob hears alice leave
    // (`unavailable`) and keeps her in his roster — no `unsubscribe` (RFC 7248 §4.3.3).
    bob.expect(
        |e| {
            e.kind() == "presence"
                && e.get("type") == Some("unavailable")
                && e.sender_bare() == Some("alice@sip.gw.xmpp.test")
        },
        TIMEOUT,
    )
    .await;
    bob.expect_none(
        |e| e.kind() == "presence" && e.get("type") == Some("unsubscribe"),
        Duration::from_millis(300),
    )
    .await;

    // Composing: XEP-0085 → RFC 3994.
    bob.send_message(
        "alice@sip.gw.xmpp.test",
        None,
        MessageExtras {
            chat_state: Some("composing".into()),
            ..MessageExtras::default()
        },
    )
    .await;
    let deadline = Instant::now() + TIMEOUT;
    let composing = loop {
        if let Some(m) = w.phone.requests("MESSAGE").into_iter().find(|m| {
            header(m, "Content-Type").as_deref() == Some("application/im-iscomposing+xml")
        }) {
            break m;
        }
        assert!(Instant::now() < deadline, "no isComposing MESSAGE");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(composing.contains("<state>active</state>"), "{composing}");

    // Receipt: the app asks; the SIP phone answers 200 (delivered, RFC 3428 §4).
    let (status, body) = w.app.post(
        "/v1/messages",
        &serde_json::json!({"from": "im:bot@app.test", "to": "sip:alice@sip.test", "text": "14 please confirm", "receipt": true}),
    );
    assert_eq!(status, 202, "{body}");
    let id: serde_json::Value = serde_json::from_str(&body).expect("json");
    w.app
        .wait_event("the delivery receipt", |e| {
            e["type"] == "notification" && e["message_id"] == id["id"] && e["status"] == "delivered"
        })
        .await;
    bob.close().await;
    w.receiver.abort();
}

/// A SIP watcher on a plain UDP socket: answers every request 200 and keeps the NOTIFYs.
async fn sip_watcher(
    gateway: SocketAddr,
    presentity: &str,
) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let me = socket.local_addr().expect("addr");
    let subscribe = format!(
        "SUBSCRIBE {presentity} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKtwo1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=two\r\nTo: <{presentity}>\r\n\
         Call-ID: two-devices\r\nCSeq: 1 SUBSCRIBE\r\nEvent: presence\r\n\
         Contact: <sip:alice@{me}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    socket
        .send_to(subscribe.as_bytes(), gateway)
        .await
        .expect("send");
    let notifies = Arc::new(Mutex::new(Vec::new()));
    let kept = notifies.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            if m.starts_with("SIP/2.0 ") {
                continue;
            }
            let _ = socket.send_to(reply(&m, 200, "").as_bytes(), from).await;
            if m.starts_with("NOTIFY ") {
                kept.lock().expect("lock").push(m);
            }
        }
    });
    (notifies, task)
}

/// The basic status of each tuple of the last NOTIFY (in document order).
fn last_basics(notifies: &Mutex<Vec<String>>) -> Vec<String> {
    let all = notifies.lock().expect("lock");
    let Some(last) = all.last() else {
        return Vec::new();
    };
    common::sip_body(last)
        .split("<basic>")
        .skip(1)
        .filter_map(|s| s.split("</basic>").next())
        .map(str::to_owned)
        .collect()
}

async fn wait_for_basics(notifies: &Mutex<Vec<String>>, want: &[&str], what: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let got = last_basics(notifies);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the last NOTIFY has {got:?}, not {want:?}:\n{:?}",
            notifies.lock().expect("lock").last()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// RFC 4479 composition across XMPP resources: a SIP watcher of an XMPP user with two
/// devices sees one document with a tuple per online device, so the user stays online
/// while one device is; only when both are gone is the state closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_an_xmpp_user_on_two_devices_stays_online_for_a_sip_watcher_until_both_leave() {
    let w = world().await;
    let mut phone = XmppClient::connect(&w.prosody, "bob@xmpp.test", "bob-pass").await;
    let (notifies, watcher) = sip_watcher(
        SocketAddr::from(([127, 0, 0, 1], w.gw.sip)),
        "sip:bob@xmpp.test",
    )
    .await;
    phone
        .expect(
            |e| {
                e.kind() == "presence"
                    && e.get("type") == Some("subscribe")
                    && e.sender_bare() == Some("alice@sip.gw.xmpp.test")
            },
            TIMEOUT,
        )
        .await;
    phone
        .send_presence(
            support::PresenceKind::Subscribed,
            Some("alice@sip.gw.xmpp.test"),
            None,
            None,
        )
        .await;
    phone
        .send_presence(support::PresenceKind::Available, None, None, Some("phone"))
        .await;
    wait_for_basics(&notifies, &["open"], "bob's phone is online").await;

    // bob's laptop comes online, busy: two tuples.
    let mut laptop = XmppClient::connect(&w.prosody, "bob@xmpp.test", "bob-pass").await;
    laptop
        .send_presence(
            support::PresenceKind::Available,
            None,
            Some("dnd"),
            Some("laptop"),
        )
        .await;
    wait_for_basics(&notifies, &["open", "open"], "both devices").await;

    // The phone goes: bob is still online on the laptop.
    phone.close().await;
    wait_for_basics(&notifies, &["open"], "the laptop is still online").await;
    let last = notifies
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .unwrap_or_default();
    assert!(
        last.contains("dnd") && last.contains("busy"),
        "the laptop's dnd, as RPID busy: {last}"
    );

    // The laptop goes too: closed.
    laptop.close().await;
    wait_for_basics(&notifies, &["closed"], "both gone").await;
    watcher.abort();
    w.receiver.abort();
}

/// Sends one MESSAGE (`message/cpim` with an IMDN request) from alice's UA on a UDP
/// socket to the gateway; returns when it is answered 202.
async fn send_cpim_asking_imdn(gateway: SocketAddr, to: &str, message_id: &str, text: &str) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let me = socket.local_addr().expect("addr");
    let cpim = format!(
        "From: <sip:alice@sip.test>\r\nTo: <{to}>\r\nDateTime: 2026-12-07T10:00:00Z\r\n\
         NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: {message_id}\r\n\
         imdn.Disposition-Notification: positive-delivery, negative-delivery\r\n\r\n\
         Content-Type: text/plain\r\n\r\n{text}"
    );
    let request = format!(
        "MESSAGE {to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{message_id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@sip.test>;tag=a{message_id}\r\nTo: <{to}>\r\n\
         Call-ID: {message_id}@alice\r\nCSeq: 1 MESSAGE\r\nContent-Type: message/cpim\r\n\
         Content-Length: {}\r\n\r\n{cpim}",
        cpim.len()
    );
    socket
        .send_to(request.as_bytes(), gateway)
        .await
        .expect("send");
    let mut buf = vec![0u8; 65_536];
    let (n, _) = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("the MESSAGE is answered")
        .expect("recv");
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("SIP/2.0 202"), "{answer}");
}

/// The IMDN the phone (alice's outbound proxy) received about `message_id`.
async fn imdn_at_phone(phone: &Phone, message_id: &str, what: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(m) = phone.requests("MESSAGE").into_iter().find(|m| {
            m.contains("message/imdn+xml")
                && m.contains(&format!("<message-id>{message_id}</message-id>"))
        }) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no IMDN about {message_id} reached alice: {:?}",
            phone.requests("MESSAGE")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// RFC 5438 across networks: a SIP sender that asked for delivery notifications hears,
/// as IMDNs naming its own `imdn.Message-ID`, an XMPP client's XEP-0184 receipt and the
/// XMPP server's error bounce for a user that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_xmpp_receipts_and_bounces_reach_the_sip_sender_as_imdn() {
    let w = world().await;
    let gateway = SocketAddr::from(([127, 0, 0, 1], w.gw.sip));
    let mut bob = XmppClient::connect(&w.prosody, "bob@xmpp.test", "bob-pass").await;
    send_cpim_asking_imdn(
        gateway,
        "sip:bob@xmpp.test",
        "m-rcpt-1",
        "did you get this?",
    )
    .await;
    let got = bob
        .expect(
            |e| e.kind() == "message" && e.get("body") == Some("did you get this?"),
            TIMEOUT,
        )
        .await;
    let id = got.get("id").expect("the message has an id").to_owned();
    assert!(
        got.get("xml")
            .unwrap_or_default()
            .contains("urn:xmpp:receipts"),
        "a receipt is asked: {got}"
    );
    bob.send_raw(&format!(
        "<message to='alice@sip.gw.xmpp.test' id='rcpt-{id}'><received xmlns='urn:xmpp:receipts' id='{id}'/></message>"
    ))
    .await;
    let imdn = imdn_at_phone(&w.phone, "m-rcpt-1", "the receipt").await;
    assert!(imdn.contains("<delivered/>"), "{imdn}");
    assert!(imdn.starts_with("MESSAGE sip:alice@sip.test "), "{imdn}");

    // nobody@xmpp.test does not exist: Prosody bounces the message.
    send_cpim_asking_imdn(gateway, "sip:nobody@xmpp.test", "m-bounce-1", "anyone?").await;
    let imdn = imdn_at_phone(&w.phone, "m-bounce-1", "the bounce").await;
    assert!(imdn.contains("<failed/>"), "{imdn}");
    bob.close().await;
    w.receiver.abort();
}

/// Issue 13: an XMPP client asks for a receipt and a displayed marker; the phone takes
/// text only (the gateway sends it plain text, which cannot ask for a display
/// notification). The client gets the receipt from the phone's 200, and the phone's
/// JID from then on announces receipts but no chat markers — in disco#info and in the
/// capabilities of its presence — so the client does not wait for a marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_an_xmpp_sender_learns_that_a_text_only_phone_sends_no_displayed_marker() {
    let w = world().await;
    let mut bob = XmppClient::connect(&w.prosody, "bob@xmpp.test", "bob-pass").await;
    let disco = |id: &str| {
        format!(
            "<iq type='get' id='{id}' to='alice@sip.gw.xmpp.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        )
    };
    bob.send_raw(&disco("before")).await;
    let before = bob
        .expect(
            |e| e.kind() == "iq" && e.get("id") == Some("before"),
            TIMEOUT,
        )
        .await;
    assert!(
        before.xml().contains("urn:xmpp:chat-markers:0"),
        "{}",
        before.xml()
    );
    let extras = MessageExtras {
        request_receipt: true,
        markable: true,
        kind: Some("chat".into()),
        ..MessageExtras::default()
    };
    let id = bob
        .send_message("alice@sip.gw.xmpp.test", "read me?", extras)
        .await;
    let m = w.phone.wait_message("read me?").await;
    assert!(
        header(&m, "Content-Type").is_some_and(|t| t.starts_with("text/plain")),
        "{m}"
    );
    let receipt = bob
        .expect(
            |e| e.kind() == "message" && e.xml().contains("urn:xmpp:receipts"),
            TIMEOUT,
        )
        .await;
    assert!(receipt.xml().contains(&id), "{}", receipt.xml());
    // The display answer follows the receipt; ask until the JID says so.
    let deadline = Instant::now() + TIMEOUT;
    let mut n = 0;
    let after = loop {
        n += 1;
        let id = format!("after-{n}");
        bob.send_raw(&disco(&id)).await;
        let info = bob
            .expect(
                |e| e.kind() == "iq" && e.get("id") == Some(id.as_str()),
                TIMEOUT,
            )
            .await;
        if !info.xml().contains("urn:xmpp:chat-markers:0") || Instant::now() > deadline {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !after.xml().contains("urn:xmpp:chat-markers:0"),
        "a text-only phone takes no markers: {}",
        after.xml()
    );
    assert!(after.xml().contains("urn:xmpp:receipts"), "{}", after.xml());
    bob.expect_none(
        |e| e.xml().contains("<displayed"),
        Duration::from_millis(200),
    )
    .await;
    bob.close().await;
    w.receiver.abort();
}
