//! Limits on the XML that reaches the XMPP parsers, applied to the raw bytes first.
//!
//! The XML parsers behind the component stream build each stanza as a tree, and building,
//! cloning, walking and dropping a tree recurse: a stanza nested a few thousand elements
//! deep overflows a task's stack and aborts the whole gateway. So every byte of the
//! stream goes through a [`Guard`] first: a small scanner (no tree, no recursion, no
//! clock, no socket) that follows just enough of XML to know where each stanza begins and
//! ends, how deep it nests, how many elements and attributes it has and how large it is.
//! A stanza within the [`Limits`] is passed on unchanged; one beyond them never reaches a
//! parser: it is dropped whole and reported as [`Refused`] (its name and addressing,
//! read from its start tag), so that the driver answers it with an error and the stream
//! goes on. What the stream itself may not carry (comments, processing instructions
//! after the prolog, a DTD, markup that is not XML) ends the stream with a
//! [`StreamViolation`] (RFC 6120 §11.1).
//!
//! [`check_document`] applies the same limits to one stanza read from a file
//! (`cpim-gateway translate --from xmpp`).

/// The default largest stanza, in bytes (Prosody's own default limit for client streams).
pub const DEFAULT_MAX_STANZA_BYTES: usize = 256 * 1024;

/// How deep elements may nest in a stanza, the stanza element being level 1 (the SIP
/// side's XML parsers use the same limit).
pub const MAX_DEPTH: usize = cpim::xml::MAX_DEPTH;

/// How many elements a stanza may have, its own element included.
pub const MAX_ELEMENTS: usize = 10_000;

/// How many attributes one element may have.
pub const MAX_ATTRIBUTES: usize = 128;

/// Attribute values of a stanza's start tag kept for the error reply, at most this long
/// (a JID is at most 3 071 bytes, RFC 7622 §3.1).
const MAX_CAPTURED_VALUE: usize = 3072;

/// What a stanza may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting (the stanza element is level 1).
    pub max_depth: usize,
    /// Most elements in one stanza.
    pub max_elements: usize,
    /// Most attributes on one element.
    pub max_attributes: usize,
    /// Largest stanza in bytes, as written on the stream.
    pub max_stanza_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: MAX_DEPTH,
            max_elements: MAX_ELEMENTS,
            max_attributes: MAX_ATTRIBUTES,
            max_stanza_bytes: DEFAULT_MAX_STANZA_BYTES,
        }
    }
}

/// Which limit a stanza went beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    /// Nested deeper than the limit.
    #[error("elements nested deeper than {limit} levels")]
    Depth {
        /// [`Limits::max_depth`].
        limit: usize,
    },
    /// More elements than the limit.
    #[error("more than {limit} elements")]
    Elements {
        /// [`Limits::max_elements`].
        limit: usize,
    },
    /// An element with more attributes than the limit.
    #[error("an element with more than {limit} attributes")]
    Attributes {
        /// [`Limits::max_attributes`].
        limit: usize,
    },
    /// Larger than the limit.
    #[error("larger than {limit} bytes")]
    Size {
        /// [`Limits::max_stanza_bytes`].
        limit: usize,
    },
}

/// A stanza kept from the parser: what its start tag said, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The element's local name (`message`, `presence`, `iq`, …).
    pub name: String,
    /// Its `from`, `to`, `id` and `type` attributes, as far as present (entities decoded).
    pub attributes: Vec<(&'static str, String)>,
    /// The limit it went beyond (the first one met).
    pub exceeded: Exceeded,
}

