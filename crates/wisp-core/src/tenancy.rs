//! Tenants and who may do what: namespaces, scoped tokens with roles, API
//! keys for routes, rate limits and quotas, and the audit log.

use crate::ids::Namespace;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a management token may do within its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only: list and show everything in the namespace.
    Reader,
    /// Invoke functions (sync and async) and publish events; nothing else.
    Invoker,
    /// Everything a reader and an invoker may, plus deploy, update and
    /// delete functions, routes, triggers and topics, and replay dead letters.
    Deployer,
    /// Everything in the namespace, including tokens, API keys, secrets and
    /// the audit log.
    Admin,
}

impl Role {
    /// Every role, most powerful first (as the CLI lists them).
    pub const ALL: [Role; 4] = [Self::Admin, Self::Deployer, Self::Invoker, Self::Reader];

    /// Their names, in the order of [`Role::ALL`].
    pub const NAMES: [&'static str; 4] = ["admin", "deployer", "invoker", "reader"];

    pub fn parse(s: &str) -> Result<Self, TenancyError> {
        match s {
            "admin" => Ok(Self::Admin),
            "deployer" => Ok(Self::Deployer),
            "invoker" => Ok(Self::Invoker),
            "reader" => Ok(Self::Reader),
            _ => Err(TenancyError::Invalid(format!(
                "role {s:?} is not one of admin, deployer, invoker, reader"
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Deployer => "deployer",
            Self::Invoker => "invoker",
            Self::Reader => "reader",
        }
    }
    /// Whether this role includes the permission `needed`.
    pub fn allows(self, needed: Permission) -> bool {
        match needed {
            Permission::Read => matches!(self, Self::Reader | Self::Deployer | Self::Admin),
            Permission::Invoke => matches!(self, Self::Invoker | Self::Deployer | Self::Admin),
            Permission::Deploy => matches!(self, Self::Deployer | Self::Admin),
            Permission::Admin => self == Self::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one management request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Invoke,
    Deploy,
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Invoke => "invoke",
            Self::Deploy => "deploy",
            Self::Admin => "admin",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenancyError {
    #[error("{0}")]
    Invalid(String),
}

/// Limits the node's admin sets on a namespace (`wisp ns create/set
/// --max-concurrency/--max-instances`); `None` takes the node's default for
/// namespaces (`wisp serve --ns-max-concurrency/--ns-max-instances`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceLimits {
    /// The highest `--concurrency` a function of the namespace may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Instances the namespace's functions may run at once, together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
}

impl NamespaceLimits {
    /// Refuses limits that would allow nothing.
    pub fn validate(&self) -> Result<(), TenancyError> {
        for (name, v) in [
            ("max_concurrency", self.max_concurrency),
            ("max_instances", self.max_instances),
        ] {
            if v == Some(0) {
                return Err(TenancyError::Invalid(format!(
                    "{name} of 0 would refuse every invocation: use at least 1"
                )));
            }
        }
        Ok(())
    }
}

/// A management token: stored as the SHA-256 of its secret, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public id (hex), also the token's prefix: `wisp_<id>_<secret>`.
    pub id: String,
    pub namespace: Namespace,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub created_ms: i64,
    /// SHA-256 (hex) of the whole token; never the token itself.
    #[serde(skip_serializing)]
    pub hash: String,
}

/// `N/s`, `N/m`, `N/h`: a steady rate with a small burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rate {
    pub count: u32,
    pub per_ms: u64,
}

fn unit_ms(unit: &str) -> Option<u64> {
    Some(match unit {
        "s" | "sec" | "second" => 1_000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hour" => 3_600_000,
        "d" | "day" => 86_400_000,
        _ => return None,
    })
}

fn unit_name(ms: u64) -> &'static str {
    match ms {
        1_000 => "s",
        60_000 => "m",
        3_600_000 => "h",
        _ => "day",
    }
}

impl Rate {
    pub fn parse(s: &str) -> Result<Self, TenancyError> {
        let bad = || {
            TenancyError::Invalid(format!(
                "rate {s:?} is not COUNT/UNIT with a unit of s, m or h (e.g. 50/s)"
            ))
        };
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let per_ms = unit_ms(unit.trim())
            .filter(|ms| *ms <= 3_600_000)
            .ok_or_else(bad)?;
        if count == 0 {
            return Err(TenancyError::Invalid(format!(
                "rate {s:?} allows nothing: use a count of at least 1"
            )));
        }
        Ok(Self { count, per_ms })
    }
    /// Requests that may arrive at once after a quiet spell: a tenth of the
    /// count per period, so that a client sending faster than the rate gets
    /// the rate, not the rate plus a large first burst — but at least 2, so
    /// that a client sending at the rate is not refused for arriving a
    /// moment early (network jitter).
    pub fn burst(&self) -> u32 {
        self.count.div_ceil(10).max(2)
    }
}

impl TryFrom<String> for Rate {
    type Error = TenancyError;
    fn try_from(s: String) -> Result<Self, TenancyError> {
        Self::parse(&s)
    }
}
impl From<Rate> for String {
    fn from(r: Rate) -> String {
        r.to_string()
    }
}
impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, unit_name(self.per_ms))
    }
}

