//! The ticker: what expires or is due (subscriptions both ways, publications,
//! bindings, fetches), and the watcher dialogs kept across a restart.

use super::*;

impl Endpoint {
    /// Keeps the watcher dialogs in the spool when they changed (at most once a tick):
    /// after a restart they are ended cleanly instead of being left to a 481.
    pub(super) async fn keep_watchers(&self) {
        let state = self.state.clone();
        self.owner
            .with(move |m| {
                let mut sides: Vec<(DialogKey, Peer)> = m
                    .watchers
                    .iter()
                    .map(|(k, s)| (k.clone(), s.peer))
                    .collect();
                sides.sort_by(|a, b| a.0.cmp(&b.0));
                let keys: Vec<DialogKey> = sides.iter().map(|(k, _)| k.clone()).collect();
                if m.kept_watchers == keys {
                    return;
                }
                let kept: Vec<KeptWatcher> = sides
                    .iter()
                    .filter_map(|(key, peer)| {
                        let d = m.notifier.get(key)?;
                        Some(KeptWatcher {
                            call_id: d.call_id.clone(),
                            local_tag: d.local_tag.clone(),
                            remote_tag: d.remote_tag.clone(),
                            remote_target: d.remote_target.clone(),
                            route_set: d.route_set.clone(),
                            watcher: d.watcher.clone(),
                            presentity: d.presentity.clone(),
                            event_id: d.event_id.clone(),
                            next_cseq: d.next_cseq,
                            transport: peer.transport.token().to_owned(),
                            peer: peer.addr,
                        })
                    })
                    .collect();
                let value = if kept.is_empty() {
                    None
                } else {
                    match serde_json::to_vec(&kept) {
                        Ok(v) => Some(v),
                        Err(error) => {
                            tracing::warn!(%error, "watcher dialogs cannot be kept");
                            return;
                        }
                    }
                };
                if state.put(KEPT_WATCHERS, value) {
                    m.kept_watchers = keys;
                }
            })
            .await;
    }

    /// After a restart: the watcher dialogs of the last run are gone with it, so each
    /// watcher gets a final NOTIFY `terminated;reason=deactivated` — RFC 6665 §4.1.3:
    /// subscribe again at once — rather than silence until its refresh gets 481.
    pub(super) async fn end_kept_watchers(self: Arc<Self>) {
        let Some(bytes) = self.state.recovered().get(KEPT_WATCHERS).cloned() else {
            return;
        };
        let kept: Vec<KeptWatcher> = match serde_json::from_slice(&bytes) {
            Ok(k) => k,
            Err(error) => {
                tracing::warn!(%error, "the kept watcher dialogs cannot be read");
                Vec::new()
            }
        };
        tracing::info!(
            watchers = kept.len(),
            "ending the SIP watcher dialogs of the last run"
        );
        let now = self.now();
        let mut ends = Vec::new();
        for k in kept {
            let transport = match k.transport.as_str() {
                "TCP" => Transport::Tcp,
                "TLS" => Transport::Tls,
                _ => Transport::Udp,
            };
            let dialog = WatcherDialog {
                call_id: k.call_id,
                local_tag: k.local_tag,
                remote_tag: k.remote_tag,
                remote_target: k.remote_target,
                route_set: k.route_set,
                watcher: k.watcher,
                presentity: k.presentity,
                event_id: k.event_id,
                // NOTIFYs may have been sent after the dialog was kept: stay above them.
                next_cseq: k.next_cseq.saturating_add(1000),
                expires_at: now,
                active: true,
                fetch: false,
            };
            let peer = Peer {
                transport,
                addr: k.peer,
            };
            let this = self.clone();
            ends.push(tokio::spawn(async move {
                let state = SubState::Terminated {
                    reason: Some("deactivated".to_owned()),
                    retry_after: None,
                };
                this.send_notify(&dialog, peer, state, None).await
            }));
        }
        for end in ends {
            let _ = end.await;
        }
        // The next tick writes the dialogs of this run over the old ones (no key is
        // empty, so this never equals a real set).
        self.owner
            .tell(|m| m.kept_watchers = vec![(String::new(), String::new())]);
    }

    pub(super) async fn ticker(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(self.config.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => {
                    self.metrics.set_connected(false);
                    return;
                }
            }
            let now = self.now();
            self.keep_watchers().await;
            self.owner.tell(move |m| m.server.expire(now));
            self.winfo_expire(now).await;
            let expired = self
                .owner
                .with(move |m| {
                    let dialogs = m.notifier.expire(now);
                    dialogs
                        .into_iter()
                        .map(|dialog| {
                            let key = dialog.key();
                            let side = m.watchers.remove(&key);
                            (dialog, side)
                        })
                        .collect::<Vec<_>>()
                })
                .await;
            for (dialog, side) in expired {
                // A fetch was never a subscription at the broker (it was a probe).
                if !dialog.fetch {
                    self.submit_unsubscribe(&dialog).await;
                }
                if let Some(side) = side {
                    let this = self.clone();
                    tokio::spawn(async move {
                        let state = SubState::Terminated {
                            reason: Some("timeout".to_owned()),
                            retry_after: None,
                        };
                        this.send_notify(&dialog, side.peer, state, None).await;
                    });
                }
            }
            let due = self.owner.with(move |m| m.subscriber.due(now)).await;
            for event in due {
                match event {
                    SubscriberEvent::Subscribe(sub) => {
                        let peer = self.upstream_peer(&sub.presentity).await;
                        if let Some(peer) = peer {
                            // RFC 7248 §7: before refreshing a watcher's long-lived
                            // subscription, probe that watcher (its XMPP server must
                            // answer), which puts an equal burden on its network.
                            self.submit_from(
                                &sub.presentity,
                                &sub.watcher,
                                Event::Subscription(Subscription::new(SubscriptionOp::Probe)),
                            )
                            .await;
                            let this = self.clone();
                            tokio::spawn(async move {
                                this.run_subscribe(sub, peer).await;
                            });
                        }
                    }
                    SubscriberEvent::Terminated {
                        presentity,
                        watcher,
                        reason,
                        pending,
                    } => {
                        self.forget_upstream_peer(&presentity);
                        self.submit_deny(&presentity, &watcher, &reason).await;
                        self.deny_pending(&presentity, pending, &reason).await;
                    }
                    SubscriberEvent::Restart {
                        presentity,
                        watcher,
                    } => {
                        let this = self.clone();
                        tokio::spawn(async move {
                            this.resubscribe(watcher, presentity).await;
                        });
                    }
                }
            }
            let gone = self.owner.with(move |m| m.publications.expire(now)).await;
            for aor in gone {
                self.submit_closed(&aor).await;
            }
            self.owner.tell(move |m| m.registrar.expire(now));
        }
    }
}
