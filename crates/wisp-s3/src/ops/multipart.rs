//! Multipart uploads: create, upload a part (from the body or a range of
//! an object), complete (also when repeated), abort.

use super::body::{self, Claims, Received};
use super::objects::{check_source, check_write, copy_source};
use super::sums::{self, Completion};
use super::{Wisp, caller, etag, timestamp};
use crate::cond::{Conditions, seconds};
use crate::error::{blocking, from_store, invalid_argument, s3err};
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};
use wisp_objects::ObjectError;

fn part_number(n: i32) -> S3Result<u32> {
    if (1..=wisp_objects::MAX_PARTS as i32).contains(&n) {
        Ok(n as u32)
    } else {
        Err(invalid_argument(format!(
            "Part number must be an integer between 1 and {}, inclusive (got {n})",
            wisp_objects::MAX_PARTS
        )))
    }
}

pub(super) async fn create(
    w: &Wisp,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    wisp_objects::check_key(&i.key).map_err(from_store)?;
    let checksum = sums::for_upload(i.checksum_algorithm.as_ref(), i.checksum_type.as_ref())?;
    let (algorithm, kind) = (i.checksum_algorithm.clone(), i.checksum_type.clone());
    let (ct, mut md) = attrs_of!(i).into_stored();
    let typed = !checksum.is_empty();
    md.extend(checksum);
    let (store, ns, b, k) = (w.objects.clone(), c.ns, i.bucket.clone(), i.key.clone());
    let id = blocking(move || store.create_upload(&ns, &b, &k, &ct, &md)).await?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(id),
        checksum_type: kind.or_else(|| {
            typed.then(|| {
                let full = algorithm
                    .as_ref()
                    .is_some_and(|a| a.as_str() == "CRC64NVME");
                ChecksumType::from(
                    if full {
                        ChecksumType::FULL_OBJECT
                    } else {
                        ChecksumType::COMPOSITE
                    }
                    .to_string(),
                )
            })
        }),
        checksum_algorithm: algorithm,
        ..Default::default()
    }))
}

pub(super) async fn upload_part(
    w: &Wisp,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    let n = part_number(i.part_number)?;
    let (store, ns, b, k, id) = (
        w.objects.clone(),
        c.ns.clone(),
        i.bucket.clone(),
        i.key.clone(),
        i.upload_id.clone(),
    );
    let upload = blocking(move || store.upload(&ns, &b, &k, &id)).await?;
    // The upload's checksum algorithm is computed for every part.
    let algo = sums::of(&upload.metadata).map(|(a, _)| a);
    let claims = Claims::new(
        &req.headers,
        i.content_md5,
        claimed_sums!(i),
        i.checksum_algorithm.as_ref(),
        req.trailing_headers,
    )
    .also(algo.map(|a| a.name()));
    // Parts always go to a blob of their own.
    let (received, computed) = body::receive(&w.objects, i.body, None, claims).await?;
    let Received::Blob(blob) = received else {
        unreachable!("a part with no known length is received as a blob")
    };
    let part_sum = algo.and_then(|a| computed.get(&a.key()).cloned());
    let store = w.objects.clone();
    let tag = blocking(move || store.put_part(&upload, n, blob, part_sum)).await?;
    let s = body::sums_in(&computed);
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(etag(&tag)),
        checksum_crc32: s.checksum_crc32,
        checksum_crc32c: s.checksum_crc32c,
        checksum_sha1: s.checksum_sha1,
        checksum_sha256: s.checksum_sha256,
        checksum_crc64nvme: s.checksum_crc64nvme,
        ..Default::default()
    }))
}

pub(super) async fn upload_part_copy(
    w: &Wisp,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    let n = part_number(i.part_number)?;
    let (sb, sk) = copy_source(&i.copy_source)?;
    let (store, ns, b, k, id) = (
        w.objects.clone(),
        c.ns.clone(),
        i.bucket.clone(),
        i.key.clone(),
        i.upload_id.clone(),
    );
    let upload = blocking(move || store.upload(&ns, &b, &k, &id)).await?;
    let meta = check_source(
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
    let range = match i.copy_source_range.as_deref() {
        None => None,
        Some(v) => {
            let bad = || {
                invalid_argument(format!(
                    "x-amz-copy-source-range {v:?} must be bytes=FIRST-LAST within the source object ({} bytes)",
                    meta.size
                ))
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
                return Err(s3err(
                    S3ErrorCode::InvalidRange,
                    format!(
                        "x-amz-copy-source-range {v:?} is outside the source object ({} bytes)",
                        meta.size
                    ),
                ));
            }
            Some((a, b))
        }
    };
    let store = w.objects.clone();
    let algo = sums::of(&upload.metadata).map(|(a, _)| a);
    let (tag, part_sum) = blocking(move || {
        let mut h = algo.map(|a| a.hasher());
        let blob = store.copy_part_blob(&upload, (&sb, &sk), range, &mut |bytes| {
            if let Some(h) = h.as_mut() {
                h.update(bytes)
            }
        })?;
        let part_sum = algo.zip(h).and_then(|(a, h)| a.get(&h.finalize()));
        let tag = store.put_part(&upload, n, blob, part_sum.clone())?;
        Ok((tag, part_sum.map(|v| (algo, v))))
    })
    .await?;
    let mut s = Checksum::default();
    if let Some((Some(a), v)) = part_sum {
        a.set(&mut s, Some(v));
    }
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(etag(&tag)),
            checksum_crc32: s.checksum_crc32,
            checksum_crc32c: s.checksum_crc32c,
            checksum_sha1: s.checksum_sha1,
            checksum_sha256: s.checksum_sha256,
            checksum_crc64nvme: s.checksum_crc64nvme,
            last_modified: Some(timestamp(wisp_core::time::now_ms())),
        }),
        ..Default::default()
    }))
}

