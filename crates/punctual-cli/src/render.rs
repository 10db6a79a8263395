//! The output of the job, queue and schedule commands: tables and field lists for people, JSON
//! lines for scripts. Both modes print from the API's wire types (`punctual_server::dto`), so a
//! script sees one format whether the jobs came from a server or a store.
//!
//! Must not fetch anything: it formats what it is given, with `now` for relative times.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use punctual_core::Timestamp;
use punctual_server::dto::{
    Explanation, JobView, OccurrenceView, QueueView, ScheduleSpec, ScheduleView,
};
use serde::Serialize;

/// One value as one line of JSON on stdout.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string(value).context("encoding JSON output")?
    );
    Ok(())
}

/// What runs the job: `kind K` or `webhook POST https://...`.
pub fn target(job: &JobView) -> String {
    match (&job.kind, &job.webhook) {
        (_, Some(webhook)) => format!(
            "webhook {} {}",
            webhook.method.as_deref().unwrap_or("POST"),
            webhook.url
        ),
        (Some(kind), None) => format!("kind {kind}"),
        (None, None) => "no target".to_owned(),
    }
}

/// Jobs as a table, one row each.
pub fn job_table(jobs: &[JobView], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            vec![
                job.id.clone(),
                job.state.clone(),
                job.queue.clone(),
                job.kind.clone().unwrap_or_else(|| "(webhook)".to_owned()),
                job.run_at.clone(),
                relative_text(&job.run_at, now),
                format!("{}/{}", job.attempt, job.attempt_max),
                job.priority.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "STATE", "QUEUE", "KIND", "RUN_AT", "WHEN", "ATTEMPT", "PRIORITY",
        ],
        &rows,
    )
}

