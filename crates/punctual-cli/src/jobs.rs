//! `punctual schedule` and `punctual jobs`: put a job into a store, and list, show, count or
//! cancel the jobs in it: a SQLite file (`--store sqlite:PATH`, `punctual.db` by default), or a
//! PostgreSQL database shared by a cluster (`--store postgres://... [--schema NAME]`), whose
//! clock then gives every `now`.
//!
//! Every input is validated into a `NewJob` by punctual-core before the store is opened, so a
//! refused input stores nothing. These commands run no handlers (that is `punctual serve`'s
//! work); they talk to the store directly. The JSON output goes through the DTOs below, because
//! the core types carry no serde derives.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Subcommand};
use punctual_core::{
    Clock, Cursor, Job, JobFilter, JobId, JobOptions, JobState, Kind, NewJob, Payload, Priority,
    Queue, Schedule, StateCount, Store, SystemClock, Timestamp, limits,
};
use serde::Serialize;

use punctual_server::store_url::{self, OpenedStore, PostgresSettings, PostgresUrl, StoreUrl};

/// The SQLite file of the job commands when `--store` is not given, in the working directory.
const SQLITE_PATH_DEFAULT: &str = "punctual.db";
/// The page size of `jobs list` when `--limit` is not given.
const LIST_LIMIT_DEFAULT: usize = 50;
/// The longest duration `--in` and `--every` accept as text, a guard before parsing.
const DURATION_TEXT_MAX: usize = 32;

#[derive(clap::Args)]
#[command(group(ArgGroup::new("when").required(true).args(["at", "delay", "cron", "every"])))]
pub struct ScheduleArgs {
    /// The store to put the job in: sqlite:PATH (a SQLite file, created if missing), or
    /// postgres://user@host:port/database for a cluster (its schema is migrated if needed)
    /// [default: sqlite:punctual.db].
    #[arg(long, value_name = "STORE")]
    store: Option<StoreUrl>,
    /// With a PostgreSQL --store: the schema punctual's tables are in [default: the
    /// connection's search_path, usually public].
    #[arg(long, value_name = "NAME", requires = "store")]
    schema: Option<String>,
    /// The job's kind: the name of the handler that will run it.
    #[arg(long, value_name = "KIND")]
    kind: String,
    /// The job's data, as JSON text [default: null].
    #[arg(long, value_name = "JSON", conflicts_with = "payload_file")]
    payload: Option<String>,
    /// Read the job's data (JSON) from this file instead.
    #[arg(long, value_name = "PATH")]
    payload_file: Option<PathBuf>,
    /// Run once at this instant (RFC 3339, like 2026-11-29T09:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    at: Option<String>,
    /// Run once after this long (like 500ms, 30s, 5m, 2h, 1d).
    #[arg(long = "in", value_name = "DURATION")]
    delay: Option<String>,
    /// Run at every occurrence of this cron expression (5 fields, or 6 with seconds first).
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// The IANA time zone the cron expression is read in [default: UTC].
    // Checked in `new_job`, not with clap's `requires`: clap waives a requirement on an argument
    // that conflicts with one present, and `--cron` conflicts with `--in` and `--at`.
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
    /// Run repeatedly, this long apart (like 30s, 5m).
    #[arg(long, value_name = "DURATION")]
    every: Option<String>,
    /// The queue to put the job in [default: default].
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,
    /// 0 is the most urgent, 9 the least [default: 0].
    #[arg(long, value_name = "N")]
    priority: Option<u32>,
    /// How many attempts the job may have, 1 to 1000 [default: 20].
    #[arg(long, value_name = "N")]
    attempts: Option<u32>,
    /// Print the stored job as one line of JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct JobsArgs {
    /// The store to read: sqlite:PATH (a SQLite file, which must exist), or
    /// postgres://user@host:port/database for a cluster (its schema must exist: `punctual
    /// migrate` or a node creates it) [default: sqlite:punctual.db].
    #[arg(long, value_name = "STORE", global = true)]
    store: Option<StoreUrl>,
    /// With a PostgreSQL --store: the schema punctual's tables are in [default: the
    /// connection's search_path, usually public].
    #[arg(long, value_name = "NAME", global = true, requires = "store")]
    schema: Option<String>,
    /// Print JSON lines instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List jobs in id (creation) order, a page at a time.
    List(ListArgs),
    /// Show one job in full.
    Show {
        /// The job's id.
        id: String,
    },
    /// Count jobs by queue and state.
    Counts,
    /// Cancel a job that has not finished.
    Cancel {
        /// The job's id.
        id: String,
    },
}

