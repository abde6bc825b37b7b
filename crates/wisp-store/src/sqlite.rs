//! The registry and the activation log in one SQLite file (WAL mode).
//! All SQL of the embedded backend lives in this module.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;
use wisp_core::activation::{EventRef, Outcome};
use wisp_core::time::now_ms;
use wisp_core::{
    Activation, ActivationFilter, ActivationId, ActivationStore, DeliveryId, Digest, FunctionName,
    FunctionRecord, FunctionSpec, Namespace, Registry, StoreError, UsageRow,
};

pub struct SqliteStore {
    conn: Mutex<Connection>,
    pub(crate) secret_key: Option<crate::secrets::SecretKey>,
}

pub(crate) fn db(e: rusqlite::Error) -> StoreError {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        return StoreError::Full(format!("database: {e}"));
    }
    StoreError::Db(e.to_string())
}

/// Opens a database file in WAL mode with `synchronous` as given, a busy
/// timeout, and `schema` applied.
pub(crate) fn open_wal(
    path: &Path,
    synchronous: &str,
    schema: &str,
) -> Result<Connection, StoreError> {
    // 0600 before SQLite opens it (its -wal and -shm files get the same
    // mode), and again after, for files left by an older node.
    let private = |p: &Path| wisp_core::durable::private_sqlite(p).map_err(|e| crate::io_err(p, e));
    private(path)?;
    let conn = Connection::open(path).map_err(db)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(db)?;
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(db)?;
    conn.pragma_update(None, "busy_timeout", 5000).map_err(db)?;
    conn.execute_batch(schema).map_err(db)?;
    private(path)?;
    Ok(conn)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS functions (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS versions (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    artifact TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, name, version)
);
CREATE TABLE IF NOT EXISTS activations (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    function TEXT NOT NULL,
    version INTEGER NOT NULL,
    artifact TEXT NOT NULL,
    trigger TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    billed_ms INTEGER NOT NULL,
    memory_mb INTEGER NOT NULL,
    gb_seconds REAL NOT NULL,
    outcome TEXT NOT NULL,
    cold INTEGER NOT NULL,
    status INTEGER NOT NULL,
    logs TEXT NOT NULL,
    logs_truncated INTEGER NOT NULL,
    error TEXT,
    delivery_id TEXT,
    event_id TEXT,
    attempt INTEGER
);
CREATE INDEX IF NOT EXISTS activations_fn ON activations (namespace, function, start_ms);
CREATE INDEX IF NOT EXISTS activations_start ON activations (start_ms);
";

/// Added after the first release: created on databases that lack them.
const ACTIVATION_EVENT_COLUMNS: &str = "
ALTER TABLE activations ADD COLUMN delivery_id TEXT;
ALTER TABLE activations ADD COLUMN event_id TEXT;
ALTER TABLE activations ADD COLUMN attempt INTEGER;
";
const ACTIVATION_EVENT_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS activations_delivery ON activations (delivery_id) WHERE delivery_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS activations_event ON activations (event_id) WHERE event_id IS NOT NULL;
";

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // NORMAL in WAL mode: a commit survives a process crash; only an OS
        // crash may lose the last transactions. Deploys use FULL explicitly.
        let conn = open_wal(path, "NORMAL", SCHEMA)?;
        let has_event_columns: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('activations') WHERE name = 'delivery_id'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(db)?
            > 0;
        if !has_event_columns {
            conn.execute_batch(ACTIVATION_EVENT_COLUMNS).map_err(db)?;
        }
        conn.execute_batch(ACTIVATION_EVENT_INDEXES).map_err(db)?;
        conn.execute_batch(crate::tenants::SCHEMA).map_err(db)?;
        Ok(Self {
            conn: Mutex::new(conn),
            secret_key: None,
        })
    }

    /// Encrypts secrets with `key` (without one, secrets cannot be stored).
    pub fn with_secret_key(mut self, key: crate::secrets::SecretKey) -> Self {
        self.secret_key = Some(key);
        self
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: SQLite
        // rolls back an unfinished transaction on the next statement.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn record_from_row(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, String, u32, String, String, i64, i64)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn to_record(
    r: (String, String, u32, String, String, i64, i64),
) -> Result<FunctionRecord, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(e.to_string());
    Ok(FunctionRecord {
        namespace: Namespace::new(r.0).map_err(|e| corrupt(&e))?,
        name: FunctionName::new(r.1).map_err(|e| corrupt(&e))?,
        version: r.2,
        artifact: Digest::parse(&r.3).map_err(|e| corrupt(&e))?,
        spec: serde_json::from_str::<FunctionSpec>(&r.4).map_err(|e| corrupt(&e))?,
        created_at: r.5,
        updated_at: r.6,
    })
}

