//! Management API for events: async invoke, topics and publishing
//! (CloudEvents in binary, structured and batch HTTP mode), triggers, the
//! dead-letter queue and event status. Documented in `docs/api.md`.

use crate::AppState;
use crate::api::json_body;
use crate::error::ApiError;
use crate::invoke::function_name;
use crate::tenancy::Scope;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use wisp_core::event::{BATCH_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE};
use wisp_core::time::now_ms;
use wisp_core::{
    CloudEvent, DeliveryId, FunctionName, Namespace, TopicName, Trigger, TriggerKind, TriggerName,
};
use wisp_engine::Accepted;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/topics", get(list_topics))
        .route("/topics/{topic}", put(create_topic).delete(delete_topic))
        .route("/topics/{topic}/events", post(publish))
        .route("/triggers", get(list_triggers).post(add_trigger))
        .route("/triggers/{name}", get(get_trigger).delete(delete_trigger))
        .route("/dlq", get(list_dlq))
        .route("/dlq/replay", post(replay))
        .route("/dlq/delete", post(delete_dead_letters))
        .route("/dlq/{id}/replay", post(replay_one))
        .route("/events/{id}", get(event_status))
}

fn topic_name(s: &str) -> Result<TopicName, ApiError> {
    TopicName::new(s).map_err(|e| ApiError::bad_request("invalid_topic", e.to_string()))
}

fn trigger_name(s: &str) -> Result<TriggerName, ApiError> {
    TriggerName::new(s).map_err(|e| ApiError::bad_request("invalid_trigger", e.to_string()))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let k = v.to_str().map_err(|_| {
                ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be visible ASCII",
                )
            })?;
            if k.is_empty() || k.len() > 255 {
                return Err(ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1-255 characters",
                ));
            }
            Ok(Some(k.to_string()))
        }
    }
}

/// 413 when an event body is over `--max-payload`.
fn check_payload(st: &AppState, body: &Bytes) -> Result<(), ApiError> {
    let max = st.config.max_payload_bytes;
    if body.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "event body of {} bytes exceeds the limit of {max} bytes (wisp serve --max-payload)",
                body.len()
            ),
        ));
    }
    Ok(())
}

/// 202 with the event and delivery ids.
pub(crate) fn accepted(a: Accepted) -> Response {
    let mut resp = (StatusCode::ACCEPTED, Json(&a)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/events/{}", a.event_id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(d) = a.deliveries.first()
        && let Ok(v) = HeaderValue::from_str(d.id.as_str())
    {
        resp.headers_mut().insert("x-wisp-delivery-id", v);
    }
    resp
}

/// `POST /v1/functions/{name}/invoke?async=true` (or with
/// `X-Amz-Invocation-Type: Event`): store, answer 202, run soon.
pub(crate) async fn invoke_async(
    st: &AppState,
    ns: &Namespace,
    name: &FunctionName,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_payload(st, &body)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let key = idempotency_key(headers)?;
    let a = st
        .engine
        .invoke_async(ns, name, body, content_type, key)
        .await?;
    Ok(accepted(a))
}

fn invalid_event(e: wisp_core::EventError) -> ApiError {
    ApiError::bad_request("invalid_event", e.to_string())
}

/// Reads the events of a publish request: structured mode
/// (`application/cloudevents+json`), batch mode
/// (`application/cloudevents-batch+json`) or binary mode (`ce-*` headers).
fn read_events(headers: &HeaderMap, body: Bytes) -> Result<Vec<CloudEvent>, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with(STRUCTURED_CONTENT_TYPE) {
        return Ok(vec![
            CloudEvent::from_structured(&body).map_err(invalid_event)?,
        ]);
    }
    if ct.starts_with(BATCH_CONTENT_TYPE) {
        let events = CloudEvent::from_batch(&body).map_err(invalid_event)?;
        if events.is_empty() {
            return Err(ApiError::bad_request(
                "invalid_event",
                "the batch holds no events",
            ));
        }
        return Ok(events);
    }
    if !headers.contains_key("ce-specversion") {
        return Err(ApiError::bad_request(
            "invalid_event",
            "not a CloudEvent: send ce-specversion, ce-id, ce-source and ce-type headers (binary mode) \
             or a body with Content-Type: application/cloudevents+json (structured mode)",
        ));
    }
    Ok(vec![
        CloudEvent::from_binary(headers, body).map_err(invalid_event)?,
    ])
}

async fn publish(
    State(st): State<AppState>,
    scope: Scope,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let topic = topic_name(&topic)?;
    check_payload(&st, &body)?;
    let batch = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.to_ascii_lowercase().starts_with(BATCH_CONTENT_TYPE));
    let events = read_events(&headers, body)?;
    let key = idempotency_key(&headers)?;
    let ns = scope.ns.clone();
    if !batch {
        let ev = events
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::bad_request("invalid_event", "the request holds no event"))?;
        let a = st.engine.publish(&ns, &topic, ev, key).await?;
        return Ok(accepted(a));
    }
    let mut out = Vec::new();
    for (i, ev) in events.into_iter().enumerate() {
        // Each event of a batch gets its own key: KEY/0, KEY/1, ...
        let k = key.as_ref().map(|k| format!("{k}/{i}"));
        out.push(st.engine.publish(&ns, &topic, ev, k).await?);
    }
    Ok((StatusCode::ACCEPTED, Json(out)).into_response())
}

