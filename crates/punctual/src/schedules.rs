//! Schedules at run time: the `Schedules` handle (create, upsert, update, pause, resume,
//! trigger, delete, read) and the leader duty that turns due occurrences into jobs
//! (`materialize`).
//!
//! Every change is a read, a change made by a plain function of the core, and a
//! `Store::write_schedules` that applies only if the schedule did not change since it was read
//! (its version); a stale write is read and made again, a few times. Which occurrence fires and
//! which is skipped is decided by `punctual_core::recurring::plan` alone; this module only
//! carries its writes to the store, under the leader's term, so that a deposed leader's plan
//! is refused and a new leader's plan starts from the high-water mark the last one committed.

use std::sync::Arc;

use punctual_core::recurring::plan::{self, PlanSummary};
use punctual_core::{
    DueSchedule, JobId, OccurrenceEntry, ScheduleCursor, ScheduleDefinition, ScheduleKey,
    ScheduleName, ScheduleWrite, Store, StoreError, StoredSchedule, Timestamp, WriteOutcome,
    limits,
};

use crate::event::Event;
use crate::maintenance::{duty_failed, tick};
use crate::scheduler::Inner;

/// How often a change that found its schedule changed under it is read and made again.
const STALE_RETRIES_MAX: usize = 5;

/// Errors of a change of a schedule.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule {0} not found")]
    NotFound(String),
    #[error("a schedule named {0} already exists")]
    Exists(ScheduleName),
    #[error("schedule {0} kept changing; try again")]
    Contended(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<punctual_core::ValidationError> for ScheduleError {
    fn from(error: punctual_core::ValidationError) -> ScheduleError {
        ScheduleError::Store(StoreError::Invalid(error))
    }
}

/// What `upsert` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Updated,
    /// The stored definition was the same: nothing was written.
    Unchanged,
}

/// The schedules of the store an engine runs on (`Scheduler::schedules`). Cheap to clone.
#[derive(Clone)]
pub struct Schedules {
    store: Arc<dyn Store>,
    clock: Arc<dyn punctual_core::Clock>,
}

impl Schedules {
    pub(crate) fn new(store: Arc<dyn Store>, clock: Arc<dyn punctual_core::Clock>) -> Schedules {
        Schedules { store, clock }
    }

    /// Creates a schedule; `Exists` if one has its name.
    pub async fn create(
        &self,
        definition: ScheduleDefinition,
    ) -> Result<StoredSchedule, ScheduleError> {
        definition.validate()?;
        let now = self.clock.now();
        let schedule = StoredSchedule::create(definition, now);
        let outcome = self
            .write_one(ScheduleWrite::of(schedule.clone(), None), now)
            .await?;
        match outcome {
            WriteOutcome::Applied => Ok(schedule),
            WriteOutcome::Stale => Err(ScheduleError::Exists(schedule.definition.name)),
        }
    }

    /// Creates the schedule named by `definition`, or makes the stored one's definition this
    /// one (keeping its id, state and history); nothing is written when it is the same.
    pub async fn upsert(
        &self,
        definition: ScheduleDefinition,
    ) -> Result<(StoredSchedule, Upserted), ScheduleError> {
        definition.validate()?;
        let key = ScheduleKey::Name(definition.name.clone());
        for _ in 0..STALE_RETRIES_MAX {
            match self.store.get_schedule(&key).await? {
                None => match self.create(definition.clone()).await {
                    Ok(schedule) => return Ok((schedule, Upserted::Created)),
                    // Created by someone else meanwhile: update it.
                    Err(ScheduleError::Exists(_)) => continue,
                    Err(error) => return Err(error),
                },
                Some(stored) if stored.definition == definition => {
                    return Ok((stored, Upserted::Unchanged));
                }
                Some(stored) => {
                    let now = self.clock.now();
                    let write = updated(stored, definition.clone(), now);
                    let schedule = write.schedule.clone();
                    if self.write_one(write, now).await? == WriteOutcome::Applied {
                        return Ok((schedule, Upserted::Updated));
                    }
                }
            }
        }
        Err(ScheduleError::Contended(definition.name.to_string()))
    }

