//! What a namespace holds in the engine's stores, and deleting all of it
//! (`wisp ns rm NS --force`): triggers, topics, functions with their
//! versions and the artifacts no other namespace uses, queued events and
//! dead letters, KV buckets and keys, object buckets and objects, activation
//! records (its usage).

use crate::engine::{Engine, EngineError, blocking};
use serde::Serialize;
use wisp_core::Namespace;

/// Counts of what a namespace holds in the engine's stores.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Holdings {
    pub functions: u64,
    pub triggers: u64,
    pub topics: u64,
    pub queued_events: u64,
    pub dead_letters: u64,
    pub kv_buckets: u64,
    pub kv_keys: u64,
    pub buckets: u64,
    pub objects: u64,
    pub secrets: u64,
}

impl Holdings {
    /// `3 functions, 2 buckets, 120 KV keys` (only what is not zero).
    pub fn describe(&self) -> Vec<String> {
        [
            (self.functions, "function"),
            (self.triggers, "trigger"),
            (self.topics, "topic"),
            (self.queued_events, "queued event"),
            (self.dead_letters, "dead letter"),
            (self.kv_buckets, "KV bucket"),
            (self.kv_keys, "KV key"),
            (self.buckets, "bucket"),
            (self.objects, "object"),
            (self.secrets, "secret"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}{}", if n == 1 { "" } else { "s" }))
        .collect()
    }
}

fn objects_err(e: wisp_objects::ObjectError) -> EngineError {
    EngineError::Internal(format!("object store: {e}"))
}

impl Engine {
    /// What `ns` holds in the engine's stores.
    pub async fn holdings(&self, ns: &Namespace) -> Result<Holdings, EngineError> {
        let kv = self.kv().buckets(ns);
        let objects = self.objects().clone();
        let n = ns.clone();
        let (buckets, count) = blocking(move || {
            Ok::<_, wisp_objects::ObjectError>((
                objects.list_buckets(&n)?.len() as u64,
                objects.count_objects(&n)?,
            ))
        })
        .await?
        .map_err(objects_err)?;
        let (events, n) = (self.events().store.clone(), ns.clone());
        let queued = blocking(move || {
            events
                .pending()
                .map(|p| p.iter().filter(|d| d.namespace == n).count() as u64)
        })
        .await??;
        Ok(Holdings {
            queued_events: queued,
            functions: self.list_functions(Some(ns)).await.len() as u64,
            triggers: self.list_triggers(ns).len() as u64,
            topics: self.list_topics(ns).len() as u64,
            dead_letters: self.dead_letters(ns, None, usize::MAX).await?.len() as u64,
            kv_buckets: kv.len() as u64,
            kv_keys: kv.iter().map(|b| b.keys).sum(),
            buckets,
            objects: count,
            secrets: self.list_secrets(ns).await?.len() as u64,
        })
    }

    /// Deletes everything of `ns` in the engine's stores (secrets and the
    /// rest of the tenant store go with the namespace itself).
    pub async fn purge_namespace(&self, ns: &Namespace) -> Result<(), EngineError> {
        // The artifacts its versions use, to collect those no other
        // namespace's versions use once its functions are gone.
        let registry = self.inner.registry.clone();
        let n = ns.clone();
        let used = blocking(move || registry.version_artifacts(Some(&n))).await??;
        // Triggers and topics first, so nothing new is queued for it.
        for t in self.list_triggers(ns) {
            self.delete_trigger(ns, &t.trigger.name).await?;
        }
        for t in self.list_topics(ns) {
            self.delete_topic(ns, &t.name).await?;
        }
        for f in self.list_functions(Some(ns)).await {
            match self.delete_function(ns, &f.name).await {
                Ok(()) | Err(EngineError::FunctionNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let (registry, artifacts) = (self.inner.registry.clone(), self.inner.artifacts.clone());
        blocking(move || {
            let still: std::collections::HashSet<_> =
                registry.version_artifacts(None)?.into_iter().collect();
            for d in used.iter().filter(|d| !still.contains(*d)) {
                artifacts.delete_artifact(d)?;
            }
            Ok::<_, wisp_core::StoreError>(())
        })
        .await??;
        self.delete_dead_letters(ns, Vec::new(), None).await?;
        for b in self.kv().buckets(ns) {
            self.kv().delete_bucket(ns, &b.name).await?;
        }
        let (objects, n) = (self.objects().clone(), ns.clone());
        blocking(move || objects.delete_namespace(&n))
            .await?
            .map_err(objects_err)?;
        // Deliveries still queued or waiting for a retry: gone from the
        // store, so when their turn comes there is nothing to run or to
        // dead-letter (a dead letter is copied from the stored delivery).
        let (events, n) = (self.events().store.clone(), ns.clone());
        blocking(move || events.delete_namespace_events(&n)).await??;
        // Records of its last runs may still wait in the recorder's queue.
        self.inner.recorder.flush().await;
        let (activations, n) = (self.inner.activations.clone(), ns.clone());
        blocking(move || activations.delete_namespace_activations(&n)).await??;
        Ok(())
    }
}
