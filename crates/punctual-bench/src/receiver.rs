//! A webhook receiver on loopback that records every request it gets: the observer of runs
//! when the jobs are webhooks sent by `punctual serve` nodes, in the crash and cluster
//! workloads and in the binary's fault tests (which is why this module is public).
//!
//! A receipt keeps what a real receiver can know: the path, the job id (`webhook-id`), the
//! attempt, the lease token, the job's `run_at` (`punctual-scheduled-at`), the sender's own
//! time stamp (`webhook-timestamp`), when it arrived (on the clock the receiver was given: the
//! database's in cluster mode), and which node sent it. Each node is enrolled with a webhook
//! signing secret of its own, so the signature names the sender; a request signed by no
//! enrolled node is recorded with no sender.
//!
//! A receipt is recorded before it is answered, and a node records its job's success only
//! after a 2xx answer, so every succeeded job has at least one receipt. The converse does not
//! hold: a node killed while sending may have sent a request that never arrived whole; such a
//! run had no effect on the receiver, and a receiver is what a run's effects are for.
//!
//! Answers are 200, after an optional delay (a webhook that takes time), or held for chosen
//! senders until they are released (a node that is paused or cut off while its webhooks are in
//! flight). Owns its listener and its records; judges nothing: callers read the receipts.
//! Bounded: at most `capacity` receipts are kept (the rest only counted), bodies are read to at
//! most `BODY_BYTES_MAX`, and a held answer waits at most `HOLD_MAX`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use punctual_core::{Clock, JobId, Timestamp};
use punctual_server::webhook::sign::{Secret, verify};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest request body read, in bytes: the jobs here carry an index or a short JSON value.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Longest time a held answer waits for its release.
pub const HOLD_MAX: Duration = Duration::from_secs(120);

/// One request as the receiver got it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The request's path, without the leading `/`.
    pub path: String,
    pub id: JobId,
    pub attempt: u32,
    pub token: u64,
    /// The run_at of the attempt, as the header gives it (to the millisecond).
    pub scheduled_at: Timestamp,
    /// The sender's clock when it sent, in whole Unix seconds (`webhook-timestamp`).
    pub stamped_s: i64,
    /// When the request arrived, on the receiver's clock.
    pub received_at: Timestamp,
    /// When the sender's lease on this attempt ran out as confirmed when it started
    /// (`punctual-lease-expires-at`), if the header was there.
    pub lease_expires_at: Option<Timestamp>,
    /// When the receiver answered, on its clock; `None` until it has.
    pub answered_at: Option<Timestamp>,
    /// The enrolled node whose secret signed it.
    pub sender: Option<u32>,
    pub body: String,
}

struct Shared {
    clock: Arc<dyn Clock>,
    capacity: usize,
    senders: Mutex<Vec<(u32, Secret)>>,
    receipts: Mutex<Vec<Receipt>>,
    overflow: AtomicU64,
    malformed: AtomicU64,
    delay_us: AtomicU64,
    flight: Mutex<Flight>,
    /// Bumped whenever `Flight::held` shrinks, to wake held answers.
    released: watch::Sender<u64>,
}

/// The requests not answered yet and the senders whose answers are held, under one lock, so
/// that holding a sender and listing what it has in flight is one step no answer slips into.
#[derive(Default)]
struct Flight {
    /// Each request received and not answered yet. One sender sends a job under one token
    /// once, so entries are unique.
    unanswered: Vec<Unanswered>,
    held: HashSet<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Unanswered {
    sender: u32,
    id: JobId,
    token: u64,
}

impl Flight {
    fn remove(&mut self, entry: Unanswered) {
        if let Some(position) = self.unanswered.iter().position(|kept| *kept == entry) {
            self.unanswered.swap_remove(position);
        }
    }
}

/// A running receiver; dropping it releases held answers and stops it.
pub struct Receiver {
    address: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Receiver {
    /// Listens on a free loopback port; receipts are timed on `clock`, and at most `capacity`
    /// are kept.
    pub async fn start(clock: Arc<dyn Clock>, capacity: usize) -> std::io::Result<Receiver> {
        let shared = Arc::new(Shared {
            clock,
            capacity,
            senders: Mutex::new(Vec::new()),
            receipts: Mutex::new(Vec::new()),
            overflow: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            delay_us: AtomicU64::new(0),
            flight: Mutex::new(Flight::default()),
            released: watch::channel(0).0,
        });
        let router = axum::Router::new()
            .fallback(receive)
            .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(async move {
            // Ends only when aborted (on drop) or if accepting fails for good; either way the
            // callers see it as requests that no longer arrive.
            let _ = axum::serve(listener, router).await;
        });
        Ok(Receiver {
            address,
            shared,
            server,
        })
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.address)
    }

