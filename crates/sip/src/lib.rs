//! `cpim-sip` — the SIP/SIMPLE adapter: MESSAGE (RFC 3428), presence SUBSCRIBE/NOTIFY
//! (RFC 3856, RFC 6665) and PUBLISH (RFC 3903), mapped after RFC 7572 and RFC 7248.
//!
//! Pure parts, tested by table and with a fake clock:
//! - [`headers`] and [`wire`]: strict reading of received messages (RFC 3261, the
//!   RFC 4475 torture tests), the responses to them and the requests the gateway sends;
//! - [`translate`]: SIP requests ⇄ broker events;
//! - [`transaction`]: RFC 3261 §17 non-INVITE transaction timers;
//! - [`subscription`]: presence dialogs as notifier and as subscriber, publications;
//! - [`auth`]: digest authentication and the minimal registrar;
//! - [`encoding`]: `Content-Encoding` of received bodies.
//!
//! Run time: [`transport`] (UDP, TCP, TLS) and [`driver`] (the [`SipAdapter`]).
//!
//! `rsipstack` (pinned) provides the digest computation and is the reference codec the
//! tests check the gateway's own requests and responses against. Its transport layer is
//! not used: it drops what its parser rejects without an answer (RFC 4475 wants a 400,
//! or a 501 for an unknown method, which it cannot parse at all).

pub mod auth;
pub mod authorization;
pub mod certname;
pub mod dialog;
pub mod driver;
pub mod encoding;
pub mod headers;
pub mod locate;
pub mod presence;
pub mod settings;
pub mod subscription;
pub mod transaction;
pub mod translate;
pub mod transport;
pub mod trust;
pub mod winfo;
pub mod wire;

pub use driver::{SipAdapter, SipConfig};
pub use settings::SipSettings;
