//! The AWS Lambda Runtime API (2018-06-01) for one process, on its own
//! loopback port: `GET /runtime/invocation/next`, `POST
//! /runtime/invocation/{id}/response`, `POST /runtime/invocation/{id}/error`
//! and `POST /runtime/init/error`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

const PREFIX: &str = "/2018-06-01/runtime";

/// How the runtime answered an invocation.
pub enum Outcome {
    Response(Bytes),
    Error(Bytes),
}

pub struct Invocation {
    pub id: String,
    pub payload: Bytes,
    pub deadline_ms: i64,
    pub arn: String,
    pub done: oneshot::Sender<Outcome>,
}

pub struct ApiState {
    created: std::time::Instant,
    asked: std::sync::atomic::AtomicBool,
    tx: mpsc::UnboundedSender<Invocation>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<String>>,
}

impl ApiState {
    pub fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            created: std::time::Instant::now(),
            asked: std::sync::atomic::AtomicBool::new(false),
            tx,
            rx: tokio::sync::Mutex::new(rx),
            pending: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
        })
    }

    /// Hands an invocation to the process's next `GET …/next`.
    pub fn push(&self, inv: Invocation) {
        let _ = self.tx.send(inv);
    }

    /// What the runtime reported with `POST …/init/error`, if anything.
    pub fn init_error(&self) -> Option<String> {
        self.init_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub async fn serve(listener: tokio::net::TcpListener, st: Arc<ApiState>) {
    let app = Router::new()
        .route(&format!("{PREFIX}/invocation/next"), get(next))
        .route(
            &format!("{PREFIX}/invocation/{{id}}/response"),
            post(response),
        )
        .route(&format!("{PREFIX}/invocation/{{id}}/error"), post(error))
        .route(&format!("{PREFIX}/init/error"), post(init_error))
        .with_state(st);
    let _ = wisp_listen::serve(
        listener,
        app,
        wisp_listen::ListenerSettings::RUNTIME_API,
        std::future::pending(),
    )
    .await;
}

async fn next(State(st): State<Arc<ApiState>>) -> Response {
    if !st.asked.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::debug!(
            init_us = st.created.elapsed().as_micros() as u64,
            "runtime asked for its first invocation"
        );
    }
    let inv = { st.rx.lock().await.recv().await };
    let Some(inv) = inv else {
        return StatusCode::GONE.into_response();
    };
    st.pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(inv.id.clone(), inv.done);
    let mut r = Response::new(axum::body::Body::from(inv.payload));
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    for (k, v) in [
        ("lambda-runtime-aws-request-id", inv.id.clone()),
        ("lambda-runtime-deadline-ms", inv.deadline_ms.to_string()),
        ("lambda-runtime-invoked-function-arn", inv.arn),
        (
            "lambda-runtime-trace-id",
            format!("Root=1-{}-{}", &inv.id[..8], &inv.id[8..32]),
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    r
}

fn finish(st: &ApiState, id: &str, outcome: Outcome) -> Response {
    let done = st
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(id);
    match done {
        Some(tx) => {
            let _ = tx.send(outcome);
            (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
        }
        None => (
            StatusCode::BAD_REQUEST,
            r#"{"errorMessage":"unknown or finished request id","errorType":"InvalidRequestID"}"#,
        )
            .into_response(),
    }
}

async fn response(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    finish(&st, &id, Outcome::Response(body))
}

async fn error(State(st): State<Arc<ApiState>>, Path(id): Path<String>, body: Bytes) -> Response {
    finish(&st, &id, Outcome::Error(body))
}

async fn init_error(State(st): State<Arc<ApiState>>, body: Bytes) -> Response {
    let msg = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["errorMessage"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    *st.init_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg);
    (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
}
