//! Schedules as data: a recurring job with an identity, its policies, its cursor and its
//! occurrence ledger.
//!
//! A *schedule* (`StoredSchedule`) is a stored object with an id and a unique name. Its
//! `ScheduleDefinition` says when (a `Schedule`: cron in a zone, or an interval; a start, an
//! end, a jitter), what (a `JobTemplate`) and by which policies (`Misfire`, `OverlapPolicy`).
//! Its `ScheduleCursor` says how far its occurrences have been decided: the *high-water mark*,
//! advanced in the same store transaction that inserts an occurrence's job and writes its
//! `OccurrenceEntry` in the ledger, so that no occurrence is lost or fired twice whatever
//! crashes or changes of leader happen between two occurrences.
//!
//! The decisions (which occurrence fires, which is skipped and why) are one plain function,
//! `plan::plan`; the stores only keep rows (`ScheduleWrite` is all a store writes, under an
//! optimistic check of `StoredSchedule::version`), and the engine's leader runs the plan.
//!
//! Must not do I/O.

pub mod codec;
pub mod explain;
pub mod plan;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::job::{JobId, Kind, NewJob, Payload, Priority, Queue, ScheduleName, ValidationError};
use crate::limits;
use crate::retry::RetryPolicy;
use crate::schedule::Schedule;
use crate::state::JobState;
use crate::time::Timestamp;

/// A schedule's id: a UUIDv7, made when the schedule is created and kept for its life.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScheduleId(uuid::Uuid);

impl ScheduleId {
    pub fn generate(now: Timestamp) -> ScheduleId {
        ScheduleId(uuid::Uuid::from_u128(JobId::generate(now).as_u128()))
    }

    pub const fn from_bytes(bytes: [u8; 16]) -> ScheduleId {
        ScheduleId(uuid::Uuid::from_bytes(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }

    /// The job id of this schedule's occurrence at `at` (`JobId::for_occurrence`).
    pub fn occurrence_job(&self, at: Timestamp) -> JobId {
        JobId::for_occurrence(self.as_u128(), at)
    }
}

impl fmt::Debug for ScheduleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ScheduleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for ScheduleId {
    type Err = ValidationError;
    fn from_str(text: &str) -> Result<ScheduleId, ValidationError> {
        uuid::Uuid::parse_str(text)
            .map(ScheduleId)
            .map_err(|_| ValidationError::BadScheduleId(text.to_owned()))
    }
}

/// The job each occurrence makes: everything of a `NewJob` but its id and time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobTemplate {
    pub queue: Queue,
    pub kind: Kind,
    pub payload: Payload,
    pub priority: Priority,
    pub attempt_max: u32,
    pub retry: RetryPolicy,
}

impl JobTemplate {
    pub fn new(kind: Kind, payload: Payload) -> JobTemplate {
        JobTemplate {
            queue: Queue::default(),
            kind,
            payload,
            priority: Priority::default(),
            attempt_max: crate::JobOptions::ATTEMPT_MAX_DEFAULT,
            retry: RetryPolicy::default(),
        }
    }

    /// The job of an occurrence: id `id`, due at `run_at`.
    pub fn job(&self, id: JobId, run_at: Timestamp) -> NewJob {
        NewJob {
            id,
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            payload: self.payload.clone(),
            run_at,
            schedule: None,
            attempt_max: self.attempt_max,
            retry: self.retry,
            priority: self.priority,
        }
    }
}

/// What to do with the occurrences missed while nothing ran (every node down, the store
/// unreachable, the leader gone): those found more than `grace` after their time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MisfireAction {
    /// Skip every missed occurrence.
    Skip,
    /// Fire the latest missed occurrence, skip the others.
    Latest,
    /// Fire each missed occurrence, oldest first, at most this many; skip the rest.
    All { limit: u32 },
}

/// A schedule's misfire policy: an occurrence found up to `grace` after its time fires (late);
/// one found later is *missed*: it fires or is skipped as `action` says, and one older than
/// `catch_up_window` is skipped whatever `action` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Misfire {
    pub action: MisfireAction,
    pub grace: Duration,
    pub catch_up_window: Duration,
}

