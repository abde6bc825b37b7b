//! End-to-end tests of the AWS Lambda Invoke API against the real binary,
//! driven by real AWS clients from PyPI: boto3 and the AWS CLI, signing
//! with AWS Signature V4 and a Wisp-issued access key.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Node, access_key, fixture, out, python};

/// Invokes with boto3 and prints one JSON line per call.
const BOTO3: &str = r#"
import base64, json, sys, boto3, botocore
url, key, secret = sys.argv[1], sys.argv[2], sys.argv[3]
def client(k=key, s=secret):
    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=k, aws_secret_access_key=s,
                        config=botocore.config.Config(retries={"max_attempts": 0}))
def call(label, c=None, **kw):
    try:
        r = (c or client()).invoke(**kw)
        out = {"label": label, "status": r["StatusCode"], "payload": r["Payload"].read().decode(),
               "version": r.get("ExecutedVersion"), "error": r.get("FunctionError"),
               "request_id": r["ResponseMetadata"].get("RequestId")}
        if "LogResult" in r:
            out["log"] = base64.b64decode(r["LogResult"]).decode()
    except botocore.exceptions.ClientError as e:
        out = {"label": label, "code": e.response["Error"]["Code"],
               "status": e.response["ResponseMetadata"]["HTTPStatusCode"], "message": e.response["Error"].get("Message", "")}
    print(json.dumps(out), flush=True)
call("sync", FunctionName="thumbs", Payload=b'{"k": 1}', LogType="Tail")
call("arn", FunctionName="arn:aws:lambda:us-east-1:123456789012:function:thumbs", Payload=b'{"k": 2}', Qualifier="$LATEST")
call("event", FunctionName="thumbs", Payload=b'{"k": 3}', InvocationType="Event")
call("dryrun", FunctionName="thumbs", InvocationType="DryRun")
call("missing", FunctionName="nope", Payload=b"{}")
call("bad-qualifier", FunctionName="thumbs", Qualifier="7", Payload=b"{}")
call("timeout", FunctionName="slow", Payload=b"{}")
call("handled", FunctionName="failing", Payload=b"{}")
call("wrong-secret", client(s="x" * 40), FunctionName="thumbs", Payload=b"{}")
call("unknown-key", client(k="WISPNOTAKEY000000000"), FunctionName="thumbs", Payload=b"{}")
"#;

