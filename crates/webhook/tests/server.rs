//! End-to-end tests of the inbound API: real HTTP on 127.0.0.1, a real broker, and an
//! in-memory SIP stand-in as the far side.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cpim::event::{Event, Message, SubscriptionOp};
use cpim::Address;
use cpim_broker::core::CoreConfig;
use cpim_broker::map::{AdapterMapConfig, MapConfig};
use cpim_broker::testing::MemoryAdapter;
use cpim_broker::{AddressMap, AddressStyle, Broker, BrokerHandle, Inbound, Submitter};
use cpim_webhook::client::Undeliverable;
use cpim_webhook::{AppConfig, OutboundSink, WebhookAdapter, WebhookConfig};
use serde_json::{json, Value};
use std::sync::Mutex;

const TOKEN: &str = "test-token-0123456789";
const OTHER_TOKEN: &str = "other-token-0123456789";

struct Gateway {
    base: String,
    sip: MemoryAdapter,
    from_sip: Submitter,
    http: reqwest::Client,
    _broker: BrokerHandle,
}

async fn gateway(tune: impl FnOnce(&mut WebhookConfig)) -> Gateway {
    gateway_with(tune, HashMap::new()).await
}

async fn gateway_with(
    tune: impl FnOnce(&mut WebhookConfig),
    sinks: HashMap<String, Arc<dyn OutboundSink>>,
) -> Gateway {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The webhook adapter owns the domains of all its apps.
    let map = AddressMap::new(MapConfig {
        adapters: vec![
            AdapterMapConfig {
                name: "sip".into(),
                style: AddressStyle::Sip,
                home_domains: vec!["sip.test".into()],
                alias_domains: Vec::new(),
                escape_domains: Vec::new(),
            },
            AdapterMapConfig {
                name: "webhook".into(),
                style: AddressStyle::Im,
                home_domains: vec!["app.test".into(), "other.test".into()],
                alias_domains: Vec::new(),
                escape_domains: Vec::new(),
            },
        ],
        users: Vec::new(),
        any_domain: None,
    })
    .expect("valid map");
    let (mut broker, handle) = Broker::new(CoreConfig::default(), Arc::new(map));
    let mut config = WebhookConfig {
        name: "webhook".into(),
        apps: vec![
            AppConfig {
                name: "app".into(),
                domains: vec!["app.test".into()],
                token: TOKEN.into(),
                url: None,
            },
            AppConfig {
                name: "other".into(),
                domains: vec!["other.test".into()],
                token: OTHER_TOKEN.into(),
                url: None,
            },
        ],
        ..WebhookConfig::default()
    };
    tune(&mut config);
    let (webhook, addr) = WebhookAdapter::start(config, broker.context("webhook"), sinks)
        .await
        .expect("webhook starts");
    let sip = MemoryAdapter::new("sip", AddressStyle::Sip, &["sip.test"]);
    let from_sip = broker.context("sip").submitter;
    broker.add_adapter(webhook);
    broker.add_adapter(Arc::new(sip.clone()));
    broker.start();
    Gateway {
        base: format!("http://{addr}"),
        sip,
        from_sip,
        http: reqwest::Client::new(),
        _broker: handle,
    }
}

impl Gateway {
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    /// `GET /v1/events` as the first app, resuming after `last` if given.
    async fn events(&self, last: Option<&str>) -> reqwest::Response {
        let mut request = self
            .http
            .get(format!("{}/v1/events", self.base))
            .bearer_auth(TOKEN);
        if let Some(id) = last {
            request = request.header("Last-Event-ID", id);
        }
        request.send().await.unwrap()
    }
}

fn hello() -> Value {
    json!({"from": "im:bot@app.test", "to": "sip:alice@sip.test", "text": "hello", "conversation": "c1"})
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["condition"].is_string() && body["type"].is_string() && body["title"].is_string());
    body
}

#[tokio::test]
async fn send_message_reaches_the_far_side() {
    let gw = gateway(|_| {}).await;
    let r = gw.post("/v1/messages").json(&hello()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("gw-"), "{id}");
    assert_eq!(gw.sip.wait_for(1, Duration::from_secs(5)).await, 1);
    let e = &gw.sip.received()[0];
    assert_eq!(e.id.to_string(), id);
    assert_eq!(e.from.to_string(), "sip:bot@app.test");
    assert_eq!(e.to.to_string(), "sip:alice@sip.test");
    let Event::Message(m) = &e.event else {
        panic!("not a message: {:?}", e.event)
    };
    assert_eq!(
        (m.body.as_slice(), m.thread.as_deref()),
        (&b"hello"[..], Some("c1"))
    );
}

