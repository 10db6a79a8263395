//! The Scheduler's behaviour end to end: on time, retries, heartbeats, rescue, stop, recurrence.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use punctual::{
    Config, EngineError, Event, FailOutcome, JobContext, JobId, JobOptions, JobState, LeaderTerm,
    NodeId, Queue, RetryPolicy, Schedule, Scheduler, SchedulerBuilder, Store, StoreError,
    Timestamp,
};
use punctual_core::{ClaimRequest, Clock, Kind, NewJob, Payload, ValidationError, limits};
use punctual_testkit::{MemoryStore, TokioClock};

pub(crate) const START: Timestamp = Timestamp::from_millis(1_764_400_000_000);

/// Everything the engine reported, in order.
#[derive(Clone, Default)]
pub(crate) struct Recorder(pub(crate) Arc<Mutex<Vec<Event>>>);

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.0.lock().expect("not poisoned").clone()
    }

    /// The events `pick` keeps, mapped, in order.
    fn pick<T>(&self, pick: impl Fn(Event) -> Option<T>) -> Vec<T> {
        self.events().into_iter().filter_map(pick).collect()
    }

    fn elected(&self) -> Vec<LeaderTerm> {
        self.pick(|event| match event {
            Event::LeaderElected { term } => Some(term),
            _ => None,
        })
    }

    fn lost(&self) -> Vec<LeaderTerm> {
        self.pick(|event| match event {
            Event::LeaderLost { term } => Some(term),
            _ => None,
        })
    }

    fn rescued(&self) -> Vec<JobId> {
        self.pick(|event| match event {
            Event::Rescued(outcome) => Some(outcome.id),
            _ => None,
        })
    }

    fn started(&self) -> Vec<(JobId, u32, Timestamp, Timestamp)> {
        self.pick(|event| match event {
            Event::Started {
                id,
                attempt,
                run_at,
                started_at,
                ..
            } => Some((id, attempt, run_at, started_at)),
            _ => None,
        })
    }
}

pub(crate) struct Harness {
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) clock: Arc<TokioClock>,
    pub(crate) recorder: Recorder,
}

impl Harness {
    pub(crate) fn new() -> Harness {
        Harness {
            store: Arc::new(MemoryStore::new()),
            clock: Arc::new(TokioClock::new(START)),
            recorder: Recorder::default(),
        }
    }

    fn builder(&self, config: Config) -> SchedulerBuilder {
        let recorder = self.recorder.clone();
        Scheduler::builder(self.store.clone() as Arc<dyn Store>)
            .clock(self.clock.clone())
            .config(config)
            .observer(move |event| recorder.0.lock().expect("not poisoned").push(event.clone()))
    }

    pub(crate) async fn state(&self, id: JobId) -> JobState {
        self.store
            .get(id)
            .await
            .expect("get")
            .expect("exists")
            .state
    }

