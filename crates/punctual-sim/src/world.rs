//! The world of one run: the shared store and clock, the nodes (real `Scheduler`s, each through
//! its own `FaultyStore`), the simulated handlers, the client that schedules and cancels jobs,
//! and the director that carries out the plan's timeline.
//!
//! A crash does not stop a node's tasks (the engine has no way to, and needs none): its store
//! calls and its handlers simply never complete again, which is what the rest of the cluster
//! sees of a dead process. Its tasks stay parked until the run's runtime is dropped. A restart
//! builds a new `Scheduler` under the same name.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use punctual::{EngineError, JobContext, JobError, Scheduler};
use punctual_core::{
    Job, JobFilter, JobOptions, NewJob, Payload, Schedule, Store, StoreError, limits,
};
use punctual_testkit::MemoryStore;
use tokio::time::Instant;

use crate::clock::SimClock;
use crate::history::{CLIENT, Entry, History, Node};
use crate::plan::{Action, Outcome, PANIC_MESSAGE, Plan, START};
use crate::rng::{Rng, key};
use crate::store::FaultyStore;
use crate::{Options, Run};

/// What every part of the world shares.
pub(crate) struct Shared {
    pub plan: Arc<Plan>,
    pub options: Options,
    pub clock: Arc<SimClock>,
    pub store: Arc<MemoryStore>,
    history: Mutex<History>,
    started: Instant,
}

impl Shared {
    /// Appends `entry` to the history, stamped with the clock's reading.
    pub fn record(&self, entry: Entry) {
        let at = punctual_core::Clock::now(&*self.clock);
        let elapsed = self.elapsed();
        self.history
            .lock()
            .expect("nothing panics while holding the history")
            .push(at, elapsed, entry);
    }

    /// Tokio's time since the run began: the plan's timeline, which clock jumps do not move.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// If `node` is stalled now, when the stall ends.
    fn stalled_until(&self, node: Node) -> Option<Instant> {
        let at = self.elapsed();
        self.plan
            .stalls
            .iter()
            .filter(|window| window.covers(node, at))
            .map(|window| self.started + window.until)
            .max()
    }
}

/// Waits while `node` is stalled, and forever once it is dead.
pub(crate) async fn gate(shared: &Shared, node: Node, dead: &AtomicBool) {
    loop {
        if dead.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        match shared.stalled_until(node) {
            Some(until) => tokio::time::sleep_until(until).await,
            None => return,
        }
    }
}

/// One life of a node: its engine and the flag that kills it.
#[derive(Clone)]
struct Incarnation {
    number: u32,
    scheduler: Scheduler,
    dead: Arc<AtomicBool>,
}

enum Status {
    Up(Incarnation),
    /// Being stopped gracefully; starts again when `stop` returns.
    Stopping(Incarnation),
    Down,
}

struct Slot {
    status: Status,
    /// Incarnations begun so far.
    incarnations: u32,
}

type Nodes = Arc<Mutex<Vec<Slot>>>;

fn lock(nodes: &Nodes) -> std::sync::MutexGuard<'_, Vec<Slot>> {
    nodes
        .lock()
        .expect("nothing panics while holding the node table")
}

/// Runs the plan of `seed` to its horizon and returns what happened.
///
/// Call it on a current-thread tokio runtime with paused time
/// (`Builder::new_current_thread().enable_time().start_paused(true)`); the runtime must have no
/// other work. The run's tasks stay parked on the runtime when this returns: drop the runtime.
pub async fn run(seed: u64, options: Options) -> Run {
    assert_eq!(
        tokio::runtime::Handle::current().runtime_flavor(),
        tokio::runtime::RuntimeFlavor::CurrentThread,
        "a simulation runs on one thread, so that its order of events is one"
    );
    let plan = Arc::new(Plan::generate(seed));
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        options,
        clock: Arc::new(SimClock::new(START)),
        store: Arc::new(MemoryStore::new()),
        history: Mutex::new(History::default()),
        started: Instant::now(),
    });
    let client: Arc<dyn Store> = Arc::new(FaultyStore::new(
        shared.clone(),
        CLIENT,
        0,
        Arc::new(AtomicBool::new(false)),
    ));
    let nodes: Nodes = Arc::new(Mutex::new(
        (0..plan.nodes.len())
            .map(|index| Slot {
                status: Status::Up(incarnation(&shared, index, 0)),
                incarnations: 1,
            })
            .collect(),
    ));

    for (at, action) in &plan.actions {
        tokio::time::sleep_until(shared.started + *at).await;
        act(&shared, &nodes, &client, *action);
    }
    tokio::time::sleep_until(shared.started + plan.workload).await;
    for index in 0..plan.nodes.len() {
        restart(&shared, &nodes, index);
    }
    shared.record(Entry::Drained);
    tokio::time::sleep_until(shared.started + plan.horizon).await;

    let jobs = every_job(&shared.store).await;
    let history = std::mem::take(
        &mut *shared
            .history
            .lock()
            .expect("nothing panics while holding the history"),
    );
    Run {
        plan,
        history,
        jobs,
        end: punctual_core::Clock::now(&*shared.clock),
    }
}

