//! Who is calling the management API and what they may do: the node's
//! admin token (every namespace) and tokens scoped to one namespace with a
//! role. Every `/v1` request passes `authorize`, which picks the namespace
//! (`X-Wisp-Namespace`, else the token's own, else `default`), checks the
//! role against what the request needs, and records management actions in
//! the audit log.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use wisp_core::time::now_ms;
use wisp_core::{AuditEntry, Namespace, Permission, Role, TenantStore, TokenRecord};

/// The header naming the namespace a management request is about.
pub const NAMESPACE_HEADER: &str = "x-wisp-namespace";

/// The caller of one management request and the namespace it acts in.
#[derive(Debug, Clone)]
pub struct Scope {
    pub ns: Namespace,
    /// The node's admin token: may create and delete namespaces.
    pub node_admin: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Scope>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the request passed no authorization",
            )
        })
    }
}

pub(crate) fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A random secret of `bytes` bytes, hex encoded.
pub(crate) fn random_hex(bytes: usize) -> Result<String, ApiError> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = vec![0u8; bytes];
    SystemRandom::new().fill(&mut b).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no system randomness",
        )
    })?;
    Ok(hex::encode(b))
}

/// Constant-time comparison, so a token cannot be guessed byte by byte
/// from response times.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Namespaces and tokens, held in memory (the store is the record).
pub struct Tenancy {
    admin_token: String,
    namespaces: RwLock<HashSet<Namespace>>,
    /// SHA-256 of the token → its record.
    tokens: RwLock<HashMap<String, TokenRecord>>,
}

impl Tenancy {
    pub fn load(
        store: &dyn TenantStore,
        admin_token: String,
    ) -> Result<Self, wisp_core::StoreError> {
        let namespaces = store
            .list_namespaces()?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let tokens = store
            .list_tokens()?
            .into_iter()
            .map(|t| (t.hash.clone(), t))
            .collect();
        Ok(Self {
            admin_token,
            namespaces: RwLock::new(namespaces),
            tokens: RwLock::new(tokens),
        })
    }

    pub fn exists(&self, ns: &Namespace) -> bool {
        self.namespaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(ns)
    }

    pub(crate) fn set_namespace(&self, ns: &Namespace, present: bool) {
        let mut set = self.namespaces.write().unwrap_or_else(|p| p.into_inner());
        if present {
            set.insert(ns.clone());
        } else {
            set.remove(ns);
            self.tokens
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, t| t.namespace != *ns);
        }
    }

    pub(crate) fn add_token(&self, t: TokenRecord) {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(t.hash.clone(), t);
    }

    pub(crate) fn remove_token(&self, ns: &Namespace, id: &str) {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, t| !(t.namespace == *ns && t.id == id));
    }

    /// Who the bearer token belongs to: (actor, namespace it is bound to —
    /// none for the node's admin token —, role).
    pub(crate) fn identify(&self, token: &str) -> Option<(String, Option<Namespace>, Role)> {
        if same(token.as_bytes(), self.admin_token.as_bytes()) {
            return Some(("admin".into(), None, Role::Admin));
        }
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        let t = tokens.get(&sha256_hex(token))?;
        let actor = match &t.name {
            Some(n) => format!("token:{} ({n})", t.id),
            None => format!("token:{}", t.id),
        };
        Some((actor, Some(t.namespace.clone()), t.role))
    }
}

/// What a `/v1` request needs, from its method and path.
fn needed(method: &Method, path: &str) -> Permission {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    let first = seg.first().copied().unwrap_or("");
    let read = matches!(*method, Method::GET | Method::HEAD);
    match first {
        "tokens" | "apikeys" | "accesskeys" | "audit" => Permission::Admin,
        "secrets" if !read => Permission::Admin,
        "namespaces" if !read => Permission::Admin,
        "functions" if seg.get(2) == Some(&"invoke") => Permission::Invoke,
        "topics" if seg.get(2) == Some(&"events") && !read => Permission::Invoke,
        _ if read => Permission::Read,
        _ => Permission::Deploy,
    }
}

fn forbidden(msg: String) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", msg).into_response()
}

