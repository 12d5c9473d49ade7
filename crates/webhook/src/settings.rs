//! The webhook adapter's `[adapters.NAME]` table (`type = "webhook"`): its serde type,
//! its checks and how it starts the adapter. See `docs/configuration.md`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer};

use cpim_broker::config::de::int_in_range;
use cpim_broker::config::{
    is_valid_name, AdapterSettings, Checks, ConfigString, Domain, KeyPath, Secret, Socket,
};
use cpim_broker::{Adapter, AdapterContext, AddressStyle};

use crate::adapter::{AppConfig, OutboundSink, WebhookAdapter, WebhookConfig};
use crate::client::{http_client, AppTarget, Outbox, RetryPolicy};

/// The outbound transaction sender of each webhook app with a URL, by app name.
pub type OutboundSinks = HashMap<String, Arc<dyn OutboundSink>>;

/// `type = "webhook"`: the JSON webhook protocol for applications.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// The HTTP listener of the inbound API.
    pub listen: SocketAddr,
    /// Largest request body in bytes; larger requests get `413`.
    #[serde(
        default = "default_body_limit_bytes",
        deserialize_with = "deserialize_body_limit_bytes"
    )]
    pub body_limit_bytes: u32,
    /// Sustained requests per second per token; beyond it `429` with `Retry-After`.
    #[serde(
        default = "default_rate_per_sec",
        deserialize_with = "deserialize_rate_per_sec"
    )]
    pub rate_per_sec: u32,
    /// Requests per token in a burst.
    #[serde(default = "default_burst", deserialize_with = "deserialize_burst")]
    pub burst: u32,
    /// Events kept per application for `GET /v1/events`; an app without a URL is never
    /// dropped an event it has not read (the next wait in the broker's queue instead).
    #[serde(
        default = "default_sse_retention",
        deserialize_with = "deserialize_sse_retention"
    )]
    pub sse_retention: u32,
    /// Seconds after which an outbound transaction that keeps failing is given up; the
    /// senders of its events then learn that delivery failed.
    #[serde(
        default = "default_give_up_secs",
        deserialize_with = "deserialize_give_up_secs"
    )]
    pub give_up_secs: u32,
    /// Open connections to the API at most; beyond it `503` and close.
    #[serde(
        default = "default_max_connections",
        deserialize_with = "deserialize_max_connections"
    )]
    pub max_connections: u32,
    /// Open connections to the API from one IP address at most.
    #[serde(
        default = "default_max_connections_per_ip",
        deserialize_with = "deserialize_max_connections_per_ip"
    )]
    pub max_connections_per_ip: u32,
    /// Seconds a client has from the first byte of a request to the end of its head.
    #[serde(
        default = "default_header_timeout_secs",
        deserialize_with = "deserialize_header_timeout_secs"
    )]
    pub header_timeout_secs: u32,
    /// Seconds without a byte either way after which a connection is closed.
    #[serde(
        default = "default_idle_timeout_secs",
        deserialize_with = "deserialize_idle_timeout_secs"
    )]
    pub idle_timeout_secs: u32,
    /// The applications allowed to use the API (at least one).
    #[serde(default)]
    pub apps: Vec<WebhookApp>,
}

