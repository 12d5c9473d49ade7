//! Instant Message Disposition Notification (RFC 5438): the `message/imdn+xml` body
//! ([`Imdn`]) and the `Disposition-Notification` CPIM header value ([`DispositionRequest`]).
//!
//! # `message/imdn+xml` (RFC 5438 §11)
//!
//! [`Imdn::parse`] reads the document, [`Imdn::to_xml`] writes the canonical form (`<imdn>` in
//! the default namespace, children in schema order, no indentation). Required: `<message-id>`,
//! `<datetime>` and exactly one of `<delivery-notification>`, `<display-notification>`,
//! `<processing-notification>` (§11.1.6 makes one mandatory, although the RelaxNG schema
//! also allows none) whose `<status>` holds exactly one status value allowed for that type.
//! `<recipient-uri>` and `<original-recipient-uri>` are each optional (the schema pairs them,
//! the prose does not). `<datetime>` is a schema `string` and is kept as written, trimmed.
//!
//! Extensions are preserved where the schema has extension points — children of `<imdn>` and
//! of `<status>` — when they are qualified with a namespace other than the IMDN one. An element
//! in the IMDN namespace that the RFC does not define is rejected ([`ImdnError::UnexpectedElement`]),
//! an unqualified one is kept as an extension (the schema excludes those; we are lenient).
//! Child order is not enforced. Aggregated IMDNs (§8.3, `multipart/mixed`) are a MIME matter
//! for the caller; each part is one [`Imdn`].
//!
//! # `Disposition-Notification` (RFC 5438 §6.2, §10)
//!
//! [`DispositionRequest::parse`] reads the comma-separated `notify-req` list; unknown tokens
//! are kept as [`DispositionKind::Other`] and `disp-notify-params` as written. An empty value
//! means no IMDN is requested. Its [`Display`](std::fmt::Display) writes
//! `positive-delivery, display` style text that parses back to the same value.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::xml::{self, Element, Node, XmlError};

/// The IMDN XML namespace (RFC 5438 §11.1).
pub const IMDN_NS: &str = "urn:ietf:params:xml:ns:imdn";

/// Why a body or header value is not an IMDN this module accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImdnError {
    /// The body is not acceptable XML.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The root element is not `<imdn>` in the IMDN namespace.
    #[error("root element {{{namespace}}}{name} is not <imdn>")]
    WrongRoot {
        /// Namespace of the root found (empty if none).
        namespace: String,
        /// Local name of the root found.
        name: String,
    },
    /// A required element is absent: `message-id`, `datetime`, `notification` (none of the
    /// three notification elements), `status`, or the status value.
    #[error("missing <{0}>")]
    Missing(&'static str),
    /// A single-valued element appears twice (`notification` for a second notification of
    /// any type, `status value` for two status values).
    #[error("<{0}> appears more than once")]
    Duplicate(&'static str),
    /// A status value not allowed for the notification type (e.g. `<displayed/>` in a
    /// delivery notification).
    #[error("<{status}> is not a valid {notification} status")]
    InvalidStatus {
        /// `delivery-notification`, `display-notification` or `processing-notification`.
        notification: &'static str,
        /// The local name of the offending status element.
        status: String,
    },
    /// An element in the IMDN namespace that RFC 5438 does not define at that place.
    #[error("unexpected element <{0}> in the IMDN namespace")]
    UnexpectedElement(String),
    /// A `Disposition-Notification` value that does not follow RFC 5438 §10.
    #[error("invalid Disposition-Notification value {0:?}")]
    InvalidDispositionNotification(String),
}

/// A `message/imdn+xml` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Imdn {
    /// The `Message-ID` of the IM this notification is about.
    pub message_id: String,
    /// The `DateTime` of that IM (when it was sent), as written.
    pub datetime: String,
    /// The final recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_uri: Option<String>,
    /// The original recipient (from `Original-To`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_recipient_uri: Option<String>,
    /// The IM's `Subject`, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// What is being reported.
    pub notification: Notification,
    /// Extension elements inside `<status>`, preserved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_extensions: Vec<Element>,
    /// Extension elements inside `<imdn>`, preserved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<Element>,
}

