//! The node-wide wasmtime engine, linker and compiled-code cache.

use crate::host::Host;
use crate::run::Prepared;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wisp_core::{Digest, FunctionName, FunctionSpec, Namespace};

/// Node-level settings of the executor.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where compiled components are cached (`<data-dir>/compiled`).
    pub cache_dir: PathBuf,
    /// How many instances may be alive at once across all functions.
    pub max_instances: u32,
    /// The largest memory limit a function may ask for, in MiB.
    pub max_memory_mb: u32,
    /// Bytes of stdout+stderr kept per invocation.
    pub log_capture_bytes: usize,
    /// Epoch tick: how often running guests are checked for their deadline.
    pub epoch_tick: Duration,
    /// Bytes of each freed instance's linear memory kept resident and
    /// reset in place for the next instance (trades memory for speed).
    pub keep_resident_bytes: usize,
    /// CPU time after which a running guest moves to the low-priority
    /// runtime, so that short requests keep the request threads.
    pub demote_after: Duration,
}

impl EngineConfig {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            max_instances: 1000,
            max_memory_mb: wisp_core::spec::MAX_MEMORY_MB,
            log_capture_bytes: 64 * 1024,
            epoch_tick: Duration::from_millis(5),
            keep_resident_bytes: 2 << 20,
            demote_after: Duration::from_millis(20),
        }
    }
}

/// Why an artifact cannot be deployed as a function.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    #[error("artifact {digest} is not WebAssembly (it does not start with the \\0asm magic bytes)")]
    NotWasm { digest: Digest },
    #[error(
        "artifact {digest} is a core WebAssembly module, not a component: build for the wasm32-wasip2 target (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule { digest: Digest },
    #[error("artifact {digest} is not a valid WebAssembly component: {reason}")]
    Invalid { digest: Digest, reason: String },
    #[error("component {digest} imports something Wisp does not provide: {reason}")]
    UnsupportedImport { digest: Digest, reason: String },
    #[error(
        "component {digest} does not export wasi:http/incoming-handler (it must target the wasi:http/proxy world, like a component for `wasmtime serve`): {reason}"
    )]
    MissingExport { digest: Digest, reason: String },
    #[error("could not write the compiled-code cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
}

struct Inner {
    engine: Engine,
    ticker: Arc<Ticker>,
    linker: Linker<Host>,
    config: EngineConfig,
    cache_dir: PathBuf,
    /// Components in memory, shared by every loaded function (and version)
    /// with the same artifact; gone when the last of them is evicted.
    live: Mutex<HashMap<Digest, Weak<Component>>>,
    /// The node's key-value store, for `wasi:keyvalue`.
    kv: std::sync::OnceLock<wisp_kv::Kv>,
    /// The node's object store, for outbound requests to its S3 endpoint.
    objects: std::sync::OnceLock<crate::host::ObjectsEndpoint>,
}

/// Advances the engine's epoch every tick while a guest runs (deadlines
/// and fair yielding need it) and sleeps while none does, so an idle node
/// does not wake up hundreds of times a second.
pub(crate) struct Ticker {
    /// Guests running now; shared with the ticking thread.
    running: Arc<AtomicUsize>,
    thread: std::thread::Thread,
}

impl Ticker {
    fn start(engine: &Engine, tick: Duration) -> anyhow::Result<Arc<Self>> {
        let weak = engine.weak();
        let running = Arc::new(AtomicUsize::new(0));
        let guests = running.clone();
        let handle = std::thread::Builder::new()
            .name("wisp-epoch".into())
            .spawn(move || {
                loop {
                    if guests.load(Ordering::Acquire) == 0 {
                        // Woken by `enter`; the timeout only notices a
                        // dropped engine.
                        std::thread::park_timeout(Duration::from_secs(1));
                        if weak.upgrade().is_none() {
                            return;
                        }
                        continue;
                    }
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                    std::thread::sleep(tick);
                }
            })?;
        Ok(Arc::new(Ticker {
            running,
            thread: handle.thread().clone(),
        }))
    }

    /// Marks a guest as running until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> TickerGuard {
        if self.running.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        TickerGuard(self.clone())
    }
}

pub(crate) struct TickerGuard(Arc<Ticker>);

impl Drop for TickerGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The node's WebAssembly engine. Cheap to clone.
#[derive(Clone)]
pub struct WasmEngine {
    inner: Arc<Inner>,
}

