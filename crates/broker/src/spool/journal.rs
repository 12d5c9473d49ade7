//! The embedded file spool's journal: checksummed frames appended to `spool.log`,
//! commit markers, recovery that drops a torn commit, compaction.

use super::*;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

/// Frame kinds.
const PUT: u8 = 1;
const REMOVE: u8 = 2;
const REMEMBER: u8 = 3;
const STATE: u8 = 4;
const NEXT_ID: u8 = 5;
/// Ends a commit: frames count only once their commit's marker is there, so a commit
/// torn by a crash is dropped whole.
const COMMIT: u8 = 6;

/// Frame header: body length (u32 LE), CRC-32 of the body (u32 LE); the body is the
/// kind (u8), an id (u64 LE; 0 where none) and the payload.
const HEADER: usize = 8;
const BODY_FIXED: usize = 9;
/// The largest frame body accepted when reading (a put carries at most a 64 KiB SIP
/// message, its addresses and ids).
const MAX_BODY: usize = 16 << 20;
/// The journal is rewritten with only what is live once it is this large and at
/// least twice what is live (see [`FileSpool::with_compact_at`]).
const COMPACT_AT: u64 = 64 << 20;
/// Dedup keys kept at most (the oldest windows are forgotten first), like the core.
const DEDUP_CAPACITY: usize = 100_000;

#[derive(Serialize, Deserialize)]
struct Remembered {
    key: String,
    expires_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct StateRecord {
    key: String,
    #[serde(with = "state_value")]
    value: Option<Vec<u8>>,
}

/// A state value in a journal frame: a JSON string when it is UTF-8 (the common case,
/// JSON itself: a fraction of the size), else the array of byte values older versions
/// wrote for every value, which is still read.
mod state_value {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => s.serialize_str(text),
                Err(_) => s.collect_seq(bytes),
            },
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        struct Value;
        impl<'de> Visitor<'de> for Value {
            type Value = Option<Vec<u8>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("null, a string or an array of bytes")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Some(v.as_bytes().to_vec()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                Ok(Some(bytes))
            }
        }
        d.deserialize_any(Value)
    }
}

/// The embedded file spool: an append-only journal (`spool.log`) of checksummed
/// frames — put, remove, dedup key, state, id counter. A commit is one `write` and one
/// `fdatasync` whatever its size; a torn frame at the end (a crash during a write) is
/// cut off when the journal is opened again. When the journal is large and mostly
/// dead it is rewritten with only what is live (to a new file, fsynced, renamed over).
/// The file is locked (`flock`) while open: one process per spool.
pub struct FileSpool {
    path: PathBuf,
    file: File,
    len: u64,
    /// Live envelopes and the size of their frames.
    live: HashMap<u64, u32>,
    live_bytes: u64,
    dedup: HashMap<String, (u64, u64)>,
    dedup_order: VecDeque<(u64, String)>,
    state: BTreeMap<String, Vec<u8>>,
    next_id: u64,
    compactions: u64,
    compact_at: u64,
}

impl std::fmt::Debug for FileSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSpool")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("live", &self.live.len())
            .finish_non_exhaustive()
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, id: u64, payload: &[u8]) -> u32 {
    let body_len = BODY_FIXED + payload.len();
    let start = out.len();
    out.extend_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32(&out[start + HEADER..]);
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    u32::try_from(out.len() - start).unwrap_or(u32::MAX)
}

/// One frame read back: kind, id, payload, and its whole length.
struct Frame<'a> {
    kind: u8,
    id: u64,
    payload: &'a [u8],
    len: usize,
}

/// The frame at the start of `bytes`; `None` at the end or at a torn/corrupt frame.
fn read_frame(bytes: &[u8]) -> Option<Frame<'_>> {
    let header = bytes.get(..HEADER)?;
    let body_len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..HEADER].try_into().ok()?);
    if !(BODY_FIXED..=MAX_BODY).contains(&body_len) {
        return None;
    }
    let body = bytes.get(HEADER..HEADER + body_len)?;
    if crc32(body) != crc {
        return None;
    }
    Some(Frame {
        kind: body[0],
        id: u64::from_le_bytes(body[1..BODY_FIXED].try_into().ok()?),
        payload: &body[BODY_FIXED..],
        len: HEADER + body_len,
    })
}

