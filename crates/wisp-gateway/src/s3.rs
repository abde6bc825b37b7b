//! The S3 listener and functions' in-process S3 calls, served by
//! [`wisp_s3::S3Api`] with the gateway's access keys and the engine's
//! object events.

use crate::gate::Gate;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use wisp_core::{FunctionName, Namespace};
use wisp_engine::Engine;
use wisp_objects::ObjectMeta;

struct Keys(Arc<Gate>);

impl wisp_s3::KeyLookup for Keys {
    fn access_key(&self, id: &str) -> Option<(wisp_core::AccessKeyRecord, String)> {
        self.0.access_key(id)
    }
}

struct Events(Engine);

#[async_trait::async_trait]
impl wisp_s3::ObjectEvents for Events {
    async fn object_changed(
        &self,
        ns: &Namespace,
        bucket: &str,
        meta: &ObjectMeta,
        created: bool,
        writer: Option<&FunctionName>,
    ) -> Result<(), String> {
        self.0
            .object_changed(ns, bucket, meta, created, writer)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The node's S3 API.
pub(crate) fn api(engine: &Engine, gate: &Arc<Gate>) -> Arc<wisp_s3::S3Api> {
    Arc::new(wisp_s3::S3Api::new(
        engine.objects().clone(),
        Arc::new(Keys(gate.clone())),
        Arc::new(Events(engine.clone())),
    ))
}

pub(crate) fn router(api: Arc<wisp_s3::S3Api>) -> Router {
    Router::new().fallback(handle).with_state(api)
}

async fn handle(State(api): State<Arc<wisp_s3::S3Api>>, req: Request) -> Response {
    api.handle(req)
        .await
        .map(axum::body::Body::new)
        .into_response()
}

/// The largest body a function's S3 request other than a PUT may have.
const SMALL_BODY: usize = 16 << 20;

/// Functions' requests to the S3 endpoint, served in-process as the
/// function (see `wisp_exec_wasm::ObjectsHook`).
pub(crate) struct FunctionObjects {
    pub api: Arc<wisp_s3::S3Api>,
}

impl wisp_exec_wasm::ObjectsHook for FunctionObjects {
    fn call(
        &self,
        caller: wisp_exec_wasm::FunctionCaller,
        req: http::Request<wisp_exec_wasm::WasiBody>,
    ) -> std::pin::Pin<Box<dyn Future<Output = http::Response<wisp_exec_wasm::WasiBody>> + Send>>
    {
        use http_body_util::BodyExt;
        let api = self.api.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(wisp_s3::FunctionCaller {
                namespace: caller.namespace,
                function: caller.function,
                grants: caller.grants,
            });
            let body = body.map_err(|e| std::io::Error::other(format!("{e:?}")));
            let to_wasi = |r: http::Response<wisp_s3::Body>| {
                r.map(|b| {
                    b.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))
                        .boxed_unsync()
                })
            };
            if parts.method == http::Method::PUT {
                // An object's bytes stream through.
                let req = http::Request::from_parts(parts, body);
                return to_wasi(api.handle(req).await);
            }
            // Anything else has no body or a small one (DeleteObjects,
            // CompleteMultipartUpload): read it whole first, so the
            // function has finished sending it before the answer comes
            // (else its end of the request fails as a reset connection).
            let body = match http_body_util::Limited::new(body, SMALL_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let mut r = http::Response::new(wisp_s3::Body::from(format!(
                        "the request body could not be read whole (at most {SMALL_BODY} bytes for this request): {e}"
                    )));
                    *r.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
                    return to_wasi(r);
                }
            };
            let req = http::Request::from_parts(parts, http_body_util::Full::new(body));
            to_wasi(api.handle(req).await)
        })
    }
}
