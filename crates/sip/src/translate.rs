//! SIP requests ⇄ broker events (RFC 3428 MESSAGE, RFC 7572 for IM, RFC 7248 for
//! presence bodies). Pure: no sockets, no clock (`now` is passed in).
//!
//! | SIP | event |
//! |---|---|
//! | MESSAGE `text/*` | `Message` (Call-ID → thread, Subject → subject, Content-Language → lang) |
//! | MESSAGE `message/cpim` | `Message` with the CPIM bytes carried unaltered; the inner entity as content; `imdn.Disposition-Notification` → receipts; an inner `message/imdn+xml` → `Notification`; an inner isComposing → `Composing` |
//! | MESSAGE `application/im-iscomposing+xml` | `Composing` |
//! | MESSAGE `message/imdn+xml` | `Notification` |
//! | other content | 415 with `Accept` |

use cpim::address::{Address, SipUri};
use cpim::condition::Condition;
use cpim::datetime::Timestamp;
use cpim::event::{
    Composing, Event, LangText, Message, Notification, NotificationStatus, Receipts,
};
use cpim::imdn::{DeliveryStatus, DisplayStatus, DispositionKind, DispositionRequest, Imdn};
use cpim::iscomposing::{ComposingState, IsComposing};
use cpim::message::{CpimMessage, Header as CpimHeader, MediaType, MimeEntity, NameAddr};
use cpim_broker::envelope::{DeliveryOutcome, Envelope, Inbound, ProtocolId, Rejected};
use std::time::Duration;

use crate::wire::{Fault, RequestView};

/// Protocol id: the SIP Call-ID of a received request.
pub const SIP_CALL_ID: &str = "sip.call-id";
/// Protocol id: the `imdn.Message-ID` of a received CPIM message (RFC 5438).
pub const IMDN_MESSAGE_ID: &str = "imdn.message-id";
/// Protocol id: the CPIM `DateTime` of that message (an IMDN repeats it).
pub const IMDN_DATETIME: &str = "imdn.datetime";
/// Protocol id: the `imdn.Disposition-Notification` the sender asked for.
pub const IMDN_DISPOSITION: &str = "imdn.disposition";

/// The content types a MESSAGE may carry (the `Accept` of a 415).
pub const ACCEPT_MESSAGE: &str =
    "text/plain, message/cpim, application/im-iscomposing+xml, message/imdn+xml";

const IMDN_NS: &str = "urn:ietf:params:imdn";
const CPIM_TYPE: &str = "message/cpim";
const COMPOSING_TYPE: &str = "application/im-iscomposing+xml";
const IMDN_TYPE: &str = "message/imdn+xml";

/// A URI of a SIP request, read as an address.
pub fn address_of(uri: &str, what: &str) -> Result<Address, Fault> {
    match Address::parse(uri) {
        Ok(a @ (Address::Sip(_) | Address::Im(_))) => Ok(a),
        Ok(Address::Xmpp(_)) | Err(_) => Err(Fault::new(
            400,
            format!("Bad Request (unreadable {what} URI)"),
        )),
    }
}

/// The address-of-record of a SIP URI (`sip:user@host`, no parameters), for matching
/// subscriptions and publications and as the URI of the gateway's own requests about
/// it. The host is already lowercase; the user part keeps its case (RFC 3261 §19.1.4:
/// user parts compare case-sensitively).
pub fn aor_key(address: &Address) -> String {
    match address {
        Address::Sip(u) => u.aor().to_string(),
        other => other.to_string(),
    }
}

/// The recipient of a request: the Request-URI when it names a user (RFC 3428 §7),
/// otherwise the `To` URI.
pub fn recipient(view: &RequestView) -> Result<Address, Fault> {
    let target = address_of(&view.uri, "Request-")?;
    let has_user = match &target {
        Address::Sip(u) => u.user_raw().is_some(),
        _ => true,
    };
    if has_user {
        Ok(strip_uri_params(target))
    } else {
        address_of(&view.to.uri, "To").map(strip_uri_params)
    }
}

/// A SIP URI without parameters other than `gr` (transport, user=phone, … do not name
/// a different user).
fn strip_uri_params(address: Address) -> Address {
    match address {
        Address::Sip(u) => {
            let gr = u.gr().ok().flatten();
            let aor = u.aor();
            Address::Sip(match gr {
                Some(g) => aor.with_gr(&g),
                None => aor,
            })
        }
        other => other,
    }
}

