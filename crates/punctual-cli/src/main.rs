//! The `punctual` binary: `serve` (a node: the engine and the HTTP API), the demo, the
//! benchmark, PostgreSQL migrations, API tokens, and commands to schedule and inspect jobs.
//!
//! The only place errors become exit codes (`anyhow` here and in the benchmark harness it calls,
//! typed errors in the libraries below).

mod demo;
mod jobs;
mod migrate;
mod serve;
mod tokens;

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
    /// Run a node: the engine, the HTTP API and the webhook executor (see punctual.example.toml).
    Serve(punctual_server::config::ServeArgs),
    /// Create, list or revoke API tokens, directly on the store.
    Tokens(tokens::TokensArgs),
    /// Print a new webhook signing secret (whsec_...), for webhooks.secrets.
    WebhookSecret,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Tokens(args) => tokens::run(args),
        Command::WebhookSecret => {
            println!("{}", punctual_server::webhook::sign::Secret::generate());
            Ok(())
        }
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => punctual_bench::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Schedule(args) => jobs::schedule(args),
        Command::Jobs(args) => jobs::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
