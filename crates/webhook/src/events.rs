//! Per-application event logs behind `GET /v1/events`: a bounded ring buffer of event
//! objects with increasing ids, so that a reconnecting client (`Last-Event-ID`) gets
//! everything it missed while it is still retained.

#![allow(clippy::disallowed_methods)] // a driver: the SSE log ages its events

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// One retained event.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    /// The stream id (SSE `id:`), increasing by one per event of this application.
    pub seq: u64,
    /// The event object, serialized.
    pub data: Arc<str>,
    at: Instant,
}

#[derive(Debug)]
struct Inner {
    events: VecDeque<LoggedEvent>,
    next: u64,
}

/// The event log of one application. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventLog {
    inner: Arc<Mutex<Inner>>,
    latest: watch::Sender<u64>,
    capacity: usize,
    max_age: Duration,
}

impl EventLog {
    /// A log keeping at most `capacity` events, none older than `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        EventLog {
            inner: Arc::new(Mutex::new(Inner {
                events: VecDeque::new(),
                next: 1,
            })),
            latest: watch::Sender::new(0),
            capacity: capacity.max(1),
            max_age,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an event and wakes the readers; returns its stream id.
    pub fn push(&self, data: String) -> u64 {
        let now = Instant::now();
        let seq = {
            let mut inner = self.lock();
            let seq = inner.next;
            inner.next += 1;
            inner.events.push_back(LoggedEvent {
                seq,
                data: Arc::from(data),
                at: now,
            });
            while inner.events.len() > self.capacity {
                inner.events.pop_front();
            }
            self.expire(&mut inner, now);
            seq
        };
        self.latest.send_replace(seq);
        seq
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while inner
            .events
            .front()
            .is_some_and(|e| now.duration_since(e.at) > self.max_age)
        {
            inner.events.pop_front();
        }
    }

    /// The retained events after stream id `after` (all retained ones for `0`, or for
    /// an id this log never issued, e.g. from before a restart), at most `max`.
    pub fn after(&self, after: u64, max: usize) -> Vec<LoggedEvent> {
        let mut inner = self.lock();
        self.expire(&mut inner, Instant::now());
        let after = if after >= inner.next { 0 } else { after };
        inner
            .events
            .iter()
            .filter(|e| e.seq > after)
            .take(max)
            .cloned()
            .collect()
    }

    /// A receiver that changes whenever an event is appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_after_an_id_and_forgets_beyond_capacity() {
        let log = EventLog::new(3, Duration::from_secs(3600));
        for i in 0..5 {
            assert_eq!(log.push(format!("e{i}")), i + 1);
        }
        let seqs = |after| {
            log.after(after, 100)
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(0), vec![3, 4, 5]);
        assert_eq!(seqs(3), vec![4, 5]);
        assert_eq!(seqs(5), Vec::<u64>::new());
        // An id from another life of the log replays what is retained.
        assert_eq!(seqs(99), vec![3, 4, 5]);
        assert_eq!(&*log.after(4, 1)[0].data, "e4");
    }

    #[test]
    fn forgets_old_events() {
        let log = EventLog::new(10, Duration::from_millis(20));
        log.push("old".into());
        std::thread::sleep(Duration::from_millis(40));
        log.push("new".into());
        let left: Vec<_> = log
            .after(0, 10)
            .iter()
            .map(|e| e.data.to_string())
            .collect();
        assert_eq!(left, vec!["new"]);
    }
}
