//! RFC 3261 §17 non-INVITE transactions, as pure state: the driver feeds events and the
//! current time (a `Duration` since its own epoch) and does what the methods return.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// The transaction timers (RFC 3261 §17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate (500 ms).
    pub t1: Duration,
    /// Largest retransmit interval for non-INVITE requests (4 s).
    pub t2: Duration,
    /// How long a message may stay in the network (5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// Timer F / Timer J / Timer N: 64·T1.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// A client non-INVITE transaction (RFC 3261 §17.1.2).
#[derive(Debug, Clone)]
pub struct ClientTransaction {
    timers: Timers,
    reliable: bool,
    interval: Duration,
    next_retransmit: Option<Duration>,
    deadline: Duration,
    proceeding: bool,
    done: bool,
}

/// What a client transaction asks the driver to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// Nothing now.
    Wait,
    /// Send the request again (Timer E).
    Retransmit,
    /// Timer F fired: report 408 to the transaction user.
    TimedOut,
}

impl ClientTransaction {
    /// A transaction whose request was sent at `now`; `reliable` for TCP/TLS (no
    /// retransmissions).
    pub fn new(now: Duration, reliable: bool, timers: Timers) -> Self {
        ClientTransaction {
            timers,
            reliable,
            interval: timers.t1,
            next_retransmit: (!reliable).then_some(now + timers.t1),
            deadline: now + timers.timeout(),
            proceeding: false,
            done: false,
        }
    }

    /// When the driver must call [`ClientTransaction::on_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.done {
            return None;
        }
        Some(match self.next_retransmit {
            Some(r) => r.min(self.deadline),
            None => self.deadline,
        })
    }

    /// Time passed: retransmit, time out, or wait.
    pub fn on_timeout(&mut self, now: Duration) -> ClientAction {
        if self.done {
            return ClientAction::Wait;
        }
        if now >= self.deadline {
            self.done = true;
            return ClientAction::TimedOut;
        }
        match self.next_retransmit {
            Some(at) if now >= at && !self.reliable => {
                self.interval = if self.proceeding {
                    self.timers.t2
                } else {
                    (self.interval * 2).min(self.timers.t2)
                };
                self.next_retransmit = Some(now + self.interval);
                ClientAction::Retransmit
            }
            _ => ClientAction::Wait,
        }
    }

    /// A response arrived; `true` when it is final (the transaction user gets it).
    pub fn on_response(&mut self, now: Duration, status: u16) -> bool {
        if self.done {
            return false;
        }
        if status < 200 {
            // Proceeding: retransmit every T2 (RFC 3261 §17.1.2.2).
            self.proceeding = true;
            if !self.reliable {
                self.next_retransmit = Some(now + self.timers.t2);
            }
            return false;
        }
        self.done = true;
        true
    }
}

/// The key of a server transaction (RFC 3261 §17.2.3): branch, sent-by, method.
pub type ServerKey = (String, String, String);

/// The server transactions of one adapter: absorbs retransmitted requests and
/// repeats the final response (RFC 3261 §17.2.2).
#[derive(Debug, Default)]
pub struct ServerTransactions {
    entries: HashMap<ServerKey, Option<Vec<u8>>>,
    expiry: VecDeque<(Duration, ServerKey)>,
    pending: HashMap<ServerKey, ()>,
}

/// What to do with a received request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerDecision {
    /// A new request: process it.
    New,
    /// A retransmission while processing: ignore it.
    Absorb,
    /// A retransmission after the final response: send this again.
    Repeat(Vec<u8>),
}

impl ServerTransactions {
    /// How many transactions are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A request arrived.
    pub fn on_request(&mut self, key: &ServerKey) -> ServerDecision {
        match self.entries.get(key) {
            None => {
                self.entries.insert(key.clone(), None);
                self.pending.insert(key.clone(), ());
                ServerDecision::New
            }
            Some(None) => ServerDecision::Absorb,
            Some(Some(bytes)) => ServerDecision::Repeat(bytes.clone()),
        }
    }

    /// The final response was sent at `now`; keep it for Timer J (64·T1 over UDP, 0
    /// over a reliable transport).
    pub fn on_final(
        &mut self,
        key: &ServerKey,
        response: Vec<u8>,
        reliable: bool,
        now: Duration,
        timers: &Timers,
    ) {
        self.pending.remove(key);
        if reliable {
            self.entries.remove(key);
            return;
        }
        self.entries.insert(key.clone(), Some(response));
        self.expiry.push_back((now + timers.timeout(), key.clone()));
    }

    /// Forgets transactions whose Timer J fired.
    pub fn expire(&mut self, now: Duration) {
        while let Some((at, _)) = self.expiry.front() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.expiry.pop_front() {
                if !self.pending.contains_key(&key) {
                    self.entries.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn rfc3261_17_1_2_timer_e_doubles_to_t2_and_timer_f_times_out() {
        let timers = Timers::default();
        let mut tx = ClientTransaction::new(Duration::ZERO, false, timers);
        let mut retransmits = Vec::new();
        while let Some(at) = tx.poll_timeout() {
            match tx.on_timeout(at) {
                ClientAction::Retransmit => retransmits.push(at.as_millis()),
                ClientAction::TimedOut => {
                    assert_eq!(at, 32_000 * MS);
                    break;
                }
                ClientAction::Wait => {}
            }
        }
        // 0.5, 1.5, 3.5, 7.5, then every 4 s until 32 s.
        assert_eq!(&retransmits[..5], &[500, 1500, 3500, 7500, 11500]);
        assert!(retransmits.windows(2).skip(3).all(|w| w[1] - w[0] == 4000));
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn reliable_transport_never_retransmits_and_provisional_slows_to_t2() {
        let timers = Timers::default();
        let mut tx = ClientTransaction::new(Duration::ZERO, true, timers);
        assert_eq!(tx.poll_timeout(), Some(32_000 * MS));
        assert_eq!(tx.on_timeout(10_000 * MS), ClientAction::Wait);
        assert!(tx.on_response(11_000 * MS, 202));
        assert!(!tx.on_response(11_000 * MS, 200), "one final response only");

        let mut tx = ClientTransaction::new(Duration::ZERO, false, timers);
        assert!(!tx.on_response(100 * MS, 100));
        assert_eq!(tx.poll_timeout(), Some(4100 * MS));
        assert_eq!(tx.on_timeout(4100 * MS), ClientAction::Retransmit);
        assert_eq!(tx.poll_timeout(), Some(8100 * MS));
    }

    #[test]
    fn rfc3261_17_2_2_server_absorbs_and_repeats_until_timer_j() {
        let timers = Timers::default();
        let mut s = ServerTransactions::default();
        let key: ServerKey = ("z9hG4bK1".into(), "h:5060".into(), "MESSAGE".into());
        assert_eq!(s.on_request(&key), ServerDecision::New);
        assert_eq!(s.on_request(&key), ServerDecision::Absorb);
        s.on_final(
            &key,
            b"SIP/2.0 202".to_vec(),
            false,
            Duration::ZERO,
            &timers,
        );
        assert_eq!(
            s.on_request(&key),
            ServerDecision::Repeat(b"SIP/2.0 202".to_vec())
        );
        s.expire(31_999 * MS);
        assert_eq!(s.len(), 1);
        s.expire(32_000 * MS);
        assert!(s.is_empty());
        assert_eq!(s.on_request(&key), ServerDecision::New);
        s.on_final(&key, b"x".to_vec(), true, Duration::ZERO, &timers);
        assert!(s.is_empty(), "Timer J is 0 over TCP");
    }
}
