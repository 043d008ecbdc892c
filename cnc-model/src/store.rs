//! The store contract: [`DbController`].
//!
//! # Concurrency contract
//!
//! * Every method takes `&self` and may be called from many tasks at once.
//! * Writes (`apply`, `set_worker_info`, schedule CRUD, `cleanup`, `purge`)
//!   are serialised by the adapter. celery-cnc itself sends all event writes
//!   through one ingest task, so `apply` is never contended in practice, but
//!   an adapter must stay correct if it is.
//! * A batch given to `apply` is atomic: readers see all of it or none of it,
//!   and an error leaves the store exactly as before the call.
//! * Reads see committed batches only, and never wait for a writer longer
//!   than one statement (SQLite WAL readers, PostgreSQL MVCC).
//! * Full-text search may trail `apply` by at most
//!   [`StoreInfo::search_lag`] (2 s for SQLite); every other read reflects a
//!   batch as soon as `apply` returns.
//! * No method holds a lock across an `.await` of another component.

//!
//! # Semantics every adapter shares (the conformance suite checks them)
//!
//! * **Fold.** Task and worker state come from [`crate::fold`] only. An
//!   adapter loads the current row, calls the fold, and writes the result.
//! * **Validation.** [`check_event`] decides what is skipped (and why);
//!   skipped events are counted in [`ApplyReport::skipped`], never fail a batch.
//! * **Duplicates.** A task event whose [`crate::model::TaskEvent::dedup_key`]
//!   is already stored is skipped as [`SkipReason::Duplicate`] and not folded
//!   again. Worker events are not stored one by one (only status transitions
//!   are), and folding a repeated worker event is harmless.
//! * **Seen order.** Each task gets a sequence number when it is first
//!   created; [`crate::model::TaskSortField::Seen`] (the default, "newest
//!   first") orders by it. Within one batch, tasks are created in event order.
//! * **Filters** are those of [`crate::model::TaskFilter::matches`]: states
//!   (any of), exact worker, case-insensitive substring of the name,
//!   `created_at` in `[from, to)`, case-insensitive substring of
//!   [`crate::model::Task::search_text`] (name, args, kwargs, result,
//!   exception), exact root/group/parent id. All set filters must hold.
//! * **Paging.** `limit` is capped at [`crate::model::TaskQuery::MAX_LIMIT`].
//!   `offset` skips rows. `cursor` (opaque, from `next_cursor`) continues
//!   after the last row of the previous page; it is only valid with the
//!   default sort and without `offset` (else [`StoreErrorKind::InvalidInput`]).
//!   `next_cursor` is `Some` whenever the page is full (it may lead to an
//!   empty page) and `None` when the page has fewer than `limit` rows.
//!   Ties in non-default sorts are broken by seen order, descending.
//! * **Events of a task**: oldest first by timestamp, then clock. `fields`
//!   holds the event's JSON without `type`, `uuid`, `hostname`, `timestamp`,
//!   `clock`, `name`, `args` and `kwargs` (those are on the task).
//! * **Relations**: every task whose `root_id` is the root, plus the root
//!   itself, ordered by `created_at` then seen order.
//! * **Runtime stats**: tasks with a runtime; scope name and worker exact,
//!   `time` on `succeeded_at`. Percentiles by nearest rank
//!   ([`crate::model::RuntimeStats::from_runtimes`]).
//! * **Throughput**: `bucket_seconds` must be a positive multiple of 60. One
//!   bucket per `start = floor(from / w) * w + i * w` while `start < to`,
//!   ascending, empty buckets included. A task counts in the bucket of its
//!   `finished_at()` under its current final state; `retried` counts
//!   `task-retried` events by their timestamp. Scope name/worker apply to the
//!   task's current name/worker; `scope.time` is ignored (use `from`/`to`).
//! * **Distributions** (state, name): scope `time` on `created_at`. States in
//!   [`crate::model::TaskState::ALL`] order, zero counts omitted; names by
//!   count descending, then name ascending. `task_names` is the unscoped
//!   name distribution.
//! * **Heatmap**: finished tasks by `finished_at()`; scope `time` on it too.
//! * **Retention**: `cleanup(t)` removes tasks with `updated_at < t` with
//!   their events, worker status changes older than `t`, and aggregates of
//!   minutes before `t`. Workers stay (see `prune_workers`).
//! * **Purge** removes tasks, events, workers, history and aggregates, not
//!   schedules.
//! * **Text.** Any Unicode round-trips, including payloads of 1 MB and more.
//!   PostgreSQL cannot store NUL in text: its adapter replaces U+0000 with
//!   U+FFFD, and the suite accepts exactly that substitution.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{
    Event, Heatmap, NameCount, RuntimeStats, Schedule, StateCount, StatsQuery, StoredEvent, Task,
    TaskPage, TaskQuery, TaskRelation, ThroughputBucket, ThroughputQuery, Timestamp, Worker,
    WorkerStatusChange,
};

