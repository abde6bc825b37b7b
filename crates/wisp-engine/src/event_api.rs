//! What callers of the durable queue see: async invocations, publishing
//! to topics, the status of an event and its deliveries, and the
//! dead-letter queue (listed, replayed, deleted).

use crate::engine::{Engine, EngineError, blocking};
use bytes::Bytes;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use wisp_core::event::{CloudEvent, DeadLetter, Origin, types};
use wisp_core::time::now_ms;
use wisp_core::{
    Activation, ActivationFilter, DeliveryId, FunctionName, IdempotencyKey, Namespace, Outcome,
    TopicName,
};

/// What an accepted publish or async invoke stored.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    /// The CloudEvent id.
    pub event_id: String,
    /// One delivery per receiving function.
    pub deliveries: Vec<DeliveryRef>,
    /// The idempotency key was seen before: these are the first request's
    /// deliveries and nothing new was queued.
    pub duplicate: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRef {
    pub id: DeliveryId,
    pub function: FunctionName,
}

/// Where one delivery stands.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryStatus {
    pub id: DeliveryId,
    pub function: FunctionName,
    pub origin: Origin,
    /// `queued`, `retrying`, `succeeded`, `failed` or `dead_letter`.
    pub status: &'static str,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Every attempt's activation, oldest first.
    pub activations: Vec<Activation>,
}

/// An event and its deliveries (`GET /v1/events/{id}`).
#[derive(Debug, Clone, Serialize)]
pub struct EventStatus {
    pub event_id: String,
    pub deliveries: Vec<DeliveryStatus>,
}

fn not_in_dlq(ids: &[DeliveryId]) -> EngineError {
    let ids: Vec<&str> = ids.iter().map(DeliveryId::as_str).collect();
    EngineError::EventNotFound(ids.join(", "))
}

impl Engine {
    /// Queues an async invocation: 202 once stored; it runs soon, and is
    /// retried on failure.
    pub async fn invoke_async(
        &self,
        ns: &Namespace,
        name: &FunctionName,
        data: Bytes,
        content_type: Option<String>,
        idempotency_key: Option<String>,
    ) -> Result<Accepted, EngineError> {
        self.entry(ns, name)?;
        let id = DeliveryId::generate();
        let mut ev = CloudEvent::new(
            id.to_string(),
            format!("/wisp/{ns}/functions/{name}"),
            types::INVOKE,
        );
        ev.time = Some(wisp_core::event::rfc3339_ms(now_ms()));
        ev.datacontenttype = content_type;
        ev.data = data;
        let key = self.idempotency(ns, format!("function:{name}"), idempotency_key);
        self.enqueue_to_functions(
            ns,
            vec![(name.clone(), None)],
            ev,
            Origin::Async,
            key,
            false,
        )
        .await
    }

    /// Publishes an event to a topic: every subscriber gets its own copy.
    pub async fn publish(
        &self,
        ns: &Namespace,
        topic: &TopicName,
        ev: CloudEvent,
        idempotency_key: Option<String>,
    ) -> Result<Accepted, EngineError> {
        ev.validate()?;
        let key = self.idempotency(ns, format!("topic:{topic}"), idempotency_key);
        self.publish_inner(ns, topic, ev, key, false).await
    }

