//! End-to-end tests of the S3-compatible API against the real binary, with
//! real clients from PyPI: boto3 for every operation, the AWS CLI for
//! `mb`, `cp`, `ls`, `sync`, `rm` and a 200 MB multipart upload that must
//! round-trip byte for byte.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use support::{Node, access_key, out, python};

/// Every operation through boto3; one JSON line per check.
const BOTO3: &str = r#"
import hashlib, json, sys, urllib.request, boto3, botocore
url, key, secret, other_key, other_secret = sys.argv[1:6]
def client(k=key, s=secret):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=k, aws_secret_access_key=s,
                        config=botocore.config.Config(retries={"max_attempts": 0}, s3={"addressing_style": "path"}))
s3 = client()
out = {}
def err(f):
    try:
        f()
        return None
    except botocore.exceptions.ClientError as e:
        return [e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]]
s3.create_bucket(Bucket="photos")
out["create_again"] = err(lambda: s3.create_bucket(Bucket="photos"))
out["bad_name"] = err(lambda: s3.create_bucket(Bucket="No_Such"))
out["buckets"] = [b["Name"] for b in s3.list_buckets()["Buckets"]]
out["head_missing_bucket"] = err(lambda: s3.head_bucket(Bucket="nope"))
r = s3.put_object(Bucket="photos", Key="in/cat.txt", Body=b"meow" * 1000, ContentType="text/plain", Metadata={"owner": "ann"})
out["put_etag"] = r["ETag"]
out["md5"] = '"' + hashlib.md5(b"meow" * 1000).hexdigest() + '"'
g = s3.get_object(Bucket="photos", Key="in/cat.txt")
out["get"] = [len(g["Body"].read()), g["ContentType"], g["Metadata"], g["ETag"]]
g = s3.get_object(Bucket="photos", Key="in/cat.txt", Range="bytes=4-11")
out["range"] = [g["ResponseMetadata"]["HTTPStatusCode"], g["Body"].read().decode(), g["ContentRange"]]
out["bad_range"] = err(lambda: s3.get_object(Bucket="photos", Key="in/cat.txt", Range="bytes=9000-"))
h = s3.head_object(Bucket="photos", Key="in/cat.txt")
out["head"] = [h["ContentLength"], h["ETag"]]
out["no_such_key"] = err(lambda: s3.get_object(Bucket="photos", Key="in/dog.txt"))
out["head_no_such_key"] = err(lambda: s3.head_object(Bucket="photos", Key="in/dog.txt"))
out["no_such_bucket"] = err(lambda: s3.get_object(Bucket="nope", Key="x"))
out["put_no_such_bucket"] = err(lambda: s3.put_object(Bucket="nope", Key="x", Body=b"1"))
# Pagination past 1,000 keys, prefixes and delimiters.
for i in range(1100):
    s3.put_object(Bucket="photos", Key=f"many/{i:05d}", Body=b"x")
pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="photos", Prefix="many/"))
out["pages"] = [len(p.get("Contents", [])) for p in pages]
keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
out["keys_in_order"] = keys == sorted(keys) and len(set(keys)) == 1100
d = s3.list_objects_v2(Bucket="photos", Delimiter="/")
out["top"] = [[c["Prefix"] for c in d.get("CommonPrefixes", [])], [o["Key"] for o in d.get("Contents", [])]]
v1 = list(s3.get_paginator("list_objects").paginate(Bucket="photos", Prefix="many/"))
out["v1_total"] = sum(len(p.get("Contents", [])) for p in v1)
# Copy, delete, delete many.
s3.copy_object(Bucket="photos", Key="out/cat-copy.txt", CopySource={"Bucket": "photos", "Key": "in/cat.txt"})
c = s3.get_object(Bucket="photos", Key="out/cat-copy.txt")
out["copy"] = [c["Body"].read() == b"meow" * 1000, c["Metadata"]]
s3.delete_object(Bucket="photos", Key="out/cat-copy.txt")
out["deleted"] = err(lambda: s3.head_object(Bucket="photos", Key="out/cat-copy.txt"))
r = s3.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": f"many/{i:05d}"} for i in range(1000)]})
out["delete_many"] = len(r.get("Deleted", []))
out["left"] = s3.list_objects_v2(Bucket="photos", Prefix="many/")["KeyCount"]
# Multipart.
part = b"p" * (5 << 20)
m = s3.create_multipart_upload(Bucket="photos", Key="big.bin", ContentType="application/x-test")
p1 = s3.upload_part(Bucket="photos", Key="big.bin", UploadId=m["UploadId"], PartNumber=1, Body=part)
p2 = s3.upload_part(Bucket="photos", Key="big.bin", UploadId=m["UploadId"], PartNumber=2, Body=b"tail")
done = s3.complete_multipart_upload(Bucket="photos", Key="big.bin", UploadId=m["UploadId"],
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]})
body = s3.get_object(Bucket="photos", Key="big.bin")["Body"].read()
out["multipart"] = [done["ETag"].endswith('-2"'), body == part + b"tail", s3.head_object(Bucket="photos", Key="big.bin")["ContentType"]]
a = s3.create_multipart_upload(Bucket="photos", Key="aborted.bin")
s3.abort_multipart_upload(Bucket="photos", Key="aborted.bin", UploadId=a["UploadId"])
out["aborted"] = err(lambda: s3.upload_part(Bucket="photos", Key="aborted.bin", UploadId=a["UploadId"], PartNumber=1, Body=b"x"))
# Presigned URLs.
get_url = s3.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "in/cat.txt"}, ExpiresIn=60)
out["presigned_get"] = len(urllib.request.urlopen(get_url).read())
put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "photos", "Key": "in/presigned.txt"}, ExpiresIn=60)
# (urllib would add a form Content-Type, which Signature V2 signs: none was signed.)
urllib.request.urlopen(urllib.request.Request(put_url, data=b"via presigned PUT", method="PUT", headers={"Content-Type": ""})).read()
out["presigned_put"] = s3.get_object(Bucket="photos", Key="in/presigned.txt")["Body"].read().decode()
try:
    urllib.request.urlopen(get_url.replace("in%2Fcat.txt", "in%2Fdog.txt").replace("in/cat.txt", "in/dog.txt"))
    out["presigned_tampered"] = 200
except urllib.error.HTTPError as e:
    out["presigned_tampered"] = e.code
# The same with Signature Version 4 presigning.
v4 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret,
                  config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}))
get_v4 = v4.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "in/cat.txt"}, ExpiresIn=60)
out["presigned_v4"] = ["X-Amz-Signature=" in get_v4, len(urllib.request.urlopen(get_v4).read())]
put_v4 = v4.generate_presigned_url("put_object", Params={"Bucket": "photos", "Key": "in/v4.txt"}, ExpiresIn=60)
urllib.request.urlopen(urllib.request.Request(put_v4, data=b"v4 put", method="PUT")).read()
out["presigned_v4_put"] = s3.get_object(Bucket="photos", Key="in/v4.txt")["Body"].read().decode()
try:
    urllib.request.urlopen(get_v4.replace("in/cat.txt", "in/v4.txt"))
    out["presigned_v4_tampered"] = 200
except urllib.error.HTTPError as e:
    out["presigned_v4_tampered"] = e.code
# Auth and tenancy.
out["wrong_secret"] = err(lambda: client(s="x" * 40).list_buckets())
out["unknown_key"] = err(lambda: client(k="WISPNOTAKEY000000000").list_buckets())
other = client(other_key, other_secret)
out["other_ns_buckets"] = [b["Name"] for b in other.list_buckets()["Buckets"]]
out["other_ns_get"] = err(lambda: other.get_object(Bucket="photos", Key="in/cat.txt"))
out["not_empty"] = err(lambda: s3.delete_bucket(Bucket="photos"))
s3.create_bucket(Bucket="empty")
s3.delete_bucket(Bucket="empty")
out["after_delete"] = err(lambda: s3.head_bucket(Bucket="empty"))
print(json.dumps(out))
"#;

fn aws() -> PathBuf {
    let py = PathBuf::from(python());
    let aws = py.parent().unwrap().join("aws");
    assert!(
        aws.is_file(),
        "the AWS CLI is missing at {} (scripts/test installs awscli into the venv)",
        aws.display()
    );
    aws
}

fn run_aws(node: &Node, key: &(String, String), args: &[&str]) -> std::process::Output {
    std::process::Command::new(aws())
        .args(["--endpoint-url", node.s3_url.as_deref().unwrap()])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &key.0)
        .env("AWS_SECRET_ACCESS_KEY", &key.1)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap()
}

