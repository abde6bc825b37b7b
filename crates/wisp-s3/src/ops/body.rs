//! Receiving an object's bytes: streamed to a temp blob on a blocking
//! thread (or kept in memory when small, for the database), checked
//! against `Content-MD5` and any `x-amz-checksum-*` the client sent, in a
//! header or as an `aws-chunked` trailer. (s3s checks the signed
//! `x-amz-content-sha256` and the chunk signatures itself, as the bytes
//! pass.) The checksums are kept with the object, under
//! `:x-amz-checksum-<algorithm>`, and answered when a client asks
//! (`x-amz-checksum-mode: ENABLED`).

use crate::error::{blocking, custom, internal, s3err};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, StatusCode};
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::{Checksum, ChecksumAlgorithm, StreamingBlob};
use s3s::{S3Error, S3ErrorCode, S3Result, TrailingHeaders};
use std::collections::BTreeMap;
use std::sync::Arc;
use wisp_objects::{Blob, HEADER_PREFIX, ObjectStore};

/// What arrived.
pub(super) enum Received {
    /// Small (Content-Length at most `INLINE_MAX`): for the database.
    Inline(Vec<u8>),
    Blob(Blob),
}

/// The digests a request claims for its body.
pub(super) struct Claims {
    pub content_md5: Option<String>,
    /// From headers.
    pub sums: Checksum,
    /// Algorithms whose value arrives as a trailer (`x-amz-trailer`), or
    /// that the client asked for (`x-amz-sdk-checksum-algorithm`).
    pub algorithms: Vec<String>,
    pub trailers: Option<TrailingHeaders>,
}

impl Claims {
    pub(super) fn new(
        headers: &HeaderMap,
        content_md5: Option<String>,
        sums: Checksum,
        algorithm: Option<&ChecksumAlgorithm>,
        trailers: Option<TrailingHeaders>,
    ) -> Self {
        let mut algorithms: Vec<String> = headers
            .get_all("x-amz-trailer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| t.trim().strip_prefix("x-amz-checksum-"))
            .map(str::to_ascii_lowercase)
            .collect();
        if let Some(a) = algorithm {
            algorithms.push(a.as_str().to_ascii_lowercase());
        }
        Self {
            content_md5,
            sums,
            algorithms,
            trailers,
        }
    }

    /// Also computes `name`'s checksum (an upload's algorithm, for its
    /// parts).
    pub(super) fn also(mut self, name: Option<&str>) -> Self {
        self.algorithms.extend(name.map(String::from));
        self
    }

    fn wants(&self, name: &str) -> bool {
        self.algorithms.iter().any(|a| a == name)
    }

    fn hasher(&self) -> ChecksumHasher {
        let s = &self.sums;
        ChecksumHasher {
            crc32: (s.checksum_crc32.is_some() || self.wants("crc32"))
                .then(s3s::crypto::Crc32::new),
            crc32c: (s.checksum_crc32c.is_some() || self.wants("crc32c"))
                .then(s3s::crypto::Crc32c::new),
            sha1: (s.checksum_sha1.is_some() || self.wants("sha1")).then(s3s::crypto::Sha1::new),
            sha256: (s.checksum_sha256.is_some() || self.wants("sha256"))
                .then(s3s::crypto::Sha256::new),
            crc64nvme: (s.checksum_crc64nvme.is_some() || self.wants("crc64nvme"))
                .then(s3s::crypto::Crc64Nvme::new),
        }
    }
}

/// The checksums of a received body, as stored with the object.
pub(super) type Sums = BTreeMap<String, String>;

/// Streams `body` in, then checks it against `claims`.
pub(super) async fn receive(
    store: &Arc<ObjectStore>,
    body: Option<StreamingBlob>,
    content_length: Option<i64>,
    claims: Claims,
) -> S3Result<(Received, Sums)> {
    let small = content_length.is_some_and(|n| n >= 0 && n as usize <= wisp_objects::INLINE_MAX);
    let mut hasher = claims.hasher();
    let mut stream = match body {
        Some(b) => b.boxed(),
        None => futures::stream::empty().boxed(),
    };
    let received = if small {
        let mut data = Vec::with_capacity(content_length.unwrap_or(0) as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(body_error)?;
            hasher.update(&chunk);
            data.extend_from_slice(&chunk);
        }
        check_md5(claims.content_md5.as_deref(), || {
            use md5::Digest as _;
            md5::Md5::digest(&data).into()
        })?;
        Received::Inline(data)
    } else {
        let s2 = store.clone();
        let mut w = blocking(move || s2.writer_md5_only()).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let writer = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = rx.blocking_recv() {
                w.write(&chunk)?;
            }
            w.finish()
        });
        let mut failed = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    hasher.update(&c);
                    if tx.send(c).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(body_error(e));
                    break;
                }
            }
        }
        drop(tx);
        let blob = writer
            .await
            .map_err(internal)?
            .map_err(crate::error::from_store)?;
        if let Some(e) = failed {
            return Err(e);
        }
        check_md5(claims.content_md5.as_deref(), || blob.md5)?;
        Received::Blob(blob)
    };
    let sums = check_sums(&claims, hasher.finalize())?;
    Ok((received, sums))
}

