//! Prestarted interpreters ("stem cells", as OpenWhisk calls its
//! prewarmed containers).
//!
//! Most of a Python function's cold start is the interpreter starting and
//! importing the standard library, before any of the function's code is
//! read. For functions started as `python3 -m MODULE` (the usual
//! `python3 -m awslambdaric`), the node keeps interpreters started ahead of
//! demand: each in a cell of its own (cgroups, namespaces, mounts, the
//! unprivileged user: the same sandbox as any function process, minus the
//! code), with common standard modules imported, waiting on its stdin. A
//! cold start takes one and makes it the function's process: the
//! function's memory limit on its cell, the function's code mounted at
//! `/var/task`, then its environment, working directory, module and
//! arguments handed over, and the interpreter runs the module as `-m`
//! would. A stem serves one process of one function and is never reused;
//! another is started in the background to replace it.
//!
//! Not used (a fresh process is started instead) when the command passes
//! interpreter options, names an interpreter inside the bundle, or the
//! function sets `PYTHON*` variables other than `PYTHONPATH`,
//! `PYTHONUNBUFFERED` and `PYTHONDONTWRITEBYTECODE` (the others act while
//! the interpreter starts, before the function is known).

use crate::sandbox::{self, Cell};
use crate::{ProcessConfig, base_env, reap, spawner};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Process numbers, unique in this node (cell and tmp names).
pub(crate) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// How long after a stem is taken its successor starts.
const REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// The memory limit of a stem's cell until a function takes it.
const STEM_MEMORY_MB: u32 = 256;

/// What the interpreter runs until it is handed a function: it imports
/// what Python runtime clients and handlers commonly use, reads the
/// hand-over (JSON) from stdin, and becomes `python -m MODULE ARGS` in the
/// function's directory with the function's environment.
const STUB: &str = r#"
def _wisp_stem():
    import sys, os, json, time, runpy
    import logging, traceback, decimal, datetime, uuid, base64, socket, http.client, urllib.parse, typing
    c = json.loads(sys.stdin.buffer.read() or b"null")
    if not c:
        os._exit(0)
    n = os.open(os.devnull, os.O_RDONLY)
    os.dup2(n, 0)
    os.close(n)
    os.chdir(c["cwd"])
    os.environ.clear()
    os.environ.update(c["env"])
    time.tzset()
    sys.path[0] = c["cwd"]
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[1:1] = extra
    sys.dont_write_bytecode = "PYTHONDONTWRITEBYTECODE" in os.environ
    if os.environ.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
    sys.argv = ["-m"] + c["args"]
    return runpy, c["module"]
_wisp_runpy, _wisp_module = _wisp_stem()
del _wisp_stem
_wisp_runpy._run_module_as_main(_wisp_module)
"#;

/// Which stems can serve a function: the same interpreter, and the same
/// network (its own loopback-only namespace, or the node's).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub program: String,
    pub isolate_net: bool,
}

/// A function whose command is `python3 -m MODULE [ARGS]`.
#[derive(Debug, Clone)]
pub(crate) struct PythonLaunch {
    /// The interpreter, as a path on the node.
    pub program: String,
    pub module: String,
}

impl PythonLaunch {
    /// `argv` is the function's command line with its handler appended.
    pub fn of(argv: &[String], env: &BTreeMap<String, String>) -> Option<Self> {
        let [program, flag, module, ..] = argv else {
            return None;
        };
        let name = Path::new(program).file_name()?.to_str()?;
        let version = name.strip_prefix("python")?;
        let is_python = version.is_empty()
            || version == "3"
            || version
                .strip_prefix("3.")
                .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()));
        if !is_python || flag != "-m" || module.starts_with('-') {
            return None;
        }
        const HANDLED: [&str; 3] = ["PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"];
        if env
            .keys()
            .any(|k| k.starts_with("PYTHON") && !HANDLED.contains(&k.as_str()))
        {
            return None;
        }
        let program = if program.contains('/') {
            // An interpreter of the node, not one inside the bundle.
            Path::new(program).is_absolute().then(|| program.clone())?
        } else {
            find_in_path(program)?
        };
        Some(Self {
            program,
            module: module.clone(),
        })
    }
}

fn find_in_path(name: &str) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

/// A started interpreter waiting for its function.
pub(crate) struct Stem {
    /// The process and its Runtime API listener (taken when adopted).
    parts: Option<(tokio::process::Child, std::net::TcpListener)>,
    pub cell: Option<Cell>,
    /// Its `/tmp` when not sandboxed.
    pub tmp: PathBuf,
}

impl Stem {
    pub fn child(&mut self) -> &mut tokio::process::Child {
        &mut self.parts.as_mut().expect("a stem's process").0
    }

    pub fn listener(&self) -> &std::net::TcpListener {
        &self.parts.as_ref().expect("a stem's listener").1
    }

    /// The process and its Runtime API listener, now a function's.
    pub fn into_parts(mut self) -> (tokio::process::Child, std::net::TcpListener) {
        self.parts.take().expect("a stem's process")
    }
}

impl Drop for Stem {
    fn drop(&mut self) {
        // Dropped unused: kill it and remove its cell.
        if let Some((child, _)) = &self.parts {
            reap(child.id().unwrap_or(0) as i32, self.cell.take());
        }
    }
}

/// The node's stems, by interpreter and network.
pub(crate) struct Stems {
    cfg: Arc<ProcessConfig>,
    sandbox: Option<Arc<sandbox::Sandbox>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    ready: HashMap<Key, Vec<Stem>>,
    filling: HashSet<Key>,
}

