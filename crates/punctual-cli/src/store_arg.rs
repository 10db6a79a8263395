//! Parses the `--store` argument (`memory`, `sqlite[:PATH]`) and opens the store it names.
//!
//! Postgres (`postgres://...`) is recognised and refused until the PostgreSQL store exists.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use punctual_core::Store;

/// A store named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreArg {
    Memory,
    /// A SQLite file; `None` means a fresh temporary file.
    Sqlite(Option<PathBuf>),
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
                Err("the PostgreSQL store is not built yet; use memory or sqlite[:PATH]".to_owned())
            }
            _ => Err(format!(
                "unknown store {text:?}: expected memory or sqlite[:PATH]"
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
        }
    }
}

/// An opened store, with the temporary directory that holds its file when it has one.
pub struct OpenedStore {
    pub store: Arc<dyn Store>,
    pub path: Option<PathBuf>,
    pub _temp: Option<tempfile::TempDir>,
}

pub fn open(arg: &StoreArg) -> anyhow::Result<OpenedStore> {
    match arg {
        StoreArg::Memory => Ok(OpenedStore {
            store: Arc::new(punctual_testkit::MemoryStore::new()),
            path: None,
            _temp: None,
        }),
        StoreArg::Sqlite(path) => {
            let (path, temp) = match path {
                Some(path) => (path.clone(), None),
                None => {
                    let dir = tempfile::tempdir().context("creating a temporary directory")?;
                    (dir.path().join("punctual.db"), Some(dir))
                }
            };
            let store = punctual_sqlite::SqliteStore::open(&path)
                .with_context(|| format!("opening SQLite store {}", path.display()))?;
            Ok(OpenedStore {
                store: Arc::new(store),
                path: Some(path),
                _temp: temp,
            })
        }
    }
}
