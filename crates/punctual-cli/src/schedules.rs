//! `punctual schedules create|upsert|get|list|update|pause|resume|trigger|delete|occurrences|
//! explain`: schedules as data, on a punctual server (`--url`, `--token`) through its
//! `/v1/schedules` API, printed as tables or (`--json`) as the API's own bodies.
//!
//! `explain` needs no server: it runs the very function that answers `POST
//! /v1/schedules/explain` (`punctual_server::api::schedules::explain`, pure), so the two cannot
//! disagree. The other commands need one: a schedule's occurrences are turned into jobs by the
//! engine's leader, which a store alone does not run.
//!
//! The command line is turned into the API's request bodies and nothing more is judged here:
//! the server is the authority on every value (and the only one for webhook targets).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{ArgGroup, Subcommand, ValueEnum};
use punctual_core::{Clock, SystemClock, limits};
use punctual_server::dto::{
    BackoffSpec, ChangeSchedule, CreateSchedule, ExplainSchedule, MisfireSpec, OccurrenceList,
    OccurrenceView, OutageSpec, ScheduleList, ScheduleView, TriggeredSchedule, UpsertedSchedule,
    WebhookSpec,
};
use reqwest::{Method, Url};
use serde_json::value::RawValue;

use crate::client::{Client, parse_url};
use crate::endpoint::block_on;
use crate::failure::Failure;
use crate::jobs::parse_duration;
use crate::render;

/// The page size of `schedules list` and `schedules occurrences` when `--limit` is not given.
const LIST_LIMIT_DEFAULT: usize = 50;

#[derive(clap::Args)]
pub struct SchedulesArgs {
    /// The punctual server (like http://127.0.0.1:7272). Every command but explain needs one.
    #[arg(long, env = "PUNCTUAL_URL", value_name = "URL", global = true, value_parser = parse_url)]
    url: Option<Url>,
    /// The API token (pct_...) to send; see `punctual tokens create`.
    #[arg(
        long,
        env = "PUNCTUAL_TOKEN",
        value_name = "TOKEN",
        global = true,
        hide_env_values = true
    )]
    token: Option<String>,
    /// Print JSON (the API's own, one value per line) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: SchedulesCommand,
}

