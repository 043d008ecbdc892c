use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::model::{Event, TaskEvent, TaskEventKind as K, TaskState as S, WorkerEventKind as WK};

fn ev(kind: K, id: &str, ts: f64) -> TaskEvent {
    TaskEvent::new(kind, id, ts).with_hostname("w1@host")
}

fn fold(events: &[TaskEvent]) -> Task {
    fold_task(None, events).expect("at least one event")
}

#[test]
fn lifecycle_reaches_success_with_runtime_and_worker() {
    let mut sent = TaskEvent::new(K::Sent, "t1", 10.0).with_hostname("gen1@client");
    sent.name = Some("app.add".into());
    sent.queue = Some("celery".into());
    let mut received = ev(K::Received, "t1", 10.5);
    received.args = Some("(1, 2)".into());
    received.kwargs = Some("{}".into());
    received.root_id = Some("t1".into());
    let started = ev(K::Started, "t1", 11.0);
    let mut succeeded = ev(K::Succeeded, "t1", 12.0);
    succeeded.result = Some("3".into());
    succeeded.runtime = Some(1.0);
    let t = fold(&[sent, received, started, succeeded]);
    assert_eq!(t.state, S::Success);
    assert_eq!(t.name.as_deref(), Some("app.add"));
    assert_eq!(t.worker.as_deref(), Some("w1@host"));
    assert_eq!(t.client.as_deref(), Some("gen1@client"));
    assert_eq!(t.runtime, Some(1.0));
    assert_eq!(t.result.as_deref(), Some("3"));
    assert_eq!(t.created_at, 10.0);
    assert_eq!(t.sent_at, Some(10.0));
    assert_eq!(t.received_at, Some(10.5));
    assert_eq!(t.started_at, Some(11.0));
    assert_eq!(t.succeeded_at, Some(12.0));
    assert_eq!(t.finished_at(), Some(12.0));
    assert_eq!(t.queue.as_deref(), Some("celery"));
}

#[test]
fn late_progress_never_overwrites_final_states() {
    for (final_kind, final_state) in [
        (K::Succeeded, S::Success),
        (K::Failed, S::Failure),
        (K::Revoked, S::Revoked),
    ] {
        let mut received = ev(K::Received, "t", 1.0);
        received.name = Some("late.name".into());
        let t = fold(&[
            ev(final_kind.clone(), "t", 3.0),
            ev(K::Started, "t", 2.0),
            received,
            ev(K::Retried, "t", 2.5),
            TaskEvent::new(K::Sent, "t", 0.5),
        ]);
        assert_eq!(t.state, final_state, "{final_kind:?}");
        // merged, not lost
        assert_eq!(t.name.as_deref(), Some("late.name"));
        assert_eq!(t.started_at, Some(2.0));
        assert_eq!(t.created_at, 0.5);
        assert_eq!(t.updated_at, 3.0);
    }
}

#[test]
fn final_states_follow_celery_precedence() {
    // SUCCESS beats a later FAILURE (Celery: precedence(FAILURE) > precedence(SUCCESS)).
    assert_eq!(
        fold(&[ev(K::Succeeded, "t", 1.0), ev(K::Failed, "t", 2.0)]).state,
        S::Success
    );
    // FAILURE replaces REVOKED.
    assert_eq!(
        fold(&[ev(K::Revoked, "t", 1.0), ev(K::Failed, "t", 2.0)]).state,
        S::Failure
    );
    // REVOKED does not replace SUCCESS.
    assert_eq!(
        fold(&[ev(K::Succeeded, "t", 1.0), ev(K::Revoked, "t", 2.0)]).state,
        S::Success
    );
}

#[test]
fn client_clock_skew_cannot_hold_a_task_pending() {
    // The client's clock runs 1 s ahead of the worker's.
    let t = fold(&[
        TaskEvent::new(K::Sent, "t", 101.0),
        ev(K::Received, "t", 100.0),
    ]);
    assert_eq!(t.state, S::Received);
    assert_eq!(t.created_at, 100.0);
}

#[test]
fn retry_cycle_counts_retries_in_order() {
    let mut r0 = ev(K::Received, "t", 1.0);
    r0.retries = Some(0);
    let mut r1 = ev(K::Received, "t", 4.0);
    r1.retries = Some(1);
    let mut retried = ev(K::Retried, "t", 3.0);
    retried.exception = Some("Retry('later')".into());
    let events = [
        r0,
        ev(K::Started, "t", 2.0),
        retried,
        r1,
        ev(K::Started, "t", 5.0),
    ];
    let t = fold(&events);
    assert_eq!(t.state, S::Started);
    assert_eq!(t.retries, 1);
    assert_eq!(t.retried_at, Some(3.0));
    assert_eq!(t.started_at, Some(5.0));
    // Mid-cycle: after the retry only.
    let mid = fold(&events[..3]);
    assert_eq!(mid.state, S::Retry);
    assert_eq!(mid.exception.as_deref(), Some("Retry('later')"));
}

