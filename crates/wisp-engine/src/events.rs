//! Events: async invocations, topics with fan-out, cron triggers, retries
//! with backoff, the dead-letter queue and on-success/on-failure
//! destinations — all through the durable queue.
//!
//! A delivery is stored (group commit, see `queue.rs`) before its sender is
//! answered, then kept in memory until it is done: a queue per function
//! (FIFO), a pump task per non-empty queue that waits for one of the
//! function's concurrency slots and starts the run, and a timer for
//! deliveries waiting out a retry delay. A slow function only holds back its
//! own queue. The delivery is removed from the store only after its run
//! finished; after a crash the node loads what is left and runs it again
//! (at-least-once).

use crate::dispatch::{Answer, Dispatched, Ticket, Wait};
use crate::engine::{Engine, EngineError, Key, RunSummary, blocking};
use crate::event_api::{Accepted, DeliveryRef};
use crate::queue::Writer;
use http_body_util::BodyExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use wisp_core::activation::EventRef;
use wisp_core::event::{CloudEvent, Delivery, Origin, Trigger, types};
use wisp_core::time::now_ms;
use wisp_core::{
    DeliveryId, Destination, EventStore, FunctionName, IdempotencyKey, Namespace, Outcome, QueueOp,
    QueueOpResult, Source, TopicName, TriggerName,
};

/// Limits of the durable queue.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Deliveries waiting or running at once; beyond it publishing answers
    /// 429 `queue_full`.
    pub max_events: usize,
    /// Bytes of event data held at once (the queue keeps waiting events in
    /// memory too); beyond it publishing answers 429 `queue_full`.
    pub max_bytes: usize,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_window: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_events: 100_000,
            max_bytes: 256 * 1024 * 1024,
            idempotency_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// Response bytes kept for an on-success destination.
const RESULT_KEEP: usize = 256 * 1024;

#[derive(Default)]
struct FnQueue {
    ready: VecDeque<Delivery>,
    pumping: bool,
}

#[derive(Default)]
struct Sched {
    queues: HashMap<Key, FnQueue>,
    /// Waiting out a retry delay, by (due time, id).
    delayed: BTreeMap<(i64, DeliveryId), Delivery>,
    /// Deliveries held (ready, delayed or running) and their bytes.
    count: usize,
    bytes: usize,
}

pub(crate) type TopicKey = (Namespace, TopicName);
pub(crate) type TriggerKey = (Namespace, TriggerName);
/// A trigger and, for cron triggers, the task that fires it.
pub(crate) type RunningTrigger = (Trigger, Option<tokio::task::AbortHandle>);

#[derive(Default)]
pub(crate) struct QueueCounters {
    pub accepted: AtomicU64,
    pub succeeded: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
}

pub(crate) struct Events {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) writer: Writer,
    settings: QueueSettings,
    sched: Mutex<Sched>,
    /// Wakes the retry timer when an earlier due time is added.
    timer: Notify,
    pub(crate) stopping: AtomicBool,
    pub(crate) topics: RwLock<HashSet<TopicKey>>,
    /// Subscribers of each topic: (trigger, function).
    pub(crate) subs: RwLock<HashMap<TopicKey, Vec<(TriggerName, FunctionName)>>>,
    /// Every trigger, with its task for cron triggers.
    pub(crate) triggers: Mutex<BTreeMap<TriggerKey, RunningTrigger>>,
    pub(crate) counters: QueueCounters,
}

impl Events {
    pub fn new(store: Arc<dyn EventStore>, settings: QueueSettings) -> std::io::Result<Self> {
        Ok(Self {
            writer: Writer::start(store.clone())?,
            store,
            settings,
            sched: Mutex::default(),
            timer: Notify::new(),
            stopping: AtomicBool::new(false),
            topics: RwLock::default(),
            subs: RwLock::default(),
            triggers: Mutex::default(),
            counters: QueueCounters::default(),
        })
    }

