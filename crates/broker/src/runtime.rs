//! The thin tokio driver around [`Core`].
//!
//! One task owns the core. Adapters submit through a bounded channel and wait for the
//! answer (accepted with an id, or refused with a condition), which they turn into their
//! protocol's response. Each dispatched envelope is delivered in its own task, whose
//! outcome comes back to the core task. Time is `tokio::time::Instant` (so tests can
//! pause and advance it) measured from the broker's start.
//!
//! With a [`Spool`], each turn of the loop takes every submission and outcome that is
//! waiting (up to [`BATCH`]), lets the core record them, commits the batch durably in one
//! blocking call (group commit: one fsync however many senders wait), and only then
//! answers the senders and dispatches. A failed commit refuses that batch's submissions
//! (`service-unavailable`, retry later) and takes them back out of the queues.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use cpim::Condition;

use crate::adapter::{Adapter, AdapterContext};
use crate::core::{Core, CoreConfig, Report, Router};
use crate::envelope::{Accepted, AdapterName, DeliveryOutcome, Inbound, MessageId, Rejected};
use crate::metrics::{AdapterMetrics, Metrics};
use crate::spool::{Recovered, Spool, SpoolError};

/// Capacity of the submission channel; beyond it submitters wait (their own peers then
/// wait too), which bounds memory.
const SUBMIT_CHANNEL: usize = 1024;

/// Submissions and outcomes handled per turn of the loop, at most (one spool commit).
const BATCH: usize = 512;

type Reply = (
    oneshot::Sender<Result<Accepted, Rejected>>,
    Result<Accepted, Rejected>,
);

enum Command {
    Submit {
        origin: AdapterName,
        inbound: Box<Inbound>,
        reply: oneshot::Sender<Result<Accepted, Rejected>>,
    },
    SetRouter(Arc<dyn Router>),
}

/// Submits inbound events on behalf of one adapter. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Submitter {
    origin: AdapterName,
    tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Submit { origin, .. } => write!(f, "Submit from {origin}"),
            Command::SetRouter(_) => f.write_str("SetRouter"),
        }
    }
}

impl Submitter {
    /// Hands `inbound` to the broker and waits until it is accepted (queued for its
    /// destination) or refused.
    pub async fn submit(&self, inbound: Inbound) -> Result<Accepted, Rejected> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Submit {
            origin: self.origin.clone(),
            inbound: Box::new(inbound),
            reply,
        };
        let stopped = stopping_rejection;
        self.tx.send(command).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// The adapter this submitter speaks for.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Controls a running broker.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    tx: mpsc::Sender<Command>,
    shutdown: watch::Sender<bool>,
    metrics: Metrics,
}

impl BrokerHandle {
    /// Replaces the address map; envelopes already accepted are not affected.
    pub async fn set_router(&self, router: Arc<dyn Router>) -> bool {
        self.tx.send(Command::SetRouter(router)).await.is_ok()
    }

    /// All adapters' metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Asks the broker to stop: new submissions are refused, deliveries in flight may
    /// finish until the deadline given to [`Broker::run`]'s stop.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// A broker being assembled: create it, give each adapter its context, add the
/// adapters, then [`Broker::start`].
pub struct Broker {
    core: Core,
    rx: mpsc::Receiver<Command>,
    handle: BrokerHandle,
    adapters: HashMap<AdapterName, (Arc<dyn Adapter>, AdapterMetrics)>,
    shutdown_rx: watch::Receiver<bool>,
    drain_deadline: Duration,
    spool: Option<Box<dyn Spool>>,
    recovered: Option<Recovered>,
    /// The spool failed beyond repair: nothing new can be made durable.
    spool_lost: bool,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker routing with `router`. The id seed is taken from the wall clock so that
    /// gateway ids stay unique across restarts.
    pub fn new(mut config: CoreConfig, router: Arc<dyn Router>) -> (Broker, BrokerHandle) {
        if config.id_seed == CoreConfig::default().id_seed {
            config.id_seed = crate::envelope::unix_now_ms() << 16;
        }
        let (tx, rx) = mpsc::channel(SUBMIT_CHANNEL);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let handle = BrokerHandle {
            tx,
            shutdown,
            metrics: Metrics::default(),
        };
        let broker = Broker {
            core: Core::new(config, router),
            rx,
            handle: handle.clone(),
            adapters: HashMap::new(),
            shutdown_rx,
            drain_deadline: Duration::from_secs(10),
            spool: None,
            recovered: None,
            spool_lost: false,
        };
        (broker, handle)
    }

