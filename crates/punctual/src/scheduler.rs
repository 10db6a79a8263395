//! The `Scheduler` handle: registration of handlers, `start`, `stop`, and scheduling jobs.
//!
//! This module wires the engine's tasks together; the decisions live in `dispatch`, `execute`
//! and `maintenance`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use punctual_core::{
    Clock, Job, JobId, JobOptions, Kind, NewJob, Payload, Schedule, Store, SystemClock, Timestamp,
    check_kinds,
};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::EngineError;
use crate::event::Event;
use crate::handler::Handler;
use crate::maintenance::Leadership;
use crate::observe::{Observer, Observers};
use crate::schedules::{self, Schedules};
use crate::supervise::supervise;
use crate::{dispatch, maintenance};

/// State shared by the scheduler handle and its tasks.
pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub config: Config,
    pub handlers: HashMap<Kind, Arc<dyn Handler>>,
    /// How long a handler of each kind may run before it is cancelled and its attempt fails
    /// (`SchedulerBuilder::timeout`; `Config::handler_timeout` for the others).
    pub timeouts: HashMap<Kind, Duration>,
    /// The kinds of `handlers`, sorted: the dispatcher claims (and waits for) only jobs of
    /// these kinds, so jobs of other kinds stay pending for a node that has their handler.
    pub kinds: Vec<Kind>,
    accept_unknown_kinds: bool,
    /// Hands events to the application's observer, on a thread of its own.
    observers: Observers,
    /// Panics of the engine's loops, each followed by a restart (`supervise`).
    pub loop_panics: AtomicU64,
    /// Wakes the dispatcher when a job due sooner than its wake-up time is scheduled.
    pub wake: Notify,
    /// When the sleeping dispatcher will wake, in microseconds; `i64::MIN` while it is awake,
    /// when no one notifies it: it reads `announced_us` before it sleeps instead.
    pub sleeping_until_us: AtomicI64,
    /// The earliest `run_at` announced (`wake_for`) since the dispatcher last looked, in
    /// microseconds; `i64::MAX` for none. An insert made while the dispatcher is awake lands
    /// here rather than in a stored notification, so a busy insert stream costs the dispatcher
    /// one comparison before each sleep, not one more look at the store per insert.
    pub announced_us: AtomicI64,
    /// One permit per job claimed and not yet finished: bounds the node's concurrency.
    pub permits: Arc<Semaphore>,
    /// Cancelled by `stop`: claim nothing more, hand back jobs that have not started.
    pub stop_claiming: CancellationToken,
    /// Cancelled when the grace period ends: running handlers are told to stop.
    pub stop_handlers: CancellationToken,
    /// Every job task, so `stop` can wait for them.
    pub jobs: TaskTracker,
    pub released: AtomicU64,
    /// The cancellation of each handler running on this node, so a cancel made through this
    /// engine reaches its handler at once rather than at its next heartbeat.
    pub running: Mutex<HashMap<JobId, CancellationToken>>,
    /// Whether, and under which term, this node leads. Locked only for a moment, never across
    /// an `.await`.
    leadership: Mutex<Leadership>,
}

impl Inner {
    pub fn emit(&self, event: Event) {
        if let Event::StoreError { operation, error } = &event {
            tracing::warn!(operation, error, "store call failed; retrying");
        }
        self.observers.emit(event);
    }

    /// Wakes the dispatcher if a job due at `run_at` must be claimed before it would wake.
    ///
    /// The announcement is recorded before the dispatcher's wake-up time is read, and the
    /// dispatcher publishes its wake-up time before it reads the announcements (both
    /// `SeqCst`), so either it sees this job before it sleeps or this call sees when it sleeps
    /// and wakes it.
    pub fn wake_for(&self, run_at: Timestamp) {
        self.announced_us
            .fetch_min(run_at.as_micros(), Ordering::SeqCst);
        let claim_at = run_at.sub(self.config.claim_ahead).as_micros();
        if claim_at < self.sleeping_until_us.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// The term this node leads under, if it leads.
    pub fn leader_term(&self) -> Option<punctual_core::LeaderTerm> {
        self.leadership().term()
    }

    /// Changes what this node believes about its leadership with `change`, and reports the
    /// events the change makes (after the lock is released).
    pub fn update_leadership(&self, change: impl FnOnce(&mut Leadership) -> Vec<Event>) {
        let events = change(&mut self.leadership());
        for event in events {
            self.emit(event);
        }
    }

    fn leadership(&self) -> std::sync::MutexGuard<'_, Leadership> {
        // Nothing panics while holding it: `Leadership`'s methods are plain assignments.
        self.leadership
            .lock()
            .expect("no panic while holding the leadership lock")
    }

