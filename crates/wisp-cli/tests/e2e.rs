//! End-to-end tests: the real `wisp` binary on a free port, real HTTP, real
//! SQLite files, real components built from `tests/fixtures` and `examples`.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Node, fixture};

fn spec(extra: Value) -> Value {
    let mut s = json!({"memory_mb": 64, "timeout_ms": 5000, "concurrency": 100});
    if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    s
}

#[tokio::test]
async fn component_sees_method_path_query_headers_body_and_env() {
    let node = Node::fresh("echo", &[]);
    let d = node
        .deploy_ok(
            "testfn",
            &fixture("testfn"),
            spec(json!({"env": {"GREETING": "hi"}})),
        )
        .await;
    assert_eq!(d["version"], 1);
    assert!(d["url"].as_str().unwrap().ends_with("/fn/testfn/"));

    let r = node
        .put("/fn/testfn/echo/a/b?x=1&y=two")
        .header("x-custom", "value")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-echo"], "yes");
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-wisp-activation-id"].len(), 32);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["path"], "/echo/a/b");
    assert_eq!(v["query"], "x=1&y=two");
    assert_eq!(v["headers"]["x-custom"], "value");
    assert_eq!(v["body"], "payload");
    // The path arrives as the client encoded it (as under `wasmtime serve`).
    let r = node
        .get_fn("testfn/echo/my%20cat+1.png")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["path"], "/echo/my%20cat+1.png");

    let r = node.get_fn("testfn/status/418").send().await.unwrap();
    assert_eq!(r.status(), 418);
    assert_eq!(r.text().await.unwrap(), "status 418");
    let r = node.get_fn("testfn/env/GREETING").send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hi");
    let r = node.get_fn("testfn/env/HOME").send().await.unwrap();
    assert_eq!(
        r.status(),
        404,
        "the host's environment must not leak into functions"
    );

    // A fresh instance per request: module state never carries over.
    for _ in 0..3 {
        let r = node.get_fn("testfn/counter").send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "1");
    }
}

