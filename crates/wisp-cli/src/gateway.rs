//! Client commands for the gateway: routes, API keys and the access log.

use crate::ClientArgs;
use crate::client::{Client, delete};
use crate::commands::ts;
use crate::tenants::{post, s};
use anyhow::{Context, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

// ---- routes ----

#[derive(clap::Args)]
pub struct RouteArgs {
    #[command(subcommand)]
    command: RouteCommand,
}

#[derive(clap::Args)]
struct RouteAdd {
    /// HTTP method (GET, POST, …) or ANY
    method: String,
    /// Path template: /items/{id} (one segment), /files/{*rest} (the rest)
    path: String,
    /// The function that answers
    #[arg(long)]
    function: String,
    /// Only for requests to this host (a custom domain), e.g. api.shop.example
    #[arg(long)]
    host: Option<String>,
    /// none; api-key (callers send a key from `wisp apikey create` in
    /// x-api-key); or jwt (callers send `Authorization: Bearer <JWT>`,
    /// checked with the --jwt-* keys)
    #[arg(long, default_value = "none", value_parser = ["none", "api-key", "jwt"])]
    auth: String,
    /// With --auth jwt: the required `iss` claim
    #[arg(long, value_name = "ISSUER")]
    jwt_issuer: Option<String>,
    /// With --auth jwt: a value the `aud` claim must hold
    #[arg(long, value_name = "AUDIENCE")]
    jwt_audience: Option<String>,
    /// With --auth jwt: verify HS256 tokens with the value of this secret (`wisp secret set`)
    #[arg(long, value_name = "SECRET")]
    jwt_hs256_secret: Option<String>,
    /// With --auth jwt: verify RS256 tokens with this PEM public key (repeatable)
    #[arg(long, value_name = "FILE")]
    jwt_rs256_key: Vec<std::path::PathBuf>,
    /// With --auth jwt: verify ES256 tokens with this PEM public key (repeatable)
    #[arg(long, value_name = "FILE")]
    jwt_es256_key: Vec<std::path::PathBuf>,
    /// Origins browsers may call from, comma-separated (https://shop.example), or *
    #[arg(long, value_name = "ORIGINS")]
    cors: Option<String>,
    /// Let browsers send cookies/credentials (with --cors listing origins)
    #[arg(long, requires = "cors")]
    cors_credentials: bool,
    /// Requests per second/minute/hour for the whole route, e.g. 50/s
    #[arg(long)]
    rate: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Route requests to a function: `wisp route add GET /items/{id} --function items`
    Add(Box<RouteAdd>),
    /// List routes
    #[command(alias = "list")]
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a route: `wisp route rm GET /items/{id} [--host H]`, or by id
    #[command(alias = "delete")]
    Rm {
        /// Method, or the route's id
        method_or_id: String,
        path: Option<String>,
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn route(a: RouteArgs) -> anyhow::Result<()> {
    match a.command {
        RouteCommand::Add(add) => {
            let RouteAdd {
                method,
                path,
                function,
                host,
                auth,
                jwt_issuer,
                jwt_audience,
                jwt_hs256_secret,
                jwt_rs256_key,
                jwt_es256_key,
                cors,
                cors_credentials,
                rate,
                client,
            } = *add;
            let c = Client::from_args(&client)?;
            let mut keys = Vec::new();
            if let Some(secret) = jwt_hs256_secret {
                keys.push(json!({"alg": "HS256", "secret": secret}));
            }
            for (alg, files) in [("RS256", &jwt_rs256_key), ("ES256", &jwt_es256_key)] {
                for f in files {
                    let pem = std::fs::read_to_string(f)
                        .with_context(|| format!("reading the {alg} key {}", f.display()))?;
                    keys.push(json!({"alg": alg, "pem": pem}));
                }
            }
            let jwt = if auth == "jwt" {
                Some(json!({"issuer": jwt_issuer, "audience": jwt_audience, "keys": keys}))
            } else if !keys.is_empty() || jwt_issuer.is_some() || jwt_audience.is_some() {
                bail!("--jwt-* options need --auth jwt");
            } else {
                None
            };
            let cors = cors.map(|o| {
                json!({
                    "origins": o.split(',').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>(),
                    "credentials": cors_credentials,
                })
            });
            let body = json!({
                "method": method,
                "path": path,
                "host": host,
                "function": function,
                "auth": auth,
                "jwt": jwt,
                "cors": cors,
                "rate": rate,
            });
            let v = post(&c, "/v1/routes", body).await?;
            println!(
                "added route {} {}{} -> {} (id {})",
                v["method"].as_str().unwrap_or("ANY"),
                v["host"].as_str().unwrap_or(""),
                s(&v["path"]),
                s(&v["function"]),
                s(&v["id"])
            );
        }
        RouteCommand::Ls { json, client } => {
            let c = Client::from_args(&client)?;
            let v = c.get_json("/v1/routes").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "{:<17} {:<7} {:<20} {:<28} {:<16} {:<8} {:<8} CORS",
                "ID", "METHOD", "HOST", "PATH", "FUNCTION", "AUTH", "RATE"
            );
            for r in v.as_array().cloned().unwrap_or_default() {
                let cors = r["cors"]["origins"]
                    .as_array()
                    .map(|o| {
                        o.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<17} {:<7} {:<20} {:<28} {:<16} {:<8} {:<8} {}",
                    s(&r["id"]),
                    r["method"].as_str().unwrap_or("ANY"),
                    r["host"].as_str().unwrap_or("*"),
                    s(&r["path"]),
                    s(&r["function"]),
                    s(&r["auth"]),
                    r["rate"].as_str().unwrap_or("-"),
                    cors
                );
            }
        }
        RouteCommand::Rm {
            method_or_id,
            path,
            host,
            client,
        } => {
            let c = Client::from_args(&client)?;
            let id = match path {
                None => method_or_id,
                Some(path) => {
                    let method = method_or_id.to_ascii_uppercase();
                    let v = c.get_json("/v1/routes").await?;
                    let found = v
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .find(|r| {
                            r["method"].as_str().unwrap_or("ANY") == method
                                && r["path"].as_str() == Some(path.as_str())
                                && r["host"].as_str() == host.as_deref()
                        });
                    match found {
                        Some(r) => s(&r["id"]).to_string(),
                        None => bail!(
                            "no route {method} {}{path} in this namespace (wisp route ls lists routes)",
                            host.as_deref().unwrap_or("")
                        ),
                    }
                }
            };
            c.send(c.request(Method::DELETE, &format!("/v1/routes/{id}")))
                .await?;
            println!("deleted route {id}");
        }
    }
    Ok(())
}

// ---- API keys ----

#[derive(clap::Args)]
pub struct ApiKeyArgs {
    #[command(subcommand)]
    command: ApiKeyCommand,
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create a key; it is printed once (store it now)
    Create {
        /// Name shown in usage and the access log (unique in the namespace)
        #[arg(long)]
        name: String,
        /// Requests per second/minute/hour for this key, e.g. 100/s
        #[arg(long)]
        rate: Option<String>,
        /// Requests per hour, day or month (UTC), e.g. 100000/day
        #[arg(long)]
        quota: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List keys with their limits and quota use (never the keys)
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a key by name: requests with it get 403 at once
    #[command(alias = "rm", alias = "delete")]
    Revoke {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn apikey(a: ApiKeyArgs) -> anyhow::Result<()> {
    match a.command {
        ApiKeyCommand::Create {
            name,
            rate,
            quota,
            client,
        } => {
            let c = Client::from_args(&client)?;
            let v = post(
                &c,
                "/v1/apikeys",
                json!({"name": name, "rate": rate, "quota": quota}),
            )
            .await?;
            println!("{}", s(&v["key"]));
            eprintln!(
                "created API key {name:?} in namespace {}; it is shown only now (callers send it as x-api-key)",
                s(&v["namespace"])
            );
        }
        ApiKeyCommand::Ls { client } => {
            let c = Client::from_args(&client)?;
            let v = c.get_json("/v1/apikeys").await?;
            println!(
                "{:<24} {:<10} {:<16} {:>10} CREATED",
                "NAME", "RATE", "QUOTA", "USED"
            );
            for k in v.as_array().cloned().unwrap_or_default() {
                println!(
                    "{:<24} {:<10} {:<16} {:>10} {}",
                    s(&k["name"]),
                    k["rate"].as_str().unwrap_or("-"),
                    k["quota"].as_str().unwrap_or("-"),
                    k["quota_used"]
                        .as_u64()
                        .map(|u| u.to_string())
                        .unwrap_or_else(|| "-".into()),
                    ts(k["created_ms"].as_i64().unwrap_or(0))
                );
            }
        }
        ApiKeyCommand::Revoke { name, client } => {
            delete(&client, &format!("/v1/apikeys/{name}")).await?;
            println!("revoked API key {name}");
        }
    }
    Ok(())
}

// ---- access log ----

#[derive(clap::Args)]
pub struct AccessLogArgs {
    /// Only this route: its path template (/items/{id}) or label (GET /items/{id})
    #[arg(long)]
    route: Option<String>,
    /// Only requests with this API key (by name)
    #[arg(long)]
    key: Option<String>,
    /// Only this status (404) or class (4xx, 5xx)
    #[arg(long)]
    status: Option<String>,
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

pub async fn access_log(a: AccessLogArgs) -> anyhow::Result<()> {
    let c = Client::from_args(&a.client)?;
    let mut q: Vec<(&str, String)> = vec![("limit", a.limit.to_string())];
    for (k, v) in [
        ("route", &a.route),
        ("key", &a.key),
        ("status", &a.status),
        ("since", &a.since),
    ] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    let v: Value = c
        .send(c.request(Method::GET, "/v1/access-log").query(&q))
        .await?
        .json()
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<28} {:<28} {:<14} {:>6} {:>10} ACTIVATION",
        "TIME", "ROUTE", "PATH", "KEY", "STATUS", "LATENCY"
    );
    for e in v.as_array().cloned().unwrap_or_default() {
        println!(
            "{:<24} {:<28} {:<28} {:<14} {:>6} {:>8.2}ms {}",
            ts(e["time_ms"].as_i64().unwrap_or(0)),
            s(&e["route"]),
            s(&e["path"]),
            e["key"].as_str().unwrap_or("-"),
            e["status"].to_string(),
            e["latency_us"].as_f64().unwrap_or(0.0) / 1000.0,
            e["activation_id"].as_str().unwrap_or("-"),
        );
    }
    Ok(())
}
