//! The process executor: runs native programs that speak the AWS Lambda
//! Runtime API, so functions written for Lambda (a `bootstrap` executable,
//! or a runtime client such as Python's `awslambdaric` started by a
//! command) run unchanged.
//!
//! Each version of a function gets a [`ProcessPool`]. A process serves one
//! invocation at a time (Lambda semantics); the pool starts another when
//! all are busy (the engine bounds how many by the function's concurrency
//! limit), keeps them warm, and stops them when dropped (scale to zero).
//! Every process has its own Runtime API endpoint on loopback
//! (`AWS_LAMBDA_RUNTIME_API`), so what it says is attributed to it alone.
//! An invocation past its deadline kills its process; the next one starts
//! fresh. A new process of a `python3 -m MODULE` or `node SCRIPT` function
//! comes from a prestarted interpreter when one is ready (see [`stem`]).

pub mod bundle;
mod demote;
mod runtime_api;
mod sandbox;
pub mod shape;
mod spawner;
mod stem;
mod worker;

pub use bundle::kind as bundle_kind;

use bytes::Bytes;
use runtime_api::{ApiState, Invocation, Outcome as ApiOutcome};
use shape::Shape;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wisp_core::activation::RunReport;
use wisp_core::capacity::Seat;
use wisp_core::{Digest, Outcome};
pub use worker::Warm;
use worker::{LogBuf, Worker, pump, reap, take_logs};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    #[error("invalid bundle: {0}")]
    Bundle(String),
    #[error(
        "the bundle has no `bootstrap` executable at its root and no --command was given: add one of them"
    )]
    NoEntryPoint,
    #[error("cannot start the function's process: {0}")]
    Spawn(String),
}

/// Node-wide settings of the process executor.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Where bundles are unpacked (`<data-dir>/code`).
    pub code_root: PathBuf,
    /// Where each process gets its private, size-capped `/tmp`.
    pub work_root: PathBuf,
    /// How long a new process may take to ask for its first invocation,
    /// on top of the invocation's own deadline.
    pub init_timeout: Duration,
    /// Bytes of stdout/stderr kept per invocation.
    pub max_log_bytes: usize,
    /// Run processes in the sandbox (namespaces, cgroups, an unprivileged
    /// user). Needs root; without it processes only get rlimits.
    pub sandbox: bool,
    /// Directories sandboxed processes must not see (the data dir).
    pub hide: Vec<PathBuf>,
    /// Interpreters kept started, ahead of demand, per runtime command
    /// that can use them (`python3 -m MODULE`); 0 turns them off.
    pub prestart: usize,
    /// CPU time after which an invocation's process group runs at nice 19
    /// (`wisp serve --long-guest-after`; `Duration::MAX`: never).
    pub demote_after: Duration,
}

/// What a process function is, as the pool needs it.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub namespace: String,
    pub name: String,
    pub version: u32,
    pub memory_mb: u32,
    pub env: BTreeMap<String, String>,
    pub handler: Option<String>,
    /// A command line (split on whitespace) that starts a runtime client;
    /// the handler is appended as its last argument.
    pub command: Option<String>,
    /// Whether the process may use the network (its spec allows outbound
    /// hosts). Without, a sandboxed process gets a network namespace of
    /// its own with loopback only, where its Runtime API is.
    pub network: bool,
}

/// The node's process executor.
#[derive(Clone)]
pub struct ProcessRuntime {
    cfg: Arc<ProcessConfig>,
    sandbox: Option<Arc<sandbox::Sandbox>>,
    stems: Arc<stem::Stems>,
}

