//! PostgreSQL store: the scale-out [`DbController`] for several celery-cnc
//! instances sharing one database.
//!
//! # Design notes (and why)
//!
//! * **Pool and schema.** A deadpool-postgres pool of tokio-postgres
//!   connections (no TLS). An optional schema name isolates one installation
//!   (or one test) from another: it is created by [`DbController::initialize`]
//!   and set as the `search_path` of every connection through the startup
//!   `options`, so no statement names it and no per-connection hook is
//!   needed. Schema names are restricted to `[a-z_][a-z0-9_]*`, which is what
//!   makes passing them in the startup packet safe.
//! * **Passwords** never leave [`PostgresConfig`]: `Debug`, error messages and
//!   [`StoreInfo::location`] use [`redact_url`], and driver errors (which do
//!   not contain the password) are only ever a `source`.
//! * **Versioned SQL migrations** (`migrations/v1.sql` to `v4.sql`), each run in
//!   the same transaction as the `schema_version` row it writes, under a
//!   transaction-scoped advisory lock so two instances starting together
//!   migrate once. v2 adds the pre-aggregated statistics and moves the
//!   search text to a side table indexed in the background (see `v2.sql`);
//!   v3 adds the (worker, state, seq) index for the task list's filter pairs;
//!   v4 a covering (name, succeeded_at) index for runtime statistics.
//! * **`apply`**: one transaction per batch, fold in Rust with
//!   [`cnc_model::fold`], set-based writes (`unnest` arrays, one statement per
//!   table, not per row). De-duplication is the events table's primary key
//!   (`ON CONFLICT DO NOTHING RETURNING`). Lock order is always: event keys,
//!   then task rows, then aggregate rows, workers, each sorted, so two
//!   instances writing overlapping batches cannot deadlock. See `apply.rs`.
//! * **Reads** see committed batches only (MVCC) and never wait for a writer.
//!   The task list is built with sea-query; every filter has an index ending
//!   in the seen order (`seq`), fuzzy search is a trigram GIN index on the
//!   lower-cased text of the `task_search` side table, joined by `seq`
//!   (`LIKE`, not `ILIKE`: the text is lower-cased
//!   in Rust with the same `to_lowercase` the reference filter uses, so
//!   non-ASCII case folding agrees exactly with the memory store, whatever the
//!   database's collation).
//! * **Search off the write path.** Maintaining the trigram GIN index was
//!   about three quarters of `apply`: on the 2-core dev machine (shared,
//!   loaded) 200k generated events in batches of 1,000 ran at about
//!   3.5-4k events/s with it in the batch and about 9.4k events/s without it
//!   (`write_throughput` in `tests/postgres.rs`). `fastupdate = off` is 5x
//!   slower; a larger pending list barely helps. So `apply` only queues
//!   changed tasks in `search_pending` (same transaction: durable), and a
//!   background tokio task per initialized store fills `task_search` every
//!   200 ms: final tasks at once, others after 1.2 s so most tasks are
//!   indexed once. Instances sharing the database split the queue with
//!   `FOR UPDATE SKIP LOCKED`. Search therefore trails `apply` by up to
//!   [`StoreInfo::search_lag`] (2 s). See `search.rs`. The indexer starts in
//!   `initialize` and stops in `close` (or when the store is dropped).
//! * **Text.** PostgreSQL text cannot hold U+0000: events are cleaned
//!   (U+0000 -> U+FFFD) before they are folded, so the stored task, its
//!   columns and its JSON agree. Schedules and worker inspect data are stored
//!   as JSON text, where NUL is escaped, so they round-trip exactly.

mod apply;
mod error;
mod query;
mod schema;
mod search;
mod stats;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cnc_model::model::{
    Event, Heatmap, NameCount, RuntimeStats, Schedule, StateCount, StatsQuery, StoredEvent, Task,
    TaskFilter, TaskPage, TaskQuery, TaskRelation, ThroughputBucket, ThroughputQuery, Timestamp,
    Worker, WorkerStatusChange,
};
use cnc_model::store::{
    ApplyReport, CleanupReport, DbController, StoreError, StoreErrorKind, StoreInfo, StoreResult,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

/// How to reach the database.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user:pass@host:port/db` (or a key=value connection string).
    pub url: String,
    /// Schema holding the tables (created by `initialize`); `None` = the
    /// server's default (`public`). Must match `[a-z_][a-z0-9_]{0,62}`.
    pub schema: Option<String>,
    /// Pooled connections (readers and the writer share them).
    pub pool_size: usize,
    /// How long to wait for a connection (connect, or a free pooled one).
    pub connect_timeout: Duration,
    /// Drop the schema when the store is dropped (tests and throw-away
    /// runs; only with a custom schema).
    pub temporary: bool,
}

