//! Events of key changes (storage triggers), stored with their change.
//!
//! The event queue lives in another database than the keys, so a change
//! and its events cannot be committed in one transaction there. Instead a
//! change that triggers events carries them, as an opaque record from the
//! [`ChangeHook`], into the same `kv.db` transaction as the change (an
//! outbox): both are stored, or neither is. Once committed, the record is
//! handed to the hook, which queues the events durably, and then dropped
//! from `kv.db`. A record that could not be handed on (the queue's disk is
//! full, the node stopped) stays in `kv.db` and is handed on again — every
//! second while the node runs, and at the next start — with its id, which
//! the hook uses to queue it only once.

use crate::{Inner, Kv};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;
use wisp_core::kv::{KvError, KvOp};

/// How often records that could not be handed on are tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// A change of a key, for the hook.
#[derive(Debug, Clone)]
pub struct KvChange {
    pub namespace: wisp_core::Namespace,
    pub bucket: String,
    pub key: String,
    /// The new value's size; none when the key is deleted.
    pub size: Option<u64>,
    /// The function that makes the change (none: the API or the CLI).
    pub by: Option<String>,
}

/// What storage triggers need of the store (the engine implements it).
pub trait ChangeHook: Send + Sync + 'static {
    /// The events `change` causes, as a record to store with it, or
    /// `None` when it causes none. Called with the store's write lock
    /// held, before the change is made: quick, never blocking. An error
    /// refuses the change, and nothing of it is stored
    /// ([`KvError::QueueFull`] when the event queue has no room).
    fn prepare(&self, change: &KvChange) -> Result<Option<Vec<u8>>, KvError>;
    /// Queues the events of a stored record durably. May be called more
    /// than once for one `id` (after a crash, or when an earlier call's
    /// answer was lost): the events must then be queued only once.
    fn publish(
        &self,
        id: String,
        record: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
}

/// A record still in `kv.db`: to hand on (`Some`), or handed on and only
/// to be dropped (`None`).
pub(crate) type Pending = (String, Option<Vec<u8>>);

impl Kv {
    /// Installs the hook (once, at start, in a tokio runtime) and starts
    /// handing on the records left from before.
    pub fn set_hook(&self, hook: Arc<dyn ChangeHook>) {
        if self.inner.hook.set(hook).is_err() {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { break };
                Kv { inner }.retry_pending().await;
                tokio::time::sleep(RETRY_EVERY).await;
            }
        });
    }

    /// The events record of a change, with a fresh id (`None`: no hook, or
    /// the change triggers nothing). Call with the write lock held.
    pub(crate) fn prepare(&self, change: KvChange) -> Result<Option<(String, Vec<u8>)>, KvError> {
        let Some(hook) = self.inner.hook.get() else {
            return Ok(None);
        };
        Ok(hook
            .prepare(&change)?
            .map(|r| (wisp_core::ActivationId::generate().to_string(), r)))
    }

    /// After the change was committed with its record: hands the record
    /// on, then drops it. A failure leaves it for the retry loop; the
    /// change and its events are stored either way.
    pub(crate) async fn hand_on(&self, events: Option<(String, Vec<u8>)>) {
        let Some((id, record)) = events else { return };
        let Some(hook) = self.inner.hook.get().cloned() else {
            return;
        };
        match hook.publish(id.clone(), record.clone()).await {
            Ok(()) => self.drop_record(id).await,
            Err(e) => {
                tracing::warn!(error = %e, "storage events are kept with their change and will be queued again");
                self.pending().push((id, Some(record)));
            }
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.inner.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes a handed-on record from `kv.db` (a delete: it may use the
    /// disk reserve); kept for later when that fails.
    async fn drop_record(&self, id: String) {
        let rx = {
            let mut map = self.write();
            self.persist(
                &mut map,
                vec![KvOp::DropEvents { id: id.clone() }],
                vec![crate::writer::Undo::Nothing],
                false,
            )
        };
        if let Err(e) = Self::committed(rx).await {
            tracing::warn!(error = %e, "a queued storage event stays in kv.db until it can be dropped");
            self.pending().push((id, None));
        }
    }

    /// Hands on (and drops) every record that is still pending, in order.
    pub(crate) async fn retry_pending(&self) {
        let todo = std::mem::take(&mut *self.pending());
        let Some(hook) = self.inner.hook.get().cloned() else {
            self.pending().extend(todo);
            return;
        };
        let mut left = Vec::new();
        let mut todo = todo.into_iter();
        for (id, record) in todo.by_ref() {
            match record {
                None => self.drop_record(id).await,
                Some(record) => match hook.publish(id.clone(), record.clone()).await {
                    Ok(()) => self.drop_record(id).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "storage events still cannot be queued");
                        // Keep the order: the rest waits for the next round.
                        left.push((id, Some(record)));
                        break;
                    }
                },
            }
        }
        left.extend(todo);
        let mut p = self.pending();
        left.append(&mut p);
        *p = left;
    }

    /// Records that are stored but not yet handed on (for tests and
    /// metrics).
    pub fn pending_events(&self) -> usize {
        self.pending().iter().filter(|(_, r)| r.is_some()).count()
    }
}
