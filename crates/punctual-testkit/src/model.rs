//! The model-based test: a random sequence of operations, generated from a seed, runs against a
//! store and against a fresh `MemoryStore`; every result, and the final listing, must be equal.
//!
//! Inputs are deterministic in the seed (its own small generator, ids built from a sequence
//! number), so a failure names a seed and a step that replay identically. It must not use
//! schedules: `Job::next_occurrence` draws a random id, which two stores cannot agree on. And it
//! asks only questions whose answer the contract fixes: rescues and purges take every eligible
//! job (which of several ties a smaller limit takes is the backend's choice).
//!
//! Two nodes contend for leadership too: they lead, renew, resign, and run the leader duties
//! with the latest term granted (current or not), or now and then a made-up one.
//!
//! Besides each call's answer, `counts` is compared after every step (it is kept by the store
//! with every write, so a write that forgets it shows at once), and the sequences include
//! `queue_stats`, inserts under idempotency keys (held, expired, or invalid) with their purge,
//! and API tokens.

use std::sync::Arc;
use std::time::Duration;

use punctual_core::{
    ApiToken, ClaimRequest, Cursor, FailOutcome, IdempotencyKey, IdempotencyRecord, Idempotent,
    Job, JobFilter, JobId, JobOptions, JobState, Kind, LeaderTerm, LeaseToken, NewJob, NodeId,
    Payload, Priority, Queue, QueueStats, RescueOutcome, RetryPolicy, StateCount, Store,
    StoreError, Timestamp, TokenId, limits,
};

use crate::MemoryStore;
use crate::fixtures::{NOW, job_id, kind, node, queue};

/// The seeds `store_conformance_suite!` runs.
pub const SEEDS: std::ops::Range<u64> = 0..8;

/// Operations per seed.
const STEPS: usize = 200;

/// More than the model test ever stores, so a rescue or purge takes every eligible job.
const TAKE_ALL: usize = 10_000;

/// Runs `STEPS` random operations from `seed` against `store` and a fresh `MemoryStore`, and
/// panics at the first difference, naming the seed, the step and the operation.
pub async fn matches_memory_model(store: Arc<dyn Store>, seed: u64) {
    let model = MemoryStore::new();
    let mut run = Run {
        random: SplitMix64(seed),
        now: NOW,
        inserted: 0,
        leases: Vec::new(),
        terms: [None, None],
        latest_term: None,
    };
    for step in 0..STEPS {
        let operation = run.next_operation();
        let actual = apply(&*store, &operation, run.now).await;
        let expected = apply(&model, &operation, run.now).await;
        assert_eq!(
            actual, expected,
            "seed {seed}, step {step}, at {}: {operation:?}",
            run.now
        );
        run.observe(&operation, &expected);
        let actual = apply(&*store, &Operation::Counts, run.now).await;
        let expected = apply(&model, &Operation::Counts, run.now).await;
        assert_eq!(
            actual, expected,
            "seed {seed}, step {step}: counts differ after {operation:?}"
        );
    }
    let actual = everything(&*store).await;
    let expected = everything(&model).await;
    assert_eq!(actual, expected, "seed {seed}: the final listings differ");
    for operation in [
        Operation::QueueStats,
        Operation::ListTokens {
            after: None,
            limit: limits::PAGE_SIZE_MAX,
        },
    ] {
        let actual = apply(&*store, &operation, run.now).await;
        let expected = apply(&model, &operation, run.now).await;
        assert_eq!(
            actual, expected,
            "seed {seed}: the final {operation:?} differs"
        );
    }
}

