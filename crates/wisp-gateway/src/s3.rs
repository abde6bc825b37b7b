//! The S3-compatible API, on its own listener (`wisp serve --s3-listen`,
//! default `127.0.0.1:9000`), path-style (`/{bucket}/{key}`).
//!
//! Requests are authenticated with AWS Signature V4 against Wisp access
//! keys (`wisp accesskey create`): in the `Authorization` header, or in
//! the query of a presigned URL. The key's namespace is the one the
//! request acts in, so buckets are per namespace. Reading needs any role;
//! writing objects needs `invoker`, `deployer` or `admin`; creating and
//! deleting buckets needs `deployer` or `admin`.
//!
//! Operations: ListBuckets, CreateBucket, DeleteBucket, HeadBucket,
//! GetBucketLocation, ListObjects (v1 and v2: prefix, delimiter, paging),
//! PutObject, GetObject (with Range), HeadObject, DeleteObject,
//! DeleteObjects, CopyObject, and multipart uploads (Create, UploadPart,
//! Complete, Abort). Bodies stream to and from disk.

use crate::AppState;
use crate::sigv4::{self, Received, SigError};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use wisp_core::time::{civil_from_days, now_ms, percent_decode};
use wisp_core::{Namespace, Permission, Role};
use wisp_objects::{Blob, MAX_KEYS, ObjectError, ObjectMeta, ObjectStore};

mod cond;
mod ops;
use cond::{Conditions, Verdict};
use ops::{Op, Target};

const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

pub(crate) fn router(state: AppState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// An S3 error response.
struct S3Error {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> S3Error {
    S3Error {
        status,
        code,
        message: message.into(),
    }
}

impl From<ObjectError> for S3Error {
    fn from(e: ObjectError) -> Self {
        let m = e.to_string();
        match e {
            ObjectError::InvalidBucketName(_) => {
                err(StatusCode::BAD_REQUEST, "InvalidBucketName", m)
            }
            ObjectError::InvalidKey(_) => err(StatusCode::BAD_REQUEST, "KeyTooLongError", m),
            ObjectError::NoSuchBucket(_) => err(StatusCode::NOT_FOUND, "NoSuchBucket", m),
            ObjectError::NoSuchKey(_) => err(StatusCode::NOT_FOUND, "NoSuchKey", m),
            ObjectError::BucketNotEmpty(_) => err(StatusCode::CONFLICT, "BucketNotEmpty", m),
            ObjectError::NoSuchUpload(_) => err(StatusCode::NOT_FOUND, "NoSuchUpload", m),
            ObjectError::InvalidPart(_) => err(StatusCode::BAD_REQUEST, "InvalidPart", m),
            ObjectError::BadDigest(_) => err(StatusCode::BAD_REQUEST, "BadDigest", m),
            // MinIO's answer for a full disk. Not InternalError or
            // ServiceUnavailable: SDKs retry those, and a full disk stays
            // full (docs/objects.md, "A full disk").
            ObjectError::StorageFull(_) => {
                tracing::warn!(error = %m, "refused an object write: the disk is full");
                err(StatusCode::INSUFFICIENT_STORAGE, "XMinioStorageFull", m)
            }
            ObjectError::EntityTooSmall(_) => err(StatusCode::BAD_REQUEST, "EntityTooSmall", m),
            _ => {
                tracing::error!(error = %m, "object storage failed");
                err(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", m)
            }
        }
    }
}

/// A failure of Wisp's own (a task that died, a response it could not
/// build): 500 InternalError.
fn internal(e: impl std::fmt::Display) -> S3Error {
    err(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        e.to_string(),
    )
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#13;", "\r")
        .replace("&#10;", "\n")
        .replace("&amp;", "&")
}

/// The text of every `<tag>…</tag>` in `xml`, in order.
fn xml_all(xml: &str, tag: &str) -> Vec<String> {
    xml_all_raw(xml, tag)
        .into_iter()
        .map(|s| xml_unescape(&s))
        .collect()
}

/// The same, not unescaped (elements holding elements).
fn xml_all_raw(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(after[..j].to_string());
        rest = &after[j + close.len()..];
    }
    out
}

fn xml_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/xml")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}"),
    )
        .into_response()
}

fn error_response(e: S3Error, resource: &str, head: bool, request_id: &str) -> Response {
    if head {
        // HEAD responses carry no body; the status says it.
        return (e.status, [("x-amz-error-code", e.code)]).into_response();
    }
    xml_response(
        e.status,
        format!(
            "<Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>{}</RequestId></Error>",
            e.code,
            xml_escape(&e.message),
            xml_escape(resource),
            request_id
        ),
    )
}

/// Every answer names its request (`x-amz-request-id`, as S3 does), the
/// id its error body carries too.
fn with_request_id(mut r: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert("x-amz-id-2", v.clone());
        r.headers_mut().insert("x-amz-request-id", v);
    }
    r
}

/// ISO 8601 with milliseconds, as S3 lists times.
fn iso8601(ms: i64) -> String {
    let s = ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(s.div_euclid(86_400));
    let t = s.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        t / 3600,
        t % 3600 / 60,
        t % 60,
        ms.rem_euclid(1000)
    )
}

/// RFC 7231 date, for Last-Modified.
fn http_date(ms: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let s = ms.div_euclid(1000);
    let days = s.div_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let t = s.rem_euclid(86_400);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(mo - 1) as usize],
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

/// Who is calling and what they may do.
pub(crate) struct Caller {
    pub ns: Namespace,
    pub role: Role,
    /// The SHA-256 the client signed the body with (none: unsigned).
    pub body_sha256: Option<String>,
    /// A function calling from inside Wisp: its name (its writes do not
    /// trigger it) and the buckets its spec grants (the only ones it
    /// reaches).
    pub function: Option<(wisp_core::FunctionName, Arc<[String]>)>,
}

/// Queues the storage events of a change; the change is acknowledged
/// only once they are queued.
async fn notify(
    st: &AppState,
    caller: &Caller,
    ns: &Namespace,
    bucket: &str,
    meta: &ObjectMeta,
    created: bool,
) -> Result<(), S3Error> {
    let writer = caller.function.as_ref().map(|(f, _)| f);
    st.engine
        .object_changed(ns, bucket, meta, created, writer)
        .await
        .map_err(|e| {
            err(
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                format!("the object was stored, but its storage events could not be queued ({e}); retry the request"),
            )
        })
}

