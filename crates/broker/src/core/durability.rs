//! The core's durability bookkeeping: spool operations, commits, withdrawal after a
//! failed commit, restoring after a restart, adapter state, dedup expiry, the clock
//! origin.

use super::*;

impl Core {
    /// The presence hub, for introspection.
    pub fn presence(&self) -> &PresenceHub<Identity> {
        &self.hub
    }

    pub(super) fn expire_dedup(&mut self, now: Duration) {
        while let Some((t, _)) = self.dedup_order.front() {
            if *t > now {
                break;
            }
            if let Some((t, key)) = self.dedup_order.pop_front() {
                if self.dedup.get(&key).is_some_and(|(_, seen)| *seen == t) {
                    self.dedup.remove(&key);
                }
            }
        }
    }

    /// Gives back the capacity a burst left in the core's tables and queues: call it
    /// once a turn; it costs a few comparisons unless a table holds less than a quarter
    /// of its capacity (see [`crate::compact`]).
    pub fn compact(&mut self) {
        use crate::compact::Compact;
        self.destinations.compact();
        self.ready.compact();
        self.in_flight.compact();
        self.timers.compact();
        self.dedup.compact();
        self.dedup_order.compact();
        self.ops.compact();
        self.not_durable.compact();
        self.reports.compact();
        self.upstream_subscriber.compact();
        self.correlations.compact();
        self.hub.compact();
    }

    /// The next report for metrics and logs.
    pub fn poll_report(&mut self) -> Option<Report> {
        self.reports.pop_front()
    }

    /// How many spool operations wait for a commit, and whether any of them is more than
    /// a removal (someone waits for it); `None` when there are none.
    pub fn pending_ops(&self) -> Option<(usize, bool)> {
        (!self.ops.is_empty()).then(|| {
            let urgent = self.ops.iter().any(|op| !matches!(op, SpoolOp::Remove(_)));
            (self.ops.len(), urgent)
        })
    }

    /// Records a piece of state (an adapter's, see [`crate::runtime::StateStore`]) for
    /// the spool; nothing without one.
    pub fn record_state(&mut self, key: String, value: Option<Vec<u8>>) {
        if self.config.spool {
            self.ops.push(SpoolOp::State { key, value });
        }
    }

    /// Records what must outlive the process and is only written from time to time
    /// (the presence subscriptions): for the runtime's last commit at a stop.
    pub fn save_state(&mut self, now: Duration) {
        if self.hub_check_at.is_some() {
            self.save_subscriptions(now);
        }
    }

    /// What the spool must record since the last call, oldest first.
    pub fn take_ops(&mut self) -> Vec<SpoolOp> {
        std::mem::take(&mut self.ops)
    }

    /// Whether `id` waits for a commit (its sender must not hear "accepted" before).
    pub fn awaits_commit(&self, id: MessageId) -> bool {
        self.not_durable.contains_key(&id)
    }

    /// The envelopes `ids` were committed: they may be dispatched now.
    pub fn mark_durable(&mut self, ids: &[MessageId]) {
        for id in ids {
            if let Some(key) = self.not_durable.remove(id) {
                self.schedule(&key);
            }
        }
    }

    /// Gives back operations whose commit failed, to go with the next commit.
    pub fn return_ops(&mut self, mut ops: Vec<SpoolOp>) {
        ops.append(&mut self.ops);
        self.ops = ops;
    }

    /// The next id the core will give: recorded with each commit, so that ids never
    /// repeat across restarts even if the wall clock goes back.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Turns recording for the spool on or off.
    pub fn set_spooling(&mut self, on: bool) {
        self.config.spool = on;
    }

    /// Sets the wall clock at `now` = 0 (ms since the Unix epoch).
    pub fn set_clock_origin(&mut self, ms: u64) {
        self.config.clock_origin_ms = ms;
    }

    /// Takes back envelopes accepted but not made durable (their commit failed): they
    /// leave their queues and their dedup keys are forgotten, as if never accepted.
    pub fn withdraw(&mut self, ids: &HashSet<MessageId>) {
        let mut emptied = Vec::new();
        for (key, dest) in &mut self.destinations {
            let before = dest.waiting.len();
            dest.waiting.retain(|w| !ids.contains(&w.envelope.id));
            let removed = before - dest.waiting.len();
            if removed > 0 {
                if let Some(slot) = self.adapters.get_mut(&key.0) {
                    slot.queued = slot.queued.saturating_sub(removed);
                }
                self.queued_total = self.queued_total.saturating_sub(removed);
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.drop_if_idle(&key);
        }
        self.dedup.retain(|_, (id, _)| !ids.contains(id));
        self.not_durable.retain(|id, _| !ids.contains(id));
        self.ops.retain(|op| match op {
            SpoolOp::Put(e) => !ids.contains(&e.id),
            SpoolOp::Remember { id, .. } => !ids.contains(id),
            _ => true,
        });
    }

    /// Queues what a spool held at start-up: per destination in id (acceptance) order,
    /// ahead of anything new; lifetimes keep counting by the wall clock (an envelope
    /// that expired meanwhile fails back at the first timer). Dedup keys whose window
    /// has not ended are remembered again. Returns how many envelopes were queued.
    pub fn restore(&mut self, now: Duration, recovered: Recovered) -> usize {
        let Recovered {
            mut envelopes,
            mut dedup,
            next_id,
            state,
        } = recovered;
        self.next_id = self.next_id.max(next_id);
        envelopes.sort_by_key(|e| e.id);
        let mut queued = 0;
        for record in envelopes {
            self.next_id = self.next_id.max(record.id.0.wrapping_add(1));
            match record.envelope() {
                Ok(envelope) => {
                    let key = (envelope.destination.clone(), envelope.to.to_string());
                    let expires_at = record.expires_at_ms.map(|ms| self.core_time(ms));
                    self.enqueue(key, envelope, now, expires_at, false);
                    queued += 1;
                }
                Err(error) => {
                    tracing::error!(%error, "a spooled envelope cannot be read; it is dropped");
                    self.ops.push(SpoolOp::Remove(record.id));
                }
            }
        }
        dedup.sort_by_key(|d| d.expires_ms);
        for d in dedup {
            let Some(entry) = dedup_entry(&d.key) else {
                continue;
            };
            let until = self.core_time(d.expires_ms);
            self.dedup.insert(entry.clone(), (d.id, until));
            self.dedup_order.push_back((until, entry));
        }
        self.restore_subscriptions(now, &state);
        queued
    }

    /// Core time `t` on the wall clock (ms since the Unix epoch).
    pub(super) fn wall_ms(&self, t: Duration) -> u64 {
        let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        self.config.clock_origin_ms.saturating_add(ms)
    }

    /// A wall-clock time as core time (0 if it was before the core started).
    pub(super) fn core_time(&self, wall_ms: u64) -> Duration {
        Duration::from_millis(wall_ms.saturating_sub(self.config.clock_origin_ms))
    }
}
