//! What the workspace's integration tests share: real peers started on loopback, on
//! ports picked at start, and stopped by the test that started them.
//!
//! - [`xmpp`]: Prosody, slixmpp clients (`xmpp_client.py`, run by `/usr/bin/python3`),
//!   a raw XEP-0114 component socket;
//! - [`dnsmasq`]: dnsmasq as the DNS server of test domains;
//! - [`ejabberd`]: ejabberd with a `hosts:` component listener;
//! - [`sipp`]: SIPp scenarios (`crates/sip/tests/sipp/`);
//! - [`kamailio`]: Kamailio as the record-routing proxy and registrar in front of the
//!   gateway;
//! - [`pki`]: a test CA and certificates made with openssl;
//! - [`net`]: free loopback ports and `wait_until`.
//!
//! A dev-dependency only; it depends on no crate of the workspace, so that every crate's
//! tests can use it without a cycle.

#![allow(clippy::disallowed_methods)] // test peers wait with deadlines
#![allow(clippy::unwrap_used)]

pub mod dnsmasq;
pub mod ejabberd;
pub mod kamailio;
pub mod net;
pub mod pki;
mod process;
pub mod sipp;
pub mod xmpp;
