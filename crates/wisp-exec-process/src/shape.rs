//! Event shapes: what a process function receives and how its result
//! becomes an HTTP response.
//!
//! - HTTP requests become API Gateway HTTP API events (payload format 2.0);
//!   the handler's `{statusCode, headers, cookies, body, isBase64Encoded}`
//!   becomes the response (anything else: 200 with the result as JSON), as
//!   API Gateway does — so handlers written for `lambda_http` or Powertools
//!   work unchanged.
//! - Events from triggers (CloudEvents in binary mode) arrive as one
//!   CloudEvent in structured JSON.
//! - Lambda Invoke API payloads pass through as they are.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use wisp_core::time::percent_decode;

/// How a request reaches the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// API Gateway HTTP API (v2.0) event, mapped response.
    ApiGatewayV2,
    /// A CloudEvent in structured JSON; the result is the response body.
    CloudEvent,
    /// The body as it is; the result as it is (Lambda Invoke API).
    Raw,
}

impl Shape {
    pub fn for_request(source: &wisp_core::Source, headers: &http::HeaderMap) -> Self {
        let ce_type = headers.get("ce-type").map(|v| v.as_bytes());
        if *source == wisp_core::Source::Lambda || ce_type == Some(b"dev.wisp.invoke") {
            // Lambda Invoke API payloads and async invocations: as they are.
            Shape::Raw
        } else if headers.contains_key("ce-id") && headers.contains_key("ce-specversion") {
            Shape::CloudEvent
        } else {
            Shape::ApiGatewayV2
        }
    }
}

fn text_or_base64(body: &[u8]) -> (Value, bool) {
    match std::str::from_utf8(body) {
        Ok(s) => (Value::String(s.to_string()), false),
        Err(_) => (Value::String(STANDARD.encode(body)), true),
    }
}

/// The API Gateway v2 event for a request.
pub fn api_gateway_v2(
    parts: &http::request::Parts,
    body: &[u8],
    request_id: &str,
    now_ms: i64,
) -> Bytes {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        if k == http::header::COOKIE {
            cookies.extend(v.split(';').map(|c| Value::String(c.trim().to_string())));
            continue;
        }
        match headers.get_mut(k.as_str()) {
            Some(Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_string(), Value::String(v));
            }
        }
    }
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let mut query = Map::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k, true), percent_decode(v, true));
        match query.get_mut(&k) {
            Some(Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            _ => {
                query.insert(k, Value::String(v));
            }
        }
    }
    let path_params: Value = parts
        .headers
        .get("x-wisp-path-params")
        .and_then(|v| serde_json::from_slice(v.as_bytes()).ok())
        .unwrap_or(Value::Null);
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let (body_v, b64) = text_or_base64(body);
    let mut ev = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.uri.path(),
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "wisp",
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or(host),
            "http": {
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": parts.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or(""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": now_ms,
        },
        "isBase64Encoded": b64,
    });
    if !cookies.is_empty() {
        ev["cookies"] = Value::Array(cookies);
    }
    if !query.is_empty() {
        ev["queryStringParameters"] = Value::Object(query);
    }
    if path_params.is_object() && path_params.as_object().is_some_and(|o| !o.is_empty()) {
        ev["pathParameters"] = path_params;
    }
    if !body.is_empty() {
        ev["body"] = body_v;
    }
    Bytes::from(ev.to_string())
}

/// A CloudEvent in structured JSON from a binary-mode delivery.
pub fn cloud_event(parts: &http::request::Parts, body: &[u8]) -> Bytes {
    let mut ev = Map::new();
    for (k, v) in &parts.headers {
        if let Some(attr) = k.as_str().strip_prefix("ce-") {
            ev.insert(
                attr.to_string(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            );
        }
    }
    let ct = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.is_empty() {
        ev.insert("datacontenttype".into(), Value::String(ct.to_string()));
    }
    let as_json = ct
        .contains("json")
        .then(|| serde_json::from_slice::<Value>(body).ok())
        .flatten();
    match as_json {
        Some(v) => {
            ev.insert("data".into(), v);
        }
        None if body.is_empty() => {}
        None => match std::str::from_utf8(body) {
            Ok(s) => {
                ev.insert("data".into(), Value::String(s.to_string()));
            }
            Err(_) => {
                ev.insert("data_base64".into(), Value::String(STANDARD.encode(body)));
            }
        },
    }
    Bytes::from(Value::Object(ev).to_string())
}

/// An HTTP response from an API Gateway v2 handler result.
pub fn api_gateway_response(result: &[u8]) -> http::Response<Bytes> {
    let parsed: Option<Value> = serde_json::from_slice(result).ok();
    let Some(Value::Object(o)) = parsed.as_ref().filter(|v| v.get("statusCode").is_some()) else {
        // Not a response object: the result itself is the JSON body.
        let mut r = http::Response::new(Bytes::copy_from_slice(result));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return r;
    };
    let status = o
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| http::StatusCode::from_u16(s as u16).ok())
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let body = match o.get("body") {
        Some(Value::String(s))
            if o.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) =>
        {
            Bytes::from(STANDARD.decode(s).unwrap_or_default())
        }
        Some(Value::String(s)) => Bytes::from(s.clone()),
        Some(Value::Null) | None => Bytes::new(),
        Some(other) => Bytes::from(other.to_string()),
    };
    let mut r = http::Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Some(Value::Object(hs)) = o.get("headers") {
        for (k, v) in hs {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(&v),
            ) {
                h.append(k, v);
            }
        }
    }
    if let Some(Value::Array(cs)) = o.get("cookies") {
        for c in cs.iter().filter_map(Value::as_str) {
            if let Ok(v) = http::HeaderValue::from_str(c) {
                h.append(http::header::SET_COOKIE, v);
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_gateway_round_trip() {
        let req = http::Request::builder()
            .method("POST")
            .uri("/items/7?a=1&b=x%20y")
            .header("host", "api.example")
            .header("cookie", "s=1; t=2")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let ev: Value =
            serde_json::from_slice(&api_gateway_v2(&parts, b"{\"x\":1}", "r1", 5)).unwrap();
        assert_eq!(ev["rawPath"], "/items/7");
        assert_eq!(ev["queryStringParameters"]["b"], "x y");
        assert_eq!(ev["cookies"], json!(["s=1", "t=2"]));
        assert_eq!(ev["requestContext"]["http"]["method"], "POST");
        assert_eq!(ev["body"], "{\"x\":1}");
        let r = api_gateway_response(
            br#"{"statusCode": 201, "headers": {"x-a": "b"}, "cookies": ["c=1"], "body": "hi"}"#,
        );
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-a"], "b");
        assert_eq!(r.headers()["set-cookie"], "c=1");
        assert_eq!(r.body(), "hi");
        let r = api_gateway_response(br#"{"hello": "world"}"#);
        assert_eq!(
            (r.status().as_u16(), r.body().as_ref()),
            (200, &br#"{"hello": "world"}"#[..])
        );
    }
}