impl PostgresConfig {
    /// A config for `url` with default pool settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
            temporary: false,
        }
    }

    /// Builder-style setter for the schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("temporary", &self.temporary)
            .finish()
    }
}

/// `url` with any password replaced by `***` (URL user-info, a `password`
/// query parameter, or a `password=` key of a key=value string).
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let rest = &out[rest_start..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    // `password=...` as a query parameter or a key=value pair.
    let lower = out.to_ascii_lowercase();
    if let Some(pos) = lower.find("password=") {
        let start = pos + "password=".len();
        let end = out[start..]
            .find(['&', ' '])
            .map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "***");
    }
    out
}

fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

/// The PostgreSQL [`DbController`].
pub struct PostgresStore {
    pool: Pool,
    schema: String,
    custom_schema: bool,
    location: String,
    closed: AtomicBool,
    /// Set for temporary stores: how to reconnect to drop the schema.
    drop_on_drop: Option<tokio_postgres::Config>,
    /// The background search indexer, once `initialize` has run.
    indexer: std::sync::Mutex<Option<search::Indexer>>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(indexer) = self.take_indexer() {
            indexer.abort();
        }
        let Some(config) = self.drop_on_drop.take() else {
            return;
        };
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        // Drop cannot await: a short-lived thread with its own runtime.
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok((client, connection)) = config.connect(tokio_postgres::NoTls).await else {
                    return;
                };
                let driver = tokio::spawn(connection);
                if let Err(e) = client.batch_execute(&sql).await {
                    tracing::warn!(error = %e, "could not drop a temporary schema");
                }
                drop(client);
                let _ = driver.await;
            });
        });
        let _ = handle.join();
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A pooled connection.
pub(crate) type Conn = deadpool_postgres::Object;

impl PostgresStore {
    /// Build the pool and check that the server answers. Does not touch the
    /// schema: call [`DbController::initialize`] next.
    pub async fn connect(config: PostgresConfig) -> StoreResult<Self> {
        let location = redact_url(&config.url);
        let mut pg = tokio_postgres::Config::from_str(&config.url).map_err(|_| {
            // The parser's message may quote the string: keep it out.
            StoreError::invalid(format!("postgres: invalid connection URL {location}"))
        })?;
        let custom_schema = config.schema.is_some();
        let schema = match config.schema {
            Some(s) if valid_schema(&s) => s,
            Some(s) => {
                return Err(StoreError::invalid(format!(
                    "postgres: invalid schema name {s:?} (use [a-z_][a-z0-9_]*)"
                )));
            }
            None => "public".to_owned(),
        };
        let mut options = pg.get_options().unwrap_or_default().to_owned();
        if custom_schema {
            options.push_str(&format!(" -c search_path={schema}"));
        }
        pg.options(options.trim());
        let drop_on_drop = (config.temporary && custom_schema).then(|| pg.clone());
        pg.connect_timeout(config.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("celery-cnc");
        }
        let manager = Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| {
                StoreError::new(StoreErrorKind::Backend, "postgres: cannot build the pool")
                    .with_source(e)
            })?;
        let store = Self {
            pool,
            custom_schema,
            location: format!("{location} (schema {schema})"),
            schema,
            closed: AtomicBool::new(false),
            drop_on_drop,
            indexer: std::sync::Mutex::new(None),
        };
        let conn = store.conn().await?;
        conn.simple_query("SELECT 1")
            .await
            .map_err(|e| error::pg("checking the connection", e))?;
        Ok(store)
    }

    /// The schema this store uses.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Drop this store's schema with everything in it (tests, uninstall).
    /// Refuses to drop the default `public` schema.
    pub async fn drop_schema(&self) -> StoreResult<()> {
        if !self.custom_schema {
            return Err(StoreError::invalid(
                "postgres: refusing to drop the default schema",
            ));
        }
        let conn = self.conn().await?;
        conn.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.schema
        ))
        .await
        .map_err(|e| error::pg("dropping the schema", e))
    }

    fn take_indexer(&self) -> Option<search::Indexer> {
        self.indexer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    pub(crate) async fn conn(&self) -> StoreResult<Conn> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::new(
                StoreErrorKind::Closed,
                "postgres: store is closed",
            ));
        }
        self.pool.get().await.map_err(error::pool)
    }
}

#[async_trait]
impl DbController for PostgresStore {
    fn info(&self) -> StoreInfo {
        StoreInfo {
            backend: "postgres".to_owned(),
            location: self.location.clone(),
            // INDEX_DELAY (1.2 s) + a tick (0.2 s) + the round itself.
            search_lag: Duration::from_secs(2),
            persistent: true,
            shared: true,
        }
    }

