//! Clocks for tests: `ManualClock` moves only when told to; `TokioClock` follows tokio's clock,
//! so it moves with paused time in `#[tokio::test(start_paused = true)]`.
//!
//! Neither reads the system's wall clock, and neither sleeps.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use punctual_core::{Clock, Timestamp};

/// A clock that stands still until a test calls `advance` or `set`. Shareable across threads.
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            micros: AtomicI64::new(start.as_micros()),
        }
    }

    /// Moves the clock forward by `by`, saturating at the end of time.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        // `fetch_update` rather than `fetch_add` so the addition saturates instead of wrapping.
        let _ = self
            .micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |micros| {
                Some(micros.saturating_add(by))
            });
    }

    /// Moves the clock to `to`, which may be earlier (to test a clock that steps back).
    pub fn set(&self, to: Timestamp) {
        self.micros.store(to.as_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.micros.load(Ordering::SeqCst))
    }
}

/// A clock anchored at a fixed instant that runs with tokio's clock: `now` is the anchor plus
/// the tokio time elapsed since creation.
///
/// Under `#[tokio::test(start_paused = true)]` (which needs tokio's `test-util` feature in the
/// test's crate) tokio's time advances only when every task waits, jumping straight to the next
/// timer, so an engine test sees its deadlines met exactly and without real waiting. Create it
/// inside the runtime, so it reads the runtime's (paused) clock.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    anchor: Timestamp,
    started: tokio::time::Instant,
}

impl TokioClock {
    pub fn new(anchor: Timestamp) -> TokioClock {
        TokioClock {
            anchor,
            started: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.anchor.add(self.started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: Timestamp = Timestamp::from_millis(1_764_400_000_000);

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(START);
        assert_eq!(clock.now(), START);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now(), START.add(Duration::from_millis(1_500)));
        clock.set(START);
        assert_eq!(clock.now(), START);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), Timestamp::from_micros(i64::MAX));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::new(START);
        assert_eq!(clock.now(), START);
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        assert_eq!(clock.now(), START.add(Duration::from_secs(3_600)));
    }
}
