//! Store calls bounded in time (`PgOptions::call_timeout`).
//!
//! A network that silently stops delivering (no reset, no close) leaves a query waiting for an
//! answer that never comes; TCP keepalives and `TCP_USER_TIMEOUT` end such a connection only
//! after tens of seconds, and a proxy that keeps accepting never. Every store call therefore
//! runs under a timeout, and a call that overruns fails with `Unavailable`.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Pool;
use punctual_core::StoreError;

/// Runs `call` (the store operation `operation`) for at most `limit` (zero: no limit). On
/// overrun the call is abandoned and the pool's idle connections are dropped: the abandoned
/// call's connection, back in the pool with a request that may never be answered, must not be
/// handed to the next caller; new connections are opened as needed. A write abandoned this way
/// may or may not have been applied, as with any connection lost mid-call.
pub(crate) async fn within<T>(
    pool: &Pool,
    limit: Duration,
    operation: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    if limit.is_zero() {
        return call.await;
    }
    match tokio::time::timeout(limit, call).await {
        Ok(answer) => answer,
        Err(_) => {
            pool.retain(|_, _| false);
            Err(StoreError::Unavailable(format!(
                "{operation} did not finish within {} ms: the database, or the network to it, \
                 is not answering",
                limit.as_millis()
            )))
        }
    }
}
