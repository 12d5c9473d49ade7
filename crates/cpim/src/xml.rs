//! A small namespace-aware XML element tree, the common ground of the PIDF, IMDN and
//! isComposing codecs.
//!
//! [`parse`] reads one UTF-8 document with quick-xml's `NsReader` into an [`Element`] whose
//! names are resolved to `(namespace, local name)`; [`Element::to_document`] and the
//! [`Display`](std::fmt::Display) impl write it back with whatever namespace declarations the
//! output needs, so an element cut out of one document and put into another stays valid.
//!
//! What the parser accepts:
//!
//! - UTF-8 only (an optional byte-order mark is skipped); an XML declaration naming another
//!   encoding is rejected with [`XmlError::UnsupportedEncoding`].
//! - At most [`MAX_DOCUMENT_BYTES`] bytes and [`MAX_DEPTH`] nested elements.
//! - No DTD at all ([`XmlError::Dtd`]), so no entity other than the five predefined ones
//!   (`&lt;` `&gt;` `&amp;` `&apos;` `&quot;`) and character references
//!   ([`XmlError::UndefinedEntity`]); characters outside the XML 1.0 `Char` production are
//!   rejected, whether literal or referenced.
//! - Every prefix must be declared ([`XmlError::UnboundPrefix`]); two attributes with the same
//!   expanded name are rejected ([`XmlError::DuplicateAttribute`]).
//!
//! What the tree keeps: element and attribute names with their namespace and the prefix as
//! written, attribute order, and text (CDATA sections and references are merged into the
//! surrounding text; line ends are normalised as XML requires). It drops comments,
//! processing instructions and the `xmlns` declarations themselves — the writer recreates the
//! declarations it needs.
//!
//! The writer is canonical: no indentation is added, attributes are written in model order,
//! `&`, `<`, `>` (and `"`, TAB, LF, CR in attribute values, CR in text) are escaped so that a
//! re-parse gives back the same tree. A prefix used with one namespace throughout the tree is
//! declared once on the outermost element written. Characters that XML 1.0 cannot carry at all
//! (for example U+0001 in a hand-built model) are written as U+FFFD.
//! Names in a hand-built tree are written as they are, not validated.

use std::collections::BTreeMap;
use std::fmt;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::{NsReader, XmlVersion};
use serde::{Deserialize, Serialize};

/// The largest document [`parse`] accepts, in bytes (1 MiB). Presence documents, IMDNs and
/// composing indications are a few kilobytes; anything this big is refused before parsing.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// The deepest element nesting [`parse`] accepts (the root is depth 1).
pub const MAX_DEPTH: usize = 64;

/// The namespace bound to the reserved `xml` prefix (`xml:lang`).
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Why a byte string is not an XML document this module accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// The input is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("document of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input in bytes.
        size: usize,
        /// The limit, [`MAX_DOCUMENT_BYTES`].
        limit: usize,
    },
    /// Elements are nested deeper than [`MAX_DEPTH`].
    #[error("elements nested deeper than {limit} levels")]
    TooDeep {
        /// The limit, [`MAX_DEPTH`].
        limit: usize,
    },
    /// The input is not valid UTF-8.
    #[error("document is not valid UTF-8")]
    NotUtf8,
    /// The XML declaration names an encoding other than UTF-8.
    #[error("unsupported document encoding {0:?}")]
    UnsupportedEncoding(String),
    /// The document has a document type declaration; DTDs are never processed.
    #[error("document type declarations are not accepted")]
    Dtd,
    /// A reference to an entity other than the five predefined ones.
    #[error("undefined entity &{0};")]
    UndefinedEntity(String),
    /// A character that XML 1.0 does not allow, literally or as a character reference.
    #[error("character U+{0:04X} is not allowed in XML")]
    InvalidCharacter(u32),
    /// A prefix used in an element or attribute name is not declared.
    #[error("undeclared namespace prefix {0:?}")]
    UnboundPrefix(String),
    /// Two attributes of one element have the same namespace and local name.
    #[error("duplicate attribute {0:?}")]
    DuplicateAttribute(String),
    /// The document has no root element.
    #[error("document has no root element")]
    MissingRoot,
    /// Text or a second element appears outside the root element.
    #[error("content outside the root element")]
    ContentOutsideRoot,
    /// The input ends inside an element.
    #[error("document ends inside element <{0}>")]
    UnclosedElement(String),
    /// Any other well-formedness error, as reported by the XML reader.
    #[error("malformed XML: {0}")]
    Syntax(String),
}