/// Every field of one job, one per line.
pub fn job_fields(job: &JobView, now: Timestamp) -> String {
    let optional = |time: &Option<String>| time.clone().unwrap_or_else(|| "-".to_owned());
    let backoff = &job.backoff;
    let lease = job.lease.as_ref().map_or_else(
        || "-".to_owned(),
        |lease| {
            format!(
                "held by {} with token {} until {}",
                lease.holder, lease.token, lease.expires_at
            )
        },
    );
    let mut fields = vec![("id", job.id.clone()), ("state", job.state.clone())];
    match &job.webhook {
        Some(webhook) => {
            fields.push(("webhook", target(job)));
            let headers = webhook
                .headers
                .as_ref()
                .map_or_else(String::new, |headers| {
                    headers
                        .iter()
                        .map(|(name, value)| format!("{name}: {value}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                });
            if !headers.is_empty() {
                fields.push(("headers", headers));
            }
            if let Some(timeout_ms) = webhook.timeout_ms {
                fields.push(("timeout", format!("{timeout_ms} ms")));
            }
        }
        None => fields.push(("kind", job.kind.clone().unwrap_or_default())),
    }
    fields.extend([
        ("queue", job.queue.clone()),
        ("priority", job.priority.to_string()),
        ("payload", job.payload.get().to_owned()),
        (
            "run_at",
            format!("{} ({})", job.run_at, relative_text(&job.run_at, now)),
        ),
        (
            "schedule",
            job.schedule
                .as_ref()
                .map_or_else(|| "once".to_owned(), describe_schedule),
        ),
        ("attempt", format!("{} of {}", job.attempt, job.attempt_max)),
        (
            "retry",
            format!(
                "backoff {} ms doubling up to {} ms, {} % jitter",
                backoff.base_ms, backoff.max_ms, backoff.jitter_percent
            ),
        ),
        ("created_at", job.created_at.clone()),
        ("started_at", optional(&job.started_at)),
        ("finished_at", optional(&job.finished_at)),
        (
            "last_error",
            job.last_error.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        ("lease", lease),
    ]);
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (name, value) in fields {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:<width$}  {value}",
            format!("{name}:"),
            width = width + 1
        );
    }
    out
}

/// Queues as a table: counts by state, due jobs, and how long the oldest has waited.
pub fn queue_table(queues: &[QueueView]) -> String {
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|queue| {
            let counts = &queue.counts;
            vec![
                queue.queue.clone(),
                counts.scheduled.to_string(),
                counts.running.to_string(),
                counts.retrying.to_string(),
                counts.succeeded.to_string(),
                counts.dead.to_string(),
                counts.cancelled.to_string(),
                queue.due.to_string(),
                queue
                    .oldest_due_age_ms
                    .map_or_else(|| "-".to_owned(), |age| human(Duration::from_millis(age))),
            ]
        })
        .collect();
    table(
        &[
            "QUEUE",
            "SCHEDULED",
            "RUNNING",
            "RETRYING",
            "SUCCEEDED",
            "DEAD",
            "CANCELLED",
            "DUE",
            "OLDEST_DUE",
        ],
        &rows,
    )
}

pub fn describe_schedule(schedule: &ScheduleSpec) -> String {
    match (&schedule.cron, schedule.interval_ms) {
        (Some(expression), _) => format!(
            "cron {expression:?} in {}",
            schedule.time_zone.as_deref().unwrap_or("UTC")
        ),
        (None, Some(interval_ms)) => {
            format!(
                "every {}",
                interval_text(Duration::from_millis(interval_ms))
            )
        }
        (None, None) => "unknown schedule".to_owned(),
    }
}

/// `in 29.9s` or `3h 12m ago` for an RFC 3339 time, from `now`; empty if it does not parse.
pub fn relative_text(at: &str, now: Timestamp) -> String {
    Timestamp::parse_rfc3339(at).map_or_else(String::new, |at| relative(at, now))
}

/// `in 29.9s` or `3h 12m ago`, from `now`.
pub fn relative(at: Timestamp, now: Timestamp) -> String {
    let micros = at.micros_since(now);
    let span = human(Duration::from_micros(micros.unsigned_abs()));
    if micros >= 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A span for people, to two units at most: `850ms`, `29.9s`, `5m 3s`, `21h 59m`, `3d 4h`.
pub fn human(span: Duration) -> String {
    let seconds = span.as_secs();
    let (minutes, hours, days) = (seconds / 60, seconds / 3_600, seconds / 86_400);
    if seconds == 0 {
        format!("{}ms", span.as_millis())
    } else if minutes == 0 {
        format!("{:.1}s", span.as_secs_f64())
    } else if hours == 0 {
        format!("{minutes}m {}s", seconds % 60)
    } else if days == 0 {
        format!("{hours}h {}m", minutes % 60)
    } else {
        format!("{days}d {}h", hours % 24)
    }
}

/// An interval in the largest unit `--every` accepts that states it exactly: `5m`, `1500ms`.
fn interval_text(interval: Duration) -> String {
    let millis = interval.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    units
        .iter()
        .find(|(size, _)| millis.is_multiple_of(*size))
        .map_or_else(
            || format!("{millis}ms"),
            |(size, unit)| format!("{}{unit}", millis / size),
        )
}

/// What a schedule's occurrences run: `kind K` or `webhook POST https://...`.
pub fn schedule_target(schedule: &ScheduleView) -> String {
    match (&schedule.kind, &schedule.webhook) {
        (_, Some(webhook)) => format!(
            "webhook {} {}",
            webhook.method.as_deref().unwrap_or("POST"),
            webhook.url
        ),
        (Some(kind), None) => format!("kind {kind}"),
        (None, None) => "no target".to_owned(),
    }
}

/// When a schedule fires: `cron "30 2 * * *" in Europe/Berlin` or `every 5m`.
pub fn schedule_recurrence(schedule: &ScheduleView) -> String {
    describe_schedule(&ScheduleSpec {
        cron: schedule.cron.clone(),
        time_zone: schedule.time_zone.clone(),
        interval_ms: schedule.interval_ms,
    })
}

/// Schedules as a table, one row each.
pub fn schedule_table(schedules: &[ScheduleView], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|schedule| {
            vec![
                schedule.name.clone(),
                schedule.status.clone(),
                schedule_recurrence(schedule),
                schedule_target(schedule),
                schedule.next_occurrence.as_deref().map_or_else(
                    || "-".to_owned(),
                    |next| format!("{next} ({})", relative_text(next, now)),
                ),
                schedule.fired.to_string(),
                schedule.skipped.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "STATUS", "WHEN", "TARGET", "NEXT", "FIRED", "SKIPPED",
        ],
        &rows,
    )
}

/// Every field of one schedule, one per line.
pub fn schedule_fields(schedule: &ScheduleView, now: Timestamp) -> String {
    let optional = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
    let misfire = &schedule.misfire;
    let policy = match misfire.limit {
        Some(limit) => format!("{} (at most {limit})", misfire.policy),
        None => misfire.policy.clone(),
    };
    let backoff = &schedule.backoff;
    let fields = vec![
        ("id", schedule.id.clone()),
        ("name", schedule.name.clone()),
        ("status", schedule.status.clone()),
        ("when", schedule_recurrence(schedule)),
        ("start_at", optional(&schedule.start_at)),
        ("end_at", optional(&schedule.end_at)),
        (
            "jitter",
            interval_text(Duration::from_millis(schedule.jitter_ms)),
        ),
        ("target", schedule_target(schedule)),
        ("payload", schedule.payload.get().to_owned()),
        ("queue", schedule.queue.clone()),
        ("priority", schedule.priority.to_string()),
        ("attempts", format!("at most {}", schedule.attempt_max)),
        (
            "retry",
            format!(
                "backoff {} ms doubling up to {} ms, {} % jitter",
                backoff.base_ms, backoff.max_ms, backoff.jitter_percent
            ),
        ),
        (
            "misfire",
            format!(
                "{policy}, grace {}, catch-up window {}",
                interval_text(Duration::from_millis(misfire.grace_ms)),
                interval_text(Duration::from_millis(misfire.catch_up_window_ms))
            ),
        ),
        ("overlap", schedule.overlap.clone()),
        (
            "next",
            schedule.next_occurrence.as_deref().map_or_else(
                || "-".to_owned(),
                |next| format!("{next} ({})", relative_text(next, now)),
            ),
        ),
        ("high_water", schedule.high_water.clone()),
        (
            "counts",
            format!("{} fired, {} skipped", schedule.fired, schedule.skipped),
        ),
        ("last_job", optional(&schedule.last_job)),
        ("buffered", optional(&schedule.buffered)),
        ("last_error", optional(&schedule.last_error)),
        ("version", schedule.version.to_string()),
        ("created_at", schedule.created_at.clone()),
        ("updated_at", schedule.updated_at.clone()),
    ];
    field_list(&fields)
}

fn field_list(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (name, value) in fields {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{:<width$}  {value}",
            format!("{name}:"),
            width = width + 1
        );
    }
    out
}

/// A schedule's ledger as a table, newest first.
pub fn occurrence_table(entries: &[OccurrenceView]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            let detail = match entry.outcome.as_str() {
                "fired" => {
                    let mut detail = format!("job {}", entry.job_id.as_deref().unwrap_or("?"));
                    if entry.manual == Some(true) {
                        detail.push_str(", triggered");
                    }
                    if let Some(late_ms) = entry.late_ms.filter(|late| *late > 0) {
                        let _ = write!(detail, ", {} late", human(Duration::from_millis(late_ms)));
                    }
                    if entry.moved == Some(true) {
                        detail.push_str(", moved by a clock change");
                    }
                    detail
                }
                "skipped" => {
                    let reason = entry.reason.as_deref().unwrap_or("?");
                    match (&entry.last_at, entry.count) {
                        (Some(last_at), count) if count > 1 => {
                            format!("{reason}: {count} occurrences, the last at {last_at}")
                        }
                        _ => reason.to_owned(),
                    }
                }
                _ => entry.error.clone().unwrap_or_default(),
            };
            vec![
                entry.seq.to_string(),
                entry.at.clone(),
                entry.outcome.clone(),
                detail,
            ]
        })
        .collect();
    table(&["SEQ", "AT", "OUTCOME", "DETAIL"], &rows)
}

