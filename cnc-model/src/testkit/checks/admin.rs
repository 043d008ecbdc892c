//! Schedules, retention, purge and close.

use serde_json::json;

use crate::model::{
    Event, Heatmap, RuntimeStats, Schedule, ScheduleSpec, StatsQuery, TaskFilter, TaskQuery,
    ThroughputQuery, WorkerEvent, WorkerEventKind as WK,
};
use crate::store::{DbController, StoreErrorKind};
use crate::testkit::StoreFactory;
use crate::testkit::generator::GenConfig;

use super::query::dataset;
use super::{T0, apply, assert_events, assert_json, assert_same_tasks, fails_with, ok, ready};

fn schedules() -> Vec<Schedule> {
    let mut a = Schedule::new(
        "a-every-30s",
        "app.tasks.cleanup_sessions",
        ScheduleSpec::Interval { every: 30.0 },
        T0,
    );
    a.args = json!([1, "two", {"three": 3.5}]);
    a.kwargs = json!({"dry_run": false, "tenant": "tenant-001"});
    a.queue = Some("periodic".into());
    a.priority = Some(7);
    a.expires = Some(12.5);
    a.description = Some("Nettoyage des sessions \u{1F9F9} 清理".into());
    a.last_run_at = Some(T0 + 30.0);
    a.total_run_count = 3;
    let b = Schedule::new(
        "b-nightly",
        "reports.tasks.generate_report",
        ScheduleSpec::Crontab {
            minute: "0".into(),
            hour: "3".into(),
            day_of_week: "mon-fri".into(),
            day_of_month: "*".into(),
            month_of_year: "*".into(),
            timezone: Some("Europe/Paris".into()),
        },
        T0 + 1.0,
    );
    let mut c = Schedule::new(
        "c-once",
        "billing.tasks.charge_card",
        ScheduleSpec::Clocked { at: T0 + 86_400.0 },
        T0 + 2.0,
    );
    c.enabled = false;
    vec![a, b, c]
}

/// Schedules CRUD: upsert creates and replaces by name, `schedules()` is by
/// name, `delete_schedule` says whether it existed, `delete_all_schedules`
/// returns how many it removed.
pub async fn check_schedules(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    assert!(
        ok(store.schedules().await, "schedules()").is_empty(),
        "a fresh store has no schedule"
    );
    let mut list = schedules();
    for s in list.iter().rev() {
        ok(store.upsert_schedule(s).await, "upsert_schedule(new)");
    }
    assert_json(
        &ok(store.schedules().await, "schedules()"),
        &list,
        "schedules() by name",
    );
    assert_json(
        &ok(store.schedule("b-nightly").await, "schedule()"),
        &Some(list[1].clone()),
        "schedule(name)",
    );
    assert!(ok(store.schedule("nope").await, "schedule(unknown)").is_none());
    let mut changed = list[1].clone();
    changed.spec = ScheduleSpec::Interval { every: 3600.0 };
    changed.enabled = false;
    changed.args = json!(["x"]);
    changed.total_run_count = 42;
    changed.updated_at = T0 + 99.0;
    ok(
        store.upsert_schedule(&changed).await,
        "upsert_schedule(existing)",
    );
    list[1] = changed.clone();
    assert_json(
        &ok(store.schedules().await, "schedules()"),
        &list,
        "upsert replaces by name",
    );
    assert!(
        ok(
            store.delete_schedule("a-every-30s").await,
            "delete_schedule"
        ),
        "deleting an existing schedule returns true"
    );
    assert!(
        !ok(
            store.delete_schedule("a-every-30s").await,
            "delete_schedule again"
        ),
        "deleting it again returns false"
    );
    assert!(!ok(
        store.delete_schedule("never-there").await,
        "delete_schedule(unknown)"
    ));
    assert_json(
        &ok(store.schedules().await, "schedules()"),
        &list[1..].to_vec(),
        "after delete",
    );
    assert_eq!(
        ok(store.delete_all_schedules().await, "delete_all_schedules"),
        2
    );
    assert!(ok(store.schedules().await, "schedules()").is_empty());
    assert_eq!(
        ok(
            store.delete_all_schedules().await,
            "delete_all_schedules on none"
        ),
        0
    );
}

