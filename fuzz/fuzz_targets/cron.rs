//! Cron expressions and time zones as `wisp trigger add cron` takes them:
//! parsing never panics, and an accepted schedule's fire times only move
//! forward.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wisp_triggers::CronSchedule;

fuzz_target!(|input: (&str, &str, i64)| {
    let (expr, tz, start) = input;
    let Ok(s) = CronSchedule::parse(expr, tz) else {
        return;
    };
    // Within a few centuries of now, in milliseconds.
    let mut t = start.rem_euclid(10_000_000_000_000);
    for _ in 0..4 {
        match s.next_after(t) {
            Some(n) => {
                assert!(n > t, "next_after({t}) = {n} for {expr:?} in {tz:?}");
                t = n;
            }
            None => break,
        }
    }
    let _ = s.latest_at_or_before(t);
});
