//! Stored events of a task, and workflow relations.

use serde_json::json;

use crate::model::{RelationKind, TaskEvent, TaskEventKind as K};
use crate::testkit::StoreFactory;
use crate::testkit::generator::{self, GenConfig, Rng};
use crate::testkit::reference::Reference;

use super::{apply, apply_chunks, assert_events, assert_json, ok, ready, sent, task_events, tev};

/// `task_events(id)`: every stored event of the task once, oldest first by
/// timestamp then clock, whatever the arrival order; `fields` is the event's
/// JSON without `type`, `uuid`, `hostname`, `timestamp`, `clock`, `name`,
/// `args` and `kwargs` (null fields may be left out).
pub async fn check_task_events(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    let id = "ev-1";
    let mut received = tev(K::Received, id, 1.0, 20);
    received.name = Some("app.tasks.send_email".into());
    received.args = Some("(1, 2)".into());
    received.kwargs = Some("{'a': 1}".into());
    received.root_id = Some(id.into());
    received.retries = Some(0);
    received.eta = Some("2026-01-05T00:00:05+00:00".into());
    let mut progress_a = tev(K::Other("task-progress".into()), id, 2.0, 31);
    progress_a.extra.insert("progress".into(), json!(10));
    progress_a
        .extra
        .insert("note".into(), json!({"stage": "download", "ok": true}));
    progress_a.pid = Some(77);
    progress_a.utcoffset = Some(-1.0);
    let mut progress_b = tev(K::Other("task-progress".into()), id, 2.0, 30);
    progress_b.extra.insert("progress".into(), json!(5));
    let mut done = tev(K::Succeeded, id, 3.5, 40);
    done.result = Some("{'status': 'ok'}".into());
    done.runtime = Some(1.25);
    let started = tev(K::Started, id, 1.5, 25);
    // Arrival order: newest first, and the two same-timestamp events by
    // descending clock.
    let events = task_events(vec![
        done.clone(),
        progress_a.clone(),
        progress_b.clone(),
        started,
        received,
        sent(id, "app.tasks.send_email", 0.0, 10),
    ]);
    apply(&*store, &mut model, &events, "events in reverse order").await;
    let got = ok(store.task_events(id).await, "task_events(id)");
    assert_events(&got, &model.events_of(id), "task_events(id) oldest first");
    let kinds: Vec<&str> = got.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "task-sent",
            "task-received",
            "task-started",
            "task-progress",
            "task-progress",
            "task-succeeded"
        ],
        "timestamp order"
    );
    assert_eq!(
        (got[3].clock, got[4].clock),
        (30, 31),
        "same timestamp: by clock"
    );
    assert_eq!(
        got[4].fields,
        json!({"progress": 10, "note": {"stage": "download", "ok": true}, "pid": 77, "utcoffset": -1.0}),
        "fields of a custom event: its own fields and extras"
    );
    assert_eq!(
        got[5].fields,
        json!({"result": "{'status': 'ok'}", "runtime": 1.25})
    );
    assert_eq!(got[1].hostname.as_deref(), Some("w1@example.com"));
    assert_eq!(got[1].task_id, id);
    let keys_of_received: Vec<&String> = got[1]
        .fields
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    for k in [
        "name",
        "args",
        "kwargs",
        "type",
        "uuid",
        "hostname",
        "timestamp",
        "clock",
    ] {
        assert!(
            !keys_of_received.iter().any(|x| *x == k),
            "`{k}` is not in fields"
        );
    }
    assert!(
        ok(
            store.task_events("no-such-task").await,
            "task_events(unknown)"
        )
        .is_empty()
    );

    // A realistic jittered stream: every task's events.
    let mut g = generator::generate(&GenConfig {
        seed: 111,
        tasks: 120,
        ..GenConfig::default()
    });
    generator::jitter(&mut g.events, 15, &mut Rng::new(5));
    apply_chunks(&*store, &mut model, &g.events, 64, "jittered stream").await;
    for tid in &g.task_ids {
        let got = ok(store.task_events(tid).await, "task_events(id)");
        assert_events(&got, &model.events_of(tid), &format!("task_events({tid})"));
    }
}

