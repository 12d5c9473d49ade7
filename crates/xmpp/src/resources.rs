//! One presence document per XMPP contact, composed from the presence of each of its
//! resources (RFC 3863 tuples, RFC 4479 §3.4 composition; RFC 7248 §5.2: one tuple per
//! resource).
//!
//! An XMPP server sends one `<presence/>` per resource of a contact, and each becomes a
//! one-tuple PIDF document. Passed on alone, the last one would replace the contact's
//! whole state: a user with a phone and a laptop would show offline when the laptop goes
//! away. [`Resources`] keeps the open resources of every (recipient, contact) pair and
//! turns each update into the contact's full document: every open resource as a tuple,
//! the one that speaks for the contact first (phones read the first tuple), or the
//! closed state once none is left. Pure state: no clock, no sockets.

use std::collections::HashMap;

use cpim::presence::{Basic, Presence, Tuple};

/// The id of the tuple of a presence from the bare JID (no resource): its
/// `unavailable` ends every resource.
pub const BARE_TUPLE_ID: &str = "ID";

/// Open resources kept per contact; beyond it the oldest is forgotten.
pub const MAX_RESOURCES: usize = 16;

/// The open resources of contacts, per recipient.
#[derive(Debug)]
pub struct Resources {
    max_contacts: usize,
    contacts: HashMap<(String, String), Vec<Tuple>>,
}

impl Resources {
    /// Keeps at most `max_contacts` (recipient, contact) pairs; when full, the memory
    /// starts again (the next update of each contact rebuilds its entry).
    pub fn new(max_contacts: usize) -> Self {
        Resources {
            max_contacts,
            contacts: HashMap::new(),
        }
    }

    /// How many (recipient, contact) pairs have open resources.
    pub fn len(&self) -> usize {
        self.contacts.len()
    }

    /// `true` when none has.
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
    }

    /// The contact's whole state after `update` (the presence of one of its resources,
    /// sent to `recipient`).
    pub fn compose(&mut self, recipient: &str, update: Presence) -> Presence {
        let key = (
            recipient.to_ascii_lowercase(),
            update.entity.to_ascii_lowercase(),
        );
        if !self.contacts.contains_key(&key) && self.contacts.len() >= self.max_contacts {
            self.contacts.clear();
        }
        let open = self.contacts.entry(key.clone()).or_default();
        for tuple in &update.tuples {
            open.retain(|t| t.id != tuple.id);
            if tuple.status.basic == Some(Basic::Closed) {
                if tuple.id == BARE_TUPLE_ID {
                    open.clear();
                }
            } else {
                open.push(tuple.clone());
                if open.len() > MAX_RESOURCES {
                    open.remove(0);
                }
            }
        }
        if open.is_empty() {
            self.contacts.remove(&key);
            return update;
        }
        let mut tuples = open.clone();
        // The preferred tuple first, then by priority; equal ones by resource.
        tuples.sort_by(|a, b| rank(b).cmp(&rank(a)).then_with(|| a.id.cmp(&b.id)));
        Presence {
            entity: update.entity,
            tuples,
            notes: update.notes,
            persons: update.persons,
            devices: update.devices,
            extensions: update.extensions,
        }
    }
}

