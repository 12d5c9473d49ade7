//! What an adapter is given by the broker: its [`AdapterContext`] — a [`Submitter`] to
//! hand inbound events to the broker, a [`StateStore`] for a little state kept across
//! restarts, its metrics and the shutdown signal. The runtime holds the other ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use cpim::Condition;

use crate::envelope::{Accepted, AdapterName, Inbound, Rejected};
use crate::map::Router;
use crate::metrics::AdapterMetrics;

/// What an adapter gets when it is built: how to submit, when to stop, where to count.
#[derive(Debug, Clone)]
pub struct AdapterContext {
    /// Submits inbound events to the broker on behalf of this adapter.
    pub submitter: Submitter,
    /// Becomes `true` when the gateway stops.
    pub shutdown: watch::Receiver<bool>,
    /// This adapter's metrics.
    pub metrics: AdapterMetrics,
    /// A little state kept across restarts in the spool (nothing is kept without one).
    pub state: StateStore,
    /// The address map the broker routes with now.
    pub routes: Routes,
}

/// The address map the broker routes with now, replaced by a reload: what an adapter
/// may ask it without a round trip through the broker (which domains are claimed).
#[derive(Clone)]
pub struct Routes(Arc<std::sync::RwLock<Arc<dyn Router>>>);

impl Routes {
    pub(crate) fn new(router: Arc<dyn Router>) -> Routes {
        Routes(Arc::new(std::sync::RwLock::new(router)))
    }

    pub(crate) fn replace(&self, router: Arc<dyn Router>) {
        if let Ok(mut current) = self.0.write() {
            *current = router;
        }
    }

    /// Whether some adapter claims `domain` (any case) as a home, alias or escape
    /// domain in the current map.
    pub fn claims_domain(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.0.read().is_ok_and(|r| r.claims_domain(&domain))
    }
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Routes(..)")
    }
}

pub(crate) enum Command {
    Submit {
        origin: AdapterName,
        inbound: Box<Inbound>,
        reply: oneshot::Sender<Result<Accepted, Rejected>>,
    },
    SetRouter(Arc<dyn Router>),
    State {
        key: String,
        value: Option<Vec<u8>>,
    },
}

/// Submits inbound events on behalf of one adapter. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Submitter {
    pub(crate) origin: AdapterName,
    pub(crate) tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Submit { origin, .. } => write!(f, "Submit from {origin}"),
            Command::SetRouter(_) => f.write_str("SetRouter"),
            Command::State { key, .. } => write!(f, "State {key}"),
        }
    }
}

impl Submitter {
    /// Hands `inbound` to the broker and waits until it is accepted (queued for its
    /// destination) or refused.
    pub async fn submit(&self, inbound: Inbound) -> Result<Accepted, Rejected> {
        self.submit_pipelined(inbound).await.answer().await
    }

    /// Hands `inbound` to the broker in order — submissions made one after the other
    /// are accepted in that order — and returns the answer to wait for separately, so
    /// that an adapter reading a stream can go on with the next request while this one is
    /// made durable (the spool commits many submissions at once). Waits only while the
    /// broker's queue is full.
    pub async fn submit_pipelined(&self, inbound: Inbound) -> PendingAnswer {
        let (command, answer) = self.command(inbound);
        match self.tx.send(command).await {
            Ok(()) => PendingAnswer::waiting(answer),
            Err(_) => PendingAnswer::closed(),
        }
    }

    /// [`Submitter::submit`] that does not wait for room in the broker's queue (see
    /// [`Submitter::try_submit_pipelined`]): refused at once when it is full.
    pub async fn try_submit(&self, inbound: Inbound) -> Result<Accepted, Rejected> {
        self.try_submit_pipelined(inbound).answer().await
    }

    /// Like [`Submitter::submit_pipelined`], but never waits: when the broker's
    /// submission queue is full, the answer is at once a temporary refusal
    /// (`resource-constraint` with a retry hint: SIP 503 + Retry-After). For an adapter
    /// whose peers are not held back by waiting (UDP: the kernel would drop what is not
    /// read), so that every request is answered under overload instead of lost unread.
    pub fn try_submit_pipelined(&self, inbound: Inbound) -> PendingAnswer {
        let (command, answer) = self.command(inbound);
        match self.tx.try_send(command) {
            Ok(()) => PendingAnswer::waiting(answer),
            Err(mpsc::error::TrySendError::Full(_)) => PendingAnswer::shed(),
            Err(mpsc::error::TrySendError::Closed(_)) => PendingAnswer::closed(),
        }
    }

