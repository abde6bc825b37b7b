//! The durable queue, dead letters, triggers and topics in their own SQLite
//! file (`events.db`, WAL mode, `synchronous = FULL`): a batch of queue
//! operations is one transaction, fsynced before the senders are told their
//! events are accepted. A separate file keeps queue commits from waiting on
//! activation writes and the other way round.

use crate::sqlite::db;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;
use wisp_core::event::{CloudEvent, DeadLetter, Delivery, Origin, Trigger, TriggerKind};
use wisp_core::{
    DeliveryId, EventStore, FunctionName, Namespace, QueueOp, QueueOpResult, StoreError, TopicName,
    TriggerName,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    function TEXT NOT NULL,
    origin TEXT NOT NULL,
    via TEXT,
    attributes TEXT NOT NULL,
    data BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    available_ms INTEGER NOT NULL,
    last_error TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    function TEXT NOT NULL,
    origin TEXT NOT NULL,
    via TEXT,
    attributes TEXT NOT NULL,
    data BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    available_ms INTEGER NOT NULL,
    last_error TEXT,
    failed_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_fn ON dead_letters (namespace, function, failed_ms);
CREATE INDEX IF NOT EXISTS dead_letters_event ON dead_letters (json_extract(attributes, '$.id'));
CREATE TABLE IF NOT EXISTS idempotency (
    namespace TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    deliveries TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, scope, key)
);
CREATE TABLE IF NOT EXISTS triggers (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    function TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS cron_state (
    namespace TEXT NOT NULL,
    trigger TEXT NOT NULL,
    last_tick_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, trigger)
);
CREATE TABLE IF NOT EXISTS topics (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);
";

const COLUMNS: &str = "id, namespace, function, origin, via, attributes, data, attempts, created_ms, available_ms, last_error";
/// Constant text, so the statement cache finds it without formatting.
const INSERT_DELIVERY: &str = "INSERT INTO deliveries (id, namespace, function, origin, via, attributes, data, attempts, created_ms, available_ms, last_error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

pub struct SqliteEvents {
    conn: Mutex<Connection>,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

type Row = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Vec<u8>,
    u32,
    i64,
    i64,
    Option<String>,
);

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn to_delivery(r: Row) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: DeliveryId::parse(&r.0).map_err(corrupt)?,
        namespace: Namespace::new(r.1).map_err(corrupt)?,
        function: FunctionName::new(r.2).map_err(corrupt)?,
        origin: Origin::parse(&r.3).ok_or_else(|| corrupt(format!("unknown origin {:?}", r.3)))?,
        via: r.4,
        event: CloudEvent::from_attributes_json(&r.5, r.6.into()).map_err(corrupt)?,
        attempts: r.7,
        created_ms: r.8,
        available_ms: r.9,
        last_error: r.10,
    })
}

fn insert_delivery(tx: &Connection, d: &Delivery) -> Result<(), StoreError> {
    tx.prepare_cached(INSERT_DELIVERY)
        .and_then(|mut s| {
            s.execute(params![
                d.id.as_str(),
                d.namespace.as_str(),
                d.function.as_str(),
                d.origin.as_str(),
                d.via,
                d.event.attributes_json(),
                &d.event.data[..],
                d.attempts,
                d.created_ms,
                d.available_ms,
                d.last_error,
            ])
        })
        .map_err(db)?;
    Ok(())
}

