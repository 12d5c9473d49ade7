//! Outbound delivery: events for an application leave as signed, idempotent transactions.
//!
//! Modelled on the Matrix application-service API: the events queued for one application
//! are batched into a transaction and sent as `PUT {url}/transactions/{txn_id}` with the JSON
//! body `{"events": [...]}`. A retry of a transaction reuses its `txn_id`, so the receiver can
//! deduplicate. Every request carries `Authorization: Bearer <app token>` and a
//! [`SIGNATURE_HEADER`] made by [`sign`] (receivers check it with [`verify`]).
//!
//! Per application, one [`Outbox`] runs one sender task: transactions leave strictly one after
//! the other (the next is not sent before the previous one got a 2xx answer, or was given up),
//! so the application sees events in the order they were queued.
//!
//! Not done here: persistence (queued events are lost when the process stops), and the
//! inbound server.

#![allow(clippy::disallowed_methods)] // a driver: retries and backoff

use std::fmt;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};

use cpim_broker::backoff::Backoff;

/// Name of the header carrying the request signature: `t=<unix seconds>,v1=<hex HMAC>`.
pub const SIGNATURE_HEADER: &str = "X-Cpim-Signature";

/// Capacity of the queue between [`Outbox::send`] and the sender task, in events. When it is
/// full, `send` waits.
pub const QUEUE_CAPACITY: usize = 10_000;

/// Where and how to reach one application.
#[derive(Clone)]
pub struct AppTarget {
    /// The application's name, used in logs.
    pub app: String,
    /// Base URL of the application's receiver; `/transactions/{txn_id}` is appended (a
    /// trailing slash is tolerated).
    pub url: String,
    /// The application's shared secret: sent as the bearer token and used as the HMAC key.
    pub token: String,
}

impl fmt::Debug for AppTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppTarget")
            .field("app", &self.app)
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// How transactions are batched, retried and given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry; doubled after each failed attempt (±20 % jitter).
    pub min_backoff: Duration,
    /// Upper bound of the doubling backoff (before jitter).
    pub max_backoff: Duration,
    /// Time, counted from a transaction's first attempt, after which its events fail with
    /// [`Undeliverable`]. A retry that would start later than this (after the backoff or the
    /// receiver's `Retry-After`) is not made: the transaction is given up at once.
    pub give_up_after: Duration,
    /// Largest number of events in one transaction (at least 1 is used).
    pub max_batch: usize,
    /// Timeout of one HTTP request (connect, send, answer).
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 250 ms doubling to 30 s, give up after 10 minutes, 100 events per transaction,
    /// 30 s per request.
    fn default() -> Self {
        RetryPolicy {
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            give_up_after: Duration::from_secs(600),
            max_batch: 100,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// An event could not be delivered: its transaction was given up, or the outbox stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undeliverable after {attempts} attempt(s): {last_error}")]
pub struct Undeliverable {
    /// Number of HTTP attempts made for the transaction carrying the event (0 when the event
    /// never left, e.g. the outbox stopped).
    pub attempts: u32,
    /// Description of the last failure (HTTP status or transport error).
    pub last_error: String,
}

/// The delivery queue of one application; cloning is cheap and shares the queue.
///
/// The sender task ends once every clone is dropped and the queued events are handled.
#[derive(Clone)]
pub struct Outbox {
    app: String,
    queue: mpsc::Sender<Queued>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox").field("app", &self.app).finish()
    }
}

impl Outbox {
    /// Spawns the app's sender task (needs a tokio runtime).
    pub fn start(target: AppTarget, policy: RetryPolicy, client: reqwest::Client) -> Outbox {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let app = target.app.clone();
        let start_ms = cpim_broker::envelope::unix_now_ms();
        let backoff = Backoff::new(policy.min_backoff, policy.max_backoff);
        let sender = Sender {
            target,
            policy,
            client,
            txn_prefix: format!("{start_ms:x}"),
            next_txn: 0,
            backoff,
        };
        tokio::spawn(sender.run(rx));
        Outbox { app, queue }
    }

    /// Queues one event; resolves `Ok` when the transaction carrying it got a 2xx, and
    /// `Err(Undeliverable)` after give-up (or when the outbox stopped). Waits while the queue
    /// is full. Dropping the returned future after the event was queued does not withdraw it:
    /// it is still delivered, only the outcome is not reported.
    pub async fn send(&self, event: serde_json::Value) -> Result<(), Undeliverable> {
        let (done, outcome) = oneshot::channel();
        if self.queue.send(Queued { event, done }).await.is_err() {
            return Err(stopped());
        }
        outcome.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// Signs `body` sent at `timestamp` (unix seconds) with `key`; returns the
/// [`SIGNATURE_HEADER`] value `t=<timestamp>,v1=<lowercase hex HMAC-SHA256>`, the MAC being
/// taken over `"<timestamp>." + body`.
pub fn sign(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    let tag = mac(key, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex(&tag))
}

/// Checks a [`SIGNATURE_HEADER`] value against `body`: the MAC is compared in constant time,
/// and the timestamp must be within `tolerance_secs` of `now` (unix seconds) either way.
/// Malformed headers are rejected.
pub fn verify(key: &[u8], header: &str, body: &[u8], now: u64, tolerance_secs: u64) -> bool {
    let mut timestamp = None;
    let mut tag = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = v.parse::<u64>().ok(),
            Some(("v1", v)) => tag = unhex(v),
            _ => {}
        }
    }
    let (Some(timestamp), Some(tag)) = (timestamp, tag) else {
        return false;
    };
    if now.abs_diff(timestamp) > tolerance_secs {
        return false;
    }
    mac(key, timestamp, body).verify_slice(&tag).is_ok()
}

/// Builds the reqwest client used for deliveries, with rustls. Installs the ring crypto
/// provider as the process default first if none is installed, so there is exactly one
/// provider in the process.
///
/// # Errors
/// When reqwest cannot build the client (e.g. the TLS configuration is refused).
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one in between: that is the AlreadyInstalled error,
        // and the process still has exactly one provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder().tls_backend_rustls().build()
}

