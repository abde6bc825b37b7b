//! Management API for tenancy and the gateway: namespaces, tokens, routes,
//! API keys, secrets, the audit log, the access log and gateway usage.
//! Documented in `docs/api.md`.

use crate::AppState;
use crate::api::{json_body, parse_since};
use crate::error::ApiError;
use crate::gate::blocking;
use crate::tenancy::Scope;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use wisp_core::time::now_ms;
use wisp_core::{
    AccessFilter, Namespace, Quota, Rate, Role, RouteSpec, UsageBy, tenancy::check_secret_name,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/namespaces", get(list_namespaces).post(create_namespace))
        .route(
            "/namespaces/{name}",
            delete(delete_namespace).patch(update_namespace),
        )
        .route("/namespaces/{name}/domains", get(list_domains))
        .route(
            "/namespaces/{name}/domains/{host}",
            put(add_domain).delete(remove_domain),
        )
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}", delete(delete_token))
        .route("/routes", get(list_routes).post(add_route))
        .route("/routes/{id}", get(get_route).delete(delete_route))
        .route("/apikeys", get(list_keys).post(create_key))
        .route("/apikeys/{name}", delete(delete_key))
        .route("/secrets", get(list_secrets))
        .route(
            "/secrets/{name}",
            put(put_secret).get(get_secret).delete(delete_secret),
        )
        .route("/accesskeys", get(list_access_keys).post(create_access_key))
        .route("/accesskeys/{id}", delete(delete_access_key))
        .route("/audit", get(audit))
        .route("/access-log", get(access_log))
}

fn invalid(code: &'static str) -> impl Fn(wisp_core::TenancyError) -> ApiError {
    move |e| ApiError::bad_request(code, e.to_string())
}

fn not_found(code: &'static str, msg: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, code, msg)
}

// ---- namespaces ----

async fn list_namespaces(State(st): State<AppState>, scope: Scope) -> Result<Response, ApiError> {
    let store = st.gate.store.clone();
    let all = blocking(move || store.list_namespaces()).await?;
    let list: Vec<_> = all
        .into_iter()
        .filter(|(n, _)| scope.node_admin || *n == scope.ns)
        .map(|(n, t)| {
            let limits = st.engine.namespace_limits(&n);
            json!({"name": n, "created_ms": t, "shared_routes": st.gate.shares_routes(&n), "domains": st.gate.domains_of(&n), "limits": limits})
        })
        .collect();
    Ok(Json(list).into_response())
}

fn node_admin_only(scope: &Scope, what: &str) -> Result<(), ApiError> {
    if scope.node_admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("only the node's admin token may {what}"),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceRequest {
    name: String,
    /// May it add routes without a host (the shared host-less space)?
    #[serde(default)]
    shared_routes: bool,
    #[serde(default)]
    max_concurrency: Option<u32>,
    #[serde(default)]
    max_instances: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceUpdate {
    #[serde(default)]
    shared_routes: Option<bool>,
    #[serde(default)]
    max_concurrency: Option<u32>,
    #[serde(default)]
    max_instances: Option<u32>,
}

/// The namespace in the path, which must exist.
fn existing_ns(st: &AppState, name: String) -> Result<Namespace, ApiError> {
    let ns = Namespace::new(name)
        .map_err(|e| ApiError::bad_request("invalid_namespace", e.to_string()))?;
    if !st.gate.tenancy.exists(&ns) {
        return Err(not_found(
            "namespace_not_found",
            format!("namespace {ns:?} does not exist (wisp ns ls lists namespaces)"),
        ));
    }
    Ok(ns)
}

async fn update_namespace(
    State(st): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    node_admin_only(&scope, "change namespaces")?;
    let ns = existing_ns(&st, name)?;
    let req: NamespaceUpdate = json_body(&body)?;
    let limits = wisp_core::NamespaceLimits {
        max_concurrency: req.max_concurrency,
        max_instances: req.max_instances,
    };
    limits.validate().map_err(invalid("invalid_limits"))?;
    let limits = if limits != wisp_core::NamespaceLimits::default() {
        st.engine.set_namespace_limits(&ns, limits).await?
    } else {
        st.engine.namespace_limits(&ns)
    };
    if let Some(allowed) = req.shared_routes {
        st.gate.set_shared_routes(&ns, allowed).await?;
    }
    Ok(Json(json!({"name": ns, "shared_routes": st.gate.shares_routes(&ns), "domains": st.gate.domains_of(&ns), "limits": limits})).into_response())
}

async fn list_domains(
    State(st): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    node_admin_only(&scope, "list the hosts of namespaces")?;
    let ns = existing_ns(&st, name)?;
    Ok(Json(st.gate.domains_of(&ns)).into_response())
}

async fn add_domain(
    State(st): State<AppState>,
    scope: Scope,
    Path((name, host)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    node_admin_only(&scope, "assign hosts to namespaces")?;
    let ns = existing_ns(&st, name)?;
    let host = wisp_core::normalize_host(&host).map_err(invalid("invalid_host"))?;
    let added = st.gate.add_domain(&ns, &host).await?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"namespace": ns, "host": host, "added": added})),
    )
        .into_response())
}

