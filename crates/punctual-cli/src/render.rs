//! The output of the job and queue commands: tables and field lists for people, JSON lines for
//! scripts. Both modes print from the API's wire types (`punctual_server::dto`), so a script sees
//! one format whether the jobs came from a server or a store.
//!
//! Must not fetch anything: it formats what it is given, with `now` for relative times.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use punctual_core::Timestamp;
use punctual_server::dto::{JobView, QueueView, ScheduleSpec};
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
    fn tables_align_columns() {
        let rows = vec![vec!["a".to_owned(), "long cell".to_owned()]];
        assert_eq!(table(&["ONE", "TWO"], &rows), "ONE  TWO\na    long cell\n");
    }
}
