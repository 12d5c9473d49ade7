//! The core's queues: per-destination order, dispatch, outcomes, retries and expiry.

use super::*;

impl Core {
    pub(super) fn allocate_id(&mut self) -> MessageId {
        let id = MessageId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Queues `envelope` for `key`; `persist`: record it for the spool (messages and
    /// notifications only: presence and composing are soft state).
    pub(super) fn enqueue(
        &mut self,
        key: DestKey,
        envelope: Envelope,
        now: Duration,
        expires_at: Option<Duration>,
        persist: bool,
    ) {
        if persist && self.config.spool && spooled(&envelope.event) {
            self.ops.push(SpoolOp::Put(Box::new(StoredEnvelope::new(
                &envelope,
                self.wall_ms(now),
                expires_at.map(|t| self.wall_ms(t)),
            ))));
            self.not_durable.insert(envelope.id, key.clone());
        }
        if let Some(slot) = self.adapters.get_mut(&key.0) {
            slot.queued += 1;
        }
        self.queued_total += 1;
        let dest = self.destinations.entry(key.clone()).or_default();
        dest.waiting.push_back(Waiting {
            envelope,
            accepted_at: now,
            attempts: 0,
            expires_at,
            retrying_since: None,
        });
        self.arm_expiry(&key, expires_at);
        self.schedule(&key);
    }

    /// Makes sure `key` is swept no later than `at`.
    pub(super) fn arm_expiry(&mut self, key: &DestKey, at: Option<Duration>) {
        let Some(at) = at else {
            return;
        };
        let Some(dest) = self.destinations.get_mut(key) else {
            return;
        };
        if dest.expiry_timer.is_some_and(|t| t <= at) {
            return;
        }
        if let Some(old) = dest.expiry_timer.replace(at) {
            self.expiries.remove(&(old, key.clone()));
        }
        self.expiries.insert((at, key.clone()));
    }

    /// Fails the waiting envelopes of `key` whose lifetime ended by `now` and arms the
    /// sweep for the next one.
    pub(super) fn expire_waiting(&mut self, key: &DestKey, now: Duration) {
        let Some(dest) = self.destinations.get_mut(key) else {
            return;
        };
        if let Some(t) = dest.expiry_timer.take() {
            self.expiries.remove(&(t, key.clone()));
        }
        let (gone, kept): (VecDeque<Waiting>, VecDeque<Waiting>) =
            std::mem::take(&mut dest.waiting)
                .into_iter()
                .partition(|w| w.expires_at.is_some_and(|e| e <= now));
        dest.waiting = kept;
        let next = dest.waiting.iter().filter_map(|w| w.expires_at).min();
        self.arm_expiry(key, next);
        for w in gone {
            let latency = now.saturating_sub(w.accepted_at);
            let expired = expired_failure(w.accepted_at, w.expires_at);
            self.finish(key, now, w.envelope, latency, Err(expired));
        }
    }

    /// Puts `key` on the ready list if it can dispatch now.
    pub(super) fn schedule(&mut self, key: &DestKey) {
        let limit = self
            .adapters
            .get(&key.0)
            .map_or(1, |a| a.policy.max_in_flight_per_destination.max(1));
        if let Some(dest) = self.destinations.get_mut(key) {
            if !dest.scheduled
                && dest.blocked_until.is_none()
                && dest.in_flight < limit
                && dest
                    .waiting
                    .front()
                    .is_some_and(|w| !self.not_durable.contains_key(&w.envelope.id))
            {
                dest.scheduled = true;
                self.ready.push_back(key.clone());
            }
        }
    }

    /// The next envelope to hand to its destination adapter, if any.
    pub fn poll_dispatch(&mut self) -> Option<Envelope> {
        while let Some(key) = self.ready.pop_front() {
            let Some(dest) = self.destinations.get_mut(&key) else {
                continue;
            };
            dest.scheduled = false;
            if dest.blocked_until.is_some()
                || dest
                    .waiting
                    .front()
                    .is_some_and(|w| self.not_durable.contains_key(&w.envelope.id))
            {
                continue;
            }
            let Some(Waiting {
                envelope,
                accepted_at,
                attempts,
                expires_at,
                retrying_since,
            }) = dest.waiting.pop_front()
            else {
                continue;
            };
            dest.in_flight += 1;
            self.in_flight.insert(
                envelope.id,
                InFlight {
                    key: key.clone(),
                    envelope: envelope.clone(),
                    accepted_at,
                    attempts,
                    expires_at,
                    retrying_since,
                },
            );
            self.schedule(&key);
            return Some(envelope);
        }
        None
    }

    /// The outcome of a dispatched envelope.
    pub fn complete(&mut self, now: Duration, id: MessageId, outcome: DeliveryOutcome) {
        let Some(InFlight {
            key,
            envelope,
            accepted_at,
            attempts,
            expires_at,
            retrying_since,
        }) = self.in_flight.remove(&id)
        else {
            return;
        };
        let latency = now.saturating_sub(accepted_at);
        if let Some(dest) = self.destinations.get_mut(&key) {
            dest.in_flight = dest.in_flight.saturating_sub(1);
        }
        // Held at the head for too long while others wait: it fails so they can go.
        let since = retrying_since.unwrap_or(now);
        let holds_others = self
            .destinations
            .get(&key)
            .is_some_and(|d| !d.waiting.is_empty());
        let bound = self
            .config
            .head_of_line_limit
            .filter(|limit| holds_others && now.saturating_sub(since) >= *limit);
        match outcome {
            DeliveryOutcome::RetryLater { .. } | DeliveryOutcome::Waiting { .. }
                if expires_at.is_some_and(|e| e <= now) =>
            {
                let expired = expired_failure(accepted_at, expires_at);
                self.finish(&key, now, envelope, latency, Err(expired));
            }
            DeliveryOutcome::RetryLater { .. } if bound.is_some() => {
                let held = now.saturating_sub(since).as_secs();
                self.finish(
                    &key,
                    now,
                    envelope,
                    latency,
                    Err((
                        Condition::RemoteServerTimeout,
                        Some(format!(
                            "the destination kept asking to wait for {held} s while other messages waited behind this one"
                        )),
                    )),
                );
            }
            DeliveryOutcome::RetryLater { after } | DeliveryOutcome::Waiting { after } => {
                let attempts = attempts + 1;
                if attempts < self.config.max_delivery_attempts {
                    let backoff = self
                        .config
                        .retry_backoff
                        .saturating_mul(1 << (attempts - 1).min(16))
                        .min(self.config.max_retry_backoff);
                    let after = after.max(backoff);
                    if let Some(dest) = self.destinations.get_mut(&key) {
                        let at = dest
                            .waiting
                            .iter()
                            .position(|w| w.envelope.id > envelope.id)
                            .unwrap_or(dest.waiting.len());
                        dest.waiting.insert(
                            at,
                            Waiting {
                                envelope,
                                accepted_at,
                                attempts,
                                expires_at,
                                retrying_since: Some(since),
                            },
                        );
                        let until = now.saturating_add(after.min(MAX_RETRY_AFTER));
                        // Another in-flight envelope's retry never shortens a block.
                        let until = dest.blocked_until.map_or(until, |b| b.max(until));
                        dest.blocked_until = Some(until);
                        self.timers.push(Reverse((until, key.clone())));
                        self.arm_expiry(&key, expires_at);
                    }
                    return;
                }
                self.finish(
                    &key,
                    now,
                    envelope,
                    latency,
                    Err((
                        Condition::RemoteServerTimeout,
                        Some(format!("gave up after {attempts} attempts")),
                    )),
                );
            }
            DeliveryOutcome::Delivered => {
                self.finish(&key, now, envelope, latency, Ok(Handed::CONFIRMED));
            }
            DeliveryOutcome::Accepted => {
                self.finish(&key, now, envelope, latency, Ok(Handed::ON));
            }
            DeliveryOutcome::WithoutDisplay { confirmed } => {
                let handed = Handed {
                    confirmed,
                    display: false,
                };
                self.finish(&key, now, envelope, latency, Ok(handed));
            }
            DeliveryOutcome::Failed { condition, text } => {
                self.finish(&key, now, envelope, latency, Err((condition, text)));
            }
        }
    }

    /// Ends an envelope's life: accounting, reports, notifications to the origin.
    pub(super) fn finish(
        &mut self,
        key: &DestKey,
        now: Duration,
        envelope: Envelope,
        latency: Duration,
        result: Result<Handed, (Condition, Option<String>)>,
    ) {
        if let Some(slot) = self.adapters.get_mut(&key.0) {
            slot.queued = slot.queued.saturating_sub(1);
        }
        self.queued_total = self.queued_total.saturating_sub(1);
        if self.config.spool && spooled(&envelope.event) {
            self.ops.push(SpoolOp::Remove(envelope.id));
        }
        self.not_durable.remove(&envelope.id);
        let is_message = matches!(envelope.event, Event::Message(_));
        let mut notify = Vec::new();
        match (&result, &envelope.event) {
            (Ok(handed), Event::Message(m)) => {
                if handed.confirmed && m.receipts.delivered {
                    notify.push(NotificationStatus::Delivered);
                }
                if !handed.display && m.receipts.displayed {
                    notify.push(NotificationStatus::DisplayUnknown);
                }
            }
            (Err((condition, text)), _) if is_message => notify.push(NotificationStatus::Failed {
                condition: *condition,
                text: text.clone(),
            }),
            _ => {}
        }
        self.reports.push_back(match result {
            Ok(_) => Report::Delivered {
                adapter: key.0.clone(),
                latency,
            },
            Err((condition, _)) => Report::Failed {
                adapter: key.0.clone(),
                condition,
                latency,
                id: envelope.id,
            },
        });
        for status in notify {
            self.notify_origin(now, &envelope, status);
        }
        self.schedule(key);
        self.drop_if_idle(key);
    }

    /// Queues a notification about `envelope` to its origin.
    pub(super) fn notify_origin(
        &mut self,
        now: Duration,
        envelope: &Envelope,
        status: NotificationStatus,
    ) {
        let Some(origin) = self.adapters.get(&envelope.origin).map(|a| a.name.clone()) else {
            return;
        };
        let id = self.allocate_id();
        let notification = Envelope {
            id,
            event: Event::Notification(Notification {
                message_id: envelope.id.to_string(),
                status,
            }),
            from: envelope.origin_to.clone(),
            to: envelope.origin_from.clone(),
            sender: envelope.recipient.clone(),
            recipient: envelope.sender.clone(),
            origin: envelope.destination.clone(),
            destination: origin.clone(),
            origin_from: envelope.to.clone(),
            origin_to: envelope.from.clone(),
            protocol_ids: envelope.protocol_ids.clone(),
            hops: self.config.max_hops,
            received_at_ms: envelope.received_at_ms,
        };
        let key = (origin, notification.to.to_string());
        let expires_at = self.config.message_expiry.map(|l| now.saturating_add(l));
        self.enqueue(key, notification, now, expires_at, true);
    }

    pub(super) fn drop_if_idle(&mut self, key: &DestKey) {
        if self
            .destinations
            .get(key)
            .is_some_and(|d| d.waiting.is_empty() && d.in_flight == 0 && d.blocked_until.is_none())
        {
            if let Some(t) = self.destinations.remove(key).and_then(|d| d.expiry_timer) {
                self.expiries.remove(&(t, key.clone()));
            }
        }
    }

    /// The earliest time at which [`Core::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        let dedup = self.dedup_order.front().map(|(t, _)| *t);
        let expiry = self.expiries.first().map(|(t, _)| *t);
        [
            timer,
            dedup,
            expiry,
            self.hub.poll_timeout(),
            self.hub_check_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers due at `now`: blocked destinations resume, old dedup keys go.
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some(Reverse((t, _))) = self.timers.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((t, key))) = self.timers.pop() else {
                break;
            };
            if let Some(dest) = self.destinations.get_mut(&key) {
                if dest.blocked_until.is_some_and(|b| b <= t) {
                    dest.blocked_until = None;
                }
            }
            self.schedule(&key);
        }
        while let Some((t, key)) = self.expiries.first().cloned() {
            if t > now {
                break;
            }
            self.expire_waiting(&key, now);
            // `expire_waiting` removed the entry (or the destination is gone).
            self.expiries.remove(&(t, key));
        }
        self.expire_dedup(now);
        self.hub.handle_timeout(now);
        self.drain_hub(now, None);
        self.note_hub_changes(now);
        if self.hub_check_at.is_some_and(|t| t <= now) {
            self.save_subscriptions(now);
        }
    }
}

/// How an envelope that did not fail left the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Handed {
    /// The recipient's side confirmed delivery.
    pub(super) confirmed: bool,
    /// In a form that can ask for a display notification.
    pub(super) display: bool,
}

impl Handed {
    /// [`DeliveryOutcome::Delivered`].
    pub(super) const CONFIRMED: Self = Self {
        confirmed: true,
        display: true,
    };
    /// [`DeliveryOutcome::Accepted`].
    pub(super) const ON: Self = Self {
        confirmed: false,
        display: true,
    };
}
