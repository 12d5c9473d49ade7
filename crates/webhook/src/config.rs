//! The webhook adapter's configuration (`[adapters.NAME]` with `type = "webhook"`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// The shortest bearer token an application may have (bytes); `cpim-gateway check` and
/// the adapter's start refuse shorter ones alike.
pub const MIN_TOKEN_LEN: usize = 16;

/// One application allowed to use the API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The application's name (logs, idempotency scope, outbound sink key).
    pub name: String,
    /// The domains of its users (`im:bot@DOMAIN`); it may only send as these.
    pub domains: Vec<String>,
    /// Its bearer token.
    pub token: String,
    /// Where events are POSTed (by the outbound client); `None`: SSE only.
    #[serde(default)]
    pub url: Option<String>,
}

/// The webhook adapter's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The adapter's name.
    pub name: String,
    /// Where the API listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The applications.
    pub apps: Vec<AppConfig>,
    /// Largest request body in bytes (larger: `413`).
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
    /// Requests per second per token, sustained (token bucket refill rate).
    #[serde(default = "default_rate")]
    pub rate_per_sec: f64,
    /// Requests per token in a burst (token bucket size).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Events kept per application for `GET /v1/events` resumption.
    #[serde(default = "default_retention")]
    pub sse_retention: usize,
    /// How long a client may take to send its request body (larger: `408`).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Connection limits and timeouts of the API listener.
    #[serde(skip, default = "default_http_limits")]
    pub http_limits: crate::listener::HttpLimits,
}

/// The API listener's limits unless configured: 128 connections, 32 from one address,
/// 10 s for a request head, 75 s without traffic.
pub fn default_http_limits() -> crate::listener::HttpLimits {
    crate::listener::HttpLimits {
        max_connections: 128,
        max_per_ip: 32,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(75),
    }
}

fn default_body_limit() -> usize {
    64 * 1024
}
fn default_rate() -> f64 {
    20.0
}
fn default_burst() -> u32 {
    40
}
fn default_retention() -> usize {
    10_000
}
fn default_request_timeout() -> u64 {
    10
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            name: "webhook".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            apps: Vec::new(),
            body_limit: default_body_limit(),
            rate_per_sec: default_rate(),
            burst: default_burst(),
            sse_retention: default_retention(),
            request_timeout_secs: default_request_timeout(),
            http_limits: default_http_limits(),
        }
    }
}

/// How long events stay in an application's SSE log at most.
pub const SSE_MAX_AGE: Duration = Duration::from_secs(3600);