#[tokio::test]
async fn idempotent_resend_returns_the_same_id_and_delivers_once() {
    let gw = gateway(|_| {}).await;
    let send = || {
        gw.post("/v1/messages")
            .header("Idempotency-Key", "k-1")
            .json(&hello())
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status().as_u16(), 202);
    let first: Value = first.json().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status().as_u16(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    // The same key with another body is refused.
    let other = gw
        .post("/v1/messages")
        .header("Idempotency-Key", "k-1")
        .json(&json!({"from": "im:bot@app.test", "to": "sip:alice@sip.test", "text": "other"}))
        .send()
        .await
        .unwrap();
    problem(other, 422).await;
    gw.sip.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.sip.count(), 1);
}

#[tokio::test]
async fn refusals_are_problems_and_deliver_nothing() {
    let gw = gateway(|c| c.body_limit = 1024).await;
    let url = format!("{}/v1/messages", gw.base);
    let r = gw
        .http
        .post(&url)
        .bearer_auth("wrong-token-0123456789")
        .json(&hello())
        .send();
    problem(r.await.unwrap(), 401).await;
    let r = gw.http.post(&url).json(&hello()).send();
    problem(r.await.unwrap(), 401).await;
    // Another application's domain.
    let r = gw
        .post("/v1/messages")
        .json(&json!({"from": "im:bot@other.test", "to": "sip:alice@sip.test", "text": "x"}));
    assert_eq!(
        problem(r.send().await.unwrap(), 403).await["condition"],
        "forbidden"
    );
    let big =
        json!({"from": "im:bot@app.test", "to": "sip:alice@sip.test", "text": "x".repeat(2000)});
    problem(
        gw.post("/v1/messages").json(&big).send().await.unwrap(),
        413,
    )
    .await;
    let r = gw
        .post("/v1/messages")
        .header("content-type", "application/json")
        .body("{\"from\": ");
    assert_eq!(
        problem(r.send().await.unwrap(), 400).await["condition"],
        "bad-request"
    );
    let r = gw
        .post("/v1/messages")
        .json(&json!({"from": "im:bot@app.test", "to": "sip:alice@nowhere.test", "text": "x"}));
    assert_eq!(
        problem(r.send().await.unwrap(), 404).await["condition"],
        "item-not-found"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.sip.count(), 0);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let gw = gateway(|c| {
        c.rate_per_sec = 0.5;
        c.burst = 2;
    })
    .await;
    for _ in 0..2 {
        let r = gw.post("/v1/messages").json(&hello()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    let r = gw.post("/v1/messages").json(&hello()).send().await.unwrap();
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    problem(r, 429).await;
    // Another application has its own bucket.
    let r = gw
        .http
        .post(format!("{}/v1/messages", gw.base))
        .bearer_auth(OTHER_TOKEN)
        .json(&json!({"from": "im:bot@other.test", "to": "sip:alice@sip.test", "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

/// Reads SSE events (`id`, parsed `data`) until `n` were seen.
async fn read_events(response: reqwest::Response, n: usize) -> Vec<(u64, Value)> {
    let mut response = response;
    let mut buffer = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse().unwrap());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                } else if line.strip_prefix("event:").map(str::trim) == Some("gap") {
                    // A gap notice has no id of its own: it is reported as id 0.
                    id = Some(0);
                }
            }
            if let Some(id) = id {
                out.push((id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    out
}

async fn from_sip(gw: &Gateway, text: &str) {
    let inbound = Inbound::new(
        Event::Message(Message::text(text)),
        Address::parse("sip:alice@sip.test").unwrap(),
        Address::parse("sip:bot@app.test").unwrap(),
    );
    gw.from_sip.submit(inbound).await.expect("accepted");
}

#[tokio::test]
async fn events_stream_and_resume_with_last_event_id() {
    let gw = gateway(|_| {}).await;
    let events = |last: Option<u64>| {
        let mut r = gw
            .http
            .get(format!("{}/v1/events", gw.base))
            .bearer_auth(TOKEN);
        if let Some(id) = last {
            r = r.header("Last-Event-ID", id.to_string());
        }
        r.send()
    };
    let live = events(None).await.unwrap();
    assert_eq!(live.status().as_u16(), 200);
    assert!(live.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    for text in ["one", "two", "three"] {
        from_sip(&gw, text).await;
    }
    let seen = read_events(live, 3).await;
    let texts: Vec<_> = seen.iter().map(|(_, e)| e["text"].clone()).collect();
    assert_eq!(texts, vec!["one", "two", "three"]);
    let first = &seen[0].1;
    assert_eq!(first["type"], "message");
    assert_eq!(first["from"], "im:alice@sip.test");
    assert_eq!(first["to"], "im:bot@app.test");
    assert!(first["id"].as_str().unwrap().starts_with("gw-"));

    let resumed = read_events(events(Some(seen[0].0)).await.unwrap(), 2).await;
    assert_eq!(resumed, seen[1..].to_vec());
    // Another application sees none of them.
    let other = gw
        .http
        .get(format!("{}/v1/events", gw.base))
        .bearer_auth(OTHER_TOKEN)
        .send()
        .await
        .unwrap();
    let mut other = other;
    let nothing = tokio::time::timeout(Duration::from_millis(300), other.chunk()).await;
    assert!(nothing.is_err(), "no events for the other application");
}

/// Issue 15: an SSE-only application that does not read was cut silently once its log
/// was full (82 % of a large fan-out lost, counted delivered). Now its unread events are
/// never dropped: the ones that do not fit wait in the broker's queue, in order, and
/// follow as the application reads.
#[tokio::test]
async fn an_sse_only_app_that_falls_behind_loses_nothing() {
    let gw = gateway(|c| c.sse_retention = 3).await;
    for i in 0..7 {
        from_sip(&gw, &format!("m{i}")).await;
    }
    // Nobody reads yet: the log holds 3, the other 4 wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let live = gw.events(None).await;
    let seen = read_events(live, 7).await;
    let texts: Vec<String> = seen
        .iter()
        .map(|(_, e)| e["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4", "m5", "m6"]);
    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7], "no gap");
}

/// An application with a URL keeps only the newest events in its SSE log; a reader that
/// resumes after ones no longer kept is told so before the rest (never a silent cut).
#[tokio::test]
async fn a_reader_resuming_after_events_no_longer_kept_is_told_of_the_gap() {
    let recorder = Arc::new(Recorder::default());
    let sinks = HashMap::from([("app".to_owned(), recorder.clone() as Arc<dyn OutboundSink>)]);
    let gw = gateway_with(|c| c.sse_retention = 3, sinks).await;
    for i in 0..5 {
        from_sip(&gw, &format!("m{i}")).await;
    }
    for _ in 0..100 {
        if recorder.0.lock().unwrap().len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resumed = gw.events(Some("1")).await;
    let seen = read_events(resumed, 4).await;
    assert_eq!(seen[0].0, 0, "a gap notice first: {seen:?}");
    assert_eq!(seen[0].1["type"], "gap");
    assert_eq!(seen[0].1["after"], 1);
    assert_eq!(seen[0].1["next"], 3);
    let ids: Vec<u64> = seen[1..].iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [3, 4, 5]);
}

#[tokio::test]
async fn presence_and_subscriptions_reach_the_broker() {
    let gw = gateway(|_| {}).await;
    let r = gw
        .post("/v1/presence")
        .json(&json!({"from": "im:bot@app.test", "status": "away", "note": "lunch"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = gw
        .post("/v1/subscriptions")
        .json(&json!({"watcher": "im:bot@app.test", "target": "sip:alice@sip.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(gw.sip.wait_for(1, Duration::from_secs(5)).await, 1);
    let e = &gw.sip.received()[0];
    let Event::Subscription(s) = &e.event else {
        panic!("not a subscription: {:?}", e.event)
    };
    assert_eq!(s.op, SubscriptionOp::Subscribe);
    assert_eq!(e.from.to_string(), "sip:bot@app.test");
    assert_eq!(e.to.to_string(), "sip:alice@sip.test");
    // Removal by query string.
    let r = gw
        .http
        .delete(format!(
            "{}/v1/subscriptions?watcher=im:bot@app.test&target=sip:alice@sip.test",
            gw.base
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = gw
        .post("/v1/composing")
        .json(&json!({"from": "im:bot@app.test", "to": "sip:alice@sip.test", "active": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

#[tokio::test]
async fn openapi_document_is_served() {
    let gw = gateway(|_| {}).await;
    let r = gw
        .http
        .get(format!("{}/v1/openapi.json", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/messages",
        "/v1/presence",
        "/v1/subscriptions",
        "/v1/subscriptions/authorizations",
        "/v1/composing",
        "/v1/events",
        "/v1/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(doc["paths"]["/v1/subscriptions"]["delete"].is_object());
    // Every $ref points into the document.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20);
    for r in all {
        let pointer = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "{r} resolves");
    }
    let r = gw
        .http
        .get(format!("{}/v2/nothing", gw.base))
        .send()
        .await
        .unwrap();
    problem(r, 404).await;
}

/// A sink that records events, failing the ones whose text is "fail".
#[derive(Default)]
struct Recorder(Mutex<Vec<Value>>);

#[async_trait::async_trait]
impl OutboundSink for Recorder {
    async fn send(&self, event: Value) -> Result<(), Undeliverable> {
        let fail = event["text"] == "fail";
        self.0.lock().unwrap().push(event);
        if fail {
            Err(Undeliverable {
                attempts: 1,
                last_error: "the application answered 500".into(),
            })
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn events_go_to_the_outbound_sink_and_failures_reach_the_sender() {
    let recorder = Arc::new(Recorder::default());
    let sinks = HashMap::from([("app".to_owned(), recorder.clone() as Arc<dyn OutboundSink>)]);
    let gw = gateway_with(|_| {}, sinks).await;
    from_sip(&gw, "ok").await;
    let mut failing = Inbound::new(
        Event::Message(Message {
            receipts: cpim::event::Receipts {
                failed: true,
                ..Default::default()
            },
            ..Message::text("fail")
        }),
        Address::parse("sip:alice@sip.test").unwrap(),
        Address::parse("sip:bot@app.test").unwrap(),
    );
    failing.received_at_ms = 1;
    gw.from_sip.submit(failing).await.unwrap();
    // The failure comes back to the SIP side as a notification.
    assert_eq!(gw.sip.wait_for(1, Duration::from_secs(5)).await, 1);
    let back = &gw.sip.received()[0];
    assert!(
        matches!(&back.event, Event::Notification(n) if matches!(n.status, cpim::event::NotificationStatus::Failed { .. })),
        "{:?}",
        back.event
    );
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0]["text"], "ok");
    assert_eq!(seen[0]["type"], "message");
    // A notification that no display notification will come (issue 13).
    gw.from_sip
        .submit(Inbound::new(
            Event::Notification(cpim::event::Notification {
                message_id: "gw-1".into(),
                status: cpim::event::NotificationStatus::DisplayUnknown,
            }),
            Address::parse("sip:alice@sip.test").unwrap(),
            Address::parse("sip:bot@app.test").unwrap(),
        ))
        .await
        .unwrap();
    for _ in 0..100 {
        if recorder.0.lock().unwrap().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[2]["type"], "notification");
    assert_eq!(seen[2]["status"], "display_unknown");
}

/// Message rate webhook → gateway → in-memory sink, for the record (not an assertion):
/// 8 concurrent HTTP clients post `N` messages to 100 destinations. Run by hand:
/// `cargo test --release -p cpim-webhook --test server -- --ignored --nocapture rate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn rate_webhook_to_memory_sink() {
    const N: usize = 20_000;
    const CLIENTS: usize = 8;
    let gw = gateway(|c| {
        c.rate_per_sec = 1e9;
        c.burst = 1_000_000;
    })
    .await;
    let gw = Arc::new(gw);
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CLIENTS {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..N).step_by(CLIENTS) {
                let body = json!({"from": "im:bot@app.test", "to": format!("sip:u{}@sip.test", i % 100), "text": format!("m{i}")});
                let r = gw.post("/v1/messages").json(&body).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 202);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let accepted = start.elapsed();
    assert_eq!(gw.sip.wait_for(N, Duration::from_secs(120)).await, N);
    let elapsed = start.elapsed();
    println!(
        "{N} messages over HTTP ({CLIENTS} clients): accepted in {accepted:?}, all delivered to the in-memory sink after {elapsed:?} = {:.0} messages/s",
        N as f64 / elapsed.as_secs_f64()
    );
}

/// A subscription request addressed to an app user reaches the app (SSE) and the app's
/// approval over HTTP reaches the watcher's network.
#[tokio::test]
async fn authorization_request_and_approval_over_http() {
    let gw = gateway(|_| {}).await;
    let ask = Inbound::new(
        Event::Subscription(cpim::event::Subscription::new(SubscriptionOp::Subscribe)),
        Address::parse("sip:alice@sip.test").unwrap(),
        Address::parse("sip:bot@app.test").unwrap(),
    );
    gw.from_sip.submit(ask).await.expect("accepted");
    let events = gw.events(None).await;
    let seen = read_events(events, 1).await;
    assert_eq!(seen[0].1["type"], "subscription");
    assert_eq!(seen[0].1["op"], "subscribe");
    assert_eq!(seen[0].1["from"], "im:alice@sip.test");
    let r = gw
        .post("/v1/subscriptions/authorizations")
        .json(&json!({"presentity": "im:bot@app.test", "watcher": "sip:alice@sip.test", "approve": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(gw.sip.wait_for(1, Duration::from_secs(5)).await, 1);
    let e = &gw.sip.received()[0];
    assert!(
        matches!(&e.event, Event::Subscription(s) if s.op == SubscriptionOp::Approve),
        "{:?}",
        e.event
    );
    assert_eq!(e.to.to_string(), "sip:alice@sip.test");
}

/// A client that sends its body too slowly gets `408` instead of holding the
/// connection (slowloris).
#[tokio::test]
async fn slow_body_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = gateway(|c| c.request_timeout_secs = 1).await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"from\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 5 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(gw.sip.count(), 0);
}

/// Reads what the server writes on `stream` until it closes the connection, or `wait`
/// passes (then `None`).
async fn read_until_closed(stream: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(wait, async {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&all).into_owned(),
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.x).
async fn connect_from(from: [u8; 4], addr: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr.parse().unwrap()).await.unwrap()
}

/// Issue 13: the API cannot be exhausted. Beyond its connection caps (per address, per
/// listener) a client gets `503` with a problem document at once, not silence; a
/// request head dripped byte by byte is cut after the header timeout; an idle
/// connection is closed; the slots come back, and the API answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_address_and_listener_and_slow_or_idle_ones_closed() {
    use tokio::io::AsyncWriteExt;
    let gw = gateway(|c| {
        c.http_limits = cpim_webhook::listener::HttpLimits {
            max_connections: 4,
            max_per_ip: 2,
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
        }
    })
    .await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    // Two idle connections from 127.0.0.1: a third from there is refused with 503.
    let _a1 = connect_from([127, 0, 0, 1], &addr).await;
    let _a2 = connect_from([127, 0, 0, 1], &addr).await;
    let mut a3 = connect_from([127, 0, 0, 1], &addr).await;
    let refused = read_until_closed(&mut a3, Duration::from_secs(2))
        .await
        .expect("the refusal comes at once");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("application/problem+json"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    assert!(refused.contains("from your address"), "{refused}");
    // Two more from 127.0.0.2 fill the listener: one from 127.0.0.3 is refused.
    let _b1 = connect_from([127, 0, 0, 2], &addr).await;
    let _b2 = connect_from([127, 0, 0, 2], &addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c1 = connect_from([127, 0, 0, 3], &addr).await;
    let refused = read_until_closed(&mut c1, Duration::from_secs(2))
        .await
        .expect("the refusal comes at once");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("to this listener"), "{refused}");
    drop((_a1, _a2, _b1, _b2));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A slow-loris head: one byte every 200 ms never ends; cut after about 1 s.
    let mut slow = connect_from([127, 0, 0, 4], &addr).await;
    let started = std::time::Instant::now();
    slow.write_all(b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let drip = async {
        for _ in 0..40 {
            if slow.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(8), drip).await;
    let closed = read_until_closed(&mut slow, Duration::from_secs(1)).await;
    assert!(closed.is_some(), "the dripping connection is closed");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "cut after the header timeout, not after {:?}",
        started.elapsed()
    );

    // An idle connection is closed after 2 s.
    let mut idle = connect_from([127, 0, 0, 5], &addr).await;
    let closed = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert_eq!(closed.as_deref(), Some(""), "closed without a word");

    // The slots came back: the API answers.
    let ok = gw
        .http
        .get(format!("{}/v1/openapi.json", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}