    /// Replaces a stored schedule's definition (its name included), keeping its id, state and
    /// history.
    pub async fn update(
        &self,
        key: &ScheduleKey,
        definition: ScheduleDefinition,
    ) -> Result<StoredSchedule, ScheduleError> {
        definition.validate()?;
        self.change(key, |stored, now| {
            Ok(updated(stored.clone(), definition.clone(), now))
        })
        .await
        .map(|(schedule, _)| schedule)
    }

    /// Pauses a schedule: its occurrences are skipped (and recorded as skipped) until it is
    /// resumed. Occurrences already inserted ahead of their time (`Config::schedule_ahead`)
    /// still run.
    pub async fn pause(&self, key: &ScheduleKey) -> Result<StoredSchedule, ScheduleError> {
        self.set_paused(key, true).await
    }

    pub async fn resume(&self, key: &ScheduleKey) -> Result<StoredSchedule, ScheduleError> {
        self.set_paused(key, false).await
    }

    async fn set_paused(
        &self,
        key: &ScheduleKey,
        paused: bool,
    ) -> Result<StoredSchedule, ScheduleError> {
        self.change(key, |stored, now| {
            let mut schedule = stored.clone();
            schedule.paused = paused;
            schedule.version += 1;
            schedule.updated_at = now;
            if !paused && schedule.cursor.next_check.is_some() {
                schedule.cursor.next_check = Some(now);
            }
            Ok(ScheduleWrite::of(schedule, Some(stored.version)))
        })
        .await
        .map(|(schedule, _)| schedule)
    }

    /// Fires the schedule now, whatever its policies and state: a job due at once, recorded in
    /// the ledger as manual. Its own occurrences go on as before.
    pub async fn trigger(&self, key: &ScheduleKey) -> Result<JobId, ScheduleError> {
        let mut job = None;
        self.change(key, |stored, now| {
            let due = DueSchedule {
                schedule: stored.clone(),
                last_job_state: None,
                last_entry: None,
            };
            let (write, id) = plan::trigger(now, &due);
            job = Some(id);
            Ok(write)
        })
        .await?;
        Ok(job.expect("a change that applied ran its function"))
    }

    /// Deletes a schedule and its ledger; jobs it made stay. `false` if there was none.
    pub async fn delete(&self, key: &ScheduleKey) -> Result<bool, ScheduleError> {
        match self.store.get_schedule(key).await? {
            Some(stored) => Ok(self.store.delete_schedule(stored.id).await?),
            None => Ok(false),
        }
    }

    pub async fn get(&self, key: &ScheduleKey) -> Result<Option<StoredSchedule>, ScheduleError> {
        Ok(self.store.get_schedule(key).await?)
    }

    /// Schedules in name order after `after`, at most `limit`.
    pub async fn list(
        &self,
        after: Option<&ScheduleName>,
        limit: usize,
    ) -> Result<Vec<StoredSchedule>, ScheduleError> {
        Ok(self.store.list_schedules(after, limit).await?)
    }

