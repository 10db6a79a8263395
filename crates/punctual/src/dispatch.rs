//! The dispatcher: claims due jobs just ahead of their `run_at` and hands each to a job task.
//!
//! It never polls on a fixed tick. After a claim it asks the store for the next due time and
//! sleeps until shortly before it; `Scheduler::schedule` wakes it early when a sooner job
//! arrives, and `Config::poll_max` caps the sleep so jobs inserted by other processes are seen.
//! It does not run handlers or talk to them: that is `execute`. It claims, and waits for, only
//! jobs of the kinds this node has handlers for (`Inner::kinds`): a job of another kind is left
//! pending for a node that can run it, rather than claimed here and failed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use punctual_core::{ClaimRequest, Timestamp};

use crate::config::Config;
use crate::event::Event;
use crate::execute;
use crate::scheduler::Inner;

/// When the dispatcher should next look for due jobs, given the next due time it knows of.
///
/// It wakes half a claim window before the job is due and then claims a whole window ahead, so
/// each claim gathers the jobs of half a window and every job is claimed at least half a
/// window before its `run_at`. `misses` counts the consecutive looks that found a job due
/// within the window just claimed which the claim did not take (another node holds it locked,
/// or it was inserted just after the claim): after the first, the dispatcher backs off a
/// little, doubling from 1 ms up to 50 ms, rather than spin on rows it cannot take.
pub(crate) fn wake_time(
    now: Timestamp,
    next_due: Option<Timestamp>,
    config: &Config,
    misses: u32,
) -> Timestamp {
    let latest = now.add(config.poll_max);
    let wake_at = match next_due {
        None => latest,
        Some(due) => due.sub(config.claim_ahead / 2).clamp(now, latest),
    };
    if misses <= 1 {
        return wake_at;
    }
    let backoff =
        (Duration::from_millis(1) * (1u32 << (misses - 2).min(6))).min(Duration::from_millis(50));
    wake_at.max(now.add(backoff)).min(latest)
}

/// How long to wait before calling a failing store again: doubling from 10 ms, at most 5 s.
pub(crate) fn store_retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(10);
    (Duration::from_millis(10) * (1u32 << doublings)).min(Duration::from_secs(5))
}