/// `cleanup(t)` removes tasks with `updated_at < t` and their events (their
/// ids are free again), worker history older than `t`, keeps everything
/// newer and every worker, and leaves the aggregates consistent.
pub async fn check_cleanup(factory: &dyn StoreFactory) {
    let (store, mut model, g) = dataset(factory, 121, 500).await;
    let start = GenConfig::default().start;
    let cut = start + 3600.0;
    let before_workers = ok(store.workers().await, "workers()");
    let expected = model.cleanup(cut);
    let got = ok(store.cleanup(cut).await, "cleanup(t)");
    assert_eq!(
        got, expected,
        "CleanupReport (tasks, events, worker history removed)"
    );
    assert!(
        expected.tasks > 50 && !model.is_empty() && expected.worker_history > 0,
        "suite self-check: cleanup removes some and keeps some"
    );
    assert_same_tasks(&*store, &model, "after cleanup").await;
    for id in &g.task_ids {
        let got = ok(store.task_events(id).await, "task_events(id)");
        assert_events(
            &got,
            &model.events_of(id),
            &format!("task_events({id}) after cleanup"),
        );
    }
    assert_json(
        &ok(store.workers().await, "workers()"),
        &before_workers,
        "cleanup keeps workers",
    );
    for w in &g.workers {
        let got = ok(store.worker_history(w, 1000).await, "worker_history()");
        assert_json(
            &got,
            &model.worker_history(w, 1000),
            &format!("worker_history({w}) after cleanup"),
        );
    }
    let q = StatsQuery::default();
    assert_json(
        &ok(store.task_names().await, "task_names"),
        &model.task_names(),
        "task_names after cleanup",
    );
    assert_json(
        &ok(store.state_distribution(&q).await, "state_distribution"),
        &model.state_distribution(&q),
        "state_distribution after cleanup",
    );
    assert_json(
        &ok(store.name_distribution(&q).await, "name_distribution"),
        &model.name_distribution(&q),
        "name_distribution after cleanup",
    );
    assert_json(
        &ok(store.heatmap(&q).await, "heatmap"),
        &model.heatmap(&q),
        "heatmap after cleanup",
    );
    let got = ok(store.runtime_stats(&q).await, "runtime_stats");
    let want = model.runtime_stats(&q);
    assert_eq!(
        (got.count, got.min, got.max, got.p50, got.p95, got.p99),
        (want.count, want.min, want.max, want.p50, want.p95, want.p99),
        "runtime_stats after cleanup"
    );
    // Buckets from the cut on (older minutes may be gone from aggregates).
    let tq = ThroughputQuery {
        scope: q.clone(),
        from: cut,
        to: start + 9000.0,
        bucket_seconds: 60,
    };
    assert_json(
        &ok(store.throughput(&tq).await, "throughput"),
        &model.throughput(&tq).unwrap_or_default(),
        "throughput from the cut on, after cleanup",
    );

    // Removed events are gone for good: delivering them again recreates tasks.
    apply(
        &*store,
        &mut model,
        &g.events,
        "the whole stream again after cleanup",
    )
    .await;
    assert_same_tasks(&*store, &model, "after re-delivery").await;
    // Nothing older: a second cleanup at the same time removes only what the
    // re-delivery brought back.
    let expected = model.cleanup(cut);
    assert_eq!(ok(store.cleanup(cut).await, "cleanup again"), expected);
    assert_same_tasks(&*store, &model, "after the second cleanup").await;
}

