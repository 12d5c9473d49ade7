//! Presence, the gateway as subscriber: its SUBSCRIBEs to SIP users on behalf of
//! watchers of other networks, their NOTIFYs, and the presence authorization policy
//! applied to those watchers.

use super::*;

impl Endpoint {
    pub(super) async fn on_notify(
        self: &Arc<Self>,
        m: &RawMessage,
        view: &RequestView,
        peer: Peer,
    ) {
        let fault = self
            .notify_inner(view)
            .await
            .err()
            .unwrap_or(Fault::new(200, "OK"));
        self.reply(m, peer, &fault, None).await;
    }

    pub(super) async fn notify_inner(self: &Arc<Self>, view: &RequestView) -> Result<(), Fault> {
        presence_only(view)?;
        let state = view
            .header("Subscription-State")
            .ok_or_else(|| Fault::new(400, "Bad Request (missing Subscription-State)"))
            .and_then(|s| SubState::parse(s).map_err(Fault::from))?;
        // RFC 6665 §8.1.2: a NOTIFY's extensions the gateway does not understand are
        // dropped, not refused.
        let presence = pidf_body(view, true)?;
        let now = self.now();
        let call_id = view.call_id.clone();
        let (to_tag, from_tag) = (
            view.to.tag().map(str::to_owned),
            view.from.tag().map(str::to_owned),
        );
        // A NOTIFY is a target refresh request, and may establish the dialog before
        // the 2xx (RFC 6665 §4.1.2.4).
        let contact = dialog::contact_uri(view.header("Contact"));
        let routes = dialog::record_route(&view.headers);
        let effect = self
            .owner
            .with(move |m| {
                let effect = m.subscriber.on_notify(
                    now,
                    &call_id,
                    to_tag.as_deref(),
                    from_tag.as_deref(),
                    &state,
                )?;
                m.subscriber.learn_route(&call_id, contact, routes, false);
                Some(effect)
            })
            .await;
        let Some(effect) = effect else {
            return Err(Fault::new(481, "Subscription Does Not Exist"));
        };
        match effect {
            NotifyEffect::State {
                presentity,
                watcher,
                approve,
            } => {
                // RFC 7248 §4.1: the first `active` NOTIFY is the SIP side's
                // authorization; the waiting watchers hear it before the state.
                for waiting in approve {
                    // The SIP side authorized the SUBSCRIBE sent in `watcher`'s name;
                    // the others who share it pass the policy.
                    if crate::authorization::mailbox(&waiting)
                        == crate::authorization::mailbox(&watcher)
                    {
                        self.submit_from(
                            &presentity,
                            &waiting,
                            Event::Subscription(Subscription::new(SubscriptionOp::Approve)),
                        )
                        .await;
                    } else {
                        self.apply_policy(&presentity, &waiting).await;
                    }
                }
                if let Some(mut presence) = presence {
                    presence.entity = presentity.clone();
                    self.submit_from(
                        &presentity,
                        &watcher,
                        Event::Presence(PresenceUpdate { presence }),
                    )
                    .await;
                }
            }
            NotifyEffect::Ended => {}
            NotifyEffect::Terminated {
                presentity,
                watcher,
                reason,
                pending,
                ..
            } => {
                self.forget_upstream_peer(&presentity);
                self.submit_deny(&presentity, &watcher, &reason).await;
                self.deny_pending(&presentity, pending, &reason).await;
            }
        }
        Ok(())
    }

    pub(super) async fn submit_from(&self, from: &str, to: &str, event: Event) {
        let (Ok(from), Ok(to)) = (Address::parse(from), Address::parse(to)) else {
            return;
        };
        let mut inbound = Inbound::new(event, from, to);
        inbound.received_at_ms = unix_now_ms();
        if let Err(rejected) = self.submitter.submit(inbound).await {
            tracing::debug!(%rejected, "presence submission refused");
        }
    }

