//! Store and forward: what the broker accepted survives a crash.
//!
//! The [`Core`](crate::core::Core) records what must outlive the process as [`SpoolOp`]s
//! (an accepted message or notification, its final removal, a dedup key); the runtime
//! hands each batch of operations to a [`Spool`] in one [`Spool::commit`] — one durable
//! write for every submission that arrived meanwhile (group commit) — and only then tells
//! the senders "accepted" and dispatches the envelopes. On start-up [`Spool::recover`]
//! returns what was still there, and the core queues it again in per-destination order.
//!
//! [`FileSpool`] is the embedded default: an append-only journal in the data directory,
//! one `write` + `fdatasync` per commit (a B-tree store such as redb was measured at
//! ~260 µs of CPU per commit here, which a journal does not pay). [`MemorySpool`] keeps
//! everything in memory, for tests of the recovery logic.

#![allow(clippy::disallowed_methods)] // a driver: the journal stamps what it writes

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use cpim::event::Event;
use cpim::Address;

use crate::envelope::{Envelope, MessageId, ProtocolId};
use crate::identity::Identity;

/// A spool could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The store failed (I/O, a full disk, a damaged file).
    #[error("spool {path}: {detail}")]
    Store {
        /// The spool file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A record could not be encoded or decoded.
    #[error("spool record {key}: {detail}")]
    Record {
        /// The record's key.
        key: String,
        /// What went wrong.
        detail: String,
    },
}

/// One change to the spool.
#[derive(Debug, Clone, PartialEq)]
pub enum SpoolOp {
    /// An accepted envelope, kept until its final outcome.
    Put(Box<StoredEnvelope>),
    /// The envelope reached its final outcome.
    Remove(MessageId),
    /// A dedup key and the id it was accepted under, valid until `expires_ms`.
    Remember {
        /// `origin adapter` + `\n` + the adapter's key.
        key: String,
        /// The id of the first acceptance.
        id: MessageId,
        /// Wall-clock end of its window (ms since the Unix epoch).
        expires_ms: u64,
    },
    /// A piece of state kept across restarts (e.g. a presence subscription), `None` to
    /// remove it.
    State {
        /// The state's key.
        key: String,
        /// Its value.
        value: Option<Vec<u8>>,
    },
}

impl SpoolOp {
    /// The ids of the envelopes `ops` put (what becomes durable with their commit).
    pub fn put_ids(ops: &[SpoolOp]) -> Vec<MessageId> {
        ops.iter()
            .filter_map(|op| match op {
                SpoolOp::Put(e) => Some(e.id),
                _ => None,
            })
            .collect()
    }
}

/// An envelope as the spool keeps it, with its lifetime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEnvelope {
    /// The gateway id (also the key: ids grow with acceptance).
    pub id: MessageId,
    /// What happens.
    pub event: Event,
    /// The sender as the destination writes it.
    pub from: String,
    /// The recipient as the destination writes it.
    pub to: String,
    /// The sender's identity.
    pub sender: Identity,
    /// The recipient's identity.
    pub recipient: Identity,
    /// The origin adapter.
    pub origin: String,
    /// The destination adapter.
    pub destination: String,
    /// The sender as the origin wrote it.
    pub origin_from: String,
    /// The recipient as the origin wrote it.
    pub origin_to: String,
    /// The origin protocol's ids.
    pub protocol_ids: Vec<ProtocolId>,
    /// Hops left.
    pub hops: u8,
    /// When the origin adapter received it (ms since the Unix epoch).
    pub received_at_ms: u64,
    /// When the broker accepted it (ms since the Unix epoch).
    pub accepted_at_ms: u64,
    /// When it expires (ms since the Unix epoch); `None` never.
    pub expires_at_ms: Option<u64>,
}

