//! Strict parsers for the SIP header values the gateway reads (RFC 3261 §25.1), over
//! the header text the codec hands over. Pure: no I/O.
//!
//! The codec (`rsipstack::sip`) splits a message into a start line, header lines and a
//! body; it is lenient about what the values contain. Everything the gateway acts on
//! is read again here, strictly, so that a malformed value is a `400` to its sender and
//! never a guess.

use std::fmt;

/// A header value that does not follow its grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {header} header: {detail}")]
pub struct HeaderError {
    /// The header's name.
    pub header: &'static str,
    /// What is wrong.
    pub detail: String,
}

impl HeaderError {
    pub(crate) fn new(header: &'static str, detail: impl Into<String>) -> Self {
        HeaderError {
            header,
            detail: detail.into(),
        }
    }
}

/// RFC 3261 `token` characters.
pub fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

/// `true` when `s` is a non-empty RFC 3261 `token`.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// One `;name[=value]` generic parameter.
pub type Param = (String, Option<String>);

/// A `name-addr` or `addr-spec` with its header parameters (From, To, Contact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted (`None` when absent).
    pub display: Option<String>,
    /// The URI as written between `<` and `>` (or the bare `addr-spec`).
    pub uri: String,
    /// Header parameters after the URI (`tag`, `expires`, …), names lowercased.
    pub params: Vec<Param>,
}

