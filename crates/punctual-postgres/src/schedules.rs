//! Schedules and their occurrence ledger: `punctual_schedules` and
//! `punctual_schedule_occurrences` (see `migrations`, version 6), their one write (`write`) and
//! their reads.
//!
//! A schedule's definition is the core's JSON text (`recurring::codec`), its cursor a few
//! columns; a ledger entry's outcome is the core's `OutcomeColumns`. Nothing here decides
//! anything: the plan of which occurrence fires is the core's, and a write is applied or found
//! stale, nothing else. Two nodes writing the same schedule are ordered by the row lock of the
//! version check (`UPDATE ... WHERE version = $n`): the second waits, then finds the version
//! moved and is stale.

use deadpool_postgres::GenericClient;
use punctual_core::recurring::codec::{OutcomeColumns, decode_definition, encode_definition};
use punctual_core::{
    DueSchedule, LeaderTerm, OccurrenceEntry, ScheduleCursor, ScheduleId, ScheduleKey,
    ScheduleName, ScheduleWrite, StoreError, StoredSchedule, Timestamp, WriteOutcome,
    check_schedule_writes, limits,
};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::PgStore;
use crate::error::{corrupt, is_duplicate_id, pg};
use crate::insert::insert_rows;
use crate::leader::check_leader;
use crate::rows::{column, job_id, sql_count, state_from_code, uuid};

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

fn unsigned(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("{what} is negative: {value}")))
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn schedule_uuid(id: ScheduleId) -> uuid::Uuid {
    uuid::Uuid::from_bytes(*id.as_bytes())
}

fn schedule_id(uuid: uuid::Uuid) -> ScheduleId {
    ScheduleId::from_bytes(*uuid.as_bytes())
}

fn schedule_from_row(row: &Row) -> Result<StoredSchedule, StoreError> {
    let name: String = column(row, 1)?;
    let definition: String = column(row, 2)?;
    let definition = decode_definition(&name, &definition)
        .map_err(|error| corrupt(format!("schedule {name:?}: {error}")))?;
    let last_job: Option<uuid::Uuid> = column(row, 7)?;
    Ok(StoredSchedule {
        id: schedule_id(column(row, 0)?),
        definition,
        paused: column(row, 3)?,
        version: unsigned(column(row, 4)?, "version")?,
        cursor: ScheduleCursor {
            high_water: Timestamp::from_micros(column(row, 5)?),
            next_check: column::<Option<i64>>(row, 6)?.map(Timestamp::from_micros),
            last_job: last_job.map(job_id),
            buffered: column::<Option<i64>>(row, 8)?.map(Timestamp::from_micros),
            fired: unsigned(column(row, 9)?, "fired")?,
            skipped: unsigned(column(row, 10)?, "skipped")?,
            last_error: column(row, 11)?,
        },
        created_at: Timestamp::from_micros(column(row, 12)?),
        updated_at: Timestamp::from_micros(column(row, 13)?),
    })
}

/// An entry from `entry_columns!()` starting at column `first`.
fn entry_from_row(row: &Row, first: usize) -> Result<OccurrenceEntry, StoreError> {
    let at = |offset: usize| first + offset;
    let job: Option<uuid::Uuid> = column(row, at(5))?;
    let columns = OutcomeColumns {
        outcome: i64::from(column::<i16>(row, at(3))?),
        reason: column::<Option<i16>>(row, at(4))?.map(i64::from),
        job: job.map(job_id),
        late_us: column(row, at(6))?,
        count: column(row, at(7))?,
        last_at_us: column(row, at(8))?,
        flags: i64::from(column::<i16>(row, at(9))?),
        error: column(row, at(10))?,
    };
    Ok(OccurrenceEntry {
        seq: unsigned(column(row, at(0))?, "seq")?,
        schedule: schedule_id(column(row, at(1))?),
        at: Timestamp::from_micros(column(row, at(2))?),
        outcome: columns.decode().map_err(corrupt)?,
        recorded_at: Timestamp::from_micros(column(row, at(11))?),
    })
}

