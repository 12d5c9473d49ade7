//! Locating a SIP server (RFC 3263 §4): which transport, port and addresses a request
//! for a URI goes to. The pure part: what to look up, and how to order what DNS
//! answered. The driver (`driver::dns`) asks the questions and follows the plan.
//!
//! - A numeric host needs no DNS: the URI's transport (UDP, or TLS for `sips:`) and port.
//! - A port in the URI: the host's address records, with the URI's transport (§4.2).
//! - A transport but no port: the SRV records of that transport, else the address
//!   records at the transport's default port.
//! - Neither: NAPTR records (`SIP+D2U`, `SIP+D2T`, `SIPS+D2T`, lowest order then
//!   preference, only transports the gateway can send on; a `sips:` URI only on TLS),
//!   else the SRV records of every usable transport in the gateway's preference (TLS,
//!   TCP, UDP), else the address records over UDP (TLS for `sips:`) at the default port.
//!
//! SRV records are ordered by priority, and within one priority by weight (RFC 2782):
//! the random draw is passed in, so the order is a function of its inputs.

use std::net::IpAddr;

use crate::transport::Transport;

/// What a URI asks for: its host, and the port and transport it names, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The host, without the brackets of an IPv6 reference, in lowercase. For a TLS
    /// connection this is the domain the server's certificate must name (RFC 5922
    /// §7.2), whatever SRV target it is reached at.
    pub host: String,
    /// The port in the URI.
    pub port: Option<u16>,
    /// The `transport=` parameter (`tls` for a `sips:` URI that names none).
    pub transport: Option<Transport>,
    /// A `sips:` URI: TLS only.
    pub secure: bool,
}

impl Wanted {
    /// What `uri` asks for.
    pub fn of(uri: &cpim::address::SipUri) -> Wanted {
        let secure = uri.is_secure();
        let transport = match uri
            .param("transport")
            .flatten()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("udp") if !secure => Some(Transport::Udp),
            Some("tcp") if !secure => Some(Transport::Tcp),
            // RFC 3261 §26.2.2: `sips:` with `transport=tcp` means TLS over TCP.
            Some("tcp" | "tls") => Some(Transport::Tls),
            _ if secure => Some(Transport::Tls),
            _ => None,
        };
        Wanted {
            host: uri
                .host()
                .as_str()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            port: uri.port(),
            transport,
            secure,
        }
    }
}

/// What to look up first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A numeric host: this address, no DNS.
    Direct {
        /// The transport.
        transport: Transport,
        /// The address.
        ip: IpAddr,
        /// The port.
        port: u16,
    },
    /// The host's address records, with this transport and port.
    Address {
        /// The transport.
        transport: Transport,
        /// The port.
        port: u16,
    },
    /// The SRV records of this transport; without any, its address records at its
    /// default port.
    Srv {
        /// The transport.
        transport: Transport,
    },
    /// NAPTR records; without any, [`fallback_transports`] by SRV, then address records.
    Naptr,
}

/// The port a transport is at when nothing names one (RFC 3261 §19.1.2).
pub fn default_port(transport: Transport) -> u16 {
    if transport == Transport::Tls {
        5061
    } else {
        5060
    }
}

/// The first step for `wanted` (RFC 3263 §4.1, §4.2).
pub fn plan(wanted: &Wanted) -> Plan {
    if let Ok(ip) = wanted.host.parse::<IpAddr>() {
        let transport = wanted.transport.unwrap_or(Transport::Udp);
        return Plan::Direct {
            transport,
            ip,
            port: wanted.port.unwrap_or(default_port(transport)),
        };
    }
    match (wanted.port, wanted.transport) {
        (Some(port), transport) => Plan::Address {
            transport: transport.unwrap_or(Transport::Udp),
            port,
        },
        (None, Some(transport)) => Plan::Srv { transport },
        (None, None) => Plan::Naptr,
    }
}

/// The SRV owner name of `transport` at `domain` (RFC 3263 §4.1: TLS is `_sips._tcp`).
pub fn srv_name(transport: Transport, domain: &str) -> String {
    let service = match transport {
        Transport::Udp => "_sip._udp",
        Transport::Tcp => "_sip._tcp",
        Transport::Tls => "_sips._tcp",
    };
    format!("{service}.{}", domain.trim_end_matches('.'))
}

