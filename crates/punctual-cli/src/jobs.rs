//! `punctual jobs schedule|get|list|cancel|reschedule|retry|redrive|counts` (and `punctual
//! schedule`, the same as `jobs schedule`), on a punctual server (`--url`) or directly on a store
//! (`--store sqlite:PATH`, `punctual.db` by default, or `postgres://... [--schema NAME]`, whose
//! clock then gives every `now`).
//!
//! Every input is checked before anything is sent or opened, so a refused input leaves no
//! trace. Over HTTP the server judges the values it has rules for (it is their authority, and
//! the only one for webhook targets); on a store punctual-core does, and every error is coded as
//! the server would code it (`Failure`), so a script sees the same exit code in both modes.
//! Both modes print the API's wire types (`render`). These commands run no handlers: that is
//! `punctual serve`'s work.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgGroup, Subcommand, ValueEnum};
use punctual_core::{
    Clock, Cursor, JobFilter, JobId, JobOptions, JobState, Kind, NewJob, Payload, Priority, Queue,
    Schedule, StateCount, StoreError, SystemClock, Timestamp, limits,
};
use punctual_server::dto::{
    CreateJob, JobList, JobView, QueueList, Redrive, RedriveResult, Reschedule, ScheduleSpec,
    WebhookSpec,
};
use punctual_server::store_url::OpenedStore;
use punctual_server::webhook::target::{RESERVED_KIND_PREFIX, WEBHOOK_KIND};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::client::{Client, idempotency_header};
use crate::endpoint::{Endpoint, EndpointArgs, OpenMode, StoreTarget, block_on};
use crate::failure::Failure;
use crate::render;

/// The page size of `jobs list` when `--limit` is not given.
const LIST_LIMIT_DEFAULT: usize = 50;
/// The longest duration `--in` and `--every` accept as text, a guard before parsing.
const DURATION_TEXT_MAX: usize = 32;
/// Most dead jobs one redrive retries: the server's limit, kept on a store too.
const REDRIVE_LIMIT_MAX: u32 = 10_000;
/// Reschedules a store-mode redrive keeps in flight at once (the store commits them in groups).
const REDRIVE_CONCURRENCY: usize = 64;

#[derive(clap::Args)]
#[command(group(ArgGroup::new("target").required(true).args(["kind", "webhook"])))]
#[command(group(ArgGroup::new("when").required(true).args(["at", "delay", "cron", "every"])))]
pub struct ScheduleArgs {
    /// The job's kind: the name of the handler (or remote worker) that runs it.
    #[arg(long, value_name = "KIND")]
    kind: Option<String>,
    /// With --url: a webhook job instead, which the server sends to this URL at run time.
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// The webhook's method: POST, PUT or PATCH [default: POST].
    #[arg(long, value_name = "METHOD", requires = "webhook")]
    method: Option<String>,
    /// A header the webhook is sent with, as 'Name: value' (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE", requires = "webhook")]
    headers: Vec<String>,
    /// How long the webhook's receiver may take to answer, 100 to 300000 ms [default: 10000].
    #[arg(long, value_name = "MS", requires = "webhook")]
    timeout_ms: Option<u64>,
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
    // Checked in `when`, not with clap's `requires`: clap waives a requirement on an argument
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
    /// With --url: retry safely; the same key with the same job gets the first answer again,
    /// never a second job (for 24 hours).
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
}

/// `punctual schedule`: the same as `punctual jobs schedule`.
#[derive(clap::Args)]
pub struct ScheduleCommand {
    #[command(flatten)]
    endpoint: EndpointArgs,
    #[command(flatten)]
    schedule: ScheduleArgs,
    /// Print the stored job as one line of JSON (the API's own).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Print JSON (the API's own, one value per line) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Schedule a job (also `punctual schedule`).
    Schedule(ScheduleArgs),
    /// Show one job in full.
    #[command(visible_alias = "show")]
    Get {
        /// The job's id.
        id: String,
    },
    /// List jobs in id (creation) order, a page at a time.
    List(ListArgs),
    /// Cancel a job that has not finished.
    Cancel {
        /// The job's id.
        id: String,
    },
    /// Move a pending job to a new time, or revive a dead or cancelled one.
    Reschedule(RescheduleArgs),
    /// Retry a dead job now, with its attempts reset.
    Retry {
        /// The job's id.
        id: String,
    },
    /// Retry every dead job that matches, now.
    Redrive(RedriveArgs),
    /// Count jobs by queue and state.
    Counts,
}