pub(crate) async fn run(inner: Arc<Inner>) {
    let config = &inner.config;
    let mut failures = 0u32;
    let mut misses = 0u32;
    loop {
        // Awake: announcements from here on are read before the next sleep (see `wake_for`).
        inner.sleeping_until_us.store(i64::MIN, Ordering::SeqCst);
        inner.announced_us.store(i64::MAX, Ordering::SeqCst);
        if inner.stop_claiming.is_cancelled() {
            return;
        }
        let free = inner.permits.available_permits();
        if free == 0 {
            // Every slot is taken: wait for one to be freed rather than claim what we can't run.
            tokio::select! {
                permit = inner.permits.clone().acquire_owned() => drop(permit),
                () = inner.stop_claiming.cancelled() => return,
            }
            continue;
        }
        let now = inner.clock.now();
        let limit = free.min(config.claim_batch);
        let due_by = now.add(config.claim_ahead);
        let request = ClaimRequest {
            holder: config.node.clone(),
            queues: config.queues.clone(),
            kinds: Some(inner.kinds.clone()),
            limit,
            due_by,
            lease: config.lease,
        };
        let claimed = match inner.store.claim(request, now).await {
            Ok(claimed) => claimed,
            Err(error) => {
                failures += 1;
                inner.emit(Event::StoreError {
                    operation: "claim",
                    error: error.to_string(),
                });
                if pause(&inner, store_retry_delay(failures)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let full = claimed.len() == limit;
        for job in claimed {
            // Only this task takes permits, and `free` were available above, so this succeeds.
            let permit = inner
                .permits
                .clone()
                .try_acquire_owned()
                .expect("the dispatcher alone acquires permits");
            inner.jobs.spawn(execute::run(inner.clone(), job, permit));
        }
        if full {
            // There may be more due right now.
            continue;
        }

        let next_due = match inner
            .store
            .next_due(config.queues.as_deref(), Some(&inner.kinds))
            .await
        {
            Ok(next_due) => {
                failures = 0;
                next_due
            }
            Err(error) => {
                failures += 1;
                inner.emit(Event::StoreError {
                    operation: "next_due",
                    error: error.to_string(),
                });
                if pause(&inner, store_retry_delay(failures)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        misses = if next_due.is_some_and(|due| due <= due_by) {
            misses + 1
        } else {
            0
        };
        let now = inner.clock.now();
        let mut wake_at = wake_time(now, next_due, config, misses);
        inner
            .sleeping_until_us
            .store(wake_at.as_micros(), Ordering::SeqCst);
        // A job announced since this look began (its insert may have missed the look) moves
        // the wake-up earlier; later ones notify, now that the wake-up time is published.
        let announced = inner.announced_us.swap(i64::MAX, Ordering::SeqCst);
        if announced != i64::MAX {
            let sooner = wake_time(now, Some(Timestamp::from_micros(announced)), config, 0);
            wake_at = wake_at.min(sooner);
        }
        let sleep = tokio::time::sleep_until(inner.instant_at(wake_at, now));
        tokio::select! {
            () = sleep => {}
            () = inner.wake.notified() => {}
            () = inner.stop_claiming.cancelled() => return,
        }
    }
}

/// Sleeps for `duration`, or returns `Err` at once if the engine is stopping.
async fn pause(inner: &Inner, duration: Duration) -> Result<(), ()> {
    tokio::select! {
        () = tokio::time::sleep(duration) => Ok(()),
        () = inner.stop_claiming.cancelled() => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_764_400_000_000);

    fn config() -> Config {
        Config {
            claim_ahead: Duration::from_millis(100),
            poll_max: Duration::from_secs(1),
            ..Config::default()
        }
    }

    #[test]
    fn sleeps_until_half_a_window_before_the_next_job() {
        let due = NOW.add(Duration::from_millis(500));
        assert_eq!(
            wake_time(NOW, Some(due), &config(), 0),
            NOW.add(Duration::from_millis(450))
        );
    }

    #[test]
    fn wakes_at_once_for_an_overdue_job_and_polls_when_idle() {
        assert_eq!(
            wake_time(NOW, Some(NOW.sub(Duration::from_secs(5))), &config(), 1),
            NOW
        );
        assert_eq!(
            wake_time(NOW, None, &config(), 0),
            NOW.add(Duration::from_secs(1))
        );
        let far = NOW.add(Duration::from_secs(3600));
        assert_eq!(
            wake_time(NOW, Some(far), &config(), 0),
            NOW.add(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_due_job_the_claim_could_not_take_backs_off_instead_of_spinning() {
        let overdue = Some(NOW.sub(Duration::from_secs(1)));
        // The first miss may be a job inserted just after the claim: look again at once.
        assert_eq!(wake_time(NOW, overdue, &config(), 1), NOW);
        // Then the job is held elsewhere: back off, doubling, to a cap.
        assert_eq!(
            wake_time(NOW, overdue, &config(), 2),
            NOW.add(Duration::from_millis(1))
        );
        assert_eq!(
            wake_time(NOW, overdue, &config(), 3),
            NOW.add(Duration::from_millis(2))
        );
        assert_eq!(
            wake_time(NOW, overdue, &config(), 50),
            NOW.add(Duration::from_millis(50))
        );
        // A later job keeps its own time.
        let later = NOW.add(Duration::from_millis(500));
        assert_eq!(
            wake_time(NOW, Some(later), &config(), 9),
            NOW.add(Duration::from_millis(450))
        );
    }

    #[test]
    fn store_retries_back_off_to_a_cap() {
        assert_eq!(store_retry_delay(1), Duration::from_millis(10));
        assert_eq!(store_retry_delay(2), Duration::from_millis(20));
        assert_eq!(store_retry_delay(100), Duration::from_secs(5));
    }
}
