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
//! - **Durability** (with `spool` on). Every accepted message and notification is
//!   recorded as a [`SpoolOp::Put`], its final outcome as a [`SpoolOp::Remove`], every
//!   dedup key as a [`SpoolOp::Remember`]; the runtime commits them (see
//!   [`Core::take_ops`]) before it answers the senders and dispatches. [`Core::restore`]
//!   queues a recovered spool again in id (acceptance) order per destination.
//! - **Expiry.** A message not delivered within its lifetime (`message_expiry`, or less
//!   when its sender said so) fails back to its sender (`remote-server-timeout`) instead
//!   of being delivered late. Waiting messages expire on time; one in flight when its
//!   lifetime ends expires if it comes back with `RetryLater`.
//!
//! By concern: admission and routing here; `queues` (order, dispatch, outcomes, retries,
//! expiry); `presence_bridge` (the presence hub's inputs and outputs, subscriptions kept
//! across a restart); `durability` (spool operations, commits, restore, adapter state).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use cpim::event::{
    Event, Notification, NotificationStatus, PresenceUpdate, Subscription, SubscriptionOp,
};
use cpim::Condition;

use crate::adapter::DeliveryPolicy;
use crate::envelope::{
    Accepted, AdapterName, DeliveryOutcome, Envelope, Inbound, MessageId, Rejected,
};
use crate::identity::Identity;
use crate::map::MapError;
pub use crate::map::Router;
use crate::presence::{HubConfig, Output, PresenceHub, SubscriptionState, TerminationReason};
use crate::spool::{Recovered, SpoolOp, StoredEnvelope};

mod durability;
mod presence_bridge;
mod queues;

/// What the map was asked when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MapUse {
    /// Where a recipient lives.
    Recipient,
    /// Who a sender is.
    Sender,
    /// How an identity is written on the destination's network.
    Written,
}

