//! `wisp serve`: assemble a node from the library crates and run it until
//! SIGTERM/SIGINT, then shut down gracefully.

use crate::DataDirArg;
use crate::paths::{TOKEN_FILE, URL_FILE, data_dir};
use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wisp_engine::{Engine, EngineSettings, QueueSettings, RetentionSettings};
use wisp_exec_wasm::{EngineConfig, WasmEngine};
use wisp_gateway::{AccessLogSettings, Gate, GatewayConfig};
use wisp_store::{FileArtifacts, SecretKey, SqliteEvents, SqliteStore};

/// The key that encrypts secrets at rest (mode 0600). Back it up with the
/// data dir: secrets cannot be read without it.
const SECRET_KEY_FILE: &str = "secret.key";

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address of the HTTP listener (port 0 picks a free port and prints it)
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Address of the S3-compatible API (port 0 picks a free port and
    /// prints it; `off` serves none)
    #[arg(long, default_value = "127.0.0.1:9000", value_name = "ADDR|off")]
    s3_listen: String,
    #[command(flatten)]
    data: DataDirArg,
    /// Largest invocation payload, in bytes (413 beyond)
    #[arg(long, default_value_t = 6 * 1024 * 1024)]
    max_payload: usize,
    /// Bytes kept back in <data-dir>/reserve so that deletes still work
    /// when the disk is full (0: none)
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    disk_reserve: u64,
    /// Largest artifact upload, in bytes (413 beyond)
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    max_artifact: usize,
    /// Drop a function from memory after it was idle this long (scale to zero)
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    idle_evict: Duration,
    /// How long a request waits for a slot (its function's, its
    /// namespace's, the node's) before it is throttled (429/503)
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    queue_wait: Duration,
    /// Keep at most this many activation records
    #[arg(long, default_value_t = 100_000)]
    retention_records: u64,
    /// Drop activation records older than this
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    retention_age: Duration,
    /// Instances alive at once (running, or idle and kept warm), across
    /// all functions
    #[arg(long, default_value_t = 1000)]
    max_instances: u32,
    /// A Wasm guest that has used this much CPU moves to low-priority
    /// threads, and a process function's invocation gets nice 19, so that
    /// CPU-bound guests do not starve short requests (`off`: never)
    #[arg(long, default_value = "20ms", value_name = "DURATION|off", value_parser = parse_after)]
    long_guest_after: Duration,
    /// Node memory budget: the memory limits of live instances (running,
    /// or idle and kept warm) add up to no more than this; idle ones are
    /// evicted to make room, 503 when running ones hold it all; e.g. 2GiB,
    /// 512MiB. Default: 75% of the machine's memory
    #[arg(long, value_name = "SIZE", value_parser = parse_mib)]
    max_memory: Option<u64>,
    /// Highest --concurrency of a function in a namespace that has no
    /// --max-concurrency of its own (`wisp ns create/set`)
    #[arg(long, default_value_t = 1000, value_name = "N")]
    ns_max_concurrency: u32,
    /// Instances a namespace's functions may run at once when the
    /// namespace has no --max-instances of its own (429 beyond)
    #[arg(long, default_value_t = 250, value_name = "N")]
    ns_max_instances: u32,
    /// Events the durable queue holds at once (waiting, delayed or
    /// running); publishing beyond it answers 429 queue_full
    #[arg(long, default_value_t = 100_000)]
    queue_max_events: usize,
    /// Bytes of event data the queue holds at once (429 queue_full beyond)
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    queue_max_bytes: usize,
    /// Keep at most this many access-log entries (requests on routes)
    #[arg(long, default_value_t = 1_000_000)]
    access_log_records: u64,
    /// Drop access-log entries older than this
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    access_log_age: Duration,
    /// How long a new process of a process function may take to ask for
    /// its first invocation (on top of the invocation's deadline)
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    init_timeout: Duration,
    /// Run process functions without the sandbox (cgroup memory and pids
    /// limits, own IPC/UTS namespaces; it needs root)
    #[arg(long)]
    no_process_sandbox: bool,
    /// Interpreters kept started ahead of demand for process functions
    /// run as `python3 -m MODULE` or `node SCRIPT` (per interpreter), so a
    /// cold start skips the interpreter's start-up; 0 turns them off
    #[arg(long, default_value_t = 1, value_name = "N")]
    prestart_runtimes: usize,
    /// Time a client has to send a complete request head (the connection
    /// is closed beyond), on the HTTP and S3 listeners
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// Time a keep-alive connection may stay open without a request
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Connections open at once, per listener; beyond it the oldest
    /// connection not in a request is dropped (503 when all are busy)
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Time an invocation's request body has to arrive (408 beyond); the
    /// body is read before the function gets an instance
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    body_timeout: Duration,
    /// How long an Idempotency-Key is remembered
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    idempotency_window: Duration,
}

