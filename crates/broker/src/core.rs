//! The delivery core: pure routing and queueing state, driven by the runtime.
//!
//! No I/O, no clock: every call that depends on time takes `now` (a monotonic
//! [`Duration`] since an arbitrary start), and timers are exposed through
//! [`Core::poll_timeout`] / [`Core::handle_timeout`]. Envelopes leave through
//! [`Core::poll_dispatch`] and their outcomes come back through [`Core::complete`].
//!
//! Guarantees:
//! - **Per-destination FIFO.** Envelopes to the same destination (adapter + address)
//!   are dispatched in acceptance order, at most
//!   [`DeliveryPolicy::max_in_flight_per_destination`] at a time; other destinations
//!   proceed independently.
//! - **Bounded memory.** A destination holds at most `max_queued_per_destination`
//!   envelopes and the core `max_queued_total`; beyond that a submission is refused
//!   with `resource-constraint` and a retry hint, so the adapter can push back on its
//!   peer. Failure and receipt notifications are never refused (each answers an
//!   envelope that was already counted).
//! - **Dedup.** A dedup key seen from the same adapter within `dedup_window` returns the
//!   first id and queues nothing.
//! - **Loop guard.** RFC 3860 §3.4.2: hops are decremented on relay; an event that
//!   arrives with none left is refused (`not-acceptable`, which RFC 7247 §7.2 maps from
//!   SIP 483 Too Many Hops).
//! - **Failures go home.** A message that fails for good produces a
//!   [`NotificationStatus::Failed`] notification to its origin, addressed from the
//!   recipient to the sender as the origin network wrote them, carrying the origin's
//!   protocol ids. A delivered message whose sender asked for a delivery receipt
//!   produces a [`NotificationStatus::Delivered`] notification. Notifications are never
//!   answered with notifications.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use cpim::event::{
    Event, Notification, NotificationStatus, PresenceUpdate, Subscription, SubscriptionOp,
};
use cpim::{Address, Condition};

use crate::adapter::DeliveryPolicy;
use crate::envelope::{
    Accepted, AdapterName, DeliveryOutcome, Envelope, Inbound, MessageId, Rejected,
};
use crate::identity::Identity;
use crate::map::{AddressMap, Route};
use crate::presence::{HubConfig, Output, PresenceHub, SubscriptionState, TerminationReason};

/// The address map as the core uses it: implemented by [`AddressMap`], and by simpler
/// maps in tests.
pub trait Router: Send + Sync {
    /// The owner and identity of `address` as written on `on_adapter`'s network.
    fn resolve(&self, on_adapter: &str, address: &Address) -> Result<Route, String>;

    /// How `identity` is written on `on_adapter`'s network.
    fn present(
        &self,
        identity: &Identity,
        instance: Option<&str>,
        on_adapter: &str,
    ) -> Result<Address, String>;

    /// The adapter whose network `identity` lives on, if any adapter owns its domain.
    fn owner(&self, identity: &Identity) -> Option<String>;
}

impl Router for AddressMap {
    fn resolve(&self, on_adapter: &str, address: &Address) -> Result<Route, String> {
        AddressMap::resolve(self, on_adapter, address).map_err(|e| e.to_string())
    }

    fn present(
        &self,
        identity: &Identity,
        instance: Option<&str>,
        on_adapter: &str,
    ) -> Result<Address, String> {
        AddressMap::present(self, identity, instance, on_adapter).map_err(|e| e.to_string())
    }

    fn owner(&self, identity: &Identity) -> Option<String> {
        AddressMap::owner(self, identity).map(str::to_owned)
    }
}

/// Limits and defaults of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Hops a new event gets (and the most an inbound event may claim).
    pub max_hops: u8,
    /// How long a dedup key is remembered.
    pub dedup_window: Duration,
    /// How many dedup keys are remembered at most (oldest forgotten first).
    pub dedup_capacity: usize,
    /// Envelopes waiting for one destination, at most.
    pub max_queued_per_destination: usize,
    /// Envelopes waiting in the whole core, at most.
    pub max_queued_total: usize,
    /// The retry hint given with a back-pressure refusal.
    pub retry_after_hint: Duration,
    /// `RetryLater` outcomes for one envelope before it fails with
    /// `remote-server-timeout`.
    pub max_delivery_attempts: u32,
    /// The first id; the runtime seeds it from the wall clock so ids stay unique across
    /// restarts.
    pub id_seed: u64,
    /// The presence hub's settings (coalescing interval, limits).
    pub hub: HubConfig,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            max_hops: 70,
            dedup_window: Duration::from_secs(600),
            dedup_capacity: 100_000,
            max_queued_per_destination: 1_000,
            max_queued_total: 100_000,
            retry_after_hint: Duration::from_secs(5),
            max_delivery_attempts: 10,
            id_seed: 1,
            hub: HubConfig::default(),
        }
    }
}

/// Something the runtime should count or log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// An adapter's submission was accepted.
    Received {
        /// The origin adapter.
        adapter: AdapterName,
    },
    /// An adapter's submission was refused.
    Rejected {
        /// The origin adapter.
        adapter: AdapterName,
        /// Why.
        condition: Condition,
    },
    /// A delivery succeeded (delivered or handed on).
    Delivered {
        /// The destination adapter.
        adapter: AdapterName,
        /// From acceptance to outcome.
        latency: Duration,
    },
    /// A delivery failed for good.
    Failed {
        /// The destination adapter.
        adapter: AdapterName,
        /// Why.
        condition: Condition,
        /// From acceptance to outcome.
        latency: Duration,
        /// The failed envelope's id.
        id: MessageId,
    },
}

type DestKey = (AdapterName, String);

#[derive(Debug, Default)]
struct Destination {
    waiting: VecDeque<Waiting>,
    in_flight: usize,
    blocked_until: Option<Duration>,
    scheduled: bool,
}

#[derive(Debug)]
struct AdapterSlot {
    name: AdapterName,
    policy: DeliveryPolicy,
    queued: usize,
}

