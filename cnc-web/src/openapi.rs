//! The OpenAPI 3.1 document of the JSON API, written by hand (the API is
//! small; a generator would add a proc-macro dependency and annotations on
//! every handler for the same JSON).

use axum::Json;
use serde_json::{Value, json};

fn q(name: &str, desc: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": desc, "schema": { "type": "string" } })
}

fn p(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
}

fn get(summary: &str, params: Vec<Value>) -> Value {
    json!({ "get": { "summary": summary, "parameters": params, "responses": {
        "200": { "description": "OK" }, "400": { "$ref": "#/components/responses/Error" },
        "404": { "$ref": "#/components/responses/Error" } } } })
}

fn post(summary: &str, params: Vec<Value>, body: Option<&str>) -> Value {
    let mut op = json!({ "summary": summary, "parameters": params, "responses": {
        "200": { "description": "OK" }, "400": { "$ref": "#/components/responses/Error" },
        "403": { "$ref": "#/components/responses/Error" }, "404": { "$ref": "#/components/responses/Error" } },
        "security": [ { "csrf": [] }, { "bearer": [] } ] });
    if let Some(schema) = body {
        op["requestBody"] = json!({ "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } });
    }
    json!({ "post": op })
}

/// The document.
pub(crate) fn spec() -> Value {
    let task_filters = || {
        vec![
            q(
                "state",
                "states, comma-separated or repeated (SUCCESS,FAILURE)",
            ),
            q("worker", "exact worker hostname"),
            q("name", "part of the task name, case-insensitive"),
            q(
                "search",
                "substring of name, args, kwargs, result, exception",
            ),
            q(
                "from",
                "created at or after (epoch seconds, ISO-8601, YYYY-MM-DD HH:MM)",
            ),
            q("to", "created before"),
            q("last", "created in the last 5m, 1h, 24h..."),
            q("root_id", "exact root id"),
            q("group_id", "exact group id"),
            q("parent_id", "exact parent id"),
            q(
                "sort",
                "seen, created, received, started, runtime, name; prefix - for descending (default -seen)",
            ),
            q("limit", "page size, 1-10000 (default 100)"),
            q("offset", "rows to skip"),
            q(
                "cursor",
                "next_cursor of the previous page (default sort only)",
            ),
        ]
    };
    let stats = || {
        vec![
            q("name", "exact task name"),
            q("worker", "exact worker"),
            q("from", "start"),
            q("to", "end"),
        ]
    };
    let w = || vec![p("name")];
    let mut paths = serde_json::Map::new();
    let mut add = |path: &str, v: Value| {
        let entry = paths.entry(path.to_owned()).or_insert_with(|| json!({}));
        if let (Some(e), Value::Object(v)) = (entry.as_object_mut(), v) {
            e.extend(v);
        }
    };
    add(
        "/api/v1/tasks",
        get(
            "Tasks matching filters, one page (TaskPage: tasks, next_cursor)",
            task_filters(),
        ),
    );
    add("/api/v1/tasks/{id}", get("One task", vec![p("id")]));
    add(
        "/api/v1/tasks/{id}/events",
        get("Stored events of a task, oldest first", vec![p("id")]),
    );
    add(
        "/api/v1/tasks/{id}/relations",
        get("Every task of the task's workflow", vec![p("id")]),
    );
    add(
        "/api/v1/tasks/{id}/result",
        get("The result stored in the result backend", vec![p("id")]),
    );
    add(
        "/api/v1/tasks/send",
        post("Send a task", vec![], Some("SendTask")),
    );
    add(
        "/api/v1/tasks/{id}/revoke",
        post(
            "Revoke; with terminate, kill it with signal",
            vec![p("id")],
            Some("Revoke"),
        ),
    );
    add(
        "/api/v1/tasks/{id}/retry",
        post(
            "Send a new task with the same name, arguments and queue",
            vec![p("id")],
            None,
        ),
    );
    add(
        "/api/v1/task-names",
        get("Task names seen, with counts", vec![]),
    );
    add(
        "/api/v1/registered",
        get(
            "Tasks registered on workers, with their own queue",
            vec![q("refresh", "inspect now")],
        ),
    );
    add(
        "/api/v1/workers",
        get("Known workers with their current status", vec![]),
    );
    add(
        "/api/v1/workers/{name}",
        get("One worker and its status history", w()),
    );
    add(
        "/api/v1/workers/{name}/inspect",
        get(
            "Live inspect replies (stats, active, reserved, scheduled, registered, active_queues, revoked, conf)",
            vec![p("name"), q("refresh", "bypass the 10 s cache")],
        ),
    );
    add(
        "/api/v1/workers/{name}/control",
        post(
            "Pool, consumer, limit, shutdown and restart commands",
            w(),
            Some("Control"),
        ),
    );
    add(
        "/api/v1/stats/runtime",
        get("Runtime min/max/avg/p50/p95/p99", stats()),
    );
    add(
        "/api/v1/stats/throughput",
        get("Finished tasks per bucket", {
            let mut v = stats();
            v.push(q("bucket", "bucket seconds, multiple of 60"));
            v
        }),
    );
    add("/api/v1/stats/states", get("Tasks per state", stats()));
    add("/api/v1/stats/names", get("Tasks per name", stats()));
    add("/api/v1/dashboard", get("Dashboard numbers", vec![]));
    add("/api/v1/queues", get("Depth of every known queue", vec![]));
    add(
        "/api/v1/csrf",
        get("The CSRF token to send as X-CSRF-Token", vec![]),
    );
    add(
        "/api/v1/events",
        get("Server-Sent Events: hello, batch, worker, resync", vec![]),
    );
    add("/api/components", get("Status of every component", vec![]));
    add("/api/openapi.json", get("This document", vec![]));
    // Flower-compatible.
    let fl = "Flower-compatible: ";
    add("/healthcheck", get(&format!("{fl}OK"), vec![]));
    add(
        "/api/workers",
        get(
            &format!("{fl}workers with inspect data"),
            vec![
                q("refresh", "inspect now"),
                q("status", "only online status"),
                q("workername", "one worker"),
            ],
        ),
    );
    add(
        "/api/tasks",
        get(
            &format!("{fl}tasks by id, each with its children"),
            vec![
                q("limit", ""),
                q("offset", ""),
                q("workername", ""),
                q("taskname", "exact task name, case-insensitive"),
                q("state", ""),
                q(
                    "received_start",
                    "received at or after, UTC (YYYY-MM-DD HH:MM, epoch seconds or ISO-8601); tasks never received pass, as in Flower",
                ),
                q("received_end", "received at or before, UTC"),
                q(
                    "sort_by",
                    "name, received, started, runtime; - for descending",
                ),
                q("search", ""),
            ],
        ),
    );
    add(
        "/api/task/types",
        get(&format!("{fl}task names seen"), vec![]),
    );
    add(
        "/api/task/info/{id}",
        get(&format!("{fl}one task"), vec![p("id")]),
    );
    add(
        "/api/task/result/{id}",
        get(
            &format!("{fl}result from the backend"),
            vec![p("id"), q("timeout", "seconds to wait")],
        ),
    );
    for (path, what) in [
        ("/api/task/async-apply/{name}", "send a registered task"),
        ("/api/task/send-task/{name}", "send a task by name"),
        ("/api/task/apply/{name}", "send and wait for the result"),
    ] {
        add(
            path,
            post(&format!("{fl}{what}"), vec![p("name")], Some("FlowerApply")),
        );
    }
    add(
        "/api/task/revoke/{id}",
        post(
            &format!("{fl}revoke"),
            vec![p("id"), q("terminate", ""), q("signal", "")],
            None,
        ),
    );
    let mut abort = post(
        &format!(
            "{fl}abort: stores the state ABORTED in the result backend, as Celery's AbortableAsyncResult.abort() does, for a running AbortableTask to see with is_aborted() (a stored SUCCESS is kept; nothing is revoked). 503 without a result backend, or when it cannot store the state"
        ),
        vec![p("id")],
        None,
    );
    abort["post"]["responses"]["503"] = json!({ "$ref": "#/components/responses/Error" });
    add("/api/task/abort/{id}", abort);
    add(
        "/api/task/rate-limit/{name}",
        post(
            &format!("{fl}rate limit"),
            vec![p("name"), q("workername", ""), q("ratelimit", "")],
            None,
        ),
    );
    add(
        "/api/task/timeout/{name}",
        post(
            &format!("{fl}time limits"),
            vec![p("name"), q("workername", ""), q("hard", ""), q("soft", "")],
            None,
        ),
    );
    add(
        "/api/worker/shutdown/{name}",
        post(&format!("{fl}shutdown"), w(), None),
    );
    add(
        "/api/worker/pool/restart/{name}",
        post(&format!("{fl}pool restart"), w(), None),
    );
    add(
        "/api/worker/pool/grow/{name}",
        post(&format!("{fl}pool grow"), vec![p("name"), q("n", "")], None),
    );
    add(
        "/api/worker/pool/shrink/{name}",
        post(
            &format!("{fl}pool shrink"),
            vec![p("name"), q("n", "")],
            None,
        ),
    );
    add(
        "/api/worker/pool/autoscale/{name}",
        post(
            &format!("{fl}autoscale"),
            vec![p("name"), q("min", ""), q("max", "")],
            None,
        ),
    );
    add(
        "/api/worker/queue/add-consumer/{name}",
        post(
            &format!("{fl}add consumer"),
            vec![p("name"), q("queue", "")],
            None,
        ),
    );
    add(
        "/api/worker/queue/cancel-consumer/{name}",
        post(
            &format!("{fl}cancel consumer"),
            vec![p("name"), q("queue", "")],
            None,
        ),
    );
    add(
        "/api/queues/length",
        get(&format!("{fl}queue lengths"), vec![]),
    );
    json!({
        "openapi": "3.1.0",
        "info": { "title": "celery-cnc API", "version": env!("CARGO_PKG_VERSION"),
                  "description": "JSON API of celery-cnc. Every POST needs the X-CSRF-Token header (GET /api/v1/csrf) and a same-origin request, unless authenticated with the bearer token." },
        "paths": Value::Object(paths),
        "components": {
            "securitySchemes": {
                "basic": { "type": "http", "scheme": "basic" },
                "bearer": { "type": "http", "scheme": "bearer" },
                "csrf": { "type": "apiKey", "in": "header", "name": "X-CSRF-Token" }
            },
            "responses": { "Error": { "description": "Error", "content": { "application/json": { "schema": {
                "type": "object", "properties": { "error": { "type": "string" } }, "required": ["error"] } } } } },
            "schemas": {
                "SendTask": { "type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                    "name": { "type": "string" }, "args": { "type": "array" }, "kwargs": { "type": "object" },
                    "queue": { "type": "string" }, "countdown": { "type": "number" }, "eta": { "type": "string", "format": "date-time" },
                    "expires": { "oneOf": [ { "type": "number" }, { "type": "string" } ] }, "priority": { "type": "integer", "minimum": 0, "maximum": 255 },
                    "app": { "type": "string" }, "task_id": { "type": "string" } } },
                "Revoke": { "type": "object", "additionalProperties": false, "properties": {
                    "terminate": { "type": "boolean" }, "signal": { "type": "string", "enum": crate::actions::SIGNALS } } },
                "Control": { "type": "object", "required": ["action"], "properties": {
                    "action": { "type": "string", "enum": ["pool_grow", "pool_shrink", "autoscale", "add_consumer", "cancel_consumer", "rate_limit", "time_limit", "shutdown", "pool_restart"] },
                    "n": { "type": "integer" }, "min": { "type": "integer" }, "max": { "type": "integer" }, "queue": { "type": "string" },
                    "task": { "type": "string" }, "rate": { "type": "string" }, "hard": { "type": "number" }, "soft": { "type": "number" } } },
                "FlowerApply": { "type": "object", "properties": { "args": { "type": "array" }, "kwargs": { "type": "object" } },
                    "additionalProperties": true, "description": "other keys are apply_async options (countdown, eta, expires, queue, priority, task_id)" }
            }
        }
    })
}

/// `GET /api/openapi.json`.
pub(crate) async fn document() -> Json<Value> {
    Json(spec())
}
