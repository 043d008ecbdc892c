//! The SQLite store: celery-cnc's embedded default.
//!
//! # Design
//! * **WAL, one writer, many readers.** A dedicated thread owns the only
//!   read-write connection and applies each batch in one transaction
//!   (`writer.rs`); reads run on a small pool of connections on tokio's
//!   blocking threads and never wait for the writer.
//! * **Tasks are a JSON body plus the columns filters use.** The body
//!   round-trips every field of [`cnc_model::Task`] exactly; the columns
//!   (state, worker, name, created_at, root/group/parent ids, runtime) carry
//!   the indexes. Every index ends in the row id, which is the seen order, so
//!   "newest first with any filter" walks one index backwards and stops after
//!   `limit` rows. Task names are resolved from the counts table first, so a
//!   partial name becomes an indexed `IN` list.
//! * **Events are keyed by their identity** (`WITHOUT ROWID`, primary key
//!   task seq + timestamp + type + host + clock): de-duplication is the
//!   primary key, and events of new tasks append at the end of the tree.
//! * **Aggregates are maintained, not computed.** Counts per (name, worker,
//!   state) and finished tasks per minute are updated as deltas in each
//!   batch, so dashboards cost O(buckets).
//! * **Search** has its own file and thread; see `search.rs` for why and how.
//! * **SQL is written by hand** here, unlike the PostgreSQL adapter which
//!   builds its dynamic queries with sea-query: every dynamic part of this
//!   adapter is SQLite-only (FTS5 `MATCH`, the exact-match SQL function,
//!   partial-index predicates), where a dialect-neutral builder adds nothing.
//! * **Crash safety.** WAL with `synchronous = NORMAL`: a kill -9 loses at
//!   most the batches of the last moments, never corrupts the file, and a
//!   batch is all or nothing.

mod error;
mod ids;
mod read;
mod schema;
mod search;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;

use cnc_model::{
    ApplyReport, CleanupReport, DbController, Event, Heatmap, NameCount, RuntimeStats, Schedule,
    StateCount, StatsQuery, StoreError, StoreErrorKind, StoreInfo, StoreResult, StoredEvent, Task,
    TaskFilter, TaskPage, TaskQuery, TaskRelation, ThroughputBucket, ThroughputQuery, Timestamp,
    Worker, WorkerStatusChange,
};

use error::{closed, map_err};
use search::Indexer;
use writer::Writer;

/// Settings of the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// Database file. The search index goes next to it as `<file>-search`.
    pub path: PathBuf,
    /// Read connections (concurrent readers). Default 4.
    pub readers: usize,
    /// Recent tasks the writer keeps in memory to fold without reading. Default 20,000.
    pub task_cache: usize,
    /// How long a statement waits for a lock held by another process. Default 5 s.
    pub busy_timeout: Duration,
    /// Page cache of the writer connection, in KiB. Default 64 MiB.
    pub cache_kib: u32,
    /// Cap on the main database size in MiB (`None`: no cap). A write that
    /// would pass it fails with [`StoreErrorKind::Full`] and changes nothing.
    pub max_size_mib: Option<u64>,
    /// Open for reading only (one-shot queries next to a running service):
    /// `initialize` checks the schema instead of migrating, no indexer runs,
    /// and writes fail.
    pub read_only: bool,
    /// Ids of new tasks the writer keeps in memory before merging them into
    /// the on-disk id index, in sorted ranges (see the module docs). Larger
    /// makes writes cheaper and start-up slower (the ids are reloaded from
    /// the newest tasks). Default 100,000 (about 10 MB).
    pub id_merge_at: usize,
}

impl SqliteConfig {
    /// Defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            readers: 4,
            task_cache: 20_000,
            busy_timeout: Duration::from_secs(5),
            cache_kib: 64 * 1024,
            max_size_mib: None,
            read_only: false,
            id_merge_at: ids::MERGE_AT,
        }
    }
}

type Job = Box<dyn FnOnce(&mut Writer) + Send>;

/// How often the checkpointer thread looks at the WAL.
const CHECKPOINT_TICK: Duration = Duration::from_millis(100);
/// WAL frames past which the checkpointer restarts the WAL (a `RESTART`
/// checkpoint: it waits for the writer's current batch, copies what the
/// passive checkpoints left, and the WAL starts again from its beginning).
const RESTART_FRAMES: i64 = 32_768;

