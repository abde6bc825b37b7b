//! GetObjectAttributes: an object's ETag, checksum, parts, storage class
//! and size, without its body (each only when asked for).

use super::{Wisp, caller, no_version, timestamp};
use crate::error::{blocking, invalid_argument};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

pub(super) async fn get(
    w: &Wisp,
    req: S3Request<GetObjectAttributesInput>,
) -> S3Result<S3Response<GetObjectAttributesOutput>> {
    let c = caller(&req)?;
    let i = req.input;
    no_version(i.version_id.as_deref())?;
    // One header, comma-separated (or repeated).
    let asked: Vec<&str> = i
        .object_attributes
        .iter()
        .flat_map(|a| a.as_str().split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let wants = |a: &str| asked.contains(&a);
    if let Some(bad) = asked.iter().find(|a| {
        ![
            ObjectAttributes::ETAG,
            ObjectAttributes::CHECKSUM,
            ObjectAttributes::OBJECT_PARTS,
            ObjectAttributes::STORAGE_CLASS,
            ObjectAttributes::OBJECT_SIZE,
        ]
        .contains(*a)
    }) {
        return Err(invalid_argument(format!(
            "x-amz-object-attributes {bad:?} is not one of ETag, Checksum, ObjectParts, StorageClass, ObjectSize"
        )));
    }
    let max = match i.max_parts {
        None => 1000,
        Some(n) if (0..=1000).contains(&n) => n,
        Some(n) => {
            return Err(invalid_argument(format!(
                "x-amz-max-parts must be between 0 and 1000, got {n}"
            )));
        }
    };
    let marker = match i.part_number_marker {
        None => 0,
        Some(n) if n >= 0 => n,
        Some(n) => {
            return Err(invalid_argument(format!(
                "x-amz-part-number-marker must be a non-negative number, got {n}"
            )));
        }
    };
    let (store, ns, b, k) = (w.objects.clone(), c.ns.clone(), i.bucket, i.key);
    let meta = blocking(move || store.head(&ns, &b, &k)).await?;
    let checksum = wants(ObjectAttributes::CHECKSUM)
        .then(|| super::sums::answered(&meta, None))
        .filter(|c| c.checksum_type.is_some());
    // Only a multipart object has parts to list.
    let object_parts = match (wants(ObjectAttributes::OBJECT_PARTS), meta.part_sizes()) {
        (true, Some(sizes)) => {
            let algo = super::sums::of(&meta.metadata).map(|(a, _)| a);
            let part_sums = meta.part_checksums().unwrap_or_default();
            let all: Vec<ObjectPart> = sizes
                .iter()
                .enumerate()
                .map(|(idx, size)| {
                    let mut s = Checksum::default();
                    if let Some(a) = algo {
                        a.set(&mut s, part_sums.get(idx).map(|v| v.to_string()));
                    }
                    ObjectPart {
                        part_number: Some(idx as i32 + 1),
                        size: Some(*size as i64),
                        checksum_crc32: s.checksum_crc32,
                        checksum_crc32c: s.checksum_crc32c,
                        checksum_sha1: s.checksum_sha1,
                        checksum_sha256: s.checksum_sha256,
                        checksum_crc64nvme: s.checksum_crc64nvme,
                    }
                })
                .filter(|p| p.part_number.unwrap_or(0) > marker)
                .collect();
            let truncated = all.len() > max as usize;
            let page: Vec<ObjectPart> = all.into_iter().take(max as usize).collect();
            Some(GetObjectAttributesParts {
                total_parts_count: Some(sizes.len() as i32),
                part_number_marker: Some(marker),
                max_parts: Some(max),
                is_truncated: Some(truncated),
                next_part_number_marker: page.last().and_then(|p| p.part_number),
                parts: Some(page),
            })
        }
        _ => None,
    };
    Ok(S3Response::new(GetObjectAttributesOutput {
        e_tag: wants(ObjectAttributes::ETAG)
            .then(|| ETag::Strong(meta.etag.trim_matches('"').to_string())),
        checksum,
        object_parts,
        storage_class: wants(ObjectAttributes::STORAGE_CLASS)
            .then(|| StorageClass::from(StorageClass::STANDARD.to_string())),
        object_size: wants(ObjectAttributes::OBJECT_SIZE).then_some(meta.size as i64),
        last_modified: Some(timestamp(meta.modified_ms)),
        ..Default::default()
    }))
}
