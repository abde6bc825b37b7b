//! End-to-end tests of the API gateway and tenancy: routes (matching, path
//! parameters, hosts, conflicts, restarts), CORS, API keys, rate limits and
//! quotas, the tenancy matrix of roles × endpoint families × namespaces,
//! usage and the access log, the audit log, and secrets — against the real
//! binary over real HTTP.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Node, fixture, out};

const SPEC: fn() -> Value = || json!({"memory_mb": 64, "timeout_ms": 5000, "concurrency": 100});

async fn expect_error(r: reqwest::Response, status: u16, code: &str, needle: &str) {
    assert_eq!(r.status(), status, "expected {status} {code}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], code, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
}

async fn add_route(node: &Node, ns: &str, route: Value) -> reqwest::Response {
    node.api(Method::POST, "/v1/routes")
        .header("x-wisp-namespace", ns)
        .json(&route)
        .send()
        .await
        .unwrap()
}

async fn add_route_ok(node: &Node, ns: &str, route: Value) -> Value {
    let r = add_route(node, ns, route.clone()).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 201, "adding route {route}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// A namespace allowed routes without a host (`--shared-routes`).
async fn create_ns(node: &Node, ns: &str) {
    let r = node
        .api(Method::POST, "/v1/namespaces")
        .json(&json!({"name": ns, "shared_routes": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "creating namespace {ns}");
}

async fn create_key(node: &Node, ns: &str, body: Value) -> String {
    let r = node
        .api(Method::POST, "/v1/apikeys")
        .header("x-wisp-namespace", ns)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["key"].as_str().unwrap().to_string()
}

async fn create_token(node: &Node, ns: &str, role: &str) -> String {
    let r = node
        .api(Method::POST, "/v1/tokens")
        .header("x-wisp-namespace", ns)
        .json(&json!({"role": role, "name": format!("{role}-token")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn routes_match_params_hosts_and_conflicts_and_survive_a_restart() {
    let dir = support::temp_dir("routes");
    let mut node = Node::start(&dir, &[]);
    node.deploy_ok("items", &fixture("testfn"), SPEC()).await;
    // Through the CLI, as a user would; the host first goes to the namespace.
    for args in [
        &["ns", "domain", "add", "default", "api.shop.example"][..],
        &[
            "route",
            "add",
            "GET",
            "/echo/items/{id}",
            "--function",
            "items",
        ],
        &[
            "route",
            "add",
            "GET",
            "/echo/items/new",
            "--function",
            "items",
        ],
        &[
            "route",
            "add",
            "ANY",
            "/echo/files/{*rest}",
            "--function",
            "items",
        ],
        &[
            "route",
            "add",
            "POST",
            "/echo/orders",
            "--function",
            "items",
            "--host",
            "api.shop.example",
        ],
    ] {
        let o = node.cli(args);
        assert!(o.status.success(), "{args:?}: {}", out(&o));
        let said = if args[0] == "ns" {
            "belongs to"
        } else {
            "added route"
        };
        assert!(out(&o).contains(said), "{}", out(&o));
    }
    let ls = out(&node.cli(&["route", "ls"]));
    assert!(
        ls.contains("/echo/items/{id}") && ls.contains("api.shop.example"),
        "{ls}"
    );

    let echo = |path: &str| node.get(path).send();
    let v: Value = echo("/echo/items/42?x=1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], "/echo/items/42");
    assert_eq!(v["query"], "x=1");
    assert_eq!(v["headers"]["x-wisp-path-params"], r#"{"id":"42"}"#);
    assert_eq!(v["headers"]["x-wisp-route"], "GET /echo/items/{id}");
    // The static segment wins over the parameter.
    let v: Value = echo("/echo/items/new").await.unwrap().json().await.unwrap();
    assert_eq!(v["headers"]["x-wisp-path-params"], "{}");
    let v: Value = node
        .http
        .delete(format!("{}/echo/files/a/b/c.txt", node.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["method"], "DELETE");
    assert_eq!(
        v["headers"]["x-wisp-path-params"],
        r#"{"rest":"a/b/c.txt"}"#
    );
    // Host routing: the route answers only on its host.
    let r = node
        .post("/echo/orders")
        .header("host", "api.shop.example:8080")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    expect_error(
        node.post("/echo/orders").send().await.unwrap(),
        404,
        "no_route",
        "/echo/orders",
    )
    .await;
    // A path with routes for other methods only: 405 with Allow.
    let r = node.post("/echo/items/42").send().await.unwrap();
    assert_eq!(r.headers()["allow"], "GET");
    expect_error(r, 405, "method_not_allowed", "GET").await;

    // Conflicts are refused at creation with what they clash with.
    let f = |method: &str, path: &str| json!({"method": method, "path": path, "function": "items"});
    expect_error(
        add_route(&node, "default", f("GET", "/echo/items/{id}")).await,
        409,
        "route_exists",
        "wisp route rm",
    )
    .await;
    expect_error(
        add_route(&node, "default", f("PUT", "/echo/items/{name}")).await,
        409,
        "route_conflict",
        "/echo/items/{id}",
    )
    .await;
    expect_error(
        add_route(&node, "default", f("GET", "/v1/mine")).await,
        400,
        "invalid_route",
        "/v1",
    )
    .await;
    expect_error(
        add_route(&node, "default", f("GET", "items")).await,
        400,
        "invalid_route",
        "must start with '/'",
    )
    .await;
    expect_error(
        add_route(&node, "default", json!({"path": "/x", "function": "nope"})).await,
        404,
        "function_not_found",
        "nope",
    )
    .await;
    let r = add_route(
        &node,
        "default",
        json!({"path": "/x", "function": "items", "colour": "red"}),
    )
    .await;
    expect_error(r, 400, "invalid_json", "colour").await;

    // Routes survive a restart; a removed one stops answering.
    let o = node.cli(&["route", "rm", "GET", "/echo/items/new"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(node.stop().success());
    let node = Node::start(&dir, &[]);
    let v: Value = node
        .get("/echo/items/7")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["headers"]["x-wisp-path-params"], r#"{"id":"7"}"#);
    // /echo/items/new now matches the parameter route.
    let v: Value = node
        .get("/echo/items/new")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["headers"]["x-wisp-path-params"], r#"{"id":"new"}"#);
}

#[tokio::test]
async fn cors_preflights_and_responses_follow_the_allowed_origins() {
    let node = Node::fresh("cors", &[]);
    node.deploy_ok("items", &fixture("testfn"), SPEC()).await;
    add_route_ok(
        &node,
        "default",
        json!({"method": "GET", "path": "/echo/c", "function": "items",
               "cors": {"origins": ["https://shop.example"]}}),
    )
    .await;
    let preflight = |origin: &str| {
        node.http
            .request(Method::OPTIONS, format!("{}/echo/c", node.url))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "x-api-key, content-type")
            .send()
    };
    let r = preflight("https://shop.example").await.unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    assert_eq!(h["access-control-allow-methods"], "GET");
    assert_eq!(h["access-control-allow-headers"], "x-api-key, content-type");
    assert_eq!(h["access-control-max-age"], "600");
    // The function never ran for the preflight.
    let r = preflight("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_eq!(r.status(), 403);

    let r = node
        .get("/echo/c")
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(r.headers()["vary"].to_str().unwrap().contains("Origin"));
    let r = node
        .get("/echo/c")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the server answers; the browser withholds it"
    );
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let acts = node.activations("items", 2).await;
    assert_eq!(
        acts.len(),
        2,
        "preflights are answered by the gateway, not the function"
    );
}

#[tokio::test]
async fn api_keys_are_shown_once_checked_and_revocable() {
    let node = Node::fresh("keys", &[]);
    node.deploy_ok("items", &fixture("testfn"), SPEC()).await;
    add_route_ok(
        &node,
        "default",
        json!({"method": "GET", "path": "/echo/k/{id}", "function": "items", "auth": "api-key"}),
    )
    .await;
    let o = node.cli(&["apikey", "create", "--name", "mobile-app"]);
    assert!(o.status.success(), "{}", out(&o));
    let key = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("wk_"), "{key}");

    expect_error(
        node.get("/echo/k/1").send().await.unwrap(),
        401,
        "missing_api_key",
        "x-api-key",
    )
    .await;
    let r = node
        .get("/echo/k/1")
        .header("x-api-key", "wk_nope_nope")
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "invalid_api_key", "not valid").await;
    let r = node
        .get("/echo/k/1")
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["headers"].get("x-api-key").is_none(),
        "the function never sees the key"
    );
    assert_eq!(v["headers"]["x-wisp-api-key-name"], "mobile-app");

    // Listing never shows the key; the store keeps only its hash.
    let ls = out(&node.cli(&["apikey", "ls"]));
    assert!(ls.contains("mobile-app") && !ls.contains(&key), "{ls}");
    let db = std::fs::read(node.dir.join("wisp.db")).unwrap();
    let wal = std::fs::read(node.dir.join("wisp.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()));
    }
    // A key of another namespace does not open this namespace's routes.
    create_ns(&node, "other").await;
    let other_key = create_key(&node, "other", json!({"name": "x"})).await;
    let r = node
        .get("/echo/k/1")
        .header("x-api-key", &other_key)
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "invalid_api_key", "not valid").await;

    // Deployed with --no-direct-url, the function answers only through its routes.
    let o = node.cli(&[
        "deploy",
        "items",
        support::fixtures().join("testfn.wasm").to_str().unwrap(),
        "--no-direct-url",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    expect_error(
        node.get("/fn/items/echo").send().await.unwrap(),
        403,
        "direct_url_disabled",
        "routes",
    )
    .await;
    expect_error(
        node.get("/ns/default/fn/items/echo").send().await.unwrap(),
        403,
        "direct_url_disabled",
        "routes",
    )
    .await;
    let r = node
        .get("/echo/k/1")
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let o = node.cli(&["apikey", "revoke", "mobile-app"]);
    assert!(o.status.success(), "{}", out(&o));
    let r = node
        .get("/echo/k/1")
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "invalid_api_key", "revoked").await;
}

/// Sends `rps` requests per second for `secs` seconds (paced, several in
/// flight) and counts the 200s.
async fn paced(
    node: &Node,
    path: &str,
    key: Option<&str>,
    rps: u64,
    secs: u64,
) -> (u64, u64, reqwest::Response) {
    let total = rps * secs;
    let interval = Duration::from_nanos(1_000_000_000 / rps);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let mut rb = node.get(path);
        if let Some(k) = key {
            rb = rb.header("x-api-key", k);
        }
        tasks.push(tokio::spawn(rb.send()));
    }
    let (mut ok, mut limited, mut last_429) = (0, 0, None);
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                last_429 = Some(r);
            }
            s => panic!("unexpected status {s}"),
        }
    }
    (ok, limited, last_429.expect("no request was limited"))
}

#[tokio::test]
async fn rate_limits_admit_the_configured_rate_per_route_and_per_key() {
    let node = Node::fresh("rate", &[]);
    node.deploy_ok("items", &fixture("testfn"), SPEC()).await;
    add_route_ok(
        &node,
        "default",
        json!({"method": "GET", "path": "/echo/r", "function": "items", "rate": "20/s"}),
    )
    .await;
    // At twice the limit for 5 s, about 20/s × 5 s are admitted.
    let (ok, limited, r) = paced(&node, "/echo/r", None, 40, 5).await;
    let expected = 100.0;
    assert!(
        (ok as f64 - expected).abs() <= expected * 0.10,
        "route admitted {ok} of 200 (limited {limited}); expected {expected} ± 10%"
    );
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(r.headers()["ratelimit-limit"], "20");
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    expect_error(r, 429, "rate_limited", "20/s").await;

    // A key's own rate limit, on a route without one.
    add_route_ok(
        &node,
        "default",
        json!({"method": "GET", "path": "/echo/k", "function": "items", "auth": "api-key"}),
    )
    .await;
    let key = create_key(&node, "default", json!({"name": "fast", "rate": "10/s"})).await;
    let (ok, _, r) = paced(&node, "/echo/k", Some(&key), 20, 5).await;
    assert!(
        (45..=55).contains(&ok),
        "key admitted {ok} of 100; expected 50 ± 10%"
    );
    expect_error(r, 429, "rate_limited", "fast").await;
    // Admitted answers carry the RateLimit headers too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = node
        .get("/echo/k")
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ratelimit-limit"], "10");
}

#[tokio::test]
async fn quotas_refuse_when_used_up_and_survive_a_restart() {
    let dir = support::temp_dir("quota");
    let mut node = Node::start(&dir, &[]);
    node.deploy_ok("items", &fixture("testfn"), SPEC()).await;
    add_route_ok(
        &node,
        "default",
        json!({"method": "GET", "path": "/echo/q", "function": "items", "auth": "api-key"}),
    )
    .await;
    let o = node.cli(&["apikey", "create", "--name", "partner", "--quota", "3/day"]);
    assert!(o.status.success(), "{}", out(&o));
    let key = String::from_utf8(o.stdout).unwrap().trim().to_string();
    for left in [2, 1, 0] {
        let r = node
            .get("/echo/q")
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["ratelimit-remaining"],
            left.to_string().as_str()
        );
    }
    let r = node
        .get("/echo/q")
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    let reset: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        reset > 0 && reset <= 86_400,
        "retry-after {reset} s is until the next UTC day"
    );
    expect_error(r, 429, "quota_exceeded", "3/day").await;
    assert!(out(&node.cli(&["apikey", "ls"])).contains("3/day"));

    assert!(node.stop().success());
    let node = Node::start(&dir, &[]);
    let r = node
        .get("/echo/q")
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    expect_error(r, 429, "quota_exceeded", "partner").await;
    let ls = out(&node.cli(&["apikey", "ls"]));
    assert!(
        ls.lines()
            .any(|l| l.contains("partner") && l.contains(" 3 ")),
        "{ls}"
    );
}

/// What a request needs, as the tenancy matrix checks it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Need {
    Read,
    Invoke,
    Deploy,
    Admin,
    NodeAdmin,
}

fn allows(role: &str, need: Need) -> bool {
    match need {
        Need::Read => matches!(role, "reader" | "deployer" | "admin"),
        Need::Invoke => matches!(role, "invoker" | "deployer" | "admin"),
        Need::Deploy => matches!(role, "deployer" | "admin"),
        Need::Admin => role == "admin",
        Need::NodeAdmin => false,
    }
}

#[tokio::test]
async fn tenancy_matrix_roles_by_endpoint_family_by_namespace() {
    let node = Node::fresh("tenancy", &[]);
    for ns in ["a", "b"] {
        create_ns(&node, ns).await;
        let r = node.deploy_in(ns, "f", &fixture("testfn"), SPEC()).await;
        assert!(r.status().is_success());
        let r = node
            .api(Method::PUT, "/v1/topics/t")
            .header("x-wisp-namespace", ns)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let digest = {
        let art: Value = node
            .api(Method::POST, "/v1/artifacts")
            .body(fixture("testfn"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        art["digest"].as_str().unwrap().to_string()
    };
    // An activation in b, to be looked up by id from a.
    let r = node
        .api(Method::POST, "/v1/functions/f/invoke/echo")
        .header("x-wisp-namespace", "b")
        .send()
        .await
        .unwrap();
    let b_activation = r.headers()["x-wisp-activation-id"]
        .to_str()
        .unwrap()
        .to_string();

    type Req = (&'static str, Need, Method, String, Option<Value>);
    // `tag` makes what a request creates unique, so each attempt can succeed.
    let requests = |tag: &str| -> Vec<Req> {
        let role = tag;
        vec![
            (
                "functions",
                Need::Read,
                Method::GET,
                "/v1/functions".into(),
                None,
            ),
            (
                "functions",
                Need::Read,
                Method::GET,
                "/v1/functions/f".into(),
                None,
            ),
            (
                "functions",
                Need::Deploy,
                Method::PUT,
                "/v1/functions/f".into(),
                Some(json!({"artifact": digest, "spec": SPEC()})),
            ),
            (
                "artifacts",
                Need::Deploy,
                Method::POST,
                "/v1/artifacts".into(),
                Some(json!("bytes")),
            ),
            (
                "invoke",
                Need::Invoke,
                Method::POST,
                "/v1/functions/f/invoke/echo".into(),
                None,
            ),
            (
                "invoke",
                Need::Invoke,
                Method::POST,
                "/v1/functions/f/invoke/echo?async=true".into(),
                None,
            ),
            (
                "activations",
                Need::Read,
                Method::GET,
                "/v1/activations".into(),
                None,
            ),
            ("usage", Need::Read, Method::GET, "/v1/usage".into(), None),
            (
                "usage",
                Need::Read,
                Method::GET,
                "/v1/usage?by=route".into(),
                None,
            ),
            (
                "access-log",
                Need::Read,
                Method::GET,
                "/v1/access-log".into(),
                None,
            ),
            ("routes", Need::Read, Method::GET, "/v1/routes".into(), None),
            (
                "routes",
                Need::Deploy,
                Method::POST,
                "/v1/routes".into(),
                Some(json!({"path": format!("/echo/{role}"), "function": "f"})),
            ),
            (
                "triggers",
                Need::Read,
                Method::GET,
                "/v1/triggers".into(),
                None,
            ),
            (
                "triggers",
                Need::Deploy,
                Method::POST,
                "/v1/triggers".into(),
                Some(
                    json!({"name": format!("on-{role}"), "function": "f", "kind": "topic", "topic": "t"}),
                ),
            ),
            ("topics", Need::Read, Method::GET, "/v1/topics".into(), None),
            (
                "topics",
                Need::Deploy,
                Method::PUT,
                format!("/v1/topics/t-{role}"),
                None,
            ),
            (
                "publish",
                Need::Invoke,
                Method::POST,
                "/v1/topics/t/events".into(),
                Some(json!({"specversion": "1.0", "id": role, "source": "/test", "type": "x"})),
            ),
            ("dlq", Need::Read, Method::GET, "/v1/dlq".into(), None),
            (
                "dlq",
                Need::Deploy,
                Method::POST,
                "/v1/dlq/replay".into(),
                Some(json!({"all": true})),
            ),
            (
                "secrets",
                Need::Read,
                Method::GET,
                "/v1/secrets".into(),
                None,
            ),
            (
                "secrets",
                Need::Admin,
                Method::PUT,
                format!("/v1/secrets/S_{}", role.to_uppercase().replace('-', "_")),
                Some(json!({"value": "v"})),
            ),
            (
                "apikeys",
                Need::Admin,
                Method::GET,
                "/v1/apikeys".into(),
                None,
            ),
            (
                "apikeys",
                Need::Admin,
                Method::POST,
                "/v1/apikeys".into(),
                Some(json!({"name": role})),
            ),
            (
                "tokens",
                Need::Admin,
                Method::GET,
                "/v1/tokens".into(),
                None,
            ),
            ("audit", Need::Admin, Method::GET, "/v1/audit".into(), None),
            (
                "namespaces",
                Need::NodeAdmin,
                Method::POST,
                "/v1/namespaces".into(),
                Some(json!({"name": format!("n-{role}")})),
            ),
        ]
    };
    let send = |token: &str, ns: Option<&str>, r: &Req| {
        let (_, _, method, path, body) = r;
        let mut rb = node
            .http
            .request(method.clone(), format!("{}{path}", node.url))
            .bearer_auth(token);
        if let Some(ns) = ns {
            rb = rb.header("x-wisp-namespace", ns);
        }
        match body {
            Some(Value::String(s)) => rb.body(s.clone()),
            Some(b) if path.contains("/events") => rb
                .header("content-type", "application/cloudevents+json")
                .body(b.to_string()),
            Some(b) => rb.json(b),
            None => rb,
        }
        .send()
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for role in ["reader", "invoker", "deployer", "admin"] {
        let token = create_token(&node, "a", role).await;
        let base = requests(role);
        for (i, req) in base.iter().enumerate() {
            let (family, need, method, path, _) = req;
            // Own namespace: allowed or 403 by role (the token's namespace
            // is the default, and naming it explicitly is the same).
            for ns in [None, Some("a")] {
                let tag = format!("{role}_{}", if ns.is_some() { "x" } else { "y" });
                let req = &requests(&tag)[i];
                let status = send(&token, ns, req).await.unwrap().status().as_u16();
                let want_ok = allows(role, *need);
                let ok = if want_ok {
                    (200..300).contains(&status)
                } else {
                    status == 403
                };
                checked += 1;
                if !ok {
                    failures.push(format!(
                        "{role} {family} {method} {path} in own ns ({ns:?}): got {status}, want {}",
                        if want_ok { "2xx" } else { "403" }
                    ));
                }
            }
            // Another namespace: always 403.
            let status = send(&token, Some("b"), req)
                .await
                .unwrap()
                .status()
                .as_u16();
            checked += 1;
            if status != 403 {
                failures.push(format!(
                    "{role} {family} {method} {path} in namespace b: got {status}, want 403"
                ));
            }
        }
        // Another namespace's activation by id: not found, even for admin.
        if allows(role, Need::Read) {
            let r = node
                .http
                .get(format!("{}/v1/activations/{b_activation}", node.url))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            checked += 1;
            if r.status() != 404 {
                failures.push(format!("{role}: activation of b by id: got {}", r.status()));
            }
        }
    }
    // No token, a revoked token: 401.
    let r = node
        .http
        .get(format!("{}/v1/functions", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let t = create_token(&node, "a", "reader").await;
    let tokens: Value = node
        .api(Method::GET, "/v1/tokens")
        .header("x-wisp-namespace", "a")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = tokens.as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = node
        .api(Method::DELETE, &format!("/v1/tokens/{id}"))
        .header("x-wisp-namespace", "a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = node
        .http
        .get(format!("{}/v1/functions", node.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // b is untouched by everything a's tokens tried.
    let routes: Value = node
        .api(Method::GET, "/v1/routes")
        .header("x-wisp-namespace", "b")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(routes, json!([]));
    assert!(
        failures.is_empty(),
        "{} of {checked} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 300, "{checked}");

    // The CLI: --ns on every command; a scoped token acts in its own namespace.
    let deployer = create_token(&node, "a", "deployer").await;
    let o = std::process::Command::new(support::WISP)
        .args(["ls"])
        .env("WISP_DATA_DIR", &node.dir)
        .env("WISP_TOKEN", &deployer)
        .output()
        .unwrap();
    assert!(out(&o).contains("/ns/a/fn/f/"), "{}", out(&o));
    let o = std::process::Command::new(support::WISP)
        .args(["ls", "--ns", "b"])
        .env("WISP_DATA_DIR", &node.dir)
        .env("WISP_TOKEN", &deployer)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        out(&o).contains("belongs to namespace \"a\""),
        "{}",
        out(&o)
    );
    let ls = out(&node.cli(&["ns", "ls"]));
    assert!(
        ls.contains("a\n") && ls.contains("b\n") && ls.contains("default"),
        "{ls}"
    );
    // A namespace with functions cannot be deleted.
    let o = node.cli(&["ns", "rm", "b"]);
    assert!(out(&o).contains("still holds 1 function"), "{}", out(&o));
}

#[tokio::test]
async fn usage_access_log_and_audit_record_who_did_what() {
    let node = Node::fresh("usage", &[]);
    create_ns(&node, "shop").await;
    let deployer = create_token(&node, "shop", "deployer").await;
    let o = std::process::Command::new(support::WISP)
        .args(["deploy", "items"])
        .arg(support::fixtures().join("testfn.wasm"))
        .env("WISP_DATA_DIR", &node.dir)
        .env("WISP_TOKEN", &deployer)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    add_route_ok(
        &node,
        "shop",
        json!({"method": "GET", "path": "/echo/u/{id}", "function": "items", "auth": "api-key"}),
    )
    .await;
    add_route_ok(
        &node,
        "shop",
        json!({"method": "GET", "path": "/status/{code}", "function": "items"}),
    )
    .await;
    let key = create_key(&node, "shop", json!({"name": "mobile"})).await;
    for i in 0..5 {
        let r = node
            .get(&format!("/echo/u/{i}"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(node.get("/echo/u/9").send().await.unwrap().status(), 401);
    for _ in 0..2 {
        assert_eq!(node.get("/status/503").send().await.unwrap().status(), 503);
    }
    tokio::time::sleep(Duration::from_millis(400)).await; // written in batches

    let by_route: Value = node.json_ns("shop", "/v1/usage?by=route&since=1h").await;
    let row = |v: &Value, g: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["group"] == g)
            .cloned()
            .unwrap_or_else(|| panic!("no {g} in {v}"))
    };
    let echo = row(&by_route, "GET /echo/u/{id}");
    assert_eq!(
        (echo["requests"].as_u64(), echo["errors_4xx"].as_u64()),
        (Some(6), Some(1))
    );
    assert!(echo["bytes_out"].as_u64().unwrap() > 5 * 100);
    assert!(echo["gb_seconds"].as_f64().unwrap() > 0.0);
    assert!(echo["p99_ms"].as_f64().unwrap() >= echo["p50_ms"].as_f64().unwrap());
    let status = row(&by_route, "GET /status/{code}");
    assert_eq!(status["errors_5xx"].as_u64(), Some(2));
    let by_key: Value = node.json_ns("shop", "/v1/usage?by=key").await;
    assert_eq!(row(&by_key, "mobile")["requests"].as_u64(), Some(5));
    let by_fn: Value = node.json_ns("shop", "/v1/usage?by=function").await;
    assert_eq!(row(&by_fn, "items")["requests"].as_u64(), Some(8));

    let metrics = node.metrics().await;
    for line in [
        r#"wisp_gateway_requests_total{namespace="shop",route="GET /status/{code}",class="5xx"} 2"#,
        r#"wisp_gateway_requests_total{namespace="shop",route="GET /echo/u/{id}",class="2xx"} 5"#,
        r#"wisp_gateway_requests_total{namespace="shop",route="GET /echo/u/{id}",class="4xx"} 1"#,
        "wisp_gateway_routes 2",
        r#"wisp_access_log_dropped_total{reason="queue_full"} 0"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in metrics:\n{metrics}"
        );
    }

    // The CLI, as in the issue.
    let o = node.cli(&["usage", "--ns", "shop", "--by", "route", "--since", "24h"]);
    assert!(out(&o).contains("GET /echo/u/{id}"), "{}", out(&o));
    let o = node.cli(&[
        "access-log",
        "--ns",
        "shop",
        "--route",
        "/status/{code}",
        "--status",
        "5xx",
        "--since",
        "1h",
    ]);
    let text = out(&o);
    assert_eq!(
        text.lines().filter(|l| l.contains("/status/503")).count(),
        2,
        "{text}"
    );
    let log: Value = node.json_ns("shop", "/v1/access-log?key=mobile").await;
    let e = &log[0];
    assert_eq!(e["key"], "mobile");
    assert_eq!(e["status"], 200);
    let act = e["activation_id"].as_str().unwrap();
    let a: Value = node
        .json_ns("shop", &format!("/v1/activations/{act}"))
        .await;
    assert_eq!(a["function"], "items");
    // Other namespaces see none of it.
    let none: Value = node.json("/v1/access-log").await;
    assert_eq!(none, json!([]));

    // Audit: the deployer's deploy, the admin's route and key, never the key itself.
    let audit: Value = node.json_ns("shop", "/v1/audit").await;
    let actions: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["status"]
            )
        })
        .collect();
    let text = actions.join("\n");
    assert!(
        actions.iter().any(|a| a.starts_with("token:")
            && a.contains("deployer-token")
            && a.contains("PUT /v1/functions/items 201")),
        "{text}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a.starts_with("admin POST /v1/routes 201")),
        "{text}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a.starts_with("admin POST /v1/apikeys 201")),
        "{text}"
    );
    assert!(
        !text.contains("invoke"),
        "invocations are not management actions: {text}"
    );
    let o = node.cli(&["audit", "--ns", "shop"]);
    assert!(out(&o).contains("POST /v1/routes"), "{}", out(&o));
}

#[tokio::test]
async fn secrets_reach_functions_and_nowhere_else() {
    let dir = support::temp_dir("secrets");
    let log = dir.join("serve.log");
    let node = Node::start_logged(&dir, &[], &log, &[("WISP_LOG", "debug")]);
    create_ns(&node, "shop").await;
    let value = "sk_live_4f9c2e7d1b8a";
    let o = node.cli_stdin(
        &["secret", "set", "--ns", "shop", "STRIPE_KEY"],
        format!("{value}\n").as_bytes(),
    );
    assert!(o.status.success(), "{}", out(&o));
    // A function that references a secret that does not exist: 400 naming it.
    let r = node
        .deploy_in(
            "shop",
            "pay",
            &fixture("testfn"),
            json!({"secrets": ["MISSING_ONE"]}),
        )
        .await;
    expect_error(r, 400, "secret_not_found", "MISSING_ONE").await;
    let r = node
        .deploy_in(
            "shop",
            "pay",
            &fixture("testfn"),
            json!({"secrets": ["STRIPE_KEY"]}),
        )
        .await;
    assert!(r.status().is_success());
    let seen = node
        .get("/ns/shop/fn/pay/env/STRIPE_KEY")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(seen, value, "the function sees the value");
    // A function that prints its secret: the activation log masks it.
    let r = node
        .get("/ns/shop/fn/pay/printenv/STRIPE_KEY")
        .send()
        .await
        .unwrap();
    let act = r.headers()["x-wisp-activation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(r.text().await.unwrap(), "printed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = node
        .json_ns("shop", &format!("/v1/activations/{act}"))
        .await;
    assert!(
        a["logs"].as_str().unwrap().contains("STRIPE_KEY=***"),
        "{a}"
    );
    let logs_cli = out(&node.cli(&["logs", "--ns", "shop", "pay"]));
    assert!(logs_cli.contains("STRIPE_KEY=***"), "{logs_cli}");
    // A function of another namespace cannot reference it.
    create_ns(&node, "other").await;
    let r = node
        .deploy_in(
            "other",
            "pay",
            &fixture("testfn"),
            json!({"secrets": ["STRIPE_KEY"]}),
        )
        .await;
    expect_error(r, 400, "secret_not_found", "STRIPE_KEY").await;

    // Updating the secret reaches the (warm) function.
    let o = node.cli_stdin(
        &["secret", "set", "--ns", "shop", "STRIPE_KEY"],
        b"sk_live_rotated_77",
    );
    assert!(o.status.success());
    let seen = node
        .get("/ns/shop/fn/pay/env/STRIPE_KEY")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(seen, "sk_live_rotated_77");

    let mut shown = logs_cli.clone();
    for args in [
        &["secret", "ls", "--ns", "shop"][..],
        &["secret", "get", "--ns", "shop", "STRIPE_KEY"],
        &["ls", "--ns", "shop"],
        &["audit", "--ns", "shop"],
    ] {
        let o = node.cli(args);
        assert!(o.status.success(), "{args:?}: {}", out(&o));
        shown.push_str(&out(&o));
    }
    assert!(shown.contains("STRIPE_KEY"), "{shown}");
    let fn_json = node.json_ns("shop", "/v1/functions/pay").await.to_string();
    let api_json = node.json_ns("shop", "/v1/secrets").await.to_string();
    // Bad input about a secret does not echo the value back.
    let r = node
        .api(Method::PUT, "/v1/secrets/STRIPE_KEY")
        .header("x-wisp-namespace", "shop")
        .body(format!("{{\"value\": \"{value}\", \"oops\": 1}}"))
        .send()
        .await
        .unwrap();
    let err = r.text().await.unwrap();
    assert!(err.contains("invalid_json"), "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut files = vec![("node log", std::fs::read(&log).unwrap())];
    for f in ["wisp.db", "wisp.db-wal", "events.db", "events.db-wal"] {
        if let Ok(b) = std::fs::read(dir.join(f)) {
            files.push((f, b));
        }
    }
    for v in [value, "sk_live_rotated_77"] {
        for (what, text) in [
            ("CLI output", &shown),
            ("function JSON", &fn_json),
            ("secrets JSON", &api_json),
            ("error", &err),
        ] {
            assert!(
                !text.contains(v),
                "the secret appears in the {what}: {text}"
            );
        }
        for (what, bytes) in &files {
            assert!(
                !bytes.windows(v.len()).any(|w| w == v.as_bytes()),
                "the secret appears in plain text in {what}"
            );
        }
    }
    assert!(
        files.iter().any(|(w, b)| *w == "node log" && !b.is_empty()),
        "the node logged nothing at debug level"
    );
}

/// Makes keys and tokens with PyJWT (and `cryptography`), as an identity
/// provider would: prints the public keys' paths and the tokens as JSON.
const JWT_SCRIPT: &str = r#"
import json, sys, time, jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, ec
out_dir, hs_old, hs_new = sys.argv[1], sys.argv[2], sys.argv[3]
rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
def pub(k, name):
    path = f"{out_dir}/{name}.pem"
    with open(path, "wb") as f:
        f.write(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path
now = int(time.time())
ok = {"iss": "https://id.example", "aud": "shop", "sub": "user-7", "exp": now + 600}
def claims(**kw):
    c = dict(ok); c.update(kw); return c
print(json.dumps({
    "rs_pem": pub(rsa_key, "rs"), "es_pem": pub(ec_key, "es"),
    "rs_good": jwt.encode(ok, rsa_key, algorithm="RS256"),
    "es_good": jwt.encode(claims(aud=["other", "shop"]), ec_key, algorithm="ES256"),
    "hs_good": jwt.encode(ok, hs_old, algorithm="HS256"),
    "hs_new": jwt.encode(ok, hs_new, algorithm="HS256"),
    "expired": jwt.encode(claims(exp=now - 3600), rsa_key, algorithm="RS256"),
    "wrong_aud": jwt.encode(claims(aud="admin"), rsa_key, algorithm="RS256"),
    "wrong_iss": jwt.encode(claims(iss="https://evil.example"), rsa_key, algorithm="RS256"),
    "forged": jwt.encode(ok, other_rsa, algorithm="RS256"),
    "alg_none": jwt.encode(ok, None, algorithm="none"),
    "no_exp": jwt.encode({"iss": "https://id.example", "aud": "shop"}, rsa_key, algorithm="RS256"),
}))
"#;

#[tokio::test]
async fn jwt_routes_verify_hs256_rs256_es256_and_their_claims() {
    let node = Node::fresh("jwt", &[]);
    node.deploy_ok("items", &fixture("testfn"), SPEC()).await;
    let python = std::env::var("WISP_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = std::process::Command::new(&python)
        .args(["-c", JWT_SCRIPT])
        .arg(&node.dir)
        .args([
            "hs-old-shared-key-0123456789",
            "hs-new-shared-key-9876543210",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {python}: {e} (scripts/test makes a venv with PyJWT and sets WISP_PYTHON)"
            )
        });
    assert!(
        o.status.success(),
        "the PyJWT script failed (scripts/test installs pyjwt[crypto] into its venv and sets WISP_PYTHON): {}",
        out(&o)
    );
    let t: Value = serde_json::from_slice(&o.stdout).unwrap();
    let o = node.cli_stdin(
        &["secret", "set", "JWT_HS"],
        b"hs-old-shared-key-0123456789",
    );
    assert!(o.status.success(), "{}", out(&o));

    let missing = node.cli(&[
        "route",
        "add",
        "GET",
        "/echo/x",
        "--function",
        "items",
        "--auth",
        "jwt",
        "--jwt-hs256-secret",
        "NOPE",
    ]);
    assert!(!missing.status.success());
    assert!(out(&missing).contains("NOPE"), "{}", out(&missing));
    let o = node.cli(&[
        "route",
        "add",
        "GET",
        "/echo/me",
        "--function",
        "items",
        "--auth",
        "jwt",
        "--jwt-issuer",
        "https://id.example",
        "--jwt-audience",
        "shop",
        "--jwt-hs256-secret",
        "JWT_HS",
        "--jwt-rs256-key",
        t["rs_pem"].as_str().unwrap(),
        "--jwt-es256-key",
        t["es_pem"].as_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let call = |token: Option<&str>| {
        let mut rb = node.get("/echo/me");
        if let Some(tk) = token {
            rb = rb.bearer_auth(tk);
        }
        rb.send()
    };
    for good in ["rs_good", "es_good", "hs_good"] {
        let r = call(t[good].as_str()).await.unwrap();
        assert_eq!(r.status(), 200, "{good}");
        let v: Value = r.json().await.unwrap();
        let claims: Value =
            serde_json::from_str(v["headers"]["x-wisp-jwt-claims"].as_str().unwrap()).unwrap();
        assert_eq!(claims["sub"], "user-7", "{good}");
    }
    expect_error(call(None).await.unwrap(), 401, "missing_token", "Bearer").await;
    for (bad, why) in [
        ("expired", "expired"),
        ("wrong_aud", "audience"),
        ("wrong_iss", "issuer"),
        ("forged", "signature"),
        ("alg_none", "\"none\""),
        ("no_exp", "exp"),
        ("hs_new", "signature"),
    ] {
        expect_error(
            call(t[bad].as_str()).await.unwrap(),
            401,
            "invalid_token",
            why,
        )
        .await;
    }
    // Rotating the shared secret takes effect at once.
    let o = node.cli_stdin(
        &["secret", "set", "JWT_HS"],
        b"hs-new-shared-key-9876543210",
    );
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(call(t["hs_new"].as_str()).await.unwrap().status(), 200);
    expect_error(
        call(t["hs_good"].as_str()).await.unwrap(),
        401,
        "invalid_token",
        "signature",
    )
    .await;
    assert_eq!(call(t["rs_good"].as_str()).await.unwrap().status(), 200);
}
