//! Which foreign domains the SIP adapter reaches, and who may speak for one (issue 16):
//! a request whose `From` is at a remote domain is taken only from a peer trusted for that domain — one of the
//! networks configured for it (`trusted_peers`), the gateway's own outbound proxy or
//! trusted proxies, or one of the domain's own SIP servers as DNS names them (RFC 3263:
//! NAPTR, SRV and address records). Anyone else is refused with 403. The pure part:
//! networks and the decision; the driver looks the servers up.

use std::net::IpAddr;
use std::str::FromStr;

/// An IP network: an address and a prefix length (`192.0.2.0/24`, `2001:db8::/32`; a
/// bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

/// Why a network is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an IP address or network: write e.g. \"192.0.2.7\", \"192.0.2.0/24\" or \"2001:db8::/32\"")]
pub struct NetworkError {
    text: String,
}

impl FromStr for Network {
    type Err = NetworkError;

    fn from_str(text: &str) -> Result<Network, NetworkError> {
        let error = || NetworkError {
            text: text.to_owned(),
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| error())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(error)?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }
}

impl Network {
    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which foreign domains the adapter reaches and accepts users of: the listed
/// `remote_domains`, with `"*"` every domain no adapter claims, never the
/// `denied_domains`. Domains are lowercase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemotePolicy {
    /// The listed remote domains.
    pub listed: Vec<String>,
    /// Every domain no adapter claims is remote (`"*"`).
    pub any: bool,
    /// Domains neither reached nor accepted, listed or not.
    pub denied: Vec<String>,
}

/// What a domain is to the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Not a remote domain: other rules apply (the broker refuses another network's
    /// users; the registrar challenges its accounts).
    NotRemote,
    /// A remote domain (lowercase): found by RFC 3263, its users trusted only from peers
    /// that may speak for it.
    Remote(String),
    /// A denied domain (lowercase).
    Denied(String),
}

impl RemotePolicy {
    /// Whether any domain is remote.
    pub fn reaches_remote(&self) -> bool {
        self.any || !self.listed.is_empty()
    }

    /// What `host` is; `claimed`: whether some adapter claims it (its own domains
    /// included), which only matters for `"*"`.
    pub fn standing(&self, host: &str, claimed: bool) -> Standing {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.denied.contains(&host) {
            Standing::Denied(host)
        } else if self.listed.contains(&host) || (self.any && !claimed) {
            Standing::Remote(host)
        } else {
            Standing::NotRemote
        }
    }
}

/// What is decided before DNS is asked, for a user of a remote domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Trusted by configuration: the peer is in the domain's `trusted_peers` or is
    /// one of the gateway's proxies.
    Trusted,
    /// The peer may speak for the domain only if it is one of the domain's own SIP
    /// servers: the driver looks them up and calls [`among_servers`].
    AskDns,
}

/// The first decision for a request from `peer` whose `From` is at the remote
/// `domain` (lowercase). `trusted_peers`: per remote domain, the networks that may
/// speak for it; `proxies`: the gateway's outbound proxy and trusted proxies, which may
/// speak for every domain.
pub fn decide(
    domain: &str,
    peer: IpAddr,
    trusted_peers: &[(String, Vec<Network>)],
    proxies: &[IpAddr],
) -> Decision {
    let peer = peer.to_canonical();
    if proxies.iter().any(|p| p.to_canonical() == peer) {
        return Decision::Trusted;
    }
    let configured = trusted_peers
        .iter()
        .filter(|(d, _)| d == domain)
        .flat_map(|(_, networks)| networks);
    if configured.into_iter().any(|n| n.contains(peer)) {
        return Decision::Trusted;
    }
    Decision::AskDns
}

/// Whether `peer` is one of `servers`, the addresses DNS names for the domain's SIP
/// servers.
pub fn among_servers(peer: IpAddr, servers: &[IpAddr]) -> bool {
    let peer = peer.to_canonical();
    servers.iter().any(|s| s.to_canonical() == peer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_contain() {
        let cases: &[(&str, &str, bool)] = &[
            ("192.0.2.0/24", "192.0.2.200", true),
            ("192.0.2.0/24", "192.0.3.1", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("2001:db8::/32", "2001:db8:1::5", true),
            ("2001:db8::/32", "2001:db9::5", false),
            ("::1", "::1", true),
            ("::/0", "2001:db8::1", true),
            ("192.0.2.0/24", "2001:db8::1", false),
        ];
        for (network, address, inside) in cases {
            let n: Network = network.parse().unwrap();
            assert_eq!(n.contains(ip(address)), *inside, "{network} {address}");
        }
        for bad in [
            "",
            "example.com",
            "192.0.2.0/33",
            "2001:db8::/129",
            "192.0.2.0/x",
            "1.2.3/8",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
        assert_eq!(
            "192.0.2.7".parse::<Network>().unwrap().to_string(),
            "192.0.2.7/32"
        );
    }

    #[test]
    fn which_domains_are_remote() {
        let listed = RemotePolicy {
            listed: vec!["carrier.test".into()],
            any: false,
            denied: vec!["spam.test".into()],
        };
        let any = RemotePolicy {
            any: true,
            ..listed.clone()
        };
        let remote = |d: &str| Standing::Remote(d.into());
        let denied = |d: &str| Standing::Denied(d.into());
        // (policy, host, claimed by an adapter, standing)
        let cases: &[(&RemotePolicy, &str, bool, Standing)] = &[
            (&listed, "carrier.test", true, remote("carrier.test")),
            (&listed, "Carrier.TEST.", true, remote("carrier.test")),
            (&listed, "elsewhere.test", false, Standing::NotRemote),
            (&listed, "spam.test", false, denied("spam.test")),
            (&any, "elsewhere.test", false, remote("elsewhere.test")),
            // A domain of this gateway (its own or another adapter's) is never remote.
            (&any, "xmpp.test", true, Standing::NotRemote),
            (&any, "spam.test", false, denied("spam.test")),
            (&any, "carrier.test", true, remote("carrier.test")),
        ];
        for (policy, host, claimed, expected) in cases {
            assert_eq!(
                policy.standing(host, *claimed),
                *expected,
                "{host} {policy:?}"
            );
        }
        assert!(listed.reaches_remote() && any.reaches_remote());
        assert!(!RemotePolicy::default().reaches_remote());
    }

    #[test]
    fn who_may_speak_for_a_remote_domain() {
        let peers = vec![(
            "carrier.test".to_owned(),
            vec!["192.0.2.0/24".parse().unwrap()],
        )];
        let proxies = [ip("198.51.100.1")];
        let cases: &[(&str, &str, Decision)] = &[
            ("carrier.test", "192.0.2.44", Decision::Trusted),
            ("carrier.test", "::ffff:192.0.2.44", Decision::Trusted),
            ("carrier.test", "198.51.100.1", Decision::Trusted),
            ("other.test", "198.51.100.1", Decision::Trusted),
            ("carrier.test", "203.0.113.9", Decision::AskDns),
            // Another domain's networks do not speak for this one.
            ("other.test", "192.0.2.44", Decision::AskDns),
        ];
        for (domain, peer, expected) in cases {
            assert_eq!(
                decide(domain, ip(peer), &peers, &proxies),
                *expected,
                "{domain} {peer}"
            );
        }
        assert!(among_servers(ip("::ffff:127.0.0.1"), &[ip("127.0.0.1")]));
        assert!(!among_servers(ip("127.0.0.2"), &[ip("127.0.0.1")]));
        assert!(!among_servers(ip("127.0.0.1"), &[]));
    }
}
