//! Conditional requests (RFC 9110 §13, as S3 applies them): `If-Match`,
//! `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since` on reads,
//! `If-Match` / `If-None-Match: *` on writes, and the
//! `x-amz-copy-source-if-*` headers of a copy, against an object's ETag
//! and modification time.

use s3s::dto::{ETagCondition, Timestamp};

/// What a request's preconditions say about an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Proceed,
    /// 304 for a read; a copy answers 412 instead.
    NotModified,
    /// 412 PreconditionFailed.
    Failed,
}

/// The four preconditions, as s3s parsed them.
#[derive(Debug, Default)]
pub(crate) struct Conditions {
    pub if_match: Option<ETagCondition>,
    pub if_none_match: Option<ETagCondition>,
    /// Seconds since the epoch.
    pub if_modified_since: Option<i64>,
    pub if_unmodified_since: Option<i64>,
}

pub(crate) fn seconds(t: Option<Timestamp>) -> Option<i64> {
    t.map(|t| time::OffsetDateTime::from(t).unix_timestamp())
}

impl Conditions {
    /// Evaluates against an existing object (RFC 9110 §13.2.2: If-Match,
    /// else If-Unmodified-Since; then If-None-Match, else
    /// If-Modified-Since).
    pub(crate) fn check(&self, etag: &str, modified_ms: i64) -> Verdict {
        let modified_s = modified_ms.div_euclid(1000);
        if let Some(m) = &self.if_match {
            if !etag_matches(m, etag) {
                return Verdict::Failed;
            }
        } else if let Some(t) = self.if_unmodified_since
            && modified_s > t
        {
            return Verdict::Failed;
        }
        if let Some(m) = &self.if_none_match {
            if etag_matches(m, etag) {
                return Verdict::NotModified;
            }
        } else if let Some(t) = self.if_modified_since
            && modified_s <= t
        {
            return Verdict::NotModified;
        }
        Verdict::Proceed
    }
}

/// Whether a condition names `etag` (stored quoted), weakly compared; `*`
/// matches any.
pub(crate) fn etag_matches(c: &ETagCondition, etag: &str) -> bool {
    match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value().trim_matches('"') == etag.trim_matches('"'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::dto::ETag;

    #[test]
    fn verdicts() {
        let t = 1_795_000_000_000;
        let tag = |s: &str| Some(ETagCondition::ETag(ETag::Strong(s.into())));
        let c = |m, n, ms: Option<i64>, us: Option<i64>| {
            Conditions {
                if_match: m,
                if_none_match: n,
                if_modified_since: ms,
                if_unmodified_since: us,
            }
            .check("\"abc\"", t)
        };
        assert_eq!(c(tag("abc"), None, None, None), Verdict::Proceed);
        assert_eq!(c(tag("x"), None, None, None), Verdict::Failed);
        assert_eq!(c(None, tag("abc"), None, None), Verdict::NotModified);
        assert_eq!(
            c(None, Some(ETagCondition::Any), None, None),
            Verdict::NotModified
        );
        let (before, after) = (Some(1_794_913_600), Some(1_795_086_400));
        assert_eq!(c(None, None, after, None), Verdict::NotModified);
        assert_eq!(c(None, None, before, None), Verdict::Proceed);
        assert_eq!(c(None, None, None, before), Verdict::Failed);
        assert_eq!(c(None, None, None, after), Verdict::Proceed);
        // If-Match wins over If-Unmodified-Since; If-None-Match over
        // If-Modified-Since.
        assert_eq!(c(tag("abc"), None, None, before), Verdict::Proceed);
        assert_eq!(c(None, tag("x"), after, None), Verdict::Proceed);
    }
}
