//! The thin driver: one XEP-0114 component connection per component domain, kept alive
//! with XEP-0199 pings, reconnected with exponential backoff and jitter, fed from an
//! ordered outbound queue.
//!
//! What a server expects of a component is answered here: disco#info (identity category
//! `gateway`; features for receipts, chat states, markers, ping and `jid\20escaping`),
//! XEP-0199 pings, and `service-unavailable` for every other `get`/`set`, so that every
//! request gets an answer. Messages and presence go through [`crate::translate`] to the
//! broker; what the broker refuses is answered with an XMPP error stanza.
//!
//! XEP-0114 has no acknowledgements: a stanza written just before the server stops is
//! lost without a trace. So the link keeps what it wrote until the server has *read*
//! it: after writing, it sends an XEP-0199 ping to the server (an "ack barrier"); the
//! server handles a stream's stanzas in order, so its answer (result or error) confirms
//! every stanza written before the ping. One barrier covers everything written
//! meanwhile (one round trip per batch, not per stanza). What is not confirmed when the
//! stream ends is written again on the next stream, ahead of anything newer, under the
//! same stanza ids. A delivery is answered as soon as it is written, so deliveries to
//! one address pipeline; a crash of the gateway does not lose what it wrote (the kernel
//! still sends it), only the server failing at the same moment would. A barrier without
//! an answer is sent again after a ping interval ([`crate::confirm`]).
//!
//! Liveness is the link's own: a stream on which the server has answered nothing for
//! three ping intervals (on this stream or, for this link's iqs, on another) is
//! reconnected. The answers may come on another link's stream, and one server listener
//! may carry several domains on one stream: see the `mesh` module. The transport (TCP, guard) is
//! in the `connector` module.

#![allow(clippy::disallowed_methods)] // a driver: pings, liveness and reconnects run on the clock (its parts inherit this)

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use minidom::rxml::NcName;
use minidom::Element;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::Component;
use xmpp_parsers::stanza::Stanza;

use cpim::event::{Event, NotificationStatus};
use cpim::Condition;
use cpim_broker::backoff::Backoff;
use cpim_broker::metrics::AdapterMetrics;
use cpim_broker::{
    Adapter, AdapterContext, AddressStyle, DeliveryOutcome, DeliveryPolicy, Envelope, Submitter,
};

use crate::caps::{Profile, Profiles};
use crate::confirm::{own_id, IdKind, Unconfirmed};
use crate::guard::Limits;
use crate::resources::Resources;
use crate::translate::{self, IqRequest, OutboundOptions, StanzaClass, StanzaFault};

mod connector;
mod mesh;

use connector::NoDelayConnector;
use mesh::{own_iq, Control, Mesh, OwnIq, Probes, Routed, PROBE_WAIT};

/// The component namespace: stanzas on a component stream live in it.
const NS: &str = "jabber:component:accept";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_PING: &str = "urn:xmpp:ping";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

/// The features a component announces in disco#info.
pub const FEATURES: [&str; 7] = [
    NS_DISCO_INFO,
    NS_PING,
    "urn:xmpp:receipts",
    "http://jabber.org/protocol/chatstates",
    "urn:xmpp:chat-markers:0",
    "jid\\20escaping",
    "urn:xmpp:hints",
];

/// The adapter's settings (from `[adapters.NAME]` with `type = "xmpp"`).
#[derive(Clone)]
pub struct XmppConfig {
    /// The adapter's name.
    pub name: String,
    /// `host:port` of the server's component listener.
    pub server: String,
    /// Component domains and their shared secrets.
    pub components: Vec<(String, String)>,
    /// Domains whose users live on the server.
    pub user_domains: Vec<String>,
    /// How messages are written (type, RFC 7572 §5).
    pub outbound: OutboundOptions,
    /// Interval of keepalive pings on each component stream.
    pub ping_interval: Duration,
    /// First reconnect delay; doubles up to `max_backoff`, with ±20 % jitter.
    pub min_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
    /// What a received stanza may be (depth, width, size): checked on the stream's bytes
    /// before any parser sees them ([`crate::guard`]).
    pub limits: Limits,
}