/// An element: a namespace-qualified name, attributes and children.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Element {
    /// Namespace name (a URI), `None` for an unqualified element.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Local name.
    pub name: String,
    /// Prefix as written in the source, reused on output; `None` means the default namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Attributes in document order, without `xmlns` declarations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<Attribute>,
    /// Child elements and text in document order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Node>,
}

/// An attribute of an [`Element`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Attribute {
    /// Namespace name; `None` for the usual unprefixed attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Prefix as written, reused on output when possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Local name.
    pub name: String,
    /// Value, unescaped and normalised.
    pub value: String,
}

/// A child of an [`Element`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data (adjacent text, CDATA and references are merged).
    Text(String),
}

impl Element {
    /// An empty element `name` in `namespace`, written with the default namespace.
    pub fn new(namespace: Option<&str>, name: &str) -> Element {
        Element {
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
            prefix: None,
            attributes: Vec::new(),
            children: Vec::new(),
        }
    }

    /// The same element, written with `prefix` instead of the default namespace.
    pub fn with_prefix(mut self, prefix: &str) -> Element {
        self.prefix = Some(prefix.to_owned());
        self
    }

    /// The same element with an unqualified attribute appended.
    pub fn with_attribute(mut self, name: &str, value: &str) -> Element {
        self.attributes.push(Attribute {
            namespace: None,
            prefix: None,
            name: name.to_owned(),
            value: value.to_owned(),
        });
        self
    }

    /// The same element with a child element appended.
    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// The same element with a text child appended (nothing for empty text).
    pub fn with_text(mut self, text: &str) -> Element {
        if !text.is_empty() {
            self.children.push(Node::Text(text.to_owned()));
        }
        self
    }

    /// Whether this element is `name` in `namespace`.
    pub fn is(&self, namespace: &str, name: &str) -> bool {
        self.namespace.as_deref() == Some(namespace) && self.name == name
    }

    /// The value of the attribute `name` in `namespace` (`None` for unqualified), if present.
    pub fn attribute(&self, namespace: Option<&str>, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.namespace.as_deref() == namespace && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// The child elements, in order.
    pub fn child_elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The concatenated text children (not descendants).
    pub fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }

    /// This element as a complete document: `<?xml version="1.0" encoding="UTF-8"?>`, a line
    /// feed, then the element.
    pub fn to_document(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        write_root(self, &mut out);
        out
    }
}

/// Writes the element alone (no XML declaration), declaring every namespace it uses.
impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        write_root(self, &mut out);
        f.write_str(&out)
    }
}