impl ProcessRuntime {
    pub fn new(cfg: ProcessConfig) -> Self {
        let sandbox = if cfg.sandbox {
            match sandbox::Sandbox::detect(&cfg.work_root) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::warn!(error = %e, "process sandbox unavailable; process functions run with rlimits only");
                    None
                }
            }
        } else {
            None
        };
        let cfg = Arc::new(cfg);
        Self {
            stems: stem::Stems::new(cfg.clone(), sandbox.clone()),
            cfg,
            sandbox,
        }
    }

    /// Checks and unpacks a bundle (once per artifact); returns its code
    /// dir. When `command` starts a Python interpreter, the bundle's
    /// modules are compiled to bytecode now: the code dir is read-only to
    /// the function, so Python could not cache them and would compile
    /// them again at every cold start.
    pub fn unpack(
        &self,
        digest: &Digest,
        bytes: &[u8],
        command: Option<&str>,
    ) -> Result<PathBuf, ProcessError> {
        if bundle::kind(bytes).is_none() {
            return Err(ProcessError::Bundle(
                "a process function's artifact must be a .zip or .tar.gz bundle".into(),
            ));
        }
        let dir = self.cfg.code_root.join(digest.hex());
        let python = command
            .and_then(|c| c.split_whitespace().next())
            .filter(|p| {
                Path::new(p)
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("python"))
            });
        bundle::unpack(bytes, &dir, python)?;
        Ok(dir)
    }

    /// Whether the code dir of `digest` is unpacked already.
    pub fn unpacked(&self, digest: &Digest) -> Option<PathBuf> {
        let dir = self.cfg.code_root.join(digest.hex());
        dir.is_dir().then_some(dir)
    }

    /// A pool for one version of a function.
    pub fn pool(
        &self,
        spec: ProcessSpec,
        code_dir: PathBuf,
    ) -> Result<Arc<ProcessPool>, ProcessError> {
        let argv = match &spec.command {
            Some(c) => {
                let mut v: Vec<String> = c.split_whitespace().map(str::to_string).collect();
                if v.is_empty() {
                    return Err(ProcessError::NoEntryPoint);
                }
                if let Some(h) = &spec.handler {
                    v.push(h.clone());
                }
                v
            }
            None => {
                let b = code_dir.join("bootstrap");
                if !b.is_file() {
                    return Err(ProcessError::NoEntryPoint);
                }
                vec![b.to_string_lossy().into_owned()]
            }
        };
        let prestartable = stem::Launch::of(&argv, &spec.env);
        if let Some(l) = &prestartable {
            self.stems
                .want(l.key(self.sandbox.is_some() && !spec.network));
        }
        Ok(Arc::new(ProcessPool {
            cfg: self.cfg.clone(),
            sandbox: self.sandbox.clone(),
            spec,
            code_dir,
            argv,
            idle: Mutex::new(std::collections::VecDeque::new()),
            processes: Arc::new(AtomicUsize::new(0)),
            prestartable,
            stems: self.stems.clone(),
        }))
    }
}