impl WasmEngine {
    pub fn new(config: EngineConfig) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        let n = config.max_instances;
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_core_instances_per_component(32)
            .max_core_instance_size(4 << 20)
            .max_component_instance_size(1 << 20)
            .max_memory_size((config.max_memory_mb as usize) << 20)
            // Keep freed slots warm for quick reuse by the same function.
            .max_unused_warm_slots(config.max_instances.min(256))
            // Reset a freed instance's memory by rewriting only the pages it
            // dirtied (PAGEMAP_SCAN, Linux >= 6.7) and keep them resident,
            // instead of unmapping them and faulting them in again on the
            // next request. Falls back to memset/madvise elsewhere.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(config.keep_resident_bytes)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(64 << 10);
        let mut wcfg = Config::new();
        wcfg.epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_init_cow(true)
            .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32));
        let engine = Engine::new(&wcfg).map_err(wasm_err)?;
        let mut linker = Linker::<Host>::new(&engine);
        // Full WASI p2 (as `wasmtime serve -S cli` has it): components built
        // with Rust's std import wasi:cli and wasi:filesystem even when they
        // use neither. No preopens and no socket access are granted.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasm_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(wasm_err)?;
        crate::kv::add_to_linker(&mut linker, |h: &mut Host| {
            crate::kv::KvView::new(&h.kv, &mut h.table)
        })
        .map_err(wasm_err)?;

        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        let cache_dir = config.cache_dir.join(format!("{:016x}", h.finish()));
        std::fs::create_dir_all(&cache_dir)?;
        wisp_core::durable::private_dir(&config.cache_dir)?;

        let ticker = Ticker::start(&engine, config.epoch_tick)?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                ticker,
                linker,
                config,
                cache_dir,
                live: Mutex::default(),
                kv: std::sync::OnceLock::new(),
                objects: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Gives functions the node's key-value store (once, at start).
    pub fn attach_kv(&self, kv: wisp_kv::Kv) {
        let _ = self.inner.kv.set(kv);
    }

    /// Lets functions reach the node's object store: outbound requests to
    /// `url` (or to `http://s3.wisp.internal`) go to `hook` (once, at start).
    pub fn attach_objects(
        &self,
        hook: std::sync::Arc<dyn crate::host::ObjectsHook>,
        url: Option<String>,
    ) {
        let mut authorities = vec![crate::host::INTERNAL_S3_AUTHORITY.to_string()];
        if let Some(a) = url
            .as_deref()
            .and_then(|u| u.parse::<http::Uri>().ok())
            .and_then(|u| u.authority().map(|a| a.to_string()))
        {
            authorities.push(a);
        }
        let _ = self.inner.objects.set(crate::host::ObjectsEndpoint {
            hook,
            url: url.unwrap_or_else(|| format!("http://{}", crate::host::INTERNAL_S3_AUTHORITY)),
            authorities,
        });
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    fn cache_path(&self, digest: &Digest) -> PathBuf {
        self.inner.cache_dir.join(format!("{}.cwasm", digest.hex()))
    }

    /// Whether compiled code for this artifact is in the cache.
    pub fn is_compiled(&self, digest: &Digest) -> bool {
        self.cache_path(digest).exists()
    }

    /// Validates `bytes` as a `wasi:http/proxy` component, compiles it and
    /// writes the compiled code to the cache. CPU-heavy: call it on a
    /// blocking thread.
    pub fn compile(&self, digest: &Digest, bytes: &[u8]) -> Result<Component, DeployError> {
        check_header(digest, bytes)?;
        let component =
            Component::new(&self.inner.engine, bytes).map_err(|e| DeployError::Invalid {
                digest: digest.clone(),
                reason: format!("{e:#}"),
            })?;
        self.check_world(digest, &component)?;
        let path = self.cache_path(digest);
        let cache_err = |reason: String| DeployError::Cache {
            path: path.clone(),
            reason,
        };
        let compiled = component
            .serialize()
            .map_err(|e| cache_err(format!("{e:#}")))?;
        wisp_core::durable::write_atomic(&path, &compiled).map_err(|e| cache_err(e.to_string()))?;
        Ok(component)
    }

    /// The compiled component for `digest`: shared from memory when another
    /// loaded function uses it, else from the on-disk cache, else compiled
    /// from the artifact bytes `fetch` returns. Blocking: call it on a
    /// blocking thread.
    pub fn component<E: From<DeployError>>(
        &self,
        digest: &Digest,
        fetch: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Arc<Component>, E> {
        let live = |m: &HashMap<Digest, Weak<Component>>| m.get(digest).and_then(Weak::upgrade);
        if let Some(c) = live(&self.inner.live.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(c);
        }
        let c = match self.load_cached(digest) {
            Some(c) => c,
            None => self.compile(digest, &fetch()?)?,
        };
        let mut map = self.inner.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = live(&map) {
            return Ok(c); // loaded concurrently: share that one
        }
        map.retain(|_, w| w.strong_count() > 0);
        let c = Arc::new(c);
        map.insert(digest.clone(), Arc::downgrade(&c));
        Ok(c)
    }

    /// Loads compiled code from the cache; `None` when it is not there (or
    /// was written by an incompatible engine), in which case the caller
    /// compiles the artifact again.
    pub fn load_cached(&self, digest: &Digest) -> Option<Component> {
        let path = self.cache_path(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `compile` above, into the node's
        // own data directory, from a component this engine produced; its
        // header is checked by wasmtime against this engine's settings.
        match unsafe { Component::deserialize_file(&self.inner.engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled-code cache entry");
                None
            }
        }
    }

    fn check_world(
        &self,
        digest: &Digest,
        component: &Component,
    ) -> Result<ProxyPre<Host>, DeployError> {
        let pre = self.inner.linker.instantiate_pre(component).map_err(|e| {
            DeployError::UnsupportedImport {
                digest: digest.clone(),
                reason: format!("{e:#}"),
            }
        })?;
        ProxyPre::new(pre).map_err(|e| DeployError::MissingExport {
            digest: digest.clone(),
            reason: format!("{e:#}"),
        })
    }

    /// Links a compiled component into a ready-to-instantiate function
    /// `name` of namespace `ns`.
    pub fn prepare(
        &self,
        digest: &Digest,
        component: Arc<Component>,
        mut spec: FunctionSpec,
        (ns, name): (&Namespace, &FunctionName),
    ) -> Result<Prepared, DeployError> {
        let pre = self.check_world(digest, &component)?;
        let objects = self.inner.objects.get().map(|endpoint| {
            (
                endpoint.clone(),
                crate::host::FunctionCaller {
                    namespace: ns.clone(),
                    function: name.clone(),
                    grants: spec.objects.iter().cloned().collect(),
                },
            )
        });
        if let Some((endpoint, _)) = &objects
            && !spec.objects.is_empty()
        {
            spec.env
                .insert("WISP_S3_ENDPOINT".into(), endpoint.url.clone());
        }
        let kv = crate::kv::KvCtx {
            kv: self.inner.kv.get().cloned(),
            namespace: ns.clone(),
            grants: spec.kv.iter().cloned().collect(),
            function: Some(name.to_string()),
        };
        Ok(Prepared::new(
            (self.inner.engine.clone(), self.inner.ticker.clone()),
            component,
            pre,
            spec,
            (
                self.inner.config.log_capture_bytes,
                self.inner.config.demote_after,
            ),
            kv,
            objects,
        ))
    }
}

fn wasm_err(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

fn check_header(digest: &Digest, bytes: &[u8]) -> Result<(), DeployError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(DeployError::NotWasm {
            digest: digest.clone(),
        });
    }
    match bytes[4..8] {
        [0x01, 0x00, 0x00, 0x00] => Err(DeployError::CoreModule {
            digest: digest.clone(),
        }),
        [_, _, 0x01, 0x00] => Ok(()),
        _ => Err(DeployError::Invalid {
            digest: digest.clone(),
            reason: format!(
                "unknown WebAssembly version/layer bytes {:02x?}",
                &bytes[4..8]
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks_name_the_problem() {
        let d = Digest::of(b"x");
        assert!(matches!(
            check_header(&d, b"hello world"),
            Err(DeployError::NotWasm { .. })
        ));
        assert!(matches!(
            check_header(&d, b"\0asm\x01\0\0\0"),
            Err(DeployError::CoreModule { .. })
        ));
        assert!(check_header(&d, b"\0asm\x0d\0\x01\0").is_ok());
    }

    fn engine() -> (WasmEngine, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "wisp-engine-{}",
            wisp_core::ActivationId::generate()
        ));
        let mut cfg = EngineConfig::new(&dir);
        cfg.max_instances = 4;
        (WasmEngine::new(cfg).unwrap(), dir)
    }

    #[test]
    fn unknown_imports_are_named() {
        let (e, dir) = engine();
        let bytes = wat::parse_str(
            r#"(component (import "acme:missing/thing" (instance (export "f" (func)))))"#,
        )
        .unwrap();
        let err = e.compile(&Digest::of(&bytes), &bytes).unwrap_err();
        assert!(
            matches!(err, DeployError::UnsupportedImport { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("acme:missing/thing"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn components_without_the_handler_export_are_refused() {
        let (e, dir) = engine();
        let bytes = wat::parse_str("(component)").unwrap();
        let d = Digest::of(&bytes);
        let err = e.compile(&d, &bytes).unwrap_err();
        assert!(matches!(err, DeployError::MissingExport { .. }), "{err}");
        assert!(
            err.to_string().contains("wasi:http/incoming-handler"),
            "{err}"
        );
        assert!(
            !e.is_compiled(&d),
            "nothing is cached for a refused component"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
