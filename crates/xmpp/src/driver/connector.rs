//! The component stream's transport: plain TCP with Nagle off, its received bytes
//! through a [`Guard`] before any parser.

use std::pin::Pin;
use std::task::{Context, Poll};

use sasl::common::ChannelBinding;
use tokio::io::{AsyncRead, AsyncWrite, BufStream, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::xmlstream::{initiate_stream, PendingFeaturesRecv, StreamHeader, Timeouts};
use xmpp_parsers::stanza::Stanza;

use cpim::Condition;
use cpim_broker::metrics::AdapterMetrics;

use super::{element, to_stanza, NS};
use crate::guard::{Guard, Limits, Refused};
use crate::translate::{self, StanzaFault};

/// Plain TCP to the server (XEP-0114 on loopback or a private network) with Nagle's
/// algorithm off: the ack-barrier ping written behind a stanza must not wait for the
/// server's delayed ACK (40 ms per delivery otherwise). What the server sends goes
/// through a [`Guard`] before the parser.
#[derive(Debug, Clone)]
pub(super) struct NoDelayConnector {
    pub(super) addr: std::net::SocketAddr,
    pub(super) limits: Limits,
    pub(super) metrics: AdapterMetrics,
    /// Where the error replies to stanzas the guard kept from the parser go.
    pub(super) refusals: mpsc::UnboundedSender<Stanza>,
}

impl ServerConnector for NoDelayConnector {
    type Stream = BufStream<Guarded<TcpStream>>;

    async fn connect(
        &self,
        jid: &xmpp_parsers::jid::Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let tcp = Guarded {
            inner: tcp,
            guard: Guard::new(self.limits),
            raw: vec![0; 16 * 1024].into_boxed_slice(),
            out: Vec::new(),
            at: 0,
            refused: Vec::new(),
            metrics: self.metrics.clone(),
            refusals: self.refusals.clone(),
        };
        let header = StreamHeader {
            to: Some(std::borrow::Cow::Borrowed(jid.domain().as_str())),
            from: None,
            id: None,
        };
        let pending = initiate_stream(BufStream::new(tcp), ns, header, timeouts).await?;
        Ok((pending, ChannelBinding::None))
    }
}

/// A stream whose received bytes pass a [`Guard`]: the parser reads only stanzas within
/// the limits; each one beyond them is answered with `policy-violation` (through the
/// link's refusal queue) and the stream goes on. XML a stream may not carry ends it (a
/// read error). Writes pass unchanged.
pub(super) struct Guarded<S> {
    inner: S,
    guard: Guard,
    /// Bytes read from `inner`, before the guard.
    raw: Box<[u8]>,
    /// Bytes the guard let through; `out[at..]` not yet read by the parser.
    out: Vec<u8>,
    at: usize,
    refused: Vec<Refused>,
    pub(super) metrics: AdapterMetrics,
    pub(super) refusals: mpsc::UnboundedSender<Stanza>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.at < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.at);
                buf.put_slice(&this.out[this.at..this.at + n]);
                this.at += n;
                return Poll::Ready(Ok(()));
            }
            this.out.clear();
            this.at = 0;
            let mut raw = ReadBuf::new(&mut this.raw);
            match Pin::new(&mut this.inner).poll_read(cx, &mut raw) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) => {}
            }
            let read = raw.filled().len();
            if read == 0 {
                // End of stream.
                return Poll::Ready(Ok(()));
            }
            let fed = this
                .guard
                .feed(&this.raw[..read], &mut this.out, &mut this.refused);
            for refused in this.refused.drain(..) {
                this.metrics.rejected(Condition::PolicyViolation);
                tracing::warn!(stanza = %refused.name, from = ?refused.attr("from"), reason = %refused.exceeded, "stanza beyond the limits refused before parsing");
                if let Some(reply) = refusal_reply(&refused) {
                    let _ = this.refusals.send(reply);
                }
            }
            if let Err(violation) = fed {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    violation,
                )));
            }
            // Everything read may have gone into a stanza not yet ended: read on (an
            // empty read would mean the end of the stream).
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The error reply to a stanza the guard refused: `policy-violation` saying which limit.
fn refusal_reply(refused: &Refused) -> Option<Stanza> {
    let attrs: Vec<(&str, &str)> = refused
        .attributes
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let name = match refused.name.as_str() {
        "message" => "message",
        "presence" => "presence",
        "iq" => "iq",
        _ => return None,
    };
    let stanza = element(name, NS, &attrs, Vec::new());
    let fault = StanzaFault::new(
        Condition::PolicyViolation,
        format!("the stanza is refused: {}", refused.exceeded),
    );
    translate::error_reply(&stanza, &fault).and_then(to_stanza)
}
