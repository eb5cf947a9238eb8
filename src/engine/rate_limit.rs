//! A sink's rate limit: a token bucket, pure and synchronous. The caller
//! passes `now` in; nothing here reads a clock or sleeps.
//!
//! Invariants:
//! - the bucket starts full: `burst` attempts may go at once;
//! - it never holds more than `burst` tokens, and gains exactly
//!   `per_second` tokens per second of `now` moving forward;
//! - the arithmetic is exact: the level is an integer count of
//!   nano-tokens, and each nanosecond adds `per_second` of them, so no
//!   rounding is ever dropped and a long run does not drift: from an empty
//!   bucket, a caller that takes as soon as allowed takes its `k`-th token
//!   exactly `ceil(k * 1e9 / per_second)` ns later, whatever `k`. Only
//!   what would overflow `burst` is discarded, as a full bucket must;
//! - a refused take changes nothing, and the wait it returns is the
//!   shortest after which the same take succeeds;
//! - a `now` earlier than one already seen adds nothing (time is never
//!   taken back).

use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// One token, in nano-tokens.
const TOKEN: u128 = 1_000_000_000;

/// The token bucket of one sink.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Nano-tokens added per nanosecond: tokens per second.
    per_second: u128,
    /// `burst` tokens, in nano-tokens.
    capacity: u128,
    /// Nano-tokens held at `at`.
    level: u128,
    /// The latest `now` seen.
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit, now: Instant) -> TokenBucket {
        let capacity = u128::from(limit.burst) * TOKEN;
        TokenBucket {
            // Validation refuses 0; a bucket that never refills would make
            // `take` divide by zero.
            per_second: u128::from(limit.per_second.max(1)),
            capacity,
            level: capacity,
            at: now,
        }
    }

    /// Takes one token.
    ///
    /// # Errors
    /// The time to wait before a token is there, when none is now.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.level >= TOKEN {
            self.level -= TOKEN;
            return Ok(());
        }
        let ns = (TOKEN - self.level).div_ceil(self.per_second);
        Err(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
    }

    /// Whole tokens available at `now`, for status.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        u64::try_from(self.level / TOKEN).unwrap_or(u64::MAX)
    }

    fn refill(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.at) else {
            return;
        };
        let added = elapsed.as_nanos().saturating_mul(self.per_second);
        self.level = self.level.saturating_add(added).min(self.capacity);
        self.at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(per_second: u32, burst: u32) -> (TokenBucket, Instant) {
        let t0 = Instant::now();
        (TokenBucket::new(RateLimit { per_second, burst }, t0), t0)
    }

    const NS: fn(u64) -> Duration = Duration::from_nanos;

    #[test]
    fn a_full_bucket_gives_its_burst_then_one_token_per_interval() {
        let (mut b, t0) = bucket(10, 3);
        for _ in 0..3 {
            assert_eq!(b.take(t0), Ok(()));
        }
        assert_eq!(b.take(t0), Err(Duration::from_millis(100)));
        // One nanosecond short of the interval is still too early, and says
        // so by exactly one nanosecond.
        let almost = t0 + Duration::from_millis(100) - NS(1);
        assert_eq!(b.take(almost), Err(NS(1)));
        assert_eq!(b.take(t0 + Duration::from_millis(100)), Ok(()));
        assert_eq!(
            b.take(t0 + Duration::from_millis(100)),
            Err(Duration::from_millis(100))
        );
    }

    #[test]
    fn an_idle_spell_refills_only_up_to_the_burst() {
        let (mut b, t0) = bucket(5, 2);
        b.take(t0).unwrap();
        b.take(t0).unwrap();
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.available(later), 2);
        assert_eq!(b.take(later), Ok(()));
        assert_eq!(b.take(later), Ok(()));
        assert_eq!(b.take(later), Err(Duration::from_millis(200)));
    }

    #[test]
    fn partial_refills_accumulate_exactly() {
        // 3 per second: a token every 333,333,333.3 ns, which no whole
        // number of nanoseconds per token can express.
        let (mut b, t0) = bucket(3, 1);
        b.take(t0).unwrap();
        assert_eq!(b.take(t0), Err(NS(333_333_334)));
        // Three looks at 100 ms each add up to 0.9 of a token, losing
        // nothing between them.
        for i in 1..=3 {
            assert!(b.take(t0 + Duration::from_millis(100 * i)).is_err());
        }
        let at = t0 + Duration::from_millis(300);
        assert_eq!(b.take(at), Err(NS(33_333_334)));
        assert_eq!(b.take(at + NS(33_333_334)), Ok(()));
    }

    #[test]
    fn a_million_takes_do_not_drift() {
        for per_second in [1u32, 3, 7, 1000, 999_983] {
            // A burst of two, emptied at once: the level then stays below
            // the burst, so nothing is ever discarded at the cap.
            let (mut b, t0) = bucket(per_second, 2);
            b.take(t0).unwrap();
            b.take(t0).unwrap();
            let mut now = t0;
            for k in 1..=1_000_000u64 {
                let wait = b.take(now).unwrap_err();
                now += wait;
                assert_eq!(b.take(now), Ok(()), "take {k} at {per_second}/s");
                // The k-th token comes exactly when k tokens have accrued.
                let ideal = (u128::from(k) * TOKEN).div_ceil(u128::from(per_second));
                assert_eq!((now - t0).as_nanos(), ideal, "take {k} at {per_second}/s");
            }
        }
    }

    #[test]
    fn a_full_bucket_discards_what_would_overflow() {
        // 3/s, burst 1: the bucket is full again at 333,333,333.3 ns, so a
        // take at 333,333,334 ns leaves nothing over, and the next token is
        // a full third of a second after that take.
        let (mut b, t0) = bucket(3, 1);
        b.take(t0).unwrap();
        let t1 = t0 + NS(333_333_334);
        assert_eq!(b.take(t1), Ok(()));
        assert_eq!(b.take(t1), Err(NS(333_333_334)));
    }

    #[test]
    fn a_stale_now_adds_nothing_and_a_refusal_changes_nothing() {
        let (mut b, t0) = bucket(1, 1);
        let t1 = t0 + Duration::from_millis(500);
        b.take(t0).unwrap();
        assert_eq!(b.take(t1), Err(Duration::from_millis(500)));
        // Asking with an older `now` neither refills nor rewinds.
        assert_eq!(b.take(t0), Err(Duration::from_millis(500)));
        assert_eq!(b.take(t1), Err(Duration::from_millis(500)));
        assert_eq!(b.take(t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn the_largest_settings_do_not_overflow() {
        let (mut b, t0) = bucket(u32::MAX, u32::MAX);
        assert_eq!(b.available(t0), u64::from(u32::MAX));
        let far = t0 + Duration::from_secs(100 * 365 * 24 * 3600);
        assert_eq!(b.available(far), u64::from(u32::MAX));
        assert_eq!(b.take(far), Ok(()));
    }
}
