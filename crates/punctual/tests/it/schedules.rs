//! Schedules on a running engine, in virtual time: each occurrence fires once and on time, and
//! neither a restart nor a change of leader loses or doubles one.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use punctual::{
    Config, JobContext, JobId, JobTemplate, NodeId, OccurrenceEntry, OccurrenceOutcome,
    ScheduleDefinition, ScheduleKey, ScheduleName, Scheduler, Store, Timestamp,
};
use punctual_core::{Clock, JobState, Kind, Payload, Schedule};

use crate::engine::{Harness, RemoteStore, config};

/// Every start of a handler: job id and when.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<(JobId, Timestamp)>>>);

fn node(harness: &Harness, store: Arc<dyn Store>, name: &str, starts: &Starts) -> Scheduler {
    let starts = starts.clone();
    let clock = harness.clock.clone();
    let scheduler = Scheduler::builder(store)
        .clock(harness.clock.clone())
        .config(Config {
            node: NodeId::new(name).expect("valid"),
            rescue_interval: Duration::from_millis(500),
            ..config()
        })
        .handler("tick", move |job: JobContext| {
            let starts = starts.clone();
            let now = clock.now();
            async move {
                starts.0.lock().expect("not poisoned").push((job.id, now));
                Ok(())
            }
        })
        .build()
        .expect("build");
    scheduler.start().expect("start");
    scheduler
}

fn every_second(name: &str) -> ScheduleDefinition {
    ScheduleDefinition::new(
        ScheduleName::new(name).expect("valid"),
        Schedule::cron("* * * * * *", "UTC").expect("valid"),
        JobTemplate::new(Kind::new("tick").expect("valid"), Payload::null()),
    )
}

async fn ledger(store: &dyn Store, name: &str) -> Vec<OccurrenceEntry> {
    let key = ScheduleKey::Name(ScheduleName::new(name).expect("valid"));
    let schedule = store
        .get_schedule(&key)
        .await
        .expect("get")
        .expect("exists");
    let mut entries = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_occurrences(schedule.id, before, 1_000)
            .await
            .expect("list");
        let Some(last) = page.last() else { break };
        before = Some(last.seq);
        entries.extend(page);
    }
    entries.reverse();
    entries
}

/// The fired occurrences of the ledger, in order, with their jobs; panics on any skip.
fn fired(entries: &[OccurrenceEntry]) -> Vec<(Timestamp, JobId)> {
    entries
        .iter()
        .map(|entry| match entry.outcome {
            OccurrenceOutcome::Fired { job, .. } => (entry.at, job),
            ref other => panic!("occurrence {} was {other:?}", entry.at),
        })
        .collect()
}

/// Every second from the first fired occurrence to the last appears once, none twice.
fn assert_contiguous(fired: &[(Timestamp, JobId)]) {
    for pair in fired.windows(2) {
        assert_eq!(
            pair[1].0.duration_since(pair[0].0),
            Duration::from_secs(1),
            "a gap or a double between {} and {}",
            pair[0].0,
            pair[1].0
        );
    }
}

#[tokio::test(start_paused = true)]
async fn each_occurrence_fires_once_and_on_time() {
    let harness = Harness::new();
    let starts = Starts::default();
    let scheduler = node(&harness, harness.store.clone(), "node-a", &starts);
    scheduler
        .schedules()
        .create(every_second("ticks"))
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_secs(10)).await;
    scheduler.stop().await;

    let fired = fired(&ledger(harness.store.as_ref(), "ticks").await);
    assert!(fired.len() >= 9, "{} fired", fired.len());
    assert_contiguous(&fired);
    let starts = starts.0.lock().expect("not poisoned").clone();
    let by_job: BTreeMap<JobId, Timestamp> = starts.iter().copied().collect();
    assert_eq!(by_job.len(), starts.len(), "no job started twice");
    for (at, job) in &fired {
        let Some(started) = by_job.get(job) else {
            // The last ones were inserted ahead and had not come due when the node stopped.
            assert!(*at >= fired[fired.len() - 3].0, "{at} never started");
            continue;
        };
        assert!(started >= at, "started early: {started} < {at}");
        assert!(
            started.duration_since(*at) <= Duration::from_millis(5),
            "{at} started {started}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_between_occurrences_loses_none_and_doubles_none() {
    let harness = Harness::new();
    let starts = Starts::default();
    let first = node(&harness, harness.store.clone(), "node-a", &starts);
    first
        .schedules()
        .create(every_second("ticks"))
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_secs(5)).await;
    first.stop().await;
    // Down for three seconds: shorter than the misfire grace, so the occurrences missed fire
    // late on restart rather than being skipped.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = node(&harness, harness.store.clone(), "node-a2", &starts);
    tokio::time::sleep(Duration::from_secs(5)).await;
    second.stop().await;

    let fired = fired(&ledger(harness.store.as_ref(), "ticks").await);
    assert!(fired.len() >= 12, "{} fired", fired.len());
    assert_contiguous(&fired);
    let starts = starts.0.lock().expect("not poisoned").clone();
    let started: BTreeMap<JobId, usize> =
        starts.iter().fold(BTreeMap::new(), |mut counts, (job, _)| {
            *counts.entry(*job).or_default() += 1;
            counts
        });
    assert!(started.values().all(|count| *count == 1), "a job ran twice");
    for (_, job) in &fired[..fired.len() - 3] {
        let state = harness
            .store
            .get(*job)
            .await
            .expect("get")
            .expect("stored")
            .state;
        assert_eq!(state, JobState::Succeeded, "job {job}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_change_of_leader_while_a_schedule_is_due_loses_none_and_doubles_none() {
    let harness = Harness::new();
    let starts = Starts::default();
    let link = Arc::new(RemoteStore::new(harness.store.clone()));
    let leader = node(&harness, link.clone(), "node-a", &starts);
    leader
        .schedules()
        .create(every_second("ticks"))
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let follower = node(&harness, harness.store.clone(), "node-b", &starts);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The leader is cut off with occurrences inserted ahead and due every second: the
    // follower takes the duty over once the leadership expires, from the high-water mark the
    // leader last committed.
    link.cut.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(20)).await;
    follower.stop().await;
    link.cut.store(false, Ordering::SeqCst);
    leader.stop().await;

    let entries = ledger(harness.store.as_ref(), "ticks").await;
    let fired = fired(&entries);
    assert!(fired.len() >= 22, "{} fired", fired.len());
    assert_contiguous(&fired);
    // Each occurrence's job ran (the ones the cut-off leader had claimed were rescued and run
    // by the follower once their leases expired).
    let ran: std::collections::BTreeSet<JobId> = starts
        .0
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|(job, _)| *job)
        .collect();
    for (at, job) in &fired[..fired.len() - 3] {
        assert!(ran.contains(job), "the occurrence at {at} never ran");
    }
}
