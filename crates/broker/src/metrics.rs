//! The same metrics for every adapter, rendered in the Prometheus text format.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `cpim_received_total` | counter | `adapter` | events the adapter submitted and the broker accepted |
//! | `cpim_rejected_total` | counter | `adapter`, `condition` | events the broker refused at submission (no route, loop, back-pressure, …) |
//! | `cpim_delivered_total` | counter | `adapter` | events the adapter delivered or handed on |
//! | `cpim_failed_total` | counter | `adapter`, `condition` | deliveries by the adapter that failed for good |
//! | `cpim_queue_depth` | gauge | `adapter` | events waiting for or in delivery by the adapter |
//! | `cpim_delivery_latency_seconds` | histogram | `adapter` | from reception at the origin to the destination adapter's outcome |
//! | `cpim_adapter_connected` | gauge | `adapter` | 1 when the adapter's link or listener is up |
//! | `cpim_queue_full_total` | counter | `adapter` | submissions refused because a destination of this adapter had its queue (spool share) full |
//! | `cpim_federation_errors_total` | counter | `adapter`, `kind` | federation failures: `dns` (no server found for a foreign domain), `tls_verify`, `untrusted_peer` |
//! | `cpim_spool_envelopes` | gauge | | envelopes in the spool (accepted, no final outcome yet) |
//! | `cpim_spool_commits_total` | counter | | durable spool commits (each covers a batch of operations) |
//! | `cpim_spool_operations_total` | counter | | spool operations committed (puts, removals, dedup keys) |
//! | `cpim_spool_commit_seconds_total` | counter | | time spent in spool commits |
//! | `cpim_spool_errors_total` | counter | | failed spool commits (their submissions were refused) |

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cpim::Condition;

