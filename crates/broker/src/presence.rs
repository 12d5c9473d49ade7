//! The presence hub: one place where watchers' subscriptions to presentities are kept,
//! authorized, aggregated towards the presentity's network, rate-limited and expired.
//!
//! Size: one state machine; its `handle_*`/`poll_*` pairs share its tables.
//!
//! The hub is pure protocol logic in the style of `quinn-proto`: no IO, no tasks, no
//! channels and no clock. Inputs arrive through `handle_*` methods, effects leave through
//! [`PresenceHub::poll_output`], and the driver asks [`PresenceHub::poll_timeout`] when to
//! call [`PresenceHub::handle_timeout`].
//!
//! # Time
//!
//! Time is a [`Duration`] since an arbitrary epoch chosen by the driver (the broker passes
//! `tokio::time::Instant` minus its start instant). Every `now` given to one hub must come
//! from the same epoch and must never go backwards; deadlines returned by
//! [`PresenceHub::poll_timeout`] are on the same scale.
//!
//! # Model
//!
//! - A **subscription** is one watcher → presentity pair (RFC 3859 §3.3), `Pending` until the
//!   presentity's side authorizes it, then `Active`; a subscription that ends is removed and
//!   its watcher is told `Terminated(reason)` with an RFC 6665 §4.2.2 reason.
//! - The gateway owns the subscriptions towards the presentity's network (RFC 7248 §4): the
//!   first *active* watcher of a presentity causes one [`Output::UpstreamSubscribe`], later
//!   watchers share it, and when the last active watcher goes (unsubscribe, deny, expiry,
//!   termination) one [`Output::UpstreamUnsubscribe`] follows. Pending watchers never cause
//!   upstream traffic.
//! - The last published state of a presentity is cached only while an upstream
//!   subscription exists; when it ends the state is dropped. The hub never invents state:
//!   a watcher whose presentity has not published yet is told `Active` without a document.
//! - Notifications are rate-limited per presentity (RFC 3856 §6.10); see
//!   [`HubConfig::coalesce_interval`].
//! - Every collection is bounded by [`HubConfig`]; inputs that would exceed a bound are
//!   refused with a [`HubError`] and change nothing.
//!
//! # Not here
//!
//! Translating addresses or documents, SIP dialogs and their `Subscription-State: expires`
//! parameter, XMPP rosters, retry delays (`retry-after` of `probation`), and the RFC 7248 §7
//! probe of an XMPP watcher before refreshing its long-lived subscription on the SIP side:
//! those belong to the adapters and the broker's driver.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use cpim::presence::Presence;

/// Why a subscription ended: the `reason` of an RFC 6665 `Subscription-State: terminated`
/// (RFC 6665 §4.2.2, meanings for the subscriber in §4.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TerminationReason {
    /// The subscription ended but the subscriber may re-subscribe at once (e.g. the
    /// notifier moved the resource).
    Deactivated,
    /// The subscription ended because of too much state churn; re-subscribe later.
    Probation,
    /// Authorization was refused or withdrawn; do not re-subscribe.
    Rejected,
    /// The subscription was not refreshed before it expired, or was ended by the subscriber
    /// (`Expires: 0`); a new subscription may be tried at once.
    Timeout,
    /// Authorization could not be obtained in a timely fashion.
    Giveup,
    /// The resource does not exist any more.
    Noresource,
    /// The resource's state cannot be reported any more (it will never change).
    Invariant,
}

impl TerminationReason {
    /// Whether the presentity's network may be asked again right away: `Deactivated`,
    /// `Probation` and `Timeout` are transient (RFC 6665 §4.1.3 lets the subscriber retry);
    /// the others end every subscription to that presentity.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            TerminationReason::Deactivated
                | TerminationReason::Probation
                | TerminationReason::Timeout
        )
    }

    /// Every reason, in RFC 6665 §4.2.2 order.
    pub const ALL: [TerminationReason; 7] = [
        TerminationReason::Deactivated,
        TerminationReason::Probation,
        TerminationReason::Rejected,
        TerminationReason::Timeout,
        TerminationReason::Giveup,
        TerminationReason::Noresource,
        TerminationReason::Invariant,
    ];

    /// The reason for an RFC 6665 token (case-insensitive); `None` when unknown.
    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(token))
    }

    /// The RFC 6665 token, e.g. `"noresource"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TerminationReason::Deactivated => "deactivated",
            TerminationReason::Probation => "probation",
            TerminationReason::Rejected => "rejected",
            TerminationReason::Timeout => "timeout",
            TerminationReason::Giveup => "giveup",
            TerminationReason::Noresource => "noresource",
            TerminationReason::Invariant => "invariant",
        }
    }
}

impl fmt::Display for TerminationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one subscription as told to its watcher (RFC 6665 §4.2.2
/// `Subscription-State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionState {
    /// Received, waiting for the presentity's side to authorize it.
    Pending,
    /// Authorized; presence documents flow.
    Active,
    /// Ended; the hub has forgotten the subscription.
    Terminated(TerminationReason),
}

/// Limits and timers of a [`PresenceHub`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Minimum spacing of rate-limited notifications for one presentity (RFC 3856 §6.10:
    /// "not more than once every five seconds"). Default 5 s.
    pub coalesce_interval: Duration,
    /// How long probers wait for the presentity's network before getting an empty
    /// [`Output::ProbeResult`]. Default 10 s.
    pub probe_timeout: Duration,
    /// Maximum number of subscriptions (pending and active) held at once. Default 100 000.
    pub max_subscriptions: usize,
    /// Maximum number of remembered pre-approvals. Default 100 000.
    pub max_pre_approvals: usize,
    /// Maximum number of probers waiting for an answer. Default 10 000.
    pub max_pending_probes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            coalesce_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(10),
            max_subscriptions: 100_000,
            max_pre_approvals: 100_000,
            max_pending_probes: 10_000,
        }
    }
}

/// Why the hub refused an input. A refused input changes nothing; the caller answers the
/// peer (e.g. SIP `503`, XMPP `<resource-constraint/>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// A new subscription would exceed [`HubConfig::max_subscriptions`]. Refreshes of
    /// existing subscriptions are never refused.
    #[error("subscription limit of {limit} reached")]
    TooManySubscriptions {
        /// The configured limit.
        limit: usize,
    },
    /// A new pre-approval would exceed [`HubConfig::max_pre_approvals`].
    #[error("pre-approval limit of {limit} reached")]
    TooManyPreApprovals {
        /// The configured limit.
        limit: usize,
    },
    /// A new waiting prober would exceed [`HubConfig::max_pending_probes`].
    #[error("pending probe limit of {limit} reached")]
    TooManyProbes {
        /// The configured limit.
        limit: usize,
    },
}

/// An effect the driver must carry out, from [`PresenceHub::poll_output`].
#[derive(Debug, Clone, PartialEq)]
pub enum Output<Id> {
    /// Ask the presentity (its network) whether `watcher` may see its presence; answer
    /// with [`PresenceHub::handle_approve`] or [`PresenceHub::handle_deny`].
    AuthorizationRequest {
        /// Who is asked.
        presentity: Id,
        /// Who wants to watch.
        watcher: Id,
    },
    /// Tell `watcher` the state of its subscription to `presentity` (a NOTIFY, or an XMPP
    /// presence stanza). `presence` is present only when `state` is `Active` and the
    /// presentity's state is known.
    Notify {
        /// The recipient.
        watcher: Id,
        /// The watched user.
        presentity: Id,
        /// The subscription's state.
        state: SubscriptionState,
        /// The presentity's current presence, if active and known.
        presence: Option<Presence>,
    },
    /// Subscribe the gateway to `presentity` on its network (RFC 7248 §4).
    UpstreamSubscribe {
        /// The watched user.
        presentity: Id,
    },
    /// End the gateway's subscription to `presentity` on its network.
    UpstreamUnsubscribe {
        /// The watched user.
        presentity: Id,
    },
    /// Ask `presentity`'s network for its presence once (RFC 7248 §6: an XMPP probe or a
    /// SIP `SUBSCRIBE` with `Expires: 0`); the answer comes back as
    /// [`PresenceHub::handle_publish`].
    ProbeUpstream {
        /// The probed user.
        presentity: Id,
    },
    /// Answer to [`PresenceHub::handle_probe`]: `presence` is `None` when the state is not
    /// known (probe timeout, or the presentity's network refused).
    ProbeResult {
        /// Who probed.
        watcher: Id,
        /// The probed user.
        presentity: Id,
        /// The presentity's presence, if known.
        presence: Option<Presence>,
    },
}

/// Presence subscriptions of many watchers to many presentities; see the module docs.
///
/// `Id` names users (the broker uses [`crate::Identity`]). All iteration is in `Id` order,
/// so outputs are deterministic.
#[derive(Debug)]
pub struct PresenceHub<Id> {
    presentities: BTreeMap<Id, Presentity<Id>>,
    shared: Shared<Id>,
}

