//! `application/im-iscomposing+xml`: the message composition indication of RFC 3994.
//!
//! [`IsComposing::parse`] reads the document, [`IsComposing::to_xml`] writes the canonical
//! form (`<isComposing>` in the default namespace, children in schema order, no indentation).
//!
//! - `<state>` is required. RFC 3994 §3.5 says a receiver "MUST treat state tokens other than
//!   `idle` and `active` as `idle`", so any other value parses as [`ComposingState::Idle`]
//!   rather than failing; only a missing `<state>` is an error.
//! - `<lastactive>` must be an XML Schema `dateTime` (kept as written; no clock is read),
//!   `<refresh>` a positive integer that fits in `u32` (seconds).
//! - Extensions in other namespaces (and unqualified ones) are preserved and written back;
//!   an unknown element in the isComposing namespace is rejected, since §3.5 forbids adding
//!   elements to it. Child order is not enforced.
//!
//! The sender and receiver timers of §3.2–§3.3 are behaviour, not format, and live with the
//! caller.

use serde::{Deserialize, Serialize};

use crate::xml::{self, Element, Node, XmlError};

/// The isComposing namespace (RFC 3994 §6).
pub const ISCOMPOSING_NS: &str = "urn:ietf:params:xml:ns:im-iscomposing";

/// Why a document is not an isComposing document this module accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ComposingError {
    /// The body is not acceptable XML.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The root element is not `<isComposing>` in the isComposing namespace.
    #[error("root element {{{namespace}}}{name} is not <isComposing>")]
    WrongRoot {
        /// Namespace of the root found (empty if none).
        namespace: String,
        /// Local name of the root found.
        name: String,
    },
    /// There is no `<state>`.
    #[error("<isComposing> has no <state>")]
    MissingState,
    /// A child element appears twice.
    #[error("<{0}> appears more than once")]
    Duplicate(&'static str),
    /// `<refresh>` is not a positive integer fitting in 32 bits.
    #[error("invalid <refresh> value {0:?}")]
    InvalidRefresh(String),
    /// `<lastactive>` is not a date-time.
    #[error("invalid <lastactive> value {0:?}")]
    InvalidLastActive(String),
    /// An element in the isComposing namespace that RFC 3994 does not define.
    #[error("unexpected element <{0}> in the isComposing namespace")]
    UnexpectedElement(String),
}

/// An isComposing status message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct IsComposing {
    /// The composer's state.
    pub state: ComposingState,
    /// When the user last added or edited content, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lastactive: Option<String>,
    /// The kind of content being composed (`text`, `audio`, `text/html`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contenttype: Option<String>,
    /// Seconds until the next active-state refresh; absent means the receiver times out
    /// after 120 s (RFC 3994 §3.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<u32>,
    /// Elements from other namespaces, preserved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<Element>,
}

/// The composer state (RFC 3994 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComposingState {
    /// The user is composing a message.
    Active,
    /// The user is not composing (also any unknown state token).
    Idle,
}

impl ComposingState {
    /// The `<state>` text.
    pub fn as_str(self) -> &'static str {
        match self {
            ComposingState::Active => "active",
            ComposingState::Idle => "idle",
        }
    }
}

impl IsComposing {
    /// Parses an `application/im-iscomposing+xml` body.
    pub fn parse(input: &[u8]) -> Result<IsComposing, ComposingError> {
        let root = xml::parse(input)?;
        if !root.is(ISCOMPOSING_NS, "isComposing") {
            return Err(ComposingError::WrongRoot {
                namespace: root.namespace.unwrap_or_default(),
                name: root.name,
            });
        }
        let mut state = None;
        let mut doc = IsComposing {
            state: ComposingState::Idle,
            lastactive: None,
            contenttype: None,
            refresh: None,
            extensions: Vec::new(),
        };
        for node in root.children {
            let Node::Element(child) = node else { continue };
            if child.namespace.as_deref() != Some(ISCOMPOSING_NS) {
                doc.extensions.push(child);
                continue;
            }
            let text = child
                .text()
                .trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
                .to_owned();
            match child.name.as_str() {
                "state" => {
                    let value = match text.as_str() {
                        "active" => ComposingState::Active,
                        _ => ComposingState::Idle,
                    };
                    set_once(&mut state, value, "state")?;
                }
                "lastactive" => {
                    if !crate::datetime::is_xsd_date_time(&text, false) {
                        return Err(ComposingError::InvalidLastActive(text));
                    }
                    set_once(&mut doc.lastactive, text, "lastactive")?;
                }
                "contenttype" => set_once(&mut doc.contenttype, text, "contenttype")?,
                "refresh" => {
                    let seconds = text
                        .parse::<u32>()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or(ComposingError::InvalidRefresh(text))?;
                    set_once(&mut doc.refresh, seconds, "refresh")?;
                }
                _ => return Err(ComposingError::UnexpectedElement(child.name)),
            }
        }
        doc.state = state.ok_or(ComposingError::MissingState)?;
        Ok(doc)
    }