    /// A handle to control the broker once it runs.
    pub fn handle(&self) -> BrokerHandle {
        self.handle.clone()
    }

    /// The context for building the adapter named `name`.
    pub fn context(&self, name: &str) -> AdapterContext {
        AdapterContext {
            submitter: Submitter {
                origin: Arc::from(name),
                tx: self.handle.tx.clone(),
            },
            shutdown: self.shutdown_rx.clone(),
            metrics: self.handle.metrics.adapter(name),
        }
    }

    /// Adds a built adapter.
    pub fn add_adapter(&mut self, adapter: Arc<dyn Adapter>) {
        let name: AdapterName = Arc::from(adapter.name());
        self.core.register_adapter(&name, adapter.policy());
        let metrics = self.handle.metrics.adapter(&name);
        self.adapters.insert(name, (adapter, metrics));
    }

    /// How long deliveries in flight may take to finish after a stop.
    pub fn with_drain_deadline(mut self, deadline: Duration) -> Self {
        self.drain_deadline = deadline;
        self
    }

    /// Makes the broker durable with `spool`: reads what it still holds (queued again
    /// when the broker starts, ahead of anything new) and from then on commits every
    /// accepted message before its sender is answered.
    pub fn with_spool(mut self, mut spool: Box<dyn Spool>) -> Result<Self, SpoolError> {
        let recovered = spool.recover(crate::envelope::unix_now_ms())?;
        self.core.set_spooling(true);
        self.handle.metrics.spool().set_envelopes(spool.len());
        self.spool = Some(spool);
        self.recovered = Some(recovered);
        Ok(self)
    }

