//! Semantic rules checked after a configuration file has been parsed: every rule that a type
//! cannot express (ownership of domains and sockets across adapters, required lists, TLS).

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::config::adapters::{AdapterConfig, AdapterKind, SipConfig, SipTransport};
use crate::config::routing;
use crate::config::source::KeyPath;
use crate::config::Config;
use cpim_broker::config::{is_valid_name, AdapterSettings, Checks, Domain, Socket};

pub(crate) use crate::config::source::Finding;

/// Checks every rule and returns all broken ones, in file order as far as possible.
pub(crate) fn validate(config: &Config) -> Vec<Finding> {
    let mut check = Checker::default();
    let root = KeyPath::root();

    let gateway = root.key("gateway");
    if config.gateway.data_dir.as_str().is_empty() {
        check.fail(
            gateway.key("data_dir"),
            "data_dir is empty".to_owned(),
            "write a directory, for example `data_dir = \"data\"` (the default)",
        );
    }
    if let Some(admin) = &config.admin {
        check.bind(
            root.key("admin").key("listen"),
            Socket::Tcp,
            admin.listen,
            "the admin listener".to_owned(),
        );
    }

    let adapters = root.key("adapters");
    if config.adapters.is_empty() {
        check.fail(
            adapters.clone(),
            "no adapters are configured".to_owned(),
            "add at least one `[adapters.<name>]` table with `type = \"sip\"`, \"xmpp\" or \
             \"webhook\"; see docs/configuration.md",
        );
    }
    // Webhook adapters claim their domains last, so that a collision between an app and another
    // adapter is reported at the app.
    let mut ordered: Vec<_> = config.adapters.iter().collect();
    ordered.sort_by_key(|(name, adapter)| (adapter.kind() == AdapterKind::Webhook, *name));
    for (name, adapter) in ordered {
        let path = adapters.key(name);
        if !is_valid_name(name) {
            check.fail(
                path.clone(),
                format!("adapter name `{name}` is not allowed"),
                "name adapters with lowercase letters, digits, `_` and `-`, e.g. `[adapters.sip]`",
            );
        }
        match adapter {
            AdapterConfig::Sip(sip) => check.sip(name, &path, sip),
            AdapterConfig::Xmpp(xmpp) => xmpp.check(name, &path, &mut check),
            AdapterConfig::Webhook(webhook) => webhook.check(name, &path, &mut check),
        }
    }
    let earlier_findings = !check.findings.is_empty();
    check
        .findings
        .extend(routing::validate(config, earlier_findings));
    check.findings
}

#[derive(Debug, Default)]
struct Checker {
    findings: Vec<Finding>,
    /// Domain → (owning adapter, where it was first listed).
    domains: HashMap<Domain, (String, KeyPath)>,
    /// Sockets bound so far: kind, address, description of the owner, where.
    sockets: Vec<(Socket, SocketAddr, String, KeyPath)>,
}

impl Checks for Checker {
    fn fail(&mut self, path: KeyPath, message: String, hint: &str) {
        self.findings.push(Finding {
            path,
            message,
            hint: hint.to_owned(),
        });
    }

    fn own(&mut self, adapter: &str, path: KeyPath, domain: &Domain) {
        match self.domains.get(domain) {
            Some((owner, first)) if owner == adapter => {
                let message = format!(
                    "domain `{domain}` is listed twice in adapter `{adapter}` (first at {first})"
                );
                self.fail(path, message, "remove one of the two entries");
            }
            Some((owner, first)) => {
                let message = format!(
                    "domain `{domain}` of adapter `{adapter}` is already owned by adapter \
                     `{owner}` (at {first})"
                );
                self.fail(
                    path,
                    message,
                    "each domain is routed to exactly one adapter (and a webhook app's domains \
                     must not collide with other adapters' domains); remove it from one of them",
                );
            }
            None => {
                self.domains
                    .insert(domain.clone(), (adapter.to_owned(), path));
            }
        }
    }

    fn bind(&mut self, path: KeyPath, socket: Socket, address: SocketAddr, owner: String) {
        let clash = self
            .sockets
            .iter()
            .find(|(kind, other, _, _)| *kind == socket && sockets_clash(address, *other))
            .map(|(_, other, other_owner, other_path)| {
                format!(
                    "{owner} on {address} clashes with {other_owner} on {other} (at {other_path})"
                )
            });
        match clash {
            Some(message) => self.fail(
                path,
                message,
                "two listeners of the same protocol need different ports (or different \
                 specific addresses); change one of them",
            ),
            None => self.sockets.push((socket, address, owner, path)),
        }
    }
}

impl Checker {
    fn require_some<T>(&mut self, items: &[T], path: KeyPath, what: String, example: &str) {
        Checks::require_some(self, items.is_empty(), path, what, example);
    }