const SELECT_FUNCTION: &str =
    "SELECT f.namespace, f.name, v.version, v.artifact, v.spec, f.created_at, v.created_at
     FROM functions f JOIN versions v
       ON v.namespace = f.namespace AND v.name = f.name AND v.version = f.current_version";

impl Registry for SqliteStore {
    fn put_function(
        &self,
        ns: &Namespace,
        name: &FunctionName,
        artifact: &Digest,
        spec: &FunctionSpec,
    ) -> Result<FunctionRecord, StoreError> {
        let spec_json =
            serde_json::to_string(spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let now = now_ms();
        let mut conn = self.conn();
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        let result = (|| {
            let tx = conn.transaction().map_err(db)?;
            let existing: Option<(u32, i64)> = tx
                .query_row(
                    "SELECT current_version, created_at FROM functions WHERE namespace = ?1 AND name = ?2",
                    params![ns.as_str(), name.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            let max_version: u32 = tx
                .query_row(
                    "SELECT COALESCE(MAX(version), 0) FROM versions WHERE namespace = ?1 AND name = ?2",
                    params![ns.as_str(), name.as_str()],
                    |r| r.get(0),
                )
                .map_err(db)?;
            let version = max_version + 1;
            let created_at = existing.map(|e| e.1).unwrap_or(now);
            tx.execute(
                "INSERT INTO versions (namespace, name, version, artifact, spec, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![ns.as_str(), name.as_str(), version, artifact.as_str(), spec_json, now],
            )
            .map_err(db)?;
            tx.execute(
                "INSERT INTO functions (namespace, name, current_version, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (namespace, name) DO UPDATE SET current_version = excluded.current_version",
                params![ns.as_str(), name.as_str(), version, created_at],
            )
            .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(FunctionRecord {
                namespace: ns.clone(),
                name: name.clone(),
                version,
                artifact: artifact.clone(),
                spec: spec.clone(),
                created_at,
                updated_at: now,
            })
        })();
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        result
    }

    fn get_function(
        &self,
        ns: &Namespace,
        name: &FunctionName,
    ) -> Result<FunctionRecord, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("{SELECT_FUNCTION} WHERE f.namespace = ?1 AND f.name = ?2"),
                params![ns.as_str(), name.as_str()],
                record_from_row,
            )
            .optional()
            .map_err(db)?;
        match row {
            Some(r) => to_record(r),
            None => Err(StoreError::FunctionNotFound {
                namespace: ns.clone(),
                name: name.clone(),
            }),
        }
    }

    fn list_functions(&self, ns: Option<&Namespace>) -> Result<Vec<FunctionRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "{SELECT_FUNCTION} WHERE (?1 IS NULL OR f.namespace = ?1) ORDER BY f.namespace, f.name"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map(params![ns.map(|n| n.as_str())], record_from_row)
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        rows.into_iter().map(to_record).collect()
    }

    fn version_artifacts(&self, ns: Option<&Namespace>) -> Result<Vec<Digest>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT DISTINCT artifact FROM versions WHERE ?1 IS NULL OR namespace = ?1")
            .map_err(db)?;
        let rows = stmt
            .query_map(params![ns.map(|n| n.as_str())], |r| r.get::<_, String>(0))
            .map_err(db)?;
        rows.map(|r| Digest::parse(&r.map_err(db)?).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }

    fn delete_function(&self, ns: &Namespace, name: &FunctionName) -> Result<(), StoreError> {
        // Deletes still work on a full disk: they may use the reserve.
        wisp_core::reserve::deleting(StoreError::is_full, || self.delete_function_once(ns, name))
    }
}

impl SqliteStore {
    fn delete_function_once(&self, ns: &Namespace, name: &FunctionName) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let n = tx
            .execute(
                "DELETE FROM functions WHERE namespace = ?1 AND name = ?2",
                params![ns.as_str(), name.as_str()],
            )
            .map_err(db)?;
        tx.execute(
            "DELETE FROM versions WHERE namespace = ?1 AND name = ?2",
            params![ns.as_str(), name.as_str()],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        if n == 0 {
            return Err(StoreError::FunctionNotFound {
                namespace: ns.clone(),
                name: name.clone(),
            });
        }
        Ok(())
    }
}

const ACTIVATION_COLUMNS: &str = "id, namespace, function, version, artifact, trigger, start_ms, duration_us, billed_ms, memory_mb, gb_seconds, outcome, cold, status, logs, logs_truncated, error, delivery_id, event_id, attempt";

fn activation_from_row(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<Activation, StoreError>> {
    let id: String = row.get(0)?;
    let ns: String = row.get(1)?;
    let function: String = row.get(2)?;
    let artifact: String = row.get(4)?;
    let outcome: String = row.get(11)?;
    let delivery: Option<String> = row.get(17)?;
    let event_id: Option<String> = row.get(18)?;
    let attempt: Option<u32> = row.get(19)?;
    let base = (|| {
        let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(e.to_string());
        Ok::<_, StoreError>((
            ActivationId::parse(&id).map_err(|e| corrupt(&e))?,
            Namespace::new(ns).map_err(|e| corrupt(&e))?,
            FunctionName::new(function).map_err(|e| corrupt(&e))?,
            Digest::parse(&artifact).map_err(|e| corrupt(&e))?,
            Outcome::parse(&outcome)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown outcome {outcome:?}")))?,
            match delivery {
                Some(d) => Some(EventRef {
                    delivery_id: DeliveryId::parse(&d).map_err(|e| corrupt(&e))?,
                    event_id: event_id.unwrap_or_default(),
                    attempt: attempt.unwrap_or(1),
                }),
                None => None,
            },
        ))
    })();
    let (id, namespace, function, artifact, outcome, event) = match base {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(Activation {
        id,
        namespace,
        function,
        version: row.get(3)?,
        artifact,
        trigger: row.get(5)?,
        start_ms: row.get(6)?,
        duration_us: row.get::<_, i64>(7)? as u64,
        billed_ms: row.get::<_, i64>(8)? as u64,
        memory_mb: row.get(9)?,
        gb_seconds: row.get(10)?,
        outcome,
        cold: row.get(12)?,
        status: row.get(13)?,
        logs: row.get(14)?,
        logs_truncated: row.get(15)?,
        error: row.get(16)?,
        event,
    }))
}

pub(crate) fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

impl ActivationStore for SqliteStore {
    fn insert_activations(&self, batch: &[Activation]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT OR REPLACE INTO activations ({ACTIVATION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
                ))
                .map_err(db)?;
            for a in batch {
                stmt.execute(params![
                    a.id.as_str(),
                    a.namespace.as_str(),
                    a.function.as_str(),
                    a.version,
                    a.artifact.as_str(),
                    a.trigger,
                    a.start_ms,
                    a.duration_us as i64,
                    a.billed_ms as i64,
                    a.memory_mb,
                    a.gb_seconds,
                    a.outcome.as_str(),
                    a.cold,
                    a.status,
                    a.logs,
                    a.logs_truncated,
                    a.error,
                    a.event.as_ref().map(|e| e.delivery_id.as_str()),
                    a.event.as_ref().map(|e| e.event_id.as_str()),
                    a.event.as_ref().map(|e| e.attempt),
                ])
                .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    fn get_activation(&self, id: &ActivationId) -> Result<Activation, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {ACTIVATION_COLUMNS} FROM activations WHERE id = ?1"),
                params![id.as_str()],
                activation_from_row,
            )
            .optional()
            .map_err(db)?;
        match row {
            Some(r) => r,
            None => Err(StoreError::ActivationNotFound(id.clone())),
        }
    }

    fn list_activations(&self, f: &ActivationFilter) -> Result<Vec<Activation>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {ACTIVATION_COLUMNS} FROM activations
                 WHERE (?1 IS NULL OR namespace = ?1) AND (?2 IS NULL OR function = ?2) AND start_ms >= ?3
                   AND (?5 IS NULL OR delivery_id = ?5) AND (?6 IS NULL OR event_id = ?6)
                 ORDER BY id DESC LIMIT ?4"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map(
                params![
                    f.namespace.as_ref().map(|n| n.as_str()),
                    f.function.as_ref().map(|n| n.as_str()),
                    f.since_ms.unwrap_or(0),
                    f.limit.max(1) as i64,
                    f.delivery.as_ref().map(|d| d.as_str()),
                    f.event_id.as_deref(),
                ],
                activation_from_row,
            )
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        rows.into_iter().collect()
    }

    fn usage(&self, ns: Option<&Namespace>, since_ms: i64) -> Result<Vec<UsageRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT namespace, function, duration_us, outcome, cold, billed_ms, gb_seconds FROM activations
                 WHERE (?1 IS NULL OR namespace = ?1) AND start_ms >= ?2
                 ORDER BY namespace, function",
            )
            .map_err(db)?;
        let mut rows = stmt
            .query(params![ns.map(|n| n.as_str()), since_ms])
            .map_err(db)?;
        let mut out: Vec<(UsageRow, Vec<u64>)> = Vec::new();
        while let Some(r) = rows.next().map_err(db)? {
            let ns: String = r.get(0).map_err(db)?;
            let function: String = r.get(1).map_err(db)?;
            let dur: i64 = r.get(2).map_err(db)?;
            let outcome: String = r.get(3).map_err(db)?;
            let cold: bool = r.get(4).map_err(db)?;
            let billed: i64 = r.get(5).map_err(db)?;
            let gbs: f64 = r.get(6).map_err(db)?;
            let same = out.last().is_some_and(|(u, _)| {
                u.namespace.as_str() == ns && u.function.as_str() == function
            });
            if !same {
                let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(e.to_string());
                out.push((
                    UsageRow {
                        namespace: Namespace::new(ns).map_err(|e| corrupt(&e))?,
                        function: FunctionName::new(function).map_err(|e| corrupt(&e))?,
                        invocations: 0,
                        errors: 0,
                        throttled: 0,
                        cold_starts: 0,
                        p50_ms: 0.0,
                        p99_ms: 0.0,
                        billed_ms: 0,
                        gb_seconds: 0.0,
                    },
                    Vec::new(),
                ));
            }
            let (u, durs) = out.last_mut().expect("pushed above when empty");
            u.invocations += 1;
            if outcome == "throttled" {
                u.throttled += 1;
            } else {
                if outcome != "success" {
                    u.errors += 1;
                }
                durs.push(dur as u64);
            }
            u.cold_starts += cold as u64;
            u.billed_ms += billed as u64;
            u.gb_seconds += gbs;
        }
        Ok(out
            .into_iter()
            .map(|(mut u, mut durs)| {
                durs.sort_unstable();
                u.p50_ms = percentile(&durs, 50.0);
                u.p99_ms = percentile(&durs, 99.0);
                u
            })
            .collect())
    }

    fn delete_namespace_activations(&self, ns: &Namespace) -> Result<u64, StoreError> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM activations WHERE namespace = ?1",
                params![ns.as_str()],
            )
            .map_err(db)?;
        Ok(n as u64)
    }

    fn prune_activations(&self, max_count: u64, min_start_ms: i64) -> Result<u64, StoreError> {
        let conn = self.conn();
        let mut n = conn
            .execute(
                "DELETE FROM activations WHERE start_ms < ?1",
                params![min_start_ms],
            )
            .map_err(db)? as u64;
        n += conn
            .execute(
                "DELETE FROM activations WHERE id <= (SELECT id FROM activations ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                params![max_count as i64],
            )
            .map_err(db)? as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_core::activation::{billed_ms, gb_seconds};

    fn temp_db() -> (SqliteStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("wisp-sql-{}", ActivationId::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        (SqliteStore::open(&dir.join("wisp.db")).unwrap(), dir)
    }

    fn act(name: &str, dur_us: u64, outcome: Outcome) -> Activation {
        let billed = billed_ms(dur_us);
        Activation {
            id: ActivationId::generate(),
            namespace: Namespace::default(),
            function: FunctionName::new(name).unwrap(),
            version: 1,
            artifact: Digest::of(b"x"),
            trigger: "http".into(),
            start_ms: now_ms(),
            duration_us: dur_us,
            billed_ms: billed,
            memory_mb: 128,
            gb_seconds: gb_seconds(128, billed),
            outcome,
            cold: false,
            status: 200,
            logs: "hi\n".into(),
            logs_truncated: false,
            error: None,
            event: None,
        }
    }

    #[test]
    fn functions_get_versions_and_survive_reopen() {
        let (s, dir) = temp_db();
        let ns = Namespace::default();
        let name = FunctionName::new("hello").unwrap();
        let d = Digest::of(b"a");
        let r1 = s
            .put_function(&ns, &name, &d, &FunctionSpec::default())
            .unwrap();
        let r2 = s
            .put_function(
                &ns,
                &name,
                &d,
                &FunctionSpec {
                    memory_mb: 64,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!((r1.version, r2.version), (1, 2));
        assert_eq!(r2.created_at, r1.created_at);
        drop(s);
        let s = SqliteStore::open(&dir.join("wisp.db")).unwrap();
        let got = s.get_function(&ns, &name).unwrap();
        assert_eq!(got.version, 2);
        assert_eq!(got.spec.memory_mb, 64);
        assert_eq!(s.list_functions(None).unwrap().len(), 1);
        s.delete_function(&ns, &name).unwrap();
        assert!(matches!(
            s.get_function(&ns, &name),
            Err(StoreError::FunctionNotFound { .. })
        ));
        assert!(s.delete_function(&ns, &name).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn activations_usage_and_retention() {
        let (s, dir) = temp_db();
        let mut batch = Vec::new();
        for i in 1..=100u64 {
            batch.push(act("a", i * 1000, Outcome::Success));
        }
        batch.push(act("a", 5000, Outcome::Timeout));
        batch.push(act("b", 1500, Outcome::Success));
        s.insert_activations(&batch).unwrap();
        let got = s.get_activation(&batch[0].id).unwrap();
        assert_eq!(got, batch[0]);
        let usage = s.usage(None, 0).unwrap();
        assert_eq!(usage.len(), 2);
        let a = &usage[0];
        assert_eq!((a.invocations, a.errors), (101, 1));
        assert!((a.p50_ms - 50.0).abs() < 1.01, "p50 {}", a.p50_ms);
        assert!((a.p99_ms - 99.0).abs() < 1.01, "p99 {}", a.p99_ms);
        assert_eq!(usage[1].billed_ms, 2);
        let listed = s
            .list_activations(&ActivationFilter {
                function: Some(FunctionName::new("b").unwrap()),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(listed.len(), 1);
        let removed = s.prune_activations(10, 0).unwrap();
        assert_eq!(removed, 92);
        assert_eq!(
            s.list_activations(&ActivationFilter {
                limit: 1000,
                ..Default::default()
            })
            .unwrap()
            .len(),
            10
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
