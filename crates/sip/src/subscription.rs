//! Presence dialogs as pure state (RFC 6665, RFC 3856, RFC 3903, RFC 7248 §4): the
//! subscriptions SIP watchers hold at the gateway ([`Notifier`]), the subscriptions the
//! gateway holds at SIP presentities ([`Subscriber`]) and the presence SIP users publish
//! to it ([`Publications`]). Time is a `Duration` since the driver's epoch.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::headers::SubState;
use crate::wire::Fault;

/// How long subscriptions and publications may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Shortest accepted duration (shorter: 423 with `Min-Expires`), seconds.
    pub min_expires: u32,
    /// Longest granted duration, seconds (longer requests are shortened).
    pub max_expires: u32,
    /// Duration when the request has no `Expires` (RFC 3856 §6.4: 3600).
    pub default_expires: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
        }
    }
}

impl Policy {
    /// The duration to grant for a requested one (`0` stays `0`).
    pub fn grant(&self, requested: Option<u32>) -> Result<u32, Fault> {
        let wanted = requested.unwrap_or(self.default_expires);
        if wanted != 0 && wanted < self.min_expires {
            return Err(Fault::new(423, "Interval Too Brief")
                .with_header("Min-Expires", self.min_expires.to_string()));
        }
        Ok(wanted.min(self.max_expires))
    }
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

// ---------------------------------------------------------------------------------------
// Notifier

/// A SIP watcher's subscription held by the gateway (the gateway is the notifier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherDialog {
    /// Call-ID of the dialog.
    pub call_id: String,
    /// The gateway's tag (To tag of the SUBSCRIBE, From tag of NOTIFYs).
    pub local_tag: String,
    /// The watcher's tag.
    pub remote_tag: String,
    /// Where NOTIFYs go (the watcher's Contact URI).
    pub remote_target: String,
    /// The route set: the SUBSCRIBE's `Record-Route` values in order (RFC 3261
    /// §12.1.1), the `Route` headers of every NOTIFY.
    pub route_set: Vec<String>,
    /// The watcher's URI (From of the SUBSCRIBE): To of NOTIFYs.
    pub watcher: String,
    /// The presentity's URI (To of the SUBSCRIBE): From of NOTIFYs.
    pub presentity: String,
    /// The `Event` `id` parameter, repeated in NOTIFYs.
    pub event_id: Option<String>,
    /// CSeq of the next NOTIFY.
    pub next_cseq: u32,
    /// When the subscription ends unless refreshed.
    pub expires_at: Duration,
    /// Authorized by the presentity's side.
    pub active: bool,
    /// A fetch (`Expires: 0` out of dialog, RFC 6665 §4.4.3): its one NOTIFY is final;
    /// the dialog lives only until the state comes ([`FETCH_WAIT`] at most).
    pub fetch: bool,
}

impl WatcherDialog {
    /// The dialog's key: its Call-ID and the gateway's tag.
    pub fn key(&self) -> DialogKey {
        (self.call_id.clone(), self.local_tag.clone())
    }
}

/// How long a fetch waits for the presentity's state before its NOTIFY goes without it.
pub const FETCH_WAIT: Duration = Duration::from_millis(1500);

/// A received SUBSCRIBE, as the state machine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// Call-ID.
    pub call_id: String,
    /// The watcher's tag (From tag); required (RFC 3261 §8.1.1.3).
    pub from_tag: String,
    /// The To tag: present for a refresh inside the dialog.
    pub to_tag: Option<String>,
    /// `Expires`, when given.
    pub expires: Option<u32>,
    /// The watcher's Contact URI.
    pub contact: String,
    /// Its `Record-Route` values, in order (kept for a new dialog only).
    pub route_set: Vec<String>,
    /// The watcher's URI.
    pub watcher: String,
    /// The presentity's URI.
    pub presentity: String,
    /// The `Event` `id` parameter.
    pub event_id: Option<String>,
}

/// What a SUBSCRIBE did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// A new subscription (or a fetch, when `expires` is 0): answer 200 with this
    /// `Expires` and the tag, send a NOTIFY now.
    Created {
        /// The dialog key.
        key: DialogKey,
        /// Granted duration.
        expires: u32,
    },
    /// A refresh: answer 200, send a NOTIFY with the current state.
    Refreshed {
        /// The dialog key.
        key: DialogKey,
        /// Granted duration.
        expires: u32,
    },
    /// `Expires: 0` inside a dialog: answer 200, send the final NOTIFY
    /// (`terminated;reason=timeout`), tell the broker.
    Ended(Box<WatcherDialog>),
}

/// A dialog: Call-ID and the gateway's tag.
pub type DialogKey = (String, String);

/// The subscriptions of SIP watchers.
#[derive(Debug, Default)]
pub struct Notifier {
    policy: Policy,
    dialogs: HashMap<DialogKey, WatcherDialog>,
}

impl Notifier {
    /// An empty notifier.
    pub fn new(policy: Policy) -> Self {
        Notifier {
            policy,
            dialogs: HashMap::new(),
        }
    }

