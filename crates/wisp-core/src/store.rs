//! The store traits. The embedded backend (SQLite + files) lives in
//! `wisp-store`; a cluster backend implements the same traits.
//!
//! The traits are synchronous: callers on async paths run them on a blocking
//! thread. The request path never calls them (the engine keeps what it needs
//! in memory and records activations in batches).

use crate::activation::{Activation, UsageRow};
use crate::event::{DeadLetter, Delivery, Trigger};
use crate::ids::{
    ActivationId, DeliveryId, Digest, FunctionName, Namespace, TopicName, TriggerName,
};
use crate::route::RouteRecord;
use crate::spec::{FunctionRecord, FunctionSpec};
use crate::tenancy::{
    AccessEntry, AccessFilter, AccessKeyRecord, ApiKeyRecord, AuditEntry, GatewayUsage,
    NamespaceLimits, QuotaCount, SecretInfo, TokenRecord, UsageBy,
};
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
    #[error(
        "secret {name:?} not found in namespace {namespace:?} (set it with `wisp secret set --ns {namespace} {name}`)"
    )]
    SecretNotFound { namespace: Namespace, name: String },
    #[error("{0} already exists")]
    Exists(String),
    #[error("secrets are not available: {0}")]
    Secrets(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Db(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The disk of the data directory is full (ENOSPC, EDQUOT, SQLite's
    /// SQLITE_FULL): nothing of the change was stored.
    #[error(
        "no space left on the node's disk ({0}); delete keys, objects or functions or free disk space on the node, then retry"
    )]
    Full(String),
}

impl StoreError {
    /// `Full` for an I/O error that says the disk is full, `Io` otherwise.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if is_no_space(&source) {
            StoreError::Full(format!("writing {}: {source}", path.display()))
        } else {
            StoreError::Io { path, source }
        }
    }

    /// Whether the disk being full caused this.
    pub fn is_full(&self) -> bool {
        match self {
            StoreError::Full(_) => true,
            StoreError::Io { source, .. } => is_no_space(source),
            _ => false,
        }
    }
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
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
    /// The artifacts any version of any function uses, in `ns` or (None)
    /// in every namespace.
    fn version_artifacts(&self, ns: Option<&Namespace>) -> Result<Vec<Digest>, StoreError>;
}

/// Content-addressed bytes.
pub trait ArtifactStore: Send + Sync + 'static {
    /// Stores bytes durably (written whole or not at all); idempotent.
    /// Returns the digest and whether it was new.
    fn put_artifact(&self, bytes: &[u8]) -> Result<(Digest, bool), StoreError>;
    fn get_artifact(&self, digest: &Digest) -> Result<Vec<u8>, StoreError>;
    fn has_artifact(&self, digest: &Digest) -> bool;
    /// Removes an artifact; false when there was none.
    fn delete_artifact(&self, digest: &Digest) -> Result<bool, StoreError>;
}

#[derive(Debug, Clone, Default)]
pub struct ActivationFilter {
    pub namespace: Option<Namespace>,
    pub function: Option<FunctionName>,
    /// Only activations that started at or after this time (ms since epoch).
    pub since_ms: Option<i64>,
    /// At most this many, newest first.
    pub limit: usize,
    /// Only the attempts of this queued delivery.
    pub delivery: Option<DeliveryId>,
    /// Only activations that ran for this CloudEvent id.
    pub event_id: Option<String>,
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
    /// Deletes every activation record of a namespace (its usage goes with
    /// them); returns how many.
    fn delete_namespace_activations(&self, ns: &Namespace) -> Result<u64, StoreError>;
}

/// An idempotency key: a second enqueue with the same key within the
/// window returns the first one's deliveries instead of adding new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub namespace: Namespace,
    /// What the key is scoped to, e.g. `function:resize` or `topic:orders`.
    pub scope: String,
    pub key: String,
    pub expires_ms: i64,
}

