//! A small client of the management API that turns error responses into
//! the server's own message.

use crate::ClientArgs;
use crate::paths::{TOKEN_FILE, URL_FILE, data_dir};
use anyhow::{Context, bail};
use reqwest::{Method, RequestBuilder, Response};

pub struct Client {
    pub url: String,
    token: String,
    namespace: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn from_args(a: &ClientArgs) -> anyhow::Result<Self> {
        let dir = data_dir(a.data.data_dir.as_deref())?;
        let url = match &a.url {
            Some(u) => u.clone(),
            None => std::fs::read_to_string(dir.join(URL_FILE))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "http://127.0.0.1:8080".to_string()),
        };
        let token = match &a.token {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(dir.join(TOKEN_FILE))
                .map(|s| s.trim().to_string())
                .with_context(|| {
                    format!(
                        "no token: pass --token or set WISP_TOKEN, or run on the node's machine (looked for {})",
                        dir.join(TOKEN_FILE).display()
                    )
                })?,
        };
        let http = reqwest::Client::builder()
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            token,
            namespace: a.namespace.clone(),
            http,
        })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self
            .http
            .request(method, format!("{}{}", self.url, path))
            .bearer_auth(&self.token);
        match &self.namespace {
            Some(ns) => rb.header("x-wisp-namespace", ns),
            None => rb,
        }
    }

    /// Sends and fails with the server's error message on a non-2xx status.
    pub async fn send(&self, rb: RequestBuilder) -> anyhow::Result<Response> {
        let resp = rb.send().await.with_context(|| {
            format!(
                "cannot reach the Wisp node at {} (is `wisp serve` running? set --url or WISP_URL)",
                self.url
            )
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        bail!("{msg} (HTTP {})", status.as_u16())
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let resp = self.send(self.request(Method::GET, path)).await?;
        resp.json()
            .await
            .context("reading the node's JSON response")
    }
}

/// `DELETE path` on the node the arguments point at; fails with the node's
/// message.
pub async fn delete(args: &ClientArgs, path: &str) -> anyhow::Result<()> {
    let client = Client::from_args(args)?;
    client.send(client.request(Method::DELETE, path)).await?;
    Ok(())
}
