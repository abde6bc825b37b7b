//! Running one request: a fresh instance from the cached `InstancePre`, the
//! `wasi:http/incoming-handler` call under a deadline, and the report of how
//! it ended.

use crate::host::{Host, MemoryLimiter, OutboundPolicy};
use crate::logs::LogCapture;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};
use wisp_core::capacity::{Lease, Seat};
use wisp_core::{FunctionSpec, Outcome};

/// The body of a response produced by a function.
pub type ResponseBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

pub use wisp_core::activation::RunReport;

/// A response body that fails instead of ending cleanly when the run that
/// streams it was cut off (deadline, trap, memory limit): the connection
/// is aborted, so the client sees an incomplete response, not a short one.
struct CutOff {
    inner: ResponseBody,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for CutOff {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            std::task::Poll::Ready(None) if self.cut.load(Ordering::Acquire) => {
                std::task::Poll::Ready(Some(Err(wasmtime_wasi_http::Error::InternalError(Some(
                    "the function was stopped before it finished its response".into(),
                )))))
            }
            p => p,
        }
    }
    fn is_end_stream(&self) -> bool {
        // Never claim the end early: only a polled end may be checked.
        false
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A function ready to run: a linked component and its spec.
/// One store with its instance, kept between requests when the function
/// opted into instance reuse.
struct Instance {
    store: Store<Host>,
    proxy: Option<Proxy>,
    logs: LogCapture,
    uses: u32,
    /// Its share of the node (memory, instance slots), for as long as it
    /// lives.
    lease: Option<Lease>,
    /// When it last went idle.
    idle_since: Instant,
}

/// An idle instance taken for a run (see [`Prepared::take_warm`]).
pub struct Warm(Box<Instance>);

impl std::fmt::Debug for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Warm")
    }
}

pub struct Prepared {
    engine: Engine,
    ticker: Arc<crate::engine::Ticker>,
    /// Idle instances for reuse (only with `instance_reuse` > 1), oldest
    /// first.
    idle: Mutex<std::collections::VecDeque<Instance>>,
    /// Keeps the shared component alive while this function is loaded.
    _component: Arc<Component>,
    pre: ProxyPre<Host>,
    spec: Arc<FunctionSpec>,
    env: Vec<(String, String)>,
    log_cap: usize,
    /// CPU time after which a run moves to the low-priority runtime.
    demote_after: Duration,
    kv: crate::kv::KvCtx,
    objects: Option<(crate::host::ObjectsEndpoint, crate::host::FunctionCaller)>,
}

type Responder = Arc<Mutex<Option<oneshot::Sender<http::Response<ResponseBody>>>>>;

/// Where a run sends its response head, and the status it sent. Only the
/// run holds the sender: if it ends without answering, the receiver sees
/// the channel closed instead of waiting for ever.
fn response_channel() -> (
    Responder,
    Arc<AtomicU16>,
    oneshot::Receiver<http::Response<ResponseBody>>,
) {
    let (tx, rx) = oneshot::channel();
    (
        Arc::new(Mutex::new(Some(tx))),
        Arc::new(AtomicU16::new(0)),
        rx,
    )
}

