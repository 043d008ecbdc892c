//! Schema, apply, the fold, duplicates, validation, seen order.

use crate::SCHEMA_VERSION;
use crate::fold;
use crate::model::{
    Event, TaskEvent, TaskEventKind as K, TaskFilter, TaskState as S, WorkerEvent, WorkerEventKind,
};
use crate::store::{SkipReason, StoreErrorKind};
use crate::testkit::StoreFactory;
use crate::testkit::generator::{self, GenConfig, Rng};
use crate::testkit::reference::Reference;

use super::{
    T0, all_tasks, apply, apply_chunks, assert_same_tasks, assert_task, assert_tasks, fails_with,
    ok, ready, sent, task_events, tev,
};

/// `schema_version()` is 0 on a fresh store and [`SCHEMA_VERSION`] after
/// `initialize()`; `initialize()` is idempotent; `info()` names a backend.
pub async fn check_initialize_and_schema_version(factory: &dyn StoreFactory) {
    let store = factory.fresh().await;
    let info = store.info();
    assert!(
        !info.backend.is_empty(),
        "info().backend must name the adapter"
    );
    assert_eq!(
        ok(
            store.schema_version().await,
            "schema_version() before initialize"
        ),
        0,
        "schema_version() of a fresh, uninitialised store must be 0"
    );
    ok(store.initialize().await, "initialize()");
    assert_eq!(
        ok(
            store.schema_version().await,
            "schema_version() after initialize"
        ),
        SCHEMA_VERSION,
        "schema_version() after initialize() must be SCHEMA_VERSION"
    );
    ok(
        store.initialize().await,
        "initialize() a second time (must be idempotent)",
    );
    assert_eq!(
        ok(store.schema_version().await, "schema_version()"),
        SCHEMA_VERSION,
        "a second initialize() must keep SCHEMA_VERSION"
    );
    let mut model = Reference::new();
    let events = task_events(vec![sent("init-1", "app.add", 0.0, 1)]);
    apply(
        &*store,
        &mut model,
        &events,
        "apply after a double initialize",
    )
    .await;
    ok(
        store.initialize().await,
        "initialize() on a store with data",
    );
    assert_same_tasks(&*store, &model, "initialize() must keep data").await;
}

/// `migrate(0, 1)` then `migrate(1, 2)` on a fresh store reach version 2 and
/// leave a working store; a range beyond [`SCHEMA_VERSION`] is refused.
pub async fn check_migrate_step_by_step(factory: &dyn StoreFactory) {
    let store = factory.fresh().await;
    for to in 1..=SCHEMA_VERSION {
        ok(
            store.migrate(to - 1, to).await,
            &format!("migrate({}, {to})", to - 1),
        );
        assert_eq!(
            ok(store.schema_version().await, "schema_version()"),
            to,
            "schema_version() after migrate({}, {to})",
            to - 1
        );
    }
    ok(
        store.initialize().await,
        "initialize() after migrating by hand",
    );
    assert_eq!(
        ok(store.schema_version().await, "schema_version()"),
        SCHEMA_VERSION
    );
    let mut model = Reference::new();
    let g = generator::generate(&GenConfig {
        seed: 11,
        tasks: 30,
        ..GenConfig::default()
    });
    apply(
        &*store,
        &mut model,
        &g.events,
        "apply after step-by-step migration",
    )
    .await;
    assert_same_tasks(&*store, &model, "after step-by-step migration").await;
    fails_with(
        store.migrate(SCHEMA_VERSION, SCHEMA_VERSION + 1).await,
        &[
            StoreErrorKind::InvalidInput,
            StoreErrorKind::Migration,
            StoreErrorKind::SchemaTooNew,
        ],
        "migrate beyond SCHEMA_VERSION must be refused",
    );
}

