//! `gateway.toml`: the configuration file, its types, loading and validation.
//!
//! Loading is strict. The file is parsed with every table's unknown keys rejected, `${VAR}`
//! references in strings are expanded from the environment (see [`expand`]), and then the
//! semantic rules that types cannot express are checked (see `docs/configuration.md`). Every
//! problem is reported as a [`Problem`] with the file's line and column, the key path and a hint
//! on how to fix it; a [`Config`] only exists if there were none.
//!
//! Secrets ([`Secret`]) never appear in `Debug` or `Display` output.

mod adapters;
mod routing;
mod source;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::{Deserialize, Deserializer};
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

pub use adapters::{AdapterConfig, AdapterKind};
use cpim_broker::config::de;
pub use cpim_broker::config::{
    expand, ConfigString, Domain, DomainError, ExpandError, HostPort, Secret,
};
use cpim_broker::config::{process_env, with_lookup, Lookup};
pub use cpim_sip::settings::{
    PresenceAllow, PresenceAuthorization, SipListener, SipSettings, SipTransport, UnregisteredUsers,
};
pub use cpim_webhook::settings::{WebhookApp, WebhookSettings};
pub use cpim_xmpp::settings::{XmppComponent, XmppMessageType, XmppSettings};
pub use routing::{style_of, AliasRule, UserRule};
pub use source::Location;

/// A loaded and validated `gateway.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The `[gateway]` table.
    pub gateway: GatewaySection,
    /// The `[admin]` table; no admin listener when absent.
    pub admin: Option<AdminSection>,
    /// The `[adapters.<name>]` tables, by name.
    pub adapters: BTreeMap<String, AdapterConfig>,
    /// The `[[aliases]]` tables: pattern aliases of home domains on other adapters.
    pub aliases: Vec<AliasRule>,
    /// The `[[users]]` tables: explicit per-user addresses.
    pub users: Vec<UserRule>,
    source: PathBuf,
}

/// The `[gateway]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Where the gateway keeps its state (spool, presence cache); relative paths are relative
    /// to the directory of the configuration file.
    #[serde(default = "default_data_dir")]
    pub data_dir: ConfigString,
    /// How many gateways a message may cross before it is dropped as a loop (RFC 3860
    /// `MaxForwards`).
    #[serde(
        default = "default_max_hops",
        deserialize_with = "deserialize_max_hops"
    )]
    pub max_hops: u8,
    /// Messages waiting for one destination address, at most; beyond it senders are
    /// told to retry later (SIP 503, HTTP 503, XMPP `resource-constraint`).
    #[serde(
        default = "default_queue_per_destination",
        deserialize_with = "deserialize_queue_per_destination"
    )]
    pub queue_per_destination: u32,
    /// Messages waiting in the whole gateway, at most.
    #[serde(
        default = "default_queue_total",
        deserialize_with = "deserialize_queue_total"
    )]
    pub queue_total: u32,
    /// Seconds during which a retransmitted message (same protocol id from the same
    /// adapter) is recognised and not delivered twice.
    #[serde(
        default = "default_dedup_window_secs",
        deserialize_with = "deserialize_dedup_window_secs"
    )]
    pub dedup_window_secs: u32,
    /// At most one presence notification per presentity per this many seconds (RFC 3856
    /// §6.10); the latest state is always sent at the end of the interval.
    #[serde(
        default = "default_presence_interval_secs",
        deserialize_with = "deserialize_presence_interval_secs"
    )]
    pub presence_interval_secs: u32,
    /// Presence subscriptions the hub holds at most (watchers of all presentities on
    /// every network); a new one beyond it is refused with `resource-constraint`.
    #[serde(
        default = "default_max_subscriptions",
        deserialize_with = "deserialize_max_subscriptions"
    )]
    pub max_subscriptions: u32,
    /// Store and forward: accepted messages are kept in `data_dir/spool.log` until
    /// their final outcome, and delivered again after a restart.
    #[serde(default = "default_spool")]
    pub spool: bool,
    /// Seconds an accepted message may wait for delivery (a SIP sender's shorter
    /// `Expires` wins); after that it fails back to its sender.
    #[serde(
        default = "default_message_expiry_secs",
        deserialize_with = "deserialize_message_expiry_secs"
    )]
    pub message_expiry_secs: u32,
    /// Attempts at delivering one message to a destination that is down or asks to
    /// wait, before it fails back to its sender (whichever comes first of this and
    /// `message_expiry_secs`).
    #[serde(
        default = "default_max_delivery_attempts",
        deserialize_with = "deserialize_max_delivery_attempts"
    )]
    pub max_delivery_attempts: u32,
    /// Seconds a message the destination keeps asking to wait for may hold the messages
    /// behind it; then it fails back to its sender and the next goes.
    #[serde(
        default = "default_head_of_line_secs",
        deserialize_with = "deserialize_head_of_line_secs"
    )]
    pub head_of_line_secs: u32,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            data_dir: default_data_dir(),
            max_hops: default_max_hops(),
            queue_per_destination: default_queue_per_destination(),
            queue_total: default_queue_total(),
            dedup_window_secs: default_dedup_window_secs(),
            presence_interval_secs: default_presence_interval_secs(),
            max_subscriptions: default_max_subscriptions(),
            spool: default_spool(),
            message_expiry_secs: default_message_expiry_secs(),
            max_delivery_attempts: default_max_delivery_attempts(),
            head_of_line_secs: default_head_of_line_secs(),
        }
    }
}

