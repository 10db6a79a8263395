//! The store conformance suite: one `pub async fn` per behaviour of the `Store` contract, each
//! named for what it checks and each run against a fresh, empty store.
//!
//! `store_conformance_suite!` turns every function here into a `#[tokio::test]` for a backend;
//! a function added here must be added to that macro's list too (`tests/it` checks it is).
//!
//! Every test starts at `fixtures::NOW` and moves time by passing later instants; none sleeps,
//! and none depends on the system clock, so a failure replays identically on every backend.
//! The functions panic on a broken expectation (they are tests).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use punctual_core::{
    ApiToken, ClaimRequest, Cursor, FailOutcome, IdempotencyKey, IdempotencyRecord, Idempotent,
    Job, JobFilter, JobId, JobOptions, JobState, JobTemplate, LeaderTerm, Lease, LeaseToken,
    LedgerExtend, Misfire, MisfireAction, NewJob, OccurrenceEntry, OccurrenceOutcome,
    OverlapPolicy, Payload, Priority, Queue, QueueStats, RescueOutcome, RetryPolicy, Schedule,
    ScheduleCursor, ScheduleDefinition, ScheduleId, ScheduleKey, ScheduleName, ScheduleWrite,
    SkipReason, StateCount, StateCounts, Store, StoreError, StoredSchedule, Timestamp, TokenId,
    ValidationError, WriteOutcome, limits, truncate_error,
};

use crate::fixtures::{NOW, job_id, kind, new_job, node, queue};

/// The lease most tests claim with.
const LEASE: Duration = Duration::from_secs(30);

fn seconds(count: u64) -> Duration {
    Duration::from_secs(count)
}

/// A plain job in the default queue, due at `run_at`.
fn job(run_at: Timestamp) -> NewJob {
    new_job("conformance.job", run_at, JobOptions::default(), NOW)
}

/// A plain job with a chosen id (so tests control id order).
fn job_numbered(sequence: u64, run_at: Timestamp) -> NewJob {
    let options = JobOptions::default().id(job_id(NOW, sequence));
    new_job("conformance.job", run_at, options, NOW)
}

/// A retry policy without jitter, so a rescue's backoff is exact.
fn retry_without_jitter() -> RetryPolicy {
    RetryPolicy::new(seconds(2), seconds(3_600), 0).expect("a valid retry policy")
}

async fn insert(store: &dyn Store, jobs: Vec<NewJob>) -> Vec<JobId> {
    store.insert(jobs, NOW).await.expect("insert")
}

async fn insert_one(store: &dyn Store, job: NewJob) -> JobId {
    insert(store, vec![job]).await[0]
}

async fn get(store: &dyn Store, id: JobId) -> Job {
    store
        .get(id)
        .await
        .expect("get")
        .unwrap_or_else(|| panic!("job {id} should exist"))
}

fn request(limit: usize, due_by: Timestamp) -> ClaimRequest {
    ClaimRequest {
        holder: node("node-a"),
        queues: None,
        kinds: None,
        limit,
        due_by,
        lease: LEASE,
    }
}

async fn claim(store: &dyn Store, request: ClaimRequest, now: Timestamp) -> Vec<Job> {
    store.claim(request, now).await.expect("claim")
}

/// Claims exactly one job due by `now`, with `LEASE`.
async fn claim_one(store: &dyn Store, now: Timestamp) -> Job {
    let mut claimed = claim(store, request(1, now), now).await;
    assert_eq!(claimed.len(), 1, "one job should be due at {now}");
    claimed.remove(0)
}

fn token_of(job: &Job) -> LeaseToken {
    job.lease
        .as_ref()
        .expect("a claimed job holds a lease")
        .token
}

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|job| job.id).collect()
}

/// Every job matching `filter`, following the cursor page by page.
async fn list_all(store: &dyn Store, filter: JobFilter) -> Vec<Job> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(filter.clone(), after, limits::PAGE_SIZE_MAX)
            .await
            .expect("list");
        all.extend(page.jobs);
        match page.next {
            Some(cursor) => after = Some(cursor),
            None => return all,
        }
    }
}

/// The node that does the leader duties in tests that are not about leadership.
const MAINTAINER: &str = "maintainer";

/// Runs `rescue_expired` at `now` as a leader elected just for it: leads, rescues, resigns (so
/// the next call may lead at any instant, even an earlier one).
async fn rescue(store: &dyn Store, now: Timestamp, limit: usize) -> Vec<RescueOutcome> {
    let term = lead_alone(store, now).await;
    let rescued = store
        .rescue_expired(term, now, limit)
        .await
        .expect("rescue");
    resign_alone(store, term).await;
    rescued
}

/// Runs `purge_finished` as `rescue` does, at `finished_before`.
async fn purge(store: &dyn Store, finished_before: Timestamp, limit: usize) -> u64 {
    let term = lead_alone(store, finished_before).await;
    let purged = store
        .purge_finished(term, finished_before, limit, finished_before)
        .await
        .expect("purge");
    resign_alone(store, term).await;
    purged
}

async fn lead_alone(store: &dyn Store, now: Timestamp) -> LeaderTerm {
    store
        .lead(&node(MAINTAINER), None, LEASE, now)
        .await
        .expect("lead")
        .expect("nobody else leads")
}

async fn resign_alone(store: &dyn Store, term: LeaderTerm) {
    store.resign(&node(MAINTAINER), term).await.expect("resign");
}

fn assert_not_leader<T: Debug>(result: Result<T, StoreError>, term: LeaderTerm) {
    assert!(
        matches!(&result, Err(StoreError::NotLeader { term: refused }) if *refused == term),
        "expected NotLeader for term {term}, got {result:?}"
    );
}

fn assert_lease_lost<T: Debug>(result: Result<T, StoreError>, id: JobId, token: LeaseToken) {
    assert!(
        matches!(
            result,
            Err(StoreError::LeaseLost { id: lost, token: stale }) if lost == id && stale == token
        ),
        "expected LeaseLost for job {id} token {token}, got {result:?}"
    );
}

fn assert_not_found<T: Debug>(result: Result<T, StoreError>, id: JobId) {
    assert!(
        matches!(result, Err(StoreError::NotFound(missing)) if missing == id),
        "expected NotFound({id}), got {result:?}"
    );
}

fn assert_conflict<T: Debug>(
    result: Result<T, StoreError>,
    id: JobId,
    state: JobState,
    operation: &str,
) {
    assert!(
        matches!(
            &result,
            Err(StoreError::Conflict { id: found, state: found_state, operation: found_operation })
                if *found == id && *found_state == state && *found_operation == operation
        ),
        "expected Conflict({id}, {state}, {operation}), got {result:?}"
    );
}

/// What a claim at `now` with `lease` makes of a job that was `before`, by `holder`.
fn claimed_from(before: &Job, holder: &str, lease: Duration, now: Timestamp) -> Job {
    let token = LeaseToken(before.lease_token.0 + 1);
    Job {
        state: JobState::Running,
        attempt: before.attempt + 1,
        lease_token: token,
        lease: Some(Lease {
            holder: node(holder),
            token,
            expires_at: now.max(before.run_at).add(lease),
        }),
        started_at: Some(now),
        finished_at: None,
        ..before.clone()
    }
}

pub async fn insert_then_get_round_trips_every_field(store: Arc<dyn Store>) {
    let store = &*store;
    let payload = Payload::from_json_text(
        r#"{"to":["a@example.com"],"n":1.5,"nested":{"ok":true},"text":"héllo \"quoted\" ☃"}"#,
    )
    .expect("valid JSON");
    let retry = RetryPolicy::new(Duration::from_millis(250), seconds(90), 35).expect("valid");
    let cron = NewJob::new(
        kind("report.nightly"),
        payload,
        // Microseconds must survive the round trip.
        NOW.add(Duration::from_micros(90_123_457)),
        JobOptions::default()
            .queue(queue("reports"))
            .priority(Priority::new(3).expect("valid"))
            .attempt_max(7)
            .retry(retry)
            .schedule(Schedule::cron("0 0 * * *", "Europe/Berlin").expect("valid"))
            .id(job_id(NOW, 1)),
        NOW,
    )
    .expect("valid");
    let interval = NewJob::new(
        kind("heartbeat"),
        Payload::from_json_text("[1,2,3]").expect("valid JSON"),
        NOW.add(seconds(90)),
        JobOptions::default()
            .priority(Priority::LOWEST)
            .attempt_max(limits::ATTEMPT_MAX_LIMIT)
            .schedule(Schedule::interval(seconds(90)).expect("valid")),
        NOW,
    )
    .expect("valid");
    // In the past, every option left at its default, a generated id.
    let plain = job(NOW.sub(seconds(5)));

    let jobs = vec![cron.clone(), interval.clone(), plain.clone()];
    let ids = store.insert(jobs.clone(), NOW).await.expect("insert");
    assert_eq!(ids, vec![cron.id, interval.id, plain.id]);
    for new in jobs {
        assert_eq!(get(store, new.id).await, new.clone().into_job(NOW));
    }
    assert_eq!(store.get(job_id(NOW, 99)).await.expect("get"), None);
}

pub async fn insert_is_all_or_none_on_a_duplicate_id(store: Arc<dyn Store>) {
    let store = &*store;
    let existing = job(NOW);
    insert_one(store, existing.clone()).await;

    // A batch holding an id already stored: nothing of it is stored, the stored job is untouched.
    let fresh = job(NOW);
    let clash = new_job(
        "conformance.other",
        NOW.add(seconds(60)),
        JobOptions::default().id(existing.id),
        NOW,
    );
    let result = store.insert(vec![fresh.clone(), clash], NOW).await;
    assert!(
        matches!(result, Err(StoreError::Duplicate(id)) if id == existing.id),
        "{result:?}"
    );
    assert_eq!(store.get(fresh.id).await.expect("get"), None);
    assert_eq!(get(store, existing.id).await, existing.into_job(NOW));

    // A batch holding one id twice.
    let twin = job(NOW);
    let other = job(NOW);
    let result = store
        .insert(vec![twin.clone(), other.clone(), twin.clone()], NOW)
        .await;
    assert!(
        matches!(result, Err(StoreError::Duplicate(id)) if id == twin.id),
        "{result:?}"
    );
    assert_eq!(store.get(twin.id).await.expect("get"), None);
    assert_eq!(store.get(other.id).await.expect("get"), None);
    assert_eq!(list_all(store, JobFilter::default()).await.len(), 1);
}

pub async fn insert_refuses_a_batch_over_the_limit(store: Arc<dyn Store>) {
    let store = &*store;
    let batch: Vec<NewJob> = (0..=limits::INSERT_BATCH_MAX)
        .map(|sequence| job_numbered(sequence as u64, NOW))
        .collect();
    let result = store.insert(batch, NOW).await;
    assert!(
        matches!(
            result,
            Err(StoreError::Invalid(ValidationError::TooLong { field: "batch", bytes, limit }))
                if bytes == limits::INSERT_BATCH_MAX + 1 && limit == limits::INSERT_BATCH_MAX
        ),
        "{result:?}"
    );
    assert!(list_all(store, JobFilter::default()).await.is_empty());

    // An empty batch is not an error.
    assert_eq!(
        store.insert(Vec::new(), NOW).await.expect("insert"),
        Vec::new()
    );
}

pub async fn insert_refuses_an_invalid_job(store: Arc<dyn Store>) {
    let store = &*store;
    // `NewJob`'s fields are public, so a struct literal can skip `NewJob::new`: the store checks.
    let no_attempts = NewJob {
        attempt_max: 0,
        ..job_numbered(1, NOW)
    };
    let too_many_attempts = NewJob {
        attempt_max: limits::ATTEMPT_MAX_LIMIT + 1,
        ..job_numbered(2, NOW)
    };
    let too_late = NewJob {
        run_at: NOW.add(limits::RUN_AT_FUTURE_MAX).add(seconds(1)),
        ..job_numbered(3, NOW)
    };
    let too_early = NewJob {
        run_at: NOW.sub(limits::RUN_AT_PAST_MAX).sub(seconds(1)),
        ..job_numbered(4, NOW)
    };
    let valid = job_numbered(5, NOW);
    for invalid in [no_attempts, too_many_attempts] {
        // Alone, and after a valid job in the same batch: nothing of the batch is stored.
        for batch in [vec![invalid.clone()], vec![valid.clone(), invalid]] {
            let result = store.insert(batch, NOW).await;
            assert!(
                matches!(
                    result,
                    Err(StoreError::Invalid(
                        ValidationError::AttemptMaxOutOfRange { .. }
                    ))
                ),
                "{result:?}"
            );
        }
    }
    for invalid in [too_late, too_early] {
        for batch in [vec![invalid.clone()], vec![valid.clone(), invalid]] {
            let result = store.insert(batch, NOW).await;
            assert!(
                matches!(
                    result,
                    Err(StoreError::Invalid(ValidationError::RunAtOutOfRange { .. }))
                ),
                "{result:?}"
            );
        }
    }
    assert!(list_all(store, JobFilter::default()).await.is_empty());
    assert_eq!(store.get(valid.id).await.expect("get"), None);
    assert!(claim(store, request(10, NOW), NOW).await.is_empty());

    // The valid job alone is stored.
    insert_one(store, valid.clone()).await;
    assert_eq!(get(store, valid.id).await.state, JobState::Scheduled);
}

pub async fn claim_returns_nothing_when_nothing_is_due(store: Arc<dyn Store>) {
    let store = &*store;
    assert!(claim(store, request(10, NOW), NOW).await.is_empty());

    insert_one(store, job(NOW.add(seconds(60)))).await;
    assert!(claim(store, request(10, NOW), NOW).await.is_empty());

    // A limit of zero takes nothing, even when jobs are due.
    let due = insert_one(store, job(NOW)).await;
    let far = NOW.add(seconds(3_600));
    assert!(claim(store, request(0, far), NOW).await.is_empty());
    assert_eq!(get(store, due).await.state, JobState::Scheduled);
}

pub async fn claim_respects_due_by_limit_and_queue_filter(store: Arc<dyn Store>) {
    let store = &*store;
    let in_queue = |sequence, name: &str, run_at| {
        let options = JobOptions::default()
            .id(job_id(NOW, sequence))
            .queue(queue(name));
        new_job("conformance.job", run_at, options, NOW)
    };
    let due_by = NOW.add(seconds(10));
    let a = in_queue(1, "default", NOW);
    let b = in_queue(2, "default", due_by);
    let c = in_queue(3, "default", due_by.add(Duration::from_micros(1)));
    let d = in_queue(4, "other", NOW);
    insert(store, vec![a.clone(), b.clone(), c.clone(), d.clone()]).await;

    // run_at == due_by is due; one microsecond later is not; `other` is not served.
    let default_only = ClaimRequest {
        queues: Some(vec![queue("default")]),
        ..request(10, due_by)
    };
    let claimed = claim(store, default_only.clone(), NOW).await;
    assert_eq!(ids(&claimed), vec![a.id, b.id]);
    assert!(claim(store, default_only, NOW).await.is_empty());

    let unknown_queue = ClaimRequest {
        queues: Some(vec![queue("nobody-serves-this")]),
        ..request(10, NOW.add(seconds(3_600)))
    };
    assert!(claim(store, unknown_queue, NOW).await.is_empty());

    let other_only = ClaimRequest {
        queues: Some(vec![queue("other")]),
        ..request(10, NOW.add(seconds(3_600)))
    };
    assert_eq!(ids(&claim(store, other_only, NOW).await), vec![d.id]);

    let later = due_by.add(Duration::from_micros(1));
    assert_eq!(
        ids(&claim(store, request(10, later), NOW).await),
        vec![c.id]
    );

    // The limit caps a claim; what it leaves stays for the next.
    let bulk: Vec<NewJob> = (10..15).map(|n| in_queue(n, "bulk", NOW)).collect();
    insert(store, bulk.clone()).await;
    let bulk_only = |limit| ClaimRequest {
        queues: Some(vec![queue("bulk")]),
        ..request(limit, NOW)
    };
    assert_eq!(
        ids(&claim(store, bulk_only(2), NOW).await),
        vec![bulk[0].id, bulk[1].id]
    );
    assert_eq!(
        ids(&claim(store, bulk_only(10), NOW).await),
        vec![bulk[2].id, bulk[3].id, bulk[4].id]
    );
}

pub async fn claim_takes_only_the_requested_kinds(store: Arc<dyn Store>) {
    let store = &*store;
    let of_kind = |sequence, kind_name: &str, name: &str, priority, run_at| {
        let options = JobOptions::default()
            .id(job_id(NOW, sequence))
            .queue(queue(name))
            .priority(Priority::new(priority).expect("valid"));
        new_job(kind_name, run_at, options, NOW)
    };
    let (a, b, c) = ("conformance.a", "conformance.b", "conformance.c");
    let later = NOW.add(seconds(3_600));
    insert(
        store,
        vec![
            of_kind(1, a, "default", 5, NOW),
            of_kind(2, b, "default", 5, NOW),
            of_kind(3, a, "default", 5, NOW),
            of_kind(4, c, "default", 5, later),
            of_kind(5, a, "other", 5, NOW),
            of_kind(6, b, "default", 0, NOW),
        ],
    )
    .await;
    let of_kinds = |kinds: Vec<&str>, queues: Option<Vec<Queue>>, limit, due_by| ClaimRequest {
        queues,
        kinds: Some(kinds.into_iter().map(kind).collect()),
        ..request(limit, due_by)
    };

    // An empty list claims nothing, as an empty list of queues does; so does a kind no job has.
    assert!(
        claim(store, of_kinds(vec![], None, 10, later), NOW)
            .await
            .is_empty()
    );
    let unknown = of_kinds(vec!["conformance.nobody"], None, 10, later);
    assert!(claim(store, unknown, NOW).await.is_empty());

    // Jobs of other kinds, more urgent or earlier, are passed over, and the limit counts only
    // the jobs taken; the queue filter still applies.
    let a_in_default = of_kinds(vec![a], Some(vec![queue("default")]), 2, NOW);
    let claimed = claim(store, a_in_default, NOW).await;
    assert_eq!(ids(&claimed), vec![job_id(NOW, 1), job_id(NOW, 3)]);
    assert!(claimed.iter().all(|job| job.kind == kind(a)));
    let a_twice = of_kinds(vec![a, a], None, 10, NOW);
    assert_eq!(ids(&claim(store, a_twice, NOW).await), vec![job_id(NOW, 5)]);

    // Several kinds: claim order across them; a job not yet due stays.
    let c_or_b = of_kinds(vec![c, b], None, 10, NOW);
    assert_eq!(
        ids(&claim(store, c_or_b, NOW).await),
        vec![job_id(NOW, 6), job_id(NOW, 2)]
    );

    // A list over the limit is refused and changes nothing; one at the limit is served.
    let too_many = ClaimRequest {
        kinds: Some(vec![kind(c); limits::CLAIM_KINDS_MAX + 1]),
        ..request(10, later)
    };
    let refused = store.claim(too_many, NOW).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Invalid(ValidationError::TooLong {
                field: "kinds",
                ..
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(get(store, job_id(NOW, 4)).await.state, JobState::Scheduled);
    let most = ClaimRequest {
        kinds: Some(vec![kind(c); limits::CLAIM_KINDS_MAX]),
        ..request(10, later)
    };
    assert_eq!(ids(&claim(store, most, NOW).await), vec![job_id(NOW, 4)]);
}

pub async fn claim_orders_by_priority_then_run_at_then_id(store: Arc<dyn Store>) {
    let store = &*store;
    let with = |sequence, priority, run_at| {
        let options = JobOptions::default()
            .id(job_id(NOW, sequence))
            .priority(Priority::new(priority).expect("valid"));
        new_job("conformance.job", run_at, options, NOW)
    };
    let jobs = vec![
        with(5, 1, NOW.sub(seconds(1))),
        with(3, 0, NOW),
        with(2, 0, NOW),
        with(4, 0, NOW.sub(seconds(2))),
        with(1, 2, NOW.sub(seconds(10))),
        with(0, 1, NOW.sub(seconds(1))),
    ];
    insert(store, jobs).await;
    let expected: Vec<JobId> = [4, 2, 3, 0, 5, 1]
        .into_iter()
        .map(|sequence| job_id(NOW, sequence))
        .collect();

    let first = claim(store, request(2, NOW), NOW).await;
    let rest = claim(store, request(10, NOW), NOW).await;
    assert_eq!(ids(&first), expected[..2]);
    assert_eq!(ids(&rest), expected[2..]);
}

pub async fn claim_never_hands_one_job_to_two_holders(store: Arc<dyn Store>) {
    const JOBS: u64 = 200;
    const HOLDERS: usize = 8;
    let jobs: Vec<NewJob> = (0..JOBS).map(|n| job_numbered(n, NOW)).collect();
    insert(&*store, jobs).await;

    let mut tasks = tokio::task::JoinSet::new();
    for holder in 0..HOLDERS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let holder = format!("node-{holder}");
            let mut mine = Vec::new();
            loop {
                let ask = ClaimRequest {
                    holder: node(&holder),
                    ..request(7, NOW)
                };
                let claimed = claim(&*store, ask, NOW).await;
                if claimed.is_empty() {
                    return (holder, mine);
                }
                mine.extend(claimed);
            }
        });
    }

    let mut seen = BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        let (holder, claimed) = joined.expect("a claiming task panicked");
        for job in claimed {
            assert!(seen.insert(job.id), "job {} was claimed twice", job.id);
            let lease = job.lease.expect("a claimed job holds a lease");
            assert_eq!(lease.holder, node(&holder));
            assert_eq!(lease.token, LeaseToken(1));
            assert_eq!(job.attempt, 1);
        }
    }
    assert_eq!(seen.len() as u64, JOBS, "every job is claimed exactly once");
}