impl StoredEnvelope {
    /// The record of `envelope`, accepted at `accepted_at_ms`.
    pub fn new(envelope: &Envelope, accepted_at_ms: u64, expires_at_ms: Option<u64>) -> Self {
        StoredEnvelope {
            id: envelope.id,
            event: envelope.event.clone(),
            from: envelope.from.to_string(),
            to: envelope.to.to_string(),
            sender: envelope.sender.clone(),
            recipient: envelope.recipient.clone(),
            origin: envelope.origin.to_string(),
            destination: envelope.destination.to_string(),
            origin_from: envelope.origin_from.to_string(),
            origin_to: envelope.origin_to.to_string(),
            protocol_ids: envelope.protocol_ids.clone(),
            hops: envelope.hops,
            received_at_ms: envelope.received_at_ms,
            accepted_at_ms,
            expires_at_ms,
        }
    }

    /// The envelope again; addresses are parsed back from their written form.
    pub fn envelope(&self) -> Result<Envelope, SpoolError> {
        let parse = |s: &str| {
            Address::parse(s).map_err(|e| SpoolError::Record {
                key: self.id.to_string(),
                detail: format!("address {s:?}: {e}"),
            })
        };
        Ok(Envelope {
            id: self.id,
            event: self.event.clone(),
            from: parse(&self.from)?,
            to: parse(&self.to)?,
            sender: self.sender.clone(),
            recipient: self.recipient.clone(),
            origin: self.origin.as_str().into(),
            destination: self.destination.as_str().into(),
            origin_from: parse(&self.origin_from)?,
            origin_to: parse(&self.origin_to)?,
            protocol_ids: self.protocol_ids.clone(),
            hops: self.hops,
            received_at_ms: self.received_at_ms,
        })
    }
}

/// A remembered dedup key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDedup {
    /// `origin` + `\n` + key.
    pub key: String,
    /// The id of the first acceptance.
    pub id: MessageId,
    /// End of its window (ms since the Unix epoch).
    pub expires_ms: u64,
}

/// What a spool held when it was opened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovered {
    /// Envelopes without a final outcome, in id (acceptance) order.
    pub envelopes: Vec<StoredEnvelope>,
    /// Dedup keys whose window has not ended.
    pub dedup: Vec<StoredDedup>,
    /// Kept state, by key.
    pub state: BTreeMap<String, Vec<u8>>,
    /// The next id the previous run would have used (ids never repeat).
    pub next_id: u64,
}

/// Durable storage of accepted envelopes. Called from a blocking thread.
pub trait Spool: Send + 'static {
    /// Everything still stored; dedup keys that ended before `now_ms` are dropped.
    fn recover(&mut self, now_ms: u64) -> Result<Recovered, SpoolError>;

    /// Applies `ops` and `next_id` atomically and durably: when this returns `Ok`, they
    /// survive a crash of the process or the machine.
    fn commit(&mut self, ops: &[SpoolOp], next_id: u64, now_ms: u64) -> Result<(), SpoolError>;

    /// Envelopes stored.
    fn len(&self) -> usize;

    /// `true` when no envelope is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A spool in memory (lost with the process): for tests of what the broker does with a
/// spool, and for a gateway run with the spool off that still wants one code path.
#[derive(Debug, Default, Clone)]
pub struct MemorySpool {
    envelopes: BTreeMap<MessageId, StoredEnvelope>,
    dedup: BTreeMap<String, (MessageId, u64)>,
    state: BTreeMap<String, Vec<u8>>,
    next_id: u64,
    /// Commits so far.
    pub commits: u64,
    /// When set, commits fail (to test a full disk).
    pub failing: bool,
}

impl Spool for MemorySpool {
    fn recover(&mut self, now_ms: u64) -> Result<Recovered, SpoolError> {
        self.dedup.retain(|_, (_, expires)| *expires > now_ms);
        Ok(Recovered {
            envelopes: self.envelopes.values().cloned().collect(),
            dedup: self
                .dedup
                .iter()
                .map(|(key, (id, expires_ms))| StoredDedup {
                    key: key.clone(),
                    id: *id,
                    expires_ms: *expires_ms,
                })
                .collect(),
            state: self.state.clone(),
            next_id: self.next_id,
        })
    }