fn authenticate(st: &AppState, req: &Request) -> Result<Caller, S3Error> {
    let headers = req.headers();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let r = Received {
        method: req.method().as_str(),
        raw_path: req.uri().path(),
        raw_query: req.uri().query().unwrap_or(""),
        headers,
        body: b"",
    };
    let now_s = now_ms() / 1000;
    let mut found = None;
    let secret_of = |id: &str| {
        st.gate.access_key(id).map(|(k, secret)| {
            found = Some(k);
            secret
        })
    };
    let (verified, body_sha256) = if auth.starts_with(sigv4::ALGORITHM) {
        match sigv4::verify_s3(auth, &r, now_s, secret_of) {
            Ok((_, claimed)) => (Ok(()), claimed),
            Err(e) => (Err(e), None),
        }
    } else if r.raw_query.contains("X-Amz-Signature=") {
        (
            sigv4::verify_presigned(&r, now_s, secret_of).map(|_| ()),
            None,
        )
    } else if r.raw_query.contains("AWSAccessKeyId=") && r.raw_query.contains("Signature=") {
        (
            sigv4::verify_presigned_v2(&r, now_s, secret_of).map(|_| ()),
            None,
        )
    } else {
        return Err(err(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "anonymous requests are not allowed: sign requests with a Wisp access key (`wisp accesskey create`), as AWS SDKs and the AWS CLI do",
        ));
    };
    match (verified, found) {
        (Ok(()), Some(k)) => Ok(Caller {
            ns: k.namespace,
            role: k.role,
            body_sha256,
            function: None,
        }),
        (Err(e @ SigError::UnknownKey(_)), _) => Err(err(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            e.to_string(),
        )),
        (Err(e @ SigError::Malformed(_)), _) => Err(err(
            StatusCode::FORBIDDEN,
            "AuthorizationHeaderMalformed",
            e.to_string(),
        )),
        (Err(e), _) => Err(err(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            e.to_string(),
        )),
        (Ok(()), None) => Err(err(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            "unknown access key",
        )),
    }
}

fn require(caller: &Caller, what: &str, ok: bool) -> Result<(), S3Error> {
    if ok {
        Ok(())
    } else {
        Err(err(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!(
                "a {} access key may not {what} (create one with `wisp accesskey create --role deployer`)",
                caller.role
            ),
        ))
    }
}

fn can_write_objects(c: &Caller) -> bool {
    c.role.allows(Permission::Invoke) || c.role.allows(Permission::Deploy)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ObjectError> + Send + 'static,
) -> Result<T, S3Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(internal)?
        .map_err(S3Error::from)
}

/// Requests served, by method and status (`wisp_s3_requests_total`).
static REQUESTS: std::sync::Mutex<BTreeMap<(String, u16), u64>> =
    std::sync::Mutex::new(BTreeMap::new());

fn count(method: &Method, r: &Response) {
    *REQUESTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((method.to_string(), r.status().as_u16()))
        .or_default() += 1;
}

/// Appends the S3 API's metrics (Prometheus text).
pub(crate) fn render_metrics(out: &mut String) {
    out.push_str("# HELP wisp_s3_requests_total Requests to the S3 API (functions' included), by method and status.\n# TYPE wisp_s3_requests_total counter\n");
    for ((m, code), n) in REQUESTS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        out.push_str(&format!(
            "wisp_s3_requests_total{{method=\"{m}\",code=\"{code}\"}} {n}\n"
        ));
    }
}

async fn handle(State(st): State<AppState>, req: Request) -> Response {
    let resource = percent_decode(req.uri().path(), false);
    let method = req.method().clone();
    let head = method == Method::HEAD;
    let id = wisp_core::ActivationId::generate().to_string();
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let r = match dispatch(&st, req).await {
        Ok(r) => r,
        Err(e) => {
            let mut r = error_response(e, &resource, head, &id);
            // A refused request's body may be left unread, and then the
            // connection cannot carry another request: say so, or a client
            // that reuses it sees it closed without an answer.
            if has_body {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            r
        }
    };
    count(&method, &r);
    with_request_id(r, &id)
}

async fn dispatch(st: &AppState, req: Request) -> Result<Response, S3Error> {
    // POST object (a browser form upload, signed inside the form) is not
    // implemented: say so, rather than that the request is unsigned.
    let path = req.uri().path().trim_start_matches('/');
    if req.method() == Method::POST
        && !path.is_empty()
        && !path.trim_end_matches('/').contains('/')
        && req.uri().query().unwrap_or("").is_empty()
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("multipart/form-data"))
    {
        drain_small(req).await;
        return Err(err(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "POST object (browser form uploads with a signed policy) is not supported by Wisp; nothing was stored (upload with a presigned PUT URL instead)",
        ));
    }
    let caller = authenticate(st, &req)?;
    dispatch_as(st, caller, req).await
}

