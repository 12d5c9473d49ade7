//! The SIP adapter's `[adapters.NAME]` table (`type = "sip"`): its serde type, its checks
//! and how it starts the adapter. See `docs/configuration.md`.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer};

use cpim_broker::config::de::int_in_range;
use cpim_broker::config::{AdapterSettings, Checks, ConfigString, Domain, KeyPath, Secret, Socket};
use cpim_broker::{Adapter, AdapterContext, AddressStyle};

use crate::transport::{Listen, Transport};
use crate::{SipAdapter, SipConfig};

/// `type = "sip"`: a SIP/SIMPLE endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSettings {
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
    /// Bytes of receive and send buffer asked for each UDP socket.
    #[serde(
        default = "default_udp_buffer_bytes",
        deserialize_with = "deserialize_udp_buffer_bytes"
    )]
    pub udp_buffer_bytes: u32,
    /// Foreign SIP domains whose users the adapter reaches directly, finding their
    /// servers by RFC 3263 in DNS (NAPTR, SRV, A/AAAA), unless `outbound_proxy` is set;
    /// `"*"`: every domain no adapter claims.
    #[serde(default)]
    pub remote_domains: RemoteDomains,
    /// Domains whose users are neither reached nor accepted (inbound `From` → 403).
    #[serde(default)]
    pub denied_domains: Vec<Domain>,
    /// How `remote_domains` are looked up.
    #[serde(default)]
    pub dns: SipDns,
    /// Per remote domain, the networks (`"192.0.2.0/24"`, `"198.51.100.7"`) that may
    /// send as its users besides the domain's own SIP servers in DNS.
    #[serde(default)]
    pub trusted_peers: std::collections::BTreeMap<String, Vec<crate::trust::Network>>,
    /// The outbound TLS client.
    #[serde(default)]
    pub tls: SipTls,
    /// Remote domains reached over TLS only, and whose users are accepted only from a
    /// TLS peer whose certificate names the domain (RFC 5922 §7.3).
    #[serde(default)]
    pub require_tls: Vec<Domain>,
}

/// `remote_domains`: the listed domains, and whether `"*"` is among them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteDomains {
    /// `"*"`: every domain no adapter claims.
    pub any: bool,
    /// The domains listed by name.
    pub listed: Vec<Domain>,
}

impl<'de> Deserialize<'de> for RemoteDomains {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut domains = RemoteDomains::default();
        for text in Vec::<String>::deserialize(deserializer)? {
            if text == "*" {
                domains.any = true;
            } else {
                let domain = Domain::parse(&text).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "{e}; write a domain, e.g. \"carrier.example\", or \"*\" for every domain no adapter claims"
                    ))
                })?;
                domains.listed.push(domain);
            }
        }
        Ok(domains)
    }
}

/// `[adapters.NAME.tls]`: what the outbound TLS client trusts and presents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipTls {
    /// PEM CA certificates trusted besides the system's trust store.
    #[serde(default)]
    pub ca_file: Option<ConfigString>,
    /// PEM certificate chain presented to servers that ask for a client certificate.
    #[serde(default)]
    pub certificate: Option<ConfigString>,
    /// Its PEM private key.
    #[serde(default)]
    pub private_key: Option<ConfigString>,
}

impl<'de> Deserialize<'de> for crate::trust::Network {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `[adapters.NAME.dns]`: the DNS servers for RFC 3263 lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipDns {
    /// `"IP:port"` or `"IP"` (port 53) of each server, asked in order; the system's
    /// resolver (`/etc/resolv.conf`) when empty.
    #[serde(default)]
    pub nameservers: Vec<NameServer>,
}

/// A DNS server's address: `"127.0.0.1:5353"`, `"[::1]:5353"` or `"192.0.2.53"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameServer(pub SocketAddr);

impl<'de> Deserialize<'de> for NameServer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(NameServer(addr));
        }
        if let Ok(ip) = text.parse::<std::net::IpAddr>() {
            return Ok(NameServer(SocketAddr::new(ip, 53)));
        }
        Err(serde::de::Error::custom(format!(
            "`{text}` is not a name server address: write an IP address with an optional port, e.g. \"127.0.0.1:5353\" or \"[::1]:53\""
        )))
    }
}

fn default_udp_buffer_bytes() -> u32 {
    crate::driver::DEFAULT_UDP_BUFFER_BYTES as u32
}

