//! `punctual migrate`: bring a PostgreSQL database's punctual schema up to this version.
//!
//! Nodes apply pending migrations themselves when they connect (safely, when several start at
//! once); this command lets an operator do it ahead of a rollout, and says where the schema
//! stands. It runs no SQL of its own: `PgStore` owns the migrations.

use anyhow::{Context, bail};
use punctual_core::StoreError;
use punctual_postgres::SCHEMA_VERSION;

use crate::store_arg::{self, PostgresSettings, StoreArg};

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The PostgreSQL database: postgres://user@host:port/database
    #[arg(long, value_name = "URL")]
    store: StoreArg,
    /// The schema punctual's tables live in (created if missing) [default: the connection's
    /// search_path, usually public].
    #[arg(long, value_name = "NAME")]
    schema: Option<String>,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let StoreArg::Postgres(url) = &args.store else {
        bail!(
            "punctual migrate is for a PostgreSQL store (postgres://...); a SQLite file is \
             migrated whenever it is opened"
        );
    };
    let settings = PostgresSettings {
        schema: args.schema.clone(),
        pool_size: 1,
        ..PostgresSettings::default()
    };
    let schema = args.schema.as_deref().unwrap_or("(default search_path)");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        // First only look: a current schema is left untouched and said to be so.
        let checked = store_arg::connect(url, &settings, false).await;
        match checked {
            Ok(_) => {
                println!("schema {schema}: already at version {SCHEMA_VERSION}");
                return Ok(());
            }
            Err(error) if !is_behind(&error) => return Err(error),
            Err(_) => {}
        }
        store_arg::connect(url, &settings, true).await?;
        println!("schema {schema}: migrated to version {SCHEMA_VERSION}");
        Ok(())
    })
}

/// Whether a connection was refused because the schema needs migrating (rather than because
/// the server is unreachable): the store says so as `Corrupt`. A schema from a newer punctual
/// is `Corrupt` too; applying then fails with the same error, which is what the operator sees.
fn is_behind(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<StoreError>(),
            Some(StoreError::Corrupt(_))
        )
    })
}