impl std::fmt::Debug for XmppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppConfig")
            .field("name", &self.name)
            .field("server", &self.server)
            .field(
                "components",
                &self.components.iter().map(|(d, _)| d).collect::<Vec<_>>(),
            )
            .field("user_domains", &self.user_domains)
            .finish_non_exhaustive()
    }
}

/// What the link task is asked to write, and where it says it was written (`None`: what
/// a stream left unconfirmed, handed on with nobody waiting).
struct Outgoing {
    stanzas: Vec<Element>,
    written: Option<oneshot::Sender<()>>,
}

/// How one connected stream ended.
enum ServeEnd {
    /// The gateway stops.
    Stop,
    /// The stream failed or went silent: reconnect.
    Lost,
    /// Link 0's stream carries this domain: ride on it.
    Ride,
}

/// tokio-xmpp's read timeouts, out of the way: liveness is the link's own (its pings may
/// be answered on another stream).
const QUIET_STREAM: Duration = Duration::from_secs(30 * 24 * 3600);
/// The least time allowed for a connection and its handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Capacity of each link's outbound queue (the broker's queues hold the rest).
const LINK_QUEUE: usize = 4096;

/// Deliveries kept for writing again at most, per link, while the server has not
/// confirmed them: a server that never answers the ack ping must not grow the gateway's
/// memory without bound (beyond it, the oldest are no longer kept).
const MAX_UNCONFIRMED: usize = 100_000;

/// The XMPP adapter.
pub struct XmppAdapter {
    name: String,
    domains: Vec<String>,
    outbound: OutboundOptions,
    links: HashMap<String, mpsc::Sender<Outgoing>>,
    /// What the bridged users can do, for their capabilities (shared with the links,
    /// which answer disco#info).
    profiles: Arc<Mutex<Profiles>>,
}

impl std::fmt::Debug for XmppAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppAdapter")
            .field("name", &self.name)
            .field("domains", &self.domains)
            .finish_non_exhaustive()
    }
}

impl XmppAdapter {
    /// Starts one link task per component domain and returns the adapter.
    pub fn start(config: XmppConfig, context: AdapterContext) -> Arc<XmppAdapter> {
        let mut links = HashMap::new();
        // Shared by the links: a server may deliver a contact's presence on any of them.
        let resources = Arc::new(Mutex::new(Resources::new(MAX_COMPOSED_CONTACTS)));
        let profiles = Arc::new(Mutex::new(Profiles::new(MAX_PROFILED_USERS)));
        let up: Arc<Vec<AtomicBool>> = Arc::new(
            config
                .components
                .iter()
                .map(|_| AtomicBool::new(false))
                .collect(),
        );
        let mut queues = Vec::new();
        let mut receivers = Vec::new();
        let (mut routed, mut control) = (Vec::new(), Vec::new());
        for (domain, _) in &config.components {
            let (tx, rx) = mpsc::channel(LINK_QUEUE);
            links.insert(domain.to_ascii_lowercase(), tx.clone());
            queues.push(tx);
            let (routed_tx, routed_rx) = mpsc::unbounded_channel();
            let (control_tx, control_rx) = mpsc::unbounded_channel();
            routed.push(routed_tx);
            control.push(control_tx);
            receivers.push((rx, routed_rx, control_rx));
        }
        let mesh = Arc::new(Mesh {
            domains: config
                .components
                .iter()
                .map(|(d, _)| d.to_ascii_lowercase())
                .collect(),
            queues,
            routed,
            control,
        });
        for ((index, (domain, secret)), (rx, routed, control)) in
            config.components.iter().enumerate().zip(receivers)
        {
            let (refusals, refused) = mpsc::unbounded_channel();
            let link = Link {
                adapter: config.name.clone(),
                domain: domain.clone(),
                secret: secret.clone(),
                server: config.server.clone(),
                ping_interval: config.ping_interval,
                min_backoff: config.min_backoff,
                max_backoff: config.max_backoff,
                limits: config.limits,
                submitter: context.submitter.clone(),
                metrics: context.metrics.clone(),
                shutdown: context.shutdown.clone(),
                up: up.clone(),
                index,
                ping_counter: AtomicU64::new(0),
                server_domain: config.user_domains.first().cloned().unwrap_or_default(),
                refusals,
                overloaded: AtomicBool::new(false),
                resources: resources.clone(),
                profiles: profiles.clone(),
                mesh: mesh.clone(),
                routed,
                control,
                riders: vec![false; mesh.domains.len()],
            };
            tokio::spawn(link.run(rx, refused));
        }
        let mut domains = config.user_domains.clone();
        domains.extend(config.components.iter().map(|(d, _)| d.clone()));
        Arc::new(XmppAdapter {
            name: config.name,
            domains,
            outbound: config.outbound,
            links,
            profiles,
        })
    }
}