/// The `[admin]` table: the HTTP listener for health and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// The address and port to listen on.
    pub listen: SocketAddr,
}

impl Config {
    /// Reads and validates the file at `path`, expanding `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_env(path, process_env)
    }

    /// Reads and validates the file at `path`, reading variables through `env`.
    pub fn load_with_env(
        path: &Path,
        env: impl Fn(&str) -> Option<String> + 'static,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path, env)
    }

    /// Parses and validates `text`, the content of the file at `path` (used in messages and to
    /// resolve relative paths), reading variables through `env`.
    pub fn parse(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String> + 'static,
    ) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        };
        let document = DeTable::parse(text)
            .map_err(|error| invalid(vec![Problem::from_toml(text, None, &error)]))?;
        let lookup: Rc<Lookup> = Rc::new(env);
        let mut config = with_lookup(lookup, || deserialize(&document))
            .map_err(|error| invalid(vec![Problem::from_toml(text, Some(&document), &error)]))?;
        config.source = path.to_owned();
        let findings = validate::validate(&config);
        if findings.is_empty() {
            Ok(config)
        } else {
            let problems = findings
                .into_iter()
                .map(|finding| Problem {
                    location: source::span_of(&document, &finding.path)
                        .map(|span| Location::of_offset(text, span.start)),
                    key: (!finding.path.is_root()).then(|| finding.path.to_string()),
                    message: finding.message,
                    hint: Some(finding.hint),
                })
                .collect();
            Err(invalid(problems))
        }
    }

    /// The file this configuration was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The data directory, relative paths resolved against the configuration file's directory.
    /// The spool file (`data_dir/spool.log`).
    pub fn spool_path(&self) -> PathBuf {
        self.data_dir().join("spool.log")
    }

    pub fn data_dir(&self) -> PathBuf {
        let base = self.source.parent().unwrap_or(Path::new(""));
        base.join(self.gateway.data_dir.as_str())
    }
}

/// Why a configuration file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid: bad TOML, wrong types, unknown keys or broken rules.
    #[error("{}", render_problems(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Everything wrong with it (at least one).
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems found in the file (empty when it could not be read).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the file, when known.
    pub location: Option<Location>,
    /// The key path, e.g. `adapters.sip.listen[1].address`, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Problem {
    fn from_toml(
        text: &str,
        document: Option<&Spanned<DeTable<'_>>>,
        error: &toml::de::Error,
    ) -> Problem {
        let span = error.span();
        let message = error.message().trim_end().to_owned();
        let hint = match document {
            None => "this is not valid TOML syntax; see https://toml.io and docs/configuration.md"
                .to_owned(),
            Some(_) => hint_for(&message),
        };
        Problem {
            location: span
                .as_ref()
                .map(|span| Location::of_offset(text, span.start)),
            key: document
                .zip(span)
                .and_then(|(document, span)| source::path_at(document, span.start))
                .map(|path| path.to_string()),
            message,
            hint: Some(hint),
        }
    }

    /// Writes the problem as `file:line:col: key: message`, then an indented hint line.
    fn render(&self, path: &Path, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", path.display())?;
        if let Some(location) = self.location {
            write!(f, ":{location}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

fn render_problems<'a>(path: &'a Path, problems: &'a [Problem]) -> impl fmt::Display + 'a {
    struct Render<'a>(&'a Path, &'a [Problem]);
    impl fmt::Display for Render<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for (index, problem) in self.1.iter().enumerate() {
                if index > 0 {
                    f.write_str("\n")?;
                }
                problem.render(self.0, f)?;
            }
            Ok(())
        }
    }
    Render(path, problems)
}

/// A hint for an error reported by the TOML deserializer, chosen by its message.
fn hint_for(message: &str) -> String {
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    if message.starts_with("unknown field") {
        "check the spelling of the key; the keys allowed in this table are listed above and \
         described in docs/configuration.md"
            .to_owned()
    } else if let Some(field) = quoted("missing field `") {
        if field == "type" {
            "add `type = \"sip\"`, `type = \"xmpp\"` or `type = \"webhook\"` to this adapter"
                .to_owned()
        } else {
            format!("add `{field} = ...` to this table; docs/configuration.md describes it")
        }
    } else if message.starts_with("unknown variant") {
        "use one of the values listed above".to_owned()
    } else if message.contains("environment variable") || message.contains('$') {
        "strings may use ${VAR}, ${VAR:-default} and $$ for a literal $; see \
         docs/configuration.md"
            .to_owned()
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        "this key takes a different type; docs/configuration.md lists the type of every key"
            .to_owned()
    } else {
        "see docs/configuration.md".to_owned()
    }
}

/// The top level with each adapter reduced to its `type`; the adapters themselves are
/// deserialized afterwards from their own tables, so that errors inside them keep exact
/// positions (serde's internally tagged enums would buffer the table and lose them).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Head {
    #[serde(default)]
    gateway: GatewaySection,
    #[serde(default)]
    admin: Option<AdminSection>,
    #[serde(default)]
    adapters: BTreeMap<String, AdapterHead>,
    #[serde(default)]
    aliases: Vec<AliasRule>,
    #[serde(default)]
    users: Vec<UserRule>,
}

