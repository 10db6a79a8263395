//! Supervision of the engine's loops (dispatcher, leadership, rescuer, purger, insert hints).
//!
//! Each loop runs in a task of its own under a supervisor. A loop that returns has seen the
//! engine stop. A loop that panics is logged, counted (`Event::LoopPanicked`,
//! `Scheduler::health`) and started again after `restart_delay`, so that a bug in one loop
//! cannot leave a node that looks alive while it no longer claims, leads, rescues or purges.
//! The loops keep their state in `Inner` or rebuild it from the store, so a fresh start is
//! correct: a restarted dispatcher asks the store what is due, a restarted leadership loop
//! renews the term this node believes it holds.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::event::Event;
use crate::execute::panic_message;
use crate::scheduler::Inner;

/// A loop that ran this long before it panicked starts again at the shortest delay.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// How long to wait before starting a loop again after its `panics`-th consecutive panic:
/// doubling from 100 ms, at most 30 s.
pub(crate) fn restart_delay(panics: u32) -> Duration {
    let doublings = panics.saturating_sub(1).min(9);
    (Duration::from_millis(100) * (1u32 << doublings)).min(Duration::from_secs(30))
}

/// Runs `body` (a loop named `name`) until it returns, starting it again after each panic.
pub(crate) async fn supervise<F, Fut>(inner: Arc<Inner>, name: &'static str, body: F)
where
    F: Fn(Arc<Inner>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut panics = 0u32;
    loop {
        let started = tokio::time::Instant::now();
        let error = match tokio::spawn(body(inner.clone())).await {
            Ok(()) => return,
            Err(error) => error,
        };
        if !error.is_panic() {
            // Cancelled: the runtime is shutting down.
            return;
        }
        if started.elapsed() >= HEALTHY_RUN {
            panics = 0;
        }
        panics = panics.saturating_add(1);
        let total = inner.loop_panics.fetch_add(1, Ordering::Relaxed) + 1;
        let message = panic_message(error.into_panic().as_ref());
        let delay = restart_delay(panics);
        tracing::error!(
            task = name,
            panic = %message,
            consecutive = panics,
            total,
            restart_in_ms = delay.as_millis() as u64,
            "an engine loop panicked; it will be started again"
        );
        inner.emit(Event::LoopPanicked {
            task: name,
            message,
            consecutive: panics,
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = inner.stop_claiming.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_100_ms_to_at_most_30_s() {
        let delays: Vec<u64> = [1, 2, 3, 4, 9, 10, 11, 1_000, u32::MAX]
            .into_iter()
            .map(|panics| restart_delay(panics).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 25_600, 30_000, 30_000, 30_000, 30_000]
        );
        assert_eq!(restart_delay(0), Duration::from_millis(100));
    }
}
