//! `MemoryStore`: the reference model of the `Store` contract, held in memory.
//!
//! It owns the plainest possible reading of every `Store` method, so the conformance suite and the
//! model-based test can hold real backends against it, and so the engine and the benchmark can
//! run without a database. It must not be clever: no background tasks, no reading of the system
//! clock (every method takes `now`), and no lock held across an `.await` (each async method does
//! all its work synchronously under one `std::sync::Mutex`, which is also what makes each call
//! atomic).
//!
//! Indexes keep claims, rescues and purges cheap with 100,000+ jobs: pending jobs by queue and
//! (priority, run_at, id), running jobs by (lease expiry, id), finished jobs by (finished_at, id).
//! A kinds filter is checked on each indexed job as it is walked (there is no index by kind), so
//! it costs nothing extra while the due jobs are of the kinds asked for.
//!
//! Choices the trait leaves open, made here:
//! - `claim` clamps the requested lease into `limits::LEASE_MIN ..= limits::LEASE_MAX` rather than
//!   refusing it (the core has no validation error for a lease, and a clamp is always safe). The
//!   conformance suite holds every backend to this.
//! - `rescue_expired` takes the earliest expiry first (the suite holds backends to this too), and
//!   `purge_finished` the earliest `finished_at` first (the suite checks only how many).
//! - Leadership is one record beside the jobs, under the same lock, so a fenced duty's check of
//!   the term and its work are one atomic step, as they are in one transaction elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use punctual_core::{
    ApiToken, ClaimRequest, ClaimedJob, Cursor, FailOutcome, IdempotencyKey, IdempotencyRecord,
    Idempotent, Job, JobFilter, JobId, JobPage, JobState, Kind, LeaderTerm, Lease, LeaseToken,
    NewJob, NodeId, Priority, Queue, QueueStats, Rescue, RescueFate, RescueOutcome, StateCount,
    StateCounts, Store, StoreError, Timestamp, TokenId, ValidationError, check_kinds, check_run_at,
    limits, truncate_error,
};
use punctual_core::{
    DueSchedule, OccurrenceEntry, OccurrenceOutcome, ScheduleId, ScheduleKey, ScheduleName,
    ScheduleWrite, StoredSchedule, WriteOutcome, check_schedule_writes,
};

/// The smallest and largest possible ids, to bound index ranges.
fn id_first() -> JobId {
    JobId::from_bytes([0; 16])
}
fn id_last() -> JobId {
    JobId::from_bytes([0xff; 16])
}

/// Every job in memory, with indexes. See the module docs.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Jobs>,
}

/// Pending jobs of one queue, in claim order.
type PendingIndex = BTreeSet<(Priority, Timestamp, JobId)>;

#[derive(Default)]
struct Jobs {
    /// Every job by id; a `BTreeMap` because `list` pages in id order.
    by_id: BTreeMap<JobId, Job>,
    /// Pending (scheduled or retrying) jobs, per queue, in claim order.
    pending: BTreeMap<Queue, PendingIndex>,
    /// Running jobs by lease expiry.
    running: BTreeSet<(Timestamp, JobId)>,
    /// Finished jobs by when they finished.
    finished: BTreeSet<(Timestamp, JobId)>,
    /// How many jobs each queue holds in each state, kept by `put` and `take` (no zero entries).
    counts: BTreeMap<(Queue, JobState), u64>,
    leader: Leadership,
    /// Idempotency records by key, and their keys by expiry.
    idempotency: BTreeMap<IdempotencyKey, IdempotencyRecord>,
    idempotency_expiry: BTreeSet<(Timestamp, IdempotencyKey)>,
    tokens: BTreeMap<TokenId, ApiToken>,
    schedules: Schedules,
}

/// Schedules and their ledger, with the indexes the leader's looks need.
#[derive(Default)]
struct Schedules {
    by_id: BTreeMap<ScheduleId, StoredSchedule>,
    by_name: BTreeMap<ScheduleName, ScheduleId>,
    /// Schedules by `cursor.next_check` (those that have one).
    checks: BTreeSet<(Timestamp, ScheduleId)>,
    ledger: BTreeMap<u64, OccurrenceEntry>,
    /// Each schedule's ledger entries, by seq.
    ledger_of: BTreeSet<(ScheduleId, u64)>,
    /// Ledger entries by `recorded_at`, for the purge: a run of skips grown later counts as
    /// recorded then, so seq order is not recording order.
    ledger_recorded: BTreeSet<(Timestamp, u64)>,
    last_seq: u64,
}

