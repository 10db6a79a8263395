//! The history of a run: every store write as the store applied it, every handler start and
//! return, and the world's own events (crashes, restarts, jumps), in the one order they happened
//! (the simulation runs on one thread, so recording order is the order of effects).
//!
//! It records; it judges nothing (that is `check`). Entries carry only plain values, so a
//! history can be written by hand (the checker's own tests forge some) and digested.

use std::fmt;
use std::time::Duration;

use punctual_core::{FailOutcome, JobId, JobState, LeaderTerm, LeaseToken, Timestamp};

/// Which node did something: an index into `Plan::nodes`, or `CLIENT` for the application that
/// schedules and cancels jobs.
pub type Node = usize;

/// The application's calls (schedule, cancel) come from this node index.
pub const CLIENT: Node = usize::MAX;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    // What the store applied, when it applied it. `now` is the time the caller passed (older
    // than the record's own time when the call was delayed on its way).
    /// An insert stored this job.
    Inserted {
        node: Node,
        id: JobId,
        run_at: Timestamp,
        attempt_max: u32,
    },
    /// A claim took the job under `token`, its lease until `expires_at`.
    Claimed {
        node: Node,
        id: JobId,
        token: LeaseToken,
        attempt: u32,
        attempt_max: u32,
        run_at: Timestamp,
        expires_at: Timestamp,
        due_by: Timestamp,
        now: Timestamp,
    },
    /// The claim of `parent` stored its next occurrence, `id`, due at `run_at`.
    Occurrence {
        parent: JobId,
        id: JobId,
        run_at: Timestamp,
    },
    Extended {
        node: Node,
        id: JobId,
        token: LeaseToken,
        expires_at: Timestamp,
        now: Timestamp,
    },
    Completed {
        node: Node,
        id: JobId,
        token: LeaseToken,
        now: Timestamp,
    },
    Failed {
        node: Node,
        id: JobId,
        token: LeaseToken,
        outcome: FailOutcome,
        now: Timestamp,
    },
    Released {
        node: Node,
        id: JobId,
        token: LeaseToken,
    },
    /// The leader's rescue ended the lease `token`, leaving the job in `state`.
    Rescued {
        node: Node,
        term: LeaderTerm,
        id: JobId,
        token: LeaseToken,
        state: JobState,
        now: Timestamp,
    },
    Cancelled {
        node: Node,
        id: JobId,
        now: Timestamp,
    },
    /// The store made `node` leader under `term` until `expires_at`.
    Led {
        node: Node,
        term: LeaderTerm,
        expires_at: Timestamp,
        now: Timestamp,
    },
    Resigned {
        node: Node,
        term: LeaderTerm,
    },
    /// A leader duty other than rescue (purge) was accepted under `term`.
    Duty {
        node: Node,
        term: LeaderTerm,
        now: Timestamp,
    },
    /// The store refused a write about `token` with `LeaseLost` (or `NotFound`).
    Refused {
        node: Node,
        operation: &'static str,
        id: JobId,
        token: LeaseToken,
    },
    // What the engine did, seen by its handlers.
    /// A handler started (`incarnation` counts the node's restarts).
    Started {
        node: Node,
        incarnation: u32,
        id: JobId,
        token: LeaseToken,
        attempt: u32,
        run_at: Timestamp,
    },
    /// A handler returned (or panicked); a crashed node's handlers never do.
    Returned {
        node: Node,
        id: JobId,
        token: LeaseToken,
    },
    // What the world did.
    /// The client learned that its insert of `id` is stored.
    Confirmed {
        id: JobId,
    },
    Crashed {
        node: Node,
    },
    Restarted {
        node: Node,
        incarnation: u32,
    },
    /// A graceful stop returned.
    Stopped {
        node: Node,
    },
    /// The clock stepped by `by_us` microseconds.
    Jumped {
        by_us: i64,
    },
    /// The faults are over; every node is up from here on.
    Drained,
}

/// One entry, the time the clock read when it was recorded, and tokio's time since the start
/// (which clock jumps do not move).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub at: Timestamp,
    pub elapsed: Duration,
    pub entry: Entry,
}

#[derive(Clone, Debug, Default)]
pub struct History {
    pub records: Vec<Record>,
}

impl History {
    pub fn push(&mut self, at: Timestamp, elapsed: Duration, entry: Entry) {
        self.records.push(Record { at, elapsed, entry });
    }

    /// A digest of every record (FNV-1a over their printed form): two runs with equal digests
    /// had the same effects at the same times, in the same order.
    pub fn digest(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for record in &self.records {
            for byte in format!("{record:?}").bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        hash
    }

    /// How many records `pick` selects.
    pub fn count(&self, pick: impl Fn(&Entry) -> bool) -> usize {
        self.records
            .iter()
            .filter(|record| pick(&record.entry))
            .count()
    }
}

impl fmt::Display for History {
    /// One line per record: tokio's time and the clock's, in milliseconds since the start.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for record in &self.records {
            let clock = record.at.micros_since(crate::plan::START) as f64 / 1_000.0;
            let elapsed = record.elapsed.as_micros() as f64 / 1_000.0;
            writeln!(f, "{elapsed:>9.3} {clock:>10.3}  {:?}", record.entry)?;
        }
        Ok(())
    }
}