#[derive(clap::Args)]
struct ListArgs {
    /// Only jobs in this state (scheduled, running, retrying, succeeded, dead, cancelled).
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Only jobs in this queue.
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,
    /// Only jobs of this kind (punctual.webhook for webhook jobs).
    #[arg(long, value_name = "KIND")]
    kind: Option<String>,
    /// Only jobs due at or after this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    due_after: Option<String>,
    /// Only jobs due before this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    due_before: Option<String>,
    /// At most this many jobs, 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = LIST_LIMIT_DEFAULT)]
    limit: usize,
    /// Start after this job id: the cursor the previous page ended with.
    #[arg(long, visible_alias = "cursor", value_name = "ID")]
    after: Option<String>,
}

#[derive(clap::Args)]
#[command(group(ArgGroup::new("when").required(true).args(["at", "delay"])))]
struct RescheduleArgs {
    /// The job's id.
    id: String,
    /// Due at this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    at: Option<String>,
    /// Due this long from now (like 30s, 5m, 1d).
    #[arg(long = "in", value_name = "DURATION")]
    delay: Option<String>,
}

#[derive(clap::Args)]
struct RedriveArgs {
    /// Only dead jobs in this queue.
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,
    /// Only dead jobs of this kind.
    #[arg(long, value_name = "KIND")]
    kind: Option<String>,
    /// Only webhook jobs, or only remote workers' jobs.
    #[arg(long, value_name = "TARGET")]
    target: Option<TargetKind>,
    /// Retry at most this many, 1 to 10000 [default: 10000].
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TargetKind {
    Webhook,
    Worker,
}

impl TargetKind {
    fn as_str(self) -> &'static str {
        match self {
            TargetKind::Webhook => "webhook",
            TargetKind::Worker => "worker",
        }
    }
}

// ---------------------------------------------------------------- schedule

pub fn schedule(command: ScheduleCommand) -> anyhow::Result<()> {
    let endpoint = command.endpoint.resolve()?;
    schedule_on(endpoint, &command.schedule, command.json)
}

fn schedule_on(endpoint: Endpoint, args: &ScheduleArgs, json: bool) -> anyhow::Result<()> {
    match endpoint {
        Endpoint::Server(client) => {
            let request = create_request(args)?;
            let headers = idempotency_header(args.idempotency_key.as_deref())?;
            block_on(async {
                let job: JobView = client.post("v1/jobs", &request, headers).await?;
                print_scheduled(&job, SystemClock.now(), &client.describe(), json)
            })
        }
        Endpoint::Store(target) => {
            if args.webhook.is_some() {
                return Err(Failure::usage(
                    "--webhook needs a server: give --url (or PUNCTUAL_URL). The server owns \
                     webhook targets: it checks their addresses and signs and sends the \
                     requests, which a store alone cannot",
                ));
            }
            if args.idempotency_key.is_some() {
                return Err(Failure::usage(
                    "--idempotency-key needs a server: give --url (or PUNCTUAL_URL). Keys are \
                     kept per API token, and only a server has one",
                ));
            }
            // Everything is checked before the store is opened: a refused input leaves no trace.
            new_job(args, SystemClock.now()).map_err(Failure::invalid_input)?;
            block_on(
                target.session(OpenMode::CreateIfMissing, async |opened: &OpenedStore| {
                    let (store, clock) = (&opened.store, &opened.clock);
                    // Made again on the store's clock (the database's, for PostgreSQL), so `--in`
                    // counts from the time every node of a cluster goes by.
                    let job = new_job(args, clock.now()).map_err(Failure::invalid_input)?;
                    let ids = store
                        .insert(vec![job], clock.now())
                        .await
                        .map_err(Failure::store)?;
                    let id = *ids
                        .first()
                        .context("the store returned no id for the job")?;
                    let job = store
                        .get(id)
                        .await
                        .map_err(Failure::store)?
                        .with_context(|| format!("job {id} was stored but cannot be read back"))?;
                    print_scheduled(
                        &JobView::from_job(&job),
                        clock.now(),
                        &target.describe(),
                        json,
                    )
                }),
            )
        }
    }
}

