//! How a job is laid out in a `punctual_jobs` row, and how a row becomes a `Job` again.
//!
//! Owns the state codes, the column list every `SELECT` and `RETURNING` uses, the conversions of
//! ids, durations, timestamps and kinds filters to column values, and a per-call cache of
//! decoded names so that decoding a claim of a thousand rows of one queue validates the queue
//! name once. Must not decide any transition: that is `transitions`' job.

use std::collections::HashMap;
use std::time::Duration;

use punctual_core::{
    Job, JobId, JobState, Kind, Lease, LeaseToken, NodeId, Payload, Priority, Queue, RetryPolicy,
    Schedule, StoreError, Timestamp,
};
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use crate::error::corrupt;

// The state codes; `migrations` documents them and its partial indexes name them literally.
pub(crate) const SCHEDULED: i16 = 0;
pub(crate) const RUNNING: i16 = 1;
pub(crate) const RETRYING: i16 = 2;
pub(crate) const SUCCEEDED: i16 = 3;
pub(crate) const DEAD: i16 = 4;
pub(crate) const CANCELLED: i16 = 5;

pub(crate) fn state_code(state: JobState) -> i16 {
    match state {
        JobState::Scheduled => SCHEDULED,
        JobState::Running => RUNNING,
        JobState::Retrying => RETRYING,
        JobState::Succeeded => SUCCEEDED,
        JobState::Dead => DEAD,
        JobState::Cancelled => CANCELLED,
    }
}