    /// Advances virtual time in small steps until `done` holds, at most `limit`.
    pub(crate) async fn wait_until(&self, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !done().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not reached within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub(crate) fn config() -> Config {
    Config {
        node: NodeId::new("test-node").expect("valid"),
        ..Config::default()
    }
}

fn quick_retry() -> RetryPolicy {
    RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(4), 0).expect("valid")
}

#[tokio::test(start_paused = true)]
async fn a_job_starts_at_its_run_at_not_before() {
    let harness = Harness::new();
    let scheduler = harness
        .builder(config())
        .handler("noop", |_job: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let run_at = START.add(Duration::from_millis(2_000));
    let id = scheduler
        .schedule("noop", &(), run_at, JobOptions::default())
        .await
        .expect("schedule");

    harness
        .wait_until(Duration::from_secs(5), async || {
            harness.state(id).await == JobState::Succeeded
        })
        .await;
    let started = harness.recorder.started();
    assert_eq!(started.len(), 1);
    let (_, attempt, due, started_at) = started[0];
    assert_eq!((attempt, due), (1, run_at));
    assert!(
        started_at >= run_at,
        "started early: {started_at} < {run_at}"
    );
    assert!(
        started_at.duration_since(run_at) <= Duration::from_millis(2),
        "late: {started_at} vs {run_at}"
    );
    scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_sooner_job_wakes_a_sleeping_dispatcher() {
    let harness = Harness::new();
    // With a one-minute poll, only the wake-up can make the job run on time.
    let config = Config {
        poll_max: Duration::from_secs(60),
        ..config()
    };
    let scheduler = harness
        .builder(config)
        .handler("noop", |_job: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    scheduler
        .schedule_in(
            "noop",
            &(),
            Duration::from_secs(3600),
            JobOptions::default(),
        )
        .await
        .expect("schedule");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let run_at = harness.clock.now().add(Duration::from_millis(20));
    let id = scheduler
        .schedule("noop", &(), run_at, JobOptions::default())
        .await
        .expect("schedule");

    harness
        .wait_until(Duration::from_secs(1), async || {
            harness.state(id).await == JobState::Succeeded
        })
        .await;
    let (_, _, _, started_at) = harness.recorder.started()[0];
    assert!(started_at.duration_since(run_at) <= Duration::from_millis(2));
    scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_job_is_retried_with_backoff_then_dead_with_its_error() {
    let harness = Harness::new();
    let scheduler = harness
        .builder(config())
        .handler("flaky", |job: JobContext| async move {
            Err(format!("boom on attempt {}", job.attempt).into())
        })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let options = JobOptions::default().attempt_max(3).retry(quick_retry());
    let id = scheduler
        .schedule("flaky", &(), START, options)
        .await
        .expect("schedule");

    harness
        .wait_until(Duration::from_secs(30), async || {
            harness.state(id).await == JobState::Dead
        })
        .await;
    let job = harness.store.get(id).await.expect("get").expect("exists");
    assert_eq!(job.attempt, 3);
    assert_eq!(job.last_error.as_deref(), Some("boom on attempt 3"));
    let outcomes: Vec<FailOutcome> = harness
        .recorder
        .events()
        .into_iter()
        .filter_map(|event| match event {
            Event::Failed { outcome, .. } => Some(outcome),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes.len(), 3);
    assert!(matches!(outcomes[0], FailOutcome::Retry { .. }));
    assert!(matches!(outcomes[1], FailOutcome::Retry { .. }));
    assert_eq!(outcomes[2], FailOutcome::Dead);
    // Backoff: 1 s after the first failure, 2 s after the second (no jitter in this policy).
    let starts: Vec<Timestamp> = harness
        .recorder
        .started()
        .into_iter()
        .map(|(_, _, _, at)| at)
        .collect();
    let gaps: Vec<u128> = starts
        .windows(2)
        .map(|pair| pair[1].duration_since(pair[0]).as_millis())
        .collect();
    assert!((1_000..1_010).contains(&gaps[0]), "gaps {gaps:?}");
    assert!((2_000..2_010).contains(&gaps[1]), "gaps {gaps:?}");
    scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_a_failed_attempt() {
    let harness = Harness::new();
    let scheduler = harness
        .builder(config())
        .handler("panics", |_job: JobContext| async { panic!("handler bug") })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let options = JobOptions::default().attempt_max(1);
    let id = scheduler
        .schedule("panics", &(), START, options)
        .await
        .expect("schedule");
    harness
        .wait_until(Duration::from_secs(5), async || {
            harness.state(id).await == JobState::Dead
        })
        .await;
    let job = harness.store.get(id).await.expect("get").expect("exists");
    assert_eq!(
        job.last_error.as_deref(),
        Some("handler panicked: handler bug")
    );
    scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_long_job_leased() {
    let harness = Harness::new();
    let config = Config {
        lease: Duration::from_secs(1),
        heartbeat: Duration::from_millis(300),
        rescue_interval: Duration::from_millis(100),
        ..config()
    };
    let scheduler = harness
        .builder(config)
        .handler("long", |_job: JobContext| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(())
        })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let id = scheduler
        .schedule("long", &(), START, JobOptions::default())
        .await
        .expect("schedule");
    harness
        .wait_until(Duration::from_secs(20), async || {
            harness.state(id).await == JobState::Succeeded
        })
        .await;
    let job = harness.store.get(id).await.expect("get").expect("exists");
    assert_eq!(job.attempt, 1, "the job ran once, under one lease");
    assert!(
        !harness
            .recorder
            .events()
            .iter()
            .any(|event| matches!(event, Event::Rescued(_)))
    );
    scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_dead_holders_job_is_rescued_soon_after_its_lease_expires() {
    let harness = Harness::new();
    let now = harness.clock.now();
    let job = NewJob::new(
        Kind::new("noop").expect("valid"),
        Payload::null(),
        now,
        JobOptions::default(),
        now,
    )
    .expect("valid");
    let id = job.id;
    harness.store.insert(vec![job], now).await.expect("insert");
    // Another node claims the job with a 2 s lease and dies.
    let request = ClaimRequest {
        holder: NodeId::new("crashed-node").expect("valid"),
        queues: None,
        kinds: None,
        limit: 10,
        due_by: now,
        lease: Duration::from_secs(2),
    };
    assert_eq!(
        harness
            .store
            .claim(request, now)
            .await
            .expect("claim")
            .len(),
        1
    );

    let config = Config {
        rescue_interval: Duration::from_millis(500),
        ..config()
    };
    let scheduler = harness
        .builder(config)
        .handler("noop", |_job: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    harness
        .wait_until(Duration::from_secs(10), async || {
            harness.state(id).await == JobState::Succeeded
        })
        .await;
    let job = harness.store.get(id).await.expect("get").expect("exists");
    assert_eq!(job.attempt, 2, "the crashed attempt counts");
    let (_, _, _, started_at) = harness.recorder.started()[0];
    // Lease expiry at +2 s; rescue every 0.5 s; retry after the policy's first backoff (1 s).
    let expiry = now.add(Duration::from_secs(2));
    assert!(
        started_at.duration_since(expiry) <= Duration::from_millis(1_600),
        "rescued late: {started_at}"
    );
    scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn stop_hands_back_unstarted_jobs_and_lets_running_ones_finish() {
    let harness = Harness::new();
    let config = Config {
        claim_ahead: Duration::from_secs(5),
        grace: Duration::from_secs(10),
        ..config()
    };
    let finished = Arc::new(AtomicUsize::new(0));
    let counter = finished.clone();
    let scheduler = harness
        .builder(config)
        .handler("slow", move |_job: JobContext| {
            let counter = counter.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let running = scheduler
        .schedule("slow", &(), START, JobOptions::default())
        .await
        .expect("schedule");
    // Claimed ahead (within the 5 s window) but not yet due when stop comes.
    let waiting = scheduler
        .schedule(
            "slow",
            &(),
            START.add(Duration::from_secs(4)),
            JobOptions::default(),
        )
        .await
        .expect("schedule");
    harness
        .wait_until(Duration::from_secs(2), async || {
            harness.state(waiting).await == JobState::Running
        })
        .await;

    let report = scheduler.stop().await;
    assert!(report.finished_in_grace);
    assert_eq!(report.released, 1);
    assert_eq!(finished.load(Ordering::SeqCst), 1);
    assert_eq!(harness.state(running).await, JobState::Succeeded);
    let handed_back = harness
        .store
        .get(waiting)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (handed_back.state, handed_back.attempt),
        (JobState::Scheduled, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn stop_past_grace_signals_cancellation_to_handlers() {
    let harness = Harness::new();
    let config = Config {
        grace: Duration::from_secs(1),
        ..config()
    };
    let scheduler = harness
        .builder(config)
        .handler("stubborn", |job: JobContext| async move {
            job.cancellation.cancelled().await;
            Err("cancelled by shutdown".into())
        })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let id = scheduler
        .schedule("stubborn", &(), START, JobOptions::default())
        .await
        .expect("schedule");
    harness
        .wait_until(Duration::from_secs(2), async || {
            !harness.recorder.started().is_empty()
        })
        .await;
    let report = scheduler.stop().await;
    assert!(!report.finished_in_grace);
    assert_eq!(report.abandoned, 0);
    assert_eq!(harness.state(id).await, JobState::Retrying);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_running_job_signals_its_handler() {
    let harness = Harness::new();
    let config = Config {
        heartbeat: Duration::from_millis(200),
        ..config()
    };
    let scheduler = harness
        .builder(config)
        .handler("waits", |job: JobContext| async move {
            job.cancellation.cancelled().await;
            Ok(())
        })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let id = scheduler
        .schedule("waits", &(), START, JobOptions::default())
        .await
        .expect("schedule");
    harness
        .wait_until(Duration::from_secs(2), async || {
            !harness.recorder.started().is_empty()
        })
        .await;
    scheduler.cancel(id).await.expect("cancel");
    harness
        .wait_until(Duration::from_secs(2), async || {
            harness
                .recorder
                .events()
                .iter()
                .any(|event| matches!(event, Event::LeaseLost { .. }))
        })
        .await;
    assert_eq!(harness.state(id).await, JobState::Cancelled);
    scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancel_through_the_engine_reaches_its_handler_at_once() {
    let harness = Harness::new();
    let stopped = Arc::new(Mutex::new(None));
    let seen = stopped.clone();
    let clock = harness.clock.clone();
    // The default heartbeat (10 s): the cancel must not wait for it.
    let scheduler = harness
        .builder(config())
        .handler("waits", move |job: JobContext| {
            let seen = seen.clone();
            let clock = clock.clone();
            async move {
                job.cancellation.cancelled().await;
                *seen.lock().expect("not poisoned") = Some(clock.now());
                Ok(())
            }
        })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let id = scheduler
        .schedule("waits", &(), START, JobOptions::default())
        .await
        .expect("schedule");
    harness
        .wait_until(Duration::from_secs(2), async || {
            !harness.recorder.started().is_empty()
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cancelled_at = harness.clock.now();
    scheduler.cancel(id).await.expect("cancel");
    harness
        .wait_until(Duration::from_secs(1), async || {
            stopped.lock().expect("not poisoned").is_some()
        })
        .await;
    let reached = stopped.lock().expect("not poisoned").expect("stopped");
    assert!(
        reached.duration_since(cancelled_at) < Duration::from_millis(50),
        "the handler heard of the cancel {:?} later",
        reached.duration_since(cancelled_at)
    );
    assert_eq!(harness.state(id).await, JobState::Cancelled);
    scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn every_occurrence_of_a_recurring_job_runs_once() {
    let harness = Harness::new();
    let scheduler = harness
        .builder(config())
        .handler("tick", |_job: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let schedule = Schedule::interval(Duration::from_secs(1)).expect("valid");
    scheduler
        .schedule_recurring("tick", &(), schedule, JobOptions::default())
        .await
        .expect("schedule");
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let started = harness.recorder.started();
    let due: Vec<Timestamp> = started.iter().map(|(_, _, run_at, _)| *run_at).collect();
    let expected: Vec<Timestamp> = (1..=5)
        .map(|second| START.add(Duration::from_secs(second)))
        .collect();
    assert_eq!(due, expected, "one run per occurrence, each at its time");
    let ids: std::collections::HashSet<JobId> = started.iter().map(|(id, ..)| *id).collect();
    assert_eq!(ids.len(), 5);
    scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded_per_node() {
    let harness = Harness::new();
    let config = Config {
        concurrency: 2,
        ..config()
    };
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (running_in, peak_in) = (running.clone(), peak.clone());
    let scheduler = harness
        .builder(config)
        .handler("busy", move |_job: JobContext| {
            let (running, peak) = (running_in.clone(), peak_in.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(
            scheduler
                .schedule("busy", &(), START, JobOptions::default())
                .await
                .expect("schedule"),
        );
    }
    harness
        .wait_until(Duration::from_secs(20), async || {
            harness
                .recorder
                .events()
                .iter()
                .filter(|event| matches!(event, Event::Succeeded { .. }))
                .count()
                == 10
        })
        .await;
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    scheduler.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_refused_and_nothing_is_stored() {
    let harness = Harness::new();
    let scheduler = harness
        .builder(config())
        .handler("noop", |_job: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    let far = START.add(Duration::from_secs(200 * 366 * 24 * 3600));
    assert!(matches!(
        scheduler
            .schedule("nobody-handles-this", &(), START, JobOptions::default())
            .await,
        Err(EngineError::UnknownKind(_))
    ));
    assert!(matches!(
        scheduler
            .schedule("", &(), START, JobOptions::default())
            .await,
        Err(EngineError::Invalid(_))
    ));
    assert!(matches!(
        scheduler
            .schedule("noop", &(), far, JobOptions::default())
            .await,
        Err(EngineError::Invalid(_))
    ));
    let zero = JobOptions::default().attempt_max(0);
    assert!(matches!(
        scheduler.schedule("noop", &(), START, zero).await,
        Err(EngineError::Invalid(_))
    ));
    let big = "x".repeat(300 * 1024);
    assert!(matches!(
        scheduler
            .schedule("noop", &big, START, JobOptions::default())
            .await,
        Err(EngineError::Invalid(_))
    ));
    assert!(harness.store.counts().await.expect("counts").is_empty());
}

/// Every claim carries the node's kinds, so more handlers than a claim may name are refused
/// when the scheduler is built, not by every claim after it starts.
#[test]
fn more_handlers_than_a_claim_may_name_are_refused() {
    let harness = Harness::new();
    let builder = (0..=limits::CLAIM_KINDS_MAX).fold(harness.builder(config()), |builder, n| {
        builder.handler(&format!("kind.{n}"), |_job: JobContext| async { Ok(()) })
    });
    assert!(matches!(
        builder.build(),
        Err(EngineError::Invalid(ValidationError::TooLong {
            field: "kinds",
            ..
        }))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_job_cancelled_while_it_waits_in_the_claim_window_does_not_run() {
    let harness = Harness::new();
    let config = Config {
        claim_ahead: Duration::from_secs(2),
        ..config()
    };
    let scheduler = harness
        .builder(config)
        .handler("noop", |_job: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let id = scheduler
        .schedule(
            "noop",
            &(),
            START.add(Duration::from_secs(3)),
            JobOptions::default(),
        )
        .await
        .expect("schedule");
    harness
        .wait_until(Duration::from_secs(3), async || {
            harness.state(id).await == JobState::Running
        })
        .await;
    scheduler.cancel(id).await.expect("cancel");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        harness.recorder.started().is_empty(),
        "the cancelled job ran"
    );
    assert_eq!(harness.state(id).await, JobState::Cancelled);
    scheduler.stop().await;
}

/// A MemoryStore as a node sees a store that several processes share: it announces inserts
/// made behind the engine's back, like PostgreSQL's LISTEN/NOTIFY does for other processes'
/// inserts, and the node's link to it can be cut: while cut, every call fails `Unavailable`, as
/// for a node cut off from the database.
pub(crate) struct RemoteStore {
    inner: Arc<MemoryStore>,
    hints: Mutex<Option<tokio::sync::mpsc::Receiver<Timestamp>>>,
    pub(crate) cut: AtomicBool,
    /// How many claims reached the store.
    claims: AtomicUsize,
    /// How many looks for the next due job reached the store, and how long each takes.
    next_due_calls: AtomicUsize,
    next_due_delay: Mutex<Duration>,
    /// Operations whose next call panics, once each: a bug in the store, or in the engine
    /// code that calls it, as the loop that made the call sees it.
    panic_once: Mutex<Vec<&'static str>>,
    /// How often each operation that can be armed was called.
    calls: Mutex<std::collections::HashMap<&'static str, usize>>,
}

impl RemoteStore {
    pub(crate) fn new(inner: Arc<MemoryStore>) -> RemoteStore {
        RemoteStore {
            inner,
            hints: Mutex::new(None),
            cut: AtomicBool::new(false),
            claims: AtomicUsize::new(0),
            next_due_calls: AtomicUsize::new(0),
            next_due_delay: Mutex::new(Duration::ZERO),
            panic_once: Mutex::new(Vec::new()),
            calls: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Makes the next call of `operation` panic.
    fn panic_next(&self, operation: &'static str) {
        self.panic_once
            .lock()
            .expect("not poisoned")
            .push(operation);
    }

    /// Panics if `operation` was armed by `panic_next`, disarming it.
    fn trip(&self, operation: &'static str) {
        *self
            .calls
            .lock()
            .expect("not poisoned")
            .entry(operation)
            .or_default() += 1;
        let mut armed = self.panic_once.lock().expect("not poisoned");
        if let Some(at) = armed.iter().position(|armed| *armed == operation) {
            armed.remove(at);
            drop(armed);
            panic!("injected panic in {operation}");
        }
    }

    /// The store, unless the link is cut.
    fn link(&self) -> Result<&MemoryStore, StoreError> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the link is cut".to_owned()));
        }
        Ok(&self.inner)
    }
}

struct ChannelHints(tokio::sync::mpsc::Receiver<Timestamp>);

#[async_trait::async_trait]
impl punctual_core::InsertHints for ChannelHints {
    async fn next(&mut self) -> Timestamp {
        match self.0.recv().await {
            Some(run_at) => run_at,
            None => std::future::pending().await,
        }
    }
}

#[async_trait::async_trait]
impl Store for RemoteStore {
    async fn insert(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<JobId>, StoreError> {
        self.link()?.insert(jobs, now).await
    }
    async fn claim(
        &self,
        request: ClaimRequest,
        now: Timestamp,
    ) -> Result<Vec<punctual::Job>, StoreError> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        self.trip("claim");
        self.link()?.claim(request, now).await
    }
    async fn extend_lease(
        &self,
        id: JobId,
        token: punctual::LeaseToken,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.link()?.extend_lease(id, token, expires_at, now).await
    }
    async fn complete(
        &self,
        id: JobId,
        token: punctual::LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.link()?.complete(id, token, now).await
    }
    async fn fail(
        &self,
        id: JobId,
        token: punctual::LeaseToken,
        error: &str,
        outcome: FailOutcome,
        now: Timestamp,
    ) -> Result<JobState, StoreError> {
        self.link()?.fail(id, token, error, outcome, now).await
    }
    async fn release(
        &self,
        id: JobId,
        token: punctual::LeaseToken,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.link()?.release(id, token, now).await
    }
    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<punctual::Job, StoreError> {
        self.link()?.cancel(id, now).await
    }
    async fn reschedule(
        &self,
        id: JobId,
        run_at: Timestamp,
        now: Timestamp,
    ) -> Result<punctual::Job, StoreError> {
        self.link()?.reschedule(id, run_at, now).await
    }
    async fn get(&self, id: JobId) -> Result<Option<punctual::Job>, StoreError> {
        self.link()?.get(id).await
    }
    async fn list(
        &self,
        filter: punctual::JobFilter,
        after: Option<punctual_core::Cursor>,
        limit: usize,
    ) -> Result<punctual_core::JobPage, StoreError> {
        self.link()?.list(filter, after, limit).await
    }
    async fn counts(&self) -> Result<Vec<punctual_core::StateCount>, StoreError> {
        self.link()?.counts().await
    }
    async fn next_due(
        &self,
        queues: Option<&[punctual::Queue]>,
        kinds: Option<&[Kind]>,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.next_due_calls.fetch_add(1, Ordering::SeqCst);
        self.trip("next_due");
        let delay = *self.next_due_delay.lock().expect("not poisoned");
        tokio::time::sleep(delay).await;
        self.link()?.next_due(queues, kinds).await
    }
    async fn next_lease_expiry(&self) -> Result<Option<Timestamp>, StoreError> {
        self.link()?.next_lease_expiry().await
    }
    async fn lead(
        &self,
        node: &NodeId,
        term: Option<LeaderTerm>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Option<LeaderTerm>, StoreError> {
        self.trip("lead");
        self.link()?.lead(node, term, lease, now).await
    }
    async fn resign(&self, node: &NodeId, term: LeaderTerm) -> Result<(), StoreError> {
        self.link()?.resign(node, term).await
    }
    async fn rescue_expired(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<punctual_core::RescueOutcome>, StoreError> {
        self.trip("rescue_expired");
        self.link()?.rescue_expired(term, now, limit).await
    }
    async fn purge_finished(
        &self,
        term: LeaderTerm,
        finished_before: Timestamp,
        limit: usize,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        self.trip("purge_finished");
        self.link()?
            .purge_finished(term, finished_before, limit, now)
            .await
    }
    async fn queue_stats(
        &self,
        now: Timestamp,
    ) -> Result<Vec<punctual_core::QueueStats>, StoreError> {
        self.link()?.queue_stats(now).await
    }
    async fn insert_idempotent(
        &self,
        jobs: Vec<NewJob>,
        record: punctual_core::IdempotencyRecord,
        now: Timestamp,
    ) -> Result<punctual_core::Idempotent, StoreError> {
        self.link()?.insert_idempotent(jobs, record, now).await
    }
    async fn purge_idempotency(
        &self,
        term: LeaderTerm,
        now: Timestamp,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.link()?.purge_idempotency(term, now, limit).await
    }
    async fn insert_token(&self, token: punctual_core::ApiToken) -> Result<(), StoreError> {
        self.link()?.insert_token(token).await
    }
    async fn get_token(
        &self,
        id: &punctual_core::TokenId,
    ) -> Result<Option<punctual_core::ApiToken>, StoreError> {
        self.link()?.get_token(id).await
    }
    async fn list_tokens(
        &self,
        after: Option<&punctual_core::TokenId>,
        limit: usize,
    ) -> Result<Vec<punctual_core::ApiToken>, StoreError> {
        self.link()?.list_tokens(after, limit).await
    }
    async fn revoke_token(
        &self,
        id: &punctual_core::TokenId,
        now: Timestamp,
    ) -> Result<punctual_core::ApiToken, StoreError> {
        self.link()?.revoke_token(id, now).await
    }
    punctual_core::delegate_schedule_methods!(this => this.link()?);
    async fn listen(&self) -> Result<Option<Box<dyn punctual_core::InsertHints>>, StoreError> {
        self.trip("listen");
        let receiver = self.hints.lock().expect("not poisoned").take();
        Ok(receiver.map(|receiver| {
            Box::new(ChannelHints(receiver)) as Box<dyn punctual_core::InsertHints>
        }))
    }
}

#[tokio::test(start_paused = true)]
async fn an_insert_hint_from_the_store_wakes_the_dispatcher() {
    let harness = Harness::new();
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    let store = Arc::new(RemoteStore::new(harness.store.clone()));
    *store.hints.lock().expect("not poisoned") = Some(receiver);
    let recorder = harness.recorder.clone();
    // With a one-minute poll, only the hint can make the job run on time.
    let config = Config {
        poll_max: Duration::from_secs(60),
        ..config()
    };
    let scheduler = Scheduler::builder(store.clone() as Arc<dyn Store>)
        .clock(harness.clock.clone())
        .config(config)
        .observer(move |event| recorder.0.lock().expect("not poisoned").push(event.clone()))
        .handler("noop", |_job: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Another process inserts a job due in 20 ms and announces it.
    let now = harness.clock.now();
    let run_at = now.add(Duration::from_millis(20));
    let job = NewJob::new(
        Kind::new("noop").expect("valid"),
        Payload::null(),
        run_at,
        JobOptions::default(),
        now,
    )
    .expect("valid");
    let id = job.id;
    harness.store.insert(vec![job], now).await.expect("insert");
    sender.send(run_at).await.expect("listening");

    harness
        .wait_until(Duration::from_secs(1), async || {
            harness.state(id).await == JobState::Succeeded
        })
        .await;
    let (_, _, _, started_at) = harness.recorder.started()[0];
    assert!(started_at.duration_since(run_at) <= Duration::from_millis(2));
    scheduler.stop().await;
}

/// A stream of inserts of jobs for later does not make the dispatcher look at the store for
/// each one. It did: an insert made while the dispatcher was awake left a stored wake-up, so a
/// slow look (30 ms here; a large backlog of jobs of other kinds made PostgreSQL's and SQLite's
/// that slow) met an insert every millisecond and the dispatcher looked without pause, about 30
/// times a second, starving the node's CPU.
#[tokio::test(start_paused = true)]
async fn inserts_for_later_do_not_keep_the_dispatcher_looking() {
    let harness = Harness::new();
    let store = Arc::new(RemoteStore::new(harness.store.clone()));
    *store.next_due_delay.lock().expect("not poisoned") = Duration::from_millis(30);
    let scheduler = Scheduler::builder(store.clone() as Arc<dyn Store>)
        .clock(harness.clock.clone())
        .config(config())
        .handler("noop", |_job: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = store.next_due_calls.load(Ordering::SeqCst);
    for _ in 0..1_000 {
        let later = harness.clock.now().add(Duration::from_secs(3_600));
        scheduler
            .schedule("noop", &(), later, JobOptions::default())
            .await
            .expect("scheduled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let looks = store.next_due_calls.load(Ordering::SeqCst) - before;
    // The bounded poll looks once a second, and the first insert may add one.
    assert!(
        looks <= 4,
        "{looks} looks at the store in a second of inserts for later"
    );

    // A job due soon, inserted in the same stream, still runs on time.
    let soon = harness.clock.now().add(Duration::from_millis(200));
    let id = scheduler
        .schedule("noop", &(), soon, JobOptions::default())
        .await
        .expect("scheduled");
    harness
        .wait_until(Duration::from_secs(2), async || {
            harness.state(id).await == JobState::Succeeded
        })
        .await;
    scheduler.stop().await;
}

// Kinds: a node claims only jobs it has a handler for.

/// Two nodes on one store with different handlers (a cluster of unlike nodes, or a rolling
/// deploy that adds a kind): each job runs on the node that has its handler, at its first
/// attempt, and nothing fails; a job of a kind no node handles waits, neither claimed nor failed.
#[tokio::test(start_paused = true)]
async fn each_node_runs_only_the_kinds_it_has_handlers_for() {
    let harness = Harness::new();
    let node = |name: &str| Config {
        node: NodeId::new(name).expect("valid"),
        ..config()
    };
    // Node a schedules every job, so it is the one woken at once: before kinds were filtered,
    // it claimed node b's jobs (and the unhandled one) and failed them.
    let a = harness
        .builder(node("node-a"))
        .accept_unknown_kinds(true)
        .handler("kind.a", |_job: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    let b_recorder = Recorder::default();
    let b_events = b_recorder.clone();
    let b = Scheduler::builder(harness.store.clone() as Arc<dyn Store>)
        .clock(harness.clock.clone())
        .config(node("node-b"))
        .observer(move |event| b_events.0.lock().expect("not poisoned").push(event.clone()))
        .handler("kind.b", |_job: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    a.start().expect("start");
    b.start().expect("start");

    let run_at = START.add(Duration::from_secs(1));
    let mut of_a = Vec::new();
    let mut of_b = Vec::new();
    for _ in 0..4 {
        for (kind, ids) in [("kind.a", &mut of_a), ("kind.b", &mut of_b)] {
            let id = a
                .schedule(kind, &(), run_at, JobOptions::default())
                .await
                .expect("schedule");
            ids.push(id);
        }
    }
    let unhandled = a
        .schedule("kind.nobody", &(), run_at, JobOptions::default())
        .await
        .expect("schedule");

    harness
        .wait_until(Duration::from_secs(10), async || {
            for id in of_a.iter().chain(&of_b) {
                if harness.state(*id).await != JobState::Succeeded {
                    return false;
                }
            }
            true
        })
        .await;
    let runs = |recorder: &Recorder| {
        let mut runs: Vec<(JobId, u32)> = recorder
            .started()
            .into_iter()
            .map(|(id, attempt, _, _)| (id, attempt))
            .collect();
        runs.sort_unstable();
        runs
    };
    let first_attempts = |ids: &[JobId]| {
        let mut runs: Vec<(JobId, u32)> = ids.iter().map(|id| (*id, 1)).collect();
        runs.sort_unstable();
        runs
    };
    assert_eq!(runs(&harness.recorder), first_attempts(&of_a), "node a ran");
    assert_eq!(runs(&b_recorder), first_attempts(&of_b), "node b ran");
    for recorder in [&harness.recorder, &b_recorder] {
        let failed: Vec<Event> = recorder
            .events()
            .into_iter()
            .filter(|event| matches!(event, Event::Failed { .. }))
            .collect();
        assert!(failed.is_empty(), "attempts failed: {failed:?}");
    }

    // Long past its run_at, the job no node can run is still waiting, untouched.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let waiting = harness
        .store
        .get(unhandled)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(waiting.state, JobState::Scheduled);
    assert_eq!(waiting.attempt, 0);
    assert_eq!(waiting.last_error, None);
    a.stop().await;
    b.stop().await;
}

/// A due job of a kind the node has no handler for does not keep the dispatcher awake: it
/// polls as when nothing is due (about once per `poll_max`), rather than looking again and
/// again, backing off, for a job it will never claim.
#[tokio::test(start_paused = true)]
async fn a_node_does_not_wake_for_jobs_it_has_no_handler_for() {
    let harness = Harness::new();
    let store = Arc::new(RemoteStore::new(harness.store.clone()));
    let job = NewJob::new(
        Kind::new("kind.elsewhere").expect("valid"),
        Payload::null(),
        START,
        JobOptions::default(),
        START,
    )
    .expect("valid");
    let id = job.id;
    harness
        .store
        .insert(vec![job], START)
        .await
        .expect("insert");
    let config = Config {
        poll_max: Duration::from_secs(1),
        ..config()
    };
    let scheduler = Scheduler::builder(store.clone() as Arc<dyn Store>)
        .clock(harness.clock.clone())
        .config(config)
        .handler("noop", |_job: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    tokio::time::sleep(Duration::from_secs(10)).await;

    let claims = store.claims.load(Ordering::SeqCst);
    assert!(
        claims <= 12,
        "{claims} claims in 10 s with a 1 s poll: the node kept waking for the job"
    );
    assert_eq!(harness.state(id).await, JobState::Scheduled);
    scheduler.stop().await;
}

// Leadership: several nodes on one store, one of them doing the leader duties.

/// One node of a cluster on `store`, started: its scheduler and what it reported. It serves the
/// default queue only, and rescues every half second while it leads.
fn start_node(harness: &Harness, store: Arc<dyn Store>, name: &str) -> (Scheduler, Recorder) {
    let recorder = Recorder::default();
    let events = recorder.clone();
    let config = Config {
        node: NodeId::new(name).expect("valid"),
        queues: Some(vec![Queue::default()]),
        rescue_interval: Duration::from_millis(500),
        ..config()
    };
    let scheduler = Scheduler::builder(store)
        .clock(harness.clock.clone())
        .config(config)
        .observer(move |event| events.0.lock().expect("not poisoned").push(event.clone()))
        .handler("noop", |_job: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    (scheduler, recorder)
}

/// Jobs a node claimed with a 2 s lease before it crashed, in a queue the test nodes do not
/// serve (so after their rescue they wait, and nothing but the rescue touches them).
async fn crashed_jobs(harness: &Harness, count: usize) -> Vec<JobId> {
    let now = harness.clock.now();
    let queue = Queue::new("elsewhere").expect("valid");
    let jobs: Vec<NewJob> = (0..count)
        .map(|_| {
            NewJob::new(
                Kind::new("noop").expect("valid"),
                Payload::null(),
                now,
                JobOptions::default().queue(queue.clone()),
                now,
            )
            .expect("valid")
        })
        .collect();
    let ids = harness.store.insert(jobs, now).await.expect("insert");
    let request = ClaimRequest {
        holder: NodeId::new("crashed-node").expect("valid"),
        queues: Some(vec![queue]),
        kinds: None,
        limit: count,
        due_by: now,
        lease: Duration::from_secs(2),
    };
    let claimed = harness.store.claim(request, now).await.expect("claim");
    assert_eq!(claimed.len(), count);
    ids
}

#[tokio::test(start_paused = true)]
async fn only_the_leader_rescues() {
    let harness = Harness::new();
    let crashed = crashed_jobs(&harness, 3).await;
    let (a, a_events) = start_node(&harness, harness.store.clone(), "node-a");
    harness
        .wait_until(Duration::from_secs(1), async || {
            a_events.elected() == [LeaderTerm(1)]
        })
        .await;
    let (b, b_events) = start_node(&harness, harness.store.clone(), "node-b");

    harness
        .wait_until(Duration::from_secs(5), async || {
            a_events.rescued().len() == crashed.len()
        })
        .await;
    // Well past several renewals and rescue passes.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let mut rescued = a_events.rescued();
    rescued.sort();
    let mut expected = crashed.clone();
    expected.sort();
    assert_eq!(rescued, expected, "each job rescued once, by the leader");
    assert!(b_events.rescued().is_empty());
    assert!(b_events.elected().is_empty());
    assert!(a_events.lost().is_empty(), "the leader kept its term");
    for id in crashed {
        assert_eq!(harness.state(id).await, JobState::Retrying);
    }
    b.stop().await;
    a.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stopping_leader_hands_over_at_once() {
    let harness = Harness::new();
    let (a, a_events) = start_node(&harness, harness.store.clone(), "node-a");
    harness
        .wait_until(Duration::from_secs(1), async || {
            a_events.elected() == [LeaderTerm(1)]
        })
        .await;
    let (b, b_events) = start_node(&harness, harness.store.clone(), "node-b");
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(b_events.elected().is_empty());

    let stopped = tokio::time::Instant::now();
    a.stop().await;
    assert_eq!(a_events.lost(), [LeaderTerm(1)], "resigned on stop");
    harness
        .wait_until(Duration::from_secs(10), async || {
            b_events.elected() == [LeaderTerm(2)]
        })
        .await;
    // By its next renewal, not after A's leadership would have expired.
    let renew = b.config().leader_renew;
    assert!(
        stopped.elapsed() <= renew + Duration::from_millis(20),
        "took over after {:?}",
        stopped.elapsed()
    );

    // The new leader does the duties.
    let crashed = crashed_jobs(&harness, 1).await;
    harness
        .wait_until(Duration::from_secs(5), async || {
            b_events.rescued() == crashed
        })
        .await;
    assert!(a_events.rescued().is_empty());
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_from_the_store_is_replaced_and_then_refused() {
    let harness = Harness::new();
    let link = Arc::new(RemoteStore::new(harness.store.clone()));
    let (a, a_events) = start_node(&harness, link.clone(), "node-a");
    harness
        .wait_until(Duration::from_secs(1), async || {
            a_events.elected() == [LeaderTerm(1)]
        })
        .await;
    let (b, b_events) = start_node(&harness, harness.store.clone(), "node-b");
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Node A is cut off: its renewals fail, and it cannot tell whether it still leads.
    link.cut.store(true, Ordering::SeqCst);
    let cut = tokio::time::Instant::now();
    let crashed = crashed_jobs(&harness, 1).await;
    harness
        .wait_until(Duration::from_secs(30), async || {
            b_events.elected() == [LeaderTerm(2)]
        })
        .await;
    let config = b.config();
    let (lease, renew) = (config.leader_lease, config.leader_renew);
    // Not before A's last renewal expired, and within a renewal after that.
    assert!(
        cut.elapsed() > lease - renew && cut.elapsed() <= lease + renew,
        "took over {:?} after the cut",
        cut.elapsed()
    );
    harness
        .wait_until(Duration::from_secs(5), async || {
            b_events.rescued() == crashed
        })
        .await;
    assert!(a_events.lost().is_empty(), "A cannot know yet");

    // A's link comes back: the store refuses it, and it stops leading; B leads on.
    link.cut.store(false, Ordering::SeqCst);
    harness
        .wait_until(Duration::from_secs(5), async || {
            a_events.lost() == [LeaderTerm(1)]
        })
        .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(a_events.elected(), [LeaderTerm(1)]);
    assert!(a_events.rescued().is_empty());
    assert_eq!(b_events.elected(), [LeaderTerm(2)]);
    assert!(b_events.lost().is_empty());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_completion_outlasts_a_store_outage_shorter_than_the_lease() {
    let harness = Harness::new();
    let store = Arc::new(RemoteStore::new(harness.store.clone()));
    let recorder = harness.recorder.clone();
    let config = Config {
        lease: Duration::from_secs(10),
        heartbeat: Duration::from_secs(3),
        ..config()
    };
    let link = store.clone();
    let scheduler = Scheduler::builder(store.clone() as Arc<dyn Store>)
        .clock(harness.clock.clone())
        .config(config)
        .observer(move |event| recorder.0.lock().expect("not poisoned").push(event.clone()))
        .handler("noop", move |_job: JobContext| {
            // The database goes away just as the handler finishes (a restart).
            link.cut.store(true, Ordering::SeqCst);
            async { Ok(()) }
        })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let id = scheduler
        .schedule("noop", &(), START, JobOptions::default())
        .await
        .expect("schedule");
    harness
        .wait_until(Duration::from_secs(1), async || {
            !harness.recorder.started().is_empty()
        })
        .await;
    // Down for 4 s: longer than the first eight retries (about 1.3 s), shorter than the lease.
    tokio::time::sleep(Duration::from_secs(4)).await;
    store.cut.store(false, Ordering::SeqCst);
    harness
        .wait_until(Duration::from_secs(5), async || {
            harness.state(id).await == JobState::Succeeded
        })
        .await;
    let job = harness.store.get(id).await.expect("get").expect("exists");
    assert_eq!(
        job.attempt, 1,
        "the job ran once; its completion was not lost"
    );
    assert_eq!(harness.recorder.started().len(), 1);
    scheduler.stop().await;
}

/// A config whose leader duties come round quickly, for the supervision tests.
fn quick_duties() -> Config {
    Config {
        rescue_interval: Duration::from_millis(100),
        purge_interval: Duration::from_millis(100),
        leader_renew: Duration::from_millis(100),
        ..config()
    }
}

#[tokio::test(start_paused = true)]
async fn a_loop_that_panics_is_started_again_and_the_node_keeps_working() {
    // Each engine loop, and the store call that panics inside it.
    let cases = [
        ("dispatcher", "claim"),
        ("dispatcher", "next_due"),
        ("leadership", "lead"),
        ("rescuer", "rescue_expired"),
        ("purger", "purge_finished"),
        ("insert_hints", "listen"),
    ];
    for (task, operation) in cases {
        let harness = Harness::new();
        let store = Arc::new(RemoteStore::new(harness.store.clone()));
        store.panic_next(operation);
        let recorder = harness.recorder.clone();
        let scheduler = Scheduler::builder(store.clone() as Arc<dyn Store>)
            .clock(harness.clock.clone())
            .config(quick_duties())
            .observer(move |event| recorder.0.lock().expect("not poisoned").push(event.clone()))
            .handler("noop", |_job: JobContext| async { Ok(()) })
            .build()
            .expect("build");
        scheduler.start().expect("start");
        harness
            .wait_until(Duration::from_secs(5), async || {
                scheduler.health().loop_panics == 1
            })
            .await;
        // Started again: the node still leads and runs jobs, and the loop's store call is made
        // again.
        let id = scheduler
            .schedule_in(
                "noop",
                &(),
                Duration::from_millis(500),
                JobOptions::default(),
            )
            .await
            .expect("schedule");
        harness
            .wait_until(Duration::from_secs(5), async || {
                harness.state(id).await == JobState::Succeeded
                    && scheduler.leader_term().is_some()
                    && store.calls.lock().expect("not poisoned")[operation] >= 2
            })
            .await;
        scheduler.stop().await;
        let panics = harness.recorder.pick(|event| match event {
            Event::LoopPanicked {
                task, consecutive, ..
            } => Some((task, consecutive)),
            _ => None,
        });
        assert_eq!(panics, [(task, 1)], "after a panic in {operation}");
        assert_eq!(scheduler.health().loop_panics, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn an_observer_that_panics_does_not_stop_the_engine() {
    let harness = Harness::new();
    let scheduler = Scheduler::builder(harness.store.clone() as Arc<dyn Store>)
        .clock(harness.clock.clone())
        .config(config())
        .observer(|event| {
            if matches!(event, Event::Started { .. }) {
                panic!("the observer fails");
            }
        })
        .handler("noop", |_job: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            scheduler
                .schedule_in(
                    "noop",
                    &(),
                    Duration::from_millis(50),
                    JobOptions::default(),
                )
                .await
                .expect("schedule"),
        );
    }
    harness
        .wait_until(Duration::from_secs(5), async || {
            for id in &ids {
                if harness.state(*id).await != JobState::Succeeded {
                    return false;
                }
            }
            true
        })
        .await;
    assert!(scheduler.flush_events().await);
    let health = scheduler.health();
    assert_eq!(health.observer_panics, 3, "{health:?}");
    assert_eq!(health.loop_panics, 0, "{health:?}");
    scheduler.stop().await;
}

/// Real time on two threads: the observer really blocks its thread, until every job has run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_that_blocks_loses_events_not_jobs() {
    let store = Arc::new(MemoryStore::new());
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let observed = Arc::new(AtomicUsize::new(0));
    let (held, counted) = (gate.clone(), observed.clone());
    let scheduler = Scheduler::builder(store.clone() as Arc<dyn Store>)
        .config(Config {
            event_buffer: 4,
            ..config()
        })
        .observer(move |_event| {
            let (open, opened) = &*held;
            let mut open = open.lock().expect("not poisoned");
            while !*open {
                open = opened.wait(open).expect("not poisoned");
            }
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .handler("noop", |_job: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    let jobs = 200;
    let mut ids = Vec::new();
    for _ in 0..jobs {
        ids.push(
            scheduler
                .schedule_in("noop", &(), Duration::ZERO, JobOptions::default())
                .await
                .expect("schedule"),
        );
    }
    // Not a timing bound: with the observer called inline the jobs would never finish.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut done = 0;
        for id in &ids {
            if store.get(*id).await.expect("get").expect("exists").state == JobState::Succeeded {
                done += 1;
            }
        }
        if done == jobs {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {done} of {jobs} jobs ran: the blocked observer held them up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let health = scheduler.health();
    // Two events per job, a queue of four and an observer that has observed nothing.
    assert!(health.events_dropped >= 2 * jobs as u64 - 5, "{health:?}");
    assert_eq!(observed.load(Ordering::SeqCst), 0);
    let (open, opened) = &*gate;
    *open.lock().expect("not poisoned") = true;
    opened.notify_all();
    assert!(scheduler.flush_events().await);
    scheduler.stop().await;
    let delivered = observed.load(Ordering::SeqCst) as u64;
    // The jobs' events, and the leadership's: each delivered or counted as dropped.
    assert!(delivered + scheduler.health().events_dropped >= 2 * jobs as u64);
    assert!(delivered > 0, "the observer resumed");
}
