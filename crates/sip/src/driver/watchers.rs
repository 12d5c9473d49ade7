//! Presence, the gateway as notifier: SIP watchers' SUBSCRIBEs to users of other
//! networks, and the NOTIFYs that carry their state.

use super::*;

/// The parties of a SUBSCRIBE: its From tag, the subscriber (From) and the resource.
/// Inside the dialog the Request-URI is the gateway's Contact, so To names the resource.
pub(super) fn subscribe_parties(view: &RequestView) -> Result<(String, Address, Address), Fault> {
    let from_tag = view
        .from
        .tag()
        .ok_or_else(|| Fault::new(400, "Bad Request (From without a tag)"))?
        .to_owned();
    let subscriber = translate::address_of(&view.from.uri, "From")?;
    let resource = if view.to.tag().is_some() {
        translate::address_of(&view.to.uri, "To")?
    } else {
        translate::recipient(view)?
    };
    Ok((from_tag, subscriber, resource))
}

/// A SUBSCRIBE as the dialog state machine ([`Notifier`]) takes it, from `subscriber` to
/// `resource` (their AOR keys).
pub(super) fn subscribe_request(
    view: &RequestView,
    from_tag: String,
    subscriber: &str,
    resource: &str,
) -> Result<SubscribeRequest, Fault> {
    let expires = view
        .header("Expires")
        .map(|e| headers::parse_delta_seconds("Expires", e))
        .transpose()?;
    Ok(SubscribeRequest {
        call_id: view.call_id.clone(),
        from_tag,
        to_tag: view.to.tag().map(str::to_owned),
        expires,
        contact: dialog::contact_uri(view.header("Contact")).unwrap_or_default(),
        route_set: if view.to.tag().is_none() {
            dialog::record_route(&view.headers)
        } else {
            Vec::new()
        },
        watcher: subscriber.to_owned(),
        presentity: resource.to_owned(),
        event_id: EventHeader::parse(view.header("Event").unwrap_or_default())
            .ok()
            .and_then(|e| e.id().map(str::to_owned)),
    })
}

impl Endpoint {
    /// The 200 to a SUBSCRIBE: `Expires`, the gateway's `Contact`, and (RFC 3261
    /// §12.1.1: a dialog-creating 2xx copies them) the `Record-Route` values, so the
    /// subscriber's in-dialog requests keep going through its proxies.
    pub(super) fn subscribe_ok(&self, view: &RequestView, peer: Peer, expires: u32) -> Fault {
        let mut ok = Fault::new(200, "OK")
            .with_header("Expires", expires.to_string())
            .with_header(
                "Contact",
                contact_of(&self.sent_by(peer.transport), peer.transport),
            );
        for (name, value) in &view.headers {
            if name.eq_ignore_ascii_case("Record-Route") {
                ok = ok.with_header("Record-Route", value.clone());
            }
        }
        ok
    }

    pub(super) async fn on_subscribe(
        self: Arc<Self>,
        m: RawMessage,
        view: RequestView,
        peer: Peer,
    ) {
        let result = match check_event(&view) {
            Ok(Package::Presence) => self.subscribe_inner(&m, &view, peer).await,
            Ok(Package::WatcherInfo) => self.winfo_subscribe(&m, &view, peer).await,
            Err(fault) => Err(fault),
        };
        if let Err(fault) = result {
            self.reply(&m, peer, &fault, None).await;
        }
    }

