//! Every route in-process: memory store, memory broker and backend.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use cnc_broker::TaskResult;
use cnc_broker::protocol::task::TaskMessage;
use cnc_model::bus::{BusMessage, WrittenBatch};
use cnc_model::config::FrontendConfig;
use cnc_model::{ApplyReport, Event, TaskEventKind};
use common::*;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn seeded() -> Env {
    let e = env(FrontendConfig::default());
    seed(&e.store).await;
    e
}

fn assert_no_inline_script(html: &str) {
    let lower = html.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("<script") {
        let tag_end = rest[i..].find('>').map(|j| i + j).expect("closed tag");
        assert!(
            rest[i..tag_end].contains(" src="),
            "inline script in page: {}",
            &rest[i..tag_end]
        );
        assert!(
            rest[tag_end..].starts_with("></script>"),
            "script with a body"
        );
        rest = &rest[tag_end..];
    }
    // No on* attribute inside any real tag (escaped text has no raw `<`).
    for tag in lower.split('<').skip(1) {
        let raw = tag.split('>').next().unwrap_or_default();
        // Drop quoted attribute values: escaped data has no raw quote.
        let inside: String = raw.split('"').step_by(2).collect::<Vec<_>>().join("\"\"");
        for (i, _) in inside.match_indices(" on") {
            let rest = &inside[i + 3..];
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            assert!(
                word.is_empty() || !rest[word.len()..].trim_start().starts_with('='),
                "event handler attribute on{word} in <{inside}>"
            );
        }
    }
}

#[tokio::test]
async fn pages_render_with_security_headers() {
    let e = seeded().await;
    for (uri, needle) in [
        ("/", "Workers online"),
        ("/tasks", "cnc.add"),
        ("/tasks?name=ADD", "cnc.add"),
        ("/tasks?state=FAILURE&last=1h", "cnc.fail_always"),
        ("/tasks/ok1", "Execution flow"),
        ("/tasks/bad1", "ValueError: boom"),
        ("/workers", WORKER),
        ("/workers/w1@host", "Grow pool by"),
        ("/send", "cnc.on_custom"),
        ("/partials/dashboard", "Tasks by state"),
        ("/partials/tasks?state=SUCCESS", "cnc.add"),
        ("/partials/tasks/ok1", "Overview"),
        ("/partials/workers", WORKER),
        ("/partials/workers/w1@host?refresh=1", "Running tasks"),
    ] {
        let r = get(&e.app, uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.body);
        assert!(r.body.contains(needle), "{uri} lacks {needle}");
        let csp = r
            .headers
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{uri}: CSP {csp}"
        );
        assert_no_inline_script(&r.body);
    }
    // The filter really filters.
    let r = get(&e.app, "/partials/tasks?state=SUCCESS").await;
    assert!(!r.body.contains("cnc.fail_always"));
    // The send form pre-fills the task's own queue.
    let r = get(&e.app, "/send").await;
    assert!(
        r.body
            .contains(r#"value="cnc.on_custom" data-queue="custom""#),
        "{}",
        r.body
    );
    // Children and parent are linked.
    let r = get(&e.app, "/tasks/ok1").await;
    assert!(r.body.contains("/tasks/child1"));
    let r = get(&e.app, "/tasks/child1").await;
    assert!(r.body.contains("/tasks/ok1"));
    // The workflow filter is in the form and filters.
    let r = get(&e.app, "/tasks?root_id=ok1").await;
    assert!(
        r.body.contains(r#"name="root_id" value="ok1""#),
        "root_id kept in the form"
    );
    let r = get(&e.app, "/partials/tasks?root_id=ok1").await;
    assert!(r.body.contains("cnc.mul") && !r.body.contains("cnc.fail_always"));
}

#[tokio::test]
async fn hostile_task_data_is_escaped() {
    let e = seeded().await;
    for uri in [
        "/tasks/evil",
        "/tasks",
        "/partials/tasks",
        "/",
        "/partials/tasks/evil",
    ] {
        let r = get(&e.app, uri).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(!r.body.contains("<script>alert"), "{uri} has a live script");
        assert!(!r.body.contains("<img src=x"), "{uri} has a live img");
        assert!(
            !r.body.contains("</pre><script>"),
            "{uri} breaks out of pre"
        );
        assert_no_inline_script(&r.body);
    }
    // JSON is served as JSON (with nosniff), never as HTML.
    for uri in ["/api/tasks", "/api/v1/tasks/evil", "/api/task/info/evil"] {
        let r = get(&e.app, uri).await;
        assert!(
            r.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap_or("")
                .starts_with("application/json"),
            "{uri}"
        );
        assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
    let r = get(&e.app, "/tasks/evil").await;
    assert!(
        r.body
            .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;")
            || r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        r.body
    );
    assert!(r.body.contains("&lt;img src=x onerror=alert(2)&gt;"));
}

#[tokio::test]
async fn missing_things_are_404_pages_and_json() {
    let e = seeded().await;
    let r = get(&e.app, "/tasks/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("Unknown task"));
    let r = get(&e.app, "/workers/ghost@x").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get(&e.app, "/no/such/page").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get(&e.app, "/api/v1/nothing").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["error"].is_string());
    let r = get(&e.app, "/static/evil.js").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = get(&e.app, "/static/app.js").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/javascript")
    );
    let r = get(&e.app, "/static/app.css").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(&e.app, "/task/ok1").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers[header::LOCATION], "/tasks/ok1");
}

