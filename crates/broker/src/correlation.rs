//! What a receipt or an error report needs to reach its sender in the sender's own
//! protocol: the origin's protocol ids of each message whose sender asked for
//! notifications (the SIP sender's `imdn.Message-ID`, its `DateTime`, what it asked
//! for). A notification that comes back from the destination's network (an XMPP
//! `<received/>`, an error bounce) names the message by its gateway id only; the broker
//! puts the original ids back before it goes to the origin. Pure, bounded state: time is
//! passed in.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::envelope::{AdapterName, MessageId, ProtocolId};

/// How long a message's ids are kept for its notifications by default.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many messages' ids are kept at most by default (the oldest are forgotten).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// The origins' ids of the messages whose senders asked for notifications.
#[derive(Debug)]
pub struct Correlations {
    keep: Duration,
    capacity: usize,
    by_id: HashMap<MessageId, (AdapterName, Vec<ProtocolId>)>,
    order: VecDeque<(Duration, MessageId)>,
}

impl Correlations {
    /// Keeps each entry for `keep`, at most `capacity` entries.
    pub fn new(keep: Duration, capacity: usize) -> Self {
        Correlations {
            keep,
            capacity,
            by_id: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Gives back unused capacity (see [`crate::compact`]).
    pub fn compact(&mut self) {
        use crate::compact::Compact;
        self.by_id.compact();
        self.order.compact();
    }

    /// How many messages are remembered.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// `true` when none is.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Remembers the ids `origin` gave message `id`.
    pub fn remember(
        &mut self,
        now: Duration,
        id: MessageId,
        origin: AdapterName,
        ids: Vec<ProtocolId>,
    ) {
        self.expire(now);
        if ids.is_empty() {
            return;
        }
        self.by_id.insert(id, (origin, ids));
        self.order.push_back((now.saturating_add(self.keep), id));
        while self.by_id.len() > self.capacity {
            match self.order.pop_front() {
                Some((_, old)) => {
                    self.by_id.remove(&old);
                }
                None => break,
            }
        }
    }

    /// The ids of message `id` for a notification about it going to `destination`:
    /// only the origin of the message gets them back.
    pub fn recall(
        &mut self,
        now: Duration,
        id: MessageId,
        destination: &AdapterName,
    ) -> Option<Vec<ProtocolId>> {
        self.expire(now);
        match self.by_id.get(&id) {
            Some((origin, ids)) if origin == destination => Some(ids.clone()),
            _ => None,
        }
    }

    fn expire(&mut self, now: Duration) {
        while let Some((until, id)) = self.order.front().copied() {
            if until > now {
                break;
            }
            self.order.pop_front();
            self.by_id.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn pid(kind: &str, value: &str) -> ProtocolId {
        ProtocolId {
            kind: kind.to_owned(),
            value: value.to_owned(),
        }
    }

    #[test]
    fn rfc5438_the_senders_ids_come_back_to_the_sender_only() {
        let mut c = Correlations::new(10 * S, 100);
        let (sip, xmpp): (AdapterName, AdapterName) = ("sip".into(), "xmpp".into());
        let id = MessageId(1);
        c.remember(S, id, sip.clone(), vec![pid("imdn.message-id", "m-1")]);
        assert_eq!(
            c.recall(2 * S, id, &sip),
            Some(vec![pid("imdn.message-id", "m-1")])
        );
        assert_eq!(
            c.recall(2 * S, id, &xmpp),
            None,
            "not leaked to another network"
        );
        // Asked twice (a receipt, then a display report): still there.
        assert!(c.recall(3 * S, id, &sip).is_some());
        // Expired.
        assert_eq!(c.recall(11 * S, id, &sip), None);
        assert!(c.is_empty());
    }

    #[test]
    fn bounded_oldest_forgotten_first() {
        let mut c = Correlations::new(100 * S, 2);
        let sip: AdapterName = "sip".into();
        let ids: Vec<MessageId> = (1..=3u64).map(MessageId).collect();
        for id in &ids {
            c.remember(S, *id, sip.clone(), vec![pid("k", "v")]);
        }
        assert_eq!(c.len(), 2);
        assert_eq!(c.recall(S, ids[0], &sip), None);
        assert!(c.recall(S, ids[2], &sip).is_some());
        c.remember(S, ids[0], sip.clone(), Vec::new());
        assert_eq!(c.len(), 2, "nothing to keep for a message without ids");
    }
}
