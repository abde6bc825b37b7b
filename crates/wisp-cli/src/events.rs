//! Client commands for events: topics, triggers, the dead-letter queue and
//! the status of an async invocation.

use crate::ClientArgs;
use crate::client::{Client, delete};
use crate::commands::{guess_content_type, read_data, ts};
use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct TopicArgs {
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Publish an event to a topic; every subscribed function gets its own copy
    Publish {
        /// Topic name
        topic: String,
        /// CloudEvent type, e.g. com.shop.order.created
        #[arg(long = "type")]
        ty: String,
        /// Event data: a string, @FILE, or @- for stdin
        #[arg(long, short)]
        data: Option<String>,
        /// CloudEvent source [default: /wisp-cli]
        #[arg(long, default_value = "/wisp-cli")]
        source: String,
        /// CloudEvent subject
        #[arg(long)]
        subject: Option<String>,
        /// CloudEvent id [default: a new unique id]
        #[arg(long)]
        id: Option<String>,
        /// Content type of the data [default: application/json when it parses as JSON, else text/plain]
        #[arg(long)]
        content_type: Option<String>,
        /// A repeated key within the idempotency window queues nothing new
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create a topic (subscribing a function creates it too)
    Create {
        topic: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List topics and their subscribers
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a topic that has no subscribers
    #[command(alias = "delete")]
    Rm {
        topic: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn topic(a: TopicArgs) -> anyhow::Result<()> {
    match a.command {
        TopicCommand::Publish {
            topic,
            ty,
            data,
            source,
            subject,
            id,
            content_type,
            idempotency_key,
            client,
        } => {
            let client = Client::from_args(&client)?;
            let body = read_data(data.as_deref())?;
            let ct = content_type.unwrap_or_else(|| guess_content_type(&body).to_string());
            let mut rb = client
                .request(Method::POST, &format!("/v1/topics/{topic}/events"))
                .header("ce-specversion", "1.0")
                .header(
                    "ce-id",
                    id.unwrap_or_else(|| wisp_core::DeliveryId::generate().to_string()),
                )
                .header("ce-source", source)
                .header("ce-type", ty)
                .header(
                    "ce-time",
                    wisp_core::time::rfc3339_ms(wisp_core::time::now_ms()),
                )
                .header("content-type", ct)
                .body(body);
            if let Some(s) = subject {
                rb = rb.header("ce-subject", s);
            }
            if let Some(k) = idempotency_key {
                rb = rb.header("idempotency-key", k);
            }
            let v: Value = client.send(rb).await?.json().await?;
            let n = v["deliveries"].as_array().map_or(0, Vec::len);
            println!("{}", v["event_id"].as_str().unwrap_or(""));
            if v["duplicate"].as_bool() == Some(true) {
                eprintln!("duplicate: the idempotency key was seen before; nothing new queued");
            } else {
                eprintln!("queued for {n} subscriber(s)");
            }
        }
        TopicCommand::Create { topic, client } => {
            let client = Client::from_args(&client)?;
            client
                .send(client.request(Method::PUT, &format!("/v1/topics/{topic}")))
                .await?;
            println!("topic {topic} ready");
        }
        TopicCommand::Ls { client } => {
            let client = Client::from_args(&client)?;
            let v = client.get_json("/v1/topics").await?;
            println!("{:<24} SUBSCRIBERS", "TOPIC");
            for t in v.as_array().into_iter().flatten() {
                let subs: Vec<&str> = t["subscribers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!(
                    "{:<24} {}",
                    t["name"].as_str().unwrap_or(""),
                    if subs.is_empty() {
                        "-".to_string()
                    } else {
                        subs.join(", ")
                    }
                );
            }
        }
        TopicCommand::Rm { topic, client } => {
            delete(&client, &format!("/v1/topics/{topic}")).await?;
            println!("deleted topic {topic}");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct TriggerArgs {
    #[command(subcommand)]
    command: TriggerCommand,
}

#[derive(Subcommand)]
enum TriggerCommand {
    /// Add a trigger
    Add {
        #[command(subcommand)]
        kind: AddTrigger,
    },
    /// Delete a trigger
    #[command(alias = "delete")]
    Rm {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List triggers
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum AddTrigger {
    /// Run a function on a cron schedule: six fields, seconds first
    /// ("0 0 3 * * *" is 03:00:00 every day), in an IANA time zone
    Cron {
        /// Trigger name
        name: String,
        /// Function to run
        #[arg(long)]
        function: String,
        /// Six-field cron schedule, seconds first
        #[arg(long)]
        schedule: String,
        /// IANA time zone of the schedule, e.g. Europe/Berlin
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Ticks missed while the node was down: fire once on start-up
        /// (once) or not at all (skip)
        #[arg(long, default_value = "once", value_parser = ["once", "skip"])]
        missed: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a function when objects are created or deleted in a bucket
    Object {
        /// Trigger name
        name: String,
        /// Function to run
        #[arg(long)]
        function: String,
        /// Bucket to watch (it must exist)
        #[arg(long)]
        bucket: String,
        /// Only keys starting with this (e.g. in/)
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only keys ending with this (e.g. .jpg)
        #[arg(long, default_value = "")]
        suffix: String,
        /// Which changes: created, deleted, or both (comma-separated)
        #[arg(long, default_value = "created,deleted", value_delimiter = ',', value_parser = ["created", "deleted"])]
        events: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a function when keys are set or deleted in a key-value bucket
    Kv {
        /// Trigger name
        name: String,
        /// Function to run
        #[arg(long)]
        function: String,
        /// Key-value bucket to watch
        #[arg(long)]
        bucket: String,
        /// Only keys starting with this
        #[arg(long, default_value = "")]
        prefix: String,
        /// Which changes: set, deleted, or both (comma-separated)
        #[arg(long, default_value = "set,deleted", value_delimiter = ',', value_parser = ["set", "deleted"])]
        events: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a function for every event published to a topic
    Topic {
        /// Trigger name
        name: String,
        /// Function to run
        #[arg(long)]
        function: String,
        /// Topic to subscribe to (created when missing)
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(clap::Args)]
pub struct TriggersArgs {
    #[command(subcommand)]
    command: Option<TriggersCommand>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
enum TriggersCommand {
    /// List triggers
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
}

async fn list_triggers(client: &ClientArgs) -> anyhow::Result<()> {
    let client = Client::from_args(client)?;
    let v = client.get_json("/v1/triggers").await?;
    println!(
        "{:<20} {:<6} {:<20} {:<30} NEXT",
        "NAME", "KIND", "FUNCTION", "SOURCE"
    );
    for t in v.as_array().into_iter().flatten() {
        let kind = t["kind"].as_str().unwrap_or("");
        let source = match kind {
            "cron" => format!(
                "{} ({})",
                t["schedule"].as_str().unwrap_or(""),
                t["timezone"].as_str().unwrap_or("")
            ),
            "kv" => format!(
                "kv {} {}* ({})",
                t["bucket"].as_str().unwrap_or(""),
                t["prefix"].as_str().unwrap_or(""),
                t["events"]
                    .as_array()
                    .map(|e| e
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default()
            ),
            "object" => format!(
                "bucket {} {}*{} ({})",
                t["bucket"].as_str().unwrap_or(""),
                t["prefix"].as_str().unwrap_or(""),
                t["suffix"].as_str().unwrap_or(""),
                t["events"]
                    .as_array()
                    .map(|e| e
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default()
            ),
            _ => format!("topic {}", t["topic"].as_str().unwrap_or("")),
        };
        println!(
            "{:<20} {:<6} {:<20} {:<30} {}",
            t["name"].as_str().unwrap_or(""),
            kind,
            t["function"].as_str().unwrap_or(""),
            source,
            t["next_fire"].as_str().unwrap_or("-")
        );
    }
    Ok(())
}

pub async fn triggers(a: TriggersArgs) -> anyhow::Result<()> {
    match a.command {
        Some(TriggersCommand::Ls { client }) => list_triggers(&client).await,
        None => list_triggers(&a.client).await,
    }
}

pub async fn trigger(a: TriggerArgs) -> anyhow::Result<()> {
    match a.command {
        TriggerCommand::Ls { client } => list_triggers(&client).await,
        TriggerCommand::Rm { name, client } => {
            delete(&client, &format!("/v1/triggers/{name}")).await?;
            println!("deleted trigger {name}");
            Ok(())
        }
        TriggerCommand::Add { kind } => {
            let (client, body) = match kind {
                AddTrigger::Cron {
                    name,
                    function,
                    schedule,
                    tz,
                    missed,
                    client,
                } => (
                    client,
                    json!({"name": name, "function": function, "kind": "cron",
                           "schedule": schedule, "timezone": tz, "missed": missed}),
                ),
                AddTrigger::Object {
                    name,
                    function,
                    bucket,
                    prefix,
                    suffix,
                    events,
                    client,
                } => (
                    client,
                    json!({"name": name, "function": function, "kind": "object", "bucket": bucket,
                           "prefix": prefix, "suffix": suffix, "events": events}),
                ),
                AddTrigger::Kv {
                    name,
                    function,
                    bucket,
                    prefix,
                    events,
                    client,
                } => (
                    client,
                    json!({"name": name, "function": function, "kind": "kv", "bucket": bucket,
                           "prefix": prefix, "events": events}),
                ),
                AddTrigger::Topic {
                    name,
                    function,
                    topic,
                    client,
                } => (
                    client,
                    json!({"name": name, "function": function, "kind": "topic", "topic": topic}),
                ),
            };
            let client = Client::from_args(&client)?;
            let v: Value = client
                .send(client.request(Method::POST, "/v1/triggers").json(&body))
                .await?
                .json()
                .await?;
            print!(
                "added {} trigger {} -> {}",
                v["kind"].as_str().unwrap_or(""),
                v["name"].as_str().unwrap_or(""),
                v["function"].as_str().unwrap_or("")
            );
            match v["next_fire"].as_str() {
                Some(n) => println!(" (next: {n})"),
                None => println!(),
            }
            Ok(())
        }
    }
}

#[derive(clap::Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

/// Which dead letters a replay or delete applies to.
#[derive(clap::Args)]
struct DlqSelection {
    /// Delivery ids (from `wisp dlq ls`)
    ids: Vec<String>,
    /// Every dead letter (of --function when given)
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// With --all: only this function's
    #[arg(long, short, requires = "all")]
    function: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters (events that exhausted their attempts), newest first
    #[command(alias = "list")]
    Ls {
        /// Only this function's
        #[arg(long, short)]
        function: Option<String>,
        /// At most this many
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Put dead letters back into the queue with a fresh attempt count
    Replay(DlqSelection),
    /// Delete dead letters for good
    #[command(alias = "delete")]
    Rm(DlqSelection),
}

/// `POST /v1/dlq/{action}` with the given ids, or all (of a function).
async fn dlq_action(action: &str, sel: DlqSelection) -> anyhow::Result<Value> {
    let DlqSelection {
        ids,
        all,
        function,
        client,
    } = sel;
    if ids.is_empty() && !all {
        bail!("give delivery ids to {action} (see `wisp dlq ls`), or --all");
    }
    let client = Client::from_args(&client)?;
    let body = if all {
        json!({"all": true, "function": function})
    } else {
        json!({"ids": ids})
    };
    client
        .send(
            client
                .request(Method::POST, &format!("/v1/dlq/{action}"))
                .json(&body),
        )
        .await?
        .json()
        .await
        .map_err(Into::into)
}

pub async fn dlq(a: DlqArgs) -> anyhow::Result<()> {
    match a.command {
        DlqCommand::Ls {
            function,
            limit,
            json,
            client,
        } => {
            let client = Client::from_args(&client)?;
            let mut path = format!("/v1/dlq?limit={limit}");
            if let Some(f) = function {
                path.push_str(&format!("&function={f}"));
            }
            let v = client.get_json(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "{:<32} {:<16} {:<8} {:<24} LAST ERROR",
                "ID", "FUNCTION", "ATTEMPTS", "FAILED"
            );
            for d in v.as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:<16} {:<8} {:<24} {}",
                    d["id"].as_str().unwrap_or(""),
                    d["function"].as_str().unwrap_or(""),
                    d["attempts"].to_string(),
                    ts(d["failed_ms"].as_i64().unwrap_or(0)),
                    d["last_error"].as_str().unwrap_or("")
                );
            }
        }
        DlqCommand::Replay(sel) => {
            let v = dlq_action("replay", sel).await?;
            let n = v["replayed"].as_array().map_or(0, Vec::len);
            println!("replayed {n} dead letter(s)");
        }
        DlqCommand::Rm(sel) => {
            let v = dlq_action("delete", sel).await?;
            println!("deleted {} dead letter(s)", v["deleted"]);
        }
    }
    Ok(())
}

/// `wisp activation EVENT_ID`: where each delivery of an event stands,
/// with every attempt and the last attempt's logs.
pub async fn show_event(client: &Client, id: &str, as_json: bool) -> anyhow::Result<()> {
    let v = client.get_json(&format!("/v1/events/{id}")).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("event:      {}", v["event_id"].as_str().unwrap_or(""));
    for d in v["deliveries"].as_array().into_iter().flatten() {
        println!();
        println!("delivery:   {}", d["id"].as_str().unwrap_or(""));
        println!("function:   {}", d["function"].as_str().unwrap_or(""));
        println!("status:     {}", d["status"].as_str().unwrap_or(""));
        println!("attempts:   {}", d["attempts"]);
        if let Some(e) = d["last_error"].as_str() {
            println!("last error: {e}");
        }
        let runs = d["activations"].as_array().cloned().unwrap_or_default();
        for a in &runs {
            println!(
                "  attempt {} activation {} {} HTTP {} {:.3} ms at {}",
                a["event"]["attempt"],
                a["id"].as_str().unwrap_or(""),
                a["outcome"].as_str().unwrap_or(""),
                a["status"],
                a["duration_us"].as_u64().unwrap_or(0) as f64 / 1000.0,
                ts(a["start_ms"].as_i64().unwrap_or(0))
            );
        }
        if let Some(last) = runs.last() {
            println!("logs of the last attempt:");
            print!("{}", last["logs"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}
