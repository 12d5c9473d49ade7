//! `cpim-gateway translate`: the operator's dry-run tool for interop debugging.
//!
//! Parses a captured payload with the model crate and prints either the model as JSON
//! or the payload re-serialized in its own format. A `message/cpim` body that parses
//! and is not changed comes back byte-for-byte (RFC 3862 §6); the XML formats come back
//! in their canonical form. Invalid input is an error, never a panic.
//!
//! `--from xmpp` reads one stanza of `jabber:component:accept` and runs the XMPP adapter's
//! translation ([`cpim_xmpp::translate::inbound`]): `--to json` prints the broker
//! submissions it gives, `--to xmpp` sends each through an envelope (gateway ids
//! `gw-0000000000000001`, … in order) back out ([`cpim_xmpp::translate::outbound`]) and
//! prints the resulting stanzas, one per line. A stanza the adapter refuses is an error
//! naming the stanza-error condition the sender would get. A stanza in `jabber:client`
//! (captured from a client stream) is read as the component would read it.
//!
//! Across networks, `--from sip --to xmpp` prints the stanzas a captured SIP request
//! becomes and `--from xmpp --to sip` the SIP MESSAGE an XMPP message becomes, with the
//! addresses mapped by RFC 7247 §6 (no `gateway.toml`: aliases and escape domains are not
//! applied; `explain` shows those).

use std::fmt;

use clap::ValueEnum;

use cpim::event::Event;
use cpim::imdn::Imdn;
use cpim::iscomposing::IsComposing;
use cpim::presence::Presence;
use cpim::{Address, CpimMessage};
use cpim_broker::envelope::ProtocolId;
use cpim_broker::{Envelope, Identity, Inbound, MessageId};
use cpim_xmpp::translate as xmpp;

/// What the input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// A `message/cpim` body (RFC 3862).
    Cpim,
    /// A PIDF presence document (RFC 3863, with RPID and RFC 7248 extensions).
    Pidf,
    /// A `message/imdn+xml` delivery notification (RFC 5438).
    Imdn,
    /// An `application/im-iscomposing+xml` document (RFC 3994).
    Iscomposing,
    /// One XMPP stanza (`<message/>` or `<presence/>` of `jabber:component:accept`, or
    /// as a client writes it: `jabber:client` or no namespace).
    Xmpp,
    /// One SIP request as captured on the wire (a MESSAGE, or a PUBLISH/NOTIFY with PIDF).
    Sip,
}

/// What to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The model as pretty-printed JSON.
    Json,
    /// `message/cpim` (only from `cpim`).
    Cpim,
    /// PIDF (only from `pidf`).
    Pidf,
    /// IMDN XML (only from `imdn`).
    Imdn,
    /// is-composing XML (only from `iscomposing`).
    Iscomposing,
    /// XMPP stanzas after a round trip through the broker model (from `xmpp`), or the
    /// stanzas a captured SIP request becomes (from `sip`).
    Xmpp,
    /// The SIP MESSAGE the gateway would send after a round trip through the broker
    /// model (from `sip`), or the one an XMPP message becomes (from `xmpp`).
    Sip,
}

impl InputFormat {
    fn name(self) -> &'static str {
        match self {
            InputFormat::Cpim => "message/cpim",
            InputFormat::Pidf => "PIDF",
            InputFormat::Imdn => "IMDN",
            InputFormat::Iscomposing => "is-composing",
            InputFormat::Xmpp => "XMPP stanza",
            InputFormat::Sip => "SIP request",
        }
    }

    fn same_output(self) -> OutputFormat {
        match self {
            InputFormat::Cpim => OutputFormat::Cpim,
            InputFormat::Pidf => OutputFormat::Pidf,
            InputFormat::Imdn => OutputFormat::Imdn,
            InputFormat::Iscomposing => OutputFormat::Iscomposing,
            InputFormat::Xmpp => OutputFormat::Xmpp,
            InputFormat::Sip => OutputFormat::Sip,
        }
    }
}

/// Why a translation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranslateError {
    /// The input is not a valid payload of the stated format.
    #[error("invalid {format}: {reason}")]
    Invalid {
        /// The input format's name.
        format: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// The requested conversion does not exist.
    #[error("cannot translate {from:?} to {to:?}: use --to json or --to {same}")]
    Unsupported {
        /// Input format.
        from: InputFormat,
        /// Output format.
        to: OutputFormat,
        /// The format's own name for `--to`.
        same: Lower,
    },
    /// The input could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path, or `-` for standard input.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A format name as typed on the command line.
#[derive(Debug)]
pub struct Lower(OutputFormat);

impl fmt::Display for Lower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.to_possible_value() {
            Some(v) => f.write_str(v.get_name()),
            None => write!(f, "{:?}", self.0),
        }
    }
}

