//! Shared set-up of the in-process tests: memory store, memory broker and
//! backend, a router, and request helpers.
#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cnc_broker::memory::{MemoryBackend, MemoryBroker};
use cnc_broker::{AppConnection, ControlClient, StreamStats, WorkerReply};
use cnc_model::bus::EventBus;
use cnc_model::component::{Context, StatusBoard};
use cnc_model::config::FrontendConfig;
use cnc_model::logs::RecentLogs;
use cnc_model::{DbController, Event, TaskEvent, TaskEventKind, WorkerEvent, WorkerEventKind};
use cnc_store::memory::MemoryStore;
use cnc_web::WebState;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

pub struct Env {
    pub app: Router,
    pub state: WebState,
    pub store: Arc<MemoryStore>,
    pub broker: MemoryBroker,
    pub backend: MemoryBackend,
    pub bus: EventBus,
}

pub const WORKER: &str = "w1@host";

pub fn env(cfg: FrontendConfig) -> Env {
    let backend = MemoryBackend::default();
    env_with_backend(cfg, backend.clone(), Some(Arc::new(backend)))
}

/// Like [`env`] with the app's result backend chosen (`None`: no backend);
/// `memory` is what `Env::backend` holds.
pub fn env_with_backend(
    cfg: FrontendConfig,
    memory: MemoryBackend,
    app_backend: Option<Arc<dyn cnc_broker::ResultBackend>>,
) -> Env {
    let store = Arc::new(MemoryStore::new());
    let broker = MemoryBroker::new();
    let backend = memory;
    let bus = EventBus::new(64);
    let ctx = Context {
        store: store.clone(),
        bus: bus.clone(),
        logs: Arc::new(RecentLogs::new(100)),
        status: StatusBoard::new(),
    };
    ctx.status.update("frontend", |s| s.restarts = 1);
    let arc_broker: Arc<dyn cnc_broker::Broker> = Arc::new(broker.clone());
    let app_conn = AppConnection {
        name: "test".into(),
        broker_url: "memory://".into(),
        broker: arc_broker.clone(),
        control: ControlClient::new(arc_broker),
        backend: app_backend,
        default_queue: "celery".into(),
        stream_stats: StreamStats::new(),
    };
    // Fake worker replies, shaped like Celery 5.7's.
    broker.set_responder(Arc::new(|req| {
        let payload = match req.method.as_str() {
            "ping" => json!({"ok": "pong"}),
            "stats" => json!({"pid": 42, "pool": {"max-concurrency": 2, "processes": [1, 2]}, "broker": {"hostname": "x", "alternates": []}, "total": {}}),
            "active_queues" => json!([{"name": "celery", "routing_key": "celery"}, {"name": "custom"}]),
            "registered" => json!(["cnc.add [rate_limit=10/m]", "cnc.on_custom [queue=custom]", "cnc.sleep"]),
            "scheduled" | "reserved" | "revoked" => json!([]),
            "active" => json!([{"id": "running-1", "name": "cnc.sleep", "args": [5], "kwargs": {}}]),
            "conf" => json!({"task_routes": {"cnc.routed": {"queue": "routed"}}}),
            "pool_grow" => json!({"ok": "pool will grow"}),
            "pool_shrink" => json!({"ok": "pool will shrink"}),
            "autoscale" => json!({"error": "autoscale not enabled"}),
            "add_consumer" => json!({"ok": "add consumer q"}),
            "cancel_consumer" => json!({"ok": "no longer consuming from q"}),
            "rate_limit" => json!({"ok": "new rate limit set successfully"}),
            "time_limit" => json!({"ok": "time limits set successfully"}),
            "pool_restart" => json!({"ok": "reload started"}),
            _ => json!({"error": "unknown command"}),
        };
        vec![WorkerReply { hostname: WORKER.into(), payload }]
    }));
    let state = WebState::new(cfg, vec![app_conn], ctx);
    let app = cnc_web::router(state.clone());
    Env {
        app,
        state,
        store,
        broker,
        backend,
        bus,
    }
}

