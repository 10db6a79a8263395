//! Which index ranges a claim or `next_due` walks for its queues and kinds filters: the one
//! choice `transitions::claim` and `reads::next_due` share, so a node's `next_due` looks where
//! its claim will.
//!
//! Each pending index (see `migrations`) is walked one priority level at a time, in claim
//! order within the level:
//!
//! - no filter: `job_pending_by_priority`, one range per level;
//! - queues only: `job_pending_by_queue`, one range per (queue, level);
//! - kinds: `job_pending_by_kind`, one range per (kind, level), so jobs of other kinds, however
//!   many wait, are never read;
//! - queues and kinds: whichever of the last two has fewer ranges to walk, the kinds' on a tie.
//!   No index has both, so either passes over rows: the kinds' ranges over jobs of those kinds
//!   in queues not asked for, the queues' ranges over jobs of other kinds in the queues asked
//!   for. Which crowd is larger the store cannot know without statistics it does not keep; the
//!   number of ranges it knows, and each costs a seek. The tie goes to the kinds, because other
//!   kinds' jobs are the crowd this index was made for (a `punctual serve` node's engine asks
//!   for `punctual.webhook` only, remote workers for theirs, all in the same queues). The case
//!   it serves badly is one kind split into lanes by queue: a claimer of one lane walks its
//!   kind's jobs in the other lanes, as a claimer of one queue used to walk other kinds'.
//!
//! Must not run SQL: it only chooses, and builds the `rarray`s the statements take.

use punctual_core::{Kind, Queue};
use rusqlite::vtab::array::Array;

use crate::rows::text_array;

/// The ranges of one request, each name once and in bytewise order.
pub(crate) enum Ranges<'a> {
    /// An empty list of queues or kinds: nothing matches, nothing is read.
    Nothing,
    /// No filter: a range per level of `job_pending_by_priority`.
    All,
    /// A range per (queue, level) of `job_pending_by_queue`; with `kinds` (an `rarray`), each
    /// row's kind is checked and others are passed over.
    Queues {
        queues: Vec<&'a str>,
        kinds: Option<Array>,
    },
    /// A range per (kind, level) of `job_pending_by_kind`; with `queues` (an `rarray`), each
    /// row's queue is checked and others are passed over.
    Kinds {
        kinds: Vec<&'a str>,
        queues: Option<Array>,
    },
}

impl<'a> Ranges<'a> {
    pub(crate) fn of(queues: Option<&'a [Queue]>, kinds: Option<&'a [Kind]>) -> Ranges<'a> {
        let queues = queues.map(|queues| distinct(queues.iter().map(Queue::as_str)));
        let kinds = kinds.map(|kinds| distinct(kinds.iter().map(Kind::as_str)));
        match (queues, kinds) {
            (Some(names), _) | (_, Some(names)) if names.is_empty() => Ranges::Nothing,
            (None, None) => Ranges::All,
            (Some(queues), None) => Ranges::Queues {
                queues,
                kinds: None,
            },
            (None, Some(kinds)) => Ranges::Kinds {
                kinds,
                queues: None,
            },
            (Some(queues), Some(kinds)) if queues.len() < kinds.len() => Ranges::Queues {
                kinds: Some(text_array(&kinds)),
                queues,
            },
            (Some(queues), Some(kinds)) => Ranges::Kinds {
                queues: Some(text_array(&queues)),
                kinds,
            },
        }
    }
}

fn distinct<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use punctual_core::{Kind, Queue};
    use punctual_testkit::fixtures::{kind, queue};

    use super::Ranges;

    /// What `Ranges::of` chooses for these names: the plan, its range count per level, and
    /// whether the other filter is checked on its rows.
    fn chosen(queues: Option<&[&str]>, kinds: Option<&[&str]>) -> (&'static str, usize, bool) {
        let queues: Option<Vec<Queue>> =
            queues.map(|names| names.iter().map(|n| queue(n)).collect());
        let kinds: Option<Vec<Kind>> = kinds.map(|names| names.iter().map(|n| kind(n)).collect());
        match Ranges::of(queues.as_deref(), kinds.as_deref()) {
            Ranges::Nothing => ("nothing", 0, false),
            Ranges::All => ("all", 1, false),
            Ranges::Queues { queues, kinds } => ("queues", queues.len(), kinds.is_some()),
            Ranges::Kinds { kinds, queues } => ("kinds", kinds.len(), queues.is_some()),
        }
    }

    #[test]
    fn the_filter_with_fewer_ranges_is_walked_and_kinds_win_a_tie() {
        assert_eq!(chosen(None, None), ("all", 1, false));
        assert_eq!(chosen(Some(&[]), None), ("nothing", 0, false));
        assert_eq!(chosen(None, Some(&[])), ("nothing", 0, false));
        assert_eq!(chosen(Some(&[]), Some(&["x"])), ("nothing", 0, false));
        assert_eq!(chosen(Some(&["a"]), Some(&[])), ("nothing", 0, false));
        // Each name counts once, however often it is named.
        assert_eq!(chosen(Some(&["b", "a", "b"]), None), ("queues", 2, false));
        assert_eq!(chosen(None, Some(&["x", "x"])), ("kinds", 1, false));
        assert_eq!(chosen(Some(&["a"]), Some(&["x"])), ("kinds", 1, true));
        assert_eq!(chosen(Some(&["a"]), Some(&["x", "y"])), ("queues", 1, true));
        assert_eq!(
            chosen(Some(&["a", "a"]), Some(&["x", "y"])),
            ("queues", 1, true)
        );
        assert_eq!(
            chosen(Some(&["a", "b"]), Some(&["x", "x"])),
            ("kinds", 1, true)
        );
    }
}
