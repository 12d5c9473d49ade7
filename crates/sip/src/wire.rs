//! The strict front end for received requests: framing checks over the raw bytes,
//! then a typed view of the headers the gateway acts on (RFC 3261 §8.2, §18.3, and the
//! RFC 4475 torture tests). Pure: no I/O.
//!
//! `rsipstack`'s codec is lenient (a non-numeric `Content-Length` reads as 0, a line
//! that is not UTF-8 ends the header section, several `To` headers are kept), so a
//! request is accepted only when both the codec and [`check_request`] accept it. Every
//! refusal is a [`Fault`]: the response the sender gets.

use crate::headers::{self, CSeq, HeaderError, NameAddr, Via};

/// The methods the gateway implements as a UAS.
pub const ALLOW: &str = "MESSAGE, OPTIONS, SUBSCRIBE, NOTIFY, PUBLISH";
/// The methods with a REGISTER-capable domain.
pub const ALLOW_WITH_REGISTER: &str = "MESSAGE, OPTIONS, SUBSCRIBE, NOTIFY, PUBLISH, REGISTER";
/// SIP methods the gateway knows but does not implement (answered 405).
const KNOWN_UNSUPPORTED: [&str; 7] = [
    "INVITE", "BYE", "CANCEL", "PRACK", "UPDATE", "INFO", "REFER",
];
/// The largest header section and body the gateway reads (RFC 3261 has no limit; a
/// gateway for instant messages needs far less).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A response to send instead of processing a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// Extra headers (`Allow`, `Unsupported`, `Retry-After`, `Min-Expires`, …).
    pub headers: Vec<(String, String)>,
}

impl Fault {
    /// A fault with the given status and reason phrase.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Fault {
            status,
            reason: reason.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    fn bad(detail: impl std::fmt::Display) -> Self {
        // The reason phrase is TEXT-UTF8 without CR/LF; keep it short.
        let text: String = format!("Bad Request ({detail})")
            .chars()
            .filter(|c| !c.is_control())
            .take(120)
            .collect();
        Fault::new(400, text)
    }
}

impl From<HeaderError> for Fault {
    fn from(e: HeaderError) -> Self {
        Fault::bad(e)
    }
}

/// A received message split into its parts, before any header is interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// The start line's three parts: method, Request-URI, version for a request;
    /// version, code, reason for a response.
    pub start: [String; 3],
    /// `true` for a request.
    pub is_request: bool,
    /// Headers in order as `(name, value)`; compact names expanded, folded lines joined.
    pub headers: Vec<(String, String)>,
    /// The body (cut to `Content-Length`).
    pub body: Vec<u8>,
}

impl RawMessage {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        if self.is_request {
            return None;
        }
        self.start[1].parse().ok()
    }
}

fn first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// What [`frame`] decided about received bytes.
#[derive(Debug)]
pub enum Framed {
    /// A message whose framing is sound.
    Message(RawMessage),
    /// Unusable: answer with the fault when the request's parts could be read
    /// (`Some`), otherwise drop it.
    Bad(Fault, Option<RawMessage>),
}

/// Expands a compact header name (RFC 3261 §7.3.3, RFC 6665, RFC 4028).
pub fn canonical_name(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'o' => "Event",
        b'u' => "Allow-Events",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'x' => "Session-Expires",
        _ => name,
    }
}

