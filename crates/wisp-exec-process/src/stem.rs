//! Prestarted interpreters ("stem cells", as OpenWhisk calls its
//! prewarmed containers).
//!
//! Most of a Python or Node.js function's cold start is the interpreter
//! starting (and, for Python, importing the standard library), before any
//! of the function's code is read. For functions started as
//! `python3 -m MODULE` (the usual `python3 -m awslambdaric`) or
//! `node SCRIPT` (e.g. `node node_modules/aws-lambda-ric/bin/index.mjs`),
//! the node keeps interpreters started ahead of demand: each in a cell of
//! its own (cgroups, namespaces, mounts, the unprivileged user: the same
//! sandbox as any function process, minus the code), waiting on its stdin.
//! A cold start takes one and makes it the function's process: the
//! function's memory limit on its cell, the function's code mounted at
//! `/var/task`, then its environment, working directory, module or script
//! and arguments handed over, and the interpreter runs them as `-m MODULE`
//! or `node SCRIPT` would. A stem serves one process of one function and
//! is never reused; another is started in the background to replace it.
//!
//! Not used (a fresh process is started instead) when the command passes
//! interpreter options, names an interpreter inside the bundle, or the
//! function sets variables that act while the interpreter starts
//! (`PYTHON*` other than `PYTHONPATH`, `PYTHONUNBUFFERED` and
//! `PYTHONDONTWRITEBYTECODE`; any `NODE_*`).

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

/// What a Python interpreter runs until it is handed a function: it
/// imports what Python runtime clients and handlers commonly use, reads the
/// hand-over (JSON) from stdin, and becomes `python -m MODULE ARGS` in the
/// function's directory with the function's environment.
const PYTHON_STUB: &str = r#"
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
    return runpy, c["target"]
_wisp_runpy, _wisp_module = _wisp_stem()
del _wisp_stem
_wisp_runpy._run_module_as_main(_wisp_module)
"#;

/// The same for Node.js: reads the hand-over, then runs the script as the
/// main module (`node SCRIPT ARGS`: CommonJS or ES module alike).
const NODE_STUB: &str = r#"
const fs = require("fs"), path = require("path");
const c = JSON.parse(fs.readFileSync(0, "utf8") || "null");
if (!c) process.exit(0);
process.chdir(c.cwd);
for (const k of Object.keys(process.env)) delete process.env[k];
Object.assign(process.env, c.env);
process.argv = [process.argv[0], path.resolve(c.cwd, c.target), ...c.args];
require("module").runMain();
"#;

/// The interpreters stems are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lang {
    Python,
    Node,
}

impl Lang {
    fn stub_args(self) -> [&'static str; 2] {
        match self {
            Lang::Python => ["-c", PYTHON_STUB],
            Lang::Node => ["-e", NODE_STUB],
        }
    }
}

/// Which stems can serve a function: the same interpreter, and the same
/// network (its own loopback-only namespace, or the node's).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub lang: Lang,
    pub program: String,
    pub isolate_net: bool,
}

/// A function whose command is `python3 -m MODULE [ARGS]` or
/// `node SCRIPT [ARGS]`.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub lang: Lang,
    /// The interpreter, as a path on the node.
    pub program: String,
    /// The module (Python) or script (Node, relative to the code dir or
    /// absolute).
    pub target: String,
    /// Where the arguments after the module or script begin in argv.
    pub args_from: usize,
}

impl Launch {
    /// `argv` is the function's command line with its handler appended.
    pub fn of(argv: &[String], env: &BTreeMap<String, String>) -> Option<Self> {
        let program = argv.first()?;
        let name = Path::new(program).file_name()?.to_str()?;
        let (lang, target, args_from) = if let Some(version) = name.strip_prefix("python") {
            let is_python = version.is_empty()
                || version == "3"
                || version
                    .strip_prefix("3.")
                    .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()));
            const HANDLED: [&str; 3] =
                ["PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"];
            if !is_python
                || argv.get(1)? != "-m"
                || env
                    .keys()
                    .any(|k| k.starts_with("PYTHON") && !HANDLED.contains(&k.as_str()))
            {
                return None;
            }
            (Lang::Python, argv.get(2)?, 3)
        } else if name == "node" || name == "nodejs" {
            if env.keys().any(|k| k.starts_with("NODE_")) {
                return None;
            }
            (Lang::Node, argv.get(1)?, 2)
        } else {
            return None;
        };
        if target.starts_with('-') {
            return None;
        }
        let program = if program.contains('/') {
            // An interpreter of the node, not one inside the bundle.
            Path::new(program).is_absolute().then(|| program.clone())?
        } else {
            find_in_path(program)?
        };
        Some(Self {
            lang,
            program,
            target: target.clone(),
            args_from,
        })
    }

    pub fn key(&self, isolate_net: bool) -> Key {
        Key {
            lang: self.lang,
            program: self.program.clone(),
            isolate_net,
        }
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
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
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
        cmd.args(key.lang.stub_args())
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
    fn only_plain_python_dash_m_and_node_script_commands_use_prestarted_interpreters() {
        let none = BTreeMap::new();
        let p = Launch::of(&argv("/usr/bin/python3 -m awslambdaric app.handler"), &none).unwrap();
        assert_eq!(
            (p.lang, p.program.as_str()),
            (Lang::Python, "/usr/bin/python3")
        );
        assert_eq!((p.target.as_str(), p.args_from), ("awslambdaric", 3));
        let n = Launch::of(&argv("/usr/bin/node node_modules/ric/index.mjs h"), &none).unwrap();
        assert_eq!((n.lang, n.args_from), (Lang::Node, 2));
        assert_eq!(n.target, "node_modules/ric/index.mjs");
        let mut node_env = BTreeMap::new();
        node_env.insert(
            "NODE_OPTIONS".to_string(),
            "--max-old-space-size=64".to_string(),
        );
        assert!(Launch::of(&argv("/usr/bin/node index.mjs h"), &node_env).is_none());
        assert!(Launch::of(&argv("/usr/bin/node --inspect index.mjs h"), &none).is_none());
        for name in ["python", "python3", "python3.11"] {
            let found = Launch::of(&argv(&format!("{name} -m awslambdaric h")), &none);
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
            "/usr/bin/python3x -m awslambdaric h",
            "/usr/bin/python3.x -m awslambdaric h",
        ] {
            assert!(Launch::of(&argv(cmd), &none).is_none(), "{cmd}");
        }
        // Variables that act while the interpreter starts rule it out;
        // the three the hand-over applies do not.
        let mut env = BTreeMap::new();
        for k in ["PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"] {
            env.insert(k.to_string(), "1".to_string());
        }
        let cmd = argv("/usr/bin/python3 -m awslambdaric h");
        assert!(Launch::of(&cmd, &env).is_some());
        env.insert("PYTHONHASHSEED".into(), "0".into());
        assert!(Launch::of(&cmd, &env).is_none());
    }
}