pub async fn claim_counts_the_attempt_and_grants_a_lease(store: Arc<dyn Store>) {
    let store = &*store;
    let past = job_numbered(1, NOW.sub(seconds(5)));
    let ahead = job_numbered(2, NOW.add(seconds(20)));
    insert(store, vec![past.clone(), ahead.clone()]).await;

    let ask = ClaimRequest {
        holder: node("node-b"),
        queues: None,
        kinds: None,
        limit: 10,
        due_by: NOW.add(seconds(30)),
        lease: seconds(45),
    };
    let claimed = claim(store, ask, NOW).await;
    // A job claimed ahead of its run_at holds its lease from run_at, not from now.
    let expected = vec![
        claimed_from(&past.into_job(NOW), "node-b", seconds(45), NOW),
        claimed_from(&ahead.into_job(NOW), "node-b", seconds(45), NOW),
    ];
    assert_eq!(claimed, expected);
    assert_eq!(
        expected[1].lease.as_ref().map(|lease| lease.expires_at),
        Some(NOW.add(seconds(65)))
    );
    for job in expected {
        assert_eq!(get(store, job.id).await, job);
    }
}

pub async fn claim_clamps_the_lease_into_its_limits(store: Arc<dyn Store>) {
    let store = &*store;
    insert(
        store,
        vec![
            job_numbered(1, NOW),
            job_numbered(2, NOW),
            job_numbered(3, NOW),
        ],
    )
    .await;
    for (asked, granted) in [
        (Duration::ZERO, limits::LEASE_MIN),
        (Duration::from_millis(1), limits::LEASE_MIN),
        (seconds(1_000 * 24 * 3_600), limits::LEASE_MAX),
    ] {
        let ask = ClaimRequest {
            lease: asked,
            ..request(1, NOW)
        };
        let claimed = claim(store, ask, NOW).await;
        assert_eq!(claimed.len(), 1);
        let lease = claimed[0]
            .lease
            .as_ref()
            .expect("a claimed job holds a lease");
        assert_eq!(lease.expires_at, NOW.add(granted), "asked for {asked:?}");
    }
}

pub async fn lease_tokens_never_repeat_for_a_job(store: Arc<dyn Store>) {
    let store = &*store;
    let options = JobOptions::default()
        .attempt_max(10)
        .retry(retry_without_jitter());
    let id = insert_one(store, new_job("conformance.job", NOW, options, NOW)).await;
    let mut tokens = Vec::new();

    // Claim, hand back, claim again.
    let first = claim_one(store, NOW).await;
    tokens.push(token_of(&first));
    store
        .release(id, token_of(&first), NOW)
        .await
        .expect("release");
    let second = claim_one(store, NOW).await;
    tokens.push(token_of(&second));

    // The lease expires and is rescued; claim again when the retry is due.
    let expired = NOW.add(LEASE);
    rescue(store, expired, 10).await;
    let retry_at = get(store, id).await.run_at;
    let third = claim_one(store, retry_at).await;
    tokens.push(token_of(&third));

    // A failure retried; then a cancel and a revival.
    let now = retry_at.add(seconds(1));
    let at = now.add(seconds(5));
    store
        .fail(id, token_of(&third), "boom", FailOutcome::Retry { at }, now)
        .await
        .expect("fail");
    let fourth = claim_one(store, at).await;
    tokens.push(token_of(&fourth));
    store.cancel(id, at).await.expect("cancel");
    store.reschedule(id, at, at).await.expect("reschedule");
    let fifth = claim_one(store, at).await;
    tokens.push(token_of(&fifth));

    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "tokens must strictly increase: {tokens:?}"
    );
    assert_eq!(get(store, id).await.lease_token, tokens[4]);
}

pub async fn stale_token_is_refused_and_changes_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    let id = insert_one(store, job(NOW)).await;
    let stale = token_of(&claim_one(store, NOW).await);
    store.release(id, stale, NOW).await.expect("release");
    let current = token_of(&claim_one(store, NOW).await);
    let before = get(store, id).await;

    let later = NOW.add(seconds(1));
    let retry = FailOutcome::Retry {
        at: later.add(seconds(60)),
    };
    for token in [stale, LeaseToken(current.0 + 1)] {
        assert_lease_lost(store.complete(id, token, later).await, id, token);
        assert_lease_lost(store.fail(id, token, "x", retry, later).await, id, token);
        assert_lease_lost(
            store.fail(id, token, "x", FailOutcome::Dead, later).await,
            id,
            token,
        );
        let expires_at = later.add(seconds(3_600));
        assert_lease_lost(
            store.extend_lease(id, token, expires_at, later).await,
            id,
            token,
        );
        assert_lease_lost(store.release(id, token, later).await, id, token);
        assert_eq!(
            get(store, id).await,
            before,
            "a refused write changed the job"
        );
    }

    // A job no longer running refuses even its last token (only a repeated completion under
    // the token that completed it is accepted, see `complete_is_idempotent_for_its_holder`).
    store.complete(id, current, later).await.expect("complete");
    let finished = get(store, id).await;
    assert_lease_lost(store.release(id, current, later).await, id, current);
    assert_lease_lost(
        store.fail(id, current, "x", FailOutcome::Dead, later).await,
        id,
        current,
    );
    assert_lease_lost(store.complete(id, stale, later).await, id, stale);
    assert_eq!(get(store, id).await, finished);

    // A job never claimed holds no lease at all.
    let waiting = insert_one(store, job(NOW.add(seconds(60)))).await;
    assert_lease_lost(
        store.complete(waiting, LeaseToken(0), later).await,
        waiting,
        LeaseToken(0),
    );
    assert_eq!(get(store, waiting).await.state, JobState::Scheduled);
}

pub async fn complete_marks_the_job_succeeded(store: Arc<dyn Store>) {
    let store = &*store;
    let id = insert_one(store, job(NOW)).await;
    let claimed = claim_one(store, NOW).await;
    let done = NOW.add(seconds(5));
    store
        .complete(id, token_of(&claimed), done)
        .await
        .expect("complete");

    let expected = Job {
        state: JobState::Succeeded,
        finished_at: Some(done),
        lease: None,
        ..claimed
    };
    assert_eq!(get(store, id).await, expected);
    assert!(
        claim(store, request(10, done.add(seconds(3_600))), done)
            .await
            .is_empty()
    );
    assert_eq!(
        store.next_lease_expiry().await.expect("next_lease_expiry"),
        None
    );
}

pub async fn complete_is_idempotent_for_its_holder(store: Arc<dyn Store>) {
    let store = &*store;
    let options = JobOptions::default().retry(retry_without_jitter());
    let id = insert_one(store, new_job("conformance.job", NOW, options, NOW)).await;
    // A first claim whose lease expires and is rescued, then the claim that completes.
    let stale = token_of(&claim_one(store, NOW).await);
    rescue(store, NOW.add(LEASE), 10).await;
    let retry_at = get(store, id).await.run_at;
    let token = token_of(&claim_one(store, retry_at).await);
    let done = retry_at.add(seconds(1));
    store.complete(id, token, done).await.expect("complete");
    let succeeded = get(store, id).await;
    assert_eq!(succeeded.state, JobState::Succeeded);

    // Completing again under the same token: Ok, and nothing changes (finished_at stays).
    let again = done.add(seconds(5));
    store
        .complete(id, token, again)
        .await
        .expect("complete again");
    store.complete(id, token, again).await.expect("and again");
    assert_eq!(get(store, id).await, succeeded);

    // Any other token, and any other write under the same token, is refused.
    for other in [stale, LeaseToken(token.0 + 1), LeaseToken(0)] {
        assert_lease_lost(store.complete(id, other, again).await, id, other);
    }
    assert_lease_lost(
        store.fail(id, token, "x", FailOutcome::Dead, again).await,
        id,
        token,
    );
    assert_lease_lost(store.release(id, token, again).await, id, token);
    assert_lease_lost(
        store.extend_lease(id, token, again.add(LEASE), again).await,
        id,
        token,
    );
    assert_eq!(get(store, id).await, succeeded);

    // A job that ended otherwise under a token did not succeed: completing it is refused.
    let dead = insert_one(store, job(NOW)).await;
    let dead_token = token_of(&claim_one(store, NOW).await);
    store
        .fail(dead, dead_token, "fatal", FailOutcome::Dead, NOW)
        .await
        .expect("fail");
    assert_lease_lost(
        store.complete(dead, dead_token, NOW).await,
        dead,
        dead_token,
    );
    let cancelled = insert_one(store, job(NOW)).await;
    let cancelled_token = token_of(&claim_one(store, NOW).await);
    store.cancel(cancelled, NOW).await.expect("cancel");
    assert_lease_lost(
        store.complete(cancelled, cancelled_token, NOW).await,
        cancelled,
        cancelled_token,
    );
    assert_eq!(get(store, dead).await.state, JobState::Dead);
    assert_eq!(get(store, cancelled).await.state, JobState::Cancelled);
}

pub async fn fail_with_retry_sets_retrying_run_at_and_error(store: Arc<dyn Store>) {
    let store = &*store;
    let id = insert_one(store, job(NOW)).await;
    let claimed = claim_one(store, NOW).await;
    let failed_at = NOW.add(seconds(1));
    let retry_at = NOW.add(seconds(60));
    // Longer than the limit, with multi-byte characters: kept truncated, not refused.
    let error = format!("boom: {}", "é".repeat(limits::ERROR_BYTES_MAX));
    let state = store
        .fail(
            id,
            token_of(&claimed),
            &error,
            FailOutcome::Retry { at: retry_at },
            failed_at,
        )
        .await
        .expect("fail");
    assert_eq!(state, JobState::Retrying);

    let expected = Job {
        state: JobState::Retrying,
        run_at: retry_at,
        last_error: Some(truncate_error(&error)),
        lease: None,
        ..claimed
    };
    assert_eq!(get(store, id).await, expected);

    // Pending again, due at the retry time and not before.
    let just_before = retry_at.sub(Duration::from_micros(1));
    assert!(
        claim(store, request(10, just_before), just_before)
            .await
            .is_empty()
    );
    let again = claim_one(store, retry_at).await;
    assert_eq!(again, claimed_from(&expected, "node-a", LEASE, retry_at));
}

pub async fn fail_dead_keeps_the_error(store: Arc<dyn Store>) {
    let store = &*store;
    let id = insert_one(store, job(NOW)).await;
    let claimed = claim_one(store, NOW).await;
    let failed_at = NOW.add(seconds(2));
    let state = store
        .fail(
            id,
            token_of(&claimed),
            "fatal: bad input",
            FailOutcome::Dead,
            failed_at,
        )
        .await
        .expect("fail");
    assert_eq!(state, JobState::Dead);

    let expected = Job {
        state: JobState::Dead,
        finished_at: Some(failed_at),
        last_error: Some("fatal: bad input".to_owned()),
        lease: None,
        ..claimed
    };
    assert_eq!(get(store, id).await, expected);
    let far = failed_at.add(seconds(30 * 24 * 3_600));
    assert!(claim(store, request(10, far), far).await.is_empty());
    assert_eq!(store.next_due(None, None).await.expect("next_due"), None);
}

pub async fn fail_keeps_an_error_with_a_nul_byte(store: Arc<dyn Store>) {
    let store = &*store;
    // PostgreSQL's text cannot hold NUL: every store keeps U+FFFD in its place, rather than one
    // refusing the write and leaving the job running until its lease expires.
    let options = JobOptions::default()
        .attempt_max(2)
        .retry(retry_without_jitter());
    let id = insert_one(store, new_job("conformance.job", NOW, options, NOW)).await;
    let kept = "bad\u{FFFD}byte".to_owned();

    let first = claim_one(store, NOW).await;
    let retry_at = NOW.add(seconds(60));
    let outcome = FailOutcome::Retry { at: retry_at };
    let state = store
        .fail(
            id,
            token_of(&first),
            "bad\0byte",
            outcome,
            NOW.add(seconds(1)),
        )
        .await
        .expect("fail with retry");
    assert_eq!(state, JobState::Retrying);
    let retrying = get(store, id).await;
    assert_eq!(retrying.state, JobState::Retrying);
    assert_eq!(retrying.last_error.as_ref(), Some(&kept));

    let second = claim_one(store, retry_at).await;
    let failed_at = retry_at.add(seconds(1));
    let state = store
        .fail(
            id,
            token_of(&second),
            "bad\0byte",
            FailOutcome::Dead,
            failed_at,
        )
        .await
        .expect("fail dead");
    assert_eq!(state, JobState::Dead);
    let dead = get(store, id).await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.finished_at, Some(failed_at));
    assert_eq!(dead.last_error, Some(kept));
}

pub async fn release_hands_back_without_counting_the_attempt(store: Arc<dyn Store>) {
    let store = &*store;
    let run_at = NOW.sub(seconds(1));
    let id = insert_one(store, job(run_at)).await;

    // A first claim handed back: scheduled again, as if never attempted.
    let first = claim_one(store, NOW).await;
    store
        .release(id, token_of(&first), NOW.add(seconds(1)))
        .await
        .expect("release");
    let released = get(store, id).await;
    assert_eq!(
        released,
        Job {
            state: JobState::Scheduled,
            attempt: 0,
            lease: None,
            ..first
        }
    );
    assert_eq!(released.run_at, run_at);

    // A retry handed back: retrying again, its earlier failed attempt still counted.
    let second = claim_one(store, NOW).await;
    assert_eq!(second.attempt, 1);
    let retry_at = NOW.add(seconds(10));
    store
        .fail(
            id,
            token_of(&second),
            "boom",
            FailOutcome::Retry { at: retry_at },
            NOW,
        )
        .await
        .expect("fail");
    let third = claim_one(store, retry_at).await;
    assert_eq!(third.attempt, 2);
    store
        .release(id, token_of(&third), retry_at)
        .await
        .expect("release");
    let released = get(store, id).await;
    assert_eq!(released.state, JobState::Retrying);
    assert_eq!(released.attempt, 1);
    assert_eq!(released.run_at, retry_at);
    assert_eq!(released.lease, None);
    assert_eq!(released.lease_token, token_of(&third));
}

pub async fn extend_lease_moves_the_expiry_and_keeps_the_job_from_rescue(store: Arc<dyn Store>) {
    let store = &*store;
    let id = insert_one(store, job(NOW)).await;
    let token = token_of(&claim_one(store, NOW).await);
    let extended = NOW.add(seconds(300));
    store
        .extend_lease(id, token, extended, NOW.add(seconds(10)))
        .await
        .expect("extend_lease");

    let job = get(store, id).await;
    assert_eq!(
        job.lease.as_ref().map(|lease| lease.expires_at),
        Some(extended)
    );
    assert_eq!(
        store.next_lease_expiry().await.expect("next_lease_expiry"),
        Some(extended)
    );

    // Past the old expiry but before the new one: not rescued.
    let rescued = rescue(store, NOW.add(seconds(60)), 10).await;
    assert!(rescued.is_empty(), "{rescued:?}");
    assert_eq!(get(store, id).await, job);

    let rescued = rescue(store, extended, 10).await;
    assert_eq!(
        rescued.iter().map(|outcome| outcome.id).collect::<Vec<_>>(),
        vec![id]
    );
}

pub async fn rescue_ends_expired_leases_only(store: Arc<dyn Store>) {
    let store = &*store;
    let short = job_numbered(1, NOW);
    let long = job_numbered(2, NOW);
    let waiting = job_numbered(3, NOW.sub(seconds(3_600)));
    insert(store, vec![short.clone(), long.clone()]).await;
    let with_lease = |lease| ClaimRequest {
        lease,
        ..request(1, NOW)
    };
    claim(store, with_lease(seconds(10)), NOW).await;
    claim(store, with_lease(seconds(60)), NOW).await;
    insert_one(store, waiting.clone()).await;
    let long_before = get(store, long.id).await;

    let expiry = NOW.add(seconds(10));
    let just_before = expiry.sub(Duration::from_micros(1));
    assert!(rescue(store, just_before, 10).await.is_empty());

    // A lease expiring exactly at `now` has expired.
    let rescued = rescue(store, expiry, 10).await;
    assert_eq!(
        rescued.iter().map(|outcome| outcome.id).collect::<Vec<_>>(),
        vec![short.id]
    );
    assert_eq!(get(store, long.id).await, long_before);
    assert_eq!(get(store, waiting.id).await, waiting.into_job(NOW));
}

pub async fn rescue_retries_with_backoff_and_records_the_lost_lease(store: Arc<dyn Store>) {
    let store = &*store;
    let options = JobOptions::default()
        .attempt_max(3)
        .retry(RetryPolicy::new(seconds(2), seconds(3_600), 50).expect("valid"));
    let id = insert_one(store, new_job("conformance.job", NOW, options, NOW)).await;

    // First lost lease: retried after backoff(1) = 2 s, jitter ignored.
    let claimed = claim_one(store, NOW).await;
    let rescue_at = NOW.add(seconds(40));
    let rescued = rescue(store, rescue_at, 10).await;
    assert_eq!(
        rescued,
        vec![RescueOutcome {
            id,
            holder: node("node-a"),
            token: LeaseToken(1),
            state: JobState::Retrying,
        }]
    );
    let expected = Job {
        state: JobState::Retrying,
        run_at: rescue_at.add(seconds(2)),
        last_error: Some("lease expired (holder node-a, token 1)".to_owned()),
        lease: None,
        ..claimed
    };
    assert_eq!(get(store, id).await, expected);

    // Second lost lease: backoff(2) = 4 s.
    let claimed = claim_one(store, expected.run_at).await;
    assert_eq!(claimed.attempt, 2);
    let rescue_at = expected.run_at.add(LEASE);
    rescue(store, rescue_at, 10).await;
    let job = get(store, id).await;
    assert_eq!(job.state, JobState::Retrying);
    assert_eq!(job.run_at, rescue_at.add(seconds(4)));
    assert_eq!(
        job.last_error.as_deref(),
        Some("lease expired (holder node-a, token 2)")
    );
}

pub async fn rescue_marks_dead_when_attempts_are_exhausted(store: Arc<dyn Store>) {
    let store = &*store;
    let options = JobOptions::default()
        .attempt_max(2)
        .retry(retry_without_jitter());
    let id = insert_one(store, new_job("conformance.job", NOW, options, NOW)).await;

    // Each claim ends with a lost lease, as if the job crashed its process every time.
    let mut now = NOW;
    let mut states = Vec::new();
    for _ in 0..2 {
        claim_one(store, now).await;
        now = now.add(LEASE);
        let rescued = rescue(store, now, 10).await;
        assert_eq!(rescued.len(), 1);
        states.push(rescued[0].state);
        now = get(store, id).await.run_at.max(now);
    }
    assert_eq!(states, vec![JobState::Retrying, JobState::Dead]);

    let job = get(store, id).await;
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.attempt, 2);
    assert_eq!(job.finished_at, Some(now));
    assert_eq!(job.lease, None);
    assert_eq!(
        job.last_error.as_deref(),
        Some("lease expired (holder node-a, token 2)")
    );
    let far = now.add(seconds(30 * 24 * 3_600));
    assert!(claim(store, request(10, far), far).await.is_empty());
    assert_eq!(store.next_due(None, None).await.expect("next_due"), None);
}

pub async fn rescue_respects_its_limit_oldest_expiry_first(store: Arc<dyn Store>) {
    let store = &*store;
    // Claimed in id order with shrinking leases, so expiry order is the reverse of id order.
    insert(
        store,
        vec![
            job_numbered(1, NOW),
            job_numbered(2, NOW),
            job_numbered(3, NOW),
        ],
    )
    .await;
    for lease in [30, 20, 10] {
        let ask = ClaimRequest {
            lease: seconds(lease),
            ..request(1, NOW)
        };
        claim(store, ask, NOW).await;
    }
    let later = NOW.add(seconds(3_600));
    assert!(rescue(store, later, 0).await.is_empty());
    let rescued = rescue(store, later, 2).await;
    let rescued: Vec<JobId> = rescued.iter().map(|outcome| outcome.id).collect();
    assert_eq!(rescued, vec![job_id(NOW, 3), job_id(NOW, 2)]);
    let rescued = rescue(store, later, 10).await;
    let rescued: Vec<JobId> = rescued.iter().map(|outcome| outcome.id).collect();
    assert_eq!(rescued, vec![job_id(NOW, 1)]);
}

