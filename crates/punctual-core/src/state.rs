//! The job state machine (drawn in docs/state-machine.md).
//!
//! The stores apply transitions; this module is the one list of which transitions are legal.

use std::fmt;
use std::str::FromStr;

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobState {
    /// Waiting for its `run_at`; never attempted (or handed back before it started).
    Scheduled,
    /// Claimed under a lease; its handler runs or is about to.
    Running,
    /// An attempt failed (or its holder died); waiting for `run_at` to try again.
    Retrying,
    /// Its handler returned success. Final.
    Succeeded,
    /// Failed on its last allowed attempt. Final; the last error is kept.
    Dead,
    /// Cancelled by a user before it finished. Final.
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Scheduled,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Waiting to be claimed once due.
    pub fn is_pending(self) -> bool {
        matches!(self, JobState::Scheduled | JobState::Retrying)
    }

    /// No transition leaves this state except a reschedule that revives the job.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }

    /// Whether a store may move a job from `self` to `to`.
    pub fn can_become(self, to: JobState) -> bool {
        use JobState::*;
        match (self, to) {
            // claim
            (Scheduled | Retrying, Running) => true,
            // complete, fail (retry or dead), release (hand back), rescue, cancel
            (Running, Succeeded | Retrying | Dead | Scheduled | Cancelled) => true,
            // cancel, reschedule
            (Scheduled | Retrying, Cancelled | Scheduled | Retrying) => true,
            // reschedule revives a dead or cancelled job
            (Dead | Cancelled, Scheduled) => true,
            _ => false,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(text: &str) -> Result<JobState, String> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| format!("unknown job state {text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
    }

    #[test]
    fn final_states_only_revive_by_reschedule() {
        for from in JobState::ALL.into_iter().filter(|state| state.is_final()) {
            for to in JobState::ALL {
                assert_eq!(
                    from.can_become(to),
                    to == JobState::Scheduled && from != JobState::Succeeded
                );
            }
        }
    }

    #[test]
    fn only_pending_jobs_are_claimed() {
        for from in JobState::ALL {
            assert_eq!(from.can_become(JobState::Running), from.is_pending());
        }
    }
}
