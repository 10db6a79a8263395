//! A job task: waits for the claimed job's `run_at`, runs its handler under heartbeats, and
//! records the outcome, fenced on the lease token.
//!
//! It never claims and never decides when to look for work: that is `dispatch`.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use punctual_core::{FailDirective, FailOutcome, Job, JobState, LeaseToken, StoreError, Timestamp};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinError;

use crate::dispatch::store_retry_delay;
use crate::event::Event;
use crate::handler::{BoxError, JobContext, JobError};
use crate::scheduler::Inner;

/// How many times a completion or failure is retried when the store is unavailable, at least;
/// past that, retries go on only while the lease (as last confirmed) lasts. After that the job
/// is rescued: it may run again, never be lost.
const RECORD_ATTEMPTS_MIN: u32 = 8;

/// What became of a handler's run.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    /// The error's message, and what it asked of the retry (a `JobError`'s directive).
    Failed(String, FailDirective),
}

/// The handler's result, with a panic or abort turned into an error message.
pub(crate) fn outcome_of(joined: Result<Result<(), BoxError>, JoinError>) -> Outcome {
    match joined {
        Ok(Ok(())) => Outcome::Succeeded,
        Ok(Err(error)) => match error.downcast_ref::<JobError>() {
            Some(directed) => Outcome::Failed(directed.message().to_owned(), directed.directive()),
            None => Outcome::Failed(error.to_string(), FailDirective::Backoff),
        },
        Err(error) if error.is_panic() => Outcome::Failed(
            format!(
                "handler panicked: {}",
                panic_message(error.into_panic().as_ref())
            ),
            FailDirective::Backoff,
        ),
        Err(_) => Outcome::Failed("handler was aborted".to_owned(), FailDirective::Backoff),
    }
}

/// The text a panic was raised with, when it was a string.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "(no message)".to_owned()
    }
}

