//! `message/cpim` (RFC 3862): parse and serialize.
//!
//! Size: one byte-exact codec; parser, typed views and writer share the wire grammar.
//!
//! A [`CpimMessage`] is the metadata headers (§3, in order, names case-sensitive, values
//! kept in their escaped wire form) and the encapsulated MIME entity ([`MimeEntity`]:
//! its headers and the body bytes). Typed views read the common headers: `From`, `To`,
//! `cc`, `DateTime`, `Subject` (with `;lang=`), `NS` and `Require`, and the RFC 5438
//! `imdn.*` headers through their namespace, whatever prefix the sender chose.
//!
//! **Byte-exactness.** RFC 3862 §6: a gateway must not alter CPIM content. A message that
//! is parsed and not changed serializes ([`CpimMessage::to_bytes`]) to exactly the bytes
//! it came from, even when the input deviated from the RFC and was accepted leniently.
//! [`CpimMessage::to_strict_bytes`] always writes the strict form (CRLF, blank lines
//! between the parts); for a conformant input both are the same bytes, which the tests
//! check on the RFC examples. Messages built or modified through the API serialize
//! strictly.
//!
//! **Lenient input** (seen from real stacks and in RFC 5438's printed examples): LF line
//! ends, a missing blank line between the metadata headers and the MIME headers (a line
//! whose name starts with `Content-` or is `MIME-Version` ends the metadata), an outer
//! `Content-type: Message/CPIM` block in front, no space after a header's colon, a
//! non-RFC 3339 `DateTime` (see [`crate::datetime::Timestamp::parse_lenient`]).

use std::fmt;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::address::{Address, AddressError};
use crate::datetime::{Timestamp, TimestampError};

/// The namespace of the RFC 3862 core headers, the implied default namespace.
pub const CPIM_HEADERS_NS: &str = "urn:ietf:params:cpim-headers:";
/// The namespace of the RFC 5438 IMDN headers.
pub const IMDN_NS: &str = "urn:ietf:params:imdn";

/// Limits that keep a hostile message from costing much.
const MAX_HEADERS: usize = 256;

/// Why a `message/cpim` body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CpimError {
    /// The metadata header section is not UTF-8 (RFC 3862 §2.2).
    #[error("line {line}: header is not UTF-8")]
    NotUtf8 {
        /// 1-based line number.
        line: usize,
    },
    /// A metadata header line without `name:`.
    #[error("line {line}: not a `Name: value` header")]
    MalformedHeader {
        /// 1-based line number.
        line: usize,
    },
    /// A header name with characters outside NAMECHAR or more than one `.` (§3.1).
    #[error("line {line}: invalid header name `{name}`")]
    InvalidHeaderName {
        /// 1-based line number.
        line: usize,
        /// The name as found.
        name: String,
    },
    /// A `;param=value` that does not follow §3.6.
    #[error("line {line}: invalid header parameter")]
    InvalidParameter {
        /// 1-based line number.
        line: usize,
    },
    /// A control character in a header (§2.2; they must be escaped).
    #[error("line {line}: control character U+{code:04X} in header")]
    ControlCharacter {
        /// 1-based line number.
        line: usize,
        /// The character's code point.
        code: u32,
    },
    /// A prefixed header whose prefix no earlier `NS` header declared (§3.4).
    #[error("line {line}: namespace prefix `{prefix}` used before an NS header declares it")]
    UndeclaredPrefix {
        /// 1-based line number.
        line: usize,
        /// The prefix.
        prefix: String,
    },
    /// An `NS` header that is not `[prefix] <URI>`.
    #[error("line {line}: invalid NS header")]
    InvalidNs {
        /// 1-based line number.
        line: usize,
    },
    /// Too many headers.
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    /// The input ends before the blank line after the metadata headers.
    #[error("message ends inside the header section")]
    Truncated,
    /// The encapsulated MIME entity has no `Content-Type` (§2.4: it MUST).
    #[error("encapsulated MIME entity has no Content-Type")]
    MissingContentType,
    /// A MIME header line that is not `name: value`.
    #[error("line {line}: malformed MIME header")]
    MalformedMimeHeader {
        /// 1-based line number.
        line: usize,
    },
    /// A `From`/`To`/`cc` value that is not `[Formal-name] <URI>` (§4.1–4.3).
    #[error("`{header}` is not `[Formal-name] <URI>`")]
    InvalidNameAddr {
        /// The header name.
        header: String,
    },
    /// A `DateTime` value that is not a date-time even leniently.
    #[error(transparent)]
    DateTime(#[from] TimestampError),
    /// A URI in a header that is not an address we understand.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// A `Content-Type` that is not `type/subtype`.
    #[error("invalid Content-Type `{0}`")]
    InvalidContentType(String),
}

/// A header name: optional namespace prefix and the name (§3.1, §3.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderName {
    prefix: Option<String>,
    name: String,
}

fn is_namechar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(b, 0x21 | 0x23..=0x27 | 0x2a | 0x2b | 0x2d | 0x5e..=0x60 | 0x7c | 0x7e)
}

impl HeaderName {
    /// Parses `[prefix.]name`; `None` when it is not valid.
    pub fn parse(s: &str) -> Option<Self> {
        let (prefix, name) = match s.split_once('.') {
            Some((p, n)) => (Some(p), n),
            None => (None, s),
        };
        let ok = |t: &str| !t.is_empty() && t.bytes().all(is_namechar);
        if !ok(name) || prefix.is_some_and(|p| !ok(p)) {
            return None;
        }
        Some(HeaderName {
            prefix: prefix.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// The namespace prefix, if any.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// The name within its namespace.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.prefix {
            write!(f, "{p}.")?;
        }
        f.write_str(&self.name)
    }
}

/// A `;name=value` header parameter (§3.6), value as written (a quoted String keeps its
/// quotes and escapes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Param {
    /// Parameter name.
    pub name: String,
    /// Value as written.
    pub value: String,
}

/// One metadata header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    name: HeaderName,
    params: Vec<Param>,
    value: String,
}