    pub(super) async fn submit_deny(&self, presentity: &str, watcher: &str, reason: &str) {
        let event = Event::Subscription(Subscription {
            aggregate: true,
            reason: Some(reason.to_owned()),
            ..Subscription::new(SubscriptionOp::Deny)
        });
        self.submit_from(presentity, watcher, event).await;
    }

    /// Each watcher in `pending` (waiting for its approval) is refused: the gateway's
    /// subscription for them ended before it was authorized.
    pub(super) async fn deny_pending(&self, presentity: &str, pending: Vec<String>, reason: &str) {
        for watcher in pending {
            let event = Event::Subscription(Subscription {
                reason: Some(reason.to_owned()),
                ..Subscription::new(SubscriptionOp::Deny)
            });
            self.submit_from(presentity, &watcher, event).await;
        }
    }

    /// The gateway is the presence server of `presentity` (a SIP user who publishes to
    /// it, or a registrar user the gateway cannot subscribe to): its published state, if
    /// any. `None`: the presentity's own side is subscribed to.
    pub(super) async fn local_presentity(
        &self,
        presentity_text: &str,
        presentity: &cpim::address::SipUri,
    ) -> Option<Option<Presence>> {
        let may_be_local =
            self.config.outbound_proxy.is_none() && self.serves(presentity.host().as_str());
        let (now, key) = (self.now(), presentity_text.to_owned());
        self.owner
            .with(move |m| {
                let published = m.published.get(&key).cloned();
                let local = published.is_some()
                    || (may_be_local && m.registrar.lookup(now, &key).is_none());
                local.then_some(published)
            })
            .await
    }

    /// Where the gateway's subscription to `presentity` goes.
    pub(super) async fn upstream_peer(&self, presentity: &str) -> Option<Peer> {
        let key = presentity.to_owned();
        self.owner
            .with(move |m| m.upstream_peers.get(&key).copied())
            .await
    }

    /// The gateway's subscription to `presentity` ended.
    pub(super) fn forget_upstream_peer(&self, presentity: &str) {
        let key = presentity.to_owned();
        self.owner.tell(move |m| {
            m.upstream_peers.remove(&key);
        });
    }

    /// A watcher of another network asks to follow a SIP user (RFC 7248 §4.1). The SIP
    /// side authorizes the gateway's SUBSCRIBE: the watcher is approved on the first
    /// `active` NOTIFY (at once if the gateway's subscription is active already, or if
    /// the gateway itself is the user's presence server), refused if it is rejected.
    pub(super) async fn authorize_watcher(
        self: &Arc<Self>,
        envelope: &Envelope,
    ) -> DeliveryOutcome {
        let (watcher, presentity) = match subscription_parties(envelope) {
            Ok(parties) => parties,
            Err(outcome) => return outcome,
        };
        let presentity_text = aor_key(&envelope.to);
        let watcher_text = envelope.from.to_string();
        if self
            .local_presentity(&presentity_text, &presentity)
            .await
            .is_some()
        {
            // The gateway is the user's presence server: its policy decides.
            self.apply_policy(&presentity_text, &watcher_text).await;
            return DeliveryOutcome::Delivered;
        }
        let decision = {
            let (p, w) = (presentity_text.clone(), watcher_text.clone());
            self.owner
                .with(move |m| m.subscriber.authorize(&p, &w))
                .await
        };
        match decision {
            // The SIP side authorized the gateway's subscription for its first watcher,
            // not for this one: the policy decides.
            Authorize::Now => self.apply_policy(&presentity_text, &watcher_text).await,
            Authorize::Wait => {}
            Authorize::Subscribe => {
                // Its failure is the waiting watchers' refusal, sent already.
                let _ = self
                    .start_upstream(watcher, presentity_text.clone(), &presentity, false)
                    .await;
            }
        }
        DeliveryOutcome::Delivered
    }

