//! What travels through the broker: [`Inbound`] from an adapter, [`Envelope`] to one.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use cpim::event::Event;
use cpim::{Address, Condition};

use crate::identity::Identity;

/// An adapter's name as configured (`[adapters.NAME]`).
pub type AdapterName = Arc<str>;

/// The gateway's id of one accepted event, unique across restarts (the high bits come
/// from the start time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gw-{:016x}", self.0)
    }
}

impl MessageId {
    /// Parses the `gw-…` form written by [`fmt::Display`].
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("gw-")?;
        (hex.len() == 16)
            .then(|| u64::from_str_radix(hex, 16).ok())
            .flatten()
            .map(MessageId)
    }
}

/// A protocol's own id for what an adapter received (SIP Call-ID, XMPP stanza id, an
/// HTTP idempotency key), kept to correlate receipts and errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolId {
    /// What the id is, e.g. `sip.call-id`, `xmpp.id`.
    pub kind: String,
    /// The id.
    pub value: String,
}

/// Milliseconds since the Unix epoch by the wall clock (0 if the clock is before 1970):
/// what adapters put in [`Inbound::received_at_ms`], and the seed of time-based ids.
#[allow(clippy::disallowed_methods)] // the wall clock, for drivers only
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An event as an adapter submits it: addresses as written on the adapter's network.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// What happens.
    pub event: Event,
    /// The sender, as the origin network writes it.
    pub from: Address,
    /// The recipient, as the origin network writes it.
    pub to: Address,
    /// The origin protocol's ids of this event.
    pub protocol_ids: Vec<ProtocolId>,
    /// A key that identifies a retransmission of the same event from this adapter (for
    /// duplicate suppression); `None` disables dedup for this event.
    pub dedup_key: Option<String>,
    /// Remaining hops as received (SIP Max-Forwards, a CPIM extension); `None` means the
    /// configured maximum.
    pub hops: Option<u8>,
    /// When the adapter received it, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// How long the sender wants it delivered within (SIP `Expires`); `None`: the
    /// gateway's configured lifetime. The shorter of the two applies.
    pub expires: Option<Duration>,
}

impl Inbound {
    /// An inbound event with no protocol ids, no dedup key and default hops.
    pub fn new(event: Event, from: Address, to: Address) -> Self {
        Inbound {
            event,
            from,
            to,
            protocol_ids: Vec::new(),
            dedup_key: None,
            hops: None,
            received_at_ms: 0,
            expires: None,
        }
    }
}

/// An event on its way to a destination adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The gateway's id of this event.
    pub id: MessageId,
    /// What happens.
    pub event: Event,
    /// The sender, as the destination network writes it.
    pub from: Address,
    /// The recipient, as the destination network writes it.
    pub to: Address,
    /// The sender's identity.
    pub sender: Identity,
    /// The recipient's identity.
    pub recipient: Identity,
    /// The adapter the event came from.
    pub origin: AdapterName,
    /// The adapter that delivers it.
    pub destination: AdapterName,
    /// The sender and recipient as the origin network wrote them (where failures and
    /// receipts go back to).
    pub origin_from: Address,
    /// See `origin_from`.
    pub origin_to: Address,
    /// The origin protocol's ids.
    pub protocol_ids: Vec<ProtocolId>,
    /// Hops left after this relay (RFC 3860 §3.4.2: decremented on relay).
    pub hops: u8,
    /// When the origin adapter received it (ms since the Unix epoch).
    pub received_at_ms: u64,
}

/// What a destination adapter reports for one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The recipient's side confirmed delivery (SIP 200, an XMPP receipt, HTTP 2xx from
    /// the end application).
    Delivered,
    /// Handed on without end-to-end confirmation (SIP 202, written to an XMPP stream).
    Accepted,
    /// Delivered (`confirmed`, as [`DeliveryOutcome::Delivered`]) or handed on (as
    /// [`DeliveryOutcome::Accepted`]) in a form that cannot ask for a display
    /// notification: a text-only phone got the text as it is. A sender that asked for
    /// one is told none will come ([`cpim::event::NotificationStatus::DisplayUnknown`]),
    /// after the delivery receipt.
    WithoutDisplay {
        /// Whether the recipient's side confirmed delivery.
        confirmed: bool,
    },
    /// Failed for good.
    Failed {
        /// Why.
        condition: Condition,
        /// Detail for logs and for the sender.
        text: Option<String>,
    },
    /// Not now; try again after this long (a peer's Retry-After, a disconnected link).
    /// Held at the head of its destination's queue for longer than
    /// [`crate::core::CoreConfig::head_of_line_limit`] while others wait behind it, it
    /// fails so that they can go.
    RetryLater {
        /// How long to wait.
        after: Duration,
    },
    /// The recipient can take nothing now (an unregistered user of the gateway's
    /// registrar): try again after this long. Unlike [`DeliveryOutcome::RetryLater`] it
    /// is not failed for holding the queue, since what waits behind it could not be
    /// delivered either; it waits until it expires or uses up its attempts.
    Waiting {
        /// How long to wait.
        after: Duration,
    },
}

/// The broker took an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Its gateway id.
    pub id: MessageId,
    /// `true` when this was a repeat of an event already accepted (same dedup key
    /// within the window): the first id is returned and nothing is delivered twice.
    pub duplicate: bool,
}

/// The broker refused an event; the adapter answers its peer in its own protocol
/// (SIP status, XMPP stanza error, HTTP problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{condition}: {text}")]
pub struct Rejected {
    /// Why, in the shared vocabulary.
    pub condition: Condition,
    /// Detail for the peer and the logs.
    pub text: String,
    /// For back-pressure: when the peer may try again (SIP/HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Rejected {
    /// A refusal without a retry hint.
    pub fn new(condition: Condition, text: impl Into<String>) -> Self {
        Rejected {
            condition,
            text: text.into(),
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn message_id_text_round_trip() {
        let id = MessageId(0x0123_4567_89ab_cdef);
        assert_eq!(id.to_string(), "gw-0123456789abcdef");
        assert_eq!(MessageId::parse(&id.to_string()), Some(id));
        assert_eq!(MessageId::parse("gw-12"), None);
        assert_eq!(MessageId::parse("xx-0123456789abcdef"), None);
    }
}