pub(crate) fn state_from_code(code: i16) -> Result<JobState, StoreError> {
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

/// The columns `job_from_row` reads, in its order. A macro so that SQL built around it with
/// `concat!` stays a `&'static str`. Statements that join another relation name its columns so
/// that none of these is ambiguous.
macro_rules! job_columns {
    () => {
        "id, queue, kind, priority, run_at_us, state, attempt, attempt_max, lease_token, \
         lease_holder, lease_expires_at_us, created_at_us, started_at_us, finished_at_us, \
         schedule_cron, schedule_time_zone, schedule_interval_us, backoff_base_us, \
         backoff_max_us, jitter_percent, last_error, payload"
    };
}
pub(crate) use job_columns;

pub(crate) fn uuid(id: JobId) -> uuid::Uuid {
    uuid::Uuid::from_bytes(*id.as_bytes())
}

pub(crate) fn job_id(uuid: uuid::Uuid) -> JobId {
    JobId::from_bytes(uuid.into_bytes())
}

/// Microseconds in an `i64`, saturating (no duration the core accepts comes near the limit).
pub(crate) fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// A kinds filter as the `text[]` its statements take (`kind = ANY($n)`), each kind once.
pub(crate) fn kind_names(kinds: &[Kind]) -> Vec<&str> {
    let mut names: Vec<&str> = kinds.iter().map(Kind::as_str).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// A count or limit as a SQL `bigint`, saturating.
pub(crate) fn sql_count(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn duration_from_micros(value: i64, column: &str) -> Result<Duration, StoreError> {
    u64::try_from(value)
        .map(Duration::from_micros)
        .map_err(|_| corrupt(format!("{column} is negative: {value}")))
}

fn unsigned<T: TryFrom<i64>>(value: i64, column: &str) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| corrupt(format!("{column} is out of range: {value}")))
}

/// Column `index` of `row`, or `Corrupt` when it does not hold the expected type.
pub(crate) fn column<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(|error| corrupt(format!("column {index} does not decode: {error}")))
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

/// Decoded names and schedules, reused across the rows of one call. Per call (not per store),
/// so it needs no lock and its size is bounded by the rows of one statement.
#[derive(Default)]
pub(crate) struct Names {
    queues: HashMap<Box<str>, Queue>,
    kinds: HashMap<Box<str>, Kind>,
    nodes: HashMap<Box<str>, NodeId>,
    /// Keyed by "time zone, expression": parsing a cron expression is the slowest part of
    /// decoding a recurring job.
    crons: HashMap<(Box<str>, Box<str>), Schedule>,
}

fn cached<T: Clone, E: std::fmt::Display>(
    cache: &mut HashMap<Box<str>, T>,
    text: &str,
    decode: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, StoreError> {
    if let Some(value) = cache.get(text) {
        return Ok(value.clone());
    }
    let value = decode(text).map_err(|error| corrupt(format!("stored name {text:?}: {error}")))?;
    cache.insert(Box::from(text), value.clone());
    Ok(value)
}

impl Names {
    fn queue(&mut self, text: &str) -> Result<Queue, StoreError> {
        cached(&mut self.queues, text, Queue::new)
    }

    fn kind(&mut self, text: &str) -> Result<Kind, StoreError> {
        cached(&mut self.kinds, text, Kind::new)
    }

    pub(crate) fn node(&mut self, text: &str) -> Result<NodeId, StoreError> {
        cached(&mut self.nodes, text, NodeId::new)
    }

    fn cron(&mut self, expression: &str, time_zone: &str) -> Result<Schedule, StoreError> {
        let key = (Box::from(time_zone), Box::from(expression));
        if let Some(schedule) = self.crons.get(&key) {
            return Ok(schedule.clone());
        }
        let schedule = Schedule::cron(expression, time_zone)
            .map_err(|error| corrupt(format!("stored schedule: {error}")))?;
        self.crons.insert(key, schedule.clone());
        Ok(schedule)
    }

    fn schedule(&mut self, columns: ScheduleColumns<'_>) -> Result<Option<Schedule>, StoreError> {
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
pub(crate) fn job_from_row(row: &Row, names: &mut Names) -> Result<Job, StoreError> {
    let id = job_id(column(row, 0)?);
    let queue = names.queue(column(row, 1)?)?;
    let kind = names.kind(column(row, 2)?)?;
    let priority_code: i16 = column(row, 3)?;
    let priority = Priority::new(unsigned(i64::from(priority_code), "priority")?)
        .map_err(|error| corrupt(format!("stored priority: {error}")))?;
    let run_at = Timestamp::from_micros(column(row, 4)?);
    let state = state_from_code(column(row, 5)?)?;
    let attempt = unsigned(i64::from(column::<i32>(row, 6)?), "attempt")?;
    let attempt_max = unsigned(i64::from(column::<i32>(row, 7)?), "attempt_max")?;
    let lease_token = LeaseToken(unsigned(column(row, 8)?, "lease_token")?);
    let lease_holder: Option<&str> = column(row, 9)?;
    let lease_expires_at: Option<i64> = column(row, 10)?;
    let lease = match (lease_holder, lease_expires_at) {
        (Some(holder), Some(expires_at_us)) => Some(Lease {
            holder: names.node(holder)?,
            token: lease_token,
            expires_at: Timestamp::from_micros(expires_at_us),
        }),
        (None, None) => None,
        _ => return Err(corrupt(format!("job {id} has half a lease"))),
    };
    let created_at = Timestamp::from_micros(column(row, 11)?);
    let started_at = column::<Option<i64>>(row, 12)?.map(Timestamp::from_micros);
    let finished_at = column::<Option<i64>>(row, 13)?.map(Timestamp::from_micros);
    let schedule = names.schedule(ScheduleColumns {
        cron: column(row, 14)?,
        time_zone: column(row, 15)?,
        interval_us: column(row, 16)?,
    })?;
    let retry = retry_from_columns(column(row, 17)?, column(row, 18)?, column(row, 19)?)?;
    let last_error: Option<String> = column(row, 20)?;
    let payload = Payload::from_json_text(column(row, 21)?)
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

/// Decodes every row of a statement that selected `job_columns!()`.
pub(crate) fn jobs_from_rows(rows: &[Row]) -> Result<Vec<Job>, StoreError> {
    let mut names = Names::default();
    rows.iter()
        .map(|row| job_from_row(row, &mut names))
        .collect()
}

/// The retry policy's columns: base, max (both microseconds) and jitter percent.
pub(crate) fn retry_columns(retry: &RetryPolicy) -> (i64, i64, i16) {
    (
        micros(retry.backoff_base()),
        micros(retry.backoff_max()),
        i16::from(retry.jitter_percent()),
    )
}

/// Rebuilds a retry policy from its columns.
pub(crate) fn retry_from_columns(
    base_us: i64,
    max_us: i64,
    jitter_percent: i16,
) -> Result<RetryPolicy, StoreError> {
    RetryPolicy::new(
        duration_from_micros(base_us, "backoff_base_us")?,
        duration_from_micros(max_us, "backoff_max_us")?,
        unsigned(i64::from(jitter_percent), "jitter_percent")?,
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
    fn ids_round_trip_through_uuid() {
        let id = JobId::generate(Timestamp::from_millis(1_764_400_000_000));
        assert_eq!(job_id(uuid(id)), id);
        assert_eq!(uuid(id).to_string(), id.to_string());
    }
}
