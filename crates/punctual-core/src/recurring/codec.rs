//! How a schedule and a ledger entry are kept in a row, once for every store: a schedule's
//! definition is one JSON text (versioned, so a later format can read an earlier one), and a
//! ledger entry's outcome is a few integer columns whose codes are fixed here.
//!
//! The codes never change meaning; a new outcome or reason takes a new number.
//!
//! | outcome | code |   | skip reason    | code |
//! | ------- | ---- | - | -------------- | ---- |
//! | fired   | 0    |   | misfire        | 0    |
//! | skipped | 1    |   | overlap        | 1    |
//! | failed  | 2    |   | paused         | 2    |
//! |         |      |   | outside_window | 3    |
//! |         |      |   | clock_change   | 4    |

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    JobTemplate, Misfire, MisfireAction, OccurrenceOutcome, OverlapPolicy, ScheduleDefinition,
    SkipReason,
};
use crate::job::{JobId, Kind, Payload, Priority, Queue, ScheduleName};
use crate::retry::RetryPolicy;
use crate::schedule::Schedule;
use crate::time::Timestamp;

/// The format version written by `encode_definition`.
const FORMAT: u64 = 1;

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A definition's JSON text, without its name (a column of its own, for its unique index).
pub fn encode_definition(definition: &ScheduleDefinition) -> String {
    let recurrence = match definition.recurrence.cron_expression() {
        Some((expression, zone)) => json!({ "cron": expression, "time_zone": zone }),
        None => json!({
            "interval_us": definition.recurrence.interval_duration().map(micros),
        }),
    };
    let template = &definition.template;
    let (action, limit) = match definition.misfire.action {
        MisfireAction::Skip => ("skip", None),
        MisfireAction::Latest => ("latest", None),
        MisfireAction::All { limit } => ("all", Some(limit)),
    };
    json!({
        "v": FORMAT,
        "recurrence": recurrence,
        "start_us": definition.start_at.map(Timestamp::as_micros),
        "end_us": definition.end_at.map(Timestamp::as_micros),
        "jitter_us": micros(definition.jitter),
        "queue": template.queue.as_str(),
        "kind": template.kind.as_str(),
        "payload": template.payload.as_str(),
        "priority": template.priority.get(),
        "attempt_max": template.attempt_max,
        "retry": {
            "base_us": micros(template.retry.backoff_base()),
            "max_us": micros(template.retry.backoff_max()),
            "jitter_percent": template.retry.jitter_percent(),
        },
        "misfire": {
            "action": action,
            "limit": limit,
            "grace_us": micros(definition.misfire.grace),
            "window_us": micros(definition.misfire.catch_up_window),
        },
        "overlap": definition.overlap.as_str(),
    })
    .to_string()
}

/// Reads back what `encode_definition` wrote, under `name`. An error says what is wrong; a
/// store reports it as corrupt data.
pub fn decode_definition(name: &str, text: &str) -> Result<ScheduleDefinition, String> {
    let value: Value = serde_json::from_str(text).map_err(|error| error.to_string())?;
    let field = |key: &str| value.get(key).filter(|field| !field.is_null());
    let version = field("v").and_then(Value::as_u64).unwrap_or(0);
    if version != FORMAT {
        return Err(format!("unknown schedule format {version}"));
    }
    let text_of = |value: Option<&Value>, key: &str| -> Result<String, String> {
        value
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{key} missing"))
    };
    let u64_of = |value: Option<&Value>, key: &str| -> Result<u64, String> {
        value
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("{key} missing"))
    };
    let error = |error: crate::ValidationError| error.to_string();
    let recurrence = field("recurrence").ok_or("recurrence missing")?;
    let recurrence = match recurrence.get("cron").and_then(Value::as_str) {
        Some(expression) => {
            let zone = text_of(recurrence.get("time_zone"), "time_zone")?;
            Schedule::cron(expression, &zone).map_err(error)?
        }
        None => Schedule::interval(Duration::from_micros(u64_of(
            recurrence.get("interval_us"),
            "interval_us",
        )?))
        .map_err(error)?,
    };
    let instant = |key: &str| {
        field(key)
            .and_then(Value::as_i64)
            .map(Timestamp::from_micros)
    };
    let retry = field("retry").ok_or("retry missing")?;
    let retry = RetryPolicy::new(
        Duration::from_micros(u64_of(retry.get("base_us"), "base_us")?),
        Duration::from_micros(u64_of(retry.get("max_us"), "max_us")?),
        u8::try_from(u64_of(retry.get("jitter_percent"), "jitter_percent")?)
            .map_err(|_| "jitter_percent out of range")?,
    )
    .map_err(error)?;
    let template = JobTemplate {
        queue: Queue::new(&text_of(field("queue"), "queue")?).map_err(error)?,
        kind: Kind::new(&text_of(field("kind"), "kind")?).map_err(error)?,
        payload: Payload::from_json_text(&text_of(field("payload"), "payload")?).map_err(error)?,
        priority: Priority::new(
            u8::try_from(u64_of(field("priority"), "priority")?)
                .map_err(|_| "priority out of range")?,
        )
        .map_err(error)?,
        attempt_max: u32::try_from(u64_of(field("attempt_max"), "attempt_max")?)
            .map_err(|_| "attempt_max out of range")?,
        retry,
    };
    let misfire = field("misfire").ok_or("misfire missing")?;
    let action = match misfire.get("action").and_then(Value::as_str) {
        Some("skip") => MisfireAction::Skip,
        Some("latest") => MisfireAction::Latest,
        Some("all") => MisfireAction::All {
            limit: u32::try_from(u64_of(misfire.get("limit"), "limit")?)
                .map_err(|_| "limit out of range")?,
        },
        other => return Err(format!("unknown misfire action {other:?}")),
    };
    let definition = ScheduleDefinition {
        name: ScheduleName::new(name).map_err(error)?,
        recurrence,
        start_at: instant("start_us"),
        end_at: instant("end_us"),
        jitter: Duration::from_micros(u64_of(field("jitter_us"), "jitter_us")?),
        template,
        misfire: Misfire {
            action,
            grace: Duration::from_micros(u64_of(misfire.get("grace_us"), "grace_us")?),
            catch_up_window: Duration::from_micros(u64_of(misfire.get("window_us"), "window_us")?),
        },
        overlap: OverlapPolicy::parse(&text_of(field("overlap"), "overlap")?).map_err(error)?,
    };
    definition.validate().map_err(error)?;
    Ok(definition)
}