    /// The canonical document.
    pub fn to_xml(&self) -> String {
        let field =
            |name: &str, text: &str| Element::new(Some(ISCOMPOSING_NS), name).with_text(text);
        let mut root = Element::new(Some(ISCOMPOSING_NS), "isComposing")
            .with_child(field("state", self.state.as_str()));
        if let Some(t) = &self.lastactive {
            root = root.with_child(field("lastactive", t));
        }
        if let Some(t) = &self.contenttype {
            root = root.with_child(field("contenttype", t));
        }
        if let Some(r) = self.refresh {
            root = root.with_child(field("refresh", &r.to_string()));
        }
        root.children
            .extend(self.extensions.iter().cloned().map(Node::Element));
        root.to_document()
    }
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    element: &'static str,
) -> Result<(), ComposingError> {
    if slot.is_some() {
        return Err(ComposingError::Duplicate(element));
    }
    *slot = Some(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    const RFC3994_5_ACTIVE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
   <isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"
   xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
   xsi:schemaLocation="urn:ietf:params:xml:ns:im-composing
   iscomposing.xsd">
     <state>active</state>
     <contenttype>text/plain</contenttype>
     <refresh>90</refresh>
   </isComposing>"#;

    const RFC3994_5_IDLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
   <isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"
   xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
   xsi:schemaLocation="urn:ietf:params:xml:ns:im-composing
   iscomposing.xsd">
     <state>idle</state>
     <lastactive>2003-01-27T10:43:00Z</lastactive>
     <contenttype>audio</contenttype>
   </isComposing>"#;

    fn parse(s: &str) -> Result<IsComposing, ComposingError> {
        IsComposing::parse(s.as_bytes())
    }

    fn doc(body: &str) -> String {
        format!(
            r#"<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">{body}</isComposing>"#
        )
    }

    #[test]
    fn rfc3994_5_active_example() {
        let c = parse(RFC3994_5_ACTIVE).unwrap();
        assert_eq!(
            c,
            IsComposing {
                state: ComposingState::Active,
                lastactive: None,
                contenttype: Some("text/plain".into()),
                refresh: Some(90),
                extensions: vec![],
            }
        );
        assert_eq!(
            c.to_xml(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\"><state>active</state>\
             <contenttype>text/plain</contenttype><refresh>90</refresh></isComposing>"
        );
        assert_eq!(parse(&c.to_xml()).unwrap(), c);
    }

    #[test]
    fn rfc3994_5_idle_example() {
        let c = parse(RFC3994_5_IDLE).unwrap();
        assert_eq!(c.state, ComposingState::Idle);
        assert_eq!(c.lastactive.as_deref(), Some("2003-01-27T10:43:00Z"));
        assert_eq!(c.contenttype.as_deref(), Some("audio"));
        assert_eq!(c.refresh, None);
        assert_eq!(parse(&c.to_xml()).unwrap(), c);
    }

    #[test]
    fn rfc3994_3_5_unknown_state_is_idle() {
        let c = parse(&doc("<state>typing</state>")).unwrap();
        assert_eq!(c.state, ComposingState::Idle);
    }

    #[test]
    fn rfc3994_3_5_extensions_preserved() {
        let c = parse(&doc(
            r#"<state>active</state><x:mood xmlns:x="urn:example:x">eager</x:mood>"#,
        ))
        .unwrap();
        assert!(c.extensions[0].is("urn:example:x", "mood"));
        assert_eq!(parse(&c.to_xml()).unwrap(), c);
    }

    #[test]
    fn rfc3994_3_5_new_element_in_namespace_rejected() {
        assert_eq!(
            parse(&doc("<state>active</state><mood>eager</mood>")),
            Err(ComposingError::UnexpectedElement("mood".into()))
        );
    }

    #[test]
    fn rfc3994_6_1_invalid_documents_rejected() {
        assert_eq!(
            parse(&doc("<refresh>60</refresh>")),
            Err(ComposingError::MissingState)
        );
        for bad in ["0", "-5", "soon", "99999999999"] {
            assert_eq!(
                parse(&doc(&format!(
                    "<state>active</state><refresh>{bad}</refresh>"
                ))),
                Err(ComposingError::InvalidRefresh(bad.into()))
            );
        }
        assert_eq!(
            parse(&doc(
                "<state>idle</state><lastactive>yesterday</lastactive>"
            )),
            Err(ComposingError::InvalidLastActive("yesterday".into()))
        );
        assert_eq!(
            parse(&doc("<state>idle</state><state>active</state>")),
            Err(ComposingError::Duplicate("state"))
        );
        assert!(matches!(
            parse(r#"<isComposing><state>idle</state></isComposing>"#),
            Err(ComposingError::WrongRoot { .. })
        ));
        assert!(matches!(parse("<isComposing"), Err(ComposingError::Xml(_))));
    }

    proptest! {
        #[test]
        fn round_trip_generated_models(
            active in prop::bool::ANY,
            lastactive in prop::option::of((2000u32..2100, 1u32..=12, 1u32..=28, 0u32..24)
                .prop_map(|(y, m, d, h)| format!("{y:04}-{m:02}-{d:02}T{h:02}:00:00Z"))),
            contenttype in prop::option::of("(text|audio|image)(/[a-z+-]{1,8})?"),
            refresh in prop::option::of(1u32..),
            extensions in prop::collection::vec(xml::tests::arb_element(), 0..2),
        ) {
            let c = IsComposing {
                state: if active { ComposingState::Active } else { ComposingState::Idle },
                lastactive,
                contenttype,
                refresh,
                extensions,
            };
            prop_assert_eq!(IsComposing::parse(c.to_xml().as_bytes()), Ok(c));
        }
    }
}
