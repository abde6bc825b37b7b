//! Topics and triggers: topic CRUD, trigger CRUD, and the cron tasks that
//! fire through the durable queue (see `events.rs`).

use crate::engine::{Engine, EngineError, blocking};
use crate::events::TopicView;
use crate::events::TriggerView;
use std::sync::atomic::Ordering;
use std::time::Duration;
use wisp_core::event::{Delivery, Origin, Trigger, TriggerKind};
use wisp_core::time::now_ms;
use wisp_core::{
    CloudEvent, FunctionName, Namespace, QueueOp, QueueOpResult, TopicName, TriggerName,
};
use wisp_triggers::CronSchedule;

/// The CloudEvent of a storage change: the key as its subject, `data` as
/// JSON.
pub(crate) fn storage_cloud_event(
    (source, ce_type): (String, &str),
    key: &str,
    data: serde_json::Value,
) -> CloudEvent {
    let mut ev = CloudEvent::new(
        wisp_core::ActivationId::generate().to_string(),
        source,
        ce_type,
    );
    ev.subject = Some(key.to_string());
    ev.time = Some(wisp_core::event::rfc3339_ms(now_ms()));
    ev.datacontenttype = Some("application/json".into());
    ev.data = serde_json::to_vec(&data).unwrap_or_default().into();
    ev
}

impl Engine {
    pub async fn create_topic(
        &self,
        ns: &Namespace,
        topic: &TopicName,
    ) -> Result<bool, EngineError> {
        let store = self.events().store.clone();
        let (n, t) = (ns.clone(), topic.clone());
        let created = blocking(move || store.put_topic(&n, &t)).await??;
        self.events()
            .topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((ns.clone(), topic.clone()));
        Ok(created)
    }

    pub fn list_topics(&self, ns: &Namespace) -> Vec<TopicView> {
        let topics = self
            .events()
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let subs = self.events().subs.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<TopicView> = topics
            .iter()
            .filter(|(n, _)| n == ns)
            .map(|(n, t)| TopicView {
                name: t.clone(),
                subscribers: subs
                    .get(&(n.clone(), t.clone()))
                    .map(|v| v.iter().map(|(_, f)| f.clone()).collect())
                    .unwrap_or_default(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub async fn delete_topic(&self, ns: &Namespace, topic: &TopicName) -> Result<(), EngineError> {
        let k = (ns.clone(), topic.clone());
        if let Some(subs) = self
            .events()
            .subs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&k)
            && !subs.is_empty()
        {
            let triggers: Vec<String> = subs.iter().map(|(t, _)| t.to_string()).collect();
            return Err(EngineError::TopicInUse {
                topic: topic.clone(),
                triggers: triggers.join(", "),
            });
        }
        let store = self.events().store.clone();
        let (n, t) = k.clone();
        let existed = blocking(move || store.delete_topic(&n, &t)).await??;
        self.events()
            .topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&k);
        if !existed {
            return Err(EngineError::TopicNotFound {
                namespace: ns.clone(),
                topic: topic.clone(),
            });
        }
        Ok(())
    }

    /// Adds a trigger: checks the function, the schedule or topic, stores
    /// it and starts it.
    pub async fn add_trigger(&self, t: Trigger) -> Result<TriggerView, EngineError> {
        self.entry(&t.namespace, &t.function)?;
        let key = (t.namespace.clone(), t.name.clone());
        if self
            .events()
            .triggers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&key)
        {
            return Err(EngineError::TriggerExists(t.name.clone()));
        }
        match &t.kind {
            TriggerKind::Cron {
                schedule, timezone, ..
            } => {
                // Off the request threads: refusing a schedule that never
                // fires means croner searching to the year 5000, which can
                // take a second of CPU (found by the cron fuzz target).
                let (schedule, timezone) = (schedule.clone(), timezone.clone());
                crate::engine::blocking(move || CronSchedule::parse(&schedule, &timezone))
                    .await??;
            }
            TriggerKind::Topic { topic } => {
                self.create_topic(&t.namespace, topic).await?;
            }
            TriggerKind::Object { bucket, events, .. } => {
                if events.is_empty() {
                    return Err(EngineError::Spec(wisp_core::SpecError::Kv(
                        "an object trigger needs at least one of the events created, deleted"
                            .into(),
                    )));
                }
                let (objects, ns, b) =
                    (self.objects().clone(), t.namespace.clone(), bucket.clone());
                let exists = blocking(move || objects.bucket_exists(&ns, &b))
                    .await?
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
                if !exists {
                    return Err(EngineError::NoSuchBucket(bucket.clone()));
                }
            }
            TriggerKind::Kv { bucket, events, .. } => {
                wisp_core::kv::check_bucket(bucket)?;
                if events.is_empty() {
                    return Err(EngineError::Spec(wisp_core::SpecError::Kv(
                        "a kv trigger needs at least one of the events set, deleted".into(),
                    )));
                }
            }
        }
        let store = self.events().store.clone();
        let t2 = t.clone();
        blocking(move || store.put_trigger(&t2)).await??;
        self.activate_trigger(t.clone());
        Ok(self.trigger_view(t))
    }

    fn trigger_view(&self, trigger: Trigger) -> TriggerView {
        let next_fire = match &trigger.kind {
            TriggerKind::Cron {
                schedule, timezone, ..
            } => CronSchedule::parse(schedule, timezone)
                .ok()
                .and_then(|s| s.next_after(now_ms()))
                .map(wisp_core::event::rfc3339_ms),
            TriggerKind::Topic { .. } | TriggerKind::Object { .. } | TriggerKind::Kv { .. } => None,
        };
        TriggerView { trigger, next_fire }
    }

    /// Starts a stored trigger: a cron task, or a topic subscription.
    pub(crate) fn activate_trigger(&self, t: Trigger) {
        let key = (t.namespace.clone(), t.name.clone());
        let task = match &t.kind {
            TriggerKind::Cron {
                schedule, timezone, ..
            } => match CronSchedule::parse(schedule, timezone) {
                Ok(s) => {
                    let engine = self.clone();
                    let t2 = t.clone();
                    Some(tokio::spawn(async move { engine.cron_loop(t2, s).await }).abort_handle())
                }
                Err(e) => {
                    tracing::error!(trigger = %t.name, error = %e, "cron trigger not started");
                    None
                }
            },
            TriggerKind::Topic { topic } => {
                self.events()
                    .topics
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((t.namespace.clone(), topic.clone()));
                self.events()
                    .subs
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry((t.namespace.clone(), topic.clone()))
                    .or_default()
                    .push((t.name.clone(), t.function.clone()));
                None
            }
            // Storage triggers are found when an object or key changes.
            TriggerKind::Object { .. } | TriggerKind::Kv { .. } => None,
        };
        self.events()
            .triggers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (t, task));
    }

