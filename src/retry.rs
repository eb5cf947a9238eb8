//! The retry decision: pure, synchronous, driven step by step in tests.
//!
//! After a failed attempt the worker asks [`RetryPolicy::decide`]:
//! - a permanent error goes to the DLQ at once;
//! - a transient error is retried after a delay: the schedule's entry for
//!   that retry when a `retry_schedule` is set, else a capped exponential
//!   backoff with jitter; or after the receiver's `Retry-After` (capped)
//!   instead, never both and never doubled;
//! - once [`RetryPolicy::retries`] retries have failed (the schedule's
//!   length, or `retry_max`), the record goes to the DLQ.
//!
//! The decision is a function of the attempt count, the error and the jitter
//! alone, with no clock and no state, so an attempt count kept durably gives
//! the same decision after a restart.

use std::time::Duration;

use crate::config::SinkConfig;
use crate::sink::DeliveryError;

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Dead-letter the record: move it to the DLQ.
    DeadLetter,
}

/// The retry settings of one sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt, without a schedule.
    pub retry_max: u32,
    /// First retry delay, without a schedule.
    pub base: Duration,
    /// Delay ceiling, without a schedule.
    pub max: Duration,
    /// Ceiling on a receiver's requested delay.
    pub retry_after_max: Duration,
    /// Explicit delays: retry `n` waits `schedule[n - 1]`, exactly (no
    /// jitter), and there are as many retries as entries. When set,
    /// `retry_max`, `base` and `max` do not apply to deliveries.
    pub schedule: Option<Vec<Duration>>,
}

impl From<&SinkConfig> for RetryPolicy {
    fn from(c: &SinkConfig) -> Self {
        RetryPolicy {
            retry_max: c.retry_max,
            base: c.backoff_base,
            max: c.backoff_max,
            retry_after_max: c.retry_after_max,
            schedule: c.retry_schedule.clone(),
        }
    }
}

impl RetryPolicy {
    /// Decides after attempt number `attempts` (1 for the first) failed with
    /// `error`. `jitter` is a uniform random number in `[0, 1)`.
    /// A `Retry-After` still counts as one of the retries.
    pub fn decide(&self, attempts: u32, error: &DeliveryError, jitter: f64) -> Decision {
        if !error.is_transient() || attempts > self.retries() {
            return Decision::DeadLetter;
        }
        if let Some(after) = error.retry_after() {
            return Decision::Retry(after.min(self.retry_after_max));
        }
        Decision::Retry(self.delay(attempts, jitter))
    }

    /// How many retries follow the first attempt: the schedule's length, or
    /// `retry_max` without one.
    pub fn retries(&self) -> u32 {
        match &self.schedule {
            Some(s) => u32::try_from(s.len()).unwrap_or(u32::MAX),
            None => self.retry_max,
        }
    }

    /// The longest wait [`Self::decide`] can ask for: the longest schedule
    /// entry (or `max`), or `retry_after_max`.
    pub fn longest_wait(&self) -> Duration {
        let own = match &self.schedule {
            Some(s) => s.iter().copied().max().unwrap_or_default(),
            None => self.max.max(self.base),
        };
        own.max(self.retry_after_max)
    }

    /// The delay before retry number `retry` (1 for the first) when the
    /// receiver asked for none: the schedule's entry, or [`Self::backoff`].
    /// Past the schedule's end (which [`Self::decide`] never asks for) the
    /// last entry repeats.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        match &self.schedule {
            Some(s) => {
                let i = usize::try_from(retry.saturating_sub(1)).unwrap_or(usize::MAX);
                s.get(i).or(s.last()).copied().unwrap_or_default()
            }
            None => self.backoff(retry, jitter),
        }
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
            schedule: None,
        }
    }

    fn scheduled() -> RetryPolicy {
        let s = Duration::from_secs;
        RetryPolicy {
            // Ignored under a schedule: the schedule's length counts.
            retry_max: 99,
            schedule: Some(vec![s(5), s(300), s(1800), s(7200)]),
            ..policy()
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
    fn the_longest_wait_bounds_every_decision() {
        let e = DeliveryError::transient("503");
        for p in [policy(), scheduled()] {
            let longest = p.longest_wait();
            for n in 1..=p.retries() {
                for jitter in [0.0, 0.5, 0.999] {
                    if let Decision::Retry(d) = p.decide(n, &e, jitter) {
                        assert!(d <= longest, "{d:?} > {longest:?}");
                    }
                }
            }
        }
        assert_eq!(scheduled().longest_wait(), Duration::from_secs(7200));
        assert_eq!(
            policy().longest_wait(),
            Duration::from_secs(10),
            "retry_after_max"
        );
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

    #[test]
    fn a_schedule_gives_its_delays_in_order_without_jitter_then_the_dlq() {
        let p = scheduled();
        let e = DeliveryError::transient("503");
        let s = Duration::from_secs;
        let got: Vec<Decision> = (1..=5).map(|n| p.decide(n, &e, 0.77)).collect();
        assert_eq!(
            got,
            vec![
                Decision::Retry(s(5)),
                Decision::Retry(s(300)),
                Decision::Retry(s(1800)),
                Decision::Retry(s(7200)),
                Decision::DeadLetter,
            ]
        );
        assert_eq!(p.retries(), 4);
        // Jitter does not move a scheduled delay.
        assert_eq!(p.decide(2, &e, 0.0), p.decide(2, &e, 0.999));
        assert_eq!(p.decide(u32::MAX, &e, 0.5), Decision::DeadLetter);
        // Past the end the last entry repeats, for callers that ask.
        assert_eq!(p.delay(9, 0.0), s(7200));
        assert_eq!(p.delay(0, 0.0), s(5));
    }

    #[test]
    fn a_schedule_still_honours_retry_after_capped_and_dead_letters_permanent_errors() {
        let p = scheduled();
        let asked = |secs| DeliveryError::Transient {
            error: "429".into(),
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            p.decide(1, &asked(7), 0.5),
            Decision::Retry(Duration::from_secs(7))
        );
        assert_eq!(
            p.decide(4, &asked(3600), 0.5),
            Decision::Retry(Duration::from_secs(10)),
            "capped by retry_after_max"
        );
        assert_eq!(p.decide(5, &asked(1), 0.5), Decision::DeadLetter);
        assert_eq!(
            p.decide(1, &DeliveryError::permanent("400"), 0.5),
            Decision::DeadLetter
        );
    }

    #[test]
    fn the_same_attempt_count_gives_the_same_decision_as_after_a_restart() {
        // Two policies built independently from one config decide alike:
        // nothing but the arguments feeds the decision.
        let cfg = SinkConfig {
            retry_schedule: Some(vec![Duration::from_secs(1), Duration::from_secs(2)]),
            ..SinkConfig::default()
        };
        let (a, b) = (RetryPolicy::from(&cfg), RetryPolicy::from(&cfg));
        let e = DeliveryError::transient("timeout");
        for n in 0..5 {
            assert_eq!(a.decide(n, &e, 0.3), b.decide(n, &e, 0.3), "attempt {n}");
        }
        assert_eq!(a.decide(3, &e, 0.3), Decision::DeadLetter);
    }
}