/// Reads a MESSAGE into a submission. `Err` is the response to send.
pub fn message_inbound(view: &RequestView, now_ms: u64) -> Result<Inbound, Fault> {
    if view.max_forwards == Some(0) {
        return Err(Fault::new(483, "Too Many Hops"));
    }
    let from = address_of(&view.from.uri, "From").map(strip_uri_params)?;
    let to = recipient(view)?;
    let mut protocol_ids = vec![ProtocolId {
        kind: SIP_CALL_ID.to_owned(),
        value: view.call_id.clone(),
    }];
    let content_type = view
        .content_type
        .clone()
        .unwrap_or_else(|| "text/plain".to_owned());
    let media = MediaType::parse(&content_type)
        .map_err(|_| Fault::new(400, "Bad Request (malformed Content-Type)"))?;
    let lang = view.header("Content-Language").map(|l| l.trim().to_owned());
    let subjects: Vec<LangText> = view
        .header("Subject")
        .map(|s| LangText {
            lang: None,
            text: s.to_owned(),
        })
        .into_iter()
        .collect();
    let event = match media.essence() {
        CPIM_TYPE => {
            let cpim = CpimMessage::parse(&view.body)
                .map_err(|e| Fault::new(400, format!("Bad Request (invalid message/cpim: {e})")))?;
            cpim_event(&cpim, view, &mut protocol_ids)?
        }
        essence => single_event(essence, &content_type, &view.body, subjects, lang, view)?,
    };
    let mut inbound = Inbound::new(event, from, to);
    inbound.protocol_ids = protocol_ids;
    inbound.dedup_key = Some(format!("{}/{}", view.call_id, view.cseq.seq));
    inbound.hops = view.max_forwards;
    inbound.received_at_ms = now_ms;
    // RFC 3428 §7 / RFC 3261 §20.19: the sender's lifetime of the message; the gateway
    // fails it back rather than deliver it after that (the shorter of this and its own).
    if let Some(expires) = view.header("Expires") {
        let secs = crate::headers::parse_delta_seconds("Expires", expires)
            .map_err(|e| Fault::new(400, format!("Bad Request ({e})")))?;
        inbound.expires = Some(Duration::from_secs(u64::from(secs)));
    }
    Ok(inbound)
}

fn single_event(
    essence: &str,
    content_type: &str,
    body: &[u8],
    subjects: Vec<LangText>,
    lang: Option<String>,
    view: &RequestView,
) -> Result<Event, Fault> {
    Ok(match essence {
        COMPOSING_TYPE => {
            let c = IsComposing::parse(body)
                .map_err(|e| Fault::new(400, format!("Bad Request (invalid isComposing: {e})")))?;
            Event::Composing(Composing {
                state: c.state,
                refresh_secs: c.refresh,
            })
        }
        IMDN_TYPE => Event::Notification(notification_of(body)?),
        t if t.starts_with("text/") => {
            if std::str::from_utf8(body).is_err() {
                return Err(Fault::new(400, "Bad Request (text body is not UTF-8)"));
            }
            Event::Message(Message {
                content_type: content_type.to_owned(),
                body: body.to_vec(),
                subjects,
                lang,
                thread: Some(view.call_id.clone()),
                cpim: None,
                receipts: Receipts::default(),
            })
        }
        _ => {
            return Err(
                Fault::new(415, "Unsupported Media Type").with_header("Accept", ACCEPT_MESSAGE)
            )
        }
    })
}

fn notification_of(body: &[u8]) -> Result<Notification, Fault> {
    let imdn = Imdn::parse(body)
        .map_err(|e| Fault::new(400, format!("Bad Request (invalid IMDN: {e})")))?;
    use cpim::imdn::Notification as N;
    let status = match imdn.notification {
        N::Delivery(DeliveryStatus::Delivered) => NotificationStatus::Delivered,
        N::Display(DisplayStatus::Displayed) => NotificationStatus::Displayed,
        N::Processing(cpim::imdn::ProcessingStatus::Stored) => NotificationStatus::Stored,
        N::Processing(_) => NotificationStatus::Stored,
        // A display notification's `forbidden`/`error` says only that no display
        // notification will come: the message was delivered (RFC 5438 §5.3).
        N::Display(DisplayStatus::Forbidden | DisplayStatus::Error) => {
            NotificationStatus::DisplayUnknown
        }
        N::Delivery(DeliveryStatus::Forbidden) => NotificationStatus::Failed {
            condition: Condition::Forbidden,
            text: None,
        },
        N::Delivery(_) => NotificationStatus::Failed {
            condition: Condition::RecipientUnavailable,
            text: None,
        },
    };
    Ok(Notification {
        message_id: imdn.message_id,
        status,
    })
}

fn cpim_event(
    cpim: &CpimMessage,
    view: &RequestView,
    protocol_ids: &mut Vec<ProtocolId>,
) -> Result<Event, Fault> {
    let content = cpim.content();
    let content_type = content
        .header("Content-Type")
        .unwrap_or_else(|| "text/plain".to_owned());
    let media = MediaType::parse(&content_type)
        .map_err(|_| Fault::new(400, "Bad Request (malformed CPIM Content-Type)"))?;
    let imdn_header = |name: &str| {
        cpim.headers_in(IMDN_NS, name)
            .first()
            .map(|h| h.value().trim().to_owned())
    };
    let mut push = |kind: &str, value: String| {
        protocol_ids.push(ProtocolId {
            kind: kind.to_owned(),
            value,
        })
    };
    if let Some(id) = imdn_header("Message-ID") {
        push(IMDN_MESSAGE_ID, id);
    }
    if let Ok(Some(dt)) = cpim.datetime() {
        push(IMDN_DATETIME, dt.to_string());
    }
    let receipts = match imdn_header("Disposition-Notification") {
        Some(raw) => {
            let request = DispositionRequest::parse(&raw).unwrap_or_default();
            push(IMDN_DISPOSITION, raw);
            Receipts {
                delivered: request.wants(&DispositionKind::PositiveDelivery),
                failed: request.wants(&DispositionKind::NegativeDelivery),
                displayed: request.wants(&DispositionKind::Display),
            }
        }
        None => Receipts::default(),
    };
    match media.essence() {
        COMPOSING_TYPE | IMDN_TYPE => single_event(
            media.essence(),
            &content_type,
            content.body(),
            Vec::new(),
            None,
            view,
        ),
        t if t.starts_with("text/") => Ok(Event::Message(Message {
            content_type: content_type.clone(),
            body: content.body().to_vec(),
            subjects: cpim
                .subjects()
                .into_iter()
                .map(|s| LangText {
                    lang: s.lang,
                    text: s.text,
                })
                .collect(),
            lang: content.header("Content-Language"),
            thread: Some(view.call_id.clone()),
            cpim: Some(view.body.clone()),
            receipts,
        })),
        _ => Err(Fault::new(415, "Unsupported Media Type").with_header("Accept", ACCEPT_MESSAGE)),
    }
}

