//! SIP transports: UDP sockets, TCP and TLS streams (RFC 3261 §18), with framing by
//! `Content-Length` on streams and CRLF keep-alives (RFC 5626 §3.5.1). Everything
//! received is handed to one [`Sink`] with where it came from; everything sent goes
//! through [`Transports::send`].

#![allow(clippy::disallowed_methods)] // a driver: connection timeouts

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::wire::MAX_MESSAGE_BYTES;

/// A SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// The Via / `transport=` token.
    pub fn token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// `true` for stream transports (no retransmissions, RFC 3261 §17.1.2.2).
    pub fn reliable(self) -> bool {
        self != Transport::Udp
    }
}

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The transport.
    pub transport: Transport,
    /// The remote socket address.
    pub addr: SocketAddr,
}

/// What the transports read: the bytes of one message, where they came from, and
/// whether they could be framed.
#[derive(Debug)]
pub struct Received {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The sender.
    pub peer: Peer,
    /// How the bytes were framed.
    pub framing: Framing,
}

/// How the bytes of a [`Received`] were framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One whole message (a datagram, or a stream message by its `Content-Length`).
    Whole,
    /// Stream input without a usable `Content-Length`; the connection is closed after
    /// an answer (RFC 3261 §18.3).
    Unframeable,
    /// A stream message announcing a body larger than the gateway takes (its header
    /// section and what came of the body); answered 413, the connection closed.
    BodyTooLarge,
    /// A stream message whose header section never ended within the limit; answered
    /// 513 if its start can be read, the connection closed.
    HeadersTooLarge,
}

/// Receives what the transports read.
pub type Sink = mpsc::Sender<Received>;

/// A TLS server configuration, when a TLS listener is configured.
pub type TlsAcceptor = tokio_rustls::TlsAcceptor;
/// A TLS client for outbound `sips:`/`transport=tls` connections.
pub type TlsConnector = tokio_rustls::TlsConnector;

/// The open sockets and connections of one adapter.
#[derive(Clone)]
pub struct Transports {
    inner: Arc<Inner>,
}

struct Inner {
    limits: StreamLimits,
    /// Accepted stream connections open now: in all, and per remote IP.
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    udp: Vec<Arc<UdpSocket>>,
    tcp_local: Option<SocketAddr>,
    tls_local: Option<SocketAddr>,
    streams: Mutex<HashMap<Peer, mpsc::Sender<Vec<u8>>>>,
    /// The identities the server certificate of each outbound TLS connection named
    /// (RFC 5922 §7.1), so that a connection is reused only for a domain it names.
    tls_names: Mutex<HashMap<Peer, crate::certname::SubjectNames>>,
    sink: Sink,
    tls_client: Option<TlsConnector>,
}

impl std::fmt::Debug for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transports")
            .field("udp", &self.inner.udp.len())
            .field("tcp", &self.inner.tcp_local)
            .field("tls", &self.inner.tls_local)
            .finish_non_exhaustive()
    }
}

/// One listener to open.
#[derive(Debug, Clone)]
pub struct Listen {
    /// The transport.
    pub transport: Transport,
    /// The local address (port 0: any free port).
    pub address: SocketAddr,
}

const STREAM_QUEUE: usize = 1024;

/// Limits on the stream (TCP, TLS) connections peers open to the listeners, so that idle
/// or slow peers cannot take every file descriptor or hold memory with unfinished
/// messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Accepted connections open at once, over all stream listeners; beyond it a new
    /// connection is closed at once.
    pub max_connections: usize,
    /// Accepted connections open at once from one IP address.
    pub max_per_ip: usize,
    /// A connection on which nothing arrives for this long is closed (CRLF keep-alives,
    /// RFC 5626, count as traffic).
    pub idle_timeout: Duration,
    /// A message begun must be complete (headers and body) within this time, or the
    /// connection is closed.
    pub message_timeout: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_connections: 1024,
            max_per_ip: 64,
            idle_timeout: Duration::from_secs(600),
            message_timeout: Duration::from_secs(10),
        }
    }
}

