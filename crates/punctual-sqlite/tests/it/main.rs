//! Integration tests of `SqliteStore`, in one test binary.
//!
//! First the shared conformance suite (the same behaviours `MemoryStore` passes), then what only
//! a real file can show: data outlives the process that wrote it (`restart`, `crash`), the schema
//! is migrated once and a newer one is refused (`migrations`), and group commit keeps every
//! caller's answer right under concurrency (`group_commit`).

mod crash;
mod disk_full;
mod edges;
mod group_commit;
mod migrations;
mod power_loss;
mod restart;

use std::path::Path;
use std::sync::Arc;

use punctual_core::{JobOptions, NewJob, Timestamp};
use punctual_sqlite::SqliteStore;
use punctual_testkit::fixtures::{NOW, new_job};

async fn make_store() -> Option<punctual_testkit::StoreUnderTest> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("punctual.db")).expect("open");
    Some(punctual_testkit::StoreUnderTest::with_guard(
        Arc::new(store),
        Box::new(dir),
    ))
}

punctual_testkit::store_conformance_suite!(make_store);

/// A store in a fresh temporary directory, which must outlive it.
fn fresh_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&dir.path().join("punctual.db"));
    (dir, store)
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path).expect("open the store")
}

/// A plain job due at `run_at`.
fn job(run_at: Timestamp) -> NewJob {
    new_job("sqlite.test", run_at, JobOptions::default(), NOW)
}
