//! What an envelope for the SIP side means, decided without I/O (RFC 3856, RFC 6665,
//! RFC 7248): the driver acts on the [`Outbound`] it gets and decides nothing itself.
//! Pure: no sockets, no clock.

use cpim::event::{Event, SubscriptionOp};
use cpim_broker::envelope::Envelope;

use crate::translate::{self, aor_key};

/// What the SIP side does with an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A MESSAGE to the recipient: text, CPIM, an IMDN or an is-composing indication
    /// (RFC 3428, RFC 5438, RFC 3994).
    Message,
    /// A NOTIFY to the SIP watchers of the sender's presence with this PIDF document
    /// (RFC 3856 §6.8), written for SIP phones ([`translate::pidf_for_watcher`]).
    Notify {
        /// The document.
        pidf: Vec<u8>,
    },
    /// The first watcher on another network of a SIP presentity: the gateway subscribes
    /// to it upstream (RFC 7248 §4, one subscription for all of them).
    SubscribeUpstream,
    /// The last such watcher left: the gateway ends its upstream subscription.
    UnsubscribeUpstream,
    /// A watcher on another network asks to see a SIP user's presence: the user's
    /// authorization (the policy, or the upstream subscription's state) decides.
    Authorize,
    /// That watcher withdrew its request.
    Withdraw,
    /// The presentity's network approved the SIP watcher: its dialogs become `active`.
    Activate,
    /// The presentity's network refused or ended the SIP watcher's subscription: its
    /// dialogs end with this `reason` (RFC 6665 §4.2.2, `rejected` for a refusal).
    Terminate {
        /// The Subscription-State reason.
        reason: String,
    },
    /// Nothing to send: a probe (the SIP side answers from the state its NOTIFYs keep).
    Nothing,
}

/// What `envelope` means for the SIP side.
pub fn outbound(envelope: &Envelope) -> Outbound {
    match &envelope.event {
        Event::Message(_) | Event::Composing(_) | Event::Notification(_) => Outbound::Message,
        Event::Presence(p) => Outbound::Notify {
            pidf: translate::pidf_for_watcher(&p.presence, aor_key(&envelope.from)),
        },
        Event::Subscription(s) => match (s.op, s.aggregate) {
            (SubscriptionOp::Subscribe, true) => Outbound::SubscribeUpstream,
            (SubscriptionOp::Unsubscribe, true) => Outbound::UnsubscribeUpstream,
            (SubscriptionOp::Subscribe, false) => Outbound::Authorize,
            (SubscriptionOp::Unsubscribe, false) => Outbound::Withdraw,
            (SubscriptionOp::Approve, _) => Outbound::Activate,
            (SubscriptionOp::Deny, _) => Outbound::Terminate {
                reason: s.reason.clone().unwrap_or_else(|| "rejected".to_owned()),
            },
            (SubscriptionOp::Probe, _) => Outbound::Nothing,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cpim::event::{
        Composing, Message, Notification, NotificationStatus, PresenceUpdate, Subscription,
    };
    use cpim::iscomposing::ComposingState;

    use crate::translate::tests::envelope;

    fn subscription(op: SubscriptionOp, aggregate: bool, reason: Option<&str>) -> Event {
        Event::Subscription(Subscription {
            op,
            aggregate,
            reason: reason.map(str::to_owned),
            ..Subscription::new(op)
        })
    }

    #[test]
    fn messages_receipts_and_chat_states_are_messages() {
        for event in [
            Event::Message(Message::text("hi")),
            Event::Composing(Composing {
                state: ComposingState::Active,
                refresh_secs: None,
            }),
            Event::Notification(Notification {
                message_id: "gw-1".into(),
                status: NotificationStatus::Delivered,
            }),
        ] {
            assert_eq!(outbound(&envelope(event)), Outbound::Message);
        }
    }

    #[test]
    fn rfc3856_presence_is_a_notify_of_the_senders_state_written_for_phones() {
        let pidf = cpim::presence::Presence::parse(
            b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:juliet@xmpp.test'>\
              <tuple id='a'><status><basic>open</basic></status></tuple></presence>",
        )
        .unwrap();
        let Outbound::Notify { pidf } = outbound(&envelope(Event::Presence(PresenceUpdate {
            presence: pidf,
        }))) else {
            panic!("a notify")
        };
        let text = String::from_utf8(pidf).unwrap();
        assert!(text.contains("entity=\"sip:juliet@gw.test\""), "{text}");
        assert!(text.contains("<basic>open</basic>"), "{text}");
    }

    #[test]
    fn rfc7248_subscriptions_by_operation_and_scope() {
        use SubscriptionOp::*;
        for (op, aggregate, reason, want) in [
            (Subscribe, true, None, Outbound::SubscribeUpstream),
            (Unsubscribe, true, None, Outbound::UnsubscribeUpstream),
            (Subscribe, false, None, Outbound::Authorize),
            (Unsubscribe, false, None, Outbound::Withdraw),
            (Approve, false, None, Outbound::Activate),
            (
                Deny,
                false,
                None,
                Outbound::Terminate {
                    reason: "rejected".into(),
                },
            ),
            (
                Deny,
                false,
                Some("noresource"),
                Outbound::Terminate {
                    reason: "noresource".into(),
                },
            ),
            (Probe, false, None, Outbound::Nothing),
        ] {
            let got = outbound(&envelope(subscription(op, aggregate, reason)));
            assert_eq!(got, want, "{op:?} aggregate={aggregate}");
        }
    }
}