/// Checks the framing of one datagram or one stream message and splits it. Over UDP
/// a missing `Content-Length` means "the rest of the datagram" and a larger one is an
/// error (RFC 3261 §18.3); stream framing (reading up to `Content-Length`) is the
/// driver's. Leading CRLFs (keep-alives, RFC 5626 §3.5.1) are skipped.
pub fn frame(bytes: &[u8]) -> Framed {
    let mut skip = 0;
    while bytes[skip..].starts_with(b"\r\n") {
        skip += 2;
    }
    let bytes = &bytes[skip..];
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Framed::Bad(Fault::new(513, "Message Too Large"), None);
    }
    let mut fault: Option<Fault> = None;
    let (head, rest): (&[u8], &[u8]) = match find(bytes, b"\r\n\r\n") {
        Some(sep) => (&bytes[..sep], &bytes[sep + 4..]),
        None => {
            // A datagram without the empty line: read it all as headers, answer 400.
            fault = Some(Fault::bad("no empty line after the headers"));
            let mut end = bytes.len();
            while end > 0 && matches!(bytes[end - 1], b'\r' | b'\n') {
                end -= 1;
            }
            (&bytes[..end], &[])
        }
    };
    let Ok(head) = std::str::from_utf8(head) else {
        return Framed::Bad(Fault::bad("headers are not UTF-8"), None);
    };
    let mut lines = head.split("\r\n");
    let start_line = lines.next().unwrap_or_default();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            match headers.last_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                None => fault = fault.or(Some(Fault::bad("continuation line before any header"))),
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) if headers::is_token(name.trim_end()) => {
                let name = canonical_name(name.trim_end()).to_owned();
                headers.push((name, value.trim().to_owned()));
            }
            _ => fault = fault.or(Some(Fault::bad("malformed header line"))),
        }
    }
    let Some((is_request, (start, line_fault))) = split_start_line(start_line) else {
        return Framed::Bad(Fault::bad("malformed start line"), None);
    };
    let lengths: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.as_str())
        .collect();
    let body_len = match lengths.as_slice() {
        [] => rest.len(),
        [one] => match headers::parse_decimal(one).and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n <= rest.len() => n,
            Some(_) => {
                fault = fault.or(Some(Fault::bad("Content-Length larger than the message")));
                rest.len()
            }
            None => {
                fault = fault.or(Some(Fault::bad(
                    "Content-Length is not a non-negative number",
                )));
                rest.len()
            }
        },
        _ => {
            fault = fault.or(Some(Fault::bad("more than one Content-Length")));
            rest.len()
        }
    };
    let message = RawMessage {
        start,
        is_request,
        headers,
        body: rest[..body_len].to_vec(),
    };
    if let Some(f) = line_fault.or(fault) {
        return Framed::Bad(f, message.is_request.then_some(message));
    }
    Framed::Message(message)
}

type StartLine = ([String; 3], Option<Fault>);

/// Splits the start line. A request line that is readable but not well formed (extra
/// spaces, `<>` around the URI, LWS in the URI) gives a fault with the parts, so that a
/// 400 can still be sent.
fn split_start_line(line: &str) -> Option<(bool, StartLine)> {
    if line.starts_with("SIP/") {
        let mut it = line.splitn(3, ' ');
        let version = it.next()?.to_owned();
        let code = it.next()?.to_owned();
        let reason = it.next().unwrap_or_default().to_owned();
        let valid = code.len() == 3
            && code.bytes().all(|b| b.is_ascii_digit())
            && (b'1'..=b'6').contains(&code.as_bytes()[0]);
        return valid.then_some((false, ([version, code, reason], None)));
    }
    if line.is_empty() || line.starts_with([' ', '\t']) {
        return None;
    }
    let words: Vec<&str> = line.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
    if words.len() < 3 || !headers::is_token(words[0]) {
        return None;
    }
    let version = words[words.len() - 1];
    let uri = words[1..words.len() - 1].join(" ");
    let parts = [words[0].to_owned(), uri, version.to_owned()];
    Some((true, (parts, check_request_line(line).err())))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `Method SP Request-URI SP SIP-Version`, exactly one space each (RFC 3261 §7.1).
fn check_request_line(line: &str) -> Result<(), Fault> {
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, uri, version] = parts.as_slice() else {
        return Err(Fault::bad("Request-Line is not 'Method SP URI SP Version'"));
    };
    if !headers::is_token(method) {
        return Err(Fault::bad("method is not a token"));
    }
    if uri.is_empty() || uri.starts_with('<') || uri.contains(['\t', '<', '>']) {
        return Err(Fault::bad("malformed Request-URI"));
    }
    let Some((scheme, _)) = uri.split_once(':') else {
        return Err(Fault::bad("Request-URI without a scheme"));
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err(Fault::bad("malformed Request-URI scheme"));
    }
    if !version.starts_with("SIP/") {
        return Err(Fault::bad("malformed SIP-Version"));
    }
    Ok(())
}