impl Schedules {
    fn put(&mut self, schedule: StoredSchedule) {
        if let Some(check) = schedule.cursor.next_check {
            self.checks.insert((check, schedule.id));
        }
        self.by_name
            .insert(schedule.definition.name.clone(), schedule.id);
        self.by_id.insert(schedule.id, schedule);
    }

    fn take(&mut self, id: ScheduleId) -> Option<StoredSchedule> {
        let schedule = self.by_id.remove(&id)?;
        if let Some(check) = schedule.cursor.next_check {
            self.checks.remove(&(check, id));
        }
        self.by_name.remove(&schedule.definition.name);
        Some(schedule)
    }

    fn remove_entry(&mut self, seq: u64) {
        if let Some(entry) = self.ledger.remove(&seq) {
            self.ledger_of.remove(&(entry.schedule, seq));
            self.ledger_recorded.remove(&(entry.recorded_at, seq));
        }
    }

    fn last_entry(&self, id: ScheduleId) -> Option<&OccurrenceEntry> {
        let (_, seq) = self.ledger_of.range((id, 0)..=(id, u64::MAX)).next_back()?;
        self.ledger.get(seq)
    }

    /// Whether `write` may apply: its expected version matches (or, for a create, neither its id
    /// nor its name is taken), and its name is not another schedule's.
    fn accepts(&self, write: &ScheduleWrite) -> bool {
        let schedule = &write.schedule;
        let stored = self.by_id.get(&schedule.id);
        let version_matches = match (write.expected_version, stored) {
            (None, None) => true,
            (Some(expected), Some(stored)) => stored.version == expected,
            _ => false,
        };
        let name_free = self
            .by_name
            .get(&schedule.definition.name)
            .is_none_or(|owner| *owner == schedule.id);
        version_matches && name_free
    }
}

/// Who leads, under which term, until when. `term` is the last term granted (0: never); it is
/// kept when the holder resigns, so terms never repeat.
#[derive(Default)]
struct Leadership {
    term: u64,
    holder: Option<(NodeId, Timestamp)>,
}

impl Leadership {
    /// The holder and its expiry, if leadership is held and unexpired at `now`.
    fn held_at(&self, now: Timestamp) -> Option<&NodeId> {
        self.holder
            .as_ref()
            .filter(|(_, expires_at)| now < *expires_at)
            .map(|(node, _)| node)
    }

    /// `NotLeader` unless `term` is current and unexpired at `now`.
    fn fence(&self, term: LeaderTerm, now: Timestamp) -> Result<(), StoreError> {
        if self.term == term.0 && self.held_at(now).is_some() {
            Ok(())
        } else {
            Err(StoreError::NotLeader { term })
        }
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// How many jobs are stored, in every state.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Jobs> {
        // A panic under the lock means a broken invariant: the store is not to be trusted after.
        self.inner
            .lock()
            .expect("MemoryStore lock poisoned by an earlier panic")
    }
}

impl Jobs {
    /// Stores `job` (new, or put back after `take`) and indexes it by its state.
    fn put(&mut self, job: Job) {
        *self
            .counts
            .entry((job.queue.clone(), job.state))
            .or_default() += 1;
        if job.state.is_pending() {
            self.pending.entry(job.queue.clone()).or_default().insert((
                job.priority,
                job.run_at,
                job.id,
            ));
        }
        if let Some(lease) = &job.lease {
            assert_eq!(
                job.state,
                JobState::Running,
                "only a running job holds a lease"
            );
            self.running.insert((lease.expires_at, job.id));
        }
        if job.state.is_final() {
            let finished_at = job.finished_at.expect("a finished job has finished_at");
            self.finished.insert((finished_at, job.id));
        }
        self.by_id.insert(job.id, job);
    }

