//! End-to-end tests of process functions: Python handlers run unchanged by
//! the real `awslambdaric` runtime client (from PyPI) on Wisp's Lambda
//! Runtime API — HTTP as API Gateway v2 events, the management and Lambda
//! Invoke APIs, async invocations, scale-out and scale to zero, and hostile
//! handlers stopped by limits.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Node, out, python};

/// Zips `files` (name, source) and the runtime client (`awslambdaric` and
/// its dependencies, from WISP_PYDEPS) into `dir/TAG.zip`, as a Lambda
/// deployment package holds its dependencies.
fn bundle(dir: &Path, tag: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let deps = std::env::var("WISP_PYDEPS").expect(
        "WISP_PYDEPS is not set: scripts/test installs awslambdaric into a directory (pip install --target) and sets it",
    );
    let src = dir.join(format!("src-{tag}"));
    std::fs::create_dir_all(&src).unwrap();
    for (name, text) in files {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let zip = dir.join(format!("{tag}.zip"));
    let script = "import os, sys, zipfile\nz = zipfile.ZipFile(sys.argv[3], 'w', zipfile.ZIP_DEFLATED)\nfor root in sys.argv[1:3]:\n    for d, _, fs in os.walk(root):\n        for f in fs:\n            p = os.path.join(d, f)\n            z.write(p, os.path.relpath(p, root))\nz.close()";
    let o = std::process::Command::new(python())
        .args(["-c", script])
        .arg(&src)
        .arg(&deps)
        .arg(&zip)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    zip
}

/// How functions start their runtime client: Debian's Python (the sandbox
/// runs them as `nobody`, who cannot reach an interpreter under /root).
const COMMAND: &str = "/usr/bin/python3 -m awslambdaric";

const APP: &str = r#"
import json, os, sys, time, uuid

# One per process: tells processes apart from outside.
PROCESS = uuid.uuid4().hex

def handler(event, context):
    print("event", json.dumps(event, sort_keys=True)[:300])
    if "rawPath" in event:
        path = event["rawPath"]
        if path.startswith("/sleep/"):
            time.sleep(int(path.split("/")[2]) / 1000)
        if path == "/hog":
            block = []
            while True:
                block.append(bytearray(16 << 20))
        if path == "/forkbomb":
            n = 0
            try:
                while True:
                    if os.fork() == 0:
                        time.sleep(30)
                        os._exit(0)
                    n += 1
            except OSError as e:
                return {"statusCode": 500, "body": f"fork failed after {n}: {e}"}
        if path == "/loop":
            while True:
                pass
        if path == "/crash":
            os.abort()
        if path == "/raise":
            raise ValueError("handler raised on purpose")
        if path == "/probe":
            def can(f):
                try:
                    f()
                    return True
                except OSError:
                    return False
            def reach(port):
                import socket
                try:
                    socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
                    return True
                except OSError:
                    return False
            data_dir = event["queryStringParameters"]["data"]
            open("/tmp/mine", "w").write("x")
            return {"statusCode": 200, "body": json.dumps({
                "uid": os.getuid(),
                "cwd": os.getcwd(),
                "data_dir_entries": os.listdir(data_dir) if os.path.isdir(data_dir) else None,
                "read_admin_token": can(lambda: open(os.path.join(data_dir, "admin-token")).read()),
                "write_root": can(lambda: open("/wisp-escape", "w").write("x")),
                "write_code": can(lambda: open("/var/task/new.py", "w").write("x")),
                "tmp_entries": sorted(os.listdir("/tmp")),
                "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
                "read_shadow": can(lambda: open("/etc/shadow").read()),
                "reach_node": reach(event["queryStringParameters"]["port"]),
            })}
        return {
            "statusCode": 201,
            "headers": {"x-handler": "python", "content-type": "application/json"},
            "cookies": ["session=abc"],
            "body": json.dumps({
                "path": path,
                "query": event.get("queryStringParameters"),
                "method": event["requestContext"]["http"]["method"],
                "body": event.get("body"),
                "function": os.environ["AWS_LAMBDA_FUNCTION_NAME"],
                "memory": os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"],
                "handler": os.environ["_HANDLER"],
                "task_root": os.environ["LAMBDA_TASK_ROOT"] == os.getcwd(),
                "remaining_ms": context.get_remaining_time_in_millis(),
                "request_id": context.aws_request_id,
                "greeting": os.environ.get("GREETING"),
                "process": PROCESS,
                "cmdline": open("/proc/self/cmdline", "rb").read().decode(errors="replace").split("\0"),
                "argv": sys.argv,
                "cgroup": open("/proc/self/cgroup").read(),
            }),
        }
    # Not HTTP: a Lambda Invoke API payload, an async invocation or a CloudEvent.
    return {"echo": event}
"#;

/// What `/probe` of APP (deployed as `function`) finds out about its
/// process's surroundings.
async fn probe(node: &Node, function: &str) -> Value {
    let data = node.dir.canonicalize().unwrap();
    let port = node.url.rsplit(':').next().unwrap();
    let r = node
        .get(&format!(
            "/fn/{function}/probe?data={}&port={port}",
            data.display()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The sandbox: nobody, the code at /var/task read-only, the data dir
/// hidden, a private /tmp, its own PID namespace, a read-only root, no
/// network (the node's own port on 127.0.0.1 is out of reach).
fn assert_sandboxed(p: &Value) {
    assert_eq!(p["uid"], 65534, "{p}");
    assert_eq!(p["cwd"], "/var/task", "{p}");
    assert!(
        p["data_dir_entries"].is_null() || p["data_dir_entries"] == json!([]),
        "the data dir is visible: {p}"
    );
    assert_eq!(p["read_admin_token"], false, "{p}");
    assert_eq!(p["write_root"], false, "{p}");
    assert_eq!(p["write_code"], false, "{p}");
    assert_eq!(
        p["tmp_entries"],
        json!(["mine"]),
        "/tmp is not private: {p}"
    );
    assert!(
        p["pids"].as_array().unwrap().len() <= 3,
        "other processes are visible: {p}"
    );
    assert_eq!(p["read_shadow"], false, "{p}");
    assert_eq!(p["reach_node"], false, "{p}");
}

#[tokio::test]
async fn python_handlers_on_awslambdaric_over_http_invoke_api_and_queue() {
    let node = Node::fresh("process", &["--idle-evict", "2s"]);
    let zip = bundle(&node.dir, "app", &[("app.py", APP)]);
    let command = COMMAND.to_string();
    let o = node.cli(&[
        "deploy",
        "thumbs",
        zip.to_str().unwrap(),
        "--runtime",
        "process",
        "--handler",
        "app.handler",
        "--command",
        &command,
        "--memory",
        "256",
        "--timeout",
        "3s",
        "--env",
        "GREETING=hi",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("deployed thumbs version 1"), "{}", out(&o));

    // HTTP → API Gateway v2 event → the handler's response object.
    let r = node
        .http
        .post(format!("{}/fn/thumbs/items/7?size=small", node.url))
        .body("hello body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-handler"], "python");
    assert_eq!(r.headers()["set-cookie"], "session=abc");
    let act = r.headers()["x-wisp-activation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["path"], "/items/7");
    assert_eq!(v["query"], json!({"size": "small"}));
    assert_eq!(v["method"], "POST");
    assert_eq!(v["body"], "hello body");
    assert_eq!(
        (
            v["function"].as_str(),
            v["memory"].as_str(),
            v["handler"].as_str()
        ),
        (Some("thumbs"), Some("256"), Some("app.handler"))
    );
    assert_eq!(v["task_root"], true);
    assert_eq!(v["greeting"], "hi");
    let left = v["remaining_ms"].as_i64().unwrap();
    assert!(left > 1000 && left <= 3000, "{left}");
    // The activation: cold, with the handler's output as its logs.
    let acts = node.activations("thumbs", 1).await;
    let first = acts.iter().find(|a| a["id"] == act.as_str()).unwrap();
    assert_eq!(first["cold"], true);
    assert!(
        first["logs"].as_str().unwrap().contains("event {"),
        "{first}"
    );
    // The next request is warm.
    let r = node.get("/fn/thumbs/again").send().await.unwrap();
    assert_eq!(r.status(), 201);
    let warm = r.headers()["x-wisp-activation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let acts = node.activations("thumbs", 2).await;
    assert_eq!(
        acts.iter().find(|a| a["id"] == warm.as_str()).unwrap()["cold"],
        false
    );

    assert_sandboxed(&probe(&node, "thumbs").await);
    // With --allow-outbound the function shares the node's network.
    let port = node.url.rsplit(':').next().unwrap();
    let o = node.cli(&[
        "deploy",
        "online",
        zip.to_str().unwrap(),
        "--runtime",
        "process",
        "--handler",
        "app.handler",
        "--command",
        &command,
        "--allow-outbound",
        &format!("127.0.0.1:{port}"),
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let p = probe(&node, "online").await;
    assert_eq!(p["reach_node"], true, "{p}");

    // The management API: a handled error and an uncaught exception.
    let r = node
        .api(Method::POST, "/v1/functions/thumbs/invoke/raise")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errorType"], "ValueError", "{v}");
    assert_eq!(v["errorMessage"], "handler raised on purpose");
    // The management token never reaches the function.
    let r = node
        .api(Method::POST, "/v1/functions/thumbs/invoke/headers")
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        !text.contains(&node.token),
        "the function saw the caller's token: {text}"
    );

    // The Lambda Invoke API with boto3: the payload as it is.
    let o = node.cli(&["accesskey", "create"]);
    assert!(o.status.success(), "{}", out(&o));
    let keys = String::from_utf8(o.stdout).unwrap();
    let field = |k: &str| {
        keys.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap()
            .to_string()
    };
    let (key, secret) = (field("aws_access_key_id"), field("aws_secret_access_key"));
    let script = r#"
import json, sys, boto3
c = boto3.client("lambda", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
r = c.invoke(FunctionName="thumbs", Payload=json.dumps({"order": 7}).encode())
print(json.dumps({"status": r["StatusCode"], "payload": json.loads(r["Payload"].read())}))
r = c.invoke(FunctionName="thumbs", Payload=json.dumps({"order": 8}).encode(), InvocationType="Event")
print(json.dumps({"status": r["StatusCode"], "id": r["ResponseMetadata"]["RequestId"]}))
"#;
    let o = std::process::Command::new(python())
        .args(["-c", script, &node.url, &key, &secret])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let lines: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0],
        json!({"status": 200, "payload": {"echo": {"order": 7}}})
    );
    assert_eq!(lines[1]["status"], 202);
    // The async invocation ran through the durable queue with the payload as it is.
    let id = lines[1]["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = node
            .api(Method::GET, &format!("/v1/events/{id}"))
            .send()
            .await
            .unwrap();
        let v: Value = if r.status().is_success() {
            r.json().await.unwrap()
        } else {
            Value::Null
        };
        if v["deliveries"][0]["status"] == "succeeded" {
            let runs = node.json(&format!("/v1/activations?event={id}")).await;
            assert!(
                runs[0]["logs"]
                    .as_str()
                    .unwrap()
                    .contains(r#"event {"order": 8}"#),
                "{runs}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the async invocation did not succeed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A topic event arrives as a structured CloudEvent.
    let o = node.cli(&[
        "trigger",
        "add",
        "topic",
        "on-order",
        "--function",
        "thumbs",
        "--topic",
        "orders",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let o = node.cli(&[
        "topic",
        "publish",
        "orders",
        "--type",
        "com.shop.order",
        "--data",
        r#"{"id":9}"#,
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let acts = node.json("/v1/activations?function=thumbs&limit=100").await;
        let found = acts.as_array().unwrap().iter().any(|a| {
            let l = a["logs"].as_str().unwrap_or("");
            l.contains(r#""data": {"id": 9}"#)
                && l.contains(r#""type": "com.shop.order""#)
                && l.contains(r#""specversion": "1.0""#)
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the topic event did not reach the handler as a CloudEvent: {acts}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Cgroups of the function named `function` (namespace `default`) on this
/// machine, when the node sandboxes its processes.
fn cgroups_of(function: &str) -> usize {
    ["/sys/fs/cgroup/pids/wisp", "/sys/fs/cgroup/wisp"]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("default-{function}-"))
        })
        .count()
}

fn processes_of(handler: &str) -> usize {
    let o = std::process::Command::new("pgrep")
        .args(["-f", handler])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).lines().count()
}

#[tokio::test]
async fn pools_scale_out_to_parallel_invocations_and_back_to_zero() {
    let node = Node::fresh("process-scale", &["--idle-evict", "1s"]);
    // A module name of this test run alone, to count its processes.
    let module = format!("scale{}", std::process::id());
    let handler = format!("{module}.handler");
    let zip = bundle(&node.dir, "scale", &[(&format!("{module}.py"), APP)]);
    let command = COMMAND.to_string();
    let o = node.cli(&[
        "deploy",
        "scale",
        zip.to_str().unwrap(),
        "--runtime",
        "process",
        "--handler",
        &handler,
        "--command",
        &command,
        "--concurrency",
        "10",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let started = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|_| tokio::spawn(node.get("/fn/scale/sleep/1500").send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let metrics = node.metrics().await;
    assert!(
        metrics.contains(r#"wisp_function_processes{namespace="default",function="scale"} 10"#),
        "{metrics}"
    );
    let mut seen = std::collections::HashSet::new();
    for c in calls {
        let r = c.await.unwrap().unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        seen.insert(body["process"].as_str().unwrap().to_string());
    }
    assert_eq!(
        seen.len(),
        10,
        "10 parallel slow invocations should run in 10 processes"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "they ran one after another: {:?}",
        started.elapsed()
    );
    let acts = node.activations("scale", 10).await;
    assert_eq!(acts.iter().filter(|a| a["cold"] == true).count(), 10);
    // After the idle period the pool is back to zero: the node says so,
    // and no process of the function is left on the machine (processes
    // from prestarted interpreters do not carry the handler in their
    // command line, but in their cgroup's name).
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_of(&handler) > 0
        || cgroups_of("scale") > 0
        || node.metrics().await.lines().any(|l| {
            l.starts_with(r#"wisp_function_processes{namespace="default",function="scale"}"#)
                && !l.ends_with(" 0")
        })
    {
        assert!(
            Instant::now() < deadline,
            "processes still running after the idle period"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(out(&node.cli(&["ls"])).contains("process"));
    // And the next invocation starts one again.
    assert_eq!(
        node.get("/fn/scale/after").send().await.unwrap().status(),
        201
    );
}

/// A function (APP, plus a module found through `PYTHONPATH`) deployed as
/// `stemmed` on `node`, cold-started until a prestarted interpreter
/// serves it (the first cold start may come before one is ready; the
/// process idles out in between): the answers, the last one prestarted
/// unless none was.
async fn cold_start_until_prestarted(node: &Node, pythonpath: &str, attempts: usize) -> Vec<Value> {
    let extra = "VALUE = 'found on PYTHONPATH'\n";
    let app = format!(
        "{APP}\nimport extra\n_plain = handler\ndef handler(event, context):\n    r = _plain(event, context)\n    if isinstance(r, dict) and r.get('statusCode') == 201:\n        b = json.loads(r['body'])\n        b['extra'] = extra.VALUE\n        r['body'] = json.dumps(b)\n    return r\n"
    );
    let zip = bundle(
        &node.dir,
        "stem",
        &[("app.py", &app), ("lib/extra.py", extra)],
    );
    let o = node.cli(&[
        "deploy",
        "stemmed",
        zip.to_str().unwrap(),
        "--runtime",
        "process",
        "--handler",
        "app.handler",
        "--command",
        COMMAND,
        "--memory",
        "96",
        "--env",
        "GREETING=hi",
        "--env",
        &format!("PYTHONPATH={pythonpath}"),
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let mut bodies: Vec<Value> = Vec::new();
    for _ in 0..attempts {
        let r = node.get("/fn/stemmed/hello?a=1").send().await.unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        let prestarted = body["cmdline"].as_array().unwrap()[1] == "-c";
        bodies.push(body);
        if prestarted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    bodies
}

#[tokio::test]
async fn without_the_sandbox_a_prestarted_process_sees_what_a_fresh_one_sees() {
    let prestarted = Node::fresh(
        "process-stem-plain",
        &["--idle-evict", "1s", "--no-process-sandbox"],
    );
    let fresh = Node::fresh(
        "process-stem-fresh",
        &[
            "--idle-evict",
            "1s",
            "--no-process-sandbox",
            "--prestart-runtimes",
            "0",
        ],
    );
    // A relative PYTHONPATH entry: the code dir is the working directory.
    let (a, b) = tokio::join!(
        cold_start_until_prestarted(&prestarted, "lib", 4),
        cold_start_until_prestarted(&fresh, "lib", 1)
    );
    let a = a.last().unwrap();
    assert_eq!(
        a["cmdline"].as_array().unwrap()[1],
        "-c",
        "no cold start was served by a prestarted interpreter: {a:#?}"
    );
    assert!(
        b.iter()
            .all(|b| b["cmdline"].as_array().unwrap()[1] == "-m"),
        "--prestart-runtimes 0 still used one: {b:#?}"
    );
    let b = b.last().unwrap();
    for field in [
        "path",
        "query",
        "method",
        "body",
        "function",
        "memory",
        "handler",
        "task_root",
        "greeting",
        "extra",
    ] {
        assert_eq!(a[field], b[field], "{field}: {a:#?} vs {b:#?}");
    }
    assert_eq!(a["extra"], "found on PYTHONPATH");
    assert_eq!(a["task_root"], true);
    // sys.argv: the module's file (in each node's own code dir), then the
    // handler, as `python3 -m awslambdaric app.handler` makes it.
    for x in [a, b] {
        let argv = x["argv"].as_array().unwrap();
        assert!(
            argv[0]
                .as_str()
                .unwrap()
                .ends_with("/awslambdaric/__main__.py"),
            "{argv:?}"
        );
        assert_eq!(argv[1..], [json!("app.handler")], "{argv:?}");
    }
}

#[tokio::test]
async fn cold_starts_take_prestarted_interpreters_into_the_same_sandbox() {
    let node = Node::fresh("process-stem", &["--idle-evict", "1s"]);
    let bodies = cold_start_until_prestarted(&node, "/var/task/lib", 4).await;
    let b = bodies.last().unwrap();
    assert_eq!(
        b["cmdline"].as_array().unwrap()[1],
        "-c",
        "no cold start was served by a prestarted interpreter: {bodies:#?}"
    );
    // What the function sees is what a freshly started process sees.
    assert_eq!(b["function"], "stemmed");
    assert_eq!(b["memory"], "96");
    assert_eq!(b["handler"], "app.handler");
    assert_eq!(b["greeting"], "hi");
    assert_eq!(b["extra"], "found on PYTHONPATH");
    assert_eq!(b["task_root"], true, "its working directory is /var/task");
    assert_eq!(b["query"]["a"], "1");
    assert_eq!(
        b["argv"],
        json!(["/var/task/awslambdaric/__main__.py", "app.handler"]),
        "sys.argv as under `python3 -m awslambdaric app.handler`"
    );
    // Its cgroups carry the function's name and its memory limit.
    let cgroup = b["cgroup"].as_str().unwrap();
    assert!(cgroup.contains("/wisp/default-stemmed-1-"), "{cgroup}");
    let rel = cgroup
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            (ctl == "memory" || ctl.is_empty()).then(|| (ctl.to_string(), path.to_string()))
        })
        .unwrap();
    let limit = match rel.0.as_str() {
        "memory" => std::fs::read_to_string(format!(
            "/sys/fs/cgroup/memory{}/memory.limit_in_bytes",
            rel.1
        )),
        _ => std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.max", rel.1)),
    };
    assert_eq!(limit.unwrap().trim(), (96u64 << 20).to_string());
    // The sandbox holds as for any process (this warm process is the
    // prestarted one).
    assert_sandboxed(&probe(&node, "stemmed").await);
    // Over its memory limit it is stopped like any process.
    let r = node.get("/fn/stemmed/hog").send().await.unwrap();
    assert_eq!(r.status(), 502);
    let act = r.headers()["x-wisp-activation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let a = node.activation(&act).await;
    assert_eq!(a["outcome"], "memory_limit", "{a}");
}

#[tokio::test]
async fn hostile_handlers_are_stopped_by_limits_and_the_node_stays_up() {
    let node = Node::fresh("process-hostile", &[]);
    let zip = bundle(&node.dir, "hostile", &[("hostile.py", APP)]);
    let command = COMMAND.to_string();
    let o = node.cli(&[
        "deploy",
        "bad",
        zip.to_str().unwrap(),
        "--runtime",
        "process",
        "--handler",
        "hostile.handler",
        "--command",
        &command,
        "--memory",
        "128",
        "--timeout",
        "2s",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let ok = || async {
        node.get("/fn/bad/fine")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ok().await, 201);
    // The fork bomb runs with memory to spare, so the pids limit stops it.
    let o = node.cli(&[
        "deploy",
        "bomb",
        zip.to_str().unwrap(),
        "--runtime",
        "process",
        "--handler",
        "hostile.handler",
        "--command",
        &command,
        "--memory",
        "2048",
        "--timeout",
        "10s",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let cases = [
        ("bad", "/loop", 504, "timeout"),
        ("bad", "/crash", 502, "error"),
        ("bad", "/hog", 502, "memory_limit"),
        ("bomb", "/forkbomb", 500, "error"),
    ];
    for (function, path, status, outcome) in cases {
        let t = Instant::now();
        let r = node
            .get(&format!("/fn/{function}{path}"))
            .send()
            .await
            .unwrap();
        let act = r.headers()["x-wisp-activation-id"]
            .to_str()
            .unwrap()
            .to_string();
        let got = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(got, status, "{path}: {body}");
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{path} took {:?}",
            t.elapsed()
        );
        let a = node.activation(&act).await;
        assert_eq!(a["outcome"], outcome, "{path}: {a}");
        if path == "/forkbomb" {
            let n: u32 = body
                .strip_prefix("fork failed after ")
                .and_then(|r| r.split(':').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| {
                    panic!("the fork bomb was not stopped by the pids limit: {body}")
                });
            assert!(n < 256, "{n} forks");
        }
        // The node and the function keep answering.
        assert_eq!(ok().await, 201, "after {path}");
        assert_eq!(node.get("/healthz").send().await.unwrap().status(), 200);
    }
}

/// A custom runtime, as in AWS's tutorial: a shell `bootstrap` speaking
/// the Runtime API with curl, shipped as a .tar.gz bundle.
const BOOTSTRAP: &str = r#"#!/bin/sh
set -eu
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  headers=$(mktemp)
  event=$(curl -sS -D "$headers" "$api/invocation/next")
  id=$(grep -i '^lambda-runtime-aws-request-id:' "$headers" | cut -d: -f2 | tr -d '[:space:]')
  echo "bootstrap got $id"
  path=$(printf '%s' "$event" | sed -n 's/.*"rawPath":"\([^"]*\)".*/\1/p')
  curl -sS -o /dev/null -X POST "$api/invocation/$id/response" \
    -d "{\"statusCode\":200,\"headers\":{\"x-runtime\":\"sh\"},\"body\":\"custom runtime saw $path as $(id -un) in $(pwd)\"}"
  rm -f "$headers"
done
"#;

/// Writes a .tar.gz holding one file `name` (mode 0755) with `data`, made
/// with Python's tarfile.
fn tar_gz(path: &Path, name: &str, data: &str) {
    let script = "import io, sys, tarfile\nt = tarfile.open(sys.argv[1], 'w:gz')\ninfo = tarfile.TarInfo(sys.argv[2])\ndata = sys.argv[3].encode()\ninfo.size = len(data)\ninfo.mode = 0o755\nt.addfile(info, io.BytesIO(data))\nt.close()";
    let o = std::process::Command::new(python())
        .args(["-c", script])
        .arg(path)
        .args([name, data])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
}

#[tokio::test]
async fn a_custom_runtime_bootstrap_from_a_tar_gz_bundle() {
    let node = Node::fresh("process-bootstrap", &[]);
    let bundle = node.dir.join("custom.tar.gz");
    tar_gz(&bundle, "bootstrap", BOOTSTRAP);
    let o = node.cli(&[
        "deploy",
        "billing",
        bundle.to_str().unwrap(),
        "--runtime",
        "process",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let r = node.get("/fn/billing/invoices/42").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-runtime"], "sh");
    assert_eq!(
        r.text().await.unwrap(),
        "custom runtime saw /invoices/42 as nobody in /var/task"
    );
    let acts = node.activations("billing", 1).await;
    assert!(
        acts[0]["logs"].as_str().unwrap().contains("bootstrap got "),
        "{}",
        acts[0]
    );

    // A bundle without bootstrap and without --command is refused, naming both.
    let empty = node.dir.join("nobootstrap.tar.gz");
    tar_gz(&empty, "app.py", "#");
    let o = node.cli(&[
        "deploy",
        "nothing",
        empty.to_str().unwrap(),
        "--runtime",
        "process",
    ]);
    assert!(!o.status.success());
    assert!(
        out(&o).contains("bootstrap") && out(&o).contains("--command"),
        "{}",
        out(&o)
    );
    // Not a bundle at all.
    let o = node.cli(&[
        "deploy",
        "nothing",
        support::fixtures().join("testfn.wasm").to_str().unwrap(),
        "--runtime",
        "process",
    ]);
    assert!(!o.status.success());
    assert!(out(&o).contains(".zip or .tar.gz"), "{}", out(&o));
    // A bundle that points outside itself.
    let evil = node.dir.join("evil.tar.gz");
    tar_gz(&evil, "../escape", "#");
    let o = node.cli(&[
        "deploy",
        "evil",
        evil.to_str().unwrap(),
        "--runtime",
        "process",
        "--command",
        "true",
    ]);
    assert!(!o.status.success());
    assert!(out(&o).contains("outside the bundle"), "{}", out(&o));
    assert!(!node.dir.join("code/escape").exists());
}

/// The native fixtures' build dir (`scripts/test` builds them and sets
/// WISP_NATIVE_FIXTURES).
fn native_fixture(name: &str) -> std::path::PathBuf {
    let dir = std::env::var("WISP_NATIVE_FIXTURES").expect(
        "WISP_NATIVE_FIXTURES is not set: scripts/test builds tests/native-fixtures and sets it",
    );
    let p = Path::new(&dir).join(name);
    assert!(
        p.is_file(),
        "native fixture {} missing: run ./scripts/test",
        p.display()
    );
    p
}

#[tokio::test]
async fn a_rust_function_on_the_lambda_runtime_crate() {
    let node = Node::fresh("process-rust", &[]);
    // Zipped as its author would for Lambda: the binary as ./bootstrap.
    let zip = node.dir.join("rust.zip");
    let script = "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[2], 'w', zipfile.ZIP_DEFLATED)\nz.write(sys.argv[1], 'bootstrap')\nz.close()";
    let o = std::process::Command::new(python())
        .args(["-c", script])
        .arg(native_fixture("bootstrap"))
        .arg(&zip)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let o = node.cli(&[
        "deploy",
        "rusty",
        zip.to_str().unwrap(),
        "--runtime",
        "process",
        "--memory",
        "64",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let r = node.get("/fn/rusty/orders/3").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-runtime"], "rust");
    assert_eq!(
        r.text().await.unwrap(),
        "rust saw /orders/3 (deadline in the future: true)"
    );
    // Through the Lambda Invoke API (a Wisp bearer token works as well as SigV4).
    let r = node
        .http
        .post(format!(
            "{}/2015-03-31/functions/rusty/invocations",
            node.url
        ))
        .bearer_auth(&node.token)
        .body(r#"{"n":5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"rust_echo": {"n": 5}, "function": "rusty"}));
    // A warm process outlives idle node threads: the node's blocking
    // threads retire after 10 s idle, and the process must not go with
    // the one that started it.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let r = node.get("/fn/rusty/again").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let acts = node.activations("rusty", 3).await;
    assert_eq!(acts[0]["cold"], false, "{acts:?}");
    assert!(
        acts.iter().all(|a| a["logs"]
            .as_str()
            .unwrap()
            .contains("rust handler got request")),
        "{acts:?}"
    );
}

const NODE_APP: &str = r#"
exports.handler = async (event, context) => {
  console.log("node got", event.rawPath ?? JSON.stringify(event));
  if (event.rawPath !== undefined) {
    return {
      statusCode: 200,
      headers: { "content-type": "application/json", "x-runtime": "node" },
      body: JSON.stringify({
        path: event.rawPath,
        method: event.requestContext.http.method,
        function: context.functionName,
        remaining: context.getRemainingTimeInMillis() > 0,
        uid: process.getuid(),
        cwd: process.cwd(),
        argv: process.argv.slice(2),
        prestarted: require("fs").readFileSync("/proc/self/cmdline", "utf8").split("\0")[1] === "-e",
      }),
    };
  }
  return { node_echo: event };
};
"#;

#[tokio::test]
async fn a_node_handler_on_aws_lambda_ric_from_npm() {
    let ric = std::env::var("WISP_NODE_RIC").expect(
        "WISP_NODE_RIC is not set: scripts/test installs aws-lambda-ric from npm (building its native addon) and sets it",
    );
    let node = Node::fresh("process-node", &["--idle-evict", "1s"]);
    // The handler and the runtime client's files it loads at run time, as
    // a Lambda deployment package holds them.
    let zip = node.dir.join("node.zip");
    let script = "import os, sys, zipfile\nz = zipfile.ZipFile(sys.argv[3], 'w', zipfile.ZIP_DEFLATED)\nz.writestr('index.js', sys.argv[1])\nric = sys.argv[2]\nfor part in ('bin', 'dist', 'package.json'):\n    p = os.path.join(ric, part)\n    files = [p] if os.path.isfile(p) else [os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs]\n    for f in files:\n        z.write(f, os.path.join('node_modules/aws-lambda-ric', os.path.relpath(f, ric)))\nz.close()";
    let o = std::process::Command::new(python())
        .args(["-c", script, NODE_APP, &ric])
        .arg(&zip)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let o = node.cli(&[
        "deploy",
        "noder",
        zip.to_str().unwrap(),
        "--runtime",
        "process",
        "--handler",
        "index.handler",
        "--command",
        "/usr/bin/node node_modules/aws-lambda-ric/bin/index.mjs",
        "--memory",
        "256",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let r = node.post("/fn/noder/items/9").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-runtime"], "node");
    let mut v: Value = r.json().await.unwrap();
    let expected = json!({"path": "/items/9", "method": "POST", "function": "noder", "remaining": true, "uid": 65534, "cwd": "/var/task", "argv": ["index.handler"]});
    v.as_object_mut().unwrap().remove("prestarted");
    assert_eq!(v, expected);
    let r = node
        .http
        .post(format!(
            "{}/2015-03-31/functions/noder/invocations",
            node.url
        ))
        .bearer_auth(&node.token)
        .body(r#"{"k":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"node_echo": {"k": 1}}));
    let acts = node.activations("noder", 2).await;
    assert_eq!(acts[0]["cold"], false, "{acts:?}");
    assert!(
        acts.iter()
            .any(|a| a["logs"].as_str().unwrap().contains("node got /items/9")),
        "{acts:?}"
    );
    // Later cold starts take a prestarted Node.js (the process idles out
    // in between), and the function sees the same as before.
    let mut seen = Vec::new();
    let mut act = String::new();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let r = node.post("/fn/noder/items/9").send().await.unwrap();
        assert_eq!(r.status(), 200);
        act = r.headers()["x-wisp-activation-id"]
            .to_str()
            .unwrap()
            .to_string();
        let mut v: Value = r.json().await.unwrap();
        let prestarted = v.as_object_mut().unwrap().remove("prestarted");
        assert_eq!(v, expected);
        seen.push(prestarted.clone());
        if prestarted == Some(json!(true)) {
            break;
        }
    }
    assert_eq!(
        seen.last(),
        Some(&Some(json!(true))),
        "no cold start was served by a prestarted Node.js: {seen:?}"
    );
    let a = node.activation(&act).await;
    assert_eq!(a["cold"], true, "{a}");
    assert!(
        a["logs"].as_str().unwrap().contains("node got /items/9"),
        "{a}"
    );
}

const SPIN: &str = r#"
import json, os, time, uuid

PROCESS = uuid.uuid4().hex

def handler(event, context):
    path = event["rawPath"]
    if path.startswith("/spin/"):
        end = time.monotonic() + int(path.split("/")[2]) / 1000
        while time.monotonic() < end:
            pass
    return {"statusCode": 200, "body": json.dumps({"nice": os.nice(0), "process": PROCESS})}
"#;

/// Field 19 (nice) of a `/proc/<pid>/stat` text.
fn stat_nice(stat: &str) -> Option<i64> {
    // The fields after the command name (in parentheses) start at 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(16)?.parse().ok()
}

/// The nice values of the processes in the cells (cgroups) of function
/// `name` (cell names are `NS-NAME-VERSION-N-NODEPID`), from /proc.
fn nice_of_function(name: &str) -> Vec<i64> {
    let marker = format!("/default-{name}-");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().to_string();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let in_cell = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|c| c.contains(&marker));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if in_cell && let Some(n) = stat_nice(&stat) {
            found.push(n);
        }
    }
    found
}

#[tokio::test]
async fn a_cpu_bound_invocation_runs_at_nice_19_and_its_warm_process_is_restored() {
    let node = Node::fresh("process-nice", &["--long-guest-after", "50ms"]);
    let name = format!("spinner{}", std::process::id());
    let zip = bundle(&node.dir, "spin", &[("spin.py", SPIN)]);
    let command = COMMAND.to_string();
    let o = node.cli(&[
        "deploy",
        &name,
        zip.to_str().unwrap(),
        "--runtime",
        "process",
        "--handler",
        "spin.handler",
        "--command",
        &command,
        "--concurrency",
        "1",
        "--timeout",
        "20s",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let call = |path: &str| {
        let req = node.get(&format!("/fn/{name}{path}")).send();
        async move {
            let r = req.await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    // A short invocation runs at the node's priority (the first one, a
    // cold start, may pass the CPU time while Python starts: the second
    // runs on the warm process).
    let pid = node.child.as_ref().unwrap().id();
    let base = stat_nice(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap()).unwrap();
    assert!(base < 19, "the node itself runs at nice {base}");
    call("/nice").await;
    let first = call("/nice").await;
    assert_eq!(first["nice"], base, "{first}");
    let procs = nice_of_function(&name);
    assert!(
        !procs.is_empty() && procs.iter().all(|n| *n == base),
        "the function's process at rest (found in /proc by its cell, which needs the sandbox: run as root): {procs:?}"
    );
    // One that spins for 2.5 s is moved to nice 19 while it runs.
    let spin = tokio::spawn(call("/spin/2500"));
    let mut seen = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = nice_of_function(&name);
        if !seen.is_empty() && seen.iter().all(|n| *n == 19) {
            break;
        }
    }
    assert!(
        !seen.is_empty() && seen.iter().all(|n| *n == 19),
        "a CPU-bound process function must run at nice 19: {seen:?}"
    );
    let spun = spin.await.unwrap();
    assert_eq!(spun["nice"], 19, "{spun}");
    assert_eq!(spun["process"], first["process"], "the same warm process");
    // The next invocation, on the same warm process, is back at normal
    // priority.
    let after = call("/nice").await;
    assert_eq!(after["process"], first["process"], "{after}");
    assert_eq!(after["nice"], base, "{after}");
    assert!(
        nice_of_function(&name).iter().all(|n| *n == base),
        "{:?}",
        nice_of_function(&name)
    );
    // The warm process is counted against the node while it waits: one
    // idle instance holding the function's memory (128 MiB by default).
    let m = node.metrics().await;
    assert!(
        m.contains("wisp_node_instances{state=\"idle\"} 1\n")
            && m.contains("wisp_node_memory_held_mib{state=\"idle\"} 128\n"),
        "{}",
        m.lines()
            .filter(|l| l.starts_with("wisp_node"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