/// The one place a map error becomes a refusal: a recipient no adapter can route is
/// `item-not-found` (RFC 7247 §7.1: 404); a sender or a presented address that cannot be
/// read or written is `jid-malformed`. `context` goes before the map's reason.
fn map_refusal(used: MapUse, why: &MapError, context: String) -> Rejected {
    let condition = match used {
        MapUse::Recipient => Condition::ItemNotFound,
        MapUse::Sender | MapUse::Written => Condition::JidMalformed,
    };
    Rejected::new(condition, format!("{context}{why}"))
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
    /// Record what must survive a restart as [`SpoolOp`]s (see [`Core::take_ops`]).
    pub spool: bool,
    /// How long an accepted message may wait for delivery; `None`: for ever. A sender's
    /// shorter lifetime ([`Inbound::expires`]) wins.
    pub message_expiry: Option<Duration>,
    /// The first delay after a `RetryLater` whose own hint is shorter; doubled on each
    /// further attempt up to `max_retry_backoff`.
    pub retry_backoff: Duration,
    /// The longest backoff between attempts.
    pub max_retry_backoff: Duration,
    /// How long a message that keeps getting `RetryLater` may hold the head of its
    /// destination's queue while others wait behind it; then it fails
    /// (`remote-server-timeout`) and the next goes. `None`: no bound.
    pub head_of_line_limit: Option<Duration>,
    /// The wall clock (ms since the Unix epoch) at `now` = 0: the spool keeps wall-clock
    /// times, the core counts from its start.
    pub clock_origin_ms: u64,
    /// Submissions the runtime's channel into the core holds (read by the runtime):
    /// beyond it `Submitter::submit` waits and `Submitter::try_submit` is refused.
    pub submit_queue: usize,
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
            spool: false,
            message_expiry: None,
            retry_backoff: Duration::ZERO,
            max_retry_backoff: Duration::from_secs(60),
            head_of_line_limit: None,
            clock_origin_ms: 0,
            submit_queue: 1024,
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
    /// A submission was refused because its destination's queue was full.
    QueueFull {
        /// The destination adapter.
        adapter: AdapterName,
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
    /// The time of this destination's entry in `Core::expiries`, if any.
    expiry_timer: Option<Duration>,
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
    expires_at: Option<Duration>,
    /// When it first got `RetryLater` (the head-of-line clock).
    retrying_since: Option<Duration>,
}

#[derive(Debug)]
struct InFlight {
    key: DestKey,
    envelope: Envelope,
    accepted_at: Duration,
    attempts: u32,
    expires_at: Option<Duration>,
    retrying_since: Option<Duration>,
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
    /// When a destination's earliest waiting message expires (one entry per destination).
    expiries: BTreeSet<(Duration, DestKey)>,
    /// Dedup keys: the first id and the end of the key's window.
    dedup: HashMap<(AdapterName, String), (MessageId, Duration)>,
    dedup_order: VecDeque<(Duration, (AdapterName, String))>,
    /// What the spool must record, oldest first.
    ops: Vec<SpoolOp>,
    /// Envelopes recorded for the spool but not yet committed, with their destination:
    /// they are not dispatched until [`Core::mark_durable`] (per-destination order
    /// holds: one waiting at the front holds back those behind it).
    not_durable: HashMap<MessageId, DestKey>,
    /// When the presence hub's subscriptions are next written to the spool (set when
    /// they changed), and the hub's change counter at the last write.
    hub_check_at: Option<Duration>,
    hub_saved_changes: u64,
    /// The spool still holds the whole-table record of an older version: removed with
    /// the next save.
    hub_saved_legacy: bool,
    next_id: u64,
    queued_total: usize,
    reports: VecDeque<Report>,
    hub: PresenceHub<Identity>,
    /// The watcher named as subscriber of each shared upstream subscription.
    upstream_subscriber: HashMap<Identity, Identity>,
    /// The origin's ids of messages whose senders asked for notifications, for the
    /// receipts and error reports that come back from the destination's network.
    correlations: crate::correlation::Correlations,
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
            correlations: crate::correlation::Correlations::new(
                crate::correlation::DEFAULT_KEEP,
                crate::correlation::DEFAULT_CAPACITY,
            ),
            config,
            router,
            adapters: HashMap::new(),
            destinations: HashMap::new(),
            ready: VecDeque::new(),
            in_flight: HashMap::new(),
            timers: BinaryHeap::new(),
            expiries: BTreeSet::new(),
            ops: Vec::new(),
            not_durable: HashMap::new(),
            hub_check_at: None,
            hub_saved_changes: 0,
            hub_saved_legacy: false,
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

    pub(super) fn admit(
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
            .map_err(|why| map_refusal(MapUse::Recipient, &why, String::new()))?;
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
        let lifetime = match (inbound.expires, self.config.message_expiry) {
            (Some(asked), Some(limit)) => Some(asked.min(limit)),
            (asked, limit) => asked.or(limit),
        };
        // A network speaks only for its own users: a sender that reads as a user of
        // another adapter (its home domain, or an alias, escape or per-user address of
        // it) is a forgery, whatever the origin. A sender of a domain no adapter owns is
        // a federated user of the origin's network.
        let sender = match self.router.resolve(origin, &inbound.from) {
            Ok(r) if r.owner.as_str() != &**origin && !self.router.claims_domain(r.identity.domain()) => {
                // Every domain no adapter claims belongs to one adapter (SIP
                // `remote_domains = ["*"]`): a federated user of another network must be
                // at a domain its adapter lists.
                return Err(Rejected::new(
                    Condition::Forbidden,
                    format!(
                        "{origin} may not send as {}: {} is none of its domains, and every domain no adapter lists is reached on `{}`; list it among `{origin}`'s domains",
                        inbound.from, r.identity.domain(), r.owner
                    ),
                ));
            }
            Ok(r) if r.owner.as_str() != &**origin => {
                return Err(Rejected::new(
                    Condition::Forbidden,
                    format!(
                        "{} may not send as {}: that address is {}, a user of `{}`",
                        origin, inbound.from, r.identity, r.owner
                    ),
                ))
            }
            Ok(r) => (r.identity, r.instance),
            Err(why) => match inbound.from.identity() {
                Ok(Some((_, domain))) if self.router.claims_domain(&domain) => {
                    return Err(Rejected::new(
                        Condition::Forbidden,
                        format!(
                            "{origin} may not send as {}: {domain} is a domain of this gateway and that is none of its users ({why})",
                            inbound.from
                        ),
                    ))
                }
                Ok(Some((local, domain))) => (
                    Identity::new(&local, &domain),
                    crate::identity::instance_of(&inbound.from),
                ),
                _ => return Err(map_refusal(MapUse::Sender, &why, String::new())),
            },
        };
        let present = |id: &Identity, inst: Option<&str>, what: &str| {
            self.router.present(id, inst, &destination).map_err(|why| {
                map_refusal(
                    MapUse::Written,
                    &why,
                    format!("the {what} {id} cannot be written on `{destination}`: "),
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
            let done = self.presence_input(now, &sender.0, &to.identity, inbound.event);
            self.note_hub_changes(now);
            done?;
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
            self.reports.push_back(Report::QueueFull {
                adapter: destination.clone(),
            });
            return Err(Rejected {
                condition: Condition::ResourceConstraint,
                text: format!("too many messages waiting for {to_address}; try again later"),
                retry_after: Some(self.config.retry_after_hint),
            });
        }
        let id = self.allocate_id();
        let mut protocol_ids = inbound.protocol_ids;
        match &inbound.event {
            Event::Message(m) if m.receipts.any() => {
                self.correlations
                    .remember(now, id, origin.clone(), protocol_ids.clone());
            }
            // A receipt or an error report from the destination's network about a
            // message the origin sent: the origin's own ids of it come back, so it can
            // be told in its own protocol (an IMDN names the sender's Message-ID).
            Event::Notification(n) => {
                if let Some(original) = MessageId::parse(&n.message_id)
                    .and_then(|m| self.correlations.recall(now, m, &destination))
                {
                    let own = std::mem::take(&mut protocol_ids);
                    protocol_ids = original;
                    protocol_ids.extend(own);
                }
            }
            _ => {}
        }
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
            protocol_ids,
            hops: hops - 1,
            received_at_ms: inbound.received_at_ms,
        };
        if let Some(key) = dedup {
            self.remember(now, key, id);
        }
        let expires_at = lifetime.map(|l| now.saturating_add(l));
        self.enqueue(key, envelope, now, expires_at, true);
        Ok(Accepted {
            id,
            duplicate: false,
        })
    }

    pub(super) fn remember(&mut self, now: Duration, key: (AdapterName, String), id: MessageId) {
        let until = now.saturating_add(self.config.dedup_window);
        if self.config.spool {
            self.ops.push(SpoolOp::Remember {
                key: dedup_record_key(&key),
                id,
                expires_ms: self.wall_ms(until),
            });
        }
        self.dedup.insert(key.clone(), (id, until));
        self.dedup_order.push_back((until, key));
        while self.dedup.len() > self.config.dedup_capacity {
            match self.dedup_order.pop_front() {
                Some((_, old)) => {
                    self.dedup.remove(&old);
                }
                None => break,
            }
        }
    }
}

/// A dedup key as the spool writes it: origin adapter, newline, the adapter's key (an
/// adapter name has no newline; the adapter's key may).
fn dedup_record_key((origin, key): &(AdapterName, String)) -> String {
    format!("{origin}\n{key}")
}

/// The dedup entry of a key written by [`dedup_record_key`].
fn dedup_entry(record: &str) -> Option<(AdapterName, String)> {
    let (origin, key) = record.split_once('\n')?;
    Some((AdapterName::from(origin), key.to_owned()))
}

/// The spool's state key of the presence subscriptions.
/// The whole subscription table as one record, as versions before 2026-12-07 wrote it
/// (read at start, then removed).
const SUBSCRIPTIONS_KEY: &str = "presence/subscriptions";

/// Each presence subscription is its own spool record under this prefix, so that a
/// change writes one record, not the whole table.
const SUBSCRIPTION_PREFIX: &str = "presence/sub/";

/// The spool key of the subscription of `watcher` to `presentity`.
fn subscription_key(watcher: &Identity, presentity: &Identity) -> String {
    let pair = serde_json::to_string(&(watcher, presentity)).unwrap_or_default();
    format!("{SUBSCRIPTION_PREFIX}{pair}")
}

/// How long changed subscriptions wait before they are compared and written.
const SUBSCRIPTIONS_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// A presence subscription as the spool keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct KeptSubscription {
    watcher: Identity,
    presentity: Identity,
    active: bool,
    /// When it expires (ms since the Unix epoch); `None` never.
    expires_ms: Option<u64>,
}

/// Events the spool keeps: messages and the notifications about them. Presence,
/// subscriptions and composing are soft state, refreshed by their peers.
fn spooled(event: &Event) -> bool {
    matches!(event, Event::Message(_) | Event::Notification(_))
}

/// The failure of an envelope whose lifetime ended before it could be delivered.
fn expired_failure(
    accepted_at: Duration,
    expires_at: Option<Duration>,
) -> (Condition, Option<String>) {
    let lifetime = expires_at.map_or(Duration::ZERO, |e| e.saturating_sub(accepted_at));
    (
        Condition::RemoteServerTimeout,
        Some(format!(
            "not delivered within its lifetime of {} s: expired",
            lifetime.as_secs()
        )),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cpim::event::{Message, Receipts};
    use proptest::prelude::*;

    use crate::identity::AddressStyle;
    use crate::map::{AddressMap, Route};
    use cpim::Address;

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

    /// `inbound` with a dedup key.
    fn keyed(key: &str, inbound: Inbound) -> Inbound {
        Inbound {
            dedup_key: Some(key.to_owned()),
            ..inbound
        }
    }

    fn body(e: &Envelope) -> String {
        match &e.event {
            Event::Message(m) => String::from_utf8_lossy(&m.body).into_owned(),
            other => format!("{other:?}"),
        }
    }

    const T0: Duration = Duration::ZERO;

    /// Issue 13: a network speaks only for its own users and federated ones.
    #[test]
    fn a_sender_of_another_network_or_of_a_gateway_domain_is_forbidden() {
        use crate::map::{AdapterMapConfig, MapConfig};
        let map = AddressMap::new(MapConfig {
            adapters: vec![
                AdapterMapConfig {
                    name: "sip".into(),
                    style: AddressStyle::Sip,
                    home_domains: vec!["sip.test".into()],
                    alias_domains: vec![("xmpp.sip.test".into(), "xmpp.test".into())],
                    escape_domains: Vec::new(),
                },
                AdapterMapConfig {
                    name: "xmpp".into(),
                    style: AddressStyle::Xmpp,
                    home_domains: vec!["xmpp.test".into()],
                    alias_domains: vec![("sip.gw.xmpp.test".into(), "sip.test".into())],
                    escape_domains: vec!["gw.xmpp.test".into()],
                },
            ],
            users: Vec::new(),
            any_domain: None,
        })
        .unwrap();
        let mut c = Core::new(CoreConfig::default(), Arc::new(map));
        c.register_adapter("sip", DeliveryPolicy::default());
        c.register_adapter("xmpp", DeliveryPolicy::default());
        for (origin, from, to) in [
            // Another network's home domain, as is.
            ("sip", "sip:juliet@xmpp.test", "sip:romeo@xmpp.sip.test"),
            ("xmpp", "romeo@sip.test/r", "juliet@xmpp.test"),
            // An alias of another network's users, on the origin's own network.
            ("sip", "sip:juliet@xmpp.sip.test", "sip:bob@sip.test"),
            ("xmpp", "romeo@sip.gw.xmpp.test", "juliet@xmpp.test"),
            // The gateway's escape domain, readable or not.
            ("xmpp", "mallory@gw.xmpp.test", "juliet@xmpp.test"),
            ("xmpp", "bob\\40sip.test@gw.xmpp.test", "juliet@xmpp.test"),
        ] {
            let err = c.accept(T0, origin, msg("forged", from, to)).unwrap_err();
            assert_eq!(
                err.condition,
                Condition::Forbidden,
                "{origin} as {from}: {err:?}"
            );
        }
        // Its own users may send.
        c.accept(
            T0,
            "sip",
            msg("ok", "sip:bob@sip.test", "sip:juliet@xmpp.sip.test"),
        )
        .unwrap();
        c.accept(
            T0,
            "xmpp",
            msg("ok", "juliet@xmpp.test/phone", "bob@sip.gw.xmpp.test"),
        )
        .unwrap();
        // Users of domains no adapter owns (federation) are not forgeries (whether they
        // can be written on the destination is another matter).
        for (origin, from, to) in [
            (
                "sip",
                "sip:carol@carrier.example",
                "sip:juliet@xmpp.sip.test",
            ),
            ("xmpp", "eve@elsewhere.example", "bob@sip.gw.xmpp.test"),
        ] {
            if let Err(err) = c.accept(T0, origin, msg("ok", from, to)) {
                assert_ne!(err.condition, Condition::Forbidden, "{from}: {err:?}");
            }
        }
    }

    /// Issue 15: a burst to many destinations (a presence fan-out) leaves the core's
    /// tables sized for the burst unless they are compacted once it has drained.
    #[test]
    fn the_tables_of_a_drained_burst_are_given_back() {
        let mut c = core_with(CoreConfig {
            max_queued_total: 1_000_000,
            ..CoreConfig::default()
        });
        let n = 20_000;
        for i in 0..n {
            c.accept(
                T0,
                "sip",
                msg("x", "sip:bob@sip.test", &format!("u{i}@xmpp.test")),
            )
            .unwrap();
        }
        let mut sent = Vec::new();
        while let Some(e) = c.poll_dispatch() {
            sent.push(e.id);
        }
        assert_eq!(sent.len(), n);
        let grown = (c.in_flight.capacity(), c.destinations.capacity());
        assert!(grown.0 >= n && grown.1 >= n, "{grown:?}");
        // Half delivered: still in use, nothing shrinks.
        for id in sent.drain(..n / 2) {
            c.complete(T0, id, DeliveryOutcome::Accepted);
        }
        assert!(!crate::compact::Compact::compact(&mut c.in_flight));
        for id in sent.drain(..) {
            c.complete(T0, id, DeliveryOutcome::Accepted);
        }
        c.compact();
        assert!(c.in_flight.capacity() <= 2 * crate::compact::SLACK);
        assert!(c.destinations.capacity() <= 2 * crate::compact::SLACK);
        while c.poll_report().is_some() {}
        c.compact();
        assert!(c.reports.capacity() <= 2 * crate::compact::SLACK);
        // And it still works.
        c.accept(T0, "sip", msg("again", "sip:bob@sip.test", "u1@xmpp.test"))
            .unwrap();
        assert_eq!(drain(&mut c).len(), 1);
    }

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
        let with_key = || {
            keyed(
                "call-1",
                msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test"),
            )
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
                keyed("call-1", msg("x", "bob@xmpp.test", "sip:alice@sip.test"))
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
                keyed("a", msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test")),
            )
            .unwrap();
        assert!(!a.duplicate);
        let c2 = c
            .accept(
                T0,
                "sip",
                keyed("c", msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test")),
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
    fn rfc5438_a_receipt_from_the_destinations_network_carries_the_senders_ids_back() {
        let mut c = core();
        let pid = |kind: &str, value: &str| crate::envelope::ProtocolId {
            kind: kind.into(),
            value: value.into(),
        };
        let mut asked = msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test");
        if let Event::Message(m) = &mut asked.event {
            m.receipts.delivered = true;
            m.receipts.failed = true;
        }
        asked.protocol_ids.push(pid("imdn.message-id", "m-1"));
        let a = c.accept(T0, "sip", asked).unwrap();
        let e = c.poll_dispatch().unwrap();
        c.complete(T0, e.id, DeliveryOutcome::Accepted);
        // bob's client sends a receipt (and a second one, say a display report).
        for status in [NotificationStatus::Delivered, NotificationStatus::Displayed] {
            let mut receipt = Inbound::new(
                Event::Notification(Notification {
                    message_id: a.id.to_string(),
                    status,
                }),
                addr("sip:bob@xmpp.test"),
                addr("sip:alice@sip.test"),
            );
            receipt.protocol_ids.push(pid("xmpp.id", "r-1"));
            c.accept(Duration::from_secs(5), "xmpp", receipt).unwrap();
            let n = c.poll_dispatch().unwrap();
            assert_eq!(&*n.destination, "sip");
            assert_eq!(
                n.protocol_ids,
                [pid("imdn.message-id", "m-1"), pid("xmpp.id", "r-1")]
            );
            c.complete(T0, n.id, DeliveryOutcome::Delivered);
        }
        // A message nobody asked a notification for is not kept; a notification naming
        // it carries only its own ids.
        let plain = c
            .accept(
                T0,
                "sip",
                msg("y", "sip:alice@sip.test", "sip:bob@xmpp.test"),
            )
            .unwrap();
        let e = c.poll_dispatch().unwrap();
        c.complete(T0, e.id, DeliveryOutcome::Accepted);
        let mut receipt = Inbound::new(
            Event::Notification(Notification {
                message_id: plain.id.to_string(),
                status: NotificationStatus::Delivered,
            }),
            addr("sip:bob@xmpp.test"),
            addr("sip:alice@sip.test"),
        );
        receipt.protocol_ids.push(pid("xmpp.id", "r-2"));
        c.accept(T0, "xmpp", receipt).unwrap();
        let n = c.poll_dispatch().unwrap();
        assert_eq!(n.protocol_ids, [pid("xmpp.id", "r-2")]);
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
    fn text_without_a_display_request_tells_a_sender_that_asked_none_will_come() {
        // Issue 13: a text-only phone got the text as it is; the XMPP sender that asked
        // for a displayed marker hears, after the delivery receipt, that none will come.
        let mut c = core();
        let send = |c: &mut Core, receipts: Receipts| {
            let mut m = Message::text("x");
            m.receipts = receipts;
            let a = c
                .accept(
                    T0,
                    "xmpp",
                    Inbound::new(
                        Event::Message(m),
                        addr("xmpp:bob@xmpp.test"),
                        addr("xmpp:alice@sip.test"),
                    ),
                )
                .unwrap();
            (a, c.poll_dispatch().unwrap())
        };
        // Each notification in turn (one at a time per destination, in order).
        let statuses = |c: &mut Core| -> Vec<NotificationStatus> {
            std::iter::from_fn(|| {
                let e = c.poll_dispatch()?;
                c.complete(T0, e.id, DeliveryOutcome::Accepted);
                match e.event {
                    Event::Notification(n) => Some(n.status),
                    other => panic!("{other:?}"),
                }
            })
            .collect()
        };
        let both = Receipts {
            delivered: true,
            displayed: true,
            ..Receipts::default()
        };
        let (_, e) = send(&mut c, both);
        c.complete(
            T0,
            e.id,
            DeliveryOutcome::WithoutDisplay { confirmed: true },
        );
        assert_eq!(
            statuses(&mut c),
            [
                NotificationStatus::Delivered,
                NotificationStatus::DisplayUnknown
            ]
        );
        // Handed on unconfirmed: no receipt is invented, the display answer still comes.
        let (_, e) = send(&mut c, both);
        c.complete(
            T0,
            e.id,
            DeliveryOutcome::WithoutDisplay { confirmed: false },
        );
        assert_eq!(statuses(&mut c), [NotificationStatus::DisplayUnknown]);
        // Not asked for a display notification: nothing to say about it.
        let (_, e) = send(
            &mut c,
            Receipts {
                delivered: true,
                ..Receipts::default()
            },
        );
        c.complete(
            T0,
            e.id,
            DeliveryOutcome::WithoutDisplay { confirmed: true },
        );
        assert_eq!(statuses(&mut c), [NotificationStatus::Delivered]);
        let (_, e) = send(&mut c, both);
        c.complete(T0, e.id, DeliveryOutcome::Delivered);
        assert_eq!(statuses(&mut c), [NotificationStatus::Delivered]);
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
    fn issue13_a_message_that_keeps_asking_to_wait_holds_the_others_for_a_bounded_time() {
        // (outcome the head keeps getting, whether it is failed to let the next go)
        for (waiting, bounded) in [(false, true), (true, false)] {
            let mut c = core_with(CoreConfig {
                max_delivery_attempts: 1000,
                head_of_line_limit: Some(Duration::from_secs(10)),
                ..CoreConfig::default()
            });
            for text in ["first", "second"] {
                c.accept(
                    T0,
                    "sip",
                    msg(text, "sip:alice@sip.test", "sip:bob@xmpp.test"),
                )
                .unwrap();
            }
            let again = |after| {
                if waiting {
                    DeliveryOutcome::Waiting { after }
                } else {
                    DeliveryOutcome::RetryLater { after }
                }
            };
            let mut now = T0;
            let mut failed_at = None;
            while now <= Duration::from_secs(30) {
                c.handle_timeout(now);
                let out: Vec<Envelope> = std::iter::from_fn(|| c.poll_dispatch()).collect();
                for e in out {
                    match (&e.event, body(&e).as_str()) {
                        (Event::Message(_), "first") => {
                            c.complete(now, e.id, again(Duration::from_secs(2)));
                        }
                        (Event::Message(_), "second") => {
                            assert!(failed_at.is_some(), "second only after first gave way");
                            c.complete(now, e.id, DeliveryOutcome::Accepted);
                        }
                        (Event::Notification(n), _) => {
                            assert!(matches!(
                                n.status,
                                NotificationStatus::Failed {
                                    condition: Condition::RemoteServerTimeout,
                                    ..
                                }
                            ));
                            failed_at = Some(now);
                            c.complete(now, e.id, DeliveryOutcome::Delivered);
                        }
                        _ => panic!("{e:?}"),
                    }
                }
                now += Duration::from_secs(1);
            }
            if bounded {
                let at = failed_at.expect("the head gave way");
                assert!(
                    (Duration::from_secs(10)..=Duration::from_secs(13)).contains(&at),
                    "after about 10 s: {at:?}"
                );
            } else {
                assert_eq!(
                    failed_at, None,
                    "a recipient that can take nothing is waited for"
                );
            }
        }
    }

    #[test]
    fn router_swap_keeps_accepted_envelopes() {
        struct Nothing;
        impl Router for Nothing {
            fn resolve(&self, _: &str, a: &Address) -> Result<Route, MapError> {
                Err(MapError::UnknownIdentityDomain {
                    identity: Identity::new("x", a.domain()),
                })
            }
            fn present(
                &self,
                identity: &Identity,
                _: Option<&str>,
                _: &str,
            ) -> Result<Address, MapError> {
                Err(MapError::UnknownIdentityDomain {
                    identity: identity.clone(),
                })
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

    /// The spool keeps presence subscriptions: after a restart the one of an XMPP
    /// watcher (its server keeps it in the roster) is re-created and the gateway
    /// subscribes upstream again; the one of a SIP watcher (a dialog that died with the
    /// process) is not — its refresh will get 481 and it subscribes again. No presence
    /// state comes back: the presentity's network sends it again.
    #[test]
    fn presence_subscriptions_survive_a_restart_and_are_re_established_upstream() {
        use crate::spool::{MemorySpool, Spool};
        let start = |origin_ms: u64| {
            let mut c = Core::new(
                CoreConfig {
                    spool: true,
                    clock_origin_ms: origin_ms,
                    ..CoreConfig::default()
                },
                test_map(),
            );
            let sip = DeliveryPolicy {
                resumes_subscriptions: false,
                ..DeliveryPolicy::default()
            };
            c.register_adapter("sip", sip);
            c.register_adapter("xmpp", DeliveryPolicy::default());
            c
        };
        let mut first = start(1_000_000);
        let watch = |c: &mut Core, w_net: &str, w: &str, p_net: &str, p: &str, w_as: &str| {
            c.accept(T0, w_net, sub(SubscriptionOp::Subscribe, w, p))
                .unwrap();
            drain(c);
            c.accept(T0, p_net, sub(SubscriptionOp::Approve, p, w_as))
                .unwrap();
            drain(c)
        };
        // carol (XMPP) watches dave (SIP); alice (SIP) watches bob (XMPP).
        let up = watch(
            &mut first,
            "xmpp",
            "carol@xmpp.test",
            "sip",
            "sip:dave@sip.test",
            "sip:carol@xmpp.test",
        );
        assert!(
            up.iter().any(|r| r.0 == "sip" && r.1 == "Subscribe*"),
            "{up:?}"
        );
        watch(
            &mut first,
            "sip",
            "sip:alice@sip.test",
            "xmpp",
            "bob@xmpp.test",
            "alice@sip.test",
        );
        // Written once, after the save interval.
        assert!(commit(&mut first)
            .iter()
            .all(|op| !matches!(op, SpoolOp::State { .. })));
        first.handle_timeout(SUBSCRIPTIONS_SAVE_INTERVAL);
        let mut spool = MemorySpool::default();
        let ops = commit(&mut first);
        // One record per subscription (issue 15: not the whole table per change).
        let written = state_ops(&ops);
        assert_eq!(written.len(), 2, "{ops:?}");
        assert!(written
            .iter()
            .all(|(k, put)| *put && k.starts_with(SUBSCRIPTION_PREFIX)));
        // Nothing changed: the next save writes nothing.
        first.schedule_subscriptions_save(T0);
        first.handle_timeout(SUBSCRIPTIONS_SAVE_INTERVAL * 2);
        assert!(state_ops(&commit(&mut first)).is_empty());
        spool.commit(&ops, first.next_id(), 1_001_000).unwrap();

        let mut second = start(1_100_000);
        second.restore(T0, spool.recover(1_100_000).unwrap());
        // The dropped SIP watcher leaves the spool with the first commit, and only it:
        // the restored one is as the spool has it.
        let ops = commit(&mut second);
        let written = state_ops(&ops);
        assert_eq!(written.len(), 1, "{ops:?}");
        assert!(!written[0].1, "a removal: {ops:?}");
        assert!(written[0].0.contains("alice"), "{ops:?}");
        let out = drain(&mut second);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].0.as_str(), out[0].1.as_str()),
            ("sip", "Subscribe*")
        );
        assert!(out[0].3.contains("dave@sip.test"), "{out:?}");
        let id =
            |s: &str| Identity::new(s.split('@').next().unwrap(), s.split('@').nth(1).unwrap());
        let hub = second.presence();
        assert_eq!(
            hub.subscription_state(&id("carol@xmpp.test"), &id("dave@sip.test")),
            Some(SubscriptionState::Active)
        );
        assert_eq!(
            hub.subscription_state(&id("alice@sip.test"), &id("bob@xmpp.test")),
            None
        );
        assert!(
            hub.cached(&id("dave@sip.test")).is_none(),
            "no state invented"
        );
        // Nothing changed since: the next save writes nothing.
        second.handle_timeout(SUBSCRIPTIONS_SAVE_INTERVAL);
        assert!(state_ops(&commit(&mut second)).is_empty());
    }

    #[test]
    fn subscriptions_kept_as_one_table_by_an_older_version_are_restored_and_rewritten() {
        let mut core = core_with(CoreConfig {
            spool: true,
            ..CoreConfig::default()
        });
        core.register_adapter(
            "xmpp",
            DeliveryPolicy {
                resumes_subscriptions: true,
                ..DeliveryPolicy::default()
            },
        );
        let table = serde_json::to_vec(&vec![KeptSubscription {
            watcher: Identity::new("carol", "xmpp.test"),
            presentity: Identity::new("dave", "sip.test"),
            active: true,
            expires_ms: None,
        }])
        .unwrap();
        let mut state = std::collections::BTreeMap::new();
        state.insert(SUBSCRIPTIONS_KEY.to_owned(), table);
        core.restore(
            T0,
            crate::spool::Recovered {
                state,
                ..crate::spool::Recovered::default()
            },
        );
        assert_eq!(
            core.presence().subscription_state(
                &Identity::new("carol", "xmpp.test"),
                &Identity::new("dave", "sip.test")
            ),
            Some(SubscriptionState::Active)
        );
        core.handle_timeout(SUBSCRIPTIONS_SAVE_INTERVAL);
        let ops = core.take_ops();
        let states = state_ops(&ops);
        assert!(
            states.contains(&(SUBSCRIPTIONS_KEY.to_owned(), false)),
            "{ops:?}"
        );
        assert!(
            states
                .iter()
                .any(|(k, put)| *put && k.starts_with(SUBSCRIPTION_PREFIX)),
            "{ops:?}"
        );
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
        // The approval, then the known state.
        assert_eq!(
            drain(&mut c),
            [
                row("sip", "Approve", "sip:bob@xmpp.test", "sip:carol@sip.test"),
                row("sip", "Presence", "sip:bob@xmpp.test", "sip:carol@sip.test")
            ]
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

    /// What a commit does for the core: takes its operations and marks the puts durable.
    /// The state records among `ops`: key, and whether it is written (or removed).
    fn state_ops(ops: &[SpoolOp]) -> Vec<(String, bool)> {
        ops.iter()
            .filter_map(|op| match op {
                SpoolOp::State { key, value } => Some((key.clone(), value.is_some())),
                _ => None,
            })
            .collect()
    }

    fn commit(c: &mut Core) -> Vec<SpoolOp> {
        let ops = c.take_ops();
        c.mark_durable(&SpoolOp::put_ids(&ops));
        ops
    }

    fn failed_condition(e: &Envelope) -> Option<Condition> {
        match &e.event {
            Event::Notification(Notification {
                status: NotificationStatus::Failed { condition, .. },
                ..
            }) => Some(*condition),
            _ => None,
        }
    }

    /// Expiry on a fake clock: a message waiting behind a blocked destination fails back
    /// to its sender when its lifetime ends, not when the destination returns; a
    /// sender's shorter lifetime (SIP `Expires`) wins over the configured one.
    #[test]
    fn expired_messages_fail_back_to_the_sender_on_time() {
        let mut c = core_with(CoreConfig {
            message_expiry: Some(Duration::from_secs(60)),
            ..CoreConfig::default()
        });
        let to = "sip:bob@xmpp.test";
        c.accept(T0, "sip", msg("first", "sip:alice@sip.test", to))
            .unwrap();
        c.accept(
            Duration::from_secs(1),
            "sip",
            Inbound {
                expires: Some(Duration::from_secs(10)),
                ..msg("short", "sip:alice@sip.test", to)
            },
        )
        .unwrap();
        c.accept(
            Duration::from_secs(2),
            "sip",
            Inbound {
                expires: Some(Duration::from_secs(3600)),
                ..msg("long", "sip:alice@sip.test", to)
            },
        )
        .unwrap();
        let e = c.poll_dispatch().unwrap();
        assert_eq!(body(&e), "first");
        // The peer is down for 10 minutes.
        c.complete(
            Duration::from_secs(2),
            e.id,
            DeliveryOutcome::RetryLater {
                after: Duration::from_secs(600),
            },
        );
        assert_eq!(c.poll_dispatch(), None);
        // "short" (1 s + 10 s) is the first thing due, long before the retry.
        assert_eq!(c.poll_timeout(), Some(Duration::from_secs(11)));
        c.handle_timeout(Duration::from_secs(11));
        let n = c.poll_dispatch().unwrap();
        assert_eq!(n.destination.as_ref(), "sip");
        assert_eq!(n.to, addr("sip:alice@sip.test"));
        assert_eq!(failed_condition(&n), Some(Condition::RemoteServerTimeout));
        assert_eq!(c.poll_dispatch(), None, "the others still wait");
        c.complete(Duration::from_secs(11), n.id, DeliveryOutcome::Accepted);
        assert_eq!(c.queued_total(), 2, "first and long");
        // At 60 s "first" expires and so does "long": 3600 s asked, 60 s configured.
        assert_eq!(c.poll_timeout(), Some(Duration::from_secs(60)));
        c.handle_timeout(Duration::from_secs(60));
        let mut failed = 1;
        while let Some(n) = c.poll_dispatch() {
            if n.destination.as_ref() == "sip" {
                failed += 1;
                assert_eq!(failed_condition(&n), Some(Condition::RemoteServerTimeout));
            }
            c.complete(Duration::from_secs(60), n.id, DeliveryOutcome::Accepted);
        }
        assert_eq!(failed, 2, "first (60 s); long is still waiting until 62 s");
        c.handle_timeout(Duration::from_secs(62));
        let n = c.poll_dispatch().unwrap();
        assert_eq!(failed_condition(&n), Some(Condition::RemoteServerTimeout));
        let Event::Notification(note) = &n.event else {
            panic!("not a notification")
        };
        assert!(
            matches!(&note.status, NotificationStatus::Failed { text: Some(t), .. } if t.contains("lifetime of 60 s"))
        );
    }

    /// An envelope in flight when its lifetime ends is not cut off; if it comes back
    /// with `RetryLater` it expires instead of being retried.
    #[test]
    fn an_expired_retry_fails_instead_of_waiting_again() {
        let mut c = core_with(CoreConfig {
            message_expiry: Some(Duration::from_secs(30)),
            ..CoreConfig::default()
        });
        c.accept(
            T0,
            "sip",
            msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test"),
        )
        .unwrap();
        let e = c.poll_dispatch().unwrap();
        c.handle_timeout(Duration::from_secs(31));
        assert_eq!(
            c.poll_dispatch(),
            None,
            "in flight: not expired by the sweep"
        );
        c.complete(
            Duration::from_secs(40),
            e.id,
            DeliveryOutcome::RetryLater {
                after: Duration::from_secs(1),
            },
        );
        let n = c.poll_dispatch().unwrap();
        assert_eq!(failed_condition(&n), Some(Condition::RemoteServerTimeout));
        assert_eq!(c.queued_total(), 1, "only the notification");
    }

    /// Backoff: a short retry hint is stretched, doubling per attempt up to the cap.
    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let mut c = core_with(CoreConfig {
            retry_backoff: Duration::from_secs(1),
            max_retry_backoff: Duration::from_secs(4),
            max_delivery_attempts: 100,
            ..CoreConfig::default()
        });
        c.accept(
            T0,
            "sip",
            msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test"),
        )
        .unwrap();
        let mut now = T0;
        let mut waits = Vec::new();
        for _ in 0..5 {
            let e = c.poll_dispatch().unwrap();
            c.complete(
                now,
                e.id,
                DeliveryOutcome::RetryLater {
                    after: Duration::ZERO,
                },
            );
            let due = c.poll_timeout().unwrap();
            waits.push((due - now).as_secs());
            now = due;
            c.handle_timeout(now);
        }
        assert_eq!(waits, [1, 2, 4, 4, 4]);
    }

    /// With the spool on, the core records a put per accepted message, the dedup key,
    /// and on the final outcome the removal — together with the failure notification
    /// that answers it, so that a crash never loses both.
    #[test]
    fn spool_operations_follow_each_envelope_from_acceptance_to_outcome() {
        let mut c = core_with(CoreConfig {
            spool: true,
            clock_origin_ms: 1_000_000,
            message_expiry: Some(Duration::from_secs(60)),
            ..CoreConfig::default()
        });
        let a = c
            .accept(
                Duration::from_secs(1),
                "sip",
                keyed(
                    "call-1/1",
                    msg("x", "sip:alice@sip.test", "sip:bob@xmpp.test"),
                ),
            )
            .unwrap();
        assert_eq!(
            c.poll_dispatch(),
            None,
            "not dispatched before it is durable"
        );
        let ops = commit(&mut c);
        assert_eq!(ops.len(), 2, "{ops:?}");
        let SpoolOp::Put(put) = &ops[1] else {
            panic!("{ops:?}")
        };
        assert_eq!(put.id, a.id);
        assert_eq!(put.accepted_at_ms, 1_001_000);
        assert_eq!(put.expires_at_ms, Some(1_061_000));
        assert_eq!(
            ops[0],
            SpoolOp::Remember {
                key: "sip\ncall-1/1".into(),
                id: a.id,
                expires_ms: 1_001_000 + 600_000,
            }
        );
        // Presence is soft state: nothing to record.
        c.accept(
            T0,
            "sip",
            Inbound::new(
                Event::Presence(PresenceUpdate {
                    presence: presence_of("sip:alice@sip.test", "x"),
                }),
                addr("sip:alice@sip.test"),
                addr("sip:bob@xmpp.test"),
            ),
        )
        .unwrap();
        assert!(commit(&mut c)
            .iter()
            .all(|op| !matches!(op, SpoolOp::Put(_))));
        let e = c.poll_dispatch().unwrap();
        c.complete(
            Duration::from_secs(2),
            e.id,
            DeliveryOutcome::Failed {
                condition: Condition::ItemNotFound,
                text: None,
            },
        );
        let ops = c.take_ops();
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert_eq!(ops[0], SpoolOp::Remove(a.id));
        let SpoolOp::Put(note) = &ops[1] else {
            panic!("{ops:?}")
        };
        assert!(matches!(note.event, Event::Notification(_)));
        assert!(note.id > a.id);
        assert!(c.next_id() > note.id.0);
    }

    /// A spool written by one core and restored into another: per destination in id
    /// order, ahead of what arrives after the restart; ids keep growing; dedup keys are
    /// remembered; what expired while the gateway was down fails back at the first
    /// timer.
    #[test]
    fn restore_requeues_in_acceptance_order_with_dedup_and_expiry() {
        use crate::spool::{MemorySpool, Spool};
        let mut spool = MemorySpool::default();
        let mut first = core_with(CoreConfig {
            spool: true,
            clock_origin_ms: 1_000_000,
            message_expiry: Some(Duration::from_secs(60)),
            ..CoreConfig::default()
        });
        let mut ids = Vec::new();
        for (i, to) in ["sip:bob@xmpp.test", "sip:carol@xmpp.test"]
            .iter()
            .cycle()
            .take(6)
            .enumerate()
        {
            let inbound = Inbound {
                dedup_key: Some(format!("k{i}")),
                expires: (i == 5).then_some(Duration::from_secs(5)),
                ..msg(&format!("m{i}"), "sip:alice@sip.test", to)
            };
            ids.push(first.accept(T0, "sip", inbound).unwrap().id);
        }
        // m0 is in flight when the process dies; nothing finished.
        spool
            .commit(&commit(&mut first), first.next_id(), 1_000_000)
            .unwrap();
        first.poll_dispatch().unwrap();

        // The gateway comes back 10 s later: m5's 5 s lifetime is over.
        let mut second = core_with(CoreConfig {
            spool: true,
            clock_origin_ms: 1_010_000,
            ..CoreConfig::default()
        });
        let recovered = spool.recover(1_010_000).unwrap();
        assert_eq!(second.restore(T0, recovered), 6);
        assert!(
            second.take_ops().is_empty(),
            "restoring records nothing new"
        );
        let again = second
            .accept(
                T0,
                "sip",
                keyed("k3", msg("m3", "sip:alice@sip.test", "sip:carol@xmpp.test")),
            )
            .unwrap();
        assert_eq!((again.id, again.duplicate), (ids[3], true));
        let new = second
            .accept(
                T0,
                "sip",
                msg("new", "sip:alice@sip.test", "sip:bob@xmpp.test"),
            )
            .unwrap();
        assert!(new.id > ids[5]);
        second.handle_timeout(T0);
        let mut seen: HashMap<String, Vec<String>> = HashMap::new();
        let mut failures = Vec::new();
        loop {
            commit(&mut second);
            let batch: Vec<Envelope> = std::iter::from_fn(|| second.poll_dispatch()).collect();
            if batch.is_empty() {
                break;
            }
            for e in batch {
                if e.destination.as_ref() == "sip" {
                    failures.push(e.clone());
                } else {
                    seen.entry(e.recipient.to_string())
                        .or_default()
                        .push(body(&e));
                }
                second.complete(T0, e.id, DeliveryOutcome::Delivered);
            }
        }
        assert_eq!(seen["bob@xmpp.test"], ["m0", "m2", "m4", "new"]);
        assert_eq!(seen["carol@xmpp.test"], ["m1", "m3"]);
        assert_eq!(failures.len(), 1, "m5 expired while the gateway was down");
        let Event::Notification(n) = &failures[0].event else {
            panic!()
        };
        assert_eq!(n.message_id, ids[5].to_string());
    }

    /// A commit that failed: the envelopes leave their queues and dedup, as if never
    /// accepted; other operations stay for the next commit.
    #[test]
    fn withdrawn_envelopes_are_not_delivered_and_not_remembered() {
        let mut c = core_with(CoreConfig {
            spool: true,
            ..CoreConfig::default()
        });
        let keep = c
            .accept(
                T0,
                "sip",
                msg("keep", "sip:alice@sip.test", "sip:bob@xmpp.test"),
            )
            .unwrap();
        let kept_ops = commit(&mut c);
        let gone = c
            .accept(
                T0,
                "sip",
                keyed("k", msg("gone", "sip:alice@sip.test", "sip:bob@xmpp.test")),
            )
            .unwrap();
        let failed = c.take_ops();
        c.return_ops(failed);
        c.withdraw(&HashSet::from([gone.id]));
        assert!(c.take_ops().is_empty());
        assert_eq!(c.queued_total(), 1);
        assert!(c.not_durable.is_empty());
        let e = c.poll_dispatch().unwrap();
        assert_eq!(e.id, keep.id);
        assert_eq!(c.poll_dispatch(), None);
        let again = c
            .accept(
                T0,
                "sip",
                keyed("k", msg("gone", "sip:alice@sip.test", "sip:bob@xmpp.test")),
            )
            .unwrap();
        assert!(!again.duplicate);
        assert_eq!(kept_ops.len(), 1);
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
