//! Schedules and their occurrence ledger: the `schedule` and `schedule_occurrence` tables
//! (see `migrations`, version 7), their one write (`write`, run by the writer) and their reads.
//!
//! A schedule's definition is the core's JSON text (`recurring::codec`), its cursor a few
//! columns; a ledger entry's outcome is the core's `OutcomeColumns`. Nothing here decides
//! anything: the plan of which occurrence fires is the core's, and a write is applied or found
//! stale, nothing else.

use punctual_core::recurring::codec::{OutcomeColumns, decode_definition, encode_definition};
use punctual_core::{
    DueSchedule, JobState, LeaderTerm, OccurrenceEntry, ScheduleCursor, ScheduleId, ScheduleKey,
    ScheduleName, ScheduleWrite, StoreError, StoredSchedule, Timestamp, WriteOutcome, limits,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::counts::Tally;
use crate::error::{Failure, corrupt};
use crate::reads::Reader;
use crate::rows::{Names, id_from_blob, state_from_code};
use crate::transitions;

/// The columns `schedule_from_row` reads, in its order.
macro_rules! schedule_columns {
    () => {
        "s.id, s.name, s.definition, s.paused, s.version, s.high_water_us, s.next_check_us, \
         s.last_job, s.buffered_us, s.fired, s.skipped, s.last_error, s.created_at_us, \
         s.updated_at_us"
    };
}

/// The columns `entry_from_row` reads, in its order.
macro_rules! entry_columns {
    () => {
        "o.seq, o.schedule_id, o.at_us, o.outcome, o.reason, o.job_id, o.late_us, o.count, \
         o.last_at_us, o.flags, o.error, o.recorded_at_us"
    };
}

fn schedule_id_from_blob(bytes: &[u8]) -> Result<ScheduleId, Failure> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("a schedule id is {} bytes, not 16", bytes.len())))?;
    Ok(ScheduleId::from_bytes(bytes))
}

fn count(value: i64, column: &str) -> Result<u64, Failure> {
    u64::try_from(value).map_err(|_| corrupt(format!("{column} is negative: {value}")))
}

fn sql_count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn schedule_from_row(row: &Row<'_>) -> Result<StoredSchedule, Failure> {
    let name: String = row.get(1)?;
    let definition: String = row.get(2)?;
    let definition = decode_definition(&name, &definition)
        .map_err(|error| corrupt(format!("schedule {name:?}: {error}")))?;
    let last_job: Option<Vec<u8>> = row.get(7)?;
    Ok(StoredSchedule {
        id: schedule_id_from_blob(&row.get::<_, Vec<u8>>(0)?)?,
        definition,
        paused: row.get::<_, i64>(3)? != 0,
        version: count(row.get(4)?, "version")?,
        cursor: ScheduleCursor {
            high_water: Timestamp::from_micros(row.get(5)?),
            next_check: row.get::<_, Option<i64>>(6)?.map(Timestamp::from_micros),
            last_job: last_job.as_deref().map(id_from_blob).transpose()?,
            buffered: row.get::<_, Option<i64>>(8)?.map(Timestamp::from_micros),
            fired: count(row.get(9)?, "fired")?,
            skipped: count(row.get(10)?, "skipped")?,
            last_error: row.get(11)?,
        },
        created_at: Timestamp::from_micros(row.get(12)?),
        updated_at: Timestamp::from_micros(row.get(13)?),
    })
}

/// An entry from `entry_columns!()` starting at column `first`.
fn entry_from_row(row: &Row<'_>, first: usize) -> Result<OccurrenceEntry, Failure> {
    let column = |offset: usize| first + offset;
    let job: Option<Vec<u8>> = row.get(column(5))?;
    let columns = OutcomeColumns {
        outcome: row.get(column(3))?,
        reason: row.get(column(4))?,
        job: job.as_deref().map(id_from_blob).transpose()?,
        late_us: row.get(column(6))?,
        count: row.get(column(7))?,
        last_at_us: row.get(column(8))?,
        flags: row.get(column(9))?,
        error: row.get(column(10))?,
    };
    Ok(OccurrenceEntry {
        seq: count(row.get(column(0))?, "seq")?,
        schedule: schedule_id_from_blob(&row.get::<_, Vec<u8>>(column(1))?)?,
        at: Timestamp::from_micros(row.get(column(2))?),
        outcome: columns.decode().map_err(corrupt)?,
        recorded_at: Timestamp::from_micros(row.get(column(11))?),
    })
}