/// One change to the durable queue. A batch of them is applied in one
/// transaction (group commit).
#[derive(Debug, Clone)]
pub enum QueueOp {
    /// Store new deliveries (all or none).
    Enqueue {
        deliveries: Vec<Delivery>,
        idempotency: Option<IdempotencyKey>,
    },
    /// The delivery is done (it succeeded, or it moved on): remove it.
    Ack(DeliveryId),
    /// Try the delivery again later.
    Retry {
        id: DeliveryId,
        attempts: u32,
        available_ms: i64,
        error: String,
    },
    /// Move the delivery to the dead-letter queue.
    DeadLetter {
        id: DeliveryId,
        attempts: u32,
        error: String,
        failed_ms: i64,
    },
    /// A cron tick: enqueue `delivery` only if `tick_ms` is later than the
    /// trigger's last recorded tick, and record it — so a tick fires once,
    /// also across restarts.
    CronTick {
        namespace: Namespace,
        trigger: TriggerName,
        tick_ms: i64,
        delivery: Option<Box<Delivery>>,
    },
}

/// What applying one [`QueueOp`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueOpResult {
    /// Stored these deliveries.
    Enqueued,
    /// The idempotency key was seen before: these are the earlier
    /// deliveries, and nothing new was stored.
    Duplicate {
        /// The CloudEvent id of the first request.
        event_id: String,
        deliveries: Vec<(DeliveryId, FunctionName)>,
    },
    Done,
    /// Whether the cron tick was new (and its delivery stored).
    CronTick(bool),
}

