//! The core's presence bridge: events to and from the presence hub, what the hub
//! generates, and the subscriptions kept across a restart.

use super::*;

impl Core {
    /// Feeds a subscription operation or a presence state to the presence hub and
    /// queues what the hub says.
    pub(super) fn presence_input(
        &mut self,
        now: Duration,
        sender: &Identity,
        recipient: &Identity,
        event: Event,
    ) -> Result<(), Rejected> {
        let refused = |e: crate::presence::HubError| Rejected {
            condition: Condition::ResourceConstraint,
            text: e.to_string(),
            retry_after: Some(self.config.retry_after_hint),
        };
        let (s, r) = (sender.clone(), recipient.clone());
        match event {
            Event::Presence(PresenceUpdate { presence }) => {
                self.hub.handle_publish_to(now, s, presence, r)
            }
            Event::Subscription(sub) => match sub.op {
                SubscriptionOp::Subscribe => {
                    let expires = sub.expires_secs.map(|x| Duration::from_secs(u64::from(x)));
                    self.hub
                        .handle_subscribe(now, s.clone(), r.clone(), expires)
                        .map_err(refused)?;
                    // `Expires: 0` for a new pair is a fetch, which may go upstream as a probe.
                    self.drain_hub(now, Some((&s, &r)));
                    return Ok(());
                }
                SubscriptionOp::Unsubscribe => self.hub.handle_unsubscribe(s, r),
                SubscriptionOp::Approve => self.hub.handle_approve(s, r).map_err(refused)?,
                SubscriptionOp::Deny if sub.aggregate => {
                    let reason = sub
                        .reason
                        .as_deref()
                        .and_then(TerminationReason::from_token)
                        .unwrap_or(TerminationReason::Deactivated);
                    if !reason.is_transient() {
                        self.upstream_subscriber.remove(&s);
                    }
                    self.hub.handle_upstream_terminated(s, reason);
                }
                SubscriptionOp::Deny => self.hub.handle_deny(s, r),
                SubscriptionOp::Probe => {
                    self.hub
                        .handle_probe(now, s.clone(), r.clone())
                        .map_err(refused)?;
                    self.drain_hub(now, Some((&s, &r)));
                    return Ok(());
                }
            },
            _ => {}
        }
        self.drain_hub(now, None);
        Ok(())
    }

    /// Turns the hub's outputs into envelopes. `prober` is the (watcher, presentity) of
    /// the probe being handled, named as sender of a forwarded probe.
    pub(super) fn drain_hub(&mut self, now: Duration, prober: Option<(&Identity, &Identity)>) {
        while let Some(output) = self.hub.poll_output() {
            let sub = |op: SubscriptionOp| Subscription::new(op);
            let (event, from, to) = match output {
                Output::AuthorizationRequest {
                    presentity,
                    watcher,
                } => (
                    Event::Subscription(sub(SubscriptionOp::Subscribe)),
                    watcher,
                    presentity,
                ),
                Output::Notify {
                    watcher,
                    presentity,
                    state,
                    presence,
                } => match (state, presence) {
                    (SubscriptionState::Active, Some(presence)) => (
                        Event::Presence(PresenceUpdate { presence }),
                        presentity,
                        watcher,
                    ),
                    (SubscriptionState::Active, None) => (
                        Event::Subscription(sub(SubscriptionOp::Approve)),
                        presentity,
                        watcher,
                    ),
                    (SubscriptionState::Terminated(reason), _) => (
                        Event::Subscription(Subscription {
                            reason: Some(reason.as_str().to_owned()),
                            ..sub(SubscriptionOp::Deny)
                        }),
                        presentity,
                        watcher,
                    ),
                    // The watcher's own adapter answered its request as pending already.
                    (SubscriptionState::Pending, _) => continue,
                },
                Output::UpstreamSubscribe { presentity } => {
                    let Some(watcher) = self.first_watcher(&presentity) else {
                        continue;
                    };
                    self.upstream_subscriber
                        .insert(presentity.clone(), watcher.clone());
                    let event = Subscription {
                        aggregate: true,
                        ..sub(SubscriptionOp::Subscribe)
                    };
                    (Event::Subscription(event), watcher, presentity)
                }
                Output::UpstreamUnsubscribe { presentity } => {
                    let Some(watcher) = self.upstream_subscriber.remove(&presentity) else {
                        continue;
                    };
                    let event = Subscription {
                        aggregate: true,
                        ..sub(SubscriptionOp::Unsubscribe)
                    };
                    (Event::Subscription(event), watcher, presentity)
                }
                Output::ProbeUpstream { presentity } => {
                    let watcher = match prober {
                        Some((w, p)) if *p == presentity => w.clone(),
                        _ => continue,
                    };
                    (
                        Event::Subscription(sub(SubscriptionOp::Probe)),
                        watcher,
                        presentity,
                    )
                }
                Output::ProbeResult {
                    watcher,
                    presentity,
                    presence,
                } => match presence {
                    Some(presence) => (
                        Event::Presence(PresenceUpdate { presence }),
                        presentity,
                        watcher,
                    ),
                    // Nothing known: the watcher hears nothing, as for an unanswered probe.
                    None => continue,
                },
            };
            self.send_generated(now, event, &from, &to);
        }
    }