/// Parses one UTF-8 XML document into its root element.
///
/// See the [module documentation](self) for the limits and what is kept.
pub fn parse(input: &[u8]) -> Result<Element, XmlError> {
    if input.len() > MAX_DOCUMENT_BYTES {
        return Err(XmlError::TooLarge {
            size: input.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let text = std::str::from_utf8(input).map_err(|_| XmlError::NotUtf8)?;
    if let Some(c) = text.chars().find(|&c| !is_xml_char(c)) {
        return Err(XmlError::InvalidCharacter(u32::from(c)));
    }

    let mut reader = NsReader::from_str(text);
    reader.config_mut().check_comments = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let (resolved, event) = reader.read_resolved_event().map_err(reader_error)?;
        let namespace = owned_namespace(resolved);
        match event {
            Event::Decl(decl) => {
                if let Some(encoding) = decl.encoding() {
                    let encoding = encoding.map_err(|e| XmlError::Syntax(e.to_string()))?;
                    if !encoding.eq_ignore_ascii_case("utf-8") {
                        return Err(XmlError::UnsupportedEncoding(encoding.into_owned()));
                    }
                }
            }
            Event::DocType(_) => return Err(XmlError::Dtd),
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(XmlError::ContentOutsideRoot);
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep { limit: MAX_DEPTH });
                }
                stack.push(start_element(&reader, namespace?, &start)?);
            }
            Event::Empty(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep { limit: MAX_DEPTH });
                }
                let element = start_element(&reader, namespace?, &start)?;
                close(element, &mut stack, &mut root);
            }
            Event::End(_) => {
                let element = stack
                    .pop()
                    .ok_or_else(|| XmlError::Syntax("unexpected end tag".to_owned()))?;
                close(element, &mut stack, &mut root);
            }
            Event::Text(t) => push_text(&mut stack, &t.xml10_content())?,
            Event::CData(t) => push_text(&mut stack, &t.xml10_content())?,
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match &*r {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        other => return Err(XmlError::UndefinedEntity(other.to_owned())),
                    },
                    Err(e) => return Err(XmlError::Syntax(e.to_string())),
                };
                if !is_xml_char(c) {
                    return Err(XmlError::InvalidCharacter(u32::from(c)));
                }
                if stack.is_empty() {
                    return Err(XmlError::ContentOutsideRoot);
                }
                push_text(&mut stack, c.encode_utf8(&mut [0; 4]))?;
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError::UnclosedElement(open.name.clone()));
    }
    root.ok_or(XmlError::MissingRoot)
}

/// Checks an element or attribute name against the Namespaces in XML `NCName`
/// production (ASCII letters, digits, `_`, `-`, `.`, and any non-ASCII character; not
/// starting with a digit, `-` or `.`), so that whatever parses can be written again.
fn check_name(local: &str, prefix: Option<&str>) -> Result<(), XmlError> {
    let ncname = |n: &str| {
        let n = n.as_bytes();
        n.first()
            .is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_' || b >= 0x80)
            && n.iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') || b >= 0x80)
    };
    if ncname(local) && prefix.is_none_or(ncname) {
        Ok(())
    } else {
        Err(XmlError::Syntax(format!("invalid name `{local}`")))
    }
}

/// Whether `c` matches the XML 1.0 `Char` production.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn reader_error(error: quick_xml::Error) -> XmlError {
    match error {
        quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(_, name)) => {
            XmlError::UndefinedEntity(name)
        }
        quick_xml::Error::IllFormed(quick_xml::errors::IllFormedError::MissingEndTag(name)) => {
            XmlError::UnclosedElement(name)
        }
        other => XmlError::Syntax(other.to_string()),
    }
}

fn owned_namespace(resolved: ResolveResult<'_>) -> Result<Option<String>, XmlError> {
    match resolved {
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Bound(ns) if ns.0.is_empty() => Ok(None),
        // The resolver keeps the declaration's value as written; undo its escapes so
        // that `xmlns="a&amp;b"` names the namespace `a&b`.
        ResolveResult::Bound(ns) => quick_xml::escape::unescape(ns.0)
            .map(|n| Some(n.into_owned()))
            .map_err(|e| XmlError::Syntax(e.to_string())),
        ResolveResult::Unknown(prefix) => Err(XmlError::UnboundPrefix(prefix)),
    }
}

fn start_element(
    reader: &NsReader<&[u8]>,
    namespace: Option<String>,
    start: &BytesStart<'_>,
) -> Result<Element, XmlError> {
    let qname = start.name();
    let (local, prefix) = qname.decompose();
    check_name(local.into_inner(), prefix.map(|p| p.into_inner()))?;
    let mut attributes: Vec<Attribute> = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| XmlError::Syntax(e.to_string()))?;
        if attribute.value.contains('<') {
            // XML 1.0 AttValue: a literal `<` is not allowed (quick-xml lets it pass).
            return Err(XmlError::Syntax("`<` in an attribute value".to_owned()));
        }
        let key = attribute.key;
        if key.as_namespace_binding().is_some() {
            continue;
        }
        let (resolved, local) = reader.resolver().resolve_attribute(key);
        let namespace = owned_namespace(resolved)?;
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(reader_error)?;
        if let Some(c) = value.chars().find(|&c| !is_xml_char(c)) {
            return Err(XmlError::InvalidCharacter(u32::from(c)));
        }
        let name = local.into_inner();
        check_name(name, key.prefix().map(|p| p.into_inner()))?;
        if attributes
            .iter()
            .any(|a| a.namespace == namespace && a.name == name)
        {
            return Err(XmlError::DuplicateAttribute(key.into_inner().to_owned()));
        }
        attributes.push(Attribute {
            namespace,
            prefix: key.prefix().map(|p| p.into_inner().to_owned()),
            name: name.to_owned(),
            value: value.into_owned(),
        });
    }
    Ok(Element {
        namespace,
        name: local.into_inner().to_owned(),
        prefix: prefix.map(|p| p.into_inner().to_owned()),
        attributes,
        children: Vec::new(),
    })
}

