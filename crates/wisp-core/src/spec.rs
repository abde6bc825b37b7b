//! What a function is: its settings (`FunctionSpec`) and its stored record
//! (`FunctionRecord`, one immutable version of a function).

use crate::ids::{Digest, FunctionName, Namespace, TopicName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MIN_MEMORY_MB: u32 = 1;
pub const MAX_MEMORY_MB: u32 = 4096;
pub const MAX_TIMEOUT_MS: u64 = 15 * 60 * 1000;
pub const MAX_CONCURRENCY: u32 = 10_000;
pub const MAX_ATTEMPTS: u32 = 100;
pub const MAX_BACKOFF_MS: u64 = 60 * 60 * 1000;
pub const MAX_EVENT_AGE_MS: u64 = 14 * 24 * 60 * 60 * 1000;

/// Settings of a function version. Every field has a default so that a
/// deploy may give only what it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionSpec {
    /// Linear-memory limit of one instance, in MiB. Also the billed size.
    pub memory_mb: u32,
    /// Deadline of one invocation, in milliseconds.
    pub timeout_ms: u64,
    /// How many invocations may run at once; more wait briefly, then get 429.
    pub concurrency: u32,
    /// Environment variables the function sees.
    pub env: BTreeMap<String, String>,
    /// Hosts (`host` or `host:port`) the function may send HTTP requests to.
    /// Empty: no outbound HTTP.
    pub allow_outbound: Vec<String>,
    /// Requests one instance may serve before it is replaced. 1 (the
    /// default): a fresh instance per request. Higher: instances are kept
    /// warm and reused, like a warm Lambda environment — only for functions
    /// that keep no per-request state in memory.
    pub instance_reuse: u32,
    /// Attempts an async invocation or event gets (the first run included)
    /// before it is moved to the dead-letter queue.
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds; it doubles with every
    /// further retry, with ±20% jitter.
    pub backoff_ms: u64,
    /// An event older than this (since it was accepted) is not tried again:
    /// it goes to the dead-letter queue. In milliseconds.
    pub max_event_age_ms: u64,
    /// Where the result of a successful async invocation is sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_success: Option<Destination>,
    /// Where an async invocation that exhausted its attempts is sent (as
    /// well as to the dead-letter queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Destination>,
    /// Secrets of the namespace the function sees as environment variables
    /// of the same name (`wisp secret set`). Resolved when the function is
    /// loaded; the values are never part of the spec.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// What runs the function: a WebAssembly component, or a native
    /// process speaking the AWS Lambda Runtime API.
    pub runtime: Runtime,
    /// With `runtime: process`: the handler (`_HANDLER`), e.g. `app.handler`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// With `runtime: process`: the command that starts a runtime client
    /// (split on whitespace; the handler is appended), e.g.
    /// `python3 -m awslambdaric`. Without it the bundle's `bootstrap` runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Key-value buckets of its namespace the function may open through
    /// `wasi:keyvalue` (`--kv NAME`). Deploying makes missing ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kv: Vec<String>,
    /// Object-store buckets of its namespace the function may read and
    /// write through outbound HTTP to `WISP_S3_ENDPOINT` (`--objects NAME`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
    /// Whether the function answers at its direct URL (`/fn/NAME/…`,
    /// `/ns/NS/fn/NAME/…`), which does no auth. Off for functions that
    /// must only be reached through routes with API keys or JWTs.
    pub direct_url: bool,
}

/// What runs a function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A WebAssembly component of the `wasi:http/proxy` world.
    #[default]
    Wasm,
    /// A native program on the AWS Lambda Runtime API, from a .zip or
    /// .tar.gz bundle.
    Process,
}

/// Where an async result goes: another function's queue or a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Destination {
    Function(FunctionName),
    Topic(TopicName),
}

