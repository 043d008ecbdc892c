//! Workers, their history, inspect data and pruning.

use serde_json::json;

use crate::model::{Event, TaskEventKind as K, WorkerEvent, WorkerEventKind as WK, WorkerStatus};
use crate::store::DbController;
use crate::testkit::StoreFactory;
use crate::testkit::generator::{self, GenConfig};
use crate::testkit::reference::Reference;

use super::{T0, apply, assert_json, ok, ready, tev};

fn wev(kind: WK, host: &str, dt: f64, clock: u64) -> Event {
    let mut e = WorkerEvent::new(kind, host, T0 + dt);
    e.clock = clock;
    e.freq = Some(2.0);
    e.pid = Some(4242);
    if kind == WK::Heartbeat {
        e.active = Some(clock % 3);
        e.processed = Some(clock * 10);
        e.loadavg = Some(vec![0.5, 0.25, 0.125]);
    }
    if kind == WK::Online {
        e.sw_ident = Some("py-celery".into());
        e.sw_ver = Some("5.5.3".into());
        e.sw_sys = Some("Linux".into());
    }
    Event::Worker(e)
}

/// Compare every worker and every history with the model.
async fn same_workers(store: &dyn DbController, model: &Reference, what: &str) {
    let got = ok(store.workers().await, "workers()");
    let expected: Vec<_> = model.workers().into_iter().cloned().collect();
    assert_json(&got, &expected, &format!("{what}: workers() by hostname"));
    for w in &expected {
        let one = ok(store.worker(&w.hostname).await, "worker()");
        assert_json(
            &one.as_ref(),
            &Some(w),
            &format!("{what}: worker({})", w.hostname),
        );
        let history = ok(
            store.worker_history(&w.hostname, 1000).await,
            "worker_history()",
        );
        assert_json(
            &history,
            &model.worker_history(&w.hostname, 1000),
            &format!("{what}: worker_history({}) newest first", w.hostname),
        );
    }
}

/// Workers fold from worker events (online, heartbeat, offline, lost);
/// `worker_history` lists transitions newest first, honours `limit`, and
/// task events never create workers.
pub async fn check_workers_and_history(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    let a = "celery@alpha";
    let b = "celery@bravo";
    let first = vec![
        wev(WK::Online, a, 0.0, 1),
        wev(WK::Heartbeat, a, 2.0, 2),
        wev(WK::Online, b, 1.0, 3),
        wev(WK::Heartbeat, a, 4.0, 4),
        wev(WK::Heartbeat, a, 4.0, 4),
        wev(WK::Offline, a, 10.0, 5),
    ];
    apply(&*store, &mut model, &first, "workers batch 1").await;
    let second = vec![
        wev(WK::Heartbeat, a, 5.0, 6),  // late: older than the offline
        wev(WK::Heartbeat, a, 20.0, 7), // back without an online event
        wev(WK::Heartbeat, b, 21.0, 8),
        wev(WK::Heartbeat, "celery@charlie", 22.0, 9),
        Event::Task(tev(K::Received, "task-on-delta", 23.0, 10).with_hostname("celery@delta")),
    ];
    apply(&*store, &mut model, &second, "workers batch 2").await;
    let lost = crate::fold::expired_workers(model.workers(), T0 + 100.0);
    assert!(
        lost.iter().any(|w| w.hostname == a),
        "suite self-check: alpha expires"
    );
    let mut third: Vec<Event> = lost.into_iter().map(Event::Worker).collect();
    third.push(wev(WK::Online, a, 200.0, 11));
    apply(
        &*store,
        &mut model,
        &third,
        "workers batch 3 (lost, restart)",
    )
    .await;
    same_workers(&*store, &model, "after online/heartbeat/offline/lost").await;

    let history = ok(store.worker_history(a, 100).await, "worker_history(alpha)");
    let got: Vec<(WorkerStatus, &str, f64)> = history
        .iter()
        .map(|c| (c.status, c.reason.as_str(), c.timestamp - T0))
        .collect();
    assert_eq!(
        got,
        vec![
            (WorkerStatus::Online, "worker-online", 200.0),
            (WorkerStatus::Offline, "worker-lost", 100.0),
            (WorkerStatus::Online, "worker-heartbeat", 20.0),
            (WorkerStatus::Offline, "worker-offline", 10.0),
            (WorkerStatus::Online, "worker-online", 0.0),
        ],
        "worker_history(alpha): every transition, newest first"
    );
    let two = ok(store.worker_history(a, 2).await, "worker_history(alpha, 2)");
    assert_json(&two, &model.worker_history(a, 2), "worker_history limit 2");
    assert!(
        ok(store.worker("celery@delta").await, "worker()").is_none(),
        "task events do not create workers"
    );
    assert!(ok(store.worker("celery@nobody").await, "worker()").is_none());
    assert!(
        ok(
            store.worker_history("celery@nobody", 10).await,
            "worker_history()"
        )
        .is_empty()
    );

    // A generated cluster: heartbeats and offlines of several workers.
    let store = ready(factory).await;
    let mut model = Reference::new();
    let g = generator::generate(&GenConfig {
        seed: 71,
        tasks: 150,
        workers: 6,
        heartbeat_interval: 30.0,
        ..GenConfig::default()
    });
    super::apply_chunks(&*store, &mut model, &g.events, 200, "generated cluster").await;
    same_workers(&*store, &model, "generated cluster").await;
    assert_eq!(ok(store.workers().await, "workers()").len(), 6);
}

