//! The one way a function runs. Every caller — user routes and direct
//! URLs, the management API's invoke, the Lambda Invoke API, and the
//! durable queue for async invokes, triggers and destinations — first
//! gets a [`Ticket`] ([`Engine::admit`]: the function's, its namespace's
//! and the node's slots, and memory), then hands it with the request to
//! [`Engine::dispatch`], which loads the function when cold, runs it,
//! meters and records the run. [`Engine::invoke`] does both for callers
//! that do not hold tickets themselves.
//!
//! A ticket holds its slots until the run ends: the queue takes one per
//! delivery before it starts a task for it, so a backlog never turns into
//! a pile of waiting tasks.

use crate::admission::{Admission, Claim};
use crate::engine::{Collected, Engine, EngineError, Entry, InvokeResponse};
use crate::metering::Finished;
use crate::runner::Placed;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use wisp_core::activation::EventRef;
use wisp_core::time::now_ms;
use wisp_core::{ActivationId, FunctionName, FunctionRecord, Namespace, Source};

/// How long an admission may wait for its slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Up to the node's `--queue-wait`; then refused (`throttled`, 429 or
    /// 503), and the refusal recorded as an activation.
    Bounded,
    /// As long as it takes: a queued delivery waits in the queue, it is
    /// not refused.
    Unbounded,
}

/// An admitted run: the slots it holds until it ends, and where it came
/// from.
pub struct Ticket {
    entry: Arc<Entry>,
    admission: Admission,
    source: Source,
    start_ms: i64,
}

impl Ticket {
    /// The function version it will run.
    pub fn record(&self) -> &FunctionRecord {
        &self.entry.record
    }
}

/// What the caller wants back.
pub enum Answer {
    /// The response as the function streams it (with the
    /// `x-wisp-activation-id` header for clients, and the [`ActivationId`]
    /// as a response extension); recorded when the body ends.
    Stream,
    /// Up to `keep` bytes of the body, read on the calling task, with how
    /// the run ended and its logs (the Lambda Invoke API, queued
    /// deliveries, which note the `event` they serve).
    Collect {
        keep: usize,
        /// Hand back the run's (masked) logs too.
        logs: bool,
        event: Option<EventRef>,
    },
}

/// How a dispatched run answered.
pub enum Dispatched {
    Streamed(InvokeResponse),
    Collected(Collected),
}

impl Engine {
    /// Admits a run of `ns`/`name` from `source`.
    pub async fn admit(
        &self,
        ns: &Namespace,
        name: &FunctionName,
        source: Source,
        wait: Wait,
    ) -> Result<Ticket, EngineError> {
        let entry = self.entry(ns, name)?;
        let mut start_ms = now_ms();
        entry.last_used_ms.store(start_ms, Ordering::Relaxed);
        let admission = match wait {
            // A caller's wait is part of its invocation (and a refusal is
            // recorded at the time it was asked).
            Wait::Bounded => self.admit_bounded(&entry, &source, start_ms).await?,
            // A delivery's wait for slots is time in the queue: its run
            // starts when it has them.
            Wait::Unbounded => {
                let a = self
                    .admit_unbounded(&entry)
                    .await
                    .ok_or_else(|| EngineError::Internal("the node is shutting down".into()))?;
                start_ms = now_ms();
                a
            }
        };
        Ok(Ticket {
            entry,
            admission,
            source,
            start_ms,
        })
    }

    /// Runs an admitted request.
    pub async fn dispatch<B>(
        &self,
        ticket: Ticket,
        req: http::Request<B>,
        answer: Answer,
    ) -> Result<Dispatched, EngineError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let Ticket {
            entry,
            mut admission,
            source,
            start_ms,
        } = ticket;
        let (prepared, cold, load_time) = self.begin(&entry, &mut admission).await?;
        let timeout = Duration::from_millis(entry.record.spec.timeout_ms);
        let id = ActivationId::generate();
        match answer {
            Answer::Stream => {
                let header = http::HeaderValue::from_str(id.as_str())
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
                let id_for_caller = id.clone();
                let this = self.clone();
                let run_source = source.clone();
                let mut done = Finished {
                    id,
                    source,
                    start_ms,
                    cold,
                    load_time,
                    event: None,
                    keep_logs: false,
                };
                let mut resp = prepared
                    .start(req, timeout, &run_source, move |report, spawned| {
                        drop(admission);
                        done.cold |= spawned;
                        this.finish(&entry, done, report);
                    })
                    .await;
                resp.headers_mut().insert("x-wisp-activation-id", header);
                // Typed, for the gateway (the header is for clients).
                resp.extensions_mut().insert(id_for_caller);
                Ok(Dispatched::Streamed(resp))
            }
            Answer::Collect { keep, logs, event } => {
                let (report, body, spawned) =
                    prepared.run_collect(req, timeout, &source, keep).await;
                drop(admission);
                let version = entry.record.version;
                let done = Finished {
                    id: id.clone(),
                    source,
                    start_ms,
                    cold: cold || spawned,
                    load_time,
                    event,
                    keep_logs: logs,
                };
                let s = self.finish(&entry, done, report);
                Ok(Dispatched::Collected(Collected {
                    activation_id: id,
                    outcome: s.outcome,
                    status: s.status,
                    error: s.error,
                    logs: s.logs.unwrap_or_default(),
                    body,
                    version,
                }))
            }
        }
    }

    /// Admits (waiting up to `--queue-wait`) and dispatches.
    pub async fn invoke<B>(
        &self,
        ns: &Namespace,
        name: &FunctionName,
        source: Source,
        req: http::Request<B>,
        answer: Answer,
    ) -> Result<Dispatched, EngineError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let ticket = self.admit(ns, name, source, Wait::Bounded).await?;
        self.dispatch(ticket, req, answer).await
    }

    /// Places the run (loading the function when cold) and counts it as
    /// started.
    async fn begin(
        &self,
        entry: &Entry,
        permit: &mut Admission,
    ) -> Result<(Placed, bool, Duration), EngineError> {
        let load_started = Instant::now();
        let (placed, cold) = match permit.claim.take() {
            Some(Claim::Warm(w)) => (Placed::Warm(w), false),
            Some(Claim::Fresh(lease)) => {
                let (runner, cold) = self.prepared(entry).await?;
                (Placed::Fresh(runner, lease), cold)
            }
            None => {
                return Err(EngineError::Internal("an admission was used twice".into()));
            }
        };
        let load_time = if cold {
            load_started.elapsed()
        } else {
            Duration::ZERO
        };
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        entry.running.fetch_add(1, Ordering::AcqRel);
        entry.metrics.started();
        Ok((placed, cold, load_time))
    }
}

impl Dispatched {
    /// The streamed response (of [`Answer::Stream`]).
    pub fn into_response(self) -> Result<InvokeResponse, EngineError> {
        match self {
            Dispatched::Streamed(r) => Ok(r),
            Dispatched::Collected(_) => Err(EngineError::Internal(
                "a collected run was asked for its stream".into(),
            )),
        }
    }

    /// The collected answer (of [`Answer::Collect`]).
    pub fn into_collected(self) -> Result<Collected, EngineError> {
        match self {
            Dispatched::Collected(c) => Ok(c),
            Dispatched::Streamed(_) => Err(EngineError::Internal(
                "a streamed run was asked for its collected body".into(),
            )),
        }
    }
}
