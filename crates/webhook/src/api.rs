//! The JSON types of the inbound API (requests from applications), the problem
//! responses, and the event objects sent to applications.
//!
//! Everything here is pure: requests become [`cpim::event::Event`]s, envelopes become
//! flat JSON event objects. The HTTP side lives in [`crate::server`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use cpim::Condition;

/// `POST /v1/messages`: an instant message from an application user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// The sender, an application user (`im:bot@app.example`).
    pub from: String,
    /// The recipient, any address form (`sip:`, `im:`, `xmpp:`, a JID).
    pub to: String,
    /// Plain text body (`text/plain; charset=utf-8`).
    #[serde(default)]
    pub text: Option<String>,
    /// Media type of a typed body given in `data_base64`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// A typed body, standard base64 with padding.
    #[serde(default)]
    pub data_base64: Option<String>,
    /// Subject line.
    #[serde(default)]
    pub subject: Option<String>,
    /// Language tag of the body and subject.
    #[serde(default)]
    pub lang: Option<String>,
    /// Conversation id (XMPP `<thread/>`).
    #[serde(default)]
    pub conversation: Option<String>,
    /// Ask for delivery notifications (positive and negative).
    #[serde(default)]
    pub receipt: bool,
}

/// `POST /v1/presence`: the presence state of an application user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishPresence {
    /// The presentity, an application user.
    pub from: String,
    /// The state.
    pub status: PresenceStatus,
    /// A free-text note.
    #[serde(default)]
    pub note: Option<String>,
    /// Language of the note.
    #[serde(default)]
    pub lang: Option<String>,
}

/// The availability an application publishes or is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// Online.
    Available,
    /// Temporarily away.
    Away,
    /// Do not disturb.
    Dnd,
    /// Extended away.
    Xa,
    /// Free for chat.
    Chat,
    /// Offline.
    Unavailable,
}

impl PresenceStatus {
    /// The status as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceStatus::Available => "available",
            PresenceStatus::Away => "away",
            PresenceStatus::Dnd => "dnd",
            PresenceStatus::Xa => "xa",
            PresenceStatus::Chat => "chat",
            PresenceStatus::Unavailable => "unavailable",
        }
    }
}

/// `POST`/`DELETE /v1/subscriptions`: an application user (the watcher) starts or stops
/// following someone's presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    /// The watcher, an application user.
    pub watcher: String,
    /// Whose presence to follow.
    pub target: String,
}

/// `POST /v1/subscriptions/authorizations`: an application user (the presentity)
/// approves or refuses a watcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The presentity, an application user.
    pub presentity: String,
    /// The watcher being answered.
    pub watcher: String,
    /// `true` approves, `false` refuses (or revokes).
    pub approve: bool,
}

/// `POST /v1/composing`: a typing indication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Composing {
    /// The application user typing.
    pub from: String,
    /// To whom.
    pub to: String,
    /// `true` while typing, `false` when stopped.
    pub active: bool,
}

/// The answer to an accepted request: `202 {"id": "gw-…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedResponse {
    /// The gateway id of the accepted event.
    pub id: String,
}

/// One request of the API, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `POST /v1/messages`.
    Message(SendMessage),
    /// `POST /v1/presence`.
    Presence(PublishPresence),
    /// `POST /v1/subscriptions`.
    Subscribe(SubscriptionRequest),
    /// `DELETE /v1/subscriptions`.
    Unsubscribe(SubscriptionRequest),
    /// `POST /v1/subscriptions/authorizations`.
    Authorize(Authorization),
    /// `POST /v1/composing`.
    Composing(Composing),
}

/// An RFC 9457 problem response (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The HTTP status.
    pub status: u16,
    /// The condition in the gateway's shared vocabulary.
    pub condition: Condition,
    /// Human-readable detail.
    pub detail: String,
    /// Sent as `Retry-After` (429, 503).
    pub retry_after: Option<Duration>,
}

impl Problem {
    /// A problem whose status is [`Condition::to_http_status`], except
    /// `resource-constraint`, which is `429 Too Many Requests` on this API.
    pub fn new(condition: Condition, detail: impl Into<String>) -> Self {
        let status = match condition {
            Condition::ResourceConstraint => 429,
            c => c.to_http_status(),
        };
        Problem {
            status,
            condition,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// The same problem with an explicit HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The same problem with a `Retry-After`.
    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    /// The `application/problem+json` body.
    pub fn body(&self, title: &str) -> Value {
        json!({
            "type": format!("urn:cpim-gateway:problem:{}", self.condition.as_str()),
            "title": title,
            "status": self.status,
            "detail": self.detail,
            "condition": self.condition.as_str(),
        })
    }

    /// `Retry-After` in whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
            .map(|s| s.max(1))
    }
}
