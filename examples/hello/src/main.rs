//! The smallest useful Wisp function: answers every request with a greeting.
//! Set `GREETING` at deploy time (`--env GREETING=hi`) to change it.

use wstd::http::{Body, Error, Request, Response};

#[wstd::http_server]
async fn main(_req: Request<Body>) -> Result<Response<Body>, Error> {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".to_string());
    let body = format!("{greeting}, world!\n");
    Ok(Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        // Without a content-length wstd sends a chunked body.
        .header("content-length", body.len())
        .body(body.into())?)
}
