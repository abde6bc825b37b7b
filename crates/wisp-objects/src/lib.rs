//! The object store: buckets of objects per namespace, on disk.
//!
//! An object's bytes live in a blob file with a random name under
//! `<root>/blobs/`; its metadata (size, ETag, content type, user metadata,
//! which blob) is a row in SQLite (`<data-dir>/objects.db`). A write goes
//! to a temp file under `<root>/tmp/`, is fsynced, renamed into `blobs/`
//! (and the directory fsynced), and only then does the metadata row point
//! at it: no partial object is ever visible, also not after a crash. A
//! blob whose row was never written (a crash between the rename and the
//! commit) is removed at the next start, as are leftover temp files.
//! Replacing an object writes a new blob and removes the old one after the
//! row moved, so a reader that already opened the old blob reads it whole.
//!
//! Everything here blocks (files, SQLite): callers run it on blocking
//! threads.

use md5::{Digest as _, Md5};
use ring::digest;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use wisp_core::Namespace;

mod buckets;
mod inline;
mod list;
mod multipart;

/// Longest key, in bytes (as S3).
pub const MAX_KEY_BYTES: usize = 1024;
/// Keys one listing returns at most (as S3).
pub const MAX_KEYS: usize = 1000;
/// Parts of one multipart upload (as S3).
pub const MAX_PARTS: u32 = 10_000;
/// Smallest part of a multipart upload but the last (as S3): 5 MiB.
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Objects up to this size are kept inside the metadata database (one
/// group-committed, fsynced transaction for many concurrent PUTs) instead
/// of a file of their own (a file fsync and a directory fsync each).
pub const INLINE_MAX: usize = 64 * 1024;

/// An object's bytes, as stored.
pub enum Content {
    File(File),
    Inline(Vec<u8>),
}

struct InlinePut {
    ns: Namespace,
    bucket: String,
    key: String,
    data: Vec<u8>,
    etag: String,
    content_type: String,
    metadata: BTreeMap<String, String>,
    done: std::sync::mpsc::SyncSender<Result<ObjectMeta, ObjectError>>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    #[error("{0}")]
    InvalidBucketName(String),
    #[error("{0}")]
    InvalidKey(String),
    #[error("The specified bucket does not exist: {0}")]
    NoSuchBucket(String),
    #[error("The specified key does not exist: {0}")]
    NoSuchKey(String),
    #[error("The bucket you tried to delete is not empty: {0} (delete its objects first)")]
    BucketNotEmpty(String),
    #[error("The specified multipart upload does not exist: {0}")]
    NoSuchUpload(String),
    #[error("{0}")]
    InvalidPart(String),
    #[error("{0}")]
    BadDigest(String),
    #[error("{0}")]
    EntityTooSmall(String),
    #[error("object storage I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("object metadata database: {0}")]
    Db(String),
    /// The disk is full: nothing of the write was stored, the old object
    /// (if any) is intact.
    #[error(
        "no space left on the node's disk ({0}); the object was not stored: delete objects or free disk space on the node, then retry"
    )]
    StorageFull(String),
}

impl ObjectError {
    /// Whether the disk being full caused this.
    pub fn is_full(&self) -> bool {
        matches!(self, ObjectError::StorageFull(_))
    }
}

fn db(e: rusqlite::Error) -> ObjectError {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        return ObjectError::StorageFull(format!("object metadata database: {e}"));
    }
    ObjectError::Db(e.to_string())
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ObjectError + '_ {
    move |source| {
        if wisp_core::store::is_no_space(&source) {
            ObjectError::StorageFull(format!("writing {}: {source}", path.display()))
        } else {
            ObjectError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// S3's bucket naming rules: 3-63 characters, lowercase letters, digits,
/// '.' and '-', starting and ending with a letter or digit, no "..".
pub fn check_bucket(name: &str) -> Result<(), ObjectError> {
    let b = name.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-'))
        && !name.contains("..")
        && !name.contains(".-")
        && !name.contains("-.")
        && !looks_like_ip(name);
    if ok {
        Ok(())
    } else {
        Err(ObjectError::InvalidBucketName(format!(
            "The specified bucket is not valid: {name:?} (3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit, no \"..\", \".-\" or \"-.\", not an IP address)"
        )))
    }
}

/// `192.168.5.4`: four dot-separated numbers.
fn looks_like_ip(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|c| c.is_ascii_digit()))
}

