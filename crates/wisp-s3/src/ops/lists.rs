//! Listings: objects (V1 with markers, V2 with continuation tokens), the
//! one `null` version of each object, multipart uploads and their parts.

use super::{Wisp, caller, etag, timestamp};
use crate::access::Caller;
use crate::error::{blocking, invalid_argument};
use base64::Engine as _;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};
use wisp_objects::{Listing, MAX_KEYS};

fn max_of(name: &str, v: Option<i32>, default: usize) -> S3Result<usize> {
    match v {
        None => Ok(default),
        Some(n) if n < 0 => Err(invalid_argument(format!(
            "{name} must be a number from 0 to {default}, got {n}"
        ))),
        Some(n) => Ok((n as usize).min(default)),
    }
}

pub(super) fn token_encode(after: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(after)
}

pub(super) fn token_decode(t: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| invalid_argument("The continuation token provided is incorrect"))
}

/// Keys and prefixes as the request asked: percent-encoded with
/// `encoding-type=url`, else as they are.
#[derive(Clone, Copy)]
struct Enc(bool);

impl Enc {
    fn new(t: Option<&EncodingType>) -> Self {
        Self(t.is_some_and(|t| t.as_str() == "url"))
    }

    fn s(self, s: &str) -> String {
        if !self.0 {
            return s.to_string();
        }
        let mut o = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
                o.push(b as char);
            } else {
                o.push_str(&format!("%{b:02X}"));
            }
        }
        o
    }

    fn opt(self, s: Option<&str>) -> Option<String> {
        s.map(|s| self.s(s))
    }

    fn kind(self) -> Option<EncodingType> {
        self.0.then(|| EncodingType::from("url".to_string()))
    }
}

fn owner(c: &Caller) -> Owner {
    Owner {
        id: Some(c.ns.to_string()),
        display_name: Some(c.ns.to_string()),
    }
}

fn contents(l: &Listing, enc: Enc, owner: Option<&Owner>) -> Vec<Object> {
    l.objects
        .iter()
        .map(|m| Object {
            key: Some(enc.s(&m.key)),
            e_tag: Some(etag(&m.etag)),
            last_modified: Some(timestamp(m.modified_ms)),
            size: Some(m.size as i64),
            storage_class: Some(ObjectStorageClass::from("STANDARD".to_string())),
            owner: owner.cloned(),
            ..Default::default()
        })
        .collect()
}

fn prefixes(l: &Listing, enc: Enc) -> Vec<CommonPrefix> {
    l.common_prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(enc.s(p)),
        })
        .collect()
}

async fn list(
    w: &Wisp,
    c: &Caller,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<String>,
    max: usize,
) -> S3Result<Listing> {
    let (store, ns, b, p, d) = (
        w.objects.clone(),
        c.ns.clone(),
        bucket.to_string(),
        prefix.to_string(),
        delimiter.map(String::from),
    );
    blocking(move || store.list(&ns, &b, &p, d.as_deref(), after.as_deref(), max)).await
}

pub(super) async fn objects_v1(
    w: &Wisp,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    let enc = Enc::new(i.encoding_type.as_ref());
    let max = max_of("max-keys", i.max_keys, MAX_KEYS)?;
    let prefix = i.prefix.clone().unwrap_or_default();
    let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
    // A marker that is a common prefix (the NextMarker of a page cut
    // there) skips every key under it.
    let after = i.marker.clone().map(|m| match &delimiter {
        Some(d) if m.starts_with(&prefix) && m.len() > prefix.len() && m.ends_with(d.as_str()) => {
            format!("{m}\u{10FFFF}")
        }
        _ => m,
    });
    let l = list(w, &c, &i.bucket, &prefix, delimiter.as_deref(), after, max).await?;
    // As S3: NextMarker only with a delimiter (else the last key is the
    // marker), the last key or common prefix of the page.
    let next_marker = match (&l.next_after, &delimiter) {
        (Some(_), Some(_)) => {
            let last_key = l.objects.last().map(|m| m.key.as_str());
            let last_prefix = l.common_prefixes.last().map(String::as_str);
            enc.opt(last_key.max(last_prefix))
        }
        _ => None,
    };
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(i.bucket),
        // V1 does not encode Prefix (clients decode it only in V2).
        prefix: Some(prefix),
        marker: Some(enc.s(i.marker.as_deref().unwrap_or(""))),
        max_keys: Some(max as i32),
        is_truncated: Some(l.next_after.is_some()),
        contents: Some(contents(&l, enc, Some(&owner(&c)))),
        common_prefixes: Some(prefixes(&l, enc)),
        delimiter: enc.opt(delimiter.as_deref()),
        next_marker,
        encoding_type: enc.kind(),
        request_charged: None,
    }))
}