    /// How many subscriptions there are.
    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    /// `true` when there are none.
    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }

    /// Handles a SUBSCRIBE (after the Event package was checked). `new_tag` makes the
    /// gateway's tag for a new dialog.
    pub fn on_subscribe(
        &mut self,
        now: Duration,
        request: SubscribeRequest,
        new_tag: impl FnOnce() -> String,
    ) -> Result<SubscribeOutcome, Fault> {
        let expires = self.policy.grant(request.expires)?;
        if let Some(tag) = &request.to_tag {
            let key = (request.call_id.clone(), tag.clone());
            let Some(dialog) = self.dialogs.get_mut(&key) else {
                return Err(Fault::new(481, "Subscription Does Not Exist"));
            };
            if dialog.remote_tag != request.from_tag {
                return Err(Fault::new(481, "Subscription Does Not Exist"));
            }
            if expires == 0 {
                let dialog = self.dialogs.remove(&key);
                return dialog
                    .map(|d| SubscribeOutcome::Ended(Box::new(d)))
                    .ok_or_else(|| Fault::new(481, "Subscription Does Not Exist"));
            }
            dialog.expires_at = now + secs(expires);
            if !request.contact.is_empty() {
                dialog.remote_target = request.contact;
            }
            return Ok(SubscribeOutcome::Refreshed { key, expires });
        }
        let tag = new_tag();
        let key = (request.call_id.clone(), tag.clone());
        self.dialogs.insert(
            key.clone(),
            WatcherDialog {
                call_id: request.call_id,
                local_tag: tag,
                remote_tag: request.from_tag,
                remote_target: if request.contact.is_empty() {
                    request.watcher.clone()
                } else {
                    request.contact
                },
                route_set: request.route_set,
                watcher: request.watcher,
                presentity: request.presentity,
                event_id: request.event_id,
                next_cseq: 1,
                // A fetch waits a moment for the state it asks for.
                expires_at: if expires == 0 {
                    now + FETCH_WAIT
                } else {
                    now + secs(expires)
                },
                active: false,
                fetch: expires == 0,
            },
        );
        Ok(SubscribeOutcome::Created { key, expires })
    }

    /// The dialog of `key`.
    pub fn get(&self, key: &DialogKey) -> Option<&WatcherDialog> {
        self.dialogs.get(key)
    }

    /// The subscriptions of `watcher` to `presentity` (URIs compared as given by
    /// `same`).
    pub fn find(&self, watcher: &str, presentity: &str) -> Vec<DialogKey> {
        self.dialogs
            .iter()
            .filter(|(_, d)| {
                d.watcher.eq_ignore_ascii_case(watcher)
                    && d.presentity.eq_ignore_ascii_case(presentity)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The next NOTIFY for `key`: the dialog (CSeq advanced) and its
    /// `Subscription-State` with the seconds left (RFC 6665 §4.2.2). `activate` marks
    /// the subscription authorized first.
    pub fn next_notify(
        &mut self,
        key: &DialogKey,
        now: Duration,
        activate: bool,
    ) -> Option<(WatcherDialog, SubState)> {
        let dialog = self.dialogs.get_mut(key)?;
        if activate {
            dialog.active = true;
        }
        let left =
            u32::try_from(dialog.expires_at.saturating_sub(now).as_secs()).unwrap_or(u32::MAX);
        let left = if dialog.fetch { 0 } else { left };
        let state = if left == 0 {
            SubState::Terminated {
                reason: Some("timeout".to_owned()),
                retry_after: None,
            }
        } else if dialog.active {
            SubState::Active {
                expires: Some(left),
            }
        } else {
            SubState::Pending {
                expires: Some(left),
            }
        };
        let snapshot = dialog.clone();
        dialog.next_cseq += 1;
        if left == 0 {
            self.dialogs.remove(key);
        }
        Some((snapshot, state))
    }

    /// Ends a subscription (rejection, a failed NOTIFY): the dialog with the CSeq for
    /// a final NOTIFY.
    pub fn remove(&mut self, key: &DialogKey) -> Option<WatcherDialog> {
        self.dialogs.remove(key)
    }

    /// A NOTIFY got a final failure: RFC 6665 §4.2.2 — a 481, or any failure other
    /// than 408 on a timeout-capable path, removes the subscription. Returns the
    /// removed dialog.
    pub fn on_notify_failure(&mut self, key: &DialogKey, status: u16) -> Option<WatcherDialog> {
        if status >= 300 {
            return self.dialogs.remove(key);
        }
        None
    }

    /// Removes the subscriptions that expired by `now`.
    pub fn expire(&mut self, now: Duration) -> Vec<WatcherDialog> {
        let keys: Vec<DialogKey> = self
            .dialogs
            .iter()
            .filter(|(_, d)| d.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.dialogs.remove(&k))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Subscriber

/// A subscription the gateway holds at a SIP presentity on behalf of its watchers on
/// other networks (RFC 7248 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutSubscription {
    /// Call-ID (also the key).
    pub call_id: String,
    /// The gateway's tag.
    pub local_tag: String,
    /// The notifier's tag, once known (from the 2xx or the first NOTIFY).
    pub remote_tag: Option<String>,
    /// Where in-dialog SUBSCRIBEs go: the notifier's Contact (RFC 3261 §12.1.2), kept
    /// up to date by every 2xx and NOTIFY (target refresh requests, RFC 6665 §4.1.2).
    pub remote_target: Option<String>,
    /// The route set, fixed by the message that established the dialog: the 2xx's
    /// `Record-Route` reversed, or the first NOTIFY's in order. `None` until then.
    pub route_set: Option<Vec<String>>,
    /// The route set came from the 2xx (which a NOTIFY overtaking it does not
    /// override).
    pub routed_by_2xx: bool,
    /// A new subscription after a lost dialog ([`SubscriberEvent::Restart`]): if it
    /// fails too, the watchers are told it ended for good (`giveup`), not that they may
    /// ask again at once.
    pub restarted: bool,
    /// The watcher URI the gateway subscribes as.
    pub watcher: String,
    /// The presentity's URI (Request-URI and To).
    pub presentity: String,
    /// CSeq of the next SUBSCRIBE.
    pub next_cseq: u32,
    /// The requested duration.
    pub expires: u32,
    /// When to refresh.
    pub refresh_at: Option<Duration>,
    /// Timer N: the NOTIFY that must follow a SUBSCRIBE (RFC 6665 §4.1.2.4).
    pub notify_deadline: Option<Duration>,
    /// A NOTIFY said active.
    pub active: bool,
    /// The gateway ended it (`Expires: 0` sent): the final NOTIFY is still welcome.
    pub ending: bool,
}

/// What the driver must do for the subscriber side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriberEvent {
    /// Send a SUBSCRIBE for this subscription (new or refresh) with this CSeq.
    Subscribe(OutSubscription),
    /// The subscription ended: tell the broker (aggregate `Deny` with this reason, and
    /// a `Deny` to each watcher still waiting for its approval).
    Terminated {
        /// The presentity.
        presentity: String,
        /// The watcher it was held for.
        watcher: String,
        /// RFC 6665 reason.
        reason: String,
        /// The watchers whose requests waited for the first `active` NOTIFY.
        pending: Vec<String>,
    },
    /// An in-dialog refresh failed for a reason that is not a refusal (the far end lost
    /// the dialog: 481, a proxy's 404, a timeout): subscribe anew, out of dialog, and
    /// tell the watchers nothing unless that fails too.
    Restart {
        /// The presentity.
        presentity: String,
        /// The watcher it is held for.
        watcher: String,
    },
}

/// The subscriptions the gateway holds at SIP presentities.
#[derive(Debug)]
pub struct Subscriber {
    timeout: Duration,
    subs: HashMap<String, OutSubscription>,
    /// Per presentity (lower-cased), the watchers whose requests wait for the
    /// presentity's side to authorize the gateway's subscription (the first `active`
    /// NOTIFY, RFC 7248 §4.1).
    awaiting: HashMap<String, Vec<String>>,
    /// The presentities (lower-cased) the broker asked the gateway to subscribe to for
    /// its approved watchers (an aggregate subscription).
    aggregate: HashSet<String>,
    /// The presentities (lower-cased) whose dialog was lost and is being re-established.
    restarting: HashSet<String>,
}

/// What to do with a watcher's request to follow a SIP presentity (RFC 7248 §4.1: the
/// SIP side authorizes by accepting the gateway's SUBSCRIBE and saying `active`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorize {
    /// The gateway's subscription is active already: approve at once.
    Now,
    /// No subscription yet: start one; the watcher waits for its first `active`
    /// NOTIFY.
    Subscribe,
    /// A subscription is under way: the watcher waits with the others.
    Wait,
}

/// What a received NOTIFY means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyEffect {
    /// State from an active or pending subscription; submit the body if any.
    State {
        /// The subscription.
        presentity: String,
        /// The watcher.
        watcher: String,
        /// The watchers approved by this NOTIFY (the first `active` one).
        approve: Vec<String>,
    },
    /// A NOTIFY for a subscription the gateway is ending: acknowledged, nothing else.
    Ended,
    /// The notifier ended the subscription.
    Terminated {
        /// The presentity.
        presentity: String,
        /// The watcher.
        watcher: String,
        /// RFC 6665 reason (`deactivated`, `rejected`, …).
        reason: String,
        /// When it may be tried again.
        retry_after: Option<u32>,
        /// The watchers still waiting for their approval.
        pending: Vec<String>,
    },
}

