//! `cpim-broker` — joins the protocol adapters.
//!
//! - [`adapter`]: the `Adapter` trait, its context and delivery policy.
//! - [`backoff`]: exponential backoff with jitter for adapters' reconnects and retries.
//! - [`envelope`]: what adapters submit ([`Inbound`]) and receive ([`Envelope`]).
//! - [`identity`]: who a user is, whatever network writes the address.
//! - [`map`]: the address map (home, alias and escape domains, explicit user entries):
//!   `resolve`, `present`, `explain`.
//! - [`core`]: the pure delivery core (routing, per-destination FIFO, bounded queues,
//!   dedup, loop guard, failure notifications), driven by [`runtime`].
//! - [`runtime`]: the tokio task around the core; [`Submitter`] for adapters.
//! - [`presence`]: the presence hub (pure): subscriptions, aggregation, cached state,
//!   coalesced fan-out, expiry, probes.
//! - [`spool`]: store and forward — the [`spool::Spool`] trait, the embedded
//!   [`spool::FileSpool`] journal.
//! - [`metrics`]: the per-adapter metrics, Prometheus text format.
//! - [`testing`]: an in-memory adapter for tests without networks.
//!
//! The broker never looks at a wire format and never matches on a protocol: adapters
//! are `dyn Adapter`, addresses are [`cpim::Address`] values written in an adapter's
//! [`AddressStyle`].

pub mod adapter;
pub mod backoff;
pub mod compact;
pub mod config;
pub mod context;
pub mod core;
pub mod correlation;
pub mod envelope;
pub mod identity;
pub mod map;
pub mod metrics;
pub mod presence;
pub mod runtime;
pub mod spool;
pub mod testing;

pub use adapter::{Adapter, AdapterContext, DeliveryPolicy};
pub use envelope::{Accepted, DeliveryOutcome, Envelope, Inbound, MessageId, Rejected};
pub use identity::{AddressStyle, Identity};
pub use map::AddressMap;
pub use runtime::{Broker, BrokerHandle, PendingAnswer, StateStore, Submitter};
