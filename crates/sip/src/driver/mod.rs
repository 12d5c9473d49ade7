//! The SIP adapter at run time: receives requests on its transports, answers them
//! through the pure front end ([`crate::wire`]), submits events to the broker, and
//! delivers envelopes as MESSAGE, SUBSCRIBE and NOTIFY requests in RFC 3261 client
//! transactions.
//!
//! This file holds the configuration, the shared state and the receiving side; the rest
//! is by concern: `watchers` (the gateway as notifier), `presentities` (the gateway as
//! subscriber, and the authorization policy), `watcherinfo` (RFC 3857), `publish`
//! (PUBLISH, REGISTER), `sending` (targets, MESSAGE, client transactions) and `timers`.

#![allow(clippy::disallowed_methods)] // a driver: transactions, timers and dialogs run on the clock (its parts inherit this)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use cpim::address::Address;
use cpim::condition::Condition;
use cpim::event::{Event, PresenceUpdate, Subscription, SubscriptionOp};
use cpim::presence::Presence;
use cpim_broker::adapter::{Adapter, AdapterContext, DeliveryPolicy};
use cpim_broker::envelope::{unix_now_ms, DeliveryOutcome, Envelope, Inbound};
use cpim_broker::identity::AddressStyle;
use cpim_broker::metrics::AdapterMetrics;
use cpim_broker::runtime::{StateStore, Submitter};

use crate::auth::{self, Credential, Registrar, RegistrarUser};
use crate::dialog;
use crate::headers::{self, EventHeader, NameAddr, SubState};
use crate::presence::{self, Outbound};
use crate::subscription::{
    Authorize, DialogKey, Notifier, NotifyEffect, Policy, Publications, PublishOutcome,
    SubscribeOutcome, SubscribeRequest, Subscriber, SubscriberEvent, WatcherDialog,
};
use crate::transaction::{
    ClientAction, ClientTransaction, ServerDecision, ServerTransactions, Timers,
};
use crate::translate::{self, aor_key, OutboundOptions};
use crate::transport::{
    Framing, Listen, Peer, StreamLimits, TlsAcceptor, TlsConnector, Transport, Transports,
};
use crate::wire::{self, Fault, Framed, OutRequest, RawMessage, RequestView};

use owner::{Machines, Owner};

const PIDF: &str = "application/pidf+xml";

/// The adapter's settings.
#[derive(Debug, Clone)]
pub struct SipConfig {
    /// The adapter's name.
    pub name: String,
    /// The SIP domains it serves.
    pub domains: Vec<String>,
    /// Listeners.
    pub listen: Vec<Listen>,
    /// TLS server certificate chain and key (PEM file contents) for TLS listeners.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Where out-of-dialog requests go instead of the Request-URI's host.
    pub outbound_proxy: Option<Peer>,
    /// Largest MESSAGE sent over UDP (RFC 3428 §8).
    pub max_udp_message: usize,
    /// Destination domains that get `message/cpim` instead of `text/plain`.
    pub cpim_domains: Vec<String>,
    /// Transaction timers.
    pub timers: Timers,
    /// Subscription and publication durations.
    pub policy: Policy,
    /// Credentials for challenges from upstream proxies (401/407).
    pub credentials: Vec<Credential>,
    /// Domains where the gateway is the registrar, with their users.
    pub registrar: Vec<(String, Vec<RegistrarUser>)>,
    /// A message for an unregistered user of a registrar domain waits in the spool
    /// for the user to register (until it expires) when `true`; it fails at once with
    /// `recipient-unavailable` (SIP 480) when `false`.
    pub unregistered_store: bool,
    /// Peers (a proxy in front that authenticates the users itself) whose requests
    /// for registrar accounts are not challenged.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Who may see a SIP user's presence where no SIP presence server asks the user.
    pub presence_authorization: crate::authorization::Policy,
    /// Watchers (`user@domain`, `*@domain`) always allowed to see SIP users' presence.
    pub presence_allow: Vec<String>,
    /// How often subscriptions, publications and transactions are checked for expiry.
    pub tick: Duration,
    /// The host (name or IP, IPv6 in brackets) peers reach the gateway at, written in
    /// Via and Contact; the listener's own address when `None`.
    pub advertise: Option<String>,
    /// Limits on the stream connections peers open.
    pub stream_limits: StreamLimits,
    /// The receive and send buffer asked for each UDP socket (`SO_RCVBUF`/`SO_SNDBUF`;
    /// the kernel caps it at `net.core.rmem_max`/`wmem_max`). A burst beyond what the
    /// buffer holds is dropped by the kernel before the gateway can answer it.
    pub udp_buffer_bytes: usize,
    /// Foreign domains whose servers are found by RFC 3263 (NAPTR, SRV, A/AAAA) unless
    /// an outbound proxy is configured (with `"*"`, every domain no adapter claims), and
    /// the domains denied.
    pub remote: crate::trust::RemotePolicy,
    /// The DNS servers asked for them; the system's when empty.
    pub nameservers: Vec<SocketAddr>,
    /// Per remote domain (lowercase), the networks that may speak for it besides its
    /// own servers in DNS.
    pub trusted_peers: Vec<(String, Vec<crate::trust::Network>)>,
    /// What the outbound TLS client trusts and presents.
    pub tls_client: tls::TlsClientSettings,
    /// Remote domains (lowercase) reached over TLS only and trusted only by a TLS
    /// certificate naming them.
    pub require_tls: Vec<String>,
}

