//! Loading a function's code: a Wasm component compiled (or taken from
//! the on-disk cache) and linked, or a process function's bundle unpacked
//! and its (empty) process pool made; with the values of its secrets.

use crate::engine::{Engine, EngineError, Entry, blocking};
use crate::runner::Runner;
use std::sync::Arc;
use std::time::Instant;
use wisp_core::{Digest, FunctionName, FunctionSpec, Namespace, Runtime};

impl Engine {
    /// Loads (or compiles) a function's component and links it, with the
    /// values of its secrets added to its environment.
    pub(crate) async fn load(
        &self,
        ns: &Namespace,
        (name, version): (&FunctionName, u32),
        artifact: &Digest,
        spec: &FunctionSpec,
    ) -> Result<(Runner, Vec<String>), EngineError> {
        if spec.runtime == Runtime::Process {
            return self.load_process(ns, (name, version), artifact, spec).await;
        }
        let wasm = self.inner.wasm.clone();
        let artifacts = self.inner.artifacts.clone();
        let secrets = self.inner.secrets.clone();
        let (digest, mut spec, ns, name) =
            (artifact.clone(), spec.clone(), ns.clone(), name.clone());
        let queued = Instant::now();
        let (prepared, values) = blocking(move || {
            let mut values = Vec::new();
            for (k, v) in secrets.secret_values(&ns, &spec.secrets)? {
                values.push(v.clone());
                spec.env.insert(k, v);
            }
            let started = Instant::now();
            let component = wasm.component(&digest, || {
                artifacts.get_artifact(&digest).map_err(EngineError::from)
            })?;
            let loaded = Instant::now();
            let prepared = wasm.prepare(&digest, component, spec, (&ns, &name))?;
            tracing::debug!(
                artifact = %digest,
                queued_us = (started - queued).as_micros() as u64,
                load_us = (loaded - started).as_micros() as u64,
                link_us = loaded.elapsed().as_micros() as u64,
                "function loaded"
            );
            Ok::<_, EngineError>((prepared, values))
        })
        .await??;
        Ok((Runner::Wasm(Arc::new(prepared)), values))
    }

    /// Unpacks a process function's bundle (once per artifact) and makes
    /// its (empty) process pool.
    pub(crate) async fn load_process(
        &self,
        ns: &Namespace,
        (name, version): (&FunctionName, u32),
        artifact: &Digest,
        spec: &FunctionSpec,
    ) -> Result<(Runner, Vec<String>), EngineError> {
        let (artifacts, secrets, process) = (
            self.inner.artifacts.clone(),
            self.inner.secrets.clone(),
            self.inner.process.clone(),
        );
        let (digest, mut spec, ns, name) =
            (artifact.clone(), spec.clone(), ns.clone(), name.to_string());
        blocking(move || {
            let mut values = Vec::new();
            for (k, v) in secrets.secret_values(&ns, &spec.secrets)? {
                values.push(v.clone());
                spec.env.insert(k, v);
            }
            let dir = match process.unpacked(&digest) {
                Some(d) => d,
                None => {
                    let bytes = artifacts.get_artifact(&digest)?;
                    process.unpack(&digest, &bytes, spec.command.as_deref())?
                }
            };
            let pool = process.pool(
                wisp_exec_process::ProcessSpec {
                    namespace: ns.to_string(),
                    name,
                    version,
                    memory_mb: spec.memory_mb,
                    env: spec.env.clone(),
                    handler: spec.handler.clone(),
                    command: spec.command.clone(),
                    network: !spec.allow_outbound.is_empty(),
                },
                dir,
            )?;
            Ok::<_, EngineError>((Runner::Process(pool), values))
        })
        .await?
    }

    pub(crate) async fn prepared(&self, entry: &Entry) -> Result<(Runner, bool), EngineError> {
        if let Some(p) = entry
            .prepared
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok((p.clone(), false));
        }
        let _guard = entry.load_lock.lock().await;
        if let Some(p) = entry
            .prepared
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok((p.clone(), true)); // loaded by a concurrent request: this one waited too
        }
        let r = &entry.record;
        let (p, values) = self
            .load(&r.namespace, (&r.name, r.version), &r.artifact, &r.spec)
            .await?;
        *entry
            .secret_values
            .write()
            .unwrap_or_else(|p| p.into_inner()) = values.into();
        *entry.prepared.write().unwrap_or_else(|p| p.into_inner()) = Some(p.clone());
        Ok((p, true))
    }
}
