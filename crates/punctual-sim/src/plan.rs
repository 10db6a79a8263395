//! The plan of one run, drawn from its seed before the run begins: the nodes and their settings,
//! the jobs and when they are scheduled, and the timeline of faults (crashes and restarts,
//! graceful restarts, stalls, store outages, latency spikes, clock jumps, cancellations).
//!
//! Every random choice of a run is made here or keyed by what it is about (`Plan::behaviour`,
//! keyed by job and attempt; the fault draws of `store`, one generator per node incarnation), so
//! that a seed names a scenario even where the interleaving of the run itself may vary (see
//! docs/simulation.md). Must not depend on anything but the seed.

use std::fmt;
use std::time::Duration;

use punctual::Config;
use punctual_core::{JobId, Kind, NodeId, Priority, RetryPolicy, Timestamp};

use crate::rng::{Rng, key};

/// When every run's clock starts (2025-11-29T07:06:40Z, the testkit's `fixtures::NOW`).
pub const START: Timestamp = Timestamp::from_millis(1_764_400_000_000);

/// The handler kinds; each node has handlers for some of them.
pub const KINDS: [&str; 3] = ["alpha", "beta", "gamma"];

/// How long the run goes on after the faults stop, so that every job can finish: longer than
/// the most attempts times the longest handler, backoff and rescue, with room to spare.
pub const DRAIN: Duration = Duration::from_secs(60);

/// The message of a simulated handler panic, so the runner can keep them out of the test output.
pub const PANIC_MESSAGE: &str = "simulated handler panic";

pub struct Plan {
    pub seed: u64,
    pub nodes: Vec<NodePlan>,
    pub jobs: Vec<JobPlan>,
    /// What happens when (tokio time since the start), in time order.
    pub actions: Vec<(Duration, Action)>,
    /// Store calls fail `Unavailable` in these windows, `level` percent of them.
    pub outages: Vec<Window>,
    /// Store calls take up to `level` milliseconds in these windows.
    pub spikes: Vec<Window>,
    /// A node's store calls and handler starts are held until the window ends (a stopped or
    /// cut-off process whose requests arrive late).
    pub stalls: Vec<Window>,
    /// Outside the windows and before `workload`: this percent of store calls fail...
    pub error_percent: u64,
    /// ...and each takes up to this long.
    pub latency_max: Duration,
    /// Faults happen before this; then every node runs, fault-free, until `horizon`.
    pub workload: Duration,
    pub horizon: Duration,
    /// The lease, heartbeat and claim window every node uses (the rest of `Config` is fixed).
    pub lease: Duration,
    pub heartbeat: Duration,
    pub claim_ahead: Duration,
}

pub struct NodePlan {
    pub name: NodeId,
    pub kinds: Vec<Kind>,
    pub concurrency: usize,
    pub claim_batch: usize,
}

pub struct JobPlan {
    pub id: JobId,
    pub kind: Kind,
    /// When the client schedules it (tokio time since the start).
    pub insert_at: Duration,
    /// Its `run_at` relative to the clock when the client schedules it (negative: overdue).
    pub delay_ms: i64,
    pub attempt_max: u32,
    pub retry: RetryPolicy,
    pub priority: Priority,
    /// Recurring every this long (then `delay_ms` is unused: the first occurrence is one
    /// interval after the insert).
    pub every: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The client schedules job `0` (an index into `Plan::jobs`).
    Insert(usize),
    /// The client cancels job `0`.
    Cancel(usize),
    /// Node `0` dies: no store call of it completes and no handler of it starts or returns.
    Crash(usize),
    /// Node `0` starts again, under the same name, with nothing of its past incarnation.
    Restart(usize),
    /// Node `0` is stopped gracefully (`Scheduler::stop`) and started again.
    Bounce(usize),
    /// The clock steps by this many microseconds.
    Jump(i64),
}

#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// The node whose calls it affects; `None` for every caller (the store itself is sick).
    pub node: Option<usize>,
    pub from: Duration,
    pub until: Duration,
    pub level: u64,
}

impl Window {
    pub fn covers(&self, node: usize, at: Duration) -> bool {
        self.node.is_none_or(|only| only == node) && self.from <= at && at < self.until
    }
}

/// What one attempt's handler does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Behaviour {
    pub outcome: Outcome,
    pub duration: Duration,
    /// Whether it returns early when told to cancel (many real handlers do not).
    pub heeds_cancel: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeed,
    Fail,
    Panic,
    FailPermanently,
    RetryAfter(Duration),
}

