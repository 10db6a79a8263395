//! One clock for the cluster (issue 3, item 3): `DatabaseClock` reads the database's time.
//!
//! Every node of a cluster judges "due" and "expired" against the `now` its clock gives, and
//! the store compares those instants with `run_at` and lease expiries written by other nodes.
//! If each node used its own wall clock, a node whose clock runs a minute fast would claim jobs
//! a minute early and rescue leases that other nodes still hold. So all nodes read one clock,
//! the database's, without a round trip per reading: the offset between this node's clock and
//! the database's is measured (at creation and on `refresh`) and added to the local clock.
//!
//! Owns the measurement and the offset. Must not query the database in `now` (it is called in
//! hot paths and is synchronous); a caller refreshes the offset now and then (clocks drift by
//! well under a millisecond per minute; an NTP step shows up at the next refresh).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use punctual_core::{Clock, StoreError, Timestamp};

use crate::PgStore;
use crate::error::pg;

/// How many round trips one measurement takes; the one with the shortest round trip wins, since
/// its midpoint is the least uncertain estimate of when the database read its clock.
const SAMPLES: usize = 5;

/// A `Clock` that reads the database's time: the local clock plus a measured offset.
pub struct DatabaseClock {
    store: PgStore,
    local: Arc<dyn Clock>,
    /// Database time minus local time, in microseconds.
    offset_us: AtomicI64,
    /// Half the round trip of the sample the offset came from: the offset is right within this.
    uncertainty_us: AtomicI64,
}

impl DatabaseClock {
    /// Measures the offset between `local` and the database's clock and returns a clock that
    /// reads `local` plus that offset. `PgStore::database_clock` passes the system clock; a test
    /// passes a skewed one.
    pub async fn measure(
        store: PgStore,
        local: Arc<dyn Clock>,
    ) -> Result<Arc<DatabaseClock>, StoreError> {
        let clock = DatabaseClock {
            store,
            local,
            offset_us: AtomicI64::new(0),
            uncertainty_us: AtomicI64::new(i64::MAX),
        };
        clock.refresh().await?;
        Ok(Arc::new(clock))
    }

    /// Measures the offset again and returns it (database minus local, in microseconds).
    pub async fn refresh(&self) -> Result<i64, StoreError> {
        let client = self.store.client().await?;
        let statement = client
            .prepare_cached(crate::DATABASE_TIME)
            .await
            .map_err(pg)?;
        let mut best: Option<(i64, i64)> = None;
        for _ in 0..SAMPLES {
            let sent = self.local.now();
            let row = client.query_one(&statement, &[]).await.map_err(pg)?;
            let received = self.local.now();
            let database: i64 = row.try_get(0).map_err(pg)?;
            let round_trip = received.micros_since(sent).max(0);
            // The database read its clock somewhere within the round trip; the midpoint is
            // wrong by at most half of it.
            let midpoint = sent.as_micros().saturating_add(round_trip / 2);
            let offset = database.saturating_sub(midpoint);
            if best.is_none_or(|(_, best_round_trip)| round_trip < best_round_trip) {
                best = Some((offset, round_trip));
            }
        }
        // SAMPLES is not zero, so the loop ran and set `best`.
        let (offset, round_trip) = best.expect("at least one sample");
        self.offset_us.store(offset, Ordering::Relaxed);
        self.uncertainty_us.store(round_trip / 2, Ordering::Relaxed);
        Ok(offset)
    }

    /// Database time minus local time, in microseconds, as last measured.
    pub fn offset_micros(&self) -> i64 {
        self.offset_us.load(Ordering::Relaxed)
    }

    /// How far the last measured offset may be off (half its round trip).
    pub fn uncertainty(&self) -> Duration {
        let micros = self.uncertainty_us.load(Ordering::Relaxed);
        Duration::from_micros(micros.max(0).unsigned_abs())
    }

    /// Refreshes the offset every `period` until the returned task is aborted or the clock is
    /// dropped elsewhere; a failed refresh keeps the last offset and is tried again next period.
    pub fn spawn_refresher(
        self: &Arc<DatabaseClock>,
        period: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let clock = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period.max(Duration::from_secs(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(clock) = clock.upgrade() else {
                    return;
                };
                if let Err(error) = clock.refresh().await {
                    tracing::warn!(%error, "refreshing the database clock's offset failed");
                }
            }
        })
    }
}

impl Clock for DatabaseClock {
    fn now(&self) -> Timestamp {
        let local = self.local.now().as_micros();
        Timestamp::from_micros(local.saturating_add(self.offset_micros()))
    }
}

impl std::fmt::Debug for DatabaseClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseClock")
            .field("offset_us", &self.offset_micros())
            .field("uncertainty", &self.uncertainty())
            .finish_non_exhaustive()
    }
}
