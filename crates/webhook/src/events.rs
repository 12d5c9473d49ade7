//! Per-application event logs behind `GET /v1/events`: a bounded buffer of event objects
//! with increasing ids, so that a reconnecting client (`Last-Event-ID`) gets everything
//! it missed while it is still retained.
//!
//! For an application that receives its events by SSE only, the log is where they are
//! delivered, so it never drops one no reader has been sent: when it is full of unread
//! events it refuses the next one (the broker keeps it queued and tries again, and its
//! sender hears of a failure only when it expires), instead of cutting the stream
//! silently. For an application with a URL the log is a second copy and keeps the
//! newest events. A reader that resumes after events the log no longer has is told so
//! ([`Batch::gap`]).

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
    /// The highest id a reader has been sent.
    read: u64,
}

/// What a reader gets after an id.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// `Some((after, first))` when the events after `after` and before `first` are no
    /// longer retained: the reader missed them.
    pub gap: Option<(u64, u64)>,
    /// The retained events after the id, in order.
    pub events: Vec<LoggedEvent>,
}

/// The event log of one application. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventLog {
    inner: Arc<Mutex<Inner>>,
    latest: watch::Sender<u64>,
    capacity: usize,
    max_age: Duration,
    /// Events no reader has been sent are kept (the log is the only delivery).
    hold_unread: bool,
}

impl EventLog {
    /// A log keeping at most `capacity` events, none older than `max_age` — but, when
    /// `hold_unread`, never one that no reader has been sent.
    pub fn new(capacity: usize, max_age: Duration, hold_unread: bool) -> Self {
        EventLog {
            inner: Arc::new(Mutex::new(Inner {
                events: VecDeque::new(),
                next: 1,
                read: 0,
            })),
            latest: watch::Sender::new(0),
            capacity: capacity.max(1),
            max_age,
            hold_unread,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an event and wakes the readers; returns its stream id, or `None` when the
    /// log holds unread events and is full (only when it holds them).
    pub fn push(&self, data: String) -> Option<u64> {
        let now = Instant::now();
        let seq = {
            let mut inner = self.lock();
            self.expire(&mut inner, now);
            while inner.events.len() >= self.capacity {
                let unread = inner.events.front().is_some_and(|e| e.seq > inner.read);
                if self.hold_unread && unread {
                    return None;
                }
                inner.events.pop_front();
            }
            let seq = inner.next;
            inner.next += 1;
            inner.events.push_back(LoggedEvent {
                seq,
                data: Arc::from(data),
                at: now,
            });
            seq
        };
        self.latest.send_replace(seq);
        Some(seq)
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while inner.events.front().is_some_and(|e| {
            now.duration_since(e.at) > self.max_age && !(self.hold_unread && e.seq > inner.read)
        }) {
            inner.events.pop_front();
        }
    }

    /// Notes that a reader has been sent the events up to `seq`.
    pub fn mark_read(&self, seq: u64) {
        let mut inner = self.lock();
        inner.read = inner.read.max(seq);
    }

    /// The retained events after stream id `after` (all retained ones for `0`, or for
    /// an id this log never issued, e.g. from before a restart), at most `max`, and
    /// whether some after `after` are gone.
    pub fn after(&self, after: u64, max: usize) -> Batch {
        let mut inner = self.lock();
        self.expire(&mut inner, Instant::now());
        let after = if after >= inner.next { 0 } else { after };
        let first = inner.events.front().map_or(inner.next, |e| e.seq);
        let gap = (after > 0 && first > after + 1).then_some((after, first));
        let events = inner
            .events
            .iter()
            .filter(|e| e.seq > after)
            .take(max)
            .cloned()
            .collect();
        Batch { gap, events }
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
        let log = EventLog::new(3, Duration::from_secs(3600), false);
        for i in 0..5 {
            assert_eq!(log.push(format!("e{i}")), Some(i + 1));
        }
        let seqs = |after| {
            log.after(after, 100)
                .events
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(0), vec![3, 4, 5]);
        assert_eq!(seqs(3), vec![4, 5]);
        assert_eq!(seqs(5), Vec::<u64>::new());
        // An id from another life of the log replays what is retained.
        assert_eq!(seqs(99), vec![3, 4, 5]);
        assert_eq!(&*log.after(4, 1).events[0].data, "e4");
        // Resuming after 1: 2 is gone, and the reader is told.
        assert_eq!(log.after(1, 100).gap, Some((1, 3)));
        assert_eq!(log.after(2, 100).gap, None);
        assert_eq!(log.after(0, 100).gap, None);
    }

    #[test]
    fn forgets_old_events() {
        let log = EventLog::new(10, Duration::from_millis(20), false);
        log.push("old".into());
        std::thread::sleep(Duration::from_millis(40));
        log.push("new".into());
        let left: Vec<_> = log
            .after(0, 10)
            .events
            .iter()
            .map(|e| e.data.to_string())
            .collect();
        assert_eq!(left, vec!["new"]);
    }

    #[test]
    fn an_sse_only_log_keeps_every_unread_event_and_refuses_when_full() {
        let log = EventLog::new(2, Duration::from_millis(20), true);
        assert_eq!(log.push("a".into()), Some(1));
        assert_eq!(log.push("b".into()), Some(2));
        assert_eq!(log.push("c".into()), None, "full of unread events");
        // Unread events do not age out either.
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(log.after(0, 10).events.len(), 2);
        assert_eq!(log.push("c".into()), None);
        // A reader was sent the first: it may go.
        log.mark_read(1);
        assert_eq!(log.push("c".into()), Some(3));
        let seqs: Vec<u64> = log.after(0, 10).events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3]);
        log.mark_read(3);
        std::thread::sleep(Duration::from_millis(40));
        assert!(log.after(0, 10).events.is_empty(), "read ones age out");
    }
}
