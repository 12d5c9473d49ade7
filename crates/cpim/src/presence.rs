//! `application/pidf+xml`: the Presence Information Data Format (RFC 3863) with the parts of
//! the presence data model (RFC 4479) and of RPID (RFC 4480) that a SIP/XMPP gateway maps,
//! plus the XMPP `<show/>` element as RFC 7248 recommends.
//!
//! Size: one document model whose parser and writer must round-trip in schema order.
//!
//! [`Presence::parse`] turns a document into a [`Presence`]; [`Presence::to_xml`] writes the
//! canonical form: `<?xml version="1.0" encoding="UTF-8"?>`, `<presence>` in the default PIDF
//! namespace, `dm:` and `rpid:` prefixes declared once on the root, typed children first in
//! schema order and preserved extensions after them, no indentation. Parsing that output gives
//! back an equal model.
//!
//! # Supported
//!
//! - PIDF (RFC 3863 §4.1): `<presence entity>`, `<tuple id>` with `<status>` (`<basic>`
//!   open/closed and status extensions), `<contact priority>`, `<note xml:lang>`,
//!   `<timestamp>`; presence-level notes. Child order is not enforced.
//! - Data model (RFC 4479 §5.1.2): `<dm:person id>`, `<dm:device id>` with `<dm:deviceID>`,
//!   `<dm:note>` and `<dm:timestamp>`; `<dm:deviceID>` inside tuples.
//! - RPID (RFC 4480): `<rpid:activities>` (every §3.2 value, `<other>`, notes, `from`/`until`,
//!   activities from other namespaces) and `<rpid:user-input>` on persons, tuples and
//!   devices.
//! - XMPP availability (RFC 7248 §5.2 note 7): `<show xmlns="jabber:client">` with the RFC 6121
//!   values `away`, `chat`, `dnd`, `xa`. RFC 7248's examples put it in the tuple's `<status>`,
//!   so that is where [`Status::show`] reads and writes it; the same element directly inside a
//!   `<dm:person>` is read into [`Person::show`]. No private namespace is needed.
//! - Everything else — other RPID elements (`<mood>`, `<place-type>`, `<class>`, …),
//!   capabilities, unknown namespaces — is kept as [`Element`] extensions at the level it was
//!   found (presence, tuple, status, person, device, activities) and written back.
//!
//! # Validation
//!
//! Rejected with a typed [`PresenceError`]: anything the [`xml`] parser rejects, a
//! root other than PIDF `<presence>`, a missing or empty `entity`, a tuple, person or device
//! without `id`, two tuples with the same `id`, a tuple without `<status>`, a repeated
//! single-valued element (`<status>`, `<basic>`, `<contact>`, `<timestamp>`, `<user-input>`,
//! `<deviceID>` of a device), a `<basic>` other than `open`/`closed`, a `priority` that is not a
//! decimal number, a malformed timestamp (RFC 3339 with offset for PIDF `<timestamp>`; XML
//! Schema `dateTime` elsewhere), a bad `<user-input>`, and — by [`Presence::parse`] — a
//! preserved extension containing an element marked `mustUnderstand="true"` or `"1"`.
//!
//! Deliberately lenient: a `priority` that is a number but outside `0`–`1` or with more than
//! three decimals is ignored, as RFC 3863 §4.1.5 says (a non-number is an error); stray text
//! between structural elements is ignored; a `<show>` with a value outside RFC 6121 is kept as
//! an extension; a device without `<deviceID>` is accepted (RFC 4479 requires one).
//!
//! # Not supported
//!
//! `xml:lang` inherited from enclosing elements (only a note's own attribute is read),
//! attributes other than those named above on typed elements (dropped), comments, the `lang`
//! of `<rpid:other>`, and timestamp semantics — timestamps are checked for syntax and kept as
//! written; nothing here reads a clock.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::xml::{self, Attribute, Element, Node, XmlError, XML_NS};

/// The PIDF namespace (RFC 3863 §4.1.1).
pub const PIDF_NS: &str = "urn:ietf:params:xml:ns:pidf";
/// The presence data model namespace (RFC 4479 §5.1.2).
pub const DATA_MODEL_NS: &str = "urn:ietf:params:xml:ns:pidf:data-model";
/// The RPID namespace (RFC 4480 §3.1).
pub const RPID_NS: &str = "urn:ietf:params:xml:ns:pidf:rpid";
/// The namespace qualifying `<show/>` inside PIDF, per RFC 7248 §5.2 note 7.
pub const XMPP_SHOW_NS: &str = "jabber:client";

/// Why a document is not a presence document this module accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The body is not acceptable XML.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The root element is not `<presence>` in the PIDF namespace.
    #[error("root element {{{namespace}}}{name} is not a PIDF <presence>")]
    WrongRoot {
        /// Namespace of the root found (empty if none).
        namespace: String,
        /// Local name of the root found.
        name: String,
    },
    /// `<presence>` has no (or an empty) `entity` attribute (RFC 3863 §4.1.1).
    #[error("<presence> has no entity attribute")]
    MissingEntity,
    /// A `<tuple>`, `<person>` or `<device>` has no `id` attribute.
    #[error("<{element}> has no id attribute")]
    MissingId {
        /// The element lacking the `id`.
        element: &'static str,
    },
    /// Two tuples share an `id` (RFC 3863 §4.1.2).
    #[error("tuple id {0:?} is used twice")]
    DuplicateTupleId(String),
    /// A tuple has no `<status>` (RFC 3863 §4.1.2).
    #[error("tuple {tuple:?} has no <status>")]
    MissingStatus {
        /// The tuple's `id`.
        tuple: String,
    },
    /// A single-valued element appears twice in the same parent.
    #[error("<{element}> appears more than once")]
    Duplicate {
        /// The repeated element.
        element: &'static str,
    },
    /// `<basic>` is neither `open` nor `closed` (RFC 3863 §4.1.4).
    #[error("invalid <basic> value {0:?}")]
    InvalidBasic(String),
    /// A contact `priority` is not a decimal number (RFC 3863 §4.1.5).
    #[error("invalid contact priority {0:?}")]
    InvalidPriority(String),
    /// A timestamp, `from`, `until` or `last-input` is not a valid date-time.
    #[error("invalid timestamp {0:?}")]
    InvalidTimestamp(String),
    /// `<user-input>` is not `active`/`idle`, or its `idle-threshold` is not a positive
    /// integer (RFC 4480 §3.14).
    #[error("invalid <user-input> value {0:?}")]
    InvalidUserInput(String),
    /// A preserved extension contains an element this crate does not understand that is
    /// marked `mustUnderstand="true"` or `"1"` (RFC 3863 §4.2.3).
    #[error("element {{{namespace}}}{name} must be understood")]
    MustUnderstand {
        /// Namespace of the marked element (empty if none).
        namespace: String,
        /// Local name of the marked element.
        name: String,
    },
}

/// A PIDF presence document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Presence {
    /// The presentity URI (`entity` attribute), as written, e.g. `pres:someone@example.com`.
    pub entity: String,
    /// Service tuples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tuples: Vec<Tuple>,
    /// Notes about the presentity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    /// RFC 4479 persons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub persons: Vec<Person>,
    /// RFC 4479 devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// Other top-level children, preserved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<Element>,
}

/// A `<tuple>`: one communication service of the presentity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Tuple {
    /// The tuple `id`, unique within the document.
    pub id: String,
    /// The `<status>`.
    pub status: Status,
    /// `<dm:deviceID>` references to the devices providing this service (RFC 4479).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_ids: Vec<String>,
    /// `<rpid:user-input>` for this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_input: Option<UserInput>,
    /// The `<contact>` address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    /// Notes about this tuple.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    /// `<timestamp>`, RFC 3339 text as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Other children of the tuple, preserved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<Element>,
}

/// A tuple's `<status>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Status {
    /// `<basic>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<Basic>,
    /// XMPP `<show xmlns="jabber:client">` (RFC 7248 §5.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show: Option<Show>,
    /// Other status values, preserved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<Element>,
}

/// The `<basic>` status value (RFC 3863 §4.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basic {
    /// The service is ready to accept communication.
    Open,
    /// The service is unable to accept communication.
    Closed,
}

/// XMPP availability (`<show/>`, RFC 6121 §4.7.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Show {
    /// Temporarily away.
    Away,
    /// Actively interested in chatting.
    Chat,
    /// Do not disturb (busy).
    Dnd,
    /// Extended away.
    Xa,
}

