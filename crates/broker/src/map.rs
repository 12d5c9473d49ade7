//! The address map: which adapter a user belongs to, and how every adapter writes them.
//!
//! Each adapter has an [`AddressStyle`] and owns domains of three kinds:
//!
//! - **home domains**, where its own users live (`sip:alice@sip.localhost`);
//! - **alias domains**, under which the users of one home domain of *another* adapter appear
//!   with their local part unchanged (SIP `alice@sip.localhost` is `alice@sip.gw.xmpp.localhost`
//!   on XMPP) — the pattern mapping of RFC 7247 §6.1, where the gateway picks the domain;
//! - **escape domains**, generic gateway domains under which *any* foreign user appears with
//!   `local@home` XEP-0106-escaped into the local part (`alice\40sip.localhost@gw.xmpp.localhost`),
//!   the addressing of XEP-0106 §5 and XEP-0100 gateways.
//!
//! Explicit per-user entries (`alice@xmpp.localhost` is `sip:+15551234567@carrier.example` on
//! adapter `sip`) win over the patterns in both directions.
//!
//! [`AddressMap::resolve`] reads an address as written on one adapter's network and answers
//! whose it is ([`Route`]); [`AddressMap::present`] writes a user for one adapter. For every
//! user and adapter the two are inverse (see the `prop_present_then_resolve_is_identity` test);
//! only the instance is lost on adapters whose style has none (`im:` URIs).
//!
//! The map is pure data: no IO, no clock, built once from configuration. It does not decide
//! which adapter *delivers* a message (that is the owner of the route) and it does not apply
//! PRECIS case mapping (OPTIONAL in RFC 7247).

use std::collections::BTreeMap;
use std::fmt;

use cpim::{Address, AddressError, Host};

use crate::identity::{instance_of, AddressStyle, Identity};

/// The rules of an address map, as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapConfig {
    /// The adapters, in the order in which `explain` tries them.
    pub adapters: Vec<AdapterMapConfig>,
    /// Explicit per-user entries.
    pub users: Vec<UserEntry>,
    /// The adapter whose users are at every domain no adapter claims (a SIP adapter
    /// with `remote_domains = ["*"]`, which finds any domain's servers in DNS).
    pub any_domain: Option<String>,
}

/// The domains one adapter owns and how it writes addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterMapConfig {
    /// The adapter's name.
    pub name: String,
    /// How the adapter's network writes addresses.
    pub style: AddressStyle,
    /// Domains whose users live on this adapter's network.
    pub home_domains: Vec<String>,
    /// `(alias domain, home domain)`: users of the home domain (owned by another adapter)
    /// appear on this adapter under the alias domain.
    pub alias_domains: Vec<(String, String)>,
    /// Domains under which any foreign user appears as `local\40home` (the first one is used
    /// when presenting).
    pub escape_domains: Vec<String>,
}

/// An explicit mapping: `identity` is written `address` on `adapter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// The user, at their home domain.
    pub identity: Identity,
    /// The adapter on whose network the user has this address (not the user's own).
    pub adapter: String,
    /// The address, in the adapter's style, without an instance (`;gr=`, resource).
    pub address: Address,
}

/// Whose an address is: the answer of [`AddressMap::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// The user.
    pub identity: Identity,
    /// The adapter the user lives on (the owner of the identity's home domain).
    pub owner: String,
    /// The instance named by the address: SIP `;gr=` or XMPP resource (RFC 7247 §6.3).
    pub instance: Option<String>,
}

/// Which rule of the map produced an answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rule {
    /// A home domain of the adapter itself: the user lives on this network.
    Home,
    /// An explicit per-user entry.
    Explicit,
    /// A pattern alias: this alias domain stands for a home domain of another adapter.
    Alias {
        /// The alias domain.
        domain: String,
    },
    /// A generic gateway domain with `local@home` escaped into the local part (XEP-0106).
    Escape {
        /// The escape domain.
        domain: String,
    },
    /// A home domain of another adapter, written as it is.
    AsIs,
    /// A domain no adapter claims: the home of the `any_domain` adapter (SIP
    /// `remote_domains = ["*"]`).
    AnyDomain,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Home => f.write_str("home domain"),
            Rule::Explicit => f.write_str("explicit user entry"),
            Rule::Alias { domain } => write!(f, "alias domain {domain}"),
            Rule::Escape { domain } => write!(f, "escape domain {domain}, XEP-0106"),
            Rule::AsIs => f.write_str("foreign home domain, as is"),
            Rule::AnyDomain => f.write_str("a domain no adapter claims, as is"),
        }
    }
}

/// What an adapter does with a domain it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainRole {
    /// Its users live there.
    Home,
    /// It stands for a home domain of another adapter.
    Alias,
    /// Any foreign user appears there, escaped.
    Escape,
}

impl fmt::Display for DomainRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DomainRole::Home => "home",
            DomainRole::Alias => "alias",
            DomainRole::Escape => "escape",
        })
    }
}

/// Why an address cannot be routed (see [`MapError::NoRoute`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoRouteReason {
    /// The address names a domain only, no user.
    #[error("the address has no user part")]
    NoUserPart,
    /// The user part cannot be read (bad percent-encoding, not UTF-8).
    #[error("the user part cannot be read: {0}")]
    BadUserPart(AddressError),
    /// No adapter owns the domain.
    #[error("no adapter owns domain {domain}")]
    UnknownDomain {
        /// The domain.
        domain: String,
    },
    /// The domain is an alias or escape domain of another adapter, so it means nothing on
    /// this one.
    #[error("domain {domain} is an {role} domain of adapter {adapter}, not of this adapter")]
    OtherAdaptersDomain {
        /// The domain.
        domain: String,
        /// Its owner.
        adapter: String,
        /// What the owner uses it for.
        role: DomainRole,
    },
    /// An address at an escape domain whose unescaped local part has no `@`.
    #[error(
        "escape domain {domain} needs the local part user\\40home (an escaped user@home), \
         but `{local}` has no @"
    )]
    EscapeWithoutAt {
        /// The escape domain.
        domain: String,
        /// The unescaped local part.
        local: String,
    },
    /// An escaped `user@home` whose user is empty.
    #[error("escaped address `{local}` has an empty user before the @")]
    EscapeEmptyUser {
        /// The unescaped local part.
        local: String,
    },
    /// An escaped `user@home` whose home domain no adapter owns as a home domain.
    #[error("escaped address names domain {domain}, which is not a home domain of any adapter")]
    EscapeUnknownHome {
        /// The domain after the last `@`.
        domain: String,
    },
}