impl Default for Misfire {
    /// Fire the latest missed occurrence of the last day; 60 s of grace (Quartz's threshold).
    fn default() -> Misfire {
        Misfire {
            action: MisfireAction::Latest,
            grace: Duration::from_secs(60),
            catch_up_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// What to do with an occurrence that falls due while the job of the previous one has not
/// finished (pending, running or retrying).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OverlapPolicy {
    /// Fire it anyway: the two may run side by side.
    #[default]
    Allow,
    /// Skip it.
    Skip,
    /// Keep it (one at most; a further one is skipped) and fire it when the previous finishes.
    BufferOne,
    /// Cancel the previous job, then fire it.
    CancelPrevious,
}

impl OverlapPolicy {
    pub const ALL: [OverlapPolicy; 4] = [
        OverlapPolicy::Allow,
        OverlapPolicy::Skip,
        OverlapPolicy::BufferOne,
        OverlapPolicy::CancelPrevious,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Allow => "allow",
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::BufferOne => "buffer_one",
            OverlapPolicy::CancelPrevious => "cancel_previous",
        }
    }

    pub fn parse(text: &str) -> Result<OverlapPolicy, ValidationError> {
        OverlapPolicy::ALL
            .into_iter()
            .find(|policy| policy.as_str() == text)
            .ok_or_else(|| ValidationError::BadPolicy {
                field: "overlap",
                value: text.to_owned(),
                expected: "allow, skip, buffer_one or cancel_previous",
            })
    }
}

/// Everything a schedule's owner says about it. Made by `ScheduleDefinition::new`, which
/// checks the fields against each other; the fields are public for reading and for building a
/// changed copy, which `validate` checks again before a store writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleDefinition {
    pub name: ScheduleName,
    pub recurrence: Schedule,
    /// No occurrence before this instant.
    pub start_at: Option<Timestamp>,
    /// No occurrence after this instant: the schedule is finished then.
    pub end_at: Option<Timestamp>,
    /// Each occurrence's job runs up to this long after the occurrence (a fixed delay derived
    /// from the occurrence, so that many schedules on the same minute spread out).
    pub jitter: Duration,
    pub template: JobTemplate,
    pub misfire: Misfire,
    pub overlap: OverlapPolicy,
}

impl ScheduleDefinition {
    pub fn new(
        name: ScheduleName,
        recurrence: Schedule,
        template: JobTemplate,
    ) -> ScheduleDefinition {
        ScheduleDefinition {
            name,
            recurrence,
            start_at: None,
            end_at: None,
            jitter: Duration::ZERO,
            template,
            misfire: Misfire::default(),
            overlap: OverlapPolicy::default(),
        }
    }

    /// Checks what the field types do not: the window, the jitter, the policies' durations, the
    /// template's attempts.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let (Some(start), Some(end)) = (self.start_at, self.end_at)
            && end <= start
        {
            return Err(ValidationError::BadWindow { start, end });
        }
        if self.jitter > limits::SCHEDULE_JITTER_MAX {
            return Err(ValidationError::DurationOutOfRange {
                field: "jitter",
                ms: self.jitter.as_millis(),
                max_ms: limits::SCHEDULE_JITTER_MAX.as_millis(),
            });
        }
        if let Some(interval) = self.recurrence.interval_duration()
            && !self.jitter.is_zero()
            && self.jitter >= interval
        {
            return Err(ValidationError::DurationOutOfRange {
                field: "jitter",
                ms: self.jitter.as_millis(),
                max_ms: interval.as_millis().saturating_sub(1),
            });
        }
        for (field, value) in [
            ("misfire grace", self.misfire.grace),
            ("catch-up window", self.misfire.catch_up_window),
        ] {
            if value > limits::CATCH_UP_WINDOW_MAX {
                return Err(ValidationError::DurationOutOfRange {
                    field,
                    ms: value.as_millis(),
                    max_ms: limits::CATCH_UP_WINDOW_MAX.as_millis(),
                });
            }
        }
        if let MisfireAction::All { limit } = self.misfire.action
            && (limit == 0 || limit > limits::CATCH_UP_LIMIT_MAX)
        {
            return Err(ValidationError::CatchUpLimitOutOfRange {
                got: limit,
                limit: limits::CATCH_UP_LIMIT_MAX,
            });
        }
        let attempts = self.template.attempt_max;
        if attempts == 0 || attempts > limits::ATTEMPT_MAX_LIMIT {
            return Err(ValidationError::AttemptMaxOutOfRange {
                got: attempts,
                limit: limits::ATTEMPT_MAX_LIMIT,
            });
        }
        Ok(())
    }

    /// The delay of the occurrence at `at` within `jitter`: derived from the schedule and the
    /// occurrence, so every node (and every retry of a plan) picks the same one.
    pub fn jitter_for(&self, id: ScheduleId, at: Timestamp) -> Duration {
        let micros = u64::try_from(self.jitter.as_micros()).unwrap_or(u64::MAX);
        if micros == 0 {
            return Duration::ZERO;
        }
        let spread = id.occurrence_job(at).as_u128() as u64;
        Duration::from_micros(spread % micros)
    }
}