/// A `<contact>` address with its optional priority (RFC 3863 §4.1.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Contact {
    /// The contact URI, whitespace-trimmed.
    pub uri: String,
    /// The `priority` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
}

/// A contact priority: a decimal from 0 to 1 with at most three decimals, kept in the form
/// it was written (`"0.8"`, `"1.00"`) so that it round-trips.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Priority(String);

/// A PIDF `<note>`, `<dm:note>` or `<rpid:note>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Note {
    /// The note's own `xml:lang`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// The text, as written.
    pub text: String,
}

/// An RFC 4479 `<dm:person>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Person {
    /// The person `id`.
    pub id: String,
    /// `<rpid:activities>` elements (several only when they cover different times).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activities: Vec<Activities>,
    /// `<rpid:user-input>` summarising all services and devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_input: Option<UserInput>,
    /// XMPP `<show xmlns="jabber:client">` placed directly in the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show: Option<Show>,
    /// `<dm:note>`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    /// `<dm:timestamp>`, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Other children (mood, place-type, …), preserved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<Element>,
}

/// An RFC 4479 `<dm:device>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Device {
    /// The device `id`.
    pub id: String,
    /// `<dm:deviceID>`, the device URN that tuples refer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// `<rpid:user-input>` for the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_input: Option<UserInput>,
    /// `<dm:note>`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    /// `<dm:timestamp>`, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Other children, preserved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<Element>,
}

/// One `<rpid:activities>` element (RFC 4480 §3.2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Activities {
    /// `from` attribute, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `until` attribute, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// `<rpid:note>`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
    /// The activities, in document order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Activity>,
}

/// An RPID activity (RFC 4480 §3.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // The variants are the RFC 4480 §3.2 values, named as there.
pub enum Activity {
    Appointment,
    Away,
    Breakfast,
    Busy,
    Dinner,
    Holiday,
    InTransit,
    LookingForWork,
    Lunch,
    Meal,
    Meeting,
    OnThePhone,
    Performance,
    PermanentAbsence,
    Playing,
    Presentation,
    Shopping,
    Sleeping,
    Spectator,
    Steering,
    Travel,
    Tv,
    /// The activity is not known.
    Unknown,
    Vacation,
    Working,
    Worship,
    /// `<other>`: free text.
    Other(String),
    /// An activity element from another namespace, preserved.
    Extension(Element),
}

/// `<rpid:user-input>` (RFC 4480 §3.14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct UserInput {
    /// Active or idle.
    pub state: UserInputState,
    /// `idle-threshold`, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_threshold: Option<u32>,
    /// `last-input`, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_input: Option<String>,
}

/// The value of `<rpid:user-input>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserInputState {
    /// User input within the idle threshold.
    Active,
    /// No user input for longer than the idle threshold.
    Idle,
}

impl Tuple {
    /// A tuple with only a status (`<basic>`, and the XMPP `<show/>`): what most networks
    /// publish; the other fields are filled in with struct update syntax.
    pub fn new(id: impl Into<String>, basic: Basic, show: Option<Show>) -> Tuple {
        Tuple {
            id: id.into(),
            status: Status {
                basic: Some(basic),
                show,
                extensions: Vec::new(),
            },
            device_ids: Vec::new(),
            user_input: None,
            contact: None,
            notes: Vec::new(),
            timestamp: None,
            extensions: Vec::new(),
        }
    }
}

impl Presence {
    /// The document of `entity` with this one tuple and nothing else: the one
    /// constructor of one-tuple presence (the webhook's publications, an XMPP resource's
    /// presence, a SIP user who went away).
    pub fn one_tuple(entity: impl Into<String>, tuple: Tuple) -> Presence {
        Presence {
            entity: entity.into(),
            tuples: vec![tuple],
            notes: Vec::new(),
            persons: Vec::new(),
            devices: Vec::new(),
            extensions: Vec::new(),
        }
    }

    /// Parses a PIDF document. A preserved extension containing an unknown element marked
    /// `mustUnderstand` is an error ([`PresenceError::MustUnderstand`]), so the caller can
    /// refuse the document.
    pub fn parse(input: &[u8]) -> Result<Presence, PresenceError> {
        Reader { lenient: false }.presence(xml::parse(input)?)
    }

    /// Parses a PIDF document the way RFC 3863 §4.2.3 describes: an extension containing an
    /// unknown element marked `mustUnderstand` is dropped whole (with everything in it) and the
    /// rest of the document is processed.
    pub fn parse_lenient(input: &[u8]) -> Result<Presence, PresenceError> {
        Reader { lenient: true }.presence(xml::parse(input)?)
    }

    /// The tuple that speaks for the presentity where only one can (RFC 7248 §5.3): the
    /// open (or basic-less) tuple with the highest contact priority (a tuple without one
    /// ranks below priority 0), the first among equals; else the first tuple.
    pub fn preferred_tuple(&self) -> Option<&Tuple> {
        self.tuples
            .iter()
            .enumerate()
            .filter(|(_, t)| t.status.basic != Some(Basic::Closed))
            .max_by_key(|(index, t)| {
                let priority = t
                    .contact
                    .as_ref()
                    .and_then(|c| c.priority.as_ref())
                    .map_or(-1, |p| i32::from(p.thousandths()));
                (priority, std::cmp::Reverse(*index))
            })
            .map(|(_, t)| t)
            .or_else(|| self.tuples.first())
    }

    /// The canonical document (see the [module documentation](self)).
    pub fn to_xml(&self) -> String {
        self.to_element().to_document()
    }

    /// The document's root element.
    pub fn to_element(&self) -> Element {
        let mut root = pidf("presence").with_attribute("entity", &self.entity);
        for t in &self.tuples {
            let mut status = pidf("status");
            if let Some(basic) = t.status.basic {
                status = status.with_child(pidf("basic").with_text(basic.as_str()));
            }
            if let Some(show) = t.status.show {
                status = status.with_child(show_element(show));
            }
            push_all(&mut status, &t.status.extensions);
            let mut tuple = pidf("tuple").with_attribute("id", &t.id).with_child(status);
            for id in &t.device_ids {
                tuple = tuple.with_child(dm("deviceID").with_text(id));
            }
            if let Some(u) = &t.user_input {
                tuple = tuple.with_child(u.to_element());
            }
            push_all(&mut tuple, &t.extensions);
            if let Some(c) = &t.contact {
                let mut contact = pidf("contact");
                if let Some(p) = &c.priority {
                    contact = contact.with_attribute("priority", p.as_str());
                }
                tuple = tuple.with_child(contact.with_text(&c.uri));
            }
            for n in &t.notes {
                tuple = tuple.with_child(n.to_element(pidf("note")));
            }
            if let Some(ts) = &t.timestamp {
                tuple = tuple.with_child(pidf("timestamp").with_text(ts));
            }
            root = root.with_child(tuple);
        }
        for n in &self.notes {
            root = root.with_child(n.to_element(pidf("note")));
        }
        for p in &self.persons {
            let mut person = dm("person").with_attribute("id", &p.id);
            for a in &p.activities {
                person = person.with_child(a.to_element());
            }
            if let Some(u) = &p.user_input {
                person = person.with_child(u.to_element());
            }
            if let Some(show) = p.show {
                person = person.with_child(show_element(show));
            }
            push_all(&mut person, &p.extensions);
            for n in &p.notes {
                person = person.with_child(n.to_element(dm("note")));
            }
            if let Some(ts) = &p.timestamp {
                person = person.with_child(dm("timestamp").with_text(ts));
            }
            root = root.with_child(person);
        }
        for d in &self.devices {
            let mut device = dm("device").with_attribute("id", &d.id);
            if let Some(u) = &d.user_input {
                device = device.with_child(u.to_element());
            }
            push_all(&mut device, &d.extensions);
            if let Some(id) = &d.device_id {
                device = device.with_child(dm("deviceID").with_text(id));
            }
            for n in &d.notes {
                device = device.with_child(n.to_element(dm("note")));
            }
            if let Some(ts) = &d.timestamp {
                device = device.with_child(dm("timestamp").with_text(ts));
            }
            root = root.with_child(device);
        }
        push_all(&mut root, &self.extensions);
        root
    }
}

impl Basic {
    /// The `<basic>` text: `open` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Basic::Open => "open",
            Basic::Closed => "closed",
        }
    }
}