#[test]
fn retry_cycle_out_of_order() {
    let mut r1 = ev(K::Received, "t", 4.0);
    r1.retries = Some(1);
    // The redelivery's received arrives before the retried event.
    let t = fold(&[ev(K::Started, "t", 2.0), r1, ev(K::Retried, "t", 3.0)]);
    assert_eq!(t.state, S::Received);
    assert_eq!(t.retries, 1);
    // A late retried never undoes a success.
    let t = fold(&[ev(K::Succeeded, "t", 6.0), ev(K::Retried, "t", 3.0)]);
    assert_eq!(t.state, S::Success);
    assert_eq!(t.retries, 1);
}

#[test]
fn redelivery_after_retry_moves_on_despite_clock_skew() {
    // Retried on worker A at t=10; redelivered to worker B whose clock is behind.
    let mut redelivered = ev(K::Received, "t", 9.5).with_hostname("b@host");
    redelivered.retries = Some(1);
    let t = fold(&[ev(K::Retried, "t", 10.0), redelivered]);
    assert_eq!(t.state, S::Received);
    assert_eq!(t.worker.as_deref(), Some("b@host"));
}

#[test]
fn rejected_requeued_then_received_again() {
    let mut rej = ev(K::Rejected, "t", 2.0);
    rej.requeue = Some(true);
    let t = fold(&[ev(K::Received, "t", 1.0), rej.clone()]);
    assert_eq!(t.state, S::Rejected);
    assert_eq!(t.requeue, Some(true));
    let t = fold(&[ev(K::Received, "t", 1.0), rej, ev(K::Received, "t", 3.0)]);
    assert_eq!(t.state, S::Received);
}

#[test]
fn custom_events_are_kept_but_do_not_move_state() {
    let mut custom = ev(K::Other("task-progress".into()), "t", 2.0);
    custom.extra.insert("progress".into(), Value::from(50));
    let t = fold(&[ev(K::Started, "t", 1.0), custom]);
    assert_eq!(t.state, S::Started);
    assert_eq!(
        t.extra.as_ref().and_then(|e| e.get("progress")),
        Some(&Value::from(50))
    );
}

#[test]
fn change_flags_report_what_moved() {
    let (mut t, c) = task_from_event(&ev(K::Received, "t", 1.0));
    assert!(c.created && c.state_changed && !c.finished);
    let c = apply_task_event(&mut t, &ev(K::Started, "t", 2.0), false);
    assert!(c.state_changed && !c.finished && !c.text_changed);
    let mut done = ev(K::Succeeded, "t", 3.0);
    done.result = Some("'ok'".into());
    let c = apply_task_event(&mut t, &done, false);
    assert!(c.state_changed && c.finished && c.text_changed);
    let c = apply_task_event(&mut t, &ev(K::Started, "t", 2.5), false);
    assert_eq!(c, TaskChange::default());
}

#[test]
fn worker_online_heartbeat_offline_and_late_heartbeat() {
    let mut online = WorkerEvent::new(WK::Online, "w1@h", 100.0);
    online.freq = Some(2.0);
    online.sw_ver = Some("5.7.0".into());
    let (mut w, change) = worker_from_event(&online);
    assert_eq!(w.status, WorkerStatus::Online);
    assert_eq!(change.map(|c| c.reason), Some("worker-online".to_owned()));

    let mut hb = WorkerEvent::new(WK::Heartbeat, "w1@h", 102.0);
    hb.active = Some(3);
    hb.processed = Some(10);
    hb.loadavg = Some(vec![0.5, 0.4, 0.3]);
    assert!(apply_worker_event(&mut w, &hb).is_none());
    assert_eq!(
        (w.active, w.processed, w.last_heartbeat),
        (3, 10, Some(102.0))
    );
    assert_eq!(w.status_at(105.0), WorkerStatus::Online);
    assert_eq!(w.status_at(106.5), WorkerStatus::Offline);

    let off = WorkerEvent::new(WK::Offline, "w1@h", 103.0);
    let change = apply_worker_event(&mut w, &off).expect("transition");
    assert_eq!(change.status, WorkerStatus::Offline);
    // A heartbeat sent before the offline, delivered late, does not revive it.
    assert!(apply_worker_event(&mut w, &WorkerEvent::new(WK::Heartbeat, "w1@h", 102.5)).is_none());
    assert_eq!(w.status, WorkerStatus::Offline);
    // A heartbeat after it does (restarted worker whose online event was lost).
    let change = apply_worker_event(&mut w, &WorkerEvent::new(WK::Heartbeat, "w1@h", 110.0));
    assert_eq!(
        change.map(|c| c.reason),
        Some("worker-heartbeat".to_owned())
    );
}

