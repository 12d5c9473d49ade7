//! The webhook adapter: its configuration, the broker side ([`Adapter`]) and the
//! outbound sink boundary.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use cpim::Condition;
use cpim_broker::{Adapter, AdapterContext, AddressStyle, DeliveryOutcome, Envelope};

use crate::api::event_json;
use crate::client::Undeliverable;
use crate::server::{self, App, Shared};

/// Where events for an application go besides its SSE stream: the outbound client
/// (signed POSTs to the application's URL) implements this.
#[async_trait]
pub trait OutboundSink: Send + Sync {
    /// Delivers one event object; `Err` says why it could not be delivered.
    async fn send(&self, event: serde_json::Value) -> Result<(), Undeliverable>;
}

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

/// The running webhook adapter.
pub struct WebhookAdapter {
    name: String,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WebhookAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookAdapter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn invalid(text: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, text)
}

impl WebhookAdapter {
    /// Checks the configuration, binds the listener and serves the API until the
    /// context's shutdown flag is set. `sinks` maps application names to their outbound
    /// sinks; an application without one receives events by SSE only.
    pub async fn start(
        config: WebhookConfig,
        context: AdapterContext,
        mut sinks: HashMap<String, Arc<dyn OutboundSink>>,
    ) -> Result<(Arc<WebhookAdapter>, SocketAddr), io::Error> {
        let mut names = HashSet::new();
        let mut domains = HashSet::new();
        let mut tokens = HashSet::new();
        for app in &config.apps {
            if !names.insert(app.name.as_str()) {
                return Err(invalid(format!("application `{}` appears twice", app.name)));
            }
            if app.token.len() < 16 || !tokens.insert(app.token.as_str()) {
                return Err(invalid(format!(
                    "application `{}` needs its own token of at least 16 characters",
                    app.name
                )));
            }
            for d in &app.domains {
                if !domains.insert(d.to_ascii_lowercase()) {
                    return Err(invalid(format!("domain {d} belongs to two applications")));
                }
            }
        }
        if !config.rate_per_sec.is_finite() || config.rate_per_sec <= 0.0 || config.burst == 0 {
            return Err(invalid(
                "rate_per_sec and burst must be positive".to_owned(),
            ));
        }
        let apps = config
            .apps
            .iter()
            .map(|a| App::new(a, sinks.remove(&a.name), config.sse_retention))
            .collect();
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let bound = listener.local_addr()?;
        // Listening is this adapter's "connected" (readiness, `cpim_adapter_connected`).
        let metrics = context.metrics.clone();
        let mut shutdown = context.shutdown.clone();
        metrics.set_connected(true);
        tokio::spawn(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
            metrics.set_connected(false);
        });
        let shared = Arc::new(Shared::new(&config, apps, context));
        let listener =
            crate::listener::LimitedListener::new(listener, config.http_limits, "webhook");
        server::spawn(listener, shared.clone());
        tracing::info!(adapter = %config.name, %bound, "webhook API listening");
        let adapter = Arc::new(WebhookAdapter {
            name: config.name,
            shared,
        });
        Ok((adapter, bound))
    }
}

#[async_trait]
impl Adapter for WebhookAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn style(&self) -> AddressStyle {
        AddressStyle::Im
    }

    fn domains(&self) -> Vec<String> {
        self.shared
            .apps
            .iter()
            .flat_map(|a| a.domains.iter().cloned())
            .collect()
    }

    async fn deliver(&self, envelope: Envelope) -> DeliveryOutcome {
        let domain = envelope.to.domain().to_ascii_lowercase();
        let Some(app) = self
            .shared
            .apps
            .iter()
            .find(|a| a.domains.contains(&domain))
        else {
            return DeliveryOutcome::Failed {
                condition: Condition::ItemNotFound,
                text: Some(format!("no application owns domain {domain}")),
            };
        };
        let event = event_json(&envelope);
        let seq = app.log.push(event.to_string());
        tracing::debug!(app = %app.name, msg_id = %envelope.id, seq, "event queued for the application");
        match &app.sink {
            None => DeliveryOutcome::Accepted,
            Some(sink) => match sink.send(event).await {
                Ok(()) => DeliveryOutcome::Delivered,
                Err(why) => DeliveryOutcome::Failed {
                    condition: Condition::RemoteServerTimeout,
                    text: Some(why.to_string()),
                },
            },
        }
    }
}

/// The outbound client is the sink of an application with a URL: an event is delivered
/// when the transaction carrying it got a `2xx`.
#[async_trait]
impl OutboundSink for crate::client::Outbox {
    async fn send(&self, event: serde_json::Value) -> Result<(), Undeliverable> {
        crate::client::Outbox::send(self, event).await
    }
}
