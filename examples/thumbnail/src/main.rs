//! Upload an image → a thumbnail appears under another prefix → a route
//! serves it.
//!
//! - `POST /` with a CloudEvent (binary mode) `dev.wisp.object.created` for a
//!   key under `THUMB_SOURCE_PREFIX` (default `in/`): reads the object, makes
//!   a PNG that fits in `THUMB_SIZE`×`THUMB_SIZE` (default 128) and writes it
//!   to `THUMB_TARGET_PREFIX{file stem}.png` (default `out/`) in the same
//!   bucket.
//! - `GET …/thumbs/{name}`: serves `out/{name}` from `THUMB_BUCKET` (default
//!   `photos`).
//!
//! Objects are read and written with plain, unsigned S3 path-style requests
//! to `WISP_S3_ENDPOINT`; Wisp authorizes them for the function, which holds
//! no credentials. Deploy it with an object-storage grant (`--objects`).

use serde::Deserialize;
use serde_json::json;
use thumbnail::{ThumbnailError, encode_key, make_thumbnail, thumbnail_key, thumbs_name};
use wstd::http::{Body, Client, Error, Method, Request, Response, StatusCode};

const CREATED: &str = "dev.wisp.object.created";
const DELETED: &str = "dev.wisp.object.deleted";

/// The data of a `dev.wisp.object.*` event; other fields (size, etag,
/// content_type, namespace) are not needed.
#[derive(Deserialize)]
struct ObjectEvent {
    bucket: String,
    key: String,
}

/// A response that is not a success: status and message. Event responses
/// carry it as JSON, route responses as text.
struct Failure(StatusCode, String);

impl Failure {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Failure(status, msg.into())
    }
}

#[wstd::http_server]
async fn main(mut req: Request<Body>) -> Result<Response<Body>, Error> {
    let path = req.uri().path().to_string();
    let ce_type = req
        .headers()
        .get("ce-type")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());

    match (req.method(), ce_type) {
        // Events are delivered as `POST /`; the `ce-type` header is what
        // makes a request an event.
        (&Method::POST, Some(ce_type)) => {
            let body = req.body_mut().contents().await?.to_vec();
            match on_event(&ce_type, &body).await {
                Ok(v) => json_response(StatusCode::OK, v),
                Err(Failure(status, msg)) => json_response(status, json!({ "error": msg })),
            }
        }
        (&Method::GET, _) if path.contains("/thumbs/") => match serve_thumbnail(&path).await {
            Ok(png) => Ok(Response::builder()
                .header("content-type", "image/png")
                .header("cache-control", "public, max-age=60")
                .header("content-length", png.len())
                .body(png.into())?),
            Err(Failure(status, msg)) => text_response(status, msg),
        },
        _ => text_response(
            StatusCode::NOT_FOUND,
            "This function answers two requests:\n  \
             POST /                a dev.wisp.object.created CloudEvent: makes a thumbnail\n  \
             GET  /thumbs/{name}   serves the thumbnail {name} (e.g. /thumbs/cat.png)\n",
        ),
    }
}

/// Handles one object event; the value is the JSON answered with a 200.
async fn on_event(ce_type: &str, body: &[u8]) -> Result<serde_json::Value, Failure> {
    let source_prefix = env_or("THUMB_SOURCE_PREFIX", "in/");
    let target_prefix = env_or("THUMB_TARGET_PREFIX", "out/");
    match ce_type {
        CREATED => {}
        DELETED => return Ok(json!({ "skipped": "object deleted: nothing to do" })),
        other => return Ok(json!({ "skipped": format!("event type {other} is not handled") })),
    }
    let event: ObjectEvent = serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            format!("the event data is not a Wisp object event: {e}"),
        )
    })?;
    let key = &event.key;

    // The loop guard. This function writes into the bucket it is triggered
    // by, so its own thumbnails raise events too: those (under the target
    // prefix, and anything else outside the source prefix) are acknowledged
    // with a 200 and left alone, never thumbnailed again. The trigger's
    // `--prefix in/` filter keeps them from being delivered at all; this is
    // the second line of defence.
    if !target_prefix.is_empty() && key.starts_with(&target_prefix) {
        return Ok(
            json!({ "skipped": format!("{key} is already a thumbnail (under {target_prefix})") }),
        );
    }
    if !key.starts_with(&source_prefix) {
        return Ok(json!({ "skipped": format!("{key} is not under {source_prefix}") }));
    }
    let Some(thumb_key) = thumbnail_key(key, &target_prefix) else {
        return Ok(json!({ "skipped": format!("{key} has no file name") }));
    };

    let size = thumb_size()?;
    let s3 = S3::from_env()?;
    let original = s3.get(&event.bucket, key).await?.ok_or_else(|| {
        Failure::new(
            StatusCode::BAD_GATEWAY,
            format!("S3 GET {}/{key}: 404, the object is gone", event.bucket),
        )
    })?;
    let thumb = make_thumbnail(&original, size).map_err(|e| match e {
        ThumbnailError::NotAnImage(_) => {
            Failure::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{key}: {e}"))
        }
        ThumbnailError::Encode(_) => {
            Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{key}: {e}"))
        }
    })?;
    s3.put(&event.bucket, &thumb_key, "image/png", thumb.png)
        .await?;
    Ok(json!({
        "source": key,
        "thumbnail": thumb_key,
        "width": thumb.width,
        "height": thumb.height,
    }))
}

