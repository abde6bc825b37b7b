//! The management API under `/v1` (JSON, bearer token). Documented in
//! `docs/api.md`.

use crate::AppState;
use crate::error::ApiError;
use crate::invoke::{function_name, invoke_with_path};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use wisp_core::time::now_ms;
use wisp_core::{
    ActivationFilter, ActivationId, Digest, FunctionName, FunctionRecord, FunctionSpec, Namespace,
};

pub fn routes(state: AppState) -> Router<AppState> {
    let max_artifact = state.config.max_artifact_bytes;
    Router::new()
        .route(
            "/artifacts",
            post(upload_artifact).layer(DefaultBodyLimit::max(max_artifact)),
        )
        .route("/functions", get(list_functions))
        .route(
            "/functions/{name}",
            get(get_function).put(put_function).delete(delete_function),
        )
        .route("/functions/{name}/invoke", post(invoke))
        .route("/functions/{name}/invoke/", post(invoke))
        .route("/functions/{name}/invoke/{*rest}", post(invoke_path))
        .route("/activations", get(list_activations))
        .route("/activations/{id}", get(get_activation))
        .route("/usage", get(usage))
        .merge(crate::events_api::routes())
        .layer(middleware::from_fn_with_state(state, require_token))
}

/// Constant-time comparison, so the token cannot be guessed byte by byte
/// from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same(t.trim().as_bytes(), st.config.admin_token.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the bearer token is not valid for this node")
            .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token: send `Authorization: Bearer <token>` (the admin token is in the data dir's admin-token file)",
        )
        .into_response(),
    }
}

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid request body: {e}")))
}

#[derive(Serialize)]
struct ArtifactInfo {
    digest: Digest,
    size: usize,
    created: bool,
}

async fn upload_artifact(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty_artifact",
            "the artifact upload is empty: send the file's bytes as the request body",
        ));
    }
    let size = body.len();
    let (digest, created) = st.engine.put_artifact(body).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(ArtifactInfo {
            digest,
            size,
            created,
        }),
    )
        .into_response())
}

#[derive(Serialize)]
struct FunctionView {
    #[serde(flatten)]
    record: FunctionRecord,
    url: String,
}

fn view(st: &AppState, record: FunctionRecord) -> FunctionView {
    let url = format!(
        "{}/fn/{}/",
        st.config.public_url.trim_end_matches('/'),
        record.name
    );
    FunctionView { record, url }
}

async fn list_functions(State(st): State<AppState>) -> Json<Vec<FunctionView>> {
    let ns = Namespace::default();
    let list = st.engine.list_functions(Some(&ns)).await;
    Json(list.into_iter().map(|r| view(&st, r)).collect())
}

async fn get_function(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FunctionView>, ApiError> {
    let name = function_name(&name)?;
    let r = st.engine.get_function(&Namespace::default(), &name).await?;
    Ok(Json(view(&st, r)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    artifact: String,
    #[serde(default)]
    spec: FunctionSpec,
}

async fn put_function(
    State(st): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = function_name(&name)?;
    let req: DeployRequest = json_body(&body)?;
    let artifact = Digest::parse(&req.artifact)
        .map_err(|e| ApiError::bad_request("invalid_artifact", format!("artifact: {e}")))?;
    let ns = Namespace::default();
    let record = st.engine.deploy(&ns, &name, artifact, req.spec).await?;
    let status = if record.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&st, record))).into_response())
}

async fn delete_function(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = function_name(&name)?;
    st.engine
        .delete_function(&Namespace::default(), &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whether the caller asked for an async invocation: `?async=true` or
/// Lambda's `X-Amz-Invocation-Type: Event`.
fn wants_async(req: &Request) -> bool {
    let query = req.uri().query().unwrap_or("");
    let by_query = query
        .split('&')
        .any(|p| p == "async" || p == "async=true" || p == "async=1");
    let by_header = req
        .headers()
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("event"));
    by_query || by_header
}

async fn invoke(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let name: FunctionName = function_name(&name)?;
    if wants_async(&req) {
        let (parts, body) = req.into_parts();
        let limit = st.config.max_payload_bytes;
        let body = axum::body::to_bytes(body, limit.saturating_add(1))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("reading the request body failed (limit {limit} bytes): {e}"),
                )
            })?;
        return crate::events_api::invoke_async(&st, &name, &parts.headers, body).await;
    }
    invoke_with_path(&st, &Namespace::default(), &name, "", req, "api").await
}

async fn invoke_path(
    State(st): State<AppState>,
    Path((name, rest)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let name: FunctionName = function_name(&name)?;
    invoke_with_path(&st, &Namespace::default(), &name, &rest, req, "api").await
}

/// Parses `90s`, `15m`, `1h`, `7d` (or anything humantime accepts).
fn parse_since(s: &str) -> Result<i64, ApiError> {
    let d: Duration = humantime::parse_duration(s).map_err(|e| {
        ApiError::bad_request(
            "invalid_since",
            format!("since={s:?} is not a duration like 15m, 1h or 7d: {e}"),
        )
    })?;
    Ok(now_ms() - d.as_millis() as i64)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivationQuery {
    function: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    /// Only the attempts for this CloudEvent id.
    event: Option<String>,
}

async fn list_activations(
    State(st): State<AppState>,
    Query(q): Query<ActivationQuery>,
) -> Result<Response, ApiError> {
    let function = q.function.as_deref().map(function_name).transpose()?;
    let since_ms = q.since.as_deref().map(parse_since).transpose()?;
    let filter = ActivationFilter {
        namespace: Some(Namespace::default()),
        function,
        since_ms,
        limit: q.limit.unwrap_or(50).min(10_000),
        delivery: None,
        event_id: q.event,
    };
    let list = st.engine.list_activations(filter).await?;
    Ok(Json(list).into_response())
}

async fn get_activation(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id =
        ActivationId::parse(&id).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
    let a = st.engine.get_activation(id).await?;
    if a.namespace != Namespace::default() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "activation_not_found",
            format!("activation {} not found", a.id),
        ));
    }
    Ok(Json(a).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    since: Option<String>,
}

async fn usage(
    State(st): State<AppState>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    let since_ms = q
        .since
        .as_deref()
        .map(parse_since)
        .transpose()?
        .unwrap_or(0);
    let rows = st
        .engine
        .usage(Some(Namespace::default()), since_ms)
        .await?;
    Ok(Json(rows).into_response())
}