impl SqliteEvents {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // FULL: a commit is fsynced, so an accepted event survives an OS
        // crash too. Group commit makes that one fsync per batch.
        let conn = crate::sqlite::open_wal(path, "FULL", SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The id parameter for each statement run: `None` (all) when no ids are
/// given.
fn selected(ids: &[DeliveryId]) -> Vec<Option<&str>> {
    if ids.is_empty() {
        vec![None]
    } else {
        ids.iter().map(|i| Some(i.as_str())).collect()
    }
}

fn apply_one(tx: &Connection, op: &QueueOp, now: i64) -> Result<QueueOpResult, StoreError> {
    match op {
        QueueOp::Enqueue {
            deliveries,
            idempotency,
        } => {
            if let Some(k) = idempotency {
                let seen: Option<String> = tx
                    .query_row(
                        "SELECT deliveries FROM idempotency
                         WHERE namespace = ?1 AND scope = ?2 AND key = ?3 AND expires_ms > ?4",
                        params![k.namespace.as_str(), k.scope, k.key, now],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db)?;
                if let Some(ids) = seen {
                    let (event_id, deliveries): (String, Vec<(DeliveryId, FunctionName)>) =
                        serde_json::from_str(&ids).map_err(corrupt)?;
                    return Ok(QueueOpResult::Duplicate {
                        event_id,
                        deliveries,
                    });
                }
                let ids: Vec<(&DeliveryId, &FunctionName)> =
                    deliveries.iter().map(|d| (&d.id, &d.function)).collect();
                let event_id = deliveries
                    .first()
                    .map(|d| d.event.id.as_str())
                    .unwrap_or("");
                tx.execute(
                    "INSERT OR REPLACE INTO idempotency (namespace, scope, key, deliveries, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        k.namespace.as_str(),
                        k.scope,
                        k.key,
                        serde_json::to_string(&(event_id, ids)).map_err(corrupt)?,
                        k.expires_ms
                    ],
                )
                .map_err(db)?;
            }
            for d in deliveries {
                insert_delivery(tx, d)?;
            }
            Ok(QueueOpResult::Enqueued)
        }
        QueueOp::Ack(id) => {
            tx.prepare_cached("DELETE FROM deliveries WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id.as_str()]))
                .map_err(db)?;
            Ok(QueueOpResult::Done)
        }
        QueueOp::Retry {
            id,
            attempts,
            available_ms,
            error,
        } => {
            tx.prepare_cached(
                "UPDATE deliveries SET attempts = ?2, available_ms = ?3, last_error = ?4 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id.as_str(), attempts, available_ms, error]))
            .map_err(db)?;
            Ok(QueueOpResult::Done)
        }
        QueueOp::DeadLetter {
            id,
            attempts,
            error,
            failed_ms,
        } => {
            tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO dead_letters ({COLUMNS}, failed_ms)
                 SELECT id, namespace, function, origin, via, attributes, data, ?2, created_ms, available_ms, ?3, ?4
                 FROM deliveries WHERE id = ?1"
            ))
            .and_then(|mut s| s.execute(params![id.as_str(), attempts, error, failed_ms]))
            .map_err(db)?;
            tx.prepare_cached("DELETE FROM deliveries WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id.as_str()]))
                .map_err(db)?;
            Ok(QueueOpResult::Done)
        }
        QueueOp::CronTick {
            namespace,
            trigger,
            tick_ms,
            delivery,
        } => {
            let last: Option<i64> = tx
                .query_row(
                    "SELECT last_tick_ms FROM cron_state WHERE namespace = ?1 AND trigger = ?2",
                    params![namespace.as_str(), trigger.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            if last.is_some_and(|l| l >= *tick_ms) {
                return Ok(QueueOpResult::CronTick(false));
            }
            tx.execute(
                "INSERT OR REPLACE INTO cron_state (namespace, trigger, last_tick_ms) VALUES (?1, ?2, ?3)",
                params![namespace.as_str(), trigger.as_str(), tick_ms],
            )
            .map_err(db)?;
            if let Some(d) = delivery {
                insert_delivery(tx, d)?;
            }
            Ok(QueueOpResult::CronTick(delivery.is_some()))
        }
    }
}

impl EventStore for SqliteEvents {
    fn apply(&self, ops: &[QueueOp]) -> Result<Vec<Result<QueueOpResult, StoreError>>, StoreError> {
        let now = wisp_core::time::now_ms();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            // An operation fails only when the database does (ids are
            // unique by construction), and then the whole batch is not
            // stored: no savepoint per operation on the hot path.
            results.push(Ok(apply_one(&tx, op, now)?));
        }
        tx.commit().map_err(db)?;
        Ok(results)
    }

    fn pending(&self) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM deliveries ORDER BY available_ms, id"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map([], read_row)
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        rows.into_iter().map(to_delivery).collect()
    }

    fn dead_letters(
        &self,
        ns: &Namespace,
        function: Option<&FunctionName>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, failed_ms FROM dead_letters
                 WHERE namespace = ?1 AND (?2 IS NULL OR function = ?2)
                 ORDER BY failed_ms DESC, id DESC LIMIT ?3"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map(
                params![
                    ns.as_str(),
                    function.map(|f| f.as_str()),
                    limit.max(1) as i64
                ],
                |r| Ok((read_row(r)?, r.get::<_, i64>(11)?)),
            )
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        rows.into_iter()
            .map(|(row, failed_ms)| {
                Ok(DeadLetter {
                    delivery: to_delivery(row)?,
                    failed_ms,
                })
            })
            .collect()
    }

    fn replay_dead_letters(
        &self,
        ns: &Namespace,
        ids: &[DeliveryId],
        function: Option<&FunctionName>,
        now_ms: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let mut rows = Vec::new();
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM dead_letters
                     WHERE namespace = ?1 AND (?2 IS NULL OR id = ?2) AND (?3 IS NULL OR function = ?3)"
                ))
                .map_err(db)?;
            for id in selected(ids) {
                let found = stmt
                    .query_map(
                        params![ns.as_str(), id, function.map(|f| f.as_str())],
                        read_row,
                    )
                    .map_err(db)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db)?;
                rows.extend(found);
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut d = to_delivery(row)?;
            d.attempts = 0;
            d.available_ms = now_ms;
            // A replayed event is young again: its age counts from now.
            d.created_ms = now_ms;
            tx.execute(
                "DELETE FROM dead_letters WHERE id = ?1",
                params![d.id.as_str()],
            )
            .map_err(db)?;
            insert_delivery(&tx, &d)?;
            out.push(d);
        }
        tx.commit().map_err(db)?;
        Ok(out)
    }

    fn delete_namespace_events(&self, ns: &Namespace) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let mut n = 0;
        for table in ["deliveries", "dead_letters", "idempotency", "cron_state"] {
            let k = tx
                .execute(
                    &format!("DELETE FROM {table} WHERE namespace = ?1"),
                    params![ns.as_str()],
                )
                .map_err(db)?;
            if matches!(table, "deliveries" | "dead_letters") {
                n += k as u64;
            }
        }
        tx.commit().map_err(db)?;
        Ok(n)
    }

    fn delete_dead_letters(
        &self,
        ns: &Namespace,
        ids: &[DeliveryId],
        function: Option<&FunctionName>,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "DELETE FROM dead_letters
                     WHERE namespace = ?1 AND (?2 IS NULL OR id = ?2) AND (?3 IS NULL OR function = ?3)",
                )
                .map_err(db)?;
            for id in selected(ids) {
                n += stmt
                    .execute(params![ns.as_str(), id, function.map(|f| f.as_str())])
                    .map_err(db)? as u64;
            }
        }
        tx.commit().map_err(db)?;
        Ok(n)
    }

    fn find_delivery(&self, id: &DeliveryId) -> Result<Option<(Delivery, bool)>, StoreError> {
        let conn = self.conn();
        for (table, dead) in [("deliveries", false), ("dead_letters", true)] {
            let row = conn
                .query_row(
                    &format!("SELECT {COLUMNS} FROM {table} WHERE id = ?1"),
                    params![id.as_str()],
                    read_row,
                )
                .optional()
                .map_err(db)?;
            if let Some(r) = row {
                return Ok(Some((to_delivery(r)?, dead)));
            }
        }
        Ok(None)
    }

    fn deliveries_of_event(
        &self,
        ns: &Namespace,
        event_id: &str,
    ) -> Result<Vec<(Delivery, bool)>, StoreError> {
        let conn = self.conn();
        let mut out = Vec::new();
        for (table, dead) in [("deliveries", false), ("dead_letters", true)] {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM {table}
                     WHERE namespace = ?1 AND json_extract(attributes, '$.id') = ?2"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(params![ns.as_str(), event_id], read_row)
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            for r in rows {
                out.push((to_delivery(r)?, dead));
            }
        }
        Ok(out)
    }

    fn put_trigger(&self, t: &Trigger) -> Result<(), StoreError> {
        let kind = serde_json::to_string(&t.kind).map_err(corrupt)?;
        let conn = self.conn();
        conn.execute(
            "INSERT OR REPLACE INTO triggers (namespace, name, function, kind, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![t.namespace.as_str(), t.name.as_str(), t.function.as_str(), kind, t.created_ms],
        )
        .map_err(db)?;
        // A trigger made under the name of a removed one starts its
        // schedule afresh, whatever state was left behind.
        conn.execute(
            "DELETE FROM cron_state WHERE namespace = ?1 AND trigger = ?2",
            params![t.namespace.as_str(), t.name.as_str()],
        )
        .map_err(db)?;
        Ok(())
    }

    fn delete_trigger(&self, ns: &Namespace, name: &TriggerName) -> Result<bool, StoreError> {
        let conn = self.conn();
        let n = conn
            .execute(
                "DELETE FROM triggers WHERE namespace = ?1 AND name = ?2",
                params![ns.as_str(), name.as_str()],
            )
            .map_err(db)?;
        conn.execute(
            "DELETE FROM cron_state WHERE namespace = ?1 AND trigger = ?2",
            params![ns.as_str(), name.as_str()],
        )
        .map_err(db)?;
        Ok(n > 0)
    }

    fn list_triggers(&self) -> Result<Vec<Trigger>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT namespace, name, function, kind, created_ms FROM triggers ORDER BY namespace, name")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        rows.into_iter()
            .map(|(ns, name, function, kind, created_ms)| {
                Ok(Trigger {
                    namespace: Namespace::new(ns).map_err(corrupt)?,
                    name: TriggerName::new(name).map_err(corrupt)?,
                    function: FunctionName::new(function).map_err(corrupt)?,
                    kind: serde_json::from_str::<TriggerKind>(&kind).map_err(corrupt)?,
                    created_ms,
                })
            })
            .collect()
    }

    fn last_cron_tick(
        &self,
        ns: &Namespace,
        name: &TriggerName,
    ) -> Result<Option<i64>, StoreError> {
        self.conn()
            .query_row(
                "SELECT last_tick_ms FROM cron_state WHERE namespace = ?1 AND trigger = ?2",
                params![ns.as_str(), name.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)
    }

    fn put_topic(&self, ns: &Namespace, topic: &TopicName) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO topics (namespace, name, created_ms) VALUES (?1, ?2, ?3)",
                params![ns.as_str(), topic.as_str(), wisp_core::time::now_ms()],
            )
            .map_err(db)?;
        Ok(n > 0)
    }

    fn delete_topic(&self, ns: &Namespace, topic: &TopicName) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM topics WHERE namespace = ?1 AND name = ?2",
                params![ns.as_str(), topic.as_str()],
            )
            .map_err(db)?;
        Ok(n > 0)
    }

    fn list_topics(&self) -> Result<Vec<(Namespace, TopicName)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT namespace, name FROM topics ORDER BY namespace, name")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        rows.into_iter()
            .map(|(ns, t)| {
                Ok((
                    Namespace::new(ns).map_err(corrupt)?,
                    TopicName::new(t).map_err(corrupt)?,
                ))
            })
            .collect()
    }

    fn prune_idempotency(&self, now_ms: i64) -> Result<u64, StoreError> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM idempotency WHERE expires_ms <= ?1",
                params![now_ms],
            )
            .map_err(db)?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_core::IdempotencyKey;

    fn temp() -> (SqliteEvents, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("wisp-ev-{}", DeliveryId::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        (SqliteEvents::open(&dir.join("events.db")).unwrap(), dir)
    }

    fn delivery(f: &str) -> Delivery {
        let mut ev = CloudEvent::new("ev-1", "/test", "t");
        ev.data = bytes::Bytes::from_static(b"payload");
        Delivery {
            id: DeliveryId::generate(),
            namespace: Namespace::default(),
            function: FunctionName::new(f).unwrap(),
            origin: Origin::Async,
            via: None,
            event: ev,
            attempts: 0,
            created_ms: 1,
            available_ms: 1,
            last_error: None,
        }
    }

    fn ok(r: Vec<Result<QueueOpResult, StoreError>>) -> Vec<QueueOpResult> {
        r.into_iter().map(|r| r.unwrap()).collect()
    }

    #[test]
    fn queue_retry_dead_letter_replay_and_reopen() {
        let (s, dir) = temp();
        let (a, b) = (delivery("f"), delivery("g"));
        let r = ok(s
            .apply(&[QueueOp::Enqueue {
                deliveries: vec![a.clone(), b.clone()],
                idempotency: None,
            }])
            .unwrap());
        assert_eq!(r, vec![QueueOpResult::Enqueued]);
        s.apply(&[
            QueueOp::Ack(b.id.clone()),
            QueueOp::Retry {
                id: a.id.clone(),
                attempts: 1,
                available_ms: 99,
                error: "boom".into(),
            },
        ])
        .unwrap();
        drop(s);
        let s = SqliteEvents::open(&dir.join("events.db")).unwrap();
        let pending = s.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].attempts, 1);
        assert_eq!(&pending[0].event.data[..], b"payload");
        s.apply(&[QueueOp::DeadLetter {
            id: a.id.clone(),
            attempts: 3,
            error: "still boom".into(),
            failed_ms: 5,
        }])
        .unwrap();
        assert!(s.pending().unwrap().is_empty());
        let dl = s.dead_letters(&Namespace::default(), None, 10).unwrap();
        assert_eq!(dl.len(), 1);
        assert_eq!(dl[0].delivery.attempts, 3);
        assert_eq!(dl[0].delivery.last_error.as_deref(), Some("still boom"));
        let back = s
            .replay_dead_letters(&Namespace::default(), &[], None, 7)
            .unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].attempts, 0);
        assert_eq!(s.pending().unwrap().len(), 1);
        assert!(
            s.dead_letters(&Namespace::default(), None, 10)
                .unwrap()
                .is_empty()
        );
        // Dead again, then deleted for good.
        s.apply(&[QueueOp::DeadLetter {
            id: a.id.clone(),
            attempts: 1,
            error: "x".into(),
            failed_ms: 9,
        }])
        .unwrap();
        let other = FunctionName::new("other").unwrap();
        let ns = Namespace::default();
        assert_eq!(s.delete_dead_letters(&ns, &[], Some(&other)).unwrap(), 0);
        assert_eq!(
            s.delete_dead_letters(&ns, std::slice::from_ref(&a.id), None)
                .unwrap(),
            1
        );
        assert!(s.dead_letters(&ns, None, 10).unwrap().is_empty());
    }

    #[test]
    fn idempotency_and_cron_ticks() {
        let (s, _dir) = temp();
        let key = IdempotencyKey {
            namespace: Namespace::default(),
            scope: "function:f".into(),
            key: "k1".into(),
            expires_ms: i64::MAX,
        };
        let a = delivery("f");
        let op = |d: &Delivery| QueueOp::Enqueue {
            deliveries: vec![d.clone()],
            idempotency: Some(key.clone()),
        };
        assert_eq!(
            ok(s.apply(&[op(&a)]).unwrap()),
            vec![QueueOpResult::Enqueued]
        );
        assert_eq!(
            ok(s.apply(&[op(&delivery("f"))]).unwrap()),
            vec![QueueOpResult::Duplicate {
                event_id: "ev-1".into(),
                deliveries: vec![(a.id.clone(), a.function.clone())]
            }]
        );
        assert_eq!(s.pending().unwrap().len(), 1);

        let trigger = TriggerName::new("every").unwrap();
        let tick = |ms| QueueOp::CronTick {
            namespace: Namespace::default(),
            trigger: trigger.clone(),
            tick_ms: ms,
            delivery: Some(Box::new(delivery("f"))),
        };
        let r = ok(s.apply(&[tick(1000), tick(1000), tick(2000)]).unwrap());
        assert_eq!(
            r,
            vec![
                QueueOpResult::CronTick(true),
                QueueOpResult::CronTick(false),
                QueueOpResult::CronTick(true)
            ]
        );
        assert_eq!(s.pending().unwrap().len(), 3);
        assert_eq!(
            s.last_cron_tick(&Namespace::default(), &trigger).unwrap(),
            Some(2000)
        );
    }
}
