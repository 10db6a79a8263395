//! What the engine reports as it works, to an optional observer (logs, the demo, the benchmark).
//!
//! The observer is called on a thread of its own (`observe`), in the order the events happened.

use std::time::Duration;

use punctual_core::recurring::plan::PlanSummary;
use punctual_core::{
    FailOutcome, JobId, Kind, LeaderTerm, LeaseToken, RescueOutcome, ScheduleName, Timestamp,
};

#[derive(Clone, Debug)]
pub enum Event {
    /// A handler started.
    Started {
        id: JobId,
        kind: Kind,
        attempt: u32,
        attempt_max: u32,
        token: LeaseToken,
        run_at: Timestamp,
        started_at: Timestamp,
    },
    /// A handler returned success and the completion was stored.
    Succeeded {
        id: JobId,
        kind: Kind,
        attempt: u32,
        took: Duration,
    },
    /// A handler failed (error or panic); `outcome` says whether it will be retried.
    Failed {
        id: JobId,
        kind: Kind,
        attempt: u32,
        attempt_max: u32,
        error: String,
        outcome: FailOutcome,
    },
    /// The job's lease was lost (it expired and was rescued, or the job was cancelled): the
    /// store refused this holder's write, and the handler was told to cancel.
    LeaseLost {
        id: JobId,
        kind: Kind,
        token: LeaseToken,
    },
    /// A claimed job was handed back before it started (graceful stop).
    Released { id: JobId },
    /// This node was elected leader under `term`: it now does the leader duties (rescue, purge)
    /// until it reports `LeaderLost`.
    LeaderElected { term: LeaderTerm },
    /// This node no longer leads under `term`: another node took over, its leadership lapsed
    /// (the store refused a duty, or a renewal), or it resigned on `stop`.
    LeaderLost { term: LeaderTerm },
    /// An expired lease was ended by this node's rescuer.
    Rescued(RescueOutcome),
    /// Finished jobs past their retention were deleted.
    Purged { count: u64 },
    /// One of the engine's loops (`task`) panicked; it is started again after a capped backoff.
    /// `consecutive` counts its panics without a long healthy run between them.
    LoopPanicked {
        task: &'static str,
        message: String,
        consecutive: u32,
    },
    /// The leader decided due occurrences of the schedule `name`: how many fired, how many were
    /// skipped and why, how late the first was decided, whether the schedule failed.
    Occurrences {
        name: ScheduleName,
        summary: PlanSummary,
    },
    /// A store call failed; the engine will retry it.
    StoreError {
        operation: &'static str,
        error: String,
    },
}
