//! Who is calling and what they may do: secret keys for s3s's signature
//! check, then, per request, the caller's namespace and role (or the
//! function it is) and whether the operation is allowed.

use crate::{FunctionCaller, KeyLookup};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{S3Error, S3ErrorCode, S3Result};
use std::sync::Arc;
use wisp_core::{FunctionName, Namespace, Permission, Role};

/// The caller of a request that passed [`Access`], as a request extension.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub ns: Namespace,
    pub role: Role,
    /// A function calling from inside Wisp: its name (its writes do not
    /// trigger it).
    pub function: Option<FunctionName>,
}

pub(crate) fn denied(msg: impl Into<String>) -> S3Error {
    S3Error::with_message(S3ErrorCode::AccessDenied, msg.into())
}

pub(crate) struct Auth {
    pub keys: Arc<dyn KeyLookup>,
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.keys.access_key(access_key) {
            Some((_, secret)) => Ok(SecretKey::from(secret)),
            None => Err(S3Error::with_message(
                S3ErrorCode::InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records (create one with `wisp accesskey create`)",
            )),
        }
    }
}

pub(crate) struct Access {
    pub keys: Arc<dyn KeyLookup>,
}

/// Operations that change objects: `invoker`, `deployer` or `admin`.
const OBJECT_WRITES: &[&str] = &[
    "PutObject",
    "PostObject",
    "CopyObject",
    "DeleteObject",
    "DeleteObjects",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
];

/// Operations that change buckets: `deployer` or `admin`.
const BUCKET_WRITES: &[&str] = &["CreateBucket", "DeleteBucket"];

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let function = cx.extensions_mut().get::<FunctionCaller>().cloned();
        let caller = match (&function, cx.credentials()) {
            (Some(f), _) => Caller {
                ns: f.namespace.clone(),
                role: Role::Invoker,
                function: Some(f.function.clone()),
            },
            (None, Some(c)) => {
                let Some((k, _)) = self.keys.access_key(&c.access_key) else {
                    return Err(S3Error::with_message(
                        S3ErrorCode::InvalidAccessKeyId,
                        "unknown access key",
                    ));
                };
                Caller {
                    ns: k.namespace,
                    role: k.role,
                    function: None,
                }
            }
            (None, None) => {
                return Err(denied(
                    "anonymous requests are not allowed: sign requests with a Wisp access key (`wisp accesskey create`), as AWS SDKs and the AWS CLI do",
                ));
            }
        };
        let bucket = match cx.s3_path() {
            S3Path::Root => None,
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(bucket.to_string()),
        };
        if let (Some(f), Some(b)) = (&function, &bucket)
            && !f.grants.iter().any(|g| g == b)
        {
            return Err(denied(format!(
                "function {} may not use bucket {b:?}: deploy it with --objects {b} (it reaches only granted buckets of its own namespace)",
                f.function
            )));
        }
        let op = cx.s3_op().name();
        crate::refuse::refuse_headers(op, cx.headers())?;
        let may = if BUCKET_WRITES.contains(&op) {
            caller.role.allows(Permission::Deploy)
        } else if OBJECT_WRITES.contains(&op) {
            caller.role.allows(Permission::Invoke) || caller.role.allows(Permission::Deploy)
        } else {
            true
        };
        if !may {
            let what = match op {
                "CreateBucket" => "create buckets",
                "DeleteBucket" => "delete buckets",
                "DeleteObject" | "DeleteObjects" | "AbortMultipartUpload" => "delete objects",
                _ => "write objects",
            };
            return Err(denied(format!(
                "a {} access key may not {what} (create one with `wisp accesskey create --role deployer`)",
                caller.role
            )));
        }
        if let Some(owner) = cx
            .headers()
            .get("x-amz-expected-bucket-owner")
            .and_then(|v| v.to_str().ok())
            && owner != caller.ns.as_str()
        {
            return Err(denied(format!(
                "x-amz-expected-bucket-owner is {owner:?}, but the bucket belongs to this key's namespace {:?}",
                caller.ns.as_str()
            )));
        }
        cx.extensions_mut().insert(caller);
        Ok(())
    }
}