impl Plan {
    pub fn generate(seed: u64) -> Plan {
        let mut rng = Rng::new(seed);
        let node_count = usize::try_from(rng.between(1, 4)).expect("small");
        let workload = rng.millis(10_000, 30_000);
        let lease = rng.millis(500, 2_000);
        // Not a round fraction of the lease, so heartbeats and handler ends rarely share a tick.
        let heartbeat = lease / 4 + rng.millis(1, 37);
        let claim_ahead = rng.millis(20, 200);

        let mut nodes: Vec<NodePlan> = (0..node_count)
            .map(|index| {
                let kinds: Vec<Kind> = KINDS
                    .iter()
                    .filter(|_| rng.percent(70))
                    .map(|name| Kind::new(name).expect("a valid literal"))
                    .collect();
                NodePlan {
                    name: NodeId::new(&format!("node-{index}")).expect("a valid name"),
                    kinds,
                    concurrency: usize::try_from(rng.between(1, 8)).expect("small"),
                    claim_batch: usize::try_from(rng.between(1, 10)).expect("small"),
                }
            })
            .collect();
        // Every kind has a node that runs it, so every job can finish.
        for name in KINDS {
            let kind = Kind::new(name).expect("a valid literal");
            if !nodes.iter().any(|node| node.kinds.contains(&kind)) {
                let index = usize::try_from(rng.below(node_count as u64)).expect("small");
                nodes[index].kinds.push(kind);
            }
        }
        for node in &mut nodes {
            node.kinds.sort();
        }

        let mut actions = Vec::new();
        let mut jobs = Vec::new();
        let job_count = rng.between(5, 40);
        // At most two recurring jobs, so that no node is overloaded for good: a pending job
        // overdue at the end is then stuck, not queued behind a backlog that never clears.
        let mut recurring = 0;
        for index in 0..job_count {
            let every = (recurring < 2 && rng.percent(8)).then(|| {
                recurring += 1;
                Duration::from_secs(rng.between(2, 6))
            });
            let base = rng.millis(20, 500);
            let job = JobPlan {
                id: job_id(seed, index),
                kind: Kind::new(rng.pick::<&str>(&KINDS)).expect("a valid literal"),
                insert_at: rng.millis(0, workload.as_millis() as u64),
                delay_ms: if rng.percent(10) {
                    -i64::try_from(rng.between(1, 3_000)).expect("small")
                } else {
                    i64::try_from(rng.between(0, 8_000)).expect("small")
                },
                attempt_max: u32::try_from(rng.between(1, 5)).expect("small"),
                retry: RetryPolicy::new(base, base.max(rng.millis(100, 2_000)), 0)
                    .expect("a base within its max, no jitter"),
                priority: Priority::new(u8::try_from(rng.below(10)).expect("below 10"))
                    .expect("0..=9"),
                every,
            };
            actions.push((job.insert_at, Action::Insert(jobs.len())));
            jobs.push(job);
        }
        for _ in 0..rng.below(4) {
            let job = usize::try_from(rng.below(job_count)).expect("small");
            let at = jobs[job].insert_at + rng.millis(0, 6_000);
            actions.push((at.min(workload), Action::Cancel(job)));
        }

        for _ in 0..rng.below(5) {
            let node = usize::try_from(rng.below(node_count as u64)).expect("small");
            let at = rng.millis(0, workload.as_millis() as u64);
            actions.push((at, Action::Crash(node)));
            // A node still down when the workload ends is restarted then (see `world`).
            let back = at + rng.millis(100, 8_000);
            if back < workload {
                actions.push((back, Action::Restart(node)));
            }
        }
        for _ in 0..rng.below(3) {
            let node = usize::try_from(rng.below(node_count as u64)).expect("small");
            actions.push((
                rng.millis(0, workload.as_millis() as u64),
                Action::Bounce(node),
            ));
        }
        for _ in 0..rng.below(4) {
            // Mostly forward (a suspended machine, a corrected clock); some steps back (NTP,
            // a node's offset to the database's clock measured again).
            let by = if rng.percent(40) {
                -i64::try_from(rng.between(1_000, 500_000)).expect("small")
            } else {
                i64::try_from(rng.between(50_000, 5_000_000)).expect("small")
            };
            actions.push((rng.millis(0, workload.as_millis() as u64), Action::Jump(by)));
        }
        // Stable: a crash and a restart drawn for the same instant keep their order.
        actions.sort_by_key(|(at, _)| *at);

        let window = |rng: &mut Rng, node: Option<usize>, longest_ms: u64, level: u64| {
            let from = rng.millis(0, workload.as_millis() as u64);
            Window {
                node,
                from,
                until: (from + rng.millis(100, longest_ms)).min(workload),
                level,
            }
        };
        let any_node = |rng: &mut Rng| {
            rng.percent(70)
                .then(|| usize::try_from(rng.below(node_count as u64)).expect("small"))
        };
        let outages = (0..rng.below(3))
            .map(|_| {
                let node = any_node(&mut rng);
                let level = rng.between(50, 100);
                window(&mut rng, node, 4_000, level)
            })
            .collect();
        let spikes = (0..rng.below(4))
            .map(|_| {
                let node = any_node(&mut rng);
                let level = rng.between(100, 3_000);
                window(&mut rng, node, 5_000, level)
            })
            .collect();
        let stalls = (0..rng.below(4))
            .map(|_| {
                let node = Some(usize::try_from(rng.below(node_count as u64)).expect("small"));
                window(&mut rng, node, 5_000, 0)
            })
            .collect();

        Plan {
            seed,
            nodes,
            jobs,
            actions,
            outages,
            spikes,
            stalls,
            error_percent: rng.between(0, 5),
            latency_max: rng.millis(0, 20),
            workload,
            horizon: workload + DRAIN,
            lease,
            heartbeat,
            claim_ahead,
        }
    }

