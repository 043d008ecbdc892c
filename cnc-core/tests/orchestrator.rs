//! The orchestrator in-process: memory broker, memory or SQLite store.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cnc_core::broker::memory::MemoryBroker;
use cnc_core::component::{
    CancellationToken, Component, ComponentError, ComponentResult, ComponentState, Context,
};
use cnc_core::config::{CeleryApp, DatabaseConfig, LoggingConfig};
use cnc_core::logs::{LogController, LogEntry, LogQuery};
use cnc_core::stores::memory::MemoryStore;
use cnc_core::{
    ApplyReport, CeleryCnc, DbController, Event, StoreError, StoreErrorKind, StoreResult,
    TaskEvent, TaskEventKind, TaskFilter, TaskState, WorkerEvent, WorkerEventKind,
};

use common::{config, wait_subscribed};

fn task_events(i: usize, host: &str) -> [Event; 3] {
    let id = format!("task-{i}");
    let t = 1_700_000_000.0 + i as f64 * 0.001;
    let mut received = TaskEvent::new(TaskEventKind::Received, &id, t).with_hostname(host);
    received.name = Some("cnc.add".into());
    received.args = Some(format!("({i}, 1)"));
    [
        Event::Task(received),
        Event::Task(TaskEvent::new(TaskEventKind::Started, &id, t + 0.0001).with_hostname(host)),
        Event::Task({
            let mut e =
                TaskEvent::new(TaskEventKind::Succeeded, &id, t + 0.0002).with_hostname(host);
            e.result = Some(format!("{}", i + 1));
            e.runtime = Some(0.0001);
            e
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_accepted_event_is_lost_on_a_clean_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = MemoryBroker::new();
    let mut cfg = config(DatabaseConfig::sqlite(dir.path().join("cnc.db")));
    // Room for the whole burst: this test is about the drain at stop, not
    // about back-pressure.
    cfg.ingest.channel_capacity = 1 << 18;
    let running = CeleryCnc::new(cfg)
        .with_broker("memory://", Arc::new(broker.clone()))
        .start()
        .await
        .expect("start");
    wait_subscribed(&broker).await;
    let n = 20_000;
    for i in 0..n {
        for e in task_events(i, "w1@h") {
            broker.emit(e);
        }
        if i % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Stop while events still flow: whatever the listener accepted into
    // the ingest channel must be written before stop returns.
    let stats = running.apps()[0].stream_stats.clone();
    let report = running.stop().await.expect("clean stop");
    assert_eq!(
        stats.snapshot().dropped,
        0,
        "the test emits slowly enough for no drop"
    );
    let accepted = report.ingest.accepted;
    assert!(accepted > 0, "nothing flowed before the stop");
    assert_eq!(
        report.ingest.events_written + report.ingest.events_skipped,
        accepted,
        "{report:?}"
    );

    // Reopen the file: the history survived and holds every accepted
    // event. The accepted events are a prefix of the emitted sequence
    // (received, started, succeeded per task), so they make
    // ceil(accepted / 3) tasks of which floor(accepted / 3) are complete.
    let reopened = cnc_core::stores::sqlite::SqliteStore::open(
        cnc_core::stores::sqlite::SqliteConfig::new(dir.path().join("cnc.db")),
    )
    .expect("reopen");
    reopened.initialize().await.expect("init");
    let stored = reopened
        .count_tasks(&TaskFilter::default())
        .await
        .expect("count");
    let success = reopened
        .count_tasks(&TaskFilter {
            states: vec![TaskState::Success],
            ..TaskFilter::default()
        })
        .await
        .expect("count");
    // `wait_subscribed` delivered exactly one probe heartbeat (the first
    // emit that reached a stream); it makes no task.
    let task_events = accepted - 1;
    assert_eq!(stored, task_events.div_ceil(3), "{report:?}");
    assert_eq!(success, task_events / 3, "{report:?}");
    assert!(task_events <= n as u64 * 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_db_empties_the_history_on_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cnc.db");
    let broker = MemoryBroker::new();
    let running = CeleryCnc::new(config(DatabaseConfig::sqlite(&db)))
        .with_broker("memory://", Arc::new(broker.clone()))
        .start()
        .await
        .expect("start");
    wait_subscribed(&broker).await;
    for e in task_events(1, "w1@h") {
        broker.emit(e);
    }
    let store = running.store().clone();
    wait_until(Duration::from_secs(5), || {
        let store = store.clone();
        async move { store.task("task-1").await.ok().flatten().is_some() }
    })
    .await;
    running.stop().await.expect("stop");

    // Restart without purge: still there.
    let running = CeleryCnc::new(config(DatabaseConfig::sqlite(&db)))
        .with_broker("memory://", Arc::new(MemoryBroker::new()))
        .start()
        .await
        .expect("restart");
    assert!(
        running
            .store()
            .task("task-1")
            .await
            .expect("read")
            .is_some()
    );
    running.stop().await.expect("stop");

    // Restart with purge: gone.
    let running = CeleryCnc::new(config(DatabaseConfig::sqlite(&db).purge_on_start(true)))
        .with_broker("memory://", Arc::new(MemoryBroker::new()))
        .start()
        .await
        .expect("restart");
    assert!(
        running
            .store()
            .task("task-1")
            .await
            .expect("read")
            .is_none()
    );
    running.stop().await.expect("stop");
}

async fn wait_until<F, Fut>(timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met in {timeout:?}");
}

/// Crashes on its first two runs, then runs until stopped.
struct Flaky {
    runs: Arc<AtomicU32>,
}

#[async_trait]
impl Component for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn build(&mut self, _ctx: &Context) -> ComponentResult<()> {
        Ok(())
    }
    async fn run(&mut self, shutdown: CancellationToken) -> ComponentResult<()> {
        match self.runs.fetch_add(1, Ordering::SeqCst) {
            0 => Err(ComponentError::new("first run fails")),
            1 => panic!("second run panics"),
            _ => {
                shutdown.cancelled().await;
                Ok(())
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_component_is_restarted_and_its_status_shows_it() {
    let runs = Arc::new(AtomicU32::new(0));
    let running = CeleryCnc::new(config(DatabaseConfig::memory()))
        .with_broker("memory://", Arc::new(MemoryBroker::new()))
        .with_component(Flaky { runs: runs.clone() })
        .start()
        .await
        .expect("start");
    // Backoff: 0.5 s then 1 s (with jitter).
    let mut up = None;
    for _ in 0..100 {
        let s = running
            .status()
            .into_iter()
            .find(|s| s.name == "flaky")
            .expect("listed");
        if s.restarts == 2 && s.state == ComponentState::Up {
            up = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = up.expect("restarted twice and up");
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("second run panics")),
        "{s:?}"
    );
    let names: Vec<String> = running.status().into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "logging",
            "store",
            "ingest",
            "listener.mem",
            "workers",
            "flaky"
        ],
        "start order"
    );
    let json = running.status_json();
    assert_eq!(json[5]["restarts"], 2);
    running.stop().await.expect("stop");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

struct FailsToBuild;

#[async_trait]
impl Component for FailsToBuild {
    fn name(&self) -> &str {
        "picky"
    }
    async fn build(&mut self, _ctx: &Context) -> ComponentResult<()> {
        Err(ComponentError::fatal("port 1 is not allowed"))
    }
    async fn run(&mut self, _shutdown: CancellationToken) -> ComponentResult<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_stops_the_start_with_a_readable_error() {
    let err = CeleryCnc::new(config(DatabaseConfig::memory()))
        .with_broker("memory://", Arc::new(MemoryBroker::new()))
        .with_component(FailsToBuild)
        .start()
        .await
        .expect_err("must fail");
    assert_eq!(
        err.to_string(),
        "picky failed to start: port 1 is not allowed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_reports_every_error() {
    let mut cfg = config(DatabaseConfig::memory());
    cfg.ingest.batch_size = 0;
    cfg.apps.push(CeleryApp::new("", "ftp://x"));
    let err = CeleryCnc::new(cfg).start().await.expect_err("invalid");
    let text = err.to_string();
    assert!(
        text.contains("ingest.batch_size") && text.contains("apps[1].broker_url"),
        "{text}"
    );
}

/// A store that is "locked" for its first few writes.
#[derive(Debug)]
struct LockedAtFirst {
    inner: MemoryStore,
    failures_left: AtomicU32,
}

#[async_trait]
impl DbController for LockedAtFirst {
    fn info(&self) -> cnc_core::StoreInfo {
        self.inner.info()
    }
    async fn initialize(&self) -> StoreResult<()> {
        self.inner.initialize().await
    }
    async fn schema_version(&self) -> StoreResult<u32> {
        self.inner.schema_version().await
    }
    async fn migrate(&self, from: u32, to: u32) -> StoreResult<()> {
        self.inner.migrate(from, to).await
    }
    async fn apply(&self, events: &[Event]) -> StoreResult<ApplyReport> {
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::new(StoreErrorKind::Busy, "database is locked"));
        }
        self.inner.apply(events).await
    }
    async fn task(&self, id: &str) -> StoreResult<Option<cnc_core::Task>> {
        self.inner.task(id).await
    }
    async fn tasks(&self, q: &cnc_core::TaskQuery) -> StoreResult<cnc_core::TaskPage> {
        self.inner.tasks(q).await
    }
    async fn count_tasks(&self, f: &TaskFilter) -> StoreResult<u64> {
        self.inner.count_tasks(f).await
    }
    async fn task_events(&self, id: &str) -> StoreResult<Vec<cnc_core::StoredEvent>> {
        self.inner.task_events(id).await
    }
    async fn relations(&self, root: &str) -> StoreResult<Vec<cnc_core::TaskRelation>> {
        self.inner.relations(root).await
    }
    async fn workers(&self) -> StoreResult<Vec<cnc_core::Worker>> {
        self.inner.workers().await
    }
    async fn worker(&self, h: &str) -> StoreResult<Option<cnc_core::Worker>> {
        self.inner.worker(h).await
    }
    async fn worker_history(
        &self,
        h: &str,
        limit: u32,
    ) -> StoreResult<Vec<cnc_core::WorkerStatusChange>> {
        self.inner.worker_history(h, limit).await
    }
    async fn set_worker_info(&self, h: &str, info: serde_json::Value, at: f64) -> StoreResult<()> {
        self.inner.set_worker_info(h, info, at).await
    }
    async fn prune_workers(&self, before: f64) -> StoreResult<u64> {
        self.inner.prune_workers(before).await
    }
    async fn task_names(&self) -> StoreResult<Vec<cnc_core::NameCount>> {
        self.inner.task_names().await
    }
    async fn runtime_stats(&self, q: &cnc_core::StatsQuery) -> StoreResult<cnc_core::RuntimeStats> {
        self.inner.runtime_stats(q).await
    }
    async fn throughput(
        &self,
        q: &cnc_core::ThroughputQuery,
    ) -> StoreResult<Vec<cnc_core::ThroughputBucket>> {
        self.inner.throughput(q).await
    }
    async fn state_distribution(
        &self,
        q: &cnc_core::StatsQuery,
    ) -> StoreResult<Vec<cnc_core::StateCount>> {
        self.inner.state_distribution(q).await
    }
    async fn name_distribution(
        &self,
        q: &cnc_core::StatsQuery,
    ) -> StoreResult<Vec<cnc_core::NameCount>> {
        self.inner.name_distribution(q).await
    }
    async fn heatmap(&self, q: &cnc_core::StatsQuery) -> StoreResult<cnc_core::Heatmap> {
        self.inner.heatmap(q).await
    }
    async fn schedules(&self) -> StoreResult<Vec<cnc_core::Schedule>> {
        self.inner.schedules().await
    }
    async fn schedule(&self, name: &str) -> StoreResult<Option<cnc_core::Schedule>> {
        self.inner.schedule(name).await
    }
    async fn upsert_schedule(&self, s: &cnc_core::Schedule) -> StoreResult<()> {
        self.inner.upsert_schedule(s).await
    }
    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        self.inner.delete_schedule(name).await
    }
    async fn delete_all_schedules(&self) -> StoreResult<u64> {
        self.inner.delete_all_schedules().await
    }
    async fn cleanup(&self, older_than: f64) -> StoreResult<cnc_core::CleanupReport> {
        self.inner.cleanup(older_than).await
    }
    async fn purge(&self) -> StoreResult<()> {
        self.inner.purge().await
    }
    async fn close(&self) -> StoreResult<()> {
        self.inner.close().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_delays_batches_but_loses_nothing() {
    let store = Arc::new(LockedAtFirst {
        inner: MemoryStore::new(),
        failures_left: AtomicU32::new(3),
    });
    let broker = MemoryBroker::new();
    let running = CeleryCnc::new(config(DatabaseConfig::memory()))
        .with_broker("memory://", Arc::new(broker.clone()))
        .with_store(store.clone())
        .start()
        .await
        .expect("start");
    wait_subscribed(&broker).await;
    for i in 0..100 {
        for e in task_events(i, "w1@h") {
            broker.emit(e);
        }
    }
    let s = store.clone();
    wait_until(Duration::from_secs(5), || {
        let s = s.clone();
        async move { s.inner.count_tasks(&TaskFilter::default()).await.ok() == Some(100) }
    })
    .await;
    let c = running.ingest_counters();
    assert_eq!(c.store_errors, 3, "{c:?}");
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_workers_are_recorded_lost_and_the_bus_carries_batches() {
    let broker = MemoryBroker::new();
    let running = CeleryCnc::new(config(DatabaseConfig::memory()))
        .with_broker("memory://", Arc::new(broker.clone()))
        .start()
        .await
        .expect("start");
    let mut bus = running.bus().subscribe();
    wait_subscribed(&broker).await;
    let mut online = WorkerEvent::new(WorkerEventKind::Online, "quiet@h", cnc_core::now());
    online.freq = Some(0.5);
    broker.emit(Event::Worker(online));
    // The bus reports the written batch.
    let batch = loop {
        match tokio::time::timeout(Duration::from_secs(5), bus.recv()).await {
            Ok(Ok(cnc_core::bus::BusMessage::Batch(b)))
                if b.events.iter().any(|e| e.hostname() == Some("quiet@h")) =>
            {
                break b;
            }
            Ok(Ok(_)) => continue,
            other => panic!("no batch: {other:?}"),
        }
    };
    assert!(batch.write_seconds >= 0.0 && batch.seq >= 1);
    // No heartbeat for 2 x 0.5 s: the liveness pass (every 2 s) records it.
    let store = running.store().clone();
    wait_until(Duration::from_secs(10), || {
        let store = store.clone();
        async move {
            store
                .worker_history("quiet@h", 10)
                .await
                .map(|h| h.iter().any(|c| c.reason == "worker-lost"))
                .unwrap_or(false)
        }
    })
    .await;
    running.stop().await.expect("stop");
}

/// Keeps every entry; each `flush` notes how many entries it covered.
#[derive(Debug, Default)]
struct Captured {
    entries: std::sync::Mutex<Vec<LogEntry>>,
    flushes: std::sync::Mutex<Vec<usize>>,
}

impl Captured {
    fn entries(&self) -> Vec<LogEntry> {
        self.entries.lock().expect("entries").clone()
    }
    fn flushes(&self) -> Vec<usize> {
        self.flushes.lock().expect("flushes").clone()
    }
}

impl LogController for Captured {
    fn record(&self, mut entry: LogEntry) {
        let mut entries = self.entries.lock().expect("entries");
        entry.seq = entries.len() as u64 + 1;
        entries.push(entry);
    }
    fn recent(&self, query: &LogQuery) -> Vec<LogEntry> {
        self.entries()
            .into_iter()
            .filter(|e| query.matches(e))
            .collect()
    }
    fn flush(&self) {
        let n = self.entries.lock().expect("entries").len();
        self.flushes.lock().expect("flushes").push(n);
    }
}

/// Index of the first entry from `component` saying `message` (and, when
/// given, with `field` = `value`).
fn find_log(
    entries: &[LogEntry],
    component: &str,
    message: &str,
    field: Option<(&str, &str)>,
) -> Option<usize> {
    entries.iter().position(|e| {
        e.component == component
            && e.message == message
            && field.is_none_or(|(k, v)| e.fields.get(k).map(String::as_str) == Some(v))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_log_controller_gets_the_lifecycle_logs_instead_of_the_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("logs");
    let logging = LoggingConfig {
        directory: log_dir.clone(),
        stderr: false,
        ..LoggingConfig::default()
    };
    // Retention on, so the store component has something to say.
    let mut database = DatabaseConfig::memory().retention(Duration::from_secs(3600));
    database.cleanup_interval = Duration::from_secs(1);
    let mut cfg = config(database);
    cfg.logging = Some(logging.clone());

    let captured = Arc::new(Captured::default());
    let broker = MemoryBroker::new();
    let running = CeleryCnc::new(cfg)
        .with_broker("memory://", Arc::new(broker.clone()))
        .with_log_controller(captured.clone())
        .start()
        .await
        .expect("start");
    // The page feed is the custom controller too.
    let ctx_logs = running.context().logs.clone();

    wait_subscribed(&broker).await;
    // A task that finished in 2023: the next cleanup pass removes it and
    // logs that it did.
    for e in task_events(1, "w1@h") {
        broker.emit(e);
    }
    wait_until(Duration::from_secs(10), || {
        let captured = captured.clone();
        async move {
            find_log(
                &captured.entries(),
                "celery_cnc.store",
                "retention cleanup",
                Some(("tasks", "1")),
            )
            .is_some()
        }
    })
    .await;
    let logging_status = running
        .status()
        .into_iter()
        .find(|s| s.name == "logging")
        .expect("logging listed");
    assert_eq!(
        logging_status.info.config["controller"], "custom",
        "{logging_status:?}"
    );
    assert_eq!(
        logging_status.info.config["directory"],
        serde_json::Value::Null,
        "a custom controller writes no files there: {logging_status:?}"
    );
    running.stop().await.expect("stop");

    let entries = captured.entries();
    let shown = || {
        entries
            .iter()
            .map(|e| format!("{} {} {:?}", e.component, e.message, e.fields))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let orch = "celery_cnc.orchestrator";
    for component in ["logging", "store", "ingest", "listener.mem", "workers"] {
        let started = find_log(&entries, orch, "started", Some(("component", component)));
        let stopped = find_log(&entries, orch, "stopped", Some(("component", component)));
        assert!(
            started.is_some() && stopped.is_some() && started < stopped,
            "{component} start and stop lines:\n{}",
            shown()
        );
    }
    let started = find_log(&entries, orch, "celery-cnc started", None);
    let listening = find_log(
        &entries,
        "celery_cnc.ingest",
        "listening for Celery events",
        None,
    );
    let listener_stopped = find_log(&entries, "celery_cnc.ingest", "listener stopped", None);
    let ingest_stopped = find_log(
        &entries,
        "celery_cnc.ingest",
        "ingest stopped: last batch written",
        None,
    );
    let stopped = find_log(&entries, orch, "celery-cnc stopped", None);
    for (what, at) in [
        ("celery-cnc started", started),
        ("listening", listening),
        ("listener stopped", listener_stopped),
        ("ingest stopped", ingest_stopped),
        ("celery-cnc stopped", stopped),
    ] {
        assert!(at.is_some(), "no {what} line:\n{}", shown());
    }
    assert!(listening < listener_stopped && listener_stopped < ingest_stopped);
    assert!(
        ingest_stopped < stopped,
        "the writer stops before the service"
    );
    assert!(
        !entries.iter().any(|e| e.message.contains("crashed")),
        "a clean stop crashed something:\n{}",
        shown()
    );
    // Lines carry the structured fields.
    let cleanup = &entries
        [find_log(&entries, "celery_cnc.store", "retention cleanup", None).expect("cleanup line")];
    assert_eq!(cleanup.level, cnc_core::logs::LogLevel::Info);
    assert_eq!(cleanup.fields.get("events").map(String::as_str), Some("3"));

    // Flushed at stop, after the last line.
    let flushes = captured.flushes();
    let last_line = stopped.expect("stopped line") + 1;
    assert!(
        flushes.last().is_some_and(|n| *n >= last_line),
        "flushes {flushes:?}; the stop line is entry {last_line}"
    );
    assert_eq!(
        ctx_logs.recent(&LogQuery::default()).len(),
        captured.entries().len(),
        "the service's own feed is the custom controller"
    );

    // The file controller was never opened: no directory, no file.
    assert!(
        !log_dir.exists(),
        "files written though a custom controller was given: {:?}",
        std::fs::read_dir(&log_dir).map(|d| d
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect::<Vec<_>>())
    );

    // The same config without the custom controller does write there (so
    // the check above means something).
    let mut cfg = config(DatabaseConfig::memory());
    cfg.logging = Some(logging);
    let running = CeleryCnc::new(cfg)
        .with_broker("memory://", Arc::new(MemoryBroker::new()))
        .start()
        .await
        .expect("start with the file controller");
    running.stop().await.expect("stop");
    let files: Vec<_> = std::fs::read_dir(&log_dir)
        .expect("the file controller made its directory")
        .filter_map(Result::ok)
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(files[0].path()).expect("read log file");
    assert!(
        text.contains("[celery_cnc.orchestrator] [INFO] celery-cnc stopped"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_records_no_crash_and_no_restart() {
    // The writer is stopped after the last producer; it must not see its
    // channel close first and count that as a crash. Several rounds: the
    // race is timing-dependent.
    for round in 0..5 {
        let broker = MemoryBroker::new();
        let running = CeleryCnc::new(config(DatabaseConfig::memory()))
            .with_broker("memory://", Arc::new(broker.clone()))
            .start()
            .await
            .expect("start");
        wait_subscribed(&broker).await;
        for e in task_events(round, "w1@h") {
            broker.emit(e);
        }
        let store = running.store().clone();
        let id = format!("task-{round}");
        wait_until(Duration::from_secs(5), || {
            let (store, id) = (store.clone(), id.clone());
            async move { store.task(&id).await.ok().flatten().is_some() }
        })
        .await;
        let report = running.stop().await.expect("stop");
        for c in &report.components {
            assert!(
                c.state == ComponentState::Stopped && c.restarts == 0 && c.last_error.is_none(),
                "round {round}: {} after a clean stop: {c:?}",
                c.name
            );
        }
        assert_eq!(
            report.ingest.accepted,
            report.ingest.events_written + report.ingest.events_skipped,
            "{report:?}"
        );
    }
}