impl Stems {
    pub fn new(cfg: Arc<ProcessConfig>, sandbox: Option<Arc<sandbox::Sandbox>>) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            sandbox,
            state: Mutex::default(),
        })
    }

    /// A function that can use stems of `key` was loaded: keep some ready
    /// from now on.
    pub fn want(self: &Arc<Self>, key: Key) {
        self.fill(key, std::time::Duration::ZERO);
    }

    /// A ready stem of `key`, if there is one (and starts its successor).
    pub fn take(self: &Arc<Self>, key: &Key) -> Option<Stem> {
        let taken = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let ready = st.ready.get_mut(key)?;
            let mut found = None;
            while let Some(mut s) = ready.pop() {
                if matches!(s.child().try_wait(), Ok(None)) {
                    found = Some(s);
                    break;
                }
                tracing::warn!(program = %key.program, "a prestarted interpreter had exited");
            }
            found
        };
        // The successor starts a little later, so that it does not compete
        // with this cold start for the CPU.
        self.fill(key.clone(), REFILL_DELAY);
        taken
    }

    /// Starts stems of `key` in the background until `prestart` are ready.
    fn fill(self: &Arc<Self>, key: Key, delay: std::time::Duration) {
        if self.cfg.prestart == 0 {
            return;
        }
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let ready = st.ready.get(&key).map_or(0, Vec::len);
            if ready >= self.cfg.prestart || !st.filling.insert(key.clone()) {
                return;
            }
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .filling
                .remove(&key);
            return;
        };
        let me = self.clone();
        rt.spawn(async move {
            tokio::time::sleep(delay).await;
            loop {
                let enough = {
                    let st = me.state.lock().unwrap_or_else(|p| p.into_inner());
                    st.ready.get(&key).map_or(0, Vec::len) >= me.cfg.prestart
                };
                if enough {
                    break;
                }
                match me.start(&key).await {
                    Ok(stem) => me
                        .state
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .ready
                        .entry(key.clone())
                        .or_default()
                        .push(stem),
                    Err(e) => {
                        tracing::warn!(program = %key.program, error = %e, "could not prestart an interpreter; cold starts start one each");
                        break;
                    }
                }
            }
            me.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .filling
                .remove(&key);
        });
    }

    async fn start(&self, key: &Key) -> Result<Stem, String> {
        let n = next_id();
        let cell = match &self.sandbox {
            Some(sb) => Some(sb.cell(&format!("stem-{n}-{}", std::process::id()), STEM_MEMORY_MB)?),
            None => None,
        };
        let tmp = match &cell {
            Some(_) => PathBuf::from("/tmp"),
            None => {
                let t = self
                    .cfg
                    .work_root
                    .join(format!("tmp-stem-{n}-{}", std::process::id()));
                std::fs::create_dir_all(&t).map_err(|e| format!("{}: {e}", t.display()))?;
                t
            }
        };
        let mut cmd = tokio::process::Command::new(&key.program);
        cmd.args(["-c", STUB])
            .current_dir(&tmp)
            .env_clear()
            .envs(base_env(&tmp.to_string_lossy()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if cell.is_some() {
            cmd.current_dir("/");
        }
        sandbox::prepare(&mut cmd, cell.as_ref(), None, &self.cfg.hide);
        let (child, listener) = spawner::spawn(cmd, key.isolate_net)
            .await
            .map_err(|e| format!("{}: {e}", key.program))?;
        Ok(Stem {
            parts: Some((child, listener)),
            cell,
            tmp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn only_plain_python_dash_m_commands_use_prestarted_interpreters() {
        let none = BTreeMap::new();
        let p =
            PythonLaunch::of(&argv("/usr/bin/python3 -m awslambdaric app.handler"), &none).unwrap();
        assert_eq!(p.program, "/usr/bin/python3");
        assert_eq!(p.module, "awslambdaric");
        for name in ["python", "python3", "python3.11"] {
            let found = PythonLaunch::of(&argv(&format!("{name} -m awslambdaric h")), &none);
            // Found on PATH, when this machine has that interpreter.
            if let Some(f) = found {
                assert!(f.program.ends_with(&format!("/{name}")), "{f:?}");
            }
        }
        for cmd in [
            "/usr/bin/python3 -u -m awslambdaric h", // interpreter options
            "/usr/bin/python3 app.py h",             // a script, not -m
            "/usr/bin/python3 -m",                   // no module
            "/usr/bin/python3 -m -x h",
            "./venv/bin/python3 -m awslambdaric h", // inside the bundle
            "/usr/bin/node index.mjs h",
            "/usr/bin/python3x -m awslambdaric h",
            "/usr/bin/python3.x -m awslambdaric h",
        ] {
            assert!(PythonLaunch::of(&argv(cmd), &none).is_none(), "{cmd}");
        }
        // Variables that act while the interpreter starts rule it out;
        // the three the hand-over applies do not.
        let mut env = BTreeMap::new();
        for k in ["PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"] {
            env.insert(k.to_string(), "1".to_string());
        }
        let cmd = argv("/usr/bin/python3 -m awslambdaric h");
        assert!(PythonLaunch::of(&cmd, &env).is_some());
        env.insert("PYTHONHASHSEED".into(), "0".into());
        assert!(PythonLaunch::of(&cmd, &env).is_none());
    }
}
