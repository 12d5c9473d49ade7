//! The routing tables of `gateway.toml`: `[[aliases]]` and `[[users]]`, their conversion to the
//! broker's [`MapConfig`], and the checks that need the rest of the file.

use serde::{Deserialize, Deserializer};

use cpim::Address;
use cpim_broker::map::{AdapterMapConfig, AddressMap, DomainRole, MapConfig, MapError, UserEntry};
use cpim_broker::{AddressStyle, Identity};

use crate::config::adapters::AdapterKind;
use crate::config::source::{Finding, KeyPath};
use crate::config::Config;
use cpim_broker::config::de::parse_str;
use cpim_broker::config::Domain;

/// One `[[aliases]]` table: the users of a home domain appear on another adapter under an
/// alias domain, with their local part unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasRule {
    /// The home domain whose users are aliased (owned by an adapter as SIP `domains`, XMPP
    /// `user_domains` or a webhook app's `domains`).
    pub domain: Domain,
    /// The adapter on whose network the users appear.
    pub on: String,
    /// The alias domain; for an XMPP adapter one of its component domains.
    #[serde(rename = "as")]
    pub alias: Domain,
}

/// One `[[users]]` table: one user's address on one adapter, chosen by hand.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRule {
    /// The user, `user@home-domain`.
    #[serde(deserialize_with = "deserialize_identity")]
    pub identity: Identity,
    /// The adapter on whose network the user has this address.
    pub on: String,
    /// The address, in that adapter's style.
    #[serde(rename = "as", deserialize_with = "deserialize_address")]
    pub address: Address,
}

/// How adapters of a kind write addresses.
pub fn style_of(kind: AdapterKind) -> AddressStyle {
    match kind {
        AdapterKind::Sip => AddressStyle::Sip,
        AdapterKind::Xmpp => AddressStyle::Xmpp,
        AdapterKind::Webhook => AddressStyle::Im,
    }
}

impl Config {
    /// The rules of the address map: every adapter's home domains (SIP `domains`, XMPP
    /// `user_domains`, webhook apps' `domains`), the `[[aliases]]` as alias domains of their
    /// `on` adapter, each XMPP component domain that is no alias as an escape domain, and the
    /// `[[users]]` entries.
    pub fn map_config(&self) -> MapConfig {
        let adapters = self
            .adapters
            .iter()
            .map(|(name, adapter)| {
                let alias_domains: Vec<(String, String)> = self
                    .aliases
                    .iter()
                    .filter(|alias| alias.on == *name)
                    .map(|alias| (alias.alias.to_string(), alias.domain.to_string()))
                    .collect();
                let settings = adapter.settings();
                let home_domains = settings
                    .home_domains()
                    .into_iter()
                    .map(Domain::to_string)
                    .collect();
                let escape_domains = settings
                    .component_domains()
                    .into_iter()
                    .map(Domain::to_string)
                    .filter(|domain| !alias_domains.iter().any(|(alias, _)| alias == domain))
                    .collect();
                AdapterMapConfig {
                    name: name.clone(),
                    style: settings.style(),
                    home_domains,
                    alias_domains,
                    escape_domains,
                }
            })
            .collect();
        let users = self
            .users
            .iter()
            .map(|user| UserEntry {
                identity: user.identity.clone(),
                adapter: user.on.clone(),
                address: user.address.clone(),
            })
            .collect();
        let any_domain = self
            .adapters
            .iter()
            .find(|(_, adapter)| adapter.settings().reaches_any_domain())
            .map(|(name, _)| name.clone());
        MapConfig {
            adapters,
            users,
            any_domain,
        }
    }

    /// The address map of this configuration (validation has built it once already).
    pub fn address_map(&self) -> Result<AddressMap, MapError> {
        AddressMap::new(self.map_config())
    }
}

/// The checks of `[[aliases]]` and `[[users]]` that need the adapters: `on` names an adapter, an
/// XMPP alias domain is a component domain; then, when the file has no other problem, the
/// address map is built and its first error reported at the entry it comes from.
pub(crate) fn validate(config: &Config, earlier_findings: bool) -> Vec<Finding> {
    let mut findings = Vec::new();
    let root = KeyPath::root();
    let adapter_names = config
        .adapters
        .keys()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let unknown_adapter = |path: KeyPath, on: &str| Finding {
        path,
        message: format!("no adapter is named `{on}`"),
        hint: format!("set `on` to one of the configured adapters: {adapter_names}"),
    };
    for (index, alias) in config.aliases.iter().enumerate() {
        let path = root.key("aliases").index(index);
        match config.adapters.get(&alias.on) {
            None => findings.push(unknown_adapter(path.key("on"), &alias.on)),
            Some(adapter)
                if !adapter.settings().component_domains().is_empty()
                    && !adapter
                        .settings()
                        .component_domains()
                        .contains(&&alias.alias) =>
            {
                findings.push(Finding {
                    path: path.key("as"),
                    message: format!(
                        "alias domain `{}` is not a component domain of {} adapter `{}`",
                        alias.alias,
                        adapter.kind(),
                        alias.on
                    ),
                    hint: "on an xmpp adapter the alias domain must be one of its \
                           `[[adapters.<name>.components]]` domains, so that the XMPP server \
                           routes it to the gateway; add a component for it"
                        .to_owned(),
                });
            }
            Some(_) => {}
        }
    }
    let mut any_domain = config
        .adapters
        .iter()
        .filter(|(_, adapter)| adapter.settings().reaches_any_domain());
    if let (Some((first, _)), Some((second, _))) = (any_domain.next(), any_domain.next()) {
        findings.push(Finding {
            path: root.key("adapters").key(second).key("remote_domains"),
            message: format!(
                "adapters `{first}` and `{second}` both reach every other domain (`\"*\"` in `remote_domains`)"
            ),
            hint: "only one adapter can own the domains no adapter lists; keep `\"*\"` on one of them"
                .to_owned(),
        });
    }
    for (index, user) in config.users.iter().enumerate() {
        if !config.adapters.contains_key(&user.on) {
            let path = root.key("users").index(index).key("on");
            findings.push(unknown_adapter(path, &user.on));
        }
    }
    if earlier_findings || !findings.is_empty() {
        return findings;
    }
    if let Err(error) = config.address_map() {
        let (path, hint) = locate(config, &error);
        findings.push(Finding {
            path,
            message: error.to_string(),
            hint: hint.to_owned(),
        });
    }
    findings
}