async fn remove_domain(
    State(st): State<AppState>,
    scope: Scope,
    Path((name, host)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    node_admin_only(&scope, "take hosts from namespaces")?;
    let ns = existing_ns(&st, name)?;
    let host = wisp_core::normalize_host(&host).map_err(invalid("invalid_host"))?;
    if st.gate.remove_domain(&ns, &host).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(
            "host_not_found",
            format!("host {host:?} is not assigned to namespace {ns:?} (wisp ns domain ls {ns})"),
        ))
    }
}

async fn create_namespace(
    State(st): State<AppState>,
    scope: Scope,
    body: Bytes,
) -> Result<Response, ApiError> {
    node_admin_only(&scope, "create namespaces")?;
    let req: NamespaceRequest = json_body(&body)?;
    let ns = Namespace::new(req.name)
        .map_err(|e| ApiError::bad_request("invalid_namespace", e.to_string()))?;
    let limits = wisp_core::NamespaceLimits {
        max_concurrency: req.max_concurrency,
        max_instances: req.max_instances,
    };
    limits.validate().map_err(invalid("invalid_limits"))?;
    let created = st.gate.create_namespace(&ns).await?;
    if req.shared_routes {
        st.gate.set_shared_routes(&ns, true).await?;
    }
    let limits = if created || limits != wisp_core::NamespaceLimits::default() {
        st.engine.set_namespace_limits(&ns, limits).await?
    } else {
        st.engine.namespace_limits(&ns)
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"name": ns, "created": created, "limits": limits})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteNamespaceQuery {
    #[serde(default)]
    force: bool,
}

async fn delete_namespace(
    State(st): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
    Query(q): Query<DeleteNamespaceQuery>,
) -> Result<Response, ApiError> {
    node_admin_only(&scope, "delete namespaces")?;
    let ns = Namespace::new(name)
        .map_err(|e| ApiError::bad_request("invalid_namespace", e.to_string()))?;
    if ns == Namespace::default() {
        return Err(ApiError::bad_request(
            "invalid_namespace",
            "the default namespace always exists and cannot be deleted",
        ));
    }
    if !st.gate.tenancy.exists(&ns) {
        return Err(not_found(
            "namespace_not_found",
            format!("namespace {ns:?} does not exist (wisp ns ls lists namespaces)"),
        ));
    }
    if !q.force {
        let mut held = st.engine.holdings(&ns).await?.describe();
        let count = |n: usize, what: &str| {
            (n > 0).then(|| format!("{n} {what}{}", if n == 1 { "" } else { "s" }))
        };
        held.extend(count(st.gate.list_routes(&ns).len(), "route"));
        held.extend(count(st.gate.list_keys(&ns).len(), "API key"));
        held.extend(count(st.gate.list_tokens(&ns).await?.len(), "token"));
        held.extend(count(st.gate.list_access_keys(&ns).len(), "access key"));
        held.extend(count(st.gate.domains_of(&ns).len(), "host"));
        if !held.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "namespace_not_empty",
                format!(
                    "namespace {ns:?} still holds {}: remove them first, or delete it with everything in it (`wisp ns rm {ns} --force`, which cannot be undone)",
                    held.join(", ")
                ),
            ));
        }
    }
    // Everything of it, then the namespace with its tokens, keys, secrets,
    // routes, hosts and logs.
    st.engine.purge_namespace(&ns).await?;
    st.gate.delete_namespace(&ns).await?;
    st.engine.forget_namespace_limits(&ns);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- tokens ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    role: String,
    name: Option<String>,
}

async fn create_token(
    State(st): State<AppState>,
    scope: Scope,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: TokenRequest = json_body(&body)?;
    let role = Role::parse(&req.role).map_err(invalid("invalid_role"))?;
    if let Some(n) = &req.name {
        wisp_core::tenancy::check_key_name(n)
            .map_err(|e| ApiError::bad_request("invalid_name", format!("token {e}")))?;
    }
    let t = st.gate.create_token(&scope.ns, role, req.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": t.secret, "id": t.record.id, "namespace": t.record.namespace, "role": role, "name": t.record.name, "created_ms": t.record.created_ms})),
    )
        .into_response())
}

