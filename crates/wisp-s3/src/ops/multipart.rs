//! Multipart uploads: create, upload a part (from the body or a range of
//! an object), complete (also when repeated), abort.

use super::body::{self, Claims, Received};
use super::objects::{check_source, check_write, copy_source};
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
    let (ct, md) = attrs_of!(i).into_stored();
    let (store, ns, b, k) = (w.objects.clone(), c.ns, i.bucket.clone(), i.key.clone());
    let id = blocking(move || store.create_upload(&ns, &b, &k, &ct, &md)).await?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(id),
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
    let claims = Claims::new(
        &req.headers,
        i.content_md5,
        claimed_sums!(i),
        i.checksum_algorithm.as_ref(),
        req.trailing_headers,
    );
    // Parts always go to a blob of their own.
    let (received, _) = body::receive(&w.objects, i.body, None, claims).await?;
    let Received::Blob(blob) = received else {
        unreachable!("a part with no known length is received as a blob")
    };
    let store = w.objects.clone();
    let tag = blocking(move || store.put_part(&upload, n, blob)).await?;
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(etag(&tag)),
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
    let tag = blocking(move || store.put_part_copy(&upload, n, (&sb, &sk), range)).await?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(etag(&tag)),
            last_modified: Some(timestamp(wisp_core::time::now_ms())),
            ..Default::default()
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
    for p in listed {
        let (Some(n), Some(e)) = (p.part_number, p.e_tag) else {
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
    let (store, ns, b, k, id) = (
        w.objects.clone(),
        c.ns.clone(),
        i.bucket.clone(),
        i.key.clone(),
        i.upload_id,
    );
    let (meta, fresh) = blocking(move || match store.upload(&ns, &b, &k, &id) {
        Ok(up) => Ok((store.complete_upload(&up, &parts)?, true)),
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
    Ok(S3Response::new(CompleteMultipartUploadOutput {
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
