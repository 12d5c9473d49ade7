//! Who may see a SIP user's presence (issue 13): the policy the gateway applies where
//! the SIP user is not asked by a presence server of its own — a SIP user who publishes
//! to the gateway, an unregistered registrar user, and the watchers that would share
//! the gateway's one subscription to a SIP user (the SIP side authorized only the
//! first). Pure state: no sockets, no clock.
//!
//! - `Open`: everyone.
//! - `Contacts` (the default): the watchers the SIP user follows itself (it
//!   holds a SUBSCRIBE to their presence through the gateway — its buddy list), and the
//!   allow list; anyone else waits, and is approved when the SIP user subscribes to it.
//! - `AllowList`: the allow list only; anyone else is refused.
//!
//! An allow-list entry is `user@domain` or `*@domain` (case-insensitive).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::winfo::Status;

/// The presence authorization policy for SIP users (`presence_authorization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Every watcher is approved.
    Open,
    /// The SIP user's own contacts and the allow list.
    #[default]
    Contacts,
    /// The allow list only.
    AllowList,
}

/// What to do with a watcher's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Approve it now.
    Approve,
    /// Leave it pending: the SIP user may still follow the watcher.
    Wait,
    /// Refuse it (`rejected`).
    Refuse,
}

/// How many requests wait per SIP user at most (the oldest are forgotten).
pub const MAX_WAITING_PER_USER: usize = 1024;

/// The policy and the requests waiting under it.
#[derive(Debug, Default)]
pub struct Authorization {
    policy: Policy,
    allow: Vec<String>,
    /// Per SIP user (lower-cased AOR), the watchers waiting (as written in the request).
    waiting: HashMap<String, BTreeSet<String>>,
    /// Per SIP user, the watchers decided on (by mailbox): as written, and approved or
    /// not. What watcher information (RFC 3858) shows besides the waiting ones.
    decided: HashMap<String, BTreeMap<String, (String, bool)>>,
}