pub(super) async fn complete(
    w: &Wisp,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    check_write(
        w,
        &c.ns,
        (&i.bucket, &i.key),
        i.if_match.as_ref(),
        i.if_none_match.as_ref(),
    )
    .await?;
    let listed = i.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
    if listed.is_empty() {
        return Err(s3err(
            S3ErrorCode::MalformedXML,
            "CompleteMultipartUpload needs at least one Part (PartNumber and ETag)",
        ));
    }
    let mut parts = Vec::with_capacity(listed.len());
    for p in &listed {
        let (Some(n), Some(e)) = (p.part_number, p.e_tag.as_ref()) else {
            return Err(s3err(
                S3ErrorCode::MalformedXML,
                "every Part needs a PartNumber and an ETag",
            ));
        };
        parts.push((part_number(n)?, format!("\"{}\"", e.value())));
    }
    // The ETag these parts make: a repeated Complete (a client retrying
    // after a lost answer) finds the object it made and gets the same
    // answer, as S3 gives, without a second storage event.
    let expected = {
        use md5::Digest as _;
        let mut h = md5::Md5::new();
        for (_, e) in &parts {
            h.update(hex::decode(e.trim_matches('"')).unwrap_or_default());
        }
        format!("\"{}-{}\"", hex::encode(h.finalize()), parts.len())
    };
    let claimed = claimed_sums!(i);
    let (store, ns, b, k, id) = (
        w.objects.clone(),
        c.ns.clone(),
        i.bucket.clone(),
        i.key.clone(),
        i.upload_id,
    );
    let (meta, fresh) = blocking(move || match store.upload(&ns, &b, &k, &id) {
        Ok(up) => {
            let completion = Completion::new(&up.metadata, &listed, &claimed);
            // A FULL_OBJECT checksum is computed over the bytes as the
            // parts are joined.
            let whole = std::cell::RefCell::new(
                completion
                    .as_ref()
                    .filter(|c| c.full)
                    .map(|c| c.algo.hasher()),
            );
            let meta = store.complete_upload(
                &up,
                &parts,
                &mut |bytes| {
                    if let Some(h) = whole.borrow_mut().as_mut() {
                        h.update(bytes)
                    }
                },
                |joined, md| match completion {
                    Some(c) => c.finish(joined, whole.take().map(|h| h.finalize()), md),
                    None => Ok(()),
                },
            )?;
            Ok((meta, true))
        }
        Err(ObjectError::NoSuchUpload(id)) => match store.head(&ns, &b, &k) {
            Ok(m) if m.etag == expected => Ok((m, false)),
            _ => Err(ObjectError::NoSuchUpload(id)),
        },
        Err(e) => Err(e),
    })
    .await?;
    if fresh {
        w.notify(&c, &i.bucket, &meta, true).await?;
    }
    let s = sums::answered(&meta, None);
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        checksum_crc32: s.checksum_crc32,
        checksum_crc32c: s.checksum_crc32c,
        checksum_sha1: s.checksum_sha1,
        checksum_sha256: s.checksum_sha256,
        checksum_crc64nvme: s.checksum_crc64nvme,
        checksum_type: s.checksum_type,
        location: Some(format!("/{}/{}", i.bucket, i.key)),
        bucket: Some(i.bucket),
        key: Some(i.key),
        e_tag: Some(etag(&meta.etag)),
        ..Default::default()
    }))
}

pub(super) async fn abort(
    w: &Wisp,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    let (store, ns) = (w.objects.clone(), c.ns);
    blocking(move || {
        let up = store.upload(&ns, &i.bucket, &i.key, &i.upload_id)?;
        store.abort_upload(&up)
    })
    .await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}