impl NameAddr {
    /// Parses a From/To/Contact value (one entry). `header` names it in errors.
    pub fn parse(header: &'static str, value: &str) -> Result<NameAddr, HeaderError> {
        let s = value.trim();
        if s.is_empty() {
            return Err(HeaderError::new(header, "empty value"));
        }
        let (display, rest) = if let Some(after_quote) = s.strip_prefix('"') {
            let end = closing_quote(after_quote)
                .ok_or_else(|| HeaderError::new(header, "unterminated quoted display name"))?;
            let display = unquote(&after_quote[..end]);
            let rest = after_quote[end + 1..].trim_start();
            if !rest.starts_with('<') {
                return Err(HeaderError::new(header, "display name without <URI>"));
            }
            (Some(display), rest)
        } else if let Some(lt) = s.find('<') {
            let name = s[..lt].trim();
            if !name.is_empty()
                && !name
                    .split([' ', '\t'])
                    .filter(|w| !w.is_empty())
                    .all(is_token)
            {
                return Err(HeaderError::new(
                    header,
                    "display name is neither a quoted string nor tokens",
                ));
            }
            ((!name.is_empty()).then(|| name.to_owned()), &s[lt..])
        } else {
            (None, s)
        };
        let (uri, params_text) = if let Some(inner) = rest.strip_prefix('<') {
            let end = inner
                .find('>')
                .ok_or_else(|| HeaderError::new(header, "missing '>'"))?;
            (&inner[..end], &inner[end + 1..])
        } else {
            // addr-spec: the URI may not contain ',', '?' or ';' (RFC 3261 §20.10), so
            // everything after the first ';' is header parameters.
            if rest.contains(['?', ',']) {
                return Err(HeaderError::new(
                    header,
                    "a URI with '?' or ',' must be enclosed in <>",
                ));
            }
            match rest.find(';') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            }
        };
        let uri = if rest.starts_with('<') {
            uri
        } else {
            uri.trim()
        };
        if uri.is_empty() || uri.contains([' ', '\t', '\r', '\n']) {
            return Err(HeaderError::new(
                header,
                "URI empty or containing whitespace",
            ));
        }
        let params = parse_params(header, params_text)?;
        Ok(NameAddr {
            display,
            uri: uri.to_owned(),
            params,
        })
    }

    /// The value of parameter `name` (lowercase), `Some(None)` for a flag.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        param(&self.params, name)
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(display) = &self.display {
            write!(f, "\"")?;
            for c in display.chars() {
                if c == '"' || c == '\\' {
                    write!(f, "\\")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, "\" ")?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

fn write_params(f: &mut fmt::Formatter<'_>, params: &[Param]) -> fmt::Result {
    for (name, value) in params {
        match value {
            Some(v) => write!(f, ";{name}={v}")?,
            None => write!(f, ";{name}")?,
        }
    }
    Ok(())
}

/// The value of parameter `name` in `params`.
pub fn param<'a>(params: &'a [Param], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

/// Index of the closing `"` of a quoted string whose opening quote was consumed.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `;a=b;c;d="e"` (leading `;` required for each parameter, whitespace allowed).
pub fn parse_params(header: &'static str, text: &str) -> Result<Vec<Param>, HeaderError> {
    let mut params = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some(after) = rest.strip_prefix(';') else {
            return Err(HeaderError::new(
                header,
                format!("unexpected text {:?}", truncate(rest)),
            ));
        };
        let after = after.trim_start();
        let name_end = after
            .find(|c: char| !is_token_char(c))
            .unwrap_or(after.len());
        let name = &after[..name_end];
        if name.is_empty() {
            return Err(HeaderError::new(header, "empty parameter name"));
        }
        let mut tail = after[name_end..].trim_start();
        let value = if let Some(v) = tail.strip_prefix('=') {
            let v = v.trim_start();
            if let Some(q) = v.strip_prefix('"') {
                let end = closing_quote(q)
                    .ok_or_else(|| HeaderError::new(header, "unterminated quoted parameter"))?;
                tail = &q[end + 1..];
                Some(unquote(&q[..end]))
            } else {
                let end = v
                    .find(|c: char| !(is_token_char(c) || "[]:".contains(c)))
                    .unwrap_or(v.len());
                if end == 0 {
                    return Err(HeaderError::new(header, "empty parameter value"));
                }
                tail = &v[end..];
                Some(v[..end].to_owned())
            }
        } else {
            None
        };
        params.push((name.to_ascii_lowercase(), value));
        rest = tail.trim_start();
    }
    Ok(params)
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

/// A `CSeq` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number (below 2³¹, RFC 3261 §8.1.1.5).
    pub seq: u32,
    /// The method, as written.
    pub method: String,
}

impl CSeq {
    /// Parses `1 MESSAGE`.
    pub fn parse(value: &str) -> Result<CSeq, HeaderError> {
        let mut parts = value.split_whitespace();
        let (Some(num), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(HeaderError::new("CSeq", "expected 'number METHOD'"));
        };
        let seq = parse_decimal(num)
            .filter(|n| *n < 1 << 31)
            .ok_or_else(|| HeaderError::new("CSeq", "sequence number out of range"))?;
        if !is_token(method) {
            return Err(HeaderError::new("CSeq", "method is not a token"));
        }
        Ok(CSeq {
            seq: u32::try_from(seq).unwrap_or(u32::MAX),
            method: method.to_owned(),
        })
    }
}

/// A decimal number of at most 10 digits (no sign, no spaces).
pub fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A `delta-seconds` header (`Expires`, `Min-Expires`): RFC 3261 §25.1 says values
/// beyond 2³² − 1 are taken as 2³² − 1.
pub fn parse_delta_seconds(header: &'static str, value: &str) -> Result<u32, HeaderError> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderError::new(header, "not a number of seconds"));
    }
    Ok(v.parse::<u64>()
        .map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX)))
}

/// `Max-Forwards`: 0 to 255 (larger values are malformed, RFC 3261 §20.22 allows any
/// 1*DIGIT but elements may refuse more than 255).
pub fn parse_max_forwards(value: &str) -> Result<u8, HeaderError> {
    parse_decimal(value.trim())
        .and_then(|n| u8::try_from(n).ok())
        .ok_or_else(|| HeaderError::new("Max-Forwards", "not a number from 0 to 255"))
}

/// `Retry-After: 30 (comment);duration=…` → the seconds.
pub fn parse_retry_after(value: &str) -> Result<u32, HeaderError> {
    let v = value.trim();
    let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    parse_delta_seconds("Retry-After", &v[..end])
}