impl<Id> PresenceHub<Id>
where
    Id: Clone + Eq + Ord + Hash + fmt::Debug,
{
    /// An empty hub.
    pub fn new(config: HubConfig) -> Self {
        PresenceHub {
            presentities: BTreeMap::new(),
            shared: Shared {
                config,
                outputs: VecDeque::new(),
                timers: BTreeSet::new(),
                subscriptions: 0,
                changes: 0,
                changed: BTreeSet::new(),
                pre_approvals: 0,
                probes: 0,
            },
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// A watcher subscribes to a presentity, or refreshes its subscription.
    ///
    /// - `expires`: the subscription ends at `now + expires` unless refreshed; `None` never
    ///   expires (XMPP subscriptions are long-lived, RFC 7248 §4.1).
    /// - A **new** pair becomes `Pending`: the presentity gets an
    ///   [`Output::AuthorizationRequest`] and the watcher a `Pending` [`Output::Notify`]
    ///   without presence (RFC 6665 §4.2.2). If the presentity pre-approved the watcher
    ///   ([`PresenceHub::handle_approve`]) it becomes `Active` at once instead, as after an
    ///   approval.
    /// - A **refresh** replaces the expiry (`now + expires`, or none) and never asks for
    ///   authorization again; the watcher gets an immediate `Notify` of the subscription's
    ///   current state (RFC 6665 §4.2.1.2), with the cached presence if active. It does not
    ///   count against the rate limit.
    /// - `expires == Some(Duration::ZERO)` is RFC 6665 §4.2.1.4's unsubscribe for an
    ///   existing pair (as [`PresenceHub::handle_unsubscribe`]), and a fetch for a new one
    ///   (as [`PresenceHub::handle_probe`], RFC 7248 §6.2).
    ///
    /// # Errors
    ///
    /// [`HubError::TooManySubscriptions`] for a new pair beyond
    /// [`HubConfig::max_subscriptions`] (nothing is output; the caller refuses the request),
    /// or the errors of [`PresenceHub::handle_probe`] for a zero-expiry fetch.
    pub fn handle_subscribe(
        &mut self,
        now: Duration,
        watcher: Id,
        presentity: Id,
        expires: Option<Duration>,
    ) -> Result<(), HubError> {
        let exists = self.subscription_state(&watcher, &presentity).is_some();
        if expires == Some(Duration::ZERO) {
            if exists {
                self.handle_unsubscribe(watcher, presentity);
                return Ok(());
            }
            return self.handle_probe(now, watcher, presentity);
        }
        let expires_at = expires.map(|e| now.saturating_add(e));
        let sh = &mut self.shared;
        if exists {
            if let Some(entry) = self.presentities.get_mut(&presentity) {
                entry.refresh(&presentity, &watcher, expires_at, sh);
            }
            return Ok(());
        }
        if sh.subscriptions >= sh.config.max_subscriptions {
            return Err(HubError::TooManySubscriptions {
                limit: sh.config.max_subscriptions,
            });
        }
        let entry = self.presentities.entry(presentity.clone()).or_default();
        let pre_approved = entry.pre_approved.remove(&watcher);
        if pre_approved {
            sh.pre_approvals -= 1;
        }
        entry.add_watch(&presentity, &watcher, false, expires_at, sh);
        if pre_approved {
            entry.activate(&presentity, &watcher, sh);
        } else {
            sh.outputs.push_back(Output::AuthorizationRequest {
                presentity: presentity.clone(),
                watcher: watcher.clone(),
            });
            sh.outputs.push_back(Output::Notify {
                watcher,
                presentity,
                state: SubscriptionState::Pending,
                presence: None,
            });
        }
        Ok(())
    }

    /// The watcher ends its subscription. It gets `Terminated(Timeout)`, the reason RFC
    /// 6665 §4.2.1.4 gives for an `Expires: 0` unsubscribe, without presence; an adapter
    /// whose network has no final notification (XMPP) drops it. If it was the last active
    /// watcher, the upstream subscription ends and the cached state is dropped. Unknown
    /// pairs are ignored.
    pub fn handle_unsubscribe(&mut self, watcher: Id, presentity: Id) {
        self.end_subscription(&presentity, &watcher, TerminationReason::Timeout);
    }

    /// The presentity authorizes the watcher.
    ///
    /// - A `Pending` subscription becomes `Active`: the watcher gets an immediate `Active`
    ///   [`Output::Notify`] with the cached presence if known (RFC 3859 §3.4.1), neither
    ///   waiting for nor counting against the rate limit; if it is the presentity's first
    ///   active watcher, an [`Output::UpstreamSubscribe`] follows.
    /// - An `Active` subscription is left alone.
    /// - Without a subscription the approval is remembered as a **pre-approval** (XMPP
    ///   allows a `subscribed` before the `subscribe`, RFC 6121 §3.4): the watcher's next
    ///   subscribe is active at once. A pre-approval is used up by that subscribe; the hub
    ///   does not remember authorizations after a subscription ends (long-term policy is the
    ///   presentity's network's roster).
    ///
    /// # Errors
    ///
    /// [`HubError::TooManyPreApprovals`] when a new pre-approval would exceed
    /// [`HubConfig::max_pre_approvals`].
    pub fn handle_approve(&mut self, presentity: Id, watcher: Id) -> Result<(), HubError> {
        let sh = &mut self.shared;
        if let Some(entry) = self.presentities.get_mut(&presentity) {
            if let Some(watch) = entry.watchers.get(&watcher) {
                if !watch.active {
                    entry.activate(&presentity, &watcher, sh);
                }
                return Ok(());
            }
            if entry.pre_approved.contains(&watcher) {
                return Ok(());
            }
        }
        if sh.pre_approvals >= sh.config.max_pre_approvals {
            return Err(HubError::TooManyPreApprovals {
                limit: sh.config.max_pre_approvals,
            });
        }
        let entry = self.presentities.entry(presentity).or_default();
        entry.pre_approved.insert(watcher);
        sh.pre_approvals += 1;
        Ok(())
    }

    /// The presentity refuses (or withdraws) the watcher's authorization: a pending or
    /// active subscription ends with `Terminated(Rejected)` (RFC 6665 §4.1.3) and is
    /// removed, which may end the upstream subscription. Without a subscription, a
    /// pre-approval of that watcher is forgotten.
    pub fn handle_deny(&mut self, presentity: Id, watcher: Id) {
        let Some(entry) = self.presentities.get_mut(&presentity) else {
            return;
        };
        if entry.pre_approved.remove(&watcher) {
            self.shared.pre_approvals -= 1;
        }
        self.end_subscription(&presentity, &watcher, TerminationReason::Rejected);
    }

    /// New state from the presentity's network.
    ///
    /// - Waiting probers the hub knows as authorized get an [`Output::ProbeResult`] with
    ///   it, whatever else happens (others only from [`PresenceHub::handle_publish_to`]).
    /// - Without an active watcher (hence no upstream subscription) the state is not kept.
    /// - A state equal to the cached one changes nothing and sends nothing.
    /// - Otherwise it replaces the cached state and goes to every active watcher, rate
    ///   limited per presentity (RFC 3856 §6.10): if no rate-limited notification went out
    ///   within the last [`HubConfig::coalesce_interval`], at once; otherwise it is held and
    ///   the latest state goes out when that interval ends. Watchers that already have the
    ///   latest state (e.g. approved meanwhile) are skipped.
    pub fn handle_publish(&mut self, now: Duration, presentity: Id, presence: Presence) {
        self.publish(now, presentity, presence, None);
    }

    /// [`PresenceHub::handle_publish`] for a state the presentity's network sent to
    /// `recipient` (an answer to that watcher's probe, say): a prober the hub does not
    /// know as authorized gets it only when it is that recipient.
    pub fn handle_publish_to(
        &mut self,
        now: Duration,
        presentity: Id,
        presence: Presence,
        recipient: Id,
    ) {
        self.publish(now, presentity, presence, Some(recipient));
    }

    fn publish(&mut self, now: Duration, presentity: Id, presence: Presence, to: Option<Id>) {
        let sh = &mut self.shared;
        let Some(entry) = self.presentities.get_mut(&presentity) else {
            return;
        };
        entry.answer_probers(&presentity, Some(&presence), to.as_ref(), sh);
        if entry.active > 0 && entry.cached.as_ref() != Some(&presence) {
            entry.cached = Some(presence);
            entry.version += 1;
            match entry.window_until {
                Some(until) if now < until => entry.held = true,
                _ => {
                    if let Some(until) = entry.window_until.take() {
                        sh.timers
                            .remove(&(until, Timer::Coalesce(presentity.clone())));
                    }
                    entry.fan_out(now, &presentity, sh);
                }
            }
        }
        self.prune(&presentity);
    }

    /// A one-shot fetch of the presentity's presence for `watcher`, who need not be
    /// subscribed (RFC 7248 §6).
    ///
    /// A watcher the hub knows as authorized (an active subscription, or pre-approved) is
    /// answered at once with an [`Output::ProbeResult`] when the state is cached. Otherwise
    /// the watcher waits: the first waiter of a presentity causes one
    /// [`Output::ProbeUpstream`] — unless an upstream subscription already exists, whose
    /// first notification will answer — and all waiters are answered by the next
    /// [`PresenceHub::handle_publish`], or with `None` after [`HubConfig::probe_timeout`]
    /// (counted from the first waiter) or a permanent upstream termination. A watcher
    /// already waiting is not added twice.
    ///
    /// A watcher the hub does not know as authorized never gets the cached state nor a
    /// state published for others: its probe goes to the presentity's network in its own
    /// name ([`Output::ProbeUpstream`]), which decides; it is answered only by a state
    /// sent to it ([`PresenceHub::handle_publish_to`]), else with `None`.
    ///
    /// # Errors
    ///
    /// [`HubError::TooManyProbes`] when a new waiter would exceed
    /// [`HubConfig::max_pending_probes`].
    pub fn handle_probe(
        &mut self,
        now: Duration,
        watcher: Id,
        presentity: Id,
    ) -> Result<(), HubError> {
        let sh = &mut self.shared;
        let mut authorized = false;
        if let Some(entry) = self.presentities.get(&presentity) {
            authorized = entry.authorizes(&watcher);
            if let (Some(presence), true) = (&entry.cached, authorized) {
                sh.outputs.push_back(Output::ProbeResult {
                    watcher,
                    presentity,
                    presence: Some(presence.clone()),
                });
                return Ok(());
            }
            if entry.probers.contains(&watcher) {
                return Ok(());
            }
        }
        if sh.probes >= sh.config.max_pending_probes {
            return Err(HubError::TooManyProbes {
                limit: sh.config.max_pending_probes,
            });
        }
        let entry = self.presentities.entry(presentity.clone()).or_default();
        entry.probers.insert(watcher);
        sh.probes += 1;
        let first = entry.probe_deadline.is_none();
        if first {
            let at = now.saturating_add(sh.config.probe_timeout);
            entry.probe_deadline = Some(at);
            sh.timers.insert((at, Timer::Probe(presentity.clone())));
        }
        // The upstream subscription's next notification answers authorized probers; a
        // prober not known as authorized is asked for in its own name.
        if (first && entry.active == 0) || !authorized {
            sh.outputs.push_back(Output::ProbeUpstream { presentity });
        }
        Ok(())
    }

    /// The presentity's network ended the gateway's upstream subscription (an RFC 6665
    /// `terminated` NOTIFY, an XMPP `unsubscribed`, or a refused probe).
    ///
    /// - Transient reasons ([`TerminationReason::is_transient`]): if the presentity has
    ///   active watchers, the hub asks for a new [`Output::UpstreamSubscribe`] at once
    ///   (delaying for `probation`'s `retry-after` is the driver's business); watchers and
    ///   the cached state stay. Otherwise nothing happens.
    /// - Permanent reasons: every watcher of the presentity, pending or active, gets
    ///   `Terminated(reason)` and is removed; the cached state is dropped; waiting probers
    ///   get `ProbeResult { presence: None }`. No `UpstreamUnsubscribe` is sent, since the
    ///   network already ended it. Pre-approvals stay.
    pub fn handle_upstream_terminated(&mut self, presentity: Id, reason: TerminationReason) {
        let sh = &mut self.shared;
        let Some(entry) = self.presentities.get_mut(&presentity) else {
            return;
        };
        if reason.is_transient() {
            if entry.active > 0 {
                sh.outputs
                    .push_back(Output::UpstreamSubscribe { presentity });
            }
            return;
        }
        let watchers = std::mem::take(&mut entry.watchers);
        for (watcher, watch) in watchers {
            sh.subscriptions -= 1;
            sh.touched(&watcher, &presentity);
            if let Some(at) = watch.expires_at {
                sh.timers.remove(&(
                    at,
                    Timer::Expiry {
                        presentity: presentity.clone(),
                        watcher: watcher.clone(),
                    },
                ));
            }
            sh.outputs.push_back(Output::Notify {
                watcher,
                presentity: presentity.clone(),
                state: SubscriptionState::Terminated(reason),
                presence: None,
            });
        }
        entry.active = 0;
        entry.drop_state(&presentity, sh);
        entry.answer_probers(&presentity, None, None, sh);
        self.prune(&presentity);
    }

    /// Processes every deadline at or before `now`: expiries (`Terminated(Timeout)`, RFC
    /// 6665 §4.2.1.4), ends of rate-limit intervals (the held latest state goes out) and
    /// probe timeouts. Calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some((at, _)) = self.shared.timers.first() {
            if *at > now {
                break;
            }
            let Some((at, timer)) = self.shared.timers.pop_first() else {
                break;
            };
            match timer {
                Timer::Expiry {
                    presentity,
                    watcher,
                } => {
                    let due = self
                        .presentities
                        .get(&presentity)
                        .and_then(|entry| entry.watchers.get(&watcher))
                        .is_some_and(|watch| watch.expires_at == Some(at));
                    if due {
                        self.end_subscription(&presentity, &watcher, TerminationReason::Timeout);
                    }
                }
                Timer::Coalesce(presentity) => {
                    let sh = &mut self.shared;
                    if let Some(entry) = self.presentities.get_mut(&presentity) {
                        if entry.window_until == Some(at) {
                            entry.window_until = None;
                            if std::mem::take(&mut entry.held) {
                                entry.fan_out(now, &presentity, sh);
                            }
                        }
                    }
                }
                Timer::Probe(presentity) => {
                    let sh = &mut self.shared;
                    if let Some(entry) = self.presentities.get_mut(&presentity) {
                        if entry.probe_deadline == Some(at) {
                            entry.answer_probers(&presentity, None, None, sh);
                        }
                    }
                    self.prune(&presentity);
                }
            }
        }
    }

    /// The earliest pending deadline (an expiry, the end of a rate-limit interval or a
    /// probe timeout), if any: call [`PresenceHub::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.shared.timers.first().map(|(at, _)| *at)
    }

    /// Gives back the memory of a fan-out once its outputs are taken (see
    /// [`crate::compact`]).
    pub fn compact(&mut self) {
        use crate::compact::Compact;
        self.shared.outputs.compact();
    }

    /// The next effect to carry out, oldest first.
    pub fn poll_output(&mut self) -> Option<Output<Id>> {
        self.shared.outputs.pop_front()
    }

    /// A counter that changes whenever the set of [`PresenceHub::subscriptions`] does.
    pub fn subscription_changes(&self) -> u64 {
        self.shared.changes
    }

    /// The subscriptions changed (added, removed, activated, given another expiry) since
    /// the last call, each with its state now — `None` when it is gone: what the broker
    /// writes to its spool, without going over the others.
    #[allow(clippy::type_complexity)] // (watcher, presentity, (active, expiry) or gone)
    pub fn take_changed(&mut self) -> Vec<(Id, Id, Option<(bool, Option<Duration>)>)> {
        let changed = std::mem::take(&mut self.shared.changed);
        changed
            .into_iter()
            .map(|(watcher, presentity)| {
                let now = self
                    .presentities
                    .get(&presentity)
                    .and_then(|e| e.watchers.get(&watcher))
                    .map(|w| (w.active, w.expires_at));
                (watcher, presentity, now)
            })
            .collect()
    }

    /// Forgets which subscriptions changed (they are as the spool has them).
    pub fn forget_changes(&mut self) {
        self.shared.changed.clear();
    }

    /// Every subscription as (watcher, presentity, active, expiry), in `Id` order: what
    /// the broker keeps across a restart.
    pub fn subscriptions(&self) -> Vec<(Id, Id, bool, Option<Duration>)> {
        self.presentities
            .iter()
            .flat_map(|(p, e)| {
                e.watchers
                    .iter()
                    .map(move |(w, watch)| (w.clone(), p.clone(), watch.active, watch.expires_at))
            })
            .collect()
    }

    /// Re-creates a subscription kept across a restart, without asking the presentity
    /// again and without telling the watcher (it has its state): an active one counts for
    /// the upstream subscription, so the first of a presentity outputs
    /// [`Output::UpstreamSubscribe`] — the gateway subscribes again on the presentity's
    /// network. Nothing is cached: watchers hear the presentity's state when its network
    /// sends it. An existing pair, or one beyond the limit, is left alone.
    pub fn restore_subscription(
        &mut self,
        watcher: Id,
        presentity: Id,
        active: bool,
        expires_at: Option<Duration>,
    ) {
        let sh = &mut self.shared;
        if sh.subscriptions >= sh.config.max_subscriptions {
            return;
        }
        let entry = self.presentities.entry(presentity.clone()).or_default();
        if entry.watchers.contains_key(&watcher) {
            return;
        }
        entry.add_watch(&presentity, &watcher, active, expires_at, sh);
        if active {
            entry.active += 1;
            if entry.active == 1 {
                sh.outputs
                    .push_back(Output::UpstreamSubscribe { presentity });
            }
        }
    }

    /// The state of `watcher`'s subscription to `presentity`; `None` if there is none
    /// (terminated subscriptions are forgotten).
    pub fn subscription_state(&self, watcher: &Id, presentity: &Id) -> Option<SubscriptionState> {
        self.presentities
            .get(presentity)
            .and_then(|entry| entry.watchers.get(watcher))
            .map(Watch::state)
    }

    /// The watchers of `presentity` with their states, in `Id` order.
    pub fn watchers<'a>(
        &'a self,
        presentity: &Id,
    ) -> impl Iterator<Item = (&'a Id, SubscriptionState)> + 'a {
        self.presentities
            .get(presentity)
            .into_iter()
            .flat_map(|entry| entry.watchers.iter().map(|(id, w)| (id, w.state())))
    }

    /// The cached presence of `presentity`: the last state published while an upstream
    /// subscription exists.
    pub fn cached(&self, presentity: &Id) -> Option<&Presence> {
        self.presentities
            .get(presentity)
            .and_then(|entry| entry.cached.as_ref())
    }

    /// Whether the gateway holds an upstream subscription to `presentity` (it has at
    /// least one active watcher).
    pub fn is_upstream_subscribed(&self, presentity: &Id) -> bool {
        self.presentities
            .get(presentity)
            .is_some_and(|entry| entry.active > 0)
    }

    /// The number of subscriptions, pending and active.
    pub fn len(&self) -> usize {
        self.shared.subscriptions
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.shared.subscriptions == 0
    }

    /// The number of probers waiting for an answer.
    pub fn pending_probes(&self) -> usize {
        self.shared.probes
    }

    /// Ends one subscription with `reason`, if it exists.
    fn end_subscription(&mut self, presentity: &Id, watcher: &Id, reason: TerminationReason) {
        if let Some(entry) = self.presentities.get_mut(presentity) {
            entry.end(presentity, watcher, reason, &mut self.shared);
        }
        self.prune(presentity);
    }

    /// Forgets a presentity that has nothing left to remember.
    fn prune(&mut self, presentity: &Id) {
        if self
            .presentities
            .get(presentity)
            .is_some_and(Presentity::is_unused)
        {
            self.presentities.remove(presentity);
        }
    }
}