    /// A fresh signing secret for the node `sender`, as `whsec_...` text to configure it with;
    /// requests it signs are recorded as its own.
    pub fn enroll(&self, sender: u32) -> String {
        let text = Secret::generate();
        // `generate` makes a secret `parse` accepts.
        let secret = Secret::parse(&text).expect("a generated secret parses");
        lock(&self.shared.senders).push((sender, secret));
        text
    }

    /// Answers every request `delay` after it arrived (a webhook that takes time).
    pub fn set_delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.store(micros, Ordering::Relaxed);
    }

    /// Holds the answers to `sender`'s requests, arrived or to come, until `release`, and
    /// returns the jobs of those it has in flight: none of them is answered before the release,
    /// so a sender that dies meanwhile completes none of them.
    pub fn hold(&self, sender: u32) -> Vec<JobId> {
        let mut flight = lock(&self.shared.flight);
        flight.held.insert(sender);
        flight
            .unanswered
            .iter()
            .filter(|entry| entry.sender == sender)
            .map(|entry| entry.id)
            .collect()
    }

    pub fn release(&self, sender: u32) {
        lock(&self.shared.flight).held.remove(&sender);
        self.shared
            .released
            .send_modify(|generation| *generation += 1);
    }

    /// Every receipt kept so far, in order of arrival.
    pub fn receipts(&self) -> Vec<Receipt> {
        lock(&self.shared.receipts).clone()
    }

    /// How many requests `sender` has sent that are not answered yet (a request whose sender
    /// hung up counts no longer).
    pub fn in_flight(&self, sender: u32) -> usize {
        lock(&self.shared.flight)
            .unanswered
            .iter()
            .filter(|entry| entry.sender == sender)
            .count()
    }

    /// Requests not kept because `capacity` receipts were already kept.
    pub fn overflow(&self) -> u64 {
        self.shared.overflow.load(Ordering::Relaxed)
    }