/// Where in the file a map error comes from, and how to fix it.
fn locate(config: &Config, error: &MapError) -> (KeyPath, &'static str) {
    let alias_at = |on: &str, alias: &str, key: &str| {
        config
            .aliases
            .iter()
            .rposition(|rule| rule.on == on && rule.alias.as_str() == alias)
            .map(|index| KeyPath::root().key("aliases").index(index).key(key))
    };
    let user_at = |found: &dyn Fn(&UserRule) -> bool, key: Option<&str>| {
        config.users.iter().rposition(found).map(|index| {
            let path = KeyPath::root().key("users").index(index);
            match key {
                Some(key) => path.key(key),
                None => path,
            }
        })
    };
    let (path, hint) = match error {
        MapError::DomainOwnedTwice {
            domain,
            second,
            second_role: DomainRole::Alias,
            ..
        } => (
            alias_at(second, domain, "as"),
            "an alias domain must be used for nothing else: not an adapter's domain, not \
             another alias; for xmpp it is a component domain named by one alias only",
        ),
        MapError::AliasTargetUnknown {
            alias_domain,
            adapter,
            ..
        } => (
            alias_at(adapter, alias_domain, "domain"),
            "`domain` must be a home domain: a sip adapter's `domains`, an xmpp adapter's \
             `user_domains` or a webhook app's `domains` (not a component domain)",
        ),
        MapError::AliasTargetOnSameAdapter {
            alias_domain,
            adapter,
            ..
        } => (
            alias_at(adapter, alias_domain, "on"),
            "an alias shows the users of one adapter on another; set `on` to an adapter other \
             than the owner of `domain`",
        ),
        MapError::UnknownAdapter { adapter } => (
            user_at(&|user| user.on == *adapter, Some("on")),
            "set `on` to one of the configured adapters",
        ),
        MapError::UserNotAtHomeDomain { identity } => (
            user_at(&|user| user.identity == *identity, Some("identity")),
            "write the user at their home domain: a sip adapter's `domains`, an xmpp adapter's \
             `user_domains` or a webhook app's `domains`",
        ),
        MapError::UserOnHomeAdapter { identity, adapter } => (
            user_at(
                &|user| user.identity == *identity && user.on == *adapter,
                Some("on"),
            ),
            "on their own adapter users keep their home address; set `on` to another adapter",
        ),
        MapError::InvalidUserAddress {
            identity, adapter, ..
        } => (
            user_at(
                &|user| user.identity == *identity && user.on == *adapter,
                Some("as"),
            ),
            "write a bare address in the adapter's style (sip: URI, XMPP address or im: URI) at \
             a domain that no pattern uses: not a home or alias domain; at an xmpp escape \
             domain only without `\\40`",
        ),
        MapError::DuplicateUserEntry { identity, adapter } => (
            user_at(
                &|user| user.identity == *identity && user.on == *adapter,
                None,
            ),
            "a user has at most one address per adapter; remove one of the entries",
        ),
        MapError::DuplicateUserAddress {
            adapter, second, ..
        } => (
            user_at(
                &|user| user.identity == *second && user.on == *adapter,
                Some("as"),
            ),
            "an address belongs to one user; give each user their own",
        ),
        _ => (None, "see docs/configuration.md, section Routing"),
    };
    (path.unwrap_or_else(KeyPath::root), hint)
}

fn deserialize_identity<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Identity, D::Error> {
    parse_str(deserializer, "user@domain", parse_identity)
}

fn deserialize_address<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Address, D::Error> {
    parse_str(deserializer, "an address", |text| {
        Address::parse(text).map_err(|error| {
            format!(
                "`{text}` is not an address: {error}; write e.g. `sip:alice@sip.example.com`, \
                 `alice@xmpp.example.com` or `im:alice@app.example.com`"
            )
        })
    })
}

/// Parses `user@domain`: the user as people write it (unescaped), split at the last `@`.
fn parse_identity(text: &str) -> Result<Identity, String> {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return Err(format!(
            "`{text}` is not user@domain; write e.g. `alice@xmpp.example.com`"
        ));
    };
    if local.is_empty() {
        return Err(format!("`{text}` has no user before the @"));
    }
    if let Some(bad) = local.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the user of `{text}` contains the control character {bad:?}"
        ));
    }
    let domain = Domain::parse(domain).map_err(|error| error.to_string())?;
    Ok(Identity::new(local, domain.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_split_at_the_last_at() {
        let identity = parse_identity("a@b@xmpp.localhost").expect("valid");
        assert_eq!(identity, Identity::new("a@b", "xmpp.localhost"));
        for bad in ["alice", "@xmpp.localhost", "alice@", "alice@Bad_Domain"] {
            assert!(parse_identity(bad).is_err(), "{bad}");
        }
    }
}