/// The SIP response for a refusal by the broker (RFC 7247 §7.1), with `Retry-After`
/// for back-pressure (503, RFC 3261 §21.5.4).
pub fn fault_for(rejected: &Rejected) -> Fault {
    if let Some(after) = rejected.retry_after {
        let secs = after.as_secs().max(1);
        return Fault::new(503, "Service Unavailable").with_header("Retry-After", secs.to_string());
    }
    let status = match rejected.condition {
        // A loop or hop exhaustion (RFC 3261 §16.3 step 3).
        Condition::NotAcceptable if rejected.text.starts_with("too many hops") => 483,
        // Too large for the destination network (RFC 3261 §21.4.11).
        Condition::PolicyViolation if rejected.text.contains("larger than") => 413,
        c => c.to_sip_status(),
    };
    let reason = reason_phrase(status);
    Fault::new(status, reason)
}

/// The standard reason phrase of a status code.
pub fn reason_phrase(status: u16) -> String {
    cpim::condition::sip_reason_phrase(status).to_owned()
}

/// The delivery outcome for a final response to a request the gateway sent (RFC 7247
/// §7.2): 200 → delivered, 202 → accepted, 503 with `Retry-After` → retry later, other
/// failures through Table 3.
pub fn outcome_for(status: u16, retry_after: Option<u32>, reason: &str) -> DeliveryOutcome {
    match status {
        200..=299 if status == 202 => DeliveryOutcome::Accepted,
        200..=299 => DeliveryOutcome::Delivered,
        503 | 480 | 486 | 600 if retry_after.is_some() => DeliveryOutcome::RetryLater {
            after: Duration::from_secs(u64::from(retry_after.unwrap_or(1).max(1))),
        },
        // A peer that is down or overloaded (RFC 3261 §21.4.9, §21.5.4): nothing gets
        // through it now, so the message waits in the spool (no head-of-line bound) and
        // is tried again with backoff until it expires.
        408 | 503 => DeliveryOutcome::Waiting {
            after: Duration::from_secs(1),
        },
        _ => DeliveryOutcome::Failed {
            condition: Condition::from_sip_status(status).unwrap_or(Condition::UndefinedCondition),
            text: Some(format!("SIP {status} {reason}")),
        },
    }
}

/// The outcome of a presence request (SUBSCRIBE, NOTIFY): soft state is never waited
/// for in the spool — its peers refresh it — so a timeout or an unavailable peer fails
/// it at once with its Table 3 condition.
pub fn presence_outcome_for(status: u16, reason: &str) -> DeliveryOutcome {
    match outcome_for(status, None, reason) {
        DeliveryOutcome::RetryLater { .. } | DeliveryOutcome::Waiting { .. } => {
            DeliveryOutcome::Failed {
                condition: Condition::from_sip_status(status)
                    .unwrap_or(Condition::UndefinedCondition),
                text: Some(format!("SIP {status} {reason}")),
            }
        }
        other => other,
    }
}

/// How outbound MESSAGEs are written.
#[derive(Debug, Clone, Default)]
pub struct OutboundOptions {
    /// The destination takes `message/cpim` (configured per destination domain with
    /// `cpim_domains`, or shown by the contact itself): messages are wrapped in CPIM,
    /// with IMDN requests where the sender asked for receipts. Otherwise every message
    /// goes as its plain content, which every SIP UA reads (RFC 3428 §8: `text/plain`),
    /// and no IMDN can be asked for.
    pub cpim: bool,
    /// The current time, for the CPIM `DateTime`.
    pub now_unix_secs: i64,
}

/// A MESSAGE to send: everything but the transaction headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// The Request-URI (= `To`).
    pub to: String,
    /// The `From` URI.
    pub from: String,
    /// The Call-ID to use (the thread when it is a valid Call-ID).
    pub call_id: Option<String>,
    /// Extra headers (`Subject`, `Content-Language`).
    pub headers: Vec<(String, String)>,
    /// The `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
}

/// Why an envelope cannot be written as SIP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// An address that is not a SIP or IM URI.
    #[error("{0} is not a SIP address")]
    NotSip(String),
    /// A body that cannot be carried.
    #[error("cannot write the body: {0}")]
    Body(String),
}