/// The period a quota counts over; it resets at the period's start (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    Hour,
    Day,
    Month,
}

/// `N/hour`, `N/day`, `N/month`: requests allowed per calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Quota {
    pub count: u64,
    pub period: QuotaPeriod,
}

impl Quota {
    pub fn parse(s: &str) -> Result<Self, TenancyError> {
        let bad = || {
            TenancyError::Invalid(format!(
                "quota {s:?} is not COUNT/PERIOD with a period of hour, day or month (e.g. 100000/day)"
            ))
        };
        let (n, p) = s.split_once('/').ok_or_else(bad)?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        let period = match p.trim() {
            "h" | "hour" => QuotaPeriod::Hour,
            "d" | "day" => QuotaPeriod::Day,
            "month" => QuotaPeriod::Month,
            _ => return Err(bad()),
        };
        Ok(Self { count, period })
    }

    /// The start and end (ms since epoch, UTC) of the period holding `now_ms`.
    pub fn window(&self, now_ms: i64) -> (i64, i64) {
        const HOUR: i64 = 3_600_000;
        const DAY: i64 = 86_400_000;
        match self.period {
            QuotaPeriod::Hour => {
                let s = now_ms - now_ms.rem_euclid(HOUR);
                (s, s + HOUR)
            }
            QuotaPeriod::Day => {
                let s = now_ms - now_ms.rem_euclid(DAY);
                (s, s + DAY)
            }
            QuotaPeriod::Month => crate::time::month_of(now_ms),
        }
    }
}

impl TryFrom<String> for Quota {
    type Error = TenancyError;
    fn try_from(s: String) -> Result<Self, TenancyError> {
        Self::parse(&s)
    }
}
impl From<Quota> for String {
    fn from(q: Quota) -> String {
        q.to_string()
    }
}
impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.period {
            QuotaPeriod::Hour => "hour",
            QuotaPeriod::Day => "day",
            QuotaPeriod::Month => "month",
        };
        write!(f, "{}/{p}", self.count)
    }
}

/// An API key for routes with `auth = api-key`: stored hashed, shown once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public id (hex), also in the key: `wk_<id>_<secret>`.
    pub id: String,
    pub namespace: Namespace,
    /// Unique within the namespace; shown in usage and the access log.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    pub created_ms: i64,
    /// SHA-256 (hex) of the whole key; never the key itself.
    #[serde(skip_serializing)]
    pub hash: String,
}

/// An AWS-style access key for the Lambda Invoke API (Signature V4). The
/// secret is needed to check signatures, so it is stored encrypted like a
/// secret, not hashed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessKeyRecord {
    /// `WISP` + 16 upper-case letters and digits, like an AWS key id.
    pub id: String,
    pub namespace: Namespace,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub created_ms: i64,
}

