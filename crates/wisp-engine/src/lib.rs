//! The dispatcher and everything around an invocation: the in-memory table
//! of deployed functions, admission under each function's concurrency
//! limit, cold loading and idle eviction (scale to zero), metering, metrics,
//! and batched activation recording off the request path.
//!
//! Every invocation, whatever its trigger, goes through [`Engine::invoke`].

mod engine;
mod metrics;
mod recorder;

pub use engine::{Engine, EngineError, EngineSettings, InvokeResponse};
pub use metrics::Metrics;
pub use recorder::RetentionSettings;