/// One admitted connection; gives its place back when dropped.
struct Slot {
    inner: Arc<Inner>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// Asks for `bytes` of receive and send buffer on `socket` and logs what the kernel
/// granted (it caps the request at `net.core.rmem_max`/`wmem_max`); a refusal is logged,
/// not fatal.
fn set_udp_buffers(socket: &UdpSocket, bytes: usize) {
    let sock = socket2::SockRef::from(socket);
    if let Err(error) = sock.set_recv_buffer_size(bytes) {
        tracing::warn!(%error, bytes, "the UDP receive buffer could not be set");
    }
    if let Err(error) = sock.set_send_buffer_size(bytes) {
        tracing::warn!(%error, bytes, "the UDP send buffer could not be set");
    }
    let granted = sock.recv_buffer_size().unwrap_or(0);
    if granted < bytes {
        tracing::info!(
            asked = bytes,
            granted,
            "UDP receive buffer capped by the kernel (raise net.core.rmem_max)"
        );
    }
}

impl Transports {
    /// Binds every listener and starts reading. Returns the transports and the bound
    /// addresses in the order given. They keep reading until the process ends, so that
    /// responses to requests in flight still arrive while the gateway drains.
    pub async fn bind(
        listen: &[Listen],
        limits: StreamLimits,
        udp_buffer_bytes: usize,
        tls_acceptor: Option<TlsAcceptor>,
        tls_client: Option<TlsConnector>,
        sink: Sink,
    ) -> io::Result<(Transports, Vec<(Transport, SocketAddr)>)> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut bound = Vec::new();
        let mut tcp_local = None;
        let mut tls_local = None;
        for l in listen {
            match l.transport {
                Transport::Udp => {
                    let socket = Arc::new(UdpSocket::bind(l.address).await?);
                    set_udp_buffers(&socket, udp_buffer_bytes);
                    let local = socket.local_addr()?;
                    bound.push((Transport::Udp, local));
                    udp.push(socket);
                }
                Transport::Tcp | Transport::Tls => {
                    let listener = TcpListener::bind(l.address).await?;
                    let local = listener.local_addr()?;
                    if l.transport == Transport::Tcp {
                        tcp_local.get_or_insert(local);
                    } else {
                        if tls_acceptor.is_none() {
                            return Err(io::Error::other(
                                "a TLS listener needs a certificate and a private key",
                            ));
                        }
                        tls_local.get_or_insert(local);
                    }
                    bound.push((l.transport, local));
                    tcp.push((l.transport, listener));
                }
            }
        }
        let transports = Transports {
            inner: Arc::new(Inner {
                limits,
                open: Mutex::new((0, HashMap::new())),
                udp,
                tcp_local,
                tls_local,
                streams: Mutex::new(HashMap::new()),
                sink,
                tls_names: Mutex::new(HashMap::new()),
                tls_client,
            }),
        };
        for socket in &transports.inner.udp {
            tokio::spawn(transports.clone().udp_loop(socket.clone()));
        }
        for (transport, listener) in tcp {
            tokio::spawn(
                transports
                    .clone()
                    .accept_loop(transport, listener, tls_acceptor.clone()),
            );
        }
        Ok((transports, bound))
    }

    /// The local address to put in Via/Contact for `transport`.
    pub fn local(&self, transport: Transport) -> Option<SocketAddr> {
        match transport {
            Transport::Udp => self.inner.udp.first().and_then(|s| s.local_addr().ok()),
            Transport::Tcp => self.inner.tcp_local.or_else(|| self.local(Transport::Udp)),
            Transport::Tls => self.inner.tls_local.or_else(|| self.local(Transport::Tcp)),
        }
    }

    /// `true` when the adapter can send over `transport`.
    pub fn can_send(&self, transport: Transport) -> bool {
        match transport {
            Transport::Udp => !self.inner.udp.is_empty(),
            Transport::Tcp => true,
            Transport::Tls => self.inner.tls_client.is_some(),
        }
    }

    /// Sends one message: over UDP from the first socket, over a stream on the open
    /// connection to `peer` or a new one.
    pub async fn send(&self, peer: Peer, bytes: Vec<u8>) -> io::Result<()> {
        self.send_for(peer, None, bytes).await
    }

