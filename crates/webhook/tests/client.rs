//! Outbound delivery against a real HTTP receiver on 127.0.0.1 (axum, port bound to 0).

#![allow(clippy::disallowed_methods)] // tests wait with deadlines and measure
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::Router;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use cpim_webhook::client::{
    http_client, sign, verify, AppTarget, Outbox, RetryPolicy, SIGNATURE_HEADER,
};

const TOKEN: &str = "app-secret-token";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------- signatures

#[test]
fn rfc4231_4_3_hmac_sha256_test_case_2() {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
    mac.update(b"what do ya want for nothing?");
    assert_eq!(
        hex(&mac.finalize().into_bytes()),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn sign_is_hmac_over_timestamp_dot_body() {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"key").unwrap();
    mac.update(b"1700000000.{\"events\":[]}");
    let expected = format!("t=1700000000,v1={}", hex(&mac.finalize().into_bytes()));
    assert_eq!(sign(b"key", 1_700_000_000, b"{\"events\":[]}"), expected);
}

#[test]
fn sign_verify_round_trip_and_tampering() {
    let body = br#"{"events":[{"type":"message","body":"hi"}]}"#;
    let t = 1_700_000_000;
    let header = sign(b"k1", t, body);
    assert!(verify(b"k1", &header, body, t, 300));
    assert!(verify(b"k1", &header, body, t + 300, 300));
    // Tampered body, key, timestamp, MAC.
    assert!(!verify(b"k1", &header, b"{\"events\":[]}", t, 300));
    assert!(!verify(b"k2", &header, body, t, 300));
    let moved = header.replace("t=1700000000", "t=1700000001");
    assert!(!verify(b"k1", &moved, body, t, 300));
    let mut flipped = header.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == '0' { '1' } else { '0' });
    assert!(!verify(b"k1", &flipped, body, t, 300));
    // Stale and future timestamps.
    assert!(!verify(b"k1", &header, body, t + 301, 300));
    assert!(!verify(b"k1", &header, body, t - 301, 300));
    // Malformed headers.
    for bad in [
        "",
        "t=1700000000",
        "v1=00",
        "t=x,v1=00",
        "t=1700000000,v1=zz",
    ] {
        assert!(!verify(b"k1", bad, body, t, 300), "{bad:?}");
    }
}

// ---------------------------------------------------------------- receiver

/// One answer of the scripted receiver.
#[derive(Clone, Copy)]
struct Answer {
    status: u16,
    retry_after: Option<u64>,
}

const OK: Answer = Answer {
    status: 200,
    retry_after: None,
};

fn fail(status: u16) -> Answer {
    Answer {
        status,
        retry_after: None,
    }
}

#[derive(Default)]
struct Log {
    /// Every authenticated request: transaction id and arrival time.
    hits: Vec<(String, Instant)>,
    /// Requests refused for a bad bearer or signature.
    rejected: usize,
    /// Transactions already processed (dedupe by txn_id).
    seen: HashSet<String>,
    /// Events accepted, in arrival order, each once.
    events: Vec<Value>,
}

struct Receiver {
    script: Mutex<Vec<Answer>>,
    otherwise: Answer,
    delay: Duration,
    log: Mutex<Log>,
}

async fn transaction(
    State(rx): State<Arc<Receiver>>,
    Path(txn_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer_ok = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {TOKEN}").as_str());
    let signature_ok = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| verify(TOKEN.as_bytes(), h, &body, now(), 30));
    if !bearer_ok || !signature_ok {
        rx.log.lock().unwrap().rejected += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    tokio::time::sleep(rx.delay).await;
    {
        // Process the transaction (once per txn_id), whatever the answer says: a lost or
        // failed answer must not duplicate events.
        let mut log = rx.log.lock().unwrap();
        log.hits.push((txn_id.clone(), Instant::now()));
        if log.seen.insert(txn_id) {
            let parsed: Value = serde_json::from_slice(&body).unwrap();
            log.events
                .extend(parsed["events"].as_array().unwrap().iter().cloned());
        }
    }
    let answer = {
        let mut script = rx.script.lock().unwrap();
        if script.is_empty() {
            rx.otherwise
        } else {
            script.remove(0)
        }
    };
    let mut response = StatusCode::from_u16(answer.status).unwrap().into_response();
    if let Some(secs) = answer.retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    response
}

struct Server {
    url: String,
    receiver: Arc<Receiver>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(script: Vec<Answer>, otherwise: Answer, delay: Duration) -> Server {
        let receiver = Arc::new(Receiver {
            script: Mutex::new(script),
            otherwise,
            delay,
            log: Mutex::new(Log::default()),
        });
        let app = Router::new()
            .route("/hooks/transactions/{txn_id}", put(transaction))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server {
            url,
            receiver,
            stop,
            task,
        }
    }

    fn outbox(&self, token: &str, policy: RetryPolicy) -> Outbox {
        let target = AppTarget {
            app: "test-app".to_owned(),
            url: format!("{}/", self.url),
            token: token.to_owned(),
        };
        Outbox::start(target, policy, http_client().unwrap())
    }

    fn log<T>(&self, f: impl FnOnce(&Log) -> T) -> T {
        f(&self.receiver.log.lock().unwrap())
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("receiver stops")
            .unwrap();
    }
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        give_up_after: Duration::from_secs(5),
        max_batch: 100,
        request_timeout: Duration::from_secs(2),
    }
}

