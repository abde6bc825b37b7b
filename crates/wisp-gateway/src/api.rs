//! The management API under `/v1` (JSON, bearer token). Documented in
//! `docs/api.md`.

use crate::AppState;
use crate::error::ApiError;
use crate::invoke::{function_name, invoke_with_path};
use crate::tenancy::Scope;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use wisp_core::Source;
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
        .merge(crate::tenants_api::routes())
        .merge(crate::kv_api::routes())
        .layer(middleware::from_fn_with_state(
            state,
            crate::tenancy::authorize,
        ))
        .layer(middleware::map_response(crate::error::json_rejections))
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
    let base = st.config.public_url.trim_end_matches('/');
    let url = if record.namespace == Namespace::default() {
        format!("{base}/fn/{}/", record.name)
    } else {
        format!("{base}/ns/{}/fn/{}/", record.namespace, record.name)
    };
    FunctionView { record, url }
}

async fn list_functions(State(st): State<AppState>, scope: Scope) -> Json<Vec<FunctionView>> {
    let list = st.engine.list_functions(Some(&scope.ns)).await;
    Json(list.into_iter().map(|r| view(&st, r)).collect())
}

async fn get_function(
    State(st): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
) -> Result<Json<FunctionView>, ApiError> {
    let name = function_name(&name)?;
    let r = st.engine.get_function(&scope.ns, &name).await?;
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
    scope: Scope,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = function_name(&name)?;
    let req: DeployRequest = json_body(&body)?;
    let artifact = Digest::parse(&req.artifact)
        .map_err(|e| ApiError::bad_request("invalid_artifact", format!("artifact: {e}")))?;
    let record = st
        .engine
        .deploy(&scope.ns, &name, artifact, req.spec)
        .await?;
    let status = if record.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&st, record))).into_response())
}

async fn delete_function(
    State(st): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = function_name(&name)?;
    st.engine.delete_function(&scope.ns, &name).await?;
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
    scope: Scope,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let name: FunctionName = function_name(&name)?;
    if wants_async(&req) {
        let (parts, body) = req.into_parts();
        let body = crate::invoke::read_body(
            body,
            &parts.headers,
            st.config.max_payload_bytes,
            st.config.body_timeout,
        )
        .await?;
        return crate::events_api::invoke_async(&st, &scope.ns, &name, &parts.headers, body).await;
    }
    invoke_with_path(
        &st,
        &scope.ns,
        &name,
        "",
        strip_credentials(req),
        Source::Api,
    )
    .await
}

/// The caller's management token is for Wisp, never for the function.
fn strip_credentials(mut req: Request) -> Request {
    let h = req.headers_mut();
    h.remove(axum::http::header::AUTHORIZATION);
    h.remove(crate::tenancy::NAMESPACE_HEADER);
    req
}

async fn invoke_path(
    State(st): State<AppState>,
    scope: Scope,
    Path((name, rest)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let name: FunctionName = function_name(&name)?;
    invoke_with_path(
        &st,
        &scope.ns,
        &name,
        &rest,
        strip_credentials(req),
        Source::Api,
    )
    .await
}

/// Parses `90s`, `15m`, `1h`, `7d` (or anything humantime accepts).
pub(crate) fn parse_since(s: &str) -> Result<i64, ApiError> {
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
    scope: Scope,
    Query(q): Query<ActivationQuery>,
) -> Result<Response, ApiError> {
    let function = q.function.as_deref().map(function_name).transpose()?;
    let since_ms = q.since.as_deref().map(parse_since).transpose()?;
    let filter = ActivationFilter {
        namespace: Some(scope.ns.clone()),
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
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id =
        ActivationId::parse(&id).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
    let a = st.engine.get_activation(id).await?;
    if a.namespace != scope.ns {
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
    /// `route`, `key` or `function`: gateway traffic grouped so; without
    /// it, every invocation of each function (all triggers).
    by: Option<String>,
}

async fn usage(
    State(st): State<AppState>,
    scope: Scope,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    let since_ms = q
        .since
        .as_deref()
        .map(parse_since)
        .transpose()?
        .unwrap_or(0);
    if let Some(by) = &q.by {
        return crate::tenants_api::gateway_usage(&st, &scope.ns, by, since_ms).await;
    }
    let rows = st.engine.usage(Some(scope.ns.clone()), since_ms).await?;
    Ok(Json(rows).into_response())
}