impl Refused {
    /// The value of the captured attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// XML that a stream may not carry: the stream cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamViolation {
    /// Something RFC 6120 §11.1 forbids (comments, processing instructions, a DTD).
    #[error("restricted XML on the stream: {0}")]
    Restricted(&'static str),
    /// Bytes that are not well-formed markup.
    #[error("malformed XML on the stream: {0}")]
    Malformed(&'static str),
    /// A tag outside every stanza (the stream header) beyond the limits.
    #[error("a stream-level tag beyond the limits: {0}")]
    Limit(Exceeded),
}

/// Why one document was refused by [`check_document`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Beyond the limits.
    #[error("the stanza is {0}")]
    Exceeded(Exceeded),
    /// Not XML the stream would carry.
    #[error(transparent)]
    Violation(#[from] StreamViolation),
}

/// Checks one stanza (a whole document, its root being the stanza) against `limits`.
pub fn check_document(input: &[u8], limits: Limits) -> Result<(), DocumentError> {
    let mut guard = Guard::with_base(limits, 0);
    let mut out = Vec::new();
    let mut refused = Vec::new();
    guard.feed(input, &mut out, &mut refused)?;
    if let Some(refused) = refused.into_iter().next() {
        return Err(DocumentError::Exceeded(refused.exceeded));
    }
    if let Some(stanza) = &guard.stanza {
        if let Some(exceeded) = stanza.exceeded {
            return Err(DocumentError::Exceeded(exceeded));
        }
    }
    Ok(())
}

/// Where the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Character data (or nothing) between tags.
    Text,
    /// Just after `<`.
    Lt,
    /// In a start tag's name.
    StartName,
    /// In a start tag, between attributes.
    InTag,
    /// In an attribute's name.
    AttrName,
    /// After an attribute's name, before `=`.
    AfterAttrName,
    /// After `=`, before the quote.
    BeforeValue,
    /// In a value quoted with this byte.
    Value(u8),
    /// After `/` in a start tag.
    SelfClose,
    /// In an end tag.
    EndTag,
    /// After `<!`: this many bytes of `[CDATA[` matched.
    Bang(usize),
    /// In a CDATA section: this many `]` just seen.
    Cdata(usize),
    /// In the XML declaration: whether `?` was just seen.
    Pi(bool),
}

const CDATA_OPEN: &[u8] = b"[CDATA[";

/// The stanza being read.
#[derive(Debug, Default)]
struct Stanza {
    /// Its bytes so far (emptied once a limit is met).
    bytes: Vec<u8>,
    /// Its elements so far.
    elements: usize,
    /// The first limit met.
    exceeded: Option<Exceeded>,
    /// Whether only `<` was seen: it may yet be the stream's end tag.
    provisional: bool,
    /// Its element's name.
    name: Vec<u8>,
    /// Captured attributes of its start tag.
    attributes: Vec<(&'static str, String)>,
    /// Whether its start tag is still being read.
    in_start_tag: bool,
}

/// The scanner in front of a stream's parser (see the module docs).
#[derive(Debug)]
pub struct Guard {
    limits: Limits,
    /// The depth at which stanzas begin: 1 on a stream (children of `<stream:stream>`),
    /// 0 for one document.
    base: usize,
    state: State,
    /// Elements open now.
    depth: usize,
    /// Attributes of the start tag being read.
    tag_attributes: usize,
    /// Bytes of the stream-level tag being read (outside every stanza).
    tag_bytes: usize,
    /// Whether the root element was seen (a processing instruction is allowed before).
    started: bool,
    stanza: Option<Stanza>,
    /// The attribute of the stanza's start tag being captured, and its value so far.
    capture: Option<(&'static str, Vec<u8>)>,
    attr_name: Vec<u8>,
}

impl Guard {
    /// A guard for a component stream: stanzas are the children of the stream element.
    pub fn new(limits: Limits) -> Guard {
        Guard::with_base(limits, 1)
    }

    fn with_base(limits: Limits, base: usize) -> Guard {
        Guard {
            limits,
            base,
            state: State::Text,
            depth: 0,
            tag_attributes: 0,
            tag_bytes: 0,
            started: false,
            stanza: None,
            capture: None,
            attr_name: Vec::new(),
        }
    }

