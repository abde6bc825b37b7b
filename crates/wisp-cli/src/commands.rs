//! Client commands: each one is a request or two to the management API and
//! a readable rendering of the answer.

use crate::ClientArgs;
use crate::client::Client;
use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct DeployArgs {
    /// Function name (lowercase letters, digits, '-', '_')
    name: String,
    /// A .wasm component (wasi:http/proxy world), or a Rust crate directory to build for wasm32-wasip2
    path: PathBuf,
    /// Memory limit in MiB
    #[arg(long, default_value_t = 128)]
    memory: u32,
    /// Deadline of one invocation (e.g. 500ms, 5s, 1m)
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Invocations that may run at once; more wait briefly, then get 429
    #[arg(long, default_value_t = 100)]
    concurrency: u32,
    /// Environment variable for the function, KEY=VALUE (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Requests one instance may serve before it is replaced (default 1: a
    /// fresh instance per request). Only for functions that keep no
    /// per-request state in memory.
    #[arg(long, default_value_t = 1, value_name = "N")]
    instance_reuse: u32,
    /// Host the function may send HTTP requests to, HOST or HOST:PORT (repeatable)
    #[arg(long = "allow-outbound", value_name = "HOST[:PORT]")]
    allow_outbound: Vec<String>,
    /// Attempts an async invocation or event gets before it goes to the
    /// dead-letter queue (the first run included)
    #[arg(long, default_value_t = 3, value_name = "N")]
    max_attempts: u32,
    /// Delay before the first retry; it doubles with every further retry (±20% jitter)
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    backoff: Duration,
    /// Events older than this are not retried any more (dead-lettered)
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    max_event_age: Duration,
    /// Send the result of each successful async invocation to function:NAME or topic:NAME
    #[arg(long, value_name = "function:NAME|topic:NAME")]
    on_success: Option<String>,
    /// Send each async invocation that exhausted its attempts to function:NAME or topic:NAME
    #[arg(long, value_name = "function:NAME|topic:NAME")]
    on_failure: Option<String>,
    /// A secret of the namespace the function sees as the environment
    /// variable of the same name (repeatable; set it with `wisp secret set`)
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// A key-value bucket of the namespace the function may open through
    /// wasi:keyvalue (repeatable; made if missing). Functions usually open
    /// `default`: --kv default
    #[arg(long = "kv", value_name = "BUCKET")]
    kv: Vec<String>,
    /// An object-store bucket of the namespace the function may read and
    /// write (repeatable): outbound HTTP to $WISP_S3_ENDPOINT, authorized
    /// by Wisp (the function holds no keys)
    #[arg(long = "objects", value_name = "BUCKET")]
    objects: Vec<String>,
    /// What runs the function: wasm (a wasi:http component) or process (a
    /// .zip/.tar.gz bundle speaking the AWS Lambda Runtime API)
    #[arg(long, default_value = "wasm", value_parser = ["wasm", "process"])]
    runtime: String,
    /// With --runtime process: the handler, passed as _HANDLER (e.g. app.handler)
    #[arg(long)]
    handler: Option<String>,
    /// With --runtime process: the command that starts a runtime client
    /// (the handler is appended), e.g. "python3 -m awslambdaric"; without
    /// it the bundle's ./bootstrap runs
    #[arg(long)]
    command: Option<String>,
    /// Answer only through routes (`wisp route add`), not at the direct
    /// URL /fn/NAME/ (which does no auth)
    #[arg(long)]
    no_direct_url: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

pub async fn deploy(a: DeployArgs) -> anyhow::Result<()> {
    let client = Client::from_args(&a.client)?;
    let mut env = serde_json::Map::new();
    for kv in &a.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env {kv:?} is not KEY=VALUE");
        };
        env.insert(k.to_string(), Value::String(v.to_string()));
    }
    let path = if a.path.is_dir() && a.runtime == "process" {
        bail!(
            "{} is a directory: a process function is deployed from a .zip or .tar.gz bundle (e.g. `zip -r fn.zip .`)",
            a.path.display()
        );
    } else if a.path.is_dir() {
        let dir = a.path.clone();
        tokio::task::spawn_blocking(move || crate::build::build_crate(&dir)).await??
    } else {
        a.path.clone()
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    eprintln!(
        "==> uploading {} ({})",
        path.display(),
        human_bytes(bytes.len())
    );
    let resp = client
        .send(client.request(Method::POST, "/v1/artifacts").body(bytes))
        .await?;
    let art: Value = resp.json().await?;
    let digest = art["digest"]
        .as_str()
        .context("the node answered without a digest")?
        .to_string();
    eprintln!("==> validating and compiling {digest}");
    let spec = json!({
        "memory_mb": a.memory,
        "timeout_ms": a.timeout.as_millis() as u64,
        "concurrency": a.concurrency,
        "env": env,
        "allow_outbound": a.allow_outbound,
        "instance_reuse": a.instance_reuse,
        "max_attempts": a.max_attempts,
        "backoff_ms": a.backoff.as_millis() as u64,
        "max_event_age_ms": a.max_event_age.as_millis() as u64,
        "on_success": a.on_success,
        "on_failure": a.on_failure,
        "secrets": a.secrets,
        "kv": a.kv,
        "objects": a.objects,
        "direct_url": !a.no_direct_url,
        "runtime": a.runtime,
        "handler": a.handler,
        "command": a.command,
    });
    let body = json!({"artifact": digest, "spec": spec});
    let resp = client
        .send(
            client
                .request(Method::PUT, &format!("/v1/functions/{}", a.name))
                .json(&body),
        )
        .await?;
    let f: Value = resp.json().await?;
    println!("deployed {} version {}", a.name, f["version"]);
    println!("  digest: {digest}");
    println!("  url:    {}", f["url"].as_str().unwrap_or(""));
    Ok(())
}

