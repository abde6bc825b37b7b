//! Requests on user routes (everything the node does not serve itself):
//! match the route, answer CORS preflights, check the API key, apply rate
//! limits and quotas, invoke the function with the path parameters, add
//! CORS and `RateLimit-*` headers, and log the request once its response
//! body has been sent.

use crate::AppState;
use crate::error::ApiError;
use crate::gate::LiveKey;
use crate::limits::Verdict;
use crate::routes::{LiveRoute, Lookup};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use wisp_core::headers as wisp_headers;
use wisp_core::time::now_ms;
use wisp_core::{AccessEntry, Cors, RouteAuth, Source};

/// The header holding a route's API key.
pub const API_KEY_HEADER: &str = "x-api-key";
const EXPOSE: &str =
    "ratelimit-limit, ratelimit-remaining, ratelimit-reset, retry-after, x-wisp-activation-id";

fn host_of(headers: &HeaderMap) -> Option<String> {
    let h = headers.get(header::HOST)?.to_str().ok()?;
    let h = match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|c| c.is_ascii_digit()) => name,
        _ => h,
    };
    Some(h.to_ascii_lowercase())
}

fn rate_headers(h: &mut HeaderMap, v: &Verdict) {
    h.insert("ratelimit-limit", HeaderValue::from(v.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(v.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(v.reset_s));
}

fn cors_headers(h: &mut HeaderMap, cors: &Cors, origin: &HeaderValue) {
    let any = cors.origins.iter().any(|o| o == "*") && !cors.credentials;
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        if any {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        },
    );
    if cors.credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The allowed origin, when the route has CORS and the request's origin is
/// on its list.
fn allowed_origin<'a>(
    route: &'a LiveRoute,
    headers: &'a HeaderMap,
) -> Option<(&'a Cors, &'a HeaderValue)> {
    let cors = route.record.spec.cors.as_ref()?;
    let origin = headers.get(header::ORIGIN)?;
    cors.allows(origin.to_str().ok()?).then_some((cors, origin))
}

/// Answers a CORS preflight for the routes at this path.
fn preflight(routes: &[(Option<String>, Arc<LiveRoute>)], headers: &HeaderMap) -> Response {
    let asked = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let route = routes
        .iter()
        .find(|(m, _)| m.as_deref() == Some(asked))
        .or_else(|| routes.iter().find(|(m, _)| m.is_none()));
    let Some((_, route)) = route else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cors_method_not_allowed",
            format!("no route at this path answers {asked}"),
        )
        .into_response();
    };
    let Some((cors, origin)) = allowed_origin(route, headers) else {
        // No CORS headers: the browser refuses the cross-origin call.
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cors_origin_not_allowed",
            format!(
                "origin {:?} may not call {} (the route's --cors list does not include it)",
                headers
                    .get(header::ORIGIN)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
                route.label
            ),
        )
        .into_response();
    };
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    cors_headers(h, cors, origin);
    h.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
    let methods: Vec<&str> = routes
        .iter()
        .map(|(m, _)| m.as_deref().unwrap_or(asked))
        .collect();
    if let Ok(v) = HeaderValue::from_str(&methods.join(", ")) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    let allow_headers = if cors.headers.is_empty() {
        headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned()
    } else {
        HeaderValue::from_str(&cors.headers.join(", ")).ok()
    };
    if let Some(v) = allow_headers {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(cors.max_age_s),
    );
    h.append(
        header::VARY,
        HeaderValue::from_static("Access-Control-Request-Method, Access-Control-Request-Headers"),
    );
    resp
}

/// Everything the access log needs besides the response.
struct Pending {
    st: AppState,
    route: Arc<LiveRoute>,
    key: Option<String>,
    method: String,
    path: String,
    started: Instant,
    time_ms: i64,
    bytes_in: Arc<AtomicU64>,
}

impl Pending {
    fn log(self, status: u16, bytes_out: u64, activation_id: Option<String>) {
        self.route.count(status);
        let r = &self.route.record;
        self.st.gate.access.access(AccessEntry {
            time_ms: self.time_ms,
            namespace: r.namespace.clone(),
            route: self.route.label.clone(),
            method: self.method,
            path: self.path,
            key: self.key,
            function: r.spec.function.to_string(),
            status,
            latency_us: self.started.elapsed().as_micros() as u64,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            activation_id,
        });
    }

