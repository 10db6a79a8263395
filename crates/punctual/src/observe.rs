//! The hand-off of events to the application's observer.
//!
//! The engine's loops and job tasks never call the observer themselves: `Observers::emit` puts
//! the event on a bounded queue (never waiting) and one task of its own calls the observer for
//! each event in order. An observer that is slow or panics can therefore neither stall nor kill
//! a loop: when the queue is full the event is dropped and counted, and a panic is caught,
//! logged and counted. `flush` lets `stop` wait until what was emitted before it has been
//! observed.
//!
//! A task rather than a thread: under tokio's paused clock (the engine's tests, the simulation)
//! virtual time advances only once every task is idle, so events are observed before time moves
//! on, as they would be in real time. The cost: an observer that blocks (rather than is merely
//! slow) holds one of the runtime's worker threads while it blocks; the loops go on on the
//! others, but on a current-thread runtime it would stall them. Observers must not block.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{Receiver, Sender};

use crate::event::Event;
use crate::execute::panic_message;

pub(crate) type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

enum Message {
    Event(Event),
    /// Answered once every message queued before it was handled.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Counts of what the hand-off could not deliver.
#[derive(Debug, Default)]
pub(crate) struct Losses {
    pub dropped: AtomicU64,
    pub panics: AtomicU64,
}

/// The sending side of the hand-off; no queue when the application set no observer.
pub(crate) struct Observers {
    queue: Option<Sender<Message>>,
    /// The observer and the receiving side, until `start` hands them to the delivering task.
    pending: std::sync::Mutex<Option<(Observer, Receiver<Message>)>>,
    pub losses: Arc<Losses>,
}

impl Observers {
    /// A queue of `capacity` events for `observer`; nothing is delivered before `start`.
    pub fn new(observer: Option<Observer>, capacity: usize) -> Observers {
        let losses = Arc::new(Losses::default());
        let Some(observer) = observer else {
            return Observers {
                queue: None,
                pending: std::sync::Mutex::new(None),
                losses,
            };
        };
        let (queue, messages) = tokio::sync::mpsc::channel(capacity);
        Observers {
            queue: Some(queue),
            pending: std::sync::Mutex::new(Some((observer, messages))),
            losses,
        }
    }

    /// Starts the task that delivers the events, on `runtime`; once only.
    pub fn start(&self, runtime: &tokio::runtime::Handle) {
        let pending = self
            .pending
            .lock()
            .expect("nothing panics while holding this lock")
            .take();
        if let Some((observer, messages)) = pending {
            runtime.spawn(deliver(messages, observer, self.losses.clone()));
        }
    }

    /// Queues `event` for the observer without waiting; drops and counts it if the queue is
    /// full.
    pub fn emit(&self, event: Event) {
        let Some(queue) = &self.queue else {
            return;
        };
        match queue.try_send(Message::Event(event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.losses.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // The first drop, then one line per 10,000: a full queue must not flood the log.
                if dropped % 10_000 == 1 {
                    tracing::warn!(dropped, "the event observer is behind; events dropped");
                }
            }
            // The delivering task is gone only with its runtime: nobody to tell.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Waits, at most `within`, until every event emitted before this call was observed; true
    /// if they were.
    pub async fn flush(&self, within: Duration) -> bool {
        let Some(queue) = &self.queue else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + within;
        let (done, observed) = tokio::sync::oneshot::channel();
        let mut message = Message::Flush(done);
        loop {
            match queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if tokio::time::Instant::now() < deadline => {
                    message = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => return false,
            }
        }
        matches!(
            tokio::time::timeout_at(deadline, observed).await,
            Ok(Ok(()))
        )
    }
}

/// The delivering task: observes each event in order until every sender is gone.
async fn deliver(mut messages: Receiver<Message>, observer: Observer, losses: Arc<Losses>) {
    while let Some(message) = messages.recv().await {
        match message {
            Message::Event(event) => {
                if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| observer(&event)))
                {
                    let panics = losses.panics.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::error!(
                        panics,
                        panic = %panic_message(panic.as_ref()),
                        "the event observer panicked; the event is skipped"
                    );
                }
            }
            Message::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}