    async fn initialize(&self) -> StoreResult<()> {
        schema::initialize(self).await?;
        let mut indexer = self
            .indexer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if indexer.is_none() && !self.closed.load(Ordering::Acquire) {
            *indexer = Some(search::Indexer::start(self.pool.clone()));
        }
        Ok(())
    }

    async fn schema_version(&self) -> StoreResult<u32> {
        let conn = self.conn().await?;
        schema::read_version(&conn, &self.schema).await
    }

    async fn migrate(&self, from: u32, to: u32) -> StoreResult<()> {
        schema::migrate(self, from, to).await
    }

    async fn apply(&self, events: &[Event]) -> StoreResult<ApplyReport> {
        apply::apply(self, events).await
    }

    async fn task(&self, id: &str) -> StoreResult<Option<Task>> {
        query::task(self, id).await
    }

    async fn tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
        query::tasks(self, query).await
    }

    async fn count_tasks(&self, filter: &TaskFilter) -> StoreResult<u64> {
        query::count_tasks(self, filter).await
    }

    async fn task_events(&self, id: &str) -> StoreResult<Vec<StoredEvent>> {
        query::task_events(self, id).await
    }

    async fn relations(&self, root_id: &str) -> StoreResult<Vec<TaskRelation>> {
        query::relations(self, root_id).await
    }

    async fn workers(&self) -> StoreResult<Vec<Worker>> {
        query::workers(self, None).await
    }

    async fn worker(&self, hostname: &str) -> StoreResult<Option<Worker>> {
        Ok(query::workers(self, Some(hostname)).await?.pop())
    }

    async fn worker_history(
        &self,
        hostname: &str,
        limit: u32,
    ) -> StoreResult<Vec<WorkerStatusChange>> {
        query::worker_history(self, hostname, limit).await
    }

    async fn set_worker_info(
        &self,
        hostname: &str,
        info: serde_json::Value,
        at: Timestamp,
    ) -> StoreResult<()> {
        apply::set_worker_info(self, hostname, info, at).await
    }

    async fn prune_workers(&self, offline_before: Timestamp) -> StoreResult<u64> {
        apply::prune_workers(self, offline_before).await
    }

    async fn task_names(&self) -> StoreResult<Vec<NameCount>> {
        stats::task_names(self).await
    }

    async fn runtime_stats(&self, query: &StatsQuery) -> StoreResult<RuntimeStats> {
        stats::runtime_stats(self, query).await
    }

    async fn throughput(&self, query: &ThroughputQuery) -> StoreResult<Vec<ThroughputBucket>> {
        stats::throughput(self, query).await
    }

    async fn state_distribution(&self, query: &StatsQuery) -> StoreResult<Vec<StateCount>> {
        stats::state_distribution(self, query).await
    }

    async fn name_distribution(&self, query: &StatsQuery) -> StoreResult<Vec<NameCount>> {
        stats::name_distribution(self, query).await
    }

    async fn heatmap(&self, query: &StatsQuery) -> StoreResult<Heatmap> {
        stats::heatmap(self, query).await
    }

    async fn schedules(&self) -> StoreResult<Vec<Schedule>> {
        query::schedules(self, None).await
    }

    async fn schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        Ok(query::schedules(self, Some(name)).await?.pop())
    }

    async fn upsert_schedule(&self, schedule: &Schedule) -> StoreResult<()> {
        apply::upsert_schedule(self, schedule).await
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        apply::delete_schedules(self, Some(name))
            .await
            .map(|n| n > 0)
    }

    async fn delete_all_schedules(&self) -> StoreResult<u64> {
        apply::delete_schedules(self, None).await
    }

    async fn cleanup(&self, older_than: Timestamp) -> StoreResult<CleanupReport> {
        apply::cleanup(self, older_than).await
    }

    async fn purge(&self) -> StoreResult<()> {
        apply::purge(self).await
    }

    async fn close(&self) -> StoreResult<()> {
        self.closed.store(true, Ordering::Release);
        if let Some(indexer) = self.take_indexer() {
            indexer.stop().await;
        }
        self.pool.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://u@h/db?password=secret&x=1"),
            "postgres://u@h/db?password=***&x=1"
        );
        assert_eq!(
            redact_url("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
        assert_eq!(
            redact_url("postgresql://u:p%40ss@h/db"),
            "postgresql://u:***@h/db"
        );
    }

    #[test]
    fn schema_names() {
        assert!(valid_schema("cnc_test_01"));
        assert!(!valid_schema("Bad"));
        assert!(!valid_schema("a;drop"));
        assert!(!valid_schema(""));
    }
}