fn close(element: Element, stack: &mut [Element], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(element)),
        None => *root = Some(element),
    }
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), XmlError> {
    let Some(parent) = stack.last_mut() else {
        // Outside the root only whitespace may appear.
        return match text.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) {
            "" => Ok(()),
            _ => Err(XmlError::ContentOutsideRoot),
        };
    };
    if text.is_empty() {
        return Ok(());
    }
    match parent.children.last_mut() {
        Some(Node::Text(previous)) => previous.push_str(text),
        _ => parent.children.push(Node::Text(text.to_owned())),
    }
    Ok(())
}

/// One in-scope namespace binding while writing: `prefix` `None` is the default namespace,
/// `namespace` `""` undeclares it.
struct Binding {
    prefix: Option<String>,
    namespace: String,
}

fn lookup<'a>(scope: &'a [Binding], prefix: Option<&str>) -> Option<&'a str> {
    scope
        .iter()
        .rev()
        .find(|b| b.prefix.as_deref() == prefix)
        .map(|b| b.namespace.as_str())
        .filter(|ns| !ns.is_empty())
}

/// Usable as a namespace prefix on output: a non-empty name without `:` that is not
/// reserved (`xml…`).
fn usable_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && !prefix.contains(':')
        && !prefix
            .get(..3)
            .is_some_and(|p| p.eq_ignore_ascii_case("xml"))
}

fn write_root(element: &Element, out: &mut String) {
    // Prefixes bound to a single namespace throughout the tree are declared once, here.
    let mut prefixes: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    collect_prefixes(element, &mut prefixes);
    let mut scope = Vec::new();
    let hoisted: Vec<Binding> = prefixes
        .into_iter()
        .filter_map(|(prefix, ns)| {
            ns.map(|ns| Binding {
                prefix: Some(prefix.to_owned()),
                namespace: ns.to_owned(),
            })
        })
        .collect();
    write_element(element, &mut scope, hoisted, out);
}

fn collect_prefixes<'a>(element: &'a Element, map: &mut BTreeMap<&'a str, Option<&'a str>>) {
    let mut note = |prefix: &'a Option<String>, namespace: &'a Option<String>| {
        if let (Some(p), Some(ns)) = (prefix, namespace) {
            if usable_prefix(p) && ns != XML_NS {
                let entry = map.entry(p.as_str()).or_insert(Some(ns.as_str()));
                if *entry != Some(ns.as_str()) {
                    *entry = None;
                }
            }
        }
    };
    note(&element.prefix, &element.namespace);
    for a in &element.attributes {
        note(&a.prefix, &a.namespace);
    }
    for child in element.child_elements() {
        collect_prefixes(child, map);
    }
}

