//! Validated domain names and names of configured things.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A syntactically valid DNS domain name, as an adapter owns it: lowercase ASCII letters,
/// digits, `-` and `.`, no empty label, no label starting or ending with `-`, labels of at most
/// 63 characters and at most 253 characters in all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    /// Parses and validates a domain name.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        if text.is_empty() {
            return Err(DomainError::Empty);
        }
        if text.len() > 253 {
            return Err(DomainError::TooLong {
                domain: text.to_owned(),
            });
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
        {
            return Err(DomainError::BadCharacter {
                domain: text.to_owned(),
                character: bad,
            });
        }
        for label in text.split('.') {
            if label.is_empty() {
                return Err(DomainError::EmptyLabel {
                    domain: text.to_owned(),
                });
            }
            if label.len() > 63 {
                return Err(DomainError::LabelTooLong {
                    domain: text.to_owned(),
                });
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(DomainError::HyphenAtLabelEdge {
                    domain: text.to_owned(),
                });
            }
        }
        Ok(Domain(text.to_owned()))
    }

    /// The domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Domain {
    type Err = DomainError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Domain::parse(text)
    }
}

impl<'de> Deserialize<'de> for Domain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::config::de::parse_str(deserializer, "a domain name", Domain::parse)
    }
}

/// Why a string is not a valid [`Domain`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// The empty string.
    #[error("a domain must not be empty; write a name such as `sip.example.com`")]
    Empty,
    /// A character outside `[a-z0-9.-]`.
    #[error(
        "invalid domain `{domain}`: character {character:?} is not allowed; domains are written \
         in lowercase ASCII letters, digits, `-` and `.` (use the punycode `xn--` form for \
         international names)"
    )]
    BadCharacter {
        /// The rejected text.
        domain: String,
        /// The first character that is not allowed.
        character: char,
    },
    /// Two dots in a row, or a leading or trailing dot.
    #[error("invalid domain `{domain}`: empty label; remove the leading, trailing or doubled `.`")]
    EmptyLabel {
        /// The rejected text.
        domain: String,
    },
    /// A label longer than 63 characters.
    #[error("invalid domain `{domain}`: a label is longer than 63 characters")]
    LabelTooLong {
        /// The rejected text.
        domain: String,
    },
    /// Longer than 253 characters.
    #[error("invalid domain `{domain}`: longer than 253 characters")]
    TooLong {
        /// The rejected text.
        domain: String,
    },
    /// A label starting or ending with `-`.
    #[error("invalid domain `{domain}`: a label must not start or end with `-`")]
    HyphenAtLabelEdge {
        /// The rejected text.
        domain: String,
    },
}

/// Whether `name` is a valid name for an adapter or a webhook app: `[a-z0-9_-]+`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_domains_parse() {
        for text in [
            "localhost",
            "sip.localhost",
            "gw.xmpp.example-1.org",
            "xn--bcher-kva.de",
        ] {
            assert_eq!(
                Domain::parse(text).map(|d| d.to_string()).as_deref(),
                Ok(text)
            );
        }
    }

    #[test]
    fn invalid_domains_are_rejected() {
        assert_eq!(Domain::parse(""), Err(DomainError::Empty));
        assert!(matches!(
            Domain::parse("Sip.Localhost"),
            Err(DomainError::BadCharacter { character: 'S', .. })
        ));
        assert!(matches!(
            Domain::parse("sip_x.localhost"),
            Err(DomainError::BadCharacter { character: '_', .. })
        ));
        assert!(matches!(
            Domain::parse("sip..localhost"),
            Err(DomainError::EmptyLabel { .. })
        ));
        assert!(matches!(
            Domain::parse("sip.localhost."),
            Err(DomainError::EmptyLabel { .. })
        ));
        assert!(matches!(
            Domain::parse("-sip.localhost"),
            Err(DomainError::HyphenAtLabelEdge { .. })
        ));
        assert!(matches!(
            Domain::parse(&"a".repeat(64)),
            Err(DomainError::LabelTooLong { .. })
        ));
        let long = [
            "a".repeat(60),
            "b".repeat(60),
            "c".repeat(60),
            "d".repeat(60),
            "e".repeat(10),
        ]
        .join(".");
        assert!(matches!(
            Domain::parse(&long),
            Err(DomainError::TooLong { .. })
        ));
    }

    #[test]
    fn names_are_lowercase_words() {
        assert!(is_valid_name("sip"));
        assert!(is_valid_name("xmpp_2-b"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("Sip"));
        assert!(!is_valid_name("a.b"));
        assert!(!is_valid_name("a b"));
    }
}