    pub fn list_triggers(&self, ns: &Namespace) -> Vec<TriggerView> {
        let list: Vec<Trigger> = self
            .events()
            .triggers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|(t, _)| &t.namespace == ns)
            .map(|(t, _)| t.clone())
            .collect();
        list.into_iter().map(|t| self.trigger_view(t)).collect()
    }

    pub async fn delete_trigger(
        &self,
        ns: &Namespace,
        name: &TriggerName,
    ) -> Result<(), EngineError> {
        let removed = self
            .events()
            .triggers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(ns.clone(), name.clone()));
        let Some((t, task)) = removed else {
            return Err(EngineError::TriggerNotFound {
                namespace: ns.clone(),
                name: name.clone(),
            });
        };
        if let Some(task) = task {
            task.abort();
        }
        if let TriggerKind::Topic { topic } = &t.kind
            && let Some(v) = self
                .events()
                .subs
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&(ns.clone(), topic.clone()))
        {
            v.retain(|(tn, _)| tn != name);
        }
        let store = self.events().store.clone();
        let (n, nm) = (ns.clone(), name.clone());
        blocking(move || store.delete_trigger(&n, &nm)).await??;
        Ok(())
    }

    /// An object was created or deleted: every object trigger of the
    /// bucket whose filters match gets the event through the durable queue
    /// (returns once it is queued). A write made by a function never
    /// triggers that same function (the loop guard).
    pub async fn object_changed(
        &self,
        ns: &Namespace,
        bucket: &str,
        meta: &wisp_objects::ObjectMeta,
        created: bool,
        writer: Option<&FunctionName>,
    ) -> Result<(), EngineError> {
        let what = if created {
            wisp_core::ObjectEvent::Created
        } else {
            wisp_core::ObjectEvent::Deleted
        };
        let targets = self.triggered(|t| match &t.kind {
            TriggerKind::Object {
                bucket: b,
                prefix,
                suffix,
                events,
            } => {
                &t.namespace == ns
                    && b == bucket
                    && meta.key.starts_with(prefix.as_str())
                    && meta.key.ends_with(suffix.as_str())
                    && events.contains(&what)
                    && Some(&t.function) != writer
            }
            _ => false,
        });
        if targets.is_empty() {
            return Ok(());
        }
        let data = serde_json::json!({
            "namespace": ns,
            "bucket": bucket,
            "key": meta.key,
            "size": meta.size,
            "etag": meta.etag,
            "content_type": meta.content_type,
        });
        let source = format!("/wisp/{ns}/objects/{bucket}");
        self.storage_event(ns, targets, (source, what.ce_type()), &meta.key, data)
            .await
    }

    /// The function and trigger name of every trigger that `fires` for a
    /// change.
    pub(crate) fn triggered(
        &self,
        fires: impl Fn(&Trigger) -> bool,
    ) -> Vec<(FunctionName, Option<String>)> {
        self.events()
            .triggers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|(t, _)| fires(t))
            .map(|(t, _)| (t.function.clone(), Some(t.name.to_string())))
            .collect()
    }

    /// Queues one storage event (a CloudEvent with the key as its subject
    /// and `data` as JSON) for each target.
    async fn storage_event(
        &self,
        ns: &Namespace,
        targets: Vec<(FunctionName, Option<String>)>,
        (source, ce_type): (String, &str),
        key: &str,
        data: serde_json::Value,
    ) -> Result<(), EngineError> {
        let ev = storage_cloud_event((source, ce_type), key, data);
        self.enqueue_to_functions(ns, targets, ev, Origin::Storage, None, false)
            .await
            .map(|_| ())
    }

    /// Fires a cron trigger at each tick, through the queue. The store
    /// records the last tick in the same transaction as the delivery, so a
    /// tick fires once, also across restarts.
    async fn cron_loop(self, t: Trigger, schedule: CronSchedule) {
        let TriggerKind::Cron { missed, .. } = &t.kind else {
            return;
        };
        let store = self.events().store.clone();
        let (ns, name) = (t.namespace.clone(), t.name.clone());
        let last = blocking(move || store.last_cron_tick(&ns, &name))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        let now = now_ms();
        // Never fired: the schedule starts when the trigger was created.
        let mut last = last.unwrap_or(t.created_ms.min(now));
        if let Some(next) = schedule.next_after(last)
            && next <= now
            && let Some(latest) = schedule.latest_at_or_before(now)
        {
            // Ticks were missed while the node was down.
            let fire = *missed == wisp_core::Missed::Once;
            tracing::info!(trigger = %t.name, fire, "cron ticks were missed while the node was down");
            self.cron_fire(&t, &schedule, latest, fire).await;
            last = latest;
        }
        loop {
            let Some(next) = schedule.next_after(last) else {
                tracing::info!(trigger = %t.name, "cron schedule has no further ticks");
                return;
            };
            loop {
                let wait = next - now_ms();
                if wait <= 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            if self.events().stopping.load(Ordering::Acquire) {
                return;
            }
            self.cron_fire(&t, &schedule, next, true).await;
            last = next;
        }
    }

    async fn cron_fire(&self, t: &Trigger, schedule: &CronSchedule, tick_ms: i64, fire: bool) {
        let delivery = fire.then(|| {
            Box::new(Delivery::new(
                t.namespace.clone(),
                t.function.clone(),
                Origin::Cron,
                Some(t.name.to_string()),
                schedule.tick_event(&t.namespace, &t.name, tick_ms),
            ))
        });
        let op = QueueOp::CronTick {
            namespace: t.namespace.clone(),
            trigger: t.name.clone(),
            tick_ms,
            delivery: delivery.clone(),
        };
        // In a task of its own, so that aborting the cron task (trigger
        // removed, shutdown) cannot leave a stored tick unscheduled.
        let engine = self.clone();
        let name = t.name.clone();
        let task = tokio::spawn(async move {
            match engine.events().writer.submit(vec![op]).await {
                Ok(mut r) => match r.pop() {
                    Some(Ok(QueueOpResult::CronTick(true))) => {
                        if let Some(d) = delivery {
                            engine
                                .events()
                                .counters
                                .accepted
                                .fetch_add(1, Ordering::Relaxed);
                            engine.hold_and_schedule(vec![*d]);
                        }
                    }
                    Some(Ok(_)) => {
                        tracing::debug!(trigger = %name, tick_ms, "cron tick already fired")
                    }
                    Some(Err(e)) => {
                        tracing::error!(trigger = %name, error = %e, "cron tick not stored")
                    }
                    None => {}
                },
                Err(e) => tracing::error!(trigger = %name, error = %e, "cron tick not stored"),
            }
        });
        let _ = task.await;
    }
}
