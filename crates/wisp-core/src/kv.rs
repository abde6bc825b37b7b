//! The key-value store's vocabulary: bucket and key rules, limits, the
//! operations a backend persists, and the backend trait.
//!
//! Buckets belong to a namespace. Keys are UTF-8 strings (as
//! `wasi:keyvalue` has them), values are bytes.

use crate::ids::Namespace;
use crate::store::StoreError;

/// Longest key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Keys one `list` call returns at most.
pub const LIST_PAGE: usize = 1000;

/// Why a key-value request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "bucket {bucket:?} does not exist in namespace {namespace:?} (a bucket is made by its first write, or by deploying a function with --kv {bucket})"
    )]
    NoSuchBucket {
        namespace: Namespace,
        bucket: String,
    },
    #[error(
        "the function may not use bucket {0:?}: deploy it with --kv {0} to grant it (only granted buckets of its own namespace are reachable)"
    )]
    NotGranted(String),
    #[error("the value of {0:?} is not a decimal integer, so it cannot be incremented")]
    NotANumber(String),
    #[error("incrementing {0:?} would overflow a 64-bit integer")]
    Overflow(String),
    #[error("the key-value store failed: {0}")]
    Store(String),
    /// The disk is full: nothing of the write was stored or is visible.
    #[error(
        "no space left on the node's disk, so the write was not stored ({0}); delete keys, objects or functions or free disk space on the node, then retry"
    )]
    StorageFull(String),
    /// The change would trigger events and the event queue has no room
    /// for them: nothing of the write was stored.
    #[error(
        "the event queue is full ({0}), so the write, which triggers events, was not stored; retry later"
    )]
    QueueFull(String),
}

impl From<StoreError> for KvError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full(m) => KvError::StorageFull(m),
            e => KvError::Store(e.to_string()),
        }
    }
}

/// A bucket name: 1-63 lowercase letters, digits, '-', '_' and '.',
/// starting with a letter or digit (like S3 bucket names, plus '_').
pub fn check_bucket(s: &str) -> Result<(), KvError> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(KvError::Invalid(format!(
            "bucket name {s:?} is invalid: use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

/// A key: 1 to [`MAX_KEY_BYTES`] bytes, no NUL.
pub fn check_key(k: &str) -> Result<(), KvError> {
    if k.is_empty() {
        return Err(KvError::Invalid("a key must not be empty".into()));
    }
    if k.len() > MAX_KEY_BYTES {
        return Err(KvError::Invalid(format!(
            "key of {} bytes is too long (at most {MAX_KEY_BYTES} bytes): {}…",
            k.len(),
            k.chars().take(40).collect::<String>()
        )));
    }
    if k.contains('\0') {
        return Err(KvError::Invalid(format!(
            "key {k:?} contains a NUL character"
        )));
    }
    Ok(())
}

/// A value: at most [`MAX_VALUE_BYTES`].
pub fn check_value(key: &str, v: &[u8]) -> Result<(), KvError> {
    if v.len() > MAX_VALUE_BYTES {
        return Err(KvError::Invalid(format!(
            "the value for {key:?} is {} bytes, more than the limit of {MAX_VALUE_BYTES} bytes (1 MiB): keep large data in the object store",
            v.len()
        )));
    }
    Ok(())
}

/// One change, as a backend persists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// Makes an empty bucket (no-op when it exists).
    CreateBucket {
        namespace: Namespace,
        bucket: String,
    },
    /// Removes a bucket and all its keys.
    DeleteBucket {
        namespace: Namespace,
        bucket: String,
    },
    Set {
        namespace: Namespace,
        bucket: String,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        namespace: Namespace,
        bucket: String,
        key: String,
    },
    /// Keeps the events a change causes (storage triggers), in the same
    /// transaction as the change: stored with it or not at all (an
    /// outbox). `record` is opaque to the store.
    PutEvents { id: String, record: Vec<u8> },
    /// The events `id` were handed on to the event queue.
    DropEvents { id: String },
}

impl KvOp {
    /// Whether the op only removes data (it may use the disk reserve).
    pub fn removes(&self) -> bool {
        matches!(
            self,
            KvOp::Delete { .. } | KvOp::DeleteBucket { .. } | KvOp::DropEvents { .. }
        )
    }
}

/// Everything stored, as loaded at start.
#[derive(Debug, Default)]
pub struct KvSnapshot {
    pub buckets: Vec<(Namespace, String)>,
    pub entries: Vec<(Namespace, String, String, Vec<u8>)>,
    /// Events stored with their changes and not yet handed on: `(id,
    /// record)` in the order they were stored.
    pub events: Vec<(String, Vec<u8>)>,
}

/// Where key-value data is kept durably. The node keeps a copy in memory
/// and serves reads from it; writes reach the backend, in order, before
/// they are acknowledged.
pub trait KvStore: Send + Sync + 'static {
    fn kv_load(&self) -> Result<KvSnapshot, StoreError>;
    /// Applies the operations in one transaction, in order.
    fn kv_apply(&self, ops: &[KvOp]) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sizes() {
        assert!(check_bucket("prefs").is_ok());
        assert!(check_bucket("a.b-c_d9").is_ok());
        for bad in ["", "Prefs", "-x", "a/b", &"x".repeat(64)] {
            assert!(check_bucket(bad).is_err(), "{bad}");
        }
        assert!(check_key("theme").is_ok());
        assert!(check_key("a/b c").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a\0b").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(check_value("k", &vec![0; MAX_VALUE_BYTES]).is_ok());
        let e = check_value("k", &vec![0; MAX_VALUE_BYTES + 1]).unwrap_err();
        assert!(e.to_string().contains("1 MiB"), "{e}");
    }
}
