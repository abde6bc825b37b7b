//! Wall-clock helpers: Wisp stores times as milliseconds since the Unix
//! epoch. Every calendar computation and date format in the workspace
//! goes through `chrono` (here, and the cron schedules of
//! `wisp-triggers`); `humantime` is used only for durations (`30s`,
//! `7d`).

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn utc(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// RFC 3339 in UTC with milliseconds (`2026-11-18T11:06:40.123Z`), as
/// CloudEvents' `time` and the CLI show times.
pub fn rfc3339_ms(ms: i64) -> String {
    utc(ms.max(0)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The UTC calendar month holding `ms`: its first and the next month's
/// first millisecond.
pub fn month_of(ms: i64) -> (i64, i64) {
    let d = utc(ms).date_naive();
    let first = NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap_or_default();
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(first);
    let at = |d: NaiveDate| {
        d.and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis()
    };
    (at(first), at(next))
}

/// A UTC date and time (`year`, `month`, `day`, `hour`, `minute`,
/// `second`) as seconds since the epoch; none when it is no such time.
pub fn utc_seconds(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    NaiveDate::from_ymd_opt(y, mo, d)?
        .and_hms_opt(h, mi, s)
        .map(|t| t.and_utc().timestamp())
}

/// Parses `s` in `format` (chrono's `strftime` syntax) as a UTC time;
/// seconds since the epoch.
pub fn parse_utc(s: &str, format: &str) -> Option<i64> {
    NaiveDateTime::parse_from_str(s, format)
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// `ms` in `format` (chrono's `strftime` syntax), in UTC.
pub fn format_utc(ms: i64, format: &str) -> String {
    utc(ms).format(format).to_string()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`, as in
/// HTML form query strings); malformed escapes stay as they are.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // On bytes, not on `&s[..]`: the two bytes after a `%` need not
        // be a char boundary (found by the sigv4 fuzz target: a panic).
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(hi), Some(lo)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(if plus_is_space && b[i] == b'+' {
            b' '
        } else {
            b[i]
        });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod percent_tests {
    use super::percent_decode;

    #[test]
    fn escapes_decode_and_a_non_ascii_byte_after_percent_does_not_panic() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("%E2%9C%93", false), "✓");
        assert_eq!(percent_decode("100%", false), "100%");
        // A multi-byte character right after '%' (the fuzzer's input).
        assert_eq!(percent_decode("===%%%eÂ", false), "===%%%eÂ");
        assert_eq!(percent_decode("%Â", false), "%Â");
    }
}

#[cfg(test)]
mod date_tests {
    use super::*;

    #[test]
    fn dates_in_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        // December rolls over into the next year.
        let dec = parse_utc("20261215T120000Z", "%Y%m%dT%H%M%SZ").unwrap() * 1000;
        assert_eq!(
            month_of(dec),
            (
                utc_seconds(2026, 12, 1, 0, 0, 0).unwrap() * 1000,
                utc_seconds(2027, 1, 1, 0, 0, 0).unwrap() * 1000
            )
        );
        assert_eq!(parse_utc("20261315T120000Z", "%Y%m%dT%H%M%SZ"), None);
        assert_eq!(utc_seconds(2026, 2, 30, 0, 0, 0), None);
        assert_eq!(format_utc(dec, "%Y%m%d"), "20261215");
    }
}