    /// A schedule's ledger, newest first, before entry `before`.
    pub async fn occurrences(
        &self,
        key: &ScheduleKey,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<OccurrenceEntry>, ScheduleError> {
        let stored = self
            .store
            .get_schedule(key)
            .await?
            .ok_or_else(|| ScheduleError::NotFound(key_text(key)))?;
        Ok(self
            .store
            .list_occurrences(stored.id, before, limit)
            .await?)
    }

    /// Reads the schedule, makes the write `change` returns, and applies it; again if it was
    /// stale.
    async fn change(
        &self,
        key: &ScheduleKey,
        mut change: impl FnMut(&StoredSchedule, Timestamp) -> Result<ScheduleWrite, ScheduleError>,
    ) -> Result<(StoredSchedule, ()), ScheduleError> {
        for _ in 0..STALE_RETRIES_MAX {
            let stored = self
                .store
                .get_schedule(key)
                .await?
                .ok_or_else(|| ScheduleError::NotFound(key_text(key)))?;
            let now = self.clock.now();
            let write = change(&stored, now)?;
            let schedule = write.schedule.clone();
            if self.write_one(write, now).await? == WriteOutcome::Applied {
                return Ok((schedule, ()));
            }
        }
        Err(ScheduleError::Contended(key_text(key)))
    }

    async fn write_one(
        &self,
        write: ScheduleWrite,
        now: Timestamp,
    ) -> Result<WriteOutcome, ScheduleError> {
        let outcomes = self.store.write_schedules(None, vec![write], now).await?;
        Ok(outcomes.first().copied().unwrap_or(WriteOutcome::Stale))
    }
}

fn key_text(key: &ScheduleKey) -> String {
    match key {
        ScheduleKey::Id(id) => id.to_string(),
        ScheduleKey::Name(name) => name.to_string(),
    }
}

/// The write that gives `stored` the definition `definition` at `now`: its cursor is kept (so
/// no occurrence already decided is decided again), a failure is cleared, and the leader looks
/// at it at once.
fn updated(
    stored: StoredSchedule,
    definition: ScheduleDefinition,
    now: Timestamp,
) -> ScheduleWrite {
    let expected = stored.version;
    let mut schedule = stored;
    schedule.definition = definition;
    schedule.version += 1;
    schedule.updated_at = now;
    schedule.cursor = ScheduleCursor {
        next_check: Some(now),
        last_error: None,
        ..schedule.cursor
    };
    ScheduleWrite::of(schedule, Some(expected))
}

/// The leader duty: every `Config::schedule_tick`, plans the schedules due by then and writes
/// the plans under this node's term. Jobs are inserted `Config::schedule_ahead` before their
/// time, and the dispatcher is woken for them.
pub(crate) async fn materialize(inner: Arc<Inner>) {
    while tick(&inner, inner.config.schedule_tick).await {
        let Some(term) = inner.leader_term() else {
            continue;
        };
        // Passes until no schedule is due, so a burst of schedules due together is written in
        // one tick's worth of batches.
        loop {
            let now = inner.clock.now();
            let due = match inner
                .store
                .due_schedules(now, limits::SCHEDULE_BATCH_MAX)
                .await
            {
                Ok(due) => due,
                Err(error) => {
                    duty_failed(&inner, "due_schedules", error);
                    break;
                }
            };
            if due.is_empty() {
                break;
            }
            let full = due.len() == limits::SCHEDULE_BATCH_MAX;
            let mut writes = Vec::with_capacity(due.len());
            let mut summaries = Vec::with_capacity(due.len());
            let mut earliest: Option<Timestamp> = None;
            for each in &due {
                let (write, summary) = plan::plan(now, inner.config.schedule_ahead, each);
                for job in &write.jobs {
                    earliest = Some(earliest.map_or(job.run_at, |at| at.min(job.run_at)));
                }
                summaries.push((each.schedule.definition.name.clone(), summary));
                writes.push(write);
            }
            // In calls within the store's row limit (a plan after a long outage may hold many).
            let mut failed = false;
            let mut planned = writes.into_iter().zip(summaries).peekable();
            while planned.peek().is_some() {
                let mut rows = 0;
                let mut chunk = Vec::new();
                while let Some((write, _)) = planned.peek() {
                    if !chunk.is_empty() && rows + write.rows() > limits::SCHEDULE_CALL_ROWS_MAX {
                        break;
                    }
                    rows += write.rows();
                    chunk.extend(planned.next());
                }
                let (chunk, summaries): (Vec<ScheduleWrite>, Vec<_>) = chunk.into_iter().unzip();
                match inner.store.write_schedules(Some(term), chunk, now).await {
                    Ok(outcomes) => {
                        for ((name, summary), outcome) in summaries.into_iter().zip(outcomes) {
                            if outcome == WriteOutcome::Applied && !is_quiet(&summary) {
                                inner.emit(Event::Occurrences { name, summary });
                            }
                        }
                    }
                    Err(error) => {
                        duty_failed(&inner, "write_schedules", error);
                        failed = true;
                        break;
                    }
                }
            }
            if let Some(at) = earliest {
                inner.wake_for(at);
            }
            if failed {
                break;
            }
            if !full {
                break;
            }
        }
    }
}

fn is_quiet(summary: &PlanSummary) -> bool {
    summary.fired == 0 && summary.skipped.is_empty() && !summary.failed
}