fn deserialize_udp_buffer_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(d, "udp_buffer_bytes", 65_536, 268_435_456, "bytes")
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

impl SipSettings {
    /// The driver's configuration for adapter `name`: listeners (with the TLS certificate
    /// and key read from their files, relative to `base_dir`), the outbound proxy resolved
    /// to an address, credentials and registrar accounts.
    pub async fn runtime(&self, name: &str, base_dir: &Path) -> std::io::Result<SipConfig> {
        let transport = |t: SipTransport| match t {
            SipTransport::Udp => Transport::Udp,
            SipTransport::Tcp => Transport::Tcp,
            SipTransport::Tls => Transport::Tls,
        };
        let mut settings = crate::SipConfig::new(
            name,
            &self.domains.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        );
        settings.listen = self
            .listen
            .iter()
            .map(|l| Listen {
                transport: transport(l.transport),
                address: l.address,
            })
            .collect();
        if let Some(l) = self
            .listen
            .iter()
            .find(|l| l.transport == SipTransport::Tls)
        {
            let read = |file: &Option<ConfigString>, what: &str| {
                let file = file.as_ref().ok_or_else(|| {
                    std::io::Error::other(format!("the tls listener has no {what}"))
                })?;
                let path = base_dir.join(file.as_str());
                std::fs::read(&path).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
                })
            };
            settings.tls = Some((
                read(&l.certificate, "certificate")?,
                read(&l.private_key, "private_key")?,
            ));
        }
        let read_file = |file: &ConfigString, what: &str| {
            let path = base_dir.join(file.as_str());
            std::fs::read(&path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("tls.{what} {}: {e}", path.display()))
            })
        };
        settings.tls_client.ca_pem = self
            .tls
            .ca_file
            .as_ref()
            .map(|f| read_file(f, "ca_file"))
            .transpose()?;
        if let (Some(cert), Some(key)) = (&self.tls.certificate, &self.tls.private_key) {
            settings.tls_client.identity = Some((
                read_file(cert, "certificate")?,
                read_file(key, "private_key")?,
            ));
        }
        if let Some(proxy) = &self.outbound_proxy {
            let uri = cpim::address::SipUri::parse(proxy.as_str())
                .map_err(|e| std::io::Error::other(format!("outbound_proxy: {e}")))?;
            let peer = crate::transport::resolve(&uri)
                .await
                .map_err(|e| std::io::Error::other(format!("outbound_proxy: {e}")))?;
            settings.outbound_proxy = Some(peer);
        }
        settings.max_udp_message = usize::from(self.max_udp_message);
        settings.stream_limits = crate::transport::StreamLimits {
            max_connections: within_open_files(name, self.max_tcp_connections as usize),
            max_per_ip: self.max_tcp_connections_per_ip as usize,
            idle_timeout: std::time::Duration::from_secs(u64::from(self.tcp_idle_timeout_secs)),
            message_timeout: std::time::Duration::from_secs(u64::from(
                self.tcp_message_timeout_secs,
            )),
        };
        settings.udp_buffer_bytes = self.udp_buffer_bytes as usize;
        let lowercase = |domains: &[Domain]| -> Vec<String> {
            domains
                .iter()
                .map(|d| d.as_str().to_ascii_lowercase())
                .collect()
        };
        settings.remote = crate::trust::RemotePolicy {
            listed: lowercase(&self.remote_domains.listed),
            any: self.remote_domains.any,
            denied: lowercase(&self.denied_domains),
        };
        settings.nameservers = self.dns.nameservers.iter().map(|n| n.0).collect();
        settings.require_tls = lowercase(&self.require_tls);
        settings.trusted_peers = self
            .trusted_peers
            .iter()
            .map(|(domain, networks)| (domain.to_ascii_lowercase(), networks.clone()))
            .collect();
        settings.advertise = self.advertise.as_ref().map(|d| d.as_str().to_owned());
        settings.cpim_domains = self
            .cpim_domains
            .iter()
            .map(|d| d.as_str().to_owned())
            .collect();
        settings.credentials = self
            .credentials
            .iter()
            .map(|c| crate::auth::Credential {
                realm: c.realm.as_ref().map(|r| r.as_str().to_owned()),
                username: c.username.as_str().to_owned(),
                password: c.password.expose().to_owned(),
            })
            .collect();
        let accounts: Vec<crate::auth::RegistrarUser> = self
            .accounts
            .iter()
            .map(|a| crate::auth::RegistrarUser {
                username: a.username.as_str().to_owned(),
                password: a.password.expose().to_owned(),
            })
            .collect();
        settings.registrar = self
            .registrar_domains
            .iter()
            .map(|d| (d.as_str().to_owned(), accounts.clone()))
            .collect();
        settings.trusted_proxies = self.trusted_proxies.clone();
        settings.unregistered_store = self.unregistered_users == UnregisteredUsers::Store;
        settings.presence_authorization = match self.presence_authorization {
            PresenceAuthorization::Open => crate::authorization::Policy::Open,
            PresenceAuthorization::Contacts => crate::authorization::Policy::Contacts,
            PresenceAuthorization::AllowList => crate::authorization::Policy::AllowList,
        };
        settings.presence_allow = self.presence_allow.iter().map(|a| a.0.clone()).collect();
        Ok(settings)
    }
}

