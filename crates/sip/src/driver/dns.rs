//! RFC 3263 in DNS: the lookups `crate::locate` plans, asked through hickory-resolver
//! (its cache keeps every answer, positive or negative, for its TTL). Used for the
//! users of `remote_domains`; a lookup runs in the delivering task, never in the broker.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

use crate::locate::{self, Naptr, Plan, Srv, Wanted};
use crate::transport::{Peer, Transport};

/// Why no server was found for a domain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocateError {
    /// DNS answered, but with no usable record.
    #[error("{domain} has no SIP server the gateway can reach ({tried})")]
    NoServer {
        /// The domain.
        domain: String,
        /// What was looked up.
        tried: String,
    },
    /// A lookup failed (timeout, refused, server failure).
    #[error("DNS lookup of {name} ({kind}) failed: {reason}")]
    Lookup {
        /// The name looked up.
        name: String,
        /// The record type.
        kind: &'static str,
        /// What the resolver said.
        reason: String,
    },
    /// The resolver could not be set up (`/etc/resolv.conf` unreadable).
    #[error("no DNS resolver: {0}")]
    Setup(String),
}

/// The resolver of one SIP adapter.
pub struct Locator {
    resolver: TokioResolver,
    /// State of the draws for SRV weights (splitmix64).
    draws: AtomicU64,
}

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locator").finish_non_exhaustive()
    }
}