/// An answer for a function that gave none, marked [`HostAnswered`] so the
/// engine can replace its text for callers.
fn plain(status: u16, outcome: Outcome, msg: String) -> http::Response<ResponseBody> {
    let mut r = http::Response::new(
        Full::new(Bytes::from(msg))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.extensions_mut().insert(wisp_core::HostAnswered(outcome));
    r
}

impl Prepared {
    pub(crate) fn new(
        (engine, ticker): (Engine, Arc<crate::engine::Ticker>),
        component: Arc<Component>,
        pre: ProxyPre<Host>,
        spec: FunctionSpec,
        (log_cap, demote_after): (usize, Duration),
        kv: crate::kv::KvCtx,
        objects: Option<(crate::host::ObjectsEndpoint, crate::host::FunctionCaller)>,
    ) -> Self {
        let env = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Self {
            engine,
            ticker,
            idle: Mutex::new(std::collections::VecDeque::new()),
            _component: component,
            pre,
            spec: Arc::new(spec),
            env,
            log_cap,
            demote_after,
            kv,
            objects,
        }
    }

    /// Runs `req` on a new task, in a fresh instance (or a reused one when
    /// the function opted in). Returns the response as
    /// soon as the function sends its head (the body streams on), or an
    /// error response if it fails first. `on_done` gets the report once the
    /// handler has finished, after the response.
    pub async fn start<B>(
        self: &Arc<Self>,
        req: http::Request<B>,
        timeout: Duration,
        seat: Seat<Warm>,
        on_done: impl FnOnce(RunReport) + Send + 'static,
    ) -> http::Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let (responder, status, rx) = response_channel();
        let this = self.clone();
        crate::demote::spawn(
            async move {
                let report = this.run(req, timeout, seat, responder, status).await;
                on_done(report);
            },
            self.demote_after,
        );
        match rx.await {
            Ok(resp) => resp,
            // The task ended without responding and without a report
            // (it panicked): answer for it.
            Err(_) => plain(
                500,
                Outcome::Error,
                "function failed without a response\n".into(),
            ),
        }
    }

    /// Runs `req` on the calling task and keeps up to `keep` bytes of the
    /// response body (the rest is read and dropped). For callers that do
    /// not stream the response anywhere (queue workers): no extra task.
    pub async fn run_collect<B>(
        self: &Arc<Self>,
        req: http::Request<B>,
        timeout: Duration,
        seat: Seat<Warm>,
        keep: usize,
    ) -> (RunReport, Vec<u8>)
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        use http_body_util::BodyExt;
        let (responder, status, rx) = response_channel();
        let this = self.clone();
        let run = crate::demote::run(
            async move { this.run(req, timeout, seat, responder, status).await },
            self.demote_after,
        );
        let run = async move {
            run.await.unwrap_or_else(|| RunReport {
                outcome: Outcome::Error,
                status: 500,
                run_time: Duration::ZERO,
                logs: String::new(),
                logs_truncated: false,
                error: Some("the function's run panicked (a bug in Wisp)".into()),
            })
        };
        let read = async move {
            let mut kept = Vec::new();
            if let Ok(resp) = rx.await {
                let mut body = resp.into_body();
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else { break };
                    if let Ok(data) = frame.into_data()
                        && kept.len() < keep
                    {
                        let room = keep - kept.len();
                        kept.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
            }
            kept
        };
        tokio::join!(run, read)
    }

    /// A new store (and, once instantiated, instance) for this function.
    fn new_instance(&self) -> Instance {
        let logs = LogCapture::new(self.log_cap);
        let mut wasi = WasiCtx::builder();
        wasi.envs(&self.env)
            .stdout(logs.clone())
            .stderr(logs.clone());
        let host = Host {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outbound: OutboundPolicy {
                spec: self.spec.clone(),
                logs: logs.clone(),
                objects: self.objects.clone(),
            },
            limiter: MemoryLimiter {
                limit_bytes: (self.spec.memory_mb as usize) << 20,
                used_bytes: 0,
                hit: false,
            },
            deadline: Instant::now(),
            kv: self.kv.clone(),
        };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|h| &mut h.limiter);
        store.epoch_deadline_callback(|cx| {
            if Instant::now() >= cx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Instance {
            store,
            proxy: None,
            logs,
            uses: 0,
            lease: None,
            idle_since: Instant::now(),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Instance>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle instance, if one is kept (only with
    /// instance reuse).
    pub fn take_warm(&self) -> Option<Warm> {
        self.idle().pop_back().map(|i| Warm(Box::new(i)))
    }

    /// When the least recently used idle instance went idle.
    pub fn oldest_idle(&self) -> Option<Instant> {
        self.idle().front().map(|i| i.idle_since)
    }

    /// Idle instances kept now.
    pub fn idle_instances(&self) -> usize {
        self.idle().len()
    }

    /// Drops the least recently used idle instance (and its lease); false
    /// when none is kept.
    pub fn evict_oldest_idle(&self) -> bool {
        let evicted = self.idle().pop_front();
        evicted.is_some()
    }

    /// The instance a run gets: the warm one it was given, or a new one
    /// holding the run's lease.
    fn instance(&self, seat: Seat<Warm>) -> Instance {
        match seat {
            Seat::Warm(Warm(i)) => *i,
            Seat::Fresh(lease) => {
                let mut i = self.new_instance();
                i.lease = Some(lease);
                i
            }
        }
    }

    /// Keeps an instance that handled a request cleanly for the next one,
    /// while it has uses left and the pool has room.
    fn recycle(&self, mut inst: Instance, proxy: Proxy) {
        inst.uses += 1;
        if inst.uses >= self.spec.instance_reuse {
            return;
        }
        inst.proxy = Some(proxy);
        inst.idle_since = Instant::now();
        let mut idle = self.idle();
        if idle.len() < self.spec.concurrency as usize {
            idle.push_back(inst);
        }
    }

    async fn run<B>(
        &self,
        req: http::Request<B>,
        timeout: Duration,
        seat: Seat<Warm>,
        responder: Responder,
        status: Arc<AtomicU16>,
    ) -> RunReport
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let started = Instant::now();
        let _ticking = self.ticker.enter();
        let mut inst = self.instance(seat);
        inst.store.data_mut().deadline = started + timeout;
        inst.store.data_mut().limiter.hit = false;
        inst.store.set_epoch_deadline(1);
        let proxy = inst.proxy.take();
        let store = &mut inst.store;

        let send_responder = responder.clone();
        let send_status = status.clone();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let send_cut = cut.clone();
        let call = async {
            let proxy = match proxy {
                Some(p) => p,
                None => self.pre.instantiate_async(&mut *store).await?,
            };
            let req = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, req)?;
            let out = store
                .data_mut()
                .http()
                .new_response_outparam_from_callback(move |result| {
                    let resp = match result {
                        Ok(resp) => resp,
                        Err(code) => plain(
                            500,
                            Outcome::Error,
                            format!("function answered with an error: {code:?}\n"),
                        ),
                    };
                    send_status.store(resp.status().as_u16(), Ordering::Relaxed);
                    let resp = resp.map(|body| {
                        CutOff {
                            inner: body,
                            cut: send_cut,
                        }
                        .boxed_unsync()
                    });
                    if let Some(tx) = send_responder
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take()
                    {
                        let _ = tx.send(resp);
                    }
                })?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut *store, req, out)
                .await?;
            Ok::<_, wasmtime::Error>(proxy)
        };
        let result = tokio::time::timeout(timeout, call).await;
        let run_time = started.elapsed();
        let hit_memory = inst.store.data().limiter.hit;
        // Take the logs before the instance may serve someone else.
        let (logs, logs_truncated) = inst.logs.take();
        let timed_out = || {
            (
                Outcome::Timeout,
                Some(format!("timed out after {} ms", timeout.as_millis())),
            )
        };
        let (outcome, error) = match result {
            Ok(Ok(proxy)) => {
                if self.spec.instance_reuse > 1 {
                    self.recycle(inst, proxy);
                }
                (Outcome::Success, None)
            }
            Err(_elapsed) => timed_out(),
            Ok(Err(e)) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => timed_out(),
            Ok(Err(e)) if hit_memory => (
                Outcome::MemoryLimit,
                Some(format!(
                    "memory limit of {} MiB exceeded: {e:#}",
                    self.spec.memory_mb
                )),
            ),
            Ok(Err(e)) => (Outcome::Error, Some(format!("{e:#}"))),
        };
        // Before the instance (and the body's sender in it) is dropped: a
        // body it was still streaming ends in an error, not a clean end.
        if outcome != Outcome::Success {
            cut.store(true, Ordering::Release);
        }
        // Answer for a function that did not answer itself.
        let unanswered = responder.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = unanswered {
            let (code, msg) = match outcome {
                Outcome::Timeout => (
                    504,
                    format!("function timed out after {} ms\n", timeout.as_millis()),
                ),
                Outcome::MemoryLimit => (
                    500,
                    format!(
                        "function exceeded its memory limit of {} MiB\n",
                        self.spec.memory_mb
                    ),
                ),
                Outcome::Success => (
                    500,
                    "function returned without sending a response\n".to_string(),
                ),
                _ => (
                    500,
                    format!(
                        "function failed: {}\n",
                        error.as_deref().unwrap_or("unknown error")
                    ),
                ),
            };
            status.store(code, Ordering::Relaxed);
            // Returning without a response ends as an error (500) below.
            let shown = match outcome {
                Outcome::Success => Outcome::Error,
                o => o,
            };
            let _ = tx.send(plain(code, shown, msg));
        }
        let status = status.load(Ordering::Relaxed);
        let outcome = match outcome {
            Outcome::Success if status >= 500 => Outcome::Error,
            o => o,
        };
        RunReport {
            outcome,
            status,
            run_time,
            logs,
            logs_truncated,
            error,
        }
    }
}
