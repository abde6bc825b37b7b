//! Multipart uploads: an upload's record, its parts (each a blob), and
//! completing (the parts joined into one object) or aborting it.

use super::*;

impl ObjectStore {
    pub fn create_upload(
        &self,
        ns: &Namespace,
        bucket: &str,
        key: &str,
        content_type: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String, ObjectError> {
        check_key(key)?;
        self.require_bucket(ns, bucket)?;
        let id = random_name();
        self.conn()
            .execute(
                "INSERT INTO uploads (id, namespace, bucket, key, content_type, metadata, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![id, ns.as_str(), bucket, key, content_type, meta_json(metadata), now_ms()],
            )
            .map_err(db)?;
        Ok(id)
    }

    /// The upload `id` of `ns`/`bucket`/`key`.
    pub fn upload(
        &self,
        ns: &Namespace,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> Result<Upload, ObjectError> {
        let row = self
            .conn()
            .query_row(
                "SELECT content_type, metadata FROM uploads
                 WHERE id = ?1 AND namespace = ?2 AND bucket = ?3 AND key = ?4",
                params![id, ns.as_str(), bucket, key],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(db)?;
        let (content_type, md) = row.ok_or_else(|| ObjectError::NoSuchUpload(id.to_string()))?;
        Ok(Upload {
            id: id.to_string(),
            namespace: ns.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            content_type,
            metadata: meta_parse(&md),
        })
    }

    /// Stores a part (with its checksum of the upload's algorithm, if the
    /// upload has one); returns its quoted ETag.
    pub fn put_part(
        &self,
        upload: &Upload,
        number: u32,
        mut blob: Blob,
        checksum: Option<String>,
    ) -> Result<String, ObjectError> {
        if !(1..=MAX_PARTS).contains(&number) {
            return Err(ObjectError::InvalidPart(format!(
                "part number {number} is not between 1 and {MAX_PARTS}"
            )));
        }
        let md5 = hex::encode(blob.md5);
        let size = blob.size;
        let name = self.place(&mut blob)?;
        let old: Option<String> = {
            let conn = self.conn();
            let old = conn
                .query_row(
                    "SELECT blob FROM upload_parts WHERE upload_id = ?1 AND number = ?2",
                    params![upload.id, number],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            conn.execute(
                "INSERT INTO upload_parts (upload_id, number, size, md5, blob, checksum) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (upload_id, number) DO UPDATE SET size = excluded.size, md5 = excluded.md5,
                     blob = excluded.blob, checksum = excluded.checksum",
                params![upload.id, number, size as i64, md5, name, checksum],
            )
            .map_err(db)?;
            old
        };
        if let Some(old) = old {
            let _ = fs::remove_file(self.blob_path(&old));
        }
        Ok(format!("\"{md5}\""))
    }

    /// Joins the listed parts (in order, each as uploaded) into the
    /// object; the upload and its parts are gone afterwards. A part number
    /// listed twice in a row counts once, with the ETag listed last (as
    /// Ceph RGW reads such a list: a client that re-sent a part lists
    /// both answers). Every byte written passes through `observe` (for a
    /// whole-object checksum); `finish` then sees the parts joined and
    /// the metadata about to be stored, and may change it or refuse
    /// (nothing is stored then).
    pub fn complete_upload(
        &self,
        upload: &Upload,
        parts: &[(u32, String)],
        observe: &mut dyn FnMut(&[u8]),
        finish: impl FnOnce(&[Part], &mut BTreeMap<String, String>) -> Result<(), ObjectError>,
    ) -> Result<ObjectMeta, ObjectError> {
        if parts.is_empty() {
            return Err(ObjectError::InvalidPart(
                "You must specify at least one part".into(),
            ));
        }
        let stored: BTreeMap<u32, Part> = self
            .parts_of(upload)?
            .into_iter()
            .map(|p| (p.number, p))
            .collect();
        let mut listed: Vec<(u32, &str)> = Vec::with_capacity(parts.len());
        for (n, etag) in parts {
            match listed.last_mut() {
                Some((last, e)) if last == n => *e = etag,
                Some((last, _)) if *last > *n => {
                    return Err(ObjectError::InvalidPart(
                        "The list of parts was not in ascending order".into(),
                    ));
                }
                _ => listed.push((*n, etag)),
            }
        }
        let mut chosen = Vec::with_capacity(listed.len());
        for (i, (n, etag)) in listed.iter().enumerate() {
            let Some(p) = stored.get(n) else {
                return Err(ObjectError::InvalidPart(format!(
                    "part {n} was not uploaded"
                )));
            };
            if etag.trim_matches('"') != p.etag.trim_matches('"') {
                return Err(ObjectError::InvalidPart(format!(
                    "part {n}'s ETag {etag} does not match the uploaded part's {}",
                    p.etag
                )));
            }
            if p.size < MIN_PART_SIZE && i + 1 != listed.len() {
                return Err(ObjectError::EntityTooSmall(format!(
                    "Your proposed upload is smaller than the minimum allowed object size: part {n} is {} bytes; every part but the last must be at least 5 MiB",
                    p.size
                )));
            }
            chosen.push(p.clone());
        }
        let mut w = self.writer()?;
        let mut md5s = Vec::with_capacity(chosen.len() * 16);
        let mut buf = vec![0u8; 1 << 20];
        for p in &chosen {
            md5s.extend(hex::decode(p.etag.trim_matches('"')).unwrap_or_default());
            let path = self.blob_path(&p.blob);
            let mut f = File::open(&path).map_err(io_at(&path))?;
            loop {
                let k = io::Read::read(&mut f, &mut buf).map_err(io_at(&path))?;
                if k == 0 {
                    break;
                }
                observe(&buf[..k]);
                w.write(&buf[..k])?;
            }
        }
        let mut blob = w.finish()?;
        let etag = format!("\"{}-{}\"", hex::encode(Md5::digest(&md5s)), chosen.len());
        // The parts' sizes, for reads of one part (GET ?partNumber=N).
        let mut metadata = upload.metadata.clone();
        let sizes: Vec<String> = chosen.iter().map(|p| p.size.to_string()).collect();
        metadata.insert(format!("{HEADER_PREFIX}{PART_SIZES}"), sizes.join(","));
        finish(&chosen, &mut metadata)?;
        let size = blob.size;
        let name = self.place(&mut blob)?;
        let meta = self.put_row(
            &upload.namespace,
            &upload.bucket,
            &upload.key,
            size,
            &etag,
            &upload.content_type,
            &metadata,
            &name,
        )?;
        self.drop_upload(&upload.id, stored.into_values().map(|p| p.blob))?;
        Ok(meta)
    }

    /// Reads the bytes `range` (inclusive; none: all) of an existing
    /// object of the upload's namespace into a blob for a part
    /// (UploadPartCopy), each byte passing through `observe`.
    pub fn copy_part_blob(
        &self,
        upload: &Upload,
        (src_bucket, src_key): (&str, &str),
        range: Option<(u64, u64)>,
        observe: &mut dyn FnMut(&[u8]),
    ) -> Result<Blob, ObjectError> {
        let (meta, src) = self.open_read(&upload.namespace, src_bucket, src_key)?;
        let (start, end) = range.unwrap_or((0, meta.size.saturating_sub(1)));
        let len = if meta.size == 0 && range.is_none() {
            0
        } else {
            end + 1 - start
        };
        let mut w = self.writer_md5_only()?;
        match src {
            Content::Inline(b) => {
                let (a, z) = (start as usize, (start + len) as usize);
                let bytes = b.get(a..z).unwrap_or_default();
                observe(bytes);
                w.write(bytes)?;
            }
            Content::File(mut f) => {
                io::Seek::seek(&mut f, io::SeekFrom::Start(start)).map_err(io_at(&self.root))?;
                let mut left = len;
                let mut buf = vec![0u8; 1 << 20];
                while left > 0 {
                    let want = left.min(buf.len() as u64) as usize;
                    let n = io::Read::read(&mut f, &mut buf[..want]).map_err(io_at(&self.root))?;
                    if n == 0 {
                        break;
                    }
                    observe(&buf[..n]);
                    w.write(&buf[..n])?;
                    left -= n as u64;
                }
            }
        }
        w.finish()
    }

    /// The parts uploaded so far, by number.
    pub fn list_parts(&self, upload: &Upload) -> Result<Vec<Part>, ObjectError> {
        self.parts_of(upload)
    }

    fn parts_of(&self, upload: &Upload) -> Result<Vec<Part>, ObjectError> {
        let conn = self.conn();
        let mut q = conn
            .prepare(
                "SELECT number, size, md5, blob, checksum FROM upload_parts WHERE upload_id = ?1 ORDER BY number",
            )
            .map_err(db)?;
        let rows = q
            .query_map(params![upload.id], |r| {
                Ok(Part {
                    number: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    etag: format!("\"{}\"", r.get::<_, String>(2)?),
                    blob: r.get(3)?,
                    checksum: r.get(4)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    /// The bucket's uploads in progress: key, upload id, start time; by
    /// key, then start.
    pub fn list_uploads(
        &self,
        ns: &Namespace,
        bucket: &str,
    ) -> Result<Vec<(String, String, i64)>, ObjectError> {
        self.require_bucket(ns, bucket)?;
        let conn = self.conn();
        let mut q = conn
            .prepare(
                "SELECT key, id, created_ms FROM uploads WHERE namespace = ?1 AND bucket = ?2
                 ORDER BY key, created_ms, id",
            )
            .map_err(db)?;
        let rows = q
            .query_map(params![ns.as_str(), bucket], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    pub fn abort_upload(&self, upload: &Upload) -> Result<(), ObjectError> {
        let blobs: Vec<String> = {
            let conn = self.conn();
            let mut q = conn
                .prepare("SELECT blob FROM upload_parts WHERE upload_id = ?1")
                .map_err(db)?;
            let rows = q.query_map(params![upload.id], |r| r.get(0)).map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)?
        };
        self.drop_upload(&upload.id, blobs.into_iter())
    }

    pub(crate) fn drop_upload(
        &self,
        id: &str,
        blobs: impl Iterator<Item = String>,
    ) -> Result<(), ObjectError> {
        {
            let mut conn = self.conn();
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
            tx.execute("DELETE FROM upload_parts WHERE upload_id = ?1", params![id])
                .map_err(db)?;
            tx.execute("DELETE FROM uploads WHERE id = ?1", params![id])
                .map_err(db)?;
            tx.commit().map_err(db)?;
        }
        for b in blobs {
            let _ = fs::remove_file(self.blob_path(&b));
        }
        Ok(())
    }
}