    /// Whether the verified certificate of the TLS connection `peer` (a client
    /// certificate on an accepted connection, the server's on one the gateway opened)
    /// names the SIP domain `domain` (RFC 5922 §7.3).
    pub fn certified_for(&self, peer: Peer, domain: &str) -> bool {
        peer.transport == Transport::Tls
            && self
                .inner
                .tls_names
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&peer)
                .is_some_and(|names| names.names(domain))
    }

    /// [`Transports::send`] for a request to the SIP domain `domain`: over TLS, the
    /// server's certificate must name it (RFC 5922 §7.2; SNI = the domain), on a new
    /// connection or on the open one; otherwise the error is of kind `InvalidData`.
    pub async fn send_for(
        &self,
        peer: Peer,
        domain: Option<&str>,
        bytes: Vec<u8>,
    ) -> io::Result<()> {
        let domain = domain.filter(|_| peer.transport == Transport::Tls);
        match peer.transport {
            Transport::Udp => {
                let socket = self
                    .inner
                    .udp
                    .first()
                    .ok_or_else(|| io::Error::other("no UDP listener to send from"))?;
                socket.send_to(&bytes, peer.addr).await.map(|_| ())
            }
            Transport::Tcp | Transport::Tls => {
                let existing = self
                    .inner
                    .streams
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&peer)
                    .cloned();
                let named = |domain: &str| {
                    self.inner
                        .tls_names
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&peer)
                        .map(|names| names.names(domain))
                };
                let tx = match (existing, domain) {
                    (Some(tx), None) if !tx.is_closed() => tx,
                    (Some(tx), Some(domain)) if !tx.is_closed() => match named(domain) {
                        Some(true) => tx,
                        Some(false) => {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!(
                                    "the TLS server at {} is not certified for {domain} (RFC 5922)",
                                    peer.addr
                                ),
                            ))
                        }
                        // A connection the peer opened: not verified for anything.
                        None => self.connect(peer, Some(domain)).await?,
                    },
                    _ => self.connect(peer, domain).await?,
                };
                tx.send(bytes)
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "connection closed"))
            }
        }
    }

    async fn connect(&self, peer: Peer, domain: Option<&str>) -> io::Result<mpsc::Sender<Vec<u8>>> {
        let stream = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            TcpStream::connect(peer.addr),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        if peer.transport == Transport::Tls {
            let connector = self
                .inner
                .tls_client
                .clone()
                .ok_or_else(|| io::Error::other("TLS is not configured"))?;
            let name = match domain {
                Some(domain) => rustls_pki_types::ServerName::try_from(domain.to_owned())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
                None => rustls_pki_types::ServerName::IpAddress(peer.addr.ip().into()),
            };
            let tls = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                connector.connect(name, stream),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
            let names = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| crate::certname::subject_names(cert.as_ref()).ok())
                .unwrap_or_default();
            self.inner
                .tls_names
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(peer, names);
            Ok(self.clone().attach(peer, tls, None))
        } else {
            Ok(self.clone().attach(peer, stream, None))
        }
    }

    async fn udp_loop(self, socket: Arc<UdpSocket>) {
        // Reading goes on while the gateway stops: responses to requests in flight must
        // still arrive during the broker's drain; the process exit ends it.
        let mut buf = vec![0u8; 65_536];
        loop {
            let received = socket.recv_from(&mut buf).await;
            match received {
                Ok((n, from)) => {
                    let bytes = &buf[..n];
                    if bytes.iter().all(u8::is_ascii_whitespace) {
                        continue; // keep-alive
                    }
                    let peer = Peer {
                        transport: Transport::Udp,
                        addr: from,
                    };
                    let received = Received {
                        bytes: bytes.to_vec(),
                        peer,
                        framing: Framing::Whole,
                    };
                    if self.inner.sink.send(received).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "UDP receive failed"),
            }
        }
    }

    async fn accept_loop(
        self,
        transport: Transport,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
    ) {
        loop {
            let accepted = listener.accept().await;
            let (stream, addr) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = self.admit(addr.ip()) else {
                tracing::warn!(peer = %addr, limit = self.inner.limits.max_connections, per_ip = self.inner.limits.max_per_ip, "SIP stream connection refused: too many open");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let peer = Peer { transport, addr };
            match (transport, &tls) {
                (Transport::Tls, Some(acceptor)) => {
                    let acceptor = acceptor.clone();
                    let this = self.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(
                            std::time::Duration::from_secs(10),
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(tls)) => {
                                // RFC 5922 §7.3: what a verified client certificate
                                // names is who the peer may speak for.
                                if let Some(names) = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|certs| certs.first())
                                    .and_then(|cert| {
                                        crate::certname::subject_names(cert.as_ref()).ok()
                                    })
                                {
                                    this.inner
                                        .tls_names
                                        .lock()
                                        .unwrap_or_else(PoisonError::into_inner)
                                        .insert(peer, names);
                                }
                                this.attach(peer, tls, Some(slot));
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(peer = %addr, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
                        }
                    });
                }
                _ => {
                    self.clone().attach(peer, stream, Some(slot));
                }
            }
        }
    }

    /// A place for one more accepted connection from `ip`, if the limits allow it.
    fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let limits = self.inner.limits;
        let mut open = self
            .inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let from_ip = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= limits.max_connections || from_ip >= limits.max_per_ip {
            return None;
        }
        open.0 += 1;
        open.1.insert(ip, from_ip + 1);
        Some(Slot {
            inner: self.inner.clone(),
            ip,
        })
    }

    /// Registers a connected stream: a writer task fed by the returned sender and a
    /// reader task that frames messages into the sink. `slot` is the accepted
    /// connection's place under the limits (none for connections the gateway opened).
    fn attach<S>(self, peer: Peer, stream: S, slot: Option<Slot>) -> mpsc::Sender<Vec<u8>>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
        self.inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer, tx.clone());
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
        });
        let this = self.clone();
        let pong = tx.clone();
        let limits = self.inner.limits;
        tokio::spawn(async move {
            let _slot = slot;
            let mut buf: Vec<u8> = Vec::with_capacity(8192);
            let mut chunk = vec![0u8; 16_384];
            // When the unfinished message in `buf` began.
            let mut begun: Option<Instant> = None;
            'read: loop {
                let wait = match begun {
                    Some(at) => limits.message_timeout.saturating_sub(at.elapsed()),
                    None => limits.idle_timeout,
                };
                let n = match tokio::time::timeout(wait, reader.read(&mut chunk)).await {
                    Ok(Ok(0) | Err(_)) => break,
                    Ok(Ok(n)) => n,
                    Err(_) => {
                        tracing::debug!(peer = %peer.addr, unfinished = begun.is_some(), "SIP stream connection closed: idle or unfinished message");
                        break;
                    }
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match next_stream_message(&mut buf) {
                        StreamFrame::Incomplete => break,
                        StreamFrame::Ping => {
                            let _ = pong.try_send(b"\r\n".to_vec());
                        }
                        StreamFrame::Message(bytes) => {
                            let received = Received {
                                bytes,
                                peer,
                                framing: Framing::Whole,
                            };
                            if this.inner.sink.send(received).await.is_err() {
                                break 'read;
                            }
                        }
                        StreamFrame::Broken(bytes, framing) => {
                            // Unframeable: let the front end answer if it can, then close
                            // (RFC 3261 §18.3: the stream cannot be resynchronised).
                            let received = Received {
                                bytes,
                                peer,
                                framing,
                            };
                            let _ = this.inner.sink.send(received).await;
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            break 'read;
                        }
                    }
                }
                // Line ends alone are keep-alives in the making, not a message.
                if buf.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                    begun = None;
                } else if begun.is_none() {
                    begun = Some(Instant::now());
                }
            }
            let mut streams = this
                .inner
                .streams
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if streams.get(&peer).is_some_and(|t| t.same_channel(&pong)) {
                streams.remove(&peer);
                drop(streams);
                this.inner
                    .tls_names
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&peer);
            }
        });
        tx
    }
}

