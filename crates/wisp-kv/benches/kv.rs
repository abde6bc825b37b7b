//! The key-value store's operations natively, side by side with the
//! baseline of a store that runs one SQLite statement per operation (what
//! a plain SQLite-backed key-value store does: a `SELECT` per get, an
//! autocommitted upsert per set; same file settings as Wisp's kv.db).
//! `cargo bench -p wisp-kv --bench kv [-- OUT.json]`. `bench/kv.py` adds
//! the same operations timed inside a function.

use bytes::Bytes;
use rusqlite::{Connection, params};
use std::sync::Arc;
use std::time::Instant;
use wisp_core::Namespace;
use wisp_kv::Kv;

const GETS: usize = 200_000;
const SETS: usize = 20_000;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((p / 100.0 * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

fn row(mut v: Vec<u64>) -> serde_json::Value {
    v.sort_unstable();
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
    serde_json::json!({
        "p50_ns": percentile(&v, 50.0),
        "p99_ns": percentile(&v, 99.0),
        "mean_ns": mean.round(),
        "n": v.len(),
    })
}

fn timed(n: usize, mut f: impl FnMut(usize)) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let s = Instant::now();
            f(i);
            s.elapsed().as_nanos() as u64
        })
        .collect()
}

fn main() {
    let out_path = std::env::args().skip(1).find(|a| a.ends_with(".json"));
    let dir = std::env::temp_dir().join(format!("wisp-kv-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let value = vec![b'v'; 64];

    // Baseline: one SQLite statement per operation.
    let conn = Connection::open(dir.join("baseline.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.execute_batch(
        "CREATE TABLE kv (namespace TEXT NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL,
         value BLOB NOT NULL, PRIMARY KEY (namespace, bucket, key)) WITHOUT ROWID;",
    )
    .unwrap();
    let upsert = "INSERT INTO kv (namespace, bucket, key, value) VALUES ('default', 'b', ?1, ?2)
                  ON CONFLICT (namespace, bucket, key) DO UPDATE SET value = excluded.value";
    let select = "SELECT value FROM kv WHERE namespace = 'default' AND bucket = 'b' AND key = ?1";
    conn.execute(upsert, params!["bench", value]).unwrap();
    let sqlite_get = timed(GETS, |_| {
        let v: Vec<u8> = conn
            .prepare_cached(select)
            .unwrap()
            .query_row(params!["bench"], |r| r.get(0))
            .unwrap();
        std::hint::black_box(v);
    });
    let sqlite_set = timed(SETS, |i| {
        conn.prepare_cached(upsert)
            .unwrap()
            .execute(params![format!("bench-{}", i % 100), value])
            .unwrap();
    });

    // Wisp's store: memory for reads, group-committed writes to kv.db.
    let store = Arc::new(wisp_store::SqliteKv::open(&dir.join("kv.db")).unwrap());
    let kv = Kv::open(store).unwrap();
    let ns = Namespace::new("default").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let v = Bytes::from(value.clone());
    rt.block_on(kv.set(&ns, "b", "bench", v.clone(), None))
        .unwrap();
    let wisp_get = timed(GETS, |_| {
        std::hint::black_box(kv.get(&ns, "b", "bench").unwrap());
    });
    let wisp_set = timed(SETS, |i| {
        rt.block_on(kv.set(&ns, "b", &format!("bench-{}", i % 100), v.clone(), None))
            .unwrap();
    });

    let result = serde_json::json!({
        "value_bytes": value.len(),
        "baseline_sqlite_per_op": {"get": row(sqlite_get), "set": row(sqlite_set)},
        "wisp_kv_native": {"get": row(wisp_get), "set": row(wisp_set)},
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    if let Some(p) = out_path {
        std::fs::write(p, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