impl Header {
    /// A header with an unescaped `value`; control characters and `\` are escaped per
    /// §2.3.1. Fails when `name` is not a valid header name.
    pub fn new(name: &str, value: &str) -> Option<Self> {
        Some(Header {
            name: HeaderName::parse(name)?,
            params: Vec::new(),
            value: escape(value, None),
        })
    }

    /// A header whose value is given in wire form (escapes already applied), such as
    /// [`NameAddr::to_value`] returns. Fails on an invalid name or a control character.
    pub fn from_raw(name: &str, raw: &str) -> Option<Self> {
        if raw.chars().any(is_ctl) {
            return None;
        }
        Some(Header {
            name: HeaderName::parse(name)?,
            params: Vec::new(),
            value: raw.to_owned(),
        })
    }

    /// A `From`/`To`/`cc`-style header.
    pub fn name_addr(name: &str, addr: &NameAddr) -> Option<Self> {
        Self::from_raw(name, &addr.to_value())
    }

    /// A header with a `;lang=` parameter (§3.3).
    pub fn with_lang(mut self, lang: &str) -> Self {
        self.params.retain(|p| p.name != "lang");
        self.params.push(Param {
            name: "lang".to_owned(),
            value: lang.to_owned(),
        });
        self
    }

    /// The header name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// Parameters in order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The `lang` parameter.
    pub fn lang(&self) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.name == "lang")
            .map(|p| p.value.as_str())
    }

    /// The value as on the wire (escapes not undone).
    pub fn raw_value(&self) -> &str {
        &self.value
    }

    /// The value with §2.3 escapes undone.
    pub fn value(&self) -> String {
        unescape(&self.value)
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.name.to_string().as_bytes());
        out.push(b':');
        for p in &self.params {
            out.push(b';');
            out.extend_from_slice(p.name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(p.value.as_bytes());
        }
        out.push(b' ');
        out.extend_from_slice(self.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// A MIME header of the encapsulated entity (RFC 2045 syntax; names case-insensitive).
/// The value is kept as written after the colon, folding included (line breaks stored
/// as CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimeHeader {
    name: String,
    raw: String,
}

impl MimeHeader {
    /// `name: value`.
    pub fn new(name: &str, value: &str) -> Self {
        MimeHeader {
            name: name.to_owned(),
            raw: format!(" {value}"),
        }
    }

    /// The name as written.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value, unfolded and trimmed.
    pub fn value(&self) -> String {
        self.raw
            .split("\r\n")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A media type: `type/subtype; params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    essence: String,
    params: Vec<(String, String)>,
}

impl MediaType {
    /// Parses a Content-Type value (type and subtype lowercased, parameter names too).
    pub fn parse(s: &str) -> Result<Self, CpimError> {
        let mut parts = s.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
        };
        match essence.split_once('/') {
            Some((t, st)) if token(t) && token(st) => {}
            _ => return Err(CpimError::InvalidContentType(s.to_owned())),
        }
        let params = parts
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                let (n, v) = p.split_once('=').unwrap_or((p, ""));
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .unwrap_or(v);
                (n.trim().to_ascii_lowercase(), v.to_owned())
            })
            .collect();
        Ok(MediaType { essence, params })
    }

    /// `type/subtype`, lowercase.
    pub fn essence(&self) -> &str {
        &self.essence
    }

    /// A parameter (name lowercase).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.essence)?;
        for (n, v) in &self.params {
            write!(f, ";{n}={v}")?;
        }
        Ok(())
    }
}

/// The encapsulated MIME object (§2.4): headers and body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimeEntity {
    headers: Vec<MimeHeader>,
    body: Vec<u8>,
}

impl MimeEntity {
    /// An entity with a `Content-Type` and a body.
    pub fn new(content_type: &str, body: Vec<u8>) -> Self {
        MimeEntity {
            headers: vec![MimeHeader::new("Content-Type", content_type)],
            body,
        }
    }

    /// Adds a MIME header.
    pub fn push_header(&mut self, header: MimeHeader) {
        self.headers.push(header);
    }

    /// The MIME headers in order.
    pub fn headers(&self) -> &[MimeHeader] {
        &self.headers
    }

    /// The first header named `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(MimeHeader::value)
    }

    /// The parsed Content-Type.
    pub fn content_type(&self) -> Result<MediaType, CpimError> {
        MediaType::parse(
            &self
                .header("Content-Type")
                .ok_or(CpimError::MissingContentType)?,
        )
    }

    /// The body bytes, exactly as carried.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// `[Formal-name] <URI>` as in `From`, `To` and `cc` (§4.1–4.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameAddr {
    /// The formal name, unescaped and unquoted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The URI as written.
    pub uri: String,
}

impl NameAddr {
    /// Parses a header value of this form.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim_end();
        let inner = raw.strip_suffix('>')?;
        let open = inner.rfind('<')?;
        let uri = &inner[open + 1..];
        if uri.is_empty() || uri.contains(['<', '>', ' ']) {
            return None;
        }
        let name = inner[..open].trim();
        let display_name = if name.is_empty() {
            None
        } else if let Some(q) = name.strip_prefix('"') {
            Some(unescape(q.strip_suffix('"')?))
        } else {
            Some(unescape(name))
        };
        Some(NameAddr {
            display_name,
            uri: uri.to_owned(),
        })
    }

    /// The URI as an [`Address`].
    pub fn address(&self) -> Result<Address, AddressError> {
        Address::parse(&self.uri)
    }

    /// The header value: a formal name that is not a plain token sequence is quoted.
    pub fn to_value(&self) -> String {
        match &self.display_name {
            None => format!("<{}>", self.uri),
            Some(n) => {
                let tokens_only = !n.is_empty()
                    && n.split(' ').all(|t| {
                        !t.is_empty() && t.bytes().all(|b| is_namechar(b) || b == b'.' || b >= 0x80)
                    });
                if tokens_only {
                    format!("{} <{}>", n, self.uri)
                } else {
                    format!("\"{}\" <{}>", escape(n, Some('"')), self.uri)
                }
            }
        }
    }
}

/// A `Subject` header: text and optional language (§4.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subject {
    /// Language tag, from `;lang=`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// The subject text, unescaped.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Newline {
    Crlf,
    Lf,
}