/// Writes a message, a composing indication or a delivery notification as a MESSAGE.
/// `Ok(None)` when the event has no SIP form here (a notification the SIP user did not
/// ask for).
pub fn message_out(
    envelope: &Envelope,
    options: &OutboundOptions,
) -> Result<Option<OutMessage>, TranslateError> {
    let to = sip_text(&envelope.to)?;
    let from = sip_text(&envelope.from)?;
    let mut out = OutMessage {
        to: to.clone(),
        from: from.clone(),
        call_id: None,
        headers: Vec::new(),
        content_type: String::new(),
        body: Vec::new(),
    };
    match &envelope.event {
        Event::Message(m) => {
            out.call_id = m
                .thread
                .as_deref()
                .filter(|t| is_call_id(t))
                .map(str::to_owned);
            if let Some(cpim) = m.cpim.as_ref().filter(|_| options.cpim) {
                out.content_type = CPIM_TYPE.to_owned();
                out.body = cpim.clone();
                return Ok(Some(out));
            }
            if options.cpim {
                out.content_type = CPIM_TYPE.to_owned();
                out.body = cpim_wrap(envelope, m, options)?;
                return Ok(Some(out));
            }
            if let Some(subject) = m.subjects.first() {
                out.headers
                    .push(("Subject".to_owned(), one_line(&subject.text)));
            }
            if let Some(lang) = &m.lang {
                out.headers
                    .push(("Content-Language".to_owned(), lang.clone()));
            }
            out.content_type = if m.content_type.is_empty() {
                "text/plain; charset=UTF-8".to_owned()
            } else {
                m.content_type.clone()
            };
            out.body = m.body.clone();
        }
        Event::Composing(c) => {
            out.content_type = COMPOSING_TYPE.to_owned();
            out.body = IsComposing {
                state: c.state,
                lastactive: None,
                contenttype: Some("text/plain".to_owned()),
                refresh: match c.state {
                    ComposingState::Active => c.refresh_secs.or(Some(60)),
                    ComposingState::Idle => None,
                },
                extensions: Vec::new(),
            }
            .to_xml()
            .into_bytes();
        }
        Event::Notification(n) => {
            let original = |kind: &str| {
                envelope
                    .protocol_ids
                    .iter()
                    .find(|p| p.kind == kind)
                    .map(|p| p.value.clone())
            };
            let Some(message_id) = original(IMDN_MESSAGE_ID) else {
                return Ok(None);
            };
            let asked = original(IMDN_DISPOSITION)
                .map(|raw| DispositionRequest::parse(&raw).unwrap_or_default())
                .unwrap_or_default();
            use cpim::imdn::Notification as N;
            let (notification, kind) = match &n.status {
                NotificationStatus::Delivered => (
                    N::Delivery(DeliveryStatus::Delivered),
                    DispositionKind::PositiveDelivery,
                ),
                NotificationStatus::Displayed => (
                    N::Display(DisplayStatus::Displayed),
                    DispositionKind::Display,
                ),
                NotificationStatus::Stored => (
                    N::Processing(cpim::imdn::ProcessingStatus::Stored),
                    DispositionKind::Processing,
                ),
                // RFC 5438 §5.3: `error`, the fate of the display cannot be known.
                NotificationStatus::DisplayUnknown => {
                    (N::Display(DisplayStatus::Error), DispositionKind::Display)
                }
                NotificationStatus::Failed { .. } => (
                    N::Delivery(DeliveryStatus::Failed),
                    DispositionKind::NegativeDelivery,
                ),
            };
            if !asked.wants(&kind) {
                return Ok(None);
            }
            let imdn = Imdn {
                message_id,
                datetime: original(IMDN_DATETIME).unwrap_or_else(|| {
                    Timestamp::from_unix_seconds(options.now_unix_secs).to_string()
                }),
                recipient_uri: Some(from.clone()),
                original_recipient_uri: None,
                subject: None,
                notification,
                status_extensions: Vec::new(),
                extensions: Vec::new(),
            };
            let content = MimeEntity::new(IMDN_TYPE, imdn.to_xml().into_bytes());
            let mut cpim = CpimMessage::new(content);
            push_cpim_core(&mut cpim, &from, &to, options, envelope)?;
            out.content_type = CPIM_TYPE.to_owned();
            out.body = cpim.to_bytes();
        }
        Event::Presence(_) | Event::Subscription(_) => {
            return Err(TranslateError::Body(
                "presence travels in SUBSCRIBE/NOTIFY, not MESSAGE".to_owned(),
            ))
        }
    }
    Ok(Some(out))
}

fn push_cpim_core(
    cpim: &mut CpimMessage,
    from: &str,
    to: &str,
    options: &OutboundOptions,
    envelope: &Envelope,
) -> Result<(), TranslateError> {
    let header = |name: &str, value: &str| {
        CpimHeader::new(name, value)
            .ok_or_else(|| TranslateError::Body(format!("cannot write CPIM {name}")))
    };
    let addr = |name: &str, uri: &str| {
        NameAddr::parse(&format!("<{uri}>"))
            .and_then(|a| CpimHeader::name_addr(name, &a))
            .ok_or_else(|| TranslateError::Body(format!("cannot write CPIM {name}")))
    };
    cpim.push_header(addr("From", from)?);
    cpim.push_header(addr("To", to)?);
    cpim.push_header(header(
        "DateTime",
        &Timestamp::from_unix_seconds(options.now_unix_secs).to_string(),
    )?);
    cpim.push_header(header("NS", &format!("imdn <{IMDN_NS}>"))?);
    cpim.push_header(header("imdn.Message-ID", &envelope.id.to_string())?);
    Ok(())
}

