//! The WebAssembly executor: runs components of the `wasi:http/proxy` world
//! on wasmtime.
//!
//! One [`WasmEngine`] per node holds the wasmtime `Engine` (pooling
//! allocator, epoch interruption), the `Linker` with WASI and `wasi:http`,
//! and the on-disk cache of compiled components. [`WasmEngine::compile`]
//! validates and compiles an artifact at deploy time;
//! [`WasmEngine::prepare`] turns a compiled component plus a function's spec
//! into a [`Prepared`] function (a cached `InstancePre`), and
//! [`Prepared::start`] runs one request in a fresh instance.
//!
//! The engine crate (`wisp-engine`) decides *when* to prepare, evict and
//! invoke; this crate only knows how.

mod demote;
mod engine;
mod host;
mod kv;
mod logs;
mod run;

pub use engine::{DeployError, EngineConfig, WasmEngine};
pub use host::{FunctionCaller, INTERNAL_S3_AUTHORITY, ObjectsHook};
pub use run::{Prepared, ResponseBody, RunReport, Warm};
pub use wasmtime_wasi_http::WasiBody;
pub use wisp_kv::Kv;
