//! An HTTP listener that cannot be exhausted (issue 13): at most `max_connections` open
//! connections and `max_per_ip` from one address — a connection over either gets a
//! `503` problem document and is closed, so the client is told —; a request head must
//! arrive within `header_timeout` of its first byte (no slow-loris); a connection with
//! no traffic either way for `idle_timeout` is closed. Used by the webhook API and the
//! admin listener through [`axum::serve`].

#![allow(clippy::disallowed_methods)] // a driver: header and idle timeouts

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one IP address at most.
    pub max_per_ip: usize,
    /// From the first byte of a request to the end of its head.
    pub header_timeout: Duration,
    /// No byte read or written for this long: the connection is closed.
    pub idle_timeout: Duration,
}

/// A TCP listener enforcing [`HttpLimits`].
#[derive(Debug)]
pub struct LimitedListener {
    listener: TcpListener,
    limits: HttpLimits,
    slots: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    name: &'static str,
}

impl LimitedListener {
    /// Wraps `listener`; `name` is the listener's name in logs.
    pub fn new(listener: TcpListener, limits: HttpLimits, name: &'static str) -> Self {
        LimitedListener {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            name,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limits.max_connections.max(1) - self.slots.available_permits()
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedIo, SocketAddr) {
        loop {
            let (stream, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, most likely: let some close first.
                    tracing::warn!(listener = self.name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                refuse(stream, self.name, "too many connections to this listener");
                continue;
            };
            let Some(ip) = IpSlot::take(&self.per_ip, addr.ip(), self.limits.max_per_ip) else {
                refuse(stream, self.name, "too many connections from your address");
                continue;
            };
            let _ = stream.set_nodelay(true);
            return (LimitedIo::new(stream, permit, ip, self.limits), addr);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Answers a connection over the limits with `503` and closes it (within a second; a
/// client that does not read is simply dropped).
fn refuse(mut stream: TcpStream, listener: &'static str, why: &'static str) {
    tracing::debug!(listener, why, "connection refused");
    tokio::spawn(async move {
        let body = format!(
            "{{\"type\":\"about:blank\",\"title\":\"Service Unavailable\",\"status\":503,\"condition\":\"resource-constraint\",\"detail\":\"{why}\"}}"
        );
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        })
        .await;
    });
}

/// One address's share of the connections, given back when dropped.
#[derive(Debug)]
pub struct IpSlot {
    table: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl IpSlot {
    fn take(table: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut t = table.lock().unwrap_or_else(PoisonError::into_inner);
        let n = t.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = t.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// Where a connection is in its current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests (or answering one).
    Idle,
    /// Reading a request head: the header timeout runs.
    Head,
    /// The head is in; the body and the handler are bounded by the handler itself.
    Body,
}

/// A connection under [`HttpLimits`].
#[derive(Debug)]
pub struct LimitedIo {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    _ip: IpSlot,
    limits: HttpLimits,
    timer: Pin<Box<Sleep>>,
    phase: Phase,
    /// How much of `\r\n\r\n` the last bytes of the head matched.
    matched: usize,
}

impl LimitedIo {
    fn new(
        stream: TcpStream,
        permit: OwnedSemaphorePermit,
        ip: IpSlot,
        limits: HttpLimits,
    ) -> Self {
        LimitedIo {
            stream,
            _permit: permit,
            _ip: ip,
            limits,
            timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            phase: Phase::Idle,
            matched: 0,
        }
    }

    fn on_read(&mut self, bytes: &[u8]) {
        if self.phase != Phase::Head {
            if self.phase == Phase::Idle {
                // A new request starts: its head has `header_timeout` to arrive.
                self.phase = Phase::Head;
                self.matched = 0;
                let at = Instant::now() + self.limits.header_timeout;
                self.timer.as_mut().reset(at);
            } else {
                self.touch();
                return;
            }
        }
        let (end, matched) = head_end(self.matched, bytes);
        self.matched = matched;
        if end {
            self.phase = Phase::Body;
            self.touch();
        }
    }

    fn on_write(&mut self) {
        self.phase = Phase::Idle;
        self.touch();
    }

    fn touch(&mut self) {
        let at = Instant::now() + self.limits.idle_timeout;
        self.timer.as_mut().reset(at);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.timer.as_mut().poll(cx).is_ready().then(|| {
            let what = if self.phase == Phase::Head {
                "the request head took too long"
            } else {
                "idle connection"
            };
            io::Error::new(io::ErrorKind::TimedOut, what)
        })
    }
}

/// Scans `bytes` for the end of a request head (`\r\n\r\n`), `matched` bytes of which the
/// previous bytes already matched: whether it ended, and how much is matched now.
fn head_end(mut matched: usize, bytes: &[u8]) -> (bool, usize) {
    const END: &[u8; 4] = b"\r\n\r\n";
    for &b in bytes {
        matched = if b == END[matched] {
            matched + 1
        } else if b == b'\r' {
            1
        } else {
            0
        };
        if matched == END.len() {
            return (true, 0);
        }
    }
    (false, matched)
}

impl AsyncRead for LimitedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.on_read(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.on_write();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9112_2_1_the_end_of_a_head_is_found_across_reads() {
        // (chunks, ends at chunk index)
        let cases: &[(&[&[u8]], Option<usize>)] = &[
            (&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], Some(0)),
            (&[b"GET / HTTP/1.1\r\nHost: x\r", b"\n\r", b"\n"], Some(2)),
            (&[b"GET / HTTP/1.1\r\n", b"Host: x\r\n"], None),
            (&[b"a\r\r\n\r\n"], Some(0)),
            (&[b"a\r\n\r", b"x\r\n\r\n"], Some(1)),
        ];
        for (chunks, want) in cases {
            let mut matched = 0;
            let mut ended = None;
            for (i, chunk) in chunks.iter().enumerate() {
                let (end, m) = head_end(matched, chunk);
                matched = m;
                if end {
                    ended = Some(i);
                    break;
                }
            }
            assert_eq!(ended, *want, "{chunks:?}");
        }
    }
}
