//! Rate limits and quotas on the request path, lock-free.
//!
//! A rate limit is a token bucket in its GCRA form (one atomic "theoretical
//! arrival time" per bucket; no timer, no lock): a request is admitted when
//! the bucket is not overdrawn by more than the burst. Written by hand
//! rather than with `governor` because the answers need the bucket's
//! remaining capacity for the `RateLimit-*` headers, and the state is one
//! atomic word per route or key.
//!
//! A quota counts requests per calendar period (hour, day, month, UTC); the
//! counts are saved to the store every second and on shutdown, so they
//! survive a restart.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;
use wisp_core::{Quota, QuotaCount, Rate};

/// What a limiter said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The configured count per period.
    pub limit: u64,
    /// Requests that could still be sent right now.
    pub remaining: u64,
    /// Seconds until the limit would admit the next request (refused), or
    /// until the bucket is full again (admitted).
    pub reset_s: u64,
}

pub struct RateLimiter {
    rate: Rate,
    /// Nanoseconds between two requests at the steady rate.
    interval_ns: u64,
    /// How far ahead of now the bucket may be drawn (burst × interval).
    tolerance_ns: u64,
    /// Theoretical arrival time, ns since `base`.
    tat: AtomicU64,
    base: Instant,
}

impl RateLimiter {
    pub fn new(rate: Rate) -> Self {
        let interval_ns = (rate.per_ms * 1_000_000 / rate.count as u64).max(1);
        Self {
            rate,
            interval_ns,
            tolerance_ns: interval_ns * rate.burst() as u64,
            tat: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    pub fn check(&self) -> Verdict {
        self.check_at(self.base.elapsed().as_nanos() as u64)
    }

    fn check_at(&self, now: u64) -> Verdict {
        let limit = self.rate.count as u64;
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let new_tat = tat.max(now) + self.interval_ns;
            let ahead = new_tat - now;
            if ahead > self.tolerance_ns {
                let wait = ahead - self.tolerance_ns;
                return Verdict {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset_s: wait.div_ceil(1_000_000_000).max(1),
                };
            }
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Verdict {
                        allowed: true,
                        limit,
                        remaining: (self.tolerance_ns - ahead) / self.interval_ns,
                        reset_s: ahead.div_ceil(1_000_000_000),
                    };
                }
                Err(actual) => tat = actual,
            }
        }
    }
}

pub struct QuotaCounter {
    quota: Quota,
    period_start_ms: AtomicI64,
    count: AtomicU64,
    /// The count last saved to the store.
    saved: AtomicU64,
}

impl QuotaCounter {
    pub fn new(quota: Quota, restored: Option<QuotaCount>) -> Self {
        let (start, _) = quota.window(wisp_core::time::now_ms());
        let count = restored
            .filter(|c| c.period_start_ms == start)
            .map(|c| c.count)
            .unwrap_or(0);
        Self {
            quota,
            period_start_ms: AtomicI64::new(start),
            count: AtomicU64::new(count),
            saved: AtomicU64::new(count),
        }
    }

    pub fn check(&self, now_ms: i64) -> Verdict {
        let (start, end) = self.quota.window(now_ms);
        let cur = self.period_start_ms.load(Ordering::Acquire);
        if cur != start
            && self
                .period_start_ms
                .compare_exchange(cur, start, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.count.store(0, Ordering::Release);
        }
        let limit = self.quota.count;
        let reset_s = ((end - now_ms).max(0) as u64).div_ceil(1000);
        let used = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if used > limit {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Verdict {
                allowed: false,
                limit,
                remaining: 0,
                reset_s,
            };
        }
        Verdict {
            allowed: true,
            limit,
            remaining: limit - used,
            reset_s,
        }
    }

    /// The count to save, when it changed since the last save.
    pub fn unsaved(&self) -> Option<QuotaCount> {
        let count = self.count.load(Ordering::Acquire);
        if self.saved.swap(count, Ordering::AcqRel) == count {
            return None;
        }
        Some(QuotaCount {
            period_start_ms: self.period_start_ms.load(Ordering::Acquire),
            count,
        })
    }

    pub fn used(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_admits_burst_then_the_rate() {
        let l = RateLimiter::new(Rate::parse("10/s").unwrap());
        // A burst of 2 at t = 0, then one per 100 ms.
        assert!(l.check_at(0).allowed);
        assert!(l.check_at(0).allowed);
        assert!(!l.check_at(0).allowed);
        assert!(l.check_at(100_000_000).allowed);
        assert!(!l.check_at(150_000_000).allowed);
        // Over 10 s at 2x the rate, about 10 per second get through.
        let mut ok = 0;
        for i in 0..200u64 {
            if l.check_at(1_000_000_000 + i * 50_000_000).allowed {
                ok += 1;
            }
        }
        assert!((100..=103).contains(&ok), "{ok}");
    }

    #[test]
    fn quota_counts_and_refuses() {
        let q = QuotaCounter::new(Quota::parse("2/day").unwrap(), None);
        let now = wisp_core::time::now_ms();
        assert!(q.check(now).allowed);
        assert_eq!(q.check(now).remaining, 0);
        assert!(!q.check(now).allowed);
        assert_eq!(q.used(), 2);
        assert_eq!(q.unsaved().map(|c| c.count), Some(2));
        assert_eq!(q.unsaved(), None);
        // The next day starts from zero.
        assert!(q.check(now + 86_400_000).allowed);
        assert_eq!(q.used(), 1);
    }
}
