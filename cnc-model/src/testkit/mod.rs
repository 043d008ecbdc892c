//! The [`DbController`] conformance suite: the store contract of
//! [`crate::store`], executable.
//!
//! Every adapter (memory, SQLite, PostgreSQL, and third-party ones) runs the
//! same checks. An adapter provides a [`StoreFactory`] that hands out a new,
//! empty, not yet initialised store per call (PostgreSQL gives each call its
//! own schema, SQLite its own file), and expands [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! // tests/conformance_mystore.rs
//! struct Factory;
//! #[async_trait::async_trait]
//! impl cnc_model::testkit::StoreFactory for Factory {
//!     async fn fresh(&self) -> std::sync::Arc<dyn cnc_model::DbController> {
//!         std::sync::Arc::new(MyStore::new())
//!     }
//! }
//! cnc_model::conformance_tests!(Factory);
//! ```
//!
//! That gives one `#[test]` per check (each on its own two-thread tokio
//! runtime), so a failure names the rule that broke. The checks are also
//! plain `pub async fn`s in [`checks`], for adapters that want to run a
//! subset or their own harness.
//!
//! # How the checks decide what is right
//!
//! A check never compares an adapter with itself. It feeds the adapter
//! events (hand-written scenarios, or streams from [`generator`]), feeds the same
//! events to [`reference::Reference`], a plain model built on
//! [`crate::fold`], [`crate::store::check_event`], [`crate::TaskFilter::matches`]
//! and [`crate::RuntimeStats::from_runtimes`], and compares. Scenarios with an
//! obvious answer also assert it literally (a late `task-started` leaves a
//! task in SUCCESS), so a bug shared by the model and an adapter still shows.
//!
//! # Readings of the contract the suite enforces
//!
//! Where `store.rs` leaves room, the suite picks the reading below, and the
//! in-memory store (`cnc_store::memory`) implements the same:
//!
//! * **Sorts.** Non-default sorts put tasks without the sort value (no
//!   `received_at`, `started_at`, `runtime` or name) last in both
//!   directions; names compare by bytes (PostgreSQL: `COLLATE "C"`). Ties:
//!   seen order, descending, as written.
//! * **Cursors.** `next_cursor` is checked (Some exactly when the page is
//!   full) for the default sort only, with or without `offset`; a cursor
//!   that no adapter could have produced is `InvalidInput`.
//! * **Throughput.** A task counts in the bucket whose `[start, start + w)`
//!   holds its finish time, even when that is before `from` in the first
//!   bucket or at/after `to` in the last: buckets are whole (per-minute
//!   aggregates cannot split a minute anyway). An unaligned `from == to`
//!   therefore gives one bucket; an aligned one gives none. After
//!   `cleanup(t)`, throughput is compared from `t` on only.
//! * **ApplyReport.** `applied` counts folded task *and* worker events;
//!   `tasks_updated` and `workers_touched` count distinct tasks and workers;
//!   `changed_tasks` lists each task once; repeated worker events are folded
//!   again (and counted as applied), never `Duplicate`.
//! * **Workers.** Only worker events create workers (a task event's
//!   hostname does not); `set_worker_info` on an unknown host creates
//!   `Worker::new(hostname, at)` with the info set.
//! * **Stored events.** `null` values in `fields` are ignored; every other
//!   key must be there, and nothing else.
//! * **Errors.** `migrate` beyond [`crate::SCHEMA_VERSION`] may fail as
//!   `InvalidInput`, `Migration` or `SchemaTooNew`.
//!
//! Not checked (cannot be observed generically): that an `apply` error
//! leaves the store unchanged, `SchemaTooNew` from `initialize`, how long
//! readers wait for a writer, and `prune_workers` on a worker that was never
//! online.
//!
//! # Running
//!
//! ```text
//! cargo test -p cnc-store --no-default-features --features memory --test conformance_memory
//! cargo test -p cnc-store --test conformance_memory -- check_search   # one check
//! ```
//!
//! [`generator`] and [`reference`](mod@reference) are public too: benches use the
//! generator for realistic load, adapter tests use the model for their own
//! expectations.

use std::future::Future;
use std::sync::Arc;

use crate::store::DbController;

/// Re-exported so an adapter's test file can implement [`StoreFactory`]
/// without its own `async-trait` dependency.
pub use async_trait::async_trait;

pub mod checks;
pub mod generator;
pub mod reference;

/// Hands out stores to check.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    /// A new, empty store that nobody else uses, not yet initialised
    /// (`schema_version()` is 0 until the check calls `initialize`).
    async fn fresh(&self) -> Arc<dyn DbController>;
}

/// Run a check on a new multi-thread tokio runtime with two workers. Used by
/// [`conformance_tests!`](crate::conformance_tests); panics if the runtime cannot be built.
#[doc(hidden)]
pub fn run<F: Future<Output = ()>>(check: F) {
    #[allow(clippy::expect_used)]
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("conformance suite: cannot build a tokio runtime");
    runtime.block_on(check);
}

/// Expand to one `#[test]` per conformance check, each with a fresh factory.
///
/// The argument is an expression evaluated inside each test's async block
/// (so it may `.await`) whose value implements [`StoreFactory`]:
///
/// ```ignore
/// cnc_model::conformance_tests!(MyFactory::default());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::__conformance_tests! { $factory;
            check_initialize_and_schema_version,
            check_migrate_step_by_step,
            check_apply_and_get_task,
            check_state_transitions,
            check_out_of_order_stream,
            check_duplicates,
            check_malformed_events_skipped,
            check_seen_order,
            check_filters,
            check_sorts,
            check_offset_paging,
            check_cursor_paging,
            check_limit_cap,
            check_invalid_queries,
            check_search,
            check_task_events,
            check_relations,
            check_workers_and_history,
            check_set_worker_info,
            check_prune_workers,
            check_task_names,
            check_runtime_stats,
            check_throughput,
            check_distributions,
            check_heatmap,
            check_schedules,
            check_cleanup,
            check_purge_keeps_schedules,
            check_close,
            check_unicode_round_trip,
            check_large_payload,
            check_concurrent_readers,
        }
    };
}

/// Implementation detail of [`conformance_tests!`](crate::conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($factory:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::testkit::run(async {
                    let factory = $factory;
                    $crate::testkit::checks::$check(&factory).await;
                });
            }
        )*
    };
}