/// The top `Via` entry: transport, sent-by and the `branch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The transport token, uppercase (`UDP`, `TCP`, `TLS`, …).
    pub transport: String,
    /// `host[:port]` as written.
    pub sent_by: String,
    /// The parameters (`branch`, `received`, `rport`, …).
    pub params: Vec<Param>,
}

impl Via {
    /// Parses the first entry of a Via value (`SIP/2.0/UDP host:port;branch=…`).
    pub fn parse_first(value: &str) -> Result<Via, HeaderError> {
        let first = split_top_level(value, ',')
            .into_iter()
            .next()
            .unwrap_or_default();
        let first = first.trim();
        // sent-protocol: name LWS? "/" LWS? version LWS? "/" LWS? transport
        let mut parts = first.splitn(3, '/');
        let (Some(name), Some(version), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(HeaderError::new("Via", "expected SIP/2.0/transport"));
        };
        if !name.trim().eq_ignore_ascii_case("SIP") || version.trim() != "2.0" {
            return Err(HeaderError::new("Via", "protocol is not SIP/2.0"));
        }
        let rest = rest.trim_start();
        let t_end = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
        let transport = &rest[..t_end];
        if transport.is_empty() {
            return Err(HeaderError::new("Via", "missing transport"));
        }
        let rest = rest[t_end..].trim_start();
        let sb_end = rest.find([';', ' ', '\t']).unwrap_or(rest.len());
        let sent_by = &rest[..sb_end];
        if sent_by.is_empty() {
            return Err(HeaderError::new("Via", "missing sent-by"));
        }
        let mut params_text = rest[sb_end..].trim_start();
        // An optional comment is not allowed in Via; anything else must be params.
        if params_text.starts_with('(') {
            params_text = "";
        }
        let params = parse_params("Via", params_text)?;
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            sent_by: sent_by.to_owned(),
            params,
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        param(&self.params, "branch").flatten()
    }
}

/// RFC 3325 §9.1: the SIP identity a `P-Asserted-Identity` header asserts — the
/// first `sip:`/`sips:` entry of its values (a `tel:` entry may come with it), with
/// its display name. `None` when no entry is a SIP URI.
pub fn asserted_identity<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<NameAddr> {
    values
        .into_iter()
        .flat_map(|value| split_top_level(value, ','))
        .filter_map(|entry| NameAddr::parse("P-Asserted-Identity", entry).ok())
        .find(|n| {
            let uri = n.uri.to_ascii_lowercase();
            uri.starts_with("sip:") || uri.starts_with("sips:")
        })
}