    /// Scans `input`, the next bytes of the stream: appends to `out` what may go to the
    /// parser (everything outside stanzas at once, each stanza whole once it has ended
    /// within the limits), and to `refused` each stanza that ended beyond them.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        refused: &mut Vec<Refused>,
    ) -> Result<(), StreamViolation> {
        for &byte in input {
            if self.state == State::Text
                && byte == b'<'
                && self.depth == self.base
                && self.stanza.is_none()
            {
                self.stanza = Some(Stanza {
                    provisional: true,
                    ..Stanza::default()
                });
            }
            self.emit(byte, out)?;
            self.step(byte, out, refused)?;
        }
        Ok(())
    }

    /// Puts `byte` where it belongs: into the stanza being read, or out.
    fn emit(&mut self, byte: u8, out: &mut Vec<u8>) -> Result<(), StreamViolation> {
        match &mut self.stanza {
            Some(stanza) => {
                if stanza.exceeded.is_none() {
                    if stanza.bytes.len() >= self.limits.max_stanza_bytes {
                        stanza.exceeded = Some(Exceeded::Size {
                            limit: self.limits.max_stanza_bytes,
                        });
                        stanza.bytes = Vec::new();
                    } else {
                        stanza.bytes.push(byte);
                    }
                }
            }
            None => {
                if self.state != State::Text {
                    self.tag_bytes += 1;
                    if self.tag_bytes > self.limits.max_stanza_bytes {
                        return Err(StreamViolation::Limit(Exceeded::Size {
                            limit: self.limits.max_stanza_bytes,
                        }));
                    }
                }
                out.push(byte);
            }
        }
        Ok(())
    }

    fn step(
        &mut self,
        byte: u8,
        out: &mut Vec<u8>,
        refused: &mut Vec<Refused>,
    ) -> Result<(), StreamViolation> {
        let space = matches!(byte, b' ' | b'\t' | b'\r' | b'\n');
        self.state = match self.state {
            State::Text => {
                if byte == b'<' {
                    self.tag_bytes = 1;
                    State::Lt
                } else {
                    State::Text
                }
            }
            State::Lt => match byte {
                b'/' => {
                    self.not_a_stanza(out);
                    if self.depth == 0 {
                        return Err(StreamViolation::Malformed(
                            "an end tag with no element open",
                        ));
                    }
                    State::EndTag
                }
                b'!' => {
                    self.not_a_stanza(out);
                    State::Bang(0)
                }
                b'?' => {
                    self.not_a_stanza(out);
                    if self.started {
                        return Err(StreamViolation::Restricted("a processing instruction"));
                    }
                    State::Pi(false)
                }
                b'>' | b'=' | b'"' | b'\'' | b'<' => {
                    return Err(StreamViolation::Malformed("a tag without a name"))
                }
                _ if space => return Err(StreamViolation::Malformed("a tag without a name")),
                _ => {
                    self.start_element(byte);
                    State::StartName
                }
            },
            State::StartName => match byte {
                b'>' => self.open_complete(),
                b'/' => State::SelfClose,
                _ if space => State::InTag,
                _ => {
                    if let Some(stanza) = self.stanza_start_tag() {
                        if stanza.name.len() < 64 {
                            stanza.name.push(byte);
                        }
                    }
                    State::StartName
                }
            },
            State::InTag => match byte {
                b'>' => self.open_complete(),
                b'/' => State::SelfClose,
                _ if space => State::InTag,
                b'=' | b'"' | b'\'' | b'<' => {
                    return Err(StreamViolation::Malformed("an attribute without a name"))
                }
                _ => {
                    self.start_attribute(byte)?;
                    State::AttrName
                }
            },
            State::AttrName => match byte {
                b'=' => self.begin_value(),
                _ if space => State::AfterAttrName,
                b'>' | b'/' | b'<' | b'"' | b'\'' => {
                    return Err(StreamViolation::Malformed("an attribute without a value"))
                }
                _ => {
                    if self.attr_name.len() < 16 {
                        self.attr_name.push(byte);
                    }
                    State::AttrName
                }
            },
            State::AfterAttrName => match byte {
                b'=' => self.begin_value(),
                _ if space => State::AfterAttrName,
                _ => return Err(StreamViolation::Malformed("an attribute without a value")),
            },
            State::BeforeValue => match byte {
                b'"' | b'\'' => State::Value(byte),
                _ if space => State::BeforeValue,
                _ => return Err(StreamViolation::Malformed("an unquoted attribute value")),
            },
            State::Value(quote) => {
                if byte == quote {
                    self.end_value();
                    State::InTag
                } else {
                    if let Some((_, value)) = &mut self.capture {
                        if value.len() <= MAX_CAPTURED_VALUE {
                            value.push(byte);
                        }
                    }
                    State::Value(quote)
                }
            }
            State::SelfClose => {
                if byte != b'>' {
                    return Err(StreamViolation::Malformed("`/` inside a start tag"));
                }
                self.end_start_tag();
                // The element ended at once: the stanza if it was one.
                if self.depth == self.base {
                    self.finish_stanza(out, refused);
                }
                State::Text
            }
            State::EndTag => {
                if byte == b'>' {
                    self.depth -= 1;
                    if self.depth == self.base {
                        self.finish_stanza(out, refused);
                    }
                    State::Text
                } else {
                    State::EndTag
                }
            }
            State::Bang(matched) => {
                if matched == 0 && byte == b'-' {
                    return Err(StreamViolation::Restricted("a comment"));
                }
                if CDATA_OPEN.get(matched) != Some(&byte) {
                    return Err(StreamViolation::Restricted("a document type declaration"));
                }
                if self.depth <= self.base.saturating_sub(1) && self.stanza.is_none() {
                    return Err(StreamViolation::Malformed(
                        "character data outside an element",
                    ));
                }
                if matched + 1 == CDATA_OPEN.len() {
                    State::Cdata(0)
                } else {
                    State::Bang(matched + 1)
                }
            }
            State::Cdata(brackets) => match byte {
                b']' => State::Cdata((brackets + 1).min(2)),
                b'>' if brackets == 2 => State::Text,
                _ => State::Cdata(0),
            },
            State::Pi(question) => match byte {
                b'>' if question => State::Text,
                b'?' => State::Pi(true),
                _ => State::Pi(false),
            },
        };
        Ok(())
    }