#[async_trait]
impl AdapterSettings for SipSettings {
    fn style(&self) -> AddressStyle {
        AddressStyle::Sip
    }

    /// Its own domains and the foreign ones it reaches: users of both live on SIP.
    fn home_domains(&self) -> Vec<&Domain> {
        self.domains
            .iter()
            .chain(&self.remote_domains.listed)
            .collect()
    }

    fn reaches_any_domain(&self) -> bool {
        self.remote_domains.any
    }

    fn check(&self, name: &str, path: &KeyPath, checks: &mut dyn Checks) {
        checks.require_some(
            self.domains.is_empty(),
            path.key("domains"),
            format!("`domains` of sip adapter `{name}`"),
            "add the SIP domains this adapter serves, e.g. `domains = [\"sip.example.com\"]`",
        );
        for (index, domain) in self.domains.iter().enumerate() {
            checks.own(name, path.key("domains").index(index), domain);
        }
        checks.require_some(
            self.listen.is_empty(),
            path.key("listen"),
            format!("`listen` of sip adapter `{name}`"),
            "add a listener, e.g. `listen = [{ transport = \"udp\", address = \"127.0.0.1:5060\" }]`",
        );
        for (index, listener) in self.listen.iter().enumerate() {
            let listener_path = path.key("listen").index(index);
            let is_tls = listener.transport == SipTransport::Tls;
            for (key, value) in [
                ("certificate", &listener.certificate),
                ("private_key", &listener.private_key),
            ] {
                match (is_tls, value) {
                    (true, None) => checks.fail(
                        listener_path.clone(),
                        format!(
                            "tls listener {} of sip adapter `{name}` has no `{key}`",
                            listener.address
                        ),
                        "a tls listener needs `certificate = \"cert.pem\"` and \
                         `private_key = \"key.pem\"` (PEM files)",
                    ),
                    (false, Some(_)) => checks.fail(
                        listener_path.key(key),
                        format!(
                            "`{key}` is only used by tls listeners, but this one is {}",
                            listener.transport
                        ),
                        "set `transport = \"tls\"`, or remove the key",
                    ),
                    _ => {}
                }
            }
            let socket = match listener.transport {
                SipTransport::Udp => Socket::Udp,
                SipTransport::Tcp | SipTransport::Tls => Socket::Tcp,
            };
            checks.bind(
                listener_path.key("address"),
                socket,
                listener.address,
                format!("{} listener of adapter `{name}`", listener.transport),
            );
        }
        for (index, domain) in self.remote_domains.listed.iter().enumerate() {
            let at = path.key("remote_domains").index(index);
            if lists(&self.domains, domain.as_str()) {
                checks.fail(
                    at,
                    format!(
                        "`{}` of sip adapter `{name}` is in both `domains` and `remote_domains`",
                        domain.as_str()
                    ),
                    "a domain is either served by this gateway (`domains`) or foreign (`remote_domains`)",
                );
            } else {
                checks.own(name, at, domain);
            }
        }
        for (index, domain) in self.require_tls.iter().enumerate() {
            if !lists(&self.remote_domains.listed, domain.as_str()) {
                checks.fail(
                    path.key("require_tls").index(index),
                    format!("`require_tls` of sip adapter `{name}` names `{}`, which is not one of its `remote_domains`", domain.as_str()),
                    "list the domain in `remote_domains`, or remove it here",
                );
            }
        }
        for domain in self.trusted_peers.keys() {
            let listed = |list: &[Domain]| lists(list, domain);
            if !listed(&self.remote_domains.listed) && !listed(&self.domains) {
                checks.fail(
                    path.key("trusted_peers").key(domain),
                    format!("`trusted_peers` of sip adapter `{name}` names `{domain}`, which is none of its `domains` or `remote_domains`"),
                    "list the domain in `domains` or `remote_domains`, or remove its entry",
                );
            } else if listed(&self.registrar_domains) {
                checks.fail(
                    path.key("trusted_peers").key(domain),
                    format!("`trusted_peers` of sip adapter `{name}` names `{domain}`, a registrar domain"),
                    "the registrar's accounts prove who they are with their passwords; to skip the challenge for a proxy, use `trusted_proxies`",
                );
            }
        }
        for (index, domain) in self.denied_domains.iter().enumerate() {
            let listed = |list: &[Domain]| lists(list, domain.as_str());
            if listed(&self.domains) || listed(&self.remote_domains.listed) {
                checks.fail(
                    path.key("denied_domains").index(index),
                    format!(
                        "`{}` of sip adapter `{name}` is denied and also listed in `domains` or `remote_domains`",
                        domain.as_str()
                    ),
                    "a domain is either reached or denied: remove it from one of the lists",
                );
            }
        }
        for (index, domain) in self.registrar_domains.iter().enumerate() {
            if !self.domains.iter().any(|d| d.as_str() == domain.as_str()) {
                checks.fail(
                    path.key("registrar_domains").index(index),
                    format!(
                        "registrar domain `{}` is not one of the `domains` of `{name}`",
                        domain.as_str()
                    ),
                    "list only domains this adapter serves",
                );
            }
        }
        if !self.accounts.is_empty() && self.registrar_domains.is_empty() {
            checks.fail(
                path.key("accounts"),
                format!("sip adapter `{name}` has `accounts` but no `registrar_domains`"),
                "add `registrar_domains = [\"sip.example.com\"]`, or remove the accounts",
            );
        }
        for (index, account) in self.accounts.iter().enumerate() {
            if account.password.is_empty() {
                checks.fail(
                    path.key("accounts").index(index).key("password"),
                    format!(
                        "account `{}` of `{name}` has an empty password",
                        account.username
                    ),
                    "set a password (e.g. from an environment variable)",
                );
            }
        }
        for (index, credential) in self.credentials.iter().enumerate() {
            if credential.password.is_empty() {
                checks.fail(
                    path.key("credentials").index(index).key("password"),
                    format!(
                        "credentials `{}` of `{name}` have an empty password",
                        credential.username
                    ),
                    "set a password (e.g. from an environment variable)",
                );
            }
        }
        if self.tls.certificate.is_some() != self.tls.private_key.is_some() {
            checks.fail(
                path.key("tls"),
                format!("`tls` of sip adapter `{name}` has a `certificate` without a `private_key` or the reverse"),
                "give both PEM files (the client certificate and its key), or neither",
            );
        }
        if let Some(proxy) = &self.outbound_proxy {
            let proxy = proxy.as_str();
            if !(proxy.starts_with("sip:") || proxy.starts_with("sips:")) || proxy.len() < 5 {
                checks.fail(
                    path.key("outbound_proxy"),
                    format!("outbound_proxy `{proxy}` is not a SIP URI"),
                    "write a sip: or sips: URI, e.g. `outbound_proxy = \
                     \"sip:127.0.0.1:5070;transport=udp\"`, or remove the key",
                );
            }
        }
    }

