//! Route lookup with 10 routes and with 10,000 routes, side by side in one
//! run: the per-lookup time of each (p50, p99, p99.9) and what the large
//! table adds. `cargo bench -p wisp-gateway --bench routes [-- OUT.json]`.
//!
//! The tables hold a realistic mix per service: a static path, a path with
//! a parameter, a catch-all, one method-specific pair and one route on its
//! own host. Lookups draw uniformly from paths that match.

use std::sync::Arc;
use std::time::Instant;
use wisp_core::{FunctionName, Namespace, RouteAuth, RouteRecord, RouteSpec};
use wisp_gateway::routes::{LiveRoute, Lookup, RouteTable};

fn route(method: Option<&str>, path: String, host: Option<String>) -> Arc<LiveRoute> {
    let spec = RouteSpec {
        method: method.map(str::to_string),
        path,
        host,
        function: FunctionName::new("f").unwrap(),
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

/// A request: (host, method, path).
type Hit = (Option<String>, &'static str, String);

/// `n` routes (5 per service) and the requests that hit them.
fn table(n: usize) -> (RouteTable, Vec<Hit>) {
    let mut routes = Vec::new();
    let mut hits = Vec::new();
    for s in 0..n.div_ceil(5) {
        routes.push(route(Some("GET"), format!("/svc{s}/health"), None));
        routes.push(route(Some("GET"), format!("/svc{s}/items/{{id}}"), None));
        routes.push(route(Some("POST"), format!("/svc{s}/items/{{id}}"), None));
        routes.push(route(None, format!("/svc{s}/files/{{*rest}}"), None));
        routes.push(route(
            Some("GET"),
            "/orders/{id}".to_string(),
            Some(format!("api{s}.shop.example")),
        ));
        hits.push((None, "GET", format!("/svc{s}/health")));
        hits.push((None, "GET", format!("/svc{s}/items/{}", s * 7 + 1)));
        hits.push((None, "POST", format!("/svc{s}/items/{}", s * 7 + 2)));
        hits.push((None, "DELETE", format!("/svc{s}/files/a/b/c{s}.txt")));
        hits.push((
            Some(format!("api{s}.shop.example")),
            "GET",
            format!("/orders/{s}"),
        ));
    }
    routes.truncate(n);
    hits.truncate(n);
    // Every host the routes name belongs to their namespace, as on a node.
    let domains: std::sync::Arc<std::collections::HashMap<_, _>> = std::sync::Arc::new(
        routes
            .iter()
            .filter_map(|r| {
                let h = r.record.spec.host.clone()?;
                Some((h, r.record.namespace.clone()))
            })
            .collect(),
    );
    let t =
        RouteTable::build(routes, domains).unwrap_or_else(|_| panic!("conflicting bench routes"));
    (t, hits)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((p / 100.0 * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

/// Times `rounds` single lookups; returns sorted nanoseconds.
fn measure(
    t: &RouteTable,
    hits: &[(Option<String>, &'static str, String)],
    rounds: usize,
) -> Vec<u64> {
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let (host, method, path) = &hits[(rng % hits.len() as u64) as usize];
        let start = Instant::now();
        let found = matches!(
            t.lookup(host.as_deref(), method, path),
            Lookup::Found { .. }
        );
        let ns = start.elapsed().as_nanos() as u64;
        assert!(std::hint::black_box(found), "{method} {path} did not match");
        out.push(ns);
    }
    out.sort_unstable();
    out
}

fn main() {
    let out_path = std::env::args().skip(1).find(|a| a.ends_with(".json"));
    let (small, small_hits) = table(10);
    let (large, large_hits) = table(10_000);
    // Timer overhead, to report it alongside.
    let mut timer: Vec<u64> = (0..200_000)
        .map(|_| {
            let s = Instant::now();
            s.elapsed().as_nanos() as u64
        })
        .collect();
    timer.sort_unstable();
    let rounds = 1_000_000;
    // Interleave the two tables so drift affects both alike.
    let mut s_all = Vec::new();
    let mut l_all = Vec::new();
    for _ in 0..5 {
        s_all.extend(measure(&small, &small_hits, rounds / 5));
        l_all.extend(measure(&large, &large_hits, rounds / 5));
    }
    s_all.sort_unstable();
    l_all.sort_unstable();
    let row = |v: &[u64]| serde_json::json!({"p50_ns": percentile(v, 50.0), "p99_ns": percentile(v, 99.0), "p999_ns": percentile(v, 99.9)});
    let result = serde_json::json!({
        "lookups_each": rounds,
        "routes_10": row(&s_all),
        "routes_10000": row(&l_all),
        "added_p50_ns": percentile(&l_all, 50.0) as i64 - percentile(&s_all, 50.0) as i64,
        "added_p99_ns": percentile(&l_all, 99.0) as i64 - percentile(&s_all, 99.0) as i64,
        "timer_overhead_p50_ns": percentile(&timer, 50.0),
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    if let Some(p) = out_path {
        std::fs::write(&p, result.to_string()).expect("writing the result");
    }
}