/// Upper bounds of the latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// One adapter's metrics. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct AdapterMetrics(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    received: AtomicU64,
    delivered: AtomicU64,
    queue_depth: AtomicI64,
    queue_full: AtomicU64,
    connected: AtomicBool,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    failed: Mutex<BTreeMap<&'static str, u64>>,
    federation: Mutex<BTreeMap<&'static str, u64>>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl AdapterMetrics {
    /// Counts an accepted submission.
    pub fn received(&self) {
        self.0.received.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused submission.
    pub fn rejected(&self, condition: Condition) {
        bump(&self.0.rejected, condition);
    }

    /// Counts a federation failure of `kind` (`dns`, `tls_verify`, `untrusted_peer`).
    pub fn federation_error(&self, kind: &'static str) {
        let mut m = self
            .0
            .federation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *m.entry(kind).or_insert(0) += 1;
    }

    /// How many federation failures of `kind` were counted.
    pub fn federation_error_count(&self, kind: &str) -> u64 {
        let m = self
            .0
            .federation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        m.get(kind).copied().unwrap_or(0)
    }

    /// Counts a delivered (or handed-on) event and its latency.
    pub fn delivered(&self, latency: Duration) {
        self.0.delivered.fetch_add(1, Ordering::Relaxed);
        self.observe(latency);
    }

    /// Counts a failed delivery and its latency.
    pub fn failed(&self, condition: Condition, latency: Duration) {
        bump(&self.0.failed, condition);
        self.observe(latency);
    }

    /// Sets the queue depth.
    pub fn queue_full(&self) {
        self.0.queue_full.fetch_add(1, Ordering::Relaxed);
    }

    /// Submissions refused because a destination of this adapter was full.
    pub fn queue_full_count(&self) -> u64 {
        self.0.queue_full.load(Ordering::Relaxed)
    }

    pub fn set_queue_depth(&self, depth: usize) {
        self.0
            .queue_depth
            .store(i64::try_from(depth).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Records whether the adapter's link or listener is up.
    pub fn set_connected(&self, up: bool) {
        self.0.connected.store(up, Ordering::Relaxed);
    }

    /// Whether the adapter reported itself connected.
    pub fn is_connected(&self) -> bool {
        self.0.connected.load(Ordering::Relaxed)
    }

    /// Accepted submissions so far.
    pub fn received_count(&self) -> u64 {
        self.0.received.load(Ordering::Relaxed)
    }

    /// Deliveries so far.
    pub fn delivered_count(&self) -> u64 {
        self.0.delivered.load(Ordering::Relaxed)
    }

    /// Failed deliveries with `condition` so far.
    pub fn failed_count(&self, condition: Condition) -> u64 {
        count(&self.0.failed, condition)
    }

    /// Refused submissions with `condition` so far.
    pub fn rejected_count(&self, condition: Condition) -> u64 {
        count(&self.0.rejected, condition)
    }

    /// The current queue depth.
    pub fn queue_depth(&self) -> i64 {
        self.0.queue_depth.load(Ordering::Relaxed)
    }

    fn observe(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        for (bucket, bound) in self.0.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.0.latency_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0
            .latency_sum_micros
            .fetch_add(micros, Ordering::Relaxed);
    }
}

fn bump(map: &Mutex<BTreeMap<&'static str, u64>>, condition: Condition) {
    let mut m = map.lock().unwrap_or_else(PoisonError::into_inner);
    *m.entry(condition.as_str()).or_insert(0) += 1;
}

fn count(map: &Mutex<BTreeMap<&'static str, u64>>, condition: Condition) -> u64 {
    let m = map.lock().unwrap_or_else(PoisonError::into_inner);
    m.get(condition.as_str()).copied().unwrap_or(0)
}

/// All adapters' metrics.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    adapters: Arc<Mutex<BTreeMap<String, AdapterMetrics>>>,
    spool: SpoolMetrics,
}

/// The spool's metrics (gateway-wide).
#[derive(Debug, Clone, Default)]
pub struct SpoolMetrics(Arc<SpoolInner>);

#[derive(Debug, Default)]
struct SpoolInner {
    enabled: AtomicBool,
    envelopes: AtomicU64,
    commits: AtomicU64,
    operations: AtomicU64,
    commit_micros: AtomicU64,
    errors: AtomicU64,
}

impl SpoolMetrics {
    /// Counts one commit of `operations` that took `took`, leaving `envelopes` stored.
    pub fn committed(&self, operations: usize, took: Duration, envelopes: usize) {
        let s = &self.0;
        s.enabled.store(true, Ordering::Relaxed);
        s.commits.fetch_add(1, Ordering::Relaxed);
        s.operations.fetch_add(
            u64::try_from(operations).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        s.commit_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.set_envelopes(envelopes);
    }

    /// Sets the number of stored envelopes.
    pub fn set_envelopes(&self, envelopes: usize) {
        self.0.enabled.store(true, Ordering::Relaxed);
        self.0.envelopes.store(
            u64::try_from(envelopes).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts a failed commit.
    pub fn failed(&self) {
        self.0.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Envelopes stored.
    pub fn envelopes(&self) -> u64 {
        self.0.envelopes.load(Ordering::Relaxed)
    }

    /// Commits so far.
    pub fn commits(&self) -> u64 {
        self.0.commits.load(Ordering::Relaxed)
    }

    /// Failed commits so far.
    pub fn errors(&self) -> u64 {
        self.0.errors.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String) {
        let s = &self.0;
        if !s.enabled.load(Ordering::Relaxed) {
            return;
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let secs = load(&s.commit_micros) as f64 / 1e6;
        for (name, kind, help, value) in [
            (
                "cpim_spool_envelopes",
                "gauge",
                "Envelopes in the spool (accepted, no final outcome yet).",
                load(&s.envelopes).to_string(),
            ),
            (
                "cpim_spool_commits_total",
                "counter",
                "Durable spool commits.",
                load(&s.commits).to_string(),
            ),
            (
                "cpim_spool_operations_total",
                "counter",
                "Spool operations committed.",
                load(&s.operations).to_string(),
            ),
            (
                "cpim_spool_commit_seconds_total",
                "counter",
                "Time spent in spool commits.",
                format!("{secs:.6}"),
            ),
            (
                "cpim_spool_errors_total",
                "counter",
                "Failed spool commits.",
                load(&s.errors).to_string(),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
}

impl Metrics {
    /// The metrics of `adapter`, created on first use.
    pub fn adapter(&self, adapter: &str) -> AdapterMetrics {
        let mut m = self.adapters.lock().unwrap_or_else(PoisonError::into_inner);
        m.entry(adapter.to_owned()).or_default().clone()
    }

    /// The spool's metrics.
    pub fn spool(&self) -> &SpoolMetrics {
        &self.spool
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let adapters: Vec<(String, AdapterMetrics)> = {
            let m = self.adapters.lock().unwrap_or_else(PoisonError::into_inner);
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let mut out = String::new();
        let simple = |out: &mut String,
                      name: &str,
                      kind: &str,
                      help: &str,
                      value: &dyn Fn(&Inner) -> String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (a, m) in &adapters {
                let _ = writeln!(out, "{name}{{adapter=\"{}\"}} {}", escape(a), value(&m.0));
            }
        };
        simple(
            &mut out,
            "cpim_received_total",
            "counter",
            "Events submitted by the adapter and accepted.",
            &|m| m.received.load(Ordering::Relaxed).to_string(),
        );
        simple(
            &mut out,
            "cpim_delivered_total",
            "counter",
            "Events delivered or handed on by the adapter.",
            &|m| m.delivered.load(Ordering::Relaxed).to_string(),
        );
        simple(
            &mut out,
            "cpim_queue_depth",
            "gauge",
            "Events waiting for or in delivery by the adapter.",
            &|m| m.queue_depth.load(Ordering::Relaxed).to_string(),
        );
        simple(
            &mut out,
            "cpim_adapter_connected",
            "gauge",
            "1 when the adapter's link or listener is up.",
            &|m| u8::from(m.connected.load(Ordering::Relaxed)).to_string(),
        );
        simple(
            &mut out,
            "cpim_queue_full_total",
            "counter",
            "Submissions refused because a destination of the adapter had its queue full.",
            &|m| m.queue_full.load(Ordering::Relaxed).to_string(),
        );
        self.spool.render(&mut out);
        for (name, label, help, pick) in [
            (
                "cpim_rejected_total",
                "condition",
                "Submissions refused by the broker, by condition.",
                (|m: &Inner| &m.rejected) as fn(&Inner) -> &Mutex<BTreeMap<&'static str, u64>>,
            ),
            (
                "cpim_failed_total",
                "condition",
                "Deliveries that failed for good, by condition.",
                |m: &Inner| &m.failed,
            ),
            (
                "cpim_federation_errors_total",
                "kind",
                "Federation failures: dns, tls_verify, untrusted_peer.",
                |m: &Inner| &m.federation,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (a, m) in &adapters {
                let map = pick(&m.0).lock().unwrap_or_else(PoisonError::into_inner);
                for (condition, n) in map.iter() {
                    let _ = writeln!(
                        out,
                        "{name}{{adapter=\"{}\",{label}=\"{condition}\"}} {n}",
                        escape(a)
                    );
                }
            }
        }
        let name = "cpim_delivery_latency_seconds";
        let _ = writeln!(out, "# HELP {name} From reception at the origin to the destination's outcome.\n# TYPE {name} histogram");
        for (a, m) in &adapters {
            let a = escape(a);
            for (bucket, bound) in m.0.latency_buckets.iter().zip(LATENCY_BUCKETS) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{adapter=\"{a}\",le=\"{bound}\"}} {}",
                    bucket.load(Ordering::Relaxed)
                );
            }
            let n = m.0.latency_count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{adapter=\"{a}\",le=\"+Inf\"}} {n}");
            let sum = m.0.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_sum{{adapter=\"{a}\"}} {sum}\n{name}_count{{adapter=\"{a}\"}} {n}"
            );
        }
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_every_metric_for_every_adapter() {
        let metrics = Metrics::default();
        let sip = metrics.adapter("sip");
        sip.received();
        sip.delivered(Duration::from_millis(2));
        sip.failed(Condition::ItemNotFound, Duration::from_millis(40));
        sip.rejected(Condition::ResourceConstraint);
        sip.set_queue_depth(7);
        sip.set_connected(true);
        metrics.adapter("xmpp").queue_full();
        assert!(
            !metrics.render().contains("cpim_spool_"),
            "no spool series without a spool"
        );
        metrics.spool().committed(3, Duration::from_millis(2), 5);
        metrics.spool().failed();
        let text = metrics.render();
        for line in [
            "cpim_received_total{adapter=\"sip\"} 1",
            "cpim_received_total{adapter=\"xmpp\"} 0",
            "cpim_delivered_total{adapter=\"sip\"} 1",
            "cpim_failed_total{adapter=\"sip\",condition=\"item-not-found\"} 1",
            "cpim_rejected_total{adapter=\"sip\",condition=\"resource-constraint\"} 1",
            "cpim_queue_depth{adapter=\"sip\"} 7",
            "cpim_adapter_connected{adapter=\"sip\"} 1",
            "cpim_delivery_latency_seconds_bucket{adapter=\"sip\",le=\"0.0025\"} 1",
            "cpim_delivery_latency_seconds_bucket{adapter=\"sip\",le=\"0.05\"} 2",
            "cpim_delivery_latency_seconds_bucket{adapter=\"sip\",le=\"+Inf\"} 2",
            "cpim_delivery_latency_seconds_count{adapter=\"sip\"} 2",
            "cpim_queue_full_total{adapter=\"xmpp\"} 1",
            "cpim_queue_full_total{adapter=\"sip\"} 0",
            "cpim_spool_envelopes 5",
            "cpim_spool_commits_total 1",
            "cpim_spool_operations_total 3",
            "cpim_spool_commit_seconds_total 0.002000",
            "cpim_spool_errors_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }
}
