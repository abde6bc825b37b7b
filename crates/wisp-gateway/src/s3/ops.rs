//! Which S3 operation a request is, by an allow-list: a request reaches an
//! operation only when its method, its target (the service, a bucket or an
//! object) and its query's sub-resources are exactly those of an operation
//! Wisp implements. Anything else — `?tagging`, `?acl`, `?cors`,
//! `?versioning` on PUT, `?retention`, a parameter Wisp does not know — is
//! `501 NotImplemented` before anything is read or changed.
//!
//! Headers that ask for something Wisp cannot honour (server-side
//! encryption, object lock, tags, ACLs granting more than private access,
//! website redirects, storage classes) are refused the same way, not
//! ignored.

use super::{S3Error, err};
use axum::http::{HeaderMap, StatusCode};

/// What a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Service,
    Bucket,
    Object,
}

/// The operations Wisp implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    ListBuckets,
    CreateBucket,
    DeleteBucket,
    HeadBucket,
    GetBucketLocation,
    GetBucketVersioning,
    ListObjects,
    ListObjectsV2,
    ListObjectVersions,
    ListMultipartUploads,
    DeleteObjects,
    GetObject,
    HeadObject,
    PutObject,
    CopyObject,
    UploadPart,
    UploadPartCopy,
    DeleteObject,
    CreateMultipartUpload,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
}

struct Spec {
    op: Op,
    method: &'static str,
    target: Target,
    /// Sub-resources that must all be present.
    required: &'static [&'static str],
    /// Parameters the operation reads.
    optional: &'static [&'static str],
}

const LIST: &[&str] = &["prefix", "delimiter", "marker", "max-keys", "encoding-type"];
const LIST_V2: &[&str] = &[
    "prefix",
    "delimiter",
    "max-keys",
    "encoding-type",
    "continuation-token",
    "start-after",
    "fetch-owner",
];
const LIST_VERSIONS: &[&str] = &[
    "prefix",
    "delimiter",
    "key-marker",
    "version-id-marker",
    "max-keys",
    "encoding-type",
];
const LIST_UPLOADS: &[&str] = &[
    "prefix",
    "delimiter",
    "key-marker",
    "upload-id-marker",
    "max-uploads",
    "encoding-type",
];
const GET: &[&str] = &[
    "versionId",
    "partNumber",
    "response-content-type",
    "response-content-language",
    "response-expires",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
];

/// More specific specs (more required sub-resources) come first.
const SPECS: &[Spec] = &[
    Spec {
        op: Op::ListBuckets,
        method: "GET",
        target: Target::Service,
        required: &[],
        optional: &[],
    },
    Spec {
        op: Op::GetBucketLocation,
        method: "GET",
        target: Target::Bucket,
        required: &["location"],
        optional: &[],
    },
    Spec {
        op: Op::GetBucketVersioning,
        method: "GET",
        target: Target::Bucket,
        required: &["versioning"],
        optional: &[],
    },
    Spec {
        op: Op::ListObjectVersions,
        method: "GET",
        target: Target::Bucket,
        required: &["versions"],
        optional: LIST_VERSIONS,
    },
    Spec {
        op: Op::ListMultipartUploads,
        method: "GET",
        target: Target::Bucket,
        required: &["uploads"],
        optional: LIST_UPLOADS,
    },
    Spec {
        op: Op::ListObjectsV2,
        method: "GET",
        target: Target::Bucket,
        required: &["list-type"],
        optional: LIST_V2,
    },
    Spec {
        op: Op::ListObjects,
        method: "GET",
        target: Target::Bucket,
        required: &[],
        optional: LIST,
    },
    Spec {
        op: Op::CreateBucket,
        method: "PUT",
        target: Target::Bucket,
        required: &[],
        optional: &[],
    },
    Spec {
        op: Op::DeleteBucket,
        method: "DELETE",
        target: Target::Bucket,
        required: &[],
        optional: &[],
    },
    Spec {
        op: Op::HeadBucket,
        method: "HEAD",
        target: Target::Bucket,
        required: &[],
        optional: &[],
    },
    Spec {
        op: Op::DeleteObjects,
        method: "POST",
        target: Target::Bucket,
        required: &["delete"],
        optional: &[],
    },
    Spec {
        op: Op::ListParts,
        method: "GET",
        target: Target::Object,
        required: &["uploadId"],
        optional: &["max-parts", "part-number-marker", "encoding-type"],
    },
    Spec {
        op: Op::GetObject,
        method: "GET",
        target: Target::Object,
        required: &[],
        optional: GET,
    },
    Spec {
        op: Op::HeadObject,
        method: "HEAD",
        target: Target::Object,
        required: &[],
        optional: GET,
    },
    Spec {
        op: Op::UploadPart,
        method: "PUT",
        target: Target::Object,
        required: &["partNumber", "uploadId"],
        optional: &[],
    },
    Spec {
        op: Op::PutObject,
        method: "PUT",
        target: Target::Object,
        required: &[],
        optional: &[],
    },
    Spec {
        op: Op::AbortMultipartUpload,
        method: "DELETE",
        target: Target::Object,
        required: &["uploadId"],
        optional: &[],
    },
    Spec {
        op: Op::DeleteObject,
        method: "DELETE",
        target: Target::Object,
        required: &[],
        optional: &["versionId"],
    },
    Spec {
        op: Op::CreateMultipartUpload,
        method: "POST",
        target: Target::Object,
        required: &["uploads"],
        optional: &[],
    },
    Spec {
        op: Op::CompleteMultipartUpload,
        method: "POST",
        target: Target::Object,
        required: &["uploadId"],
        optional: &[],
    },
];