    /// What attempt `attempt` of job `id` does: keyed by both, so an attempt does the same in
    /// every replay whichever node runs it and whenever.
    pub fn behaviour(&self, id: JobId, attempt: u32) -> Behaviour {
        let bits = id.as_u128();
        let mut rng = Rng::new(key(&[
            self.seed,
            (bits >> 64) as u64,
            bits as u64,
            u64::from(attempt),
        ]));
        let roll = rng.below(100);
        let outcome = match roll {
            0..55 => Outcome::Succeed,
            55..80 => Outcome::Fail,
            80..88 => Outcome::Panic,
            88..92 => Outcome::FailPermanently,
            _ => Outcome::RetryAfter(rng.millis(50, 1_500)),
        };
        let duration = match rng.below(100) {
            0..70 => rng.millis(0, 200),
            70..90 => rng.millis(200, 900),
            _ => rng.millis(1_000, 3_000),
        };
        Behaviour {
            outcome,
            duration,
            heeds_cancel: rng.percent(50),
        }
    }

    /// The engine's settings for node `index`: short leases and intervals, so that a run of a
    /// minute of virtual time sees many of each.
    pub fn config(&self, index: usize) -> Config {
        let node = &self.nodes[index];
        Config {
            node: node.name.clone(),
            queues: None,
            concurrency: node.concurrency,
            claim_batch: node.claim_batch,
            claim_ahead: self.claim_ahead,
            lease: self.lease,
            heartbeat: self.heartbeat,
            poll_max: Duration::from_millis(500),
            leader_lease: Duration::from_secs(1),
            leader_renew: Duration::from_millis(300),
            rescue_interval: Duration::from_millis(200),
            // Nothing finished is purged within a run, so the final state shows every job.
            retention: Duration::from_secs(24 * 3600),
            purge_interval: Duration::from_secs(5),
            grace: Duration::from_millis(500),
            ..Config::default()
        }
    }

    /// A digest of the whole plan. The regression seeds pin theirs: a change to how plans are
    /// drawn gives every seed another scenario, and those seeds would silently stop naming the
    /// runs that found their bugs.
    /// Every drawn value is hashed as a number (not through `Debug`, whose format is not
    /// promised to stay the same).
    pub fn fingerprint(&self) -> u64 {
        let micros = |duration: Duration| duration.as_micros() as u64;
        let mut parts = vec![
            self.seed,
            self.error_percent,
            micros(self.latency_max),
            micros(self.workload),
            micros(self.horizon),
            micros(self.lease),
            micros(self.heartbeat),
            micros(self.claim_ahead),
        ];
        // The settings every node shares, the fixed ones included.
        let config = self.config(0);
        parts.extend(
            [
                config.claim_ahead,
                config.lease,
                config.heartbeat,
                config.poll_max,
                config.leader_lease,
                config.leader_renew,
                config.rescue_interval,
                config.retention,
                config.purge_interval,
                config.grace,
            ]
            .map(micros),
        );
        for node in &self.nodes {
            parts.extend([node.concurrency as u64, node.claim_batch as u64]);
            parts.extend(
                node.kinds
                    .iter()
                    .map(|kind| key(&kind.as_str().bytes().map(u64::from).collect::<Vec<_>>())),
            );
        }
        for job in &self.jobs {
            let bits = job.id.as_u128();
            parts.extend([
                (bits >> 64) as u64,
                bits as u64,
                key(&job.kind.as_str().bytes().map(u64::from).collect::<Vec<_>>()),
                micros(job.insert_at),
                job.delay_ms as u64,
                u64::from(job.attempt_max),
                micros(job.retry.backoff_base()),
                micros(job.retry.backoff_max()),
                u64::from(job.priority.get()),
                job.every.map_or(0, micros),
            ]);
        }
        for (at, action) in &self.actions {
            let (tag, value) = match *action {
                Action::Insert(job) => (1, job as u64),
                Action::Cancel(job) => (2, job as u64),
                Action::Crash(node) => (3, node as u64),
                Action::Restart(node) => (4, node as u64),
                Action::Bounce(node) => (5, node as u64),
                Action::Jump(by_us) => (6, by_us as u64),
            };
            parts.extend([micros(*at), tag, value]);
        }
        for (tag, windows) in [(1, &self.outages), (2, &self.spikes), (3, &self.stalls)] {
            for window in windows {
                parts.extend([
                    tag,
                    window.node.map_or(u64::MAX, |node| node as u64),
                    micros(window.from),
                    micros(window.until),
                    window.level,
                ]);
            }
        }
        key(&parts)
    }
}