async fn dispatch_as(st: &AppState, caller: Caller, req: Request) -> Result<Response, S3Error> {
    let store = st.engine.objects().clone();
    let path = req.uri().path().trim_start_matches('/').to_string();
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) => (percent_decode(b, false), percent_decode(k, false)),
        None => (percent_decode(&path, false), String::new()),
    };
    if let Some((f, grants)) = &caller.function
        && !grants.contains(&bucket)
    {
        return Err(err(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!(
                "function {f} may not use bucket {bucket:?}: deploy it with --objects {bucket} (it reaches only granted buckets of its own namespace)"
            ),
        ));
    }
    let pairs: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect();
    let target = if bucket.is_empty() {
        Target::Service
    } else if key.is_empty() {
        Target::Bucket
    } else {
        Target::Object
    };
    let op = match ops::classify(
        req.method().as_str(),
        target,
        &pairs,
        req.headers().contains_key("x-amz-copy-source"),
    )
    .and_then(|op| ops::refuse_headers(op, req.headers()).map(|()| op))
    {
        Ok(op) => op,
        Err(e) => {
            drain_small(req).await;
            return Err(e);
        }
    };
    if let Some(owner) = req
        .headers()
        .get("x-amz-expected-bucket-owner")
        .and_then(|v| v.to_str().ok())
        && owner != caller.ns.as_str()
    {
        return Err(err(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!(
                "x-amz-expected-bucket-owner is {owner:?}, but the bucket belongs to this key's namespace {:?}",
                caller.ns.as_str()
            ),
        ));
    }
    let query: HashMap<String, String> = pairs.into_iter().collect();
    if let Some(v) = query.get("versionId")
        && v != "null"
    {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            format!(
                "Invalid version id specified: {v:?} (Wisp keeps one version of each object, versionId \"null\")"
            ),
        ));
    }
    let ns = caller.ns.clone();
    match op {
        Op::ListBuckets => list_buckets(store, ns).await,
        Op::CreateBucket => {
            require(
                &caller,
                "create buckets",
                caller.role.allows(Permission::Deploy),
            )?;
            let b = bucket.clone();
            if !blocking(move || store.create_bucket(&ns, &b)).await? {
                return Err(err(
                    StatusCode::CONFLICT,
                    "BucketAlreadyOwnedByYou",
                    format!("bucket {bucket:?} already exists in this namespace"),
                ));
            }
            Ok((StatusCode::OK, [(header::LOCATION, format!("/{bucket}"))]).into_response())
        }
        Op::DeleteBucket => {
            require(
                &caller,
                "delete buckets",
                caller.role.allows(Permission::Deploy),
            )?;
            blocking(move || store.delete_bucket(&ns, &bucket)).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Op::HeadBucket => {
            let b = bucket.clone();
            if blocking(move || store.bucket_exists(&ns, &b)).await? {
                Ok(StatusCode::OK.into_response())
            } else {
                Err(ObjectError::NoSuchBucket(bucket).into())
            }
        }
        Op::GetBucketLocation | Op::GetBucketVersioning => {
            let b = bucket.clone();
            if !blocking(move || store.bucket_exists(&ns, &b)).await? {
                return Err(ObjectError::NoSuchBucket(bucket).into());
            }
            Ok(xml_response(
                StatusCode::OK,
                if op == Op::GetBucketLocation {
                    format!("<LocationConstraint xmlns=\"{XMLNS}\"></LocationConstraint>")
                } else {
                    // Never enabled: S3 answers an empty configuration.
                    format!("<VersioningConfiguration xmlns=\"{XMLNS}\"></VersioningConfiguration>")
                },
            ))
        }
        Op::ListObjects | Op::ListObjectsV2 | Op::ListObjectVersions => {
            list_objects(store, ns, bucket, op, &query).await
        }
        Op::DeleteObjects => {
            require(&caller, "delete objects", can_write_objects(&caller))?;
            let body = small_text(req, &caller).await?;
            delete_objects(st, store, &caller, bucket, &body).await
        }
        Op::GetObject | Op::HeadObject => {
            if query.contains_key("partNumber") {
                return Err(err(
                    StatusCode::NOT_IMPLEMENTED,
                    "NotImplemented",
                    "GetObject with ?partNumber is not supported by Wisp; use a Range header",
                ));
            }
            get_object(
                store,
                ns,
                (bucket, key),
                req.headers(),
                &query,
                op == Op::HeadObject,
            )
            .await
        }
        Op::CopyObject => {
            require(&caller, "write objects", can_write_objects(&caller))?;
            let src = req
                .headers()
                .get("x-amz-copy-source")
                .and_then(|v| v.to_str().ok())
                .map(|s| percent_decode(s.split('?').next().unwrap_or(""), false))
                .unwrap_or_default();
            copy_object(st, store, &caller, (bucket, key), &src, req.headers()).await
        }
        Op::UploadPart => {
            require(&caller, "write objects", can_write_objects(&caller))?;
            let n: u32 = query["partNumber"].parse().map_err(|_| {
                err(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    "partNumber must be a number",
                )
            })?;
            let id = query["uploadId"].clone();
            let (s2, n2, b2, k2) = (store.clone(), ns.clone(), bucket.clone(), key.clone());
            let upload = blocking(move || s2.upload(&n2, &b2, &k2, &id)).await?;
            let blob = receive(&store, req, &caller).await?;
            let s2 = store.clone();
            let etag = blocking(move || s2.put_part(&upload, n, blob)).await?;
            Ok((StatusCode::OK, [(header::ETAG, etag)]).into_response())
        }
        Op::PutObject => {
            require(&caller, "write objects", can_write_objects(&caller))?;
            put_object(st, store, ns, bucket, key, req, &caller).await
        }
        Op::AbortMultipartUpload => {
            require(&caller, "delete objects", can_write_objects(&caller))?;
            let id = query["uploadId"].clone();
            blocking(move || {
                let up = store.upload(&ns, &bucket, &key, &id)?;
                store.abort_upload(&up)
            })
            .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Op::DeleteObject => {
            require(&caller, "delete objects", can_write_objects(&caller))?;
            check_write_conditions(&store, &ns, (&bucket, &key), req.headers()).await?;
            let (b2, k2, n2) = (bucket.clone(), key.clone(), ns.clone());
            let gone = blocking(move || store.delete(&n2, &b2, &k2)).await?;
            if let Some(m) = gone {
                notify(st, &caller, &ns, &bucket, &m, false).await?;
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Op::CreateMultipartUpload => {
            require(&caller, "write objects", can_write_objects(&caller))?;
            let (ct, md) = content_meta(req.headers());
            let (b2, k2) = (bucket.clone(), key.clone());
            let id = blocking(move || store.create_upload(&ns, &b2, &k2, &ct, &md)).await?;
            Ok(xml_response(
                StatusCode::OK,
                format!(
                    "<InitiateMultipartUploadResult xmlns=\"{XMLNS}\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{id}</UploadId></InitiateMultipartUploadResult>",
                    xml_escape(&bucket),
                    xml_escape(&key)
                ),
            ))
        }
        Op::CompleteMultipartUpload => {
            require(&caller, "write objects", can_write_objects(&caller))?;
            let id = query["uploadId"].clone();
            check_write_conditions(&store, &ns, (&bucket, &key), req.headers()).await?;
            let body = small_text(req, &caller).await?;
            complete_upload(st, store, &caller, (bucket, key), id, &body).await
        }
        Op::UploadPartCopy => {
            require(&caller, "write objects", can_write_objects(&caller))?;
            upload_part_copy(store, &caller, (bucket, key), &query, req.headers()).await
        }
        Op::ListParts => list_parts(store, ns, (bucket, key), &query).await,
        Op::ListMultipartUploads => list_uploads(store, ns, bucket, &query).await,
    }
}

/// Reads and drops a small body of a refused request, so the client (that
/// sends it whole before reading the answer) gets the error, not a reset
/// connection. Large bodies are not read: the connection closes.
async fn drain_small(req: Request) {
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if len.is_some_and(|n| n <= 1 << 20) {
        let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
    }
}

async fn complete_upload(
    st: &AppState,
    store: Arc<ObjectStore>,
    caller: &Caller,
    (bucket, key): (String, String),
    id: String,
    body: &str,
) -> Result<Response, S3Error> {
    let ns = caller.ns.clone();
    let numbers = xml_all(body, "PartNumber");
    let etags = xml_all(body, "ETag");
    if numbers.is_empty() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "MalformedXML",
            "CompleteMultipartUpload needs at least one Part (PartNumber and ETag)",
        ));
    }
    if numbers.len() != etags.len() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "MalformedXML",
            "every Part needs a PartNumber and an ETag",
        ));
    }
    let mut parts = Vec::with_capacity(numbers.len());
    for (n, e) in numbers.iter().zip(etags) {
        let n: u32 = n.trim().parse().map_err(|_| {
            err(
                StatusCode::BAD_REQUEST,
                "MalformedXML",
                format!("PartNumber {n:?}"),
            )
        })?;
        parts.push((n, e));
    }
    // The ETag these parts make: a repeated Complete (a client retrying
    // after a lost answer) finds the object it made and gets the same
    // answer, as S3 gives, without a second storage event.
    let expected = {
        use md5::Digest as _;
        let mut h = md5::Md5::new();
        for (_, e) in &parts {
            h.update(hex::decode(e.trim().trim_matches('"')).unwrap_or_default());
        }
        format!("\"{}-{}\"", hex::encode(h.finalize()), parts.len())
    };
    let (s2, n2, b2, k2) = (store.clone(), ns.clone(), bucket.clone(), key.clone());
    let (meta, fresh) = blocking(move || match s2.upload(&n2, &b2, &k2, &id) {
        Ok(up) => Ok((s2.complete_upload(&up, &parts)?, true)),
        Err(ObjectError::NoSuchUpload(id)) => match s2.head(&n2, &b2, &k2) {
            Ok(m) if m.etag == expected => Ok((m, false)),
            _ => Err(ObjectError::NoSuchUpload(id)),
        },
        Err(e) => Err(e),
    })
    .await?;
    if fresh {
        notify(st, caller, &ns, &bucket, &meta, true).await?;
    }
    Ok(xml_response(
        StatusCode::OK,
        format!(
            "<CompleteMultipartUploadResult xmlns=\"{XMLNS}\"><Location>/{}/{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>",
            xml_escape(&bucket),
            xml_escape(&key),
            xml_escape(&bucket),
            xml_escape(&key),
            xml_escape(&meta.etag)
        ),
    ))
}