    /// Starts the broker task.
    pub fn start(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(mut self) {
        let start = Instant::now();
        let now = move || start.elapsed();
        self.core.set_clock_origin(crate::envelope::unix_now_ms());
        if let Some(recovered) = self.recovered.take() {
            let dedup = recovered.dedup.len();
            let queued = self.core.restore(now(), recovered);
            tracing::info!(
                queued,
                dedup,
                "spool recovered: delivering again what was not finished"
            );
        }
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(MessageId, DeliveryOutcome)>();
        let mut shutdown = self.shutdown_rx.clone();
        let mut stopping: Option<Instant> = None;
        let mut replies: Vec<Reply> = Vec::new();
        loop {
            // Timers first: a steady stream of submissions must not starve them.
            if self.core.poll_timeout().is_some_and(|t| t <= now()) {
                self.core.handle_timeout(now());
            }
            // Durable before anyone hears "accepted" and before anything leaves.
            self.commit(&mut replies).await;
            // While stopping, only deliveries already in flight finish; nothing new starts.
            if stopping.is_none() {
                self.dispatch(&done_tx, now());
            }
            self.publish_reports();
            if let Some(since) = stopping {
                if self.core.in_flight() == 0 || since.elapsed() >= self.drain_deadline {
                    break;
                }
            }
            let deadline = self.core.poll_timeout().map(|t| start + t);
            tokio::select! {
                biased;
                Some((id, outcome)) = done_rx.recv() => self.core.complete(now(), id, outcome),
                _ = shutdown.changed(), if stopping.is_none() => {
                    stopping = Some(Instant::now());
                    self.rx.close();
                    while let Ok(command) = self.rx.try_recv() {
                        if let Command::Submit { reply, .. } = command {
                            let _ = reply.send(Err(stopping_rejection()));
                        }
                    }
                }
                command = self.rx.recv(), if stopping.is_none() => match command {
                    Some(command) => self.on_command(command, &mut replies, now()),
                    None => stopping = Some(Instant::now()),
                },
                _ = sleep_until(deadline) => self.core.handle_timeout(now()),
                _ = tokio::time::sleep(Duration::from_millis(50)), if stopping.is_some() => {}
            }
            // Whatever else is already waiting joins this turn's commit.
            for _ in 0..BATCH {
                let mut progressed = false;
                if let Ok((id, outcome)) = done_rx.try_recv() {
                    self.core.complete(now(), id, outcome);
                    progressed = true;
                }
                if stopping.is_none() {
                    if let Ok(command) = self.rx.try_recv() {
                        self.on_command(command, &mut replies, now());
                        progressed = true;
                    }
                }
                if !progressed {
                    break;
                }
            }
        }
        self.commit(&mut replies).await;
        tracing::info!(
            in_flight = self.core.in_flight(),
            queued = self.core.queued_total(),
            spooled = self.spool.as_ref().map_or(0, |s| s.len()),
            "broker stopped"
        );
    }

    fn on_command(&mut self, command: Command, replies: &mut Vec<Reply>, now: Duration) {
        match command {
            Command::Submit {
                origin,
                inbound,
                reply,
            } => {
                if self.spool_lost {
                    let _ = reply.send(Err(Rejected {
                        condition: Condition::ServiceUnavailable,
                        text: "the message store failed; try again later".to_owned(),
                        retry_after: Some(Duration::from_secs(30)),
                    }));
                    return;
                }
                let result = self.core.accept(now, &origin, *inbound);
                if self.spool.is_some() {
                    replies.push((reply, result));
                } else {
                    let _ = reply.send(result);
                }
            }
            Command::SetRouter(router) => {
                self.core.set_router(router);
                tracing::info!("address map replaced");
            }
        }
    }

    /// Commits what the core recorded, then answers the senders waiting for it. On a
    /// failed commit the new submissions are refused and withdrawn; removals and
    /// notifications go with the next commit.
    async fn commit(&mut self, replies: &mut Vec<Reply>) {
        let ops = self.core.take_ops();
        let Some(mut spool) = self.spool.take() else {
            return;
        };
        let result = if ops.is_empty() {
            Ok(ops)
        } else {
            let next_id = self.core.next_id();
            let now_ms = crate::envelope::unix_now_ms();
            let count = ops.len();
            let started = std::time::Instant::now();
            let job = tokio::task::spawn_blocking(move || {
                let result = spool.commit(&ops, next_id, now_ms);
                (spool, ops, result)
            });
            match job.await {
                Ok((back, ops, result)) => {
                    spool = back;
                    match result {
                        Ok(()) => {
                            let took = started.elapsed();
                            self.handle
                                .metrics
                                .spool()
                                .committed(count, took, spool.len());
                            Ok(ops)
                        }
                        Err(error) => Err((ops, error.to_string())),
                    }
                }
                Err(join) => {
                    // The spool was lost with the panicking thread: nothing is durable
                    // from here on, so new submissions are refused (see `on_command`).
                    tracing::error!(error = %join, "the spool failed (panic); the gateway refuses new messages");
                    self.handle.metrics.spool().failed();
                    self.fail_batch(replies, "the message store failed");
                    self.spool = None;
                    self.core.set_spooling(false);
                    self.spool_lost = true;
                    return;
                }
            }
        };
        self.spool = Some(spool);
        match result {
            Ok(_) => {
                for (reply, result) in replies.drain(..) {
                    let _ = reply.send(result);
                }
            }
            Err((ops, error)) => {
                tracing::error!(%error, "spool commit failed: the batch's submissions are refused");
                self.handle.metrics.spool().failed();
                let withdrawn: HashSet<MessageId> = ops
                    .iter()
                    .filter_map(|op| match op {
                        crate::spool::SpoolOp::Put(e) => Some(e.id),
                        _ => None,
                    })
                    .filter(|id| {
                        replies
                            .iter()
                            .any(|(_, r)| r.as_ref().is_ok_and(|a| a.id == *id && !a.duplicate))
                    })
                    .collect();
                self.core.return_ops(ops);
                self.core.withdraw(&withdrawn);
                self.fail_batch(replies, "the message store cannot be written");
            }
        }
    }

    fn fail_batch(&mut self, replies: &mut Vec<Reply>, why: &str) {
        for (reply, result) in replies.drain(..) {
            let answer = result.and_then(|_| {
                Err(Rejected {
                    condition: Condition::ServiceUnavailable,
                    text: format!("{why}; try again later"),
                    retry_after: Some(Duration::from_secs(30)),
                })
            });
            let _ = reply.send(answer);
        }
    }

    fn dispatch(
        &mut self,
        done: &mpsc::UnboundedSender<(MessageId, DeliveryOutcome)>,
        now: Duration,
    ) {
        while let Some(envelope) = self.core.poll_dispatch() {
            let id = envelope.id;
            match self.adapters.get(&envelope.destination) {
                Some((adapter, _)) => {
                    let adapter = adapter.clone();
                    let guard = Completion {
                        id,
                        done: Some(done.clone()),
                    };
                    tokio::spawn(async move {
                        let outcome = adapter.deliver(envelope).await;
                        guard.finish(outcome);
                    });
                }
                None => self.core.complete(
                    now,
                    id,
                    DeliveryOutcome::Failed {
                        condition: Condition::ServiceUnavailable,
                        text: Some("destination adapter is not running".to_owned()),
                    },
                ),
            }
        }
    }

    fn publish_reports(&mut self) {
        while let Some(report) = self.core.poll_report() {
            let metrics = |a: &AdapterName| self.handle.metrics.adapter(a);
            match &report {
                Report::Received { adapter } => metrics(adapter).received(),
                Report::QueueFull { adapter } => metrics(adapter).queue_full(),
                Report::Rejected { adapter, condition } => {
                    tracing::debug!(adapter = %adapter, condition = %condition, "submission refused");
                    metrics(adapter).rejected(*condition);
                }
                Report::Delivered { adapter, latency } => metrics(adapter).delivered(*latency),
                Report::Failed {
                    adapter,
                    condition,
                    latency,
                    id,
                } => {
                    tracing::info!(adapter = %adapter, msg_id = %id, condition = %condition, "delivery failed");
                    metrics(adapter).failed(*condition, *latency);
                }
            }
        }
        for (name, (_, metrics)) in &self.adapters {
            metrics.set_queue_depth(self.core.queue_depth(name));
        }
    }
}

/// Reports a delivery's outcome; if the delivery task panics before that, the drop
/// reports a failure, so the destination never waits for an answer that cannot come.
struct Completion {
    id: MessageId,
    done: Option<mpsc::UnboundedSender<(MessageId, DeliveryOutcome)>>,
}

impl Completion {
    fn finish(mut self, outcome: DeliveryOutcome) {
        if let Some(done) = self.done.take() {
            let _ = done.send((self.id, outcome));
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            tracing::error!(msg_id = %self.id, "delivery task ended without an outcome (panic)");
            let _ = done.send((
                self.id,
                DeliveryOutcome::Failed {
                    condition: Condition::InternalServerError,
                    text: Some("the adapter failed while delivering".to_owned()),
                },
            ));
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What a submission gets while the gateway stops: a temporary refusal with a retry hint
/// (SIP 503 + Retry-After, HTTP 503 + Retry-After, XMPP `resource-constraint`), so that
/// senders try again once it is back instead of giving up.
fn stopping_rejection() -> Rejected {
    Rejected {
        condition: Condition::ResourceConstraint,
        text: "the gateway is stopping; try again shortly".to_owned(),
        retry_after: Some(Duration::from_secs(5)),
    }
}