pub(super) async fn objects_v2(
    w: &Wisp,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let c = caller(&req)?;
    let i = req.input;
    let enc = Enc::new(i.encoding_type.as_ref());
    let max = max_of("max-keys", i.max_keys, MAX_KEYS)?;
    let prefix = i.prefix.clone().unwrap_or_default();
    let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
    let after = match &i.continuation_token {
        Some(t) => Some(token_decode(t)?),
        None => i.start_after.clone(),
    };
    let l = list(w, &c, &i.bucket, &prefix, delimiter.as_deref(), after, max).await?;
    let owner = i.fetch_owner.unwrap_or(false).then(|| owner(&c));
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(i.bucket),
        prefix: Some(enc.s(&prefix)),
        max_keys: Some(max as i32),
        key_count: Some((l.objects.len() + l.common_prefixes.len()) as i32),
        continuation_token: i.continuation_token,
        is_truncated: Some(l.next_after.is_some()),
        next_continuation_token: l.next_after.as_deref().map(token_encode),
        contents: Some(contents(&l, enc, owner.as_ref())),
        common_prefixes: Some(prefixes(&l, enc)),
        delimiter: enc.opt(delimiter.as_deref()),
        encoding_type: enc.kind(),
        start_after: enc.opt(i.start_after.as_deref()),
        request_charged: None,
    }))
}

/// ListObjectVersions of a bucket that was never versioned: one version
/// of each object, `null`.
pub(super) async fn versions(
    w: &Wisp,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    let enc = Enc::new(i.encoding_type.as_ref());
    let max = max_of("max-keys", i.max_keys, MAX_KEYS)?;
    let prefix = i.prefix.clone().unwrap_or_default();
    let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
    let after = i.key_marker.clone().filter(|m| !m.is_empty());
    let l = list(w, &c, &i.bucket, &prefix, delimiter.as_deref(), after, max).await?;
    let versions = l
        .objects
        .iter()
        .map(|m| ObjectVersion {
            key: Some(enc.s(&m.key)),
            version_id: Some("null".into()),
            is_latest: Some(true),
            e_tag: Some(etag(&m.etag)),
            last_modified: Some(timestamp(m.modified_ms)),
            size: Some(m.size as i64),
            storage_class: Some(ObjectVersionStorageClass::from("STANDARD".to_string())),
            owner: Some(owner(&c)),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(i.bucket),
        prefix: Some(enc.s(&prefix)),
        key_marker: Some(enc.s(i.key_marker.as_deref().unwrap_or(""))),
        version_id_marker: Some(i.version_id_marker.unwrap_or_default()),
        max_keys: Some(max as i32),
        is_truncated: Some(l.next_after.is_some()),
        next_key_marker: enc.opt(l.next_after.as_deref()),
        next_version_id_marker: l.next_after.as_ref().map(|_| "null".to_string()),
        versions: Some(versions),
        common_prefixes: Some(prefixes(&l, enc)),
        delimiter: enc.opt(delimiter.as_deref()),
        encoding_type: enc.kind(),
        ..Default::default()
    }))
}