/// A duration, or `off` (never).
fn parse_after(s: &str) -> Result<Duration, String> {
    match s {
        "off" | "never" => Ok(Duration::MAX),
        _ => humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 20ms, or off)")),
    }
}

/// A size in MiB: `2GiB`, `512MiB`, `512M`, `1G`, or a bare number of MiB.
fn parse_mib(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 2GiB or 512MiB"))?;
    let mib = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => Some(n),
        "g" | "gb" | "gib" => n.checked_mul(1024),
        "t" | "tb" | "tib" => n.checked_mul(1024 * 1024),
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use MiB, GiB or TiB)"
            ));
        }
    }
    .ok_or_else(|| format!("{s:?} is too large"))?;
    if mib == 0 {
        return Err(format!("{s:?} would admit no instance: use at least 1MiB"));
    }
    Ok(mib)
}

/// 75% of the machine's memory (MemTotal in /proc/meminfo), in MiB.
fn default_memory_budget_mib() -> anyhow::Result<u64> {
    let info = std::fs::read_to_string("/proc/meminfo")
        .context("reading /proc/meminfo for the default --max-memory (set --max-memory)")?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no MemTotal in /proc/meminfo (set --max-memory)")?;
    Ok((kib / 1024) * 3 / 4)
}

/// Reads the admin token, creating it (mode 0600) on first start.
fn admin_token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let token = format!("wisp_{:032x}", rand_u128());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}")?;
    f.sync_all()?;
    Ok(token)
}

fn rand_u128() -> u128 {
    let mut b = [0u8; 16];
    // Any failure here would leave a predictable token: refuse instead.
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut b).is_ok() {
            return u128::from_le_bytes(b);
        }
    }
    panic!("cannot read /dev/urandom to create the admin token");
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

