//! Admission: what an invocation must hold before it runs, and what it gets
//! when it cannot. In order: a slot under its function's `--concurrency`,
//! then an instance to run in. That is a warm instance of the function
//! when one is idle (it holds its share of the node already), else a
//! [`Lease`] for a new one: one of its namespace's instances
//! (`max_instances`), one of the node's instances (`wisp serve
//! --max-instances`) and its memory limit out of the node's memory budget
//! (`wisp serve --max-memory`). The function's slot is released when the
//! run ends; the lease stays with the instance for as long as it lives —
//! running, or idle and kept warm (Wasm instance reuse, a process
//! function's warm processes) — so the node's limits count what is really
//! held. When a lease cannot be had because idle instances hold the room,
//! the least recently used idle instance (of the namespace, when the
//! namespace is short) is evicted to make it, instead of refusing.
//!
//! A slot that cannot be had within `--queue-wait` makes the invocation
//! `throttled`: 429 when its function or namespace is over its own limit,
//! 503 with `Retry-After` when the node is out of capacity. Queued events
//! wait for their slots instead (they stay in the queue).

use crate::engine::{Engine, EngineError, Entry, blocking};
use crate::runner::WarmRun;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use wisp_core::capacity::Lease;
use wisp_core::{Namespace, NamespaceLimits, Source};

/// The node's capacity and the defaults of namespaces.
#[derive(Debug, Clone)]
pub struct NodeLimits {
    /// Instances alive at once across the node, running or idle and warm
    /// (Wasm or process).
    pub max_instances: u32,
    /// The sum of the memory limits (`--memory`) of live instances,
    /// running or idle and warm, may not pass this, in MiB.
    pub max_memory_mb: u64,
    /// `max_concurrency` of a namespace that has none set.
    pub ns_max_concurrency: u32,
    /// `max_instances` of a namespace that has none set.
    pub ns_max_instances: u32,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            max_instances: 1000,
            max_memory_mb: 8 * 1024,
            ns_max_concurrency: 1000,
            ns_max_instances: 250,
        }
    }
}

/// A namespace's limits as they apply (defaults filled in), with the
/// semaphore of its instances.
pub(crate) struct NsSlots {
    /// What the admin set (`None`: the node's default).
    set: NamespaceLimits,
    pub(crate) max_concurrency: u32,
    pub(crate) max_instances: u32,
    instances: Arc<Semaphore>,
}

/// The namespace limits of one namespace, as `GET /v1/namespaces` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EffectiveLimits {
    pub max_concurrency: u32,
    pub max_instances: u32,
    /// Whether each value is the node's default (nothing set on the namespace).
    pub max_concurrency_default: bool,
    pub max_instances_default: bool,
}

/// The node-wide side of admission.
pub(crate) struct Capacity {
    pub(crate) node: NodeLimits,
    instances: Arc<Semaphore>,
    memory: Arc<Semaphore>,
    namespaces: RwLock<HashMap<Namespace, Arc<NsSlots>>>,
    /// Told when a run ends (its instance may now be idle, so evictable).
    room: Notify,
    running: Arc<Running>,
    /// Idle instances evicted to make room for another run.
    evictions: AtomicU64,
}

/// What running invocations hold (the rest of what is held is idle).
#[derive(Default)]
struct Running {
    instances: AtomicU64,
    memory_mb: AtomicU64,
}

/// Counts one run as running until dropped.
struct RunningGuard {
    running: Arc<Running>,
    memory_mb: u64,
}

impl RunningGuard {
    fn new(running: &Arc<Running>, memory_mb: u64) -> Self {
        running.instances.fetch_add(1, Ordering::Relaxed);
        running.memory_mb.fetch_add(memory_mb, Ordering::Relaxed);
        Self {
            running: running.clone(),
            memory_mb,
        }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.running.instances.fetch_sub(1, Ordering::Relaxed);
        self.running
            .memory_mb
            .fetch_sub(self.memory_mb, Ordering::Relaxed);
    }
}

/// The permits of a lease: a live instance's share of the node.
struct Held {
    _namespace: OwnedSemaphorePermit,
    _node: OwnedSemaphorePermit,
    _memory: OwnedSemaphorePermit,
}