impl Locator {
    /// A resolver asking `nameservers` (UDP, then TCP for truncated answers), or the
    /// system's (`/etc/resolv.conf`) when there are none.
    pub fn new(nameservers: &[SocketAddr], seed: u64) -> Result<Locator, LocateError> {
        let provider = TokioRuntimeProvider::default();
        let builder = if nameservers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| LocateError::Setup(e.to_string()))?
        } else {
            let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
            for server in nameservers {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                config.add_name_server(NameServerConfig::new(server.ip(), true, vec![udp, tcp]));
            }
            TokioResolver::builder_with_config(config, provider)
        };
        let resolver = builder
            .build()
            .map_err(|e| LocateError::Setup(e.to_string()))?;
        Ok(Locator {
            resolver,
            draws: AtomicU64::new(seed),
        })
    }

    /// A number in `0..=n`.
    fn draw(&self, n: u32) -> u32 {
        let mut z = self
            .draws
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        u32::try_from(z % (u64::from(n) + 1)).unwrap_or(0)
    }

    /// The servers for `wanted`, in the order to try them (RFC 3263 §4), over the
    /// transports in `usable`.
    pub async fn locate(
        &self,
        wanted: &Wanted,
        usable: &[Transport],
    ) -> Result<Vec<Peer>, LocateError> {
        let domain = wanted.host.as_str();
        match locate::plan(wanted) {
            Plan::Direct {
                transport,
                ip,
                port,
            } => Ok(vec![Peer {
                transport,
                addr: SocketAddr::new(ip, port),
            }]),
            Plan::Address { transport, port } => {
                let peers = self.addresses(domain, transport, port).await?;
                self.found(domain, peers, || format!("A/AAAA {domain}"))
            }
            Plan::Srv { transport } => {
                let name = locate::srv_name(transport, domain);
                let mut peers = self.srv(&name, transport).await?;
                if peers.is_empty() {
                    peers = self
                        .addresses(domain, transport, locate::default_port(transport))
                        .await?;
                }
                self.found(domain, peers, || format!("SRV {name}, A/AAAA {domain}"))
            }
            Plan::Naptr => {
                let choices =
                    locate::naptr_choices(&self.naptr(domain).await?, wanted.secure, usable);
                let mut peers = Vec::new();
                let tried = if choices.is_empty() {
                    // No NAPTR for a usable transport: the SRV records of each, in
                    // preference; the first that has servers.
                    let transports = locate::fallback_transports(wanted.secure, usable);
                    for transport in &transports {
                        peers = self
                            .srv(&locate::srv_name(*transport, domain), *transport)
                            .await?;
                        if !peers.is_empty() {
                            break;
                        }
                    }
                    if peers.is_empty() {
                        let transport = if wanted.secure {
                            Transport::Tls
                        } else {
                            Transport::Udp
                        };
                        if usable.contains(&transport) {
                            peers = self
                                .addresses(domain, transport, locate::default_port(transport))
                                .await?;
                        }
                    }
                    format!(
                        "NAPTR {domain}, SRV of {} transports, A/AAAA {domain}",
                        transports.len()
                    )
                } else {
                    // RFC 3263 §4.1: the first record (by order and preference) for a
                    // usable transport whose SRV name has servers; its targets are the
                    // failover list (§4.3).
                    for (transport, name) in &choices {
                        peers = self.srv(name, *transport).await?;
                        if !peers.is_empty() {
                            break;
                        }
                    }
                    format!("NAPTR {domain} and its {} SRV names", choices.len())
                };
                self.found(domain, peers, || tried)
            }
        }
    }

    /// The addresses of every SIP server DNS names for `domain`, whatever transport:
    /// the SRV targets of its NAPTR records and of `_sip._udp`, `_sip._tcp` and
    /// `_sips._tcp`, and its own address records. Who may speak for the domain.
    pub async fn servers_of(&self, domain: &str) -> Result<Vec<IpAddr>, LocateError> {
        let all = [Transport::Udp, Transport::Tcp, Transport::Tls];
        let mut names: Vec<(Transport, String)> =
            locate::naptr_choices(&self.naptr(domain).await?, false, &all);
        for transport in all {
            let name = locate::srv_name(transport, domain);
            if !names.iter().any(|(_, n)| *n == name) {
                names.push((transport, name));
            }
        }
        let mut servers: Vec<IpAddr> = Vec::new();
        for (transport, name) in names {
            for peer in self.srv(&name, transport).await? {
                servers.push(peer.addr.ip());
            }
        }
        for peer in self.addresses(domain, Transport::Udp, 0).await? {
            servers.push(peer.addr.ip());
        }
        servers.sort();
        servers.dedup();
        Ok(servers)
    }

    fn found(
        &self,
        domain: &str,
        peers: Vec<Peer>,
        tried: impl FnOnce() -> String,
    ) -> Result<Vec<Peer>, LocateError> {
        if peers.is_empty() {
            return Err(LocateError::NoServer {
                domain: domain.to_owned(),
                tried: tried(),
            });
        }
        Ok(peers)
    }

    async fn naptr(&self, domain: &str) -> Result<Vec<Naptr>, LocateError> {
        let Some(lookup) = self.lookup(domain, RecordType::NAPTR).await? else {
            return Ok(Vec::new());
        };
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::NAPTR(n) => Some(Naptr {
                    order: n.order,
                    preference: n.preference,
                    flags: String::from_utf8_lossy(&n.flags).into_owned(),
                    services: String::from_utf8_lossy(&n.services).into_owned(),
                    replacement: n.replacement.to_utf8(),
                }),
                _ => None,
            })
            .collect())
    }

    /// The servers of one SRV name, each target's addresses in turn.
    async fn srv(&self, name: &str, transport: Transport) -> Result<Vec<Peer>, LocateError> {
        let Some(lookup) = self.lookup(name, RecordType::SRV).await? else {
            return Ok(Vec::new());
        };
        let records: Vec<Srv> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(s) => Some(Srv {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: s.target.to_utf8(),
                }),
                _ => None,
            })
            .collect();
        let mut peers = Vec::new();
        for (target, port) in locate::srv_order(&records, |n| self.draw(n)) {
            match self.addresses(&target, transport, port).await {
                Ok(found) => peers.extend(found),
                // One target without addresses does not hide the others.
                Err(e) => tracing::debug!(%target, error = %e, "SRV target not resolved"),
            }
        }
        Ok(peers)
    }

    async fn addresses(
        &self,
        host: &str,
        transport: Transport,
        port: u16,
    ) -> Result<Vec<Peer>, LocateError> {
        let name = fqdn(host);
        match self.resolver.lookup_ip(name.as_str()).await {
            Ok(found) => Ok(found
                .iter()
                .map(|ip| Peer {
                    transport,
                    addr: SocketAddr::new(ip, port),
                })
                .collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(LocateError::Lookup {
                name: host.to_owned(),
                kind: "A/AAAA",
                reason: e.to_string(),
            }),
        }
    }

    /// A lookup; `None` when the name has no such records (NXDOMAIN or NODATA).
    async fn lookup(
        &self,
        name: &str,
        kind: RecordType,
    ) -> Result<Option<hickory_resolver::lookup::Lookup>, LocateError> {
        match self.resolver.lookup(fqdn(name).as_str(), kind).await {
            Ok(lookup) => Ok(Some(lookup)),
            Err(e) if e.is_no_records_found() => Ok(None),
            Err(e) => Err(LocateError::Lookup {
                name: name.to_owned(),
                kind: if kind == RecordType::NAPTR {
                    "NAPTR"
                } else {
                    "SRV"
                },
                reason: e.to_string(),
            }),
        }
    }
}

/// A name as absolute, so that no search domain of the resolver is tried first.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}
