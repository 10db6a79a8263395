//! The `punctual` binary: the demo, the benchmark, PostgreSQL migrations, and commands to
//! schedule and inspect jobs.
//!
//! The only place errors become exit codes (`anyhow` here and in the benchmark harness it calls,
//! typed errors in the libraries below).

mod demo;
mod jobs;
mod migrate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "punctual",
    version,
    about = "A durable job scheduler: jobs run on time, once, even when machines crash."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the brief's demo on a real SQLite file: three jobs at 2 s, 3.5 s and 5 s.
    Demo(demo::DemoArgs),
    /// Measure a workload (see docs/benchmarks.md).
    Bench(punctual_bench::BenchArgs),
    /// Apply pending schema migrations to a PostgreSQL database (cluster mode).
    Migrate(migrate::MigrateArgs),
    /// Schedule a job into a store: a SQLite file (--store sqlite:PATH) or PostgreSQL
    /// (--store postgres://...).
    Schedule(jobs::ScheduleArgs),
    /// List, show, count or cancel the jobs in a store (--store sqlite:PATH or postgres://...).
    Jobs(jobs::JobsArgs),
    /// A worker process for the crash and cluster benchmarks (internal).
    #[command(hide = true)]
    BenchWorker(punctual_bench::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => punctual_bench::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Schedule(args) => jobs::schedule(args),
        Command::Jobs(args) => jobs::run(args),
        Command::BenchWorker(args) => punctual_bench::worker(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