/// The disposition type and its result (RFC 5438 §5, §11.1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notification {
    /// `<delivery-notification>`.
    Delivery(DeliveryStatus),
    /// `<display-notification>`.
    Display(DisplayStatus),
    /// `<processing-notification>`.
    Processing(ProcessingStatus),
}

/// Result of a delivery notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// The IM was delivered.
    Delivered,
    /// The IM could not be delivered.
    Failed,
    /// The disposition was denied.
    Forbidden,
    /// Internal error.
    Error,
}

/// Result of a display notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisplayStatus {
    /// The IM was displayed.
    Displayed,
    /// The disposition was denied.
    Forbidden,
    /// Internal error (e.g. the recipient cannot tell whether it was displayed).
    Error,
}

/// Result of a processing notification (sent by intermediaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingStatus {
    /// The IM was processed.
    Processed,
    /// The IM was stored for later delivery.
    Stored,
    /// The disposition was denied.
    Forbidden,
    /// Internal error.
    Error,
}

/// A parsed `Disposition-Notification` header value: the IMDNs the sender asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct DispositionRequest {
    /// The requests in header order; empty when nothing is requested.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<NotifyRequest>,
}

/// One `notify-req`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct NotifyRequest {
    /// The requested disposition.
    pub kind: DispositionKind,
    /// `disp-notify-params`, each `name=value` as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
}

/// A requested disposition type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispositionKind {
    /// `positive-delivery`: report successful delivery.
    PositiveDelivery,
    /// `negative-delivery`: report failed delivery.
    NegativeDelivery,
    /// `processing`: intermediaries report processing.
    Processing,
    /// `display`: report display to the user.
    Display,
    /// Any other token, kept as written.
    Other(String),
}

impl Imdn {
    /// Parses a `message/imdn+xml` body.
    pub fn parse(input: &[u8]) -> Result<Imdn, ImdnError> {
        let root = xml::parse(input)?;
        if !root.is(IMDN_NS, "imdn") {
            return Err(ImdnError::WrongRoot {
                namespace: root.namespace.unwrap_or_default(),
                name: root.name,
            });
        }
        let (mut message_id, mut datetime, mut recipient, mut original, mut subject) =
            (None, None, None, None, None);
        let mut notification = None;
        let mut status_extensions = Vec::new();
        let mut extensions = Vec::new();
        for child in child_elements(root) {
            if child.namespace.as_deref() != Some(IMDN_NS) {
                extensions.push(child);
                continue;
            }
            match child.name.as_str() {
                "message-id" => set_once(&mut message_id, trimmed(&child), "message-id")?,
                "datetime" => set_once(&mut datetime, trimmed(&child), "datetime")?,
                "recipient-uri" => set_once(&mut recipient, trimmed(&child), "recipient-uri")?,
                "original-recipient-uri" => {
                    set_once(&mut original, trimmed(&child), "original-recipient-uri")?
                }
                "subject" => set_once(&mut subject, child.text(), "subject")?,
                "delivery-notification" | "display-notification" | "processing-notification" => {
                    let (value, kept) = notification_element(child)?;
                    set_once(&mut notification, value, "notification")?;
                    status_extensions = kept;
                }
                _ => return Err(ImdnError::UnexpectedElement(child.name)),
            }
        }
        Ok(Imdn {
            message_id: message_id.ok_or(ImdnError::Missing("message-id"))?,
            datetime: datetime.ok_or(ImdnError::Missing("datetime"))?,
            recipient_uri: recipient,
            original_recipient_uri: original,
            subject,
            notification: notification.ok_or(ImdnError::Missing("notification"))?,
            status_extensions,
            extensions,
        })
    }

