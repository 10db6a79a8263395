//! `App`: what every request handler shares (the store, the clock, the engine, the
//! authenticator, the metrics, the SSRF guard), and the extractor that authorises a request.
//!
//! Must not hold request logic; that lives in `api`.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use punctual::Scheduler;
use punctual_core::{Clock, NodeId, Store, Timestamp};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, Principal, Scope};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::webhook::guard::GuardedResolver;

/// Settings of the API itself (the engine's are in `punctual::Config`).
#[derive(Clone, Debug)]
pub struct ApiSettings {
    pub node: NodeId,
    /// How long an `Idempotency-Key` holds after its first request.
    pub idempotency_ttl: Duration,
    /// Serve `/metrics` without a token.
    pub metrics_public: bool,
}

/// The state shared by every request.
pub struct App {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub scheduler: Scheduler,
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    pub guard: GuardedResolver,
    pub settings: ApiSettings,
    /// Wakes long-polling claims: a job was inserted or became due sooner (here, or, through the
    /// store's insert hints, on another node).
    pub arrivals: Notify,
    /// `Idempotency-Key`s whose first request this node is processing.
    pub in_flight: Mutex<HashSet<String>>,
    /// Cancelled when the node begins to stop: long polls answer at once, `/readyz` says no.
    pub stopping: CancellationToken,
}

impl App {
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Tells the engine and the long polls that a job is due at `run_at`.
    pub fn announce(&self, run_at: Timestamp) {
        self.scheduler.notify_due(run_at);
        self.arrivals.notify_waiters();
    }
}

/// Marks which scope a route needs; see `Authorized`.
pub trait NeedsScope: Send + Sync + 'static {
    const SCOPE: Scope;
}

macro_rules! scope_marker {
    ($name:ident, $scope:expr) => {
        pub struct $name;
        impl NeedsScope for $name {
            const SCOPE: Scope = $scope;
        }
    };
}

scope_marker!(Read, Scope::Read);
scope_marker!(Write, Scope::Write);
scope_marker!(Worker, Scope::Worker);
scope_marker!(Admin, Scope::Admin);

/// The caller, authenticated and holding scope `S`: a handler that takes it cannot run
/// otherwise. It is extracted before the body is read, so a refused request costs no body.
pub struct Authorized<S: NeedsScope>(pub Principal, pub PhantomData<S>);

impl<S: NeedsScope> FromRequestParts<Arc<App>> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let principal = app.auth.authenticate(&parts.headers).await?;
        principal.require(S::SCOPE)?;
        Ok(Authorized(principal, PhantomData))
    }
}

/// Holds an idempotency key as in progress on this node until dropped.
pub struct InFlight<'a> {
    app: &'a App,
    key: String,
}

impl<'a> InFlight<'a> {
    /// `None` if a request under `key` is already in progress here.
    pub fn enter(app: &'a App, key: &str) -> Option<InFlight<'a>> {
        let mut keys = app
            .in_flight
            .lock()
            .expect("the in-flight set lock is never poisoned");
        keys.insert(key.to_owned()).then(|| InFlight {
            app,
            key: key.to_owned(),
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Held only for a set operation, which does not panic.
        let mut keys = self
            .app
            .in_flight
            .lock()
            .expect("the in-flight set lock is never poisoned");
        keys.remove(&self.key);
    }
}