/// Why a map could not be built, or an address not resolved or presented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// Two adapters have the same name.
    #[error("adapter {adapter} is configured twice")]
    DuplicateAdapter {
        /// The name.
        adapter: String,
    },
    /// A configured domain is not a valid host name.
    #[error("domain `{domain}` of adapter {adapter} is not valid: {reason}")]
    InvalidDomain {
        /// The domain as configured.
        domain: String,
        /// The adapter it was configured on.
        adapter: String,
        /// What is wrong with it.
        reason: AddressError,
    },
    /// A domain is claimed twice (as home, alias or escape domain, by one or two adapters).
    #[error(
        "domain {domain} is the {second_role} domain of adapter {second} but already the \
         {first_role} domain of adapter {first}"
    )]
    DomainOwnedTwice {
        /// The domain.
        domain: String,
        /// The adapter that claimed it first.
        first: String,
        /// What the first adapter uses it for.
        first_role: DomainRole,
        /// The adapter that claimed it again.
        second: String,
        /// What the second claim was for.
        second_role: DomainRole,
    },
    /// An alias stands for a domain that is not a home domain of any adapter.
    #[error(
        "alias domain {alias_domain} on adapter {adapter} stands for {home_domain}, which is not \
         a home domain of any adapter"
    )]
    AliasTargetUnknown {
        /// The alias domain.
        alias_domain: String,
        /// The adapter the alias is on.
        adapter: String,
        /// The domain it was meant to stand for.
        home_domain: String,
    },
    /// An alias stands for a home domain of its own adapter (its users need no alias there).
    #[error(
        "alias domain {alias_domain} on adapter {adapter} stands for {home_domain}, a home \
         domain of the same adapter"
    )]
    AliasTargetOnSameAdapter {
        /// The alias domain.
        alias_domain: String,
        /// The adapter that owns both.
        adapter: String,
        /// The home domain.
        home_domain: String,
    },
    /// An adapter name that the map does not know.
    #[error("no adapter is named {adapter}")]
    UnknownAdapter {
        /// The name.
        adapter: String,
    },
    /// A user entry's identity is not at a home domain of any adapter.
    #[error("user {identity} is not at a home domain of any adapter")]
    UserNotAtHomeDomain {
        /// The identity.
        identity: Identity,
    },
    /// A user entry is on the user's own adapter, where their home address is used.
    #[error("user {identity} lives on adapter {adapter}; an entry there is not used")]
    UserOnHomeAdapter {
        /// The identity.
        identity: Identity,
        /// Its home adapter.
        adapter: String,
    },
    /// A user entry's address cannot be used on its adapter.
    #[error("address {address} of user {identity} on adapter {adapter} {reason}")]
    InvalidUserAddress {
        /// The identity.
        identity: Identity,
        /// The adapter.
        adapter: String,
        /// The address.
        address: Box<Address>,
        /// Why (a phrase, e.g. `is not in sip style`).
        reason: String,
    },
    /// A second entry for the same user on the same adapter.
    #[error("user {identity} has two entries on adapter {adapter}")]
    DuplicateUserEntry {
        /// The identity.
        identity: Identity,
        /// The adapter.
        adapter: String,
    },
    /// Two users are given the same address on one adapter.
    #[error("address {address} on adapter {adapter} is given to both {first} and {second}")]
    DuplicateUserAddress {
        /// The address of the second entry.
        address: Box<Address>,
        /// The adapter.
        adapter: String,
        /// The user of the first entry (boxed to keep the error small).
        first: Box<Identity>,
        /// The user of the second entry.
        second: Identity,
    },
    /// An address that cannot be routed from this adapter.
    #[error("{address} on adapter {adapter} cannot be routed: {reason}")]
    NoRoute {
        /// The address.
        address: Box<Address>,
        /// The adapter it was written on.
        adapter: String,
        /// Why.
        reason: NoRouteReason,
    },
    /// An identity whose domain is not a home domain of any adapter.
    #[error("{identity} is not at a home domain of any adapter")]
    UnknownIdentityDomain {
        /// The identity.
        identity: Identity,
    },
    /// A user cannot be written in an adapter's style (e.g. a local part too long for XMPP).
    #[error("{identity} cannot be written on adapter {adapter}: {reason}")]
    Unpresentable {
        /// The identity.
        identity: Identity,
        /// The adapter.
        adapter: String,
        /// What the address syntax does not allow.
        reason: AddressError,
    },
}

mod explanation;
pub use explanation::{Explanation, Presentation, Reading, Resolution};

/// The address map, built from a [`MapConfig`] by [`AddressMap::new`].
#[derive(Debug, Clone)]
pub struct AddressMap {
    adapters: Vec<AdapterMapConfig>,
    users: Vec<UserEntry>,
    /// Domain → (adapter index, what it is there).
    domains: BTreeMap<String, (usize, Claim)>,
    /// (adapter index, identity) → explicit address.
    user_addresses: BTreeMap<(usize, Identity), Address>,
    /// (adapter index, unescaped local, domain) → identity.
    user_identities: BTreeMap<(usize, String, String), Identity>,
    /// The adapter whose home is every domain no adapter claims.
    any_domain: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    Home,
    Alias { home: String },
    Escape,
}

impl Claim {
    fn role(&self) -> DomainRole {
        match self {
            Claim::Home => DomainRole::Home,
            Claim::Alias { .. } => DomainRole::Alias,
            Claim::Escape => DomainRole::Escape,
        }
    }
}