#[tokio::test]
async fn opt_in_instance_reuse_keeps_instances_until_they_fail() {
    let node = Node::fresh("reuse", &[]);
    let reuse = spec(json!({"instance_reuse": 3, "concurrency": 1, "memory_mb": 32}));
    node.deploy_ok("warm", &fixture("testfn"), reuse).await;
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(
            node.get_fn("warm/counter")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    // Each instance serves 3 requests, then a fresh one takes over.
    assert_eq!(seen, ["1", "2", "3", "1", "2", "3", "1"]);
    // A failed request (here: the memory limit) discards its instance.
    assert_eq!(node.get_fn("warm/oom").send().await.unwrap().status(), 500);
    assert_eq!(
        node.get_fn("warm/counter")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "1"
    );
    // Logs stay attributed to the request that wrote them.
    let r = node.get_fn("warm/log").send().await.unwrap();
    let id = r.headers()["x-wisp-activation-id"]
        .to_str()
        .unwrap()
        .to_string();
    node.get_fn("warm/counter").send().await.unwrap();
    node.activations("warm", 11).await;
    let a = node.json(&format!("/v1/activations/{id}")).await;
    assert_eq!(a["logs"], "hello stdout\nhello stderr\n");
    let r = node
        .deploy(
            "bad",
            &fixture("testfn"),
            spec(json!({"instance_reuse": 0})),
        )
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn examples_hello_and_json_transform() {
    let node = Node::fresh("examples", &[]);
    node.deploy_ok(
        "hello",
        &fixture("hello"),
        spec(json!({"env": {"GREETING": "hi"}})),
    )
    .await;
    let r = node.get_fn("hello/any/path?x=1").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hi, world!\n");

    node.deploy_ok("orders", &fixture("json-transform"), spec(json!({})))
        .await;
    let r = node.post("/fn/orders")
        .body(r#"[{"item":"apple","qty":3,"price":0.5},{"item":"pear","qty":1,"price":2.0},{"item":"apple","qty":1,"price":0.5}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["orders"], 3);
    assert_eq!(v["total"], 4.0);
    assert_eq!(v["by_item"]["apple"]["qty"], 4);
    let r = node
        .post("/fn/orders")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("invalid orders"));
}

#[tokio::test]
async fn infinite_loop_times_out_while_others_keep_answering() {
    let node = Node::fresh("loop", &[]);
    node.deploy_ok(
        "spin",
        &fixture("testfn"),
        spec(json!({"timeout_ms": 1500})),
    )
    .await;
    node.deploy_ok("hello", &fixture("hello"), spec(json!({})))
        .await;

    let url = format!("{}/fn/spin/loop", node.url);
    let http = node.http.clone();
    let started = Instant::now();
    let looping = tokio::spawn(async move { http.get(url).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While the loop burns a core, the node keeps serving.
    for _ in 0..20 {
        let t = Instant::now();
        let r = node.get_fn("hello/").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "hello took {:?} during the loop",
            t.elapsed()
        );
    }
    let r = looping.await.unwrap();
    assert_eq!(r.status(), 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(4000),
        "loop ended after {took:?}"
    );
    let acts = node.activations("spin", 1).await;
    assert_eq!(acts[0]["outcome"], "timeout");
    assert_eq!(acts[0]["status"], 504);
}

#[tokio::test]
async fn memory_limit_ends_the_request_not_the_node() {
    let node = Node::fresh("oom", &[]);
    node.deploy_ok("mem", &fixture("testfn"), spec(json!({"memory_mb": 32})))
        .await;
    let r = node.get_fn("mem/alloc/8").send().await.unwrap();
    assert_eq!(r.status(), 200, "8 MiB fits in 32 MiB");
    let r = node.get_fn("mem/oom").send().await.unwrap();
    assert_eq!(r.status(), 500);
    // The caller learns the outcome; the detail is in the activation.
    assert!(r.text().await.unwrap().contains("outcome memory_limit"));
    let r = node.get_fn("mem/alloc/8").send().await.unwrap();
    assert_eq!(r.status(), 200, "the node still serves after a memory bomb");
    let acts = node.activations("mem", 3).await;
    let outcomes: Vec<&str> = acts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["success", "memory_limit", "success"]);
}

#[tokio::test]
async fn concurrency_limit_answers_429_with_retry_after() {
    let node = Node::fresh("throttle", &[]);
    node.deploy_ok("one", &fixture("testfn"), spec(json!({"concurrency": 1})))
        .await;
    let url = format!("{}/fn/one/sleep/1500", node.url);
    let http = node.http.clone();
    let slow = tokio::spawn(async move { http.get(url).send().await.unwrap().status() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = node.get_fn("one/echo").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "throttled");
    assert_eq!(slow.await.unwrap(), 200);
    // The slot is free again.
    assert_eq!(node.get_fn("one/echo").send().await.unwrap().status(), 200);
    let acts = node.activations("one", 3).await;
    assert!(acts.iter().any(|a| a["outcome"] == "throttled"));
}

#[tokio::test]
async fn management_api_requires_the_token() {
    let node = Node::fresh("auth", &[]);
    let r = node.get("/v1/functions").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(support::error_code(r).await, "unauthorized");
    let r = node
        .get("/v1/functions")
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = node.post("/v1/artifacts").body("x").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        node.api(Method::GET, "/v1/functions")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The token file is private to its owner.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(node.dir.join("admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Health is open; metrics need a token.
    assert_eq!(node.get("/healthz").send().await.unwrap().status(), 200);
    assert_eq!(node.get("/metrics").send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn bad_artifacts_and_settings_get_clear_400s() {
    let node = Node::fresh("bad", &[]);
    let check = |r: reqwest::Response, needle: &'static str| async move {
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 400, "{v}");
        let msg = v["error"]["message"].as_str().unwrap().to_string();
        assert!(
            msg.contains(needle),
            "message {msg:?} should mention {needle:?}"
        );
    };
    check(
        node.deploy("garbage", b"this is not wasm at all", spec(json!({})))
            .await,
        "not WebAssembly",
    )
    .await;
    check(
        node.deploy("core", b"\0asm\x01\0\0\0", spec(json!({})))
            .await,
        "core WebAssembly module",
    )
    .await;
    check(
        node.deploy("cli", &fixture("cli-command"), spec(json!({})))
            .await,
        "wasi:http/incoming-handler",
    )
    .await;
    check(
        node.deploy("mem", &fixture("hello"), spec(json!({"memory_mb": 0})))
            .await,
        "memory_mb",
    )
    .await;
    check(
        node.deploy("typo", &fixture("hello"), spec(json!({"memroy_mb": 5})))
            .await,
        "memroy_mb",
    )
    .await;
    check(
        node.deploy("Bad Name", &fixture("hello"), spec(json!({})))
            .await,
        "invalid function name",
    )
    .await;
    // Nothing was stored by the failed deploys.
    let list = node.json("/v1/functions").await;
    assert_eq!(list.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn unknown_functions_and_activations_are_404() {
    let node = Node::fresh("404", &[]);
    let r = node.get_fn("nope/").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "function_not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains("wisp ls"));
    assert_eq!(
        node.api(Method::GET, "/v1/functions/nope")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        node.api(Method::DELETE, "/v1/functions/nope")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = node
        .api(
            Method::GET,
            "/v1/activations/0123456789abcdef0123456789abcdef",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn payload_over_the_limit_is_413() {
    let node = Node::fresh("413", &["--max-payload", "1024"]);
    node.deploy_ok("echo", &fixture("testfn"), spec(json!({})))
        .await;
    let r = node
        .post("/fn/echo/echo")
        .body(vec![b'a'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(support::error_code(r).await, "payload_too_large");
    let r = node
        .post("/fn/echo/echo")
        .body(vec![b'a'; 512])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn logs_activations_and_usage_are_recorded() {
    let node = Node::fresh("logs", &[]);
    node.deploy_ok(
        "logger",
        &fixture("testfn"),
        spec(json!({"memory_mb": 128})),
    )
    .await;
    let r = node.get_fn("logger/log").send().await.unwrap();
    let id = r.headers()["x-wisp-activation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(r.text().await.unwrap(), "logged");
    let r = node.get_fn("logger/biglog").send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "done");
    for _ in 0..8 {
        assert_eq!(
            node.get_fn("logger/status/503")
                .send()
                .await
                .unwrap()
                .status(),
            503
        );
    }
    let acts = node.activations("logger", 10).await;
    assert_eq!(acts.len(), 10);

    let a = node.json(&format!("/v1/activations/{id}")).await;
    assert_eq!(a["outcome"], "success");
    assert_eq!(a["trigger"], "http");
    assert!(a["logs"].as_str().unwrap().contains("hello stdout\n"));
    assert!(a["logs"].as_str().unwrap().contains("hello stderr\n"));
    assert_eq!(a["logs_truncated"], false);
    let big = acts
        .iter()
        .find(|a| a["logs"].as_str().unwrap().starts_with("xxxx"))
        .expect("biglog activation");
    assert_eq!(big["logs_truncated"], true);
    assert_eq!(big["logs"].as_str().unwrap().len(), 64 * 1024);

    // Usage sums what the activations say.
    let usage = node.json("/v1/usage?since=1h").await;
    let u = &usage.as_array().unwrap()[0];
    assert_eq!(u["function"], "logger");
    assert_eq!(u["invocations"], 10);
    assert_eq!(u["errors"], 8, "503 answers count as errors");
    let billed: u64 = acts.iter().map(|a| a["billed_ms"].as_u64().unwrap()).sum();
    assert_eq!(u["billed_ms"].as_u64().unwrap(), billed);
    let gbs = u["gb_seconds"].as_f64().unwrap();
    assert!(
        (gbs - 0.125 * billed as f64 / 1000.0).abs() < 1e-9,
        "gb_seconds {gbs} for {billed} ms at 128 MiB"
    );
    for a in &acts {
        let us = a["duration_us"].as_u64().unwrap();
        assert_eq!(a["billed_ms"].as_u64().unwrap(), us.div_ceil(1000).max(1));
    }

    // The CLI shows the same.
    let out = node.cli(&["logs", "logger"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("hello stderr"), "{text}");
    let out = node.cli(&["usage", "--since", "1h"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("logger") && l.split_whitespace().nth(1) == Some("10")),
        "{text}"
    );

    // Prometheus metrics count the same invocations.
    let m = node.metrics().await;
    assert!(
        m.contains(
            r#"wisp_invocations_total{namespace="default",function="logger",outcome="success"} 2"#
        ),
        "{m}"
    );
    assert!(m.contains(
        r#"wisp_invocations_total{namespace="default",function="logger",outcome="error"} 8"#
    ));
    assert!(m.contains(
        r#"wisp_invocation_duration_seconds_count{namespace="default",function="logger"} 10"#
    ));
}

#[tokio::test]
async fn outbound_http_is_denied_unless_allowed() {
    let node = Node::fresh("outbound", &[]);
    let target = format!("{}/healthz", node.url);
    let port = node.url.rsplit(':').next().unwrap().to_string();
    node.deploy_ok("closed", &fixture("testfn"), spec(json!({})))
        .await;
    node.deploy_ok(
        "open",
        &fixture("testfn"),
        spec(json!({"allow_outbound": [format!("127.0.0.1:{port}")]})),
    )
    .await;
    let r = node
        .get_fn(&format!("closed/fetch?url={target}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("outbound error"));
    let acts = node.activations("closed", 1).await;
    assert!(
        acts[0]["logs"].as_str().unwrap().contains("denied"),
        "{}",
        acts[0]["logs"]
    );
    let r = node
        .get_fn(&format!("open/fetch?url={target}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "200 ok\n");
}

#[tokio::test]
async fn functions_survive_restart_and_kill9_without_recompiling() {
    let dir = support::temp_dir("restart");
    let mut node = Node::start(&dir, &[]);
    node.deploy_ok(
        "hello",
        &fixture("hello"),
        spec(json!({"env": {"GREETING": "bonjour"}})),
    )
    .await;
    assert_eq!(
        node.get_fn("hello/")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "bonjour, world!\n"
    );
    let cached: Vec<_> = walk(&dir.join("compiled"));
    assert_eq!(
        cached.len(),
        1,
        "one compiled component in the cache: {cached:?}"
    );
    let mtime = std::fs::metadata(&cached[0]).unwrap().modified().unwrap();
    assert!(node.stop().success(), "graceful stop exits 0");

    let mut node = Node::start(&dir, &[]);
    let r = node.get_fn("hello/").send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "bonjour, world!\n");
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().modified().unwrap(),
        mtime,
        "no recompilation after a restart"
    );
    let acts = node.activations("hello", 2).await;
    assert_eq!(
        acts[0]["cold"], true,
        "first request after a restart is a cold start"
    );
    node.kill9();

    let node = Node::start(&dir, &[]);
    assert_eq!(
        node.get_fn("hello/").send().await.unwrap().status(),
        200,
        "deployed function survives kill -9"
    );
    let list = node.json("/v1/functions").await;
    assert_eq!(list[0]["name"], "hello");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "cwasm") {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn graceful_shutdown_finishes_running_invocations_and_flushes_records() {
    let dir = support::temp_dir("graceful");
    let mut node = Node::start(&dir, &[]);
    node.deploy_ok("slow", &fixture("testfn"), spec(json!({})))
        .await;
    let url = format!("{}/fn/slow/sleep/1000", node.url);
    let http = node.http.clone();
    let inflight = tokio::spawn(async move {
        let r = http.get(url).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.signal(libc::SIGTERM);
    let (status, body) = inflight.await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "slept"));
    let exit = node.child.take().unwrap().wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    let node = Node::start(&dir, &[]);
    let acts = node.activations("slow", 1).await;
    assert_eq!(acts[0]["outcome"], "success");
}

#[tokio::test]
async fn idle_functions_are_evicted_and_cold_start_again() {
    let node = Node::fresh("evict", &["--idle-evict", "300ms"]);
    node.deploy_ok("hello", &fixture("hello"), spec(json!({})))
        .await;
    assert_eq!(node.get_fn("hello/").send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let m = node.metrics().await;
    assert!(m.contains("wisp_functions_loaded 0"), "{m}");
    assert_eq!(node.get_fn("hello/").send().await.unwrap().status(), 200);
    let acts = node.activations("hello", 2).await;
    assert_eq!(
        (acts[0]["cold"].as_bool(), acts[1]["cold"].as_bool()),
        (Some(true), Some(false))
    );
}

#[tokio::test]
async fn cli_deploy_invoke_ls_rm() {
    let node = Node::fresh("cli", &[]);
    let wasm = support::fixtures().join("testfn.wasm");
    let out = node.cli(&[
        "deploy",
        "tf",
        wasm.to_str().unwrap(),
        "--memory",
        "64",
        "--timeout",
        "5s",
        "--concurrency",
        "10",
        "--env",
        "GREETING=hi",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("deployed tf version 1"), "{stdout}");
    assert!(stdout.contains("sha256:"), "{stdout}");
    assert!(stdout.contains(&format!("{}/fn/tf/", node.url)), "{stdout}");

    let f = node.json("/v1/functions/tf").await;
    assert_eq!(f["spec"]["memory_mb"], 64);
    assert_eq!(f["spec"]["timeout_ms"], 5000);
    assert_eq!(f["spec"]["env"]["GREETING"], "hi");

    let out = node.cli(&[
        "invoke",
        "tf",
        "--path",
        "/echo?q=1",
        "--data",
        r#"{"a":1}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            v["method"].as_str(),
            v["path"].as_str(),
            v["query"].as_str()
        ),
        (Some("POST"), Some("/echo"), Some("q=1"))
    );
    assert_eq!(v["body"], r#"{"a":1}"#);
    assert!(String::from_utf8_lossy(&out.stderr).contains("activation "));
    // A function's error status makes the command fail, after printing the body.
    let out = node.cli(&["invoke", "tf", "--path", "/status/503"]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "status 503");

    let out = node.cli(&["ls"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("tf "))
    );
    node.activations("tf", 2).await; // records are written in batches
    let out = node.cli(&["activations", "--function", "tf"]);
    assert!(out.status.success());
    let id_line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let id = id_line.split_whitespace().next().unwrap().to_string();
    let out = node.cli(&["activation", &id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("outcome:"));

    let out = node.cli(&["rm", "tf"]);
    assert!(out.status.success());
    let out = node.cli(&["rm", "tf"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = node.cli(&["invoke", "tf"]);
    assert!(!out.status.success());

    let out = node.cli(&["deploy", "bad", "/nonexistent.wasm"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.wasm"));
}

#[tokio::test]
async fn cli_deploys_a_rust_crate_directory() {
    let node = Node::fresh("crate", &[]);
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let out = std::process::Command::new(support::WISP)
        .args(["deploy", "hello", crate_dir.to_str().unwrap()])
        .env("WISP_DATA_DIR", &node.dir)
        .env("CARGO_TARGET_DIR", support::wasm_target_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("building"), "progress is shown: {stderr}");
    assert!(stderr.contains("compiling"), "progress is shown: {stderr}");
    assert_eq!(
        node.get_fn("hello/")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Hello, world!\n"
    );
}