    pub(super) async fn subscribe_inner(
        self: &Arc<Self>,
        m: &RawMessage,
        view: &RequestView,
        peer: Peer,
    ) -> Result<(), Fault> {
        if view.max_forwards == Some(0) {
            return Err(Fault::new(483, "Too Many Hops"));
        }
        let (from_tag, watcher, presentity) = subscribe_parties(view)?;
        let (watcher_key, presentity_key) = (aor_key(&watcher), aor_key(&presentity));
        let request = subscribe_request(view, from_tag, &watcher_key, &presentity_key)?;
        let (now, tag) = (self.now(), self.unique());
        let outcome = self
            .owner
            .with(move |m| m.notifier.on_subscribe(now, request, || tag))
            .await?;
        let (key, expires, op) = match &outcome {
            SubscribeOutcome::Created { key, expires }
            | SubscribeOutcome::Refreshed { key, expires } => {
                (key.clone(), *expires, SubscriptionOp::Subscribe)
            }
            SubscribeOutcome::Ended(d) => (d.key(), 0, SubscriptionOp::Unsubscribe),
        };
        // The watcher's other dialogs with this presentity (another device, or the
        // dialog a fetch is made beside): the broker knows the pair once, so a fetch
        // or the end of one dialog must not touch it while another dialog lives.
        let sibling = self.sibling_of(&key, &watcher_key, &presentity_key).await;
        if matches!(outcome, SubscribeOutcome::Created { .. }) && expires > 0 {
            // The SIP user follows this contact now: the contact's waiting request to
            // see the user passes the `contacts` policy.
            let (w, p) = (watcher_key.clone(), presentity_key.clone());
            let waiting = self
                .owner
                .with(move |m| m.authorization.on_follow(&w, &p))
                .await;
            if let Some(contact) = waiting {
                self.winfo_changed(&watcher_key).await;
                self.submit_from(
                    &watcher_key,
                    &contact,
                    Event::Subscription(Subscription::new(SubscriptionOp::Approve)),
                )
                .await;
            }
        }
        let created = matches!(outcome, SubscribeOutcome::Created { .. });
        let refreshed = matches!(outcome, SubscribeOutcome::Refreshed { .. });
        // The state the other dialog shows is this one's first state.
        let first_body = sibling.as_ref().and_then(|s| s.1.clone());
        let side = {
            let key = key.clone();
            self.owner
                .with(move |m| {
                    if created {
                        m.watchers.insert(
                            key.clone(),
                            WatcherSide {
                                peer,
                                last_body: first_body,
                                lock: Arc::new(tokio::sync::Mutex::new(())),
                            },
                        );
                    } else if refreshed {
                        if let Some(w) = m.watchers.get_mut(&key) {
                            w.peer = peer;
                        }
                    }
                    m.watchers.get(&key).cloned()
                })
                .await
        };
        let Some(side) = side else {
            return Err(Fault::new(481, "Subscription Does Not Exist"));
        };
        // Hold the dialog while answering, so that a NOTIFY caused by the broker's
        // answer cannot overtake the 200 and the first NOTIFY.
        let guard = side.lock.clone().lock_owned().await;
        // RFC 6665 §4.4.3 fetch or the end of one of several dialogs (`expires` is 0
        // for those alone): the pair stays as it is at the broker (the other dialog still
        // watches); the fetch is answered with the state that dialog shows.
        let leave_broker = sibling.is_some() && expires == 0;
        let mut inbound = Inbound::new(
            Event::Subscription(Subscription {
                expires_secs: Some(expires),
                ..Subscription::new(op)
            }),
            watcher,
            presentity,
        );
        inbound.received_at_ms = unix_now_ms();
        inbound.hops = view.max_forwards;
        let submitted = if leave_broker {
            Ok(())
        } else {
            // A SUBSCRIBE is answered with the broker's verdict: never wait for room.
            self.submitter.try_submit(inbound).await.map(|_| ())
        };
        if let Err(rejected) = submitted {
            if created {
                self.forget_watcher(&key, true);
            }
            return Err(translate::fault_for(&rejected));
        }
        let ok = self.subscribe_ok(view, peer, expires);
        self.reply(m, peer, &ok, Some(&key.1)).await;
        match outcome {
            SubscribeOutcome::Ended(dialog) => {
                self.forget_watcher(&key, false);
                let state = SubState::Terminated {
                    reason: Some("timeout".to_owned()),
                    retry_after: None,
                };
                self.send_notify(&dialog, peer, state, None).await;
            }
            // A fetch with no other dialog to answer from: its one NOTIFY waits for
            // the state the broker was asked for (a probe of the presentity's network),
            // which `deliver_to_watchers` sends; without it, the ticker sends it bare
            // after `FETCH_WAIT` (RFC 6665 §4.4.3: a fetch returns the current state).
            SubscribeOutcome::Created { .. } if expires == 0 && sibling.is_none() => {}
            _ => {
                // A watcher already authorized on another dialog is authorized on this
                // one: its first NOTIFY is active with the known state.
                let activate = sibling.as_ref().is_some_and(|s| s.0);
                let body = side.last_body.clone();
                self.notify_locked(&key, activate, body).await;
            }
        }
        drop(guard);
        Ok(())
    }