impl SkipReason {
    pub fn code(self) -> i64 {
        match self {
            SkipReason::Misfire => 0,
            SkipReason::Overlap => 1,
            SkipReason::Paused => 2,
            SkipReason::OutsideWindow => 3,
            SkipReason::ClockChange => 4,
        }
    }

    pub fn from_code(code: i64) -> Option<SkipReason> {
        SkipReason::ALL
            .into_iter()
            .find(|reason| reason.code() == code)
    }
}

/// A ledger entry's outcome as the columns both SQL stores keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutcomeColumns {
    /// 0 fired, 1 skipped, 2 failed.
    pub outcome: i64,
    pub reason: Option<i64>,
    pub job: Option<JobId>,
    pub late_us: i64,
    pub count: i64,
    pub last_at_us: Option<i64>,
    /// Bit 0: manual; bit 1: moved by a clock change.
    pub flags: i64,
    pub error: Option<String>,
}

impl OutcomeColumns {
    pub fn encode(outcome: &OccurrenceOutcome) -> OutcomeColumns {
        let blank = OutcomeColumns {
            outcome: 0,
            reason: None,
            job: None,
            late_us: 0,
            count: 1,
            last_at_us: None,
            flags: 0,
            error: None,
        };
        match outcome {
            OccurrenceOutcome::Fired {
                job,
                late,
                manual,
                moved,
            } => OutcomeColumns {
                job: Some(*job),
                late_us: i64::try_from(late.as_micros()).unwrap_or(i64::MAX),
                flags: i64::from(*manual) | (i64::from(*moved) << 1),
                ..blank
            },
            OccurrenceOutcome::Skipped {
                reason,
                count,
                last_at,
            } => OutcomeColumns {
                outcome: 1,
                reason: Some(reason.code()),
                count: i64::try_from(*count).unwrap_or(i64::MAX),
                last_at_us: Some(last_at.as_micros()),
                ..blank
            },
            OccurrenceOutcome::Failed { error } => OutcomeColumns {
                outcome: 2,
                error: Some(error.clone()),
                ..blank
            },
        }
    }

    pub fn decode(&self) -> Result<OccurrenceOutcome, String> {
        match self.outcome {
            0 => Ok(OccurrenceOutcome::Fired {
                job: self.job.ok_or("a fired entry without its job")?,
                late: Duration::from_micros(u64::try_from(self.late_us).unwrap_or(0)),
                manual: self.flags & 1 != 0,
                moved: self.flags & 2 != 0,
            }),
            1 => Ok(OccurrenceOutcome::Skipped {
                reason: self
                    .reason
                    .and_then(SkipReason::from_code)
                    .ok_or_else(|| format!("unknown skip reason {:?}", self.reason))?,
                count: u64::try_from(self.count).unwrap_or(0),
                last_at: Timestamp::from_micros(
                    self.last_at_us
                        .ok_or("a skipped entry without its last time")?,
                ),
            }),
            2 => Ok(OccurrenceOutcome::Failed {
                error: self.error.clone().unwrap_or_default(),
            }),
            other => Err(format!("unknown occurrence outcome {other}")),
        }
    }
}