impl TryFrom<String> for Destination {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("destination {s:?} is invalid: use function:NAME or topic:NAME");
        match s.split_once(':') {
            Some(("function", n)) => FunctionName::new(n)
                .map(Destination::Function)
                .map_err(|_| bad()),
            Some(("topic", n)) => TopicName::new(n).map(Destination::Topic).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl From<Destination> for String {
    fn from(d: Destination) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Function(n) => write!(f, "function:{n}"),
            Destination::Topic(t) => write!(f, "topic:{t}"),
        }
    }
}

impl Default for FunctionSpec {
    fn default() -> Self {
        Self {
            memory_mb: 128,
            timeout_ms: 30_000,
            concurrency: 100,
            env: BTreeMap::new(),
            allow_outbound: Vec::new(),
            instance_reuse: 1,
            max_attempts: 3,
            backoff_ms: 1000,
            max_event_age_ms: 6 * 60 * 60 * 1000,
            on_success: None,
            on_failure: None,
            secrets: Vec::new(),
            kv: Vec::new(),
            objects: Vec::new(),
            direct_url: true,
            runtime: Runtime::Wasm,
            handler: None,
            command: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecError {
    #[error("memory_mb must be between {MIN_MEMORY_MB} and {MAX_MEMORY_MB} MiB, got {0}")]
    Memory(u32),
    #[error("timeout_ms must be between 1 ms and {MAX_TIMEOUT_MS} ms (15 minutes), got {0}")]
    Timeout(u64),
    #[error("concurrency must be between 1 and {MAX_CONCURRENCY}, got {0}")]
    Concurrency(u32),
    #[error("instance_reuse must be at least 1 (1 = a fresh instance per request)")]
    InstanceReuse,
    #[error("max_attempts must be between 1 and {MAX_ATTEMPTS}, got {0}")]
    MaxAttempts(u32),
    #[error("backoff_ms must be between 1 ms and {MAX_BACKOFF_MS} ms (1 hour), got {0}")]
    Backoff(u64),
    #[error("max_event_age_ms must be between 1 s and {MAX_EVENT_AGE_MS} ms (14 days), got {0}")]
    MaxEventAge(u64),
    #[error("env name {0:?} is invalid: use letters, digits and '_', not starting with a digit")]
    EnvName(String),
    #[error(
        "handler and command are settings of process functions: add runtime \"process\" (--runtime process)"
    )]
    NotProcess,
    #[error(
        "command is empty: give the program that starts the runtime client, e.g. \"python3 -m awslambdaric\""
    )]
    EmptyCommand,
    #[error("secret name {0:?} is invalid: use letters, digits and '_', not starting with a digit")]
    SecretName(String),
    #[error("{0:?} is both an env variable and a secret: keep one")]
    SecretShadowsEnv(String),
    #[error("kv grant: {0}")]
    Kv(String),
    #[error(
        "allow_outbound entry {0:?} is invalid: use HOST or HOST:PORT (e.g. api.example.com:443)"
    )]
    Outbound(String),
}

