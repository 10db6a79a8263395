//! The job (the brief's Job): what runs, when, with what data, and where it stands.
//!
//! Every name and value here is validated on construction. `NewJob`'s fields are public, so the
//! few checks its field types cannot carry (`run_at`, `attempt_max`) live in `NewJob::validate`,
//! which its constructors and every store's `insert` call.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::limits;
use crate::retry::RetryPolicy;
use crate::schedule::Schedule;
use crate::state::JobState;
use crate::time::Timestamp;

/// Why an input was refused. Each variant names the field and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is {bytes} bytes; the limit is {limit}")]
    TooLong {
        field: &'static str,
        bytes: usize,
        limit: usize,
    },
    #[error("{field} may hold only letters, digits and . _ - : / (got {value:?})")]
    BadCharacters { field: &'static str, value: String },
    #[error("payload is not valid JSON: {0}")]
    PayloadNotJson(String),
    #[error("payload is {bytes} bytes; the limit is {limit}")]
    PayloadTooLarge { bytes: usize, limit: usize },
    #[error("invalid cron expression {expression:?}: {reason}")]
    InvalidCron { expression: String, reason: String },
    #[error("unknown time zone {0:?} (expected an IANA name such as Europe/Berlin)")]
    UnknownTimeZone(String),
    #[error("interval {interval_ms} ms is outside {min_ms} ms ..= {max_ms} ms")]
    IntervalOutOfRange {
        interval_ms: u128,
        min_ms: u128,
        max_ms: u128,
    },
    #[error("run_at {run_at} is outside the accepted range {earliest} ..= {latest}")]
    RunAtOutOfRange {
        run_at: Timestamp,
        earliest: Timestamp,
        latest: Timestamp,
    },
    #[error("attempt_max {got} is outside 1 ..= {limit}")]
    AttemptMaxOutOfRange { got: u32, limit: u32 },
    #[error("priority {got} is outside 0 ..= {limit}")]
    PriorityOutOfRange { got: u8, limit: u8 },
    #[error("retry policy: {0}")]
    RetryPolicy(&'static str),
    #[error("the schedule has no occurrence after {0}")]
    NoNextOccurrence(Timestamp),
    #[error("invalid job id {0:?}")]
    BadJobId(String),
    #[error("{field}: {count} items; the limit is {limit}")]
    TooMany {
        field: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("invalid schedule id {0:?}")]
    BadScheduleId(String),
    #[error("{field} must be one of {expected} (got {value:?})")]
    BadPolicy {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("the schedule's end {end} is not after its start {start}")]
    BadWindow { start: Timestamp, end: Timestamp },
    #[error("{field} is {ms} ms; the limit is {max_ms} ms")]
    DurationOutOfRange {
        field: &'static str,
        ms: u128,
        max_ms: u128,
    },
    #[error("catch-up limit {got} is outside 1 ..= {limit}")]
    CatchUpLimitOutOfRange { got: u32, limit: u32 },
    #[error("a ledger entry names another schedule, or a run of skips counts none")]
    BadLedgerEntry,
    #[error("schedule version {got} does not follow the version read; expected {expected}")]
    BadScheduleVersion { got: u64, expected: u64 },
}

fn validate_name(field: &'static str, value: &str, limit: usize) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if value.len() > limit {
        return Err(ValidationError::TooLong {
            field,
            bytes: value.len(),
            limit,
        });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/');
    if !value.chars().all(allowed) {
        return Err(ValidationError::BadCharacters {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident, $field:literal, $limit:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(value: &str) -> Result<$name, ValidationError> {
                validate_name($field, value, $limit)?;
                Ok($name(Arc::from(value)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(value: &str) -> Result<$name, ValidationError> {
                $name::new(value)
            }
        }
    };
}

name_type!(
    /// A named lane of jobs (default `default`); workers may serve some queues and not others.
    Queue, "queue", limits::NAME_BYTES_MAX
);
name_type!(
    /// The name of the handler that runs a job.
    Kind, "kind", limits::NAME_BYTES_MAX
);
name_type!(
    /// The name of a node (a process running the engine), recorded as a lease's holder.
    NodeId, "node", limits::NODE_BYTES_MAX
);
name_type!(
    /// A schedule's unique name: a key its owner chooses, so that a deploy can upsert its
    /// schedules by name and get the same schedules, with their history, every time.
    ScheduleName, "schedule name", limits::NAME_BYTES_MAX
);

impl Default for Queue {
    fn default() -> Queue {
        Queue(Arc::from("default"))
    }
}

/// A job's unique id: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(uuid::Uuid);

impl JobId {
    /// A new id whose time part is `now`, the rest random.
    pub fn generate(now: Timestamp) -> JobId {
        let millis = u64::try_from(now.as_millis()).unwrap_or(0);
        let timestamp = uuid::Timestamp::from_unix(
            uuid::NoContext,
            millis / 1_000,
            u32::try_from((millis % 1_000) * 1_000_000).unwrap_or(0),
        );
        JobId(uuid::Uuid::new_v7(timestamp))
    }

    pub const fn from_bytes(bytes: [u8; 16]) -> JobId {
        JobId(uuid::Uuid::from_bytes(bytes))
    }

    /// The id of the occurrence that follows `self`, stored at `now`: time-ordered like any id,
    /// and derived from `self` so that every store computes the same one (the model test
    /// compares stores) and a repeated insert of it is a duplicate, never a second occurrence.
    pub fn successor(&self, now: Timestamp) -> JobId {
        let millis = u64::try_from(now.as_millis()).unwrap_or(0) & 0xFFFF_FFFF_FFFF;
        let mut bits = self.as_u128();
        // SplitMix64's finaliser over both halves: a cheap, well-spread deterministic hash.
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let high = mix((bits >> 64) as u64 ^ 0x9E37_79B9_7F4A_7C15);
        let low = mix(bits as u64 ^ high);
        bits = (u128::from(high) << 64) | u128::from(low);
        let random = bits & ((1u128 << 74) - 1);
        // Layout of a UUIDv7: 48 bits of milliseconds, version 7, 12 random bits, variant 10,
        // 62 random bits.
        let value = (u128::from(millis) << 80)
            | (0x7u128 << 76)
            | ((random >> 62) << 64)
            | (0b10u128 << 62)
            | (random & ((1u128 << 62) - 1));
        JobId(uuid::Uuid::from_u128(value))
    }

    /// The id of the job of one occurrence of a schedule: derived from the schedule's id and
    /// the occurrence's instant only, so the same occurrence always makes the same job id and a
    /// second insert of it is a `Duplicate`, never a second run. Time-ordered by the occurrence.
    pub fn for_occurrence(schedule: u128, at: Timestamp) -> JobId {
        let seed = JobId(uuid::Uuid::from_u128(
            schedule ^ (u128::from(at.as_micros() as u64) << 17),
        ));
        seed.successor(at)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for JobId {
    type Err = ValidationError;
    fn from_str(text: &str) -> Result<JobId, ValidationError> {
        uuid::Uuid::parse_str(text)
            .map(JobId)
            .map_err(|_| ValidationError::BadJobId(text.to_owned()))
    }
}

/// A job's data: JSON text, checked to parse and to fit `limits::PAYLOAD_BYTES_MAX`.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload(Arc<str>);

impl Payload {
    pub fn from_json_text(text: &str) -> Result<Payload, ValidationError> {
        if text.len() > limits::PAYLOAD_BYTES_MAX {
            return Err(ValidationError::PayloadTooLarge {
                bytes: text.len(),
                limit: limits::PAYLOAD_BYTES_MAX,
            });
        }
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|error| ValidationError::PayloadNotJson(error.to_string()))?;
        Ok(Payload(Arc::from(text)))
    }

    pub fn from_value(value: &serde_json::Value) -> Result<Payload, ValidationError> {
        Payload::from_json_text(&value.to_string())
    }

    /// The JSON `null`, for jobs that need no data.
    pub fn null() -> Payload {
        Payload(Arc::from("null"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn to_value(&self) -> serde_json::Value {
        // The text was checked to be JSON when this payload was made.
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl Default for Payload {
    fn default() -> Payload {
        Payload::null()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How urgent a job is among those due: 0 is the most urgent, `Priority::LOWEST` the least.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    pub const HIGHEST: Priority = Priority(0);
    pub const LOWEST: Priority = Priority(9);

    pub fn new(value: u8) -> Result<Priority, ValidationError> {
        if value > Priority::LOWEST.0 {
            return Err(ValidationError::PriorityOutOfRange {
                got: value,
                limit: Priority::LOWEST.0,
            });
        }
        Ok(Priority(value))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// Identifies one claim of one job. Each claim of a job gets a larger token than the one before,
/// so a token never repeats for that job, and a holder whose lease was lost holds a stale one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseToken(pub u64);

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The lease on a running job: who holds it, with which token, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: NodeId,
    pub token: LeaseToken,
    pub expires_at: Timestamp,
}

/// A stored job, as a store returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub queue: Queue,
    pub kind: Kind,
    pub payload: Payload,
    /// When the job (or its next attempt) is due.
    pub run_at: Timestamp,
    /// Present for recurring jobs: each occurrence is a job, and claiming one stores the next.
    pub schedule: Option<Schedule>,
    pub state: JobState,
    /// Attempts begun so far; counted when a job is claimed.
    pub attempt: u32,
    pub attempt_max: u32,
    pub retry: RetryPolicy,
    pub priority: Priority,
    pub created_at: Timestamp,
    /// When the latest attempt was claimed.
    pub started_at: Option<Timestamp>,
    /// When the job reached a final state.
    pub finished_at: Option<Timestamp>,
    pub last_error: Option<String>,
    /// The latest token issued for this job (0 if never claimed).
    pub lease_token: LeaseToken,
    /// The current lease; present exactly when the job is running.
    pub lease: Option<Lease>,
}

/// Options for a new job. Values are checked by `NewJob::new`.
#[derive(Clone, Debug, Default)]
pub struct JobOptions {
    pub queue: Option<Queue>,
    pub priority: Option<Priority>,
    pub attempt_max: Option<u32>,
    pub retry: Option<RetryPolicy>,
    pub schedule: Option<Schedule>,
    /// Use this id instead of a fresh one (to make a schedule request idempotent).
    pub id: Option<JobId>,
}

impl JobOptions {
    pub const ATTEMPT_MAX_DEFAULT: u32 = 20;

    pub fn queue(mut self, queue: Queue) -> JobOptions {
        self.queue = Some(queue);
        self
    }
    pub fn priority(mut self, priority: Priority) -> JobOptions {
        self.priority = Some(priority);
        self
    }
    pub fn attempt_max(mut self, attempt_max: u32) -> JobOptions {
        self.attempt_max = Some(attempt_max);
        self
    }
    pub fn retry(mut self, retry: RetryPolicy) -> JobOptions {
        self.retry = Some(retry);
        self
    }
    pub fn schedule(mut self, schedule: Schedule) -> JobOptions {
        self.schedule = Some(schedule);
        self
    }
    pub fn id(mut self, id: JobId) -> JobOptions {
        self.id = Some(id);
        self
    }
}

/// A job ready to insert. `NewJob::new` and `NewJob::recurring` validate it; a job made as a
/// struct literal is checked by `NewJob::validate` when a store inserts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    pub id: JobId,
    pub queue: Queue,
    pub kind: Kind,
    pub payload: Payload,
    pub run_at: Timestamp,
    pub schedule: Option<Schedule>,
    pub attempt_max: u32,
    pub retry: RetryPolicy,
    pub priority: Priority,
}

impl NewJob {
    /// Validates a new job due at `run_at`, judged against `now`.
    pub fn new(
        kind: Kind,
        payload: Payload,
        run_at: Timestamp,
        options: JobOptions,
        now: Timestamp,
    ) -> Result<NewJob, ValidationError> {
        let job = NewJob {
            id: options.id.unwrap_or_else(|| JobId::generate(now)),
            queue: options.queue.unwrap_or_default(),
            kind,
            payload,
            run_at,
            schedule: options.schedule,
            attempt_max: options
                .attempt_max
                .unwrap_or(JobOptions::ATTEMPT_MAX_DEFAULT),
            retry: options.retry.unwrap_or_default(),
            priority: options.priority.unwrap_or_default(),
        };
        job.validate(now)?;
        Ok(job)
    }

    /// Checks the fields whose type does not make them valid: `run_at` within the sane range
    /// around `now` (`check_run_at`) and `attempt_max` within `1 ..= limits::ATTEMPT_MAX_LIMIT`.
    /// Names, payload, priority, retry policy and schedule are valid by construction.
    ///
    /// `NewJob::new` calls it, and so does every store's `insert` for each job of a batch: the
    /// fields are public, so a struct literal can skip `new`, and a store must not write a job it
    /// could not run (an `attempt_max` of 0 makes a job dead before its first attempt).
    pub fn validate(&self, now: Timestamp) -> Result<(), ValidationError> {
        check_run_at(self.run_at, now)?;
        if self.attempt_max == 0 || self.attempt_max > limits::ATTEMPT_MAX_LIMIT {
            return Err(ValidationError::AttemptMaxOutOfRange {
                got: self.attempt_max,
                limit: limits::ATTEMPT_MAX_LIMIT,
            });
        }
        Ok(())
    }

    /// A recurring job whose first occurrence is the schedule's next one after `now`.
    pub fn recurring(
        kind: Kind,
        payload: Payload,
        schedule: Schedule,
        options: JobOptions,
        now: Timestamp,
    ) -> Result<NewJob, ValidationError> {
        let run_at = schedule
            .next_after(now)
            .ok_or(ValidationError::NoNextOccurrence(now))?;
        NewJob::new(kind, payload, run_at, options.schedule(schedule), now)
    }

    /// The job as it is stored at `now`, before any claim.
    pub fn into_job(self, now: Timestamp) -> Job {
        Job {
            id: self.id,
            queue: self.queue,
            kind: self.kind,
            payload: self.payload,
            run_at: self.run_at,
            schedule: self.schedule,
            state: JobState::Scheduled,
            attempt: 0,
            attempt_max: self.attempt_max,
            retry: self.retry,
            priority: self.priority,
            created_at: now,
            started_at: None,
            finished_at: None,
            last_error: None,
            lease_token: LeaseToken(0),
            lease: None,
        }
    }
}

impl Job {
    /// The next occurrence of a recurring job, to be stored when this occurrence is first claimed.
    ///
    /// Missed occurrences are not replayed: after downtime the job runs once, then resumes its
    /// schedule from `now` (the "fire once" misfire policy of Quartz).
    pub fn next_occurrence(&self, now: Timestamp) -> Option<NewJob> {
        let schedule = self.schedule.as_ref()?;
        let run_at = schedule.next_after(self.run_at.max(now))?;
        Some(NewJob {
            id: self.id.successor(now),
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            payload: self.payload.clone(),
            run_at,
            schedule: Some(schedule.clone()),
            attempt_max: self.attempt_max,
            retry: self.retry,
            priority: self.priority,
        })
    }

    /// True when this job may be claimed at `due_by`.
    pub fn is_claimable(&self, due_by: Timestamp) -> bool {
        self.state.is_pending() && self.run_at <= due_by
    }
}

/// Checks that `run_at` lies within the sane range around `now`.
pub fn check_run_at(run_at: Timestamp, now: Timestamp) -> Result<(), ValidationError> {
    let earliest = now.sub(limits::RUN_AT_PAST_MAX);
    let latest = now.add(limits::RUN_AT_FUTURE_MAX);
    if run_at < earliest || run_at > latest {
        return Err(ValidationError::RunAtOutOfRange {
            run_at,
            earliest,
            latest,
        });
    }
    Ok(())
}

/// Makes a handler's error message storable: each NUL character becomes U+FFFD (PostgreSQL's
/// `text` cannot hold NUL, and every store must keep the same text), then the message is
/// truncated to `limits::ERROR_BYTES_MAX` on a character boundary.
pub fn truncate_error(message: &str) -> String {
    let message = if message.contains('\0') {
        Cow::Owned(message.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(message)
    };
    if message.len() <= limits::ERROR_BYTES_MAX {
        return message.into_owned();
    }
    let mut end = limits::ERROR_BYTES_MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NOW: Timestamp = Timestamp::from_millis(1_764_400_000_000);

    fn kind() -> Kind {
        Kind::new("send_email").expect("valid")
    }

    #[test]
    fn names_are_checked() {
        assert!(matches!(
            Queue::new(""),
            Err(ValidationError::Empty { field: "queue" })
        ));
        assert!(matches!(
            Kind::new(&"k".repeat(limits::NAME_BYTES_MAX + 1)),
            Err(ValidationError::TooLong { field: "kind", .. })
        ));
        assert!(matches!(
            Kind::new("a b"),
            Err(ValidationError::BadCharacters { .. })
        ));
        assert!(Kind::new("billing.invoice:send/v2").is_ok());
        assert_eq!(Queue::default().as_str(), "default");
    }

    #[test]
    fn payload_is_checked() {
        assert!(matches!(
            Payload::from_json_text("{"),
            Err(ValidationError::PayloadNotJson(_))
        ));
        let big = format!("\"{}\"", "x".repeat(limits::PAYLOAD_BYTES_MAX));
        assert!(matches!(
            Payload::from_json_text(&big),
            Err(ValidationError::PayloadTooLarge { .. })
        ));
        assert_eq!(
            Payload::from_json_text(r#"{"a":1}"#)
                .expect("json")
                .to_value()["a"],
            1
        );
    }

    #[test]
    fn run_at_and_attempt_max_are_checked() {
        let far = NOW
            .add(limits::RUN_AT_FUTURE_MAX)
            .add(Duration::from_secs(1));
        let error = NewJob::new(kind(), Payload::null(), far, JobOptions::default(), NOW);
        assert!(matches!(
            error,
            Err(ValidationError::RunAtOutOfRange { .. })
        ));
        let old = NOW.sub(limits::RUN_AT_PAST_MAX).sub(Duration::from_secs(1));
        let error = NewJob::new(kind(), Payload::null(), old, JobOptions::default(), NOW);
        assert!(matches!(
            error,
            Err(ValidationError::RunAtOutOfRange { .. })
        ));
        for bad in [0, limits::ATTEMPT_MAX_LIMIT + 1] {
            let options = JobOptions::default().attempt_max(bad);
            let error = NewJob::new(kind(), Payload::null(), NOW, options, NOW);
            assert!(matches!(
                error,
                Err(ValidationError::AttemptMaxOutOfRange { .. })
            ));
        }
        assert!(matches!(
            Priority::new(10),
            Err(ValidationError::PriorityOutOfRange { .. })
        ));
    }

    #[test]
    fn ids_sort_by_time_and_parse_back() {
        let first = JobId::generate(NOW);
        let second = JobId::generate(NOW.add(Duration::from_millis(1)));
        assert!(first < second);
        assert_eq!(first.to_string().parse::<JobId>(), Ok(first));
        assert!("nope".parse::<JobId>().is_err());
    }

    #[test]
    fn a_successor_id_is_deterministic_time_ordered_and_a_valid_v7() {
        let id = JobId::generate(NOW);
        let later = NOW.add(Duration::from_secs(1));
        let next = id.successor(later);
        assert_eq!(next, id.successor(later));
        assert_ne!(next, id);
        assert!(next > id);
        let uuid = uuid::Uuid::from_bytes(*next.as_bytes());
        assert_eq!(uuid.get_version_num(), 7);
        assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(next.successor(later), next);
    }

    #[test]
    fn error_messages_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(limits::ERROR_BYTES_MAX);
        let kept = truncate_error(&long);
        assert!(kept.len() <= limits::ERROR_BYTES_MAX + '…'.len_utf8());
    }

    #[test]
    fn nul_characters_in_an_error_are_replaced() {
        assert_eq!(truncate_error("bad\0byte"), "bad\u{FFFD}byte");
        assert_eq!(truncate_error("\0\0"), "\u{FFFD}\u{FFFD}");
        assert_eq!(truncate_error("fine"), "fine");
        // Replacing grows the text (1 byte to 3); the limit still holds afterwards.
        let kept = truncate_error(&"\0".repeat(limits::ERROR_BYTES_MAX));
        assert!(!kept.contains('\0'));
        assert!(kept.len() <= limits::ERROR_BYTES_MAX + '…'.len_utf8());
    }

    #[test]
    fn validate_refuses_what_a_struct_literal_can_get_wrong() {
        let valid =
            NewJob::new(kind(), Payload::null(), NOW, JobOptions::default(), NOW).expect("valid");
        assert_eq!(valid.validate(NOW), Ok(()));
        for attempt_max in [0, limits::ATTEMPT_MAX_LIMIT + 1] {
            let job = NewJob {
                attempt_max,
                ..valid.clone()
            };
            assert!(matches!(
                job.validate(NOW),
                Err(ValidationError::AttemptMaxOutOfRange { .. })
            ));
        }
        let job = NewJob {
            run_at: NOW
                .add(limits::RUN_AT_FUTURE_MAX)
                .add(Duration::from_secs(1)),
            ..valid
        };
        assert!(matches!(
            job.validate(NOW),
            Err(ValidationError::RunAtOutOfRange { .. })
        ));
    }
}
