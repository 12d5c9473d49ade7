//! The configuration of each kind of adapter: one struct per `type`.

use std::fmt;
use std::net::SocketAddr;

use cpim_broker::config::AdapterSettings;
use serde::{Deserialize, Deserializer};

use cpim_broker::config::de::int_in_range;
use cpim_broker::config::{ConfigString, Domain, Secret};
use cpim_webhook::WebhookSettings;
use cpim_xmpp::XmppSettings;

/// The protocol an adapter speaks: the `type` key of an `[adapters.<name>]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    /// SIP/SIMPLE (RFC 3428 MESSAGE, RFC 3856 presence).
    Sip,
    /// XMPP, as an external component of an XMPP server (XEP-0114).
    Xmpp,
    /// The JSON webhook protocol.
    Webhook,
}

impl AdapterKind {
    /// The name used for this kind in `type = "..."`.
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterKind::Sip => "sip",
            AdapterKind::Xmpp => "xmpp",
            AdapterKind::Webhook => "webhook",
        }
    }
}

impl fmt::Display for AdapterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One `[adapters.<name>]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterConfig {
    /// `type = "sip"`.
    Sip(SipConfig),
    /// `type = "xmpp"`.
    Xmpp(XmppSettings),
    /// `type = "webhook"`.
    Webhook(WebhookSettings),
}

impl AdapterConfig {
    /// The adapter's protocol.
    pub fn kind(&self) -> AdapterKind {
        match self {
            AdapterConfig::Sip(_) => AdapterKind::Sip,
            AdapterConfig::Xmpp(_) => AdapterKind::Xmpp,
            AdapterConfig::Webhook(_) => AdapterKind::Webhook,
        }
    }

    /// Every domain this adapter owns: messages to users of these domains are routed to it.
    pub fn domains(&self) -> Vec<&Domain> {
        match self {
            AdapterConfig::Sip(sip) => sip.domains.iter().collect(),
            AdapterConfig::Xmpp(xmpp) => xmpp.domains(),
            AdapterConfig::Webhook(webhook) => webhook.domains(),
        }
    }
}

/// `type = "sip"`: a SIP/SIMPLE endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// The SIP domains served by this adapter (at least one).
    #[serde(default)]
    pub domains: Vec<Domain>,
    /// The sockets to listen on (at least one).
    #[serde(default)]
    pub listen: Vec<SipListener>,
    /// Where to send out-of-dialog requests, as a SIP URI; direct (RFC 3263) when absent.
    #[serde(default)]
    pub outbound_proxy: Option<ConfigString>,
    /// The largest MESSAGE sent over UDP, in bytes; larger ones need a congestion-controlled
    /// transport (RFC 3428 §8).
    #[serde(
        default = "default_max_udp_message",
        deserialize_with = "deserialize_max_udp_message"
    )]
    pub max_udp_message: u16,
    /// The host peers reach the gateway at (behind NAT, in a container, or with a
    /// listener on 0.0.0.0), written in Via and Contact; the listener address otherwise.
    #[serde(default)]
    pub advertise: Option<Domain>,
    /// Destination domains whose users get messages as `message/cpim` (RFC 3862)
    /// instead of `text/plain`.
    #[serde(default)]
    pub cpim_domains: Vec<Domain>,
    /// Credentials for challenges (401/407) from upstream proxies and servers.
    #[serde(default)]
    pub credentials: Vec<SipCredential>,
    /// Domains (of `domains`) where the gateway itself is the registrar, so that SIP
    /// user agents can REGISTER to it with digest authentication.
    #[serde(default)]
    pub registrar_domains: Vec<Domain>,
    /// The accounts that may register in `registrar_domains`.
    #[serde(default)]
    pub accounts: Vec<SipAccount>,
    /// IP addresses of proxies in front of the gateway that authenticate the users of
    /// `registrar_domains` themselves: their MESSAGE, PUBLISH and SUBSCRIBE requests
    /// are not challenged again.
    #[serde(default)]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// What happens to a message for a user of `registrar_domains` who is not
    /// registered: it waits for the registration, or fails at once.
    #[serde(default)]
    pub unregistered_users: UnregisteredUsers,
    /// Who may see a SIP user's presence where no SIP presence server of its own asks
    /// the user.
    #[serde(default)]
    pub presence_authorization: PresenceAuthorization,
    /// Watchers (`user@domain` or `*@domain`) always allowed to see SIP users' presence.
    #[serde(default)]
    pub presence_allow: Vec<PresenceAllow>,
    /// Accepted TCP/TLS connections open at once, over all stream listeners.
    #[serde(
        default = "default_max_tcp_connections",
        deserialize_with = "deserialize_max_tcp_connections"
    )]
    pub max_tcp_connections: u32,
    /// Accepted TCP/TLS connections open at once from one IP address.
    #[serde(
        default = "default_max_tcp_connections_per_ip",
        deserialize_with = "deserialize_max_tcp_connections_per_ip"
    )]
    pub max_tcp_connections_per_ip: u32,
    /// Seconds without traffic after which a stream connection is closed.
    #[serde(
        default = "default_tcp_idle_timeout_secs",
        deserialize_with = "deserialize_tcp_idle_timeout_secs"
    )]
    pub tcp_idle_timeout_secs: u32,
    /// Seconds within which a message begun on a stream must be complete.
    #[serde(
        default = "default_tcp_message_timeout_secs",
        deserialize_with = "deserialize_tcp_message_timeout_secs"
    )]
    pub tcp_message_timeout_secs: u32,
}

fn default_max_tcp_connections() -> u32 {
    1024
}

fn deserialize_max_tcp_connections<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<u32, D::Error> {
    int_in_range(
        deserializer,
        "max_tcp_connections",
        1,
        1_000_000,
        "connections",
    )
}

fn default_max_tcp_connections_per_ip() -> u32 {
    64
}

fn deserialize_max_tcp_connections_per_ip<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<u32, D::Error> {
    int_in_range(
        deserializer,
        "max_tcp_connections_per_ip",
        1,
        1_000_000,
        "connections",
    )
}

fn default_tcp_idle_timeout_secs() -> u32 {
    600
}

fn deserialize_tcp_idle_timeout_secs<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<u32, D::Error> {
    int_in_range(deserializer, "tcp_idle_timeout_secs", 1, 86_400, "seconds")
}

fn default_tcp_message_timeout_secs() -> u32 {
    10
}

fn deserialize_tcp_message_timeout_secs<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<u32, D::Error> {
    int_in_range(deserializer, "tcp_message_timeout_secs", 1, 3600, "seconds")
}

/// One `[[adapters.<name>.credentials]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipCredential {
    /// The realm these credentials answer; any realm when absent.
    #[serde(default)]
    pub realm: Option<ConfigString>,
    /// The user name.
    pub username: ConfigString,
    /// The password.
    pub password: Secret,
}

/// One `[[adapters.<name>.accounts]]` entry: a user who may register.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipAccount {
    /// The user part of the address of record (`alice` for `sip:alice@domain`).
    pub username: ConfigString,
    /// The password.
    pub password: Secret,
}

