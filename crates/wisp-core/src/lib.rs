//! Shared vocabulary of Wisp: typed identifiers, function specs, invocation
//! outcomes, activation records, and the store traits every backend
//! implements. Executors, stores, the engine and the gateway depend on this
//! crate and not on each other's internals.

pub mod activation;
pub mod capacity;
pub mod durable;
pub mod event;
pub mod headers;
pub mod ids;
pub mod kv;
pub mod metrics;
pub mod reserve;
pub mod route;
pub mod source;
pub mod spec;
pub mod store;
pub mod tenancy;
pub mod time;

pub use activation::{Activation, HostAnswered, Outcome, UsageRow};
pub use event::{
    CloudEvent, DeadLetter, Delivery, EventError, KvEvent, Missed, ObjectEvent, Origin, Trigger,
    TriggerKind,
};
pub use ids::{
    ActivationId, DeliveryId, Digest, FunctionName, IdError, Namespace, TopicName, TriggerName,
};
pub use route::{
    Cors, JwtAuth, JwtKey, MAX_PARAMS, MAX_PATH_LEN, RouteAuth, RouteRecord, RouteSpec,
    normalize_host, templates_overlap,
};
pub use source::Source;
pub use spec::{Destination, FunctionRecord, FunctionSpec, Runtime, SpecError};
pub use store::{
    AccessLogStore, ActivationFilter, ActivationStore, ArtifactStore, EventStore, IdempotencyKey,
    QueueOp, QueueOpResult, Registry, StoreError, TenantStore,
};
pub use tenancy::{
    AccessEntry, AccessFilter, AccessKeyRecord, ApiKeyRecord, AuditEntry, GatewayUsage,
    NamespaceLimits, Permission, Quota, QuotaCount, Rate, Role, SecretInfo, TenancyError,
    TokenRecord, UsageBy,
};