    /// Tells the handler of job `id` to cancel, if it runs on this node.
    pub fn signal_cancel(&self, id: JobId) {
        let running = self
            .running
            .lock()
            .expect("no panic while holding the running lock")
            .get(&id)
            .cloned();
        if let Some(cancellation) = running {
            cancellation.cancel();
        }
    }

    /// How long a handler of `kind` may run, if it is bounded.
    pub fn timeout_of(&self, kind: &Kind) -> Option<Duration> {
        self.timeouts
            .get(kind)
            .copied()
            .or(self.config.handler_timeout)
    }

    /// The tokio instant at which the clock will read `at`, given that it reads `now`.
    pub fn instant_at(&self, at: Timestamp, now: Timestamp) -> tokio::time::Instant {
        tokio::time::Instant::now() + at.duration_since(now)
    }
}

/// Builds a `Scheduler`: the store, the clock, the settings and the handlers.
pub struct SchedulerBuilder {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: Config,
    handlers: HashMap<Kind, Arc<dyn Handler>>,
    timeouts: HashMap<Kind, Duration>,
    invalid_kind: Option<String>,
    accept_unknown_kinds: bool,
    observer: Option<Observer>,
}

impl SchedulerBuilder {
    /// The clock all of the engine's time comes from (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> SchedulerBuilder {
        self.clock = clock;
        self
    }

    pub fn config(mut self, config: Config) -> SchedulerBuilder {
        self.config = config;
        self
    }

    /// Registers the handler for jobs of `kind`. The node claims jobs of registered kinds only
    /// (at most `limits::CLAIM_KINDS_MAX` of them; `build` refuses more).
    pub fn handler(mut self, kind: &str, handler: impl Handler) -> SchedulerBuilder {
        match Kind::new(kind) {
            Ok(kind) => {
                self.handlers.insert(kind, Arc::new(handler));
            }
            Err(_) => self.invalid_kind = Some(kind.to_owned()),
        }
        self
    }

    /// Bounds how long a handler of `kind` may run: past `timeout` its cancellation fires, and
    /// if it has not returned `TIMEOUT_GRACE` later it is aborted; either way the attempt fails
    /// with a timeout error (and is retried as the job's policy says). Overrides
    /// `Config::handler_timeout` for this kind.
    pub fn timeout(mut self, kind: &str, timeout: Duration) -> SchedulerBuilder {
        match Kind::new(kind) {
            Ok(kind) => {
                self.timeouts
                    .insert(kind, timeout.max(Duration::from_millis(1)));
            }
            Err(_) => self.invalid_kind = Some(kind.to_owned()),
        }
        self
    }

    /// Lets `schedule` accept kinds with no handler on this node. This node never claims such
    /// jobs: they stay pending until a node with their handler claims them.
    pub fn accept_unknown_kinds(mut self, accept: bool) -> SchedulerBuilder {
        self.accept_unknown_kinds = accept;
        self
    }

    /// Called with every `Event`, in order, on a task of the engine's own: the engine's tasks
    /// only queue the event (at most `Config::event_buffer`), so an observer that is slow or
    /// panics cannot stall or stop them. When the queue is full, events are dropped and counted
    /// (`Scheduler::health`); a panic is caught, logged and counted. It must not block: while it
    /// blocks it holds one of the runtime's threads.
    pub fn observer(
        mut self,
        observer: impl Fn(&Event) + Send + Sync + 'static,
    ) -> SchedulerBuilder {
        self.observer = Some(Arc::new(observer));
        self
    }

    pub fn build(self) -> Result<Scheduler, EngineError> {
        if let Some(kind) = self.invalid_kind {
            Kind::new(&kind)?;
        }
        let mut kinds: Vec<Kind> = self.handlers.keys().cloned().collect();
        kinds.sort_unstable();
        // Every claim carries the list: refuse here what every claim would be refused for.
        check_kinds(Some(&kinds))?;
        let config = self.config.normalised();
        let observers = Observers::new(self.observer, config.event_buffer);
        let permits = Arc::new(Semaphore::new(config.concurrency));
        Ok(Scheduler {
            inner: Arc::new(Inner {
                store: self.store,
                clock: self.clock,
                handlers: self.handlers,
                timeouts: self.timeouts,
                kinds,
                accept_unknown_kinds: self.accept_unknown_kinds,
                observers,
                loop_panics: AtomicU64::new(0),
                wake: Notify::new(),
                sleeping_until_us: AtomicI64::new(i64::MIN),
                announced_us: AtomicI64::new(i64::MAX),
                permits,
                stop_claiming: CancellationToken::new(),
                stop_handlers: CancellationToken::new(),
                jobs: TaskTracker::new(),
                released: AtomicU64::new(0),
                running: Mutex::new(HashMap::new()),
                leadership: Mutex::new(Leadership::default()),
                config,
            }),
            started: Arc::new(AtomicBool::new(false)),
            tasks: Arc::new(Mutex::new(Vec::new())),
        })
    }
}