/// A `message/cpim` object. See the module documentation.
#[derive(Debug, Clone)]
pub struct CpimMessage {
    outer: Vec<MimeHeader>,
    headers: Vec<Header>,
    content: MimeEntity,
    original: Option<Vec<u8>>,
}

impl PartialEq for CpimMessage {
    /// Equality of the model (the retained input bytes are not compared).
    fn eq(&self, other: &Self) -> bool {
        self.outer == other.outer && self.headers == other.headers && self.content == other.content
    }
}

impl Eq for CpimMessage {}

impl CpimMessage {
    /// A new message with no headers around `content`.
    pub fn new(content: MimeEntity) -> Self {
        CpimMessage {
            outer: Vec::new(),
            headers: Vec::new(),
            content,
            original: None,
        }
    }

    /// Appends a metadata header (the message then serializes strictly).
    pub fn push_header(&mut self, header: Header) {
        self.original = None;
        self.headers.push(header);
    }

    /// Parses a `message/cpim` body: metadata headers, a blank line, the MIME entity.
    pub fn parse(input: &[u8]) -> Result<Self, CpimError> {
        let mut lines = Lines::new(input);
        let mut outer = Vec::new();
        let mut headers = Vec::new();
        let mut ns = Namespaces::default();

        // Optional outer `Content-type: Message/CPIM` block (RFC 5438 §7.2.1.3 prints one).
        if starts_outer_block(input) {
            outer = parse_mime_headers(&mut lines)?;
        }

        let mut separator_seen = false;
        while let Some((line_no, line, _)) = lines.peek() {
            if line.is_empty() {
                lines.next();
                separator_seen = true;
                break;
            }
            if is_mime_header_line(line) {
                // Lenient: the blank line before the MIME headers is missing.
                break;
            }
            lines.next();
            let text =
                std::str::from_utf8(line).map_err(|_| CpimError::NotUtf8 { line: line_no })?;
            let header = parse_header(text, line_no)?;
            ns.observe(&header, line_no)?;
            headers.push(header);
            if headers.len() > MAX_HEADERS {
                return Err(CpimError::TooManyHeaders);
            }
        }
        if !separator_seen && lines.peek().is_none() {
            return Err(CpimError::Truncated);
        }
        let mime_headers = parse_mime_headers(&mut lines)?;
        if !mime_headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("Content-Type"))
        {
            return Err(CpimError::MissingContentType);
        }
        let body = lines.rest().to_vec();
        Ok(CpimMessage {
            outer,
            headers,
            content: MimeEntity {
                headers: mime_headers,
                body,
            },
            original: Some(input.to_vec()),
        })
    }

    /// The bytes of this message: the input, unchanged, when it was parsed and not
    /// modified (RFC 3862 §6); otherwise [`CpimMessage::to_strict_bytes`].
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.original {
            Some(b) => b.clone(),
            None => self.to_strict_bytes(),
        }
    }

    /// The strict RFC 3862 serialization: CRLF line ends, a blank line after each header
    /// block, the body bytes as they are.
    pub fn to_strict_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.content.body.len());
        let write_mime = |out: &mut Vec<u8>, hs: &[MimeHeader]| {
            for h in hs {
                out.extend_from_slice(h.name.as_bytes());
                out.push(b':');
                out.extend_from_slice(h.raw.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
        };
        if !self.outer.is_empty() {
            write_mime(&mut out, &self.outer);
        }
        for h in &self.headers {
            h.write(&mut out);
        }
        out.extend_from_slice(b"\r\n");
        write_mime(&mut out, &self.content.headers);
        out.extend_from_slice(&self.content.body);
        out
    }

    /// `true` when [`CpimMessage::to_bytes`] returns the parsed input unchanged.
    pub fn is_unmodified(&self) -> bool {
        self.original.is_some()
    }

    /// The outer MIME headers, when the input carried them (normally the transport's).
    pub fn outer_headers(&self) -> &[MimeHeader] {
        &self.outer
    }

    /// The metadata headers in order.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The encapsulated MIME entity.
    pub fn content(&self) -> &MimeEntity {
        &self.content
    }

    /// Headers with their namespace URI resolved: `(namespace, header)`.
    pub fn resolved_headers(&self) -> Vec<(String, &Header)> {
        let mut ns = Namespaces::default();
        self.headers
            .iter()
            .map(|h| {
                let uri = ns.resolve(h.name.prefix()).unwrap_or_default().to_owned();
                // Every message that parsed has its prefixes declared before use.
                let _ = ns.observe(h, 0);
                (uri, h)
            })
            .collect()
    }

    /// Headers called `name` in namespace `namespace`, in order.
    pub fn headers_in<'a>(&'a self, namespace: &str, name: &str) -> Vec<&'a Header> {
        self.resolved_headers()
            .into_iter()
            .filter(|(ns, h)| ns == namespace && h.name.name() == name)
            .map(|(_, h)| h)
            .collect()
    }

    fn core(&self, name: &str) -> Vec<&Header> {
        self.headers_in(CPIM_HEADERS_NS, name)
    }

    fn name_addrs(&self, name: &str) -> Result<Vec<NameAddr>, CpimError> {
        self.core(name)
            .into_iter()
            .map(|h| {
                NameAddr::parse(h.raw_value()).ok_or_else(|| CpimError::InvalidNameAddr {
                    header: name.to_owned(),
                })
            })
            .collect()
    }

    /// The `From` header (the first, if several).
    pub fn from(&self) -> Result<Option<NameAddr>, CpimError> {
        Ok(self.name_addrs("From")?.into_iter().next())
    }

    /// Every `To` header.
    pub fn to(&self) -> Result<Vec<NameAddr>, CpimError> {
        self.name_addrs("To")
    }

    /// Every `cc` header.
    pub fn cc(&self) -> Result<Vec<NameAddr>, CpimError> {
        self.name_addrs("cc")
    }

    /// The `DateTime` header, read leniently.
    pub fn datetime(&self) -> Result<Option<Timestamp>, CpimError> {
        self.core("DateTime")
            .first()
            .map(|h| Timestamp::parse_lenient(&h.value()).map_err(CpimError::from))
            .transpose()
    }

    /// Every `Subject` with its language.
    pub fn subjects(&self) -> Vec<Subject> {
        self.core("Subject")
            .into_iter()
            .map(|h| Subject {
                lang: h.lang().map(str::to_owned),
                text: h.value(),
            })
            .collect()
    }

    /// The header names listed in `Require` headers, resolved to `(namespace, name)`.
    pub fn required(&self) -> Vec<(String, String)> {
        let mut ns = Namespaces::default();
        let mut out = Vec::new();
        for h in &self.headers {
            let _ = ns.observe(h, 0);
            if h.name.prefix().is_none() && h.name.name() == "Require" {
                for item in h.value().split(',') {
                    if let Some(n) = HeaderName::parse(item.trim()) {
                        let uri = ns.resolve(n.prefix()).unwrap_or_default().to_owned();
                        out.push((uri, n.name));
                    }
                }
            }
        }
        out
    }

    /// The `Require`d features not in `understood` (§3.5): a receiver that must act on
    /// the metadata refuses the message when this is not empty.
    pub fn unmet_requirements(&self, understood: &[(&str, &str)]) -> Vec<(String, String)> {
        self.required()
            .into_iter()
            .filter(|(ns, n)| !understood.iter().any(|(u_ns, u_n)| u_ns == ns && u_n == n))
            .collect()
    }

    /// `imdn.Message-ID` (RFC 5438 §6.3).
    pub fn imdn_message_id(&self) -> Option<String> {
        self.headers_in(IMDN_NS, "Message-ID")
            .first()
            .map(|h| h.value())
    }

    /// `imdn.Disposition-Notification` values (RFC 5438 §6.2), comma lists flattened.
    pub fn disposition_notification(&self) -> Vec<String> {
        self.headers_in(IMDN_NS, "Disposition-Notification")
            .into_iter()
            .flat_map(|h| {
                h.value()
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// `imdn.Original-To` (RFC 5438 §6.4).
    pub fn imdn_original_to(&self) -> Result<Option<NameAddr>, CpimError> {
        self.headers_in(IMDN_NS, "Original-To")
            .first()
            .map(|h| {
                NameAddr::parse(h.raw_value()).ok_or_else(|| CpimError::InvalidNameAddr {
                    header: "imdn.Original-To".to_owned(),
                })
            })
            .transpose()
    }
}

/// Prefix → namespace bindings as NS headers declare them (§3.4).
#[derive(Debug)]
struct Namespaces {
    default: String,
    prefixes: Vec<(String, String)>,
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            default: CPIM_HEADERS_NS.to_owned(),
            prefixes: Vec::new(),
        }
    }
}