/// One `[[adapters.<name>.apps]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookApp {
    /// The app's name (`[a-z0-9_-]+`, unique within the adapter).
    pub name: String,
    /// The domains whose addresses belong to this app (at least one).
    #[serde(default)]
    pub domains: Vec<Domain>,
    /// The bearer token the app presents.
    pub token: Secret,
    /// Where outbound events for this app are sent; none means the app polls.
    #[serde(default)]
    pub url: Option<ConfigString>,
}
impl WebhookSettings {
    /// The adapter's configuration for adapter `name`, and an outbound transaction
    /// sender for every app with a URL.
    pub fn runtime(&self, name: &str) -> std::io::Result<(WebhookConfig, OutboundSinks)> {
        let apps: Vec<AppConfig> = self
            .apps
            .iter()
            .map(|a| AppConfig {
                name: a.name.clone(),
                domains: a.domains.iter().map(|d| d.as_str().to_owned()).collect(),
                token: a.token.expose().to_owned(),
                url: a.url.as_ref().map(|u| u.as_str().to_owned()),
            })
            .collect();
        let mut sinks = OutboundSinks::new();
        if apps.iter().any(|a| a.url.is_some()) {
            let client = http_client().map_err(std::io::Error::other)?;
            for app in &apps {
                if let Some(url) = &app.url {
                    let target = AppTarget {
                        app: app.name.clone(),
                        url: url.clone(),
                        token: app.token.clone(),
                    };
                    let policy = RetryPolicy {
                        give_up_after: std::time::Duration::from_secs(u64::from(self.give_up_secs)),
                        ..RetryPolicy::default()
                    };
                    let outbox = Outbox::start(target, policy, client.clone());
                    sinks.insert(app.name.clone(), Arc::new(outbox));
                }
            }
        }
        let config = WebhookConfig {
            name: name.to_owned(),
            listen: self.listen,
            apps,
            body_limit: self.body_limit_bytes as usize,
            sse_retention: self.sse_retention as usize,
            rate_per_sec: f64::from(self.rate_per_sec),
            burst: self.burst,
            http_limits: crate::listener::HttpLimits {
                max_connections: self.max_connections as usize,
                max_per_ip: self.max_connections_per_ip as usize,
                header_timeout: std::time::Duration::from_secs(u64::from(self.header_timeout_secs)),
                idle_timeout: std::time::Duration::from_secs(u64::from(self.idle_timeout_secs)),
            },
            ..WebhookConfig::default()
        };
        Ok((config, sinks))
    }
}

#[async_trait]
impl AdapterSettings for WebhookSettings {
    fn style(&self) -> AddressStyle {
        AddressStyle::Im
    }

    fn home_domains(&self) -> Vec<&Domain> {
        self.apps.iter().flat_map(|app| &app.domains).collect()
    }

    fn check(&self, name: &str, path: &KeyPath, checks: &mut dyn Checks) {
        checks.bind(
            path.key("listen"),
            Socket::Tcp,
            self.listen,
            format!("the http listener of adapter `{name}`"),
        );
        checks.require_some(
            self.apps.is_empty(),
            path.key("apps"),
            format!("`apps` of webhook adapter `{name}`"),
            "add a `[[adapters.<name>.apps]]` table with `name`, `domains` and `token`",
        );
        let mut app_names: HashMap<&str, usize> = HashMap::new();
        let mut app_tokens: HashMap<&str, usize> = HashMap::new();
        for (index, app) in self.apps.iter().enumerate() {
            let app_path = path.key("apps").index(index);
            if !is_valid_name(&app.name) {
                checks.fail(
                    app_path.key("name"),
                    format!("app name `{}` is not allowed", app.name),
                    "name apps with lowercase letters, digits, `_` and `-`",
                );
            }
            if let Some(first) = app_names.insert(&app.name, index) {
                checks.fail(
                    app_path.key("name"),
                    format!(
                        "app name `{}` is used twice in adapter `{name}` (first in apps[{first}])",
                        app.name
                    ),
                    "give every app of an adapter its own name",
                );
            }
            checks.require_some(
                app.domains.is_empty(),
                app_path.key("domains"),
                format!("`domains` of webhook app `{}`", app.name),
                "list the domains whose addresses belong to the app, e.g. \
                 `domains = [\"app.example.com\"]`",
            );
            for (domain_index, domain) in app.domains.iter().enumerate() {
                checks.own(name, app_path.key("domains").index(domain_index), domain);
            }
            let min = crate::config::MIN_TOKEN_LEN;
            if app.token.is_empty() {
                checks.fail(
                    app_path.key("token"),
                    format!("webhook app `{}` has an empty token", app.name),
                    "set a long random bearer token, e.g. `token = \"${CPIM_WEBHOOK_TOKEN}\"`",
                );
            } else if app.token.expose().len() < min {
                checks.fail(
                    app_path.key("token"),
                    format!(
                        "the token of webhook app `{}` has {} characters; at least {min} are needed",
                        app.name,
                        app.token.expose().len()
                    ),
                    "set a long random bearer token, e.g. `openssl rand -hex 24`",
                );
            } else if let Some(first) = app_tokens.insert(app.token.expose(), index) {
                checks.fail(
                    app_path.key("token"),
                    format!(
                        "webhook app `{}` has the same token as apps[{first}]",
                        app.name
                    ),
                    "give every app its own token: the token says which app is calling",
                );
            }
            if let Some(url) = &app.url {
                let rest = url
                    .as_str()
                    .strip_prefix("http://")
                    .or_else(|| url.as_str().strip_prefix("https://"));
                if rest.is_none_or(str::is_empty) {
                    checks.fail(
                        app_path.key("url"),
                        format!(
                            "url `{url}` of webhook app `{}` is not an http(s) URL",
                            app.name
                        ),
                        "write e.g. `url = \"https://app.example.com/hooks\"`, or remove the key",
                    );
                }
            }
        }
    }

