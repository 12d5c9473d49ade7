//! What a component link wrote and the server has not confirmed yet, and the ids of the
//! link's own iqs: pure bookkeeping for [`crate::driver`] (no socket; instants are passed
//! in).
//!
//! XEP-0114 has no acknowledgements, so the link confirms by barrier: an XEP-0199 ping
//! written behind its stanzas, whose answer (result or error) says that the server read
//! everything written before it on that stream. A barrier whose answer does not come is
//! sent again (a newer one covers all that the older covered), so a lost or misrouted
//! answer delays the confirmation by one retry and never stops it. Items carry sequence
//! numbers, so an answer to any barrier confirms exactly what was written before that
//! barrier, whichever barriers are still outstanding.
//!
//! A server may deliver the answer to an iq on another component connection than the one
//! that sent it (ejabberd with one listener for several domains): each of the link's iq
//! ids names the link that owns it ([`own_id`], [`parse_own_id`]), so whichever link
//! receives an answer can hand it to its owner.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// At most this many barriers are outstanding; beyond it the oldest is forgotten (a
/// newer one covers everything it covered).
const MAX_BARRIERS: usize = 8;

/// What the link wrote and the server has not confirmed, oldest first.
#[derive(Debug)]
pub struct Unconfirmed<T> {
    items: VecDeque<(u64, T)>,
    next_seq: u64,
    /// Outstanding barriers, oldest first: (id, items with a lower sequence number are
    /// covered, when sent).
    barriers: VecDeque<(String, u64, Instant)>,
    cap: usize,
}

impl<T> Unconfirmed<T> {
    /// Keeps at most `cap` items (a server that never confirms must not grow memory
    /// without bound).
    pub fn new(cap: usize) -> Self {
        Unconfirmed {
            items: VecDeque::new(),
            next_seq: 0,
            barriers: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Records an item written on the stream. `true` if the oldest item had to be let go
    /// to stay within the cap (it will not be written again).
    pub fn push(&mut self, item: T) -> bool {
        self.items.push_back((self.next_seq, item));
        self.next_seq += 1;
        if self.items.len() > self.cap {
            self.items.pop_front();
            return true;
        }
        false
    }

    /// How many items wait for a confirmation.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether a barrier should be written now: something waits and either no barrier is
    /// outstanding or the newest one has had no answer for `retry`.
    pub fn barrier_due(&self, now: Instant, retry: Duration) -> bool {
        if self.items.is_empty() {
            return false;
        }
        match self.barriers.back() {
            None => true,
            Some((_, _, sent)) => now.saturating_duration_since(*sent) >= retry,
        }
    }

    /// Records a barrier written after every item pushed so far.
    pub fn barrier_sent(&mut self, id: String, now: Instant) {
        self.barriers.push_back((id, self.next_seq, now));
        while self.barriers.len() > MAX_BARRIERS {
            self.barriers.pop_front();
        }
    }

    /// The server answered the iq `id`: if it is one of the barriers, everything written
    /// before it is confirmed (and so is every older barrier). Returns whether `id` was an
    /// outstanding barrier.
    pub fn answered(&mut self, id: &str) -> bool {
        let Some(at) = self.barriers.iter().position(|(b, _, _)| b == id) else {
            return false;
        };
        let upto = self.barriers[at].1;
        self.barriers.drain(..=at);
        while self.items.front().is_some_and(|(seq, _)| *seq < upto) {
            self.items.pop_front();
        }
        true
    }

    /// The stream ended: what was not confirmed, oldest first, to be written again on the
    /// next stream. Outstanding barriers are forgotten (their answers can no longer come).
    pub fn take_all(&mut self) -> Vec<T> {
        self.barriers.clear();
        self.items.drain(..).map(|(_, item)| item).collect()
    }
}

/// What one of the link's own iqs is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A confirmation barrier.
    Ack,
    /// A keepalive ping.
    Ping,
    /// A route probe: is another component domain delivered on this link's stream?
    Route,
}

impl IdKind {
    fn as_str(self) -> &'static str {
        match self {
            IdKind::Ack => "ack",
            IdKind::Ping => "ping",
            IdKind::Route => "route",
        }
    }
}

/// The id of the link `owner`'s `n`th iq of `kind`: `cpim-<kind>-<owner>-<n>`.
pub fn own_id(kind: IdKind, owner: usize, n: u64) -> String {
    format!("cpim-{}-{owner}-{n}", kind.as_str())
}