pub async fn cancel_ends_a_pending_job(store: Arc<dyn Store>) {
    let store = &*store;
    let scheduled = insert_one(store, job_numbered(1, NOW.add(seconds(60)))).await;
    let retrying = insert_one(store, job_numbered(2, NOW)).await;
    let claimed = claim_one(store, NOW).await;
    let retry = FailOutcome::Retry {
        at: NOW.add(seconds(30)),
    };
    store
        .fail(retrying, token_of(&claimed), "boom", retry, NOW)
        .await
        .expect("fail");

    let cancelled_at = NOW.add(seconds(1));
    for id in [scheduled, retrying] {
        let before = get(store, id).await;
        let cancelled = store.cancel(id, cancelled_at).await.expect("cancel");
        let expected = Job {
            state: JobState::Cancelled,
            finished_at: Some(cancelled_at),
            ..before
        };
        assert_eq!(cancelled, expected);
        assert_eq!(get(store, id).await, expected);
    }
    let far = NOW.add(seconds(3_600));
    assert!(claim(store, request(10, far), far).await.is_empty());
    assert_eq!(store.next_due(None, None).await.expect("next_due"), None);
}

pub async fn cancel_ends_a_running_job_and_its_holder_loses_the_lease(store: Arc<dyn Store>) {
    let store = &*store;
    let id = insert_one(store, job(NOW)).await;
    let claimed = claim_one(store, NOW).await;
    let token = token_of(&claimed);
    let cancelled_at = NOW.add(seconds(1));
    let cancelled = store.cancel(id, cancelled_at).await.expect("cancel");
    let expected = Job {
        state: JobState::Cancelled,
        finished_at: Some(cancelled_at),
        lease: None,
        ..claimed
    };
    assert_eq!(cancelled, expected);

    // The holder, still running the handler, finds out at its next write.
    let later = cancelled_at.add(seconds(1));
    assert_lease_lost(store.complete(id, token, later).await, id, token);
    assert_lease_lost(
        store.fail(id, token, "x", FailOutcome::Dead, later).await,
        id,
        token,
    );
    assert_lease_lost(
        store.extend_lease(id, token, later.add(LEASE), later).await,
        id,
        token,
    );
    assert_eq!(get(store, id).await, expected);
    assert_eq!(
        store.next_lease_expiry().await.expect("next_lease_expiry"),
        None
    );
    let far = NOW.add(seconds(3_600));
    assert!(rescue(store, far, 10).await.is_empty());
}

pub async fn cancel_of_a_finished_job_is_a_conflict(store: Arc<dyn Store>) {
    let store = &*store;
    insert(
        store,
        vec![
            job_numbered(1, NOW),
            job_numbered(2, NOW),
            job_numbered(3, NOW),
        ],
    )
    .await;
    let succeeded = claim_one(store, NOW).await;
    store
        .complete(succeeded.id, token_of(&succeeded), NOW)
        .await
        .expect("complete");
    let dead = claim_one(store, NOW).await;
    store
        .fail(dead.id, token_of(&dead), "fatal", FailOutcome::Dead, NOW)
        .await
        .expect("fail");
    let cancelled = job_id(NOW, 3);
    store.cancel(cancelled, NOW).await.expect("cancel");

    let later = NOW.add(seconds(1));
    for (id, state) in [
        (succeeded.id, JobState::Succeeded),
        (dead.id, JobState::Dead),
        (cancelled, JobState::Cancelled),
    ] {
        let before = get(store, id).await;
        assert_conflict(store.cancel(id, later).await, id, state, "cancel");
        assert_eq!(get(store, id).await, before);
    }
}

pub async fn reschedule_moves_a_pending_job(store: Arc<dyn Store>) {
    let store = &*store;
    let scheduled = insert_one(store, job_numbered(1, NOW.add(seconds(3_600)))).await;
    let before = get(store, scheduled).await;
    let moved_to = NOW.add(seconds(10));
    let moved = store
        .reschedule(scheduled, moved_to, NOW)
        .await
        .expect("reschedule");
    let expected = Job {
        run_at: moved_to,
        ..before
    };
    assert_eq!(moved, expected);
    assert_eq!(get(store, scheduled).await, expected);
    assert!(claim(store, request(10, NOW), NOW).await.is_empty());
    assert_eq!(claim_one(store, moved_to).await.id, scheduled);

    // A retrying job keeps its state and its counted attempts.
    let retrying = insert_one(store, job_numbered(2, NOW)).await;
    let claimed = claim_one(store, moved_to).await;
    let retry = FailOutcome::Retry {
        at: NOW.add(seconds(3_600)),
    };
    store
        .fail(retrying, token_of(&claimed), "boom", retry, moved_to)
        .await
        .expect("fail");
    let moved = store
        .reschedule(retrying, moved_to, moved_to)
        .await
        .expect("reschedule");
    assert_eq!(moved.state, JobState::Retrying);
    assert_eq!(moved.attempt, 1);
    assert_eq!(moved.run_at, moved_to);
    assert_eq!(claim_one(store, moved_to).await.id, retrying);
}

pub async fn reschedule_revives_a_dead_or_cancelled_job(store: Arc<dyn Store>) {
    let store = &*store;
    let dead = insert_one(store, job_numbered(1, NOW)).await;
    let claimed = claim_one(store, NOW).await;
    store
        .fail(dead, token_of(&claimed), "fatal", FailOutcome::Dead, NOW)
        .await
        .expect("fail");

    let later = NOW.add(seconds(60));
    let revived = store
        .reschedule(dead, later, later)
        .await
        .expect("reschedule");
    let expected = Job {
        state: JobState::Scheduled,
        attempt: 0,
        run_at: later,
        finished_at: None,
        // Kept, so people can see why it died.
        last_error: Some("fatal".to_owned()),
        lease: None,
        ..claimed
    };
    assert_eq!(revived, expected);
    assert_eq!(get(store, dead).await, expected);
    let again = claim_one(store, later).await;
    assert_eq!(again.attempt, 1);
    assert_eq!(token_of(&again), LeaseToken(2));

    let cancelled = insert_one(store, job_numbered(2, NOW.add(seconds(3_600)))).await;
    store.cancel(cancelled, NOW).await.expect("cancel");
    let revived = store
        .reschedule(cancelled, later, later)
        .await
        .expect("reschedule");
    assert_eq!(revived.state, JobState::Scheduled);
    assert_eq!(revived.attempt, 0);
    assert_eq!(revived.finished_at, None);
    assert_eq!(claim_one(store, later).await.id, cancelled);
}

pub async fn reschedule_refuses_a_running_or_succeeded_job(store: Arc<dyn Store>) {
    let store = &*store;
    insert(store, vec![job_numbered(1, NOW), job_numbered(2, NOW)]).await;
    let succeeded = claim_one(store, NOW).await;
    store
        .complete(succeeded.id, token_of(&succeeded), NOW)
        .await
        .expect("complete");
    let running = claim_one(store, NOW).await;

    let later = NOW.add(seconds(60));
    for (id, state) in [
        (running.id, JobState::Running),
        (succeeded.id, JobState::Succeeded),
    ] {
        let before = get(store, id).await;
        assert_conflict(
            store.reschedule(id, later, NOW).await,
            id,
            state,
            "reschedule",
        );
        assert_eq!(get(store, id).await, before);
    }
}

pub async fn reschedule_refuses_a_run_at_out_of_range(store: Arc<dyn Store>) {
    let store = &*store;
    let id = insert_one(store, job(NOW)).await;
    let before = get(store, id).await;
    let too_far = NOW.add(limits::RUN_AT_FUTURE_MAX).add(seconds(1));
    let too_old = NOW.sub(limits::RUN_AT_PAST_MAX).sub(seconds(1));
    for run_at in [too_far, too_old] {
        let result = store.reschedule(id, run_at, NOW).await;
        assert!(
            matches!(
                result,
                Err(StoreError::Invalid(ValidationError::RunAtOutOfRange { .. }))
            ),
            "{result:?}"
        );
    }
    assert_eq!(get(store, id).await, before);
}

/// The occurrences of a recurring job other than `id`.
async fn other_jobs(store: &dyn Store, id: JobId) -> Vec<Job> {
    let mut all = list_all(store, JobFilter::default()).await;
    all.retain(|job| job.id != id);
    all
}

pub async fn recurring_job_stores_its_next_occurrence_once(store: Arc<dyn Store>) {
    let store = &*store;
    let schedule = Schedule::interval(seconds(3_600)).expect("valid");
    let options = JobOptions::default()
        .queue(queue("reports"))
        .priority(Priority::new(2).expect("valid"))
        .attempt_max(4)
        .retry(retry_without_jitter())
        .schedule(schedule.clone());
    let recurring = NewJob::new(
        kind("report.hourly"),
        Payload::from_json_text(r#"{"scope":"all"}"#).expect("valid JSON"),
        NOW,
        options,
        NOW,
    )
    .expect("valid");
    let id = insert_one(store, recurring.clone()).await;

    let claimed = claim_one(store, NOW).await;
    assert_eq!(claimed.id, id);
    let next = other_jobs(store, id).await;
    assert_eq!(
        next.len(),
        1,
        "the first claim stores the next occurrence: {next:?}"
    );
    let next = &next[0];
    let expected = Job {
        id: next.id,
        run_at: NOW.add(seconds(3_600)),
        ..recurring.into_job(NOW)
    };
    assert_eq!(*next, expected);

    // Handed back and claimed again, failed and claimed again, completed: still one next.
    store
        .release(id, token_of(&claimed), NOW)
        .await
        .expect("release");
    let claimed = claim_one(store, NOW).await;
    let retry = FailOutcome::Retry {
        at: NOW.add(seconds(1)),
    };
    store
        .fail(id, token_of(&claimed), "boom", retry, NOW)
        .await
        .expect("fail");
    let claimed = claim_one(store, NOW.add(seconds(1))).await;
    store
        .complete(id, token_of(&claimed), NOW.add(seconds(2)))
        .await
        .expect("complete");
    assert_eq!(other_jobs(store, id).await, vec![expected]);
}

pub async fn recurring_job_after_downtime_runs_once_then_resumes_in_the_future(
    store: Arc<dyn Store>,
) {
    let store = &*store;
    // An interval schedule, its occurrence due an hour ago (the node was down).
    let every_minute = Schedule::interval(seconds(60)).expect("valid");
    let options = JobOptions::default().schedule(every_minute);
    let interval = insert_one(store, new_job("conformance.interval", NOW, options, NOW)).await;
    let back = NOW.add(seconds(3_630));
    assert_eq!(claim_one(store, back).await.id, interval);
    let next = other_jobs(store, interval).await;
    assert_eq!(
        next.len(),
        1,
        "missed occurrences are not replayed: {next:?}"
    );
    assert_eq!(next[0].run_at, back.add(seconds(60)));
    store.cancel(next[0].id, back).await.expect("cancel");

    // A cron schedule: the next occurrence is the schedule's first after the claim.
    let every_ten_seconds = Schedule::cron("*/10 * * * * *", "UTC").expect("valid");
    let first = every_ten_seconds
        .next_after(NOW)
        .expect("has a next occurrence");
    let options = JobOptions::default()
        .queue(queue("cron"))
        .schedule(every_ten_seconds.clone());
    let cron = insert_one(store, new_job("conformance.cron", first, options, NOW)).await;
    let back = first.add(Duration::from_millis(3_603_500));
    let cron_only = ClaimRequest {
        queues: Some(vec![queue("cron")]),
        ..request(10, back)
    };
    assert_eq!(ids(&claim(store, cron_only, back).await), vec![cron]);
    let filter = JobFilter {
        queue: Some(queue("cron")),
        state: Some(JobState::Scheduled),
        ..JobFilter::default()
    };
    let next = list_all(store, filter).await;
    assert_eq!(
        next.len(),
        1,
        "missed occurrences are not replayed: {next:?}"
    );
    assert!(next[0].run_at > back);
    assert_eq!(Some(next[0].run_at), every_ten_seconds.next_after(back));
}

pub async fn next_due_finds_the_earliest_pending_job(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(store.next_due(None, None).await.expect("next_due"), None);

    let in_queue = |sequence, name: &str, priority, run_at| {
        let options = JobOptions::default()
            .id(job_id(NOW, sequence))
            .queue(queue(name))
            .priority(Priority::new(priority).expect("valid"));
        new_job("conformance.job", run_at, options, NOW)
    };
    insert(
        store,
        vec![
            in_queue(1, "alpha", 5, NOW.add(seconds(30))),
            in_queue(2, "beta", 0, NOW.add(seconds(10))),
            in_queue(3, "alpha", 9, NOW.add(seconds(20))),
            in_queue(4, "alpha", 0, NOW.add(seconds(5))),
        ],
    )
    .await;
    // Running jobs are not pending.
    let alpha = ClaimRequest {
        queues: Some(vec![queue("alpha")]),
        ..request(1, NOW.add(seconds(5)))
    };
    let running = claim(store, alpha, NOW).await;
    assert_eq!(ids(&running), vec![job_id(NOW, 4)]);

    let next_due = |queues: Option<Vec<Queue>>| async move {
        store
            .next_due(queues.as_deref(), None)
            .await
            .expect("next_due")
    };
    assert_eq!(next_due(None).await, Some(NOW.add(seconds(10))));
    assert_eq!(
        next_due(Some(vec![queue("alpha")])).await,
        Some(NOW.add(seconds(20)))
    );
    assert_eq!(
        next_due(Some(vec![queue("beta")])).await,
        Some(NOW.add(seconds(10)))
    );
    assert_eq!(next_due(Some(vec![queue("gamma")])).await, None);
    assert_eq!(
        next_due(Some(vec![queue("gamma"), queue("alpha")])).await,
        Some(NOW.add(seconds(20)))
    );

    // A retrying job is pending; a cancelled one is not.
    let retry = FailOutcome::Retry {
        at: NOW.add(seconds(1)),
    };
    store
        .fail(running[0].id, token_of(&running[0]), "boom", retry, NOW)
        .await
        .expect("fail");
    assert_eq!(next_due(None).await, Some(NOW.add(seconds(1))));
    store.cancel(running[0].id, NOW).await.expect("cancel");
    assert_eq!(next_due(None).await, Some(NOW.add(seconds(10))));
}

pub async fn next_due_sees_only_the_requested_kinds(store: Arc<dyn Store>) {
    let store = &*store;
    let of_kind = |sequence, kind_name: &str, name: &str, priority, run_at| {
        let options = JobOptions::default()
            .id(job_id(NOW, sequence))
            .queue(queue(name))
            .priority(Priority::new(priority).expect("valid"));
        new_job(kind_name, run_at, options, NOW)
    };
    let (a, b, c) = ("conformance.a", "conformance.b", "conformance.c");
    insert(
        store,
        vec![
            of_kind(1, a, "alpha", 5, NOW.add(seconds(30))),
            of_kind(2, b, "alpha", 5, NOW.add(seconds(10))),
            of_kind(3, b, "beta", 5, NOW.add(seconds(5))),
            of_kind(4, c, "alpha", 0, NOW.add(seconds(20))),
            of_kind(5, a, "alpha", 5, NOW),
        ],
    )
    .await;
    // A running job of the kind is not pending.
    let first_a = ClaimRequest {
        kinds: Some(vec![kind(a)]),
        ..request(1, NOW)
    };
    assert_eq!(ids(&claim(store, first_a, NOW).await), vec![job_id(NOW, 5)]);

    let next_due = |queues: Option<Vec<&str>>, kinds: Option<Vec<&str>>| {
        let queues: Option<Vec<Queue>> = queues.map(|names| names.into_iter().map(queue).collect());
        let kinds: Option<Vec<_>> = kinds.map(|names| names.into_iter().map(kind).collect());
        async move {
            store
                .next_due(queues.as_deref(), kinds.as_deref())
                .await
                .expect("next_due")
        }
    };
    assert_eq!(next_due(None, None).await, Some(NOW.add(seconds(5))));
    assert_eq!(next_due(None, Some(vec![])).await, None);
    assert_eq!(next_due(None, Some(vec!["conformance.nobody"])).await, None);
    // An earlier job of another kind in the same level does not hide a later one of the kind.
    assert_eq!(
        next_due(None, Some(vec![a])).await,
        Some(NOW.add(seconds(30)))
    );
    assert_eq!(
        next_due(None, Some(vec![a, c])).await,
        Some(NOW.add(seconds(20)))
    );
    assert_eq!(
        next_due(None, Some(vec![b])).await,
        Some(NOW.add(seconds(5)))
    );
    assert_eq!(
        next_due(Some(vec!["alpha"]), Some(vec![b, b])).await,
        Some(NOW.add(seconds(10)))
    );
    assert_eq!(next_due(Some(vec!["beta"]), Some(vec![a, c])).await, None);
    assert_eq!(next_due(Some(vec![]), Some(vec![b])).await, None);

    let too_many = vec![kind(a); limits::CLAIM_KINDS_MAX + 1];
    let refused = store.next_due(None, Some(&too_many)).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Invalid(ValidationError::TooLong {
                field: "kinds",
                ..
            }))
        ),
        "{refused:?}"
    );
}

/// The ids of those of `jobs` that `keep` keeps, in claim order (priority, `run_at`, id).
fn in_claim_order(jobs: &[NewJob], keep: impl Fn(&NewJob) -> bool) -> Vec<JobId> {
    let mut kept: Vec<&NewJob> = jobs.iter().filter(|job| keep(job)).collect();
    kept.sort_by_key(|job| (job.priority, job.run_at, job.id));
    kept.into_iter().map(|job| job.id).collect()
}

/// A job of `kind_name` in queue `name` at `priority`, due at `run_at`, with id `sequence`.
fn pending_job(
    sequence: u64,
    kind_name: &str,
    name: &str,
    priority: u8,
    run_at: Timestamp,
) -> NewJob {
    let options = JobOptions::default()
        .id(job_id(NOW, sequence))
        .queue(queue(name))
        .priority(Priority::new(priority).expect("valid"));
    new_job(kind_name, run_at, options, NOW)
}

pub async fn claim_and_next_due_of_kinds_pass_over_many_jobs_of_other_kinds(store: Arc<dyn Store>) {
    let store = &*store;
    let (a, b) = ("conformance.a", "conformance.b");
    let others = ["conformance.x", "conformance.y"];
    // 300 jobs of other kinds at every priority level, each due before every job of `a` and
    // `b` at its level: a walk in claim order meets them all first.
    let mut crowd: Vec<NewJob> = (0..300u64)
        .map(|n| {
            let run_at = NOW.sub(seconds(400 - n));
            pending_job(
                n,
                others[(n % 2) as usize],
                "default",
                (n % 10) as u8,
                run_at,
            )
        })
        .collect();
    let wanted = [
        pending_job(1_000, a, "default", 3, NOW.sub(seconds(50))),
        pending_job(1_001, b, "default", 3, NOW.sub(seconds(60))),
        // The same level and `run_at` as 1,001, of the other kind asked for: the id decides.
        pending_job(1_002, a, "default", 3, NOW.sub(seconds(60))),
        pending_job(1_003, b, "default", 7, NOW.sub(seconds(90))),
        pending_job(1_004, a, "default", 7, NOW.add(seconds(30))),
        pending_job(1_005, b, "default", 9, NOW.add(seconds(10))),
    ];
    crowd.extend(wanted.iter().cloned());
    insert(store, crowd.clone()).await;

    let next_due = |kinds: &[&str]| {
        let kinds: Vec<_> = kinds.iter().map(|name| kind(name)).collect();
        async move { store.next_due(None, Some(&kinds)).await.expect("next_due") }
    };
    let of_kinds = |kinds: &[&str], limit, due_by| ClaimRequest {
        kinds: Some(kinds.iter().map(|name| kind(name)).collect()),
        ..request(limit, due_by)
    };
    assert_eq!(next_due(&[a]).await, Some(NOW.sub(seconds(60))));
    assert_eq!(next_due(&[b]).await, Some(NOW.sub(seconds(90))));
    assert_eq!(next_due(&[a, b]).await, Some(NOW.sub(seconds(90))));

    // The kinds asked for are merged into claim order, and the limit cuts within a level.
    let first = claim(store, of_kinds(&[b, a], 2, NOW), NOW).await;
    assert_eq!(ids(&first), vec![job_id(NOW, 1_001), job_id(NOW, 1_002)]);
    let rest = claim(store, of_kinds(&[a, b], 10, NOW), NOW).await;
    assert_eq!(ids(&rest), vec![job_id(NOW, 1_000), job_id(NOW, 1_003)]);
    assert!(
        claim(store, of_kinds(&[a, b], 10, NOW), NOW)
            .await
            .is_empty()
    );
    assert_eq!(next_due(&[a, b]).await, Some(NOW.add(seconds(10))));
    let later = claim(store, of_kinds(&[a, b], 10, NOW.add(seconds(60))), NOW).await;
    assert_eq!(ids(&later), vec![job_id(NOW, 1_004), job_id(NOW, 1_005)]);
    assert_eq!(next_due(&[a, b]).await, None);

    // The crowd was passed over, not touched: all of it pending, in its own claim order.
    assert_eq!(next_due(&others).await, Some(NOW.sub(seconds(400))));
    let taken = claim(store, of_kinds(&[others[1]], 1_000, NOW), NOW).await;
    let expected = in_claim_order(&crowd, |job| job.kind == kind(others[1]));
    assert_eq!(expected.len(), 150);
    assert_eq!(ids(&taken), expected);
}

