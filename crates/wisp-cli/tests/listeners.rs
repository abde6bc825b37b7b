//! End-to-end tests of the node's listeners and of request bodies: header
//! and idle timeouts, the connection cap, bodies read before an instance is
//! taken (slow and oversized ones), responses cut off by the deadline, and
//! the API's JSON errors for what the HTTP layer refuses — against the real
//! binary over raw TCP and real HTTP.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use support::{Node, fixture};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// Reads until the peer closes; `Some(bytes read)` when it closed within
/// `within`, `None` when the connection was still open.
async fn closed_within(sock: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().map(|_| got)
}

async fn expect_error(r: reqwest::Response, status: u16, code: &str, needle: &str) {
    assert_eq!(r.status(), status, "expected {status} {code}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], code, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
}

#[tokio::test]
async fn silent_and_trickling_clients_are_dropped_after_the_header_timeout() {
    let node = Node::fresh("hdr-timeout", &["--header-timeout", "2s"]);
    let a = addr(&node.url);
    let mut silent = TcpStream::connect(&a).await.unwrap();
    let mut trickling = TcpStream::connect(&a).await.unwrap();
    trickling
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    // A header line every second: never a complete head.
    let trickle = tokio::spawn(async move {
        for i in 0..30 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let line = format!("x-slow-{i}: 1\r\n");
            if trickling.write_all(line.as_bytes()).await.is_err() {
                return (i, trickling);
            }
        }
        (30, trickling)
    });
    let got = closed_within(&mut silent, Duration::from_secs(20)).await;
    assert_eq!(
        got.as_deref(),
        Some(&b""[..]),
        "a connection that sends nothing must be closed (without an answer) after the header timeout"
    );
    let (lines, mut trickling) = trickle.await.unwrap();
    let got = closed_within(&mut trickling, Duration::from_secs(20)).await;
    assert!(
        lines < 30 && got.is_some(),
        "a client sending a header line every second must be dropped ({lines} lines sent)"
    );
    // The listener still serves complete requests.
    let r = node.get("/healthz").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // The idle timeout (1 s) is far shorter than the header timeout (60 s):
    // the close below is the idle timeout's.
    let node = Node::fresh(
        "idle-timeout",
        &["--idle-timeout", "1s", "--header-timeout", "60s"],
    );
    let mut sock = TcpStream::connect(addr(&node.url)).await.unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = sock.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.ends_with("ok\n"), "one complete response: {head}");
    // Keep-alive: a second request on the same connection works...
    sock.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let n = sock.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // ...and then, with nothing more sent, the node closes it.
    let got = closed_within(&mut sock, Duration::from_secs(20)).await;
    assert_eq!(
        got.as_deref(),
        Some(&b""[..]),
        "an idle keep-alive connection must be closed after --idle-timeout"
    );
}

#[tokio::test]
async fn more_idle_connections_than_the_cap_do_not_stop_the_node() {
    // A long header timeout: what frees the slots here is the cap's
    // shedding of the oldest idle connections, not a timeout.
    let node = Node::fresh(
        "conn-cap",
        &["--max-connections", "50", "--header-timeout", "120s"],
    );
    let a = addr(&node.url);
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(&a).await.unwrap());
    }
    // A new client is served while 200 connections sit idle.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = http.get(format!("{}/healthz", node.url)).send().await;
    assert_eq!(
        r.expect("/healthz must answer with more idle connections open than the cap")
            .status(),
        200
    );
    // The oldest idle connections were dropped to make room: at most the
    // cap stays open.
    let mut open = 0;
    let checks = idle
        .iter_mut()
        .map(|s| async move { closed_within(s, Duration::from_secs(3)).await.is_none() });
    for still_open in futures::future::join_all(checks).await {
        open += usize::from(still_open);
    }
    assert!(
        open <= 50,
        "{open} of 200 idle connections still open with --max-connections 50"
    );
}

/// A client holding `n` idle connections (Python, one process per 5,000
/// so that no process needs more open files than `ulimit -n` allows):
/// prints `open` once they are all open, then, for each line on stdin,
/// how many are still open after waiting up to a second for the node to
/// close them.
const HOLDER: &str = r#"
import select, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = {}
for i in range(n):
    s = socket.create_connection((host, port), timeout=30)
    s.setblocking(False)
    socks[s.fileno()] = s
print("open", flush=True)
closed = set()
for _ in sys.stdin:
    p = select.poll()
    for fd in socks:
        if fd not in closed:
            p.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    end = time.time() + 1
    while time.time() < end:
        for fd, ev in p.poll(100):
            try:
                data = socks[fd].recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                closed.add(fd)
                p.unregister(fd)
    print(n - len(closed), flush=True)
"#;

/// The kernel's count of connections it dropped because a listener's
/// accept queue (its backlog) was full (`ListenOverflows` in
/// /proc/net/netstat, for this network namespace).
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").expect("reading /proc/net/netstat");
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")
        .expect("no ListenOverflows in /proc/net/netstat");
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

