//! End-to-end tests of the limits that keep one caller from taking the
//! node: per-namespace limits (max concurrency, max instances), the node's
//! instance cap and its memory budget. A slot that cannot be had is
//! outcome `throttled` (429 for a function or namespace over its limit,
//! 503 + Retry-After when the node is out of capacity), never an error.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use support::{Node, fixture, out};

/// Sends `n` requests to `url` at once; returns how many got each status.
async fn burst(http: &reqwest::Client, url: &str, n: usize) -> BTreeMap<u16, usize> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (http, url) = (http.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            match http.get(url).send().await {
                // Read the body too: a client that hangs up while the
                // function still writes its answer makes that run an
                // error, which is not what this test is about.
                Ok(r) => {
                    let status = r.status().as_u16();
                    let _ = r.bytes().await;
                    status
                }
                Err(_) => 0, // no answer at all
            }
        }));
    }
    let mut counts = BTreeMap::new();
    for t in tasks {
        *counts.entry(t.await.unwrap()).or_default() += 1;
    }
    counts
}

/// The activations of `function` in namespace `ns`, once `n` are recorded.
async fn activations_in(node: &Node, ns: &str, function: &str, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let v = node
            .json_ns(
                ns,
                &format!("/v1/activations?function={function}&limit=10000"),
            )
            .await;
        let list = v.as_array().unwrap().clone();
        if list.len() >= n {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} activations of {function} in {ns} were recorded within 10 s");
}

