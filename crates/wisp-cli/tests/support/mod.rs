//! Test support: start the real `wisp` binary on port 0, find the guest
//! fixtures, speak HTTP to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub const WISP: &str = env!("CARGO_BIN_EXE_wisp");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// Directory of the built guest components. `scripts/test` builds them and
/// sets WISP_FIXTURES; without it they are built here, once.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("WISP_FIXTURES") {
            return PathBuf::from(d);
        }
        let target = wasm_target_dir();
        for ws in ["tests/fixtures", "examples"] {
            let st = Command::new("cargo")
                .args(["build", "--release", "--target", "wasm32-wasip2"])
                .current_dir(repo_root().join(ws))
                .env("CARGO_TARGET_DIR", &target)
                .status()
                .expect("running cargo to build the guest fixtures");
            assert!(st.success(), "building {ws} for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)");
        }
        target.join("wasm32-wasip2/release")
    })
}

pub fn wasm_target_dir() -> PathBuf {
    std::env::var_os("WISP_WASM_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/wisp/target-wasm")
        })
}

pub fn fixture(name: &str) -> Vec<u8> {
    let p = fixtures().join(format!("{name}.wasm"));
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("fixture {} missing ({e}): run ./scripts/test", p.display()))
}

/// The Python with the test clients from PyPI (scripts/test makes a venv
/// and sets WISP_PYTHON).
pub fn python() -> String {
    std::env::var("WISP_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A command's stdout and stderr, for assertion messages.
pub fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The `error.code` of a JSON error answer.
pub async fn error_code(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.unwrap();
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "wisp-test-{tag}-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct Node {
    pub child: Option<Child>,
    pub url: String,
    /// The S3-compatible API (none with `--s3-listen off`).
    pub s3_url: Option<String>,
    pub dir: PathBuf,
    pub token: String,
    pub http: reqwest::Client,
}

impl Node {
    pub fn start(dir: &Path, extra: &[&str]) -> Node {
        Self::spawn(dir, extra, Stdio::inherit(), &[])
    }

    /// Starts a node whose log (stderr) goes to `log`, with extra env vars.
    pub fn start_logged(dir: &Path, extra: &[&str], log: &Path, env: &[(&str, &str)]) -> Node {
        let f = std::fs::File::create(log).expect("creating the node's log file");
        Self::spawn(dir, extra, Stdio::from(f), env)
    }

    fn spawn(dir: &Path, extra: &[&str], stderr: Stdio, env: &[(&str, &str)]) -> Node {
        // Tests run side by side: every node's S3 API on a port of its own.
        let s3 = if extra.contains(&"--s3-listen") {
            &[][..]
        } else {
            &["--s3-listen", "127.0.0.1:0"][..]
        };
        let mut child = Command::new(WISP)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(s3)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting wisp serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("wisp serve exited before printing its address")
                .unwrap();
            if let Some(u) = line.strip_prefix("wisp listening on ") {
                break u.trim().to_string();
            }
        };
        let next = lines
            .next()
            .expect("wisp serve exited after printing its address")
            .unwrap();
        let s3_url = next
            .strip_prefix("s3 api listening on ")
            .map(|u| u.trim().to_string());
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let token = std::fs::read_to_string(dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_string();
        Node {
            child: Some(child),
            url,
            s3_url,
            dir: dir.to_path_buf(),
            token,
            http: reqwest::Client::new(),
        }
    }

    pub fn fresh(tag: &str, extra: &[&str]) -> Node {
        Node::start(&temp_dir(tag), extra)
    }

    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.url, path))
            .bearer_auth(&self.token)
    }

    /// A request to `path` on the node, without a token.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.url))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.url))
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.put(format!("{}{path}", self.url))
    }

    /// The node's Prometheus metrics text (with the admin token: every
    /// namespace's series).
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn get_fn(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}/fn/{}", self.url, path))
    }

    /// Uploads bytes and deploys them as `name` with the given spec JSON.
    pub async fn deploy(
        &self,
        name: &str,
        wasm: &[u8],
        spec: serde_json::Value,
    ) -> reqwest::Response {
        self.deploy_in("default", name, wasm, spec).await
    }

    /// The same in namespace `ns`.
    pub async fn deploy_in(
        &self,
        ns: &str,
        name: &str,
        wasm: &[u8],
        spec: serde_json::Value,
    ) -> reqwest::Response {
        let art: serde_json::Value = self
            .api(reqwest::Method::POST, "/v1/artifacts")
            .header("x-wisp-namespace", ns)
            .body(wasm.to_vec())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let digest = art["digest"].as_str().expect("digest").to_string();
        self.api(reqwest::Method::PUT, &format!("/v1/functions/{name}"))
            .header("x-wisp-namespace", ns)
            .json(&serde_json::json!({"artifact": digest, "spec": spec}))
            .send()
            .await
            .unwrap()
    }

    pub async fn deploy_ok(
        &self,
        name: &str,
        wasm: &[u8],
        spec: serde_json::Value,
    ) -> serde_json::Value {
        let r = self.deploy(name, wasm, spec).await;
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(status.is_success(), "deploy {name} failed: {status} {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        let r = self.api(reqwest::Method::GET, path).send().await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// `GET path` in namespace `ns` with the admin token; must succeed.
    pub async fn json_ns(&self, ns: &str, path: &str) -> serde_json::Value {
        let r = self
            .api(reqwest::Method::GET, path)
            .header("x-wisp-namespace", ns)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "GET {path} in {ns}: {}",
            r.status()
        );
        r.json().await.unwrap()
    }

    /// Waits until the activation log holds at least `n` records matching
    /// `function` (records are written in batches).
    pub async fn activations(&self, function: &str, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..100 {
            let v = self
                .json(&format!("/v1/activations?function={function}&limit=10000"))
                .await;
            let list = v.as_array().unwrap().clone();
            if list.len() >= n {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} activations of {function} were recorded within 5 s");
    }

    /// The activation record `id`, once written (records are written in
    /// batches).
    pub async fn activation(&self, id: &str) -> serde_json::Value {
        for _ in 0..100 {
            let r = self
                .api(reqwest::Method::GET, &format!("/v1/activations/{id}"))
                .send()
                .await
                .unwrap();
            if r.status().is_success() {
                return r.json().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("activation {id} was not recorded within 5 s");
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(WISP)
            .args(args)
            .env("WISP_DATA_DIR", &self.dir)
            .env_remove("WISP_URL")
            .env_remove("WISP_TOKEN")
            .env_remove("WISP_NAMESPACE")
            .output()
            .expect("running wisp")
    }

    /// Runs a client command with `stdin` as its standard input.
    pub fn cli_stdin(&self, args: &[&str], stdin: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(WISP)
            .args(args)
            .env("WISP_DATA_DIR", &self.dir)
            .env_remove("WISP_URL")
            .env_remove("WISP_TOKEN")
            .env_remove("WISP_NAMESPACE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running wisp");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().expect("running wisp")
    }

    pub fn signal(&mut self, sig: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, sig) };
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.take().unwrap().wait().unwrap()
    }

    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `wisp accesskey create ARGS` → (id, secret).
pub fn access_key(node: &Node, args: &[&str]) -> (String, String) {
    let mut all = vec!["accesskey", "create"];
    all.extend_from_slice(args);
    let o = node.cli(&all);
    assert!(o.status.success(), "{}", out(&o));
    // It says where to use the key: the S3 listener is not the main one.
    if let Some(s3) = &node.s3_url {
        let told = String::from_utf8_lossy(&o.stderr);
        assert!(
            told.contains(&format!("--endpoint-url {s3} for S3"))
                && told.contains(&format!("--endpoint-url {} for Lambda", node.url)),
            "{told}"
        );
    }
    let text = String::from_utf8(o.stdout).unwrap();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap_or_else(|| panic!("no {k} in {text}"))
            .to_string()
    };
    (field("aws_access_key_id"), field("aws_secret_access_key"))
}
