//! Store errors as S3 errors, and the helpers the operations build theirs
//! with.

use http::StatusCode;
use s3s::{S3Error, S3ErrorCode};
use wisp_objects::ObjectError;

pub(crate) fn s3err(code: S3ErrorCode, msg: impl Into<String>) -> S3Error {
    S3Error::with_message(code, msg.into())
}

/// An error with a code s3s does not know, and its status.
pub(crate) fn custom(code: &'static str, status: StatusCode, msg: impl Into<String>) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), msg.into());
    e.set_status_code(status);
    e
}

pub(crate) fn invalid_argument(msg: impl Into<String>) -> S3Error {
    s3err(S3ErrorCode::InvalidArgument, msg)
}

pub(crate) fn invalid_request(msg: impl Into<String>) -> S3Error {
    s3err(S3ErrorCode::InvalidRequest, msg)
}

/// A failure of Wisp's own (a task that died): 500 InternalError.
pub(crate) fn internal(e: impl std::fmt::Display) -> S3Error {
    s3err(S3ErrorCode::InternalError, e.to_string())
}

pub(crate) fn from_store(e: ObjectError) -> S3Error {
    let m = e.to_string();
    let code = match e {
        ObjectError::InvalidBucketName(_) => S3ErrorCode::InvalidBucketName,
        ObjectError::InvalidKey(_) => S3ErrorCode::KeyTooLongError,
        ObjectError::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
        ObjectError::NoSuchKey(_) => S3ErrorCode::NoSuchKey,
        ObjectError::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
        ObjectError::NoSuchUpload(_) => S3ErrorCode::NoSuchUpload,
        ObjectError::InvalidPart(_) => S3ErrorCode::InvalidPart,
        ObjectError::BadDigest(_) => S3ErrorCode::BadDigest,
        ObjectError::EntityTooSmall(_) => S3ErrorCode::EntityTooSmall,
        // MinIO's answer for a full disk. Not InternalError or
        // ServiceUnavailable: SDKs retry those, and a full disk stays full
        // (docs/objects.md, "A full disk").
        ObjectError::StorageFull(_) => {
            tracing::warn!(error = %m, "refused an object write: the disk is full");
            return custom("XMinioStorageFull", StatusCode::INSUFFICIENT_STORAGE, m);
        }
        _ => {
            tracing::error!(error = %m, "object storage failed");
            S3ErrorCode::InternalError
        }
    };
    s3err(code, m)
}

/// Runs store work on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ObjectError> + Send + 'static,
) -> Result<T, S3Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(internal)?
        .map_err(from_store)
}