    /// Removes a job and its index entries; the caller changes it and `put`s it back, or drops it.
    fn take(&mut self, id: JobId) -> Option<Job> {
        let job = self.by_id.remove(&id)?;
        let key = (job.queue.clone(), job.state);
        let count = self.counts.get_mut(&key).expect("a stored job is counted");
        *count -= 1;
        if *count == 0 {
            self.counts.remove(&key);
        }
        if job.state.is_pending() {
            let index = self
                .pending
                .get_mut(&job.queue)
                .expect("a pending job's queue is indexed");
            index.remove(&(job.priority, job.run_at, job.id));
            // Empty queues are dropped so a claim over all queues visits only live ones.
            if index.is_empty() {
                self.pending.remove(&job.queue);
            }
        }
        if let Some(lease) = &job.lease {
            self.running.remove(&(lease.expires_at, job.id));
        }
        if let Some(finished_at) = job.finished_at.filter(|_| job.state.is_final()) {
            self.finished.remove(&(finished_at, job.id));
        }
        Some(job)
    }

    /// Stores a checked batch (`check_batch`), all or none: a duplicate id refuses all of it.
    fn insert(&mut self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<JobId>, StoreError> {
        let mut batch = BTreeSet::new();
        for job in &jobs {
            if self.by_id.contains_key(&job.id) || !batch.insert(job.id) {
                return Err(StoreError::Duplicate(job.id));
            }
        }
        let ids = jobs.iter().map(|job| job.id).collect();
        for job in jobs {
            self.put(job.into_job(now));
        }
        Ok(ids)
    }

    /// Cancels a job that has not finished.
    fn cancel(&mut self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        let job = self.by_id.get(&id).ok_or(StoreError::NotFound(id))?;
        if job.state.is_final() {
            return Err(conflict(job, "cancel"));
        }
        let mut job = self.take(id).expect("the job was just found");
        job.state = JobState::Cancelled;
        job.finished_at = Some(now);
        job.lease = None;
        self.put(job.clone());
        Ok(job)
    }

    /// Takes a job its caller holds under `token`: it must exist (else `NotFound`) and be running
    /// under exactly that token (else `LeaseLost`, with nothing changed).
    fn take_held(&mut self, id: JobId, token: LeaseToken) -> Result<Job, StoreError> {
        let job = self.by_id.get(&id).ok_or(StoreError::NotFound(id))?;
        let held = job.state == JobState::Running
            && job.lease.as_ref().is_some_and(|lease| lease.token == token);
        if !held {
            return Err(StoreError::LeaseLost { id, token });
        }
        Ok(self.take(id).expect("the job was just found"))
    }

    /// Up to `limit` due pending jobs of one queue and of `kinds` (any if `None`), in claim order.
    fn due_in_queue(
        &self,
        index: &PendingIndex,
        kinds: Option<&BTreeSet<&Kind>>,
        due_by: Timestamp,
        limit: usize,
    ) -> Vec<(Priority, Timestamp, JobId)> {
        let mut due = Vec::new();
        // Within one priority the index is in run_at order, so the due jobs are a prefix range.
        for priority in priorities() {
            if due.len() == limit {
                break;
            }
            let range = (priority, Timestamp::from_micros(i64::MIN), id_first())
                ..=(priority, due_by, id_last());
            due.extend(
                index
                    .range(range)
                    .filter(|(_, _, id)| self.is_of(*id, kinds))
                    .take(limit - due.len())
                    .copied(),
            );
        }
        due
    }

    /// Whether the stored job `id` is of one of `kinds` (`None`: any kind).
    fn is_of(&self, id: JobId, kinds: Option<&BTreeSet<&Kind>>) -> bool {
        kinds.is_none_or(|kinds| {
            let job = self.by_id.get(&id).expect("indexed jobs are stored");
            kinds.contains(&job.kind)
        })
    }

    /// The pending indexes a request serves, each queue once.
    fn pending_indexes(&self, queues: Option<&[Queue]>) -> Vec<&PendingIndex> {
        match queues {
            None => self.pending.values().collect(),
            Some(queues) => {
                let queues: BTreeSet<&Queue> = queues.iter().collect();
                queues
                    .into_iter()
                    .filter_map(|queue| self.pending.get(queue))
                    .collect()
            }
        }
    }
}

/// Refuses a batch `insert` would refuse before looking at the store: too many jobs, or one
/// that fails `NewJob::validate` (a struct literal may skip `NewJob::new`).
fn check_batch(jobs: &[NewJob], now: Timestamp) -> Result<(), StoreError> {
    if jobs.len() > limits::INSERT_BATCH_MAX {
        return Err(ValidationError::TooLong {
            field: "batch",
            bytes: jobs.len(),
            limit: limits::INSERT_BATCH_MAX,
        }
        .into());
    }
    for job in jobs {
        job.validate(now)?;
    }
    Ok(())
}

/// A kinds filter as a set, for lookups.
fn kind_set(kinds: Option<&[Kind]>) -> Option<BTreeSet<&Kind>> {
    kinds.map(|kinds| kinds.iter().collect())
}

/// Every priority, most urgent first.
fn priorities() -> impl Iterator<Item = Priority> {
    (Priority::HIGHEST.get()..=Priority::LOWEST.get())
        .map(|value| Priority::new(value).expect("within HIGHEST ..= LOWEST"))
}

fn conflict(job: &Job, operation: &'static str) -> StoreError {
    StoreError::Conflict {
        id: job.id,
        state: job.state,
        operation,
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn insert(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<JobId>, StoreError> {
        check_batch(&jobs, now)?;
        self.lock().insert(jobs, now)
    }

    async fn insert_idempotent(
        &self,
        jobs: Vec<NewJob>,
        record: IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Idempotent, StoreError> {
        record.validate()?;
        let mut stored = self.lock();
        if let Some(held) = stored
            .idempotency
            .get(&record.key)
            .filter(|held| held.is_live(now))
        {
            return Ok(Idempotent::Replayed(held.clone()));
        }
        check_batch(&jobs, now)?;
        let ids = stored.insert(jobs, now)?;
        if let Some(expired) = stored.idempotency.remove(&record.key) {
            stored
                .idempotency_expiry
                .remove(&(expired.expires_at, expired.key));
        }
        stored
            .idempotency_expiry
            .insert((record.expires_at, record.key.clone()));
        stored.idempotency.insert(record.key.clone(), record);
        Ok(Idempotent::Inserted(ids))
    }

    async fn purge_idempotency(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let mut stored = self.lock();
        stored.leader.fence(term, now)?;
        let expired: Vec<(Timestamp, IdempotencyKey)> = stored
            .idempotency_expiry
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .take(limit)
            .cloned()
            .collect();
        for entry in &expired {
            stored.idempotency_expiry.remove(entry);
            stored.idempotency.remove(&entry.1);
        }
        Ok(u64::try_from(expired.len()).expect("a count fits in u64"))
    }

    async fn insert_token(&self, token: ApiToken) -> Result<(), StoreError> {
        token.validate()?;
        let mut stored = self.lock();
        if stored.tokens.contains_key(&token.id) {
            return Err(StoreError::TokenExists(token.id));
        }
        stored.tokens.insert(token.id.clone(), token);
        Ok(())
    }

    async fn get_token(&self, id: &TokenId) -> Result<Option<ApiToken>, StoreError> {
        Ok(self.lock().tokens.get(id).cloned())
    }

    async fn list_tokens(
        &self,
        after: Option<&TokenId>,
        limit: usize,
    ) -> Result<Vec<ApiToken>, StoreError> {
        let start = match after {
            Some(id) => std::ops::Bound::Excluded(id.clone()),
            None => std::ops::Bound::Unbounded,
        };
        Ok(self
            .lock()
            .tokens
            .range((start, std::ops::Bound::Unbounded))
            .take(limit.min(limits::PAGE_SIZE_MAX))
            .map(|(_, token)| token.clone())
            .collect())
    }

    async fn revoke_token(&self, id: &TokenId, now: Timestamp) -> Result<ApiToken, StoreError> {
        let mut stored = self.lock();
        let token = stored
            .tokens
            .get_mut(id)
            .ok_or_else(|| StoreError::TokenNotFound(id.clone()))?;
        token.revoked_at.get_or_insert(now);
        Ok(token.clone())
    }
    async fn claim(
        &self,
        request: ClaimRequest,
        now: Timestamp,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        check_kinds(request.kinds.as_deref())?;
        let limit = request.bounded_limit();
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lease = request.bounded_lease();
        let kinds = kind_set(request.kinds.as_deref());
        let mut stored = self.lock();

        // The first `limit` due jobs of the union are among the first `limit` of each queue.
        let mut chosen: Vec<_> = stored
            .pending_indexes(request.queues.as_deref())
            .into_iter()
            .flat_map(|index| stored.due_in_queue(index, kinds.as_ref(), request.due_by, limit))
            .collect();
        chosen.sort_unstable();
        chosen.truncate(limit);

        // Chosen before any change, so an occurrence stored below is not claimed in this call.
        let mut claimed = Vec::with_capacity(chosen.len());
        for (_, _, id) in chosen {
            let mut job = stored.take(id).expect("indexed jobs are stored");
            let token = LeaseToken(job.lease_token.0 + 1);
            job.state = JobState::Running;
            job.attempt += 1;
            job.lease_token = token;
            job.lease = Some(Lease {
                holder: request.holder.clone(),
                token,
                expires_at: now.max(job.run_at).add(lease),
            });
            job.started_at = Some(now);
            job.finished_at = None;
            // Only the first claim of an occurrence stores the next: a released or retried
            // occurrence is claimed again with a later token and must not store a second one.
            if token == LeaseToken(1)
                && let Some(next) = job.next_occurrence(now)
            {
                assert!(
                    !stored.by_id.contains_key(&next.id),
                    "a generated UUIDv7 has 74 random bits and does not collide"
                );
                stored.put(next.into_job(now));
            }
            claimed.push(job.clone());
            stored.put(job);
        }
        Ok(claimed)
    }

    async fn extend_lease(
        &self,
        id: JobId,
        token: LeaseToken,
        expires_at: Timestamp,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut stored = self.lock();
        let mut job = stored.take_held(id, token)?;
        if let Some(lease) = job.lease.as_mut() {
            lease.expires_at = expires_at;
        }
        stored.put(job);
        Ok(())
    }

    async fn complete(
        &self,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut stored = self.lock();
        let completed = stored
            .by_id
            .get(&id)
            .is_some_and(|job| job.state == JobState::Succeeded && job.lease_token == token);
        if completed {
            return Ok(());
        }
        let mut job = stored.take_held(id, token)?;
        job.state = JobState::Succeeded;
        job.finished_at = Some(now);
        job.lease = None;
        stored.put(job);
        Ok(())
    }

    async fn fail(
        &self,
        id: JobId,
        token: LeaseToken,
        error: &str,
        outcome: FailOutcome,
        now: Timestamp,
    ) -> Result<JobState, StoreError> {
        let mut stored = self.lock();
        let mut job = stored.take_held(id, token)?;
        job.last_error = Some(truncate_error(error));
        job.lease = None;
        match outcome {
            FailOutcome::Retry { at } => {
                job.state = JobState::Retrying;
                job.run_at = at;
            }
            FailOutcome::Dead => {
                job.state = JobState::Dead;
                job.finished_at = Some(now);
            }
        }
        let state = job.state;
        stored.put(job);
        Ok(state)
    }

    async fn release(
        &self,
        id: JobId,
        token: LeaseToken,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut stored = self.lock();
        let mut job = stored.take_held(id, token)?;
        // The attempt counted at claim never began; the token stays, since tokens never repeat.
        job.attempt -= 1;
        job.state = if job.attempt == 0 {
            JobState::Scheduled
        } else {
            JobState::Retrying
        };
        job.lease = None;
        stored.put(job);
        Ok(())
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
        self.lock().cancel(id, now)
    }

    async fn write_schedules(
        &self,
        fence: Option<LeaderTerm>,
        writes: Vec<ScheduleWrite>,
        now: Timestamp,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        check_schedule_writes(&writes, now)?;
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut stored = self.lock();
        if let Some(term) = fence {
            stored.leader.fence(term, now)?;
        }
        let mut outcomes = Vec::with_capacity(writes.len());
        for write in writes {
            let jobs_free = {
                let mut batch = BTreeSet::new();
                write
                    .jobs
                    .iter()
                    .all(|job| !stored.by_id.contains_key(&job.id) && batch.insert(job.id))
            };
            if !jobs_free || !stored.schedules.accepts(&write) {
                outcomes.push(WriteOutcome::Stale);
                continue;
            }
            let id = write.schedule.id;
            stored.schedules.take(id);
            stored.schedules.put(write.schedule);
            for job in write.jobs {
                stored.put(job.into_job(now));
            }
            let schedules = &mut stored.schedules;
            if let Some(extend) = write.extend
                && schedules.ledger_of.contains(&(id, extend.seq))
                && let Some(entry) = schedules.ledger.get_mut(&extend.seq)
                && let OccurrenceOutcome::Skipped { count, last_at, .. } = &mut entry.outcome
            {
                *count = extend.count;
                *last_at = extend.last_at;
                schedules
                    .ledger_recorded
                    .remove(&(entry.recorded_at, extend.seq));
                schedules.ledger_recorded.insert((now, extend.seq));
                entry.recorded_at = now;
            }
            for mut entry in write.append {
                schedules.last_seq += 1;
                entry.seq = schedules.last_seq;
                entry.schedule = id;
                schedules.ledger_of.insert((id, entry.seq));
                schedules
                    .ledger_recorded
                    .insert((entry.recorded_at, entry.seq));
                schedules.ledger.insert(entry.seq, entry);
            }
            if let Some(job) = write.cancel {
                // A job that finished (or was purged) meanwhile needs no cancelling.
                let _ = stored.cancel(job, now);
            }
            outcomes.push(WriteOutcome::Applied);
        }
        Ok(outcomes)
    }

    async fn get_schedule(&self, key: &ScheduleKey) -> Result<Option<StoredSchedule>, StoreError> {
        let stored = self.lock();
        let schedules = &stored.schedules;
        let id = match key {
            ScheduleKey::Id(id) => Some(*id),
            ScheduleKey::Name(name) => schedules.by_name.get(name).copied(),
        };
        Ok(id.and_then(|id| schedules.by_id.get(&id).cloned()))
    }

    async fn list_schedules(
        &self,
        after: Option<&ScheduleName>,
        limit: usize,
    ) -> Result<Vec<StoredSchedule>, StoreError> {
        let stored = self.lock();
        let schedules = &stored.schedules;
        let names: Box<dyn Iterator<Item = (&ScheduleName, &ScheduleId)>> = match after {
            Some(after) => Box::new(schedules.by_name.range::<ScheduleName, _>((
                std::ops::Bound::Excluded(after),
                std::ops::Bound::Unbounded,
            ))),
            None => Box::new(schedules.by_name.iter()),
        };
        Ok(names
            .take(limit.min(limits::PAGE_SIZE_MAX))
            .map(|(_, id)| schedules.by_id[id].clone())
            .collect())
    }

    async fn delete_schedule(&self, id: ScheduleId) -> Result<bool, StoreError> {
        let mut stored = self.lock();
        let schedules = &mut stored.schedules;
        if schedules.take(id).is_none() {
            return Ok(false);
        }
        let seqs: Vec<(ScheduleId, u64)> = schedules
            .ledger_of
            .range((id, 0)..=(id, u64::MAX))
            .copied()
            .collect();
        for (_, seq) in seqs {
            schedules.remove_entry(seq);
        }
        Ok(true)
    }

    async fn due_schedules(
        &self,
        check_by: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueSchedule>, StoreError> {
        let stored = self.lock();
        let schedules = &stored.schedules;
        Ok(schedules
            .checks
            .iter()
            .take_while(|(check, _)| *check <= check_by)
            .take(limit.min(limits::SCHEDULE_BATCH_MAX))
            .map(|(_, id)| {
                let schedule = schedules.by_id[id].clone();
                let last_job_state = schedule
                    .cursor
                    .last_job
                    .and_then(|job| stored.by_id.get(&job))
                    .map(|job| job.state);
                DueSchedule {
                    last_entry: schedules.last_entry(*id).cloned(),
                    schedule,
                    last_job_state,
                }
            })
            .collect())
    }

    async fn list_occurrences(
        &self,
        id: ScheduleId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<OccurrenceEntry>, StoreError> {
        let stored = self.lock();
        let schedules = &stored.schedules;
        let before = before.unwrap_or(u64::MAX);
        Ok(schedules
            .ledger_of
            .range((id, 0)..(id, before))
            .rev()
            .take(limit.min(limits::PAGE_SIZE_MAX))
            .map(|(_, seq)| schedules.ledger[seq].clone())
            .collect())
    }

    async fn purge_occurrences(
        &self,
        term: LeaderTerm,
        recorded_before: Timestamp,
        limit: usize,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut stored = self.lock();
        stored.leader.fence(term, now)?;
        let schedules = &mut stored.schedules;
        let old: Vec<u64> = schedules
            .ledger_recorded
            .iter()
            .take_while(|(recorded_at, _)| *recorded_at < recorded_before)
            .take(limit)
            .map(|(_, seq)| *seq)
            .collect();
        for seq in &old {
            schedules.remove_entry(*seq);
        }
        Ok(old.len() as u64)
    }

    async fn reschedule(
        &self,
        id: JobId,
        run_at: Timestamp,
        now: Timestamp,
    ) -> Result<Job, StoreError> {
        check_run_at(run_at, now)?;
        let mut stored = self.lock();
        let job = stored.by_id.get(&id).ok_or(StoreError::NotFound(id))?;
        if matches!(job.state, JobState::Running | JobState::Succeeded) {
            return Err(conflict(job, "reschedule"));
        }
        let mut job = stored.take(id).expect("the job was just found");
        if job.state.is_final() {
            // Revive a dead or cancelled job: a fresh start, with its last error kept for people.
            job.state = JobState::Scheduled;
            job.attempt = 0;
            job.finished_at = None;
        }
        job.run_at = run_at;
        stored.put(job.clone());
        Ok(job)
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self.lock().by_id.get(&id).cloned())
    }

    async fn list(
        &self,
        filter: JobFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<JobPage, StoreError> {
        let limit = limit.min(limits::PAGE_SIZE_MAX);
        if limit == 0 {
            return Ok(JobPage {
                jobs: Vec::new(),
                next: None,
            });
        }
        let stored = self.lock();
        let start = match after {
            Some(Cursor(id)) => std::ops::Bound::Excluded(id),
            None => std::ops::Bound::Unbounded,
        };
        let jobs: Vec<Job> = stored
            .by_id
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, job)| job)
            .filter(|job| filter.matches(job))
            .take(limit)
            .cloned()
            .collect();
        let next = (jobs.len() == limit).then(|| Cursor(jobs[jobs.len() - 1].id));
        Ok(JobPage { jobs, next })
    }

    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        Ok(self
            .lock()
            .counts
            .iter()
            .map(|((queue, state), count)| StateCount {
                queue: queue.clone(),
                state: *state,
                count: *count,
            })
            .collect())
    }

    async fn queue_stats(&self, now: Timestamp) -> Result<Vec<QueueStats>, StoreError> {
        let stored = self.lock();
        let mut stats: Vec<QueueStats> = Vec::new();
        for ((queue, state), count) in &stored.counts {
            if stats.last().is_none_or(|last| last.queue != *queue) {
                if stats.len() == limits::QUEUES_LISTED_MAX {
                    break;
                }
                stats.push(QueueStats {
                    queue: queue.clone(),
                    counts: StateCounts::default(),
                    due: 0,
                    oldest_due: None,
                });
            }
            let last = stats.last_mut().expect("pushed above");
            last.counts.add(*state, *count);
        }
        for queue in &mut stats {
            let Some(index) = stored.pending.get(&queue.queue) else {
                continue;
            };
            // Within one priority the due jobs are a prefix of the index: its first entry is
            // the oldest, and the count walks no further than the cap.
            let mut due = 0u64;
            for priority in priorities() {
                let range = (priority, Timestamp::from_micros(i64::MIN), id_first())
                    ..=(priority, now, id_last());
                let mut entries = index.range(range).peekable();
                if let Some((_, run_at, _)) = entries.peek() {
                    queue.oldest_due =
                        Some(queue.oldest_due.map_or(*run_at, |old| old.min(*run_at)));
                }
                let left = usize::try_from(limits::DUE_COUNT_MAX - due).unwrap_or(usize::MAX);
                due += entries.take(left).count() as u64;
            }
            queue.due = due;
        }
        Ok(stats)
    }

    async fn next_due(
        &self,
        queues: Option<&[Queue]>,
        kinds: Option<&[Kind]>,
    ) -> Result<Option<Timestamp>, StoreError> {
        check_kinds(kinds)?;
        let kinds = kind_set(kinds);
        let stored = self.lock();
        let stored = &*stored;
        // The earliest run_at of each priority is the first entry of its range of those kinds.
        let earliest = stored
            .pending_indexes(queues)
            .into_iter()
            .flat_map(|index| {
                let kinds = kinds.as_ref();
                priorities().filter_map(move |priority| {
                    let range = (priority, Timestamp::from_micros(i64::MIN), id_first())
                        ..=(priority, Timestamp::from_micros(i64::MAX), id_last());
                    index
                        .range(range)
                        .find(|(_, _, id)| stored.is_of(*id, kinds))
                        .map(|(_, run_at, _)| *run_at)
                })
            })
            .min();
        Ok(earliest)
    }

    async fn next_lease_expiry(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .lock()
            .running
            .first()
            .map(|(expires_at, _)| *expires_at))
    }

    async fn lead(
        &self,
        node: &NodeId,
        term: Option<LeaderTerm>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        let expires_at = now.add(lease.clamp(limits::LEASE_MIN, limits::LEASE_MAX));
        let mut stored = self.lock();
        let leader = &mut stored.leader;
        match leader.held_at(now) {
            Some(holder) if holder == node && term == Some(LeaderTerm(leader.term)) => {}
            Some(_) => return Ok(None),
            None => leader.term += 1,
        }
        leader.holder = Some((node.clone(), expires_at));
        Ok(Some(LeaderTerm(leader.term)))
    }

    async fn resign(&self, node: &NodeId, term: LeaderTerm) -> Result<(), StoreError> {
        let mut stored = self.lock();
        let leader = &mut stored.leader;
        let holds = leader.term == term.0
            && leader
                .holder
                .as_ref()
                .is_some_and(|(holder, _)| holder == node);
        if holds {
            leader.holder = None;
        }
        Ok(())
    }

    async fn rescue_expired(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<RescueOutcome>, StoreError> {
        let mut stored = self.lock();
        stored.leader.fence(term, now)?;
        let expired: Vec<JobId> = stored
            .running
            .range(..=(now, id_last()))
            .take(limit)
            .map(|(_, id)| *id)
            .collect();
        let mut outcomes = Vec::with_capacity(expired.len());
        for id in expired {
            let mut job = stored.take(id).expect("indexed jobs are stored");
            let lease = job.lease.take().expect("a running job holds a lease");
            let rescue = Rescue::decide(
                job.attempt,
                job.attempt_max,
                &job.retry,
                &lease.holder,
                lease.token,
                now,
            );
            job.state = rescue.state();
            job.last_error = Some(rescue.error);
            match rescue.fate {
                RescueFate::Retry { run_at } => job.run_at = run_at,
                RescueFate::Dead { finished_at } => job.finished_at = Some(finished_at),
            }
            outcomes.push(RescueOutcome {
                id,
                holder: lease.holder,
                token: lease.token,
                state: job.state,
            });
            stored.put(job);
        }
        Ok(outcomes)
    }

    async fn purge_finished(
        &self,
        term: LeaderTerm,
        finished_before: Timestamp,
        limit: usize,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut stored = self.lock();
        stored.leader.fence(term, now)?;
        let old: Vec<JobId> = stored
            .finished
            .range(..(finished_before, id_first()))
            .take(limit)
            .map(|(_, id)| *id)
            .collect();
        for id in &old {
            stored.take(*id);
        }
        Ok(u64::try_from(old.len()).expect("a count of jobs fits in u64"))
    }
}