    /// Another live dialog of `watcher` with `presentity` than `key`: whether it is
    /// active, and the last state it was sent (the most informed one when several).
    pub(super) async fn sibling_of(
        &self,
        key: &DialogKey,
        watcher: &str,
        presentity: &str,
    ) -> Option<(bool, Option<Vec<u8>>)> {
        let now = self.now();
        let (key, watcher, presentity) = (key.clone(), watcher.to_owned(), presentity.to_owned());
        self.owner
            .with(move |m| {
                m.notifier
                    .find(&watcher, &presentity)
                    .into_iter()
                    .filter(|k| *k != key)
                    .filter_map(|k| {
                        let d = m.notifier.get(&k)?;
                        // A fetch's dialog ends with its one NOTIFY: it is no one's sibling.
                        if d.fetch || d.expires_at <= now {
                            return None;
                        }
                        let side = m.watchers.get(&k)?;
                        Some((d.active, side.last_body.clone()))
                    })
                    .max_by_key(|(active, body)| (*active, body.is_some()))
            })
            .await
    }

    /// Forgets the driver's side of the watcher dialog `key`, and the dialog itself
    /// when `dialog`.
    pub(super) fn forget_watcher(&self, key: &DialogKey, dialog: bool) {
        let key = key.clone();
        self.owner.tell(move |m| {
            if dialog {
                m.notifier.remove(&key);
            }
            m.watchers.remove(&key);
        });
    }

    /// Sends the next NOTIFY of `key` (the dialog lock is held by the caller).
    pub(super) async fn notify_locked(
        self: &Arc<Self>,
        key: &DialogKey,
        activate: bool,
        body: Option<Vec<u8>>,
    ) -> u16 {
        let now = self.now();
        let next = {
            let key = key.clone();
            self.owner
                .with(move |m| {
                    let (dialog, state) = m.notifier.next_notify(&key, now, activate)?;
                    let peer = m.watchers.get(&key).map(|w| w.peer);
                    Some((dialog, state, peer))
                })
                .await
        };
        let Some((dialog, state, peer)) = next else {
            return 481;
        };
        let Some(peer) = peer else {
            return 481;
        };
        let terminated = matches!(state, SubState::Terminated { .. });
        let body = if dialog.active { body } else { None };
        let status = self.send_notify(&dialog, peer, state, body).await;
        if terminated {
            self.forget_watcher(key, false);
        } else if status >= 300 {
            let key = key.clone();
            let gone = self
                .owner
                .with(move |m| {
                    let gone = m.notifier.on_notify_failure(&key, status).is_some();
                    if gone {
                        m.watchers.remove(&key);
                    }
                    gone
                })
                .await;
            if gone {
                // RFC 6665 §4.2.2: the watcher is gone; so is its subscription.
                self.submit_unsubscribe(&dialog).await;
            }
        }
        status
    }

    /// Tells the broker that `dialog` (already removed) ended — unless the watcher has
    /// another dialog with that presentity, which keeps the pair.
    pub(super) async fn submit_unsubscribe(&self, dialog: &WatcherDialog) {
        let (w, p) = (dialog.watcher.clone(), dialog.presentity.clone());
        let others = self
            .owner
            .with(move |m| !m.notifier.find(&w, &p).is_empty())
            .await;
        if others {
            return;
        }
        let (Ok(watcher), Ok(presentity)) = (
            Address::parse(&dialog.watcher),
            Address::parse(&dialog.presentity),
        ) else {
            return;
        };
        let inbound = Inbound::new(
            Event::Subscription(Subscription::new(SubscriptionOp::Unsubscribe)),
            watcher,
            presentity,
        );
        let _ = self.submitter.submit(inbound).await;
    }