impl Capacity {
    pub(crate) fn new(node: NodeLimits, set: Vec<(Namespace, NamespaceLimits)>) -> Self {
        let c = Self {
            instances: Arc::new(Semaphore::new(node.max_instances as usize)),
            memory: Arc::new(Semaphore::new(
                (node.max_memory_mb as usize).min(Semaphore::MAX_PERMITS),
            )),
            namespaces: RwLock::new(HashMap::new()),
            room: Notify::new(),
            running: Arc::default(),
            evictions: AtomicU64::new(0),
            node,
        };
        for (ns, limits) in set {
            c.replace(&ns, limits);
        }
        c
    }

    fn slots_for(&self, set: NamespaceLimits) -> NsSlots {
        let max_instances = set.max_instances.unwrap_or(self.node.ns_max_instances);
        NsSlots {
            set,
            max_concurrency: set.max_concurrency.unwrap_or(self.node.ns_max_concurrency),
            max_instances,
            instances: Arc::new(Semaphore::new(max_instances as usize)),
        }
    }

    /// Installs new limits. Runs admitted under the old ones finish under
    /// them; new runs count against the new limit.
    fn replace(&self, ns: &Namespace, set: NamespaceLimits) {
        let slots = Arc::new(self.slots_for(set));
        self.namespaces
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns.clone(), slots);
    }

    pub(crate) fn namespace(&self, ns: &Namespace) -> Arc<NsSlots> {
        if let Some(s) = self
            .namespaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(ns)
        {
            return s.clone();
        }
        let mut map = self.namespaces.write().unwrap_or_else(|p| p.into_inner());
        map.entry(ns.clone())
            .or_insert_with(|| Arc::new(self.slots_for(NamespaceLimits::default())))
            .clone()
    }
}

/// Where an admitted run takes place.
pub(crate) enum Claim {
    /// A new instance, made under this lease.
    Fresh(Lease),
    /// A warm instance of the function (it holds its own lease).
    Warm(WarmRun),
}

/// What an admitted invocation holds while it runs. Its claim is taken by
/// the run; dropping the rest frees the function's slot.
pub(crate) struct Admission {
    _function: OwnedSemaphorePermit,
    pub(crate) claim: Option<Claim>,
    _running: RunningGuard,
}

/// Why a slot could not be had.
enum Refusal {
    Function,
    Namespace { limit: u32 },
    NodeInstances { limit: u32 },
    NodeMemory { budget_mb: u64, need_mb: u32 },
}

/// Takes a permit at once, or waits for it until `deadline` (for ever
/// without one); `None` when none came in time.
async fn take(
    sem: &Arc<Semaphore>,
    n: u32,
    deadline: Option<Instant>,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(p) = sem.clone().try_acquire_many_owned(n) {
        return Some(p);
    }
    let wait = sem.clone().acquire_many_owned(n);
    match deadline {
        Some(d) => tokio::time::timeout_at(d, wait).await.ok()?.ok(),
        None => wait.await.ok(),
    }
}

impl Engine {
    /// Every slot a run of `entry` needs: at once, or after waiting up to
    /// `queue_wait`; else the invocation is recorded as throttled.
    pub(crate) async fn admit_bounded(
        &self,
        entry: &Arc<Entry>,
        source: &Source,
        start_ms: i64,
    ) -> Result<Admission, EngineError> {
        let deadline = Instant::now() + self.inner.settings.queue_wait;
        let result = match take(&entry.slots, 1, Some(deadline)).await {
            Some(f) => self.admit_rest(entry, f, Some(deadline)).await,
            None => Err(Refusal::Function),
        };
        result.map_err(|why| self.refuse(entry, why, source, start_ms))
    }

    /// Every slot a run of `entry` needs, waiting for them as long as it
    /// takes (a queued delivery); none once the function's slots are
    /// closed.
    pub(crate) async fn admit_unbounded(&self, entry: &Arc<Entry>) -> Option<Admission> {
        let function = entry.slots.clone().acquire_owned().await.ok()?;
        self.admit_rest(entry, function, None).await.ok()
    }