impl Subscriber {
    /// An empty subscriber; `timeout` is Timer N (64·T1).
    pub fn new(timeout: Duration) -> Self {
        Subscriber {
            timeout,
            subs: HashMap::new(),
            awaiting: HashMap::new(),
            aggregate: HashSet::new(),
            restarting: HashSet::new(),
        }
    }

    /// A watcher asks to follow `presentity`: approve now, or wait for the gateway's
    /// subscription to become active (starting it if there is none).
    pub fn authorize(&mut self, presentity: &str, watcher: &str) -> Authorize {
        let decision = match self.by_presentity(presentity) {
            Some(sub) if sub.active => return Authorize::Now,
            Some(_) => Authorize::Wait,
            None => Authorize::Subscribe,
        };
        let waiting = self
            .awaiting
            .entry(presentity.to_ascii_lowercase())
            .or_default();
        if !waiting.iter().any(|w| w.eq_ignore_ascii_case(watcher)) {
            waiting.push(watcher.to_owned());
        }
        decision
    }

    /// A waiting watcher gave up. `true` when the subscription to `presentity` then
    /// serves no one (nobody waits and the broker never asked for it): end it.
    pub fn withdraw(&mut self, presentity: &str, watcher: &str) -> bool {
        let key = presentity.to_ascii_lowercase();
        let Some(waiting) = self.awaiting.get_mut(&key) else {
            return false;
        };
        waiting.retain(|w| !w.eq_ignore_ascii_case(watcher));
        if !waiting.is_empty() {
            return false;
        }
        self.awaiting.remove(&key);
        !self.aggregate.contains(&key) && self.by_presentity(presentity).is_some()
    }

    /// The broker asks for the subscription to `presentity` for its approved watchers.
    /// `true` when one is live already (nothing to send).
    pub fn mark_aggregate(&mut self, presentity: &str) -> bool {
        self.aggregate.insert(presentity.to_ascii_lowercase());
        self.by_presentity(presentity).is_some()
    }

