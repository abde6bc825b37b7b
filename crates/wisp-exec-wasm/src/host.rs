//! The per-instance host state: WASI context, `wasi:http` context, resource
//! table, the memory limiter and the outbound-HTTP policy.

use crate::logs::LogCapture;
use http_body_util::BodyExt;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};
use wisp_core::FunctionSpec;

pub struct Host {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub outbound: OutboundPolicy,
    pub limiter: MemoryLimiter,
    /// When the current request must end; read by the epoch callback.
    pub deadline: std::time::Instant,
    /// The buckets `wasi:keyvalue` reaches.
    pub kv: crate::kv::KvCtx,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Who is calling the object store from inside a function.
#[derive(Clone)]
pub struct FunctionCaller {
    pub namespace: wisp_core::Namespace,
    pub function: wisp_core::FunctionName,
    /// The buckets the function's spec grants (`--objects`).
    pub grants: Arc<[String]>,
}

/// Serves a function's requests to the node's S3 endpoint in-process, as
/// that function (Wisp authorizes them; the function holds no keys).
pub trait ObjectsHook: Send + Sync + 'static {
    fn call(
        &self,
        caller: FunctionCaller,
        req: http::Request<WasiBody>,
    ) -> std::pin::Pin<Box<dyn Future<Output = http::Response<WasiBody>> + Send>>;
}

/// Where functions reach the object store.
#[derive(Clone)]
pub struct ObjectsEndpoint {
    pub hook: Arc<dyn ObjectsHook>,
    /// The URL functions are given (`WISP_S3_ENDPOINT`).
    pub url: String,
    /// Authorities (`host:port`) that mean the object store.
    pub authorities: Vec<String>,
}

/// The name that always means the node's object store, also when the S3
/// listener is off.
pub const INTERNAL_S3_AUTHORITY: &str = "s3.wisp.internal";

/// Denies outbound HTTP to any host the function's spec does not list.
pub struct OutboundPolicy {
    pub spec: Arc<FunctionSpec>,
    /// Denials are written into the invocation's logs, so `wisp logs` says
    /// why a request failed.
    pub logs: LogCapture,
    /// Requests to the object store, and who makes them.
    pub objects: Option<(ObjectsEndpoint, FunctionCaller)>,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let uri = request.uri();
        if let Some((endpoint, caller)) = &self.objects
            && uri
                .authority()
                .is_some_and(|a| endpoint.authorities.iter().any(|e| e == a.as_str()))
        {
            if caller.grants.is_empty() {
                self.logs.note(&format!(
                    "[wisp] request to the object store ({uri}) denied: the function has no bucket grants (deploy with --objects BUCKET)\n"
                ));
                return Box::new(async { Err(HttpError::HttpRequestDenied) });
            }
            let fut = endpoint.hook.call(caller.clone(), request);
            return Box::new(async move {
                let resp = fut.await;
                Ok((
                    resp,
                    Box::new(async { Ok(()) })
                        as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ))
            });
        }
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let allowed = uri.host().is_some_and(|host| {
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            self.spec.outbound_allowed(host, port)
        });
        if !allowed {
            tracing::debug!(uri = %uri, "outbound request denied by policy");
            self.logs.note(&format!(
                "[wisp] outbound request to {uri} denied: its host is not in the function's allow_outbound list (deploy with --allow-outbound HOST[:PORT])\n"
            ));
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        Box::new(async move {
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}

/// Caps the total linear memory of one instance at the function's limit and
/// remembers whether the guest hit it, so a trap after a refused grow is
/// reported as `memory_limit`.
pub struct MemoryLimiter {
    pub limit_bytes: usize,
    pub used_bytes: usize,
    pub hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self.used_bytes - current.min(self.used_bytes) + desired;
        if after > self.limit_bytes {
            self.hit = true;
            return Ok(false);
        }
        self.used_bytes = after;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
