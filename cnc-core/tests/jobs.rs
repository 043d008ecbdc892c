//! The periodic jobs: the repair pass against the in-memory broker,
//! backend and store; retention cleanup in the running service, on its
//! schedule, over a real SQLite store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use std::path::Path;
use std::time::Instant;

use cnc_core::broker::memory::{MemoryBackend, MemoryBroker};
use cnc_core::broker::{AppConnection, ControlClient, StreamStats, TaskResult};
use cnc_core::bus::{BusMessage, EventBus};
use cnc_core::component::{Component, ComponentState, Context, StatusBoard};
use cnc_core::config::DatabaseConfig;
use cnc_core::jobs::RepairComponent;
use cnc_core::logs::RecentLogs;
use cnc_core::stores::memory::MemoryStore;
use cnc_core::stores::sqlite::{SqliteConfig, SqliteStore};
use cnc_core::{
    CeleryCnc, DbController, Event, Running, TaskEvent, TaskEventKind, TaskFilter, TaskState,
};
use serde_json::{Value, json};

use common::{config, wait_subscribed};

#[tokio::test]
async fn stuck_tasks_are_repaired_from_the_result_backend() {
    let store: Arc<dyn DbController> = Arc::new(MemoryStore::new());
    let old = cnc_core::now() - 3600.0;
    // Three tasks stuck in STARTED an hour ago, one fresh.
    let mut events = Vec::new();
    for id in ["done", "failed", "unknown"] {
        let mut r = TaskEvent::new(TaskEventKind::Received, id, old).with_hostname("w@h");
        r.name = Some("cnc.add".into());
        events.push(Event::Task(r));
        events.push(Event::Task(
            TaskEvent::new(TaskEventKind::Started, id, old + 1.0).with_hostname("w@h"),
        ));
    }
    events.push(Event::Task(TaskEvent::new(
        TaskEventKind::Received,
        "fresh",
        cnc_core::now(),
    )));
    store.apply(&events).await.expect("apply");

    let backend = MemoryBackend::default();
    let result = |id: &str, status: &str, result: Value, tb: Option<&str>| TaskResult {
        task_id: id.into(),
        status: status.into(),
        result,
        traceback: tb.map(str::to_owned),
        date_done: Some("2026-11-22T08:00:00+00:00".into()),
        name: None,
        raw: Value::Null,
    };
    backend.store(result("done", "SUCCESS", json!(42), None));
    backend.store(result(
        "failed",
        "FAILURE",
        json!({"exc_type": "KeyError", "exc_message": ["x"], "exc_module": "builtins"}),
        Some("Traceback (most recent call last):\nKeyError: 'x'"),
    ));
    backend.store(result("fresh", "SUCCESS", json!(1), None));
    let broker = Arc::new(MemoryBroker::new());
    let app = AppConnection {
        name: "mem".into(),
        broker_url: "memory://".into(),
        control: ControlClient::new(broker.clone()),
        broker,
        backend: Some(Arc::new(backend)),
        default_queue: "celery".into(),
        stream_stats: StreamStats::new(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(100);
    let mut repair = RepairComponent::new(
        Duration::from_secs(600),
        Duration::from_secs(60),
        vec![app],
        tx,
    );
    let ctx = Context {
        store: store.clone(),
        bus: EventBus::default(),
        logs: Arc::new(RecentLogs::new(10)),
        status: StatusBoard::new(),
    };
    repair.build(&ctx).await.expect("build");
    assert_eq!(
        repair.pass().await,
        2,
        "done and failed; unknown has no result, fresh is young"
    );
    let mut sent = Vec::new();
    while let Ok(e) = rx.try_recv() {
        sent.push(e);
    }
    store.apply(&sent).await.expect("apply repairs");
    let done = store.task("done").await.expect("read").expect("there");
    assert_eq!(done.state, TaskState::Success);
    assert_eq!(done.result.as_deref(), Some("42"));
    let failed = store.task("failed").await.expect("read").expect("there");
    assert_eq!(failed.state, TaskState::Failure);
    assert_eq!(failed.exception.as_deref(), Some("KeyError('x')"));
    assert!(
        failed
            .traceback
            .as_deref()
            .is_some_and(|t| t.contains("KeyError"))
    );
    let unknown = store.task("unknown").await.expect("read").expect("there");
    assert_eq!(unknown.state, TaskState::Started);
    // A second pass does not ask again about tasks it just checked.
    assert_eq!(repair.pass().await, 0);
}

// Retention cleanup in the running service.

/// A finished task whose events happened at `at`.
fn finished_task(id: &str, at: f64) -> [Event; 3] {
    let mut received = TaskEvent::new(TaskEventKind::Received, id, at).with_hostname("w@h");
    received.name = Some("cnc.add".into());
    let mut succeeded = TaskEvent::new(TaskEventKind::Succeeded, id, at + 0.2).with_hostname("w@h");
    succeeded.result = Some("3".into());
    [
        Event::Task(received),
        Event::Task(TaskEvent::new(TaskEventKind::Started, id, at + 0.1).with_hostname("w@h")),
        Event::Task(succeeded),
    ]
}

/// Write `tasks` into the SQLite file at `db` before the service opens it.
async fn seed(db: &Path, tasks: &[(&str, f64)]) {
    let store = SqliteStore::open(SqliteConfig::new(db)).expect("open seed store");
    store.initialize().await.expect("init seed store");
    let events: Vec<Event> = tasks
        .iter()
        .flat_map(|(id, at)| finished_task(id, *at))
        .collect();
    store.apply(&events).await.expect("seed");
    store.close().await.expect("close seed store");
}

async fn stored(store: &Arc<dyn DbController>, id: &str) -> bool {
    store.task(id).await.expect("read task").is_some()
}

fn store_status(running: &Running) -> cnc_core::component::ComponentStatus {
    running
        .status()
        .into_iter()
        .find(|s| s.name == "store")
        .expect("the store component is listed")
}

/// The store component's status once it is up (its summary is set then).
async fn store_up(running: &Running) -> cnc_core::component::ComponentStatus {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = store_status(running);
        if s.state == ComponentState::Up {
            return s;
        }
        assert!(Instant::now() < deadline, "store never up: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_cleanup_runs_on_its_schedule_and_keeps_fresh_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cnc.db");
    let now = cnc_core::now();
    let two_hours_ago = now - 7200.0;
    seed(
        &db,
        &[
            ("old-1", two_hours_ago),
            ("old-2", two_hours_ago + 60.0),
            ("fresh-1", now - 60.0),
        ],
    )
    .await;

    let mut database = DatabaseConfig::sqlite(&db).retention(Duration::from_secs(3600));
    database.cleanup_interval = Duration::from_secs(1);
    let broker = MemoryBroker::new();
    let running = CeleryCnc::new(config(database))
        .with_broker("memory://", Arc::new(broker.clone()))
        .start()
        .await
        .expect("start");
    let store = running.store().clone();

    let status = store_up(&running).await;
    assert_eq!(status.info.config["retention_s"], 3600, "{status:?}");
    assert_eq!(status.info.config["cleanup_interval_s"], 1, "{status:?}");
    assert_eq!(status.info.config["backend"], "sqlite", "{status:?}");

    // The pre-seeded history: the old tasks go, the fresh one stays.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stored(&store, "old-1").await || stored(&store, "old-2").await {
        assert!(
            Instant::now() < deadline,
            "old tasks not removed by the schedule in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stored(&store, "fresh-1").await, "a fresh task was removed");

    // The cleanup repeats: old events ingested while the service runs are
    // written, then removed by a later pass (which announces a resync).
    let mut bus = running.bus().subscribe();
    wait_subscribed(&broker).await;
    let old_at = cnc_core::now() - 7200.0;
    for e in finished_task("old-late", old_at)
        .into_iter()
        .chain(finished_task("fresh-late", cnc_core::now()))
    {
        broker.emit(e);
    }
    let written_at = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match bus.recv().await {
                Ok(BusMessage::Batch(b))
                    if b.events
                        .iter()
                        .any(|e| matches!(e, Event::Task(t) if t.uuid == "old-late")) =>
                {
                    return Instant::now();
                }
                Ok(_) => {}
                Err(e) => panic!("bus: {e}"),
            }
        }
    })
    .await
    .expect("the old events were written");
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match bus.recv().await {
                Ok(BusMessage::Resync) => return,
                Ok(_) => {}
                Err(e) => panic!("bus: {e}"),
            }
        }
    })
    .await
    .expect("a later cleanup pass removed something and announced a resync");
    assert!(
        written_at.elapsed() < Duration::from_secs(3),
        "the next pass came {:?} after the write (interval 1 s)",
        written_at.elapsed()
    );
    assert!(!stored(&store, "old-late").await, "old task still stored");
    assert!(
        store
            .task_events("old-late")
            .await
            .expect("events")
            .is_empty(),
        "its events are gone too"
    );

    // More passes leave the fresh tasks alone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(stored(&store, "fresh-1").await);
    assert!(stored(&store, "fresh-late").await);
    assert_eq!(
        store
            .count_tasks(&TaskFilter::default())
            .await
            .expect("count"),
        2
    );
    assert_eq!(store_status(&running).state, ComponentState::Up);
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retention_nothing_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cnc.db");
    let now = cnc_core::now();
    seed(
        &db,
        &[("old-1", now - 30.0 * 86_400.0), ("fresh-1", now - 60.0)],
    )
    .await;
    let mut database = DatabaseConfig::sqlite(&db);
    database.retention = None;
    database.cleanup_interval = Duration::from_secs(1);
    let broker = MemoryBroker::new();
    let running = CeleryCnc::new(config(database))
        .with_broker("memory://", Arc::new(broker.clone()))
        .start()
        .await
        .expect("start");
    let status = store_up(&running).await;
    assert_eq!(status.info.config["retention_s"], Value::Null, "{status:?}");
    assert_eq!(status.info.config["cleanup_interval_s"], 1, "{status:?}");
    wait_subscribed(&broker).await;
    for e in finished_task("old-late", cnc_core::now() - 7200.0) {
        broker.emit(e);
    }
    // Several cleanup intervals pass.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let store = running.store().clone();
    for id in ["old-1", "fresh-1", "old-late"] {
        assert!(stored(&store, id).await, "{id} was removed");
    }
    assert_eq!(store_status(&running).state, ComponentState::Up);
    running.stop().await.expect("stop");
}