impl FileSpool {
    /// Opens (or creates) the journal at `path`; its directory is created if needed.
    /// Fails if another process has it open.
    pub fn open(path: &Path) -> Result<FileSpool, SpoolError> {
        let store = |detail: String| SpoolError::Store {
            path: path.to_owned(),
            detail,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| store(e.to_string()))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| store(e.to_string()))?;
        lock(&file).map_err(store)?;
        Ok(FileSpool {
            path: path.to_owned(),
            file,
            len: 0,
            live: HashMap::new(),
            live_bytes: 0,
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            state: BTreeMap::new(),
            next_id: 0,
            compactions: 0,
            compact_at: COMPACT_AT,
        })
    }

    /// Rewrites the journal once it reaches `bytes` (and is at least half dead)
    /// instead of 64 MiB.
    pub fn with_compact_at(mut self, bytes: u64) -> Self {
        self.compact_at = bytes;
        self
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal's size in bytes.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// How many times the journal was rewritten since it was opened.
    pub fn compactions(&self) -> u64 {
        self.compactions
    }

    fn store(&self, e: impl std::fmt::Display) -> SpoolError {
        SpoolError::Store {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    fn remember(&mut self, key: String, id: u64, expires_ms: u64) {
        self.dedup_order.push_back((expires_ms, key.clone()));
        self.dedup.insert(key, (id, expires_ms));
        while self.dedup.len() > DEDUP_CAPACITY {
            let Some((_, old)) = self.dedup_order.pop_front() else {
                break;
            };
            self.dedup.remove(&old);
        }
    }

    fn prune_dedup(&mut self, now_ms: u64) {
        while let Some((expires, _)) = self.dedup_order.front() {
            if *expires > now_ms {
                break;
            }
            if let Some((expires, key)) = self.dedup_order.pop_front() {
                if self.dedup.get(&key).is_some_and(|(_, e)| *e == expires) {
                    self.dedup.remove(&key);
                }
            }
        }
    }

    /// Writes what is live to a new journal and puts it in place of the old one.
    fn compact(&mut self, now_ms: u64) -> Result<(), SpoolError> {
        self.prune_dedup(now_ms);
        let mut old = Vec::new();
        let mut reader = File::open(&self.path).map_err(|e| self.store(e))?;
        reader.read_to_end(&mut old).map_err(|e| self.store(e))?;
        let mut out = Vec::with_capacity(usize::try_from(self.live_bytes).unwrap_or(0) + 4096);
        let mut written: HashSet<u64> = HashSet::new();
        let mut at = 0;
        while let Some(f) = read_frame(&old[at..]) {
            if f.kind == PUT && self.live.contains_key(&f.id) && written.insert(f.id) {
                out.extend_from_slice(&old[at..at + f.len]);
            }
            at += f.len;
        }
        let mut order: Vec<(&String, &(u64, u64))> = self.dedup.iter().collect();
        order.sort_by_key(|(_, (_, expires))| *expires);
        for (key, (id, expires_ms)) in order {
            let payload = serde_json::to_vec(&Remembered {
                key: key.clone(),
                expires_ms: *expires_ms,
            })
            .map_err(|e| self.store(e))?;
            frame(&mut out, REMEMBER, *id, &payload);
        }
        for (key, value) in &self.state {
            let payload = serde_json::to_vec(&StateRecord {
                key: key.clone(),
                value: Some(value.clone()),
            })
            .map_err(|e| self.store(e))?;
            frame(&mut out, STATE, 0, &payload);
        }
        frame(&mut out, NEXT_ID, self.next_id, &[]);
        frame(&mut out, COMMIT, 0, &[]);
        let tmp = self.path.with_extension("log.new");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| self.store(e))?;
        lock(&file).map_err(|e| self.store(e))?;
        file.write_all(&out).map_err(|e| self.store(e))?;
        file.sync_all().map_err(|e| self.store(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.store(e))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.store(e))?;
        }
        file.seek(SeekFrom::End(0)).map_err(|e| self.store(e))?;
        self.file = file;
        self.len = out.len() as u64;
        self.compactions += 1;
        Ok(())
    }
}

/// An exclusive advisory lock on the journal: a second gateway on the same data
/// directory is refused instead of corrupting it.
fn lock(file: &File) -> Result<(), String> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err("the spool is in use by another process (one gateway per data_dir)".to_owned())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e.to_string()),
    }
}

