//! The XMPP adapter's `[adapters.NAME]` table (`type = "xmpp"`): its serde type, its
//! checks and how it starts the adapter. See `docs/configuration.md`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer};

use cpim_broker::config::de::int_in_range;
use cpim_broker::config::{AdapterSettings, Checks, Domain, HostPort, KeyPath, Secret};
use cpim_broker::{Adapter, AdapterContext, AddressStyle};

use crate::translate::{OutboundMessageType, OutboundOptions};
use crate::{XmppAdapter, XmppConfig};

/// `type = "xmpp"`: external components (XEP-0114) of one XMPP server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppSettings {
    /// The server's component port.
    pub server: HostPort,
    /// Domains whose users live on that server (at least one).
    #[serde(default)]
    pub user_domains: Vec<Domain>,
    /// The `type` of `<message/>` stanzas sent to XMPP users.
    #[serde(default)]
    pub message_type: XmppMessageType,
    /// Seconds between keepalive pings (XEP-0199) on the component stream.
    #[serde(
        default = "default_ping_interval_secs",
        deserialize_with = "deserialize_ping_interval_secs"
    )]
    pub ping_interval_secs: u32,
    /// The largest stanza the gateway reads from the server, in bytes (the gateway's own
    /// limit, whatever the server allows).
    #[serde(
        default = "default_max_stanza_bytes",
        deserialize_with = "deserialize_max_stanza_bytes"
    )]
    pub max_stanza_bytes: u32,
    /// The component domains to connect as (at least one).
    #[serde(default)]
    pub components: Vec<XmppComponent>,
}

/// One `[[adapters.<name>.components]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppComponent {
    /// The component's domain, as configured on the XMPP server.
    pub domain: Domain,
    /// The component's shared secret (XEP-0114 handshake).
    pub secret: Secret,
}

/// The `type` attribute of outgoing XMPP messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XmppMessageType {
    /// `type="normal"`: a single message outside a conversation; the RFC 7572 §5 default for
    /// a SIP MESSAGE without a session.
    #[default]
    Normal,
    /// `type="chat"`: part of a one-to-one conversation.
    Chat,
}

impl XmppMessageType {
    /// The name used in the config file and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            XmppMessageType::Normal => "normal",
            XmppMessageType::Chat => "chat",
        }
    }
}

impl XmppSettings {
    /// The driver's configuration for adapter `name`.
    pub fn runtime(&self, name: &str) -> XmppConfig {
        XmppConfig {
            name: name.to_owned(),
            server: self.server.to_string(),
            components: self
                .components
                .iter()
                .map(|c| (c.domain.as_str().to_owned(), c.secret.expose().to_owned()))
                .collect(),
            user_domains: self
                .user_domains
                .iter()
                .map(|d| d.as_str().to_owned())
                .collect(),
            outbound: OutboundOptions {
                message_type: match self.message_type {
                    XmppMessageType::Normal => OutboundMessageType::Normal,
                    XmppMessageType::Chat => OutboundMessageType::Chat,
                },
                ..OutboundOptions::default()
            },
            ping_interval: Duration::from_secs(u64::from(self.ping_interval_secs)),
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            limits: crate::guard::Limits {
                max_stanza_bytes: self.max_stanza_bytes as usize,
                ..crate::guard::Limits::default()
            },
        }
    }
}

#[async_trait]
impl AdapterSettings for XmppSettings {
    fn style(&self) -> AddressStyle {
        AddressStyle::Xmpp
    }

    fn home_domains(&self) -> Vec<&Domain> {
        self.user_domains.iter().collect()
    }

    fn component_domains(&self) -> Vec<&Domain> {
        self.components
            .iter()
            .map(|component| &component.domain)
            .collect()
    }

    fn check(&self, name: &str, path: &KeyPath, checks: &mut dyn Checks) {
        checks.require_some(
            self.components.is_empty(),
            path.key("components"),
            format!("`components` of xmpp adapter `{name}`"),
            "add a `[[adapters.<name>.components]]` table with `domain` and `secret`",
        );
        for (index, component) in self.components.iter().enumerate() {
            let component_path = path.key("components").index(index);
            checks.own(name, component_path.key("domain"), &component.domain);
            if component.secret.is_empty() {
                checks.fail(
                    component_path.key("secret"),
                    format!("component `{}` has an empty secret", component.domain),
                    "set the secret shared with the XMPP server, e.g. \
                     `secret = \"${CPIM_XMPP_SECRET}\"`",
                );
            }
        }
        checks.require_some(
            self.user_domains.is_empty(),
            path.key("user_domains"),
            format!("`user_domains` of xmpp adapter `{name}`"),
            "list the domains whose users live on the XMPP server, e.g. \
             `user_domains = [\"xmpp.example.com\"]`",
        );
        for (index, domain) in self.user_domains.iter().enumerate() {
            checks.own(name, path.key("user_domains").index(index), domain);
        }
    }

    fn summary(&self) -> String {
        let components = self
            .components
            .iter()
            .map(|component| component.domain.as_str())
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "server={}  components={components}  message_type={}",
            self.server,
            self.message_type.as_str()
        )
    }

    fn trust(&self) -> Vec<String> {
        vec![format!(
            "senders: as the XMPP server authenticated them (c2s, or s2s for other servers' users); messages reach users of {} only (list a federated server's domain to reach its users)",
            self.user_domains
                .iter()
                .map(Domain::as_str)
                .collect::<Vec<_>>()
                .join(",")
        )]
    }

    async fn build(
        &self,
        name: &str,
        context: AdapterContext,
        _base_dir: &Path,
    ) -> std::io::Result<Arc<dyn Adapter>> {
        Ok(XmppAdapter::start(self.runtime(name), context))
    }
}

fn default_ping_interval_secs() -> u32 {
    30
}

fn deserialize_ping_interval_secs<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<u32, D::Error> {
    int_in_range(deserializer, "ping_interval_secs", 1, 3600, "seconds")
}

fn default_max_stanza_bytes() -> u32 {
    crate::guard::DEFAULT_MAX_STANZA_BYTES as u32
}

fn deserialize_max_stanza_bytes<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<u32, D::Error> {
    int_in_range(
        deserializer,
        "max_stanza_bytes",
        4096,
        16 * 1024 * 1024,
        "bytes",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xmpp_owns_component_and_user_domains() {
        let xmpp = XmppSettings {
            server: HostPort {
                host: "127.0.0.1".to_owned(),
                port: 5347,
            },
            user_domains: vec![Domain::parse("xmpp.localhost").expect("valid domain")],
            message_type: XmppMessageType::Normal,
            ping_interval_secs: 30,
            max_stanza_bytes: 262_144,
            components: vec![XmppComponent {
                domain: Domain::parse("gw.xmpp.localhost").expect("valid domain"),
                secret: Secret::new("s"),
            }],
        };
        let domains: Vec<&str> = xmpp.domains().iter().map(|d| d.as_str()).collect();
        assert_eq!(domains, ["gw.xmpp.localhost", "xmpp.localhost"]);
    }
}