/// A command's stdout; it must have succeeded.
fn ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", out(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sha256_file(p: &Path) -> String {
    let o = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn boto3_uses_every_operation() {
    let node = Node::fresh("s3-boto3", &[]);
    let (key, secret) = access_key(&node, &["--role", "deployer"]);
    let o = node.cli(&["ns", "create", "shop"]);
    assert!(o.status.success(), "{}", out(&o));
    let (okey, osecret) = access_key(&node, &["--ns", "shop", "--role", "deployer"]);
    let o = std::process::Command::new(python())
        .args([
            "-c",
            BOTO3,
            node.s3_url.as_deref().unwrap(),
            &key,
            &secret,
            &okey,
            &osecret,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let j = |k: &str| v[k].clone();
    let e = |status: u16, code: &str| serde_json::json!([status, code]);
    // As us-east-1: the bucket is there, nothing changes.
    assert_eq!(j("create_again"), Value::Null);
    assert_eq!(j("bad_name"), e(400, "InvalidBucketName"));
    assert_eq!(j("buckets"), serde_json::json!(["photos"]));
    assert_eq!(j("head_missing_bucket"), e(404, "404"));
    assert_eq!(j("put_etag"), j("md5"), "ETag is the MD5 of the body");
    assert_eq!(
        j("get"),
        serde_json::json!([4000, "text/plain", {"owner": "ann"}, v["md5"]])
    );
    assert_eq!(
        j("range"),
        serde_json::json!([206, "meowmeow", "bytes 4-11/4000"])
    );
    assert_eq!(j("bad_range"), e(416, "InvalidRange"));
    assert_eq!(j("head"), serde_json::json!([4000, v["md5"]]));
    assert_eq!(j("no_such_key"), e(404, "NoSuchKey"));
    assert_eq!(j("head_no_such_key"), e(404, "404"));
    assert_eq!(j("no_such_bucket"), e(404, "NoSuchBucket"));
    assert_eq!(j("put_no_such_bucket"), e(404, "NoSuchBucket"));
    assert_eq!(j("pages"), serde_json::json!([1000, 100]));
    assert_eq!(j("keys_in_order"), true);
    assert_eq!(j("top"), serde_json::json!([["in/", "many/"], []]), "{v}");
    assert_eq!(j("v1_total"), 1100);
    assert_eq!(j("copy"), serde_json::json!([true, {"owner": "ann"}]));
    assert_eq!(j("deleted"), e(404, "404"));
    assert_eq!(j("delete_many"), 1000);
    assert_eq!(j("left"), 100);
    assert_eq!(
        j("multipart"),
        serde_json::json!([true, true, "application/x-test"])
    );
    assert_eq!(j("aborted"), e(404, "NoSuchUpload"));
    assert_eq!(j("presigned_get"), 4000);
    assert_eq!(j("presigned_put"), "via presigned PUT");
    assert_eq!(j("presigned_tampered"), 403);
    assert_eq!(j("presigned_v4"), serde_json::json!([true, 4000]));
    assert_eq!(j("presigned_v4_put"), "v4 put");
    assert_eq!(j("presigned_v4_tampered"), 403);
    assert_eq!(j("wrong_secret"), e(403, "SignatureDoesNotMatch"));
    assert_eq!(j("unknown_key"), e(403, "InvalidAccessKeyId"));
    assert_eq!(j("other_ns_buckets"), serde_json::json!([]));
    assert_eq!(j("other_ns_get"), e(404, "NoSuchBucket"));
    assert_eq!(j("not_empty"), e(409, "BucketNotEmpty"));
    assert_eq!(j("after_delete"), e(404, "404"));
}

#[tokio::test]
async fn the_aws_cli_copies_lists_syncs_and_round_trips_200_mb() {
    let node = Node::fresh("s3-cli", &[]);
    let key = access_key(&node, &["--role", "deployer"]);
    ok(run_aws(&node, &key, &["s3", "mb", "s3://cli"]));
    let work = node.dir.join("cli-work");
    std::fs::create_dir_all(work.join("tree/sub")).unwrap();
    std::fs::write(work.join("tree/a.txt"), "alpha").unwrap();
    std::fs::write(work.join("tree/sub/b.txt"), "beta").unwrap();
    std::fs::write(work.join("tree/sub/c.bin"), vec![7u8; 70_000]).unwrap();
    ok(run_aws(
        &node,
        &key,
        &[
            "s3",
            "cp",
            work.join("tree/a.txt").to_str().unwrap(),
            "s3://cli/one/a.txt",
        ],
    ));
    let ls = ok(run_aws(&node, &key, &["s3", "ls", "s3://cli/one/"]));
    assert!(ls.contains("a.txt") && ls.contains(" 5 "), "{ls}");
    let sync = ok(run_aws(
        &node,
        &key,
        &[
            "s3",
            "sync",
            work.join("tree").to_str().unwrap(),
            "s3://cli/tree/",
        ],
    ));
    assert_eq!(sync.matches("upload:").count(), 3, "{sync}");
    // A second sync finds nothing to do.
    let again = ok(run_aws(
        &node,
        &key,
        &[
            "s3",
            "sync",
            work.join("tree").to_str().unwrap(),
            "s3://cli/tree/",
        ],
    ));
    assert_eq!(again.matches("upload:").count(), 0, "{again}");
    let ls = ok(run_aws(
        &node,
        &key,
        &["s3", "ls", "--recursive", "s3://cli/tree/"],
    ));
    assert_eq!(ls.lines().count(), 3, "{ls}");
    // Down again, byte for byte.
    ok(run_aws(
        &node,
        &key,
        &[
            "s3",
            "sync",
            "s3://cli/tree/",
            work.join("back").to_str().unwrap(),
        ],
    ));
    assert_eq!(
        std::fs::read(work.join("back/sub/c.bin")).unwrap(),
        vec![7u8; 70_000]
    );
    ok(run_aws(&node, &key, &["s3", "rm", "s3://cli/one/a.txt"]));
    let ls = ok(run_aws(&node, &key, &["s3", "ls", "s3://cli/"]));
    assert!(!ls.contains("one/"), "{ls}");

    // 200 MB: the CLI splits it into a multipart upload (8 MB parts, in
    // parallel) and downloads it with ranged GETs.
    let big = work.join("big.bin");
    let o = std::process::Command::new("head")
        .args(["-c", "209715200", "/dev/urandom"])
        .output()
        .unwrap();
    std::fs::write(&big, &o.stdout).unwrap();
    drop(o);
    ok(run_aws(
        &node,
        &key,
        &["s3", "cp", big.to_str().unwrap(), "s3://cli/big.bin"],
    ));
    let back = work.join("big.back");
    ok(run_aws(
        &node,
        &key,
        &["s3", "cp", "s3://cli/big.bin", back.to_str().unwrap()],
    ));
    assert_eq!(std::fs::metadata(&back).unwrap().len(), 209_715_200);
    assert_eq!(sha256_file(&big), sha256_file(&back));
    let head = ok(run_aws(
        &node,
        &key,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "cli",
            "--key",
            "big.bin",
        ],
    ));
    assert!(
        head.contains("-25\\\""),
        "a multipart ETag of 25 parts: {head}"
    );
    let _ = std::fs::remove_file(&big);
    let _ = std::fs::remove_file(&back);
}

#[tokio::test]
async fn kill_9_during_a_large_put_leaves_no_partial_object() {
    let mut node = Node::fresh("s3-crash", &[]);
    let key = access_key(&node, &["--role", "deployer"]);
    ok(run_aws(&node, &key, &["s3", "mb", "s3://crash"]));
    // A complete object under the same key first: after the crash it must
    // be this one, whole, or the new one, whole.
    let small = node.dir.join("small.bin");
    std::fs::write(&small, vec![1u8; 1000]).unwrap();
    ok(run_aws(
        &node,
        &key,
        &[
            "s3api",
            "put-object",
            "--bucket",
            "crash",
            "--key",
            "big.bin",
            "--body",
            small.to_str().unwrap(),
        ],
    ));
    let big = node.dir.join("big.bin");
    let o = std::process::Command::new("head")
        .args(["-c", "314572800", "/dev/zero"])
        .output()
        .unwrap();
    std::fs::write(&big, &o.stdout).unwrap();
    drop(o);
    // One PUT (no multipart), killed while the body streams in.
    let upload = std::process::Command::new(aws())
        .args(["--endpoint-url", node.s3_url.as_deref().unwrap()])
        .args([
            "s3api",
            "put-object",
            "--bucket",
            "crash",
            "--key",
            "big.bin",
            "--body",
        ])
        .arg(&big)
        .env("AWS_ACCESS_KEY_ID", &key.0)
        .env("AWS_SECRET_ACCESS_KEY", &key.1)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the body is arriving: a temp file grows.
    let tmp = node.dir.join("objects/tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let growing = std::fs::read_dir(&tmp)
            .map(|d| {
                d.flatten()
                    .any(|e| e.metadata().map(|m| m.len() > 1 << 20).unwrap_or(false))
            })
            .unwrap_or(false);
        if growing {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    node.kill9();
    let mut upload = upload;
    let _ = upload.wait();
    let dir = node.dir.clone();
    let node = Node::start(&dir, &[]);
    let head = ok(run_aws(
        &node,
        &key,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "crash",
            "--key",
            "big.bin",
        ],
    ));
    let v: Value = serde_json::from_str(&head).unwrap();
    let len = v["ContentLength"].as_u64().unwrap();
    assert!(
        len == 1000 || len == 314_572_800,
        "a partial object is visible: {head}"
    );
    let back = dir.join("back.bin");
    ok(run_aws(
        &node,
        &key,
        &["s3", "cp", "s3://crash/big.bin", back.to_str().unwrap()],
    ));
    assert_eq!(std::fs::metadata(&back).unwrap().len(), len);
    // The crash's temp file is gone.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    let _ = std::fs::remove_file(&big);
}

#[tokio::test]
async fn functions_reach_granted_buckets_and_uploads_trigger_them() {
    let node = Node::fresh("s3-functions", &[]);
    let key = access_key(&node, &["--role", "deployer"]);
    ok(run_aws(&node, &key, &["s3", "mb", "s3://photos"]));
    ok(run_aws(&node, &key, &["s3", "mb", "s3://private"]));
    let cat = node.dir.join("cat.txt");
    std::fs::write(&cat, "meow").unwrap();
    ok(run_aws(
        &node,
        &key,
        &["s3", "cp", cat.to_str().unwrap(), "s3://photos/in/cat.txt"],
    ));
    ok(run_aws(
        &node,
        &key,
        &["s3", "cp", cat.to_str().unwrap(), "s3://private/x.txt"],
    ));
    let wasm = support::fixture("testfn");
    node.deploy_ok("reader", &wasm, serde_json::json!({"objects": ["photos"]}))
        .await;
    node.deploy_ok("stranger", &wasm, serde_json::json!({}))
        .await;
    // The endpoint Wisp gives the function, and the internal name.
    let (s, endpoint) = {
        let r = node
            .get("/fn/reader/env/WISP_S3_ENDPOINT")
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    };
    assert_eq!(
        (s.as_u16(), endpoint.as_str()),
        (200, node.s3_url.as_deref().unwrap())
    );
    for base in [endpoint.as_str(), "http://s3.wisp.internal"] {
        let r = node
            .get(&format!("/fn/reader/fetch?url={base}/photos/in/cat.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "200 meow", "{base}");
    }
    // Not granted: the bucket of its own namespace it was not given.
    let t = node
        .get(&format!("/fn/reader/fetch?url={endpoint}/private/x.txt"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        t.starts_with("403 ") && t.contains("--objects private"),
        "{t}"
    );
    // A function of another namespace, granted a bucket of the same name,
    // reaches its own namespace's bucket (there is none), never this one.
    assert!(node.cli(&["ns", "create", "shop"]).status.success());
    let r = node
        .deploy_in(
            "shop",
            "reader",
            &wasm,
            serde_json::json!({"objects": ["photos"]}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let t = node
        .get(&format!(
            "/ns/shop/fn/reader/fetch?url={endpoint}/photos/in/cat.txt"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(t.starts_with("404 ") && t.contains("NoSuchBucket"), "{t}");
    // No grants at all: the request is refused before it leaves.
    let r = node
        .get(&format!(
            "/fn/stranger/fetch?url={endpoint}/photos/in/cat.txt"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502, "{}", r.text().await.unwrap());

    // Object triggers: created under in/ only.
    node.deploy_ok("watcher", &wasm, serde_json::json!({}))
        .await;
    let o = node.cli(&[
        "trigger",
        "add",
        "object",
        "on-upload",
        "--function",
        "watcher",
        "--bucket",
        "photos",
        "--prefix",
        "in/",
        "--events",
        "created",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let o = node.cli(&[
        "trigger",
        "add",
        "object",
        "bad",
        "--function",
        "watcher",
        "--bucket",
        "nope",
    ]);
    assert!(
        !o.status.success() && out(&o).contains("does not exist"),
        "{}",
        out(&o)
    );
    ok(run_aws(
        &node,
        &key,
        &["s3", "cp", cat.to_str().unwrap(), "s3://photos/in/dog.txt"],
    ));
    ok(run_aws(
        &node,
        &key,
        &[
            "s3",
            "cp",
            cat.to_str().unwrap(),
            "s3://photos/out/skip.txt",
        ],
    ));
    ok(run_aws(
        &node,
        &key,
        &["s3", "rm", "s3://photos/in/cat.txt"],
    ));
    let acts = node.activations("watcher", 1).await;
    let logs = acts[0]["logs"].as_str().unwrap();
    assert!(logs.contains("ce-type: dev.wisp.object.created"), "{logs}");
    assert!(logs.contains("ce-subject: in/dog.txt"), "{logs}");
    assert!(
        logs.contains("ce-source: /wisp/default/objects/photos"),
        "{logs}"
    );
    assert!(logs.contains("\"size\":4"), "{logs}");
    // Give a wrongly delivered event time to show up, then count.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let acts = node.activations("watcher", 1).await;
    assert_eq!(acts.len(), 1, "only in/dog.txt's creation: {acts:?}");
    // Prometheus counts the S3 API's requests, the function's included.
    let m = node.metrics().await;
    assert!(
        m.contains("wisp_s3_requests_total{method=\"GET\",code=\"200\"}"),
        "{m}"
    );
    assert!(
        m.contains("wisp_s3_requests_total{method=\"GET\",code=\"403\"} 1"),
        "{m}"
    );
}

/// Writes a `w`×`h` RGB gradient as a PNG (zlib + CRC from Python's
/// standard library: no imaging package needed).
fn png(path: &Path, w: u32, h: u32) {
    let script = "import struct, sys, zlib\nw, h = int(sys.argv[1]), int(sys.argv[2])\nraw = b''.join(b'\\x00' + bytes(v for x in range(w) for v in (x * 255 // w, y * 255 // h, 128)) for y in range(h))\ndef chunk(t, d):\n    return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)\nopen(sys.argv[3], 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))";
    let o = std::process::Command::new(python())
        .args(["-c", script, &w.to_string(), &h.to_string()])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
}

/// A PNG's width and height, from its IHDR chunk.
fn png_size(b: &[u8]) -> (u32, u32) {
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let n = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (n(16), n(20))
}

#[tokio::test]
async fn the_thumbnail_example_end_to_end() {
    let node = Node::fresh("s3-thumbs", &[]);
    let key = access_key(&node, &["--role", "deployer"]);
    // As examples/thumbnail/README.md walks through it.
    ok(run_aws(&node, &key, &["s3", "mb", "s3://photos"]));
    let wasm = support::fixtures().join("thumbnail.wasm");
    assert!(
        wasm.is_file(),
        "{} missing: run ./scripts/test",
        wasm.display()
    );
    ok(node.cli(&[
        "deploy",
        "thumbs",
        wasm.to_str().unwrap(),
        "--objects",
        "photos",
    ]));
    ok(node.cli(&[
        "trigger",
        "add",
        "object",
        "thumbs-on-upload",
        "--function",
        "thumbs",
        "--bucket",
        "photos",
        "--prefix",
        "in/",
        "--events",
        "created",
    ]));
    ok(node.cli(&[
        "route",
        "add",
        "GET",
        "/thumbs/{name}",
        "--function",
        "thumbs",
    ]));
    let cat = node.dir.join("cat.png");
    png(&cat, 300, 200);
    ok(run_aws(
        &node,
        &key,
        &["s3", "cp", cat.to_str().unwrap(), "s3://photos/in/cat.png"],
    ));
    // The thumbnail appears under out/.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ls = ok(run_aws(&node, &key, &["s3", "ls", "s3://photos/out/"]));
        if ls.contains("cat.png") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no thumbnail after 20 s; activations: {:?}",
            node.json("/v1/activations?function=thumbs").await
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Served through the route.
    let r = node.get("/thumbs/cat.png").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let body = r.bytes().await.unwrap();
    assert_eq!(png_size(&body), (128, 85));
    let r = node.get("/thumbs/dog.png").send().await.unwrap();
    assert_eq!(r.status(), 404);
    // One run per upload: the function's own write under out/ wakes nothing.
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let acts = node.json("/v1/activations?function=thumbs").await;
    let triggered = acts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["trigger"] != "http")
        .count();
    assert_eq!(triggered, 1, "{acts}");
}

/// Every request for a sub-resource or header Wisp does not implement,
/// through boto3; `[status, code]` each, then what the bucket holds.
const UNSUPPORTED: &str = r#"
import datetime, json, sys, boto3, botocore
url, key, secret = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id=key, aws_secret_access_key=secret,
                  config=botocore.config.Config(retries={"max_attempts": 0}, s3={"addressing_style": "path"}))
B, K = "keep", "k.txt"
s3.create_bucket(Bucket=B)
s3.put_object(Bucket=B, Key=K, Body=b"original body", ContentType="text/plain", Metadata={"owner": "ann"})
def state():
    g = s3.get_object(Bucket=B, Key=K)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=B).get("Contents", [])]
    buckets = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
    return [g["Body"].read().decode(), g["ContentType"], g["Metadata"], keys, buckets]
before = state()
def call(f):
    try:
        f()
        return "ok"
    except botocore.exceptions.ClientError as e:
        return [e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]]
day = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
tags = {"TagSet": [{"Key": "a", "Value": "b"}]}
sse_c = dict(SSECustomerAlgorithm="AES256", SSECustomerKey="k" * 32)
calls = {
    # Object sub-resources.
    "put_object_tagging": lambda: s3.put_object_tagging(Bucket=B, Key=K, Tagging=tags),
    "get_object_tagging": lambda: s3.get_object_tagging(Bucket=B, Key=K),
    "delete_object_tagging": lambda: s3.delete_object_tagging(Bucket=B, Key=K),
    "put_object_retention": lambda: s3.put_object_retention(Bucket=B, Key=K, Retention={"Mode": "GOVERNANCE", "RetainUntilDate": day}),
    "put_object_legal_hold": lambda: s3.put_object_legal_hold(Bucket=B, Key=K, LegalHold={"Status": "ON"}),
    "put_object_acl": lambda: s3.put_object_acl(Bucket=B, Key=K, ACL="public-read"),
    "get_object_acl": lambda: s3.get_object_acl(Bucket=B, Key=K),
    "restore_object": lambda: s3.restore_object(Bucket=B, Key=K, RestoreRequest={"Days": 1}),
    "get_object_torrent": lambda: s3.get_object_torrent(Bucket=B, Key=K),
    "get_object_version": lambda: s3.get_object(Bucket=B, Key=K, VersionId="3HL4kqtJlcpXroDTDmJ"),
    "delete_object_version": lambda: s3.delete_object(Bucket=B, Key=K, VersionId="3HL4kqtJlcpXroDTDmJ"),
    # Bucket sub-resources.
    "delete_bucket_cors": lambda: s3.delete_bucket_cors(Bucket=B),
    "delete_bucket_policy": lambda: s3.delete_bucket_policy(Bucket=B),
    "delete_bucket_lifecycle": lambda: s3.delete_bucket_lifecycle(Bucket=B),
    "delete_bucket_encryption": lambda: s3.delete_bucket_encryption(Bucket=B),
    "delete_bucket_tagging": lambda: s3.delete_bucket_tagging(Bucket=B),
    "delete_bucket_website": lambda: s3.delete_bucket_website(Bucket=B),
    "delete_bucket_replication": lambda: s3.delete_bucket_replication(Bucket=B),
    "delete_bucket_ownership_controls": lambda: s3.delete_bucket_ownership_controls(Bucket=B),
    "delete_public_access_block": lambda: s3.delete_public_access_block(Bucket=B),
    "put_bucket_versioning": lambda: s3.put_bucket_versioning(Bucket=B, VersioningConfiguration={"Status": "Enabled"}),
    "put_bucket_acl": lambda: s3.put_bucket_acl(Bucket=B, ACL="public-read"),
    "get_bucket_acl": lambda: s3.get_bucket_acl(Bucket=B),
    "put_bucket_policy": lambda: s3.put_bucket_policy(Bucket=B, Policy='{"Version":"2012-10-17","Statement":[]}'),
    "get_bucket_policy": lambda: s3.get_bucket_policy(Bucket=B),
    "put_bucket_cors": lambda: s3.put_bucket_cors(Bucket=B, CORSConfiguration={"CORSRules": [{"AllowedMethods": ["GET"], "AllowedOrigins": ["*"]}]}),
    "put_bucket_tagging": lambda: s3.put_bucket_tagging(Bucket=B, Tagging=tags),
    "get_bucket_lifecycle": lambda: s3.get_bucket_lifecycle_configuration(Bucket=B),
    "get_bucket_encryption": lambda: s3.get_bucket_encryption(Bucket=B),
    "get_bucket_website": lambda: s3.get_bucket_website(Bucket=B),
    "get_bucket_notification": lambda: s3.get_bucket_notification_configuration(Bucket=B),
    "get_bucket_logging": lambda: s3.get_bucket_logging(Bucket=B),
    "get_object_lock_configuration": lambda: s3.get_object_lock_configuration(Bucket=B),
    "get_bucket_accelerate": lambda: s3.get_bucket_accelerate_configuration(Bucket=B),
    "get_bucket_request_payment": lambda: s3.get_bucket_request_payment(Bucket=B),
    "list_bucket_analytics": lambda: s3.list_bucket_analytics_configurations(Bucket=B),
    "list_bucket_inventory": lambda: s3.list_bucket_inventory_configurations(Bucket=B),
    "list_bucket_metrics": lambda: s3.list_bucket_metrics_configurations(Bucket=B),
    "list_bucket_intelligent_tiering": lambda: s3.list_bucket_intelligent_tiering_configurations(Bucket=B),
    # Headers Wisp cannot honour, on a write over the existing object.
    "put_sse_c": lambda: s3.put_object(Bucket=B, Key=K, Body=b"replaced", **sse_c),
    "put_sse_kms": lambda: s3.put_object(Bucket=B, Key=K, Body=b"replaced", ServerSideEncryption="aws:kms", SSEKMSKeyId="key-1"),
    "put_sse_s3": lambda: s3.put_object(Bucket=B, Key=K, Body=b"replaced", ServerSideEncryption="AES256"),
    "put_object_lock": lambda: s3.put_object(Bucket=B, Key=K, Body=b"replaced", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=day),
    "put_legal_hold": lambda: s3.put_object(Bucket=B, Key=K, Body=b"replaced", ObjectLockLegalHoldStatus="ON"),
    "put_tagging": lambda: s3.put_object(Bucket=B, Key=K, Body=b"replaced", Tagging="a=b"),
    "put_acl_public": lambda: s3.put_object(Bucket=B, Key=K, Body=b"replaced", ACL="public-read"),
    "put_grant": lambda: s3.put_object(Bucket=B, Key=K, Body=b"replaced", GrantRead='id="someone"'),
    "get_sse_c": lambda: s3.get_object(Bucket=B, Key=K, **sse_c),
    "copy_sse_c": lambda: s3.copy_object(Bucket=B, Key=K, CopySource={"Bucket": B, "Key": K}, MetadataDirective="REPLACE", **sse_c),
    "copy_tagging": lambda: s3.copy_object(Bucket=B, Key=K, CopySource={"Bucket": B, "Key": K}, MetadataDirective="REPLACE", TaggingDirective="REPLACE", Tagging="a=b"),
    "multipart_sse_kms": lambda: s3.create_multipart_upload(Bucket=B, Key="mp", ServerSideEncryption="aws:kms"),
    "create_bucket_lock": lambda: s3.create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True),
    "create_bucket_public": lambda: s3.create_bucket(Bucket="public", ACL="public-read"),
}
out = {name: call(f) for name, f in calls.items()}
# POST object without a signed policy (an anonymous form upload).
import urllib.request
form = b'--x\r\nContent-Disposition: form-data; name="key"\r\n\r\nk.txt\r\n--x\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nreplaced\r\n--x--\r\n'
try:
    urllib.request.urlopen(urllib.request.Request(url + "/" + B, data=form, method="POST", headers={"Content-Type": "multipart/form-data; boundary=x"}))
    out["post_object_unsigned"] = "ok"
except urllib.error.HTTPError as e:
    body = e.read().decode()
    out["post_object_unsigned"] = [e.code, "AccessDenied" if "<Code>AccessDenied</Code>" in body else body]
out["__before"] = before
out["__after"] = state()
out["__uploads"] = call(lambda: s3.list_multipart_uploads(Bucket=B))
# What stays supported: ACL private, an unversioned bucket's versioning and versions.
out["__private"] = call(lambda: s3.put_object(Bucket=B, Key="private.txt", Body=b"p", ACL="private"))
out["__versioning"] = s3.get_bucket_versioning(Bucket=B).get("Status", "never enabled")
out["__versions"] = [[v["Key"], v["VersionId"]] for v in s3.list_object_versions(Bucket=B).get("Versions", [])]
print(json.dumps(out))
"#;

#[tokio::test]
async fn unsupported_operations_and_headers_answer_501_and_change_nothing() {
    let node = Node::fresh("s3-unsupported", &[]);
    let (key, secret) = access_key(&node, &["--role", "deployer"]);
    let o = std::process::Command::new(python())
        .args([
            "-c",
            UNSUPPORTED,
            node.s3_url.as_deref().unwrap(),
            &key,
            &secret,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let not_implemented = serde_json::json!([501, "NotImplemented"]);
    for (name, got) in v.as_object().unwrap() {
        if name.starts_with("__") {
            continue;
        }
        let want = if name.ends_with("_version") {
            // A version id on an unversioned bucket: no such version.
            serde_json::json!([400, "InvalidArgument"])
        } else if name == "post_object_unsigned" {
            // POST object is supported, with a signed policy only.
            serde_json::json!([403, "AccessDenied"])
        } else {
            not_implemented.clone()
        };
        assert_eq!(got, &want, "{name}: {v}");
    }
    let before = serde_json::json!([
        "original body",
        "text/plain",
        {"owner": "ann"},
        ["k.txt"],
        ["keep"]
    ]);
    assert_eq!(v["__before"], before);
    assert_eq!(v["__after"], before, "nothing changed: {v}");
    // ListMultipartUploads is a listing (no upload was started).
    assert_eq!(v["__uploads"], "ok");
    assert_eq!(v["__private"], "ok");
    assert_eq!(v["__versioning"], "never enabled");
    assert_eq!(
        v["__versions"],
        serde_json::json!([["k.txt", "null"], ["private.txt", "null"]])
    );
}

/// The fixes the conformance suite asked for, through boto3: conditional
/// requests, UploadPartCopy, EntityTooSmall, ListParts and
/// ListMultipartUploads, response-content-* overrides, x-amz-request-id,
/// listing markers, max-keys, UTF-8 metadata, copy onto itself, bucket
/// names.
const CONFORMANCE: &str = r#"
import datetime, json, sys, boto3, botocore
url, key, secret = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id=key, aws_secret_access_key=secret,
                  config=botocore.config.Config(retries={"max_attempts": 0}, s3={"addressing_style": "path"}))
out = {}
def call(f):
    try:
        r = f()
        return ["ok", r["ResponseMetadata"]["HTTPStatusCode"]]
    except botocore.exceptions.ClientError as e:
        return [e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]]
B = "conf"
s3.create_bucket(Bucket=B)
etag = s3.put_object(Bucket=B, Key="k", Body=b"v1")["ETag"]
past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
# Conditional reads.
out["if_match"] = call(lambda: s3.get_object(Bucket=B, Key="k", IfMatch=etag))
out["if_match_wrong"] = call(lambda: s3.get_object(Bucket=B, Key="k", IfMatch='"nope"'))
out["if_none_match"] = call(lambda: s3.get_object(Bucket=B, Key="k", IfNoneMatch=etag))
out["if_modified_since_future"] = call(lambda: s3.get_object(Bucket=B, Key="k", IfModifiedSince=future))
out["if_modified_since_past"] = call(lambda: s3.get_object(Bucket=B, Key="k", IfModifiedSince=past))
out["if_unmodified_since_past"] = call(lambda: s3.get_object(Bucket=B, Key="k", IfUnmodifiedSince=past))
out["head_if_match_wrong"] = call(lambda: s3.head_object(Bucket=B, Key="k", IfMatch='"nope"'))
# Conditional writes.
out["put_if_none_match_exists"] = call(lambda: s3.put_object(Bucket=B, Key="k", Body=b"v2", IfNoneMatch="*"))
out["put_if_none_match_free"] = call(lambda: s3.put_object(Bucket=B, Key="new", Body=b"n", IfNoneMatch="*"))
s3.meta.events.register("before-sign.s3.PutObject", lambda request, **kw: request.headers.__setitem__("If-Match", '"nope"') if request.url.endswith("/k") else None)
out["put_if_match_wrong"] = call(lambda: s3.put_object(Bucket=B, Key="k", Body=b"v3"))
s3.meta.events.unregister("before-sign.s3.PutObject")
out["body_after_conditional_puts"] = s3.get_object(Bucket=B, Key="k")["Body"].read().decode()
# Copy-source conditions and copy onto itself.
src = {"Bucket": B, "Key": "k"}
out["copy_if_match_wrong"] = call(lambda: s3.copy_object(Bucket=B, Key="c", CopySource=src, CopySourceIfMatch='"nope"'))
out["copy_if_none_match"] = call(lambda: s3.copy_object(Bucket=B, Key="c", CopySource=src, CopySourceIfNoneMatch=etag))
out["copy_if_unmodified_past"] = call(lambda: s3.copy_object(Bucket=B, Key="c", CopySource=src, CopySourceIfUnmodifiedSince=past))
out["copy_if_match"] = call(lambda: s3.copy_object(Bucket=B, Key="c", CopySource=src, CopySourceIfMatch=etag))
out["copy_onto_itself"] = call(lambda: s3.copy_object(Bucket=B, Key="k", CopySource=src))
# botocore refuses non-ASCII metadata: the header goes in raw UTF-8 after signing.
def utf8_city(request, **kw):
    request.headers["x-amz-meta-city"] = "Genève".encode("utf-8")
s3.meta.events.register("before-send.s3.CopyObject", utf8_city)
out["copy_onto_itself_replace"] = call(lambda: s3.copy_object(Bucket=B, Key="k", CopySource=src, MetadataDirective="REPLACE"))
s3.meta.events.unregister("before-send.s3.CopyObject", utf8_city)
# UTF-8 metadata.
out["utf8_metadata"] = s3.head_object(Bucket=B, Key="k")["ResponseMetadata"]["HTTPHeaders"]["x-amz-meta-city"].encode("latin-1").decode("utf-8")
# response-content-* overrides and x-amz-request-id.
g = s3.get_object(Bucket=B, Key="k", ResponseContentType="text/x-test", ResponseContentDisposition="attachment; filename=a.txt",
                  ResponseCacheControl="no-cache", ResponseContentLanguage="de", ResponseContentEncoding="identity")
out["overrides"] = [g["ContentType"], g["ContentDisposition"], g["CacheControl"], g["ContentLanguage"], g["ContentEncoding"]]
out["request_id"] = bool(g["ResponseMetadata"]["HTTPHeaders"].get("x-amz-request-id"))
try:
    s3.get_object(Bucket=B, Key="missing")
except botocore.exceptions.ClientError as e:
    out["error_request_id"] = e.response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-request-id") == e.response["ResponseMetadata"]["RequestId"] != None
# Multipart: a 4-byte part 1 is too small; UploadPartCopy copies a range into a part; ListParts; ListMultipartUploads.
big = bytes(range(256)) * (6 * 4096)  # 6 MiB
s3.put_object(Bucket=B, Key="big", Body=big)
m = s3.create_multipart_upload(Bucket=B, Key="small-parts")
p1 = s3.upload_part(Bucket=B, Key="small-parts", UploadId=m["UploadId"], PartNumber=1, Body=b"tiny")
p2 = s3.upload_part(Bucket=B, Key="small-parts", UploadId=m["UploadId"], PartNumber=2, Body=b"tail")
out["entity_too_small"] = call(lambda: s3.complete_multipart_upload(Bucket=B, Key="small-parts", UploadId=m["UploadId"],
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]}))
out["small_parts_not_stored"] = call(lambda: s3.head_object(Bucket=B, Key="small-parts"))
parts = s3.list_parts(Bucket=B, Key="small-parts", UploadId=m["UploadId"])
out["list_parts"] = [[p["PartNumber"], p["Size"], p["ETag"] == e["ETag"]] for p, e in zip(parts["Parts"], [p1, p2])]
out["list_parts_page"] = [[p["PartNumber"] for p in s3.list_parts(Bucket=B, Key="small-parts", UploadId=m["UploadId"], MaxParts=1)["Parts"]],
                          s3.list_parts(Bucket=B, Key="small-parts", UploadId=m["UploadId"], MaxParts=1)["IsTruncated"]]
c = s3.create_multipart_upload(Bucket=B, Key="copied")
u = s3.list_multipart_uploads(Bucket=B)
out["list_uploads"] = sorted([x["Key"], x["UploadId"] in (m["UploadId"], c["UploadId"])] for x in u.get("Uploads", []))
c1 = s3.upload_part_copy(Bucket=B, Key="copied", UploadId=c["UploadId"], PartNumber=1, CopySource={"Bucket": B, "Key": "big"}, CopySourceRange="bytes=0-5242879")
c2 = s3.upload_part_copy(Bucket=B, Key="copied", UploadId=c["UploadId"], PartNumber=2, CopySource={"Bucket": B, "Key": "big"}, CopySourceRange="bytes=5242880-6291455")
out["bad_copy_range"] = call(lambda: s3.upload_part_copy(Bucket=B, Key="copied", UploadId=c["UploadId"], PartNumber=3, CopySource={"Bucket": B, "Key": "big"}, CopySourceRange="bytes=0-99999999"))
out["dest_untouched_before_complete"] = call(lambda: s3.head_object(Bucket=B, Key="copied"))
s3.complete_multipart_upload(Bucket=B, Key="copied", UploadId=c["UploadId"],
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": c1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": c2["CopyPartResult"]["ETag"]}]})
out["part_copy_roundtrip"] = s3.get_object(Bucket=B, Key="copied")["Body"].read() == big
# Completing again (a retry after a lost answer) gets the same answer; other parts do not.
cparts = [{"PartNumber": 1, "ETag": c1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": c2["CopyPartResult"]["ETag"]}]
again = s3.complete_multipart_upload(Bucket=B, Key="copied", UploadId=c["UploadId"], MultipartUpload={"Parts": cparts})
out["complete_again"] = again["ETag"] == s3.head_object(Bucket=B, Key="copied")["ETag"]
out["complete_again_other_parts"] = call(lambda: s3.complete_multipart_upload(Bucket=B, Key="copied", UploadId=c["UploadId"], MultipartUpload={"Parts": cparts[:1]}))
# Listings: max-keys, V2 StartAfter, V1 NextMarker with a delimiter.
for k in ["d/a/1", "d/a/2", "d/b/1", "d/c"]:
    s3.put_object(Bucket=B, Key=k, Body=b"x")
out["bad_max_keys"] = call(lambda: s3.list_objects(Bucket=B, MaxKeys=-1))
out["start_after"] = s3.list_objects_v2(Bucket=B, Prefix="d/", StartAfter="d/a/1").get("StartAfter")
seen, marker = [], ""
for _ in range(5):
    r = s3.list_objects(Bucket=B, Prefix="d/", Delimiter="/", MaxKeys=1, Marker=marker)
    seen += [p["Prefix"] for p in r.get("CommonPrefixes", [])] + [o["Key"] for o in r.get("Contents", [])]
    if not r["IsTruncated"]:
        break
    marker = r["NextMarker"]
out["v1_delimiter_pages"] = seen
out["v1_no_delimiter_next_marker"] = "NextMarker" in s3.list_objects(Bucket=B, Prefix="d/", MaxKeys=1)
# ListObjectVersions says its keys are URL-encoded, so clients decode them.
s3.put_object(Bucket=B, Key="d/sp ace&x", Body=b"x")
out["versions_keys"] = [v["Key"] for v in s3.list_object_versions(Bucket=B, Prefix="d/s").get("Versions", [])]
# Conditional delete; a key holding "?" as a copy source; a Complete with no parts.
out["delete_if_match_wrong"] = call(lambda: s3.delete_object(Bucket=B, Key="k", IfMatch='"nope"'))
out["after_delete_if_match_wrong"] = call(lambda: s3.head_object(Bucket=B, Key="k"))
s3.put_object(Bucket=B, Key="what?", Body=b"q")
s3.copy_object(Bucket=B, Key="copy-of-q", CopySource={"Bucket": B, "Key": "what?"})
out["copy_key_with_question_mark"] = s3.get_object(Bucket=B, Key="copy-of-q")["Body"].read().decode()
e3 = s3.create_multipart_upload(Bucket=B, Key="empty")
out["complete_empty"] = call(lambda: s3.complete_multipart_upload(Bucket=B, Key="empty", UploadId=e3["UploadId"], MultipartUpload={"Parts": []}))
# Bucket names.
out["ip_bucket"] = call(lambda: s3.create_bucket(Bucket="192.168.5.4"))
out["dot_dash_bucket"] = call(lambda: s3.create_bucket(Bucket="a.-b"))
out["dash_dot_bucket"] = call(lambda: s3.create_bucket(Bucket="a-.b"))
print(json.dumps(out))
"#;

#[tokio::test]
async fn conformance_fixes_conditionals_part_copy_listings_and_names() {
    let node = Node::fresh("s3-conformance", &[]);
    let (key, secret) = access_key(&node, &["--role", "deployer"]);
    let o = std::process::Command::new(python())
        .args([
            "-c",
            CONFORMANCE,
            node.s3_url.as_deref().unwrap(),
            &key,
            &secret,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let j = |k: &str| v[k].clone();
    let e = |status: u16, code: &str| serde_json::json!([status, code]);
    let ok = serde_json::json!(["ok", 200]);
    assert_eq!(j("if_match"), ok, "{v}");
    assert_eq!(j("if_match_wrong"), e(412, "PreconditionFailed"));
    assert_eq!(j("if_none_match"), e(304, "304"));
    assert_eq!(j("if_modified_since_future"), e(304, "304"));
    assert_eq!(j("if_modified_since_past"), ok);
    assert_eq!(j("if_unmodified_since_past"), e(412, "PreconditionFailed"));
    assert_eq!(j("head_if_match_wrong"), e(412, "412"));
    assert_eq!(j("put_if_none_match_exists"), e(412, "PreconditionFailed"));
    assert_eq!(j("put_if_none_match_free"), ok);
    assert_eq!(j("put_if_match_wrong"), e(412, "PreconditionFailed"));
    assert_eq!(j("body_after_conditional_puts"), "v1");
    assert_eq!(j("copy_if_match_wrong"), e(412, "PreconditionFailed"));
    assert_eq!(j("copy_if_none_match"), e(412, "PreconditionFailed"));
    assert_eq!(j("copy_if_unmodified_past"), e(412, "PreconditionFailed"));
    assert_eq!(j("copy_if_match"), ok);
    assert_eq!(j("copy_onto_itself"), e(400, "InvalidRequest"));
    assert_eq!(j("copy_onto_itself_replace"), ok);
    assert_eq!(j("utf8_metadata"), "Genève");
    assert_eq!(
        j("overrides"),
        serde_json::json!([
            "text/x-test",
            "attachment; filename=a.txt",
            "no-cache",
            "de",
            "identity"
        ])
    );
    assert_eq!(j("request_id"), true);
    assert_eq!(j("error_request_id"), true);
    assert_eq!(j("entity_too_small"), e(400, "EntityTooSmall"));
    assert_eq!(j("small_parts_not_stored"), e(404, "404"));
    assert_eq!(
        j("list_parts"),
        serde_json::json!([[1, 4, true], [2, 4, true]])
    );
    assert_eq!(j("list_parts_page"), serde_json::json!([[1], true]));
    assert_eq!(
        j("list_uploads"),
        serde_json::json!([["copied", true], ["small-parts", true]])
    );
    assert_eq!(j("bad_copy_range"), e(416, "InvalidRange"));
    assert_eq!(j("delete_if_match_wrong"), e(412, "PreconditionFailed"));
    assert_eq!(j("after_delete_if_match_wrong"), ok);
    assert_eq!(j("complete_empty"), e(400, "MalformedXML"));
    assert_eq!(j("copy_key_with_question_mark"), "q");
    assert_eq!(j("dest_untouched_before_complete"), e(404, "404"));
    assert_eq!(j("part_copy_roundtrip"), true);
    assert_eq!(j("complete_again"), true);
    assert_eq!(j("complete_again_other_parts"), e(404, "NoSuchUpload"));
    assert_eq!(j("bad_max_keys"), e(400, "InvalidArgument"));
    assert_eq!(j("start_after"), "d/a/1");
    assert_eq!(
        j("v1_delimiter_pages"),
        serde_json::json!(["d/a/", "d/b/", "d/c"])
    );
    assert_eq!(j("v1_no_delimiter_next_marker"), false);
    assert_eq!(j("versions_keys"), serde_json::json!(["d/sp ace&x"]));
    for b in ["ip_bucket", "dot_dash_bucket", "dash_dot_bucket"] {
        assert_eq!(j(b), e(400, "InvalidBucketName"), "{b}");
    }
}

/// What the S3 layer keeps and checks beyond bytes and user metadata,
/// through boto3: the standard headers of a PUT, `x-amz-checksum-*`
/// (verified, stored, answered on request), reads of one part of a
/// multipart object (`?partNumber`), POST object (a browser form upload
/// under a policy signed with an access key), and an `aws-chunked` upload
/// with signed chunks (a forged chunk stores nothing).
const KEPT: &str = r#"
import base64, datetime, hashlib, json, sys, urllib.request, zlib, boto3, botocore
url, key, secret = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id=key, aws_secret_access_key=secret,
                  config=botocore.config.Config(retries={"max_attempts": 0}, s3={"addressing_style": "path"}))
out = {}
def call(f):
    try:
        f()
        return "ok"
    except botocore.exceptions.ClientError as e:
        return [e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]]
B = "kept"
s3.create_bucket(Bucket=B)
# Standard headers of a PUT come back on HEAD and GET, and with a copy.
when = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
s3.put_object(Bucket=B, Key="h", Body=b"hello", CacheControl="max-age=60", ContentDisposition='attachment; filename="h.txt"',
              ContentEncoding="identity", ContentLanguage="de", Expires=when)
def std(r):
    return [r.get("CacheControl"), r.get("ContentDisposition"), r.get("ContentEncoding"), r.get("ContentLanguage"),
            r["ResponseMetadata"]["HTTPHeaders"].get("expires")]
out["head_headers"] = std(s3.head_object(Bucket=B, Key="h"))
out["get_headers"] = std(s3.get_object(Bucket=B, Key="h"))
s3.copy_object(Bucket=B, Key="h2", CopySource={"Bucket": B, "Key": "h"})
out["copied_headers"] = std(s3.head_object(Bucket=B, Key="h2"))
s3.copy_object(Bucket=B, Key="h3", CopySource={"Bucket": B, "Key": "h"}, MetadataDirective="REPLACE", CacheControl="no-store")
out["replaced_headers"] = std(s3.head_object(Bucket=B, Key="h3"))
# Checksums: verified when sent, stored, answered with ChecksumMode.
body = b"checked body" * 100
s3.put_object(Bucket=B, Key="c", Body=body, ChecksumAlgorithm="SHA256")
h = s3.head_object(Bucket=B, Key="c", ChecksumMode="ENABLED")
out["sha256_answered"] = h.get("ChecksumSHA256") == base64.b64encode(hashlib.sha256(body).digest()).decode()
out["sha256_not_unasked"] = "ChecksumSHA256" not in s3.head_object(Bucket=B, Key="c")
crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
s3.put_object(Bucket=B, Key="c32", Body=body, ChecksumCRC32=crc)
out["crc32_answered"] = s3.get_object(Bucket=B, Key="c32", ChecksumMode="ENABLED").get("ChecksumCRC32") == crc
wrong = base64.b64encode((zlib.crc32(body) ^ 1).to_bytes(4, "big")).decode()
out["crc32_wrong"] = call(lambda: s3.put_object(Bucket=B, Key="bad", Body=body, ChecksumCRC32=wrong))
out["crc32_wrong_not_stored"] = call(lambda: s3.head_object(Bucket=B, Key="bad"))
out["crc32_wrong_over_existing"] = call(lambda: s3.put_object(Bucket=B, Key="c32", Body=b"other", ChecksumCRC32=wrong))
out["existing_kept"] = s3.get_object(Bucket=B, Key="c32")["Body"].read() == body
# One part of a multipart object.
p1, p2 = bytes(range(256)) * (5 * 4096), b"tail" * 256
m = s3.create_multipart_upload(Bucket=B, Key="mp")
e1 = s3.upload_part(Bucket=B, Key="mp", UploadId=m["UploadId"], PartNumber=1, Body=p1)["ETag"]
e2 = s3.upload_part(Bucket=B, Key="mp", UploadId=m["UploadId"], PartNumber=2, Body=p2)["ETag"]
s3.complete_multipart_upload(Bucket=B, Key="mp", UploadId=m["UploadId"],
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
g2 = s3.get_object(Bucket=B, Key="mp", PartNumber=2)
out["part2"] = [g2["ResponseMetadata"]["HTTPStatusCode"], g2["Body"].read() == p2, g2["PartsCount"], g2["ContentRange"]]
out["part1_head"] = [s3.head_object(Bucket=B, Key="mp", PartNumber=1)["ContentLength"], len(p1)]
out["part3"] = call(lambda: s3.get_object(Bucket=B, Key="mp", PartNumber=3))
out["single_part1"] = s3.get_object(Bucket=B, Key="h", PartNumber=1)["Body"].read().decode()
# POST object: a form upload under a signed policy.
def post(fields, data):
    parts = []
    for k, v in list(fields.items()) + [("file", data)]:
        disp = 'form-data; name="%s"' % k + ('; filename="upload.txt"' if k == "file" else "")
        parts.append(b"--xyz\r\nContent-Disposition: " + disp.encode() + b"\r\n\r\n" + (v if isinstance(v, bytes) else v.encode()) + b"\r\n")
    req = urllib.request.Request(p["url"], data=b"".join(parts) + b"--xyz--\r\n", method="POST",
                                 headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status
    except urllib.error.HTTPError as e:
        body = e.read().decode()
        return [e.code, body.split("<Code>")[1].split("</Code>")[0] if "<Code>" in body else body]
# boto3 signs the policy with Signature V2 by default, V4 when asked.
v4 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id=key, aws_secret_access_key=secret,
                  config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}))
for name, client in [("v2", s3), ("v4", v4)]:
    k = "forms/%s.txt" % name
    p = client.generate_presigned_post(B, k, Fields={"Content-Type": "text/plain"},
                                       Conditions=[{"Content-Type": "text/plain"}, ["content-length-range", 1, 100]], ExpiresIn=300)
    sig = "x-amz-signature" if "x-amz-signature" in p["fields"] else "signature"
    out["post_" + name] = [sig, post(p["fields"], b"from a form")]
    g = s3.get_object(Bucket=B, Key=k)
    out["posted_" + name] = [g["Body"].read().decode(), g["ContentType"]]
    out["post_too_big_" + name] = post(dict(p["fields"], key=k + ".big"), b"x" * 200)
    out["post_too_big_stored_" + name] = call(lambda: s3.head_object(Bucket=B, Key=k + ".big"))
    tampered = dict(p["fields"], key=k + ".forged")
    tampered[sig] = ("0" * 64) if sig == "x-amz-signature" else base64.b64encode(b"0" * 20).decode()
    out["post_bad_signature_" + name] = post(tampered, b"forged")
    out["post_bad_signature_stored_" + name] = call(lambda: s3.head_object(Bucket=B, Key=k + ".forged"))
    # A field the policy fixes, sent otherwise: AWS's 403, nothing stored.
    out["post_condition_failed_" + name] = post(dict(p["fields"], **{"key": k + ".cond", "Content-Type": "image/png"}), b"x")
    out["post_condition_failed_stored_" + name] = call(lambda: s3.head_object(Bucket=B, Key=k + ".cond"))
# An aws-chunked upload (STREAMING-AWS4-HMAC-SHA256-PAYLOAD): each chunk
# signed, chained from the request's signature (botocore signs the head).
import hmac
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
class Streaming(S3SigV4Auth):
    def payload(self, request):
        return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
def chunked(key_name, chunks, forge=None):
    data_len = sum(len(c) for c in chunks)
    req = AWSRequest(method="PUT", url="%s/%s/%s" % (url, B, key_name), headers={
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(data_len), "Content-Type": "text/plain"})
    Streaming(Credentials(key, secret), "s3", "us-east-1").add_auth(req)
    amz_date = req.headers["X-Amz-Date"]
    prev = req.headers["Authorization"].split("Signature=")[1]
    scope = "%s/us-east-1/s3/aws4_request" % amz_date[:8]
    k = ("AWS4" + secret).encode()
    for part in (amz_date[:8], "us-east-1", "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    body = b""
    for i, c in enumerate(list(chunks) + [b""]):
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, hashlib.sha256(b"").hexdigest(), hashlib.sha256(c).hexdigest()])
        prev = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        sig = "0" * 64 if forge == i else prev
        body += b"%x;chunk-signature=%s\r\n" % (len(c), sig.encode()) + c + b"\r\n"
    headers = dict(req.headers.items())
    headers["Content-Length"] = str(len(body))
    r = urllib.request.Request(req.url, data=body, method="PUT", headers=headers)
    try:
        with urllib.request.urlopen(r) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        b = e.read().decode()
        return [e.code, b.split("<Code>")[1].split("</Code>")[0] if "<Code>" in b else b]
parts = [b"a" * 70000, b"b" * 70000, b"tail"]
out["chunked"] = chunked("chunked.txt", parts)
g = s3.get_object(Bucket=B, Key="chunked.txt")
out["chunked_read"] = [g["Body"].read() == b"".join(parts), g["ContentType"], g.get("ContentEncoding")]
out["chunked_forged"] = chunked("forged.txt", parts, forge=1)
out["chunked_forged_stored"] = call(lambda: s3.head_object(Bucket=B, Key="forged.txt"))
print(json.dumps(out))
"#;

#[tokio::test]
async fn standard_headers_checksums_part_reads_post_object_and_chunked_uploads() {
    let node = Node::fresh("s3-kept", &[]);
    let (key, secret) = access_key(&node, &["--role", "deployer"]);
    let o = std::process::Command::new(python())
        .args(["-c", KEPT, node.s3_url.as_deref().unwrap(), &key, &secret])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let j = |k: &str| v[k].clone();
    let e = |status: u16, code: &str| serde_json::json!([status, code]);
    let std = serde_json::json!([
        "max-age=60",
        "attachment; filename=\"h.txt\"",
        "identity",
        "de",
        "Tue, 01 Jan 2030 00:00:00 GMT"
    ]);
    assert_eq!(j("head_headers"), std, "{v}");
    assert_eq!(j("get_headers"), std);
    assert_eq!(j("copied_headers"), std);
    assert_eq!(
        j("replaced_headers"),
        serde_json::json!(["no-store", null, null, null, null])
    );
    assert_eq!(j("sha256_answered"), true);
    assert_eq!(j("sha256_not_unasked"), true);
    assert_eq!(j("crc32_answered"), true);
    assert_eq!(j("crc32_wrong"), e(400, "BadDigest"));
    assert_eq!(j("crc32_wrong_not_stored"), e(404, "404"));
    assert_eq!(j("crc32_wrong_over_existing"), e(400, "BadDigest"));
    assert_eq!(j("existing_kept"), true);
    assert_eq!(
        j("part2"),
        serde_json::json!([206, true, 2, "bytes 5242880-5243903/5243904"])
    );
    assert_eq!(j("part1_head"), serde_json::json!([5242880, 5242880]));
    assert_eq!(j("part3"), e(400, "InvalidPart"));
    assert_eq!(j("single_part1"), "hello");
    assert_eq!(j("chunked"), 200);
    assert_eq!(
        j("chunked_read"),
        serde_json::json!([true, "text/plain", null])
    );
    assert_eq!(j("chunked_forged"), e(403, "SignatureDoesNotMatch"));
    assert_eq!(j("chunked_forged_stored"), e(404, "404"));
    for (v, field) in [("v2", "signature"), ("v4", "x-amz-signature")] {
        assert_eq!(j(&format!("post_{v}")), serde_json::json!([field, 204]));
        assert_eq!(
            j(&format!("posted_{v}")),
            serde_json::json!(["from a form", "text/plain"])
        );
        assert_eq!(
            j(&format!("post_too_big_{v}")),
            e(400, "EntityTooLarge"),
            "{v}"
        );
        assert_eq!(j(&format!("post_too_big_stored_{v}")), e(404, "404"));
        assert_eq!(
            j(&format!("post_bad_signature_{v}")),
            e(403, "SignatureDoesNotMatch"),
            "{v}"
        );
        assert_eq!(j(&format!("post_bad_signature_stored_{v}")), e(404, "404"));
        assert_eq!(
            j(&format!("post_condition_failed_{v}")),
            e(403, "AccessDenied"),
            "{v}"
        );
        assert_eq!(
            j(&format!("post_condition_failed_stored_{v}")),
            e(404, "404")
        );
    }
}

/// Multipart checksums, GetObjectAttributes, and a part re-sent.
const MULTIPART_SUMS: &str = r#"
import base64, hashlib, json, sys, zlib, boto3, botocore
url, key, secret = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id=key, aws_secret_access_key=secret,
                  config=botocore.config.Config(retries={"max_attempts": 0}, s3={"addressing_style": "path"}))