/// The `/v1` middleware: authenticate, pick the namespace, check the role,
/// run the request, and audit management actions.
pub async fn authorize(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token: send `Authorization: Bearer <token>` (the admin token is in the data dir's admin-token file; `wisp token create` makes scoped ones)",
        )
        .into_response();
    };
    let tenancy = &st.gate.tenancy;
    let Some((actor, bound, role)) = tenancy.identify(given) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not valid for this node (it may have been revoked)",
        )
        .into_response();
    };
    let asked = match req.headers().get(NAMESPACE_HEADER) {
        None => None,
        Some(v) => match v.to_str().ok().map(Namespace::new) {
            Some(Ok(n)) => Some(n),
            Some(Err(e)) => {
                return ApiError::bad_request("invalid_namespace", e.to_string()).into_response();
            }
            None => {
                return ApiError::bad_request("invalid_namespace", "X-Wisp-Namespace is not ASCII")
                    .into_response();
            }
        },
    };
    let ns = match (&bound, asked) {
        (Some(b), Some(a)) if *b != a => {
            return forbidden(format!(
                "this token belongs to namespace {b:?} and cannot act in namespace {a:?}"
            ));
        }
        (Some(b), _) => b.clone(),
        (None, Some(a)) => a,
        (None, None) => Namespace::default(),
    };
    // The full path (`/v1/...`): nesting strips the prefix from the URI.
    let path = match req.uri().path() {
        p if p.starts_with("/v1/") => p.to_string(),
        p => format!("/v1{p}"),
    };
    let need = needed(req.method(), &path);
    let creating_ns =
        path.trim_end_matches('/').ends_with("/namespaces") || path.contains("/namespaces/");
    if !creating_ns && !tenancy.exists(&ns) {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "namespace_not_found",
            format!("namespace {ns:?} does not exist (create it with `wisp ns create {ns}`)"),
        )
        .into_response();
    }
    // Writes of data (key-value entries) are not management actions.
    let kv_data = path
        .strip_prefix("/v1/kv/")
        .is_some_and(|rest| rest.trim_end_matches('/').contains('/'));
    let audit = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && need != Permission::Invoke
        && !kv_data;
    let action = format!("{} {}", req.method(), path);
    let record = |ns: Namespace, actor: String, status: StatusCode| {
        if audit {
            st.gate.access.audit(AuditEntry {
                time_ms: now_ms(),
                namespace: ns,
                actor,
                action: action.clone(),
                status: status.as_u16(),
            });
        }
    };
    if !role.allows(need) {
        let resp = forbidden(format!(
            "a {role} token may not {action} (this request needs the {} permission; ask an admin of namespace {ns:?} for a token with another role)",
            need.as_str()
        ));
        record(ns, actor, resp.status());
        return resp;
    }
    let scope = Scope {
        ns: ns.clone(),
        node_admin: bound.is_none(),
    };
    req.extensions_mut().insert(scope);
    let resp = next.run(req).await;
    record(ns, actor, resp.status());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_by_endpoint() {
        assert_eq!(needed(&Method::GET, "/v1/functions"), Permission::Read);
        assert_eq!(needed(&Method::PUT, "/v1/functions/a"), Permission::Deploy);
        assert_eq!(
            needed(&Method::POST, "/v1/functions/a/invoke"),
            Permission::Invoke
        );
        assert_eq!(
            needed(&Method::POST, "/v1/functions/a/invoke/x/y"),
            Permission::Invoke
        );
        assert_eq!(
            needed(&Method::POST, "/v1/topics/t/events"),
            Permission::Invoke
        );
        assert_eq!(needed(&Method::PUT, "/v1/topics/t"), Permission::Deploy);
        assert_eq!(needed(&Method::POST, "/v1/routes"), Permission::Deploy);
        assert_eq!(needed(&Method::GET, "/v1/tokens"), Permission::Admin);
        assert_eq!(needed(&Method::POST, "/v1/apikeys"), Permission::Admin);
        assert_eq!(needed(&Method::GET, "/v1/secrets"), Permission::Read);
        assert_eq!(needed(&Method::PUT, "/v1/secrets/A"), Permission::Admin);
    }
}