fn is_unique_violation(error: &tokio_postgres::Error) -> bool {
    error
        .as_db_error()
        .is_some_and(|db| *db.code() == SqlState::UNIQUE_VIOLATION)
}

/// Applies each write in its own savepoint of one transaction: a stale one is rolled back alone.
pub(crate) async fn write(
    store: &PgStore,
    fence: Option<LeaderTerm>,
    writes: Vec<ScheduleWrite>,
    now: Timestamp,
) -> Result<Vec<WriteOutcome>, StoreError> {
    check_schedule_writes(&writes, now)?;
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    let mut client = store.client().await?;
    let mut transaction = client.transaction().await.map_err(pg)?;
    if let Some(term) = fence {
        check_leader(&transaction, term, now).await?;
    }
    let mut outcomes = Vec::with_capacity(writes.len());
    for write in &writes {
        let savepoint = transaction.transaction().await.map_err(pg)?;
        match apply(&savepoint, write, now).await? {
            WriteOutcome::Applied => {
                savepoint.commit().await.map_err(pg)?;
                outcomes.push(WriteOutcome::Applied);
            }
            WriteOutcome::Stale => {
                savepoint.rollback().await.map_err(pg)?;
                outcomes.push(WriteOutcome::Stale);
            }
        }
    }
    transaction.commit().await.map_err(pg)?;
    Ok(outcomes)
}

async fn apply(
    client: &impl GenericClient,
    write: &ScheduleWrite,
    now: Timestamp,
) -> Result<WriteOutcome, StoreError> {
    let schedule = &write.schedule;
    let cursor = &schedule.cursor;
    let id = schedule_uuid(schedule.id);
    let definition = encode_definition(&schedule.definition);
    let version = signed(schedule.version);
    let high_water = cursor.high_water.as_micros();
    let next_check = cursor.next_check.map(Timestamp::as_micros);
    let last_job = cursor.last_job.map(uuid);
    let buffered = cursor.buffered.map(Timestamp::as_micros);
    let fired = signed(cursor.fired);
    let skipped = signed(cursor.skipped);
    let created_at = schedule.created_at.as_micros();
    let updated_at = schedule.updated_at.as_micros();
    let expected = write.expected_version.map(signed);
    let sql = match write.expected_version {
        None => {
            "INSERT INTO punctual_schedules (id, name, definition, paused, version, high_water_us,
                 next_check_us, last_job, buffered_us, fired, skipped, last_error, created_at_us,
                 updated_at_us)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14
             WHERE $15::bigint IS NULL
             ON CONFLICT DO NOTHING"
        }
        Some(_) => {
            "UPDATE punctual_schedules SET name = $2, definition = $3, paused = $4, version = $5,
                 high_water_us = $6, next_check_us = $7, last_job = $8, buffered_us = $9,
                 fired = $10, skipped = $11, last_error = $12, created_at_us = $13,
                 updated_at_us = $14
             WHERE id = $1 AND version = $15"
        }
    };
    let statement = client.prepare_cached(sql).await.map_err(pg)?;
    let written = client
        .execute(
            &statement,
            &[
                &id,
                &schedule.definition.name.as_str(),
                &definition,
                &schedule.paused,
                &version,
                &high_water,
                &next_check,
                &last_job,
                &buffered,
                &fired,
                &skipped,
                &cursor.last_error,
                &created_at,
                &updated_at,
                &expected,
            ],
        )
        .await;
    match written {
        Ok(1) => {}
        Ok(_) => return Ok(WriteOutcome::Stale),
        Err(error) if is_unique_violation(&error) => return Ok(WriteOutcome::Stale),
        Err(error) => return Err(pg(error)),
    }
    if !write.jobs.is_empty() {
        match insert_rows(client, &write.jobs, now).await {
            Ok(()) => {}
            Err(error) if is_duplicate_id(&error) => return Ok(WriteOutcome::Stale),
            Err(error) => return Err(pg(error)),
        }
    }
    if let Some(extend) = write.extend {
        let statement = client
            .prepare_cached(
                "UPDATE punctual_schedule_occurrences
                 SET count = $3, last_at_us = $4, recorded_at_us = $5
                 WHERE seq = $1 AND schedule_id = $2 AND outcome = 1",
            )
            .await
            .map_err(pg)?;
        client
            .execute(
                &statement,
                &[
                    &signed(extend.seq),
                    &id,
                    &signed(extend.count),
                    &extend.last_at.as_micros(),
                    &now.as_micros(),
                ],
            )
            .await
            .map_err(pg)?;
    }
    if !write.append.is_empty() {
        let statement = client
            .prepare_cached(
                "INSERT INTO punctual_schedule_occurrences (schedule_id, at_us, outcome, reason,
                     job_id, late_us, count, last_at_us, flags, error, recorded_at_us)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .await
            .map_err(pg)?;
        for entry in &write.append {
            let columns = OutcomeColumns::encode(&entry.outcome);
            let code = |value: i64| i16::try_from(value).unwrap_or(i16::MAX);
            client
                .execute(
                    &statement,
                    &[
                        &id,
                        &entry.at.as_micros(),
                        &code(columns.outcome),
                        &columns.reason.map(code),
                        &columns.job.map(uuid),
                        &columns.late_us,
                        &columns.count,
                        &columns.last_at_us,
                        &code(columns.flags),
                        &columns.error,
                        &entry.recorded_at.as_micros(),
                    ],
                )
                .await
                .map_err(pg)?;
        }
    }
    if let Some(job) = write.cancel {
        // A job that finished (or was purged) meanwhile is left alone.
        let statement = client
            .prepare_cached(
                "UPDATE punctual_jobs
                 SET state = 5, finished_at_us = $2, lease_holder = NULL,
                     lease_expires_at_us = NULL
                 WHERE id = $1 AND state IN (0, 1, 2)",
            )
            .await
            .map_err(pg)?;
        client
            .execute(&statement, &[&uuid(job), &now.as_micros()])
            .await
            .map_err(pg)?;
    }
    Ok(WriteOutcome::Applied)
}