/// `relations(root)`: the root and every task whose `root_id` is it
/// (chains, groups, chords), by `created_at` then seen order; nothing from
/// other workflows; a root without a `root_id` of its own still counts.
pub async fn check_relations(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    let link = |kind: K,
                id: &str,
                dt: f64,
                clock: u64,
                root: Option<&str>,
                parent: Option<&str>,
                group: Option<&str>,
                chord: Option<&str>| {
        let mut e: TaskEvent = tev(kind, id, dt, clock);
        e.name = Some(format!("wf.{id}"));
        e.root_id = root.map(str::to_owned);
        e.parent_id = parent.map(str::to_owned);
        e.group_id = group.map(str::to_owned);
        e.chord_id = chord.map(str::to_owned);
        e
    };
    let r = Some("r");
    let events = task_events(vec![
        link(K::Received, "r", 0.0, 1, r, None, None, None),
        link(K::Received, "c1", 1.0, 2, r, Some("r"), None, None),
        link(K::Received, "c2", 2.0, 3, r, Some("c1"), None, None),
        // group members, two of them created at the same time (seen order)
        link(K::Received, "m2", 3.0, 4, r, Some("c2"), Some("G"), None),
        link(K::Received, "m1", 3.0, 5, r, Some("c2"), Some("G"), None),
        link(K::Received, "m3", 2.5, 6, r, Some("c2"), Some("G"), None),
        // chord header and callback
        link(
            K::Received,
            "h1",
            4.0,
            7,
            r,
            Some("r"),
            Some("H"),
            Some("cb"),
        ),
        link(
            K::Received,
            "h2",
            4.1,
            8,
            r,
            Some("r"),
            Some("H"),
            Some("cb"),
        ),
        link(K::Received, "cb", 6.0, 9, r, Some("r"), None, None),
        // another workflow
        link(K::Received, "r2", 0.5, 10, Some("r2"), None, None, None),
        link(
            K::Received,
            "x1",
            1.5,
            11,
            Some("r2"),
            Some("r2"),
            None,
            None,
        ),
        // a root that carries no root_id itself
        link(K::Received, "r3", 0.7, 12, None, None, None, None),
        link(
            K::Received,
            "y1",
            0.8,
            13,
            Some("r3"),
            Some("r3"),
            None,
            None,
        ),
        // the root's state moves on; late events do not change membership
        link(K::Succeeded, "r", 0.9, 14, None, None, None, None),
    ]);
    apply(&*store, &mut model, &events, "workflows").await;
    let got = ok(store.relations("r").await, "relations(r)");
    assert_json(&got, &model.relations("r"), "relations(r)");
    let ids: Vec<&str> = got.iter().map(|x| x.task_id.as_str()).collect();
    assert_eq!(
        ids,
        ["r", "c1", "c2", "m3", "m2", "m1", "h1", "h2", "cb"],
        "created_at, then seen order"
    );
    assert_eq!(got[0].kind, RelationKind::Root);
    assert!(got[1..].iter().all(|x| x.kind == RelationKind::Child));
    assert_eq!(got[6].chord_id.as_deref(), Some("cb"));
    let got = ok(store.relations("r3").await, "relations(r3)");
    assert_json(&got, &model.relations("r3"), "relations(r3)");
    assert_eq!(got.len(), 2, "a root without root_id is included");
    assert!(ok(store.relations("nobody").await, "relations(unknown)").is_empty());
    let got = ok(store.relations("c1").await, "relations(c1)");
    assert_json(
        &got,
        &model.relations("c1"),
        "relations of a non-root: only itself",
    );

    let g = generator::generate(&GenConfig {
        seed: 113,
        tasks: 200,
        workflow_ratio: 0.5,
        ..GenConfig::default()
    });
    apply_chunks(&*store, &mut model, &g.events, 300, "generated workflows").await;
    assert!(g.roots.len() >= 10, "suite self-check: workflows");
    for root in &g.roots {
        let got = ok(store.relations(root).await, "relations(root)");
        assert_json(&got, &model.relations(root), &format!("relations({root})"));
    }
}