pub(crate) async fn run(inner: Arc<Inner>, job: Job, permit: OwnedSemaphorePermit) {
    let _permit = permit;
    // A claimed job always carries its lease; the fallbacks only keep this total.
    let (token, expires_at) = job
        .lease
        .as_ref()
        .map_or((job.lease_token, job.run_at), |lease| {
            (lease.token, lease.expires_at)
        });

    // Before the handler starts: wait for the job's time, then check the lease as
    // `before_start` says, until both hold at once. Both can come undone while the other is
    // checked: the timer is tokio's, so a clock stepped back reads less than `run_at` when it
    // fires, or after a check; and a check's answer can come back late (a slow store, a node
    // paused or cut off), when the lease it confirmed is nearly over or over, and the job may
    // have been rescued and run elsewhere. `lease_until` is the lease as last confirmed.
    let mut lease_until = expires_at;
    let mut now = inner.clock.now();
    let waited = job.run_at > now;
    let mut checks = 0;
    loop {
        match wait_until_due(&inner, &job, now).await {
            Wait::Stopping => {
                // The engine stops first: hand the job back untouched.
                release(&inner, &job, token, lease_until).await;
                return;
            }
            Wait::Due { now: due, slept } => {
                now = due;
                if checks > 0 && !slept && may_start(now, lease_until, inner.config.heartbeat) {
                    break;
                }
            }
        }
        if checks == START_CHECKS_MAX {
            // The store answers too late to be trusted with a start: do not run. The lease runs
            // out and the rescuer makes the job pending again; nothing is lost.
            inner.emit(Event::StoreError {
                operation: "extend_lease",
                error: "the lease was confirmed too late to start the handler".to_owned(),
            });
            return;
        }
        let check = before_start(now, waited, lease_until, inner.config.heartbeat);
        let Some(confirmed) = verified(&inner, &job, token, check, now, lease_until).await else {
            return;
        };
        lease_until = confirmed;
        checks += 1;
        now = inner.clock.now();
    }

    // Unreachable while the store honours the claim's kinds filter (the dispatcher asks only
    // for kinds with a handler here). Kept as a defence: should a store hand one over anyway, a
    // failed attempt with this error says what went wrong, where a release would loop unseen.
    let Some(handler) = inner.handlers.get(&job.kind).cloned() else {
        let error = format!(
            "no handler is registered for kind {:?} on node {}",
            job.kind.as_str(),
            inner.config.node
        );
        record_failure(
            &inner,
            &job,
            token,
            error,
            FailDirective::Backoff,
            lease_until,
        )
        .await;
        return;
    };
    let cancellation = inner.stop_handlers.child_token();
    let _registered = Registered::new(&inner, job.id, &cancellation);
    let context = JobContext {
        id: job.id,
        kind: job.kind.clone(),
        queue: job.queue.clone(),
        attempt: job.attempt,
        attempt_max: job.attempt_max,
        lease_token: token,
        lease_expires_at: lease_until,
        run_at: job.run_at,
        payload: job.payload.clone(),
        cancellation: cancellation.clone(),
    };
    let started_at = inner.clock.now();
    inner.emit(Event::Started {
        id: job.id,
        kind: job.kind.clone(),
        attempt: job.attempt,
        attempt_max: job.attempt_max,
        token,
        run_at: job.run_at,
        started_at,
    });

    // The handler runs in its own task so that a panic is caught as a `JoinError`.
    let mut work = tokio::spawn(async move { handler.run(context).await });
    let mut lease_lost = false;
    let timeout = inner.timeout_of(&job.kind);
    // When the handler is told to stop for its timeout, and when it is aborted after that.
    let mut deadline = timeout.map(|timeout| tokio::time::Instant::now() + timeout);
    let mut timed_out = false;
    let joined = loop {
        tokio::select! {
            // A handler that returned as a heartbeat fell due has its outcome recorded, not its
            // lease renewed for work that is done; and `biased` makes that choice the same in
            // every run (tokio's random pick is not seedable), which the simulation relies on.
            biased;
            joined = &mut work => break joined,
            () = sleep_until_some(deadline) => {
                if timed_out {
                    // Told to stop and still running: ended here.
                    work.abort();
                    break (&mut work).await;
                }
                timed_out = true;
                cancellation.cancel();
                deadline = Some(tokio::time::Instant::now() + TIMEOUT_GRACE);
            }
            () = tokio::time::sleep(inner.config.heartbeat), if !lease_lost => {
                let now = inner.clock.now();
                match inner.store.extend_lease(job.id, token, now.add(inner.config.lease), now).await {
                    Ok(()) => lease_until = now.add(inner.config.lease),
                    Err(StoreError::LeaseLost { .. } | StoreError::NotFound(_)) => {
                        lease_lost = true;
                        cancellation.cancel();
                        inner.emit(Event::LeaseLost { id: job.id, kind: job.kind.clone(), token });
                    }
                    Err(error) => {
                        inner.emit(Event::StoreError { operation: "extend_lease", error: error.to_string() });
                        if inner.clock.now() >= lease_until {
                            // The lease ran out unrenewed: the job may be rescued and run
                            // elsewhere. Ask the handler to stop; its outcome is fenced anyway.
                            cancellation.cancel();
                        }
                    }
                }
            }
        }
    };
    if lease_lost {
        // Another holder may own the job now; whatever we would write is refused anyway.
        return;
    }
    let outcome = match (timed_out, timeout) {
        (true, Some(timeout)) => Outcome::Failed(
            format!("the handler timed out after {} ms", timeout.as_millis()),
            FailDirective::Backoff,
        ),
        _ => outcome_of(joined),
    };
    match outcome {
        Outcome::Succeeded => {
            let result = with_retries(&inner, "complete", lease_until, || {
                inner.store.complete(job.id, token, inner.clock.now())
            })
            .await;
            match result {
                Ok(()) => inner.emit(Event::Succeeded {
                    id: job.id,
                    kind: job.kind.clone(),
                    attempt: job.attempt,
                    took: inner.clock.now().duration_since(started_at),
                }),
                Err(error) => report_lost_write(&inner, &job, token, error),
            }
        }
        Outcome::Failed(error, directive) => {
            record_failure(&inner, &job, token, error, directive, lease_until).await;
        }
    }
}

/// A running handler's entry in `Inner::running`, removed when its run ends however it ends.
struct Registered<'a> {
    inner: &'a Inner,
    id: punctual_core::JobId,
}

impl<'a> Registered<'a> {
    fn new(
        inner: &'a Inner,
        id: punctual_core::JobId,
        cancellation: &tokio_util::sync::CancellationToken,
    ) -> Registered<'a> {
        inner
            .running
            .lock()
            .expect("no panic while holding the running lock")
            .insert(id, cancellation.clone());
        Registered { inner, id }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.inner.running.lock() {
            running.remove(&self.id);
        }
    }
}

/// How long a handler past its timeout has, once told to stop, before it is aborted.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn record_failure(
    inner: &Inner,
    job: &Job,
    token: LeaseToken,
    error: String,
    directive: FailDirective,
    lease_until: Timestamp,
) {
    let outcome = job.retry.decide_with_random_jitter(
        job.attempt,
        job.attempt_max,
        inner.clock.now(),
        directive,
    );
    let result = with_retries(inner, "fail", lease_until, || {
        inner
            .store
            .fail(job.id, token, &error, outcome, inner.clock.now())
    })
    .await;
    match result {
        Ok(_) => {
            inner.emit(Event::Failed {
                id: job.id,
                kind: job.kind.clone(),
                attempt: job.attempt,
                attempt_max: job.attempt_max,
                error,
                outcome,
            });
            if let FailOutcome::Retry { at } = outcome {
                inner.wake_for(at);
            }
        }
        Err(store_error) => report_lost_write(inner, job, token, store_error),
    }
}