/// Reads `{THUMB_TARGET_PREFIX}{name}` for `GET …/thumbs/{name}`.
async fn serve_thumbnail(path: &str) -> Result<Vec<u8>, Failure> {
    let name = thumbs_name(path).ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            "no such thumbnail: use GET /thumbs/{name} with a plain file name\n",
        )
    })?;
    let bucket = env_or("THUMB_BUCKET", "photos");
    let key = format!("{}{name}", env_or("THUMB_TARGET_PREFIX", "out/"));
    let s3 = S3::from_env()?;
    s3.get(&bucket, &key).await?.ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            format!("no thumbnail {name} (s3://{bucket}/{key} does not exist)\n"),
        )
    })
}

/// The node's S3-compatible endpoint, spoken to in path style without
/// signatures: Wisp signs the function's requests on its way out.
struct S3 {
    endpoint: String,
}

impl S3 {
    fn from_env() -> Result<Self, Failure> {
        match std::env::var("WISP_S3_ENDPOINT") {
            Ok(e) if !e.is_empty() => Ok(S3 {
                endpoint: e.trim_end_matches('/').to_string(),
            }),
            _ => Err(Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "WISP_S3_ENDPOINT is not set: this function must be deployed with an \
                 object-storage grant (wisp deploy … --objects BUCKET)",
            )),
        }
    }

    fn url(&self, bucket: &str, key: &str) -> String {
        format!(
            "{}/{}/{}",
            self.endpoint,
            encode_key(bucket),
            encode_key(key)
        )
    }

    /// The object's bytes, or `None` when it does not exist.
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, Failure> {
        let what = format!("S3 GET {bucket}/{key}");
        let req = Request::get(self.url(bucket, key))
            .body(Body::empty())
            .map_err(|e| bad_gateway(&what, e))?;
        let mut res = Client::new()
            .send(req)
            .await
            .map_err(|e| bad_gateway(&what, e))?;
        let status = res.status();
        let body = res
            .body_mut()
            .contents()
            .await
            .map_err(|e| bad_gateway(&what, e))?
            .to_vec();
        match status {
            StatusCode::OK => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(s3_failure(&what, status, &body)),
        }
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), Failure> {
        let what = format!("S3 PUT {bucket}/{key}");
        let req = Request::put(self.url(bucket, key))
            .header("content-type", content_type)
            // wstd does not add one; S3 servers want it on a PUT.
            .header("content-length", bytes.len())
            .body(Body::from(bytes))
            .map_err(|e| bad_gateway(&what, e))?;
        let mut res = Client::new()
            .send(req)
            .await
            .map_err(|e| bad_gateway(&what, e))?;
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        let body = res.body_mut().contents().await.unwrap_or_default().to_vec();
        Err(s3_failure(&what, status, &body))
    }
}

fn bad_gateway(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(StatusCode::BAD_GATEWAY, format!("{what} failed: {e}"))
}

/// A 502 that quotes the failed S3 call's status and (the start of) its body.
fn s3_failure(what: &str, status: StatusCode, body: &[u8]) -> Failure {
    let body = String::from_utf8_lossy(&body[..body.len().min(2048)]);
    Failure::new(
        StatusCode::BAD_GATEWAY,
        format!("{what}: {status}: {}", body.trim()),
    )
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn thumb_size() -> Result<u32, Failure> {
    match std::env::var("THUMB_SIZE") {
        Err(_) => Ok(128),
        Ok(v) => match v.trim().parse::<u32>() {
            Ok(n @ 1..=4096) => Ok(n),
            _ => Err(Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("THUMB_SIZE must be a number of pixels from 1 to 4096, not {v:?}"),
            )),
        },
    }
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Result<Response<Body>, Error> {
    let body = v.to_string();
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(body.into())?)
}

fn text_response(status: StatusCode, msg: impl Into<String>) -> Result<Response<Body>, Error> {
    let body = msg.into();
    Ok(Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .header("content-length", body.len())
        .body(body.into())?)
}