fn print_scheduled(job: &JobView, now: Timestamp, place: &str, json: bool) -> anyhow::Result<()> {
    if json {
        return render::print_json(job);
    }
    println!("scheduled job {}", job.id);
    println!(
        "  {}, queue {}, run_at {} ({})",
        render::target(job),
        job.queue,
        job.run_at,
        render::relative_text(&job.run_at, now)
    );
    if let Some(schedule) = &job.schedule {
        println!("  recurring: {}", render::describe_schedule(schedule));
    }
    println!("  {place}");
    Ok(())
}

/// The job's data from `--payload` or `--payload-file`.
fn payload(args: &ScheduleArgs) -> anyhow::Result<Payload> {
    match (&args.payload, &args.payload_file) {
        (Some(text), _) => Payload::from_json_text(text).context("invalid --payload"),
        (None, Some(file)) => read_payload_file(file),
        (None, None) => Ok(Payload::null()),
    }
}

fn priority(args: &ScheduleArgs) -> anyhow::Result<Option<Priority>> {
    let Some(priority) = args.priority else {
        return Ok(None);
    };
    let limit = Priority::LOWEST.get();
    // A value beyond u8 is out of range just like 10 is; say so in the same words.
    let priority = u8::try_from(priority)
        .ok()
        .and_then(|priority| Priority::new(priority).ok())
        .with_context(|| format!("invalid --priority: {priority} is outside 0 ..= {limit}"))?;
    Ok(Some(priority))
}

/// When the job runs, as the command line says it.
enum When {
    At(Timestamp),
    In(Duration),
    Cron(String, String),
    Every(Duration),
}

fn when(args: &ScheduleArgs) -> anyhow::Result<When> {
    if args.tz.is_some() && args.cron.is_none() {
        anyhow::bail!("--tz applies only to --cron");
    }
    if let Some(at) = &args.at {
        Ok(When::At(parse_time("--at", at)?))
    } else if let Some(delay) = &args.delay {
        Ok(When::In(parse_duration(delay).context("invalid --in")?))
    } else if let Some(expression) = &args.cron {
        let zone = args.tz.as_deref().unwrap_or("UTC");
        Ok(When::Cron(expression.clone(), zone.to_owned()))
    } else if let Some(every) = &args.every {
        Ok(When::Every(
            parse_duration(every).context("invalid --every")?,
        ))
    } else {
        // clap's required group "when" makes one of the four present.
        anyhow::bail!("say when the job runs: --at, --in, --cron or --every");
    }
}

/// The creation request for a server, from the command line. Only what the request needs is
/// checked here (durations, JSON, headers); the server judges the rest.
fn create_request(args: &ScheduleArgs) -> anyhow::Result<CreateJob> {
    create_request_checked(args).map_err(Failure::invalid_input)
}