async fn list_tokens(State(st): State<AppState>, scope: Scope) -> Result<Response, ApiError> {
    Ok(Json(st.gate.list_tokens(&scope.ns).await?).into_response())
}

async fn delete_token(
    State(st): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if st.gate.delete_token(&scope.ns, &id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(
            "token_not_found",
            format!(
                "token {id:?} not found in namespace {:?} (wisp token ls lists them)",
                scope.ns
            ),
        ))
    }
}

// ---- access keys (Lambda Invoke API, SigV4) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessKeyRequest {
    #[serde(default = "invoker")]
    role: String,
    name: Option<String>,
}

fn invoker() -> String {
    "invoker".into()
}

async fn create_access_key(
    State(st): State<AppState>,
    scope: Scope,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: AccessKeyRequest = json_body(&body)?;
    let role = Role::parse(&req.role).map_err(invalid("invalid_role"))?;
    if let Some(n) = &req.name {
        wisp_core::tenancy::check_key_name(n)
            .map_err(|e| ApiError::bad_request("invalid_name", format!("access key {e}")))?;
    }
    let k = st.gate.create_access_key(&scope.ns, role, req.name).await?;
    let mut v = serde_json::to_value(&k.record).unwrap_or_default();
    v["secret_access_key"] = json!(k.secret);
    // Where the key is used: the S3 API and the Lambda Invoke API listen
    // on different addresses.
    v["endpoints"] = json!({"s3": st.config.s3_url, "lambda": st.config.public_url});
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn list_access_keys(State(st): State<AppState>, scope: Scope) -> Response {
    Json(st.gate.list_access_keys(&scope.ns)).into_response()
}

async fn delete_access_key(
    State(st): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if st.gate.delete_access_key(&scope.ns, &id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(
            "accesskey_not_found",
            format!(
                "access key {id:?} not found in namespace {:?} (wisp accesskey ls lists them)",
                scope.ns
            ),
        ))
    }
}

// ---- routes ----

async fn add_route(
    State(st): State<AppState>,
    scope: Scope,
    body: Bytes,
) -> Result<Response, ApiError> {
    let spec: RouteSpec = json_body(&body)?;
    st.engine.get_function(&scope.ns, &spec.function).await?;
    let r = st.gate.add_route(&scope.ns, spec).await?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

async fn list_routes(State(st): State<AppState>, scope: Scope) -> Response {
    Json(st.gate.list_routes(&scope.ns)).into_response()
}

async fn get_route(
    State(st): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    st.gate
        .list_routes(&scope.ns)
        .into_iter()
        .find(|r| r.id == id)
        .map(|r| Json(r).into_response())
        .ok_or_else(|| route_not_found(&scope, &id))
}

fn route_not_found(scope: &Scope, id: &str) -> ApiError {
    not_found(
        "route_not_found",
        format!(
            "route {id:?} not found in namespace {:?} (wisp route ls lists routes)",
            scope.ns
        ),
    )
}

async fn delete_route(
    State(st): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if st.gate.delete_route(&scope.ns, &id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(route_not_found(&scope, &id))
    }
}

// ---- API keys ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    name: String,
    rate: Option<String>,
    quota: Option<String>,
}

async fn create_key(
    State(st): State<AppState>,
    scope: Scope,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: KeyRequest = json_body(&body)?;
    let rate = req
        .rate
        .as_deref()
        .map(Rate::parse)
        .transpose()
        .map_err(invalid("invalid_rate"))?;
    let quota = req
        .quota
        .as_deref()
        .map(Quota::parse)
        .transpose()
        .map_err(invalid("invalid_quota"))?;
    let k = st.gate.create_key(&scope.ns, req.name, rate, quota).await?;
    let mut v = serde_json::to_value(&k.record).unwrap_or_default();
    v["key"] = json!(k.secret);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn list_keys(State(st): State<AppState>, scope: Scope) -> Response {
    let list: Vec<_> = st
        .gate
        .list_keys(&scope.ns)
        .into_iter()
        .map(|(k, used)| {
            let mut v = serde_json::to_value(&k).unwrap_or_default();
            if let Some(u) = used {
                v["quota_used"] = json!(u);
            }
            v
        })
        .collect();
    Json(list).into_response()
}

async fn delete_key(
    State(st): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if st.gate.delete_key(&scope.ns, &name).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(
            "apikey_not_found",
            format!(
                "API key {name:?} not found in namespace {:?} (wisp apikey ls lists them)",
                scope.ns
            ),
        ))
    }
}

