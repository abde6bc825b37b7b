//! The route table: host + method + path template → route, looked up in a
//! radix tree (`matchit`) per host, so lookup cost grows with the path's
//! length, not with the number of routes. Static segments win over
//! parameters, parameters over catch-alls; a route for one method wins over
//! one for any method. The table is rebuilt on every change (routes are
//! few changes, many lookups) and swapped in whole.
//!
//! Hosts belong to namespaces (`wisp ns domain add`): a request whose Host
//! is assigned to a namespace is matched only against that namespace's
//! routes (those for the host, then its host-less ones). Every other Host
//! (an unassigned name, an IP address, `localhost`) is matched against the
//! shared host-less space. See docs/gateway.md, "Who owns which routes".

use crate::jwt::Verifier;
use crate::limits::RateLimiter;
use std::collections::HashMap;
use std::sync::Arc;
use wisp_core::{Namespace, RouteRecord};

/// A route with its live state (its rate limiter, its JWT verifier).
pub struct LiveRoute {
    pub record: RouteRecord,
    pub label: String,
    /// `label` as a header value, made once (`x-wisp-route`).
    pub label_header: Option<http::HeaderValue>,
    pub limiter: Option<RateLimiter>,
    /// With `auth = jwt`: the verifier, or why it could not be built (a
    /// missing secret): then the route refuses every request.
    pub jwt: Option<Result<Verifier, String>>,
    /// Answers by status class (1xx..5xx), for `/metrics`.
    pub answers: [std::sync::atomic::AtomicU64; 5],
}

impl LiveRoute {
    /// A route's live state; `jwt` is its verifier when it has `auth = jwt`.
    pub fn new(record: RouteRecord, jwt: Option<Result<Verifier, String>>) -> Arc<Self> {
        let label = record.spec.label();
        Arc::new(Self {
            label_header: http::HeaderValue::from_str(&label).ok(),
            label,
            limiter: record.spec.rate.map(RateLimiter::new),
            jwt,
            answers: Default::default(),
            record,
        })
    }

    pub fn count(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.answers[class].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

struct PathEntry {
    /// (method or None for any, route)
    methods: Vec<(Option<String>, Arc<LiveRoute>)>,
}

#[derive(Default)]
struct HostTable {
    router: matchit::Router<usize>,
    paths: Vec<PathEntry>,
    by_template: HashMap<String, usize>,
}

/// What a lookup found.
pub enum Lookup<'a> {
    Found {
        route: &'a Arc<LiveRoute>,
        params: Vec<(&'a str, &'a str)>,
    },
    /// The path matches routes, none for this method.
    MethodNotAllowed(Vec<String>),
    NotFound,
}

/// Hosts assigned to namespaces: host → its namespace.
pub type Domains = Arc<HashMap<String, Namespace>>;

#[derive(Default)]
pub struct RouteTable {
    /// Every host-less route: for requests on hosts no namespace owns.
    any_host: HostTable,
    /// Routes for a host, of the namespace that owns it.
    by_host: HashMap<String, HostTable>,
    /// Host-less routes per namespace: for requests on its own hosts.
    by_ns: HashMap<Namespace, HostTable>,
    /// Routes for a host no namespace owns or another namespace owns
    /// (stored before hosts had owners): served on unowned hosts only.
    legacy_by_host: HashMap<String, HostTable>,
    pub domains: Domains,
    pub routes: Vec<Arc<LiveRoute>>,
}

/// Why a route cannot be added.
#[derive(Debug)]
pub enum Conflict {
    /// The same host, method and path exist (in this or another namespace).
    Same(String),
    /// The path clashes with another route's path (e.g. `/a/{x}` and `/a/{y}`).
    Path { with: String, reason: String },
}

impl HostTable {
    fn insert(&mut self, route: Arc<LiveRoute>) -> Result<(), Conflict> {
        let spec = &route.record.spec;
        if let Some(&i) = self.by_template.get(&spec.path) {
            let entry = &mut self.paths[i];
            if let Some((_, other)) = entry.methods.iter().find(|(m, _)| *m == spec.method) {
                return Err(Conflict::Same(format!(
                    "{} (namespace {:?}, function {:?})",
                    other.label, other.record.namespace, other.record.spec.function
                )));
            }
            entry.methods.push((spec.method.clone(), route));
            return Ok(());
        }
        let i = self.paths.len();
        if let Err(e) = self.router.insert(spec.path.clone(), i) {
            let with = match &e {
                matchit::InsertError::Conflict { with } => with.clone(),
                _ => String::new(),
            };
            return Err(Conflict::Path {
                with,
                reason: e.to_string(),
            });
        }
        self.by_template.insert(spec.path.clone(), i);
        self.paths.push(PathEntry {
            methods: vec![(spec.method.clone(), route)],
        });
        Ok(())
    }

