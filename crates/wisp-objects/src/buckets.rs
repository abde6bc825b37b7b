//! Buckets of a namespace: create, look up, list, delete (empty ones),
//! and deleting everything of a namespace.

use super::*;

impl ObjectStore {
    /// Makes a bucket; false when it existed.
    pub fn create_bucket(&self, ns: &Namespace, bucket: &str) -> Result<bool, ObjectError> {
        check_bucket(bucket)?;
        let n = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO obj_buckets (namespace, bucket, created_ms) VALUES (?1, ?2, ?3)",
                params![ns.as_str(), bucket, now_ms()],
            )
            .map_err(db)?;
        Ok(n == 1)
    }

    pub fn bucket_exists(&self, ns: &Namespace, bucket: &str) -> Result<bool, ObjectError> {
        self.conn()
            .query_row(
                "SELECT 1 FROM obj_buckets WHERE namespace = ?1 AND bucket = ?2",
                params![ns.as_str(), bucket],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(db)
    }

    pub(crate) fn require_bucket(&self, ns: &Namespace, bucket: &str) -> Result<(), ObjectError> {
        if self.bucket_exists(ns, bucket)? {
            Ok(())
        } else {
            Err(ObjectError::NoSuchBucket(bucket.to_string()))
        }
    }

    /// The namespace's buckets with their creation times, by name.
    pub fn list_buckets(&self, ns: &Namespace) -> Result<Vec<(String, i64)>, ObjectError> {
        let conn = self.conn();
        let mut q = conn
            .prepare(
                "SELECT bucket, created_ms FROM obj_buckets WHERE namespace = ?1 ORDER BY bucket",
            )
            .map_err(db)?;
        let rows = q
            .query_map(params![ns.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    /// Objects stored in a namespace (all its buckets).
    pub fn count_objects(&self, ns: &Namespace) -> Result<u64, ObjectError> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM objects WHERE namespace = ?1",
                params![ns.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db)
    }

    /// Deletes everything of a namespace: its buckets, objects, unfinished
    /// multipart uploads and their blob files. Returns the objects deleted.
    pub fn delete_namespace(&self, ns: &Namespace) -> Result<u64, ObjectError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let mut blobs: Vec<String> = Vec::new();
        for sql in [
            "SELECT blob FROM objects WHERE namespace = ?1",
            "SELECT p.blob FROM upload_parts p JOIN uploads u ON u.id = p.upload_id WHERE u.namespace = ?1",
        ] {
            let mut q = tx.prepare(sql).map_err(db)?;
            let rows = q
                .query_map(params![ns.as_str()], |r| r.get::<_, String>(0))
                .map_err(db)?;
            for b in rows {
                blobs.push(b.map_err(db)?);
            }
        }
        let n = tx
            .execute(
                "DELETE FROM objects WHERE namespace = ?1",
                params![ns.as_str()],
            )
            .map_err(db)?;
        for sql in [
            "DELETE FROM upload_parts WHERE upload_id IN (SELECT id FROM uploads WHERE namespace = ?1)",
            "DELETE FROM uploads WHERE namespace = ?1",
            "DELETE FROM obj_buckets WHERE namespace = ?1",
        ] {
            tx.execute(sql, params![ns.as_str()]).map_err(db)?;
        }
        tx.commit().map_err(db)?;
        drop(conn);
        let dir = self.root.join("blobs");
        for b in &blobs {
            remove_blob(&dir, b);
        }
        Ok(n as u64)
    }

    /// Removes an empty bucket.
    pub fn delete_bucket(&self, ns: &Namespace, bucket: &str) -> Result<(), ObjectError> {
        let conn = self.conn();
        let any: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM objects WHERE namespace = ?1 AND bucket = ?2 LIMIT 1",
                params![ns.as_str(), bucket],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        if any.is_some() {
            return Err(ObjectError::BucketNotEmpty(bucket.to_string()));
        }
        // Deletes still work on a full disk: they may use the reserve.
        let n = wisp_core::reserve::deleting(ObjectError::is_full, || {
            conn.execute(
                "DELETE FROM obj_buckets WHERE namespace = ?1 AND bucket = ?2",
                params![ns.as_str(), bucket],
            )
            .map_err(db)
        })?;
        if n == 0 {
            return Err(ObjectError::NoSuchBucket(bucket.to_string()));
        }
        Ok(())
    }

    // ---- objects ----
}