/// The schema version this build of celery-cnc writes.
pub const SCHEMA_VERSION: u32 = 4;

/// What kind of failure a store reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The database is locked or busy beyond the adapter's wait.
    Busy,
    /// The disk or the database is full.
    Full,
    /// The database schema is newer than this build understands.
    SchemaTooNew,
    /// A migration failed.
    Migration,
    /// A query argument is invalid (bad cursor, bad range...).
    InvalidInput,
    /// The adapter cannot do this.
    Unsupported,
    /// Connection failure (network databases).
    Connection,
    /// The store was closed.
    Closed,
    /// Data in the store could not be read back.
    Corrupt,
    /// Anything else from the driver.
    Backend,
}

/// A store error: a kind to match on, a readable message, and the driver
/// error as `source` (never part of the public type).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl StoreError {
    /// A new error.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the underlying driver error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Shorthand for an [`StoreErrorKind::InvalidInput`] error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::InvalidInput, message)
    }

    /// Shorthand for an [`StoreErrorKind::Unsupported`] error.
    pub fn unsupported(what: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Unsupported, what)
    }
}

/// Result of store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// What a store is and what it can do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreInfo {
    /// Adapter name (`memory`, `sqlite`, `postgres`).
    pub backend: String,
    /// Where the data lives, with any password redacted.
    pub location: String,
    /// How long full-text search may trail `apply`.
    pub search_lag: Duration,
    /// Data survives a restart.
    pub persistent: bool,
    /// Several celery-cnc instances may share it.
    pub shared: bool,
}

/// Why an event in a batch was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SkipReason {
    /// A task event with an empty task id.
    MissingTaskId,
    /// A worker event with an empty hostname.
    MissingHostname,
    /// Timestamp missing, negative, NaN or absurdly far in the future.
    BadTimestamp,
    /// Already applied (same event key).
    Duplicate,
    /// An event type the store does not keep.
    UnknownType,
}

impl SkipReason {
    /// Stable label for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingTaskId => "missing_task_id",
            Self::MissingHostname => "missing_hostname",
            Self::BadTimestamp => "bad_timestamp",
            Self::Duplicate => "duplicate",
            Self::UnknownType => "unknown_type",
        }
    }
}

/// What one `apply` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Events folded in.
    pub applied: u64,
    /// Tasks created.
    pub tasks_created: u64,
    /// Tasks updated (created ones excluded).
    pub tasks_updated: u64,
    /// Workers created or updated.
    pub workers_touched: u64,
    /// Events skipped, by reason.
    pub skipped: Vec<(SkipReason, u64)>,
    /// Ids of tasks created or changed, in first-touched order (for live updates).
    pub changed_tasks: Vec<String>,
    /// Worker status transitions caused by the batch.
    pub worker_changes: Vec<WorkerStatusChange>,
}

impl ApplyReport {
    /// Count one skipped event.
    pub fn skip(&mut self, reason: SkipReason) {
        match self.skipped.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.skipped.push((reason, 1)),
        }
    }

    /// Events skipped for `reason`.
    pub fn skipped_for(&self, reason: SkipReason) -> u64 {
        self.skipped
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// Events skipped in total.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().map(|(_, n)| n).sum()
    }
}

/// Validate an event before folding: returns why it must be skipped, if so.
/// Shared by every adapter so they skip the same things.
pub fn check_event(event: &Event) -> Option<SkipReason> {
    // Ten years ahead of 2026 is a broken clock, not a timestamp.
    const LATEST: f64 = 2_100_000_000.0;
    let ts = event.timestamp();
    let bad_ts = !ts.is_finite() || ts <= 0.0 || ts > LATEST;
    match event {
        Event::Task(e) if e.uuid.trim().is_empty() => Some(SkipReason::MissingTaskId),
        Event::Worker(e) if e.hostname.trim().is_empty() => Some(SkipReason::MissingHostname),
        Event::Unknown(_) => Some(SkipReason::UnknownType),
        _ if bad_ts => Some(SkipReason::BadTimestamp),
        _ => None,
    }
}

/// What `cleanup` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    /// Tasks removed.
    pub tasks: u64,
    /// Task events removed.
    pub events: u64,
    /// Worker history rows removed.
    pub worker_history: u64,
}