/// One event waiting in the queue, with the way to tell its sender the outcome.
struct Queued {
    event: serde_json::Value,
    done: oneshot::Sender<Result<(), Undeliverable>>,
}

/// The sender task's state.
struct Sender {
    target: AppTarget,
    policy: RetryPolicy,
    client: reqwest::Client,
    txn_prefix: String,
    next_txn: u64,
    backoff: Backoff,
}

/// Why one attempt failed, and when the receiver asked us to come back.
struct AttemptError {
    message: String,
    retry_after: Option<Duration>,
}

impl Sender {
    async fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        let max_batch = self.policy.max_batch.max(1);
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let (events, waiters): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|q| (q.event, q.done)).unzip();
            let outcome = self.deliver(events).await;
            for waiter in waiters {
                // The caller may have stopped waiting; nothing to do then.
                let _ = waiter.send(outcome.clone());
            }
        }
        tracing::debug!(app = %self.target.app, "webhook outbox stopped");
    }

    /// Sends one transaction until a 2xx answer or give-up.
    async fn deliver(&mut self, events: Vec<serde_json::Value>) -> Result<(), Undeliverable> {
        let txn_id = format!("{}-{}", self.txn_prefix, self.next_txn);
        self.next_txn = self.next_txn.wrapping_add(1);
        let url = format!(
            "{}/transactions/{txn_id}",
            self.target.url.trim_end_matches('/')
        );
        let body = serde_json::to_vec(&serde_json::json!({ "events": events })).map_err(|e| {
            Undeliverable {
                attempts: 0,
                last_error: format!("cannot encode transaction: {e}"),
            }
        })?;
        let first_attempt = Instant::now();
        self.backoff.reset();
        let mut attempts = 0u32;
        loop {
            attempts = attempts.saturating_add(1);
            let error = match self.attempt(&url, &body).await {
                Ok(()) => {
                    tracing::debug!(app = %self.target.app, %txn_id, attempts, events = events.len(), "webhook transaction delivered");
                    return Ok(());
                }
                Err(error) => error,
            };
            // A Retry-After replaces the computed delay; the backoff still advances.
            let computed = self.backoff.next_delay();
            let delay = error.retry_after.unwrap_or(computed);
            if first_attempt.elapsed().saturating_add(delay) > self.policy.give_up_after {
                tracing::warn!(app = %self.target.app, %txn_id, attempts, error = %error.message, "webhook transaction given up");
                return Err(Undeliverable {
                    attempts,
                    last_error: error.message,
                });
            }
            tracing::debug!(app = %self.target.app, %txn_id, attempts, error = %error.message, ?delay, "webhook transaction will be retried");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, url: &str, body: &[u8]) -> Result<(), AttemptError> {
        let signature = sign(self.target.token.as_bytes(), unix_now(), body);
        let answer = self
            .client
            .put(url)
            .timeout(self.policy.request_timeout)
            .header(AUTHORIZATION, format!("Bearer {}", self.target.token))
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| AttemptError {
                message: format!("transport: {e}"),
                retry_after: None,
            })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        Err(AttemptError {
            message: format!("HTTP {status}"),
            retry_after: retry_after(answer.headers(), unix_now()),
        })
    }
}

