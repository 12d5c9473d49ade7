//! `host:port` values.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::config::de::parse_str;
use crate::config::Domain;

/// A `host:port` pair; the host is a name or an IP address (IPv6 in brackets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(address) = text.parse::<SocketAddr>() {
            return Ok(HostPort {
                host: address.ip().to_string(),
                port: address.port(),
            });
        }
        let expected = || format!("`{text}` is not host:port; write for example `127.0.0.1:5347`");
        let (host, port) = text.rsplit_once(':').ok_or_else(expected)?;
        let port = port.parse::<u16>().map_err(|_| expected())?;
        if host.is_empty() || host.contains(':') || host.contains('[') {
            return Err(expected());
        }
        let host = Domain::parse(host).map_err(|error| error.to_string())?;
        Ok(HostPort {
            host: host.as_str().to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parse_str(deserializer, "host:port", HostPort::from_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parses_names_and_addresses() {
        let parsed = "127.0.0.1:5347".parse::<HostPort>();
        assert_eq!(
            parsed.as_ref().map(|h| h.to_string()).as_deref(),
            Ok("127.0.0.1:5347")
        );
        let parsed = "[::1]:5347".parse::<HostPort>();
        assert_eq!(
            parsed.as_ref().map(|h| h.to_string()).as_deref(),
            Ok("[::1]:5347")
        );
        let parsed = "xmpp.localhost:5347".parse::<HostPort>();
        assert_eq!(
            parsed,
            Ok(HostPort {
                host: "xmpp.localhost".to_owned(),
                port: 5347
            })
        );
    }

    #[test]
    fn host_port_rejects_missing_or_bad_parts() {
        for text in [
            "xmpp.localhost",
            ":5347",
            "host:99999",
            "::1:5347",
            "Bad_Host:1",
            "",
        ] {
            assert!(
                text.parse::<HostPort>().is_err(),
                "{text} should be rejected"
            );
        }
    }
}
