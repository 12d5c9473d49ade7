//! Ports and waiting, for every test.

use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

/// A loopback port free for both UDP and TCP at the time of the call (a SIP listener
/// takes both).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = udp.local_addr().expect("local address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP")
}

/// Polls `done` every 50 ms until it holds; panics naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_binds_both_ways() {
        let port = free_port();
        let _udp = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        let _tcp = TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[tokio::test]
    async fn wait_until_returns_once_done_and_panics_after_the_timeout() {
        let mut n = 0;
        wait_until("three polls", Duration::from_secs(5), || {
            n += 1;
            n >= 3
        })
        .await;
        assert_eq!(n, 3);
        let late = tokio::spawn(wait_until("never", Duration::from_millis(120), || false));
        let err = late.await.unwrap_err();
        assert!(err.is_panic());
    }
}