/// A key's quota count for one period, kept across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaCount {
    pub period_start_ms: i64,
    pub count: u64,
}

/// One management action, for the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub time_ms: i64,
    pub namespace: Namespace,
    /// Who: `admin` (the node's admin token) or `token:<id>` (name).
    pub actor: String,
    /// What: the method and path, e.g. `PUT /v1/functions/items`.
    pub action: String,
    /// The HTTP status it ended with.
    pub status: u16,
}

/// The name of a secret: like an environment variable name.
pub fn check_secret_name(s: &str) -> Result<(), TenancyError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
    if ok {
        Ok(())
    } else {
        Err(TenancyError::Invalid(format!(
            "secret name {s:?} must be 1-128 letters, digits and '_', not starting with a digit (like an environment variable)"
        )))
    }
}

/// A secret's metadata; the value is never part of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretInfo {
    pub namespace: Namespace,
    pub name: String,
    pub updated_ms: i64,
}

/// The name of an API key (free text within limits).
pub fn check_key_name(s: &str) -> Result<(), TenancyError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    if ok {
        Ok(())
    } else {
        Err(TenancyError::Invalid(format!(
            "name {s:?} must be 1-63 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// One request through a gateway route, for the access log and usage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessEntry {
    pub time_ms: i64,
    pub namespace: Namespace,
    /// The route's label, e.g. `GET /items/{id}`.
    pub route: String,
    pub method: String,
    pub path: String,
    /// The API key's name, when the route needs one and it was valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub function: String,
    pub status: u16,
    /// From the request's arrival to the end of the response body.
    pub latency_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_id: Option<String>,
}

/// Which access-log entries to list.
#[derive(Debug, Clone, Default)]
pub struct AccessFilter {
    pub namespace: Namespace,
    /// The route's path template (or label) to match.
    pub route: Option<String>,
    pub key: Option<String>,
    /// Lowest and highest status, inclusive (`5xx` → 500..=599).
    pub status: Option<(u16, u16)>,
    pub since_ms: i64,
    pub limit: usize,
}

/// How to group gateway usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageBy {
    Route,
    Key,
    Function,
}

/// Gateway traffic of one route, key or function over a period.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct GatewayUsage {
    /// The route label, key name (`-` for none) or function name.
    pub group: String,
    pub requests: u64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    /// 429 answers (rate limit or quota), also counted in `errors_4xx`.
    pub throttled: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub gb_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let r = Rate::parse("50/s").unwrap();
        assert_eq!((r.count, r.per_ms, r.burst()), (50, 1000, 5));
        assert_eq!(r.to_string(), "50/s");
        assert_eq!(Rate::parse("3/m").unwrap().burst(), 2);
        assert!(Rate::parse("0/s").is_err());
        assert!(Rate::parse("5/week").is_err());
        assert!(Rate::parse("fast").is_err());
    }

    #[test]
    fn quota_windows() {
        let q = Quota::parse("100000/day").unwrap();
        let (s, e) = q.window(86_400_000 * 3 + 5);
        assert_eq!((s, e), (86_400_000 * 3, 86_400_000 * 4));
        let m = Quota::parse("5/month").unwrap();
        // 2026-02-10T00:00:00Z
        let (s, e) = m.window(1_770_681_600_000);
        assert_eq!(s, 1_769_904_000_000); // 2026-02-01
        assert_eq!(e, 1_772_323_200_000); // 2026-03-01
        assert!(Quota::parse("5/year").is_err());
    }

    #[test]
    fn roles() {
        assert!(Role::Deployer.allows(Permission::Invoke));
        assert!(!Role::Invoker.allows(Permission::Read));
        assert!(!Role::Reader.allows(Permission::Invoke));
        assert!(!Role::Deployer.allows(Permission::Admin));
        assert!(Role::parse("owner").is_err());
    }
}
