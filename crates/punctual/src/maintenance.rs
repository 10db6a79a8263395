//! Maintenance on a timer: the rescuer ends expired leases (a holder that died), the purger
//! deletes finished jobs past their retention.
//!
//! Both are idempotent and safe to run on every node at once: each store operation is atomic,
//! so two rescuers never rescue the same lease twice.

use std::sync::Arc;
use std::time::Duration;

use crate::event::Event;
use crate::scheduler::Inner;

/// Most rows one maintenance pass touches before it yields.
const PASS_ROWS_MAX: usize = 1_000;

pub(crate) async fn rescue(inner: Arc<Inner>) {
    while tick(&inner, inner.config.rescue_interval).await {
        loop {
            let now = inner.clock.now();
            match inner.store.rescue_expired(now, PASS_ROWS_MAX).await {
                Ok(rescued) => {
                    let more = rescued.len() == PASS_ROWS_MAX;
                    if !rescued.is_empty() {
                        inner.wake_for(now);
                    }
                    for outcome in rescued {
                        inner.emit(Event::Rescued(outcome));
                    }
                    if !more {
                        break;
                    }
                }
                Err(error) => {
                    inner.emit(Event::StoreError {
                        operation: "rescue_expired",
                        error: error.to_string(),
                    });
                    break;
                }
            }
        }
    }
}

pub(crate) async fn purge(inner: Arc<Inner>) {
    while tick(&inner, inner.config.purge_interval).await {
        loop {
            let finished_before = inner.clock.now().sub(inner.config.retention);
            match inner
                .store
                .purge_finished(finished_before, PASS_ROWS_MAX)
                .await
            {
                Ok(count) => {
                    if count > 0 {
                        inner.emit(Event::Purged { count });
                    }
                    if count < PASS_ROWS_MAX as u64 {
                        break;
                    }
                }
                Err(error) => {
                    inner.emit(Event::StoreError {
                        operation: "purge_finished",
                        error: error.to_string(),
                    });
                    break;
                }
            }
        }
    }
}

/// Forwards the store's insert hints (jobs scheduled by other processes) to the dispatcher, so
/// it need not wait for its bounded poll.
pub(crate) async fn forward_insert_hints(inner: Arc<Inner>) {
    let listening = tokio::select! {
        listening = inner.store.listen() => listening,
        () = inner.stop_claiming.cancelled() => return,
    };
    let mut hints = match listening {
        Ok(Some(hints)) => hints,
        Ok(None) => return,
        Err(error) => {
            // Without hints the dispatcher still sees every job within `Config::poll_max`.
            inner.emit(Event::StoreError {
                operation: "listen",
                error: error.to_string(),
            });
            return;
        }
    };
    loop {
        tokio::select! {
            run_at = hints.next() => inner.wake_for(run_at),
            () = inner.stop_claiming.cancelled() => return,
        }
    }
}

/// Waits `interval`; false once the engine is stopping.
async fn tick(inner: &Inner, interval: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(interval) => true,
        () = inner.stop_claiming.cancelled() => false,
    }
}