out = {}
def call(f):
    try:
        return f()
    except botocore.exceptions.ClientError as e:
        return [e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]]
b64 = lambda b: base64.b64encode(b).decode()
# (boto3 1.35 predates x-amz-checksum-type: it is read from the headers.)
kind = lambda r: r["ResponseMetadata"]["HTTPHeaders"].get("x-amz-checksum-type")
B = "sums"
s3.create_bucket(Bucket=B)
p1, p2 = b"a" * (5 << 20), b"b" * 1000
sha = [hashlib.sha256(p).digest() for p in (p1, p2)]
composite = b64(hashlib.sha256(sha[0] + sha[1]).digest()) + "-2"
# SHA-256, COMPOSITE: each part's checksum, the object's of theirs.
m = s3.create_multipart_upload(Bucket=B, Key="s", ChecksumAlgorithm="SHA256")
out["created"] = [m.get("ChecksumAlgorithm"), kind(m)]
u = m["UploadId"]
r1 = s3.upload_part(Bucket=B, Key="s", UploadId=u, PartNumber=1, Body=p1, ChecksumAlgorithm="SHA256")
r2 = s3.upload_part(Bucket=B, Key="s", UploadId=u, PartNumber=2, Body=p2, ChecksumAlgorithm="SHA256")
out["part_sums"] = [r1.get("ChecksumSHA256") == b64(sha[0]), r2.get("ChecksumSHA256") == b64(sha[1])]
lp = s3.list_parts(Bucket=B, Key="s", UploadId=u)
out["listed_sums"] = [p.get("ChecksumSHA256") == b64(s) for p, s in zip(lp["Parts"], sha)] + [lp.get("ChecksumAlgorithm")]
parts = [{"PartNumber": 1, "ETag": r1["ETag"], "ChecksumSHA256": r1["ChecksumSHA256"]},
         {"PartNumber": 2, "ETag": r2["ETag"], "ChecksumSHA256": r2["ChecksumSHA256"]}]