pub async fn claim_and_next_due_of_kinds_in_queues_match_both_filters(store: Arc<dyn Store>) {
    let store = &*store;
    let (a, b, x) = ("conformance.a", "conformance.b", "conformance.x");
    // Ahead at every level: 200 jobs of another kind in `alpha`, and 100 of kind `a` in
    // `gamma`. Whichever index a store walks for both filters, one of the two crowds is in it.
    let mut jobs: Vec<NewJob> = (0..300u64)
        .map(|n| {
            let (kind_name, name) = if n < 200 { (x, "alpha") } else { (a, "gamma") };
            pending_job(
                n,
                kind_name,
                name,
                (n % 10) as u8,
                NOW.sub(seconds(400 - n)),
            )
        })
        .collect();
    jobs.extend([
        pending_job(1_000, a, "alpha", 5, NOW.sub(seconds(30))),
        pending_job(1_001, a, "alpha", 5, NOW.sub(seconds(20))),
        pending_job(1_002, b, "alpha", 5, NOW.sub(seconds(25))),
        pending_job(1_003, a, "beta", 2, NOW.sub(seconds(10))),
        pending_job(1_004, b, "beta", 8, NOW.sub(seconds(40))),
    ]);
    insert(store, jobs.clone()).await;

    let names = |list: &[&str]| list.iter().map(|name| queue(name)).collect::<Vec<_>>();
    let kinds_of = |list: &[&str]| list.iter().map(|name| kind(name)).collect::<Vec<_>>();
    let next_due = |queues: &[&str], kinds: &[&str]| {
        let (queues, kinds) = (names(queues), kinds_of(kinds));
        async move {
            store
                .next_due(Some(&queues), Some(&kinds))
                .await
                .expect("next_due")
        }
    };
    let of = |queues: &[&str], kinds: &[&str], limit| ClaimRequest {
        queues: Some(names(queues)),
        kinds: Some(kinds_of(kinds)),
        ..request(limit, NOW)
    };

    // One queue, one kind.
    assert_eq!(next_due(&["alpha"], &[a]).await, Some(NOW.sub(seconds(30))));
    let claimed = claim(store, of(&["alpha"], &[a], 10), NOW).await;
    assert_eq!(ids(&claimed), vec![job_id(NOW, 1_000), job_id(NOW, 1_001)]);
    // More queues than kinds.
    assert_eq!(
        next_due(&["beta", "alpha"], &[b]).await,
        Some(NOW.sub(seconds(40)))
    );
    let claimed = claim(store, of(&["beta", "alpha", "beta"], &[b], 10), NOW).await;
    assert_eq!(ids(&claimed), vec![job_id(NOW, 1_002), job_id(NOW, 1_004)]);
    // More kinds than queues.
    assert_eq!(
        next_due(&["beta"], &[b, a]).await,
        Some(NOW.sub(seconds(10)))
    );
    let claimed = claim(store, of(&["beta"], &[b, a], 10), NOW).await;
    assert_eq!(ids(&claimed), vec![job_id(NOW, 1_003)]);

    // Both crowds are left, and are found by the filters that match them.
    assert_eq!(next_due(&["alpha"], &[a, b]).await, None);
    assert!(
        claim(store, of(&["alpha"], &[a, b], 10), NOW)
            .await
            .is_empty()
    );
    assert_eq!(next_due(&["alpha", "beta"], &[a]).await, None);
    assert_eq!(
        next_due(&["gamma", "alpha"], &[a]).await,
        Some(NOW.sub(seconds(200)))
    );
    let claimed = claim(store, of(&["gamma", "alpha"], &[a], 5), NOW).await;
    let expected = in_claim_order(&jobs, |job| job.queue == queue("gamma"));
    assert_eq!(ids(&claimed), expected[..5]);
    let claimed = claim(store, of(&["alpha"], &[x, b], 1_000), NOW).await;
    let expected = in_claim_order(&jobs, |job| job.kind == kind(x));
    assert_eq!(expected.len(), 200);
    assert_eq!(ids(&claimed), expected);
}

pub async fn next_lease_expiry_finds_the_earliest_lease(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(
        store.next_lease_expiry().await.expect("next_lease_expiry"),
        None
    );
    insert(
        store,
        vec![
            job_numbered(1, NOW),
            job_numbered(2, NOW),
            job_numbered(3, NOW),
        ],
    )
    .await;
    assert_eq!(
        store.next_lease_expiry().await.expect("next_lease_expiry"),
        None
    );

    let with_lease = |lease| ClaimRequest {
        lease,
        ..request(1, NOW)
    };
    let long = claim(store, with_lease(seconds(60)), NOW).await;
    let short = claim(store, with_lease(seconds(20)), NOW).await;
    assert_eq!(
        store.next_lease_expiry().await.expect("next_lease_expiry"),
        Some(NOW.add(seconds(20)))
    );
    store
        .complete(short[0].id, token_of(&short[0]), NOW)
        .await
        .expect("complete");
    assert_eq!(
        store.next_lease_expiry().await.expect("next_lease_expiry"),
        Some(NOW.add(seconds(60)))
    );
    store
        .complete(long[0].id, token_of(&long[0]), NOW)
        .await
        .expect("complete");
    assert_eq!(
        store.next_lease_expiry().await.expect("next_lease_expiry"),
        None
    );
}

pub async fn list_filters_by_queue_state_and_kind(store: Arc<dyn Store>) {
    let store = &*store;
    let with = |sequence, queue_name: &str, kind_name: &str| {
        let options = JobOptions::default()
            .id(job_id(NOW, sequence))
            .queue(queue(queue_name));
        new_job(kind_name, NOW, options, NOW)
    };
    insert(
        store,
        vec![
            with(4, "beta", "email"),
            with(1, "alpha", "email"),
            with(2, "alpha", "sms"),
            with(3, "beta", "email"),
        ],
    )
    .await;
    let beta = ClaimRequest {
        queues: Some(vec![queue("beta")]),
        ..request(1, NOW)
    };
    claim(store, beta, NOW).await;

    let listed = |filter: JobFilter| async move {
        let sequences: Vec<u64> = list_all(store, filter)
            .await
            .iter()
            .map(|job| {
                (0..10)
                    .find(|n| job_id(NOW, *n) == job.id)
                    .expect("a known id")
            })
            .collect();
        sequences
    };
    assert_eq!(listed(JobFilter::default()).await, vec![1, 2, 3, 4]);
    let alpha = JobFilter {
        queue: Some(queue("alpha")),
        ..JobFilter::default()
    };
    assert_eq!(listed(alpha).await, vec![1, 2]);
    let email = JobFilter {
        kind: Some(kind("email")),
        ..JobFilter::default()
    };
    assert_eq!(listed(email).await, vec![1, 3, 4]);
    let running = JobFilter {
        state: Some(JobState::Running),
        ..JobFilter::default()
    };
    assert_eq!(listed(running).await, vec![3]);
    let all_three = JobFilter {
        queue: Some(queue("beta")),
        state: Some(JobState::Scheduled),
        kind: Some(kind("email")),
        ..JobFilter::default()
    };
    assert_eq!(listed(all_three).await, vec![4]);
    let nowhere = JobFilter {
        queue: Some(queue("gamma")),
        ..JobFilter::default()
    };
    assert_eq!(listed(nowhere).await, Vec::<u64>::new());
}

pub async fn list_pages_visit_every_job_exactly_once(store: Arc<dyn Store>) {
    let store = &*store;
    // Inserted in reverse id order: pages follow ids, not insertion.
    let jobs: Vec<NewJob> = (0..24u64)
        .rev()
        .map(|sequence| {
            let parity = if sequence % 2 == 0 { "even" } else { "odd" };
            let options = JobOptions::default()
                .id(job_id(NOW, sequence))
                .queue(queue(parity));
            new_job("conformance.job", NOW, options, NOW)
        })
        .collect();
    insert(store, jobs).await;

    // Pages of `limit` until `next` is None; returns page sizes and the ids seen.
    let walk = |filter: JobFilter, limit: usize| async move {
        let mut sizes = Vec::new();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list(filter.clone(), after, limit)
                .await
                .expect("list");
            sizes.push(page.jobs.len());
            seen.extend(ids(&page.jobs));
            match page.next {
                Some(cursor) => {
                    assert_eq!(Some(cursor), page.jobs.last().map(|job| Cursor(job.id)));
                    after = Some(cursor);
                }
                None => return (sizes, seen),
            }
        }
    };
    let all: Vec<JobId> = (0..24).map(|sequence| job_id(NOW, sequence)).collect();
    let (sizes, seen) = walk(JobFilter::default(), 7).await;
    assert_eq!(sizes, vec![7, 7, 7, 3]);
    assert_eq!(seen, all);

    // A filtered listing whose last page is exactly full: one more, empty page ends it.
    let even = JobFilter {
        queue: Some(queue("even")),
        ..JobFilter::default()
    };
    let (sizes, seen) = walk(even, 6).await;
    assert_eq!(sizes, vec![6, 6, 0]);
    let evens: Vec<JobId> = (0..24)
        .step_by(2)
        .map(|sequence| job_id(NOW, sequence))
        .collect();
    assert_eq!(seen, evens);

    let empty = store
        .list(JobFilter::default(), None, 0)
        .await
        .expect("list");
    assert!(empty.jobs.is_empty());
    assert_eq!(empty.next, None);
}

pub async fn list_caps_the_page_size(store: Arc<dyn Store>) {
    let store = &*store;
    let total = limits::PAGE_SIZE_MAX + 5;
    let jobs: Vec<NewJob> = (0..total as u64).map(|n| job_numbered(n, NOW)).collect();
    insert(store, jobs).await;
    let page = store
        .list(JobFilter::default(), None, limits::PAGE_SIZE_MAX * 10)
        .await
        .expect("list");
    assert_eq!(page.jobs.len(), limits::PAGE_SIZE_MAX);
    assert!(page.next.is_some());
    let rest = store
        .list(JobFilter::default(), page.next, limits::PAGE_SIZE_MAX)
        .await
        .expect("list");
    assert_eq!(rest.jobs.len(), 5);
    assert_eq!(rest.next, None);
}

pub async fn counts_by_queue_and_state(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(store.counts().await.expect("counts"), Vec::new());
    let in_queue = |sequence, name: &str| {
        let options = JobOptions::default()
            .id(job_id(NOW, sequence))
            .queue(queue(name));
        new_job("conformance.job", NOW, options, NOW)
    };
    insert(
        store,
        vec![
            in_queue(1, "beta"),
            in_queue(2, "beta"),
            in_queue(3, "alpha"),
            in_queue(4, "alpha"),
            in_queue(5, "alpha"),
        ],
    )
    .await;
    // beta: one succeeded, one retrying. alpha: one running, two scheduled.
    let beta = ClaimRequest {
        queues: Some(vec![queue("beta")]),
        ..request(2, NOW)
    };
    let claimed = claim(store, beta, NOW).await;
    store
        .complete(claimed[0].id, token_of(&claimed[0]), NOW)
        .await
        .expect("complete");
    let retry = FailOutcome::Retry {
        at: NOW.add(seconds(5)),
    };
    store
        .fail(claimed[1].id, token_of(&claimed[1]), "boom", retry, NOW)
        .await
        .expect("fail");
    let alpha = ClaimRequest {
        queues: Some(vec![queue("alpha")]),
        ..request(1, NOW)
    };
    claim(store, alpha, NOW).await;

    let count = |name: &str, state, count| StateCount {
        queue: queue(name),
        state,
        count,
    };
    // Sorted by queue, then by state in `JobState`'s order; zero counts left out.
    assert_eq!(
        store.counts().await.expect("counts"),
        vec![
            count("alpha", JobState::Scheduled, 2),
            count("alpha", JobState::Running, 1),
            count("beta", JobState::Retrying, 1),
            count("beta", JobState::Succeeded, 1),
        ]
    );
}

pub async fn purge_finished_deletes_only_old_finished_jobs_and_respects_its_limit(
    store: Arc<dyn Store>,
) {
    let store = &*store;
    let jobs: Vec<NewJob> = (1..=6)
        .map(|n| job_numbered(n, NOW.sub(seconds(3_600))))
        .collect();
    insert(store, jobs).await;
    let at = |offset| NOW.add(seconds(offset));
    // Finished at +0 s (succeeded), +10 s (cancelled), +30 s (dead); one running, one retrying
    // and one scheduled job, all created long ago, are never purged.
    let succeeded = claim_one(store, at(0)).await;
    store
        .complete(succeeded.id, token_of(&succeeded), at(0))
        .await
        .expect("complete");
    let cancelled = claim_one(store, at(0)).await;
    store.cancel(cancelled.id, at(10)).await.expect("cancel");
    let dead = claim_one(store, at(0)).await;
    store
        .fail(dead.id, token_of(&dead), "fatal", FailOutcome::Dead, at(30))
        .await
        .expect("fail");
    let retrying = claim_one(store, at(0)).await;
    let retry = FailOutcome::Retry { at: at(3_600) };
    store
        .fail(retrying.id, token_of(&retrying), "boom", retry, at(0))
        .await
        .expect("fail");
    let running = claim_one(store, at(0)).await;
    let scheduled = job_id(NOW, 6);

    // Before +25 s: two finished jobs, taken one per call with a limit of one.
    assert_eq!(purge(store, at(25), 0).await, 0);
    assert_eq!(purge(store, at(25), 1).await, 1);
    assert_eq!(purge(store, at(25), 10).await, 1);
    assert_eq!(purge(store, at(25), 10).await, 0);
    assert_eq!(store.get(succeeded.id).await.expect("get"), None);
    assert_eq!(store.get(cancelled.id).await.expect("get"), None);

    // `finished_at` must be strictly before the cut-off.
    assert_eq!(purge(store, at(30), 10).await, 0);
    let after_dead = at(30).add(Duration::from_micros(1));
    assert_eq!(purge(store, after_dead, 10).await, 1);

    let far = at(30 * 24 * 3_600);
    assert_eq!(purge(store, far, 10).await, 0);
    let left: BTreeSet<JobId> = ids(&list_all(store, JobFilter::default()).await)
        .into_iter()
        .collect();
    assert_eq!(left, BTreeSet::from([retrying.id, running.id, scheduled]));
}

/// How long the leadership tests' leaders lead before they must renew.
const LEADERSHIP: Duration = Duration::from_secs(10);

async fn lead(
    store: &dyn Store,
    name: &str,
    term: Option<LeaderTerm>,
    now: Timestamp,
) -> Option<LeaderTerm> {
    store
        .lead(&node(name), term, LEADERSHIP, now)
        .await
        .expect("lead")
}

pub async fn the_first_node_to_ask_leads_with_term_one(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(lead(store, "node-a", None, NOW).await, Some(LeaderTerm(1)));
}

pub async fn a_second_node_is_refused_while_the_leaders_lease_is_live(store: Arc<dyn Store>) {
    let store = &*store;
    let term = lead(store, "node-a", None, NOW).await.expect("leads");
    let just_before = NOW.add(LEADERSHIP).sub(Duration::from_micros(1));
    for now in [NOW, NOW.add(seconds(5)), just_before] {
        assert_eq!(lead(store, "node-b", None, now).await, None, "at {now}");
        // Knowing the leader's term does not help another node.
        assert_eq!(lead(store, "node-b", Some(term), now).await, None);
    }
    // Nor does the leader's own name without its term (a restart under the same name): it
    // waits for the old term to expire rather than share it.
    assert_eq!(lead(store, "node-a", None, NOW.add(seconds(1))).await, None);
    // The leader's duties still pass.
    rescue_as(store, term, just_before).await.expect("rescue");
}

pub async fn renewal_keeps_the_term_and_moves_the_expiry(store: Arc<dyn Store>) {
    let store = &*store;
    let term = lead(store, "node-a", None, NOW).await.expect("leads");
    let renewed_at = NOW.add(seconds(9));
    assert_eq!(
        lead(store, "node-a", Some(term), renewed_at).await,
        Some(term)
    );
    // Past the first expiry, within the renewed one: still the leader, and alone.
    let after_first_expiry = NOW.add(seconds(15));
    assert_eq!(lead(store, "node-b", None, after_first_expiry).await, None);
    rescue_as(store, term, after_first_expiry)
        .await
        .expect("rescue");
    store
        .purge_finished(term, NOW, 10, after_first_expiry)
        .await
        .expect("purge");
    assert_eq!(
        lead(store, "node-a", Some(term), after_first_expiry).await,
        Some(term)
    );
}

pub async fn after_expiry_another_node_takes_over_with_a_larger_term(store: Arc<dyn Store>) {
    let store = &*store;
    let first = lead(store, "node-a", None, NOW).await.expect("leads");
    // An expiry at `now` has expired, as a job's lease has.
    let expiry = NOW.add(LEADERSHIP);
    let second = lead(store, "node-b", None, expiry)
        .await
        .expect("takes over");
    assert!(second > first, "{second:?} after {first:?}");
    // The old leader cannot renew its old term; it is refused while the new one is live.
    assert_eq!(lead(store, "node-a", Some(first), expiry).await, None);
    assert_eq!(lead(store, "node-a", None, expiry).await, None);
    // Once that one expires too, even the same node's next election takes a new term.
    let later = expiry.add(LEADERSHIP);
    let third = lead(store, "node-b", Some(second), later)
        .await
        .expect("leads again");
    assert!(third > second, "{third:?} after {second:?}");
}

pub async fn a_deposed_leaders_rescue_and_purge_are_refused_and_change_nothing(
    store: Arc<dyn Store>,
) {
    let store = &*store;
    // One job whose holder dies (its lease expires), one finished long before the cut-off.
    let expiring = insert_one(store, job_numbered(1, NOW)).await;
    let finished = insert_one(store, job_numbered(2, NOW)).await;
    assert_eq!(claim_one(store, NOW).await.id, expiring);
    let done = claim_one(store, NOW).await;
    store
        .complete(finished, token_of(&done), NOW)
        .await
        .expect("complete");

    let deposed = lead(store, "node-a", None, NOW).await.expect("leads");
    // node-a's lease runs out without a renewal (a paused process); node-b takes over.
    let now = NOW.add(LEASE).add(LEADERSHIP);
    let current = lead(store, "node-b", None, now).await.expect("takes over");
    let before = list_all(store, JobFilter::default()).await;
    assert_not_leader(rescue_as(store, deposed, now).await, deposed);
    let far = now.add(seconds(3_600));
    assert_not_leader(store.purge_finished(deposed, far, 10, now).await, deposed);
    // A term never granted is no better.
    let unknown = LeaderTerm(current.0 + 1);
    assert_not_leader(rescue_as(store, unknown, now).await, unknown);
    assert_not_leader(store.purge_finished(unknown, far, 10, now).await, unknown);
    assert_eq!(list_all(store, JobFilter::default()).await, before);

    // The current leader's duties do what the deposed one's could not.
    let rescued = rescue_as(store, current, now).await.expect("rescue");
    assert_eq!(
        rescued.iter().map(|outcome| outcome.id).collect::<Vec<_>>(),
        vec![expiring]
    );
    assert_eq!(
        store
            .purge_finished(current, far, 10, now)
            .await
            .expect("purge"),
        1
    );
    assert_eq!(store.get(finished).await.expect("get"), None);

    // A leader whose lease ran out is refused even when nobody took over.
    let lapsed = now.add(LEADERSHIP);
    assert_not_leader(rescue_as(store, current, lapsed).await, current);
    assert_not_leader(
        store.purge_finished(current, far, 10, lapsed).await,
        current,
    );
}

pub async fn resign_lets_another_node_lead_at_once(store: Arc<dyn Store>) {
    let store = &*store;
    let term = lead(store, "node-a", None, NOW).await.expect("leads");
    let now = NOW.add(seconds(1));
    assert_eq!(lead(store, "node-b", None, now).await, None);
    // Only the holder of the term can resign it; anyone else's resignation changes nothing.
    store.resign(&node("node-b"), term).await.expect("resign");
    store
        .resign(&node("node-a"), LeaderTerm(term.0 + 1))
        .await
        .expect("resign");
    assert_eq!(lead(store, "node-b", None, now).await, None);

    store.resign(&node("node-a"), term).await.expect("resign");
    let next = lead(store, "node-b", None, now)
        .await
        .expect("leads at once");
    assert!(next > term, "{next:?} after {term:?}");
    assert_not_leader(rescue_as(store, term, now).await, term);
    // Resigning twice is harmless.
    store.resign(&node("node-a"), term).await.expect("resign");
    assert_eq!(lead(store, "node-b", Some(next), now).await, Some(next));
}

async fn rescue_as(
    store: &dyn Store,
    term: LeaderTerm,
    now: Timestamp,
) -> Result<Vec<RescueOutcome>, StoreError> {
    store.rescue_expired(term, now, 10).await
}

pub async fn unknown_ids_give_not_found(store: Arc<dyn Store>) {
    let store = &*store;
    // Another job exists, so the store is not simply empty.
    insert_one(store, job(NOW)).await;
    let missing = job_id(NOW, 12_345);
    let token = LeaseToken(1);
    let later = NOW.add(seconds(60));
    assert_not_found(
        store.extend_lease(missing, token, later, NOW).await,
        missing,
    );
    assert_not_found(store.complete(missing, token, NOW).await, missing);
    assert_not_found(
        store
            .fail(missing, token, "x", FailOutcome::Dead, NOW)
            .await,
        missing,
    );
    let retry = FailOutcome::Retry { at: later };
    assert_not_found(store.fail(missing, token, "x", retry, NOW).await, missing);
    assert_not_found(store.release(missing, token, NOW).await, missing);
    assert_not_found(store.cancel(missing, NOW).await, missing);
    assert_not_found(store.reschedule(missing, later, NOW).await, missing);
    assert_eq!(store.get(missing).await.expect("get"), None);
}