/// An explanation for people: a line saying what was asked, a table of the firings (local
/// time with the weekday, offset and zone abbreviation, UTC, note) and, for an outage, what
/// recovering from it fires and skips, and why.
pub fn explanation(answer: &Explanation) -> String {
    let recurrence = describe_schedule(&ScheduleSpec {
        cron: answer.cron.clone(),
        time_zone: answer.cron.as_ref().map(|_| answer.time_zone.clone()),
        interval_ms: answer.interval_ms,
    });
    let class = match (&answer.cron, answer.fixed_time) {
        (Some(_), true) => ", fixed-time",
        (Some(_), false) => ", wildcard",
        (None, _) => "",
    };
    let mut out = format!(
        "{recurrence}{class} (tzdb {}), from {}\n",
        answer.tzdb_version, answer.from
    );
    let with_seconds = answer
        .occurrences
        .iter()
        .filter(|occurrence| occurrence.event == "fire")
        .any(|occurrence| occurrence.local.get(16..19).unwrap_or(":00") != ":00");
    let rows: Vec<Vec<String>> = answer
        .occurrences
        .iter()
        .map(|occurrence| {
            let offset = match &occurrence.abbreviation {
                Some(abbreviation) if abbreviation != &occurrence.offset => {
                    format!("{} {abbreviation}", occurrence.offset)
                }
                _ => occurrence.offset.clone(),
            };
            let local = if occurrence.event == "skip" {
                "-".to_owned()
            } else {
                local_text(&occurrence.local, with_seconds)
            };
            vec![
                local,
                offset,
                occurrence.utc.clone(),
                occurrence.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(&["LOCAL", "OFFSET", "UTC", "NOTE"], &rows));
    if let Some(end) = &answer.end {
        let _ = writeln!(out, "no more firings: {end}");
    }
    if let Some(recovery) = &answer.recovery {
        let misfire = &recovery.misfire;
        let policy = match misfire.limit {
            Some(limit) => format!("{} (at most {limit})", misfire.policy),
            None => misfire.policy.clone(),
        };
        let _ = writeln!(
            out,
            "\nrecovering at {} from an outage since {} (misfire {policy}, grace {}, catch-up \
             window {}; overlap {}{}): {} fired, {} skipped",
            recovery.outage_to,
            recovery.outage_from,
            interval_text(Duration::from_millis(misfire.grace_ms)),
            interval_text(Duration::from_millis(misfire.catch_up_window_ms)),
            recovery.overlap,
            if recovery.previous_unfinished {
                ", the previous job unfinished"
            } else {
                ""
            },
            recovery.fired,
            recovery.skipped,
        );
        if recovery.entries.is_empty() {
            out.push_str("nothing was due\n");
        } else {
            let rows: Vec<Vec<String>> = recovery
                .entries
                .iter()
                .map(|entry| {
                    let at = match &entry.last_at {
                        Some(last_at) if last_at != &entry.at => {
                            format!("{} .. {last_at}", entry.at)
                        }
                        _ => entry.at.clone(),
                    };
                    vec![
                        entry.outcome.clone(),
                        at,
                        entry.count.to_string(),
                        entry.run_at.clone().unwrap_or_else(|| "-".to_owned()),
                        entry.why.clone(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &["OUTCOME", "OCCURRENCE", "COUNT", "RUN_AT", "WHY"],
                &rows,
            ));
        }
        if let Some(buffered) = &recovery.buffered {
            let _ = writeln!(
                out,
                "buffered: {buffered}, fired when the previous job finishes"
            );
        }
        if recovery.cancels_previous {
            out.push_str("the previous occurrence's job is cancelled\n");
        }
        if !recovery.complete {
            let _ = writeln!(
                out,
                "decided up to {} here; the engine goes on catching up over further looks",
                recovery.decided_through
            );
        }
    }
    out
}

/// `Sun 2026-03-29 03:00` from `2026-03-29T03:00:00+02:00` (seconds only when asked).
fn local_text(local: &str, with_seconds: bool) -> String {
    let (Some(date), Some(clock)) = (local.get(..10), local.get(11..)) else {
        return local.to_owned();
    };
    let clock = clock
        .get(..if with_seconds { 8 } else { 5 })
        .unwrap_or(clock);
    match weekday(date) {
        Some(day) => format!("{day} {date} {clock}"),
        None => format!("{date} {clock}"),
    }
}

/// The weekday of a `YYYY-MM-DD` date (Sakamoto's method, proleptic Gregorian).
fn weekday(date: &str) -> Option<&'static str> {
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: usize = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) {
        return None;
    }
    const OFFSETS: [i64; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let year = if month < 3 { year - 1 } else { year };
    let index = (year + year.div_euclid(4) - year.div_euclid(100)
        + year.div_euclid(400)
        + OFFSETS[month - 1]
        + day)
        .rem_euclid(7);
    Some(["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][index as usize])
}

/// Left-aligned columns, two spaces apart, with a header row.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|header| (*header).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            // Writing to a String cannot fail.
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_in_two_units_at_most() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(29_940)), "29.9s");
        assert_eq!(human(Duration::from_secs(303)), "5m 3s");
        assert_eq!(human(Duration::from_secs(79_173)), "21h 59m");
        assert_eq!(human(Duration::from_secs(4 * 86_400 + 7_300)), "4d 2h");
        assert_eq!(interval_text(Duration::from_secs(300)), "5m");
        assert_eq!(interval_text(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(interval_text(Duration::from_secs(86_400)), "1d");
    }

    #[test]
    fn local_times_read_with_their_weekday() {
        assert_eq!(weekday("2026-03-29"), Some("Sun"));
        assert_eq!(weekday("2026-10-25"), Some("Sun"));
        assert_eq!(weekday("2000-02-29"), Some("Tue"));
        assert_eq!(weekday("2026-13-01"), None);
        assert_eq!(
            local_text("2026-03-29T03:00:00+02:00", false),
            "Sun 2026-03-29 03:00"
        );
        assert_eq!(
            local_text("2026-03-29T03:00:15+02:00", true),
            "Sun 2026-03-29 03:00:15"
        );
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![vec!["a".to_owned(), "long cell".to_owned()]];
        assert_eq!(table(&["ONE", "TWO"], &rows), "ONE  TWO\na    long cell\n");
    }
}