pub fn check_key(key: &str) -> Result<(), ObjectError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ObjectError::InvalidKey(format!(
            "an object key must be 1 to {MAX_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

/// What is known about an object besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Quoted, as S3 sends it: `"<md5 hex>"`, or `"<hex>-N"` for an object
    /// made of N parts.
    pub etag: String,
    pub content_type: String,
    pub modified_ms: i64,
    /// `x-amz-meta-*` headers, names lowercased without the prefix; and
    /// the standard headers kept with the object (`Cache-Control`,
    /// `Content-Disposition`, `Content-Encoding`, `Content-Language`,
    /// `Expires`) and its checksums (`x-amz-checksum-*`), under their
    /// lowercased names behind [`HEADER_PREFIX`] (`:cache-control`). An
    /// HTTP header name cannot hold `:`, so the two never collide.
    pub metadata: BTreeMap<String, String>,
}

/// Marks a stored standard header (not user metadata) in
/// [`ObjectMeta::metadata`].
pub const HEADER_PREFIX: char = ':';

/// The stored attribute (behind [`HEADER_PREFIX`]) listing the sizes of a
/// multipart object's parts, comma-separated, in order.
pub const PART_SIZES: &str = "x-wisp-part-sizes";

/// The stored attribute (behind [`HEADER_PREFIX`]) listing the checksums
/// of a multipart object's parts (of the upload's checksum algorithm),
/// comma-separated, in order.
pub const PART_CHECKSUMS: &str = "x-wisp-part-checksums";

impl ObjectMeta {
    /// User metadata (`x-amz-meta-*`), names without the prefix.
    pub fn user_metadata(&self) -> impl Iterator<Item = (&str, &str)> {
        self.metadata
            .iter()
            .filter(|(k, _)| !k.starts_with(HEADER_PREFIX))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A stored standard header (`cache-control`), if the object has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.metadata
            .get(&format!("{HEADER_PREFIX}{name}"))
            .map(String::as_str)
    }

    /// The sizes of a multipart object's parts, in order (none for an
    /// object written whole).
    pub fn part_sizes(&self) -> Option<Vec<u64>> {
        self.header(PART_SIZES)
            .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
    }

    /// The checksums of a multipart object's parts, in order, when its
    /// upload had a checksum algorithm.
    pub fn part_checksums(&self) -> Option<Vec<&str>> {
        self.header(PART_CHECKSUMS).map(|s| s.split(',').collect())
    }
}

/// A part of an upload in progress.
#[derive(Debug, Clone)]
pub struct Part {
    pub number: u32,
    pub size: u64,
    /// Quoted.
    pub etag: String,
    /// Of the upload's checksum algorithm, base64, when it has one.
    pub checksum: Option<String>,
    blob: String,
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Listing {
    pub objects: Vec<ObjectMeta>,
    pub common_prefixes: Vec<String>,
    /// Where the next page starts (after this key or prefix), when the
    /// listing was cut at `max_keys`.
    pub next_after: Option<String>,
}

/// A blob being written: a temp file with its running digests.
pub struct BlobWriter {
    path: PathBuf,
    file: io::BufWriter<File>,
    size: u64,
    md5: Md5,
    /// None when the caller hashes the stream itself (on another thread).
    sha256: Option<digest::Context>,
}

/// A fully written, fsynced temp blob.
pub struct Blob {
    path: PathBuf,
    pub size: u64,
    pub md5: [u8; 16],
    /// Zero when the writer was made without SHA-256 (`writer_md5_only`).
    pub sha256: [u8; 32],
}

impl BlobWriter {
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), ObjectError> {
        self.md5.update(chunk);
        if let Some(s) = &mut self.sha256 {
            s.update(chunk);
        }
        self.size += chunk.len() as u64;
        self.file.write_all(chunk).map_err(io_at(&self.path))
    }

    /// Flushes and fsyncs the temp file.
    pub fn finish(self) -> Result<Blob, ObjectError> {
        let path = self.path;
        let file = self
            .file
            .into_inner()
            .map_err(|e| io_at(&path)(e.into_error()))?;
        file.sync_all().map_err(io_at(&path))?;
        let mut sha256 = [0u8; 32];
        if let Some(s) = self.sha256 {
            sha256.copy_from_slice(s.finish().as_ref());
        }
        Ok(Blob {
            path,
            size: self.size,
            md5: self.md5.finalize().into(),
            sha256,
        })
    }
}

impl Drop for Blob {
    fn drop(&mut self) {
        // Not committed (an error, a digest mismatch): the temp file goes.
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Blob {
    fn take_path(&mut self) -> PathBuf {
        std::mem::take(&mut self.path)
    }
}

/// A multipart upload's record.
#[derive(Debug, Clone)]
pub struct Upload {
    pub id: String,
    pub namespace: Namespace,
    pub bucket: String,
    pub key: String,
    pub content_type: String,
    pub metadata: BTreeMap<String, String>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS obj_buckets (
    namespace  TEXT NOT NULL,
    bucket     TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    namespace    TEXT NOT NULL,
    bucket       TEXT NOT NULL,
    key          TEXT NOT NULL,
    size         INTEGER NOT NULL,
    etag         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    modified_ms  INTEGER NOT NULL,
    blob         TEXT NOT NULL,
    data         BLOB,
    PRIMARY KEY (namespace, bucket, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    id           TEXT PRIMARY KEY,
    namespace    TEXT NOT NULL,
    bucket       TEXT NOT NULL,
    key          TEXT NOT NULL,
    content_type TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    created_ms   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS upload_parts (
    upload_id TEXT NOT NULL,
    number    INTEGER NOT NULL,
    size      INTEGER NOT NULL,
    md5       TEXT NOT NULL,
    blob      TEXT NOT NULL,
    checksum  TEXT,
    PRIMARY KEY (upload_id, number)
) WITHOUT ROWID;
";

/// The node's object store.
pub struct ObjectStore {
    root: PathBuf,
    conn: Mutex<Connection>,
    /// Small objects go to one writer thread that commits all that are
    /// waiting in one fsynced transaction.
    inline: Mutex<std::sync::mpsc::Sender<InlinePut>>,
}

fn blob_path(blobs: &Path, name: &str) -> PathBuf {
    blobs.join(name.get(..2).unwrap_or("__")).join(name)
}

/// Removes a replaced or deleted object's file (inline objects have none).
fn remove_blob(blobs: &Path, name: &str) {
    if !name.is_empty() {
        let _ = fs::remove_file(blob_path(blobs, name));
    }
}

fn now_ms() -> i64 {
    wisp_core::time::now_ms()
}

fn random_name() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn meta_json(m: &BTreeMap<String, String>) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

fn meta_parse(s: &str) -> BTreeMap<String, String> {
    serde_json::from_str(s).unwrap_or_default()
}

impl ObjectStore {
    /// Opens the store: blobs under `root`, metadata in `db_path`. Removes
    /// leftover temp files and blobs no object refers to.
    pub fn open(root: &Path, db_path: &Path) -> Result<Self, ObjectError> {
        // Every tenant's objects: readable by the node's user only.
        wisp_core::durable::private_dir(root).map_err(io_at(root))?;
        for d in ["tmp", "blobs"] {
            wisp_core::durable::private_dir(&root.join(d)).map_err(io_at(root))?;
        }
        wisp_core::durable::private_sqlite(db_path).map_err(io_at(db_path))?;
        let conn = Connection::open(db_path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.pragma_update(None, "busy_timeout", 5000).map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        let has_checksum: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('upload_parts') WHERE name = 'checksum'",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        if has_checksum == 0 {
            conn.execute_batch("ALTER TABLE upload_parts ADD COLUMN checksum TEXT")
                .map_err(db)?;
        }
        let has_data: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('objects') WHERE name = 'data'",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        if has_data == 0 {
            conn.execute_batch("ALTER TABLE objects ADD COLUMN data BLOB")
                .map_err(db)?;
        }
        wisp_core::durable::private_sqlite(db_path).map_err(io_at(db_path))?;
        // The inline writer's own connection: FULL, so a commit is fsynced.
        let wconn = Connection::open(db_path).map_err(db)?;
        wconn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        wconn
            .pragma_update(None, "busy_timeout", 5000)
            .map_err(db)?;
        let (tx, rx) = std::sync::mpsc::channel::<InlinePut>();
        let blobs = root.join("blobs");
        std::thread::Builder::new()
            .name("wisp-objects-writer".into())
            .spawn(move || inline::inline_writer(wconn, rx, blobs))
            .map_err(io_at(root))?;
        let store = Self {
            root: root.to_path_buf(),
            conn: Mutex::new(conn),
            inline: Mutex::new(tx),
        };
        store.clean_up()?;
        Ok(store)
    }

    /// Stores a small object (at most [`INLINE_MAX`] bytes) in the
    /// database, group-committed with other small writes; returns once it
    /// is durable.
    pub fn put_inline(
        &self,
        ns: &Namespace,
        bucket: &str,
        key: &str,
        data: Vec<u8>,
        content_type: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<ObjectMeta, ObjectError> {
        check_key(key)?;
        let etag = format!("\"{}\"", hex::encode(Md5::digest(&data)));
        let (done, rx) = std::sync::mpsc::sync_channel(1);
        let job = InlinePut {
            ns: ns.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            data,
            etag,
            content_type: content_type.to_string(),
            metadata: metadata.clone(),
            done,
        };
        self.inline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|_| ObjectError::Db("the object writer thread is gone".into()))?;
        rx.recv()
            .map_err(|_| ObjectError::Db("the object writer thread is gone".into()))?
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn blob_path(&self, name: &str) -> PathBuf {
        blob_path(&self.root.join("blobs"), name)
    }

    fn clean_up(&self) -> Result<(), ObjectError> {
        let tmp = self.root.join("tmp");
        if let Ok(entries) = fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        let referenced: std::collections::HashSet<String> = {
            let conn = self.conn();
            let mut names = std::collections::HashSet::new();
            for sql in ["SELECT blob FROM objects", "SELECT blob FROM upload_parts"] {
                let mut q = conn.prepare(sql).map_err(db)?;
                let rows = q.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
                for r in rows {
                    names.insert(r.map_err(db)?);
                }
            }
            names
        };
        let mut removed = 0;
        if let Ok(dirs) = fs::read_dir(self.root.join("blobs")) {
            for d in dirs.flatten() {
                let Ok(files) = fs::read_dir(d.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if !referenced.contains(&name) && fs::remove_file(f.path()).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                "removed blobs no object refers to (left by a crash)"
            );
        }
        Ok(())
    }

    // ---- buckets ----

    /// Starts writing a blob (a temp file), computing its MD5 and SHA-256.
    pub fn writer(&self) -> Result<BlobWriter, ObjectError> {
        let mut w = self.writer_md5_only()?;
        w.sha256 = Some(digest::Context::new(&digest::SHA256));
        Ok(w)
    }

    /// The same, computing only the MD5 (the caller hashes the stream for
    /// SHA-256 elsewhere, in parallel).
    pub fn writer_md5_only(&self) -> Result<BlobWriter, ObjectError> {
        let path = self.root.join("tmp").join(random_name());
        let file = File::create(&path).map_err(io_at(&path))?;
        Ok(BlobWriter {
            path,
            file: io::BufWriter::with_capacity(1 << 20, file),
            size: 0,
            md5: Md5::new(),
            sha256: None,
        })
    }

    /// Moves a finished temp blob into `blobs/` durably; returns its name.
    fn place(&self, blob: &mut Blob) -> Result<String, ObjectError> {
        let name = random_name();
        let dest = self.blob_path(&name);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let tmp = blob.take_path();
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_file(&tmp);
            return Err(io_at(&dest)(e));
        }
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(&dir))?;
        Ok(name)
    }

    /// Makes `blob` the object `key`: visible whole from here on. The old
    /// object's blob, if any, is removed. Returns the new metadata.
    pub fn commit(
        &self,
        ns: &Namespace,
        bucket: &str,
        key: &str,
        mut blob: Blob,
        content_type: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<ObjectMeta, ObjectError> {
        check_key(key)?;
        self.require_bucket(ns, bucket)?;
        let etag = format!("\"{}\"", hex::encode(blob.md5));
        let size = blob.size;
        let name = self.place(&mut blob)?;
        self.put_row(ns, bucket, key, size, &etag, content_type, metadata, &name)
    }

    #[allow(clippy::too_many_arguments)]
    fn put_row(
        &self,
        ns: &Namespace,
        bucket: &str,
        key: &str,
        size: u64,
        etag: &str,
        content_type: &str,
        metadata: &BTreeMap<String, String>,
        blob: &str,
    ) -> Result<ObjectMeta, ObjectError> {
        let modified_ms = now_ms();
        let old: Option<String> = {
            let mut conn = self.conn();
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db)?;
            let old = tx
                .query_row(
                    "SELECT blob FROM objects WHERE namespace = ?1 AND bucket = ?2 AND key = ?3",
                    params![ns.as_str(), bucket, key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            tx.execute(
                "INSERT INTO objects (namespace, bucket, key, size, etag, content_type, metadata, modified_ms, blob)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (namespace, bucket, key) DO UPDATE SET size = excluded.size,
                   etag = excluded.etag, content_type = excluded.content_type,
                   metadata = excluded.metadata, modified_ms = excluded.modified_ms, blob = excluded.blob",
                params![ns.as_str(), bucket, key, size as i64, etag, content_type, meta_json(metadata), modified_ms, blob],
            )
            .map_err(db)?;
            tx.commit().map_err(db)?;
            old
        };
        if let Some(old) = old {
            remove_blob(&self.root.join("blobs"), &old);
        }
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
            etag: etag.to_string(),
            content_type: content_type.to_string(),
            modified_ms,
            metadata: metadata.clone(),
        })
    }

    fn row(
        &self,
        ns: &Namespace,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(ObjectMeta, String)>, ObjectError> {
        self.row_with(ns, bucket, key, false)
            .map(|o| o.map(|(m, blob, _)| (m, blob)))
    }

    /// The row, and with `data` the inline bytes too.
    #[allow(clippy::type_complexity)]
    fn row_with(
        &self,
        ns: &Namespace,
        bucket: &str,
        key: &str,
        data: bool,
    ) -> Result<Option<(ObjectMeta, String, Option<Vec<u8>>)>, ObjectError> {
        let sql = if data {
            "SELECT size, etag, content_type, metadata, modified_ms, blob, data FROM objects
             WHERE namespace = ?1 AND bucket = ?2 AND key = ?3"
        } else {
            "SELECT size, etag, content_type, metadata, modified_ms, blob, NULL FROM objects
             WHERE namespace = ?1 AND bucket = ?2 AND key = ?3"
        };
        self.conn()
            .query_row(sql, params![ns.as_str(), bucket, key], |r| {
                Ok((
                    ObjectMeta {
                        key: key.to_string(),
                        size: r.get::<_, i64>(0)? as u64,
                        etag: r.get(1)?,
                        content_type: r.get(2)?,
                        metadata: meta_parse(&r.get::<_, String>(3)?),
                        modified_ms: r.get(4)?,
                    },
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                ))
            })
            .optional()
            .map_err(db)
    }

    pub fn head(&self, ns: &Namespace, bucket: &str, key: &str) -> Result<ObjectMeta, ObjectError> {
        match self.row(ns, bucket, key)? {
            Some((m, _)) => Ok(m),
            None => {
                self.require_bucket(ns, bucket)?;
                Err(ObjectError::NoSuchKey(key.to_string()))
            }
        }
    }

    /// The object's metadata and its bytes: its blob opened, or the bytes
    /// of a small object.
    pub fn open_read(
        &self,
        ns: &Namespace,
        bucket: &str,
        key: &str,
    ) -> Result<(ObjectMeta, Content), ObjectError> {
        // The blob may be replaced between reading the row and opening
        // it: then read the row again.
        for _ in 0..3 {
            let Some((m, blob, data)) = self.row_with(ns, bucket, key, true)? else {
                self.require_bucket(ns, bucket)?;
                return Err(ObjectError::NoSuchKey(key.to_string()));
            };
            if blob.is_empty() {
                return Ok((m, Content::Inline(data.unwrap_or_default())));
            }
            let path = self.blob_path(&blob);
            match File::open(&path) {
                Ok(f) => return Ok((m, Content::File(f))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_at(&path)(e)),
            }
        }
        Err(ObjectError::NoSuchKey(key.to_string()))
    }

    /// Deletes an object; its metadata when it existed.
    pub fn delete(
        &self,
        ns: &Namespace,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectMeta>, ObjectError> {
        self.require_bucket(ns, bucket)?;
        let Some((m, blob)) = self.row(ns, bucket, key)? else {
            return Ok(None);
        };
        wisp_core::reserve::deleting(ObjectError::is_full, || {
            self.conn()
                .execute(
                    "DELETE FROM objects WHERE namespace = ?1 AND bucket = ?2 AND key = ?3 AND blob = ?4",
                    params![ns.as_str(), bucket, key, blob],
                )
                .map_err(db)
        })?;
        remove_blob(&self.root.join("blobs"), &blob);
        Ok(Some(m))
    }

    /// Copies an object (its bytes and, unless replaced, its metadata).
    pub fn copy(
        &self,
        ns: &Namespace,
        (src_bucket, src_key): (&str, &str),
        (bucket, key): (&str, &str),
        replace: Option<(&str, &BTreeMap<String, String>)>,
    ) -> Result<ObjectMeta, ObjectError> {
        check_key(key)?;
        self.require_bucket(ns, bucket)?;
        let (meta, src) = self.open_read(ns, src_bucket, src_key)?;
        let mut w = self.writer()?;
        match src {
            Content::Inline(b) => w.write(&b)?,
            Content::File(mut f) => {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = io::Read::read(&mut f, &mut buf).map_err(io_at(&self.root))?;
                    if n == 0 {
                        break;
                    }
                    w.write(&buf[..n])?;
                }
            }
        }
        let mut blob = w.finish()?;
        let name = self.place(&mut blob)?;
        let (ct, md) = match replace {
            Some((ct, md)) => (ct.to_string(), md.clone()),
            None => (meta.content_type.clone(), meta.metadata.clone()),
        };
        // The copy keeps the source's ETag (the same bytes).
        self.put_row(ns, bucket, key, meta.size, &meta.etag, &ct, &md, &name)
    }
}

#[cfg(test)]
mod tests;
