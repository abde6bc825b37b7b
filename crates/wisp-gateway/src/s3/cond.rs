//! Conditional requests (RFC 9110 §13, as S3 applies them): `If-Match`,
//! `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since` on reads,
//! `If-Match` / `If-None-Match: *` on writes, and the
//! `x-amz-copy-source-if-*` headers of a copy, against an object's ETag
//! and modification time.

use axum::http::HeaderMap;
use wisp_core::time::days_from_civil;

/// What a request's preconditions say about an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Proceed,
    /// 304 for a read; a copy answers 412 instead.
    NotModified,
    /// 412 PreconditionFailed.
    Failed,
}

/// The four headers, under the names a request uses (`if-match`, or
/// `x-amz-copy-source-if-match` for a copy source).
#[derive(Debug, Default)]
pub(crate) struct Conditions {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub if_unmodified_since: Option<String>,
}

impl Conditions {
    /// The plain headers (`prefix` ""), or the copy source's
    /// (`x-amz-copy-source-`).
    pub(crate) fn from_headers(h: &HeaderMap, prefix: &str) -> Self {
        let get = |n: &str| {
            h.get(format!("{prefix}{n}"))
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
        };
        Self {
            if_match: get("if-match"),
            if_none_match: get("if-none-match"),
            if_modified_since: get("if-modified-since"),
            if_unmodified_since: get("if-unmodified-since"),
        }
    }

    /// Evaluates against an existing object (RFC 9110 §13.2.2: If-Match,
    /// else If-Unmodified-Since; then If-None-Match, else
    /// If-Modified-Since). Dates that do not parse are ignored, as HTTP
    /// says.
    pub(crate) fn check(&self, etag: &str, modified_ms: i64) -> Verdict {
        let modified_s = modified_ms.div_euclid(1000);
        if let Some(m) = &self.if_match {
            if !etag_matches(m, etag) {
                return Verdict::Failed;
            }
        } else if let Some(t) = self
            .if_unmodified_since
            .as_deref()
            .and_then(parse_http_date)
            && modified_s > t
        {
            return Verdict::Failed;
        }
        if let Some(m) = &self.if_none_match {
            if etag_matches(m, etag) {
                return Verdict::NotModified;
            }
        } else if let Some(t) = self.if_modified_since.as_deref().and_then(parse_http_date)
            && modified_s <= t
        {
            return Verdict::NotModified;
        }
        Verdict::Proceed
    }
}

/// Whether an `If-Match` / `If-None-Match` list names `etag` (quoted or
/// not, `*` for any).
pub(crate) fn etag_matches(list: &str, etag: &str) -> bool {
    let ours = etag.trim_matches('"');
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == ours)
}

/// An HTTP date in seconds since the epoch: IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) or asctime
/// (`Sun Nov  6 08:49:37 1994`).
pub(crate) fn parse_http_date(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = |m: &str| {
        MONTHS
            .iter()
            .position(|x| m.eq_ignore_ascii_case(x))
            .map(|i| i as u32 + 1)
    };
    let words: Vec<&str> = s.split_whitespace().collect();
    let (d, mo, y, time) = match words.as_slice() {
        // IMF-fixdate.
        [_, d, mo, y, time, "GMT" | "UTC"] => (d.parse().ok()?, month(mo)?, y.parse().ok()?, *time),
        // RFC 850.
        [_, dmy, time, "GMT" | "UTC"] => {
            let mut p = dmy.split('-');
            let (d, mo, y) = (p.next()?, p.next()?, p.next()?);
            let y: i64 = y.parse().ok()?;
            let y = if y < 100 {
                if y < 70 { 2000 + y } else { 1900 + y }
            } else {
                y
            };
            (d.parse().ok()?, month(mo)?, y, *time)
        }
        // asctime.
        [_, mo, d, time, y] => (d.parse().ok()?, month(mo)?, y.parse().ok()?, *time),
        _ => return None,
    };
    let mut t = time.split(':');
    let (h, mi, sec): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_verdicts() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Wed, 18 Nov 2026 11:06:40 GMT"),
            Some(1_795_000_000)
        );
        assert_eq!(
            parse_http_date("Wednesday, 18-Nov-26 11:06:40 GMT"),
            Some(1_795_000_000)
        );
        assert_eq!(
            parse_http_date("Wed Nov 18 11:06:40 2026"),
            Some(1_795_000_000)
        );
        assert_eq!(parse_http_date("yesterday"), None);
        let t = 1_795_000_000_000;
        let c = |m: Option<&str>, n: Option<&str>, ms: Option<&str>, us: Option<&str>| {
            Conditions {
                if_match: m.map(Into::into),
                if_none_match: n.map(Into::into),
                if_modified_since: ms.map(Into::into),
                if_unmodified_since: us.map(Into::into),
            }
            .check("\"abc\"", t)
        };
        assert_eq!(c(Some("\"abc\""), None, None, None), Verdict::Proceed);
        assert_eq!(c(Some("abc"), None, None, None), Verdict::Proceed);
        assert_eq!(c(Some("\"x\""), None, None, None), Verdict::Failed);
        assert_eq!(c(None, Some("\"abc\""), None, None), Verdict::NotModified);
        assert_eq!(c(None, Some("*"), None, None), Verdict::NotModified);
        let before = Some("Tue, 17 Nov 2026 11:06:40 GMT");
        let after = Some("Thu, 19 Nov 2026 11:06:40 GMT");
        assert_eq!(c(None, None, after, None), Verdict::NotModified);
        assert_eq!(c(None, None, before, None), Verdict::Proceed);
        assert_eq!(c(None, None, None, before), Verdict::Failed);
        assert_eq!(c(None, None, None, after), Verdict::Proceed);
        // If-Match wins over If-Unmodified-Since; If-None-Match over
        // If-Modified-Since.
        assert_eq!(c(Some("\"abc\""), None, None, before), Verdict::Proceed);
        assert_eq!(c(None, Some("\"x\""), after, None), Verdict::Proceed);
    }
}
