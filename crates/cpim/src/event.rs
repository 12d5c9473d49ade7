//! The events that travel between networks: what adapters produce from their wire
//! protocols and consume to write them again.
//!
//! An [`Event`] says *what* happens (a message, a presence change, a subscription
//! operation, a delivery notification, a composing indication); *who* sends it to whom
//! travels beside it, in the broker's envelope. Everything here is plain data: pure,
//! cloneable, serializable for the webhook and the spool.

use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::iscomposing::ComposingState;
use crate::presence::Presence;

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// An instant message (RFC 3860 §3.4 `message` operation).
    Message(Message),
    /// A presence state of the sender (RFC 3859 §3.4 `notify` content).
    Presence(PresenceUpdate),
    /// A subscription operation from a watcher, or an answer from a presentity.
    Subscription(Subscription),
    /// A delivery, display or processing notification about an earlier message.
    Notification(Notification),
    /// The sender is or stopped composing (RFC 3994, XEP-0085).
    Composing(Composing),
}

impl Event {
    /// A short name of the event's kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Message(_) => "message",
            Event::Presence(_) => "presence",
            Event::Subscription(_) => "subscription",
            Event::Notification(_) => "notification",
            Event::Composing(_) => "composing",
        }
    }

    /// Approximate size in bytes, for limits and queue accounting.
    pub fn size_hint(&self) -> usize {
        match self {
            Event::Message(m) => m.body.len() + m.cpim.as_ref().map_or(0, Vec::len) + 64,
            _ => 256,
        }
    }
}

/// What a message carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Media type of `body` (`text/plain; charset=utf-8` for plain text).
    pub content_type: String,
    /// The body bytes.
    #[serde(with = "bytes_as_text")]
    pub body: Vec<u8>,
    /// Subject lines with their language (RFC 3862 §4.5, XMPP `<subject/>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<LangText>,
    /// Language of the body (`xml:lang`, SIP `Content-Language`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// Conversation id (XMPP `<thread/>`, SIP Call-ID per RFC 7572).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// A received `message/cpim` body, carried byte-for-byte (RFC 3862 §6).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_bytes_as_text"
    )]
    pub cpim: Option<Vec<u8>>,
    /// Which notifications the sender asked for (RFC 5438 §6.2, XEP-0184, XEP-0333).
    #[serde(default, skip_serializing_if = "Receipts::is_none")]
    pub receipts: Receipts,
}

impl Message {
    /// A plain-text message.
    pub fn text(text: &str) -> Self {
        Message {
            content_type: "text/plain; charset=utf-8".to_owned(),
            body: text.as_bytes().to_vec(),
            ..Message::default()
        }
    }
}

/// Text with an optional language tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LangText {
    /// Language tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// The text.
    pub text: String,
}

/// Notifications a sender asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipts {
    /// Positive delivery notification.
    #[serde(default)]
    pub delivered: bool,
    /// Negative delivery notification (failure reports).
    #[serde(default)]
    pub failed: bool,
    /// Display notification.
    #[serde(default)]
    pub displayed: bool,
}

impl Receipts {
    fn is_none(&self) -> bool {
        !self.any()
    }

    /// Whether the sender asked for any notification.
    pub fn any(&self) -> bool {
        self.delivered || self.failed || self.displayed
    }
}

/// A presence state published by the sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceUpdate {
    /// The state as PIDF.
    pub presence: Presence,
}

/// A subscription operation (RFC 3859 §3.2/§3.3, RFC 6121 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionOp {
    /// The sender (watcher) asks to follow the recipient's presence.
    Subscribe,
    /// The sender (presentity) allows the recipient to follow it.
    Approve,
    /// The sender (presentity) refuses or revokes the recipient's subscription.
    Deny,
    /// The sender (watcher) stops following the recipient.
    Unsubscribe,
    /// The sender asks once for the recipient's current presence (RFC 3859 §3.1 fetch).
    Probe,
}