impl AddressMap {
    /// Builds the map, checking that every domain is claimed once (home, alias and escape
    /// domains of all adapters together; home and escape domains are claimed before alias
    /// domains), that every alias stands for a home domain of another adapter, and that user
    /// entries are consistent: at a home domain, not on the user's own adapter, in the
    /// adapter's style, without an instance, at most one per user and adapter and one user per
    /// address, and at a domain where no pattern could produce the same address (not a home
    /// or alias domain; at an escape domain of its own adapter only without `@` in the local
    /// part). Domains are compared in lowercase.
    pub fn new(config: MapConfig) -> Result<AddressMap, MapError> {
        let mut adapters = Vec::with_capacity(config.adapters.len());
        for adapter in config.adapters {
            if adapters
                .iter()
                .any(|a: &AdapterMapConfig| a.name == adapter.name)
            {
                return Err(MapError::DuplicateAdapter {
                    adapter: adapter.name,
                });
            }
            let domain = |d: &str| normalize_domain(d, &adapter.name);
            let normalized = AdapterMapConfig {
                home_domains: adapter
                    .home_domains
                    .iter()
                    .map(|d| domain(d))
                    .collect::<Result<_, _>>()?,
                alias_domains: adapter
                    .alias_domains
                    .iter()
                    .map(|(alias, home)| Ok((domain(alias)?, domain(home)?)))
                    .collect::<Result<_, MapError>>()?,
                escape_domains: adapter
                    .escape_domains
                    .iter()
                    .map(|d| domain(d))
                    .collect::<Result<_, _>>()?,
                ..adapter
            };
            adapters.push(normalized);
        }
        let mut map = AddressMap {
            adapters,
            users: Vec::new(),
            domains: BTreeMap::new(),
            user_addresses: BTreeMap::new(),
            user_identities: BTreeMap::new(),
            any_domain: None,
        };
        if let Some(name) = &config.any_domain {
            map.any_domain = Some(map.adapter_index(name)?);
        }
        let mut claims = Vec::new();
        for (index, adapter) in map.adapters.iter().enumerate() {
            claims.extend(adapter.home_domains.iter().map(|d| (d, index, Claim::Home)));
            claims.extend(
                adapter
                    .escape_domains
                    .iter()
                    .map(|d| (d, index, Claim::Escape)),
            );
        }
        for (index, adapter) in map.adapters.iter().enumerate() {
            claims.extend(adapter.alias_domains.iter().map(|(alias, home)| {
                let claim = Claim::Alias { home: home.clone() };
                (alias, index, claim)
            }));
        }
        for (domain, index, claim) in claims {
            if let Some((first, first_claim)) = map.domains.get(domain) {
                return Err(MapError::DomainOwnedTwice {
                    domain: domain.clone(),
                    first: map.adapters[*first].name.clone(),
                    first_role: first_claim.role(),
                    second: map.adapters[index].name.clone(),
                    second_role: claim.role(),
                });
            }
            map.domains.insert(domain.clone(), (index, claim));
        }
        for (index, adapter) in map.adapters.iter().enumerate() {
            for (alias, home) in &adapter.alias_domains {
                match map.domains.get(home) {
                    Some((owner, Claim::Home)) if *owner == index => {
                        return Err(MapError::AliasTargetOnSameAdapter {
                            alias_domain: alias.clone(),
                            adapter: adapter.name.clone(),
                            home_domain: home.clone(),
                        })
                    }
                    Some((_, Claim::Home)) => {}
                    _ => {
                        return Err(MapError::AliasTargetUnknown {
                            alias_domain: alias.clone(),
                            adapter: adapter.name.clone(),
                            home_domain: home.clone(),
                        })
                    }
                }
            }
        }
        for entry in config.users {
            map.add_user(entry)?;
        }
        Ok(map)
    }

    /// Reads `address` as written on `on_adapter`'s network (a destination or a sender).
    ///
    /// Rules, first match wins: an explicit user entry of that adapter; an alias domain of
    /// that adapter (the user of the home domain it stands for); an escape domain of that
    /// adapter (the local part unescaped per XEP-0106 and split at its last `@` into
    /// `user@home`, where `home` must be a home domain); a home domain of any adapter (the
    /// user as written). Anything else is [`MapError::NoRoute`]. The route's instance is the
    /// address's `;gr=` or resource.
    pub fn resolve(&self, on_adapter: &str, address: &Address) -> Result<Route, MapError> {
        self.resolve_with_rule(on_adapter, address)
            .map(|(route, _)| route)
    }

    /// [`AddressMap::resolve`], also saying which rule matched.
    pub fn resolve_with_rule(
        &self,
        on_adapter: &str,
        address: &Address,
    ) -> Result<(Route, Rule), MapError> {
        let index = self.adapter_index(on_adapter)?;
        let no_route = |reason| MapError::NoRoute {
            address: Box::new(address.clone()),
            adapter: on_adapter.to_owned(),
            reason,
        };
        let (local, domain) = match address.identity() {
            Ok(Some(parts)) => parts,
            Ok(None) => return Err(no_route(NoRouteReason::NoUserPart)),
            Err(error) => return Err(no_route(NoRouteReason::BadUserPart(error))),
        };
        let key = (index, local, domain);
        let (identity, rule) = if let Some(identity) = self.user_identities.get(&key) {
            (identity.clone(), Rule::Explicit)
        } else {
            let (_, local, domain) = key;
            match self.domains.get(&domain) {
                Some((owner, Claim::Alias { home })) if *owner == index => {
                    (Identity::new(&local, home), Rule::Alias { domain })
                }
                Some((owner, Claim::Escape)) if *owner == index => {
                    let Some((user, home)) = local.rsplit_once('@') else {
                        return Err(no_route(NoRouteReason::EscapeWithoutAt { domain, local }));
                    };
                    if user.is_empty() {
                        return Err(no_route(NoRouteReason::EscapeEmptyUser { local }));
                    }
                    let home = home.to_ascii_lowercase();
                    if self.home_owner(&home).is_none() {
                        return Err(no_route(NoRouteReason::EscapeUnknownHome { domain: home }));
                    }
                    (Identity::new(user, &home), Rule::Escape { domain })
                }
                Some((owner, Claim::Home)) => {
                    let rule = if *owner == index {
                        Rule::Home
                    } else {
                        Rule::AsIs
                    };
                    (Identity::new(&local, &domain), rule)
                }
                Some((owner, claim)) => {
                    return Err(no_route(NoRouteReason::OtherAdaptersDomain {
                        domain,
                        adapter: self.adapters[*owner].name.clone(),
                        role: claim.role(),
                    }))
                }
                None if self.any_domain.is_some() => {
                    (Identity::new(&local, &domain), Rule::AnyDomain)
                }
                None => return Err(no_route(NoRouteReason::UnknownDomain { domain })),
            }
        };
        let owner = self
            .owner(&identity)
            .ok_or_else(|| MapError::UnknownIdentityDomain {
                identity: identity.clone(),
            })?
            .to_owned();
        let route = Route {
            identity,
            owner,
            instance: instance_of(address),
        };
        Ok((route, rule))
    }

