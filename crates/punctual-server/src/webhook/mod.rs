//! Webhook targets: what a job sends where (`target`), which addresses it may reach (`guard`),
//! how it is signed (`sign`), and the executor that sends it at `run_at` (`executor`).

pub mod executor;
pub mod guard;
pub mod sign;
pub mod target;