    /// The canonical document.
    pub fn to_xml(&self) -> String {
        let field = |name: &str, text: &str| imdn(name).with_text(text);
        let mut root = imdn("imdn")
            .with_child(field("message-id", &self.message_id))
            .with_child(field("datetime", &self.datetime));
        if let Some(uri) = &self.recipient_uri {
            root = root.with_child(field("recipient-uri", uri));
        }
        if let Some(uri) = &self.original_recipient_uri {
            root = root.with_child(field("original-recipient-uri", uri));
        }
        if let Some(subject) = &self.subject {
            root = root.with_child(field("subject", subject));
        }
        let (kind, value) = match self.notification {
            Notification::Delivery(s) => ("delivery-notification", s.as_str()),
            Notification::Display(s) => ("display-notification", s.as_str()),
            Notification::Processing(s) => ("processing-notification", s.as_str()),
        };
        let mut status = imdn("status").with_child(imdn(value));
        status
            .children
            .extend(self.status_extensions.iter().cloned().map(Node::Element));
        root = root.with_child(imdn(kind).with_child(status));
        root.children
            .extend(self.extensions.iter().cloned().map(Node::Element));
        root.to_document()
    }
}

impl DeliveryStatus {
    /// The status element name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Forbidden => "forbidden",
            DeliveryStatus::Error => "error",
        }
    }
}

impl DisplayStatus {
    /// The status element name.
    pub fn as_str(self) -> &'static str {
        match self {
            DisplayStatus::Displayed => "displayed",
            DisplayStatus::Forbidden => "forbidden",
            DisplayStatus::Error => "error",
        }
    }
}

impl ProcessingStatus {
    /// The status element name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessingStatus::Processed => "processed",
            ProcessingStatus::Stored => "stored",
            ProcessingStatus::Forbidden => "forbidden",
            ProcessingStatus::Error => "error",
        }
    }
}

impl DispositionRequest {
    /// Parses a `Disposition-Notification` header value (RFC 5438 §10).
    pub fn parse(value: &str) -> Result<DispositionRequest, ImdnError> {
        let invalid = || ImdnError::InvalidDispositionNotification(value.to_owned());
        if value.trim_matches(' ').is_empty() {
            return Ok(DispositionRequest::default());
        }
        let mut requests = Vec::new();
        for item in split_unquoted(value, ',').ok_or_else(invalid)? {
            let mut parts = split_unquoted(item, ';').ok_or_else(invalid)?.into_iter();
            let token = parts.next().unwrap_or_default().trim_matches(' ');
            if !is_token(token) {
                return Err(invalid());
            }
            let mut params = Vec::new();
            for param in parts {
                let param = param.trim_matches(' ');
                let (name, val) = param.split_once('=').ok_or_else(invalid)?;
                let valid_value = is_token(val) || is_quoted_string(val);
                if name.is_empty() || !name.chars().all(is_name_char) || !valid_value {
                    return Err(invalid());
                }
                params.push(param.to_owned());
            }
            let kind = match token {
                "positive-delivery" => DispositionKind::PositiveDelivery,
                "negative-delivery" => DispositionKind::NegativeDelivery,
                "processing" => DispositionKind::Processing,
                "display" => DispositionKind::Display,
                other => DispositionKind::Other(other.to_owned()),
            };
            requests.push(NotifyRequest { kind, params });
        }
        Ok(DispositionRequest { requests })
    }

    /// Whether the sender asked for `kind`.
    pub fn wants(&self, kind: &DispositionKind) -> bool {
        self.requests.iter().any(|r| r.kind == *kind)
    }
}

impl DispositionKind {
    /// The header token.
    pub fn as_str(&self) -> &str {
        match self {
            DispositionKind::PositiveDelivery => "positive-delivery",
            DispositionKind::NegativeDelivery => "negative-delivery",
            DispositionKind::Processing => "processing",
            DispositionKind::Display => "display",
            DispositionKind::Other(token) => token,
        }
    }
}

impl fmt::Display for DispositionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, request) in self.requests.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(request.kind.as_str())?;
            for param in &request.params {
                write!(f, ";{param}")?;
            }
        }
        Ok(())
    }
}

fn imdn(name: &str) -> Element {
    Element::new(Some(IMDN_NS), name)
}

fn trimmed(e: &Element) -> String {
    e.text()
        .trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
        .to_owned()
}

fn set_once<T>(slot: &mut Option<T>, value: T, element: &'static str) -> Result<(), ImdnError> {
    if slot.is_some() {
        return Err(ImdnError::Duplicate(element));
    }
    *slot = Some(value);
    Ok(())
}

