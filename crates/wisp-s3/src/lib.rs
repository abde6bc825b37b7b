//! The S3 API of Wisp's object store, on its own listener (`wisp serve
//! --s3-listen`, default `127.0.0.1:9000`), path-style
//! (`/{bucket}/{key}`).
//!
//! Where it sits: the gateway hands every request of the S3 listener, and
//! every request a function makes to the S3 endpoint, to [`S3Api::handle`].
//! The protocol is the `s3s` crate's: it parses each S3 operation and
//! sub-resource from the AWS Smithy model, checks signatures (SigV4 in
//! headers, presigned URLs, `aws-chunked` streaming with trailers, SigV2,
//! POST-policy form uploads) and writes the XML. This crate implements
//! the operations Wisp supports ([`ops`]) over [`wisp_objects`]; every
//! other operation is s3s's default, `501 NotImplemented`, before anything
//! is read or changed. Headers that ask for what Wisp cannot honour
//! (server-side encryption, object lock, tags, ACL grants, storage
//! classes, website redirects) are refused, not ignored.
//!
//! Who may do what ([`access`]): a request is signed with a Wisp access
//! key (`wisp accesskey create`), whose namespace it acts in (buckets are
//! per namespace) and whose role decides: any role reads, `invoker`,
//! `deployer` and `admin` write objects, `deployer` and `admin` create and
//! delete buckets. A function's own requests arrive unsigned with a
//! [`FunctionCaller`] attached by Wisp (a request extension no client can
//! set): they act in the function's namespace, only on the buckets its
//! spec grants. Anonymous requests are refused.
//!
//! Object changes queue their storage events through [`ObjectEvents`]
//! before the change is acknowledged.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wisp_core::{AccessKeyRecord, FunctionName, Namespace};
use wisp_objects::{ObjectMeta, ObjectStore};

mod access;
mod cond;
mod error;
mod ops;
mod refuse;

pub use s3s::Body;

/// Looks up access keys: the record and its secret.
pub trait KeyLookup: Send + Sync + 'static {
    fn access_key(&self, id: &str) -> Option<(AccessKeyRecord, String)>;
}

/// Queues the storage events of an object change (created or replaced,
/// or deleted). The change is acknowledged to the client only once this
/// returned `Ok`; an `Err` (its text) answers 503 SlowDown, the change
/// kept.
#[async_trait::async_trait]
pub trait ObjectEvents: Send + Sync + 'static {
    async fn object_changed(
        &self,
        ns: &Namespace,
        bucket: &str,
        meta: &ObjectMeta,
        created: bool,
        writer: Option<&FunctionName>,
    ) -> Result<(), String>;
}

/// A function's request, served in-process: attach it as a request
/// extension (clients cannot set extensions).
#[derive(Clone, Debug)]
pub struct FunctionCaller {
    pub namespace: Namespace,
    pub function: FunctionName,
    /// The buckets the function's spec grants (`--objects`).
    pub grants: Arc<[String]>,
}

/// The S3 API: one per node.
pub struct S3Api {
    service: s3s::service::S3Service,
}

impl S3Api {
    pub fn new(
        objects: Arc<ObjectStore>,
        keys: Arc<dyn KeyLookup>,
        events: Arc<dyn ObjectEvents>,
    ) -> Self {
        let mut b = s3s::service::S3ServiceBuilder::new(ops::Wisp { objects, events });
        b.set_auth(access::Auth { keys: keys.clone() });
        b.set_access(access::Access { keys });
        Self { service: b.build() }
    }