    /// Approves, leaves waiting or refuses `watcher`'s request to see SIP user `user`,
    /// as the presence authorization policy says (the user follows the watcher itself:
    /// a live SUBSCRIBE of it to the watcher's presence).
    pub(super) async fn apply_policy(self: &Arc<Self>, user: &str, watcher: &str) {
        let followed = Address::parse(watcher).ok().map(|w| aor_key(&w));
        let (u, w) = (user.to_owned(), watcher.to_owned());
        let verdict = self
            .owner
            .with(move |m| {
                let followed = followed.is_some_and(|f| !m.notifier.find(&u, &f).is_empty());
                m.authorization.decide(&u, &w, followed)
            })
            .await;
        self.winfo_changed(user).await;
        let op = match verdict {
            crate::authorization::Verdict::Approve => SubscriptionOp::Approve,
            crate::authorization::Verdict::Wait => return,
            crate::authorization::Verdict::Refuse => SubscriptionOp::Deny,
        };
        let event = Event::Subscription(Subscription {
            reason: (op == SubscriptionOp::Deny).then(|| "rejected".to_owned()),
            ..Subscription::new(op)
        });
        self.submit_from(user, watcher, event).await;
    }

    /// A watcher that was waiting for its approval gave up; the gateway's subscription
    /// ends if it served only such watchers.
    pub(super) async fn withdraw_watcher(self: &Arc<Self>, envelope: &Envelope) -> DeliveryOutcome {
        let presentity = aor_key(&envelope.to);
        let (p, w) = (presentity.clone(), envelope.from.to_string());
        let unused = self
            .owner
            .with(move |m| {
                m.authorization.withdraw(&p, &w);
                m.subscriber.withdraw(&p, &w)
            })
            .await;
        self.winfo_changed(&presentity).await;
        if unused {
            return self.stop_upstream(&presentity).await;
        }
        DeliveryOutcome::Accepted
    }

    /// Starts the gateway's subscription to `presentity` as `watcher`. When it cannot
    /// even be sent, the watchers waiting for it are refused; after a `lost` dialog,
    /// the broker's watchers are told too that it ended (`giveup`).
    pub(super) async fn start_upstream(
        self: &Arc<Self>,
        watcher: String,
        presentity_text: String,
        presentity: &cpim::address::SipUri,
        lost: bool,
    ) -> DeliveryOutcome {
        let peer = match self.target_for(presentity, 0, false).await {
            Ok(t) => t.peer,
            Err(outcome) => {
                let pending = {
                    let (p, forget) = (presentity_text.clone(), lost);
                    self.owner
                        .with(move |m| {
                            if forget {
                                m.upstream_peers.remove(&p);
                            }
                            m.subscriber.abandon(&p)
                        })
                        .await
                };
                let reason = if lost {
                    self.submit_deny(&presentity_text, &watcher, "giveup").await;
                    "giveup"
                } else {
                    "noresource"
                };
                self.deny_pending(&presentity_text, pending, reason).await;
                return outcome;
            }
        };
        let (now, max_expires) = (self.now(), self.config.policy.max_expires);
        let (call_id, tag) = (format!("{}@gw", self.unique()), self.unique());
        let sub = self
            .owner
            .with(move |m| {
                m.upstream_peers.insert(presentity_text.clone(), peer);
                m.subscriber
                    .start(now, watcher, presentity_text, max_expires, call_id, tag)
            })
            .await;
        self.run_subscribe(sub, peer).await
    }

    pub(super) async fn subscribe_upstream(
        self: &Arc<Self>,
        envelope: &Envelope,
    ) -> DeliveryOutcome {
        let (watcher, presentity) = match subscription_parties(envelope) {
            Ok(parties) => parties,
            Err(outcome) => return outcome,
        };
        let presentity_text = aor_key(&envelope.to);
        // A SIP user who publishes to the gateway has the gateway as presence server:
        // nothing to subscribe to; the watchers get the published state.
        if let Some(published) = self.local_presentity(&presentity_text, &presentity).await {
            if let Some(presence) = published {
                let watcher_text = envelope.from.to_string();
                self.submit_from(
                    &presentity_text,
                    &watcher_text,
                    Event::Presence(PresenceUpdate { presence }),
                )
                .await;
            }
            return DeliveryOutcome::Delivered;
        }
        // The subscription started for the first watcher's approval serves them all.
        let p = presentity_text.clone();
        if self
            .owner
            .with(move |m| m.subscriber.mark_aggregate(&p))
            .await
        {
            return DeliveryOutcome::Delivered;
        }
        self.start_upstream(watcher, presentity_text, &presentity, false)
            .await
    }

