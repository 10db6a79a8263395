//! `SimClock`: the one clock of a simulated cluster (the store's, which every node reads, as
//! nodes read the database's clock in cluster mode). It follows tokio's paused time and can jump.
//!
//! A jump moves what the clock reads, not tokio's time: timers the engine set before a jump fire
//! at the tokio instant they were set for, and find the clock ahead (or behind). That is what a
//! stepped system clock does to a process. A jump takes effect at the next instant of tokio's
//! time, not within the one it is made in: every task polled in one instant reads one time, so a
//! step never falls between the engine's last look at the clock and the first poll of the
//! handler it launched in the same instant (no engine could guard that gap).

use std::sync::Mutex;

use punctual_core::{Clock, Timestamp};
use punctual_testkit::TokioClock;
use tokio::time::Instant;

#[derive(Debug)]
pub struct SimClock {
    base: TokioClock,
    jumps: Mutex<Jumps>,
}

#[derive(Debug, Default)]
struct Jumps {
    /// The jumps in effect, summed, in microseconds.
    applied_us: i64,
    /// Jumps made in the instant `pending_at`, in effect from the next instant on.
    pending_us: i64,
    pending_at: Option<Instant>,
}

impl Jumps {
    /// Puts into effect the jumps made before the instant `now`.
    fn settle(&mut self, now: Instant) {
        if self.pending_at.is_some_and(|at| at < now) {
            self.applied_us = self.applied_us.saturating_add(self.pending_us);
            self.pending_us = 0;
            self.pending_at = None;
        }
    }
}

impl SimClock {
    /// A clock reading `anchor` now; create it inside the runtime whose paused time it follows.
    pub fn new(anchor: Timestamp) -> SimClock {
        SimClock {
            base: TokioClock::new(anchor),
            jumps: Mutex::new(Jumps::default()),
        }
    }

    /// Steps the clock by `by_us` microseconds (negative: back), from the next instant on.
    pub fn jump(&self, by_us: i64) {
        let now = Instant::now();
        let mut jumps = self.lock();
        jumps.settle(now);
        jumps.pending_us = jumps.pending_us.saturating_add(by_us);
        jumps.pending_at = Some(now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Jumps> {
        // Held for a few additions, never across an await; nothing panics under it.
        self.jumps
            .lock()
            .expect("nothing panics while holding the clock")
    }
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        let mut jumps = self.lock();
        jumps.settle(Instant::now());
        Timestamp::from_micros(self.base.now().as_micros().saturating_add(jumps.applied_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::START;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_jump_takes_effect_at_the_next_instant() {
        let clock = SimClock::new(START);
        clock.jump(-500_000);
        clock.jump(200_000);
        assert_eq!(clock.now(), START, "not within the instant of the jumps");
        tokio::time::sleep(Duration::from_millis(1)).await;
        let later = START.add(Duration::from_millis(1));
        assert_eq!(clock.now(), later.sub(Duration::from_millis(300)));
    }
}
