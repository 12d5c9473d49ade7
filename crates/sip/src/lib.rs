//! `cpim-sip` — the SIP/SIMPLE adapter: MESSAGE (RFC 3428), presence SUBSCRIBE/NOTIFY
//! (RFC 3856, RFC 6665) and PUBLISH (RFC 3903), mapped after RFC 7572 and RFC 7248.
//!
//! - [`headers`] and [`wire`] (pure): strict reading of received messages (RFC 3261,
//!   the RFC 4475 torture tests) and the responses to bad ones.
//! - [`translate`] (pure): SIP requests ⇄ broker events.

pub mod headers;
pub mod subscription;
pub mod transaction;
pub mod translate;
pub mod transport;
pub mod wire;