/// Reads a `Retry-After` header (RFC 9110 §10.2.3): delta-seconds, or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`) turned into a delay from `now` (unix seconds; a date in
/// the past means no delay). Other forms are ignored.
fn retry_after(headers: &HeaderMap, now: u64) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = imf_fixdate(value)?;
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Parses an IMF-fixdate into unix seconds.
fn imf_fixdate(text: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [weekday, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    if !weekday.ends_with(',') {
        return None;
    }
    let day: u64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let month = MONTHS.iter().position(|m| *m == month)?;
    // Four digits in an IMF-fixdate; bounding it also keeps the arithmetic below in range.
    let year: u64 = year.parse().ok().filter(|y| (1970..=9999).contains(y))?;
    let mut hms = time.split(':').map(|n| n.parse::<u64>().ok());
    let (Some(Some(h)), Some(Some(m)), Some(Some(s)), None) =
        (hms.next(), hms.next(), hms.next(), hms.next())
    else {
        return None;
    };
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_since_epoch(year, u64::try_from(month).ok()? + 1, day);
    Some(days * 86_400 + h * 3_600 + m * 60 + s)
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (year ≥ 1970), counting
/// years from March so that the leap day comes last.
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn mac(key: &[u8], timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this never takes the error path.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn unix_now() -> u64 {
    cpim_broker::envelope::unix_now_ms() / 1000
}

fn stopped() -> Undeliverable {
    Undeliverable {
        attempts: 0,
        last_error: "outbox stopped".to_owned(),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| char::from(c).to_digit(16);
            u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()
        })
        .collect()
}

/// Where events for an application go besides its SSE stream: the outbound client
/// (signed POSTs to the application's URL) implements this.
#[async_trait::async_trait]
pub trait OutboundSink: Send + Sync {
    /// Delivers one event object; `Err` says why it could not be delivered.
    async fn send(&self, event: serde_json::Value) -> Result<(), Undeliverable>;
}

/// The outbound client is the sink of an application with a URL: an event is delivered
/// when the transaction carrying it got a `2xx`.
#[async_trait::async_trait]
impl OutboundSink for Outbox {
    async fn send(&self, event: serde_json::Value) -> Result<(), Undeliverable> {
        Outbox::send(self, event).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn hex_round_trip() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xfe, 0xff];
        assert_eq!(hex(&bytes), "00017f80feff");
        assert_eq!(unhex("00017f80feff").as_deref(), Some(&bytes[..]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn rfc9110_10_2_3_retry_after_seconds_and_date() {
        use reqwest::header::HeaderValue;
        // Wed, 21 Oct 2015 07:28:00 GMT
        let at = 1_445_412_480;
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, at), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static(" 3 "));
        assert_eq!(retry_after(&h, at), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h, at - 90), Some(Duration::from_secs(90)));
        assert_eq!(retry_after(&h, at + 5), Some(Duration::ZERO));
        for bad in [
            "soon",
            "-1",
            "Wed, 21 Oct 2015 07:28:00 CET",
            "Wed, 21 Foo 2015 07:28:00 GMT",
            "Wed, 21 Oct 2015 07:28 GMT",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "Wed, 21 Oct 99999999999999999 07:28:00 GMT",
        ] {
            h.insert(RETRY_AFTER, HeaderValue::from_static(bad));
            assert_eq!(retry_after(&h, at), None, "{bad}");
        }
    }

    #[test]
    fn imf_fixdate_known_instants() {
        assert_eq!(imf_fixdate("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            imf_fixdate("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600)
        );
        assert_eq!(
            imf_fixdate("Fri, 01 Mar 2024 00:00:00 GMT"),
            Some(1_709_251_200)
        );
    }
}