    fn summary(&self) -> String {
        let listen = self
            .listen
            .iter()
            .map(|listener| format!("{}:{}", listener.transport, listener.address))
            .collect::<Vec<_>>()
            .join(",");
        match &self.outbound_proxy {
            Some(proxy) => format!("listen={listen}  outbound_proxy={proxy}"),
            None => format!("listen={listen}"),
        }
    }

    fn trust(&self) -> Vec<String> {
        let join = |domains: &[Domain]| {
            domains
                .iter()
                .map(Domain::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut lines = Vec::new();
        let guarded = !self.trusted_proxies.is_empty() || self.outbound_proxy.is_some();
        for domain in &self.domains {
            let is = |list: &[Domain]| lists(list, domain.as_str());
            let peers = self
                .trusted_peers
                .iter()
                .find(|(d, _)| d.eq_ignore_ascii_case(domain.as_str()))
                .map(|(_, networks)| networks.iter().map(ToString::to_string).collect::<Vec<_>>());
            let line = if is(&self.registrar_domains) {
                format!("senders of {}: registered accounts, who answer the registrar's challenge (trusted proxies excepted)", domain.as_str())
            } else if guarded || peers.is_some() {
                let mut who = vec!["the proxies".to_owned()];
                who.extend(peers.into_iter().flatten());
                who.push("a TLS peer certified for it".to_owned());
                format!(
                    "senders of {}: only from {}; 403 otherwise",
                    domain.as_str(),
                    who.join(", ")
                )
            } else {
                format!(
                    "senders of {}: anyone who reaches the listeners (set `outbound_proxy`, `trusted_proxies` or `trusted_peers` to restrict)",
                    domain.as_str()
                )
            };
            lines.push(line);
        }
        let mut proxies: Vec<String> = self
            .outbound_proxy
            .iter()
            .map(|p| format!("outbound_proxy {p}"))
            .collect();
        proxies.extend(self.trusted_proxies.iter().map(ToString::to_string));
        if !proxies.is_empty() {
            lines.push(format!(
                "trusted proxies: {} (may speak for any domain; their P-Asserted-Identity names the sender)",
                proxies.join(", ")
            ));
        }
        if self.remote_domains.any || !self.remote_domains.listed.is_empty() {
            let mut remote: Vec<String> = self
                .remote_domains
                .listed
                .iter()
                .map(|d| {
                    let tls = lists(&self.require_tls, d.as_str());
                    if tls {
                        format!("{} (TLS only)", d.as_str())
                    } else {
                        d.as_str().to_owned()
                    }
                })
                .collect();
            if self.remote_domains.any {
                remote.push("* (every domain no adapter claims)".to_owned());
            }
            let resolver = if self.dns.nameservers.is_empty() {
                "the system resolver".to_owned()
            } else {
                self.dns
                    .nameservers
                    .iter()
                    .map(|n| n.0.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            lines.push(format!(
                "remote domains: {} (RFC 3263 through {resolver})",
                remote.join(", ")
            ));
            lines.push(
                "senders of a remote domain: a TLS peer certified for it, its SIP servers in DNS, the trusted proxies, its trusted_peers (for a TLS-only domain, the TLS peer only); 403 otherwise"
                    .to_owned(),
            );
            for (domain, networks) in &self.trusted_peers {
                let networks: Vec<String> = networks.iter().map(ToString::to_string).collect();
                lines.push(format!(
                    "trusted_peers of {domain}: {}",
                    networks.join(", ")
                ));
            }
        }
        if !self.denied_domains.is_empty() {
            lines.push(format!(
                "denied domains: {} (never reached; their senders get 403)",
                join(&self.denied_domains)
            ));
        }
        lines
    }

    async fn build(
        &self,
        name: &str,
        context: AdapterContext,
        base_dir: &Path,
    ) -> std::io::Result<Arc<dyn Adapter>> {
        let config = self.runtime(name, base_dir).await?;
        // The adapter logs where it listens.
        let (adapter, _bound) = SipAdapter::start(config, context).await?;
        Ok(adapter)
    }
}

/// Whether `list` names `domain` (DNS names compare without case).
fn lists(list: &[Domain], domain: &str) -> bool {
    list.iter().any(|d| d.as_str().eq_ignore_ascii_case(domain))
}

/// Descriptors kept free of SIP stream connections for everything else: the admin and
/// webhook listeners and their clients, the XMPP links, outbound SIP connections, the
/// spool.
const RESERVED_OPEN_FILES: usize = 256;

/// `max_tcp_connections` as the process can honour it: at most the open-files limit less
/// a reserve (half of a very low limit), so that SIP peers filling their cap never leave
/// `/healthz`, the webhook API or outbound connections without a descriptor.
fn within_open_files(adapter: &str, configured: usize) -> usize {
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return configured;
    };
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    let reserve = RESERVED_OPEN_FILES.min(soft / 2);
    let room = soft.saturating_sub(reserve).max(1);
    if configured > room {
        tracing::warn!(
            adapter,
            configured,
            open_files = soft,
            used = room,
            "max_tcp_connections lowered to leave descriptors for the other listeners"
        );
        room
    } else {
        configured
    }
}
