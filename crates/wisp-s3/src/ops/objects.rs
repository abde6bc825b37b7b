//! Objects: PUT (and POST, the browser form upload, which s3s turns into
//! a PUT once its policy and signature hold), GET and HEAD (ranges, one
//! part of a multipart object, conditions), DELETE one or many, COPY.

use super::body::{self, Claims, Received};
use super::{Wisp, buckets, caller, etag, no_version, timestamp};
use crate::access::Caller;
use crate::cond::{self, Conditions, Verdict, seconds};
use crate::error::{blocking, from_store, internal, invalid_argument, s3err};
use bytes::Bytes;
use http::StatusCode;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use wisp_core::Namespace;
use wisp_objects::{HEADER_PREFIX, ObjectError, ObjectMeta};

/// The standard headers a write may set, kept with the object.
#[derive(Default)]
pub(super) struct Attrs {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<Timestamp>,
    pub metadata: Option<Metadata>,
}

impl Attrs {
    /// The content type and the stored map (user metadata and headers).
    pub(super) fn into_stored(self) -> (String, BTreeMap<String, String>) {
        let mut md: BTreeMap<String, String> = self
            .metadata
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        // `aws-chunked` describes the request, not the object.
        let encoding = self.content_encoding.and_then(|e| {
            let rest: Vec<&str> = e
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("aws-chunked"))
                .collect();
            (!rest.is_empty()).then(|| rest.join(", "))
        });
        let expires = self.expires.and_then(|t| {
            let mut buf = Vec::new();
            t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
            String::from_utf8(buf).ok()
        });
        for (name, v) in [
            ("cache-control", self.cache_control),
            ("content-disposition", self.content_disposition),
            ("content-encoding", encoding),
            ("content-language", self.content_language),
            ("expires", expires),
        ] {
            if let Some(v) = v {
                md.insert(format!("{HEADER_PREFIX}{name}"), v);
            }
        }
        (
            self.content_type
                .unwrap_or_else(|| "binary/octet-stream".into()),
            md,
        )
    }
}

fn user_metadata(m: &ObjectMeta) -> Option<Metadata> {
    let md: Metadata = m
        .user_metadata()
        .filter(|(_, v)| v.is_ascii())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (!md.is_empty()).then_some(md)
}

/// User metadata that is not ASCII, as raw UTF-8 header values (s3s
/// would send it RFC 2047-encoded; clients, and ceph/s3-tests, read back
/// what they stored).
fn raw_metadata(m: &ObjectMeta) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in m.user_metadata().filter(|(_, v)| !v.is_ascii()) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(format!("x-amz-meta-{k}").as_bytes()),
            http::HeaderValue::from_bytes(v.as_bytes()),
        ) {
            h.insert(name, value);
        }
    }
    h
}

fn header(m: &ObjectMeta, name: &str) -> Option<String> {
    m.header(name).map(String::from)
}

fn expires(m: &ObjectMeta) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, m.header("expires")?).ok()
}

fn precondition_failed(what: &str) -> S3Error {
    s3err(
        S3ErrorCode::PreconditionFailed,
        format!("At least one of the preconditions you specified did not hold ({what})"),
    )
}

/// Conditional writes: `If-None-Match: *` (only if the key is free) and
/// `If-Match: ETAG` (only over that object) → 412, or 404 NoSuchKey for
/// If-Match on a missing key. Checked before the write, not atomically
/// with it.
pub(super) async fn check_write(
    w: &Wisp,
    ns: &Namespace,
    (bucket, key): (&str, &str),
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<()> {
    if if_match.is_none() && if_none_match.is_none() {
        return Ok(());
    }
    let (s, n, b, k) = (
        w.objects.clone(),
        ns.clone(),
        bucket.to_string(),
        key.to_string(),
    );
    let existing = match tokio::task::spawn_blocking(move || s.head(&n, &b, &k))
        .await
        .map_err(internal)?
    {
        Ok(m) => Some(m),
        Err(ObjectError::NoSuchKey(_)) => None,
        Err(e) => return Err(from_store(e)),
    };
    match (&existing, if_match, if_none_match) {
        (None, Some(_), _) => Err(from_store(ObjectError::NoSuchKey(key.to_string()))),
        (Some(m), Some(want), _) if !cond::etag_matches(want, &m.etag) => Err(precondition_failed(
            "If-Match / If-None-Match; nothing was written",
        )),
        (Some(m), _, Some(none)) if cond::etag_matches(none, &m.etag) => Err(precondition_failed(
            "If-Match / If-None-Match; nothing was written",
        )),
        _ => Ok(()),
    }
}

/// A condition header parsed from the request (for operations whose
/// input s3s gives without it).
fn condition(h: &http::HeaderMap, name: &str) -> S3Result<Option<ETagCondition>> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => ETagCondition::parse_http_header(v.as_bytes())
            .map(Some)
            .map_err(|_| invalid_argument(format!("{name} is not an ETag or *"))),
    }
}