impl Spool for FileSpool {
    fn recover(&mut self, now_ms: u64) -> Result<Recovered, SpoolError> {
        let mut bytes = Vec::new();
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| self.store(e))?;
        self.file
            .read_to_end(&mut bytes)
            .map_err(|e| self.store(e))?;
        let mut envelopes: BTreeMap<u64, StoredEnvelope> = BTreeMap::new();
        self.live.clear();
        self.live_bytes = 0;
        self.dedup.clear();
        self.dedup_order.clear();
        self.state.clear();
        let mut remembered: Vec<(u64, String, u64)> = Vec::new();
        // `at`: the end of the last complete commit; `scan`: the next frame.
        let mut at = 0;
        let mut scan = 0;
        let mut batch: Vec<(usize, Frame<'_>)> = Vec::new();
        while let Some(f) = read_frame(&bytes[scan..]) {
            let start = scan;
            scan += f.len;
            if f.kind != COMMIT {
                batch.push((start, f));
                continue;
            }
            at = scan;
            for (start, f) in batch.drain(..) {
                let bad = |detail: String| SpoolError::Record {
                    key: format!("{} at byte {start}", self.path.display()),
                    detail,
                };
                match f.kind {
                    PUT => {
                        let record: StoredEnvelope =
                            serde_json::from_slice(f.payload).map_err(|e| bad(e.to_string()))?;
                        envelopes.insert(f.id, record);
                        self.live
                            .insert(f.id, u32::try_from(f.len).unwrap_or(u32::MAX));
                    }
                    REMOVE => {
                        envelopes.remove(&f.id);
                        self.live.remove(&f.id);
                    }
                    REMEMBER => {
                        let r: Remembered =
                            serde_json::from_slice(f.payload).map_err(|e| bad(e.to_string()))?;
                        remembered.push((r.expires_ms, r.key, f.id));
                    }
                    STATE => {
                        let r: StateRecord =
                            serde_json::from_slice(f.payload).map_err(|e| bad(e.to_string()))?;
                        match r.value {
                            Some(v) => self.state.insert(r.key, v),
                            None => self.state.remove(&r.key),
                        };
                    }
                    NEXT_ID => self.next_id = self.next_id.max(f.id),
                    other => return Err(bad(format!("unknown frame kind {other}"))),
                }
            }
        }
        if at < bytes.len() {
            // A torn write at a crash: the commit it belonged to never returned, so
            // nobody was told "accepted" for it.
            tracing::warn!(
                path = %self.path.display(),
                cut = bytes.len() - at,
                "spool: an incomplete last write is cut off"
            );
            self.file.set_len(at as u64).map_err(|e| self.store(e))?;
            self.file.sync_all().map_err(|e| self.store(e))?;
        }
        self.file
            .seek(SeekFrom::End(0))
            .map_err(|e| self.store(e))?;
        self.len = at as u64;
        remembered.sort_by_key(|(expires, _, _)| *expires);
        for (expires_ms, key, id) in remembered {
            if expires_ms > now_ms {
                self.remember(key, id, expires_ms);
            }
        }
        self.live_bytes = self.live.values().map(|n| u64::from(*n)).sum();
        // Starts from a compact journal (what a long outage and a crash left).
        if self.len > self.live_bytes.saturating_mul(2).saturating_add(1 << 20) {
            self.compact(now_ms)?;
        }
        Ok(Recovered {
            envelopes: envelopes.into_values().collect(),
            dedup: self
                .dedup
                .iter()
                .map(|(key, (id, expires_ms))| StoredDedup {
                    key: key.clone(),
                    id: MessageId(*id),
                    expires_ms: *expires_ms,
                })
                .collect(),
            state: self.state.clone(),
            next_id: self.next_id,
        })
    }

