//! Parses a store's URL (`sqlite`, `sqlite:PATH`, `postgres://...`) and opens the store it
//! names, together with the clock an engine on that store must use.
//!
//! A PostgreSQL store may be shared by several nodes, so due times and lease expiries are judged
//! on the database's clock: `open` measures this node's offset to it (`DatabaseClock`) and keeps
//! it fresh with a refresher task, which `OpenedStore::close` stops and joins. A SQLite store
//! belongs to one process and uses the system clock. This module runs no SQL of its own.
//!
//! Errors are typed, so a caller can tell a mistyped URL (`ParseError`) from a store that could
//! not be opened (`OpenError`), and, through the store's own `StoreError`, an unreachable server
//! (`Unavailable`: try again) from a schema that needs migrating (`Corrupt`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use punctual_core::{Clock, Store, StoreError, SystemClock};
use punctual_postgres::{DatabaseClock, PgOptions, PgStore};
use punctual_sqlite::SqliteStore;
use tokio::task::JoinHandle;

/// How often a node re-measures its offset to the database's clock. Clocks drift by well under
/// a millisecond a minute; an NTP step is picked up within this.
pub const CLOCK_REFRESH: Duration = Duration::from_secs(10);

/// The schema named in messages when none was given.
const SCHEMA_DEFAULT_NAME: &str = "(default search_path)";

/// A store named by its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// A SQLite file (`sqlite:PATH`); `None` (`sqlite` alone) means a fresh temporary file.
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
        redact(&self.0)
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `text` with any password (`user:password@` or `?password=`) replaced by `***`.
fn redact(text: &str) -> String {
    let mut text = text.to_owned();
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

/// Why a text is not a store's URL. The text in a message has any password hidden.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No scheme at all: most likely a file path, which must say it is a SQLite file.
    #[error(
        "{text:?} is not a store URL: expected sqlite[:PATH] or postgres://... (a SQLite file \
         at that path is sqlite:{text})"
    )]
    NoScheme { text: String },
    /// A scheme punctual has no store for.
    #[error("unknown store {text:?}: expected sqlite[:PATH] or postgres://...")]
    UnknownScheme { text: String },
    /// `sqlite:` with nothing after it.
    #[error("sqlite: needs a path (sqlite:PATH), or say sqlite alone for a fresh temporary file")]
    EmptyPath,
}

impl std::str::FromStr for StoreUrl {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<StoreUrl, ParseError> {
        if text == "sqlite" {
            return Ok(StoreUrl::Sqlite(None));
        }
        if let Some(path) = text.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(ParseError::EmptyPath);
            }
            return Ok(StoreUrl::Sqlite(Some(PathBuf::from(path))));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(PostgresUrl(text.to_owned())));
        }
        let text = redact(text);
        if text.contains(':') {
            Err(ParseError::UnknownScheme { text })
        } else {
            Err(ParseError::NoScheme { text })
        }
    }
}

impl StoreUrl {
    /// The store's short name (`sqlite`, `postgres`), as reports name it.
    pub fn name(&self) -> &'static str {
        match self {
            StoreUrl::Sqlite(_) => "sqlite",
            StoreUrl::Postgres(_) => "postgres",
        }
    }
}

/// How to open a PostgreSQL store; ignored for SQLite (except that a schema is refused).
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

/// TEST ONLY: the system clock moved by a fixed skew, as the local clock of a node whose wall
/// clock is wrong (`punctual serve --test-clock-skew-ms`, hidden). The database clock measures
/// and removes the skew; the fault tests show that it does.
#[derive(Clone, Copy, Debug)]
pub struct SkewedClock {
    skew_us: i64,
}

impl SkewedClock {
    /// A clock `skew_ms` milliseconds ahead of the system's (behind it when negative).
    pub fn from_millis(skew_ms: i64) -> SkewedClock {
        SkewedClock {
            skew_us: skew_ms.saturating_mul(1_000),
        }
    }
}