    fn summary(&self) -> String {
        let apps = self
            .apps
            .iter()
            .map(|app| app.name.as_str())
            .collect::<Vec<_>>()
            .join(",");
        format!("listen=http:{}  apps={apps}", self.listen)
    }

    fn trust(&self) -> Vec<String> {
        self.apps
            .iter()
            .map(|app| {
                let domains = app
                    .domains
                    .iter()
                    .map(Domain::as_str)
                    .collect::<Vec<_>>()
                    .join(",");
                format!(
                    "senders: app {} (its token) as users of {domains} only",
                    app.name
                )
            })
            .collect()
    }

    async fn build(
        &self,
        name: &str,
        context: AdapterContext,
        _base_dir: &Path,
    ) -> std::io::Result<Arc<dyn Adapter>> {
        let (config, sinks) = self.runtime(name)?;
        // The adapter logs where it listens.
        let (adapter, _bound) = WebhookAdapter::start(config, context, sinks).await?;
        Ok(adapter)
    }
}

fn default_max_connections() -> u32 {
    128
}

fn deserialize_max_connections<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(d, "max_connections", 1, 100_000, "connections")
}

fn default_max_connections_per_ip() -> u32 {
    32
}

fn deserialize_max_connections_per_ip<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(d, "max_connections_per_ip", 1, 100_000, "connections")
}

fn default_header_timeout_secs() -> u32 {
    10
}

fn deserialize_header_timeout_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(d, "header_timeout_secs", 1, 300, "seconds")
}

fn default_idle_timeout_secs() -> u32 {
    75
}

fn deserialize_idle_timeout_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    // More than the 15 s keep-alive of `GET /v1/events`.
    int_in_range(d, "idle_timeout_secs", 20, 3600, "seconds")
}

fn default_body_limit_bytes() -> u32 {
    64 * 1024
}

fn deserialize_body_limit_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(d, "body_limit_bytes", 1024, 16 * 1024 * 1024, "bytes")
}

fn default_rate_per_sec() -> u32 {
    20
}

fn deserialize_rate_per_sec<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(d, "rate_per_sec", 1, 1_000_000, "requests per second")
}

fn default_burst() -> u32 {
    40
}

fn deserialize_burst<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(d, "burst", 1, 1_000_000, "requests")
}

fn default_give_up_secs() -> u32 {
    600
}

fn deserialize_give_up_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(d, "give_up_secs", 1, 604_800, "seconds")
}

fn default_sse_retention() -> u32 {
    10_000
}

fn deserialize_sse_retention<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(d, "sse_retention", 10, 10_000_000, "events")
}
