//! Shared vocabulary of Wisp: typed identifiers, function specs, invocation
//! outcomes, activation records, and the store traits every backend
//! implements. Executors, stores, the engine and the gateway depend on this
//! crate and not on each other's internals.

pub mod activation;
pub mod durable;
pub mod event;
pub mod ids;
pub mod spec;
pub mod store;
pub mod time;

pub use activation::{Activation, Outcome, UsageRow};
pub use event::{
    CloudEvent, DeadLetter, Delivery, EventError, Missed, Origin, Trigger, TriggerKind,
};
pub use ids::{
    ActivationId, DeliveryId, Digest, FunctionName, IdError, Namespace, TopicName, TriggerName,
};
pub use spec::{Destination, FunctionRecord, FunctionSpec, SpecError};
pub use store::{
    ActivationFilter, ActivationStore, ArtifactStore, EventStore, IdempotencyKey, QueueOp,
    QueueOpResult, Registry, StoreError,
};