    pub(super) fn first_watcher(&self, presentity: &Identity) -> Option<Identity> {
        self.hub
            .watchers(presentity)
            .find(|(_, state)| *state == SubscriptionState::Active)
            .map(|(w, _)| w.clone())
    }

    /// Queues an event the broker itself generated, from `from` to `to`, on the
    /// network `to` lives on.
    pub(super) fn send_generated(
        &mut self,
        now: Duration,
        event: Event,
        from: &Identity,
        to: &Identity,
    ) {
        let Some(destination) = self
            .router
            .owner(to)
            .and_then(|o| self.adapters.get(o.as_str()).map(|a| a.name.clone()))
        else {
            tracing::debug!(to = %to, "no running adapter owns the recipient of a presence event");
            return;
        };
        let origin = self
            .router
            .owner(from)
            .and_then(|o| self.adapters.get(o.as_str()).map(|a| a.name.clone()))
            .unwrap_or_else(|| destination.clone());
        let on = |adapter: &AdapterName| {
            let f = self.router.present(from, None, adapter).ok()?;
            let t = self.router.present(to, None, adapter).ok()?;
            Some((f, t))
        };
        let Some((from_address, to_address)) = on(&destination) else {
            return;
        };
        let (origin_from, origin_to) =
            on(&origin).unwrap_or_else(|| (from_address.clone(), to_address.clone()));
        let key = (destination.clone(), to_address.to_string());
        let waiting = self.destinations.get(&key).map_or(0, |d| d.waiting.len());
        if waiting >= self.config.max_queued_per_destination
            || self.queued_total >= self.config.max_queued_total
        {
            // Presence is soft state: under back-pressure an update is dropped rather than
            // queued without bound; the next change or refresh carries the state again.
            tracing::warn!(to = %to_address, kind = event.kind(), "queue full: presence event dropped");
            return;
        }
        let id = self.allocate_id();
        let envelope = Envelope {
            id,
            event,
            from: from_address,
            to: to_address,
            sender: from.clone(),
            recipient: to.clone(),
            origin,
            destination: destination.clone(),
            origin_from,
            origin_to,
            protocol_ids: Vec::new(),
            hops: self.config.max_hops,
            received_at_ms: 0,
        };
        self.enqueue(key, envelope, now, None, true);
    }

    /// If the hub's subscriptions changed since they were last written, writes them
    /// within [`SUBSCRIPTIONS_SAVE_INTERVAL`] (a burst of changes is written once).
    pub(super) fn note_hub_changes(&mut self, now: Duration) {
        if !self.config.spool {
            // Nothing is written: the hub need not remember what changed.
            self.hub.forget_changes();
            return;
        }
        if self.hub.subscription_changes() != self.hub_saved_changes {
            self.schedule_subscriptions_save(now);
        }
    }

    pub(super) fn schedule_subscriptions_save(&mut self, now: Duration) {
        if self.config.spool && self.hub_check_at.is_none() {
            self.hub_check_at = Some(now.saturating_add(SUBSCRIPTIONS_SAVE_INTERVAL));
        }
    }

