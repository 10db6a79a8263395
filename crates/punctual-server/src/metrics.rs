//! `/metrics` in the Prometheus text format.
//!
//! Counters and histograms are updated as things happen (the engine's events, each webhook
//! answer, each store call through `MeteredStore`, each HTTP request); the job and queue gauges
//! are read from the store when scraped, through `Store::counts` and `Store::queue_stats`, which
//! answer from kept counters and index ranges, never a scan of the jobs, so a scrape stays cheap
//! with millions of jobs stored.
//!
//! Must not block a caller: every update is a few atomic operations.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use punctual::{EngineHealth, Event};
use punctual_core::{QueueStats, StateCount, Timestamp};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    kind: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    fault: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    queue: String,
    state: &'static str,
}

/// A decided occurrence: `fired`, `failed`, or `skipped` with its reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OccurrenceLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

/// How a webhook was answered, for `punctual_webhook_responses_total{class}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookClass {
    Informational,
    Success,
    Redirect,
    ClientError,
    ServerError,
    Timeout,
    ConnectionError,
    /// Not sent: the SSRF guard refused the address.
    Refused,
}

impl WebhookClass {
    pub fn of(status: u16) -> WebhookClass {
        match status {
            100..=199 => WebhookClass::Informational,
            200..=299 => WebhookClass::Success,
            300..=399 => WebhookClass::Redirect,
            400..=499 => WebhookClass::ClientError,
            _ => WebhookClass::ServerError,
        }
    }

    fn label(self) -> &'static str {
        match self {
            WebhookClass::Informational => "1xx",
            WebhookClass::Success => "2xx",
            WebhookClass::Redirect => "3xx",
            WebhookClass::ClientError => "4xx",
            WebhookClass::ServerError => "5xx",
            WebhookClass::Timeout => "timeout",
            WebhookClass::ConnectionError => "connection_error",
            WebhookClass::Refused => "refused",
        }
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Buckets from 0.5 ms to about 65 s, doubling: lateness, request and store latencies.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 18))
}