    fn sched(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deliveries held now (for `/metrics`).
    pub fn depth(&self) -> usize {
        self.sched().count
    }

    /// Takes room for deliveries, or says why there is none.
    pub(crate) fn reserve(&self, n: usize, bytes: usize) -> Result<(), EngineError> {
        let mut s = self.sched();
        if s.count + n > self.settings.max_events {
            return Err(EngineError::QueueFull(format!(
                "{} events waiting, limit {}",
                s.count, self.settings.max_events
            )));
        }
        if s.bytes + bytes > self.settings.max_bytes {
            return Err(EngineError::QueueFull(format!(
                "{} bytes waiting, limit {}",
                s.bytes, self.settings.max_bytes
            )));
        }
        s.count += n;
        s.bytes += bytes;
        Ok(())
    }

    /// Counts deliveries that are held whatever the bounds (resumed after
    /// a restart, replayed, cron ticks, destinations).
    pub(crate) fn hold(&self, n: usize, bytes: usize) {
        let mut s = self.sched();
        s.count += n;
        s.bytes += bytes;
    }

    pub(crate) fn release(&self, n: usize, bytes: usize) {
        let mut s = self.sched();
        s.count = s.count.saturating_sub(n);
        s.bytes = s.bytes.saturating_sub(bytes);
    }
}

/// A trigger as listed, with its next firing for cron triggers.
#[derive(Debug, Clone, Serialize)]
pub struct TriggerView {
    #[serde(flatten)]
    pub trigger: Trigger,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_fire: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicView {
    pub name: TopicName,
    pub subscribers: Vec<FunctionName>,
}

fn retry_delay_ms(backoff_ms: u64, attempt: u32) -> i64 {
    let base = backoff_ms.saturating_mul(1u64 << (attempt.saturating_sub(1)).min(20));
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    (base as f64 * jitter) as i64
}

impl Engine {
    pub(crate) fn events(&self) -> &Events {
        &self.inner.events
    }

