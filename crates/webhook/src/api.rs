//! The JSON types of the inbound API (requests from applications), the problem
//! responses, and the event objects sent to applications.
//!
//! Everything here is pure: requests become [`cpim::event::Event`]s, envelopes become
//! flat JSON event objects. The HTTP side lives in [`crate::server`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use cpim::event::{
    Composing as ComposingEvent, Event, LangText, Message, Notification, NotificationStatus,
    PresenceUpdate, Receipts, Subscription as SubscriptionEvent, SubscriptionOp,
};
use cpim::iscomposing::ComposingState;
use cpim::presence::{Basic, Note, Presence, Show, Status, Tuple};
use cpim::{Address, Condition};
use cpim_broker::Envelope;

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

    /// The status a PIDF document shows: the first tuple's basic status and `<show/>`.
    pub fn of(presence: &Presence) -> PresenceStatus {
        let status = presence.tuples.first().map(|t| &t.status);
        match status {
            Some(Status {
                basic: Some(Basic::Closed),
                ..
            }) => PresenceStatus::Unavailable,
            Some(Status { show: Some(s), .. }) => match s {
                Show::Away => PresenceStatus::Away,
                Show::Chat => PresenceStatus::Chat,
                Show::Dnd => PresenceStatus::Dnd,
                Show::Xa => PresenceStatus::Xa,
            },
            Some(_) => PresenceStatus::Available,
            None => match presence.persons.iter().find_map(|p| p.show) {
                Some(Show::Away) => PresenceStatus::Away,
                Some(Show::Chat) => PresenceStatus::Chat,
                Some(Show::Dnd) => PresenceStatus::Dnd,
                Some(Show::Xa) => PresenceStatus::Xa,
                None => PresenceStatus::Unavailable,
            },
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

/// An event for the broker, built from a request: who sends it, to whom, what.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The sender (an application user).
    pub from: Address,
    /// The recipient.
    pub to: Address,
    /// What happens.
    pub event: Event,
}

impl Request {
    /// The address the request is sent as (must be in the application's domains).
    pub fn sender(&self) -> &str {
        match self {
            Request::Message(m) => &m.from,
            Request::Presence(p) => &p.from,
            Request::Subscribe(s) | Request::Unsubscribe(s) => &s.watcher,
            Request::Authorize(a) => &a.presentity,
            Request::Composing(c) => &c.from,
        }
    }

    /// Turns the request into a broker submission; a request that cannot be one is a
    /// `400` problem.
    pub fn to_submission(&self) -> Result<Submission, Problem> {
        let addr = |field: &str, text: &str| {
            Address::parse(text).map_err(|e| {
                Problem::new(
                    Condition::JidMalformed,
                    format!("`{field}` is not an address: {e}"),
                )
            })
        };
        let bad = |detail: &str| Problem::new(Condition::BadRequest, detail.to_owned());
        Ok(match self {
            Request::Message(m) => {
                let (content_type, body) = match (&m.text, &m.content_type, &m.data_base64) {
                    (Some(text), None, None) => (
                        "text/plain; charset=utf-8".to_owned(),
                        text.as_bytes().to_vec(),
                    ),
                    (None, Some(ct), Some(data)) => {
                        let body = cpim::base64_decode(data)
                            .ok_or_else(|| bad("`data_base64` is not valid base64"))?;
                        if ct.trim().is_empty() {
                            return Err(bad("`content_type` is empty"));
                        }
                        (ct.clone(), body)
                    }
                    _ => {
                        return Err(bad(
                            "give either `text`, or both `content_type` and `data_base64`",
                        ))
                    }
                };
                let message = Message {
                    content_type,
                    body,
                    subjects: m
                        .subject
                        .iter()
                        .map(|s| LangText {
                            lang: m.lang.clone(),
                            text: s.clone(),
                        })
                        .collect(),
                    lang: m.lang.clone(),
                    thread: m.conversation.clone(),
                    cpim: None,
                    receipts: Receipts {
                        delivered: m.receipt,
                        failed: m.receipt,
                        displayed: false,
                    },
                };
                Submission {
                    from: addr("from", &m.from)?,
                    to: addr("to", &m.to)?,
                    event: Event::Message(message),
                }
            }
            Request::Presence(p) => {
                let from = addr("from", &p.from)?;
                Submission {
                    to: from.clone(),
                    event: Event::Presence(PresenceUpdate {
                        presence: pidf(&from, p),
                    }),
                    from,
                }
            }
            Request::Subscribe(s) | Request::Unsubscribe(s) => {
                let op = if matches!(self, Request::Subscribe(_)) {
                    SubscriptionOp::Subscribe
                } else {
                    SubscriptionOp::Unsubscribe
                };
                Submission {
                    from: addr("watcher", &s.watcher)?,
                    to: addr("target", &s.target)?,
                    event: Event::Subscription(SubscriptionEvent::new(op)),
                }
            }
            Request::Authorize(a) => Submission {
                from: addr("presentity", &a.presentity)?,
                to: addr("watcher", &a.watcher)?,
                event: Event::Subscription(SubscriptionEvent::new(if a.approve {
                    SubscriptionOp::Approve
                } else {
                    SubscriptionOp::Deny
                })),
            },
            Request::Composing(c) => Submission {
                from: addr("from", &c.from)?,
                to: addr("to", &c.to)?,
                event: Event::Composing(ComposingEvent {
                    state: if c.active {
                        ComposingState::Active
                    } else {
                        ComposingState::Idle
                    },
                    refresh_secs: None,
                }),
            },
        })
    }
}

/// The PIDF document of a published status (RFC 3863, with the RFC 7248 `<show/>`).
fn pidf(from: &Address, p: &PublishPresence) -> Presence {
    let (basic, show) = match p.status {
        PresenceStatus::Available => (Basic::Open, None),
        PresenceStatus::Away => (Basic::Open, Some(Show::Away)),
        PresenceStatus::Dnd => (Basic::Open, Some(Show::Dnd)),
        PresenceStatus::Xa => (Basic::Open, Some(Show::Xa)),
        PresenceStatus::Chat => (Basic::Open, Some(Show::Chat)),
        PresenceStatus::Unavailable => (Basic::Closed, None),
    };
    let entity = match from {
        Address::Im(u) => u.with_scheme(cpim::ImScheme::Pres).to_string(),
        other => other.to_string(),
    };
    let notes = p
        .note
        .iter()
        .map(|text| Note {
            lang: p.lang.clone(),
            text: text.clone(),
        })
        .collect();
    Presence::one_tuple(
        entity,
        Tuple {
            notes,
            ..Tuple::new("webhook", basic, show)
        },
    )
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

/// How an application reads every address: an `im:` URI (RFC 3860). An address the
/// app itself wrote another way (a failure notification names the recipient as the app
/// wrote it, `sip:` perhaps) is rewritten; one without a user part is left as it is.
fn im_form(address: &Address) -> String {
    if let Address::Im(_) = address {
        return address.to_string();
    }
    match address.identity() {
        Ok(Some((local, domain))) => cpim_broker::AddressStyle::Im
            .render(&local, &domain, None)
            .map_or_else(|_| address.to_string(), |a| a.to_string()),
        _ => address.to_string(),
    }
}

/// The event object an application receives (SSE `data:` and outbound POST body) for
/// one envelope: `{"id", "type", "from", "to", …flat fields}`.
pub fn event_json(envelope: &Envelope) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), envelope.id.to_string().into());
    o.insert("type".into(), envelope.event.kind().into());
    o.insert("from".into(), im_form(&envelope.from).into());
    o.insert("to".into(), im_form(&envelope.to).into());
    if envelope.received_at_ms > 0 {
        o.insert("received_at_ms".into(), envelope.received_at_ms.into());
    }
    let mut put = |k: &str, v: Value| {
        o.insert(k.to_owned(), v);
    };
    match &envelope.event {
        Event::Message(m) => {
            let is_text = m.content_type.to_ascii_lowercase().starts_with("text/");
            match std::str::from_utf8(&m.body) {
                Ok(text) if is_text => put("text", text.into()),
                _ => put("data_base64", cpim::base64_encode(&m.body).into()),
            }
            put("content_type", m.content_type.clone().into());
            if let Some(s) = m.subjects.first() {
                put("subject", s.text.clone().into());
            }
            if let Some(lang) = &m.lang {
                put("lang", lang.clone().into());
            }
            if let Some(t) = &m.thread {
                put("conversation", t.clone().into());
            }
            if m.receipts.delivered || m.receipts.displayed {
                put("receipt", true.into());
            }
        }
        Event::Presence(p) => {
            put("status", PresenceStatus::of(&p.presence).as_str().into());
            let note = p
                .presence
                .tuples
                .iter()
                .flat_map(|t| t.notes.iter())
                .chain(p.presence.notes.iter())
                .chain(p.presence.persons.iter().flat_map(|p| p.notes.iter()))
                .next();
            if let Some(n) = note {
                put("note", n.text.clone().into());
                if let Some(lang) = &n.lang {
                    put("lang", lang.clone().into());
                }
            }
        }
        Event::Subscription(s) => {
            let op = match s.op {
                SubscriptionOp::Subscribe => "subscribe",
                SubscriptionOp::Approve => "approve",
                SubscriptionOp::Deny => "deny",
                SubscriptionOp::Unsubscribe => "unsubscribe",
                SubscriptionOp::Probe => "probe",
            };
            put("op", op.into());
            if let Some(e) = s.expires_secs {
                put("expires_secs", e.into());
            }
            if let Some(r) = &s.reason {
                put("reason", r.clone().into());
            }
        }
        Event::Notification(Notification { message_id, status }) => {
            put("message_id", message_id.clone().into());
            let status = match status {
                NotificationStatus::Delivered => "delivered",
                NotificationStatus::Displayed => "displayed",
                NotificationStatus::Stored => "stored",
                NotificationStatus::Failed { condition, text } => {
                    put("condition", condition.as_str().into());
                    if let Some(t) = text {
                        put("text", t.clone().into());
                    }
                    "failed"
                }
            };
            put("status", status.into());
        }
        Event::Composing(c) => {
            put("active", (c.state == ComposingState::Active).into());
            if let Some(r) = c.refresh_secs {
                put("refresh_secs", r.into());
            }
        }
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn message(json: &str) -> Result<Submission, Problem> {
        Request::Message(serde_json::from_str(json).unwrap()).to_submission()
    }

    #[test]
    fn every_address_reaches_the_app_as_an_im_uri() {
        for (written, read) in [
            ("sip:alice@sip.test;gr=x", "im:alice@sip.test"),
            ("xmpp:nobody@xmpp.test/r", "im:nobody@xmpp.test"),
            ("im:bot@app.test", "im:bot@app.test"),
            ("sip:sip.test", "sip:sip.test"),
        ] {
            assert_eq!(im_form(&Address::parse(written).unwrap()), read);
        }
    }

    #[test]
    fn text_message_becomes_plain_text() {
        let s = message(
            r#"{"from":"im:bot@app.test","to":"sip:alice@sip.test","text":"hi",
                "subject":"s","conversation":"c1","receipt":true}"#,
        )
        .unwrap();
        let Event::Message(m) = s.event else {
            panic!("not a message")
        };
        assert_eq!(m.body, b"hi");
        assert_eq!(m.thread.as_deref(), Some("c1"));
        assert_eq!(m.subjects[0].text, "s");
        assert!(m.receipts.delivered);
        assert_eq!(s.to.to_string(), "sip:alice@sip.test");
    }

    #[test]
    fn typed_body_and_bad_combinations() {
        let s = message(
            r#"{"from":"im:bot@app.test","to":"bob@x.test","content_type":"image/png","data_base64":"AAE="}"#,
        )
        .unwrap();
        let Event::Message(m) = s.event else {
            panic!("not a message")
        };
        assert_eq!((m.content_type.as_str(), m.body), ("image/png", vec![0, 1]));
        for bad in [
            r#"{"from":"im:bot@app.test","to":"bob@x.test"}"#,
            r#"{"from":"im:bot@app.test","to":"bob@x.test","text":"a","data_base64":"AA=="}"#,
            r#"{"from":"im:bot@app.test","to":"bob@x.test","content_type":"a/b","data_base64":"!"}"#,
        ] {
            assert_eq!(message(bad).unwrap_err().status, 400, "{bad}");
        }
        let e = message(r#"{"from":"im:bot@app.test","to":"foo:bar","text":"a"}"#).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn presence_status_round_trips_through_pidf() {
        for status in [
            PresenceStatus::Available,
            PresenceStatus::Away,
            PresenceStatus::Dnd,
            PresenceStatus::Xa,
            PresenceStatus::Chat,
            PresenceStatus::Unavailable,
        ] {
            let p = PublishPresence {
                from: "im:bot@app.test".into(),
                status,
                note: Some("n".into()),
                lang: None,
            };
            let s = Request::Presence(p).to_submission().unwrap();
            let Event::Presence(u) = s.event else {
                panic!("not presence")
            };
            assert_eq!(u.presence.entity, "pres:bot@app.test");
            assert_eq!(PresenceStatus::of(&u.presence), status);
        }
    }

    #[test]
    fn problem_statuses() {
        let p = Problem::new(Condition::ResourceConstraint, "busy")
            .with_retry_after(Some(Duration::from_millis(1500)));
        assert_eq!((p.status, p.retry_after_secs()), (429, Some(2)));
        assert_eq!(Problem::new(Condition::ItemNotFound, "").status, 404);
        assert_eq!(Problem::new(Condition::NotAuthorized, "").status, 401);
        let body = Problem::new(Condition::Forbidden, "no").body("Forbidden");
        assert_eq!(body["condition"], "forbidden");
        assert_eq!(body["status"], 403);
    }
}