#[derive(clap::Args)]
struct ListArgs {
    /// Only jobs in this state (scheduled, running, retrying, succeeded, dead, cancelled).
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Only jobs in this queue.
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,
    /// Only jobs of this kind.
    #[arg(long, value_name = "KIND")]
    kind: Option<String>,
    /// At most this many jobs, 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = LIST_LIMIT_DEFAULT)]
    limit: usize,
    /// Start after this job id (the last id of the previous page).
    #[arg(long, value_name = "ID")]
    after: Option<String>,
}

pub fn schedule(args: ScheduleArgs) -> anyhow::Result<()> {
    // Everything is checked before the store is opened: a refused input leaves no trace.
    new_job(&args, SystemClock.now())?;
    let target = Target::from_args(args.store.clone(), args.schema.clone())?;
    block_on(async {
        let opened = target.open(OpenMode::CreateIfMissing).await?;
        let (store, clock) = (opened.store.clone(), opened.clock.clone());
        // Made again on the store's clock (the database's, for PostgreSQL), so `--in` counts
        // from the time every node of a cluster goes by.
        let job = new_job(&args, clock.now())?;
        let ids = store
            .insert(vec![job], clock.now())
            .await
            .context("storing the job")?;
        let id = *ids
            .first()
            .context("the store returned no id for the job")?;
        let job = store
            .get(id)
            .await
            .context("reading the stored job back")?
            .with_context(|| format!("job {id} was stored but cannot be read back"))?;
        if args.json {
            print_json(&JobDto::from(&job))?;
        } else {
            println!("scheduled job {id}");
            println!(
                "  kind {}, queue {}, run_at {} ({})",
                job.kind,
                job.queue,
                job.run_at,
                relative(job.run_at, clock.now())
            );
            if let Some(schedule) = &job.schedule {
                println!("  recurring: {}", describe_schedule(schedule));
            }
            println!("  {}", target.describe());
        }
        drop(store);
        opened.close().await;
        Ok(())
    })
}

/// A `jobs` command with its input checked.
enum Request {
    List(JobFilter, Option<Cursor>, usize),
    Show(JobId),
    Counts,
    Cancel(JobId),
}

pub fn run(args: JobsArgs) -> anyhow::Result<()> {
    let target = Target::from_args(args.store, args.schema)?;
    let json = args.json;
    // Checked before the store is opened, like every input.
    let request = match &args.command {
        JobsCommand::List(list_args) => {
            let (filter, after, limit) = list_request(list_args)?;
            Request::List(filter, after, limit)
        }
        JobsCommand::Show { id } => Request::Show(parse_id(id)?),
        JobsCommand::Counts => Request::Counts,
        JobsCommand::Cancel { id } => Request::Cancel(parse_id(id)?),
    };
    block_on(async {
        let opened = target.open(OpenMode::MustExist).await?;
        let (store, now) = (opened.store.clone(), opened.clock.now());
        let result = match request {
            Request::List(filter, after, limit) => {
                list(store.as_ref(), now, filter, after, limit, json).await
            }
            Request::Show(id) => show_one(store.as_ref(), now, id, &target, json).await,
            Request::Counts => match store.counts().await.context("counting jobs") {
                Ok(counts) => print_counts(&counts, json),
                Err(error) => Err(error),
            },
            Request::Cancel(id) => cancel(store.as_ref(), now, id, json).await,
        };
        drop(store);
        opened.close().await;
        result
    })
}

