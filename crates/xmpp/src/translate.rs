//! Stanzas ⇄ broker events: the pure half of the XMPP adapter.
//!
//! Size: both directions of one mapping; they share the element vocabulary and errors.
//!
//! No I/O, no runtime, no clock: [`inbound`] turns one received stanza into broker
//! submissions ([`Inbound`]), [`outbound`] turns an [`Envelope`] into the stanzas to write,
//! [`error_reply`] builds the stanza error answering a stanza the gateway refuses, and
//! [`classify`] tells the driver which `<iq/>` requests it has to answer itself.
//!
//! # Messages (RFC 7572)
//!
//! | XMPP | event | notes |
//! |---|---|---|
//! | `<body/>` | [`Message::body`], `text/plain; charset=utf-8` | one body: the one in the stanza's `xml:lang` (or without a language), else the first; other languages are dropped |
//! | `<subject xml:lang/>` | [`Message::subjects`] | a subject in the message's own language has `lang: None` |
//! | `<thread/>` | [`Message::thread`] | the `parent` attribute is dropped |
//! | `xml:lang` | [`Message::lang`] | the language of the chosen body (inherited from the stanza) |
//! | `from`, `to` | [`Inbound::from`], [`Inbound::to`] | as [`Address::Xmpp`] |
//! | `id` | protocol id `xmpp.id` | and the dedup key, together with the sender (ids are only unique per sender) |
//! | `type` | — | `chat`/`normal`/unknown: a message; `headline`: a message without receipts; `groupchat`: refused with `feature-not-implemented` (MUC is out of RFC 7572's scope); `error`: see below |
//!
//! Outbound messages are `normal` (no `type`, RFC 7572 §5) unless [`OutboundOptions`] says
//! `chat`; the stanza `id` is the gateway id (`gw-…`) so that receipts, markers and errors
//! come back correlated; `xml:lang` is set on the stanza (RFC 7572 §8, example 7), and the
//! typed stanza that tokio-xmpp writes carries it on `<body/>` and `<subject/>` (RFC 6120
//! §8.1.5 allows either; the server then stamps its stream default on the stanza); an
//! `<origin-id/>` (XEP-0359) repeats the id for archives and carbons.
//!
//! Bodies: any `text/*` body with no charset, `utf-8` or `us-ascii` is sent as the `<body/>`
//! text (`text/html` markup included, as text: no XHTML-IM); anything else is
//! [`TranslateError::NotText`]. A `message/cpim` body (RFC 3862) is unwrapped: the inner
//! `text/*` entity becomes the body and its `Subject` headers are used when the event has
//! none; every other CPIM header (`From`, `To`, `DateTime`, `NS` extensions, IMDN headers)
//! is lost. Text that XML 1.0 cannot carry (control characters other than tab, LF, CR;
//! U+FFFE, U+FFFF) is refused rather than altered ([`TranslateError::NotXmlText`]); a
//! language tag that is not `ALPHA/DIGIT/-` is dropped.
//!
//! # Receipts, markers, chat states (XEP-0184, XEP-0333, XEP-0085)
//!
//! - `<request xmlns='urn:xmpp:receipts'/>` → [`Receipts::delivered`];
//!   `<markable xmlns='urn:xmpp:chat-markers:0'/>` → [`Receipts::displayed`] — only when the
//!   stanza has an `id`, since the answer must name it. Outbound, `<request/>` is added
//!   only when the sender asked for a delivery notification and `<markable/>` only when it
//!   asked for a display notification; the gateway claims delivery only on a real
//!   `<received/>`.
//! - `<received id/>` → [`NotificationStatus::Delivered`], `<displayed id/>` →
//!   [`NotificationStatus::Displayed`], about the gateway message whose id is `id` (ids that
//!   are not a gateway id cannot be correlated and are ignored). Outbound, the
//!   notifications name the original stanza's id, kept in the envelope's protocol id
//!   `xmpp.id`; without it nothing is sent. `Stored` has no XMPP form.
//! - Chat states without a body: `<composing/>` → [`ComposingState::Active`];
//!   `<paused/>`, `<inactive/>`, `<gone/>`, `<active/>` → [`ComposingState::Idle`], with no
//!   `refresh_secs`: XEP-0085 senders send `<paused/>` after about 30 s themselves, so the
//!   receiver's RFC 3994 default (120 s) is only a fallback. A chat state *with* a body
//!   gives the message only: the message itself ends the composing state (RFC 3994 §3.2).
//!   Outbound: Active → `<composing/>`, Idle → `<paused/>`, with
//!   `<no-store xmlns='urn:xmpp:hints'/>` and no body.
//!
//! # Errors (RFC 6120 §8.3, RFC 7247 §7)
//!
//! A `<message type='error'/>` or `<presence type='error'/>` whose `id` is a gateway id is a
//! failure report on something the gateway sent: [`NotificationStatus::Failed`] with the
//! condition of its `<error/>` ([`Condition::from_received`]: unknown conditions are
//! `undefined-condition`) and its `<text/>`. Error stanzas that cannot be correlated give
//! nothing, and are never answered. Outbound, a `Failed` notification becomes an error
//! stanza to the original sender with the original `id` — `<message/>` when the original
//! was a message (protocol id `xmpp.id`), `<presence/>` when it was a presence
//! (`xmpp.presence-id`) — and the condition's default error type.
//!
//! What the gateway refuses becomes a [`StanzaFault`], which the driver answers with
//! [`error_reply`]: no `from`/`to` is `bad-request`, an address that is not a JID is
//! `jid-malformed`, a stanza xmpp-parsers rejects is `bad-request`.
//!
//! # Presence (RFC 7248)
//!
//! - Available / `unavailable` → [`Event::Presence`]: a PIDF document whose `entity` is the
//!   `pres:` form of the sender's bare JID (`xmpp:` for a domain JID) with one tuple: id
//!   `ID-` + the resourcepart (RFC 7248 §5.2 note 2; characters other than ASCII letters,
//!   digits, `-` and `.` are written `_XX` per UTF-8 byte; a bare sender gives `ID`),
//!   `<basic>` open/closed (note 4), `<show/>` in the status (note 7), one note per
//!   `<status xml:lang/>`, and a contact: the full JID as `xmpp:` URI with the priority.
//! - Priority (note 6): negative priorities are not mapped; 0…127 map to
//!   `floor(p × 1000 / 127)` thousandths (0 → 0, 1 → 0.007, 2 → 0.015, 126 → 0.992,
//!   127 → 1), and back with `ceil(t × 127 / 1000)`, so every XMPP value survives a round
//!   trip. A presence without `<priority/>` gives a contact without priority.
//! - Outbound (Table 2): the tuple used is the open (or basic-less) tuple with the highest
//!   contact priority, else the first; closed or no tuple → `type='unavailable'`; its
//!   `<show/>` (or the first person's), its notes (or the document's, or the first
//!   person's) as `<status/>` — one per language, the first of each — and its priority.
//!   Everything else in the PIDF (RPID activities, devices, timestamps, other tuples) is
//!   lost.
//! - Subscriptions (RFC 7248 §4, §6): `subscribe` ⇄ Subscribe, `subscribed` ⇄ Approve,
//!   `unsubscribe` ⇄ Unsubscribe, `unsubscribed` ⇄ Deny, `probe` ⇄ Probe; a Deny with
//!   a reason other than `rejected` goes out as `unavailable` (the subscription ended
//!   without a refusal, RFC 7248 §4.3.2: the roster subscription stays), and so does
//!   the end of the gateway's aggregate subscription (RFC 7248 §4.3.3). XMPP
//!   subscriptions do not expire, so `expires_secs` and `reason` are dropped outbound; an
//!   aggregate subscription is the same presence type from the envelope's `from` (the
//!   broker writes the aggregate subscriber's address there).
//!
//! # Not done
//!
//! Multi-language bodies beyond the chosen one, XHTML-IM (XEP-0071), delayed delivery
//! (XEP-0203), message correction (XEP-0308), MUC, RFC 7572 §6 size limits (the SIP side's
//! job), `<iq/>` answers (the driver's; see [`classify`]).

use std::collections::BTreeMap;

use minidom::rxml::{Namespace, NcName};
use minidom::Element;
use xmpp_parsers::chatstates::ChatState;
use xmpp_parsers::disco::{DiscoInfoQuery, DiscoItemsQuery};
use xmpp_parsers::displayed_markers::{Displayed, Markable};
use xmpp_parsers::jid::Jid as WireJid;
use xmpp_parsers::message::{Id, Lang, Message as XmppMessage, MessageType, Thread};
use xmpp_parsers::ns;
use xmpp_parsers::ping::Ping;
use xmpp_parsers::presence::{
    Presence as XmppPresence, Priority as XmppPriority, Show as XmppShow, Type as PresenceType,
};
use xmpp_parsers::receipts::{Received, Request};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType as XmppErrorType, StanzaError};
use xmpp_parsers::stanza_id::{OriginId, StanzaId};
use xmpp_parsers::FromElementError;

use cpim::address::jid_to_im;
use cpim::event::{
    Composing, Event, LangText, Message, Notification, NotificationStatus, PresenceUpdate,
    Receipts, Subscription, SubscriptionOp,
};
use cpim::iscomposing::ComposingState;
use cpim::message::MediaType;
use cpim::presence::{Basic, Contact, Note, Presence, Priority, Show, Tuple};
use cpim::{Address, Condition, CpimMessage, ErrorType, ImScheme, Jid};
use cpim_broker::envelope::ProtocolId;
use cpim_broker::{Envelope, Inbound, MessageId};

/// Protocol id kind of a received `<message/>`'s `id` attribute.
pub const XMPP_ID: &str = "xmpp.id";
/// Protocol id kind of a received `<presence/>`'s `id` attribute.
pub const XMPP_PRESENCE_ID: &str = "xmpp.presence-id";
/// Protocol id kind of a received XEP-0359 `<origin-id/>`.
pub const XMPP_ORIGIN_ID: &str = "xmpp.origin-id";
/// Protocol id kind of a received XEP-0359 `<stanza-id/>` (its `by` is not kept).
pub const XMPP_STANZA_ID: &str = "xmpp.stanza-id";
/// The XEP-0334 message processing hints namespace.
pub const HINTS_NS: &str = "urn:xmpp:hints";

/// Why a received stanza is refused: the driver answers it with [`error_reply`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{condition}: {text}")]
pub struct StanzaFault {
    /// The stanza error condition (RFC 6120 §8.3.3).
    pub condition: Condition,
    /// Detail for the sender (English).
    pub text: String,
}

impl StanzaFault {
    /// A fault with `condition` and `text`.
    pub fn new(condition: Condition, text: impl Into<String>) -> Self {
        StanzaFault {
            condition,
            text: text.into(),
        }
    }
}

/// Why an envelope cannot be written as XMPP; the adapter reports the delivery as failed
/// with [`TranslateError::condition`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TranslateError {
    /// The envelope's `from` or `to` is not an XMPP address (a routing error).
    #[error("{which} address {address} is not an XMPP address")]
    NotXmppAddress {
        /// `from` or `to`.
        which: &'static str,
        /// The address as written.
        address: String,
    },
    /// The JID is valid for the gateway but not for XMPP's stricter stringprep rules.
    #[error("{which} address {address} is not a valid JID: {reason}")]
    InvalidJid {
        /// `from` or `to`.
        which: &'static str,
        /// The address as written.
        address: String,
        /// What the JID parser said.
        reason: String,
    },
    /// The body is not text an XMPP `<body/>` can carry.
    #[error("body of type {content_type} cannot be sent as an XMPP body")]
    NotText {
        /// The body's media type.
        content_type: String,
    },
    /// Text containing characters XML 1.0 cannot carry.
    #[error("{field} contains a character XML cannot carry (U+{code:04X})")]
    NotXmlText {
        /// Which field.
        field: &'static str,
        /// The first offending character.
        code: u32,
    },
    /// A `message/cpim` body that does not parse.
    #[error("invalid message/cpim body: {0}")]
    BadCpim(String),
}

impl TranslateError {
    /// The condition the adapter reports for this failure.
    pub fn condition(&self) -> Condition {
        match self {
            TranslateError::NotXmppAddress { .. } | TranslateError::InvalidJid { .. } => {
                Condition::JidMalformed
            }
            TranslateError::NotText { .. }
            | TranslateError::NotXmlText { .. }
            | TranslateError::BadCpim(_) => Condition::NotAcceptable,
        }
    }
}

/// How outbound stanzas are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundOptions {
    /// The `type` of outbound messages, chat states and notifications.
    pub message_type: OutboundMessageType,
    /// What the envelope's sender, a user of another network, can do: the capabilities
    /// its available presence announces (the driver sets it per sender).
    pub profile: crate::caps::Profile,
}

