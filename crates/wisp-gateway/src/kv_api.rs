//! The key-value store over HTTP: `/v1/kv/{bucket}/{key}` in the caller's
//! namespace. Values are raw bytes (`application/octet-stream` unless the
//! writer said otherwise is not kept: the store holds bytes only).
//! Documented in `docs/api.md`.

use crate::AppState;
use crate::error::ApiError;
use crate::tenancy::Scope;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use wisp_core::kv::{KvError, LIST_PAGE, check_bucket};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/kv", get(list_buckets))
        .route(
            "/kv/{bucket}",
            get(list_keys).put(create_bucket).delete(delete_bucket),
        )
        .route(
            "/kv/{bucket}/{*key}",
            get(get_key)
                .head(get_key)
                .put(put_key)
                .delete(delete_key)
                .post(update_key),
        )
}

fn bucket_name(b: &str) -> Result<(), ApiError> {
    check_bucket(b).map_err(ApiError::from)
}

async fn list_buckets(State(st): State<AppState>, scope: Scope) -> Result<Response, ApiError> {
    let list: Vec<_> = st
        .engine
        .kv()
        .buckets(&scope.ns)
        .into_iter()
        .map(|b| json!({"name": b.name, "keys": b.keys, "bytes": b.bytes}))
        .collect();
    Ok(Json(list).into_response())
}

async fn create_bucket(
    State(st): State<AppState>,
    scope: Scope,
    Path(bucket): Path<String>,
) -> Result<Response, ApiError> {
    bucket_name(&bucket)?;
    let made = st.engine.kv().create_bucket(&scope.ns, &bucket).await?;
    let status = if made {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({"namespace": scope.ns, "name": bucket}))).into_response())
}

async fn delete_bucket(
    State(st): State<AppState>,
    scope: Scope,
    Path(bucket): Path<String>,
) -> Result<Response, ApiError> {
    if st.engine.kv().delete_bucket(&scope.ns, &bucket).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(no_bucket(&scope, &bucket))
    }
}

fn no_bucket(scope: &Scope, bucket: &str) -> ApiError {
    KvError::NoSuchBucket {
        namespace: scope.ns.clone(),
        bucket: bucket.to_string(),
    }
    .into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    /// The `next` of the previous page.
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_keys(
    State(st): State<AppState>,
    scope: Scope,
    Path(bucket): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(LIST_PAGE).clamp(1, LIST_PAGE);
    let page = st
        .engine
        .kv()
        .list(&scope.ns, &bucket, &q.prefix, q.after.as_deref(), limit)?;
    Ok(Json(json!({"keys": page.keys, "next": page.next})).into_response())
}

async fn get_key(
    State(st): State<AppState>,
    scope: Scope,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    match st.engine.kv().get(&scope.ns, &bucket, &key)? {
        Some(v) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], v).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_key",
            format!(
                "key {key:?} not found in bucket {bucket:?} (wisp kv ls {bucket} lists its keys)"
            ),
        )),
    }
}

async fn put_key(
    State(st): State<AppState>,
    scope: Scope,
    Path((bucket, key)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    st.engine
        .kv()
        .set(&scope.ns, &bucket, &key, body, None)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_key(
    State(st): State<AppState>,
    scope: Scope,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    st.engine
        .kv()
        .delete(&scope.ns, &bucket, &key, None)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    /// Adds this to the decimal integer at the key (0 when absent).
    increment: i64,
}

async fn update_key(
    State(st): State<AppState>,
    scope: Scope,
    Path((bucket, key)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let u: Update = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the request body must be {{\"increment\": N}}: {e}"),
        )
    })?;
    let n = st
        .engine
        .kv()
        .increment(&scope.ns, &bucket, &key, u.increment, None)
        .await?;
    Ok(Json(json!({"key": key, "value": n})).into_response())
}