impl<Id> Default for PresenceHub<Id>
where
    Id: Clone + Eq + Ord + Hash + fmt::Debug,
{
    fn default() -> Self {
        PresenceHub::new(HubConfig::default())
    }
}

/// What every presentity entry writes to: outputs, timers, counters, config.
#[derive(Debug)]
struct Shared<Id> {
    config: HubConfig,
    outputs: VecDeque<Output<Id>>,
    /// Deadlines, earliest first. Each entry is mirrored by the deadline stored in the
    /// watch or presentity it concerns, so it can be found and removed.
    timers: BTreeSet<(Duration, Timer<Id>)>,
    subscriptions: usize,
    /// Bumped whenever a subscription is added, removed, activated or its expiry changes.
    changes: u64,
    /// The (watcher, presentity) pairs changed since [`PresenceHub::take_changed`].
    changed: BTreeSet<(Id, Id)>,
    pre_approvals: usize,
    probes: usize,
}

impl<Id: Clone + Ord> Shared<Id> {
    /// A subscription was added, removed, activated or given another expiry.
    fn touched(&mut self, watcher: &Id, presentity: &Id) {
        self.changes += 1;
        self.changed.insert((watcher.clone(), presentity.clone()));
    }
}

/// A deadline's purpose. The variant order matters: at one instant, expiries fire before
/// rate-limited fan-outs, so a subscription ending then is not sent a last update first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer<Id> {
    /// A subscription's expiry.
    Expiry { presentity: Id, watcher: Id },
    /// The end of a presentity's rate-limit interval.
    Coalesce(Id),
    /// A presentity's probe timeout.
    Probe(Id),
}

