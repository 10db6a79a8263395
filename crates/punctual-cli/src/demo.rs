//! `punctual demo`: the brief's demo, run by the real engine on a real SQLite file.
//!
//! Three jobs are scheduled through `Scheduler::schedule` at fixed offsets from one clock reading
//! (2 s, 3.5 s, 5 s), so their fire times cannot drift. The handlers print their own work; an
//! observer prints the engine's view (starts with their lateness, successes, failed attempts with
//! their retry time). When every job is final the engine is stopped and a summary is printed.
//!
//! This module only drives the engine: it does not claim or complete jobs itself, and it reads
//! the store only through `Scheduler::get`.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use punctual::{
    Clock, Config, Event, FailOutcome, Job, JobContext, JobId, JobOptions, JobState, Queue,
    RetryPolicy, Scheduler, SystemClock, Timestamp,
};
use punctual_server::store_url::StoreUrl;

/// The demo's jobs run in their own queue, and the demo's engine serves only that queue, so a
/// SQLite file (`--store sqlite:PATH`) that holds other jobs is left alone.
const DEMO_QUEUE: &str = "demo";
/// How often the demo looks at its jobs' states while waiting for them to finish.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The demo gives up if its jobs are not all final by then (they should be after about 6 s).
const DEADLINE: Duration = Duration::from_secs(30);
/// Lateness above this is pointed out in the summary: the engine aims at about a millisecond.
const LATENESS_NOTED: Duration = Duration::from_millis(50);

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The SQLite file to use, as sqlite:PATH (created if missing, and kept) [default: sqlite, a
    /// fresh temporary file removed on exit].
    #[arg(long, value_name = "STORE")]
    store: Option<StoreUrl>,
}

/// One of the demo's three jobs.
struct DemoJob {
    number: u32,
    /// A short name for output.
    label: &'static str,
    kind: &'static str,
    /// How long after the start it is due.
    offset: Duration,
    attempt_max: u32,
    /// The final state it should reach.
    expected: JobState,
}

const JOBS: [DemoJob; 3] = [
    DemoJob {
        number: 1,
        label: "print",
        kind: "demo.print",
        offset: Duration::from_millis(2_000),
        attempt_max: 1,
        expected: JobState::Succeeded,
    },
    DemoJob {
        number: 2,
        label: "count",
        kind: "demo.count",
        offset: Duration::from_millis(3_500),
        attempt_max: 1,
        expected: JobState::Succeeded,
    },
    DemoJob {
        number: 3,
        label: "fail",
        kind: "demo.fail",
        offset: Duration::from_millis(5_000),
        // Few attempts, close together (see `retry` in `demo`), so its failures and its death
        // happen within a second.
        attempt_max: 3,
        expected: JobState::Dead,
    },
];

fn demo_job(kind: &str) -> Option<&'static DemoJob> {
    JOBS.iter().find(|job| job.kind == kind)
}

/// The one instant every printed offset is measured from, on the engine's clock.
#[derive(Clone, Copy)]
struct Start(Timestamp);

impl Start {
    fn offset(self, at: Timestamp) -> Offset {
        Offset(at.micros_since(self.0))
    }

    /// Prints one line prefixed with the time since the start, like `[ 2.001s] ...`.
    fn say(self, text: fmt::Arguments<'_>) {
        println!("[{}] {text}", Elapsed(self.offset(SystemClock.now())));
    }
}

/// A signed time since the start, in microseconds; displays as `+2.001s`.
#[derive(Clone, Copy)]
struct Offset(i64);

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Rounded like `Elapsed`, so a summary and the line it sums up show the same figure.
        let seconds = self.0 as f64 / 1e6;
        write!(f, "{seconds:+.3}s")
    }
}

/// The line prefix form of an offset: `" 2.001s"`, right-aligned so lines line up.
struct Elapsed(Offset);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.0 as f64 / 1e6;
        write!(f, "{seconds:>6.3}s")
    }
}

/// Milliseconds with one decimal, for lateness and durations.
fn millis(micros: i64) -> String {
    format!("{:.1} ms", micros as f64 / 1_000.0)
}

/// What the observer remembers across events: when each job first started.
struct Observed {
    start: Start,
    /// Which demo job each id is; fixed before the engine starts, since the ids are chosen here.
    jobs: HashMap<JobId, &'static DemoJob>,
    first_started: Mutex<HashMap<JobId, Timestamp>>,
}

impl Observed {
    fn name(&self, id: JobId) -> String {
        match self.jobs.get(&id) {
            Some(job) => format!("job {} ({})", job.number, job.label),
            None => format!("job {id}"),
        }
    }