impl FunctionSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&self.memory_mb) {
            return Err(SpecError::Memory(self.memory_mb));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(SpecError::Timeout(self.timeout_ms));
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return Err(SpecError::Concurrency(self.concurrency));
        }
        if self.instance_reuse == 0 {
            return Err(SpecError::InstanceReuse);
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            return Err(SpecError::MaxAttempts(self.max_attempts));
        }
        if self.backoff_ms == 0 || self.backoff_ms > MAX_BACKOFF_MS {
            return Err(SpecError::Backoff(self.backoff_ms));
        }
        if self.max_event_age_ms < 1000 || self.max_event_age_ms > MAX_EVENT_AGE_MS {
            return Err(SpecError::MaxEventAge(self.max_event_age_ms));
        }
        for k in self.env.keys() {
            let ok = !k.is_empty()
                && !k.as_bytes()[0].is_ascii_digit()
                && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
            if !ok {
                return Err(SpecError::EnvName(k.clone()));
            }
        }
        if self.runtime == Runtime::Wasm && (self.handler.is_some() || self.command.is_some()) {
            return Err(SpecError::NotProcess);
        }
        if self.command.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(SpecError::EmptyCommand);
        }
        for k in &self.secrets {
            if crate::tenancy::check_secret_name(k).is_err() {
                return Err(SpecError::SecretName(k.clone()));
            }
            if self.env.contains_key(k) {
                return Err(SpecError::SecretShadowsEnv(k.clone()));
            }
        }
        for h in &self.allow_outbound {
            if parse_host_port(h).is_none() {
                return Err(SpecError::Outbound(h.clone()));
            }
        }
        if self.runtime == Runtime::Process && !self.kv.is_empty() {
            return Err(SpecError::Kv(
                "kv grants are for WebAssembly functions (wasi:keyvalue); a process function reaches the store over HTTP at /v1/kv with a token".into(),
            ));
        }
        if self.runtime == Runtime::Process && !self.objects.is_empty() {
            return Err(SpecError::Kv(
                "object grants are for WebAssembly functions; a process function uses the S3 API with an access key".into(),
            ));
        }
        for b in &self.objects {
            if b.len() < 3
                || b.len() > 63
                || !b
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
            {
                return Err(SpecError::Kv(format!(
                    "objects grant {b:?} is not a valid bucket name"
                )));
            }
        }
        for b in &self.kv {
            if let Err(e) = crate::kv::check_bucket(b) {
                return Err(SpecError::Kv(e.to_string()));
            }
        }
        Ok(())
    }

    /// Whether an outbound request to `host` on `port` is allowed.
    pub fn outbound_allowed(&self, host: &str, port: u16) -> bool {
        self.allow_outbound
            .iter()
            .any(|entry| match parse_host_port(entry) {
                Some((h, p)) => h.eq_ignore_ascii_case(host) && p.is_none_or(|p| p == port),
                None => false,
            })
    }
}

/// Splits `host[:port]`; `None` when malformed.
pub fn parse_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
        None => (s, None),
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-');
    ok.then_some((host, port))
}

/// One version of a deployed function, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub namespace: Namespace,
    pub name: FunctionName,
    /// Starts at 1 and grows by one with every deploy.
    pub version: u32,
    pub artifact: Digest,
    pub spec: FunctionSpec,
    /// When the function was first created (ms since epoch).
    pub created_at: i64,
    /// When this version was deployed (ms since epoch).
    pub updated_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        FunctionSpec::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_field() {
        let s = FunctionSpec {
            memory_mb: 0,
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("memory_mb"));
        let s = FunctionSpec {
            timeout_ms: 0,
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("timeout_ms"));
        let mut s = FunctionSpec::default();
        s.env.insert("1BAD".into(), "x".into());
        assert!(s.validate().unwrap_err().to_string().contains("1BAD"));
    }

    #[test]
    fn outbound_matching() {
        let s = FunctionSpec {
            allow_outbound: vec!["api.example.com".into(), "127.0.0.1:8081".into()],
            ..Default::default()
        };
        s.validate().unwrap();
        assert!(s.outbound_allowed("api.example.com", 443));
        assert!(s.outbound_allowed("API.example.com", 80));
        assert!(s.outbound_allowed("127.0.0.1", 8081));
        assert!(!s.outbound_allowed("127.0.0.1", 8082));
        assert!(!s.outbound_allowed("evil.example.com", 443));
        assert!(
            FunctionSpec {
                allow_outbound: vec!["x:y".into()],
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn destinations_parse() {
        let s: FunctionSpec =
            serde_json::from_str(r#"{"on_success": "topic:done", "on_failure": "function:oops"}"#)
                .unwrap();
        assert_eq!(s.on_success.unwrap().to_string(), "topic:done");
        assert_eq!(s.on_failure.unwrap().to_string(), "function:oops");
        let e = serde_json::from_str::<FunctionSpec>(r#"{"on_success": "queue:x"}"#).unwrap_err();
        assert!(e.to_string().contains("function:NAME or topic:NAME"), "{e}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = serde_json::from_str::<FunctionSpec>(r#"{"memroy_mb": 3}"#).unwrap_err();
        assert!(e.to_string().contains("memroy_mb"));
    }
}
