//! End-to-end tests of events: async invocations, retries and the
//! dead-letter queue, topics, cron triggers, crash safety, CloudEvents from
//! the Python SDK, bad input and backpressure — against the real binary.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Node, error_code, fixture, python};

fn spec(extra: Value) -> Value {
    let mut s = json!({"memory_mb": 64, "timeout_ms": 5000, "concurrency": 100});
    if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    s
}

/// Asserts an error answer: its status, its code, and that its message
/// names `needle`.
async fn expect_error(r: reqwest::Response, status: u16, code: &str, needle: &str) {
    assert_eq!(r.status(), status);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], code, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
}

/// Polls `GET /v1/events/{id}` until `done` holds (or fails after `secs`).
async fn wait_event(node: &Node, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let r = node
            .api(Method::GET, &format!("/v1/events/{id}"))
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            last = r.json().await.unwrap();
            if done(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("event {id} did not reach the expected state within {secs} s; last seen: {last:#}");
}

fn status_of(v: &Value) -> &str {
    v["deliveries"][0]["status"].as_str().unwrap_or("")
}

async fn invoke_async(node: &Node, name: &str, body: &str) -> reqwest::Response {
    node.api(
        Method::POST,
        &format!("/v1/functions/{name}/invoke?async=true"),
    )
    .header("content-type", "application/json")
    .body(body.to_string())
    .send()
    .await
    .unwrap()
}

/// Queues `n` async invocations of `name`; returns their event ids.
async fn queue(node: &Node, name: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let r = invoke_async(node, name, "{}").await;
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        ids.push(v["event_id"].as_str().unwrap().to_string());
    }
    ids
}

/// Publishes one event in binary mode; returns the response.
async fn publish(node: &Node, topic: &str, id: &str, data: &str) -> reqwest::Response {
    node.api(Method::POST, &format!("/v1/topics/{topic}/events"))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/tests")
        .header("ce-type", "com.shop.order.created")
        .header("content-type", "application/json")
        .body(data.to_string())
        .send()
        .await
        .unwrap()
}

/// The value of `name: value` in an activation's logs (the fixture prints
/// every CloudEvent attribute it receives).
fn logged<'a>(activation: &'a Value, name: &str) -> Option<&'a str> {
    activation["logs"]
        .as_str()?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[tokio::test]