/// `apply` folds a lifecycle into one task readable by `task(id)`, reports
/// what it did, and `task()` of an unknown id is `None`.
pub async fn check_apply_and_get_task(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    let id = "apply-1";
    let mut received = tev(K::Received, id, 0.5, 2);
    received.root_id = Some(id.to_owned());
    received.retries = Some(0);
    let started = tev(K::Started, id, 1.0, 3);
    let mut done = tev(K::Succeeded, id, 3.25, 4);
    done.result = Some("{'sum': 3}".to_owned());
    done.runtime = Some(2.25);
    let events = task_events(vec![sent(id, "app.add", 0.0, 1), received, started, done]);
    let report = apply(&*store, &mut model, &events, "one lifecycle").await;
    assert_eq!(report.applied, 4, "all four events are applied");
    assert_eq!(report.tasks_created, 1);
    assert_eq!(report.changed_tasks, vec![id.to_owned()]);
    let task = ok(store.task(id).await, "task(id)");
    assert_task(
        task.as_ref(),
        model.task(id),
        "task(id) after one lifecycle",
    );
    let task = task.unwrap_or_else(|| panic!("task {id} missing"));
    assert_eq!(task.state, S::Success, "lifecycle ends in SUCCESS");
    assert_eq!(task.name.as_deref(), Some("app.add"));
    assert_eq!(task.worker.as_deref(), Some("w1@example.com"));
    assert_eq!(task.client.as_deref(), Some("gen42@client.example.com"));
    assert_eq!(task.runtime, Some(2.25));
    assert_eq!(task.created_at, T0);
    assert_eq!(task.succeeded_at, Some(T0 + 3.25));
    assert!(ok(store.task("no-such-task").await, "task(unknown)").is_none());

    // A second batch updates the existing task; report counts it as updated.
    let late = task_events(vec![
        tev(K::Started, id, 0.9, 9),
        sent("apply-2", "app.mul", 5.0, 10),
    ]);
    let report = apply(&*store, &mut model, &late, "late started + new task").await;
    assert_eq!((report.tasks_created, report.tasks_updated), (1, 1));
    assert_same_tasks(&*store, &model, "after two batches").await;
    let batch_with_no_events: Vec<Event> = Vec::new();
    let report = apply(&*store, &mut model, &batch_with_no_events, "empty batch").await;
    assert_eq!(report.applied, 0, "an empty batch applies nothing");
}

