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
//!
//! A change that triggers events (kv triggers) stores them with it, in the
//! same transaction, and hands them on afterwards (see [`ChangeHook`]).

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use wisp_core::Namespace;
use wisp_core::kv::{KvError, KvOp, KvStore, check_bucket, check_key, check_value};

mod outbox;
mod writer;

pub use outbox::{ChangeHook, KvChange};
use writer::{Undo, Write, lock_write, put, undo_write, write_loop};

pub(crate) type Key = (Namespace, String);

/// How long a writer waits on the CPU for its commit, and the writer
/// thread for the next write, before sleeping: about ten commits.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

#[derive(Default)]
pub(crate) struct Bucket {
    entries: BTreeMap<String, Entry>,
    bytes: u64,
}

#[derive(Clone)]
pub(crate) struct Entry {
    value: Bytes,
    /// Changes with every write of the key: what compare-and-swap checks.
    version: u64,
}

pub(crate) type Map = Arc<RwLock<HashMap<Key, Bucket>>>;

struct Inner {
    buckets: Map,
    writer: std::sync::mpsc::Sender<Write>,
    version: AtomicU64,
    hook: std::sync::OnceLock<Arc<dyn ChangeHook>>,
    /// Events stored with their changes and not handed on yet.
    outbox: std::sync::Mutex<Vec<outbox::Pending>>,
}

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
                hook: std::sync::OnceLock::new(),
                outbox: std::sync::Mutex::new(
                    snap.events
                        .into_iter()
                        .map(|(id, r)| (id, Some(r)))
                        .collect(),
                ),
            }),
        })
    }

    /// The change as the hook sees it.
    fn change(
        (ns, bucket, key): (&Namespace, &str, &str),
        size: Option<u64>,
        by: Option<&str>,
    ) -> KvChange {
        KvChange {
            namespace: ns.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            size,
            by: by.map(str::to_string),
        }
    }

    /// Adds a change's events record (if any) to its ops.
    fn with_events(events: &Option<(String, Vec<u8>)>, ops: &mut Vec<KvOp>, undo: &mut Vec<Undo>) {
        if let Some((id, record)) = events {
            ops.push(KvOp::PutEvents {
                id: id.clone(),
                record: record.clone(),
            });
            undo.push(Undo::Nothing);
        }
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

    /// The store's metrics: keys and bytes per namespace, events waiting
    /// in the outbox.
    pub fn encode_metrics(
        &self,
        e: &mut wisp_core::metrics::DescriptorEncoder,
    ) -> std::fmt::Result {
        use wisp_core::metrics::gauge;
        let totals: Vec<(String, u64, u64)> = self
            .totals()
            .into_iter()
            .map(|(ns, k, b)| (ns.to_string(), k, b))
            .collect();
        gauge(
            e,
            "wisp_kv_keys",
            "Keys in the key-value store, by namespace.",
            totals
                .iter()
                .map(|(ns, k, _)| (vec![("namespace", ns.as_str())], *k as i64)),
        )?;
        gauge(
            e,
            "wisp_kv_bytes",
            "Bytes of keys and values in the key-value store, by namespace.",
            totals
                .iter()
                .map(|(ns, _, b)| (vec![("namespace", ns.as_str())], *b as i64)),
        )?;
        gauge(
            e,
            "wisp_kv_events_pending",
            "Events of key changes stored with their change in kv.db and not yet in the event queue (it had no room).",
            [(Vec::new(), self.pending_events() as i64)],
        )
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
        let (events, rx) = {
            let mut map = self.write();
            let events = self.prepare(Self::change((ns, bucket, key), Some(size), by))?;
            let mut ops = Vec::with_capacity(3);
            let mut undo = Vec::with_capacity(3);
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
            Self::with_events(&events, &mut ops, &mut undo);
            (events, self.persist(&mut map, ops, undo, false))
        };
        Self::committed(rx).await?;
        self.hand_on(events).await;
        Ok(())
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
        let (events, rx) = {
            let mut map = self.write();
            let b = map
                .get(&(ns.clone(), bucket.to_string()))
                .ok_or_else(|| Self::no_bucket(ns, bucket))?;
            if !b.entries.contains_key(key) {
                return Ok(false);
            }
            let events = self.prepare(Self::change((ns, bucket, key), None, by))?;
            let Some(b) = map.get_mut(&(ns.clone(), bucket.to_string())) else {
                return Ok(false); // unreachable: looked up above, under the same lock
            };
            let Some(old) = b.entries.remove(key) else {
                return Ok(false);
            };
            b.bytes -= (key.len() + old.value.len()) as u64;
            let mut ops = vec![KvOp::Delete {
                namespace: ns.clone(),
                bucket: bucket.to_string(),
                key: key.to_string(),
            }];
            let mut undo = vec![Undo::Removed { prior: old }];
            Self::with_events(&events, &mut ops, &mut undo);
            (events, self.persist(&mut map, ops, undo, false))
        };
        Self::committed(rx).await?;
        self.hand_on(events).await;
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
        let (n, events, rx) = {
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
            let value = n.to_string().into_bytes();
            let size = Some(value.len() as u64);
            let events = self.prepare(Self::change((ns, bucket, key), size, by))?;
            let mut ops = Vec::with_capacity(3);
            let mut undo = Vec::with_capacity(3);
            let version = self.next_version();
            let b = self.bucket_mut(&mut map, ns, bucket, &mut ops, &mut undo);
            let prior = put(b, key, Bytes::from(value.clone()), version);
            ops.push(KvOp::Set {
                namespace: ns.clone(),
                bucket: bucket.to_string(),
                key: key.to_string(),
                value,
            });
            undo.push(Undo::Put { prior, version });
            Self::with_events(&events, &mut ops, &mut undo);
            (n, events, self.persist(&mut map, ops, undo, true))
        };
        Self::committed(rx).await?;
        self.hand_on(events).await;
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
        let (events, rx) = {
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
            let events = self
                .prepare(Self::change((&ns, &bucket, &key), Some(size), by))
                .map_err(SwapError::Store)?;
            let version = self.next_version();
            let value_vec = value.to_vec();
            let prior = put(b, &cas.key, value, version);
            let mut ops = vec![KvOp::Set {
                namespace: cas.namespace,
                bucket: cas.bucket,
                key: cas.key,
                value: value_vec,
            }];
            let mut undo = vec![Undo::Put { prior, version }];
            Self::with_events(&events, &mut ops, &mut undo);
            (events, self.persist(&mut map, ops, undo, true))
        };
        Self::committed(rx).await.map_err(SwapError::Store)?;
        self.hand_on(events).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