    /// Prints the engine's view of one event. Called on the engine's observer task: it only
    /// formats a line and updates a small map.
    fn on_event(&self, event: &Event) {
        let start = self.start;
        match event {
            Event::Started {
                id,
                attempt,
                attempt_max,
                run_at,
                started_at,
                ..
            } => {
                self.first_started
                    .lock()
                    .expect("no thread panics while holding this lock")
                    .entry(*id)
                    .or_insert(*started_at);
                start.say(format_args!(
                    "engine: {} started, attempt {attempt}/{attempt_max}, due {}, {} late",
                    self.name(*id),
                    start.offset(*run_at),
                    millis(started_at.micros_since(*run_at)),
                ));
            }
            Event::Succeeded { id, took, .. } => start.say(format_args!(
                "engine: {} succeeded, completion stored {} after the start",
                self.name(*id),
                millis(i64::try_from(took.as_micros()).unwrap_or(i64::MAX)),
            )),
            Event::Failed {
                id,
                attempt,
                attempt_max,
                error,
                outcome,
                ..
            } => match outcome {
                FailOutcome::Retry { at } => start.say(format_args!(
                    "engine: {} attempt {attempt}/{attempt_max} failed: {error}; will retry at {} (in {})",
                    self.name(*id),
                    start.offset(*at),
                    millis(at.micros_since(SystemClock.now())),
                )),
                FailOutcome::Dead => start.say(format_args!(
                    "engine: {} attempt {attempt}/{attempt_max} failed: {error}; no attempts left, marked dead",
                    self.name(*id),
                )),
            },
            Event::LeaseLost { id, token, .. } => start.say(format_args!(
                "engine: {} lost its lease (token {token})",
                self.name(*id)
            )),
            Event::Released { id } => {
                start.say(format_args!("engine: {} handed back", self.name(*id)))
            }
            Event::Rescued(outcome) => start.say(format_args!(
                "engine: {} rescued from an expired lease, now {}",
                self.name(outcome.id),
                outcome.state
            )),
            Event::StoreError { operation, error } => start.say(format_args!(
                "engine: store error during {operation}: {error} (will retry)"
            )),
            Event::Occurrences { name, summary } => start.say(format_args!(
                "engine: schedule {name}: {} fired, {} skipped",
                summary.fired,
                summary.skipped.iter().map(|(_, count)| count).sum::<u64>(),
            )),
            Event::LoopPanicked { task, message, .. } => start.say(format_args!(
                "engine: the {task} loop panicked ({message}); starting it again"
            )),
            // Nothing finished is old enough to be purged during a demo.
            Event::Purged { .. } => {}
            // The demo's one node always leads.
            Event::LeaderElected { .. } | Event::LeaderLost { .. } => {}
        }
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (path, temp) = match args.store {
        Some(StoreUrl::Sqlite(Some(path))) => (path, None),
        Some(StoreUrl::Postgres(_)) => bail!(
            "the demo runs on a SQLite file: --store sqlite:PATH, or no --store for a temporary \
             one"
        ),
        Some(StoreUrl::Sqlite(None)) | None => {
            let dir = tempfile::Builder::new()
                .prefix("punctual-demo-")
                .tempdir()
                .context("creating a temporary directory for the demo's database")?;
            (dir.path().join("punctual.db"), Some(dir))
        }
    };
    if temp.is_some() {
        println!(
            "database: {} (temporary, removed on exit; pass --store sqlite:PATH to keep it)",
            path.display()
        );
    } else {
        println!("database: {}", path.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(demo(path));
    // The runtime (and with it the store) goes before the temporary directory is removed.
    drop(runtime);
    drop(temp);
    result
}

async fn demo(path: PathBuf) -> anyhow::Result<()> {
    let store = punctual_sqlite::SqliteStore::open(&path)
        .with_context(|| format!("opening SQLite store {}", path.display()))?;
    let queue = Queue::new(DEMO_QUEUE).context("the demo queue name")?;
    let clock = SystemClock;
    let start = Start(clock.now());
    let ids: Vec<JobId> = JOBS.iter().map(|_| JobId::generate(start.0)).collect();
    let observed = Arc::new(Observed {
        start,
        jobs: ids.iter().copied().zip(JOBS.iter()).collect(),
        first_started: Mutex::new(HashMap::new()),
    });

    let config = Config {
        queues: Some(vec![queue.clone()]),
        ..Config::default()
    };
    let scheduler = Scheduler::builder(Arc::new(store))
        .clock(Arc::new(clock))
        .config(config)
        .handler("demo.print", move |job: JobContext| async move {
            let message: String = job.payload_as()?;
            start.say(format_args!("{}: {message}", handler_name(&job)));
            Ok(())
        })
        .handler("demo.count", move |job: JobContext| async move {
            let to: u32 = job.payload_as()?;
            for number in 1..=to {
                start.say(format_args!("{}: {number}", handler_name(&job)));
                if number < to {
                    // A pause between numbers, to show that a handler is ordinary async code.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Ok(())
        })
        .handler("demo.fail", move |job: JobContext| async move {
            start.say(format_args!(
                "{}: attempt {}/{}, failing on purpose",
                handler_name(&job),
                job.attempt,
                job.attempt_max
            ));
            Err(format!(
                "simulated failure on attempt {}/{}",
                job.attempt, job.attempt_max
            )
            .into())
        })
        .observer({
            let observed = observed.clone();
            move |event| observed.on_event(event)
        })
        .build()
        .context("building the scheduler")?;
    scheduler.start().context("starting the scheduler")?;
    start.say(format_args!("scheduler started"));

    let retry = RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(1), 0)
        .context("the demo's retry policy")?;
    let payloads = [
        serde_json::json!("Hello from punctual!"),
        serde_json::json!(3),
        serde_json::Value::Null,
    ];
    for ((job, id), payload) in JOBS.iter().zip(&ids).zip(&payloads) {
        let options = JobOptions::default()
            .queue(queue.clone())
            .id(*id)
            .attempt_max(job.attempt_max)
            .retry(retry);
        let run_at = start.0.add(job.offset);
        scheduler
            .schedule(job.kind, payload, run_at, options)
            .await
            .with_context(|| format!("scheduling job {}", job.number))?;
        start.say(format_args!(
            "scheduled job {} ({}) to run at {} (id {id})",
            job.number,
            job.label,
            start.offset(run_at)
        ));
    }

    let finished = wait_until_final(&scheduler, &ids).await;
    let report = scheduler.stop().await;
    start.say(format_args!(
        "scheduler stopped ({} released, {} abandoned)",
        report.released, report.abandoned
    ));
    let jobs = finished?;

    let first_started = observed
        .first_started
        .lock()
        .expect("no thread panics while holding this lock")
        .clone();
    println!();
    println!("summary (offsets from the start):");
    let mut surprises = Vec::new();
    for (demo_job, job) in JOBS.iter().zip(&jobs) {
        println!(
            "  {}",
            summary_line(start, demo_job, job, first_started.get(&job.id))
        );
        if job.state != demo_job.expected {
            surprises.push(format!(
                "job {} ended {}, expected {}",
                demo_job.number, job.state, demo_job.expected
            ));
        }
    }
    println!("database: {}", path.display());
    if !surprises.is_empty() {
        anyhow::bail!("the demo did not go as planned: {}", surprises.join("; "));
    }
    Ok(())
}

/// The name a handler prints under, from its job's kind.
fn handler_name(job: &JobContext) -> String {
    match demo_job(job.kind.as_str()) {
        Some(demo_job) => format!("job {} ({})", demo_job.number, demo_job.label),
        None => format!("job {}", job.id),
    }
}

/// Polls the jobs until all are final, or fails after `DEADLINE`.
async fn wait_until_final(scheduler: &Scheduler, ids: &[JobId]) -> anyhow::Result<Vec<Job>> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            let job = scheduler
                .get(*id)
                .await
                .with_context(|| format!("reading job {id}"))?
                .with_context(|| format!("job {id} disappeared from the store"))?;
            jobs.push(job);
        }
        if jobs.iter().all(|job| job.state.is_final()) {
            return Ok(jobs);
        }
        if tokio::time::Instant::now() >= deadline {
            let states: Vec<String> = jobs
                .iter()
                .map(|job| format!("{} is {}", job.id, job.state))
                .collect();
            anyhow::bail!(
                "the demo's jobs did not all finish within {} s: {}",
                DEADLINE.as_secs(),
                states.join(", ")
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn summary_line(
    start: Start,
    demo_job: &DemoJob,
    job: &Job,
    first_started: Option<&Timestamp>,
) -> String {
    let due = start.0.add(demo_job.offset);
    let mut line = format!(
        "job {} ({}): {}, attempts {}/{}, scheduled at {}",
        demo_job.number,
        demo_job.label,
        job.state,
        job.attempt,
        job.attempt_max,
        start.offset(due)
    );
    // The first attempt's start is the one that shows punctuality; later ones follow backoff.
    match first_started.copied().or(job.started_at) {
        Some(started_at) => {
            let late = started_at.micros_since(due);
            line.push_str(&format!(
                ", started at {} ({} late)",
                start.offset(started_at),
                millis(late)
            ));
            if late > i64::try_from(LATENESS_NOTED.as_micros()).unwrap_or(i64::MAX) {
                line.push_str(" [more than 50 ms late: is the machine busy?]");
            }
        }
        None => line.push_str(", never started"),
    }
    if let Some(error) = &job.last_error {
        line.push_str(&format!(", last error: {error}"));
    }
    line
}
