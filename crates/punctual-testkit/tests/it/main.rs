//! The test kit tested: the conformance suite against `MemoryStore`, which is how the suite and
//! the reference model check each other, plus a guard that the suite's macro lists every
//! behaviour.

use std::sync::Arc;

use punctual_testkit::{MemoryStore, StoreUnderTest};

async fn make_store() -> Option<StoreUnderTest> {
    Some(StoreUnderTest::new(Arc::new(MemoryStore::new())))
}

punctual_testkit::store_conformance_suite!(make_store);

/// A behaviour written in `conformance.rs` but missing from the macro would silently never run.
#[test]
fn the_suite_macro_lists_every_behaviour() {
    let behaviours = include_str!("../../src/conformance.rs");
    let suite = include_str!("../../src/lib.rs");
    let mut count = 0;
    for line in behaviours.lines() {
        let Some(rest) = line.strip_prefix("pub async fn ") else {
            continue;
        };
        let name = rest
            .split('(')
            .next()
            .expect("split yields at least one part");
        count += 1;
        assert!(
            suite.contains(&format!("            {name},\n")),
            "conformance::{name} is missing from store_conformance_suite!"
        );
    }
    assert!(
        count >= 30,
        "found only {count} behaviours; has the file layout changed?"
    );
}

mod model {
    //! The model test must fail a store that differs from the model; here, one whose `release`
    //! forgets to take back the attempt counted at claim.

    use std::sync::Arc;

    use async_trait::async_trait;
    use punctual_core::{
        ApiToken, ClaimRequest, ClaimedJob, Cursor, FailOutcome, IdempotencyRecord, Idempotent,
        Job, JobFilter, JobId, JobPage, JobState, Kind, LeaderTerm, LeaseToken, NewJob, NodeId,
        Queue, QueueStats, RescueOutcome, StateCount, Store, StoreError, Timestamp, TokenId,
    };
    use punctual_testkit::MemoryStore;

    /// A `MemoryStore` whose `release` records a failed attempt instead of a hand-back.
    struct ForgetfulRelease(MemoryStore);

    #[async_trait]
    impl Store for ForgetfulRelease {
        async fn insert(
            &self,
            jobs: Vec<NewJob>,
            now: Timestamp,
        ) -> Result<Vec<JobId>, StoreError> {
            self.0.insert(jobs, now).await
        }
        async fn claim(
            &self,
            request: ClaimRequest,
            now: Timestamp,
        ) -> Result<Vec<ClaimedJob>, StoreError> {
            self.0.claim(request, now).await
        }
        async fn extend_lease(
            &self,
            id: JobId,
            token: LeaseToken,
            expires_at: Timestamp,
            now: Timestamp,
        ) -> Result<(), StoreError> {
            self.0.extend_lease(id, token, expires_at, now).await
        }
        async fn complete(
            &self,
            id: JobId,
            token: LeaseToken,
            now: Timestamp,
        ) -> Result<(), StoreError> {
            self.0.complete(id, token, now).await
        }
        async fn fail(
            &self,
            id: JobId,
            token: LeaseToken,
            error: &str,
            outcome: FailOutcome,
            now: Timestamp,
        ) -> Result<JobState, StoreError> {
            self.0.fail(id, token, error, outcome, now).await
        }
        async fn release(
            &self,
            id: JobId,
            token: LeaseToken,
            now: Timestamp,
        ) -> Result<(), StoreError> {
            // The bug: a failed retry at the job's own run_at instead of a hand-back.
            let run_at = self.0.get(id).await?.map_or(now, |job| job.run_at);
            self.0
                .fail(
                    id,
                    token,
                    "released",
                    FailOutcome::Retry { at: run_at },
                    now,
                )
                .await
                .map(|_| ())
        }
        async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
            self.0.cancel(id, now).await
        }
        async fn reschedule(
            &self,
            id: JobId,
            run_at: Timestamp,
            now: Timestamp,
        ) -> Result<Job, StoreError> {
            self.0.reschedule(id, run_at, now).await
        }
        async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
            self.0.get(id).await
        }
        async fn list(
            &self,
            filter: JobFilter,
            after: Option<Cursor>,
            limit: usize,
        ) -> Result<JobPage, StoreError> {
            self.0.list(filter, after, limit).await
        }
        async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
            self.0.counts().await
        }
        async fn next_due(
            &self,
            queues: Option<&[Queue]>,
            kinds: Option<&[Kind]>,
        ) -> Result<Option<Timestamp>, StoreError> {
            self.0.next_due(queues, kinds).await
        }
        async fn next_lease_expiry(&self) -> Result<Option<Timestamp>, StoreError> {
            self.0.next_lease_expiry().await
        }
        async fn lead(
            &self,
            node: &NodeId,
            term: Option<LeaderTerm>,
            lease: std::time::Duration,
            now: Timestamp,
        ) -> Result<Option<LeaderTerm>, StoreError> {
            self.0.lead(node, term, lease, now).await
        }
        async fn resign(&self, node: &NodeId, term: LeaderTerm) -> Result<(), StoreError> {
            self.0.resign(node, term).await
        }
        async fn rescue_expired(
            &self,
            term: LeaderTerm,
            now: Timestamp,
            limit: usize,
        ) -> Result<Vec<RescueOutcome>, StoreError> {
            self.0.rescue_expired(term, now, limit).await
        }
        async fn purge_finished(
            &self,
            term: LeaderTerm,
            finished_before: Timestamp,
            limit: usize,
            now: Timestamp,
        ) -> Result<u64, StoreError> {
            self.0
                .purge_finished(term, finished_before, limit, now)
                .await
        }
        async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>, StoreError> {
            self.0.queue_stats(now).await
        }
        async fn insert_idempotent(
            &self,
            jobs: Vec<NewJob>,
            record: IdempotencyRecord,
            now: Timestamp,
        ) -> Result<Idempotent, StoreError> {
            self.0.insert_idempotent(jobs, record, now).await
        }
        async fn purge_idempotency(
            &self,
            term: LeaderTerm,
            now: Timestamp,
            limit: usize,
        ) -> Result<u64, StoreError> {
            self.0.purge_idempotency(term, now, limit).await
        }
        async fn insert_token(&self, token: ApiToken) -> Result<(), StoreError> {
            self.0.insert_token(token).await
        }
        async fn get_token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
            self.0.get_token(id).await
        }
        async fn list_tokens(
            &self,
            after: Option<&TokenId>,
            limit: usize,
        ) -> Result<Vec<ApiToken>, StoreError> {
            self.0.list_tokens(after, limit).await
        }
        async fn revoke_token(&self, id: &TokenId, now: Timestamp) -> Result<ApiToken, StoreError> {
            self.0.revoke_token(id, now).await
        }

        punctual_core::delegate_schedule_methods!(this => this.0);
    }

    #[tokio::test]
    #[should_panic(expected = "seed")]
    async fn the_model_test_fails_a_store_that_differs() {
        for seed in punctual_testkit::model::SEEDS {
            let store = Arc::new(ForgetfulRelease(MemoryStore::new()));
            punctual_testkit::model::matches_memory_model(store, seed).await;
        }
    }
}
