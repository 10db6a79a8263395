//! How a job is laid out in a `job` row, and how a row becomes a `Job` again; likewise an API
//! token in an `api_token` row and an idempotency record in an `idempotency_key` row.
//!
//! Owns the state codes, the column list every `SELECT` and `RETURNING` uses, the conversions of
//! durations and timestamps to integers (and of a list of names to an `rarray`), and a small
//! cache of decoded names so that reading a thousand rows of the same queue does not validate
//! and allocate the queue name a thousand times. Must not decide any transition: that is
//! `transitions`' job.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use punctual_core::{
    ApiToken, IdempotencyKey, IdempotencyRecord, Job, JobId, JobState, Kind, Lease, LeaseToken,
    NodeId, Payload, Priority, Queue, RetryPolicy, Schedule, Timestamp, TokenId,
};
use rusqlite::Row;
use rusqlite::types::Value;
use rusqlite::vtab::array::Array;

use crate::error::{Failure, corrupt};

// The state codes; `migrations` documents them and its partial indexes name them.
pub(crate) const SCHEDULED: i64 = 0;
pub(crate) const RUNNING: i64 = 1;
pub(crate) const RETRYING: i64 = 2;
pub(crate) const SUCCEEDED: i64 = 3;
pub(crate) const DEAD: i64 = 4;
pub(crate) const CANCELLED: i64 = 5;

pub(crate) fn state_code(state: JobState) -> i64 {
    match state {
        JobState::Scheduled => SCHEDULED,
        JobState::Running => RUNNING,
        JobState::Retrying => RETRYING,
        JobState::Succeeded => SUCCEEDED,
        JobState::Dead => DEAD,
        JobState::Cancelled => CANCELLED,
    }
}

pub(crate) fn state_from_code(code: i64) -> Result<JobState, Failure> {
    match code {
        SCHEDULED => Ok(JobState::Scheduled),
        RUNNING => Ok(JobState::Running),
        RETRYING => Ok(JobState::Retrying),
        SUCCEEDED => Ok(JobState::Succeeded),
        DEAD => Ok(JobState::Dead),
        CANCELLED => Ok(JobState::Cancelled),
        other => Err(corrupt(format!("unknown job state code {other}"))),
    }
}

/// The columns `job_from_row` reads, in its order. A macro so that SQL text built around it with
/// `concat!` stays a `&'static str` (and a key of the prepared-statement cache).
macro_rules! job_columns {
    () => {
        "id, queue, kind, priority, run_at_us, state, attempt, attempt_max, lease_token, \
         lease_holder, lease_expires_at_us, created_at_us, started_at_us, finished_at_us, \
         schedule_cron, schedule_time_zone, schedule_interval_us, backoff_base_us, \
         backoff_max_us, jitter_percent, last_error, payload"
    };
}
pub(crate) use job_columns;

/// Names (of queues or kinds) as the `rarray` a statement takes (`kind IN rarray(?n)`).
pub(crate) fn text_array(names: &[&str]) -> Array {
    Rc::new(
        names
            .iter()
            .map(|name| Value::Text((*name).to_owned()))
            .collect(),
    )
}

/// Microseconds in an `i64`, saturating (no duration the core accepts comes near the limit).
pub(crate) fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn duration_from_micros(value: i64, column: &str) -> Result<Duration, Failure> {
    u64::try_from(value)
        .map(Duration::from_micros)
        .map_err(|_| corrupt(format!("{column} is negative: {value}")))
}

pub(crate) fn id_from_blob(bytes: &[u8]) -> Result<JobId, Failure> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("a job id is {} bytes, not 16", bytes.len())))?;
    Ok(JobId::from_bytes(bytes))
}

fn unsigned<T: TryFrom<i64>>(value: i64, column: &str) -> Result<T, Failure> {
    T::try_from(value).map_err(|_| corrupt(format!("{column} is out of range: {value}")))
}

/// The schedule columns of a row: cron expression and time zone, or an interval, or neither.
pub(crate) struct ScheduleColumns<'a> {
    pub cron: Option<&'a str>,
    pub time_zone: Option<&'a str>,
    pub interval_us: Option<i64>,
}