#[derive(clap::Args)]
pub struct InvokeArgs {
    /// Function name
    name: String,
    /// Request body: a string, or @FILE to read a file, or @- for stdin
    #[arg(long, short)]
    data: Option<String>,
    /// Path (and query) the function sees, e.g. /orders?limit=5
    #[arg(long, default_value = "/")]
    path: String,
    /// Also print the response status and headers
    #[arg(long, short = 'i')]
    include: bool,
    /// Queue the invocation and return at once (202 + event id); it runs
    /// soon and is retried on failure
    #[arg(long = "async")]
    is_async: bool,
    /// With --async: a repeated key within the idempotency window queues nothing new
    #[arg(long, requires = "is_async")]
    idempotency_key: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// `--data`: a string, `@FILE` or `@-` (stdin).
pub(crate) fn read_data(data: Option<&str>) -> anyhow::Result<Vec<u8>> {
    Ok(match data {
        None => Vec::new(),
        Some("@-") => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
            v
        }
        Some(d) if d.starts_with('@') => {
            std::fs::read(&d[1..]).with_context(|| format!("reading {}", &d[1..]))?
        }
        Some(d) => d.as_bytes().to_vec(),
    })
}

/// JSON when the data parses as JSON, else plain text.
pub(crate) fn guess_content_type(body: &[u8]) -> &'static str {
    if serde_json::from_slice::<Value>(body).is_ok() {
        "application/json"
    } else {
        "text/plain"
    }
}