impl fmt::Display for Plan {
    /// An outline: the settings, the nodes, the faults and the timeline (inserts left out).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {} jobs, workload {:?} then a fault-free drain to {:?}; lease {:?}, \
             heartbeat {:?}, claim ahead {:?}; {}% of calls fail, up to {:?} latency",
            self.seed,
            self.jobs.len(),
            self.workload,
            self.horizon,
            self.lease,
            self.heartbeat,
            self.claim_ahead,
            self.error_percent,
            self.latency_max,
        )?;
        for (index, node) in self.nodes.iter().enumerate() {
            let kinds: Vec<&str> = node.kinds.iter().map(|kind| kind.as_str()).collect();
            writeln!(
                f,
                "node {index}: kinds {kinds:?}, concurrency {}, claim batch {}",
                node.concurrency, node.claim_batch
            )?;
        }
        for (name, windows) in [
            ("outage", &self.outages),
            ("spike", &self.spikes),
            ("stall", &self.stalls),
        ] {
            for window in windows {
                let whom = window
                    .node
                    .map_or_else(|| "every caller".to_owned(), |node| format!("node {node}"));
                writeln!(
                    f,
                    "{name} of {whom} from {:?} to {:?}, level {}",
                    window.from, window.until, window.level
                )?;
            }
        }
        for (at, action) in &self.actions {
            if !matches!(action, Action::Insert(_)) {
                writeln!(f, "at {at:?}: {action:?}")?;
            }
        }
        Ok(())
    }
}

/// A planned job's id: a valid UUIDv7 made of the seed and the job's index, so a run draws no id
/// from the operating system.
fn job_id(seed: u64, index: u64) -> JobId {
    let millis = u64::try_from(START.as_millis()).expect("START is after 1970");
    let random = key(&[seed, index]);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = 0x70 | ((index >> 8) & 0x0f) as u8; // version 7
    bytes[7] = index as u8;
    bytes[8] = 0x80 | (random as u8 & 0x3f); // the RFC 9562 variant
    bytes[9..].copy_from_slice(&random.to_be_bytes()[1..]);
    JobId::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_makes_one_plan() {
        let first = Plan::generate(42);
        let second = Plan::generate(42);
        assert_eq!(first.actions, second.actions);
        assert_eq!(
            first.jobs.iter().map(|job| job.id).collect::<Vec<_>>(),
            second.jobs.iter().map(|job| job.id).collect::<Vec<_>>()
        );
        let other = Plan::generate(43);
        assert_ne!(first.jobs[0].id, other.jobs[0].id);
    }

    #[test]
    fn every_kind_has_a_node_and_every_fault_ends_with_the_workload() {
        for seed in 0..200 {
            let plan = Plan::generate(seed);
            for name in KINDS {
                let kind = Kind::new(name).expect("valid");
                assert!(plan.nodes.iter().any(|node| node.kinds.contains(&kind)));
            }
            for window in plan.outages.iter().chain(&plan.spikes).chain(&plan.stalls) {
                assert!(window.until <= plan.workload, "seed {seed}: {window:?}");
            }
            assert!(plan.actions.iter().all(|(at, _)| *at <= plan.workload));
        }
    }

    #[test]
    fn planned_ids_are_distinct_valid_v7_ids() {
        let plan = Plan::generate(7);
        let mut ids: Vec<JobId> = plan.jobs.iter().map(|job| job.id).collect();
        for id in &ids {
            let text = id.to_string();
            assert_eq!(text.as_bytes()[14], b'7', "{text}");
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), plan.jobs.len());
    }
}
