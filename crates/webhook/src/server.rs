//! The HTTP side of the inbound API (axum): authentication, rate limiting, body limits,
//! idempotency, problem responses, the SSE event stream and the OpenAPI document.
//!
//! Every request goes through the same steps, in this order: bearer token (`401`), rate
//! limit (`429`), body size and read time (`413`, `408`), `Idempotency-Key` replay, JSON
//! (`400`), the sender's domain (`403`), then submission to the broker.

#![allow(clippy::disallowed_methods)] // a driver: the HTTP server stamps what it receives

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

use cpim::{Address, Condition};
use cpim_broker::envelope::ProtocolId;
use cpim_broker::{AdapterContext, Inbound, Submitter};

use crate::api::{AcceptedResponse, Problem, Request};
use crate::client::OutboundSink;
use crate::config::{AppConfig, WebhookConfig, SSE_MAX_AGE};
use crate::events::EventLog;

/// The OpenAPI 3.1 description of this API, served at `GET /v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/webhook-openapi.json");

/// How many idempotency keys are remembered at most (oldest forgotten first).
pub const IDEMPOTENCY_CAPACITY: usize = 10_000;
/// How long an idempotency key's answer is remembered.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_MAX: usize = 255;

const PROBLEM_JSON: &str = "application/problem+json";

/// One configured application, as the server and the adapter see it.
pub(crate) struct App {
    pub(crate) name: String,
    /// Lowercase.
    pub(crate) domains: Vec<String>,
    token_hash: [u8; 32],
    pub(crate) log: EventLog,
    pub(crate) sink: Option<Arc<dyn OutboundSink>>,
    bucket: Mutex<Bucket>,
}

impl App {
    pub(crate) fn new(
        config: &AppConfig,
        sink: Option<Arc<dyn OutboundSink>>,
        retention: usize,
    ) -> App {
        App {
            name: config.name.clone(),
            domains: config
                .domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            token_hash: sha256(config.token.as_bytes()),
            // Without a URL the log is the only delivery: it holds what no reader has had.
            log: EventLog::new(retention, SSE_MAX_AGE, sink.is_none()),
            sink,
            bucket: Mutex::new(Bucket {
                tokens: None,
                last: Instant::now(),
            }),
        }
    }
}

/// What the handlers share.
pub(crate) struct Shared {
    pub(crate) apps: Vec<App>,
    submitter: Submitter,
    shutdown: watch::Receiver<bool>,
    body_limit: usize,
    rate_per_sec: f64,
    burst: f64,
    request_timeout: Duration,
    idempotency: Mutex<IdempotencyStore>,
}

impl Shared {
    pub(crate) fn new(config: &WebhookConfig, apps: Vec<App>, context: AdapterContext) -> Shared {
        Shared {
            apps,
            submitter: context.submitter,
            shutdown: context.shutdown,
            body_limit: config.body_limit,
            rate_per_sec: config.rate_per_sec,
            burst: f64::from(config.burst),
            request_timeout: Duration::from_secs(config.request_timeout_secs),
            idempotency: Mutex::new(IdempotencyStore::new(
                IDEMPOTENCY_CAPACITY,
                IDEMPOTENCY_WINDOW,
            )),
        }
    }
}

/// Serves the API on `listener` until the shutdown flag is set.
pub(crate) fn spawn(listener: crate::listener::LimitedListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let app = router(shared);
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "webhook API server failed");
        }
    });
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/presence", post(presence))
        .route("/v1/subscriptions", post(subscribe).delete(unsubscribe))
        .route("/v1/subscriptions/authorizations", post(authorize))
        .route("/v1/composing", post(composing))
        .route("/v1/events", get(events))
        .route("/v1/openapi.json", get(openapi))
        .fallback(not_found)
        .with_state(shared)
}

