//! Who owns which routes (docs/gateway.md, "Who owns which routes"):
//! hosts are assigned to namespaces by the node admin; a route with a host
//! needs a namespace that owns the host; routes without a host share one
//! space that only namespaces the admin allows may use, and there a route
//! may not overlap another namespace's route, whatever the specificity. A
//! refusal never names the other namespace or its function.

use crate::error::ApiError;
use crate::gate::{Gate, blocking};
use crate::routes::{Domains, LiveRoute, RouteTable};
use axum::http::StatusCode;
use std::collections::HashSet;
use std::sync::Arc;
use wisp_core::time::now_ms;
use wisp_core::{Namespace, StoreError, templates_overlap};

/// Whether namespace `ns` may add `new` to the table `current`.
pub(crate) fn may_add(gate: &Gate, current: &RouteTable, new: &LiveRoute) -> Result<(), ApiError> {
    let ns = &new.record.namespace;
    let spec = &new.record.spec;
    match &spec.host {
        Some(h) => {
            if current.domains.get(h) != Some(ns) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "host_not_owned",
                    format!(
                        "host {h:?} is not assigned to namespace {ns:?}, so its routes cannot take it: ask the node admin to run `wisp ns domain add {ns} {h}` (`wisp ns domain ls {ns}` lists the namespace's hosts)"
                    ),
                ));
            }
        }
        None => {
            if !gate.shares_routes(ns) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "shared_routes_not_allowed",
                    format!(
                        "namespace {ns:?} may not add routes without --host (they answer on every host no namespace owns): give --host with one of its hosts (`wisp ns domain ls {ns}`), or ask the node admin for `wisp ns update {ns} --shared-routes`"
                    ),
                ));
            }
            let clash = current.routes.iter().any(|r| {
                r.record.namespace != *ns
                    && r.record.spec.host.is_none()
                    && templates_overlap(&r.record.spec.path, &spec.path)
            });
            if clash {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "route_conflict",
                    format!(
                        "path {:?} overlaps a route of another namespace in the shared host-less space (some request path could match both, whatever the method): pick another path prefix, or add the route with --host and one of your namespace's hosts",
                        spec.path
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Logs stored routes that break the model (they were added before it):
/// they keep serving as before, so a node upgrade breaks no client.
pub(crate) fn warn_stored(
    routes: &[Arc<LiveRoute>],
    domains: &Domains,
    shared: &HashSet<Namespace>,
) {
    for (i, r) in routes.iter().enumerate() {
        let ns = &r.record.namespace;
        let why = match &r.record.spec.host {
            Some(h) if domains.get(h) != Some(ns) => Some(format!(
                "its host {h:?} is not assigned to namespace {ns:?}; it is served only while no namespace owns the host (`wisp ns domain add {ns} {h}`)"
            )),
            Some(_) => None,
            None if !shared.contains(ns) => Some(format!(
                "namespace {ns:?} is not allowed routes without a host (`wisp ns update {ns} --shared-routes`)"
            )),
            None => routes[..i]
                .iter()
                .find(|o| {
                    o.record.namespace != *ns
                        && o.record.spec.host.is_none()
                        && templates_overlap(&o.record.spec.path, &r.record.spec.path)
                })
                .map(|o| {
                    format!(
                        "its path overlaps {} of namespace {:?} in the shared host-less space",
                        o.label, o.record.namespace
                    )
                }),
        };
        if let Some(why) = why {
            tracing::warn!(
                namespace = %ns,
                route = %r.label,
                "stored route predates route ownership and breaks it: {why}; it keeps serving until removed (`wisp route rm`)"
            );
        }
    }
}

impl Gate {
    /// Whether `ns` may add routes without a host.
    pub fn shares_routes(&self, ns: &Namespace) -> bool {
        self.shared
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(ns)
    }

    pub async fn set_shared_routes(&self, ns: &Namespace, allowed: bool) -> Result<(), ApiError> {
        let (store, n) = (self.store.clone(), ns.clone());
        blocking(move || store.set_shared_routes(&n, allowed)).await?;
        let mut set = self.shared.write().unwrap_or_else(|p| p.into_inner());
        if allowed {
            set.insert(ns.clone());
        } else {
            set.remove(ns);
        }
        Ok(())
    }

    /// Hosts assigned to `ns`.
    pub fn domains_of(&self, ns: &Namespace) -> Vec<String> {
        let mut v: Vec<String> = self
            .routes()
            .domains
            .iter()
            .filter(|(_, n)| *n == ns)
            .map(|(h, _)| h.clone())
            .collect();
        v.sort();
        v
    }

    /// Assigns `host` to `ns`; false when it was already. 409 when another
    /// namespace holds it (the caller is the node admin: it is named).
    pub async fn add_domain(&self, ns: &Namespace, host: &str) -> Result<bool, ApiError> {
        let _guard = self.changing().await;
        let (store, n, h) = (self.store.clone(), ns.clone(), host.to_string());
        let added = blocking(move || match store.put_domain(&h, &n, now_ms()) {
            Err(StoreError::Exists(what)) => Ok(Err(what)),
            other => other.map(Ok),
        })
        .await?
        .map_err(|what| {
            ApiError::new(
                StatusCode::CONFLICT,
                "host_taken",
                format!(
                    "{what} is already assigned: remove it there first with `wisp ns domain rm`"
                ),
            )
        })?;
        self.rebuild_with(|d| {
            d.insert(host.to_string(), ns.clone());
        });
        Ok(added)
    }

    /// Takes `host` from `ns`; 409 while routes of it use the host.
    pub async fn remove_domain(&self, ns: &Namespace, host: &str) -> Result<bool, ApiError> {
        let _guard = self.changing().await;
        let using = self
            .routes()
            .routes
            .iter()
            .filter(|r| r.record.namespace == *ns && r.record.spec.host.as_deref() == Some(host))
            .count();
        if using > 0 {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "host_in_use",
                format!(
                    "{using} route(s) of namespace {ns:?} answer on host {host:?}: remove them first (`wisp route ls`, `wisp route rm`)"
                ),
            ));
        }
        let (store, n, h) = (self.store.clone(), ns.clone(), host.to_string());
        let removed = blocking(move || store.delete_domain(&n, &h)).await?;
        self.rebuild_with(|d| {
            d.remove(host);
        });
        Ok(removed)
    }

    /// Rebuilds the route table with the hosts changed by `change`.
    fn rebuild_with(&self, change: impl FnOnce(&mut std::collections::HashMap<String, Namespace>)) {
        let current = self.routes();
        let mut domains = (*current.domains).clone();
        change(&mut domains);
        // The same routes, placed by their hosts' new owners: a route that
        // moves between tables cannot clash, as each table holds routes
        // that fit together in the full table.
        let table = RouteTable::build(current.routes.clone(), Arc::new(domains));
        match table {
            Ok(t) => self.swap(t),
            Err((_, bad)) => {
                tracing::error!(route = %bad.label, "route table could not be rebuilt after a host change");
            }
        }
    }
}
