//! Who may speak for a foreign domain (issue 16): a request whose `From` is at one of
//! `remote_domains` is taken only from a peer trusted for that domain — one of the
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

/// What is decided before DNS is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The `From` is not at a remote domain: other rules apply (the broker refuses
    /// another network's users; the registrar challenges its accounts).
    NotRemote,
    /// Trusted by configuration: the peer is in the domain's `trusted_peers` or is
    /// one of the gateway's proxies.
    Trusted,
    /// The peer may speak for the domain only if it is one of the domain's own SIP
    /// servers: the driver looks them up and calls [`among_servers`].
    AskDns {
        /// The remote domain, lowercase.
        domain: String,
    },
}

/// The first decision for a request from `peer` whose `From` host is `from_host`.
/// `remote`: the remote domains (lowercase); `trusted_peers`: per remote domain, the
/// networks that may speak for it; `proxies`: the gateway's outbound proxy and trusted
/// proxies, which may speak for every domain.
pub fn decide(
    from_host: &str,
    peer: IpAddr,
    remote: &[String],
    trusted_peers: &[(String, Vec<Network>)],
    proxies: &[IpAddr],
) -> Decision {
    let host = from_host.trim_end_matches('.').to_ascii_lowercase();
    if !remote.contains(&host) {
        return Decision::NotRemote;
    }
    let peer = peer.to_canonical();
    if proxies.iter().any(|p| p.to_canonical() == peer) {
        return Decision::Trusted;
    }
    let configured = trusted_peers
        .iter()
        .filter(|(d, _)| *d == host)
        .flat_map(|(_, networks)| networks);
    if configured.into_iter().any(|n| n.contains(peer)) {
        return Decision::Trusted;
    }
    Decision::AskDns { domain: host }
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
    fn who_may_speak_for_a_remote_domain() {
        let remote = vec!["carrier.test".to_owned(), "other.test".to_owned()];
        let peers = vec![(
            "carrier.test".to_owned(),
            vec!["192.0.2.0/24".parse().unwrap()],
        )];
        let proxies = [ip("198.51.100.1")];
        let ask = |d: &str| Decision::AskDns { domain: d.into() };
        let cases: &[(&str, &str, Decision)] = &[
            ("sip.test", "203.0.113.9", Decision::NotRemote),
            ("carrier.test", "192.0.2.44", Decision::Trusted),
            ("Carrier.TEST.", "192.0.2.44", Decision::Trusted),
            ("carrier.test", "::ffff:192.0.2.44", Decision::Trusted),
            ("carrier.test", "198.51.100.1", Decision::Trusted),
            ("other.test", "198.51.100.1", Decision::Trusted),
            ("carrier.test", "203.0.113.9", ask("carrier.test")),
            // Another domain's networks do not speak for this one.
            ("other.test", "192.0.2.44", ask("other.test")),
        ];
        for (host, peer, expected) in cases {
            assert_eq!(
                decide(host, ip(peer), &remote, &peers, &proxies),
                *expected,
                "{host} {peer}"
            );
        }
        assert!(among_servers(ip("::ffff:127.0.0.1"), &[ip("127.0.0.1")]));
        assert!(!among_servers(ip("127.0.0.2"), &[ip("127.0.0.1")]));
        assert!(!among_servers(ip("127.0.0.1"), &[]));
    }
}
