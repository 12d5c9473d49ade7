//! Environment substitution in configuration strings, and the [`Secret`] type.
//!
//! A [`ConfigString`] or [`Secret`] value may contain `${VAR}` (the value of the environment
//! variable `VAR`, which must be set), `${VAR:-default}` (the value of `VAR`, or `default` when
//! `VAR` is unset or empty) and `$$` (a literal `$`). Any other `$` is an error, so a value can
//! never be half-expanded by accident. Expansion happens while the file is deserialized, so an
//! error is reported at the line and column of the value.
//!
//! Where the variables come from is injectable: the gateway's `Config::parse` takes a lookup
//! function ([`with_lookup`]), so tests never touch the process environment.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use serde::{Deserialize, Deserializer};

/// A string from the configuration file, after environment substitution.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigString(String);

impl ConfigString {
    /// The expanded text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The expanded text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for ConfigString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ConfigString {
    /// A literal value (no substitution is applied).
    fn from(text: &str) -> Self {
        ConfigString(text.to_owned())
    }
}

impl AsRef<str> for ConfigString {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ConfigString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::config::de::parse_str(deserializer, "a string", expand_with_current_env)
            .map(ConfigString)
    }
}

/// A secret (shared secret, bearer token) from the configuration file, after environment
/// substitution. Its `Debug` and `Display` forms are `***`; only [`Secret::expose`] reveals it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call this only where the value is put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ConfigString::deserialize(deserializer).map(|s| Secret(s.into_string()))
    }
}

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpandError {
    /// `${VAR}` names a variable that is not set and has no default.
    #[error("environment variable {name} is not set; export it or write ${{{name}:-default}}")]
    Unset {
        /// The variable's name.
        name: String,
    },
    /// `${` without a closing `}`.
    #[error("unterminated `${{` in `{text}`; write `${{VAR}}`, or `$$` for a literal `$`")]
    Unterminated {
        /// The text after the `${`.
        text: String,
    },
    /// The name between `${` and `}` (or before `:-`) is not a valid variable name.
    #[error(
        "`{name}` is not a valid environment variable name; use letters, digits and `_`, \
         not starting with a digit"
    )]
    BadName {
        /// The offending name.
        name: String,
    },
    /// A `$` that starts neither `${` nor `$$`.
    #[error("a lone `$` must be written `$$`; `${{VAR}}` substitutes an environment variable")]
    LoneDollar,
}

/// Expands `${VAR}`, `${VAR:-default}` and `$$` in `input`, reading variables through `lookup`.
///
/// The default text is taken literally up to the first `}`. A variable that is set but empty
/// takes the default with `:-` (as in a POSIX shell) and expands to the empty string without.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| ExpandError::Unterminated {
                text: body.to_owned(),
            })?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_variable_name(name) {
                return Err(ExpandError::BadName {
                    name: name.to_owned(),
                });
            }
            match (lookup(name), default) {
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(ExpandError::Unset {
                        name: name.to_owned(),
                    })
                }
            }
            rest = &body[end + 1..];
        } else {
            return Err(ExpandError::LoneDollar);
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The variable lookup used while deserializing on this thread.
pub type Lookup = dyn Fn(&str) -> Option<String>;

thread_local! {
    static LOOKUP: RefCell<Option<Rc<Lookup>>> = const { RefCell::new(None) };
}

/// Runs `f` with `lookup` as the source of environment variables for every [`ConfigString`]
/// and [`Secret`] deserialized on this thread; the previous source is restored afterwards,
/// even if `f` panics.
pub fn with_lookup<R>(lookup: Rc<Lookup>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Rc<Lookup>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            LOOKUP.with(|slot| *slot.borrow_mut() = previous);
        }
    }
    let previous = LOOKUP.with(|slot| slot.borrow_mut().replace(lookup));
    let _restore = Restore(previous);
    f()
}

/// Expands with the lookup installed by [`with_lookup`], or the process environment when none
/// is (for example when a config type is deserialized directly with `toml::from_str`).
fn expand_with_current_env(input: &str) -> Result<String, ExpandError> {
    match LOOKUP.with(|slot| slot.borrow().clone()) {
        Some(lookup) => expand(input, &*lookup),
        None => expand(input, &process_env),
    }
}

/// Reads a variable from the process environment (a value that is not UTF-8 counts as unset).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(expand("no variables", &env).as_deref(), Ok("no variables"));
    }

    #[test]
    fn set_variable_is_substituted() {
        assert_eq!(expand("a-${SET}-b", &env).as_deref(), Ok("a-value-b"));
    }

    #[test]
    fn default_is_used_when_unset_or_empty() {
        assert_eq!(expand("${UNSET:-dflt}", &env).as_deref(), Ok("dflt"));
        assert_eq!(expand("${EMPTY:-dflt}", &env).as_deref(), Ok("dflt"));
        assert_eq!(expand("${SET:-dflt}", &env).as_deref(), Ok("value"));
        assert_eq!(expand("${UNSET:-}", &env).as_deref(), Ok(""));
        assert_eq!(expand("${UNSET:-a:-b$}", &env).as_deref(), Ok("a:-b$"));
    }

    #[test]
    fn set_but_empty_without_default_is_empty() {
        assert_eq!(expand("x${EMPTY}y", &env).as_deref(), Ok("xy"));
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        assert_eq!(expand("p$$w$$", &env).as_deref(), Ok("p$w$"));
        assert_eq!(expand("$${SET}", &env).as_deref(), Ok("${SET}"));
    }

    #[test]
    fn unset_without_default_is_an_error_with_a_fix() {
        let error = expand("${CPIM_XMPP_SECRET}", &env).expect_err("unset");
        assert_eq!(
            error.to_string(),
            "environment variable CPIM_XMPP_SECRET is not set; export it or write \
             ${CPIM_XMPP_SECRET:-default}"
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        assert_eq!(
            expand("${SET", &env),
            Err(ExpandError::Unterminated {
                text: "SET".to_owned()
            })
        );
        assert_eq!(expand("cost: 5$", &env), Err(ExpandError::LoneDollar));
        assert_eq!(expand("$SET", &env), Err(ExpandError::LoneDollar));
        assert!(matches!(
            expand("${}", &env),
            Err(ExpandError::BadName { .. })
        ));
        assert!(matches!(
            expand("${1X}", &env),
            Err(ExpandError::BadName { .. })
        ));
        assert!(matches!(
            expand("${A B}", &env),
            Err(ExpandError::BadName { .. })
        ));
    }

    #[test]
    fn secret_is_never_formatted() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn lookup_is_restored_after_use() {
        let outer: Rc<Lookup> = Rc::new(|_: &str| Some("outer".to_owned()));
        let inner: Rc<Lookup> = Rc::new(|_: &str| Some("inner".to_owned()));
        with_lookup(outer, || {
            with_lookup(inner, || {
                assert_eq!(expand_with_current_env("${X}").as_deref(), Ok("inner"));
            });
            assert_eq!(expand_with_current_env("${X}").as_deref(), Ok("outer"));
        });
    }
}