    /// The `<` just read does not open a stanza (an end tag, CDATA, a declaration): what
    /// was held for one goes out.
    fn not_a_stanza(&mut self, out: &mut Vec<u8>) {
        if self.stanza.as_ref().is_some_and(|s| s.provisional) {
            if let Some(stanza) = self.stanza.take() {
                out.extend_from_slice(&stanza.bytes);
                self.tag_bytes = stanza.bytes.len();
            }
        }
    }

    /// The stanza, while its own start tag is read.
    fn stanza_start_tag(&mut self) -> Option<&mut Stanza> {
        self.stanza.as_mut().filter(|s| s.in_start_tag)
    }

    fn exceed(&mut self, exceeded: Exceeded) {
        if let Some(stanza) = &mut self.stanza {
            if stanza.exceeded.is_none() {
                stanza.exceeded = Some(exceeded);
                stanza.bytes = Vec::new();
            }
        }
    }

    /// A start tag's name begins with `first`.
    fn start_element(&mut self, first: u8) {
        self.started = true;
        self.tag_attributes = 0;
        let level = self.depth + 1;
        let limits = self.limits;
        let base = self.base;
        let Some(stanza) = &mut self.stanza else {
            return;
        };
        if stanza.provisional {
            stanza.provisional = false;
            stanza.in_start_tag = true;
            stanza.name.push(first);
        }
        stanza.elements += 1;
        let elements = stanza.elements;
        if level - base > limits.max_depth {
            self.exceed(Exceeded::Depth {
                limit: limits.max_depth,
            });
        } else if elements > limits.max_elements {
            self.exceed(Exceeded::Elements {
                limit: limits.max_elements,
            });
        }
    }

