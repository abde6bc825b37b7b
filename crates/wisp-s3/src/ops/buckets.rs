//! Buckets: per namespace, unversioned, in one region.

use super::{Wisp, caller, timestamp};
use crate::error::{blocking, from_store};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};
use wisp_objects::ObjectError;

pub(super) async fn list(
    w: &Wisp,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let c = caller(&req)?;
    let (store, ns) = (w.objects.clone(), c.ns.clone());
    let list = blocking(move || store.list_buckets(&ns)).await?;
    let i = req.input;
    let prefix = i.prefix.clone().unwrap_or_default();
    let after = match &i.continuation_token {
        Some(t) => Some(super::lists::token_decode(t)?),
        None => None,
    };
    let max = match i.max_buckets {
        None => usize::MAX,
        Some(n) if (1..=10_000).contains(&n) => n as usize,
        Some(n) => {
            return Err(crate::error::invalid_argument(format!(
                "max-buckets must be from 1 to 10000, got {n}"
            )));
        }
    };
    let mut names: Vec<(String, i64)> = list
        .into_iter()
        .filter(|(name, _)| name.starts_with(&prefix))
        .filter(|(name, _)| after.as_ref().is_none_or(|a| name > a))
        .collect();
    let next = (names.len() > max).then(|| {
        names.truncate(max);
        super::lists::token_encode(&names[max - 1].0)
    });
    let buckets = names
        .into_iter()
        .map(|(name, created)| Bucket {
            name: Some(name),
            creation_date: Some(timestamp(created)),
            bucket_region: None,
        })
        .collect();
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(Owner {
            id: Some(c.ns.to_string()),
            display_name: Some(c.ns.to_string()),
        }),
        prefix: i.prefix,
        continuation_token: next,
    }))
}

pub(super) async fn create(
    w: &Wisp,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let c = caller(&req)?;
    let bucket = req.input.bucket;
    // Creating a bucket the namespace already has changes nothing and
    // succeeds, as in us-east-1 (the region Wisp reports; other AWS
    // regions answer 409 BucketAlreadyOwnedByYou).
    let (store, ns, b) = (w.objects.clone(), c.ns.clone(), bucket.clone());
    blocking(move || store.create_bucket(&ns, &b)).await?;
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{bucket}")),
    }))
}

pub(super) async fn delete(
    w: &Wisp,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    let c = caller(&req)?;
    let (store, ns, b) = (w.objects.clone(), c.ns, req.input.bucket);
    blocking(move || store.delete_bucket(&ns, &b)).await?;
    Ok(S3Response::new(DeleteBucketOutput {}))
}

/// NoSuchBucket unless the caller's namespace has the bucket.
pub(super) async fn exists(w: &Wisp, ns: &wisp_core::Namespace, bucket: &str) -> S3Result<()> {
    let (store, n, b) = (w.objects.clone(), ns.clone(), bucket.to_string());
    if blocking(move || store.bucket_exists(&n, &b)).await? {
        Ok(())
    } else {
        Err(from_store(ObjectError::NoSuchBucket(bucket.to_string())))
    }
}

pub(super) async fn head(
    w: &Wisp,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    let c = caller(&req)?;
    exists(w, &c.ns, &req.input.bucket).await?;
    Ok(S3Response::new(HeadBucketOutput::default()))
}

pub(super) async fn location(
    w: &Wisp,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    let c = caller(&req)?;
    exists(w, &c.ns, &req.input.bucket).await?;
    Ok(S3Response::new(GetBucketLocationOutput::default()))
}

/// Never enabled: S3 answers an empty configuration.
pub(super) async fn versioning(
    w: &Wisp,
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    let c = caller(&req)?;
    exists(w, &c.ns, &req.input.bucket).await?;
    Ok(S3Response::new(GetBucketVersioningOutput::default()))
}