/// Splits `value` on `sep` outside quoted strings and `<…>`.
pub fn split_top_level(value: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    let mut escaped = false;
    let mut angle = 0u32;
    for (i, c) in value.char_indices() {
        if in_quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quote = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_quote = true,
            '<' => angle += 1,
            '>' => angle = angle.saturating_sub(1),
            c if c == sep && angle == 0 => {
                out.push(&value[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// An `Event` value: the package and its parameters (`id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHeader {
    /// The package (`presence`), lowercased.
    pub package: String,
    /// The parameters.
    pub params: Vec<Param>,
}

impl EventHeader {
    /// Parses `presence;id=1`.
    pub fn parse(value: &str) -> Result<EventHeader, HeaderError> {
        let v = value.trim();
        let end = v.find(|c: char| !is_token_char(c)).unwrap_or(v.len());
        let package = &v[..end];
        if package.is_empty() {
            return Err(HeaderError::new("Event", "missing event package"));
        }
        Ok(EventHeader {
            package: package.to_ascii_lowercase(),
            params: parse_params("Event", &v[end..])?,
        })
    }

    /// The `id` parameter.
    pub fn id(&self) -> Option<&str> {
        param(&self.params, "id").flatten()
    }
}

/// The state in a `Subscription-State` header (RFC 6665 §8.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubState {
    /// `active;expires=N`.
    Active {
        /// Seconds left.
        expires: Option<u32>,
    },
    /// `pending;expires=N`.
    Pending {
        /// Seconds left.
        expires: Option<u32>,
    },
    /// `terminated;reason=R;retry-after=N`.
    Terminated {
        /// The reason (lowercased), if given.
        reason: Option<String>,
        /// When the subscriber may try again.
        retry_after: Option<u32>,
    },
}

impl SubState {
    /// Parses a `Subscription-State` value.
    pub fn parse(value: &str) -> Result<SubState, HeaderError> {
        let v = value.trim();
        let end = v.find(|c: char| !is_token_char(c)).unwrap_or(v.len());
        let state = v[..end].to_ascii_lowercase();
        let params = parse_params("Subscription-State", &v[end..])?;
        let number = |name: &str| -> Result<Option<u32>, HeaderError> {
            param(&params, name)
                .flatten()
                .map(|n| parse_delta_seconds("Subscription-State", n))
                .transpose()
        };
        match state.as_str() {
            "active" => Ok(SubState::Active {
                expires: number("expires")?,
            }),
            "pending" => Ok(SubState::Pending {
                expires: number("expires")?,
            }),
            "terminated" => Ok(SubState::Terminated {
                reason: param(&params, "reason")
                    .flatten()
                    .map(str::to_ascii_lowercase),
                retry_after: number("retry-after")?,
            }),
            "" => Err(HeaderError::new("Subscription-State", "missing state")),
            // RFC 6665 §8.2.3: an unknown state is treated as active... by a
            // subscriber that understands extensions; we treat it as pending.
            _ => Ok(SubState::Pending {
                expires: number("expires")?,
            }),
        }
    }
}

impl fmt::Display for SubState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubState::Active { expires } => {
                write!(f, "active")?;
                if let Some(e) = expires {
                    write!(f, ";expires={e}")?;
                }
            }
            SubState::Pending { expires } => {
                write!(f, "pending")?;
                if let Some(e) = expires {
                    write!(f, ";expires={e}")?;
                }
            }
            SubState::Terminated {
                reason,
                retry_after,
            } => {
                write!(f, "terminated")?;
                if let Some(r) = reason {
                    write!(f, ";reason={r}")?;
                }
                if let Some(r) = retry_after {
                    write!(f, ";retry-after={r}")?;
                }
            }
        }
        Ok(())
    }
}

