//! punctual's engine (the brief's Scheduler): the library applications embed.
//!
//! A `Scheduler` owns a store (`Arc<dyn Store>`), a clock and a table of handlers. Once started,
//! its dispatcher sleeps until the next job is due (no fixed polling tick), claims due jobs a
//! little ahead of their `run_at` under a lease, and starts each handler at its `run_at`.
//! Heartbeats keep long jobs' leases alive. One node at a time, elected through the store, does
//! the leader duties: its rescuer ends leases whose holder died, its purger removes finished jobs
//! past their retention (a lone node simply always leads). `stop` is graceful.
//!
//! The engine holds no SQL and no HTTP: it talks to storage only through the `Store` trait.
//!
//! ```no_run
//! # async fn example(store: std::sync::Arc<dyn punctual::Store>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use punctual::{JobOptions, Scheduler};
//!
//! let scheduler = Scheduler::builder(store)
//!     .handler("send_email", |job: punctual::JobContext| async move {
//!         let to: String = job.payload_as()?;
//!         println!("sending to {to}, attempt {}", job.attempt);
//!         Ok(())
//!     })
//!     .build()?;
//! scheduler.start()?;
//! scheduler
//!     .schedule_in("send_email", &"ada@example.com", Duration::from_secs(30), JobOptions::default())
//!     .await?;
//! # scheduler.stop().await;
//! # Ok(()) }
//! ```

mod config;
mod dispatch;
mod error;
mod event;
mod execute;
pub use execute::TIMEOUT_GRACE;
mod handler;
mod maintenance;
mod observe;
mod scheduler;
mod schedules;
mod supervise;

pub use config::Config;
pub use error::EngineError;
pub use event::Event;
pub use handler::{BoxError, Handler, JobContext, JobError};
pub use scheduler::{EVENT_FLUSH_MAX, EngineHealth, Scheduler, SchedulerBuilder, StopReport};
pub use schedules::{ScheduleError, Schedules, Upserted};

pub use punctual_core::{
    Clock, FailDirective, FailOutcome, Job, JobFilter, JobId, JobOptions, JobState, Kind,
    LeaderTerm, LeaseToken, NewJob, NodeId, Payload, Priority, Queue, RetryPolicy, Schedule, Store,
    StoreError, SystemClock, Timestamp, ValidationError,
};
pub use punctual_core::{
    JobTemplate, Misfire, MisfireAction, OccurrenceEntry, OccurrenceOutcome, OverlapPolicy,
    ScheduleDefinition, ScheduleId, ScheduleKey, ScheduleName, ScheduleStatus, SkipReason,
    StoredSchedule, recurring::plan::PlanSummary,
};