/// What [`Presence::preferred_tuple`] ranks by: the contact priority, none below 0.
fn rank(t: &Tuple) -> i32 {
    t.contact
        .as_ref()
        .and_then(|c| c.priority.as_ref())
        .map_or(-1, |p| i32::from(p.thousandths()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpim::presence::{Contact, Priority, Show, Status};

    fn one(resource: &str, basic: Basic, show: Option<Show>, priority: Option<u16>) -> Presence {
        Presence {
            entity: "pres:bob@xmpp.test".into(),
            tuples: vec![Tuple {
                id: if resource.is_empty() {
                    BARE_TUPLE_ID.to_owned()
                } else {
                    format!("ID-{resource}")
                },
                status: Status {
                    basic: Some(basic),
                    show,
                    extensions: Vec::new(),
                },
                device_ids: Vec::new(),
                user_input: None,
                contact: Some(Contact {
                    uri: format!("xmpp:bob@xmpp.test/{resource}"),
                    priority: priority.and_then(Priority::from_thousandths),
                }),
                notes: Vec::new(),
                timestamp: None,
                extensions: Vec::new(),
            }],
            notes: Vec::new(),
            persons: Vec::new(),
            devices: Vec::new(),
            extensions: Vec::new(),
        }
    }

    type Row = (&'static str, Basic, Option<Show>);

    fn summary(p: &Presence) -> Vec<(String, Option<Basic>, Option<Show>)> {
        p.tuples
            .iter()
            .map(|t| (t.id.clone(), t.status.basic, t.status.show))
            .collect()
    }

    #[test]
    fn rfc4479_a_contact_on_two_devices_stays_online_while_one_is() {
        let mut r = Resources::new(100);
        let to = "alice@sip.gw.test";
        // (update, composed: tuple id, basic, show — in order)
        let steps: Vec<(Presence, Vec<Row>)> = vec![
            (
                one("phone", Basic::Open, None, None),
                vec![("ID-phone", Basic::Open, None)],
            ),
            (
                one("laptop", Basic::Open, Some(Show::Dnd), Some(500)),
                vec![
                    ("ID-laptop", Basic::Open, Some(Show::Dnd)),
                    ("ID-phone", Basic::Open, None),
                ],
            ),
            // The phone changes: the laptop, with its priority, still comes first.
            (
                one("phone", Basic::Open, Some(Show::Away), None),
                vec![
                    ("ID-laptop", Basic::Open, Some(Show::Dnd)),
                    ("ID-phone", Basic::Open, Some(Show::Away)),
                ],
            ),
            // The laptop goes away: bob is still online on the phone.
            (
                one("laptop", Basic::Closed, None, None),
                vec![("ID-phone", Basic::Open, Some(Show::Away))],
            ),
            // The phone goes too: closed.
            (
                one("phone", Basic::Closed, None, None),
                vec![("ID-phone", Basic::Closed, None)],
            ),
        ];
        for (i, (update, want)) in steps.into_iter().enumerate() {
            let got = r.compose(to, update);
            let want: Vec<(String, Option<Basic>, Option<Show>)> = want
                .into_iter()
                .map(|(id, b, s)| (id.to_owned(), Some(b), s))
                .collect();
            assert_eq!(summary(&got), want, "step {i}");
        }
        assert!(r.is_empty(), "nothing kept for an offline contact");
    }

    #[test]
    fn rfc6121_4_5_unavailable_from_the_bare_jid_ends_every_resource() {
        let mut r = Resources::new(100);
        r.compose("a@gw", one("phone", Basic::Open, None, None));
        r.compose("a@gw", one("laptop", Basic::Open, None, None));
        let got = r.compose("a@gw", one("", Basic::Closed, None, None));
        assert_eq!(
            summary(&got),
            [(BARE_TUPLE_ID.to_owned(), Some(Basic::Closed), None)]
        );
        assert!(r.is_empty());
        // Another recipient's view of the same contact is its own.
        r.compose("a@gw", one("phone", Basic::Open, None, None));
        let got = r.compose("b@gw", one("laptop", Basic::Open, None, None));
        assert_eq!(got.tuples.len(), 1);
    }

    #[test]
    fn memory_is_bounded_per_contact_and_in_all() {
        let mut r = Resources::new(3);
        for i in 0..40 {
            r.compose("a@gw", one(&format!("r{i}"), Basic::Open, None, None));
        }
        let got = r.compose("a@gw", one("last", Basic::Open, None, None));
        assert_eq!(got.tuples.len(), MAX_RESOURCES);
        for i in 0..5 {
            r.compose(&format!("w{i}@gw"), one("x", Basic::Open, None, None));
        }
        assert!(r.len() <= 3);
    }
}