/// The routes that submit something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Messages,
    Presence,
    Subscribe,
    Unsubscribe,
    Authorize,
    Composing,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Messages => "POST /v1/messages",
            Route::Presence => "POST /v1/presence",
            Route::Subscribe => "POST /v1/subscriptions",
            Route::Unsubscribe => "DELETE /v1/subscriptions",
            Route::Authorize => "POST /v1/subscriptions/authorizations",
            Route::Composing => "POST /v1/composing",
        }
    }

    fn parse(self, body: &[u8], uri: &Uri) -> Result<Request, Problem> {
        let bad = |e: serde_json::Error| {
            Problem::new(Condition::BadRequest, format!("malformed JSON body: {e}"))
        };
        Ok(match self {
            Route::Messages => Request::Message(serde_json::from_slice(body).map_err(bad)?),
            Route::Presence => Request::Presence(serde_json::from_slice(body).map_err(bad)?),
            Route::Subscribe => Request::Subscribe(serde_json::from_slice(body).map_err(bad)?),
            Route::Unsubscribe if body.iter().all(u8::is_ascii_whitespace) => {
                let Query(q) = Query::try_from_uri(uri).map_err(|e| {
                    Problem::new(
                        Condition::BadRequest,
                        format!("give `watcher` and `target` as JSON or query: {e}"),
                    )
                })?;
                Request::Unsubscribe(q)
            }
            Route::Unsubscribe => Request::Unsubscribe(serde_json::from_slice(body).map_err(bad)?),
            Route::Authorize => Request::Authorize(serde_json::from_slice(body).map_err(bad)?),
            Route::Composing => Request::Composing(serde_json::from_slice(body).map_err(bad)?),
        })
    }
}

async fn messages(State(s): State<Arc<Shared>>, h: HeaderMap, u: Uri, b: Body) -> Response {
    handle(&s, Route::Messages, &h, &u, b).await
}
async fn presence(State(s): State<Arc<Shared>>, h: HeaderMap, u: Uri, b: Body) -> Response {
    handle(&s, Route::Presence, &h, &u, b).await
}
async fn subscribe(State(s): State<Arc<Shared>>, h: HeaderMap, u: Uri, b: Body) -> Response {
    handle(&s, Route::Subscribe, &h, &u, b).await
}
async fn unsubscribe(State(s): State<Arc<Shared>>, h: HeaderMap, u: Uri, b: Body) -> Response {
    handle(&s, Route::Unsubscribe, &h, &u, b).await
}
async fn authorize(State(s): State<Arc<Shared>>, h: HeaderMap, u: Uri, b: Body) -> Response {
    handle(&s, Route::Authorize, &h, &u, b).await
}
async fn composing(State(s): State<Arc<Shared>>, h: HeaderMap, u: Uri, b: Body) -> Response {
    handle(&s, Route::Composing, &h, &u, b).await
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found(uri: Uri) -> Response {
    problem_response(&Problem::new(
        Condition::ItemNotFound,
        format!("no such resource: {}", uri.path()),
    ))
}

/// The whole life of one submitting request.
async fn handle(
    shared: &Shared,
    route: Route,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
) -> Response {
    let app = match admit(shared, headers) {
        Ok(app) => app,
        Err(p) => return problem_response(&p),
    };
    let body = match read_body(shared, headers, body).await {
        Ok(b) => b,
        Err(p) => return problem_response(&p),
    };
    let key = match headers.get("idempotency-key").map(HeaderValue::to_str) {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= IDEMPOTENCY_KEY_MAX => Some(k.to_owned()),
        Some(_) => {
            return problem_response(&Problem::new(
                Condition::BadRequest,
                format!(
                    "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"
                ),
            ))
        }
    };
    let Some(key) = key else {
        let stored = execute(shared, app, route, &body, uri, None).await;
        return stored_response(&stored, false);
    };
    let fingerprint = {
        let mut h = Sha256::new();
        h.update(route.name().as_bytes());
        h.update([0]);
        h.update(uri.query().unwrap_or("").as_bytes());
        h.update([0]);
        h.update(&body);
        let mut out = [0u8; 32];
        out.copy_from_slice(h.finalize().as_slice());
        out
    };
    let scope = (app.name.clone(), key.clone());
    let begun = lock(&shared.idempotency).begin(&scope, fingerprint, Instant::now());
    match begun {
        Begin::New => {}
        Begin::Replay(stored) => return stored_response(&stored, true),
        Begin::InProgress => {
            return problem_response(&Problem::new(
                Condition::Conflict,
                "a request with this Idempotency-Key is still being processed",
            ))
        }
        Begin::Mismatch => {
            return problem_response(
                &Problem::new(
                    Condition::NotAcceptable,
                    "this Idempotency-Key was used with a different request",
                )
                .with_status(422),
            )
        }
    }
    let stored = execute(shared, app, route, &body, uri, Some(&key)).await;
    let retryable = matches!(stored.status, 408 | 429 | 500 | 503);
    let mut store = lock(&shared.idempotency);
    if retryable {
        store.abort(&scope);
    } else {
        store.finish(&scope, stored.clone());
    }
    drop(store);
    stored_response(&stored, false)
}

/// An answer as remembered for idempotent replay.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    status: u16,
    content_type: &'static str,
    body: Bytes,
    retry_after: Option<u64>,
}

