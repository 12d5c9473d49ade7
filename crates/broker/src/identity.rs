//! Who a user is, independent of the network that writes the address.

use std::fmt;

use serde::{Deserialize, Serialize};

use cpim::address::{xep0106_escape, ImScheme, ImUri};
use cpim::{Address, AddressError, Host, Jid, SipUri};

/// A user as the gateway knows them: the unescaped local part at their home domain
/// (the domain owned by the adapter of the network they live on). Domains are
/// lowercase. Routing, dedup and presence are keyed by identities.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    local: String,
    domain: String,
}

impl Identity {
    /// An identity from an unescaped local part and a domain.
    pub fn new(local: &str, domain: &str) -> Self {
        Identity {
            local: local.to_owned(),
            domain: domain.to_ascii_lowercase(),
        }
    }

    /// The unescaped local part.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The home domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// How a network writes addresses; every adapter declares one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressStyle {
    /// `sip:user@domain` (RFC 3261), user part percent-encoded.
    Sip,
    /// `user@domain` JIDs, localpart XEP-0106-escaped.
    Xmpp,
    /// `im:user@domain` (RFC 3860), as the webhook API writes them.
    Im,
}

impl AddressStyle {
    /// Writes `local@domain` (and an instance: SIP `;gr=`, XMPP resource) in this style.
    pub fn render(
        self,
        local: &str,
        domain: &str,
        instance: Option<&str>,
    ) -> Result<Address, AddressError> {
        match self {
            AddressStyle::Sip => {
                let uri = SipUri::from_parts(false, Some(local), Host::parse(domain)?, None);
                Ok(Address::Sip(match instance {
                    Some(gr) => uri.with_gr(gr),
                    None => uri,
                }))
            }
            AddressStyle::Xmpp => {
                let escaped = xep0106_escape(local)?;
                Jid::from_parts(Some(&escaped), domain, instance).map(Address::Xmpp)
            }
            AddressStyle::Im => {
                ImUri::from_parts(ImScheme::Im, local, Host::parse(domain)?).map(Address::Im)
            }
        }
    }
}

/// The instance part of an address: SIP `;gr=` or XMPP resource (RFC 7247 §6.3).
pub fn instance_of(address: &Address) -> Option<String> {
    match address {
        Address::Sip(u) => u.gr().ok().flatten(),
        Address::Xmpp(j) => j.resource().map(str::to_owned),
        Address::Im(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn render_each_style() {
        let cases = [
            (AddressStyle::Sip, "sip:o'malley@sip.example;gr=p1"),
            (AddressStyle::Xmpp, "o\\27malley@sip.example/p1"),
            (AddressStyle::Im, "im:o'malley@sip.example"),
        ];
        for (style, text) in cases {
            let a = style.render("o'malley", "SIP.example", Some("p1")).unwrap();
            assert_eq!(a.to_string(), text);
            let (local, domain) = a.identity().unwrap().unwrap();
            assert_eq!(
                Identity::new(&local, &domain),
                Identity::new("o'malley", "sip.example")
            );
        }
    }
}
