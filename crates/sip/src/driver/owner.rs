//! The one task that owns the adapter's SIP machines: server and client transactions,
//! the dialogs both ways, publications, the registrar, the authorization policy and what
//! the driver remembers of its peers ([`Machines`]). Every other task reaches them by
//! sending it a job ([`Owner::with`] waits for the job's result, [`Owner::tell`] does
//! not), so no state is behind a lock and the jobs run one at a time, in the order they
//! were sent. A job is plain synchronous code on the pure machines: it never awaits,
//! never touches a socket; what it decides is acted on by the task that sent it.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;

use tokio::sync::{mpsc, oneshot};

use cpim::presence::Presence;
use cpim_broker::envelope::MessageId;

use crate::auth::Registrar;
use crate::authorization::Authorization;
use crate::subscription::{DialogKey, Notifier, Publications, Subscriber};
use crate::transaction::ServerTransactions;
use crate::transport::Peer;
use crate::wire::RawMessage;

use super::WatcherSide;

/// The adapter's mutable SIP state, owned by the owner task.
pub(super) struct Machines {
    /// Where the responses of each running client transaction go, by branch.
    pub(super) clients: HashMap<String, mpsc::Sender<RawMessage>>,
    pub(super) server: ServerTransactions,
    /// SIP watchers' subscriptions at the gateway, and the driver's side of each.
    pub(super) notifier: Notifier,
    pub(super) watchers: HashMap<DialogKey, WatcherSide>,
    /// The gateway's subscriptions to SIP presentities, and where each goes.
    pub(super) subscriber: Subscriber,
    pub(super) upstream_peers: HashMap<String, Peer>,
    pub(super) publications: Publications,
    /// The state SIP users published here, by AOR (the gateway is their presence
    /// server, RFC 3903).
    pub(super) published: HashMap<String, Presence>,
    pub(super) registrar: Registrar,
    /// What each SIP contact (by AOR) has shown about `message/cpim`: `true` when it
    /// sent CPIM itself, `false` when it answered CPIM with 415 and an `Accept` without
    /// it. Contacts not here take CPIM only when `cpim_domains` says so.
    pub(super) takes_cpim: HashMap<String, bool>,
    /// The presence authorization policy and the requests waiting under it.
    pub(super) authorization: Authorization,
    /// The messages held for an unregistered user whose senders were told so (`stored`).
    pub(super) told_stored: HashSet<MessageId>,
    /// SIP users' subscriptions to their own watcher information (RFC 3857), and where
    /// each dialog's NOTIFYs go.
    pub(super) winfo: Notifier,
    pub(super) winfo_peers: HashMap<DialogKey, Peer>,
    /// Which watcher dialogs were last kept in the spool.
    pub(super) kept_watchers: Vec<DialogKey>,
}

type Job = Box<dyn FnOnce(&mut Machines) + Send>;

/// The way to the owner task.
pub(super) struct Owner {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Owner {
    /// Starts the owner task with `machines`. It runs until the last [`Owner`] is dropped.
    pub(super) fn spawn(machines: Machines) -> Owner {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            let mut machines = machines;
            while let Some(job) = queue.recv().await {
                // A job that panics (a bug, never peer input) fails the task that sent
                // it, as a panic under a lock did; the others go on.
                if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut machines))).is_err() {
                    tracing::error!("a job on the SIP state panicked");
                }
            }
        });
        Owner { jobs }
    }

    /// Runs `job` on the machines and returns its result.
    pub(super) async fn with<R, F>(&self, job: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(&mut Machines) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.tell(move |m| {
            let _ = tx.send(job(m));
        });
        match rx.await {
            Ok(r) => r,
            // Only a job that panicked (the owner runs as long as `self` lives).
            Err(_) => panic!("a job on the SIP state failed"),
        }
    }

    /// Runs `job` on the machines without waiting for it. Jobs run in the order sent.
    pub(super) fn tell<F>(&self, job: F)
    where
        F: FnOnce(&mut Machines) + Send + 'static,
    {
        if self.jobs.send(Box::new(job)).is_err() {
            tracing::debug!("the SIP state owner is gone (shutting down)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn machines() -> Machines {
        let policy = crate::subscription::Policy::default();
        Machines {
            clients: HashMap::new(),
            server: ServerTransactions::default(),
            notifier: Notifier::new(policy),
            watchers: HashMap::new(),
            subscriber: Subscriber::new(Duration::from_secs(32)),
            upstream_peers: HashMap::new(),
            publications: Publications::new(policy),
            published: HashMap::new(),
            registrar: Registrar::new(Vec::new(), &[7; 32]),
            takes_cpim: HashMap::new(),
            authorization: Authorization::new(crate::authorization::Policy::default(), &[]),
            told_stored: HashSet::new(),
            winfo: Notifier::new(policy),
            winfo_peers: HashMap::new(),
            kept_watchers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn jobs_run_in_the_order_they_were_sent_and_a_panic_spares_the_owner() {
        let owner = Owner::spawn(machines());
        for (i, aor) in ["a", "b", "c"].into_iter().enumerate() {
            owner.tell(move |m| {
                m.takes_cpim.insert(aor.to_owned(), i % 2 == 0);
            });
        }
        let failed = tokio::spawn({
            let owner = Owner {
                jobs: owner.jobs.clone(),
            };
            async move { owner.with(|_| -> u8 { panic!("a bug") }).await }
        })
        .await;
        assert!(failed.is_err(), "the sender of the failed job fails");
        let seen = owner
            .with(|m| {
                let mut v: Vec<(String, bool)> =
                    m.takes_cpim.iter().map(|(k, v)| (k.clone(), *v)).collect();
                v.sort();
                v
            })
            .await;
        assert_eq!(
            seen,
            vec![
                ("a".to_owned(), true),
                ("b".to_owned(), false),
                ("c".to_owned(), true)
            ]
        );
    }
}