    fn take_pending(&mut self, presentity: &str) -> Vec<String> {
        self.awaiting
            .remove(&presentity.to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// The watchers waiting for `presentity` (drained): for a subscription that could
    /// not even be sent.
    pub fn abandon(&mut self, presentity: &str) -> Vec<String> {
        self.aggregate.remove(&presentity.to_ascii_lowercase());
        self.restarting.remove(&presentity.to_ascii_lowercase());
        self.take_pending(presentity)
    }

    /// How many subscriptions are held.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// `true` when none is.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// The live subscription to `presentity`, if any.
    pub fn by_presentity(&self, presentity: &str) -> Option<&OutSubscription> {
        self.subs
            .values()
            .find(|s| !s.ending && s.presentity.eq_ignore_ascii_case(presentity))
    }

    /// Starts (or restarts) the subscription to `presentity`.
    pub fn start(
        &mut self,
        now: Duration,
        watcher: String,
        presentity: String,
        expires: u32,
        call_id: String,
        local_tag: String,
    ) -> OutSubscription {
        if let Some(existing) = self.by_presentity(&presentity).cloned() {
            self.subs.remove(&existing.call_id);
        }
        let sub = OutSubscription {
            call_id: call_id.clone(),
            local_tag,
            remote_tag: None,
            remote_target: None,
            route_set: None,
            routed_by_2xx: false,
            restarted: self.restarting.remove(&presentity.to_ascii_lowercase()),
            watcher,
            presentity,
            next_cseq: 2,
            expires,
            refresh_at: None,
            notify_deadline: Some(now + self.timeout),
            active: false,
            ending: false,
        };
        self.subs.insert(call_id, sub.clone());
        OutSubscription {
            next_cseq: 1,
            ..sub
        }
    }

    /// Ends the subscription to `presentity`: the SUBSCRIBE with `Expires: 0` to send.
    /// The dialog stays until the final NOTIFY (or Timer N), so that the notifier's
    /// `terminated` NOTIFY is answered 200, not 481 (RFC 6665 §4.1.2.3).
    pub fn stop(&mut self, now: Duration, presentity: &str) -> Option<OutSubscription> {
        self.aggregate.remove(&presentity.to_ascii_lowercase());
        let call_id = self
            .subs
            .values()
            .find(|s| !s.ending && s.presentity.eq_ignore_ascii_case(presentity))?
            .call_id
            .clone();
        let sub = self.subs.get_mut(&call_id)?;
        sub.expires = 0;
        sub.ending = true;
        sub.refresh_at = None;
        sub.notify_deadline = Some(now + self.timeout);
        let out = sub.clone();
        sub.next_cseq += 1;
        Some(out)
    }

    /// What a 2xx to a SUBSCRIBE (`from_response`) or a NOTIFY in the dialog `call_id`
    /// says about where the dialog's requests go: `contact` is the remote target from
    /// now on; `record_route` is the route set — from the first 2xx, reversed (RFC
    /// 3261 §12.1.2), or from a NOTIFY in order (§12.1.1) until a 2xx comes.
    pub fn learn_route(
        &mut self,
        call_id: &str,
        contact: Option<String>,
        record_route: Vec<String>,
        from_response: bool,
    ) {
        let Some(sub) = self.subs.get_mut(call_id) else {
            return;
        };
        if contact.is_some() {
            sub.remote_target = contact;
        }
        if from_response && !sub.routed_by_2xx {
            // The 2xx decides even when a NOTIFY overtook it: the proxies that stay
            // in the path record-route the SUBSCRIBE, not the NOTIFY that follows the
            // route set (which then carries none).
            let mut set = record_route;
            set.reverse();
            sub.route_set = Some(set);
            sub.routed_by_2xx = true;
        } else if sub.route_set.is_none() {
            sub.route_set = Some(record_route);
        }
    }

    /// A final response to a SUBSCRIBE. `granted` is its `Expires`, `min_expires` its
    /// `Min-Expires`. Returns what to do next.
    pub fn on_response(
        &mut self,
        now: Duration,
        call_id: &str,
        status: u16,
        to_tag: Option<&str>,
        granted: Option<u32>,
        min_expires: Option<u32>,
    ) -> Option<SubscriberEvent> {
        let sub = self.subs.get_mut(call_id)?;
        match status {
            200..=299 => {
                if sub.remote_tag.is_none() {
                    sub.remote_tag = to_tag.map(str::to_owned);
                }
                let granted = granted.unwrap_or(sub.expires).min(sub.expires.max(1));
                sub.refresh_at = Some(now + refresh_after(granted));
                None
            }
            // RFC 7248 §4: 423 is transient — retry with the notifier's minimum.
            423 if min_expires.is_some_and(|m| m > sub.expires) => {
                sub.expires = min_expires.unwrap_or(sub.expires);
                let out = sub.clone();
                sub.next_cseq += 1;
                sub.notify_deadline = Some(now + self.timeout);
                Some(SubscriberEvent::Subscribe(out))
            }
            _ => {
                let sub = self.subs.remove(call_id)?;
                let refusal = matches!(status, 403 | 603 | 489);
                if sub.remote_tag.is_some() && !sub.ending && !refusal {
                    // RFC 6665 §4.1.2.2: the refresh failed, not the subscription as the
                    // watchers see it: a proxy that lost the route, a phone that
                    // restarted (481). A new subscription decides.
                    self.restarting.insert(sub.presentity.to_ascii_lowercase());
                    return Some(SubscriberEvent::Restart {
                        presentity: sub.presentity,
                        watcher: sub.watcher,
                    });
                }
                let reason = match status {
                    403 | 603 | 489 => "rejected",
                    404 | 604 | 410 => "noresource",
                    // The dialog was lost and cannot be made again: no point asking at
                    // once; the watchers hear the user is gone (RFC 7248 §4.3.2).
                    _ if sub.restarted => "giveup",
                    // 481 and anything else: transient, the broker may ask again.
                    _ => "deactivated",
                };
                let pending = self.abandon(&sub.presentity);
                Some(SubscriberEvent::Terminated {
                    presentity: sub.presentity,
                    watcher: sub.watcher,
                    reason: reason.to_owned(),
                    pending,
                })
            }
        }
    }

    /// A NOTIFY arrived in the dialog `call_id` from tag `from_tag` (RFC 6665 §4.1.3).
    /// `None`: no such subscription (answer 481).
    pub fn on_notify(
        &mut self,
        now: Duration,
        call_id: &str,
        local_tag: Option<&str>,
        from_tag: Option<&str>,
        state: &SubState,
    ) -> Option<NotifyEffect> {
        let sub = self.subs.get_mut(call_id)?;
        if local_tag != Some(sub.local_tag.as_str()) {
            return None;
        }
        match (&sub.remote_tag, from_tag) {
            (None, Some(tag)) => sub.remote_tag = Some(tag.to_owned()),
            (Some(ours), Some(theirs)) if ours != theirs => return None,
            _ => {}
        }
        if sub.ending {
            if matches!(state, SubState::Terminated { .. }) {
                self.subs.remove(call_id);
            }
            return Some(NotifyEffect::Ended);
        }
        sub.notify_deadline = None;
        match state {
            SubState::Active { expires } | SubState::Pending { expires } => {
                sub.active = matches!(state, SubState::Active { .. });
                if let Some(left) = expires {
                    // The notifier may shorten the subscription (RFC 6665 §4.1.2.2).
                    let at = now + refresh_after(*left);
                    if sub.refresh_at.is_none_or(|r| at < r) {
                        sub.refresh_at = Some(at);
                    }
                }
                let (presentity, watcher) = (sub.presentity.clone(), sub.watcher.clone());
                let approve = if matches!(state, SubState::Active { .. }) {
                    self.take_pending(&presentity)
                } else {
                    Vec::new()
                };
                Some(NotifyEffect::State {
                    presentity,
                    watcher,
                    approve,
                })
            }
            SubState::Terminated {
                reason,
                retry_after,
            } => {
                let sub = self.subs.remove(call_id)?;
                let pending = self.abandon(&sub.presentity);
                Some(NotifyEffect::Terminated {
                    presentity: sub.presentity,
                    watcher: sub.watcher,
                    reason: reason.clone().unwrap_or_else(|| "deactivated".to_owned()),
                    retry_after: *retry_after,
                    pending,
                })
            }
        }
    }

    /// Refreshes and Timer N expiries due by `now`.
    pub fn due(&mut self, now: Duration) -> Vec<SubscriberEvent> {
        let mut out = Vec::new();
        let mut dead = Vec::new();
        for (call_id, sub) in &mut self.subs {
            if sub.notify_deadline.is_some_and(|d| d <= now) {
                dead.push((call_id.clone(), sub.ending));
                continue;
            }
            if sub.refresh_at.is_some_and(|r| r <= now) {
                sub.refresh_at = None;
                sub.notify_deadline = None;
                out.push(SubscriberEvent::Subscribe(sub.clone()));
                sub.next_cseq += 1;
            }
        }
        for (call_id, ending) in dead {
            if let Some(sub) = self.subs.remove(&call_id).filter(|_| !ending) {
                // RFC 6665 §4.1.2.4: no NOTIFY within Timer N — the subscription failed.
                let pending = self.abandon(&sub.presentity);
                let reason = if sub.restarted { "giveup" } else { "timeout" };
                out.push(SubscriberEvent::Terminated {
                    presentity: sub.presentity,
                    watcher: sub.watcher,
                    reason: reason.to_owned(),
                    pending,
                });
            }
        }
        out
    }
}

/// When to refresh a subscription granted for `granted` seconds: half-way for short
/// ones, 30 s before the end for long ones.
pub fn refresh_after(granted: u32) -> Duration {
    let margin = (granted / 2).min(30);
    secs(granted - margin)
}

// ---------------------------------------------------------------------------------------
// Publications

/// Presence published by SIP users to the gateway (RFC 3903).
#[derive(Debug, Default)]
pub struct Publications {
    policy: Policy,
    by_etag: HashMap<String, (String, Duration)>,
}

/// What a PUBLISH did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// New or changed state: submit it; answer 200 with this entity tag and `Expires`.
    Published {
        /// The new entity tag.
        etag: String,
        /// Granted duration.
        expires: u32,
    },
    /// A refresh without a body.
    Refreshed {
        /// The new entity tag.
        etag: String,
        /// Granted duration.
        expires: u32,
    },
    /// `Expires: 0`: the state is withdrawn.
    Removed {
        /// Whose.
        aor: String,
    },
}

impl Publications {
    /// No publications.
    pub fn new(policy: Policy) -> Self {
        Publications {
            policy,
            by_etag: HashMap::new(),
        }
    }