/// The NAPTR service field of `transport` (RFC 3263 §4.1).
pub fn naptr_service(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "SIP+D2U",
        Transport::Tcp => "SIP+D2T",
        Transport::Tls => "SIPS+D2T",
    }
}

/// The transports to try by SRV when a domain has no NAPTR records, in the gateway's
/// preference: secure and congestion-controlled first. `usable` are the transports
/// the gateway can send on.
pub fn fallback_transports(secure: bool, usable: &[Transport]) -> Vec<Transport> {
    [Transport::Tls, Transport::Tcp, Transport::Udp]
        .into_iter()
        .filter(|t| usable.contains(t) && (!secure || *t == Transport::Tls))
        .collect()
}

/// One NAPTR record as DNS answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    /// Lower first.
    pub order: u16,
    /// Lower first, among records of one order.
    pub preference: u16,
    /// `s`: the replacement is an SRV name.
    pub flags: String,
    /// E.g. `SIP+D2T`.
    pub services: String,
    /// The SRV name to look up.
    pub replacement: String,
}

/// The SRV names to look up, in order, with their transport: the NAPTR records for a
/// transport the gateway can send on (a `sips:` URI: TLS only), with the `s` flag and
/// a replacement, lowest order, then lowest preference first (RFC 3263 §4.1, RFC 3403
/// §4.1). Records of other services (e.g. `E2U+sip`) and terminal flags other than `s`
/// are not for SIP server location and are skipped.
pub fn naptr_choices(
    records: &[Naptr],
    secure: bool,
    usable: &[Transport],
) -> Vec<(Transport, String)> {
    let mut sorted: Vec<&Naptr> = records.iter().collect();
    sorted.sort_by_key(|r| (r.order, r.preference));
    let mut choices = Vec::new();
    for record in sorted {
        if !record.flags.eq_ignore_ascii_case("s") {
            continue;
        }
        let replacement = record.replacement.trim_end_matches('.');
        if replacement.is_empty() {
            continue;
        }
        let Some(transport) = [Transport::Udp, Transport::Tcp, Transport::Tls]
            .into_iter()
            .find(|t| record.services.eq_ignore_ascii_case(naptr_service(*t)))
        else {
            continue;
        };
        if !usable.contains(&transport) || (secure && transport != Transport::Tls) {
            continue;
        }
        let choice = (transport, replacement.to_ascii_lowercase());
        if !choices.contains(&choice) {
            choices.push(choice);
        }
    }
    choices
}

/// One SRV record as DNS answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Lower first.
    pub priority: u16,
    /// Share of the traffic among records of one priority.
    pub weight: u16,
    /// The server's port.
    pub port: u16,
    /// The server's host name; `.` alone means "no service here".
    pub target: String,
}

