//! `FaultyStore`: one node's way to the shared `MemoryStore`, with the plan's faults on it and
//! the history's store entries recorded as the store applies each write.
//!
//! A call may be held (the node is stalled: its requests arrive late, carrying the `now` they
//! were sent with), delayed before or after the store applies it (latency, a spike), refused
//! with `Unavailable` before it is applied, or applied with its answer lost (`Unavailable`
//! after the fact, as when a commit's acknowledgement is lost). A dead node's calls never
//! complete. The fault draws come from a generator of this node incarnation's own, so one
//! node's calls do not shift another's draws.
//!
//! It must not change what the store decides: everything it records is what `MemoryStore`
//! answered, except under a `Mutation`, which breaks the store on purpose to show that the
//! checker notices.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use punctual_core::{
    ApiToken, ClaimRequest, ClaimedJob, Cursor, FailOutcome, IdempotencyRecord, Idempotent, Job,
    JobFilter, JobId, JobPage, JobState, Kind, LeaderTerm, LeaseToken, NewJob, NodeId, Queue,
    QueueStats, RescueOutcome, StateCount, Store, StoreError, Timestamp, TokenId, limits,
};

use crate::Mutation;
use crate::history::{Entry, Node};
use crate::rng::{Rng, key};
use crate::world::{Shared, gate};

/// Where a drawn `Unavailable` strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// Before the store sees the call: nothing changed.
    Before,
    /// After the store applied it: the change stands, the answer is lost.
    After,
}

/// The faults drawn for one call.
#[derive(Clone, Copy, Debug, Default)]
struct Draw {
    failure: Option<Failure>,
    delay_before: Duration,
    delay_after: Duration,
}

pub(crate) struct FaultyStore {
    shared: Arc<Shared>,
    node: Node,
    dead: Arc<AtomicBool>,
    rng: Mutex<Rng>,
}

impl FaultyStore {
    pub(crate) fn new(
        shared: Arc<Shared>,
        node: Node,
        incarnation: u32,
        dead: Arc<AtomicBool>,
    ) -> FaultyStore {
        let rng = Rng::new(key(&[
            shared.plan.seed,
            node as u64,
            u64::from(incarnation),
        ]));
        FaultyStore {
            shared,
            node,
            dead,
            rng: Mutex::new(rng),
        }
    }

    fn draw(&self) -> Draw {
        let plan = &self.shared.plan;
        let at = self.shared.elapsed();
        if at >= plan.workload {
            return Draw::default();
        }
        let error_percent = plan
            .outages
            .iter()
            .filter(|window| window.covers(self.node, at))
            .map(|window| window.level)
            .fold(plan.error_percent, u64::max);
        let latency_max_ms = plan
            .spikes
            .iter()
            .filter(|window| window.covers(self.node, at))
            .map(|window| window.level)
            .fold(plan.latency_max.as_millis() as u64, u64::max);
        // Nothing else holds this lock, and nothing panics under it.
        let mut rng = self.rng.lock().expect("the draw lock is never poisoned");
        let failure = rng.percent(error_percent).then(|| {
            if rng.percent(50) {
                Failure::Before
            } else {
                Failure::After
            }
        });
        let latency = rng.between(0, latency_max_ms);
        let before = rng.between(0, latency);
        Draw {
            failure,
            delay_before: Duration::from_millis(before),
            delay_after: Duration::from_millis(latency - before),
        }
    }

    /// The way in: held while the node is stalled, delayed, perhaps refused.
    async fn enter(&self, operation: &'static str) -> Result<Draw, StoreError> {
        gate(&self.shared, self.node, &self.dead).await;
        let draw = self.draw();
        if !draw.delay_before.is_zero() {
            tokio::time::sleep(draw.delay_before).await;
            gate(&self.shared, self.node, &self.dead).await;
        }
        if draw.failure == Some(Failure::Before) {
            return Err(StoreError::Unavailable(format!(
                "simulated outage before {operation}"
            )));
        }
        Ok(draw)
    }