fn child_elements(e: Element) -> impl Iterator<Item = Element> {
    e.children.into_iter().filter_map(|n| match n {
        Node::Element(e) => Some(e),
        Node::Text(_) => None,
    })
}

/// Reads a `<…-notification>` element: its status value and the `<status>` extensions.
fn notification_element(e: Element) -> Result<(Notification, Vec<Element>), ImdnError> {
    let kind: &'static str = match e.name.as_str() {
        "delivery-notification" => "delivery-notification",
        "display-notification" => "display-notification",
        _ => "processing-notification",
    };
    let mut status = None;
    for child in child_elements(e) {
        if child.is(IMDN_NS, "status") {
            set_once(&mut status, child, "status")?;
        } else if child.namespace.as_deref() == Some(IMDN_NS) {
            return Err(ImdnError::UnexpectedElement(child.name));
        }
    }
    let status = status.ok_or(ImdnError::Missing("status"))?;
    let mut value = None;
    let mut extensions = Vec::new();
    for child in child_elements(status) {
        if child.namespace.as_deref() != Some(IMDN_NS) {
            extensions.push(child);
            continue;
        }
        let parsed = match (kind, child.name.as_str()) {
            ("delivery-notification", "delivered") => {
                Notification::Delivery(DeliveryStatus::Delivered)
            }
            ("delivery-notification", "failed") => Notification::Delivery(DeliveryStatus::Failed),
            ("delivery-notification", "forbidden") => {
                Notification::Delivery(DeliveryStatus::Forbidden)
            }
            ("delivery-notification", "error") => Notification::Delivery(DeliveryStatus::Error),
            ("display-notification", "displayed") => {
                Notification::Display(DisplayStatus::Displayed)
            }
            ("display-notification", "forbidden") => {
                Notification::Display(DisplayStatus::Forbidden)
            }
            ("display-notification", "error") => Notification::Display(DisplayStatus::Error),
            ("processing-notification", "processed") => {
                Notification::Processing(ProcessingStatus::Processed)
            }
            ("processing-notification", "stored") => {
                Notification::Processing(ProcessingStatus::Stored)
            }
            ("processing-notification", "forbidden") => {
                Notification::Processing(ProcessingStatus::Forbidden)
            }
            ("processing-notification", "error") => {
                Notification::Processing(ProcessingStatus::Error)
            }
            (notification, status) => {
                return Err(ImdnError::InvalidStatus {
                    notification,
                    status: status.to_owned(),
                })
            }
        };
        set_once(&mut value, parsed, "status value")?;
    }
    Ok((value.ok_or(ImdnError::Missing("status value"))?, extensions))
}

/// Splits `s` at `separator` outside double-quoted strings (with `\` escapes); `None` for an
/// unterminated string.
fn split_unquoted(s: &str, separator: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    parts.push(&s[start..]);
    Some(parts)
}

/// RFC 3862 `NAMECHAR`: US-ASCII except `.`, controls and separators.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '!' | '#'..='\'' | '*' | '+' | '-' | '^' | '_' | '`' | '|' | '~'
        )
}

/// RFC 3862 `Token` (`1*TOKENCHAR`, which adds `.` and non-ASCII to `NAMECHAR`).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| is_name_char(c) || c == '.' || (!c.is_ascii() && !c.is_control()))
}

