//! Flower-compatible endpoints: same paths, parameters and JSON shapes as
//! Flower 2.2. The expected shapes are transcribed from Flower's source
//! (`flower/api/tasks.py`, `workers.py`, `control.py`) and Celery's
//! `events.state.Task.as_dict()` (the `_fields` tuple).

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cnc_broker::TaskResult;
use cnc_model::config::FrontendConfig;
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
    let revoke = e
        .broker
        .requests()
        .into_iter()
        .find(|r| r.method == "revoke")
        .expect("revoke");
    assert_eq!(revoke.arguments.get("signal"), Some(&json!("SIGKILL")));
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
