//! Semantic rules checked after a configuration file has been parsed: every rule that a type
//! cannot express (ownership of domains and sockets across adapters, required lists, TLS).

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::config::adapters::AdapterKind;
use crate::config::routing;
use crate::config::source::KeyPath;
use crate::config::Config;
use cpim_broker::config::{is_valid_name, Checks, Domain, Socket};

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
        adapter.settings().check(name, &path, &mut check);
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