/// An envelope waiting for its destination. Ids grow with acceptance, so the queue is
/// kept in id order, also when a retried envelope goes back in.
#[derive(Debug)]
struct Waiting {
    envelope: Envelope,
    accepted_at: Duration,
    attempts: u32,
}

#[derive(Debug)]
struct InFlight {
    key: DestKey,
    envelope: Envelope,
    accepted_at: Duration,
    attempts: u32,
}

/// The longest retry delay honoured; a peer's larger `Retry-After` is capped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The delivery core. See the module documentation.
pub struct Core {
    config: CoreConfig,
    router: Arc<dyn Router>,
    adapters: HashMap<AdapterName, AdapterSlot>,
    destinations: HashMap<DestKey, Destination>,
    ready: VecDeque<DestKey>,
    in_flight: HashMap<MessageId, InFlight>,
    timers: BinaryHeap<Reverse<(Duration, DestKey)>>,
    dedup: HashMap<(AdapterName, String), (MessageId, Duration)>,
    dedup_order: VecDeque<(Duration, (AdapterName, String))>,
    next_id: u64,
    queued_total: usize,
    reports: VecDeque<Report>,
    hub: PresenceHub<Identity>,
    /// The watcher named as subscriber of each shared upstream subscription.
    upstream_subscriber: HashMap<Identity, Identity>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("adapters", &self.adapters.len())
            .field("destinations", &self.destinations.len())
            .field("in_flight", &self.in_flight.len())
            .field("queued_total", &self.queued_total)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// A core routing with `router`.
    pub fn new(config: CoreConfig, router: Arc<dyn Router>) -> Self {
        let next_id = config.id_seed;
        let hub = PresenceHub::new(config.hub.clone());
        Core {
            hub,
            upstream_subscriber: HashMap::new(),
            config,
            router,
            adapters: HashMap::new(),
            destinations: HashMap::new(),
            ready: VecDeque::new(),
            in_flight: HashMap::new(),
            timers: BinaryHeap::new(),
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            next_id,
            queued_total: 0,
            reports: VecDeque::new(),
        }
    }

    /// Makes `name` a possible destination with `policy`.
    pub fn register_adapter(&mut self, name: &str, policy: DeliveryPolicy) {
        let name: AdapterName = Arc::from(name);
        self.adapters.insert(
            name.clone(),
            AdapterSlot {
                name,
                policy,
                queued: 0,
            },
        );
    }

    /// Replaces the address map. Envelopes already accepted keep their addresses.
    pub fn set_router(&mut self, router: Arc<dyn Router>) {
        self.router = router;
    }

    /// Envelopes queued or in flight for `adapter`.
    pub fn queue_depth(&self, adapter: &str) -> usize {
        self.adapters.get(adapter).map_or(0, |a| a.queued)
    }

    /// Envelopes queued or in flight in total.
    pub fn queued_total(&self) -> usize {
        self.queued_total
    }

    /// Deliveries in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Takes an event submitted by `origin`.
    pub fn accept(
        &mut self,
        now: Duration,
        origin: &str,
        inbound: Inbound,
    ) -> Result<Accepted, Rejected> {
        let Some(origin) = self.adapters.get(origin).map(|a| a.name.clone()) else {
            return Err(Rejected::new(
                Condition::InternalServerError,
                format!("adapter `{origin}` is not registered with the broker"),
            ));
        };
        let result = self.admit(now, &origin, inbound);
        self.reports.push_back(match &result {
            Ok(_) => Report::Received {
                adapter: origin.clone(),
            },
            Err(r) => Report::Rejected {
                adapter: origin.clone(),
                condition: r.condition,
            },
        });
        result
    }

    fn admit(
        &mut self,
        now: Duration,
        origin: &AdapterName,
        inbound: Inbound,
    ) -> Result<Accepted, Rejected> {
        let hops = inbound
            .hops
            .map_or(self.config.max_hops, |h| h.min(self.config.max_hops));
        if hops == 0 {
            return Err(Rejected::new(
                Condition::NotAcceptable,
                "too many hops: the message is looping between gateways (RFC 3860 §3.4.2)",
            ));
        }
        self.expire_dedup(now);
        let dedup = inbound.dedup_key.clone().map(|k| (origin.clone(), k));
        if let Some(key) = &dedup {
            if let Some((id, _)) = self.dedup.get(key) {
                return Ok(Accepted {
                    id: *id,
                    duplicate: true,
                });
            }
        }
        let to = self
            .router
            .resolve(origin, &inbound.to)
            .map_err(|why| Rejected::new(Condition::ItemNotFound, why))?;
        let Some(destination) = self.adapters.get(to.owner.as_str()) else {
            return Err(Rejected::new(
                Condition::ServiceUnavailable,
                format!(
                    "{} belongs to adapter `{}`, which is not running",
                    inbound.to, to.owner
                ),
            ));
        };
        if let (Event::Message(m), Some(limit)) =
            (&inbound.event, destination.policy.max_message_bytes)
        {
            let size = m.cpim.as_ref().map_or(m.body.len(), Vec::len);
            if size > limit {
                return Err(Rejected::new(
                    Condition::PolicyViolation,
                    format!(
                        "a message of {size} bytes is larger than `{}` can carry ({limit} bytes)",
                        destination.name
                    ),
                ));
            }
        }
        let destination = destination.name.clone();
        let sender = match self.router.resolve(origin, &inbound.from) {
            Ok(r) => (r.identity, r.instance),
            Err(why) => match inbound.from.identity() {
                Ok(Some((local, domain))) => (
                    Identity::new(&local, &domain),
                    crate::identity::instance_of(&inbound.from),
                ),
                _ => return Err(Rejected::new(Condition::JidMalformed, why)),
            },
        };
        let present = |id: &Identity, inst: Option<&str>, what: &str| {
            self.router.present(id, inst, &destination).map_err(|why| {
                Rejected::new(
                    Condition::JidMalformed,
                    format!("the {what} {id} cannot be written on `{destination}`: {why}"),
                )
            })
        };
        let to_address = present(&to.identity, to.instance.as_deref(), "recipient")?;
        let from_address = present(&sender.0, sender.1.as_deref(), "sender")?;

        if matches!(inbound.event, Event::Subscription(_) | Event::Presence(_)) {
            if self.queued_total >= self.config.max_queued_total {
                return Err(Rejected {
                    condition: Condition::ResourceConstraint,
                    text: "the gateway is busy; try again later".to_owned(),
                    retry_after: Some(self.config.retry_after_hint),
                });
            }
            let id = self.allocate_id();
            self.presence_input(now, &sender.0, &to.identity, inbound.event)?;
            if let Some(key) = dedup {
                self.remember(now, key, id);
            }
            return Ok(Accepted {
                id,
                duplicate: false,
            });
        }

        let key: DestKey = (destination.clone(), to_address.to_string());
        let waiting = self.destinations.get(&key).map_or(0, |d| d.waiting.len());
        if waiting >= self.config.max_queued_per_destination
            || self.queued_total >= self.config.max_queued_total
        {
            return Err(Rejected {
                condition: Condition::ResourceConstraint,
                text: format!("too many messages waiting for {to_address}; try again later"),
                retry_after: Some(self.config.retry_after_hint),
            });
        }
        let id = self.allocate_id();
        let envelope = Envelope {
            id,
            event: inbound.event,
            from: from_address,
            to: to_address,
            sender: sender.0,
            recipient: to.identity,
            origin: origin.clone(),
            destination,
            origin_from: inbound.from,
            origin_to: inbound.to,
            protocol_ids: inbound.protocol_ids,
            hops: hops - 1,
            received_at_ms: inbound.received_at_ms,
        };
        if let Some(key) = dedup {
            self.remember(now, key, id);
        }
        self.enqueue(key, envelope, now);
        Ok(Accepted {
            id,
            duplicate: false,
        })
    }