    fn start_attribute(&mut self, first: u8) -> Result<(), StreamViolation> {
        self.tag_attributes += 1;
        self.attr_name.clear();
        self.attr_name.push(first);
        if self.tag_attributes > self.limits.max_attributes {
            let exceeded = Exceeded::Attributes {
                limit: self.limits.max_attributes,
            };
            if self.stanza.is_none() {
                return Err(StreamViolation::Limit(exceeded));
            }
            self.exceed(exceeded);
        }
        Ok(())
    }

    fn begin_value(&mut self) -> State {
        if self.stanza_start_tag().is_some() {
            let name = match self.attr_name.as_slice() {
                b"from" => Some("from"),
                b"to" => Some("to"),
                b"id" => Some("id"),
                b"type" => Some("type"),
                _ => None,
            };
            self.capture = name.map(|n| (n, Vec::new()));
        }
        State::BeforeValue
    }

    fn end_value(&mut self) {
        let Some((name, value)) = self.capture.take() else {
            return;
        };
        if value.len() > MAX_CAPTURED_VALUE {
            return;
        }
        if let Some(stanza) = self.stanza_start_tag() {
            if let Some(value) = unescape(&value) {
                stanza.attributes.retain(|(n, _)| *n != name);
                stanza.attributes.push((name, value));
            }
        }
    }

    /// A start tag ended with `>` or `/>`.
    fn end_start_tag(&mut self) {
        if let Some(stanza) = &mut self.stanza {
            stanza.in_start_tag = false;
        }
    }

    fn open_complete(&mut self) -> State {
        self.end_start_tag();
        self.depth += 1;
        State::Text
    }

    fn finish_stanza(&mut self, out: &mut Vec<u8>, refused: &mut Vec<Refused>) {
        let Some(stanza) = self.stanza.take() else {
            return;
        };
        match stanza.exceeded {
            None => out.extend_from_slice(&stanza.bytes),
            Some(exceeded) => {
                let name = String::from_utf8_lossy(&stanza.name);
                let local = name.rsplit(':').next().unwrap_or_default().to_owned();
                refused.push(Refused {
                    name: local,
                    attributes: stanza.attributes,
                    exceeded,
                });
            }
        }
    }
}

/// An attribute value with its references decoded; `None` if one is malformed or the
/// value is not UTF-8.
fn unescape(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after.find(';')?;
        let reference = &after[..end];
        let decoded = match reference {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let number = if let Some(hex) = reference
                    .strip_prefix("#x")
                    .or_else(|| reference.strip_prefix("#X"))
                {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    reference.strip_prefix('#')?.parse::<u32>().ok()?
                };
                char::from_u32(number)?
            }
        };
        out.push(decoded);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' from='gw.example' id='s1'>";

    /// Feeds `chunks` one after another; returns what went out and what was refused.
    fn run(
        limits: Limits,
        chunks: &[&[u8]],
    ) -> (Vec<u8>, Vec<Refused>, Result<(), StreamViolation>) {
        let mut guard = Guard::new(limits);
        let mut out = Vec::new();
        let mut refused = Vec::new();
        for chunk in chunks {
            if let Err(e) = guard.feed(chunk, &mut out, &mut refused) {
                return (out, refused, Err(e));
            }
        }
        (out, refused, Ok(()))
    }

    fn deep(levels: usize) -> String {
        format!(
            "<message from='a@x/r' to='b@gw.example' id='m1' type='chat'>{}{}</message>",
            "<a>".repeat(levels - 1),
            "</a>".repeat(levels - 1)
        )
    }

    #[test]
    fn stanzas_within_the_limits_pass_unchanged_whatever_the_chunking() {
        let input = format!(
            "{HEADER}<message from='a@x' to='b@gw.example'><body>1 &lt; 2 &amp; 3 > 2</body></message> \
             <iq type='get' id='p' from='x' to='gw.example'><ping xmlns='urn:xmpp:ping'/></iq>\
             <presence from='a@x'/><message to='y'><body><![CDATA[<not><a><tag>]]]></body></message>\
             {}</stream:stream>",
            deep(MAX_DEPTH)
        );
        let whole = run(Limits::default(), &[input.as_bytes()]);
        assert_eq!(whole.0, input.as_bytes());
        assert!(whole.1.is_empty());
        assert_eq!(whole.2, Ok(()));
        // Byte by byte: the same.
        let bytes: Vec<&[u8]> = input.as_bytes().chunks(1).collect();
        let split = run(Limits::default(), &bytes);
        assert_eq!(split.0, input.as_bytes());
        assert!(split.1.is_empty());
    }