/// The store behind celery-cnc. Implement it to keep history somewhere else;
/// run [`crate::testkit`] (feature `testkit`) to check an implementation.
///
/// All timestamps are epoch seconds (UTC). See the module docs for the
/// concurrency contract.
#[async_trait]
pub trait DbController: Send + Sync + Debug + 'static {
    /// What this store is.
    fn info(&self) -> StoreInfo;

    /// Create the schema or migrate it to [`SCHEMA_VERSION`]. Refuses (with
    /// [`StoreErrorKind::SchemaTooNew`]) a database written by a newer build.
    /// Idempotent.
    async fn initialize(&self) -> StoreResult<()>;

    /// The schema version stored in the database (0 = empty database).
    async fn schema_version(&self) -> StoreResult<u32>;

    /// Run the migrations from version `from` to version `to` (`from < to <=
    /// SCHEMA_VERSION`), in one transaction where the backend allows.
    async fn migrate(&self, from: u32, to: u32) -> StoreResult<()>;

    /// Fold a batch of events into the store, atomically. Duplicate events
    /// (same [`crate::model::TaskEvent::dedup_key`]) are skipped, so applying
    /// a batch twice changes nothing. Malformed events are skipped and counted
    /// in the report; they never fail the batch.
    async fn apply(&self, events: &[Event]) -> StoreResult<ApplyReport>;

    /// One task by id.
    async fn task(&self, id: &str) -> StoreResult<Option<Task>>;

    /// A page of tasks matching a query.
    async fn tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage>;

    /// Number of tasks matching a filter (may be slow on huge stores: the UI
    /// uses it sparingly).
    async fn count_tasks(&self, filter: &crate::model::TaskFilter) -> StoreResult<u64>;

    /// The stored events of a task, oldest first.
    async fn task_events(&self, id: &str) -> StoreResult<Vec<StoredEvent>>;

    /// Every task of the workflow rooted at `root_id` (including the root),
    /// oldest first.
    async fn relations(&self, root_id: &str) -> StoreResult<Vec<TaskRelation>>;

    /// All known workers, by hostname.
    async fn workers(&self) -> StoreResult<Vec<Worker>>;

    /// One worker.
    async fn worker(&self, hostname: &str) -> StoreResult<Option<Worker>>;

    /// A worker's status transitions, newest first, at most `limit`.
    async fn worker_history(
        &self,
        hostname: &str,
        limit: u32,
    ) -> StoreResult<Vec<WorkerStatusChange>>;

    /// Store inspect results (stats, queues, registered tasks, conf) for a
    /// worker; creates the worker if unknown.
    async fn set_worker_info(
        &self,
        hostname: &str,
        info: serde_json::Value,
        at: Timestamp,
    ) -> StoreResult<()>;

    /// Remove workers that have been offline since before `offline_before`,
    /// with their history. Returns how many were removed.
    async fn prune_workers(&self, offline_before: Timestamp) -> StoreResult<u64>;

    /// Distinct task names seen, with counts, most frequent first.
    async fn task_names(&self) -> StoreResult<Vec<NameCount>>;

    /// Exact runtime statistics of tasks with a runtime, for a scope.
    async fn runtime_stats(&self, query: &StatsQuery) -> StoreResult<RuntimeStats>;

    /// Finished tasks per time bucket.
    async fn throughput(&self, query: &ThroughputQuery) -> StoreResult<Vec<ThroughputBucket>>;

    /// Tasks per state for a scope (states with no task are omitted).
    async fn state_distribution(&self, query: &StatsQuery) -> StoreResult<Vec<StateCount>>;

    /// Tasks per name for a scope, most frequent first.
    async fn name_distribution(&self, query: &StatsQuery) -> StoreResult<Vec<NameCount>>;

    /// Finished tasks by weekday and hour (UTC) for a scope.
    async fn heatmap(&self, query: &StatsQuery) -> StoreResult<Heatmap>;

    /// All beat schedules, by name.
    async fn schedules(&self) -> StoreResult<Vec<Schedule>>;

    /// One schedule.
    async fn schedule(&self, name: &str) -> StoreResult<Option<Schedule>>;

    /// Create or replace a schedule (by name).
    async fn upsert_schedule(&self, schedule: &Schedule) -> StoreResult<()>;

    /// Delete a schedule; true if it existed.
    async fn delete_schedule(&self, name: &str) -> StoreResult<bool>;

    /// Delete every schedule (`delete_schedules_on_boot`). Returns how many.
    async fn delete_all_schedules(&self) -> StoreResult<u64>;

    /// Retention: remove tasks whose last update is older than `older_than`
    /// (and their events), and worker history older than it.
    async fn cleanup(&self, older_than: Timestamp) -> StoreResult<CleanupReport>;

    /// Remove every task, event, worker and aggregate (schedules stay): the
    /// purge-on-boot flag.
    async fn purge(&self) -> StoreResult<()>;

    /// Flush and release resources. Later calls fail with
    /// [`StoreErrorKind::Closed`].
    async fn close(&self) -> StoreResult<()>;
}