/// A scenario for the state transition table: events in arrival order and
/// the state they must end in.
fn scenarios() -> Vec<(&'static str, Vec<TaskEvent>, S, u64)> {
    let mut retried = tev(K::Retried, "", 2.0, 3);
    retried.exception = Some("Retry('in 5s')".to_owned());
    retried.traceback = Some("Traceback ...".to_owned());
    let redelivered = |id: &str, dt: f64, clock: u64, r: u64| {
        let mut e = tev(K::Received, id, dt, clock);
        e.retries = Some(r);
        e
    };
    let with_id = |mut e: TaskEvent, id: &str| {
        e.uuid = id.to_owned();
        e
    };
    let mut failed = tev(K::Failed, "", 3.0, 4);
    failed.exception = Some("KeyError('x')".to_owned());
    failed.traceback = Some("Traceback (most recent call last): KeyError".to_owned());
    let mut done = tev(K::Succeeded, "", 4.0, 5);
    done.result = Some("42".to_owned());
    done.runtime = Some(1.5);
    let mut custom = tev(K::Other("task-progress".to_owned()), "", 1.5, 9);
    custom
        .extra
        .insert("progress".to_owned(), serde_json::json!(50));
    let mut revoked = tev(K::Revoked, "", 1.2, 7);
    revoked.terminated = Some(true);
    revoked.signum = Some(15);
    let mut rejected = tev(K::Rejected, "", 1.0, 3);
    rejected.requeue = Some(false);
    vec![
        (
            "in order to SUCCESS",
            vec![
                sent("s1", "app.a", 0.0, 1),
                tev(K::Received, "s1", 0.5, 2),
                tev(K::Started, "s1", 1.0, 3),
                with_id(done.clone(), "s1"),
            ],
            S::Success,
            0,
        ),
        (
            "late started/received/sent after SUCCESS",
            vec![
                with_id(done.clone(), "s2"),
                tev(K::Started, "s2", 1.0, 3),
                tev(K::Received, "s2", 0.5, 2),
                sent("s2", "app.a", 0.0, 1),
            ],
            S::Success,
            0,
        ),
        (
            "late retried after SUCCESS",
            vec![
                tev(K::Received, "s3", 0.5, 2),
                with_id(done.clone(), "s3"),
                with_id(retried.clone(), "s3"),
            ],
            S::Success,
            1,
        ),
        (
            "FAILURE then SUCCESS: SUCCESS wins",
            vec![with_id(failed.clone(), "s4"), with_id(done.clone(), "s4")],
            S::Success,
            0,
        ),
        (
            "SUCCESS then FAILURE: SUCCESS stays",
            vec![with_id(done.clone(), "s5"), with_id(failed.clone(), "s5")],
            S::Success,
            0,
        ),
        (
            "FAILURE with late started",
            vec![
                tev(K::Received, "s6", 0.5, 2),
                with_id(failed.clone(), "s6"),
                tev(K::Started, "s6", 1.0, 3),
            ],
            S::Failure,
            0,
        ),
        (
            "REVOKED (terminated), late started",
            vec![
                tev(K::Received, "s7", 0.5, 2),
                with_id(revoked.clone(), "s7"),
                tev(K::Started, "s7", 1.0, 3),
            ],
            S::Revoked,
            0,
        ),
        (
            "retry cycle to SUCCESS",
            vec![
                tev(K::Received, "s8", 0.5, 2),
                tev(K::Started, "s8", 1.0, 3),
                with_id(retried.clone(), "s8"),
                redelivered("s8", 7.0, 6, 1),
                tev(K::Started, "s8", 7.5, 7),
                with_id(tev(K::Succeeded, "", 9.0, 8), "s8"),
            ],
            S::Success,
            1,
        ),
        (
            "stuck in RETRY",
            vec![
                tev(K::Received, "s9", 0.5, 2),
                tev(K::Started, "s9", 1.0, 3),
                with_id(retried.clone(), "s9"),
            ],
            S::Retry,
            1,
        ),
        (
            "redelivery seen before its retried event",
            vec![
                tev(K::Received, "s10", 0.5, 2),
                tev(K::Started, "s10", 1.0, 3),
                redelivered("s10", 7.0, 6, 1),
                with_id(retried.clone(), "s10"),
            ],
            S::Received,
            1,
        ),
        (
            "REJECTED",
            vec![tev(K::Received, "s11", 0.5, 2), with_id(rejected, "s11")],
            S::Rejected,
            0,
        ),
        (
            "late received after started",
            vec![
                tev(K::Started, "s12", 1.0, 3),
                tev(K::Received, "s12", 0.5, 2),
            ],
            S::Started,
            0,
        ),
        (
            "custom event keeps state and merges extra",
            vec![
                tev(K::Received, "s13", 0.5, 2),
                tev(K::Started, "s13", 1.0, 3),
                with_id(custom, "s13"),
            ],
            S::Started,
            0,
        ),
        (
            "two retries, then FAILURE",
            vec![
                tev(K::Received, "s14", 0.5, 2),
                tev(K::Started, "s14", 1.0, 3),
                with_id(retried.clone(), "s14"),
                redelivered("s14", 7.0, 6, 1),
                tev(K::Started, "s14", 7.5, 7),
                with_id(tev(K::Retried, "", 8.0, 8), "s14"),
                redelivered("s14", 13.0, 9, 2),
                tev(K::Started, "s14", 13.5, 10),
                with_id(tev(K::Failed, "", 14.0, 11), "s14"),
            ],
            S::Failure,
            2,
        ),
        (
            "revoked before it ran",
            vec![
                sent("s15", "app.a", 0.0, 1),
                with_id(tev(K::Revoked, "", 0.2, 2), "s15"),
            ],
            S::Revoked,
            0,
        ),
    ]
}

/// Every state transition of the fold, including late and out-of-order
/// events, gives the same task whether a scenario arrives as one batch or
/// one event per batch, and the literal expected state and retry count.
pub async fn check_state_transitions(factory: &dyn StoreFactory) {
    let whole = ready(factory).await;
    let single = ready(factory).await;
    let mut model_whole = Reference::new();
    let mut model_single = Reference::new();
    for (what, events, state, retries) in scenarios() {
        let id = events[0].uuid.clone();
        let expected = fold::fold_task(None, &events).unwrap_or_else(|| panic!("{what}: empty"));
        assert_eq!(expected.state, state, "suite self-check: {what}");
        let events = task_events(events);
        apply(&*whole, &mut model_whole, &events, what).await;
        for (i, e) in events.iter().enumerate() {
            apply(
                &*single,
                &mut model_single,
                std::slice::from_ref(e),
                &format!("{what} (event {i} alone)"),
            )
            .await;
        }
        for (store, how) in [(&whole, "one batch"), (&single, "one event per batch")] {
            let got = ok(store.task(&id).await, "task(id)");
            let ctx = format!("{what} ({how})");
            assert_task(got.as_ref(), Some(&expected), &ctx);
            let got = got.unwrap_or_else(|| panic!("{ctx}: missing"));
            assert_eq!(got.state, state, "{ctx}: state");
            assert_eq!(got.retries, retries, "{ctx}: retries");
        }
    }
    assert_same_tasks(&*whole, &model_whole, "state transitions (one batch)").await;
    assert_same_tasks(
        &*single,
        &model_single,
        "state transitions (event by event)",
    )
    .await;
}