/// UploadPartCopy: part N of an upload from (a range of) an object.
async fn upload_part_copy(
    store: Arc<ObjectStore>,
    caller: &Caller,
    (bucket, key): (String, String),
    q: &HashMap<String, String>,
    h: &HeaderMap,
) -> Result<Response, S3Error> {
    let ns = caller.ns.clone();
    let n: u32 = q["partNumber"].parse().map_err(|_| {
        err(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "partNumber must be a number",
        )
    })?;
    let src = h
        .get("x-amz-copy-source")
        .and_then(|v| v.to_str().ok())
        .map(|s| percent_decode(s.split('?').next().unwrap_or(""), false))
        .unwrap_or_default();
    let src = src.trim_start_matches('/');
    let Some((sb, sk)) = src.split_once('/') else {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "x-amz-copy-source must be BUCKET/KEY",
        ));
    };
    let (sb, sk) = (sb.to_string(), sk.to_string());
    let id = q["uploadId"].clone();
    let (s2, n2, b2, k2) = (store.clone(), ns.clone(), bucket.clone(), key.clone());
    let upload = blocking(move || s2.upload(&n2, &b2, &k2, &id)).await?;
    let meta = check_copy_source(&store, &ns, (&sb, &sk), h).await?;
    let range = match h
        .get("x-amz-copy-source-range")
        .and_then(|v| v.to_str().ok())
    {
        None => None,
        Some(v) => {
            let bad = || {
                err(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    format!(
                        "x-amz-copy-source-range {v:?} must be bytes=FIRST-LAST within the source object ({} bytes)",
                        meta.size
                    ),
                )
            };
            let (a, b) = v
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.split_once('-'))
                .ok_or_else(bad)?;
            let (a, b): (u64, u64) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            if a > b {
                return Err(bad());
            }
            if b >= meta.size {
                return Err(err(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "InvalidRange",
                    format!(
                        "x-amz-copy-source-range {v:?} is outside the source object ({} bytes)",
                        meta.size
                    ),
                ));
            }
            Some((a, b))
        }
    };
    let s2 = store.clone();
    let etag = blocking(move || s2.put_part_copy(&upload, n, (&sb, &sk), range)).await?;
    Ok(xml_response(
        StatusCode::OK,
        format!(
            "<CopyPartResult xmlns=\"{XMLNS}\"><LastModified>{}</LastModified><ETag>{}</ETag></CopyPartResult>",
            iso8601(now_ms()),
            xml_escape(&etag)
        ),
    ))
}

fn number_param(q: &HashMap<String, String>, name: &str, default: u64) -> Result<u64, S3Error> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            err(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("{name} must be a non-negative number, got {v:?}"),
            )
        }),
    }
}

async fn list_parts(
    store: Arc<ObjectStore>,
    ns: Namespace,
    (bucket, key): (String, String),
    q: &HashMap<String, String>,
) -> Result<Response, S3Error> {
    let max = number_param(q, "max-parts", 1000)?.min(1000) as usize;
    let marker = number_param(q, "part-number-marker", 0)?;
    let id = q["uploadId"].clone();
    let (b2, k2, i2) = (bucket.clone(), key.clone(), id.clone());
    let parts = blocking(move || {
        let up = store.upload(&ns, &b2, &k2, &i2)?;
        store.list_parts(&up)
    })
    .await?;
    let after: Vec<_> = parts
        .into_iter()
        .filter(|(n, _, _)| u64::from(*n) > marker)
        .collect();
    let truncated = after.len() > max;
    let page = &after[..after.len().min(max)];
    let mut xml = format!(
        "<ListPartsResult xmlns=\"{XMLNS}\"><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId><StorageClass>STANDARD</StorageClass><PartNumberMarker>{marker}</PartNumberMarker><MaxParts>{max}</MaxParts><IsTruncated>{truncated}</IsTruncated>",
        xml_escape(&bucket),
        xml_escape(&key),
        xml_escape(&id)
    );
    if let Some((n, _, _)) = page.last() {
        xml.push_str(&format!("<NextPartNumberMarker>{n}</NextPartNumberMarker>"));
    }
    for (n, size, etag) in page {
        xml.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag><Size>{size}</Size></Part>",
            xml_escape(etag)
        ));
    }
    xml.push_str("</ListPartsResult>");
    Ok(xml_response(StatusCode::OK, xml))
}

async fn list_uploads(
    store: Arc<ObjectStore>,
    ns: Namespace,
    bucket: String,
    q: &HashMap<String, String>,
) -> Result<Response, S3Error> {
    let max = number_param(q, "max-uploads", 1000)?.min(1000) as usize;
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let delimiter = q.get("delimiter").cloned().filter(|d| !d.is_empty());
    let key_marker = q.get("key-marker").cloned().unwrap_or_default();
    let id_marker = q.get("upload-id-marker").cloned().unwrap_or_default();
    let b2 = bucket.clone();
    let all = blocking(move || store.list_uploads(&ns, &b2)).await?;
    let mut uploads = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut truncated = false;
    let mut next = None;
    for (key, id, created) in all {
        if !key.starts_with(&prefix) {
            continue;
        }
        if !key_marker.is_empty()
            && (key.as_str() < key_marker.as_str()
                || (key == key_marker
                    && (id_marker.is_empty() || id.as_str() <= id_marker.as_str())))
        {
            continue;
        }
        let cp = delimiter.as_ref().and_then(|d| {
            key[prefix.len()..]
                .find(d.as_str())
                .map(|i| key[..prefix.len() + i + d.len()].to_string())
        });
        if let Some(cp) = &cp
            && prefixes.last() == Some(cp)
        {
            continue;
        }
        if uploads.len() + prefixes.len() == max {
            truncated = true;
            break;
        }
        next = Some((key.clone(), id.clone()));
        match cp {
            Some(cp) => prefixes.push(cp),
            None => uploads.push((key, id, created)),
        }
    }
    let mut xml = format!(
        "<ListMultipartUploadsResult xmlns=\"{XMLNS}\"><Bucket>{}</Bucket><KeyMarker>{}</KeyMarker><UploadIdMarker>{}</UploadIdMarker><Prefix>{}</Prefix><MaxUploads>{max}</MaxUploads><IsTruncated>{truncated}</IsTruncated>",
        xml_escape(&bucket),
        xml_escape(&key_marker),
        xml_escape(&id_marker),
        xml_escape(&prefix)
    );
    if let Some(d) = &delimiter {
        xml.push_str(&format!("<Delimiter>{}</Delimiter>", xml_escape(d)));
    }
    if truncated && let Some((k, i)) = &next {
        xml.push_str(&format!(
            "<NextKeyMarker>{}</NextKeyMarker><NextUploadIdMarker>{}</NextUploadIdMarker>",
            xml_escape(k),
            xml_escape(i)
        ));
    }
    for (key, id, created) in &uploads {
        xml.push_str(&format!(
            "<Upload><Key>{}</Key><UploadId>{}</UploadId><Initiated>{}</Initiated><StorageClass>STANDARD</StorageClass></Upload>",
            xml_escape(key),
            xml_escape(id),
            iso8601(*created)
        ));
    }
    for p in &prefixes {
        xml.push_str(&format!(
            "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
            xml_escape(p)
        ));
    }
    xml.push_str("</ListMultipartUploadsResult>");
    Ok(xml_response(StatusCode::OK, xml))
}

