//! The engine's Prometheus metrics. Per-function counters are plain
//! atomics reached through an `Arc` held by the function's table entry, so
//! the request path takes no lock; the engine's collector
//! ([`Engine::collector`](crate::Engine::collector)) describes them to the
//! node's registry (`wisp_core::metrics`) at scrape time.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wisp_core::metrics::{self, DescriptorEncoder, HistogramSample};
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

    /// `name{reason="..."}` for every reason (`name` without `_total`).
    pub fn encode(&self, e: &mut DescriptorEncoder, name: &str, help: &str) -> fmt::Result {
        metrics::counter(
            e,
            name,
            help,
            [
                ("queue_full", &self.queue_full),
                ("no_space", &self.no_space),
                ("write_failed", &self.write_failed),
            ]
            .map(|(reason, c)| (vec![("reason", reason)], c.load(Relaxed))),
        )
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

    /// The functions' series, and the node's function gauges.
    pub fn encode(&self, e: &mut DescriptorEncoder, deployed: usize, loaded: usize) -> fmt::Result {
        let m = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        let lbl = |ns: &'_ str, f: &'_ str| -> Vec<(&'static str, String)> {
            vec![("namespace", ns.to_string()), ("function", f.to_string())]
        };
        let owned: Vec<_> = m
            .iter()
            .map(|((ns, f), fm)| (lbl(ns, f), fm.clone()))
            .collect();
        drop(m);
        fn borrow<'a>(l: &'a [(&'static str, String)]) -> metrics::Labels<'a> {
            l.iter().map(|(k, v)| (*k, v.as_str())).collect()
        }
        metrics::counter(
            e,
            "wisp_invocations",
            "Invocations by function and outcome.",
            owned.iter().flat_map(|(l, fm)| {
                Outcome::ALL.iter().enumerate().map(move |(i, o)| {
                    let mut labels = borrow(l);
                    labels.push(("outcome", o.as_str()));
                    (labels, fm.by_outcome[i].load(Relaxed))
                })
            }),
        )?;
        metrics::histogram(
            e,
            "wisp_invocation_duration_seconds",
            "Run time of invocations.",
            owned.iter().map(|(l, fm)| {
                (
                    borrow(l),
                    HistogramSample {
                        sum: fm.duration_sum_us.load(Relaxed) as f64 / 1e6,
                        count: fm.duration_count.load(Relaxed),
                        cumulative: BUCKETS
                            .iter()
                            .enumerate()
                            .map(|(i, b)| (*b, fm.buckets[i].load(Relaxed)))
                            .collect(),
                    },
                )
            }),
        )?;
        metrics::counter(
            e,
            "wisp_cold_starts",
            "Invocations that had to load their function first.",
            owned
                .iter()
                .map(|(l, fm)| (borrow(l), fm.cold_starts.load(Relaxed))),
        )?;
        metrics::gauge(
            e,
            "wisp_in_flight",
            "Invocations running now.",
            owned
                .iter()
                .map(|(l, fm)| (borrow(l), fm.in_flight.load(Relaxed))),
        )?;
        metrics::gauge(
            e,
            "wisp_functions_deployed",
            "Deployed functions.",
            [(Vec::new(), deployed as i64)],
        )?;
        metrics::gauge(
            e,
            "wisp_functions_loaded",
            "Functions held in memory, ready to run.",
            [(Vec::new(), loaded as i64)],
        )?;
        self.records_dropped.encode(
            e,
            "wisp_activation_records_dropped",
            "Activation records lost, by reason: the recorder fell behind (queue_full), the disk was full (no_space), another storage failure (write_failed).",
        )
    }
}

/// The durable queue's gauges and counters.
pub(crate) fn encode_queue(
    e: &mut DescriptorEncoder,
    depth: usize,
    c: &crate::events::QueueCounters,
    dropped: &Dropped,
) -> fmt::Result {
    dropped.encode(
        e,
        "wisp_queue_updates_dropped",
        "Queue acknowledgements, retries and dead letters that could not be stored (the delivery may run again), by reason.",
    )?;
    metrics::gauge(
        e,
        "wisp_queue_depth",
        "Deliveries waiting, delayed for a retry, or running.",
        [(Vec::new(), depth as i64)],
    )?;
    for (name, help, v) in [
        (
            "wisp_queue_accepted",
            "Deliveries stored in the durable queue.",
            &c.accepted,
        ),
        (
            "wisp_queue_succeeded",
            "Deliveries whose run succeeded.",
            &c.succeeded,
        ),
        (
            "wisp_queue_retries",
            "Failed attempts scheduled for another try.",
            &c.retried,
        ),
        (
            "wisp_queue_dead_letters",
            "Deliveries moved to the dead-letter queue.",
            &c.dead_lettered,
        ),
    ] {
        metrics::counter(e, name, help, [(Vec::new(), v.load(Relaxed))])?;
    }
    Ok(())
}
