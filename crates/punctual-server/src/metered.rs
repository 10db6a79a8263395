//! `MeteredStore`: the node's store, timed. Every call is measured into
//! `punctual_store_call_duration_seconds{operation}` and a failure counted in
//! `punctual_store_errors_total{operation}`; the call itself is passed through unchanged.
//!
//! Must not change what a call does, retry it, or hold anything across it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use punctual_core::{
    ApiToken, ClaimRequest, ClaimedJob, Cursor, FailOutcome, IdempotencyRecord, Idempotent,
    InsertHints, Job, JobFilter, JobId, JobPage, JobState, Kind, LeaderTerm, LeaseToken, NewJob,
    NodeId, Queue, QueueStats, RescueOutcome, StateCount, Store, StoreError, Timestamp, TokenId,
};

use crate::metrics::Metrics;

/// A store whose every call is timed into `Metrics`.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> MeteredStore {
        MeteredStore { inner, metrics }
    }

    fn record<T>(&self, operation: &'static str, started: Instant, result: &Result<T, StoreError>) {
        let failed = matches!(
            result,
            Err(StoreError::Unavailable(_) | StoreError::Corrupt(_))
        );
        self.metrics
            .store_call(operation, started.elapsed(), failed);
    }
}

/// Times one call of `$self.inner.$method(...)` under the name `$operation`.
macro_rules! timed {
    ($self:ident, $operation:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.record($operation, started, &result);
        result
    }};
}

#[async_trait]
impl Store for MeteredStore {
    async fn insert(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<JobId>, StoreError> {
        timed!(self, "insert", self.inner.insert(jobs, now))
    }

    async fn claim(
        &self,
        request: ClaimRequest,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        timed!(self, "claim", self.inner.claim(request, now))
    }

    async fn extend_lease(
        &self,
        id: JobId,
        token: LeaseToken,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        timed!(
            self,
            "extend_lease",
            self.inner.extend_lease(id, token, expires_at, now)
        )
    }

    async fn complete(
        &self,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        timed!(self, "complete", self.inner.complete(id, token, now))
    }

    async fn fail(
        &self,
        id: JobId,
        token: LeaseToken,
        error: &str,
        outcome: FailOutcome,
        now: Timestamp,
    ) -> Result<JobState, StoreError> {
        timed!(
            self,
            "fail",
            self.inner.fail(id, token, error, outcome, now)
        )
    }

    async fn release(
        &self,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        timed!(self, "release", self.inner.release(id, token, now))
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        timed!(self, "cancel", self.inner.cancel(id, now))
    }

    async fn reschedule(
        &self,
        id: JobId,
        run_at: Timestamp,
        now: Timestamp,
    ) -> Result<Job, StoreError> {
        timed!(self, "reschedule", self.inner.reschedule(id, run_at, now))
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        timed!(self, "get", self.inner.get(id))
    }

    async fn list(
        &self,
        filter: JobFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<JobPage, StoreError> {
        timed!(self, "list", self.inner.list(filter, after, limit))
    }

    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        timed!(self, "counts", self.inner.counts())
    }

    async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>, StoreError> {
        timed!(self, "queue_stats", self.inner.queue_stats(now))
    }

    async fn next_due(
        &self,
        queues: Option<&[Queue]>,
        kinds: Option<&[Kind]>,
    ) -> Result<Option<Timestamp>, StoreError> {
        timed!(self, "next_due", self.inner.next_due(queues, kinds))
    }

    async fn next_lease_expiry(&self) -> Result<Option<Timestamp>, StoreError> {
        timed!(self, "next_lease_expiry", self.inner.next_lease_expiry())
    }

    async fn lead(
        &self,
        node: &NodeId,
        term: Option<LeaderTerm>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        timed!(self, "lead", self.inner.lead(node, term, lease, now))
    }

    async fn resign(&self, node: &NodeId, term: LeaderTerm) -> Result<(), StoreError> {
        timed!(self, "resign", self.inner.resign(node, term))
    }

    async fn rescue_expired(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<RescueOutcome>, StoreError> {
        timed!(
            self,
            "rescue_expired",
            self.inner.rescue_expired(term, now, limit)
        )
    }

    async fn purge_finished(
        &self,
        term: LeaderTerm,
        finished_before: Timestamp,
        limit: usize,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        timed!(
            self,
            "purge_finished",
            self.inner.purge_finished(term, finished_before, limit, now)
        )
    }

    async fn insert_idempotent(
        &self,
        jobs: Vec<NewJob>,
        record: IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Idempotent, StoreError> {
        timed!(
            self,
            "insert_idempotent",
            self.inner.insert_idempotent(jobs, record, now)
        )
    }

    async fn purge_idempotency(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        timed!(
            self,
            "purge_idempotency",
            self.inner.purge_idempotency(term, now, limit)
        )
    }

    async fn insert_token(&self, token: ApiToken) -> Result<(), StoreError> {
        timed!(self, "insert_token", self.inner.insert_token(token))
    }

    async fn get_token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
        timed!(self, "get_token", self.inner.get_token(id))
    }

    async fn list_tokens(
        &self,
        after: Option<&TokenId>,
        limit: usize,
    ) -> Result<Vec<ApiToken>, StoreError> {
        timed!(self, "list_tokens", self.inner.list_tokens(after, limit))
    }

    async fn revoke_token(&self, id: &TokenId, now: Timestamp) -> Result<ApiToken, StoreError> {
        timed!(self, "revoke_token", self.inner.revoke_token(id, now))
    }

    async fn listen(&self) -> Result<Option<Box<dyn InsertHints>>, StoreError> {
        self.inner.listen().await
    }

    punctual_core::delegate_schedule_methods!(this => this.inner);

    fn fatal_error(&self) -> Option<String> {
        self.inner.fatal_error()
    }
}