#[tokio::test]
async fn bad_input_is_a_readable_4xx() {
    let e = seeded().await;
    for uri in [
        "/api/v1/tasks?state=BOGUS",
        "/api/v1/tasks?limit=abc",
        "/api/v1/tasks?limit=0",
        "/api/v1/tasks?from=yesterday",
        "/api/v1/tasks?from=10&to=5",
        "/api/v1/tasks?sort=color",
        "/api/v1/tasks?last=forever",
        "/api/v1/tasks?cursor=zzz&offset=3",
        "/api/v1/stats/throughput?bucket=7",
        "/api/v1/stats/runtime?from=xyz",
        "/api/tasks?state=NOPE",
        "/api/tasks?limit=-1",
        "/api/tasks?sort_by=color",
        "/api/workers?refresh=maybe",
        "/api/task/result/ok1?timeout=abc",
    ] {
        let r = get(&e.app, uri).await;
        assert!(r.status.is_client_error(), "{uri}: {} {}", r.status, r.body);
        let msg = r.json()["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default();
        assert!(msg.len() > 5, "{uri}: unreadable error {}", r.body);
    }
    // Pages show the error in place, with a 400.
    let r = get(&e.app, "/tasks?state=BOGUS").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("unknown task state"));
    let r = get(&e.app, "/partials/tasks?from=never").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Bad bodies.
    for (uri, body) in [
        (
            "/api/v1/tasks/send",
            json!({"name": "cnc.add", "args": {"x": 1}}),
        ),
        ("/api/v1/tasks/send", json!({"name": "", "args": []})),
        ("/api/v1/tasks/send", json!({"name": "cnc.add", "bogus": 1})),
        (
            "/api/v1/tasks/send",
            json!({"name": "cnc.add", "eta": "tomorrow"}),
        ),
        (
            "/api/v1/tasks/send",
            json!({"name": "cnc.add", "countdown": -5}),
        ),
        (
            "/api/v1/tasks/send",
            json!({"name": "cnc.add", "priority": 900}),
        ),
        (
            "/api/v1/tasks/ok1/revoke",
            json!({"terminate": true, "signal": "SIGBOGUS"}),
        ),
        (
            "/api/v1/workers/w1@host/control",
            json!({"action": "explode"}),
        ),
        (
            "/api/v1/workers/w1@host/control",
            json!({"action": "pool_grow", "n": 0}),
        ),
        (
            "/api/v1/workers/w1@host/control",
            json!({"action": "rate_limit", "task": "cnc.add", "rate": "fast!"}),
        ),
        (
            "/api/v1/workers/w1@host/control",
            json!({"action": "autoscale", "min": 5, "max": 1}),
        ),
        ("/api/task/async-apply/cnc.add", json!({"args": "nope"})),
    ] {
        let r = post_json(&e, uri, body.clone()).await;
        assert!(
            r.status.is_client_error(),
            "{uri} {body}: {} {}",
            r.status,
            r.body
        );
        assert!(!r.body.is_empty(), "{uri}: empty error");
    }
    let req = Request::post("/api/v1/tasks/send")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-csrf-token", e.state.csrf_token())
        .body(Body::from("{not json"))
        .expect("req");
    let r = send(&e.app, req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    // Oversized body.
    let small = env(FrontendConfig {
        max_body_bytes: 1024,
        ..FrontendConfig::default()
    });
    let big = json!({"name": "cnc.add", "args": ["x".repeat(4096)]});
    let r = post_json(&small, "/api/v1/tasks/send", big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    // Unknown ids and workers.
    assert_eq!(
        get(&e.app, "/api/v1/tasks/nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&e.app, "/api/v1/tasks/nope/events").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&e.app, "/api/v1/tasks/nope/relations").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&e.app, "/api/v1/workers/nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post_json(&e, "/api/v1/tasks/nope/retry", json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post_json(
            &e,
            "/api/v1/workers/nope/control",
            json!({"action": "shutdown"})
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&e.app, "/api/task/info/nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post_empty(&e, "/api/worker/pool/grow/nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post_json(&e, "/api/task/async-apply/not.registered", json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn own_api_reads() {
    let e = seeded().await;
    let r = get(&e.app, "/api/v1/tasks?limit=2").await;
    assert_eq!(r.status, StatusCode::OK);
    let page = r.json();
    assert_eq!(page["tasks"].as_array().map(Vec::len), Some(2));
    let cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
    let r = get(&e.app, &format!("/api/v1/tasks?limit=2&cursor={cursor}")).await;
    assert_eq!(r.json()["tasks"].as_array().map(Vec::len), Some(2));
    let r = get(&e.app, "/api/v1/tasks?state=FAILURE,SUCCESS&sort=name").await;
    let names: Vec<String> = r.json()["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(names, ["cnc.add", "cnc.fail_always"]);
    let r = get(&e.app, "/api/v1/tasks?search=boom&worker=w1@host").await;
    assert_eq!(r.json()["tasks"][0]["id"], "bad1");
    let r = get(&e.app, "/api/v1/tasks?parent_id=ok1").await;
    assert_eq!(r.json()["tasks"][0]["id"], "child1");
    let r = get(&e.app, "/api/v1/tasks/bad1").await;
    assert_eq!(r.json()["state"], "FAILURE");
    let r = get(&e.app, "/api/v1/tasks/ok1/events").await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(3));
    let r = get(&e.app, "/api/v1/tasks/child1/relations").await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(2));
    e.backend.store(TaskResult {
        task_id: "ok1".into(),
        status: "SUCCESS".into(),
        result: json!(3),
        traceback: None,
        date_done: None,
        name: None,
        raw: json!({"status": "SUCCESS", "result": 3}),
    });
    let r = get(&e.app, "/api/v1/tasks/ok1/result").await;
    assert_eq!(r.json()["result"], 3);
    assert_eq!(
        get(&e.app, "/api/v1/tasks/bad1/result").await.status,
        StatusCode::NOT_FOUND
    );
    let r = get(&e.app, "/api/v1/task-names").await;
    assert!(r.json().as_array().is_some_and(|a| a.len() == 4));
    let r = get(&e.app, "/api/v1/registered").await;
    let tasks = r.json()["tasks"].clone();
    let custom = tasks
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "cnc.on_custom"))
        .cloned();
    assert_eq!(custom.map(|c| c["queue"].clone()), Some(json!("custom")));
    let r = get(&e.app, "/api/v1/workers").await;
    assert_eq!(r.json()[0]["hostname"], WORKER);
    assert_eq!(r.json()[0]["online"], true);
    let r = get(&e.app, "/api/v1/workers/w1@host").await;
    assert_eq!(r.json()["online"], true);
    let r = get(&e.app, "/api/v1/workers/w1@host/inspect?refresh=1").await;
    assert_eq!(r.json()["stats"]["pid"], 42);
    let r = get(&e.app, "/api/v1/stats/runtime?name=cnc.add").await;
    assert_eq!(r.json()["count"], 1);
    let r = get(&e.app, "/api/v1/stats/throughput?bucket=60").await;
    assert!(r.json().as_array().is_some_and(|a| a.len() >= 60));
    let r = get(&e.app, "/api/v1/stats/states").await;
    assert!(r.json().as_array().is_some_and(|a| !a.is_empty()));
    let r = get(&e.app, "/api/v1/stats/names").await;
    assert!(r.json().as_array().is_some_and(|a| a.len() == 4));
    let r = get(&e.app, "/api/v1/dashboard").await;
    assert_eq!(r.json()["workers_online"], 1);
    assert_eq!(r.json()["total"], 4);
    let r = get(&e.app, "/api/v1/queues").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(&e.app, "/api/components").await;
    assert_eq!(r.json()[0]["name"], "frontend");
    let r = get(&e.app, "/api/v1/csrf").await;
    assert_eq!(r.json()["csrf_token"], e.state.csrf_token());
    let r = get(&e.app, "/api/openapi.json").await;
    let spec = r.json();
    assert_eq!(spec["openapi"], "3.1.0");
    for p in [
        "/api/v1/tasks",
        "/api/v1/tasks/send",
        "/api/v1/events",
        "/api/workers",
        "/api/task/apply/{name}",
        "/healthcheck",
        "/api/components",
    ] {
        assert!(spec["paths"].get(p).is_some(), "openapi lacks {p}");
    }
}

fn sent(e: &Env, queue: &str) -> Vec<TaskMessage> {
    e.broker
        .messages(queue)
        .iter()
        .map(|m| TaskMessage::from_message(m).expect("task message"))
        .collect()
}

#[tokio::test]
async fn own_api_actions() {
    let e = seeded().await;
    // Send: the queue comes from the task's registration, then routes, then the default.
    let r = post_json(&e, "/api/v1/tasks/send", json!({"name": "cnc.on_custom", "args": [1], "kwargs": {"a": "b"}, "countdown": 5, "priority": 3, "expires": 60})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["queue"], "custom");
    let m = &sent(&e, "custom")[0];
    assert_eq!(m.task, "cnc.on_custom");
    assert_eq!(m.args, vec![json!(1)]);
    assert!(m.eta.is_some() && m.expires.is_some());
    assert_eq!(m.priority, Some(3));
    let r = post_json(&e, "/api/v1/tasks/send", json!({"name": "cnc.routed"})).await;
    assert_eq!(r.json()["queue"], "routed");
    let r = post_json(
        &e,
        "/api/v1/tasks/send",
        json!({"name": "cnc.add", "args": [1, 2], "eta": "2030-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(r.json()["queue"], "celery");
    assert_eq!(
        sent(&e, "celery")[0].eta.as_deref(),
        Some("2030-01-01T00:00:00+00:00")
    );
    // Retry re-sends the same arguments, parsed back from the repr.
    let r = post_json(&e, "/api/v1/tasks/bad1/retry", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new_id = r.json()["task_id"].as_str().expect("id").to_owned();
    let m = sent(&e, "celery")
        .into_iter()
        .find(|m| m.id == new_id)
        .expect("retried message");
    assert_eq!(m.task, "cnc.fail_always");
    assert_eq!(m.args, vec![json!("boom")]);
    assert_eq!(m.kwargs.get("msg"), Some(&json!("x")));
    assert_eq!(m.retries, 0);
    // Revoke and terminate.
    let r = post_json(&e, "/api/v1/tasks/ok1/revoke", json!({})).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = post_json(
        &e,
        "/api/v1/tasks/ok1/revoke",
        json!({"terminate": true, "signal": "KILL"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let revokes: Vec<_> = e
        .broker
        .requests()
        .into_iter()
        .filter(|r| r.method == "revoke")
        .collect();
    assert_eq!(revokes.len(), 2);
    assert_eq!(revokes[1].arguments.get("terminate"), Some(&json!(true)));
    assert_eq!(revokes[1].arguments.get("signal"), Some(&json!("SIGKILL")));
    // Worker controls.
    let r = post_json(
        &e,
        "/api/v1/workers/w1@host/control",
        json!({"action": "pool_grow", "n": 2}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["message"], "pool will grow");
    let grow = e
        .broker
        .requests()
        .into_iter()
        .find(|r| r.method == "pool_grow")
        .expect("grow sent");
    assert_eq!(grow.arguments.get("n"), Some(&json!(2)));
    assert_eq!(grow.destination, Some(vec![WORKER.to_owned()]));
    let r = post_json(
        &e,
        "/api/v1/workers/w1@host/control",
        json!({"action": "autoscale", "min": 1, "max": 3}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"], "autoscale not enabled");
    for body in [
        json!({"action": "pool_shrink"}),
        json!({"action": "add_consumer", "queue": "q"}),
        json!({"action": "cancel_consumer", "queue": "q"}),
        json!({"action": "rate_limit", "task": "cnc.add", "rate": "10/m"}),
        json!({"action": "time_limit", "task": "cnc.add", "soft": 10, "hard": 20}),
        json!({"action": "pool_restart"}),
        json!({"action": "shutdown"}),
    ] {
        let r = post_json(&e, "/api/v1/workers/w1@host/control", body.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{body}: {}", r.body);
    }
    assert!(e.broker.requests().iter().any(|r| r.method == "shutdown"));
}

#[tokio::test]
async fn security_checks() {
    let e = seeded().await;
    // Host header (DNS rebinding).
    let req = Request::get("/")
        .header(header::HOST, "evil.example:8000")
        .body(Body::empty())
        .expect("req");
    let r = send(&e.app, req).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("not allowed"));
    // No CSRF token.
    let req = Request::post("/api/v1/tasks/send")
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"name": "cnc.add"}).to_string()))
        .expect("req");
    let r = send(&e.app, req).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("CSRF"));
    // Cross-origin, even with the token.
    let req = Request::post("/api/v1/tasks/send")
        .header(header::HOST, "localhost:8000")
        .header(header::ORIGIN, "http://evil.example")
        .header("x-csrf-token", e.state.csrf_token())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"name": "cnc.add"}).to_string()))
        .expect("req");
    assert_eq!(send(&e.app, req).await.status, StatusCode::FORBIDDEN);
    let req = Request::post("/api/task/revoke/ok1")
        .header(header::HOST, "localhost:8000")
        .header("sec-fetch-site", "cross-site")
        .header("x-csrf-token", e.state.csrf_token())
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&e.app, req).await.status, StatusCode::FORBIDDEN);
    assert!(e.broker.messages("celery").is_empty(), "nothing was sent");
    // Read-only mode.
    let ro = env(FrontendConfig {
        read_only: true,
        ..FrontendConfig::default()
    });
    seed(&ro.store).await;
    let r = post_json(&ro, "/api/v1/tasks/send", json!({"name": "cnc.add"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("read-only"));
    let r = get(&ro.app, "/tasks/ok1").await;
    assert!(
        !r.body.contains("data-task-action"),
        "no action buttons in read-only mode"
    );
    // Basic auth and bearer token.
    let auth = env(FrontendConfig {
        basic_auth: Some("admin:s3cret".into()),
        bearer_token: Some("tok".into()),
        ..FrontendConfig::default()
    });
    seed(&auth.store).await;
    let r = get(&auth.app, "/api/v1/tasks").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
    assert_eq!(get(&auth.app, "/healthcheck").await.status, StatusCode::OK);
    let basic = base64::engine::general_purpose::STANDARD.encode("admin:s3cret");
    let req = Request::get("/api/v1/tasks")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&auth.app, req).await.status, StatusCode::OK);
    let wrong = base64::engine::general_purpose::STANDARD.encode("admin:nope");
    let req = Request::get("/api/v1/tasks")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Basic {wrong}"))
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&auth.app, req).await.status, StatusCode::UNAUTHORIZED);
    // Basic auth still needs CSRF on POST; the bearer token does not.
    let req = Request::post("/api/v1/tasks/send")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"name": "cnc.add"}).to_string()))
        .expect("req");
    assert_eq!(send(&auth.app, req).await.status, StatusCode::FORBIDDEN);
    let req = Request::post("/api/v1/tasks/send")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, "Bearer tok")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"name": "cnc.add"}).to_string()))
        .expect("req");
    let r = send(&auth.app, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let req = Request::get("/")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, "Bearer wrong")
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&auth.app, req).await.status, StatusCode::UNAUTHORIZED);
    // allowed_hosts.
    let named = env(FrontendConfig {
        allowed_hosts: vec!["cnc.internal".into()],
        ..FrontendConfig::default()
    });
    let req = Request::get("/healthcheck")
        .header(header::HOST, "cnc.internal:8000")
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&named.app, req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn nests_under_a_prefix() {
    let e = seeded().await;
    let state = e.state.clone().with_base_path("/cnc/");
    let app = axum::Router::new().nest("/cnc", cnc_web::router(state));
    let r = get(&app, "/cnc/tasks").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let body = r.body.replace("&#x2f;", "/");
    assert!(body.contains(r#"href="/cnc/tasks/ok1""#), "{body}");
    assert!(body.contains(r#"src="/cnc/static/app.js""#));
    assert_eq!(
        get(&app, "/cnc/static/app.css").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&app, "/cnc/api/v1/tasks/ok1").await.status,
        StatusCode::OK
    );
}

async fn next_frame(body: &mut axum::body::BodyDataStream) -> String {
    use futures::StreamExt;
    let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .expect("frame in time")
        .expect("open")
        .expect("ok");
    String::from_utf8_lossy(&chunk).into_owned()
}

#[tokio::test]
async fn sse_streams_batches_and_resyncs_laggards() {
    let e = seeded().await;
    let req = Request::get("/api/v1/events")
        .header(header::HOST, "localhost")
        .body(Body::empty())
        .expect("req");
    let resp = e.app.clone().oneshot(req).await.expect("resp");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    let mut body = resp.into_body().into_data_stream();
    assert!(next_frame(&mut body).await.contains("event: hello"));
    let ev = Event::Task(task_event(TaskEventKind::Started, "ok1", cnc_model::now()));
    let batch = WrittenBatch {
        seq: 7,
        events: vec![ev],
        report: ApplyReport {
            changed_tasks: vec!["ok1".into()],
            ..Default::default()
        },
        written_at: cnc_model::now(),
        write_seconds: 0.001,
    };
    e.bus.publish(BusMessage::Batch(Arc::new(batch.clone())));
    let frame = next_frame(&mut body).await;
    assert!(frame.contains("event: batch"), "{frame}");
    let data: Value = serde_json::from_str(
        frame
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data"),
    )
    .expect("json");
    assert_eq!(data["seq"], 7);
    assert_eq!(data["tasks"], json!(["ok1"]));
    assert_eq!(data["events"][0]["type"], "task-started");
    // Overrun the bus (capacity 64): the client is told to resync.
    for _ in 0..200 {
        e.bus.publish(BusMessage::Batch(Arc::new(batch.clone())));
    }
    let frame = next_frame(&mut body).await;
    assert!(
        frame.contains("event: resync") && frame.contains("lagged"),
        "{frame}"
    );
    assert!(e.bus.lagged_total() > 0);
    e.bus.publish(BusMessage::Resync);
}

#[tokio::test]
async fn component_binds_serves_and_stops() {
    use cnc_model::component::{CancellationToken, Component, Context, StatusBoard};
    let store = Arc::new(cnc_store::memory::MemoryStore::new());
    let ctx = Context {
        store,
        bus: Default::default(),
        logs: Arc::new(cnc_model::logs::RecentLogs::new(10)),
        status: StatusBoard::new(),
    };
    let mut c = cnc_web::WebComponent::new(
        FrontendConfig {
            port: 0,
            ..FrontendConfig::default()
        },
        Vec::new(),
    );
    assert_eq!(c.name(), "frontend");
    c.build(&ctx).await.expect("build");
    let addr = c.local_addr().expect("bound");
    assert!(addr.ip().is_loopback(), "binds 127.0.0.1 by default");
    let info = c.info();
    assert!(info.links[0].url.starts_with("http://127.0.0.1:"));
    // A second component on the same port fails in build, not in run.
    let mut clash = cnc_web::WebComponent::new(
        FrontendConfig {
            port: addr.port(),
            ..FrontendConfig::default()
        },
        Vec::new(),
    );
    assert!(clash.build(&ctx).await.is_err());
    let token = CancellationToken::new();
    let t2 = token.clone();
    let task = tokio::spawn(async move { c.run(t2).await });
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("OK"),
        "{out}"
    );
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("join")
        .expect("clean");
    // Redacted config summary.
    let secret = cnc_web::WebComponent::new(
        FrontendConfig {
            basic_auth: Some("u:pw".into()),
            bearer_token: Some("t".into()),
            ..FrontendConfig::default()
        },
        Vec::new(),
    );
    let text = secret.info().config.to_string();
    assert!(!text.contains("pw") && !text.contains("\"t\""), "{text}");
}