/// Applies each write in its own savepoint inside the writer's transaction: a stale one is
/// rolled back alone. Several writes: the writer runs the whole call in a savepoint too.
pub(crate) fn write(
    connection: &Connection,
    names: &mut Names,
    tally: &mut Tally,
    fence: Option<LeaderTerm>,
    writes: Vec<ScheduleWrite>,
    now: Timestamp,
) -> Result<Vec<WriteOutcome>, Failure> {
    if let Some(term) = fence {
        transitions::check_leader(connection, term, now)?;
    }
    let mut outcomes = Vec::with_capacity(writes.len());
    for write in writes {
        connection.execute_batch("SAVEPOINT schedule_write")?;
        let mut own = Tally::default();
        match apply(connection, names, &mut own, write, now) {
            Ok(WriteOutcome::Applied) => {
                connection.execute_batch("RELEASE schedule_write")?;
                tally.absorb(own);
                outcomes.push(WriteOutcome::Applied);
            }
            Ok(WriteOutcome::Stale) => {
                connection.execute_batch("ROLLBACK TO schedule_write; RELEASE schedule_write")?;
                outcomes.push(WriteOutcome::Stale);
            }
            Err(error) => {
                connection.execute_batch("ROLLBACK TO schedule_write; RELEASE schedule_write")?;
                return Err(error);
            }
        }
    }
    Ok(outcomes)
}

/// Whether `error` is a constraint violation (a taken id or name): the write is stale.
fn is_constraint(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.code == rusqlite::ErrorCode::ConstraintViolation
    )
}