/// Copy WAL frames into the database on its own thread and connection, so
/// the single writer spends its time on batches, not on checkpoints
/// (measured: checkpoints and their fsync inside COMMIT were a quarter of
/// the writer's time at 1M tasks). The writer never checkpoints
/// (`wal_autocheckpoint = 0`). Every tick the checkpointer runs a `PASSIVE`
/// checkpoint, which blocks nobody; since the writer keeps appending, the WAL
/// can only start over at a moment when everything is copied, so once it
/// passes [`RESTART_FRAMES`] a `RESTART` checkpoint makes that moment (the
/// writer waits for it, a few milliseconds: most frames are already copied).
/// The checkpointer's connection keeps `synchronous = NORMAL`, so the
/// database file is synced after each checkpoint as before.
struct Checkpointer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(cfg: &SqliteConfig) -> StoreResult<Self> {
        let conn = Connection::open(&cfg.path).map_err(map_err)?;
        conn.busy_timeout(Duration::from_millis(250))
            .map_err(map_err)?;
        conn.execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(map_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("cnc-sqlite-ckpt".into())
            .spawn(move || {
                let mut mode = "PASSIVE";
                while !flag.load(Ordering::Acquire) {
                    std::thread::sleep(CHECKPOINT_TICK);
                    let sql = format!("PRAGMA wal_checkpoint({mode})");
                    // (busy, frames in the WAL, frames copied); busy is not
                    // an error: the next tick tries again.
                    match conn
                        .query_row(&sql, [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
                    {
                        Ok((frames, _copied)) => {
                            mode = if frames > RESTART_FRAMES {
                                "RESTART"
                            } else {
                                "PASSIVE"
                            };
                        }
                        Err(err) => {
                            tracing::debug!(error = %err, "sqlite checkpoint");
                            mode = "PASSIVE";
                        }
                    }
                }
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            })
            .map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Backend,
                    format!("cannot start the checkpoint thread: {e}"),
                )
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct ReadPool {
    conns: Mutex<Vec<Connection>>,
    sem: tokio::sync::Semaphore,
}

struct Inner {
    cfg: SqliteConfig,
    search_path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: ReadPool,
    indexer: Mutex<Option<Indexer>>,
    checkpointer: Mutex<Option<Checkpointer>>,
    acked: Arc<Mutex<Vec<(i64, i64)>>>,
    /// The id index's memory level, shared with the writer.
    ids: Arc<ids::TaskIds>,
    closed: AtomicBool,
}

/// The SQLite [`DbController`]. Cheap to clone; clones share one database.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.cfg.path)
            .finish_non_exhaustive()
    }
}

fn configure(conn: &Connection, cfg: &SqliteConfig, writer: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(cfg.busy_timeout)?;
    conn.execute_batch("PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY;")?;
    if writer {
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -{};
             PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;",
            cfg.cache_kib
        ))?;
        if let Some(mib) = cfg.max_size_mib {
            let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let pages = (mib as i64 * 1024 * 1024 / page.max(512)).max(1);
            conn.execute_batch(&format!("PRAGMA max_page_count = {pages};"))?;
        }
    } else {
        conn.execute_batch("PRAGMA cache_size = -16384; PRAGMA query_only = 1;")?;
        conn.set_prepared_statement_cache_capacity(64);
    }
    Ok(())
}

/// `cnc_text_has(body, needle)`: does the task's lower-cased search text
/// contain the (already lower-cased) needle? The exact check behind search.
fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "cnc_text_has",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let body: String = ctx.get(0)?;
            let needle: String = ctx.get(1)?;
            Ok(match serde_json::from_str::<Task>(&body) {
                Ok(task) => search::search_text_lower(&task).contains(&needle),
                Err(_) => false,
            })
        },
    )
}