    /// Writes `identity` (with an instance, where the style has one) for `on_adapter`.
    ///
    /// Rules, first match wins: on the user's own adapter, the home address; an explicit user
    /// entry; an alias domain of that adapter for the user's home domain; the adapter's first
    /// escape domain with `user@home` escaped into the local part; otherwise the user at their
    /// home domain, in the adapter's style (SIP users of `xmpp.localhost` are
    /// `sip:bob@xmpp.localhost`, which the SIP proxy routes to the gateway). An `im:` address
    /// has no instance, so the instance is dropped on adapters of style
    /// [`AddressStyle::Im`].
    pub fn present(
        &self,
        identity: &Identity,
        instance: Option<&str>,
        on_adapter: &str,
    ) -> Result<Address, MapError> {
        self.present_with_rule(identity, instance, on_adapter)
            .map(|(address, _)| address)
    }

    /// [`AddressMap::present`], also saying which rule was used.
    pub fn present_with_rule(
        &self,
        identity: &Identity,
        instance: Option<&str>,
        on_adapter: &str,
    ) -> Result<(Address, Rule), MapError> {
        let index = self.adapter_index(on_adapter)?;
        let owner =
            self.home_owner(identity.domain())
                .ok_or_else(|| MapError::UnknownIdentityDomain {
                    identity: identity.clone(),
                })?;
        let adapter = &self.adapters[index];
        let unpresentable = |reason| MapError::Unpresentable {
            identity: identity.clone(),
            adapter: on_adapter.to_owned(),
            reason,
        };
        let render = |local: &str, domain: &str| {
            adapter
                .style
                .render(local, domain, instance)
                .map_err(unpresentable)
        };
        if owner == index {
            return Ok((render(identity.local(), identity.domain())?, Rule::Home));
        }
        if let Some(address) = self.user_addresses.get(&(index, identity.clone())) {
            let address = with_instance(address, instance).map_err(unpresentable)?;
            return Ok((address, Rule::Explicit));
        }
        if let Some((alias, _)) = adapter
            .alias_domains
            .iter()
            .find(|(_, home)| home == identity.domain())
        {
            let rule = Rule::Alias {
                domain: alias.clone(),
            };
            return Ok((render(identity.local(), alias)?, rule));
        }
        if let Some(escape) = adapter.escape_domains.first() {
            let rule = Rule::Escape {
                domain: escape.clone(),
            };
            return Ok((render(&identity.to_string(), escape)?, rule));
        }
        Ok((render(identity.local(), identity.domain())?, Rule::AsIs))
    }

    /// Whether some adapter claims `domain` (any case), as a home, alias or escape domain.
    pub fn claims_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(&domain.to_ascii_lowercase())
    }

    /// The adapter whose home domain the identity is at.
    pub fn owner(&self, identity: &Identity) -> Option<&str> {
        self.home_owner(identity.domain())
            .map(|index| self.adapters[index].name.as_str())
    }

    /// The adapters, in configuration order, with domains in lowercase.
    pub fn adapters(&self) -> &[AdapterMapConfig] {
        &self.adapters
    }

    /// The explicit user entries, in configuration order.
    pub fn users(&self) -> &[UserEntry] {
        &self.users
    }

    /// Explains an address written in any network's form: how every adapter whose style
    /// matches the address's kind reads it (every adapter when none matches), and for each
    /// routable reading whose it is and how that user is written on every adapter.
    pub fn explain(&self, address: &Address) -> Explanation {
        let matching: Vec<&AdapterMapConfig> = self
            .adapters
            .iter()
            .filter(|adapter| style_matches(adapter.style, address))
            .collect();
        let candidates = if matching.is_empty() {
            self.adapters.iter().collect()
        } else {
            matching
        };
        let readings = candidates
            .into_iter()
            .map(|adapter| Reading {
                adapter: adapter.name.clone(),
                result: self
                    .resolve_with_rule(&adapter.name, address)
                    .map(|(route, rule)| {
                        let presentations = self
                            .adapters
                            .iter()
                            .map(|other| Presentation {
                                adapter: other.name.clone(),
                                result: self.present_with_rule(
                                    &route.identity,
                                    route.instance.as_deref(),
                                    &other.name,
                                ),
                            })
                            .collect();
                        Resolution {
                            route,
                            rule,
                            presentations,
                        }
                    }),
            })
            .collect();
        Explanation {
            address: address.clone(),
            readings,
        }
    }

    fn adapter_index(&self, name: &str) -> Result<usize, MapError> {
        self.adapters
            .iter()
            .position(|adapter| adapter.name == name)
            .ok_or_else(|| MapError::UnknownAdapter {
                adapter: name.to_owned(),
            })
    }

    /// The adapter whose home `domain` is: the one claiming it as home, or for a
    /// domain no adapter claims, the adapter of `any_domain`.
    fn home_owner(&self, domain: &str) -> Option<usize> {
        match self.domains.get(domain) {
            Some((index, Claim::Home)) => Some(*index),
            Some(_) => None,
            None => self.any_domain,
        }
    }

    fn add_user(&mut self, entry: UserEntry) -> Result<(), MapError> {
        let index = self.adapter_index(&entry.adapter)?;
        let Some(owner) = self.home_owner(entry.identity.domain()) else {
            return Err(MapError::UserNotAtHomeDomain {
                identity: entry.identity,
            });
        };
        if owner == index {
            return Err(MapError::UserOnHomeAdapter {
                identity: entry.identity,
                adapter: entry.adapter,
            });
        }
        let invalid = |reason: String| MapError::InvalidUserAddress {
            identity: entry.identity.clone(),
            adapter: entry.adapter.clone(),
            address: Box::new(entry.address.clone()),
            reason,
        };
        let style = self.adapters[index].style;
        if !style_matches(style, &entry.address) {
            return Err(invalid(format!(
                "is not written in the adapter's style ({})",
                style_name(style)
            )));
        }
        if instance_of(&entry.address).is_some() {
            return Err(invalid(
                "names an instance (;gr= or resource); write the bare address".to_owned(),
            ));
        }
        let (local, domain) = match entry.address.identity() {
            Ok(Some(parts)) => parts,
            Ok(None) => return Err(invalid("has no user part".to_owned())),
            Err(error) => return Err(invalid(format!("cannot be read: {error}"))),
        };
        match self.domains.get(&domain) {
            Some((owner, claim @ (Claim::Home | Claim::Alias { .. }))) => {
                return Err(invalid(format!(
                    "is at {domain}, the {} domain of adapter {}, where it could be another \
                     user's address",
                    claim.role(),
                    self.adapters[*owner].name
                )));
            }
            Some((owner, Claim::Escape)) if *owner != index => {
                return Err(invalid(format!(
                    "is at {domain}, an escape domain of adapter {}",
                    self.adapters[*owner].name
                )));
            }
            Some((_, Claim::Escape)) if local.contains('@') => {
                return Err(invalid(format!(
                    "has an @ in its user part at escape domain {domain}, where it could be an \
                     escaped user@home"
                )));
            }
            _ => {}
        }
        if self
            .user_addresses
            .contains_key(&(index, entry.identity.clone()))
        {
            return Err(MapError::DuplicateUserEntry {
                identity: entry.identity,
                adapter: entry.adapter,
            });
        }
        let key = (index, local, domain);
        if let Some(first) = self.user_identities.get(&key) {
            return Err(MapError::DuplicateUserAddress {
                address: Box::new(entry.address),
                adapter: entry.adapter,
                first: Box::new(first.clone()),
                second: entry.identity,
            });
        }
        self.user_identities.insert(key, entry.identity.clone());
        self.user_addresses
            .insert((index, entry.identity.clone()), entry.address.clone());
        self.users.push(entry);
        Ok(())
    }
}

