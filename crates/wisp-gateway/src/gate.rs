//! The gateway's live state: tenancy (namespaces, tokens), the route table,
//! API keys with their limiters and quotas, and the access/audit log
//! writer. Changes go to the store first, then replace the in-memory view.

use crate::access::{AccessLog, AccessLogSettings};
use crate::error::ApiError;
use crate::jwt::Verifier;
use crate::limits::{QuotaCounter, RateLimiter};
use crate::routes::{Conflict, Domains, LiveRoute, RouteTable};
use crate::tenancy::{Tenancy, random_hex, sha256_hex};
use axum::http::StatusCode;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use wisp_core::time::now_ms;
use wisp_core::{
    AccessKeyRecord, AccessLogStore, ApiKeyRecord, JwtKey, Namespace, Quota, Rate, Role,
    RouteRecord, RouteSpec, StoreError, TenantStore, TokenRecord,
};

/// An API key with its live limiter and quota count.
pub struct LiveKey {
    pub record: ApiKeyRecord,
    /// The name as a header value, made once (`x-wisp-api-key-name`).
    pub name_header: Option<http::HeaderValue>,
    pub limiter: Option<RateLimiter>,
    pub quota: Option<QuotaCounter>,
}

type Keys = Arc<RwLock<HashMap<String, Arc<LiveKey>>>>;

pub struct Gate {
    pub tenancy: Tenancy,
    pub store: Arc<dyn TenantStore>,
    pub access_store: Arc<dyn AccessLogStore>,
    pub access: Arc<AccessLog>,
    routes: RwLock<Arc<RouteTable>>,
    /// SHA-256 of the key → key.
    keys: Keys,
    /// Serializes route changes (build, store, swap).
    changing: tokio::sync::Mutex<()>,
    /// Access keys for the Lambda Invoke API: id → (record, secret).
    access_keys: RwLock<HashMap<String, (AccessKeyRecord, String)>>,
    /// Namespaces the node admin allows routes without a host.
    pub(crate) shared: RwLock<HashSet<Namespace>>,
}

fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Exists(what) => ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            format!("{what} already exists: pick another name or remove it first"),
        ),
        StoreError::SecretNotFound { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "secret_not_found", e.to_string())
        }
        e => {
            tracing::error!(error = %e, "store error");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    }
}

/// Runs a store call on the blocking pool; store errors become API errors.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(store_err)
}

/// Builds a route's live state; its JWT verifier reads the HS256 secret
/// from the store (so call it off the request path).
fn live_route(record: RouteRecord, store: &dyn TenantStore) -> Arc<LiveRoute> {
    let jwt = record.spec.jwt.as_ref().map(|cfg| {
        let hs256 = cfg.keys.iter().find_map(|k| match k {
            JwtKey::HS256 { secret } => Some(secret.clone()),
            _ => None,
        });
        let value = match hs256 {
            None => None,
            Some(name) => match store.secret_values(&record.namespace, std::slice::from_ref(&name))
            {
                Ok(mut v) => v.pop().map(|(_, v)| v),
                Err(e) => return Err(e.to_string()),
            },
        };
        Verifier::new(cfg, value.as_deref())
    });
    LiveRoute::new(record, jwt)
}

/// Routes whose JWT keys use the secret `name`.
fn uses_secret(r: &LiveRoute, name: &str) -> bool {
    r.record.spec.jwt.as_ref().is_some_and(|j| {
        j.keys
            .iter()
            .any(|k| matches!(k, JwtKey::HS256 { secret } if secret == name))
    })
}

/// What creating a key returns: the record and, once, the key itself.
pub struct NewSecret<T> {
    pub record: T,
    pub secret: String,
}