    fn commit(&mut self, ops: &[SpoolOp], next_id: u64, _now_ms: u64) -> Result<(), SpoolError> {
        if self.failing {
            return Err(SpoolError::Store {
                path: PathBuf::from("memory"),
                detail: "no space left on device (simulated)".to_owned(),
            });
        }
        for op in ops {
            match op {
                SpoolOp::Put(e) => {
                    self.envelopes.insert(e.id, (**e).clone());
                }
                SpoolOp::Remove(id) => {
                    self.envelopes.remove(id);
                }
                SpoolOp::Remember {
                    key,
                    id,
                    expires_ms,
                } => {
                    self.dedup.insert(key.clone(), (*id, *expires_ms));
                }
                SpoolOp::State { key, value } => match value {
                    Some(v) => {
                        self.state.insert(key.clone(), v.clone());
                    }
                    None => {
                        self.state.remove(key);
                    }
                },
            }
        }
        self.next_id = self.next_id.max(next_id);
        self.commits += 1;
        Ok(())
    }

    fn len(&self) -> usize {
        self.envelopes.len()
    }
}

mod journal;

pub use journal::FileSpool;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cpim::event::Message;

    fn record(id: u64, text: &str, expires_at_ms: Option<u64>) -> StoredEnvelope {
        let a = Address::parse("sip:alice@a.example").unwrap();
        let b = Address::parse("xmpp:bob@b.example").unwrap();
        StoredEnvelope::new(
            &Envelope {
                id: MessageId(id),
                event: Event::Message(Message::text(text)),
                from: b.clone(),
                to: b.clone(),
                sender: Identity::new("alice", "a.example"),
                recipient: Identity::new("bob", "b.example"),
                origin: "sip".into(),
                destination: "xmpp".into(),
                origin_from: a.clone(),
                origin_to: a,
                protocol_ids: vec![ProtocolId {
                    kind: "sip.call-id".into(),
                    value: "c1".into(),
                }],
                hops: 69,
                received_at_ms: 5,
            },
            7,
            expires_at_ms,
        )
    }

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cpim-spool-{name}-{}-{}",
            std::process::id(),
            crate::envelope::unix_now_ms()
        ));
        dir.join("spool.log")
    }

    #[test]
    fn file_spool_survives_reopen_in_id_order_with_dedup_state_and_next_id() {
        let path = temp_path("reopen");
        {
            let mut spool = FileSpool::open(&path).unwrap();
            assert!(spool.is_empty());
            let ops = vec![
                SpoolOp::Put(Box::new(record(30, "third", None))),
                SpoolOp::Put(Box::new(record(10, "first", Some(99)))),
                SpoolOp::Put(Box::new(record(20, "second", None))),
                SpoolOp::Remember {
                    key: "sip\nc1/1".into(),
                    id: MessageId(10),
                    expires_ms: 5_000,
                },
                SpoolOp::Remember {
                    key: "sip\nold".into(),
                    id: MessageId(9),
                    expires_ms: 1_500,
                },
                SpoolOp::State {
                    key: "hub/x".into(),
                    value: Some(b"v".to_vec()),
                },
            ];
            spool.commit(&ops, 31, 1_000).unwrap();
            spool
                .commit(&[SpoolOp::Remove(MessageId(20))], 32, 1_100)
                .unwrap();
            assert_eq!(spool.len(), 2);
        }
        let mut spool = FileSpool::open(&path).unwrap();
        let got = spool.recover(2_000).unwrap();
        assert_eq!(spool.len(), 2);
        let ids: Vec<u64> = got.envelopes.iter().map(|e| e.id.0).collect();
        assert_eq!(ids, [10, 30]);
        assert_eq!(got.envelopes[0], record(10, "first", Some(99)));
        let envelope = got.envelopes[0].envelope().unwrap();
        assert_eq!(envelope.to, Address::parse("xmpp:bob@b.example").unwrap());
        assert_eq!(
            envelope.origin_from,
            Address::parse("sip:alice@a.example").unwrap()
        );
        assert_eq!(
            StoredEnvelope::new(&envelope, 7, Some(99)),
            got.envelopes[0]
        );
        // The key whose window ended at 1 500 is gone at 2 000.
        assert_eq!(
            got.dedup,
            vec![StoredDedup {
                key: "sip\nc1/1".into(),
                id: MessageId(10),
                expires_ms: 5_000
            }]
        );
        assert_eq!(got.state.get("hub/x").map(Vec::as_slice), Some(&b"v"[..]));
        assert_eq!(got.next_id, 32);
        // A second process cannot open the same spool.
        assert!(FileSpool::open(&path).is_err());
        drop(spool);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A crash in the middle of a write leaves a torn frame at the end: it is cut off
    /// (that commit never returned, so nobody heard "accepted" for it) and what came
    /// before is intact; the journal goes on from there.
    #[test]
    fn a_torn_last_write_is_cut_off() {
        let path = temp_path("torn");
        {
            let mut spool = FileSpool::open(&path).unwrap();
            spool.recover(0).unwrap();
            spool
                .commit(&[SpoolOp::Put(Box::new(record(1, "kept", None)))], 2, 0)
                .unwrap();
            spool
                .commit(&[SpoolOp::Put(Box::new(record(2, "torn", None)))], 3, 0)
                .unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 5).unwrap();
        drop(file);
        let mut spool = FileSpool::open(&path).unwrap();
        let got = spool.recover(0).unwrap();
        assert_eq!(
            got.envelopes,
            vec![record(1, "kept", None)],
            "the torn commit is dropped whole"
        );
        assert_eq!(got.next_id, 2, "the torn commit's counter went with it");
        spool
            .commit(&[SpoolOp::Put(Box::new(record(3, "after", None)))], 4, 0)
            .unwrap();
        drop(spool);
        let mut spool = FileSpool::open(&path).unwrap();
        let ids: Vec<u64> = spool
            .recover(0)
            .unwrap()
            .envelopes
            .iter()
            .map(|e| e.id.0)
            .collect();
        assert_eq!(ids, [1, 3]);
        drop(spool);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// Many messages through the journal: once it is large and mostly removals it is
    /// rewritten with only what is live, and reopening gives exactly that.
    #[test]
    fn the_journal_is_compacted_to_what_is_live() {
        let path = temp_path("compact");
        let mut spool = FileSpool::open(&path).unwrap().with_compact_at(1 << 20);
        spool.recover(0).unwrap();
        let body = "x".repeat(4000);
        let mut id = 1u64;
        let mut kept = Vec::new();
        while spool.compactions() == 0 {
            let ops = vec![
                SpoolOp::Put(Box::new(record(id, &body, None))),
                SpoolOp::Remember {
                    key: format!("sip\nk{id}"),
                    id: MessageId(id),
                    expires_ms: 10_000 + id,
                },
            ];
            spool.commit(&ops, id + 1, 0).unwrap();
            if id.is_multiple_of(1000) {
                kept.push(id);
            } else {
                spool
                    .commit(&[SpoolOp::Remove(MessageId(id))], id + 1, 0)
                    .unwrap();
            }
            id += 1;
            assert!(id < 100_000, "never compacted");
        }
        assert!(
            spool.file_len() < 1 << 20,
            "{} bytes after compaction",
            spool.file_len()
        );
        assert_eq!(spool.len(), kept.len());
        drop(spool);
        let mut spool = FileSpool::open(&path).unwrap();
        let got = spool.recover(0).unwrap();
        let ids: Vec<u64> = got.envelopes.iter().map(|e| e.id.0).collect();
        assert_eq!(ids, kept);
        assert_eq!(got.next_id, id);
        assert_eq!(got.dedup.len(), usize::try_from(id - 1).unwrap());
        // Windows that ended are not restored.
        let later = spool.recover(10_000 + id / 2).unwrap();
        assert!(later.dedup.len() < got.dedup.len());
        drop(spool);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn memory_spool_fails_when_told() {
        let mut spool = MemorySpool {
            failing: true,
            ..MemorySpool::default()
        };
        let put = [SpoolOp::Put(Box::new(record(1, "x", None)))];
        assert!(spool.commit(&put, 2, 0).is_err());
        spool.failing = false;
        spool.commit(&put, 2, 0).unwrap();
        assert_eq!(spool.len(), 1);
        assert_eq!(spool.recover(0).unwrap().next_id, 2);
    }
}