pub async fn large_payload_round_trips(store: Arc<dyn Store>) {
    let store = &*store;
    // A JSON string of exactly the limit: multi-byte characters, escapes, then ASCII padding.
    let mut text = String::from("\"");
    while text.len() + 12 < limits::PAYLOAD_BYTES_MAX {
        text.push_str("é☃\\n\\\"𝄞");
    }
    while text.len() + 1 < limits::PAYLOAD_BYTES_MAX {
        text.push('x');
    }
    text.push('"');
    assert_eq!(text.len(), limits::PAYLOAD_BYTES_MAX);
    let payload = Payload::from_json_text(&text).expect("valid JSON within the limit");
    let new = NewJob::new(
        kind("conformance.big"),
        payload,
        NOW,
        JobOptions::default(),
        NOW,
    )
    .expect("valid");
    let id = insert_one(store, new).await;
    assert_eq!(get(store, id).await.payload.as_str(), text);
    assert_eq!(claim_one(store, NOW).await.payload.as_str(), text);
}

pub async fn list_filters_by_due_range(store: Arc<dyn Store>) {
    let store = &*store;
    let at = |offset| NOW.add(seconds(offset));
    let in_queue = |sequence, name: &str, run_at| {
        let options = JobOptions::default()
            .id(job_id(NOW, sequence))
            .queue(queue(name));
        new_job("conformance.job", run_at, options, NOW)
    };
    insert(
        store,
        vec![
            in_queue(1, "alpha", at(0)),
            in_queue(2, "beta", at(10)),
            in_queue(3, "alpha", at(20)),
            in_queue(4, "alpha", at(30)),
            // A microsecond before +20 s: the bounds are exact to the microsecond.
            in_queue(5, "beta", at(20).sub(Duration::from_micros(1))),
        ],
    )
    .await;
    let listed = |filter: JobFilter| async move {
        let sequences: Vec<u64> = list_all(store, filter)
            .await
            .iter()
            .map(|job| {
                (0..10)
                    .find(|n| job_id(NOW, *n) == job.id)
                    .expect("a known id")
            })
            .collect();
        sequences
    };
    let range = |from: Option<u64>, before: Option<u64>| JobFilter {
        due_from: from.map(at),
        due_before: before.map(at),
        ..JobFilter::default()
    };
    // `due_from` is inclusive, `due_before` exclusive.
    assert_eq!(listed(range(Some(10), None)).await, vec![2, 3, 4, 5]);
    assert_eq!(listed(range(None, Some(20))).await, vec![1, 2, 5]);
    assert_eq!(listed(range(Some(10), Some(20))).await, vec![2, 5]);
    assert_eq!(listed(range(Some(20), Some(21))).await, vec![3]);
    // An empty or inverted range matches nothing.
    assert_eq!(listed(range(Some(20), Some(20))).await, Vec::<u64>::new());
    assert_eq!(listed(range(Some(30), Some(10))).await, Vec::<u64>::new());
    // With the other filters, each must match.
    let alpha_early = JobFilter {
        queue: Some(queue("alpha")),
        ..range(None, Some(25))
    };
    assert_eq!(listed(alpha_early).await, vec![1, 3]);

    // The range follows `run_at` as transitions move it: a retry moves the job later.
    let claimed = claim_one(store, at(0)).await;
    assert_eq!(claimed.id, job_id(NOW, 1));
    let retry = FailOutcome::Retry { at: at(40) };
    store
        .fail(claimed.id, token_of(&claimed), "boom", retry, at(0))
        .await
        .expect("fail");
    assert_eq!(listed(range(Some(35), None)).await, vec![1]);
    let retrying_early = JobFilter {
        state: Some(JobState::Retrying),
        ..range(None, Some(35))
    };
    assert_eq!(listed(retrying_early).await, Vec::<u64>::new());

    // Pages of one, through the cursor, see the same jobs.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(range(Some(10), Some(35)), after, 1)
            .await
            .expect("list");
        seen.extend(ids(&page.jobs));
        match page.next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    let expected: Vec<JobId> = [2, 3, 4, 5].iter().map(|n| job_id(NOW, *n)).collect();
    assert_eq!(seen, expected);
}

/// The counts a full listing gives, in `counts`' order (queue, then state), zeros left out.
async fn counts_from_listing(store: &dyn Store) -> Vec<StateCount> {
    let mut tally: std::collections::BTreeMap<(Queue, JobState), u64> = Default::default();
    for job in list_all(store, JobFilter::default()).await {
        *tally.entry((job.queue, job.state)).or_default() += 1;
    }
    tally
        .into_iter()
        .map(|((queue, state), count)| StateCount {
            queue,
            state,
            count,
        })
        .collect()
}

/// `counts` must agree with the jobs actually stored, after every kind of write.
async fn assert_counts_exact(store: &dyn Store, after: &str) {
    assert_eq!(
        store.counts().await.expect("counts"),
        counts_from_listing(store).await,
        "counts after {after}"
    );
}

pub async fn counts_stay_exact_across_every_transition(store: Arc<dyn Store>) {
    let store = &*store;
    let at = |offset| NOW.add(seconds(offset));
    assert_counts_exact(store, "nothing").await;
    let in_queue = |sequence, name: &str, attempt_max| {
        let options = JobOptions::default()
            .id(job_id(NOW, sequence))
            .queue(queue(name))
            .attempt_max(attempt_max)
            .retry(retry_without_jitter());
        new_job("conformance.job", NOW, options, NOW)
    };
    let jobs: Vec<NewJob> = (1..=8)
        .map(|n| in_queue(n, if n % 2 == 0 { "beta" } else { "alpha" }, 2))
        .collect();
    insert(store, jobs).await;
    assert_counts_exact(store, "insert").await;
    let count = |name: &str, state, count| StateCount {
        queue: queue(name),
        state,
        count,
    };
    assert_eq!(
        store.counts().await.expect("counts"),
        vec![
            count("alpha", JobState::Scheduled, 4),
            count("beta", JobState::Scheduled, 4),
        ]
    );

    // A refused insert counts nothing.
    let clash = in_queue(1, "gamma", 1);
    assert!(store.insert(vec![job(NOW), clash], NOW).await.is_err());
    assert_counts_exact(store, "a refused insert").await;

    let claimed = claim(store, request(8, at(0)), at(0)).await;
    assert_eq!(claimed.len(), 8);
    assert_counts_exact(store, "claim").await;
    let [a, b, c, d, e, f, g, _h] = <[Job; 8]>::try_from(claimed).expect("eight claimed");

    store
        .extend_lease(a.id, token_of(&a), at(60), at(1))
        .await
        .expect("extend");
    assert_counts_exact(store, "extend_lease").await;
    store
        .complete(a.id, token_of(&a), at(1))
        .await
        .expect("complete");
    assert_counts_exact(store, "complete").await;
    // A second completion under the same token changes nothing, a stale one neither.
    store
        .complete(a.id, token_of(&a), at(1))
        .await
        .expect("complete again");
    assert!(store.complete(b.id, LeaseToken(99), at(1)).await.is_err());
    assert_counts_exact(store, "a repeated and a stale completion").await;

    let retry = FailOutcome::Retry { at: at(5) };
    store
        .fail(b.id, token_of(&b), "boom", retry, at(1))
        .await
        .expect("fail retry");
    assert_counts_exact(store, "fail with retry").await;
    store
        .fail(c.id, token_of(&c), "fatal", FailOutcome::Dead, at(1))
        .await
        .expect("fail dead");
    assert_counts_exact(store, "fail dead").await;
    store
        .release(d.id, token_of(&d), at(1))
        .await
        .expect("release");
    assert_counts_exact(store, "release").await;
    store.cancel(e.id, at(1)).await.expect("cancel running");
    assert_counts_exact(store, "cancel of a running job").await;
    // d is pending again after its release.
    store.cancel(d.id, at(1)).await.expect("cancel pending");
    assert_counts_exact(store, "cancel of a pending job").await;
    assert!(store.cancel(d.id, at(1)).await.is_err());
    assert_counts_exact(store, "a refused cancel").await;

    // Reschedule: a pending job moves (no count changes), a dead and a cancelled job revive.
    store
        .reschedule(b.id, at(3), at(2))
        .await
        .expect("reschedule pending");
    assert_counts_exact(store, "reschedule of a pending job").await;
    store
        .reschedule(c.id, at(3), at(2))
        .await
        .expect("revive dead");
    store
        .reschedule(e.id, at(3), at(2))
        .await
        .expect("revive cancelled");
    assert_counts_exact(store, "reschedule revives").await;

    // Rescue: f, g and h have an attempt left (retrying); claimed again, f and g have none
    // (dead).
    let rescued = rescue(store, at(0).add(LEASE), 10).await;
    assert_eq!(rescued.len(), 3, "{rescued:?}");
    assert_counts_exact(store, "rescue to retrying").await;
    let later = at(0).add(LEASE).add(seconds(60));
    let again = claim(store, request(10, later), later).await;
    assert!(
        ids(&again).contains(&f.id) && ids(&again).contains(&g.id),
        "{again:?}"
    );
    assert_counts_exact(store, "a second claim").await;
    let rescued = rescue(store, later.add(LEASE), 10).await;
    assert!(
        rescued
            .iter()
            .any(|outcome| outcome.id == f.id && outcome.state == JobState::Dead),
        "{rescued:?}"
    );
    assert_counts_exact(store, "rescue to dead").await;

    // Purge: every finished job goes.
    let far = later.add(seconds(86_400));
    assert!(purge(store, far, 100).await > 0);
    assert_counts_exact(store, "purge").await;

    // A recurring job's next occurrence is counted with the claim that stores it.
    let options = JobOptions::default()
        .queue(queue("recurring"))
        .schedule(Schedule::interval(seconds(60)).expect("valid"));
    insert_one(store, new_job("conformance.every", far, options, NOW)).await;
    let recurring = ClaimRequest {
        queues: Some(vec![queue("recurring")]),
        ..request(1, far)
    };
    assert_eq!(claim(store, recurring, far).await.len(), 1);
    assert_counts_exact(store, "a claim that stores the next occurrence").await;
    let counts = store.counts().await.expect("counts");
    assert!(counts.contains(&count("recurring", JobState::Scheduled, 1)));
    assert!(counts.contains(&count("recurring", JobState::Running, 1)));
}

pub async fn queue_stats_reports_counts_due_and_oldest_due(store: Arc<dyn Store>) {
    let store = &*store;
    assert_eq!(
        store.queue_stats(NOW).await.expect("queue_stats"),
        Vec::new()
    );
    let at = |offset| NOW.add(seconds(offset));
    let in_queue = |sequence, name: &str, priority, run_at| {
        let options = JobOptions::default()
            .id(job_id(NOW, sequence))
            .queue(queue(name))
            .priority(Priority::new(priority).expect("valid"));
        new_job("conformance.job", run_at, options, NOW)
    };
    insert(
        store,
        vec![
            // beta: due at -30 s (priority 9), -10 s and 0 s (priority 0), one at +60 s.
            in_queue(1, "beta", 0, at(0)),
            in_queue(2, "beta", 9, NOW.sub(seconds(30))),
            in_queue(3, "beta", 0, NOW.sub(seconds(10))),
            in_queue(4, "beta", 5, at(60)),
            // alpha: one due, to be claimed (running is not due); one to finish.
            in_queue(5, "alpha", 0, NOW.sub(seconds(5))),
            in_queue(6, "alpha", 0, NOW.sub(seconds(6))),
            // gamma: nothing due yet.
            in_queue(7, "gamma", 3, at(1)),
        ],
    )
    .await;
    let alpha = ClaimRequest {
        queues: Some(vec![queue("alpha")]),
        ..request(2, NOW)
    };
    let claimed = claim(store, alpha, NOW).await;
    assert_eq!(ids(&claimed), vec![job_id(NOW, 6), job_id(NOW, 5)]);
    store
        .complete(claimed[0].id, token_of(&claimed[0]), NOW)
        .await
        .expect("complete");

    let counts = |entries: &[(JobState, u64)]| {
        let mut counts = StateCounts::default();
        for (state, count) in entries {
            counts.add(*state, *count);
        }
        counts
    };
    let stats = store.queue_stats(NOW).await.expect("queue_stats");
    assert_eq!(
        stats,
        vec![
            QueueStats {
                queue: queue("alpha"),
                counts: counts(&[(JobState::Running, 1), (JobState::Succeeded, 1)]),
                due: 0,
                oldest_due: None,
            },
            QueueStats {
                queue: queue("beta"),
                counts: counts(&[(JobState::Scheduled, 4)]),
                due: 3,
                oldest_due: Some(NOW.sub(seconds(30))),
            },
            QueueStats {
                queue: queue("gamma"),
                counts: counts(&[(JobState::Scheduled, 1)]),
                due: 0,
                oldest_due: None,
            },
        ]
    );
    // The counts are those of `counts`.
    let flat: Vec<StateCount> = stats
        .iter()
        .flat_map(|stats| {
            JobState::ALL.iter().filter_map(|state| {
                let count = stats.counts.get(*state);
                (count > 0).then(|| StateCount {
                    queue: stats.queue.clone(),
                    state: *state,
                    count,
                })
            })
        })
        .collect();
    assert_eq!(flat, store.counts().await.expect("counts"));

    // Due means `run_at <= now`, exactly; a retrying job is due like a scheduled one.
    let at_one = store.queue_stats(at(1)).await.expect("queue_stats");
    assert_eq!(at_one[2].due, 1);
    assert_eq!(at_one[2].oldest_due, Some(at(1)));
    let just_before = at(1).sub(Duration::from_micros(1));
    assert_eq!(
        store.queue_stats(just_before).await.expect("stats")[2].due,
        0
    );
    let running = claimed[1].clone();
    let retry = FailOutcome::Retry {
        at: NOW.sub(seconds(60)),
    };
    store
        .fail(running.id, token_of(&running), "boom", retry, NOW)
        .await
        .expect("fail");
    let alpha = &store.queue_stats(NOW).await.expect("queue_stats")[0];
    assert_eq!(
        alpha.counts,
        counts(&[(JobState::Retrying, 1), (JobState::Succeeded, 1)])
    );
    assert_eq!(
        (alpha.due, alpha.oldest_due),
        (1, Some(NOW.sub(seconds(60))))
    );

    // A queue whose last job is purged is no longer listed.
    store.cancel(running.id, NOW).await.expect("cancel");
    assert_eq!(purge(store, at(3_600), 10).await, 2);
    let listed: Vec<Queue> = store
        .queue_stats(NOW)
        .await
        .expect("queue_stats")
        .into_iter()
        .map(|stats| stats.queue)
        .collect();
    assert_eq!(listed, vec![queue("beta"), queue("gamma")]);
}

pub async fn queue_stats_caps_the_due_count(store: Arc<dyn Store>) {
    let store = &*store;
    // More due jobs than the cap, across two priority levels, so the cap falls in the second.
    let total = limits::DUE_COUNT_MAX as usize + 5;
    let urgent = total / 2;
    let jobs: Vec<NewJob> = (0..total)
        .map(|n| {
            let priority = if n < urgent { 0 } else { 7 };
            let options = JobOptions::default()
                .id(job_id(NOW, n as u64))
                .queue(queue("backlog"))
                .priority(Priority::new(priority).expect("valid"));
            // The oldest is among the less urgent jobs.
            let run_at = NOW.sub(Duration::from_millis(n as u64));
            new_job("conformance.job", run_at, options, NOW)
        })
        .collect();
    for batch in jobs.chunks(limits::INSERT_BATCH_MAX) {
        insert(store, batch.to_vec()).await;
    }
    let stats = store.queue_stats(NOW).await.expect("queue_stats");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].due, limits::DUE_COUNT_MAX);
    assert_eq!(
        stats[0].oldest_due,
        Some(NOW.sub(Duration::from_millis(total as u64 - 1)))
    );
    // The counts are not capped.
    assert_eq!(stats[0].counts.get(JobState::Scheduled), total as u64);
    assert_eq!(stats[0].counts.total(), total as u64);
}

/// A record under `key`, made at `created_at`, held for `ttl`.
fn record(key: &str, fingerprint: &str, created_at: Timestamp, ttl: Duration) -> IdempotencyRecord {
    IdempotencyRecord {
        key: IdempotencyKey::new(key).expect("a valid key"),
        fingerprint: fingerprint.to_owned(),
        response: format!("{{\"first\":\"{fingerprint}\"}}"),
        created_at,
        expires_at: created_at.add(ttl),
    }
}

fn inserted(result: Result<Idempotent, StoreError>) -> Vec<JobId> {
    match result {
        Ok(Idempotent::Inserted(ids)) => ids,
        other => panic!("expected Inserted, got {other:?}"),
    }
}

fn replayed(result: Result<Idempotent, StoreError>) -> IdempotencyRecord {
    match result {
        Ok(Idempotent::Replayed(record)) => record,
        other => panic!("expected Replayed, got {other:?}"),
    }
}

pub async fn insert_idempotent_inserts_then_replays_the_first_record(store: Arc<dyn Store>) {
    let store = &*store;
    let ttl = seconds(3_600);
    // A response of the largest size, with characters that need care in every encoding.
    let mut response = String::from("{\"text\":\"é☃\\\"'\",\"pad\":\"");
    while response.len() + 2 < limits::IDEMPOTENCY_RESPONSE_BYTES_MAX {
        response.push('x');
    }
    response.push_str("\"}");
    let first = IdempotencyRecord {
        response,
        ..record("tok-1:order-42", "sha256:aa", NOW, ttl)
    };
    let jobs = vec![job_numbered(1, NOW), job_numbered(2, NOW)];
    let ids = inserted(store.insert_idempotent(jobs, first.clone(), NOW).await);
    assert_eq!(ids, vec![job_id(NOW, 1), job_id(NOW, 2)]);
    assert_eq!(get(store, ids[0]).await.state, JobState::Scheduled);

    // A retry under the key, whatever it carries, gets the first record and inserts nothing.
    let later = NOW.add(seconds(60));
    let retry = record("tok-1:order-42", "sha256:bb", later, ttl);
    let again = store
        .insert_idempotent(vec![job_numbered(3, later)], retry, later)
        .await;
    assert_eq!(replayed(again), first);
    assert_eq!(store.get(job_id(NOW, 3)).await.expect("get"), None);
    assert_eq!(list_all(store, JobFilter::default()).await.len(), 2);

    // Just before the expiry it is still held.
    let last_moment = first.expires_at.sub(Duration::from_micros(1));
    let retry = record("tok-1:order-42", "sha256:cc", last_moment, ttl);
    let again = store
        .insert_idempotent(vec![job_numbered(4, last_moment)], retry, last_moment)
        .await;
    assert_eq!(replayed(again), first);

    // Another key is another request; an empty batch is one too.
    let other = record("tok-1:order-43", "sha256:aa", NOW, ttl);
    let ids = inserted(
        store
            .insert_idempotent(vec![job_numbered(5, NOW)], other, NOW)
            .await,
    );
    assert_eq!(ids, vec![job_id(NOW, 5)]);
    let empty = record("tok-2:nothing", "sha256:00", NOW, ttl);
    assert_eq!(
        inserted(
            store
                .insert_idempotent(Vec::new(), empty.clone(), NOW)
                .await
        ),
        Vec::new()
    );
    let again = store
        .insert_idempotent(vec![job_numbered(6, NOW)], empty.clone(), NOW)
        .await;
    assert_eq!(replayed(again), empty);
    assert_eq!(store.get(job_id(NOW, 6)).await.expect("get"), None);
}

pub async fn insert_idempotent_replaces_an_expired_record(store: Arc<dyn Store>) {
    let store = &*store;
    let ttl = seconds(10);
    let first = record("key", "sha256:aa", NOW, ttl);
    inserted(
        store
            .insert_idempotent(vec![job_numbered(1, NOW)], first.clone(), NOW)
            .await,
    );
    // At its expiry the key is free: the new request inserts, and its record replaces the old.
    let expired_at = first.expires_at;
    let second = record("key", "sha256:bb", expired_at, ttl);
    let ids = inserted(
        store
            .insert_idempotent(
                vec![job_numbered(2, expired_at)],
                second.clone(),
                expired_at,
            )
            .await,
    );
    assert_eq!(ids, vec![job_id(NOW, 2)]);
    let later = expired_at.add(seconds(1));
    let third = record("key", "sha256:cc", later, ttl);
    let again = store
        .insert_idempotent(vec![job_numbered(3, later)], third, later)
        .await;
    assert_eq!(replayed(again), second);
    let stored: Vec<JobId> = ids_of_all(store).await;
    assert_eq!(stored, vec![job_id(NOW, 1), job_id(NOW, 2)]);
}

async fn ids_of_all(store: &dyn Store) -> Vec<JobId> {
    ids(&list_all(store, JobFilter::default()).await)
}