async fn list_buckets(store: Arc<ObjectStore>, ns: Namespace) -> Result<Response, S3Error> {
    let n2 = ns.clone();
    let list = blocking(move || store.list_buckets(&n2)).await?;
    let mut xml = format!(
        "<ListAllMyBucketsResult xmlns=\"{XMLNS}\"><Owner><ID>{ns}</ID><DisplayName>{ns}</DisplayName></Owner><Buckets>"
    );
    for (name, created) in list {
        xml.push_str(&format!(
            "<Bucket><Name>{}</Name><CreationDate>{}</CreationDate></Bucket>",
            xml_escape(&name),
            iso8601(created)
        ));
    }
    xml.push_str("</Buckets></ListAllMyBucketsResult>");
    Ok(xml_response(StatusCode::OK, xml))
}

fn token_encode(after: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(after)
}

fn token_decode(t: &str) -> Result<String, S3Error> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            err(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "The continuation token provided is incorrect",
            )
        })
}

async fn list_objects(
    store: Arc<ObjectStore>,
    ns: Namespace,
    bucket: String,
    op: Op,
    q: &HashMap<String, String>,
) -> Result<Response, S3Error> {
    let v2 = op == Op::ListObjectsV2;
    let versions = op == Op::ListObjectVersions;
    if v2 && q.get("list-type").map(String::as_str) != Some("2") {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "list-type must be 2 (ListObjectsV2), or left out (ListObjects)",
        ));
    }
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let delimiter = q.get("delimiter").cloned().filter(|d| !d.is_empty());
    let max = match q.get("max-keys") {
        None => MAX_KEYS,
        Some(m) => m.parse::<usize>().map_err(|_| {
            err(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!("max-keys must be a number from 0 to {MAX_KEYS}, got {m:?}"),
            )
        })?,
    }
    .min(MAX_KEYS);
    let url = q.get("encoding-type").map(String::as_str) == Some("url");
    let after = if v2 {
        match q.get("continuation-token") {
            Some(t) => Some(token_decode(t)?),
            None => q.get("start-after").cloned(),
        }
    } else if versions {
        q.get("key-marker").cloned().filter(|m| !m.is_empty())
    } else {
        // A marker that is a common prefix (the NextMarker of a page cut
        // there) skips every key under it.
        q.get("marker").cloned().map(|m| match &delimiter {
            Some(d)
                if m.starts_with(&prefix) && m.len() > prefix.len() && m.ends_with(d.as_str()) =>
            {
                format!("{m}\u{10FFFF}")
            }
            _ => m,
        })
    };
    let (b2, p2, d2) = (bucket.clone(), prefix.clone(), delimiter.clone());
    let listing =
        blocking(move || store.list(&ns, &b2, &p2, d2.as_deref(), after.as_deref(), max)).await?;
    let enc = |s: &str| {
        if url {
            let mut o = String::new();
            for b in s.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
                    o.push(b as char);
                } else {
                    o.push_str(&format!("%{b:02X}"));
                }
            }
            o
        } else {
            xml_escape(s)
        }
    };
    let truncated = listing.next_after.is_some();
    if versions {
        return Ok(xml_response(
            StatusCode::OK,
            versions_xml(
                &bucket,
                &prefix,
                delimiter.as_deref(),
                max,
                q,
                &listing,
                enc,
            ),
        ));
    }
    let mut xml = format!(
        "<ListBucketResult xmlns=\"{XMLNS}\"><Name>{}</Name><Prefix>{}</Prefix><MaxKeys>{max}</MaxKeys><IsTruncated>{truncated}</IsTruncated>",
        xml_escape(&bucket),
        // V2 encodes Prefix with encoding-type=url, V1 does not (clients
        // decode it only in V2).
        if v2 {
            enc(&prefix)
        } else {
            xml_escape(&prefix)
        }
    );
    if let Some(d) = &delimiter {
        xml.push_str(&format!("<Delimiter>{}</Delimiter>", enc(d)));
    }
    if url {
        xml.push_str("<EncodingType>url</EncodingType>");
    }
    if v2 {
        xml.push_str(&format!(
            "<KeyCount>{}</KeyCount>",
            listing.objects.len() + listing.common_prefixes.len()
        ));
        if let Some(a) = q.get("start-after") {
            xml.push_str(&format!("<StartAfter>{}</StartAfter>", enc(a)));
        }
        if let Some(t) = q.get("continuation-token") {
            xml.push_str(&format!(
                "<ContinuationToken>{}</ContinuationToken>",
                xml_escape(t)
            ));
        }
        if let Some(a) = &listing.next_after {
            xml.push_str(&format!(
                "<NextContinuationToken>{}</NextContinuationToken>",
                token_encode(a)
            ));
        }
    } else {
        xml.push_str(&format!(
            "<Marker>{}</Marker>",
            enc(q.get("marker").map(String::as_str).unwrap_or(""))
        ));
        // As S3: NextMarker only with a delimiter (else the last key is
        // the marker), the last key or common prefix of the page.
        if let (Some(_), Some(_)) = (&listing.next_after, &delimiter) {
            let last_key = listing.objects.last().map(|m| m.key.as_str());
            let last_prefix = listing.common_prefixes.last().map(String::as_str);
            if let Some(last) = last_key.max(last_prefix) {
                xml.push_str(&format!("<NextMarker>{}</NextMarker>", enc(last)));
            }
        }
    }
    push_entries(&mut xml, "Contents", "", &listing, &enc);
    xml.push_str("</ListBucketResult>");
    Ok(xml_response(StatusCode::OK, xml))
}

/// The objects of a listing as `<{element}>` entries (`extra` after the
/// key), then its common prefixes.
fn push_entries(
    xml: &mut String,
    element: &str,
    extra: &str,
    listing: &wisp_objects::Listing,
    enc: &impl Fn(&str) -> String,
) {
    for m in &listing.objects {
        xml.push_str(&format!(
            "<{element}><Key>{}</Key>{extra}<LastModified>{}</LastModified><ETag>{}</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></{element}>",
            enc(&m.key),
            iso8601(m.modified_ms),
            xml_escape(&m.etag),
            m.size
        ));
    }
    for p in &listing.common_prefixes {
        xml.push_str(&format!(
            "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
            enc(p)
        ));
    }
}