impl SqliteStore {
    /// Open (creating if needed) the database file. Call
    /// [`DbController::initialize`] before use.
    pub fn open(cfg: SqliteConfig) -> StoreResult<Self> {
        if let Some(parent) = cfg.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Connection,
                    format!("cannot create the directory {}: {e}", parent.display()),
                )
                .with_source(e)
            })?;
        }
        let conn = Connection::open(&cfg.path).map_err(map_err)?;
        configure(&conn, &cfg, true).map_err(map_err)?;
        let acked = Arc::new(Mutex::new(Vec::new()));
        let ids = Arc::new(ids::TaskIds::new(cfg.read_only, cfg.id_merge_at.max(1)));
        let mut writer = Writer::new(conn, cfg.task_cache, acked.clone(), None, ids.clone())?;
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = std::thread::Builder::new()
            .name("cnc-sqlite-writer".into())
            .spawn(move || {
                loop {
                    match rx.recv_timeout(Duration::from_millis(500)) {
                        Ok(job) => job(&mut writer),
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if let Err(err) = writer.drain_acked() {
                                tracing::warn!(error = %err, "recording indexed search work");
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                let _ = writer
                    .conn
                    .execute_batch("PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE);");
            })
            .map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Backend,
                    format!("cannot start the writer thread: {e}"),
                )
            })?;
        let readers = cfg.readers.max(1);
        let checkpointer = if cfg.read_only {
            None
        } else {
            Some(Checkpointer::start(&cfg)?)
        };
        Ok(Self {
            inner: Arc::new(Inner {
                search_path: search::search_path(&cfg.path),
                cfg,
                jobs: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(handle)),
                readers: ReadPool {
                    conns: Mutex::new(Vec::new()),
                    sem: tokio::sync::Semaphore::new(readers),
                },
                indexer: Mutex::new(None),
                checkpointer: Mutex::new(checkpointer),
                acked,
                ids,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Open at `path` with defaults and initialize.
    pub async fn open_path(path: impl AsRef<Path>) -> StoreResult<Self> {
        let store = Self::open(SqliteConfig::new(path.as_ref()))?;
        store.initialize().await?;
        Ok(store)
    }

    fn check_open(&self) -> StoreResult<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(closed())
        } else {
            Ok(())
        }
    }

    /// Run a job on the writer thread.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.check_open()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |w| {
            let _ = tx.send(f(w));
        });
        let sent = self
            .inner
            .jobs
            .lock()
            .as_ref()
            .map(|j| j.send(job).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(closed());
        }
        rx.await.map_err(|_| {
            StoreError::new(StoreErrorKind::Backend, "the SQLite writer thread stopped")
        })?
    }

    fn new_reader(&self) -> StoreResult<Connection> {
        let conn = Connection::open(&self.inner.cfg.path).map_err(map_err)?;
        configure(&conn, &self.inner.cfg, false).map_err(map_err)?;
        register_functions(&conn).map_err(map_err)?;
        if self.inner.search_path.exists() {
            conn.execute(
                "ATTACH DATABASE ?1 AS s",
                [self.inner.search_path.to_string_lossy().as_ref()],
            )
            .map_err(map_err)?;
        }
        Ok(conn)
    }

    /// Run a read on a pooled connection.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.check_open()?;
        let _permit = self
            .inner
            .readers
            .sem
            .acquire()
            .await
            .map_err(|_| closed())?;
        let conn = match self.inner.readers.conns.lock().pop() {
            Some(c) => c,
            None => self.new_reader()?,
        };
        let this = self.clone();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            (conn, r)
        })
        .await
        .map_err(|e| StoreError::new(StoreErrorKind::Backend, format!("read task failed: {e}")))?;
        this.inner.readers.conns.lock().push(conn);
        result
    }

    /// Wait until everything applied so far is searchable (tests, benchmarks,
    /// and a clean shutdown).
    pub async fn flush_search(&self) -> StoreResult<()> {
        self.check_open()?;
        let indexer = self.inner.indexer.lock().as_ref().map(|_| ());
        if indexer.is_none() {
            return Ok(());
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(ix) = inner.indexer.lock().as_ref() {
                ix.flush();
            }
        })
        .await
        .map_err(|e| StoreError::new(StoreErrorKind::Backend, format!("flush failed: {e}")))
    }

    /// Documents indexed for search since open.
    pub fn indexed_documents(&self) -> u64 {
        self.inner
            .indexer
            .lock()
            .as_ref()
            .map_or(0, |ix| ix.stats.indexed.load(Ordering::Relaxed))
    }

    /// Size of the database files on disk (main, WAL, search), in bytes.
    pub fn disk_usage(&self) -> u64 {
        let mut total = 0;
        for base in [&self.inner.cfg.path, &self.inner.search_path] {
            for suffix in ["", "-wal"] {
                let mut p = base.as_os_str().to_owned();
                p.push(suffix);
                total += std::fs::metadata(PathBuf::from(p))
                    .map(|m| m.len())
                    .unwrap_or(0);
            }
        }
        total
    }

    /// (Re)start the search indexer after the schema is current.
    async fn start_indexer(&self) -> StoreResult<()> {
        let path = self.inner.cfg.path.clone();
        let search_path = self.inner.search_path.clone();
        let generation = self.write(|w| schema::generation(&w.conn)).await?;
        let (search_conn, fresh) = tokio::task::spawn_blocking(move || {
            search::open_search_file(&search_path, &generation)
        })
        .await
        .map_err(|e| {
            StoreError::new(
                StoreErrorKind::Backend,
                format!("opening the search index: {e}"),
            )
        })??;
        if fresh {
            // Everything must be indexed (again).
            self.write(|w| {
                w.conn
                    .execute("INSERT OR IGNORE INTO search_pending (seq, since, ver) SELECT seq, 0, 1 FROM tasks", [])
                    .map_err(map_err)?;
                Ok(())
            })
            .await?;
        }
        let main = search::open_reader(&path)?;
        let indexer = Indexer::start(search_conn, main, self.inner.acked.clone());
        let old = self.inner.indexer.lock().replace(indexer);
        drop(old);
        // Readers opened before must see the (new) search file.
        self.inner.readers.conns.lock().clear();
        let tx = self.index_sender();
        self.write(move |w| {
            w.set_indexer(tx);
            Ok(())
        })
        .await
    }

    fn index_sender(&self) -> Option<mpsc::Sender<search::IndexCmd>> {
        self.inner.indexer.lock().as_ref().map(|ix| ix.sender())
    }
}

