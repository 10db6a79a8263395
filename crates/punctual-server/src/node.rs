//! A node: the engine (with the webhook executor as its handler), the HTTP API and, for a
//! store shared by several processes, the insert hints that wake long-polling workers. Several
//! nodes on one PostgreSQL database are a cluster: each serves the API and executes jobs.
//!
//! `Node::stop` is graceful: the node stops accepting connections, answers what is in flight
//! (long polls end at once, empty), then stops the engine (`Scheduler::stop`: unstarted claims
//! handed back, running webhooks given the grace period).
//!
//! Owns start-up and shutdown order. Must not parse configuration (that is `config`) nor open a
//! store by URL (`store_url`): it is handed a store and its clock.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use punctual::{Config, Event, FailOutcome, Scheduler, StopReport};
use punctual_core::{Clock, Store};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::app::{ApiSettings, App};
use crate::auth::Authenticator;
use crate::metered::MeteredStore;
use crate::metrics::Metrics;
use crate::webhook::executor::WebhookExecutor;
use crate::webhook::guard::{AddressPolicy, GuardedResolver, NameResolver, SystemResolver};
use crate::webhook::sign::Secret;
use crate::webhook::target::WEBHOOK_KIND;

/// How long in-flight requests may take to finish once the node stops.
const DRAIN_MAX: Duration = Duration::from_secs(30);

/// Everything a node is started with, already checked.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    /// The engine's settings: node name, concurrency (webhooks in flight), lease, grace, ...
    pub engine: Config,
    /// Serve every request as an anonymous admin. Development only: `config` refuses it on a
    /// non-loopback address.
    pub insecure_no_auth: bool,
    pub metrics_public: bool,
    pub idempotency_ttl: Duration,
    pub webhook_secrets: Vec<Secret>,
    /// Ranges webhooks may reach despite the SSRF guard.
    pub allow_networks: Vec<IpNet>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the webhook client: {0}")]
    Client(#[from] reqwest::Error),
    #[error(transparent)]
    Engine(#[from] punctual::EngineError),
}

/// A running node.
pub struct Node {
    app: Arc<App>,
    address: SocketAddr,
    shutdown: CancellationToken,
    server: Mutex<Option<JoinHandle<std::io::Result<()>>>>,
    hints: Mutex<Option<JoinHandle<()>>>,
}

impl Node {
    /// Starts a node on `store` with the system's name resolver.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: NodeConfig,
    ) -> Result<Node, NodeError> {
        Node::start_with_resolver(store, clock, config, Arc::new(SystemResolver)).await
    }

    /// Starts a node whose webhooks resolve names with `resolver` (tests make a name resolve
    /// to a refused address this way).
    pub async fn start_with_resolver(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: NodeConfig,
        resolver: Arc<dyn NameResolver>,
    ) -> Result<Node, NodeError> {
        let app = assemble(store, clock, &config, resolver)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| NodeError::Listen {
                    address: config.listen,
                    source,
                })?;
        let address = listener.local_addr().map_err(|source| NodeError::Listen {
            address: config.listen,
            source,
        })?;
        app.scheduler.start()?;
        let hints = tokio::spawn(forward_hints(app.clone()));
        let shutdown = CancellationToken::new();
        let router = api::router(app.clone());
        let signal = shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(signal.cancelled_owned())
                .await
        });
        tracing::info!(%address, node = %app.settings.node, "punctual is serving");
        Ok(Node {
            app,
            address,
            shutdown,
            server: Mutex::new(Some(server)),
            hints: Mutex::new(Some(hints)),
        })
    }

    /// The address the API listens on (the port chosen, when asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.app.scheduler
    }

    /// Stops gracefully (see the module docs). Safe to call more than once.
    pub async fn stop(&self) -> StopReport {
        self.app.stopping.cancel();
        self.shutdown.cancel();
        let server = self.server.lock().expect("never poisoned").take();
        if let Some(server) = server {
            match tokio::time::timeout(DRAIN_MAX, server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => tracing::warn!(%error, "the HTTP server ended with an error"),
                Ok(Err(error)) => tracing::warn!(%error, "the HTTP server task failed"),
                Err(_) => tracing::warn!(
                    "requests still in flight after {} s; stopping anyway",
                    DRAIN_MAX.as_secs()
                ),
            }
        }
        let hints = self.hints.lock().expect("never poisoned").take();
        if let Some(hints) = hints {
            hints.abort();
            let _ = hints.await;
        }
        let report = self.app.scheduler.stop().await;
        tracing::info!(
            released = report.released,
            abandoned = report.abandoned,
            "punctual stopped"
        );
        report
    }
}