fn create_request_checked(args: &ScheduleArgs) -> anyhow::Result<CreateJob> {
    let payload = payload(args)?;
    let payload = RawValue::from_string(payload.as_str().to_owned())
        .context("invalid --payload: payload is not valid JSON")?;
    let webhook = match &args.webhook {
        Some(url) => Some(WebhookSpec {
            url: url.clone(),
            method: args.method.clone(),
            headers: webhook_headers(&args.headers)?,
            timeout_ms: args.timeout_ms,
        }),
        None => None,
    };
    let mut request = CreateJob {
        kind: args.kind.clone(),
        webhook,
        payload: Some(payload),
        queue: args.queue.clone(),
        priority: priority(args)?.map(Priority::get),
        attempt_max: args.attempts,
        ..CreateJob::default()
    };
    match when(args)? {
        // The text as given, once it is known to read: the server keeps its precision.
        When::At(_) => request.run_at = args.at.clone(),
        When::In(delay) => {
            request.delay_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        }
        When::Cron(cron, zone) => {
            request.schedule = Some(ScheduleSpec {
                cron: Some(cron),
                time_zone: Some(zone),
                interval_ms: None,
            });
        }
        When::Every(interval) => {
            request.schedule = Some(ScheduleSpec {
                cron: None,
                time_zone: None,
                interval_ms: Some(u64::try_from(interval.as_millis()).unwrap_or(u64::MAX)),
            });
        }
    }
    Ok(request)
}

/// `--header 'Name: value'`s as the webhook's headers; a name given twice is refused rather
/// than one of them dropped.
fn webhook_headers(headers: &[String]) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    if headers.is_empty() {
        return Ok(None);
    }
    let mut map = BTreeMap::new();
    for header in headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("invalid --header {header:?}: expected 'Name: value'"))?;
        let name = name.trim();
        if name.is_empty() {
            anyhow::bail!("invalid --header {header:?}: the name is empty");
        }
        if map
            .keys()
            .any(|known: &String| known.eq_ignore_ascii_case(name))
        {
            anyhow::bail!("invalid --header {header:?}: {name} is given twice");
        }
        map.insert(name.to_owned(), value.trim().to_owned());
    }
    Ok(Some(map))
}

