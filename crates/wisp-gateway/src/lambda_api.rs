//! The AWS Lambda Invoke API: `POST /2015-03-31/functions/{name}/invocations`,
//! so boto3, the AWS CLI and every AWS SDK invoke Wisp functions with an
//! endpoint URL. Requests are signed with AWS Signature V4 using a
//! Wisp-issued access key (`wisp accesskey create`); a Wisp bearer token
//! works too. Errors have the shape AWS clients parse
//! (`x-amzn-ErrorType` + `{"message"}`).

use crate::AppState;
use crate::sigv4::{self, Received, SigError};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use wisp_core::time::now_ms;
use wisp_core::{FunctionName, Namespace, Outcome, Permission, Source};
use wisp_engine::{Answer, Dispatched, EngineError};

/// The bytes of logs returned with `X-Amz-Log-Type: Tail`, as Lambda does.
const LOG_TAIL: usize = 4096;

fn aws_error(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"Type": "User", "__type": kind, "message": message.into()});
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(kind));
    if matches!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        // The body was left unread: no other request on this connection.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn engine_error(e: EngineError) -> Response {
    let msg = e.to_string();
    match e {
        EngineError::FunctionNotFound { .. } => {
            aws_error(StatusCode::NOT_FOUND, "ResourceNotFoundException", msg)
        }
        EngineError::NodeBusy { .. } => {
            aws_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", msg)
        }
        EngineError::OverLimit(_) => aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            msg,
        ),
        EngineError::Throttled { .. }
        | EngineError::NamespaceThrottled { .. }
        | EngineError::QueueFull(_) => aws_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            msg,
        ),
        _ => aws_error(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", msg),
    }
}

/// `name`, `name:qualifier`, `ACCOUNT:function:name[:qualifier]` or
/// `arn:aws:lambda:REGION:ACCOUNT:function:name[:qualifier]`.
fn function_and_qualifier(given: &str) -> (String, Option<String>) {
    let parts: Vec<&str> = given.split(':').collect();
    let after_function = parts
        .iter()
        .position(|p| *p == "function")
        .map(|i| &parts[i + 1..])
        .unwrap_or(&parts[..]);
    match after_function {
        [name] => (name.to_string(), None),
        [name, qualifier, ..] => (name.to_string(), Some(qualifier.to_string())),
        [] => (String::new(), None),
    }
}

/// A refusal: status, AWS error type, message.
type Refusal = (StatusCode, &'static str, String);

/// Who is calling: the namespace to act in, or the refusal.
fn authenticate(
    st: &AppState,
    method: &str,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Namespace, Refusal> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (ns, role) = if auth.starts_with(sigv4::ALGORITHM) {
        let r = Received {
            method,
            raw_path: uri.path(),
            raw_query: uri.query().unwrap_or(""),
            headers,
            body,
        };
        let mut found = None;
        let verified = sigv4::verify(auth, &r, now_ms() / 1000, |id| {
            st.gate.access_key(id).map(|(k, secret)| {
                found = Some(k);
                secret
            })
        });
        match (verified, found) {
            (Ok(_), Some(k)) => (k.namespace, k.role),
            (Err(SigError::UnknownKey(m)), _) => {
                return Err((
                    StatusCode::FORBIDDEN,
                    "UnrecognizedClientException",
                    SigError::UnknownKey(m).to_string(),
                ));
            }
            (Err(e @ SigError::Malformed(_)), _) => {
                return Err((
                    StatusCode::FORBIDDEN,
                    "IncompleteSignatureException",
                    e.to_string(),
                ));
            }
            (Err(e), _) => {
                return Err((
                    StatusCode::FORBIDDEN,
                    "InvalidSignatureException",
                    e.to_string(),
                ));
            }
            (Ok(_), None) => {
                return Err((
                    StatusCode::FORBIDDEN,
                    "UnrecognizedClientException",
                    "unknown access key".to_string(),
                ));
            }
        }
    } else if let Some(token) = auth.strip_prefix("Bearer ") {
        let Some((_, bound, role)) = st.gate.tenancy.identify(token.trim()) else {
            return Err((
                StatusCode::FORBIDDEN,
                "UnrecognizedClientException",
                "the bearer token is not valid for this node".to_string(),
            ));
        };
        let asked = headers
            .get(crate::tenancy::NAMESPACE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(Namespace::new)
            .transpose()
            .map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterValueException",
                    e.to_string(),
                )
            })?;
        let ns = match (bound, asked) {
            (Some(b), Some(a)) if b != a => {
                return Err((
                    StatusCode::FORBIDDEN,
                    "AccessDeniedException",
                    format!("this token belongs to namespace {b:?}, not {a:?}"),
                ));
            }
            (Some(b), _) => b,
            (None, Some(a)) => a,
            (None, None) => Namespace::default(),
        };
        (ns, role)
    } else {
        return Err((
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "missing authentication: sign the request with AWS Signature V4 using an access key from `wisp accesskey create`, or send a Wisp bearer token".to_string(),
        ));
    };
    if !role.allows(Permission::Invoke) {
        return Err((
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            format!("a {role} key may not invoke functions"),
        ));
    }
    Ok(ns)
}

fn qualifier_query(uri: &http::Uri) -> Option<String> {
    uri.query()?
        .split('&')
        .find_map(|p| p.strip_prefix("Qualifier="))
        .map(|v| wisp_core::time::percent_decode(v, false))
}