fn invalid(format: InputFormat, reason: impl fmt::Display) -> TranslateError {
    TranslateError::Invalid {
        format: format.name(),
        reason: reason.to_string(),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // The model types serialize to JSON without failing (no maps with non-string keys,
    // no foreign Serialize impls that can error).
    let mut out = serde_json::to_vec_pretty(value).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Translates `input` from `from` to `to`.
pub fn translate(
    from: InputFormat,
    to: OutputFormat,
    input: &[u8],
) -> Result<Vec<u8>, TranslateError> {
    let across = matches!(
        (from, to),
        (InputFormat::Sip, OutputFormat::Xmpp) | (InputFormat::Xmpp, OutputFormat::Sip)
    );
    if to != OutputFormat::Json && to != from.same_output() && !across {
        return Err(TranslateError::Unsupported {
            from,
            to,
            same: Lower(from.same_output()),
        });
    }
    let as_json = to == OutputFormat::Json;
    Ok(match from {
        InputFormat::Cpim => {
            let m = CpimMessage::parse(input).map_err(|e| invalid(from, e))?;
            if as_json {
                json(&m)
            } else {
                m.to_bytes()
            }
        }
        InputFormat::Pidf => {
            let p = Presence::parse(input).map_err(|e| invalid(from, e))?;
            if as_json {
                json(&p)
            } else {
                p.to_xml().into_bytes()
            }
        }
        InputFormat::Imdn => {
            let i = Imdn::parse(input).map_err(|e| invalid(from, e))?;
            if as_json {
                json(&i)
            } else {
                i.to_xml().into_bytes()
            }
        }
        InputFormat::Iscomposing => {
            let c = IsComposing::parse(input).map_err(|e| invalid(from, e))?;
            if as_json {
                json(&c)
            } else {
                c.to_xml().into_bytes()
            }
        }
        InputFormat::Xmpp => {
            // The same limits as on the component stream, before any tree is built.
            cpim_xmpp::guard::check_document(input, cpim_xmpp::guard::Limits::default())
                .map_err(|e| invalid(from, e))?;
            let text = std::str::from_utf8(input).map_err(|e| invalid(from, e))?;
            let stanza = component_namespace(text)
                .parse::<minidom::Element>()
                .map_err(|e| invalid(from, e))?;
            let submissions = xmpp::inbound(&stanza, 0).map_err(|e| invalid(from, e))?;
            if to == OutputFormat::Sip {
                let mut out = Vec::new();
                for inbound in submissions {
                    if !matches!(inbound.event, Event::Message(_)) {
                        continue;
                    }
                    let inbound = readdress(inbound, Network::Sip).map_err(|e| invalid(from, e))?;
                    out.extend(sip_round_trip(inbound).map_err(|e| invalid(from, e))?);
                }
                if out.is_empty() {
                    return Err(invalid(
                        from,
                        "no message in it for SIP (the SIP side is shown for messages)",
                    ));
                }
                out
            } else if as_json {
                json(
                    &submissions
                        .iter()
                        .map(InboundView::from)
                        .collect::<Vec<_>>(),
                )
            } else {
                xmpp_round_trip(submissions).map_err(|e| invalid(from, e))?
            }
        }
        InputFormat::Sip => {
            let inbound = sip_inbound(input).map_err(|e| invalid(from, e))?;
            if to == OutputFormat::Xmpp {
                let inbound = readdress(inbound, Network::Xmpp).map_err(|e| invalid(from, e))?;
                xmpp_round_trip(vec![inbound]).map_err(|e| invalid(from, e))?
            } else if as_json {
                json(&InboundView::from(&inbound))
            } else {
                sip_round_trip(inbound).map_err(|e| invalid(from, e))?
            }
        }
    })
}

/// The other network of a cross translation.
#[derive(Debug, Clone, Copy)]
enum Network {
    Sip,
    Xmpp,
}

/// `inbound` addressed for `network` by the default mapping of RFC 7247 §6 (no
/// configuration: aliases and escape domains of a `gateway.toml` are not applied).
fn readdress(mut inbound: Inbound, network: Network) -> Result<Inbound, String> {
    let convert = |address: &Address| -> Result<Address, String> {
        let converted = match (network, address) {
            (Network::Xmpp, Address::Sip(uri)) => cpim::address::sip_to_jid(uri).map(Address::Xmpp),
            (Network::Xmpp, Address::Im(uri)) => cpim::address::im_to_jid(uri).map(Address::Xmpp),
            (Network::Sip, Address::Xmpp(jid)) => {
                cpim::address::jid_to_sip(jid, false, true).map(Address::Sip)
            }
            (_, other) => Ok(other.clone()),
        };
        converted
            .map_err(|e| format!("{address} has no RFC 7247 §6 form on the other network: {e}"))
    };
    inbound.from = convert(&inbound.from)?;
    inbound.to = convert(&inbound.to)?;
    Ok(inbound)
}

/// A stanza as a client writes it (`jabber:client`, or no namespace) in the component
/// namespace, so that a stanza captured from a client stream can be translated too.
fn component_namespace(text: &str) -> std::borrow::Cow<'_, str> {
    const COMPONENT: &str = "jabber:component:accept";
    if text.contains("'jabber:client'") || text.contains("\"jabber:client\"") {
        return text
            .replace("'jabber:client'", &format!("'{COMPONENT}'"))
            .replace("\"jabber:client\"", &format!("\"{COMPONENT}\""))
            .into();
    }
    // No default namespace on the root element: give it the component's.
    let start = text.find('<').unwrap_or(0);
    let head_end = text[start..].find('>').map_or(text.len(), |e| start + e);
    let head = &text[start..head_end];
    if head.contains("xmlns=") {
        return text.into();
    }
    let name_end = head
        .find(|c: char| c.is_whitespace() || c == '/')
        .map_or(head_end, |e| start + e);
    format!(
        "{} xmlns='{COMPONENT}'{}",
        &text[..name_end],
        &text[name_end..]
    )
    .into()
}

/// A captured SIP request: what the SIP adapter would submit.
fn sip_inbound(input: &[u8]) -> Result<Inbound, String> {
    use cpim_sip::wire::{check_request, frame, Framed};
    let raw = match frame(input) {
        Framed::Message(m) if m.is_request => m,
        Framed::Message(_) => return Err("a response, not a request".to_owned()),
        Framed::Bad(fault, _) => return Err(format!("{} {}", fault.status, fault.reason)),
    };
    let view = check_request(&raw, true).map_err(|f| format!("{} {}", f.status, f.reason))?;
    match view.method.as_str() {
        "MESSAGE" => cpim_sip::translate::message_inbound(&view, 0)
            .map_err(|f| format!("{} {}", f.status, f.reason)),
        "PUBLISH" | "NOTIFY" => {
            let presence = Presence::parse_lenient(&view.body).map_err(|e| e.to_string())?;
            let from =
                cpim_sip::translate::address_of(&view.from.uri, "From").map_err(|f| f.reason)?;
            let to = cpim_sip::translate::recipient(&view).map_err(|f| f.reason)?;
            let (from, to) = if view.method == "PUBLISH" {
                (to.clone(), to)
            } else {
                (from, to)
            };
            Ok(Inbound::new(
                Event::Presence(cpim::event::PresenceUpdate { presence }),
                from,
                to,
            ))
        }
        other => Err(format!(
            "a {other} request carries nothing to translate (MESSAGE, PUBLISH or NOTIFY)"
        )),
    }
}

/// The envelope the broker would make of `inbound` when it stays on `adapter`,
/// addressed as received.
fn envelope_as_received(inbound: Inbound, adapter: &str, id: MessageId) -> Envelope {
    let identity = |address: &Address| match address.identity() {
        Ok(Some((local, domain))) => Identity::new(&local, &domain),
        _ => Identity::new("", address.domain()),
    };
    Envelope {
        id,
        sender: identity(&inbound.from),
        recipient: identity(&inbound.to),
        origin: adapter.into(),
        destination: adapter.into(),
        origin_from: inbound.from.clone(),
        origin_to: inbound.to.clone(),
        from: inbound.from,
        to: inbound.to,
        event: inbound.event,
        protocol_ids: inbound.protocol_ids,
        hops: inbound.hops.unwrap_or(70),
        received_at_ms: inbound.received_at_ms,
    }
}

/// A submission back out as the SIP MESSAGE the adapter would send.
fn sip_round_trip(inbound: Inbound) -> Result<Vec<u8>, String> {
    let envelope = envelope_as_received(inbound, "sip", MessageId(1));
    // A sender that wrote CPIM takes CPIM; otherwise the adapter's default for a
    // contact it knows nothing about (no `cpim_domains`): the plain content.
    let options = cpim_sip::translate::OutboundOptions {
        cpim: matches!(&envelope.event, Event::Message(m) if m.cpim.is_some()),
        now_unix_secs: 0,
    };
    let out = cpim_sip::translate::message_out(&envelope, &options)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "nothing to send over SIP".to_owned())?;
    let from = format!("<{}>;tag=1", out.from);
    let to = format!("<{}>", out.to);
    Ok(cpim_sip::wire::OutRequest {
        method: "MESSAGE",
        uri: &out.to,
        via_transport: "UDP",
        via_sent_by: "gateway.invalid",
        branch: "z9hG4bK-translate",
        from: &from,
        to: &to,
        call_id: out
            .call_id
            .as_deref()
            .unwrap_or("translate@gateway.invalid"),
        cseq: 1,
        max_forwards: envelope.hops,
        headers: &out.headers,
        body: Some((&out.content_type, &out.body)),
    }
    .to_bytes())
}