    /// Serves one request. Every answer carries an `x-amz-request-id`; an
    /// error answer to a request with a body it may not have read says
    /// `Connection: close`.
    pub async fn handle<B>(&self, req: http::Request<B>) -> http::Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let method = req.method().clone();
        let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
            || req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        let id = wisp_core::ActivationId::generate().to_string();
        let attributes = method == http::Method::GET
            && req.uri().query().is_some_and(|q| {
                q.split('&')
                    .any(|p| p == "attributes" || p == "attributes=")
            });
        let req = req.map(Body::http_body_unsync);
        let mut resp = match self.service.call(req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = ?e, "the S3 service failed");
                let mut r = http::Response::new(Body::empty());
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        };
        if resp.status() == StatusCode::NOT_MODIFIED {
            // No body, not even an error's (RFC 9110 §15.4.5).
            *resp.body_mut() = Body::empty();
            resp.headers_mut().remove(header::CONTENT_TYPE);
            resp.headers_mut().remove(header::CONTENT_LENGTH);
        }
        if method == http::Method::POST
            && resp.status() == StatusCode::BAD_REQUEST
            && let Some(xml) = resp.body().bytes()
            && let Some(fixed) = policy_condition_failed(&xml)
        {
            // A POST form that breaks its policy's conditions is AWS's
            // `403 AccessDenied` ("Invalid according to Policy"); s3s
            // answers 400 InvalidPolicyDocument, which AWS keeps for a
            // policy it cannot read.
            *resp.status_mut() = StatusCode::FORBIDDEN;
            resp.headers_mut().remove(header::CONTENT_LENGTH);
            *resp.body_mut() = Body::from(fixed);
        }
        if status_is_error(resp.status())
            && let Some(xml) = resp.body().bytes()
            && let Some(at) = find(&xml, b"</Error>")
        {
            // The error's RequestId, the same as the header's.
            let mut b = Vec::with_capacity(xml.len() + 64);
            b.extend_from_slice(&xml[..at]);
            b.extend_from_slice(format!("<RequestId>{id}</RequestId>").as_bytes());
            b.extend_from_slice(&xml[at..]);
            resp.headers_mut().remove(header::CONTENT_LENGTH);
            *resp.body_mut() = Body::from(b);
        }
        if attributes
            && resp.status() == StatusCode::OK
            && let Some(xml) = resp.body().bytes()
            && let Some(at) = find(&xml, b"<ETag>\"")
        {
            // GetObjectAttributes answers the ETag unquoted (AWS's
            // documented shape; s3s writes every ETag quoted).
            let end = find(&xml[at..], b"\"</ETag>").map(|e| at + e);
            if let Some(end) = end {
                let mut b = Vec::with_capacity(xml.len());
                b.extend_from_slice(&xml[..at + 6]);
                b.extend_from_slice(&xml[at + 7..end]);
                b.extend_from_slice(&xml[end + 1..]);
                resp.headers_mut().remove(header::CONTENT_LENGTH);
                *resp.body_mut() = Body::from(b);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert("x-amz-request-id", v);
        }
        let status = resp.status();
        if has_body && status_is_error(status) {
            // A refused request's body may be left unread, and then the
            // connection cannot carry another request: say so, or a
            // client that reuses it sees it closed without an answer.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        count(&method, status);
        resp
    }
}

/// The error XML of a POST policy condition that failed, as AWS words
/// it; none for any other error.
fn policy_condition_failed(xml: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(xml).ok()?;
    let code = "<Code>InvalidPolicyDocument</Code>";
    if !text.contains(code) {
        return None;
    }
    let m = text.find("<Message>")? + "<Message>".len();
    let message = &text[m..];
    if !(message.starts_with("Policy condition") || message.starts_with("Bucket in form field")) {
        return None;
    }
    let fixed = text
        .replacen(code, "<Code>AccessDenied</Code>", 1)
        .replacen("<Message>", "<Message>Invalid according to Policy: ", 1);
    Some(fixed.into_bytes())
}

fn status_is_error(s: StatusCode) -> bool {
    s.is_client_error() || s.is_server_error()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Requests served, by method and status (`wisp_s3_requests_total`).
static REQUESTS: Mutex<BTreeMap<(String, u16), u64>> = Mutex::new(BTreeMap::new());

fn count(method: &http::Method, status: StatusCode) {
    *REQUESTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((method.to_string(), status.as_u16()))
        .or_default() += 1;
}

/// The S3 API's metrics, for the node's registry.
pub fn collector() -> impl wisp_core::metrics::Collector {
    wisp_core::metrics::FnCollector("s3", |e: &mut wisp_core::metrics::DescriptorEncoder| {
        let requests: Vec<((String, String), u64)> = REQUESTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((m, code), n)| ((m.clone(), code.to_string()), *n))
            .collect();
        wisp_core::metrics::counter(
            e,
            "wisp_s3_requests",
            "Requests to the S3 API (functions' included), by method and status.",
            requests
                .iter()
                .map(|((m, code), n)| (vec![("method", m.as_str()), ("code", code.as_str())], *n)),
        )
    })
}