impl Show {
    /// The `<show/>` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Show::Away => "away",
            Show::Chat => "chat",
            Show::Dnd => "dnd",
            Show::Xa => "xa",
        }
    }

    /// The value for `<show/>` text, if it is one of the four RFC 6121 values.
    pub fn from_text(text: &str) -> Option<Show> {
        match text {
            "away" => Some(Show::Away),
            "chat" => Some(Show::Chat),
            "dnd" => Some(Show::Dnd),
            "xa" => Some(Show::Xa),
            _ => None,
        }
    }
}

impl Priority {
    /// Parses the RFC 3863 `qvalue` syntax: `0`, `0.` or `0.` and up to three digits, `1`, or
    /// `1.` and up to three zeros.
    pub fn parse(text: &str) -> Result<Priority, PresenceError> {
        let invalid = || PresenceError::InvalidPriority(text.to_owned());
        let (int, fraction) = text.split_once('.').unwrap_or((text, ""));
        let valid = fraction.len() <= 3
            && match int {
                "0" => fraction.bytes().all(|b| b.is_ascii_digit()),
                "1" => fraction.bytes().all(|b| b == b'0'),
                _ => false,
            };
        if valid {
            Ok(Priority(text.to_owned()))
        } else {
            Err(invalid())
        }
    }

    /// The priority with the shortest text for `thousandths` / 1000 (`0`, `0.007`, `0.5`,
    /// `1`); `None` above 1000.
    pub fn from_thousandths(thousandths: u16) -> Option<Priority> {
        match thousandths {
            1000 => Some(Priority("1".to_owned())),
            0 => Some(Priority("0".to_owned())),
            1..=999 => {
                let digits = format!("{thousandths:03}");
                Some(Priority(format!("0.{}", digits.trim_end_matches('0'))))
            }
            _ => None,
        }
    }

    /// The priority in thousandths, 0 to 1000 (exact; no floating point).
    pub fn thousandths(&self) -> u16 {
        let (int, fraction) = self.0.split_once('.').unwrap_or((&self.0, ""));
        let mut value: u16 = if int == "1" { 1000 } else { 0 };
        for (digit, scale) in fraction.bytes().zip([100u16, 10, 1]) {
            value += u16::from(digit.saturating_sub(b'0')) * scale;
        }
        value
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Priority {
    type Error = PresenceError;

    fn try_from(text: String) -> Result<Priority, PresenceError> {
        Priority::parse(&text)
    }
}

impl From<Priority> for String {
    fn from(priority: Priority) -> String {
        priority.0
    }
}

impl Activity {
    /// The RPID element name of a predefined activity; `None` for `Other` and `Extension`.
    pub fn element_name(&self) -> Option<&'static str> {
        ACTIVITY_NAMES
            .iter()
            .find(|(_, a)| a == self)
            .map(|(name, _)| *name)
    }

    /// The predefined activity whose RPID element name is `name`.
    pub fn from_element_name(name: &str) -> Option<Activity> {
        ACTIVITY_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| a.clone())
    }
}

const ACTIVITY_NAMES: &[(&str, Activity)] = &[
    ("appointment", Activity::Appointment),
    ("away", Activity::Away),
    ("breakfast", Activity::Breakfast),
    ("busy", Activity::Busy),
    ("dinner", Activity::Dinner),
    ("holiday", Activity::Holiday),
    ("in-transit", Activity::InTransit),
    ("looking-for-work", Activity::LookingForWork),
    ("lunch", Activity::Lunch),
    ("meal", Activity::Meal),
    ("meeting", Activity::Meeting),
    ("on-the-phone", Activity::OnThePhone),
    ("performance", Activity::Performance),
    ("permanent-absence", Activity::PermanentAbsence),
    ("playing", Activity::Playing),
    ("presentation", Activity::Presentation),
    ("shopping", Activity::Shopping),
    ("sleeping", Activity::Sleeping),
    ("spectator", Activity::Spectator),
    ("steering", Activity::Steering),
    ("travel", Activity::Travel),
    ("tv", Activity::Tv),
    ("unknown", Activity::Unknown),
    ("vacation", Activity::Vacation),
    ("working", Activity::Working),
    ("worship", Activity::Worship),
];

impl Activities {
    fn to_element(&self) -> Element {
        let mut e = rpid("activities");
        if let Some(from) = &self.from {
            e = e.with_attribute("from", from);
        }
        if let Some(until) = &self.until {
            e = e.with_attribute("until", until);
        }
        for n in &self.notes {
            e = e.with_child(n.to_element(rpid("note")));
        }
        for a in &self.values {
            e = e.with_child(match (a, a.element_name()) {
                (_, Some(name)) => rpid(name),
                (Activity::Other(text), None) => rpid("other").with_text(text),
                (Activity::Extension(element), None) => element.clone(),
                // `element_name` is `None` only for `Other` and `Extension`.
                (_, None) => rpid("unknown"),
            });
        }
        e
    }
}

impl UserInput {
    fn to_element(&self) -> Element {
        let mut e = rpid("user-input");
        if let Some(t) = self.idle_threshold {
            e = e.with_attribute("idle-threshold", &t.to_string());
        }
        if let Some(last) = &self.last_input {
            e = e.with_attribute("last-input", last);
        }
        e.with_text(match self.state {
            UserInputState::Active => "active",
            UserInputState::Idle => "idle",
        })
    }
}

impl Note {
    fn from_element(e: &Element) -> Note {
        Note {
            lang: e.attribute(Some(XML_NS), "lang").map(str::to_owned),
            text: e.text(),
        }
    }

    fn to_element(&self, mut e: Element) -> Element {
        if let Some(lang) = &self.lang {
            e.attributes.push(Attribute {
                namespace: Some(XML_NS.to_owned()),
                prefix: Some("xml".to_owned()),
                name: "lang".to_owned(),
                value: lang.clone(),
            });
        }
        e.with_text(&self.text)
    }
}

fn pidf(name: &str) -> Element {
    Element::new(Some(PIDF_NS), name)
}

fn dm(name: &str) -> Element {
    Element::new(Some(DATA_MODEL_NS), name).with_prefix("dm")
}

fn rpid(name: &str) -> Element {
    Element::new(Some(RPID_NS), name).with_prefix("rpid")
}

fn show_element(show: Show) -> Element {
    Element::new(Some(XMPP_SHOW_NS), "show").with_text(show.as_str())
}

fn push_all(parent: &mut Element, children: &[Element]) {
    parent
        .children
        .extend(children.iter().cloned().map(Node::Element));
}

/// The text of a simple-valued element, trimmed of XML white space.
fn trimmed(e: &Element) -> String {
    e.text()
        .trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
        .to_owned()
}

fn set_once<T>(slot: &mut Option<T>, value: T, element: &'static str) -> Result<(), PresenceError> {
    if slot.is_some() {
        return Err(PresenceError::Duplicate { element });
    }
    *slot = Some(value);
    Ok(())
}

fn date_time(text: String, offset_required: bool) -> Result<String, PresenceError> {
    if crate::datetime::is_xsd_date_time(&text, offset_required) {
        Ok(text)
    } else {
        Err(PresenceError::InvalidTimestamp(text))
    }
}

fn required_id(e: &Element, element: &'static str) -> Result<String, PresenceError> {
    e.attribute(None, "id")
        .map(str::to_owned)
        .ok_or(PresenceError::MissingId { element })
}

/// The child elements of `e`, by value (text between them is dropped).
fn child_elements(e: Element) -> impl Iterator<Item = Element> {
    e.children.into_iter().filter_map(|n| match n {
        Node::Element(e) => Some(e),
        Node::Text(_) => None,
    })
}

/// The first element at or under `e` carrying `mustUnderstand="true"|"1"` (unqualified or in
/// the PIDF namespace, as in RFC 3863 §4.3.3).
fn must_understand(e: &Element) -> Option<&Element> {
    let marked = e.attributes.iter().any(|a| {
        a.name == "mustUnderstand"
            && matches!(a.namespace.as_deref(), None | Some(PIDF_NS))
            && matches!(a.value.trim(), "true" | "1")
    });
    if marked {
        Some(e)
    } else {
        e.child_elements().find_map(must_understand)
    }
}

struct Reader {
    lenient: bool,
}

impl Reader {
    /// Keeps `e` as an extension, unless it holds an element that must be understood.
    fn extension(&self, e: Element, out: &mut Vec<Element>) -> Result<(), PresenceError> {
        if let Some(marked) = must_understand(&e) {
            if self.lenient {
                return Ok(());
            }
            return Err(PresenceError::MustUnderstand {
                namespace: marked.namespace.clone().unwrap_or_default(),
                name: marked.name.clone(),
            });
        }
        out.push(e);
        Ok(())
    }