    pub(super) async fn run_subscribe(
        self: &Arc<Self>,
        mut sub: crate::subscription::OutSubscription,
        peer: Peer,
    ) -> DeliveryOutcome {
        for _ in 0..3 {
            let final_ = self.send_subscribe(&sub, peer).await;
            let response = final_.response.as_ref();
            let header = |name: &str| response.and_then(|r| r.header(name));
            let to_tag = header("To")
                .and_then(|t| NameAddr::parse("To", t).ok())
                .and_then(|t| t.tag().map(str::to_owned));
            let granted =
                header("Expires").and_then(|e| headers::parse_delta_seconds("Expires", e).ok());
            let min = header("Min-Expires")
                .and_then(|e| headers::parse_delta_seconds("Min-Expires", e).ok());
            let route = match (response, (200..300).contains(&final_.status)) {
                (Some(r), true) => Some((
                    dialog::contact_uri(r.header("Contact")),
                    dialog::record_route(&r.headers),
                )),
                _ => None,
            };
            let (now, call_id, status) = (self.now(), sub.call_id.clone(), final_.status);
            let next = self
                .owner
                .with(move |m| {
                    if let Some((contact, routes)) = route {
                        m.subscriber.learn_route(&call_id, contact, routes, true);
                    }
                    m.subscriber
                        .on_response(now, &call_id, status, to_tag.as_deref(), granted, min)
                })
                .await;
            match next {
                None => return translate::presence_outcome_for(final_.status, &final_.reason),
                Some(SubscriberEvent::Subscribe(retry)) => sub = retry,
                Some(SubscriberEvent::Terminated {
                    presentity,
                    watcher,
                    reason,
                    pending,
                }) => {
                    self.forget_upstream_peer(&presentity);
                    self.submit_deny(&presentity, &watcher, &reason).await;
                    self.deny_pending(&presentity, pending, &reason).await;
                    return translate::presence_outcome_for(final_.status, &final_.reason);
                }
                Some(SubscriberEvent::Restart {
                    presentity,
                    watcher,
                }) => {
                    tracing::debug!(
                        %presentity,
                        status = final_.status,
                        "refresh failed: subscribing anew"
                    );
                    return Box::pin(self.resubscribe(watcher, presentity)).await;
                }
            }
        }
        failed(
            Condition::NotAcceptable,
            "the notifier keeps refusing the duration".into(),
        )
    }