    fn lookup<'a>(&'a self, method: &str, path: &'a str) -> Lookup<'a> {
        let Ok(m) = self.router.at(path) else {
            return Lookup::NotFound;
        };
        let entry = &self.paths[*m.value];
        let by_method = |m: &str| {
            entry
                .methods
                .iter()
                .find(|(em, _)| em.as_deref() == Some(m))
        };
        // HEAD is answered by the GET route when there is no HEAD route.
        let exact = by_method(method)
            .or_else(|| entry.methods.iter().find(|(em, _)| em.is_none()))
            .or_else(|| (method == "HEAD").then(|| by_method("GET")).flatten());
        match exact {
            Some((_, route)) => Lookup::Found {
                route,
                params: m.params.iter().collect(),
            },
            None => Lookup::MethodNotAllowed(
                entry
                    .methods
                    .iter()
                    .filter_map(|(m, _)| m.clone())
                    .collect(),
            ),
        }
    }

    /// Routes at the path (any method), for CORS preflights.
    fn at<'a>(&'a self, path: &'a str) -> Option<&'a [(Option<String>, Arc<LiveRoute>)]> {
        let m = self.router.at(path).ok()?;
        Some(&self.paths[*m.value].methods)
    }
}

impl RouteTable {
    /// Builds a table; fails on the first conflict.
    pub fn build(
        routes: Vec<Arc<LiveRoute>>,
        domains: Domains,
    ) -> Result<Self, (Conflict, Arc<LiveRoute>)> {
        let mut t = RouteTable::default();
        for r in &routes {
            let ns = &r.record.namespace;
            match &r.record.spec.host {
                Some(h) if domains.get(h) == Some(ns) => {
                    t.by_host.entry(h.clone()).or_default().insert(r.clone())
                }
                Some(h) => t
                    .legacy_by_host
                    .entry(h.clone())
                    .or_default()
                    .insert(r.clone()),
                None => t
                    .any_host
                    .insert(r.clone())
                    .and_then(|()| t.by_ns.entry(ns.clone()).or_default().insert(r.clone())),
            }
            .map_err(|c| (c, r.clone()))?;
        }
        t.routes = routes;
        t.domains = domains;
        Ok(t)
    }

    /// The tables a request on `host` is matched against, in order.
    fn tables(&self, host: Option<&str>) -> [Option<&HostTable>; 2] {
        match host {
            Some(h) => match self.domains.get(h) {
                Some(owner) => [self.by_host.get(h), self.by_ns.get(owner)],
                None => [self.legacy_by_host.get(h), Some(&self.any_host)],
            },
            None => [None, Some(&self.any_host)],
        }
    }

    /// `host` without its port, lower-case.
    pub fn lookup<'a>(&'a self, host: Option<&str>, method: &str, path: &'a str) -> Lookup<'a> {
        for t in self.tables(host).into_iter().flatten() {
            match t.lookup(method, path) {
                Lookup::NotFound => {}
                found => return found,
            }
        }
        Lookup::NotFound
    }

    /// Routes matching the path on this host, any method.
    pub fn at<'a>(
        &'a self,
        host: Option<&str>,
        path: &'a str,
    ) -> &'a [(Option<String>, Arc<LiveRoute>)] {
        self.tables(host)
            .into_iter()
            .flatten()
            .find_map(|t| t.at(path))
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_core::{FunctionName, Namespace, RouteAuth, RouteSpec};

    fn live(method: Option<&str>, path: &str, host: Option<&str>, f: &str) -> Arc<LiveRoute> {
        let spec = RouteSpec {
            method: method.map(str::to_string),
            path: path.into(),
            host: host.map(str::to_string),
            function: FunctionName::new(f).unwrap(),
            auth: RouteAuth::None,
            jwt: None,
            cors: None,
            rate: None,
        };
        let record = RouteRecord {
            id: spec.id(),
            namespace: Namespace::default(),
            spec,
            created_ms: 0,
        };
        LiveRoute::new(record, None)
    }

    fn live_in(ns: &str, path: &str, host: Option<&str>, f: &str) -> Arc<LiveRoute> {
        let mut r = live(None, path, host, f).record.clone();
        r.namespace = Namespace::new(ns).unwrap();
        LiveRoute::new(r, None)
    }