/// Whether `address` is of the kind an adapter of `style` writes.
fn style_matches(style: AddressStyle, address: &Address) -> bool {
    matches!(
        (style, address),
        (AddressStyle::Sip, Address::Sip(_))
            | (AddressStyle::Xmpp, Address::Xmpp(_))
            | (AddressStyle::Im, Address::Im(_))
    )
}

fn style_name(style: AddressStyle) -> &'static str {
    match style {
        AddressStyle::Sip => "sip: URIs",
        AddressStyle::Xmpp => "XMPP addresses",
        AddressStyle::Im => "im: URIs",
    }
}

fn normalize_domain(domain: &str, adapter: &str) -> Result<String, MapError> {
    Host::parse(domain)
        .map(|host| host.as_str().to_owned())
        .map_err(|reason| MapError::InvalidDomain {
            domain: domain.to_owned(),
            adapter: adapter.to_owned(),
            reason,
        })
}

/// The address with `instance` as its `;gr=` or resource (`im:` URIs have none).
fn with_instance(address: &Address, instance: Option<&str>) -> Result<Address, AddressError> {
    let Some(instance) = instance else {
        return Ok(address.clone());
    };
    Ok(match address {
        Address::Sip(uri) => Address::Sip(uri.clone().with_gr(instance)),
        Address::Xmpp(jid) => Address::Xmpp(jid.with_resource(instance)?),
        Address::Im(uri) => Address::Im(uri.clone()),
    })
}

/// The address map as the core uses it: implemented by [`AddressMap`], and by simpler
/// maps in tests.
pub trait Router: Send + Sync {
    /// The owner and identity of `address` as written on `on_adapter`'s network.
    fn resolve(&self, on_adapter: &str, address: &Address) -> Result<Route, MapError>;

    /// How `identity` is written on `on_adapter`'s network.
    fn present(
        &self,
        identity: &Identity,
        instance: Option<&str>,
        on_adapter: &str,
    ) -> Result<Address, MapError>;

    /// The adapter whose network `identity` lives on, if any adapter owns its domain.
    fn owner(&self, identity: &Identity) -> Option<String>;

    /// Whether some adapter claims `domain` (lowercase), as a home, alias or escape
    /// domain.
    fn claims_domain(&self, _domain: &str) -> bool {
        false
    }
}

impl Router for AddressMap {
    fn resolve(&self, on_adapter: &str, address: &Address) -> Result<Route, MapError> {
        AddressMap::resolve(self, on_adapter, address)
    }

    fn present(
        &self,
        identity: &Identity,
        instance: Option<&str>,
        on_adapter: &str,
    ) -> Result<Address, MapError> {
        AddressMap::present(self, identity, instance, on_adapter)
    }

    fn owner(&self, identity: &Identity) -> Option<String> {
        AddressMap::owner(self, identity).map(str::to_owned)
    }

