//! `cpim-broker` — joins the protocol adapters.
//!
//! - [`identity`]: who a user is, whatever network writes the address.
//!
//! The broker never looks at a wire format and never matches on a protocol: adapters
//! are `dyn Adapter`, addresses are [`cpim::Address`] values written in an adapter's
//! [`identity::AddressStyle`].

pub mod identity;
pub mod map;

pub use identity::{AddressStyle, Identity};
