//! The orchestrator in-process: memory broker, memory or SQLite store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cnc_core::broker::memory::MemoryBroker;
use cnc_core::component::{
    CancellationToken, Component, ComponentError, ComponentResult, ComponentState, Context,
};
use cnc_core::config::{CeleryApp, CeleryCncConfig, DatabaseConfig, IngestConfig};
use cnc_core::stores::memory::MemoryStore;
use cnc_core::{
    ApplyReport, CeleryCnc, DbController, Event, StoreError, StoreErrorKind, StoreResult,
    TaskEvent, TaskEventKind, TaskFilter, TaskState, WorkerEvent, WorkerEventKind,
};

fn config(db: DatabaseConfig) -> CeleryCncConfig {
    CeleryCncConfig::builder()
        .app(CeleryApp::new("mem", "memory://"))
        .database(db)
        .logging(None)
        .frontend(None)
        .ingest(IngestConfig {
            batch_size: 500,
            batch_interval: Duration::from_millis(20),
            enable_events_interval: None,
            worker_refresh_interval: Duration::from_secs(3600),
            ..IngestConfig::default()
        })
        .build()
        .expect("valid config")
}

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

async fn wait_subscribed(broker: &MemoryBroker) {
    for _ in 0..200 {
        if broker.emit(Event::Worker(WorkerEvent::new(
            WorkerEventKind::Heartbeat,
            "probe@h",
            cnc_core::now(),
        ))) > 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the listener never subscribed");
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
