//! Parses the `--store` argument (`memory`, `sqlite[:PATH]`, `postgres://...`) and opens the
//! store it names, together with the clock an engine on that store must use.
//!
//! A PostgreSQL store may be shared by several nodes, so due times and lease expiries are judged
//! on the database's clock: `open` measures this node's offset to it (`DatabaseClock`) and keeps
//! it fresh with a refresher task, which `OpenedStore::close` stops and joins. Memory and SQLite
//! stores belong to one process and use the system clock. This module runs no SQL of its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use punctual_core::{Clock, Store, SystemClock};
use punctual_postgres::{DatabaseClock, PgOptions, PgStore};
use punctual_sqlite::SqliteStore;
use tokio::task::JoinHandle;

/// How often a node re-measures its offset to the database's clock. Clocks drift by well under
/// a millisecond a minute; an NTP step is picked up within this.
pub const CLOCK_REFRESH: Duration = Duration::from_secs(10);

/// A store named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreArg {
    Memory,
    /// A SQLite file; `None` means a fresh temporary file.
    Sqlite(Option<PathBuf>),
    /// A PostgreSQL database, shared by every node pointed at it.
    Postgres(PostgresUrl),
}

/// A `postgres://` or `postgresql://` URL. Its `Debug` hides any password, so a plan or an
/// argument printed in an error message does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL with any password (`user:password@` or `?password=`) replaced by `***`.
    pub fn redacted(&self) -> String {
        let mut text = self.0.clone();
        if let Some((scheme, rest)) = text.split_once("://")
            && let Some((credentials, host)) = rest.rsplit_once('@')
            && let Some((user, _password)) = credentials.split_once(':')
        {
            text = format!("{scheme}://{user}:***@{host}");
        }
        if let Some(start) = text.find("password=") {
            let value = start + "password=".len();
            let end = text[value..]
                .find('&')
                .map_or(text.len(), |end| value + end);
            text.replace_range(value..end, "***");
        }
        text
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::str::FromStr for StoreArg {
    type Err = String;
    fn from_str(text: &str) -> Result<StoreArg, String> {
        match text {
            "memory" => Ok(StoreArg::Memory),
            "sqlite" => Ok(StoreArg::Sqlite(None)),
            _ if text.starts_with("sqlite:") => Ok(StoreArg::Sqlite(Some(PathBuf::from(
                &text["sqlite:".len()..],
            )))),
            _ if text.starts_with("postgres://") || text.starts_with("postgresql://") => {
                Ok(StoreArg::Postgres(PostgresUrl(text.to_owned())))
            }
            _ => Err(format!(
                "unknown store {text:?}: expected memory, sqlite[:PATH] or postgres://..."
            )),
        }
    }
}

impl StoreArg {
    /// The name reported in benchmark output.
    pub fn name(&self) -> &'static str {
        match self {
            StoreArg::Memory => "memory",
            StoreArg::Sqlite(_) => "sqlite",
            StoreArg::Postgres(_) => "postgres",
        }
    }
}

/// How to open a PostgreSQL store; ignored for the others (except that a schema is refused).
#[derive(Clone)]
pub struct PostgresSettings {
    /// Keep punctual's tables in this schema; `None` uses the connection's default
    /// `search_path` (usually `public`), as `PgStore::connect` does.
    pub schema: Option<String>,
    /// Most pooled connections.
    pub pool_size: usize,
    /// The node's own clock, which the database clock corrects. The system clock, except in
    /// the test of a node whose clock is wrong.
    pub local_clock: Arc<dyn Clock>,
    /// Apply pending migrations (true), or refuse a schema that is missing or not current
    /// (false: a command that only reads, so that a mistyped schema is not created).
    pub apply_migrations: bool,
}

impl Default for PostgresSettings {
    fn default() -> PostgresSettings {
        PostgresSettings {
            schema: None,
            pool_size: PgOptions::default().pool_size,
            local_clock: Arc::new(SystemClock),
            apply_migrations: true,
        }
    }
}

/// An opened store, the clock to use with it, and what must live as long as it.
pub struct OpenedStore {
    pub store: Arc<dyn Store>,
    /// The clock every `now` given to this store must come from: the database's for
    /// PostgreSQL, the system's otherwise.
    pub clock: Arc<dyn Clock>,
    /// The SQLite file, when the store is one.
    pub path: Option<PathBuf>,
    /// The SQLite store, when the store is one (for its integrity check).
    pub sqlite: Option<Arc<SqliteStore>>,
    pub _temp: Option<tempfile::TempDir>,
    /// Keeps the database clock's offset fresh; `None` for the other stores.
    refresher: Option<JoinHandle<()>>,
}