impl XmppAdapter {
    /// What the envelope's sender (a bridged user, by its bare JID as written on the
    /// wire, as disco#info queries name it) can do, after what a notification from it
    /// says: a text-only phone (no display notification will come) announces receipts
    /// only from now on; one that sends a displayed marker after all takes them.
    fn sender_profile(&self, envelope: &Envelope) -> Profile {
        let cpim::Address::Xmpp(jid) = &envelope.from else {
            return Profile::Full;
        };
        let text = jid.to_string();
        let bare = text.split('/').next().unwrap_or_default();
        let mut profiles = self.profiles.lock().unwrap_or_else(PoisonError::into_inner);
        if let Event::Notification(n) = &envelope.event {
            match n.status {
                NotificationStatus::DisplayUnknown => {
                    profiles.set(bare, Profile::TextOnly);
                }
                NotificationStatus::Displayed => {
                    profiles.set(bare, Profile::Full);
                }
                _ => {}
            }
        }
        profiles.get(bare)
    }
}

#[async_trait]
impl Adapter for XmppAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn style(&self) -> AddressStyle {
        AddressStyle::Xmpp
    }

    fn domains(&self) -> Vec<String> {
        self.domains.clone()
    }

    fn policy(&self) -> DeliveryPolicy {
        DeliveryPolicy::default()
    }

    async fn deliver(&self, envelope: Envelope) -> DeliveryOutcome {
        // Only presence carries capabilities; only notifications say what the sender's
        // client can do: other deliveries leave the profiles alone.
        let profile = match &envelope.event {
            Event::Presence(_) | Event::Notification(_) => self.sender_profile(&envelope),
            _ => Profile::Full,
        };
        let options = OutboundOptions {
            profile,
            ..self.outbound
        };
        let stanzas = match translate::outbound(&envelope, &options) {
            Ok(s) => s,
            Err(error) => {
                return DeliveryOutcome::Failed {
                    condition: error.condition(),
                    text: Some(error.to_string()),
                }
            }
        };
        if stanzas.is_empty() {
            return DeliveryOutcome::Accepted;
        }
        let from_domain = envelope.from.domain().to_ascii_lowercase();
        let Some(link) = self.links.get(&from_domain) else {
            return DeliveryOutcome::Failed {
                condition: Condition::NotAllowed,
                text: Some(format!(
                    "{} cannot send from {from_domain}: it is not one of its component domains (configure an alias or a component domain)",
                    self.name
                )),
            };
        };
        let (written, done) = oneshot::channel();
        // The link is down for every destination: nothing behind could pass either.
        let item = Outgoing {
            stanzas,
            written: Some(written),
        };
        if link.send(item).await.is_err() {
            return DeliveryOutcome::Waiting {
                after: Duration::from_secs(5),
            };
        }
        // Waits while the link is down: the stanza goes out after the reconnect, in order.
        match done.await {
            Ok(()) => DeliveryOutcome::Accepted,
            Err(_) => DeliveryOutcome::Waiting {
                after: Duration::from_secs(5),
            },
        }
    }
}

/// One component connection and its state.
struct Link {
    adapter: String,
    domain: String,
    secret: String,
    server: String,
    ping_interval: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    limits: Limits,
    submitter: Submitter,
    metrics: AdapterMetrics,
    shutdown: watch::Receiver<bool>,
    up: Arc<Vec<AtomicBool>>,
    index: usize,
    ping_counter: AtomicU64,
    server_domain: String,
    /// Error replies to stanzas the broker refused after they were read (submissions
    /// are pipelined): written on the stream by `serve`.
    refusals: mpsc::UnboundedSender<Stanza>,
    /// The broker's queue stayed full for [`SUBMIT_WAIT`]: stanzas are refused at once
    /// until one is taken again.
    overloaded: AtomicBool,
    /// The open resources of the contacts whose presence the gateway receives.
    resources: Arc<Mutex<Resources>>,
    /// What the bridged users can do (their disco#info).
    profiles: Arc<Mutex<Profiles>>,
    mesh: Arc<Mesh>,
    /// What other links received for this one.
    routed: mpsc::UnboundedReceiver<Routed>,
    control: mpsc::UnboundedReceiver<Control>,
    /// On link 0: the links whose domains ride on its stream.
    riders: Vec<bool>,
}