/// The parts of a request every handler needs, read strictly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestView {
    /// The method as written (case-sensitive, RFC 3261 §7.1).
    pub method: String,
    /// The Request-URI as written.
    pub uri: String,
    /// `From`.
    pub from: NameAddr,
    /// `To`.
    pub to: NameAddr,
    /// `Call-ID`.
    pub call_id: String,
    /// `CSeq`.
    pub cseq: CSeq,
    /// The top `Via`.
    pub via: Via,
    /// `Max-Forwards`, when present.
    pub max_forwards: Option<u8>,
    /// `Content-Type`, when present.
    pub content_type: Option<String>,
    /// Every header as `(name, value)`, names as the codec reports them (compact forms
    /// expanded).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RequestView {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header called `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the headers of a parsed request strictly; `Err` is the response to send.
/// Checks, in order (the first failing wins): version (505), the mandatory headers
/// and their syntax (400), the `CSeq` method (400), the method (405/501), the
/// Request-URI scheme (416), `Require` (420).
pub fn check_request(req: &RawMessage, register: bool) -> Result<RequestView, Fault> {
    let [method, uri, version] = &req.start;
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(Fault::new(505, "Version Not Supported"));
    }
    let headers = &req.headers;
    let single = |name: &'static str| -> Result<Option<&str>, Fault> {
        let mut values = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(Fault::bad(format!("more than one {name}")));
        }
        Ok(first)
    };
    let required = |name: &'static str| -> Result<&str, Fault> {
        single(name)?.ok_or_else(|| Fault::bad(format!("missing {name}")))
    };
    let via_value = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Via"))
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| Fault::bad("missing Via"))?;
    let via = Via::parse_first(via_value)?;
    let from = NameAddr::parse("From", required("From")?)?;
    let to = NameAddr::parse("To", required("To")?)?;
    let call_id = required("Call-ID")?.trim().to_owned();
    if call_id.is_empty() || call_id.contains(char::is_whitespace) {
        return Err(Fault::bad("malformed Call-ID"));
    }
    let cseq = CSeq::parse(required("CSeq")?)?;
    let max_forwards = single("Max-Forwards")?
        .map(headers::parse_max_forwards)
        .transpose()?;
    let content_type = single("Content-Type")?.map(|v| v.trim().to_owned());
    // RFC 3261 §8.2.1: an unknown method is 501 before anything about the method is
    // compared; then the CSeq method must match; then a known but unsupported method
    // is 405.
    let method_fault = check_method(method, register).err();
    if let Some(unknown) = method_fault.clone().filter(|f| f.status == 501) {
        return Err(unknown);
    }
    if cseq.method != *method {
        return Err(Fault::bad("CSeq method does not match the request method"));
    }
    if let Some(unsupported) = method_fault {
        return Err(unsupported);
    }
    let view = RequestView {
        method: method.clone(),
        uri: uri.clone(),
        from,
        to,
        call_id,
        cseq,
        via,
        max_forwards,
        content_type,
        headers: headers.clone(),
        body: req.body.clone(),
    };
    let scheme = view
        .uri
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    if !matches!(scheme.as_str(), "sip" | "sips" | "im" | "pres") {
        return Err(Fault::new(416, "Unsupported URI Scheme"));
    }
    let unsupported: Vec<String> = view
        .all("Require")
        .flat_map(headers::token_list)
        .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
        .collect();
    if !unsupported.is_empty() {
        return Err(
            Fault::new(420, "Bad Extension").with_header("Unsupported", unsupported.join(", "))
        );
    }
    // RFC 3261 §8.2.3: content the UAS cannot decode is 415; what it can is decoded
    // here, so that every body reaches the rest as it was written.
    let mut view = view;
    let encoding = single("Content-Encoding")?.map(str::to_owned);
    if let Some(encoding) = encoding {
        if !view.body.is_empty() {
            view.body = crate::encoding::decode(&encoding, &view.body, MAX_DECODED_BODY)?;
        }
        view.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("Content-Encoding"));
    }
    Ok(view)
}

/// The largest body the gateway decodes a `Content-Encoding` to.
pub const MAX_DECODED_BODY: usize = 1024 * 1024;

/// Option tags the gateway supports in `Require`.
pub const SUPPORTED: [&str; 0] = [];