/// One `listen = [...]` entry of a SIP adapter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipListener {
    /// The transport protocol.
    pub transport: SipTransport,
    /// The local address and port.
    pub address: SocketAddr,
    /// PEM certificate chain file (`tls` only).
    #[serde(default)]
    pub certificate: Option<ConfigString>,
    /// PEM private key file (`tls` only).
    #[serde(default)]
    pub private_key: Option<ConfigString>,
}

/// `presence_authorization`: who may see a SIP user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceAuthorization {
    /// Every watcher.
    Open,
    /// The watchers the SIP user subscribes to itself, and `presence_allow`.
    #[default]
    Contacts,
    /// `presence_allow` only.
    AllowList,
}

/// One `presence_allow` entry: `user@domain` or `*@domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceAllow(pub String);

impl<'de> Deserialize<'de> for PresenceAllow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let valid = text.split_once('@').is_some_and(|(user, domain)| {
            !user.is_empty()
                && !domain.is_empty()
                && (user == "*" || !user.contains('*'))
                && !domain.contains(['*', '@', ':', '/', ' '])
                && !user.contains([':', '/', ' '])
        });
        if valid {
            Ok(PresenceAllow(text))
        } else {
            Err(serde::de::Error::custom(format!(
                "presence_allow entry `{text}` is not `user@domain` or `*@domain`"
            )))
        }
    }
}

/// `unregistered_users`: a message for a registrar account with no binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnregisteredUsers {
    /// It waits in the spool until the user registers (or the message expires).
    #[default]
    Store,
    /// It fails at once with `recipient-unavailable` (SIP 480).
    Refuse,
}

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS (over TCP).
    Tls,
}

impl SipTransport {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            SipTransport::Udp => "udp",
            SipTransport::Tcp => "tcp",
            SipTransport::Tls => "tls",
        }
    }
}

impl fmt::Display for SipTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_max_udp_message() -> u16 {
    1300
}

fn deserialize_max_udp_message<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<u16, D::Error> {
    int_in_range(deserializer, "max_udp_message", 512, 65507, "bytes")
}
