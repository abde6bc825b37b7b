//! A Rust function written for AWS Lambda with the `lambda_runtime` crate,
//! unchanged: Wisp runs it as a process function from a bundle holding
//! this `bootstrap`.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, ctx) = event.into_parts();
    println!("rust handler got request {}", ctx.request_id);
    if let Some(path) = payload["rawPath"].as_str() {
        // An API Gateway v2 event: answer with a response object.
        return Ok(json!({
            "statusCode": 200,
            "headers": {"x-runtime": "rust"},
            "body": format!("rust saw {path} (deadline in the future: {})", ctx.deadline > 0),
        }));
    }
    Ok(json!({"rust_echo": payload, "function": ctx.env_config.function_name}))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
