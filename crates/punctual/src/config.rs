//! The engine's settings, each bounded, with defaults that suit one node on a small machine.

use std::time::Duration;

use punctual_core::{NodeId, Queue, limits};

/// The default `Config::leader_lease`: short enough that a dead leader's duties resume within
/// seconds, long enough that a busy database's slow renewal does not depose a live one.
const LEADER_LEASE: Duration = Duration::from_secs(10);

/// How a `Scheduler` runs. Build with `Config::default()` and adjust fields.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's name, recorded as the holder of its leases.
    pub node: NodeId,
    /// Serve only these queues; `None` serves all.
    pub queues: Option<Vec<Queue>>,
    /// Most handlers running (or claimed and waiting for their `run_at`) at once on this node.
    pub concurrency: usize,
    /// Most jobs taken by one claim.
    pub claim_batch: usize,
    /// Claim jobs this long before their `run_at`, so the handler can start on time.
    pub claim_ahead: Duration,
    /// How long a claim holds a job before another node may rescue it.
    pub lease: Duration,
    /// How often a running job renews its lease (well under `lease`).
    pub heartbeat: Duration,
    /// Longest sleep of the dispatcher when it knows of nothing due (catches jobs inserted by
    /// other processes; a local `schedule` wakes it at once).
    pub poll_max: Duration,
    /// How long this node's leadership lasts without a renewal. Leader duties (rescue, purge)
    /// run on one node at a time, elected through the store; when the leader dies, another node
    /// takes over within about `leader_lease + leader_renew`.
    pub leader_lease: Duration,
    /// How often this node asks to lead, or renews its leadership (well under `leader_lease`).
    pub leader_renew: Duration,
    /// How often the leader looks for expired leases.
    pub rescue_interval: Duration,
    /// How long finished jobs are kept before they are purged.
    pub retention: Duration,
    /// How often the leader purges.
    pub purge_interval: Duration,
    /// How long before its time an occurrence of a schedule is inserted as a job (by the
    /// leader), so that it is claimed and starts on time. A change to a schedule (pause,
    /// update, delete) applies to the occurrences not yet inserted.
    pub schedule_ahead: Duration,
    /// How often the leader looks for schedules due.
    pub schedule_tick: Duration,
    /// How long a schedule's ledger entries are kept.
    pub occurrence_retention: Duration,
    /// How long a handler may run before it is cancelled and its attempt fails with a timeout
    /// error; `None` (the default) lets it run as long as it renews its lease. A kind's own
    /// timeout (`SchedulerBuilder::timeout`) takes precedence.
    pub handler_timeout: Option<Duration>,
    /// On `stop`, how long running handlers may take to finish before they are told to cancel.
    pub grace: Duration,
    /// Most events queued for the observer; beyond it events are dropped and counted.
    pub event_buffer: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            node: default_node(),
            queues: None,
            concurrency: 64,
            claim_batch: 1_000,
            claim_ahead: Duration::from_millis(100),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll_max: Duration::from_secs(1),
            leader_lease: LEADER_LEASE,
            leader_renew: LEADER_LEASE / 3,
            rescue_interval: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(60),
            schedule_ahead: Duration::from_secs(2),
            schedule_tick: Duration::from_millis(250),
            occurrence_retention: Duration::from_secs(30 * 24 * 3600),
            handler_timeout: None,
            grace: Duration::from_secs(10),
            event_buffer: 65_536,
        }
    }
}

impl Config {
    /// Clamps every setting into a sane range and keeps them consistent with each other.
    pub(crate) fn normalised(mut self) -> Config {
        self.concurrency = self.concurrency.clamp(1, 100_000);
        self.claim_batch = self.claim_batch.clamp(1, limits::CLAIM_BATCH_MAX);
        self.claim_ahead = self.claim_ahead.min(Duration::from_secs(10));
        self.lease = self.lease.clamp(limits::LEASE_MIN, limits::LEASE_MAX);
        self.heartbeat = self
            .heartbeat
            .clamp(Duration::from_millis(10), self.lease / 2);
        self.poll_max = self
            .poll_max
            .clamp(Duration::from_millis(10), Duration::from_secs(60));
        self.leader_lease = self
            .leader_lease
            .clamp(limits::LEASE_MIN, limits::LEASE_MAX);
        self.leader_renew = self
            .leader_renew
            .clamp(Duration::from_millis(10), self.leader_lease / 2);
        self.rescue_interval = self
            .rescue_interval
            .clamp(Duration::from_millis(10), Duration::from_secs(60));
        self.purge_interval = self
            .purge_interval
            .clamp(Duration::from_millis(100), Duration::from_secs(3600));
        self.schedule_tick = self
            .schedule_tick
            .clamp(Duration::from_millis(10), Duration::from_secs(60));
        // At least a tick and the claim's lead, so an occurrence is inserted before it is due.
        self.schedule_ahead = self.schedule_ahead.clamp(
            self.schedule_tick + self.claim_ahead,
            Duration::from_secs(3600),
        );
        self.occurrence_retention = self.occurrence_retention.clamp(
            Duration::from_secs(60),
            Duration::from_secs(10 * 366 * 24 * 3600),
        );
        self.handler_timeout = self
            .handler_timeout
            .map(|timeout| timeout.max(Duration::from_millis(1)));
        self.grace = self.grace.min(Duration::from_secs(3600));
        self.event_buffer = self.event_buffer.clamp(1, 1 << 20);
        self
    }
}

fn default_node() -> NodeId {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "node".to_owned());
    let name: String = format!("{host}-{}", std::process::id())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(limits::NODE_BYTES_MAX)
        .collect();
    // The filter above leaves only allowed characters and the pid makes it non-empty.
    NodeId::new(&name).unwrap_or_else(|_| NodeId::new("node").expect("a valid literal"))
}