impl Namespaces {
    fn resolve(&self, prefix: Option<&str>) -> Option<&str> {
        match prefix {
            None => Some(&self.default),
            Some(p) => self
                .prefixes
                .iter()
                .rev()
                .find(|(q, _)| q == p)
                .map(|(_, u)| u.as_str()),
        }
    }

    /// Checks a header's prefix is declared and records what an `NS` header declares.
    fn observe(&mut self, h: &Header, line: usize) -> Result<(), CpimError> {
        if let Some(p) = h.name.prefix() {
            if self.resolve(Some(p)).is_none() {
                return Err(CpimError::UndeclaredPrefix {
                    line,
                    prefix: p.to_owned(),
                });
            }
        } else if h.name.name() == "NS" {
            let v = h.value();
            let v = v.trim();
            let bad = || CpimError::InvalidNs { line };
            let open = v.find('<').ok_or_else(bad)?;
            let uri = v[open + 1..].strip_suffix('>').ok_or_else(bad)?;
            if uri.is_empty() || !uri.contains(':') {
                return Err(bad());
            }
            let prefix = v[..open].trim();
            if prefix.is_empty() {
                self.default = uri.to_owned();
            } else if HeaderName::parse(prefix).is_some_and(|n| n.prefix().is_none()) {
                self.prefixes.push((prefix.to_owned(), uri.to_owned()));
            } else {
                return Err(bad());
            }
        }
        Ok(())
    }
}

/// CTL of RFC 2234 as RFC 3862 §3.6 uses it: U+0000–U+001F and U+007F (not C1).
fn is_ctl(c: char) -> bool {
    (c as u32) < 0x20 || c == '\u{7f}'
}

fn parse_header(text: &str, line: usize) -> Result<Header, CpimError> {
    if let Some(c) = text.chars().find(|&c| is_ctl(c) && c != '\t') {
        return Err(CpimError::ControlCharacter {
            line,
            code: u32::from(c),
        });
    }
    let colon = text.find(':').ok_or(CpimError::MalformedHeader { line })?;
    let raw_name = &text[..colon];
    let name = HeaderName::parse(raw_name).ok_or_else(|| CpimError::InvalidHeaderName {
        line,
        name: raw_name.to_owned(),
    })?;
    let mut rest = &text[colon + 1..];
    let mut params = Vec::new();
    while let Some(r) = rest.strip_prefix(';') {
        let eq = r.find('=').ok_or(CpimError::InvalidParameter { line })?;
        let pname = &r[..eq];
        if pname.is_empty() || !pname.bytes().all(is_namechar) {
            return Err(CpimError::InvalidParameter { line });
        }
        let after = &r[eq + 1..];
        let vlen = if after.starts_with('"') {
            quoted_len(after).ok_or(CpimError::InvalidParameter { line })?
        } else {
            after.find([' ', ';']).unwrap_or(after.len())
        };
        if vlen == 0 {
            return Err(CpimError::InvalidParameter { line });
        }
        params.push(Param {
            name: pname.to_owned(),
            value: after[..vlen].to_owned(),
        });
        rest = &after[vlen..];
    }
    // Strict: one SP. Lenient: none (`From:<im:a@b>`).
    let value = rest.strip_prefix(' ').unwrap_or(rest);
    Ok(Header {
        name,
        params,
        value: value.to_owned(),
    })
}