    pub(super) async fn send_notify(
        &self,
        dialog: &WatcherDialog,
        peer: Peer,
        state: SubState,
        body: Option<Vec<u8>>,
    ) -> u16 {
        self.send_notify_of("presence", PIDF, dialog, peer, state, body)
            .await
    }

    /// A NOTIFY of `package` with a `content_type` body.
    pub(super) async fn send_notify_of(
        &self,
        package: &str,
        content_type: &str,
        dialog: &WatcherDialog,
        peer: Peer,
        state: SubState,
        body: Option<Vec<u8>>,
    ) -> u16 {
        let event = match &dialog.event_id {
            Some(id) => format!("{package};id={id}"),
            None => package.to_owned(),
        };
        // RFC 3261 §12.2.1.1: to the remote target along the route set; without one,
        // back where the watcher's requests come from.
        let hop = dialog::in_dialog(&dialog.remote_target, &dialog.route_set);
        let peer = if dialog.route_set.is_empty() {
            peer
        } else {
            self.hop_peer(&hop.next_hop, peer).await
        };
        let mut headers: Vec<(String, String)> = hop
            .routes
            .iter()
            .map(|r| ("Route".to_owned(), r.clone()))
            .collect();
        headers.extend([
            ("Event".to_owned(), event),
            ("Subscription-State".to_owned(), state.to_string()),
            (
                "Contact".to_owned(),
                contact_of(&self.sent_by(peer.transport), peer.transport),
            ),
        ]);
        let from = format!("<{}>;tag={}", dialog.presentity, dialog.local_tag);
        let to = format!("<{}>;tag={}", dialog.watcher, dialog.remote_tag);
        let body_ref = body.as_deref().map(|b| (content_type, b));
        let result = self
            .transact(peer, None, |branch, sent_by| {
                OutRequest {
                    method: "NOTIFY",
                    uri: &hop.request_uri,
                    via_transport: peer.transport.token(),
                    via_sent_by: sent_by,
                    branch,
                    from: &from,
                    to: &to,
                    call_id: &dialog.call_id,
                    cseq: dialog.next_cseq,
                    max_forwards: 70,
                    headers: &headers,
                    body: body_ref,
                }
                .to_bytes()
            })
            .await;
        result.status
    }

    /// Delivers presence (or an approval/denial) to the SIP watchers of the envelope's
    /// sender.
    pub(super) async fn deliver_to_watchers(
        self: &Arc<Self>,
        envelope: &Envelope,
        body: Option<Vec<u8>>,
        terminate: Option<String>,
    ) -> DeliveryOutcome {
        let watcher = aor_key(&envelope.to);
        let presentity = aor_key(&envelope.from);
        let keys = self
            .owner
            .with(move |m| m.notifier.find(&watcher, &presentity))
            .await;
        if keys.is_empty() {
            // The watcher went away in the meantime: nothing to tell.
            return DeliveryOutcome::Accepted;
        }
        let mut worst = 200;
        for key in keys {
            let side = {
                let key = key.clone();
                self.owner
                    .with(move |m| m.watchers.get(&key).cloned())
                    .await
            };
            let Some(side) = side else { continue };
            let _guard = side.lock.clone().lock_owned().await;
            if let Some(reason) = &terminate {
                let dialog = {
                    let key = key.clone();
                    self.owner
                        .with(move |m| {
                            m.watchers.remove(&key);
                            m.notifier.remove(&key)
                        })
                        .await
                };
                if let Some(dialog) = dialog {
                    let state = SubState::Terminated {
                        reason: Some(reason.clone()),
                        retry_after: None,
                    };
                    worst = worst.max(self.send_notify(&dialog, side.peer, state, None).await);
                }
                continue;
            }
            if let Some(body) = &body {
                let (key, body) = (key.clone(), body.clone());
                self.owner.tell(move |m| {
                    if let Some(w) = m.watchers.get_mut(&key) {
                        w.last_body = Some(body);
                    }
                });
            }
            let body = body.clone().or(side.last_body.clone());
            worst = worst.max(self.notify_locked(&key, true, body).await);
        }
        translate::presence_outcome_for(worst, "NOTIFY")
    }
}
