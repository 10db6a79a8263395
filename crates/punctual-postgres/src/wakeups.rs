//! Prompt wake-ups (issue 3, item 4, the store's half): LISTEN for the insert trigger's
//! notifications and hand the engine the earliest `run_at` it has not seen yet.
//!
//! Owns one dedicated connection (outside the pool: a LISTEN lives as long as its session) and
//! the task that reads it, reconnecting with a capped backoff when the connection is lost. Must
//! not be relied on for correctness: a notification is a hint. One can be lost (sent while this
//! node was reconnecting), so the engine keeps a bounded poll; after every reconnect the task
//! offers the hint `Timestamp::UNIX_EPOCH` ("something may be due now; look").
//!
//! Hints are coalesced rather than queued: the engine only needs the earliest `run_at` announced
//! since it last looked, so a single slot keeps the minimum. Memory stays bounded however fast
//! jobs are inserted, and no hint that matters (an earlier one) is ever dropped for space.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use punctual_core::{Hint, InsertHints, JobId, StoreError, Timestamp};
use tokio::sync::Notify;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, Client, Config, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::pg;
use crate::migrations::CHANNEL;

/// The first pause before reconnecting, doubled after each failure up to `RECONNECT_DELAY_MAX`.
const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);

/// Insert notifications for one store's schema. Dropping it closes the connection.
pub struct Wakeups {
    slot: Arc<Slot>,
    task: tokio::task::JoinHandle<()>,
}

/// Most cancel notices kept untaken; beyond it the oldest are dropped (the handler then hears
/// at its next heartbeat, as without notices).
const CANCELS_KEPT_MAX: usize = 4_096;

/// The earliest hint not yet taken, the cancel notices not yet taken, and a signal that one
/// arrived.
#[derive(Default)]
struct Slot {
    earliest: Mutex<Option<Timestamp>>,
    cancelled: Mutex<std::collections::VecDeque<JobId>>,
    arrived: Notify,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Timestamp>> {
        // Only plain assignments happen under this lock; nothing can panic while it is held.
        self.earliest
            .lock()
            .expect("the wake-up slot's lock is never poisoned")
    }

    fn offer(&self, run_at: Timestamp) {
        {
            let mut earliest = self.lock();
            *earliest = Some(earliest.map_or(run_at, |known| known.min(run_at)));
        }
        self.arrived.notify_one();
    }

    fn take(&self) -> Option<Timestamp> {
        self.lock().take()
    }

    fn offer_cancel(&self, id: JobId) {
        {
            let mut cancelled = self.cancels();
            if cancelled.len() == CANCELS_KEPT_MAX {
                cancelled.pop_front();
            }
            cancelled.push_back(id);
        }
        self.arrived.notify_one();
    }

    fn take_cancel(&self) -> Option<JobId> {
        self.cancels().pop_front()
    }

    fn cancels(&self) -> MutexGuard<'_, std::collections::VecDeque<JobId>> {
        // Only plain pushes and pops happen under this lock.
        self.cancelled
            .lock()
            .expect("the cancel notices' lock is never poisoned")
    }
}

impl Wakeups {
    /// Connects and LISTENs once before returning, so a caller learns at once that the database
    /// is unreachable; later connection losses are handled in the background.
    pub(crate) async fn start(
        config: Config,
        tls: MakeRustlsConnect,
    ) -> Result<Wakeups, StoreError> {
        let session = Session::open(&config, &tls).await?;
        let slot = Arc::new(Slot::default());
        let task = tokio::spawn(listen(config, tls, session, Arc::clone(&slot)));
        Ok(Wakeups { slot, task })
    }

    /// Waits for a hint: the earliest `run_at` among jobs inserted since the last call (or
    /// `Timestamp::UNIX_EPOCH` after a reconnect). Cancel-safe: a hint is kept until taken.
    pub async fn recv(&mut self) -> Timestamp {
        loop {
            if let Some(run_at) = self.slot.take() {
                return run_at;
            }
            self.slot.arrived.notified().await;
        }
    }

    /// The pending hint, if any, without waiting.
    pub fn try_recv(&mut self) -> Option<Timestamp> {
        self.slot.take()
    }
}

#[async_trait]
impl InsertHints for Wakeups {
    async fn next(&mut self) -> Timestamp {
        self.recv().await
    }

    async fn next_hint(&mut self) -> Hint {
        loop {
            if let Some(id) = self.slot.take_cancel() {
                return Hint::Cancelled(id);
            }
            if let Some(run_at) = self.slot.take() {
                return Hint::Due(run_at);
            }
            self.slot.arrived.notified().await;
        }
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        // The task only reads the connection and fills the slot; ending it closes the connection.
        self.task.abort();
    }
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups").finish_non_exhaustive()
    }
}

/// A connection that LISTENs on `CHANNEL`, and the schema whose inserts it reports.
struct Session {
    /// Kept so the connection stays open: dropping the client ends the session.
    _client: Client,
    connection: Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>,
    /// `current_schema()` on this connection: the schema the store's tables are in.
    schema: Option<String>,
}