/// One call of a `Store` method, with its inputs.
#[derive(Debug)]
enum Operation {
    Insert(Vec<NewJob>),
    Claim(ClaimRequest),
    ExtendLease {
        id: JobId,
        token: LeaseToken,
        expires_at: Timestamp,
    },
    Complete {
        id: JobId,
        token: LeaseToken,
    },
    Fail {
        id: JobId,
        token: LeaseToken,
        outcome: FailOutcome,
    },
    Release {
        id: JobId,
        token: LeaseToken,
    },
    Cancel(JobId),
    Reschedule {
        id: JobId,
        run_at: Timestamp,
    },
    Get(JobId),
    List {
        filter: JobFilter,
        after: Option<Cursor>,
        limit: usize,
    },
    Counts,
    NextDue {
        queues: Option<Vec<Queue>>,
        kinds: Option<Vec<Kind>>,
    },
    NextLeaseExpiry,
    Lead {
        node: NodeId,
        term: Option<LeaderTerm>,
        lease: Duration,
    },
    Resign {
        node: NodeId,
        term: LeaderTerm,
    },
    RescueExpired(LeaderTerm),
    PurgeFinished {
        term: LeaderTerm,
        finished_before: Timestamp,
    },
    QueueStats,
    InsertIdempotent {
        jobs: Vec<NewJob>,
        record: IdempotencyRecord,
    },
    PurgeIdempotency(LeaderTerm),
    InsertToken(ApiToken),
    GetToken(TokenId),
    ListTokens {
        after: Option<TokenId>,
        limit: usize,
    },
    RevokeToken(TokenId),
    /// Not a store call: time passes.
    Advance(Duration),
}

/// What a call returned, in a form two stores' answers can be compared by.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ids(Vec<JobId>),
    Jobs(Vec<Job>),
    Job(Option<Box<Job>>),
    State(JobState),
    Done,
    Page(Vec<Job>, Option<Cursor>),
    Counts(Vec<StateCount>),
    Instant(Option<Timestamp>),
    Rescued(Vec<RescueOutcome>),
    Purged(u64),
    Term(Option<LeaderTerm>),
    Stats(Vec<QueueStats>),
    Idempotent(Idempotent),
    Token(Option<ApiToken>),
    Tokens(Vec<ApiToken>),
    /// The error's `Debug` text: its variant and every field.
    Error(String),
}

async fn apply(store: &dyn Store, operation: &Operation, now: Timestamp) -> Outcome {
    let result = match operation {
        Operation::Insert(jobs) => store.insert(jobs.clone(), now).await.map(Outcome::Ids),
        Operation::Claim(request) => store.claim(request.clone(), now).await.map(Outcome::Jobs),
        Operation::ExtendLease {
            id,
            token,
            expires_at,
        } => store
            .extend_lease(*id, *token, *expires_at, now)
            .await
            .map(|()| Outcome::Done),
        Operation::Complete { id, token } => store
            .complete(*id, *token, now)
            .await
            .map(|()| Outcome::Done),
        Operation::Fail { id, token, outcome } => store
            .fail(*id, *token, "model failure", *outcome, now)
            .await
            .map(Outcome::State),
        Operation::Release { id, token } => store
            .release(*id, *token, now)
            .await
            .map(|()| Outcome::Done),
        Operation::Cancel(id) => store
            .cancel(*id, now)
            .await
            .map(|job| Outcome::Job(Some(Box::new(job)))),
        Operation::Reschedule { id, run_at } => store
            .reschedule(*id, *run_at, now)
            .await
            .map(|job| Outcome::Job(Some(Box::new(job)))),
        Operation::Get(id) => store
            .get(*id)
            .await
            .map(|job| Outcome::Job(job.map(Box::new))),
        Operation::List {
            filter,
            after,
            limit,
        } => store
            .list(filter.clone(), *after, *limit)
            .await
            .map(|page| Outcome::Page(page.jobs, page.next)),
        Operation::Counts => store.counts().await.map(Outcome::Counts),
        Operation::NextDue { queues, kinds } => store
            .next_due(queues.as_deref(), kinds.as_deref())
            .await
            .map(Outcome::Instant),
        Operation::NextLeaseExpiry => store.next_lease_expiry().await.map(Outcome::Instant),
        Operation::Lead { node, term, lease } => store
            .lead(node, *term, *lease, now)
            .await
            .map(Outcome::Term),
        Operation::Resign { node, term } => store.resign(node, *term).await.map(|()| Outcome::Done),
        Operation::RescueExpired(term) => {
            store
                .rescue_expired(*term, now, TAKE_ALL)
                .await
                .map(|mut rescued| {
                    // The order among leases expiring at the same instant is the backend's choice.
                    rescued.sort_by_key(|outcome| outcome.id);
                    Outcome::Rescued(rescued)
                })
        }
        Operation::PurgeFinished {
            term,
            finished_before,
        } => store
            .purge_finished(*term, *finished_before, TAKE_ALL, now)
            .await
            .map(Outcome::Purged),
        Operation::QueueStats => store.queue_stats(now).await.map(Outcome::Stats),
        Operation::InsertIdempotent { jobs, record } => store
            .insert_idempotent(jobs.clone(), record.clone(), now)
            .await
            .map(Outcome::Idempotent),
        Operation::PurgeIdempotency(term) => store
            .purge_idempotency(*term, now, TAKE_ALL)
            .await
            .map(Outcome::Purged),
        Operation::InsertToken(token) => store
            .insert_token(token.clone())
            .await
            .map(|()| Outcome::Done),
        Operation::GetToken(id) => store.get_token(id).await.map(Outcome::Token),
        Operation::ListTokens { after, limit } => store
            .list_tokens(after.as_ref(), *limit)
            .await
            .map(Outcome::Tokens),
        Operation::RevokeToken(id) => store
            .revoke_token(id, now)
            .await
            .map(|token| Outcome::Token(Some(token))),
        Operation::Advance(_) => Ok(Outcome::Done),
    };
    result.unwrap_or_else(|error: StoreError| Outcome::Error(format!("{error:?}")))
}