fn write_element(
    element: &Element,
    scope: &mut Vec<Binding>,
    mut declared: Vec<Binding>,
    out: &mut String,
) {
    let mark = scope.len();
    let is_declared = |declared: &[Binding], prefix: &str| {
        declared.iter().any(|b| b.prefix.as_deref() == Some(prefix))
    };
    // Declares `prefix` → `namespace` on this element unless already in scope.
    let ensure =
        |declared: &mut Vec<Binding>, scope: &[Binding], prefix: Option<&str>, ns: &str| {
            let in_scope = declared
                .iter()
                .rev()
                .find(|b| b.prefix.as_deref() == prefix)
                .map(|b| b.namespace.as_str())
                .or_else(|| lookup(scope, prefix))
                .unwrap_or("");
            if in_scope != ns {
                declared.push(Binding {
                    prefix: prefix.map(str::to_owned),
                    namespace: ns.to_owned(),
                });
            }
        };

    let mut qname = String::new();
    match (&element.namespace, &element.prefix) {
        (Some(ns), _) if ns == XML_NS => qname.push_str("xml:"),
        (Some(ns), Some(p))
            if usable_prefix(p)
                && (!is_declared(&declared, p)
                    || declared
                        .iter()
                        .any(|b| b.prefix.as_deref() == Some(p) && b.namespace == *ns)) =>
        {
            ensure(&mut declared, scope, Some(p), ns);
            qname.push_str(p);
            qname.push(':');
        }
        (Some(ns), _) => ensure(&mut declared, scope, None, ns),
        (None, _) => ensure(&mut declared, scope, None, ""),
    }
    qname.push_str(&element.name);

    let mut attributes = String::new();
    for attribute in &element.attributes {
        attributes.push(' ');
        match &attribute.namespace {
            None => {}
            Some(ns) if ns == XML_NS => attributes.push_str("xml:"),
            Some(ns) => {
                // The prefix as written if it can carry `ns` here, else one already bound to
                // `ns`, else a fresh `nsN`.
                let usable_here = |declared: &[Binding], p: &str| {
                    let here = declared
                        .iter()
                        .rev()
                        .find(|b| b.prefix.as_deref() == Some(p));
                    here.is_none_or(|b| b.namespace == *ns)
                };
                let bound = |p: &&str| {
                    usable_here(&declared, p)
                        && declared
                            .iter()
                            .rev()
                            .find(|b| b.prefix.as_deref() == Some(*p))
                            .map(|b| b.namespace.as_str())
                            .or_else(|| lookup(scope, Some(p)))
                            == Some(ns.as_str())
                };
                let prefix = attribute
                    .prefix
                    .as_deref()
                    .filter(|p| usable_prefix(p) && usable_here(&declared, p))
                    .or_else(|| {
                        declared
                            .iter()
                            .chain(scope.iter())
                            .filter_map(|b| b.prefix.as_deref())
                            .find(bound)
                    })
                    .map(str::to_owned)
                    .unwrap_or_else(|| {
                        (0..)
                            .map(|i| format!("ns{i}"))
                            .find(|p| {
                                !is_declared(&declared, p) && lookup(scope, Some(p)).is_none()
                            })
                            .unwrap_or_default()
                    });
                ensure(&mut declared, scope, Some(&prefix), ns);
                attributes.push_str(&prefix);
                attributes.push(':');
            }
        }
        attributes.push_str(&attribute.name);
        attributes.push_str("=\"");
        escape_into(&mut attributes, &attribute.value, true);
        attributes.push('"');
    }

    // The default namespace declaration first, then prefixes in the order they were needed.
    declared.sort_by_key(|b| b.prefix.is_some());
    out.push('<');
    out.push_str(&qname);
    for binding in &declared {
        match &binding.prefix {
            Some(p) => {
                out.push_str(" xmlns:");
                out.push_str(p);
            }
            None => out.push_str(" xmlns"),
        }
        out.push_str("=\"");
        escape_into(out, &binding.namespace, true);
        out.push('"');
    }
    out.push_str(&attributes);
    scope.extend(declared);
    if element.children.is_empty() {
        out.push_str("/>");
    } else {
        out.push('>');
        for child in &element.children {
            match child {
                Node::Element(e) => write_element(e, scope, Vec::new(), out),
                Node::Text(t) => escape_into(out, t, false),
            }
        }
        out.push_str("</");
        out.push_str(&qname);
        out.push('>');
    }
    scope.truncate(mark);
}

