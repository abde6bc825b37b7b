//! Trigger logic that does not depend on the engine: cron schedules
//! (six fields, seconds first, in an IANA time zone) and the CloudEvents a
//! cron tick delivers. The engine runs one task per cron trigger and sends
//! each tick through the durable queue.

pub mod cron;

pub use cron::{CronError, CronSchedule};
