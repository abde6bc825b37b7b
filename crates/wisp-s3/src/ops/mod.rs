//! The S3 operations Wisp implements, over [`wisp_objects::ObjectStore`]:
//! buckets ([`buckets`]), listings ([`lists`]), objects ([`objects`]) and
//! multipart uploads ([`multipart`]). Every other operation of the
//! [`s3s::S3`] trait keeps its default answer, `501 NotImplemented`.

use crate::ObjectEvents;
use crate::access::Caller;
use crate::error::{custom, invalid_argument};
use http::StatusCode;
use s3s::dto::{ETag, Timestamp};
use s3s::{S3Error, S3Request};
use std::sync::Arc;
use wisp_objects::{ObjectMeta, ObjectStore};

/// The `x-amz-checksum-*` a write's input claims (PutObject, UploadPart).
macro_rules! claimed_sums {
    ($i:ident) => {
        s3s::dto::Checksum {
            checksum_crc32: $i.checksum_crc32,
            checksum_crc32c: $i.checksum_crc32c,
            checksum_sha1: $i.checksum_sha1,
            checksum_sha256: $i.checksum_sha256,
            checksum_crc64nvme: $i.checksum_crc64nvme,
            checksum_type: None,
        }
    };
}

/// The standard headers a write's input sets (PutObject, CopyObject,
/// CreateMultipartUpload).
macro_rules! attrs_of {
    ($i:ident) => {
        $crate::ops::objects::Attrs {
            content_type: $i.content_type,
            cache_control: $i.cache_control,
            content_disposition: $i.content_disposition,
            content_encoding: $i.content_encoding,
            content_language: $i.content_language,
            expires: $i.expires,
            metadata: $i.metadata,
        }
    };
}

mod attributes;
mod body;
mod buckets;
mod lists;
mod multipart;
mod objects;
mod sums;

/// The S3 implementation: the store and where object events go.
pub(crate) struct Wisp {
    pub objects: Arc<ObjectStore>,
    pub events: Arc<dyn ObjectEvents>,
}

/// The caller [`crate::access::Access`] attached to the request.
pub(crate) fn caller<T>(req: &S3Request<T>) -> Result<Caller, S3Error> {
    req.extensions
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| crate::access::denied("the request was not authorized"))
}

/// Wisp keeps one version of each object, `null`.
pub(crate) fn no_version(v: Option<&str>) -> Result<(), S3Error> {
    match v {
        None | Some("null") => Ok(()),
        Some(v) => Err(invalid_argument(format!(
            "Invalid version id specified: {v:?} (Wisp keeps one version of each object, versionId \"null\")"
        ))),
    }
}

pub(crate) fn etag(stored: &str) -> ETag {
    ETag::Strong(stored.trim_matches('"').to_string())
}

pub(crate) fn timestamp(ms: i64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

impl Wisp {
    /// Queues the storage events of a change; the change is acknowledged
    /// only once they are queued.
    pub(crate) async fn notify(
        &self,
        caller: &Caller,
        bucket: &str,
        meta: &ObjectMeta,
        created: bool,
    ) -> Result<(), S3Error> {
        self.events
            .object_changed(&caller.ns, bucket, meta, created, caller.function.as_ref())
            .await
            .map_err(|e| {
                custom(
                    "SlowDown",
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the object was stored, but its storage events could not be queued ({e}); retry the request"
                    ),
                )
            })
    }
}

#[async_trait::async_trait]
impl s3s::S3 for Wisp {
    async fn list_buckets(
        &self,
        req: S3Request<s3s::dto::ListBucketsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListBucketsOutput>> {
        buckets::list(self, req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<s3s::dto::CreateBucketInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CreateBucketOutput>> {
        buckets::create(self, req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<s3s::dto::DeleteBucketInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteBucketOutput>> {
        buckets::delete(self, req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<s3s::dto::HeadBucketInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::HeadBucketOutput>> {
        buckets::head(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<s3s::dto::GetBucketLocationInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetBucketLocationOutput>> {
        buckets::location(self, req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<s3s::dto::GetBucketVersioningInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetBucketVersioningOutput>> {
        buckets::versioning(self, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<s3s::dto::ListObjectsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsOutput>> {
        lists::objects_v1(self, req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<s3s::dto::ListObjectsV2Input>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectsV2Output>> {
        lists::objects_v2(self, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<s3s::dto::ListObjectVersionsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListObjectVersionsOutput>> {
        lists::versions(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<s3s::dto::ListMultipartUploadsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListMultipartUploadsOutput>> {
        lists::uploads(self, req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<s3s::dto::ListPartsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::ListPartsOutput>> {
        lists::parts(self, req).await
    }

    async fn put_object(
        &self,
        req: S3Request<s3s::dto::PutObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::PutObjectOutput>> {
        objects::put(self, req).await
    }

    async fn get_object(
        &self,
        req: S3Request<s3s::dto::GetObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectOutput>> {
        objects::get(self, req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<s3s::dto::GetObjectAttributesInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectAttributesOutput>> {
        attributes::get(self, req).await
    }

    async fn head_object(
        &self,
        req: S3Request<s3s::dto::HeadObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::HeadObjectOutput>> {
        objects::head(self, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<s3s::dto::DeleteObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteObjectOutput>> {
        objects::delete(self, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<s3s::dto::DeleteObjectsInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::DeleteObjectsOutput>> {
        objects::delete_many(self, req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<s3s::dto::CopyObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CopyObjectOutput>> {
        objects::copy(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<s3s::dto::CreateMultipartUploadInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CreateMultipartUploadOutput>> {
        multipart::create(self, req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<s3s::dto::UploadPartInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<s3s::dto::UploadPartCopyInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::UploadPartCopyOutput>> {
        multipart::upload_part_copy(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<s3s::dto::CompleteMultipartUploadInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::CompleteMultipartUploadOutput>> {
        multipart::complete(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<s3s::dto::AbortMultipartUploadInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::AbortMultipartUploadOutput>> {
        multipart::abort(self, req).await
    }
}