fn act(shared: &Arc<Shared>, nodes: &Nodes, client: &Arc<dyn Store>, action: Action) {
    match action {
        Action::Insert(job) => {
            tokio::spawn(insert(shared.clone(), nodes.clone(), client.clone(), job));
        }
        Action::Cancel(job) => {
            tokio::spawn(cancel(shared.clone(), client.clone(), job));
        }
        Action::Crash(index) => {
            let mut nodes = lock(nodes);
            let slot = &mut nodes[index];
            if let Status::Up(life) | Status::Stopping(life) = &slot.status {
                life.dead.store(true, Ordering::SeqCst);
                slot.status = Status::Down;
                shared.record(Entry::Crashed { node: index });
            }
        }
        Action::Restart(index) => restart(shared, nodes, index),
        Action::Bounce(index) => {
            let mut table = lock(nodes);
            let slot = &mut table[index];
            if let Status::Up(life) = &slot.status {
                let life = life.clone();
                slot.status = Status::Stopping(life.clone());
                tokio::spawn(bounce(shared.clone(), nodes.clone(), index, life));
            }
        }
        Action::Jump(by_us) => {
            shared.clock.jump(by_us);
            shared.record(Entry::Jumped { by_us });
        }
    }
}

/// Starts node `index` again if it is down.
fn restart(shared: &Arc<Shared>, nodes: &Nodes, index: usize) {
    let mut nodes = lock(nodes);
    let slot = &mut nodes[index];
    if matches!(slot.status, Status::Down) {
        let number = slot.incarnations;
        slot.incarnations += 1;
        slot.status = Status::Up(incarnation(shared, index, number));
        shared.record(Entry::Restarted {
            node: index,
            incarnation: number,
        });
    }
}

/// Stops `life` gracefully and starts the node again, unless it crashed meanwhile.
async fn bounce(shared: Arc<Shared>, nodes: Nodes, index: usize, life: Incarnation) {
    life.scheduler.stop().await;
    shared.record(Entry::Stopped { node: index });
    let mut table = lock(&nodes);
    let slot = &mut table[index];
    if matches!(&slot.status, Status::Stopping(stopping) if stopping.number == life.number) {
        slot.status = Status::Down;
        drop(table);
        restart(&shared, &nodes, index);
    }
}

/// Builds and starts incarnation `number` of node `index`.
fn incarnation(shared: &Arc<Shared>, index: usize, number: u32) -> Incarnation {
    let dead = Arc::new(AtomicBool::new(false));
    let store = Arc::new(FaultyStore::new(
        shared.clone(),
        index,
        number,
        dead.clone(),
    ));
    let mut builder = Scheduler::builder(store)
        .clock(shared.clock.clone())
        .config(shared.plan.config(index))
        // The client schedules any kind through any node.
        .accept_unknown_kinds(true);
    for kind in &shared.plan.nodes[index].kinds {
        let (shared, dead) = (shared.clone(), dead.clone());
        builder = builder.handler(kind.as_str(), move |job: JobContext| {
            handle(shared.clone(), index, number, dead.clone(), job)
        });
    }
    let scheduler = builder.build().expect("the plan's settings are valid");
    scheduler.start().expect("started once, inside the runtime");
    Incarnation {
        number,
        scheduler,
        dead,
    }
}