pub(super) async fn uploads(
    w: &Wisp,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    let enc = Enc::new(i.encoding_type.as_ref());
    let max = max_of("max-uploads", i.max_uploads, 1000)?;
    let prefix = i.prefix.clone().unwrap_or_default();
    let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
    let key_marker = i.key_marker.clone().unwrap_or_default();
    let id_marker = i.upload_id_marker.clone().unwrap_or_default();
    let (store, ns, b) = (w.objects.clone(), c.ns.clone(), i.bucket.clone());
    let all = blocking(move || store.list_uploads(&ns, &b)).await?;
    let mut uploads = Vec::new();
    let mut common: Vec<String> = Vec::new();
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
            && common.last() == Some(cp)
        {
            continue;
        }
        if uploads.len() + common.len() == max {
            truncated = true;
            break;
        }
        next = Some((key.clone(), id.clone()));
        match cp {
            Some(cp) => common.push(cp),
            None => uploads.push(MultipartUpload {
                key: Some(enc.s(&key)),
                upload_id: Some(id),
                initiated: Some(timestamp(created)),
                storage_class: Some(StorageClass::from("STANDARD".to_string())),
                owner: Some(owner(&c)),
                initiator: Some(Initiator {
                    id: Some(c.ns.to_string()),
                    display_name: Some(c.ns.to_string()),
                }),
                ..Default::default()
            }),
        }
    }
    let (next_key, next_id) = match (truncated, next) {
        (true, Some((k, i))) => (Some(enc.s(&k)), Some(i)),
        _ => (None, None),
    };
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(i.bucket),
        key_marker: Some(enc.s(&key_marker)),
        upload_id_marker: Some(id_marker),
        prefix: Some(enc.s(&prefix)),
        delimiter: enc.opt(delimiter.as_deref()),
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: next_key,
        next_upload_id_marker: next_id,
        uploads: Some(uploads),
        common_prefixes: Some(
            common
                .iter()
                .map(|p| CommonPrefix {
                    prefix: Some(enc.s(p)),
                })
                .collect(),
        ),
        encoding_type: enc.kind(),
        request_charged: None,
    }))
}

pub(super) async fn parts(
    w: &Wisp,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    let max = max_of("max-parts", i.max_parts, 1000)?;
    let marker = match i.part_number_marker {
        None => 0u64,
        Some(m) if m < 0 => {
            return Err(invalid_argument(format!(
                "part-number-marker must be a non-negative number, got {m}"
            )));
        }
        Some(m) => m as u64,
    };
    let (store, ns, b, k, id) = (
        w.objects.clone(),
        c.ns.clone(),
        i.bucket.clone(),
        i.key.clone(),
        i.upload_id.clone(),
    );
    let (all, up_meta) = blocking(move || {
        let up = store.upload(&ns, &b, &k, &id)?;
        Ok((store.list_parts(&up)?, up.metadata))
    })
    .await?;
    let after: Vec<_> = all
        .into_iter()
        .filter(|p| u64::from(p.number) > marker)
        .collect();
    let truncated = after.len() > max;
    let page = &after[..after.len().min(max)];
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(i.upload_id),
        storage_class: Some(StorageClass::from("STANDARD".to_string())),
        checksum_algorithm: super::sums::of(&up_meta)
            .map(|(a, _)| ChecksumAlgorithm::from(a.name().to_ascii_uppercase())),
        checksum_type: up_meta
            .get(&format!(
                "{}{}",
                wisp_objects::HEADER_PREFIX,
                super::sums::TYPE
            ))
            .map(|t| ChecksumType::from(t.clone())),
        part_number_marker: Some(marker as i32),
        max_parts: Some(max as i32),
        is_truncated: Some(truncated),
        next_part_number_marker: page.last().map(|p| p.number as i32),
        owner: Some(owner(&c)),
        initiator: Some(Initiator {
            id: Some(c.ns.to_string()),
            display_name: Some(c.ns.to_string()),
        }),
        parts: Some(
            page.iter()
                .map(|p| {
                    let mut s = Checksum::default();
                    if let Some((a, _)) = super::sums::of(&up_meta) {
                        a.set(&mut s, p.checksum.clone());
                    }
                    Part {
                        part_number: Some(p.number as i32),
                        e_tag: Some(etag(&p.etag)),
                        size: Some(p.size as i64),
                        checksum_crc32: s.checksum_crc32,
                        checksum_crc32c: s.checksum_crc32c,
                        checksum_sha1: s.checksum_sha1,
                        checksum_sha256: s.checksum_sha256,
                        checksum_crc64nvme: s.checksum_crc64nvme,
                        ..Default::default()
                    }
                })
                .collect(),
        ),
        ..Default::default()
    }))
}
