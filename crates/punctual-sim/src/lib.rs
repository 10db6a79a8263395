//! A deterministic simulation of punctual (issue 8, part 5): real engines (`Scheduler`s) and the
//! store protocol run on one thread under tokio's paused time, on a plan drawn from a seed, and a
//! checker judges what happened.
//!
//! A run (`run`) builds the plan of its seed (`plan`): one to four nodes sharing one
//! `MemoryStore`, each through a `FaultyStore` (`store`) that refuses, delays, holds and loses
//! calls; jobs with random kinds, times, attempts and retry policies, some recurring, some
//! cancelled; handlers whose outcome (success, error, panic, permanent failure, retry after a
//! delay) and duration are keyed by job and attempt; crashes and restarts, graceful restarts,
//! stalls, store outages and latency spikes, and clock jumps, all within the first part of the
//! run; then a fault-free drain with every node up. The world (`world`) records every store
//! write as the store applied it and every handler start and return into a `History`, and
//! `check` holds the history and the final state to the invariants listed there.
//!
//! The runner lives in the crate's tests (`tests/it`), which build the paused runtime; see
//! docs/simulation.md for running many seeds and replaying one. This crate changes nothing in
//! the engine or the store: it drives them through their public API only.

mod check;
mod clock;
mod history;
pub mod plan;
mod rng;
mod store;
mod world;

pub use check::{Invariant, STUCK_AFTER, Violation, check};
pub use clock::SimClock;
pub use history::{CLIENT, Entry, History, Node, Record};
pub use plan::Plan;
pub use rng::Rng;
pub use world::run;

use std::sync::Arc;

use punctual_core::{Job, Timestamp};

/// Choices beyond the seed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Break the store on purpose, to show the checker catches it.
    pub mutation: Option<Mutation>,
}

/// A deliberate defect of the store, for the checker's own tests: a run under one must fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Every rescue first cuts every running lease short, so live leases are rescued and their
    /// jobs run again while their handlers still run.
    RescueEarly,
    /// A completion refused for a stale token is reported (and recorded) as accepted.
    AcceptStaleCompletions,
    /// About a third of inserts are acknowledged without being stored.
    ForgetInserts,
}

/// What one run produced.
pub struct Run {
    pub plan: Arc<Plan>,
    pub history: History,
    /// Every job in the store at the end.
    pub jobs: Vec<Job>,
    /// The clock's reading at the end.
    pub end: Timestamp,
}

impl Run {
    /// The checker's verdict on this run, and every planned job's insert confirmed to the
    /// client (the run ends with a fault-free minute: an insert still unconfirmed then was
    /// refused, which the client reports by a panic that its task's end would swallow).
    pub fn violations(&self) -> Vec<Violation> {
        let mut violations = check(&self.history, &self.jobs, self.end);
        for job in &self.plan.jobs {
            let confirmed = self
                .history
                .count(|entry| matches!(entry, Entry::Confirmed { id } if *id == job.id));
            if confirmed == 0 {
                violations.push(Violation {
                    invariant: Invariant::NoJobLost,
                    id: Some(job.id),
                    at: self.end,
                    detail: "the client's insert was never confirmed".to_owned(),
                });
            }
        }
        violations
    }

    /// Counts of what the run exercised, for a summary line.
    pub fn stats(&self) -> Stats {
        let count = |pick: fn(&Entry) -> bool| self.history.count(pick);
        Stats {
            jobs: self.jobs.len(),
            starts: count(|entry| matches!(entry, Entry::Started { .. })),
            rescues: count(|entry| matches!(entry, Entry::Rescued { .. })),
            refused: count(|entry| matches!(entry, Entry::Refused { .. })),
            crashes: count(|entry| matches!(entry, Entry::Crashed { .. })),
            leader_terms: {
                let mut terms: Vec<u64> = self
                    .history
                    .records
                    .iter()
                    .filter_map(|record| match record.entry {
                        Entry::Led { term, .. } => Some(term.0),
                        _ => None,
                    })
                    .collect();
                terms.dedup();
                terms.len()
            },
            jumps: count(|entry| matches!(entry, Entry::Jumped { .. })),
        }
    }
}

/// How much of each kind of event a run (or several, summed) saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub jobs: usize,
    pub starts: usize,
    pub rescues: usize,
    /// Writes the store refused with `LeaseLost`.
    pub refused: usize,
    pub crashes: usize,
    /// Terms of leadership granted (elections, not renewals).
    pub leader_terms: usize,
    pub jumps: usize,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.jobs += other.jobs;
        self.starts += other.starts;
        self.rescues += other.rescues;
        self.refused += other.refused;
        self.crashes += other.crashes;
        self.leader_terms += other.leader_terms;
        self.jumps += other.jumps;
    }
}
