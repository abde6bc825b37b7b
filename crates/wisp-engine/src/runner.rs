//! One way to run a loaded function, whatever executes it: a linked Wasm
//! component or a pool of Lambda-Runtime-API processes.

use bytes::Bytes;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use wisp_core::Source;
use wisp_core::activation::RunReport;
use wisp_core::capacity::{Lease, Seat};
use wisp_exec_process::ProcessPool;
use wisp_exec_wasm::{Prepared, ResponseBody};

#[derive(Clone)]
pub(crate) enum Runner {
    Wasm(Arc<Prepared>),
    Process(Arc<ProcessPool>),
}

/// A warm instance taken for a run, with the function it belongs to.
pub(crate) enum WarmRun {
    Wasm(Arc<Prepared>, wisp_exec_wasm::Warm),
    Process(Arc<ProcessPool>, wisp_exec_process::Warm),
}

/// A run placed: a function and where it runs in it.
pub(crate) enum Placed {
    Fresh(Runner, Lease),
    Warm(WarmRun),
}

/// Reads a request body whole (process functions get it as one event).
async fn whole<B>(req: http::Request<B>) -> Result<http::Request<Bytes>, String>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| format!("reading the request body: {}", e.into()))?
        .to_bytes();
    Ok(http::Request::from_parts(parts, bytes))
}

fn body(b: Bytes) -> ResponseBody {
    http_body_util::Full::new(b)
        .map_err(|never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} })
        .boxed_unsync()
}

fn refused(why: String) -> (RunReport, http::Response<Bytes>) {
    let mut r = http::Response::new(Bytes::from(why.clone()));
    *r.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
    (
        RunReport {
            outcome: wisp_core::Outcome::Error,
            status: 413,
            run_time: Duration::ZERO,
            logs: String::new(),
            logs_truncated: false,
            error: Some(why),
        },
        r,
    )
}

impl Runner {
    pub(crate) fn is_process(&self) -> bool {
        matches!(self, Runner::Process(_))
    }

    /// The most recently used idle instance, if one is kept warm.
    pub(crate) fn take_warm(&self) -> Option<WarmRun> {
        match self {
            Runner::Wasm(p) => p.take_warm().map(|w| WarmRun::Wasm(p.clone(), w)),
            Runner::Process(p) => p.take_warm().map(|w| WarmRun::Process(p.clone(), w)),
        }
    }

    /// When its least recently used idle instance went idle.
    pub(crate) fn oldest_idle(&self) -> Option<std::time::Instant> {
        match self {
            Runner::Wasm(p) => p.oldest_idle(),
            Runner::Process(p) => p.oldest_idle(),
        }
    }

    /// Drops its least recently used idle instance.
    pub(crate) fn evict_oldest_idle(&self) -> bool {
        match self {
            Runner::Wasm(p) => p.evict_oldest_idle(),
            Runner::Process(p) => p.evict_oldest_idle(),
        }
    }
}

/// Where a process function's run takes place.
enum ProcessSeat {
    Pool(Arc<ProcessPool>, Seat<wisp_exec_process::Warm>),
}

impl Placed {
    fn wasm_or_process(self) -> Result<(Arc<Prepared>, Seat<wisp_exec_wasm::Warm>), ProcessSeat> {
        match self {
            Placed::Fresh(Runner::Wasm(p), l) => Ok((p, Seat::Fresh(l))),
            Placed::Warm(WarmRun::Wasm(p, w)) => Ok((p, Seat::Warm(w))),
            Placed::Fresh(Runner::Process(p), l) => Err(ProcessSeat::Pool(p, Seat::Fresh(l))),
            Placed::Warm(WarmRun::Process(p, w)) => Err(ProcessSeat::Pool(p, Seat::Warm(w))),
        }
    }

    /// Runs a request and returns its response (streamed for Wasm);
    /// `on_done` gets the report and whether a new process was started.
    pub(crate) async fn start<B>(
        self,
        req: http::Request<B>,
        timeout: Duration,
        source: &Source,
        on_done: impl FnOnce(RunReport, bool) + Send + 'static,
    ) -> http::Response<ResponseBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        match self.wasm_or_process() {
            Ok((p, seat)) => {
                p.start(req, timeout, seat, move |r| on_done(r, false))
                    .await
            }
            Err(ProcessSeat::Pool(pool, seat)) => {
                let (report, resp, cold) = match whole(req).await {
                    Ok(req) => {
                        let i = pool.invoke(req, source, timeout, seat).await;
                        (i.report, i.response, i.cold)
                    }
                    Err(why) => {
                        let (rep, resp) = refused(why);
                        (rep, resp, false)
                    }
                };
                on_done(report, cold);
                resp.map(body)
            }
        }
    }

    /// Runs a request and keeps up to `keep` bytes of the response body.
    pub(crate) async fn run_collect<B>(
        self,
        req: http::Request<B>,
        timeout: Duration,
        source: &Source,
        keep: usize,
    ) -> (RunReport, Vec<u8>, bool)
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        match self.wasm_or_process() {
            Ok((p, seat)) => {
                let (r, b) = p.run_collect(req, timeout, seat, keep).await;
                (r, b, false)
            }
            Err(ProcessSeat::Pool(pool, seat)) => match whole(req).await {
                Ok(req) => {
                    let i = pool.invoke(req, source, timeout, seat).await;
                    let b = i.response.into_body();
                    (i.report, b[..b.len().min(keep)].to_vec(), i.cold)
                }
                Err(why) => {
                    let (rep, resp) = refused(why);
                    (rep, resp.into_body().to_vec(), false)
                }
            },
        }
    }
}
