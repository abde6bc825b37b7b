//! The dispatcher and everything around an invocation: the in-memory table
//! of deployed functions, admission under each function's concurrency
//! limit, cold loading and idle eviction (scale to zero), metering, metrics,
//! and batched activation recording off the request path.
//!
//! Every invocation, whatever its source, is admitted ([`Engine::admit`])
//! and run by [`Engine::dispatch`] (`dispatch.rs`); [`Engine::invoke`]
//! does both.

mod admission;
mod dispatch;
mod engine;
mod event_api;
mod events;
mod kv_events;
mod loading;
mod metering;
mod metrics;
mod purge;
mod queries;
mod queue;
mod recorder;
mod runner;
mod triggers;

pub use admission::{EffectiveLimits, NodeLimits};
pub use dispatch::{Answer, Dispatched, Ticket, Wait};
pub use engine::{Collected, Engine, EngineError, EngineSettings, InvokeResponse, Stores};
pub use event_api::{Accepted, DeliveryRef, DeliveryStatus, EventStatus};
pub use events::{QueueSettings, TopicView, TriggerView};
pub use metrics::{Dropped, Metrics};
pub use purge::Holdings;
pub use recorder::RetentionSettings;
