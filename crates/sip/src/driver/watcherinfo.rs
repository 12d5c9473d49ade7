//! The driver's side of watcher information (RFC 3857): a SIP user's SUBSCRIBE to
//! `presence.winfo` for its own address, and the NOTIFYs that tell it who asks to see
//! its presence and what the policy decided ([`crate::winfo`] builds the documents,
//! [`crate::authorization`] holds the state).
//!
//! Only the user itself may subscribe (RFC 3857 §5.1.3: the watcher-information
//! subscriber is the presentity), and only for an address of the gateway's SIP domains;
//! with the registrar on, its digest challenge applies as to any SUBSCRIBE claiming one
//! of its accounts. The subscription is authorized at once (`active`). Its dialogs are
//! not kept across a restart: a refresh after one gets 481, and the phone subscribes
//! again.

use std::sync::Arc;
use std::time::Duration;

use crate::headers::SubState;
use crate::subscription::{DialogKey, SubscribeOutcome, WatcherDialog};
use crate::translate::aor_key;
use crate::transport::Peer;
use crate::winfo::{self, WATCHERINFO};
use crate::wire::{Fault, RawMessage, RequestView};

use super::watchers::{subscribe_parties, subscribe_request};
use super::Endpoint;

impl Endpoint {
    /// Handles a SUBSCRIBE to `presence.winfo`.
    pub(super) async fn winfo_subscribe(
        self: &Arc<Self>,
        m: &RawMessage,
        view: &RequestView,
        peer: Peer,
    ) -> Result<(), Fault> {
        if view.max_forwards == Some(0) {
            return Err(Fault::new(483, "Too Many Hops"));
        }
        if !winfo::accepts(view.header("Accept")) {
            return Err(Fault::new(406, "Not Acceptable").with_header("Accept", WATCHERINFO));
        }
        let (from_tag, subscriber, resource) = subscribe_parties(view)?;
        let (subscriber_key, resource_key) = (aor_key(&subscriber), aor_key(&resource));
        if !subscriber_key.eq_ignore_ascii_case(&resource_key) {
            return Err(Fault::new(
                403,
                "Forbidden (watcher information is for the user itself only)",
            ));
        }
        let own = self
            .config
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(resource.domain()));
        if !own {
            return Err(Fault::new(
                404,
                "Not Found (not a user of this gateway's SIP domains)",
            ));
        }
        let request = subscribe_request(view, from_tag, &subscriber_key, &resource_key)?;
        let (now, tag) = (self.now(), self.unique());
        let outcome = self
            .owner
            .with(move |m| {
                let outcome = m.winfo.on_subscribe(now, request, || tag)?;
                let key = match &outcome {
                    SubscribeOutcome::Created { key, .. }
                    | SubscribeOutcome::Refreshed { key, .. } => key.clone(),
                    SubscribeOutcome::Ended(d) => d.key(),
                };
                if !matches!(outcome, SubscribeOutcome::Ended(_)) {
                    m.winfo_peers.insert(key, peer);
                }
                Ok::<_, Fault>(outcome)
            })
            .await?;
        let (key, expires) = match &outcome {
            SubscribeOutcome::Created { key, expires }
            | SubscribeOutcome::Refreshed { key, expires } => (key.clone(), *expires),
            SubscribeOutcome::Ended(d) => (d.key(), 0),
        };
        let ok = self.subscribe_ok(view, peer, expires);
        self.reply(m, peer, &ok, Some(&key.1)).await;
        match outcome {
            SubscribeOutcome::Ended(dialog) => {
                let state = SubState::Terminated {
                    reason: Some("timeout".to_owned()),
                    retry_after: None,
                };
                let body = self.winfo_document(&dialog).await;
                self.send_winfo(&dialog, peer, state, body).await;
            }
            _ => self.winfo_notify(&key).await,
        }
        Ok(())
    }

    /// The watchers of `user` changed: each of its watcher-information subscriptions
    /// hears the new list.
    pub(super) async fn winfo_changed(self: &Arc<Self>, user: &str) {
        let user = user.to_owned();
        let keys = self.owner.with(move |m| m.winfo.find(&user, &user)).await;
        for key in keys {
            let this = self.clone();
            tokio::spawn(async move { this.winfo_notify(&key).await });
        }
    }

    /// Ends the watcher-information subscriptions that expired.
    pub(super) async fn winfo_expire(self: &Arc<Self>, now: Duration) {
        let expired = self
            .owner
            .with(move |m| {
                let dialogs = m.winfo.expire(now);
                dialogs
                    .into_iter()
                    .filter_map(|dialog| {
                        let key = dialog.key();
                        let peer = m.winfo_peers.remove(&key)?;
                        Some((dialog, peer))
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        for (dialog, peer) in expired {
            let this = self.clone();
            tokio::spawn(async move {
                let state = SubState::Terminated {
                    reason: Some("timeout".to_owned()),
                    retry_after: None,
                };
                let body = this.winfo_document(&dialog).await;
                this.send_winfo(&dialog, peer, state, body).await;
            });
        }
    }

    /// Sends the next NOTIFY of the watcher-information dialog `key`: active (the user
    /// is authorized for its own list) with the full list.
    async fn winfo_notify(self: &Arc<Self>, key: &DialogKey) {
        let now = self.now();
        let next = {
            let key = key.clone();
            self.owner
                .with(move |m| {
                    let (dialog, state) = m.winfo.next_notify(&key, now, true)?;
                    let peer = m.winfo_peers.get(&key).copied()?;
                    if matches!(state, SubState::Terminated { .. }) {
                        m.winfo_peers.remove(&key);
                    }
                    Some((dialog, state, peer))
                })
                .await
        };
        let Some((dialog, state, peer)) = next else {
            return;
        };
        let body = self.winfo_document(&dialog).await;
        let status = self.send_winfo(&dialog, peer, state, body).await;
        if status >= 300 {
            let key = key.clone();
            self.owner.tell(move |m| {
                if m.winfo.on_notify_failure(&key, status).is_some() {
                    m.winfo_peers.remove(&key);
                }
            });
        }
    }

    /// The document for `dialog`'s NOTIFY (its version: how many came before).
    async fn winfo_document(&self, dialog: &WatcherDialog) -> Vec<u8> {
        let presentity = dialog.presentity.clone();
        let watchers = self
            .owner
            .with(move |m| m.authorization.watchers(&presentity))
            .await;
        winfo::document(
            &dialog.presentity,
            dialog.next_cseq.saturating_sub(1),
            &watchers,
        )
    }

    async fn send_winfo(
        &self,
        dialog: &WatcherDialog,
        peer: Peer,
        state: SubState,
        body: Vec<u8>,
    ) -> u16 {
        self.send_notify_of(winfo::PACKAGE, WATCHERINFO, dialog, peer, state, Some(body))
            .await
    }
}