/// One subscription, seen from its presentity.
#[derive(Debug)]
struct Watch {
    active: bool,
    expires_at: Option<Duration>,
    /// The presentity's state `version` this watcher was last sent.
    seen: u64,
}

impl Watch {
    fn state(&self) -> SubscriptionState {
        if self.active {
            SubscriptionState::Active
        } else {
            SubscriptionState::Pending
        }
    }
}

/// Everything known about one presentity.
#[derive(Debug)]
struct Presentity<Id> {
    watchers: BTreeMap<Id, Watch>,
    /// Active watchers; the upstream subscription exists exactly while this is non-zero.
    active: usize,
    cached: Option<Presence>,
    /// Bumped whenever `cached` changes to a new document.
    version: u64,
    /// End of the current rate-limit interval, if one is running.
    window_until: Option<Duration>,
    /// A newer state than the last rate-limited notification waits for `window_until`.
    held: bool,
    probers: BTreeSet<Id>,
    probe_deadline: Option<Duration>,
    pre_approved: BTreeSet<Id>,
}

impl<Id> Default for Presentity<Id> {
    fn default() -> Self {
        Presentity {
            watchers: BTreeMap::new(),
            active: 0,
            cached: None,
            version: 0,
            window_until: None,
            held: false,
            probers: BTreeSet::new(),
            probe_deadline: None,
            pre_approved: BTreeSet::new(),
        }
    }
}