/// Turns the command line into a validated job for a store, judged against `now`.
fn new_job(args: &ScheduleArgs, now: Timestamp) -> anyhow::Result<NewJob> {
    // clap's required group "target" gives a kind here: a webhook was refused before.
    let kind = args
        .kind
        .as_deref()
        .context("say what runs the job: --kind")?;
    let kind = Kind::new(kind).context("invalid --kind")?;
    if kind.as_str().starts_with(RESERVED_KIND_PREFIX) {
        // As the server refuses it: a store-made `punctual.webhook` job would skip the checks
        // the server makes of a webhook's target.
        anyhow::bail!(
            "invalid --kind: {kind:?} is reserved: kinds starting {RESERVED_KIND_PREFIX} are \
             punctual's own"
        );
    }
    let payload = payload(args)?;
    let mut options = JobOptions::default();
    if let Some(queue) = &args.queue {
        options = options.queue(Queue::new(queue).context("invalid --queue")?);
    }
    if let Some(priority) = priority(args)? {
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
    let job = match when(args)? {
        When::At(run_at) => {
            NewJob::new(kind, payload, run_at, options, now).context("invalid --at")?
        }
        When::In(delay) => {
            NewJob::new(kind, payload, now.add(delay), options, now).context("invalid --in")?
        }
        When::Cron(expression, zone) => {
            let schedule = Schedule::cron(&expression, &zone).context("invalid --cron or --tz")?;
            NewJob::recurring(kind, payload, schedule, options, now).context("invalid --cron")?
        }
        When::Every(interval) => {
            let schedule = Schedule::interval(interval).context("invalid --every")?;
            NewJob::recurring(kind, payload, schedule, options, now).context("invalid --every")?
        }
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

fn parse_time(flag: &str, text: &str) -> anyhow::Result<Timestamp> {
    Timestamp::parse_rfc3339(text).with_context(|| {
        format!("invalid {flag} {text:?}: expected RFC 3339, like 2026-11-29T09:00:00Z")
    })
}

fn parse_id(text: &str) -> anyhow::Result<JobId> {
    text.parse::<JobId>()
        .map_err(|_| Failure::invalid(format!("invalid job id {text:?}: expected a UUID")))
}

// ---------------------------------------------------------------- the other commands

/// A `jobs` command with its input checked, for either mode.
enum Request {
    Get(JobId),
    List {
        filter: JobFilter,
        after: Option<JobId>,
        limit: usize,
    },
    Cancel(JobId),
    Reschedule(JobId, RescheduleTo),
    Retry(JobId),
    Redrive {
        queue: Option<Queue>,
        kind: Option<Kind>,
        target: Option<TargetKind>,
        limit: Option<u32>,
    },
    Counts,
}

enum RescheduleTo {
    /// The instant, and its text as given (sent as is, keeping its precision).
    At(Timestamp, String),
    In(Duration),
}

/// What a command found or changed, printed the same way in both modes.
enum Outcome {
    Job(JobView),
    Page {
        jobs: Vec<JobView>,
        next: Option<String>,
    },
    /// A job after a change, and the words for it (`cancelled`, ...).
    Changed(&'static str, JobView),
    Redriven(RedriveResult),
    Counts(Vec<CountLine>),
}

/// A count of jobs of one queue in one state: `jobs counts --json` prints one a line.
#[derive(Serialize)]
struct CountLine {
    queue: String,
    state: String,
    count: u64,
}

pub fn run(args: JobsArgs) -> anyhow::Result<()> {
    let json = args.json;
    let endpoint = args.endpoint.resolve()?;
    let request = match args.command {
        JobsCommand::Schedule(schedule_args) => return schedule_on(endpoint, &schedule_args, json),
        JobsCommand::Get { id } => Request::Get(parse_id(&id)?),
        JobsCommand::List(list_args) => list_request(&list_args).map_err(Failure::invalid_input)?,
        JobsCommand::Cancel { id } => Request::Cancel(parse_id(&id)?),
        JobsCommand::Reschedule(reschedule) => {
            let id = parse_id(&reschedule.id)?;
            let to = match (&reschedule.at, &reschedule.delay) {
                (Some(at), _) => RescheduleTo::At(
                    parse_time("--at", at).map_err(Failure::invalid_input)?,
                    at.clone(),
                ),
                (None, Some(delay)) => RescheduleTo::In(
                    parse_duration(delay)
                        .context("invalid --in")
                        .map_err(Failure::invalid_input)?,
                ),
                // clap's required group "when" makes one of them present.
                (None, None) => return Err(Failure::invalid("say when: --at or --in")),
            };
            Request::Reschedule(id, to)
        }
        JobsCommand::Retry { id } => Request::Retry(parse_id(&id)?),
        JobsCommand::Redrive(redrive) => {
            redrive_request(&redrive).map_err(Failure::invalid_input)?
        }
        JobsCommand::Counts => Request::Counts,
    };
    block_on(async {
        match endpoint {
            Endpoint::Server(client) => {
                let outcome = on_server(&client, request).await?;
                print(outcome, SystemClock.now(), json)
            }
            Endpoint::Store(target) => {
                target
                    .session(OpenMode::MustExist, async |opened: &OpenedStore| {
                        let outcome = on_store(opened, &target, request).await?;
                        print(outcome, opened.clock.now(), json)
                    })
                    .await
            }
        }
    })
}

fn list_request(args: &ListArgs) -> anyhow::Result<Request> {
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
        due_from: args
            .due_after
            .as_deref()
            .map(|text| parse_time("--due-after", text))
            .transpose()?,
        due_before: args
            .due_before
            .as_deref()
            .map(|text| parse_time("--due-before", text))
            .transpose()?,
    };
    let after = args
        .after
        .as_deref()
        .map(|text| {
            text.parse::<JobId>()
                .map_err(|_| anyhow::anyhow!("invalid job id {text:?}: expected a UUID"))
        })
        .transpose()
        .context("invalid --after")?;
    if args.limit == 0 || args.limit > limits::PAGE_SIZE_MAX {
        anyhow::bail!(
            "invalid --limit: {} is outside 1 ..= {}",
            args.limit,
            limits::PAGE_SIZE_MAX
        );
    }
    Ok(Request::List {
        filter,
        after,
        limit: args.limit,
    })
}

fn redrive_request(args: &RedriveArgs) -> anyhow::Result<Request> {
    if let Some(limit) = args.limit
        && !(1..=REDRIVE_LIMIT_MAX).contains(&limit)
    {
        anyhow::bail!("invalid --limit: {limit} is outside 1 ..= {REDRIVE_LIMIT_MAX}");
    }
    let kind = args
        .kind
        .as_deref()
        .map(Kind::new)
        .transpose()
        .context("invalid --kind")?;
    if args.target == Some(TargetKind::Webhook)
        && kind
            .as_ref()
            .is_some_and(|kind| kind.as_str() != WEBHOOK_KIND)
    {
        anyhow::bail!("invalid --kind: a webhook job has no kind of its own");
    }
    Ok(Request::Redrive {
        queue: args
            .queue
            .as_deref()
            .map(Queue::new)
            .transpose()
            .context("invalid --queue")?,
        kind,
        target: args.target,
        limit: args.limit,
    })
}

async fn on_server(client: &Client, request: Request) -> anyhow::Result<Outcome> {
    let none = reqwest::header::HeaderMap::new;
    Ok(match request {
        Request::Get(id) => Outcome::Job(client.get(&format!("v1/jobs/{id}"), &[]).await?),
        Request::List {
            filter,
            after,
            limit,
        } => {
            let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            if let Some(queue) = &filter.queue {
                query.push(("queue", queue.to_string()));
            }
            if let Some(state) = filter.state {
                query.push(("state", state.as_str().to_owned()));
            }
            if let Some(kind) = &filter.kind {
                query.push(("kind", kind.to_string()));
            }
            if let Some(due_from) = filter.due_from {
                query.push(("due_after", due_from.to_rfc3339()));
            }
            if let Some(due_before) = filter.due_before {
                query.push(("due_before", due_before.to_rfc3339()));
            }
            if let Some(after) = after {
                query.push(("cursor", after.to_string()));
            }
            let page: JobList = client.get("v1/jobs", &query).await?;
            Outcome::Page {
                jobs: page.jobs,
                next: page.next_cursor,
            }
        }
        Request::Cancel(id) => Outcome::Changed(
            "cancelled",
            client.post_empty(&format!("v1/jobs/{id}/cancel")).await?,
        ),
        Request::Reschedule(id, to) => {
            let body = match to {
                RescheduleTo::At(_, text) => Reschedule {
                    run_at: Some(text),
                    delay_ms: None,
                },
                RescheduleTo::In(delay) => Reschedule {
                    run_at: None,
                    delay_ms: Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
                },
            };
            let path = format!("v1/jobs/{id}/reschedule");
            Outcome::Changed("rescheduled", client.post(&path, &body, none()).await?)
        }
        Request::Retry(id) => Outcome::Changed(
            "retrying",
            client.post_empty(&format!("v1/jobs/{id}/retry")).await?,
        ),
        Request::Redrive {
            queue,
            kind,
            target,
            limit,
        } => {
            let body = Redrive {
                queue: queue.map(|queue| queue.to_string()),
                kind: kind.map(|kind| kind.to_string()),
                target: target.map(|target| target.as_str().to_owned()),
                limit,
            };
            Outcome::Redriven(client.post("v1/jobs/redrive", &body, none()).await?)
        }
        Request::Counts => {
            let queues: QueueList = client.get("v1/queues", &[]).await?;
            let mut lines = Vec::new();
            for queue in queues.queues {
                let counts = &queue.counts;
                for (state, count) in [
                    (JobState::Scheduled, counts.scheduled),
                    (JobState::Running, counts.running),
                    (JobState::Retrying, counts.retrying),
                    (JobState::Succeeded, counts.succeeded),
                    (JobState::Dead, counts.dead),
                    (JobState::Cancelled, counts.cancelled),
                ] {
                    // As a store's counts: zero counts are left out. (The server lists up to
                    // `limits::QUEUES_LISTED_MAX` queues, far more than a deployment has.)
                    if count > 0 {
                        lines.push(CountLine {
                            queue: queue.queue.clone(),
                            state: state.as_str().to_owned(),
                            count,
                        });
                    }
                }
            }
            Outcome::Counts(lines)
        }
    })
}

async fn on_store(
    opened: &OpenedStore,
    target: &StoreTarget,
    request: Request,
) -> anyhow::Result<Outcome> {
    let (store, now) = (&opened.store, opened.clock.now());
    Ok(match request {
        Request::Get(id) => {
            let job = store
                .get(id)
                .await
                .map_err(Failure::store)?
                .ok_or_else(|| {
                    Failure::not_found(format!("no job {id} in {}", target.describe()))
                })?;
            Outcome::Job(JobView::from_job(&job))
        }
        Request::List {
            filter,
            after,
            limit,
        } => {
            let page = store
                .list(filter, after.map(Cursor), limit)
                .await
                .map_err(Failure::store)?;
            Outcome::Page {
                jobs: page.jobs.iter().map(JobView::from_job).collect(),
                next: page.next.map(|Cursor(last)| last.to_string()),
            }
        }
        Request::Cancel(id) => {
            let job = store.cancel(id, now).await.map_err(Failure::store)?;
            Outcome::Changed("cancelled", JobView::from_job(&job))
        }
        Request::Reschedule(id, to) => {
            let run_at = match to {
                RescheduleTo::At(run_at, _) => run_at,
                RescheduleTo::In(delay) => now.add(delay),
            };
            let job = store
                .reschedule(id, run_at, now)
                .await
                .map_err(Failure::store)?;
            Outcome::Changed("rescheduled", JobView::from_job(&job))
        }
        Request::Retry(id) => {
            // As the server does it: only a dead job, made due now with its attempts reset.
            let job = store
                .get(id)
                .await
                .map_err(Failure::store)?
                .ok_or_else(|| {
                    Failure::not_found(format!("no job {id} in {}", target.describe()))
                })?;
            if job.state != JobState::Dead {
                return Err(Failure::store(StoreError::Conflict {
                    id,
                    state: job.state,
                    operation: "retry (only a dead job can be retried)",
                }));
            }
            let job = store
                .reschedule(id, now, now)
                .await
                .map_err(Failure::store)?;
            Outcome::Changed("retrying", JobView::from_job(&job))
        }
        Request::Redrive {
            queue,
            kind,
            target,
            limit,
        } => Outcome::Redriven(redrive_on_store(opened, queue, kind, target, limit, now).await?),
        Request::Counts => {
            let counts: Vec<StateCount> = store.counts().await.map_err(Failure::store)?;
            Outcome::Counts(
                counts
                    .iter()
                    .map(|count| CountLine {
                        queue: count.queue.to_string(),
                        state: count.state.as_str().to_owned(),
                        count: count.count,
                    })
                    .collect(),
            )
        }
    })
}

/// The server's redrive, on a store: the dead jobs matching, a page at a time, each made due now
/// (attempts reset), up to `limit`. A job retried, cancelled or purged meanwhile is skipped.
async fn redrive_on_store(
    opened: &OpenedStore,
    queue: Option<Queue>,
    kind: Option<Kind>,
    target: Option<TargetKind>,
    limit: Option<u32>,
    now: Timestamp,
) -> anyhow::Result<RedriveResult> {
    let limit = u64::from(limit.unwrap_or(REDRIVE_LIMIT_MAX));
    let kind = match target {
        // A webhook job's kind is the webhook kind: a filter the store can apply.
        Some(TargetKind::Webhook) => Some(Kind::new(WEBHOOK_KIND).context("the webhook kind")?),
        _ => kind,
    };
    let filter = JobFilter {
        queue,
        state: Some(JobState::Dead),
        kind,
        ..JobFilter::default()
    };
    let (mut redriven, mut after, mut more) = (0_u64, None, false);
    loop {
        let page = opened
            .store
            .list(filter.clone(), after, limits::PAGE_SIZE_MAX)
            .await
            .map_err(Failure::store)?;
        let mut chosen: Vec<JobId> = Vec::new();
        for job in &page.jobs {
            if target == Some(TargetKind::Worker) && job.kind.as_str() == WEBHOOK_KIND {
                continue;
            }
            if redriven + chosen.len() as u64 == limit {
                more = true;
                break;
            }
            chosen.push(job.id);
        }
        for chunk in chosen.chunks(REDRIVE_CONCURRENCY) {
            let mut tasks = tokio::task::JoinSet::new();
            for id in chunk {
                let (store, id) = (opened.store.clone(), *id);
                tasks.spawn(async move { store.reschedule(id, now, now).await });
            }
            while let Some(joined) = tasks.join_next().await {
                match joined.context("a redrive task failed")? {
                    Ok(_) => redriven += 1,
                    Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
                    Err(error) => return Err(Failure::store(error)),
                }
            }
        }
        match page.next {
            Some(next) if !more => after = Some(next),
            _ => break,
        }
    }
    Ok(RedriveResult { redriven, more })
}

fn print(outcome: Outcome, now: Timestamp, json: bool) -> anyhow::Result<()> {
    match outcome {
        Outcome::Job(job) if json => render::print_json(&job)?,
        Outcome::Job(job) => print!("{}", render::job_fields(&job, now)),
        Outcome::Page { jobs, next } => {
            if json {
                for job in &jobs {
                    render::print_json(job)?;
                }
            } else if jobs.is_empty() {
                println!("no jobs");
            } else {
                print!("{}", render::job_table(&jobs, now));
            }
            // On stderr, so that JSON lines on stdout stay one kind of record.
            if let Some(next) = next {
                eprintln!("more jobs may follow: add --after {next}");
            }
        }
        Outcome::Changed(_, job) if json => render::print_json(&job)?,
        Outcome::Changed(verb, job) => {
            println!(
                "{verb} job {} ({}, queue {}): {}, run_at {} ({})",
                job.id,
                render::target(&job),
                job.queue,
                job.state,
                job.run_at,
                render::relative_text(&job.run_at, now)
            );
        }
        Outcome::Redriven(result) if json => render::print_json(&result)?,
        Outcome::Redriven(result) if result.redriven == 0 && !result.more => {
            println!("no dead jobs match");
        }
        Outcome::Redriven(result) => {
            println!("redrove {} dead jobs: due now", result.redriven);
            if result.more {
                println!("more dead jobs match: run it again for the next ones");
            }
        }
        Outcome::Counts(lines) if json => {
            for line in &lines {
                render::print_json(line)?;
            }
        }
        Outcome::Counts(lines) if lines.is_empty() => println!("no jobs"),
        Outcome::Counts(lines) => {
            let total: u64 = lines.iter().map(|line| line.count).sum();
            let mut rows: Vec<Vec<String>> = lines
                .into_iter()
                .map(|line| vec![line.queue, line.state, line.count.to_string()])
                .collect();
            rows.push(vec!["total".to_owned(), String::new(), total.to_string()]);
            print!("{}", render::table(&["QUEUE", "STATE", "COUNT"], &rows));
        }
    }
    Ok(())
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
    fn webhook_headers_read_name_and_value_once_each() {
        let headers = webhook_headers(&["X-Team: billing".to_owned(), "A:b".to_owned()])
            .expect("read")
            .expect("some");
        assert_eq!(headers["X-Team"], "billing");
        assert_eq!(headers["A"], "b");
        assert!(webhook_headers(&["no colon".to_owned()]).is_err());
        assert!(webhook_headers(&[": empty name".to_owned()]).is_err());
        assert!(webhook_headers(&["A: 1".to_owned(), "a: 2".to_owned()]).is_err());
        assert_eq!(webhook_headers(&[]).expect("read"), None);
    }
}
