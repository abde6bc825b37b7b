//! Client commands for tenancy: namespaces (and their domains and
//! limits), tokens, secrets, access keys and the audit log. The gateway's
//! routes, API keys and access log are in `gateway.rs`.

use crate::ClientArgs;
use crate::client::{Client, delete};
use crate::commands::ts;
use anyhow::{Context, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use wisp_core::Role;

/// `--role`: one of the roles, listed in `--help` and checked by clap.
fn role_parser() -> impl clap::builder::TypedValueParser<Value = Role> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Role::NAMES).map(|s| {
        // Only the names of Role::NAMES reach here.
        Role::parse(&s).unwrap_or(Role::Reader)
    })
}

pub(crate) async fn post(client: &Client, path: &str, body: Value) -> anyhow::Result<Value> {
    let resp = client
        .send(client.request(Method::POST, path).json(&body))
        .await?;
    Ok(resp.json().await?)
}

pub(crate) fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

// ---- namespaces ----

#[derive(clap::Args)]
pub struct NsArgs {
    #[command(subcommand)]
    command: NsCommand,
}

#[derive(Subcommand)]
enum NsCommand {
    /// Create a namespace (needs the node's admin token)
    Create {
        name: String,
        /// Allow it routes without --host (they answer on every host no
        /// namespace owns: 127.0.0.1, localhost, …); `default` has this
        #[arg(long)]
        shared_routes: bool,
        #[command(flatten)]
        limits: NsLimitArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change a namespace's limits or shared-routes permission (needs the
    /// node's admin token)
    #[command(alias = "update")]
    Set {
        name: String,
        #[command(flatten)]
        limits: NsLimitArgs,
        /// Allow it routes without --host
        #[arg(long, conflicts_with = "no_shared_routes")]
        shared_routes: bool,
        /// Forbid it new routes without --host (its existing ones stay)
        #[arg(long)]
        no_shared_routes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Hosts (domains) of a namespace: requests on them reach only its routes
    Domain {
        #[command(subcommand)]
        command: DomainCommand,
    },
    /// List namespaces (a scoped token sees its own)
    #[command(alias = "list")]
    Ls {
        /// Show each namespace's limits too
        #[arg(long, short = 'l')]
        long: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a namespace; refused while it holds anything, unless --force
    #[command(alias = "delete")]
    Rm {
        name: String,
        /// Delete everything in it too (functions, routes, keys, tokens,
        /// secrets, triggers, topics, dead letters, KV data, buckets and
        /// objects, activations); cannot be undone
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum DomainCommand {
    /// Assign a host to a namespace (needs the node's admin token)
    Add {
        #[arg(value_name = "NAMESPACE")]
        ns_name: String,
        host: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Take a host from a namespace (refused while its routes use it)
    #[command(alias = "delete")]
    Rm {
        #[arg(value_name = "NAMESPACE")]
        ns_name: String,
        host: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a namespace's hosts
    #[command(alias = "list")]
    Ls {
        #[arg(value_name = "NAMESPACE")]
        ns_name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

async fn domain(cmd: DomainCommand) -> anyhow::Result<()> {
    match cmd {
        DomainCommand::Add {
            ns_name: namespace,
            host,
            client,
        } => {
            let c = Client::from_args(&client)?;
            let v: Value = c
                .send(c.request(
                    Method::PUT,
                    &format!("/v1/namespaces/{namespace}/domains/{host}"),
                ))
                .await?
                .json()
                .await?;
            if v["added"].as_bool() == Some(true) {
                println!(
                    "host {} now belongs to namespace {namespace}",
                    s(&v["host"])
                );
            } else {
                println!(
                    "host {} already belongs to namespace {namespace}",
                    s(&v["host"])
                );
            }
        }
        DomainCommand::Rm {
            ns_name: namespace,
            host,
            client,
        } => {
            delete(
                &client,
                &format!("/v1/namespaces/{namespace}/domains/{host}"),
            )
            .await?;
            println!("host {host} no longer belongs to namespace {namespace}");
        }
        DomainCommand::Ls {
            ns_name: namespace,
            client,
        } => {
            let c = Client::from_args(&client)?;
            let v = c
                .get_json(&format!("/v1/namespaces/{namespace}/domains"))
                .await?;
            for h in v.as_array().cloned().unwrap_or_default() {
                println!("{}", s(&h));
            }
        }
    }
    Ok(())
}

/// Limits the node's admin sets on a namespace (unset: the node's
/// defaults, `wisp serve --ns-max-concurrency/--ns-max-instances`).
#[derive(clap::Args)]
struct NsLimitArgs {
    /// The highest --concurrency a function of the namespace may have
    #[arg(long, value_name = "N")]
    max_concurrency: Option<u32>,
    /// Instances the namespace's functions may run at once, together
    /// (beyond it invocations are throttled with 429)
    #[arg(long, value_name = "N")]
    max_instances: Option<u32>,
}

/// `max_concurrency 200, max_instances 100 (node default)`.
fn limits_line(l: &Value) -> String {
    let one = |k: &str| {
        let dflt = if l[format!("{k}_default")].as_bool() == Some(true) {
            " (node default)"
        } else {
            ""
        };
        format!("{k} {}{dflt}", l[k])
    };
    format!("{}, {}", one("max_concurrency"), one("max_instances"))
}

pub async fn ns(a: NsArgs) -> anyhow::Result<()> {
    match a.command {
        NsCommand::Create {
            name,
            shared_routes,
            limits,
            client,
        } => {
            let c = Client::from_args(&client)?;
            let body = json!({"name": name, "shared_routes": shared_routes, "max_concurrency": limits.max_concurrency, "max_instances": limits.max_instances});
            let v = post(&c, "/v1/namespaces", body).await?;
            if v["created"].as_bool() == Some(true) {
                println!("created namespace {name}: {}", limits_line(&v["limits"]));
            } else {
                println!(
                    "namespace {name} already exists: {}",
                    limits_line(&v["limits"])
                );
            }
        }
        NsCommand::Set {
            name,
            limits,
            shared_routes,
            no_shared_routes,
            client,
        } => {
            let share = shared_routes || no_shared_routes;
            if limits.max_concurrency.is_none() && limits.max_instances.is_none() && !share {
                bail!(
                    "nothing to change: give --max-concurrency, --max-instances, --shared-routes or --no-shared-routes"
                );
            }
            let c = Client::from_args(&client)?;
            let mut body = json!({"max_concurrency": limits.max_concurrency, "max_instances": limits.max_instances});
            if share {
                body["shared_routes"] = json!(shared_routes);
            }
            let resp = c
                .send(
                    c.request(Method::PATCH, &format!("/v1/namespaces/{name}"))
                        .json(&body),
                )
                .await?;
            let v: Value = resp.json().await?;
            println!(
                "namespace {name}: {}, shared routes {}",
                limits_line(&v["limits"]),
                if v["shared_routes"].as_bool() == Some(true) {
                    "allowed"
                } else {
                    "not allowed"
                }
            );
        }
        NsCommand::Domain { command } => domain(command).await?,
        NsCommand::Ls { long, client } => {
            let c = Client::from_args(&client)?;
            let v = c.get_json("/v1/namespaces").await?;
            for n in v.as_array().cloned().unwrap_or_default() {
                if long {
                    println!("{}\t{}", s(&n["name"]), limits_line(&n["limits"]));
                } else {
                    println!("{}", s(&n["name"]));
                }
            }
        }
        NsCommand::Rm {
            name,
            force,
            client,
        } => {
            let q = if force { "?force=true" } else { "" };
            delete(&client, &format!("/v1/namespaces/{name}{q}")).await?;
            println!("deleted namespace {name}");
        }
    }
    Ok(())
}

// ---- tokens ----

#[derive(clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token for a namespace; it is printed once (store it now)
    Create {
        /// admin (everything in the namespace), deployer (functions, routes,
        /// triggers, topics), invoker (invoke and publish only), reader (read-only)
        #[arg(long, value_parser = role_parser())]
        role: Role,
        /// A name to recognise it by in `wisp token ls` and the audit log
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a namespace's tokens (ids and roles; never the tokens)
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a token by id
    #[command(alias = "rm", alias = "delete")]
    Revoke {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn token(a: TokenArgs) -> anyhow::Result<()> {
    match a.command {
        TokenCommand::Create { role, name, client } => {
            let c = Client::from_args(&client)?;
            let v = post(&c, "/v1/tokens", json!({"role": role, "name": name})).await?;
            println!("{}", s(&v["token"]));
            eprintln!(
                "created {role} token {} for namespace {}; it is shown only now (use it with --token or WISP_TOKEN)",
                s(&v["id"]),
                s(&v["namespace"])
            );
        }
        TokenCommand::Ls { client } => {
            let c = Client::from_args(&client)?;
            let v = c.get_json("/v1/tokens").await?;
            println!("{:<14} {:<10} {:<20} CREATED", "ID", "ROLE", "NAME");
            for t in v.as_array().cloned().unwrap_or_default() {
                println!(
                    "{:<14} {:<10} {:<20} {}",
                    s(&t["id"]),
                    s(&t["role"]),
                    t["name"].as_str().unwrap_or("-"),
                    ts(t["created_ms"].as_i64().unwrap_or(0))
                );
            }
        }
        TokenCommand::Revoke { id, client } => {
            delete(&client, &format!("/v1/tokens/{id}")).await?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

// ---- secrets ----

#[derive(clap::Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    command: SecretCommand,
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Set a secret; the value is read from stdin (a prompt on a terminal),
    /// so it stays out of shell history
    Set {
        /// Name, like an environment variable: STRIPE_KEY
        name: String,
        /// Read the value from this file instead of stdin
        #[arg(long, value_name = "FILE")]
        from_file: Option<std::path::PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List secrets (names and update times; values are never shown)
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a secret's metadata (never its value)
    Get {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a secret
    #[command(alias = "delete")]
    Rm {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn read_secret(from_file: Option<&std::path::Path>) -> anyhow::Result<String> {
    use std::io::{IsTerminal, Read};
    let mut value = match from_file {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => {
            if std::io::stdin().is_terminal() {
                eprint!("value (end with Enter): ");
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line
            } else {
                let mut v = String::new();
                std::io::stdin().read_to_string(&mut v)?;
                v
            }
        }
    };
    // One trailing newline is how files and prompts end, not part of the value.
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        bail!(
            "the secret's value is empty: pipe it in (`printf %s VALUE | wisp secret set NAME`) or use --from-file"
        );
    }
    Ok(value)
}

pub async fn secret(a: SecretArgs) -> anyhow::Result<()> {
    match a.command {
        SecretCommand::Set {
            name,
            from_file,
            client,
        } => {
            let value = read_secret(from_file.as_deref())?;
            let c = Client::from_args(&client)?;
            c.send(
                c.request(Method::PUT, &format!("/v1/secrets/{name}"))
                    .json(&json!({"value": value})),
            )
            .await?;
            println!("set secret {name}");
        }
        SecretCommand::Ls { client } => {
            let c = Client::from_args(&client)?;
            let v = c.get_json("/v1/secrets").await?;
            println!("{:<32} UPDATED", "NAME");
            for x in v.as_array().cloned().unwrap_or_default() {
                println!(
                    "{:<32} {}",
                    s(&x["name"]),
                    ts(x["updated_ms"].as_i64().unwrap_or(0))
                );
            }
        }
        SecretCommand::Get { name, client } => {
            let c = Client::from_args(&client)?;
            let v = c.get_json(&format!("/v1/secrets/{name}")).await?;
            println!(
                "{} (namespace {}) updated {}; the value is never shown",
                s(&v["name"]),
                s(&v["namespace"]),
                ts(v["updated_ms"].as_i64().unwrap_or(0))
            );
        }
        SecretCommand::Rm { name, client } => {
            delete(&client, &format!("/v1/secrets/{name}")).await?;
            println!("deleted secret {name}");
        }
    }
    Ok(())
}

// ---- audit log ----

#[derive(clap::Args)]
pub struct AuditArgs {
    /// Only entries newer than this (e.g. 15m, 1h)
    #[arg(long)]
    since: Option<String>,
    /// At most this many, newest first
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn audit(a: AuditArgs) -> anyhow::Result<()> {
    let c = Client::from_args(&a.client)?;
    let mut q: Vec<(&str, String)> = vec![("limit", a.limit.to_string())];
    if let Some(s) = &a.since {
        q.push(("since", s.clone()));
    }
    let v: Value = c
        .send(c.request(Method::GET, "/v1/audit").query(&q))
        .await?
        .json()
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<24} {:<32} {:>6} ACTION", "TIME", "WHO", "STATUS");
    for e in v.as_array().cloned().unwrap_or_default() {
        println!(
            "{:<24} {:<32} {:>6} {}",
            ts(e["time_ms"].as_i64().unwrap_or(0)),
            s(&e["actor"]),
            e["status"].to_string(),
            s(&e["action"]),
        );
    }
    Ok(())
}

// ---- access keys (S3 and the Lambda Invoke API) ----

#[derive(clap::Args)]
pub struct AccessKeyArgs {
    #[command(subcommand)]
    command: AccessKeyCommand,
}

#[derive(Subcommand)]
enum AccessKeyCommand {
    /// Create an AWS-style access key for the Lambda Invoke API (boto3, the
    /// AWS CLI); the secret is printed once
    Create {
        /// What the key may do [default: invoker]
        #[arg(long, default_value = "invoker", value_parser = role_parser())]
        role: Role,
        /// A name to recognise it by
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a namespace's access keys (ids and roles; never the secrets)
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke an access key by id
    #[command(alias = "rm", alias = "delete")]
    Revoke {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn accesskey(a: AccessKeyArgs) -> anyhow::Result<()> {
    match a.command {
        AccessKeyCommand::Create { role, name, client } => {
            let c = Client::from_args(&client)?;
            let v = post(&c, "/v1/accesskeys", json!({"role": role, "name": name})).await?;
            println!("aws_access_key_id = {}", s(&v["id"]));
            println!("aws_secret_access_key = {}", s(&v["secret_access_key"]));
            let lambda = v["endpoints"]["lambda"]
                .as_str()
                .unwrap_or(&c.url)
                .to_string();
            let s3 = match v["endpoints"]["s3"].as_str() {
                Some(u) => format!("--endpoint-url {u} for S3 (aws s3, boto3 \"s3\")"),
                None => "S3 (this node serves no S3 API: --s3-listen off)".to_string(),
            };
            eprintln!(
                "created {role} access key for namespace {}; the secret is shown only now. Use it with an AWS SDK or the AWS CLI: {s3}, --endpoint-url {lambda} for Lambda (aws lambda invoke)",
                s(&v["namespace"]),
            );
        }
        AccessKeyCommand::Ls { client } => {
            let c = Client::from_args(&client)?;
            let v = c.get_json("/v1/accesskeys").await?;
            println!("{:<22} {:<10} {:<20} CREATED", "ID", "ROLE", "NAME");
            for k in v.as_array().cloned().unwrap_or_default() {
                println!(
                    "{:<22} {:<10} {:<20} {}",
                    s(&k["id"]),
                    s(&k["role"]),
                    k["name"].as_str().unwrap_or("-"),
                    ts(k["created_ms"].as_i64().unwrap_or(0))
                );
            }
        }
        AccessKeyCommand::Revoke { id, client } => {
            delete(&client, &format!("/v1/accesskeys/{id}")).await?;
            println!("revoked access key {id}");
        }
    }
    Ok(())
}
