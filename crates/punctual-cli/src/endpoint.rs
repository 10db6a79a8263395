//! Where the job and queue commands find their jobs: a punctual server (`--url`, with
//! `--token`), or a store opened directly (`--store sqlite:PATH` or `postgres://...`,
//! `sqlite:punctual.db` by default). Giving both is refused by clap.
//!
//! Owns the flags that choose, the opening and closing of a store, and the small runtime each
//! command runs on. Must not know any command: `jobs` and `queues` match on `Endpoint`.

use std::path::PathBuf;

use anyhow::Context as _;
use punctual_core::StoreError;
use punctual_server::store_url::{
    self, OpenError, OpenedStore, PostgresSettings, PostgresUrl, StoreUrl,
};
use reqwest::Url;

use crate::client::{Client, parse_url};
use crate::failure::Failure;

/// The SQLite file of the job commands when neither `--url` nor `--store` is given, in the
/// working directory.
const SQLITE_PATH_DEFAULT: &str = "punctual.db";

/// The flags that say where the jobs are; global, so they go before or after a subcommand.
#[derive(clap::Args)]
pub struct EndpointArgs {
    /// Talk to the punctual server at this address (like http://127.0.0.1:7272) instead of a
    /// store.
    #[arg(
        long,
        env = "PUNCTUAL_URL",
        value_name = "URL",
        global = true,
        value_parser = parse_url,
        conflicts_with = "store"
    )]
    url: Option<Url>,
    /// With --url: the API token (pct_...) to send; see `punctual tokens create`.
    #[arg(
        long,
        env = "PUNCTUAL_TOKEN",
        value_name = "TOKEN",
        global = true,
        hide_env_values = true
    )]
    token: Option<String>,
    /// The store to use directly: sqlite:PATH (a SQLite file; schedule creates it, the other
    /// commands need it to exist), or postgres://user@host:port/database for a cluster
    /// [default: sqlite:punctual.db].
    #[arg(long, value_name = "STORE", global = true)]
    store: Option<StoreUrl>,
    /// With a PostgreSQL --store: the schema punctual's tables are in [default: the
    /// connection's search_path, usually public].
    #[arg(long, value_name = "NAME", global = true, requires = "store")]
    schema: Option<String>,
}

/// Where one command's jobs are.
pub enum Endpoint {
    Server(Client),
    Store(StoreTarget),
}

impl EndpointArgs {
    pub fn resolve(self) -> anyhow::Result<Endpoint> {
        match self.url {
            Some(url) => Ok(Endpoint::Server(Client::new(url, self.token.as_deref())?)),
            None => Ok(Endpoint::Store(StoreTarget::from_args(
                self.store,
                self.schema,
            )?)),
        }
    }
}

/// A store named on the command line.
pub enum StoreTarget {
    Sqlite(PathBuf),
    Postgres {
        url: PostgresUrl,
        schema: Option<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// `schedule` makes a new database (or migrates a PostgreSQL schema).
    CreateIfMissing,
    /// The other commands refuse a missing file (or schema) rather than create an empty one
    /// at a mistyped name.
    MustExist,
}

impl StoreTarget {
    fn from_args(store: Option<StoreUrl>, schema: Option<String>) -> anyhow::Result<StoreTarget> {
        let store =
            store.unwrap_or_else(|| StoreUrl::Sqlite(Some(PathBuf::from(SQLITE_PATH_DEFAULT))));
        match store {
            StoreUrl::Postgres(url) => Ok(StoreTarget::Postgres { url, schema }),
            _ if schema.is_some() => {
                anyhow::bail!("--schema applies only to a PostgreSQL store (postgres://...)")
            }
            StoreUrl::Sqlite(Some(path)) => Ok(StoreTarget::Sqlite(path)),
            StoreUrl::Sqlite(None) => anyhow::bail!(
                "--store must name a store that outlives this command: sqlite:PATH or \
                 postgres://..."
            ),
        }
    }

    /// For messages: `database PATH` or `PostgreSQL URL, schema NAME`.
    pub fn describe(&self) -> String {
        match self {
            StoreTarget::Sqlite(path) => format!("database {}", path.display()),
            StoreTarget::Postgres { url, schema } => {
                let schema = schema.as_deref().unwrap_or("(default search_path)");
                format!("PostgreSQL {}, schema {schema}", url.redacted())
            }
        }
    }

    /// Opens the store, runs `work` on it and closes it, whatever `work` answered.
    pub async fn session<T>(
        &self,
        mode: OpenMode,
        work: impl AsyncFnOnce(&OpenedStore) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let opened = self.open(mode).await?;
        let result = work(&opened).await;
        opened.close().await;
        result
    }

    async fn open(&self, mode: OpenMode) -> anyhow::Result<OpenedStore> {
        let opened = match self {
            StoreTarget::Sqlite(path) => {
                if mode == OpenMode::MustExist && !path.exists() {
                    anyhow::bail!(
                        "no database at {} (schedule a job first, or name another with \
                         --store sqlite:PATH)",
                        path.display()
                    );
                }
                let url = StoreUrl::Sqlite(Some(path.clone()));
                store_url::open(&url, &PostgresSettings::default()).await
            }
            StoreTarget::Postgres { url, schema } => {
                let settings = PostgresSettings {
                    schema: schema.clone(),
                    pool_size: 2,
                    apply_migrations: mode == OpenMode::CreateIfMissing,
                    ..PostgresSettings::default()
                };
                let url = StoreUrl::Postgres(url.clone());
                store_url::open(&url, &settings).await
            }
        };
        opened.map_err(open_failure)
    }
}

/// A store that cannot be reached is `unavailable`, as the server would answer; any other
/// refusal to open (not a punctual database, a schema to migrate) is a plain failure.
fn open_failure(error: OpenError) -> anyhow::Error {
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        if let Some(StoreError::Unavailable(_)) = cause.downcast_ref::<StoreError>() {
            return Failure::unavailable(format!("{:#}", anyhow::Error::new(error)));
        }
        source = cause.source();
    }
    anyhow::Error::new(error)
}

/// Runs one command's calls on a small runtime of its own.
pub fn block_on<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(work)
}
