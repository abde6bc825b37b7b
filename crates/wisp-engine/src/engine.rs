//! The engine: function table, dispatch, deploy, and queries.

use crate::admission::{Capacity, NodeLimits};
use crate::events::{Events, QueueSettings};
use crate::metrics::{FunctionMetrics, Metrics};
use crate::recorder::{Recorder, RecorderHandle, RetentionSettings};
use crate::runner::Runner;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use wisp_core::time::now_ms;
use wisp_core::{
    ActivationId, ActivationStore, ArtifactStore, Digest, EventStore, FunctionName, FunctionRecord,
    FunctionSpec, Namespace, Outcome, Registry, SpecError, StoreError, TenantStore, TopicName,
    TriggerName,
};
use wisp_exec_wasm::{DeployError, ResponseBody, WasmEngine};

/// A response from a function, with the `x-wisp-activation-id` header set
/// and its [`ActivationId`] as an extension.
pub type InvokeResponse = http::Response<ResponseBody>;

#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How long an invocation over the concurrency limit waits for a slot
    /// before it is refused with 429.
    pub queue_wait: Duration,
    /// A function unused this long is dropped from memory (scale to zero);
    /// its next invocation is a cold start.
    pub idle_evict: Duration,
    pub retention: RetentionSettings,
    pub queue: QueueSettings,
    pub process: wisp_exec_process::ProcessConfig,
    /// The node's capacity and the defaults of namespaces.
    pub limits: NodeLimits,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            queue_wait: Duration::from_millis(100),
            idle_evict: Duration::from_secs(600),
            retention: RetentionSettings::default(),
            queue: QueueSettings::default(),
            process: wisp_exec_process::ProcessConfig {
                code_root: std::env::temp_dir().join("wisp-code"),
                work_root: std::env::temp_dir().join("wisp-work"),
                init_timeout: Duration::from_secs(10),
                max_log_bytes: 64 * 1024,
                sandbox: false,
                hide: Vec::new(),
                prestart: 0,
                demote_after: Duration::MAX,
            },
            limits: NodeLimits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("function {name:?} not found in namespace {namespace:?} (wisp ls lists functions)")]
    FunctionNotFound {
        namespace: Namespace,
        name: FunctionName,
    },
    #[error(
        "function {name:?} is at its concurrency limit of {limit}; retry after {retry_after_s} s or raise --concurrency"
    )]
    Throttled {
        name: FunctionName,
        limit: u32,
        retry_after_s: u64,
    },
    #[error(
        "namespace {namespace:?} runs its maximum of {limit} instances at once; retry after {retry_after_s} s, or ask the node's admin to raise it (wisp ns set {namespace} --max-instances N)"
    )]
    NamespaceThrottled {
        namespace: Namespace,
        limit: u32,
        retry_after_s: u64,
    },
    #[error("the node is out of capacity: {reason}; retry after {retry_after_s} s")]
    NodeBusy { reason: String, retry_after_s: u64 },
    #[error("{0}")]
    OverLimit(String),
    #[error("invalid function settings: {0}")]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Process(#[from] wisp_exec_process::ProcessError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kv(#[from] wisp_core::kv::KvError),
    #[error(
        "bucket {0:?} does not exist in this namespace (create it first, e.g. `aws s3 mb s3://{0}`)"
    )]
    NoSuchBucket(String),
    #[error(
        "topic {topic:?} not found in namespace {namespace:?} (create it with `wisp topic create {topic}` or subscribe a function with `wisp trigger add topic`)"
    )]
    TopicNotFound {
        namespace: Namespace,
        topic: TopicName,
    },
    #[error(
        "topic {topic:?} still has subscribers ({triggers}): remove them first with `wisp trigger rm`"
    )]
    TopicInUse { topic: TopicName, triggers: String },
    #[error(
        "trigger {name:?} not found in namespace {namespace:?} (wisp triggers ls lists triggers)"
    )]
    TriggerNotFound {
        namespace: Namespace,
        name: TriggerName,
    },
    #[error("trigger {0:?} already exists: remove it first with `wisp trigger rm {0}`")]
    TriggerExists(TriggerName),
    #[error(transparent)]
    Cron(#[from] wisp_triggers::CronError),
    #[error(transparent)]
    Event(#[from] wisp_core::EventError),
    #[error("no event or delivery {0:?} found (it may have finished and aged out of retention)")]
    EventNotFound(String),
    #[error(
        "the event queue is full ({0}); retry later, or raise `wisp serve --queue-max-events/--queue-max-bytes`"
    )]
    QueueFull(String),
    #[error("the event queue could not store the event: {0}")]
    Queue(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub(crate) struct Entry {
    pub(crate) record: FunctionRecord,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) prepared: RwLock<Option<Runner>>,
    pub(crate) load_lock: tokio::sync::Mutex<()>,
    pub(crate) last_used_ms: AtomicI64,
    pub(crate) running: AtomicUsize,
    pub(crate) metrics: Arc<FunctionMetrics>,
    /// Values of the function's secrets as last loaded: masked in its logs.
    pub(crate) secret_values: RwLock<Arc<[String]>>,
}

