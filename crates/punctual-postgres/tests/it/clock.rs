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

/// Slack for reading two clocks (microsecond resolution, a thread descheduled between reads).
const SLACK: Duration = Duration::from_millis(1);
/// The database runs on this machine, so a measurement is uncertain by a fraction of a
/// millisecond (about 50 µs, half a loopback round trip); more means it is broken, not slow.
const UNCERTAINTY_MAX: Duration = Duration::from_millis(50);

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
            // The database and this test share one system clock, so the true offset is exactly
            // minus the skew, and the measurement must find it within its own uncertainty.
            let uncertainty = clock.uncertainty();
            assert!(uncertainty < UNCERTAINTY_MAX, "{uncertainty:?}");
            let error_us = (clock.offset_micros() + skew_us).unsigned_abs();
            assert!(
                error_us <= micros(uncertainty + SLACK),
                "offset {} µs for a skew of {skew_us} µs (uncertainty {uncertainty:?})",
                clock.offset_micros()
            );

            // Bracket one reading of the database's clock between two of ours.
            let before = clock.now();
            let database = store.database_time().await.expect("database time");
            let after = clock.now();
            let margin = uncertainty + SLACK;
            assert!(
                before.sub(margin) <= database && database <= after.add(margin),
                "database {database} outside {before} ..= {after} ± {margin:?} (skew {skew_us} µs)"
            );
            // The node's own clock is a minute or more away from it.
            assert!(local.now().micros_since(database).unsigned_abs() >= 59_000_000);

            clock.refresh().await.expect("refresh");
            let error_us = (clock.offset_micros() + skew_us).unsigned_abs();
            assert!(error_us <= micros(clock.uncertainty() + SLACK));
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).expect("fits")
}