/// `set_worker_info` stores inspect data, creating an unknown worker
/// (`Worker::new(hostname, at)` plus the info), replacing the info of a
/// known one without touching its folded state, and later events keep it.
pub async fn check_set_worker_info(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    let info = json!({
        "stats": {"pool": {"max-concurrency": 8}, "clock": "1234"},
        "active_queues": [{"name": "celery"}],
        "registered": ["app.tasks.send_email", "ünïcødé.tasks.日本"],
        "conf": {"task_acks_late": true}
    });
    ok(
        store
            .set_worker_info("celery@inspected", info.clone(), T0 + 5.0)
            .await,
        "set_worker_info(unknown)",
    );
    model.set_worker_info("celery@inspected", info.clone(), T0 + 5.0);
    let got = ok(store.worker("celery@inspected").await, "worker()");
    let got = got.unwrap_or_else(|| panic!("set_worker_info must create an unknown worker"));
    assert_eq!(got.info.as_ref(), Some(&info));
    assert_eq!(got.info_updated_at, Some(T0 + 5.0));
    assert_eq!(
        got.status,
        WorkerStatus::Offline,
        "a worker only known by inspect is offline"
    );
    same_workers(
        &*store,
        &model,
        "after set_worker_info on an unknown worker",
    )
    .await;

    apply(
        &*store,
        &mut model,
        &[
            wev(WK::Online, "celery@live", 0.0, 1),
            wev(WK::Heartbeat, "celery@live", 2.0, 2),
        ],
        "live worker",
    )
    .await;
    let info2 = json!({"stats": {"total": {"app.tasks.send_email": 3}}});
    ok(
        store
            .set_worker_info("celery@live", info2.clone(), T0 + 3.0)
            .await,
        "set_worker_info(known)",
    );
    model.set_worker_info("celery@live", info2.clone(), T0 + 3.0);
    ok(
        store
            .set_worker_info("celery@inspected", info2.clone(), T0 + 6.0)
            .await,
        "set_worker_info(again)",
    );
    model.set_worker_info("celery@inspected", info2, T0 + 6.0);
    apply(
        &*store,
        &mut model,
        &[
            wev(WK::Heartbeat, "celery@live", 4.0, 3),
            wev(WK::Online, "celery@inspected", 7.0, 4),
        ],
        "events after inspect",
    )
    .await;
    same_workers(
        &*store,
        &model,
        "info replaced, folded state kept, events keep info",
    )
    .await;
}

/// `prune_workers(t)` removes workers offline since before `t`, with their
/// history, keeps online ones and those that went offline later, and
/// returns how many it removed.
pub async fn check_prune_workers(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    let events = vec![
        wev(WK::Online, "celery@old-off", 0.0, 1),
        wev(WK::Offline, "celery@old-off", 10.0, 2),
        wev(WK::Online, "celery@late-off", 0.0, 3),
        wev(WK::Offline, "celery@late-off", 100.0, 4),
        wev(WK::Online, "celery@still-on", 0.0, 5),
        wev(WK::Heartbeat, "celery@still-on", 5.0, 6),
        wev(WK::Online, "celery@mid-off", 0.0, 7),
        wev(WK::Offline, "celery@mid-off", 50.0, 8),
    ];
    apply(&*store, &mut model, &events, "workers to prune").await;
    let removed = ok(store.prune_workers(T0 + 60.0).await, "prune_workers");
    assert_eq!(removed, model.prune_workers(T0 + 60.0));
    assert_eq!(removed, 2, "old-off and mid-off are pruned");
    same_workers(&*store, &model, "after prune_workers").await;
    for gone in ["celery@old-off", "celery@mid-off"] {
        assert!(
            ok(store.worker(gone).await, "worker()").is_none(),
            "{gone} is pruned"
        );
        assert!(
            ok(store.worker_history(gone, 10).await, "worker_history()").is_empty(),
            "{gone}'s history is pruned"
        );
    }
    assert_eq!(
        ok(
            store.worker_history("celery@late-off", 10).await,
            "worker_history()"
        )
        .len(),
        2
    );
    assert_eq!(
        ok(store.prune_workers(T0 + 60.0).await, "prune_workers again"),
        0
    );
}