    fn sip(&mut self, name: &str, path: &KeyPath, sip: &SipConfig) {
        self.require_some(
            &sip.domains,
            path.key("domains"),
            format!("`domains` of sip adapter `{name}`"),
            "add the SIP domains this adapter serves, e.g. `domains = [\"sip.example.com\"]`",
        );
        for (index, domain) in sip.domains.iter().enumerate() {
            self.own(name, path.key("domains").index(index), domain);
        }
        self.require_some(
            &sip.listen,
            path.key("listen"),
            format!("`listen` of sip adapter `{name}`"),
            "add a listener, e.g. `listen = [{ transport = \"udp\", address = \"127.0.0.1:5060\" }]`",
        );
        for (index, listener) in sip.listen.iter().enumerate() {
            let listener_path = path.key("listen").index(index);
            let is_tls = listener.transport == SipTransport::Tls;
            for (key, value) in [
                ("certificate", &listener.certificate),
                ("private_key", &listener.private_key),
            ] {
                match (is_tls, value) {
                    (true, None) => self.fail(
                        listener_path.clone(),
                        format!(
                            "tls listener {} of sip adapter `{name}` has no `{key}`",
                            listener.address
                        ),
                        "a tls listener needs `certificate = \"cert.pem\"` and \
                         `private_key = \"key.pem\"` (PEM files)",
                    ),
                    (false, Some(_)) => self.fail(
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
            self.bind(
                listener_path.key("address"),
                socket,
                listener.address,
                format!("{} listener of adapter `{name}`", listener.transport),
            );
        }
        for (index, domain) in sip.registrar_domains.iter().enumerate() {
            if !sip.domains.iter().any(|d| d.as_str() == domain.as_str()) {
                self.fail(
                    path.key("registrar_domains").index(index),
                    format!(
                        "registrar domain `{}` is not one of the `domains` of `{name}`",
                        domain.as_str()
                    ),
                    "list only domains this adapter serves",
                );
            }
        }
        if !sip.accounts.is_empty() && sip.registrar_domains.is_empty() {
            self.fail(
                path.key("accounts"),
                format!("sip adapter `{name}` has `accounts` but no `registrar_domains`"),
                "add `registrar_domains = [\"sip.example.com\"]`, or remove the accounts",
            );
        }
        if !sip.trusted_proxies.is_empty() && sip.registrar_domains.is_empty() {
            self.fail(
                path.key("trusted_proxies"),
                format!("sip adapter `{name}` has `trusted_proxies` but no `registrar_domains`"),
                "trusted proxies only skip the registrar's challenge: add `registrar_domains`, or remove them",
            );
        }
        for (index, account) in sip.accounts.iter().enumerate() {
            if account.password.is_empty() {
                self.fail(
                    path.key("accounts").index(index).key("password"),
                    format!(
                        "account `{}` of `{name}` has an empty password",
                        account.username
                    ),
                    "set a password (e.g. from an environment variable)",
                );
            }
        }
        for (index, credential) in sip.credentials.iter().enumerate() {
            if credential.password.is_empty() {
                self.fail(
                    path.key("credentials").index(index).key("password"),
                    format!(
                        "credentials `{}` of `{name}` have an empty password",
                        credential.username
                    ),
                    "set a password (e.g. from an environment variable)",
                );
            }
        }
        if let Some(proxy) = &sip.outbound_proxy {
            let lower = proxy.as_str().to_ascii_lowercase();
            if lower.starts_with("sips:") || lower.contains(";transport=tls") {
                self.fail(
                    path.key("outbound_proxy"),
                    format!("outbound_proxy `{proxy}` needs outbound TLS, which this version does not have"),
                    "use a udp or tcp proxy URI, e.g. `sip:127.0.0.1:5070;transport=tcp`",
                );
            }
        }
        if let Some(proxy) = &sip.outbound_proxy {
            let proxy = proxy.as_str();
            if !(proxy.starts_with("sip:") || proxy.starts_with("sips:")) || proxy.len() < 5 {
                self.fail(
                    path.key("outbound_proxy"),
                    format!("outbound_proxy `{proxy}` is not a SIP URI"),
                    "write a sip: or sips: URI, e.g. `outbound_proxy = \
                     \"sip:127.0.0.1:5070;transport=udp\"`, or remove the key",
                );
            }
        }
    }
}

/// Whether binding both addresses (same protocol) would fail: same port, and the same address
/// or one of them the unspecified address of the same family. Port 0 is never a clash.
fn sockets_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn sockets_clash_on_same_port_and_overlapping_address() {
        assert!(sockets_clash(addr("127.0.0.1:80"), addr("127.0.0.1:80")));
        assert!(sockets_clash(addr("0.0.0.0:80"), addr("127.0.0.1:80")));
        assert!(!sockets_clash(addr("127.0.0.1:80"), addr("127.0.0.2:80")));
        assert!(!sockets_clash(addr("127.0.0.1:80"), addr("127.0.0.1:81")));
        assert!(!sockets_clash(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
        assert!(!sockets_clash(addr("[::]:80"), addr("127.0.0.1:80")));
    }
}