fn apply(
    connection: &Connection,
    names: &mut Names,
    tally: &mut Tally,
    write: ScheduleWrite,
    now: Timestamp,
) -> Result<WriteOutcome, Failure> {
    let schedule = &write.schedule;
    let cursor = &schedule.cursor;
    let definition = encode_definition(&schedule.definition);
    let values = params![
        schedule.id.as_bytes(),
        schedule.definition.name.as_str(),
        definition,
        i64::from(schedule.paused),
        sql_count(schedule.version),
        cursor.high_water.as_micros(),
        cursor.next_check.map(Timestamp::as_micros),
        cursor.last_job.as_ref().map(|job| job.as_bytes().to_vec()),
        cursor.buffered.map(Timestamp::as_micros),
        sql_count(cursor.fired),
        sql_count(cursor.skipped),
        cursor.last_error,
        schedule.created_at.as_micros(),
        schedule.updated_at.as_micros(),
        write.expected_version.map(sql_count),
    ];
    let written = match write.expected_version {
        None => connection
            .prepare_cached(
                "INSERT INTO schedule (id, name, definition, paused, version, high_water_us,
                     next_check_us, last_job, buffered_us, fired, skipped, last_error,
                     created_at_us, updated_at_us)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14
                 WHERE ?15 IS NULL",
            )?
            .execute(values),
        Some(_) => connection
            .prepare_cached(
                "UPDATE schedule SET name = ?2, definition = ?3, paused = ?4, version = ?5,
                     high_water_us = ?6, next_check_us = ?7, last_job = ?8, buffered_us = ?9,
                     fired = ?10, skipped = ?11, last_error = ?12, created_at_us = ?13,
                     updated_at_us = ?14
                 WHERE id = ?1 AND version = ?15",
            )?
            .execute(values),
    };
    match written {
        Ok(1) => {}
        Ok(_) => return Ok(WriteOutcome::Stale),
        Err(error) if is_constraint(&error) => return Ok(WriteOutcome::Stale),
        Err(error) => return Err(error.into()),
    }
    for job in &write.jobs {
        match transitions::insert_one(connection, tally, job, now) {
            Ok(()) => {}
            Err(Failure::Refused(StoreError::Duplicate(_))) => return Ok(WriteOutcome::Stale),
            Err(error) => return Err(error),
        }
    }
    if let Some(extend) = write.extend {
        connection
            .prepare_cached(
                "UPDATE schedule_occurrence SET count = ?3, last_at_us = ?4, recorded_at_us = ?5
                 WHERE seq = ?1 AND schedule_id = ?2 AND outcome = 1",
            )?
            .execute(params![
                sql_count(extend.seq),
                schedule.id.as_bytes(),
                sql_count(extend.count),
                extend.last_at.as_micros(),
                now.as_micros(),
            ])?;
    }
    for entry in &write.append {
        let columns = OutcomeColumns::encode(&entry.outcome);
        connection
            .prepare_cached(
                "INSERT INTO schedule_occurrence (schedule_id, at_us, outcome, reason, job_id,
                     late_us, count, last_at_us, flags, error, recorded_at_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                schedule.id.as_bytes(),
                entry.at.as_micros(),
                columns.outcome,
                columns.reason,
                columns.job.as_ref().map(|job| job.as_bytes().to_vec()),
                columns.late_us,
                columns.count,
                columns.last_at_us,
                columns.flags,
                columns.error,
                entry.recorded_at.as_micros(),
            ])?;
    }
    if let Some(job) = write.cancel {
        match transitions::cancel(connection, names, tally, job, now) {
            // Finished or purged meanwhile: nothing to cancel.
            Ok(_)
            | Err(Failure::Refused(StoreError::Conflict { .. } | StoreError::NotFound(_))) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(WriteOutcome::Applied)
}

pub(crate) fn get(
    reader: &mut Reader,
    key: &ScheduleKey,
) -> Result<Option<StoredSchedule>, Failure> {
    let connection = &reader.connection;
    let found = match key {
        ScheduleKey::Id(id) => connection
            .prepare_cached(concat!(
                "SELECT ",
                schedule_columns!(),
                " FROM schedule s WHERE s.id = ?1"
            ))?
            .query_row(params![id.as_bytes()], |row| Ok(schedule_from_row(row)))
            .optional()?,
        ScheduleKey::Name(name) => connection
            .prepare_cached(concat!(
                "SELECT ",
                schedule_columns!(),
                " FROM schedule s WHERE s.name = ?1"
            ))?
            .query_row(params![name.as_str()], |row| Ok(schedule_from_row(row)))
            .optional()?,
    };
    found.transpose()
}

pub(crate) fn list(
    reader: &mut Reader,
    after: Option<&ScheduleName>,
    limit: usize,
) -> Result<Vec<StoredSchedule>, Failure> {
    let limit = i64::try_from(limit.min(limits::PAGE_SIZE_MAX)).unwrap_or(0);
    let mut statement = reader.connection.prepare_cached(concat!(
        "SELECT ",
        schedule_columns!(),
        " FROM schedule s WHERE ?1 IS NULL OR s.name > ?1 ORDER BY s.name LIMIT ?2"
    ))?;
    let mut rows = statement.query(params![after.map(ScheduleName::as_str), limit])?;
    let mut schedules = Vec::new();
    while let Some(row) = rows.next()? {
        schedules.push(schedule_from_row(row)?);
    }
    Ok(schedules)
}

/// Deletes a schedule and its ledger: two statements, so the writer runs it in a savepoint.
pub(crate) fn delete(connection: &Connection, id: ScheduleId) -> Result<bool, Failure> {
    let deleted = connection
        .prepare_cached("DELETE FROM schedule WHERE id = ?1")?
        .execute(params![id.as_bytes()])?;
    connection
        .prepare_cached("DELETE FROM schedule_occurrence WHERE schedule_id = ?1")?
        .execute(params![id.as_bytes()])?;
    Ok(deleted > 0)
}

pub(crate) fn due(
    reader: &mut Reader,
    check_by: Timestamp,
    limit: usize,
) -> Result<Vec<DueSchedule>, Failure> {
    let limit = i64::try_from(limit.min(limits::SCHEDULE_BATCH_MAX)).unwrap_or(0);
    let mut statement = reader.connection.prepare_cached(concat!(
        "SELECT ",
        schedule_columns!(),
        ", j.state, ",
        entry_columns!(),
        " FROM schedule s
         LEFT JOIN job j ON j.id = s.last_job
         LEFT JOIN schedule_occurrence o ON o.seq =
             (SELECT max(seq) FROM schedule_occurrence WHERE schedule_id = s.id)
         WHERE s.next_check_us IS NOT NULL AND s.next_check_us <= ?1
         ORDER BY s.next_check_us, s.id LIMIT ?2"
    ))?;
    let mut rows = statement.query(params![check_by.as_micros(), limit])?;
    let mut due = Vec::new();
    while let Some(row) = rows.next()? {
        let schedule = schedule_from_row(row)?;
        let last_job_state: Option<JobState> = row
            .get::<_, Option<i64>>(14)?
            .map(state_from_code)
            .transpose()?;
        let last_entry = match row.get::<_, Option<i64>>(15)? {
            Some(_) => Some(entry_from_row(row, 15)?),
            None => None,
        };
        due.push(DueSchedule {
            schedule,
            last_job_state,
            last_entry,
        });
    }
    Ok(due)
}

pub(crate) fn occurrences(
    reader: &mut Reader,
    id: ScheduleId,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<OccurrenceEntry>, Failure> {
    let limit = i64::try_from(limit.min(limits::PAGE_SIZE_MAX)).unwrap_or(0);
    let mut statement = reader.connection.prepare_cached(concat!(
        "SELECT ",
        entry_columns!(),
        " FROM schedule_occurrence o WHERE o.schedule_id = ?1 AND o.seq < ?2
         ORDER BY o.seq DESC LIMIT ?3"
    ))?;
    let before = before.map_or(i64::MAX, sql_count);
    let mut rows = statement.query(params![id.as_bytes(), before, limit])?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        entries.push(entry_from_row(row, 0)?);
    }
    Ok(entries)
}

/// Deletes up to `limit` ledger entries recorded before `recorded_before`, oldest first; fenced
/// by `term` at `now`. One write statement.
pub(crate) fn purge(
    connection: &Connection,
    term: LeaderTerm,
    recorded_before: Timestamp,
    limit: usize,
    now: Timestamp,
) -> Result<u64, Failure> {
    transitions::check_leader(connection, term, now)?;
    let deleted = connection
        .prepare_cached(
            "DELETE FROM schedule_occurrence WHERE seq IN (
                 SELECT seq FROM schedule_occurrence WHERE recorded_at_us < ?1
                 ORDER BY recorded_at_us, seq LIMIT ?2)",
        )?
        .execute(params![
            recorded_before.as_micros(),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ])?;
    Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
}
