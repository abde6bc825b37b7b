//! End-to-end test of a full disk: the node's data directory on a small
//! tmpfs that really fills up. A write that cannot be stored answers 507
//! and is not visible (also not after a restart, where the old value is
//! intact); the S3 API answers 507 `XMinioStorageFull`; a function's
//! `wasi:keyvalue` set sees an error; deletes still work; records lost for
//! lack of space are counted in the `*_dropped_total` metrics.
//!
//! Needs root (to mount the tmpfs); fails saying so otherwise.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{Node, access_key, error_code, fixture, out, python};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(tag: &str, size: &str) -> Tmpfs {
        // SAFETY: geteuid only reads the process's effective user id.
        let uid = unsafe { libc::geteuid() };
        assert_eq!(
            uid, 0,
            "this test mounts a small tmpfs to fill it up and needs root (run it as root, as scripts/test does)"
        );
        let dir = support::temp_dir(tag);
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .output()
            .expect("running mount");
        assert!(o.status.success(), "mounting a tmpfs: {}", out(&o));
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the filesystem of `dir` with `dir/filler` until a write fails
/// for lack of space.
fn fill(dir: &Path) {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    for chunk in [1 << 20, 4096, 512, 1] {
        let buf = vec![0u8; chunk];
        loop {
            match f.write_all(&buf).and_then(|()| f.flush()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", dir.display()),
            }
        }
    }
    f.sync_all().ok();
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line_start} not in metrics:\n{text}"))
}

/// boto3 against the node: `put BUCKET KEY BODY` (`@N`: N bytes), `get BUCKET KEY`,
/// `rm BUCKET KEY`, `mb BUCKET`, `rb BUCKET`; prints one JSON answer.
const S3: &str = r#"
import json, sys, boto3, botocore
url, key, secret, op = sys.argv[1:5]
args = sys.argv[5:]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id=key, aws_secret_access_key=secret,
                  config=botocore.config.Config(retries={"mode": "standard", "max_attempts": 3},
                                                s3={"addressing_style": "path"}))
try:
    if op == "put":
        body = b"m" * int(args[2][1:]) if args[2].startswith("@") else args[2].encode()
        s3.put_object(Bucket=args[0], Key=args[1], Body=body)
        r = "ok"
    elif op == "get":
        r = s3.get_object(Bucket=args[0], Key=args[1])["Body"].read().decode()
    elif op == "rm":
        s3.delete_object(Bucket=args[0], Key=args[1]); r = "ok"
    elif op == "mb":
        s3.create_bucket(Bucket=args[0]); r = "ok"
    elif op == "rb":
        s3.delete_bucket(Bucket=args[0]); r = "ok"
    print(json.dumps({"ok": r}))
except botocore.exceptions.ClientError as e:
    print(json.dumps({"status": e.response["ResponseMetadata"]["HTTPStatusCode"],
                      "code": e.response["Error"]["Code"],
                      "attempts": e.response["ResponseMetadata"].get("RetryAttempts", 0)}))
"#;