    /// Handles a PUBLISH from `aor` (RFC 3903 §6). `has_body` says whether it carries
    /// a document; `new_etag` makes entity tags.
    pub fn on_publish(
        &mut self,
        now: Duration,
        aor: &str,
        if_match: Option<&str>,
        expires: Option<u32>,
        has_body: bool,
        new_etag: impl FnOnce() -> String,
    ) -> Result<PublishOutcome, Fault> {
        let granted = self.policy.grant(expires)?;
        if let Some(tag) = if_match {
            let known = self
                .by_etag
                .get(tag)
                .is_some_and(|(owner, _)| owner.eq_ignore_ascii_case(aor));
            if !known {
                return Err(Fault::new(412, "Conditional Request Failed"));
            }
            self.by_etag.remove(tag);
            if granted == 0 {
                return Ok(PublishOutcome::Removed {
                    aor: aor.to_owned(),
                });
            }
            let etag = new_etag();
            self.by_etag
                .insert(etag.clone(), (aor.to_owned(), now + secs(granted)));
            return Ok(if has_body {
                PublishOutcome::Published {
                    etag,
                    expires: granted,
                }
            } else {
                PublishOutcome::Refreshed {
                    etag,
                    expires: granted,
                }
            });
        }
        if !has_body {
            return Err(Fault::new(
                400,
                "Bad Request (PUBLISH without a body or SIP-If-Match)",
            ));
        }
        if granted == 0 {
            return Err(Fault::new(
                400,
                "Bad Request (initial PUBLISH with Expires: 0)",
            ));
        }
        let etag = new_etag();
        self.by_etag
            .insert(etag.clone(), (aor.to_owned(), now + secs(granted)));
        Ok(PublishOutcome::Published {
            etag,
            expires: granted,
        })
    }

    /// Publications that expired by `now`: the AORs whose state is gone (those that
    /// have no other live publication).
    pub fn expire(&mut self, now: Duration) -> Vec<String> {
        let gone: Vec<(String, String)> = self
            .by_etag
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(tag, (aor, _))| (tag.clone(), aor.clone()))
            .collect();
        let mut aors = Vec::new();
        for (tag, aor) in gone {
            self.by_etag.remove(&tag);
            if !self.by_etag.values().any(|(a, _)| a == &aor) && !aors.contains(&aor) {
                aors.push(aor);
            }
        }
        aors
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn request(to_tag: Option<&str>, expires: Option<u32>) -> SubscribeRequest {
        SubscribeRequest {
            call_id: "c1".into(),
            from_tag: "w1".into(),
            to_tag: to_tag.map(str::to_owned),
            expires,
            contact: "sip:alice@127.0.0.1:5070".into(),
            route_set: Vec::new(),
            watcher: "sip:alice@sip.test".into(),
            presentity: "sip:bob@gw.test".into(),
            event_id: None,
        }
    }