impl SipConfig {
    /// Defaults for `name` serving `domains`, listening on UDP and TCP at `address`.
    pub fn new(name: &str, domains: &[&str], address: SocketAddr) -> Self {
        SipConfig {
            name: name.to_owned(),
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            listen: vec![
                Listen {
                    transport: Transport::Udp,
                    address,
                },
                Listen {
                    transport: Transport::Tcp,
                    address,
                },
            ],
            tls: None,
            outbound_proxy: None,
            max_udp_message: 1300,
            cpim_domains: Vec::new(),
            timers: Timers::default(),
            policy: Policy::default(),
            credentials: Vec::new(),
            registrar: Vec::new(),
            trusted_proxies: Vec::new(),
            presence_authorization: crate::authorization::Policy::default(),
            presence_allow: Vec::new(),
            unregistered_store: true,
            tick: Duration::from_secs(1),
            advertise: None,
            stream_limits: StreamLimits::default(),
            udp_buffer_bytes: DEFAULT_UDP_BUFFER_BYTES,
            remote: crate::trust::RemotePolicy::default(),
            nameservers: Vec::new(),
            trusted_peers: Vec::new(),
            tls_client: tls::TlsClientSettings {
                system_roots: true,
                ..tls::TlsClientSettings::default()
            },
            require_tls: Vec::new(),
        }
    }
}

/// [`SipConfig::udp_buffer_bytes`] unless configured: 4 MiB, about 10 000 MESSAGEs.
pub const DEFAULT_UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// The SIP adapter.
pub struct SipAdapter {
    core: Arc<Endpoint>,
}

impl std::fmt::Debug for SipAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipAdapter")
            .field("name", &self.core.config.name)
            .field("domains", &self.core.config.domains)
            .finish_non_exhaustive()
    }
}

pub mod dns;
mod owner;
mod presentities;
mod publish;
mod sending;
mod timers;
pub mod tls;
mod trusting;
mod watcherinfo;
mod watchers;

struct Endpoint {
    config: SipConfig,
    /// The broker's address map now: which domains some adapter claims.
    routes: cpim_broker::context::Routes,
    transports: Transports,
    submitter: Submitter,
    metrics: AdapterMetrics,
    /// Where the watcher dialogs are kept across a restart.
    state: StateStore,
    epoch: Instant,
    seed: u64,
    counter: AtomicU64,
    /// The task that owns the SIP machines.
    owner: Owner,
    /// RFC 3263 in DNS, for `remote_domains`.
    locator: Option<dns::Locator>,
    /// The trusted proxies and the outbound proxy: they may speak for every domain.
    proxies: Vec<std::net::IpAddr>,
    /// Own domains (lowercase, no registrar) whose users are taken only from the
    /// proxies, the domain's `trusted_peers` or a TLS peer certified for it.
    guarded_domains: Vec<String>,
    /// Requests waiting for DNS to say who may speak for their `From` domain, per
    /// domain in arrival order (the first one's task answers them all in turn).
    trust_waiting: std::sync::Mutex<HashMap<String, std::collections::VecDeque<trusting::Waiting>>>,
}