/// How a run ended, for callers that wait on it (queue workers).
#[derive(Debug, Clone)]
pub(crate) struct RunSummary {
    pub outcome: Outcome,
    pub status: u16,
    pub error: Option<String>,
    /// The run's logs, when the caller asked to keep them.
    pub logs: Option<String>,
}

/// A synchronous invocation whose response was read whole
/// ([`Answer::Collect`](crate::Answer::Collect)).
#[derive(Debug, Clone)]
pub struct Collected {
    pub activation_id: ActivationId,
    pub outcome: Outcome,
    pub status: u16,
    pub error: Option<String>,
    /// What the function printed (secrets masked).
    pub logs: String,
    pub body: Vec<u8>,
    pub version: u32,
}

impl Entry {
    /// Its loaded code, when it is loaded.
    pub(crate) fn loaded(&self) -> Option<Runner> {
        self.prepared
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub(crate) type Key = (Namespace, FunctionName);

pub(crate) struct Inner {
    pub(crate) settings: EngineSettings,
    pub(crate) wasm: WasmEngine,
    pub(crate) registry: Arc<dyn Registry>,
    pub(crate) artifacts: Arc<dyn ArtifactStore>,
    pub(crate) activations: Arc<dyn ActivationStore>,
    pub(crate) secrets: Arc<dyn TenantStore>,
    pub(crate) kv: wisp_kv::Kv,
    pub(crate) objects: Arc<wisp_objects::ObjectStore>,
    pub(crate) process: wisp_exec_process::ProcessRuntime,
    pub(crate) functions: RwLock<HashMap<Key, Arc<Entry>>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) recorder: Recorder,
    pub(crate) recorder_handle: std::sync::Mutex<Option<RecorderHandle>>,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) idle: Notify,
    pub(crate) events: Events,
    pub(crate) capacity: Capacity,
}

impl Inner {
    pub(crate) fn tenants(&self) -> &Arc<dyn TenantStore> {
        &self.secrets
    }
}

/// The node's engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

/// Returns free heap pages to the OS (glibc keeps them otherwise). At
/// most once per `TRIM_EVERY_MS`: a trim walks every arena under its lock,
/// and allocations on the request path would wait for it.
fn release_free_memory() {
    static LAST_TRIM_MS: AtomicI64 = AtomicI64::new(0);
    const TRIM_EVERY_MS: i64 = 2_000;
    let now = now_ms();
    let last = LAST_TRIM_MS.load(Ordering::Relaxed);
    if now - last < TRIM_EVERY_MS
        || LAST_TRIM_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))
}

/// Where the engine keeps what it keeps.
pub struct Stores {
    pub registry: Arc<dyn Registry>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub activations: Arc<dyn ActivationStore>,
    pub events: Arc<dyn EventStore>,
    /// Namespaces, tokens, keys and secrets.
    pub tenants: Arc<dyn TenantStore>,
    /// The key-value store functions and the API use.
    pub kv: wisp_kv::Kv,
    /// The object store behind the S3 API.
    pub objects: Arc<wisp_objects::ObjectStore>,
}