    /// Logs an answer the gateway gave itself (401, 403, 429, …).
    fn refuse(self, resp: Response) -> Response {
        self.log(resp.status().as_u16(), 0, None);
        resp
    }
}

/// A response body that logs the request when it has been sent (or the
/// client went away).
struct Metered {
    inner: Body,
    bytes: u64,
    done: Option<(Pending, u16, Option<String>)>,
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = axum::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &polled
            && let Some(d) = f.data_ref()
        {
            self.bytes += d.len() as u64;
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        if let Some((p, status, id)) = self.done.take() {
            p.log(status, self.bytes, id);
        }
    }
}

fn refused(code: &'static str, msg: String, v: &Verdict) -> Response {
    let mut resp = ApiError {
        retry_after_s: Some(v.reset_s.max(1)),
        ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, msg)
    }
    .into_response();
    rate_headers(resp.headers_mut(), v);
    resp
}

/// Checks the key's and the route's limits; the tightest admitted verdict
/// goes into the response headers.
fn admit(route: &LiveRoute, key: Option<&LiveKey>) -> Result<Option<Verdict>, Box<Response>> {
    let mut tightest: Option<Verdict> = None;
    let mut keep = |v: Verdict| {
        if tightest.is_none_or(|t| v.remaining < t.remaining) {
            tightest = Some(v);
        }
    };
    if let Some(k) = key {
        if let Some(q) = &k.quota {
            let v = q.check(now_ms());
            if !v.allowed {
                return Err(Box::new(refused(
                    "quota_exceeded",
                    format!(
                        "API key {:?} used its quota of {}; it resets in {} s",
                        k.record.name,
                        k.record.quota.map(|q| q.to_string()).unwrap_or_default(),
                        v.reset_s
                    ),
                    &v,
                )));
            }
            keep(v);
        }
        if let Some(l) = &k.limiter {
            let v = l.check();
            if !v.allowed {
                return Err(Box::new(refused(
                    "rate_limited",
                    format!(
                        "API key {:?} is over its rate limit of {}; retry after {} s",
                        k.record.name,
                        l.rate(),
                        v.reset_s
                    ),
                    &v,
                )));
            }
            keep(v);
        }
    }
    if let Some(l) = &route.limiter {
        let v = l.check();
        if !v.allowed {
            return Err(Box::new(refused(
                "rate_limited",
                format!(
                    "route {} is over its rate limit of {}; retry after {} s",
                    route.label,
                    l.rate(),
                    v.reset_s
                ),
                &v,
            )));
        }
        keep(v);
    }
    Ok(tightest)
}

