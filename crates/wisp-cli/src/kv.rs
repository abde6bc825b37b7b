//! `wisp kv`: the key-value store from the command line.

use crate::ClientArgs;
use crate::client::Client;
use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;
use std::io::Write;

#[derive(clap::Args)]
pub struct KvArgs {
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Subcommand)]
enum KvCommand {
    /// Set a key (the bucket is made if it does not exist)
    Set {
        /// [NAMESPACE/]BUCKET, e.g. prefs or default/prefs
        bucket: String,
        key: String,
        /// The value; `-` reads it from stdin, `@FILE` from a file
        value: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a key's value (as stored: bytes, no newline added)
    Get {
        /// [NAMESPACE/]BUCKET
        bucket: String,
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a bucket's keys, or the buckets when no bucket is given
    #[command(alias = "list")]
    Ls {
        /// [NAMESPACE/]BUCKET
        bucket: Option<String>,
        /// Only keys starting with this
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a key
    #[command(alias = "delete")]
    Rm {
        /// [NAMESPACE/]BUCKET
        bucket: String,
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add to a counter (a decimal integer value; absent counts as 0) and
    /// print the new value
    Incr {
        /// [NAMESPACE/]BUCKET
        bucket: String,
        key: String,
        /// What to add (negative subtracts)
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make an empty bucket
    CreateBucket {
        /// [NAMESPACE/]BUCKET
        bucket: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a bucket and every key in it
    DeleteBucket {
        /// [NAMESPACE/]BUCKET
        bucket: String,
        /// Confirm: the bucket's keys are gone for good
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// A client for `[NS/]BUCKET`, and the bucket's name.
fn target(client: &ClientArgs, bucket: &str) -> anyhow::Result<(Client, String)> {
    let mut args = client.clone();
    let name = match bucket.split_once('/') {
        Some((ns, b)) => {
            args.namespace = Some(ns.to_string());
            b
        }
        None => bucket,
    };
    Ok((Client::from_args(&args)?, name.to_string()))
}

/// Percent-encodes a key for the URL path ('/' stays: keys may hold it).
fn path_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn value(v: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    if v == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the value from stdin")?;
        return Ok(buf);
    }
    if let Some(path) = v.strip_prefix('@') {
        return std::fs::read(path).with_context(|| format!("reading the value from {path}"));
    }
    Ok(v.as_bytes().to_vec())
}

pub async fn kv(a: KvArgs) -> anyhow::Result<()> {
    match a.command {
        KvCommand::Set {
            bucket,
            key,
            value: v,
            client,
        } => {
            let (c, b) = target(&client, &bucket)?;
            let body = value(&v)?;
            let n = body.len();
            c.send(
                c.request(Method::PUT, &format!("/v1/kv/{b}/{}", path_key(&key)))
                    .body(body),
            )
            .await?;
            eprintln!("set {key} in {b} ({n} bytes)");
        }
        KvCommand::Get {
            bucket,
            key,
            client,
        } => {
            let (c, b) = target(&client, &bucket)?;
            let r = c
                .send(c.request(Method::GET, &format!("/v1/kv/{b}/{}", path_key(&key))))
                .await?;
            let bytes = r.bytes().await.context("reading the value")?;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            // A terminal gets a newline after text; pipes get the bytes as stored.
            if std::io::IsTerminal::is_terminal(&out) && !bytes.ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
        }
        KvCommand::Ls {
            bucket: None,
            client,
            ..
        } => {
            let c = Client::from_args(&client)?;
            let v = c.get_json("/v1/kv").await?;
            println!("{:<40} {:>10} {:>12}", "BUCKET", "KEYS", "BYTES");
            for x in v.as_array().cloned().unwrap_or_default() {
                println!(
                    "{:<40} {:>10} {:>12}",
                    x["name"].as_str().unwrap_or(""),
                    x["keys"],
                    x["bytes"]
                );
            }
        }
        KvCommand::Ls {
            bucket: Some(bucket),
            prefix,
            client,
        } => {
            let (c, b) = target(&client, &bucket)?;
            let mut after: Option<String> = None;
            loop {
                let mut rb = c
                    .request(Method::GET, &format!("/v1/kv/{b}"))
                    .query(&[("prefix", prefix.as_str())]);
                if let Some(a) = &after {
                    rb = rb.query(&[("after", a.as_str())]);
                }
                let v: serde_json::Value = c.send(rb).await?.json().await?;
                for k in v["keys"].as_array().cloned().unwrap_or_default() {
                    println!("{}", k.as_str().unwrap_or(""));
                }
                match v["next"].as_str() {
                    Some(n) => after = Some(n.to_string()),
                    None => break,
                }
            }
        }
        KvCommand::Rm {
            bucket,
            key,
            client,
        } => {
            let (c, b) = target(&client, &bucket)?;
            c.send(c.request(Method::DELETE, &format!("/v1/kv/{b}/{}", path_key(&key))))
                .await?;
            eprintln!("deleted {key} from {b}");
        }
        KvCommand::Incr {
            bucket,
            key,
            by,
            client,
        } => {
            let (c, b) = target(&client, &bucket)?;
            let v: serde_json::Value = c
                .send(
                    c.request(Method::POST, &format!("/v1/kv/{b}/{}", path_key(&key)))
                        .json(&json!({"increment": by})),
                )
                .await?
                .json()
                .await?;
            println!("{}", v["value"]);
        }
        KvCommand::CreateBucket { bucket, client } => {
            let (c, b) = target(&client, &bucket)?;
            c.send(c.request(Method::PUT, &format!("/v1/kv/{b}")))
                .await?;
            eprintln!("bucket {b} is ready");
        }
        KvCommand::DeleteBucket {
            bucket,
            yes,
            client,
        } => {
            if !yes {
                anyhow::bail!(
                    "deleting bucket {bucket} removes every key in it: add --yes to confirm"
                );
            }
            let (c, b) = target(&client, &bucket)?;
            c.send(c.request(Method::DELETE, &format!("/v1/kv/{b}")))
                .await?;
            eprintln!("deleted bucket {b}");
        }
    }
    Ok(())
}