    /// Like [`Submitter::submit_pipelined`], but waits at most `wait` for room in the
    /// broker's queue: then the answer is at once the temporary refusal of
    /// [`Submitter::try_submit_pipelined`]. For a stream whose peers must hear a refusal
    /// while they are there rather than be held back without end (an XMPP server cannot
    /// tell that the component it writes to has stopped reading).
    pub async fn submit_pipelined_within(&self, inbound: Inbound, wait: Duration) -> PendingAnswer {
        let (command, answer) = self.command(inbound);
        match self.tx.send_timeout(command, wait).await {
            Ok(()) => PendingAnswer::waiting(answer),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => PendingAnswer::shed(),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => PendingAnswer::closed(),
        }
    }

    /// The command submitting `inbound`, and where its answer comes.
    fn command(
        &self,
        inbound: Inbound,
    ) -> (Command, oneshot::Receiver<Result<Accepted, Rejected>>) {
        let (reply, answer) = oneshot::channel();
        let command = Command::Submit {
            origin: self.origin.clone(),
            inbound: Box::new(inbound),
            reply,
        };
        (command, answer)
    }

    /// The adapter this submitter speaks for.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// An adapter's corner of the spool: a few records it wants back after a restart (the
/// SIP adapter's watcher dialogs, to end them cleanly). Written with the next commit;
/// without a spool nothing is kept and nothing comes back.
#[derive(Debug, Clone)]
pub struct StateStore {
    pub(crate) prefix: String,
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) recovered: Arc<std::collections::BTreeMap<String, Vec<u8>>>,
}

impl StateStore {
    /// Sets (`Some`) or removes (`None`) the record `key`. `false` when the broker is
    /// busy or stopped and the record was not taken (try again later).
    pub fn put(&self, key: &str, value: Option<Vec<u8>>) -> bool {
        self.tx
            .try_send(Command::State {
                key: format!("{}{key}", self.prefix),
                value,
            })
            .is_ok()
    }

    /// The records this adapter had when the gateway started, by key.
    pub fn recovered(&self) -> &std::collections::BTreeMap<String, Vec<u8>> {
        &self.recovered
    }
}

/// The broker's answer to a [`Submitter::submit_pipelined`], to wait for.
#[derive(Debug)]
pub struct PendingAnswer {
    pub(crate) answer: Option<oneshot::Receiver<Result<Accepted, Rejected>>>,
    /// Refused before it reached the broker (its queue was full).
    pub(crate) refused: Option<Rejected>,
}

impl PendingAnswer {
    fn waiting(answer: oneshot::Receiver<Result<Accepted, Rejected>>) -> Self {
        PendingAnswer {
            answer: Some(answer),
            refused: None,
        }
    }

    /// Refused at once: the broker's queue is full.
    fn shed() -> Self {
        PendingAnswer {
            answer: None,
            refused: Some(overload_rejection()),
        }
    }

    /// The broker is stopping.
    fn closed() -> Self {
        PendingAnswer {
            answer: None,
            refused: None,
        }
    }

    /// Whether it was refused before it reached the broker (its queue was full).
    pub fn is_refused(&self) -> bool {
        self.refused.is_some()
    }

    /// Waits for the answer: accepted (durable, with a spool) or refused.
    pub async fn answer(self) -> Result<Accepted, Rejected> {
        if let Some(refused) = self.refused {
            return Err(refused);
        }
        match self.answer {
            Some(answer) => answer.await.map_err(|_| stopping_rejection())?,
            None => Err(stopping_rejection()),
        }
    }
}

/// What a submission gets when the broker's submission queue is full and the adapter
/// may not wait: a temporary refusal with a short retry hint.
pub(crate) fn overload_rejection() -> Rejected {
    Rejected {
        condition: Condition::ResourceConstraint,
        text: "the gateway is overloaded; try again shortly".to_owned(),
        retry_after: Some(Duration::from_secs(1)),
    }
}

/// What a submission gets while the gateway stops: a temporary refusal with a retry hint
/// (SIP 503 + Retry-After, HTTP 503 + Retry-After, XMPP `resource-constraint`), so that
/// senders try again once it is back instead of giving up.
pub(crate) fn stopping_rejection() -> Rejected {
    Rejected {
        condition: Condition::ResourceConstraint,
        text: "the gateway is stopping; try again shortly".to_owned(),
        retry_after: Some(Duration::from_secs(5)),
    }
}
