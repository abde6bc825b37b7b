//! `/fn/{name}/…`: pass the request to the function and stream its response.

use crate::AppState;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use wisp_core::{FunctionName, Namespace, Source};
use wisp_engine::Answer;

/// `GET /metrics`: any valid bearer token. The node's admin token sees
/// every series; a namespace's token only the series labelled with its
/// namespace (`namespace="…"`), so no tenant learns another's functions.
pub async fn metrics(State(st): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some((_, bound, _)) = given.and_then(|t| st.gate.tenancy.identify(t)) else {
        let msg = match given {
            None => {
                "/metrics needs `Authorization: Bearer <token>`: the admin token (all namespaces) or any token of a namespace (its series only; `wisp token create --role reader`)"
            }
            Some(_) => "the bearer token is not valid for this node (it may have been revoked)",
        };
        let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg).into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    let mut text = wisp_core::metrics::encode(&st.metrics);
    if let Some(ns) = bound {
        text = only_namespace(&text, &ns);
    }
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// The metrics text with only the samples labelled `namespace="{ns}"`
/// (comments kept).
fn only_namespace(text: &str, ns: &Namespace) -> String {
    let label = format!("namespace=\"{ns}\"");
    let mut out = String::with_capacity(text.len() / 2);
    for line in text.lines() {
        let keep = line.starts_with('#')
            || line
                .split_once('{')
                .and_then(|(_, rest)| rest.rsplit_once('}'))
                .is_some_and(|(labels, _)| labels.split(',').any(|l| l.trim() == label));
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

pub async fn fn_root(
    State(st): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    forward(st, &name, "", req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn fn_path(
    State(st): State<AppState>,
    Path((name, rest)): Path<(String, String)>,
    req: Request,
) -> Response {
    forward(st, &name, &rest, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub(crate) fn function_name(name: &str) -> Result<FunctionName, ApiError> {
    FunctionName::new(name).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))
}

fn too_large(max: usize, declared: Option<u64>) -> ApiError {
    let size = match declared {
        Some(n) => format!("request body of {n} bytes"),
        None => "request body".to_string(),
    };
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("{size} exceeds the limit of {max} bytes (wisp serve --max-payload)"),
    )
}

/// Reads an invocation's request body whole, before the function gets an
/// instance: a body over `max` bytes (declared or streamed, chunked or
/// not) is 413, one that does not arrive within `timeout` is 408, and
/// neither takes a slot nor is billed.
pub(crate) async fn read_body(
    body: Body,
    headers: &axum::http::HeaderMap,
    max: usize,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max, declared));
    }
    match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(max, None)),
        Ok(Err(e)) => Err(ApiError::bad_request(
            "body_read_failed",
            format!("reading the request body failed: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} (wisp serve --body-timeout); send it at once",
                humantime::format_duration(timeout)
            ),
        )),
    }
}

/// The tail of the raw (still percent-encoded) `path` that decodes to
/// `rest`: the function sees the path as the client sent it (`%20` stays
/// `%20`), as under `wasmtime serve`.
fn raw_rest(path: &str, rest: &str) -> String {
    if rest.is_empty() {
        return String::new();
    }
    let segs: Vec<&str> = path.split('/').collect();
    for k in 1..segs.len() {
        let tail = segs[segs.len() - k..].join("/");
        if wisp_core::time::percent_decode(&tail, false) == rest {
            return tail;
        }
    }
    // Not found (should not happen): encode what must be encoded.
    let mut out = String::with_capacity(rest.len());
    for b in rest.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'%' | b'?' | b'#') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Rewrites the request so the function sees `/{rest}?{query}`.
pub(crate) async fn invoke_with_path(
    st: &AppState,
    ns: &Namespace,
    name: &FunctionName,
    rest: &str,
    req: Request,
    source: Source,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    // Direct URLs set no `x-wisp-*` headers: none a client sends get through.
    wisp_core::headers::strip_wisp_headers(&mut parts.headers);
    let raw = raw_rest(parts.uri.path(), rest);
    let pq = match parts.uri.query() {
        Some(q) => format!("/{raw}?{q}"),
        None => format!("/{raw}"),
    };
    parts.uri = pq.parse().map_err(|e| {
        ApiError::bad_request("invalid_path", format!("invalid request path {pq:?}: {e}"))
    })?;
    call(st, ns, name, Request::from_parts(parts, body), source).await
}