pub async fn insert_idempotent_refuses_an_invalid_record(store: Arc<dyn Store>) {
    let store = &*store;
    let valid = record("key", "sha256:aa", NOW, seconds(60));
    let invalid = [
        IdempotencyRecord {
            expires_at: NOW,
            ..valid.clone()
        },
        IdempotencyRecord {
            expires_at: NOW.add(limits::IDEMPOTENCY_TTL_MAX).add(seconds(1)),
            ..valid.clone()
        },
        IdempotencyRecord {
            fingerprint: String::new(),
            ..valid.clone()
        },
        IdempotencyRecord {
            fingerprint: "tab\there".to_owned(),
            ..valid.clone()
        },
        IdempotencyRecord {
            response: "x".repeat(limits::IDEMPOTENCY_RESPONSE_BYTES_MAX + 1),
            ..valid.clone()
        },
    ];
    for record in invalid {
        let result = store
            .insert_idempotent(vec![job_numbered(1, NOW)], record, NOW)
            .await;
        assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
    }
    assert!(ids_of_all(store).await.is_empty());
    // Nothing was kept under the key: a valid request inserts.
    inserted(
        store
            .insert_idempotent(vec![job_numbered(1, NOW)], valid, NOW)
            .await,
    );
}

pub async fn insert_idempotent_keeps_no_record_when_the_batch_fails(store: Arc<dyn Store>) {
    let store = &*store;
    let existing = insert_one(store, job_numbered(1, NOW)).await;
    let under_key = record("key", "sha256:aa", NOW, seconds(60));

    // A duplicate id: nothing of the batch, and no record.
    let clash = job_numbered(1, NOW);
    let result = store
        .insert_idempotent(vec![job_numbered(2, NOW), clash], under_key.clone(), NOW)
        .await;
    assert!(
        matches!(result, Err(StoreError::Duplicate(id)) if id == existing),
        "{result:?}"
    );
    // An invalid job, and a batch over the limit: the same.
    let invalid = NewJob {
        attempt_max: 0,
        ..job_numbered(3, NOW)
    };
    let result = store
        .insert_idempotent(vec![invalid], under_key.clone(), NOW)
        .await;
    assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
    let too_many: Vec<NewJob> = (0..=limits::INSERT_BATCH_MAX)
        .map(|n| job_numbered(100 + n as u64, NOW))
        .collect();
    let result = store
        .insert_idempotent(too_many, under_key.clone(), NOW)
        .await;
    assert!(
        matches!(
            result,
            Err(StoreError::Invalid(ValidationError::TooLong {
                field: "batch",
                ..
            }))
        ),
        "{result:?}"
    );
    assert_eq!(ids_of_all(store).await, vec![existing]);

    // The key is still free.
    let ids = inserted(
        store
            .insert_idempotent(vec![job_numbered(2, NOW)], under_key.clone(), NOW)
            .await,
    );
    assert_eq!(ids, vec![job_id(NOW, 2)]);
    // Once it is held, a retry is answered with the record even when its batch would fail:
    // the batch of a replayed request is never looked at.
    let bad = NewJob {
        attempt_max: 0,
        ..job_numbered(4, NOW)
    };
    assert_eq!(
        replayed(
            store
                .insert_idempotent(vec![bad], under_key.clone(), NOW)
                .await
        ),
        under_key
    );
    assert_eq!(
        replayed(
            store
                .insert_idempotent(vec![job_numbered(1, NOW)], under_key.clone(), NOW)
                .await
        ),
        under_key
    );
}

pub async fn purge_idempotency_is_fenced_and_limited(store: Arc<dyn Store>) {
    let store = &*store;
    for (n, ttl) in [(1, 10), (2, 20), (3, 30), (4, 40)] {
        let record = record(&format!("key-{n}"), "sha256:aa", NOW, seconds(ttl));
        inserted(store.insert_idempotent(Vec::new(), record, NOW).await);
    }
    let at = |offset| NOW.add(seconds(offset));
    let purge_idempotency = |now: Timestamp, limit: usize| async move {
        let term = lead_alone(store, now).await;
        let purged = store
            .purge_idempotency(term, now, limit)
            .await
            .expect("purge_idempotency");
        resign_alone(store, term).await;
        purged
    };
    // Before +25 s two have expired, taken one per call with a limit of one.
    assert_eq!(purge_idempotency(at(25), 0).await, 0);
    assert_eq!(purge_idempotency(at(25), 1).await, 1);
    assert_eq!(purge_idempotency(at(25), 10).await, 1);
    assert_eq!(purge_idempotency(at(25), 10).await, 0);

    // A deposed leader is refused and deletes nothing; neither does a term never granted.
    let deposed = lead(store, "node-a", None, at(25)).await.expect("leads");
    let now = at(25).add(LEADERSHIP);
    let current = lead(store, "node-b", None, now).await.expect("takes over");
    assert_not_leader(store.purge_idempotency(deposed, now, 10).await, deposed);
    let unknown = LeaderTerm(current.0 + 1);
    assert_not_leader(store.purge_idempotency(unknown, now, 10).await, unknown);
    // Only the expired one of the two left goes; the live one still answers retries.
    let purge_as_current = |now: Timestamp| async move {
        store
            .purge_idempotency(current, now, 10)
            .await
            .expect("purge_idempotency")
    };
    assert_eq!(purge_as_current(at(39)).await, 1);
    let retry = record("key-4", "sha256:bb", at(39), seconds(60));
    let held = replayed(
        store
            .insert_idempotent(vec![job_numbered(1, at(39))], retry, at(39))
            .await,
    );
    assert_eq!(held.expires_at, at(40));
    // An expiry at `now` has expired.
    assert_eq!(purge_as_current(at(40)).await, 1);
    assert_eq!(purge_as_current(at(40)).await, 0);
}

/// A valid token with id `id`.
fn token(id: &str) -> ApiToken {
    ApiToken {
        id: TokenId::new(id).expect("a valid token id"),
        label: format!("token {id} ☃"),
        scopes: vec!["jobs-read".to_owned(), "jobs_write".to_owned()],
        secret_sha256: std::array::from_fn(|n| (n * 37 % 256) as u8),
        created_at: NOW,
        expires_at: None,
        revoked_at: None,
    }
}

pub async fn insert_token_then_get_round_trips_and_a_taken_id_is_refused(store: Arc<dyn Store>) {
    let store = &*store;
    let full = ApiToken {
        scopes: (0..limits::TOKEN_SCOPES_MAX)
            .map(|n| format!("scope{n:02}"))
            .collect(),
        secret_sha256: [0xff; 32],
        expires_at: Some(NOW.add(Duration::from_micros(86_400_000_001))),
        ..token("full")
    };
    let bare = ApiToken {
        scopes: Vec::new(),
        label: "l".repeat(limits::TOKEN_LABEL_BYTES_MAX),
        secret_sha256: [0; 32],
        // Stored as given, even already revoked.
        revoked_at: Some(NOW),
        ..token(&"b".repeat(limits::TOKEN_ID_BYTES_MAX))
    };
    for token in [&full, &bare] {
        store
            .insert_token(token.clone())
            .await
            .expect("insert_token");
        assert_eq!(
            store
                .get_token(&token.id)
                .await
                .expect("get_token")
                .as_ref(),
            Some(token)
        );
    }
    let taken = ApiToken {
        label: "another".to_owned(),
        ..token("full")
    };
    let result = store.insert_token(taken).await;
    assert!(
        matches!(&result, Err(StoreError::TokenExists(id)) if *id == full.id),
        "{result:?}"
    );
    assert_eq!(
        store.get_token(&full.id).await.expect("get_token"),
        Some(full)
    );
    let missing = TokenId::new("missing").expect("valid");
    assert_eq!(store.get_token(&missing).await.expect("get_token"), None);
}

pub async fn insert_token_refuses_an_invalid_token(store: Arc<dyn Store>) {
    let store = &*store;
    let invalid = [
        ApiToken {
            label: String::new(),
            ..token("t1")
        },
        ApiToken {
            label: "bell\u{7}".to_owned(),
            ..token("t2")
        },
        ApiToken {
            scopes: vec!["write".to_owned(), "read".to_owned()],
            ..token("t3")
        },
        ApiToken {
            scopes: vec!["has space".to_owned()],
            ..token("t4")
        },
        ApiToken {
            scopes: (0..=limits::TOKEN_SCOPES_MAX)
                .map(|n| format!("scope{n:02}"))
                .collect(),
            ..token("t5")
        },
    ];
    for token in invalid {
        let id = token.id.clone();
        let result = store.insert_token(token).await;
        assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
        assert_eq!(store.get_token(&id).await.expect("get_token"), None);
    }
    assert!(store.list_tokens(None, 10).await.expect("list").is_empty());
}

pub async fn list_tokens_pages_in_id_order_and_caps_the_page(shared: Arc<dyn Store>) {
    let store = &*shared;
    assert!(store.list_tokens(None, 10).await.expect("list").is_empty());
    // Byte order: '-' < '0' < 'B' < '_' < 'a' (not a locale's order, which ignores '-' and
    // folds case).
    for id in ["a", "_x", "B", "0z", "-y", "ab"] {
        store.insert_token(token(id)).await.expect("insert_token");
    }
    store
        .revoke_token(&TokenId::new("B").expect("valid"), NOW)
        .await
        .expect("revoke");
    let names = |tokens: Vec<ApiToken>| -> Vec<String> {
        tokens
            .into_iter()
            .map(|token| token.id.as_str().to_owned())
            .collect()
    };
    let all = store.list_tokens(None, 100).await.expect("list");
    assert!(all.iter().any(|token| token.revoked_at == Some(NOW)));
    assert_eq!(names(all), ["-y", "0z", "B", "_x", "a", "ab"]);
    let mut seen = Vec::new();
    let mut after: Option<TokenId> = None;
    loop {
        let page = store.list_tokens(after.as_ref(), 4).await.expect("list");
        assert!(page.len() <= 4);
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.id.clone());
        seen.extend(names(page));
    }
    assert_eq!(seen, ["-y", "0z", "B", "_x", "a", "ab"]);
    // After an id that is not stored: the next in order.
    let between = TokenId::new("C").expect("valid");
    assert_eq!(
        names(store.list_tokens(Some(&between), 10).await.expect("list")),
        ["_x", "a", "ab"]
    );
    assert!(store.list_tokens(None, 0).await.expect("list").is_empty());

    // A page never holds more than `limits::PAGE_SIZE_MAX`. Inserted concurrently, so a store
    // that commits in groups does not pay a commit per token.
    let mut inserts = tokio::task::JoinSet::new();
    for n in 0..limits::PAGE_SIZE_MAX {
        let store = Arc::clone(&shared);
        inserts.spawn(async move { store.insert_token(token(&format!("many{n:04}"))).await });
    }
    while let Some(joined) = inserts.join_next().await {
        joined
            .expect("an insert task panicked")
            .expect("insert_token");
    }
    let page = store
        .list_tokens(None, limits::PAGE_SIZE_MAX * 10)
        .await
        .expect("list");
    assert_eq!(page.len(), limits::PAGE_SIZE_MAX);
    let last = page.last().map(|token| token.id.clone());
    let rest = store
        .list_tokens(last.as_ref(), limits::PAGE_SIZE_MAX)
        .await
        .expect("list");
    assert_eq!(rest.len(), 6);
}

pub async fn revoke_token_is_idempotent_and_keeps_the_first_time(store: Arc<dyn Store>) {
    let store = &*store;
    let expiring = ApiToken {
        expires_at: Some(NOW.add(seconds(3_600))),
        ..token("ops")
    };
    store
        .insert_token(expiring.clone())
        .await
        .expect("insert_token");
    store
        .insert_token(token("other"))
        .await
        .expect("insert_token");
    let first = NOW.add(seconds(10));
    let revoked = store
        .revoke_token(&expiring.id, first)
        .await
        .expect("revoke");
    let expected = ApiToken {
        revoked_at: Some(first),
        ..expiring.clone()
    };
    assert_eq!(revoked, expected);
    assert!(!revoked.is_active(first));
    // Again, later: nothing changes, and it is still Ok.
    let again = store
        .revoke_token(&expiring.id, first.add(seconds(50)))
        .await
        .expect("revoke again");
    assert_eq!(again, expected);
    assert_eq!(
        store.get_token(&expiring.id).await.expect("get_token"),
        Some(expected)
    );
    // Only that token.
    let other = TokenId::new("other").expect("valid");
    assert_eq!(
        store
            .get_token(&other)
            .await
            .expect("get_token")
            .and_then(|token| token.revoked_at),
        None
    );
    let missing = TokenId::new("missing").expect("valid");
    let result = store.revoke_token(&missing, first).await;
    assert!(
        matches!(&result, Err(StoreError::TokenNotFound(id)) if *id == missing),
        "{result:?}"
    );
    assert_eq!(store.get_token(&missing).await.expect("get_token"), None);
}

// Schedules: stored objects written under an optimistic version check, with their jobs and
// their occurrence ledger in the same write.

fn schedule_name(name: &str) -> ScheduleName {
    ScheduleName::new(name).expect("a valid schedule name")
}

/// The queue of the schedules' jobs, so that their counts stand apart.
const SCHEDULED_QUEUE: &str = "scheduled";

/// A schedule named `name`, every minute, whose jobs go to `SCHEDULED_QUEUE`.
fn definition(name: &str) -> ScheduleDefinition {
    let template = JobTemplate {
        queue: queue(SCHEDULED_QUEUE),
        ..JobTemplate::new(kind("conformance.scheduled"), Payload::null())
    };
    ScheduleDefinition::new(
        schedule_name(name),
        Schedule::interval(seconds(60)).expect("a valid interval"),
        template,
    )
}

/// `schedule` as its next write at `now` makes it: one version more, updated at `now`.
fn next_version(schedule: &StoredSchedule, now: Timestamp) -> StoredSchedule {
    StoredSchedule {
        version: schedule.version + 1,
        updated_at: now,
        ..schedule.clone()
    }
}

/// The write of `schedule`'s next version at `now`, made from the stored `schedule`.
fn update_of(schedule: &StoredSchedule, now: Timestamp) -> ScheduleWrite {
    ScheduleWrite::of(next_version(schedule, now), Some(schedule.version))
}

async fn write_schedules(
    store: &dyn Store,
    writes: Vec<ScheduleWrite>,
    now: Timestamp,
) -> Vec<WriteOutcome> {
    let count = writes.len();
    let outcomes = store
        .write_schedules(None, writes, now)
        .await
        .expect("write_schedules");
    assert_eq!(outcomes.len(), count, "one outcome per write");
    outcomes
}

async fn write_schedule(store: &dyn Store, write: ScheduleWrite, now: Timestamp) -> WriteOutcome {
    write_schedules(store, vec![write], now).await[0]
}

/// Stores `schedule` as a new schedule, at `NOW`.
async fn create_stored(store: &dyn Store, schedule: StoredSchedule) -> StoredSchedule {
    let write = ScheduleWrite::of(schedule.clone(), None);
    assert_eq!(
        write_schedule(store, write, NOW).await,
        WriteOutcome::Applied,
        "create {:?}",
        schedule.definition.name
    );
    schedule
}

/// Creates a schedule from `definition`, at `NOW`.
async fn create_schedule(store: &dyn Store, definition: ScheduleDefinition) -> StoredSchedule {
    create_stored(store, StoredSchedule::create(definition, NOW)).await
}

/// Applies `write` (made from the stored version) at `now` and returns the schedule it wrote.
async fn apply(store: &dyn Store, write: ScheduleWrite, now: Timestamp) -> StoredSchedule {
    let schedule = write.schedule.clone();
    assert_eq!(
        write_schedule(store, write, now).await,
        WriteOutcome::Applied,
        "write of {:?}",
        schedule.definition.name
    );
    schedule
}

async fn schedule_by_id(store: &dyn Store, id: ScheduleId) -> Option<StoredSchedule> {
    store
        .get_schedule(&ScheduleKey::Id(id))
        .await
        .expect("get_schedule")
}

async fn schedule_by_name(store: &dyn Store, name: &str) -> Option<StoredSchedule> {
    store
        .get_schedule(&ScheduleKey::Name(schedule_name(name)))
        .await
        .expect("get_schedule")
}

async fn occurrences(store: &dyn Store, id: ScheduleId) -> Vec<OccurrenceEntry> {
    occurrences_before(store, id, None, limits::PAGE_SIZE_MAX).await
}

async fn occurrences_before(
    store: &dyn Store,
    id: ScheduleId,
    before: Option<u64>,
    limit: usize,
) -> Vec<OccurrenceEntry> {
    store
        .list_occurrences(id, before, limit)
        .await
        .expect("list_occurrences")
}

/// The entries as appended: the store's seqs taken out (they are checked on their own).
fn without_seqs(entries: &[OccurrenceEntry]) -> Vec<OccurrenceEntry> {
    entries
        .iter()
        .map(|entry| OccurrenceEntry {
            seq: 0,
            ..entry.clone()
        })
        .collect()
}

fn seqs(entries: &[OccurrenceEntry]) -> Vec<u64> {
    entries.iter().map(|entry| entry.seq).collect()
}

fn names_of(schedules: &[StoredSchedule]) -> Vec<String> {
    schedules
        .iter()
        .map(|schedule| schedule.definition.name.as_str().to_owned())
        .collect()
}

/// The job of `schedule`'s occurrence at `at`.
fn occurrence_job(schedule: &StoredSchedule, at: Timestamp) -> NewJob {
    schedule
        .definition
        .template
        .job(schedule.id.occurrence_job(at), at)
}

/// A ledger entry of `schedule` for the occurrence at `at`, recorded at `recorded_at`.
fn entry(
    schedule: &StoredSchedule,
    at: Timestamp,
    outcome: OccurrenceOutcome,
    recorded_at: Timestamp,
) -> OccurrenceEntry {
    OccurrenceEntry {
        seq: 0,
        schedule: schedule.id,
        at,
        outcome,
        recorded_at,
    }
}

fn fired(job: &NewJob) -> OccurrenceOutcome {
    OccurrenceOutcome::Fired {
        job: job.id,
        late: Duration::ZERO,
        manual: false,
        moved: false,
    }
}

fn skipped(reason: SkipReason, count: u64, last_at: Timestamp) -> OccurrenceOutcome {
    OccurrenceOutcome::Skipped {
        reason,
        count,
        last_at,
    }
}

/// The write that fires `schedule`'s occurrence at `at`, at `now`: its job, its entry, the
/// cursor moved past it.
fn fire(schedule: &StoredSchedule, at: Timestamp, now: Timestamp) -> ScheduleWrite {
    let job = occurrence_job(schedule, at);
    let mut write = update_of(schedule, now);
    let cursor = &mut write.schedule.cursor;
    cursor.high_water = at;
    cursor.next_check = Some(at.add(seconds(60)));
    cursor.last_job = Some(job.id);
    cursor.fired += 1;
    write.append.push(entry(schedule, at, fired(&job), now));
    write.jobs.push(job);
    write
}

/// The jobs in `SCHEDULED_QUEUE`, by state.
async fn scheduled_counts(store: &dyn Store) -> Vec<(JobState, u64)> {
    store
        .counts()
        .await
        .expect("counts")
        .into_iter()
        .filter(|count| count.queue.as_str() == SCHEDULED_QUEUE)
        .map(|count| (count.state, count.count))
        .collect()
}

pub async fn schedule_create_then_get_round_trips_every_field(store: Arc<dyn Store>) {
    let store = &*store;
    let micros = Duration::from_micros;
    let template = JobTemplate {
        queue: queue("reports"),
        kind: kind("report.nightly"),
        payload: Payload::from_json_text(
            r#"{"to":["a@example.com"],"n":1.5,"nested":{"ok":true},"text":"héllo \"quoted\" ☃"}"#,
        )
        .expect("valid JSON"),
        priority: Priority::new(3).expect("valid"),
        attempt_max: 7,
        retry: RetryPolicy::new(Duration::from_millis(250), seconds(90), 35).expect("valid"),
    };
    let mut cron = ScheduleDefinition::new(
        schedule_name("reports.nightly"),
        Schedule::cron("30 2 * * 1-5", "Europe/Berlin").expect("valid"),
        template,
    );
    // Microseconds must survive the round trip.
    cron.start_at = Some(NOW.add(micros(1_234_567)));
    cron.end_at = Some(NOW.add(seconds(30 * 86_400)).add(micros(7)));
    cron.jitter = micros(90_000_123);
    cron.misfire = Misfire {
        action: MisfireAction::All { limit: 25 },
        grace: micros(45_000_001),
        catch_up_window: seconds(3 * 3_600) + micros(3),
    };
    cron.overlap = OverlapPolicy::BufferOne;
    let mut full = StoredSchedule::create(cron, NOW);
    full.paused = true;
    full.cursor = ScheduleCursor {
        high_water: NOW.add(micros(3)),
        next_check: Some(NOW.add(micros(17))),
        last_job: Some(job_id(NOW, 5)),
        buffered: Some(NOW.add(micros(19))),
        fired: 12,
        skipped: 1 << 40,
        last_error: Some("no next occurrence: \"quoted\" ☃".to_owned()),
    };
    full.created_at = NOW.sub(micros(11));
    full.updated_at = NOW.add(micros(13));
    let full = create_stored(store, full).await;

    // Interval schedules with the cursor a create makes (its options `None`), then with one
    // finished, across every misfire action and every overlap policy.
    let actions = [
        MisfireAction::Skip,
        MisfireAction::Latest,
        MisfireAction::All { limit: 1 },
        MisfireAction::All {
            limit: limits::CATCH_UP_LIMIT_MAX,
        },
    ];
    let mut stored = vec![full];
    for (n, (overlap, action)) in OverlapPolicy::ALL.into_iter().zip(actions).enumerate() {
        let mut heartbeat = definition(&format!("heartbeat.{n}"));
        heartbeat.recurrence = Schedule::interval(Duration::from_millis(90_500)).expect("valid");
        heartbeat.template = JobTemplate::new(kind("heartbeat"), Payload::null());
        heartbeat.overlap = overlap;
        heartbeat.misfire.action = action;
        if n % 2 == 1 {
            heartbeat.start_at = Some(NOW.add(seconds(n as u64)));
            heartbeat.jitter = micros(90_499_999);
        }
        let mut schedule = StoredSchedule::create(heartbeat, NOW);
        if n == 3 {
            schedule.cursor.next_check = None;
        }
        stored.push(create_stored(store, schedule).await);
    }

    for schedule in &stored {
        assert_eq!(
            schedule_by_id(store, schedule.id).await.as_ref(),
            Some(schedule)
        );
        let name = schedule.definition.name.as_str();
        assert_eq!(schedule_by_name(store, name).await.as_ref(), Some(schedule));
    }
    let missing = StoredSchedule::create(definition("missing"), NOW);
    assert_eq!(schedule_by_id(store, missing.id).await, None);
    assert_eq!(schedule_by_name(store, "missing").await, None);
}

