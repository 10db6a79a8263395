//! The store a benchmark runs on: punctual-server's store URLs (`sqlite`, `sqlite:PATH`,
//! `postgres://...`) plus `memory`, the testkit's `MemoryStore`, which measures the engine with
//! no storage cost under it.
//!
//! `memory` is a benchmark's store only: it dies with its process, so the binary's other
//! commands and the server do not accept it. Opening everything else is `store_url`'s work; this
//! module adds no store of its own and runs no SQL.

use std::sync::Arc;

use punctual_core::SystemClock;
use punctual_server::store_url::{self, OpenedStore, PostgresSettings, StoreUrl};
use punctual_testkit::MemoryStore;

/// A store named by `--store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BenchStore {
    /// A fresh `MemoryStore`, in this process only.
    Memory,
    /// A store punctual-server opens.
    Url(StoreUrl),
}

impl std::str::FromStr for BenchStore {
    type Err = String;
    fn from_str(text: &str) -> Result<BenchStore, String> {
        if text == "memory" {
            return Ok(BenchStore::Memory);
        }
        match text.parse::<StoreUrl>() {
            Ok(url) => Ok(BenchStore::Url(url)),
            // The URL's own messages, with `memory` in their list of stores.
            Err(store_url::ParseError::UnknownScheme { text }) => Err(format!(
                "unknown store {text:?}: expected memory, sqlite[:PATH] or postgres://..."
            )),
            Err(store_url::ParseError::NoScheme { text }) => Err(format!(
                "{text:?} is not a store: expected memory, sqlite[:PATH] or postgres://... (a \
                 SQLite file at that path is sqlite:{text})"
            )),
            Err(error) => Err(error.to_string()),
        }
    }
}

impl BenchStore {
    /// The name reported in benchmark output.
    pub fn name(&self) -> &'static str {
        match self {
            BenchStore::Memory => "memory",
            BenchStore::Url(url) => url.name(),
        }
    }
}

/// Opens the store `store` names (see `store_url::open`).
pub async fn open(store: &BenchStore, settings: &PostgresSettings) -> anyhow::Result<OpenedStore> {
    match store {
        BenchStore::Memory => Ok(OpenedStore::from_store(
            Arc::new(MemoryStore::new()),
            Arc::new(SystemClock),
        )),
        // The error names the store already.
        BenchStore::Url(url) => Ok(store_url::open(url, settings).await?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_joins_the_stores_a_url_names() {
        assert_eq!("memory".parse(), Ok(BenchStore::Memory));
        assert_eq!(
            "sqlite".parse(),
            Ok(BenchStore::Url(StoreUrl::Sqlite(None)))
        );
        assert_eq!(
            "memory".parse::<BenchStore>().map(|s| s.name()),
            Ok("memory")
        );
        let unknown = "mysql://h/db".parse::<BenchStore>().expect_err("refused");
        assert!(
            unknown.contains("unknown store") && unknown.contains("memory"),
            "{unknown}"
        );
        let bare = "bench.db".parse::<BenchStore>().expect_err("refused");
        assert!(
            bare.contains("sqlite:bench.db") && bare.contains("memory"),
            "{bare}"
        );
    }
}
