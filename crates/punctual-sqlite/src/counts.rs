//! `Tally`: the changes a write transaction makes to the job counts of `job_count`, kept by the
//! writer and applied in one upsert per (queue, state) just before the transaction commits.
//!
//! Row triggers kept the counts before (schema step 4); each fired per job, and measured they
//! cost a fifth of the throughput benchmark's completions and two fifths of its inserts. The
//! writer knows every transition it makes (the transition functions report them here), and a
//! group commit changes few (queue, state) pairs, so the counts now cost a handful of
//! statements per transaction. A command's tally is kept only if the command succeeded (its
//! savepoint, or its one statement, was kept), and the transaction's only if it commits, so the
//! counts change exactly with the rows.
//!
//! Must not read or count the jobs: it applies what the transitions report. The conformance
//! suite and the model test compare the counts with the reference store's after every step.

use std::collections::HashMap;

use punctual_core::{JobState, Queue};
use rusqlite::{Connection, params};

use crate::error::{Failure, corrupt};
use crate::rows::state_code;

/// Count changes by (queue, state), not yet written.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    deltas: HashMap<(Queue, JobState), i64>,
}

impl Tally {
    /// A job of `queue` left state `from` (`None`: it is new) for `to` (`None`: it is gone).
    pub(crate) fn moved(&mut self, queue: &Queue, from: Option<JobState>, to: Option<JobState>) {
        if from == to {
            return;
        }
        if let Some(from) = from {
            *self.deltas.entry((queue.clone(), from)).or_default() -= 1;
        }
        if let Some(to) = to {
            *self.deltas.entry((queue.clone(), to)).or_default() += 1;
        }
    }

    /// Takes over `other`'s changes (a command that succeeded, into its transaction's).
    pub(crate) fn absorb(&mut self, other: Tally) {
        for (key, delta) in other.deltas {
            *self.deltas.entry(key).or_default() += delta;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.deltas.clear();
    }

    /// Writes the changes into `job_count` and forgets them; the error says why it could not.
    /// A count only falls where it has a row: a fall without one (or below zero, which
    /// `CHECK (count >= 0)` refuses) is a transition reported wrong, and fails the transaction
    /// rather than store a wrong count.
    pub(crate) fn flush(&mut self, connection: &Connection) -> Result<(), Failure> {
        if self.deltas.is_empty() {
            return Ok(());
        }
        // A rise may make a row; a fall must update one (SQLite checks CHECK constraints on an
        // upsert's new row before it sees the conflict, so a negative upsert would fail).
        let mut rise = connection.prepare_cached(
            "INSERT INTO job_count (queue, state, count) VALUES (?1, ?2, ?3)
                 ON CONFLICT (queue, state) DO UPDATE SET count = count + excluded.count",
        )?;
        let mut fall = connection.prepare_cached(
            "UPDATE job_count SET count = count + ?3 WHERE queue = ?1 AND state = ?2",
        )?;
        for ((queue, state), delta) in self.deltas.drain() {
            let parameters = params![queue.as_str(), state_code(state), delta];
            if delta > 0 {
                rise.execute(parameters)?;
            } else if delta < 0 && fall.execute(parameters)? != 1 {
                return Err(corrupt(format!(
                    "the count of {state} jobs in queue {queue} would fall below zero; the job \
                     counts are broken"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_net_out_and_absorb_adds_up() {
        let queue = Queue::default();
        let mut tally = Tally::default();
        tally.moved(&queue, None, Some(JobState::Scheduled));
        tally.moved(&queue, Some(JobState::Scheduled), Some(JobState::Running));
        tally.moved(&queue, Some(JobState::Running), Some(JobState::Running));
        let mut other = Tally::default();
        other.moved(&queue, Some(JobState::Running), None);
        tally.absorb(other);
        assert!(tally.deltas.values().all(|delta| *delta == 0), "{tally:?}");
    }
}
