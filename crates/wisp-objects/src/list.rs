//! Listing a bucket: keys after a marker, by prefix, with common
//! prefixes under a delimiter, one page at a time.

use super::*;

impl ObjectStore {
    /// Lists keys in byte order: those starting with `prefix`, after
    /// `after`, with keys that hold `delimiter` past the prefix rolled up
    /// into common prefixes; at most `max` entries (objects and prefixes).
    pub fn list(
        &self,
        ns: &Namespace,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> Result<Listing, ObjectError> {
        self.require_bucket(ns, bucket)?;
        let mut out = Listing::default();
        if max == 0 {
            return Ok(out);
        }
        let conn = self.conn();
        let mut q = conn
            .prepare_cached(
                "SELECT key, size, etag, content_type, metadata, modified_ms FROM objects
                 WHERE namespace = ?1 AND bucket = ?2 AND key > ?3 AND key >= ?4
                 ORDER BY key LIMIT ?5",
            )
            .map_err(db)?;
        let mut cursor = after.unwrap_or("").to_string();
        let delim = delimiter.filter(|d| !d.is_empty());
        loop {
            let rows: Vec<ObjectMeta> = q
                .query_map(
                    params![ns.as_str(), bucket, cursor, prefix, (max + 1) as i64],
                    |r| {
                        Ok(ObjectMeta {
                            key: r.get(0)?,
                            size: r.get::<_, i64>(1)? as u64,
                            etag: r.get(2)?,
                            content_type: r.get(3)?,
                            metadata: meta_parse(&r.get::<_, String>(4)?),
                            modified_ms: r.get(5)?,
                        })
                    },
                )
                .map_err(db)?
                .collect::<Result<_, _>>()
                .map_err(db)?;
            let fetched = rows.len();
            for m in rows {
                if !m.key.starts_with(prefix) {
                    return Ok(out);
                }
                let entry = match delim.and_then(|d| {
                    m.key[prefix.len()..]
                        .find(d)
                        .map(|i| m.key[..prefix.len() + i + d.len()].to_string())
                }) {
                    Some(cp) => {
                        if out.common_prefixes.last() == Some(&cp) {
                            cursor = m.key.clone();
                            continue;
                        }
                        Err(cp)
                    }
                    None => Ok(m),
                };
                if out.objects.len() + out.common_prefixes.len() == max {
                    out.next_after = Some(cursor);
                    return Ok(out);
                }
                match entry {
                    Ok(m) => {
                        cursor = m.key.clone();
                        out.objects.push(m);
                    }
                    Err(cp) => {
                        // Skip every key under this prefix.
                        cursor = format!("{cp}\u{10FFFF}");
                        out.common_prefixes.push(cp);
                    }
                }
            }
            if fetched <= max {
                return Ok(out);
            }
        }
    }

    // ---- multipart uploads ----
}