/// 405 for a SIP method the gateway does not implement, 501 for one it does not know
/// (RFC 3261 §8.2.1, §21.5.2).
pub fn check_method(method: &str, register: bool) -> Result<(), Fault> {
    let allow = if register { ALLOW_WITH_REGISTER } else { ALLOW };
    match method {
        "MESSAGE" | "OPTIONS" | "SUBSCRIBE" | "NOTIFY" | "PUBLISH" | "ACK" => Ok(()),
        "REGISTER" if register => Ok(()),
        m if m == "REGISTER" || KNOWN_UNSUPPORTED.contains(&m) => {
            Err(Fault::new(405, "Method Not Allowed").with_header("Allow", allow))
        }
        _ => Err(Fault::new(501, "Not Implemented").with_header("Allow", allow)),
    }
}

/// The server's product token (RFC 3261 §20.35).
pub const SERVER: &str = concat!("cpim-gateway/", env!("CARGO_PKG_VERSION"));

/// A response to `request` (RFC 3261 §8.2.6): its Via headers, From, To (with
/// `to_tag` added when it has none), Call-ID and CSeq copied, then `extra` headers and
/// the body. `None` when the request lacks one of those headers (nothing can be
/// answered then).
pub fn response(
    request: &RawMessage,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(String, String)],
    body: Option<(&str, &[u8])>,
) -> Option<Vec<u8>> {
    let vias: Vec<&str> = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Via"))
        .map(|(_, v)| v.as_str())
        .collect();
    if vias.is_empty() {
        return None;
    }
    let cseq = request.header("CSeq")?;
    let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for via in vias {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    if let Some(from) = request.header("From") {
        out.push_str(&format!("From: {from}\r\n"));
    }
    if let Some(to) = request.header("To") {
        // A tag only when To parses and has none (RFC 3261 §8.2.6.2).
        let parsed = NameAddr::parse("To", to);
        match to_tag {
            Some(tag) if parsed.is_ok_and(|n| n.tag().is_none()) && status > 100 => {
                out.push_str(&format!("To: {to};tag={tag}\r\n"))
            }
            _ => out.push_str(&format!("To: {to}\r\n")),
        }
    }
    if let Some(call_id) = request.header("Call-ID") {
        out.push_str(&format!("Call-ID: {call_id}\r\n"));
    }
    out.push_str(&format!("CSeq: {cseq}\r\n"));
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Server: {SERVER}\r\n"));
    let bytes = with_body(out, body);
    Some(bytes)
}

/// Adds `received` (when the sent-by host is not the source address) and fills an
/// empty `rport` (RFC 3581) on the top Via of `request`, for the response.
pub fn stamp_received(request: &mut RawMessage, source: std::net::SocketAddr) {
    let Some((_, value)) = request
        .headers
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case("Via"))
    else {
        return;
    };
    let entries = headers::split_top_level(value, ',');
    let top = entries[0].trim_end().to_owned();
    let rest: Vec<String> = entries[1..].iter().map(|e| (*e).to_owned()).collect();
    let Ok(via) = Via::parse_first(&top) else {
        return;
    };
    let ip = source.ip().to_string();
    let host = via
        .sent_by
        .rsplit_once(':')
        .filter(|(h, p)| {
            !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !via.sent_by.ends_with(']')
        })
        .map_or(via.sent_by.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let has_rport = headers::param(&via.params, "rport") == Some(None);
    let mut stamped = top.clone();
    if has_rport {
        // Replace the bare flag by its value.
        let lower = stamped.to_ascii_lowercase();
        if let Some(i) = lower.find(";rport") {
            let end = i + ";rport".len();
            if !stamped[end..].starts_with('=') {
                stamped.insert_str(end, &format!("={}", source.port()));
            }
        }
    }
    if (host != ip || has_rport) && headers::param(&via.params, "received").is_none() {
        stamped.push_str(&format!(";received={ip}"));
    }
    let mut all = vec![stamped];
    all.extend(rest);
    *value = all.join(",");
}

/// Ends a message's header section with `Content-Type`/`Content-Length` and appends
/// the body (`Content-Length: 0` without one).
fn with_body(mut head: String, body: Option<(&str, &[u8])>) -> Vec<u8> {
    match body {
        Some((content_type, body)) => {
            head.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ));
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(body);
            bytes
        }
        None => {
            head.push_str("Content-Length: 0\r\n\r\n");
            head.into_bytes()
        }
    }
}