bad_part = [dict(parts[0], ChecksumSHA256=b64(sha[1])), parts[1]]
out["wrong_part_sum"] = call(lambda: s3.complete_multipart_upload(Bucket=B, Key="s", UploadId=u, MultipartUpload={"Parts": bad_part}))
out["wrong_whole_sum"] = call(lambda: s3.complete_multipart_upload(Bucket=B, Key="s", UploadId=u, ChecksumSHA256=b64(sha[0]) + "-2",
                                                                   MultipartUpload={"Parts": parts}))
out["not_stored"] = call(lambda: s3.head_object(Bucket=B, Key="s"))
done = s3.complete_multipart_upload(Bucket=B, Key="s", UploadId=u, ChecksumSHA256=composite, MultipartUpload={"Parts": parts})
out["completed"] = done.get("ChecksumSHA256") == composite
again = s3.complete_multipart_upload(Bucket=B, Key="s", UploadId=u, ChecksumSHA256=composite, MultipartUpload={"Parts": parts})
out["completed_again"] = [again["ETag"] == done["ETag"], again.get("ChecksumSHA256") == composite]
h = s3.head_object(Bucket=B, Key="s", ChecksumMode="ENABLED")
out["head_sum"] = [h.get("ChecksumSHA256") == composite, kind(h)]
out["head_unasked"] = "ChecksumSHA256" in s3.head_object(Bucket=B, Key="s")
g = s3.get_object(Bucket=B, Key="s", PartNumber=2, ChecksumMode="ENABLED")
out["part_read_sum"] = [g.get("ChecksumSHA256") == b64(sha[1]), g["Body"].read() == p2]
a = s3.get_object_attributes(Bucket=B, Key="s", ObjectAttributes=["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"])
op = a["ObjectParts"]
out["attributes"] = [a["ETag"] == done["ETag"].strip('"'), a["Checksum"].get("ChecksumSHA256") == composite,
                     a["ObjectSize"], a["StorageClass"], op["TotalPartsCount"],
                     [[p["PartNumber"], p["Size"], p.get("ChecksumSHA256") == b64(s)] for p, s in zip(op["Parts"], sha)]]