impl OpenedStore {
    /// Stops the clock's refresher and waits for it to end.
    pub async fn close(mut self) {
        if let Some(refresher) = self.refresher.take() {
            refresher.abort();
            // Aborted, or ended by itself when the clock went away: either way it is over.
            let _ = refresher.await;
        }
    }
}

impl Drop for OpenedStore {
    fn drop(&mut self) {
        // A path that did not `close` (an early error) still stops the refresher.
        if let Some(refresher) = self.refresher.take() {
            refresher.abort();
        }
    }
}

/// Opens the store `arg` names. For PostgreSQL this connects, applies pending migrations (safe
/// when several nodes start at once) unless told not to, and measures the database clock.
pub async fn open(arg: &StoreArg, settings: &PostgresSettings) -> anyhow::Result<OpenedStore> {
    if settings.schema.is_some() && !matches!(arg, StoreArg::Postgres(_)) {
        anyhow::bail!("--schema applies only to a PostgreSQL store (postgres://...)");
    }
    match arg {
        StoreArg::Memory => Ok(OpenedStore {
            store: Arc::new(punctual_testkit::MemoryStore::new()),
            clock: Arc::new(SystemClock),
            path: None,
            sqlite: None,
            _temp: None,
            refresher: None,
        }),
        StoreArg::Sqlite(path) => {
            let (path, temp) = match path {
                Some(path) => (path.clone(), None),
                None => {
                    let dir = tempfile::tempdir().context("creating a temporary directory")?;
                    (dir.path().join("punctual.db"), Some(dir))
                }
            };
            let store = Arc::new(
                SqliteStore::open(&path)
                    .with_context(|| format!("opening SQLite store {}", path.display()))?,
            );
            Ok(OpenedStore {
                store: store.clone(),
                clock: Arc::new(SystemClock),
                path: Some(path),
                sqlite: Some(store),
                _temp: temp,
                refresher: None,
            })
        }
        StoreArg::Postgres(url) => {
            let store = connect(url, settings, settings.apply_migrations).await?;
            let clock = DatabaseClock::measure(store.clone(), settings.local_clock.clone())
                .await
                .context("measuring the offset to the database's clock")?;
            let refresher = clock.spawn_refresher(CLOCK_REFRESH);
            Ok(OpenedStore {
                store: Arc::new(store),
                clock,
                path: None,
                sqlite: None,
                _temp: None,
                refresher: Some(refresher),
            })
        }
    }
}

/// Connects to the PostgreSQL database at `url`, applying pending migrations or (with `apply`
/// false) only checking that the schema is current.
pub async fn connect(
    url: &PostgresUrl,
    settings: &PostgresSettings,
    apply: bool,
) -> anyhow::Result<PgStore> {
    let options = PgOptions {
        schema: settings.schema.clone(),
        pool_size: settings.pool_size,
        apply_migrations: apply,
        ..PgOptions::default()
    };
    let schema = settings
        .schema
        .as_deref()
        .unwrap_or("(default search_path)");
    PgStore::connect_with(url.as_str(), options)
        .await
        .with_context(|| format!("opening PostgreSQL store {url:?}, schema {schema}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_of_store() {
        assert_eq!("memory".parse(), Ok(StoreArg::Memory));
        assert_eq!("sqlite".parse(), Ok(StoreArg::Sqlite(None)));
        assert_eq!(
            "sqlite:/tmp/a.db".parse(),
            Ok(StoreArg::Sqlite(Some(PathBuf::from("/tmp/a.db"))))
        );
        for url in ["postgres://u@h:5432/db", "postgresql://h/db"] {
            assert_eq!(
                url.parse(),
                Ok(StoreArg::Postgres(PostgresUrl(url.to_owned())))
            );
        }
        assert!("mysql://h/db".parse::<StoreArg>().is_err());
    }

    #[test]
    fn a_password_never_shows() {
        let url = PostgresUrl("postgres://ada:secret@db.example:5432/jobs".to_owned());
        assert_eq!(url.redacted(), "postgres://ada:***@db.example:5432/jobs");
        assert!(!format!("{:?}", StoreArg::Postgres(url)).contains("secret"));
        let plain = PostgresUrl("postgres://ada@db/jobs".to_owned());
        assert_eq!(plain.redacted(), "postgres://ada@db/jobs");
        let query = PostgresUrl("postgres://db/jobs?password=secret&user=ada".to_owned());
        assert_eq!(query.redacted(), "postgres://db/jobs?password=***&user=ada");
    }
}