/// How far a schedule's occurrences have been decided, and what it needs to decide the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleCursor {
    /// Every occurrence at or before this instant has been decided (fired or skipped); the
    /// next is the recurrence's first event after it.
    pub high_water: Timestamp,
    /// When the leader should look at this schedule again; `None` when it will never fire
    /// again (past its end, or failed: see `last_error`).
    pub next_check: Option<Timestamp>,
    /// The job of the last occurrence fired (or triggered), for the overlap policy.
    pub last_job: Option<JobId>,
    /// An occurrence held by `OverlapPolicy::BufferOne` until the last job finishes.
    pub buffered: Option<Timestamp>,
    /// Occurrences fired and skipped since the schedule was created.
    pub fired: u64,
    pub skipped: u64,
    /// Why the schedule cannot go on, when it cannot (its next occurrence could not be
    /// computed). Cleared by an update.
    pub last_error: Option<String>,
}

impl ScheduleCursor {
    /// The cursor of a schedule created at `now`: its first occurrence is the first after
    /// `now` (or after its start), looked at at once.
    pub fn start(definition: &ScheduleDefinition, now: Timestamp) -> ScheduleCursor {
        let from = match definition.start_at {
            Some(start) if start > now => start.sub(Duration::from_micros(1)),
            _ => now,
        };
        ScheduleCursor {
            high_water: from,
            next_check: Some(now),
            last_job: None,
            buffered: None,
            fired: 0,
            skipped: 0,
            last_error: None,
        }
    }
}

/// What a schedule is doing, as a person would ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleStatus {
    Active,
    Paused,
    /// Past its end: it will not fire again.
    Finished,
    /// Its next occurrence could not be computed (`ScheduleCursor::last_error`).
    Failed,
}

impl ScheduleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleStatus::Active => "active",
            ScheduleStatus::Paused => "paused",
            ScheduleStatus::Finished => "finished",
            ScheduleStatus::Failed => "failed",
        }
    }
}

/// A schedule as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSchedule {
    pub id: ScheduleId,
    pub definition: ScheduleDefinition,
    pub paused: bool,
    /// One more on every write; a write names the version it read (`ScheduleWrite`), so two
    /// writers never both apply a change made from the same reading.
    pub version: u64,
    pub cursor: ScheduleCursor,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl StoredSchedule {
    /// A new schedule, created at `now`.
    pub fn create(definition: ScheduleDefinition, now: Timestamp) -> StoredSchedule {
        let cursor = ScheduleCursor::start(&definition, now);
        StoredSchedule {
            id: ScheduleId::generate(now),
            definition,
            paused: false,
            version: 1,
            cursor,
            created_at: now,
            updated_at: now,
        }
    }

    pub fn status(&self) -> ScheduleStatus {
        if self.cursor.last_error.is_some() {
            ScheduleStatus::Failed
        } else if self.cursor.next_check.is_none() {
            ScheduleStatus::Finished
        } else if self.paused {
            ScheduleStatus::Paused
        } else {
            ScheduleStatus::Active
        }
    }

    /// The schedule's next occurrence after its high-water mark (what `explain` would show
    /// first), or `None`.
    pub fn next_occurrence(&self) -> Option<Timestamp> {
        self.cursor.next_check?;
        let next = self
            .definition
            .recurrence
            .next_after(self.cursor.high_water)?;
        match self.definition.end_at {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }
}

/// Why an occurrence did not fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Missed while nothing ran, and the misfire policy (or its window) skipped it.
    Misfire,
    /// Due while the previous occurrence's job had not finished, under `OverlapPolicy::Skip`
    /// (or `BufferOne` with one already buffered).
    Overlap,
    /// Due while the schedule was paused.
    Paused,
    /// Before the schedule's start (moved later by an update).
    OutsideWindow,
    /// Its local time was skipped by a clock change of three hours or more.
    ClockChange,
}

impl SkipReason {
    pub const ALL: [SkipReason; 5] = [
        SkipReason::Misfire,
        SkipReason::Overlap,
        SkipReason::Paused,
        SkipReason::OutsideWindow,
        SkipReason::ClockChange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Misfire => "misfire",
            SkipReason::Overlap => "overlap",
            SkipReason::Paused => "paused",
            SkipReason::OutsideWindow => "outside_window",
            SkipReason::ClockChange => "clock_change",
        }
    }
}

/// What became of one due occurrence (or of a run of them, for skips).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OccurrenceOutcome {
    /// Its job was inserted: `job`, `late` after the occurrence's time (zero when it was
    /// inserted ahead of time). `manual` for a trigger, `moved` when a clock change moved it.
    Fired {
        job: JobId,
        late: Duration,
        manual: bool,
        moved: bool,
    },
    /// It did not fire, nor did the `count - 1` further occurrences up to `last_at` that were
    /// skipped for the same reason right after it (a run of skips is one entry).
    Skipped {
        reason: SkipReason,
        count: u64,
        last_at: Timestamp,
    },
    /// The schedule's next occurrence could not be computed; the schedule stopped here.
    Failed { error: String },
}