async fn list_topics(State(st): State<AppState>, scope: Scope) -> Response {
    Json(st.engine.list_topics(&scope.ns.clone())).into_response()
}

async fn create_topic(
    State(st): State<AppState>,
    scope: Scope,
    Path(topic): Path<String>,
) -> Result<Response, ApiError> {
    let topic = topic_name(&topic)?;
    let created = st.engine.create_topic(&scope.ns.clone(), &topic).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(serde_json::json!({"name": topic}))).into_response())
}

async fn delete_topic(
    State(st): State<AppState>,
    scope: Scope,
    Path(topic): Path<String>,
) -> Result<StatusCode, ApiError> {
    let topic = topic_name(&topic)?;
    match st.engine.delete_topic(&scope.ns.clone(), &topic).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e @ wisp_engine::EngineError::TopicNotFound { .. }) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "topic_not_found",
            e.to_string(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `{"name", "function", "kind": "cron"|"topic", ...kind's fields}`; an
/// unknown field is an error naming it.
async fn add_trigger(
    State(st): State<AppState>,
    scope: Scope,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut v: serde_json::Map<String, serde_json::Value> = json_body(&body)?;
    let mut take = |field: &str| match v.remove(field) {
        Some(serde_json::Value::String(s)) => Ok(s),
        _ => Err(ApiError::bad_request(
            "invalid_json",
            format!("invalid request body: \"{field}\" (a string) is required"),
        )),
    };
    let (name, function) = (take("name")?, take("function")?);
    let kind: TriggerKind = serde_json::from_value(serde_json::Value::Object(v))
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid request body: {e}")))?;
    let t = Trigger {
        namespace: scope.ns.clone(),
        name: trigger_name(&name)?,
        function: function_name(&function)?,
        kind,
        created_ms: now_ms(),
    };
    let view = st.engine.add_trigger(t).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn list_triggers(State(st): State<AppState>, scope: Scope) -> Response {
    Json(st.engine.list_triggers(&scope.ns.clone())).into_response()
}

async fn get_trigger(
    State(st): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = trigger_name(&name)?;
    let ns = scope.ns.clone();
    st.engine
        .list_triggers(&ns)
        .into_iter()
        .find(|t| t.trigger.name == name)
        .map(|t| Json(t).into_response())
        .ok_or_else(|| {
            wisp_engine::EngineError::TriggerNotFound {
                namespace: ns,
                name,
            }
            .into()
        })
}

async fn delete_trigger(
    State(st): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = trigger_name(&name)?;
    st.engine.delete_trigger(&scope.ns.clone(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DlqQuery {
    function: Option<String>,
    limit: Option<usize>,
}

async fn list_dlq(
    State(st): State<AppState>,
    scope: Scope,
    Query(q): Query<DlqQuery>,
) -> Result<Response, ApiError> {
    let function = q.function.as_deref().map(function_name).transpose()?;
    let list = st
        .engine
        .dead_letters(
            &scope.ns.clone(),
            function,
            q.limit.unwrap_or(100).min(10_000),
        )
        .await?;
    Ok(Json(list).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    all: bool,
    function: Option<String>,
}

/// The ids and function of a replay or delete request.
type Selection = (Vec<DeliveryId>, Option<FunctionName>);

fn selection(body: &Bytes) -> Result<Selection, ApiError> {
    let req: ReplayRequest = json_body(body)?;
    if req.ids.is_empty() != req.all {
        return Err(ApiError::bad_request(
            "invalid_selection",
            "give either \"ids\": [...] or \"all\": true (optionally with \"function\")",
        ));
    }
    let ids = req
        .ids
        .iter()
        .map(|i| DeliveryId::parse(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
    let function = req.function.as_deref().map(function_name).transpose()?;
    Ok((ids, function))
}

async fn delete_dead_letters(
    State(st): State<AppState>,
    scope: Scope,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (ids, function) = selection(&body)?;
    let n = st
        .engine
        .delete_dead_letters(&scope.ns.clone(), ids, function)
        .await?;
    Ok(Json(serde_json::json!({"deleted": n})).into_response())
}

async fn replay(
    State(st): State<AppState>,
    scope: Scope,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (ids, function) = selection(&body)?;
    let replayed = st.engine.replay(&scope.ns.clone(), ids, function).await?;
    Ok(Json(serde_json::json!({"replayed": replayed})).into_response())
}

async fn replay_one(
    State(st): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id =
        DeliveryId::parse(&id).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
    let replayed = st.engine.replay(&scope.ns.clone(), vec![id], None).await?;
    Ok(Json(serde_json::json!({"replayed": replayed})).into_response())
}

async fn event_status(
    State(st): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let s = st.engine.event_status(&scope.ns.clone(), &id).await?;
    Ok(Json(s).into_response())
}
