//! The `punctual` binary: `serve` (a node: the engine and the HTTP API), the demo, the
//! benchmark, PostgreSQL migrations, API tokens, commands to schedule and inspect jobs and
//! queues, on a server (`--url`) or directly on a store (`--store`), and schedules as data
//! (`schedules`, on a server; `schedules explain` anywhere).
//!
//! The only place errors become exit codes (`anyhow` here and in the benchmark harness it calls,
//! typed errors in the libraries below). A command that fails for a reason a script can act on
//! carries a `Failure` out, and `exit_code` turns its problem code into the exit code.

mod client;
mod demo;
mod endpoint;
mod failure;
mod jobs;
mod migrate;
mod queues;
mod render;
mod schedules;
mod serve;
mod tokens;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::failure::Failure;

#[derive(Parser)]
#[command(
    name = "punctual",
    version,
    about = "A durable job scheduler: jobs run on time, once, even when machines crash.",
    after_help = "Exit codes: 0 success, 1 any other failure, 2 usage error, 3 not found, \
                  4 conflict, 5 invalid input, 6 unauthorized or forbidden, 7 unavailable \
                  (see the README)."
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
    /// Schedule a job (the same as `punctual jobs schedule`), on a server (--url) or a store
    /// (--store sqlite:PATH or postgres://...).
    Schedule(jobs::ScheduleCommand),
    /// Schedule, get, list, cancel, reschedule, retry, redrive or count jobs, on a server
    /// (--url) or a store (--store sqlite:PATH or postgres://...).
    Jobs(jobs::JobsArgs),
    /// List queues with their counts by state, due jobs and the oldest due's age.
    Queues(queues::QueuesArgs),
    /// Schedules as data on a server (--url): create, upsert, get, list, update, pause,
    /// resume, trigger, delete, their occurrences; and explain a recurrence (no server needed).
    Schedules(schedules::SchedulesArgs),
    /// Print this binary's version and the time zone database its schedules are computed with.
    Version {
        /// As one line of JSON.
        #[arg(long)]
        json: bool,
    },
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
        Command::Queues(args) => queues::run(args),
        Command::Schedules(args) => schedules::run(args),
        Command::Version { json } => version(json),
    };
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    match Failure::find(&error) {
        Some(Failure::Problem(problem)) => {
            eprintln!("error: {}: {error:#}", problem.code);
            ExitCode::from(exit_code(&problem.code))
        }
        Some(Failure::Usage(message)) => {
            // Reported as clap reports its own usage errors, with the same exit code.
            let usage = Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message);
            let _ = usage.print();
            ExitCode::from(u8::try_from(usage.exit_code()).unwrap_or(2))
        }
        None => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `punctual version`: the version, and the IANA time zone database version (a change of it can
/// move cron occurrences, so it is worth knowing which one a binary carries).
fn version(json: bool) -> anyhow::Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let tzdb = punctual_core::tzdb_version();
    if json {
        render::print_json(&serde_json::json!({"version": version, "tzdb_version": tzdb}))
    } else {
        println!("punctual {version}");
        println!("tzdb {tzdb}");
        Ok(())
    }
}

/// The exit code of a problem's `code`, in both modes (README's "Exit codes", docs/api.md).
/// 2 is clap's, for usage errors; a code not listed (a new one, `store_corrupt`) is 1.
fn exit_code(code: &str) -> u8 {
    match code {
        "not_found" => 3,
        "state_conflict" | "lease_lost" | "already_exists" | "idempotency_key_in_use" => 4,
        "bad_request"
        | "validation_failed"
        | "webhook_target_refused"
        | "idempotency_key_mismatch"
        | "body_too_large"
        | "unsupported_media_type" => 5,
        "unauthorized" | "forbidden" => 6,
        "unavailable" => 7,
        _ => 1,
    }
}