/// A realistic stream delivered out of order, in batches of varied size,
/// folds to exactly the model's tasks.
pub async fn check_out_of_order_stream(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    let mut g = generator::generate(&GenConfig {
        seed: 21,
        tasks: 400,
        retry_ratio: 0.25,
        ..GenConfig::default()
    });
    let mut rng = Rng::new(21);
    generator::jitter(&mut g.events, 25, &mut rng);
    let mut rest: &[Event] = &g.events;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (1 + rng.below(120) as usize).min(rest.len());
        apply(
            &*store,
            &mut model,
            &rest[..n],
            &format!("jittered batch {i}"),
        )
        .await;
        rest = &rest[n..];
        i += 1;
    }
    assert_same_tasks(&*store, &model, "after a jittered stream").await;
    for id in g.task_ids.iter().take(50) {
        let got = ok(store.task(id).await, "task(id)");
        assert_task(
            got.as_ref(),
            model.task(id),
            "task(id) after a jittered stream",
        );
    }
}

/// Applying the same events again changes nothing: every task event counts
/// as [`SkipReason::Duplicate`], retries are not counted twice, and a
/// duplicate inside one batch is skipped too.
pub async fn check_duplicates(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    let g = generator::generate(&GenConfig {
        seed: 31,
        tasks: 200,
        retry_ratio: 0.5,
        ..GenConfig::default()
    });
    apply_chunks(&*store, &mut model, &g.events, 97, "first delivery").await;
    let before = all_tasks(&*store, &TaskFilter::default(), "tasks() before replay").await;
    let task_event_count = g
        .events
        .iter()
        .filter(|e| matches!(e, Event::Task(_)))
        .count() as u64;
    let report = apply(&*store, &mut model, &g.events, "replay of the whole stream").await;
    assert_eq!(
        report.skipped_for(SkipReason::Duplicate),
        task_event_count,
        "every replayed task event is a Duplicate"
    );
    assert_eq!(report.tasks_created, 0, "a replay creates no task");
    assert_eq!(report.tasks_updated, 0, "a replay updates no task");
    let after = all_tasks(&*store, &TaskFilter::default(), "tasks() after replay").await;
    assert_tasks(
        &after,
        &before.iter().collect::<Vec<_>>(),
        "a replay changes nothing",
    );
    assert_same_tasks(&*store, &model, "after replay").await;
    let retried: Vec<_> = model
        .all()
        .into_iter()
        .filter(|t| t.retried_events > 0)
        .collect();
    assert!(
        !retried.is_empty(),
        "suite self-check: the stream has retries"
    );
    for t in retried {
        let got = ok(store.task(&t.id).await, "task(id)");
        assert_eq!(
            got.map(|g| g.retries),
            Some(t.retries),
            "retries of {} after replay",
            t.id
        );
        let events = ok(store.task_events(&t.id).await, "task_events(id)");
        assert_eq!(
            events.len(),
            model.events_of(&t.id).len(),
            "events of {} after replay",
            t.id
        );
    }

    // Duplicates within one batch.
    let e = tev(K::Retried, "dup-in-batch", 1.0, 77);
    let events = task_events(vec![e.clone(), e.clone(), e]);
    let report = apply(
        &*store,
        &mut model,
        &events,
        "a batch with the same event three times",
    )
    .await;
    assert_eq!(report.applied, 1);
    assert_eq!(report.skipped_for(SkipReason::Duplicate), 2);
    let got = ok(store.task("dup-in-batch").await, "task(id)");
    assert_eq!(
        got.map(|t| t.retries),
        Some(1),
        "one retried event counts once"
    );

    // Same key = same task, type, host, clock and timestamp to the
    // microsecond: a different clock is a different event.
    let mut other = tev(K::Retried, "dup-in-batch", 1.0, 78);
    other.exception = Some("again".to_owned());
    let report = apply(
        &*store,
        &mut model,
        &task_events(vec![other]),
        "same event, new clock",
    )
    .await;
    assert_eq!(
        report.applied, 1,
        "an event with another clock is not a duplicate"
    );
    let got = ok(store.task("dup-in-batch").await, "task(id)");
    assert_eq!(got.map(|t| t.retries), Some(2));
}

