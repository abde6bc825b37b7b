//! Headers that ask for something Wisp cannot honour (server-side
//! encryption, object lock, tags, ACLs granting more than private access,
//! website redirects, storage classes) are refused with `501
//! NotImplemented` before anything is read or changed, not ignored.

use crate::error::{invalid_argument, s3err};
use http::HeaderMap;
use s3s::{S3Error, S3ErrorCode};

/// Refuses headers asking for what Wisp cannot honour: it stores objects
/// unencrypted, unversioned, untagged, private to their namespace, in one
/// storage class.
pub(crate) fn refuse_headers(op: &str, h: &HeaderMap) -> Result<(), S3Error> {
    for (name, value) in h {
        let n = name.as_str();
        let v = value.to_str().unwrap_or("");
        let refused = if n.starts_with("x-amz-server-side-encryption")
            || n.starts_with("x-amz-copy-source-server-side-encryption")
        {
            Some(
                "server-side encryption (SSE-S3, SSE-KMS, SSE-C) is not supported: Wisp stores objects unencrypted on the node's disk; send the request without x-amz-server-side-encryption* headers",
            )
        } else if n.starts_with("x-amz-object-lock-")
            || (n == "x-amz-bucket-object-lock-enabled" && !v.eq_ignore_ascii_case("false"))
        {
            Some(
                "object lock (retention, legal hold) is not supported by Wisp; send the request without x-amz-object-lock-* headers",
            )
        } else if n == "x-amz-tagging"
            || (n == "x-amz-tagging-directive" && !v.eq_ignore_ascii_case("COPY"))
        {
            Some("object tags are not supported by Wisp; send the request without x-amz-tagging")
        } else if (n == "x-amz-acl" && v != "private") || n.starts_with("x-amz-grant-") {
            Some(
                "ACLs are not supported by Wisp: objects and buckets are private to their namespace; send no x-amz-grant-* headers and x-amz-acl only as private",
            )
        } else if n == "x-amz-if-match-last-modified-time" || n == "x-amz-if-match-size" {
            Some(
                "conditional deletes by modification time or size are not supported by Wisp; use If-Match with the ETag",
            )
        } else if n == "x-amz-website-redirect-location" {
            Some("website redirects are not supported by Wisp")
        } else if n == "x-amz-storage-class" && v != "STANDARD" {
            Some("Wisp has one storage class, STANDARD")
        } else if n == "x-amz-copy-source-range" && op != "UploadPartCopy" {
            return Err(invalid_argument(
                "x-amz-copy-source-range is only allowed with UploadPartCopy (PUT ?partNumber&uploadId)",
            ));
        } else {
            None
        };
        if let Some(why) = refused {
            return Err(s3err(
                S3ErrorCode::NotImplemented,
                format!("{n}: {why}; nothing was changed"),
            ));
        }
    }
    Ok(())
}