/// A request the gateway sends, before serialization.
#[derive(Debug, Clone)]
pub struct OutRequest<'a> {
    /// Method.
    pub method: &'a str,
    /// Request-URI.
    pub uri: &'a str,
    /// Transport token for the Via (`UDP`, `TCP`, `TLS`).
    pub via_transport: &'a str,
    /// `host:port` for the Via sent-by.
    pub via_sent_by: &'a str,
    /// The branch (starting with the RFC 3261 magic cookie `z9hG4bK`).
    pub branch: &'a str,
    /// Full From value (with its tag).
    pub from: &'a str,
    /// Full To value.
    pub to: &'a str,
    /// Call-ID.
    pub call_id: &'a str,
    /// CSeq number.
    pub cseq: u32,
    /// Max-Forwards.
    pub max_forwards: u8,
    /// Further headers.
    pub headers: &'a [(String, String)],
    /// Content type and body.
    pub body: Option<(&'a str, &'a [u8])>,
}

impl OutRequest<'_> {
    /// Serializes the request.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{m} {uri} SIP/2.0\r\nVia: SIP/2.0/{t} {sb};branch={b};rport\r\n\
             Max-Forwards: {mf}\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\n\
             CSeq: {cseq} {m}\r\n",
            m = self.method,
            uri = self.uri,
            t = self.via_transport,
            sb = self.via_sent_by,
            b = self.branch,
            mf = self.max_forwards,
            from = self.from,
            to = self.to,
            cid = self.call_id,
            cseq = self.cseq,
        );
        for (name, value) in self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!("User-Agent: {SERVER}\r\n"));
        with_body(out, self.body)
    }
}