/// ListObjectVersions of a bucket that was never versioned: one version
/// of each object, `null`.
fn versions_xml(
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    max: usize,
    q: &HashMap<String, String>,
    listing: &wisp_objects::Listing,
    enc: impl Fn(&str) -> String,
) -> String {
    let mut xml = format!(
        "<ListVersionsResult xmlns=\"{XMLNS}\"><Name>{}</Name><Prefix>{}</Prefix><KeyMarker>{}</KeyMarker><VersionIdMarker>{}</VersionIdMarker><MaxKeys>{max}</MaxKeys><IsTruncated>{}</IsTruncated>",
        xml_escape(bucket),
        enc(prefix),
        enc(q.get("key-marker").map(String::as_str).unwrap_or("")),
        xml_escape(q.get("version-id-marker").map(String::as_str).unwrap_or("")),
        listing.next_after.is_some()
    );
    if let Some(d) = delimiter {
        xml.push_str(&format!("<Delimiter>{}</Delimiter>", enc(d)));
    }
    if q.get("encoding-type").map(String::as_str) == Some("url") {
        // Clients decode keys only when told they are encoded.
        xml.push_str("<EncodingType>url</EncodingType>");
    }
    if let Some(a) = &listing.next_after {
        xml.push_str(&format!(
            "<NextKeyMarker>{}</NextKeyMarker><NextVersionIdMarker>null</NextVersionIdMarker>",
            enc(a)
        ));
    }
    push_entries(
        &mut xml,
        "Version",
        "<VersionId>null</VersionId><IsLatest>true</IsLatest>",
        listing,
        &enc,
    );
    xml.push_str("</ListVersionsResult>");
    xml
}

/// Content type and `x-amz-meta-*` of a write.
fn content_meta(h: &HeaderMap) -> (String, BTreeMap<String, String>) {
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("binary/octet-stream")
        .to_string();
    let md = h
        .iter()
        .filter_map(|(k, v)| {
            let name = k.as_str().strip_prefix("x-amz-meta-")?;
            // UTF-8 values are kept as they are (not only ASCII); other
            // bytes are read as Latin-1.
            let value = match std::str::from_utf8(v.as_bytes()) {
                Ok(t) => t.to_string(),
                Err(_) => v.as_bytes().iter().map(|&b| b as char).collect(),
            };
            Some((name.to_string(), value))
        })
        .collect();
    (ct, md)
}

/// Streams the request body into a temp blob, checking it against the
/// signed SHA-256 and any `Content-MD5`.
async fn receive(store: &Arc<ObjectStore>, req: Request, caller: &Caller) -> Result<Blob, S3Error> {
    let content_md5 = content_md5(req.headers());
    let s2 = store.clone();
    let mut w = blocking(move || s2.writer_md5_only()).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            w.write(&chunk)?;
        }
        w.finish()
    });
    // The signed SHA-256 is checked on another thread, beside the write
    // (and its MD5): one core does not hash and write at disk speed.
    let (htx, hasher) = match &caller.body_sha256 {
        Some(_) => {
            let (htx, mut hrx) = tokio::sync::mpsc::channel::<Bytes>(8);
            let h = tokio::task::spawn_blocking(move || {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                while let Some(chunk) = hrx.blocking_recv() {
                    ctx.update(&chunk);
                }
                hex::encode(ctx.finish())
            });
            (Some(htx), Some(h))
        }
        None => (None, None),
    };
    let mut stream = req.into_body().into_data_stream();
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                if let Some(h) = &htx
                    && h.send(c.clone()).await.is_err()
                {
                    break;
                }
                if tx.send(c).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    drop(htx);
    let blob = writer.await.map_err(internal)?.map_err(S3Error::from)?;
    if let Some(e) = failed {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "IncompleteBody",
            format!("the request body ended early: {e}"),
        ));
    }
    let sha256 = match hasher {
        Some(h) => Some(h.await.map_err(internal)?),
        None => None,
    };
    check_digests(caller, content_md5.as_deref(), sha256.as_deref(), || {
        blob.md5
    })?;
    Ok(blob)
}

fn content_md5(h: &HeaderMap) -> Option<String> {
    h.get("content-md5")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Checks a received body: its SHA-256 (`sha256`, hex, computed when the
/// client signed one) against `x-amz-content-sha256`, and its MD5 against
/// any `Content-MD5`.
fn check_digests(
    caller: &Caller,
    content_md5: Option<&str>,
    sha256: Option<&str>,
    md5: impl FnOnce() -> [u8; 16],
) -> Result<(), S3Error> {
    if let (Some(claimed), Some(ours)) = (&caller.body_sha256, sha256)
        && ours != claimed
    {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "XAmzContentSHA256Mismatch",
            "the body's SHA-256 does not match x-amz-content-sha256",
        ));
    }
    if let Some(given) = content_md5
        && given.trim() != base64::engine::general_purpose::STANDARD.encode(md5())
    {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "BadDigest",
            "the Content-MD5 you specified did not match what was received",
        ));
    }
    Ok(())
}

/// A small body (XML requests), checked like a streamed one, as text.
async fn small_text(req: Request, caller: &Caller) -> Result<String, S3Error> {
    String::from_utf8(small_body(req, caller).await?).map_err(|_| {
        err(
            StatusCode::BAD_REQUEST,
            "MalformedXML",
            "the body is not UTF-8",
        )
    })
}

/// A small body, checked against the signed SHA-256 and any Content-MD5.
async fn small_body(req: Request, caller: &Caller) -> Result<Vec<u8>, S3Error> {
    let md5 = content_md5(req.headers());
    let bytes = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .map_err(|e| err(StatusCode::BAD_REQUEST, "IncompleteBody", e.to_string()))?;
    let sha256 = caller
        .body_sha256
        .as_ref()
        .map(|_| hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes)));
    check_digests(caller, md5.as_deref(), sha256.as_deref(), || {
        use md5::Digest as _;
        md5::Md5::digest(&bytes).into()
    })?;
    Ok(bytes.to_vec())
}