/// The fallback handler: every request no node endpoint took.
pub async fn serve_route(State(st): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let table = st.gate.routes();
    let host = host_of(req.headers());
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    if req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let routes = table.at(host.as_deref(), &path);
        if routes.is_empty() {
            return not_found(&method, &path);
        }
        return preflight(routes, req.headers());
    }
    let (route, params) = match table.lookup(host.as_deref(), &method, &path) {
        Lookup::Found { route, params } => (route.clone(), params_json(&params)),
        Lookup::MethodNotAllowed(methods) => {
            let mut resp = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{path} answers {} only", methods.join(", ")),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&methods.join(", ")) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            return resp;
        }
        Lookup::NotFound => return not_found(&method, &path),
    };
    let (mut parts, body) = req.into_parts();
    let origin = allowed_origin(&route, &parts.headers).map(|(_, o)| o.clone());
    let bytes_in = Arc::new(AtomicU64::new(0));
    let mut pending = Pending {
        st: st.clone(),
        route: route.clone(),
        key: None,
        method,
        path,
        started,
        time_ms: now_ms(),
        bytes_in: bytes_in.clone(),
    };
    let with_cors = |mut resp: Response| {
        if let (Some(o), Some(c)) = (&origin, &route.record.spec.cors) {
            cors_headers(resp.headers_mut(), c, o);
        }
        resp
    };
    let mut claims = None;
    let key = match route.record.spec.auth {
        RouteAuth::None => None,
        RouteAuth::Jwt => {
            let verdict = match &route.jwt {
                Some(Ok(v)) => {
                    let bearer = parts
                        .headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "));
                    match bearer {
                        None => Err((
                            StatusCode::UNAUTHORIZED,
                            "missing_token",
                            format!(
                                "route {} needs a JWT in `Authorization: Bearer <token>`",
                                route.label
                            ),
                        )),
                        Some(t) => v
                            .verify(t.trim(), now_ms() / 1000)
                            .map_err(|e| (StatusCode::UNAUTHORIZED, "invalid_token", e)),
                    }
                }
                Some(Err(e)) => Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "route_misconfigured",
                    format!("route {} cannot verify tokens: {e}", route.label),
                )),
                None => Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "route_misconfigured",
                    format!("route {} has auth jwt without jwt settings", route.label),
                )),
            };
            match verdict {
                Ok(c) => claims = Some(c),
                Err((status, code, msg)) => {
                    let mut resp = ApiError::new(status, code, msg).into_response();
                    if status == StatusCode::UNAUTHORIZED {
                        resp.headers_mut().insert(
                            header::WWW_AUTHENTICATE,
                            HeaderValue::from_static("Bearer error=\"invalid_token\""),
                        );
                    }
                    return with_cors(pending.refuse(resp));
                }
            }
            None
        }
        RouteAuth::ApiKey => {
            let given = parts
                .headers
                .get(API_KEY_HEADER)
                .and_then(|v| v.to_str().ok());
            let Some(given) = given else {
                return with_cors(
                    pending.refuse(
                        ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "missing_api_key",
                            format!(
                                "route {} needs an API key in the x-api-key header",
                                route.label
                            ),
                        )
                        .into_response(),
                    ),
                );
            };
            match st.gate.key(given) {
                Some(k) if k.record.namespace == route.record.namespace => Some(k),
                _ => {
                    return with_cors(
                        pending.refuse(
                            ApiError::new(
                                StatusCode::FORBIDDEN,
                                "invalid_api_key",
                                "the API key is not valid for this route (unknown or revoked)",
                            )
                            .into_response(),
                        ),
                    );
                }
            }
        }
    };
    pending.key = key.as_ref().map(|k| k.record.name.clone());
    let verdict = match admit(&route, key.as_deref()) {
        Ok(v) => v,
        Err(resp) => return with_cors(pending.refuse(*resp)),
    };
    // The function gets the path parameters and the key's name, never the
    // key; and only the `x-wisp-*` headers Wisp sets, never a client's.
    parts.headers.remove(API_KEY_HEADER);
    wisp_headers::strip_wisp_headers(&mut parts.headers);
    let params = match params {
        None => HeaderValue::from_static("{}"),
        Some(p) => HeaderValue::from_str(&p).unwrap_or(HeaderValue::from_static("{}")),
    };
    parts.headers.insert(wisp_headers::PATH_PARAMS, params);
    if let Some(v) = &route.label_header {
        parts.headers.insert(wisp_headers::ROUTE, v.clone());
    }
    if let Some(v) = key.as_ref().and_then(|k| k.name_header.clone()) {
        parts.headers.insert(wisp_headers::API_KEY_NAME, v);
    }
    // The verified claims, so the function need not parse the token again.
    if let Some(c) = &claims
        && let Ok(v) = HeaderValue::from_str(&c.to_string())
    {
        parts.headers.insert(wisp_headers::JWT_CLAIMS, v);
    }
    let counted = http_body_util::BodyExt::map_frame(body, move |f: Frame<Bytes>| {
        if let Some(d) = f.data_ref() {
            bytes_in.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        f
    });
    let req = Request::from_parts(parts, Body::new(counted));
    let ns = route.record.namespace.clone();
    let function = route.record.spec.function.clone();
    let source = Source::Http {
        route: Some(route.record.spec.path.as_str().into()),
    };
    let resp = match crate::invoke::call(&st, &ns, &function, req, source).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let (mut head, body) = resp.into_parts();
    if let Some(v) = &verdict {
        rate_headers(&mut head.headers, v);
    }
    let activation = head
        .extensions
        .get::<wisp_core::ActivationId>()
        .map(|a| a.to_string());
    let status = head.status.as_u16();
    let metered = Metered {
        inner: body,
        bytes: 0,
        done: Some((pending, status, activation)),
    };
    with_cors(Response::from_parts(head, Body::new(metered)))
}

fn not_found(method: &str, path: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route matches {method} {path} (`wisp route ls` lists routes; functions also answer at /fn/NAME/)"),
    )
    .into_response()
}

/// The path parameters as a JSON object; `None` when there are none.
fn params_json(params: &[(&str, &str)]) -> Option<String> {
    if params.is_empty() {
        return None;
    }
    let map: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    Some(serde_json::Value::Object(map).to_string())
}