async fn release(inner: &Inner, job: &Job, token: LeaseToken, lease_until: Timestamp) {
    match with_retries(inner, "release", lease_until, || {
        inner.store.release(job.id, token, inner.clock.now())
    })
    .await
    {
        Ok(()) => {
            inner.released.fetch_add(1, Ordering::Relaxed);
            inner.emit(Event::Released { id: job.id });
        }
        Err(error) => report_lost_write(inner, job, token, error),
    }
}

/// What must be verified before a claimed job's handler starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BeforeStart {
    /// The claim is fresh: run.
    Run,
    /// The job waited in the claim window, where it may have been cancelled: read its state.
    CheckStillHeld,
    /// Less than a heartbeat of the lease is left (the node was paused, starved or cut off
    /// since the claim): the job may have been rescued and run elsewhere. Renew the lease,
    /// fenced on the token, and run only if that succeeds.
    RenewLease,
}

pub(crate) fn before_start(
    now: Timestamp,
    waited: bool,
    expires_at: Timestamp,
    heartbeat: Duration,
) -> BeforeStart {
    if now.add(heartbeat) >= expires_at {
        BeforeStart::RenewLease
    } else if waited {
        BeforeStart::CheckStillHeld
    } else {
        BeforeStart::Run
    }
}

/// How a wait for a job's `run_at` ended.
enum Wait {
    /// The engine is stopping.
    Stopping,
    /// The clock reads `run_at` or later: `now`; `slept` if it had to wait for it.
    Due { now: Timestamp, slept: bool },
}

/// Sleeps until the clock (not tokio's timer: see `run`) reads the job's `run_at`, given that
/// it read `now`, or until the engine stops.
async fn wait_until_due(inner: &Inner, job: &Job, mut now: Timestamp) -> Wait {
    let mut slept = false;
    while job.run_at > now {
        let due = tokio::time::sleep_until(inner.instant_at(job.run_at, now));
        tokio::select! {
            biased;
            () = inner.stop_claiming.cancelled() => return Wait::Stopping,
            () = due => {}
        }
        slept = true;
        now = inner.clock.now();
    }
    if inner.stop_claiming.is_cancelled() && !slept {
        return Wait::Stopping;
    }
    Wait::Due { now, slept }
}

/// Whether a handler may start at `now` under a lease confirmed until `lease_until`: only with
/// at least a heartbeat of it left, so that the lease is live when the handler starts and its
/// first heartbeat renews it before it runs out.
pub(crate) fn may_start(now: Timestamp, lease_until: Timestamp, heartbeat: Duration) -> bool {
    now.add(heartbeat) < lease_until
}

/// How many checks before a start (`verified`) a job task makes, at most, when each answer
/// comes back too late to start on.
const START_CHECKS_MAX: u32 = 3;

/// Carries out `check` on a claim whose lease was `expires_at`; the expiry of the lease as the
/// store confirmed it, or `None` (with the reason reported) if the handler must not start.
async fn verified(
    inner: &Inner,
    job: &Job,
    token: LeaseToken,
    check: BeforeStart,
    now: Timestamp,
    expires_at: Timestamp,
) -> Option<Timestamp> {
    let held = match check {
        BeforeStart::Run => return Some(expires_at),
        BeforeStart::CheckStillHeld => still_held(inner, job, token, expires_at).await,
        BeforeStart::RenewLease => {
            match inner
                .store
                .extend_lease(job.id, token, now.add(inner.config.lease), now)
                .await
            {
                Ok(()) => Some(now.add(inner.config.lease)),
                Err(StoreError::LeaseLost { .. } | StoreError::NotFound(_)) => None,
                Err(error) => {
                    // Unsure whether we still hold it: do not run. The lease runs out and the
                    // rescuer makes the job pending again; nothing is lost.
                    inner.emit(Event::StoreError {
                        operation: "extend_lease",
                        error: error.to_string(),
                    });
                    return None;
                }
            }
        }
    };
    if held.is_none() {
        // Cancelled, or rescued and possibly run elsewhere, since the claim.
        inner.emit(Event::LeaseLost {
            id: job.id,
            kind: job.kind.clone(),
            token,
        });
    }
    held
}

/// The expiry of the job's lease if it is still running under `token`. A read, so it costs no
/// commit; on a store error the claim's expiry, `expires_at`, stands (the completion is fenced
/// anyway).
async fn still_held(
    inner: &Inner,
    job: &Job,
    token: LeaseToken,
    expires_at: Timestamp,
) -> Option<Timestamp> {
    match inner.store.get(job.id).await {
        Ok(Some(stored)) if stored.state == JobState::Running && stored.lease_token == token => {
            Some(stored.lease.map_or(expires_at, |lease| lease.expires_at))
        }
        Ok(_) => None,
        Err(_) => Some(expires_at),
    }
}