    #[test]
    fn an_owned_host_sees_only_its_namespace() {
        let domains: Domains = Arc::new(
            [("b.example".to_string(), Namespace::new("b").unwrap())]
                .into_iter()
                .collect(),
        );
        let t = RouteTable::build(
            vec![
                live_in("a", "/x/{id}", None, "ax"),
                live_in("b", "/y", None, "by"),
                live_in("b", "/z", Some("b.example"), "bz"),
                // Stored before b owned the host: not served there.
                live_in("a", "/w", Some("b.example"), "aw"),
            ],
            domains,
        )
        .ok()
        .unwrap();
        assert_eq!(found(&t, Some("b.example"), "GET", "/x/1"), "404");
        assert_eq!(found(&t, Some("b.example"), "GET", "/w"), "404");
        assert_eq!(found(&t, Some("b.example"), "GET", "/y"), "by ");
        assert_eq!(found(&t, Some("b.example"), "GET", "/z"), "bz ");
        assert_eq!(found(&t, Some("127.0.0.1"), "GET", "/x/1"), "ax id=1");
        assert_eq!(found(&t, Some("127.0.0.1"), "GET", "/z"), "404");
        assert!(t.at(Some("b.example"), "/x/1").is_empty());
    }

    fn found(t: &RouteTable, host: Option<&str>, m: &str, p: &str) -> String {
        match t.lookup(host, m, p) {
            Lookup::Found { route, params } => {
                let ps: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{} {}", route.record.spec.function, ps.join(","))
            }
            Lookup::MethodNotAllowed(ms) => format!("405 {}", ms.join(",")),
            Lookup::NotFound => "404".into(),
        }
    }

    #[test]
    fn most_specific_wins() {
        let domains: Domains = Arc::new(
            [("api.shop.example".to_string(), Namespace::default())]
                .into_iter()
                .collect(),
        );
        let t = RouteTable::build(
            vec![
                live(Some("GET"), "/items/{id}", None, "item"),
                live(Some("GET"), "/items/new", None, "newform"),
                live(None, "/items/{id}", None, "anyitem"),
                live(Some("GET"), "/files/{*rest}", None, "files"),
                live(
                    Some("GET"),
                    "/items/{id}",
                    Some("api.shop.example"),
                    "shopitem",
                ),
                live(Some("POST"), "/orders", None, "orders"),
            ],
            domains,
        )
        .ok()
        .unwrap();
        assert_eq!(found(&t, None, "GET", "/items/42"), "item id=42");
        assert_eq!(found(&t, None, "GET", "/items/new"), "newform ");
        assert_eq!(found(&t, None, "DELETE", "/items/42"), "anyitem id=42");
        assert_eq!(
            found(&t, None, "GET", "/files/a/b.txt"),
            "files rest=a/b.txt"
        );
        assert_eq!(
            found(&t, Some("api.shop.example"), "GET", "/items/7"),
            "shopitem id=7"
        );
        assert_eq!(
            found(&t, Some("api.shop.example"), "POST", "/orders"),
            "orders "
        );
        assert_eq!(found(&t, None, "GET", "/orders"), "405 POST");
        assert_eq!(found(&t, None, "HEAD", "/items/new"), "newform ");
        assert_eq!(found(&t, None, "GET", "/nothing"), "404");
    }

    #[test]
    fn conflicts_are_rejected() {
        let same = RouteTable::build(
            vec![
                live(Some("GET"), "/a/{id}", None, "x"),
                live(Some("GET"), "/a/{id}", None, "y"),
            ],
            Domains::default(),
        );
        assert!(matches!(same, Err((Conflict::Same(_), _))));
        let clash = RouteTable::build(
            vec![
                live(Some("GET"), "/a/{id}", None, "x"),
                live(Some("POST"), "/a/{name}", None, "y"),
            ],
            Domains::default(),
        );
        assert!(matches!(clash, Err((Conflict::Path { .. }, _))));
    }

    #[test]
    fn the_most_parameters_a_template_may_have_build_and_match() {
        // 27 parameters made matchit panic (route_match fuzz target);
        // templates are capped at MAX_PARAMS, which the table must take.
        let path: String = (0..wisp_core::MAX_PARAMS)
            .map(|i| format!("/{{p{i}}}"))
            .collect();
        let mut spec = live(Some("GET"), &path, None, "many").record.spec.clone();
        spec.normalize().unwrap();
        let t = RouteTable::build(
            vec![live(Some("GET"), &path, None, "many")],
            Domains::default(),
        )
        .ok()
        .unwrap();
        let req: String = (0..wisp_core::MAX_PARAMS)
            .map(|i| format!("/{i}"))
            .collect();
        assert!(found(&t, None, "GET", &req).starts_with("many p0=0,"));
    }
}