/// `user@domain` of an address (`sip:`, `im:`, `pres:`, `xmpp:` or bare), lower-cased,
/// without parameters or resource.
pub fn mailbox(address: &str) -> String {
    let rest = address
        .split_once(':')
        .filter(|(scheme, _)| !scheme.contains('@'))
        .map_or(address, |(_, rest)| rest);
    let rest = rest.trim_start_matches("//");
    rest.split([';', '?', '/', '>'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

impl Authorization {
    /// `policy` with the allow-list entries `allow`.
    pub fn new(policy: Policy, allow: &[String]) -> Self {
        Authorization {
            policy,
            allow: allow.iter().map(|a| a.to_ascii_lowercase()).collect(),
            waiting: HashMap::new(),
            decided: HashMap::new(),
        }
    }

    /// Whether `watcher` is on the allow list.
    pub fn allowed(&self, watcher: &str) -> bool {
        let mailbox = mailbox(watcher);
        let domain = mailbox.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        self.allow
            .iter()
            .any(|entry| match entry.strip_prefix("*@") {
                Some(d) => d == domain,
                None => *entry == mailbox,
            })
    }

    /// The verdict on `watcher` asking to see `user`; `followed` is whether `user`
    /// follows `watcher` itself. A watcher left waiting is remembered.
    pub fn decide(&mut self, user: &str, watcher: &str, followed: bool) -> Verdict {
        let verdict = match self.policy {
            Policy::Open => Verdict::Approve,
            _ if self.allowed(watcher) => Verdict::Approve,
            Policy::Contacts if followed => Verdict::Approve,
            Policy::Contacts => Verdict::Wait,
            Policy::AllowList => Verdict::Refuse,
        };
        if verdict == Verdict::Wait {
            let waiting = self.waiting.entry(user.to_ascii_lowercase()).or_default();
            if waiting.len() >= MAX_WAITING_PER_USER {
                if let Some(first) = waiting.iter().next().cloned() {
                    waiting.remove(&first);
                }
            }
            waiting.insert(watcher.to_owned());
            self.undecide(user, watcher);
        } else {
            self.record(user, watcher, verdict == Verdict::Approve);
        }
        verdict
    }

    fn record(&mut self, user: &str, watcher: &str, approved: bool) {
        let decided = self.decided.entry(user.to_ascii_lowercase()).or_default();
        let mailbox = mailbox(watcher);
        if decided.len() >= MAX_WAITING_PER_USER && !decided.contains_key(&mailbox) {
            if let Some(first) = decided.keys().next().cloned() {
                decided.remove(&first);
            }
        }
        decided.insert(mailbox, (watcher.to_owned(), approved));
    }

    fn undecide(&mut self, user: &str, watcher: &str) {
        let key = user.to_ascii_lowercase();
        if let Some(decided) = self.decided.get_mut(&key) {
            decided.remove(&mailbox(watcher));
            if decided.is_empty() {
                self.decided.remove(&key);
            }
        }
    }

    /// The watchers of `user` as watcher information shows them (RFC 3858): the waiting
    /// ones `pending`, the approved `active`, the refused `terminated`; by address.
    pub fn watchers(&self, user: &str) -> Vec<(String, Status)> {
        let key = user.to_ascii_lowercase();
        let mut all: Vec<(String, Status)> = self
            .waiting
            .get(&key)
            .into_iter()
            .flatten()
            .map(|w| (w.clone(), Status::Pending))
            .collect();
        all.extend(
            self.decided
                .get(&key)
                .into_iter()
                .flatten()
                .map(|(_, (watcher, approved))| {
                    let status = if *approved {
                        Status::Active
                    } else {
                        Status::Rejected
                    };
                    (watcher.clone(), status)
                }),
        );
        all.sort();
        all
    }

    /// `user` now follows `contact` (its SUBSCRIBE to the contact's presence): the
    /// waiting request of `contact` to see `user`, if any, is to be approved; it is the
    /// watcher as it was written in the request.
    pub fn on_follow(&mut self, user: &str, contact: &str) -> Option<String> {
        let key = user.to_ascii_lowercase();
        let waiting = self.waiting.get_mut(&key)?;
        let wanted = mailbox(contact);
        let found = waiting.iter().find(|w| mailbox(w) == wanted).cloned()?;
        waiting.remove(&found);
        if waiting.is_empty() {
            self.waiting.remove(&key);
        }
        self.record(user, &found, true);
        Some(found)
    }

    /// `watcher` no longer asks to see `user`.
    pub fn withdraw(&mut self, user: &str, watcher: &str) {
        let key = user.to_ascii_lowercase();
        if let Some(waiting) = self.waiting.get_mut(&key) {
            let gone = mailbox(watcher);
            waiting.retain(|w| mailbox(w) != gone);
            if waiting.is_empty() {
                self.waiting.remove(&key);
            }
        }
        self.undecide(user, watcher);
    }

    /// How many requests wait, over all users.
    pub fn waiting(&self) -> usize {
        self.waiting.values().map(BTreeSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_authorization_policies_decide_as_documented() {
        let allow = vec!["boss@xmpp.test".to_owned(), "*@corp.test".to_owned()];
        // (policy, watcher, followed, verdict)
        let cases = [
            (Policy::Open, "sip:eve@evil.test", false, Verdict::Approve),
            (Policy::Contacts, "sip:eve@evil.test", false, Verdict::Wait),
            (
                Policy::Contacts,
                "sip:eve@evil.test",
                true,
                Verdict::Approve,
            ),
            (
                Policy::Contacts,
                "sip:Boss@XMPP.test",
                false,
                Verdict::Approve,
            ),
            (
                Policy::Contacts,
                "sip:anyone@corp.test;x=y",
                false,
                Verdict::Approve,
            ),
            (
                Policy::AllowList,
                "sip:eve@evil.test",
                true,
                Verdict::Refuse,
            ),
            (
                Policy::AllowList,
                "im:boss@xmpp.test",
                false,
                Verdict::Approve,
            ),
            (
                Policy::AllowList,
                "sip:boss@xmpp.test.evil",
                false,
                Verdict::Refuse,
            ),
        ];
        for (policy, watcher, followed, want) in cases {
            let mut a = Authorization::new(policy, &allow);
            assert_eq!(
                a.decide("sip:alice@sip.test", watcher, followed),
                want,
                "{policy:?} {watcher} {followed}"
            );
        }
    }

    #[test]
    fn a_waiting_watcher_is_approved_when_the_user_follows_it() {
        let mut a = Authorization::new(Policy::Contacts, &[]);
        assert_eq!(
            a.decide("sip:alice@sip.test", "sip:bob@xmpp.test", false),
            Verdict::Wait
        );
        assert_eq!(
            a.decide("sip:alice@sip.test", "sip:carol@xmpp.test", false),
            Verdict::Wait
        );
        assert_eq!(a.waiting(), 2);
        assert_eq!(
            a.on_follow("sip:alice@sip.test", "sip:dave@xmpp.test"),
            None
        );
        assert_eq!(
            a.on_follow("SIP:Alice@sip.test", "sip:bob@xmpp.test"),
            Some("sip:bob@xmpp.test".to_owned())
        );
        assert_eq!(
            a.on_follow("sip:alice@sip.test", "sip:bob@xmpp.test"),
            None,
            "once"
        );
        a.withdraw("sip:alice@sip.test", "sip:carol@xmpp.test");
        assert_eq!(a.waiting(), 0);
    }

    #[test]
    fn rfc3858_watchers_are_listed_pending_active_or_rejected() {
        let mut a = Authorization::new(Policy::Contacts, &["boss@xmpp.test".to_owned()]);
        a.decide("sip:alice@sip.test", "sip:bob@xmpp.test", false);
        a.decide("sip:alice@sip.test", "sip:boss@xmpp.test", false);
        assert_eq!(
            a.watchers("SIP:alice@sip.test"),
            vec![
                ("sip:bob@xmpp.test".to_owned(), Status::Pending),
                ("sip:boss@xmpp.test".to_owned(), Status::Active),
            ]
        );
        a.on_follow("sip:alice@sip.test", "sip:bob@xmpp.test");
        assert_eq!(
            a.watchers("sip:alice@sip.test"),
            vec![
                ("sip:bob@xmpp.test".to_owned(), Status::Active),
                ("sip:boss@xmpp.test".to_owned(), Status::Active),
            ]
        );
        a.withdraw("sip:alice@sip.test", "sip:bob@xmpp.test");
        assert_eq!(a.watchers("sip:alice@sip.test").len(), 1);
        let mut strict = Authorization::new(Policy::AllowList, &[]);
        strict.decide("sip:alice@sip.test", "sip:eve@evil.test", false);
        assert_eq!(
            strict.watchers("sip:alice@sip.test"),
            vec![("sip:eve@evil.test".to_owned(), Status::Rejected)]
        );
        assert!(strict.watchers("sip:other@sip.test").is_empty());
    }
}
