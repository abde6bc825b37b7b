//! Prometheus metrics, rendered by hand in the text exposition format.
//! Per-function counters are plain atomics reached through an `Arc` held by
//! the function's table entry, so the request path takes no lock.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wisp_core::{Outcome, StoreError};

const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
pub struct FunctionMetrics {
    by_outcome: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS.len()],
    duration_sum_us: AtomicU64,
    duration_count: AtomicU64,
    cold_starts: AtomicU64,
    in_flight: AtomicI64,
}

impl FunctionMetrics {
    pub fn started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }
    pub fn finished(&self, outcome: Outcome, duration: Duration, cold: bool) {
        self.in_flight.fetch_sub(1, Relaxed);
        self.count(outcome, duration, cold);
    }
    pub fn count(&self, outcome: Outcome, duration: Duration, cold: bool) {
        let idx = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(1);
        self.by_outcome[idx].fetch_add(1, Relaxed);
        let secs = duration.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.duration_sum_us
            .fetch_add(duration.as_micros() as u64, Relaxed);
        self.duration_count.fetch_add(1, Relaxed);
        if cold {
            self.cold_starts.fetch_add(1, Relaxed);
        }
    }
}

/// Records written off the request path (activations, the access and
/// audit logs, queue acknowledgements) that were lost, by why: rendered as
/// one counter with a `reason` label.
#[derive(Default)]
pub struct Dropped {
    /// The writer fell behind: its queue was full.
    pub queue_full: AtomicU64,
    /// The disk was full.
    pub no_space: AtomicU64,
    /// Storing them failed for another reason.
    pub write_failed: AtomicU64,
}

impl Dropped {
    /// Counts `n` records that `e` kept from being stored.
    pub fn failed(&self, e: &StoreError, n: usize) {
        let c = if e.is_full() {
            &self.no_space
        } else {
            &self.write_failed
        };
        c.fetch_add(n as u64, Relaxed);
    }

    /// Renders `name{reason="..."}` for every reason.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (reason, c) in [
            ("queue_full", &self.queue_full),
            ("no_space", &self.no_space),
            ("write_failed", &self.write_failed),
        ] {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", c.load(Relaxed));
        }
    }
}

/// All metrics of a node.
#[derive(Default)]
pub struct Metrics {
    functions: Mutex<BTreeMap<(String, String), Arc<FunctionMetrics>>>,
    /// Activation records lost.
    pub records_dropped: Dropped,
}

impl Metrics {
    pub fn for_function(&self, ns: &str, name: &str) -> Arc<FunctionMetrics> {
        let mut m = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((ns.to_string(), name.to_string()))
            .or_default()
            .clone()
    }

    pub fn render(&self, deployed: usize, loaded: usize) -> String {
        let m = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(4096);
        let lbl = |ns: &str, f: &str| format!("namespace=\"{ns}\",function=\"{f}\"");
        out.push_str("# HELP wisp_invocations_total Invocations by function and outcome.\n# TYPE wisp_invocations_total counter\n");
        for ((ns, f), fm) in m.iter() {
            for (i, o) in Outcome::ALL.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "wisp_invocations_total{{{},outcome=\"{}\"}} {}",
                    lbl(ns, f),
                    o,
                    fm.by_outcome[i].load(Relaxed)
                );
            }
        }
        out.push_str("# HELP wisp_invocation_duration_seconds Run time of invocations.\n# TYPE wisp_invocation_duration_seconds histogram\n");
        for ((ns, f), fm) in m.iter() {
            let l = lbl(ns, f);
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "wisp_invocation_duration_seconds_bucket{{{l},le=\"{b}\"}} {}",
                    fm.buckets[i].load(Relaxed)
                );
            }
            let count = fm.duration_count.load(Relaxed);
            let _ = writeln!(
                out,
                "wisp_invocation_duration_seconds_bucket{{{l},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "wisp_invocation_duration_seconds_sum{{{l}}} {}",
                fm.duration_sum_us.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(out, "wisp_invocation_duration_seconds_count{{{l}}} {count}");
        }
        out.push_str("# HELP wisp_cold_starts_total Invocations that had to load their function first.\n# TYPE wisp_cold_starts_total counter\n");
        for ((ns, f), fm) in m.iter() {
            let _ = writeln!(
                out,
                "wisp_cold_starts_total{{{}}} {}",
                lbl(ns, f),
                fm.cold_starts.load(Relaxed)
            );
        }
        out.push_str(
            "# HELP wisp_in_flight Invocations running now.\n# TYPE wisp_in_flight gauge\n",
        );
        for ((ns, f), fm) in m.iter() {
            let _ = writeln!(
                out,
                "wisp_in_flight{{{}}} {}",
                lbl(ns, f),
                fm.in_flight.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP wisp_functions_deployed Deployed functions.\n# TYPE wisp_functions_deployed gauge\nwisp_functions_deployed {deployed}"
        );
        let _ = writeln!(
            out,
            "# HELP wisp_functions_loaded Functions held in memory, ready to run.\n# TYPE wisp_functions_loaded gauge\nwisp_functions_loaded {loaded}"
        );
        self.records_dropped.render(
            &mut out,
            "wisp_activation_records_dropped_total",
            "Activation records lost, by reason: the recorder fell behind (queue_full), the disk was full (no_space), another storage failure (write_failed).",
        );
        out
    }
}

/// The durable queue's gauges and counters.
pub(crate) fn render_queue(
    out: &mut String,
    depth: usize,
    c: &crate::events::QueueCounters,
    dropped: &Dropped,
) {
    dropped.render(
        out,
        "wisp_queue_updates_dropped_total",
        "Queue acknowledgements, retries and dead letters that could not be stored (the delivery may run again), by reason.",
    );
    let _ = writeln!(
        out,
        "# HELP wisp_queue_depth Deliveries waiting, delayed for a retry, or running.\n# TYPE wisp_queue_depth gauge\nwisp_queue_depth {depth}"
    );
    for (name, help, v) in [
        (
            "wisp_queue_accepted_total",
            "Deliveries stored in the durable queue.",
            &c.accepted,
        ),
        (
            "wisp_queue_succeeded_total",
            "Deliveries whose run succeeded.",
            &c.succeeded,
        ),
        (
            "wisp_queue_retries_total",
            "Failed attempts scheduled for another try.",
            &c.retried,
        ),
        (
            "wisp_queue_dead_letters_total",
            "Deliveries moved to the dead-letter queue.",
            &c.dead_lettered,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Relaxed)
        );
    }
}
