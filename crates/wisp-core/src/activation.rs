//! The record of one invocation and the outcome vocabulary.

use crate::ids::{ActivationId, DeliveryId, Digest, FunctionName, Namespace};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Marks a response an executor made itself because the function did not
/// answer (it trapped, timed out, hit its memory limit or returned without
/// a response). The engine replaces such a body with an error naming the
/// activation, so a caller never sees the function's internal error text
/// or a backtrace: those stay in the activation's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostAnswered(pub Outcome);

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The function answered with a status below 500.
    Success,
    /// The function answered 5xx, trapped, or could not be started.
    Error,
    /// The deadline passed before the function finished.
    Timeout,
    /// The function tried to grow its memory past its limit.
    MemoryLimit,
    /// Refused because the function was at its concurrency limit.
    Throttled,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Success,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::MemoryLimit,
        Outcome::Throttled,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::Throttled => "throttled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The record of one invocation: who ran, how it ended, what it cost, what
/// it printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    pub id: ActivationId,
    pub namespace: Namespace,
    pub function: FunctionName,
    pub version: u32,
    pub artifact: Digest,
    /// What caused it: `http`, `api`, …
    pub trigger: String,
    /// Start time, ms since the Unix epoch.
    pub start_ms: i64,
    /// Wall time from admission to the end of the function, in microseconds.
    pub duration_us: u64,
    /// Billed duration: the run time rounded up to whole milliseconds.
    pub billed_ms: u64,
    pub memory_mb: u32,
    /// memory_mb / 1024 × billed seconds.
    pub gb_seconds: f64,
    pub outcome: Outcome,
    /// Whether the function had to be loaded for this invocation.
    pub cold: bool,
    /// HTTP status the caller got.
    pub status: u16,
    /// Captured stdout and stderr, interleaved, bounded.
    pub logs: String,
    pub logs_truncated: bool,
    /// What went wrong, for outcomes other than success.
    pub error: Option<String>,
    /// For queued invocations: which delivery, event and attempt this was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventRef>,
}

/// Links an activation to the queued delivery it ran for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    pub delivery_id: DeliveryId,
    /// The CloudEvent id (`ce-id`).
    pub event_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// Billed milliseconds for a run of `duration_us` microseconds: rounded up to
/// whole milliseconds, at least 1.
pub fn billed_ms(duration_us: u64) -> u64 {
    duration_us.div_ceil(1000).max(1)
}

pub fn gb_seconds(memory_mb: u32, billed_ms: u64) -> f64 {
    memory_mb as f64 / 1024.0 * (billed_ms as f64 / 1000.0)
}

/// Usage of one function over a time window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    pub namespace: Namespace,
    pub function: FunctionName,
    pub invocations: u64,
    pub errors: u64,
    pub throttled: u64,
    pub cold_starts: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub billed_ms: u64,
    pub gb_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_rounds_up() {
        assert_eq!(billed_ms(0), 1);
        assert_eq!(billed_ms(1), 1);
        assert_eq!(billed_ms(1000), 1);
        assert_eq!(billed_ms(1001), 2);
        assert!((gb_seconds(1024, 1000) - 1.0).abs() < 1e-12);
        assert!((gb_seconds(128, 250) - 0.03125).abs() < 1e-12);
    }

    #[test]
    fn outcomes_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(
            serde_json::to_string(&Outcome::MemoryLimit).unwrap(),
            "\"memory_limit\""
        );
    }
}

/// How one run ended, as an executor reports it.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: Outcome,
    /// Status sent to the caller.
    pub status: u16,
    /// From the start of the run (instantiation, or handing the event to a
    /// warm process) to the end of the handler.
    pub run_time: std::time::Duration,
    pub logs: String,
    pub logs_truncated: bool,
    pub error: Option<String>,
}