    pub(crate) async fn publish_inner(
        &self,
        ns: &Namespace,
        topic: &TopicName,
        ev: CloudEvent,
        key: Option<IdempotencyKey>,
        force: bool,
    ) -> Result<Accepted, EngineError> {
        let k = (ns.clone(), topic.clone());
        if !self
            .events()
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&k)
        {
            return Err(EngineError::TopicNotFound {
                namespace: ns.clone(),
                topic: topic.clone(),
            });
        }
        let targets: Vec<(FunctionName, Option<String>)> = self
            .events()
            .subs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&k)
            .map(|v| {
                v.iter()
                    .map(|(t, f)| (f.clone(), Some(t.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        if targets.is_empty() {
            return Ok(Accepted {
                event_id: ev.id,
                deliveries: Vec::new(),
                duplicate: false,
            });
        }
        self.enqueue_to_functions(ns, targets, ev, Origin::Topic, key, force)
            .await
    }

    pub async fn dead_letters(
        &self,
        ns: &Namespace,
        function: Option<FunctionName>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, EngineError> {
        let store = self.events().store.clone();
        let ns = ns.clone();
        Ok(blocking(move || store.dead_letters(&ns, function.as_ref(), limit)).await??)
    }

    /// Deletes dead letters for good (all of them when `ids` is empty, of
    /// `function` when given); returns how many.
    pub async fn delete_dead_letters(
        &self,
        ns: &Namespace,
        ids: Vec<DeliveryId>,
        function: Option<FunctionName>,
    ) -> Result<u64, EngineError> {
        let store = self.events().store.clone();
        let ns2 = ns.clone();
        let want = ids.clone();
        let n =
            blocking(move || store.delete_dead_letters(&ns2, &want, function.as_ref())).await??;
        if n == 0 && !ids.is_empty() {
            return Err(not_in_dlq(&ids));
        }
        Ok(n)
    }

    /// Moves dead letters back into the queue (all of them when `ids` is
    /// empty, of `function` when given); returns the replayed ids.
    pub async fn replay(
        &self,
        ns: &Namespace,
        ids: Vec<DeliveryId>,
        function: Option<FunctionName>,
    ) -> Result<Vec<DeliveryRef>, EngineError> {
        let store = self.events().store.clone();
        let ns2 = ns.clone();
        let want = ids.clone();
        let back =
            blocking(move || store.replay_dead_letters(&ns2, &want, function.as_ref(), now_ms()))
                .await??;
        if back.is_empty() && !ids.is_empty() {
            return Err(not_in_dlq(&ids));
        }
        let refs = back
            .iter()
            .map(|d| DeliveryRef {
                id: d.id.clone(),
                function: d.function.clone(),
            })
            .collect();
        self.hold_and_schedule(back);
        Ok(refs)
    }

    /// An event (by CloudEvent id or delivery id) and where each of its
    /// deliveries stands, with the activations of every attempt.
    pub async fn event_status(&self, ns: &Namespace, id: &str) -> Result<EventStatus, EngineError> {
        match self.event_status_once(ns, id).await {
            // A delivery that just finished has left the queue while its
            // activation record may still wait for the recorder's next
            // batch: look once more after that batch was written.
            Err(EngineError::EventNotFound(_)) => {
                let window = self.inner.settings.retention.batch_window;
                tokio::time::sleep(window + Duration::from_millis(50)).await;
                self.event_status_once(ns, id).await
            }
            other => other,
        }
    }

    async fn event_status_once(
        &self,
        ns: &Namespace,
        id: &str,
    ) -> Result<EventStatus, EngineError> {
        let store = self.events().store.clone();
        let activations = self.inner.activations.clone();
        let (ns2, id2) = (ns.clone(), id.to_string());
        let (held, runs) = blocking(move || {
            let mut held = store.deliveries_of_event(&ns2, &id2)?;
            let mut runs = activations.list_activations(&ActivationFilter {
                namespace: Some(ns2.clone()),
                event_id: Some(id2.clone()),
                limit: 10_000,
                ..Default::default()
            })?;
            if let Ok(did) = DeliveryId::parse(&id2) {
                if let Some(found) = store.find_delivery(&did)?
                    && found.0.namespace == ns2
                    && !held.iter().any(|(d, _)| d.id == did)
                {
                    held.push(found);
                }
                runs.extend(activations.list_activations(&ActivationFilter {
                    namespace: Some(ns2.clone()),
                    delivery: Some(did),
                    limit: 10_000,
                    ..Default::default()
                })?);
            }
            Ok::<_, EngineError>((held, runs))
        })
        .await??;
        let mut by_delivery: BTreeMap<DeliveryId, DeliveryStatus> = BTreeMap::new();
        let mut event_id = id.to_string();
        for (d, dead) in held {
            event_id = d.event.id.clone();
            by_delivery.insert(
                d.id.clone(),
                DeliveryStatus {
                    id: d.id,
                    function: d.function,
                    origin: d.origin,
                    status: if dead {
                        "dead_letter"
                    } else if d.attempts == 0 {
                        "queued"
                    } else {
                        "retrying"
                    },
                    attempts: d.attempts,
                    last_error: d.last_error,
                    activations: Vec::new(),
                },
            );
        }
        let mut seen = HashSet::new();
        let mut runs: Vec<Activation> = runs
            .into_iter()
            .filter(|a| seen.insert(a.id.clone()))
            .collect();
        runs.sort_by(|a, b| a.id.cmp(&b.id));
        for a in runs {
            let Some(ev) = a.event.clone() else { continue };
            event_id = ev.event_id.clone();
            let st = by_delivery
                .entry(ev.delivery_id.clone())
                .or_insert_with(|| DeliveryStatus {
                    id: ev.delivery_id.clone(),
                    function: a.function.clone(),
                    origin: Origin::parse(&a.trigger).unwrap_or(Origin::Async),
                    status: "running",
                    attempts: 0,
                    last_error: None,
                    activations: Vec::new(),
                });
            st.attempts = st.attempts.max(ev.attempt);
            st.activations.push(a);
        }
        if by_delivery.is_empty() {
            return Err(EngineError::EventNotFound(id.to_string()));
        }
        for st in by_delivery.values_mut() {
            if st.status == "running"
                && let Some(last) = st.activations.last()
            {
                // Not held any more: the last attempt decided.
                st.status = if last.outcome == Outcome::Success {
                    "succeeded"
                } else {
                    "failed"
                };
                st.last_error = last.error.clone();
            }
        }
        Ok(EventStatus {
            event_id,
            deliveries: by_delivery.into_values().collect(),
        })
    }
}