/// `purge()` removes tasks, events, workers, history and aggregates but
/// keeps schedules; the store works as new afterwards.
pub async fn check_purge_keeps_schedules(factory: &dyn StoreFactory) {
    let (store, mut model, g) = dataset(factory, 131, 200).await;
    for s in schedules() {
        ok(store.upsert_schedule(&s).await, "upsert_schedule");
    }
    ok(
        store
            .set_worker_info("celery@inspected", json!({"x": 1}), T0)
            .await,
        "set_worker_info",
    );
    ok(store.purge().await, "purge()");
    model.purge();
    assert_same_tasks(&*store, &model, "after purge").await;
    assert!(
        ok(store.workers().await, "workers()").is_empty(),
        "purge removes workers"
    );
    assert!(ok(store.worker("celery@inspected").await, "worker()").is_none());
    for w in &g.workers {
        assert!(
            ok(store.worker_history(w, 10).await, "worker_history()").is_empty(),
            "purge removes history"
        );
    }
    for id in g.task_ids.iter().take(20) {
        assert!(
            ok(store.task_events(id).await, "task_events()").is_empty(),
            "purge removes events"
        );
    }
    let q = StatsQuery::default();
    assert!(ok(store.task_names().await, "task_names").is_empty());
    assert!(ok(store.state_distribution(&q).await, "state_distribution").is_empty());
    assert!(ok(store.name_distribution(&q).await, "name_distribution").is_empty());
    assert_eq!(
        ok(store.runtime_stats(&q).await, "runtime_stats"),
        RuntimeStats::default()
    );
    assert_eq!(ok(store.heatmap(&q).await, "heatmap"), Heatmap::default());
    let start = GenConfig::default().start;
    let tq = ThroughputQuery {
        scope: q,
        from: start - 600.0,
        to: start + 8000.0,
        bucket_seconds: 300,
    };
    let buckets = ok(store.throughput(&tq).await, "throughput");
    assert!(
        !buckets.is_empty() && buckets.iter().all(|b| b.finished() == 0 && b.retried == 0),
        "purge removes aggregates"
    );
    assert_json(
        &ok(store.schedules().await, "schedules()"),
        &schedules(),
        "purge keeps schedules",
    );
    // Works as new: the same events apply again (their keys are gone).
    super::apply_chunks(&*store, &mut model, &g.events, 400, "after purge").await;
    assert_same_tasks(&*store, &model, "re-applied after purge").await;
}

/// After `close()`, every call fails with [`StoreErrorKind::Closed`].
pub async fn check_close(factory: &dyn StoreFactory) {
    let (store, _, _) = dataset(factory, 137, 20).await;
    ok(store.close().await, "close()");
    let closed = [StoreErrorKind::Closed];
    let s: &dyn DbController = &*store;
    let q = StatsQuery::default();
    let tq = ThroughputQuery {
        scope: q.clone(),
        from: T0,
        to: T0 + 60.0,
        bucket_seconds: 60,
    };
    let ev = [Event::Worker(WorkerEvent::new(WK::Online, "celery@x", T0))];
    let sched = &schedules()[0];
    fails_with(s.initialize().await, &closed, "initialize() after close");
    fails_with(
        s.schema_version().await,
        &closed,
        "schema_version() after close",
    );
    fails_with(s.migrate(0, 1).await, &closed, "migrate() after close");
    fails_with(s.apply(&ev).await, &closed, "apply() after close");
    fails_with(s.task("x").await, &closed, "task() after close");
    fails_with(
        s.tasks(&TaskQuery::default()).await,
        &closed,
        "tasks() after close",
    );
    fails_with(
        s.count_tasks(&TaskFilter::default()).await,
        &closed,
        "count_tasks() after close",
    );
    fails_with(
        s.task_events("x").await,
        &closed,
        "task_events() after close",
    );
    fails_with(s.relations("x").await, &closed, "relations() after close");
    fails_with(s.workers().await, &closed, "workers() after close");
    fails_with(s.worker("x").await, &closed, "worker() after close");
    fails_with(
        s.worker_history("x", 10).await,
        &closed,
        "worker_history() after close",
    );
    fails_with(
        s.set_worker_info("x", json!({}), T0).await,
        &closed,
        "set_worker_info() after close",
    );
    fails_with(
        s.prune_workers(T0).await,
        &closed,
        "prune_workers() after close",
    );
    fails_with(s.task_names().await, &closed, "task_names() after close");
    fails_with(
        s.runtime_stats(&q).await,
        &closed,
        "runtime_stats() after close",
    );
    fails_with(s.throughput(&tq).await, &closed, "throughput() after close");
    fails_with(
        s.state_distribution(&q).await,
        &closed,
        "state_distribution() after close",
    );
    fails_with(
        s.name_distribution(&q).await,
        &closed,
        "name_distribution() after close",
    );
    fails_with(s.heatmap(&q).await, &closed, "heatmap() after close");
    fails_with(s.schedules().await, &closed, "schedules() after close");
    fails_with(s.schedule("x").await, &closed, "schedule() after close");
    fails_with(
        s.upsert_schedule(sched).await,
        &closed,
        "upsert_schedule() after close",
    );
    fails_with(
        s.delete_schedule("x").await,
        &closed,
        "delete_schedule() after close",
    );
    fails_with(
        s.delete_all_schedules().await,
        &closed,
        "delete_all_schedules() after close",
    );
    fails_with(s.cleanup(T0).await, &closed, "cleanup() after close");
    fails_with(s.purge().await, &closed, "purge() after close");
}