/// What [`own_id`] made `id` from (kind and owner), if it is one of the links' ids.
pub fn parse_own_id(id: &str) -> Option<(IdKind, usize)> {
    let rest = id.strip_prefix("cpim-")?;
    let (kind, rest) = rest.split_once('-')?;
    let kind = match kind {
        "ack" => IdKind::Ack,
        "ping" => IdKind::Ping,
        "route" => IdKind::Route,
        _ => return None,
    };
    let (owner, n) = rest.split_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((kind, owner.parse().ok()?))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests make up their instants from one reading
mod tests {
    use super::*;

    #[test]
    fn an_answer_confirms_what_was_written_before_its_barrier_only() {
        let t = Instant::now();
        let mut u = Unconfirmed::new(100);
        u.push("a");
        u.push("b");
        assert!(u.barrier_due(t, Duration::from_secs(1)));
        u.barrier_sent("x1".into(), t);
        u.push("c");
        // One barrier outstanding and fresh: no second one yet.
        assert!(!u.barrier_due(t, Duration::from_secs(1)));
        assert!(u.answered("x1"));
        assert_eq!(u.len(), 1);
        // "c" is not covered: a new barrier is due at once.
        assert!(u.barrier_due(t, Duration::from_secs(1)));
        assert!(!u.answered("x1"), "answered twice");
        assert_eq!(u.take_all(), vec!["c"]);
    }

    #[test]
    fn a_barrier_without_answer_is_retried_and_the_newer_answer_confirms_all() {
        let t = Instant::now();
        let retry = Duration::from_secs(1);
        let mut u = Unconfirmed::new(100);
        u.push(1);
        u.barrier_sent("x1".into(), t);
        u.push(2);
        assert!(!u.barrier_due(t + Duration::from_millis(999), retry));
        assert!(u.barrier_due(t + retry, retry));
        u.barrier_sent("x2".into(), t + retry);
        assert!(u.answered("x2"));
        assert!(u.is_empty());
        // The late answer to the older barrier is no longer one.
        assert!(!u.answered("x1"));
        assert!(!u.barrier_due(t + retry * 5, retry), "nothing waits");
    }

    #[test]
    fn a_late_answer_to_an_older_barrier_confirms_its_part() {
        let t = Instant::now();
        let mut u = Unconfirmed::new(100);
        u.push(1);
        u.barrier_sent("x1".into(), t);
        u.push(2);
        u.barrier_sent("x2".into(), t);
        assert!(u.answered("x1"));
        assert_eq!(u.len(), 1);
        assert!(u.answered("x2"));
        assert!(u.is_empty());
    }

    #[test]
    fn the_cap_lets_the_oldest_go_and_barriers_stay_right() {
        let t = Instant::now();
        let mut u = Unconfirmed::new(2);
        assert!(!u.push(1));
        u.barrier_sent("x1".into(), t);
        assert!(!u.push(2));
        assert!(u.push(3), "over the cap");
        assert!(u.answered("x1"));
        assert_eq!(u.take_all(), vec![2, 3]);
    }

    #[test]
    fn at_most_a_few_barriers_are_remembered() {
        let t = Instant::now();
        let mut u = Unconfirmed::new(100);
        for i in 0..(MAX_BARRIERS + 3) {
            u.push(i);
            u.barrier_sent(format!("x{i}"), t);
        }
        assert!(!u.answered("x0"), "forgotten");
        assert!(u.answered(&format!("x{}", MAX_BARRIERS + 2)));
        assert!(u.is_empty());
    }

    #[test]
    fn own_ids_name_their_link() {
        for (kind, owner, n) in [
            (IdKind::Ack, 0, 0),
            (IdKind::Ping, 3, 17),
            (IdKind::Route, 12, 99_999),
        ] {
            assert_eq!(parse_own_id(&own_id(kind, owner, n)), Some((kind, owner)));
        }
        for other in [
            "",
            "cpim-ack-",
            "cpim-ack-0",
            "cpim-ack-0-",
            "cpim-ack-x-1",
            "cpim-nope-0-1",
            "cpim-ack-0-1a",
            "ack-0-1",
            "purple1234",
        ] {
            assert_eq!(parse_own_id(other), None, "{other}");
        }
    }
}