impl Clock for SkewedClock {
    fn now(&self) -> punctual_core::Timestamp {
        punctual_core::Timestamp::from_micros(
            SystemClock.now().as_micros().saturating_add(self.skew_us),
        )
    }
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A schema was given for a store that has none.
    #[error("a schema applies only to a PostgreSQL store (postgres://...)")]
    SchemaWithoutPostgres,
    /// The temporary directory of a fresh SQLite store could not be made.
    #[error("creating a temporary directory for a fresh SQLite store")]
    TempDir(#[source] std::io::Error),
    /// The SQLite store refused to open (unreadable file, not a punctual database, a schema
    /// from a newer punctual).
    #[error("opening SQLite store {}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    /// The PostgreSQL store refused to open: `Unavailable` when the server cannot be reached,
    /// `Corrupt` when the schema is missing or not current and migrations were not to be
    /// applied (see `OpenError::needs_migration`).
    #[error("opening PostgreSQL store {url}, schema {schema}")]
    Postgres {
        /// The URL with any password hidden.
        url: String,
        schema: String,
        #[source]
        source: StoreError,
    },
    /// The database's clock could not be read.
    #[error("measuring the offset to the database's clock")]
    Clock(#[source] StoreError),
}

impl OpenError {
    /// The store's own error, when it was the store that refused.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            OpenError::Sqlite { source, .. }
            | OpenError::Postgres { source, .. }
            | OpenError::Clock(source) => Some(source),
            OpenError::SchemaWithoutPostgres | OpenError::TempDir(_) => None,
        }
    }

