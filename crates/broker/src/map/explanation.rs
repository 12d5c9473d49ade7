//! What `cpim-gateway explain` prints: how every adapter reads an address and writes
//! its user ([`AddressMap::explain`](super::AddressMap::explain)'s answer, and its text).

use std::fmt;

use cpim::Address;

use super::{MapError, Route, Rule};

/// What [`AddressMap::explain`] found out about an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The address explained.
    pub address: Address,
    /// How each adapter whose style matches the address reads it (every adapter when none
    /// matches).
    pub readings: Vec<Reading>,
}

/// The address read as written on one adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The adapter.
    pub adapter: String,
    /// Whose the address is there, or why it cannot be routed.
    pub result: Result<Resolution, MapError>,
}

/// A routable reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Whose the address is.
    pub route: Route,
    /// The rule that matched.
    pub rule: Rule,
    /// How the user is written on every adapter, in map order.
    pub presentations: Vec<Presentation>,
}

/// How a user is written on one adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    /// The adapter.
    pub adapter: String,
    /// The address and the rule that produced it, or why there is none.
    pub result: Result<(Address, Rule), MapError>,
}

impl Explanation {
    /// The first reading that routes the address, if any.
    pub fn resolution(&self) -> Option<(&str, &Resolution)> {
        self.readings
            .iter()
            .find_map(|reading| match &reading.result {
                Ok(resolution) => Some((reading.adapter.as_str(), resolution)),
                Err(_) => None,
            })
    }

    /// Whether some adapter routes the address.
    pub fn is_routable(&self) -> bool {
        self.resolution().is_some()
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "address {}", self.address)?;
        if self.readings.is_empty() {
            writeln!(f, "  no adapter is configured")?;
        }
        for reading in &self.readings {
            match &reading.result {
                Err(MapError::NoRoute { reason, .. }) => {
                    writeln!(
                        f,
                        "  on adapter {}: not routable: {reason}",
                        reading.adapter
                    )?;
                }
                Err(error) => writeln!(f, "  on adapter {}: {error}", reading.adapter)?,
                Ok(resolution) => {
                    let route = &resolution.route;
                    let home = route.identity.domain();
                    write!(f, "  on adapter {}: ", reading.adapter)?;
                    match &resolution.rule {
                        Rule::Home => writeln!(f, "{home} is a home domain of this adapter")?,
                        Rule::AsIs => {
                            writeln!(f, "{home} is a home domain of adapter {}", route.owner)?;
                        }
                        Rule::AnyDomain => writeln!(
                            f,
                            "{home} is claimed by no adapter: a user of adapter {}, which \
                             reaches every other domain",
                            route.owner
                        )?,
                        Rule::Explicit => writeln!(f, "an explicit user entry")?,
                        Rule::Alias { domain } => {
                            writeln!(f, "alias domain {domain} stands for {home}")?;
                        }
                        Rule::Escape { domain } => writeln!(
                            f,
                            "escape domain {domain}; the local part is an escaped user@home \
                             (XEP-0106)"
                        )?,
                    }
                    writeln!(f, "    identity: {}", route.identity)?;
                    writeln!(f, "    owner:    adapter {}", route.owner)?;
                    if let Some(instance) = &route.instance {
                        writeln!(f, "    instance: {instance}")?;
                    }
                    writeln!(f, "    written on each adapter:")?;
                    let width = resolution
                        .presentations
                        .iter()
                        .map(|p| p.adapter.len())
                        .max()
                        .unwrap_or(0);
                    for presentation in &resolution.presentations {
                        let name = &presentation.adapter;
                        match &presentation.result {
                            Ok((address, rule)) => {
                                writeln!(f, "      {name:width$}  {address}  ({rule})")?;
                            }
                            Err(error) => writeln!(f, "      {name:width$}  none: {error}")?,
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
