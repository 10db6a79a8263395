//! Retry policy: exponential backoff with a cap and jitter, and the decision to retry or give up.

use std::time::Duration;

use crate::job::ValidationError;
use crate::limits;
use crate::store::FailOutcome;
use crate::time::Timestamp;

/// What a failed attempt asks of the retry decision, beyond its error message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailDirective {
    /// Retry after the policy's backoff (the usual case).
    #[default]
    Backoff,
    /// Retry no sooner than this long from now (a webhook's `429`/`503` with `Retry-After`, a
    /// worker that knows when to come back), capped at `limits::RETRY_AFTER_MAX`. No jitter:
    /// the one asking chose the time.
    After(Duration),
    /// Do not retry: the job is dead whatever attempts remain (a webhook's `410 Gone`).
    Permanent,
}

/// How long to wait before the next attempt: `backoff_base * 2^(attempt - 1)`, capped at
/// `backoff_max`, then reduced by up to `jitter_percent` percent at random so that jobs that
/// failed together do not retry together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    backoff_base: Duration,
    backoff_max: Duration,
    jitter_percent: u8,
}

impl RetryPolicy {
    /// Backoff starts at 1 s, doubles, is capped at 1 h, with 20 % jitter.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(3600),
        jitter_percent: 20,
    };

    pub fn new(
        backoff_base: Duration,
        backoff_max: Duration,
        jitter_percent: u8,
    ) -> Result<RetryPolicy, ValidationError> {
        if backoff_base.is_zero() || backoff_base > Duration::from_secs(24 * 3600) {
            return Err(ValidationError::RetryPolicy(
                "backoff_base must be within 1 µs ..= 24 h",
            ));
        }
        if backoff_max < backoff_base || backoff_max > Duration::from_secs(30 * 24 * 3600) {
            return Err(ValidationError::RetryPolicy(
                "backoff_max must be at least backoff_base and at most 30 days",
            ));
        }
        if jitter_percent > 100 {
            return Err(ValidationError::RetryPolicy(
                "jitter_percent must be within 0 ..= 100",
            ));
        }
        Ok(RetryPolicy {
            backoff_base,
            backoff_max,
            jitter_percent,
        })
    }

    pub fn backoff_base(&self) -> Duration {
        self.backoff_base
    }
    pub fn backoff_max(&self) -> Duration {
        self.backoff_max
    }
    pub fn jitter_percent(&self) -> u8 {
        self.jitter_percent
    }

    /// The delay after failed attempt number `attempt` (1-based), before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let base = u64::try_from(self.backoff_base.as_micros()).unwrap_or(u64::MAX);
        let delay = Duration::from_micros(base.saturating_mul(factor));
        delay.min(self.backoff_max)
    }

    /// The delay with jitter applied; `unit` is a random number in `0.0..1.0`.
    pub fn backoff_with_jitter(&self, attempt: u32, unit: f64) -> Duration {
        let delay = self.backoff(attempt);
        let cut =
            delay.as_secs_f64() * f64::from(self.jitter_percent) / 100.0 * unit.clamp(0.0, 1.0);
        delay.saturating_sub(Duration::from_secs_f64(cut))
    }

    /// Retry or give up after attempt `attempt` of `attempt_max` failed at `now`.
    pub fn decide(&self, attempt: u32, attempt_max: u32, now: Timestamp, unit: f64) -> FailOutcome {
        self.decide_directed(attempt, attempt_max, now, unit, FailDirective::Backoff)
    }

    /// `decide`, steered by what the failed attempt asked for: the one place a failure's fate
    /// is decided, for in-process handlers and remote workers alike. The attempts are a hard
    /// bound: no directive retries a job whose last attempt failed.
    pub fn decide_directed(
        &self,
        attempt: u32,
        attempt_max: u32,
        now: Timestamp,
        unit: f64,
        directive: FailDirective,
    ) -> FailOutcome {
        if attempt >= attempt_max {
            return FailOutcome::Dead;
        }
        match directive {
            FailDirective::Backoff => FailOutcome::Retry {
                at: now.add(self.backoff_with_jitter(attempt, unit)),
            },
            FailDirective::After(delay) => FailOutcome::Retry {
                at: now.add(delay.min(limits::RETRY_AFTER_MAX)),
            },
            FailDirective::Permanent => FailOutcome::Dead,
        }
    }

    /// `decide_directed` with jitter drawn from the thread's random generator.
    pub fn decide_with_random_jitter(
        &self,
        attempt: u32,
        attempt_max: u32,
        now: Timestamp,
        directive: FailDirective,
    ) -> FailOutcome {
        self.decide_directed(attempt, attempt_max, now, rand::random::<f64>(), directive)
    }
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn directives_steer_the_retry_but_never_past_attempt_max() {
        let policy = RetryPolicy::DEFAULT;
        let now = Timestamp::from_millis(0);
        let after = FailDirective::After(Duration::from_secs(90));
        assert_eq!(
            policy.decide_directed(1, 3, now, 0.9, after),
            FailOutcome::Retry {
                at: now.add(Duration::from_secs(90))
            }
        );
        let far = FailDirective::After(Duration::from_secs(400 * 24 * 3600));
        assert_eq!(
            policy.decide_directed(1, 3, now, 0.0, far),
            FailOutcome::Retry {
                at: now.add(limits::RETRY_AFTER_MAX)
            }
        );
        assert_eq!(
            policy.decide_directed(1, 3, now, 0.0, FailDirective::Permanent),
            FailOutcome::Dead
        );
        for directive in [FailDirective::Backoff, after, FailDirective::Permanent] {
            assert_eq!(
                policy.decide_directed(3, 3, now, 0.0, directive),
                FailOutcome::Dead
            );
        }
    }

    #[test]
    fn gives_up_after_attempt_max() {
        let policy = RetryPolicy::DEFAULT;
        let now = Timestamp::from_millis(0);
        assert_eq!(policy.decide(3, 3, now, 0.0), FailOutcome::Dead);
        assert_eq!(
            policy.decide(1, 3, now, 0.0),
            FailOutcome::Retry {
                at: now.add(Duration::from_secs(1))
            }
        );
        assert_eq!(
            policy.decide(2, 3, now, 0.0),
            FailOutcome::Retry {
                at: now.add(Duration::from_secs(2))
            }
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(RetryPolicy::new(Duration::ZERO, Duration::from_secs(1), 0).is_err());
        assert!(RetryPolicy::new(Duration::from_secs(2), Duration::from_secs(1), 0).is_err());
        assert!(RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(2), 101).is_err());
    }

    proptest! {
        #[test]
        fn backoff_is_monotonic_and_capped(
            base_ms in 1u64..100_000,
            extra_ms in 0u64..10_000_000,
            jitter in 0u8..=100,
            attempt in 1u32..2_000,
            unit in 0.0f64..1.0,
        ) {
            let policy = RetryPolicy::new(
                Duration::from_millis(base_ms),
                Duration::from_millis(base_ms + extra_ms),
                jitter,
            ).expect("valid");
            prop_assert!(policy.backoff(attempt) <= policy.backoff(attempt + 1));
            prop_assert!(policy.backoff(attempt) <= policy.backoff_max());
            let jittered = policy.backoff_with_jitter(attempt, unit);
            prop_assert!(jittered <= policy.backoff(attempt));
            let floor = policy.backoff(attempt).as_secs_f64() * (1.0 - f64::from(jitter) / 100.0);
            prop_assert!(jittered.as_secs_f64() + 1e-6 >= floor);
        }
    }
}
