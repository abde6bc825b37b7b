//! JSON errors: `{"error": {"code": "...", "message": "..."}}` with the
//! matching HTTP status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wisp_core::StoreError;
use wisp_engine::EngineError;
use wisp_exec_wasm::DeployError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 507: the node's disk is full; nothing of the request was stored.
    pub fn insufficient_storage(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::warn!(error = %message, "refused a write: the disk is full");
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        // The request body was left unread: the connection cannot carry
        // another request, and the client must know before reusing it.
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Marks a response as the function's own answer: the management API
/// passes it on as it is, whatever its status and body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FunctionAnswer;

/// Turns the plain-text rejections of the HTTP layer (a query that does
/// not parse, a body over the endpoint's limit, a method an endpoint does
/// not answer, …) into the API's JSON error with the same status.
pub(crate) async fn json_rejections(resp: Response) -> Response {
    let status = resp.status();
    let (code, hint) = match status.as_u16() {
        400 => (
            "bad_request",
            "check the path and query parameters against docs/api.md",
        ),
        405 => (
            "method_not_allowed",
            "docs/api.md lists the methods of each endpoint",
        ),
        413 => (
            "payload_too_large",
            "management requests take up to 2 MiB, artifacts up to wisp serve --max-artifact",
        ),
        415 => (
            "unsupported_media_type",
            "send Content-Type: application/json",
        ),
        422 => (
            "invalid_json",
            "docs/api.md shows the body each endpoint takes",
        ),
        _ => return resp,
    };
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json || resp.extensions().get::<FunctionAnswer>().is_some() {
        return resp;
    }
    let allow = resp.headers().get(header::ALLOW).cloned();
    let text = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let what = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string()
    } else {
        text
    };
    let mut out = ApiError::new(status, code, format!("{what} ({hint})")).into_response();
    if let Some(a) = allow {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        EngineError::Store(e).into()
    }
}

impl From<wisp_core::kv::KvError> for ApiError {
    fn from(e: wisp_core::kv::KvError) -> Self {
        use wisp_core::kv::KvError;
        let msg = e.to_string();
        match e {
            KvError::NoSuchBucket { .. } => Self::new(StatusCode::NOT_FOUND, "no_such_bucket", msg),
            KvError::NotGranted(_) => Self::new(StatusCode::FORBIDDEN, "not_granted", msg),
            KvError::NotANumber(_) | KvError::Overflow(_) => {
                Self::new(StatusCode::CONFLICT, "not_a_number", msg)
            }
            KvError::Invalid(_) => Self::bad_request("invalid_kv_request", msg),
            KvError::StorageFull(_) => Self::insufficient_storage(msg),
            KvError::QueueFull(_) => Self {
                retry_after_s: Some(1),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", msg)
            },
            _ => {
                tracing::error!(error = %msg, "key-value store error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "kv_store_failed", msg)
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let msg = e.to_string();
        match e {
            EngineError::FunctionNotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, "function_not_found", msg)
            }
            EngineError::Throttled { retry_after_s, .. } => Self {
                retry_after_s: Some(retry_after_s),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "throttled", msg)
            },
            EngineError::NamespaceThrottled { retry_after_s, .. } => Self {
                retry_after_s: Some(retry_after_s),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "throttled", msg)
            },
            EngineError::NodeBusy { retry_after_s, .. } => Self {
                retry_after_s: Some(retry_after_s),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "node_busy", msg)
            },
            EngineError::OverLimit(_) => Self::bad_request("over_limit", msg),
            EngineError::Spec(_) => Self::bad_request("invalid_spec", msg),
            // Publishing to a topic that does not exist is a bad request.
            EngineError::TopicNotFound { .. } => Self::bad_request("unknown_topic", msg),
            EngineError::TopicInUse { .. } => Self::new(StatusCode::CONFLICT, "topic_in_use", msg),
            EngineError::TriggerNotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, "trigger_not_found", msg)
            }
            EngineError::TriggerExists(_) => Self::new(StatusCode::CONFLICT, "trigger_exists", msg),
            EngineError::Cron(wisp_triggers::CronError::TimeZone(_)) => {
                Self::bad_request("invalid_timezone", msg)
            }
            EngineError::Cron(_) => Self::bad_request("invalid_schedule", msg),
            EngineError::Event(_) => Self::bad_request("invalid_event", msg),
            EngineError::EventNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "event_not_found", msg)
            }
            EngineError::QueueFull(_) => Self {
                retry_after_s: Some(1),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", msg)
            },
            EngineError::Deploy(DeployError::Cache { .. }) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "cache_error", msg)
            }
            EngineError::Deploy(_) => Self::bad_request("invalid_component", msg),
            EngineError::Process(wisp_exec_process::ProcessError::Spawn(_)) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "spawn_failed", msg)
            }
            EngineError::Process(_) => Self::bad_request("invalid_bundle", msg),
            EngineError::Store(StoreError::ArtifactNotFound(_)) => {
                Self::new(StatusCode::NOT_FOUND, "artifact_not_found", msg)
            }
            EngineError::Store(StoreError::ActivationNotFound(_)) => {
                Self::new(StatusCode::NOT_FOUND, "activation_not_found", msg)
            }
            // A function refers to a secret that does not exist.
            EngineError::Store(StoreError::SecretNotFound { .. }) => {
                Self::bad_request("secret_not_found", msg)
            }
            EngineError::Store(StoreError::FunctionNotFound { .. }) => {
                Self::new(StatusCode::NOT_FOUND, "function_not_found", msg)
            }
            EngineError::Kv(e) => e.into(),
            EngineError::Store(StoreError::Full(_)) => Self::insufficient_storage(msg),
            EngineError::Store(ref s) if s.is_full() => Self::insufficient_storage(msg),
            EngineError::NoSuchBucket(_) => Self::new(StatusCode::NOT_FOUND, "no_such_bucket", msg),
            _ => {
                tracing::error!(error = %msg, "internal error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
            }
        }
    }
}