    fn commit(&mut self, ops: &[SpoolOp], next_id: u64, now_ms: u64) -> Result<(), SpoolError> {
        let mut out = Vec::with_capacity(ops.len() * 512);
        // The frame size of each put, in order: what it adds to the live bytes.
        let mut put_sizes = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                SpoolOp::Put(record) => {
                    let payload = serde_json::to_vec(record).map_err(|e| SpoolError::Record {
                        key: record.id.to_string(),
                        detail: e.to_string(),
                    })?;
                    put_sizes.push(frame(&mut out, PUT, record.id.0, &payload));
                }
                SpoolOp::Remove(id) => {
                    frame(&mut out, REMOVE, id.0, &[]);
                }
                SpoolOp::Remember {
                    key,
                    id,
                    expires_ms,
                } => {
                    let payload = serde_json::to_vec(&Remembered {
                        key: key.clone(),
                        expires_ms: *expires_ms,
                    })
                    .map_err(|e| self.store(e))?;
                    frame(&mut out, REMEMBER, id.0, &payload);
                }
                SpoolOp::State { key, value } => {
                    let payload = serde_json::to_vec(&StateRecord {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .map_err(|e| self.store(e))?;
                    frame(&mut out, STATE, 0, &payload);
                }
            }
        }
        if next_id > self.next_id {
            frame(&mut out, NEXT_ID, next_id, &[]);
        }
        if !out.is_empty() {
            frame(&mut out, COMMIT, 0, &[]);
            if let Err(e) = self
                .file
                .write_all(&out)
                .and_then(|()| self.file.sync_data())
            {
                // What may have reached the file is cut off again: the journal must
                // end at a frame boundary for the next commit.
                let _ = self.file.set_len(self.len);
                return Err(self.store(e));
            }
            self.len += out.len() as u64;
        }
        // The commit is durable: the in-memory view follows.
        self.next_id = self.next_id.max(next_id);
        let mut put_sizes = put_sizes.into_iter();
        for op in ops {
            match op {
                SpoolOp::Put(record) => {
                    let n = put_sizes.next().unwrap_or_default();
                    if let Some(old) = self.live.insert(record.id.0, n) {
                        self.live_bytes = self.live_bytes.saturating_sub(u64::from(old));
                    }
                    self.live_bytes += u64::from(n);
                }
                SpoolOp::Remove(id) => {
                    if let Some(old) = self.live.remove(&id.0) {
                        self.live_bytes = self.live_bytes.saturating_sub(u64::from(old));
                    }
                }
                SpoolOp::Remember {
                    key,
                    id,
                    expires_ms,
                } => self.remember(key.clone(), id.0, *expires_ms),
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
        if self.len >= self.compact_at && self.len >= self.live_bytes.saturating_mul(2) {
            self.compact(now_ms)?;
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.live.len()
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib), table driven.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for b in bytes {
        crc = TABLE[((crc ^ u32::from(*b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn crc32_of_the_check_string() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn frames_round_trip_and_a_torn_or_flipped_frame_is_refused() {
        let mut out = Vec::new();
        let n = frame(&mut out, PUT, 42, b"payload");
        assert_eq!(n as usize, out.len());
        let f = read_frame(&out).unwrap();
        assert_eq!(
            (f.kind, f.id, f.payload, f.len),
            (PUT, 42, &b"payload"[..], out.len())
        );
        assert!(read_frame(&out[..out.len() - 1]).is_none(), "torn");
        let mut flipped = out.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(read_frame(&flipped).is_none(), "corrupt");
    }

    #[test]
    fn state_values_are_written_as_text_and_the_old_byte_arrays_are_still_read() {
        let text = StateRecord {
            key: "k".into(),
            value: Some(br#"{"a":1}"#.to_vec()),
        };
        let written = serde_json::to_string(&text).unwrap();
        assert_eq!(written, r#"{"key":"k","value":"{\"a\":1}"}"#);
        let back: StateRecord = serde_json::from_str(&written).unwrap();
        assert_eq!(back.value, text.value);
        // Not UTF-8: the byte array, as before.
        let binary = StateRecord {
            key: "k".into(),
            value: Some(vec![0xff, 0]),
        };
        let written = serde_json::to_string(&binary).unwrap();
        assert_eq!(written, r#"{"key":"k","value":[255,0]}"#);
        assert_eq!(
            serde_json::from_str::<StateRecord>(&written).unwrap().value,
            binary.value
        );
        // What older versions wrote for every value, and a removal.
        let old: StateRecord = serde_json::from_str(r#"{"key":"k","value":[123,125]}"#).unwrap();
        assert_eq!(old.value, Some(b"{}".to_vec()));
        let gone: StateRecord = serde_json::from_str(r#"{"key":"k","value":null}"#).unwrap();
        assert_eq!(gone.value, None);
    }
}