fn report_lost_write(inner: &Inner, job: &Job, token: LeaseToken, error: StoreError) {
    match error {
        StoreError::LeaseLost { .. } | StoreError::NotFound(_) => {
            inner.emit(Event::LeaseLost {
                id: job.id,
                kind: job.kind.clone(),
                token,
            });
        }
        // The lease will expire and the rescuer will make the job pending again.
        other => {
            tracing::warn!(
                job = %job.id,
                token = token.0,
                error = %other,
                "outcome not recorded: the store was unreachable past the lease; the job will be rescued"
            );
            inner.emit(Event::StoreError {
                operation: "record outcome",
                error: other.to_string(),
            });
        }
    }
}

/// Calls `operation` until it succeeds, fails for a reason other than unavailability, or has
/// been tried `RECORD_ATTEMPTS_MIN` times and the lease (`lease_until`) has run out: a store
/// outage shorter than the lease (a PostgreSQL restart) loses no outcome.
async fn with_retries<T, F, Fut>(
    inner: &Inner,
    name: &'static str,
    lease_until: Timestamp,
    mut operation: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut failures = 0;
    loop {
        match operation().await {
            Err(StoreError::Unavailable(error))
                if failures + 1 < RECORD_ATTEMPTS_MIN || inner.clock.now() < lease_until =>
            {
                failures += 1;
                inner.emit(Event::StoreError {
                    operation: name,
                    error,
                });
                tokio::time::sleep(store_retry_delay(failures).min(Duration::from_secs(1))).await;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_claim_runs_and_a_waiting_one_is_checked() {
        let now = Timestamp::from_millis(1_000_000);
        let heartbeat = Duration::from_secs(10);
        let expires_at = now.add(Duration::from_secs(30));
        assert_eq!(
            before_start(now, false, expires_at, heartbeat),
            BeforeStart::Run
        );
        assert_eq!(
            before_start(now, true, expires_at, heartbeat),
            BeforeStart::CheckStillHeld
        );
    }

    #[test]
    fn a_claim_whose_lease_ran_low_renews_before_it_runs() {
        let now = Timestamp::from_millis(1_000_000);
        let heartbeat = Duration::from_secs(10);
        // A node paused past its lease, and one that resumes with less than a heartbeat left.
        for expires_at in [
            now.sub(Duration::from_secs(5)),
            now.add(Duration::from_secs(9)),
        ] {
            assert_eq!(
                before_start(now, false, expires_at, heartbeat),
                BeforeStart::RenewLease
            );
            assert_eq!(
                before_start(now, true, expires_at, heartbeat),
                BeforeStart::RenewLease
            );
        }
    }

    #[test]
    fn a_handler_starts_only_with_a_heartbeat_of_its_confirmed_lease_left() {
        let now = Timestamp::from_millis(1_000_000);
        let heartbeat = Duration::from_millis(250);
        // A renewal answered at once leaves the whole lease.
        assert!(may_start(now, now.add(Duration::from_secs(1)), heartbeat));
        // An answer that comes back late, as the lease it confirmed runs out or after it did
        // (the simulation's seeds in crates/punctual-sim/tests/it/regressions.rs).
        assert!(!may_start(now, now.add(heartbeat), heartbeat));
        assert!(!may_start(now, now.sub(Duration::from_secs(3)), heartbeat));
    }

    #[tokio::test]
    async fn panics_and_errors_become_failure_messages() {
        let panicked = tokio::spawn(async { panic!("boom") })
            .await
            .map(|()| Ok(()));
        assert_eq!(
            outcome_of(panicked),
            Outcome::Failed("handler panicked: boom".to_owned(), FailDirective::Backoff)
        );
        let failed: Result<Result<(), BoxError>, JoinError> = Ok(Err("disk full".into()));
        assert_eq!(
            outcome_of(failed),
            Outcome::Failed("disk full".to_owned(), FailDirective::Backoff)
        );
        let gone: Result<Result<(), BoxError>, JoinError> =
            Ok(Err(JobError::permanent("gone").into()));
        assert_eq!(
            outcome_of(gone),
            Outcome::Failed("gone".to_owned(), FailDirective::Permanent)
        );
        let later = Duration::from_secs(7);
        let limited: Result<Result<(), BoxError>, JoinError> =
            Ok(Err(JobError::retry_after(later, "slow down").into()));
        assert_eq!(
            outcome_of(limited),
            Outcome::Failed("slow down".to_owned(), FailDirective::After(later))
        );
        assert_eq!(outcome_of(Ok(Ok(()))), Outcome::Succeeded);
    }
}
