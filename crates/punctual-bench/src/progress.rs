//! The progress bar: drawn on stderr while a workload runs, only when a person is watching.
//!
//! Hidden with `--json` or when stdout or stderr is not a terminal, so scripts and tests see only
//! the report. Must not affect what is measured: bars are updated from the waiting loops, never
//! from the engine's hot path.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Makes progress bars, visible or hidden as decided once per run.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    visible: bool,
}

impl Progress {
    pub fn new(json: bool) -> Progress {
        Progress {
            visible: !json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
        }
    }

    /// A bar for one phase of `length` steps, labelled `phase`.
    pub fn bar(&self, phase: &str, length: u64) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:>10} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec})",
        ) {
            bar.set_style(style);
        }
        bar.set_message(phase.to_owned());
        bar
    }
}
