//! The README's tour: embed punctual in a Rust program with its embedded SQLite store.
//!
//! Run with `cargo run -p punctual --example quickstart`.

use std::sync::Arc;
use std::time::Duration;

use punctual::{JobContext, JobOptions, JobState, RetryPolicy, Schedule, Scheduler};
use punctual_sqlite::SqliteStore;

#[derive(serde::Serialize, serde::Deserialize)]
struct Reminder {
    to: String,
    text: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. A store: a real SQLite file (WAL, synchronous=FULL): jobs survive crashes and restarts.
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("quickstart.db"))?);

    // 2. A scheduler with handlers registered by kind.
    let scheduler = Scheduler::builder(store)
        .handler("send_reminder", |job: JobContext| async move {
            let reminder: Reminder = job.payload_as()?;
            println!(
                "attempt {}: reminding {} to {:?}",
                job.attempt, reminder.to, reminder.text
            );
            Ok(())
        })
        .handler("nightly_report", |_job: JobContext| async move {
            println!("building the nightly report");
            Ok(())
        })
        .build()?;
    scheduler.start()?;

    // 3. Schedule: in 1 second, with data and options...
    let reminder = Reminder {
        to: "ada@example.com".into(),
        text: "stand-up at 09:00".into(),
    };
    let options = JobOptions::default().attempt_max(5).retry(RetryPolicy::new(
        Duration::from_secs(1),
        Duration::from_secs(60),
        20,
    )?);
    let id = scheduler
        .schedule_in("send_reminder", &reminder, Duration::from_secs(1), options)
        .await?;

    // ...and every night at midnight in Berlin (each occurrence runs once).
    let nightly = Schedule::cron("0 0 * * *", "Europe/Berlin")?;
    let report = scheduler
        .schedule_recurring("nightly_report", &(), nightly, JobOptions::default())
        .await?;
    let next = scheduler.get(report).await?.map(|job| job.run_at);
    println!("nightly report first due at {next:?}");

    // 4. Watch the reminder finish, then stop gracefully.
    for _ in 0..100 {
        if scheduler
            .get(id)
            .await?
            .is_some_and(|job| job.state == JobState::Succeeded)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "reminder is {:?}",
        scheduler.get(id).await?.map(|job| job.state)
    );
    scheduler.stop().await;
    Ok(())
}