fn outcomes(acts: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in acts {
        *m.entry(a["outcome"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

#[tokio::test]
async fn one_namespace_cannot_take_the_node_from_another() {
    let node = Node::fresh("ns-flood", &[]);
    // Namespace a may deploy a function with any concurrency; its
    // instances stay at the node's default for namespaces (250).
    let o = node.cli(&["ns", "create", "a", "--max-concurrency", "10000"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("max_concurrency 10000, max_instances 250 (node default)"),
        "{}",
        out(&o)
    );
    let o = node.cli(&["ns", "create", "b"]);
    assert!(o.status.success(), "{}", out(&o));
    let testfn = fixture("testfn");
    let r = node
        .deploy_in(
            "a",
            "slow",
            &testfn,
            json!({"memory_mb": 64, "timeout_ms": 60000, "concurrency": 10000}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = node
        .deploy_in(
            "b",
            "hello",
            &testfn,
            json!({"memory_mb": 64, "timeout_ms": 5000, "concurrency": 10}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    // 1,100 slow requests to a's function...
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let flood_url = format!("{}/ns/a/fn/slow/sleep/6000", node.url);
    let flood = {
        let http = http.clone();
        tokio::spawn(async move { burst(&http, &flood_url, 1100).await })
    };
    // ...until a's functions hold every instance they may.
    for _ in 0..200 {
        let m = node.metrics().await;
        let running = m
            .lines()
            .find(|l| {
                l.starts_with("wisp_in_flight{")
                    && l.contains("namespace=\"a\"")
                    && l.contains("function=\"slow\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if running >= 250.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Namespace b's function answers all along.
    let b_url = format!("{}/ns/b/fn/hello/echo", node.url);
    for i in 0..20 {
        let r = http.get(&b_url).send().await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "call {i} of b's function while a is flooded"
        );
    }
    let counts = flood.await.unwrap();
    // a's excess is throttled with 429, never a 5xx or a dropped request.
    let ok = counts.get(&200).copied().unwrap_or(0);
    let throttled = counts.get(&429).copied().unwrap_or(0);
    assert_eq!(ok + throttled, 1100, "statuses of a's requests: {counts:?}");
    assert!(
        (1..=250).contains(&ok),
        "at most a's 250 instances ran: {counts:?}"
    );
    let acts = activations_in(&node, "a", "slow", 1100).await;
    let by = outcomes(&acts);
    assert_eq!(by.get("throttled").copied(), Some(throttled), "{by:?}");
    let errors: Vec<&Value> = acts.iter().filter(|a| a["outcome"] == "error").collect();
    assert!(errors.is_empty(), "{by:?}: {errors:?}");
    assert_eq!(by.get("success").copied(), Some(ok), "{by:?}");
    let throttled_act = acts.iter().find(|a| a["outcome"] == "throttled").unwrap();
    assert_eq!(throttled_act["status"], 429);
    let why = throttled_act["error"].as_str().unwrap();
    assert!(
        why.contains("namespace \"a\"") && why.contains("250"),
        "{why}"
    );
    // `wisp activations` shows them as throttled too.
    let o = node.cli(&["activations", "--ns", "a", "--function", "slow", "-n", "5"]);
    assert!(out(&o).contains("throttled"), "{}", out(&o));
}

#[tokio::test]
async fn a_functions_concurrency_is_capped_by_its_namespace() {
    let mut node = Node::fresh("ns-cap", &[]);
    let o = node.cli(&["ns", "create", "shop", "--max-concurrency", "5"]);
    assert!(o.status.success(), "{}", out(&o));
    let testfn = fixture("testfn");
    // More concurrency than the namespace allows: a clear 400.
    let r = node
        .deploy_in("shop", "web", &testfn, json!({"concurrency": 10}))
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "over_limit", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("namespace \"shop\"") && msg.contains("--concurrency 5 or less"),
        "{msg}"
    );
    let r = node
        .deploy_in(
            "shop",
            "web",
            &testfn,
            json!({"concurrency": 5, "timeout_ms": 20000}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    // Lowering the namespace's limit below a function's is refused, naming it.
    let o = node.cli(&["ns", "set", "shop", "--max-concurrency", "2"]);
    assert!(!o.status.success());
    assert!(out(&o).contains("web (5)"), "{}", out(&o));
    // One instance at a time for the whole namespace.
    let o = node.cli(&["ns", "set", "shop", "--max-instances", "1"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("max_concurrency 5, max_instances 1"),
        "{}",
        out(&o)
    );
    let url = format!("{}/ns/shop/fn/web/sleep/2000", node.url);
    let http = node.http.clone();
    let slow = tokio::spawn(async move { http.get(url).send().await.unwrap().status() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = node.get("/ns/shop/fn/web/echo").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "throttled", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wisp ns set shop --max-instances"),
        "{v}"
    );
    assert_eq!(slow.await.unwrap(), 200);
    // Other namespaces are not limited by shop's limits.
    node.deploy_ok("other", &testfn, json!({"concurrency": 50}))
        .await;
    // The limits outlive a restart.
    node.stop();
    let node = Node::start(&node.dir.clone(), &[]);
    let ls = out(&node.cli(&["ns", "ls", "--long"]));
    assert!(
        ls.contains("shop\tmax_concurrency 5, max_instances 1\n"),
        "{ls}"
    );
    assert!(
        ls.contains(
            "default\tmax_concurrency 1000 (node default), max_instances 250 (node default)"
        ),
        "{ls}"
    );
    let r = node
        .api(Method::PATCH, "/v1/namespaces/shop")
        .json(&json!({"max_instances": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn queued_events_wait_for_their_namespace_instead_of_failing() {
    let node = Node::fresh("ns-events", &[]);
    let o = node.cli(&["ns", "create", "jobs", "--max-instances", "1"]);
    assert!(o.status.success(), "{}", out(&o));
    let testfn = fixture("testfn");
    let spec = json!({"concurrency": 4, "timeout_ms": 20000, "max_attempts": 1});
    for name in ["busy", "worker"] {
        let r = node.deploy_in("jobs", name, &testfn, spec.clone()).await;
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    // busy holds the namespace's only instance for 2 s...
    let url = format!("{}/ns/jobs/fn/busy/sleep/2000", node.url);
    let http = node.http.clone();
    let slow = tokio::spawn(async move { http.get(url).send().await.unwrap().status() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...while three events for worker are queued: they wait, then run.
    for _ in 0..3 {
        let r = node
            .api(Method::POST, "/v1/functions/worker/invoke?async")
            .header("x-wisp-namespace", "jobs")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    assert_eq!(slow.await.unwrap(), 200);
    let acts = activations_in(&node, "jobs", "worker", 3).await;
    let by = outcomes(&acts);
    assert_eq!(by.get("success").copied(), Some(3), "{by:?}");
    let dlq = node.json_ns("jobs", "/v1/dlq").await;
    assert_eq!(dlq.as_array().map(Vec::len), Some(0), "{dlq}");
}

/// The node's resident memory (VmRSS), in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

#[tokio::test]
async fn the_node_memory_budget_throttles_with_503() {
    let node = Node::fresh("mem-budget", &["--max-memory", "256MiB"]);
    let testfn = fixture("testfn");
    // A function that could never run within the budget is refused.
    let r = node
        .deploy("huge", &testfn, json!({"memory_mb": 512}))
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "over_limit", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memory budget of 256 MiB"),
        "{v}"
    );
    node.deploy_ok(
        "big",
        &testfn,
        json!({"memory_mb": 128, "timeout_ms": 30000, "concurrency": 10}),
    )
    .await;
    // Warm it up, then measure the node at rest.
    assert_eq!(node.get_fn("big/echo").send().await.unwrap().status(), 200);
    let pid = node.child.as_ref().unwrap().id();
    let idle_rss = rss_mib(pid);
    // Five calls that each hold 100 MiB for 3 s: two fit in 256 MiB.
    let url = format!("{}/fn/big/hold/100/3000", node.url);
    let calls = {
        let http = node.http.clone();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..5 {
                let (http, url) = (http.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    let r = http.get(url).send().await.unwrap();
                    let retry = r
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    let status = r.status().as_u16();
                    let body: Value = if status == 200 {
                        Value::Null
                    } else {
                        r.json().await.unwrap()
                    };
                    (status, retry, body)
                }));
            }
            let mut v = Vec::new();
            for t in tasks {
                v.push(t.await.unwrap());
            }
            v
        })
    };
    let mut peak = idle_rss;
    while !calls.is_finished() {
        peak = peak.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let results = calls.await.unwrap();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!((ok, busy.len()), (2, 3), "{results:?}");
    for (_, retry, body) in &busy {
        assert_eq!(retry.as_deref(), Some("1"), "{body}");
        assert_eq!(body["error"]["code"], "node_busy", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--max-memory"),
            "{body}"
        );
    }
    // Two instances' worth of memory, not five.
    assert!(
        peak - idle_rss < 300,
        "the node grew from {idle_rss} MiB to {peak} MiB"
    );
    let acts = node.activations("big", 6).await;
    let by = outcomes(&acts);
    assert_eq!(by.get("throttled").copied(), Some(3), "{by:?}");
    let t = acts.iter().find(|a| a["outcome"] == "throttled").unwrap();
    assert_eq!(t["status"], 503);
}

/// A gauge's value in the metrics text (`name{labels}` as written).
fn gauge(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in metrics:\n{text}"))
}

#[tokio::test]
async fn warm_instances_count_against_the_node_and_are_evicted_for_other_functions() {
    // Room for two 128 MiB instances, and two instance slots.
    let node = Node::fresh(
        "mem-warm",
        &["--max-memory", "256MiB", "--max-instances", "2"],
    );
    let testfn = fixture("testfn");
    // a keeps its instances for 100 requests each: idle between requests,
    // they keep their grown memory and their pooling slot.
    node.deploy_ok(
        "a",
        &testfn,
        json!({"memory_mb": 128, "timeout_ms": 30000, "concurrency": 2, "instance_reuse": 100}),
    )
    .await;
    node.deploy_ok(
        "b",
        &testfn,
        json!({"memory_mb": 128, "timeout_ms": 30000, "concurrency": 2}),
    )
    .await;
    let pid = node.child.as_ref().unwrap().id();
    let rest = rss_mib(pid);
    // Two calls of a at once, each touching 100 MiB: two instances, then
    // both idle and warm.
    let url = format!("{}/fn/a/hold/100/1000", node.url);
    let calls: Vec<_> = (0..2)
        .map(|_| tokio::spawn(node.http.get(url.clone()).send()))
        .collect();
    for c in calls {
        let r = c.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
        // Read it whole: a run whose client hangs up before the end of its
        // answer is an error, and its instance is not kept.
        r.bytes().await.unwrap();
    }
    let acts = node.activations("a", 2).await;
    assert!(acts.iter().all(|a| a["outcome"] == "success"), "{acts:?}");
    // (A run counts as running until its instance is back in the pool,
    // just after its answer.)
    let mut m = node.metrics().await;
    for _ in 0..100 {
        if gauge(&m, r#"wisp_node_instances{state="running"}"#) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = node.metrics().await;
    }
    assert_eq!(gauge(&m, "wisp_node_memory_budget_mib"), 256.0, "{m}");
    assert_eq!(
        gauge(&m, r#"wisp_node_memory_held_mib{state="idle"}"#),
        256.0,
        "two warm instances of a hold the budget: {}",
        m.lines()
            .filter(|l| l.contains("wisp_node") || l.contains("function=\"a\""))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(gauge(&m, r#"wisp_node_instances{state="idle"}"#), 2.0);
    let warm_rss = rss_mib(pid);
    assert!(
        warm_rss - rest >= 150,
        "warm instances hold their memory: {rest} -> {warm_rss} MiB"
    );
    // b needs room: a's least recently used warm instance is evicted for
    // it, instead of b failing or the node going over its budget.
    let b = {
        let http = node.http.clone();
        let url = format!("{}/fn/b/hold/100/1500", node.url);
        tokio::spawn(async move { http.get(url).send().await })
    };
    let mut peak_rss = warm_rss;
    let mut peak_held = 0.0f64;
    while !b.is_finished() {
        peak_rss = peak_rss.max(rss_mib(pid));
        let m = node.metrics().await;
        let held = gauge(&m, r#"wisp_node_memory_held_mib{state="idle"}"#)
            + gauge(&m, r#"wisp_node_memory_held_mib{state="running"}"#);
        peak_held = peak_held.max(held);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = b.await.unwrap().unwrap();
    assert_eq!(
        r.status(),
        200,
        "b must run while a's idle instances hold the node: {}",
        r.text().await.unwrap()
    );
    eprintln!(
        "node RSS: {rest} MiB at rest, {warm_rss} MiB with the two warm instances of a, peak {peak_rss} MiB while b ran; held at most {peak_held} MiB"
    );
    assert!(
        peak_held <= 256.0,
        "warm + running held {peak_held} MiB of 256"
    );
    assert!(
        peak_rss - rest < 260,
        "two instances' memory, not three: the node grew from {rest} to {peak_rss} MiB"
    );
    let m = node.metrics().await;
    assert!(gauge(&m, "wisp_node_idle_evictions_total") >= 1.0, "{m}");
    // a's other warm instance still serves it warm.
    let r = node.get_fn("a/echo").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-wisp-activation-id"]
        .to_str()
        .unwrap()
        .to_string();
    r.bytes().await.unwrap();
    assert_eq!(node.activation(&id).await["cold"], false);
    let acts = node.activations("b", 1).await;
    assert!(acts.iter().all(|a| a["outcome"] == "success"), "{acts:?}");
}
