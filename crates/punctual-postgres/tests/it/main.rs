//! punctual-postgres's integration tests, the crate's one test binary: the shared store
//! conformance suite against a real PostgreSQL, then what only PostgreSQL can show (concurrent
//! claimers, concurrent migrations, the database's clock, LISTEN/NOTIFY, leadership across
//! nodes, job counts kept across nodes and transactions, requests under one idempotency key
//! at once, work inside the caller's own transaction, the jobs table's health and dropping a
//! schema, and what a kinds-filtered read costs, in PostgreSQL's own counts).
//!
//! Each test gets its own schema `t_<unix seconds>_<pid>_<counter>`, dropped when the test ends;
//! schemas a crashed run left behind are dropped by the first test of a run an hour later.
//! The server is `PUNCTUAL_TEST_DATABASE_URL`, or `postgres://postgres@127.0.0.1:5432/test`.
//! When it is unreachable, each test prints `SKIPPED` and passes, unless `CI=true`, where a
//! missing PostgreSQL fails the run.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use punctual_postgres::{PgOptions, PgStore};
use punctual_testkit::StoreUnderTest;
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

mod blackhole;
mod claims;
mod clock;
mod counts;
mod housekeeping;
mod idempotency;
mod in_transaction;
mod kinds;
mod leadership;
mod migrations;
mod tls;
mod wakeups;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Schemas this old or older were left by an earlier run and are dropped.
const LEFTOVER_AGE: Duration = Duration::from_secs(3_600);

pub fn database_url() -> String {
    std::env::var("PUNCTUAL_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// `host:port` of the test server, for the tests' proxies to forward to.
pub fn upstream() -> String {
    let config: tokio_postgres::Config = database_url().parse().expect("a valid URL");
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        #[allow(unreachable_patterns)]
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// A raw connection for the tests' own SQL (setting up what the store API cannot, looking at
/// the catalog), with `search_path` set to `schema` when given.
pub async fn raw_client(schema: Option<&str>) -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config = database_url().parse().expect("a valid URL");
    if let Some(schema) = schema {
        config.options(format!("-c search_path={schema}"));
    }
    let (client, connection) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(async move {
        // Ends when the client is dropped; an error then means nothing to the test.
        let _ = connection.await;
    });
    client
}

/// Whether the server answers; checked once per test binary. Panics under `CI=true` when not.
async fn reachable() -> bool {
    static REACHABLE: OnceCell<bool> = OnceCell::const_new();
    *REACHABLE
        .get_or_init(|| async {
            let url = database_url();
            let attempt =
                tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(&url, NoTls))
                    .await;
            let error = match attempt {
                Ok(Ok((client, connection))) => {
                    tokio::spawn(connection);
                    sweep_leftovers(&client).await;
                    return true;
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => "no answer within 5 s".to_owned(),
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "PostgreSQL is not reachable at {url} ({error}), and CI=true: the Postgres \
                     store's tests must run in CI. Start it (.ci/run does) or set \
                     PUNCTUAL_TEST_DATABASE_URL."
                );
            }
            // Straight to the process's stderr: the test harness captures `eprintln!` of tests
            // that pass, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "\nSKIPPED: PostgreSQL not reachable at {url} ({error}); every punctual-postgres \
                 test passes without running. Set PUNCTUAL_TEST_DATABASE_URL or start PostgreSQL.\n"
            );
            false
        })
        .await
}

/// Drops test schemas older than `LEFTOVER_AGE` (their name starts with their creation time).
async fn sweep_leftovers(client: &tokio_postgres::Client) {
    let rows = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'",
            &[],
        )
        .await
        .expect("list schemas");
    let cutoff = unix_seconds().saturating_sub(LEFTOVER_AGE.as_secs());
    for row in rows {
        let name: String = row.get(0);
        let created = name
            .split('_')
            .nth(1)
            .and_then(|seconds| seconds.parse::<u64>().ok());
        if created.is_some_and(|created| created < cutoff) {
            // Another run may be sweeping too; losing that race is fine.
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .await;
        }
    }
}

/// A test's schema; dropped with everything in it when the guard is dropped.
pub struct TestSchema {
    pub name: String,
}

impl TestSchema {
    /// A fresh, unused schema name, or `None` (after a loud message) when PostgreSQL is not
    /// reachable outside CI.
    pub async fn new() -> Option<TestSchema> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        if !reachable().await {
            eprintln!(
                "SKIPPED: PostgreSQL not reachable at {} (set PUNCTUAL_TEST_DATABASE_URL)",
                database_url()
            );
            return None;
        }
        let name = format!(
            "t_{}_{}_{}",
            unix_seconds(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Some(TestSchema { name })
    }

    pub fn options(&self) -> PgOptions {
        PgOptions {
            schema: Some(self.name.clone()),
            pool_size: 4,
            ..PgOptions::default()
        }
    }

    pub async fn connect(&self) -> PgStore {
        PgStore::connect_with(&database_url(), self.options())
            .await
            .expect("connect to the test schema")
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Dropping needs a round trip, and drop cannot await: block this worker thread while
        // another drives the runtime. Only a multi-threaded runtime allows that; elsewhere the
        // schema is left for the sweep.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return;
        }
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let drop = async {
                    let (client, connection) =
                        tokio_postgres::connect(&database_url(), NoTls).await?;
                    let work = client.batch_execute(&sql);
                    tokio::select! {
                        result = work => result,
                        result = connection => result,
                    }
                };
                // Best effort: the sweep catches whatever this misses.
                let _ = tokio::time::timeout(Duration::from_secs(10), drop).await;
            });
        });
    }
}

/// A fresh store in its own schema, or `None` to skip.
pub async fn fresh_store() -> Option<(PgStore, TestSchema)> {
    let schema = TestSchema::new().await?;
    let store = schema.connect().await;
    Some((store, schema))
}

async fn make_store() -> Option<StoreUnderTest> {
    let (store, schema) = fresh_store().await?;
    Some(StoreUnderTest::with_guard(Arc::new(store), schema))
}

punctual_testkit::store_conformance_suite!(make_store);