pub async fn invoke(
    State(st): State<AppState>,
    Path(given): Path<String>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match crate::invoke::read_body(
        body,
        &parts.headers,
        st.config.max_payload_bytes,
        st.config.body_timeout,
    )
    .await
    {
        Ok(b) => b,
        Err(e) if e.status == StatusCode::PAYLOAD_TOO_LARGE => {
            return aws_error(e.status, "RequestTooLargeException", e.message);
        }
        Err(e) => return aws_error(e.status, "InvalidRequestContentException", e.message),
    };
    let ns = match authenticate(
        &st,
        parts.method.as_str(),
        &parts.uri,
        &parts.headers,
        &body,
    ) {
        Ok(ns) => ns,
        Err((status, kind, msg)) => return aws_error(status, kind, msg),
    };
    let (name, in_name) = function_and_qualifier(&given);
    let name = match FunctionName::new(name) {
        Ok(n) => n,
        Err(e) => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                e.to_string(),
            );
        }
    };
    let record = match st.engine.get_function(&ns, &name).await {
        Ok(r) => r,
        Err(e) => return engine_error(e),
    };
    if let Some(q) = qualifier_query(&parts.uri).or(in_name)
        && q != "$LATEST"
        && q != record.version.to_string()
    {
        return aws_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!(
                "function {name:?} has no version or alias {q:?}: its current version is {} ($LATEST)",
                record.version
            ),
        );
    }
    let kind = parts
        .headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse");
    match kind {
        "DryRun" => StatusCode::NO_CONTENT.into_response(),
        "Event" => {
            let ct = Some("application/json".to_string());
            match st.engine.invoke_async(&ns, &name, body, ct, None).await {
                Ok(a) => {
                    let mut resp = StatusCode::ACCEPTED.into_response();
                    if let Ok(v) = HeaderValue::from_str(&a.event_id) {
                        resp.headers_mut().insert("x-amzn-requestid", v);
                    }
                    resp
                }
                Err(e) => engine_error(e),
            }
        }
        "RequestResponse" => request_response(&st, &ns, &name, &parts.headers, body).await,
        other => aws_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            format!("X-Amz-Invocation-Type {other:?} is not RequestResponse, Event or DryRun"),
        ),
    }
}

async fn request_response(
    st: &AppState,
    ns: &Namespace,
    name: &FunctionName,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let req = http::Request::builder()
        .method("POST")
        .uri("/")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(http_body_util::BodyExt::map_err(
            http_body_util::Full::new(body),
            |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
        ));
    let mut req = match req {
        Ok(r) => r,
        Err(e) => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                e.to_string(),
            );
        }
    };
    // Built from the payload alone, so no client header is in it; stripped
    // anyway, as on every path into a function.
    wisp_core::headers::strip_wisp_headers(req.headers_mut());
    let limit = st.config.max_payload_bytes;
    let answer = Answer::Collect {
        keep: limit,
        logs: true,
        event: None,
    };
    let c = match st
        .engine
        .invoke(ns, name, Source::Lambda, req, answer)
        .await
        .and_then(Dispatched::into_collected)
    {
        Ok(c) => c,
        Err(e) => return engine_error(e),
    };
    // Unhandled: the function did not answer (trap, timeout, memory
    // limit). Handled: it answered with an error status; its body is the
    // payload.
    let unhandled = matches!(c.outcome, Outcome::Timeout | Outcome::MemoryLimit)
        || (c.outcome == Outcome::Error && c.error.is_some());
    let runtime_error = serde_json::from_slice::<serde_json::Value>(&c.body)
        .ok()
        .is_some_and(|v| v.get("errorMessage").is_some());
    let (body, function_error) = if unhandled && runtime_error {
        // A process function's runtime reported the error: pass it on as is.
        (c.body, Some("Unhandled"))
    } else if unhandled {
        let msg = c
            .error
            .clone()
            .unwrap_or_else(|| c.outcome.as_str().to_string());
        let err = serde_json::json!({"errorMessage": msg, "errorType": c.outcome.as_str()});
        (err.to_string().into_bytes(), Some("Unhandled"))
    } else if c.status >= 400 {
        (c.body, Some("Handled"))
    } else {
        (c.body, None)
    };
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-amz-executed-version", HeaderValue::from(c.version));
    if let Ok(v) = HeaderValue::from_str(c.activation_id.as_str()) {
        h.insert("x-amzn-requestid", v.clone());
        h.insert("x-wisp-activation-id", v);
    }
    if let Some(fe) = function_error {
        h.insert("x-amz-function-error", HeaderValue::from_static(fe));
    }
    let tail = headers
        .get("x-amz-log-type")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tail"));
    if tail {
        let logs = c.logs.as_bytes();
        let mut start = logs.len().saturating_sub(LOG_TAIL);
        while start < logs.len() && (logs[start] & 0xC0) == 0x80 {
            start += 1; // not in the middle of a UTF-8 character
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(&logs[start..]);
        if let Ok(v) = HeaderValue::from_str(&b64) {
            h.insert("x-amz-log-result", v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_arns_and_qualifiers() {
        let f = |s: &str| function_and_qualifier(s);
        assert_eq!(f("thumbs"), ("thumbs".into(), None));
        assert_eq!(f("thumbs:3"), ("thumbs".into(), Some("3".into())));
        assert_eq!(
            f("arn:aws:lambda:us-east-1:123456789012:function:thumbs"),
            ("thumbs".into(), None)
        );
        assert_eq!(
            f("arn:aws:lambda:us-east-1:123456789012:function:thumbs:$LATEST"),
            ("thumbs".into(), Some("$LATEST".into()))
        );
        assert_eq!(f("123456789012:function:thumbs"), ("thumbs".into(), None));
    }
}
