//! Running the gateway: the broker with its adapters, address-map reload on SIGHUP, stop on
//! SIGTERM/SIGINT.
//!
//! A reload reads the configuration file again and replaces the address map (domains,
//! `[[aliases]]`, `[[users]]`). Messages already accepted keep the addresses they were given;
//! a configuration that does not load or validate is rejected with an error in the log and
//! the current map stays. Adapter sections themselves (listeners, servers, secrets) take
//! effect on restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use cpim_broker::core::CoreConfig;
use cpim_broker::presence::HubConfig;
use cpim_broker::spool::FileSpool;
use cpim_broker::{Adapter, Broker, BrokerHandle};

use crate::config::Config;
use crate::error::Error;

/// The broker limits that `[gateway]` sets.
pub fn core_config(config: &Config) -> CoreConfig {
    let g = &config.gateway;
    CoreConfig {
        max_hops: g.max_hops,
        dedup_window: Duration::from_secs(u64::from(g.dedup_window_secs)),
        max_queued_per_destination: g.queue_per_destination as usize,
        max_queued_total: g.queue_total as usize,
        hub: HubConfig {
            coalesce_interval: Duration::from_secs(u64::from(g.presence_interval_secs)),
            max_subscriptions: g.max_subscriptions as usize,
            ..HubConfig::default()
        },
        message_expiry: Some(Duration::from_secs(u64::from(g.message_expiry_secs))),
        // A destination that is down is tried again with backoff (1 s doubling to 60 s)
        // until the message expires or has had its attempts.
        max_delivery_attempts: g.max_delivery_attempts,
        head_of_line_limit: Some(Duration::from_secs(u64::from(g.head_of_line_secs))),
        retry_backoff: Duration::from_secs(1),
        max_retry_backoff: Duration::from_secs(60),
        ..CoreConfig::default()
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    /// Controls the broker.
    pub broker: BrokerHandle,
    task: JoinHandle<()>,
}

impl Running {
    /// Resolves if the broker task ends by itself (it should not: only a panic does).
    pub async fn ended(&mut self) {
        if let Err(error) = (&mut self.task).await {
            tracing::error!(%error, "the broker task failed");
        }
    }

    /// Stops the broker (deliveries in flight may finish) and waits for it.
    pub async fn stop(self) {
        self.broker.stop();
        let _ = self.task.await;
    }
}

/// Starts the broker for `config` with the adapters `build` makes; `build` gets the
/// broker so that it can hand each adapter its context.
pub fn start(
    config: &Config,
    build: impl FnOnce(&Broker) -> Vec<Arc<dyn Adapter>>,
) -> Result<Running, Error> {
    let broker = prepare(config)?;
    let adapters = build(&broker);
    Ok(launch(broker, adapters))
}

/// The broker for `config`, not started yet: hand out adapter contexts with
/// [`Broker::context`], build the adapters (which may need to await, e.g. to bind a
/// listener), then [`launch`].
pub fn prepare(config: &Config) -> Result<Broker, Error> {
    let map = config.address_map()?;
    let (broker, _handle) = Broker::new(core_config(config), Arc::new(map));
    if !config.gateway.spool {
        return Ok(broker);
    }
    let spool = FileSpool::open(&config.spool_path())?;
    let broker = broker.with_spool(Box::new(spool))?;
    let stored = broker.handle().metrics().spool().envelopes();
    tracing::info!(path = %config.spool_path().display(), stored, "spool opened");
    Ok(broker)
}

/// Adds the adapters and starts the broker task.
pub fn launch(mut broker: Broker, adapters: Vec<Arc<dyn Adapter>>) -> Running {
    for adapter in adapters {
        tracing::info!(adapter = adapter.name(), domains = ?adapter.domains(), "adapter started");
        broker.add_adapter(adapter);
    }
    let handle = broker.handle();
    let task = broker.start();
    Running {
        broker: handle,
        task,
    }
}

/// The outcome of the reloads so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Reloads that replaced the map.
    pub applied: u64,
    /// Reloads that were rejected (the map stayed).
    pub rejected: u64,
    /// Why the last rejected reload was rejected.
    pub last_error: Option<String>,
}

/// Reads `path` again and replaces the broker's address map. On error nothing changes.
pub async fn reload(path: &Path, broker: &BrokerHandle) -> Result<(), Error> {
    let config = Config::load(path)?;
    let map = config.address_map()?;
    if !broker.set_router(Arc::new(map)).await {
        return Err(Error::Stopped);
    }
    Ok(())
}

/// Reloads the address map from `path` on every SIGHUP; the returned receiver follows
/// the outcomes (also logged).
pub fn reload_on_sighup(
    path: PathBuf,
    broker: BrokerHandle,
) -> std::io::Result<(watch::Receiver<ReloadStatus>, JoinHandle<()>)> {
    let (tx, rx) = watch::channel(ReloadStatus::default());
    let task = reload_on_sighup_into(path, broker, tx)?;
    Ok((rx, task))
}

/// [`reload_on_sighup`] reporting into an existing status channel (shared with the
/// admin listener's reload route).
pub fn reload_on_sighup_into(
    path: PathBuf,
    broker: BrokerHandle,
    tx: watch::Sender<ReloadStatus>,
) -> std::io::Result<JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    let task = tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let _ = reload_recorded(&path, &broker, &tx, "SIGHUP").await;
        }
    });
    Ok(task)
}

/// Reloads the address map from `path` (see [`reload`]), logs the outcome as coming from
/// `trigger` (`SIGHUP`, `admin`) and counts it in `tx`. Returns the counts after a
/// reload that was applied, or why it was rejected.
pub async fn reload_recorded(
    path: &Path,
    broker: &BrokerHandle,
    tx: &watch::Sender<ReloadStatus>,
    trigger: &str,
) -> Result<ReloadStatus, Error> {
    match reload(path, broker).await {
        Ok(()) => {
            tracing::info!(config = %path.display(), "{trigger}: address map reloaded");
            tx.send_modify(|s| s.applied += 1);
            Ok(tx.borrow().clone())
        }
        Err(error) => {
            tracing::error!(config = %path.display(), %error, "{trigger}: reload rejected; the current address map stays");
            let text = error.to_string();
            tx.send_modify(|s| {
                s.rejected += 1;
                s.last_error = Some(text);
            });
            Err(error)
        }
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    Ok(())
}