/// Every job, through the cursor.
async fn everything(store: &dyn Store) -> Vec<Job> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(JobFilter::default(), after, limits::PAGE_SIZE_MAX)
            .await
            .expect("list");
        all.extend(page.jobs);
        match page.next {
            Some(cursor) => after = Some(cursor),
            None => return all,
        }
    }
}

/// The generator's state: the time, how many ids were handed out, the leases ever granted.
struct Run {
    random: SplitMix64,
    now: Timestamp,
    inserted: u64,
    /// Every (job, token) ever claimed, current or stale: fenced calls pick from these.
    leases: Vec<(JobId, LeaseToken)>,
    /// The last term granted to each of the two nodes (`NODES`), current or not.
    terms: [Option<LeaderTerm>; 2],
    /// The last term granted to either node: the leader duties run with it.
    latest_term: Option<LeaderTerm>,
}

/// The nodes that contend for leadership.
const NODES: [&str; 2] = ["node-a", "node-b"];

impl Run {
    fn next_operation(&mut self) -> Operation {
        match self.random.below(112) {
            0..14 => Operation::Insert(self.new_jobs()),
            14..33 => Operation::Claim(self.claim_request()),
            33..43 => {
                let (id, token) = self.lease();
                Operation::Complete { id, token }
            }
            43..52 => {
                let (id, token) = self.lease();
                let outcome = if self.random.chance(30) {
                    FailOutcome::Dead
                } else {
                    FailOutcome::Retry {
                        at: self.offset(0, 20_000),
                    }
                };
                Operation::Fail { id, token, outcome }
            }
            52..57 => {
                let (id, token) = self.lease();
                Operation::Release { id, token }
            }
            57..61 => {
                let (id, token) = self.lease();
                let expires_at = self.offset(1_000, 30_000);
                Operation::ExtendLease {
                    id,
                    token,
                    expires_at,
                }
            }
            61..66 => Operation::Cancel(self.id()),
            66..71 => {
                let id = self.id();
                let run_at = if self.random.chance(5) {
                    self.now
                        .add(limits::RUN_AT_FUTURE_MAX)
                        .add(Duration::from_secs(1))
                } else {
                    self.offset(-5_000, 30_000)
                };
                Operation::Reschedule { id, run_at }
            }
            71..81 => Operation::Advance(Duration::from_millis(self.random.below(15_000))),
            81..86 => self.lead(),
            86 => {
                let (index, term) = self.node_term();
                Operation::Resign {
                    node: node(NODES[index]),
                    term: term.unwrap_or(LeaderTerm(0)),
                }
            }
            87..92 => Operation::RescueExpired(self.duty_term()),
            92..94 => Operation::PurgeFinished {
                term: self.duty_term(),
                finished_before: self.offset(-30_000, 0),
            },
            94 => Operation::Get(self.id()),
            95..97 => self.list(),
            97 => Operation::Counts,
            98 => Operation::NextDue {
                queues: self.queues(),
                kinds: self.kinds(),
            },
            99 => Operation::NextLeaseExpiry,
            100..102 => Operation::QueueStats,
            102..106 => Operation::InsertIdempotent {
                jobs: self.new_jobs(),
                record: self.record(),
            },
            106 => Operation::PurgeIdempotency(self.duty_term()),
            107 => Operation::InsertToken(self.token()),
            108 => Operation::GetToken(self.token_id()),
            109 => {
                let after = self.random.chance(50).then(|| self.token_id());
                let limit = usize::try_from(self.random.below(4)).expect("below 4");
                Operation::ListTokens { after, limit }
            }
            _ => Operation::RevokeToken(self.token_id()),
        }
    }

