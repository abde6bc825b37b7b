//! The store traits. The embedded backend (SQLite + files) lives in
//! `wisp-store`; a cluster backend implements the same traits.
//!
//! The traits are synchronous: callers on async paths run them on a blocking
//! thread. The request path never calls them (the engine keeps what it needs
//! in memory and records activations in batches).

use crate::activation::{Activation, UsageRow};
use crate::ids::{ActivationId, Digest, FunctionName, Namespace};
use crate::spec::{FunctionRecord, FunctionSpec};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("function {name:?} not found in namespace {namespace:?} (wisp ls lists functions)")]
    FunctionNotFound {
        namespace: Namespace,
        name: FunctionName,
    },
    #[error("artifact {0} not found (upload it first with POST /v1/artifacts)")]
    ArtifactNotFound(Digest),
    #[error("activation {0} not found (it may have aged out of retention)")]
    ActivationNotFound(ActivationId),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Db(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Functions and their versions.
pub trait Registry: Send + Sync + 'static {
    /// Creates the function or adds a new version; returns the stored record.
    fn put_function(
        &self,
        ns: &Namespace,
        name: &FunctionName,
        artifact: &Digest,
        spec: &FunctionSpec,
    ) -> Result<FunctionRecord, StoreError>;
    /// The current version of a function.
    fn get_function(
        &self,
        ns: &Namespace,
        name: &FunctionName,
    ) -> Result<FunctionRecord, StoreError>;
    /// Current versions of all functions, every namespace when `ns` is None.
    fn list_functions(&self, ns: Option<&Namespace>) -> Result<Vec<FunctionRecord>, StoreError>;
    /// Deletes a function with all its versions.
    fn delete_function(&self, ns: &Namespace, name: &FunctionName) -> Result<(), StoreError>;
}

/// Content-addressed bytes.
pub trait ArtifactStore: Send + Sync + 'static {
    /// Stores bytes durably (written whole or not at all); idempotent.
    /// Returns the digest and whether it was new.
    fn put_artifact(&self, bytes: &[u8]) -> Result<(Digest, bool), StoreError>;
    fn get_artifact(&self, digest: &Digest) -> Result<Vec<u8>, StoreError>;
    fn has_artifact(&self, digest: &Digest) -> bool;
}

#[derive(Debug, Clone, Default)]
pub struct ActivationFilter {
    pub namespace: Option<Namespace>,
    pub function: Option<FunctionName>,
    /// Only activations that started at or after this time (ms since epoch).
    pub since_ms: Option<i64>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// Activation records, with bounded retention.
pub trait ActivationStore: Send + Sync + 'static {
    /// Writes a batch in one transaction.
    fn insert_activations(&self, batch: &[Activation]) -> Result<(), StoreError>;
    fn get_activation(&self, id: &ActivationId) -> Result<Activation, StoreError>;
    fn list_activations(&self, filter: &ActivationFilter) -> Result<Vec<Activation>, StoreError>;
    fn usage(&self, ns: Option<&Namespace>, since_ms: i64) -> Result<Vec<UsageRow>, StoreError>;
    /// Deletes records beyond the newest `max_count` or older than
    /// `min_start_ms`; returns how many were removed.
    fn prune_activations(&self, max_count: u64, min_start_ms: i64) -> Result<u64, StoreError>;
}