/// What `stop` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopReport {
    /// Claimed jobs handed back because they had not started.
    pub released: u64,
    /// True if every running handler finished within the grace period.
    pub finished_in_grace: bool,
    /// Handlers still running when `stop` returned; their leases will expire and the jobs will
    /// be rescued.
    pub abandoned: usize,
}

/// Longest `flush_events` (and `stop`) waits for the observer to catch up.
pub const EVENT_FLUSH_MAX: Duration = Duration::from_secs(2);

/// Counts of what went wrong inside the engine without stopping it (`Scheduler::health`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineHealth {
    /// Panics of the engine's loops; each loop was started again after a capped backoff.
    pub loop_panics: u64,
    /// Events dropped because the observer's queue was full.
    pub events_dropped: u64,
    /// Events whose observer call panicked.
    pub observer_panics: u64,
}

/// The engine (the brief's Scheduler). Cheap to clone; all clones drive the same engine.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
    started: Arc<AtomicBool>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Scheduler {
    pub fn builder(store: Arc<dyn Store>) -> SchedulerBuilder {
        SchedulerBuilder {
            store,
            clock: Arc::new(SystemClock),
            config: Config::default(),
            handlers: HashMap::new(),
            timeouts: HashMap::new(),
            invalid_kind: None,
            accept_unknown_kinds: false,
            observer: None,
        }
    }

    /// The schedules of this engine's store: create, upsert, pause, trigger, list. Their
    /// occurrences are made into jobs by the leader (any node running an engine on the store).
    pub fn schedules(&self) -> Schedules {
        Schedules::new(self.inner.store.clone(), self.inner.clock.clone())
    }

    /// Starts the dispatcher, the leadership loop, the rescuer and the purger on the current
    /// tokio runtime.
    pub fn start(&self) -> Result<(), EngineError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        if self.started.swap(true, Ordering::SeqCst) {
            return Err(EngineError::AlreadyStarted);
        }
        let inner = &self.inner;
        inner.observers.start(&runtime);
        let tasks = vec![
            runtime.spawn(supervise(inner.clone(), "dispatcher", dispatch::run)),
            runtime.spawn(supervise(inner.clone(), "leadership", maintenance::lead)),
            runtime.spawn(supervise(inner.clone(), "rescuer", maintenance::rescue)),
            runtime.spawn(supervise(inner.clone(), "purger", maintenance::purge)),
            runtime.spawn(supervise(
                inner.clone(),
                "materializer",
                schedules::materialize,
            )),
            runtime.spawn(supervise(
                inner.clone(),
                "insert_hints",
                maintenance::forward_insert_hints,
            )),
        ];
        self.tasks
            .lock()
            .expect("no task panics while holding this lock")
            .extend(tasks);
        Ok(())
    }

    /// Stops gracefully: claims nothing more, gives up leadership (so another node takes the
    /// leader duties over at once), hands back claimed jobs that have not started, lets running
    /// handlers finish within `Config::grace`, then signals their cancellation and waits a
    /// little more. Safe to call more than once.
    pub async fn stop(&self) -> StopReport {
        let inner = &self.inner;
        inner.stop_claiming.cancel();
        let tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .expect("no task panics while holding this lock"),
        );
        for task in tasks {
            // A task that panicked has nothing left to stop.
            let _ = task.await;
        }
        inner.jobs.close();
        let finished_in_grace = tokio::time::timeout(inner.config.grace, inner.jobs.wait())
            .await
            .is_ok();
        if !finished_in_grace {
            inner.stop_handlers.cancel();
            let after_cancel = inner.config.grace.min(Duration::from_secs(5));
            let _ = tokio::time::timeout(after_cancel, inner.jobs.wait()).await;
        }
        // What was reported before `stop` returns is observed before it returns.
        inner.observers.flush(EVENT_FLUSH_MAX).await;
        StopReport {
            released: inner.released.load(Ordering::Relaxed),
            finished_in_grace,
            abandoned: inner.jobs.len(),
        }
    }

    /// Validates a job of `kind` due at `run_at`, without storing it.
    pub fn new_job<P: serde::Serialize + ?Sized>(
        &self,
        kind: &str,
        payload: &P,
        run_at: Timestamp,
        options: JobOptions,
    ) -> Result<NewJob, EngineError> {
        let kind = self.known_kind(kind)?;
        let payload = encode(payload)?;
        Ok(NewJob::new(
            kind,
            payload,
            run_at,
            options,
            self.inner.clock.now(),
        )?)
    }

    /// Schedules a job of `kind` at `run_at`. Durable when it returns.
    pub async fn schedule<P: serde::Serialize + ?Sized>(
        &self,
        kind: &str,
        payload: &P,
        run_at: Timestamp,
        options: JobOptions,
    ) -> Result<JobId, EngineError> {
        let job = self.new_job(kind, payload, run_at, options)?;
        let id = job.id;
        self.schedule_many(vec![job]).await?;
        Ok(id)
    }

    /// Schedules a job of `kind` to run `delay` from now.
    pub async fn schedule_in<P: serde::Serialize + ?Sized>(
        &self,
        kind: &str,
        payload: &P,
        delay: Duration,
        options: JobOptions,
    ) -> Result<JobId, EngineError> {
        let run_at = self.inner.clock.now().add(delay);
        self.schedule(kind, payload, run_at, options).await
    }

    /// Schedules a recurring job: every occurrence of `schedule` runs once.
    pub async fn schedule_recurring<P: serde::Serialize + ?Sized>(
        &self,
        kind: &str,
        payload: &P,
        schedule: Schedule,
        options: JobOptions,
    ) -> Result<JobId, EngineError> {
        let kind = self.known_kind(kind)?;
        let job = NewJob::recurring(
            kind,
            encode(payload)?,
            schedule,
            options,
            self.inner.clock.now(),
        )?;
        let id = job.id;
        self.schedule_many(vec![job]).await?;
        Ok(id)
    }

    /// Stores validated jobs in one batch, all or none, and wakes the dispatcher if one is due
    /// before it would wake.
    pub async fn schedule_many(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>, EngineError> {
        let earliest = jobs.iter().map(|job| job.run_at).min();
        let ids = self
            .inner
            .store
            .insert(jobs, self.inner.clock.now())
            .await?;
        if let Some(earliest) = earliest {
            self.inner.wake_for(earliest);
        }
        Ok(ids)
    }

    /// Cancels a job that has not finished. A handler running it on this node is told to
    /// cancel at once; one running on another node, at its next heartbeat.
    pub async fn cancel(&self, id: JobId) -> Result<Job, EngineError> {
        let job = self.inner.store.cancel(id, self.inner.clock.now()).await?;
        self.inner.signal_cancel(id);
        Ok(job)
    }

    /// Moves a pending job, or revives a dead or cancelled one, to `run_at`.
    pub async fn reschedule(&self, id: JobId, run_at: Timestamp) -> Result<Job, EngineError> {
        let job = self
            .inner
            .store
            .reschedule(id, run_at, self.inner.clock.now())
            .await?;
        self.inner.wake_for(run_at);
        Ok(job)
    }

    /// Tells the dispatcher that a job due at `run_at` was stored by some other path (another
    /// process, a transaction of the application's own); it wakes if that is sooner than planned.
    pub fn notify_due(&self, run_at: Timestamp) {
        self.inner.wake_for(run_at);
    }

    pub async fn get(&self, id: JobId) -> Result<Option<Job>, EngineError> {
        Ok(self.inner.store.get(id).await?)
    }

    /// Waits until the observer has seen every event reported before this call, or
    /// `EVENT_FLUSH_MAX` has passed (an observer that blocks); true if it has seen them.
    pub async fn flush_events(&self) -> bool {
        self.inner.observers.flush(EVENT_FLUSH_MAX).await
    }

    /// The term this node leads under, if it believes it leads (the store fences every duty
    /// with it, so a stale belief changes nothing).
    pub fn leader_term(&self) -> Option<punctual_core::LeaderTerm> {
        self.inner.leader_term()
    }

    /// What went wrong inside the engine without stopping it: loops that panicked and were
    /// started again, events the observer missed.
    pub fn health(&self) -> EngineHealth {
        let losses = &self.inner.observers.losses;
        EngineHealth {
            loop_panics: self.inner.loop_panics.load(Ordering::Relaxed),
            events_dropped: losses.dropped.load(Ordering::Relaxed),
            observer_panics: losses.panics.load(Ordering::Relaxed),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn known_kind(&self, kind: &str) -> Result<Kind, EngineError> {
        let kind = Kind::new(kind)?;
        if !self.inner.accept_unknown_kinds && !self.inner.handlers.contains_key(&kind) {
            return Err(EngineError::UnknownKind(kind.to_string()));
        }
        Ok(kind)
    }
}

fn encode<P: serde::Serialize + ?Sized>(payload: &P) -> Result<Payload, EngineError> {
    let text =
        serde_json::to_string(payload).map_err(|error| EngineError::Payload(error.to_string()))?;
    Ok(Payload::from_json_text(&text)?)
}