async fn show_one(
    store: &dyn Store,
    now: Timestamp,
    id: JobId,
    target: &Target,
    json: bool,
) -> anyhow::Result<()> {
    let job = store
        .get(id)
        .await
        .with_context(|| format!("reading job {id}"))?
        .with_context(|| format!("no job {id} in {}", target.describe()))?;
    if json {
        print_json(&JobDto::from(&job))
    } else {
        print!("{}", show(&job, now));
        Ok(())
    }
}

async fn cancel(store: &dyn Store, now: Timestamp, id: JobId, json: bool) -> anyhow::Result<()> {
    let job = store
        .cancel(id, now)
        .await
        .with_context(|| format!("cancelling job {id}"))?;
    if json {
        print_json(&JobDto::from(&job))
    } else {
        println!(
            "cancelled job {id} (kind {}, queue {})",
            job.kind, job.queue
        );
        Ok(())
    }
}

/// Turns the command line into a validated job, judged against `now`.
fn new_job(args: &ScheduleArgs, now: Timestamp) -> anyhow::Result<NewJob> {
    let kind = Kind::new(&args.kind).context("invalid --kind")?;
    let payload = match (&args.payload, &args.payload_file) {
        (Some(text), _) => Payload::from_json_text(text).context("invalid --payload")?,
        (None, Some(file)) => read_payload_file(file)?,
        (None, None) => Payload::null(),
    };
    let mut options = JobOptions::default();
    if let Some(queue) = &args.queue {
        options = options.queue(Queue::new(queue).context("invalid --queue")?);
    }
    if let Some(priority) = args.priority {
        let limit = Priority::LOWEST.get();
        // A value beyond u8 is out of range just like 10 is; say so in the same words.
        let priority = u8::try_from(priority)
            .ok()
            .and_then(|priority| Priority::new(priority).ok())
            .with_context(|| format!("invalid --priority: {priority} is outside 0 ..= {limit}"))?;
        options = options.priority(priority);
    }
    if let Some(attempts) = args.attempts {
        if attempts == 0 || attempts > limits::ATTEMPT_MAX_LIMIT {
            anyhow::bail!(
                "invalid --attempts: {attempts} is outside 1 ..= {}",
                limits::ATTEMPT_MAX_LIMIT
            );
        }
        options = options.attempt_max(attempts);
    }

    if args.tz.is_some() && args.cron.is_none() {
        anyhow::bail!("--tz applies only to --cron");
    }

    let job = if let Some(at) = &args.at {
        let run_at = Timestamp::parse_rfc3339(at).with_context(|| {
            format!("invalid --at {at:?}: expected RFC 3339, like 2026-11-29T09:00:00Z")
        })?;
        NewJob::new(kind, payload, run_at, options, now).context("invalid --at")?
    } else if let Some(delay) = &args.delay {
        let delay = parse_duration(delay).context("invalid --in")?;
        NewJob::new(kind, payload, now.add(delay), options, now).context("invalid --in")?
    } else if let Some(expression) = &args.cron {
        let zone = args.tz.as_deref().unwrap_or("UTC");
        let schedule = Schedule::cron(expression, zone).context("invalid --cron or --tz")?;
        NewJob::recurring(kind, payload, schedule, options, now).context("invalid --cron")?
    } else if let Some(every) = &args.every {
        let interval = parse_duration(every).context("invalid --every")?;
        let schedule = Schedule::interval(interval).context("invalid --every")?;
        NewJob::recurring(kind, payload, schedule, options, now).context("invalid --every")?
    } else {
        // clap's required group "when" makes one of the four present.
        anyhow::bail!("say when the job runs: --at, --in, --cron or --every");
    };
    Ok(job)
}