/// Where a request goes, and what is known of the transports it may take.
#[derive(Debug, Clone)]
struct Target {
    peer: Peer,
    /// Where to try next when `peer` fails with a transport error, a timeout or 503
    /// (RFC 3263 §4.3), in order: the other servers DNS named.
    alternatives: Vec<Peer>,
    /// The SIP domain a TLS server must be certified for (RFC 5922 §7.2): the domain
    /// that went into RFC 3263, not the SRV target.
    tls_name: Option<String>,
    /// The destination takes UDP only (`transport=udp` in its URI or registered
    /// Contact).
    udp_only: bool,
    /// A registered contact of the gateway's own registrar.
    registered: bool,
    /// Moved from UDP to TCP because the message is too large for UDP.
    upgraded: bool,
}

impl Target {
    pub(super) fn plain(peer: Peer) -> Self {
        Target {
            peer,
            alternatives: Vec::new(),
            tls_name: None,
            udp_only: false,
            registered: false,
            upgraded: false,
        }
    }
}

/// How soon a message for an unregistered user of a registrar domain is tried again
/// (the broker's backoff may make it later, up to its longest backoff).
const UNREGISTERED_RETRY: Duration = Duration::from_secs(5);

/// The `transport` parameter of a registered Contact URI, lower-cased.
fn contact_transport(contact: &str) -> Option<String> {
    let uri = contact.trim().trim_start_matches('<').trim_end_matches('>');
    uri.split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("transport"))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
}

/// How many held messages' `stored` reports are remembered (then the memory starts
/// again, and a message held that long may be reported a second time).
const MAX_TOLD_STORED: usize = 65_536;

/// How many contacts' CPIM acceptance is remembered (then the memory starts again).
const MAX_REMEMBERED_CONTACTS: usize = 65_536;

/// Driver-side data of a watcher's subscription.
#[derive(Clone)]
struct WatcherSide {
    peer: Peer,
    last_body: Option<Vec<u8>>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// The state key of the watcher dialogs kept across a restart.
const KEPT_WATCHERS: &str = "watchers";

/// A SIP watcher's dialog as kept across a restart: enough to end it cleanly.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct KeptWatcher {
    call_id: String,
    local_tag: String,
    remote_tag: String,
    remote_target: String,
    /// The dialog's route set (absent in what older versions kept).
    #[serde(default)]
    route_set: Vec<String>,
    watcher: String,
    presentity: String,
    event_id: Option<String>,
    next_cseq: u32,
    transport: String,
    peer: SocketAddr,
}

/// The final response of a client transaction.
#[derive(Debug)]
struct Final {
    status: u16,
    reason: String,
    response: Option<RawMessage>,
    /// `status` 0 because the TLS server's certificate was refused (RFC 5922): no
    /// retry will make it acceptable.
    tls_refused: bool,
}

