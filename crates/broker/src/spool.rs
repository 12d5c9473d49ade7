//! Store and forward: what the broker accepted survives a crash.
//!
//! The [`Core`](crate::core::Core) records what must outlive the process as [`SpoolOp`]s
//! (an accepted message or notification, its final removal, a dedup key); the runtime
//! hands each batch of operations to a [`Spool`] in one [`Spool::commit`] — one durable
//! write for every submission that arrived meanwhile (group commit) — and only then tells
//! the senders "accepted" and dispatches the envelopes. On start-up [`Spool::recover`]
//! returns what was still there, and the core queues it again in per-destination order.
//!
//! [`RedbSpool`] is the embedded default (a `redb` file in the data directory);
//! [`MemorySpool`] keeps everything in memory, for tests of the recovery logic.

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

mod file {
    use super::*;
    use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};

    const ENVELOPES: TableDefinition<u64, &[u8]> = TableDefinition::new("envelopes");
    /// key → (id, window end ms)
    const DEDUP: TableDefinition<&str, (u64, u64)> = TableDefinition::new("dedup");
    /// (window end ms, key): the dedup keys by expiry, for pruning.
    const DEDUP_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("dedup_expiry");
    const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

    /// How often ended dedup keys are pruned, at most.
    const PRUNE_EVERY_MS: u64 = 1_000;

    /// The embedded file spool: one `redb` database file, each commit one durable
    /// transaction (fsync).
    pub struct RedbSpool {
        db: Database,
        path: PathBuf,
        envelopes: usize,
        last_prune_ms: u64,
    }

    impl std::fmt::Debug for RedbSpool {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RedbSpool")
                .field("path", &self.path)
                .field("envelopes", &self.envelopes)
                .finish_non_exhaustive()
        }
    }

    impl RedbSpool {
        /// Opens (or creates) the spool file at `path`; its directory is created if
        /// needed. Fails if another process has it open.
        pub fn open(path: &Path) -> Result<RedbSpool, SpoolError> {
            let store = |detail: String| SpoolError::Store {
                path: path.to_owned(),
                detail,
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| store(e.to_string()))?;
            }
            let db = Database::create(path).map_err(|e| store(e.to_string()))?;
            let mut spool = RedbSpool {
                db,
                path: path.to_owned(),
                envelopes: 0,
                last_prune_ms: 0,
            };
            // Creates the tables, so that a fresh file reads as empty.
            spool.commit(&[], 0, 0)?;
            let read = spool.db.begin_read().map_err(|e| store(e.to_string()))?;
            let table = read
                .open_table(ENVELOPES)
                .map_err(|e| store(e.to_string()))?;
            spool.envelopes =
                usize::try_from(table.len().map_err(|e| store(e.to_string()))?).unwrap_or(0);
            Ok(spool)
        }

        /// The spool file.
        pub fn path(&self) -> &Path {
            &self.path
        }

        fn store(&self, e: impl std::fmt::Display) -> SpoolError {
            SpoolError::Store {
                path: self.path.clone(),
                detail: e.to_string(),
            }
        }
    }

    impl Spool for RedbSpool {
        fn recover(&mut self, now_ms: u64) -> Result<Recovered, SpoolError> {
            // Ended dedup keys go first, in their own transaction.
            self.last_prune_ms = 0;
            self.commit(&[], 0, now_ms)?;
            let read = self.db.begin_read().map_err(|e| self.store(e))?;
            let mut recovered = Recovered::default();
            let envelopes = read.open_table(ENVELOPES).map_err(|e| self.store(e))?;
            for row in envelopes.iter().map_err(|e| self.store(e))? {
                let (key, value) = row.map_err(|e| self.store(e))?;
                let record: StoredEnvelope =
                    serde_json::from_slice(value.value()).map_err(|e| SpoolError::Record {
                        key: MessageId(key.value()).to_string(),
                        detail: e.to_string(),
                    })?;
                recovered.envelopes.push(record);
            }
            let dedup = read.open_table(DEDUP).map_err(|e| self.store(e))?;
            for row in dedup.iter().map_err(|e| self.store(e))? {
                let (key, value) = row.map_err(|e| self.store(e))?;
                let (id, expires_ms) = value.value();
                recovered.dedup.push(StoredDedup {
                    key: key.value().to_owned(),
                    id: MessageId(id),
                    expires_ms,
                });
            }
            let state = read.open_table(STATE).map_err(|e| self.store(e))?;
            for row in state.iter().map_err(|e| self.store(e))? {
                let (key, value) = row.map_err(|e| self.store(e))?;
                recovered
                    .state
                    .insert(key.value().to_owned(), value.value().to_vec());
            }
            let meta = read.open_table(META).map_err(|e| self.store(e))?;
            recovered.next_id = meta
                .get("next_id")
                .map_err(|e| self.store(e))?
                .map_or(0, |v| v.value());
            self.envelopes = recovered.envelopes.len();
            Ok(recovered)
        }

        fn commit(&mut self, ops: &[SpoolOp], next_id: u64, now_ms: u64) -> Result<(), SpoolError> {
            let mut write = self.db.begin_write().map_err(|e| self.store(e))?;
            write.set_durability(Durability::Immediate);
            let mut count = self.envelopes;
            {
                let mut envelopes = write.open_table(ENVELOPES).map_err(|e| self.store(e))?;
                let mut dedup = write.open_table(DEDUP).map_err(|e| self.store(e))?;
                let mut expiry = write.open_table(DEDUP_EXPIRY).map_err(|e| self.store(e))?;
                let mut state = write.open_table(STATE).map_err(|e| self.store(e))?;
                let mut meta = write.open_table(META).map_err(|e| self.store(e))?;
                for op in ops {
                    match op {
                        SpoolOp::Put(record) => {
                            let bytes =
                                serde_json::to_vec(record).map_err(|e| SpoolError::Record {
                                    key: record.id.to_string(),
                                    detail: e.to_string(),
                                })?;
                            let old = envelopes
                                .insert(record.id.0, bytes.as_slice())
                                .map_err(|e| self.store(e))?;
                            if old.is_none() {
                                count += 1;
                            }
                        }
                        SpoolOp::Remove(id) => {
                            let old = envelopes.remove(id.0).map_err(|e| self.store(e))?;
                            if old.is_some() {
                                count = count.saturating_sub(1);
                            }
                        }
                        SpoolOp::Remember {
                            key,
                            id,
                            expires_ms,
                        } => {
                            let old = dedup
                                .insert(key.as_str(), (id.0, *expires_ms))
                                .map_err(|e| self.store(e))?
                                .map(|v| v.value().1);
                            if let Some(old) = old {
                                expiry
                                    .remove((old, key.as_str()))
                                    .map_err(|e| self.store(e))?;
                            }
                            expiry
                                .insert((*expires_ms, key.as_str()), ())
                                .map_err(|e| self.store(e))?;
                        }
                        SpoolOp::State { key, value } => {
                            match value {
                                Some(v) => state.insert(key.as_str(), v.as_slice()),
                                None => state.remove(key.as_str()),
                            }
                            .map_err(|e| self.store(e))?;
                        }
                    }
                }
                let stored = meta
                    .get("next_id")
                    .map_err(|e| self.store(e))?
                    .map_or(0, |v| v.value());
                if next_id > stored {
                    meta.insert("next_id", next_id).map_err(|e| self.store(e))?;
                }
                if now_ms >= self.last_prune_ms.saturating_add(PRUNE_EVERY_MS) {
                    let mut ended = Vec::new();
                    for row in expiry.range(..(now_ms, "")).map_err(|e| self.store(e))? {
                        let (key, ()) = row
                            .map(|(k, _)| (k.value().1.to_owned(), ()))
                            .map_err(|e| self.store(e))?;
                        ended.push(key);
                    }
                    expiry
                        .retain_in(..(now_ms, ""), |_, ()| false)
                        .map_err(|e| self.store(e))?;
                    for key in ended {
                        let stale = dedup
                            .get(key.as_str())
                            .map_err(|e| self.store(e))?
                            .is_some_and(|v| v.value().1 < now_ms);
                        if stale {
                            dedup.remove(key.as_str()).map_err(|e| self.store(e))?;
                        }
                    }
                }
            }
            write.commit().map_err(|e| self.store(e))?;
            if now_ms >= self.last_prune_ms.saturating_add(PRUNE_EVERY_MS) {
                self.last_prune_ms = now_ms;
            }
            self.envelopes = count;
            Ok(())
        }

        fn len(&self) -> usize {
            self.envelopes
        }
    }
}

pub use file::RedbSpool;

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
        dir.join("spool.redb")
    }

    #[test]
    fn redb_spool_survives_reopen_in_id_order_with_dedup_state_and_next_id() {
        let path = temp_path("reopen");
        {
            let mut spool = RedbSpool::open(&path).unwrap();
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
        let mut spool = RedbSpool::open(&path).unwrap();
        assert_eq!(spool.len(), 2);
        let got = spool.recover(2_000).unwrap();
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
        assert!(RedbSpool::open(&path).is_err());
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