pub async fn schedule_create_is_stale_when_its_name_or_id_is_taken(store: Arc<dyn Store>) {
    let store = &*store;
    let first = create_schedule(store, definition("taken")).await;

    // Another schedule under the same name.
    let mut same_name = StoredSchedule::create(definition("taken"), NOW);
    same_name.definition.template.attempt_max = 2;
    // Another name under the same id.
    let same_id = StoredSchedule {
        id: first.id,
        ..StoredSchedule::create(definition("other"), NOW)
    };
    for clash in [same_name.clone(), same_id] {
        let job = occurrence_job(&clash, NOW.add(seconds(60)));
        let write = ScheduleWrite {
            append: vec![entry(&clash, job.run_at, fired(&job), NOW)],
            jobs: vec![job.clone()],
            ..ScheduleWrite::of(clash, None)
        };
        assert_eq!(write_schedule(store, write, NOW).await, WriteOutcome::Stale);
        assert_eq!(store.get(job.id).await.expect("get"), None);
    }
    assert_eq!(schedule_by_id(store, first.id).await, Some(first.clone()));
    assert_eq!(schedule_by_name(store, "taken").await, Some(first.clone()));
    assert_eq!(schedule_by_id(store, same_name.id).await, None);
    assert_eq!(schedule_by_name(store, "other").await, None);
    let all = store
        .list_schedules(None, 10)
        .await
        .expect("list_schedules");
    assert_eq!(all, vec![first.clone()]);
    assert!(occurrences(store, first.id).await.is_empty());
    assert!(occurrences(store, same_name.id).await.is_empty());
    assert!(scheduled_counts(store).await.is_empty());
}

pub async fn schedule_write_is_stale_when_the_version_moved(store: Arc<dyn Store>) {
    let store = &*store;
    let read = create_schedule(store, definition("versioned")).await;
    let later = NOW.add(seconds(1));

    // Two writers read version 1; the first to write wins.
    let mut paused = update_of(&read, later);
    paused.schedule.paused = true;
    let paused = apply(store, paused, later).await;
    assert_eq!(paused.version, 2);
    let mut renamed = fire(&read, NOW.add(seconds(60)), later);
    renamed.schedule.definition.name = schedule_name("versioned.renamed");
    let job = renamed.jobs[0].id;
    assert_eq!(
        write_schedule(store, renamed, later).await,
        WriteOutcome::Stale
    );

    // A version ahead of the stored one is as stale as one behind.
    let mut ahead = update_of(&paused, later);
    ahead.expected_version = Some(5);
    ahead.schedule.version = 6;
    assert_eq!(
        write_schedule(store, ahead, later).await,
        WriteOutcome::Stale
    );

    assert_eq!(schedule_by_id(store, read.id).await, Some(paused.clone()));
    assert_eq!(schedule_by_name(store, "versioned.renamed").await, None);
    assert_eq!(store.get(job).await.expect("get"), None);
    assert!(occurrences(store, read.id).await.is_empty());

    // Made from the version stored, it applies.
    let resumed = apply(
        store,
        ScheduleWrite {
            schedule: StoredSchedule {
                paused: false,
                ..next_version(&paused, later)
            },
            ..update_of(&paused, later)
        },
        later,
    )
    .await;
    assert_eq!(resumed.version, 3);
    assert_eq!(schedule_by_id(store, read.id).await, Some(resumed));

    // A write sees the writes before it in its batch: a create, then an update of it.
    let created = StoredSchedule::create(definition("versioned.batch"), NOW);
    let mut update = update_of(&created, later);
    update.schedule.paused = true;
    let updated = update.schedule.clone();
    let create = ScheduleWrite::of(created, None);
    assert_eq!(
        write_schedules(store, vec![create, update], later).await,
        [WriteOutcome::Applied; 2]
    );
    assert_eq!(schedule_by_id(store, updated.id).await, Some(updated));
}

pub async fn schedule_update_of_a_deleted_schedule_is_stale(store: Arc<dyn Store>) {
    let store = &*store;
    let schedule = create_schedule(store, definition("deleted")).await;
    assert!(store.delete_schedule(schedule.id).await.expect("delete"));
    let write = fire(&schedule, NOW.add(seconds(60)), NOW);
    let job = write.jobs[0].id;
    assert_eq!(write_schedule(store, write, NOW).await, WriteOutcome::Stale);
    assert_eq!(schedule_by_id(store, schedule.id).await, None);
    assert_eq!(schedule_by_name(store, "deleted").await, None);
    assert_eq!(store.get(job).await.expect("get"), None);
    assert!(occurrences(store, schedule.id).await.is_empty());

    // Nor does an update of a schedule never created make one.
    let never = StoredSchedule::create(definition("never"), NOW);
    let write = update_of(&never, NOW);
    assert_eq!(write_schedule(store, write, NOW).await, WriteOutcome::Stale);
    assert_eq!(schedule_by_id(store, never.id).await, None);
    assert_eq!(schedule_by_name(store, "never").await, None);
}

pub async fn schedule_rename_onto_another_schedules_name_is_stale(store: Arc<dyn Store>) {
    let store = &*store;
    let first = create_schedule(store, definition("rename.first")).await;
    let second = create_schedule(store, definition("rename.second")).await;
    let mut onto_first = update_of(&second, NOW);
    onto_first.schedule.definition.name = schedule_name("rename.first");
    assert_eq!(
        write_schedule(store, onto_first, NOW).await,
        WriteOutcome::Stale
    );
    assert_eq!(
        schedule_by_name(store, "rename.first").await,
        Some(first.clone())
    );
    assert_eq!(schedule_by_id(store, second.id).await, Some(second.clone()));

    // Onto a free name it applies, and frees the old name.
    let mut onto_free = update_of(&second, NOW);
    onto_free.schedule.definition.name = schedule_name("rename.third");
    let renamed = apply(store, onto_free, NOW).await;
    assert_eq!(
        schedule_by_name(store, "rename.third").await,
        Some(renamed.clone())
    );
    assert_eq!(schedule_by_id(store, second.id).await, Some(renamed));
    assert_eq!(schedule_by_name(store, "rename.second").await, None);
    assert_eq!(
        schedule_by_name(store, "rename.first").await,
        Some(first.clone())
    );
    let reused = create_schedule(store, definition("rename.second")).await;
    assert_eq!(
        schedule_by_name(store, "rename.second").await,
        Some(reused.clone())
    );

    // A name one write of a batch frees is free for the next: two schedules swap names.
    let later = NOW.add(seconds(1));
    let mut aside = update_of(&first, later);
    aside.schedule.definition.name = schedule_name("rename.aside");
    let mut onto_first = update_of(&reused, later);
    onto_first.schedule.definition.name = schedule_name("rename.first");
    let mut back = update_of(&aside.schedule, later);
    back.schedule.definition.name = schedule_name("rename.second");
    let (swapped_first, swapped_reused) = (back.schedule.clone(), onto_first.schedule.clone());
    assert_eq!(
        write_schedules(store, vec![aside, onto_first, back], later).await,
        [WriteOutcome::Applied; 3]
    );
    assert_eq!(
        schedule_by_name(store, "rename.second").await,
        Some(swapped_first)
    );
    assert_eq!(
        schedule_by_name(store, "rename.first").await,
        Some(swapped_reused)
    );
    assert_eq!(schedule_by_name(store, "rename.aside").await, None);
}

pub async fn schedule_write_inserts_its_jobs_and_counts_them(store: Arc<dyn Store>) {
    let store = &*store;
    let schedule = create_schedule(store, definition("jobs")).await;
    let now = NOW.add(seconds(5));
    let (first, second) = (NOW.add(seconds(60)), NOW.add(seconds(120)));
    let mut write = fire(&schedule, first, now);
    let job = occurrence_job(&schedule, second);
    write
        .append
        .push(entry(&schedule, second, fired(&job), now));
    write.jobs.push(job);
    let jobs = write.jobs.clone();
    let written = apply(store, write, now).await;
    for new in jobs {
        assert_eq!(get(store, new.id).await, new.into_job(now));
    }
    assert_eq!(
        scheduled_counts(store).await,
        vec![(JobState::Scheduled, 2)]
    );
    assert_eq!(schedule_by_id(store, schedule.id).await, Some(written));
    assert_eq!(occurrences(store, schedule.id).await.len(), 2);
    // They are jobs like any other: claimed in their queue.
    let mut request = request(10, second);
    request.queues = Some(vec![queue(SCHEDULED_QUEUE)]);
    assert_eq!(claim(store, request, second).await.len(), 2);
    assert_eq!(scheduled_counts(store).await, vec![(JobState::Running, 2)]);
}

pub async fn schedule_write_whose_job_id_is_taken_is_stale_and_the_rest_of_the_batch_applies(
    store: Arc<dyn Store>,
) {
    let store = &*store;
    let first = create_schedule(store, definition("batch.first")).await;
    let middle = create_schedule(store, definition("batch.middle")).await;
    let last = create_schedule(store, definition("batch.last")).await;
    let at = NOW.add(seconds(60));
    // The middle schedule's second job is already stored (another kind, to tell them apart).
    let mut middle_write = fire(&middle, at, NOW);
    let taken = occurrence_job(&middle, at.add(seconds(60)));
    let existing = NewJob {
        kind: kind("conformance.existing"),
        ..taken.clone()
    };
    insert_one(store, existing.clone()).await;
    middle_write
        .append
        .push(entry(&middle, taken.run_at, fired(&taken), NOW));
    middle_write.jobs.push(taken);
    let middle_job = middle_write.jobs[0].id;

    let writes = vec![fire(&first, at, NOW), middle_write, fire(&last, at, NOW)];
    let written: Vec<StoredSchedule> = writes.iter().map(|write| write.schedule.clone()).collect();
    assert_eq!(
        write_schedules(store, writes, NOW).await,
        vec![
            WriteOutcome::Applied,
            WriteOutcome::Stale,
            WriteOutcome::Applied
        ]
    );
    // Nothing of the middle write landed.
    assert_eq!(schedule_by_id(store, middle.id).await, Some(middle.clone()));
    assert!(occurrences(store, middle.id).await.is_empty());
    assert_eq!(store.get(middle_job).await.expect("get"), None);
    assert_eq!(
        get(store, existing.id).await,
        existing.clone().into_job(NOW)
    );
    // The others did.
    for (before, after) in [(&first, &written[0]), (&last, &written[2])] {
        assert_eq!(schedule_by_id(store, before.id).await.as_ref(), Some(after));
        assert_eq!(occurrences(store, before.id).await.len(), 1);
        let job = after.cursor.last_job.expect("fired");
        assert_eq!(get(store, job).await.state, JobState::Scheduled);
    }
    assert_eq!(
        scheduled_counts(store).await,
        vec![(JobState::Scheduled, 3)]
    );

    // A write naming one job twice is stale too, as is one whose job an earlier write of the
    // same batch inserted.
    let mut twice = fire(&middle, at, NOW);
    twice.jobs.push(twice.jobs[0].clone());
    let twice_job = twice.jobs[0].id;
    assert_eq!(write_schedule(store, twice, NOW).await, WriteOutcome::Stale);
    assert_eq!(store.get(twice_job).await.expect("get"), None);
    let later = at.add(seconds(600));
    let claimer = fire(&written[0], later, NOW);
    let mut follower = fire(&written[2], later, NOW);
    follower.jobs = claimer.jobs.clone();
    assert_eq!(
        write_schedules(store, vec![claimer, follower], NOW).await,
        vec![WriteOutcome::Applied, WriteOutcome::Stale]
    );
    assert_eq!(
        schedule_by_id(store, last.id).await.as_ref(),
        Some(&written[2])
    );
    assert_eq!(occurrences(store, last.id).await.len(), 1);
    assert_eq!(
        scheduled_counts(store).await,
        vec![(JobState::Scheduled, 4)]
    );
    assert_eq!(schedule_by_id(store, middle.id).await, Some(middle));
}

pub async fn list_occurrences_pages_newest_first_with_increasing_seqs(store: Arc<dyn Store>) {
    let store = &*store;
    let one = create_schedule(store, definition("ledger.one")).await;
    let two = create_schedule(store, definition("ledger.two")).await;
    let at = |offset| NOW.add(seconds(offset));
    let skip = |schedule: &StoredSchedule, offset| {
        entry(
            schedule,
            at(offset),
            skipped(SkipReason::Paused, 1, at(offset)),
            at(offset),
        )
    };
    // Two entries in one write, then one of the other schedule, then two more, one per write.
    let mut write = update_of(&one, at(2));
    // Whatever seq an appended entry carries, the store assigns its own.
    let claimed_seq = OccurrenceEntry {
        seq: 1 << 40,
        ..skip(&one, 1)
    };
    write.append = vec![claimed_seq, skip(&one, 2)];
    let mut one_now = apply(store, write, at(2)).await;
    let mut write = update_of(&two, at(3));
    write.append = vec![skip(&two, 3)];
    apply(store, write, at(3)).await;
    for offset in [4, 5] {
        let mut write = update_of(&one_now, at(offset));
        write.append = vec![skip(&one, offset)];
        one_now = apply(store, write, at(offset)).await;
    }

    let listed = occurrences(store, one.id).await;
    let expected: Vec<OccurrenceEntry> = [5, 4, 2, 1].map(|offset| skip(&one, offset)).into();
    assert_eq!(without_seqs(&listed), expected);
    let listed_seqs = seqs(&listed);
    assert!(
        listed_seqs.windows(2).all(|pair| pair[0] > pair[1]),
        "seqs increase in the order entries were written: {listed_seqs:?}"
    );
    let other = occurrences(store, two.id).await;
    assert_eq!(without_seqs(&other), vec![skip(&two, 3)]);
    assert!(other[0].seq > listed_seqs[2] && other[0].seq < listed_seqs[1]);

    // Pages follow `before`, newest first.
    let page = occurrences_before(store, one.id, None, 2).await;
    assert_eq!(page, listed[..2]);
    let page = occurrences_before(store, one.id, Some(page[1].seq), 2).await;
    assert_eq!(page, listed[2..]);
    assert!(
        occurrences_before(store, one.id, Some(listed_seqs[3]), 10)
            .await
            .is_empty()
    );
    assert!(occurrences_before(store, one.id, None, 0).await.is_empty());
    let unknown = StoredSchedule::create(definition("ledger.unknown"), NOW);
    assert!(occurrences(store, unknown.id).await.is_empty());

    // A page is capped.
    let mut write = update_of(&one_now, at(10));
    write.append = (0..=limits::PAGE_SIZE_MAX as u64)
        .map(|offset| skip(&one, 10 + offset))
        .collect();
    apply(store, write, at(10)).await;
    let page = occurrences_before(store, one.id, None, usize::MAX).await;
    assert_eq!(page.len(), limits::PAGE_SIZE_MAX);
    assert_eq!(page[0].at, at(10 + limits::PAGE_SIZE_MAX as u64));
}

pub async fn every_occurrence_outcome_round_trips(store: Arc<dyn Store>) {
    let store = &*store;
    let schedule = create_schedule(store, definition("outcomes")).await;
    let micros = Duration::from_micros;
    let at = |offset: u64| NOW.add(micros(offset * 1_000_001));
    let mut outcomes = Vec::new();
    for (n, (manual, moved)) in [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .enumerate()
    {
        outcomes.push(OccurrenceOutcome::Fired {
            job: job_id(NOW, n as u64),
            late: micros(n as u64 * 1_234_567),
            manual,
            moved,
        });
    }
    for (n, reason) in SkipReason::ALL.into_iter().enumerate() {
        outcomes.push(skipped(reason, n as u64 + 1, at(100 + n as u64)));
    }
    outcomes.push(skipped(SkipReason::Misfire, 1 << 40, at(200)));
    outcomes.push(OccurrenceOutcome::Failed {
        error: "no next occurrence: \"quoted\" ☃\nsecond line".to_owned(),
    });
    outcomes.push(OccurrenceOutcome::Failed {
        error: String::new(),
    });
    let entries: Vec<OccurrenceEntry> = outcomes
        .into_iter()
        .enumerate()
        .map(|(n, outcome)| entry(&schedule, at(n as u64), outcome, NOW.add(micros(n as u64))))
        .collect();
    let mut write = update_of(&schedule, NOW);
    write.append = entries.clone();
    apply(store, write, NOW).await;

    let mut listed = occurrences(store, schedule.id).await;
    listed.reverse();
    assert_eq!(without_seqs(&listed), entries);
    let due = store.due_schedules(NOW, 10).await.expect("due_schedules");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].last_entry.as_ref(), listed.last());
}

pub async fn ledger_extend_grows_only_a_skip_of_the_same_schedule(store: Arc<dyn Store>) {
    let store = &*store;
    let one = create_schedule(store, definition("extend.one")).await;
    let two = create_schedule(store, definition("extend.two")).await;
    let at = |offset| NOW.add(seconds(offset));
    let job = occurrence_job(&one, at(1));
    let mut write = update_of(&one, at(1));
    write.append = vec![
        entry(&one, at(1), fired(&job), at(1)),
        entry(&one, at(2), skipped(SkipReason::Overlap, 1, at(2)), at(2)),
    ];
    let mut one_now = apply(store, write, at(2)).await;
    let mut write = update_of(&two, at(3));
    write.append = vec![entry(
        &two,
        at(3),
        skipped(SkipReason::Overlap, 1, at(3)),
        at(3),
    )];
    apply(store, write, at(3)).await;
    let [one_skip, one_fired] =
        <[OccurrenceEntry; 2]>::try_from(occurrences(store, one.id).await).expect("two entries");
    let [two_skip] =
        <[OccurrenceEntry; 1]>::try_from(occurrences(store, two.id).await).expect("one entry");

    // The skip grows: its count, its last occurrence, and it counts as recorded now.
    let mut write = update_of(&one_now, at(10));
    write.extend = Some(LedgerExtend {
        seq: one_skip.seq,
        last_at: at(9),
        count: 8,
    });
    one_now = apply(store, write, at(10)).await;
    let grown = OccurrenceEntry {
        outcome: skipped(SkipReason::Overlap, 8, at(9)),
        recorded_at: at(10),
        ..one_skip.clone()
    };
    assert_eq!(
        occurrences(store, one.id).await,
        vec![grown.clone(), one_fired.clone()]
    );

    // A fired entry, another schedule's skip, or an entry that does not exist: the write still
    // applies, and no entry changes.
    for seq in [one_fired.seq, two_skip.seq, two_skip.seq + 1_000] {
        let mut write = update_of(&one_now, at(20));
        write.extend = Some(LedgerExtend {
            seq,
            last_at: at(19),
            count: 99,
        });
        one_now = apply(store, write, at(20)).await;
    }
    assert_eq!(schedule_by_id(store, one.id).await, Some(one_now));
    assert_eq!(occurrences(store, one.id).await, vec![grown, one_fired]);
    assert_eq!(occurrences(store, two.id).await, vec![two_skip]);
}

