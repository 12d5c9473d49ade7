//! The webhook adapter: the broker side ([`Adapter`]). Its configuration is in
//! [`crate::config`], the outbound sink boundary in [`crate::client`].

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use cpim::Condition;
use cpim_broker::{Adapter, AdapterContext, AddressStyle, DeliveryOutcome, Envelope};

pub use crate::client::OutboundSink;
pub use crate::config::{
    default_http_limits, AppConfig, WebhookConfig, MIN_TOKEN_LEN, SSE_MAX_AGE,
};
use crate::server::{self, App, Shared};
use crate::translate::event_json;

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
            if app.token.len() < MIN_TOKEN_LEN || !tokens.insert(app.token.as_str()) {
                return Err(invalid(format!(
                    "application `{}` needs its own token of at least {MIN_TOKEN_LEN} characters",
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
        let Some(seq) = app.log.push(event.to_string()) else {
            // An SSE-only application's log is full of events it has not read: this one
            // waits in the broker's queue (and fails to its sender only on expiry).
            tracing::debug!(app = %app.name, msg_id = %envelope.id, "event log full of unread events");
            return DeliveryOutcome::Waiting {
                after: Duration::from_secs(1),
            };
        };
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
