//! Leader duties and other background work: the leadership loop elects this node through the
//! store (or renews its term), and while it leads, the rescuer ends expired leases (a holder that
//! died) and the purger deletes finished jobs past their retention and expired idempotency keys.
//! Also forwards the store's
//! insert hints to the dispatcher.
//!
//! The duties run on one node at a time: several nodes sharing a store would otherwise all scan
//! for the same expired leases and finished jobs. The store fences each duty with the leader's
//! term, so a node that lost leadership without noticing (paused, cut off) is refused
//! (`StoreError::NotLeader`) and changes nothing; it then stops its duties until it is elected
//! again. What this node believes about its leadership is `Leadership`, whose changes are plain
//! functions that return the events to report.
//!
//! Must not decide a transition of a job (the store does), nor run a duty without a term.

use std::sync::Arc;
use std::time::Duration;

use punctual_core::{Hint, LeaderTerm, StoreError};

use crate::event::Event;
use crate::scheduler::Inner;

/// Most rows one maintenance pass touches before it yields.
const PASS_ROWS_MAX: usize = 1_000;

/// What this node believes about its leadership: the term it holds, if any.
#[derive(Debug, Default)]
pub(crate) struct Leadership {
    term: Option<LeaderTerm>,
}

impl Leadership {
    pub(crate) fn term(&self) -> Option<LeaderTerm> {
        self.term
    }

    /// The store answered a `lead` call: this node leads under `answer`, or does not lead.
    pub(crate) fn answered(&mut self, answer: Option<LeaderTerm>) -> Vec<Event> {
        if answer == self.term {
            return Vec::new();
        }
        let mut events = Vec::with_capacity(2);
        if let Some(term) = self.term {
            events.push(Event::LeaderLost { term });
        }
        if let Some(term) = answer {
            events.push(Event::LeaderElected { term });
        }
        self.term = answer;
        events
    }

    /// The store refused a duty under `term`, or this node resigned it. A term already
    /// replaced (by a later answer) is not lost again.
    pub(crate) fn lost(&mut self, term: LeaderTerm) -> Vec<Event> {
        if self.term != Some(term) {
            return Vec::new();
        }
        self.term = None;
        vec![Event::LeaderLost { term }]
    }
}

/// Asks to lead (or renews) at once and then every `Config::leader_renew`; on stop, resigns, so
/// another node need not wait for this node's leadership to expire.
pub(crate) async fn lead(inner: Arc<Inner>) {
    let config = &inner.config;
    loop {
        // Not raced against stop: a call dropped half way could leave this node leading, unaware,
        // until its leadership expires; it is one short statement.
        let answer = inner
            .store
            .lead(
                &config.node,
                inner.leader_term(),
                config.leader_lease,
                inner.clock.now(),
            )
            .await;
        match answer {
            Ok(answer) => inner.update_leadership(|leadership| leadership.answered(answer)),
            // Keep the belief: if the leadership lapses meanwhile, the store refuses the next
            // duty, and that is when it is lost.
            Err(error) => inner.emit(Event::StoreError {
                operation: "lead",
                error: error.to_string(),
            }),
        }
        if !tick(&inner, config.leader_renew).await {
            break;
        }
    }
    if let Some(term) = inner.leader_term() {
        if let Err(error) = inner.store.resign(&config.node, term).await {
            // The leadership then expires by itself, within `leader_lease`.
            inner.emit(Event::StoreError {
                operation: "resign",
                error: error.to_string(),
            });
        }
        inner.update_leadership(|leadership| leadership.lost(term));
    }
}

/// Emits the outcome of a duty's store call that failed: a refusal of the term ends this node's
/// leadership; any other error is retried at the next tick.
pub(crate) fn duty_failed(inner: &Inner, operation: &'static str, error: StoreError) {
    match error {
        StoreError::NotLeader { term } => {
            inner.update_leadership(|leadership| leadership.lost(term));
        }
        error => inner.emit(Event::StoreError {
            operation,
            error: error.to_string(),
        }),
    }
}