pub async fn schedule_write_cancels_an_unfinished_job_and_leaves_a_finished_one(
    store: Arc<dyn Store>,
) {
    let store = &*store;
    let finished = insert_one(store, job_numbered(1, NOW)).await;
    let token = token_of(&claim_one(store, NOW).await);
    store
        .complete(finished, token, NOW)
        .await
        .expect("complete");
    let running = insert_one(store, job_numbered(2, NOW)).await;
    let running_token = token_of(&claim_one(store, NOW).await);
    let pending = insert_one(store, job_numbered(3, NOW.add(seconds(3_600)))).await;
    let mut schedule = create_schedule(store, definition("cancels")).await;

    let now = NOW.add(seconds(5));
    for id in [pending, running] {
        let mut write = update_of(&schedule, now);
        write.cancel = Some(id);
        schedule = apply(store, write, now).await;
        let cancelled = get(store, id).await;
        assert_eq!(cancelled.state, JobState::Cancelled, "{id}");
        assert_eq!(cancelled.finished_at, Some(now));
        assert_eq!(cancelled.lease, None);
    }
    // The holder of the cancelled running job has lost its lease.
    assert_lease_lost(
        store.complete(running, running_token, now).await,
        running,
        running_token,
    );
    // A finished job, or one that does not exist, is left alone; the write applies.
    let before = get(store, finished).await;
    for id in [finished, job_numbered(99, NOW).id] {
        let mut write = update_of(&schedule, now);
        write.cancel = Some(id);
        schedule = apply(store, write, now).await;
    }
    assert_eq!(get(store, finished).await, before);
    assert_eq!(
        store.get(job_numbered(99, NOW).id).await.expect("get"),
        None
    );
    assert_eq!(schedule_by_id(store, schedule.id).await, Some(schedule));
    let counts = store.counts().await.expect("counts");
    let default_queue = Queue::default();
    assert_eq!(
        counts,
        vec![
            StateCount {
                queue: default_queue.clone(),
                state: JobState::Succeeded,
                count: 1,
            },
            StateCount {
                queue: default_queue,
                state: JobState::Cancelled,
                count: 2,
            },
        ]
    );
}

pub async fn schedule_write_with_a_fence_needs_the_current_term(store: Arc<dyn Store>) {
    let store = &*store;
    // Without a fence no leadership is needed, and none is held.
    let schedule = create_schedule(store, definition("fenced")).await;
    let term = lead(store, "node-a", None, NOW).await.expect("leads");
    let at = NOW.add(seconds(60));
    let fenced = |fence: LeaderTerm, write: ScheduleWrite, now: Timestamp| async move {
        store.write_schedules(Some(fence), vec![write], now).await
    };

    // A term never granted, and the current term once it expired, are refused.
    let unknown = LeaderTerm(term.0 + 1);
    let expired = NOW.add(LEADERSHIP);
    let newcomer = StoredSchedule::create(definition("fenced.new"), NOW);
    for (fence, now) in [(unknown, NOW), (term, expired)] {
        let write = fire(&schedule, at, now);
        let job = write.jobs[0].id;
        assert_not_leader(fenced(fence, write, now).await, fence);
        let create = ScheduleWrite::of(newcomer.clone(), None);
        assert_not_leader(fenced(fence, create, now).await, fence);
        assert_eq!(store.get(job).await.expect("get"), None);
    }
    assert_eq!(
        schedule_by_id(store, schedule.id).await,
        Some(schedule.clone())
    );
    assert_eq!(schedule_by_id(store, newcomer.id).await, None);
    assert!(occurrences(store, schedule.id).await.is_empty());
    assert!(scheduled_counts(store).await.is_empty());

    // The current term, unexpired, applies.
    let now = NOW.add(seconds(1));
    let write = fire(&schedule, at, now);
    let written = write.schedule.clone();
    assert_eq!(
        fenced(term, write, now).await.expect("write_schedules"),
        vec![WriteOutcome::Applied]
    );
    assert_eq!(
        schedule_by_id(store, schedule.id).await,
        Some(written.clone())
    );

    // After another node takes over, the deposed term is refused and the new one applies.
    let current = lead(store, "node-b", None, expired)
        .await
        .expect("takes over");
    let mut write = update_of(&written, expired);
    write.schedule.paused = true;
    assert_not_leader(fenced(term, write.clone(), expired).await, term);
    assert_eq!(schedule_by_id(store, schedule.id).await, Some(written));
    assert_eq!(
        fenced(current, write.clone(), expired)
            .await
            .expect("write_schedules"),
        vec![WriteOutcome::Applied]
    );
    assert_eq!(
        schedule_by_id(store, schedule.id).await,
        Some(write.schedule)
    );
}

pub async fn schedule_write_refuses_an_invalid_batch_and_writes_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    let stored = create_schedule(store, definition("invalid.stored")).await;
    let at = NOW.add(seconds(60));
    let valid_create = StoredSchedule::create(definition("invalid.new"), NOW);
    let valid = [
        ScheduleWrite::of(valid_create.clone(), None),
        fire(&stored, at, NOW),
    ];

    let mut create_at_two =
        ScheduleWrite::of(StoredSchedule::create(definition("invalid.two"), NOW), None);
    create_at_two.schedule.version = 2;
    let mut skips_a_version = update_of(&stored, NOW);
    skips_a_version.schedule.version += 1;
    let mut no_attempts = fire(&stored, at, NOW);
    no_attempts.jobs[0].attempt_max = 0;
    let mut template_without_attempts = update_of(&stored, NOW);
    template_without_attempts
        .schedule
        .definition
        .template
        .attempt_max = 0;
    let mut no_catch_up = update_of(&stored, NOW);
    no_catch_up.schedule.definition.misfire.action = MisfireAction::All { limit: 0 };
    let invalid = [
        (create_at_two, "a create not at version 1"),
        (skips_a_version, "a version that skips one"),
        (no_attempts, "a job without attempts"),
        (template_without_attempts, "a template without attempts"),
        (no_catch_up, "a catch-up of no occurrence"),
    ];
    for (write, what) in invalid {
        for batch in [
            vec![write.clone()],
            vec![valid[0].clone(), valid[1].clone(), write],
        ] {
            let result = store.write_schedules(None, batch, NOW).await;
            assert!(
                matches!(
                    &result,
                    Err(StoreError::Invalid(
                        ValidationError::BadScheduleVersion { .. }
                            | ValidationError::AttemptMaxOutOfRange { .. }
                            | ValidationError::CatchUpLimitOutOfRange { .. }
                    ))
                ),
                "{what}: {result:?}"
            );
        }
    }

    // More writes than a batch holds, each of them valid.
    let too_many: Vec<ScheduleWrite> = (0..=limits::SCHEDULE_BATCH_MAX)
        .map(|n| {
            let schedule = StoredSchedule::create(definition(&format!("invalid.{n}")), NOW);
            ScheduleWrite::of(schedule, None)
        })
        .collect();
    let result = store.write_schedules(None, too_many, NOW).await;
    assert!(
        matches!(
            &result,
            Err(StoreError::Invalid(ValidationError::TooMany { field: "schedule writes", count, limit }))
                if *count == limits::SCHEDULE_BATCH_MAX + 1 && *limit == limits::SCHEDULE_BATCH_MAX
        ),
        "{result:?}"
    );

    assert_eq!(
        store
            .list_schedules(None, 10)
            .await
            .expect("list_schedules"),
        vec![stored.clone()]
    );
    assert_eq!(schedule_by_id(store, valid_create.id).await, None);
    assert!(occurrences(store, stored.id).await.is_empty());
    assert!(store.counts().await.expect("counts").is_empty());
    // An empty batch is not an error.
    assert_eq!(write_schedules(store, Vec::new(), NOW).await, Vec::new());
}

pub async fn due_schedules_are_those_to_check_by_then_earliest_first(store: Arc<dyn Store>) {
    let store = &*store;
    let at = |offset| NOW.add(seconds(offset));
    for (name, check) in [
        ("due.thirty", Some(30)),
        ("due.ten", Some(10)),
        ("due.twenty", Some(20)),
        ("due.finished", None),
        ("due.forty", Some(40)),
    ] {
        let mut schedule = StoredSchedule::create(definition(name), NOW);
        schedule.cursor.next_check = check.map(at);
        // Paused schedules are due like the others: their plan skips what falls due.
        schedule.paused = name == "due.twenty";
        create_stored(store, schedule).await;
    }
    let due = |check_by: Timestamp, limit: usize| async move {
        let due = store
            .due_schedules(check_by, limit)
            .await
            .expect("due_schedules");
        due.into_iter()
            .map(|due| due.schedule.definition.name.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        due(at(30), 10).await,
        ["due.ten", "due.twenty", "due.thirty"]
    );
    assert_eq!(due(at(30), 2).await, ["due.ten", "due.twenty"]);
    assert_eq!(due(at(30), 0).await, Vec::<String>::new());
    assert_eq!(due(at(9), 10).await, Vec::<String>::new());
    // At its check is due.
    assert_eq!(due(at(10), 10).await, ["due.ten"]);
    // A schedule without a next check never is.
    assert_eq!(
        due(at(365 * 86_400), 10).await,
        ["due.ten", "due.twenty", "due.thirty", "due.forty"]
    );

    // A write that moves the check moves it in the look.
    let ten = schedule_by_name(store, "due.ten").await.expect("stored");
    let mut write = update_of(&ten, at(10));
    write.schedule.cursor.next_check = Some(at(35));
    apply(store, write, at(10)).await;
    assert_eq!(due(at(30), 10).await, ["due.twenty", "due.thirty"]);
    assert_eq!(
        due(at(40), 10).await,
        ["due.twenty", "due.thirty", "due.ten", "due.forty"]
    );
}

pub async fn due_schedules_carry_the_last_jobs_state_and_the_latest_entry(store: Arc<dyn Store>) {
    let store = &*store;
    let at = |offset| NOW.add(seconds(offset));
    let make = |name: &str, check| {
        let mut schedule = StoredSchedule::create(definition(name), NOW);
        schedule.cursor.next_check = Some(at(check));
        schedule
    };
    let running = create_stored(store, make("carry.running", 1)).await;
    let purged = create_stored(store, make("carry.purged", 2)).await;
    let fresh = create_stored(store, make("carry.fresh", 3)).await;
    let quiet = create_stored(store, make("carry.quiet", 100)).await;

    // One job fired and claimed, with two entries.
    let mut write = fire(&running, at(1), at(1));
    write.schedule.cursor.next_check = Some(at(1));
    write.append.insert(
        0,
        entry(
            &running,
            at(0),
            skipped(SkipReason::Misfire, 1, at(0)),
            at(1),
        ),
    );
    apply(store, write, at(1)).await;
    claim_one(store, at(1)).await;
    // A last job that is not stored (purged), with a skip grown after it was written.
    let mut write = update_of(&purged, at(2));
    write.schedule.cursor.last_job = Some(job_id(NOW, 77));
    write.append = vec![entry(
        &purged,
        at(2),
        skipped(SkipReason::Overlap, 1, at(2)),
        at(2),
    )];
    let purged_now = apply(store, write, at(2)).await;
    let seq = occurrences(store, purged.id).await[0].seq;
    let mut write = update_of(&purged_now, at(4));
    write.extend = Some(LedgerExtend {
        seq,
        last_at: at(3),
        count: 2,
    });
    apply(store, write, at(4)).await;
    // Entries of a schedule not due, written last.
    let mut write = update_of(&quiet, at(5));
    write.append = vec![entry(
        &quiet,
        at(5),
        skipped(SkipReason::Paused, 1, at(5)),
        at(5),
    )];
    apply(store, write, at(5)).await;

    let due = store
        .due_schedules(at(10), 10)
        .await
        .expect("due_schedules");
    let names: Vec<&str> = due
        .iter()
        .map(|due| due.schedule.definition.name.as_str())
        .collect();
    assert_eq!(names, ["carry.running", "carry.purged", "carry.fresh"]);
    for due in &due {
        let id = due.schedule.id;
        assert_eq!(
            Some(&due.schedule),
            schedule_by_id(store, id).await.as_ref()
        );
        assert_eq!(
            due.last_entry,
            occurrences_before(store, id, None, 1).await.pop(),
            "{:?}",
            due.schedule.definition.name
        );
    }
    assert_eq!(due[0].last_job_state, Some(JobState::Running));
    assert_eq!(
        due[0].last_entry.as_ref().map(|entry| &entry.outcome),
        Some(&fired(&occurrence_job(&running, at(1))))
    );
    assert_eq!(due[1].last_job_state, None);
    assert_eq!(
        due[1].last_entry.as_ref().map(|entry| &entry.outcome),
        Some(&skipped(SkipReason::Overlap, 2, at(3)))
    );
    assert_eq!(due[2].last_job_state, None);
    assert_eq!(due[2].last_entry, None);
    assert_eq!(due[2].schedule, fresh);
}

pub async fn list_schedules_pages_in_name_order(store: Arc<dyn Store>) {
    let store = &*store;
    // Byte order: digits, then capitals, then `_`, then small letters; `-` `.` `/` `:` apart.
    let names = [
        "b", "a", "A", "a_1", "a-1", "a.1", "a:1", "a/1", "1", "B", "ab", "a.1.x",
    ];
    for name in names {
        create_schedule(store, definition(name)).await;
    }
    let mut sorted: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    sorted.sort();
    let all = store
        .list_schedules(None, 100)
        .await
        .expect("list_schedules");
    assert_eq!(names_of(&all), sorted);
    for schedule in &all {
        assert_eq!(
            schedule_by_id(store, schedule.id).await.as_ref(),
            Some(schedule)
        );
    }

    // Pages of five, each after the last name of the one before.
    let mut paged = Vec::new();
    let mut after: Option<ScheduleName> = None;
    loop {
        let page = store
            .list_schedules(after.as_ref(), 5)
            .await
            .expect("list_schedules");
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        after = Some(last.definition.name.clone());
        paged.extend(page);
    }
    assert_eq!(paged, all);
    // After a name that is not stored, the page starts at the next one stored.
    let page = store
        .list_schedules(Some(&schedule_name("a.0")), 2)
        .await
        .expect("list_schedules");
    assert_eq!(names_of(&page), ["a.1", "a.1.x"]);
    let page = store
        .list_schedules(Some(&schedule_name("b")), 10)
        .await
        .expect("list_schedules");
    assert!(page.is_empty());
    assert!(
        store
            .list_schedules(None, 0)
            .await
            .expect("list")
            .is_empty()
    );
}

pub async fn list_and_due_schedules_cap_what_they_return(store: Arc<dyn Store>) {
    let store = &*store;
    let count = limits::PAGE_SIZE_MAX.max(limits::SCHEDULE_BATCH_MAX) + 1;
    let schedules: Vec<ScheduleWrite> = (0..count)
        .map(|n| {
            let schedule = StoredSchedule::create(definition(&format!("many.{n:05}")), NOW);
            ScheduleWrite::of(schedule, None)
        })
        .collect();
    for batch in schedules.chunks(limits::SCHEDULE_BATCH_MAX) {
        let outcomes = write_schedules(store, batch.to_vec(), NOW).await;
        assert!(
            outcomes
                .iter()
                .all(|outcome| *outcome == WriteOutcome::Applied)
        );
    }
    let page = store
        .list_schedules(None, usize::MAX)
        .await
        .expect("list_schedules");
    assert_eq!(page.len(), limits::PAGE_SIZE_MAX);
    assert_eq!(page[0].definition.name.as_str(), "many.00000");
    let due = store
        .due_schedules(NOW, usize::MAX)
        .await
        .expect("due_schedules");
    assert_eq!(due.len(), limits::SCHEDULE_BATCH_MAX);
}

pub async fn delete_schedule_removes_it_and_its_ledger_and_keeps_its_jobs(store: Arc<dyn Store>) {
    let store = &*store;
    let doomed = create_schedule(store, definition("delete.doomed")).await;
    let kept = create_schedule(store, definition("delete.kept")).await;
    let at = NOW.add(seconds(60));
    let doomed_write = fire(&doomed, at, NOW);
    let job = doomed_write.jobs[0].clone();
    let kept_now = apply(store, fire(&kept, at, NOW), NOW).await;
    apply(store, doomed_write, NOW).await;

    assert!(store.delete_schedule(doomed.id).await.expect("delete"));
    assert_eq!(schedule_by_id(store, doomed.id).await, None);
    assert_eq!(schedule_by_name(store, "delete.doomed").await, None);
    assert!(occurrences(store, doomed.id).await.is_empty());
    assert_eq!(get(store, job.id).await, job.into_job(NOW));
    let due = store
        .due_schedules(at.add(seconds(3_600)), 10)
        .await
        .expect("due_schedules");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].schedule, kept_now);
    // The other schedule and its ledger are untouched.
    assert_eq!(schedule_by_id(store, kept.id).await, Some(kept_now.clone()));
    assert_eq!(occurrences(store, kept.id).await.len(), 1);
    assert_eq!(
        store
            .list_schedules(None, 10)
            .await
            .expect("list_schedules"),
        vec![kept_now]
    );

    // Again, or a schedule never stored: false.
    assert!(!store.delete_schedule(doomed.id).await.expect("delete"));
    let never = StoredSchedule::create(definition("delete.never"), NOW);
    assert!(!store.delete_schedule(never.id).await.expect("delete"));
    // Its name is free again; the new schedule's ledger starts empty.
    let again = create_schedule(store, definition("delete.doomed")).await;
    assert_eq!(
        schedule_by_name(store, "delete.doomed").await,
        Some(again.clone())
    );
    assert!(occurrences(store, again.id).await.is_empty());
}

pub async fn purge_occurrences_is_fenced_and_deletes_the_oldest_first(store: Arc<dyn Store>) {
    let store = &*store;
    let one = create_schedule(store, definition("purge.one")).await;
    let two = create_schedule(store, definition("purge.two")).await;
    let at = |offset| NOW.add(seconds(offset));
    let skip = |schedule: &StoredSchedule, offset| {
        entry(
            schedule,
            at(offset),
            skipped(SkipReason::Misfire, 1, at(offset)),
            at(offset),
        )
    };
    // Recorded at 1 (grown at 10), 2 and 4 for one, 3 and 5 for two.
    let mut write = update_of(&one, at(2));
    write.append = vec![skip(&one, 1), skip(&one, 2)];
    let one_now = apply(store, write, at(2)).await;
    let mut write = update_of(&two, at(3));
    write.append = vec![skip(&two, 3)];
    let two_now = apply(store, write, at(3)).await;
    let mut write = update_of(&one_now, at(4));
    write.append = vec![skip(&one, 4)];
    let one_now = apply(store, write, at(4)).await;
    let mut write = update_of(&two_now, at(5));
    write.append = vec![skip(&two, 5)];
    apply(store, write, at(5)).await;
    let first = occurrences(store, one.id).await[2].clone();
    assert_eq!(first.at, at(1));
    let mut write = update_of(&one_now, at(10));
    write.extend = Some(LedgerExtend {
        seq: first.seq,
        last_at: at(9),
        count: 9,
    });
    apply(store, write, at(10)).await;

    let purge_occurrences = |recorded_before: Timestamp, limit: usize| async move {
        let term = lead_alone(store, recorded_before).await;
        let purged = store
            .purge_occurrences(term, recorded_before, limit, recorded_before)
            .await
            .expect("purge_occurrences");
        resign_alone(store, term).await;
        purged
    };
    let ats = |entries: Vec<OccurrenceEntry>| -> Vec<Timestamp> {
        entries.into_iter().map(|entry| entry.at).collect()
    };
    // Before 6: the entries recorded at 2, 3, 4 and 5, oldest first; the grown one stays.
    assert_eq!(purge_occurrences(at(6), 0).await, 0);
    assert_eq!(purge_occurrences(at(6), 1).await, 1);
    assert_eq!(ats(occurrences(store, one.id).await), [at(4), at(1)]);
    assert_eq!(purge_occurrences(at(6), 2).await, 2);
    assert_eq!(ats(occurrences(store, one.id).await), [at(1)]);
    assert_eq!(ats(occurrences(store, two.id).await), [at(5)]);
    // An entry recorded at the cutoff is not before it.
    assert_eq!(purge_occurrences(at(5), 10).await, 0);

    // A deposed leader is refused and deletes nothing; neither does a term never granted.
    let deposed = lead(store, "node-a", None, at(20)).await.expect("leads");
    let now = at(20).add(LEADERSHIP);
    let current = lead(store, "node-b", None, now).await.expect("takes over");
    assert_not_leader(
        store.purge_occurrences(deposed, now, 10, now).await,
        deposed,
    );
    let unknown = LeaderTerm(current.0 + 1);
    assert_not_leader(
        store.purge_occurrences(unknown, now, 10, now).await,
        unknown,
    );
    assert_eq!(ats(occurrences(store, one.id).await), [at(1)]);
    assert_eq!(ats(occurrences(store, two.id).await), [at(5)]);
    // Oldest recorded first, not lowest seq: of the grown entry (the lowest seq, recorded at
    // 10) and the one recorded at 5, the latter goes first.
    let purged = store
        .purge_occurrences(current, at(11), 1, now)
        .await
        .expect("purge_occurrences");
    assert_eq!(purged, 1);
    assert_eq!(
        ats(occurrences(store, two.id).await),
        Vec::<Timestamp>::new()
    );
    assert_eq!(ats(occurrences(store, one.id).await), [at(1)]);
    let purged = store
        .purge_occurrences(current, at(11), 10, now)
        .await
        .expect("purge_occurrences");
    assert_eq!(purged, 1);
    assert!(occurrences(store, one.id).await.is_empty());
    // The schedules themselves stay, and a seq is never handed out again.
    assert_eq!(store.list_schedules(None, 10).await.expect("list").len(), 2);
    let one_now = schedule_by_id(store, one.id).await.expect("stored");
    let mut write = update_of(&one_now, at(30));
    write.append = vec![skip(&one, 30)];
    apply(store, write, at(30)).await;
    let [newest] =
        <[OccurrenceEntry; 1]>::try_from(occurrences(store, one.id).await).expect("one entry");
    assert!(newest.seq > first.seq + 4, "seq {} reused", newest.seq);
}