impl SipAdapter {
    /// Binds the listeners and starts the adapter. Returns it with the bound addresses.
    pub async fn start(
        config: SipConfig,
        context: AdapterContext,
    ) -> std::io::Result<(Arc<SipAdapter>, Vec<(Transport, SocketAddr)>)> {
        let (acceptor, connector) = tls_setup(config.tls.as_ref(), &config.tls_client)?;
        let (sink, mut received) = mpsc::channel(4096);
        let (transports, bound) = Transports::bind(
            &config.listen,
            config.stream_limits,
            config.udp_buffer_bytes,
            acceptor,
            connector,
            sink,
        )
        .await?;
        for (transport, addr) in &bound {
            tracing::info!(adapter = %config.name, transport = transport.token(), %addr, "SIP listening");
        }
        let seed = unix_now_ms() ^ (u64::from(std::process::id()) << 32);
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| std::io::Error::other("no random bytes for the registrar's nonces"))?;
        let registrar = Registrar::new(config.registrar.clone(), &secret)
            .with_trusted(config.trusted_proxies.clone());
        let owner = Owner::spawn(Machines {
            clients: HashMap::new(),
            server: ServerTransactions::default(),
            notifier: Notifier::new(config.policy),
            watchers: HashMap::new(),
            subscriber: Subscriber::new(config.timers.timeout()),
            upstream_peers: HashMap::new(),
            publications: Publications::new(config.policy),
            published: HashMap::new(),
            registrar,
            takes_cpim: HashMap::new(),
            authorization: crate::authorization::Authorization::new(
                config.presence_authorization,
                &config.presence_allow,
            ),
            told_stored: std::collections::HashSet::new(),
            winfo: Notifier::new(config.policy),
            winfo_peers: HashMap::new(),
            kept_watchers: Vec::new(),
        });
        let locator = if !config.remote.reaches_remote() {
            None
        } else {
            Some(dns::Locator::new(&config.nameservers, seed).map_err(std::io::Error::other)?)
        };
        let mut proxies = config.trusted_proxies.clone();
        proxies.extend(config.outbound_proxy.map(|p| p.addr.ip()));
        // The gateway's own domains whose senders must come from its proxies or their
        // trusted_peers: every one without a registrar of its own, once either is set.
        let guarded_domains = config
            .domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .filter(|d| {
                !config
                    .registrar
                    .iter()
                    .any(|(r, _)| r.eq_ignore_ascii_case(d))
            })
            .filter(|d| !proxies.is_empty() || config.trusted_peers.iter().any(|(t, _)| t == d))
            .collect();
        let core = Arc::new(Endpoint {
            guarded_domains,
            trust_waiting: std::sync::Mutex::new(HashMap::new()),
            routes: context.routes.clone(),
            locator,
            proxies,
            transports,
            submitter: context.submitter.clone(),
            metrics: context.metrics.clone(),
            state: context.state.clone(),
            epoch: Instant::now(),
            seed,
            counter: AtomicU64::new(0),
            owner,
            config,
        });
        core.metrics.set_connected(true);
        let receiver = core.clone();
        tokio::spawn(async move {
            while let Some(r) = received.recv().await {
                receiver.clone().on_bytes(r.bytes, r.peer, r.framing).await;
            }
        });
        tokio::spawn(core.clone().ticker(context.shutdown.clone()));
        tokio::spawn(core.clone().end_kept_watchers());
        Ok((Arc::new(SipAdapter { core }), bound))
    }
}

