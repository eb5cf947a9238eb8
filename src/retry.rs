//! The retry decision: pure, synchronous, driven step by step in tests.
//!
//! After a failed attempt the worker asks [`RetryPolicy::decide`]:
//! - a permanent error goes to the DLQ at once;
//! - a transient error is retried after a capped exponential backoff with
//!   jitter, or after the receiver's `Retry-After` (capped), never both and
//!   never doubled;
//! - once `retry_max` retries have failed, the record goes to the DLQ.

use std::time::Duration;

use crate::config::SinkConfig;
use crate::sink::DeliveryError;

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Park the record in the DLQ.
    DeadLetter,
}

/// The retry settings of one sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retry_max: u32,
    /// First retry delay.
    pub base: Duration,
    /// Delay ceiling.
    pub max: Duration,
    /// Ceiling on a receiver's requested delay.
    pub retry_after_max: Duration,
}

impl From<&SinkConfig> for RetryPolicy {
    fn from(c: &SinkConfig) -> Self {
        RetryPolicy {
            retry_max: c.retry_max,
            base: c.backoff_base,
            max: c.backoff_max,
            retry_after_max: c.retry_after_max,
        }
    }
}

impl RetryPolicy {
    /// Decides after attempt number `attempts` (1 for the first) failed with
    /// `error`. `jitter` is a uniform random number in `[0, 1)`.
    pub fn decide(&self, attempts: u32, error: &DeliveryError, jitter: f64) -> Decision {
        if !error.is_transient() || attempts > self.retry_max {
            return Decision::DeadLetter;
        }
        if let Some(after) = error.retry_after() {
            return Decision::Retry(after.min(self.retry_after_max));
        }
        Decision::Retry(self.backoff(attempts, jitter))
    }

    /// The delay before retry number `retry` (1 for the first): `base * 2^(retry-1)`
    /// capped at `max`, then "equal jitter": half fixed, half random, so
    /// many sinks failing together do not retry in lockstep.
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let shift = retry.saturating_sub(1).min(30);
        let raw = self.base.saturating_mul(1u32 << shift).min(self.max);
        let half = raw / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retry_max: 3,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = policy();
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(50));
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 1.0), Duration::from_millis(400));
        assert_eq!(p.backoff(10, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(u32::MAX, 0.5), Duration::from_millis(750));
    }

    #[test]
    fn permanent_goes_to_dlq_at_once() {
        let d = policy().decide(1, &DeliveryError::permanent("400"), 0.5);
        assert_eq!(d, Decision::DeadLetter);
    }

    #[test]
    fn transient_retries_until_retry_max() {
        let p = policy();
        let e = DeliveryError::transient("503");
        assert!(matches!(p.decide(1, &e, 0.0), Decision::Retry(_)));
        assert!(matches!(p.decide(3, &e, 0.0), Decision::Retry(_)));
        assert_eq!(p.decide(4, &e, 0.0), Decision::DeadLetter);
    }

    #[test]
    fn retry_after_replaces_backoff_and_is_capped() {
        let p = policy();
        let e = DeliveryError::Transient {
            error: "429".into(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            p.decide(3, &e, 0.9),
            Decision::Retry(Duration::from_secs(2))
        );
        let e = DeliveryError::Transient {
            error: "429".into(),
            retry_after: Some(Duration::from_secs(3600)),
        };
        assert_eq!(
            p.decide(1, &e, 0.9),
            Decision::Retry(Duration::from_secs(10))
        );
    }
}