    /// The way out: delayed, held while the node is stalled, perhaps lost.
    async fn leave<T>(
        &self,
        draw: Draw,
        operation: &'static str,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !draw.delay_after.is_zero() {
            tokio::time::sleep(draw.delay_after).await;
        }
        gate(&self.shared, self.node, &self.dead).await;
        if draw.failure == Some(Failure::After) {
            return Err(StoreError::Unavailable(format!(
                "simulated lost answer to {operation}"
            )));
        }
        result
    }

    fn record(&self, entry: Entry) {
        self.shared.record(entry);
    }

    fn refused<T>(
        &self,
        operation: &'static str,
        id: JobId,
        token: LeaseToken,
        result: &Result<T, StoreError>,
    ) {
        if let Err(StoreError::LeaseLost { .. } | StoreError::NotFound(_)) = result {
            self.record(Entry::Refused {
                node: self.node,
                operation,
                id,
                token,
            });
        }
    }

    fn mutation(&self) -> Option<Mutation> {
        self.shared.options.mutation
    }

    /// `Mutation::RescueEarly`: cuts every running job's lease short to `now`, unrecorded, so
    /// the rescue that follows ends leases that have not expired.
    async fn cut_leases_short(&self, now: Timestamp) {
        let filter = JobFilter {
            state: Some(JobState::Running),
            ..JobFilter::default()
        };
        let store = &self.shared.store;
        let page = store
            .list(filter, None, limits::PAGE_SIZE_MAX)
            .await
            .expect("MemoryStore lists");
        for job in page.jobs {
            let _ = store.extend_lease(job.id, job.lease_token, now, now).await;
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn insert(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<JobId>, StoreError> {
        let draw = self.enter("insert").await?;
        let planned: Vec<(JobId, Timestamp, u32)> = jobs
            .iter()
            .map(|job| (job.id, job.run_at, job.attempt_max))
            .collect();
        let forget = self.mutation() == Some(Mutation::ForgetInserts)
            && planned
                .first()
                .is_some_and(|(id, _, _)| id.as_u128() % 3 == 0);
        let result = if forget {
            Ok(planned.iter().map(|(id, _, _)| *id).collect())
        } else {
            self.shared.store.insert(jobs, now).await
        };
        if result.is_ok() && !forget {
            for (id, run_at, attempt_max) in planned {
                self.record(Entry::Inserted {
                    node: self.node,
                    id,
                    run_at,
                    attempt_max,
                });
            }
        }
        self.leave(draw, "insert", result).await
    }

    async fn claim(
        &self,
        request: ClaimRequest,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let draw = self.enter("claim").await?;
        let due_by = request.due_by;
        let result = self.shared.store.claim(request, now).await;
        if let Ok(claimed) = &result {
            for job in claimed {
                let lease = job.lease.as_ref().expect("a claimed job holds a lease");
                self.record(Entry::Claimed {
                    node: self.node,
                    id: job.id,
                    token: lease.token,
                    attempt: job.attempt,
                    attempt_max: job.attempt_max,
                    run_at: job.run_at,
                    expires_at: lease.expires_at,
                    due_by,
                    now,
                });
                // The store stores the next occurrence at the first claim of one; this is the
                // same derivation (`Job::next_occurrence`), to know which id to look for.
                if lease.token == LeaseToken(1)
                    && let Some(next) = job.next_occurrence(now)
                {
                    self.record(Entry::Occurrence {
                        parent: job.id,
                        id: next.id,
                        run_at: next.run_at,
                    });
                }
            }
        }
        self.leave(draw, "claim", result).await
    }

    async fn extend_lease(
        &self,
        id: JobId,
        token: LeaseToken,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let draw = self.enter("extend_lease").await?;
        let result = self
            .shared
            .store
            .extend_lease(id, token, expires_at, now)
            .await;
        if result.is_ok() {
            self.record(Entry::Extended {
                node: self.node,
                id,
                token,
                expires_at,
                now,
            });
        }
        self.refused("extend_lease", id, token, &result);
        self.leave(draw, "extend_lease", result).await
    }

    async fn complete(
        &self,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let draw = self.enter("complete").await?;
        let mut result = self.shared.store.complete(id, token, now).await;
        if self.mutation() == Some(Mutation::AcceptStaleCompletions)
            && matches!(result, Err(StoreError::LeaseLost { .. }))
        {
            result = Ok(());
        }
        if result.is_ok() {
            self.record(Entry::Completed {
                node: self.node,
                id,
                token,
                now,
            });
        }
        self.refused("complete", id, token, &result);
        self.leave(draw, "complete", result).await
    }

    async fn fail(
        &self,
        id: JobId,
        token: LeaseToken,
        error: &str,
        outcome: FailOutcome,
        now: Timestamp,
    ) -> Result<JobState, StoreError> {
        let draw = self.enter("fail").await?;
        let result = self.shared.store.fail(id, token, error, outcome, now).await;
        if result.is_ok() {
            self.record(Entry::Failed {
                node: self.node,
                id,
                token,
                outcome,
                now,
            });
        }
        self.refused("fail", id, token, &result);
        self.leave(draw, "fail", result).await
    }

    async fn release(
        &self,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let draw = self.enter("release").await?;
        let result = self.shared.store.release(id, token, now).await;
        if result.is_ok() {
            self.record(Entry::Released {
                node: self.node,
                id,
                token,
            });
        }
        self.refused("release", id, token, &result);
        self.leave(draw, "release", result).await
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        let draw = self.enter("cancel").await?;
        let result = self.shared.store.cancel(id, now).await;
        if result.is_ok() {
            self.record(Entry::Cancelled {
                node: self.node,
                id,
                now,
            });
        }
        self.leave(draw, "cancel", result).await
    }

    async fn reschedule(
        &self,
        id: JobId,
        run_at: Timestamp,
        now: Timestamp,
    ) -> Result<Job, StoreError> {
        // No simulated caller reschedules; the checker's model has no transition for it.
        let _ = (id, run_at, now);
        Err(StoreError::Unavailable(
            "reschedule is not part of the simulation".to_owned(),
        ))
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let draw = self.enter("get").await?;
        let result = self.shared.store.get(id).await;
        self.leave(draw, "get", result).await
    }

    async fn list(
        &self,
        filter: JobFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<JobPage, StoreError> {
        let draw = self.enter("list").await?;
        let result = self.shared.store.list(filter, after, limit).await;
        self.leave(draw, "list", result).await
    }

    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        let draw = self.enter("counts").await?;
        let result = self.shared.store.counts().await;
        self.leave(draw, "counts", result).await
    }

    async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>, StoreError> {
        let draw = self.enter("queue_stats").await?;
        let result = self.shared.store.queue_stats(now).await;
        self.leave(draw, "queue_stats", result).await
    }

    async fn next_due(
        &self,
        queues: Option<&[Queue]>,
        kinds: Option<&[Kind]>,
    ) -> Result<Option<Timestamp>, StoreError> {
        let draw = self.enter("next_due").await?;
        let result = self.shared.store.next_due(queues, kinds).await;
        self.leave(draw, "next_due", result).await
    }

    async fn next_lease_expiry(&self) -> Result<Option<Timestamp>, StoreError> {
        let draw = self.enter("next_lease_expiry").await?;
        let result = self.shared.store.next_lease_expiry().await;
        self.leave(draw, "next_lease_expiry", result).await
    }

    async fn lead(
        &self,
        node: &NodeId,
        term: Option<LeaderTerm>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        let draw = self.enter("lead").await?;
        let result = self.shared.store.lead(node, term, lease, now).await;
        if let Ok(Some(granted)) = &result {
            self.record(Entry::Led {
                node: self.node,
                term: *granted,
                expires_at: now.add(lease.clamp(limits::LEASE_MIN, limits::LEASE_MAX)),
                now,
            });
        }
        self.leave(draw, "lead", result).await
    }

    async fn resign(&self, node: &NodeId, term: LeaderTerm) -> Result<(), StoreError> {
        let draw = self.enter("resign").await?;
        let result = self.shared.store.resign(node, term).await;
        if result.is_ok() {
            self.record(Entry::Resigned {
                node: self.node,
                term,
            });
        }
        self.leave(draw, "resign", result).await
    }

    async fn rescue_expired(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<RescueOutcome>, StoreError> {
        let draw = self.enter("rescue_expired").await?;
        if self.mutation() == Some(Mutation::RescueEarly) {
            self.cut_leases_short(now).await;
        }
        let result = self.shared.store.rescue_expired(term, now, limit).await;
        if let Ok(rescued) = &result {
            for outcome in rescued {
                self.record(Entry::Rescued {
                    node: self.node,
                    term,
                    id: outcome.id,
                    token: outcome.token,
                    state: outcome.state,
                    now,
                });
            }
        }
        self.leave(draw, "rescue_expired", result).await
    }

    async fn purge_finished(
        &self,
        term: LeaderTerm,
        finished_before: Timestamp,
        limit: usize,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let draw = self.enter("purge_finished").await?;
        let result = self
            .shared
            .store
            .purge_finished(term, finished_before, limit, now)
            .await;
        if result.is_ok() {
            self.record(Entry::Duty {
                node: self.node,
                term,
                now,
            });
        }
        self.leave(draw, "purge_finished", result).await
    }

    async fn insert_idempotent(
        &self,
        jobs: Vec<NewJob>,
        record: IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Idempotent, StoreError> {
        // No simulated caller uses idempotency keys; refused so that none slips in unrecorded.
        let _ = (jobs, record, now);
        Err(StoreError::Unavailable(
            "insert_idempotent is not part of the simulation".to_owned(),
        ))
    }

    async fn purge_idempotency(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let draw = self.enter("purge_idempotency").await?;
        let result = self.shared.store.purge_idempotency(term, now, limit).await;
        if result.is_ok() {
            self.record(Entry::Duty {
                node: self.node,
                term,
                now,
            });
        }
        self.leave(draw, "purge_idempotency", result).await
    }

    async fn insert_token(&self, token: ApiToken) -> Result<(), StoreError> {
        self.shared.store.insert_token(token).await
    }

    async fn get_token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
        self.shared.store.get_token(id).await
    }

    async fn list_tokens(
        &self,
        after: Option<&TokenId>,
        limit: usize,
    ) -> Result<Vec<ApiToken>, StoreError> {
        self.shared.store.list_tokens(after, limit).await
    }

    async fn revoke_token(&self, id: &TokenId, now: Timestamp) -> Result<ApiToken, StoreError> {
        self.shared.store.revoke_token(id, now).await
    }

    punctual_core::delegate_schedule_methods!(this => this.shared.store);
}