/// What every process starts with: a cleared environment plus these.
fn base_env(tmp: &str) -> Vec<(String, String)> {
    [
        (
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        ),
        ("LANG", "C.UTF-8".into()),
        ("TZ", ":UTC".into()),
        ("TMPDIR", tmp.to_string()),
        ("HOME", tmp.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The processes of one function version.
pub struct ProcessPool {
    cfg: Arc<ProcessConfig>,
    sandbox: Option<Arc<sandbox::Sandbox>>,
    spec: ProcessSpec,
    code_dir: PathBuf,
    argv: Vec<String>,
    /// Warm processes, least recently used first.
    idle: Mutex<std::collections::VecDeque<Worker>>,
    processes: Arc<AtomicUsize>,
    /// How to start it from a prestarted interpreter, when it can be.
    prestartable: Option<stem::Launch>,
    stems: Arc<stem::Stems>,
}

/// The result of one invocation.
pub struct Invoked {
    pub report: RunReport,
    pub response: http::Response<Bytes>,
    pub cold: bool,
}

fn now_ms() -> i64 {
    wisp_core::time::now_ms()
}

impl ProcessPool {
    fn task_root(&self) -> PathBuf {
        match self.sandbox {
            Some(_) => PathBuf::from(sandbox::TASK_ROOT),
            None => self.code_dir.clone(),
        }
    }

    /// Processes alive now (busy or idle).
    pub fn processes(&self) -> usize {
        self.processes.load(Ordering::Relaxed)
    }

    /// The cell (cgroups) name of this function's process number `n`: it
    /// says whose it is, and ends with the node's pid (see
    /// `Sandbox::remove_stale`).
    fn cell_name(&self, n: u64) -> String {
        let s = &self.spec;
        format!(
            "{}-{}-{}-{n}-{}",
            s.namespace,
            s.name,
            s.version,
            std::process::id()
        )
    }

    /// The environment a process of this function starts with (the
    /// Runtime API's address is added by whoever opens its listener).
    fn env(&self, n: u64, tmp: &Path) -> Vec<(String, String)> {
        let s = &self.spec;
        let task_root = self.task_root().to_string_lossy().into_owned();
        let tmp = tmp.to_string_lossy().into_owned();
        let mut env: Vec<(String, String)> = base_env(&tmp);
        env.extend(
            [
                ("AWS_LAMBDA_FUNCTION_NAME", s.name.clone()),
                ("AWS_LAMBDA_FUNCTION_VERSION", s.version.to_string()),
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", s.memory_mb.to_string()),
                (
                    "AWS_LAMBDA_LOG_GROUP_NAME",
                    format!("/wisp/{}/{}", s.namespace, s.name),
                ),
                ("AWS_LAMBDA_LOG_STREAM_NAME", format!("{}-{n}", s.version)),
                ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into()),
                ("AWS_EXECUTION_ENV", "AWS_Lambda_wisp".into()),
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_DEFAULT_REGION", "us-east-1".into()),
                ("LAMBDA_TASK_ROOT", task_root.clone()),
                ("LAMBDA_RUNTIME_DIR", task_root),
                ("_HANDLER", s.handler.clone().unwrap_or_default()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        env.extend(s.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    async fn spawn(&self) -> Result<Worker, ProcessError> {
        // Unique across pools of this node: cells of a dropped pool may
        // still be being removed when a new pool starts.
        let n = stem::next_id();
        let s = &self.spec;
        let isolate_net = self.sandbox.is_some() && !s.network;
        if let Some(launch) = &self.prestartable
            && let Some(stem) = self.stems.take(&launch.key(isolate_net))
        {
            match self.adopt(stem, launch, n).await {
                Ok(w) => return Ok(w),
                Err(e) => {
                    tracing::warn!(function = %s.name, error = %e, "could not use a prestarted interpreter; starting a new process");
                }
            }
        }
        // Inside the sandbox the code is at /var/task.
        let program = match (
            &self.sandbox,
            Path::new(&self.argv[0]).strip_prefix(&self.code_dir),
        ) {
            (Some(_), Ok(rel)) => Path::new(sandbox::TASK_ROOT).join(rel),
            _ => PathBuf::from(&self.argv[0]),
        };
        let mut cmd = tokio::process::Command::new(&program);
        let t_cell = Instant::now();
        let cell = match &self.sandbox {
            Some(sb) => Some(
                sb.cell(&self.cell_name(n), s.memory_mb)
                    .map_err(|e| ProcessError::Spawn(format!("sandbox: {e}")))?,
            ),
            None => None,
        };
        let tmp = match &cell {
            Some(_) => PathBuf::from("/tmp"),
            None => {
                let t = self.cfg.work_root.join(format!(
                    "tmp-{}-{}-{n}-{}",
                    s.namespace,
                    s.name,
                    std::process::id()
                ));
                let _ = std::fs::create_dir_all(&t);
                t
            }
        };
        cmd.args(&self.argv[1..])
            .current_dir(&self.code_dir)
            .env_clear()
            .envs(self.env(n, &tmp))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        sandbox::prepare(
            &mut cmd,
            cell.as_ref(),
            Some(&self.code_dir),
            &self.cfg.hide,
        );
        let t_spawn = Instant::now();
        // Spawning waits until the program is exec'd, after the sandbox's
        // namespaces and mounts are set up: on the spawner thread, not on
        // a runtime thread, where it would hold up other requests.
        let (child, listener) = spawner::spawn(cmd, isolate_net)
            .await
            .map_err(|e| ProcessError::Spawn(format!("{}: {e}", self.argv[0])))?;
        tracing::debug!(
            function = %s.name,
            cell_us = (t_spawn - t_cell).as_micros() as u64,
            spawn_us = t_spawn.elapsed().as_micros() as u64,
            "process started"
        );
        self.worker(child, listener, cell)
    }

    /// Makes a prestarted interpreter this function's process: the
    /// function's limits on its cell, its code mounted at `/var/task`, and
    /// its environment and module sent to the waiting interpreter.
    async fn adopt(
        &self,
        mut stem: stem::Stem,
        launch: &stem::Launch,
        n: u64,
    ) -> Result<Worker, ProcessError> {
        let t = Instant::now();
        let pid = stem.child().id().unwrap_or(0);
        let cell = stem.cell.take();
        let (memory_mb, code_dir) = (self.spec.memory_mb, self.code_dir.clone());
        let name = self.cell_name(n);
        let cell = tokio::task::spawn_blocking(move || {
            let mut cell = cell;
            if let Some(c) = &mut cell {
                let ready = c
                    .set_limits(memory_mb)
                    .and_then(|()| sandbox::inject_code(pid, &code_dir))
                    .and_then(|()| c.rename(&name));
                if let Err(e) = ready {
                    reap(pid as i32, cell);
                    return Err(e);
                }
            }
            Ok::<_, String>(cell)
        })
        .await
        .map_err(|e| ProcessError::Spawn(e.to_string()))?
        .map_err(|e| ProcessError::Spawn(format!("sandbox: {e}")))?;
        let tmp = match &cell {
            Some(_) => PathBuf::from("/tmp"),
            None => stem.tmp.clone(),
        };
        let mut env = self.env(n, &tmp);
        env.push((
            "AWS_LAMBDA_RUNTIME_API".into(),
            stem.listener()
                .local_addr()
                .map_err(|e| ProcessError::Spawn(e.to_string()))?
                .to_string(),
        ));
        let args: Vec<&String> = self.argv.iter().skip(launch.args_from).collect();
        let config = serde_json::json!({
            "cwd": self.task_root(),
            "env": env.into_iter().collect::<BTreeMap<_, _>>(),
            "target": launch.target,
            "args": args,
        });
        let mut stdin = stem
            .child()
            .stdin
            .take()
            .ok_or_else(|| ProcessError::Spawn("the interpreter's stdin is gone".into()))?;
        use tokio::io::AsyncWriteExt;
        stdin
            .write_all(config.to_string().as_bytes())
            .await
            .map_err(|e| ProcessError::Spawn(format!("handing over to the interpreter: {e}")))?;
        drop(stdin);
        tracing::debug!(function = %self.spec.name, adopt_us = t.elapsed().as_micros() as u64, "prestarted interpreter adopted");
        let (child, listener) = stem.into_parts();
        self.worker(child, listener, cell)
    }

    /// A started process, with its output read into its log buffer and
    /// its Runtime API served.
    fn worker(
        &self,
        mut child: tokio::process::Child,
        listener: std::net::TcpListener,
        cell: Option<sandbox::Cell>,
    ) -> Result<Worker, ProcessError> {
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
            .map_err(|e| ProcessError::Spawn(format!("runtime API listener: {e}")))?;
        let api = ApiState::new();
        let server = tokio::spawn(runtime_api::serve(listener, api.clone()));
        let pid = child.id().unwrap_or(0) as i32;
        self.processes.fetch_add(1, Ordering::Relaxed);
        let logs = Arc::new(Mutex::new(LogBuf::default()));
        let max = self.cfg.max_log_bytes;
        let mut pipes = Vec::new();
        if let Some(out) = child.stdout.take() {
            pipes.push(std::os::fd::AsRawFd::as_raw_fd(&out));
            tokio::spawn(pump(out, logs.clone(), max));
        }
        if let Some(err) = child.stderr.take() {
            pipes.push(std::os::fd::AsRawFd::as_raw_fd(&err));
            tokio::spawn(pump(err, logs.clone(), max));
        }
        Ok(Worker {
            child,
            api,
            server,
            logs,
            pipes,
            pid,
            cell,
            processes: self.processes.clone(),
            lease: None,
            idle_since: Instant::now(),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Worker>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used warm process, if one is idle and still alive
    /// (one that died while idle is dropped, with its lease).
    pub fn take_warm(&self) -> Option<Warm> {
        let mut idle = self.idle();
        while let Some(mut w) = idle.pop_back() {
            match w.child.try_wait() {
                Ok(None) => return Some(Warm(Box::new(w))),
                status => {
                    tracing::warn!(function = %self.spec.name, ?status, "an idle process of the function had exited");
                }
            }
        }
        None
    }

    /// When the least recently used warm process went idle.
    pub fn oldest_idle(&self) -> Option<Instant> {
        self.idle().front().map(|w| w.idle_since)
    }

    /// Warm processes kept now.
    pub fn idle_processes(&self) -> usize {
        self.idle().len()
    }

    /// Stops the least recently used warm process (its lease is given
    /// back); false when none is idle.
    pub fn evict_oldest_idle(&self) -> bool {
        let evicted = self.idle().pop_front();
        evicted.is_some()
    }

    /// Runs one invocation: an HTTP request shaped for the handler (see
    /// [`shape`]) on a warm process, or a new one.
    pub async fn invoke(
        &self,
        req: http::Request<Bytes>,
        source: &wisp_core::Source,
        timeout: Duration,
        seat: Seat<Warm>,
    ) -> Invoked {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        // A fresh unique id (32 hex characters), from the id Wisp uses for activations.
        let request_id = wisp_core::ActivationId::generate().to_string();
        let shape = Shape::for_request(source, &parts.headers);
        let payload = match shape {
            Shape::Raw => body,
            Shape::CloudEvent => shape::cloud_event(&parts, &body),
            Shape::ApiGatewayV2 => shape::api_gateway_v2(&parts, &body, &request_id, now_ms()),
        };
        let cold = matches!(seat, Seat::Fresh(_));
        let mut worker = match seat {
            Seat::Warm(Warm(w)) => *w,
            Seat::Fresh(lease) => match self.spawn().await {
                Ok(mut w) => {
                    w.lease = Some(lease);
                    w
                }
                Err(e) => {
                    return failed(
                        started,
                        cold,
                        Outcome::Error,
                        e.to_string(),
                        String::new(),
                        false,
                    );
                }
            },
        };
        let deadline_ms = now_ms() + timeout.as_millis() as i64;
        let (tx, rx) = tokio::sync::oneshot::channel();
        worker.api.push(Invocation {
            id: request_id.clone(),
            payload,
            deadline_ms,
            arn: format!(
                "arn:aws:lambda:us-east-1:000000000000:function:{}:{}",
                self.spec.name, self.spec.version
            ),
            done: tx,
        });
        let limit = if cold {
            timeout + self.cfg.init_timeout
        } else {
            timeout
        };
        let mut demotion = demote::Demotion::start(worker.pid, self.cfg.demote_after);
        let mut rx = rx;
        let expired = tokio::time::sleep(limit);
        tokio::pin!(expired);
        let result = loop {
            tokio::select! {
                r = &mut rx => break r.ok(),
                _ = &mut expired => break None,
                _ = async { if let Some(d) = &demotion { d.due().await } },
                    if demotion.as_ref().is_some_and(demote::Demotion::watching) => {
                    if let Some(d) = &mut demotion {
                        d.check();
                    }
                }
                status = worker.child.wait() => {
                    let why = match status {
                        Ok(s) => format!("the function's process exited ({s}) before it answered"),
                        Err(e) => format!("the function's process failed: {e}"),
                    };
                    let oom = worker.cell.as_ref().is_some_and(|c| c.oom_killed());
                    let logs = take_logs(&worker.logs);
                    let (outcome, why) = if oom {
                        (Outcome::MemoryLimit, format!("the function exceeded its memory limit of {} MiB and was killed", self.spec.memory_mb))
                    } else {
                        (Outcome::Error, worker.api.init_error().map(|e| format!("init error: {e}")).unwrap_or(why))
                    };
                    return failed(started, cold, outcome, why, logs.0, logs.1);
                }
            }
        };
        // The output printed before the answer belongs to this invocation.
        worker.logs_caught_up().await;
        let (logs, truncated) = take_logs(&worker.logs);
        let Some(result) = result else {
            // Past the deadline: the process goes (the drop kills its group).
            drop(worker);
            return failed(
                started,
                cold,
                Outcome::Timeout,
                format!("timed out after {} ms", timeout.as_millis()),
                logs,
                truncated,
            );
        };
        let run_time = started.elapsed();
        let (outcome, status, error, response) = match result {
            ApiOutcome::Response(bytes) => {
                let response = match shape {
                    Shape::ApiGatewayV2 => shape::api_gateway_response(&bytes),
                    Shape::CloudEvent | Shape::Raw => {
                        let mut r = http::Response::new(bytes);
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        r
                    }
                };
                let status = response.status().as_u16();
                let outcome = if status >= 500 {
                    Outcome::Error
                } else {
                    Outcome::Success
                };
                (outcome, status, None, response)
            }
            ApiOutcome::Error(bytes) => {
                let msg = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["errorMessage"].as_str().map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
                let mut r = http::Response::new(bytes);
                *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                // The error and its stack trace are for the owner, not for
                // anonymous callers.
                r.extensions_mut()
                    .insert(wisp_core::HostAnswered(Outcome::Error));
                (Outcome::Error, 502, Some(msg), r)
            }
        };
        // Kept warm at the priority it started with (see `demote`).
        if demotion.is_none_or(demote::Demotion::restore) {
            worker.idle_since = Instant::now();
            self.idle().push_back(worker);
        }
        Invoked {
            report: RunReport {
                outcome,
                status,
                run_time,
                logs,
                logs_truncated: truncated,
                error,
            },
            response,
            cold,
        }
    }
}

fn failed(
    started: Instant,
    cold: bool,
    outcome: Outcome,
    why: String,
    logs: String,
    truncated: bool,
) -> Invoked {
    let status = if outcome == Outcome::Timeout {
        504
    } else {
        502
    };
    let body = serde_json::json!({"errorMessage": why, "errorType": outcome.as_str()}).to_string();
    let mut response = http::Response::new(Bytes::from(body));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
        .extensions_mut()
        .insert(wisp_core::HostAnswered(outcome));
    Invoked {
        report: RunReport {
            outcome,
            status,
            run_time: started.elapsed(),
            logs,
            logs_truncated: truncated,
            error: Some(why),
        },
        response,
        cold,
    }
}