fn s3(node: &Node, key: &(String, String), args: &[&str]) -> Value {
    let o = Command::new(python())
        .arg("-c")
        .arg(S3)
        .arg(node.s3_url.as_ref().unwrap())
        .arg(&key.0)
        .arg(&key.1)
        .args(args)
        .output()
        .expect("running python");
    assert!(o.status.success(), "boto3 {args:?}: {}", out(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("boto3 {args:?}: {}", out(&o)))
}

async fn text(r: reqwest::RequestBuilder) -> (u16, String) {
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_full_disk_refuses_writes_cleanly_keeps_old_data_and_still_deletes() {
    let fs = Tmpfs::mount("diskfull", "32m");
    let dir = fs.0.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let mut node = Node::start(&dir, &[]);
    node.deploy_ok("kvfn", &fixture("kvfn"), json!({"kv": ["default"]}))
        .await;
    node.deploy_ok("spare", &fixture("kvfn"), json!({})).await;
    let key = access_key(&node, &["--role", "deployer"]);
    for (k, v) in [("k", "old"), ("gone", "x")] {
        let (s, b) = text(
            node.api(Method::PUT, &format!("/v1/kv/default/{k}"))
                .body(v),
        )
        .await;
        assert_eq!(s / 100, 2, "{b}");
    }
    assert_eq!(s3(&node, &key, &["mb", "photos"])["ok"], "ok");
    assert_eq!(s3(&node, &key, &["mb", "empty"])["ok"], "ok");
    assert_eq!(
        s3(&node, &key, &["put", "photos", "cat", "old"])["ok"],
        "ok"
    );
    assert_eq!(
        s3(&node, &key, &["put", "photos", "dog", "woof"])["ok"],
        "ok"
    );
    let before = node.metrics().await;
    let dropped = r#"wisp_activation_records_dropped_total{reason="no_space"}"#;
    assert_eq!(metric(&before, dropped), 0);

    fill(&fs.0);

    // A KV write answers 507 and is not visible.
    let r = node
        .api(Method::PUT, "/v1/kv/default/k")
        .body("new value".repeat(10_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "insufficient_storage", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("no space left"), "{msg}");
    assert_eq!(
        text(node.api(Method::GET, "/v1/kv/default/k")).await,
        (200, "old".to_string())
    );
    // So is a new key.
    let r = node
        .api(Method::PUT, "/v1/kv/default/fresh")
        .body("y".repeat(100_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    assert_eq!(
        node.api(Method::GET, "/v1/kv/default/fresh")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // A function's wasi:keyvalue set sees an error, and reads the old value.
    let (s, b) = text(
        node.http
            .post(format!("{}/fn/kvfn/set/default/k", node.url))
            .body("z".repeat(200_000)),
    )
    .await;
    assert_eq!(s, 400, "the guest saw success: {b}");
    assert!(b.contains("no space left"), "{b}");
    assert_eq!(
        text(node.get_fn("kvfn/get/default/k")).await,
        (200, "old".to_string())
    );

    // S3: 507 XMinioStorageFull, which boto3 does not retry; the old
    // object is intact.
    let r = s3(&node, &key, &["put", "photos", "cat", "@300000"]);
    assert_eq!(
        (r["status"].as_u64(), r["code"].as_str()),
        (Some(507), Some("XMinioStorageFull")),
        "{r}"
    );
    assert_eq!(r["attempts"], 0, "{r}");
    assert_eq!(s3(&node, &key, &["get", "photos", "cat"])["ok"], "old");

    // An artifact upload and an async invoke (an event in the durable
    // queue) answer 507 too.
    let r = node
        .api(Method::POST, "/v1/artifacts")
        .body(fixture("testfn"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    assert_eq!(error_code(r).await, "insufficient_storage");
    let r = node
        .api(Method::POST, "/v1/functions/kvfn/invoke?async=true")
        .body("e".repeat(500_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    assert_eq!(error_code(r).await, "insufficient_storage");

    // Deletes still work: a key, an object, a bucket, a function.
    let r = node
        .api(Method::DELETE, "/v1/kv/default/gone")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16() / 100, 2, "{}", r.text().await.unwrap());
    assert_eq!(
        node.api(Method::GET, "/v1/kv/default/gone")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        s3(&node, &key, &["rm", "photos", "dog"])["ok"],
        "ok",
        "object delete"
    );
    assert_eq!(
        s3(&node, &key, &["get", "photos", "dog"])["code"],
        "NoSuchKey"
    );
    assert_eq!(
        s3(&node, &key, &["rb", "empty"])["ok"],
        "ok",
        "bucket delete"
    );
    let r = node
        .api(Method::DELETE, "/v1/functions/spare")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16() / 100, 2, "{}", r.text().await.unwrap());
    assert_eq!(
        error_code(
            node.api(Method::GET, "/v1/functions/spare")
                .send()
                .await
                .unwrap()
        )
        .await,
        "function_not_found"
    );

    // Activation records of the invocations above could not be written:
    // they are counted.
    let mut after = String::new();
    for _ in 0..100 {
        after = node.metrics().await;
        if metric(&after, dropped) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(metric(&after, dropped) > 0, "{after}");

    // After a restart (the disk still full), the old values are there and
    // the failed writes are not; the deletes held.
    node.stop();
    let node = Node::start(&dir, &[]);
    assert_eq!(
        text(node.api(Method::GET, "/v1/kv/default/k")).await,
        (200, "old".to_string())
    );
    for k in ["fresh", "gone"] {
        assert_eq!(
            node.api(Method::GET, &format!("/v1/kv/default/{k}"))
                .send()
                .await
                .unwrap()
                .status(),
            404,
            "{k}"
        );
    }
    assert_eq!(s3(&node, &key, &["get", "photos", "cat"])["ok"], "old");
    assert_eq!(
        s3(&node, &key, &["get", "photos", "dog"])["code"],
        "NoSuchKey"
    );
    drop(node);
    drop(fs);
}

/// The keys whose `dev.wisp.kv.set` events reached `audit`, once `n`
/// activations of it are recorded.
async fn keys_delivered(node: &Node, n: usize) -> Vec<String> {
    let mut keys: Vec<String> = node
        .activations("audit", n)
        .await
        .iter()
        .filter_map(|a| {
            let logs = a["logs"].as_str()?;
            logs.contains("ce-type: dev.wisp.kv.set").then(|| {
                logs.lines()
                    .find_map(|l| l.strip_prefix("ce-subject: "))
                    .unwrap_or_default()
                    .to_string()
            })
        })
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_kv_write_and_its_trigger_events_are_stored_together_or_not_at_all() {
    let fs = Tmpfs::mount("diskfull-kvev", "32m");
    let dir = fs.0.join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let mut node = Node::start(&dir, &[]);
    node.deploy_ok("audit", &fixture("testfn"), json!({"max_attempts": 1}))
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
        "--events",
        "set",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let (s, b) = text(node.api(Method::PUT, "/v1/kv/watched/k").body("old")).await;
    assert_eq!(s / 100, 2, "{b}");
    assert_eq!(keys_delivered(&node, 1).await, ["k"]);
    // Room inside kv.db for small writes once the disk is full: pages
    // freed by deleted values, and a write-ahead log that was checkpointed
    // and is reused from its start. The event queue's database has none.
    for i in 0..6 {
        let k = format!("/v1/kv/scratch/big{i}");
        let (s, b) = text(node.api(Method::PUT, &k).body(vec![b'b'; 900_000])).await;
        assert_eq!(s / 100, 2, "{b}");
        let (s, b) = text(node.api(Method::DELETE, &k)).await;
        assert_eq!(s / 100, 2, "{b}");
    }

    fill(&fs.0);

    // The event queue cannot take the write's event, kv.db can take both:
    // the write and its event are stored together (before: 500, the value
    // stored and its event lost).
    let (s, b) = text(node.api(Method::PUT, "/v1/kv/watched/k").body("new")).await;
    assert_eq!(s / 100, 2, "{b}");
    assert_eq!(
        text(node.api(Method::GET, "/v1/kv/watched/k")).await,
        (200, "new".to_string())
    );
    assert_eq!(metric(&node.metrics().await, "wisp_kv_events_pending "), 1);
    // Once the disk has room, the event is queued and delivered, without
    // a restart.
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    assert_eq!(keys_delivered(&node, 2).await, ["k", "k"]);
    assert_eq!(metric(&node.metrics().await, "wisp_kv_events_pending "), 0);

    // Full again: writes are stored with their events until kv.db is
    // full too; then a write is refused with 507 and stores neither.
    fill(&fs.0);
    let (s, b) = text(node.api(Method::PUT, "/v1/kv/watched/fresh").body("y")).await;
    assert_eq!(s / 100, 2, "{b}");
    let mut stored = vec!["fresh".to_string()];
    let mut refused = None;
    for i in 0..40 {
        let k = format!("big{i:02}");
        let r = node
            .api(Method::PUT, &format!("/v1/kv/watched/{k}"))
            .body(vec![b'v'; 1_000_000])
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status == 507 {
            assert_eq!(v["error"]["code"], "insufficient_storage", "{v}");
            refused = Some(k);
            break;
        }
        assert!(status.is_success(), "{k}: {status} {v}");
        stored.push(k);
    }
    let refused = refused.expect("kv.db never filled up");
    assert_eq!(
        node.api(Method::GET, &format!("/v1/kv/watched/{refused}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The node dies with those events only in kv.db; at the next start
    // (with room on the disk) they are queued and delivered, each once,
    // and the refused write has none.
    node.kill9();
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    let node = Node::start(&dir, &[]);
    let mut want: Vec<String> = vec!["k".into(), "k".into()];
    want.extend(stored.iter().cloned());
    want.sort();
    assert_eq!(keys_delivered(&node, want.len()).await, want);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(keys_delivered(&node, want.len()).await, want, "each once");
    assert_eq!(
        text(node.api(Method::GET, "/v1/kv/watched/fresh")).await,
        (200, "y".to_string())
    );
    assert_eq!(
        node.api(Method::GET, &format!("/v1/kv/watched/{refused}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    drop(node);
    drop(fs);
}