    /// Whether a PostgreSQL store was refused because its schema needs migrating (rather than
    /// because the server is unreachable): the store says so as `Corrupt`. A schema from a
    /// newer punctual is `Corrupt` too; applying migrations then fails with the same error.
    pub fn needs_migration(&self) -> bool {
        matches!(
            self,
            OpenError::Postgres {
                source: StoreError::Corrupt(_),
                ..
            }
        )
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
    /// The directory of a fresh SQLite file (`sqlite` without a path); dropping it removes the
    /// file, so it must outlive the store. A caller that reopens the file takes it over.
    pub temp: Option<tempfile::TempDir>,
    /// Keeps the database clock's offset fresh; `None` for the other stores.
    refresher: Option<JoinHandle<()>>,
}

impl OpenedStore {
    /// A store opened by other means (an in-memory store for a test or a benchmark), with no
    /// file and nothing to refresh.
    pub fn from_store(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> OpenedStore {
        OpenedStore {
            store,
            clock,
            path: None,
            sqlite: None,
            temp: None,
            refresher: None,
        }
    }

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

/// Opens the store `url` names. For PostgreSQL this connects, applies pending migrations (safe
/// when several nodes start at once) unless told not to, and measures the database clock.
pub async fn open(url: &StoreUrl, settings: &PostgresSettings) -> Result<OpenedStore, OpenError> {
    if settings.schema.is_some() && !matches!(url, StoreUrl::Postgres(_)) {
        return Err(OpenError::SchemaWithoutPostgres);
    }
    match url {
        StoreUrl::Sqlite(path) => {
            let (path, temp) = match path {
                Some(path) => (path.clone(), None),
                None => {
                    let dir = tempfile::tempdir().map_err(OpenError::TempDir)?;
                    (dir.path().join("punctual.db"), Some(dir))
                }
            };
            let store = SqliteStore::open(&path).map_err(|source| OpenError::Sqlite {
                path: path.clone(),
                source,
            })?;
            let store = Arc::new(store);
            Ok(OpenedStore {
                store: store.clone(),
                clock: Arc::new(SystemClock),
                path: Some(path),
                sqlite: Some(store),
                temp,
                refresher: None,
            })
        }
        StoreUrl::Postgres(url) => {
            let store = connect(url, settings, settings.apply_migrations).await?;
            let clock = DatabaseClock::measure(store.clone(), settings.local_clock.clone())
                .await
                .map_err(OpenError::Clock)?;
            let refresher = clock.spawn_refresher(CLOCK_REFRESH);
            Ok(OpenedStore {
                store: Arc::new(store),
                clock,
                path: None,
                sqlite: None,
                temp: None,
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
) -> Result<PgStore, OpenError> {
    let options = PgOptions {
        schema: settings.schema.clone(),
        pool_size: settings.pool_size,
        apply_migrations: apply,
        ..PgOptions::default()
    };
    PgStore::connect_with(url.as_str(), options)
        .await
        .map_err(|source| OpenError::Postgres {
            url: url.redacted(),
            schema: settings
                .schema
                .clone()
                .unwrap_or_else(|| SCHEMA_DEFAULT_NAME.to_owned()),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_of_store() {
        assert_eq!("sqlite".parse(), Ok(StoreUrl::Sqlite(None)));
        assert_eq!(
            "sqlite:/tmp/a.db".parse(),
            Ok(StoreUrl::Sqlite(Some(PathBuf::from("/tmp/a.db"))))
        );
        for url in ["postgres://u@h:5432/db", "postgresql://h/db"] {
            assert_eq!(
                url.parse(),
                Ok(StoreUrl::Postgres(PostgresUrl(url.to_owned())))
            );
        }
        assert!(matches!(
            "mysql://h/db".parse::<StoreUrl>(),
            Err(ParseError::UnknownScheme { .. })
        ));
        assert_eq!("sqlite:".parse::<StoreUrl>(), Err(ParseError::EmptyPath));
    }

    #[test]
    fn a_bare_path_is_refused_with_the_spelling_to_use() {
        let error = "jobs.db".parse::<StoreUrl>().expect_err("refused");
        assert_eq!(
            error,
            ParseError::NoScheme {
                text: "jobs.db".to_owned()
            }
        );
        assert!(error.to_string().contains("sqlite:jobs.db"), "{error}");
        let error = "/var/lib/punctual.db"
            .parse::<StoreUrl>()
            .expect_err("refused");
        assert!(
            error.to_string().contains("sqlite:/var/lib/punctual.db"),
            "{error}"
        );
    }

    #[test]
    fn a_password_never_shows() {
        let url = PostgresUrl("postgres://ada:secret@db.example:5432/jobs".to_owned());
        assert_eq!(url.redacted(), "postgres://ada:***@db.example:5432/jobs");
        assert!(!format!("{:?}", StoreUrl::Postgres(url)).contains("secret"));
        let plain = PostgresUrl("postgres://ada@db/jobs".to_owned());
        assert_eq!(plain.redacted(), "postgres://ada@db/jobs");
        let query = PostgresUrl("postgres://db/jobs?password=secret&user=ada".to_owned());
        assert_eq!(query.redacted(), "postgres://db/jobs?password=***&user=ada");
        let unknown = "mysql://ada:secret@db/jobs"
            .parse::<StoreUrl>()
            .expect_err("refused");
        assert!(!unknown.to_string().contains("secret"), "{unknown}");
    }

    #[test]
    fn a_skewed_clock_is_off_by_its_skew() {
        let offset = SkewedClock::from_millis(60_000)
            .now()
            .micros_since(SystemClock.now());
        assert!((59_000_000..=61_000_000).contains(&offset), "{offset}");
        let behind = SkewedClock::from_millis(-60_000)
            .now()
            .micros_since(SystemClock.now());
        assert!((-61_000_000..=-59_000_000).contains(&behind), "{behind}");
    }

    #[tokio::test]
    async fn a_schema_is_refused_for_sqlite() {
        let settings = PostgresSettings {
            schema: Some("jobs".to_owned()),
            ..PostgresSettings::default()
        };
        let refused = open(&StoreUrl::Sqlite(None), &settings).await;
        assert!(matches!(refused, Err(OpenError::SchemaWithoutPostgres)));
    }

    #[tokio::test]
    async fn a_fresh_sqlite_store_lives_in_its_temporary_directory() {
        let opened = open(&StoreUrl::Sqlite(None), &PostgresSettings::default())
            .await
            .expect("a fresh SQLite store opens");
        let path = opened.path.clone().expect("a SQLite store has a path");
        let temp = opened.temp.as_ref().expect("a fresh store has a directory");
        assert!(path.starts_with(temp.path()), "{}", path.display());
        assert!(opened.sqlite.is_some());
        let directory = temp.path().to_path_buf();
        opened.close().await;
        assert!(
            !directory.exists(),
            "the temporary directory outlived the store"
        );
    }

    #[tokio::test]
    async fn an_unopenable_sqlite_file_names_its_path() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        // A directory is not a database file.
        let url = StoreUrl::Sqlite(Some(directory.path().to_path_buf()));
        let error = match open(&url, &PostgresSettings::default()).await {
            Ok(_) => panic!("a directory opened as a SQLite store"),
            Err(error) => error,
        };
        assert!(matches!(error, OpenError::Sqlite { .. }), "{error:?}");
        assert!(error.store_error().is_some());
        assert!(!error.needs_migration());
        assert!(
            error
                .to_string()
                .contains(&directory.path().display().to_string()),
            "{error}"
        );
    }
}
