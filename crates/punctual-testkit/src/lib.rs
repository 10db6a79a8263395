//! punctual's test kit: `MemoryStore` (the reference model of the `Store` contract), clocks that
//! tests control, shared fixtures, and the store conformance suite every backend runs.
//!
//! The conformance suite is the executable definition of the `Store` contract: a behaviour change
//! lands here first, then in every backend. A backend runs it from its `tests/it/main.rs`:
//!
//! ```text
//! async fn make_store() -> Option<punctual_testkit::StoreUnderTest> {
//!     // A fresh, empty store per call; `None` skips the test (say why, loudly).
//! }
//! punctual_testkit::store_conformance_suite!(make_store);
//! ```
//!
//! The backend's test crate needs `tokio` (the suite's tests are `#[tokio::test]`s).
//!
//! This crate must not depend on any backend, nor read the system clock: every test starts at
//! `fixtures::NOW` and moves time explicitly, and never sleeps.

use std::any::Any;
use std::sync::Arc;

use punctual_core::Store;

mod clock;
pub mod conformance;
pub mod fixtures;
mod memory;
pub mod model;
pub mod small_disk;

pub use clock::{ManualClock, TokioClock};
pub use memory::MemoryStore;

/// Says loudly that `test` is skipped because `why`, or fails it under `CI=true`, where every
/// test must run (for tests that need root, a mount or a service the machine may lack).
pub fn skip_unless_ci(test: &str, why: &str) {
    use std::io::Write;
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} cannot run, and CI=true: {why}"
    );
    // Straight to stderr: the harness captures the output of passing tests.
    let _ = writeln!(std::io::stderr(), "\nSKIPPED: {test}: {why}\n");
}

/// A store handed to one conformance test, with whatever must outlive it (a temporary
/// directory, a database schema to drop). The guard is dropped after the test.
pub struct StoreUnderTest {
    pub store: Arc<dyn Store>,
    pub guard: Box<dyn Any + Send>,
}

impl StoreUnderTest {
    pub fn new(store: Arc<dyn Store>) -> StoreUnderTest {
        StoreUnderTest::with_guard(store, ())
    }

    pub fn with_guard(store: Arc<dyn Store>, guard: impl Any + Send) -> StoreUnderTest {
        StoreUnderTest {
            store,
            guard: Box::new(guard),
        }
    }
}