pub fn task_event(kind: TaskEventKind, id: &str, ts: f64) -> TaskEvent {
    TaskEvent::new(kind, id, ts)
        .with_hostname(WORKER)
        .with_clock(ts as u64)
}

/// A worker online plus tasks: `ok1` SUCCESS, `bad1` FAILURE with a
/// traceback, `evil` with hostile args, `child1` a child of `ok1`.
pub async fn seed(store: &MemoryStore) {
    let now = cnc_model::now();
    let mut events = Vec::new();
    let mut w = WorkerEvent::new(WorkerEventKind::Online, WORKER, now - 10.0);
    w.freq = Some(2.0);
    events.push(Event::Worker(w));
    let mut hb = WorkerEvent::new(WorkerEventKind::Heartbeat, WORKER, now);
    hb.freq = Some(60.0);
    hb.active = Some(1);
    hb.processed = Some(3);
    events.push(Event::Worker(hb));
    let mut r = task_event(TaskEventKind::Received, "ok1", now - 5.0);
    r.name = Some("cnc.add".into());
    r.args = Some("[1, 2]".into());
    r.kwargs = Some("{}".into());
    r.root_id = Some("ok1".into());
    events.push(Event::Task(r));
    events.push(Event::Task(task_event(
        TaskEventKind::Started,
        "ok1",
        now - 4.9,
    )));
    let mut s = task_event(TaskEventKind::Succeeded, "ok1", now - 4.8);
    s.result = Some("3".into());
    s.runtime = Some(0.1);
    events.push(Event::Task(s));
    let mut r = task_event(TaskEventKind::Received, "bad1", now - 3.0);
    r.name = Some("cnc.fail_always".into());
    r.args = Some("('boom',)".into());
    r.kwargs = Some("{'msg': 'x'}".into());
    events.push(Event::Task(r));
    let mut f = task_event(TaskEventKind::Failed, "bad1", now - 2.9);
    f.exception = Some("ValueError('boom')".into());
    f.traceback =
        Some("Traceback (most recent call last):\n  File \"x.py\"\nValueError: boom".into());
    events.push(Event::Task(f));
    let mut r = task_event(TaskEventKind::Received, "evil", now - 2.0);
    r.name = Some("cnc.echo".into());
    r.args = Some("['<script>alert(1)</script>', '\"><img src=x onerror=alert(2)>']".into());
    r.kwargs = Some("{'k': '</pre><script>alert(3)</script>'}".into());
    events.push(Event::Task(r));
    let mut c = task_event(TaskEventKind::Received, "child1", now - 4.7);
    c.name = Some("cnc.mul".into());
    c.args = Some("[3, 4]".into());
    c.parent_id = Some("ok1".into());
    c.root_id = Some("ok1".into());
    events.push(Event::Task(c));
    store.apply(&events).await.expect("apply");
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub async fn send(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn get(app: &Router, uri: &str) -> Resp {
    let req = Request::get(uri)
        .header(header::HOST, "localhost:8000")
        .body(Body::empty())
        .expect("request");
    send(app, req).await
}

pub async fn post_json(env: &Env, uri: &str, body: Value) -> Resp {
    let req = Request::post(uri)
        .header(header::HOST, "localhost:8000")
        .header(header::ORIGIN, "http://localhost:8000")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-csrf-token", env.state.csrf_token())
        .body(Body::from(body.to_string()))
        .expect("request");
    send(&env.app, req).await
}

pub async fn post_empty(env: &Env, uri: &str) -> Resp {
    let req = Request::post(uri)
        .header(header::HOST, "localhost:8000")
        .header("x-csrf-token", env.state.csrf_token())
        .body(Body::empty())
        .expect("request");
    send(&env.app, req).await
}
