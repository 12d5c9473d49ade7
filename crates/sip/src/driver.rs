//! The SIP adapter at run time: receives requests on its transports, answers them
//! through the pure front end ([`crate::wire`]), submits events to the broker, and
//! delivers envelopes as MESSAGE, SUBSCRIBE and NOTIFY requests in RFC 3261 client
//! transactions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
        }
    }
}

/// The SIP adapter.
pub struct SipAdapter {
    core: Arc<Core>,
}

impl std::fmt::Debug for SipAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipAdapter")
            .field("name", &self.core.config.name)
            .field("domains", &self.core.config.domains)
            .finish_non_exhaustive()
    }
}

mod watcherinfo;

struct Core {
    config: SipConfig,
    transports: Transports,
    submitter: Submitter,
    metrics: AdapterMetrics,
    /// Where the watcher dialogs are kept across a restart, and which were last kept.
    state: StateStore,
    kept_watchers: Mutex<Vec<DialogKey>>,
    epoch: Instant,
    seed: u64,
    counter: AtomicU64,
    clients: Mutex<HashMap<String, mpsc::Sender<RawMessage>>>,
    server: Mutex<ServerTransactions>,
    notifier: Mutex<Notifier>,
    watchers: Mutex<HashMap<DialogKey, WatcherSide>>,
    subscriber: Mutex<Subscriber>,
    upstream_peers: Mutex<HashMap<String, Peer>>,
    publications: Mutex<Publications>,
    /// The state SIP users published here, by AOR (the gateway is their presence
    /// server, RFC 3903).
    published: Mutex<HashMap<String, Presence>>,
    registrar: Mutex<Registrar>,
    /// What each SIP contact (by AOR) has shown about `message/cpim`: `true` when it
    /// sent CPIM itself, `false` when it answered CPIM with 415 and an `Accept` without
    /// it. Contacts not here take CPIM only when `cpim_domains` says so.
    takes_cpim: Mutex<HashMap<String, bool>>,
    /// The presence authorization policy and the requests waiting under it.
    authorization: Mutex<crate::authorization::Authorization>,
    /// The messages held for an unregistered user whose senders were told so (`stored`).
    told_stored: Mutex<std::collections::HashSet<cpim_broker::envelope::MessageId>>,
    /// SIP users' subscriptions to their own watcher information (RFC 3857), and where
    /// each dialog's NOTIFYs go.
    winfo: Mutex<Notifier>,
    winfo_peers: Mutex<HashMap<DialogKey, Peer>>,
}

/// Where a request goes, and what is known of the transports it may take.
#[derive(Debug, Clone, Copy)]
struct Target {
    peer: Peer,
    /// The destination takes UDP only (`transport=udp` in its URI or registered
    /// Contact).
    udp_only: bool,
    /// A registered contact of the gateway's own registrar.
    registered: bool,
    /// Moved from UDP to TCP because the message is too large for UDP.
    upgraded: bool,
}