// ---- secrets ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRequest {
    value: String,
}

fn secret_name(name: &str) -> Result<(), ApiError> {
    check_secret_name(name).map_err(invalid("invalid_secret_name"))
}

async fn put_secret(
    State(st): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    secret_name(&name)?;
    // Never echo the body in an error: it holds the secret.
    let req: SecretRequest = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request(
            "invalid_json",
            "the request body must be a JSON object {\"value\": \"...\"}",
        )
    })?;
    st.engine.put_secret(&scope.ns, &name, req.value).await?;
    st.gate.refresh_secret(&scope.ns, &name).await?;
    Ok((
        StatusCode::OK,
        Json(json!({"namespace": scope.ns, "name": name, "updated_ms": now_ms()})),
    )
        .into_response())
}

async fn list_secrets(State(st): State<AppState>, scope: Scope) -> Result<Response, ApiError> {
    Ok(Json(st.engine.list_secrets(&scope.ns).await?).into_response())
}

async fn get_secret(
    State(st): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    secret_name(&name)?;
    st.engine
        .list_secrets(&scope.ns)
        .await?
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| Json(s).into_response())
        .ok_or_else(|| secret_not_found(&scope, &name))
}

fn secret_not_found(scope: &Scope, name: &str) -> ApiError {
    not_found(
        "secret_not_found",
        format!(
            "secret {name:?} not found in namespace {:?} (wisp secret ls lists them)",
            scope.ns
        ),
    )
}

async fn delete_secret(
    State(st): State<AppState>,
    scope: Scope,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    secret_name(&name)?;
    let deleted = st.engine.delete_secret(&scope.ns, &name).await?;
    st.gate.refresh_secret(&scope.ns, &name).await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(secret_not_found(&scope, &name))
    }
}

// ---- logs ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    since: Option<String>,
    limit: Option<usize>,
}

async fn audit(
    State(st): State<AppState>,
    scope: Scope,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let since = q
        .since
        .as_deref()
        .map(parse_since)
        .transpose()?
        .unwrap_or(0);
    let limit = q.limit.unwrap_or(100).min(10_000);
    let store = st.gate.store.clone();
    let ns = scope.ns.clone();
    let list = blocking(move || store.list_audit(&ns, since, limit)).await?;
    Ok(Json(list).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessQuery {
    route: Option<String>,
    key: Option<String>,
    /// `404`, `4xx`, `5xx`
    status: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

fn status_range(s: &str) -> Result<(u16, u16), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_status",
            format!("status={s:?} is not a status like 404 or a class like 4xx or 5xx"),
        )
    };
    if let Some(c) = s.strip_suffix("xx") {
        let c: u16 = c.parse().map_err(|_| bad())?;
        if !(1..=5).contains(&c) {
            return Err(bad());
        }
        return Ok((c * 100, c * 100 + 99));
    }
    let n: u16 = s.parse().map_err(|_| bad())?;
    if !(100..=599).contains(&n) {
        return Err(bad());
    }
    Ok((n, n))
}

async fn access_log(
    State(st): State<AppState>,
    scope: Scope,
    Query(q): Query<AccessQuery>,
) -> Result<Response, ApiError> {
    let filter = AccessFilter {
        namespace: scope.ns.clone(),
        route: q.route,
        key: q.key,
        status: q.status.as_deref().map(status_range).transpose()?,
        since_ms: q
            .since
            .as_deref()
            .map(parse_since)
            .transpose()?
            .unwrap_or(0),
        limit: q.limit.unwrap_or(100).min(10_000),
    };
    let store = st.gate.access_store.clone();
    let list = blocking(move || store.list_access(&filter)).await?;
    Ok(Json(list).into_response())
}

/// `GET /v1/usage?by=route|key|function`: gateway traffic, grouped.
pub(crate) async fn gateway_usage(
    st: &AppState,
    ns: &Namespace,
    by: &str,
    since_ms: i64,
) -> Result<Response, ApiError> {
    let by = match by {
        "route" => UsageBy::Route,
        "key" => UsageBy::Key,
        "function" => UsageBy::Function,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_by",
                format!("by={by:?} is not one of route, key, function"),
            ));
        }
    };
    let store = st.gate.access_store.clone();
    let ns = ns.clone();
    let rows = blocking(move || store.gateway_usage(&ns, by, since_ms)).await?;
    Ok(Json(rows).into_response())
}