pub(crate) async fn get(
    store: &PgStore,
    key: &ScheduleKey,
) -> Result<Option<StoredSchedule>, StoreError> {
    let client = store.client().await?;
    let row = match key {
        ScheduleKey::Id(id) => {
            let statement = client
                .prepare_cached(concat!(
                    "SELECT ",
                    schedule_columns!(),
                    " FROM punctual_schedules s WHERE s.id = $1"
                ))
                .await
                .map_err(pg)?;
            client
                .query_opt(&statement, &[&schedule_uuid(*id)])
                .await
                .map_err(pg)?
        }
        ScheduleKey::Name(name) => {
            let statement = client
                .prepare_cached(concat!(
                    "SELECT ",
                    schedule_columns!(),
                    " FROM punctual_schedules s WHERE s.name = $1"
                ))
                .await
                .map_err(pg)?;
            client
                .query_opt(&statement, &[&name.as_str()])
                .await
                .map_err(pg)?
        }
    };
    row.as_ref().map(schedule_from_row).transpose()
}

pub(crate) async fn list(
    store: &PgStore,
    after: Option<&ScheduleName>,
    limit: usize,
) -> Result<Vec<StoredSchedule>, StoreError> {
    let client = store.client().await?;
    let statement = client
        .prepare_cached(concat!(
            "SELECT ",
            schedule_columns!(),
            " FROM punctual_schedules s WHERE $1::text IS NULL OR s.name > $1
             ORDER BY s.name LIMIT $2"
        ))
        .await
        .map_err(pg)?;
    let rows = client
        .query(
            &statement,
            &[
                &after.map(ScheduleName::as_str),
                &sql_count(limit.min(limits::PAGE_SIZE_MAX)),
            ],
        )
        .await
        .map_err(pg)?;
    rows.iter().map(schedule_from_row).collect()
}

