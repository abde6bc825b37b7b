//! Cron schedules: `croner` patterns with a required seconds field,
//! evaluated in an IANA time zone (`chrono-tz`).

use chrono::{DateTime, TimeZone, Utc};
use croner::parser::{CronParser, Seconds};
use wisp_core::event::{CloudEvent, rfc3339_ms, types};
use wisp_core::{DeliveryId, Namespace, TriggerName};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CronError {
    #[error(
        "schedule {expr:?} is invalid: {why} (use six fields, seconds first: \"0 0 3 * * *\" is 03:00:00 every day, \"*/10 * * * * *\" every 10 seconds)"
    )]
    Schedule { expr: String, why: String },
    #[error(
        "time zone {0:?} is not an IANA time zone name (like UTC, Europe/Berlin or America/New_York)"
    )]
    TimeZone(String),
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
    expr: String,
}

impl CronSchedule {
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, CronError> {
        let tz: chrono_tz::Tz = timezone
            .parse()
            .map_err(|_| CronError::TimeZone(timezone.to_string()))?;
        if expr.split_whitespace().count() != 6 {
            return Err(CronError::Schedule {
                expr: expr.to_string(),
                why: format!(
                    "it has {} fields, Wisp schedules have six (seconds first)",
                    expr.split_whitespace().count()
                ),
            });
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .build()
            .parse(expr)
            .map_err(|e| CronError::Schedule {
                expr: expr.to_string(),
                why: e.to_string(),
            })?;
        let s = Self {
            cron,
            tz,
            expr: expr.to_string(),
        };
        // A schedule that never fires (30 February, 31 April, …) is a
        // mistake: refuse it rather than store a trigger that never runs.
        // croner searches up to the year 5000, so the answer is final.
        if s.next_after(wisp_core::time::now_ms()).is_none() {
            return Err(CronError::Schedule {
                expr: expr.to_string(),
                why: "it never fires (no such date: check the day of the month against the month)"
                    .to_string(),
            });
        }
        Ok(s)
    }

    fn at(&self, ms: i64) -> Option<DateTime<chrono_tz::Tz>> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.with_timezone(&self.tz))
    }

    /// The first tick strictly after `ms` (ms since epoch).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let t = self.at(ms)?;
        self.cron
            .find_next_occurrence(&t, false)
            .ok()
            .map(|n| n.timestamp_millis())
    }

    /// The latest tick at or before `ms`.
    pub fn latest_at_or_before(&self, ms: i64) -> Option<i64> {
        let t = self.at(ms)?;
        self.cron
            .find_previous_occurrence(&t, true)
            .ok()
            .map(|n| n.timestamp_millis())
    }

    /// The event a tick delivers: `ce-time` is the scheduled time.
    pub fn tick_event(&self, ns: &Namespace, trigger: &TriggerName, tick_ms: i64) -> CloudEvent {
        let mut ev = CloudEvent::new(
            DeliveryId::generate().to_string(),
            format!("/wisp/{ns}/triggers/{trigger}"),
            types::CRON,
        );
        let time = rfc3339_ms(tick_ms);
        ev.time = Some(time.clone());
        ev.subject = Some(trigger.to_string());
        ev.datacontenttype = Some("application/json".into());
        ev.data = serde_json::json!({
            "trigger": trigger.as_str(),
            "schedule": self.expr,
            "timezone": self.tz.name(),
            "scheduled_time": time,
        })
        .to_string()
        .into_bytes()
        .into();
        ev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_second_and_time_zones() {
        let s = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(s.next_after(1_000), Some(2_000));
        assert_eq!(s.next_after(1_500), Some(2_000));
        assert_eq!(s.latest_at_or_before(1_500), Some(1_000));
        assert_eq!(s.latest_at_or_before(2_000), Some(2_000));
        // 03:00 in Berlin on 2026-11-23 is 02:00 UTC (CET, UTC+1).
        let s = CronSchedule::parse("0 0 3 * * *", "Europe/Berlin").unwrap();
        let midnight_utc = 1_795_392_000_000; // 2026-11-23T00:00:00Z
        assert_eq!(
            s.next_after(midnight_utc),
            Some(midnight_utc + 2 * 3600 * 1000)
        );
    }

    #[test]
    fn bad_input_is_named() {
        let e = CronSchedule::parse("0 3 * * *", "UTC").unwrap_err();
        assert!(e.to_string().contains("six fields"), "{e}");
        let e = CronSchedule::parse("0 0 0 1 1 * 2030", "UTC").unwrap_err();
        assert!(e.to_string().contains("has 7 fields"), "{e}");
        let e = CronSchedule::parse("0 0 0 31 2 *", "UTC").unwrap_err();
        assert!(e.to_string().contains("never fires"), "{e}");
        let e = CronSchedule::parse("0 0 25 * * *", "UTC").unwrap_err();
        assert!(matches!(e, CronError::Schedule { .. }), "{e}");
        let e = CronSchedule::parse("* * * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(e, CronError::TimeZone("Mars/Olympus".into()));
    }

    #[test]
    fn tick_events_carry_the_scheduled_time() {
        let s = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        let ev = s.tick_event(
            &Namespace::default(),
            &TriggerName::new("t").unwrap(),
            1_795_392_000_000,
        );
        assert_eq!(ev.time.as_deref(), Some("2026-11-23T00:00:00.000Z"));
        assert_eq!(ev.ty, types::CRON);
        ev.validate().unwrap();
    }
}
