//! The writer thread: commits queued writes in order, many at once (group
//! commit), and, when a commit fails, takes the failed writes back out of
//! memory so that memory is exactly what the backend holds.

use crate::{Bucket, Entry, Key, Map, SPIN};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Instant;
use tokio::sync::oneshot;
use wisp_core::kv::{KvError, KvOp, KvStore};

/// What one op of a write changed in memory: enough to take it back
/// (`prior`) and to make it again (`version`, the op's own value).
pub(crate) enum Undo {
    /// A key was set (the op is a `Set`) with this version.
    Put { prior: Option<Entry>, version: u64 },
    /// A key was removed (the op is a `Delete`).
    Removed { prior: Entry },
    /// The bucket was made (the op is a `CreateBucket`).
    CreatedBucket,
    /// The bucket was removed with everything in it.
    DeletedBucket(Bucket),
    /// Nothing in memory (the op stores a change's events).
    Nothing,
}

pub(crate) struct Write {
    pub(crate) ops: Vec<KvOp>,
    /// One per op, in the same order.
    pub(crate) undo: Vec<Undo>,
    /// Computed from the value it replaces (an increment, a swap): not
    /// replayed on its own once a write before it failed.
    pub(crate) conditional: bool,
    pub(crate) done: oneshot::Sender<Result<(), KvError>>,
}

/// Sets `key` in memory; returns the entry it replaced.
pub(crate) fn put(b: &mut Bucket, key: &str, value: Bytes, version: u64) -> Option<Entry> {
    let added = (key.len() + value.len()) as u64;
    let old = b.entries.insert(key.to_string(), Entry { value, version });
    match &old {
        Some(old) => b.bytes = b.bytes - (key.len() + old.value.len()) as u64 + added,
        None => b.bytes += added,
    }
    old
}

/// Puts back (or removes) `key` as it was.
pub(crate) fn restore(b: &mut Bucket, key: &str, prior: Option<Entry>) {
    match prior {
        Some(e) => {
            put(b, key, e.value, e.version);
        }
        None => {
            if let Some(old) = b.entries.remove(key) {
                b.bytes -= (key.len() + old.value.len()) as u64;
            }
        }
    }
}

pub(crate) fn lock_write(map: &Map) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, Bucket>> {
    map.write().unwrap_or_else(|p| p.into_inner())
}

/// Takes a write's ops back out of memory, last op first. Exact when
/// every write applied after it has been taken back first.
pub(crate) fn undo_write(map: &mut HashMap<Key, Bucket>, ops: &[KvOp], undo: Vec<Undo>) {
    for (op, u) in ops.iter().zip(undo).rev() {
        match (op, u) {
            (
                KvOp::Set {
                    namespace,
                    bucket,
                    key,
                    ..
                },
                Undo::Put { prior, .. },
            ) => {
                if let Some(b) = map.get_mut(&(namespace.clone(), bucket.clone())) {
                    restore(b, key, prior);
                }
            }
            (
                KvOp::Delete {
                    namespace,
                    bucket,
                    key,
                },
                Undo::Removed { prior },
            ) => {
                if let Some(b) = map.get_mut(&(namespace.clone(), bucket.clone())) {
                    restore(b, key, Some(prior));
                }
            }
            (KvOp::CreateBucket { namespace, bucket }, Undo::CreatedBucket) => {
                map.remove(&(namespace.clone(), bucket.clone()));
            }
            (KvOp::DeleteBucket { namespace, bucket }, Undo::DeletedBucket(old)) => {
                map.insert((namespace.clone(), bucket.clone()), old);
            }
            // `persist` pairs every op with its own kind of undo.
            _ => {}
        }
    }
}