/// How long a received stanza waits for room in the broker's queue before it is refused
/// with `resource-constraint` (type `wait`): long enough to ride out a burst, short
/// enough that the sender hears it while it is there, and the stream is not held back.
const SUBMIT_WAIT: Duration = Duration::from_millis(500);

/// How many (gateway JID, contact) pairs have their resources composed.
const MAX_COMPOSED_CONTACTS: usize = 100_000;

/// Bridged users whose client is known to take less than the full feature set, kept at
/// most (beyond it, the oldest announce the full set again).
const MAX_PROFILED_USERS: usize = 100_000;

type Connection = Component<NoDelayConnector>;

impl Link {
    fn set_up(&self, up: bool) {
        if let Some(flag) = self.up.get(self.index) {
            flag.store(up, Ordering::Relaxed);
        }
        self.metrics
            .set_connected(self.up.iter().all(|f| f.load(Ordering::Relaxed)));
    }

    async fn run(
        mut self,
        mut outgoing: mpsc::Receiver<Outgoing>,
        mut refused: mpsc::UnboundedReceiver<Stanza>,
    ) {
        let mut pending: VecDeque<Outgoing> = VecDeque::new();
        let mut resend: VecDeque<Vec<Element>> = VecDeque::new();
        let mut attempt: u32 = 0;
        let mut backoff = Backoff::new(self.min_backoff, self.max_backoff);
        let mut riding = false;
        let mut first = true;
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            // A domain that link 0's stream already carries gets no stream of its own:
            // two streams for one domain would let the server pick either, per stanza.
            if self.index > 0 && !riding {
                riding = self.ask_primary(first).await;
            }
            first = false;
            if riding {
                tracing::info!(adapter = %self.adapter, domain = %self.domain, via = %self.mesh.domains[0], "the server delivers this domain on the first component stream: it shares that stream");
                self.set_up(true);
                if self.ride(&mut outgoing, &mut resend, &mut pending).await {
                    return;
                }
                riding = false;
                self.set_up(false);
                tracing::info!(adapter = %self.adapter, domain = %self.domain, "the first component stream no longer carries this domain: connecting its own");
                continue;
            }
            // Liveness is the link's own (answers to its pings may come on another
            // stream): tokio-xmpp's read timeouts stay out of the way, and the whole
            // connection and handshake are bounded here.
            let timeouts = Timeouts {
                read_timeout: QUIET_STREAM,
                response_timeout: QUIET_STREAM,
            };
            let connect_timeout = self.ping_interval.saturating_mul(3).max(CONNECT_TIMEOUT);
            // The connector takes a socket address: a host name (`prosody:5347` on a
            // compose network) is looked up here, before every attempt, so that a server
            // whose address changed is found again. Each address is tried in turn.
            let connect = async {
                let addrs: Vec<std::net::SocketAddr> =
                    match tokio::net::lookup_host(self.server.as_str()).await {
                        Ok(addrs) => addrs.collect(),
                        Err(error) => return Err(tokio_xmpp::Error::Io(error)),
                    };
                let mut last = tokio_xmpp::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} has no address", self.server),
                ));
                for addr in addrs {
                    let attempt = Component::new_with_connector(
                        &self.domain,
                        &self.secret,
                        NoDelayConnector {
                            addr,
                            limits: self.limits,
                            metrics: self.metrics.clone(),
                            refusals: self.refusals.clone(),
                        },
                        timeouts,
                    );
                    match tokio::time::timeout(connect_timeout, attempt).await {
                        Ok(Ok(component)) => return Ok(component),
                        Ok(Err(error)) => last = error,
                        Err(_) => {
                            last = tokio_xmpp::Error::Io(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("no stream within {connect_timeout:?} from {addr}"),
                            ))
                        }
                    }
                }
                Err(last)
            };
            let mut shutdown = self.shutdown.clone();
            let connected = tokio::select! {
                c = connect => c,
                _ = shutdown.changed() => return,
            };
            match connected {
                Ok(component) => {
                    attempt = 0;
                    backoff.reset();
                    self.set_up(true);
                    tracing::info!(adapter = %self.adapter, domain = %self.domain, server = %self.server, "component connected");
                    let end = self
                        .serve(
                            component,
                            &mut outgoing,
                            &mut resend,
                            &mut pending,
                            &mut refused,
                        )
                        .await;
                    self.set_up(false);
                    match end {
                        ServeEnd::Stop => return,
                        ServeEnd::Ride => {
                            riding = true;
                            continue;
                        }
                        ServeEnd::Lost => {
                            tracing::warn!(adapter = %self.adapter, domain = %self.domain, "component stream ended; reconnecting");
                        }
                    }
                }
                Err(error) => {
                    self.set_up(false);
                    tracing::warn!(adapter = %self.adapter, domain = %self.domain, server = %self.server, %error, attempt, "component connection failed");
                }
            }
            let delay = backoff.next_delay();
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Runs one connected stream.
    ///
    /// A delivery is answered once its stanzas are written (so deliveries pipeline); the
    /// stanzas stay unconfirmed until the server confirms them (see the module docs and
    /// [`crate::confirm`]). On entry, `resend` holds what the last stream wrote but the
    /// server never confirmed, and `pending` what could not be written: both go out
    /// first, in that order. On return they hold the same for the next stream.
    ///
    /// The server may deliver what concerns another link on this stream: answers to its
    /// iqs go to it; stanzas for its domain on link 0's stream make that domain ride on
    /// link 0's stream (see [`Link::ride`]).
    async fn serve(
        &mut self,
        mut component: Connection,
        outgoing: &mut mpsc::Receiver<Outgoing>,
        resend: &mut VecDeque<Vec<Element>>,
        pending: &mut VecDeque<Outgoing>,
        refused: &mut mpsc::UnboundedReceiver<Stanza>,
    ) -> ServeEnd {
        let mut ping = tokio::time::interval(self.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut shutdown = self.shutdown.clone();
        // Answers meant for an earlier stream can no longer be.
        while self.routed.try_recv().is_ok() {}
        let retry = self.ping_interval.max(Duration::from_millis(500));
        let silent_limit = self
            .ping_interval
            .saturating_mul(3)
            .max(Duration::from_secs(3));
        let mut last_heard = tokio::time::Instant::now();
        let mut unconfirmed: Unconfirmed<Vec<Element>> = Unconfirmed::new(MAX_UNCONFIRMED);
        // Route probes in flight (link 0): id, the link asked about, who waits, when.
        let mut probes: Probes = Vec::new();
        let ended = 'stream: {
            while let Some(stanzas) = resend.pop_front() {
                if !write(&mut component, &stanzas).await {
                    resend.push_front(stanzas);
                    break 'stream ServeEnd::Lost;
                }
                unconfirmed.push(stanzas);
            }
            while let Some(item) = pending.pop_front() {
                if !self
                    .deliver_item(&mut component, item, &mut unconfirmed, pending)
                    .await
                {
                    break 'stream ServeEnd::Lost;
                }
            }
            // Link 0 after a reconnect: do the domains that rode on it still?
            for link in 0..self.riders.len() {
                if self.riders[link] {
                    match self.send_probe(&mut component, link).await {
                        Some(id) => probes.push((id, link, None, tokio::time::Instant::now())),
                        None => break 'stream ServeEnd::Lost,
                    }
                }
            }
            loop {
                let now = tokio::time::Instant::now();
                if unconfirmed.barrier_due(now.into_std(), retry) {
                    let id = own_id(IdKind::Ack, self.index, self.next_id());
                    if !self.send_ping(&mut component, &id).await {
                        break ServeEnd::Lost;
                    }
                    unconfirmed.barrier_sent(id, now.into_std());
                }
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => {
                        let _ = component.send_end().await;
                        break ServeEnd::Stop;
                    }
                    incoming = component.next() => match incoming {
                        Some(Stanza::Message(message)) => {
                            // The common case: translated from the form the stream
                            // parsed, not written back to XML and parsed again.
                            last_heard = tokio::time::Instant::now();
                            self.notice_other_domain(message.to.as_ref().map(|j| j.as_str()));
                            let mut failed = false;
                            for reply in self.handle_message(message).await {
                                if component.send(reply).await.is_err() {
                                    failed = true;
                                    break;
                                }
                            }
                            if failed {
                                break ServeEnd::Lost;
                            }
                        }
                        Some(stanza) => {
                            last_heard = tokio::time::Instant::now();
                            let element = Element::from(stanza);
                            if let Some(own) = own_iq(&element) {
                                match own {
                                    OwnIq::Answer { id, owner } if owner == self.index => {
                                        unconfirmed.answered(&id);
                                        self.probe_answered(&mut probes, &id, None);
                                    }
                                    OwnIq::Answer { id, owner } => {
                                        self.route_to(owner, Routed::Answer(id));
                                    }
                                    OwnIq::Probe { id, owner } if owner == self.index => {
                                        self.probe_answered(&mut probes, &id, Some(self.index));
                                    }
                                    OwnIq::Probe { id, owner } => {
                                        self.route_to(owner, Routed::Probe { id, on: self.index });
                                    }
                                }
                                continue;
                            }
                            self.notice_other_domain(element.attr("to"));
                            let mut failed = false;
                            for reply in self.handle(&element).await {
                                if component.send(reply).await.is_err() {
                                    failed = true;
                                    break;
                                }
                            }
                            if failed {
                                break ServeEnd::Lost;
                            }
                        }
                        None => break ServeEnd::Lost,
                    },
                    Some(routed) = self.routed.recv() => {
                        // The server answered this link's iq on another stream: it reads
                        // this one.
                        last_heard = tokio::time::Instant::now();
                        match routed {
                            Routed::Answer(id) => {
                                unconfirmed.answered(&id);
                                self.probe_answered(&mut probes, &id, None);
                            }
                            Routed::Probe { id, on } => self.probe_answered(&mut probes, &id, Some(on)),
                        }
                    }
                    Some(command) = self.control.recv() => match command {
                        Control::Ride if self.index > 0 => {
                            self.drain_before_riding(&mut component, &mut unconfirmed).await;
                            break ServeEnd::Ride;
                        }
                        Control::Ride | Control::Alone => {}
                        Control::Probe { link, reply } => {
                            if reply.is_closed() || link == 0 || link >= self.riders.len() {
                                continue;
                            }
                            if self.riders[link] {
                                let _ = reply.send(true);
                                continue;
                            }
                            match self.send_probe(&mut component, link).await {
                                Some(id) => probes.push((id, link, Some(reply), tokio::time::Instant::now())),
                                None => break ServeEnd::Lost,
                            }
                        }
                    },
                    Some(reply) = refused.recv() => {
                        if component.send(reply).await.is_err() {
                            break ServeEnd::Lost;
                        }
                    }
                    item = outgoing.recv() => match item {
                        Some(item) => {
                            if !self.deliver_item(&mut component, item, &mut unconfirmed, pending).await {
                                break ServeEnd::Lost;
                            }
                        }
                        None => break ServeEnd::Stop,
                    },
                    _ = ping.tick() => {
                        if last_heard.elapsed() > silent_limit {
                            tracing::warn!(adapter = %self.adapter, domain = %self.domain, silent = ?last_heard.elapsed(), "the server answers nothing on this component stream");
                            break ServeEnd::Lost;
                        }
                        // A probe nobody answered: the stream does not carry that domain.
                        let expired = probes
                            .iter()
                            .filter(|(_, _, _, sent)| sent.elapsed() > PROBE_WAIT)
                            .map(|(id, _, _, _)| id.clone())
                            .collect::<Vec<_>>();
                        for id in expired {
                            self.probe_expired(&mut probes, &id);
                        }
                        let id = own_id(IdKind::Ping, self.index, self.next_id());
                        if !self.send_ping(&mut component, &id).await {
                            break ServeEnd::Lost;
                        }
                    }
                }
            }
        };
        // Not confirmed: written again on the next stream, ahead of anything newer.
        for stanzas in unconfirmed.take_all().into_iter().rev() {
            resend.push_front(stanzas);
        }
        ended
    }

    fn next_id(&self) -> u64 {
        self.ping_counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes one delivery and answers it; keeps its stanzas until confirmed. `false`
    /// (and the item back at the front of `pending`) if the stream failed.
    async fn deliver_item(
        &self,
        component: &mut Connection,
        item: Outgoing,
        unconfirmed: &mut Unconfirmed<Vec<Element>>,
        pending: &mut VecDeque<Outgoing>,
    ) -> bool {
        if item
            .written
            .as_ref()
            .is_some_and(oneshot::Sender::is_closed)
        {
            // The delivery gave up waiting (the gateway is stopping): nothing to send.
            return true;
        }
        if !write(component, &item.stanzas).await {
            pending.push_front(item);
            return false;
        }
        let Outgoing { stanzas, written } = item;
        if let Some(written) = written {
            let _ = written.send(());
        }
        if unconfirmed.push(stanzas) {
            tracing::warn!(adapter = %self.adapter, domain = %self.domain, "the server does not confirm stanzas (no answer to pings): the oldest are no longer kept for writing again");
        }
        true
    }

    /// Sends an XEP-0199 ping to the server; `false` if the stream failed.
    async fn send_ping(&self, component: &mut Connection, id: &str) -> bool {
        let to = self.server_domain.clone();
        self.send_iq_ping(component, id, &to).await
    }

    async fn send_iq_ping(&self, component: &mut Connection, id: &str, to: &str) -> bool {
        let ping = element(
            "iq",
            NS,
            &[
                ("type", "get"),
                ("id", id),
                ("from", &self.domain),
                ("to", to),
            ],
            vec![element("ping", NS_PING, &[], Vec::new())],
        );
        match to_stanza(ping) {
            Some(stanza) => component.send(stanza).await.is_ok(),
            None => true,
        }
    }

    /// Handles one received stanza; returns the replies to write.
    async fn handle(&self, element: &Element) -> Vec<Stanza> {
        match translate::classify(element) {
            StanzaClass::Message | StanzaClass::Presence => self.handle_exchange(element).await,
            StanzaClass::IqRequest(request) => {
                self.handle_iq(element, request).into_iter().collect()
            }
            StanzaClass::IqResponse | StanzaClass::Unknown => Vec::new(),
        }
    }

    async fn handle_exchange(&self, element: &Element) -> Vec<Stanza> {
        let translated = translate::inbound(element, cpim_broker::envelope::unix_now_ms());
        self.submit_exchange(translated, element.clone()).await
    }

    /// Handles a received `<message/>` in the form the stream parsed.
    async fn handle_message(&self, message: xmpp_parsers::message::Message) -> Vec<Stanza> {
        let skeleton = translate::message_skeleton(&message);
        let translated =
            translate::parsed_message_inbound(message, cpim_broker::envelope::unix_now_ms());
        self.submit_exchange(translated, skeleton).await
    }

    /// Submits what a received stanza translated to; `element` (the stanza, or as much of
    /// it as [`translate::error_reply`] reads) is answered with an error if it is refused.
    async fn submit_exchange(
        &self,
        translated: Result<Vec<cpim_broker::Inbound>, StanzaFault>,
        element: Element,
    ) -> Vec<Stanza> {
        let mut inbound = match translated {
            Ok(inbound) => inbound,
            Err(fault) => {
                tracing::debug!(adapter = %self.adapter, condition = %fault.condition, text = %fault.text, "stanza refused");
                return translate::error_reply(&element, &fault)
                    .and_then(to_stanza)
                    .into_iter()
                    .collect();
            }
        };
        // A resource's presence is the contact's whole state only with its other
        // resources (RFC 4479 composition).
        for item in &mut inbound {
            if let cpim::event::Event::Presence(update) = &mut item.event {
                let recipient = item.to.to_string();
                update.presence = self
                    .resources
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .compose(&recipient, update.presence.clone());
            }
        }
        // Submitted in order without waiting for each answer (the spool commits many
        // at once); a refusal is answered with an error stanza when it comes. While the
        // broker cannot take more, stanzas are refused rather than left unread: the
        // senders hear it at once and the stream goes on.
        let mut answers = Vec::with_capacity(inbound.len());
        for item in inbound {
            let pending = if self.overloaded.load(Ordering::Relaxed) {
                self.submitter.try_submit_pipelined(item)
            } else {
                self.submitter
                    .submit_pipelined_within(item, SUBMIT_WAIT)
                    .await
            };
            self.overloaded
                .store(pending.is_refused(), Ordering::Relaxed);
            answers.push(pending);
        }
        let refusals = self.refusals.clone();
        tokio::spawn(async move {
            for answer in answers {
                if let Err(rejected) = answer.answer().await {
                    let fault = StanzaFault {
                        condition: rejected.condition,
                        text: rejected.text,
                    };
                    if let Some(reply) =
                        translate::error_reply(&element, &fault).and_then(to_stanza)
                    {
                        let _ = refusals.send(reply);
                    }
                    break;
                }
            }
        });
        Vec::new()
    }

    fn handle_iq(&self, iq: &Element, request: IqRequest) -> Option<Stanza> {
        let reply = |children: Vec<Element>| {
            let mut attrs = vec![
                ("type", "result"),
                ("id", iq.attr("id").unwrap_or_default()),
            ];
            if let Some(to) = iq.attr("to") {
                attrs.push(("from", to));
            }
            if let Some(from) = iq.attr("from") {
                attrs.push(("to", from));
            }
            element("iq", NS, &attrs, children)
        };
        // A JID with a local part is a user of another network: it answers as the
        // client it stands for (XEP-0030, XEP-0115), not as the gateway.
        let to_user = iq.attr("to").is_some_and(|to| to.contains('@'));
        let answer = match request {
            IqRequest::Ping => reply(Vec::new()),
            IqRequest::DiscoInfo { node } if to_user => {
                let to = iq.attr("to").unwrap_or_default();
                let bare = to.split('/').next().unwrap_or_default();
                let current = self
                    .profiles
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(bare);
                match crate::caps::profile_for_node(node.as_deref(), current) {
                    Some(profile) => reply(vec![crate::caps::user_info(node, profile).into()]),
                    None => {
                        let fault = StanzaFault::new(Condition::ItemNotFound, "no such node");
                        translate::error_reply(iq, &fault)?
                    }
                }
            }
            IqRequest::DiscoInfo { node: None } if !to_user => {
                let identity = element(
                    "identity",
                    NS_DISCO_INFO,
                    &[
                        ("category", "gateway"),
                        ("type", "sip"),
                        ("name", "cpim-gateway"),
                    ],
                    Vec::new(),
                );
                let features = FEATURES
                    .iter()
                    .map(|f| element("feature", NS_DISCO_INFO, &[("var", f)], Vec::new()));
                let query = element(
                    "query",
                    NS_DISCO_INFO,
                    &[],
                    std::iter::once(identity).chain(features).collect(),
                );
                reply(vec![query])
            }
            IqRequest::DiscoItems { node: None } => {
                reply(vec![element("query", NS_DISCO_ITEMS, &[], Vec::new())])
            }
            IqRequest::DiscoInfo { .. } | IqRequest::DiscoItems { .. } => {
                let fault = StanzaFault::new(Condition::ItemNotFound, "no such node");
                translate::error_reply(iq, &fault)?
            }
            IqRequest::Other => {
                let fault = StanzaFault::new(
                    Condition::ServiceUnavailable,
                    "not supported by this gateway",
                );
                translate::error_reply(iq, &fault)?
            }
        };
        to_stanza(answer)
    }
}

/// Writes `stanzas`; `false` if the stream failed.
async fn write(component: &mut Connection, stanzas: &[Element]) -> bool {
    for element in stanzas {
        let Some(stanza) = to_stanza(element.clone()) else {
            continue;
        };
        if component.send(stanza).await.is_err() {
            return false;
        }
    }
    true
}

/// An element `name` in the component namespace (or `ns`) with these attributes (all names
/// here are literals of this module and valid XML names).
fn element(name: &str, ns: &str, attrs: &[(&str, &str)], children: Vec<Element>) -> Element {
    let mut builder = Element::builder(name, ns);
    for (key, value) in attrs {
        if let Ok(key) = NcName::try_from(*key) {
            builder = builder.attr(key, *value);
        }
    }
    builder.append_all(children).build()
}

fn to_stanza(element: Element) -> Option<Stanza> {
    match Stanza::try_from(element) {
        Ok(stanza) => Some(stanza),
        Err(error) => {
            tracing::error!(%error, "a stanza the gateway built does not parse; not sent");
            None
        }
    }
}
