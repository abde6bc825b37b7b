//! End-to-end tests of the key-value store: a component using
//! `wasi:keyvalue` (both drafts), the HTTP API and `wisp kv`, atomic
//! counters under concurrency, grants and namespaces, limits, and data
//! surviving restarts and `kill -9`.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use support::{Node, error_code, fixture, out};

async fn text(r: reqwest::RequestBuilder) -> (u16, String) {
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn functions_share_buckets_with_the_api_and_cli_atomically_and_durably() {
    let mut node = Node::fresh("kv", &[]);
    let wasm = fixture("kvfn");
    node.deploy_ok(
        "kvfn",
        &wasm,
        json!({"kv": ["default", "counters", "prefs"]}),
    )
    .await;
    // Deploying made the granted buckets.
    let buckets = node.json("/v1/kv").await;
    let names: Vec<&str> = buckets
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["counters", "default", "prefs"]);

    // 200 concurrent invocations increment one counter: every one sees a
    // distinct value and the counter ends at exactly 200.
    let tasks: Vec<_> = (0..200)
        .map(|_| tokio::spawn(node.get_fn("kvfn/incr/counters/hits").send()))
        .collect();
    let mut seen = BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
        seen.insert(r.text().await.unwrap().parse::<i64>().unwrap());
    }
    assert_eq!(seen, (1..=200).collect::<BTreeSet<_>>());
    let (s, v) = text(node.api(Method::GET, "/v1/kv/counters/hits")).await;
    assert_eq!((s, v.as_str()), (200, "200"));
    let o = node.cli(&["kv", "get", "counters", "hits"]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200");
    // wasmtime's draft sees and moves the same counter.
    let (s, v) = text(node.get_fn("kvfn/incr1/counters/hits")).await;
    assert_eq!((s, v.as_str()), (200, "201"));

    // Compare-and-swap: 20 concurrent appenders, none lost.
    let tasks: Vec<_> = (0..20)
        .map(|_| tokio::spawn(node.get_fn("kvfn/append/default/log").send()))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status(), 200);
    }
    let (_, v) = text(node.get_fn("kvfn/get/default/log")).await;
    assert_eq!(v, "x".repeat(20));

    // The CLI writes (NAMESPACE/BUCKET as the issue writes it), the
    // function reads through either draft.
    let o = node.cli(&["kv", "set", "default/prefs", "theme", "dark"]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(
        text(node.get_fn("kvfn/get1/prefs/theme")).await,
        (200, "dark".to_string())
    );
    assert_eq!(
        text(node.get_fn("kvfn/get/prefs/theme")).await,
        (200, "dark".to_string())
    );
    let o = node.cli(&["kv", "ls", "default/prefs"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "theme\n", "{}", out(&o));
    let o = node.cli(&["kv", "incr", "prefs", "visits", "--by", "5"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "5",
        "{}",
        out(&o)
    );
    // A function write, read over HTTP; keys may hold '/'.
    let (s, _) = text(node.post("/fn/kvfn/set/default/a/b-c").body("v1")).await;
    assert_eq!(s, 200);
    let (s, v) = text(node.api(Method::GET, "/v1/kv/default/a/b-c")).await;
    assert_eq!((s, v.as_str()), (200, "v1"));
    assert_eq!(
        text(node.get_fn("kvfn/exists/default/a/b-c")).await.1,
        "true"
    );
    assert_eq!(
        text(node.get_fn("kvfn/delete/default/a/b-c")).await.1,
        "deleted"
    );
    // The CLI and API take any key; a space is percent-encoded on the way.
    let o = node.cli(&["kv", "set", "default", "with space", "v2"]);
    assert!(o.status.success(), "{}", out(&o));
    let (s, v) = text(node.api(Method::GET, "/v1/kv/default/with%20space")).await;
    assert_eq!((s, v.as_str()), (200, "v2"));
    let r = node
        .api(Method::GET, "/v1/kv/default/a/b-c")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "no_such_key");
    // Batch operations.
    assert_eq!(
        text(node.get_fn("kvfn/many/default")).await,
        (200, "m0=v0,m2=v2,nope=-".to_string())
    );

    // Listing past one page (1,000 keys) with both drafts' cursors.
    for i in 0..1500 {
        let r = node
            .api(Method::PUT, &format!("/v1/kv/prefs/k{i:05}"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    for route in ["list", "list1"] {
        let (s, v) = text(node.get_fn(&format!("kvfn/{route}/prefs"))).await;
        assert_eq!(s, 200);
        let keys: Vec<&str> = v.lines().collect();
        assert_eq!(keys.len(), 1502, "{route}");
        assert_eq!(keys[0], "k00000");
        assert_eq!(keys[1499], "k01499");
    }
    let m = node.metrics().await;
    assert!(m.contains("wisp_kv_keys{namespace=\"default\"} "), "{m}");
    let page = node.json("/v1/kv/prefs?prefix=k0149").await;
    assert_eq!(page["keys"].as_array().unwrap().len(), 10);
    assert!(page["next"].is_null());

    // Limits: a clear error, nothing stored lost.
    let big = vec![b'a'; (1 << 20) + 1];
    let (s, v) = text(node.post("/fn/kvfn/set/default/big").body(big.clone())).await;
    assert_eq!(s, 400);
    assert!(v.contains("1 MiB"), "{v}");
    let r = node
        .api(Method::PUT, "/v1/kv/default/big")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "invalid_kv_request");
    let long_key = "k".repeat(1025);
    let (s, v) = text(
        node.post(&format!("/fn/kvfn/set/default/{long_key}"))
            .body("x"),
    )
    .await;
    assert_eq!(s, 400);
    assert!(v.contains("too long"), "{v}");
    let r = node
        .api(Method::PUT, "/v1/kv/Bad%20Bucket/k")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = node.api(Method::GET, "/v1/kv/nope/k").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "no_such_bucket");
    let r = node
        .api(Method::POST, "/v1/kv/default/log")
        .json(&json!({"increment": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "incrementing a non-number");
    assert_eq!(
        text(node.api(Method::GET, "/v1/kv/counters/hits")).await.1,
        "201"
    );

    // Restart (SIGTERM) and kill -9: acknowledged writes are all there.
    assert!(node.stop().success());
    let dir = node.dir.clone();
    let mut node = Node::start(&dir, &[]);
    assert_eq!(
        text(node.get_fn("kvfn/get/counters/hits")).await,
        (200, "201".to_string())
    );
    let r = node
        .api(Method::PUT, "/v1/kv/prefs/after")
        .body("acknowledged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    node.kill9();
    let node = Node::start(&dir, &[]);
    assert_eq!(
        text(node.api(Method::GET, "/v1/kv/prefs/after")).await,
        (200, "acknowledged".to_string())
    );
    let list = node.json("/v1/kv").await;
    let prefs = list
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "prefs")
        .unwrap()
        .clone();
    assert_eq!(prefs["keys"], 1503, "{prefs}");
}

#[tokio::test]
async fn a_function_reaches_only_granted_buckets_of_its_own_namespace() {
    let node = Node::fresh("kv-tenancy", &[]);
    let wasm = fixture("kvfn");
    node.deploy_ok("kvfn", &wasm, json!({"kv": ["default"]}))
        .await;
    node.api(Method::PUT, "/v1/kv/payroll/salary")
        .body("secret")
        .send()
        .await
        .unwrap();
    // Not granted: access-denied, also for a bucket that exists.
    assert_eq!(
        text(node.get_fn("kvfn/get/payroll/salary")).await,
        (403, "access-denied".to_string())
    );
    assert_eq!(
        text(node.get_fn("kvfn/get1/payroll/salary")).await,
        (403, "access-denied".to_string())
    );
    // Another namespace: same bucket name, its own data.
    let o = node.cli(&["ns", "create", "shop"]);
    assert!(o.status.success(), "{}", out(&o));
    let r = node
        .deploy_in("shop", "kvfn", &wasm, json!({"kv": ["payroll"]}))
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    assert_eq!(
        text(node.get("/ns/shop/fn/kvfn/get/payroll/salary")).await,
        (404, "absent".to_string())
    );
    // A token of the other namespace cannot read this namespace's buckets.
    let o = node.cli(&["token", "create", "--ns", "shop", "--role", "admin"]);
    assert!(o.status.success(), "{}", out(&o));
    let token = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let r = node
        .http
        .get(format!("{}/v1/kv/payroll/salary", node.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the shop namespace has no such key");
    let r = node
        .http
        .get(format!("{}/v1/kv/payroll/salary", node.url))
        .bearer_auth(&token)
        .header("x-wisp-namespace", "default")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A grant on a process function is refused with a reason.
    let r = node
        .api(Method::PUT, "/v1/functions/proc")
        .json(&json!({"artifact": "sha256:0000000000000000000000000000000000000000000000000000000000000000", "spec": {"runtime": "process", "kv": ["default"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("/v1/kv"),
        "{v}"
    );
}

#[tokio::test]
async fn key_changes_trigger_functions_but_never_their_own_writer() {
    let node = Node::fresh("kv-triggers", &[]);
    node.deploy_ok("audit", &fixture("testfn"), json!({})).await;
    node.deploy_ok("kvfn", &fixture("kvfn"), json!({"kv": ["loop"]}))
        .await;
    let o = node.cli(&[
        "trigger",
        "add",
        "kv",
        "on-pref",
        "--function",
        "audit",
        "--bucket",
        "prefs",
        "--prefix",
        "theme",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let o = node.cli(&["kv", "set", "default/prefs", "theme", "dark"]);
    assert!(o.status.success(), "{}", out(&o));
    let o = node.cli(&["kv", "set", "default/prefs", "lang", "en"]);
    assert!(o.status.success(), "{}", out(&o));
    let o = node.cli(&["kv", "rm", "prefs", "theme"]);
    assert!(o.status.success(), "{}", out(&o));
    let acts = node.activations("audit", 2).await;
    let logs: Vec<&str> = acts.iter().map(|a| a["logs"].as_str().unwrap()).collect();
    assert!(
        logs.iter().any(|l| l.contains("ce-type: dev.wisp.kv.set")
            && l.contains("ce-subject: theme")
            && l.contains("ce-source: /wisp/default/kv/prefs")
            && l.contains("\"size\":4")),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("ce-type: dev.wisp.kv.deleted")),
        "{logs:?}"
    );
    // A function triggered by its own bucket: its writes do not wake it.
    let o = node.cli(&[
        "trigger",
        "add",
        "kv",
        "self-loop",
        "--function",
        "kvfn",
        "--bucket",
        "loop",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let r = node
        .post("/fn/kvfn/set/loop/k")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Another writer (the CLI) does wake it.
    let o = node.cli(&["kv", "set", "loop", "other", "x"]);
    assert!(o.status.success(), "{}", out(&o));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let acts = node.activations("kvfn", 2).await;
    assert_eq!(
        acts.len(),
        2,
        "the HTTP call and the CLI's write only: {acts:?}"
    );
    let audit = node.activations("audit", 2).await;
    assert_eq!(audit.len(), 2, "lang is outside the prefix: {audit:?}");
}

#[tokio::test]
async fn a_key_change_whose_events_find_the_queue_full_is_refused_and_not_stored() {
    let node = Node::fresh("kv-queue-full", &["--queue-max-events", "1"]);
    // The trigger's function fails and is retried for a while: its one
    // delivery keeps the queue full.
    node.deploy_ok(
        "audit",
        &fixture("testfn"),
        json!({"env": {"FAIL": "1"}, "max_attempts": 5, "backoff_ms": 5000}),
    )
    .await;
    let o = node.cli(&[
        "trigger",
        "add",
        "kv",
        "on-change",
        "--function",
        "audit",
        "--bucket",
        "watched",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let (s, b) = text(node.api(Method::PUT, "/v1/kv/watched/a").body("1")).await;
    assert_eq!(s, 204, "{b}");
    // Every kind of change of a watched key is refused while its events
    // have no room (before: 500, and the change was stored).
    let r = node
        .api(Method::PUT, "/v1/kv/watched/b")
        .body("2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "queue_full", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("was not stored"),
        "{v}"
    );
    let o = node.cli(&["kv", "incr", "watched", "n"]);
    assert!(
        !o.status.success() && out(&o).contains("the event queue is full"),
        "{}",
        out(&o)
    );
    let r = node
        .api(Method::DELETE, "/v1/kv/watched/a")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "queue_full");
    for (k, status) in [("a", 200), ("b", 404), ("n", 404)] {
        let r = node
            .api(Method::GET, &format!("/v1/kv/watched/{k}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{k}");
    }
    // Buckets without triggers are not held up.
    let (s, b) = text(node.api(Method::PUT, "/v1/kv/other/b").body("2")).await;
    assert_eq!(s, 204, "{b}");
}