impl<Id> Presentity<Id>
where
    Id: Clone + Eq + Ord + Hash + fmt::Debug,
{
    fn is_unused(&self) -> bool {
        self.watchers.is_empty() && self.probers.is_empty() && self.pre_approved.is_empty()
    }

    fn active_notify(&self, presentity: &Id, watcher: &Id) -> Output<Id> {
        Output::Notify {
            watcher: watcher.clone(),
            presentity: presentity.clone(),
            state: SubscriptionState::Active,
            presence: self.cached.clone(),
        }
    }

    /// A new subscription of `watcher` (counted, its expiry timer set); nothing output.
    fn add_watch(
        &mut self,
        presentity: &Id,
        watcher: &Id,
        active: bool,
        expires_at: Option<Duration>,
        sh: &mut Shared<Id>,
    ) {
        self.watchers.insert(
            watcher.clone(),
            Watch {
                active,
                expires_at,
                seen: 0,
            },
        );
        sh.subscriptions += 1;
        sh.touched(watcher, presentity);
        if let Some(at) = expires_at {
            sh.timers.insert((
                at,
                Timer::Expiry {
                    presentity: presentity.clone(),
                    watcher: watcher.clone(),
                },
            ));
        }
    }

    /// Pending → active: immediate notify of the current state, upstream subscribe if first.
    fn activate(&mut self, presentity: &Id, watcher: &Id, sh: &mut Shared<Id>) {
        let version = self.version;
        let Some(watch) = self.watchers.get_mut(watcher) else {
            return;
        };
        watch.active = true;
        sh.touched(watcher, presentity);
        watch.seen = version;
        self.active += 1;
        let notify = self.active_notify(presentity, watcher);
        if matches!(
            &notify,
            Output::Notify {
                presence: Some(_),
                ..
            }
        ) {
            // The approval itself first (XMPP `subscribed`): a state alone does not
            // tell the watcher's network that the subscription was granted.
            sh.outputs.push_back(Output::Notify {
                watcher: watcher.clone(),
                presentity: presentity.clone(),
                state: SubscriptionState::Active,
                presence: None,
            });
        }
        sh.outputs.push_back(notify);
        if self.active == 1 {
            sh.outputs.push_back(Output::UpstreamSubscribe {
                presentity: presentity.clone(),
            });
        }
    }

    /// A refresh: new expiry, immediate notify of the current state.
    fn refresh(
        &mut self,
        presentity: &Id,
        watcher: &Id,
        expires_at: Option<Duration>,
        sh: &mut Shared<Id>,
    ) {
        let version = self.version;
        let Some(watch) = self.watchers.get_mut(watcher) else {
            return;
        };
        if watch.expires_at != expires_at {
            if let Some(old) = watch.expires_at {
                sh.timers.remove(&(
                    old,
                    Timer::Expiry {
                        presentity: presentity.clone(),
                        watcher: watcher.clone(),
                    },
                ));
            }
            if let Some(at) = expires_at {
                sh.timers.insert((
                    at,
                    Timer::Expiry {
                        presentity: presentity.clone(),
                        watcher: watcher.clone(),
                    },
                ));
            }
            watch.expires_at = expires_at;
            sh.touched(watcher, presentity);
        }
        if watch.active {
            watch.seen = version;
            sh.outputs
                .push_back(self.active_notify(presentity, watcher));
        } else {
            sh.outputs.push_back(Output::Notify {
                watcher: watcher.clone(),
                presentity: presentity.clone(),
                state: SubscriptionState::Pending,
                presence: None,
            });
        }
    }

    /// Removes one subscription, telling the watcher why; the last active watcher takes
    /// the upstream subscription and the cached state with it.
    fn end(
        &mut self,
        presentity: &Id,
        watcher: &Id,
        reason: TerminationReason,
        sh: &mut Shared<Id>,
    ) {
        let Some(watch) = self.watchers.remove(watcher) else {
            return;
        };
        sh.subscriptions -= 1;
        sh.touched(watcher, presentity);
        if let Some(at) = watch.expires_at {
            sh.timers.remove(&(
                at,
                Timer::Expiry {
                    presentity: presentity.clone(),
                    watcher: watcher.clone(),
                },
            ));
        }
        sh.outputs.push_back(Output::Notify {
            watcher: watcher.clone(),
            presentity: presentity.clone(),
            state: SubscriptionState::Terminated(reason),
            presence: None,
        });
        if watch.active {
            self.active -= 1;
            if self.active == 0 {
                sh.outputs.push_back(Output::UpstreamUnsubscribe {
                    presentity: presentity.clone(),
                });
                self.drop_state(presentity, sh);
            }
        }
    }

    /// Forgets the cached state and any rate-limit interval (no upstream subscription).
    fn drop_state(&mut self, presentity: &Id, sh: &mut Shared<Id>) {
        self.cached = None;
        self.held = false;
        if let Some(until) = self.window_until.take() {
            sh.timers
                .remove(&(until, Timer::Coalesce(presentity.clone())));
        }
    }

    /// Sends the cached state to every active watcher that lacks it; starts a rate-limit
    /// interval if anything was sent.
    fn fan_out(&mut self, now: Duration, presentity: &Id, sh: &mut Shared<Id>) {
        let mut sent = false;
        for (watcher, watch) in &mut self.watchers {
            if watch.active && watch.seen != self.version {
                watch.seen = self.version;
                sent = true;
                sh.outputs.push_back(Output::Notify {
                    watcher: watcher.clone(),
                    presentity: presentity.clone(),
                    state: SubscriptionState::Active,
                    presence: self.cached.clone(),
                });
            }
        }
        self.held = false;
        if sent {
            let until = now.saturating_add(sh.config.coalesce_interval);
            self.window_until = Some(until);
            sh.timers
                .insert((until, Timer::Coalesce(presentity.clone())));
        }
    }

    /// Whether `watcher` may see the state: an active subscription, or pre-approved.
    fn authorizes(&self, watcher: &Id) -> bool {
        self.watchers.get(watcher).is_some_and(|w| w.active) || self.pre_approved.contains(watcher)
    }

    /// Answers the waiting probers and clears the probe timeout once none waits. With
    /// `presence` (a state came), only those who may see it are answered: the ones the
    /// hub knows as authorized, and `to` (the watcher the presentity's network sent it
    /// to); the others keep waiting for their own answer or the timeout. Without (a
    /// timeout, a permanent termination), every one gets `None`: nothing is revealed.
    fn answer_probers(
        &mut self,
        presentity: &Id,
        presence: Option<&Presence>,
        to: Option<&Id>,
        sh: &mut Shared<Id>,
    ) {
        let waiting = std::mem::take(&mut self.probers);
        let (answered, still): (BTreeSet<Id>, BTreeSet<Id>) = waiting
            .into_iter()
            .partition(|w| presence.is_none() || self.authorizes(w) || to == Some(w));
        self.probers = still;
        sh.probes -= answered.len();
        if self.probers.is_empty() {
            if let Some(at) = self.probe_deadline.take() {
                sh.timers.remove(&(at, Timer::Probe(presentity.clone())));
            }
        }
        for watcher in answered {
            sh.outputs.push_back(Output::ProbeResult {
                watcher,
                presentity: presentity.clone(),
                presence: presence.cloned(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use cpim::presence::Note;
    use proptest::prelude::*;

    use super::*;

    type Id = &'static str;

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);

    fn doc(entity: &str, text: &str) -> Presence {
        Presence {
            entity: format!("pres:{entity}@example.com"),
            tuples: Vec::new(),
            notes: vec![Note {
                lang: None,
                text: text.to_owned(),
            }],
            persons: Vec::new(),
            devices: Vec::new(),
            extensions: Vec::new(),
        }
    }

    fn notify(
        watcher: Id,
        presentity: Id,
        state: SubscriptionState,
        presence: Option<Presence>,
    ) -> Output<Id> {
        Output::Notify {
            watcher,
            presentity,
            state,
            presence,
        }
    }

    fn active(watcher: Id, presentity: Id, presence: Option<Presence>) -> Output<Id> {
        notify(watcher, presentity, SubscriptionState::Active, presence)
    }

    fn terminated(watcher: Id, presentity: Id, reason: TerminationReason) -> Output<Id> {
        notify(
            watcher,
            presentity,
            SubscriptionState::Terminated(reason),
            None,
        )
    }

    fn upstream_subscribe(presentity: Id) -> Output<Id> {
        Output::UpstreamSubscribe { presentity }
    }

    fn upstream_unsubscribe(presentity: Id) -> Output<Id> {
        Output::UpstreamUnsubscribe { presentity }
    }

    /// A hub with a fake clock.
    struct Harness {
        hub: PresenceHub<Id>,
        now: Duration,
    }

    impl Harness {
        fn new() -> Self {
            Harness::with(HubConfig::default())
        }

        fn with(config: HubConfig) -> Self {
            Harness {
                hub: PresenceHub::new(config),
                now: Duration::ZERO,
            }
        }

        fn drain(&mut self) -> Vec<Output<Id>> {
            std::iter::from_fn(|| self.hub.poll_output()).collect()
        }

        /// Moves the clock to `target`, firing each deadline at its own time; returns the
        /// outputs with the time they were produced.
        fn advance_to(&mut self, target: Duration) -> Vec<(Duration, Output<Id>)> {
            let mut out = Vec::new();
            while let Some(at) = self.hub.poll_timeout() {
                if at > target {
                    break;
                }
                self.now = self.now.max(at);
                self.hub.handle_timeout(self.now);
                let now = self.now;
                out.extend(self.drain().into_iter().map(|o| (now, o)));
            }
            self.now = target;
            out
        }

        fn advance(&mut self, by: Duration) -> Vec<(Duration, Output<Id>)> {
            self.advance_to(self.now + by)
        }

        fn subscribe(&mut self, watcher: Id, presentity: Id, expires: Option<Duration>) {
            self.hub
                .handle_subscribe(self.now, watcher, presentity, expires)
                .unwrap();
        }

        /// Subscribes and approves, discarding the outputs.
        fn watch(&mut self, watcher: Id, presentity: Id) {
            self.subscribe(watcher, presentity, None);
            self.hub.handle_approve(presentity, watcher).unwrap();
            self.drain();
        }

        fn publish(&mut self, presentity: Id, presence: Presence) {
            self.hub.handle_publish(self.now, presentity, presence);
        }
    }

    fn count(outputs: &[Output<Id>], wanted: &Output<Id>) -> usize {
        outputs.iter().filter(|o| *o == wanted).count()
    }

    #[test]
    fn aggregation_three_watchers_share_one_upstream_subscription() {
        let mut h = Harness::new();
        for w in ["a", "b", "c"] {
            h.subscribe(w, "x", None);
        }
        let pending = h.drain();
        assert_eq!(count(&pending, &upstream_subscribe("x")), 0);
        for w in ["a", "b", "c"] {
            h.hub.handle_approve("x", w).unwrap();
        }
        let out = h.drain();
        assert_eq!(count(&out, &upstream_subscribe("x")), 1);
        assert!(h.hub.is_upstream_subscribed(&"x"));
        assert_eq!(
            h.hub.watchers(&"x").collect::<Vec<_>>(),
            vec![
                (&"a", SubscriptionState::Active),
                (&"b", SubscriptionState::Active),
                (&"c", SubscriptionState::Active),
            ]
        );
        assert_eq!(h.hub.len(), 3);
    }

    #[test]
    fn aggregation_last_watcher_leaving_unsubscribes_upstream_once_and_drops_state() {
        let mut h = Harness::new();
        for w in ["a", "b", "c"] {
            h.watch(w, "x");
        }
        h.publish("x", doc("x", "online"));
        h.drain();
        assert_eq!(h.hub.cached(&"x"), Some(&doc("x", "online")));

        h.hub.handle_unsubscribe("a", "x");
        h.hub.handle_deny("x", "b");
        let out = h.drain();
        assert_eq!(
            out,
            vec![
                terminated("a", "x", TerminationReason::Timeout),
                terminated("b", "x", TerminationReason::Rejected),
            ]
        );
        assert_eq!(h.hub.cached(&"x"), Some(&doc("x", "online")));

        h.hub.handle_unsubscribe("c", "x");
        let out = h.drain();
        assert_eq!(
            out,
            vec![
                terminated("c", "x", TerminationReason::Timeout),
                upstream_unsubscribe("x"),
            ]
        );
        assert_eq!(h.hub.cached(&"x"), None);
        assert!(!h.hub.is_upstream_subscribed(&"x"));
        assert!(h.hub.is_empty());
        assert_eq!(h.hub.poll_timeout(), None, "no timer outlives the state");
    }

    #[test]
    fn aggregation_pending_watchers_cause_no_upstream_traffic() {
        let mut h = Harness::new();
        h.watch("a", "x");
        h.subscribe("b", "x", None);
        h.hub.handle_unsubscribe("a", "x");
        let out = h.drain();
        assert_eq!(count(&out, &upstream_unsubscribe("x")), 1);
        assert_eq!(
            h.hub.subscription_state(&"b", &"x"),
            Some(SubscriptionState::Pending)
        );
        h.publish("x", doc("x", "ignored"));
        assert_eq!(h.hub.cached(&"x"), None, "no state without a subscription");
        assert!(h.drain().is_empty());
    }

    #[test]
    fn rfc3859_3_4_1_approved_watcher_gets_current_state_immediately() {
        let mut h = Harness::new();
        h.watch("a", "x");
        h.publish("x", doc("x", "one"));
        assert_eq!(h.drain(), vec![active("a", "x", Some(doc("x", "one")))]);

        // Inside the rate-limit interval: the new watcher does not wait for it.
        h.advance(SEC);
        h.subscribe("b", "x", None);
        h.drain();
        h.hub.handle_approve("x", "b").unwrap();
        assert_eq!(
            h.drain(),
            vec![
                active("b", "x", None),
                active("b", "x", Some(doc("x", "one")))
            ],
            "the approval, then the state"
        );

        // A held change, then a third watcher: it gets the held (latest) state at once...
        h.advance(SEC);
        h.publish("x", doc("x", "two"));
        assert!(h.drain().is_empty(), "held by the interval");
        h.subscribe("c", "x", None);
        h.hub.handle_approve("x", "c").unwrap();
        let out = h.drain();
        assert_eq!(out.last(), Some(&active("c", "x", Some(doc("x", "two")))));

        // ...and is not sent it again when the interval ends; the others are.
        let out = h.advance_to(Duration::from_secs(5));
        assert_eq!(
            out,
            vec![
                (5 * SEC, active("a", "x", Some(doc("x", "two")))),
                (5 * SEC, active("b", "x", Some(doc("x", "two")))),
            ]
        );
    }

    #[test]
    fn rfc3859_3_4_1_approved_watcher_of_unknown_state_is_told_active_without_document() {
        let mut h = Harness::new();
        h.subscribe("a", "x", None);
        h.drain();
        h.hub.handle_approve("x", "a").unwrap();
        assert_eq!(
            h.drain(),
            vec![active("a", "x", None), upstream_subscribe("x")]
        );
        h.publish("x", doc("x", "first"));
        assert_eq!(h.drain(), vec![active("a", "x", Some(doc("x", "first")))]);
    }

    #[test]
    fn rfc3856_6_10_burst_sends_first_at_once_and_only_the_latest_at_interval_end() {
        let mut h = Harness::new();
        h.watch("a", "x");
        h.watch("b", "x");
        let mut sent = Vec::new();
        for i in 0..10 {
            h.publish("x", doc("x", &format!("state {i}")));
            let now = h.now;
            sent.extend(h.drain().into_iter().map(|o| (now, o)));
            sent.extend(h.advance(400 * MS));
        }
        assert_eq!(h.now, Duration::from_millis(4000));
        sent.extend(h.advance_to(Duration::from_secs(30)));
        assert_eq!(
            sent,
            vec![
                (Duration::ZERO, active("a", "x", Some(doc("x", "state 0")))),
                (Duration::ZERO, active("b", "x", Some(doc("x", "state 0")))),
                (5 * SEC, active("a", "x", Some(doc("x", "state 9")))),
                (5 * SEC, active("b", "x", Some(doc("x", "state 9")))),
            ]
        );
        assert_eq!(h.hub.cached(&"x"), Some(&doc("x", "state 9")));
        assert_eq!(h.hub.poll_timeout(), None);
    }

    #[test]
    fn rfc3856_6_10_changes_during_a_held_interval_start_the_next_one() {
        let mut h = Harness::new();
        h.watch("a", "x");
        h.publish("x", doc("x", "0"));
        h.drain();
        h.advance(SEC);
        h.publish("x", doc("x", "1"));
        // Sent at 5 s; a change at 6 s waits for 10 s, not for a quiet period.
        let out = h.advance_to(6 * SEC);
        assert_eq!(out, vec![(5 * SEC, active("a", "x", Some(doc("x", "1"))))]);
        h.publish("x", doc("x", "2"));
        assert!(h.drain().is_empty());
        let out = h.advance_to(20 * SEC);
        assert_eq!(out, vec![(10 * SEC, active("a", "x", Some(doc("x", "2"))))]);
    }

    #[test]
    fn rfc3856_6_10_publish_after_quiet_period_goes_out_immediately() {
        let mut h = Harness::new();
        h.watch("a", "x");
        h.publish("x", doc("x", "0"));
        h.drain();
        assert!(h.advance_to(7 * SEC).is_empty());
        h.publish("x", doc("x", "1"));
        assert_eq!(h.drain(), vec![active("a", "x", Some(doc("x", "1")))]);
        // The interval restarted at 7 s: a change at 11 s is held until 12 s.
        h.advance_to(11 * SEC);
        h.publish("x", doc("x", "2"));
        assert!(h.drain().is_empty());
        let out = h.advance_to(13 * SEC);
        assert_eq!(out, vec![(12 * SEC, active("a", "x", Some(doc("x", "2"))))]);
    }

    #[test]
    fn rfc3856_6_10_late_timer_does_not_delay_a_new_change() {
        // The driver delivers a publish after the interval ended but before handling the
        // timeout: the change goes out at once.
        let mut h = Harness::new();
        h.watch("a", "x");
        h.publish("x", doc("x", "0"));
        h.drain();
        h.now = 6 * SEC;
        h.publish("x", doc("x", "1"));
        assert_eq!(h.drain(), vec![active("a", "x", Some(doc("x", "1")))]);
        assert_eq!(h.hub.poll_timeout(), Some(11 * SEC));
    }

    #[test]
    fn rfc3856_6_10_identical_state_is_not_resent() {
        let mut h = Harness::new();
        h.watch("a", "x");
        h.publish("x", doc("x", "same"));
        h.drain();
        h.advance(10 * SEC);
        h.publish("x", doc("x", "same"));
        assert!(h.drain().is_empty());
        assert_eq!(h.hub.poll_timeout(), None);
    }

    #[test]
    fn rfc6665_4_2_1_4_refresh_before_expiry_keeps_the_subscription() {
        let mut h = Harness::new();
        h.subscribe("a", "x", Some(60 * SEC));
        h.hub.handle_approve("x", "a").unwrap();
        h.drain();
        assert_eq!(h.hub.poll_timeout(), Some(60 * SEC));
        h.advance_to(50 * SEC);
        h.subscribe("a", "x", Some(60 * SEC));
        assert_eq!(h.drain(), vec![active("a", "x", None)]);
        assert_eq!(h.hub.poll_timeout(), Some(110 * SEC));
        assert!(h.advance_to(110 * SEC - MS).is_empty());
        assert_eq!(
            h.hub.subscription_state(&"a", &"x"),
            Some(SubscriptionState::Active)
        );
        let out = h.advance_to(200 * SEC);
        assert_eq!(
            out,
            vec![
                (110 * SEC, terminated("a", "x", TerminationReason::Timeout)),
                (110 * SEC, upstream_unsubscribe("x")),
            ]
        );
    }

    #[test]
    fn rfc6665_4_2_1_4_unrefreshed_subscription_terminates_with_timeout_at_expiry() {
        let mut h = Harness::new();
        h.subscribe("a", "x", Some(30 * SEC));
        h.subscribe("b", "x", Some(10 * SEC));
        h.hub.handle_approve("x", "a").unwrap();
        h.publish("x", doc("x", "on"));
        h.drain();
        let out = h.advance_to(30 * SEC - MS);
        assert_eq!(
            out,
            vec![(10 * SEC, terminated("b", "x", TerminationReason::Timeout))],
            "a pending subscription expires too"
        );
        let out = h.advance_to(30 * SEC);
        assert_eq!(
            out,
            vec![
                (30 * SEC, terminated("a", "x", TerminationReason::Timeout)),
                (30 * SEC, upstream_unsubscribe("x")),
            ]
        );
        assert_eq!(h.hub.subscription_state(&"a", &"x"), None);
        assert_eq!(h.hub.cached(&"x"), None);
    }

    #[test]
    fn rfc6665_4_2_1_4_refresh_without_expiry_makes_it_long_lived() {
        let mut h = Harness::new();
        h.subscribe("a", "x", Some(30 * SEC));
        h.subscribe("a", "x", None);
        assert_eq!(h.hub.poll_timeout(), None);
        assert!(h.advance_to(3600 * SEC).is_empty());
        assert_eq!(h.hub.len(), 1);
    }

    #[test]
    fn rfc6665_4_2_1_4_zero_expiry_unsubscribes_with_timeout() {
        let mut h = Harness::new();
        h.watch("a", "x");
        h.subscribe("a", "x", Some(Duration::ZERO));
        assert_eq!(
            h.drain(),
            vec![
                terminated("a", "x", TerminationReason::Timeout),
                upstream_unsubscribe("x"),
            ]
        );
    }

    #[test]
    fn rfc6665_4_2_1_2_refresh_renotifies_without_asking_authorization_again() {
        let mut h = Harness::new();
        h.subscribe("a", "x", Some(60 * SEC));
        assert_eq!(
            h.drain(),
            vec![
                Output::AuthorizationRequest {
                    presentity: "x",
                    watcher: "a"
                },
                notify("a", "x", SubscriptionState::Pending, None),
            ]
        );
        h.subscribe("a", "x", Some(60 * SEC));
        assert_eq!(
            h.drain(),
            vec![notify("a", "x", SubscriptionState::Pending, None)]
        );
        h.hub.handle_approve("x", "a").unwrap();
        h.publish("x", doc("x", "on"));
        h.drain();
        h.subscribe("a", "x", Some(60 * SEC));
        assert_eq!(h.drain(), vec![active("a", "x", Some(doc("x", "on")))]);
    }

    #[test]
    fn rfc6665_4_2_2_new_subscription_is_pending_until_approved() {
        let mut h = Harness::new();
        h.subscribe("a", "x", None);
        assert_eq!(
            h.drain(),
            vec![
                Output::AuthorizationRequest {
                    presentity: "x",
                    watcher: "a"
                },
                notify("a", "x", SubscriptionState::Pending, None),
            ]
        );
        assert_eq!(
            h.hub.subscription_state(&"a", &"x"),
            Some(SubscriptionState::Pending)
        );
        h.hub.handle_approve("x", "a").unwrap();
        assert_eq!(
            h.drain(),
            vec![active("a", "x", None), upstream_subscribe("x")]
        );
        h.hub.handle_approve("x", "a").unwrap();
        assert!(h.drain().is_empty(), "a second approval changes nothing");
    }

    #[test]
    fn rfc6665_4_1_3_deny_terminates_with_rejected() {
        let mut h = Harness::new();
        h.subscribe("a", "x", Some(60 * SEC));
        h.drain();
        h.hub.handle_deny("x", "a");
        assert_eq!(
            h.drain(),
            vec![terminated("a", "x", TerminationReason::Rejected)]
        );
        assert_eq!(h.hub.subscription_state(&"a", &"x"), None);
        assert_eq!(h.hub.poll_timeout(), None);

        h.watch("b", "x");
        h.hub.handle_deny("x", "b");
        assert_eq!(
            h.drain(),
            vec![
                terminated("b", "x", TerminationReason::Rejected),
                upstream_unsubscribe("x"),
            ]
        );
        assert!(h.hub.is_empty());
    }

    #[test]
    fn pre_approval_activates_the_next_subscribe_once() {
        let mut h = Harness::new();
        h.hub.handle_approve("x", "a").unwrap();
        assert!(h.drain().is_empty());
        h.subscribe("a", "x", None);
        assert_eq!(
            h.drain(),
            vec![active("a", "x", None), upstream_subscribe("x")]
        );
        h.hub.handle_unsubscribe("a", "x");
        h.drain();
        h.subscribe("a", "x", None);
        assert_eq!(
            h.hub.subscription_state(&"a", &"x"),
            Some(SubscriptionState::Pending),
            "the pre-approval was used up"
        );

        h.hub.handle_approve("y", "b").unwrap();
        h.hub.handle_deny("y", "b");
        h.subscribe("b", "y", None);
        assert_eq!(
            h.hub.subscription_state(&"b", &"y"),
            Some(SubscriptionState::Pending),
            "deny withdraws a pre-approval"
        );
    }

    #[test]
    fn rfc7248_6_2_probe_answered_from_cache_only_for_authorized_watchers() {
        let mut h = Harness::new();
        h.watch("a", "x");
        h.publish("x", doc("x", "on"));
        h.drain();
        // a watches x: its probe (a re-login) is answered from the cache.
        h.hub.handle_probe(h.now, "a", "x").unwrap();
        assert_eq!(
            h.drain(),
            vec![Output::ProbeResult {
                watcher: "a",
                presentity: "x",
                presence: Some(doc("x", "on")),
            }]
        );
        // p was never authorized: no cached state for it; x's network is asked in p's
        // name, and decides.
        h.hub.handle_probe(h.now, "p", "x").unwrap();
        assert_eq!(h.drain(), vec![Output::ProbeUpstream { presentity: "x" }]);
        assert_eq!(h.hub.pending_probes(), 1);
        // x's next state, sent for a, is not p's answer.
        h.advance(SEC);
        h.publish("x", doc("x", "busy"));
        assert!(
            !h.drain()
                .iter()
                .any(|o| matches!(o, Output::ProbeResult { .. })),
            "p is not answered with a's state"
        );
        assert_eq!(h.hub.pending_probes(), 1);
        // The state x's network sends to p is.
        h.hub.handle_publish_to(h.now, "x", doc("x", "busy"), "p");
        assert_eq!(
            h.drain(),
            vec![Output::ProbeResult {
                watcher: "p",
                presentity: "x",
                presence: Some(doc("x", "busy")),
            }]
        );
        assert_eq!(h.hub.pending_probes(), 0);
    }

    #[test]
    fn rfc7248_6_2_unauthorized_probes_go_upstream_each_in_its_own_name() {
        let mut h = Harness::new();
        h.hub.handle_probe(h.now, "p", "x").unwrap();
        h.hub.handle_probe(h.now, "q", "x").unwrap();
        h.hub.handle_probe(h.now, "q", "x").unwrap();
        assert_eq!(
            h.drain(),
            vec![
                Output::ProbeUpstream { presentity: "x" },
                Output::ProbeUpstream { presentity: "x" }
            ],
            "one per prober, not per probe"
        );
        assert_eq!(h.hub.pending_probes(), 2);
        h.advance(SEC);
        h.hub.handle_publish_to(h.now, "x", doc("x", "on"), "p");
        assert_eq!(
            h.drain(),
            vec![Output::ProbeResult {
                watcher: "p",
                presentity: "x",
                presence: Some(doc("x", "on")),
            }]
        );
        assert_eq!(h.hub.cached(&"x"), None, "a probe answer is not kept");
        // q's network never answered q: nothing, at the timeout.
        let out = h.advance_to(60 * SEC);
        assert_eq!(
            out,
            vec![(
                10 * SEC,
                Output::ProbeResult {
                    watcher: "q",
                    presentity: "x",
                    presence: None,
                }
            )]
        );
        assert_eq!(h.hub.pending_probes(), 0);
    }

    #[test]
    fn rfc7248_6_2_probe_without_answer_times_out_empty() {
        let mut h = Harness::new();
        h.hub.handle_probe(h.now, "p", "x").unwrap();
        h.drain();
        assert_eq!(h.hub.poll_timeout(), Some(10 * SEC));
        let out = h.advance_to(60 * SEC);
        assert_eq!(
            out,
            vec![(
                10 * SEC,
                Output::ProbeResult {
                    watcher: "p",
                    presentity: "x",
                    presence: None,
                }
            )]
        );
        h.publish("x", doc("x", "late"));
        assert!(h.drain().is_empty());
    }

    #[test]
    fn rfc7248_6_2_probe_waits_for_an_existing_upstream_subscription() {
        let mut h = Harness::new();
        h.watch("a", "x");
        // p is pre-approved by x: authorized, so the subscription's next state answers.
        h.hub.handle_approve("x", "p").unwrap();
        h.hub.handle_probe(h.now, "p", "x").unwrap();
        assert!(
            h.drain().is_empty(),
            "no ProbeUpstream beside a subscription"
        );
        h.publish("x", doc("x", "on"));
        assert_eq!(
            h.drain(),
            vec![
                Output::ProbeResult {
                    watcher: "p",
                    presentity: "x",
                    presence: Some(doc("x", "on")),
                },
                active("a", "x", Some(doc("x", "on"))),
            ]
        );
    }

    #[test]
    fn rfc7248_6_2_subscribe_with_zero_expiry_is_a_probe() {
        let mut h = Harness::new();
        h.subscribe("p", "x", Some(Duration::ZERO));
        assert_eq!(h.drain(), vec![Output::ProbeUpstream { presentity: "x" }]);
        assert_eq!(h.hub.subscription_state(&"p", &"x"), None);
        assert_eq!(h.hub.pending_probes(), 1);
    }

    #[test]
    fn rfc6665_4_1_3_transient_upstream_termination_resubscribes() {
        for reason in [
            TerminationReason::Deactivated,
            TerminationReason::Probation,
            TerminationReason::Timeout,
        ] {
            let mut h = Harness::new();
            h.watch("a", "x");
            h.watch("b", "x");
            h.publish("x", doc("x", "on"));
            h.drain();
            h.hub.handle_upstream_terminated("x", reason);
            assert_eq!(h.drain(), vec![upstream_subscribe("x")], "{reason}");
            assert_eq!(h.hub.len(), 2);
            assert_eq!(h.hub.cached(&"x"), Some(&doc("x", "on")));
        }
        let mut h = Harness::new();
        h.subscribe("a", "x", None);
        h.drain();
        h.hub
            .handle_upstream_terminated("x", TerminationReason::Deactivated);
        assert!(h.drain().is_empty(), "nothing to re-subscribe for");
    }

    #[test]
    fn rfc6665_4_1_3_permanent_upstream_termination_ends_every_watcher() {
        for reason in [
            TerminationReason::Rejected,
            TerminationReason::Noresource,
            TerminationReason::Invariant,
            TerminationReason::Giveup,
        ] {
            let mut h = Harness::new();
            h.watch("a", "x");
            h.subscribe("b", "x", Some(60 * SEC));
            h.watch("c", "y");
            h.publish("x", doc("x", "on"));
            h.drain();
            h.hub.handle_upstream_terminated("x", reason);
            assert_eq!(
                h.drain(),
                vec![terminated("a", "x", reason), terminated("b", "x", reason)],
                "{reason}"
            );
            assert_eq!(h.hub.cached(&"x"), None);
            assert!(!h.hub.is_upstream_subscribed(&"x"));
            assert_eq!(h.hub.len(), 1, "other presentities are untouched");
            assert_eq!(h.hub.poll_timeout(), None, "timers of x are gone");
        }
        let mut h = Harness::new();
        h.hub.handle_probe(h.now, "p", "x").unwrap();
        h.drain();
        h.hub
            .handle_upstream_terminated("x", TerminationReason::Noresource);
        assert_eq!(
            h.drain(),
            vec![Output::ProbeResult {
                watcher: "p",
                presentity: "x",
                presence: None,
            }]
        );
    }

    #[test]
    fn limits_refuse_new_subscriptions_but_not_refreshes() {
        let mut h = Harness::with(HubConfig {
            max_subscriptions: 2,
            ..HubConfig::default()
        });
        h.subscribe("a", "x", Some(SEC));
        h.subscribe("b", "x", None);
        h.drain();
        assert_eq!(
            h.hub.handle_subscribe(h.now, "c", "x", None),
            Err(HubError::TooManySubscriptions { limit: 2 })
        );
        assert!(h.drain().is_empty(), "a refused subscribe outputs nothing");
        assert_eq!(h.hub.len(), 2);
        h.subscribe("a", "x", Some(60 * SEC));
        assert_eq!(h.hub.len(), 2);
        h.hub.handle_unsubscribe("b", "x");
        h.subscribe("c", "x", None);
        assert_eq!(h.hub.len(), 2);
    }

    #[test]
    fn limits_refuse_probes_and_pre_approvals() {
        let mut h = Harness::with(HubConfig {
            max_pending_probes: 1,
            max_pre_approvals: 1,
            ..HubConfig::default()
        });
        h.hub.handle_probe(h.now, "p", "x").unwrap();
        h.hub.handle_probe(h.now, "p", "x").unwrap();
        assert_eq!(
            h.hub.handle_probe(h.now, "q", "x"),
            Err(HubError::TooManyProbes { limit: 1 })
        );
        h.hub.handle_approve("x", "a").unwrap();
        assert_eq!(
            h.hub.handle_approve("x", "b"),
            Err(HubError::TooManyPreApprovals { limit: 1 })
        );
    }

    #[test]
    fn poll_timeout_is_the_earliest_deadline() {
        let mut h = Harness::new();
        assert_eq!(h.hub.poll_timeout(), None);
        h.subscribe("a", "x", Some(30 * SEC));
        h.hub.handle_approve("x", "a").unwrap();
        assert_eq!(h.hub.poll_timeout(), Some(30 * SEC));
        h.hub.handle_probe(h.now, "p", "y").unwrap();
        assert_eq!(h.hub.poll_timeout(), Some(10 * SEC));
        h.publish("x", doc("x", "on"));
        assert_eq!(h.hub.poll_timeout(), Some(5 * SEC));
        h.hub.handle_timeout(SEC);
        assert_eq!(
            h.hub.poll_timeout(),
            Some(5 * SEC),
            "early call is harmless"
        );
    }

    // ---- property test -------------------------------------------------------------

    const IDS: [Id; 4] = ["a", "b", "c", "d"];

    #[derive(Debug, Clone)]
    enum Op {
        Subscribe(usize, usize, Option<u64>),
        Unsubscribe(usize, usize),
        Approve(usize, usize),
        Deny(usize, usize),
        Publish(usize, u8),
        Probe(usize, usize),
        UpstreamTerminated(usize, TerminationReason),
        Advance(u64),
        Settle,
    }

    fn reason() -> impl Strategy<Value = TerminationReason> {
        prop_oneof![
            Just(TerminationReason::Deactivated),
            Just(TerminationReason::Probation),
            Just(TerminationReason::Rejected),
            Just(TerminationReason::Timeout),
            Just(TerminationReason::Giveup),
            Just(TerminationReason::Noresource),
            Just(TerminationReason::Invariant),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let id = || 0..IDS.len();
        prop_oneof![
            4 => (id(), id(), prop::option::of(0u64..20)).prop_map(|(w, p, e)| Op::Subscribe(w, p, e)),
            1 => (id(), id()).prop_map(|(w, p)| Op::Unsubscribe(w, p)),
            3 => (id(), id()).prop_map(|(p, w)| Op::Approve(p, w)),
            1 => (id(), id()).prop_map(|(p, w)| Op::Deny(p, w)),
            5 => (id(), 0u8..4).prop_map(|(p, n)| Op::Publish(p, n)),
            1 => (id(), id()).prop_map(|(w, p)| Op::Probe(w, p)),
            1 => (id(), reason()).prop_map(|(p, r)| Op::UpstreamTerminated(p, r)),
            3 => (0u64..4000).prop_map(Op::Advance),
            1 => Just(Op::Settle),
        ]
    }

    /// What the outside world has seen of the hub.
    #[derive(Default)]
    struct World {
        upstream: BTreeSet<Id>,
        /// The presence each active watcher last received.
        received: BTreeMap<(Id, Id), Option<Presence>>,
    }

    type Pairs = BTreeMap<(Id, Id), SubscriptionState>;

    fn pairs(hub: &PresenceHub<Id>) -> Pairs {
        let mut out = BTreeMap::new();
        for p in IDS {
            for (w, state) in hub.watchers(&p) {
                out.insert((*w, p), state);
            }
        }
        out
    }

    /// Drains the hub after one input and checks every output against the states before
    /// and after it.
    fn observe(
        hub: &mut PresenceHub<Id>,
        world: &mut World,
        before: &Pairs,
    ) -> Result<(), TestCaseError> {
        let after = pairs(hub);
        while let Some(output) = hub.poll_output() {
            match output {
                Output::UpstreamSubscribe { presentity } => {
                    prop_assert!(
                        world.upstream.insert(presentity),
                        "double upstream subscribe"
                    );
                }
                Output::UpstreamUnsubscribe { presentity } => {
                    prop_assert!(world.upstream.remove(&presentity), "unsubscribe of nothing");
                }
                Output::Notify {
                    watcher,
                    presentity,
                    state,
                    presence,
                } => {
                    let key = (watcher, presentity);
                    match state {
                        SubscriptionState::Terminated(_) => {
                            prop_assert!(before.contains_key(&key), "terminated a stranger");
                            prop_assert!(!after.contains_key(&key));
                            prop_assert_eq!(presence, None);
                            world.received.remove(&key);
                        }
                        SubscriptionState::Pending => {
                            prop_assert_eq!(after.get(&key), Some(&SubscriptionState::Pending));
                            prop_assert_eq!(presence, None);
                        }
                        SubscriptionState::Active => {
                            prop_assert_eq!(after.get(&key), Some(&SubscriptionState::Active));
                            // The approval (no state), or the current state.
                            if presence.is_some() {
                                prop_assert_eq!(presence.as_ref(), hub.cached(&presentity));
                            }
                            world.received.insert(key, presence);
                        }
                    }
                }
                Output::AuthorizationRequest {
                    presentity,
                    watcher,
                } => {
                    prop_assert_eq!(
                        after.get(&(watcher, presentity)),
                        Some(&SubscriptionState::Pending)
                    );
                }
                Output::ProbeUpstream { .. } | Output::ProbeResult { .. } => {}
            }
        }
        for p in IDS {
            let has_active = after
                .iter()
                .any(|((_, q), s)| *q == p && *s == SubscriptionState::Active);
            prop_assert_eq!(world.upstream.contains(&p), has_active, "upstream of {}", p);
            prop_assert_eq!(hub.is_upstream_subscribed(&p), has_active);
            if !has_active {
                prop_assert_eq!(hub.cached(&p), None, "state kept without subscription");
            }
        }
        prop_assert_eq!(hub.len(), after.len());
        Ok(())
    }

    fn run_timers_until(
        hub: &mut PresenceHub<Id>,
        world: &mut World,
        now: &mut Duration,
        target: Option<Duration>,
    ) -> Result<(), TestCaseError> {
        while let Some(at) = hub.poll_timeout() {
            if target.is_some_and(|t| at > t) {
                break;
            }
            *now = (*now).max(at);
            let before = pairs(hub);
            hub.handle_timeout(*now);
            observe(hub, world, &before)?;
        }
        if let Some(t) = target {
            *now = (*now).max(t);
        }
        Ok(())
    }

    fn everyone_has_the_cached_state(
        hub: &PresenceHub<Id>,
        world: &World,
    ) -> Result<(), TestCaseError> {
        for ((w, p), state) in pairs(hub) {
            if state == SubscriptionState::Active {
                let received = world.received.get(&(w, p));
                prop_assert!(received.is_some(), "{} was never told about {}", w, p);
                prop_assert_eq!(received.and_then(Option::as_ref), hub.cached(&p));
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn invariants_hold_for_random_operations(ops in prop::collection::vec(op(), 1..80)) {
            let mut hub = PresenceHub::<Id>::default();
            let interval = hub.config().coalesce_interval;
            let mut world = World::default();
            let mut now = Duration::ZERO;
            for op in ops {
                let before = pairs(&hub);
                match op {
                    Op::Subscribe(w, p, e) => {
                        let _ = hub.handle_subscribe(now, IDS[w], IDS[p], e.map(Duration::from_secs));
                    }
                    Op::Unsubscribe(w, p) => hub.handle_unsubscribe(IDS[w], IDS[p]),
                    Op::Approve(p, w) => {
                        let _ = hub.handle_approve(IDS[p], IDS[w]);
                    }
                    Op::Deny(p, w) => hub.handle_deny(IDS[p], IDS[w]),
                    Op::Publish(p, n) => hub.handle_publish(now, IDS[p], doc(IDS[p], &n.to_string())),
                    Op::Probe(w, p) => {
                        let _ = hub.handle_probe(now, IDS[w], IDS[p]);
                    }
                    Op::UpstreamTerminated(p, r) => {
                        // The network ended it, whatever the hub does next.
                        world.upstream.remove(IDS[p]);
                        hub.handle_upstream_terminated(IDS[p], r);
                    }
                    Op::Advance(ms) => {
                        let target = now + Duration::from_millis(ms);
                        run_timers_until(&mut hub, &mut world, &mut now, Some(target))?;
                        continue;
                    }
                    Op::Settle => {
                        let target = now + interval;
                        run_timers_until(&mut hub, &mut world, &mut now, Some(target))?;
                        everyone_has_the_cached_state(&hub, &world)?;
                        continue;
                    }
                }
                observe(&mut hub, &mut world, &before)?;
            }
            run_timers_until(&mut hub, &mut world, &mut now, None)?;
            everyone_has_the_cached_state(&hub, &world)?;
            prop_assert_eq!(hub.pending_probes(), 0);
        }
    }
}
