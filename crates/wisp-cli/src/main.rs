//! The `wisp` binary: `wisp serve` runs a node; every other command is a
//! client of a node's management API. This crate parses flags and wires the
//! library crates together; it holds no business logic.

mod build;
mod client;
mod commands;
mod events;
mod gateway;
mod kv;
mod paths;
mod serve;
mod tenants;

use clap::{Parser, Subcommand};

use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "wisp",
    version,
    about = "Wisp: a self-hosted serverless platform. Deploy WebAssembly functions with one command and run them on demand.",
    long_about = "Wisp runs functions on demand: `wisp serve` starts a node (embedded storage, nothing else to install); \
`wisp deploy NAME PATH` deploys a wasi:http component (or builds a Rust crate for wasm32-wasip2 first); \
the function then answers at http://HOST:PORT/fn/NAME/.\n\n\
Client commands find the local node through the data directory (its URL and admin token), \
or use --url/WISP_URL and --token/WISP_TOKEN.",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the node keeps its state; client commands read the node's URL and
/// admin token from here.
#[derive(clap::Args, Clone, Debug)]
pub struct DataDirArg {
    /// Data directory [default: $XDG_DATA_HOME/wisp, i.e. ~/.local/share/wisp]
    #[arg(long, env = "WISP_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

/// How client commands reach a node.
#[derive(clap::Args, Clone, Debug)]
pub struct ClientArgs {
    /// URL of the node's HTTP listener [default: read from the data dir]
    #[arg(long, env = "WISP_URL", global = true)]
    pub url: Option<String>,
    /// Management API token [default: the admin token in the data dir]
    #[arg(long, env = "WISP_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Namespace (tenant) to act in [default: the token's own namespace, else `default`]
    #[arg(
        long = "ns",
        env = "WISP_NAMESPACE",
        global = true,
        value_name = "NAMESPACE"
    )]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub data: DataDirArg,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Wisp node (HTTP gateway, management API, executor, embedded store)
    Serve(serve::ServeArgs),
    /// Deploy a function from a .wasm component or a Rust crate directory
    Deploy(commands::DeployArgs),
    /// Invoke a function and print its response
    Invoke(commands::InvokeArgs),
    /// List deployed functions
    #[command(alias = "list")]
    Ls(commands::LsArgs),
    /// Delete a function
    #[command(alias = "delete")]
    Rm(commands::RmArgs),
    /// Show the logs of a function's recent invocations
    Logs(commands::LogsArgs),
    /// List recent invocations (activations)
    Activations(commands::ActivationsArgs),
    /// Show one activation with its logs
    Activation(commands::ActivationArgs),
    /// Show per-function usage: invocations, errors, latency, GB-seconds
    Usage(commands::UsageArgs),
    /// Publish events to topics; create, list and delete topics
    Topic(events::TopicArgs),
    /// Add, list and delete triggers (cron schedules, topics, object uploads, key changes)
    Trigger(events::TriggerArgs),
    /// List triggers
    Triggers(events::TriggersArgs),
    /// Dead-letter queue: list and replay events that exhausted their attempts
    Dlq(events::DlqArgs),
    /// Namespaces (tenants): create, list, delete
    Ns(tenants::NsArgs),
    /// Management tokens scoped to a namespace and a role
    Token(tenants::TokenArgs),
    /// Gateway routes: METHOD + path (+ host) → function, with auth, CORS and rate limits
    Route(gateway::RouteArgs),
    /// API keys for routes with --auth api-key (shown once at creation)
    Apikey(gateway::ApiKeyArgs),
    /// Secrets: encrypted at rest, seen by functions deployed with --secret NAME
    Secret(tenants::SecretArgs),
    /// The key-value store: buckets of keys, read and written by functions
    /// deployed with --kv BUCKET (wasi:keyvalue)
    Kv(kv::KvArgs),
    /// AWS-style access keys for the Lambda Invoke API and the S3 API (boto3, the AWS CLI)
    Accesskey(tenants::AccessKeyArgs),
    /// Requests on gateway routes: time, route, key, status, latency, activation
    AccessLog(gateway::AccessLogArgs),
    /// Management actions in a namespace: who did what, when
    Audit(tenants::AuditArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // With a single core available (a small container, or a node pinned to
    // one CPU) one thread does everything: no hand-offs between threads.
    let one_core = std::thread::available_parallelism()
        .map(|n| n.get() == 1)
        .unwrap_or(false);
    let mut builder = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            // On a worker thread, not the main thread: the main thread of a
            // multi-threaded runtime does not run spawned tasks, so serving
            // from it would put a second busy thread on the same cores.
            Command::Serve(a) => match tokio::spawn(serve::run(a)).await {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("the server task failed: {e}")),
            },
            Command::Deploy(a) => commands::deploy(a).await,
            Command::Invoke(a) => commands::invoke(a).await,
            Command::Ls(a) => commands::ls(a).await,
            Command::Rm(a) => commands::rm(a).await,
            Command::Logs(a) => commands::logs(a).await,
            Command::Activations(a) => commands::activations(a).await,
            Command::Activation(a) => commands::activation(a).await,
            Command::Usage(a) => commands::usage(a).await,
            Command::Topic(a) => events::topic(a).await,
            Command::Trigger(a) => events::trigger(a).await,
            Command::Triggers(a) => events::triggers(a).await,
            Command::Dlq(a) => events::dlq(a).await,
            Command::Ns(a) => tenants::ns(a).await,
            Command::Token(a) => tenants::token(a).await,
            Command::Route(a) => gateway::route(a).await,
            Command::Apikey(a) => gateway::apikey(a).await,
            Command::Secret(a) => tenants::secret(a).await,
            Command::Kv(a) => kv::kv(a).await,
            Command::AccessLog(a) => gateway::access_log(a).await,
            Command::Accesskey(a) => tenants::accesskey(a).await,
            Command::Audit(a) => tenants::audit(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