#[derive(Subcommand)]
enum SchedulesCommand {
    /// Create a schedule (refused if one has its name).
    Create(DefinitionArgs),
    /// Create the schedule with this name, or replace its definition: the same definition
    /// again changes nothing, so a deploy can run it every time.
    Upsert(DefinitionArgs),
    /// Show one schedule in full, by id or name.
    #[command(visible_alias = "show")]
    Get {
        /// The schedule's id or name.
        key: String,
    },
    /// List schedules in name order, a page at a time.
    List {
        /// At most this many, 1 to 1000.
        #[arg(long, value_name = "N", default_value_t = LIST_LIMIT_DEFAULT)]
        limit: usize,
        /// Start after this name: the cursor the previous page ended with.
        #[arg(long, visible_alias = "cursor", value_name = "NAME")]
        after: Option<String>,
    },
    /// Change a schedule: what is given replaces the stored values, the rest stays.
    Update(UpdateArgs),
    /// Pause a schedule: its occurrences are skipped (and recorded so) until it is resumed.
    Pause {
        /// The schedule's id or name.
        key: String,
    },
    /// Resume a paused schedule.
    Resume {
        /// The schedule's id or name.
        key: String,
    },
    /// Fire a schedule now, whatever its state: a job due at once.
    Trigger {
        /// The schedule's id or name.
        key: String,
    },
    /// Delete a schedule and its ledger (the jobs it made stay).
    Delete {
        /// The schedule's id or name.
        key: String,
    },
    /// A schedule's occurrence ledger, newest first: what each occurrence became, and why.
    Occurrences {
        /// The schedule's id or name.
        key: String,
        /// At most this many entries, 1 to 1000.
        #[arg(long, value_name = "N", default_value_t = LIST_LIMIT_DEFAULT)]
        limit: usize,
        /// Entries older than this one: the cursor the previous page ended with.
        #[arg(long, visible_alias = "cursor", value_name = "SEQ")]
        before: Option<String>,
    },
    /// Explain a recurrence, without a server: its next firings in local time and UTC around
    /// clock changes, and what an outage would fire and skip on recovery.
    Explain(ExplainArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum MisfirePolicy {
    Skip,
    Latest,
    All,
}

impl MisfirePolicy {
    fn as_str(self) -> &'static str {
        match self {
            MisfirePolicy::Skip => "skip",
            MisfirePolicy::Latest => "latest",
            MisfirePolicy::All => "all",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Overlap {
    Allow,
    Skip,
    #[value(name = "buffer_one", alias = "buffer-one")]
    BufferOne,
    #[value(name = "cancel_previous", alias = "cancel-previous")]
    CancelPrevious,
}

impl Overlap {
    fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Skip => "skip",
            Overlap::BufferOne => "buffer_one",
            Overlap::CancelPrevious => "cancel_previous",
        }
    }
}

/// The misfire and overlap policies, shared by the definitions and `explain`.
#[derive(clap::Args)]
struct PolicyArgs {
    /// What to do with occurrences missed while nothing ran: skip them, fire the latest, or
    /// fire all (up to --limit) [default: latest].
    #[arg(long, value_name = "POLICY")]
    misfire: Option<MisfirePolicy>,
    /// With --misfire all: fire at most this many missed occurrences [default: 1000].
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// An occurrence found up to this late still fires (like 30s, 5m) [default: 1m].
    #[arg(long, value_name = "DURATION")]
    grace: Option<String>,
    /// Occurrences older than this are skipped whatever the policy [default: 1d].
    #[arg(long, value_name = "DURATION")]
    catch_up_window: Option<String>,
    /// When the previous occurrence's job has not finished: allow, skip, buffer_one or
    /// cancel_previous [default: allow].
    #[arg(long, value_name = "POLICY")]
    overlap: Option<Overlap>,
}

impl PolicyArgs {
    fn misfire(&self) -> anyhow::Result<Option<MisfireSpec>> {
        let spec = MisfireSpec {
            policy: self.misfire.map(|policy| policy.as_str().to_owned()),
            limit: self.limit,
            grace_ms: self
                .grace
                .as_deref()
                .map(|text| millis_of(text, "--grace"))
                .transpose()?,
            catch_up_window_ms: self
                .catch_up_window
                .as_deref()
                .map(|text| millis_of(text, "--catch-up-window"))
                .transpose()?,
        };
        let given = spec.policy.is_some()
            || spec.limit.is_some()
            || spec.grace_ms.is_some()
            || spec.catch_up_window_ms.is_some();
        Ok(given.then_some(spec))
    }

    fn overlap(&self) -> Option<String> {
        self.overlap.map(|overlap| overlap.as_str().to_owned())
    }
}

/// A schedule's fields, every one optional (`update` gives only what changes).
#[derive(clap::Args)]
struct FieldArgs {
    /// Fire at every occurrence of this cron expression (5 fields, or 6 with seconds first).
    #[arg(long, value_name = "EXPR", conflicts_with = "every")]
    cron: Option<String>,
    /// The IANA time zone the cron expression is read in [default: UTC].
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
    /// Fire repeatedly, this long apart (like 30s, 5m, 1h).
    #[arg(long, value_name = "DURATION")]
    every: Option<String>,
    /// No occurrence before this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    start_at: Option<String>,
    /// No occurrence after this instant (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    end_at: Option<String>,
    /// Run each occurrence's job up to this long after it (like 30s) [default: 0].
    #[arg(long, value_name = "DURATION")]
    jitter: Option<String>,
    /// The jobs' kind: the name of the remote workers' handler that runs them.
    #[arg(long, value_name = "KIND", conflicts_with = "webhook")]
    kind: Option<String>,
    /// Send each occurrence's payload to this URL instead.
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// The webhook's method: POST, PUT or PATCH [default: POST].
    #[arg(long, value_name = "METHOD", requires = "webhook")]
    method: Option<String>,
    /// A header the webhook is sent with, as 'Name: value' (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE", requires = "webhook")]
    headers: Vec<String>,
    /// How long the webhook's receiver may take to answer, 100 to 300000 ms.
    #[arg(long, value_name = "MS", requires = "webhook")]
    timeout_ms: Option<u64>,
    /// Each job's data, as JSON text [default: null].
    #[arg(long, value_name = "JSON", conflicts_with = "payload_file")]
    payload: Option<String>,
    /// Read each job's data (JSON) from this file instead.
    #[arg(long, value_name = "PATH")]
    payload_file: Option<PathBuf>,
    /// The jobs' queue [default: default].
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,
    /// 0 is the most urgent, 9 the least [default: 0].
    #[arg(long, value_name = "N")]
    priority: Option<u8>,
    /// How many attempts each job may have, 1 to 1000 [default: 20].
    #[arg(long, value_name = "N")]
    attempts: Option<u32>,
    /// The wait before a job's first retry, doubling after each (like 1s) [default: 1s].
    #[arg(long, value_name = "DURATION")]
    backoff_base: Option<String>,
    /// The longest wait between retries (like 1h) [default: 1h].
    #[arg(long, value_name = "DURATION")]
    backoff_max: Option<String>,
    #[command(flatten)]
    policies: PolicyArgs,
}

#[derive(clap::Args)]
#[command(group(ArgGroup::new("when").required(true).args(["cron", "every"])))]
#[command(group(ArgGroup::new("target").required(true).args(["kind", "webhook"])))]
struct DefinitionArgs {
    /// The schedule's unique name (letters, digits and . _ - : /).
    name: String,
    #[command(flatten)]
    fields: FieldArgs,
}

#[derive(clap::Args)]
struct UpdateArgs {
    /// The schedule's id or name.
    key: String,
    /// A new name.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Remove the start: occurrences from now on.
    #[arg(long, conflicts_with = "start_at")]
    no_start: bool,
    /// Remove the end: occurrences for ever.
    #[arg(long, conflicts_with = "end_at")]
    no_end: bool,
    #[command(flatten)]
    fields: FieldArgs,
}

#[derive(clap::Args)]
#[command(group(ArgGroup::new("when").required(true).args(["expression", "every"])))]
struct ExplainArgs {
    /// The cron expression (5 fields, or 6 with seconds first, or a macro like @daily).
    expression: Option<String>,
    /// The IANA time zone the expression is read in [default: UTC].
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
    /// An interval instead (like 30s, 5m).
    #[arg(long, value_name = "DURATION", conflicts_with = "expression")]
    every: Option<String>,
    /// From this instant on: a local date (2026-03-28: midnight in --tz), a local date and
    /// time (2026-03-29T02:30), or RFC 3339 [default: now].
    #[arg(long, value_name = "WHEN")]
    from: Option<String>,
    /// How many firings, 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 10)]
    count: u32,
    /// Also explain recovering from an outage that began here (read as --from is).
    #[arg(long, value_name = "WHEN", requires = "outage_to")]
    outage_from: Option<String>,
    /// ... and ended here, when the engine looks again.
    #[arg(long, value_name = "WHEN", requires = "outage_from")]
    outage_to: Option<String>,
    /// The job of the occurrence before the outage had not finished by its end.
    #[arg(long, requires = "outage_from")]
    previous_unfinished: bool,
    #[command(flatten)]
    policies: PolicyArgs,
}

pub fn run(args: SchedulesArgs) -> anyhow::Result<()> {
    let json = args.json;
    let command = args.command;
    if let SchedulesCommand::Explain(explain) = &command {
        return run_explain(explain, json);
    }
    let Some(url) = args.url else {
        return Err(Failure::usage(
            "this command needs a server: give --url (or PUNCTUAL_URL). Schedules are kept \
             and fired by a server's engine; only `schedules explain` works without one",
        ));
    };
    let client = Client::new(url, args.token.as_deref())?;
    // Every input is read before anything is sent.
    let request = request(command).map_err(Failure::invalid_input)?;
    block_on(async {
        let outcome = send(&client, request).await?;
        print(outcome, SystemClock.now(), json)
    })
}

/// A command with its input read, ready to send.
enum Request {
    Create(CreateSchedule),
    Upsert(String, CreateSchedule),
    Get(String),
    List {
        limit: usize,
        after: Option<String>,
    },
    Update(String, ChangeSchedule),
    Pause(String),
    Resume(String),
    Trigger(String),
    Delete(String),
    Occurrences {
        key: String,
        limit: usize,
        before: Option<String>,
    },
}

/// What the server answered, printed the same way whatever the command.
enum Outcome {
    Schedule(&'static str, ScheduleView),
    Upserted(UpsertedSchedule),
    Full(ScheduleView),
    Page {
        schedules: Vec<ScheduleView>,
        next: Option<String>,
    },
    Triggered(TriggeredSchedule),
    Occurrences {
        entries: Vec<OccurrenceView>,
        next: Option<String>,
    },
}

fn request(command: SchedulesCommand) -> anyhow::Result<Request> {
    Ok(match command {
        SchedulesCommand::Create(args) => {
            let mut body = definition(&args.fields)?;
            body.name = Some(args.name);
            Request::Create(body)
        }
        SchedulesCommand::Upsert(args) => Request::Upsert(args.name, definition(&args.fields)?),
        SchedulesCommand::Get { key } => Request::Get(key),
        SchedulesCommand::List { limit, after } => {
            check_limit(limit)?;
            Request::List { limit, after }
        }
        SchedulesCommand::Update(args) => Request::Update(args.key.clone(), change(&args)?),
        SchedulesCommand::Pause { key } => Request::Pause(key),
        SchedulesCommand::Resume { key } => Request::Resume(key),
        SchedulesCommand::Trigger { key } => Request::Trigger(key),
        SchedulesCommand::Delete { key } => Request::Delete(key),
        SchedulesCommand::Occurrences { key, limit, before } => {
            check_limit(limit)?;
            Request::Occurrences { key, limit, before }
        }
        SchedulesCommand::Explain(_) => anyhow::bail!("explain is answered without a server"),
    })
}

fn check_limit(limit: usize) -> anyhow::Result<()> {
    if limit == 0 || limit > limits::PAGE_SIZE_MAX {
        anyhow::bail!(
            "invalid --limit: {limit} is outside 1 ..= {}",
            limits::PAGE_SIZE_MAX
        );
    }
    Ok(())
}

fn millis_of(text: &str, flag: &str) -> anyhow::Result<u64> {
    let duration = parse_duration(text).with_context(|| format!("invalid {flag}"))?;
    Ok(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// The fields of a creation or replacement (without its name).
fn definition(fields: &FieldArgs) -> anyhow::Result<CreateSchedule> {
    if fields.tz.is_some() && fields.cron.is_none() {
        anyhow::bail!("--tz applies only to --cron");
    }
    let change = change_fields(fields)?;
    Ok(CreateSchedule {
        name: None,
        cron: change.cron,
        time_zone: change.time_zone,
        interval_ms: change.interval_ms,
        start_at: change.start_at.flatten(),
        end_at: change.end_at.flatten(),
        jitter_ms: change.jitter_ms,
        kind: change.kind,
        webhook: change.webhook,
        // A creation's job data is `null` unless given.
        payload: change.payload,
        queue: change.queue,
        priority: change.priority,
        attempt_max: change.attempt_max,
        backoff: change.backoff,
        misfire: change.misfire,
        overlap: change.overlap,
    })
}

fn change(args: &UpdateArgs) -> anyhow::Result<ChangeSchedule> {
    let mut change = change_fields(&args.fields)?;
    change.name = args.name.clone();
    if args.no_start {
        change.start_at = Some(None);
    }
    if args.no_end {
        change.end_at = Some(None);
    }
    Ok(change)
}

/// The fields given on the command line, as a change (the shape every field fits).
fn change_fields(fields: &FieldArgs) -> anyhow::Result<ChangeSchedule> {
    let payload = match (&fields.payload, &fields.payload_file) {
        (Some(text), _) => {
            Some(RawValue::from_string(text.clone()).context("invalid --payload: it is not JSON")?)
        }
        (None, Some(file)) => Some(read_payload_file(file)?),
        (None, None) => None,
    };
    let webhook = match &fields.webhook {
        Some(url) => Some(WebhookSpec {
            url: url.clone(),
            method: fields.method.clone(),
            headers: webhook_headers(&fields.headers)?,
            timeout_ms: fields.timeout_ms,
        }),
        None => None,
    };
    let backoff = BackoffSpec {
        base_ms: fields
            .backoff_base
            .as_deref()
            .map(|text| millis_of(text, "--backoff-base"))
            .transpose()?,
        max_ms: fields
            .backoff_max
            .as_deref()
            .map(|text| millis_of(text, "--backoff-max"))
            .transpose()?,
        jitter_percent: None,
    };
    let backoff = (backoff.base_ms.is_some() || backoff.max_ms.is_some()).then_some(backoff);
    Ok(ChangeSchedule {
        name: None,
        cron: fields.cron.clone(),
        time_zone: fields.tz.clone(),
        interval_ms: fields
            .every
            .as_deref()
            .map(|text| millis_of(text, "--every"))
            .transpose()?,
        start_at: fields.start_at.clone().map(Some),
        end_at: fields.end_at.clone().map(Some),
        jitter_ms: fields
            .jitter
            .as_deref()
            .map(|text| millis_of(text, "--jitter"))
            .transpose()?,
        kind: fields.kind.clone(),
        webhook,
        payload,
        queue: fields.queue.clone(),
        priority: fields.priority,
        attempt_max: fields.attempts,
        backoff,
        misfire: fields.policies.misfire()?,
        overlap: fields.policies.overlap(),
    })
}

/// `--header 'Name: value'`s; a name given twice is refused rather than one of them dropped.
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

/// Reads `--payload-file`, at most one byte past the payload limit (a FIFO or `/dev/zero` has
/// no length to trust).
fn read_payload_file(file: &Path) -> anyhow::Result<Box<RawValue>> {
    let context = || format!("invalid --payload-file {}", file.display());
    let limit = limits::PAYLOAD_BYTES_MAX;
    let opened = std::fs::File::open(file).with_context(context)?;
    let mut bytes = Vec::new();
    opened
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(context)?;
    if bytes.len() > limit {
        anyhow::bail!(
            "invalid --payload-file {}: more than {limit} bytes; the limit is {limit}",
            file.display()
        );
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("payload is not UTF-8 text"))
        .with_context(context)?;
    RawValue::from_string(text)
        .map_err(|error| anyhow::anyhow!("payload is not JSON: {error}"))
        .with_context(context)
}

/// A key as one path segment: a name may hold `/` and `:`.
fn segment(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

async fn send(client: &Client, request: Request) -> anyhow::Result<Outcome> {
    let path = |key: &str, tail: &str| format!("v1/schedules/{}{tail}", segment(key));
    let none: Option<&()> = None;
    Ok(match request {
        Request::Create(body) => Outcome::Schedule(
            "created",
            client
                .call(Method::POST, "v1/schedules", Some(&body))
                .await?,
        ),
        Request::Upsert(name, body) => Outcome::Upserted(
            client
                .call(Method::PUT, &path(&name, ""), Some(&body))
                .await?,
        ),
        Request::Get(key) => Outcome::Full(client.get(&path(&key, ""), &[]).await?),
        Request::List { limit, after } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(after) = after {
                query.push(("cursor", after));
            }
            let page: ScheduleList = client.get("v1/schedules", &query).await?;
            Outcome::Page {
                schedules: page.schedules,
                next: page.next_cursor,
            }
        }
        Request::Update(key, body) => Outcome::Schedule(
            "updated",
            client
                .call(Method::PATCH, &path(&key, ""), Some(&body))
                .await?,
        ),
        Request::Pause(key) => Outcome::Schedule(
            "paused",
            client
                .call(Method::POST, &path(&key, "/pause"), none)
                .await?,
        ),
        Request::Resume(key) => Outcome::Schedule(
            "resumed",
            client
                .call(Method::POST, &path(&key, "/resume"), none)
                .await?,
        ),
        Request::Trigger(key) => Outcome::Triggered(
            client
                .call(Method::POST, &path(&key, "/trigger"), none)
                .await?,
        ),
        Request::Delete(key) => Outcome::Schedule(
            "deleted",
            client.call(Method::DELETE, &path(&key, ""), none).await?,
        ),
        Request::Occurrences { key, limit, before } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(before) = before {
                query.push(("cursor", before));
            }
            let page: OccurrenceList = client.get(&path(&key, "/occurrences"), &query).await?;
            Outcome::Occurrences {
                entries: page.occurrences,
                next: page.next_cursor,
            }
        }
    })
}

fn print(outcome: Outcome, now: punctual_core::Timestamp, json: bool) -> anyhow::Result<()> {
    match outcome {
        Outcome::Schedule(_, schedule) | Outcome::Full(schedule) if json => {
            render::print_json(&schedule)?;
        }
        Outcome::Full(schedule) => print!("{}", render::schedule_fields(&schedule, now)),
        Outcome::Schedule(verb, schedule) => print_changed(verb, &schedule, now),
        Outcome::Upserted(upserted) if json => render::print_json(&upserted)?,
        Outcome::Upserted(upserted) => {
            print_changed(&upserted.outcome, &upserted.schedule, now);
        }
        Outcome::Page { schedules, next } => {
            if json {
                for schedule in &schedules {
                    render::print_json(schedule)?;
                }
            } else if schedules.is_empty() {
                println!("no schedules");
            } else {
                print!("{}", render::schedule_table(&schedules, now));
            }
            // On stderr, so that JSON lines on stdout stay one kind of record.
            if let Some(next) = next {
                eprintln!("more schedules may follow: add --after {next}");
            }
        }
        Outcome::Triggered(triggered) if json => render::print_json(&triggered)?,
        Outcome::Triggered(triggered) => println!(
            "triggered schedule {} ({}): job {}, due now",
            triggered.name, triggered.schedule_id, triggered.job_id
        ),
        Outcome::Occurrences { entries, next } => {
            if json {
                for entry in &entries {
                    render::print_json(entry)?;
                }
            } else if entries.is_empty() {
                println!("no occurrences yet");
            } else {
                print!("{}", render::occurrence_table(&entries));
            }
            if let Some(next) = next {
                eprintln!("older occurrences may follow: add --before {next}");
            }
        }
    }
    Ok(())
}

fn print_changed(verb: &str, schedule: &ScheduleView, now: punctual_core::Timestamp) {
    println!(
        "{verb} schedule {} ({}): {}, {}, {}",
        schedule.name,
        schedule.id,
        render::schedule_recurrence(schedule),
        render::schedule_target(schedule),
        schedule.status
    );
    if verb == "deleted" {
        println!("  its ledger is gone; the jobs it made stay");
    } else if let Some(next) = &schedule.next_occurrence {
        println!("  next {next} ({})", render::relative_text(next, now));
    }
}

// ---------------------------------------------------------------- explain

fn run_explain(args: &ExplainArgs, json: bool) -> anyhow::Result<()> {
    let question = explain_question(args).map_err(Failure::invalid_input)?;
    let answer = punctual_server::api::schedules::explain(&question, SystemClock.now())
        .map_err(|error| anyhow::Error::new(Failure::from_api(error)))?;
    if json {
        return render::print_json(&answer);
    }
    print!("{}", render::explanation(&answer));
    Ok(())
}

fn explain_question(args: &ExplainArgs) -> anyhow::Result<ExplainSchedule> {
    if args.tz.is_some() && args.expression.is_none() {
        anyhow::bail!("--tz applies only to a cron expression");
    }
    let outage = match (&args.outage_from, &args.outage_to) {
        (Some(from), Some(to)) => Some(OutageSpec {
            from: from.clone(),
            to: to.clone(),
            previous_unfinished: args.previous_unfinished.then_some(true),
        }),
        _ => None,
    };
    Ok(ExplainSchedule {
        cron: args.expression.clone(),
        time_zone: args.tz.clone(),
        interval_ms: args
            .every
            .as_deref()
            .map(|text| millis_of(text, "--every"))
            .transpose()?,
        from: args.from.clone(),
        count: Some(args.count),
        outage,
        misfire: args.policies.misfire()?,
        overlap: args.policies.overlap(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_path_segment() {
        assert_eq!(segment("nightly-report"), "nightly-report");
        assert_eq!(segment("team/nightly"), "team%2Fnightly");
        assert_eq!(segment("a:b"), "a%3Ab");
        assert_eq!(segment("{key}"), "%7Bkey%7D");
    }

    #[test]
    fn durations_on_the_command_line_are_milliseconds_on_the_wire() {
        assert_eq!(millis_of("5m", "--every").ok(), Some(300_000));
        assert!(millis_of("5 minutes", "--every").is_err());
    }
}