async fn put_object(
    st: &AppState,
    store: Arc<ObjectStore>,
    ns: Namespace,
    bucket: String,
    key: String,
    req: Request,
    caller: &Caller,
) -> Result<Response, S3Error> {
    wisp_objects::check_key(&key)?;
    let (ct, md) = content_meta(req.headers());
    let (s2, n2, b2) = (store.clone(), ns.clone(), bucket.clone());
    if !blocking(move || s2.bucket_exists(&n2, &b2)).await? {
        return Err(ObjectError::NoSuchBucket(bucket).into());
    }
    check_write_conditions(&store, &ns, (&bucket, &key), req.headers()).await?;
    let small = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= wisp_objects::INLINE_MAX);
    let (n2, b2, k2) = (ns.clone(), bucket.clone(), key.clone());
    let meta = if small {
        // Small: kept in the database, group-committed with other writes.
        let data = small_body(req, caller).await?;
        blocking(move || store.put_inline(&n2, &b2, &k2, data, &ct, &md)).await?
    } else {
        let blob = receive(&store, req, caller).await?;
        blocking(move || store.commit(&n2, &b2, &k2, blob, &ct, &md)).await?
    };
    notify(st, caller, &ns, &bucket, &meta, true).await?;
    Ok((StatusCode::OK, [(header::ETAG, meta.etag)]).into_response())
}

async fn copy_object(
    st: &AppState,
    store: Arc<ObjectStore>,
    caller: &Caller,
    (bucket, key): (String, String),
    src: &str,
    h: &HeaderMap,
) -> Result<Response, S3Error> {
    let ns = caller.ns.clone();
    // (The query, `?versionId=`, was cut before decoding: a key may hold '?'.)
    let src = src.trim_start_matches('/');
    let Some((sb, sk)) = src.split_once('/') else {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "x-amz-copy-source must be BUCKET/KEY",
        ));
    };
    let (sb, sk) = (sb.to_string(), sk.to_string());
    let replace = h
        .get("x-amz-metadata-directive")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"REPLACE"));
    if (sb.as_str(), sk.as_str()) == (bucket.as_str(), key.as_str()) && !replace {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata (send x-amz-metadata-directive: REPLACE)",
        ));
    }
    check_copy_source(&store, &ns, (&sb, &sk), h).await?;
    check_write_conditions(&store, &ns, (&bucket, &key), h).await?;
    let (ct, md) = content_meta(h);
    let (n2, b2, k2) = (ns.clone(), bucket.clone(), key.clone());
    let meta = blocking(move || {
        store.copy(
            &n2,
            (&sb, &sk),
            (&b2, &k2),
            replace.then_some((ct.as_str(), &md)),
        )
    })
    .await?;
    notify(st, caller, &ns, &bucket, &meta, true).await?;
    Ok(xml_response(
        StatusCode::OK,
        format!(
            "<CopyObjectResult xmlns=\"{XMLNS}\"><LastModified>{}</LastModified><ETag>{}</ETag></CopyObjectResult>",
            iso8601(meta.modified_ms),
            xml_escape(&meta.etag)
        ),
    ))
}

/// The `x-amz-copy-source-if-*` conditions of a copy, on its source:
/// any that does not hold → 412 PreconditionFailed.
async fn check_copy_source(
    store: &Arc<ObjectStore>,
    ns: &Namespace,
    (sb, sk): (&str, &str),
    h: &HeaderMap,
) -> Result<ObjectMeta, S3Error> {
    let c = Conditions::from_headers(h, "x-amz-copy-source-");
    let (s2, n2, b2, k2) = (store.clone(), ns.clone(), sb.to_string(), sk.to_string());
    let meta = blocking(move || s2.head(&n2, &b2, &k2)).await?;
    if c.check(&meta.etag, meta.modified_ms) != Verdict::Proceed {
        return Err(err(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the x-amz-copy-source-if-* preconditions you specified did not hold",
        ));
    }
    Ok(meta)
}

/// Conditional writes: `If-None-Match: *` (only if the key is free) and
/// `If-Match: ETAG` (only over that object) → 412 PreconditionFailed, or
/// 404 NoSuchKey for If-Match on a missing key. Checked before the write,
/// not atomically with it.
async fn check_write_conditions(
    store: &Arc<ObjectStore>,
    ns: &Namespace,
    (bucket, key): (&str, &str),
    h: &HeaderMap,
) -> Result<(), S3Error> {
    let c = Conditions::from_headers(h, "");
    if c.if_match.is_none() && c.if_none_match.is_none() {
        return Ok(());
    }
    let (s2, n2, b2, k2) = (
        store.clone(),
        ns.clone(),
        bucket.to_string(),
        key.to_string(),
    );
    let existing = match blocking(move || s2.head(&n2, &b2, &k2)).await {
        Ok(m) => Some(m),
        Err(S3Error {
            code: "NoSuchKey", ..
        }) => None,
        Err(e) => return Err(e),
    };
    let failed = || {
        err(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the preconditions you specified did not hold (If-Match / If-None-Match); nothing was written",
        )
    };
    match (&existing, &c.if_match, &c.if_none_match) {
        (None, Some(_), _) => Err(ObjectError::NoSuchKey(key.to_string()).into()),
        (Some(m), Some(want), _) if !cond::etag_matches(want, &m.etag) => Err(failed()),
        (Some(m), _, Some(none)) if cond::etag_matches(none, &m.etag) => Err(failed()),
        _ => Ok(()),
    }
}

async fn delete_objects(
    st: &AppState,
    store: Arc<ObjectStore>,
    caller: &Caller,
    bucket: String,
    body: &str,
) -> Result<Response, S3Error> {
    let ns = caller.ns.clone();
    let objects = xml_all_raw(body, "Object");
    let quiet = xml_all(body, "Quiet").first().is_some_and(|q| q == "true");
    let mut keys = Vec::with_capacity(objects.len());
    for o in &objects {
        let Some(k) = xml_all(o, "Key").into_iter().next() else {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "MalformedXML",
                "every Object needs a Key",
            ));
        };
        if let Some(v) = xml_all(o, "VersionId").first()
            && v != "null"
        {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                format!(
                    "Invalid version id specified for {k:?}: {v:?} (Wisp keeps one version of each object, \"null\"); nothing was deleted"
                ),
            ));
        }
        keys.push(k);
    }
    if keys.len() > 1000 {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "MalformedXML",
            "at most 1,000 keys per DeleteObjects request",
        ));
    }
    let (n2, b2, k2) = (ns.clone(), bucket.clone(), keys.clone());
    let results = blocking(move || {
        Ok(k2
            .iter()
            .map(|k| store.delete(&n2, &b2, k))
            .collect::<Vec<_>>())
    })
    .await?;
    let mut xml = format!("<DeleteResult xmlns=\"{XMLNS}\">");
    for (k, r) in keys.iter().zip(results) {
        match r {
            Ok(gone) => {
                if let Some(m) = gone {
                    notify(st, caller, &ns, &bucket, &m, false).await?;
                }
                if !quiet {
                    xml.push_str(&format!("<Deleted><Key>{}</Key></Deleted>", xml_escape(k)));
                }
            }
            Err(e) => {
                let e = S3Error::from(e);
                xml.push_str(&format!(
                    "<Error><Key>{}</Key><Code>{}</Code><Message>{}</Message></Error>",
                    xml_escape(k),
                    e.code,
                    xml_escape(&e.message)
                ));
            }
        }
    }
    xml.push_str("</DeleteResult>");
    Ok(xml_response(StatusCode::OK, xml))
}

