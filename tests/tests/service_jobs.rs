//! The service's repair job against a real Redis result backend and a real
//! Celery worker: tasks whose final events were lost (the worker runs with
//! task events off) are left STARTED in the store an hour ago; the running
//! service reconciles them from the backend, with the real result and the
//! real exception and traceback, and leaves alone what it must not touch.

mod common;

use std::path::Path;
use std::time::Duration;

use cnc_core::config::{CeleryApp, CeleryCncConfig, DatabaseConfig, IngestConfig};
use cnc_core::stores::sqlite::{SqliteConfig, SqliteStore};
use cnc_core::{CeleryCnc, DbController, Event, TaskEvent, TaskEventKind, TaskState};
use cnc_testsupport::{CeleryWorker, RedisDb, WorkerOpts, run_python};
use serde_json::Value;

use common::wait_task;

/// Runs a success and a failure with the real Celery client, waits for
/// both results (so the backend holds them), prints their ids as JSON.
const WORKLOAD: &str = r#"
import json
from cnc_testapp import add, fail_always

ok = add.delay(2, 3)
young = add.delay(20, 1)
fail = fail_always.delay('kaboom')
assert ok.get(timeout=30) == 5
assert young.get(timeout=30) == 21
try:
    fail.get(timeout=30)
    raise SystemExit('fail_always succeeded')
except ValueError:
    pass
print(json.dumps({'ok': ok.id, 'young': young.id, 'fail': fail.id}))
"#;

fn id(ids: &Value, key: &str) -> String {
    ids[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {ids}"))
        .to_owned()
}

/// `task-received` then `task-started` at `at`, and nothing after: as if
/// the final event was lost.
fn stuck(id: &str, name: &str, worker: &str, at: f64) -> [Event; 2] {
    let mut received = TaskEvent::new(TaskEventKind::Received, id, at).with_hostname(worker);
    received.name = Some(name.into());
    [
        Event::Task(received),
        Event::Task(TaskEvent::new(TaskEventKind::Started, id, at + 0.5).with_hostname(worker)),
    ]
}

async fn seed(db: &Path, events: &[Event]) {
    let store = SqliteStore::open(SqliteConfig::new(db)).expect("open seed store");
    store.initialize().await.expect("init seed store");
    store.apply(events).await.expect("seed");
    store.close().await.expect("close seed store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stuck_tasks_are_repaired_from_a_real_redis_backend() {
    let redis = RedisDb::acquire().expect("redis db");
    let url = redis.url();
    let worker_name = format!("wrepair@{}", cnc_testsupport::unique("e2e"));

    // A real worker with task events off: the service can only learn the
    // outcome from the result backend.
    let mut opts = WorkerOpts::new(&worker_name, &url)
        .backend(&url)
        .concurrency(1);
    opts.events = false;
    let mut worker = tokio::task::spawn_blocking(move || CeleryWorker::start(opts))
        .await
        .expect("join")
        .expect("worker starts");
    let out = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            run_python(WORKLOAD, &[("CNC_BROKER", &url), ("CNC_BACKEND", &url)])
        })
        .await
        .expect("join")
        .expect("workload runs")
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let ids: Value = serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("workload output {text:?}: {e}"));
    let (ok_id, young_id, fail_id) = (id(&ids, "ok"), id(&ids, "young"), id(&ids, "fail"));
    let unknown_id = "no-result-anywhere".to_owned();

    // The store as the service left it when the final events were lost:
    // STARTED an hour ago; `young` STARTED moments ago (younger than
    // repair_after, so not checked yet); `unknown` has no backend result.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cnc.db");
    let now = cnc_core::now();
    let hour_ago = now - 3600.0;
    let mut events = Vec::new();
    events.extend(stuck(&ok_id, "cnc.add", &worker_name, hour_ago));
    events.extend(stuck(&fail_id, "cnc.fail_always", &worker_name, hour_ago));
    events.extend(stuck(&unknown_id, "cnc.add", &worker_name, hour_ago));
    events.extend(stuck(&young_id, "cnc.add", &worker_name, now - 5.0));
    seed(&db, &events).await;

    // Repair checks tasks not updated for `repair_after` (5 min here, well
    // under the hour they have been stuck), every second. No
    // enable_events broadcast, so the worker itself reports nothing.
    let cfg = CeleryCncConfig::builder()
        .app(CeleryApp::new("redis", &url).backend(&url))
        .database(DatabaseConfig::sqlite(&db))
        .logging(None)
        .frontend(None)
        .ingest(IngestConfig {
            batch_interval: Duration::from_millis(50),
            enable_events_interval: None,
            worker_refresh_interval: Duration::from_secs(3600),
            repair_after: Some(Duration::from_secs(300)),
            repair_interval: Duration::from_secs(1),
            ..IngestConfig::default()
        })
        .build()
        .expect("valid config");
    let running = CeleryCnc::new(cfg)
        .without_global_subscriber()
        .start()
        .await
        .expect("service starts");
    let store = running.store().clone();

    let t = Duration::from_secs(30);
    let ok = wait_task(&store, &ok_id, TaskState::Success, t).await;
    assert_eq!(ok.result.as_deref(), Some("5"), "{ok:?}");
    assert_eq!(ok.name.as_deref(), Some("cnc.add"), "kept from the events");
    assert!(
        ok.updated_at > hour_ago + 1800.0,
        "the final state is dated by the backend's date_done: {ok:?}"
    );

    let fail = wait_task(&store, &fail_id, TaskState::Failure, t).await;
    assert_eq!(
        fail.exception.as_deref(),
        Some("ValueError('kaboom')"),
        "{fail:?}"
    );
    let tb = fail.traceback.as_deref().unwrap_or_default();
    assert!(
        tb.starts_with("Traceback (most recent call last):")
            && tb.contains("fail_always")
            && tb.contains("ValueError: kaboom"),
        "the worker's traceback: {tb:?}"
    );

    // The final events came from the repair job, not from the worker.
    for task in [&ok_id, &fail_id] {
        let stored = store.task_events(task).await.expect("events");
        let finals: Vec<_> = stored
            .iter()
            .filter(|e| e.kind == "task-succeeded" || e.kind == "task-failed")
            .collect();
        assert_eq!(finals.len(), 1, "{stored:#?}");
        assert_eq!(
            finals[0].fields["cnc_repaired_from"], "result_backend",
            "{stored:#?}"
        );
    }

    // A couple more passes: what has no result, or is too young, stays.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (task, why) in [(&unknown_id, "no backend result"), (&young_id, "too young")] {
        let t = store.task(task).await.expect("read").expect("stored");
        assert_eq!(t.state, TaskState::Started, "{why}: {t:?}");
    }

    let report = running.stop().await.expect("clean stop");
    let repair = report
        .components
        .iter()
        .find(|c| c.name == "repair")
        .expect("the repair component ran");
    assert_eq!(repair.info.config["repaired_total"], 2, "{repair:?}");
    assert_eq!(
        repair.info.config["backends"],
        serde_json::json!(["redis"]),
        "{repair:?}"
    );
    assert_eq!(repair.info.config["after_s"], 300, "{repair:?}");
    worker.stop(Duration::from_secs(5));
}