// ---------------------------------------------------------------- delivery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_valid_bearer_and_signature() {
    let server = Server::start(vec![], OK, Duration::ZERO).await;
    let outbox = server.outbox(TOKEN, fast_policy());
    for i in 0..3 {
        outbox.send(json!({ "n": i })).await.unwrap();
    }
    assert_eq!(server.log(|l| (l.hits.len(), l.rejected)), (3, 0));
    assert_eq!(
        server.log(|l| l.events.clone()),
        vec![json!({"n": 0}), json!({"n": 1}), json!({"n": 2})]
    );

    // The receiver really checks: a wrong token is refused and the event fails.
    let wrong = server.outbox(
        "not-the-token",
        RetryPolicy {
            give_up_after: Duration::from_millis(100),
            ..fast_policy()
        },
    );
    let err = wrong.send(json!({ "n": 99 })).await.unwrap_err();
    assert!(err.attempts >= 1);
    assert!(err.last_error.contains("401"), "{err}");
    assert!(server.log(|l| l.rejected) >= 1);
    assert_eq!(server.log(|l| l.events.len()), 3);

    drop((outbox, wrong));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_transaction_keeps_its_id_and_is_accepted_once() {
    let server = Server::start(vec![fail(500), fail(500), OK], OK, Duration::ZERO).await;
    let outbox = server.outbox(TOKEN, fast_policy());
    outbox
        .send(json!({ "type": "message", "body": "hello" }))
        .await
        .unwrap();

    let hits = server.log(|l| l.hits.clone());
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|(id, _)| *id == hits[0].0), "{hits:?}");
    assert_eq!(
        server.log(|l| l.events.clone()),
        vec![json!({ "type": "message", "body": "hello" })]
    );

    // The next transaction gets a new id.
    outbox.send(json!({ "n": 2 })).await.unwrap();
    let hits = server.log(|l| l.hits.clone());
    assert_eq!(hits.len(), 4);
    assert_ne!(hits[3].0, hits[0].0);

    drop(outbox);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_keep_their_order_and_are_batched_while_receiver_is_slow() {
    let server = Server::start(vec![], OK, Duration::from_millis(50)).await;
    let outbox = server.outbox(TOKEN, fast_policy());

    // Queue the 50 events in a known order: poll each `send` once (it enqueues, then waits
    // for its transaction) before creating the next.
    let mut pending = Vec::new();
    for i in 0..50 {
        let mut send = Box::pin(outbox.send(json!({ "seq": i })));
        assert!(futures::poll!(send.as_mut()).is_pending());
        pending.push(send);
    }
    for outcome in futures::future::join_all(pending).await {
        outcome.unwrap();
    }

    let expected: Vec<Value> = (0..50).map(|i| json!({ "seq": i })).collect();
    assert_eq!(server.log(|l| l.events.clone()), expected);
    let transactions = server.log(|l| l.hits.len());
    assert!(transactions < 50, "{transactions} transactions");
    assert_eq!(server.log(|l| l.rejected), 0);

    drop(outbox);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let throttled = Answer {
        status: 503,
        retry_after: Some(1),
    };
    let server = Server::start(vec![throttled], OK, Duration::ZERO).await;
    let outbox = server.outbox(TOKEN, fast_policy());
    outbox.send(json!({ "n": 1 })).await.unwrap();

    let hits = server.log(|l| l.hits.clone());
    assert_eq!(hits.len(), 2);
    let waited = hits[1].1.duration_since(hits[0].1);
    // Lower bound only (the first hit is logged after the body was read, hence the margin).
    assert!(waited >= Duration::from_millis(950), "{waited:?}");

    drop(outbox);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_is_given_up_after_the_deadline() {
    let server = Server::start(vec![], fail(503), Duration::ZERO).await;
    let outbox = server.outbox(
        TOKEN,
        RetryPolicy {
            min_backoff: Duration::from_millis(100),
            give_up_after: Duration::from_secs(1),
            ..fast_policy()
        },
    );
    let started = Instant::now();
    let err = outbox.send(json!({ "n": 1 })).await.unwrap_err();
    assert!(err.attempts >= 2, "{err}");
    assert!(err.last_error.contains("503"), "{err}");
    assert_eq!(server.log(|l| l.hits.len()), err.attempts as usize);
    // Lower bound only: never retried past the deadline, but did not give up early either.
    assert!(started.elapsed() >= Duration::from_millis(500));

    drop(outbox);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_fails_when_receiver_is_unreachable() {
    // Bind then drop a listener: nothing listens on that port any more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let outbox = Outbox::start(
        AppTarget {
            app: "gone".to_owned(),
            url,
            token: TOKEN.to_owned(),
        },
        RetryPolicy {
            give_up_after: Duration::from_millis(200),
            ..fast_policy()
        },
        http_client().unwrap(),
    );
    let err = outbox.send(json!({})).await.unwrap_err();
    assert!(err.attempts >= 2, "{err}");
    assert!(err.last_error.starts_with("transport"), "{err}");
}