impl Session {
    async fn open(config: &Config, tls: &MakeRustlsConnect) -> Result<Session, StoreError> {
        let (client, mut connection) = config.connect(tls.clone()).await.map_err(pg)?;
        let schema = {
            let setup = async {
                let row = client.query_one("SELECT current_schema()", &[]).await?;
                let schema: Option<String> = row.try_get(0)?;
                client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
                Ok::<_, tokio_postgres::Error>(schema)
            };
            tokio::pin!(setup);
            // The connection must be polled for the setup's statements to run. A notification that
            // arrives before the setup has finished is dropped; the caller covers it (see module).
            loop {
                tokio::select! {
                    schema = &mut setup => break schema.map_err(pg)?,
                    message = poll_fn(|context| connection.poll_message(context)) => match message {
                        Some(Ok(_)) => {}
                        Some(Err(error)) => return Err(pg(error)),
                        None => {
                            return Err(StoreError::Unavailable(
                                "the LISTEN connection closed while it was being set up".to_owned(),
                            ));
                        }
                    },
                }
            }
        };
        Ok(Session {
            _client: client,
            connection,
            schema,
        })
    }

    /// Reads notifications until the connection ends; returns why it ended.
    async fn run(mut self, slot: &Slot) -> String {
        loop {
            match poll_fn(|context| self.connection.poll_message(context)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    match parse(notification.payload(), self.schema.as_deref()) {
                        Some(Hint::Due(run_at)) => slot.offer(run_at),
                        Some(Hint::Cancelled(id)) => slot.offer_cancel(id),
                        None => {}
                    }
                }
                // Notices (warnings from the server) carry nothing for us.
                Some(Ok(_)) => {}
                Some(Err(error)) => return error.to_string(),
                None => return "the connection closed".to_owned(),
            }
        }
    }
}

/// Reads a notification payload: `"<run_at_us> <schema>"` (an insert) or `"cancel <job id>
/// <schema>"` (a running job cancelled); `None` for another schema's (several punctual
/// deployments may share one database) or an unreadable payload.
fn parse(payload: &str, schema: Option<&str>) -> Option<Hint> {
    if let Some(rest) = payload.strip_prefix("cancel ") {
        let (id, from_schema) = rest.split_once(' ')?;
        if schema.is_some_and(|schema| schema != from_schema) {
            return None;
        }
        return id.parse::<JobId>().ok().map(Hint::Cancelled);
    }
    let (run_at, from_schema) = payload.split_once(' ')?;
    if schema.is_some_and(|schema| schema != from_schema) {
        return None;
    }
    run_at
        .parse()
        .ok()
        .map(Timestamp::from_micros)
        .map(Hint::Due)
}

/// Serves `session`, then reconnects whenever it ends, forever (the task is aborted when the
/// `Wakeups` is dropped).
async fn listen(config: Config, tls: MakeRustlsConnect, session: Session, slot: Arc<Slot>) {
    let mut session = session;
    loop {
        let reason = session.run(&slot).await;
        tracing::warn!(%reason, "lost the LISTEN connection for job wake-ups; reconnecting");
        let mut delay = RECONNECT_DELAY_MIN;
        session = loop {
            tokio::time::sleep(delay).await;
            match Session::open(&config, &tls).await {
                Ok(session) => break session,
                Err(error) => {
                    tracing::warn!(%error, ?delay, "reconnecting the LISTEN connection failed");
                    delay = (delay * 2).min(RECONNECT_DELAY_MAX);
                }
            }
        };
        // Inserts announced while we were away were lost: tell the engine to look now.
        slot.offer(Timestamp::UNIX_EPOCH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_of_other_schemas_are_ignored() {
        let run_at = Some(Hint::Due(Timestamp::from_micros(1_764_400_000_000_123)));
        assert_eq!(parse("1764400000000123 mine", Some("mine")), run_at);
        assert_eq!(parse("1764400000000123 theirs", Some("mine")), None);
        assert_eq!(parse("1764400000000123 theirs", None), run_at);
        assert_eq!(parse("garbage", Some("mine")), None);
        assert_eq!(parse("x mine", Some("mine")), None);
        let id: JobId = "0191d0a0-0000-7000-8000-000000000001"
            .parse()
            .expect("an id");
        assert_eq!(
            parse(&format!("cancel {id} mine"), Some("mine")),
            Some(Hint::Cancelled(id))
        );
        assert_eq!(parse(&format!("cancel {id} theirs"), Some("mine")), None);
        assert_eq!(parse("cancel nonsense mine", Some("mine")), None);
    }

    #[test]
    fn cancel_notices_are_kept_in_order_and_bounded() {
        let slot = Slot::default();
        let ids: Vec<JobId> = (0..CANCELS_KEPT_MAX as u128 + 2)
            .map(|n| JobId::from_bytes((n + 1).to_be_bytes()))
            .collect();
        for id in &ids {
            slot.offer_cancel(*id);
        }
        // The two oldest were dropped.
        assert_eq!(slot.take_cancel(), Some(ids[2]));
        assert_eq!(slot.cancels().len(), CANCELS_KEPT_MAX - 1);
    }

    #[test]
    fn the_slot_keeps_the_earliest_hint_until_taken() {
        let slot = Slot::default();
        slot.offer(Timestamp::from_micros(30));
        slot.offer(Timestamp::from_micros(10));
        slot.offer(Timestamp::from_micros(20));
        assert_eq!(slot.take(), Some(Timestamp::from_micros(10)));
        assert_eq!(slot.take(), None);
    }
}