/// A subscription operation with its requested duration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The operation.
    pub op: SubscriptionOp,
    /// Requested duration in seconds (SIP `Expires`); `None` is "until cancelled".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_secs: Option<u32>,
    /// `true` for the gateway's one shared subscription to a presentity on behalf of
    /// all its watchers on other networks (RFC 7248 §4: the gateway owns it); `false`
    /// for one watcher's own request, which the presentity approves or denies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub aggregate: bool,
    /// Why a subscription ended (an RFC 6665 §4.2.2 reason: `deactivated`,
    /// `probation`, `rejected`, `timeout`, `giveup`, `noresource`, `invariant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Subscription {
    /// A watcher's own operation without expiry or reason.
    pub fn new(op: SubscriptionOp) -> Self {
        Subscription {
            op,
            expires_secs: None,
            aggregate: false,
            reason: None,
        }
    }
}

/// What happened to an earlier message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The gateway message id of the message this is about.
    pub message_id: String,
    /// The status.
    pub status: NotificationStatus,
}

/// The status a notification reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum NotificationStatus {
    /// Delivered to the recipient (RFC 5438 `delivered`, XEP-0184 `<received/>`).
    Delivered,
    /// Displayed to the recipient (RFC 5438 `displayed`, XEP-0333 `<displayed/>`).
    Displayed,
    /// Accepted by an intermediary for later delivery (RFC 5438 `stored`).
    Stored,
    /// No display notification will come: the recipient's client cannot send one (a
    /// text-only phone got the text without the request) or declines to (RFC 5438
    /// display `error` / `forbidden`). The message itself was not failed.
    DisplayUnknown,
    /// Delivery failed (RFC 5438 `failed`/`forbidden`/`error`, an XMPP error, a SIP
    /// final failure), with the condition.
    Failed {
        /// Why, in the shared vocabulary.
        condition: Condition,
        /// Human-readable detail.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
}

/// A composing indication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Composing {
    /// Active or idle.
    pub state: ComposingState,
    /// Seconds until the sender refreshes an active state (RFC 3994 §3.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_secs: Option<u32>,
}

/// Bodies are text when they are UTF-8 and `base64:`-prefixed otherwise, so that JSON
/// stays readable for the common case and lossless for the rest.
mod bytes_as_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::decode(&text).map_err(serde::de::Error::custom)
    }
}

mod opt_bytes_as_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&super::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| super::decode(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

const BASE64_PREFIX: &str = "base64:";

fn encode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.starts_with(BASE64_PREFIX) => text.to_owned(),
        _ => format!("{BASE64_PREFIX}{}", crate::base64_encode(bytes)),
    }
}

fn decode(text: &str) -> Result<Vec<u8>, &'static str> {
    match text.strip_prefix(BASE64_PREFIX) {
        Some(b64) => crate::base64_decode(b64).ok_or("invalid base64 body"),
        None => Ok(text.as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_round_trip_of_each_kind() {
        let events = [
            Event::Message(Message {
                subjects: vec![LangText {
                    lang: Some("fr".into()),
                    text: "salut".into(),
                }],
                thread: Some("t1".into()),
                receipts: Receipts {
                    delivered: true,
                    failed: true,
                    displayed: false,
                },
                ..Message::text("hello")
            }),
            Event::Subscription(Subscription {
                expires_secs: Some(3600),
                ..Subscription::new(SubscriptionOp::Subscribe)
            }),
            Event::Subscription(Subscription {
                aggregate: true,
                reason: Some("probation".into()),
                ..Subscription::new(SubscriptionOp::Deny)
            }),
            Event::Notification(Notification {
                message_id: "m1".into(),
                status: NotificationStatus::Failed {
                    condition: Condition::ItemNotFound,
                    text: None,
                },
            }),
            Event::Composing(Composing {
                state: ComposingState::Active,
                refresh_secs: Some(60),
            }),
        ];
        for e in events {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e, "{json}");
        }
        let json = serde_json::to_value(Event::Message(Message::text("hi"))).unwrap();
        assert_eq!(json["kind"], "message");
        assert_eq!(json["body"], "hi");
    }

    proptest! {
        #[test]
        fn prop_any_body_survives_json(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let m = Event::Message(Message { body, cpim: Some(vec![0xff, 0]), ..Message::default() });
            let json = serde_json::to_string(&m).unwrap();
            prop_assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), m);
        }
    }
}