    fn claims_domain(&self, domain: &str) -> bool {
        AddressMap::claims_domain(self, domain)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn addr(text: &str) -> Address {
        Address::parse(text).unwrap()
    }

    fn id(text: &str) -> Identity {
        let (local, domain) = text.rsplit_once('@').unwrap();
        Identity::new(local, domain)
    }

    fn adapter(
        name: &str,
        style: AddressStyle,
        home: &[&str],
        alias: &[(&str, &str)],
        escape: &[&str],
    ) -> AdapterMapConfig {
        AdapterMapConfig {
            name: name.to_owned(),
            style,
            home_domains: home.iter().map(|d| (*d).to_owned()).collect(),
            alias_domains: alias
                .iter()
                .map(|(a, h)| ((*a).to_owned(), (*h).to_owned()))
                .collect(),
            escape_domains: escape.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    fn user(identity: &str, adapter: &str, address: &str) -> UserEntry {
        UserEntry {
            identity: id(identity),
            adapter: adapter.to_owned(),
            address: addr(address),
        }
    }

    /// Like the sample `gateway.toml`: SIP, XMPP with an alias and an escape component domain,
    /// a webhook app; plus an alias on SIP for XMPP users and explicit users.
    fn sample_config() -> MapConfig {
        MapConfig {
            adapters: vec![
                adapter(
                    "sip",
                    AddressStyle::Sip,
                    &["sip.localhost"],
                    &[("xmpp.gw.sip.localhost", "xmpp.localhost")],
                    &[],
                ),
                adapter("webhook", AddressStyle::Im, &["app.localhost"], &[], &[]),
                adapter(
                    "xmpp",
                    AddressStyle::Xmpp,
                    &["xmpp.localhost"],
                    &[("sip.gw.xmpp.localhost", "sip.localhost")],
                    &["gw.xmpp.localhost"],
                ),
            ],
            users: vec![
                user(
                    "alice@xmpp.localhost",
                    "sip",
                    "sip:+15551234567@carrier.example",
                ),
                user("bot@app.localhost", "xmpp", "bot@gw.xmpp.localhost"),
            ],
            any_domain: None,
        }
    }

    fn sample() -> AddressMap {
        AddressMap::new(sample_config()).unwrap()
    }

    fn route(identity: &str, owner: &str, instance: Option<&str>) -> Route {
        Route {
            identity: id(identity),
            owner: owner.to_owned(),
            instance: instance.map(str::to_owned),
        }
    }

    fn no_route(map: &AddressMap, on: &str, address: &str) -> NoRouteReason {
        match map.resolve(on, &addr(address)) {
            Err(MapError::NoRoute { reason, .. }) => reason,
            other => panic!("expected NoRoute for {address} on {on}, got {other:?}"),
        }
    }

    fn build_error(config: MapConfig) -> MapError {
        AddressMap::new(config).unwrap_err()
    }

    // ----- resolve

    /// `any_domain`: a domain no adapter claims is the home of that adapter, read on
    /// every adapter (escaped at XMPP's escape domain), written back the same way;
    /// claimed domains keep their owners, and the adapter must exist.
    #[test]
    fn any_domain_is_the_home_of_every_unclaimed_domain() {
        let map = AddressMap::new(MapConfig {
            any_domain: Some("sip".into()),
            ..sample_config()
        })
        .unwrap();
        let cases: &[(&str, &str, Rule)] = &[
            ("sip", "sip:bob@far.example", Rule::AnyDomain),
            ("webhook", "im:bob@far.example", Rule::AnyDomain),
            (
                "xmpp",
                "bob\\40far.example@gw.xmpp.localhost",
                Rule::Escape {
                    domain: "gw.xmpp.localhost".into(),
                },
            ),
        ];
        for (on, written, rule) in cases {
            let (route, got) = map.resolve_with_rule(on, &addr(written)).unwrap();
            assert_eq!(
                route,
                self::route("bob@far.example", "sip", None),
                "{written}"
            );
            assert_eq!(got, *rule, "{written}");
        }
        let bob = id("bob@far.example");
        assert_eq!(
            map.present(&bob, None, "sip").unwrap(),
            addr("sip:bob@far.example")
        );
        assert_eq!(
            map.present(&bob, None, "xmpp").unwrap(),
            addr("bob\\40far.example@gw.xmpp.localhost")
        );
        assert_eq!(map.owner(&bob), Some("sip"));
        assert!(!map.claims_domain("far.example"));
        let alice = map
            .resolve("sip", &addr("sip:alice@xmpp.localhost"))
            .unwrap();
        assert_eq!(alice.owner, "xmpp");
        // Without it the domain is no route.
        assert!(sample()
            .resolve("sip", &addr("sip:bob@far.example"))
            .is_err());
        assert!(matches!(
            build_error(MapConfig {
                any_domain: Some("nope".into()),
                ..sample_config()
            }),
            MapError::UnknownAdapter { .. }
        ));
    }

    #[test]
    fn resolve_home_domain_of_own_adapter() {
        let map = sample();
        let (r, rule) = map
            .resolve_with_rule("sip", &addr("sip:alice@sip.localhost;gr=p1"))
            .unwrap();
        assert_eq!(r, route("alice@sip.localhost", "sip", Some("p1")));
        assert_eq!(rule, Rule::Home);
    }

    #[test]
    fn resolve_home_domain_of_another_adapter_as_is() {
        let map = sample();
        let (r, rule) = map
            .resolve_with_rule("sip", &addr("sip:bob@xmpp.localhost"))
            .unwrap();
        assert_eq!(r, route("bob@xmpp.localhost", "xmpp", None));
        assert_eq!(rule, Rule::AsIs);
    }

    #[test]
    fn resolve_alias_domain() {
        let map = sample();
        let (r, rule) = map
            .resolve_with_rule("xmpp", &addr("alice@sip.gw.xmpp.localhost/phone"))
            .unwrap();
        assert_eq!(r, route("alice@sip.localhost", "sip", Some("phone")));
        assert_eq!(
            rule,
            Rule::Alias {
                domain: "sip.gw.xmpp.localhost".to_owned()
            }
        );
    }

    #[test]
    fn resolve_escape_domain() {
        let map = sample();
        let (r, rule) = map
            .resolve_with_rule("xmpp", &addr("alice\\40sip.localhost@gw.xmpp.localhost"))
            .unwrap();
        assert_eq!(r, route("alice@sip.localhost", "sip", None));
        assert_eq!(
            rule,
            Rule::Escape {
                domain: "gw.xmpp.localhost".to_owned()
            }
        );
    }

    #[test]
    fn resolve_escape_domain_splits_at_the_last_at() {
        let map = sample();
        let r = map
            .resolve("xmpp", &addr("a\\40b\\40app.localhost@gw.xmpp.localhost"))
            .unwrap();
        assert_eq!(r, route("a@b@app.localhost", "webhook", None));
    }

    #[test]
    fn resolve_escape_domain_without_at_is_no_route() {
        let map = sample();
        assert!(matches!(
            no_route(&map, "xmpp", "carol@gw.xmpp.localhost"),
            NoRouteReason::EscapeWithoutAt { .. }
        ));
        assert!(matches!(
            no_route(&map, "xmpp", "\\40sip.localhost@gw.xmpp.localhost"),
            NoRouteReason::EscapeEmptyUser { .. }
        ));
        assert_eq!(
            no_route(&map, "xmpp", "carol\\40elsewhere.example@gw.xmpp.localhost"),
            NoRouteReason::EscapeUnknownHome {
                domain: "elsewhere.example".to_owned()
            }
        );
    }

    #[test]
    fn resolve_unknown_domain_is_no_route() {
        let map = sample();
        assert_eq!(
            no_route(&map, "sip", "sip:carol@nowhere.example"),
            NoRouteReason::UnknownDomain {
                domain: "nowhere.example".to_owned()
            }
        );
        assert_eq!(
            no_route(&map, "xmpp", "sip.localhost"),
            NoRouteReason::NoUserPart
        );
    }

    #[test]
    fn resolve_other_adapters_alias_or_escape_domain_is_no_route() {
        let map = sample();
        assert_eq!(
            no_route(&map, "sip", "sip:alice@sip.gw.xmpp.localhost"),
            NoRouteReason::OtherAdaptersDomain {
                domain: "sip.gw.xmpp.localhost".to_owned(),
                adapter: "xmpp".to_owned(),
                role: DomainRole::Alias,
            }
        );
        assert!(matches!(
            no_route(&map, "webhook", "im:a%40sip.localhost@gw.xmpp.localhost"),
            NoRouteReason::OtherAdaptersDomain {
                role: DomainRole::Escape,
                ..
            }
        ));
    }

    #[test]
    fn resolve_unknown_adapter() {
        assert_eq!(
            sample().resolve("irc", &addr("sip:a@sip.localhost")),
            Err(MapError::UnknownAdapter {
                adapter: "irc".to_owned()
            })
        );
    }

    #[test]
    fn explicit_user_wins_over_pattern() {
        let map = sample();
        // bot@gw.xmpp.localhost would be an escape form without @; the entry makes it bot.
        let (r, rule) = map
            .resolve_with_rule("xmpp", &addr("bot@gw.xmpp.localhost/x"))
            .unwrap();
        assert_eq!(r, route("bot@app.localhost", "webhook", Some("x")));
        assert_eq!(rule, Rule::Explicit);
        // present prefers the entry over the alias domain xmpp.gw.sip.localhost.
        let (a, rule) = map
            .present_with_rule(&id("alice@xmpp.localhost"), None, "sip")
            .unwrap();
        assert_eq!(a.to_string(), "sip:+15551234567@carrier.example");
        assert_eq!(rule, Rule::Explicit);
        let r = map
            .resolve("sip", &addr("sip:+15551234567@carrier.example;user=phone"))
            .unwrap();
        assert_eq!(r, route("alice@xmpp.localhost", "xmpp", None));
        // Other XMPP users still use the alias.
        let a = map.present(&id("bob@xmpp.localhost"), None, "sip").unwrap();
        assert_eq!(a.to_string(), "sip:bob@xmpp.gw.sip.localhost");
    }

    // ----- present

    #[test]
    fn present_on_home_adapter_is_the_home_address() {
        let map = sample();
        let (a, rule) = map
            .present_with_rule(&id("o'malley@xmpp.localhost"), Some("pc"), "xmpp")
            .unwrap();
        assert_eq!(a.to_string(), "o\\27malley@xmpp.localhost/pc");
        assert_eq!(rule, Rule::Home);
    }

    #[test]
    fn present_prefers_alias_over_escape() {
        let map = sample();
        let (a, rule) = map
            .present_with_rule(&id("alice@sip.localhost"), None, "xmpp")
            .unwrap();
        assert_eq!(a.to_string(), "alice@sip.gw.xmpp.localhost");
        assert!(matches!(rule, Rule::Alias { .. }));
    }

    #[test]
    fn present_escape_domain_for_users_without_alias() {
        let map = sample();
        let (a, rule) = map
            .present_with_rule(&id("carol@app.localhost"), None, "xmpp")
            .unwrap();
        assert_eq!(a.to_string(), "carol\\40app.localhost@gw.xmpp.localhost");
        assert!(matches!(rule, Rule::Escape { .. }));
    }

    #[test]
    fn present_as_is_without_alias_or_escape_domain() {
        let map = sample();
        let (a, rule) = map
            .present_with_rule(&id("bot@app.localhost"), Some("d1"), "sip")
            .unwrap();
        assert_eq!(a.to_string(), "sip:bot@app.localhost;gr=d1");
        assert_eq!(rule, Rule::AsIs);
        let a = map
            .present(&id("alice@sip.localhost"), Some("d1"), "webhook")
            .unwrap();
        assert_eq!(a.to_string(), "im:alice@sip.localhost");
    }

    #[test]
    fn present_explicit_entry_carries_the_instance() {
        let map = sample();
        let a = map
            .present(&id("bot@app.localhost"), Some("r1"), "xmpp")
            .unwrap();
        assert_eq!(a.to_string(), "bot@gw.xmpp.localhost/r1");
        let a = map
            .present(&id("alice@xmpp.localhost"), Some("r1"), "sip")
            .unwrap();
        assert_eq!(a.to_string(), "sip:+15551234567@carrier.example;gr=r1");
    }

    #[test]
    fn present_unknown_identity_domain() {
        assert!(matches!(
            sample().present(&id("x@nowhere.example"), None, "sip"),
            Err(MapError::UnknownIdentityDomain { .. })
        ));
    }

    #[test]
    fn present_too_long_for_xmpp_is_unpresentable() {
        let long = "a".repeat(1100);
        assert!(matches!(
            sample().present(&Identity::new(&long, "sip.localhost"), None, "xmpp"),
            Err(MapError::Unpresentable { .. })
        ));
    }

    #[test]
    fn owner_and_adapters() {
        let map = sample();
        assert_eq!(map.owner(&id("a@XMPP.localhost")), Some("xmpp"));
        assert_eq!(map.owner(&id("a@gw.xmpp.localhost")), None);
        let names: Vec<_> = map.adapters().iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["sip", "webhook", "xmpp"]);
        assert_eq!(map.users().len(), 2);
    }

    // ----- explain

    #[test]
    fn explain_tries_adapters_of_the_address_style() {
        let map = sample();
        let explanation = map.explain(&addr("alice@sip.gw.xmpp.localhost"));
        assert_eq!(explanation.readings.len(), 1);
        let (adapter, resolution) = explanation.resolution().unwrap();
        assert_eq!(adapter, "xmpp");
        assert_eq!(resolution.route.owner, "sip");
        let written: Vec<String> = resolution
            .presentations
            .iter()
            .map(|p| p.result.as_ref().unwrap().0.to_string())
            .collect();
        assert_eq!(
            written,
            [
                "sip:alice@sip.localhost",
                "im:alice@sip.localhost",
                "alice@sip.gw.xmpp.localhost"
            ]
        );
        let text = explanation.to_string();
        assert!(text.contains("identity: alice@sip.localhost"), "{text}");
        assert!(
            text.contains("(alias domain sip.gw.xmpp.localhost)"),
            "{text}"
        );
    }

    #[test]
    fn explain_unroutable_says_why() {
        let explanation = sample().explain(&addr("sip:carol@nowhere.example"));
        assert!(!explanation.is_routable());
        let text = explanation.to_string();
        assert!(
            text.contains("not routable: no adapter owns domain nowhere.example"),
            "{text}"
        );
    }

    #[test]
    fn explain_without_adapter_of_the_style_tries_all() {
        let mut config = sample_config();
        config.adapters.retain(|a| a.name != "webhook");
        config.users.retain(|u| u.adapter != "xmpp");
        config.adapters[0].alias_domains.clear();
        let map = AddressMap::new(config).unwrap();
        let explanation = map.explain(&addr("im:alice@sip.localhost"));
        assert_eq!(explanation.readings.len(), 2);
        assert!(explanation.is_routable());
    }

    // ----- validation

    #[test]
    fn reject_duplicate_adapter() {
        let mut config = sample_config();
        config.adapters.push(config.adapters[0].clone());
        assert!(matches!(
            build_error(config),
            MapError::DuplicateAdapter { .. }
        ));
    }

    #[test]
    fn reject_invalid_domain() {
        let mut config = sample_config();
        config.adapters[0]
            .home_domains
            .push("bad domain".to_owned());
        assert!(matches!(
            build_error(config),
            MapError::InvalidDomain { .. }
        ));
    }

    #[test]
    fn reject_domain_owned_twice() {
        let mut config = sample_config();
        config.adapters[1]
            .home_domains
            .push("SIP.localhost".to_owned());
        assert_eq!(
            build_error(config),
            MapError::DomainOwnedTwice {
                domain: "sip.localhost".to_owned(),
                first: "sip".to_owned(),
                first_role: DomainRole::Home,
                second: "webhook".to_owned(),
                second_role: DomainRole::Home,
            }
        );
    }

    #[test]
    fn reject_alias_domain_that_is_an_escape_domain() {
        let mut config = sample_config();
        config.adapters[0].alias_domains[0].0 = "gw.xmpp.localhost".to_owned();
        assert!(matches!(
            build_error(config),
            MapError::DomainOwnedTwice {
                first_role: DomainRole::Escape,
                second_role: DomainRole::Alias,
                ..
            }
        ));
    }

    #[test]
    fn reject_alias_target_unknown() {
        let mut config = sample_config();
        config.adapters[2].alias_domains[0].1 = "gw.xmpp.localhost".to_owned();
        assert!(matches!(
            build_error(config),
            MapError::AliasTargetUnknown { .. }
        ));
    }

    #[test]
    fn reject_alias_target_on_same_adapter() {
        let mut config = sample_config();
        config.adapters[2].alias_domains[0].1 = "xmpp.localhost".to_owned();
        assert!(matches!(
            build_error(config),
            MapError::AliasTargetOnSameAdapter { .. }
        ));
    }

    #[test]
    fn reject_user_on_unknown_adapter() {
        let mut config = sample_config();
        config
            .users
            .push(user("a@sip.localhost", "irc", "im:a@x.example"));
        assert!(matches!(
            build_error(config),
            MapError::UnknownAdapter { .. }
        ));
    }

    #[test]
    fn reject_user_not_at_home_domain() {
        let mut config = sample_config();
        config
            .users
            .push(user("a@gw.xmpp.localhost", "sip", "sip:a@carrier.example"));
        assert!(matches!(
            build_error(config),
            MapError::UserNotAtHomeDomain { .. }
        ));
    }

    #[test]
    fn reject_user_on_home_adapter() {
        let mut config = sample_config();
        config
            .users
            .push(user("a@sip.localhost", "sip", "sip:a@carrier.example"));
        assert!(matches!(
            build_error(config),
            MapError::UserOnHomeAdapter { .. }
        ));
    }

    #[test]
    fn reject_user_address_in_wrong_style_or_place() {
        for (address, adapter) in [
            ("im:a@carrier.example", "sip"),
            ("sip:a@carrier.example;gr=x", "sip"),
            ("a@carrier.example/res", "xmpp"),
            ("sip:carrier.example", "sip"),
            ("sip:a@sip.localhost", "sip"),
            ("sip:a@xmpp.localhost", "sip"),
            ("sip:a@xmpp.gw.sip.localhost", "sip"),
            ("sip:a@gw.xmpp.localhost", "sip"),
            ("a@sip.gw.xmpp.localhost", "xmpp"),
            ("a\\40b@gw.xmpp.localhost", "xmpp"),
        ] {
            let mut config = sample_config();
            config.users.push(user("a@app.localhost", adapter, address));
            assert!(
                matches!(build_error(config), MapError::InvalidUserAddress { .. }),
                "{address} on {adapter}"
            );
        }
    }

    #[test]
    fn reject_duplicate_user_entry() {
        let mut config = sample_config();
        config.users.push(user(
            "alice@xmpp.localhost",
            "sip",
            "sip:alice@carrier.example",
        ));
        assert!(matches!(
            build_error(config),
            MapError::DuplicateUserEntry { .. }
        ));
    }

    #[test]
    fn reject_duplicate_user_address() {
        let mut config = sample_config();
        config.users.push(user(
            "bob@xmpp.localhost",
            "sip",
            "sip:+15551234567@CARRIER.example",
        ));
        assert!(matches!(
            build_error(config),
            MapError::DuplicateUserAddress { .. }
        ));
    }

    // ----- reversibility

    fn localpart() -> impl Strategy<Value = String> {
        // Arbitrary Unicode without controls; XEP-0106 forbids a leading or trailing space.
        proptest::string::string_regex("[^\\p{Cc}]{1,30}")
            .unwrap()
            .prop_filter("edge space", |s| !s.starts_with(' ') && !s.ends_with(' '))
    }

    fn identity() -> impl Strategy<Value = Identity> {
        let homes =
            proptest::sample::select(vec!["sip.localhost", "xmpp.localhost", "app.localhost"]);
        let explicit =
            proptest::sample::select(vec![id("alice@xmpp.localhost"), id("bot@app.localhost")]);
        prop_oneof![
            4 => (localpart(), homes).prop_map(|(l, d)| Identity::new(&l, d)),
            1 => explicit,
        ]
    }

    proptest! {
        #[test]
        fn prop_present_then_resolve_is_identity(
            identity in identity(),
            instance in proptest::option::of("[A-Za-z0-9._-]{1,12}"),
            adapter in proptest::sample::select(vec!["sip", "webhook", "xmpp"]),
        ) {
            let map = sample();
            let address = map.present(&identity, instance.as_deref(), adapter).unwrap();
            let expected = Route {
                identity: identity.clone(),
                owner: map.owner(&identity).unwrap().to_owned(),
                instance: if adapter == "webhook" { None } else { instance },
            };
            prop_assert_eq!(map.resolve(adapter, &address).unwrap(), expected.clone());
            // The same through the wire: the written address parses back to the same route.
            let reparsed = Address::parse(&address.to_string()).unwrap();
            prop_assert_eq!(map.resolve(adapter, &reparsed).unwrap(), expected);
        }
    }
}
