//! Load against a running node's S3 API, with every request signed (AWS
//! Signature V4, payload hash included, as boto3 signs over HTTP), and the
//! disk baseline measured in the same run with `dd`.
//!
//! `cargo bench -p wisp-gateway --bench s3load -- S3_URL KEY_ID SECRET DATA_DIR [OUT.json]`
//! (`bench/s3.py` starts the node and passes these).
//!
//! 1. small objects: 32 concurrent clients PUT 4 KiB objects for 5 s, then
//!    GET them for 5 s: requests per second, p50/p99 latency.
//! 2. large objects: a 256 MiB PUT (streamed from memory) and a GET of it
//!    (streamed to nowhere): MB/s, next to `dd` writing 256 MiB to the
//!    same disk with fsync (`conv=fsync`) and reading it back, the page
//!    cache dropped before each read (when running as root); three
//!    alternating rounds, medians.

use ring::{digest, hmac};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 32;
const SECONDS: u64 = 5;
const SMALL: usize = 4096;
const LARGE: usize = 256 << 20;

struct Signer {
    base: String,
    host: String,
    key: String,
    secret: String,
}

fn hex_sha256(b: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, b))
}

fn hmac_sign(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn amz_date() -> (String, String) {
    let now = wisp_core::time::now_ms();
    (
        wisp_core::time::format_utc(now, "%Y%m%dT%H%M%SZ"),
        wisp_core::time::format_utc(now, "%Y%m%d"),
    )
}

impl Signer {
    /// A signed request for `path` (already URL-safe) with `body`'s hash.
    fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        payload_hash: &str,
    ) -> reqwest::RequestBuilder {
        let (stamp, date) = amz_date();
        let canonical = format!(
            "{method}\n{path}\n\nhost:{}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{stamp}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload_hash}",
            self.host
        );
        let scope = format!("{date}/us-east-1/s3/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex_sha256(canonical.as_bytes())
        );
        let k = hmac_sign(format!("AWS4{}", self.secret).as_bytes(), date.as_bytes());
        let k = hmac_sign(&k, b"us-east-1");
        let k = hmac_sign(&k, b"s3");
        let k = hmac_sign(&k, b"aws4_request");
        let sig = hex::encode(hmac_sign(&k, to_sign.as_bytes()));
        client
            .request(method, format!("{}{path}", self.base))
            .header("x-amz-date", stamp)
            .header("x-amz-content-sha256", payload_hash)
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={sig}",
                    self.key
                ),
            )
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((p / 100.0 * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

/// Runs `CONCURRENCY` workers for `SECONDS`; each calls `op(worker, i)`.
async fn load<F, Fut>(op: F) -> serde_json::Value
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let (op, stop) = (op.clone(), stop.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut failed = 0u64;
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if op(w, i).await {
                        lat.push(t.elapsed().as_micros() as u64);
                    } else {
                        failed += 1;
                    }
                    i += 1;
                }
                (lat, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.unwrap();
        all.extend(l);
        failed += f;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    serde_json::json!({
        "requests_per_s": (all.len() as f64 / secs).round(),
        "ok": all.len(),
        "failed": failed,
        "p50_ms": percentile(&all, 50.0) as f64 / 1000.0,
        "p99_ms": percentile(&all, 99.0) as f64 / 1000.0,
        "concurrency": CONCURRENCY,
        "seconds": SECONDS,
    })
}

/// `dd`'s own MB/s figure (it prints "…, 1.2 GB/s").
fn dd(args: &[&str]) -> f64 {
    let o = std::process::Command::new("dd")
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr).to_string();
    let last = text.lines().last().unwrap_or("");
    let rate = last.rsplit(", ").next().unwrap_or("");
    let mut parts = rate.split_whitespace();
    let n: f64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    match parts.next() {
        Some("GB/s") => n * 1000.0,
        Some("kB/s") => n / 1000.0,
        _ => n,
    }
}

/// Empties the page cache (root only), so reads come from the disk.
fn drop_caches() -> bool {
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.is_empty() {
        // `cargo test --all-targets` runs benchmarks once without
        // arguments: this one needs a node, which bench/s3.py starts.
        println!("s3load: run it through bench/s3.py (which starts a node); nothing to do here");
        return;
    }
    let [url, key, secret, data_dir, rest @ ..] = args.as_slice() else {
        eprintln!("usage: s3load S3_URL KEY_ID SECRET DATA_DIR [OUT.json]");
        std::process::exit(2);
    };
    let out_path = rest.iter().find(|a| a.ends_with(".json")).cloned();
    let signer = Arc::new(Signer {
        base: url.trim_end_matches('/').to_string(),
        host: url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string(),
        key: key.clone(),
        secret: secret.clone(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENCY)
            .build()
            .unwrap();
        let empty = hex_sha256(b"");
        let r = signer
            .request(&client, reqwest::Method::PUT, "/bench", &empty)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success() || r.status() == 409, "create bucket: {}", r.status());

        // Small objects.
        let body = bytes::Bytes::from(vec![b's'; SMALL]);
        let body_hash = hex_sha256(&body);
        let (s, c) = (signer.clone(), client.clone());
        let puts = load(move |w, i| {
            let rb = s
                .request(&c, reqwest::Method::PUT, &format!("/bench/small/{w}/{i}"), &body_hash)
                .body(body.clone());
            async move { rb.send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        let (s, c) = (signer.clone(), client.clone());
        let empty2 = empty.clone();
        let gets = load(move |w, i| {
            let rb = s.request(
                &c,
                reqwest::Method::GET,
                &format!("/bench/small/{w}/{}", i % 200),
                &empty2,
            );
            async move {
                match rb.send().await {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.is_ok_and(|b| b.len() == SMALL)
                    }
                    _ => false,
                }
            }
        })
        .await;

        // Large objects, next to dd on the same disk, alternating: dd
        // write, PUT, then (page cache dropped before each read) dd read
        // and GET; three rounds.
        let big = bytes::Bytes::from(vec![b'L'; LARGE]);
        let big_hash = hex_sha256(&big);
        let dd_file = format!("{data_dir}/dd-baseline.bin");
        let mb = LARGE as f64 / 1e6;
        let mut rounds = Vec::new();
        for round in 0..3 {
            let dd_write = dd(&[
                "if=/dev/zero",
                &format!("of={dd_file}"),
                "bs=8M",
                "count=32",
                "conv=fsync",
            ]);
            let key = format!("/bench/large-{round}.bin");
            let t = Instant::now();
            let r = signer
                .request(&client, reqwest::Method::PUT, &key, &big_hash)
                .body(big.clone())
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "large PUT: {}", r.status());
            let put = mb / t.elapsed().as_secs_f64();
            let dropped = drop_caches();
            let dd_read = dd(&[&format!("if={dd_file}"), "of=/dev/null", "bs=8M"]);
            drop_caches();
            let t = Instant::now();
            let mut r = signer
                .request(&client, reqwest::Method::GET, &key, &empty)
                .send()
                .await
                .unwrap();
            let mut got = 0;
            while let Some(chunk) = r.chunk().await.unwrap() {
                got += chunk.len();
            }
            assert_eq!(got, LARGE);
            let get = mb / t.elapsed().as_secs_f64();
            let _ = std::fs::remove_file(&dd_file);
            rounds.push(serde_json::json!({
                "dd_write_fsync_mb_s": dd_write.round(), "put_mb_s": put.round(),
                "dd_read_mb_s": dd_read.round(), "get_mb_s": get.round(),
                "page_cache_dropped": dropped,
            }));
        }
        let median = |k: &str| {
            let mut v: Vec<f64> = rounds.iter().map(|r| r[k].as_f64().unwrap_or(0.0)).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        // Each round's own ratio: a round's dd and request ran back to back.
        let paired = |a: &str, b: &str| {
            let mut v: Vec<f64> = rounds
                .iter()
                .map(|r| r[a].as_f64().unwrap_or(0.0) / r[b].as_f64().unwrap_or(1.0))
                .collect();
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2] * 100.0).round() / 100.0
        };
        let large = serde_json::json!({
            "put_vs_dd_paired": paired("put_mb_s", "dd_write_fsync_mb_s"),
            "get_vs_dd_paired": paired("get_mb_s", "dd_read_mb_s"),
            "rounds": rounds,
            "median_put_mb_s": median("put_mb_s"),
            "median_dd_write_fsync_mb_s": median("dd_write_fsync_mb_s"),
            "median_get_mb_s": median("get_mb_s"),
            "median_dd_read_mb_s": median("dd_read_mb_s"),
            "put_vs_dd": (median("put_mb_s") / median("dd_write_fsync_mb_s") * 100.0).round() / 100.0,
            "get_vs_dd": (median("get_mb_s") / median("dd_read_mb_s") * 100.0).round() / 100.0,
        });
        (puts, gets, large)
    });
    let (puts, gets, large) = result;
    let result = serde_json::json!({
        "small_4k_put": puts,
        "small_4k_get": gets,
        "large_256mib": large,
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    if let Some(p) = out_path {
        std::fs::write(p, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    }
}