impl Target {
    fn plain(peer: Peer) -> Self {
        Target {
            peer,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The final response of a client transaction.
#[derive(Debug)]
struct Final {
    status: u16,
    reason: String,
    response: Option<RawMessage>,
}

impl SipAdapter {
    /// Binds the listeners and starts the adapter. Returns it with the bound addresses.
    pub async fn start(
        config: SipConfig,
        context: AdapterContext,
    ) -> std::io::Result<(Arc<SipAdapter>, Vec<(Transport, SocketAddr)>)> {
        let (acceptor, connector) = tls_setup(config.tls.as_ref())?;
        let (sink, mut received) = mpsc::channel(4096);
        let (transports, bound) = Transports::bind(
            &config.listen,
            config.stream_limits,
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
        let core = Arc::new(Core {
            transports,
            submitter: context.submitter.clone(),
            metrics: context.metrics.clone(),
            state: context.state.clone(),
            kept_watchers: Mutex::new(Vec::new()),
            epoch: Instant::now(),
            seed,
            counter: AtomicU64::new(0),
            clients: Mutex::new(HashMap::new()),
            server: Mutex::new(ServerTransactions::default()),
            notifier: Mutex::new(Notifier::new(config.policy)),
            watchers: Mutex::new(HashMap::new()),
            subscriber: Mutex::new(Subscriber::new(config.timers.timeout())),
            upstream_peers: Mutex::new(HashMap::new()),
            publications: Mutex::new(Publications::new(config.policy)),
            published: Mutex::new(HashMap::new()),
            registrar: Mutex::new(registrar),
            takes_cpim: Mutex::new(HashMap::new()),
            told_stored: Mutex::new(std::collections::HashSet::new()),
            winfo: Mutex::new(Notifier::new(config.policy)),
            winfo_peers: Mutex::new(HashMap::new()),
            authorization: Mutex::new(crate::authorization::Authorization::new(
                config.presence_authorization,
                &config.presence_allow,
            )),
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
            let config = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(std::io::Error::other)?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(std::io::Error::other)?;
            Some(TlsAcceptor::from(Arc::new(config)))
        }
        None => None,
    };
    Ok((acceptor, None))
}

impl Core {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn unique(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mixed = (self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17);
        format!("{mixed:016x}{n:x}")
    }

    fn branch(&self) -> String {
        format!("z9hG4bK{}", self.unique())
    }

    /// `host:port` for Via and Contact: the advertised host when configured (behind NAT,
    /// in a container, or a listener on 0.0.0.0), else the listener's address.
    fn sent_by(&self, transport: Transport) -> String {
        let local = self.transports.local(transport);
        match (&self.config.advertise, local) {
            (Some(host), Some(addr)) => format!("{host}:{}", addr.port()),
            (Some(host), None) => host.clone(),
            (None, Some(addr)) => addr.to_string(),
            (None, None) => "invalid".to_owned(),
        }
    }

    fn registrar_on(&self) -> bool {
        !self.config.registrar.is_empty()
    }

    fn serves(&self, domain: &str) -> bool {
        self.config
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    // -----------------------------------------------------------------------------------
    // receiving

    async fn on_bytes(self: Arc<Self>, bytes: Vec<u8>, peer: Peer, framing: Framing) {
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

    fn on_response(&self, m: RawMessage) {
        let branch = m
            .header("Via")
            .and_then(|v| headers::Via::parse_first(v).ok())
            .and_then(|v| v.branch().map(str::to_owned));
        let Some(branch) = branch else { return };
        let tx = lock(&self.clients).get(&branch).cloned();
        if let Some(tx) = tx {
            let _ = tx.try_send(m);
        }
    }

    /// Sends a response and records it in the server transaction.
    async fn send_response(&self, request: &RawMessage, peer: Peer, bytes: Vec<u8>) {
        if let Some(key) = server_key(request) {
            lock(&self.server).on_final(
                &key,
                bytes.clone(),
                peer.transport.reliable(),
                self.now(),
                &self.config.timers,
            );
        }
        if let Err(e) = self.transports.send(peer, bytes).await {
            tracing::debug!(peer = %peer.addr, error = %e, "sending a response failed");
        }
    }

    async fn reply(&self, request: &RawMessage, peer: Peer, fault: &Fault, to_tag: Option<&str>) {
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

    async fn on_request(self: Arc<Self>, m: RawMessage, peer: Peer) {
        if m.start[0] == "ACK" {
            return; // ends an INVITE server transaction we answered with a failure
        }
        if let Some(key) = server_key(&m) {
            let decision = lock(&self.server).on_request(&key);
            match decision {
                ServerDecision::New => {}
                ServerDecision::Absorb => return,
                ServerDecision::Repeat(bytes) => {
                    let _ = self.transports.send(peer, bytes).await;
                    return;
                }
            }
        }
        let view = match wire::check_request(&m, self.registrar_on()) {
            Ok(v) => v,
            Err(fault) => {
                self.metrics.rejected(Condition::BadRequest);
                self.reply(&m, peer, &fault, None).await;
                return;
            }
        };
        // A request speaking for an account of the gateway's registrar domains must be
        // that account's (RFC 3261 §22.3); in-dialog requests belong to a dialog the
        // gateway set up with the registered contact.
        if self.registrar_on()
            && matches!(view.method.as_str(), "MESSAGE" | "PUBLISH" | "SUBSCRIBE")
            && view.to.tag().is_none()
        {
            let checked = lock(&self.registrar).authorize(self.now(), &view, peer);
            if let Err(fault) = checked {
                if fault.status == 403 {
                    self.metrics.rejected(Condition::Forbidden);
                }
                self.reply(&m, peer, &fault, None).await;
                return;
            }
        }
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
    /// one commit of the spool covers many of them.
    async fn on_message(self: Arc<Self>, m: RawMessage, view: &RequestView, peer: Peer) {
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
        let pending = self.submitter.submit_pipelined(inbound).await;
        tokio::spawn(async move {
            let fault = match pending.answer().await {
                // RFC 3428 §4: accepted for relay without end-to-end confirmation.
                Ok(_) => Fault::new(202, "Accepted"),
                Err(rejected) => translate::fault_for(&rejected),
            };
            self.reply(&m, peer, &fault, None).await;
        });
    }

    // -----------------------------------------------------------------------------------
    // presence: SIP watchers (the gateway is the notifier)

    async fn on_subscribe(self: Arc<Self>, m: RawMessage, view: RequestView, peer: Peer) {
        let result = match check_event(&view) {
            Ok(Package::Presence) => self.subscribe_inner(&m, &view, peer).await,
            Ok(Package::WatcherInfo) => self.winfo_subscribe(&m, &view, peer).await,
            Err(fault) => Err(fault),
        };
        if let Err(fault) = result {
            self.reply(&m, peer, &fault, None).await;
        }
    }

    async fn subscribe_inner(
        self: &Arc<Self>,
        m: &RawMessage,
        view: &RequestView,
        peer: Peer,
    ) -> Result<(), Fault> {
        if view.max_forwards == Some(0) {
            return Err(Fault::new(483, "Too Many Hops"));
        }
        let from_tag = view
            .from
            .tag()
            .ok_or_else(|| Fault::new(400, "Bad Request (From without a tag)"))?
            .to_owned();
        let watcher = translate::address_of(&view.from.uri, "From")?;
        // Inside the dialog the Request-URI is the gateway's Contact: To names the
        // presentity.
        let presentity = if view.to.tag().is_some() {
            translate::address_of(&view.to.uri, "To")?
        } else {
            translate::recipient(view)?
        };
        let expires = view
            .header("Expires")
            .map(|e| headers::parse_delta_seconds("Expires", e))
            .transpose()?;
        let contact = dialog::contact_uri(view.header("Contact")).unwrap_or_default();
        let event_id = EventHeader::parse(view.header("Event").unwrap_or_default())
            .ok()
            .and_then(|e| e.id().map(str::to_owned));
        let (watcher_key, presentity_key) = (aor_key(&watcher), aor_key(&presentity));
        let request = SubscribeRequest {
            call_id: view.call_id.clone(),
            from_tag,
            to_tag: view.to.tag().map(str::to_owned),
            expires,
            contact,
            route_set: if view.to.tag().is_none() {
                dialog::record_route(&view.headers)
            } else {
                Vec::new()
            },
            watcher: watcher_key.clone(),
            presentity: presentity_key.clone(),
            event_id,
        };
        let outcome = lock(&self.notifier).on_subscribe(self.now(), request, || self.unique())?;
        let (key, expires, op) = match &outcome {
            SubscribeOutcome::Created { key, expires }
            | SubscribeOutcome::Refreshed { key, expires } => {
                (key.clone(), *expires, SubscriptionOp::Subscribe)
            }
            SubscribeOutcome::Ended(d) => (
                (d.call_id.clone(), d.local_tag.clone()),
                0,
                SubscriptionOp::Unsubscribe,
            ),
        };
        // The watcher's other dialogs with this presentity (another device, or the
        // dialog a fetch is made beside): the broker knows the pair once, so a fetch
        // or the end of one dialog must not touch it while another dialog lives.
        let sibling = self.sibling_of(&key, &watcher_key, &presentity_key);
        if matches!(outcome, SubscribeOutcome::Created { .. }) && expires > 0 {
            // The SIP user follows this contact now: the contact's waiting request to
            // see the user passes the `contacts` policy.
            let waiting = lock(&self.authorization).on_follow(&watcher_key, &presentity_key);
            if let Some(contact) = waiting {
                self.winfo_changed(&watcher_key);
                self.submit_from(
                    &watcher_key,
                    &contact,
                    Event::Subscription(Subscription::new(SubscriptionOp::Approve)),
                )
                .await;
            }
        }
        match &outcome {
            SubscribeOutcome::Created { .. } => {
                lock(&self.watchers).insert(
                    key.clone(),
                    WatcherSide {
                        peer,
                        // The state the other dialog shows is this one's first state.
                        last_body: sibling.as_ref().and_then(|s| s.1.clone()),
                        lock: Arc::new(tokio::sync::Mutex::new(())),
                    },
                );
            }
            SubscribeOutcome::Refreshed { .. } => {
                if let Some(w) = lock(&self.watchers).get_mut(&key) {
                    w.peer = peer;
                }
            }
            SubscribeOutcome::Ended(_) => {}
        }
        let side = lock(&self.watchers).get(&key).cloned();
        let Some(side) = side else {
            return Err(Fault::new(481, "Subscription Does Not Exist"));
        };
        // Hold the dialog while answering, so that a NOTIFY caused by the broker's
        // answer cannot overtake the 200 and the first NOTIFY.
        let guard = side.lock.clone().lock_owned().await;
        // RFC 6665 §4.4.3 fetch or the end of one of several dialogs (`expires` is 0
        // for those alone): the pair stays as it is at the broker (the other dialog still
        // watches); the fetch is answered with the state that dialog shows.
        let leave_broker = sibling.is_some() && expires == 0;
        let mut inbound = Inbound::new(
            Event::Subscription(Subscription {
                expires_secs: Some(expires),
                ..Subscription::new(op)
            }),
            watcher,
            presentity,
        );
        inbound.received_at_ms = unix_now_ms();
        inbound.hops = view.max_forwards;
        let submitted = if leave_broker {
            Ok(())
        } else {
            self.submitter.submit(inbound).await.map(|_| ())
        };
        if let Err(rejected) = submitted {
            if matches!(outcome, SubscribeOutcome::Created { .. }) {
                lock(&self.notifier).remove(&key);
                lock(&self.watchers).remove(&key);
            }
            return Err(translate::fault_for(&rejected));
        }
        let mut ok = Fault::new(200, "OK")
            .with_header("Expires", expires.to_string())
            .with_header(
                "Contact",
                contact_of(&self.sent_by(peer.transport), peer.transport),
            );
        // RFC 3261 §12.1.1: a dialog-creating 2xx copies the Record-Route values, so the
        // watcher's in-dialog requests keep going through its proxies.
        for (name, value) in &view.headers {
            if name.eq_ignore_ascii_case("Record-Route") {
                ok = ok.with_header("Record-Route", value.clone());
            }
        }
        self.reply(m, peer, &ok, Some(&key.1)).await;
        match outcome {
            SubscribeOutcome::Ended(dialog) => {
                lock(&self.watchers).remove(&key);
                let state = SubState::Terminated {
                    reason: Some("timeout".to_owned()),
                    retry_after: None,
                };
                self.send_notify(&dialog, peer, state, None).await;
            }
            // A fetch with no other dialog to answer from: its one NOTIFY waits for
            // the state the broker was asked for (a probe of the presentity's network),
            // which `deliver_to_watchers` sends; without it, the ticker sends it bare
            // after `FETCH_WAIT` (RFC 6665 §4.4.3: a fetch returns the current state).
            SubscribeOutcome::Created { .. } if expires == 0 && sibling.is_none() => {}
            _ => {
                // A watcher already authorized on another dialog is authorized on this
                // one: its first NOTIFY is active with the known state.
                let activate = sibling.as_ref().is_some_and(|s| s.0);
                let body = side.last_body.clone();
                self.notify_locked(&key, activate, body).await;
            }
        }
        drop(guard);
        Ok(())
    }

    /// Another live dialog of `watcher` with `presentity` than `key`: whether it is
    /// active, and the last state it was sent (the most informed one when several).
    fn sibling_of(
        &self,
        key: &DialogKey,
        watcher: &str,
        presentity: &str,
    ) -> Option<(bool, Option<Vec<u8>>)> {
        let others: Vec<(DialogKey, bool)> = {
            let notifier = lock(&self.notifier);
            notifier
                .find(watcher, presentity)
                .into_iter()
                .filter(|k| k != key)
                .filter_map(|k| {
                    let d = notifier.get(&k)?;
                    // A fetch's dialog ends with its one NOTIFY: it is no one's sibling.
                    (!d.fetch && d.expires_at > self.now()).then_some((k, d.active))
                })
                .collect()
        };
        let watchers = lock(&self.watchers);
        others
            .into_iter()
            .filter_map(|(k, active)| {
                let side = watchers.get(&k)?;
                Some((active, side.last_body.clone()))
            })
            .max_by_key(|(active, body)| (*active, body.is_some()))
    }

    /// Sends the next NOTIFY of `key` (the dialog lock is held by the caller).
    async fn notify_locked(
        self: &Arc<Self>,
        key: &DialogKey,
        activate: bool,
        body: Option<Vec<u8>>,
    ) -> u16 {
        let next = lock(&self.notifier).next_notify(key, self.now(), activate);
        let Some((dialog, state)) = next else {
            return 481;
        };
        let Some(peer) = lock(&self.watchers).get(key).map(|w| w.peer) else {
            return 481;
        };
        let terminated = matches!(state, SubState::Terminated { .. });
        let body = if dialog.active { body } else { None };
        let status = self.send_notify(&dialog, peer, state, body).await;
        if terminated {
            lock(&self.watchers).remove(key);
        } else if status >= 300
            && lock(&self.notifier)
                .on_notify_failure(key, status)
                .is_some()
        {
            // RFC 6665 §4.2.2: the watcher is gone; so is its subscription.
            lock(&self.watchers).remove(key);
            self.submit_unsubscribe(&dialog).await;
        }
        status
    }

    /// Tells the broker that `dialog` (already removed) ended — unless the watcher has
    /// another dialog with that presentity, which keeps the pair.
    async fn submit_unsubscribe(&self, dialog: &WatcherDialog) {
        if !lock(&self.notifier)
            .find(&dialog.watcher, &dialog.presentity)
            .is_empty()
        {
            return;
        }
        let (Ok(watcher), Ok(presentity)) = (
            Address::parse(&dialog.watcher),
            Address::parse(&dialog.presentity),
        ) else {
            return;
        };
        let inbound = Inbound::new(
            Event::Subscription(Subscription::new(SubscriptionOp::Unsubscribe)),
            watcher,
            presentity,
        );
        let _ = self.submitter.submit(inbound).await;
    }

    async fn send_notify(
        &self,
        dialog: &WatcherDialog,
        peer: Peer,
        state: SubState,
        body: Option<Vec<u8>>,
    ) -> u16 {
        self.send_notify_of("presence", PIDF, dialog, peer, state, body)
            .await
    }

    /// A NOTIFY of `package` with a `content_type` body.
    async fn send_notify_of(
        &self,
        package: &str,
        content_type: &str,
        dialog: &WatcherDialog,
        peer: Peer,
        state: SubState,
        body: Option<Vec<u8>>,
    ) -> u16 {
        let event = match &dialog.event_id {
            Some(id) => format!("{package};id={id}"),
            None => package.to_owned(),
        };
        // RFC 3261 §12.2.1.1: to the remote target along the route set; without one,
        // back where the watcher's requests come from.
        let hop = dialog::in_dialog(&dialog.remote_target, &dialog.route_set);
        let peer = if dialog.route_set.is_empty() {
            peer
        } else {
            self.hop_peer(&hop.next_hop, peer).await
        };
        let mut headers: Vec<(String, String)> = hop
            .routes
            .iter()
            .map(|r| ("Route".to_owned(), r.clone()))
            .collect();
        headers.extend([
            ("Event".to_owned(), event),
            ("Subscription-State".to_owned(), state.to_string()),
            (
                "Contact".to_owned(),
                contact_of(&self.sent_by(peer.transport), peer.transport),
            ),
        ]);
        let from = format!("<{}>;tag={}", dialog.presentity, dialog.local_tag);
        let to = format!("<{}>;tag={}", dialog.watcher, dialog.remote_tag);
        let body_ref = body.as_deref().map(|b| (content_type, b));
        let result = self
            .transact(peer, |branch, sent_by| {
                OutRequest {
                    method: "NOTIFY",
                    uri: &hop.request_uri,
                    via_transport: peer.transport.token(),
                    via_sent_by: sent_by,
                    branch,
                    from: &from,
                    to: &to,
                    call_id: &dialog.call_id,
                    cseq: dialog.next_cseq,
                    max_forwards: 70,
                    headers: &headers,
                    body: body_ref,
                }
                .to_bytes()
            })
            .await;
        result.status
    }

    /// Delivers presence (or an approval/denial) to the SIP watchers of the envelope's
    /// sender.
    async fn deliver_to_watchers(
        self: &Arc<Self>,
        envelope: &Envelope,
        body: Option<Vec<u8>>,
        terminate: Option<String>,
    ) -> DeliveryOutcome {
        let watcher = aor_key(&envelope.to);
        let presentity = aor_key(&envelope.from);
        let keys = lock(&self.notifier).find(&watcher, &presentity);
        if keys.is_empty() {
            // The watcher went away in the meantime: nothing to tell.
            return DeliveryOutcome::Accepted;
        }
        let mut worst = 200;
        for key in keys {
            let side = lock(&self.watchers).get(&key).cloned();
            let Some(side) = side else { continue };
            let _guard = side.lock.clone().lock_owned().await;
            if let Some(reason) = &terminate {
                let dialog = lock(&self.notifier).remove(&key);
                lock(&self.watchers).remove(&key);
                if let Some(dialog) = dialog {
                    let state = SubState::Terminated {
                        reason: Some(reason.clone()),
                        retry_after: None,
                    };
                    worst = worst.max(self.send_notify(&dialog, side.peer, state, None).await);
                }
                continue;
            }
            if body.is_some() {
                if let Some(w) = lock(&self.watchers).get_mut(&key) {
                    w.last_body = body.clone();
                }
            }
            let body = body.clone().or(side.last_body.clone());
            worst = worst.max(self.notify_locked(&key, true, body).await);
        }
        translate::presence_outcome_for(worst, "NOTIFY")
    }

    // -----------------------------------------------------------------------------------
    // presence: SIP presentities (the gateway subscribes)

    async fn on_notify(self: &Arc<Self>, m: &RawMessage, view: &RequestView, peer: Peer) {
        let fault = self
            .notify_inner(view)
            .await
            .err()
            .unwrap_or(Fault::new(200, "OK"));
        self.reply(m, peer, &fault, None).await;
    }

    async fn notify_inner(self: &Arc<Self>, view: &RequestView) -> Result<(), Fault> {
        presence_only(view)?;
        let state = view
            .header("Subscription-State")
            .ok_or_else(|| Fault::new(400, "Bad Request (missing Subscription-State)"))
            .and_then(|s| SubState::parse(s).map_err(Fault::from))?;
        // RFC 6665 §8.1.2: a NOTIFY's extensions the gateway does not understand are
        // dropped, not refused.
        let presence = pidf_body(view, true)?;
        let effect = lock(&self.subscriber).on_notify(
            self.now(),
            &view.call_id,
            view.to.tag(),
            view.from.tag(),
            &state,
        );
        let Some(effect) = effect else {
            return Err(Fault::new(481, "Subscription Does Not Exist"));
        };
        // A NOTIFY is a target refresh request, and may establish the dialog before
        // the 2xx (RFC 6665 §4.1.2.4).
        lock(&self.subscriber).learn_route(
            &view.call_id,
            dialog::contact_uri(view.header("Contact")),
            dialog::record_route(&view.headers),
            false,
        );
        match effect {
            NotifyEffect::State {
                presentity,
                watcher,
                approve,
            } => {
                // RFC 7248 §4.1: the first `active` NOTIFY is the SIP side's
                // authorization; the waiting watchers hear it before the state.
                for waiting in approve {
                    // The SIP side authorized the SUBSCRIBE sent in `watcher`'s name;
                    // the others who share it pass the policy.
                    if crate::authorization::mailbox(&waiting)
                        == crate::authorization::mailbox(&watcher)
                    {
                        self.submit_from(
                            &presentity,
                            &waiting,
                            Event::Subscription(Subscription::new(SubscriptionOp::Approve)),
                        )
                        .await;
                    } else {
                        self.apply_policy(&presentity, &waiting).await;
                    }
                }
                if let Some(mut presence) = presence {
                    presence.entity = presentity.clone();
                    self.submit_from(
                        &presentity,
                        &watcher,
                        Event::Presence(PresenceUpdate { presence }),
                    )
                    .await;
                }
            }
            NotifyEffect::Ended => {}
            NotifyEffect::Terminated {
                presentity,
                watcher,
                reason,
                pending,
                ..
            } => {
                lock(&self.upstream_peers).remove(&presentity);
                self.submit_deny(&presentity, &watcher, &reason).await;
                self.deny_pending(&presentity, pending, &reason).await;
            }
        }
        Ok(())
    }

    async fn submit_from(&self, from: &str, to: &str, event: Event) {
        let (Ok(from), Ok(to)) = (Address::parse(from), Address::parse(to)) else {
            return;
        };
        let mut inbound = Inbound::new(event, from, to);
        inbound.received_at_ms = unix_now_ms();
        if let Err(rejected) = self.submitter.submit(inbound).await {
            tracing::debug!(%rejected, "presence submission refused");
        }
    }

    async fn submit_deny(&self, presentity: &str, watcher: &str, reason: &str) {
        let event = Event::Subscription(Subscription {
            aggregate: true,
            reason: Some(reason.to_owned()),
            ..Subscription::new(SubscriptionOp::Deny)
        });
        self.submit_from(presentity, watcher, event).await;
    }

    /// Each watcher in `pending` (waiting for its approval) is refused: the gateway's
    /// subscription for them ended before it was authorized.
    async fn deny_pending(&self, presentity: &str, pending: Vec<String>, reason: &str) {
        for watcher in pending {
            let event = Event::Subscription(Subscription {
                reason: Some(reason.to_owned()),
                ..Subscription::new(SubscriptionOp::Deny)
            });
            self.submit_from(presentity, &watcher, event).await;
        }
    }

    /// The gateway is the presence server of `presentity` (a SIP user who publishes to
    /// it, or a registrar user the gateway cannot subscribe to): its published state, if
    /// any. `None`: the presentity's own side is subscribed to.
    fn local_presentity(
        &self,
        presentity_text: &str,
        presentity: &cpim::address::SipUri,
    ) -> Option<Option<Presence>> {
        let published = lock(&self.published).get(presentity_text).cloned();
        let local = published.is_some()
            || (self.config.outbound_proxy.is_none()
                && self.serves(presentity.host().as_str())
                && lock(&self.registrar)
                    .lookup(self.now(), presentity_text)
                    .is_none());
        local.then_some(published)
    }

    /// A watcher of another network asks to follow a SIP user (RFC 7248 §4.1). The SIP
    /// side authorizes the gateway's SUBSCRIBE: the watcher is approved on the first
    /// `active` NOTIFY (at once if the gateway's subscription is active already, or if
    /// the gateway itself is the user's presence server), refused if it is rejected.
    async fn authorize_watcher(self: &Arc<Self>, envelope: &Envelope) -> DeliveryOutcome {
        let (watcher, presentity) = match (
            translate::sip_text(&envelope.from),
            translate::sip_uri(&envelope.to),
        ) {
            (Ok(w), Ok(p)) => (w, p),
            (Err(e), _) | (_, Err(e)) => return failed(Condition::JidMalformed, e.to_string()),
        };
        let presentity_text = aor_key(&envelope.to);
        let watcher_text = envelope.from.to_string();
        if self
            .local_presentity(&presentity_text, &presentity)
            .is_some()
        {
            // The gateway is the user's presence server: its policy decides.
            self.apply_policy(&presentity_text, &watcher_text).await;
            return DeliveryOutcome::Delivered;
        }
        let decision = lock(&self.subscriber).authorize(&presentity_text, &watcher_text);
        match decision {
            // The SIP side authorized the gateway's subscription for its first watcher,
            // not for this one: the policy decides.
            Authorize::Now => self.apply_policy(&presentity_text, &watcher_text).await,
            Authorize::Wait => {}
            Authorize::Subscribe => {
                // Its failure is the waiting watchers' refusal, sent already.
                let _ = self
                    .start_upstream(watcher, presentity_text.clone(), &presentity, false)
                    .await;
            }
        }
        DeliveryOutcome::Delivered
    }

    /// Approves, leaves waiting or refuses `watcher`'s request to see SIP user `user`,
    /// as the presence authorization policy says (the user follows the watcher itself:
    /// a live SUBSCRIBE of it to the watcher's presence).
    async fn apply_policy(self: &Arc<Self>, user: &str, watcher: &str) {
        let followed = Address::parse(watcher)
            .map(|w| !lock(&self.notifier).find(user, &aor_key(&w)).is_empty())
            .unwrap_or(false);
        let verdict = lock(&self.authorization).decide(user, watcher, followed);
        self.winfo_changed(user);
        let op = match verdict {
            crate::authorization::Verdict::Approve => SubscriptionOp::Approve,
            crate::authorization::Verdict::Wait => return,
            crate::authorization::Verdict::Refuse => SubscriptionOp::Deny,
        };
        let event = Event::Subscription(Subscription {
            reason: (op == SubscriptionOp::Deny).then(|| "rejected".to_owned()),
            ..Subscription::new(op)
        });
        self.submit_from(user, watcher, event).await;
    }

    /// A watcher that was waiting for its approval gave up; the gateway's subscription
    /// ends if it served only such watchers.
    async fn withdraw_watcher(self: &Arc<Self>, envelope: &Envelope) -> DeliveryOutcome {
        let presentity = aor_key(&envelope.to);
        lock(&self.authorization).withdraw(&presentity, &envelope.from.to_string());
        self.winfo_changed(&presentity);
        let unused = lock(&self.subscriber).withdraw(&presentity, &envelope.from.to_string());
        if unused {
            return self.stop_upstream(&presentity).await;
        }
        DeliveryOutcome::Accepted
    }

    /// Starts the gateway's subscription to `presentity` as `watcher`. When it cannot
    /// even be sent, the watchers waiting for it are refused; after a `lost` dialog,
    /// the broker's watchers are told too that it ended (`giveup`).
    async fn start_upstream(
        self: &Arc<Self>,
        watcher: String,
        presentity_text: String,
        presentity: &cpim::address::SipUri,
        lost: bool,
    ) -> DeliveryOutcome {
        let peer = match self.target_for(presentity, 0, false).await {
            Ok(t) => t.peer,
            Err(outcome) => {
                let pending = lock(&self.subscriber).abandon(&presentity_text);
                let reason = if lost {
                    lock(&self.upstream_peers).remove(&presentity_text);
                    self.submit_deny(&presentity_text, &watcher, "giveup").await;
                    "giveup"
                } else {
                    "noresource"
                };
                self.deny_pending(&presentity_text, pending, reason).await;
                return outcome;
            }
        };
        lock(&self.upstream_peers).insert(presentity_text.clone(), peer);
        let sub = lock(&self.subscriber).start(
            self.now(),
            watcher,
            presentity_text,
            self.config.policy.max_expires,
            format!("{}@gw", self.unique()),
            self.unique(),
        );
        self.run_subscribe(sub, peer).await
    }

    async fn subscribe_upstream(self: &Arc<Self>, envelope: &Envelope) -> DeliveryOutcome {
        let (watcher, presentity) = match (
            translate::sip_text(&envelope.from),
            translate::sip_uri(&envelope.to),
        ) {
            (Ok(w), Ok(p)) => (w, p),
            (Err(e), _) | (_, Err(e)) => return failed(Condition::JidMalformed, e.to_string()),
        };
        let presentity_text = aor_key(&envelope.to);
        // A SIP user who publishes to the gateway has the gateway as presence server:
        // nothing to subscribe to; the watchers get the published state.
        if let Some(published) = self.local_presentity(&presentity_text, &presentity) {
            if let Some(presence) = published {
                let watcher_text = envelope.from.to_string();
                self.submit_from(
                    &presentity_text,
                    &watcher_text,
                    Event::Presence(PresenceUpdate { presence }),
                )
                .await;
            }
            return DeliveryOutcome::Delivered;
        }
        // The subscription started for the first watcher's approval serves them all.
        if lock(&self.subscriber).mark_aggregate(&presentity_text) {
            return DeliveryOutcome::Delivered;
        }
        self.start_upstream(watcher, presentity_text, &presentity, false)
            .await
    }

    async fn run_subscribe(
        self: &Arc<Self>,
        mut sub: crate::subscription::OutSubscription,
        peer: Peer,
    ) -> DeliveryOutcome {
        for _ in 0..3 {
            let final_ = self.send_subscribe(&sub, peer).await;
            let response = final_.response.as_ref();
            let header = |name: &str| response.and_then(|r| r.header(name));
            let to_tag = header("To")
                .and_then(|t| NameAddr::parse("To", t).ok())
                .and_then(|t| t.tag().map(str::to_owned));
            let granted =
                header("Expires").and_then(|e| headers::parse_delta_seconds("Expires", e).ok());
            let min = header("Min-Expires")
                .and_then(|e| headers::parse_delta_seconds("Min-Expires", e).ok());
            if let (Some(r), true) = (response, (200..300).contains(&final_.status)) {
                lock(&self.subscriber).learn_route(
                    &sub.call_id,
                    dialog::contact_uri(r.header("Contact")),
                    dialog::record_route(&r.headers),
                    true,
                );
            }
            let next = lock(&self.subscriber).on_response(
                self.now(),
                &sub.call_id,
                final_.status,
                to_tag.as_deref(),
                granted,
                min,
            );
            match next {
                None => return translate::presence_outcome_for(final_.status, &final_.reason),
                Some(SubscriberEvent::Subscribe(retry)) => sub = retry,
                Some(SubscriberEvent::Terminated {
                    presentity,
                    watcher,
                    reason,
                    pending,
                }) => {
                    lock(&self.upstream_peers).remove(&presentity);
                    self.submit_deny(&presentity, &watcher, &reason).await;
                    self.deny_pending(&presentity, pending, &reason).await;
                    return translate::presence_outcome_for(final_.status, &final_.reason);
                }
                Some(SubscriberEvent::Restart {
                    presentity,
                    watcher,
                }) => {
                    tracing::debug!(
                        %presentity,
                        status = final_.status,
                        "refresh failed: subscribing anew"
                    );
                    return Box::pin(self.resubscribe(watcher, presentity)).await;
                }
            }
        }
        failed(
            Condition::NotAcceptable,
            "the notifier keeps refusing the duration".into(),
        )
    }

    async fn send_subscribe(
        &self,
        sub: &crate::subscription::OutSubscription,
        peer: Peer,
    ) -> Final {
        // Inside the dialog: to the notifier's Contact along the route set (RFC 3261
        // §12.2.1.1), not to the address of record, which a record-routing proxy
        // refuses with 404 once the dialog exists.
        let (uri, routes, peer) = if sub.remote_tag.is_some() {
            let target = sub.remote_target.as_deref().unwrap_or(&sub.presentity);
            let route_set = sub.route_set.as_deref().unwrap_or_default();
            let hop = dialog::in_dialog(target, route_set);
            // Without a route set the configured outbound proxy still carries every
            // request (no proxy asked to stay in the path), and without a Contact there
            // is nowhere else to go.
            let peer = if route_set.is_empty()
                && (sub.remote_target.is_none() || self.config.outbound_proxy.is_some())
            {
                peer
            } else {
                self.hop_peer(&hop.next_hop, peer).await
            };
            (hop.request_uri, hop.routes, peer)
        } else {
            (sub.presentity.clone(), Vec::new(), peer)
        };
        let mut headers: Vec<(String, String)> = routes
            .iter()
            .map(|r| ("Route".to_owned(), r.clone()))
            .collect();
        headers.extend([
            ("Event".to_owned(), "presence".to_owned()),
            ("Accept".to_owned(), PIDF.to_owned()),
            ("Expires".to_owned(), sub.expires.to_string()),
            (
                "Contact".to_owned(),
                contact_of(&self.sent_by(peer.transport), peer.transport),
            ),
        ]);
        let from = format!("<{}>;tag={}", sub.watcher, sub.local_tag);
        let to = match &sub.remote_tag {
            Some(tag) => format!("<{}>;tag={tag}", sub.presentity),
            None => format!("<{}>", sub.presentity),
        };
        self.transact_auth(peer, "SUBSCRIBE", &uri, |branch, sent_by, auth| {
            let mut all = headers.clone();
            all.extend(auth.iter().cloned());
            OutRequest {
                method: "SUBSCRIBE",
                uri: &uri,
                via_transport: peer.transport.token(),
                via_sent_by: sent_by,
                branch,
                from: &from,
                to: &to,
                call_id: &sub.call_id,
                cseq: sub.next_cseq + u32::from(!auth.is_empty()),
                max_forwards: 70,
                headers: &all,
                body: None,
            }
            .to_bytes()
        })
        .await
    }

    /// A new, out-of-dialog subscription to `presentity` for `watcher` after the old
    /// dialog was lost; if it fails, the watchers hear why (an aggregate `Deny`).
    async fn resubscribe(self: &Arc<Self>, watcher: String, presentity: String) -> DeliveryOutcome {
        let uri = match cpim::address::SipUri::parse(&presentity) {
            Ok(uri) => uri,
            Err(e) => return failed(Condition::JidMalformed, e.to_string()),
        };
        self.start_upstream(watcher, presentity, &uri, true).await
    }

    /// Where a request whose next hop is `uri` (a route or a remote target) goes;
    /// `fallback` when it cannot be resolved.
    async fn hop_peer(&self, uri: &str, fallback: Peer) -> Peer {
        let Ok(uri) = cpim::address::SipUri::parse(uri) else {
            return fallback;
        };
        match crate::transport::resolve(&uri).await {
            Ok(peer) if self.transports.can_send(peer.transport) => peer,
            _ => fallback,
        }
    }

    async fn unsubscribe_upstream(self: &Arc<Self>, envelope: &Envelope) -> DeliveryOutcome {
        self.stop_upstream(&aor_key(&envelope.to)).await
    }

    async fn stop_upstream(self: &Arc<Self>, presentity: &str) -> DeliveryOutcome {
        let sub = lock(&self.subscriber).stop(self.now(), presentity);
        let peer = lock(&self.upstream_peers).remove(presentity);
        if let (Some(sub), Some(peer)) = (sub, peer) {
            let final_ = self.send_subscribe(&sub, peer).await;
            return translate::presence_outcome_for(final_.status, &final_.reason);
        }
        DeliveryOutcome::Accepted
    }

    // -----------------------------------------------------------------------------------
    // PUBLISH and REGISTER

    async fn on_publish(&self, m: &RawMessage, view: &RequestView, peer: Peer) {
        match self.publish_inner(view).await {
            Ok((etag, expires)) => {
                let ok = Fault::new(200, "OK")
                    .with_header("SIP-ETag", etag)
                    .with_header("Expires", expires.to_string());
                self.reply(m, peer, &ok, None).await;
            }
            Err(fault) => self.reply(m, peer, &fault, None).await,
        }
    }

    async fn publish_inner(&self, view: &RequestView) -> Result<(String, u32), Fault> {
        presence_only(view)?;
        let presentity = translate::recipient(view)?;
        if !self.serves(presentity.domain()) {
            return Err(Fault::new(404, "Not Found"));
        }
        let aor = aor_key(&presentity);
        let expires = view
            .header("Expires")
            .map(|e| headers::parse_delta_seconds("Expires", e))
            .transpose()?;
        let presence = pidf_body(view, false)?;
        let outcome = lock(&self.publications).on_publish(
            self.now(),
            &aor,
            view.header("SIP-If-Match").map(str::trim),
            expires,
            presence.is_some(),
            || self.unique(),
        )?;
        match outcome {
            PublishOutcome::Published { etag, expires } => {
                if let Some(mut p) = presence {
                    p.entity = aor.clone();
                    lock(&self.published).insert(aor.clone(), p.clone());
                    self.submit_from(&aor, &aor, Event::Presence(PresenceUpdate { presence: p }))
                        .await;
                }
                Ok((etag, expires))
            }
            PublishOutcome::Refreshed { etag, expires } => Ok((etag, expires)),
            PublishOutcome::Removed { aor } => {
                self.submit_closed(&aor).await;
                Ok((self.unique(), 0))
            }
        }
    }

    /// The presentity withdrew its published state: its watchers see it offline.
    async fn submit_closed(&self, aor: &str) {
        lock(&self.published).remove(aor);
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{}\"><tuple id=\"gw\"><status><basic>closed</basic></status></tuple></presence>",
            xml_escape(aor)
        );
        if let Ok(p) = Presence::parse(xml.as_bytes()) {
            self.submit_from(aor, aor, Event::Presence(PresenceUpdate { presence: p }))
                .await;
        }
    }

    async fn on_register(&self, m: &RawMessage, view: &RequestView, peer: Peer) {
        let result = lock(&self.registrar).on_register(self.now(), view, peer);
        match result {
            Ok(ok) => {
                let mut fault = Fault::new(200, "OK");
                for contact in ok {
                    fault = fault.with_header("Contact", contact);
                }
                self.reply(m, peer, &fault, None).await;
            }
            Err(fault) => self.reply(m, peer, &fault, None).await,
        }
    }

    // -----------------------------------------------------------------------------------
    // sending

    /// Where a request for `uri` goes: a registered contact, the outbound proxy, or
    /// the URI's host (RFC 3263 without DNS SRV: the host's address records). A user of
    /// a registrar domain is reached only where it registered: never through DNS.
    /// `may_wait`: a message for an unregistered user may wait for it in the spool
    /// (`unregistered_users = "store"`).
    async fn target_for(
        &self,
        uri: &cpim::address::SipUri,
        size: usize,
        may_wait: bool,
    ) -> Result<Target, DeliveryOutcome> {
        let aor = aor_key(&Address::Sip(uri.clone()));
        let registered = {
            let registrar = lock(&self.registrar);
            match registrar.lookup_contact(self.now(), &aor) {
                Some((peer, contact)) => Some((peer, contact_transport(contact))),
                None if registrar.serves(uri.host().as_str()) => {
                    drop(registrar);
                    return Err(self.unregistered(&aor, may_wait));
                }
                None => None,
            }
        };
        let explicit = uri
            .param("transport")
            .flatten()
            .map(str::to_ascii_lowercase);
        let mut target = if let Some((peer, contact_transport)) = registered {
            Target {
                peer,
                // What the contact itself says about its transports.
                udp_only: contact_transport.as_deref() == Some("udp"),
                registered: true,
                upgraded: false,
            }
        } else if let Some(proxy) = self.config.outbound_proxy {
            Target::plain(proxy)
        } else {
            let peer = crate::transport::resolve(uri)
                .await
                .map_err(|e| failed(Condition::RemoteServerNotFound, e.to_string()))?;
            Target::plain(peer)
        };
        if explicit.as_deref() == Some("udp") {
            target.udp_only = true;
        }
        if target.peer.transport == Transport::Udp && size > self.config.max_udp_message {
            // RFC 3428 §8: too large for UDP; a congestion-controlled transport where the
            // destination may take one, or at once policy-violation (RFC 7572 §6) where
            // it cannot: waiting would not make it fit.
            let too_big = |why: &str| {
                failed(
                    Condition::PolicyViolation,
                    format!(
                        "a {size}-byte MESSAGE is larger than {} bytes and {why}",
                        self.config.max_udp_message
                    ),
                )
            };
            if target.udp_only {
                return Err(too_big(&format!("{uri} takes UDP only")));
            }
            if !self.transports.can_send(Transport::Tcp) {
                return Err(too_big("the gateway has no TCP transport"));
            }
            target.peer.transport = Transport::Tcp;
            target.upgraded = true;
        }
        let peer = target.peer;
        if !self.transports.can_send(peer.transport) {
            return Err(failed(
                Condition::ServiceUnavailable,
                format!("no {} transport configured", peer.transport.token()),
            ));
        }
        Ok(target)
    }

    /// The outcome for a message to `aor`, a user of a registrar domain with no binding.
    fn unregistered(&self, aor: &str, may_wait: bool) -> DeliveryOutcome {
        if may_wait && self.config.unregistered_store {
            tracing::debug!(to = %aor, "not registered: the message waits");
            DeliveryOutcome::Waiting {
                after: UNREGISTERED_RETRY,
            }
        } else {
            failed(
                Condition::RecipientUnavailable,
                format!("{aor} is not registered"),
            )
        }
    }

    /// A message waits for its recipient, a registrar user, to register: a sender that
    /// asked for notifications is told once that it is stored (RFC 5438 §5.3
    /// `processing`/`stored`; an IMDN where the SIP sender asked for processing
    /// notifications, an event for an app; XMPP has no form for it).
    async fn tell_stored(&self, envelope: &Envelope) {
        let Event::Message(m) = &envelope.event else {
            return;
        };
        if !m.receipts.any() {
            return;
        }
        {
            let mut told = lock(&self.told_stored);
            if told.len() >= MAX_TOLD_STORED {
                told.clear();
            }
            if !told.insert(envelope.id) {
                return;
            }
        }
        let event = Event::Notification(cpim::event::Notification {
            message_id: envelope.id.to_string(),
            status: cpim::event::NotificationStatus::Stored,
        });
        self.submit_from(&envelope.to.to_string(), &envelope.from.to_string(), event)
            .await;
    }

    fn remember_cpim(&self, aor: &str, takes: bool) {
        let mut known = lock(&self.takes_cpim);
        if known.len() >= MAX_REMEMBERED_CONTACTS && !known.contains_key(aor) {
            known.clear();
        }
        known.insert(aor.to_owned(), takes);
    }

    async fn send_message(self: &Arc<Self>, envelope: &Envelope) -> DeliveryOutcome {
        let aor = aor_key(&envelope.to);
        let known = lock(&self.takes_cpim).get(&aor).copied();
        let cpim = known.unwrap_or_else(|| {
            self.config
                .cpim_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(envelope.to.domain()))
        });
        let mut attempt = match self.message_attempt(envelope, cpim).await {
            Ok(a) => a,
            Err(outcome) => {
                if matches!(outcome, DeliveryOutcome::Waiting { after } if after == UNREGISTERED_RETRY)
                {
                    self.tell_stored(envelope).await;
                }
                return outcome;
            }
        };
        // RFC 3261 §21.4.13: a 415 lists in `Accept` what the UA takes. A text-only
        // phone refusing CPIM gets the text as it is (and is remembered as such); the
        // receipts asked for cannot be requested from it.
        if attempt.1 && attempt.0.status == 415 && takes_plain(attempt.0.response.as_ref()) {
            self.remember_cpim(&aor, false);
            tracing::debug!(to = %aor, "415 to message/cpim: sending the text as it is");
            attempt = match self.message_attempt(envelope, false).await {
                Ok(a) => a,
                Err(outcome) => return outcome,
            };
        }
        let final_ = attempt.0;
        let retry_after = final_
            .response
            .as_ref()
            .and_then(|r| r.header("Retry-After"))
            .and_then(|r| headers::parse_retry_after(r).ok());
        if final_.status == 0 {
            // Transport error (RFC 3261 §8.1.3.1: like a 503): the peer is unreachable
            // for every message, so this one holds no one up; try again later.
            return DeliveryOutcome::Waiting {
                after: Duration::from_secs(5),
            };
        }
        translate::outcome_for(final_.status, retry_after, &final_.reason)
    }

    /// One MESSAGE transaction for `envelope`, as CPIM when `cpim`: its final response
    /// and whether CPIM was sent.
    async fn message_attempt(
        self: &Arc<Self>,
        envelope: &Envelope,
        cpim: bool,
    ) -> Result<(Final, bool), DeliveryOutcome> {
        let options = OutboundOptions {
            cpim,
            now_unix_secs: i64::try_from(unix_now_ms() / 1000).unwrap_or(0),
        };
        let out = match translate::message_out(envelope, &options) {
            Ok(Some(out)) => out,
            Ok(None) => return Err(DeliveryOutcome::Accepted),
            Err(e) => return Err(failed(Condition::NotAcceptable, e.to_string())),
        };
        let sent_cpim = is_cpim_type(&out.content_type);
        let uri = match translate::sip_uri(&envelope.to) {
            Ok(u) => u,
            Err(e) => return Err(failed(Condition::JidMalformed, e.to_string())),
        };
        let size = out.body.len() + 600;
        let target = self.target_for(&uri, size, true).await?;
        let peer = target.peer;
        let from = format!("<{}>;tag={}", out.from, self.unique());
        let to = format!("<{}>", out.to);
        // Without a thread to carry (RFC 7572 §6), the Call-ID is the gateway id: the same
        // on every attempt and after a restart, so that a receiver can drop a repeat.
        let call_id = out
            .call_id
            .clone()
            .unwrap_or_else(|| format!("{}@gw", envelope.id));
        let cseq = u32::try_from(self.counter.load(Ordering::Relaxed) % 1_000_000).unwrap_or(1) + 1;
        let headers = out.headers.clone();
        let final_ = self
            .transact_auth(peer, "MESSAGE", &out.to, |branch, sent_by, auth| {
                let mut all = headers.clone();
                all.extend(auth.iter().cloned());
                OutRequest {
                    method: "MESSAGE",
                    uri: &out.to,
                    via_transport: peer.transport.token(),
                    via_sent_by: sent_by,
                    branch,
                    from: &from,
                    to: &to,
                    call_id: &call_id,
                    cseq: cseq + u32::from(!auth.is_empty()),
                    // 0 when the hop count is spent: the next element answers 483.
                    max_forwards: envelope.hops,
                    headers: &all,
                    body: Some((&out.content_type, &out.body)),
                }
                .to_bytes()
            })
            .await;
        if final_.status == 0 && target.upgraded && target.registered {
            // A phone registered over UDP without a TCP listener: the message cannot
            // reach it, now or later (RFC 7572 §6).
            return Err(failed(
                Condition::PolicyViolation,
                format!(
                    "a {size}-byte MESSAGE is larger than {} bytes and the registered contact of {} takes no TCP",
                    self.config.max_udp_message, out.to
                ),
            ));
        }
        Ok((final_, sent_cpim))
    }

    /// Runs a client transaction, answering one 401/407 challenge with configured
    /// credentials (RFC 3261 §22.2, §22.3). `build` gets the branch, the Via sent-by
    /// and the authorization headers to add.
    async fn transact_auth<F>(&self, peer: Peer, method: &str, uri: &str, build: F) -> Final
    where
        F: Fn(&str, &str, &[(String, String)]) -> Vec<u8>,
    {
        let first = self.transact(peer, |b, s| build(b, s, &[])).await;
        if !matches!(first.status, 401 | 407) || self.config.credentials.is_empty() {
            return first;
        }
        let Some(response) = &first.response else {
            return first;
        };
        let (challenge_name, answer_name) = if first.status == 401 {
            ("WWW-Authenticate", "Authorization")
        } else {
            ("Proxy-Authenticate", "Proxy-Authorization")
        };
        let Some(challenge) = response.header(challenge_name) else {
            return first;
        };
        let cnonce = self.unique();
        let Some(value) = auth::answer(challenge, &self.config.credentials, method, uri, &cnonce)
        else {
            return first;
        };
        let extra = vec![(answer_name.to_owned(), value)];
        self.transact(peer, |b, s| build(b, s, &extra)).await
    }

    /// Runs one client transaction (RFC 3261 §17.1.2). Status 0 = transport error,
    /// 408 = Timer F.
    async fn transact<F>(&self, peer: Peer, build: F) -> Final
    where
        F: Fn(&str, &str) -> Vec<u8>,
    {
        let branch = self.branch();
        let sent_by = self.sent_by(peer.transport);
        let bytes = build(&branch, &sent_by);
        let (tx, mut rx) = mpsc::channel(8);
        lock(&self.clients).insert(branch.clone(), tx);
        let result = async {
            if let Err(e) = self.transports.send(peer, bytes.clone()).await {
                return Final {
                    status: 0,
                    reason: e.to_string(),
                    response: None,
                };
            }
            let mut machine = ClientTransaction::new(self.now(), peer.transport.reliable(), self.config.timers);
            loop {
                let wake = machine
                    .poll_timeout()
                    .map(|at| self.epoch + at)
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
                tokio::select! {
                    response = rx.recv() => {
                        let Some(response) = response else { continue };
                        let status = response.status().unwrap_or(500);
                        if machine.on_response(self.now(), status) {
                            return Final { status, reason: response.start[2].clone(), response: Some(response) };
                        }
                    }
                    () = tokio::time::sleep_until(wake) => {
                        match machine.on_timeout(self.now()) {
                            ClientAction::Retransmit => { let _ = self.transports.send(peer, bytes.clone()).await; }
                            ClientAction::TimedOut => return Final { status: 408, reason: "Request Timeout".into(), response: None },
                            ClientAction::Wait => {}
                        }
                    }
                }
            }
        }
        .await;
        lock(&self.clients).remove(&branch);
        result
    }

    // -----------------------------------------------------------------------------------
    // timers

    /// Keeps the watcher dialogs in the spool when they changed (at most once a tick):
    /// after a restart they are ended cleanly instead of being left to a 481.
    fn keep_watchers(&self) {
        let sides: Vec<(DialogKey, Peer)> = {
            let watchers = lock(&self.watchers);
            let mut sides: Vec<(DialogKey, Peer)> =
                watchers.iter().map(|(k, s)| (k.clone(), s.peer)).collect();
            sides.sort_by(|a, b| a.0.cmp(&b.0));
            sides
        };
        let keys: Vec<DialogKey> = sides.iter().map(|(k, _)| k.clone()).collect();
        if *lock(&self.kept_watchers) == keys {
            return;
        }
        let kept: Vec<KeptWatcher> = {
            let notifier = lock(&self.notifier);
            sides
                .iter()
                .filter_map(|(key, peer)| {
                    let d = notifier.get(key)?;
                    Some(KeptWatcher {
                        call_id: d.call_id.clone(),
                        local_tag: d.local_tag.clone(),
                        remote_tag: d.remote_tag.clone(),
                        remote_target: d.remote_target.clone(),
                        route_set: d.route_set.clone(),
                        watcher: d.watcher.clone(),
                        presentity: d.presentity.clone(),
                        event_id: d.event_id.clone(),
                        next_cseq: d.next_cseq,
                        transport: peer.transport.token().to_owned(),
                        peer: peer.addr,
                    })
                })
                .collect()
        };
        let value = if kept.is_empty() {
            None
        } else {
            match serde_json::to_vec(&kept) {
                Ok(v) => Some(v),
                Err(error) => {
                    tracing::warn!(%error, "watcher dialogs cannot be kept");
                    return;
                }
            }
        };
        if self.state.put(KEPT_WATCHERS, value) {
            *lock(&self.kept_watchers) = keys;
        }
    }

    /// After a restart: the watcher dialogs of the last run are gone with it, so each
    /// watcher gets a final NOTIFY `terminated;reason=deactivated` — RFC 6665 §4.1.3:
    /// subscribe again at once — rather than silence until its refresh gets 481.
    async fn end_kept_watchers(self: Arc<Self>) {
        let Some(bytes) = self.state.recovered().get(KEPT_WATCHERS).cloned() else {
            return;
        };
        let kept: Vec<KeptWatcher> = match serde_json::from_slice(&bytes) {
            Ok(k) => k,
            Err(error) => {
                tracing::warn!(%error, "the kept watcher dialogs cannot be read");
                Vec::new()
            }
        };
        tracing::info!(
            watchers = kept.len(),
            "ending the SIP watcher dialogs of the last run"
        );
        let now = self.now();
        let mut ends = Vec::new();
        for k in kept {
            let transport = match k.transport.as_str() {
                "TCP" => Transport::Tcp,
                "TLS" => Transport::Tls,
                _ => Transport::Udp,
            };
            let dialog = WatcherDialog {
                call_id: k.call_id,
                local_tag: k.local_tag,
                remote_tag: k.remote_tag,
                remote_target: k.remote_target,
                route_set: k.route_set,
                watcher: k.watcher,
                presentity: k.presentity,
                event_id: k.event_id,
                // NOTIFYs may have been sent after the dialog was kept: stay above them.
                next_cseq: k.next_cseq.saturating_add(1000),
                expires_at: now,
                active: true,
                fetch: false,
            };
            let peer = Peer {
                transport,
                addr: k.peer,
            };
            let this = self.clone();
            ends.push(tokio::spawn(async move {
                let state = SubState::Terminated {
                    reason: Some("deactivated".to_owned()),
                    retry_after: None,
                };
                this.send_notify(&dialog, peer, state, None).await
            }));
        }
        for end in ends {
            let _ = end.await;
        }
        // The next tick writes the dialogs of this run over the old ones (no key is
        // empty, so this never equals a real set).
        *lock(&self.kept_watchers) = vec![(String::new(), String::new())];
    }

    async fn ticker(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(self.config.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => {
                    self.metrics.set_connected(false);
                    return;
                }
            }
            let now = self.now();
            self.keep_watchers();
            lock(&self.server).expire(now);
            self.winfo_expire(now).await;
            let expired = lock(&self.notifier).expire(now);
            for dialog in expired {
                let key = (dialog.call_id.clone(), dialog.local_tag.clone());
                let side = lock(&self.watchers).remove(&key);
                // A fetch was never a subscription at the broker (it was a probe).
                if !dialog.fetch {
                    self.submit_unsubscribe(&dialog).await;
                }
                if let Some(side) = side {
                    let this = self.clone();
                    tokio::spawn(async move {
                        let state = SubState::Terminated {
                            reason: Some("timeout".to_owned()),
                            retry_after: None,
                        };
                        this.send_notify(&dialog, side.peer, state, None).await;
                    });
                }
            }
            let due = lock(&self.subscriber).due(now);
            for event in due {
                match event {
                    SubscriberEvent::Subscribe(sub) => {
                        let peer = lock(&self.upstream_peers).get(&sub.presentity).copied();
                        if let Some(peer) = peer {
                            // RFC 7248 §7: before refreshing a watcher's long-lived
                            // subscription, probe that watcher (its XMPP server must
                            // answer), which puts an equal burden on its network.
                            self.submit_from(
                                &sub.presentity,
                                &sub.watcher,
                                Event::Subscription(Subscription::new(SubscriptionOp::Probe)),
                            )
                            .await;
                            let this = self.clone();
                            tokio::spawn(async move {
                                this.run_subscribe(sub, peer).await;
                            });
                        }
                    }
                    SubscriberEvent::Terminated {
                        presentity,
                        watcher,
                        reason,
                        pending,
                    } => {
                        lock(&self.upstream_peers).remove(&presentity);
                        self.submit_deny(&presentity, &watcher, &reason).await;
                        self.deny_pending(&presentity, pending, &reason).await;
                    }
                    SubscriberEvent::Restart {
                        presentity,
                        watcher,
                    } => {
                        let this = self.clone();
                        tokio::spawn(async move {
                            this.resubscribe(watcher, presentity).await;
                        });
                    }
                }
            }
            let gone = lock(&self.publications).expire(now);
            for aor in gone {
                self.submit_closed(&aor).await;
            }
            lock(&self.registrar).expire(now);
        }
    }
}

fn failed(condition: Condition, text: String) -> DeliveryOutcome {
    DeliveryOutcome::Failed {
        condition,
        text: Some(text),
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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
        match &envelope.event {
            Event::Message(_) | Event::Composing(_) | Event::Notification(_) => {
                core.send_message(&envelope).await
            }
            Event::Presence(p) => {
                let body = translate::pidf_for_watcher(&p.presence, aor_key(&envelope.from));
                core.deliver_to_watchers(&envelope, Some(body), None).await
            }
            Event::Subscription(s) => match (s.op, s.aggregate) {
                (SubscriptionOp::Subscribe, true) => core.subscribe_upstream(&envelope).await,
                (SubscriptionOp::Unsubscribe, true) => core.unsubscribe_upstream(&envelope).await,
                (SubscriptionOp::Subscribe, false) => core.authorize_watcher(&envelope).await,
                (SubscriptionOp::Unsubscribe, false) => core.withdraw_watcher(&envelope).await,
                (SubscriptionOp::Approve, _) => {
                    core.deliver_to_watchers(&envelope, None, None).await
                }
                (SubscriptionOp::Deny, _) => {
                    let reason = s.reason.clone().unwrap_or_else(|| "rejected".to_owned());
                    core.deliver_to_watchers(&envelope, None, Some(reason))
                        .await
                }
                (SubscriptionOp::Probe, _) => DeliveryOutcome::Accepted,
            },
        }
    }
}