/// The targets in the order to try them (RFC 2782): by priority; within a priority, a
/// weighted random order — each next one drawn with a probability proportional to its
/// weight (records of weight 0 have a small chance, and come first among themselves in
/// the answer's order). `draw(n)` returns a number in `0..=n`. A lone `.` target means
/// the domain offers no such service: no targets.
pub fn srv_order(records: &[Srv], mut draw: impl FnMut(u32) -> u32) -> Vec<(String, u16)> {
    if records.len() == 1 && records[0].target.trim_end_matches('.').is_empty() {
        return Vec::new();
    }
    let mut by_priority: Vec<&Srv> = records
        .iter()
        .filter(|r| !r.target.trim_end_matches('.').is_empty())
        .collect();
    by_priority.sort_by_key(|r| r.priority);
    let mut ordered = Vec::with_capacity(by_priority.len());
    for group in by_priority.chunk_by(|a, b| a.priority == b.priority) {
        // RFC 2782: weight-0 records first, then the others, in the answer's order;
        // then repeatedly draw against the running sums.
        let mut left: Vec<&Srv> = group.iter().filter(|r| r.weight == 0).copied().collect();
        left.extend(group.iter().filter(|r| r.weight != 0).copied());
        while !left.is_empty() {
            let total: u32 = left.iter().map(|r| u32::from(r.weight)).sum();
            let pick = draw(total);
            let mut sum = 0u32;
            let index = left
                .iter()
                .position(|r| {
                    sum += u32::from(r.weight);
                    sum >= pick
                })
                .unwrap_or(left.len() - 1);
            let chosen = left.remove(index);
            ordered.push((
                chosen.target.trim_end_matches('.').to_ascii_lowercase(),
                chosen.port,
            ));
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use Transport::{Tcp, Tls, Udp};

    fn wanted(uri: &str) -> Wanted {
        Wanted::of(&cpim::address::SipUri::parse(uri).unwrap())
    }

    #[test]
    fn the_first_step_follows_rfc_3263_section_4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases: &[(&str, Plan)] = &[
            (
                "sip:bob@192.0.2.4",
                Plan::Direct {
                    transport: Udp,
                    ip: ip("192.0.2.4"),
                    port: 5060,
                },
            ),
            (
                "sips:bob@192.0.2.4",
                Plan::Direct {
                    transport: Tls,
                    ip: ip("192.0.2.4"),
                    port: 5061,
                },
            ),
            (
                "sip:bob@192.0.2.4:5070;transport=tcp",
                Plan::Direct {
                    transport: Tcp,
                    ip: ip("192.0.2.4"),
                    port: 5070,
                },
            ),
            (
                "sip:bob@[2001:db8::1]",
                Plan::Direct {
                    transport: Udp,
                    ip: ip("2001:db8::1"),
                    port: 5060,
                },
            ),
            (
                "sip:bob@example.com:5080",
                Plan::Address {
                    transport: Udp,
                    port: 5080,
                },
            ),
            (
                "sips:bob@example.com:5081",
                Plan::Address {
                    transport: Tls,
                    port: 5081,
                },
            ),
            (
                "sip:bob@example.com:5080;transport=tcp",
                Plan::Address {
                    transport: Tcp,
                    port: 5080,
                },
            ),
            (
                "sip:bob@example.com;transport=tcp",
                Plan::Srv { transport: Tcp },
            ),
            (
                "sip:bob@example.com;transport=TLS",
                Plan::Srv { transport: Tls },
            ),
            (
                "sip:bob@example.com;transport=udp",
                Plan::Srv { transport: Udp },
            ),
            (
                "sips:bob@example.com;transport=tcp",
                Plan::Srv { transport: Tls },
            ),
            ("sips:bob@example.com", Plan::Srv { transport: Tls }),
            ("sip:bob@example.com", Plan::Naptr),
            ("sip:bob@Example.COM;transport=sctp", Plan::Naptr),
        ];
        for (uri, expected) in cases {
            assert_eq!(plan(&wanted(uri)), *expected, "{uri}");
        }
        assert_eq!(wanted("sip:bob@Example.COM").host, "example.com");
    }

    #[test]
    fn srv_names_and_the_fallback_transports() {
        assert_eq!(srv_name(Udp, "example.com"), "_sip._udp.example.com");
        assert_eq!(srv_name(Tcp, "example.com."), "_sip._tcp.example.com");
        assert_eq!(srv_name(Tls, "example.com"), "_sips._tcp.example.com");
        let cases: &[(bool, &[Transport], &[Transport])] = &[
            (false, &[Udp, Tcp, Tls], &[Tls, Tcp, Udp]),
            (false, &[Udp], &[Udp]),
            (false, &[Tcp, Udp], &[Tcp, Udp]),
            (true, &[Udp, Tcp, Tls], &[Tls]),
            (true, &[Udp, Tcp], &[]),
        ];
        for (secure, usable, expected) in cases {
            assert_eq!(
                fallback_transports(*secure, usable),
                *expected,
                "{secure} {usable:?}"
            );
        }
    }

    fn naptr(order: u16, preference: u16, flags: &str, services: &str, replacement: &str) -> Naptr {
        Naptr {
            order,
            preference,
            flags: flags.into(),
            services: services.into(),
            replacement: replacement.into(),
        }
    }

    #[test]
    fn naptr_records_are_ordered_and_filtered() {
        let all = [Udp, Tcp, Tls];
        let records = [
            naptr(100, 50, "s", "SIP+D2U", "_sip._udp.example.com."),
            naptr(90, 50, "s", "SIP+D2T", "_sip._tcp.example.com."),
            naptr(90, 40, "S", "SIPS+D2T", "_sips._tcp.example.com."),
            naptr(10, 10, "u", "E2U+sip", ""),
            naptr(50, 10, "s", "SIP+D2S", "_sip._sctp.example.com."),
            naptr(50, 20, "a", "SIP+D2U", "a.example.com."),
            naptr(60, 20, "s", "SIP+D2U", ""),
        ];
        let name = |s: &str| s.to_owned();
        type Case<'a> = (bool, &'a [Transport], Vec<(Transport, String)>);
        let cases: &[Case<'_>] = &[
            (
                false,
                &all,
                vec![
                    (Tls, name("_sips._tcp.example.com")),
                    (Tcp, name("_sip._tcp.example.com")),
                    (Udp, name("_sip._udp.example.com")),
                ],
            ),
            (
                false,
                &[Udp, Tcp],
                vec![
                    (Tcp, name("_sip._tcp.example.com")),
                    (Udp, name("_sip._udp.example.com")),
                ],
            ),
            (true, &all, vec![(Tls, name("_sips._tcp.example.com"))]),
            (true, &[Udp, Tcp], vec![]),
        ];
        for (secure, usable, expected) in cases {
            assert_eq!(
                naptr_choices(&records, *secure, usable),
                *expected,
                "{secure} {usable:?}"
            );
        }
        assert!(naptr_choices(&[], false, &all).is_empty());
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    #[test]
    fn srv_records_go_by_priority_then_weight() {
        let records = [
            srv(20, 0, 5060, "backup.example.com."),
            srv(10, 60, 5060, "big.example.com."),
            srv(10, 20, 5062, "small.example.com."),
            srv(10, 0, 5064, "zero.example.com."),
        ];
        // Weight-0 records first, then the others in the answer's order: running sums
        // zero 0, big 60, small 80; a draw picks the first whose sum reaches it.
        let order = |draws: &[u32]| {
            let mut draws = draws.iter().copied();
            srv_order(&records, |total| draws.next().unwrap().min(total))
                .into_iter()
                .map(|(t, p)| format!("{t}:{p}"))
                .collect::<Vec<_>>()
        };
        let (big, small, zero, backup) = (
            "big.example.com:5060",
            "small.example.com:5062",
            "zero.example.com:5064",
            "backup.example.com:5060",
        );
        assert_eq!(order(&[80, 0, 0, 0]), [small, zero, big, backup]);
        assert_eq!(order(&[0, 1, 0, 0]), [zero, big, small, backup]);
        assert_eq!(order(&[21, 0, 0, 0]), [big, zero, small, backup]);
        assert_eq!(order(&[61, 60, 0, 0]), [small, big, zero, backup]);
        // "No service": one record whose target is ".".
        assert!(srv_order(&[srv(0, 0, 0, ".")], |_| 0).is_empty());
        assert!(srv_order(&[], |_| 0).is_empty());
    }

    #[test]
    fn weights_share_the_first_place_in_proportion() {
        // A deterministic sweep over every draw: 60/20/0 over 0..=80 puts big first 60
        // times, small 20 times, zero once (draw 0).
        let records = [
            srv(10, 60, 1, "big."),
            srv(10, 20, 2, "small."),
            srv(10, 0, 3, "zero."),
        ];
        let mut firsts = std::collections::BTreeMap::new();
        for n in 0..=80u32 {
            let mut first = true;
            let order = srv_order(&records, |total| {
                let d = if first { n.min(total) } else { 0 };
                first = false;
                d
            });
            *firsts.entry(order[0].0.clone()).or_insert(0) += 1;
        }
        assert_eq!(firsts["big"], 60);
        assert_eq!(firsts["small"], 20);
        assert_eq!(firsts["zero"], 1);
    }
}