async fn async_invoke_runs_once_is_recorded_and_deduplicated() {
    let node = Node::fresh("ev-async", &[]);
    node.deploy_ok("t", &fixture("testfn"), spec(json!({})))
        .await;

    let r = invoke_async(&node, "t", r#"{"a":1}"#).await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    let id = v["event_id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/v1/events/{id}"));
    assert_eq!(v["duplicate"], false);

    let st = wait_event(&node, &id, 10, |v| status_of(v) == "succeeded").await;
    let d = &st["deliveries"][0];
    assert_eq!(d["attempts"], 1);
    let a = &d["activations"][0];
    assert_eq!(a["trigger"], "async");
    assert_eq!(a["event"]["attempt"], 1);
    assert_eq!(a["event"]["event_id"], id.as_str());
    // Delivered as POST / in CloudEvents binary mode.
    assert_eq!(logged(a, "ce-id"), Some(id.as_str()));
    assert_eq!(logged(a, "ce-specversion"), Some("1.0"));
    assert_eq!(logged(a, "ce-type"), Some("dev.wisp.invoke"));
    assert_eq!(logged(a, "ce-source"), Some("/wisp/default/functions/t"));
    assert_eq!(logged(a, "content-type"), Some("application/json"));
    assert!(logged(a, "ce-time").is_some_and(|t| t.ends_with('Z')));
    assert_eq!(logged(a, "data"), Some(r#"{"a":1}"#));

    // The same Idempotency-Key within the window queues nothing new.
    let key_invoke = || {
        node.api(Method::POST, "/v1/functions/t/invoke")
            .header("x-amz-invocation-type", "Event")
            .header("idempotency-key", "order-7")
            .body("once")
            .send()
    };
    let first: Value = key_invoke().await.unwrap().json().await.unwrap();
    let second = key_invoke().await.unwrap();
    assert_eq!(second.status(), 202);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["event_id"], first["event_id"]);
    let eid = first["event_id"].as_str().unwrap();
    wait_event(&node, eid, 10, |v| status_of(v) == "succeeded").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = node.json(&format!("/v1/activations?event={eid}")).await;
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs:#}");

    // Through the CLI: `wisp invoke --async` prints the id, and
    // `wisp activation ID` shows the status, attempts and logs.
    let out = node.cli(&["invoke", "t", "--async", "--data", "from-cli"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_event(&node, &cli_id, 10, |v| status_of(v) == "succeeded").await;
    let out = node.cli(&["activation", &cli_id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status:     succeeded"), "{text}");
    assert!(text.contains("attempts:   1"), "{text}");
    assert!(text.contains("data: from-cli"), "{text}");
}

#[tokio::test]
async fn failures_are_retried_with_growing_delays_then_dead_lettered_and_replayed() {
    let node = Node::fresh("ev-retry", &[]);
    let failing = spec(json!({"env": {"FAIL": "1"}, "max_attempts": 3, "backoff_ms": 300}));
    node.deploy_ok("flaky", &fixture("testfn"), failing).await;
    let v: Value = invoke_async(&node, "flaky", "{}")
        .await
        .json()
        .await
        .unwrap();
    let id = v["event_id"].as_str().unwrap().to_string();
    let delivery = v["deliveries"][0]["id"].as_str().unwrap().to_string();

    let st = wait_event(&node, &id, 15, |v| status_of(v) == "dead_letter").await;
    let d = &st["deliveries"][0];
    assert_eq!(d["attempts"], 3);
    assert!(
        d["last_error"].as_str().unwrap().contains("HTTP 500"),
        "{d:#}"
    );
    // Every attempt is an activation, linked by the event id; exactly
    // max_attempts of them, with growing delays between them.
    let mut runs = Vec::new();
    for _ in 0..50 {
        runs = node
            .json(&format!("/v1/activations?event={id}"))
            .await
            .as_array()
            .unwrap()
            .clone();
        if runs.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runs.sort_by_key(|a| a["event"]["attempt"].as_u64());
    let attempts: Vec<u64> = runs
        .iter()
        .map(|a| a["event"]["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    assert!(
        runs.iter()
            .all(|a| a["outcome"] == "error" && a["status"] == 500)
    );
    let starts: Vec<i64> = runs
        .iter()
        .map(|a| a["start_ms"].as_i64().unwrap())
        .collect();
    let (gap1, gap2) = (starts[1] - starts[0], starts[2] - starts[1]);
    assert!(
        gap1 >= 230,
        "first retry after {gap1} ms, backoff is 300 ms ±20%"
    );
    assert!(gap2 > gap1, "delays must grow: {gap1} ms then {gap2} ms");

    // In the DLQ with the last error and attempt count.
    let out = node.cli(&["dlq", "ls", "--function", "flaky"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&delivery) && text.contains("HTTP 500"),
        "{text}"
    );

    // Fix the function (redeploy without FAIL), replay: it succeeds.
    node.deploy_ok("flaky", &fixture("testfn"), spec(json!({})))
        .await;
    let out = node.cli(&["dlq", "replay", &delivery]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("replayed 1"));
    let st = wait_event(&node, &id, 10, |v| status_of(v) == "succeeded").await;
    assert!(
        node.json("/v1/dlq").await.as_array().unwrap().is_empty(),
        "{st:#}"
    );
    // Replaying something that is not in the DLQ says so.
    let r = node
        .api(Method::POST, &format!("/v1/dlq/{delivery}/replay"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn topic_fan_out_keeps_delivering_around_a_failing_subscriber() {
    let node = Node::fresh("ev-fanout", &[]);
    node.deploy_ok("a", &fixture("testfn"), spec(json!({})))
        .await;
    node.deploy_ok("b", &fixture("testfn"), spec(json!({})))
        .await;
    let failing = spec(json!({"env": {"FAIL": "1"}, "max_attempts": 2, "backoff_ms": 50}));
    node.deploy_ok("c", &fixture("testfn"), failing).await;
    // A slow subscriber: one at a time, 400 ms each (12 s for all events).
    let slow = spec(json!({"env": {"SLEEP_MS": "400"}, "concurrency": 1}));
    node.deploy_ok("slow", &fixture("testfn"), slow).await;
    for f in ["a", "b", "c", "slow"] {
        let out = node.cli(&[
            "trigger",
            "add",
            "topic",
            &format!("orders-{f}"),
            "--function",
            f,
            "--topic",
            "orders",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let n = 30;
    let mut ids = HashSet::new();
    for i in 0..n {
        let id = format!("order-{i}");
        let r = publish(&node, "orders", &id, &format!(r#"{{"id":{i}}}"#)).await;
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["deliveries"].as_array().unwrap().len(), 4);
        ids.insert(id);
    }
    // The fast subscribers get every event within seconds, while the slow
    // one still works through its own queue (`activations` waits at most 5 s).
    for f in ["a", "b"] {
        let runs = node.activations(f, n).await;
        let got: HashSet<String> = runs
            .iter()
            .filter(|a| a["outcome"] == "success" && a["trigger"] == "topic")
            .filter_map(|a| logged(a, "ce-id").map(str::to_string))
            .collect();
        assert_eq!(got, ids, "subscriber {f} missed events");
        assert!(
            runs.iter()
                .all(|a| logged(a, "ce-type") == Some("com.shop.order.created"))
        );
    }
    // The failing subscriber's copies end up in the DLQ, each after 2 attempts.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let dl = node.json("/v1/dlq?function=c&limit=1000").await;
        let dl = dl.as_array().unwrap();
        if dl.len() == n {
            assert!(
                dl.iter()
                    .all(|d| d["attempts"] == 2 && d["via"] == "orders-c")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} dead letters",
            dl.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slow_done = node.json("/v1/activations?function=slow&limit=1000").await;
    assert!(
        slow_done.as_array().unwrap().len() < n,
        "the slow subscriber should still be busy"
    );
    let out = node.cli(&["topic", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("orders") && text.contains("a, b, c, slow"),
        "{text}"
    );
    // Dead letters can be deleted for good.
    let out = node.cli(&["dlq", "rm", "--all", "--function", "c"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("deleted {n} dead letter(s)")
    );
    assert!(node.json("/v1/dlq").await.as_array().unwrap().is_empty());
    // A topic with subscribers cannot be deleted.
    let r = node
        .api(Method::DELETE, "/v1/topics/orders")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "topic_in_use");
}

/// Scheduled times (ce-time) of the cron activations of `function`.
async fn cron_ticks(node: &Node, function: &str) -> Vec<String> {
    let runs = node
        .json(&format!("/v1/activations?function={function}&limit=10000"))
        .await;
    let mut ticks: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["trigger"] == "cron")
        .map(|a| logged(a, "ce-time").unwrap().to_string())
        .collect();
    ticks.sort();
    ticks
}

fn seconds_of(tick: &str) -> i64 {
    // 2026-11-23T10:00:05.000Z -> seconds of the day
    let t = &tick[11..19];
    let p: Vec<i64> = t.split(':').map(|x| x.parse().unwrap()).collect();
    p[0] * 3600 + p[1] * 60 + p[2]
}

#[tokio::test]
async fn cron_every_second_fires_once_per_tick_also_across_a_restart() {
    let dir = support::temp_dir("ev-cron");
    let mut node = Node::start(&dir, &[]);
    node.deploy_ok("tick", &fixture("testfn"), spec(json!({})))
        .await;
    let out = node.cli(&[
        "trigger",
        "add",
        "cron",
        "every-second",
        "--function",
        "tick",
        "--schedule",
        "* * * * * *",
        "--tz",
        "Europe/Berlin",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("next:"));
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let ticks = cron_ticks(&node, "tick").await;
    assert!(
        ticks.len() >= 3,
        "only {} ticks in 4.5 s: {ticks:?}",
        ticks.len()
    );
    let secs: Vec<i64> = ticks.iter().map(|t| seconds_of(t)).collect();
    for w in secs.windows(2) {
        assert_eq!(
            w[1] - w[0],
            1,
            "ticks must be one second apart, no doubles or gaps: {ticks:?}"
        );
    }
    assert!(
        ticks.iter().all(|t| t.ends_with(".000Z")),
        "scheduled times are whole seconds: {ticks:?}"
    );
    let runs = node.activations("tick", 1).await;
    let a = &runs[0];
    assert_eq!(logged(a, "ce-type"), Some("dev.wisp.cron.tick"));
    assert_eq!(logged(a, "ce-subject"), Some("every-second"));
    assert_eq!(
        logged(a, "ce-source"),
        Some("/wisp/default/triggers/every-second")
    );

    // Down for ~2.5 s: the missed ticks fire once on start-up, never twice.
    assert!(node.stop().success());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let node = Node::start(&dir, &[]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ticks = cron_ticks(&node, "tick").await;
    let unique: HashSet<&String> = ticks.iter().collect();
    assert_eq!(unique.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    let secs: Vec<i64> = ticks.iter().map(|t| seconds_of(t)).collect();
    let gaps: Vec<i64> = secs
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g != 1)
        .collect();
    assert_eq!(
        gaps.len(),
        1,
        "one gap (the downtime, minus its last tick): {ticks:?}"
    );
    assert!(gaps[0] >= 2, "{ticks:?}");
    let out = node.cli(&["triggers", "ls"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("every-second"));
    let out = node.cli(&["trigger", "rm", "every-second"]);
    assert!(out.status.success());
    let before = cron_ticks(&node, "tick").await.len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(cron_ticks(&node, "tick").await.len() <= before + 1);
}

/// A tiny HTTP collector outside Wisp: counts the bodies POSTed to it.
async fn collector() -> (u16, Arc<Mutex<BTreeMap<String, u32>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: headers, then content-length bytes.
                    let head_end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse().unwrap_or(0))
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
                    buf.drain(..head_end + len);
                    let id = body.split(' ').next().unwrap_or("").to_string();
                    *seen.lock().unwrap().entry(id).or_default() += 1;
                    if sock
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn kill9_while_processing_loses_no_accepted_event() {
    let (port, seen) = collector().await;
    let dir = support::temp_dir("ev-crash");
    let mut node = Node::start(&dir, &[]);
    let s = spec(json!({
        "env": {"REPORT_TO": format!("http://127.0.0.1:{port}/")},
        "allow_outbound": [format!("127.0.0.1:{port}")],
        "concurrency": 32,
        "backoff_ms": 100,
    }));
    node.deploy_ok("sink", &fixture("testfn"), s).await;

    let n = 5000;
    let accepted: Arc<Mutex<HashSet<String>>> = Arc::default();
    {
        use futures::StreamExt;
        let node = &node;
        let acc = accepted.clone();
        futures::stream::iter(0..n)
            .for_each_concurrent(32, |i| {
                let acc = acc.clone();
                async move {
                    let r = invoke_async(node, "sink", &format!("{{\"n\":{i}}}")).await;
                    assert_eq!(r.status(), 202);
                    let v: Value = r.json().await.unwrap();
                    acc.lock()
                        .unwrap()
                        .insert(v["event_id"].as_str().unwrap().to_string());
                }
            })
            .await;
    }
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), n);
    // Kill the node while deliveries are being processed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < n / 5 {
        assert!(Instant::now() < deadline, "deliveries did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.kill9();
    let at_kill = seen.lock().unwrap().len();
    eprintln!("killed with {at_kill} of {n} events delivered");
    assert!(at_kill < n, "the kill came too late to test anything");

    let _node = Node::start(&dir, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            accepted.iter().filter(|id| !seen.contains_key(*id)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} accepted events were never delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap();
    let duplicates: u32 = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "crash safety: {n} accepted, {} delivered, 0 lost, {duplicates} duplicate deliveries",
        seen.len()
    );
}

#[tokio::test]
async fn cloudevents_from_the_python_sdk_in_both_modes() {
    let node = Node::fresh("ev-python", &[]);
    node.deploy_ok("py", &fixture("testfn"), spec(json!({})))
        .await;
    let out = node.cli(&[
        "trigger",
        "add",
        "topic",
        "py-sub",
        "--function",
        "py",
        "--topic",
        "sdk",
    ]);
    assert!(out.status.success());
    let script = r#"
import json, sys, urllib.request
from cloudevents.http import CloudEvent, to_binary, to_structured
url, token = sys.argv[1], sys.argv[2]
for mode, conv in (("binary", to_binary), ("structured", to_structured)):
    ev = CloudEvent({"type": "com.example.sdk", "source": "/python/sdk", "id": "py-" + mode,
                     "subject": "mode-" + mode, "comexampleext": "ext-" + mode,
                     "datacontenttype": "application/json"}, {"mode": mode})
    headers, body = conv(ev)
    headers = dict(headers)
    headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req) as r:
        print(mode, r.status, json.loads(r.read())["event_id"])
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script, &format!("{}/v1/topics/sdk/events", node.url), &node.token])
        .output()
        .unwrap_or_else(|e| panic!("running {} failed: {e} (set WISP_PYTHON; scripts/test makes a venv with the cloudevents SDK)", python()));
    assert!(
        out.status.success(),
        "the Python CloudEvents SDK script failed (scripts/test installs `cloudevents` into a venv and sets WISP_PYTHON): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("binary 202 py-binary"), "{text}");
    assert!(text.contains("structured 202 py-structured"), "{text}");
    let runs = node.activations("py", 2).await;
    for mode in ["binary", "structured"] {
        let a = runs
            .iter()
            .find(|a| logged(a, "ce-id") == Some(&format!("py-{mode}")))
            .unwrap_or_else(|| panic!("no run for the {mode} event: {runs:#?}"));
        assert_eq!(logged(a, "ce-type"), Some("com.example.sdk"));
        assert_eq!(logged(a, "ce-source"), Some("/python/sdk"));
        assert_eq!(logged(a, "ce-subject"), Some(&*format!("mode-{mode}")));
        assert_eq!(logged(a, "ce-comexampleext"), Some(&*format!("ext-{mode}")));
        assert_eq!(logged(a, "content-type"), Some("application/json"));
        let data: Value = serde_json::from_str(logged(a, "data").unwrap()).unwrap();
        assert_eq!(data, json!({"mode": mode}));
    }
}

#[tokio::test]
async fn bad_event_input_is_rejected_naming_the_problem() {
    let node = Node::fresh("ev-bad", &[]);
    node.deploy_ok("t", &fixture("testfn"), spec(json!({})))
        .await;
    node.api(Method::PUT, "/v1/topics/orders")
        .send()
        .await
        .unwrap();

    // Binary mode without ce-type.
    let r = node
        .api(Method::POST, "/v1/topics/orders/events")
        .header("ce-specversion", "1.0")
        .header("ce-id", "1")
        .header("ce-source", "/x")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_event", "ce-type").await;
    // Structured mode that is not JSON, and one with a bad specversion.
    for (body, needle) in [
        ("{not json", "not valid JSON"),
        (
            r#"{"specversion":"0.3","id":"1","source":"/x","type":"t"}"#,
            "0.3",
        ),
        (
            r#"{"specversion":"1.0","id":"1","source":"/x","type":"t","time":"noon"}"#,
            "time",
        ),
    ] {
        let r = node
            .api(Method::POST, "/v1/topics/orders/events")
            .header("content-type", "application/cloudevents+json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    // Unknown topic.
    let r = publish(&node, "nope", "1", "{}").await;
    expect_error(r, 400, "unknown_topic", "\"nope\"").await;
    // Bad cron expression and bad time zone.
    let add = |body: Value| node.api(Method::POST, "/v1/triggers").json(&body).send();
    let r = add(json!({"name": "c", "function": "t", "kind": "cron", "schedule": "0 3 * * *"}))
        .await
        .unwrap();
    expect_error(r, 400, "invalid_schedule", "six fields").await;
    let r = add(json!({"name": "c", "function": "t", "kind": "cron", "schedule": "0 0 99 * * *"}))
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "invalid_schedule");
    let r = add(json!({"name": "c", "function": "t", "kind": "cron",
                       "schedule": "* * * * * *", "timezone": "Mars/Olympus"}))
    .await
    .unwrap();
    expect_error(r, 400, "invalid_timezone", "Mars/Olympus").await;
    // Unknown kind or field, unknown function.
    let r = add(json!({"name": "c", "function": "t", "kind": "sql"}))
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "invalid_json");
    let r = add(json!({"name": "c", "function": "ghost", "kind": "topic", "topic": "orders"}))
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "function_not_found");
    // Nothing was stored by the rejected requests; a good trigger still works.
    assert!(
        node.json("/v1/triggers")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    let r = add(json!({"name": "c", "function": "t", "kind": "topic", "topic": "orders"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = add(json!({"name": "c", "function": "t", "kind": "topic", "topic": "orders"}))
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "trigger_exists");
    // The CLI shows the server's message.
    let out = node.cli(&[
        "trigger",
        "add",
        "cron",
        "x",
        "--function",
        "t",
        "--schedule",
        "* * * * * *",
        "--tz",
        "Nowhere/City",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Nowhere/City"));
}

#[tokio::test]
async fn a_full_queue_answers_429_and_loses_nothing_it_accepted() {
    let node = Node::fresh("ev-full", &["--queue-max-events", "5"]);
    let slow = spec(json!({"env": {"SLEEP_MS": "1500"}, "concurrency": 1}));
    node.deploy_ok("slow", &fixture("testfn"), slow).await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..10 {
        let r = invoke_async(&node, "slow", &format!("{i}")).await;
        match r.status().as_u16() {
            202 => accepted.push(
                r.json::<Value>().await.unwrap()["event_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
            429 => {
                assert_eq!(r.headers()["retry-after"], "1");
                assert_eq!(error_code(r).await, "queue_full");
                refused += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(accepted.len(), 5);
    assert_eq!(refused, 5);
    let m = node.metrics().await;
    assert!(m.contains("wisp_queue_depth 5"), "{m}");
    // Every accepted one still runs.
    for id in &accepted {
        wait_event(&node, id, 20, |v| status_of(v) == "succeeded").await;
    }
}

#[tokio::test]
async fn destinations_receive_results_as_events() {
    let node = Node::fresh("ev-dest", &[]);
    node.deploy_ok("sink", &fixture("testfn"), spec(json!({})))
        .await;
    let s = spec(json!({"on_success": "function:sink"}));
    node.deploy_ok("src", &fixture("testfn"), s).await;
    let v: Value = invoke_async(&node, "src", r#"{"x":1}"#)
        .await
        .json()
        .await
        .unwrap();
    let id = v["event_id"].as_str().unwrap();
    let runs = node.activations("sink", 1).await;
    let a = &runs[0];
    assert_eq!(logged(a, "ce-type"), Some("dev.wisp.invocation.success"));
    assert_eq!(logged(a, "ce-subject"), Some(id));
    let data: Value = serde_json::from_str(logged(a, "data").unwrap()).unwrap();
    assert_eq!(data["function"], "src");
    assert_eq!(data["condition"], "success");
    assert_eq!(data["status"], 200);
    assert_eq!(data["response"], format!("handled {id}"));
}

/// The value of a plain (unlabelled) metric.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

#[tokio::test]
async fn clients_that_hang_up_mid_request_leave_nothing_stuck() {
    let node = Node::fresh("ev-hangup", &[]);
    node.deploy_ok("t", &fixture("testfn"), spec(json!({})))
        .await;
    // Many async invokes whose clients give up after a fraction of a
    // millisecond: some are stored anyway, and those must still run.
    let mut cancelled = 0;
    for i in 0..300 {
        let r = tokio::time::timeout(
            Duration::from_micros(200 + (i % 7) * 150),
            invoke_async(&node, "t", "{}"),
        )
        .await;
        if r.is_err() {
            cancelled += 1;
        }
    }
    eprintln!("{cancelled} of 300 requests were cancelled by their client");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = node.metrics().await;
        let (depth, accepted, ok) = (
            metric(&m, "wisp_queue_depth"),
            metric(&m, "wisp_queue_accepted_total"),
            metric(&m, "wisp_queue_succeeded_total"),
        );
        if depth == 0.0 && accepted == ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queue stuck: depth {depth}, accepted {accepted}, succeeded {ok}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything stored was run: nothing waits in the database for a restart.
    let mut node = node;
    assert!(node.stop().success());
    let node = Node::start(&node.dir.clone(), &[]);
    let m = node.metrics().await;
    assert_eq!(
        metric(&m, "wisp_queue_depth"),
        0.0,
        "deliveries were left behind"
    );
}

#[tokio::test]
async fn events_that_outwait_their_max_age_in_the_queue_are_not_run() {
    let node = Node::fresh("ev-age", &[]);
    let s = spec(json!({"env": {"SLEEP_MS": "1500"}, "concurrency": 1, "max_event_age_ms": 1000}));
    node.deploy_ok("slow", &fixture("testfn"), s).await;
    let ids = queue(&node, "slow", 2).await;
    // The first runs at once; the second waits 1.5 s for the slot, longer
    // than its 1 s maximum age, and goes to the DLQ without running.
    wait_event(&node, &ids[0], 10, |v| status_of(v) == "succeeded").await;
    let st = wait_event(&node, &ids[1], 10, |v| status_of(v) == "dead_letter").await;
    let d = &st["deliveries"][0];
    assert_eq!(d["attempts"], 0, "{st:#}");
    assert!(
        d["last_error"].as_str().unwrap().contains("max_event_age"),
        "{st:#}"
    );
    assert!(d["activations"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn sigterm_finishes_running_events_and_keeps_waiting_ones_for_the_restart() {
    let dir = support::temp_dir("ev-term");
    let mut node = Node::start(&dir, &[]);
    let s = spec(json!({"env": {"SLEEP_MS": "700"}, "concurrency": 1}));
    node.deploy_ok("slow", &fixture("testfn"), s).await;
    let ids = queue(&node, "slow", 5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The running one finishes; the waiting ones are not started.
    let t = Instant::now();
    assert!(node.stop().success());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t.elapsed()
    );
    let node = Node::start(&dir, &[]);
    for id in &ids {
        wait_event(&node, id, 15, |v| status_of(v) == "succeeded").await;
    }
    // Each ran exactly once: the one running at SIGTERM was acknowledged.
    for id in &ids {
        let runs = node.json(&format!("/v1/activations?event={id}")).await;
        assert_eq!(runs.as_array().unwrap().len(), 1, "{id}: {runs:#}");
    }
}