fn cpim_wrap(
    envelope: &Envelope,
    m: &Message,
    options: &OutboundOptions,
) -> Result<Vec<u8>, TranslateError> {
    let content_type = if m.content_type.is_empty() {
        "text/plain; charset=UTF-8"
    } else {
        &m.content_type
    };
    let mut content = MimeEntity::new(content_type, m.body.clone());
    if let Some(lang) = &m.lang {
        content.push_header(cpim::message::MimeHeader::new("Content-Language", lang));
    }
    let mut cpim = CpimMessage::new(content);
    let from = sip_text(&envelope.from)?;
    let to = sip_text(&envelope.to)?;
    push_cpim_core(&mut cpim, &from, &to, options, envelope)?;
    let mut kinds = Vec::new();
    if m.receipts.delivered {
        kinds.push("positive-delivery");
    }
    if m.receipts.failed {
        kinds.push("negative-delivery");
    }
    if m.receipts.displayed {
        kinds.push("display");
    }
    if !kinds.is_empty() {
        let h = CpimHeader::new("imdn.Disposition-Notification", &kinds.join(", "))
            .ok_or_else(|| TranslateError::Body("cannot write Disposition-Notification".into()))?;
        cpim.push_header(h);
    }
    for s in &m.subjects {
        let mut h = CpimHeader::new("Subject", &one_line(&s.text))
            .ok_or_else(|| TranslateError::Body("cannot write CPIM Subject".into()))?;
        if let Some(lang) = &s.lang {
            h = h.with_lang(lang);
        }
        cpim.push_header(h);
    }
    Ok(cpim.to_bytes())
}

/// An address as the SIP side writes it.
pub fn sip_text(address: &Address) -> Result<String, TranslateError> {
    match address {
        Address::Sip(u) => Ok(u.to_string()),
        Address::Im(u) => Ok(u.to_string()),
        Address::Xmpp(j) => Err(TranslateError::NotSip(j.to_string())),
    }
}

/// The SIP URI to send a request to.
pub fn sip_uri(address: &Address) -> Result<SipUri, TranslateError> {
    match address {
        Address::Sip(u) => Ok(u.clone()),
        other => Err(TranslateError::NotSip(other.to_string())),
    }
}

/// The PIDF document a SIP watcher gets for `presence` (the presentity's state from any
/// network), with `entity` = the presentity's SIP address. RFC 7248 §5 carries XMPP
/// `<show/>` inside the tuple's status, which SIP phones ignore; so when the document has
/// no `<person>` of its own, one is added with the RFC 4480 activity phones display:
/// `away` and `xa` → `<rpid:away/>`, `dnd` → `<rpid:busy/>`, of the tuple
/// [`Presence::preferred_tuple`](cpim::presence::Presence::preferred_tuple) picks when it
/// is open. Everything else is left as is.
pub fn pidf_for_watcher(presence: &cpim::presence::Presence, entity: String) -> Vec<u8> {
    use cpim::presence::{Activities, Activity, Basic, Person, Show};
    let mut doc = presence.clone();
    doc.entity = entity;
    if doc.persons.is_empty() {
        let open = doc
            .preferred_tuple()
            .filter(|t| t.status.basic != Some(Basic::Closed));
        let activity = match open.and_then(|t| t.status.show) {
            Some(Show::Away | Show::Xa) => Some(Activity::Away),
            Some(Show::Dnd) => Some(Activity::Busy),
            _ => None,
        };
        if let Some(activity) = activity {
            doc.persons.push(Person {
                id: "gw-person".to_owned(),
                activities: vec![Activities {
                    values: vec![activity],
                    ..Activities::default()
                }],
                user_input: None,
                show: None,
                notes: Vec::new(),
                timestamp: None,
                extensions: Vec::new(),
            });
        }
    }
    doc.to_xml().into_bytes()
}