    fn presence(&self, root: Element) -> Result<Presence, PresenceError> {
        if !root.is(PIDF_NS, "presence") {
            return Err(PresenceError::WrongRoot {
                namespace: root.namespace.unwrap_or_default(),
                name: root.name,
            });
        }
        let entity = root
            .attribute(None, "entity")
            .filter(|e| !e.trim().is_empty())
            .ok_or(PresenceError::MissingEntity)?
            .to_owned();
        let mut presence = Presence {
            entity,
            tuples: Vec::new(),
            notes: Vec::new(),
            persons: Vec::new(),
            devices: Vec::new(),
            extensions: Vec::new(),
        };
        let mut tuple_ids = HashSet::new();
        for child in child_elements(root) {
            match (child.namespace.as_deref(), child.name.as_str()) {
                (Some(PIDF_NS), "tuple") => {
                    let tuple = self.tuple(child)?;
                    if !tuple_ids.insert(tuple.id.clone()) {
                        return Err(PresenceError::DuplicateTupleId(tuple.id));
                    }
                    presence.tuples.push(tuple);
                }
                (Some(PIDF_NS), "note") => presence.notes.push(Note::from_element(&child)),
                (Some(DATA_MODEL_NS), "person") => presence.persons.push(self.person(child)?),
                (Some(DATA_MODEL_NS), "device") => presence.devices.push(self.device(child)?),
                _ => self.extension(child, &mut presence.extensions)?,
            }
        }
        Ok(presence)
    }

    fn tuple(&self, e: Element) -> Result<Tuple, PresenceError> {
        let id = required_id(&e, "tuple")?;
        let mut status = None;
        let mut tuple = Tuple {
            id,
            status: Status::default(),
            device_ids: Vec::new(),
            user_input: None,
            contact: None,
            notes: Vec::new(),
            timestamp: None,
            extensions: Vec::new(),
        };
        for child in child_elements(e) {
            match (child.namespace.as_deref(), child.name.as_str()) {
                (Some(PIDF_NS), "status") => set_once(&mut status, self.status(child)?, "status")?,
                (Some(PIDF_NS), "contact") => {
                    set_once(&mut tuple.contact, contact(&child)?, "contact")?
                }
                (Some(PIDF_NS), "note") => tuple.notes.push(Note::from_element(&child)),
                (Some(PIDF_NS), "timestamp") => set_once(
                    &mut tuple.timestamp,
                    date_time(trimmed(&child), true)?,
                    "timestamp",
                )?,
                (Some(DATA_MODEL_NS), "deviceID") => tuple.device_ids.push(trimmed(&child)),
                (Some(RPID_NS), "user-input") => {
                    set_once(&mut tuple.user_input, user_input(&child)?, "user-input")?
                }
                _ => self.extension(child, &mut tuple.extensions)?,
            }
        }
        tuple.status = status.ok_or_else(|| PresenceError::MissingStatus {
            tuple: tuple.id.clone(),
        })?;
        Ok(tuple)
    }

    fn status(&self, e: Element) -> Result<Status, PresenceError> {
        let mut status = Status::default();
        for child in child_elements(e) {
            if child.is(PIDF_NS, "basic") {
                let basic = match trimmed(&child).as_str() {
                    "open" => Basic::Open,
                    "closed" => Basic::Closed,
                    other => return Err(PresenceError::InvalidBasic(other.to_owned())),
                };
                set_once(&mut status.basic, basic, "basic")?;
            } else if let Some(show) = show(&child).filter(|_| status.show.is_none()) {
                status.show = Some(show);
            } else {
                self.extension(child, &mut status.extensions)?;
            }
        }
        Ok(status)
    }

    fn person(&self, e: Element) -> Result<Person, PresenceError> {
        let mut person = Person {
            id: required_id(&e, "person")?,
            activities: Vec::new(),
            user_input: None,
            show: None,
            notes: Vec::new(),
            timestamp: None,
            extensions: Vec::new(),
        };
        for child in child_elements(e) {
            match (child.namespace.as_deref(), child.name.as_str()) {
                (Some(RPID_NS), "activities") => person.activities.push(self.activities(child)?),
                (Some(RPID_NS), "user-input") => {
                    set_once(&mut person.user_input, user_input(&child)?, "user-input")?
                }
                (Some(DATA_MODEL_NS), "note") => person.notes.push(Note::from_element(&child)),
                (Some(DATA_MODEL_NS), "timestamp") => set_once(
                    &mut person.timestamp,
                    date_time(trimmed(&child), false)?,
                    "timestamp",
                )?,
                _ => match show(&child).filter(|_| person.show.is_none()) {
                    Some(show) => person.show = Some(show),
                    None => self.extension(child, &mut person.extensions)?,
                },
            }
        }
        Ok(person)
    }

    fn device(&self, e: Element) -> Result<Device, PresenceError> {
        let mut device = Device {
            id: required_id(&e, "device")?,
            device_id: None,
            user_input: None,
            notes: Vec::new(),
            timestamp: None,
            extensions: Vec::new(),
        };
        for child in child_elements(e) {
            match (child.namespace.as_deref(), child.name.as_str()) {
                (Some(DATA_MODEL_NS), "deviceID") => {
                    set_once(&mut device.device_id, trimmed(&child), "deviceID")?
                }
                (Some(RPID_NS), "user-input") => {
                    set_once(&mut device.user_input, user_input(&child)?, "user-input")?
                }
                (Some(DATA_MODEL_NS), "note") => device.notes.push(Note::from_element(&child)),
                (Some(DATA_MODEL_NS), "timestamp") => set_once(
                    &mut device.timestamp,
                    date_time(trimmed(&child), false)?,
                    "timestamp",
                )?,
                _ => self.extension(child, &mut device.extensions)?,
            }
        }
        Ok(device)
    }

    fn activities(&self, e: Element) -> Result<Activities, PresenceError> {
        let mut activities = Activities {
            from: e
                .attribute(None, "from")
                .map(|t| date_time(t.to_owned(), false))
                .transpose()?,
            until: e
                .attribute(None, "until")
                .map(|t| date_time(t.to_owned(), false))
                .transpose()?,
            ..Activities::default()
        };
        for child in child_elements(e) {
            let known = child
                .namespace
                .as_deref()
                .filter(|ns| *ns == RPID_NS)
                .and_then(|_| match child.name.as_str() {
                    "note" => None,
                    "other" => Some(Activity::Other(child.text())),
                    name => Activity::from_element_name(name),
                });
            if let Some(activity) = known {
                activities.values.push(activity);
            } else if child.is(RPID_NS, "note") {
                activities.notes.push(Note::from_element(&child));
            } else {
                let mut kept = Vec::new();
                self.extension(child, &mut kept)?;
                activities
                    .values
                    .extend(kept.into_iter().map(Activity::Extension));
            }
        }
        Ok(activities)
    }
}

fn show(e: &Element) -> Option<Show> {
    if e.is(XMPP_SHOW_NS, "show") && e.attributes.is_empty() {
        Show::from_text(&trimmed(e))
    } else {
        None
    }
}

fn contact(e: &Element) -> Result<Contact, PresenceError> {
    let priority = match e.attribute(None, "priority") {
        None => None,
        Some(text) => match Priority::parse(text) {
            Ok(p) => Some(p),
            // RFC 3863 §4.1.5: an out-of-range value is ignored; a non-number is an error.
            Err(_) if is_decimal(text) => None,
            Err(error) => return Err(error),
        },
    };
    Ok(Contact {
        uri: trimmed(e),
        priority,
    })
}