/// Query parameters that sign a request (presigned URLs) or that SDKs add
/// for their own bookkeeping; they select no operation.
const AUTH: &[&str] = &[
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "AWSAccessKeyId",
    "Signature",
    "Expires",
    "x-id",
];

fn not_implemented(message: String) -> S3Error {
    err(StatusCode::NOT_IMPLEMENTED, "NotImplemented", message)
}

/// The operation a request is, or `501 NotImplemented` naming what Wisp
/// does not support. `copy_source`: the request has `x-amz-copy-source`.
pub(crate) fn classify(
    method: &str,
    target: Target,
    query: &[(String, String)],
    copy_source: bool,
) -> Result<Op, S3Error> {
    let keys: Vec<&str> = query
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !AUTH.contains(k))
        .collect();
    let spec = SPECS.iter().find(|s| {
        s.method == method
            && s.target == target
            && s.required.iter().all(|r| keys.contains(r))
            && keys
                .iter()
                .all(|k| s.required.contains(k) || s.optional.contains(k))
    });
    let Some(spec) = spec else {
        let what = match target {
            Target::Service => "the service",
            Target::Bucket => "a bucket",
            Target::Object => "an object",
        };
        let sub: Vec<String> = keys.iter().map(|k| format!("?{k}")).collect();
        return Err(not_implemented(if sub.is_empty() {
            format!("{method} on {what} is not an operation Wisp implements")
        } else {
            format!(
                "{method} on {what} with {} is not an operation Wisp implements; nothing was changed (docs/objects.md lists the supported operations)",
                sub.join(" ")
            )
        }));
    };
    Ok(match (spec.op, copy_source) {
        (Op::PutObject, true) => Op::CopyObject,
        (Op::UploadPart, true) => Op::UploadPartCopy,
        (op, _) => op,
    })
}

/// Refuses headers asking for what Wisp cannot honour: it stores objects
/// unencrypted, unversioned, untagged, private to their namespace, in one
/// storage class.
pub(crate) fn refuse_headers(op: Op, h: &HeaderMap) -> Result<(), S3Error> {
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
        } else if n == "x-amz-copy-source-range" && op != Op::UploadPartCopy {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "x-amz-copy-source-range is only allowed with UploadPartCopy (PUT ?partNumber&uploadId)",
            ));
        } else {
            None
        };
        if let Some(why) = refused {
            return Err(not_implemented(format!("{n}: {why}; nothing was changed")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        s.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn only_supported_operations_are_dispatched() {
        use Target::*;
        let c = |m, t, s: &str| classify(m, t, &q(s), false).map_err(|e| e.status.as_u16());
        assert_eq!(c("GET", Service, ""), Ok(Op::ListBuckets));
        assert_eq!(
            c("GET", Bucket, "list-type=2&prefix=a"),
            Ok(Op::ListObjectsV2)
        );
        assert_eq!(c("GET", Bucket, "prefix=a&max-keys=3"), Ok(Op::ListObjects));
        assert_eq!(
            c("PUT", Object, "partNumber=1&uploadId=x"),
            Ok(Op::UploadPart)
        );
        assert_eq!(
            c("GET", Object, "X-Amz-Signature=a&X-Amz-Date=b"),
            Ok(Op::GetObject)
        );
        for s in [
            "tagging",
            "retention",
            "legal-hold",
            "acl",
            "torrent",
            "attributes",
            "partNumber=1&tagging",
        ] {
            assert_eq!(c("PUT", Object, s), Err(501), "{s}");
            assert_eq!(c("GET", Object, s), Err(501), "{s}");
            assert_eq!(c("DELETE", Object, s), Err(501), "{s}");
        }
        for s in [
            "cors",
            "policy",
            "lifecycle",
            "encryption",
            "tagging",
            "website",
        ] {
            assert_eq!(c("DELETE", Bucket, s), Err(501), "{s}");
            assert_eq!(c("PUT", Bucket, s), Err(501), "{s}");
        }
        assert_eq!(c("PUT", Bucket, "versioning"), Err(501));
        assert_eq!(c("POST", Object, "restore"), Err(501));
        assert_eq!(c("POST", Object, "select&select-type=2"), Err(501));
        assert_eq!(c("POST", Bucket, ""), Err(501));
        assert_eq!(
            classify("PUT", Object, &q("partNumber=2&uploadId=u"), true).ok(),
            Some(Op::UploadPartCopy)
        );
    }
}