#[async_trait]
impl DbController for SqliteStore {
    fn info(&self) -> StoreInfo {
        StoreInfo {
            backend: "sqlite".into(),
            location: self.inner.cfg.path.display().to_string(),
            search_lag: Duration::from_secs(2),
            persistent: true,
            shared: false,
        }
    }

    async fn initialize(&self) -> StoreResult<()> {
        if self.inner.cfg.read_only {
            let version = self.schema_version().await?;
            if version != cnc_model::SCHEMA_VERSION {
                return Err(StoreError::new(
                    StoreErrorKind::Migration,
                    format!(
                        "the database is at schema v{version}, not v{}; open it read-write once to migrate",
                        cnc_model::SCHEMA_VERSION
                    ),
                ));
            }
            return Ok(());
        }
        self.write(|w| {
            schema::initialize(&mut w.conn)?;
            w.reload()
        })
        .await?;
        self.start_indexer().await
    }

    async fn schema_version(&self) -> StoreResult<u32> {
        self.write(|w| schema::read_version(&w.conn)).await
    }

    async fn migrate(&self, from: u32, to: u32) -> StoreResult<()> {
        self.write(move |w| {
            schema::migrate(&mut w.conn, from, to)?;
            w.reload()
        })
        .await?;
        if to >= 2 {
            self.start_indexer().await?;
        }
        Ok(())
    }

    async fn apply(&self, events: &[Event]) -> StoreResult<ApplyReport> {
        if self.inner.cfg.read_only {
            return Err(StoreError::new(
                StoreErrorKind::Unsupported,
                "the store was opened read-only",
            ));
        }
        let events = events.to_vec();
        self.write(move |w| w.apply(&events)).await
    }

    async fn task(&self, id: &str) -> StoreResult<Option<Task>> {
        let id = id.to_owned();
        let ids = self.inner.ids.clone();
        self.read(move |c| read::task(c, &ids, &id)).await
    }