pub(super) async fn put(
    w: &Wisp,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    wisp_objects::check_key(&i.key).map_err(from_store)?;
    buckets::exists(w, &c.ns, &i.bucket).await?;
    check_write(
        w,
        &c.ns,
        (&i.bucket, &i.key),
        i.if_match.as_ref(),
        i.if_none_match.as_ref(),
    )
    .await?;
    let claims = Claims::new(
        &req.headers,
        i.content_md5,
        claimed_sums!(i),
        i.checksum_algorithm.as_ref(),
        req.trailing_headers,
    );
    let (received, sums) = body::receive(&w.objects, i.body, i.content_length, claims).await?;
    let (ct, mut md) = attrs_of!(i).into_stored();
    md.extend(sums.clone());
    let (store, ns, b, k) = (w.objects.clone(), c.ns.clone(), i.bucket.clone(), i.key);
    let meta = match received {
        // Small: kept in the database, group-committed with other writes.
        Received::Inline(data) => {
            blocking(move || store.put_inline(&ns, &b, &k, data, &ct, &md)).await?
        }
        Received::Blob(blob) => blocking(move || store.commit(&ns, &b, &k, blob, &ct, &md)).await?,
    };
    w.notify(&c, &i.bucket, &meta, true).await?;
    let s = body::sums_in(&sums);
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(etag(&meta.etag)),
        checksum_crc32: s.checksum_crc32,
        checksum_crc32c: s.checksum_crc32c,
        checksum_sha1: s.checksum_sha1,
        checksum_sha256: s.checksum_sha256,
        checksum_crc64nvme: s.checksum_crc64nvme,
        ..Default::default()
    }))
}

/// What a GET or HEAD reads: the byte range (inclusive start, length),
/// the part count of a one-part read, and whether it is the whole object.
struct Slice {
    start: u64,
    len: u64,
    status: StatusCode,
    content_range: Option<String>,
    parts_count: Option<i32>,
    /// The part read (its index), for `?partNumber`.
    part: Option<usize>,
}

fn slice(meta: &ObjectMeta, range: Option<&Range>, part: Option<i32>) -> S3Result<Slice> {
    let whole = Slice {
        start: 0,
        len: meta.size,
        status: StatusCode::OK,
        content_range: None,
        parts_count: None,
        part: None,
    };
    if let Some(n) = part {
        if range.is_some() {
            return Err(invalid_argument(
                "Cannot specify both Range header and partNumber query parameter",
            ));
        }
        let sizes = meta.part_sizes().unwrap_or_else(|| vec![meta.size]);
        if n < 1 || n as usize > sizes.len() {
            // As Ceph RGW and ceph/s3-tests (AWS documents
            // 416 InvalidPartNumber).
            return Err(s3err(
                S3ErrorCode::InvalidPart,
                format!(
                    "The requested partnumber {n} is not satisfiable: the object has {} part(s)",
                    sizes.len()
                ),
            ));
        }
        let start: u64 = sizes[..n as usize - 1].iter().sum();
        let len = sizes[n as usize - 1];
        let count = meta.part_sizes().map(|s| s.len() as i32);
        return Ok(Slice {
            start,
            len,
            status: if count.is_some() {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            },
            content_range: count.map(|_| {
                format!(
                    "bytes {start}-{}/{}",
                    (start + len).saturating_sub(1),
                    meta.size
                )
            }),
            parts_count: count,
            part: Some(n as usize - 1),
        });
    }
    let Some(r) = range else { return Ok(whole) };
    let r = r.check(meta.size).map_err(|_| {
        s3err(
            S3ErrorCode::InvalidRange,
            format!(
                "The requested range is not satisfiable (the object is {} bytes)",
                meta.size
            ),
        )
    })?;
    Ok(Slice {
        start: r.start,
        len: r.end - r.start,
        status: StatusCode::PARTIAL_CONTENT,
        content_range: Some(format!(
            "bytes {}-{}/{}",
            r.start,
            r.end.saturating_sub(1),
            meta.size
        )),
        parts_count: None,
        part: None,
    })
}

