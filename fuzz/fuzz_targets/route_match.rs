//! Route templates and matching: any template is accepted or refused with
//! a reason, a table of accepted routes builds or names its conflict, a
//! lookup only ever answers with a route whose template matches the path,
//! and two templates that both match one path are always reported as
//! overlapping (what keeps one namespace from shadowing another's route).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use wisp_core::{FunctionName, Namespace, RouteAuth, RouteRecord, RouteSpec, templates_overlap};
use wisp_gateway::routes::{Lookup, LiveRoute, RouteTable};

/// Does `template` match `path`, by the documented rules: `{x}` is one
/// segment (matchit lets it be empty), `{*x}` the non-empty rest,
/// anything else itself.
fn matches(template: &str, path: &str) -> bool {
    let (Some(t), Some(p)) = (template.strip_prefix('/'), path.strip_prefix('/')) else {
        return false;
    };
    let ts: Vec<&str> = t.split('/').collect();
    let mut rest = p;
    for (i, seg) in ts.iter().enumerate() {
        if seg.starts_with("{*") {
            return !rest.is_empty();
        }
        let (here, tail) = match rest.split_once('/') {
            Some((h, tl)) => (h, Some(tl)),
            None => (rest, None),
        };
        let ok = seg.starts_with('{') || *seg == here;
        if !ok {
            return false;
        }
        match tail {
            Some(tl) => {
                if i + 1 == ts.len() {
                    return false;
                }
                rest = tl;
            }
            None => return i + 1 == ts.len(),
        }
    }
    false
}

fuzz_target!(|input: (Vec<(bool, String)>, Vec<String>)| {
    let (templates, paths) = input;
    let mut live = Vec::new();
    for (i, (get, path)) in templates.into_iter().take(16).enumerate() {
        let mut spec = RouteSpec {
            method: get.then(|| "GET".to_string()),
            path,
            host: None,
            function: FunctionName::new(format!("f{i}")).expect("a function name"),
            auth: RouteAuth::None,
            jwt: None,
            cors: None,
            rate: None,
        };
        if spec.normalize().is_err() {
            continue;
        }
        let record = RouteRecord {
            id: spec.id(),
            namespace: Namespace::default(),
            spec,
            created_ms: 0,
        };
        live.push(LiveRoute::new(record, None));
    }
    for path in paths.iter().take(16) {
        let hits: Vec<&str> = live
            .iter()
            .map(|r| r.record.spec.path.as_str())
            .filter(|t| matches(t, path))
            .collect();
        for a in &hits {
            for b in &hits {
                assert!(
                    templates_overlap(a, b),
                    "{a:?} and {b:?} both match {path:?} but are not seen to overlap"
                );
            }
        }
    }
    let Ok(table) = RouteTable::build(live, Default::default()) else {
        return;
    };
    for path in paths.iter().take(16) {
        if let Lookup::Found { route, .. } = table.lookup(None, "GET", path) {
            let t: &Arc<LiveRoute> = route;
            assert!(
                matches(&t.record.spec.path, path),
                "{path:?} answered by {:?}",
                t.record.spec.path
            );
        }
    }
});