pg = s3.get_object_attributes(Bucket=B, Key="s", ObjectAttributes=["ObjectParts"], MaxParts=1)["ObjectParts"]
out["attributes_page"] = [[p["PartNumber"] for p in pg["Parts"]], pg["IsTruncated"], pg["NextPartNumberMarker"]]
only = s3.get_object_attributes(Bucket=B, Key="s", ObjectAttributes=["ObjectSize"])
out["attributes_only_asked"] = sorted(k for k in only if k not in ("ResponseMetadata", "LastModified"))
# CRC32, FULL_OBJECT: the whole object's CRC, which boto3 then checks on GET.
def full_object(request, **kw):
    request.headers["x-amz-checksum-type"] = "FULL_OBJECT"
s3.meta.events.register("before-sign.s3.CreateMultipartUpload", full_object)
m = s3.create_multipart_upload(Bucket=B, Key="c", ChecksumAlgorithm="CRC32")
u = m["UploadId"]
r1 = s3.upload_part(Bucket=B, Key="c", UploadId=u, PartNumber=1, Body=p1, ChecksumAlgorithm="CRC32")
r2 = s3.upload_part(Bucket=B, Key="c", UploadId=u, PartNumber=2, Body=p2, ChecksumAlgorithm="CRC32")
whole = b64(zlib.crc32(p1 + p2).to_bytes(4, "big"))
done = s3.complete_multipart_upload(Bucket=B, Key="c", UploadId=u, ChecksumCRC32=whole, MultipartUpload={"Parts": [
    {"PartNumber": 1, "ETag": r1["ETag"], "ChecksumCRC32": r1["ChecksumCRC32"]}, {"PartNumber": 2, "ETag": r2["ETag"], "ChecksumCRC32": r2["ChecksumCRC32"]}]})