/// The durable queue, the dead-letter queue, triggers and topics.
pub trait EventStore: Send + Sync + 'static {
    /// Applies a batch of operations in one transaction, durably (fsync)
    /// before it returns. One failing operation fails alone (its result);
    /// the outer error means the whole batch was not stored.
    #[allow(clippy::type_complexity)]
    fn apply(&self, ops: &[QueueOp]) -> Result<Vec<Result<QueueOpResult, StoreError>>, StoreError>;
    /// Every delivery still in the queue (after a restart: what to run).
    fn pending(&self) -> Result<Vec<Delivery>, StoreError>;
    /// Dead letters, newest first.
    fn dead_letters(
        &self,
        ns: &Namespace,
        function: Option<&FunctionName>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError>;
    /// Moves dead letters back into the queue with a fresh attempt count
    /// (`ids` empty: all of them, of `function` when given); returns them.
    fn replay_dead_letters(
        &self,
        ns: &Namespace,
        ids: &[DeliveryId],
        function: Option<&FunctionName>,
        now_ms: i64,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Deletes dead letters for good (`ids` empty: all of them, of
    /// `function` when given); returns how many.
    fn delete_dead_letters(
        &self,
        ns: &Namespace,
        ids: &[DeliveryId],
        function: Option<&FunctionName>,
    ) -> Result<u64, StoreError>;
    /// A queued delivery or dead letter by id.
    /// Deletes a namespace's queued and delayed deliveries, dead letters,
    /// idempotency keys and cron state; returns the deliveries and dead
    /// letters deleted.
    fn delete_namespace_events(&self, ns: &Namespace) -> Result<u64, StoreError>;
    fn find_delivery(&self, id: &DeliveryId) -> Result<Option<(Delivery, bool)>, StoreError>;
    /// Deliveries (queued or dead) of a CloudEvent id.
    fn deliveries_of_event(
        &self,
        ns: &Namespace,
        event_id: &str,
    ) -> Result<Vec<(Delivery, bool)>, StoreError>;
    fn put_trigger(&self, t: &Trigger) -> Result<(), StoreError>;
    fn delete_trigger(&self, ns: &Namespace, name: &TriggerName) -> Result<bool, StoreError>;
    fn list_triggers(&self) -> Result<Vec<Trigger>, StoreError>;
    /// The last tick a cron trigger fired for (ms since epoch).
    fn last_cron_tick(&self, ns: &Namespace, name: &TriggerName)
    -> Result<Option<i64>, StoreError>;
    /// Creates a topic; false when it existed.
    fn put_topic(&self, ns: &Namespace, topic: &TopicName) -> Result<bool, StoreError>;
    fn delete_topic(&self, ns: &Namespace, topic: &TopicName) -> Result<bool, StoreError>;
    fn list_topics(&self) -> Result<Vec<(Namespace, TopicName)>, StoreError>;
    /// Forgets idempotency keys that expired before `now_ms`.
    fn prune_idempotency(&self, now_ms: i64) -> Result<u64, StoreError>;
}

/// Namespaces, management tokens, routes, API keys with their quota
/// counts, secrets and the audit log.
pub trait TenantStore: Send + Sync + 'static {
    /// Creates a namespace; false when it existed.
    fn put_namespace(&self, ns: &Namespace, now_ms: i64) -> Result<bool, StoreError>;
    fn delete_namespace(&self, ns: &Namespace) -> Result<bool, StoreError>;
    /// Every namespace with its creation time (`default` included).
    fn list_namespaces(&self) -> Result<Vec<(Namespace, i64)>, StoreError>;
    /// Allows or forbids the namespace routes without a host (the shared
    /// host-less space); false when the namespace does not exist.
    fn set_shared_routes(&self, ns: &Namespace, allowed: bool) -> Result<bool, StoreError>;
    /// Namespaces allowed routes without a host (`default` from the start).
    fn shared_routes_namespaces(&self) -> Result<Vec<Namespace>, StoreError>;
    /// Assigns a host (domain) to a namespace. `Exists` when another
    /// namespace holds it; Ok(false) when this one did already.
    fn put_domain(&self, host: &str, ns: &Namespace, now_ms: i64) -> Result<bool, StoreError>;
    fn delete_domain(&self, ns: &Namespace, host: &str) -> Result<bool, StoreError>;
    /// Every assigned host: (host, namespace, assigned at).
    fn list_domains(&self) -> Result<Vec<(String, Namespace, i64)>, StoreError>;
    /// The limits set on namespaces (those with none set are left out).
    fn namespace_limits(&self) -> Result<Vec<(Namespace, NamespaceLimits)>, StoreError>;
    /// Sets (replaces) a namespace's limits.
    fn set_namespace_limits(
        &self,
        ns: &Namespace,
        limits: &NamespaceLimits,
    ) -> Result<(), StoreError>;

    fn put_token(&self, t: &TokenRecord) -> Result<(), StoreError>;
    fn delete_token(&self, ns: &Namespace, id: &str) -> Result<bool, StoreError>;
    fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Creates or replaces a route (by id).
    fn put_route(&self, r: &RouteRecord) -> Result<(), StoreError>;
    fn delete_route(&self, ns: &Namespace, id: &str) -> Result<bool, StoreError>;
    fn list_routes(&self) -> Result<Vec<RouteRecord>, StoreError>;

    /// Stores a new key; [`StoreError::Exists`] when the name is taken.
    fn put_api_key(&self, k: &ApiKeyRecord) -> Result<(), StoreError>;
    fn delete_api_key(&self, ns: &Namespace, name: &str) -> Result<bool, StoreError>;
    fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Saves keys' quota counts (by key id).
    fn save_quota_counts(&self, counts: &[(String, QuotaCount)]) -> Result<(), StoreError>;
    fn quota_counts(&self) -> Result<Vec<(String, QuotaCount)>, StoreError>;

    /// Stores a secret encrypted at rest.
    fn put_secret(
        &self,
        ns: &Namespace,
        name: &str,
        value: &str,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    fn delete_secret(&self, ns: &Namespace, name: &str) -> Result<bool, StoreError>;
    fn list_secrets(&self, ns: &Namespace) -> Result<Vec<SecretInfo>, StoreError>;
    /// The values of `names`, decrypted; fails naming the first missing one.
    fn secret_values(
        &self,
        ns: &Namespace,
        names: &[String],
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// Stores an access key with its secret (encrypted at rest).
    fn put_access_key(&self, k: &AccessKeyRecord, secret: &str) -> Result<(), StoreError>;
    fn delete_access_key(&self, ns: &Namespace, id: &str) -> Result<bool, StoreError>;
    /// Every access key with its secret, decrypted.
    fn access_keys(&self) -> Result<Vec<(AccessKeyRecord, String)>, StoreError>;

    fn insert_audit(&self, batch: &[AuditEntry]) -> Result<(), StoreError>;
    /// Newest first.
    fn list_audit(
        &self,
        ns: &Namespace,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;
}

/// The gateway's access log, with retention.
pub trait AccessLogStore: Send + Sync + 'static {
    fn insert_access(&self, batch: &[AccessEntry]) -> Result<(), StoreError>;
    /// Newest first.
    fn list_access(&self, filter: &AccessFilter) -> Result<Vec<AccessEntry>, StoreError>;
    /// Traffic of a namespace since `since_ms`, grouped.
    fn gateway_usage(
        &self,
        ns: &Namespace,
        by: UsageBy,
        since_ms: i64,
    ) -> Result<Vec<GatewayUsage>, StoreError>;
    /// Deletes entries older than `min_time_ms` and beyond the newest
    /// `max_count`; returns how many.
    fn prune_access(&self, max_count: u64, min_time_ms: i64) -> Result<u64, StoreError>;
}