/// The `type` of outbound `<message/>` stanzas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutboundMessageType {
    /// `normal`, as RFC 7572 §5 requires for SIP pager-mode messages.
    #[default]
    Normal,
    /// `chat`, which some clients thread better.
    Chat,
}

/// What a received stanza is, for the driver's dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StanzaClass {
    /// A `<message/>`: give it to [`inbound`].
    Message,
    /// A `<presence/>`: give it to [`inbound`].
    Presence,
    /// An `<iq/>` get or set the driver answers.
    IqRequest(IqRequest),
    /// An `<iq/>` result or error (answers to the driver's own requests).
    IqResponse,
    /// Anything else (not a stanza of `jabber:component:accept`).
    Unknown,
}

/// An `<iq/>` request by payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IqRequest {
    /// XEP-0199 ping: answer with an empty result.
    Ping,
    /// XEP-0030 `disco#info` query.
    DiscoInfo {
        /// The queried node.
        node: Option<String>,
    },
    /// XEP-0030 `disco#items` query.
    DiscoItems {
        /// The queried node.
        node: Option<String>,
    },
    /// Anything else: answer `service-unavailable` (RFC 6120 §8.4).
    Other,
}

/// Classifies a received top-level element.
pub fn classify(stanza: &Element) -> StanzaClass {
    if stanza.ns() != ns::DEFAULT_NS {
        return StanzaClass::Unknown;
    }
    match stanza.name() {
        "message" => StanzaClass::Message,
        "presence" => StanzaClass::Presence,
        "iq" => match stanza.attr("type") {
            Some("get") | Some("set") => {
                let get = stanza.attr("type") == Some("get");
                let payload = stanza.children().next();
                let request = match payload {
                    Some(p) if get && parse::<Ping>(p).is_some() => IqRequest::Ping,
                    Some(p) if get => {
                        match (parse::<DiscoInfoQuery>(p), parse::<DiscoItemsQuery>(p)) {
                            (Some(q), _) => IqRequest::DiscoInfo { node: q.node },
                            (None, Some(q)) => IqRequest::DiscoItems { node: q.node },
                            (None, None) => IqRequest::Other,
                        }
                    }
                    _ => IqRequest::Other,
                };
                StanzaClass::IqRequest(request)
            }
            _ => StanzaClass::IqResponse,
        },
        _ => StanzaClass::Unknown,
    }
}

/// Translates one received `<message/>` or `<presence/>` into broker submissions (see the
/// [module documentation](self) for the mapping). `now_ms` becomes
/// [`Inbound::received_at_ms`].
///
/// `Ok(vec![])` means there is nothing to submit (an uncorrelated error stanza, a message
/// with only payloads the gateway does not map); `Err` means the stanza is refused and
/// the sender gets [`error_reply`].
pub fn inbound(stanza: &Element, now_ms: u64) -> Result<Vec<Inbound>, StanzaFault> {
    if stanza.ns() != ns::DEFAULT_NS {
        return Err(StanzaFault::new(
            Condition::BadRequest,
            format!("not a stanza of {}", ns::DEFAULT_NS),
        ));
    }
    match stanza.name() {
        "message" => message_inbound(stanza, now_ms),
        "presence" => presence_inbound(stanza, now_ms),
        "iq" => Err(StanzaFault::new(
            Condition::ServiceUnavailable,
            "iq requests are answered by the component itself",
        )),
        other => Err(StanzaFault::new(
            Condition::BadRequest,
            format!("<{other}/> is not a stanza"),
        )),
    }
}

/// Writes an envelope for XMPP: the stanzas to send, `from`/`to` as in the envelope and
/// `id` = the gateway id. `Ok(vec![])` when the event has no XMPP form (a `Stored`
/// notification, a notification without the original stanza id).
pub fn outbound(
    envelope: &Envelope,
    options: &OutboundOptions,
) -> Result<Vec<Element>, TranslateError> {
    let from = wire_jid(&envelope.from, "from")?;
    let to = wire_jid(&envelope.to, "to")?;
    let id = envelope.id.to_string();
    let message_type = match options.message_type {
        OutboundMessageType::Normal => MessageType::Normal,
        OutboundMessageType::Chat => MessageType::Chat,
    };
    let stanzas = match &envelope.event {
        Event::Message(m) => vec![message_out(m, message_type, from, to, id)?],
        Event::Composing(c) => {
            let state = match c.state {
                ComposingState::Active => ChatState::Composing,
                ComposingState::Idle => ChatState::Paused,
            };
            let mut msg = XmppMessage::new_with_type(message_type, Some(to));
            msg.from = Some(from);
            msg.id = Some(Id(id));
            msg.payloads = vec![state.into(), Element::bare("no-store", HINTS_NS)];
            vec![msg.into()]
        }
        Event::Notification(n) => {
            notification_out(n, &envelope.protocol_ids, message_type, from, to, id)
                .into_iter()
                .collect()
        }
        Event::Presence(p) => vec![presence_out(
            &p.presence,
            with_resource(from),
            to,
            id,
            options.profile,
        )?],
        Event::Subscription(s) => {
            let type_ = match s.op {
                SubscriptionOp::Subscribe => PresenceType::Subscribe,
                SubscriptionOp::Approve => PresenceType::Subscribed,
                // A subscription the presentity's network ended for a reason other than
                // a refusal (its phone unregistered: `noresource`; `timeout`, `giveup`,
                // `deactivated`, …) is no revocation: the watcher hears `unavailable`
                // and keeps its roster subscription (RFC 7248 §4.3.2, second option).
                SubscriptionOp::Deny
                    if s.reason
                        .as_deref()
                        .is_some_and(|r| !r.eq_ignore_ascii_case("rejected")) =>
                {
                    PresenceType::Unavailable
                }
                SubscriptionOp::Deny => PresenceType::Unsubscribed,
                // The gateway's own upstream subscription ends when the presentity's
                // last watcher on other networks goes (a SIP dialog's end, an app's
                // expiry): XMPP subscriptions are long-lived and per watcher, so the
                // watcher leaves with `unavailable` and keeps its roster item (RFC 7248
                // §4.3.3, second option), instead of revoking it at every phone restart.
                SubscriptionOp::Unsubscribe if s.aggregate => PresenceType::Unavailable,
                SubscriptionOp::Unsubscribe => PresenceType::Unsubscribe,
                SubscriptionOp::Probe => PresenceType::Probe,
            };
            // Availability comes from the user's full JID, as its available presence
            // did; subscription stanzas from the bare JID (RFC 6121 §3).
            let from = match type_ {
                PresenceType::Unavailable => with_resource(from),
                _ => from,
            };
            let presence = XmppPresence::new(type_)
                .with_from(from)
                .with_to(to)
                .with_id(id);
            vec![without_priority(presence.into())]
        }
    };
    Ok(stanzas)
}

/// The stanza error answering `stanza` (RFC 6120 §8.3.1): same kind and `id`, `from` and
/// `to` swapped, `type='error'`, an `<error/>` with the fault's condition, its default
/// type and the text. `None` when no answer may or can be sent: an error stanza, an
/// `<iq/>` result, a stanza without `from`, or not a stanza.
pub fn error_reply(stanza: &Element, fault: &StanzaFault) -> Option<Element> {
    let kind = stanza.name();
    if !matches!(kind, "message" | "presence" | "iq") {
        return None;
    }
    match stanza.attr("type") {
        Some("error") => return None,
        Some("result") if kind == "iq" => return None,
        _ => {}
    }
    let sender = stanza.attr("from")?;
    let mut reply = Element::bare(kind, stanza.ns());
    if let Some(to) = stanza.attr("to") {
        set_attr(&mut reply, "from", to);
    }
    set_attr(&mut reply, "to", sender);
    if let Some(id) = stanza.attr("id") {
        set_attr(&mut reply, "id", id);
    }
    set_attr(&mut reply, "type", "error");
    reply.append_child(stanza_error(fault.condition, Some(&fault.text), "en").into());
    Some(reply)
}

// ---------------------------------------------------------------------------------------
// inbound

/// The addressing of a received stanza.
struct Header {
    from: Jid,
    to: Jid,
    id: Option<String>,
}

impl Header {
    fn read(stanza: &Element) -> Result<Header, StanzaFault> {
        Ok(Header {
            from: address(stanza, "from")?,
            to: address(stanza, "to")?,
            id: stanza.attr("id").map(str::to_owned),
        })
    }

    fn submission(&self, event: Event, protocol_ids: &[ProtocolId], now_ms: u64) -> Inbound {
        let dedup_key = match (&event, &self.id) {
            // Presence is state: a repeat is harmless, and clients reuse ids.
            (Event::Presence(_), _) | (_, None) => None,
            // Ids are unique per sender only (RFC 6120 §8.1.3), and one stanza can
            // carry several events; a JID has no control characters, so `\n` is a safe
            // separator. Nor are ids unique across a client's sessions: a later stanza
            // reusing an id is a repeat only if it says the same thing to the same
            // recipient, so the key ends with the recipient and a fingerprint of the
            // event (a different message under a reused id is delivered, not dropped).
            (_, Some(id)) => Some(format!(
                "{}\n{id}\n{}\n{}\n{:016x}",
                self.from,
                event.kind(),
                self.to,
                fingerprint(&event)
            )),
        };
        Inbound {
            event,
            from: Address::Xmpp(self.from.clone()),
            to: Address::Xmpp(self.to.clone()),
            protocol_ids: protocol_ids.to_vec(),
            dedup_key,
            hops: None,
            expires: None,
            received_at_ms: now_ms,
        }
    }
}

