//! Flower-compatible endpoints: same paths, parameters and JSON shapes as
//! Flower 2.2. The expected shapes are transcribed from Flower's source
//! (`flower/api/tasks.py`, `workers.py`, `control.py`) and Celery's
//! `events.state.Task.as_dict()` (the `_fields` tuple).

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cnc_broker::{BrokerResult, ResultBackend, TaskResult};
use cnc_model::config::FrontendConfig;
use cnc_model::{DbController, Event, TaskEventKind};
use common::*;
use serde_json::{Value, json};

/// Celery 5's `Task._fields`, which Flower serves.
const TASK_FIELDS: [&str; 31] = [
    "uuid",
    "name",
    "state",
    "received",
    "sent",
    "started",
    "rejected",
    "succeeded",
    "failed",
    "retried",
    "revoked",
    "args",
    "kwargs",
    "eta",
    "expires",
    "retries",
    "worker",
    "result",
    "exception",
    "timestamp",
    "runtime",
    "traceback",
    "exchange",
    "routing_key",
    "clock",
    "client",
    "root",
    "root_id",
    "parent",
    "parent_id",
    "children",
];

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(k: &[&str]) -> BTreeSet<String> {
    k.iter().map(|s| (*s).to_owned()).collect()
}

async fn seeded() -> Env {
    let e = env(FrontendConfig::default());
    seed(&e.store).await;
    e
}

async fn post_form(e: &Env, uri: &str, form: &str) -> Resp {
    let req = Request::post(uri)
        .header(header::HOST, "localhost:8000")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-csrf-token", e.state.csrf_token())
        .body(Body::from(form.to_owned()))
        .expect("req");
    send(&e.app, req).await
}

#[tokio::test]
async fn healthcheck_is_ok() {
    let e = seeded().await;
    let r = get(&e.app, "/healthcheck").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "OK"));
}

#[tokio::test]
async fn task_list_and_info_shapes() {
    let e = seeded().await;
    let r = get(&e.app, "/api/tasks").await;
    assert_eq!(r.status, StatusCode::OK);
    let all = r.json();
    assert_eq!(all.as_object().map(|o| o.len()), Some(4));
    let ok1 = &all["ok1"];
    assert_eq!(keys(ok1), set(&TASK_FIELDS));
    assert_eq!(ok1["uuid"], "ok1");
    assert_eq!(ok1["state"], "SUCCESS");
    assert_eq!(ok1["worker"], WORKER);
    assert_eq!(ok1["args"], "[1, 2]");
    assert_eq!(ok1["result"], "3");
    assert!(ok1["received"].is_f64() && ok1["succeeded"].is_f64() && ok1["runtime"].is_f64());
    // Newest first (seen order), as an ordered object.
    let at = |id: &str| r.body.find(&format!("\"{id}\": {{")).expect("key");
    assert!(
        at("child1") < at("evil") && at("evil") < at("bad1") && at("bad1") < at("ok1"),
        "{}",
        r.body
    );
    // Parameters.
    let r = get(&e.app, "/api/tasks?state=FAILURE").await;
    assert_eq!(keys(&r.json()), set(&["bad1"]));
    let r = get(&e.app, "/api/tasks?taskname=cnc.add&workername=w1@host").await;
    assert_eq!(keys(&r.json()), set(&["ok1"]));
    let r = get(&e.app, "/api/tasks?limit=1&offset=1").await;
    assert_eq!(r.json().as_object().map(|o| o.len()), Some(1));
    let r = get(
        &e.app,
        "/api/tasks?state=All&workername=All&sort_by=-received&limit=2",
    )
    .await;
    assert_eq!(r.json().as_object().map(|o| o.len()), Some(2));
    let r = get(&e.app, "/api/tasks?search=boom").await;
    assert_eq!(keys(&r.json()), set(&["bad1"]));
    let r = get(
        &e.app,
        "/api/tasks?received_start=2000-01-01%2000:00&received_end=2001-01-01%2000:00",
    )
    .await;
    assert_eq!(r.json(), json!({}));
    // Info: the same dict plus children.
    let r = get(&e.app, "/api/task/info/ok1").await;
    let info = r.json();
    assert_eq!(keys(&info), set(&TASK_FIELDS));
    assert_eq!(info["children"], json!(["child1"]));
    let r = get(&e.app, "/api/task/info/child1").await;
    assert_eq!(r.json()["parent"], "ok1");
    assert_eq!(r.json()["root_id"], "ok1");
    let r = get(&e.app, "/api/task/info/missing").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Types.
    let r = get(&e.app, "/api/task/types").await;
    assert_eq!(
        r.json(),
        json!({"task-types": ["cnc.add", "cnc.echo", "cnc.fail_always", "cnc.mul"]})
    );
}