struct Holder {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Holder {
    fn start(addr: &str, n: usize) -> Holder {
        use std::io::BufRead;
        let (host, port) = addr.rsplit_once(':').unwrap();
        let mut child = std::process::Command::new("python3")
            .args(["-c", HOLDER, host, port, &n.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 must be installed for this test (scripts/test installs it)");
        let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Holder { child, lines }
    }

    fn line(&mut self) -> String {
        self.lines
            .next()
            .expect("the connection holder exited (it could not open its connections)")
            .unwrap()
    }

    /// How many of its connections are still open.
    fn open(&mut self) -> usize {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"count\n").unwrap();
        stdin.flush().unwrap();
        self.line().parse().unwrap()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn twenty_thousand_idle_connections_leave_the_node_answering() {
    const HOLDERS: usize = 4;
    const EACH: usize = 5_000;
    const CLIENTS: usize = HOLDERS * EACH;
    // The node's default cap (--max-connections 10000); the header timeout
    // is far longer than the test, so what closes connections is the cap.
    const CAP: usize = 10_000;
    let node = Node::fresh("conn-20k", &["--header-timeout", "300s"]);
    let a = addr(&node.url);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let healthz = format!("{}/healthz", node.url);
    let started = std::time::Instant::now();
    let overflows = listen_overflows();
    // One client after the other, each connecting as fast as it can.
    let opening = {
        let a = a.clone();
        tokio::task::spawn_blocking(move || {
            let mut hs = Vec::new();
            for _ in 0..HOLDERS {
                let mut h = Holder::start(&a, EACH);
                assert_eq!(h.line(), "open");
                hs.push(h);
            }
            hs
        })
    };
    // /healthz answers quickly all along, on a new connection each time.
    let mut slowest = Duration::ZERO;
    let mut asked = 0;
    while !opening.is_finished() || asked < 5 {
        let t = std::time::Instant::now();
        let r = http.get(&healthz).send().await;
        let took = t.elapsed();
        assert_eq!(
            r.unwrap_or_else(|e| panic!("/healthz while {CLIENTS} connections open: {e}"))
                .status(),
            200
        );
        slowest = slowest.max(took);
        asked += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut holders = opening.await.unwrap();
    eprintln!(
        "{CLIENTS} connections opened in {:?}; {asked} /healthz calls, the slowest {slowest:?}",
        started.elapsed()
    );
    // A client whose connection the kernel dropped (the node did not take
    // connections off its accept queue fast enough, or the queue was
    // short) waits a second or more to retry: the node's backlog holds
    // the burst.
    let dropped = listen_overflows() - overflows;
    eprintln!("connections dropped by the kernel: {dropped}");
    assert_eq!(
        dropped, 0,
        "the kernel dropped connections to the node for a full accept queue while {CLIENTS} clients connected"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "/healthz took {slowest:?} with up to {CLIENTS} idle connections open"
    );
    // At most the cap is still open: the node closed the others, oldest
    // first.
    let open: Vec<usize> = holders.iter_mut().map(Holder::open).collect();
    let total: usize = open.iter().sum();
    eprintln!("{total} of {CLIENTS} idle connections still open ({open:?})");
    assert!(
        total <= CAP,
        "{total} of {CLIENTS} idle connections still open with --max-connections {CAP} ({open:?})"
    );
    assert!(
        open[0] == 0 && open[HOLDERS - 1] == EACH,
        "the oldest idle connections are the ones closed ({open:?})"
    );
    assert!(
        total >= CAP - 100,
        "the node keeps connections up to its cap: {total} of {CLIENTS} open, cap {CAP} ({open:?})"
    );
    drop(holders);
    let r = http.get(&healthz).send().await.unwrap();
    assert_eq!(r.status(), 200);
    eprintln!("test took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_trickled_body_does_not_hold_the_functions_only_instance() {
    let node = Node::fresh("slow-body", &["--body-timeout", "3s"]);
    node.deploy_ok(
        "one",
        &fixture("testfn"),
        json!({"memory_mb": 64, "timeout_ms": 30000, "concurrency": 1}),
    )
    .await;
    // 100 bytes announced, one sent per second.
    let mut slow = TcpStream::connect(addr(&node.url)).await.unwrap();
    slow.write_all(
        b"POST /fn/one/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\ncontent-type: text/plain\r\n\r\n",
    )
    .await
    .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            if slow.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            // Stop once the node answered.
            let mut buf = [0u8; 1];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), slow.peek(&mut buf)).await
                && n > 0
            {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).to_string()
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Meanwhile the function's only slot is free for others.
    let r = node.get_fn("one/status/200").send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "a request must not wait behind a client trickling its body"
    );
    let answer = trickle.await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "the trickling client gets 408: {answer}"
    );
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert!(answer.contains("--body-timeout"), "{answer}");
    // Only the fast request ran the function.
    let acts = node.activations("one", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acts2 = node.activations("one", 1).await;
    assert_eq!(acts.len(), 1, "{acts:?}");
    assert_eq!(acts2.len(), 1, "{acts2:?}");
}

fn chunked(n: usize) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..n / 500).map(|_| Ok(vec![b'x'; 500])).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn a_chunked_body_over_max_payload_is_413_on_every_path_and_not_billed() {
    let node = Node::fresh("chunked-413", &["--max-payload", "1000"]);
    node.deploy_ok(
        "f",
        &fixture("testfn"),
        json!({"memory_mb": 64, "timeout_ms": 5000, "concurrency": 10}),
    )
    .await;
    let r = node
        .api(Method::POST, "/v1/routes")
        .json(&json!({"path": "/big", "function": "f"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for path in ["/fn/f/echo", "/big", "/ns/default/fn/f/echo"] {
        let r = node.post(path).body(chunked(5000)).send().await.unwrap();
        expect_error(r, 413, "payload_too_large", "--max-payload").await;
    }
    let r = node
        .api(Method::POST, "/v1/functions/f/invoke")
        .body(chunked(5000))
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "payload_too_large", "--max-payload").await;
    let r = node
        .api(Method::POST, "/v1/functions/f/invoke?async=true")
        .body(chunked(5000))
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "payload_too_large", "--max-payload").await;
    // The Lambda Invoke API answers in its own error format.
    let r = node
        .post("/2015-03-31/functions/f/invocations")
        .body(chunked(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["__type"], "RequestTooLargeException", "{v}");
    // A body within the limit, chunked too, still reaches the function.
    let r = node
        .post("/fn/f/echo")
        .body(chunked(500))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["body"].as_str().unwrap().len(), 500);
    // Only that call was run and billed.
    node.activations("f", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acts = node.activations("f", 1).await;
    assert_eq!(acts.len(), 1, "refused bodies must not be billed: {acts:?}");
}

#[tokio::test]
async fn a_response_cut_off_by_the_deadline_is_incomplete() {
    let node = Node::fresh("cut-off", &[]);
    node.deploy_ok(
        "stream",
        &fixture("testfn"),
        json!({"memory_mb": 64, "timeout_ms": 1000, "concurrency": 10}),
    )
    .await;
    let r = node.get_fn("stream/trickle").send().await.unwrap();
    assert_eq!(r.status(), 200, "the head was sent before the deadline");
    let body = r.bytes().await;
    assert!(
        body.is_err(),
        "a body cut off by the deadline must not end cleanly: got {} bytes and a clean end",
        body.map(|b| b.len()).unwrap_or(0)
    );
    // curl, too, sees an incomplete transfer.
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null"])
        .arg(format!("{}/fn/stream/trickle", node.url))
        .output()
        .expect("curl must be installed for this test (scripts/test installs it)");
    assert!(
        !out.status.success(),
        "curl must fail on a cut-off response: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acts = node.activations("stream", 2).await;
    assert!(acts.iter().all(|a| a["outcome"] == "timeout"), "{acts:?}");
}

#[tokio::test]
async fn impossible_or_seven_field_cron_schedules_are_refused() {
    let node = Node::fresh("cron-400", &[]);
    node.deploy_ok(
        "t",
        &fixture("testfn"),
        json!({"memory_mb": 64, "timeout_ms": 5000, "concurrency": 1}),
    )
    .await;
    let add = |schedule: &str| {
        node.api(Method::POST, "/v1/triggers")
            .json(&json!({"name": "c", "function": "t", "kind": "cron", "schedule": schedule}))
            .send()
    };
    let r = add("0 0 0 31 2 *").await.unwrap();
    expect_error(r, 400, "invalid_schedule", "never fires").await;
    let r = add("0 0 0 31 4 *").await.unwrap();
    expect_error(r, 400, "invalid_schedule", "never fires").await;
    let r = add("0 0 0 1 1 * 2030").await.unwrap();
    expect_error(r, 400, "invalid_schedule", "has 7 fields").await;
    assert!(
        node.json("/v1/triggers")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    // 29 February fires (in leap years).
    let r = add("0 0 0 29 2 *").await.unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn what_the_http_layer_refuses_is_a_json_error() {
    let node = Node::fresh("json-errors", &[]);
    // A query that does not parse.
    let r = node
        .api(Method::GET, "/v1/activations?limit=many")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "bad_request", "limit").await;
    // A management body over the 2 MiB limit.
    let r = node
        .api(Method::POST, "/v1/topics/big/events")
        .header("content-type", "application/json")
        .body(vec![b' '; 3 << 20])
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "payload_too_large", "2 MiB").await;
    // A method an endpoint does not answer.
    let r = node
        .api(Method::PATCH, "/v1/functions")
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("allow"));
    expect_error(r, 405, "method_not_allowed", "docs/api.md").await;
    // A function's own 400 stays the function's answer.
    node.deploy_ok(
        "f",
        &fixture("testfn"),
        json!({"memory_mb": 64, "timeout_ms": 5000, "concurrency": 1}),
    )
    .await;
    let r = node
        .api(Method::POST, "/v1/functions/f/invoke/status/400")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "status 400");
}