/// Where a SIP URI is reached without a proxy (RFC 3263 without NAPTR/SRV): its
/// `transport` parameter (or TLS for `sips:`, else UDP), its port (or 5060/5061), and the
/// first address its host resolves to.
pub async fn resolve(uri: &cpim::address::SipUri) -> io::Result<Peer> {
    let explicit = uri
        .param("transport")
        .flatten()
        .map(str::to_ascii_lowercase);
    let transport = match explicit.as_deref() {
        Some("tcp") => Transport::Tcp,
        Some("tls") => Transport::Tls,
        _ if uri.is_secure() => Transport::Tls,
        _ => Transport::Udp,
    };
    let port = uri.port().unwrap_or(if transport == Transport::Tls {
        5061
    } else {
        5060
    });
    let host = uri
        .host()
        .as_str()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(|addr| Peer { transport, addr })
        .ok_or_else(|| io::Error::other(format!("cannot resolve {host}")))
}

/// One step of stream framing.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamFrame {
    /// More bytes are needed.
    Incomplete,
    /// A CRLFCRLF keep-alive ping (answer CRLF).
    Ping,
    /// One complete message.
    Message(Vec<u8>),
    /// Bytes that cannot be framed, and why (no usable `Content-Length`, or too large).
    Broken(Vec<u8>, Framing),
}

