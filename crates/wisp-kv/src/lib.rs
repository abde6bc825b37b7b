//! The node's key-value store, as functions (`wasi:keyvalue`), the HTTP
//! API and the CLI use it.
//!
//! Every bucket is held in memory and reads are served from there (a
//! `get` from a function takes well under a microsecond). Writes change
//! the memory copy and go, in order, to one writer thread that commits
//! whatever has queued up in one transaction of the backend ([`KvStore`],
//! SQLite by default); a write is acknowledged once it is committed. So
//! data sizes are bounded by memory: the store is for a function's state
//! (settings, counters, sessions, small documents: at most 1 MiB a value),
//! and the object store is for large data.
//!
//! Atomic operations (`increment`, compare-and-swap) are atomic against
//! every other write of the node: they run under the store's write lock.

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use wisp_core::Namespace;
use wisp_core::kv::{KvError, KvOp, KvStore, check_bucket, check_key, check_value};

type Key = (Namespace, String);

/// How long a writer waits on the CPU for its commit, and the writer
/// thread for the next write, before sleeping: about ten commits.
const SPIN: Duration = Duration::from_micros(50);

#[derive(Default)]
struct Bucket {
    entries: BTreeMap<String, Entry>,
    bytes: u64,
}

#[derive(Clone)]
struct Entry {
    value: Bytes,
    /// Changes with every write of the key: what compare-and-swap checks.
    version: u64,
}

/// What one op of a write changed in memory: enough to take it back
/// (`prior`) and to make it again (`version`, the op's own value).
enum Undo {
    /// A key was set (the op is a `Set`) with this version.
    Put { prior: Option<Entry>, version: u64 },
    /// A key was removed (the op is a `Delete`).
    Removed { prior: Entry },
    /// The bucket was made (the op is a `CreateBucket`).
    CreatedBucket,
    /// The bucket was removed with everything in it.
    DeletedBucket(Bucket),
}

struct Write {
    ops: Vec<KvOp>,
    /// One per op, in the same order.
    undo: Vec<Undo>,
    /// Computed from the value it replaces (an increment, a swap): not
    /// replayed on its own once a write before it failed.
    conditional: bool,
    done: oneshot::Sender<Result<(), KvError>>,
}

type Map = Arc<RwLock<HashMap<Key, Bucket>>>;

struct Inner {
    buckets: Map,
    writer: std::sync::mpsc::Sender<Write>,
    version: AtomicU64,
    listener: std::sync::OnceLock<Listener>,
}

/// A committed change of a key, for the change listener (storage
/// triggers).
#[derive(Debug, Clone)]
pub struct KvChange {
    pub namespace: Namespace,
    pub bucket: String,
    pub key: String,
    /// The new value's size; none when the key was deleted.
    pub size: Option<u64>,
    /// The function that made the change (none: the API or the CLI).
    pub by: Option<String>,
}

/// Told about every committed change; a write is acknowledged once the
/// listener's future is done (an error fails the write's acknowledgement,
/// not the write).
pub type Listener = Arc<
    dyn Fn(KvChange) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// A bucket's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    pub name: String,
    pub keys: u64,
    pub bytes: u64,
}

/// One page of keys, in order, and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    /// The last key of this page, to pass as `after` for the next page;
    /// none when this was the last page.
    pub next: Option<String>,
}

/// A compare-and-swap handle: the key's version when it was taken, and
/// the value it had then.
#[derive(Debug, Clone)]
pub struct Cas {
    pub namespace: Namespace,
    pub bucket: String,
    pub key: String,
    version: Option<u64>,
    pub value: Option<Bytes>,
}

/// Why a swap did not happen.
#[derive(Debug)]
pub enum SwapError {
    Store(KvError),
    /// The key changed since the handle was taken: a fresh handle.
    Changed(Cas),
}

/// The key-value store. Cheap to clone.
#[derive(Clone)]
pub struct Kv {
    inner: Arc<Inner>,
}

