//! Events of key changes (kv triggers), through the key-value store's
//! outbox (see `wisp_kv::ChangeHook`): when a key changes, the events it
//! triggers are worked out and stored in `kv.db` with the change, in one
//! transaction; once committed they are queued in the durable event queue
//! (once per change, also when handed on again after a crash).

use crate::engine::{Engine, EngineError, Inner};
use crate::triggers::storage_cloud_event;
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use std::sync::Weak;
use wisp_core::event::{Delivery, Origin, TriggerKind};
use wisp_core::kv::KvError;
use wisp_core::{CloudEvent, FunctionName, Namespace};

/// The events of one change, as stored with it.
#[derive(Serialize, Deserialize)]
struct Record {
    namespace: Namespace,
    /// Each target function, with the trigger it comes through.
    targets: Vec<(FunctionName, Option<String>)>,
    /// Its attributes (`data` is not serialized with them).
    event: CloudEvent,
    /// Its data: JSON.
    data: String,
}

/// The engine's side of the key-value store's outbox.
pub(crate) struct KvHook(pub(crate) Weak<Inner>);

impl wisp_kv::ChangeHook for KvHook {
    fn prepare(&self, change: &wisp_kv::KvChange) -> Result<Option<Vec<u8>>, KvError> {
        let Some(inner) = self.0.upgrade() else {
            return Ok(None);
        };
        Engine { inner }.kv_events(change)
    }

    fn publish(
        &self,
        id: String,
        record: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        let weak = self.0.clone();
        Box::pin(async move {
            let Some(inner) = weak.upgrade() else {
                return Err("the node is stopping".into());
            };
            Engine { inner }
                .queue_kv_events(id, &record)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

impl Engine {
    /// The events a key change triggers: one for every kv trigger of the
    /// bucket whose prefix and event kinds match (a function's own writes
    /// never trigger it). Refused when the queue has no room for them.
    fn kv_events(&self, c: &wisp_kv::KvChange) -> Result<Option<Vec<u8>>, KvError> {
        let what = if c.size.is_some() {
            wisp_core::KvEvent::Set
        } else {
            wisp_core::KvEvent::Deleted
        };
        let targets = self.triggered(|t| match &t.kind {
            TriggerKind::Kv {
                bucket,
                prefix,
                events,
            } => {
                t.namespace == c.namespace
                    && *bucket == c.bucket
                    && c.key.starts_with(prefix.as_str())
                    && events.contains(&what)
                    && c.by.as_deref() != Some(t.function.as_str())
            }
            _ => false,
        });
        if targets.is_empty() {
            return Ok(None);
        }
        let ns = &c.namespace;
        let data = serde_json::json!({
            "namespace": ns,
            "bucket": c.bucket,
            "key": c.key,
            "size": c.size,
        });
        let source = format!("/wisp/{ns}/kv/{}", c.bucket);
        let event = storage_cloud_event((source, what.ce_type()), &c.key, data);
        // Room in the queue now; the events take it once they are queued.
        let size = Delivery::new(
            ns.clone(),
            targets[0].0.clone(),
            Origin::Storage,
            targets[0].1.clone(),
            event.clone(),
        )
        .size();
        let (n, bytes) = (targets.len(), targets.len() * size);
        self.events().reserve(n, bytes).map_err(|e| match e {
            EngineError::QueueFull(m) => KvError::QueueFull(m),
            e => KvError::Store(e.to_string()),
        })?;
        self.events().release(n, bytes);
        let record = Record {
            namespace: ns.clone(),
            targets,
            data: String::from_utf8_lossy(&event.data).into_owned(),
            event,
        };
        serde_json::to_vec(&record)
            .map(Some)
            .map_err(|e| KvError::Store(format!("encoding a storage event: {e}")))
    }

    /// Queues a stored change's events, once per `id`.
    async fn queue_kv_events(&self, id: String, record: &[u8]) -> Result<(), EngineError> {
        let mut r: Record = serde_json::from_slice(record)
            .map_err(|e| EngineError::Internal(format!("a stored storage event: {e}")))?;
        r.event.data = r.data.into_bytes().into();
        // A function deleted since the change gets nothing (a namespace
        // deleted with everything in it, too).
        r.targets
            .retain(|(f, _)| self.entry(&r.namespace, f).is_ok());
        if r.targets.is_empty() {
            return Ok(());
        }
        let once = self.idempotency(&r.namespace, "kv-change".into(), Some(id));
        self.enqueue_to_functions(
            &r.namespace,
            r.targets,
            r.event,
            Origin::Storage,
            once,
            true,
        )
        .await
        .map(|_| ())
    }
}
