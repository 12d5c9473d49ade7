//! Webhook requests ⇄ broker events: the pure half of the webhook adapter. A parsed API
//! request ([`Request`]) becomes a broker [`Submission`]; an [`Envelope`] becomes the
//! event object an application receives ([`event_json`]). No I/O, no clock.

use serde_json::{Map, Value};

use cpim::event::{
    Composing as ComposingEvent, Event, LangText, Message, Notification, NotificationStatus,
    PresenceUpdate, Receipts, Subscription as SubscriptionEvent, SubscriptionOp,
};
use cpim::iscomposing::ComposingState;
use cpim::presence::{Basic, Note, Presence, Show, Status, Tuple};
use cpim::{Address, Condition};
use cpim_broker::Envelope;

use crate::api::{PresenceStatus, Problem, PublishPresence, Request};

impl PresenceStatus {
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
                NotificationStatus::DisplayUnknown => "display_unknown",
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
    use crate::api::*;
    use std::time::Duration;

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