    #[test]
    fn a_stanza_is_held_until_it_ends() {
        let mut guard = Guard::new(Limits::default());
        let mut out = Vec::new();
        let mut refused = Vec::new();
        guard
            .feed(HEADER.as_bytes(), &mut out, &mut refused)
            .unwrap();
        assert_eq!(out, HEADER.as_bytes());
        guard
            .feed(b" <message to='y'><body>hi</bo", &mut out, &mut refused)
            .unwrap();
        assert_eq!(
            out.len(),
            HEADER.len() + 1,
            "the whitespace keepalive goes at once"
        );
        guard
            .feed(b"dy></message>", &mut out, &mut refused)
            .unwrap();
        assert!(out.ends_with(b"<message to='y'><body>hi</body></message>"));
    }

    #[test]
    fn a_deep_stanza_is_refused_with_its_addressing_and_the_stream_goes_on() {
        let input = format!(
            "{HEADER}{}<message from='a&amp;b@x/r' to='c@gw.example'><body>after</body></message>",
            deep(4000)
        );
        let (out, refused, result) = run(Limits::default(), &[input.as_bytes()]);
        assert_eq!(result, Ok(()));
        let out = String::from_utf8(out).unwrap();
        assert!(
            !out.contains("<a>"),
            "nothing of the deep stanza goes to the parser"
        );
        assert!(out.ends_with(
            "<message from='a&amp;b@x/r' to='c@gw.example'><body>after</body></message>"
        ));
        assert_eq!(refused.len(), 1);
        let r = &refused[0];
        assert_eq!(r.name, "message");
        assert_eq!(r.attr("from"), Some("a@x/r"));
        assert_eq!(r.attr("to"), Some("b@gw.example"));
        assert_eq!(r.attr("id"), Some("m1"));
        assert_eq!(r.attr("type"), Some("chat"));
        assert_eq!(r.exceeded, Exceeded::Depth { limit: MAX_DEPTH });
        // One level more than allowed is enough.
        let (_, refused, _) = run(
            Limits::default(),
            &[HEADER.as_bytes(), deep(MAX_DEPTH + 1).as_bytes()],
        );
        assert_eq!(refused.len(), 1);
    }

    #[test]
    fn a_deep_self_closing_element_counts() {
        let input = format!(
            "{HEADER}<message from='a@x'>{}<b/>{}</message>",
            "<a>".repeat(MAX_DEPTH - 1),
            "</a>".repeat(MAX_DEPTH - 1)
        );
        let (_, refused, _) = run(Limits::default(), &[input.as_bytes()]);
        assert_eq!(refused[0].exceeded, Exceeded::Depth { limit: MAX_DEPTH });
    }

    #[test]
    fn wide_stanzas_are_refused() {
        let many = format!(
            "{HEADER}<message from='a@x'>{}</message>",
            "<x/>".repeat(MAX_ELEMENTS)
        );
        let (_, refused, _) = run(Limits::default(), &[many.as_bytes()]);
        assert_eq!(
            refused[0].exceeded,
            Exceeded::Elements {
                limit: MAX_ELEMENTS
            }
        );
        let attrs: String = (0..=MAX_ATTRIBUTES).map(|i| format!(" a{i}='v'")).collect();
        let wide = format!("{HEADER}<message from='a@x'><x{attrs}/></message>");
        let (_, refused, _) = run(Limits::default(), &[wide.as_bytes()]);
        assert_eq!(
            refused[0].exceeded,
            Exceeded::Attributes {
                limit: MAX_ATTRIBUTES
            }
        );
        // Many attributes on the stanza itself: its addressing is still read.
        let wide = format!("<message{attrs} from='a@x' id='w'/>");
        let (_, refused, _) = run(Limits::default(), &[HEADER.as_bytes(), wide.as_bytes()]);
        assert_eq!(refused[0].attr("from"), Some("a@x"));
        assert_eq!(refused[0].attr("id"), Some("w"));
    }