    /// Records for the spool what changed in the hub's subscriptions since the last
    /// save: one record per subscription created or changed, a removal per one gone.
    /// Only the changed ones are looked at, whatever the number held.
    pub(super) fn save_subscriptions(&mut self, _now: Duration) {
        self.hub_check_at = None;
        self.hub_saved_changes = self.hub.subscription_changes();
        for (watcher, presentity, state) in self.hub.take_changed() {
            let key = subscription_key(&watcher, &presentity);
            let Some((active, expires_at)) = state else {
                self.ops.push(SpoolOp::State { key, value: None });
                continue;
            };
            let kept = KeptSubscription {
                watcher,
                presentity,
                active,
                expires_ms: expires_at.map(|t| self.wall_ms(t)),
            };
            match serde_json::to_vec(&kept) {
                Ok(bytes) => self.ops.push(SpoolOp::State {
                    key,
                    value: Some(bytes),
                }),
                Err(error) => {
                    tracing::error!(%error, "a presence subscription cannot be encoded for the spool");
                }
            }
        }
        if std::mem::take(&mut self.hub_saved_legacy) {
            self.ops.push(SpoolOp::State {
                key: SUBSCRIPTIONS_KEY.to_owned(),
                value: None,
            });
        }
    }

    /// Presence subscriptions kept by the last run (`state`: the spool's records): those
    /// of watchers whose network keeps them ([`DeliveryPolicy::resumes_subscriptions`])
    /// and that have not expired are re-created, and the gateway subscribes upstream
    /// again; no presence state is restored (the presentities' networks send it again).
    pub(super) fn restore_subscriptions(
        &mut self,
        now: Duration,
        state: &std::collections::BTreeMap<String, Vec<u8>>,
    ) {
        // Each with its own record's key; `None`: from an older version's table.
        let mut kept: Vec<(Option<String>, KeptSubscription)> = Vec::new();
        if let Some(bytes) = state.get(SUBSCRIPTIONS_KEY) {
            self.hub_saved_legacy = true;
            match serde_json::from_slice::<Vec<KeptSubscription>>(bytes) {
                Ok(all) => kept.extend(all.into_iter().map(|k| (None, k))),
                Err(error) => {
                    tracing::error!(%error, "the kept presence subscriptions cannot be read; they are dropped");
                }
            }
        }
        for (key, bytes) in state.range(SUBSCRIPTION_PREFIX.to_owned()..) {
            if !key.starts_with(SUBSCRIPTION_PREFIX) {
                break;
            }
            match serde_json::from_slice::<KeptSubscription>(bytes) {
                Ok(k) => kept.push((Some(key.clone()), k)),
                Err(error) => {
                    tracing::error!(%error, %key, "a kept presence subscription cannot be read; it is dropped");
                    self.ops.push(SpoolOp::State {
                        key: key.clone(),
                        value: None,
                    });
                }
            }
        }
        if kept.is_empty() && !self.hub_saved_legacy {
            return;
        }
        let (mut restored, mut dropped) = (0usize, 0usize);
        for (key, k) in kept {
            let expires_at = k.expires_ms.map(|ms| self.core_time(ms));
            let resumes = self
                .router
                .owner(&k.watcher)
                .and_then(|a| self.adapters.get(a.as_str()))
                .is_some_and(|a| a.policy.resumes_subscriptions);
            if !resumes || expires_at.is_some_and(|t| t <= now) {
                dropped += 1;
                // It leaves the spool with the next write.
                if let Some(key) = key {
                    self.ops.push(SpoolOp::State { key, value: None });
                }
                continue;
            }
            self.hub
                .restore_subscription(k.watcher, k.presentity, k.active, expires_at);
            restored += 1;
        }
        tracing::info!(restored, dropped, "presence subscriptions restored");
        if !self.hub_saved_legacy {
            // As the spool has them: nothing to write again.
            self.hub.forget_changes();
        }
        self.schedule_subscriptions_save(now);
        self.drain_hub(now, None);
    }
}
