//! End-to-end tests of tenant isolation and identity (issue 13, items
//! 1–6): route ownership across namespaces, forged `x-wisp-*` headers,
//! deleting a namespace with its data, private data files, secret masking
//! at the log cap and error pages, and `/metrics` behind a token — against
//! the real binary over real HTTP.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Node, fixture, out};

async fn expect_error(r: reqwest::Response, status: u16, code: &str) -> String {
    let got = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(got, status, "expected {status} {code}: {v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    v["error"]["message"].as_str().unwrap().to_string()
}

async fn add_route(node: &Node, ns: &str, route: Value) -> reqwest::Response {
    node.api(Method::POST, "/v1/routes")
        .header("x-wisp-namespace", ns)
        .json(&route)
        .send()
        .await
        .unwrap()
}

async fn add_route_ok(node: &Node, ns: &str, route: Value) {
    let r = add_route(node, ns, route.clone()).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 201, "adding route {route} in {ns}: {body}");
}

/// `GET path` on the node with a Host header: (status, body).
async fn get_on(node: &Node, host: &str, path: &str) -> (u16, String) {
    let r = node.get(path).header("host", host).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn cli_ok(node: &Node, args: &[&str]) -> String {
    let o = node.cli(args);
    assert!(o.status.success(), "wisp {args:?}: {}", out(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn route_takeover_across_namespaces_is_refused() {
    let dir = support::temp_dir("takeover");
    let mut node = Node::start(&dir, &[]);
    cli_ok(&node, &["ns", "create", "victim", "--shared-routes"]);
    cli_ok(&node, &["ns", "create", "attacker", "--shared-routes"]);
    cli_ok(&node, &["ns", "create", "plain"]);
    for (ns, f) in [("victim", "shop"), ("attacker", "evil"), ("plain", "p")] {
        let r = node
            .deploy_in(ns, f, &fixture("testfn"), json!({"env": {"WHO": ns}}))
            .await;
        assert!(r.status().is_success(), "deploy {f} in {ns}");
    }
    add_route_ok(
        &node,
        "victim",
        json!({"method": "GET", "path": "/env/{name}", "function": "shop"}),
    )
    .await;
    assert_eq!(
        get_on(&node, "127.0.0.1", "/env/WHO").await,
        (200, "victim".into())
    );

    // Take over (the same template), shadow (more specific), intercept
    // (less specific, another method): 409, naming neither the other
    // namespace nor its function.
    for route in [
        json!({"method": "GET", "path": "/env/{name}", "function": "evil"}),
        json!({"method": "GET", "path": "/env/{other}", "function": "evil"}),
        json!({"method": "GET", "path": "/env/WHO", "function": "evil"}),
        json!({"method": "POST", "path": "/env/WHO", "function": "evil"}),
        json!({"path": "/{*everything}", "function": "evil"}),
        json!({"path": "/{first}/{second}", "function": "evil"}),
    ] {
        let msg = expect_error(
            add_route(&node, "attacker", route).await,
            409,
            "route_conflict",
        )
        .await;
        assert!(
            msg.contains("another namespace") && !msg.contains("victim") && !msg.contains("shop"),
            "{msg}"
        );
    }
    // Intercept with an explicit host: only a namespace that owns the host.
    let msg = expect_error(
        add_route(
            &node,
            "attacker",
            json!({"method": "GET", "path": "/env/{name}", "host": "victim.example", "function": "evil"}),
        )
        .await,
        403,
        "host_not_owned",
    )
    .await;
    assert!(
        msg.contains("wisp ns domain add attacker victim.example"),
        "{msg}"
    );
    // The node admin gives the host to victim (CLI); attacker still cannot.
    let said = cli_ok(&node, &["ns", "domain", "add", "victim", "victim.example"]);
    assert!(said.contains("victim.example"), "{said}");
    assert_eq!(
        cli_ok(&node, &["ns", "domain", "ls", "victim"]).trim(),
        "victim.example"
    );
    let o = node.cli(&["ns", "domain", "add", "attacker", "victim.example"]);
    assert!(!o.status.success(), "a host has one owner: {}", out(&o));
    expect_error(
        add_route(
            &node,
            "attacker",
            json!({"method": "GET", "path": "/env/{name}", "host": "victim.example", "function": "evil"}),
        )
        .await,
        403,
        "host_not_owned",
    )
    .await;
    // A namespace's token cannot assign hosts.
    let tok: Value = node
        .api(Method::POST, "/v1/tokens")
        .header("x-wisp-namespace", "attacker")
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = node
        .http
        .put(format!(
            "{}/v1/namespaces/attacker/domains/victim2.example",
            node.url
        ))
        .bearer_auth(tok["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "forbidden").await;

    // Non-overlapping host-less routes of another namespace are fine, but
    // never answer on a host a namespace owns.
    add_route_ok(
        &node,
        "attacker",
        json!({"method": "GET", "path": "/echo/{*rest}", "function": "evil"}),
    )
    .await;
    let (status, _) = get_on(&node, "127.0.0.1", "/echo/x").await;
    assert_eq!(status, 200);
    let (status, _) = get_on(&node, "victim.example", "/echo/x").await;
    assert_eq!(status, 404, "victim's host never reaches attacker's routes");
    // victim's clients reach victim, on the shared space and on its host.
    add_route_ok(
        &node,
        "victim",
        json!({"method": "GET", "path": "/status/{code}", "host": "victim.example", "function": "shop"}),
    )
    .await;
    assert_eq!(
        get_on(&node, "victim.example", "/env/WHO").await,
        (200, "victim".into())
    );
    assert_eq!(
        get_on(&node, "victim.example:8080", "/status/201").await.0,
        201
    );
    assert_eq!(
        get_on(&node, "localhost", "/env/WHO").await,
        (200, "victim".into())
    );
    // A namespace the admin did not allow has no host-less routes at all.
    let msg = expect_error(
        add_route(&node, "plain", json!({"path": "/plain", "function": "p"})).await,
        403,
        "shared_routes_not_allowed",
    )
    .await;
    assert!(msg.contains("--shared-routes"), "{msg}");
    cli_ok(&node, &["ns", "update", "plain", "--shared-routes"]);
    add_route_ok(&node, "plain", json!({"path": "/plain", "function": "p"})).await;
    // A host in use cannot be taken away; the model survives a restart.
    let o = node.cli(&["ns", "domain", "rm", "victim", "victim.example"]);
    assert!(
        !o.status.success() && out(&o).contains("route"),
        "{}",
        out(&o)
    );
    assert!(node.stop().success());
    let node = Node::start(&dir, &[]);
    assert_eq!(
        get_on(&node, "victim.example", "/env/WHO").await,
        (200, "victim".into())
    );
    assert_eq!(get_on(&node, "victim.example", "/echo/x").await.0, 404);
    expect_error(
        add_route(
            &node,
            "attacker",
            json!({"method": "GET", "path": "/env/WHO", "function": "evil"}),
        )
        .await,
        409,
        "route_conflict",
    )
    .await;
}

#[tokio::test]
async fn forged_wisp_headers_never_reach_functions() {
    let node = Node::fresh("forged", &[]);
    node.deploy_ok("echo", &fixture("testfn"), json!({})).await;
    add_route_ok(
        &node,
        "default",
        json!({"path": "/echo/{*rest}", "function": "echo"}),
    )
    .await;
    let forged = [
        ("x-wisp-jwt-claims", r#"{"sub":"admin","role":"root"}"#),
        ("x-wisp-api-key-name", "forged-key"),
        ("x-wisp-route", "forged route"),
        ("x-wisp-path-params", r#"{"forged":"1"}"#),
        ("x-wisp-anything", "forged"),
    ];
    let send = |rb: reqwest::RequestBuilder| async {
        let mut rb = rb;
        for (k, v) in forged {
            rb = rb.header(k, v);
        }
        let v: Value = rb.send().await.unwrap().json().await.unwrap();
        v["headers"].clone()
    };
    // A user route: only what Wisp sets.
    let h = send(node.get("/echo/a/b")).await;
    assert_eq!(h["x-wisp-route"], "ANY /echo/{*rest}", "{h}");
    assert_eq!(h["x-wisp-path-params"], r#"{"rest":"a/b"}"#, "{h}");
    for k in [
        "x-wisp-jwt-claims",
        "x-wisp-api-key-name",
        "x-wisp-anything",
    ] {
        assert!(
            h.get(k).is_none(),
            "{k} reached the function via a route: {h}"
        );
    }
    // Direct URLs and the management invoke: no x-wisp-* header at all.
    for rb in [
        node.get("/fn/echo/echo"),
        node.get("/ns/default/fn/echo/echo"),
        node.api(Method::POST, "/v1/functions/echo/invoke/echo"),
    ] {
        let h = send(rb).await;
        let wisp: Vec<&String> = h
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("x-wisp-"))
            .collect();
        assert!(wisp.is_empty(), "forged headers reached the function: {h}");
    }
}

#[tokio::test]
async fn data_files_are_private_to_the_node_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = support::temp_dir("private");
    // A data dir left world-readable by an older node is tightened.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = Node::start(&dir, &[]);
    node.deploy_ok("f", &fixture("testfn"), json!({})).await;
    assert_eq!(node.get_fn("f/echo").send().await.unwrap().status(), 200);
    let r = node
        .api(Method::PUT, "/v1/kv/b/k")
        .body("v")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "kv put: {}", r.status());
    let s3 = node.s3_url.clone().unwrap();
    let (id, secret) = support::access_key(&node, &["--role", "admin"]);
    let o = std::process::Command::new(support::python())
        .args([
            "-c",
            "import boto3,sys; c=boto3.client('s3',endpoint_url=sys.argv[1],aws_access_key_id=sys.argv[2],aws_secret_access_key=sys.argv[3],region_name='us-east-1'); c.create_bucket(Bucket='pics'); c.put_object(Bucket='pics',Key='a',Body=b'x'*200000)",
        ])
        .args([&s3, &id, &secret])
        .output()
        .unwrap();
    assert!(o.status.success(), "boto3: {}", out(&o));
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&dir), 0o700, "data dir");
    let mut checked = 0;
    for db in ["wisp.db", "kv.db", "objects.db", "events.db"] {
        for suffix in ["", "-wal", "-shm"] {
            let p = dir.join(format!("{db}{suffix}"));
            if suffix.is_empty() || p.exists() {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
                checked += 1;
            }
        }
    }
    assert!(
        checked > 4,
        "the -wal/-shm files of a running node were checked"
    );
    for d in ["artifacts", "compiled", "objects", "objects/blobs"] {
        assert_eq!(mode(&dir.join(d)), 0o700, "{d}");
    }
    // Nothing else at the top of the data dir is open to others.
    let mut open_to_others = Vec::new();
    for top in [
        "wisp.db",
        "kv.db",
        "objects.db",
        "events.db",
        "admin-token",
        "secret.key",
    ] {
        if mode(&dir.join(top)) & 0o077 != 0 {
            open_to_others.push(top.to_string());
        }
    }
    assert!(open_to_others.is_empty(), "{open_to_others:?}");
}

#[tokio::test]
async fn secrets_cut_by_the_log_cap_leave_no_prefix_and_error_pages_say_only_function_failed() {
    let node = Node::fresh("mask", &[]);
    let value = "S3CR3T-0123456789-abcdef";
    let o = node.cli_stdin(&["secret", "set", "TOKEN"], format!("{value}\n").as_bytes());
    assert!(o.status.success(), "{}", out(&o));
    node.deploy_ok("f", &fixture("testfn"), json!({"secrets": ["TOKEN"]}))
        .await;
    // The 64 KiB cap falls 16 characters into the secret.
    let pad = 64 * 1024 - 16;
    let r = node
        .get_fn(&format!("f/printpad/{pad}/TOKEN"))
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-wisp-activation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(r.status(), 200);
    let a = node.activation(&id).await;
    let logs = a["logs"].as_str().unwrap();
    assert_eq!(a["logs_truncated"], true, "{a}");
    assert!(
        logs.ends_with("xxx***"),
        "tail: {:?}",
        &logs[logs.len() - 40..]
    );
    for k in 3..value.len() {
        assert!(
            !logs.contains(&value[..k]),
            "{k} characters of the secret show"
        );
    }
    // A trap: the caller learns the activation and outcome, not the text.
    for path in ["f/panic", "f/oom"] {
        let r = node.get_fn(path).send().await.unwrap();
        let status = r.status().as_u16();
        let id = r.headers()["x-wisp-activation-id"]
            .to_str()
            .unwrap()
            .to_string();
        let body = r.text().await.unwrap();
        assert_eq!(status, 500, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "function_failed", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&id) && msg.contains("outcome"), "{msg}");
        for leak in ["7f3a", "backtrace", "wasm", "panicked", "0x"] {
            assert!(!body.contains(leak), "{leak:?} in {body}");
        }
        let a = node.activation(&id).await;
        if path == "f/panic" {
            assert_eq!(a["outcome"], "error");
            let detail = format!("{}{}", a["error"], a["logs"]);
            assert!(
                detail.contains("7f3a"),
                "the detail stays in the activation: {a}"
            );
        } else {
            assert_eq!(a["outcome"], "memory_limit");
        }
    }
    // The owner still sees the error with `wisp invoke` (the management
    // API, authenticated).
    let o = node.cli(&["invoke", "f", "--path", "/panic"]);
    assert!(!o.status.success());
    assert!(out(&o).contains("wasm backtrace"), "{}", out(&o));
}

#[tokio::test]
async fn metrics_need_a_token_and_a_namespace_sees_only_its_series() {
    let node = Node::fresh("metrics", &[]);
    assert!(node.cli(&["ns", "create", "shop"]).status.success());
    node.deploy_ok("hello", &fixture("testfn"), json!({})).await;
    let r = node
        .deploy_in("shop", "cart", &fixture("testfn"), json!({}))
        .await;
    assert!(r.status().is_success());
    assert_eq!(
        node.get_fn("hello/echo").send().await.unwrap().status(),
        200
    );
    let r = node.get("/ns/shop/fn/cart/echo").send().await.unwrap();
    assert_eq!(r.status(), 200);
    // No token, a wrong token: 401.
    let r = node.get("/metrics").send().await.unwrap();
    assert!(r.headers().contains_key("www-authenticate"));
    let msg = expect_error(r, 401, "unauthorized").await;
    assert!(msg.contains("Bearer"), "{msg}");
    let r = node
        .get("/metrics")
        .bearer_auth("wisp_nope")
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "unauthorized").await;
    // The admin token: every namespace.
    let all = node.metrics().await;
    assert!(
        all.contains(r#"namespace="default",function="hello""#),
        "{all}"
    );
    assert!(all.contains(r#"namespace="shop",function="cart""#), "{all}");
    // A reader token of shop: its series only.
    let o = node.cli(&["token", "create", "--ns", "shop", "--role", "reader"]);
    assert!(o.status.success(), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let token = text
        .split_whitespace()
        .find(|w| w.starts_with("wisp_"))
        .unwrap_or_else(|| panic!("no token in {text}"))
        .to_string();
    let r = node
        .get("/metrics")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mine = r.text().await.unwrap();
    assert!(
        mine.contains(r#"namespace="shop",function="cart""#),
        "{mine}"
    );
    assert!(
        !mine.contains("hello") && !mine.contains(r#"namespace="default""#),
        "{mine}"
    );
}

/// Runs boto3 against the node's S3 API: `script` sees `c` (a client).
fn s3(node: &Node, key: &(String, String), script: &str) -> std::process::Output {
    std::process::Command::new(support::python())
        .args([
            "-c",
            &format!(
                "import boto3,sys\nc=boto3.client('s3',endpoint_url=sys.argv[1],aws_access_key_id=sys.argv[2],aws_secret_access_key=sys.argv[3],region_name='us-east-1')\n{script}"
            ),
        ])
        .args([node.s3_url.as_deref().unwrap(), &key.0, &key.1])
        .output()
        .unwrap()
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_data() {
    let node = Node::fresh("nsrm", &[]);
    cli_ok(&node, &["ns", "create", "tmp", "--shared-routes"]);
    let o = node.cli_stdin(&["secret", "set", "--ns", "tmp", "TOKEN"], b"old-secret\n");
    assert!(o.status.success(), "{}", out(&o));
    let r = node
        .deploy_in(
            "tmp",
            "f",
            &fixture("testfn"),
            json!({"secrets": ["TOKEN"]}),
        )
        .await;
    assert!(r.status().is_success());
    assert_eq!(
        node.get("/ns/tmp/fn/f/env/TOKEN")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    add_route_ok(
        &node,
        "tmp",
        json!({"path": "/echo/old/{x}", "function": "f"}),
    )
    .await;
    // An artifact only tmp uses, and one default uses too.
    let r = node
        .deploy_in("tmp", "g", &fixture("kvfn"), json!({}))
        .await;
    assert!(r.status().is_success());
    node.deploy_ok("shared", &fixture("testfn"), json!({}))
        .await;
    let mut files = Vec::new();
    for f in ["g", "f"] {
        let v = node.json_ns("tmp", &format!("/v1/functions/{f}")).await;
        let d = v["artifact"].as_str().unwrap_or_else(|| panic!("{v}"));
        files.push(
            node.dir
                .join("artifacts/sha256")
                .join(d.trim_start_matches("sha256:")),
        );
    }
    let (only_tmp, shared) = (files[0].clone(), files[1].clone());
    // An event for a failing function: queued for retries, or dead-lettered.
    let r = node
        .deploy_in(
            "tmp",
            "failing",
            &fixture("testfn"),
            json!({"env": {"FAIL": "1"}}),
        )
        .await;
    assert!(r.status().is_success());
    let r = node
        .api(Method::POST, "/v1/functions/failing/invoke?async=true")
        .header("x-wisp-namespace", "tmp")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(only_tmp.exists() && shared.exists(), "{files:?}");
    let put = |path: &str, body: &'static str| {
        node.api(Method::PUT, path)
            .header("x-wisp-namespace", "tmp")
            .body(body)
            .send()
    };
    assert!(
        put("/v1/kv/notes/k1", "old-value")
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert!(put("/v1/topics/t", "").await.unwrap().status().is_success());
    let old_token = {
        let o = node.cli(&["token", "create", "--ns", "tmp", "--role", "admin"]);
        assert!(o.status.success(), "{}", out(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    cli_ok(
        &node,
        &["apikey", "create", "--ns", "tmp", "--name", "mobile"],
    );
    let old_key = support::access_key(&node, &["--ns", "tmp", "--role", "admin"]);
    let o = s3(
        &node,
        &old_key,
        "c.create_bucket(Bucket='pics'); c.put_object(Bucket='pics',Key='a.txt',Body=b'old-object')",
    );
    assert!(o.status.success(), "{}", out(&o));

    // Without --force: refused, saying what is in it.
    let o = node.cli(&["ns", "rm", "tmp"]);
    assert!(!o.status.success());
    let said = out(&o);
    for what in [
        "3 functions",
        "1 topic",
        "1 KV bucket",
        "1 KV key",
        "1 bucket",
        "1 object",
        "1 secret",
        "1 route",
        "1 API key",
        "1 token",
        "1 access key",
        "--force",
    ] {
        assert!(said.contains(what), "{what:?} not in {said}");
    }
    assert_eq!(node.get("/echo/old/1").send().await.unwrap().status(), 200);
    assert!(
        said.contains("1 queued event") || said.contains("1 dead letter"),
        "{said}"
    );

    cli_ok(&node, &["ns", "rm", "tmp", "--force"]);
    assert!(
        !only_tmp.exists(),
        "an artifact no other namespace uses is deleted"
    );
    assert!(shared.exists(), "an artifact default still uses stays");
    assert_eq!(
        node.get_fn("shared/status/200")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    cli_ok(&node, &["ns", "create", "tmp"]);
    // The new tenant sees nothing of the old one.
    for path in [
        "/v1/functions",
        "/v1/routes",
        "/v1/secrets",
        "/v1/topics",
        "/v1/triggers",
        "/v1/apikeys",
        "/v1/accesskeys",
        "/v1/tokens",
        "/v1/dlq",
        "/v1/activations",
        "/v1/kv",
    ] {
        let v = node.json_ns("tmp", path).await;
        assert_eq!(v, json!([]), "{path} in the new tmp: {v}");
    }
    let r = node
        .api(Method::GET, "/v1/kv/notes/k1")
        .header("x-wisp-namespace", "tmp")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the old KV key is gone");
    assert_eq!(node.get("/echo/old/1").send().await.unwrap().status(), 404);
    let r = node
        .http
        .get(format!("{}/v1/functions", node.url))
        .bearer_auth(&old_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the old token is revoked");
    let o = s3(&node, &old_key, "c.list_buckets()");
    assert!(!o.status.success(), "the old access key is revoked");
    let new_key = support::access_key(&node, &["--ns", "tmp", "--role", "admin"]);
    let o = s3(
        &node,
        &new_key,
        "print(len(c.list_buckets()['Buckets']))\ntry:\n  c.get_object(Bucket='pics',Key='a.txt'); print('found')\nexcept Exception as e: print('gone')",
    );
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "0\ngone\n");
}