    /// Requests without punctual's headers (answered 400).
    pub fn malformed(&self) -> u64 {
        self.shared.malformed.load(Ordering::Relaxed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        lock(&self.shared.flight).held.clear();
        self.shared
            .released
            .send_modify(|generation| *generation += 1);
        self.server.abort();
    }
}

/// A lock that a panicking holder did not leave unusable: the data here are plain records.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps a request unanswered for its sender until it is answered or dropped (the sender hung
/// up, and the server dropped the answer).
struct InFlight {
    shared: Arc<Shared>,
    entry: Option<Unanswered>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(entry) = self.entry {
            lock(&self.shared.flight).remove(entry);
        }
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let received_at = shared.clock.now();
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let parsed = (|| {
        let id_text = header("webhook-id")?;
        let stamped_s: i64 = header("webhook-timestamp")?.parse().ok()?;
        Some((
            id_text,
            id_text.parse::<JobId>().ok()?,
            header("punctual-attempt")?.parse::<u32>().ok()?,
            header("punctual-lease-token")?.parse::<u64>().ok()?,
            Timestamp::parse_rfc3339(header("punctual-scheduled-at")?)?,
            stamped_s,
        ))
    })();
    let Some((id_text, id, attempt, token, scheduled_at, stamped_s)) = parsed else {
        shared.malformed.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    };
    let signature = header("webhook-signature").unwrap_or_default();
    let sender = lock(&shared.senders)
        .iter()
        .find(|(_, secret)| verify(secret, signature, id_text, stamped_s, &body))
        .map(|(sender, _)| *sender);
    let lease_expires_at = header("punctual-lease-expires-at").and_then(Timestamp::parse_rfc3339);
    let receipt = Receipt {
        path: uri.path().trim_start_matches('/').to_owned(),
        id,
        attempt,
        token,
        scheduled_at,
        stamped_s,
        received_at,
        lease_expires_at,
        answered_at: None,
        sender,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let entry = sender.map(|sender| Unanswered { sender, id, token });
    if let Some(entry) = entry {
        lock(&shared.flight).unanswered.push(entry);
    }
    let in_flight = InFlight {
        shared: shared.clone(),
        entry,
    };
    let kept = {
        let mut receipts = lock(&shared.receipts);
        if receipts.len() < shared.capacity {
            receipts.push(receipt);
            Some(receipts.len() - 1)
        } else {
            shared.overflow.fetch_add(1, Ordering::Relaxed);
            None
        }
    };
    let answer = async {
        let delay = Duration::from_micros(shared.delay_us.load(Ordering::Relaxed));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(entry) = in_flight.entry {
            let mut released = shared.released.subscribe();
            let wait = async {
                loop {
                    {
                        let mut flight = lock(&shared.flight);
                        if !flight.held.contains(&entry.sender) {
                            // Answered from here on: `hold` can no longer list it. (The guard's
                            // removal, when it drops, then finds nothing.)
                            flight.remove(entry);
                            return;
                        }
                    }
                    if released.changed().await.is_err() {
                        return;
                    }
                }
            };
            // Past HOLD_MAX the answer goes out anyway, so no request waits without bound.
            if tokio::time::timeout(HOLD_MAX, wait).await.is_err() {
                lock(&shared.flight).remove(entry);
            }
        }
    };
    answer.await;
    if let Some(at) = kept {
        lock(&shared.receipts)[at].answered_at = Some(shared.clock.now());
    }
    StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use punctual_core::SystemClock;

    /// Sends one signed webhook the way a node does, and returns the status.
    async fn send(receiver: &Receiver, path: &str, secret: &str, token: u64) -> u16 {
        let id = "0190f3c2-0000-7000-8000-000000000001";
        let body = b"7".to_vec();
        let stamped = 1_800_000_000_i64;
        let secret = Secret::parse(secret).expect("a secret");
        let signature =
            punctual_server::webhook::sign::signature_header(&[secret], id, stamped, &body);
        let request = format!(
            "POST /{path} HTTP/1.1\r\nhost: x\r\nwebhook-id: {id}\r\nwebhook-timestamp: \
             {stamped}\r\nwebhook-signature: {signature}\r\npunctual-attempt: 2\r\n\
             punctual-lease-token: {token}\r\npunctual-scheduled-at: 2027-01-15T08:00:00.250Z\r\n\
             punctual-lease-expires-at: 2027-01-15T08:00:01.250Z\r\ncontent-length: {}\r\nconnection: close\r\n\r\n7",
            body.len()
        );
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(receiver.address)
            .await
            .expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
            .split(' ')
            .nth(1)
            .and_then(|status| status.parse().ok())
            .expect("a status line")
    }

    #[tokio::test]
    async fn records_receipts_and_names_their_sender_by_signature() {
        let receiver = Receiver::start(Arc::new(SystemClock), 2)
            .await
            .expect("starts");
        let first = receiver.enroll(1);
        let second = receiver.enroll(2);
        assert_eq!(send(&receiver, "once/3", &second, 5).await, 200);
        assert_eq!(send(&receiver, "once/3", &first, 6).await, 200);
        assert_eq!(send(&receiver, "once/3", &Secret::generate(), 7).await, 200);
        let receipts = receiver.receipts();
        assert_eq!(receipts.len(), 2, "capacity");
        assert_eq!(receiver.overflow(), 1);
        assert_eq!(receipts[0].sender, Some(2));
        assert_eq!(receipts[1].sender, Some(1));
        assert_eq!(receipts[0].path, "once/3");
        assert_eq!(receipts[0].attempt, 2);
        assert_eq!(receipts[0].token, 5);
        assert_eq!(receipts[0].body, "7");
        assert_eq!(receipts[0].stamped_s, 1_800_000_000);
        assert_eq!(
            receipts[0].scheduled_at,
            Timestamp::parse_rfc3339("2027-01-15T08:00:00.250Z").expect("a time")
        );
        assert_eq!(
            receipts[0].lease_expires_at,
            Timestamp::parse_rfc3339("2027-01-15T08:00:01.250Z")
        );
        let answered = receipts[0].answered_at.expect("answered");
        assert!(answered >= receipts[0].received_at);
        assert_eq!(receiver.in_flight(1), 0);
    }

    #[tokio::test]
    async fn held_answers_wait_for_their_release() {
        let receiver = Arc::new(
            Receiver::start(Arc::new(SystemClock), 10)
                .await
                .expect("starts"),
        );
        let secret = receiver.enroll(4);
        receiver.hold(4);
        let sending = {
            let receiver = receiver.clone();
            tokio::spawn(async move { send(&receiver, "held", &secret, 1).await })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while receiver.in_flight(4) == 0 {
            assert!(std::time::Instant::now() < deadline, "never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!sending.is_finished());
        assert_eq!(
            receiver.hold(4),
            vec![
                "0190f3c2-0000-7000-8000-000000000001"
                    .parse::<JobId>()
                    .expect("an id")
            ]
        );
        receiver.release(4);
        assert_eq!(sending.await.expect("the sender's task"), 200);
        assert_eq!(receiver.in_flight(4), 0);
    }

    #[tokio::test]
    async fn a_request_without_punctual_s_headers_is_refused_and_counted() {
        let receiver = Receiver::start(Arc::new(SystemClock), 10)
            .await
            .expect("starts");
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(receiver.address)
            .await
            .expect("connect");
        stream
            .write_all(
                b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await
            .expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert_eq!(receiver.malformed(), 1);
        assert!(receiver.receipts().is_empty());
    }
}