/// Splits a comma-separated list of tokens (`Require`, `Supported`, `Allow`).
pub fn token_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rfc3325_asserted_identity_is_the_first_sip_entry() {
        type Asserted<'a> = Option<(&'a str, Option<&'a str>)>;
        let cases: &[(&[&str], Asserted)] = &[
            (
                &["\"Cullen Jennings\" <sip:fluffy@cisco.com>"],
                Some(("sip:fluffy@cisco.com", Some("Cullen Jennings"))),
            ),
            (&["tel:+14085264000"], None),
            (
                &["<tel:+14085264000>, <sips:fluffy@cisco.com>"],
                Some(("sips:fluffy@cisco.com", None)),
            ),
            (
                &["tel:+14085264000", "\"A, B\" <sip:ab@carrier.example>"],
                Some(("sip:ab@carrier.example", Some("A, B"))),
            ),
            (&["<mailto:x@y.example>"], None),
            (&[""], None),
            (&[], None),
        ];
        for (values, expected) in cases {
            let got = asserted_identity(values.iter().copied());
            assert_eq!(
                got.as_ref().map(|n| (n.uri.as_str(), n.display.as_deref())),
                *expected,
                "{values:?}"
            );
        }
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("From", "\"Bob \\\"B\\\"\" <sip:bob@b.example>;tag=a48s").unwrap();
        assert_eq!(n.display.as_deref(), Some("Bob \"B\""));
        assert_eq!(n.uri, "sip:bob@b.example");
        assert_eq!(n.tag(), Some("a48s"));
        let n = NameAddr::parse("To", "sip:bob@b.example;tag=x").unwrap();
        assert_eq!(n.uri, "sip:bob@b.example");
        assert_eq!(n.tag(), Some("x"));
        let n = NameAddr::parse("To", "caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display.as_deref(), Some("caller"));
        let n = NameAddr::parse("To", "Bob Smith <sip:b@x>").unwrap();
        assert_eq!(n.display.as_deref(), Some("Bob Smith"));
        assert_eq!(
            NameAddr::parse("From", "\"Bob <sip:b@x>")
                .unwrap_err()
                .detail,
            "unterminated quoted display name"
        );
        assert!(NameAddr::parse("From", "Bob@x <sip:b@x>").is_err());
        assert!(NameAddr::parse("From", "sip:b@x?h=1").is_err());
        assert!(NameAddr::parse("From", "<sip:b@x").is_err());
        assert!(NameAddr::parse("From", "<sip:b @x>").is_err());
        assert!(NameAddr::parse("From", "").is_err());
        assert_eq!(
            NameAddr::parse("To", "\"A\" <sip:a@x>;tag=1")
                .unwrap()
                .to_string(),
            "\"A\" <sip:a@x>;tag=1"
        );
    }

    #[test]
    fn cseq_and_numbers() {
        assert_eq!(
            CSeq::parse("  7 MESSAGE ").unwrap(),
            CSeq {
                seq: 7,
                method: "MESSAGE".into()
            }
        );
        assert!(CSeq::parse("36893488147419103232 INVITE").is_err());
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("1 A B").is_err());
        assert!(CSeq::parse("-1 MESSAGE").is_err());
        assert_eq!(parse_delta_seconds("Expires", "3600").unwrap(), 3600);
        assert_eq!(
            parse_delta_seconds("Expires", "99999999999999").unwrap(),
            u32::MAX
        );
        assert!(parse_delta_seconds("Expires", "-1").is_err());
        assert_eq!(parse_max_forwards("70").unwrap(), 70);
        assert!(parse_max_forwards("300").is_err());
        assert!(parse_max_forwards("").is_err());
        assert_eq!(parse_retry_after("30 (busy);duration=10").unwrap(), 30);
        assert!(parse_retry_after("soon").is_err());
    }

    #[test]
    fn via_first_entry() {
        let v =
            Via::parse_first("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9;rport, SIP/2.0/TCP x")
                .unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.sent_by, "192.0.2.1:5060");
        assert_eq!(v.branch(), Some("z9hG4bK74bf9"));
        let v = Via::parse_first("SIP / 2.0 / TCP host;branch=1").unwrap();
        assert_eq!(v.transport, "TCP");
        assert!(Via::parse_first("SIP/3.0/UDP h").is_err());
        assert!(Via::parse_first("garbage").is_err());
    }

    #[test]
    fn event_and_subscription_state() {
        let e = EventHeader::parse("Presence ;id=5").unwrap();
        assert_eq!(e.package, "presence");
        assert_eq!(e.id(), Some("5"));
        assert!(EventHeader::parse("").is_err());
        assert_eq!(
            SubState::parse("active;expires=600").unwrap(),
            SubState::Active { expires: Some(600) }
        );
        assert_eq!(
            SubState::parse("terminated;reason=noresource;retry-after=30").unwrap(),
            SubState::Terminated {
                reason: Some("noresource".into()),
                retry_after: Some(30)
            }
        );
        assert_eq!(
            SubState::Terminated {
                reason: Some("timeout".into()),
                retry_after: None
            }
            .to_string(),
            "terminated;reason=timeout"
        );
        assert!(SubState::parse("active;expires=x").is_err());
    }

    #[test]
    fn top_level_split_respects_quotes_and_angles() {
        assert_eq!(
            split_top_level("\"a,b\" <sip:x@y;p=1,2>, <sip:z@w>", ','),
            vec!["\"a,b\" <sip:x@y;p=1,2>", " <sip:z@w>"]
        );
    }
}
