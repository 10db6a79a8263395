//! `SqliteStore`: punctual's embedded default store, one SQLite file on local disk.
//!
//! This crate is the only place SQLite SQL lives (the schema in `migrations`, the writes in
//! `transitions`, the reads in `reads`; `ranges` chooses the index ranges a claim and
//! `next_due` walk for their filters). It implements `punctual_core::Store` exactly as the
//! trait documents it; the conformance suite in `punctual-testkit` checks that it agrees with
//! the in-memory reference model.
//!
//! # Durability
//!
//! The file is in WAL mode with `synchronous=FULL`: every commit fsyncs the WAL before the
//! store answers, so a job acknowledged as stored survives a killed process *and* a power loss.
//! (`synchronous=NORMAL` would survive a killed process only: in WAL mode it syncs at
//! checkpoints, so a power loss may drop the last commits.)
//!
//! # Group commit
//!
//! An fsync costs about a quarter of a millisecond, so one fsync per job would cap the store at
//! a few thousand writes a second. Instead one writer thread owns the only write connection and
//! takes commands from a bounded channel: it waits for one, drains what else is queued (up to
//! `SqliteOptions::commit_batch_max`), runs them in one transaction (a failing command undoes
//! only itself: a multi-write command runs in its own savepoint, a single statement is atomic
//! by itself), commits once, and then answers them all. Reads
//! run on a small pool of read-only connections beside it. See `writer` for the details.
//!
//! # Errors
//!
//! No `rusqlite::Error` leaves the crate: SQLite's errors become `StoreError::Unavailable`
//! (may pass: I/O, locks, a full disk) or `StoreError::Corrupt` (will not: a damaged file, a
//! row this code cannot decode, a schema from a newer version).

mod counts;
mod error;
mod migrations;
#[cfg(test)]
mod query_plans;
mod ranges;
mod reads;
mod reserve;
mod rows;
mod schedules;
mod store;
mod transitions;
mod writer;

pub use migrations::SCHEMA_VERSION;
pub use store::{SqliteOptions, SqliteStore};
