//! A network that silently stops delivering: a proxy between the store and PostgreSQL that
//! keeps both connections open and keeps reading, but forwards nothing (no reset, no close,
//! the kernel acknowledges every byte, so neither keepalives nor TCP_USER_TIMEOUT notice).
//! Every store call must still come back within `call_timeout`, as `Unavailable`, and the
//! store must work again once the network does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use punctual_core::{ClaimRequest, JobOptions, JobState, Store, StoreError};
use punctual_postgres::{PgOptions, PgStore};
use punctual_testkit::fixtures;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{TestSchema, database_url};

const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// A TCP proxy to PostgreSQL that forwards while `forwarding` is set and otherwise holds what
/// it reads.
struct Blackhole {
    address: std::net::SocketAddr,
    forwarding: Arc<AtomicBool>,
}

impl Blackhole {
    async fn start(upstream: String) -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address = listener.local_addr().expect("an address");
        let forwarding = Arc::new(AtomicBool::new(true));
        let gate = forwarding.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, gate.clone()));
                tokio::spawn(pipe(server_read, client_write, gate.clone()));
            }
        });
        Blackhole {
            address,
            forwarding,
        }
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    forwarding: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        // Held, not dropped: the bytes go on once the network is back.
        while !forwarding.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// A call must answer, one way or the other, well within this; beyond it, it hung.
const HANG: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_bounded_when_the_network_stops_delivering() {
    let Some(schema) = TestSchema::new().await else {
        return;
    };
    let config: tokio_postgres::Config = database_url().parse().expect("a valid URL");
    let proxy = Blackhole::start(crate::upstream()).await;
    let user = config.get_user().unwrap_or("postgres");
    let database = config.get_dbname().unwrap_or("test");
    let url = format!("postgres://{user}@{}/{database}", proxy.address);
    let store = PgStore::connect_with(
        &url,
        PgOptions {
            call_timeout: CALL_TIMEOUT,
            connect_timeout: Duration::from_secs(1),
            ..schema.options()
        },
    )
    .await
    .expect("connect through the proxy");
    let now = fixtures::NOW;
    let job = fixtures::new_job("k", now, JobOptions::default(), now);
    let id = job.id;
    store.insert(vec![job], now).await.expect("insert");

    proxy.forwarding.store(false, Ordering::SeqCst);
    let claim = ClaimRequest {
        holder: fixtures::node("node-a"),
        queues: None,
        kinds: None,
        limit: 10,
        due_by: now,
        lease: Duration::from_secs(30),
    };
    for (operation, call) in [
        (
            "get",
            Box::pin(async { store.get(id).await.map(|_| ()) })
                as std::pin::Pin<
                    Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send>,
                >,
        ),
        (
            "claim",
            Box::pin(async { store.claim(claim.clone(), now).await.map(|_| ()) }),
        ),
        (
            "insert",
            Box::pin(async {
                let job = fixtures::new_job("k", now, JobOptions::default(), now);
                store.insert(vec![job], now).await.map(|_| ())
            }),
        ),
        (
            "counts",
            Box::pin(async { store.counts().await.map(|_| ()) }),
        ),
    ] {
        let began = Instant::now();
        let answer = tokio::time::timeout(HANG, call)
            .await
            .unwrap_or_else(|_| panic!("{operation} hung past {HANG:?}"));
        assert!(
            matches!(answer, Err(StoreError::Unavailable(_))),
            "{operation}: {answer:?}"
        );
        // Bounded by the call timeout (plus the pool's wait for a fresh connection, bounded
        // by connect_timeout, when the last call dropped the idle ones).
        assert!(
            began.elapsed() < HANG,
            "{operation} took {:?}",
            began.elapsed()
        );
    }

    proxy.forwarding.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + HANG;
    loop {
        match store.get(id).await {
            Ok(Some(job)) => {
                assert_eq!(job.state, JobState::Scheduled);
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "the store did not recover with the network: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_server_that_may_lose_acknowledged_commits_is_reported() {
    let Some(_schema) = TestSchema::new().await else {
        return;
    };
    let safe = crate::raw_client(None).await;
    assert!(
        punctual_postgres::durability_warnings(&safe)
            .await
            .expect("read the settings")
            .is_empty(),
        "the test server runs with synchronous_commit=on and fsync=on"
    );
    let unsafe_client = crate::raw_client(None).await;
    unsafe_client
        .batch_execute("SET synchronous_commit = off")
        .await
        .expect("set");
    let warnings = punctual_postgres::durability_warnings(&unsafe_client)
        .await
        .expect("read the settings");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("synchronous_commit=off"),
        "{warnings:?}"
    );
}