/// Reads `--payload-file`, at most one byte past the payload limit: the file's length bounds
/// nothing for `/dev/zero`, a FIFO or a file still growing, which report 0 or too little.
fn read_payload_file(file: &Path) -> anyhow::Result<Payload> {
    let context = || format!("invalid --payload-file {}", file.display());
    let limit = limits::PAYLOAD_BYTES_MAX;
    let opened = std::fs::File::open(file).with_context(context)?;
    // A regular file too large is refused by its length, unread, and the message says its size.
    let metadata = opened.metadata().with_context(context)?;
    if metadata.is_file() && metadata.len() > limit as u64 {
        anyhow::bail!(
            "invalid --payload-file {}: payload is {} bytes; the limit is {limit}",
            file.display(),
            metadata.len()
        );
    }
    let mut bytes = Vec::new();
    opened
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(context)?;
    if bytes.len() > limit {
        anyhow::bail!(
            "invalid --payload-file {}: payload is more than {limit} bytes; the limit is {limit}",
            file.display()
        );
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("payload is not UTF-8 text"))
        .with_context(context)?;
    Payload::from_json_text(&text).with_context(context)
}

/// Parses `500ms`, `30s`, `5m`, `2h` or `1d`: a whole number and one unit.
pub(crate) fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let help = "expected a whole number and a unit, like 500ms, 30s, 5m, 2h or 1d";
    if text.len() > DURATION_TEXT_MAX {
        anyhow::bail!("{text:?} is too long; {help}");
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .with_context(|| format!("{text:?} has no unit; {help}"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("{text:?} does not start with a number; {help}"))?;
    let unit_millis: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("{text:?} has an unknown unit {unit:?}; {help}"),
    };
    let millis = number
        .checked_mul(unit_millis)
        .with_context(|| format!("{text:?} is too long a duration"))?;
    Ok(Duration::from_millis(millis))
}

fn parse_id(text: &str) -> anyhow::Result<JobId> {
    text.parse::<JobId>()
        .with_context(|| format!("invalid job id {text:?}: expected a UUID"))
}

fn list_request(args: &ListArgs) -> anyhow::Result<(JobFilter, Option<Cursor>, usize)> {
    let filter = JobFilter {
        queue: args
            .queue
            .as_deref()
            .map(Queue::new)
            .transpose()
            .context("invalid --queue")?,
        state: args
            .state
            .as_deref()
            .map(str::parse::<JobState>)
            .transpose()
            .map_err(anyhow::Error::msg)
            .context("invalid --state")?,
        kind: args
            .kind
            .as_deref()
            .map(Kind::new)
            .transpose()
            .context("invalid --kind")?,
        ..JobFilter::default()
    };
    let after = args.after.as_deref().map(parse_id).transpose()?.map(Cursor);
    if args.limit == 0 || args.limit > limits::PAGE_SIZE_MAX {
        anyhow::bail!(
            "invalid --limit: {} is outside 1 ..= {}",
            args.limit,
            limits::PAGE_SIZE_MAX
        );
    }
    Ok((filter, after, args.limit))
}