    /// A record under one of a few keys, held for up to 45 s (so some keys are still held when
    /// asked again, some have expired); now and then an invalid one.
    fn record(&mut self) -> IdempotencyRecord {
        let key = format!("key-{}", self.random.below(4));
        let ttl_ms = if self.random.chance(5) {
            0
        } else {
            1 + self.random.below(45_000)
        };
        IdempotencyRecord {
            key: IdempotencyKey::new(&key).expect("a valid key"),
            fingerprint: format!("sha256:{}", self.random.below(3)),
            response: format!("{{\"step\":{}}}", self.random.below(1_000)),
            created_at: self.now,
            expires_at: self.now.add(Duration::from_millis(ttl_ms)),
        }
    }

    fn token_id(&mut self) -> TokenId {
        TokenId::new(&format!("tok-{}", self.random.below(5))).expect("a valid token id")
    }

    /// A token under one of a few ids (so some inserts find it taken); now and then an
    /// invalid one (scopes out of order).
    fn token(&mut self) -> ApiToken {
        let scopes = if self.random.chance(10) {
            vec!["write".to_owned(), "read".to_owned()]
        } else {
            vec!["read".to_owned()]
        };
        let expires_at = self.random.chance(50).then(|| self.offset(1_000, 60_000));
        ApiToken {
            id: self.token_id(),
            label: format!("model token {}", self.random.below(100)),
            scopes,
            secret_sha256: [u8::try_from(self.random.below(256)).expect("below 256"); 32],
            created_at: self.now,
            expires_at,
            revoked_at: None,
        }
    }

    /// Moves time, and learns the leases a claim granted and the terms an election did.
    fn observe(&mut self, operation: &Operation, outcome: &Outcome) {
        if let Operation::Advance(by) = operation {
            self.now = self.now.add(*by);
        }
        if let (Operation::Lead { node, .. }, Outcome::Term(Some(term))) = (operation, outcome) {
            let index = NODES
                .iter()
                .position(|name| *name == node.as_str())
                .expect("one of NODES leads");
            self.terms[index] = Some(*term);
            self.latest_term = Some(*term);
        }
        if let Outcome::Jobs(claimed) = outcome {
            for job in claimed {
                let lease = job.lease.as_ref().expect("a claimed job holds a lease");
                self.leases.push((job.id, lease.token));
            }
        }
    }

    /// One to three new jobs; now and then one reuses a stored id, so the batch is refused.
    fn new_jobs(&mut self) -> Vec<NewJob> {
        let count = 1 + self.random.below(3);
        let mut jobs: Vec<NewJob> = (0..count).map(|_| self.new_job()).collect();
        if self.inserted > count && self.random.chance(10) {
            let position = self.random.below(count) as usize;
            jobs[position].id = self.id_below(self.inserted - count);
        }
        jobs
    }