#[tokio::test]
async fn lambda_invoke_api_with_boto3_and_the_aws_cli() {
    let node = Node::fresh("lambda", &[]);
    let spec = json!({"memory_mb": 64, "timeout_ms": 5000});
    node.deploy_ok("thumbs", &fixture("testfn"), spec.clone())
        .await;
    node.deploy_ok("thumbs", &fixture("testfn"), spec).await; // version 2
    node.deploy_ok(
        "slow",
        &fixture("testfn"),
        json!({"timeout_ms": 300, "env": {"SLEEP_MS": "3000"}}),
    )
    .await;
    node.deploy_ok("failing", &fixture("testfn"), json!({"env": {"FAIL": "1"}}))
        .await;
    let (key, secret) = access_key(&node, &["--name", "ci"]);
    assert!(key.starts_with("WISP") && key.len() == 20, "{key}");

    let o = std::process::Command::new(python())
        .args(["-c", BOTO3, &node.url, &key, &secret])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {}: {e} (scripts/test makes a venv with boto3 and sets WISP_PYTHON)",
                python()
            )
        });
    assert!(
        o.status.success(),
        "the boto3 script failed (scripts/test installs boto3 into its venv): {}",
        out(&o)
    );
    let results: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by = |label: &str| {
        results
            .iter()
            .find(|r| r["label"] == label)
            .cloned()
            .unwrap()
    };

    let sync = by("sync");
    assert_eq!(sync["status"], 200, "{sync}");
    assert_eq!(
        serde_json::from_str::<Value>(sync["payload"].as_str().unwrap()).unwrap(),
        json!({"received": "{\"k\": 1}"})
    );
    assert_eq!(sync["version"], "2");
    assert!(sync["error"].is_null(), "{sync}");
    assert!(
        sync["log"].as_str().unwrap().contains("data: {\"k\": 1}"),
        "{sync}"
    );
    let act = sync["request_id"].as_str().unwrap();
    let a = node.json(&format!("/v1/activations/{act}")).await;
    assert_eq!(
        (a["function"].as_str(), a["trigger"].as_str()),
        (Some("thumbs"), Some("lambda"))
    );

    let arn = by("arn");
    assert_eq!(arn["status"], 200, "{arn}");
    assert!(
        arn["payload"].as_str().unwrap().contains("k\\\": 2"),
        "{arn}"
    );
    let event = by("event");
    assert_eq!(event["status"], 202, "{event}");
    assert_eq!(by("dryrun")["status"], 204);
    let missing = by("missing");
    assert_eq!(
        (missing["status"].as_u64(), missing["code"].as_str()),
        (Some(404), Some("ResourceNotFoundException")),
        "{missing}"
    );
    assert!(
        missing["message"].as_str().unwrap().contains("nope"),
        "{missing}"
    );
    let badq = by("bad-qualifier");
    assert_eq!(badq["code"], "ResourceNotFoundException", "{badq}");
    let timeout = by("timeout");
    assert_eq!(
        (timeout["status"].as_u64(), timeout["error"].as_str()),
        (Some(200), Some("Unhandled")),
        "{timeout}"
    );
    assert!(
        timeout["payload"].as_str().unwrap().contains("timeout"),
        "{timeout}"
    );
    let handled = by("handled");
    assert_eq!(handled["error"], "Handled", "{handled}");
    assert_eq!(handled["payload"], "failing as told by FAIL", "{handled}");
    let wrong = by("wrong-secret");
    assert_eq!(
        (wrong["status"].as_u64(), wrong["code"].as_str()),
        (Some(403), Some("InvalidSignatureException")),
        "{wrong}"
    );
    let unknown = by("unknown-key");
    assert_eq!(
        (unknown["status"].as_u64(), unknown["code"].as_str()),
        (Some(403), Some("UnrecognizedClientException")),
        "{unknown}"
    );

    // The Event invocation went through the durable queue and ran.
    let id = event["request_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = node
            .api(Method::GET, &format!("/v1/events/{id}"))
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            let v: Value = r.json().await.unwrap();
            if v["deliveries"][0]["status"] == "succeeded" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the Event invocation {id} did not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The AWS CLI (v1, from PyPI), as a user types it.
    let aws = std::path::Path::new(&python()).with_file_name("aws");
    let result = node.dir.join("out.json");
    let o = std::process::Command::new(&aws)
        .args([
            "lambda",
            "invoke",
            "--endpoint-url",
            &node.url,
            "--region",
            "eu-central-1",
            "--function-name",
            "thumbs",
            "--payload",
            r#"{"from":"cli"}"#,
        ])
        .arg(&result)
        .env("AWS_ACCESS_KEY_ID", &key)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", node.dir.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            node.dir.join("no-aws-credentials"),
        )
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {}: {e} (scripts/test installs awscli into its venv)",
                aws.display()
            )
        });
    assert!(o.status.success(), "aws lambda invoke failed: {}", out(&o));
    let printed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(printed["StatusCode"], 200, "{printed}");
    assert_eq!(printed["ExecutedVersion"], "2", "{printed}");
    let body: Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
    assert_eq!(body, json!({"received": r#"{"from":"cli"}"#}));

    // A key is bound to its namespace; revoked keys stop working; a
    // reader key may not invoke.
    let o = node.cli(&["ns", "create", "shop"]);
    assert!(o.status.success(), "{}", out(&o));
    let (shop_key, shop_secret) = access_key(&node, &["--ns", "shop"]);
    let (reader_key, reader_secret) = access_key(&node, &["--role", "reader"]);
    let script = r#"
import json, sys, boto3, botocore
url = sys.argv[1]
for k, s in zip(sys.argv[2::2], sys.argv[3::2]):
    c = boto3.client("lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id=k, aws_secret_access_key=s,
                     config=botocore.config.Config(retries={"max_attempts": 0}))
    try:
        c.invoke(FunctionName="thumbs", Payload=b"{}")
        print("ok")
    except botocore.exceptions.ClientError as e:
        print(e.response["Error"]["Code"])
"#;
    let o = node.cli(&["accesskey", "revoke", &key]);
    assert!(o.status.success(), "{}", out(&o));
    let o = std::process::Command::new(python())
        .args([
            "-c",
            script,
            &node.url,
            &shop_key,
            &shop_secret,
            &reader_key,
            &reader_secret,
            &key,
            &secret,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let codes: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        codes,
        [
            "ResourceNotFoundException",
            "AccessDeniedException",
            "UnrecognizedClientException"
        ]
    );
    let ls = out(&node.cli(&["accesskey", "ls"]));
    assert!(
        ls.contains(&reader_key) && !ls.contains(&reader_secret) && !ls.contains(&key),
        "{ls}"
    );
    // The secret is stored encrypted.
    let db = std::fs::read(node.dir.join("wisp.db")).unwrap();
    let wal = std::fs::read(node.dir.join("wisp.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes
                .windows(reader_secret.len())
                .any(|w| w == reader_secret.as_bytes())
        );
    }
}