    fn remember(&mut self, now: Duration, key: (AdapterName, String), id: MessageId) {
        self.dedup.insert(key.clone(), (id, now));
        self.dedup_order.push_back((now, key));
        while self.dedup.len() > self.config.dedup_capacity {
            match self.dedup_order.pop_front() {
                Some((_, old)) => {
                    self.dedup.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Feeds a subscription operation or a presence state to the presence hub and
    /// queues what the hub says.
    fn presence_input(
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
                self.hub.handle_publish(now, s, presence)
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
    fn drain_hub(&mut self, now: Duration, prober: Option<(&Identity, &Identity)>) {
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

    fn first_watcher(&self, presentity: &Identity) -> Option<Identity> {
        self.hub
            .watchers(presentity)
            .find(|(_, state)| *state == SubscriptionState::Active)
            .map(|(w, _)| w.clone())
    }

    /// Queues an event the broker itself generated, from `from` to `to`, on the
    /// network `to` lives on.
    fn send_generated(&mut self, now: Duration, event: Event, from: &Identity, to: &Identity) {
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
        self.enqueue(key, envelope, now);
    }

    fn allocate_id(&mut self) -> MessageId {
        let id = MessageId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    fn enqueue(&mut self, key: DestKey, envelope: Envelope, now: Duration) {
        if let Some(slot) = self.adapters.get_mut(&key.0) {
            slot.queued += 1;
        }
        self.queued_total += 1;
        let dest = self.destinations.entry(key.clone()).or_default();
        dest.waiting.push_back(Waiting {
            envelope,
            accepted_at: now,
            attempts: 0,
        });
        self.schedule(&key);
    }

    /// Puts `key` on the ready list if it can dispatch now.
    fn schedule(&mut self, key: &DestKey) {
        let limit = self
            .adapters
            .get(&key.0)
            .map_or(1, |a| a.policy.max_in_flight_per_destination.max(1));
        if let Some(dest) = self.destinations.get_mut(key) {
            if !dest.scheduled
                && dest.blocked_until.is_none()
                && dest.in_flight < limit
                && !dest.waiting.is_empty()
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
            if dest.blocked_until.is_some() {
                continue;
            }
            let Some(Waiting {
                envelope,
                accepted_at,
                attempts,
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
        }) = self.in_flight.remove(&id)
        else {
            return;
        };
        let latency = now.saturating_sub(accepted_at);
        if let Some(dest) = self.destinations.get_mut(&key) {
            dest.in_flight = dest.in_flight.saturating_sub(1);
        }
        match outcome {
            DeliveryOutcome::RetryLater { after } => {
                let attempts = attempts + 1;
                if attempts < self.config.max_delivery_attempts {
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
                            },
                        );
                        let until = now.saturating_add(after.min(MAX_RETRY_AFTER));
                        // Another in-flight envelope's retry never shortens a block.
                        let until = dest.blocked_until.map_or(until, |b| b.max(until));
                        dest.blocked_until = Some(until);
                        self.timers.push(Reverse((until, key)));
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
                self.finish(&key, now, envelope, latency, Ok(true));
            }
            DeliveryOutcome::Accepted => {
                self.finish(&key, now, envelope, latency, Ok(false));
            }
            DeliveryOutcome::Failed { condition, text } => {
                self.finish(&key, now, envelope, latency, Err((condition, text)));
            }
        }
    }

    /// Ends an envelope's life: accounting, reports, notifications to the origin.
    fn finish(
        &mut self,
        key: &DestKey,
        now: Duration,
        envelope: Envelope,
        latency: Duration,
        result: Result<bool, (Condition, Option<String>)>,
    ) {
        if let Some(slot) = self.adapters.get_mut(&key.0) {
            slot.queued = slot.queued.saturating_sub(1);
        }
        self.queued_total = self.queued_total.saturating_sub(1);
        let is_message = matches!(envelope.event, Event::Message(_));
        let notify = match (&result, &envelope.event) {
            (Ok(true), Event::Message(m)) if m.receipts.delivered => {
                Some(NotificationStatus::Delivered)
            }
            (Err((condition, text)), _) if is_message => Some(NotificationStatus::Failed {
                condition: *condition,
                text: text.clone(),
            }),
            _ => None,
        };
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
        if let Some(status) = notify {
            self.notify_origin(now, &envelope, status);
        }
        self.schedule(key);
        self.drop_if_idle(key);
    }

    /// Queues a notification about `envelope` to its origin.
    fn notify_origin(&mut self, now: Duration, envelope: &Envelope, status: NotificationStatus) {
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
        self.enqueue(key, notification, now);
    }

    fn drop_if_idle(&mut self, key: &DestKey) {
        if self
            .destinations
            .get(key)
            .is_some_and(|d| d.waiting.is_empty() && d.in_flight == 0 && d.blocked_until.is_none())
        {
            self.destinations.remove(key);
        }
    }

    /// The earliest time at which [`Core::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        let dedup = self
            .dedup_order
            .front()
            .map(|(t, _)| *t + self.config.dedup_window);
        [timer, dedup, self.hub.poll_timeout()]
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
        self.expire_dedup(now);
        self.hub.handle_timeout(now);
        self.drain_hub(now, None);
    }

    /// The presence hub, for introspection.
    pub fn presence(&self) -> &PresenceHub<Identity> {
        &self.hub
    }

    fn expire_dedup(&mut self, now: Duration) {
        while let Some((t, _)) = self.dedup_order.front() {
            if *t + self.config.dedup_window > now {
                break;
            }
            if let Some((t, key)) = self.dedup_order.pop_front() {
                if self.dedup.get(&key).is_some_and(|(_, seen)| *seen == t) {
                    self.dedup.remove(&key);
                }
            }
        }
    }

    /// The next report for metrics and logs.
    pub fn poll_report(&mut self) -> Option<Report> {
        self.reports.pop_front()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cpim::event::{Message, Receipts};
    use proptest::prelude::*;

    use crate::identity::AddressStyle;

    fn test_map() -> Arc<AddressMap> {
        Arc::new(crate::testing::plain_map(&[
            ("sip", AddressStyle::Sip, "sip.test"),
            ("xmpp", AddressStyle::Xmpp, "xmpp.test"),
        ]))
    }

    pub(crate) fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn core_with(config: CoreConfig) -> Core {
        let mut core = Core::new(config, test_map());
        core.register_adapter("sip", DeliveryPolicy::default());
        core.register_adapter("xmpp", DeliveryPolicy::default());
        core
    }

    fn core() -> Core {
        core_with(CoreConfig::default())
    }

    fn msg(text: &str, from: &str, to: &str) -> Inbound {
        Inbound::new(Event::Message(Message::text(text)), addr(from), addr(to))
    }

    fn body(e: &Envelope) -> String {
        match &e.event {
            Event::Message(m) => String::from_utf8_lossy(&m.body).into_owned(),
            other => format!("{other:?}"),
        }
    }

    const T0: Duration = Duration::ZERO;

    #[test]
    fn routes_and_rewrites_addresses_for_the_destination() {
        let mut c = core();
        let a = c
            .accept(
                T0,
                "sip",
                msg("hi", "sip:alice@sip.test", "sip:bob@xmpp.test"),
            )
            .unwrap();
        assert!(!a.duplicate);
        let e = c.poll_dispatch().unwrap();
        assert_eq!(e.id, a.id);
        assert_eq!(&*e.destination, "xmpp");
        assert_eq!(e.to.to_string(), "bob@xmpp.test");
        assert_eq!(e.from.to_string(), "alice@sip.test");
        assert_eq!(e.origin_from.to_string(), "sip:alice@sip.test");
        assert_eq!(e.hops, 69);
        assert_eq!(c.poll_dispatch(), None);
    }

    #[test]
    fn fifo_one_in_flight_per_destination_others_in_parallel() {
        let mut c = core();
        for i in 0..3 {
            c.accept(
                T0,
                "sip",
                msg(&format!("b{i}"), "sip:alice@sip.test", "sip:bob@xmpp.test"),
            )
            .unwrap();
            c.accept(
                T0,
                "sip",
                msg(
                    &format!("c{i}"),
                    "sip:alice@sip.test",
                    "sip:carol@xmpp.test",
                ),
            )
            .unwrap();
        }
        let first: Vec<String> = std::iter::from_fn(|| c.poll_dispatch())
            .map(|e| body(&e))
            .collect();
        assert_eq!(first, ["b0", "c0"], "one per destination in flight");
        let ids: Vec<MessageId> = c.in_flight.keys().copied().collect();
        for id in ids {
            c.complete(T0, id, DeliveryOutcome::Accepted);
        }
        let mut second: Vec<String> = std::iter::from_fn(|| c.poll_dispatch())
            .map(|e| body(&e))
            .collect();
        second.sort();
        assert_eq!(second, ["b1", "c1"]);
    }

    #[test]
    fn pipelined_adapters_may_have_several_in_flight() {
        let mut c = core();
        c.register_adapter(
            "xmpp",
            DeliveryPolicy {
                max_in_flight_per_destination: 3,
                ..DeliveryPolicy::default()
            },
        );
        for i in 0..5 {
            c.accept(
                T0,
                "sip",
                msg(&format!("m{i}"), "sip:alice@sip.test", "sip:bob@xmpp.test"),
            )
            .unwrap();
        }
        let out: Vec<String> = std::iter::from_fn(|| c.poll_dispatch())
            .map(|e| body(&e))
            .collect();
        assert_eq!(out, ["m0", "m1", "m2"]);
    }

    #[test]
    fn backpressure_per_destination_and_total() {
        let mut c = core_with(CoreConfig {
            max_queued_per_destination: 2,
            max_queued_total: 3,
            ..CoreConfig::default()
        });
        let to_bob = || msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test");
        c.accept(T0, "sip", to_bob()).unwrap();
        c.accept(T0, "sip", to_bob()).unwrap();
        let r = c.accept(T0, "sip", to_bob()).unwrap_err();
        assert_eq!(r.condition, Condition::ResourceConstraint);
        assert_eq!(r.retry_after, Some(Duration::from_secs(5)));
        // Dispatching frees a waiting slot for bob but not the total.
        let e = c.poll_dispatch().unwrap();
        c.accept(T0, "sip", to_bob()).unwrap();
        let r = c
            .accept(
                T0,
                "sip",
                msg("x", "sip:alice@sip.test", "sip:carol@xmpp.test"),
            )
            .unwrap_err();
        assert_eq!(r.condition, Condition::ResourceConstraint);
        c.complete(T0, e.id, DeliveryOutcome::Accepted);
        c.accept(
            T0,
            "sip",
            msg("x", "sip:alice@sip.test", "sip:carol@xmpp.test"),
        )
        .unwrap();
        assert_eq!(c.queue_depth("xmpp"), 3);
    }

    #[test]
    fn dedup_within_window_only() {
        let mut c = core_with(CoreConfig {
            dedup_window: Duration::from_secs(10),
            ..CoreConfig::default()
        });
        let with_key = || Inbound {
            dedup_key: Some("call-1".into()),
            ..msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test")
        };
        let first = c.accept(T0, "sip", with_key()).unwrap();
        let again = c.accept(Duration::from_secs(9), "sip", with_key()).unwrap();
        assert_eq!(
            again,
            Accepted {
                id: first.id,
                duplicate: true
            }
        );
        assert_eq!(c.queued_total(), 1);
        // The same key from another adapter is a different event.
        assert!(
            !c.accept(
                T0,
                "xmpp",
                Inbound {
                    dedup_key: Some("call-1".into()),
                    ..msg("x", "bob@xmpp.test", "sip:alice@sip.test")
                }
            )
            .unwrap()
            .duplicate
        );
        assert_eq!(c.poll_timeout(), Some(Duration::from_secs(10)));
        c.handle_timeout(Duration::from_secs(10));
        let later = c
            .accept(Duration::from_secs(11), "sip", with_key())
            .unwrap();
        assert!(!later.duplicate);
        assert_ne!(later.id, first.id);
    }

    #[test]
    fn dedup_capacity_forgets_oldest() {
        let mut c = core_with(CoreConfig {
            dedup_capacity: 2,
            ..CoreConfig::default()
        });
        for k in ["a", "b", "c"] {
            c.accept(
                T0,
                "sip",
                Inbound {
                    dedup_key: Some(k.into()),
                    ..msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test")
                },
            )
            .unwrap();
        }
        let a = c
            .accept(
                T0,
                "sip",
                Inbound {
                    dedup_key: Some("a".into()),
                    ..msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test")
                },
            )
            .unwrap();
        assert!(!a.duplicate);
        let c2 = c
            .accept(
                T0,
                "sip",
                Inbound {
                    dedup_key: Some("c".into()),
                    ..msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test")
                },
            )
            .unwrap();
        assert!(c2.duplicate);
    }

    #[test]
    fn rfc3860_3_4_2_hops_decrement_and_loop_refused() {
        let mut c = core();
        let r = c
            .accept(
                T0,
                "sip",
                Inbound {
                    hops: Some(0),
                    ..msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test")
                },
            )
            .unwrap_err();
        assert_eq!(r.condition, Condition::NotAcceptable);
        c.accept(
            T0,
            "sip",
            Inbound {
                hops: Some(1),
                ..msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test")
            },
        )
        .unwrap();
        assert_eq!(c.poll_dispatch().unwrap().hops, 0);
        // A peer cannot claim more hops than the gateway allows.
        c.accept(
            T0,
            "sip",
            Inbound {
                hops: Some(255),
                ..msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test")
            },
        )
        .unwrap();
        c.complete(T0, MessageId(2), DeliveryOutcome::Accepted);
        c.complete(T0, MessageId(1), DeliveryOutcome::Accepted);
        assert_eq!(c.poll_dispatch().unwrap().hops, 69);
    }

    #[test]
    fn unroutable_and_unknown_adapter_are_refused() {
        let mut c = core();
        let r = c
            .accept(
                T0,
                "sip",
                msg("x", "sip:alice@sip.test", "sip:bob@nowhere.test"),
            )
            .unwrap_err();
        assert_eq!(r.condition, Condition::ItemNotFound);
        assert!(r.text.contains("nowhere.test"));
        let r = c
            .accept(
                T0,
                "nope",
                msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test"),
            )
            .unwrap_err();
        assert_eq!(r.condition, Condition::InternalServerError);
        let mut only_sip = Core::new(CoreConfig::default(), test_map());
        only_sip.register_adapter("sip", DeliveryPolicy::default());
        let r = only_sip
            .accept(
                T0,
                "sip",
                msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test"),
            )
            .unwrap_err();
        assert_eq!(r.condition, Condition::ServiceUnavailable);
    }

    #[test]
    fn failure_goes_back_to_origin_in_its_own_addresses() {
        let mut c = core();
        let mut inbound = msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test");
        inbound.protocol_ids.push(crate::envelope::ProtocolId {
            kind: "sip.call-id".into(),
            value: "abc".into(),
        });
        let a = c.accept(T0, "sip", inbound).unwrap();
        let e = c.poll_dispatch().unwrap();
        c.complete(
            Duration::from_millis(30),
            e.id,
            DeliveryOutcome::Failed {
                condition: Condition::ItemNotFound,
                text: Some("no such user".into()),
            },
        );
        let n = c.poll_dispatch().unwrap();
        assert_eq!(&*n.destination, "sip");
        assert_eq!(n.to.to_string(), "sip:alice@sip.test");
        assert_eq!(n.from.to_string(), "sip:bob@xmpp.test");
        assert_eq!(n.protocol_ids[0].value, "abc");
        assert_eq!(
            n.event,
            Event::Notification(Notification {
                message_id: a.id.to_string(),
                status: NotificationStatus::Failed {
                    condition: Condition::ItemNotFound,
                    text: Some("no such user".into())
                },
            })
        );
        // A failed notification is not answered with another one.
        c.complete(
            T0,
            n.id,
            DeliveryOutcome::Failed {
                condition: Condition::RecipientUnavailable,
                text: None,
            },
        );
        assert_eq!(c.poll_dispatch(), None);
        assert_eq!(c.queued_total(), 0);
        let reports: Vec<Report> = std::iter::from_fn(|| c.poll_report()).collect();
        assert!(reports.contains(&Report::Failed {
            adapter: "xmpp".into(),
            condition: Condition::ItemNotFound,
            latency: Duration::from_millis(30),
            id: e.id
        }));
    }

    #[test]
    fn delivery_receipt_only_when_asked_and_delivered() {
        let mut c = core();
        let mut m = Message::text("x");
        m.receipts = Receipts {
            delivered: true,
            ..Receipts::default()
        };
        let a = c
            .accept(
                T0,
                "sip",
                Inbound::new(
                    Event::Message(m),
                    addr("sip:alice@sip.test"),
                    addr("sip:bob@xmpp.test"),
                ),
            )
            .unwrap();
        let e = c.poll_dispatch().unwrap();
        c.complete(T0, e.id, DeliveryOutcome::Delivered);
        let n = c.poll_dispatch().unwrap();
        assert_eq!(
            n.event,
            Event::Notification(Notification {
                message_id: a.id.to_string(),
                status: NotificationStatus::Delivered
            })
        );
        // Handed on without confirmation: no receipt is invented.
        let mut m = Message::text("y");
        m.receipts.delivered = true;
        c.accept(
            T0,
            "sip",
            Inbound::new(
                Event::Message(m),
                addr("sip:alice@sip.test"),
                addr("sip:bob@xmpp.test"),
            ),
        )
        .unwrap();
        c.complete(T0, n.id, DeliveryOutcome::Accepted);
        let e = c.poll_dispatch().unwrap();
        c.complete(T0, e.id, DeliveryOutcome::Accepted);
        assert_eq!(c.poll_dispatch(), None);
    }

    #[test]
    fn retry_later_blocks_the_destination_keeps_order_then_gives_up() {
        let mut c = core_with(CoreConfig {
            max_delivery_attempts: 3,
            ..CoreConfig::default()
        });
        c.accept(
            T0,
            "sip",
            msg("first", "sip:alice@sip.test", "sip:bob@xmpp.test"),
        )
        .unwrap();
        c.accept(
            T0,
            "sip",
            msg("second", "sip:alice@sip.test", "sip:bob@xmpp.test"),
        )
        .unwrap();
        let e = c.poll_dispatch().unwrap();
        c.complete(
            T0,
            e.id,
            DeliveryOutcome::RetryLater {
                after: Duration::from_secs(2),
            },
        );
        assert_eq!(c.poll_dispatch(), None, "blocked until the retry time");
        assert_eq!(c.poll_timeout(), Some(Duration::from_secs(2)));
        c.handle_timeout(Duration::from_secs(2));
        let e = c.poll_dispatch().unwrap();
        assert_eq!(body(&e), "first");
        c.complete(
            Duration::from_secs(2),
            e.id,
            DeliveryOutcome::RetryLater {
                after: Duration::from_secs(2),
            },
        );
        c.handle_timeout(Duration::from_secs(4));
        let e = c.poll_dispatch().unwrap();
        assert_eq!(body(&e), "first");
        c.complete(
            Duration::from_secs(4),
            e.id,
            DeliveryOutcome::RetryLater {
                after: Duration::from_secs(2),
            },
        );
        // Third RetryLater: given up, failure goes home, the next message proceeds.
        let mut next: Vec<Envelope> = std::iter::from_fn(|| c.poll_dispatch()).collect();
        assert_eq!(next.len(), 2);
        next.sort_by_key(|e| e.destination.to_string());
        assert_eq!(body(&next[1]), "second");
        assert!(matches!(
            &next[0].event,
            Event::Notification(Notification {
                status: NotificationStatus::Failed {
                    condition: Condition::RemoteServerTimeout,
                    ..
                },
                ..
            })
        ));
    }

    #[test]
    fn router_swap_keeps_accepted_envelopes() {
        struct Nothing;
        impl Router for Nothing {
            fn resolve(&self, _: &str, _: &Address) -> Result<Route, String> {
                Err("empty map".into())
            }
            fn present(&self, _: &Identity, _: Option<&str>, _: &str) -> Result<Address, String> {
                Err("empty map".into())
            }
            fn owner(&self, _: &Identity) -> Option<String> {
                None
            }
        }
        let mut c = core();
        c.accept(
            T0,
            "sip",
            msg("kept", "sip:alice@sip.test", "sip:bob@xmpp.test"),
        )
        .unwrap();
        c.set_router(Arc::new(Nothing));
        assert!(c
            .accept(
                T0,
                "sip",
                msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test")
            )
            .is_err());
        assert_eq!(body(&c.poll_dispatch().unwrap()), "kept");
    }

    fn presence_of(entity: &str, note: &str) -> cpim::presence::Presence {
        let xml = format!(
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='{entity}'><tuple id='t'><status><basic>open</basic></status><note>{note}</note></tuple></presence>"
        );
        cpim::presence::Presence::parse(xml.as_bytes()).unwrap()
    }

    fn sub(op: SubscriptionOp, from: &str, to: &str) -> Inbound {
        Inbound::new(
            Event::Subscription(Subscription::new(op)),
            addr(from),
            addr(to),
        )
    }

    fn drain(c: &mut Core) -> Vec<(String, String, String, String)> {
        let mut out = Vec::new();
        while let Some(e) = c.poll_dispatch() {
            let what = match &e.event {
                Event::Subscription(s) => {
                    format!("{:?}{}", s.op, if s.aggregate { "*" } else { "" })
                }
                Event::Presence(_) => "Presence".to_owned(),
                other => other.kind().to_owned(),
            };
            out.push((
                e.destination.to_string(),
                what,
                e.from.to_string(),
                e.to.to_string(),
            ));
            c.complete(T0, e.id, DeliveryOutcome::Accepted);
        }
        out
    }

    fn row(d: &str, w: &str, f: &str, t: &str) -> (String, String, String, String) {
        (d.to_owned(), w.to_owned(), f.to_owned(), t.to_owned())
    }

    #[test]
    fn presence_flows_through_the_hub_with_one_upstream_subscription() {
        let mut c = core();
        // alice (SIP) asks to watch bob (XMPP): bob is asked to authorize.
        c.accept(
            T0,
            "sip",
            sub(
                SubscriptionOp::Subscribe,
                "sip:alice@sip.test",
                "sip:bob@xmpp.test",
            ),
        )
        .unwrap();
        assert_eq!(
            drain(&mut c),
            [row("xmpp", "Subscribe", "alice@sip.test", "bob@xmpp.test")]
        );
        // bob approves: alice learns it, and the gateway subscribes upstream once.
        c.accept(
            T0,
            "xmpp",
            sub(SubscriptionOp::Approve, "bob@xmpp.test", "alice@sip.test"),
        )
        .unwrap();
        let mut out = drain(&mut c);
        out.sort();
        assert_eq!(
            out,
            [
                row("sip", "Approve", "sip:bob@xmpp.test", "sip:alice@sip.test"),
                row("xmpp", "Subscribe*", "alice@sip.test", "bob@xmpp.test"),
            ]
        );
        // bob's state reaches alice.
        let p = presence_of("pres:bob@xmpp.test", "here");
        c.accept(
            T0,
            "xmpp",
            Inbound::new(
                Event::Presence(PresenceUpdate {
                    presence: p.clone(),
                }),
                addr("bob@xmpp.test"),
                addr("alice@sip.test"),
            ),
        )
        .unwrap();
        assert_eq!(
            drain(&mut c),
            [row(
                "sip",
                "Presence",
                "sip:bob@xmpp.test",
                "sip:alice@sip.test"
            )]
        );
        // carol joins: no second upstream subscription; she gets the state at once.
        c.accept(
            T0,
            "sip",
            sub(
                SubscriptionOp::Subscribe,
                "sip:carol@sip.test",
                "sip:bob@xmpp.test",
            ),
        )
        .unwrap();
        drain(&mut c);
        c.accept(
            T0,
            "xmpp",
            sub(SubscriptionOp::Approve, "bob@xmpp.test", "carol@sip.test"),
        )
        .unwrap();
        assert_eq!(
            drain(&mut c),
            [row(
                "sip",
                "Presence",
                "sip:bob@xmpp.test",
                "sip:carol@sip.test"
            )]
        );
        assert_eq!(
            c.presence().cached(&Identity::new("bob", "xmpp.test")),
            Some(&p)
        );
        // Both leave: one upstream unsubscribe, named after the subscriber it was made for.
        c.accept(
            T0,
            "sip",
            sub(
                SubscriptionOp::Unsubscribe,
                "sip:alice@sip.test",
                "sip:bob@xmpp.test",
            ),
        )
        .unwrap();
        let after_alice = drain(&mut c);
        assert!(after_alice.iter().all(|r| r.1 != "Unsubscribe*"));
        c.accept(
            T0,
            "sip",
            sub(
                SubscriptionOp::Unsubscribe,
                "sip:carol@sip.test",
                "sip:bob@xmpp.test",
            ),
        )
        .unwrap();
        let after_carol = drain(&mut c);
        assert!(
            after_carol.contains(&row(
                "xmpp",
                "Unsubscribe*",
                "alice@sip.test",
                "bob@xmpp.test"
            )),
            "{after_carol:?}"
        );
        assert_eq!(
            c.presence().cached(&Identity::new("bob", "xmpp.test")),
            None
        );
    }

    #[test]
    fn rfc3856_6_10_presence_bursts_are_coalesced_by_the_core_timers() {
        let mut c = core();
        c.accept(
            T0,
            "sip",
            sub(
                SubscriptionOp::Subscribe,
                "sip:alice@sip.test",
                "sip:bob@xmpp.test",
            ),
        )
        .unwrap();
        c.accept(
            T0,
            "xmpp",
            sub(SubscriptionOp::Approve, "bob@xmpp.test", "alice@sip.test"),
        )
        .unwrap();
        drain(&mut c);
        let publish = |c: &mut Core, at: u64, note: &str| {
            let p = presence_of("pres:bob@xmpp.test", note);
            c.accept(
                Duration::from_millis(at),
                "xmpp",
                Inbound::new(
                    Event::Presence(PresenceUpdate { presence: p }),
                    addr("bob@xmpp.test"),
                    addr("alice@sip.test"),
                ),
            )
            .unwrap();
        };
        for (i, at) in [0u64, 100, 200, 300].into_iter().enumerate() {
            publish(&mut c, at, &format!("n{i}"));
        }
        assert_eq!(
            drain(&mut c).len(),
            1,
            "first change at once, the rest held"
        );
        assert_eq!(c.poll_timeout(), Some(Duration::from_secs(5)));
        c.handle_timeout(Duration::from_secs(5));
        let mut last = None;
        while let Some(e) = c.poll_dispatch() {
            last = Some(e.event.clone());
            c.complete(T0, e.id, DeliveryOutcome::Accepted);
        }
        assert_eq!(
            last,
            Some(Event::Presence(PresenceUpdate {
                presence: presence_of("pres:bob@xmpp.test", "n3")
            }))
        );
    }

    #[test]
    fn message_too_large_for_the_destination_is_a_policy_violation() {
        let mut c = core();
        c.register_adapter(
            "sip",
            DeliveryPolicy {
                max_message_bytes: Some(10),
                ..DeliveryPolicy::default()
            },
        );
        let r = c
            .accept(
                T0,
                "xmpp",
                msg(
                    "this is more than ten bytes",
                    "bob@xmpp.test",
                    "alice@sip.test",
                ),
            )
            .unwrap_err();
        assert_eq!(r.condition, Condition::PolicyViolation);
        assert!(r.text.contains("27 bytes"), "{}", r.text);
        c.accept(T0, "xmpp", msg("short", "bob@xmpp.test", "alice@sip.test"))
            .unwrap();
    }

    #[test]
    fn retries_keep_acceptance_order_with_several_in_flight() {
        let mut c = core();
        c.register_adapter(
            "xmpp",
            DeliveryPolicy {
                max_in_flight_per_destination: 2,
                ..DeliveryPolicy::default()
            },
        );
        for b in ["a", "b", "c"] {
            c.accept(T0, "sip", msg(b, "sip:alice@sip.test", "sip:bob@xmpp.test"))
                .unwrap();
        }
        let a = c.poll_dispatch().unwrap();
        let b = c.poll_dispatch().unwrap();
        // b asks for a long wait first, then a for a short one: a goes back before b and the
        // shorter retry does not shorten the block.
        c.complete(
            T0,
            b.id,
            DeliveryOutcome::RetryLater {
                after: Duration::from_secs(10),
            },
        );
        c.complete(
            T0,
            a.id,
            DeliveryOutcome::RetryLater {
                after: Duration::from_secs(1),
            },
        );
        c.handle_timeout(Duration::from_secs(1));
        assert_eq!(c.poll_dispatch(), None, "still blocked by the 10 s retry");
        c.handle_timeout(Duration::from_secs(10));
        let order: Vec<String> = std::iter::from_fn(|| c.poll_dispatch())
            .map(|e| body(&e))
            .collect();
        assert_eq!(order, ["a", "b"]);
    }

    #[test]
    fn rfc6665_fetch_with_zero_expiry_is_probed_upstream() {
        let mut c = core();
        let fetch = Inbound::new(
            Event::Subscription(Subscription {
                expires_secs: Some(0),
                ..Subscription::new(SubscriptionOp::Subscribe)
            }),
            addr("sip:alice@sip.test"),
            addr("sip:bob@xmpp.test"),
        );
        c.accept(T0, "sip", fetch).unwrap();
        assert_eq!(
            drain(&mut c),
            [row("xmpp", "Probe", "alice@sip.test", "bob@xmpp.test")]
        );
    }

    #[test]
    fn presence_is_refused_when_the_gateway_queue_is_full() {
        let mut c = core_with(CoreConfig {
            max_queued_total: 1,
            ..CoreConfig::default()
        });
        c.accept(
            T0,
            "sip",
            msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test"),
        )
        .unwrap();
        let r = c
            .accept(
                T0,
                "sip",
                sub(
                    SubscriptionOp::Subscribe,
                    "sip:alice@sip.test",
                    "sip:bob@xmpp.test",
                ),
            )
            .unwrap_err();
        assert_eq!(r.condition, Condition::ResourceConstraint);
    }

    #[test]
    fn presence_hub_limits_refuse_with_resource_constraint() {
        let mut c = core_with(CoreConfig {
            hub: HubConfig {
                max_subscriptions: 1,
                ..HubConfig::default()
            },
            ..CoreConfig::default()
        });
        c.accept(
            T0,
            "sip",
            sub(
                SubscriptionOp::Subscribe,
                "sip:alice@sip.test",
                "sip:bob@xmpp.test",
            ),
        )
        .unwrap();
        let r = c
            .accept(
                T0,
                "sip",
                sub(
                    SubscriptionOp::Subscribe,
                    "sip:carol@sip.test",
                    "sip:bob@xmpp.test",
                ),
            )
            .unwrap_err();
        assert_eq!(r.condition, Condition::ResourceConstraint);
    }

    proptest! {
        /// Random interleavings of submissions and outcomes: per destination the
        /// delivered bodies are exactly the accepted ones, in order, none twice.
        #[test]
        fn prop_per_destination_order_and_no_loss(ops in proptest::collection::vec((0u8..4, 0u8..3), 1..200)) {
            let mut c = core();
            let mut accepted: HashMap<String, Vec<String>> = HashMap::new();
            let mut delivered: HashMap<String, Vec<String>> = HashMap::new();
            let mut pending: Vec<Envelope> = Vec::new();
            let mut n = 0;
            for (op, dest) in ops {
                match op {
                    0 | 1 => {
                        let to = format!("sip:u{dest}@xmpp.test");
                        n += 1;
                        if c.accept(T0, "sip", msg(&n.to_string(), "sip:alice@sip.test", &to)).is_ok() {
                            accepted.entry(format!("u{dest}@xmpp.test")).or_default().push(n.to_string());
                        }
                    }
                    2 => pending.extend(std::iter::from_fn(|| c.poll_dispatch())),
                    _ => {
                        if !pending.is_empty() {
                            let e = pending.remove(usize::from(dest) % pending.len());
                            delivered.entry(e.to.to_string()).or_default().push(body(&e));
                            c.complete(T0, e.id, DeliveryOutcome::Accepted);
                        }
                    }
                }
            }
            loop {
                pending.extend(std::iter::from_fn(|| c.poll_dispatch()));
                let Some(e) = pending.pop() else { break };
                delivered.entry(e.to.to_string()).or_default().push(body(&e));
                c.complete(T0, e.id, DeliveryOutcome::Accepted);
            }
            prop_assert_eq!(delivered, accepted);
            prop_assert_eq!(c.queued_total(), 0);
            prop_assert!(c.destinations.is_empty());
        }
    }
}