out["full_object"] = [done.get("ChecksumCRC32") == whole, kind(m)]
g = s3.get_object(Bucket=B, Key="c", ChecksumMode="ENABLED")
out["full_object_get"] = [g.get("ChecksumCRC32") == whole, kind(g), g["Body"].read() == p1 + p2]
out["sha_full_object"] = call(lambda: s3.create_multipart_upload(Bucket=B, Key="x", ChecksumAlgorithm="SHA256"))
s3.meta.events.unregister("before-sign.s3.CreateMultipartUpload", full_object)
# UploadPartCopy into a SHA-256 upload: the copied range's checksum.
s3.put_object(Bucket=B, Key="src", Body=b"0123456789" * 1000)
m = s3.create_multipart_upload(Bucket=B, Key="pc", ChecksumAlgorithm="SHA256")
cp = s3.upload_part_copy(Bucket=B, Key="pc", UploadId=m["UploadId"], PartNumber=1, CopySource={"Bucket": B, "Key": "src"}, CopySourceRange="bytes=10-19")
out["part_copy_sum"] = cp["CopyPartResult"].get("ChecksumSHA256") == b64(hashlib.sha256(b"0123456789").digest())
# A part sent twice, both answers listed: the last upload is the part.
m = s3.create_multipart_upload(Bucket=B, Key="twice")
first = s3.upload_part(Bucket=B, Key="twice", UploadId=m["UploadId"], PartNumber=1, Body=b"B" * 8)
last = s3.upload_part(Bucket=B, Key="twice", UploadId=m["UploadId"], PartNumber=1, Body=b"A" * 8)
s3.complete_multipart_upload(Bucket=B, Key="twice", UploadId=m["UploadId"], MultipartUpload={"Parts": [
    {"PartNumber": 1, "ETag": first["ETag"]}, {"PartNumber": 1, "ETag": last["ETag"]}]})