/// XML Schema `decimal` lexical form: optional sign, digits with an optional point.
fn is_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (int, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    !(int.is_empty() && fraction.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

fn user_input(e: &Element) -> Result<UserInput, PresenceError> {
    let text = trimmed(e);
    let state = match text.as_str() {
        "active" => UserInputState::Active,
        "idle" => UserInputState::Idle,
        _ => return Err(PresenceError::InvalidUserInput(text)),
    };
    let idle_threshold = match e.attribute(None, "idle-threshold") {
        None => None,
        Some(t) => Some(
            t.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| PresenceError::InvalidUserInput(t.to_owned()))?,
        ),
    };
    let last_input = e
        .attribute(None, "last-input")
        .map(|t| date_time(t.to_owned(), false))
        .transpose()?;
    Ok(UserInput {
        state,
        idle_threshold,
        last_input,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn one_tuple_presence_has_that_tuple_only_and_round_trips() {
        let p = Presence::one_tuple(
            "sip:alice@sip.test",
            Tuple {
                notes: vec![Note {
                    lang: None,
                    text: "out".into(),
                }],
                ..Tuple::new("gw", Basic::Closed, Some(Show::Xa))
            },
        );
        assert_eq!(p.entity, "sip:alice@sip.test");
        assert_eq!(p.tuples.len(), 1);
        let t = &p.tuples[0];
        assert_eq!(
            (t.id.as_str(), t.status.basic, t.status.show),
            ("gw", Some(Basic::Closed), Some(Show::Xa))
        );
        assert!(p.notes.is_empty() && p.persons.is_empty() && p.devices.is_empty());
        let xml = p.to_xml();
        assert!(
            xml.contains("<tuple id=\"gw\"><status><basic>closed</basic>"),
            "{xml}"
        );
        assert_eq!(Presence::parse(xml.as_bytes()).unwrap(), p);
    }

    fn parse(s: &str) -> Result<Presence, PresenceError> {
        Presence::parse(s.as_bytes())
    }

    /// Parses, writes canonically, parses again, and checks both models are equal.
    fn round_trip(s: &str) -> Presence {
        let first = parse(s).unwrap();
        let written = first.to_xml();
        let second = parse(&written).unwrap_or_else(|e| panic!("{e}: {written}"));
        assert_eq!(first, second, "{written}");
        first
    }

    fn note(lang: Option<&str>, text: &str) -> Note {
        Note {
            lang: lang.map(str::to_owned),
            text: text.to_owned(),
        }
    }

    fn priority(text: &str) -> Option<Priority> {
        Some(Priority::parse(text).unwrap())
    }

    const RFC3863_4_2_2_PREFIXED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
   <impp:presence xmlns:impp="urn:ietf:params:xml:ns:pidf"
       entity="pres:someone@example.com">
     <impp:tuple id="sg89ae">
       <impp:status>
         <impp:basic>open</impp:basic>
       </impp:status>
       <impp:contact priority="0.8">tel:+09012345678</impp:contact>
     </impp:tuple>
   </impp:presence>"#;

    const RFC3863_4_2_2_DEFAULT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
   <presence xmlns="urn:ietf:params:xml:ns:pidf"
       entity="pres:someone@example.com">
     <tuple id="sg89ae">
       <status>
         <basic>open</basic>
       </status>
       <contact priority="0.8">tel:+09012345678</contact>
     </tuple>
   </presence>"#;

    const RFC3863_4_2_4: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
   <presence xmlns="urn:ietf:params:xml:ns:pidf"
       xmlns:local="urn:example-com:pidf-status-type"
       entity="pres:someone@example.com">
     <tuple id="ub93s3">
       <status>
         <basic>open</basic>
         <local:location>home</local:location>
       </status>
       <contact>im:someone@example.com</contact>
     </tuple>
   </presence>"#;

    const RFC3863_4_3_1: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
   <presence xmlns="urn:ietf:params:xml:ns:pidf"
        xmlns:im="urn:ietf:params:xml:ns:pidf:im"
        xmlns:myex="http://id.example.com/presence/"
        entity="pres:someone@example.com">
     <tuple id="bs35r9">
       <status>
         <basic>open</basic>
         <im:im>busy</im:im>
         <myex:location>home</myex:location>
       </status>
       <contact priority="0.8">im:someone@mobilecarrier.net</contact>
       <note xml:lang="en">Don't Disturb Please!</note>
       <note xml:lang="fr">Ne derangez pas, s'il vous plait</note>
       <timestamp>2001-10-27T16:49:29Z</timestamp>
     </tuple>
     <tuple id="eg92n8">
       <status>
         <basic>open</basic>
       </status>
       <contact priority="1.0">mailto:someone@example.com</contact>
     </tuple>
     <note>I'll be in Tokyo next week</note>
   </presence>"#;

    const RFC3863_4_3_2: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
   <impp:presence xmlns:impp="urn:ietf:params:xml:ns:pidf"
        xmlns:myex="http://id.example.com/presence/"
        entity="pres:someone@example.com">
     <impp:tuple id="ck38g9">
       <impp:status>
         <impp:basic>open</impp:basic>
       </impp:status>
       <myex:mytupletag>Extended value in tuple</myex:mytupletag>
       <impp:contact priority="0.65">tel:+09012345678</impp:contact>
     </impp:tuple>
     <impp:tuple id="md66je">
       <impp:status>
         <impp:basic>open</impp:basic>
       </impp:status>
       <impp:contact priority="1.0">
          im:someone@mobilecarrier.net</impp:contact>
     </impp:tuple>
     <myex:mytag>My extended presentity information</myex:mytag>
   </impp:presence>"#;

    const RFC3863_4_3_3: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
   <impp:presence xmlns:impp="urn:ietf:params:xml:ns:pidf"
        xmlns:myex="http://id.mycompany.com/presence/"
        entity="pres:someone@example.com">
     <impp:tuple id="tj25ds">
       <impp:status>
         <impp:basic>open</impp:basic>
       </impp:status>
       <myex:complexExtension>
         <myex:ex1 impp:mustUnderstand="1">val1</myex:ex1>
         <myex:ex2>val2</myex:ex2>
       </myex:complexExtension>
       <impp:contact priority="0.725">tel:+09012345678</impp:contact>
     </impp:tuple>
     <myex:mytag>My extended presentity information</myex:mytag>
   </impp:presence>"#;

    const RFC4480_4: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
      <presence xmlns="urn:ietf:params:xml:ns:pidf"
        xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
        xmlns:lt="urn:ietf:params:xml:ns:location-type"
        xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
        entity="pres:someone@example.com">

     <tuple id="bs35r9">
       <status>
         <basic>open</basic>
       </status>
       <dm:deviceID>urn:device:0003ba4811e3</dm:deviceID>
       <rpid:relationship><rpid:self/></rpid:relationship>
       <rpid:service-class><rpid:electronic/></rpid:service-class>
       <contact priority="0.8">im:someone@mobile.example.net</contact>
       <note xml:lang="en">Don't Disturb Please!</note>
       <note xml:lang="fr">Ne derangez pas, s'il vous plait</note>
       <timestamp>2005-10-27T16:49:29Z</timestamp>
     </tuple>

     <tuple id="ty4658">
       <status>
         <basic>open</basic>
       </status>
       <rpid:relationship><rpid:assistant/></rpid:relationship>
       <contact priority="1.0">mailto:secretary@example.com</contact>
     </tuple>

     <tuple id="eg92n8">
       <status>
         <basic>open</basic>
       </status>
       <dm:deviceID>urn:x-mac:0003ba4811e3</dm:deviceID>
       <rpid:class>email</rpid:class>
       <rpid:service-class><rpid:electronic/></rpid:service-class>
       <rpid:status-icon>http://example.com/mail.png</rpid:status-icon>
       <contact priority="1.0">mailto:someone@example.com</contact>
     </tuple>

     <note>I'll be in Tokyo next week</note>

     <dm:device id="pc147">
       <rpid:user-input idle-threshold="600"
         last-input="2004-10-21T13:20:00-05:00">idle</rpid:user-input>
       <dm:deviceID>urn:device:0003ba4811e3</dm:deviceID>
       <dm:note>PC</dm:note>
     </dm:device>

     <dm:person id="p1">
       <rpid:activities from="2005-05-30T12:00:00+05:00"
          until="2005-05-30T17:00:00+05:00">
          <rpid:note>Far away</rpid:note>
          <rpid:away/>
       </rpid:activities>
       <rpid:class>calendar</rpid:class>
       <rpid:mood>
         <rpid:angry/>
         <rpid:other>brooding</rpid:other>
       </rpid:mood>
       <rpid:place-is>
          <rpid:audio>
             <rpid:noisy/>
          </rpid:audio>
       </rpid:place-is>
       <rpid:place-type><lt:residence/></rpid:place-type>
       <rpid:privacy><rpid:unknown/></rpid:privacy>
       <rpid:sphere>bowling league</rpid:sphere>
       <rpid:status-icon>http://example.com/play.gif</rpid:status-icon>

       <rpid:time-offset>-240</rpid:time-offset>
       <dm:note>Scoring 120</dm:note>
       <dm:timestamp>2005-05-30T16:09:44+05:00</dm:timestamp>
     </dm:person>
   </presence>"#;

    /// RFC 4479 §7 example as printed: its `<presence>` has no `entity` attribute.
    const RFC4479_7: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
   <presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:rp="urn:ietf:params:xml:ns:pidf:rpid"
    xmlns:caps="urn:ietf:params:xml:ns:pidf:caps"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
    <tuple id="sg89ae">
     <status>
      <basic>open</basic>
     </status>
     <dm:deviceID>mac:8asd7d7d70</dm:deviceID>
     <caps:servcaps>
      <caps:extensions>
       <caps:supported>
        <caps:pref/>
       </caps:supported>
      </caps:extensions>
      <caps:methods>
       <caps:supported>
        <caps:MESSAGE/>
        <caps:OPTIONS/>
       </caps:supported>
      </caps:methods>
     </caps:servcaps>
     <contact>sip:someone@example.com</contact>
    </tuple>
    <dm:person id="p1">
     <rp:activities>
      <rp:on-the-phone/>
     </rp:activities>
    </dm:person>
    <dm:device id="pc122">
     <rp:user-input>idle</rp:user-input>
     <dm:deviceID>mac:8asd7d7d70</dm:deviceID>
    </dm:device>
   </presence>"#;

    const RFC7248_5_2_EXAMPLE_18: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
  <presence xmlns='urn:ietf:params:xml:ns:pidf'
            entity='pres:juliet@example.com'>
    <tuple id='ID-balcony'>
      <status>
        <basic>open</basic>
        <show xmlns='jabber:client'>away</show>
      </status>
    </tuple>
  </presence>"#;

    const RFC7248_5_3_EXAMPLE_19: &str = r#"<?xml version='1.0' encoding='UTF-8'?>
  <presence xmlns='urn:ietf:params:xml:ns:pidf'
            entity='pres:romeo@example.net'>
    <tuple id='ID-orchard'>
      <status>
        <basic>closed</basic>
      </status>
    </tuple>
  </presence>"#;

    #[test]
    fn rfc3863_4_2_2_prefixed_and_default_namespace_examples() {
        let prefixed = round_trip(RFC3863_4_2_2_PREFIXED);
        let default = round_trip(RFC3863_4_2_2_DEFAULT);
        assert_eq!(prefixed, default);
        assert_eq!(
            prefixed,
            Presence {
                entity: "pres:someone@example.com".into(),
                tuples: vec![Tuple {
                    id: "sg89ae".into(),
                    status: Status {
                        basic: Some(Basic::Open),
                        ..Status::default()
                    },
                    device_ids: vec![],
                    user_input: None,
                    contact: Some(Contact {
                        uri: "tel:+09012345678".into(),
                        priority: priority("0.8"),
                    }),
                    notes: vec![],
                    timestamp: None,
                    extensions: vec![],
                }],
                notes: vec![],
                persons: vec![],
                devices: vec![],
                extensions: vec![],
            }
        );
    }

    #[test]
    fn rfc3863_4_1_canonical_output() {
        assert_eq!(
            parse(RFC3863_4_2_2_PREFIXED).unwrap().to_xml(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"pres:someone@example.com\">\
             <tuple id=\"sg89ae\"><status><basic>open</basic></status>\
             <contact priority=\"0.8\">tel:+09012345678</contact></tuple></presence>"
        );
    }

    #[test]
    fn rfc3863_4_2_4_status_value_extension() {
        let p = round_trip(RFC3863_4_2_4);
        let status = &p.tuples[0].status;
        assert_eq!(status.basic, Some(Basic::Open));
        assert_eq!(status.extensions.len(), 1);
        assert!(status.extensions[0].is("urn:example-com:pidf-status-type", "location"));
        assert_eq!(status.extensions[0].text(), "home");
        assert_eq!(p.tuples[0].contact.as_ref().unwrap().priority, None);
    }

    #[test]
    fn rfc3863_4_3_1_basic_example() {
        let p = round_trip(RFC3863_4_3_1);
        assert_eq!(p.entity, "pres:someone@example.com");
        assert_eq!(p.tuples.len(), 2);
        let t = &p.tuples[0];
        assert_eq!(t.id, "bs35r9");
        assert_eq!(t.status.basic, Some(Basic::Open));
        let names: Vec<_> = t
            .status
            .extensions
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["im", "location"]);
        assert_eq!(
            t.contact,
            Some(Contact {
                uri: "im:someone@mobilecarrier.net".into(),
                priority: priority("0.8"),
            })
        );
        assert_eq!(
            t.notes,
            [
                note(Some("en"), "Don't Disturb Please!"),
                note(Some("fr"), "Ne derangez pas, s'il vous plait"),
            ]
        );
        assert_eq!(t.timestamp.as_deref(), Some("2001-10-27T16:49:29Z"));
        let t2 = &p.tuples[1];
        assert_eq!(t2.contact.as_ref().unwrap().priority, priority("1.0"));
        assert_eq!(p.notes, [note(None, "I'll be in Tokyo next week")]);
    }

    #[test]
    fn rfc3863_4_3_2_other_extension_elements() {
        let p = round_trip(RFC3863_4_3_2);
        assert!(p.tuples[0].extensions[0].is("http://id.example.com/presence/", "mytupletag"));
        assert_eq!(p.tuples[0].extensions[0].prefix.as_deref(), Some("myex"));
        assert_eq!(
            p.tuples[1].contact.as_ref().unwrap().uri,
            "im:someone@mobilecarrier.net"
        );
        assert_eq!(p.extensions.len(), 1);
        assert_eq!(p.extensions[0].text(), "My extended presentity information");
        // The prefix is used with one namespace throughout, so it is declared once on the root.
        let written = p.to_xml();
        assert!(
            written.contains(
                "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
                 xmlns:myex=\"http://id.example.com/presence/\" entity="
            ),
            "{written}"
        );
        assert!(written.contains("<myex:mytag>My extended presentity information</myex:mytag>"));
    }

    #[test]
    fn rfc3863_4_3_3_must_understand_rejected_by_parse() {
        assert_eq!(
            parse(RFC3863_4_3_3),
            Err(PresenceError::MustUnderstand {
                namespace: "http://id.mycompany.com/presence/".into(),
                name: "ex1".into(),
            })
        );
    }

    #[test]
    fn rfc3863_4_3_3_must_understand_ignored_by_parse_lenient() {
        let p = Presence::parse_lenient(RFC3863_4_3_3.as_bytes()).unwrap();
        assert!(p.tuples[0].extensions.is_empty());
        assert_eq!(
            p.tuples[0].contact.as_ref().unwrap().priority,
            priority("0.725")
        );
        assert_eq!(p.extensions.len(), 1);
        assert_eq!(parse(&p.to_xml()).unwrap(), p);
    }

    #[test]
    fn rfc3863_4_2_3_must_understand_true_and_unqualified() {
        let doc = |attr: &str| {
            format!(
                r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b">
                <tuple id="t"><status><x:e xmlns:x="urn:x" {attr}/></status></tuple></presence>"#
            )
        };
        for attr in [r#"mustUnderstand="true""#, r#"mustUnderstand="1""#] {
            assert!(matches!(
                parse(&doc(attr)),
                Err(PresenceError::MustUnderstand { .. })
            ));
        }
        for attr in [r#"mustUnderstand="false""#, r#"mustUnderstand="0""#, ""] {
            assert_eq!(
                parse(&doc(attr)).unwrap().tuples[0].status.extensions.len(),
                1
            );
        }
    }

    #[test]
    fn rfc3863_4_1_5_priority_not_a_number_rejected() {
        let doc = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b">
            <tuple id="t"><status><basic>open</basic></status>
            <contact priority="high">sip:a@b</contact></tuple></presence>"#;
        assert_eq!(
            parse(doc),
            Err(PresenceError::InvalidPriority("high".into()))
        );
    }

    #[test]
    fn rfc3863_4_1_5_priority_out_of_range_ignored() {
        for value in ["1.5", "0.1234", "-0.5", "2"] {
            let doc = format!(
                r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b">
                <tuple id="t"><status><basic>open</basic></status>
                <contact priority="{value}">sip:a@b</contact></tuple></presence>"#
            );
            let p = parse(&doc).unwrap();
            assert_eq!(
                p.tuples[0].contact.as_ref().unwrap().priority,
                None,
                "{value}"
            );
        }
    }

    #[test]
    fn rfc3863_4_1_5_priority_values() {
        for (text, thousandths) in [
            ("0", 0),
            ("0.021", 21),
            ("0.5", 500),
            ("1.00", 1000),
            ("0.", 0),
        ] {
            assert_eq!(Priority::parse(text).unwrap().thousandths(), thousandths);
        }
        for bad in ["", ".5", "00.5", "1.001", "0.1234", "+0.5", "1e0"] {
            assert!(Priority::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Priority::from_thousandths(7).unwrap().as_str(), "0.007");
        assert_eq!(Priority::from_thousandths(500).unwrap().as_str(), "0.5");
        assert_eq!(Priority::from_thousandths(1000).unwrap().as_str(), "1");
        assert_eq!(Priority::from_thousandths(1001), None);
    }

    #[test]
    fn rfc3863_4_1_1_wrong_root_rejected() {
        assert_eq!(
            parse(r#"<presence xmlns="jabber:client"/>"#),
            Err(PresenceError::WrongRoot {
                namespace: "jabber:client".into(),
                name: "presence".into(),
            })
        );
        assert!(matches!(
            parse(r#"<presense xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b"/>"#),
            Err(PresenceError::WrongRoot { .. })
        ));
    }

    #[test]
    fn rfc3863_4_1_1_missing_entity_rejected() {
        assert_eq!(
            parse(r#"<presence xmlns="urn:ietf:params:xml:ns:pidf"/>"#),
            Err(PresenceError::MissingEntity)
        );
        assert_eq!(
            parse(r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity=" "/>"#),
            Err(PresenceError::MissingEntity)
        );
    }

    #[test]
    fn rfc3863_4_1_2_tuple_errors_rejected() {
        let doc = |tuples: &str| {
            format!(
                r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b">{tuples}</presence>"#
            )
        };
        assert_eq!(
            parse(&doc("<tuple><status><basic>open</basic></status></tuple>")),
            Err(PresenceError::MissingId { element: "tuple" })
        );
        assert_eq!(
            parse(&doc(r#"<tuple id="t"><contact>sip:a@b</contact></tuple>"#)),
            Err(PresenceError::MissingStatus { tuple: "t".into() })
        );
        assert_eq!(
            parse(&doc(
                r#"<tuple id="t"><status/></tuple><tuple id="t"><status/></tuple>"#
            )),
            Err(PresenceError::DuplicateTupleId("t".into()))
        );
        assert_eq!(
            parse(&doc(r#"<tuple id="t"><status/><status/></tuple>"#)),
            Err(PresenceError::Duplicate { element: "status" })
        );
    }

    #[test]
    fn rfc3863_4_1_4_bad_basic_rejected() {
        let doc = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b">
            <tuple id="t"><status><basic>away</basic></status></tuple></presence>"#;
        assert_eq!(parse(doc), Err(PresenceError::InvalidBasic("away".into())));
    }

    #[test]
    fn rfc3863_4_1_7_bad_timestamp_rejected() {
        for ts in ["2001-10-27t16:49:29z", "2001-10-27T16:49:29", "yesterday"] {
            let doc = format!(
                r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b">
                <tuple id="t"><status/><timestamp>{ts}</timestamp></tuple></presence>"#
            );
            assert_eq!(parse(&doc), Err(PresenceError::InvalidTimestamp(ts.into())));
        }
    }

    #[test]
    fn rfc3863_4_1_not_well_formed_rejected() {
        assert!(matches!(
            parse(r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b"><tuple>"#),
            Err(PresenceError::Xml(_))
        ));
        assert!(matches!(
            parse("not xml at all"),
            Err(PresenceError::Xml(_))
        ));
    }

    #[test]
    fn rfc4480_4_example() {
        let p = round_trip(RFC4480_4);
        assert_eq!(p.tuples.len(), 3);
        assert_eq!(p.tuples[0].device_ids, ["urn:device:0003ba4811e3"]);
        assert_eq!(p.tuples[0].extensions.len(), 2); // relationship, service-class
        assert_eq!(p.tuples[2].extensions.len(), 3); // class, service-class, status-icon
        assert_eq!(p.notes, [note(None, "I'll be in Tokyo next week")]);
        assert_eq!(
            p.devices,
            [Device {
                id: "pc147".into(),
                device_id: Some("urn:device:0003ba4811e3".into()),
                user_input: Some(UserInput {
                    state: UserInputState::Idle,
                    idle_threshold: Some(600),
                    last_input: Some("2004-10-21T13:20:00-05:00".into()),
                }),
                notes: vec![note(None, "PC")],
                timestamp: None,
                extensions: vec![],
            }]
        );
        let person = &p.persons[0];
        assert_eq!(person.id, "p1");
        assert_eq!(
            person.activities,
            [Activities {
                from: Some("2005-05-30T12:00:00+05:00".into()),
                until: Some("2005-05-30T17:00:00+05:00".into()),
                notes: vec![note(None, "Far away")],
                values: vec![Activity::Away],
            }]
        );
        let kept: Vec<_> = person.extensions.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            kept,
            [
                "class",
                "mood",
                "place-is",
                "place-type",
                "privacy",
                "sphere",
                "status-icon",
                "time-offset"
            ]
        );
        assert_eq!(person.notes, [note(None, "Scoring 120")]);
        assert_eq!(
            person.timestamp.as_deref(),
            Some("2005-05-30T16:09:44+05:00")
        );
    }

    #[test]
    fn rfc4480_3_2_activities_example() {
        let doc = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf"
            xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="pres:a@b">
            <dm:person id="p"><activities xmlns="urn:ietf:params:xml:ns:pidf:rpid">
              <note>Enjoying the morning paper</note>
              <vacation/>
              <breakfast/>
              <other>reading</other>
              <x:knitting xmlns:x="urn:example:hobby"/>
            </activities></dm:person></presence>"#;
        let p = round_trip(doc);
        let a = &p.persons[0].activities[0];
        assert_eq!(a.notes, [note(None, "Enjoying the morning paper")]);
        assert_eq!(
            a.values[..3],
            [
                Activity::Vacation,
                Activity::Breakfast,
                Activity::Other("reading".into())
            ]
        );
        assert!(matches!(&a.values[3], Activity::Extension(e) if e.name == "knitting"));
    }

    #[test]
    fn rfc4480_3_2_every_activity_round_trips() {
        for (name, activity) in ACTIVITY_NAMES {
            assert_eq!(activity.element_name(), Some(*name));
            assert_eq!(Activity::from_element_name(name).as_ref(), Some(activity));
        }
        assert_eq!(ACTIVITY_NAMES.len(), 26);
    }

    #[test]
    fn rfc4480_3_14_user_input_errors_rejected() {
        let doc = |ui: &str| {
            format!(
                r#"<presence xmlns="urn:ietf:params:xml:ns:pidf"
                xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
                xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="pres:a@b">
                <dm:device id="d">{ui}<dm:deviceID>urn:x</dm:deviceID></dm:device></presence>"#
            )
        };
        assert_eq!(
            parse(&doc("<rpid:user-input>asleep</rpid:user-input>")),
            Err(PresenceError::InvalidUserInput("asleep".into()))
        );
        assert_eq!(
            parse(&doc(
                r#"<rpid:user-input idle-threshold="0">idle</rpid:user-input>"#
            )),
            Err(PresenceError::InvalidUserInput("0".into()))
        );
        assert_eq!(
            parse(&doc(
                r#"<rpid:user-input last-input="soon">idle</rpid:user-input>"#
            )),
            Err(PresenceError::InvalidTimestamp("soon".into()))
        );
        assert_eq!(
            parse(&doc("<rpid:user-input>active</rpid:user-input>"))
                .unwrap()
                .devices[0]
                .user_input
                .as_ref()
                .unwrap()
                .state,
            UserInputState::Active
        );
    }

    #[test]
    fn rfc4479_5_1_2_person_and_device_need_id() {
        let doc = |inner: &str| {
            format!(
                r#"<presence xmlns="urn:ietf:params:xml:ns:pidf"
                xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="pres:a@b">{inner}</presence>"#
            )
        };
        assert_eq!(
            parse(&doc("<dm:person/>")),
            Err(PresenceError::MissingId { element: "person" })
        );
        assert_eq!(
            parse(&doc("<dm:device/>")),
            Err(PresenceError::MissingId { element: "device" })
        );
    }

    #[test]
    fn rfc4479_7_example_lacks_entity() {
        assert_eq!(parse(RFC4479_7), Err(PresenceError::MissingEntity));
        let fixed = RFC4479_7.replace(
            "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"",
            "<presence entity=\"pres:someone@example.com\" xmlns=\"urn:ietf:params:xml:ns:pidf\"",
        );
        let p = round_trip(&fixed);
        assert_eq!(p.tuples[0].device_ids, ["mac:8asd7d7d70"]);
        assert!(p.tuples[0].extensions[0].is("urn:ietf:params:xml:ns:pidf:caps", "servcaps"));
        assert_eq!(p.persons[0].activities[0].values, [Activity::OnThePhone]);
        assert_eq!(p.devices[0].device_id.as_deref(), Some("mac:8asd7d7d70"));
        assert_eq!(
            p.devices[0].user_input.as_ref().unwrap().state,
            UserInputState::Idle
        );
    }

    #[test]
    fn rfc7248_5_2_show_in_status() {
        let p = round_trip(RFC7248_5_2_EXAMPLE_18);
        assert_eq!(p.tuples[0].id, "ID-balcony");
        assert_eq!(p.tuples[0].status.basic, Some(Basic::Open));
        assert_eq!(p.tuples[0].status.show, Some(Show::Away));
        assert!(p.to_xml().contains(
            "<status><basic>open</basic><show xmlns=\"jabber:client\">away</show></status>"
        ));
    }

    #[test]
    fn rfc7248_5_3_closed_tuple() {
        let p = round_trip(RFC7248_5_3_EXAMPLE_19);
        assert_eq!(p.tuples[0].status.basic, Some(Basic::Closed));
        assert_eq!(p.tuples[0].status.show, None);
    }

    #[test]
    fn rfc7248_5_2_show_in_person_and_unknown_show_kept() {
        let doc = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf"
            xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="pres:a@b">
            <tuple id="t"><status><show xmlns="jabber:client">sleepy</show></status></tuple>
            <dm:person id="p"><show xmlns="jabber:client">dnd</show></dm:person></presence>"#;
        let p = round_trip(doc);
        assert_eq!(p.tuples[0].status.show, None);
        assert_eq!(p.tuples[0].status.extensions[0].text(), "sleepy");
        assert_eq!(p.persons[0].show, Some(Show::Dnd));
    }

    #[test]
    fn serde_json_skips_empty_fields() {
        let p = parse(RFC7248_5_2_EXAMPLE_18).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"entity":"pres:juliet@example.com","tuples":[{"id":"ID-balcony","status":{"basic":"open","show":"away"}}]}"#
        );
        assert_eq!(serde_json::from_str::<Presence>(&json).unwrap(), p);
        assert!(serde_json::from_str::<Priority>("\"7\"").is_err());
    }

    // Generators for the round-trip property.

    fn arb_note() -> impl Strategy<Value = Note> {
        (prop::option::of("(en|fr|de-CH)"), "[ -~é\n]{0,16}")
            .prop_map(|(lang, text)| Note { lang, text })
    }

    fn arb_timestamp() -> impl Strategy<Value = String> {
        (
            1970u32..2100,
            1u32..=12,
            1u32..=28,
            0u32..24,
            0u32..60,
            0u32..60,
            prop::bool::ANY,
        )
            .prop_map(|(y, mo, d, h, mi, s, z)| {
                let offset = if z { "Z" } else { "+05:30" };
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{offset}")
            })
    }

    fn arb_extensions() -> impl Strategy<Value = Vec<Element>> {
        prop::collection::vec(xml::tests::arb_element(), 0..2)
    }

    fn arb_user_input() -> impl Strategy<Value = UserInput> {
        (
            prop::bool::ANY,
            prop::option::of(1u32..100_000),
            prop::option::of(arb_timestamp()),
        )
            .prop_map(|(active, idle_threshold, last_input)| UserInput {
                state: if active {
                    UserInputState::Active
                } else {
                    UserInputState::Idle
                },
                idle_threshold,
                last_input,
            })
    }

    fn arb_show() -> impl Strategy<Value = Show> {
        prop_oneof![
            Just(Show::Away),
            Just(Show::Chat),
            Just(Show::Dnd),
            Just(Show::Xa)
        ]
    }

    fn arb_tuple() -> impl Strategy<Value = Tuple> {
        (
            (
                prop::option::of(prop_oneof![Just(Basic::Open), Just(Basic::Closed)]),
                prop::option::of(arb_show()),
                arb_extensions(),
            ),
            prop::collection::vec("urn:device:[0-9a-f]{4}", 0..2),
            prop::option::of(arb_user_input()),
            prop::option::of((
                "(sip|im|tel):[a-z0-9+]{1,8}@?[a-z.]{0,8}",
                prop::option::of(0u16..=1000),
            )),
            prop::collection::vec(arb_note(), 0..2),
            prop::option::of(arb_timestamp()),
            arb_extensions(),
        )
            .prop_map(
                |(
                    (basic, show, status_ext),
                    device_ids,
                    user_input,
                    contact,
                    notes,
                    timestamp,
                    extensions,
                )| {
                    Tuple {
                        id: String::new(),
                        status: Status {
                            basic,
                            show,
                            extensions: status_ext,
                        },
                        device_ids,
                        user_input,
                        contact: contact.map(|(uri, p)| Contact {
                            uri,
                            priority: p.and_then(Priority::from_thousandths),
                        }),
                        notes,
                        timestamp,
                        extensions,
                    }
                },
            )
    }

    fn arb_activity() -> impl Strategy<Value = Activity> {
        prop_oneof![
            (0..ACTIVITY_NAMES.len()).prop_map(|i| ACTIVITY_NAMES[i].1.clone()),
            "[ -~]{0,10}".prop_map(Activity::Other),
            xml::tests::arb_element().prop_map(Activity::Extension),
        ]
    }

    fn arb_person() -> impl Strategy<Value = Person> {
        (
            "p[0-9]{1,3}",
            prop::collection::vec(
                (
                    prop::option::of(arb_timestamp()),
                    prop::option::of(arb_timestamp()),
                    prop::collection::vec(arb_note(), 0..2),
                    prop::collection::vec(arb_activity(), 0..3),
                )
                    .prop_map(|(from, until, notes, values)| Activities {
                        from,
                        until,
                        notes,
                        values,
                    }),
                0..2,
            ),
            prop::option::of(arb_user_input()),
            prop::option::of(arb_show()),
            prop::collection::vec(arb_note(), 0..2),
            prop::option::of(arb_timestamp()),
            arb_extensions(),
        )
            .prop_map(
                |(id, activities, user_input, show, notes, timestamp, extensions)| Person {
                    id,
                    activities,
                    user_input,
                    show,
                    notes,
                    timestamp,
                    extensions,
                },
            )
    }

    fn arb_device() -> impl Strategy<Value = Device> {
        (
            "d[0-9]{1,3}",
            prop::option::of("urn:device:[0-9a-f]{4}"),
            prop::option::of(arb_user_input()),
            prop::collection::vec(arb_note(), 0..2),
            prop::option::of(arb_timestamp()),
            arb_extensions(),
        )
            .prop_map(
                |(id, device_id, user_input, notes, timestamp, extensions)| Device {
                    id,
                    device_id,
                    user_input,
                    notes,
                    timestamp,
                    extensions,
                },
            )
    }

    fn arb_presence() -> impl Strategy<Value = Presence> {
        (
            "pres:[a-z]{1,8}@example\\.(com|net)",
            prop::collection::vec(arb_tuple(), 0..3),
            prop::collection::vec(arb_note(), 0..2),
            prop::collection::vec(arb_person(), 0..2),
            prop::collection::vec(arb_device(), 0..2),
            arb_extensions(),
        )
            .prop_map(
                |(entity, mut tuples, notes, persons, devices, extensions)| {
                    for (i, t) in tuples.iter_mut().enumerate() {
                        t.id = format!("t{i}");
                    }
                    Presence {
                        entity,
                        tuples,
                        notes,
                        persons,
                        devices,
                        extensions,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn round_trip_generated_models(p in arb_presence()) {
            let written = p.to_xml();
            prop_assert_eq!(Presence::parse(written.as_bytes()), Ok(p), "{}", written);
        }

        #[test]
        fn never_panics_on_mutated_examples(
            cut in 0usize..2000,
            insert in "[<>&\"'/a-z:= ]{0,6}",
        ) {
            let mut doc = RFC4480_4.to_owned();
            let at = cut.min(doc.len());
            if doc.is_char_boundary(at) {
                doc.insert_str(at, &insert);
            }
            let _ = Presence::parse(doc.as_bytes());
            let _ = Presence::parse_lenient(doc.as_bytes());
        }
    }
}
