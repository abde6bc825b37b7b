//! Embedded storage backends: SQLite (WAL mode) for the registry and
//! activation records, content-addressed files for artifacts. This is what
//! `wisp serve` uses by default: everything lives in one data directory and
//! no other service is needed.

mod access_log;
mod artifacts;
mod events;
mod kv;
mod secrets;
mod sqlite;
mod tenants;

pub use artifacts::FileArtifacts;
pub use events::SqliteEvents;
pub use kv::SqliteKv;
pub use secrets::SecretKey;
pub use sqlite::SqliteStore;

use std::path::Path;
use wisp_core::StoreError;

/// An I/O error on `path`: `StoreError::Full` when the disk is full.
pub(crate) fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::io(path, source)
}