    #[test]
    fn rfc6665_notifier_lifecycle_with_fake_clock() {
        let mut n = Notifier::new(Policy::default());
        let SubscribeOutcome::Created { key, expires } = n
            .on_subscribe(Duration::ZERO, request(None, Some(600)), || "g1".into())
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(expires, 600);
        // First NOTIFY: pending, 600 s left, CSeq 1.
        let (d, state) = n.next_notify(&key, Duration::ZERO, false).unwrap();
        assert_eq!(d.next_cseq, 1);
        assert_eq!(state, SubState::Pending { expires: Some(600) });
        // Authorized 100 s later: active with 500 s left, CSeq 2.
        let (d, state) = n.next_notify(&key, 100 * S, true).unwrap();
        assert_eq!(d.next_cseq, 2);
        assert_eq!(state, SubState::Active { expires: Some(500) });
        assert_eq!(
            n.find("SIP:alice@sip.test", "sip:bob@gw.test"),
            vec![key.clone()]
        );
        // Refresh at 500 s for another 600 s.
        let refreshed = n
            .on_subscribe(500 * S, request(Some("g1"), Some(600)), || unreachable!())
            .unwrap();
        assert_eq!(
            refreshed,
            SubscribeOutcome::Refreshed {
                key: key.clone(),
                expires: 600
            }
        );
        assert!(n.expire(1099 * S).is_empty());
        let expired = n.expire(1100 * S);
        assert_eq!(expired.len(), 1);
        assert!(n.is_empty());
    }

    #[test]
    fn rfc6665_unsubscribe_too_brief_unknown_dialog_and_notify_failure() {
        let mut n = Notifier::new(Policy::default());
        let f = n
            .on_subscribe(Duration::ZERO, request(None, Some(10)), || "g".into())
            .unwrap_err();
        assert_eq!(f.status, 423);
        assert_eq!(f.headers, vec![("Min-Expires".to_owned(), "60".to_owned())]);
        let f = n
            .on_subscribe(Duration::ZERO, request(Some("nope"), Some(600)), || {
                "g".into()
            })
            .unwrap_err();
        assert_eq!(f.status, 481);
        let Ok(SubscribeOutcome::Created { key, .. }) =
            n.on_subscribe(Duration::ZERO, request(None, None), || "g1".into())
        else {
            panic!()
        };
        assert_eq!(
            n.get(&key).unwrap().expires_at,
            3600 * S,
            "RFC 3856 default 3600 s"
        );
        let ended = n
            .on_subscribe(S, request(Some("g1"), Some(0)), || unreachable!())
            .unwrap();
        assert!(matches!(ended, SubscribeOutcome::Ended(_)));
        assert!(n.is_empty());
        let Ok(SubscribeOutcome::Created { key, .. }) =
            n.on_subscribe(Duration::ZERO, request(None, None), || "g2".into())
        else {
            panic!()
        };
        assert!(n.on_notify_failure(&key, 200).is_none());
        assert!(n.on_notify_failure(&key, 481).is_some());
        assert!(n.is_empty());
    }

    #[test]
    fn fetch_with_expires_zero_gets_one_terminated_notify() {
        let mut n = Notifier::new(Policy::default());
        let Ok(SubscribeOutcome::Created { key, expires: 0 }) =
            n.on_subscribe(Duration::ZERO, request(None, Some(0)), || "g".into())
        else {
            panic!()
        };
        let (_, state) = n.next_notify(&key, Duration::ZERO, true).unwrap();
        assert!(matches!(state, SubState::Terminated { .. }));
        assert!(n.is_empty());
    }

    #[test]
    fn rfc6665_subscriber_refresh_timer_n_and_termination() {
        let timeout = 32 * S;
        let mut s = Subscriber::new(timeout);
        let first = s.start(
            Duration::ZERO,
            "sip:w@gw.test".into(),
            "sip:p@sip.test".into(),
            600,
            "c1".into(),
            "t1".into(),
        );
        assert_eq!(first.next_cseq, 1);
        // 200 OK granting 120 s: refresh at 90 s.
        assert_eq!(
            s.on_response(S, "c1", 200, Some("r1"), Some(120), None),
            None
        );
        // The NOTIFY arrives (Timer N stopped).
        let e = s
            .on_notify(
                2 * S,
                "c1",
                Some("t1"),
                Some("r1"),
                &SubState::Active { expires: Some(119) },
            )
            .unwrap();
        assert!(matches!(e, NotifyEffect::State { .. }));
        assert!(s.due(60 * S).is_empty());
        let due = s.due(91 * S);
        let [SubscriberEvent::Subscribe(refresh)] = due.as_slice() else {
            panic!("{due:?}")
        };
        assert_eq!(refresh.next_cseq, 2);
        assert_eq!(refresh.remote_tag.as_deref(), Some("r1"));
        // A NOTIFY from another tag is not ours.
        assert!(s
            .on_notify(
                92 * S,
                "c1",
                Some("t1"),
                Some("other"),
                &SubState::Active { expires: None }
            )
            .is_none());
        // Terminated by the notifier.
        let e = s
            .on_notify(
                93 * S,
                "c1",
                Some("t1"),
                Some("r1"),
                &SubState::Terminated {
                    reason: Some("rejected".into()),
                    retry_after: None,
                },
            )
            .unwrap();
        assert!(matches!(e, NotifyEffect::Terminated { ref reason, .. } if reason == "rejected"));
        assert!(s.is_empty());

        // Timer N: a 200 but never a NOTIFY.
        s.start(
            Duration::ZERO,
            "w".into(),
            "sip:q@sip.test".into(),
            600,
            "c2".into(),
            "t2".into(),
        );
        assert_eq!(
            s.on_response(S, "c2", 200, Some("r"), Some(600), None),
            None
        );
        let due = s.due(timeout);
        assert!(
            matches!(due.as_slice(), [SubscriberEvent::Terminated { reason, .. }] if reason == "timeout")
        );
    }

