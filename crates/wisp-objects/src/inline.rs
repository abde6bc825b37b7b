//! The writer thread of small objects: every PUT waiting is committed
//! in one fsynced transaction (group commit).

use super::*;

/// Commits every small object waiting, in one fsynced transaction.
pub(crate) fn inline_writer(
    mut conn: Connection,
    rx: std::sync::mpsc::Receiver<InlinePut>,
    blobs: PathBuf,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let modified_ms = now_ms();
        let mut results: Vec<Result<(ObjectMeta, Option<String>), ObjectError>> = Vec::new();
        let committed = (|| -> Result<(), ObjectError> {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
            for j in &batch {
                let exists: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM obj_buckets WHERE namespace = ?1 AND bucket = ?2",
                        params![j.ns.as_str(), j.bucket],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db)?;
                if exists.is_none() {
                    results.push(Err(ObjectError::NoSuchBucket(j.bucket.clone())));
                    continue;
                }
                let old: Option<String> = tx
                    .query_row(
                        "SELECT blob FROM objects WHERE namespace = ?1 AND bucket = ?2 AND key = ?3",
                        params![j.ns.as_str(), j.bucket, j.key],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db)?;
                tx.execute(
                    "INSERT INTO objects (namespace, bucket, key, size, etag, content_type, metadata, modified_ms, blob, data)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '', ?9)
                     ON CONFLICT (namespace, bucket, key) DO UPDATE SET size = excluded.size,
                       etag = excluded.etag, content_type = excluded.content_type,
                       metadata = excluded.metadata, modified_ms = excluded.modified_ms,
                       blob = '', data = excluded.data",
                    params![j.ns.as_str(), j.bucket, j.key, j.data.len() as i64, j.etag,
                            j.content_type, meta_json(&j.metadata), modified_ms, j.data],
                )
                .map_err(db)?;
                results.push(Ok((
                    ObjectMeta {
                        key: j.key.clone(),
                        size: j.data.len() as u64,
                        etag: j.etag.clone(),
                        content_type: j.content_type.clone(),
                        modified_ms,
                        metadata: j.metadata.clone(),
                    },
                    old,
                )));
            }
            tx.commit().map_err(db)
        })();
        match committed {
            Ok(()) => {
                for (j, r) in batch.into_iter().zip(results) {
                    let _ = j.done.send(r.map(|(m, old)| {
                        if let Some(old) = old {
                            remove_blob(&blobs, &old);
                        }
                        m
                    }));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "small objects could not be stored");
                for j in batch {
                    let _ = j.done.send(Err(ObjectError::Db(e.to_string())));
                }
            }
        }
    }
}