/// Makes a write's ops in memory again, after they were stored on their
/// own (see [`recover`]).
fn redo_write(map: &mut HashMap<Key, Bucket>, ops: &[KvOp], versions: &[u64]) {
    for (op, version) in ops.iter().zip(versions) {
        match (op, version) {
            (
                KvOp::Set {
                    namespace,
                    bucket,
                    key,
                    value,
                },
                version,
            ) => {
                let b = map.entry((namespace.clone(), bucket.clone())).or_default();
                put(b, key, Bytes::from(value.clone()), *version);
            }
            (
                KvOp::Delete {
                    namespace,
                    bucket,
                    key,
                },
                _,
            ) => {
                if let Some(b) = map.get_mut(&(namespace.clone(), bucket.clone())) {
                    restore(b, key, None);
                }
            }
            (KvOp::CreateBucket { namespace, bucket }, _) => {
                map.entry((namespace.clone(), bucket.clone())).or_default();
            }
            (KvOp::DeleteBucket { namespace, bucket }, _) => {
                map.remove(&(namespace.clone(), bucket.clone()));
            }
            (KvOp::PutEvents { .. } | KvOp::DropEvents { .. }, _) => {}
        }
    }
}

/// A batch could not be committed. Memory holds it, and every write
/// queued behind it, on top of what is stored: with the memory lock held
/// (so nothing new is applied or queued meanwhile), take all of them
/// back, newest first, then store each write on its own, in order, and
/// put back in memory those that were stored. A write computed from the
/// value before it (an increment, a swap) is not stored once a write
/// before it failed: its input may be the failed write's value. Each
/// caller hears how its own write fared, and memory is again exactly
/// what is stored.
fn recover(
    store: &dyn KvStore,
    map: &Map,
    rx: &Receiver<Write>,
    mut batch: Vec<Write>,
    e: KvError,
) {
    let mut mem = lock_write(map);
    while let Ok(w) = rx.try_recv() {
        batch.push(w);
    }
    let mut ops_kept = Vec::with_capacity(batch.len());
    for w in batch.into_iter().rev() {
        let Write {
            ops,
            undo,
            conditional,
            done,
        } = w;
        // Undoing consumes the saved entries; redoing needs the versions.
        let redo: Vec<u64> = undo
            .iter()
            .map(|u| match u {
                Undo::Put { version, .. } => *version,
                _ => 0,
            })
            .collect();
        undo_write(&mut mem, &ops, undo);
        ops_kept.push((ops, redo, conditional, done));
    }
    let single = ops_kept.len() == 1;
    let mut failed: Option<KvError> = None;
    for (ops, redo, conditional, done) in ops_kept.into_iter().rev() {
        let result = if single {
            // Nothing else was in the batch: trying again alone would
            // only repeat the same transaction.
            Err(e.clone())
        } else if let (true, Some(f)) = (conditional, &failed) {
            Err(f.clone())
        } else {
            store.kv_apply(&ops).map_err(KvError::from)
        };
        match &result {
            Ok(()) => redo_write(&mut mem, &ops, &redo),
            Err(err) => {
                failed.get_or_insert_with(|| err.clone());
            }
        }
        let _ = done.send(result);
    }
}

/// Commits queued writes: one transaction for everything waiting, so many
/// concurrent writers share one commit.
pub(crate) fn write_loop(store: Arc<dyn KvStore>, rx: Receiver<Write>, map: Map) {
    loop {
        // After a commit, the next write often follows at once: look for it
        // on the CPU for a moment before sleeping (see `SPIN`).
        let start = Instant::now();
        let mut first = None;
        while start.elapsed() < SPIN {
            match rx.try_recv() {
                Ok(w) => {
                    first = Some(w);
                    break;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            }
        }
        let first = match first {
            Some(w) => w,
            None => match rx.recv() {
                Ok(w) => w,
                Err(_) => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let ops: Vec<KvOp> = batch.iter().flat_map(|w| w.ops.iter().cloned()).collect();
        match store.kv_apply(&ops).map_err(KvError::from) {
            Ok(()) => {
                for w in batch {
                    let _ = w.done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "key-value writes could not be stored; taking them back");
                recover(&*store, &map, &rx, batch, e);
            }
        }
    }
}
