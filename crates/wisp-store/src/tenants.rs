//! SQL of the tenant store (namespaces, tokens, routes, API keys, quota
//! counts, secrets, audit log), in the registry's SQLite file. The
//! gateway's access log, in the same file, is `access_log.rs`.

use crate::sqlite::{SqliteStore, db};
use rusqlite::{OptionalExtension, params};
use wisp_core::{
    AccessKeyRecord, ApiKeyRecord, AuditEntry, Namespace, NamespaceLimits, QuotaCount, Role,
    RouteRecord, SecretInfo, StoreError, TenantStore, TokenRecord,
};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS namespaces (
    name TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
);
INSERT OR IGNORE INTO namespaces (name, created_ms) VALUES ('default', 0);
CREATE TABLE IF NOT EXISTS shared_routes (
    namespace TEXT PRIMARY KEY
);
INSERT OR IGNORE INTO shared_routes (namespace) VALUES ('default');
CREATE TABLE IF NOT EXISTS domains (
    host TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS namespace_limits (
    namespace TEXT PRIMARY KEY,
    max_concurrency INTEGER,
    max_instances INTEGER
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    role TEXT NOT NULL,
    name TEXT,
    hash TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS routes (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    rate TEXT,
    quota TEXT,
    created_ms INTEGER NOT NULL,
    UNIQUE (namespace, name)
);
CREATE TABLE IF NOT EXISTS quota_counts (
    key_id TEXT PRIMARY KEY,
    period_start_ms INTEGER NOT NULL,
    count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    nonce BLOB NOT NULL,
    value BLOB NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS access_keys (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    role TEXT NOT NULL,
    name TEXT,
    nonce BLOB NOT NULL,
    secret BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_log (
    time_ms INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    status INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ns ON audit_log (namespace, time_ms);
CREATE TABLE IF NOT EXISTS access_log (
    time_ms INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    key_name TEXT,
    function TEXT NOT NULL,
    status INTEGER NOT NULL,
    latency_us INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    activation_id TEXT
);
CREATE INDEX IF NOT EXISTS access_ns ON access_log (namespace, time_ms);
";

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub(crate) fn ns(s: String) -> Result<Namespace, StoreError> {
    Namespace::new(s).map_err(corrupt)
}

fn secret_aad(ns: &Namespace, name: &str) -> String {
    format!("{ns}/{name}")
}

impl TenantStore for SqliteStore {
    fn put_namespace(&self, n: &Namespace, now_ms: i64) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO namespaces (name, created_ms) VALUES (?1, ?2)",
                params![n.as_str(), now_ms],
            )
            .map_err(db)?;
        Ok(changed == 1)
    }

    fn delete_namespace(&self, n: &Namespace) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let changed = tx
            .execute(
                "DELETE FROM namespaces WHERE name = ?1",
                params![n.as_str()],
            )
            .map_err(db)?;
        tx.execute(
            "DELETE FROM shared_routes WHERE namespace = ?1",
            params![n.as_str()],
        )
        .map_err(db)?;
        for table in [
            "tokens",
            "routes",
            "api_keys",
            "secrets",
            "access_keys",
            "domains",
            "access_log",
            "audit_log",
            "namespace_limits",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE namespace = ?1"),
                params![n.as_str()],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(changed == 1)
    }

    fn list_namespaces(&self) -> Result<Vec<(Namespace, i64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, created_ms FROM namespaces ORDER BY name")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(db)?;
        rows.map(|r| {
            let (n, t) = r.map_err(db)?;
            Ok((ns(n)?, t))
        })
        .collect()
    }

    fn set_shared_routes(&self, n: &Namespace, allowed: bool) -> Result<bool, StoreError> {
        let conn = self.conn();
        let exists: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM namespaces WHERE name = ?1",
                params![n.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .map_err(db)?
            > 0;
        if !exists {
            return Ok(false);
        }
        let sql = if allowed {
            "INSERT OR IGNORE INTO shared_routes (namespace) VALUES (?1)"
        } else {
            "DELETE FROM shared_routes WHERE namespace = ?1"
        };
        conn.execute(sql, params![n.as_str()]).map_err(db)?;
        Ok(true)
    }

    fn shared_routes_namespaces(&self) -> Result<Vec<Namespace>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT namespace FROM shared_routes ORDER BY namespace")
            .map_err(db)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
        rows.map(|r| ns(r.map_err(db)?)).collect()
    }

    fn put_domain(&self, host: &str, n: &Namespace, now_ms: i64) -> Result<bool, StoreError> {
        let conn = self.conn();
        let owner: Option<String> = conn
            .query_row(
                "SELECT namespace FROM domains WHERE host = ?1",
                params![host],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        match owner {
            Some(o) if o == n.as_str() => Ok(false),
            Some(o) => Err(StoreError::Exists(format!(
                "host {host:?} (assigned to namespace {o:?})"
            ))),
            None => {
                conn.execute(
                    "INSERT INTO domains (host, namespace, created_ms) VALUES (?1, ?2, ?3)",
                    params![host, n.as_str(), now_ms],
                )
                .map_err(db)?;
                Ok(true)
            }
        }
    }

    fn delete_domain(&self, n: &Namespace, host: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                "DELETE FROM domains WHERE namespace = ?1 AND host = ?2",
                params![n.as_str(), host],
            )
            .map_err(db)?;
        Ok(changed == 1)
    }

    fn list_domains(&self) -> Result<Vec<(String, Namespace, i64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT host, namespace, created_ms FROM domains ORDER BY namespace, host")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(db)?;
        rows.map(|r| {
            let (h, n, t) = r.map_err(db)?;
            Ok((h, ns(n)?, t))
        })
        .collect()
    }

    fn namespace_limits(&self) -> Result<Vec<(Namespace, NamespaceLimits)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT namespace, max_concurrency, max_instances FROM namespace_limits ORDER BY namespace")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    NamespaceLimits {
                        max_concurrency: r.get(1)?,
                        max_instances: r.get(2)?,
                    },
                ))
            })
            .map_err(db)?;
        rows.map(|r| {
            let (n, l) = r.map_err(db)?;
            Ok((ns(n)?, l))
        })
        .collect()
    }

    fn set_namespace_limits(
        &self,
        n: &Namespace,
        limits: &NamespaceLimits,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO namespace_limits (namespace, max_concurrency, max_instances) VALUES (?1, ?2, ?3)",
                params![n.as_str(), limits.max_concurrency, limits.max_instances],
            )
            .map_err(db)?;
        Ok(())
    }

    fn put_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO tokens (id, namespace, role, name, hash, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![t.id, t.namespace.as_str(), t.role.as_str(), t.name, t.hash, t.created_ms],
            )
            .map_err(db)?;
        Ok(())
    }

    fn delete_token(&self, n: &Namespace, id: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                "DELETE FROM tokens WHERE namespace = ?1 AND id = ?2",
                params![n.as_str(), id],
            )
            .map_err(db)?;
        Ok(changed == 1)
    }

    fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, namespace, role, name, hash, created_ms FROM tokens ORDER BY namespace, created_ms")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .map_err(db)?;
        rows.map(|r| {
            let (id, n, role, name, hash, created_ms) = r.map_err(db)?;
            Ok(TokenRecord {
                id,
                namespace: ns(n)?,
                role: Role::parse(&role).map_err(corrupt)?,
                name,
                created_ms,
                hash,
            })
        })
        .collect()
    }

    fn put_route(&self, r: &RouteRecord) -> Result<(), StoreError> {
        let spec = serde_json::to_string(&r.spec).map_err(corrupt)?;
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO routes (id, namespace, spec, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![r.id, r.namespace.as_str(), spec, r.created_ms],
            )
            .map_err(db)?;
        Ok(())
    }

    fn delete_route(&self, n: &Namespace, id: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                "DELETE FROM routes WHERE namespace = ?1 AND id = ?2",
                params![n.as_str(), id],
            )
            .map_err(db)?;
        Ok(changed == 1)
    }

    fn list_routes(&self) -> Result<Vec<RouteRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, namespace, spec, created_ms FROM routes ORDER BY namespace, created_ms",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(db)?;
        rows.map(|r| {
            let (id, n, spec, created_ms) = r.map_err(db)?;
            Ok(RouteRecord {
                id,
                namespace: ns(n)?,
                spec: serde_json::from_str(&spec).map_err(corrupt)?,
                created_ms,
            })
        })
        .collect()
    }

    fn put_api_key(&self, k: &ApiKeyRecord) -> Result<(), StoreError> {
        let r = self.conn().execute(
            "INSERT INTO api_keys (id, namespace, name, hash, rate, quota, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                k.id,
                k.namespace.as_str(),
                k.name,
                k.hash,
                k.rate.map(|r| r.to_string()),
                k.quota.map(|q| q.to_string()),
                k.created_ms
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Exists(format!(
                    "API key {:?} in namespace {:?}",
                    k.name, k.namespace
                )))
            }
            Err(e) => Err(db(e)),
        }
    }

    fn delete_api_key(&self, n: &Namespace, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let id: Option<String> = tx
            .query_row(
                "SELECT id FROM api_keys WHERE namespace = ?1 AND name = ?2",
                params![n.as_str(), name],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        let Some(id) = id else { return Ok(false) };
        tx.execute("DELETE FROM api_keys WHERE id = ?1", params![id])
            .map_err(db)?;
        tx.execute("DELETE FROM quota_counts WHERE key_id = ?1", params![id])
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(true)
    }

    fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, namespace, name, hash, rate, quota, created_ms FROM api_keys ORDER BY namespace, name")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .map_err(db)?;
        rows.map(|r| {
            let (id, n, name, hash, rate, quota, created_ms) = r.map_err(db)?;
            Ok(ApiKeyRecord {
                id,
                namespace: ns(n)?,
                name,
                rate: rate
                    .map(|r| wisp_core::Rate::parse(&r))
                    .transpose()
                    .map_err(corrupt)?,
                quota: quota
                    .map(|q| wisp_core::Quota::parse(&q))
                    .transpose()
                    .map_err(corrupt)?,
                created_ms,
                hash,
            })
        })
        .collect()
    }

    fn save_quota_counts(&self, counts: &[(String, QuotaCount)]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO quota_counts (key_id, period_start_ms, count)
                     SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = ?1)",
                )
                .map_err(db)?;
            for (id, c) in counts {
                stmt.execute(params![id, c.period_start_ms, c.count as i64])
                    .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    fn quota_counts(&self) -> Result<Vec<(String, QuotaCount)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT key_id, period_start_ms, count FROM quota_counts")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    QuotaCount {
                        period_start_ms: r.get(1)?,
                        count: r.get::<_, i64>(2)? as u64,
                    },
                ))
            })
            .map_err(db)?;
        rows.map(|r| r.map_err(db)).collect()
    }

    fn put_secret(
        &self,
        n: &Namespace,
        name: &str,
        value: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let key = self.secret_key.as_ref().ok_or_else(|| {
            StoreError::Secrets("no secret key is configured for this store".into())
        })?;
        let (nonce, sealed) = key.seal(&secret_aad(n, name), value.as_bytes())?;
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO secrets (namespace, name, nonce, value, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![n.as_str(), name, nonce, sealed, now_ms],
            )
            .map_err(db)?;
        Ok(())
    }

    fn delete_secret(&self, n: &Namespace, name: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                "DELETE FROM secrets WHERE namespace = ?1 AND name = ?2",
                params![n.as_str(), name],
            )
            .map_err(db)?;
        Ok(changed == 1)
    }

    fn list_secrets(&self, n: &Namespace) -> Result<Vec<SecretInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, updated_ms FROM secrets WHERE namespace = ?1 ORDER BY name")
            .map_err(db)?;
        let rows = stmt
            .query_map(params![n.as_str()], |r| {
                Ok(SecretInfo {
                    namespace: n.clone(),
                    name: r.get(0)?,
                    updated_ms: r.get(1)?,
                })
            })
            .map_err(db)?;
        rows.map(|r| r.map_err(db)).collect()
    }

    fn secret_values(
        &self,
        n: &Namespace,
        names: &[String],
    ) -> Result<Vec<(String, String)>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.secret_key.as_ref().ok_or_else(|| {
            StoreError::Secrets("no secret key is configured for this store".into())
        })?;
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT nonce, value FROM secrets WHERE namespace = ?1 AND name = ?2")
            .map_err(db)?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let row: Option<(Vec<u8>, Vec<u8>)> = stmt
                .query_row(params![n.as_str(), name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db)?;
            let Some((nonce, sealed)) = row else {
                return Err(StoreError::SecretNotFound {
                    namespace: n.clone(),
                    name: name.clone(),
                });
            };
            let plain = key.open(&secret_aad(n, name), &nonce, &sealed)?;
            let value = String::from_utf8(plain)
                .map_err(|_| StoreError::Corrupt(format!("secret {name:?} is not UTF-8")))?;
            out.push((name.clone(), value));
        }
        Ok(out)
    }

    fn put_access_key(&self, k: &AccessKeyRecord, secret: &str) -> Result<(), StoreError> {
        let key = self.secret_key.as_ref().ok_or_else(|| {
            StoreError::Secrets("no secret key is configured for this store".into())
        })?;
        let (nonce, sealed) = key.seal(&format!("accesskey/{}", k.id), secret.as_bytes())?;
        self.conn()
            .execute(
                "INSERT INTO access_keys (id, namespace, role, name, nonce, secret, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![k.id, k.namespace.as_str(), k.role.as_str(), k.name, nonce, sealed, k.created_ms],
            )
            .map_err(db)?;
        Ok(())
    }

    fn delete_access_key(&self, n: &Namespace, id: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                "DELETE FROM access_keys WHERE namespace = ?1 AND id = ?2",
                params![n.as_str(), id],
            )
            .map_err(db)?;
        Ok(changed == 1)
    }

    fn access_keys(&self) -> Result<Vec<(AccessKeyRecord, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, namespace, role, name, nonce, secret, created_ms FROM access_keys ORDER BY namespace, created_ms")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for r in rows {
            let (id, n, role, name, nonce, sealed, created_ms) = r.map_err(db)?;
            let Some(key) = self.secret_key.as_ref() else {
                return Err(StoreError::Secrets(
                    "no secret key is configured for this store".into(),
                ));
            };
            let secret = key.open(&format!("accesskey/{id}"), &nonce, &sealed)?;
            let secret = String::from_utf8(secret).map_err(corrupt)?;
            out.push((
                AccessKeyRecord {
                    id,
                    namespace: ns(n)?,
                    role: Role::parse(&role).map_err(corrupt)?,
                    name,
                    created_ms,
                },
                secret,
            ));
        }
        Ok(out)
    }

    fn insert_audit(&self, batch: &[AuditEntry]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO audit_log (time_ms, namespace, actor, action, status) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db)?;
            for a in batch {
                stmt.execute(params![
                    a.time_ms,
                    a.namespace.as_str(),
                    a.actor,
                    a.action,
                    a.status
                ])
                .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    fn list_audit(
        &self,
        n: &Namespace,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT time_ms, actor, action, status FROM audit_log
                 WHERE namespace = ?1 AND time_ms >= ?2 ORDER BY time_ms DESC, rowid DESC LIMIT ?3",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![n.as_str(), since_ms, limit as i64], |r| {
                Ok(AuditEntry {
                    time_ms: r.get(0)?,
                    namespace: n.clone(),
                    actor: r.get(1)?,
                    action: r.get(2)?,
                    status: r.get(3)?,
                })
            })
            .map_err(db)?;
        rows.map(|r| r.map_err(db)).collect()
    }
}