    async fn admit_rest(
        &self,
        entry: &Arc<Entry>,
        function: OwnedSemaphorePermit,
        deadline: Option<Instant>,
    ) -> Result<Admission, Refusal> {
        let cap = &self.inner.capacity;
        let ns = &entry.record.namespace;
        let slots = cap.namespace(ns);
        let need_mb = entry.record.spec.memory_mb;
        let admitted = |claim| Admission {
            _function: function,
            claim: Some(claim),
            _running: RunningGuard::new(&cap.running, u64::from(need_mb)),
        };
        let (mut namespace, mut node, mut memory) = (None, None, None);
        loop {
            let notified = cap.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(w) = entry.loaded().and_then(|r| r.take_warm()) {
                return Ok(admitted(Claim::Warm(w)));
            }
            if namespace.is_none() {
                namespace = slots.instances.clone().try_acquire_owned().ok();
            }
            if namespace.is_some() && node.is_none() {
                node = cap.instances.clone().try_acquire_owned().ok();
            }
            if node.is_some() && memory.is_none() {
                memory = cap.memory.clone().try_acquire_many_owned(need_mb).ok();
            }
            let (short, n, refusal, scope) = match (&namespace, &node, &memory) {
                (Some(_), Some(_), Some(_)) => break,
                (None, _, _) => (
                    &slots.instances,
                    1,
                    Refusal::Namespace {
                        limit: slots.max_instances,
                    },
                    Some(ns),
                ),
                (Some(_), None, _) => (
                    &cap.instances,
                    1,
                    Refusal::NodeInstances {
                        limit: cap.node.max_instances,
                    },
                    None,
                ),
                (Some(_), Some(_), None) => (
                    &cap.memory,
                    need_mb,
                    Refusal::NodeMemory {
                        budget_mb: cap.node.max_memory_mb,
                        need_mb,
                    },
                    None,
                ),
            };
            // Idle instances hold the room: the least recently used goes.
            if self.evict_for_room(scope) {
                continue;
            }
            let far = Instant::now() + std::time::Duration::from_secs(86_400);
            tokio::select! {
                p = short.clone().acquire_many_owned(n) => {
                    let Ok(p) = p else { return Err(refusal) };
                    match (&namespace, &node) {
                        (None, _) => namespace = Some(p),
                        (Some(_), None) => node = Some(p),
                        _ => memory = Some(p),
                    }
                }
                // A run ended: its instance may be idle now.
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                    return Err(refusal);
                }
            }
        }
        let (Some(namespace), Some(node), Some(memory)) = (namespace, node, memory) else {
            unreachable!("the loop ends only with all three permits")
        };
        Ok(admitted(Claim::Fresh(Lease::new(Held {
            _namespace: namespace,
            _node: node,
            _memory: memory,
        }))))
    }

    /// Evicts the least recently used idle instance on the node (of
    /// namespace `ns` when given); false when there is none.
    fn evict_for_room(&self, ns: Option<&Namespace>) -> bool {
        let evicted = self.evict_least_recently_used(ns);
        if evicted {
            self.inner
                .capacity
                .evictions
                .fetch_add(1, Ordering::Relaxed);
        }
        evicted
    }

    /// A run ended: admissions waiting for room look again (its instance
    /// may be idle, and evictable, now).
    pub(crate) fn run_ended(&self) {
        self.inner.capacity.room.notify_waiters();
    }

    /// The node's capacity gauges, for `/metrics`.
    pub(crate) fn encode_capacity(
        &self,
        e: &mut wisp_core::metrics::DescriptorEncoder,
    ) -> std::fmt::Result {
        use wisp_core::metrics::{counter, gauge};
        let cap = &self.inner.capacity;
        let budget = cap.node.max_memory_mb;
        let held_mb = budget.saturating_sub(cap.memory.available_permits() as u64);
        let running_mb = cap.running.memory_mb.load(Ordering::Relaxed).min(held_mb);
        let held = u64::from(cap.node.max_instances)
            .saturating_sub(cap.instances.available_permits() as u64);
        let running = cap.running.instances.load(Ordering::Relaxed).min(held);
        let states = |running: u64, idle: u64| {
            [
                (vec![("state", "running")], running as i64),
                (vec![("state", "idle")], idle as i64),
            ]
        };
        gauge(
            e,
            "wisp_node_memory_budget_mib",
            "The node's memory budget (wisp serve --max-memory).",
            [(Vec::new(), budget as i64)],
        )?;
        gauge(
            e,
            "wisp_node_memory_held_mib",
            "Memory limits of live instances, running or idle and kept warm.",
            states(running_mb, held_mb - running_mb),
        )?;
        gauge(
            e,
            "wisp_node_instances",
            "Live instances (Wasm instances and processes), running or idle and kept warm.",
            states(running, held - running),
        )?;
        counter(
            e,
            "wisp_node_idle_evictions",
            "Idle instances evicted to make room for another run.",
            [(Vec::new(), cap.evictions.load(Ordering::Relaxed))],
        )
    }

    fn refuse(&self, entry: &Entry, why: Refusal, source: &Source, start_ms: i64) -> EngineError {
        let r = &entry.record;
        let err = match why {
            Refusal::Function => EngineError::Throttled {
                name: r.name.clone(),
                limit: r.spec.concurrency,
                retry_after_s: 1,
            },
            Refusal::Namespace { limit } => EngineError::NamespaceThrottled {
                namespace: r.namespace.clone(),
                limit,
                retry_after_s: 1,
            },
            Refusal::NodeInstances { limit } => EngineError::NodeBusy {
                reason: format!(
                    "it runs its maximum of {limit} instances (wisp serve --max-instances)"
                ),
                retry_after_s: 1,
            },
            Refusal::NodeMemory { budget_mb, need_mb } => EngineError::NodeBusy {
                reason: format!(
                    "running instances hold its memory budget of {budget_mb} MiB and this one needs {need_mb} MiB (wisp serve --max-memory)"
                ),
                retry_after_s: 1,
            },
        };
        let status = match err {
            EngineError::NodeBusy { .. } => 503,
            _ => 429,
        };
        self.record_throttle(entry, source, start_ms, status, err.to_string());
        err
    }

    /// Checks a function's settings against its namespace's and the node's
    /// limits before it is deployed.
    pub(crate) fn check_limits(
        &self,
        ns: &Namespace,
        spec: &wisp_core::FunctionSpec,
    ) -> Result<(), EngineError> {
        let cap = &self.inner.capacity;
        let slots = cap.namespace(ns);
        if spec.concurrency > slots.max_concurrency {
            return Err(EngineError::OverLimit(format!(
                "concurrency {} is above the limit of namespace {ns:?} ({}): deploy with --concurrency {} or less, or ask the node's admin to raise it (wisp ns set {ns} --max-concurrency N)",
                spec.concurrency, slots.max_concurrency, slots.max_concurrency
            )));
        }
        if u64::from(spec.memory_mb) > cap.node.max_memory_mb {
            return Err(EngineError::OverLimit(format!(
                "memory {} MiB is above the node's memory budget of {} MiB, so no instance of it could ever run: deploy with --memory {} or less, or raise wisp serve --max-memory",
                spec.memory_mb, cap.node.max_memory_mb, cap.node.max_memory_mb
            )));
        }
        Ok(())
    }

    /// The limits that apply to a namespace.
    pub fn namespace_limits(&self, ns: &Namespace) -> EffectiveLimits {
        let s = self.inner.capacity.namespace(ns);
        EffectiveLimits {
            max_concurrency: s.max_concurrency,
            max_instances: s.max_instances,
            max_concurrency_default: s.set.max_concurrency.is_none(),
            max_instances_default: s.set.max_instances.is_none(),
        }
    }

    /// Sets a namespace's limits (fields left `None` keep their value).
    /// Refused
    /// when a deployed function's concurrency is above the new
    /// `max_concurrency`.
    pub async fn set_namespace_limits(
        &self,
        ns: &Namespace,
        change: NamespaceLimits,
    ) -> Result<EffectiveLimits, EngineError> {
        change
            .validate()
            .map_err(|e| EngineError::OverLimit(e.to_string()))?;
        let cap = &self.inner.capacity;
        let old = cap.namespace(ns).set;
        let set = NamespaceLimits {
            max_concurrency: change.max_concurrency.or(old.max_concurrency),
            max_instances: change.max_instances.or(old.max_instances),
        };
        let max_concurrency = set.max_concurrency.unwrap_or(cap.node.ns_max_concurrency);
        let above: Vec<String> = self
            .list_functions(Some(ns))
            .await
            .into_iter()
            .filter(|f| f.spec.concurrency > max_concurrency)
            .map(|f| format!("{} ({})", f.name, f.spec.concurrency))
            .collect();
        if !above.is_empty() {
            return Err(EngineError::OverLimit(format!(
                "functions of namespace {ns:?} have a concurrency above {max_concurrency}: {}; lower theirs first (wisp deploy --concurrency)",
                above.join(", ")
            )));
        }
        let store = self.inner.tenants().clone();
        let n = ns.clone();
        blocking(move || store.set_namespace_limits(&n, &set)).await??;
        cap.replace(ns, set);
        Ok(self.namespace_limits(ns))
    }

    /// Forgets a deleted namespace's limits (a namespace created again
    /// under the name starts from the node's defaults).
    pub fn forget_namespace_limits(&self, ns: &Namespace) {
        self.inner
            .capacity
            .namespaces
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ns);
    }
}