impl Gate {
    pub fn load(
        store: Arc<dyn TenantStore>,
        access_store: Arc<dyn AccessLogStore>,
        admin_token: String,
        settings: AccessLogSettings,
    ) -> Result<Arc<Self>, StoreError> {
        let tenancy = Tenancy::load(store.as_ref(), admin_token)?;
        let routes: Vec<_> = store
            .list_routes()?
            .into_iter()
            .map(|r| live_route(r, store.as_ref()))
            .collect();
        let domains: Domains = Arc::new(
            store
                .list_domains()?
                .into_iter()
                .map(|(h, n, _)| (h, n))
                .collect(),
        );
        let shared: HashSet<Namespace> = store.shared_routes_namespaces()?.into_iter().collect();
        crate::ownership::warn_stored(&routes, &domains, &shared);
        let table = match RouteTable::build(routes.clone(), domains.clone()) {
            Ok(t) => t,
            Err((_, bad)) => {
                // Stored routes were checked when added; if they clash now,
                // serve all but the clashing ones rather than none.
                tracing::error!(route = %bad.label, "stored route conflicts with another; skipped");
                let rest = routes
                    .into_iter()
                    .filter(|r| !Arc::ptr_eq(r, &bad))
                    .collect();
                RouteTable::build(rest, domains).unwrap_or_default()
            }
        };
        let counts: HashMap<String, _> = store.quota_counts()?.into_iter().collect();
        let keys: HashMap<String, Arc<LiveKey>> = store
            .list_api_keys()?
            .into_iter()
            .map(|k| {
                let live = LiveKey {
                    name_header: http::HeaderValue::from_str(&k.name).ok(),
                    limiter: k.rate.map(RateLimiter::new),
                    quota: k
                        .quota
                        .map(|q| QuotaCounter::new(q, counts.get(&k.id).copied())),
                    record: k,
                };
                (live.record.hash.clone(), Arc::new(live))
            })
            .collect();
        let keys: Keys = Arc::new(RwLock::new(keys));
        let access_keys = store
            .access_keys()?
            .into_iter()
            .map(|(k, secret)| (k.id.clone(), (k, secret)))
            .collect();
        let (k2, s2) = (keys.clone(), store.clone());
        let access = AccessLog::start(
            access_store.clone(),
            store.clone(),
            settings,
            Box::new(move || save_quotas(&k2, s2.as_ref())),
        )
        .map_err(|e| StoreError::Db(format!("starting the access log writer: {e}")))?;
        Ok(Arc::new(Self {
            tenancy,
            store,
            access_store,
            access,
            routes: RwLock::new(Arc::new(table)),
            keys,
            changing: tokio::sync::Mutex::new(()),
            access_keys: RwLock::new(access_keys),
            shared: RwLock::new(shared),
        }))
    }

    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Serves `table` from now on (callers hold `changing`).
    pub(crate) fn swap(&self, table: RouteTable) {
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }

    /// The lock route and host changes hold while they build and swap.
    pub(crate) async fn changing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changing.lock().await
    }

    pub fn key(&self, given: &str) -> Option<Arc<LiveKey>> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sha256_hex(given))
            .cloned()
    }

    // ---- namespaces and tokens ----

    pub async fn create_namespace(&self, ns: &Namespace) -> Result<bool, ApiError> {
        let (store, n) = (self.store.clone(), ns.clone());
        let created = blocking(move || store.put_namespace(&n, now_ms())).await?;
        self.tenancy.set_namespace(ns, true);
        Ok(created)
    }

    pub async fn delete_namespace(&self, ns: &Namespace) -> Result<bool, ApiError> {
        let _guard = self.changing.lock().await;
        let (store, n) = (self.store.clone(), ns.clone());
        let deleted = blocking(move || store.delete_namespace(&n)).await?;
        self.tenancy.set_namespace(ns, false);
        self.shared
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ns);
        // Its routes and hosts go with it.
        let current = self.routes();
        let rest: Vec<_> = current
            .routes
            .iter()
            .filter(|r| r.record.namespace != *ns)
            .cloned()
            .collect();
        let domains: Domains = Arc::new(
            current
                .domains
                .iter()
                .filter(|(_, n)| *n != ns)
                .map(|(h, n)| (h.clone(), n.clone()))
                .collect(),
        );
        self.swap(RouteTable::build(rest, domains).unwrap_or_default());
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, k| k.record.namespace != *ns);
        self.access_keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (k, _)| k.namespace != *ns);
        Ok(deleted)
    }

    pub async fn create_token(
        &self,
        ns: &Namespace,
        role: Role,
        name: Option<String>,
    ) -> Result<NewSecret<TokenRecord>, ApiError> {
        let id = random_hex(6)?;
        let secret = format!("wisp_{id}_{}", random_hex(20)?);
        let record = TokenRecord {
            id,
            namespace: ns.clone(),
            role,
            name,
            created_ms: now_ms(),
            hash: sha256_hex(&secret),
        };
        let (store, r) = (self.store.clone(), record.clone());
        blocking(move || store.put_token(&r)).await?;
        self.tenancy.add_token(record.clone());
        Ok(NewSecret { record, secret })
    }

    pub async fn delete_token(&self, ns: &Namespace, id: &str) -> Result<bool, ApiError> {
        let (store, n, i) = (self.store.clone(), ns.clone(), id.to_string());
        let deleted = blocking(move || store.delete_token(&n, &i)).await?;
        self.tenancy.remove_token(ns, id);
        Ok(deleted)
    }

    pub async fn list_tokens(&self, ns: &Namespace) -> Result<Vec<TokenRecord>, ApiError> {
        let store = self.store.clone();
        let all = blocking(move || store.list_tokens()).await?;
        Ok(all.into_iter().filter(|t| t.namespace == *ns).collect())
    }

    // ---- routes ----

    pub async fn add_route(
        &self,
        ns: &Namespace,
        mut spec: RouteSpec,
    ) -> Result<RouteRecord, ApiError> {
        spec.normalize()
            .map_err(|e| ApiError::bad_request("invalid_route", e.to_string()))?;
        let _guard = self.changing.lock().await;
        let record = RouteRecord {
            id: spec.id(),
            namespace: ns.clone(),
            spec,
            created_ms: now_ms(),
        };
        let (store, r) = (self.store.clone(), record.clone());
        let new = blocking(move || Ok(live_route(r, store.as_ref()))).await?;
        if let Some(Err(e)) = &new.jwt {
            return Err(ApiError::bad_request("invalid_route", format!("jwt: {e}")));
        }
        let current = self.routes();
        crate::ownership::may_add(self, &current, &new)?;
        let mut routes = current.routes.clone();
        routes.push(new.clone());
        let table = RouteTable::build(routes, current.domains.clone()).map_err(|(c, _)| match c {
            Conflict::Same(_) => ApiError::new(
                StatusCode::CONFLICT,
                "route_exists",
                format!(
                    "route {} already exists: remove it first with `wisp route rm`",
                    new.label
                ),
            ),
            Conflict::Path { with, reason } => ApiError::new(
                StatusCode::CONFLICT,
                "route_conflict",
                format!(
                    "route {} conflicts with the existing path {with:?} ({reason}); use the same parameter names at the same place, or another path",
                    new.label
                ),
            ),
        })?;
        let (store, r) = (self.store.clone(), record.clone());
        blocking(move || store.put_route(&r)).await?;
        self.swap(table);
        Ok(record)
    }

    pub async fn delete_route(&self, ns: &Namespace, id: &str) -> Result<bool, ApiError> {
        let _guard = self.changing.lock().await;
        let current = self.routes();
        if !current
            .routes
            .iter()
            .any(|r| r.record.id == id && r.record.namespace == *ns)
        {
            return Ok(false);
        }
        let (store, n, i) = (self.store.clone(), ns.clone(), id.to_string());
        blocking(move || store.delete_route(&n, &i)).await?;
        let rest: Vec<_> = current
            .routes
            .iter()
            .filter(|r| !(r.record.id == id && r.record.namespace == *ns))
            .cloned()
            .collect();
        // Removing a route cannot create a conflict.
        self.swap(RouteTable::build(rest, current.domains.clone()).unwrap_or_default());
        Ok(true)
    }

    /// Rebuilds the JWT verifiers of routes that use a secret that changed.
    pub async fn refresh_secret(&self, ns: &Namespace, name: &str) -> Result<(), ApiError> {
        let _guard = self.changing.lock().await;
        let current = self.routes();
        if !current
            .routes
            .iter()
            .any(|r| r.record.namespace == *ns && uses_secret(r, name))
        {
            return Ok(());
        }
        let (store, routes, n, nm) = (
            self.store.clone(),
            current.routes.clone(),
            ns.clone(),
            name.to_string(),
        );
        let rebuilt = blocking(move || {
            Ok(routes
                .into_iter()
                .map(|r| {
                    if r.record.namespace == n && uses_secret(&r, &nm) {
                        live_route(r.record.clone(), store.as_ref())
                    } else {
                        r
                    }
                })
                .collect::<Vec<_>>())
        })
        .await?;
        // The same routes as before: no new conflicts.
        self.swap(RouteTable::build(rebuilt, current.domains.clone()).unwrap_or_default());
        Ok(())
    }

    pub fn list_routes(&self, ns: &Namespace) -> Vec<RouteRecord> {
        self.routes()
            .routes
            .iter()
            .filter(|r| r.record.namespace == *ns)
            .map(|r| r.record.clone())
            .collect()
    }

    // ---- API keys ----

    pub async fn create_key(
        &self,
        ns: &Namespace,
        name: String,
        rate: Option<Rate>,
        quota: Option<Quota>,
    ) -> Result<NewSecret<ApiKeyRecord>, ApiError> {
        wisp_core::tenancy::check_key_name(&name)
            .map_err(|e| ApiError::bad_request("invalid_name", format!("API key {e}")))?;
        let id = random_hex(6)?;
        let secret = format!("wk_{id}_{}", random_hex(20)?);
        let record = ApiKeyRecord {
            id,
            namespace: ns.clone(),
            name,
            rate,
            quota,
            created_ms: now_ms(),
            hash: sha256_hex(&secret),
        };
        let (store, r) = (self.store.clone(), record.clone());
        blocking(move || store.put_api_key(&r)).await?;
        let live = LiveKey {
            name_header: http::HeaderValue::from_str(&record.name).ok(),
            limiter: rate.map(RateLimiter::new),
            quota: quota.map(|q| QuotaCounter::new(q, None)),
            record: record.clone(),
        };
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.hash.clone(), Arc::new(live));
        Ok(NewSecret { record, secret })
    }

    pub async fn delete_key(&self, ns: &Namespace, name: &str) -> Result<bool, ApiError> {
        let (store, n, nm) = (self.store.clone(), ns.clone(), name.to_string());
        let deleted = blocking(move || store.delete_api_key(&n, &nm)).await?;
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, k| !(k.record.namespace == *ns && k.record.name == name));
        Ok(deleted)
    }

    /// Keys of a namespace with their quota use in the current period.
    pub fn list_keys(&self, ns: &Namespace) -> Vec<(ApiKeyRecord, Option<u64>)> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = keys
            .values()
            .filter(|k| k.record.namespace == *ns)
            .map(|k| (k.record.clone(), k.quota.as_ref().map(|q| q.used())))
            .collect();
        v.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        v
    }

    // ---- access keys (Lambda Invoke API) ----

    pub async fn create_access_key(
        &self,
        ns: &Namespace,
        role: Role,
        name: Option<String>,
    ) -> Result<NewSecret<AccessKeyRecord>, ApiError> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let raw = random_hex(10)?;
        let id: String = "WISP"
            .chars()
            .chain(
                hex::decode(&raw)
                    .unwrap_or_default()
                    .iter()
                    .flat_map(|b| [b >> 3, b & 0x07])
                    .take(16)
                    .map(|v| ALPHABET[v as usize % ALPHABET.len()] as char),
            )
            .collect();
        let secret = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            hex::decode(random_hex(30)?).unwrap_or_default(),
        );
        let record = AccessKeyRecord {
            id,
            namespace: ns.clone(),
            role,
            name,
            created_ms: now_ms(),
        };
        let (store, r, sec) = (self.store.clone(), record.clone(), secret.clone());
        blocking(move || store.put_access_key(&r, &sec)).await?;
        self.access_keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.id.clone(), (record.clone(), secret.clone()));
        Ok(NewSecret { record, secret })
    }

    pub async fn delete_access_key(&self, ns: &Namespace, id: &str) -> Result<bool, ApiError> {
        let (store, n, i) = (self.store.clone(), ns.clone(), id.to_string());
        let deleted = blocking(move || store.delete_access_key(&n, &i)).await?;
        self.access_keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (k, _)| !(k.namespace == *ns && k.id == id));
        Ok(deleted)
    }

    pub fn list_access_keys(&self, ns: &Namespace) -> Vec<AccessKeyRecord> {
        let mut v: Vec<_> = self
            .access_keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|(k, _)| k.namespace == *ns)
            .map(|(k, _)| k.clone())
            .collect();
        v.sort_by_key(|k| k.created_ms);
        v
    }

    /// An access key and its secret, by id.
    pub fn access_key(&self, id: &str) -> Option<(AccessKeyRecord, String)> {
        self.access_keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// The gateway's metrics: requests by route and status class, the
    /// route count, access-log entries lost.
    pub fn encode_metrics(
        &self,
        e: &mut wisp_core::metrics::DescriptorEncoder,
    ) -> std::fmt::Result {
        use std::sync::atomic::Ordering;
        use wisp_core::metrics::{counter, gauge};
        let routes = self.routes();
        let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        counter(
            e,
            "wisp_gateway_requests",
            "Requests on routes, by namespace, route and status class.",
            routes.routes.iter().flat_map(|r| {
                r.answers.iter().enumerate().filter_map(move |(i, n)| {
                    let n = n.load(Ordering::Relaxed);
                    (n > 0).then(|| {
                        (
                            vec![
                                ("namespace", r.record.namespace.as_str()),
                                ("route", r.label.as_str()),
                                ("class", classes.get(i).copied().unwrap_or("5xx")),
                            ],
                            n,
                        )
                    })
                })
            }),
        )?;
        gauge(
            e,
            "wisp_gateway_routes",
            "Routes configured.",
            [(Vec::new(), routes.routes.len() as i64)],
        )?;
        self.access.dropped.encode(
            e,
            "wisp_access_log_dropped",
            "Access and audit log entries lost, by reason: the writer fell behind (queue_full), the disk was full (no_space), another storage failure (write_failed).",
        )
    }

    /// Writes pending access-log entries and quota counts; stops the writer.
    pub async fn shutdown(&self) {
        self.access.flush_and_stop().await;
    }
}

fn save_quotas(keys: &Keys, store: &dyn TenantStore) {
    let changed: Vec<_> = keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter_map(|k| {
            let q = k.quota.as_ref()?;
            Some((k.record.id.clone(), q.unsaved()?))
        })
        .collect();
    if !changed.is_empty()
        && let Err(e) = store.save_quota_counts(&changed)
    {
        tracing::error!(error = %e, "saving quota counts failed");
    }
}