/// The response to a body that cannot be decoded (RFC 3261 §21.4.13, §21.4.11).
impl From<crate::encoding::EncodingError> for Fault {
    fn from(error: crate::encoding::EncodingError) -> Self {
        use crate::encoding::{EncodingError, ACCEPT_ENCODING};
        match error {
            EncodingError::Unsupported => {
                Fault::new(415, "Unsupported Media Type (content coding)")
                    .with_header("Accept-Encoding", ACCEPT_ENCODING)
            }
            EncodingError::Corrupt(why) => Fault::new(400, format!("Bad Request ({why})")),
            EncodingError::TooLarge => Fault::new(
                413,
                "Request Entity Too Large (decoded body over the limit)",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn message(extra: &str, body: &str) -> String {
        format!(
            "MESSAGE sip:bob@sip.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@sip.test>;tag=1\r\n\
             To: <sip:bob@sip.test>\r\n\
             Call-ID: c1\r\n\
             CSeq: 1 MESSAGE\r\n\
             {extra}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn checked(text: &str) -> Result<RequestView, Fault> {
        match frame(text.as_bytes()) {
            Framed::Message(r) => check_request(&r, false),
            Framed::Bad(f, _) => Err(f),
        }
    }

    #[test]
    fn a_plain_message_is_read() {
        let v = checked(&message("Content-Type: text/plain\r\n", "hello")).unwrap();
        assert_eq!(v.method, "MESSAGE");
        assert_eq!(v.from.tag(), Some("1"));
        assert_eq!(v.cseq.seq, 1);
        assert_eq!(v.via.branch(), Some("z9hG4bK-1"));
        assert_eq!(v.max_forwards, Some(70));
        assert_eq!(v.body, b"hello");
        assert_eq!(v.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn framing_faults() {
        let long = message("", "hello").replace("Content-Length: 5", "Content-Length: 9");
        assert_eq!(checked(&long).unwrap_err().status, 400);
        let neg = message("", "hello").replace("Content-Length: 5", "Content-Length: -5");
        assert_eq!(checked(&neg).unwrap_err().status, 400);
        let two = message("Content-Length: 5\r\n", "hello");
        assert_eq!(checked(&two).unwrap_err().status, 400);
        let spaces = message("", "").replace(
            "MESSAGE sip:bob@sip.test SIP/2.0",
            "MESSAGE  sip:bob@sip.test SIP/2.0",
        );
        assert_eq!(checked(&spaces).unwrap_err().status, 400);
        let angle =
            message("", "").replace("MESSAGE sip:bob@sip.test", "MESSAGE <sip:bob@sip.test>");
        assert_eq!(checked(&angle).unwrap_err().status, 400);
        assert!(matches!(frame(b"garbage"), Framed::Bad(_, None)));
    }

    #[test]
    fn header_faults() {
        let two_to = message("To: <sip:carol@sip.test>\r\n", "");
        assert_eq!(checked(&two_to).unwrap_err().status, 400);
        let mismatch = message("", "").replace("CSeq: 1 MESSAGE", "CSeq: 1 OPTIONS");
        assert_eq!(checked(&mismatch).unwrap_err().status, 400);
        let no_call_id = message("", "").replace("Call-ID: c1\r\n", "");
        assert_eq!(checked(&no_call_id).unwrap_err().status, 400);
        let version = message("", "").replace("sip.test SIP/2.0", "sip.test SIP/7.0");
        assert_eq!(checked(&version).unwrap_err().status, 505);
        let scheme =
            message("", "").replace("MESSAGE sip:bob@sip.test", "MESSAGE nope:bob@sip.test");
        assert_eq!(checked(&scheme).unwrap_err().status, 416);
        let require = message("Require: nothing-known\r\n", "");
        let f = checked(&require).unwrap_err();
        assert_eq!(f.status, 420);
        assert_eq!(
            f.headers,
            vec![("Unsupported".to_owned(), "nothing-known".to_owned())]
        );
    }

    #[test]
    fn responses_copy_the_transaction_headers_and_add_a_tag() {
        let Framed::Message(m) =
            frame(message("Via: SIP/2.0/UDP proxy;branch=z9hG4bK-0\r\n", "").as_bytes())
        else {
            panic!()
        };
        let r = response(
            &m,
            202,
            "Accepted",
            Some("gw1"),
            &[("Expires".into(), "60".into())],
            None,
        )
        .unwrap();
        let text = String::from_utf8(r.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 202 Accepted\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\nVia: SIP/2.0/UDP proxy;branch=z9hG4bK-0\r\n"), "{text}");
        assert!(text.contains("To: <sip:bob@sip.test>;tag=gw1\r\n"));
        assert!(text.contains("CSeq: 1 MESSAGE\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        // The response parses with the codec of rsipstack, too.
        let parsed = rsipstack::sip::SipMessage::try_from(r.as_slice()).unwrap();
        assert!(parsed.is_response());
        let mut no_cseq = m.clone();
        no_cseq.headers.retain(|(n, _)| n != "CSeq");
        assert_eq!(response(&no_cseq, 400, "Bad", None, &[], None), None);
    }

    #[test]
    fn requests_serialize_and_parse_back() {
        let headers = vec![("Event".to_owned(), "presence".to_owned())];
        let r = OutRequest {
            method: "SUBSCRIBE",
            uri: "sip:bob@127.0.0.1:5070",
            via_transport: "UDP",
            via_sent_by: "127.0.0.1:5060",
            branch: "z9hG4bK-x",
            from: "<sip:alice@gw.test>;tag=a",
            to: "<sip:bob@sip.test>",
            call_id: "c@gw",
            cseq: 3,
            max_forwards: 70,
            headers: &headers,
            body: Some(("text/plain", b"hi")),
        }
        .to_bytes();
        let Framed::Message(m) = frame(&r) else {
            panic!()
        };
        let v = check_request(&m, false).unwrap();
        assert_eq!(v.cseq.seq, 3);
        assert_eq!(v.via.branch(), Some("z9hG4bK-x"));
        assert_eq!(v.header("Event"), Some("presence"));
        assert_eq!(v.body, b"hi");
        assert!(rsipstack::sip::SipMessage::try_from(r.as_slice()).is_ok());
    }

    #[test]
    fn methods() {
        assert!(check_method("MESSAGE", false).is_ok());
        assert_eq!(check_method("INVITE", false).unwrap_err().status, 405);
        assert_eq!(check_method("REGISTER", false).unwrap_err().status, 405);
        assert!(check_method("REGISTER", true).is_ok());
        assert_eq!(check_method("NEWMETHOD", false).unwrap_err().status, 501);
    }
}
