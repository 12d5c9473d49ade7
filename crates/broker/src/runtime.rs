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

#![allow(clippy::disallowed_methods)] // a driver: the broker's task reads the clock and passes it to the core

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use cpim::Condition;

use crate::adapter::Adapter;
use crate::context::{stopping_rejection, AdapterContext, Command};
pub use crate::context::{PendingAnswer, StateStore, Submitter};
use crate::core::{Core, CoreConfig, Report};
use crate::envelope::{Accepted, AdapterName, DeliveryOutcome, MessageId, Rejected};
use crate::map::Router;
use crate::metrics::{AdapterMetrics, Metrics};
use crate::spool::{Recovered, Spool, SpoolError, SpoolOp};

/// Submissions and outcomes handled per turn of the loop, at most.
const BATCH: usize = 512;

/// How long a commit waits for more work once a sender waits for it (group commit: a
/// commit costs the same whatever it carries, and each one is an fsync).
const COMMIT_WINDOW: Duration = Duration::from_millis(2);

/// How long removals (nobody waits for them) may wait for a commit: a crash in that time
/// only means a few messages are delivered again, under the same ids.
const REMOVAL_WINDOW: Duration = Duration::from_millis(200);

type Reply = (
    oneshot::Sender<Result<Accepted, Rejected>>,
    Result<Accepted, Rejected>,
);

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
    /// The spool, when no commit is running (a running commit has it).
    spool: Option<Box<dyn Spool>>,
    commit: Option<Commit>,
    recovered: Option<Recovered>,
    /// The spool failed beyond repair: nothing new can be made durable.
    spool_lost: bool,
    /// When the next commit is due (set when the first operation after a commit arrives).
    commit_due: Option<Instant>,
    /// The router as adapters see it.
    routes: crate::context::Routes,
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
        // Beyond it submitters wait (their own peers then wait too), which bounds memory.
        let (tx, rx) = mpsc::channel(config.submit_queue.max(1));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let handle = BrokerHandle {
            tx,
            shutdown,
            metrics: Metrics::default(),
        };
        let broker = Broker {
            routes: crate::context::Routes::new(router.clone()),
            core: Core::new(config, router),
            rx,
            handle: handle.clone(),
            adapters: HashMap::new(),
            shutdown_rx,
            drain_deadline: Duration::from_secs(10),
            spool: None,
            commit: None,
            recovered: None,
            spool_lost: false,
            commit_due: None,
        };
        (broker, handle)
    }

    /// A handle to control the broker once it runs.
    pub fn handle(&self) -> BrokerHandle {
        self.handle.clone()
    }

    /// The context for building the adapter named `name`.
    pub fn context(&self, name: &str) -> AdapterContext {
        let prefix = format!("adapter/{name}/");
        let recovered = self
            .recovered
            .iter()
            .flat_map(|r| r.state.iter())
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_owned(), v.clone())))
            .collect();
        AdapterContext {
            submitter: Submitter {
                origin: Arc::from(name),
                tx: self.handle.tx.clone(),
            },
            shutdown: self.shutdown_rx.clone(),
            metrics: self.handle.metrics.adapter(name),
            state: StateStore {
                prefix,
                tx: self.handle.tx.clone(),
                recovered: Arc::new(recovered),
            },
            routes: self.routes.clone(),
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
            // What arrived since the last commit goes into the next one; its senders hear
            // "accepted" and its envelopes leave only when it is durable.
            self.start_commit(&mut replies);
            // While stopping, only deliveries already in flight finish; nothing new starts.
            if stopping.is_none() {
                self.dispatch(&done_tx, now());
            }
            self.publish_reports();
            self.core.compact();
            crate::compact::Compact::compact(&mut replies);
            if let Some(since) = stopping {
                let drained = self.core.in_flight() == 0 && self.commit.is_none();
                if drained || since.elapsed() >= self.drain_deadline {
                    break;
                }
            }
            let deadline = [self.core.poll_timeout().map(|t| start + t), self.commit_due]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                biased;
                done = commit_done(&mut self.commit) => self.finish_commit(done),
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
                _ = sleep_until(deadline) => {
                    if self.core.poll_timeout().is_some_and(|t| t <= now()) {
                        self.core.handle_timeout(now());
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(50)), if stopping.is_some() => {}
            }
            // Whatever else is already waiting joins this turn.
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
        // The last outcomes and what is still to be written.
        if self.commit.is_some() {
            let done = commit_done(&mut self.commit).await;
            self.finish_commit(done);
        }
        self.core.save_state(now());
        self.commit_due = Some(Instant::now());
        self.start_commit(&mut replies);
        if self.commit.is_some() {
            let done = commit_done(&mut self.commit).await;
            self.finish_commit(done);
        }
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
                // "Accepted" waits until the message is durable (also a repeat, until
                // its first acceptance is); a refusal, or what is not spooled, is
                // answered at once.
                if result.as_ref().is_ok_and(|a| self.core.awaits_commit(a.id)) {
                    replies.push((reply, result));
                } else {
                    let _ = reply.send(result);
                }
            }
            Command::SetRouter(router) => {
                self.routes.replace(router.clone());
                self.core.set_router(router);
                tracing::info!("address map replaced");
            }
            Command::State { key, value } => self.core.record_state(key, value),
        }
    }

    /// Starts a commit of what the core recorded once it is due, unless one is running
    /// (group commit: what arrives meanwhile goes into the next one). A commit is due
    /// [`COMMIT_WINDOW`] after the first operation that someone waits for (an
    /// acceptance, a notification to send), or [`REMOVAL_WINDOW`] after the first removal
    /// when there are only removals. Answers at once when there is nothing to write:
    /// every earlier acceptance is already durable.
    fn start_commit(&mut self, replies: &mut Vec<Reply>) {
        if self.commit.is_some() {
            return;
        }
        if self.spool.is_none() {
            // No spool (or lost): nothing is recorded; answer what waits.
            for (reply, result) in replies.drain(..) {
                let _ = reply.send(result);
            }
            return;
        }
        let Some((_, urgent)) = self.core.pending_ops() else {
            self.commit_due = None;
            for (reply, result) in replies.drain(..) {
                let _ = reply.send(result);
            }
            return;
        };
        let now = Instant::now();
        let window = if urgent || !replies.is_empty() {
            COMMIT_WINDOW
        } else {
            REMOVAL_WINDOW
        };
        let due = match self.commit_due {
            // Work someone waits for shortens a removal-only wait.
            Some(due) => due.min(now + window),
            None => now + window,
        };
        if due > now {
            self.commit_due = Some(due);
            return;
        }
        self.commit_due = None;
        let Some(mut spool) = self.spool.take() else {
            return;
        };
        let ops = self.core.take_ops();
        let next_id = self.core.next_id();
        let now_ms = crate::envelope::unix_now_ms();
        let puts = SpoolOp::put_ids(&ops);
        let job = tokio::task::spawn_blocking(move || {
            let result = spool.commit(&ops, next_id, now_ms);
            (spool, ops, result)
        });
        self.commit = Some(Commit {
            job,
            replies: std::mem::take(replies),
            puts,
            started: std::time::Instant::now(),
        });
    }

    /// A commit ended: on success the senders hear their answers and the envelopes may
    /// leave; on failure the new submissions are refused and withdrawn, and the rest of
    /// the operations (removals, notifications) go with the next commit.
    fn finish_commit(&mut self, done: CommitDone) {
        let Some(Commit {
            replies,
            puts,
            started,
            ..
        }) = self.commit.take()
        else {
            return;
        };
        let (spool, ops, result) = match done {
            Ok(done) => done,
            Err(join) => {
                // The spool was lost with the panicking thread: nothing is durable from
                // here on, so new submissions are refused (see `on_command`). This
                // batch's submissions are refused and withdrawn; what the gateway owes
                // (notifications) still goes out.
                tracing::error!(error = %join, "the spool failed (panic); the gateway refuses new messages");
                self.handle.metrics.spool().failed();
                let withdrawn = submitted(&replies, &puts);
                self.core.withdraw(&withdrawn);
                fail_batch(replies, "the message store failed");
                self.core.set_spooling(false);
                self.core.mark_durable(&puts);
                self.spool_lost = true;
                return;
            }
        };
        let count = ops.len();
        match result {
            Ok(()) => {
                self.handle
                    .metrics
                    .spool()
                    .committed(count, started.elapsed(), spool.len());
                self.core.mark_durable(&puts);
                for (reply, result) in replies {
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                tracing::error!(%error, "spool commit failed: the batch's submissions are refused");
                self.handle.metrics.spool().failed();
                let withdrawn = submitted(&replies, &puts);
                let kept: Vec<SpoolOp> = ops
                    .into_iter()
                    .filter(|op| match op {
                        SpoolOp::Put(e) => !withdrawn.contains(&e.id),
                        SpoolOp::Remember { id, .. } => !withdrawn.contains(id),
                        _ => true,
                    })
                    .collect();
                self.core.return_ops(kept);
                self.core.withdraw(&withdrawn);
                fail_batch(replies, "the message store cannot be written");
            }
        }
        self.spool = Some(spool);
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

/// What a commit thread gives back: the spool, the operations, and the outcome.
type Committed = (Box<dyn Spool>, Vec<SpoolOp>, Result<(), SpoolError>);
type CommitDone = Result<Committed, tokio::task::JoinError>;

/// A spool commit running on a blocking thread, and who waits for it.
struct Commit {
    job: JoinHandle<Committed>,
    replies: Vec<Reply>,
    puts: Vec<MessageId>,
    started: std::time::Instant,
}

/// Resolves when the running commit ends; never without one.
async fn commit_done(commit: &mut Option<Commit>) -> CommitDone {
    match commit {
        Some(c) => (&mut c.job).await,
        None => std::future::pending().await,
    }
}

/// The envelopes of `puts` that senders in `replies` wait for (not the gateway's own
/// notifications): what a failed commit takes back.
fn submitted(replies: &[Reply], puts: &[MessageId]) -> HashSet<MessageId> {
    replies
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .filter(|a| !a.duplicate)
        .map(|a| a.id)
        .filter(|id| puts.contains(id))
        .collect()
}

/// Refuses every accepted submission of a batch that could not be made durable.
fn fail_batch(replies: Vec<Reply>, why: &str) {
    for (reply, result) in replies {
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