/// Takes the next message off the front of a stream buffer (RFC 3261 §18.3).
pub fn next_stream_message(buf: &mut Vec<u8>) -> StreamFrame {
    if buf.starts_with(b"\r\n\r\n") {
        buf.drain(..4);
        return StreamFrame::Ping;
    }
    let mut skip = 0;
    while buf[skip..].starts_with(b"\r\n") && buf.len() - skip > 2 {
        skip += 2;
    }
    if buf[skip..] == *b"\r\n" || buf[skip..] == *b"\r" {
        return StreamFrame::Incomplete;
    }
    buf.drain(..skip);
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_MESSAGE_BYTES {
            return StreamFrame::Broken(std::mem::take(buf), Framing::HeadersTooLarge);
        }
        return StreamFrame::Incomplete;
    };
    let head_len = end + 4;
    // RFC 3261 §18.3: a stream message MUST carry Content-Length.
    let length = match content_length(&buf[..end]) {
        Ok(Some(n)) => n,
        Ok(None) | Err(()) => {
            return StreamFrame::Broken(std::mem::take(buf), Framing::Unframeable)
        }
    };
    if length > MAX_MESSAGE_BYTES {
        return StreamFrame::Broken(std::mem::take(buf), Framing::BodyTooLarge);
    }
    if buf.len() < head_len + length {
        return StreamFrame::Incomplete;
    }
    StreamFrame::Message(buf.drain(..head_len + length).collect())
}

/// The `Content-Length` of a header section: `Ok(None)` when absent, `Err` when
/// unusable (not a number, or several).
fn content_length(head: &[u8]) -> Result<Option<usize>, ()> {
    let text = String::from_utf8_lossy(head);
    let mut found = None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let n = crate::headers::parse_decimal(value.trim())
                .and_then(|n| usize::try_from(n).ok())
                .ok_or(())?;
            if found.replace(n).is_some() {
                return Err(());
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3261_18_3_stream_framing_by_content_length() {
        let mut buf = b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabcMESSAGE sip:b SIP/2.0\r\nl: 2\r\n\r\nx".to_vec();
        assert_eq!(next_stream_message(&mut buf), StreamFrame::Ping);
        let StreamFrame::Message(m) = next_stream_message(&mut buf) else {
            panic!()
        };
        assert!(m.ends_with(b"\r\n\r\nabc"));
        assert_eq!(next_stream_message(&mut buf), StreamFrame::Incomplete);
        buf.push(b'y');
        let StreamFrame::Message(m) = next_stream_message(&mut buf) else {
            panic!()
        };
        assert!(m.ends_with(b"xy"));
        assert!(buf.is_empty());
        let mut bad = b"MESSAGE sip:b SIP/2.0\r\nContent-Length: -1\r\n\r\n".to_vec();
        assert!(matches!(
            next_stream_message(&mut bad),
            StreamFrame::Broken(_, Framing::Unframeable)
        ));
        let mut none = b"M sip:b SIP/2.0\r\nVia: x\r\n\r\nbody".to_vec();
        assert!(matches!(
            next_stream_message(&mut none),
            StreamFrame::Broken(_, Framing::Unframeable)
        ));
        let mut two = b"M sip:b SIP/2.0\r\nContent-Length: 1\r\nl: 1\r\n\r\nx".to_vec();
        assert!(matches!(
            next_stream_message(&mut two),
            StreamFrame::Broken(_, Framing::Unframeable)
        ));
        let mut big = format!(
            "MESSAGE sip:b SIP/2.0\r\nContent-Length: {}\r\n\r\nx",
            MAX_MESSAGE_BYTES + 1
        )
        .into_bytes();
        assert!(matches!(
            next_stream_message(&mut big),
            StreamFrame::Broken(_, Framing::BodyTooLarge)
        ));
        let mut endless = b"MESSAGE sip:b SIP/2.0\r\nX: ".to_vec();
        endless.resize(MAX_MESSAGE_BYTES + 1, b'x');
        assert!(matches!(
            next_stream_message(&mut endless),
            StreamFrame::Broken(_, Framing::HeadersTooLarge)
        ));
        let mut crlf = b"\r\n".to_vec();
        assert_eq!(next_stream_message(&mut crlf), StreamFrame::Incomplete);
    }
}