#[tokio::test]
async fn results_and_applying() {
    let e = seeded().await;
    let r = get(&e.app, "/api/task/result/unknown-id").await;
    assert_eq!(
        r.json(),
        json!({"task-id": "unknown-id", "state": "PENDING", "result": null})
    );
    e.backend.store(TaskResult {
        task_id: "ok1".into(),
        status: "SUCCESS".into(),
        result: json!(3),
        traceback: None,
        date_done: None,
        name: None,
        raw: json!({}),
    });
    let r = get(&e.app, "/api/task/result/ok1").await;
    assert_eq!(
        r.json(),
        json!({"task-id": "ok1", "state": "SUCCESS", "result": 3})
    );
    e.backend.store(TaskResult {
        task_id: "bad1".into(), status: "FAILURE".into(),
        result: json!({"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"}),
        traceback: Some("Traceback...".into()), date_done: None, name: None, raw: json!({}),
    });
    let r = get(&e.app, "/api/task/result/bad1?timeout=0.2").await;
    assert_eq!(
        r.json(),
        json!({"task-id": "bad1", "state": "FAILURE", "result": "ValueError('boom')", "traceback": "Traceback..."})
    );
    // async-apply and send-task: {"task-id", "state"}.
    let r = post_json(
        &e,
        "/api/task/async-apply/cnc.add",
        json!({"args": [1, 2], "countdown": "3", "queue": "q1"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(keys(&r.json()), set(&["task-id", "state"]));
    assert_eq!(r.json()["state"], "PENDING");
    assert_eq!(e.broker.messages("q1").len(), 1);
    let r = post_json(
        &e,
        "/api/task/send-task/anything.at.all",
        json!({"kwargs": {"a": 1}, "eta": "2030-01-01 10:00:00.000000"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(keys(&r.json()), set(&["task-id", "state"]));
    let r = post_json(&e, "/api/task/send-task/x", json!({"eta": "soon"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // apply waits for the result.
    let backend = e.backend.clone();
    let broker = e.broker.clone();
    tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if let Some(m) = broker.messages("celery").last() {
                let id = m
                    .headers
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                backend.store(TaskResult {
                    task_id: id,
                    status: "SUCCESS".into(),
                    result: json!(5),
                    traceback: None,
                    date_done: None,
                    name: None,
                    raw: json!({}),
                });
                return;
            }
        }
    });
    let r = post_json(&e, "/api/task/apply/cnc.add", json!({"args": [2, 3]})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(keys(&r.json()), set(&["task-id", "state", "result"]));
    assert_eq!(r.json()["result"], 5);
}

#[tokio::test]
async fn control_shapes() {
    let e = seeded().await;
    let cases = [
        (
            "/api/task/revoke/ok1?terminate=true&signal=SIGKILL",
            json!({"message": "Revoked 'ok1'"}),
        ),
        ("/api/task/abort/ok1", json!({"message": "Aborted 'ok1'"})),
        (
            "/api/worker/shutdown/w1@host",
            json!({"message": "Shutting down!"}),
        ),
        (
            "/api/worker/pool/restart/w1@host",
            json!({"message": "Restarting 'w1@host' worker's pool"}),
        ),
        (
            "/api/worker/pool/grow/w1@host?n=2",
            json!({"message": "Growing 'w1@host' worker's pool by 2"}),
        ),
        (
            "/api/worker/pool/shrink/w1@host",
            json!({"message": "Shrinking 'w1@host' worker's pool by 1"}),
        ),
        (
            "/api/worker/queue/add-consumer/w1@host?queue=q",
            json!({"message": "add consumer q"}),
        ),
        (
            "/api/worker/queue/cancel-consumer/w1@host?queue=q",
            json!({"message": "no longer consuming from q"}),
        ),
        (
            "/api/task/rate-limit/cnc.add?workername=w1@host&ratelimit=10/m",
            json!({"message": "new rate limit set successfully"}),
        ),
        (
            "/api/task/timeout/cnc.add?workername=w1@host&hard=10&soft=5",
            json!({"message": "time limits set successfully"}),
        ),
    ];
    for (uri, want) in cases {
        let r = post_empty(&e, uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.body);
        assert_eq!(r.json(), want, "{uri}");
    }
    // Parameters in a form body work too (Tornado's get_argument).
    let r = post_form(&e, "/api/worker/pool/grow/w1@host", "n=3").await;
    assert_eq!(
        r.json(),
        json!({"message": "Growing 'w1@host' worker's pool by 3"})
    );
    // A worker error: 403 with Flower's text.
    let r = post_empty(&e, "/api/worker/pool/autoscale/w1@host?min=1&max=2").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.body,
        "Failed to autoscale 'w1@host' worker: autoscale not enabled"
    );
    // Missing arguments and unknown workers.
    assert_eq!(
        post_empty(&e, "/api/worker/pool/autoscale/w1@host")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post_empty(&e, "/api/worker/queue/add-consumer/w1@host")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post_empty(&e, "/api/task/rate-limit/cnc.add?ratelimit=1/s")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post_empty(&e, "/api/worker/shutdown/ghost@x").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post_empty(&e, "/api/worker/pool/grow/w1@host?n=many")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let revokes: Vec<_> = e
        .broker
        .requests()
        .into_iter()
        .filter(|r| r.method == "revoke")
        .collect();
    // Only the revoke endpoint revoked: abort does not.
    assert_eq!(revokes.len(), 1, "{revokes:?}");
    assert_eq!(revokes[0].arguments.get("signal"), Some(&json!("SIGKILL")));
    let aborted = e.backend.get("ok1").await.ok().flatten();
    assert_eq!(aborted.map(|r| r.status), Some("ABORTED".to_owned()));
}

#[tokio::test]
async fn workers_and_queues_shapes() {
    let e = seeded().await;
    let r = get(&e.app, "/api/workers?refresh=1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let w = &r.json()[WORKER];
    assert_eq!(
        keys(w),
        set(&[
            "stats",
            "active_queues",
            "registered",
            "active",
            "conf",
            "timestamp"
        ])
    );
    // Flower leaves out empty replies (scheduled, reserved, revoked here),
    // shows only Celery's default task info items, drops broker alternates.
    assert_eq!(
        w["registered"],
        json!(["cnc.add [rate_limit=10/m]", "cnc.on_custom", "cnc.sleep"])
    );
    assert!(w["stats"]["broker"].get("alternates").is_none());
    let r = get(&e.app, "/api/workers?workername=w1@host").await;
    assert_eq!(keys(&r.json()), set(&[WORKER]));
    let r = get(&e.app, "/api/workers?workername=ghost").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get(&e.app, "/api/workers?status=true").await;
    assert_eq!(r.json(), json!({ WORKER: true }));
    let r = get(&e.app, "/api/queues/length").await;
    assert_eq!(
        r.json(),
        json!({"active_queues": [{"name": "celery", "messages": 0}, {"name": "custom", "messages": 0}]})
    );
}

fn stored(id: &str, status: &str, result: Value) -> TaskResult {
    TaskResult {
        task_id: id.into(),
        status: status.into(),
        result,
        traceback: None,
        date_done: None,
        name: None,
        raw: json!({}),
    }
}

/// Flower's abort: `ABORTED` into the result backend (a `SUCCESS` stays),
/// no revoke; 503 without a backend or with one that cannot store it; the
/// usual guard (CSRF, read-only) in front.
#[tokio::test]
async fn abort_stores_aborted_without_revoking() {
    let e = seeded().await;
    e.backend.store(stored("ok1", "SUCCESS", json!(3)));
    e.backend.store(stored("bad1", "STARTED", Value::Null));
    for id in ["ok1", "bad1", "never-seen"] {
        let r = post_empty(&e, &format!("/api/task/abort/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{id}: {}", r.body);
        assert_eq!(r.json(), json!({ "message": format!("Aborted '{id}'") }));
    }
    let state = |id: &'static str| {
        let app = e.app.clone();
        async move { get(&app, &format!("/api/task/result/{id}")).await.json() }
    };
    assert_eq!(
        state("ok1").await,
        json!({"task-id": "ok1", "state": "SUCCESS", "result": 3})
    );
    assert_eq!(
        state("bad1").await,
        json!({"task-id": "bad1", "state": "ABORTED", "result": null})
    );
    assert_eq!(state("never-seen").await["state"], "ABORTED");
    assert!(
        e.broker.requests().iter().all(|r| r.method != "revoke"),
        "{:?}",
        e.broker.requests()
    );
    // The guard: no CSRF token, read-only mode.
    let req = Request::post("/api/task/abort/bad1")
        .header(header::HOST, "localhost:8000")
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&e.app, req).await.status, StatusCode::FORBIDDEN);
    let ro = env(FrontendConfig {
        read_only: true,
        ..FrontendConfig::default()
    });
    let r = post_empty(&ro, "/api/task/abort/bad1").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(ro.backend.get("bad1").await.ok().flatten().is_none());

    // No backend: 503, as in Flower.
    let none = env_with_backend(FrontendConfig::default(), Default::default(), None);
    let r = post_empty(&none, "/api/task/abort/x").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);

    // A backend that cannot store the state says so.
    #[derive(Debug)]
    struct ReadOnlyBackend;
    #[async_trait::async_trait]
    impl ResultBackend for ReadOnlyBackend {
        fn redacted_url(&self) -> String {
            "custom://results".into()
        }
        async fn get(&self, _: &str) -> BrokerResult<Option<TaskResult>> {
            Ok(None)
        }
        async fn list(&self, _: usize) -> BrokerResult<Vec<TaskResult>> {
            Ok(Vec::new())
        }
        async fn delete(&self, _: &str) -> BrokerResult<bool> {
            Ok(false)
        }
        async fn delete_by_name(&self, _: &str) -> BrokerResult<u64> {
            Ok(0)
        }
        async fn delete_all(&self) -> BrokerResult<u64> {
            Ok(0)
        }
        async fn healthcheck(&self) -> BrokerResult<()> {
            Ok(())
        }
    }
    let custom = env_with_backend(
        FrontendConfig::default(),
        Default::default(),
        Some(std::sync::Arc::new(ReadOnlyBackend)),
    );
    let r = post_empty(&custom, "/api/task/abort/x").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    let msg = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        msg.contains("cannot abort 'x'") && msg.contains("custom://results"),
        "{msg}"
    );
}

/// 2020-01-01 10:00:00 UTC.
const T0: f64 = 1_577_872_800.0;

fn received(id: &str, name: &str, at: f64) -> Event {
    let mut r = task_event(TaskEventKind::Received, id, at);
    r.name = Some(name.into());
    Event::Task(r)
}

fn sent(id: &str, name: &str, at: f64) -> Event {
    let mut s = task_event(TaskEventKind::Sent, id, at);
    s.name = Some(name.into());
    Event::Task(s)
}

/// Task ids of a `/api/tasks` answer, in the answer's order.
fn ordered_ids(r: &Resp) -> Vec<String> {
    let mut ids: Vec<(usize, String)> = keys(&r.json())
        .into_iter()
        .map(|id| (r.body.find(&format!("\"{id}\": {{")).unwrap_or(0), id))
        .collect();
    ids.sort();
    ids.into_iter().map(|(_, id)| id).collect()
}

/// Flower's task search: `taskname` exact (case-insensitive), the window
/// on the received time (inclusive; never-received tasks pass), offset and
/// limit counted after those filters, `children` in every dict.
#[tokio::test]
async fn task_list_filters_like_flower() {
    let e = seeded().await;
    let events = vec![
        // First seen at 09:00 (sent), received at 10:00.
        sent("late", "cnc.add", T0 - 3600.0),
        received("late", "cnc.add", T0),
        // Never received.
        sent("queued", "cnc.add", T0 - 7200.0),
        received("after", "cnc.add", T0 + 3600.0),
        received("before", "cnc.add", T0 - 3660.0),
        // A name that contains "cnc.add".
        received("many", "cnc.add_many", T0),
    ];
    e.store.apply(&events).await.expect("apply");
    let ids = |uri: &'static str| {
        let app = e.app.clone();
        async move {
            let r = get(&app, uri).await;
            assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.body);
            keys(&r.json())
        }
    };
    assert_eq!(
        ids("/api/tasks?taskname=cnc.add").await,
        set(&["ok1", "late", "queued", "after", "before"])
    );
    assert_eq!(
        ids("/api/tasks?taskname=cnc.add_many").await,
        set(&["many"])
    );
    assert_eq!(ids("/api/tasks?taskname=cnc").await, set(&[]));
    // Case-insensitive, as Flower compares casefolded names.
    assert_eq!(
        ids("/api/tasks?taskname=CNC.Add").await,
        set(&["ok1", "late", "queued", "after", "before"])
    );
    // The window is on `received` ("late" was first seen before it), both
    // ends inclusive, and lets never-received "queued" through.
    assert_eq!(
        ids("/api/tasks?received_start=2020-01-01%2009:30&received_end=2020-01-01%2010:00").await,
        set(&["late", "many", "queued"])
    );
    assert_eq!(
        ids("/api/tasks?taskname=cnc.add&received_start=2020-01-01%2010:00").await,
        set(&["ok1", "late", "after", "queued"])
    );
    assert_eq!(
        ids("/api/tasks?taskname=cnc.add&received_end=2020-01-01%2009:00").await,
        set(&["before", "queued"])
    );

    // Offset and limit count the tasks that pass, in either store path
    // (cursor under the default order, offset under another).
    for order in ["", "&sort_by=-received", "&sort_by=name"] {
        let all = ordered_ids(&get(&e.app, &format!("/api/tasks?taskname=cnc.add{order}")).await);
        assert_eq!(all.len(), 5, "{order}: {all:?}");
        for offset in 0..=all.len() {
            let r = get(
                &e.app,
                &format!("/api/tasks?taskname=cnc.add{order}&limit=2&offset={offset}"),
            )
            .await;
            let want: Vec<String> = all.iter().skip(offset).take(2).cloned().collect();
            assert_eq!(ordered_ids(&r), want, "{order} offset {offset}");
        }
    }

    // Children, also of a task whose children are not on the page.
    let gc = {
        let mut g = task_event(TaskEventKind::Received, "gc1", cnc_model::now());
        g.name = Some("cnc.add".into());
        g.parent_id = Some("child1".into());
        g.root_id = Some("ok1".into());
        Event::Task(g)
    };
    e.store.apply(&[gc]).await.expect("apply");
    let all = get(&e.app, "/api/tasks").await.json();
    assert_eq!(all["ok1"]["children"], json!(["child1"]));
    assert_eq!(all["child1"]["children"], json!(["gc1"]));
    assert_eq!(all["gc1"]["children"], json!([]));
    assert_eq!(all["bad1"]["children"], json!([]));
    let only_ok1 = get(
        &e.app,
        "/api/tasks?taskname=cnc.add&received_start=2026-01-01%2000:00&limit=1&sort_by=received",
    )
    .await;
    assert_eq!(ordered_ids(&only_ok1), ["ok1"]);
    assert_eq!(only_ok1.json()["ok1"]["children"], json!(["child1"]));
    assert_eq!(
        get(&e.app, "/api/task/info/child1").await.json()["children"],
        json!(["gc1"])
    );
}

/// Post-filtered pages that need several store reads: 1200 tasks, half of
/// them named exactly `bulk.x`, the others `bulk.xy` (which the store's
/// substring filter also returns).
#[tokio::test]
async fn task_list_pages_through_the_store() {
    let e = seeded().await;
    let events: Vec<Event> = (0..1200)
        .map(|i| {
            let name = if i % 2 == 0 { "bulk.x" } else { "bulk.xy" };
            received(&format!("b{i:04}"), name, T0 + f64::from(i))
        })
        .collect();
    e.store.apply(&events).await.expect("apply");
    let page = |uri: String| {
        let app = e.app.clone();
        async move { ordered_ids(&get(&app, &uri).await) }
    };
    let want =
        |is: Vec<i32>| -> Vec<String> { is.into_iter().map(|i| format!("b{i:04}")).collect() };
    // Newest seen first: b1198, b1196, ...; the 296th is b0608.
    assert_eq!(
        page("/api/tasks?taskname=bulk.x&limit=10&offset=295".into()).await,
        want((0..10).map(|k| 608 - 2 * k).collect())
    );
    // Oldest received first: b0000, b0002, ...
    assert_eq!(
        page("/api/tasks?taskname=bulk.x&sort_by=received&limit=10&offset=295".into()).await,
        want((0..10).map(|k| 590 + 2 * k).collect())
    );
    // The last ones, and past the end.
    assert_eq!(
        page("/api/tasks?taskname=bulk.x&limit=10&offset=595".into()).await,
        want((0..5).map(|k| 8 - 2 * k).collect())
    );
    assert!(
        page("/api/tasks?taskname=bulk.x&offset=600".into())
            .await
            .is_empty()
    );
    assert_eq!(page("/api/tasks?taskname=bulk.x".into()).await.len(), 600);
    // The window in epoch seconds, with the exact name.
    assert_eq!(
        page(format!(
            "/api/tasks?taskname=bulk.xy&received_start={}&received_end={}",
            T0 + 1000.0,
            T0 + 1010.0
        ))
        .await,
        want(vec![1009, 1007, 1005, 1003, 1001])
    );
}
