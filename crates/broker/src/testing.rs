//! An in-memory adapter for tests: records what it is given, answers as told.
//!
//! It lets the broker — and later each protocol adapter — be tested without a network:
//! the far side of a test is a `MemoryAdapter` that delivers, fails, asks for a retry or
//! stalls on command.

#![allow(clippy::disallowed_methods)] // test support: waits with deadlines

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use cpim::Condition;

use crate::adapter::{Adapter, DeliveryPolicy};
use crate::envelope::{DeliveryOutcome, Envelope};
use crate::identity::AddressStyle;
use crate::map::{AdapterMapConfig, AddressMap, MapConfig};

/// An address map of plain networks: each `(adapter, style, home domain)` owns its domain,
/// and users keep their `user@domain` on every network (no aliases, no escaping).
pub fn plain_map(networks: &[(&str, AddressStyle, &str)]) -> AddressMap {
    let adapters = networks
        .iter()
        .map(|(name, style, home)| AdapterMapConfig {
            name: (*name).to_owned(),
            style: *style,
            home_domains: vec![(*home).to_owned()],
            alias_domains: Vec::new(),
            escape_domains: Vec::new(),
        })
        .collect();
    let config = MapConfig {
        adapters,
        users: Vec::new(),
        any_domain: None,
    };
    // Test helper: a bad list of networks is the test's own mistake.
    AddressMap::new(config).unwrap_or_else(|e| panic!("invalid test map: {e}"))
}

/// How a [`MemoryAdapter`] answers a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Report `Delivered`.
    Deliver,
    /// Report `Accepted` (handed on without confirmation).
    Accept,
    /// Report `Failed` with this condition.
    Fail(Condition),
    /// Report `RetryLater` with this delay.
    RetryLater(Duration),
    /// Never answer until [`MemoryAdapter::release`] (the delivery hangs).
    Stall,
    /// Panic inside `deliver` (to test that the broker survives a broken adapter).
    Panic,
}

#[derive(Debug, Default)]
struct State {
    received: Vec<Envelope>,
    scripted: VecDeque<Behavior>,
    default: Option<Behavior>,
    delay: Duration,
}

/// The in-memory adapter. Cheap to clone; clones share the record.
#[derive(Debug, Clone)]
pub struct MemoryAdapter {
    name: String,
    style: AddressStyle,
    domains: Vec<String>,
    policy: DeliveryPolicy,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    release: Arc<Notify>,
}

impl MemoryAdapter {
    /// An adapter that delivers everything.
    pub fn new(name: &str, style: AddressStyle, domains: &[&str]) -> Self {
        MemoryAdapter {
            name: name.to_owned(),
            style,
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            policy: DeliveryPolicy::default(),
            state: Arc::new(Mutex::new(State::default())),
            changed: Arc::new(Notify::new()),
            release: Arc::new(Notify::new()),
        }
    }

    /// With another delivery policy.
    pub fn with_policy(mut self, policy: DeliveryPolicy) -> Self {
        self.policy = policy;
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How every later delivery is answered (after any scripted answers).
    pub fn set_behavior(&self, behavior: Behavior) {
        self.state().default = Some(behavior);
    }

    /// Answers the next deliveries in this order, then falls back to the behavior.
    pub fn script(&self, answers: impl IntoIterator<Item = Behavior>) {
        self.state().scripted.extend(answers);
    }

    /// Waits this long before answering each delivery.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// Lets every stalled delivery answer `Delivered`.
    pub fn release(&self) {
        self.release.notify_waiters();
    }

    /// Everything delivered to this adapter so far (including failed attempts).
    pub fn received(&self) -> Vec<Envelope> {
        self.state().received.clone()
    }

    /// How many deliveries were attempted.
    pub fn count(&self) -> usize {
        self.state().received.len()
    }

    /// Waits until at least `n` deliveries were attempted or `timeout` passed; returns
    /// the count.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let count = self.count();
            if count >= n {
                return count;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count();
            }
        }
    }
}

#[async_trait]
impl Adapter for MemoryAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn style(&self) -> AddressStyle {
        self.style
    }

    fn domains(&self) -> Vec<String> {
        self.domains.clone()
    }

    fn policy(&self) -> DeliveryPolicy {
        self.policy
    }

    async fn deliver(&self, envelope: Envelope) -> DeliveryOutcome {
        // Registered before the delivery becomes visible, so a `release` that follows a
        // `wait_for` cannot be missed.
        let released = self.release.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        let (behavior, delay) = {
            let mut state = self.state();
            state.received.push(envelope);
            let behavior = state
                .scripted
                .pop_front()
                .or_else(|| state.default.clone())
                .unwrap_or(Behavior::Deliver);
            (behavior, state.delay)
        };
        self.changed.notify_waiters();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match behavior {
            Behavior::Deliver => DeliveryOutcome::Delivered,
            Behavior::Accept => DeliveryOutcome::Accepted,
            Behavior::Fail(condition) => DeliveryOutcome::Failed {
                condition,
                text: Some(format!("{} told to fail", self.name)),
            },
            Behavior::RetryLater(after) => DeliveryOutcome::RetryLater { after },
            Behavior::Stall => {
                released.await;
                DeliveryOutcome::Delivered
            }
            Behavior::Panic => panic!("{} told to panic", self.name),
        }
    }
}