impl Engine {
    /// Starts the engine: loads the function table (functions stay cold
    /// until first used), and starts the recorder and the evictor.
    pub async fn start(
        wasm: WasmEngine,
        stores: Stores,
        settings: EngineSettings,
    ) -> Result<Self, EngineError> {
        let Stores {
            registry,
            artifacts,
            activations,
            events: event_store,
            tenants: secrets,
            kv,
            objects,
        } = stores;
        wasm.attach_kv(kv.clone());
        let kv_listener = kv.clone();
        let events = Events::new(event_store, settings.queue.clone())
            .map_err(|e| EngineError::Internal(format!("starting the queue writer: {e}")))?;
        let metrics = Arc::new(Metrics::default());
        let (recorder, handle) = Recorder::start(
            activations.clone(),
            settings.retention.clone(),
            metrics.clone(),
        )
        .map_err(|e| EngineError::Internal(format!("starting the activation recorder: {e}")))?;
        let reg = registry.clone();
        let records = blocking(move || reg.list_functions(None)).await??;
        let process = wisp_exec_process::ProcessRuntime::new(settings.process.clone());
        let store = secrets.clone();
        let set_limits = blocking(move || store.namespace_limits()).await??;
        let capacity = Capacity::new(settings.limits.clone(), set_limits);
        let engine = Self {
            inner: Arc::new(Inner {
                settings,
                wasm,
                registry,
                artifacts,
                activations,
                secrets,
                kv,
                objects,
                process,
                functions: RwLock::new(HashMap::new()),
                metrics,
                recorder,
                recorder_handle: std::sync::Mutex::new(Some(handle)),
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
                events,
                capacity,
            }),
        };
        for r in records {
            engine.insert_entry(r, None);
        }
        engine.start_events().await?;
        // Key changes reach kv triggers: their events are stored with the
        // change in kv.db, then queued.
        kv_listener.set_hook(Arc::new(crate::kv_events::KvHook(Arc::downgrade(
            &engine.inner,
        ))));
        let weak = Arc::downgrade(&engine.inner);
        let idle = engine.inner.settings.idle_evict;
        tokio::spawn(async move {
            let period = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else { break };
                Engine { inner }.evict_idle();
            }
        });
        Ok(engine)
    }

    fn insert_entry(&self, record: FunctionRecord, prepared: Option<Runner>) {
        let key = (record.namespace.clone(), record.name.clone());
        let metrics = self
            .inner
            .metrics
            .for_function(record.namespace.as_str(), record.name.as_str());
        let entry = Arc::new(Entry {
            slots: Arc::new(Semaphore::new(record.spec.concurrency as usize)),
            prepared: RwLock::new(prepared),
            load_lock: tokio::sync::Mutex::new(()),
            last_used_ms: AtomicI64::new(now_ms()),
            running: AtomicUsize::new(0),
            metrics,
            secret_values: RwLock::new(Arc::from(Vec::new())),
            record,
        });
        self.inner
            .functions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, entry);
    }

    /// Evicts the idle instance (of namespace `ns`, when given) that has
    /// been idle longest, across the node's functions; false when none is
    /// idle.
    pub(crate) fn evict_least_recently_used(&self, ns: Option<&Namespace>) -> bool {
        let table = self
            .inner
            .functions
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let oldest = table
            .values()
            .filter(|e| ns.is_none_or(|n| *n == e.record.namespace))
            .filter_map(|e| {
                let r = e.loaded()?;
                Some((r.oldest_idle()?, r))
            })
            .min_by_key(|(since, _)| *since);
        drop(table);
        oldest.is_some_and(|(_, r)| r.evict_oldest_idle())
    }

    pub(crate) fn entry(
        &self,
        ns: &Namespace,
        name: &FunctionName,
    ) -> Result<Arc<Entry>, EngineError> {
        let table = self
            .inner
            .functions
            .read()
            .unwrap_or_else(|p| p.into_inner());
        table
            .get(&(ns.clone(), name.clone()))
            .cloned()
            .ok_or_else(|| EngineError::FunctionNotFound {
                namespace: ns.clone(),
                name: name.clone(),
            })
    }

    /// Drops functions unused for longer than the idle period from memory.
    fn evict_idle(&self) {
        let cutoff = now_ms() - self.inner.settings.idle_evict.as_millis() as i64;
        let mut evicted = Vec::new();
        {
            let table = self
                .inner
                .functions
                .read()
                .unwrap_or_else(|p| p.into_inner());
            for entry in table.values() {
                if entry.last_used_ms.load(Ordering::Relaxed) < cutoff
                    && entry.running.load(Ordering::Relaxed) == 0
                {
                    let mut p = entry.prepared.write().unwrap_or_else(|p| p.into_inner());
                    if let Some(p) = p.take() {
                        tracing::debug!(function = %entry.record.name, "evicted idle function");
                        evicted.push(p);
                    }
                }
            }
        }
        if !evicted.is_empty() {
            // Hand the freed memory back to the OS: a node that scaled its
            // functions to zero should not keep their memory resident.
            tokio::task::spawn_blocking(move || {
                drop(evicted);
                release_free_memory();
            });
        }
    }

    /// The engine's collector for the node's metrics registry: every
    /// function's series, the node's capacity, the durable queue, process
    /// pools.
    pub fn collector(&self) -> impl wisp_core::metrics::Collector {
        let engine = self.clone();
        wisp_core::metrics::FnCollector(
            "engine",
            move |e: &mut wisp_core::metrics::DescriptorEncoder| engine.encode_metrics(e),
        )
    }

    fn encode_metrics(&self, e: &mut wisp_core::metrics::DescriptorEncoder) -> std::fmt::Result {
        let (deployed, loaded, processes) = {
            let table = self
                .inner
                .functions
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let loaded = table
                .values()
                .filter(|e| e.prepared.read().map(|p| p.is_some()).unwrap_or(false))
                .count();
            let processes: Vec<(String, String, i64)> = table
                .values()
                .filter_map(|e| {
                    let p = e.prepared.read().unwrap_or_else(|p| p.into_inner());
                    match p.as_ref() {
                        Some(Runner::Process(pool)) => Some((
                            e.record.namespace.to_string(),
                            e.record.name.to_string(),
                            pool.processes() as i64,
                        )),
                        _ => None,
                    }
                })
                .collect();
            (table.len(), loaded, processes)
        };
        self.inner.metrics.encode(e, deployed, loaded)?;
        self.encode_capacity(e)?;
        let (depth, c) = self.queue_metrics();
        crate::metrics::encode_queue(e, depth, c, &self.events().writer.dropped)?;
        wisp_core::metrics::gauge(
            e,
            "wisp_function_processes",
            "Processes running for a process function (busy or warm).",
            processes.iter().map(|(ns, f, n)| {
                (
                    vec![("namespace", ns.as_str()), ("function", f.as_str())],
                    *n,
                )
            }),
        )
    }

    /// Stores an artifact (content-addressed, idempotent).
    pub async fn put_artifact(&self, bytes: Bytes) -> Result<(Digest, bool), EngineError> {
        let artifacts = self.inner.artifacts.clone();
        Ok(blocking(move || artifacts.put_artifact(&bytes)).await??)
    }

    /// Creates a function or deploys a new version of it: validates the
    /// settings and the component, compiles it (cached on disk), stores the
    /// version and keeps it warm.
    pub async fn deploy(
        &self,
        ns: &Namespace,
        name: &FunctionName,
        artifact: Digest,
        spec: FunctionSpec,
    ) -> Result<FunctionRecord, EngineError> {
        spec.validate()?;
        self.check_limits(ns, &spec)?;
        for b in &spec.kv {
            self.inner.kv.create_bucket(ns, b).await?;
        }
        let (prepared, values) = self.load(ns, (name, 0), &artifact, &spec).await?;
        // A process pool is made again on first use, knowing its version.
        let prepared = (!prepared.is_process()).then_some(prepared);
        let registry = self.inner.registry.clone();
        let (n2, nm2) = (ns.clone(), name.clone());
        let record = blocking(move || registry.put_function(&n2, &nm2, &artifact, &spec)).await??;
        self.insert_entry(record.clone(), prepared);
        if let Ok(e) = self.entry(ns, name) {
            *e.secret_values.write().unwrap_or_else(|p| p.into_inner()) = values.into();
        }
        Ok(record)
    }

    /// The node's key-value store.
    pub fn kv(&self) -> &wisp_kv::Kv {
        &self.inner.kv
    }

    /// Lets Wasm functions reach the object store through outbound HTTP to
    /// `url` (the S3 listener) or `http://s3.wisp.internal`.
    pub fn attach_objects(&self, hook: Arc<dyn wisp_exec_wasm::ObjectsHook>, url: Option<String>) {
        self.inner.wasm.attach_objects(hook, url);
    }

    /// The node's object store.
    pub fn objects(&self) -> &Arc<wisp_objects::ObjectStore> {
        &self.inner.objects
    }

    /// Whether the function answers at its direct URL (`/fn/…`).
    pub fn direct_url(&self, ns: &Namespace, name: &FunctionName) -> Result<bool, EngineError> {
        Ok(self.entry(ns, name)?.record.spec.direct_url)
    }

    pub async fn get_function(
        &self,
        ns: &Namespace,
        name: &FunctionName,
    ) -> Result<FunctionRecord, EngineError> {
        Ok(self.entry(ns, name)?.record.clone())
    }

    pub async fn list_functions(&self, ns: Option<&Namespace>) -> Vec<FunctionRecord> {
        let table = self
            .inner
            .functions
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = table
            .values()
            .filter(|e| ns.is_none_or(|n| *n == e.record.namespace))
            .map(|e| e.record.clone())
            .collect();
        v.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        v
    }

    pub async fn delete_function(
        &self,
        ns: &Namespace,
        name: &FunctionName,
    ) -> Result<(), EngineError> {
        let registry = self.inner.registry.clone();
        let (n2, nm2) = (ns.clone(), name.clone());
        blocking(move || registry.delete_function(&n2, &nm2))
            .await?
            .map_err(|e| match e {
                StoreError::FunctionNotFound { namespace, name } => {
                    EngineError::FunctionNotFound { namespace, name }
                }
                e => e.into(),
            })?;
        self.inner
            .functions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(ns.clone(), name.clone()));
        Ok(())
    }

    /// Waits for running invocations to finish (each is bounded by its own
    /// deadline, and this by `grace`), then writes every pending record.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop_events();
        let wait = async {
            loop {
                let notified = self.inner.idle.notified();
                if self.inner.in_flight.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!(
                "shutdown: invocations still running after {grace:?}; recording what finished"
            );
        }
        let handle = self
            .inner
            .recorder_handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            h.flush_and_stop().await;
        }
        self.inner.events.writer.flush_and_stop().await;
    }
}