/// `Range: bytes=a-b | a- | -n` against `size`: the inclusive range, or
/// none for the whole object.
fn parse_range(h: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, S3Error> {
    let Some(v) = h.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let bad = || {
        err(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            format!("The requested range {v:?} is not satisfiable (the object is {size} bytes)"),
        )
    };
    let spec = v.strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        // Several ranges: S3 answers with the whole object.
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| bad())?;
            if n == 0 || size == 0 {
                return Err(bad());
            }
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().map_err(|_| bad())?, size.saturating_sub(1)),
        (a, b) => {
            let a: u64 = a.parse().map_err(|_| bad())?;
            let b: u64 = b.parse().map_err(|_| bad())?;
            (a, b.min(size.saturating_sub(1)))
        }
    };
    if start >= size || start > end {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

fn object_headers(m: &ObjectMeta) -> Vec<(header::HeaderName, HeaderValue)> {
    let mut h = vec![
        (header::ETAG, HeaderValue::from_str(&m.etag).ok()),
        (
            header::LAST_MODIFIED,
            HeaderValue::from_str(&http_date(m.modified_ms)).ok(),
        ),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_str(&m.content_type).ok(),
        ),
        (
            header::ACCEPT_RANGES,
            Some(HeaderValue::from_static("bytes")),
        ),
    ];
    for (k, v) in &m.metadata {
        if let Ok(name) = header::HeaderName::from_bytes(format!("x-amz-meta-{k}").as_bytes()) {
            h.push((name, HeaderValue::from_bytes(v.as_bytes()).ok()));
        }
    }
    h.into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

async fn get_object(
    store: Arc<ObjectStore>,
    ns: Namespace,
    (bucket, key): (String, String),
    h: &HeaderMap,
    q: &HashMap<String, String>,
    head: bool,
) -> Result<Response, S3Error> {
    let (meta, file) = if head {
        let m = blocking(move || store.head(&ns, &bucket, &key)).await?;
        (m, None)
    } else {
        let (m, f) = blocking(move || store.open_read(&ns, &bucket, &key)).await?;
        (m, Some(f))
    };
    // Conditional GETs: ETag and modification time.
    match Conditions::from_headers(h, "").check(&meta.etag, meta.modified_ms) {
        Verdict::Proceed => {}
        Verdict::Failed => {
            return Err(err(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "At least one of the preconditions you specified did not hold (If-Match, If-Unmodified-Since)",
            ));
        }
        Verdict::NotModified => {
            let mut r = StatusCode::NOT_MODIFIED.into_response();
            for (k, v) in object_headers(&meta) {
                if k == header::ETAG || k == header::LAST_MODIFIED {
                    r.headers_mut().insert(k, v);
                }
            }
            return Ok(r);
        }
    }
    let range = parse_range(h, meta.size)?;
    let (status, start, len) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        None => (StatusCode::OK, 0, meta.size),
    };
    let body = match file {
        None => Body::empty(),
        Some(wisp_objects::Content::File(f)) => stream_file(f, start, len),
        Some(wisp_objects::Content::Inline(b)) => {
            Body::from(b[start as usize..(start + len) as usize].to_vec())
        }
    };
    let mut r = Response::builder().status(status);
    for (k, v) in object_headers(&meta) {
        r = r.header(k, v);
    }
    r = r.header(header::CONTENT_LENGTH, len);
    // response-content-* overrides (signed requests only, as all are here).
    for (param, name) in [
        ("response-content-type", header::CONTENT_TYPE),
        ("response-content-language", header::CONTENT_LANGUAGE),
        ("response-expires", header::EXPIRES),
        ("response-cache-control", header::CACHE_CONTROL),
        ("response-content-disposition", header::CONTENT_DISPOSITION),
        ("response-content-encoding", header::CONTENT_ENCODING),
    ] {
        if let Some(v) = q.get(param).and_then(|v| HeaderValue::from_str(v).ok())
            && let Some(hs) = r.headers_mut()
        {
            hs.insert(name, v);
        }
    }
    if range.is_some() {
        r = r.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{}", start + len - 1, meta.size),
        );
    }
    r.body(body).map_err(internal)
}

/// The file's bytes `start..start+len`, read on a blocking thread.
fn stream_file(mut f: std::fs::File, start: u64, len: u64) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek, SeekFrom};
        if let Err(e) = f.seek(SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = len;
        while left > 0 {
            // Read into fresh capacity (not zeroed first).
            let want = left.min(4 << 20);
            let mut buf = Vec::with_capacity(want as usize);
            match (&mut f).take(want).read_to_end(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    left -= n as u64;
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}

/// Functions' requests to the S3 endpoint, served in-process as the
/// function (see `wisp_exec_wasm::ObjectsHook`).
pub(crate) struct FunctionObjects {
    pub state: AppState,
}

impl wisp_exec_wasm::ObjectsHook for FunctionObjects {
    fn call(
        &self,
        caller: wisp_exec_wasm::FunctionCaller,
        req: http::Request<wisp_exec_wasm::WasiBody>,
    ) -> std::pin::Pin<Box<dyn Future<Output = http::Response<wisp_exec_wasm::WasiBody>> + Send>>
    {
        use http_body_util::BodyExt;
        let st = self.state.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let req = Request::from_parts(parts, Body::new(body));
            let resource = percent_decode(req.uri().path(), false);
            let head = req.method() == Method::HEAD;
            let who = Caller {
                ns: caller.namespace,
                role: Role::Invoker,
                body_sha256: None,
                function: Some((caller.function, caller.grants)),
            };
            let method = req.method().clone();
            let id = wisp_core::ActivationId::generate().to_string();
            let resp = match dispatch_as(&st, who, req).await {
                Ok(r) => r,
                Err(e) => error_response(e, &resource, head, &id),
            };
            count(&method, &resp);
            let resp = with_request_id(resp, &id);
            resp.map(|b| {
                b.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))
                    .boxed_unsync()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_ranges_and_xml() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(1_795_000_000_000),
            "Wed, 18 Nov 2026 11:06:40 GMT"
        );
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, "bytes=2-5".parse().unwrap());
        assert_eq!(parse_range(&h, 10).ok().flatten(), Some((2, 5)));
        h.insert(header::RANGE, "bytes=-3".parse().unwrap());
        assert_eq!(parse_range(&h, 10).ok().flatten(), Some((7, 9)));
        h.insert(header::RANGE, "bytes=8-".parse().unwrap());
        assert_eq!(parse_range(&h, 10).ok().flatten(), Some((8, 9)));
        h.insert(header::RANGE, "bytes=10-".parse().unwrap());
        assert!(parse_range(&h, 10).is_err());
        let body = "<CompleteMultipartUpload><Part><ETag>&quot;a&quot;</ETag><PartNumber>1</PartNumber></Part><Part><ETag>\"b\"</ETag><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>";
        assert_eq!(xml_all(body, "PartNumber"), ["1", "2"]);
        assert_eq!(xml_all(body, "ETag"), ["\"a\"", "\"b\""]);
        assert_eq!(xml_escape("a<&>\"b"), "a&lt;&amp;&gt;&quot;b");
    }
}
