//! The one boundary between the broker and the protocol adapters.

use async_trait::async_trait;

pub use crate::context::AdapterContext;
use crate::envelope::{DeliveryOutcome, Envelope};
use crate::identity::AddressStyle;

/// How the broker may hand envelopes to an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// How many deliveries to the same destination address may be in flight at once.
    /// `1` keeps strict order through peers that may reorder concurrent requests (SIP
    /// requires it: RFC 3428 §8, one pending MESSAGE per destination). Other
    /// destinations always proceed in parallel.
    pub max_in_flight_per_destination: usize,
    /// The largest message (body bytes, or the `message/cpim` bytes when carried) the
    /// network can take; a larger one is refused at submission with `policy-violation`,
    /// so its sender hears at once (e.g. SIP without a stream transport, RFC 3428 §8).
    pub max_message_bytes: Option<usize>,
    /// Whether this network's watchers keep their presence subscriptions when the
    /// gateway restarts (their server holds them: XMPP rosters, applications); the
    /// broker then restores them from the spool and subscribes upstream again. `false`
    /// where the subscription lives in state the gateway loses (SIP dialogs): those
    /// watchers get `481` on their next refresh and subscribe again (RFC 6665 §4.1.2.4).
    pub resumes_subscriptions: bool,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            max_in_flight_per_destination: 1,
            max_message_bytes: None,
            resumes_subscriptions: true,
        }
    }
}

/// A protocol adapter: turns its wire protocol into [`crate::envelope::Inbound`]
/// submissions and delivers [`Envelope`]s back onto the wire.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// The adapter's configured name.
    fn name(&self) -> &str;

    /// How this network writes addresses.
    fn style(&self) -> AddressStyle;

    /// The domains this adapter owns (its users' home domains and the gateway domains
    /// foreign users appear under).
    fn domains(&self) -> Vec<String>;

    /// Delivery constraints; the default is one in flight per destination.
    fn policy(&self) -> DeliveryPolicy {
        DeliveryPolicy::default()
    }

    /// Delivers one envelope and reports the outcome. Called concurrently for
    /// different destinations; for one destination at most
    /// [`DeliveryPolicy::max_in_flight_per_destination`] at a time, in acceptance order.
    async fn deliver(&self, envelope: Envelope) -> DeliveryOutcome;
}
