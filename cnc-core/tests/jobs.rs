//! The periodic jobs against the in-memory broker, backend and store.

use std::sync::Arc;
use std::time::Duration;

use cnc_core::broker::memory::{MemoryBackend, MemoryBroker};
use cnc_core::broker::{AppConnection, ControlClient, StreamStats, TaskResult};
use cnc_core::bus::EventBus;
use cnc_core::component::{Component, Context, StatusBoard};
use cnc_core::jobs::RepairComponent;
use cnc_core::logs::RecentLogs;
use cnc_core::stores::memory::MemoryStore;
use cnc_core::{DbController, Event, TaskEvent, TaskEventKind, TaskState};
use serde_json::{Value, json};

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