/// One entry of a schedule's occurrence ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OccurrenceEntry {
    /// Assigned by the store, increasing; 0 in an entry not yet stored.
    pub seq: u64,
    pub schedule: ScheduleId,
    /// The occurrence's instant (the first of a run of skips).
    pub at: Timestamp,
    pub outcome: OccurrenceOutcome,
    pub recorded_at: Timestamp,
}

impl OccurrenceEntry {
    /// The occurrence's stable id: the schedule and the occurrence's instant.
    pub fn occurrence_id(&self) -> String {
        format!("{}@{}", self.schedule, self.at.to_rfc3339_exact())
    }
}

/// A run of skips already in the ledger, grown by a write: its last occurrence and its count
/// (the whole run's, at least 1). The store sets the entry's `recorded_at` to the write's `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerExtend {
    pub seq: u64,
    pub last_at: Timestamp,
    pub count: u64,
}

/// Everything one write of a schedule changes, in one transaction: the schedule itself (its
/// new version), the jobs of fired occurrences, the ledger, and the previous job cancelled by
/// `OverlapPolicy::CancelPrevious`. The write applies only if the stored schedule still has
/// `expected_version` (`None`: only if no schedule has this id or name); otherwise nothing is
/// changed and the write is `Stale`.
#[derive(Clone, Debug)]
pub struct ScheduleWrite {
    pub schedule: StoredSchedule,
    pub expected_version: Option<u64>,
    pub jobs: Vec<NewJob>,
    pub append: Vec<OccurrenceEntry>,
    pub extend: Option<LedgerExtend>,
    pub cancel: Option<JobId>,
}

impl ScheduleWrite {
    /// A write of `schedule` alone (create, update, pause, resume).
    pub fn of(schedule: StoredSchedule, expected_version: Option<u64>) -> ScheduleWrite {
        ScheduleWrite {
            schedule,
            expected_version,
            jobs: Vec::new(),
            append: Vec::new(),
            extend: None,
            cancel: None,
        }
    }

    /// Checks what a store must not write: a definition that fails `validate`, a version that
    /// does not follow the expected one, jobs and entries beyond the limits.
    pub fn validate(&self, now: Timestamp) -> Result<(), ValidationError> {
        self.schedule.definition.validate()?;
        let expected_next = self.expected_version.map_or(1, |version| version + 1);
        if self.schedule.version != expected_next {
            return Err(ValidationError::BadScheduleVersion {
                got: self.schedule.version,
                expected: expected_next,
            });
        }
        if self.jobs.len() > limits::SCHEDULE_WRITE_ROWS_MAX
            || self.append.len() > limits::SCHEDULE_WRITE_ROWS_MAX
        {
            return Err(ValidationError::TooMany {
                field: "rows of a schedule write",
                count: self.jobs.len().max(self.append.len()),
                limit: limits::SCHEDULE_WRITE_ROWS_MAX,
            });
        }
        let empty_run = self.append.iter().any(|entry| {
            matches!(entry.outcome, OccurrenceOutcome::Skipped { count: 0, .. })
                || entry.schedule != self.schedule.id
        }) || self.extend.is_some_and(|extend| extend.count == 0);
        if empty_run {
            return Err(ValidationError::BadLedgerEntry);
        }
        for job in &self.jobs {
            job.validate(now)?;
        }
        Ok(())
    }
}

impl ScheduleWrite {
    /// The rows it inserts: its jobs and its new ledger entries.
    pub fn rows(&self) -> usize {
        self.jobs.len() + self.append.len()
    }
}

/// Whether a `ScheduleWrite` applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Applied,
    /// The schedule changed since it was read (or, for a create, one with its name or id
    /// exists; or, for an update, it was deleted): nothing was written.
    Stale,
}

/// A schedule due for a look, with what a plan needs besides it.
#[derive(Clone, Debug)]
pub struct DueSchedule {
    pub schedule: StoredSchedule,
    /// The state of `cursor.last_job`, if that job is still stored.
    pub last_job_state: Option<JobState>,
    /// The schedule's latest ledger entry, which a run of skips may grow.
    pub last_entry: Option<OccurrenceEntry>,
}

/// How to find one schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleKey {
    Id(ScheduleId),
    Name(ScheduleName),
}

impl ScheduleKey {
    /// An id if `text` is a UUID, else a name.
    pub fn parse(text: &str) -> Result<ScheduleKey, ValidationError> {
        match text.parse::<ScheduleId>() {
            Ok(id) => Ok(ScheduleKey::Id(id)),
            Err(_) => ScheduleName::new(text).map(ScheduleKey::Name),
        }
    }
}
