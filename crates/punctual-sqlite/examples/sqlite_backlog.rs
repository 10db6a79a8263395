//! `SqliteStore` with a large backlog: store N small jobs due over the next three days, then
//! measure what must stay cheap with them present (claiming a trickle of due jobs, `next_due`)
//! and the bytes the file takes per job.
//!
//! ```text
//! cargo run --release -p punctual-sqlite --example sqlite_backlog -- [JOBS]
//! ```

use std::time::{Duration, Instant};

use punctual_core::{
    ClaimRequest, Clock, JobOptions, Kind, NewJob, NodeId, Payload, Store, SystemClock, limits,
};
use punctual_sqlite::SqliteStore;

const SPREAD: Duration = Duration::from_secs(3 * 24 * 3600);
const TRICKLE: usize = 1_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs: usize = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |text| text.parse())?;
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("punctual.db"))?;
    let clock = SystemClock;
    let kind = Kind::new("backlog")?;
    let payload = Payload::from_json_text(r#"{"n":1}"#)?;

    let started = Instant::now();
    let now = clock.now();
    let step = SPREAD.as_micros() / jobs.max(1) as u128;
    let mut stored = 0;
    while stored < jobs {
        let count = (jobs - stored).min(limits::INSERT_BATCH_MAX);
        let batch = (stored..stored + count)
            .map(|index| {
                let offset = Duration::from_micros(u64::try_from(step * index as u128)?);
                let run_at = now.add(Duration::from_secs(60)).add(offset);
                Ok(NewJob::new(
                    kind.clone(),
                    payload.clone(),
                    run_at,
                    JobOptions::default(),
                    now,
                )?)
            })
            .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
        store.insert(batch, clock.now()).await?;
        stored += count;
    }
    let insert = started.elapsed();

    // A trickle due now, among the backlog.
    let now = clock.now();
    let trickle = (0..TRICKLE)
        .map(|_| {
            NewJob::new(
                kind.clone(),
                payload.clone(),
                now,
                JobOptions::default(),
                now,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    store.insert(trickle, now).await?;

    let started = Instant::now();
    let due = store.next_due(None, None).await?;
    let next_due = started.elapsed();
    assert_eq!(due, Some(now));

    let started = Instant::now();
    let claimed = store
        .claim(
            ClaimRequest {
                holder: NodeId::new("node-a")?,
                queues: None,
                kinds: None,
                limit: TRICKLE,
                due_by: clock.now(),
                lease: Duration::from_secs(60),
            },
            clock.now(),
        )
        .await?;
    let claim = started.elapsed();
    assert_eq!(claimed.len(), TRICKLE);

    let started = Instant::now();
    let nothing = store
        .claim(
            ClaimRequest {
                holder: NodeId::new("node-a")?,
                queues: None,
                kinds: None,
                limit: TRICKLE,
                due_by: clock.now(),
                lease: Duration::from_secs(60),
            },
            clock.now(),
        )
        .await?;
    let empty_claim = started.elapsed();
    assert!(nothing.is_empty());

    let started = Instant::now();
    let counts = store.counts().await?;
    let count = started.elapsed();
    assert!(!counts.is_empty());

    let path = store.path().to_path_buf();
    drop(store);
    let bytes = std::fs::metadata(&path)?.len();
    let total = jobs + TRICKLE;
    println!(
        "sqlite (release): {jobs} future jobs stored at {:.0} jobs/s; file {:.1} MB = {:.0} bytes \
         per job; with them present: claim of {TRICKLE} due {:.2} ms, empty claim {:.3} ms, \
         next_due {:.3} ms, counts {:.0} ms",
        jobs as f64 / insert.as_secs_f64(),
        bytes as f64 / 1e6,
        bytes as f64 / total as f64,
        claim.as_secs_f64() * 1e3,
        empty_claim.as_secs_f64() * 1e3,
        next_due.as_secs_f64() * 1e3,
        count.as_secs_f64() * 1e3,
    );
    Ok(())
}