pub(crate) async fn delete(store: &PgStore, id: ScheduleId) -> Result<bool, StoreError> {
    let mut client = store.client().await?;
    let transaction = client.transaction().await.map_err(pg)?;
    let deleted = transaction
        .execute(
            "DELETE FROM punctual_schedules WHERE id = $1",
            &[&schedule_uuid(id)],
        )
        .await
        .map_err(pg)?;
    transaction
        .execute(
            "DELETE FROM punctual_schedule_occurrences WHERE schedule_id = $1",
            &[&schedule_uuid(id)],
        )
        .await
        .map_err(pg)?;
    transaction.commit().await.map_err(pg)?;
    Ok(deleted > 0)
}

pub(crate) async fn due(
    store: &PgStore,
    check_by: Timestamp,
    limit: usize,
) -> Result<Vec<DueSchedule>, StoreError> {
    let client = store.client().await?;
    let statement = client
        .prepare_cached(concat!(
            "SELECT ",
            schedule_columns!(),
            ", j.state, ",
            entry_columns!(),
            " FROM punctual_schedules s
             LEFT JOIN punctual_jobs j ON j.id = s.last_job
             LEFT JOIN LATERAL (
                 SELECT * FROM punctual_schedule_occurrences
                 WHERE schedule_id = s.id ORDER BY seq DESC LIMIT 1
             ) o ON true
             WHERE s.next_check_us IS NOT NULL AND s.next_check_us <= $1
             ORDER BY s.next_check_us, s.id LIMIT $2"
        ))
        .await
        .map_err(pg)?;
    let rows = client
        .query(
            &statement,
            &[
                &check_by.as_micros(),
                &sql_count(limit.min(limits::SCHEDULE_BATCH_MAX)),
            ],
        )
        .await
        .map_err(pg)?;
    rows.iter()
        .map(|row| {
            let last_job_state = column::<Option<i16>>(row, 14)?
                .map(state_from_code)
                .transpose()?;
            let last_entry = match column::<Option<i64>>(row, 15)? {
                Some(_) => Some(entry_from_row(row, 15)?),
                None => None,
            };
            Ok(DueSchedule {
                schedule: schedule_from_row(row)?,
                last_job_state,
                last_entry,
            })
        })
        .collect()
}

pub(crate) async fn occurrences(
    store: &PgStore,
    id: ScheduleId,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<OccurrenceEntry>, StoreError> {
    let client = store.client().await?;
    let statement = client
        .prepare_cached(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM punctual_schedule_occurrences o WHERE o.schedule_id = $1 AND o.seq < $2
             ORDER BY o.seq DESC LIMIT $3"
        ))
        .await
        .map_err(pg)?;
    let before = before.map_or(i64::MAX, signed);
    let rows = client
        .query(
            &statement,
            &[
                &schedule_uuid(id),
                &before,
                &sql_count(limit.min(limits::PAGE_SIZE_MAX)),
            ],
        )
        .await
        .map_err(pg)?;
    rows.iter().map(|row| entry_from_row(row, 0)).collect()
}

/// Deletes up to `limit` ledger entries recorded before `recorded_before`, oldest first, if
/// `term` is the current leader's at `now`.
pub(crate) async fn purge(
    store: &PgStore,
    term: LeaderTerm,
    recorded_before: Timestamp,
    limit: usize,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let mut client = store.client().await?;
    let transaction = client.transaction().await.map_err(pg)?;
    check_leader(&transaction, term, now).await?;
    let deleted = transaction
        .execute(
            "DELETE FROM punctual_schedule_occurrences WHERE seq = ANY(ARRAY(
                 SELECT seq FROM punctual_schedule_occurrences WHERE recorded_at_us < $1
                 ORDER BY recorded_at_us, seq LIMIT $2))",
            &[&recorded_before.as_micros(), &sql_count(limit)],
        )
        .await
        .map_err(pg)?;
    transaction.commit().await.map_err(pg)?;
    Ok(deleted)
}