fn escape_into(out: &mut String, text: &str, attribute: bool) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            '"' if attribute => out.push_str("&quot;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\t' if attribute => out.push_str("&#9;"),
            c if !is_xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn parse_str(s: &str) -> Result<Element, XmlError> {
        parse(s.as_bytes())
    }

    #[test]
    fn resolves_prefixes_and_default_namespace() {
        let root = parse_str(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<a:root xmlns:a="urn:a" xmlns="urn:d" a:x="1" y="2"><child>t&amp;&#x41;<![CDATA[<c>]]></child></a:root>"#,
        )
        .unwrap();
        assert_eq!(root.namespace.as_deref(), Some("urn:a"));
        assert_eq!(root.prefix.as_deref(), Some("a"));
        assert_eq!(root.attribute(Some("urn:a"), "x"), Some("1"));
        assert_eq!(root.attribute(None, "y"), Some("2"));
        let child = root.child_elements().next().unwrap();
        assert!(child.is("urn:d", "child"));
        assert_eq!(child.text(), "t&A<c>");
    }

    #[test]
    fn moved_element_redeclares_its_namespaces() {
        let root =
            parse_str(r#"<r xmlns="urn:d" xmlns:p="urn:p"><p:e p:a="v"><i/></p:e></r>"#).unwrap();
        let inner = root.child_elements().next().unwrap().clone();
        let written = inner.to_string();
        assert_eq!(
            written,
            r#"<p:e xmlns:p="urn:p" p:a="v"><i xmlns="urn:d"/></p:e>"#
        );
        assert_eq!(parse_str(&written).unwrap(), inner);
    }

    #[test]
    fn unqualified_child_under_default_namespace_undeclares_it() {
        let e = Element::new(Some("urn:d"), "r").with_child(Element::new(None, "plain"));
        assert_eq!(e.to_string(), r#"<r xmlns="urn:d"><plain xmlns=""/></r>"#);
        assert_eq!(parse_str(&e.to_string()).unwrap(), e);
    }

    #[test]
    fn escaping_round_trips_text_and_attributes() {
        let e = Element::new(None, "r")
            .with_attribute("a", "q\"<&>\t\n\r'")
            .with_text("x<&>]]>\r\n'\"");
        let written = e.to_document();
        assert_eq!(parse_str(&written).unwrap(), e);
    }

    #[test]
    fn conflicting_attribute_prefix_gets_a_fresh_one() {
        let mut e = Element::new(Some("urn:a"), "r").with_prefix("p");
        e.attributes.push(Attribute {
            namespace: Some("urn:b".into()),
            prefix: Some("p".into()),
            name: "x".into(),
            value: "1".into(),
        });
        let written = e.to_string();
        let back = parse_str(&written).unwrap();
        assert_eq!(back.namespace.as_deref(), Some("urn:a"));
        assert_eq!(back.attribute(Some("urn:b"), "x"), Some("1"));
    }

    #[test]
    fn rejects_dtd_and_entities() {
        assert_eq!(
            parse_str(r#"<!DOCTYPE r [<!ENTITY e "x">]><r>&e;</r>"#),
            Err(XmlError::Dtd)
        );
        assert_eq!(
            parse_str("<r>&e;</r>"),
            Err(XmlError::UndefinedEntity("e".into()))
        );
        assert_eq!(
            parse_str("<r a='&e;'/>"),
            Err(XmlError::UndefinedEntity("e".into()))
        );
        assert_eq!(parse_str("<r>&#1;</r>"), Err(XmlError::InvalidCharacter(1)));
        assert_eq!(
            parse_str("<r>\u{1}</r>"),
            Err(XmlError::InvalidCharacter(1))
        );
    }

    #[test]
    fn rejects_malformed_documents() {
        assert_eq!(parse_str(""), Err(XmlError::MissingRoot));
        assert_eq!(parse_str("<r/><s/>"), Err(XmlError::ContentOutsideRoot));
        assert_eq!(parse_str("<r/>x"), Err(XmlError::ContentOutsideRoot));
        assert!(matches!(
            parse_str("<r><s></r>"),
            Err(XmlError::Syntax(_) | XmlError::UnclosedElement(_))
        ));
        assert!(matches!(
            parse_str("<r>"),
            Err(XmlError::UnclosedElement(_))
        ));
        assert_eq!(
            parse_str("<p:r/>"),
            Err(XmlError::UnboundPrefix("p".into()))
        );
        assert_eq!(
            parse_str(r#"<r xmlns:a="urn:x" xmlns:b="urn:x" a:k="1" b:k="2"/>"#),
            Err(XmlError::DuplicateAttribute("b:k".into()))
        );
        assert!(parse_str(r#"<r k="1" k="2"/>"#).is_err());
        assert_eq!(parse(b"<r>\xff</r>"), Err(XmlError::NotUtf8));
        assert_eq!(
            parse_str(r#"<?xml version="1.0" encoding="ISO-8859-1"?><r/>"#),
            Err(XmlError::UnsupportedEncoding("ISO-8859-1".into()))
        );
        assert!(parse_str("<r><!-- a -- b --></r>").is_err());
    }

    #[test]
    fn enforces_limits() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(
            parse_str(&deep),
            Err(XmlError::TooDeep { limit: MAX_DEPTH })
        );
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(parse_str(&ok).is_ok());
        let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        assert!(matches!(parse(&big), Err(XmlError::TooLarge { .. })));
    }

    #[test]
    fn rejects_invalid_names() {
        // Found by the xml_tree fuzz target: quick-xml reads `< \r/>` as an element
        // with an empty name, which cannot be written back.
        for bad in [
            &b"< \r\r\r/>\t"[..],
            b"<1a/>",
            b"<a 1b='x'/>",
            b"<a:/>",
            b"<-a/>",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse("<\u{e9}l\u{e8}ve x.y-z='1'/>".as_bytes()).is_ok());
    }

    #[test]
    fn namespace_declarations_are_unescaped_and_lt_refused() {
        // Found by the xml_tree fuzz target.
        let e = parse(b"<a xmlns='urn:x?a&amp;b&#x3c;'/>").unwrap();
        assert_eq!(e.namespace.as_deref(), Some("urn:x?a&b<"));
        assert_eq!(parse(e.to_document().as_bytes()).unwrap(), e);
        assert!(parse("<\u{feff}\txmlns=\"b/><\u{feff}\t\"blns=\"\"/>".as_bytes()).is_err());
        assert!(parse(b"<a b='<'/>").is_err());
    }

    #[test]
    fn accepts_bom_and_comments() {
        let e =
            parse(b"\xEF\xBB\xBF<?xml version='1.0'?><!-- c --><r><?pi x?>a<!--c-->b</r>").unwrap();
        assert_eq!(e.text(), "ab");
    }

    pub(crate) fn arb_element() -> impl Strategy<Value = Element> {
        let leaf = (
            prop::option::of(prop_oneof![Just("urn:example:a"), Just("urn:example:b")]),
            "[a-z][a-z0-9-]{0,6}",
            prop::option::of("[ -~é€]{1,12}"),
            prop::collection::vec(("[a-z]{1,4}", "[ -~\t\n\r]{0,8}"), 0..3),
        )
            .prop_map(|(ns, name, text, attrs)| {
                let mut e = Element::new(ns, &name);
                if ns == Some("urn:example:b") {
                    e.prefix = Some("b".into());
                }
                for (i, (n, v)) in attrs.into_iter().enumerate() {
                    e = e.with_attribute(&format!("{n}{i}"), &v);
                }
                e.with_text(text.as_deref().unwrap_or(""))
            });
        leaf.prop_recursive(3, 12, 3, |inner| {
            (inner.clone(), prop::collection::vec(inner, 0..3)).prop_map(|(mut parent, kids)| {
                parent.children.retain(|n| matches!(n, Node::Element(_)));
                for kid in kids {
                    parent.children.push(Node::Element(kid));
                }
                parent
            })
        })
    }

    proptest! {
        #[test]
        fn round_trip(e in arb_element()) {
            prop_assert_eq!(parse(e.to_document().as_bytes()).unwrap(), e);
        }

        #[test]
        fn never_panics(s in "[<>/a-z:=\"' &;#x0-9!\\[\\]?-]{0,64}") {
            let _ = parse(s.as_bytes());
        }
    }
}