/// RFC 3862 `String`: a double-quoted string (escapes are not interpreted, only skipped).
fn is_quoted_string(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return false;
    };
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return false,
            c if c.is_control() => return false,
            _ => {}
        }
    }
    !escaped
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    const RFC5438_7_2_1_1_DELIVERY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
   <imdn xmlns="urn:ietf:params:xml:ns:imdn">
         <message-id>34jk324j</message-id>
         <datetime>2008-04-04T12:16:49-05:00</datetime>
        <recipient-uri>im:bob@example.com</recipient-uri>
         <original-recipient-uri
           >im:bob@example.com</original-recipient-uri>
         <delivery-notification>
            <status>
               <delivered/>
            </status>
         </delivery-notification>
       </imdn>"#;

    const RFC5438_7_2_1_2_DISPLAY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
   <imdn xmlns="urn:ietf:params:xml:ns:imdn">
         <message-id>34jk324j</message-id>
         <datetime>2008-04-04T12:16:49-05:00</datetime>
        <recipient-uri>im:bob@example.com</recipient-uri>
         <original-recipient-uri
            >im:bob@example.com</original-recipient-uri>
         <display-notification>
            <status>
               <displayed/>
            </status>
         </display-notification>
       </imdn>"#;

    const RFC5438_8_1_PROCESSING: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
   <imdn xmlns="urn:ietf:params:xml:ns:imdn">
         <message-id>34jk324j</message-id>
         <datetime>2008-04-04T12:16:49-05:00</datetime>
        <recipient-uri>im:bob@example.com</recipient-uri>
         <original-recipient-uri
            >im:bob@example.com</original-recipient-uri>
         <processing-notification>
            <status>
               <processed/>
            </status>
         </processing-notification>
       </imdn>"#;

    fn parse(s: &str) -> Result<Imdn, ImdnError> {
        Imdn::parse(s.as_bytes())
    }

    fn example(notification: Notification) -> Imdn {
        Imdn {
            message_id: "34jk324j".into(),
            datetime: "2008-04-04T12:16:49-05:00".into(),
            recipient_uri: Some("im:bob@example.com".into()),
            original_recipient_uri: Some("im:bob@example.com".into()),
            subject: None,
            notification,
            status_extensions: vec![],
            extensions: vec![],
        }
    }

    fn doc(body: &str) -> String {
        format!(r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn">{body}</imdn>"#)
    }

    #[test]
    fn rfc5438_7_2_1_1_delivery_notification_example() {
        let i = parse(RFC5438_7_2_1_1_DELIVERY).unwrap();
        assert_eq!(
            i,
            example(Notification::Delivery(DeliveryStatus::Delivered))
        );
        assert_eq!(
            i.to_xml(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>34jk324j</message-id>\
             <datetime>2008-04-04T12:16:49-05:00</datetime>\
             <recipient-uri>im:bob@example.com</recipient-uri>\
             <original-recipient-uri>im:bob@example.com</original-recipient-uri>\
             <delivery-notification><status><delivered/></status></delivery-notification></imdn>"
        );
        assert_eq!(parse(&i.to_xml()).unwrap(), i);
    }

    #[test]
    fn rfc5438_7_2_1_2_display_notification_example() {
        let i = parse(RFC5438_7_2_1_2_DISPLAY).unwrap();
        assert_eq!(i, example(Notification::Display(DisplayStatus::Displayed)));
        assert_eq!(parse(&i.to_xml()).unwrap(), i);
    }

    #[test]
    fn rfc5438_8_1_processing_notification_example() {
        let i = parse(RFC5438_8_1_PROCESSING).unwrap();
        assert_eq!(
            i,
            example(Notification::Processing(ProcessingStatus::Processed))
        );
        assert_eq!(parse(&i.to_xml()).unwrap(), i);
    }

    #[test]
    fn rfc5438_8_3_aggregated_parts() {
        // The two message/imdn+xml parts of the §8.3 multipart example.
        let delivery = RFC5438_7_2_1_1_DELIVERY;
        let display = RFC5438_7_2_1_2_DISPLAY;
        assert_eq!(
            parse(delivery).unwrap().notification,
            Notification::Delivery(DeliveryStatus::Delivered)
        );
        assert_eq!(
            parse(display).unwrap().notification,
            Notification::Display(DisplayStatus::Displayed)
        );
    }

    #[test]
    fn rfc5438_11_1_7_every_status_value() {
        let all = [
            Notification::Delivery(DeliveryStatus::Delivered),
            Notification::Delivery(DeliveryStatus::Failed),
            Notification::Delivery(DeliveryStatus::Forbidden),
            Notification::Delivery(DeliveryStatus::Error),
            Notification::Display(DisplayStatus::Displayed),
            Notification::Display(DisplayStatus::Forbidden),
            Notification::Display(DisplayStatus::Error),
            Notification::Processing(ProcessingStatus::Processed),
            Notification::Processing(ProcessingStatus::Stored),
            Notification::Processing(ProcessingStatus::Forbidden),
            Notification::Processing(ProcessingStatus::Error),
        ];
        for n in all {
            let i = example(n);
            assert_eq!(parse(&i.to_xml()).unwrap(), i);
        }
    }

    #[test]
    fn rfc5438_11_1_9_extensions_preserved() {
        let i = parse(&doc(
            r#"<message-id>m</message-id><datetime>d</datetime><subject xml:lang="en"> Hi &amp; bye </subject>
            <delivery-notification><status><failed/><x:reason xmlns:x="urn:example:x">404</x:reason></status></delivery-notification>
            <x:trace xmlns:x="urn:example:x" hop="1"/>"#,
        ))
        .unwrap();
        assert_eq!(i.subject.as_deref(), Some(" Hi & bye "));
        assert!(i.status_extensions[0].is("urn:example:x", "reason"));
        assert!(i.extensions[0].is("urn:example:x", "trace"));
        assert_eq!(parse(&i.to_xml()).unwrap(), i);
    }

    #[test]
    fn rfc5438_11_invalid_documents_rejected() {
        let status = "<delivery-notification><status><delivered/></status></delivery-notification>";
        assert_eq!(
            parse(&doc(&format!("<datetime>d</datetime>{status}"))),
            Err(ImdnError::Missing("message-id"))
        );
        assert_eq!(
            parse(&doc(&format!("<message-id>m</message-id>{status}"))),
            Err(ImdnError::Missing("datetime"))
        );
        assert_eq!(
            parse(&doc("<message-id>m</message-id><datetime>d</datetime>")),
            Err(ImdnError::Missing("notification"))
        );
        assert_eq!(
            parse(&doc(&format!(
                "<message-id>m</message-id><datetime>d</datetime>{status}{status}"
            ))),
            Err(ImdnError::Duplicate("notification"))
        );
        assert_eq!(
            parse(&doc(
                "<message-id>m</message-id><datetime>d</datetime>\
                 <delivery-notification><status><displayed/></status></delivery-notification>"
            )),
            Err(ImdnError::InvalidStatus {
                notification: "delivery-notification",
                status: "displayed".into(),
            })
        );
        assert_eq!(
            parse(&doc("<message-id>m</message-id><datetime>d</datetime>\
                 <display-notification><status/></display-notification>")),
            Err(ImdnError::Missing("status value"))
        );
        assert_eq!(
            parse(&doc("<message-id>m</message-id><datetime>d</datetime>\
                 <display-notification></display-notification>")),
            Err(ImdnError::Missing("status"))
        );
        assert_eq!(
            parse(&doc(&format!(
                "<message-id>m</message-id><datetime>d</datetime><priority>1</priority>{status}"
            ))),
            Err(ImdnError::UnexpectedElement("priority".into()))
        );
        assert!(matches!(
            parse(r#"<imdn xmlns="urn:ietf:params:xml:ns:pidf"/>"#),
            Err(ImdnError::WrongRoot { .. })
        ));
        assert!(matches!(parse("<imdn"), Err(ImdnError::Xml(_))));
    }

    #[test]
    fn rfc5438_7_1_1_3_disposition_notification_example() {
        let d = DispositionRequest::parse("positive-delivery, negative-delivery").unwrap();
        assert_eq!(
            d.requests,
            [
                NotifyRequest {
                    kind: DispositionKind::PositiveDelivery,
                    params: vec![],
                },
                NotifyRequest {
                    kind: DispositionKind::NegativeDelivery,
                    params: vec![],
                },
            ]
        );
        assert!(d.wants(&DispositionKind::PositiveDelivery));
        assert!(!d.wants(&DispositionKind::Display));
        assert_eq!(d.to_string(), "positive-delivery, negative-delivery");
    }

    #[test]
    fn rfc5438_10_disposition_notification_syntax() {
        assert_eq!(
            DispositionRequest::parse("").unwrap(),
            DispositionRequest::default()
        );
        assert_eq!(
            DispositionRequest::parse("  ").unwrap(),
            DispositionRequest::default()
        );
        let d = DispositionRequest::parse(r#"display,processing ; x=1;y="a,b;c" , x-new.kind"#)
            .unwrap();
        assert_eq!(d.requests[0].kind, DispositionKind::Display);
        assert_eq!(d.requests[1].kind, DispositionKind::Processing);
        assert_eq!(d.requests[1].params, ["x=1", r#"y="a,b;c""#]);
        assert_eq!(
            d.requests[2].kind,
            DispositionKind::Other("x-new.kind".into())
        );
        assert_eq!(
            d.to_string(),
            r#"display, processing;x=1;y="a,b;c", x-new.kind"#
        );
        assert_eq!(DispositionRequest::parse(&d.to_string()).unwrap(), d);
        for bad in [
            "display,,processing",
            "display,",
            "dis play",
            "display;x",
            "display;=1",
            r#"display;x="open"#,
            "display;x=a b",
            "<display>",
        ] {
            assert!(
                matches!(
                    DispositionRequest::parse(bad),
                    Err(ImdnError::InvalidDispositionNotification(_))
                ),
                "{bad}"
            );
        }
    }

    fn arb_kind() -> impl Strategy<Value = DispositionKind> {
        prop_oneof![
            Just(DispositionKind::PositiveDelivery),
            Just(DispositionKind::NegativeDelivery),
            Just(DispositionKind::Processing),
            Just(DispositionKind::Display),
            "x-[a-z.]{1,8}".prop_map(DispositionKind::Other),
        ]
    }

    fn arb_notification() -> impl Strategy<Value = Notification> {
        prop_oneof![
            prop_oneof![
                Just(DeliveryStatus::Delivered),
                Just(DeliveryStatus::Failed),
                Just(DeliveryStatus::Forbidden),
                Just(DeliveryStatus::Error)
            ]
            .prop_map(Notification::Delivery),
            prop_oneof![
                Just(DisplayStatus::Displayed),
                Just(DisplayStatus::Forbidden),
                Just(DisplayStatus::Error)
            ]
            .prop_map(Notification::Display),
            prop_oneof![
                Just(ProcessingStatus::Processed),
                Just(ProcessingStatus::Stored),
                Just(ProcessingStatus::Forbidden),
                Just(ProcessingStatus::Error)
            ]
            .prop_map(Notification::Processing),
        ]
    }

    proptest! {
        #[test]
        fn round_trip_generated_imdns(
            message_id in "[a-zA-Z0-9]{1,16}",
            datetime in "[0-9T:+-]{1,25}",
            recipient_uri in prop::option::of("im:[a-z]{1,8}@example\\.com"),
            original_recipient_uri in prop::option::of("sip:[a-z]{1,8}@example\\.com"),
            subject in prop::option::of("[ -~é]{0,16}"),
            notification in arb_notification(),
            status_extensions in prop::collection::vec(xml::tests::arb_element(), 0..2),
            extensions in prop::collection::vec(xml::tests::arb_element(), 0..2),
        ) {
            let i = Imdn {
                message_id,
                datetime,
                recipient_uri,
                original_recipient_uri,
                subject,
                notification,
                status_extensions,
                extensions,
            };
            prop_assert_eq!(Imdn::parse(i.to_xml().as_bytes()), Ok(i));
        }

        #[test]
        fn round_trip_generated_disposition_requests(
            requests in prop::collection::vec(
                (arb_kind(), prop::collection::vec(
                    prop_oneof!["[a-z]{1,4}=[a-z0-9]{1,4}", "[a-z]{1,4}=\"[ a-z0-9,;=]{0,6}\""],
                    0..2,
                )),
                0..4,
            ),
        ) {
            let d = DispositionRequest {
                requests: requests
                    .into_iter()
                    .map(|(kind, params)| NotifyRequest { kind, params })
                    .collect(),
            };
            prop_assert_eq!(DispositionRequest::parse(&d.to_string()), Ok(d));
        }

        #[test]
        fn disposition_parse_never_panics(s in "[ -~é]{0,40}") {
            let _ = DispositionRequest::parse(&s);
        }
    }
}