fn stored_response(stored: &Stored, replayed: bool) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, stored.body.clone()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(stored.content_type),
    );
    if let Some(secs) = stored.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if stored.status == 401 {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn problem_stored(p: &Problem) -> Stored {
    let title = StatusCode::from_u16(p.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    Stored {
        status: p.status,
        content_type: PROBLEM_JSON,
        body: Bytes::from(p.body(title).to_string()),
        retry_after: p.retry_after_secs(),
    }
}

fn problem_response(p: &Problem) -> Response {
    stored_response(&problem_stored(p), false)
}

/// Parses, checks and submits; the answer is always a [`Stored`] (success or problem).
async fn execute(
    shared: &Shared,
    app: &App,
    route: Route,
    body: &[u8],
    uri: &Uri,
    key: Option<&str>,
) -> Stored {
    let result = async {
        let request = route.parse(body, uri)?;
        let submission = request.to_submission()?;
        check_sender(app, &submission.from)?;
        let mut inbound = Inbound::new(submission.event, submission.from, submission.to);
        inbound.received_at_ms = cpim_broker::envelope::unix_now_ms();
        if let Some(key) = key {
            inbound.protocol_ids.push(ProtocolId {
                kind: "http.idempotency-key".to_owned(),
                value: key.to_owned(),
            });
            inbound.dedup_key = Some(format!("{}\n{key}", app.name));
        }
        let accepted = shared
            .submitter
            .submit(inbound)
            .await
            .map_err(|r| Problem::new(r.condition, r.text).with_retry_after(r.retry_after))?;
        tracing::debug!(app = %app.name, route = route.name(), msg_id = %accepted.id, "accepted");
        Ok::<_, Problem>(AcceptedResponse {
            id: accepted.id.to_string(),
        })
    }
    .await;
    match result {
        Ok(answer) => Stored {
            status: 202,
            content_type: "application/json",
            body: Bytes::from(serde_json::to_vec(&answer).unwrap_or_default()),
            retry_after: None,
        },
        Err(mut p) => {
            if matches!(p.status, 429 | 503) && p.retry_after.is_none() {
                p.retry_after = Some(Duration::from_secs(1));
            }
            problem_stored(&p)
        }
    }
}

/// An application may only send as addresses in its own domains.
fn check_sender(app: &App, from: &Address) -> Result<(), Problem> {
    let domain = from.domain().to_ascii_lowercase();
    if app.domains.contains(&domain) {
        Ok(())
    } else {
        Err(Problem::new(
            Condition::Forbidden,
            format!("application `{}` may not send as {from}", app.name),
        ))
    }
}

/// Authenticates the bearer token and takes one token from the application's bucket.
fn admit<'a>(shared: &'a Shared, headers: &HeaderMap) -> Result<&'a App, Problem> {
    let unauthorized = || {
        Problem::new(
            Condition::NotAuthorized,
            "a valid `Authorization: Bearer <token>` is required",
        )
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or_else(unauthorized)?;
    let presented = sha256(token.as_bytes());
    // Every application's token is compared, in constant time, whatever matches.
    let mut found = None;
    for app in &shared.apps {
        if constant_time_eq(&presented, &app.token_hash) {
            found = Some(app);
        }
    }
    let app = found.ok_or_else(unauthorized)?;
    lock(&app.bucket)
        .take(shared.rate_per_sec, shared.burst, Instant::now())
        .map_err(|wait| {
            Problem::new(
                Condition::ResourceConstraint,
                format!("rate limit of application `{}` exceeded", app.name),
            )
            .with_retry_after(Some(wait))
        })?;
    Ok(app)
}

/// Reads the body within the size limit and the request timeout.
async fn read_body(shared: &Shared, headers: &HeaderMap, body: Body) -> Result<Bytes, Problem> {
    let too_large = || {
        Problem::new(
            Condition::PolicyViolation,
            format!(
                "the request body is larger than {} bytes",
                shared.body_limit
            ),
        )
        .with_status(413)
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > shared.body_limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(
        shared.request_timeout,
        axum::body::to_bytes(body, shared.body_limit),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        // The only read error a client still hears about is the length limit.
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(Problem::new(
            Condition::RemoteServerTimeout,
            "the request body was not received in time",
        )
        .with_status(408)),
    }
}

/// `GET /v1/events`: the application's events as Server-Sent Events.
async fn events(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let app = match admit(&shared, &headers) {
        Ok(app) => app,
        Err(p) => return problem_response(&p),
    };
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let state = StreamState {
        log: app.log.clone(),
        changed: app.log.subscribe(),
        shutdown: shared.shutdown.clone(),
        last: after,
        pending: VecDeque::new(),
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                st.last = e.seq;
                st.log.mark_read(e.seq);
                let event = SseEvent::default().id(e.seq.to_string()).data(&*e.data);
                return Some((Ok::<_, Infallible>(event), st));
            }
            if *st.shutdown.borrow() {
                return None;
            }
            st.changed.borrow_and_update();
            let batch = st.log.after(st.last, 256);
            if let Some((after, first)) = batch.gap {
                // Events the log no longer has: the reader is told, never cut silently.
                st.last = first - 1;
                let gap = serde_json::json!({"type": "gap", "after": after, "next": first});
                let event = SseEvent::default().event("gap").data(gap.to_string());
                st.pending.extend(batch.events);
                return Some((Ok::<_, Infallible>(event), st));
            }
            if !batch.events.is_empty() {
                st.pending.extend(batch.events);
                continue;
            }
            tokio::select! {
                r = st.changed.changed() => if r.is_err() { return None },
                _ = st.shutdown.changed() => {}
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

struct StreamState {
    log: EventLog,
    changed: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    last: u64,
    pending: VecDeque<crate::events::LoggedEvent>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(Sha256::digest(data).as_slice());
    out
}

/// Compares two equal-length digests without an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0
}

/// A token bucket; `tokens` is `None` until first use (starts full).
#[derive(Debug)]
struct Bucket {
    tokens: Option<f64>,
    last: Instant,
}

impl Bucket {
    /// Takes one token, or says how long until one is available.
    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        let tokens = self
            .tokens
            .map_or(burst, |t| (t + elapsed * rate).min(burst));
        self.last = now;
        if tokens >= 1.0 {
            self.tokens = Some(tokens - 1.0);
            Ok(())
        } else {
            self.tokens = Some(tokens);
            Err(Duration::from_secs_f64(
                ((1.0 - tokens) / rate).clamp(0.001, 86_400.0),
            ))
        }
    }
}

type Scope = (String, String);

#[derive(Debug)]
enum Slot {
    Pending,
    Done(Stored),
}

#[derive(Debug)]
struct Entry {
    fingerprint: [u8; 32],
    at: Instant,
    slot: Slot,
}

#[derive(Debug, PartialEq, Eq)]
enum Begin {
    New,
    Replay(Stored),
    InProgress,
    Mismatch,
}

/// The answers remembered per (application, `Idempotency-Key`).
#[derive(Debug)]
struct IdempotencyStore {
    entries: HashMap<Scope, Entry>,
    order: VecDeque<(Instant, Scope)>,
    capacity: usize,
    window: Duration,
}

impl IdempotencyStore {
    fn new(capacity: usize, window: Duration) -> Self {
        IdempotencyStore {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            window,
        }
    }

    fn begin(&mut self, scope: &Scope, fingerprint: [u8; 32], now: Instant) -> Begin {
        self.expire(now);
        if let Some(entry) = self.entries.get(scope) {
            return if entry.fingerprint != fingerprint {
                Begin::Mismatch
            } else {
                match &entry.slot {
                    Slot::Pending => Begin::InProgress,
                    Slot::Done(stored) => Begin::Replay(stored.clone()),
                }
            };
        }
        self.entries.insert(
            scope.clone(),
            Entry {
                fingerprint,
                at: now,
                slot: Slot::Pending,
            },
        );
        self.order.push_back((now, scope.clone()));
        while self.entries.len() > self.capacity {
            let Some((at, old)) = self.order.pop_front() else {
                break;
            };
            self.remove_if(&old, at);
        }
        Begin::New
    }

    fn finish(&mut self, scope: &Scope, stored: Stored) {
        if let Some(entry) = self.entries.get_mut(scope) {
            entry.slot = Slot::Done(stored);
        }
    }

    fn abort(&mut self, scope: &Scope) {
        self.entries.remove(scope);
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) <= self.window {
                break;
            }
            if let Some((at, old)) = self.order.pop_front() {
                self.remove_if(&old, at);
            }
        }
    }

    /// Removes the entry only if it is the one recorded at `at` (not a newer reuse).
    fn remove_if(&mut self, scope: &Scope, at: Instant) {
        if self.entries.get(scope).is_some_and(|e| e.at == at) {
            self.entries.remove(scope);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stored(status: u16) -> Stored {
        Stored {
            status,
            content_type: "application/json",
            body: Bytes::from_static(b"{}"),
            retry_after: None,
        }
    }

    #[test]
    fn constant_time_compare() {
        let a = sha256(b"secret");
        assert!(constant_time_eq(&a, &sha256(b"secret")));
        assert!(!constant_time_eq(&a, &sha256(b"secreT")));
    }

    #[test]
    fn token_bucket_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = Bucket {
            tokens: None,
            last: t0,
        };
        assert!(b.take(2.0, 2.0, t0).is_ok());
        assert!(b.take(2.0, 2.0, t0).is_ok());
        let wait = b.take(2.0, 2.0, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(b.take(2.0, 2.0, t0 + Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn idempotency_replays_and_forgets() {
        let t0 = Instant::now();
        let mut s = IdempotencyStore::new(2, Duration::from_secs(10));
        let k = |n: &str| ("app".to_owned(), n.to_owned());
        assert_eq!(s.begin(&k("a"), [1; 32], t0), Begin::New);
        assert_eq!(s.begin(&k("a"), [1; 32], t0), Begin::InProgress);
        s.finish(&k("a"), stored(202));
        assert_eq!(s.begin(&k("a"), [1; 32], t0), Begin::Replay(stored(202)));
        assert_eq!(s.begin(&k("a"), [2; 32], t0), Begin::Mismatch);
        // Aborted keys may be tried again.
        assert_eq!(s.begin(&k("b"), [1; 32], t0), Begin::New);
        s.abort(&k("b"));
        assert_eq!(s.begin(&k("b"), [1; 32], t0), Begin::New);
        // Capacity: a third key pushes out the oldest.
        assert_eq!(s.begin(&k("c"), [1; 32], t0), Begin::New);
        assert_eq!(s.begin(&k("a"), [1; 32], t0), Begin::New);
        // Window.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(s.begin(&k("c"), [1; 32], later), Begin::New);
    }
}