impl Kv {
    /// Loads everything from `store` and starts the writer thread.
    pub fn open(store: Arc<dyn KvStore>) -> Result<Self, KvError> {
        let snap = store.kv_load()?;
        let mut buckets: HashMap<Key, Bucket> = HashMap::new();
        for (ns, b) in snap.buckets {
            buckets.entry((ns, b)).or_default();
        }
        let mut version = 0;
        for (ns, b, k, v) in snap.entries {
            version += 1;
            let bucket = buckets.entry((ns, b)).or_default();
            bucket.bytes += (k.len() + v.len()) as u64;
            bucket.entries.insert(
                k,
                Entry {
                    value: Bytes::from(v),
                    version,
                },
            );
        }
        let (tx, rx) = std::sync::mpsc::channel::<Write>();
        let map: Map = Arc::new(RwLock::new(buckets));
        let writer_map = map.clone();
        std::thread::Builder::new()
            .name("wisp-kv-writer".into())
            .spawn(move || write_loop(store, rx, writer_map))
            .map_err(|e| KvError::Store(format!("starting the writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                buckets: map,
                writer: tx,
                version: AtomicU64::new(version),
                listener: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Sets the change listener (once, at start).
    pub fn set_listener(&self, l: Listener) {
        let _ = self.inner.listener.set(l);
    }

    async fn changed(
        &self,
        (ns, bucket, key): (&Namespace, &str, &str),
        size: Option<u64>,
        by: Option<&str>,
    ) -> Result<(), KvError> {
        let Some(l) = self.inner.listener.get() else {
            return Ok(());
        };
        l(KvChange {
            namespace: ns.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            size,
            by: by.map(str::to_string),
        })
        .await
        .map_err(|e| {
            KvError::Store(format!(
                "the write was stored, but its storage events could not be queued ({e}); retry it"
            ))
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, Bucket>> {
        self.inner.buckets.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, Bucket>> {
        lock_write(&self.inner.buckets)
    }

    fn next_version(&self) -> u64 {
        self.inner.version.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Queues `ops` for the writer (call with the write lock held, so the
    /// writer sees changes in the order memory did) and returns what
    /// resolves once they are committed. `undo` says how to take each op
    /// back out of memory if it cannot be stored.
    fn persist(
        &self,
        map: &mut HashMap<Key, Bucket>,
        ops: Vec<KvOp>,
        undo: Vec<Undo>,
        conditional: bool,
    ) -> oneshot::Receiver<Result<(), KvError>> {
        let (done, rx) = oneshot::channel();
        if let Err(e) = self.inner.writer.send(Write {
            ops,
            undo,
            conditional,
            done,
        }) {
            // No writer to store it: take it back now.
            let w = e.0;
            undo_write(map, &w.ops, w.undo);
            let _ = w
                .done
                .send(Err(KvError::Store("the writer thread is gone".into())));
        }
        rx
    }

    async fn committed(mut rx: oneshot::Receiver<Result<(), KvError>>) -> Result<(), KvError> {
        // A commit takes a few microseconds; going to sleep and being woken
        // by another thread costs far more on a virtual machine. Wait a
        // little on the CPU first.
        let start = Instant::now();
        while start.elapsed() < SPIN {
            match rx.try_recv() {
                Ok(r) => return r,
                Err(oneshot::error::TryRecvError::Empty) => std::hint::spin_loop(),
                Err(oneshot::error::TryRecvError::Closed) => break,
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(KvError::Store("the writer thread is gone".into())))
    }

    /// Whether the bucket exists.
    pub fn bucket_exists(&self, ns: &Namespace, bucket: &str) -> bool {
        self.read().contains_key(&(ns.clone(), bucket.to_string()))
    }

    /// Makes the bucket if it does not exist; true when it was made.
    pub async fn create_bucket(&self, ns: &Namespace, bucket: &str) -> Result<bool, KvError> {
        check_bucket(bucket)?;
        let rx = {
            let mut map = self.write();
            let key = (ns.clone(), bucket.to_string());
            if map.contains_key(&key) {
                return Ok(false);
            }
            map.insert(key, Bucket::default());
            self.persist(
                &mut map,
                vec![KvOp::CreateBucket {
                    namespace: ns.clone(),
                    bucket: bucket.to_string(),
                }],
                vec![Undo::CreatedBucket],
                false,
            )
        };
        Self::committed(rx).await.map(|()| true)
    }

    /// Removes a bucket with all its keys; false when there was none.
    pub async fn delete_bucket(&self, ns: &Namespace, bucket: &str) -> Result<bool, KvError> {
        let rx = {
            let mut map = self.write();
            let Some(old) = map.remove(&(ns.clone(), bucket.to_string())) else {
                return Ok(false);
            };
            self.persist(
                &mut map,
                vec![KvOp::DeleteBucket {
                    namespace: ns.clone(),
                    bucket: bucket.to_string(),
                }],
                vec![Undo::DeletedBucket(old)],
                false,
            )
        };
        Self::committed(rx).await.map(|()| true)
    }

    /// Keys and bytes held, per namespace (for metrics).
    pub fn totals(&self) -> Vec<(Namespace, u64, u64)> {
        let mut by: BTreeMap<String, (Namespace, u64, u64)> = BTreeMap::new();
        for ((ns, _), b) in self.read().iter() {
            let e = by
                .entry(ns.to_string())
                .or_insert_with(|| (ns.clone(), 0, 0));
            e.1 += b.entries.len() as u64;
            e.2 += b.bytes;
        }
        by.into_values().collect()
    }

    /// The namespace's buckets, by name.
    pub fn buckets(&self, ns: &Namespace) -> Vec<BucketInfo> {
        let mut v: Vec<BucketInfo> = self
            .read()
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|((_, name), b)| BucketInfo {
                name: name.clone(),
                keys: b.entries.len() as u64,
                bytes: b.bytes,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn no_bucket(ns: &Namespace, bucket: &str) -> KvError {
        KvError::NoSuchBucket {
            namespace: ns.clone(),
            bucket: bucket.to_string(),
        }
    }

    pub fn get(&self, ns: &Namespace, bucket: &str, key: &str) -> Result<Option<Bytes>, KvError> {
        let map = self.read();
        let b = map
            .get(&(ns.clone(), bucket.to_string()))
            .ok_or_else(|| Self::no_bucket(ns, bucket))?;
        Ok(b.entries.get(key).map(|e| e.value.clone()))
    }

    /// Sets `key`; the bucket is made if it does not exist.
    pub async fn set(
        &self,
        ns: &Namespace,
        bucket: &str,
        key: &str,
        value: Bytes,
        by: Option<&str>,
    ) -> Result<(), KvError> {
        let size = value.len() as u64;
        check_key(key)?;
        check_value(key, &value)?;
        check_bucket(bucket)?;
        let rx = {
            let mut map = self.write();
            let mut ops = Vec::with_capacity(2);
            let mut undo = Vec::with_capacity(2);
            let b = self.bucket_mut(&mut map, ns, bucket, &mut ops, &mut undo);
            let version = self.next_version();
            let value_vec = value.to_vec();
            let prior = put(b, key, value, version);
            ops.push(KvOp::Set {
                namespace: ns.clone(),
                bucket: bucket.to_string(),
                key: key.to_string(),
                value: value_vec,
            });
            undo.push(Undo::Put { prior, version });
            self.persist(&mut map, ops, undo, false)
        };
        Self::committed(rx).await?;
        self.changed((ns, bucket, key), Some(size), by).await
    }

    /// The bucket for a write, made (and its creation queued) when missing.
    fn bucket_mut<'m>(
        &self,
        map: &'m mut HashMap<Key, Bucket>,
        ns: &Namespace,
        bucket: &str,
        ops: &mut Vec<KvOp>,
        undo: &mut Vec<Undo>,
    ) -> &'m mut Bucket {
        let key = (ns.clone(), bucket.to_string());
        if !map.contains_key(&key) {
            ops.push(KvOp::CreateBucket {
                namespace: ns.clone(),
                bucket: bucket.to_string(),
            });
            undo.push(Undo::CreatedBucket);
        }
        map.entry(key).or_default()
    }

    /// Deletes `key`; true when it existed.
    pub async fn delete(
        &self,
        ns: &Namespace,
        bucket: &str,
        key: &str,
        by: Option<&str>,
    ) -> Result<bool, KvError> {
        let rx = {
            let mut map = self.write();
            let b = map
                .get_mut(&(ns.clone(), bucket.to_string()))
                .ok_or_else(|| Self::no_bucket(ns, bucket))?;
            let Some(old) = b.entries.remove(key) else {
                return Ok(false);
            };
            b.bytes -= (key.len() + old.value.len()) as u64;
            self.persist(
                &mut map,
                vec![KvOp::Delete {
                    namespace: ns.clone(),
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                }],
                vec![Undo::Removed { prior: old }],
                false,
            )
        };
        Self::committed(rx).await?;
        self.changed((ns, bucket, key), None, by).await?;
        Ok(true)
    }

    /// Keys in order, starting after `after`, at most `limit`, only those
    /// starting with `prefix`.
    pub fn list(
        &self,
        ns: &Namespace,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, KvError> {
        let map = self.read();
        let b = map
            .get(&(ns.clone(), bucket.to_string()))
            .ok_or_else(|| Self::no_bucket(ns, bucket))?;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let mut keys = Vec::new();
        let mut more = false;
        for k in b
            .entries
            .range((start, Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
        {
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(k.clone());
        }
        let next = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, next })
    }

    /// Adds `delta` to the decimal integer stored at `key` (0 when absent)
    /// and returns the new value.
    pub async fn increment(
        &self,
        ns: &Namespace,
        bucket: &str,
        key: &str,
        delta: i64,
        by: Option<&str>,
    ) -> Result<i64, KvError> {
        check_key(key)?;
        check_bucket(bucket)?;
        let (n, rx) = {
            let mut map = self.write();
            let current = match map
                .get(&(ns.clone(), bucket.to_string()))
                .and_then(|b| b.entries.get(key))
            {
                None => 0,
                Some(e) => std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .ok_or_else(|| KvError::NotANumber(key.to_string()))?,
            };
            let n = current
                .checked_add(delta)
                .ok_or_else(|| KvError::Overflow(key.to_string()))?;
            let mut ops = Vec::with_capacity(2);
            let mut undo = Vec::with_capacity(2);
            let version = self.next_version();
            let b = self.bucket_mut(&mut map, ns, bucket, &mut ops, &mut undo);
            let value = n.to_string().into_bytes();
            let prior = put(b, key, Bytes::from(value.clone()), version);
            ops.push(KvOp::Set {
                namespace: ns.clone(),
                bucket: bucket.to_string(),
                key: key.to_string(),
                value,
            });
            undo.push(Undo::Put { prior, version });
            (n, self.persist(&mut map, ops, undo, true))
        };
        Self::committed(rx).await?;
        let size = n.to_string().len() as u64;
        self.changed((ns, bucket, key), Some(size), by).await?;
        Ok(n)
    }

    /// A compare-and-swap handle on `key`, with its current value.
    pub fn cas(&self, ns: &Namespace, bucket: &str, key: &str) -> Result<Cas, KvError> {
        check_key(key)?;
        let map = self.read();
        let b = map
            .get(&(ns.clone(), bucket.to_string()))
            .ok_or_else(|| Self::no_bucket(ns, bucket))?;
        let e = b.entries.get(key);
        Ok(Cas {
            namespace: ns.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            version: e.map(|e| e.version),
            value: e.map(|e| e.value.clone()),
        })
    }

    /// Sets the handle's key to `value` if nobody wrote it since the
    /// handle was taken.
    pub async fn swap(&self, cas: Cas, value: Bytes, by: Option<&str>) -> Result<(), SwapError> {
        let (ns, bucket, key) = (cas.namespace.clone(), cas.bucket.clone(), cas.key.clone());
        let size = value.len() as u64;
        check_value(&cas.key, &value).map_err(SwapError::Store)?;
        let rx = {
            let mut map = self.write();
            let b = map
                .get_mut(&(cas.namespace.clone(), cas.bucket.clone()))
                .ok_or_else(|| SwapError::Store(Self::no_bucket(&cas.namespace, &cas.bucket)))?;
            let now = b.entries.get(&cas.key);
            if now.map(|e| e.version) != cas.version {
                let fresh = Cas {
                    version: now.map(|e| e.version),
                    value: now.map(|e| e.value.clone()),
                    ..cas
                };
                return Err(SwapError::Changed(fresh));
            }
            let version = self.next_version();
            let value_vec = value.to_vec();
            let prior = put(b, &cas.key, value, version);
            self.persist(
                &mut map,
                vec![KvOp::Set {
                    namespace: cas.namespace,
                    bucket: cas.bucket,
                    key: cas.key,
                    value: value_vec,
                }],
                vec![Undo::Put { prior, version }],
                true,
            )
        };
        Self::committed(rx).await.map_err(SwapError::Store)?;
        self.changed((&ns, &bucket, &key), Some(size), by)
            .await
            .map_err(SwapError::Store)
    }
}

/// Sets `key` in memory; returns the entry it replaced.
fn put(b: &mut Bucket, key: &str, value: Bytes, version: u64) -> Option<Entry> {
    let added = (key.len() + value.len()) as u64;
    let old = b.entries.insert(key.to_string(), Entry { value, version });
    match &old {
        Some(old) => b.bytes = b.bytes - (key.len() + old.value.len()) as u64 + added,
        None => b.bytes += added,
    }
    old
}

/// Puts back (or removes) `key` as it was.
fn restore(b: &mut Bucket, key: &str, prior: Option<Entry>) {
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

fn lock_write(map: &Map) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, Bucket>> {
    map.write().unwrap_or_else(|p| p.into_inner())
}

/// Takes a write's ops back out of memory, last op first. Exact when
/// every write applied after it has been taken back first.
fn undo_write(map: &mut HashMap<Key, Bucket>, ops: &[KvOp], undo: Vec<Undo>) {
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
fn write_loop(store: Arc<dyn KvStore>, rx: Receiver<Write>, map: Map) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use wisp_core::StoreError;
    use wisp_core::kv::KvSnapshot;

    /// A backend that records what it was asked to store.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<KvOp>>);

    impl KvStore for Recorded {
        fn kv_load(&self) -> Result<KvSnapshot, StoreError> {
            Ok(KvSnapshot::default())
        }
        fn kv_apply(&self, ops: &[KvOp]) -> Result<(), StoreError> {
            self.0.lock().unwrap().extend_from_slice(ops);
            Ok(())
        }
    }

    fn ns() -> Namespace {
        Namespace::new("default").unwrap()
    }

    #[tokio::test]
    async fn set_get_list_delete() {
        let rec = Arc::new(Recorded::default());
        let kv = Kv::open(rec.clone()).unwrap();
        let n = ns();
        assert!(matches!(
            kv.get(&n, "prefs", "x"),
            Err(KvError::NoSuchBucket { .. })
        ));
        for k in ["theme", "lang", "tz", "a/b"] {
            kv.set(&n, "prefs", k, Bytes::from(k.to_uppercase()), None)
                .await
                .unwrap();
        }
        assert_eq!(kv.get(&n, "prefs", "theme").unwrap().unwrap(), "THEME");
        assert_eq!(kv.get(&n, "prefs", "nope").unwrap(), None);
        let p = kv.list(&n, "prefs", "", None, 2).unwrap();
        assert_eq!(p.keys, vec!["a/b", "lang"]);
        let p = kv.list(&n, "prefs", "", p.next.as_deref(), 2).unwrap();
        assert_eq!(p.keys, vec!["theme", "tz"]);
        assert_eq!(p.next, None);
        assert_eq!(
            kv.list(&n, "prefs", "t", None, 10).unwrap().keys,
            vec!["theme", "tz"]
        );
        assert!(kv.delete(&n, "prefs", "tz", None).await.unwrap());
        assert!(!kv.delete(&n, "prefs", "tz", None).await.unwrap());
        assert_eq!(kv.buckets(&n)[0].keys, 3);
        // Another namespace sees none of it.
        let other = Namespace::new("other").unwrap();
        assert!(kv.buckets(&other).is_empty());
        assert!(kv.get(&other, "prefs", "theme").is_err());
        let ops = rec.0.lock().unwrap();
        assert!(matches!(&ops[0], KvOp::CreateBucket { bucket, .. } if bucket == "prefs"));
        assert_eq!(ops.len(), 1 + 4 + 1);
    }

    #[tokio::test]
    async fn increments_and_swaps_are_atomic() {
        let kv = Kv::open(Arc::new(Recorded::default())).unwrap();
        let n = ns();
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (kv, n) = (kv.clone(), n.clone());
                tokio::spawn(async move { kv.increment(&n, "c", "hits", 1, None).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(kv.get(&n, "c", "hits").unwrap().unwrap(), "200");
        assert_eq!(kv.increment(&n, "c", "hits", -50, None).await.unwrap(), 150);
        kv.set(&n, "c", "word", Bytes::from("abc"), None)
            .await
            .unwrap();
        assert!(matches!(
            kv.increment(&n, "c", "word", 1, None).await,
            Err(KvError::NotANumber(_))
        ));
        let h = kv.cas(&n, "c", "word").unwrap();
        assert_eq!(h.value.as_deref(), Some(&b"abc"[..]));
        let stale = kv.cas(&n, "c", "word").unwrap();
        kv.swap(h, Bytes::from("def"), None).await.unwrap();
        let fresh = match kv.swap(stale, Bytes::from("xyz"), None).await {
            Err(SwapError::Changed(c)) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(fresh.value.as_deref(), Some(&b"def"[..]));
        kv.swap(fresh, Bytes::from("xyz"), None).await.unwrap();
        assert_eq!(kv.get(&n, "c", "word").unwrap().unwrap(), "xyz");
        // CAS on an absent key: swap succeeds only while it stays absent.
        let h = kv.cas(&n, "c", "new").unwrap();
        assert!(h.value.is_none());
        kv.swap(h, Bytes::from("1"), None).await.unwrap();
    }

    /// A backend whose disk is "full" for writes of values starting with
    /// `big`: a transaction with one of them stores nothing.
    #[derive(Default)]
    struct Full(Mutex<Vec<KvOp>>);

    impl KvStore for Full {
        fn kv_load(&self) -> Result<KvSnapshot, StoreError> {
            Ok(KvSnapshot::default())
        }
        fn kv_apply(&self, ops: &[KvOp]) -> Result<(), StoreError> {
            if ops
                .iter()
                .any(|o| matches!(o, KvOp::Set { value, .. } if value.starts_with(b"big")))
            {
                return Err(StoreError::Full("database or disk is full".into()));
            }
            self.0.lock().unwrap().extend_from_slice(ops);
            Ok(())
        }
    }

    /// What the backend holds: its ops replayed.
    fn stored(ops: &[KvOp]) -> BTreeMap<(String, String), Vec<u8>> {
        let mut m = BTreeMap::new();
        for op in ops {
            match op {
                KvOp::Set {
                    bucket, key, value, ..
                } => {
                    m.insert((bucket.clone(), key.clone()), value.clone());
                }
                KvOp::Delete { bucket, key, .. } => {
                    m.remove(&(bucket.clone(), key.clone()));
                }
                KvOp::DeleteBucket { bucket, .. } => m.retain(|(b, _), _| b != bucket),
                KvOp::CreateBucket { .. } => {}
            }
        }
        m
    }

    #[tokio::test]
    async fn a_write_that_cannot_be_stored_is_never_visible() {
        let be = Arc::new(Full::default());
        let kv = Kv::open(be.clone()).unwrap();
        let n = ns();
        kv.set(&n, "b", "k", Bytes::from("old"), None)
            .await
            .unwrap();
        let e = kv.set(&n, "b", "k", Bytes::from("big new"), None).await;
        assert!(matches!(e, Err(KvError::StorageFull(_))), "{e:?}");
        assert_eq!(kv.get(&n, "b", "k").unwrap().unwrap(), "old");
        assert_eq!(kv.buckets(&n)[0].bytes, 4);
        // A new bucket made by a failed write is not there either.
        assert!(
            kv.set(&n, "nb", "k", Bytes::from("big"), None)
                .await
                .is_err()
        );
        assert!(!kv.bucket_exists(&n, "nb"));
        // Deletes still go through.
        assert!(kv.delete(&n, "b", "k", None).await.unwrap());

        // Many concurrent writers, batched together with failing ones:
        // afterwards memory holds exactly what the backend stored, and
        // every write that was acknowledged is there.
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let (kv, n) = (kv.clone(), n.clone());
                tokio::spawn(async move {
                    let key = format!("k{}", i % 7);
                    let r = match i % 5 {
                        0 => {
                            kv.set(&n, "c", &key, Bytes::from(format!("big{i}")), None)
                                .await
                        }
                        1 => kv.delete(&n, "c", &key, None).await.map(|_| ()),
                        2 => kv.increment(&n, "c", "n", 1, None).await.map(|_| ()),
                        _ => {
                            kv.set(&n, "c", &key, Bytes::from(format!("v{i}")), None)
                                .await
                        }
                    };
                    (i, r.is_ok())
                })
            })
            .collect();
        let mut incremented = 0;
        for t in tasks {
            let (i, ok) = t.await.unwrap();
            if i % 5 == 0 {
                assert!(!ok, "a write that could not be stored was acknowledged");
            }
            if i % 5 == 2 && ok {
                incremented += 1;
            }
        }
        let want = stored(&be.0.lock().unwrap());
        let mut have = BTreeMap::new();
        for k in kv.list(&n, "c", "", None, 1000).unwrap().keys {
            have.insert(
                ("c".to_string(), k.clone()),
                kv.get(&n, "c", &k).unwrap().unwrap().to_vec(),
            );
        }
        let want: BTreeMap<_, _> = want.into_iter().filter(|((b, _), _)| b == "c").collect();
        assert_eq!(have, want);
        // No increment was lost or counted twice.
        assert_eq!(
            kv.get(&n, "c", "n").unwrap().map(|v| v.to_vec()),
            Some(incremented.to_string().into_bytes()).filter(|_| incremented > 0)
        );
        let bytes: u64 = have
            .iter()
            .map(|((_, k), v)| (k.len() + v.len()) as u64)
            .sum();
        assert_eq!(
            kv.buckets(&n).iter().find(|b| b.name == "c").unwrap().bytes,
            bytes
        );
    }

    #[tokio::test]
    async fn limits_are_checked() {
        let kv = Kv::open(Arc::new(Recorded::default())).unwrap();
        let n = ns();
        let big = Bytes::from(vec![0u8; wisp_core::kv::MAX_VALUE_BYTES + 1]);
        assert!(matches!(
            kv.set(&n, "b", "k", big, None).await,
            Err(KvError::Invalid(_))
        ));
        assert!(matches!(
            kv.set(&n, "Bad Name", "k", Bytes::new(), None).await,
            Err(KvError::Invalid(_))
        ));
        assert!(!kv.bucket_exists(&n, "b"));
    }
}