/// A body stream's failure: a signature or SHA-256 that did not match
/// (s3s checks them as the bytes pass), or a body that ended early.
fn body_error(e: Box<dyn std::error::Error + Send + Sync>) -> S3Error {
    let text = e.to_string();
    if text.contains("Sha256Mismatch") {
        return custom(
            "XAmzContentSHA256Mismatch",
            StatusCode::BAD_REQUEST,
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        );
    }
    if text.contains("Signature") {
        return s3err(
            S3ErrorCode::SignatureDoesNotMatch,
            format!("a chunk's signature does not match: {text}"),
        );
    }
    s3err(
        S3ErrorCode::IncompleteBody,
        format!("the request body ended early or was malformed: {text}"),
    )
}

fn check_md5(given: Option<&str>, md5: impl FnOnce() -> [u8; 16]) -> S3Result<()> {
    if let Some(given) = given
        && given.trim() != base64::engine::general_purpose::STANDARD.encode(md5())
    {
        return Err(s3err(
            S3ErrorCode::BadDigest,
            "The Content-MD5 you specified did not match what was received.",
        ));
    }
    Ok(())
}

/// Compares what was computed with what the client claimed (headers,
/// then trailers); the computed sums, for storing.
fn check_sums(claims: &Claims, ours: Checksum) -> S3Result<Sums> {
    let trailer = |name: &str| {
        claims
            .trailers
            .as_ref()
            .and_then(|t| t.read(|h| h.get(name).and_then(|v| v.to_str().ok()).map(String::from)))
            .flatten()
    };
    let mut stored = Sums::new();
    for (name, claimed, computed) in [
        ("crc32", &claims.sums.checksum_crc32, ours.checksum_crc32),
        ("crc32c", &claims.sums.checksum_crc32c, ours.checksum_crc32c),
        ("sha1", &claims.sums.checksum_sha1, ours.checksum_sha1),
        ("sha256", &claims.sums.checksum_sha256, ours.checksum_sha256),
        (
            "crc64nvme",
            &claims.sums.checksum_crc64nvme,
            ours.checksum_crc64nvme,
        ),
    ] {
        let Some(computed) = computed else { continue };
        let header = format!("x-amz-checksum-{name}");
        let claimed = claimed.clone().or_else(|| trailer(&header));
        if let Some(c) = &claimed
            && c.trim() != computed
        {
            return Err(s3err(
                S3ErrorCode::BadDigest,
                format!(
                    "The {} you specified did not match the calculated checksum.",
                    name.to_ascii_uppercase()
                ),
            ));
        }
        stored.insert(format!("{HEADER_PREFIX}{header}"), computed);
    }
    Ok(stored)
}

/// The checksums in a stored attribute map (an object's, or those just
/// computed), for an answer.
pub(super) fn sums_in(map: &BTreeMap<String, String>) -> Checksum {
    let get = |n: &str| {
        map.get(&format!("{HEADER_PREFIX}x-amz-checksum-{n}"))
            .cloned()
    };
    Checksum {
        checksum_crc32: get("crc32"),
        checksum_crc32c: get("crc32c"),
        checksum_sha1: get("sha1"),
        checksum_sha256: get("sha256"),
        checksum_crc64nvme: get("crc64nvme"),
        checksum_type: None,
    }
}

/// The stored checksums of an object.
pub(super) fn stored_sums(meta: &wisp_objects::ObjectMeta) -> Checksum {
    sums_in(&meta.metadata)
}