    #[test]
    fn rfc3261_12_1_2_the_route_set_comes_from_the_2xx_even_after_a_notify() {
        let mut s = Subscriber::new(32 * S);
        s.start(
            Duration::ZERO,
            "w".into(),
            "sip:p@x".into(),
            600,
            "c".into(),
            "t".into(),
        );
        // The NOTIFY overtakes the 2xx: it has no Record-Route (it follows the route set).
        s.on_notify(
            S,
            "c",
            Some("t"),
            Some("n"),
            &SubState::Active { expires: Some(600) },
        );
        s.learn_route("c", Some("sip:p@192.0.2.9:5070".into()), Vec::new(), false);
        assert_eq!(
            s.by_presentity("sip:p@x").unwrap().route_set,
            Some(Vec::new())
        );
        // The 2xx's Record-Route, reversed, is the route set.
        s.learn_route(
            "c",
            Some("sip:p@192.0.2.9:5070".into()),
            vec!["<sip:p2;lr>".into(), "<sip:p1;lr>".into()],
            true,
        );
        let sub = s.by_presentity("sip:p@x").unwrap();
        assert_eq!(
            sub.route_set.as_deref(),
            Some(&["<sip:p1;lr>".to_owned(), "<sip:p2;lr>".to_owned()][..])
        );
        // A later NOTIFY refreshes the target only.
        s.learn_route(
            "c",
            Some("sip:p@192.0.2.10".into()),
            vec!["<sip:x;lr>".into()],
            false,
        );
        let sub = s.by_presentity("sip:p@x").unwrap();
        assert_eq!(sub.remote_target.as_deref(), Some("sip:p@192.0.2.10"));
        assert_eq!(sub.route_set.as_ref().map(Vec::len), Some(2));
    }

    #[test]
    fn rfc7248_4_1_watchers_are_approved_by_the_first_active_notify() {
        let mut s = Subscriber::new(32 * S);
        let p = "sip:carol@sip.test";
        assert_eq!(s.authorize(p, "im:bob@x"), Authorize::Subscribe);
        s.start(
            Duration::ZERO,
            "sip:bob@x".into(),
            p.into(),
            600,
            "c".into(),
            "t".into(),
        );
        assert_eq!(s.authorize(p, "im:dave@x"), Authorize::Wait);
        assert_eq!(
            s.authorize(p, "im:bob@x"),
            Authorize::Wait,
            "asked twice, kept once"
        );
        assert_eq!(s.on_response(S, "c", 200, Some("r"), Some(600), None), None);
        // pending: nobody approved yet.
        let e = s.on_notify(
            S,
            "c",
            Some("t"),
            Some("r"),
            &SubState::Pending { expires: Some(600) },
        );
        assert!(matches!(e, Some(NotifyEffect::State { ref approve, .. }) if approve.is_empty()));
        // active: both waiting watchers, once.
        let e = s.on_notify(
            S,
            "c",
            Some("t"),
            Some("r"),
            &SubState::Active { expires: Some(600) },
        );
        assert!(
            matches!(e, Some(NotifyEffect::State { ref approve, .. }) if approve == &["im:bob@x".to_owned(), "im:dave@x".to_owned()]),
            "{e:?}"
        );
        let e = s.on_notify(
            S,
            "c",
            Some("t"),
            Some("r"),
            &SubState::Active { expires: Some(600) },
        );
        assert!(matches!(e, Some(NotifyEffect::State { ref approve, .. }) if approve.is_empty()));
        // Later watchers are approved at once.
        assert_eq!(s.authorize(p, "im:erin@x"), Authorize::Now);

        // A refusal ends it for the waiting watchers too.
        let mut s = Subscriber::new(32 * S);
        s.authorize(p, "im:bob@x");
        s.start(
            Duration::ZERO,
            "sip:bob@x".into(),
            p.into(),
            600,
            "c".into(),
            "t".into(),
        );
        let e = s.on_response(S, "c", 403, None, None, None);
        assert!(
            matches!(e, Some(SubscriberEvent::Terminated { ref pending, ref reason, .. }) if pending == &["im:bob@x".to_owned()] && reason == "rejected"),
            "{e:?}"
        );
        // Timer N: no NOTIFY at all.
        let mut s = Subscriber::new(32 * S);
        s.authorize(p, "im:bob@x");
        s.start(
            Duration::ZERO,
            "sip:bob@x".into(),
            p.into(),
            600,
            "c".into(),
            "t".into(),
        );
        s.on_response(S, "c", 200, Some("r"), Some(600), None);
        let due = s.due(40 * S);
        assert!(
            matches!(due.as_slice(), [SubscriberEvent::Terminated { pending, .. }] if pending == &["im:bob@x".to_owned()]),
            "{due:?}"
        );
    }

    #[test]
    fn rfc7248_4_1_a_subscription_nobody_waits_for_any_more_ends() {
        let mut s = Subscriber::new(32 * S);
        let p = "sip:carol@sip.test";
        s.authorize(p, "im:bob@x");
        s.start(
            Duration::ZERO,
            "sip:bob@x".into(),
            p.into(),
            600,
            "c".into(),
            "t".into(),
        );
        s.authorize(p, "im:dave@x");
        assert!(!s.withdraw(p, "im:bob@x"), "dave still waits");
        assert!(s.withdraw(p, "im:dave@x"), "nobody does: end it");
        // Once the broker asked for it (its approved watchers), it stays.
        let mut s = Subscriber::new(32 * S);
        s.authorize(p, "im:bob@x");
        s.start(
            Duration::ZERO,
            "sip:bob@x".into(),
            p.into(),
            600,
            "c".into(),
            "t".into(),
        );
        assert!(
            s.mark_aggregate(p),
            "the live subscription serves the broker"
        );
        assert!(!s.withdraw(p, "im:bob@x"));
        assert!(s.stop(S, p).is_some());
        assert!(
            !s.mark_aggregate("sip:other@sip.test"),
            "none live: send one"
        );
    }