    pub(super) async fn send_subscribe(
        &self,
        sub: &crate::subscription::OutSubscription,
        peer: Peer,
    ) -> Final {
        // Inside the dialog: to the notifier's Contact along the route set (RFC 3261
        // §12.2.1.1), not to the address of record, which a record-routing proxy
        // refuses with 404 once the dialog exists.
        let (uri, routes, peer) = if sub.remote_tag.is_some() {
            let target = sub.remote_target.as_deref().unwrap_or(&sub.presentity);
            let route_set = sub.route_set.as_deref().unwrap_or_default();
            let hop = dialog::in_dialog(target, route_set);
            // Without a route set the configured outbound proxy still carries every
            // request (no proxy asked to stay in the path), and without a Contact there
            // is nowhere else to go.
            let peer = if route_set.is_empty()
                && (sub.remote_target.is_none() || self.config.outbound_proxy.is_some())
            {
                peer
            } else {
                self.hop_peer(&hop.next_hop, peer).await
            };
            (hop.request_uri, hop.routes, peer)
        } else {
            (sub.presentity.clone(), Vec::new(), peer)
        };
        let mut headers: Vec<(String, String)> = routes
            .iter()
            .map(|r| ("Route".to_owned(), r.clone()))
            .collect();
        headers.extend([
            ("Event".to_owned(), "presence".to_owned()),
            ("Accept".to_owned(), PIDF.to_owned()),
            ("Expires".to_owned(), sub.expires.to_string()),
            (
                "Contact".to_owned(),
                contact_of(&self.sent_by(peer.transport), peer.transport),
            ),
        ]);
        let from = format!("<{}>;tag={}", sub.watcher, sub.local_tag);
        let to = match &sub.remote_tag {
            Some(tag) => format!("<{}>;tag={tag}", sub.presentity),
            None => format!("<{}>", sub.presentity),
        };
        let tls_domain = super::sending::tls_domain_of(&uri);
        self.transact_auth(
            peer,
            tls_domain.as_deref(),
            "SUBSCRIBE",
            &uri,
            |branch, sent_by, auth| {
                let mut all = headers.clone();
                all.extend(auth.iter().cloned());
                OutRequest {
                    method: "SUBSCRIBE",
                    uri: &uri,
                    via_transport: peer.transport.token(),
                    via_sent_by: sent_by,
                    branch,
                    from: &from,
                    to: &to,
                    call_id: &sub.call_id,
                    cseq: sub.next_cseq + u32::from(!auth.is_empty()),
                    max_forwards: 70,
                    headers: &all,
                    body: None,
                }
                .to_bytes()
            },
        )
        .await
    }

    /// A new, out-of-dialog subscription to `presentity` for `watcher` after the old
    /// dialog was lost; if it fails, the watchers hear why (an aggregate `Deny`).
    pub(super) async fn resubscribe(
        self: &Arc<Self>,
        watcher: String,
        presentity: String,
    ) -> DeliveryOutcome {
        let uri = match cpim::address::SipUri::parse(&presentity) {
            Ok(uri) => uri,
            Err(e) => return failed(Condition::JidMalformed, e.to_string()),
        };
        self.start_upstream(watcher, presentity, &uri, true).await
    }

    /// Where a request whose next hop is `uri` (a route or a remote target) goes;
    /// `fallback` when it cannot be resolved.
    pub(super) async fn hop_peer(&self, uri: &str, fallback: Peer) -> Peer {
        let Ok(uri) = cpim::address::SipUri::parse(uri) else {
            return fallback;
        };
        match crate::transport::resolve(&uri).await {
            Ok(peer) if self.transports.can_send(peer.transport) => peer,
            _ => fallback,
        }
    }

    pub(super) async fn unsubscribe_upstream(
        self: &Arc<Self>,
        envelope: &Envelope,
    ) -> DeliveryOutcome {
        self.stop_upstream(&aor_key(&envelope.to)).await
    }

    pub(super) async fn stop_upstream(self: &Arc<Self>, presentity: &str) -> DeliveryOutcome {
        let (now, key) = (self.now(), presentity.to_owned());
        let (sub, peer) = self
            .owner
            .with(move |m| (m.subscriber.stop(now, &key), m.upstream_peers.remove(&key)))
            .await;
        if let (Some(sub), Some(peer)) = (sub, peer) {
            let final_ = self.send_subscribe(&sub, peer).await;
            return translate::presence_outcome_for(final_.status, &final_.reason);
        }
        DeliveryOutcome::Accepted
    }
}

/// The watcher (SIP text) and the presentity (SIP URI) of a subscription envelope, or the
/// failure to report when either is not a SIP address.
fn subscription_parties(
    envelope: &Envelope,
) -> Result<(String, cpim::address::SipUri), DeliveryOutcome> {
    match (
        translate::sip_text(&envelope.from),
        translate::sip_uri(&envelope.to),
    ) {
        (Ok(w), Ok(p)) => Ok((w, p)),
        (Err(e), _) | (_, Err(e)) => Err(failed(Condition::JidMalformed, e.to_string())),
    }
}
