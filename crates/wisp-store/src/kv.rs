//! The key-value store's data in SQLite (`<data-dir>/kv.db`, WAL mode).
//!
//! `synchronous = NORMAL`: a commit is in the WAL (the OS's page cache)
//! when it returns, so an acknowledged write survives the node being
//! killed; an OS crash or power loss may lose the last commits. Fsyncing
//! every write would put a disk flush on every `set` from a function.

use crate::sqlite::db;
use rusqlite::{Connection, params};
use std::path::Path;
use std::sync::Mutex;
use wisp_core::Namespace;
use wisp_core::StoreError;
use wisp_core::kv::{KvOp, KvSnapshot, KvStore};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv_buckets (
    namespace TEXT NOT NULL,
    bucket    TEXT NOT NULL,
    PRIMARY KEY (namespace, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    bucket    TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BLOB NOT NULL,
    PRIMARY KEY (namespace, bucket, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv_events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    id     TEXT NOT NULL UNIQUE,
    record BLOB NOT NULL
);
";

pub struct SqliteKv {
    conn: Mutex<Connection>,
}

impl SqliteKv {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = crate::sqlite::open_wal(path, "NORMAL", SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }
}

fn ns(s: String) -> Result<Namespace, StoreError> {
    Namespace::new(&s).map_err(|e| StoreError::Db(format!("stored namespace {s:?}: {e}")))
}

impl KvStore for SqliteKv {
    fn kv_load(&self) -> Result<KvSnapshot, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut snap = KvSnapshot::default();
        let mut q = conn
            .prepare("SELECT namespace, bucket FROM kv_buckets")
            .map_err(db)?;
        let rows = q
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(db)?;
        for row in rows {
            let (n, b) = row.map_err(db)?;
            snap.buckets.push((ns(n)?, b));
        }
        let mut q = conn
            .prepare("SELECT namespace, bucket, key, value FROM kv")
            .map_err(db)?;
        let rows = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .map_err(db)?;
        for row in rows {
            let (n, b, k, v) = row.map_err(db)?;
            snap.entries.push((ns(n)?, b, k, v));
        }
        let mut q = conn
            .prepare("SELECT id, record FROM kv_events ORDER BY seq")
            .map_err(db)?;
        let rows = q
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(db)?;
        for row in rows {
            snap.events.push(row.map_err(db)?);
        }
        Ok(snap)
    }

    fn kv_apply(&self, ops: &[KvOp]) -> Result<(), StoreError> {
        // Deletes still work on a full disk: they may use the reserve.
        if ops.iter().all(KvOp::removes) {
            return wisp_core::reserve::deleting(StoreError::is_full, || self.apply(ops));
        }
        self.apply(ops)
    }
}

impl SqliteKv {
    fn apply(&self, ops: &[KvOp]) -> Result<(), StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().map_err(db)?;
        for op in ops {
            match op {
                KvOp::CreateBucket { namespace, bucket } => {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO kv_buckets (namespace, bucket) VALUES (?1, ?2)",
                    )
                    .and_then(|mut s| s.execute(params![namespace.as_str(), bucket]))
                    .map_err(db)?;
                }
                KvOp::DeleteBucket { namespace, bucket } => {
                    tx.prepare_cached("DELETE FROM kv WHERE namespace = ?1 AND bucket = ?2")
                        .and_then(|mut s| s.execute(params![namespace.as_str(), bucket]))
                        .map_err(db)?;
                    tx.prepare_cached(
                        "DELETE FROM kv_buckets WHERE namespace = ?1 AND bucket = ?2",
                    )
                    .and_then(|mut s| s.execute(params![namespace.as_str(), bucket]))
                    .map_err(db)?;
                }
                KvOp::Set {
                    namespace,
                    bucket,
                    key,
                    value,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO kv (namespace, bucket, key, value) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (namespace, bucket, key) DO UPDATE SET value = excluded.value",
                    )
                    .and_then(|mut s| s.execute(params![namespace.as_str(), bucket, key, value]))
                    .map_err(db)?;
                }
                KvOp::Delete {
                    namespace,
                    bucket,
                    key,
                } => {
                    tx.prepare_cached(
                        "DELETE FROM kv WHERE namespace = ?1 AND bucket = ?2 AND key = ?3",
                    )
                    .and_then(|mut s| s.execute(params![namespace.as_str(), bucket, key]))
                    .map_err(db)?;
                }
                KvOp::PutEvents { id, record } => {
                    tx.prepare_cached("INSERT INTO kv_events (id, record) VALUES (?1, ?2)")
                        .and_then(|mut s| s.execute(params![id, record]))
                        .map_err(db)?;
                }
                KvOp::DropEvents { id } => {
                    tx.prepare_cached("DELETE FROM kv_events WHERE id = ?1")
                        .and_then(|mut s| s.execute(params![id]))
                        .map_err(db)?;
                }
            }
        }
        tx.commit().map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("wisp-kv-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kv.db");
        let n = Namespace::new("default").unwrap();
        let set = |k: &str, v: &[u8]| KvOp::Set {
            namespace: n.clone(),
            bucket: "prefs".into(),
            key: k.into(),
            value: v.to_vec(),
        };
        {
            let kv = SqliteKv::open(&path).unwrap();
            kv.kv_apply(&[
                KvOp::CreateBucket {
                    namespace: n.clone(),
                    bucket: "prefs".into(),
                },
                set("theme", b"light"),
                set("theme", b"dark"),
                set("lang", b"en"),
                KvOp::Delete {
                    namespace: n.clone(),
                    bucket: "prefs".into(),
                    key: "lang".into(),
                },
                KvOp::PutEvents {
                    id: "e2".into(),
                    record: b"second".to_vec(),
                },
                KvOp::PutEvents {
                    id: "e1".into(),
                    record: b"first".to_vec(),
                },
                KvOp::PutEvents {
                    id: "e3".into(),
                    record: b"third".to_vec(),
                },
                KvOp::DropEvents { id: "e1".into() },
            ])
            .unwrap();
        }
        let snap = SqliteKv::open(&path).unwrap().kv_load().unwrap();
        assert_eq!(snap.buckets, vec![(n.clone(), "prefs".to_string())]);
        assert_eq!(
            snap.entries,
            vec![(
                n,
                "prefs".to_string(),
                "theme".to_string(),
                b"dark".to_vec()
            )]
        );
        // Events not yet handed on, in the order they were stored.
        assert_eq!(
            snap.events,
            vec![
                ("e2".to_string(), b"second".to_vec()),
                ("e3".to_string(), b"third".to_vec())
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