/// The stored checksums, when asked for (`x-amz-checksum-mode`) and the
/// whole object, or one of its parts, is read.
fn answered_sums(s: &Slice, asked: bool, meta: &ObjectMeta) -> Checksum {
    if !asked || (s.part.is_none() && s.status != StatusCode::OK) {
        return Checksum::default();
    }
    super::sums::answered(meta, s.part)
}

/// `304 Not Modified`, with the object's ETag and Last-Modified (s3s
/// answers errors with their own headers only).
fn not_modified(meta: &ObjectMeta) -> S3Error {
    let mut e = S3Error::new(S3ErrorCode::NotModified);
    e.set_status_code(StatusCode::NOT_MODIFIED);
    let mut h = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&meta.etag) {
        h.insert(http::header::ETAG, v);
    }
    let mut date = Vec::new();
    if timestamp(meta.modified_ms)
        .format(TimestampFormat::HttpDate, &mut date)
        .is_ok()
        && let Ok(v) = http::HeaderValue::from_bytes(&date)
    {
        h.insert(http::header::LAST_MODIFIED, v);
    }
    e.set_headers(h);
    e
}

/// A read's preconditions: proceed, or the answer (304 / 412).
fn preconditions(c: &Conditions, meta: &ObjectMeta) -> S3Result<bool> {
    match c.check(&meta.etag, meta.modified_ms) {
        Verdict::Proceed => Ok(true),
        Verdict::Failed => Err(precondition_failed("If-Match, If-Unmodified-Since")),
        Verdict::NotModified => Ok(false),
    }
}

/// A GET's or HEAD's answer (the two outputs share these fields): the
/// object's headers for the slice `$s` read, with the checksums `$sums`.
macro_rules! described {
    ($T:ident, $meta:ident, $s:ident, $sums:ident $(, $field:ident: $value:expr)*) => {
        $T {
            $($field: $value,)*
            accept_ranges: Some("bytes".into()),
            content_length: Some($s.len as i64),
            content_range: $s.content_range,
            parts_count: $s.parts_count,
            content_type: Some($meta.content_type.clone()),
            e_tag: Some(etag(&$meta.etag)),
            last_modified: Some(timestamp($meta.modified_ms)),
            metadata: user_metadata(&$meta),
            cache_control: header(&$meta, "cache-control"),
            content_disposition: header(&$meta, "content-disposition"),
            content_encoding: header(&$meta, "content-encoding"),
            content_language: header(&$meta, "content-language"),
            expires: expires(&$meta),
            checksum_crc32: $sums.checksum_crc32,
            checksum_crc32c: $sums.checksum_crc32c,
            checksum_sha1: $sums.checksum_sha1,
            checksum_sha256: $sums.checksum_sha256,
            checksum_crc64nvme: $sums.checksum_crc64nvme,
            checksum_type: $sums.checksum_type,
            ..Default::default()
        }
    };
}

pub(super) async fn get(
    w: &Wisp,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    no_version(i.version_id.as_deref())?;
    let (store, ns, b, k) = (w.objects.clone(), c.ns.clone(), i.bucket, i.key);
    let (meta, content) = blocking(move || store.open_read(&ns, &b, &k)).await?;
    let conds = Conditions {
        if_match: i.if_match,
        if_none_match: i.if_none_match,
        if_modified_since: seconds(i.if_modified_since),
        if_unmodified_since: seconds(i.if_unmodified_since),
    };
    if !preconditions(&conds, &meta)? {
        return Err(not_modified(&meta));
    }
    let s = slice(&meta, i.range.as_ref(), i.part_number)?;
    let body = match content {
        wisp_objects::Content::File(f) => StreamingBlob::wrap(read_file(f, s.start, s.len)),
        wisp_objects::Content::Inline(data) => {
            let part = Bytes::from(data).slice(s.start as usize..(s.start + s.len) as usize);
            StreamingBlob::wrap(futures::stream::once(async move {
                Ok::<_, std::io::Error>(part)
            }))
        }
    };
    let sums = answered_sums(&s, i.checksum_mode.is_some(), &meta);
    let mut resp = S3Response::new(described!(GetObjectOutput, meta, s, sums, body: Some(body)));
    resp.headers = raw_metadata(&meta);
    Ok(resp)
}

