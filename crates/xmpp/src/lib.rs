//! `cpim-xmpp` — the XMPP adapter: an external component (XEP-0114) of a real XMPP
//! server (Prosody, ejabberd).
//!
//! - [`translate`] (pure): stanzas ⇄ broker events, after RFC 7572 (messages) and RFC 7248
//!   (presence), XEP-0085 chat states, XEP-0184 receipts, XEP-0333 markers.
//! - [`guard`] (pure): limits on depth, width and size applied to the stream's bytes
//!   before any parser builds a tree of them.
//! - [`confirm`] (pure): what a link wrote and the server has not confirmed; the ids of
//!   the links' own iqs.
//! - [`driver`]: the component connections, keepalive, reconnect, outbound queue; the
//!   [`driver::XmppAdapter`] that the broker delivers to.

pub mod caps;
pub mod confirm;
pub mod driver;
pub mod guard;
pub mod resources;
pub mod settings;
pub mod translate;

pub use driver::{XmppAdapter, XmppConfig};
pub use settings::XmppSettings;