/// The HTTP API of a node on `store`, served in process: no socket, and the engine is built but
/// not started, so the jobs its requests create are stored and never run. Requests are driven
/// through the router itself (`tower::ServiceExt::oneshot`), as the fuzz target `api_request`
/// does; `Node::start` serves the same router on a socket.
pub fn in_process_router(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: &NodeConfig,
    resolver: Arc<dyn NameResolver>,
) -> Result<axum::Router, NodeError> {
    Ok(api::router(assemble(store, clock, config, resolver)?))
}

/// What every request shares, with the engine built but not started.
fn assemble(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: &NodeConfig,
    resolver: Arc<dyn NameResolver>,
) -> Result<Arc<App>, NodeError> {
    let metrics = Arc::new(Metrics::new());
    let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store, metrics.clone()));
    let guard = GuardedResolver {
        policy: Arc::new(AddressPolicy::new(config.allow_networks.clone())),
        resolver,
    };
    let executor = WebhookExecutor::new(
        guard.clone(),
        config.webhook_secrets.clone(),
        config.engine.concurrency,
        metrics.clone(),
        clock.clone(),
    )?;
    let observed = metrics.clone();
    let scheduler = Scheduler::builder(store.clone())
        .clock(clock.clone())
        .config(config.engine.clone())
        .handler(WEBHOOK_KIND, executor)
        .accept_unknown_kinds(true)
        .observer(move |event| {
            observed.observe(event);
            log(event);
        })
        .build()?;
    Ok(Arc::new(App {
        auth: Authenticator::new(store.clone(), clock.clone(), config.insecure_no_auth),
        store,
        clock,
        scheduler,
        metrics,
        guard,
        settings: ApiSettings {
            node: config.engine.node.clone(),
            idempotency_ttl: config.idempotency_ttl,
            metrics_public: config.metrics_public,
        },
        arrivals: Notify::new(),
        in_flight: Mutex::new(Default::default()),
        stopping: CancellationToken::new(),
    }))
}

/// Logs what an operator should see: refused writes of a lost lease, rescues, leadership.
/// Successes and ordinary failures are counted in the metrics, not logged one by one.
fn log(event: &Event) {
    match event {
        Event::LeaseLost { id, kind, token } => {
            tracing::warn!(job = %id, kind = %kind, token = token.0, "lease lost: this node's write was refused; the job is another holder's now");
        }
        Event::Rescued(outcome) => tracing::info!(
            job = %outcome.id,
            holder = %outcome.holder,
            token = outcome.token.0,
            state = outcome.state.as_str(),
            "rescued a job whose holder's lease expired"
        ),
        Event::LeaderElected { term } => {
            tracing::info!(term = term.0, "this node now leads (rescue, purge)")
        }
        Event::LeaderLost { term } => tracing::info!(term = term.0, "this node no longer leads"),
        Event::Failed {
            id,
            kind,
            attempt,
            attempt_max,
            error,
            outcome: FailOutcome::Dead,
        } => {
            tracing::warn!(job = %id, kind = %kind, attempt, attempt_max, error = %error, "a job is dead: its last attempt failed");
        }
        _ => {}
    }
}

/// Wakes long-polling claims when another process inserts a job (PostgreSQL's LISTEN/NOTIFY);
/// without such a channel the polls look at least every second anyway.
async fn forward_hints(app: Arc<App>) {
    let mut hints = match app.store.listen().await {
        Ok(Some(hints)) => hints,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "no insert hints; remote workers' long polls look every second");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hints.next() => app.arrivals.notify_waiters(),
            () = app.stopping.cancelled() => return,
        }
    }
}
