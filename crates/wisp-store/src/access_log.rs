//! SQL of the gateway's access log (one row per request on a route) and
//! the usage it sums up, in the registry's SQLite file (its table is in
//! the tenant schema).

use crate::sqlite::{SqliteStore, db, percentile};
use crate::tenants::ns;
use rusqlite::params;
use std::collections::BTreeMap;
use wisp_core::{
    AccessEntry, AccessFilter, AccessLogStore, GatewayUsage, Namespace, StoreError, UsageBy,
};

const ACCESS_COLUMNS: &str = "time_ms, namespace, route, method, path, key_name, function, status, latency_us, bytes_in, bytes_out, activation_id";

fn access_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(AccessEntry, String)> {
    let n: String = r.get(1)?;
    Ok((
        AccessEntry {
            time_ms: r.get(0)?,
            namespace: Namespace::default(),
            route: r.get(2)?,
            method: r.get(3)?,
            path: r.get(4)?,
            key: r.get(5)?,
            function: r.get(6)?,
            status: r.get(7)?,
            latency_us: r.get::<_, i64>(8)? as u64,
            bytes_in: r.get::<_, i64>(9)? as u64,
            bytes_out: r.get::<_, i64>(10)? as u64,
            activation_id: r.get(11)?,
        },
        n,
    ))
}

impl AccessLogStore for SqliteStore {
    fn insert_access(&self, batch: &[AccessEntry]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO access_log ({ACCESS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ))
                .map_err(db)?;
            for a in batch {
                stmt.execute(params![
                    a.time_ms,
                    a.namespace.as_str(),
                    a.route,
                    a.method,
                    a.path,
                    a.key,
                    a.function,
                    a.status,
                    a.latency_us as i64,
                    a.bytes_in as i64,
                    a.bytes_out as i64,
                    a.activation_id
                ])
                .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    fn list_access(&self, f: &AccessFilter) -> Result<Vec<AccessEntry>, StoreError> {
        let (lo, hi) = f.status.unwrap_or((0, 999));
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {ACCESS_COLUMNS} FROM access_log
                 WHERE namespace = ?1 AND time_ms >= ?2 AND status BETWEEN ?3 AND ?4
                   AND (?5 IS NULL OR route = ?5 OR substr(route, instr(route, ' ') + 1) = ?5)
                   AND (?6 IS NULL OR key_name = ?6)
                 ORDER BY time_ms DESC, rowid DESC LIMIT ?7"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map(
                params![
                    f.namespace.as_str(),
                    f.since_ms,
                    lo,
                    hi,
                    f.route,
                    f.key,
                    f.limit as i64
                ],
                access_from_row,
            )
            .map_err(db)?;
        rows.map(|r| {
            let (mut a, n) = r.map_err(db)?;
            a.namespace = ns(n)?;
            Ok(a)
        })
        .collect()
    }

    fn gateway_usage(
        &self,
        n: &Namespace,
        by: UsageBy,
        since_ms: i64,
    ) -> Result<Vec<GatewayUsage>, StoreError> {
        let group = match by {
            UsageBy::Route => "l.route",
            UsageBy::Key => "COALESCE(l.key_name, '-')",
            UsageBy::Function => "l.function",
        };
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {group}, l.status, l.latency_us, l.bytes_in, l.bytes_out, COALESCE(a.gb_seconds, 0)
                 FROM access_log l LEFT JOIN activations a ON a.id = l.activation_id
                 WHERE l.namespace = ?1 AND l.time_ms >= ?2"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map(params![n.as_str(), since_ms], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u16>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, f64>(5)?,
                ))
            })
            .map_err(db)?;
        let mut groups: BTreeMap<String, (GatewayUsage, Vec<u64>)> = BTreeMap::new();
        for r in rows {
            let (g, status, lat, bin, bout, gbs) = r.map_err(db)?;
            let (u, lats) = groups.entry(g.clone()).or_insert_with(|| {
                (
                    GatewayUsage {
                        group: g,
                        ..Default::default()
                    },
                    Vec::new(),
                )
            });
            u.requests += 1;
            match status {
                429 => {
                    u.throttled += 1;
                    u.errors_4xx += 1;
                }
                400..=499 => u.errors_4xx += 1,
                500..=599 => u.errors_5xx += 1,
                _ => {}
            }
            u.bytes_in += bin as u64;
            u.bytes_out += bout as u64;
            u.gb_seconds += gbs;
            lats.push(lat as u64);
        }
        Ok(groups
            .into_values()
            .map(|(mut u, mut lats)| {
                lats.sort_unstable();
                u.p50_ms = percentile(&lats, 50.0);
                u.p95_ms = percentile(&lats, 95.0);
                u.p99_ms = percentile(&lats, 99.0);
                u
            })
            .collect())
    }

    fn prune_access(&self, max_count: u64, min_time_ms: i64) -> Result<u64, StoreError> {
        let conn = self.conn();
        let mut n = conn
            .execute(
                "DELETE FROM access_log WHERE time_ms < ?1",
                params![min_time_ms],
            )
            .map_err(db)? as u64;
        n += conn
            .execute(
                "DELETE FROM access_log WHERE rowid <= (SELECT rowid FROM access_log ORDER BY rowid DESC LIMIT 1 OFFSET ?1)",
                params![max_count as i64],
            )
            .map_err(db)? as u64;
        Ok(n)
    }
}