pub(super) async fn head(
    w: &Wisp,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    no_version(i.version_id.as_deref())?;
    let (store, ns, b, k) = (w.objects.clone(), c.ns.clone(), i.bucket, i.key);
    let meta = blocking(move || store.head(&ns, &b, &k)).await?;
    let conds = Conditions {
        if_match: i.if_match,
        if_none_match: i.if_none_match,
        if_modified_since: seconds(i.if_modified_since),
        if_unmodified_since: seconds(i.if_unmodified_since),
    };
    if !preconditions(&conds, &meta)? {
        return Err(not_modified(&meta));
    }
    let s = slice(&meta, i.range.as_ref(), i.part_number)?;
    let sums = answered_sums(&s, i.checksum_mode.is_some(), &meta);
    let mut resp = S3Response::new(described!(HeadObjectOutput, meta, s, sums));
    resp.headers = raw_metadata(&meta);
    Ok(resp)
}

pub(super) async fn delete(
    w: &Wisp,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    no_version(i.version_id.as_deref())?;
    if i.if_match_last_modified_time.is_some() || i.if_match_size.is_some() {
        return Err(s3err(
            S3ErrorCode::NotImplemented,
            "conditional deletes by modification time or size are not supported by Wisp; use If-Match with the ETag; nothing was deleted",
        ));
    }
    // A key that is not there is deleted already, whatever If-Match says
    // (as S3: a delete of nothing succeeds).
    match check_write(w, &c.ns, (&i.bucket, &i.key), i.if_match.as_ref(), None).await {
        Err(e) if *e.code() == S3ErrorCode::NoSuchKey => {
            return Ok(S3Response::new(DeleteObjectOutput::default()));
        }
        r => r?,
    }
    let (store, ns, b, k) = (w.objects.clone(), c.ns.clone(), i.bucket.clone(), i.key);
    if let Some(m) = blocking(move || store.delete(&ns, &b, &k)).await? {
        w.notify(&c, &i.bucket, &m, false).await?;
    }
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

pub(super) async fn delete_many(
    w: &Wisp,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    let objects = i.delete.objects;
    if objects.len() > 1000 {
        return Err(s3err(
            S3ErrorCode::MalformedXML,
            "at most 1,000 keys per DeleteObjects request",
        ));
    }
    for o in &objects {
        if let Some(v) = o.version_id.as_deref()
            && v != "null"
        {
            return Err(invalid_argument(format!(
                "Invalid version id specified for {:?}: {v:?} (Wisp keeps one version of each object, \"null\"); nothing was deleted",
                o.key
            )));
        }
    }
    let quiet = i.delete.quiet.unwrap_or(false);
    // Per-object conditions: an ETag must match (a missing key is deleted
    // already); by size or modification time Wisp does not check, so such
    // keys are not deleted.
    let (mut deleted, mut errors) = (Vec::new(), Vec::new());
    let mut keys: Vec<String> = Vec::with_capacity(objects.len());
    for o in objects {
        if o.size.is_some() || o.last_modified_time.is_some() {
            errors.push(Error {
                code: Some("NotImplemented".into()),
                message: Some("conditional deletes by Size or LastModifiedTime are not supported by Wisp; use ETag; not deleted".into()),
                key: Some(o.key),
                version_id: None,
            });
            continue;
        }
        if let Some(tag) = &o.e_tag {
            let want = ETagCondition::ETag(tag.clone());
            match check_write(w, &c.ns, (&i.bucket, &o.key), Some(&want), None).await {
                Ok(()) => {}
                Err(e) if *e.code() == S3ErrorCode::NoSuchKey => {}
                Err(e) => {
                    errors.push(Error {
                        code: Some(e.code().as_str().to_string()),
                        message: e.message().map(String::from),
                        key: Some(o.key),
                        version_id: None,
                    });
                    continue;
                }
            }
        }
        keys.push(o.key);
    }
    let (store, ns, b, k2) = (
        w.objects.clone(),
        c.ns.clone(),
        i.bucket.clone(),
        keys.clone(),
    );
    let results = blocking(move || {
        Ok(k2
            .iter()
            .map(|k| store.delete(&ns, &b, k))
            .collect::<Vec<_>>())
    })
    .await?;
    for (key, r) in keys.into_iter().zip(results) {
        match r {
            Ok(gone) => {
                if let Some(m) = gone {
                    w.notify(&c, &i.bucket, &m, false).await?;
                }
                if !quiet {
                    deleted.push(DeletedObject {
                        key: Some(key),
                        ..Default::default()
                    });
                }
            }
            Err(e) => {
                let e = from_store(e);
                errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(key),
                    message: e.message().map(String::from),
                    version_id: None,
                });
            }
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: (!errors.is_empty()).then_some(errors),
        request_charged: None,
    }))
}