out["resent"] = s3.get_object(Bucket=B, Key="twice")["Body"].read().decode()
print(json.dumps(out))
"#;

#[tokio::test]
async fn multipart_checksums_object_attributes_and_a_resent_part() {
    let node = Node::fresh("s3-sums", &[]);
    let (key, secret) = access_key(&node, &["--role", "deployer"]);
    let o = std::process::Command::new(python())
        .args([
            "-c",
            MULTIPART_SUMS,
            node.s3_url.as_deref().unwrap(),
            &key,
            &secret,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let j = |k: &str| v[k].clone();
    let e = |status: u16, code: &str| serde_json::json!([status, code]);
    let json = |s: &str| serde_json::from_str::<Value>(s).unwrap();
    assert_eq!(j("created"), json(r#"["SHA256", "COMPOSITE"]"#), "{v}");
    assert_eq!(j("part_sums"), json("[true, true]"));
    assert_eq!(j("listed_sums"), json(r#"[true, true, "SHA256"]"#));
    assert_eq!(j("wrong_part_sum"), e(400, "BadDigest"));
    assert_eq!(j("wrong_whole_sum"), e(400, "BadDigest"));
    assert_eq!(j("not_stored"), e(404, "404"));
    assert_eq!(j("completed"), true);
    assert_eq!(j("completed_again"), json("[true, true]"));
    assert_eq!(j("head_sum"), json(r#"[true, "COMPOSITE"]"#));
    assert_eq!(j("head_unasked"), false);
    assert_eq!(j("part_read_sum"), json("[true, true]"));
    assert_eq!(
        j("attributes"),
        json(r#"[true, true, 5243880, "STANDARD", 2, [[1, 5242880, true], [2, 1000, true]]]"#)
    );
    assert_eq!(j("attributes_page"), json("[[1], true, 1]"));
    assert_eq!(j("attributes_only_asked"), json(r#"["ObjectSize"]"#));
    assert_eq!(j("full_object"), json(r#"[true, "FULL_OBJECT"]"#));
    assert_eq!(j("full_object_get"), json(r#"[true, "FULL_OBJECT", true]"#));
    assert_eq!(j("sha_full_object"), e(400, "InvalidRequest"));
    assert_eq!(j("part_copy_sum"), true);
    assert_eq!(j("resent"), "AAAAAAAA");
}