/// Length of a quoted String at the start of `s` (quotes included), escapes honoured.
fn quoted_len(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i + 1),
            _ => {}
        }
    }
    None
}

fn starts_outer_block(input: &[u8]) -> bool {
    let first = input.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = std::str::from_utf8(first).unwrap_or_default().trim_end();
    match first.split_once(':') {
        Some((n, v)) => {
            n.eq_ignore_ascii_case("Content-Type") && v.trim().eq_ignore_ascii_case("message/cpim")
        }
        None => false,
    }
}

fn is_mime_header_line(line: &[u8]) -> bool {
    let starts = |p: &[u8]| line.len() >= p.len() && line[..p.len()].eq_ignore_ascii_case(p);
    starts(b"content-") || starts(b"mime-version:")
}

fn parse_mime_headers(lines: &mut Lines<'_>) -> Result<Vec<MimeHeader>, CpimError> {
    let mut out: Vec<MimeHeader> = Vec::new();
    for (line_no, line, _) in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            let last = out
                .last_mut()
                .ok_or(CpimError::MalformedMimeHeader { line: line_no })?;
            last.raw.push_str("\r\n");
            last.raw.push_str(&text);
            continue;
        }
        let (name, raw) = text
            .split_once(':')
            .ok_or(CpimError::MalformedMimeHeader { line: line_no })?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CpimError::MalformedMimeHeader { line: line_no });
        }
        out.push(MimeHeader {
            name: name.to_owned(),
            raw: raw.to_owned(),
        });
        if out.len() > MAX_HEADERS {
            return Err(CpimError::TooManyHeaders);
        }
    }
    Ok(out)
}

/// Line reader over bytes: yields `(line number, line without terminator, newline)`.
struct Lines<'a> {
    input: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> Lines<'a> {
    fn new(input: &'a [u8]) -> Self {
        Lines {
            input,
            pos: 0,
            line: 0,
        }
    }

    fn peek(&self) -> Option<(usize, &'a [u8], Newline)> {
        let rest = self.input.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let (line, nl) = match rest[..end].strip_suffix(b"\r") {
            Some(l) => (l, Newline::Crlf),
            None => (&rest[..end], Newline::Lf),
        };
        Some((self.line + 1, line, nl))
    }

    fn rest(&self) -> &'a [u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a [u8], Newline);

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.peek()?;
        let rest = &self.input[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        self.pos += end;
        self.line += 1;
        Some(item)
    }
}

/// Undoes the §2.3 escapes: `\uXXXX` (surrogate pairs joined, lone surrogates become
/// U+FFFD), `\\ \" \' \b \t \n \r`; an unknown escape stands for the character after the
/// backslash; a trailing lone backslash is dropped.
pub fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    let mut pending_high: Option<u16> = None;
    let flush = |out: &mut String, high: &mut Option<u16>| {
        if high.take().is_some() {
            out.push('\u{fffd}');
        }
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            flush(&mut out, &mut pending_high);
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else { break };
        let simple = match e {
            'b' => Some('\u{8}'),
            't' => Some('\t'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            'u' => None,
            other => Some(other),
        };
        if let Some(ch) = simple {
            flush(&mut out, &mut pending_high);
            out.push(ch);
            continue;
        }
        let hex: String = chars.clone().take(4).collect();
        let code = (hex.len() == 4 && hex.chars().all(|h| h.is_ascii_hexdigit()))
            .then(|| u16::from_str_radix(&hex, 16).ok())
            .flatten();
        let Some(code) = code else {
            // `\u` without four hex digits: the character after the backslash.
            flush(&mut out, &mut pending_high);
            out.push('u');
            continue;
        };
        for _ in 0..4 {
            chars.next();
        }
        match code {
            0xD800..=0xDBFF => {
                flush(&mut out, &mut pending_high);
                pending_high = Some(code);
            }
            0xDC00..=0xDFFF => match pending_high.take() {
                Some(high) => {
                    let cp =
                        0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(code) - 0xDC00);
                    out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                }
                None => out.push('\u{fffd}'),
            },
            _ => {
                flush(&mut out, &mut pending_high);
                out.push(char::from_u32(u32::from(code)).unwrap_or('\u{fffd}'));
            }
        }
    }
    flush(&mut out, &mut pending_high);
    out
}

/// Applies the §2.3.1 escapes for output: `\` `\b` `\t` `\n` `\r` by their special
/// sequences, the other controls as `\uXXXX`, and `quote` (inside a quoted string) as
/// `\"` or `\'`. Nothing else is escaped.
pub fn escape(text: &str, quote: Option<char>) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if Some(c) == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_ctl(c) => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// JSON view of the model (for `cpim-gateway translate --to json` and the webhook).

struct HeaderView<'a>(&'a str, &'a Header);

impl Serialize for HeaderView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (ns, h) = (self.0, self.1);
        let mut st = s.serialize_struct("Header", 5)?;
        st.serialize_field("name", &h.name.to_string())?;
        st.serialize_field("namespace", ns)?;
        st.serialize_field("params", &h.params)?;
        st.serialize_field("value", &h.value())?;
        st.serialize_field("raw", &h.value)?;
        st.end()
    }
}

struct MimeHeadersView<'a>(&'a [MimeHeader]);

impl Serialize for MimeHeadersView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for h in self.0 {
            m.serialize_entry(&h.name, &h.value())?;
        }
        m.end()
    }
}

impl Serialize for MimeEntity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("MimeEntity", 3)?;
        st.serialize_field("headers", &MimeHeadersView(&self.headers))?;
        st.serialize_field(
            "content_type",
            &self.content_type().ok().map(|c| c.to_string()),
        )?;
        match std::str::from_utf8(&self.body) {
            Ok(text) => st.serialize_field("body_text", text)?,
            Err(_) => st.serialize_field("body_base64", &crate::base64_encode(&self.body))?,
        }
        st.end()
    }
}