    fn new_job(&mut self) -> NewJob {
        let sequence = self.inserted;
        self.inserted += 1;
        let retry = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(8), 0)
            .expect("a valid retry policy");
        let priority = u8::try_from(self.random.below(3)).expect("below 3");
        let options = JobOptions::default()
            .id(job_id(NOW, sequence))
            .queue(self.queue())
            .priority(Priority::new(priority).expect("a valid priority"))
            .attempt_max(1 + u32::try_from(self.random.below(3)).expect("below 3"))
            .retry(retry);
        let kind_name = if self.random.chance(50) {
            "model.a"
        } else {
            "model.b"
        };
        let payload =
            Payload::from_json_text(&format!("{{\"n\":{sequence}}}")).expect("valid JSON");
        let run_at = self.offset(-5_000, 30_000);
        NewJob::new(kind(kind_name), payload, run_at, options, self.now).expect("a valid new job")
    }

    fn claim_request(&mut self) -> ClaimRequest {
        let holder = if self.random.chance(50) {
            "node-a"
        } else {
            "node-b"
        };
        // Now and then a lease below the minimum, which the store clamps.
        let lease = if self.random.chance(10) {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(1_000 + self.random.below(19_000))
        };
        ClaimRequest {
            holder: node(holder),
            queues: self.queues(),
            kinds: self.kinds(),
            limit: usize::try_from(self.random.below(5)).expect("below 5"),
            due_by: self.offset(0, 5_000),
            lease,
        }
    }

    /// One of the nodes asks to lead, mostly with the last term it was granted (a renewal, or a
    /// stale term), sometimes with none; the lease is now and then below the minimum.
    fn lead(&mut self) -> Operation {
        let (index, term) = self.node_term();
        let term = if self.random.chance(20) { None } else { term };
        let lease = if self.random.chance(10) {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(1_000 + self.random.below(29_000))
        };
        Operation::Lead {
            node: node(NODES[index]),
            term,
            lease,
        }
    }

    /// A random node and the last term it was granted.
    fn node_term(&mut self) -> (usize, Option<LeaderTerm>) {
        let index = self.random.below(2) as usize;
        (index, self.terms[index])
    }

    /// The term a leader duty runs with: the latest granted, or now and then a made-up one.
    fn duty_term(&mut self) -> LeaderTerm {
        match self.latest_term {
            Some(term) if !self.random.chance(10) => term,
            _ => LeaderTerm(self.random.below(4)),
        }
    }

    fn list(&mut self) -> Operation {
        let filter = JobFilter {
            queue: self.random.chance(30).then(|| self.queue()),
            state: self
                .random
                .chance(30)
                .then(|| JobState::ALL[self.random.below(6) as usize]),
            kind: self.random.chance(20).then(|| kind("model.a")),
            due_from: self.random.chance(25).then(|| self.offset(-5_000, 20_000)),
            due_before: self.random.chance(25).then(|| self.offset(0, 30_000)),
        };
        let after = self.random.chance(50).then(|| Cursor(self.id()));
        let limit = usize::try_from(self.random.below(10)).expect("below 10");
        Operation::List {
            filter,
            after,
            limit,
        }
    }

    fn queue(&mut self) -> Queue {
        if self.random.chance(60) {
            queue("alpha")
        } else {
            queue("beta")
        }
    }

    fn queues(&mut self) -> Option<Vec<Queue>> {
        match self.random.below(4) {
            0 => Some(vec![queue("alpha")]),
            1 => Some(vec![queue("beta"), queue("alpha")]),
            _ => None,
        }
    }

    /// A kinds filter: mostly none, sometimes one or both of the kinds jobs have (named twice),
    /// a kind no job has, or none at all.
    fn kinds(&mut self) -> Option<Vec<Kind>> {
        match self.random.below(8) {
            0 => Some(vec![kind("model.a")]),
            1 => Some(vec![kind("model.b"), kind("model.a"), kind("model.b")]),
            2 => Some(vec![kind("model.c")]),
            3 => Some(Vec::new()),
            _ => None,
        }
    }

    /// A lease once granted (current or stale), or now and then a made-up one.
    fn lease(&mut self) -> (JobId, LeaseToken) {
        if self.leases.is_empty() || self.random.chance(10) {
            return (self.id(), LeaseToken(self.random.below(4)));
        }
        // Recent leases are likelier to be current.
        let recent = self.leases.len().min(8) as u64;
        let back = self.random.below(recent) as usize;
        self.leases[self.leases.len() - 1 - back]
    }

    /// An id handed out so far, or now and then one never stored.
    fn id(&mut self) -> JobId {
        if self.inserted == 0 || self.random.chance(5) {
            return job_id(NOW, 1_000_000 + self.random.below(10));
        }
        self.id_below(self.inserted)
    }

    fn id_below(&mut self, bound: u64) -> JobId {
        job_id(NOW, self.random.below(bound))
    }

    /// `now` plus a random offset within `low_ms ..= high_ms`.
    fn offset(&mut self, low_ms: i64, high_ms: i64) -> Timestamp {
        let span = u64::try_from(high_ms - low_ms).expect("high is not below low") + 1;
        let millis = low_ms + i64::try_from(self.random.below(span)).expect("a small span");
        Timestamp::from_micros(self.now.as_micros() + millis * 1_000)
    }
}

/// SplitMix64 (Steele, Lea and Flood): tiny, and its sequence for a seed never changes, so a
/// seed named in a failure replays on any version of any dependency.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`; `bound` must not be zero.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