#[test]
fn silent_workers_are_lost_after_two_heartbeat_intervals() {
    let (w, _) = worker_from_event(&WorkerEvent::new(WK::Online, "w@h", 100.0));
    assert!(expired_workers([&w], 103.9).is_empty());
    let lost = expired_workers([&w], 104.5);
    assert_eq!(lost.len(), 1);
    let mut w2 = w.clone();
    let change = apply_worker_event(&mut w2, &lost[0]).expect("lost");
    assert_eq!(change.reason, "worker-lost");
    assert_eq!(w2.status, WorkerStatus::Offline);
    // A lost event that raced with a fresh heartbeat does nothing.
    let mut w3 = w.clone();
    apply_worker_event(&mut w3, &WorkerEvent::new(WK::Heartbeat, "w@h", 104.0));
    assert!(apply_worker_event(&mut w3, &lost[0]).is_none());
}

// ---- against real Celery output --------------------------------------------------------------

fn fixture_events() -> Vec<(String, Event)> {
    let dir = crate::fixtures_dir();
    let mut out = Vec::new();
    // AMQP fixtures carry the exact body text (no base64): the real batches.
    let mut paths: Vec<_> = std::fs::read_dir(dir.join("amqp"))
        .expect("fixtures dir (set CNC_FIXTURES)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("event-"))
        })
        .collect();
    paths.sort();
    for path in paths {
        let raw: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let body = raw["body"].as_str().expect("body text");
        let body: Value = serde_json::from_str(body).expect("body json");
        let items = match body {
            Value::Array(items) => items,
            single => vec![single],
        };
        for item in items {
            let event = Event::from_celery_value(item).expect("fixture event decodes");
            out.push((path.display().to_string(), event));
        }
    }
    // Decoded single events (Redis run).
    let mut paths: Vec<_> = std::fs::read_dir(dir.join("decoded"))
        .expect("decoded fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    for path in paths {
        let value: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        out.push((
            path.display().to_string(),
            Event::from_celery_value(value).expect("decodes"),
        ));
    }
    out
}

#[test]
fn every_fixture_event_decodes_into_the_model() {
    let events = fixture_events();
    assert!(
        events.len() >= 30,
        "found only {} fixture events",
        events.len()
    );
    let mut kinds = BTreeMap::new();
    for (_, e) in &events {
        *kinds.entry(e.kind_str().to_owned()).or_insert(0) += 1;
        assert!(
            !matches!(e, Event::Unknown(_)),
            "unexpected unknown event {e:?}"
        );
    }
    for kind in [
        "task-sent",
        "task-received",
        "task-started",
        "task-succeeded",
        "task-failed",
        "task-retried",
        "task-revoked",
        "task-rejected",
        "worker-online",
        "worker-heartbeat",
        "worker-offline",
    ] {
        assert!(kinds.contains_key(kind), "no fixture for {kind}: {kinds:?}");
    }
    // Python reprs stay text.
    let failed_with_traceback = events.iter().any(|(_, e)| match e {
        Event::Task(t) if t.kind == K::Failed => {
            t.exception.as_deref().is_some_and(|x| x.contains("('"))
                && t.traceback
                    .as_deref()
                    .is_some_and(|tb| tb.starts_with("Traceback"))
        }
        _ => false,
    });
    assert!(
        failed_with_traceback,
        "no task-failed with exception repr and traceback"
    );
}

#[test]
fn fixture_streams_fold_to_the_same_state_in_any_order() {
    let events: Vec<TaskEvent> = fixture_events()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Task(t) => Some(t),
            _ => None,
        })
        .collect();
    let mut by_task: BTreeMap<String, Vec<TaskEvent>> = BTreeMap::new();
    for e in events {
        by_task.entry(e.uuid.clone()).or_default().push(e);
    }
    let mut multi = 0;
    for (id, mut evs) in by_task {
        evs.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
        let forward = fold(&evs);
        let reversed: Vec<_> = evs.iter().rev().cloned().collect();
        let backward = fold(&reversed);
        assert_eq!(forward.state, backward.state, "task {id}: {evs:#?}");
        assert_eq!(forward.name, backward.name, "task {id}");
        assert_eq!(forward.retries, backward.retries, "task {id}");
        assert_eq!(forward.created_at, backward.created_at, "task {id}");
        if evs.len() > 1 {
            multi += 1;
        }
        // The state is the one of the newest state-bearing event unless a
        // final state came earlier.
        let last = evs.last().expect("non-empty");
        if let Some(s) = TaskState::from_event(&last.kind) {
            if s.is_ready()
                && !evs
                    .iter()
                    .any(|e| matches!(e.kind, K::Succeeded | K::Failed))
            {
                assert_eq!(forward.state, s, "task {id}");
            }
        }
    }
    assert!(multi > 0, "fixtures hold no task with several events");
}
