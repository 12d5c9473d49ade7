//! One `cpim-gateway run` process between a real Prosody (XMPP users) and an HTTP
//! application: the app sends with `curl` and with reqwest, the XMPP user receives and
//! replies, and the reply reaches the app's receiver as a signed transaction.

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure

use cpim_test_support::xmpp as support;

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{free_port, Guard};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use axum::Router;

use support::{MessageExtras, Prosody, ProsodyOpts, XmppClient, COMPONENT, TIMEOUT};

const TOKEN: &str = "test-token-0123456789";

#[derive(Default)]
struct Received {
    transactions: Vec<(String, serde_json::Value)>,
}

async fn receive(
    State(store): State<Arc<Mutex<Received>>>,
    Path(txn): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
    let signature = headers
        .get(cpim_webhook::client::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if bearer != Some(&format!("Bearer {TOKEN}"))
        || !cpim_webhook::client::verify(TOKEN.as_bytes(), signature, &body, now, 300)
    {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if let Ok(mut s) = store.lock() {
        s.transactions.push((txn, json));
    }
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xmpp_user_and_http_app_talk_through_one_gateway() {
    let prosody = Prosody::start(ProsodyOpts::default()).await;
    prosody.register("alice", "alice-pass").await;

    // The app's receiver.
    let store = Arc::new(Mutex::new(Received::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hooks = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/hooks/transactions/{txn}", put(receive))
        .with_state(store.clone());
    let receiver = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let api_port = free_port();
    let dir = prosody.dir().join("gw");
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"[adapters.xmpp]
type = "xmpp"
server = "{server}"
user_domains = ["xmpp.test"]

[[adapters.xmpp.components]]
domain = "{COMPONENT}"
secret = "{secret}"

[adapters.webhook]
type = "webhook"
listen = "127.0.0.1:{api_port}"

[[adapters.webhook.apps]]
name = "demo"
domains = ["app.test"]
token = "{TOKEN}"
url = "http://{hooks}/hooks"
"#,
            server = prosody.component_addr(),
            secret = prosody.component_secret(COMPONENT),
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpim-gateway"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gateway runs");
    let stderr = child.stderr.take().expect("stderr");
    let _guard = Guard(Some(child));
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !["component connected", "webhook API listening"]
        .iter()
        .all(|needle| log.iter().any(|l| l.contains(needle)))
    {
        let left = deadline
            .checked_duration_since(std::time::Instant::now())
            .unwrap_or_else(|| panic!("the gateway did not start:\n{}", log.join("\n")));
        match lines.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => panic!("the gateway did not start:\n{}", log.join("\n")),
        }
    }

    let mut alice = XmppClient::connect(&prosody, "alice@xmpp.test", "alice-pass").await;

    // The app writes with curl (a shell-level client) …
    let body = r#"{"from": "im:bot@app.test", "to": "xmpp:alice@xmpp.test", "text": "hello from curl", "conversation": "c-1"}"#;
    let curl = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .arg(format!("http://127.0.0.1:{api_port}/v1/messages"))
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["-H", "Content-Type: application/json", "-d", body])
        .output()
        .expect("curl runs");
    let out = String::from_utf8_lossy(&curl.stdout).into_owned();
    assert!(out.trim_end().ends_with("202"), "curl: {out}");
    assert!(out.contains("\"id\":\"gw-"), "curl: {out}");
    let got = alice
        .expect(|ev| ev.get("body") == Some("hello from curl"), TIMEOUT)
        .await;
    assert_eq!(got.sender_bare(), Some("bot\\40app.test@gw.xmpp.test"));
    assert_eq!(got.get("thread"), Some("c-1"));

    // … a wrong token is refused with a problem document and nothing is delivered.
    let bad = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .arg(format!("http://127.0.0.1:{api_port}/v1/messages"))
        .args(["-H", "Authorization: Bearer wrong-token-0000000"])
        .args(["-H", "Content-Type: application/json", "-d", body])
        .output()
        .expect("curl runs");
    let out = String::from_utf8_lossy(&bad.stdout).into_owned();
    assert!(out.trim_end().ends_with("401"), "curl: {out}");
    assert!(out.contains("not-authorized"), "curl: {out}");

    // alice replies to the app user; the app's receiver gets a signed transaction.
    alice
        .send_message(
            "bot\\40app.test@gw.xmpp.test",
            "hi bot",
            MessageExtras::default(),
        )
        .await;
    let mut event = None;
    for _ in 0..200 {
        let found = store.lock().ok().and_then(|s| {
            s.transactions
                .iter()
                .flat_map(|(_, t)| t["events"].as_array().cloned().unwrap_or_default())
                .find(|e| e["type"] == "message")
        });
        if found.is_some() {
            event = found;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = event.expect("the reply reached the app's receiver");
    assert_eq!(event["text"], "hi bot");
    assert_eq!(event["to"], "im:bot@app.test");
    assert!(
        event["from"]
            .as_str()
            .is_some_and(|f| f.starts_with("im:alice@xmpp.test")),
        "{event}"
    );
    receiver.abort();
}
