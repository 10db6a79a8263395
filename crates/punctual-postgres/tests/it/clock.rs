//! One clock for the cluster (issue 3, item 3): a node whose own clock is off by a minute still
//! reads the database's time through `DatabaseClock`.

use std::sync::Arc;
use std::time::Duration;

use punctual_core::{Clock, SystemClock, Timestamp};
use punctual_postgres::DatabaseClock;

/// The system clock, off by `skew_us` microseconds: a node whose clock is wrong.
struct SkewedClock {
    skew_us: i64,
}

impl Clock for SkewedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(SystemClock.now().as_micros() + self.skew_us)
    }
}

/// The database runs on this machine, so a correct reading is within a few round trips.
const TOLERANCE: Duration = Duration::from_millis(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_node_reads_the_database_clock() {
    let Some((store, _schema)) = crate::fresh_store().await else {
        return;
    };
    for skew in [Duration::from_secs(60), Duration::from_secs(3_600)] {
        for sign in [1, -1] {
            let skew_us = sign * i64::try_from(skew.as_micros()).expect("fits");
            let local = Arc::new(SkewedClock { skew_us });
            let clock = DatabaseClock::measure(store.clone(), local.clone())
                .await
                .expect("measure");
            // The offset undoes the skew.
            let error_us = (clock.offset_micros() + skew_us).unsigned_abs();
            assert!(
                error_us < TOLERANCE.as_micros() as u64,
                "offset {} µs for a skew of {skew_us} µs",
                clock.offset_micros()
            );
            // Bracket one reading of the database's clock between two of ours.
            let before = clock.now();
            let database = store.database_time().await.expect("database time");
            let after = clock.now();
            assert!(
                before.sub(TOLERANCE) <= database && database <= after.add(TOLERANCE),
                "database {database} outside {before} ..= {after} (skew {skew_us} µs)"
            );
            // The node's own clock is a minute or more away from it.
            assert!(local.now().micros_since(database).unsigned_abs() >= 59_000_000);
            assert!(clock.uncertainty() < TOLERANCE);
            clock.refresh().await.expect("refresh");
            assert!(
                (clock.offset_micros() + skew_us).unsigned_abs() < TOLERANCE.as_micros() as u64
            );
        }
    }
}