/// `word ["@" word]` of RFC 3261 §25.1, at most 128 characters.
fn is_call_id(s: &str) -> bool {
    let word = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.!%*_+`'~()<>:\\\"/[]?{}".contains(c))
    };
    s.len() <= 128
        && match s.split_once('@') {
            Some((a, b)) => word(a) && word(b),
            None => word(s),
        }
}

/// Header text on one line (no CR/LF).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::wire::{check_request, frame, Framed};
    use cpim_broker::envelope::MessageId;
    use cpim_broker::identity::Identity;

    fn view(content_type: &str, body: &str, extra: &str) -> RequestView {
        let text = format!(
            "MESSAGE sip:bob@sip.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
             Max-Forwards: 70\r\n\
             From: \"Alice\" <sip:alice@sip.test>;tag=1\r\n\
             To: <sip:bob@sip.test>\r\n\
             Call-ID: D9AA95FD-2BD5-46E2-AF0F-6CFAA96BDDFA\r\n\
             CSeq: 1 MESSAGE\r\n\
             Content-Type: {content_type}\r\n\
             {extra}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match frame(text.as_bytes()) {
            Framed::Message(m) => check_request(&m, false).unwrap(),
            Framed::Bad(f, _) => panic!("{f:?}"),
        }
    }

    /// The protocol ids of a message whose sender asked `disposition` (IMDN id
    /// `34jk324j`).
    fn imdn_ids(disposition: &str) -> Vec<ProtocolId> {
        vec![
            ProtocolId {
                kind: IMDN_MESSAGE_ID.into(),
                value: "34jk324j".into(),
            },
            ProtocolId {
                kind: IMDN_DISPOSITION.into(),
                value: disposition.into(),
            },
        ]
    }

    /// An envelope from an XMPP user (`sip:juliet@gw.test`) to SIP user romeo.
    pub(crate) fn envelope(event: Event) -> Envelope {
        Envelope {
            id: MessageId(0xab),
            event,
            from: Address::parse("sip:juliet@gw.test").unwrap(),
            to: Address::parse("sip:romeo@sip.test").unwrap(),
            sender: Identity::new("juliet", "xmpp.test"),
            recipient: Identity::new("romeo", "sip.test"),
            origin: "xmpp".into(),
            destination: "sip".into(),
            origin_from: Address::parse("juliet@xmpp.test").unwrap(),
            origin_to: Address::parse("romeo@gw.test").unwrap(),
            protocol_ids: Vec::new(),
            hops: 69,
            received_at_ms: 0,
        }
    }

    #[test]
    fn rfc7572_5_text_message_maps_body_subject_thread_lang() {
        let v = view(
            "text/plain; charset=UTF-8",
            "Art thou not Romeo, and a Montague?",
            "Subject: Hi\r\nContent-Language: en\r\n",
        );
        let i = message_inbound(&v, 7).unwrap();
        assert_eq!(i.from.to_string(), "sip:alice@sip.test");
        assert_eq!(i.to.to_string(), "sip:bob@sip.test");
        assert_eq!(i.hops, Some(70));
        assert_eq!(i.received_at_ms, 7);
        assert_eq!(
            i.dedup_key.as_deref(),
            Some("D9AA95FD-2BD5-46E2-AF0F-6CFAA96BDDFA/1")
        );
        let Event::Message(m) = i.event else { panic!() };
        assert_eq!(m.body, b"Art thou not Romeo, and a Montague?");
        assert_eq!(m.subjects[0].text, "Hi");
        assert_eq!(m.lang.as_deref(), Some("en"));
        assert_eq!(
            m.thread.as_deref(),
            Some("D9AA95FD-2BD5-46E2-AF0F-6CFAA96BDDFA")
        );
    }

    #[test]
    fn rfc3862_cpim_body_is_carried_unaltered_with_imdn_request() {
        let cpim = "From: <sip:alice@sip.test>\r\nTo: <sip:bob@sip.test>\r\n\
                    DateTime: 2026-11-25T10:00:00Z\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
                    imdn.Message-ID: 34jk324j\r\n\
                    imdn.Disposition-Notification: positive-delivery, negative-delivery\r\n\
                    \r\nContent-Type: text/plain\r\n\r\nhello";
        let i = message_inbound(&view("message/cpim", cpim, ""), 0).unwrap();
        let Event::Message(m) = &i.event else {
            panic!()
        };
        assert_eq!(m.cpim.as_deref(), Some(cpim.as_bytes()));
        assert_eq!(m.body, b"hello");
        assert!(m.receipts.delivered && m.receipts.failed && !m.receipts.displayed);
        assert!(i
            .protocol_ids
            .iter()
            .any(|p| p.kind == IMDN_MESSAGE_ID && p.value == "34jk324j"));
        // Out again unaltered, to a destination that takes CPIM.
        let takes_cpim = OutboundOptions {
            cpim: true,
            now_unix_secs: 0,
        };
        let out = message_out(&envelope(i.event.clone()), &takes_cpim)
            .unwrap()
            .unwrap();
        assert_eq!(out.content_type, "message/cpim");
        assert_eq!(out.body, cpim.as_bytes());
    }

    #[test]
    fn rfc3994_iscomposing_and_rfc5438_imdn_in() {
        let xml = "<?xml version=\"1.0\"?><isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\"><state>active</state><refresh>90</refresh></isComposing>";
        let i = message_inbound(&view("application/im-iscomposing+xml", xml, ""), 0).unwrap();
        assert_eq!(
            i.event,
            Event::Composing(Composing {
                state: ComposingState::Active,
                refresh_secs: Some(90)
            })
        );
        let imdn = "<?xml version=\"1.0\"?><imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>gw-00000000000000ab</message-id><datetime>2026-11-25T10:00:00Z</datetime><delivery-notification><status><failed/></status></delivery-notification></imdn>";
        let i = message_inbound(&view("message/imdn+xml", imdn, ""), 0).unwrap();
        let Event::Notification(n) = i.event else {
            panic!()
        };
        assert_eq!(n.message_id, "gw-00000000000000ab");
        assert!(matches!(n.status, NotificationStatus::Failed { .. }));
    }

    #[test]
    fn unknown_content_type_is_415_with_accept() {
        let f = message_inbound(&view("application/octet-stream", "x", ""), 0).unwrap_err();
        assert_eq!(f.status, 415);
        assert_eq!(f.headers[0].0, "Accept");
        let f = message_inbound(&view("message/cpim", "garbage", ""), 0).unwrap_err();
        assert_eq!(f.status, 400);
    }

    /// RFC 3428 §7 (RFC 3261 §20.19): a MESSAGE's `Expires` is its lifetime; the broker
    /// fails it back instead of delivering it after that.
    #[test]
    fn rfc3428_expires_sets_the_message_lifetime() {
        let i = message_inbound(&view("text/plain", "x", "Expires: 30\r\n"), 0).unwrap();
        assert_eq!(i.expires, Some(Duration::from_secs(30)));
        let i = message_inbound(&view("text/plain", "x", ""), 0).unwrap();
        assert_eq!(i.expires, None);
        let f = message_inbound(&view("text/plain", "x", "Expires: soon\r\n"), 0).unwrap_err();
        assert_eq!(f.status, 400);
    }

    #[test]
    fn max_forwards_zero_is_483() {
        let mut v = view("text/plain", "x", "");
        v.max_forwards = Some(0);
        assert_eq!(message_inbound(&v, 0).unwrap_err().status, 483);
    }

    #[test]
    fn rfc3261_19_1_4_aor_keeps_the_user_case_and_drops_parameters() {
        let a = Address::parse("sip:Alice@SIP.Test:5070;transport=tcp").unwrap();
        assert_eq!(aor_key(&a), "sip:Alice@sip.test:5070");
    }

    #[test]
    fn rfc7247_table_3_outcomes() {
        assert_eq!(outcome_for(200, None, "OK"), DeliveryOutcome::Delivered);
        assert_eq!(
            outcome_for(202, None, "Accepted"),
            DeliveryOutcome::Accepted
        );
        assert_eq!(
            outcome_for(503, Some(2), "Busy"),
            DeliveryOutcome::RetryLater {
                after: Duration::from_secs(2)
            }
        );
        // A peer that timed out or is unavailable without a hint: the message waits in
        // the spool (the broker backs off; it fails with remote-server-timeout when it
        // expires).
        for code in [408, 503] {
            assert_eq!(
                outcome_for(code, None, ""),
                DeliveryOutcome::Waiting {
                    after: Duration::from_secs(1)
                },
                "{code}"
            );
        }
        for (code, condition) in [
            (404, Condition::ItemNotFound),
            (480, Condition::RecipientUnavailable),
            (504, Condition::RemoteServerTimeout),
            (403, Condition::Forbidden),
        ] {
            let DeliveryOutcome::Failed { condition: c, .. } = outcome_for(code, None, "") else {
                panic!("{code}")
            };
            assert_eq!(c, condition, "{code}");
        }
        let DeliveryOutcome::Failed { condition, .. } =
            presence_outcome_for(408, "Request Timeout")
        else {
            panic!("a presence request is not spooled")
        };
        assert_eq!(condition, Condition::RemoteServerTimeout);
    }

    #[test]
    fn rfc7247_table_2_faults_for_refusals() {
        let f = fault_for(&Rejected::new(Condition::ItemNotFound, "no route"));
        assert_eq!((f.status, f.reason.as_str()), (404, "Not Found"));
        let f = fault_for(&Rejected {
            condition: Condition::ResourceConstraint,
            text: "busy".into(),
            retry_after: Some(Duration::from_secs(3)),
        });
        assert_eq!(f.status, 503);
        assert_eq!(f.headers, vec![("Retry-After".to_owned(), "3".to_owned())]);
        let f = fault_for(&Rejected::new(
            Condition::NotAcceptable,
            "too many hops: the message is looping",
        ));
        assert_eq!(f.status, 483);
        let f = fault_for(&Rejected::new(
            Condition::PolicyViolation,
            "a message of 5000 bytes is larger than `xmpp` can carry (4096 bytes)",
        ));
        assert_eq!(
            (f.status, f.reason.as_str()),
            (413, "Request Entity Too Large")
        );
    }

    #[test]
    fn plain_message_out_and_cpim_only_where_the_destination_takes_it() {
        let mut m = Message::text("hi ☃");
        m.subjects.push(LangText {
            lang: None,
            text: "sub".into(),
        });
        m.thread = Some("thread-1".into());
        let out = message_out(
            &envelope(Event::Message(m.clone())),
            &OutboundOptions::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(out.to, "sip:romeo@sip.test");
        assert_eq!(out.from, "sip:juliet@gw.test");
        assert_eq!(out.call_id.as_deref(), Some("thread-1"));
        assert_eq!(out.body, "hi ☃".as_bytes());
        assert!(out
            .headers
            .contains(&("Subject".to_owned(), "sub".to_owned())));
        m.receipts.delivered = true;
        // Receipts asked, but the destination has not shown it takes CPIM (issue 13: a
        // text-only phone answered 415 and the text never arrived): plain text.
        let plain = message_out(
            &envelope(Event::Message(m.clone())),
            &OutboundOptions {
                cpim: false,
                now_unix_secs: 1_764_000_000,
            },
        )
        .unwrap()
        .unwrap();
        assert!(plain.content_type.starts_with("text/plain"), "{plain:?}");
        assert_eq!(plain.body, "hi ☃".as_bytes());
        // The CPIM a SIP sender wrote is not passed on to such a destination either.
        let mut relayed = m.clone();
        relayed.cpim = Some(b"From: <sip:a@b>\r\n\r\nContent-Type: text/plain\r\n\r\nhi".to_vec());
        let out = message_out(
            &envelope(Event::Message(relayed)),
            &OutboundOptions::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(out.body, "hi ☃".as_bytes());
        let out = message_out(
            &envelope(Event::Message(m)),
            &OutboundOptions {
                cpim: true,
                now_unix_secs: 1_764_000_000,
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(out.content_type, "message/cpim");
        let parsed = CpimMessage::parse(&out.body).unwrap();
        assert_eq!(parsed.content().body(), "hi ☃".as_bytes());
        let text = String::from_utf8(out.body).unwrap();
        assert!(
            text.contains("imdn.Message-ID: gw-00000000000000ab"),
            "{text}"
        );
        assert!(
            text.contains("imdn.Disposition-Notification: positive-delivery"),
            "{text}"
        );
    }

    #[test]
    fn rfc5438_5_3_a_display_error_is_no_failure_of_the_message() {
        // In: display `error`/`forbidden` say no display notification will come; the
        // message was delivered (before, it reached the sender as a failure).
        for status in ["error", "forbidden"] {
            let imdn = format!(
                "<?xml version=\"1.0\"?><imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>gw-1</message-id><datetime>2026-11-25T10:00:00Z</datetime><display-notification><status><{status}/></status></display-notification></imdn>"
            );
            let i = message_inbound(&view("message/imdn+xml", &imdn, ""), 0).unwrap();
            let Event::Notification(n) = i.event else {
                panic!()
            };
            assert_eq!(n.status, NotificationStatus::DisplayUnknown, "{status}");
        }
        // Out: a display `error`, only to a sender that asked for display notifications.
        let mut env = envelope(Event::Notification(Notification {
            message_id: "gw-1".into(),
            status: NotificationStatus::DisplayUnknown,
        }));
        env.protocol_ids = imdn_ids("positive-delivery");
        assert_eq!(
            message_out(&env, &OutboundOptions::default()).unwrap(),
            None
        );
        env.protocol_ids[1].value = "positive-delivery, display".into();
        let out = message_out(&env, &OutboundOptions::default())
            .unwrap()
            .unwrap();
        let cpim = CpimMessage::parse(&out.body).unwrap();
        let imdn = Imdn::parse(cpim.content().body()).unwrap();
        assert_eq!(
            imdn.notification,
            cpim::imdn::Notification::Display(DisplayStatus::Error)
        );
    }

    #[test]
    fn negative_delivery_imdn_only_when_asked() {
        let failed = Event::Notification(Notification {
            message_id: "gw-1".into(),
            status: NotificationStatus::Failed {
                condition: Condition::ItemNotFound,
                text: None,
            },
        });
        let mut env = envelope(failed);
        assert_eq!(
            message_out(&env, &OutboundOptions::default()).unwrap(),
            None
        );
        env.protocol_ids = imdn_ids("positive-delivery");
        assert_eq!(
            message_out(&env, &OutboundOptions::default()).unwrap(),
            None
        );
        env.protocol_ids[1].value = "negative-delivery".into();
        let out = message_out(&env, &OutboundOptions::default())
            .unwrap()
            .unwrap();
        let cpim = CpimMessage::parse(&out.body).unwrap();
        let imdn = Imdn::parse(cpim.content().body()).unwrap();
        assert_eq!(imdn.message_id, "34jk324j");
        assert_eq!(
            imdn.notification,
            cpim::imdn::Notification::Delivery(DeliveryStatus::Failed)
        );
    }

    #[test]
    fn rfc4480_xmpp_show_becomes_an_rpid_activity_phones_display() {
        let doc = |tuples: &str| {
            cpim::presence::Presence::parse(
                format!(
                    "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:bob@xmpp.test'>{tuples}</presence>"
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let tuple = |id: &str, basic: &str, show: Option<&str>, priority: &str| {
            let show = show
                .map(|s| format!("<show xmlns='jabber:client'>{s}</show>"))
                .unwrap_or_default();
            format!(
                "<tuple id='{id}'><status><basic>{basic}</basic>{show}</status>\
                 <contact priority='{priority}'>xmpp:bob@xmpp.test/{id}</contact></tuple>"
            )
        };
        let activities = |xml: &[u8]| {
            let p = cpim::presence::Presence::parse(xml).unwrap();
            assert_eq!(p.entity, "sip:bob@xmpp.test");
            p.persons
                .iter()
                .flat_map(|p| p.activities.iter().flat_map(|a| a.values.clone()))
                .collect::<Vec<_>>()
        };
        use cpim::presence::Activity;
        for (tuples, expected) in [
            (
                tuple("a", "open", Some("away"), "0.5"),
                vec![Activity::Away],
            ),
            (tuple("a", "open", Some("xa"), "0.5"), vec![Activity::Away]),
            (tuple("a", "open", Some("dnd"), "0.5"), vec![Activity::Busy]),
            (tuple("a", "open", Some("chat"), "0.5"), vec![]),
            (tuple("a", "open", None, "0.5"), vec![]),
            (tuple("a", "closed", Some("dnd"), "0.5"), vec![]),
            // Two devices: the one with the highest priority speaks.
            (
                tuple("a", "open", Some("dnd"), "0.1") + &tuple("b", "open", None, "0.9"),
                vec![],
            ),
            (
                tuple("a", "open", Some("dnd"), "0.9") + &tuple("b", "open", None, "0.1"),
                vec![Activity::Busy],
            ),
            (
                tuple("a", "closed", None, "1") + &tuple("b", "open", Some("away"), "0.1"),
                vec![Activity::Away],
            ),
        ] {
            let xml = pidf_for_watcher(&doc(&tuples), "sip:bob@xmpp.test".into());
            assert_eq!(activities(&xml), expected, "{tuples}");
            let text = String::from_utf8(xml).unwrap();
            if !expected.is_empty() {
                assert!(text.contains("urn:ietf:params:xml:ns:pidf:rpid"), "{text}");
            }
        }
        // A person the presentity's side wrote is kept as it is.
        let own = cpim::presence::Presence::parse(
            b"<presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model' \
              xmlns:rpid='urn:ietf:params:xml:ns:pidf:rpid' entity='sip:carol@sip.test'>\
              <tuple id='t'><status><basic>open</basic><show xmlns='jabber:client'>dnd</show></status></tuple>\
              <dm:person id='p'><rpid:activities><rpid:meeting/></rpid:activities></dm:person></presence>",
        )
        .unwrap();
        let xml = pidf_for_watcher(&own, "sip:carol@sip.test".into());
        let back = cpim::presence::Presence::parse(&xml).unwrap();
        assert_eq!(back.persons, own.persons);
    }
}