    /// Loads topics, triggers and waiting deliveries; starts the retry
    /// timer and the cron tasks.
    pub(crate) async fn start_events(&self) -> Result<(), EngineError> {
        let store = self.events().store.clone();
        let (topics, triggers, pending) = blocking(move || {
            Ok::<_, EngineError>((
                store.list_topics()?,
                store.list_triggers()?,
                store.pending()?,
            ))
        })
        .await??;
        self.events()
            .topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(topics);
        for t in triggers {
            self.activate_trigger(t);
        }
        if !pending.is_empty() {
            tracing::info!(
                deliveries = pending.len(),
                "resuming deliveries left in the queue"
            );
        }
        self.hold_and_schedule(pending);
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                let notified = engine.events().timer.notified();
                let wait = engine.release_due();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = notified => {}
                }
            }
        });
        Ok(())
    }

    /// Stops cron tasks and queue pumps from starting new runs.
    pub(crate) fn stop_events(&self) {
        self.events().stopping.store(true, Ordering::Release);
        let triggers = self
            .events()
            .triggers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (_, task) in triggers.values() {
            if let Some(t) = task {
                t.abort();
            }
        }
    }

    /// Moves due delayed deliveries to their queues; returns how long to
    /// sleep until the next one is due.
    fn release_due(&self) -> Duration {
        let now = now_ms();
        let mut due = Vec::new();
        let next = {
            let mut s = self.events().sched();
            while let Some(entry) = s.delayed.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            s.delayed.keys().next().map(|k| k.0)
        };
        for d in due {
            self.push_ready(d);
        }
        match next {
            Some(t) => Duration::from_millis((t - now).max(1) as u64),
            None => Duration::from_secs(3600),
        }
    }

    /// Takes in deliveries that are stored already (resumed after a
    /// restart, replayed, cron ticks): counted whatever the queue's bounds,
    /// then scheduled.
    pub(crate) fn hold_and_schedule(&self, ds: Vec<Delivery>) {
        self.events()
            .hold(ds.len(), ds.iter().map(Delivery::size).sum());
        for d in ds {
            self.schedule(d);
        }
    }

    /// Hands a stored delivery to its function's queue (now or when due).
    pub(crate) fn schedule(&self, d: Delivery) {
        if d.available_ms > now_ms() {
            let mut s = self.events().sched();
            let earliest = s.delayed.keys().next().map(|k| k.0);
            let due = d.available_ms;
            s.delayed.insert((due, d.id.clone()), d);
            drop(s);
            if earliest.is_none_or(|e| due < e) {
                self.events().timer.notify_one();
            }
        } else {
            self.push_ready(d);
        }
    }

    fn push_ready(&self, d: Delivery) {
        let key = (d.namespace.clone(), d.function.clone());
        let start_pump = {
            let mut s = self.events().sched();
            let q = s.queues.entry(key.clone()).or_default();
            q.ready.push_back(d);
            !std::mem::replace(&mut q.pumping, true)
        };
        if start_pump {
            let engine = self.clone();
            tokio::spawn(async move { engine.pump(key).await });
        }
    }

    /// Runs one function's queue: takes the next delivery, waits for a
    /// concurrency slot, starts it, repeats until the queue is empty.
    async fn pump(self, key: Key) {
        loop {
            if self.events().stopping.load(Ordering::Acquire) {
                return;
            }
            let next = {
                let mut s = self.events().sched();
                let q = s.queues.entry(key.clone()).or_default();
                match q.ready.pop_front() {
                    Some(d) => Some(d),
                    None => {
                        s.queues.remove(&key);
                        None
                    }
                }
            };
            let Some(d) = next else { return };
            // The function's, the namespace's and the node's slots: a
            // delivery waits in the queue for them, it is not refused.
            let source = Source::from(d.origin);
            let ticket = match self.admit(&key.0, &key.1, source, Wait::Unbounded).await {
                Ok(t) => t,
                Err(e @ EngineError::FunctionNotFound { .. }) => {
                    let attempts = d.attempts;
                    self.dead_letter(d, attempts, e.to_string());
                    continue;
                }
                Err(_) => return,
            };
            if self.events().stopping.load(Ordering::Acquire) {
                // Shutting down: leave it stored; it runs after the
                // restart.
                return;
            }
            let engine = self.clone();
            tokio::spawn(async move { engine.run_delivery(ticket, d).await });
        }
    }

    /// One attempt of a delivery, then ack, retry or dead-letter.
    async fn run_delivery(self, ticket: Ticket, mut d: Delivery) {
        let max_age = ticket.record().spec.max_event_age_ms;
        if now_ms() - d.created_ms > max_age as i64 {
            // Waited in the queue past its age (a long backlog): not run,
            // as Lambda discards events older than the maximum age.
            drop(ticket);
            let attempts = d.attempts;
            let why = format!(
                "not run: the event waited longer than max_event_age ({} s) in the queue",
                max_age / 1000
            );
            self.dead_letter(d, attempts, why);
            return;
        }
        let attempt = d.attempts + 1;
        let mut req = http::Request::builder()
            .method(http::Method::POST)
            .uri("/")
            .header(http::header::HOST, "localhost");
        for (k, v) in d.event.binary_headers() {
            req = req.header(k, v);
        }
        req = req
            .header("ce-wispattempt", attempt.to_string())
            .header("ce-wispdelivery", d.id.as_str());
        let body = http_body_util::Full::new(d.event.data.clone()).map_err(
            |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
        );
        let req = match req.body(body) {
            Ok(mut r) => {
                // Events carry only `ce-*` attributes; no `x-wisp-*` header
                // reaches a function from one, as on every path into it.
                wisp_core::headers::strip_wisp_headers(r.headers_mut());
                r
            }
            Err(e) => {
                // Stored attributes that are not valid header values: no
                // retry can fix that.
                let attempts = d.attempts;
                self.dead_letter(d, attempts, format!("cannot build the event request: {e}"));
                return;
            }
        };
        let event = EventRef {
            delivery_id: d.id.clone(),
            event_id: d.event.id.clone(),
            attempt,
        };
        let spec = ticket.record().spec.clone();
        let answer = Answer::Collect {
            keep: RESULT_KEEP,
            logs: false,
            event: Some(event),
        };
        let ran = self
            .dispatch(ticket, req, answer)
            .await
            .and_then(Dispatched::into_collected);
        let (summary, body) = match ran {
            Ok(c) => (
                RunSummary {
                    outcome: c.outcome,
                    status: c.status,
                    error: c.error,
                    logs: None,
                },
                c.body,
            ),
            Err(e) => (
                RunSummary {
                    outcome: Outcome::Error,
                    status: 500,
                    error: Some(e.to_string()),
                    logs: None,
                },
                Vec::new(),
            ),
        };
        d.attempts = attempt;
        if summary.outcome == Outcome::Success {
            let c = &self.events().counters;
            c.succeeded.fetch_add(1, Ordering::Relaxed);
            self.events().writer.send(QueueOp::Ack(d.id.clone()));
            self.events().release(1, d.size());
            if let Some(dest) = &spec.on_success {
                self.send_to_destination(dest, &d, true, summary.status, &body, None)
                    .await;
            }
            return;
        }
        let error = summary
            .error
            .unwrap_or_else(|| format!("{} (HTTP {})", summary.outcome, summary.status));
        let age = now_ms() - d.created_ms;
        if attempt >= spec.max_attempts || age >= spec.max_event_age_ms as i64 {
            let why = if attempt >= spec.max_attempts {
                error
            } else {
                format!(
                    "{error}; not retried: the event is older than max_event_age ({} s)",
                    spec.max_event_age_ms / 1000
                )
            };
            if let Some(dest) = &spec.on_failure {
                self.send_to_destination(dest, &d, false, summary.status, &body, Some(&why))
                    .await;
            }
            self.dead_letter(d, attempt, why);
            return;
        }
        self.events()
            .counters
            .retried
            .fetch_add(1, Ordering::Relaxed);
        d.available_ms = now_ms() + retry_delay_ms(spec.backoff_ms, attempt);
        d.last_error = Some(error.clone());
        self.events().writer.send(QueueOp::Retry {
            id: d.id.clone(),
            attempts: attempt,
            available_ms: d.available_ms,
            error,
        });
        self.schedule(d);
    }

    fn dead_letter(&self, d: Delivery, attempts: u32, error: String) {
        tracing::info!(delivery = %d.id, function = %d.function, attempts, error = %error, "moved to the dead-letter queue");
        self.events()
            .counters
            .dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        self.events().writer.send(QueueOp::DeadLetter {
            id: d.id.clone(),
            attempts,
            error,
            failed_ms: now_ms(),
        });
        self.events().release(1, d.size());
    }

    /// Sends the result of an async invocation to its destination, as a
    /// new event (Lambda destinations' shape, CloudEvents envelope).
    async fn send_to_destination(
        &self,
        dest: &Destination,
        d: &Delivery,
        success: bool,
        status: u16,
        body: &[u8],
        error: Option<&str>,
    ) {
        let mut ev = CloudEvent::new(
            DeliveryId::generate().to_string(),
            format!("/wisp/{}/functions/{}", d.namespace, d.function),
            if success {
                types::SUCCESS
            } else {
                types::FAILURE
            },
        );
        ev.time = Some(wisp_core::event::rfc3339_ms(now_ms()));
        ev.subject = Some(d.event.id.clone());
        ev.datacontenttype = Some("application/json".into());
        ev.data = serde_json::json!({
            "function": d.function,
            "delivery_id": d.id,
            "event_id": d.event.id,
            "event_type": d.event.ty,
            "attempts": d.attempts,
            "condition": if success { "success" } else { "retries_exhausted" },
            "status": status,
            "error": error,
            "response": String::from_utf8_lossy(body),
        })
        .to_string()
        .into_bytes()
        .into();
        let result = match dest {
            Destination::Function(f) => {
                self.enqueue_to_functions(
                    &d.namespace,
                    vec![(f.clone(), None)],
                    ev,
                    Origin::Destination,
                    None,
                    true,
                )
                .await
            }
            Destination::Topic(t) => self.publish_inner(&d.namespace, t, ev, None, true).await,
        };
        if let Err(e) = result {
            tracing::warn!(delivery = %d.id, destination = %dest, error = %e, "sending to the destination failed");
        }
    }

    /// Stores deliveries of `ev` to `targets` durably, then schedules them.
    pub(crate) async fn enqueue_to_functions(
        &self,
        ns: &Namespace,
        targets: Vec<(FunctionName, Option<String>)>,
        ev: CloudEvent,
        origin: Origin,
        idempotency: Option<IdempotencyKey>,
        force: bool,
    ) -> Result<Accepted, EngineError> {
        let deliveries: Vec<Delivery> = targets
            .into_iter()
            .map(|(function, via)| Delivery::new(ns.clone(), function, origin, via, ev.clone()))
            .collect();
        let n = deliveries.len();
        let bytes: usize = deliveries.iter().map(Delivery::size).sum();
        if force {
            self.events().hold(n, bytes);
        } else {
            self.events().reserve(n, bytes)?;
        }
        let refs: Vec<DeliveryRef> = deliveries
            .iter()
            .map(|d| DeliveryRef {
                id: d.id.clone(),
                function: d.function.clone(),
            })
            .collect();
        let op = QueueOp::Enqueue {
            deliveries: deliveries.clone(),
            idempotency,
        };
        // Commit and schedule in a task of its own: if the caller goes away
        // (the client disconnected), a committed delivery is still
        // scheduled, and its room in the queue still accounted for.
        let engine = self.clone();
        let event_id = ev.id;
        tokio::spawn(async move {
            let result = engine.events().writer.submit(vec![op]).await;
            let result = match result {
                Ok(mut r) => r.pop().unwrap_or(Ok(QueueOpResult::Enqueued)),
                Err(e) => {
                    engine.events().release(n, bytes);
                    return Err(if e.is_full() {
                        EngineError::Store(e)
                    } else {
                        EngineError::Queue(e.to_string())
                    });
                }
            };
            match result {
                Ok(QueueOpResult::Duplicate {
                    event_id,
                    deliveries: ids,
                }) => {
                    engine.events().release(n, bytes);
                    Ok(Accepted {
                        event_id,
                        deliveries: ids
                            .into_iter()
                            .map(|(id, function)| DeliveryRef { id, function })
                            .collect(),
                        duplicate: true,
                    })
                }
                Ok(_) => {
                    engine
                        .events()
                        .counters
                        .accepted
                        .fetch_add(n as u64, Ordering::Relaxed);
                    for d in deliveries {
                        engine.schedule(d);
                    }
                    Ok(Accepted {
                        event_id,
                        deliveries: refs,
                        duplicate: false,
                    })
                }
                Err(e) => {
                    engine.events().release(n, bytes);
                    Err(EngineError::Queue(e.to_string()))
                }
            }
        })
        .await
        .map_err(|e| EngineError::Internal(format!("the enqueue task failed: {e}")))?
    }

    pub(crate) fn idempotency(
        &self,
        ns: &Namespace,
        scope: String,
        key: Option<String>,
    ) -> Option<IdempotencyKey> {
        key.map(|key| IdempotencyKey {
            namespace: ns.clone(),
            scope,
            key,
            expires_ms: now_ms() + self.events().settings.idempotency_window.as_millis() as i64,
        })
    }

    pub(crate) fn queue_metrics(&self) -> (usize, &QueueCounters) {
        (self.events().depth(), &self.events().counters)
    }
}
