//! What an adapter's settings are checked against besides their own rules: the gateway's
//! view of every adapter, which sees a domain owned twice or a socket bound twice.

use std::net::SocketAddr;

use crate::config::{Domain, KeyPath};

/// The kind of a listening socket, for clashes between listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Socket {
    /// A UDP socket.
    Udp,
    /// A TCP listener.
    Tcp,
}

/// Where an adapter's settings report what they find and claim, in file order. The
/// gateway implements it once for all adapters, so that `check` and `run` refuse the same
/// files and a collision between two adapters is reported where it is.
pub trait Checks {
    /// A broken rule at `path`, with how to fix it.
    fn fail(&mut self, path: KeyPath, message: String, hint: &str);

    /// The adapter `adapter` owns `domain` (listed at `path`): messages to its users are
    /// routed to it. Reported if another entry owns it already.
    fn own(&mut self, adapter: &str, path: KeyPath, domain: &Domain);

    /// A listener at `address` (`what`, for messages), configured at `path`. Reported if
    /// another listener takes the same socket.
    fn bind(&mut self, path: KeyPath, socket: Socket, address: SocketAddr, what: String);

    /// Reports `what` as empty when `items` is.
    fn require_some(&mut self, empty: bool, path: KeyPath, what: String, example: &str) {
        if empty {
            self.fail(
                path,
                format!("{what} must list at least one entry"),
                example,
            );
        }
    }
}
