//! Activation records, usage and secrets of the engine's API.

use crate::engine::{Engine, EngineError, blocking};
use wisp_core::time::now_ms;
use wisp_core::{Activation, ActivationFilter, ActivationId, Namespace, SecretInfo, UsageRow};

impl Engine {
    pub async fn list_activations(
        &self,
        filter: ActivationFilter,
    ) -> Result<Vec<Activation>, EngineError> {
        let store = self.inner.activations.clone();
        Ok(blocking(move || store.list_activations(&filter)).await??)
    }

    pub async fn get_activation(&self, id: ActivationId) -> Result<Activation, EngineError> {
        let store = self.inner.activations.clone();
        Ok(blocking(move || store.get_activation(&id)).await??)
    }

    pub async fn usage(
        &self,
        ns: Option<Namespace>,
        since_ms: i64,
    ) -> Result<Vec<UsageRow>, EngineError> {
        let store = self.inner.activations.clone();
        Ok(blocking(move || store.usage(ns.as_ref(), since_ms)).await??)
    }

    /// Stores a secret (encrypted at rest) and reloads the functions of
    /// the namespace that use it, so their next run sees the new value.
    pub async fn put_secret(
        &self,
        ns: &Namespace,
        name: &str,
        value: String,
    ) -> Result<(), EngineError> {
        let store = self.inner.secrets.clone();
        let (n, nm) = (ns.clone(), name.to_string());
        blocking(move || store.put_secret(&n, &nm, &value, now_ms())).await??;
        self.forget_prepared(ns, name);
        Ok(())
    }

    pub async fn delete_secret(&self, ns: &Namespace, name: &str) -> Result<bool, EngineError> {
        let store = self.inner.secrets.clone();
        let (n, nm) = (ns.clone(), name.to_string());
        let deleted = blocking(move || store.delete_secret(&n, &nm)).await??;
        self.forget_prepared(ns, name);
        Ok(deleted)
    }

    pub async fn list_secrets(&self, ns: &Namespace) -> Result<Vec<SecretInfo>, EngineError> {
        let store = self.inner.secrets.clone();
        let n = ns.clone();
        Ok(blocking(move || store.list_secrets(&n)).await??)
    }

    /// Drops the loaded code of functions using the secret: the next run
    /// loads them again with the secret's current value.
    pub(crate) fn forget_prepared(&self, ns: &Namespace, secret: &str) {
        let table = self
            .inner
            .functions
            .read()
            .unwrap_or_else(|p| p.into_inner());
        for e in table.values() {
            if e.record.namespace == *ns && e.record.spec.secrets.iter().any(|s| s == secret) {
                *e.prepared.write().unwrap_or_else(|p| p.into_inner()) = None;
            }
        }
    }
}
