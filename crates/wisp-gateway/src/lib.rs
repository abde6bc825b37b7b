//! The HTTP front of a node: user routes (host + method + path → function,
//! with API keys, rate limits, quotas and CORS), direct function URLs
//! (`/fn/{name}/…`, `/ns/{ns}/fn/{name}/…`), the management API (`/v1/…`,
//! bearer tokens scoped to a namespace and a role), `/healthz` and
//! `/metrics`. It turns requests into invocations and hands them to the
//! engine.

mod access;
mod api;
mod error;
mod events_api;
mod front;
mod gate;
mod invoke;
pub mod jwt;
mod kv_api;
mod lambda_api;
pub mod limits;
mod ownership;
pub mod routes;
mod s3;
pub mod sigv4;
mod tenancy;
mod tenants_api;

pub use access::AccessLogSettings;
pub use error::ApiError;
pub use gate::Gate;
pub use tenancy::NAMESPACE_HEADER;

use axum::Router;
use axum::routing::{any, get, post};
use std::sync::Arc;
use wisp_engine::Engine;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest invocation payload accepted (413 beyond).
    pub max_payload_bytes: usize,
    /// Largest artifact upload accepted (413 beyond).
    pub max_artifact_bytes: usize,
    /// The address clients use to reach this node (for printed URLs).
    pub public_url: String,
    /// The address of the S3-compatible API, when it listens.
    pub s3_url: Option<String>,
    /// How long an invocation's request body may take to arrive (408
    /// beyond); it is read before the function gets an instance.
    pub body_timeout: std::time::Duration,
    /// Header and idle timeouts and connection cap of the gateway and S3
    /// listeners (each).
    pub listener: wisp_listen::ListenerSettings,
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub engine: Engine,
    pub gate: Arc<Gate>,
    pub config: Arc<GatewayConfig>,
    /// The node's metrics registry: every component's collector.
    pub metrics: Arc<wisp_core::metrics::Registry>,
}

/// The node's metrics registry: the engine (functions, capacity, queue,
/// processes), the gateway (routes, access log), the S3 API and the KV
/// store each register their collector.
fn registry(engine: &Engine, gate: &Arc<Gate>) -> wisp_core::metrics::Registry {
    use wisp_core::metrics::{DescriptorEncoder, FnCollector};
    let mut r = wisp_core::metrics::Registry::default();
    r.register_collector(Box::new(engine.collector()));
    let g = gate.clone();
    r.register_collector(Box::new(FnCollector(
        "gateway",
        move |e: &mut DescriptorEncoder| g.encode_metrics(e),
    )));
    r.register_collector(Box::new(wisp_s3::collector()));
    let kv = engine.clone();
    r.register_collector(Box::new(FnCollector(
        "kv",
        move |e: &mut DescriptorEncoder| kv.kv().encode_metrics(e),
    )));
    r
}

/// Builds the node's HTTP router.
pub fn router(engine: Engine, gate: Arc<Gate>, config: GatewayConfig) -> Router {
    let metrics = Arc::new(registry(&engine, &gate));
    let state = AppState {
        engine,
        gate,
        config: Arc::new(config),
        metrics,
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(invoke::metrics))
        .route("/fn/{name}", any(invoke::fn_root))
        .route("/fn/{name}/", any(invoke::fn_root))
        .route("/fn/{name}/{*rest}", any(invoke::fn_path))
        .route("/ns/{ns}/fn/{name}", any(invoke::ns_fn_root))
        .route("/ns/{ns}/fn/{name}/", any(invoke::ns_fn_root))
        .route("/ns/{ns}/fn/{name}/{*rest}", any(invoke::ns_fn_path))
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(lambda_api::invoke),
        )
        .nest("/v1", api::routes(state.clone()))
        .fallback(front::serve_route)
        .with_state(state)
}

/// Serves the router on `listener`, and the S3-compatible API on
/// `s3_listener`, until `shutdown` resolves; then stops accepting and lets
/// open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    s3_listener: Option<tokio::net::TcpListener>,
    engine: Engine,
    gate: Arc<Gate>,
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let s3_url = s3_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| format!("http://{a}"));
    let s3_api = s3::api(&engine, &gate);
    engine.attach_objects(
        Arc::new(s3::FunctionObjects {
            api: s3_api.clone(),
        }),
        s3_url,
    );
    let s3 = s3_listener.map(|l| {
        tokio::spawn(wisp_listen::serve(
            l,
            s3::router(s3_api),
            config.listener,
            stopped(stop_rx.clone()),
        ))
    });
    let settings = config.listener;
    wisp_listen::serve(
        listener,
        router(engine, gate, config),
        settings,
        stopped(stop_rx),
    )
    .await?;
    if let Some(s3) = s3 {
        let _ = s3.await;
    }
    Ok(())
}