pub async fn run(a: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // s3s logs every refused S3 request (a 404, a 501) as an
            // error; Wisp counts those in wisp_s3_requests_total and logs
            // its own failures under wisp_s3.
            tracing_subscriber::EnvFilter::try_from_env("WISP_LOG")
                .unwrap_or_else(|_| "warn,wisp=info,s3s=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // The connection cap, not EMFILE, should bound connections.
    if let Err(e) = wisp_listen::raise_fd_limit() {
        tracing::warn!(error = %e, "cannot raise the open-files limit");
    }
    let dir = data_dir(a.data.data_dir.as_deref())?;
    // Every tenant's data: 0700, also when the directory existed before.
    wisp_core::durable::private_dir(&dir)
        .with_context(|| format!("creating data dir {} (mode 0700)", dir.display()))?;
    // Absolute from here on: process functions start in their own code
    // directory, where a relative path would point elsewhere.
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving data dir {}", dir.display()))?;
    wisp_core::reserve::install(&dir.join("reserve"), a.disk_reserve)
        .context("starting the disk reserve")?;
    let token = admin_token(&dir)?;
    let key = SecretKey::load_or_create(&dir.join(SECRET_KEY_FILE))
        .context("loading the key that encrypts secrets")?;
    let sqlite = Arc::new(
        SqliteStore::open(&dir.join("wisp.db"))
            .context("opening the database")?
            .with_secret_key(key),
    );
    let artifacts =
        Arc::new(FileArtifacts::open(dir.join("artifacts")).context("opening the artifact store")?);
    let mut ecfg = EngineConfig::new(dir.join("compiled"));
    ecfg.max_instances = a.max_instances;
    ecfg.demote_after = a.long_guest_after;
    let wasm = WasmEngine::new(ecfg).context("starting the WebAssembly engine")?;
    let settings = EngineSettings {
        queue_wait: a.queue_wait,
        idle_evict: a.idle_evict,
        retention: RetentionSettings {
            max_records: a.retention_records,
            max_age: a.retention_age,
            ..Default::default()
        },
        queue: QueueSettings {
            max_events: a.queue_max_events,
            max_bytes: a.queue_max_bytes,
            idempotency_window: a.idempotency_window,
        },
        process: wisp_exec_process::ProcessConfig {
            code_root: dir.join("code"),
            work_root: dir.join("work"),
            init_timeout: a.init_timeout,
            max_log_bytes: 64 * 1024,
            sandbox: !a.no_process_sandbox,
            hide: vec![dir.clone()],
            prestart: a.prestart_runtimes,
            demote_after: a.long_guest_after,
        },
        limits: wisp_engine::NodeLimits {
            max_instances: a.max_instances,
            max_memory_mb: match a.max_memory {
                Some(m) => m,
                None => default_memory_budget_mib()?,
            },
            ns_max_concurrency: a.ns_max_concurrency,
            ns_max_instances: a.ns_max_instances,
        },
    };
    let events = Arc::new(
        SqliteEvents::open(&dir.join("events.db")).context("opening the event queue database")?,
    );
    let kv_store = Arc::new(
        wisp_store::SqliteKv::open(&dir.join("kv.db")).context("opening the key-value database")?,
    );
    let kv = wisp_kv::Kv::open(kv_store).context("loading the key-value store")?;
    let objects = Arc::new(
        wisp_objects::ObjectStore::open(&dir.join("objects"), &dir.join("objects.db"))
            .context("opening the object store")?,
    );
    let engine = Engine::start(
        wasm,
        wisp_engine::Stores {
            registry: sqlite.clone(),
            artifacts,
            activations: sqlite.clone(),
            events,
            tenants: sqlite.clone(),
            kv,
            objects,
        },
        settings,
    )
    .await?;
    let gate = Gate::load(
        sqlite.clone(),
        sqlite,
        token,
        AccessLogSettings {
            max_records: a.access_log_records,
            max_age: a.access_log_age,
        },
    )
    .context("loading routes, tokens and API keys")?;

    let listener = wisp_listen::bind(&a.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another wisp running? pick another with --listen)",
            a.listen
        )
    })?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let s3_listener = match a.s3_listen.as_str() {
        "off" | "none" => None,
        s3 => Some(wisp_listen::bind(s3).await.with_context(|| {
            format!(
                "cannot listen on {s3} for the S3 API (is another wisp or S3 server running? pick another with --s3-listen, or --s3-listen off)"
            )
        })?),
    };
    let s3_url = match &s3_listener {
        Some(l) => Some(format!("http://{}", l.local_addr()?)),
        None => None,
    };
    wisp_core::durable::write_atomic(&dir.join(URL_FILE), url.as_bytes())
        .with_context(|| format!("writing {}", dir.join(URL_FILE).display()))?;
    let gateway = GatewayConfig {
        max_payload_bytes: a.max_payload,
        max_artifact_bytes: a.max_artifact,
        public_url: url.clone(),
        s3_url: s3_url.clone(),
        body_timeout: a.body_timeout,
        listener: wisp_listen::ListenerSettings {
            header_timeout: a.header_timeout,
            idle_timeout: a.idle_timeout,
            max_connections: a.max_connections,
        },
    };
    println!("wisp listening on {url}");
    if let Some(s3) = &s3_url {
        println!("s3 api listening on {s3}");
    }
    println!("data dir: {}", dir.display());
    let _ = std::io::stdout().flush();
    wisp_gateway::serve(
        listener,
        s3_listener,
        engine.clone(),
        gate.clone(),
        gateway,
        shutdown_signal(),
    )
    .await?;
    eprintln!("wisp: shutting down, waiting for running invocations");
    engine.shutdown(Duration::from_secs(16 * 60)).await;
    gate.shutdown().await;
    eprintln!("wisp: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_mib;

    #[test]
    fn sizes_parse_in_mib() {
        assert_eq!(parse_mib("2GiB"), Ok(2048));
        assert_eq!(parse_mib("256MiB"), Ok(256));
        assert_eq!(parse_mib("512M"), Ok(512));
        assert_eq!(parse_mib("1g"), Ok(1024));
        assert_eq!(parse_mib("300"), Ok(300));
        assert!(parse_mib("0GiB").is_err());
        assert!(parse_mib("2 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_mib("lots").is_err());
    }
}