pub async fn invoke(a: InvokeArgs) -> anyhow::Result<()> {
    let client = Client::from_args(&a.client)?;
    let body = read_data(a.data.as_deref())?;
    if a.is_async {
        let mut rb = client
            .request(
                Method::POST,
                &format!("/v1/functions/{}/invoke?async=true", a.name),
            )
            .header("content-type", guess_content_type(&body))
            .body(body);
        if let Some(k) = &a.idempotency_key {
            rb = rb.header("idempotency-key", k);
        }
        let v: Value = client.send(rb).await?.json().await?;
        let id = v["event_id"].as_str().unwrap_or("");
        if v["duplicate"].as_bool() == Some(true) {
            println!("{id} (duplicate: the idempotency key was seen before; nothing new queued)");
        } else {
            println!("{id}");
        }
        eprintln!("queued; see its attempts with `wisp activation {id}`");
        return Ok(());
    }
    let path = a.path.trim_start_matches('/');
    let rb = client
        .request(
            Method::POST,
            &format!("/v1/functions/{}/invoke/{path}", a.name),
        )
        .body(body);
    let resp = rb
        .send()
        .await
        .with_context(|| format!("cannot reach the Wisp node at {}", client.url))?;
    let status = resp.status();
    let id = resp
        .headers()
        .get("x-wisp-activation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if a.include {
        println!("HTTP {}", status);
        for (k, v) in resp.headers() {
            println!("{}: {}", k, v.to_str().unwrap_or("<binary>"));
        }
        println!();
    }
    let bytes = resp.bytes().await?;
    // The body of a Wisp error (no activation) carries a JSON message.
    if id.is_none() && !status.is_success() {
        let msg = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        bail!("{msg} (HTTP {})", status.as_u16());
    }
    std::io::stdout().write_all(&bytes)?;
    if !bytes.ends_with(b"\n") && !bytes.is_empty() {
        println!();
    }
    if let Some(id) = id {
        eprintln!("activation {id}");
    }
    if !status.is_success() {
        bail!("the function answered HTTP {}", status.as_u16());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct LsArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn ls(a: LsArgs) -> anyhow::Result<()> {
    let client = Client::from_args(&a.client)?;
    let v = client.get_json("/v1/functions").await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no functions deployed (wisp deploy NAME PATH deploys one)");
        return Ok(());
    }
    println!(
        "{:<24} {:>7} {:<7} {:>8} {:>8} {:>11}  {:<19}  URL",
        "NAME", "VERSION", "RUNTIME", "MEMORY", "TIMEOUT", "CONCURRENCY", "DIGEST"
    );
    for f in list {
        let s = &f["spec"];
        println!(
            "{:<24} {:>7} {:<7} {:>6}Mi {:>7}s {:>11}  {:<19}  {}",
            f["name"].as_str().unwrap_or(""),
            f["version"].to_string(),
            s["runtime"].as_str().unwrap_or("wasm"),
            s["memory_mb"].to_string(),
            s["timeout_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            s["concurrency"].to_string(),
            f["artifact"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(19)
                .collect::<String>(),
            f["url"].as_str().unwrap_or(""),
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct RmArgs {
    /// Function name
    name: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn rm(a: RmArgs) -> anyhow::Result<()> {
    let client = Client::from_args(&a.client)?;
    client
        .send(client.request(Method::DELETE, &format!("/v1/functions/{}", a.name)))
        .await?;
    println!("deleted {}", a.name);
    Ok(())
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// Function name
    name: String,
    /// How many recent invocations to show
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: usize,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) fn ts(ms: i64) -> String {
    wisp_core::time::rfc3339_ms(ms)
}

pub async fn logs(a: LogsArgs) -> anyhow::Result<()> {
    let client = Client::from_args(&a.client)?;
    // Make sure the function exists, for a clear error.
    client
        .get_json(&format!("/v1/functions/{}", a.name))
        .await?;
    let v = client
        .get_json(&format!(
            "/v1/activations?function={}&limit={}",
            a.name, a.limit
        ))
        .await?;
    let mut list = v.as_array().cloned().unwrap_or_default();
    list.reverse(); // oldest first, like a log
    for act in list {
        let logs = act["logs"].as_str().unwrap_or("");
        if logs.is_empty() && act["error"].is_null() {
            continue;
        }
        println!(
            "--- {} {} {} ({})",
            ts(act["start_ms"].as_i64().unwrap_or(0)),
            act["id"].as_str().unwrap_or(""),
            act["outcome"].as_str().unwrap_or(""),
            act["status"]
        );
        print!("{logs}");
        if !logs.is_empty() && !logs.ends_with('\n') {
            println!();
        }
        if act["logs_truncated"].as_bool() == Some(true) {
            println!("[logs truncated]");
        }
        if let Some(e) = act["error"].as_str() {
            println!("[error] {e}");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ActivationsArgs {
    /// Only this function's activations
    #[arg(long, short)]
    function: Option<String>,
    /// Only activations newer than this (e.g. 15m, 1h, 7d)
    #[arg(long)]
    since: Option<String>,
    /// How many to show (newest first)
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: usize,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn activations(a: ActivationsArgs) -> anyhow::Result<()> {
    let client = Client::from_args(&a.client)?;
    let mut path = format!("/v1/activations?limit={}", a.limit);
    if let Some(f) = &a.function {
        path.push_str(&format!("&function={f}"));
    }
    if let Some(s) = &a.since {
        path.push_str(&format!("&since={s}"));
    }
    let v = client.get_json(&path).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<32}  {:<20}  {:<24}  {:<12} {:>6} {:>10}  {:<4}",
        "ID", "FUNCTION", "START", "OUTCOME", "STATUS", "DURATION", "COLD"
    );
    for act in v.as_array().cloned().unwrap_or_default() {
        println!(
            "{:<32}  {:<20}  {:<24}  {:<12} {:>6} {:>8.2}ms  {:<4}",
            act["id"].as_str().unwrap_or(""),
            act["function"].as_str().unwrap_or(""),
            ts(act["start_ms"].as_i64().unwrap_or(0)),
            act["outcome"].as_str().unwrap_or(""),
            act["status"].to_string(),
            act["duration_us"].as_u64().unwrap_or(0) as f64 / 1000.0,
            if act["cold"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ActivationArgs {
    /// Activation id (printed by `wisp invoke` and `wisp activations`), or
    /// an event id (printed by `wisp invoke --async`): then its status,
    /// attempts, result and logs
    id: String,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn activation(a: ActivationArgs) -> anyhow::Result<()> {
    let client = Client::from_args(&a.client)?;
    let resp = client
        .request(Method::GET, &format!("/v1/activations/{}", a.id))
        .send()
        .await
        .with_context(|| format!("cannot reach the Wisp node at {}", client.url))?;
    if matches!(resp.status().as_u16(), 400 | 404) {
        // Not an activation: maybe an event or delivery id (async invoke).
        return crate::events::show_event(&client, &a.id, a.json).await;
    }
    let v: Value = client
        .send(client.request(Method::GET, &format!("/v1/activations/{}", a.id)))
        .await?
        .json()
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for k in [
        "id",
        "function",
        "version",
        "artifact",
        "trigger",
        "outcome",
        "status",
        "cold",
        "memory_mb",
        "billed_ms",
        "gb_seconds",
    ] {
        println!(
            "{:<12} {}",
            format!("{k}:"),
            match &v[k] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        );
    }
    println!(
        "{:<12} {}",
        "start:",
        ts(v["start_ms"].as_i64().unwrap_or(0))
    );
    println!(
        "{:<12} {:.3} ms",
        "duration:",
        v["duration_us"].as_u64().unwrap_or(0) as f64 / 1000.0
    );
    if let Some(e) = v["error"].as_str() {
        println!("{:<12} {e}", "error:");
    }
    println!(
        "logs:{}",
        if v["logs_truncated"].as_bool() == Some(true) {
            " (truncated)"
        } else {
            ""
        }
    );
    print!("{}", v["logs"].as_str().unwrap_or(""));
    Ok(())
}

#[derive(clap::Args)]
pub struct UsageArgs {
    /// Window to sum over (e.g. 15m, 1h, 30d) [default: all retained records]
    #[arg(long)]
    since: Option<String>,
    /// Gateway traffic (requests on routes) grouped by route, API key or
    /// function [default: every invocation of each function, all triggers]
    #[arg(long, value_parser = ["route", "key", "function"])]
    by: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn usage(a: UsageArgs) -> anyhow::Result<()> {
    let client = Client::from_args(&a.client)?;
    let mut query = Vec::new();
    if let Some(s) = &a.since {
        query.push(format!("since={s}"));
    }
    if let Some(b) = &a.by {
        query.push(format!("by={b}"));
    }
    let v = client
        .get_json(&format!("/v1/usage?{}", query.join("&")))
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if let Some(by) = &a.by {
        println!(
            "{:<32} {:>9} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>10} {:>10} {:>12}",
            by.to_uppercase(),
            "REQUESTS",
            "4XX",
            "5XX",
            "429",
            "P50",
            "P95",
            "P99",
            "BYTES-IN",
            "BYTES-OUT",
            "GB-SECONDS"
        );
        for u in v.as_array().cloned().unwrap_or_default() {
            println!(
                "{:<32} {:>9} {:>6} {:>6} {:>6} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>10} {:>10} {:>12.6}",
                u["group"].as_str().unwrap_or(""),
                u["requests"].to_string(),
                u["errors_4xx"].to_string(),
                u["errors_5xx"].to_string(),
                u["throttled"].to_string(),
                u["p50_ms"].as_f64().unwrap_or(0.0),
                u["p95_ms"].as_f64().unwrap_or(0.0),
                u["p99_ms"].as_f64().unwrap_or(0.0),
                u["bytes_in"].to_string(),
                u["bytes_out"].to_string(),
                u["gb_seconds"].as_f64().unwrap_or(0.0),
            );
        }
        return Ok(());
    }
    println!(
        "{:<24} {:>11} {:>7} {:>9} {:>10} {:>10} {:>14}",
        "FUNCTION", "INVOCATIONS", "ERRORS", "THROTTLED", "P50", "P99", "GB-SECONDS"
    );
    for u in v.as_array().cloned().unwrap_or_default() {
        println!(
            "{:<24} {:>11} {:>7} {:>9} {:>8.2}ms {:>8.2}ms {:>14.6}",
            u["function"].as_str().unwrap_or(""),
            u["invocations"].to_string(),
            u["errors"].to_string(),
            u["throttled"].to_string(),
            u["p50_ms"].as_f64().unwrap_or(0.0),
            u["p99_ms"].as_f64().unwrap_or(0.0),
            u["gb_seconds"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
}