/// The source of a copy, `BUCKET/KEY` (of the caller's namespace).
pub(super) fn copy_source(s: &CopySource) -> S3Result<(String, String)> {
    match s {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => {
            no_version(version_id.as_deref())?;
            Ok((bucket.to_string(), key.to_string()))
        }
        _ => Err(s3err(
            S3ErrorCode::NotImplemented,
            "copies from access points are not supported by Wisp; use x-amz-copy-source: BUCKET/KEY",
        )),
    }
}

/// The `x-amz-copy-source-if-*` conditions of a copy, on its source:
/// any that does not hold → 412 PreconditionFailed.
pub(super) async fn check_source(
    w: &Wisp,
    c: &Caller,
    (sb, sk): (&str, &str),
    conds: Conditions,
) -> S3Result<ObjectMeta> {
    let (s, n, b, k) = (
        w.objects.clone(),
        c.ns.clone(),
        sb.to_string(),
        sk.to_string(),
    );
    let meta = blocking(move || s.head(&n, &b, &k)).await?;
    if conds.check(&meta.etag, meta.modified_ms) != Verdict::Proceed {
        return Err(precondition_failed("x-amz-copy-source-if-*"));
    }
    Ok(meta)
}

pub(super) async fn copy(
    w: &Wisp,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let c = caller(&req)?;
    let if_match = condition(&req.headers, "if-match")?;
    let if_none_match = condition(&req.headers, "if-none-match")?;
    let i = req.input;
    let (sb, sk) = copy_source(&i.copy_source)?;
    let replace = i
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str().eq_ignore_ascii_case("REPLACE"));
    if (sb.as_str(), sk.as_str()) == (i.bucket.as_str(), i.key.as_str()) && !replace {
        return Err(s3err(
            S3ErrorCode::InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    wisp_objects::check_key(&i.key).map_err(from_store)?;
    check_source(
        w,
        &c,
        (&sb, &sk),
        Conditions {
            if_match: i.copy_source_if_match,
            if_none_match: i.copy_source_if_none_match,
            if_modified_since: seconds(i.copy_source_if_modified_since),
            if_unmodified_since: seconds(i.copy_source_if_unmodified_since),
        },
    )
    .await?;
    check_write(
        w,
        &c.ns,
        (&i.bucket, &i.key),
        if_match.as_ref(),
        if_none_match.as_ref(),
    )
    .await?;
    let (ct, md) = attrs_of!(i).into_stored();
    let (store, ns, b, k) = (w.objects.clone(), c.ns.clone(), i.bucket.clone(), i.key);
    let meta = blocking(move || {
        store.copy(
            &ns,
            (&sb, &sk),
            (&b, &k),
            replace.then_some((ct.as_str(), &md)),
        )
    })
    .await?;
    w.notify(&c, &i.bucket, &meta, true).await?;
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(etag(&meta.etag)),
            last_modified: Some(timestamp(meta.modified_ms)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// The file's bytes `start..start+len`, read on a blocking thread.
fn read_file(mut f: std::fs::File, start: u64, len: u64) -> FileChunks {
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
    FileChunks(rx)
}

/// Chunks of a file, as [`read_file`] sends them.
struct FileChunks(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures::Stream for FileChunks {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