/// Expands to `mod conformance { ... }` with one `#[tokio::test]` per behaviour of
/// `punctual_testkit::conformance`, plus `matches_memory_model` over `model::SEEDS`.
///
/// `$make_store` names an `async fn() -> Option<StoreUnderTest>` in the invoking module. It must
/// return a fresh, empty store on every call; `None` skips the test.
#[macro_export]
macro_rules! store_conformance_suite {
    ($make_store:ident) => {
        $crate::__store_conformance_tests!(
            $make_store;
            insert_then_get_round_trips_every_field,
            insert_is_all_or_none_on_a_duplicate_id,
            insert_refuses_a_batch_over_the_limit,
            insert_refuses_an_invalid_job,
            claim_returns_nothing_when_nothing_is_due,
            claim_respects_due_by_limit_and_queue_filter,
            claim_takes_only_the_requested_kinds,
            claim_orders_by_priority_then_run_at_then_id,
            claim_never_hands_one_job_to_two_holders,
            claim_counts_the_attempt_and_grants_a_lease,
            claim_clamps_the_lease_into_its_limits,
            lease_tokens_never_repeat_for_a_job,
            stale_token_is_refused_and_changes_nothing,
            complete_marks_the_job_succeeded,
            complete_is_idempotent_for_its_holder,
            fail_with_retry_sets_retrying_run_at_and_error,
            fail_dead_keeps_the_error,
            fail_keeps_an_error_with_a_nul_byte,
            release_hands_back_without_counting_the_attempt,
            extend_lease_moves_the_expiry_and_keeps_the_job_from_rescue,
            rescue_ends_expired_leases_only,
            rescue_retries_with_backoff_and_records_the_lost_lease,
            rescue_marks_dead_when_attempts_are_exhausted,
            rescue_respects_its_limit_oldest_expiry_first,
            cancel_ends_a_pending_job,
            cancel_ends_a_running_job_and_its_holder_loses_the_lease,
            cancel_of_a_finished_job_is_a_conflict,
            reschedule_moves_a_pending_job,
            reschedule_revives_a_dead_or_cancelled_job,
            reschedule_refuses_a_running_or_succeeded_job,
            reschedule_refuses_a_run_at_out_of_range,
            recurring_job_stores_its_next_occurrence_once,
            recurring_job_after_downtime_runs_once_then_resumes_in_the_future,
            next_due_finds_the_earliest_pending_job,
            next_due_sees_only_the_requested_kinds,
            claim_and_next_due_of_kinds_pass_over_many_jobs_of_other_kinds,
            claim_and_next_due_of_kinds_in_queues_match_both_filters,
            next_lease_expiry_finds_the_earliest_lease,
            list_filters_by_queue_state_and_kind,
            list_pages_visit_every_job_exactly_once,
            list_caps_the_page_size,
            counts_by_queue_and_state,
            purge_finished_deletes_only_old_finished_jobs_and_respects_its_limit,
            the_first_node_to_ask_leads_with_term_one,
            a_second_node_is_refused_while_the_leaders_lease_is_live,
            renewal_keeps_the_term_and_moves_the_expiry,
            after_expiry_another_node_takes_over_with_a_larger_term,
            a_deposed_leaders_rescue_and_purge_are_refused_and_change_nothing,
            resign_lets_another_node_lead_at_once,
            unknown_ids_give_not_found,
            large_payload_round_trips,
            list_filters_by_due_range,
            counts_stay_exact_across_every_transition,
            queue_stats_reports_counts_due_and_oldest_due,
            queue_stats_caps_the_due_count,
            insert_idempotent_inserts_then_replays_the_first_record,
            insert_idempotent_replaces_an_expired_record,
            insert_idempotent_refuses_an_invalid_record,
            insert_idempotent_keeps_no_record_when_the_batch_fails,
            purge_idempotency_is_fenced_and_limited,
            insert_token_then_get_round_trips_and_a_taken_id_is_refused,
            insert_token_refuses_an_invalid_token,
            list_tokens_pages_in_id_order_and_caps_the_page,
            revoke_token_is_idempotent_and_keeps_the_first_time,
            schedule_create_then_get_round_trips_every_field,
            schedule_create_is_stale_when_its_name_or_id_is_taken,
            schedule_write_is_stale_when_the_version_moved,
            schedule_update_of_a_deleted_schedule_is_stale,
            schedule_rename_onto_another_schedules_name_is_stale,
            schedule_write_inserts_its_jobs_and_counts_them,
            schedule_write_whose_job_id_is_taken_is_stale_and_the_rest_of_the_batch_applies,
            list_occurrences_pages_newest_first_with_increasing_seqs,
            every_occurrence_outcome_round_trips,
            ledger_extend_grows_only_a_skip_of_the_same_schedule,
            schedule_write_cancels_an_unfinished_job_and_leaves_a_finished_one,
            schedule_write_with_a_fence_needs_the_current_term,
            schedule_write_refuses_an_invalid_batch_and_writes_nothing,
            due_schedules_are_those_to_check_by_then_earliest_first,
            due_schedules_carry_the_last_jobs_state_and_the_latest_entry,
            list_schedules_pages_in_name_order,
            list_and_due_schedules_cap_what_they_return,
            delete_schedule_removes_it_and_its_ledger_and_keeps_its_jobs,
            purge_occurrences_is_fenced_and_deletes_the_oldest_first,
        );
    };
}

/// The body of `store_conformance_suite!`; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_tests {
    ($make_store:ident; $($behaviour:ident),* $(,)?) => {
        mod conformance {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    let Some(under_test) = super::$make_store().await else {
                        return;
                    };
                    $crate::conformance::$behaviour(under_test.store.clone()).await;
                    drop(under_test);
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn matches_memory_model() {
                for seed in $crate::model::SEEDS {
                    let Some(under_test) = super::$make_store().await else {
                        return;
                    };
                    $crate::model::matches_memory_model(under_test.store.clone(), seed).await;
                    drop(under_test);
                }
            }
        }
    };
}