/// The simulated handler: does what the plan says this attempt does, and records its start and
/// its return. A dead node's handler never starts or returns.
///
/// Its start is recorded at its first poll, in the tokio instant the engine launched it (time
/// does not move while a task is ready to run, and clock jumps wait for the next instant): the
/// clock it records is the one the engine judged the start by.
async fn handle(
    shared: Arc<Shared>,
    node: Node,
    incarnation: u32,
    dead: Arc<AtomicBool>,
    job: JobContext,
) -> Result<(), punctual::BoxError> {
    if dead.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    shared.record(Entry::Started {
        node,
        incarnation,
        id: job.id,
        token: job.lease_token,
        attempt: job.attempt,
        run_at: job.run_at,
    });
    let behaviour = shared.plan.behaviour(job.id, job.attempt);
    let work = tokio::time::sleep(behaviour.duration);
    if behaviour.heeds_cancel {
        tokio::select! {
            biased;
            () = job.cancellation.cancelled() => {}
            () = work => {}
        }
    } else {
        work.await;
    }
    // A stall holds only the node's store calls (the process runs, cut off from its store), so
    // only a crash keeps a handler from returning.
    if dead.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    shared.record(Entry::Returned {
        node,
        id: job.id,
        token: job.lease_token,
    });
    match behaviour.outcome {
        Outcome::Succeed => Ok(()),
        Outcome::Fail => Err("simulated failure".into()),
        Outcome::Panic => panic!("{PANIC_MESSAGE}"),
        Outcome::FailPermanently => Err(JobError::permanent("simulated permanent failure").into()),
        Outcome::RetryAfter(delay) => {
            Err(JobError::retry_after(delay, "simulated retry after a delay").into())
        }
    }
}

/// The client schedules planned job `index` through a live node (or the store directly when
/// none is up), retrying the same job (same id) until the store has it: a retry after a lost
/// answer gets `Duplicate`, which confirms it too.
async fn insert(shared: Arc<Shared>, nodes: Nodes, client: Arc<dyn Store>, index: usize) {
    let planned = &shared.plan.jobs[index];
    let now = punctual_core::Clock::now(&*shared.clock);
    let options = JobOptions {
        id: Some(planned.id),
        attempt_max: Some(planned.attempt_max),
        retry: Some(planned.retry),
        priority: Some(planned.priority),
        ..JobOptions::default()
    };
    let payload = Payload::from_json_text(&index.to_string()).expect("a number is JSON");
    let job = match planned.every {
        Some(every) => NewJob::recurring(
            planned.kind.clone(),
            payload,
            Schedule::interval(every).expect("the plan's intervals are in range"),
            options,
            now,
        ),
        None => {
            let run_at = if planned.delay_ms >= 0 {
                now.add(Duration::from_millis(planned.delay_ms.unsigned_abs()))
            } else {
                now.sub(Duration::from_millis(planned.delay_ms.unsigned_abs()))
            };
            NewJob::new(planned.kind.clone(), payload, run_at, options, now)
        }
    }
    .expect("the plan's jobs are valid");
    let mut rng = Rng::new(key(&[shared.plan.seed, index as u64, 0x1_15e7]));
    loop {
        let up: Vec<Scheduler> = lock(&nodes)
            .iter()
            .filter_map(|slot| match &slot.status {
                Status::Up(life) => Some(life.scheduler.clone()),
                _ => None,
            })
            .collect();
        let attempt = async {
            if up.is_empty() {
                let now = punctual_core::Clock::now(&*shared.clock);
                client.insert(vec![job.clone()], now).await.map(drop)
            } else {
                match rng.pick(&up).schedule_many(vec![job.clone()]).await {
                    Ok(_) => Ok(()),
                    Err(EngineError::Store(error)) => Err(error),
                    Err(other) => panic!("the client's job was refused: {other}"),
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(()) | Err(StoreError::Duplicate(_))) => {
                shared.record(Entry::Confirmed { id: planned.id });
                return;
            }
            Ok(Err(StoreError::Unavailable(_))) | Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(other)) => panic!("the client's insert was refused: {other}"),
        }
    }
}

/// The client cancels planned job `index`, retrying while the store is unavailable. A job that
/// finished or was never stored is left as it is.
async fn cancel(shared: Arc<Shared>, client: Arc<dyn Store>, index: usize) {
    let id = shared.plan.jobs[index].id;
    for _ in 0..50 {
        let now = punctual_core::Clock::now(&*shared.clock);
        match client.cancel(id, now).await {
            Err(StoreError::Unavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => return,
        }
    }
}

/// Every stored job, read from the store itself (no faults).
async fn every_job(store: &MemoryStore) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(JobFilter::default(), after, limits::PAGE_SIZE_MAX)
            .await
            .expect("MemoryStore lists");
        jobs.extend(page.jobs);
        match page.next {
            Some(next) => after = Some(next),
            None => return jobs,
        }
    }
}