/// A fingerprint of what an event says (FNV-1a, 64 bits: the same for the same content
/// within one build of the gateway). A message's bytes are hashed as they are, the rest
/// through its debug form as it is written, never held as a string.
fn fingerprint(event: &Event) -> u64 {
    struct Fnv(u64);
    impl Fnv {
        fn bytes(&mut self, bytes: &[u8]) {
            for byte in bytes {
                self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    impl std::fmt::Write for Fnv {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.bytes(s.as_bytes());
            Ok(())
        }
    }
    let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
    // Writing into a hasher cannot fail.
    let _ = match event {
        Event::Message(m) => {
            hash.bytes(&m.body);
            hash.bytes(&[0xff]);
            hash.bytes(m.cpim.as_deref().unwrap_or_default());
            std::fmt::Write::write_fmt(
                &mut hash,
                format_args!(
                    "{:?}{:?}{:?}{:?}{:?}{}",
                    m.subjects,
                    m.lang,
                    m.thread,
                    m.receipts,
                    m.cpim.is_some(),
                    m.content_type
                ),
            )
        }
        other => std::fmt::Write::write_fmt(&mut hash, format_args!("{other:?}")),
    };
    hash.0
}

/// The gateway's form of a JID the stream's parser read already (`from`/`to`).
fn parsed_address(jid: Option<&WireJid>, name: &'static str) -> Result<Jid, StanzaFault> {
    let jid =
        jid.ok_or_else(|| StanzaFault::new(Condition::BadRequest, format!("missing '{name}'")))?;
    Jid::parse(jid.as_str()).map_err(|e| {
        StanzaFault::new(
            Condition::JidMalformed,
            format!("'{name}' is not a JID: {e}"),
        )
    })
}

fn address(stanza: &Element, name: &'static str) -> Result<Jid, StanzaFault> {
    let text = stanza
        .attr(name)
        .ok_or_else(|| StanzaFault::new(Condition::BadRequest, format!("missing '{name}'")))?;
    let malformed = |reason: String| {
        StanzaFault::new(
            Condition::JidMalformed,
            format!("'{name}' is not a JID: {reason}"),
        )
    };
    let jid = Jid::parse(text).map_err(|e| malformed(e.to_string()))?;
    // The gateway's parser also accepts `xmpp:` URIs; a stanza attribute must be a plain
    // JID that XMPP's own (stricter, stringprep) rules accept.
    WireJid::new(text).map_err(|e| malformed(e.to_string()))?;
    Ok(jid)
}

/// A copy of `stanza` without the attributes this module reads itself, so that
/// xmpp-parsers checks only the rest.
fn stripped(stanza: &Element, drop_type: bool) -> Element {
    let mut copy = stanza.clone();
    let attrs = copy.attrs_mut();
    attrs.remove(&Namespace::NONE, "from");
    attrs.remove(&Namespace::NONE, "to");
    if drop_type {
        attrs.remove(&Namespace::NONE, "type");
    }
    copy
}

fn parse<T: TryFrom<Element, Error = FromElementError>>(element: &Element) -> Option<T> {
    T::try_from(element.clone()).ok()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn stanza_lang(stanza: &Element) -> Option<String> {
    stanza.attr_ns(&Namespace::XML, "lang").and_then(non_empty)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    Headline,
}

fn message_inbound(stanza: &Element, now_ms: u64) -> Result<Vec<Inbound>, StanzaFault> {
    let kind = match stanza.attr("type") {
        Some("error") => return Ok(error_inbound(stanza, now_ms).into_iter().collect()),
        Some("groupchat") => return Err(groupchat_refused()),
        Some("headline") => Kind::Headline,
        // chat, normal, absent, and any unknown type, which RFC 6121 §5.2.2 says to
        // treat as normal.
        _ => Kind::Normal,
    };
    let header = Header::read(stanza)?;
    let msg = XmppMessage::try_from(stripped(stanza, true))
        .map_err(|e| StanzaFault::new(Condition::BadRequest, format!("invalid message: {e}")))?;
    message_events(header, kind, stanza_lang(stanza), msg, now_ms)
}

/// [`inbound`] for a `<message/>` the stream has parsed already (the form tokio-xmpp
/// reads): the same events, without writing it back to XML and parsing it again.
pub fn parsed_message_inbound(msg: XmppMessage, now_ms: u64) -> Result<Vec<Inbound>, StanzaFault> {
    let kind = match msg.type_ {
        MessageType::Error => {
            let stanza = Element::from(msg);
            return Ok(error_inbound(&stanza, now_ms).into_iter().collect());
        }
        MessageType::Groupchat => return Err(groupchat_refused()),
        MessageType::Headline => Kind::Headline,
        MessageType::Chat | MessageType::Normal => Kind::Normal,
    };
    let header = Header {
        from: parsed_address(msg.from.as_ref(), "from")?,
        to: parsed_address(msg.to.as_ref(), "to")?,
        id: msg.id.as_ref().map(|id| id.0.clone()),
    };
    message_events(header, kind, None, msg, now_ms)
}

/// What [`error_reply`] reads of a parsed message: its kind, type and addressing.
pub fn message_skeleton(msg: &XmppMessage) -> Element {
    let mut skeleton = Element::bare("message", ns::DEFAULT_NS);
    if let Some(from) = &msg.from {
        set_attr(&mut skeleton, "from", from.as_str());
    }
    if let Some(to) = &msg.to {
        set_attr(&mut skeleton, "to", to.as_str());
    }
    if let Some(id) = &msg.id {
        set_attr(&mut skeleton, "id", &id.0);
    }
    if msg.type_ == MessageType::Error {
        set_attr(&mut skeleton, "type", "error");
    }
    skeleton
}

fn groupchat_refused() -> StanzaFault {
    StanzaFault::new(
        Condition::FeatureNotImplemented,
        "groupchat messages are not supported by this gateway",
    )
}

/// The events of a message stanza from `header.from`.
fn message_events(
    header: Header,
    kind: Kind,
    lang: Option<String>,
    msg: XmppMessage,
    now_ms: u64,
) -> Result<Vec<Inbound>, StanzaFault> {
    let mut protocol_ids = Vec::new();
    if let Some(id) = &header.id {
        protocol_ids.push(protocol_id(XMPP_ID, id));
    }
    let mut notifications = Vec::new();
    let (mut request, mut markable, mut chat_state) = (false, false, None);
    // Each payload is parsed only as what its namespace can be (a parse copies it).
    for payload in &msg.payloads {
        if payload.has_ns(ns::RECEIPTS) {
            if let Some(r) = parse::<Received>(payload) {
                notifications.push((r.id, NotificationStatus::Delivered));
            } else if parse::<Request>(payload).is_some() {
                request = true;
            }
        } else if payload.has_ns(ns::DISPLAYED_MARKERS) {
            if let Some(d) = parse::<Displayed>(payload) {
                notifications.push((d.id.0, NotificationStatus::Displayed));
            } else if parse::<Markable>(payload).is_some() {
                markable = true;
            }
        } else if payload.has_ns(ns::CHATSTATES) {
            chat_state = parse::<ChatState>(payload).or(chat_state);
        } else if payload.has_ns(ns::SID) {
            if let Some(o) = parse::<OriginId>(payload) {
                protocol_ids.push(protocol_id(XMPP_ORIGIN_ID, &o.id));
            } else if let Some(s) = parse::<StanzaId>(payload) {
                protocol_ids.push(protocol_id(XMPP_STANZA_ID, &s.id));
            }
        }
    }

    let mut out = Vec::new();
    for (message_id, status) in notifications {
        // Only ids the gateway wrote can be correlated.
        if MessageId::parse(&message_id).is_some() {
            let event = Event::Notification(Notification { message_id, status });
            out.push(header.submission(event, &protocol_ids, now_ms));
        }
    }

    let body = msg
        .bodies
        .get(lang.as_deref().unwrap_or(""))
        .map(|text| (lang.clone(), text))
        .or_else(|| {
            msg.bodies
                .iter()
                .next()
                .map(|(l, text)| (non_empty(l), text))
        });
    if body.is_some() || !msg.subjects.is_empty() {
        let (lang, text) = body.map_or((lang, ""), |(l, t)| (l, t.as_str()));
        let subjects = msg
            .subjects
            .iter()
            .map(|(l, text)| LangText {
                lang: non_empty(l).filter(|l| Some(l) != lang.as_ref()),
                text: text.clone(),
            })
            .collect();
        let answerable = header.id.is_some() && kind != Kind::Headline;
        let message = Message {
            subjects,
            lang,
            thread: msg.thread.map(|t| t.id).and_then(|t| non_empty(&t)),
            receipts: Receipts {
                delivered: request && answerable,
                failed: false,
                displayed: markable && answerable,
            },
            ..Message::text(text)
        };
        out.push(header.submission(Event::Message(message), &protocol_ids, now_ms));
    } else if let Some(state) = chat_state {
        let state = match state {
            ChatState::Composing => ComposingState::Active,
            ChatState::Active | ChatState::Paused | ChatState::Inactive | ChatState::Gone => {
                ComposingState::Idle
            }
        };
        let event = Event::Composing(Composing {
            state,
            refresh_secs: None,
        });
        out.push(header.submission(event, &protocol_ids, now_ms));
    }
    Ok(out)
}

/// A received error stanza about a stanza the gateway sent; `None` when it cannot be
/// correlated (no gateway id, unusable addresses). Never a fault: errors are not answered.
fn error_inbound(stanza: &Element, now_ms: u64) -> Option<Inbound> {
    let header = Header::read(stanza).ok()?;
    let message_id = header.id.clone()?;
    MessageId::parse(&message_id)?;
    let (condition, text) = match stanza.get_child("error", ns::DEFAULT_NS) {
        Some(error) => read_error(error),
        None => (Condition::UndefinedCondition, None),
    };
    let event = Event::Notification(Notification {
        message_id,
        status: NotificationStatus::Failed { condition, text },
    });
    Some(header.submission(event, &[], now_ms))
}

/// The condition and text of an `<error/>` (RFC 6120 §8.3.2): the first child in the
/// stanzas namespace other than `<text/>`.
fn read_error(error: &Element) -> (Condition, Option<String>) {
    let condition = error
        .children()
        .find(|c| c.ns() == ns::XMPP_STANZAS && c.name() != "text")
        .map_or(Condition::UndefinedCondition, |c| {
            Condition::from_received(c.name())
        });
    let text = error
        .get_child("text", ns::XMPP_STANZAS)
        .and_then(|t| non_empty(&t.text()));
    (condition, text)
}

fn presence_inbound(stanza: &Element, now_ms: u64) -> Result<Vec<Inbound>, StanzaFault> {
    if stanza.attr("type") == Some("error") {
        return Ok(error_inbound(stanza, now_ms).into_iter().collect());
    }
    let header = Header::read(stanza)?;
    let presence = XmppPresence::try_from(stripped(stanza, false))
        .map_err(|e| StanzaFault::new(Condition::BadRequest, format!("invalid presence: {e}")))?;
    let protocol_ids: Vec<ProtocolId> = header
        .id
        .iter()
        .map(|id| protocol_id(XMPP_PRESENCE_ID, id))
        .collect();
    let op = |op| Event::Subscription(Subscription::new(op));
    let event = match presence.type_ {
        PresenceType::None => Event::Presence(PresenceUpdate {
            presence: pidf(&header.from, Basic::Open, stanza, &presence),
        }),
        PresenceType::Unavailable => Event::Presence(PresenceUpdate {
            presence: pidf(&header.from, Basic::Closed, stanza, &presence),
        }),
        PresenceType::Subscribe => op(SubscriptionOp::Subscribe),
        PresenceType::Subscribed => op(SubscriptionOp::Approve),
        PresenceType::Unsubscribe => op(SubscriptionOp::Unsubscribe),
        PresenceType::Unsubscribed => op(SubscriptionOp::Deny),
        PresenceType::Probe => op(SubscriptionOp::Probe),
        PresenceType::Error => return Ok(Vec::new()),
    };
    Ok(vec![header.submission(event, &protocol_ids, now_ms)])
}

/// The PIDF form of an available or unavailable presence (RFC 7248 §5.2 Table 1).
fn pidf(from: &Jid, basic: Basic, stanza: &Element, presence: &XmppPresence) -> Presence {
    let bare = from.to_bare();
    let entity = jid_to_im(&bare, ImScheme::Pres)
        .map(|uri| uri.to_string())
        .unwrap_or_else(|_| xmpp_uri(&bare));
    let show = match (basic, &presence.show) {
        (Basic::Open, Some(XmppShow::Away)) => Some(Show::Away),
        (Basic::Open, Some(XmppShow::Chat)) => Some(Show::Chat),
        (Basic::Open, Some(XmppShow::Dnd)) => Some(Show::Dnd),
        (Basic::Open, Some(XmppShow::Xa)) => Some(Show::Xa),
        _ => None,
    };
    // xmpp-parsers reads an absent <priority/> as 0; only a written one is mapped.
    let priority = stanza
        .get_child("priority", ns::DEFAULT_NS)
        .and_then(|_| priority_to_pidf(presence.priority.0));
    let notes = presence
        .statuses
        .iter()
        .map(|(lang, text)| Note {
            lang: non_empty(lang),
            text: text.clone(),
        })
        .collect();
    Presence::one_tuple(
        entity,
        Tuple {
            contact: Some(Contact {
                uri: xmpp_uri(from),
                priority,
            }),
            notes,
            ..Tuple::new(tuple_id(from.resource()), basic, show)
        },
    )
}

/// XMPP priority → PIDF priority (RFC 7248 §5.2 note 6): negatives are not mapped,
/// 0…127 → floor(p × 1000 / 127) thousandths.
fn priority_to_pidf(priority: i8) -> Option<Priority> {
    let p = u32::try_from(priority).ok()?;
    Priority::from_thousandths(u16::try_from(p * 1000 / 127).ok()?)
}

/// PIDF priority → XMPP priority: ceil(t × 127 / 1000), the inverse of
/// [`priority_to_pidf`] on its image.
fn priority_to_xmpp(priority: &Priority) -> i8 {
    let t = u32::from(priority.thousandths().min(1000));
    i8::try_from((t * 127).div_ceil(1000)).unwrap_or(i8::MAX)
}

/// `ID-` + the resourcepart, with every character outside `[A-Za-z0-9.-]` written as
/// `_XX` per UTF-8 byte, so the result is an `xs:ID` and distinct resources stay distinct.
fn tuple_id(resource: Option<&str>) -> String {
    let Some(resource) = resource else {
        return "ID".to_owned();
    };
    let mut id = String::from("ID-");
    for &b in resource.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' {
            id.push(char::from(b));
        } else {
            id.push_str(&format!("_{b:02X}"));
        }
    }
    id
}

/// A JID as an `xmpp:` URI (RFC 5122): characters a URI path cannot carry are
/// percent-encoded as UTF-8.
fn xmpp_uri(jid: &Jid) -> String {
    let mut uri = String::from("xmpp:");
    for &b in jid.to_string().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

fn protocol_id(kind: &str, value: &str) -> ProtocolId {
    ProtocolId {
        kind: kind.to_owned(),
        value: value.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// outbound

fn wire_jid(address: &Address, which: &'static str) -> Result<WireJid, TranslateError> {
    let Address::Xmpp(jid) = address else {
        return Err(TranslateError::NotXmppAddress {
            which,
            address: address.to_string(),
        });
    };
    let text = jid.to_string();
    WireJid::new(&text).map_err(|e| TranslateError::InvalidJid {
        which,
        address: text.clone(),
        reason: e.to_string(),
    })
}

fn message_out(
    m: &Message,
    message_type: MessageType,
    from: WireJid,
    to: WireJid,
    id: String,
) -> Result<Element, TranslateError> {
    let (text, subjects) = message_text(m)?;
    let lang = m.lang.as_deref().filter(|l| is_lang_tag(l));
    let mut msg = XmppMessage::new_with_type(message_type, Some(to));
    msg.from = Some(from);
    msg.id = Some(Id(id.clone()));
    msg.bodies.insert(Lang::new(), xml_text(text, "body")?);
    for subject in subjects {
        let key = match subject.lang.as_deref() {
            Some(l) if is_lang_tag(l) && Some(l) != lang => l,
            _ => "",
        };
        let text = xml_text(subject.text, "subject")?;
        msg.subjects.entry(Lang::from(key)).or_insert(text);
    }
    if let Some(thread) = m.thread.as_deref().filter(|t| !t.is_empty()) {
        msg.thread = Some(Thread {
            parent: None,
            id: xml_text(thread.to_owned(), "thread")?,
        });
    }
    // A receipt only where the sender asked for one (nobody would read it otherwise).
    if m.receipts.delivered {
        msg.payloads.push(Request.into());
    }
    if m.receipts.displayed {
        msg.payloads.push(Markable.into());
    }
    msg.payloads.push(OriginId { id }.into());
    let mut element: Element = msg.into();
    if let Some(lang) = lang {
        set_xml_lang(&mut element, lang);
    }
    Ok(element)
}

/// The body text and subjects of a message, unwrapping `message/cpim`.
fn message_text(m: &Message) -> Result<(String, Vec<LangText>), TranslateError> {
    let is_cpim = MediaType::parse(&m.content_type)
        .is_ok_and(|t| t.essence() == "message/cpim")
        .then_some(m.body.as_slice());
    let Some(cpim) = m.cpim.as_deref().or(is_cpim) else {
        let text = decode_text(&m.content_type, &m.body)?;
        return Ok((text, m.subjects.clone()));
    };
    let parsed = CpimMessage::parse(cpim).map_err(|e| TranslateError::BadCpim(e.to_string()))?;
    let content = parsed.content();
    let content_type = content
        .header("Content-Type")
        .unwrap_or_else(|| "text/plain".to_owned());
    let text = decode_text(&content_type, content.body())?;
    let subjects = if m.subjects.is_empty() {
        parsed
            .subjects()
            .into_iter()
            .map(|s| LangText {
                lang: s.lang,
                text: s.text,
            })
            .collect()
    } else {
        m.subjects.clone()
    };
    Ok((text, subjects))
}

/// A `text/*` body in UTF-8 (or US-ASCII); an empty content type is plain text.
fn decode_text(content_type: &str, body: &[u8]) -> Result<String, TranslateError> {
    let not_text = || TranslateError::NotText {
        content_type: content_type.to_owned(),
    };
    if !content_type.trim().is_empty() {
        let media = MediaType::parse(content_type).map_err(|_| not_text())?;
        let utf8 = media
            .param("charset")
            .is_none_or(|c| c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("us-ascii"));
        if !media.essence().starts_with("text/") || !utf8 {
            return Err(not_text());
        }
    }
    String::from_utf8(body.to_vec()).map_err(|_| not_text())
}

/// `text` when XML 1.0 can carry every character (§2.2 `Char`).
fn xml_text(text: String, field: &'static str) -> Result<String, TranslateError> {
    match text.chars().find(|&c| !is_xml_char(c)) {
        Some(c) => Err(TranslateError::NotXmlText {
            field,
            code: u32::from(c),
        }),
        None => Ok(text),
    }
}

/// XML 1.0 §2.2 `Char` (Rust strings hold no surrogates).
fn is_xml_char(c: char) -> bool {
    !matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

/// A plausible language tag (RFC 5646 characters only).
fn is_lang_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 64
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn notification_out(
    n: &Notification,
    protocol_ids: &[ProtocolId],
    message_type: MessageType,
    from: WireJid,
    to: WireJid,
    id: String,
) -> Option<Element> {
    let original = |kind: &str| {
        protocol_ids
            .iter()
            .find(|p| p.kind == kind)
            .map(|p| p.value.clone())
    };
    let payload: Element = match &n.status {
        NotificationStatus::Delivered => Received {
            id: original(XMPP_ID)?,
        }
        .into(),
        NotificationStatus::Displayed => Displayed {
            id: Id(original(XMPP_ID)?),
        }
        .into(),
        // No XMPP form: the driver notes a `DisplayUnknown` in the sender's capabilities.
        NotificationStatus::Stored | NotificationStatus::DisplayUnknown => return None,
        NotificationStatus::Failed { condition, text } => {
            let error = stanza_error(*condition, text.as_deref(), "");
            if let Some(original_id) = original(XMPP_ID) {
                let mut msg = XmppMessage::error(Some(to));
                msg.from = Some(from);
                msg.id = Some(Id(original_id));
                msg.payloads.push(error.into());
                return Some(msg.into());
            }
            let original_id = original(XMPP_PRESENCE_ID)?;
            let presence = XmppPresence::error()
                .with_from(from)
                .with_to(to)
                .with_id(original_id)
                .with_payload(error);
            return Some(without_priority(presence.into()));
        }
    };
    let mut msg = XmppMessage::new_with_type(message_type, Some(to));
    msg.from = Some(from);
    msg.id = Some(Id(id));
    msg.payloads.push(payload);
    Some(msg.into())
}

fn presence_out(
    pidf: &Presence,
    from: WireJid,
    to: WireJid,
    id: String,
    profile: crate::caps::Profile,
) -> Result<Element, TranslateError> {
    let tuple = pidf.preferred_tuple();
    let open = tuple.is_some_and(|t| t.status.basic != Some(Basic::Closed));
    let mut presence = XmppPresence::new(if open {
        PresenceType::None
    } else {
        PresenceType::Unavailable
    })
    .with_from(from)
    .with_to(to)
    .with_id(id);
    let person = pidf.persons.first();
    if open {
        let show = tuple
            .and_then(|t| t.status.show)
            .or_else(|| person.and_then(|p| p.show));
        presence.show = show.map(|s| match s {
            Show::Away => XmppShow::Away,
            Show::Chat => XmppShow::Chat,
            Show::Dnd => XmppShow::Dnd,
            Show::Xa => XmppShow::Xa,
        });
    }
    let notes = [
        tuple.map(|t| t.notes.as_slice()),
        Some(pidf.notes.as_slice()),
        person.map(|p| p.notes.as_slice()),
    ]
    .into_iter()
    .flatten()
    .find(|notes| !notes.is_empty())
    .unwrap_or_default();
    let mut statuses = BTreeMap::new();
    for note in notes {
        let lang = note
            .lang
            .as_deref()
            .filter(|l| is_lang_tag(l))
            .unwrap_or("");
        let text = xml_text(note.text.clone(), "status")?;
        statuses.entry(Lang::from(lang)).or_insert(text);
    }
    presence.statuses = statuses;
    let priority = tuple
        .filter(|_| open)
        .and_then(|t| t.contact.as_ref())
        .and_then(|c| c.priority.as_ref())
        .map(priority_to_xmpp);
    presence.priority = XmppPriority(priority.unwrap_or(0));
    if open {
        // XEP-0115: clients learn from it that the user takes receipts and markers.
        presence.payloads.push(crate::caps::user_caps(profile));
    }
    let element = presence.into();
    Ok(match priority {
        Some(_) => element,
        None => without_priority(element),
    })
}

/// A bridged user's JID as the full JID its presence comes from: its own resource if
/// the address has one, else [`crate::caps::RESOURCE`].
fn with_resource(jid: WireJid) -> WireJid {
    if jid.resource().is_some() {
        return jid;
    }
    match jid.to_bare().with_resource_str(crate::caps::RESOURCE) {
        Ok(full) => full.into(),
        Err(_) => jid,
    }
}

/// xmpp-parsers always writes `<priority/>`; drop it when there is none to say.
fn without_priority(mut element: Element) -> Element {
    element.remove_child("priority", ns::DEFAULT_NS);
    element
}

fn stanza_error(condition: Condition, text: Option<&str>, lang: &str) -> StanzaError {
    let type_ = match condition.default_error_type() {
        ErrorType::Auth => XmppErrorType::Auth,
        ErrorType::Cancel => XmppErrorType::Cancel,
        ErrorType::Continue => XmppErrorType::Continue,
        ErrorType::Modify => XmppErrorType::Modify,
        ErrorType::Wait => XmppErrorType::Wait,
    };
    let mut texts = BTreeMap::new();
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        // Drop characters XML cannot carry rather than lose the whole error.
        texts.insert(
            lang.to_owned(),
            text.chars().filter(|&c| is_xml_char(c)).collect(),
        );
    }
    StanzaError {
        type_,
        by: None,
        defined_condition: defined_condition(condition),
        texts,
        other: None,
    }
}

fn defined_condition(condition: Condition) -> DefinedCondition {
    use DefinedCondition as D;
    match condition {
        Condition::BadRequest => D::BadRequest,
        Condition::Conflict => D::Conflict,
        Condition::FeatureNotImplemented => D::FeatureNotImplemented,
        Condition::Forbidden => D::Forbidden,
        Condition::Gone => D::Gone { new_address: None },
        Condition::InternalServerError => D::InternalServerError,
        Condition::ItemNotFound => D::ItemNotFound,
        Condition::JidMalformed => D::JidMalformed,
        Condition::NotAcceptable => D::NotAcceptable,
        Condition::NotAllowed => D::NotAllowed,
        Condition::NotAuthorized => D::NotAuthorized,
        Condition::PolicyViolation => D::PolicyViolation,
        Condition::RecipientUnavailable => D::RecipientUnavailable,
        Condition::Redirect => D::Redirect { new_address: None },
        Condition::RegistrationRequired => D::RegistrationRequired,
        Condition::RemoteServerNotFound => D::RemoteServerNotFound,
        Condition::RemoteServerTimeout => D::RemoteServerTimeout,
        Condition::ResourceConstraint => D::ResourceConstraint,
        Condition::ServiceUnavailable => D::ServiceUnavailable,
        Condition::SubscriptionRequired => D::SubscriptionRequired,
        Condition::UndefinedCondition => D::UndefinedCondition,
        Condition::UnexpectedRequest => D::UnexpectedRequest,
    }
}

fn set_attr(element: &mut Element, name: &str, value: &str) {
    // The names passed here are constant NCNames, so the conversion cannot fail.
    if let Ok(name) = NcName::try_from(name) {
        element.set_attr(Namespace::NONE, name, value);
    }
}

fn set_xml_lang(element: &mut Element, lang: &str) {
    if let Ok(name) = NcName::try_from("lang") {
        element.set_attr(Namespace::XML, name, lang);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cpim_broker::Identity;
    use proptest::prelude::*;

    const NS: &str = "jabber:component:accept";
    const GW_ID: &str = "gw-00000000000000ab";

    fn element(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    fn message(attrs: &str, inner: &str) -> Element {
        element(&format!("<message xmlns='{NS}' {attrs}>{inner}</message>"))
    }

    fn presence(attrs: &str, inner: &str) -> Element {
        element(&format!(
            "<presence xmlns='{NS}' {attrs}>{inner}</presence>"
        ))
    }

    fn one(stanza: &Element) -> Inbound {
        let mut all = inbound(stanza, 7).unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        all.pop().unwrap()
    }

    fn im(stanza: &Element) -> Message {
        match one(stanza).event {
            Event::Message(m) => m,
            other => panic!("not a message: {other:?}"),
        }
    }

    fn pidf_of(stanza: &Element) -> Presence {
        match one(stanza).event {
            Event::Presence(p) => p.presence,
            other => panic!("not a presence: {other:?}"),
        }
    }

    fn fault(stanza: &Element) -> Condition {
        inbound(stanza, 7).unwrap_err().condition
    }

    fn xmpp(jid: &str) -> Address {
        Address::Xmpp(Jid::parse(jid).unwrap())
    }

    fn envelope(event: Event) -> Envelope {
        Envelope {
            id: MessageId(0xab),
            event,
            from: xmpp("romeo@example.net/dr4hcr0st3lup4c"),
            to: xmpp("juliet@example.com"),
            sender: Identity::new("romeo", "example.net"),
            recipient: Identity::new("juliet", "example.com"),
            origin: "sip".into(),
            destination: "xmpp".into(),
            origin_from: Address::parse("sip:romeo@example.net").unwrap(),
            origin_to: Address::parse("sip:juliet@example.com").unwrap(),
            protocol_ids: Vec::new(),
            hops: 69,
            received_at_ms: 0,
        }
    }

    fn out(event: Event) -> Vec<Element> {
        outbound(&envelope(event), &OutboundOptions::default()).unwrap()
    }

    fn out_one(event: Event) -> Element {
        let mut all = out(event);
        assert_eq!(all.len(), 1);
        all.pop().unwrap()
    }

    /// Writes and parses again, as the wire does.
    fn wire(e: &Element) -> Element {
        element(&String::from(e))
    }

    fn with_ids(event: Event, ids: &[(&str, &str)]) -> Envelope {
        let mut env = envelope(event);
        env.protocol_ids = ids.iter().map(|(k, v)| protocol_id(k, v)).collect();
        env
    }

    fn has(e: &Element, name: &str, ns: &str) -> bool {
        e.get_child(name, ns).is_some()
    }

    // --- RFC 7572 §4 Table 1: XMPP to SIP ------------------------------------------------

    #[test]
    fn rfc7572_4_example1_message() {
        let stanza = message(
            "from='juliet@example.com/yn0cl4bnw0yr3vym' to='romeo@example.net'",
            "<body>Art thou not Romeo, and a Montague?</body>",
        );
        let inbound = one(&stanza);
        assert_eq!(inbound.from, xmpp("juliet@example.com/yn0cl4bnw0yr3vym"));
        assert_eq!(inbound.to, xmpp("romeo@example.net"));
        assert_eq!(inbound.received_at_ms, 7);
        assert_eq!(inbound.hops, None);
        let Event::Message(m) = inbound.event else {
            panic!()
        };
        assert_eq!(m, Message::text("Art thou not Romeo, and a Montague?"));
    }

    #[test]
    fn rfc7572_4_table1_body() {
        let m = im(&message(
            "from='a@x' to='b@y'",
            "<body> two\n lines </body>",
        ));
        assert_eq!(m.content_type, "text/plain; charset=utf-8");
        assert_eq!(m.body, b" two\n lines ");
    }

    #[test]
    fn rfc7572_4_table1_subject() {
        let m = im(&message(
            "from='a@x' to='b@y' xml:lang='en'",
            "<subject>Hi</subject><subject xml:lang='fr'>Salut</subject><body>b</body>",
        ));
        assert_eq!(
            m.subjects,
            vec![
                LangText {
                    lang: None,
                    text: "Hi".into()
                },
                LangText {
                    lang: Some("fr".into()),
                    text: "Salut".into()
                },
            ]
        );
        // A subject alone is still a message (RFC 6121 §5.2.4), with an empty body.
        let m = im(&message("from='a@x' to='b@y'", "<subject>only</subject>"));
        assert!(m.body.is_empty());
        assert_eq!(m.subjects.len(), 1);
    }

    #[test]
    fn rfc7572_4_table1_thread() {
        let m = im(&message(
            "from='a@x' to='b@y'",
            "<thread parent='p'>e0ffe42b</thread><body>b</body>",
        ));
        assert_eq!(m.thread.as_deref(), Some("e0ffe42b"));
    }

    #[test]
    fn rfc7572_4_table1_from_to() {
        let i = one(&message("from='a@x/r 1' to='b@y'", "<body>b</body>"));
        assert_eq!(i.from, xmpp("a@x/r 1"));
        assert_eq!(i.to, xmpp("b@y"));
    }

    #[test]
    fn rfc7572_4_table1_id() {
        let i = one(&message("from='a@x/r' to='b@y' id='m1'", "<body>b</body>"));
        assert_eq!(i.protocol_ids, vec![protocol_id(XMPP_ID, "m1")]);
        let key = i.dedup_key.clone().unwrap();
        assert!(key.starts_with("a@x/r\nm1\nmessage\nb@y\n"), "{key}");
        // A retransmission is the same key; another message under a reused id (a later
        // session of the client) is not, nor the same text to another recipient.
        let again = one(&message("from='a@x/r' to='b@y' id='m1'", "<body>b</body>"));
        assert_eq!(again.dedup_key.as_deref(), Some(key.as_str()));
        let other = one(&message("from='a@x/r' to='b@y' id='m1'", "<body>c</body>"));
        assert_ne!(other.dedup_key.as_deref(), Some(key.as_str()));
        let elsewhere = one(&message("from='a@x/r' to='c@y' id='m1'", "<body>b</body>"));
        assert_ne!(elsewhere.dedup_key.as_deref(), Some(key.as_str()));
        let i = one(&message("from='a@x/r' to='b@y'", "<body>b</body>"));
        assert!(i.protocol_ids.is_empty());
        assert_eq!(i.dedup_key, None);
    }

    /// Issue 15: the driver translates a `<message/>` from the form the stream parsed
    /// (two parses fewer). It says what the XML path says, refusals included.
    #[test]
    fn a_parsed_message_translates_as_its_xml_does() {
        let gw_id = GW_ID;
        let cases = [
            message(
                "from='a@x/r' to='b@y' id='m1' type='chat'",
                "<body xml:lang='de'>hallo</body><subject>s</subject><thread>t1</thread>\
                 <request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>\
                 <origin-id xmlns='urn:xmpp:sid:0' id='o1'/>",
            ),
            message("from='a@x/r' to='b@y' id='m2'", "<body>b</body><unknown xmlns='urn:example'/>"),
            message(
                "from='a@x/r' to='b@y' id='m3' type='chat'",
                "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
            ),
            message(
                "from='a@x/r' to='b@y' id='m4'",
                &format!("<received xmlns='urn:xmpp:receipts' id='{gw_id}'/>"),
            ),
            message(
                "from='a@x/r' to='b@y' id='m5'",
                &format!("<displayed xmlns='urn:xmpp:chat-markers:0' id='{gw_id}'/>"),
            ),
            message("from='a@x/r' to='b@y' id='m6' type='headline'", "<body>news</body>"),
            message("from='a@x/r' to='b@y' id='m7' type='groupchat'", "<body>room</body>"),
            message("to='b@y' id='m8'", "<body>no sender</body>"),
            message(
                &format!("from='a@x/r' to='b@y' id='{gw_id}' type='error'"),
                "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
            ),
        ];
        for stanza in cases {
            let parsed = XmppMessage::try_from(stanza.clone()).unwrap();
            let skeleton = message_skeleton(&parsed);
            let typed = parsed_message_inbound(parsed, 7);
            let from_xml = inbound(&stanza, 7);
            assert_eq!(typed, from_xml, "{}", String::from(&stanza));
            if let Err(fault) = &from_xml {
                assert_eq!(
                    error_reply(&skeleton, fault).map(|e| String::from(&e)),
                    error_reply(&stanza, fault).map(|e| String::from(&e)),
                );
            }
        }
    }

    #[test]
    fn rfc7572_4_table1_type_has_no_mapping() {
        for t in ["", "type='normal'", "type='chat'", "type='whatever'"] {
            let m = im(&message(
                &format!("from='a@x' to='b@y' id='1' {t}"),
                "<body>b</body><request xmlns='urn:xmpp:receipts'/>",
            ));
            assert!(m.receipts.delivered, "{t}");
        }
        // Headline: delivered, but nobody answers a headline.
        let m = im(&message(
            "from='a@x' to='b@y' id='1' type='headline'",
            "<body>news</body><request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>",
        ));
        assert_eq!(m.body, b"news");
        assert_eq!(m.receipts, Receipts::default());
    }

    #[test]
    fn rfc7572_4_table1_xml_lang() {
        let m = im(&message(
            "from='a@x' to='b@y' xml:lang='cs'",
            "<body>Nic</body>",
        ));
        assert_eq!(m.lang.as_deref(), Some("cs"));
        let m = im(&message(
            "from='a@x' to='b@y'",
            "<body xml:lang='de'>Hallo</body>",
        ));
        assert_eq!(m.lang.as_deref(), Some("de"));
        // Several bodies: the one in the stanza's language.
        let m = im(&message(
            "from='a@x' to='b@y' xml:lang='fr'",
            "<body xml:lang='de'>Hallo</body><body>Salut</body>",
        ));
        assert_eq!(
            (m.lang.as_deref(), m.body.as_slice()),
            (Some("fr"), &b"Salut"[..])
        );
        let m = im(&message("from='a@x' to='b@y'", "<body>Hello</body>"));
        assert_eq!(m.lang, None);
    }

    #[test]
    fn rfc7572_4_groupchat_is_not_implemented() {
        let stanza = message(
            "from='room@muc.x/nick' to='b@y' type='groupchat'",
            "<body>b</body>",
        );
        assert_eq!(fault(&stanza), Condition::FeatureNotImplemented);
    }

    // --- RFC 7572 §5 Table 2: SIP to XMPP ------------------------------------------------

    #[test]
    fn rfc7572_5_example5_message() {
        let e = out_one(Event::Message(Message::text(
            "Neither, fair saint, if either thee dislike.",
        )));
        assert_eq!(
            String::from(&e),
            format!(
                "<message xmlns='{NS}' from='romeo@example.net/dr4hcr0st3lup4c' id='{GW_ID}' \
                 to='juliet@example.com'><body>Neither, fair saint, if either \
                 thee dislike.</body><origin-id \
                 xmlns='urn:xmpp:sid:0' id='{GW_ID}'/></message>"
            )
        );
    }

    #[test]
    fn rfc7572_5_table2_call_id_thread() {
        let e = out_one(Event::Message(Message {
            thread: Some("9E97FB43".into()),
            ..Message::text("b")
        }));
        assert_eq!(e.get_child("thread", NS).unwrap().text(), "9E97FB43");
    }

    #[test]
    fn rfc7572_5_table2_content_language_xml_lang() {
        let e = out_one(Event::Message(Message {
            lang: Some("cs".into()),
            ..Message::text("Nic")
        }));
        assert_eq!(e.attr_ns(&Namespace::XML, "lang"), Some("cs"));
        let body = e.get_child("body", NS).unwrap();
        assert_eq!(body.attr_ns(&Namespace::XML, "lang"), None);
        // Not a language tag: dropped, the message still goes.
        let e = out_one(Event::Message(Message {
            lang: Some("c s'".into()),
            ..Message::text("Nic")
        }));
        assert_eq!(e.attr_ns(&Namespace::XML, "lang"), None);
    }

    #[test]
    fn rfc7572_5_table2_from_to() {
        let e = out_one(Event::Message(Message::text("b")));
        assert_eq!(e.attr("from"), Some("romeo@example.net/dr4hcr0st3lup4c"));
        assert_eq!(e.attr("to"), Some("juliet@example.com"));
    }

    #[test]
    fn rfc7572_5_table2_subject() {
        let e = out_one(Event::Message(Message {
            lang: Some("en".into()),
            subjects: vec![
                LangText {
                    lang: None,
                    text: "Hi".into(),
                },
                LangText {
                    lang: Some("fr".into()),
                    text: "Salut".into(),
                },
            ],
            ..Message::text("b")
        }));
        let subjects: Vec<_> = e
            .children()
            .filter(|c| c.is("subject", NS))
            .map(|c| (c.attr_ns(&Namespace::XML, "lang"), c.text()))
            .collect();
        assert_eq!(
            subjects,
            vec![(None, "Hi".to_owned()), (Some("fr"), "Salut".to_owned())]
        );
    }

    #[test]
    fn rfc7572_5_table2_body() {
        let e = out_one(Event::Message(Message::text("<&>\"'")));
        assert_eq!(e.get_child("body", NS).unwrap().text(), "<&>\"'");
    }

    #[test]
    fn rfc7572_5_table2_transaction_id() {
        let e = out_one(Event::Message(Message::text("b")));
        assert_eq!(e.attr("id"), Some(GW_ID));
    }

    #[test]
    fn rfc7572_5_type_normal_or_configured_chat() {
        // `normal` is the default type, so xmpp-parsers writes no attribute, which RFC
        // 7572 §5 allows as equivalent.
        let e = out_one(Event::Message(Message::text("b")));
        assert_eq!(e.attr("type"), None);
        let options = OutboundOptions {
            message_type: OutboundMessageType::Chat,
            ..OutboundOptions::default()
        };
        let e = outbound(&envelope(Event::Message(Message::text("b"))), &options).unwrap();
        assert_eq!(e[0].attr("type"), Some("chat"));
    }

    #[test]
    fn rfc7572_7_text_bodies() {
        for content_type in [
            "",
            "text/plain",
            "text/plain; charset=UTF-8",
            "text/html",
            "text/plain;charset=us-ascii",
        ] {
            let m = Message {
                content_type: content_type.into(),
                ..Message::text("<b>hi</b>")
            };
            let e = out_one(Event::Message(m));
            assert_eq!(e.get_child("body", NS).unwrap().text(), "<b>hi</b>");
        }
    }

    #[test]
    fn rfc7572_7_non_text_body_is_not_acceptable() {
        for (content_type, body) in [
            ("image/png", &b"\x89PNG"[..]),
            ("text/plain; charset=iso-8859-1", b"caf\xe9"),
            ("text/plain", b"\xff\xfe"),
            ("not a type", b"x"),
        ] {
            let m = Message {
                content_type: content_type.into(),
                body: body.to_vec(),
                ..Message::default()
            };
            let err =
                outbound(&envelope(Event::Message(m)), &OutboundOptions::default()).unwrap_err();
            assert!(matches!(err, TranslateError::NotText { .. }), "{err}");
            assert_eq!(err.condition(), Condition::NotAcceptable);
        }
    }

    #[test]
    fn rfc7572_8_example7_language() {
        let e = out_one(Event::Message(Message {
            lang: Some("cs".into()),
            ..Message::text("Nic z obého, má děvo spanilá")
        }));
        let back = im(&wire(&e));
        assert_eq!(back.lang.as_deref(), Some("cs"));
        assert_eq!(back.body, "Nic z obého, má děvo spanilá".as_bytes());
    }

    #[test]
    fn rfc3862_cpim_body_is_unwrapped() {
        let cpim = b"From: MR SANDERS <im:piglet@100akerwood.com>\r\n\
Subject:;lang=fr Objet\r\n\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbonjour";
        for m in [
            Message {
                cpim: Some(cpim.to_vec()),
                ..Message::text("ignored")
            },
            Message {
                content_type: "message/cpim".into(),
                body: cpim.to_vec(),
                ..Message::default()
            },
        ] {
            let e = out_one(Event::Message(m));
            assert_eq!(e.get_child("body", NS).unwrap().text(), "bonjour");
            let subject = e.get_child("subject", NS).unwrap();
            assert_eq!(subject.text(), "Objet");
            assert_eq!(subject.attr_ns(&Namespace::XML, "lang"), Some("fr"));
        }
        let bad = Message {
            cpim: Some(b"garbage".to_vec()),
            ..Message::default()
        };
        let err = outbound(&envelope(Event::Message(bad)), &OutboundOptions::default());
        assert!(matches!(err, Err(TranslateError::BadCpim(_))));
    }

    #[test]
    fn text_xml_cannot_carry_is_refused() {
        for m in [
            Message::text("nul \u{0} char"),
            Message {
                thread: Some("\u{1b}".into()),
                ..Message::text("ok")
            },
            Message {
                subjects: vec![LangText {
                    lang: None,
                    text: "\u{ffff}".into(),
                }],
                ..Message::text("ok")
            },
        ] {
            let err =
                outbound(&envelope(Event::Message(m)), &OutboundOptions::default()).unwrap_err();
            assert!(matches!(err, TranslateError::NotXmlText { .. }), "{err}");
        }
    }

    #[test]
    fn outbound_addresses_must_be_xmpp() {
        let mut env = envelope(Event::Message(Message::text("b")));
        env.to = Address::parse("sip:juliet@example.com").unwrap();
        let err = outbound(&env, &OutboundOptions::default()).unwrap_err();
        assert!(matches!(
            err,
            TranslateError::NotXmppAddress { which: "to", .. }
        ));
        assert_eq!(err.condition(), Condition::JidMalformed);
    }

    // --- XEP-0085 chat states ------------------------------------------------------------

    #[test]
    fn xep0085_composing_is_active() {
        let i = one(&message(
            "from='a@x' to='b@y' type='chat'",
            "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
        ));
        assert_eq!(
            i.event,
            Event::Composing(Composing {
                state: ComposingState::Active,
                refresh_secs: None
            })
        );
    }

    #[test]
    fn xep0085_other_states_are_idle() {
        for state in ["paused", "inactive", "gone", "active"] {
            let i = one(&message(
                "from='a@x' to='b@y' type='chat'",
                &format!("<{state} xmlns='http://jabber.org/protocol/chatstates'/>"),
            ));
            assert_eq!(
                i.event,
                Event::Composing(Composing {
                    state: ComposingState::Idle,
                    refresh_secs: None
                }),
                "{state}"
            );
        }
    }

    #[test]
    fn xep0085_state_with_body_is_the_message_only() {
        let m = im(&message(
            "from='a@x' to='b@y' type='chat'",
            "<body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/>",
        ));
        assert_eq!(m.body, b"hi");
    }

    #[test]
    fn xep0085_outbound_composing_and_paused() {
        for (state, name) in [
            (ComposingState::Active, "composing"),
            (ComposingState::Idle, "paused"),
        ] {
            let e = out_one(Event::Composing(Composing {
                state,
                refresh_secs: Some(60),
            }));
            assert!(has(&e, name, ns::CHATSTATES), "{}", String::from(&e));
            assert!(has(&e, "no-store", HINTS_NS));
            assert!(!has(&e, "body", NS));
            assert!(!has(&e, "request", ns::RECEIPTS));
            // And it comes back as the same state.
            let Event::Composing(c) = one(&wire(&e)).event else {
                panic!()
            };
            assert_eq!(c.state, state);
        }
    }

    #[test]
    fn unmapped_payloads_give_nothing() {
        let stanza = message(
            "from='a@x' to='b@y'",
            "<attention xmlns='urn:xmpp:attention:0'/>",
        );
        assert_eq!(inbound(&stanza, 7).unwrap(), vec![]);
    }

    // --- XEP-0184 receipts ---------------------------------------------------------------

    #[test]
    fn xep0184_request_asks_for_delivered() {
        let m = im(&message(
            "from='a@x' to='b@y' id='r1'",
            "<body>b</body><request xmlns='urn:xmpp:receipts'/>",
        ));
        assert!(m.receipts.delivered && !m.receipts.displayed && !m.receipts.failed);
        // Without an id a receipt could not name the message.
        let m = im(&message(
            "from='a@x' to='b@y'",
            "<body>b</body><request xmlns='urn:xmpp:receipts'/>",
        ));
        assert!(!m.receipts.delivered);
    }

    #[test]
    fn xep0184_received_is_delivered_notification() {
        let i = one(&message(
            "from='b@y/phone' to='a@x' id='x1'",
            &format!("<received xmlns='urn:xmpp:receipts' id='{GW_ID}'/>"),
        ));
        assert_eq!(
            i.event,
            Event::Notification(Notification {
                message_id: GW_ID.into(),
                status: NotificationStatus::Delivered
            })
        );
        // Not an id the gateway wrote: nothing to correlate.
        let stanza = message(
            "from='b@y' to='a@x'",
            "<received xmlns='urn:xmpp:receipts' id='abc'/>",
        );
        assert_eq!(inbound(&stanza, 7).unwrap(), vec![]);
    }

    #[test]
    fn xep0184_outbound_requests_only_when_asked() {
        let e = out_one(Event::Message(Message::text("b")));
        assert!(!has(&e, "request", ns::RECEIPTS), "nobody asked");
        let mut m = Message::text("b");
        m.receipts.delivered = true;
        let e = out_one(Event::Message(m));
        assert!(has(&e, "request", ns::RECEIPTS));
    }

    #[test]
    fn xep0184_outbound_received_names_the_original_id() {
        let event = Event::Notification(Notification {
            message_id: "gw-0000000000000001".into(),
            status: NotificationStatus::Delivered,
        });
        let env = with_ids(event.clone(), &[(XMPP_ID, "orig-1")]);
        let e = outbound(&env, &OutboundOptions::default()).unwrap();
        let received = e[0].get_child("received", ns::RECEIPTS).unwrap();
        assert_eq!(received.attr("id"), Some("orig-1"));
        assert_eq!(e[0].attr("to"), Some("juliet@example.com"));
        // No original XMPP id: nothing to send.
        assert_eq!(out(event), Vec::<Element>::new());
    }

    // --- XEP-0333 displayed markers ------------------------------------------------------

    #[test]
    fn xep0333_markable_asks_for_displayed() {
        let m = im(&message(
            "from='a@x' to='b@y' id='r1'",
            "<body>b</body><markable xmlns='urn:xmpp:chat-markers:0'/>",
        ));
        assert!(m.receipts.displayed && !m.receipts.delivered);
    }

    #[test]
    fn xep0333_displayed_is_displayed_notification() {
        let i = one(&message(
            "from='b@y' to='a@x'",
            &format!("<displayed xmlns='urn:xmpp:chat-markers:0' id='{GW_ID}'/>"),
        ));
        assert_eq!(
            i.event,
            Event::Notification(Notification {
                message_id: GW_ID.into(),
                status: NotificationStatus::Displayed
            })
        );
    }

    #[test]
    fn xep0333_outbound_markable_and_displayed() {
        let e = out_one(Event::Message(Message {
            receipts: Receipts {
                displayed: true,
                ..Receipts::default()
            },
            ..Message::text("b")
        }));
        assert!(has(&e, "markable", ns::DISPLAYED_MARKERS));
        let e = out_one(Event::Message(Message::text("b")));
        assert!(!has(&e, "markable", ns::DISPLAYED_MARKERS));

        let env = with_ids(
            Event::Notification(Notification {
                message_id: "gw-0000000000000001".into(),
                status: NotificationStatus::Displayed,
            }),
            &[(XMPP_ID, "orig-1")],
        );
        let e = outbound(&env, &OutboundOptions::default()).unwrap();
        let displayed = e[0].get_child("displayed", ns::DISPLAYED_MARKERS).unwrap();
        assert_eq!(displayed.attr("id"), Some("orig-1"));
    }

    #[test]
    fn receipt_and_body_in_one_stanza_give_both() {
        let all = inbound(
            &message(
                "from='b@y' to='a@x' id='z'",
                &format!("<received xmlns='urn:xmpp:receipts' id='{GW_ID}'/><body>and hi</body>"),
            ),
            7,
        )
        .unwrap();
        assert_eq!(all.len(), 2);
        assert!(matches!(all[0].event, Event::Notification(_)));
        assert!(matches!(all[1].event, Event::Message(_)));
        assert_ne!(all[0].dedup_key, all[1].dedup_key);
    }

    #[test]
    fn stored_notification_has_no_xmpp_form() {
        let env = with_ids(
            Event::Notification(Notification {
                message_id: GW_ID.into(),
                status: NotificationStatus::Stored,
            }),
            &[(XMPP_ID, "o")],
        );
        assert!(outbound(&env, &OutboundOptions::default())
            .unwrap()
            .is_empty());
    }

    // --- XEP-0359 stanza ids -------------------------------------------------------------

    #[test]
    fn xep0359_ids_are_protocol_ids() {
        let i = one(&message(
            "from='a@x' to='b@y' id='m1'",
            "<body>b</body><origin-id xmlns='urn:xmpp:sid:0' id='o1'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='s1' by='a@x'/>",
        ));
        assert_eq!(
            i.protocol_ids,
            vec![
                protocol_id(XMPP_ID, "m1"),
                protocol_id(XMPP_ORIGIN_ID, "o1"),
                protocol_id(XMPP_STANZA_ID, "s1")
            ]
        );
        let e = out_one(Event::Message(Message::text("b")));
        assert_eq!(
            e.get_child("origin-id", ns::SID).unwrap().attr("id"),
            Some(GW_ID)
        );
    }

    // --- RFC 7247 §7 / RFC 6120 §8.3 errors ----------------------------------------------

    #[test]
    fn rfc7247_7_message_error_is_failed_notification() {
        let stanza = message(
            &format!("from='b@y' to='a@x' id='{GW_ID}' type='error'"),
            "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>no such user</text></error>",
        );
        assert_eq!(
            one(&stanza).event,
            Event::Notification(Notification {
                message_id: GW_ID.into(),
                status: NotificationStatus::Failed {
                    condition: Condition::ItemNotFound,
                    text: Some("no such user".into())
                }
            })
        );
    }

    #[test]
    fn rfc6120_8_3_2_unknown_condition_is_undefined() {
        let stanza = presence(
            &format!("from='b@y' to='a@x' id='{GW_ID}' type='error'"),
            "<error type='cancel'><payment-required xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
        );
        let Event::Notification(n) = one(&stanza).event else {
            panic!()
        };
        assert_eq!(
            n.status,
            NotificationStatus::Failed {
                condition: Condition::UndefinedCondition,
                text: None
            }
        );
    }

    #[test]
    fn uncorrelated_errors_give_nothing_and_get_no_answer() {
        for stanza in [
            message(
                "from='b@y' to='a@x' id='theirs' type='error'",
                "<error type='cancel'/>",
            ),
            message("from='b@y' to='a@x' type='error'", ""),
            message(&format!("to='a@x' id='{GW_ID}' type='error'"), ""),
            presence(
                &format!("from='b b@y' to='a@x' id='{GW_ID}' type='error'"),
                "",
            ),
        ] {
            assert_eq!(inbound(&stanza, 7).unwrap(), vec![]);
            let f = StanzaFault::new(Condition::BadRequest, "x");
            assert_eq!(error_reply(&stanza, &f), None);
        }
    }

    #[test]
    fn rfc7247_7_every_condition_round_trips_through_error() {
        for condition in Condition::ALL {
            let env = with_ids(
                Event::Notification(Notification {
                    message_id: GW_ID.into(),
                    status: NotificationStatus::Failed {
                        condition,
                        text: Some("why".into()),
                    },
                }),
                &[(XMPP_ID, GW_ID)],
            );
            let e = outbound(&env, &OutboundOptions::default()).unwrap();
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].attr("type"), Some("error"));
            assert_eq!(e[0].attr("id"), Some(GW_ID));
            let error = e[0].get_child("error", NS).unwrap();
            assert_eq!(
                error.attr("type"),
                Some(condition.default_error_type().as_str())
            );
            let Event::Notification(n) = one(&wire(&e[0])).event else {
                panic!()
            };
            assert_eq!(
                n.status,
                NotificationStatus::Failed {
                    condition,
                    text: Some("why".into())
                },
                "{condition}"
            );
        }
    }

    #[test]
    fn rfc7247_7_failure_of_a_presence_is_a_presence_error() {
        let env = with_ids(
            Event::Notification(Notification {
                message_id: GW_ID.into(),
                status: NotificationStatus::Failed {
                    condition: Condition::RemoteServerNotFound,
                    text: None,
                },
            }),
            &[(XMPP_PRESENCE_ID, "p7")],
        );
        let e = outbound(&env, &OutboundOptions::default()).unwrap();
        assert_eq!(e[0].name(), "presence");
        assert_eq!(e[0].attr("id"), Some("p7"));
        assert_eq!(e[0].attr("type"), Some("error"));
        assert!(!has(&e[0], "priority", NS));
        let error = e[0].get_child("error", NS).unwrap();
        assert!(has(error, "remote-server-not-found", ns::XMPP_STANZAS));
        // Nothing to name: nothing sent.
        let env = with_ids(env.event.clone(), &[]);
        assert!(outbound(&env, &OutboundOptions::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn rfc6120_8_3_1_error_reply() {
        let stanza = message(
            "from='room@muc.x/nick' to='b@y' id='g1' type='groupchat'",
            "<body>b</body>",
        );
        let f = inbound(&stanza, 7).unwrap_err();
        let reply = error_reply(&stanza, &f).unwrap();
        assert_eq!(reply.name(), "message");
        assert_eq!(reply.attr("from"), Some("b@y"));
        assert_eq!(reply.attr("to"), Some("room@muc.x/nick"));
        assert_eq!(reply.attr("id"), Some("g1"));
        assert_eq!(reply.attr("type"), Some("error"));
        let error = reply.get_child("error", NS).unwrap();
        assert_eq!(error.attr("type"), Some("cancel"));
        assert!(has(error, "feature-not-implemented", ns::XMPP_STANZAS));
        let text = error.get_child("text", ns::XMPP_STANZAS).unwrap();
        assert_eq!(text.attr_ns(&Namespace::XML, "lang"), Some("en"));

        let iq = element(&format!(
            "<iq xmlns='{NS}' from='a@x' to='gw.y' id='q' type='get'/>"
        ));
        let reply = error_reply(&iq, &StanzaFault::new(Condition::ServiceUnavailable, "no"));
        assert_eq!(reply.unwrap().attr("type"), Some("error"));
        let result = element(&format!(
            "<iq xmlns='{NS}' from='a@x' to='gw.y' id='q' type='result'/>"
        ));
        assert_eq!(
            error_reply(&result, &StanzaFault::new(Condition::BadRequest, "no")),
            None
        );
        let anonymous = message("to='b@y'", "<body>b</body>");
        assert_eq!(
            error_reply(&anonymous, &StanzaFault::new(Condition::BadRequest, "no")),
            None
        );
    }

    // --- invalid input -------------------------------------------------------------------

    #[test]
    fn missing_addresses_are_bad_request() {
        assert_eq!(
            fault(&message("to='b@y'", "<body>b</body>")),
            Condition::BadRequest
        );
        assert_eq!(
            fault(&message("from='a@x'", "<body>b</body>")),
            Condition::BadRequest
        );
        assert_eq!(fault(&presence("from='a@x'", "")), Condition::BadRequest);
    }

    #[test]
    fn malformed_addresses_are_jid_malformed() {
        for from in ["a b@x", "@x", "a@", "a@x/", "xmpp:a@x", "a@x y"] {
            let stanza = message(&format!("from='{from}' to='b@y'"), "<body>b</body>");
            assert_eq!(fault(&stanza), Condition::JidMalformed, "{from}");
        }
        assert_eq!(
            fault(&presence("from='a@x' to='b@@y'", "")),
            Condition::JidMalformed
        );
    }

    #[test]
    fn invalid_stanzas_are_bad_request() {
        for stanza in [
            presence("from='a@x' to='b@y'", "<priority>200</priority>"),
            presence("from='a@x' to='b@y'", "<show>online</show>"),
            presence("from='a@x' to='b@y' type='maybe'", ""),
            element("<message xmlns='jabber:client' from='a@x' to='b@y'><body>b</body></message>"),
            element(&format!("<stream xmlns='{NS}'/>")),
        ] {
            assert_eq!(
                fault(&stanza),
                Condition::BadRequest,
                "{}",
                String::from(&stanza)
            );
        }
        let iq = element(&format!(
            "<iq xmlns='{NS}' from='a@x' to='b@y' id='1' type='get'/>"
        ));
        assert_eq!(fault(&iq), Condition::ServiceUnavailable);
    }

    #[test]
    fn xep0199_xep0030_classify() {
        let iq = |inner: &str, t: &str| {
            element(&format!(
                "<iq xmlns='{NS}' from='a@x' to='gw.y' id='1' type='{t}'>{inner}</iq>"
            ))
        };
        assert_eq!(
            classify(&iq("<ping xmlns='urn:xmpp:ping'/>", "get")),
            StanzaClass::IqRequest(IqRequest::Ping)
        );
        assert_eq!(
            classify(&iq(
                "<query xmlns='http://jabber.org/protocol/disco#info' node='n'/>",
                "get"
            )),
            StanzaClass::IqRequest(IqRequest::DiscoInfo {
                node: Some("n".into())
            })
        );
        assert_eq!(
            classify(&iq(
                "<query xmlns='http://jabber.org/protocol/disco#items'/>",
                "get"
            )),
            StanzaClass::IqRequest(IqRequest::DiscoItems { node: None })
        );
        assert_eq!(
            classify(&iq("<query xmlns='jabber:iq:version'/>", "get")),
            StanzaClass::IqRequest(IqRequest::Other)
        );
        assert_eq!(
            classify(&iq("<ping xmlns='urn:xmpp:ping'/>", "set")),
            StanzaClass::IqRequest(IqRequest::Other)
        );
        assert_eq!(classify(&iq("", "result")), StanzaClass::IqResponse);
        assert_eq!(classify(&message("", "")), StanzaClass::Message);
        assert_eq!(classify(&presence("", "")), StanzaClass::Presence);
        assert_eq!(classify(&element("<x xmlns='y'/>")), StanzaClass::Unknown);
    }

    // --- RFC 7248 §4 and §6: subscriptions ------------------------------------------------

    fn op_of(type_: &str) -> Subscription {
        let i = one(&presence(
            &format!("from='juliet@example.com' to='romeo@example.net' type='{type_}'"),
            "",
        ));
        match i.event {
            Event::Subscription(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rfc7248_4_2_1_subscribe() {
        assert_eq!(
            op_of("subscribe"),
            Subscription::new(SubscriptionOp::Subscribe)
        );
    }

    #[test]
    fn rfc7248_4_3_1_subscribed_is_approve() {
        assert_eq!(
            op_of("subscribed"),
            Subscription::new(SubscriptionOp::Approve)
        );
    }

    #[test]
    fn rfc7248_4_2_3_unsubscribe() {
        assert_eq!(
            op_of("unsubscribe"),
            Subscription::new(SubscriptionOp::Unsubscribe)
        );
    }

    #[test]
    fn rfc7248_4_2_3_unsubscribed_is_deny() {
        assert_eq!(
            op_of("unsubscribed"),
            Subscription::new(SubscriptionOp::Deny)
        );
    }

    #[test]
    fn rfc7248_6_1_probe() {
        assert_eq!(op_of("probe"), Subscription::new(SubscriptionOp::Probe));
    }

    #[test]
    fn rfc7248_4_3_2_an_ended_subscription_is_unavailable_unless_refused() {
        for (reason, type_) in [
            (None, "unsubscribed"),
            (Some("rejected"), "unsubscribed"),
            (Some("noresource"), "unavailable"),
            (Some("giveup"), "unavailable"),
            (Some("timeout"), "unavailable"),
            (Some("deactivated"), "unavailable"),
            (Some("invariant"), "unavailable"),
        ] {
            let e = out_one(Event::Subscription(Subscription {
                reason: reason.map(str::to_owned),
                ..Subscription::new(SubscriptionOp::Deny)
            }));
            assert_eq!(e.attr("type"), Some(type_), "{reason:?}");
        }
    }

    #[test]
    fn xep0115_a_bridged_users_availability_comes_from_its_full_jid_with_caps() {
        let from_bare = |event: Event| {
            let mut env = envelope(event);
            env.from = xmpp("romeo@example.net");
            let mut all = outbound(&env, &OutboundOptions::default()).unwrap();
            assert_eq!(all.len(), 1);
            all.pop().unwrap()
        };
        let open = from_bare(Event::Presence(PresenceUpdate {
            presence: pidf_doc(
                "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:romeo@example.net'>\
                 <tuple id='a'><status><basic>open</basic></status></tuple></presence>",
            ),
        }));
        assert_eq!(open.attr("from"), Some("romeo@example.net/gw"));
        let c = open
            .get_child("c", "http://jabber.org/protocol/caps")
            .expect("caps");
        assert_eq!(
            String::from(c),
            String::from(&crate::caps::user_caps(crate::caps::Profile::Full))
        );
        // A text-only phone's presence announces its own (smaller) set.
        let mut env = envelope(Event::Presence(PresenceUpdate {
            presence: pidf_doc(
                "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:romeo@example.net'>\
                 <tuple id='a'><status><basic>open</basic></status></tuple></presence>",
            ),
        }));
        env.from = xmpp("romeo@example.net");
        let options = OutboundOptions {
            profile: crate::caps::Profile::TextOnly,
            ..OutboundOptions::default()
        };
        let text_only = outbound(&env, &options).unwrap().pop().unwrap();
        let c = text_only
            .get_child("c", "http://jabber.org/protocol/caps")
            .expect("caps");
        assert_eq!(
            String::from(c),
            String::from(&crate::caps::user_caps(crate::caps::Profile::TextOnly))
        );
        let closed = from_bare(Event::Presence(PresenceUpdate {
            presence: pidf_doc(
                "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:romeo@example.net'>\
                 <tuple id='a'><status><basic>closed</basic></status></tuple></presence>",
            ),
        }));
        assert_eq!(closed.attr("from"), Some("romeo@example.net/gw"));
        assert!(closed
            .get_child("c", "http://jabber.org/protocol/caps")
            .is_none());
        // The end of a subscription without a refusal: unavailable from the same JID.
        let ended = from_bare(Event::Subscription(Subscription {
            reason: Some("noresource".into()),
            ..Subscription::new(SubscriptionOp::Deny)
        }));
        assert_eq!(ended.attr("type"), Some("unavailable"));
        assert_eq!(ended.attr("from"), Some("romeo@example.net/gw"));
        // Subscription stanzas stay on the bare JID (RFC 6121 §3).
        let approved = from_bare(Event::Subscription(Subscription::new(
            SubscriptionOp::Approve,
        )));
        assert_eq!(approved.attr("type"), Some("subscribed"));
        assert_eq!(approved.attr("from"), Some("romeo@example.net"));
    }

    #[test]
    fn rfc7248_4_and_6_2_subscription_ops_outbound() {
        for (op, type_) in [
            (SubscriptionOp::Subscribe, "subscribe"),
            (SubscriptionOp::Approve, "subscribed"),
            (SubscriptionOp::Deny, "unsubscribed"),
            (SubscriptionOp::Unsubscribe, "unsubscribe"),
            (SubscriptionOp::Probe, "probe"),
        ] {
            for aggregate in [false, true] {
                let e = out_one(Event::Subscription(Subscription {
                    aggregate,
                    expires_secs: Some(3600),
                    reason: (op != SubscriptionOp::Deny).then(|| "timeout".into()),
                    ..Subscription::new(op)
                }));
                let type_ = if aggregate && op == SubscriptionOp::Unsubscribe {
                    "unavailable"
                } else {
                    type_
                };
                assert_eq!(
                    String::from(&e),
                    format!(
                        "<presence xmlns='{NS}' from='romeo@example.net/dr4hcr0st3lup4c' \
                         id='{GW_ID}' to='juliet@example.com' type='{type_}'/>"
                    )
                );
                if type_ != "unavailable" {
                    assert_eq!(op_of(type_).op, op);
                }
            }
        }
    }

    // --- RFC 7248 §5.2 Table 1: XMPP presence to PIDF -------------------------------------

    #[test]
    fn rfc7248_5_2_example_away() {
        let p = pidf_of(&presence(
            "from='juliet@example.com/balcony' to='romeo@example.net'",
            "<show>away</show>",
        ));
        assert_eq!(p.entity, "pres:juliet@example.com");
        assert_eq!(p.tuples.len(), 1);
        let t = &p.tuples[0];
        assert_eq!(t.id, "ID-balcony");
        assert_eq!(t.status.basic, Some(Basic::Open));
        assert_eq!(t.status.show, Some(Show::Away));
        assert_eq!(
            t.contact,
            Some(Contact {
                uri: "xmpp:juliet@example.com/balcony".into(),
                priority: None
            })
        );
        // The document is valid PIDF.
        assert_eq!(Presence::parse(p.to_xml().as_bytes()).unwrap(), p);
    }

    #[test]
    fn rfc7248_5_2_table1_type_is_basic_status() {
        let p = pidf_of(&presence("from='j@x/r' to='r@y'", ""));
        assert_eq!(p.tuples[0].status.basic, Some(Basic::Open));
        let p = pidf_of(&presence(
            "from='j@x/r' to='r@y' type='unavailable'",
            "<show>dnd</show>",
        ));
        assert_eq!(p.tuples[0].status.basic, Some(Basic::Closed));
        assert_eq!(p.tuples[0].status.show, None);
    }

    #[test]
    fn rfc7248_5_2_table1_resource_is_tuple_id() {
        for (from, id) in [
            ("j@x/balcony", "ID-balcony"),
            ("j@x/1a", "ID-1a"),
            ("j@x/a b_c", "ID-a_20b_5Fc"),
            ("j@x/é", "ID-_C3_A9"),
            ("j@x", "ID"),
        ] {
            let p = pidf_of(&presence(&format!("from='{from}' to='r@y'"), ""));
            assert_eq!(p.tuples[0].id, id, "{from}");
            Presence::parse(p.to_xml().as_bytes()).unwrap();
        }
    }

    #[test]
    fn rfc7248_5_2_table1_from_is_entity_and_contact() {
        let p = pidf_of(&presence("from='d\\27artagnan@x/r' to='r@y'", ""));
        assert_eq!(p.entity, "pres:d'artagnan@x");
        assert_eq!(
            p.tuples[0].contact.as_ref().unwrap().uri,
            "xmpp:d%5C27artagnan@x/r"
        );
        assert_eq!(
            Jid::parse(&p.tuples[0].contact.as_ref().unwrap().uri).unwrap(),
            Jid::parse("d\\27artagnan@x/r").unwrap()
        );
        let p = pidf_of(&presence("from='x.example' to='r@y'", ""));
        assert_eq!(p.entity, "xmpp:x.example");
    }

    #[test]
    fn rfc7248_5_2_table1_id() {
        let i = one(&presence("from='j@x/r' to='r@y' id='p1'", ""));
        assert_eq!(i.protocol_ids, vec![protocol_id(XMPP_PRESENCE_ID, "p1")]);
        assert_eq!(i.dedup_key, None);
    }

    #[test]
    fn rfc7248_5_2_table1_status_is_note_with_xml_lang() {
        let p = pidf_of(&presence(
            "from='j@x/r' to='r@y' xml:lang='en'",
            "<status>at the ball</status><status xml:lang='it'>al ballo</status>",
        ));
        assert_eq!(
            p.tuples[0].notes,
            vec![
                Note {
                    lang: Some("en".into()),
                    text: "at the ball".into()
                },
                Note {
                    lang: Some("it".into()),
                    text: "al ballo".into()
                },
            ]
        );
    }

    #[test]
    fn rfc7248_5_2_table1_show() {
        for (show, expected) in [
            ("away", Show::Away),
            ("chat", Show::Chat),
            ("dnd", Show::Dnd),
            ("xa", Show::Xa),
        ] {
            let p = pidf_of(&presence(
                "from='j@x/r' to='r@y'",
                &format!("<show>{show}</show>"),
            ));
            assert_eq!(p.tuples[0].status.show, Some(expected));
        }
    }

    #[test]
    fn rfc7248_5_2_note6_priority() {
        for (xmpp_priority, pidf) in [
            (0, Some("0")),
            (1, Some("0.007")),
            (2, Some("0.015")),
            (126, Some("0.992")),
            (127, Some("1")),
            (-1, None),
            (-128, None),
        ] {
            let p = pidf_of(&presence(
                "from='j@x/r' to='r@y'",
                &format!("<priority>{xmpp_priority}</priority>"),
            ));
            let priority = p.tuples[0].contact.as_ref().unwrap().priority.clone();
            assert_eq!(
                priority.as_ref().map(Priority::as_str),
                pidf,
                "{xmpp_priority}"
            );
        }
    }

    #[test]
    fn rfc7248_5_2_note6_priority_mapping_is_unique_and_reversible() {
        let mut seen = std::collections::HashSet::new();
        for p in 0..=127i8 {
            let pidf = priority_to_pidf(p).unwrap();
            assert!(seen.insert(pidf.thousandths()), "{p}");
            assert_eq!(priority_to_xmpp(&pidf), p);
        }
        assert_eq!(priority_to_xmpp(&Priority::parse("0.5").unwrap()), 64);
        assert_eq!(priority_to_xmpp(&Priority::parse("0.001").unwrap()), 1);
    }

    // --- RFC 7248 §5.3 Table 2: PIDF to XMPP presence -------------------------------------

    fn pidf_doc(xml: &str) -> Presence {
        Presence::parse(xml.as_bytes()).unwrap()
    }

    fn presence_out_of(xml: &str) -> Element {
        out_one(Event::Presence(PresenceUpdate {
            presence: pidf_doc(xml),
        }))
    }

    #[test]
    fn rfc7248_5_3_example20_closed_is_unavailable() {
        let e = presence_out_of(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:romeo@example.net'>\
             <tuple id='ID-orchard'><status><basic>closed</basic></status></tuple></presence>",
        );
        assert_eq!(
            String::from(&e),
            format!(
                "<presence xmlns='{NS}' from='romeo@example.net/dr4hcr0st3lup4c' \
                 id='{GW_ID}' to='juliet@example.com' type='unavailable'/>"
            )
        );
    }

    #[test]
    fn rfc7248_5_3_table2_basic_open_show_note_priority() {
        let e = presence_out_of(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:romeo@example.net'>\
             <tuple id='a'><status><basic>open</basic></status>\
               <contact priority='0.1'>sip:romeo@example.net</contact></tuple>\
             <tuple id='b'><status><basic>open</basic><show xmlns='jabber:client'>dnd</show></status>\
               <contact priority='0.8'>sip:romeo@example.net;gr=x</contact>\
               <note xml:lang='en'>in a meeting</note><note xml:lang='fr'>en réunion</note>\
               <note xml:lang='en'>second</note></tuple>\
             <tuple id='c'><status><basic>closed</basic></status>\
               <contact priority='1'>sip:romeo@example.net;gr=y</contact></tuple>\
             </presence>",
        );
        assert_eq!(e.attr("type"), None);
        assert_eq!(e.get_child("show", NS).unwrap().text(), "dnd");
        assert_eq!(e.get_child("priority", NS).unwrap().text(), "102");
        let statuses: Vec<_> = e
            .children()
            .filter(|c| c.is("status", NS))
            .map(|c| (c.attr_ns(&Namespace::XML, "lang"), c.text()))
            .collect();
        assert_eq!(
            statuses,
            vec![
                (Some("en"), "in a meeting".to_owned()),
                (Some("fr"), "en réunion".to_owned())
            ]
        );
    }

    #[test]
    fn rfc7248_5_3_table2_person_show_and_document_note() {
        let e = presence_out_of(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' \
               xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model' entity='pres:romeo@example.net'>\
             <tuple id='a'><status><basic>open</basic></status></tuple>\
             <note>gone fishing</note>\
             <dm:person id='p'><show xmlns='jabber:client'>xa</show></dm:person></presence>",
        );
        assert_eq!(e.get_child("show", NS).unwrap().text(), "xa");
        assert_eq!(e.get_child("status", NS).unwrap().text(), "gone fishing");
        assert!(!has(&e, "priority", NS));
    }

    #[test]
    fn rfc7248_5_3_no_tuple_is_unavailable() {
        let e = presence_out_of(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:romeo@example.net'/>",
        );
        assert_eq!(e.attr("type"), Some("unavailable"));
    }

    #[test]
    fn rfc7248_5_presence_round_trip() {
        let stanza = presence(
            "from='romeo@example.net/dr4hcr0st3lup4c' to='juliet@example.com' xml:lang='en'",
            "<show>chat</show><status>hi</status><priority>5</priority>",
        );
        let Event::Presence(p) = one(&stanza).event else {
            panic!()
        };
        let e = out_one(Event::Presence(p.clone()));
        assert_eq!(e.get_child("show", NS).unwrap().text(), "chat");
        assert_eq!(e.get_child("priority", NS).unwrap().text(), "5");
        let Event::Presence(back) = one(&wire(&e)).event else {
            panic!()
        };
        assert_eq!(back, p);
    }

    #[test]
    fn line_ends_and_markup_survive_the_wire() {
        let tricky = " \r\n\t]]> &amp; <x/> \u{10ffff}\r";
        let sent = Message {
            subjects: vec![LangText {
                lang: Some("de-CH".into()),
                text: tricky.into(),
            }],
            thread: Some(tricky.into()),
            ..Message::text(tricky)
        };
        let back = im(&wire(&out_one(Event::Message(sent.clone()))));
        assert_eq!(back.body, sent.body);
        assert_eq!(back.subjects, sent.subjects);
        assert_eq!(back.thread, sent.thread);
    }

    // --- property: text survives outbound → inbound ---------------------------------------

    fn xml_string(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..max)
            .prop_map(|v| v.into_iter().filter(|&c| is_xml_char(c)).collect())
    }

    fn lang_tag() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-z]{2,3}(-[A-Za-z0-9]{2,8})?")
    }

    proptest! {
        #[test]
        fn prop_message_text_survives_outbound_then_inbound(
            body in xml_string(64),
            subject in xml_string(32),
            subject_lang in lang_tag(),
            thread in xml_string(16),
            lang in lang_tag(),
        ) {
            let sent = Message {
                subjects: vec![LangText { lang: subject_lang.clone(), text: subject.clone() }],
                lang: lang.clone(),
                thread: Some(thread.clone()),
                ..Message::text(&body)
            };
            let stanzas = out(Event::Message(sent));
            prop_assert_eq!(stanzas.len(), 1);
            let received = im(&wire(&stanzas[0]));
            prop_assert_eq!(String::from_utf8(received.body).unwrap(), body);
            prop_assert_eq!(received.lang, lang.clone());
            prop_assert_eq!(received.thread, Some(thread).filter(|t| !t.is_empty()));
            // A subject in the message's own language inherits it.
            let expected_lang = subject_lang.filter(|l| Some(l) != lang.as_ref());
            prop_assert_eq!(received.subjects, vec![LangText { lang: expected_lang, text: subject }]);
            prop_assert!(!received.receipts.delivered);
        }

        #[test]
        fn prop_inbound_never_panics(
            body in xml_string(32),
            type_ in proptest::option::of("[a-z]{0,10}"),
            from in "[a-z@./ ]{0,12}",
        ) {
            let type_attr = type_.map(|t| format!("type='{t}'")).unwrap_or_default();
            let mut stanza = Element::bare("message", NS);
            stanza.append_child(Element::builder("body", NS).append(body).build());
            let text = String::from(&stanza).replacen(
                "<message ",
                &format!("<message {type_attr} from='{from}' to='b@y' "),
                1,
            );
            if let Ok(e) = text.parse::<Element>() {
                let _ = inbound(&e, 0);
                let _ = error_reply(&e, &StanzaFault::new(Condition::BadRequest, "x"));
            }
        }
    }
}