/// An [`Inbound`] as JSON.
#[derive(serde::Serialize)]
struct InboundView<'a> {
    event: &'a Event,
    from: &'a Address,
    to: &'a Address,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    protocol_ids: &'a [ProtocolId],
    #[serde(skip_serializing_if = "Option::is_none")]
    dedup_key: Option<&'a str>,
}

impl<'a> From<&'a Inbound> for InboundView<'a> {
    fn from(inbound: &'a Inbound) -> Self {
        InboundView {
            event: &inbound.event,
            from: &inbound.from,
            to: &inbound.to,
            protocol_ids: &inbound.protocol_ids,
            dedup_key: inbound.dedup_key.as_deref(),
        }
    }
}

/// Each submission through an envelope addressed as received, back out as stanzas.
fn xmpp_round_trip(submissions: Vec<Inbound>) -> Result<Vec<u8>, xmpp::TranslateError> {
    let mut out = Vec::new();
    for (n, inbound) in (1..).zip(submissions) {
        let envelope = envelope_as_received(inbound, "xmpp", MessageId(n));
        for stanza in xmpp::outbound(&envelope, &xmpp::OutboundOptions::default())? {
            out.extend_from_slice(String::from(&stanza).as_bytes());
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// Reads `path` (`-` is standard input).
pub fn read_input(path: &str) -> Result<Vec<u8>, TranslateError> {
    let read = if path == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf).map(|_| buf)
    } else {
        std::fs::read(path)
    };
    read.map_err(|source| TranslateError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cpim_to_json_has_the_model() {
        let input = b"From: <im:a@b.example>\r\nSubject:;lang=en hi\r\n\r\nContent-Type: text/plain\r\n\r\nhello";
        let out = translate(InputFormat::Cpim, OutputFormat::Json, input).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["from"]["uri"], "im:a@b.example");
        assert_eq!(v["subject"][0]["lang"], "en");
        assert_eq!(v["content"]["body_text"], "hello");
    }

    #[test]
    fn deep_or_wide_xmpp_input_is_refused_before_parsing() {
        let deep = format!(
            "<message xmlns='jabber:component:accept' from='a@x' to='b@y'>{}{}</message>",
            "<a>".repeat(200_000),
            "</a>".repeat(200_000)
        );
        let err = translate(InputFormat::Xmpp, OutputFormat::Json, deep.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("nested deeper than 64"), "{err}");
        let attrs: String = (0..1000).map(|i| format!(" a{i}='v'")).collect();
        let wide = format!("<message xmlns='jabber:component:accept'{attrs}/>");
        let err = translate(InputFormat::Xmpp, OutputFormat::Json, wide.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("attributes"), "{err}");
    }

    #[test]
    fn sip_to_xmpp_and_xmpp_to_sip() {
        let sip = b"MESSAGE sip:juliet@xmpp.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n\
            Max-Forwards: 70\r\nFrom: <sip:romeo@sip.example>;tag=1\r\nTo: <sip:juliet@xmpp.example>\r\n\
            Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
        let out = String::from_utf8(translate(InputFormat::Sip, OutputFormat::Xmpp, sip).unwrap())
            .unwrap();
        assert!(
            out.contains("from='romeo@sip.example'") || out.contains("from=\"romeo@sip.example\""),
            "{out}"
        );
        assert!(out.contains("juliet@xmpp.example"), "{out}");
        assert!(out.contains("<body>hello</body>"), "{out}");
        // A client-namespace stanza, to SIP.
        let stanza = b"<message xmlns='jabber:client' from='juliet@xmpp.example/balcony' to='romeo@sip.example' id='m1'><body>hi there</body></message>";
        let out =
            String::from_utf8(translate(InputFormat::Xmpp, OutputFormat::Sip, stanza).unwrap())
                .unwrap();
        assert!(
            out.starts_with("MESSAGE sip:romeo@sip.example SIP/2.0\r\n"),
            "{out}"
        );
        assert!(out.contains("sip:juliet@xmpp.example;gr=balcony"), "{out}");
        assert!(out.ends_with("hi there"), "{out}");
        // No namespace at all.
        let bare = b"<message from='juliet@xmpp.example/b' to='romeo@sip.example'><body>x</body></message>";
        assert!(translate(InputFormat::Xmpp, OutputFormat::Json, bare).is_ok());
        // Presence has no SIP MESSAGE.
        let presence = b"<presence xmlns='jabber:client' from='juliet@xmpp.example/b' to='romeo@sip.example'/>";
        assert!(translate(InputFormat::Xmpp, OutputFormat::Sip, presence).is_err());
    }

    #[test]
    fn xmpp_to_json_and_back() {
        let input = b"<message xmlns='jabber:component:accept' from='a@x/r' to='b@y' id='1'>\
<body>hi</body></message>";
        let out = translate(InputFormat::Xmpp, OutputFormat::Json, input).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["event"]["kind"], "message");
        assert_eq!(v[0]["event"]["body"], "hi");
        assert_eq!(v[0]["from"], "a@x/r");
        assert_eq!(v[0]["protocol_ids"][0]["value"], "1");
        let out = translate(InputFormat::Xmpp, OutputFormat::Xmpp, input).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("<message xmlns='jabber:component:accept' from='a@x/r' id='gw-0000000000000001' to='b@y'><body>hi</body>"), "{out}");
        assert_eq!(out.lines().count(), 1);
    }

    #[test]
    fn rfc3428_message_to_json_and_back_to_sip() {
        let input = include_bytes!("../../../tests/vectors/sip/rfc3428-message.sip");
        let out = translate(InputFormat::Sip, OutputFormat::Json, input).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["event"]["kind"], "message");
        assert_eq!(v["event"]["body"], "Watson, come here.");
        assert_eq!(v["event"]["thread"], "asd88asd77a@1.2.3.4");
        assert_eq!(v["from"], "sip:user1@domain.com");
        assert_eq!(v["to"], "sip:user2@domain.com");
        let out = translate(InputFormat::Sip, OutputFormat::Sip, input).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("MESSAGE sip:user2@domain.com SIP/2.0\r\n"),
            "{out}"
        );
        assert!(out.contains("Call-ID: asd88asd77a@1.2.3.4\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nWatson, come here."), "{out}");
        let err = translate(
            InputFormat::Sip,
            OutputFormat::Json,
            b"INVITE sip:a@b SIP/2.0\r\n\r\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("400"), "{err}");
    }

    #[test]
    fn refused_stanza_names_the_condition() {
        let input =
            b"<message xmlns='jabber:component:accept' from='a@x' to='b@y' type='groupchat'/>";
        let err = translate(InputFormat::Xmpp, OutputFormat::Json, input).unwrap_err();
        assert!(err.to_string().contains("feature-not-implemented"), "{err}");
    }

    #[test]
    fn cross_format_is_refused() {
        let err = translate(InputFormat::Pidf, OutputFormat::Cpim, b"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot translate Pidf to Cpim: use --to json or --to pidf"
        );
    }

    #[test]
    fn garbage_is_an_error_for_every_format() {
        for from in InputFormat::value_variants() {
            for input in [&b""[..], b"\xff\xfe<", b"<x", b"From: <im:a@b>\r\n"] {
                assert!(matches!(
                    translate(*from, OutputFormat::Json, input),
                    Err(TranslateError::Invalid { .. })
                ));
            }
        }
    }
}