/// Every metric this node exports.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    lateness: Histogram,
    outcomes: Family<OutcomeLabels, Counter>,
    rescues: Family<StateLabels, Counter>,
    webhook_responses: Family<ClassLabels, Counter>,
    webhook_duration: Histogram,
    store_duration: HistogramFamily<OperationLabels>,
    store_errors: Family<OperationLabels, Counter>,
    jobs: Family<JobLabels, Gauge>,
    due: Family<QueueLabels, Gauge>,
    oldest_due_age: Family<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    engine_faults: Family<FaultLabels, Counter>,
    occurrences: Family<OccurrenceLabels, Counter>,
    schedule_lag: Histogram,
    /// Serialises a scrape's refresh of the gauges with its encoding.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("punctual");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            http_requests.clone(),
        );
        let http_duration: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            http_duration.clone(),
        );
        let lateness = latency_histogram();
        registry.register(
            "job_lateness_seconds",
            "How late jobs started: handler start (or remote claim) minus run_at",
            lateness.clone(),
        );
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "job_outcomes",
            "Finished attempts by kind and outcome (succeeded, retried, dead, lease_lost)",
            outcomes.clone(),
        );
        let rescues = Family::<StateLabels, Counter>::default();
        registry.register(
            "lease_rescues",
            "Expired leases ended by this node's rescuer, by the state the job went to",
            rescues.clone(),
        );
        let webhook_responses = Family::<ClassLabels, Counter>::default();
        registry.register(
            "webhook_responses",
            "Webhook sends by how they were answered (status class, timeout, connection_error, refused)",
            webhook_responses.clone(),
        );
        let webhook_duration = latency_histogram();
        registry.register(
            "webhook_duration_seconds",
            "Time from sending a webhook to its answer",
            webhook_duration.clone(),
        );
        let store_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "store_call_duration_seconds",
            "Time of each store call, by operation",
            store_duration.clone(),
        );
        let store_errors = Family::<OperationLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Store calls that failed, by operation",
            store_errors.clone(),
        );
        let jobs = Family::<JobLabels, Gauge>::default();
        registry.register("jobs", "Stored jobs by queue and state", jobs.clone());
        let due = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "jobs_due",
            "Pending jobs due but not started, by queue (counted up to 10,000 per queue)",
            due.clone(),
        );
        let oldest_due_age =
            Family::<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "queue_oldest_due_age_seconds",
            "How long the oldest due pending job of each queue has been due",
            oldest_due_age.clone(),
        );
        let engine_faults = Family::<FaultLabels, Counter>::default();
        registry.register(
            "engine_faults",
            "Faults the engine survived: loop_panic (a loop panicked and was started again), \
             event_dropped (the event observer was behind), observer_panic",
            engine_faults.clone(),
        );
        let occurrences = Family::<OccurrenceLabels, Counter>::default();
        registry.register(
            "schedule_occurrences",
            "Occurrences of schedules decided by the leader: fired, failed, or skipped with its \
             reason (misfire, overlap, paused, outside_window, clock_change)",
            occurrences.clone(),
        );
        let schedule_lag = latency_histogram();
        registry.register(
            "schedule_lag_seconds",
            "How late the leader decided each schedule's earliest due occurrence (0 when ahead \
             of time)",
            schedule_lag.clone(),
        );
        Metrics {
            registry,
            engine_faults,
            occurrences,
            schedule_lag,
            http_requests,
            http_duration,
            lateness,
            outcomes,
            rescues,
            webhook_responses,
            webhook_duration,
            store_duration,
            store_errors,
            jobs,
            due,
            oldest_due_age,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// Records what the engine reports (called by the engine's observer task): atomics only.
    pub fn observe(&self, event: &Event) {
        match event {
            Event::Started {
                run_at, started_at, ..
            } => self.lateness(*run_at, *started_at),
            Event::Succeeded { kind, .. } => self.outcome(kind.as_str(), "succeeded"),
            Event::Failed { kind, outcome, .. } => self.outcome(
                kind.as_str(),
                match outcome {
                    punctual::FailOutcome::Retry { .. } => "retried",
                    punctual::FailOutcome::Dead => "dead",
                },
            ),
            Event::LeaseLost { kind, .. } => self.outcome(kind.as_str(), "lease_lost"),
            Event::Rescued(outcome) => {
                self.rescues
                    .get_or_create(&StateLabels {
                        state: outcome.state.as_str(),
                    })
                    .inc();
            }
            Event::Occurrences { summary, .. } => self.occurrences(summary),
            _ => {}
        }
    }

    fn occurrences(&self, summary: &punctual::PlanSummary) {
        let count = |outcome, reason| {
            self.occurrences
                .get_or_create(&OccurrenceLabels { outcome, reason })
        };
        if summary.fired > 0 {
            count("fired", "").inc_by(summary.fired);
        }
        for (reason, skipped) in &summary.skipped {
            count("skipped", reason.as_str()).inc_by(*skipped);
        }
        if summary.failed {
            count("failed", "").inc();
        }
        self.schedule_lag.observe(summary.lag.as_secs_f64());
    }

    /// A job started (or was handed to a remote worker) at `started_at`.
    pub fn lateness(&self, run_at: Timestamp, started_at: Timestamp) {
        let late = started_at.micros_since(run_at).max(0);
        self.lateness.observe(late as f64 / 1e6);
    }

    pub fn outcome(&self, kind: &str, outcome: &'static str) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                kind: kind.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn webhook_response(&self, class: WebhookClass, took: Duration) {
        self.webhook_responses
            .get_or_create(&ClassLabels {
                class: class.label(),
            })
            .inc();
        if class != WebhookClass::Refused {
            self.webhook_duration.observe(took.as_secs_f64());
        }
    }

    pub fn http_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn store_call(&self, operation: &'static str, took: Duration, failed: bool) {
        let labels = OperationLabels { operation };
        self.store_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if failed {
            self.store_errors.get_or_create(&labels).inc();
        }
    }

    /// The text exposition, with the job and queue gauges set from what the store said at `now`.
    pub async fn render(
        &self,
        counts: &[StateCount],
        queues: &[QueueStats],
        health: EngineHealth,
        now: Timestamp,
    ) -> String {
        let _scrape = self.scrape.lock().await;
        // The engine keeps these counts; the counters catch up with them (under the scrape
        // lock, so two scrapes do not both add the same difference).
        for (fault, count) in [
            ("loop_panic", health.loop_panics),
            ("event_dropped", health.events_dropped),
            ("observer_panic", health.observer_panics),
        ] {
            let counter = self.engine_faults.get_or_create(&FaultLabels { fault });
            counter.inc_by(count.saturating_sub(counter.get()));
        }
        self.jobs.clear();
        for count in counts {
            let labels = JobLabels {
                queue: count.queue.to_string(),
                state: count.state.as_str(),
            };
            self.jobs
                .get_or_create(&labels)
                .set(i64::try_from(count.count).unwrap_or(i64::MAX));
        }
        self.due.clear();
        self.oldest_due_age.clear();
        for queue in queues {
            let labels = QueueLabels {
                queue: queue.queue.to_string(),
            };
            self.due
                .get_or_create(&labels)
                .set(i64::try_from(queue.due).unwrap_or(i64::MAX));
            let age = queue
                .oldest_due
                .map_or(0.0, |oldest| now.micros_since(oldest).max(0) as f64 / 1e6);
            self.oldest_due_age.get_or_create(&labels).set(age);
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encoding to a String");
        text
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;
    use punctual_core::{JobId, JobState, Kind, LeaseToken, Queue, StateCounts};

    #[tokio::test]
    async fn a_scrape_shows_events_gauges_and_latencies() {
        let metrics = Metrics::new();
        let run_at = Timestamp::from_millis(1_000_000);
        metrics.observe(&Event::Started {
            id: JobId::from_bytes([1; 16]),
            kind: Kind::new("email").expect("valid"),
            attempt: 1,
            attempt_max: 3,
            token: LeaseToken(1),
            run_at,
            started_at: run_at.add(Duration::from_millis(2)),
        });
        metrics.observe(&Event::Succeeded {
            id: JobId::from_bytes([1; 16]),
            kind: Kind::new("email").expect("valid"),
            attempt: 1,
            took: Duration::from_millis(5),
        });
        metrics.observe(&Event::Occurrences {
            name: punctual::ScheduleName::new("nightly").expect("valid"),
            summary: punctual::PlanSummary {
                fired: 2,
                skipped: vec![(punctual::SkipReason::Paused, 5)],
                lag: Duration::from_millis(250),
                failed: false,
            },
        });
        metrics.webhook_response(WebhookClass::of(503), Duration::from_millis(3));
        metrics.http_request("/v1/jobs", "POST", 201, Duration::from_millis(1));
        metrics.store_call("insert", Duration::from_micros(300), false);
        let queue = Queue::new("mail").expect("valid");
        let counts = vec![StateCount {
            queue: queue.clone(),
            state: JobState::Scheduled,
            count: 7,
        }];
        let mut state_counts = StateCounts::default();
        state_counts.add(JobState::Scheduled, 7);
        let queues = vec![QueueStats {
            queue,
            counts: state_counts,
            due: 2,
            oldest_due: Some(run_at),
        }];
        let text = metrics
            .render(
                &counts,
                &queues,
                EngineHealth::default(),
                run_at.add(Duration::from_secs(3)),
            )
            .await;
        for expected in [
            r#"punctual_jobs{queue="mail",state="scheduled"} 7"#,
            r#"punctual_jobs_due{queue="mail"} 2"#,
            r#"punctual_queue_oldest_due_age_seconds{queue="mail"} 3.0"#,
            r#"punctual_job_outcomes_total{kind="email",outcome="succeeded"} 1"#,
            r#"punctual_webhook_responses_total{class="5xx"} 1"#,
            r#"punctual_http_requests_total{route="/v1/jobs",method="POST",status="201"} 1"#,
            "punctual_job_lateness_seconds_count 1",
            r#"punctual_schedule_occurrences_total{outcome="fired",reason=""} 2"#,
            r#"punctual_schedule_occurrences_total{outcome="skipped",reason="paused"} 5"#,
            "punctual_schedule_lag_seconds_count 1",
            r#"punctual_store_call_duration_seconds_count{operation="insert"} 1"#,
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        // A queue that emptied is gone from the next scrape.
        let text = metrics
            .render(
                &[],
                &[],
                EngineHealth {
                    loop_panics: 2,
                    events_dropped: 0,
                    observer_panics: 1,
                },
                run_at,
            )
            .await;
        assert!(!text.contains(r#"queue="mail""#), "{text}");
        // The engine's fault counts are carried over as counters, once each.
        for expected in [
            r#"punctual_engine_faults_total{fault="loop_panic"} 2"#,
            r#"punctual_engine_faults_total{fault="observer_panic"} 1"#,
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        let health = EngineHealth {
            loop_panics: 3,
            ..EngineHealth::default()
        };
        let text = metrics.render(&[], &[], health, run_at).await;
        assert!(
            text.contains(r#"punctual_engine_faults_total{fault="loop_panic"} 3"#),
            "{text}"
        );
    }
}