    #[test]
    fn a_large_stanza_is_refused_without_being_kept() {
        let limits = Limits {
            max_stanza_bytes: 1000,
            ..Limits::default()
        };
        let body = "x".repeat(5000);
        let input = format!("{HEADER}<message from='a@x' id='big'><body>{body}</body></message><presence from='a@x'/>");
        let mut guard = Guard::new(limits);
        let mut out = Vec::new();
        let mut refused = Vec::new();
        guard
            .feed(&input.as_bytes()[..2000], &mut out, &mut refused)
            .unwrap();
        let held = guard
            .stanza
            .as_ref()
            .map(|s| s.bytes.capacity())
            .unwrap_or(0);
        assert!(held <= 1024, "held {held} bytes of a stanza over the limit");
        guard
            .feed(&input.as_bytes()[2000..], &mut out, &mut refused)
            .unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].exceeded, Exceeded::Size { limit: 1000 });
        assert!(out.ends_with(b"<presence from='a@x'/>"));
        // Exactly at the limit passes.
        let frame = "<message id='e'><body></body></message>".len();
        let exact = format!(
            "<message id='e'><body>{}</body></message>",
            "y".repeat(1000 - frame)
        );
        assert_eq!(exact.len(), 1000);
        let (out, refused, _) = run(limits, &[HEADER.as_bytes(), exact.as_bytes()]);
        assert!(refused.is_empty());
        assert!(out.ends_with(exact.as_bytes()));
    }

    #[test]
    fn restricted_xml_ends_the_stream() {
        for bad in [
            "<!-- hi -->",
            "<message><!-- hi --></message>",
            "<?pi x?>",
            "<!DOCTYPE x>",
            "< message/>",
            "<message to=x/>",
            "</stream:stream></x>",
        ] {
            let (_, _, result) = run(Limits::default(), &[HEADER.as_bytes(), bad.as_bytes()]);
            assert!(result.is_err(), "{bad} was taken");
        }
    }

    #[test]
    fn the_stream_end_tag_passes_at_once() {
        let (out, _, result) = run(Limits::default(), &[HEADER.as_bytes(), b"</stream:stream>"]);
        assert_eq!(result, Ok(()));
        assert!(out.ends_with(b"</stream:stream>"));
    }

    #[test]
    fn a_huge_stream_header_ends_the_stream() {
        let limits = Limits {
            max_stanza_bytes: 100,
            ..Limits::default()
        };
        let header = format!("<stream:stream from='{}'>", "x".repeat(200));
        let (_, _, result) = run(limits, &[header.as_bytes()]);
        assert!(matches!(result, Err(StreamViolation::Limit(_))));
    }

    #[test]
    fn documents_are_checked_the_same_way() {
        assert_eq!(
            check_document(deep(MAX_DEPTH).as_bytes(), Limits::default()),
            Ok(())
        );
        assert_eq!(
            check_document(deep(100_000).as_bytes(), Limits::default()),
            Err(DocumentError::Exceeded(Exceeded::Depth {
                limit: MAX_DEPTH
            }))
        );
        // Unfinished deep input too.
        let open = "<message>".to_owned() + &"<a>".repeat(1000);
        assert_eq!(
            check_document(open.as_bytes(), Limits::default()),
            Err(DocumentError::Exceeded(Exceeded::Depth {
                limit: MAX_DEPTH
            }))
        );
    }

    #[test]
    fn references_in_captured_values_are_decoded() {
        assert_eq!(
            unescape(b"a&amp;b&#x41;&#66;&lt;&gt;&quot;&apos;").as_deref(),
            Some("a&bAB<>\"'")
        );
        assert_eq!(unescape(b"a&bogus"), None);
        assert_eq!(unescape(b"&#xD800;"), None);
    }
}
