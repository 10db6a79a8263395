//! `punctual migrate`: bring a PostgreSQL database's punctual schema up to this version.
//!
//! Nodes apply pending migrations themselves when they connect (safely, when several start at
//! once); this command lets an operator do it ahead of a rollout, and says where the schema
//! stands. It runs no SQL of its own: `PgStore` owns the migrations.

use anyhow::{Context, bail};
use punctual_postgres::SCHEMA_VERSION;
use punctual_server::store_url::{self, PostgresSettings, StoreUrl};

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The PostgreSQL database: postgres://user@host:port/database
    #[arg(long, value_name = "URL")]
    store: StoreUrl,
    /// The schema punctual's tables live in (created if missing) [default: the connection's
    /// search_path, usually public].
    #[arg(long, value_name = "NAME")]
    schema: Option<String>,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let StoreUrl::Postgres(url) = &args.store else {
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
        let checked = store_url::connect(url, &settings, false).await;
        match checked {
            Ok(_) => {
                println!("schema {schema}: already at version {SCHEMA_VERSION}");
                return Ok(());
            }
            // Unreachable, or refused for another reason: migrating would fail the same way.
            Err(error) if !error.needs_migration() => return Err(error.into()),
            Err(_) => {}
        }
        store_url::connect(url, &settings, true)
            .await
            .context("applying the migrations")?;
        println!("schema {schema}: migrated to version {SCHEMA_VERSION}");
        Ok(())
    })
}