pub(crate) async fn rescue(inner: Arc<Inner>) {
    while tick(&inner, inner.config.rescue_interval).await {
        let Some(term) = inner.leader_term() else {
            continue;
        };
        loop {
            let now = inner.clock.now();
            match inner.store.rescue_expired(term, now, PASS_ROWS_MAX).await {
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
                    duty_failed(&inner, "rescue_expired", error);
                    break;
                }
            }
        }
    }
}

pub(crate) async fn purge(inner: Arc<Inner>) {
    while tick(&inner, inner.config.purge_interval).await {
        let Some(term) = inner.leader_term() else {
            continue;
        };
        loop {
            let now = inner.clock.now();
            let finished_before = now.sub(inner.config.retention);
            match inner
                .store
                .purge_finished(term, finished_before, PASS_ROWS_MAX, now)
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
                    duty_failed(&inner, "purge_finished", error);
                    break;
                }
            }
        }
        // Expired idempotency keys go with the same duty, in passes of the same size.
        loop {
            let now = inner.clock.now();
            match inner
                .store
                .purge_idempotency(term, now, PASS_ROWS_MAX)
                .await
            {
                Ok(count) if count < PASS_ROWS_MAX as u64 => break,
                Ok(_) => {}
                Err(error) => {
                    duty_failed(&inner, "purge_idempotency", error);
                    break;
                }
            }
        }
        // And schedule ledger entries past their retention.
        loop {
            let now = inner.clock.now();
            let before = now.sub(inner.config.occurrence_retention);
            match inner
                .store
                .purge_occurrences(term, before, PASS_ROWS_MAX, now)
                .await
            {
                Ok(count) if count < PASS_ROWS_MAX as u64 => break,
                Ok(_) => {}
                Err(error) => {
                    duty_failed(&inner, "purge_occurrences", error);
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
            hint = hints.next_hint() => match hint {
                Hint::Due(run_at) => inner.wake_for(run_at),
                Hint::Cancelled(id) => inner.signal_cancel(id),
            },
            () = inner.stop_claiming.cancelled() => return,
        }
    }
}

/// Waits `interval`; false once the engine is stopping.
pub(crate) async fn tick(inner: &Inner, interval: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(interval) => true,
        () = inner.stop_claiming.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(events: &[Event]) -> Vec<(&'static str, u64)> {
        events
            .iter()
            .map(|event| match event {
                Event::LeaderElected { term } => ("elected", term.0),
                Event::LeaderLost { term } => ("lost", term.0),
                other => panic!("not a leadership event: {other:?}"),
            })
            .collect()
    }

    /// What this node believed, what the store answered, and the events that makes.
    type Case = (
        Option<LeaderTerm>,
        Option<LeaderTerm>,
        &'static [(&'static str, u64)],
    );

    #[test]
    fn leadership_changes_report_what_changed_and_nothing_else() {
        let (one, two) = (LeaderTerm(1), LeaderTerm(2));
        let cases: [Case; 6] = [
            (None, None, &[]),
            (None, Some(one), &[("elected", 1)]),
            // A renewal.
            (Some(one), Some(one), &[]),
            // Another node took over, or the lease lapsed.
            (Some(one), None, &[("lost", 1)]),
            // The lease lapsed and this node was elected again before it noticed.
            (Some(one), Some(two), &[("lost", 1), ("elected", 2)]),
            (Some(two), None, &[("lost", 2)]),
        ];
        for (held, answer, expected) in cases {
            let mut leadership = Leadership { term: held };
            let events = leadership.answered(answer);
            assert_eq!(terms(&events), expected, "{held:?} answered {answer:?}");
            assert_eq!(leadership.term(), answer);
        }
    }

    #[test]
    fn a_refused_term_is_lost_once_and_a_stale_refusal_is_ignored() {
        let mut leadership = Leadership::default();
        leadership.answered(Some(LeaderTerm(3)));
        // A duty begun under an earlier term, refused after this node was elected again.
        assert!(leadership.lost(LeaderTerm(2)).is_empty());
        assert_eq!(leadership.term(), Some(LeaderTerm(3)));
        assert_eq!(terms(&leadership.lost(LeaderTerm(3))), [("lost", 3)]);
        assert_eq!(leadership.term(), None);
        // The rescuer and the purger may both be refused the same term.
        assert!(leadership.lost(LeaderTerm(3)).is_empty());
    }
}