async fn list(
    store: &dyn Store,
    now: Timestamp,
    filter: JobFilter,
    after: Option<Cursor>,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let page = store
        .list(filter, after, limit)
        .await
        .context("listing jobs")?;
    if json {
        for job in &page.jobs {
            print_json(&JobDto::from(job))?;
        }
    } else if page.jobs.is_empty() {
        println!("no jobs");
    } else {
        let rows: Vec<Vec<String>> = page
            .jobs
            .iter()
            .map(|job| {
                vec![
                    job.id.to_string(),
                    job.state.to_string(),
                    job.queue.to_string(),
                    job.kind.to_string(),
                    job.run_at.to_string(),
                    relative(job.run_at, now),
                    format!("{}/{}", job.attempt, job.attempt_max),
                    job.priority.get().to_string(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "ID", "STATE", "QUEUE", "KIND", "RUN_AT", "WHEN", "ATTEMPT", "PRIORITY"
                ],
                &rows
            )
        );
    }
    // On stderr, so that JSON lines on stdout stay one kind of record.
    if let Some(Cursor(last)) = page.next {
        eprintln!("more jobs may follow: add --after {last}");
    }
    Ok(())
}

fn print_counts(counts: &[StateCount], json: bool) -> anyhow::Result<()> {
    if json {
        for count in counts {
            print_json(&CountDto {
                queue: count.queue.as_str(),
                state: count.state.as_str(),
                count: count.count,
            })?;
        }
        return Ok(());
    }
    if counts.is_empty() {
        println!("no jobs");
        return Ok(());
    }
    let mut rows: Vec<Vec<String>> = counts
        .iter()
        .map(|count| {
            vec![
                count.queue.to_string(),
                count.state.to_string(),
                count.count.to_string(),
            ]
        })
        .collect();
    let total: u64 = counts.iter().map(|count| count.count).sum();
    rows.push(vec!["total".to_owned(), String::new(), total.to_string()]);
    print!("{}", table(&["QUEUE", "STATE", "COUNT"], &rows));
    Ok(())
}

/// Every field of one job, one per line; `now` for the relative times.
fn show(job: &Job, now: Timestamp) -> String {
    let optional = |time: Option<Timestamp>| time.map_or_else(|| "-".to_owned(), |t| t.to_string());
    let retry = &job.retry;
    let lease = job.lease.as_ref().map_or_else(
        || "-".to_owned(),
        |lease| {
            format!(
                "held by {} with token {} until {}",
                lease.holder, lease.token, lease.expires_at
            )
        },
    );
    let fields = [
        ("id", job.id.to_string()),
        ("state", job.state.to_string()),
        ("kind", job.kind.to_string()),
        ("queue", job.queue.to_string()),
        ("priority", job.priority.get().to_string()),
        ("payload", job.payload.as_str().to_owned()),
        (
            "run_at",
            format!("{} ({})", job.run_at, relative(job.run_at, now)),
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
                retry.backoff_base().as_millis(),
                retry.backoff_max().as_millis(),
                retry.jitter_percent()
            ),
        ),
        ("created_at", job.created_at.to_string()),
        ("started_at", optional(job.started_at)),
        ("finished_at", optional(job.finished_at)),
        (
            "last_error",
            job.last_error.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        ("lease", lease),
    ];
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

fn describe_schedule(schedule: &Schedule) -> String {
    match (schedule.cron_expression(), schedule.interval_duration()) {
        (Some((expression, zone)), _) => format!("cron {expression:?} in {zone}"),
        (None, Some(interval)) => format!("every {}", interval_text(interval)),
        (None, None) => "unknown schedule".to_owned(),
    }
}

/// `in 29.9s` or `3h 12m ago`, from `now`.
fn relative(at: Timestamp, now: Timestamp) -> String {
    let micros = at.micros_since(now);
    let span = human(Duration::from_micros(micros.unsigned_abs()));
    if micros >= 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A span for people, to two units at most: `850ms`, `29.9s`, `5m 3s`, `21h 59m`, `3d 4h`.
fn human(span: Duration) -> String {
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
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
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

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string(value).context("encoding JSON output")?
    );
    Ok(())
}

/// Where a job command finds its jobs.
enum Target {
    Sqlite(PathBuf),
    Postgres {
        url: PostgresUrl,
        schema: Option<String>,
    },
}

impl Target {
    fn from_args(store: Option<StoreUrl>, schema: Option<String>) -> anyhow::Result<Target> {
        let store =
            store.unwrap_or_else(|| StoreUrl::Sqlite(Some(PathBuf::from(SQLITE_PATH_DEFAULT))));
        match store {
            StoreUrl::Postgres(url) => Ok(Target::Postgres { url, schema }),
            _ if schema.is_some() => {
                anyhow::bail!("--schema applies only to a PostgreSQL store (postgres://...)")
            }
            StoreUrl::Sqlite(Some(path)) => Ok(Target::Sqlite(path)),
            StoreUrl::Sqlite(None) => anyhow::bail!(
                "--store must name a store that outlives this command: sqlite:PATH or \
                 postgres://..."
            ),
        }
    }

    /// For messages: `database PATH` or `PostgreSQL URL, schema NAME`.
    fn describe(&self) -> String {
        match self {
            Target::Sqlite(path) => format!("database {}", path.display()),
            Target::Postgres { url, schema } => {
                let schema = schema.as_deref().unwrap_or("(default search_path)");
                format!("PostgreSQL {}, schema {schema}", url.redacted())
            }
        }
    }

    async fn open(&self, mode: OpenMode) -> anyhow::Result<OpenedStore> {
        match self {
            Target::Sqlite(path) => {
                if mode == OpenMode::MustExist && !path.exists() {
                    anyhow::bail!(
                        "no database at {} (schedule a job first, or name another with \
                         --store sqlite:PATH)",
                        path.display()
                    );
                }
                let url = StoreUrl::Sqlite(Some(path.clone()));
                Ok(store_url::open(&url, &PostgresSettings::default()).await?)
            }
            Target::Postgres { url, schema } => {
                let settings = PostgresSettings {
                    schema: schema.clone(),
                    pool_size: 2,
                    apply_migrations: mode == OpenMode::CreateIfMissing,
                    ..PostgresSettings::default()
                };
                let url = StoreUrl::Postgres(url.clone());
                Ok(store_url::open(&url, &settings).await?)
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpenMode {
    /// `schedule` makes a new database (or migrates a PostgreSQL schema).
    CreateIfMissing,
    /// Reading commands refuse a missing file (or schema) rather than create an empty one at a
    /// mistyped name.
    MustExist,
}

/// Runs one command's store calls on a small runtime of its own.
fn block_on<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(work)
}

/// A job on the wire (`--json`): times as RFC 3339 text, durations with a unit suffix.
#[derive(Serialize)]
struct JobDto {
    id: String,
    queue: String,
    kind: String,
    payload: serde_json::Value,
    state: &'static str,
    run_at: String,
    schedule: Option<ScheduleDto>,
    attempt: u32,
    attempt_max: u32,
    priority: u8,
    retry: RetryDto,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    last_error: Option<String>,
    lease_token: u64,
    lease: Option<LeaseDto>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ScheduleDto {
    Cron { cron: String, time_zone: String },
    Interval { interval_ms: u128 },
}

#[derive(Serialize)]
struct RetryDto {
    backoff_base_ms: u128,
    backoff_max_ms: u128,
    jitter_percent: u8,
}

#[derive(Serialize)]
struct LeaseDto {
    holder: String,
    token: u64,
    expires_at: String,
}

#[derive(Serialize)]
struct CountDto<'a> {
    queue: &'a str,
    state: &'a str,
    count: u64,
}

impl From<&Job> for JobDto {
    fn from(job: &Job) -> JobDto {
        JobDto {
            id: job.id.to_string(),
            queue: job.queue.to_string(),
            kind: job.kind.to_string(),
            payload: job.payload.to_value(),
            state: job.state.as_str(),
            run_at: job.run_at.to_rfc3339(),
            schedule: job.schedule.as_ref().and_then(|schedule| {
                match (schedule.cron_expression(), schedule.interval_duration()) {
                    (Some((cron, zone)), _) => Some(ScheduleDto::Cron {
                        cron: cron.to_owned(),
                        time_zone: zone.to_owned(),
                    }),
                    (None, Some(interval)) => Some(ScheduleDto::Interval {
                        interval_ms: interval.as_millis(),
                    }),
                    (None, None) => None,
                }
            }),
            attempt: job.attempt,
            attempt_max: job.attempt_max,
            priority: job.priority.get(),
            retry: RetryDto {
                backoff_base_ms: job.retry.backoff_base().as_millis(),
                backoff_max_ms: job.retry.backoff_max().as_millis(),
                jitter_percent: job.retry.jitter_percent(),
            },
            created_at: job.created_at.to_rfc3339(),
            started_at: job.started_at.map(Timestamp::to_rfc3339),
            finished_at: job.finished_at.map(Timestamp::to_rfc3339),
            last_error: job.last_error.clone(),
            lease_token: job.lease_token.0,
            lease: job.lease.as_ref().map(|lease| LeaseDto {
                holder: lease.holder.to_string(),
                token: lease.token.0,
                expires_at: lease.expires_at.to_rfc3339(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_one_unit() {
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("30s").ok(), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m").ok(), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h").ok(), Some(Duration::from_secs(7_200)));
        assert_eq!(parse_duration("1d").ok(), Some(Duration::from_secs(86_400)));
        for bad in [
            "",
            "30",
            "s",
            "-5s",
            "5 s",
            "5x",
            "1.5s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

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