impl Serialize for CpimMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("CpimMessage", 11)?;
        if !self.outer.is_empty() {
            st.serialize_field("outer_headers", &MimeHeadersView(&self.outer))?;
        }
        let resolved = self.resolved_headers();
        let views: Vec<HeaderView<'_>> = resolved.iter().map(|(ns, h)| HeaderView(ns, h)).collect();
        st.serialize_field("headers", &views)?;
        st.serialize_field("from", &self.from().ok().flatten())?;
        st.serialize_field("to", &self.to().unwrap_or_default())?;
        st.serialize_field("cc", &self.cc().unwrap_or_default())?;
        st.serialize_field("datetime", &self.datetime().ok().flatten())?;
        st.serialize_field("subject", &self.subjects())?;
        let req: Vec<String> = self
            .required()
            .into_iter()
            .map(|(ns, n)| format!("{ns}{}{n}", if ns.ends_with(':') { "" } else { "#" }))
            .collect();
        st.serialize_field("require", &req)?;
        st.serialize_field("imdn_message_id", &self.imdn_message_id())?;
        st.serialize_field("disposition_notification", &self.disposition_notification())?;
        st.serialize_field("content", &self.content)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn crlf(s: &str) -> Vec<u8> {
        s.replace('\n', "\r\n").into_bytes()
    }

    /// RFC 3862 §5.1, the "h:" and "e:" parts with CRLF line ends.
    pub(crate) const RFC3862_5_1: &str = "From: MR SANDERS <im:piglet@100akerwood.com>\n\
To: Depressed Donkey <im:eeyore@100akerwood.com>\n\
DateTime: 2000-12-13T13:40:00-08:00\n\
Subject: the weather will be fine today\n\
Subject:;lang=fr beau temps prevu pour aujourd'hui\n\
NS: MyFeatures <mid:MessageFeatures@id.foo.com>\n\
Require: MyFeatures.VitalMessageOption\n\
MyFeatures.VitalMessageOption: Confirmation-requested\n\
MyFeatures.WackyMessageOption: Use-silly-font\n\
\n\
Content-type: text/xml; charset=utf-8\n\
Content-ID: <1234567890@foo.com>\n\
\n\
<body>\n\
Here is the text of my message.\n\
</body>\n";

    #[test]
    fn rfc3862_5_1_example_parses() {
        let input = crlf(RFC3862_5_1);
        let m = CpimMessage::parse(&input).unwrap();
        assert_eq!(m.headers().len(), 9);
        let from = m.from().unwrap().unwrap();
        assert_eq!(from.display_name.as_deref(), Some("MR SANDERS"));
        assert_eq!(from.uri, "im:piglet@100akerwood.com");
        assert!(matches!(from.address().unwrap(), Address::Im(_)));
        assert_eq!(
            m.to().unwrap()[0].display_name.as_deref(),
            Some("Depressed Donkey")
        );
        assert_eq!(
            m.datetime().unwrap().unwrap().to_string(),
            "2000-12-13T13:40:00-08:00"
        );
        assert_eq!(
            m.subjects(),
            vec![
                Subject {
                    lang: None,
                    text: "the weather will be fine today".into()
                },
                Subject {
                    lang: Some("fr".into()),
                    text: "beau temps prevu pour aujourd'hui".into()
                },
            ]
        );
        assert_eq!(
            m.required(),
            vec![(
                "mid:MessageFeatures@id.foo.com".to_owned(),
                "VitalMessageOption".to_owned()
            )]
        );
        assert_eq!(
            m.headers_in("mid:MessageFeatures@id.foo.com", "WackyMessageOption")[0].value(),
            "Use-silly-font"
        );
        assert_eq!(m.content().content_type().unwrap().essence(), "text/xml");
        assert_eq!(
            m.content().content_type().unwrap().param("charset"),
            Some("utf-8")
        );
        assert_eq!(
            m.content().header("content-id").as_deref(),
            Some("<1234567890@foo.com>")
        );
        assert_eq!(
            m.content().body(),
            b"<body>\r\nHere is the text of my message.\r\n</body>\r\n"
        );
    }

    #[test]
    fn rfc3862_6_round_trip_is_byte_identical() {
        let input = crlf(RFC3862_5_1);
        let m = CpimMessage::parse(&input).unwrap();
        assert_eq!(m.to_bytes(), input);
        // The strict writer reproduces a conformant input from the model alone.
        assert_eq!(m.to_strict_bytes(), input);
    }

    #[test]
    fn rfc3862_3_5_require_unmet() {
        let m = CpimMessage::parse(&crlf(RFC3862_5_1)).unwrap();
        assert_eq!(m.unmet_requirements(&[]).len(), 1);
        assert!(m
            .unmet_requirements(&[("mid:MessageFeatures@id.foo.com", "VitalMessageOption")])
            .is_empty());
    }

    #[test]
    fn rfc3862_3_4_default_namespace_and_prefix_rebinding() {
        let input = crlf(
            "NS: acme <http://id.acme.widgets/wily-headers/>\n\
acme.runner-trap: set\n\
NS: <http://id.acme.widgets/wily-headers/>\n\
runner-trap: again\n\
\n\
Content-Type: text/plain\n\
\n\
x",
        );
        let m = CpimMessage::parse(&input).unwrap();
        let hs = m.headers_in("http://id.acme.widgets/wily-headers/", "runner-trap");
        assert_eq!(
            hs.iter().map(|h| h.value()).collect::<Vec<_>>(),
            ["set", "again"]
        );
        assert_eq!(m.to_strict_bytes(), input);
    }

    #[test]
    fn rfc3862_3_4_undeclared_prefix_is_rejected() {
        let err =
            CpimMessage::parse(&crlf("x.Foo: bar\n\nContent-Type: text/plain\n\nhi")).unwrap_err();
        assert_eq!(
            err,
            CpimError::UndeclaredPrefix {
                line: 1,
                prefix: "x".into()
            }
        );
    }

    #[test]
    fn rfc3862_3_1_header_names_are_case_sensitive() {
        let m = CpimMessage::parse(&crlf(
            "from: <im:a@b.example>\nFrom: <im:c@d.example>\n\nContent-Type: text/plain\n\n",
        ))
        .unwrap();
        assert_eq!(m.from().unwrap().unwrap().uri, "im:c@d.example");
        assert_eq!(m.headers().len(), 2);
    }

    #[test]
    fn rfc3862_2_3_escapes() {
        assert_eq!(
            unescape(r#"a\\b\"c\'d\be\tf\ng\rh"#),
            "a\\b\"c'd\u{8}e\tf\ng\rh"
        );
        assert_eq!(
            unescape(r"\u00e9\u0000\uD83D\uDE00"),
            "\u{e9}\u{0}\u{1F600}"
        );
        assert_eq!(unescape(r"\q\u12"), "qu12");
        assert_eq!(unescape("trailing\\"), "trailing");
        assert_eq!(unescape(r"\uD800x"), "\u{fffd}x");
        assert_eq!(
            escape("a\\b\u{8}\t\n\r\u{1}\u{7f}\"'", None),
            r"a\\b\b\t\n\r\u0001\u007f".to_owned() + "\"'"
        );
        assert_eq!(escape("say \"hi\"", Some('"')), r#"say \"hi\""#);
    }

    #[test]
    fn rfc3862_4_1_quoted_formal_name() {
        let m = CpimMessage::parse(&crlf(
            "From: \"Pooh \\\"Bear\\\"\" <im:pooh@100akerwood.com>\n\nContent-Type: text/plain\n\n",
        ))
        .unwrap();
        let f = m.from().unwrap().unwrap();
        assert_eq!(f.display_name.as_deref(), Some("Pooh \"Bear\""));
        assert_eq!(
            f.to_value(),
            "\"Pooh \\\"Bear\\\"\" <im:pooh@100akerwood.com>"
        );
        assert_eq!(
            NameAddr::parse("Winnie the Pooh <im:pooh@100akerwood.com>")
                .unwrap()
                .to_value(),
            "Winnie the Pooh <im:pooh@100akerwood.com>"
        );
    }

    const RFC5438_7_1_1: &str = "From: Alice <im:alice@example.com>\n\
To: Bob <im:bob@example.com>\n\
NS: imdn <urn:ietf:params:imdn>\n\
imdn.Message-ID: 34jk324j\n\
DateTime: 2006-04-04T12:16:49-05:00\n\
imdn.Disposition-Notification: positive-delivery, negative-delivery\n\
Content-type: text/plain\n\
Content-length: 12\n\
\n\
Hello World\n";

    #[test]
    fn rfc5438_7_1_1_missing_blank_line_is_accepted() {
        let m = CpimMessage::parse(RFC5438_7_1_1.as_bytes()).unwrap();
        assert_eq!(m.imdn_message_id().as_deref(), Some("34jk324j"));
        assert_eq!(
            m.disposition_notification(),
            ["positive-delivery", "negative-delivery"]
        );
        assert_eq!(m.content().body(), b"Hello World\n");
        assert_eq!(m.content().header("Content-length").as_deref(), Some("12"));
        // Unchanged: the input comes back as it was, deviations included.
        assert_eq!(m.to_bytes(), RFC5438_7_1_1.as_bytes());
        // Strict output adds the blank line and CRLFs, and means the same.
        let strict = m.to_strict_bytes();
        assert!(strict.windows(4).any(|w| w == b"\r\n\r\n"));
        assert_eq!(CpimMessage::parse(&strict).unwrap(), m);
    }

    #[test]
    fn rfc5438_7_2_1_1_delivery_notification_body() {
        let input = "From: Bob <im:bob@example.com>\n\
To: Alice <im:alice@example.com>\n\
NS: imdn <urn:ietf:params:imdn>\n\
imdn.Message-ID: d834jied93rf\n\
Content-type: message/imdn+xml\n\
Content-Disposition: notification\n\
Content-length: ...\n\
\n\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\n\
</imdn>\n";
        let m = CpimMessage::parse(input.as_bytes()).unwrap();
        assert_eq!(
            m.content().content_type().unwrap().essence(),
            "message/imdn+xml"
        );
        assert_eq!(
            m.content().header("content-disposition").as_deref(),
            Some("notification")
        );
        assert!(m.content().body().starts_with(b"<?xml"));
        assert_eq!(m.to_bytes(), input.as_bytes());
    }

    #[test]
    fn rfc5438_7_2_1_3_outer_content_type_block() {
        let input = "Content-type: Message/CPIM\n\
\n\
From: Bob <im:bob@example.com>\n\
To: Alice <im:alice@example.com>\n\
Content-type: message/imdn+xml\n\
Content-Disposition: notification\n\
Content-length: ...\n\
\n\
<imdn/>";
        let m = CpimMessage::parse(input.as_bytes()).unwrap();
        assert_eq!(m.outer_headers().len(), 1);
        assert_eq!(m.headers().len(), 2);
        assert_eq!(m.content().body(), b"<imdn/>");
        assert_eq!(CpimMessage::parse(&m.to_strict_bytes()).unwrap(), m);
    }

    #[test]
    fn rfc5438_9_folded_multipart_content_type() {
        let input = crlf(
            "From: Bob <im:bob@example.com>\n\
NS: imdn <urn:ietf:params:imdn>\n\
imdn.Message-ID: d834jied93rf\n\
\n\
Content-type: multipart/mixed;\n\x20     boundary=\"imdn-boundary\"\n\
Content-Disposition: notification\n\
\n\
--imdn-boundary\n",
        );
        let m = CpimMessage::parse(&input).unwrap();
        let ct = m.content().content_type().unwrap();
        assert_eq!(ct.essence(), "multipart/mixed");
        assert_eq!(ct.param("boundary"), Some("imdn-boundary"));
        assert_eq!(m.to_strict_bytes(), input);
    }

    #[test]
    fn lenient_datetime_and_missing_space() {
        let m = CpimMessage::parse(b"From:<im:a@b.example>\r\nDateTime: 2006-04-04 12:16:49\r\n\r\nContent-Type: text/plain\r\n\r\n").unwrap();
        assert_eq!(m.from().unwrap().unwrap().uri, "im:a@b.example");
        assert_eq!(
            m.datetime().unwrap().unwrap().to_string(),
            "2006-04-04T12:16:49Z"
        );
        // Strict output inserts the space.
        assert!(m
            .to_strict_bytes()
            .starts_with(b"From: <im:a@b.example>\r\n"));
    }

    #[test]
    fn binary_body_is_carried_exactly() {
        let mut input =
            crlf("From: <im:a@b.example>\n\nContent-Type: application/octet-stream\n\n");
        input.extend_from_slice(&[0, 159, 146, 150, 13, 10, 13, 10, 255]);
        let m = CpimMessage::parse(&input).unwrap();
        assert_eq!(m.content().body(), &[0, 159, 146, 150, 13, 10, 13, 10, 255]);
        assert_eq!(m.to_strict_bytes(), input);
    }

    #[test]
    fn built_message_serializes_strictly() {
        let mut m = CpimMessage::new(MimeEntity::new(
            "text/plain; charset=utf-8",
            "h\u{e9}".as_bytes().to_vec(),
        ));
        m.push_header(
            Header::name_addr(
                "From",
                &NameAddr {
                    display_name: Some("Al \"X\"".into()),
                    uri: "im:al@x.example".into(),
                },
            )
            .unwrap(),
        );
        m.push_header(
            Header::new("Subject", "line1\nline2")
                .unwrap()
                .with_lang("en"),
        );
        let bytes = m.to_bytes();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "From: \"Al \\\"X\\\"\" <im:al@x.example>\r\nSubject:;lang=en line1\\nline2\r\n\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nh\u{e9}"
        );
        let back = CpimMessage::parse(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.subjects()[0].text, "line1\nline2");
    }

    #[test]
    fn invalid_inputs_are_typed_errors() {
        let cases: [(&[u8], CpimError); 11] = [
            (
                b"From <im:a@b>\r\n\r\nContent-Type: text/plain\r\n\r\n",
                CpimError::InvalidHeaderName {
                    line: 1,
                    name: "From <im".into(),
                },
            ),
            (
                b"From\r\n\r\nContent-Type: text/plain\r\n\r\n",
                CpimError::MalformedHeader { line: 1 },
            ),
            (
                b"Fr om: x\r\n\r\nContent-Type: text/plain\r\n\r\n",
                CpimError::InvalidHeaderName {
                    line: 1,
                    name: "Fr om".into(),
                },
            ),
            (
                b"a.b.c: x\r\n\r\nContent-Type: text/plain\r\n\r\n",
                CpimError::InvalidHeaderName {
                    line: 1,
                    name: "a.b.c".into(),
                },
            ),
            (
                b"Subject:;lang x\r\n\r\nContent-Type: text/plain\r\n\r\n",
                CpimError::InvalidParameter { line: 1 },
            ),
            (
                b"Subject: a\x01b\r\n\r\nContent-Type: text/plain\r\n\r\n",
                CpimError::ControlCharacter { line: 1, code: 1 },
            ),
            (
                b"Subject: \xff\r\n\r\nContent-Type: text/plain\r\n\r\n",
                CpimError::NotUtf8 { line: 1 },
            ),
            (
                b"NS: nope\r\n\r\nContent-Type: text/plain\r\n\r\n",
                CpimError::InvalidNs { line: 1 },
            ),
            (b"From: <im:a@b>\r\n", CpimError::Truncated),
            (
                b"From: <im:a@b>\r\n\r\nX-Foo: y\r\n\r\nbody",
                CpimError::MissingContentType,
            ),
            (
                b"From: <im:a@b>\r\n\r\n\tfold\r\n\r\n",
                CpimError::MalformedMimeHeader { line: 3 },
            ),
        ];
        for (input, err) in cases {
            assert_eq!(
                CpimMessage::parse(input).unwrap_err(),
                err,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        let m = CpimMessage::parse(
            b"From: im:a@b\r\nDateTime: yesterday\r\n\r\nContent-Type: text/plain\r\n\r\n",
        )
        .unwrap();
        assert!(matches!(m.from(), Err(CpimError::InvalidNameAddr { .. })));
        assert!(matches!(m.datetime(), Err(CpimError::DateTime(_))));
    }

    #[test]
    fn json_view_has_the_model() {
        let m = CpimMessage::parse(&crlf(RFC3862_5_1)).unwrap();
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["from"]["display_name"], "MR SANDERS");
        assert_eq!(v["subject"][1]["lang"], "fr");
        assert_eq!(
            v["headers"][7]["namespace"],
            "mid:MessageFeatures@id.foo.com"
        );
        assert_eq!(v["content"]["content_type"], "text/xml;charset=utf-8");
        assert_eq!(
            v["require"][0],
            "mid:MessageFeatures@id.foo.com#VitalMessageOption"
        );
    }

    fn header_value() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[^\\\\]{0,20}").unwrap()
    }

    proptest! {
        #[test]
        fn prop_parse_never_panics(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = CpimMessage::parse(&input).map(|m| serde_json::to_string(&m));
        }

        #[test]
        fn prop_built_messages_round_trip(
            subject in header_value(),
            name in "[A-Za-z][A-Za-z0-9-]{0,10}",
            value in header_value(),
            lang in proptest::option::of("[a-z]{2}"),
            body in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut m = CpimMessage::new(MimeEntity::new("application/octet-stream", body));
            m.push_header(Header::new("From", "<im:a@b.example>").unwrap());
            m.push_header(Header::new("NS", "x <urn:x:y>").unwrap());
            let mut s = Header::new("Subject", &subject).unwrap();
            if let Some(l) = &lang { s = s.with_lang(l); }
            m.push_header(s);
            m.push_header(Header::new(&format!("x.{name}"), &value).unwrap());
            let bytes = m.to_bytes();
            let back = CpimMessage::parse(&bytes).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.to_strict_bytes(), bytes);
            prop_assert_eq!(back.subjects()[0].text.clone(), subject);
            prop_assert_eq!(back.headers_in("urn:x:y", &name)[0].value(), value);
        }

        #[test]
        fn prop_escape_unescape(s in "\\PC{0,30}|[\\x00-\\x1f\\\\\"']{0,10}") {
            prop_assert_eq!(unescape(&escape(&s, None)), s.clone());
            prop_assert_eq!(unescape(&escape(&s, Some('"'))), s);
        }
    }
}