/// Malformed events are skipped and counted by reason while the rest of the
/// batch applies.
pub async fn check_malformed_events_skipped(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    let bad_ts =
        |id: &str, ts: f64| Event::Task(TaskEvent::new(K::Received, id, ts).with_hostname("w1@x"));
    let events = vec![
        Event::Task(sent("ok-1", "app.ok", 0.0, 1)),
        Event::Task(tev(K::Received, "", 0.1, 2)),
        Event::Task(tev(K::Received, "   ", 0.2, 3)),
        Event::Worker(WorkerEvent::new(WorkerEventKind::Online, "", T0)),
        Event::Worker(WorkerEvent::new(WorkerEventKind::Heartbeat, "  ", T0)),
        bad_ts("bad-nan", f64::NAN),
        bad_ts("bad-neg", -5.0),
        bad_ts("bad-zero", 0.0),
        bad_ts("bad-future", 3.0e9),
        bad_ts("bad-inf", f64::INFINITY),
        Event::Worker(WorkerEvent::new(
            WorkerEventKind::Online,
            "w-bad@x",
            f64::NAN,
        )),
        generator::unknown_event("custom-thing", T0),
        generator::unknown_event("", T0),
        Event::Task(tev(K::Started, "ok-1", 1.0, 4)),
        Event::Worker(WorkerEvent::new(
            WorkerEventKind::Online,
            "w-ok@x",
            T0 + 1.0,
        )),
    ];
    let report = apply(
        &*store,
        &mut model,
        &events,
        "a batch with malformed events",
    )
    .await;
    assert_eq!(
        report.skipped_for(SkipReason::MissingTaskId),
        2,
        "empty/blank uuid"
    );
    assert_eq!(
        report.skipped_for(SkipReason::MissingHostname),
        2,
        "empty/blank hostname"
    );
    assert_eq!(
        report.skipped_for(SkipReason::BadTimestamp),
        6,
        "NaN/negative/0/future/inf"
    );
    assert_eq!(
        report.skipped_for(SkipReason::UnknownType),
        2,
        "unknown event types"
    );
    assert_eq!(report.applied, 3, "the valid events still apply");
    for id in [
        "bad-nan",
        "bad-neg",
        "bad-zero",
        "bad-future",
        "bad-inf",
        "",
        "   ",
    ] {
        assert!(
            ok(store.task(id).await, "task(id)").is_none(),
            "a skipped event must not create task {id:?}"
        );
    }
    assert!(ok(store.worker("w-bad@x").await, "worker()").is_none());
    assert!(ok(store.worker("w-ok@x").await, "worker()").is_some());
    assert_same_tasks(&*store, &model, "after malformed events").await;
    let got = ok(store.task("ok-1").await, "task(id)").map(|t| t.state);
    assert_eq!(got, Some(S::Started));
}

/// Default order is seen order, newest first: a task's position is fixed
/// when it is first created (in event order within a batch), whatever its
/// timestamps and later updates.
pub async fn check_seen_order(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    // First seen: b, a, c (timestamps say otherwise).
    let first = task_events(vec![
        tev(K::Received, "b", 30.0, 1),
        tev(K::Received, "a", 10.0, 2),
        tev(K::Started, "b", 31.0, 3),
        tev(K::Received, "c", 20.0, 4),
    ]);
    apply(&*store, &mut model, &first, "seen order batch 1").await;
    let second = task_events(vec![
        tev(K::Started, "b", 32.0, 5),
        tev(K::Received, "d", 5.0, 6),
    ]);
    apply(&*store, &mut model, &second, "seen order batch 2").await;
    let got: Vec<String> = all_tasks(&*store, &TaskFilter::default(), "tasks()")
        .await
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(got, ["d", "c", "a", "b"], "seen order, newest first");
    assert_same_tasks(&*store, &model, "seen order").await;
}