/// Invokes the function with the request as it is (size-limited body).
pub(crate) async fn call(
    st: &AppState,
    ns: &Namespace,
    name: &FunctionName,
    req: Request,
    source: Source,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let body = read_body(
        body,
        &parts.headers,
        st.config.max_payload_bytes,
        st.config.body_timeout,
    )
    .await?;
    let body = http_body_util::Full::new(body)
        .map_err(|never| -> wasmtime_wasi_http::Error { match never {} });
    if !parts.headers.contains_key(header::HOST) {
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_static("localhost"));
    }
    let req = http::Request::from_parts(parts, body);
    let public = source.is_public();
    let resp = st
        .engine
        .invoke(ns, name, source, req, Answer::Stream)
        .await?
        .into_response()?;
    // Callers of user routes and direct URLs may be anyone: they learn that
    // the function failed, not how (management callers of `/v1/…/invoke`
    // see the executor's answer, as the namespace's own).
    if public && let Some(wisp_core::HostAnswered(outcome)) = resp.extensions().get().copied() {
        let id = resp.extensions().get::<wisp_core::ActivationId>().cloned();
        return Ok(failure_page(resp.status(), id, outcome));
    }
    let mut resp = resp.map(Body::new);
    resp.extensions_mut().insert(crate::error::FunctionAnswer);
    Ok(resp)
}

/// What an anonymous caller sees when the function gave no answer: the
/// status the executor chose, the activation and its outcome; never the
/// function's error text or backtrace (they are in the activation).
fn failure_page(
    status: StatusCode,
    activation: Option<wisp_core::ActivationId>,
    outcome: wisp_core::Outcome,
) -> Response {
    let id = activation.as_ref().map_or("unknown", |a| a.as_str());
    let mut r = ApiError::new(
        status,
        "function_failed",
        format!(
            "function failed (activation {id}, outcome {}); see `wisp activation {id}` for its error and logs",
            outcome.as_str()
        ),
    )
    .into_response();
    if let Some(a) = activation {
        if let Ok(v) = HeaderValue::from_str(a.as_str()) {
            r.headers_mut().insert(ACTIVATION_HEADER, v);
        }
        r.extensions_mut().insert(a);
    }
    r
}

const ACTIVATION_HEADER: &str = "x-wisp-activation-id";

async fn forward(st: AppState, name: &str, rest: &str, req: Request) -> Result<Response, ApiError> {
    let name = function_name(name)?;
    direct(&st, &Namespace::default(), &name, rest, req).await
}

/// A direct URL: only for functions that did not turn it off.
async fn direct(
    st: &AppState,
    ns: &Namespace,
    name: &FunctionName,
    rest: &str,
    req: Request,
) -> Result<Response, ApiError> {
    if !st.engine.direct_url(ns, name)? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "direct_url_disabled",
            format!(
                "function {name:?} is deployed with --no-direct-url: call it through its routes (wisp route ls)"
            ),
        ));
    }
    invoke_with_path(st, ns, name, rest, req, Source::direct_url()).await
}

fn namespace(ns: &str) -> Result<Namespace, ApiError> {
    Namespace::new(ns).map_err(|e| ApiError::bad_request("invalid_namespace", e.to_string()))
}

/// `/ns/{ns}/fn/{name}/…`: a function of any namespace.
pub async fn ns_fn_root(
    State(st): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    let run = async {
        let (ns, name) = (namespace(&ns)?, function_name(&name)?);
        direct(&st, &ns, &name, "", req).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn ns_fn_path(
    State(st): State<AppState>,
    Path((ns, name, rest)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let run = async {
        let (ns, name) = (namespace(&ns)?, function_name(&name)?);
        direct(&st, &ns, &name, &rest, req).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_sees_only_its_series() {
        let text = "# HELP x X.\n# TYPE x counter\nx{namespace=\"a\",function=\"f\"} 1\nx{function=\"g\",namespace=\"b\"} 2\nx{namespace=\"ab\"} 3\nwisp_in_flight 4\n";
        let a = only_namespace(text, &Namespace::new("a").unwrap());
        assert_eq!(
            a,
            "# HELP x X.\n# TYPE x counter\nx{namespace=\"a\",function=\"f\"} 1\n"
        );
        let b = only_namespace(text, &Namespace::new("b").unwrap());
        assert!(
            b.contains("function=\"g\"") && !b.contains("\"f\"") && !b.contains("wisp_in_flight")
        );
    }
}