impl<'a> ScheduleColumns<'a> {
    pub(crate) fn of(schedule: Option<&'a Schedule>) -> ScheduleColumns<'a> {
        let (cron, time_zone) = match schedule.and_then(Schedule::cron_expression) {
            Some((expression, zone)) => (Some(expression), Some(zone)),
            None => (None, None),
        };
        ScheduleColumns {
            cron,
            time_zone,
            interval_us: schedule.and_then(Schedule::interval_duration).map(micros),
        }
    }
}

/// At most this many distinct names are kept per cache; past it the cache starts over, so a
/// store that sees endless distinct names uses bounded memory.
const NAMES_CACHED_MAX: usize = 4_096;

/// Decoded names and schedules, reused across rows (each connection owns one).
#[derive(Default)]
pub(crate) struct Names {
    queues: HashMap<Box<str>, Queue>,
    kinds: HashMap<Box<str>, Kind>,
    nodes: HashMap<Box<str>, NodeId>,
    /// Keyed by time zone, then expression: parsing a cron expression is the slowest part of
    /// decoding a recurring job.
    crons: HashMap<Box<str>, HashMap<Box<str>, Schedule>>,
}

fn cached<T: Clone, E: std::fmt::Display>(
    cache: &mut HashMap<Box<str>, T>,
    text: &str,
    decode: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, Failure> {
    if let Some(value) = cache.get(text) {
        return Ok(value.clone());
    }
    let value = decode(text).map_err(|error| corrupt(format!("stored name {text:?}: {error}")))?;
    if cache.len() >= NAMES_CACHED_MAX {
        cache.clear();
    }
    cache.insert(Box::from(text), value.clone());
    Ok(value)
}

impl Names {
    pub(crate) fn queue(&mut self, text: &str) -> Result<Queue, Failure> {
        cached(&mut self.queues, text, Queue::new)
    }

    pub(crate) fn kind(&mut self, text: &str) -> Result<Kind, Failure> {
        cached(&mut self.kinds, text, Kind::new)
    }

    pub(crate) fn node(&mut self, text: &str) -> Result<NodeId, Failure> {
        cached(&mut self.nodes, text, NodeId::new)
    }

    fn cron(&mut self, expression: &str, time_zone: &str) -> Result<Schedule, Failure> {
        if self.crons.len() >= NAMES_CACHED_MAX {
            self.crons.clear();
        }
        let by_expression = self.crons.entry(Box::from(time_zone)).or_default();
        cached(by_expression, expression, |expression| {
            Schedule::cron(expression, time_zone)
        })
    }

    fn schedule(&mut self, columns: ScheduleColumns<'_>) -> Result<Option<Schedule>, Failure> {
        match columns {
            ScheduleColumns {
                cron: Some(expression),
                time_zone: Some(zone),
                interval_us: None,
            } => self.cron(expression, zone).map(Some),
            ScheduleColumns {
                cron: None,
                time_zone: None,
                interval_us: Some(interval_us),
            } => {
                let interval = duration_from_micros(interval_us, "schedule_interval_us")?;
                Schedule::interval(interval)
                    .map(Some)
                    .map_err(|error| corrupt(format!("stored schedule: {error}")))
            }
            ScheduleColumns {
                cron: None,
                time_zone: None,
                interval_us: None,
            } => Ok(None),
            _ => Err(corrupt(
                "a job's schedule columns are half filled (cron, time zone and interval)",
            )),
        }
    }
}

/// Reads a row selected with `job_columns!()`.
pub(crate) fn job_from_row(row: &Row<'_>, names: &mut Names) -> Result<Job, Failure> {
    let id = id_from_blob(row.get_ref(0)?.as_blob()?)?;
    let queue = names.queue(row.get_ref(1)?.as_str()?)?;
    let kind = names.kind(row.get_ref(2)?.as_str()?)?;
    let priority_code: i64 = row.get(3)?;
    let priority = Priority::new(unsigned(priority_code, "priority")?)
        .map_err(|error| corrupt(format!("stored priority: {error}")))?;
    let run_at = Timestamp::from_micros(row.get(4)?);
    let state = state_from_code(row.get(5)?)?;
    let attempt = unsigned(row.get(6)?, "attempt")?;
    let attempt_max = unsigned(row.get(7)?, "attempt_max")?;
    let lease_token = LeaseToken(unsigned(row.get(8)?, "lease_token")?);
    let lease_holder = row.get_ref(9)?.as_str_or_null()?;
    let lease_expires_at: Option<i64> = row.get(10)?;
    let lease = match (lease_holder, lease_expires_at) {
        (Some(holder), Some(expires_at_us)) => Some(Lease {
            holder: names.node(holder)?,
            token: lease_token,
            expires_at: Timestamp::from_micros(expires_at_us),
        }),
        (None, None) => None,
        _ => return Err(corrupt(format!("job {id} has half a lease"))),
    };
    let created_at = Timestamp::from_micros(row.get(11)?);
    let started_at = row.get::<_, Option<i64>>(12)?.map(Timestamp::from_micros);
    let finished_at = row.get::<_, Option<i64>>(13)?.map(Timestamp::from_micros);
    let schedule = names.schedule(ScheduleColumns {
        cron: row.get_ref(14)?.as_str_or_null()?,
        time_zone: row.get_ref(15)?.as_str_or_null()?,
        interval_us: row.get(16)?,
    })?;
    let retry = RetryPolicy::new(
        duration_from_micros(row.get(17)?, "backoff_base_us")?,
        duration_from_micros(row.get(18)?, "backoff_max_us")?,
        unsigned(row.get(19)?, "jitter_percent")?,
    )
    .map_err(|error| corrupt(format!("stored retry policy of job {id}: {error}")))?;
    let last_error: Option<String> = row.get(20)?;
    let payload = Payload::from_json_text(row.get_ref(21)?.as_str()?)
        .map_err(|error| corrupt(format!("stored payload of job {id}: {error}")))?;
    Ok(Job {
        id,
        queue,
        kind,
        payload,
        run_at,
        schedule,
        state,
        attempt,
        attempt_max,
        retry,
        priority,
        created_at,
        started_at,
        finished_at,
        last_error,
        lease_token,
        lease,
    })
}

/// The columns `token_from_row` reads, in its order.
macro_rules! token_columns {
    () => {
        "id, label, scopes, secret_sha256, created_at_us, expires_at_us, revoked_at_us"
    };
}
pub(crate) use token_columns;

/// A token's scopes as the `scopes` column holds them: the names joined by single spaces. A
/// validated scope is a word (no space), so `scopes_from_column` splits them back exactly.
pub(crate) fn scopes_column(scopes: &[String]) -> String {
    scopes.join(" ")
}

fn scopes_from_column(text: &str) -> Vec<String> {
    text.split(' ')
        .filter(|scope| !scope.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads a row selected with `token_columns!()`.
pub(crate) fn token_from_row(row: &Row<'_>) -> Result<ApiToken, Failure> {
    let id_text = row.get_ref(0)?.as_str()?;
    let id = TokenId::new(id_text)
        .map_err(|error| corrupt(format!("stored token id {id_text:?}: {error}")))?;
    let digest = row.get_ref(3)?.as_blob()?;
    let secret_sha256: [u8; 32] = digest.try_into().map_err(|_| {
        corrupt(format!(
            "token {id}'s secret digest is {} bytes, not 32",
            digest.len()
        ))
    })?;
    Ok(ApiToken {
        label: row.get(1)?,
        scopes: scopes_from_column(row.get_ref(2)?.as_str()?),
        secret_sha256,
        created_at: Timestamp::from_micros(row.get(4)?),
        expires_at: row.get::<_, Option<i64>>(5)?.map(Timestamp::from_micros),
        revoked_at: row.get::<_, Option<i64>>(6)?.map(Timestamp::from_micros),
        id,
    })
}

/// The columns `record_from_row` reads, in its order.
macro_rules! record_columns {
    () => {
        "key, fingerprint, created_at_us, expires_at_us, response"
    };
}
pub(crate) use record_columns;

/// Reads a row selected with `record_columns!()`.
pub(crate) fn record_from_row(row: &Row<'_>) -> Result<IdempotencyRecord, Failure> {
    let key_text = row.get_ref(0)?.as_str()?;
    let key = IdempotencyKey::new(key_text)
        .map_err(|error| corrupt(format!("stored idempotency key {key_text:?}: {error}")))?;
    Ok(IdempotencyRecord {
        key,
        fingerprint: row.get(1)?,
        created_at: Timestamp::from_micros(row.get(2)?),
        expires_at: Timestamp::from_micros(row.get(3)?),
        response: row.get(4)?,
    })
}

/// The retry policy's columns: base, max (both microseconds) and jitter percent.
pub(crate) fn retry_columns(retry: &RetryPolicy) -> (i64, i64, i64) {
    (
        micros(retry.backoff_base()),
        micros(retry.backoff_max()),
        i64::from(retry.jitter_percent()),
    )
}

/// Rebuilds a retry policy from its columns (for rescue, which reads no whole row).
pub(crate) fn retry_from_columns(
    base_us: i64,
    max_us: i64,
    jitter_percent: i64,
) -> Result<RetryPolicy, Failure> {
    RetryPolicy::new(
        duration_from_micros(base_us, "backoff_base_us")?,
        duration_from_micros(max_us, "backoff_max_us")?,
        unsigned(jitter_percent, "jitter_percent")?,
    )
    .map_err(|error| corrupt(format!("stored retry policy: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_codes_round_trip_and_match_the_documented_table() {
        let documented = [
            (JobState::Scheduled, 0),
            (JobState::Running, 1),
            (JobState::Retrying, 2),
            (JobState::Succeeded, 3),
            (JobState::Dead, 4),
            (JobState::Cancelled, 5),
        ];
        for (state, code) in documented {
            assert_eq!(state_code(state), code);
            assert_eq!(state_from_code(code).expect("known code"), state);
            assert_eq!(state.is_pending(), code == 0 || code == 2);
            assert_eq!(state.is_final(), (3..=5).contains(&code));
        }
        assert!(state_from_code(6).is_err());
    }

    #[test]
    fn scopes_round_trip_through_their_column() {
        for scopes in [
            Vec::new(),
            vec!["read".to_owned()],
            vec!["jobs-read".to_owned(), "jobs_write".to_owned()],
        ] {
            assert_eq!(scopes_from_column(&scopes_column(&scopes)), scopes);
        }
    }
}