fn tls_setup(
    tls: Option<&(Vec<u8>, Vec<u8>)>,
    client: &tls::TlsClientSettings,
) -> std::io::Result<(Option<TlsAcceptor>, Option<TlsConnector>)> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let acceptor = match tls {
        Some((cert, key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<_, _>>()
                .map_err(|e| std::io::Error::other(format!("certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| std::io::Error::other(format!("private key: {e}")))?;
            // Client certificates are asked for, not required: a peer that presents
            // one the trust store accepts may speak for the domains it names (RFC 5922
            // §7.3); one without is trusted by address, as over TCP.
            let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(std::io::Error::other)?;
            let builder = match tls::roots(client)? {
                Some(roots) => builder.with_client_cert_verifier(
                    rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .allow_unauthenticated()
                    .build()
                    .map_err(std::io::Error::other)?,
                ),
                None => builder.with_no_client_auth(),
            };
            let config = builder
                .with_single_cert(certs, key)
                .map_err(std::io::Error::other)?;
            Some(TlsAcceptor::from(Arc::new(config)))
        }
        None => None,
    };
    Ok((acceptor, Some(tls::client(client)?)))
}

impl Endpoint {
    pub(super) fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub(super) fn unique(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mixed = (self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17);
        format!("{mixed:016x}{n:x}")
    }

    pub(super) fn branch(&self) -> String {
        format!("z9hG4bK{}", self.unique())
    }

    /// `host:port` for Via and Contact: the advertised host when configured (behind NAT,
    /// in a container, or a listener on 0.0.0.0), else the listener's address.
    pub(super) fn sent_by(&self, transport: Transport) -> String {
        let local = self.transports.local(transport);
        match (&self.config.advertise, local) {
            (Some(host), Some(addr)) => format!("{host}:{}", addr.port()),
            (Some(host), None) => host.clone(),
            (None, Some(addr)) => addr.to_string(),
            (None, None) => "invalid".to_owned(),
        }
    }

    pub(super) fn registrar_on(&self) -> bool {
        !self.config.registrar.is_empty()
    }

    pub(super) fn serves(&self, domain: &str) -> bool {
        self.config
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    // -----------------------------------------------------------------------------------
    // receiving

    pub(super) async fn on_bytes(self: Arc<Self>, bytes: Vec<u8>, peer: Peer, framing: Framing) {
        let fault = match framing {
            Framing::Whole => None,
            // RFC 3261 §18.3: without a usable Content-Length a stream cannot be
            // framed; answer 400 when the request can be read, the transport closes.
            Framing::Unframeable => Some((
                Fault::new(400, "Bad Request (no usable Content-Length on a stream)"),
                Condition::BadRequest,
            )),
            // RFC 3261 §21.4.11.
            Framing::BodyTooLarge => Some((
                Fault::new(
                    413,
                    format!(
                        "Request Entity Too Large (at most {} bytes)",
                        wire::MAX_MESSAGE_BYTES
                    ),
                ),
                Condition::PolicyViolation,
            )),
            Framing::HeadersTooLarge => Some((
                Fault::new(513, "Message Too Large"),
                Condition::PolicyViolation,
            )),
        };
        if let Some((fault, condition)) = fault {
            if let Framed::Message(mut raw) | Framed::Bad(_, Some(mut raw)) = wire::frame(&bytes) {
                if raw.is_request {
                    wire::stamp_received(&mut raw, peer.addr);
                    self.metrics.rejected(condition);
                    self.reply(&raw, peer, &fault, None).await;
                }
            }
            return;
        }
        match wire::frame(&bytes) {
            Framed::Message(m) if !m.is_request => self.on_response(m),
            Framed::Message(mut m) => {
                wire::stamp_received(&mut m, peer.addr);
                self.on_request(m, peer).await
            }
            Framed::Bad(fault, Some(mut raw)) => {
                wire::stamp_received(&mut raw, peer.addr);
                tracing::debug!(%fault.status, reason = %fault.reason, peer = %peer.addr, "malformed request");
                self.metrics.rejected(Condition::BadRequest);
                self.reply(&raw, peer, &fault, None).await;
            }
            Framed::Bad(fault, None) => {
                tracing::debug!(reason = %fault.reason, peer = %peer.addr, "unreadable message dropped");
            }
        }
    }

    pub(super) fn on_response(&self, m: RawMessage) {
        let branch = m
            .header("Via")
            .and_then(|v| headers::Via::parse_first(v).ok())
            .and_then(|v| v.branch().map(str::to_owned));
        let Some(branch) = branch else { return };
        self.owner.tell(move |machines| {
            if let Some(tx) = machines.clients.get(&branch) {
                let _ = tx.try_send(m);
            }
        });
    }

    /// Sends a response and records it in the server transaction.
    pub(super) async fn send_response(&self, request: &RawMessage, peer: Peer, bytes: Vec<u8>) {
        if let Some(key) = server_key(request) {
            let (kept, reliable, now, timers) = (
                bytes.clone(),
                peer.transport.reliable(),
                self.now(),
                self.config.timers,
            );
            self.owner
                .tell(move |m| m.server.on_final(&key, kept, reliable, now, &timers));
        }
        if let Err(e) = self.transports.send(peer, bytes).await {
            tracing::debug!(peer = %peer.addr, error = %e, "sending a response failed");
        }
    }

    pub(super) async fn reply(
        &self,
        request: &RawMessage,
        peer: Peer,
        fault: &Fault,
        to_tag: Option<&str>,
    ) {
        let tag = to_tag.map(str::to_owned).unwrap_or_else(|| self.unique());
        if let Some(bytes) = wire::response(
            request,
            fault.status,
            &fault.reason,
            Some(&tag),
            &fault.headers,
            None,
        ) {
            self.send_response(request, peer, bytes).await;
        }
    }

    pub(super) async fn on_request(self: Arc<Self>, m: RawMessage, peer: Peer) {
        if m.start[0] == "ACK" {
            return; // ends an INVITE server transaction we answered with a failure
        }
        if let Some(key) = server_key(&m) {
            let decision = self.owner.with(move |s| s.server.on_request(&key)).await;
            match decision {
                ServerDecision::New => {}
                ServerDecision::Absorb => return,
                ServerDecision::Repeat(bytes) => {
                    let _ = self.transports.send(peer, bytes).await;
                    return;
                }
            }
        }
        let mut view = match wire::check_request(&m, self.registrar_on()) {
            Ok(v) => v,
            Err(fault) => {
                self.metrics.rejected(Condition::BadRequest);
                self.reply(&m, peer, &fault, None).await;
                return;
            }
        };
        // RFC 3325 §9.1: a page-mode MESSAGE's P-Asserted-Identity from a trusted proxy
        // (the outbound proxy, `trusted_proxies`) names its sender; from anyone else it
        // is not trusted (§5) and the `From` stays the sender.
        if view.method == "MESSAGE" && view.to.tag().is_none() {
            if let Some(asserted) =
                crate::headers::asserted_identity(view.all("P-Asserted-Identity"))
            {
                let ip = peer.addr.ip().to_canonical();
                if self.proxies.iter().any(|p| p.to_canonical() == ip) {
                    tracing::debug!(from = %view.from.uri, asserted = %asserted.uri, "RFC 3325: the trusted proxy's asserted identity is the sender");
                    view.from.uri = asserted.uri;
                    if asserted.display.is_some() {
                        view.from.display = asserted.display;
                    }
                } else {
                    tracing::debug!(peer = %peer.addr, asserted = %asserted.uri, "RFC 3325: P-Asserted-Identity from an untrusted peer ignored");
                }
            }
        }
        // A request speaking for an account of the gateway's registrar domains must be
        // that account's (RFC 3261 §22.3); in-dialog requests belong to a dialog the
        // gateway set up with the registered contact.
        if self.registrar_on()
            && matches!(view.method.as_str(), "MESSAGE" | "PUBLISH" | "SUBSCRIBE")
            && view.to.tag().is_none()
        {
            let now = self.now();
            let (view_back, checked) = self
                .owner
                .with(move |s| {
                    let checked = s.registrar.authorize(now, &view, peer);
                    (view, checked)
                })
                .await;
            view = view_back;
            if let Err(fault) = checked {
                if fault.status == 403 {
                    self.metrics.rejected(Condition::Forbidden);
                }
                self.reply(&m, peer, &fault, None).await;
                return;
            }
        }
        if matches!(view.method.as_str(), "MESSAGE" | "PUBLISH" | "SUBSCRIBE")
            && view.to.tag().is_none()
        {
            match self.may_speak_for(&view, peer) {
                trusting::Verdict::Allowed => {}
                trusting::Verdict::Refused(fault) => {
                    self.reply(&m, peer, &fault, None).await;
                    return;
                }
                trusting::Verdict::AskDns(domain) => {
                    self.wait_for_trust(domain, (m, view, peer)).await;
                    return;
                }
            }
        }
        self.dispatch(m, view, peer).await;
    }

    /// Answers a request that may be answered.
    async fn dispatch(self: Arc<Self>, m: RawMessage, view: RequestView, peer: Peer) {
        match view.method.as_str() {
            "OPTIONS" => {
                let allow = if self.registrar_on() {
                    wire::ALLOW_WITH_REGISTER
                } else {
                    wire::ALLOW
                };
                let fault = Fault::new(200, "OK")
                    .with_header("Allow", allow)
                    .with_header("Accept", format!("{}, {PIDF}", translate::ACCEPT_MESSAGE))
                    .with_header("Allow-Events", ALLOW_EVENTS)
                    .with_header("Supported", "");
                self.reply(&m, peer, &fault, None).await;
            }
            "MESSAGE" => self.on_message(m, &view, peer).await,
            "SUBSCRIBE" => {
                tokio::spawn(async move { self.on_subscribe(m, view, peer).await });
            }
            "NOTIFY" => self.on_notify(&m, &view, peer).await,
            "PUBLISH" => self.on_publish(&m, &view, peer).await,
            "REGISTER" => self.on_register(&m, &view, peer).await,
            _ => {
                let fault = Fault::new(405, "Method Not Allowed").with_header("Allow", wire::ALLOW);
                self.reply(&m, peer, &fault, None).await;
            }
        }
    }

    /// A MESSAGE is submitted in arrival order, and answered when the broker has taken
    /// it (made it durable): meanwhile the next requests are read and submitted, so that
    /// one commit of the spool covers many of them. When the broker's submission queue is
    /// full it is answered 503 with `Retry-After` at once.
    pub(super) async fn on_message(self: Arc<Self>, m: RawMessage, view: &RequestView, peer: Peer) {
        let inbound = match translate::message_inbound(view, unix_now_ms()) {
            Ok(i) => i,
            Err(fault) => {
                self.metrics.rejected(Condition::BadRequest);
                self.reply(&m, peer, &fault, None).await;
                return;
            }
        };
        if view.content_type.as_deref().is_some_and(is_cpim_type) {
            self.remember_cpim(&aor_key(&inbound.from), true);
        }
        // Never waits for room in the broker's queue: a UDP socket not read drops what
        // follows unanswered; a full queue is a 503 + Retry-After at once instead.
        let pending = self.submitter.try_submit_pipelined(inbound);
        tokio::spawn(async move {
            let fault = match pending.answer().await {
                // RFC 3428 §4: accepted for relay without end-to-end confirmation.
                Ok(_) => Fault::new(202, "Accepted"),
                Err(rejected) => translate::fault_for(&rejected),
            };
            self.reply(&m, peer, &fault, None).await;
        });
    }
}

fn failed(condition: Condition, text: String) -> DeliveryOutcome {
    DeliveryOutcome::Failed {
        condition,
        text: Some(text),
    }
}

fn contact_of(host: &str, transport: Transport) -> String {
    match transport {
        Transport::Udp => format!("<sip:gw@{host}>"),
        Transport::Tcp => format!("<sip:gw@{host};transport=tcp>"),
        Transport::Tls => format!("<sip:gw@{host};transport=tls>"),
    }
}

/// Whether a `Content-Type` value is `message/cpim`.
fn is_cpim_type(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("message/cpim"))
}

/// Whether a 415 says the UA takes plain text but not CPIM: its `Accept` lists
/// `text/plain` (or `text/*`, `*/*`) and not `message/cpim`; a 415 without `Accept`
/// (RFC 3428 §8: every UA takes `text/plain`) counts as plain text.
fn takes_plain(response: Option<&RawMessage>) -> bool {
    let Some(accept) = response.and_then(|r| r.header("Accept")) else {
        return true;
    };
    let types: Vec<String> = headers::split_top_level(accept, ',')
        .iter()
        .filter_map(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    !types.iter().any(|t| t == "message/cpim")
        && types
            .iter()
            .any(|t| matches!(t.as_str(), "text/plain" | "text/*" | "*/*"))
}

/// The PIDF document of a NOTIFY or PUBLISH (`None` without a body): 415 with `Accept`
/// for another content type, 400 for an invalid document. `lenient` drops unknown
/// `mustUnderstand` extensions instead of refusing them (RFC 3863 §4.2.3).
fn pidf_body(view: &RequestView, lenient: bool) -> Result<Option<Presence>, Fault> {
    if view.body.is_empty() {
        return Ok(None);
    }
    let essence = view
        .content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    if essence.as_deref() != Some(PIDF) {
        return Err(Fault::new(415, "Unsupported Media Type").with_header("Accept", PIDF));
    }
    let parsed = if lenient {
        Presence::parse_lenient(&view.body)
    } else {
        Presence::parse(&view.body)
    };
    parsed
        .map(Some)
        .map_err(|e| Fault::new(400, format!("Bad Request (invalid PIDF: {e})")))
}

/// NOTIFY and PUBLISH: the presence package only (the gateway subscribes to nothing
/// else, and a watcher list is not published).
fn presence_only(view: &RequestView) -> Result<(), Fault> {
    match check_event(view) {
        Ok(Package::Presence) => Ok(()),
        _ => Err(Fault::new(489, "Bad Event").with_header("Allow-Events", "presence")),
    }
}

/// The event packages a SUBSCRIBE may ask for.
enum Package {
    /// RFC 3856 presence.
    Presence,
    /// RFC 3857 watcher information of presence.
    WatcherInfo,
}

/// The packages, for `Allow-Events`.
const ALLOW_EVENTS: &str = "presence, presence.winfo";

/// RFC 6665 §8.2.1: presence and its watcher information (489 with `Allow-Events`
/// otherwise).
fn check_event(view: &RequestView) -> Result<Package, Fault> {
    let bad = || Fault::new(489, "Bad Event").with_header("Allow-Events", ALLOW_EVENTS);
    let event = view.header("Event").ok_or_else(bad)?;
    let event = EventHeader::parse(event).map_err(|_| bad())?;
    match event.package.to_ascii_lowercase().as_str() {
        "presence" => Ok(Package::Presence),
        crate::winfo::PACKAGE => Ok(Package::WatcherInfo),
        _ => Err(bad()),
    }
}

/// The server transaction key of a request (RFC 3261 §17.2.3); ACK matches INVITE.
/// Call-ID, CSeq and the From tag are part of the key as well: a real retransmission
/// repeats them, and branches without the RFC 3261 magic cookie (RFC 2543 peers, or a
/// bare `z9hG4bK`) are then still told apart as §17.2.3 asks.
fn server_key(m: &RawMessage) -> Option<crate::transaction::ServerKey> {
    let via = headers::Via::parse_first(m.header("Via")?).ok()?;
    let branch = via.branch().unwrap_or_default().to_owned();
    let method = if m.start[0] == "ACK" {
        "INVITE"
    } else {
        m.start[0].as_str()
    };
    let cseq = m
        .header("CSeq")
        .and_then(|c| c.split_whitespace().next())
        .unwrap_or_default();
    let from_tag = m
        .header("From")
        .and_then(|f| NameAddr::parse("From", f).ok())
        .and_then(|f| f.tag().map(str::to_owned))
        .unwrap_or_default();
    let rest = format!(
        "{method}|{}|{cseq}|{from_tag}|{}",
        m.header("Call-ID").unwrap_or_default(),
        if branch.len() > 7 && branch.starts_with("z9hG4bK") {
            ""
        } else {
            m.start[1].as_str()
        }
    );
    Some((branch, via.sent_by.to_ascii_lowercase(), rest))
}

#[async_trait]
impl Adapter for SipAdapter {
    fn name(&self) -> &str {
        &self.core.config.name
    }

    fn style(&self) -> AddressStyle {
        AddressStyle::Sip
    }

    fn domains(&self) -> Vec<String> {
        self.core.config.domains.clone()
    }

    fn policy(&self) -> DeliveryPolicy {
        DeliveryPolicy {
            // RFC 3428 §8: one pending MESSAGE per destination.
            max_in_flight_per_destination: 1,
            max_message_bytes: self
                .core
                .transports
                .can_send(Transport::Tcp)
                .then_some(wire::MAX_MESSAGE_BYTES - 4096)
                .or(Some(self.core.config.max_udp_message)),
            // A SIP watcher's subscription is a dialog of this process: after a restart
            // its refresh gets 481 and it subscribes again.
            resumes_subscriptions: false,
        }
    }

    async fn deliver(&self, envelope: Envelope) -> DeliveryOutcome {
        let core = &self.core;
        match presence::outbound(&envelope) {
            Outbound::Message => core.send_message(&envelope).await,
            Outbound::Notify { pidf } => {
                core.deliver_to_watchers(&envelope, Some(pidf), None).await
            }
            Outbound::SubscribeUpstream => core.subscribe_upstream(&envelope).await,
            Outbound::UnsubscribeUpstream => core.unsubscribe_upstream(&envelope).await,
            Outbound::Authorize => core.authorize_watcher(&envelope).await,
            Outbound::Withdraw => core.withdraw_watcher(&envelope).await,
            Outbound::Activate => core.deliver_to_watchers(&envelope, None, None).await,
            Outbound::Terminate { reason } => {
                core.deliver_to_watchers(&envelope, None, Some(reason))
                    .await
            }
            Outbound::Nothing => DeliveryOutcome::Accepted,
        }
    }
}