    async fn tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
        let q = query.clone();
        let ids = self.inner.ids.clone();
        self.read(move |c| read::tasks(c, &ids, &q)).await
    }

    async fn count_tasks(&self, filter: &TaskFilter) -> StoreResult<u64> {
        let f = filter.clone();
        let ids = self.inner.ids.clone();
        self.read(move |c| read::count_tasks(c, &ids, &f)).await
    }

    async fn task_events(&self, id: &str) -> StoreResult<Vec<StoredEvent>> {
        let id = id.to_owned();
        let ids = self.inner.ids.clone();
        self.read(move |c| read::task_events(c, &ids, &id)).await
    }

    async fn relations(&self, root_id: &str) -> StoreResult<Vec<TaskRelation>> {
        let id = root_id.to_owned();
        let ids = self.inner.ids.clone();
        self.read(move |c| read::relations(c, &ids, &id)).await
    }

    async fn workers(&self) -> StoreResult<Vec<Worker>> {
        self.read(read::workers).await
    }

    async fn worker(&self, hostname: &str) -> StoreResult<Option<Worker>> {
        let h = hostname.to_owned();
        self.read(move |c| read::worker(c, &h)).await
    }

    async fn worker_history(
        &self,
        hostname: &str,
        limit: u32,
    ) -> StoreResult<Vec<WorkerStatusChange>> {
        let h = hostname.to_owned();
        self.read(move |c| read::worker_history(c, &h, limit)).await
    }

    async fn set_worker_info(
        &self,
        hostname: &str,
        info: serde_json::Value,
        at: Timestamp,
    ) -> StoreResult<()> {
        let h = hostname.to_owned();
        self.write(move |w| w.set_worker_info(&h, info, at)).await
    }

    async fn prune_workers(&self, offline_before: Timestamp) -> StoreResult<u64> {
        self.write(move |w| w.prune_workers(offline_before)).await
    }

    async fn task_names(&self) -> StoreResult<Vec<NameCount>> {
        self.read(|c| read::name_distribution(c, &StatsQuery::default()))
            .await
    }

    async fn runtime_stats(&self, query: &StatsQuery) -> StoreResult<RuntimeStats> {
        let q = query.clone();
        self.read(move |c| read::runtime_stats(c, &q)).await
    }

    async fn throughput(&self, query: &ThroughputQuery) -> StoreResult<Vec<ThroughputBucket>> {
        let q = query.clone();
        self.read(move |c| read::throughput(c, &q)).await
    }

    async fn state_distribution(&self, query: &StatsQuery) -> StoreResult<Vec<StateCount>> {
        let q = query.clone();
        self.read(move |c| read::state_distribution(c, &q)).await
    }

    async fn name_distribution(&self, query: &StatsQuery) -> StoreResult<Vec<NameCount>> {
        let q = query.clone();
        self.read(move |c| read::name_distribution(c, &q)).await
    }

    async fn heatmap(&self, query: &StatsQuery) -> StoreResult<Heatmap> {
        let q = query.clone();
        self.read(move |c| read::heatmap(c, &q)).await
    }

    async fn schedules(&self) -> StoreResult<Vec<Schedule>> {
        self.read(read::schedules).await
    }

    async fn schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        let n = name.to_owned();
        self.read(move |c| read::schedule(c, &n)).await
    }

    async fn upsert_schedule(&self, schedule: &Schedule) -> StoreResult<()> {
        let s = schedule.clone();
        self.write(move |w| w.upsert_schedule(&s)).await
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        let n = name.to_owned();
        self.write(move |w| w.delete_schedule(&n)).await
    }

    async fn delete_all_schedules(&self) -> StoreResult<u64> {
        self.write(|w| w.delete_all_schedules()).await
    }

    async fn cleanup(&self, older_than: Timestamp) -> StoreResult<CleanupReport> {
        self.write(move |w| w.cleanup(older_than)).await
    }

    async fn purge(&self) -> StoreResult<()> {
        self.write(|w| w.purge()).await?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(ix) = inner.indexer.lock().as_ref() {
                ix.clear();
            }
        })
        .await
        .map_err(|e| StoreError::new(StoreErrorKind::Backend, format!("purge failed: {e}")))
    }

    async fn close(&self) -> StoreResult<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(mut ix) = inner.indexer.lock().take() {
                ix.stop();
            }
            if let Some(mut c) = inner.checkpointer.lock().take() {
                c.stop();
            }
            inner.jobs.lock().take();
            if let Some(h) = inner.writer_thread.lock().take() {
                let _ = h.join();
            }
            inner.readers.conns.lock().clear();
        })
        .await
        .map_err(|e| StoreError::new(StoreErrorKind::Backend, format!("close failed: {e}")))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(mut ix) = self.indexer.lock().take() {
            ix.stop();
        }
        if let Some(mut c) = self.checkpointer.lock().take() {
            c.stop();
        }
        self.jobs.lock().take();
        if let Some(h) = self.writer_thread.lock().take() {
            let _ = h.join();
        }
    }
}
