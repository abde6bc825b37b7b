//! Metering and recording a finished run: its outcome, the secrets masked
//! in its logs, its billed time, and its activation record (handed to the
//! recorder, off the request path); and the record of a throttled one.

use crate::engine::{Engine, Entry, RunSummary};
use std::sync::atomic::Ordering;
use std::time::Duration;
use wisp_core::activation::EventRef;
use wisp_core::activation::{billed_ms, gb_seconds};
use wisp_core::time::now_ms;
use wisp_core::{Activation, ActivationId, Outcome, Source};
use wisp_exec_wasm::RunReport;

/// Logs cut at the capture limit may end in the first characters of a
/// secret (the rest fell past the cut, so the whole-value mask missed it):
/// such a tail is masked too. A cut inside a multi-byte character shows as
/// U+FFFD after lossy decoding; it is dropped first.
fn mask_cut_secret(logs: &mut String, secrets: &[String]) {
    let end = logs.trim_end_matches('\u{FFFD}').len();
    logs.truncate(end);
    let longest = secrets
        .iter()
        .filter_map(|v| {
            (1..v.len())
                .rev()
                .filter(|&k| v.is_char_boundary(k))
                .find(|&k| logs.ends_with(&v[..k]))
        })
        .max();
    if let Some(k) = longest {
        logs.truncate(logs.len() - k);
        logs.push_str("***");
    }
}

/// What `finish` needs to know about a run besides its report.
pub(crate) struct Finished {
    pub(crate) id: ActivationId,
    pub(crate) source: Source,
    pub(crate) start_ms: i64,
    pub(crate) cold: bool,
    pub(crate) load_time: Duration,
    pub(crate) event: Option<EventRef>,
    /// Hand the (masked) logs back in the summary too.
    pub(crate) keep_logs: bool,
}

impl Engine {
    /// Meters and records a finished run; returns how it ended.
    pub(crate) fn finish(&self, entry: &Entry, done: Finished, report: RunReport) -> RunSummary {
        let run_time = report.run_time + done.load_time;
        let event = done.event;
        // An event handler signals failure with any non-2xx status.
        let (outcome, error) = if event.is_some() && !(200..300).contains(&report.status) {
            let outcome = match report.outcome {
                Outcome::Success => Outcome::Error,
                other => other,
            };
            let answered = || format!("the function answered HTTP {}", report.status);
            (outcome, report.error.or_else(|| Some(answered())))
        } else {
            (report.outcome, report.error)
        };
        let (mut logs, mut error) = (report.logs, error);
        let secrets = entry
            .secret_values
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for v in secrets.iter().filter(|v| !v.is_empty()) {
            if logs.contains(v.as_str()) {
                logs = logs.replace(v.as_str(), "***");
            }
            error = error.map(|e| e.replace(v.as_str(), "***"));
        }
        if report.logs_truncated {
            mask_cut_secret(&mut logs, &secrets);
        }
        let kept_logs = done.keep_logs.then(|| logs.clone());
        entry.metrics.finished(outcome, run_time, done.cold);
        entry.running.fetch_sub(1, Ordering::AcqRel);
        entry.last_used_ms.store(now_ms(), Ordering::Relaxed);
        let duration_us = run_time.as_micros() as u64;
        let billed = billed_ms(duration_us);
        let spec = &entry.record.spec;
        self.inner.recorder.record(Activation {
            id: done.id,
            namespace: entry.record.namespace.clone(),
            function: entry.record.name.clone(),
            version: entry.record.version,
            artifact: entry.record.artifact.clone(),
            trigger: done.source.as_str().to_string(),
            start_ms: done.start_ms,
            duration_us,
            billed_ms: billed,
            memory_mb: spec.memory_mb,
            gb_seconds: gb_seconds(spec.memory_mb, billed),
            outcome,
            cold: done.cold,
            status: report.status,
            logs,
            logs_truncated: report.logs_truncated,
            error: error.clone(),
            event,
        });
        if self.inner.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
        self.run_ended();
        RunSummary {
            outcome,
            status: report.status,
            error,
            logs: kept_logs,
        }
    }

    pub(crate) fn record_throttle(
        &self,
        entry: &Entry,
        source: &Source,
        start_ms: i64,
        status: u16,
        why: String,
    ) {
        entry
            .metrics
            .count(Outcome::Throttled, Duration::ZERO, false);
        let r = &entry.record;
        self.inner.recorder.record(Activation {
            id: ActivationId::generate(),
            namespace: r.namespace.clone(),
            function: r.name.clone(),
            version: r.version,
            artifact: r.artifact.clone(),
            trigger: source.as_str().to_string(),
            start_ms,
            duration_us: 0,
            billed_ms: 0,
            memory_mb: r.spec.memory_mb,
            gb_seconds: 0.0,
            outcome: Outcome::Throttled,
            cold: false,
            status,
            logs: String::new(),
            logs_truncated: false,
            error: Some(why),
            event: None,
        });
    }
}

#[cfg(test)]
mod mask_tests {
    use super::mask_cut_secret;

    #[test]
    fn a_secret_cut_by_the_log_cap_shows_no_prefix() {
        let secrets = vec!["S3CR3T-value-xyz".to_string(), "other".to_string()];
        let mut logs = "xxxxS3CR3T-val".to_string();
        mask_cut_secret(&mut logs, &secrets);
        assert_eq!(logs, "xxxx***");
        let mut logs = "line ends here\n".to_string();
        mask_cut_secret(&mut logs, &secrets);
        assert_eq!(logs, "line ends here\n");
        // A cut inside a multi-byte character of the secret.
        let secrets = vec!["pässwörd".to_string()];
        let mut logs = "a p\u{FFFD}".to_string();
        mask_cut_secret(&mut logs, &secrets);
        assert_eq!(logs, "a ***");
    }
}