#[derive(Deserialize)]
struct AdapterHead {
    #[serde(rename = "type")]
    kind: AdapterKind,
}

fn deserialize(document: &Spanned<DeTable<'_>>) -> Result<Config, toml::de::Error> {
    let head = Head::deserialize(toml::de::Deserializer::from(document.clone()))?;
    let tables = document
        .get_ref()
        .get("adapters")
        .and_then(|adapters| adapters.get_ref().as_table());
    let mut adapters = BTreeMap::new();
    for (name, AdapterHead { kind }) in head.adapters {
        // `Head` was read from this document, so every adapter name is a key of `tables`.
        let Some(mut table) = tables.and_then(|tables| tables.get(name.as_str())).cloned() else {
            continue;
        };
        if let DeValue::Table(keys) = table.get_mut() {
            keys.remove("type");
        }
        let table = ValueDeserializer::from(table);
        let adapter = match kind {
            AdapterKind::Sip => AdapterConfig::Sip(Box::new(SipSettings::deserialize(table)?)),
            AdapterKind::Xmpp => AdapterConfig::Xmpp(XmppSettings::deserialize(table)?),
            AdapterKind::Webhook => AdapterConfig::Webhook(WebhookSettings::deserialize(table)?),
        };
        adapters.insert(name, adapter);
    }
    Ok(Config {
        gateway: head.gateway,
        admin: head.admin,
        adapters,
        aliases: head.aliases,
        users: head.users,
        source: PathBuf::new(),
    })
}

fn default_data_dir() -> ConfigString {
    ConfigString::from("data")
}

fn default_max_hops() -> u8 {
    70
}

fn deserialize_max_hops<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u8, D::Error> {
    de::int_in_range(deserializer, "max_hops", 1, 255, "hops")
}

fn default_queue_per_destination() -> u32 {
    1_000
}

fn deserialize_queue_per_destination<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de::int_in_range(d, "queue_per_destination", 1, 1_000_000, "messages")
}

fn default_queue_total() -> u32 {
    100_000
}

fn deserialize_queue_total<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de::int_in_range(d, "queue_total", 1, 100_000_000, "messages")
}

fn default_dedup_window_secs() -> u32 {
    600
}

fn deserialize_dedup_window_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de::int_in_range(d, "dedup_window_secs", 0, 86_400, "seconds")
}

fn default_presence_interval_secs() -> u32 {
    5
}

fn deserialize_presence_interval_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de::int_in_range(d, "presence_interval_secs", 0, 3_600, "seconds")
}

fn default_max_subscriptions() -> u32 {
    100_000
}

fn deserialize_max_subscriptions<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de::int_in_range(d, "max_subscriptions", 1, 100_000_000, "subscriptions")
}

fn default_spool() -> bool {
    true
}

fn default_message_expiry_secs() -> u32 {
    86_400
}

fn deserialize_message_expiry_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de::int_in_range(d, "message_expiry_secs", 1, 30 * 86_400, "seconds")
}

fn default_head_of_line_secs() -> u32 {
    300
}

fn deserialize_head_of_line_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de::int_in_range(d, "head_of_line_secs", 1, 86_400, "seconds")
}

fn default_max_delivery_attempts() -> u32 {
    2_000
}

fn deserialize_max_delivery_attempts<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    de::int_in_range(d, "max_delivery_attempts", 1, 1_000_000, "attempts")
}

#[cfg(test)]
mod tests;