    #[test]
    fn rfc6665_4_1_2_2_a_failed_refresh_restarts_unless_refused() {
        for (code, restart) in [
            (404, true),
            (481, true),
            (408, true),
            (500, true),
            (403, false),
            (603, false),
        ] {
            let mut s = Subscriber::new(32 * S);
            s.start(
                Duration::ZERO,
                "w".into(),
                "sip:p@x".into(),
                600,
                "c".into(),
                "t".into(),
            );
            assert_eq!(s.on_response(S, "c", 200, Some("r"), Some(4), None), None);
            let due = s.due(10 * S);
            assert!(matches!(due.as_slice(), [SubscriberEvent::Subscribe(_)]));
            let e = s.on_response(10 * S, "c", code, None, None, None).unwrap();
            if restart {
                assert!(
                    matches!(e, SubscriberEvent::Restart { ref presentity, .. } if presentity == "sip:p@x"),
                    "{code}: {e:?}"
                );
            } else {
                assert!(
                    matches!(e, SubscriberEvent::Terminated { ref reason, .. } if reason == "rejected"),
                    "{code}: {e:?}"
                );
            }
            assert!(s.is_empty(), "{code}");
        }
        // The new subscription fails too: given up, not "ask again at once".
        let mut s = Subscriber::new(32 * S);
        s.start(
            Duration::ZERO,
            "w".into(),
            "sip:p@x".into(),
            600,
            "c".into(),
            "t".into(),
        );
        s.on_response(S, "c", 200, Some("r"), Some(4), None);
        s.due(10 * S);
        assert!(matches!(
            s.on_response(10 * S, "c", 481, None, None, None),
            Some(SubscriberEvent::Restart { .. })
        ));
        let again = s.start(
            10 * S,
            "w".into(),
            "sip:p@x".into(),
            600,
            "c2".into(),
            "t2".into(),
        );
        assert!(again.restarted);
        let e = s.on_response(11 * S, "c2", 500, None, None, None);
        assert!(
            matches!(e, Some(SubscriberEvent::Terminated { ref reason, .. }) if reason == "giveup"),
            "{e:?}"
        );
        let fresh = s.start(
            20 * S,
            "w".into(),
            "sip:p@x".into(),
            600,
            "c3".into(),
            "t3".into(),
        );
        assert!(
            !fresh.restarted,
            "only the subscription right after the loss"
        );
    }

    #[test]
    fn rfc7248_4_subscriber_failures_permanent_and_transient() {
        let mut s = Subscriber::new(32 * S);
        for (code, reason) in [
            (403, "rejected"),
            (489, "rejected"),
            (603, "rejected"),
            (404, "noresource"),
            (481, "deactivated"),
            (500, "deactivated"),
        ] {
            s.start(
                Duration::ZERO,
                "w".into(),
                "sip:p@x".into(),
                600,
                "c".into(),
                "t".into(),
            );
            let e = s.on_response(S, "c", code, None, None, None).unwrap();
            assert!(
                matches!(e, SubscriberEvent::Terminated { reason: ref r, .. } if r == reason),
                "{code}"
            );
        }
        // 423: retried with the Min-Expires.
        s.start(
            Duration::ZERO,
            "w".into(),
            "sip:p@x".into(),
            60,
            "c".into(),
            "t".into(),
        );
        let e = s.on_response(S, "c", 423, None, None, Some(300)).unwrap();
        assert!(
            matches!(e, SubscriberEvent::Subscribe(ref sub) if sub.expires == 300 && sub.next_cseq == 2)
        );
        // Race: the NOTIFY comes before the 200 and sets the remote tag.
        s.start(
            Duration::ZERO,
            "w".into(),
            "sip:r@x".into(),
            600,
            "c3".into(),
            "t3".into(),
        );
        assert!(s
            .on_notify(
                S,
                "c3",
                Some("t3"),
                Some("n"),
                &SubState::Pending { expires: Some(600) }
            )
            .is_some());
        assert_eq!(
            s.on_response(2 * S, "c3", 200, Some("n"), Some(600), None),
            None
        );
        assert_eq!(
            s.by_presentity("sip:r@x").unwrap().remote_tag.as_deref(),
            Some("n")
        );
        let stop = s.stop(3 * S, "sip:r@x").unwrap();
        assert_eq!(stop.expires, 0);
        assert!(s.by_presentity("sip:r@x").is_none(), "ending");
        // The notifier's final NOTIFY is still accepted, then the dialog is gone.
        let e = s.on_notify(
            4 * S,
            "c3",
            Some("t3"),
            Some("n"),
            &SubState::Terminated {
                reason: Some("timeout".into()),
                retry_after: None,
            },
        );
        assert_eq!(e, Some(NotifyEffect::Ended));
        assert!(!s.subs.contains_key("c3"));
        // Without a final NOTIFY, Timer N removes it quietly.
        let mut s = Subscriber::new(32 * S);
        s.start(
            Duration::ZERO,
            "w".into(),
            "sip:z@x".into(),
            600,
            "c4".into(),
            "t4".into(),
        );
        s.stop(S, "sip:z@x").unwrap();
        assert!(s.due(S + 32 * S).is_empty());
        assert!(s.is_empty());
    }

    #[test]
    fn rfc3903_publication_etags_refresh_modify_remove_and_expiry() {
        let mut p = Publications::new(Policy::default());
        let aor = "sip:alice@sip.test";
        assert_eq!(
            p.on_publish(Duration::ZERO, aor, None, Some(60), false, || "x".into())
                .unwrap_err()
                .status,
            400
        );
        let PublishOutcome::Published { etag, expires: 60 } = p
            .on_publish(Duration::ZERO, aor, None, Some(60), true, || "e1".into())
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(etag, "e1");
        assert_eq!(
            p.on_publish(S, aor, Some("zz"), Some(60), false, || "e2".into())
                .unwrap_err()
                .status,
            412
        );
        let r = p
            .on_publish(S, aor, Some("e1"), Some(60), false, || "e2".into())
            .unwrap();
        assert_eq!(
            r,
            PublishOutcome::Refreshed {
                etag: "e2".into(),
                expires: 60
            }
        );
        assert_eq!(
            p.on_publish(S, aor, Some("e1"), Some(60), false, || "e3".into())
                .unwrap_err()
                .status,
            412,
            "old tag is gone"
        );
        assert!(p.expire(60 * S).is_empty());
        assert_eq!(p.expire(61 * S), vec![aor.to_owned()]);
        p.on_publish(Duration::ZERO, aor, None, Some(60), true, || "e4".into())
            .unwrap();
        let r = p
            .on_publish(S, aor, Some("e4"), Some(0), false, || unreachable!())
            .unwrap();
        assert_eq!(r, PublishOutcome::Removed { aor: aor.into() });
        assert_eq!(
            p.on_publish(S, aor, None, Some(5), true, || "e".into())
                .unwrap_err()
                .status,
            423
        );
    }
}
