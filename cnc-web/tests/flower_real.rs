//! Our Flower-compatible endpoints next to a real Flower 2.2 on the same
//! Redis broker and the same real Celery worker: the JSON shapes (keys and
//! value types) must match. Flower is installed into the test virtualenv on
//! first use (`pip install flower==2.2.0`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cnc_broker::protocol::task::SendTask;
use cnc_broker::{AppConnection, Broker, EventStreamOptions, StreamStats};
use cnc_model::DbController;
use cnc_model::bus::{BusMessage, EventBus, WrittenBatch};
use cnc_model::component::{Context, StatusBoard};
use cnc_model::config::{CeleryApp, FrontendConfig};
use cnc_model::logs::RecentLogs;
use cnc_store::memory::MemoryStore;
use cnc_testsupport::{CeleryWorker, RedisDb, WorkerOpts, celery_app_dir, celery_venv, target_dir};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FLOWER: &str = "flower==2.2.0";

/// The venv's python, with Flower installed (once, under the venv lock).
fn flower_python() -> std::path::PathBuf {
    let python = celery_venv().expect("celery venv");
    let venv = python
        .parent()
        .and_then(|p| p.parent())
        .expect("venv dir")
        .to_path_buf();
    let marker = venv.join(".cnc-flower");
    if std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == FLOWER) {
        return python;
    }
    let lock = std::fs::File::create(target_dir().join("celery-venv.lock")).expect("lock file");
    // The same lock file `celery_venv` takes (testsupport builds with the
    // toolchain of the workspace, which has `File::lock`).
    #[allow(clippy::incompatible_msrv)]
    lock.lock().expect("lock");
    if !std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == FLOWER) {
        let out = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", FLOWER])
            .output()
            .expect("pip");
        assert!(
            out.status.success(),
            "pip install flower: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&marker, FLOWER).expect("marker");
    }
    python
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// A plain HTTP/1.1 GET: status and body.
async fn http_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A plain HTTP/1.1 POST with a JSON body and extra headers.
async fn http_post(port: u16, path: &str, body: &str, headers: &str) -> (u16, String) {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (0, String::new());
    };
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Our broker connection and app (broker and backend on `url`).
async fn connect_app(url: &str) -> (Arc<dyn cnc_broker::Broker>, AppConnection) {
    let broker = cnc_broker::connect(url, Default::default())
        .await
        .expect("broker");
    let app = AppConnection::with_broker(
        &CeleryApp::new("t", url).backend(url),
        broker.clone(),
        StreamStats::new(),
    )
    .await
    .expect("app");
    (broker, app)
}

async fn get_json(port: u16, path: &str) -> Value {
    let (status, body) = http_get(port, path).await;
    assert_eq!(status, 200, "GET {path} on port {port}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Keys must be equal; values of the same JSON type where both are set.
fn same_shape(what: &str, ours: &Value, flower: &Value) {
    let (Some(o), Some(f)) = (ours.as_object(), flower.as_object()) else {
        assert_eq!(
            kind(ours),
            kind(flower),
            "{what}: {ours} vs Flower {flower}"
        );
        return;
    };
    let ok: Vec<&String> = o.keys().collect();
    let fk: Vec<&String> = f.keys().collect();
    let mut oks = ok.clone();
    oks.sort();
    let mut fks = fk.clone();
    fks.sort();
    assert_eq!(
        oks, fks,
        "{what}: keys differ\nours:   {ours}\nFlower: {flower}"
    );
    for (k, fv) in f {
        let ov = &o[k];
        if !ov.is_null() && !fv.is_null() {
            assert_eq!(kind(ov), kind(fv), "{what}.{k}: ours {ov} vs Flower {fv}");
        }
    }
}

async fn wait<T, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> Fut,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_match_a_real_flower() {
    let python = tokio::task::spawn_blocking(flower_python)
        .await
        .expect("join");
    let db = RedisDb::acquire().expect("redis db");
    let url = db.url();
    let tag = cnc_testsupport::unique("fl");
    let node = format!("w1@{tag}");

    // Flower first, so it sees every event.
    let flower_port = free_port();
    let flower = Proc(
        Command::new(&python)
            .args(["-m", "celery", "-A", "cnc_testapp", "flower"])
            .arg(format!("--port={flower_port}"))
            .arg("--address=127.0.0.1")
            .current_dir(celery_app_dir())
            .env("PYTHONPATH", celery_app_dir())
            .env("CNC_BROKER", &url)
            .env("CNC_BACKEND", &url)
            .env("FLOWER_UNAUTHENTICATED_API", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start flower"),
    );
    // Ours.
    let (broker, app) = connect_app(&url).await;
    let store = Arc::new(MemoryStore::new());
    let bus = EventBus::new(1024);
    {
        let (broker, store, bus) = (broker.clone(), store.clone(), bus.clone());
        let mut stream = broker
            .events(EventStreamOptions::default())
            .await
            .expect("events");
        tokio::spawn(async move {
            let mut seq = 0;
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                let batch = vec![ev];
                let report = store.apply(&batch).await.expect("apply");
                seq += 1;
                bus.publish(BusMessage::Batch(Arc::new(WrittenBatch {
                    seq,
                    events: batch,
                    report,
                    written_at: cnc_model::now(),
                    write_seconds: 0.0,
                })));
            }
        });
    }
    let ctx = Context {
        store: store.clone(),
        bus,
        logs: Arc::new(RecentLogs::new(10)),
        status: StatusBoard::new(),
    };
    let state = cnc_web::WebState::new(FrontendConfig::default(), vec![app], ctx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let our_port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let svc = cnc_web::router(state).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, svc).await.expect("serve");
    });
    wait("Flower up", 60, || async move {
        (http_get(flower_port, "/healthcheck").await.0 == 200).then_some(())
    })
    .await;

    let opts = WorkerOpts::new(&node, &url)
        .backend(&url)
        .queues(&["celery"])
        .concurrency(2);
    let _worker = tokio::task::spawn_blocking(move || CeleryWorker::start(opts))
        .await
        .expect("join")
        .expect("worker");
    let send = |t: SendTask| {
        let broker: Arc<dyn Broker> = broker.clone();
        async move {
            let m = t.build();
            broker
                .send_task(&m.queue, m.to_message())
                .await
                .expect("send");
            m.id
        }
    };
    let ok = send(SendTask::new("cnc.add").args(vec![json!(1), json!(2)])).await;
    let bad = send(SendTask::new("cnc.fail_always").args(vec![json!("x")])).await;
    // A subtask of `ok`, as a task sending another would publish it.
    let kid = send(
        SendTask::new("cnc.mul")
            .args(vec![json!(2), json!(3)])
            .parent_id(ok.clone())
            .root_id(ok.clone()),
    )
    .await;
    for id in [&ok, &bad, &kid] {
        wait("both saw the task finish", 60, || {
            let (store, id) = (store.clone(), id.clone());
            async move {
                let ours = store
                    .task(&id)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|t| t.state.is_ready());
                let (_, body) = http_get(flower_port, &format!("/api/task/info/{id}")).await;
                let f: Value = serde_json::from_str(&body).unwrap_or_default();
                let theirs = matches!(f["state"].as_str(), Some("SUCCESS" | "FAILURE"));
                (ours && theirs).then_some(())
            }
        })
        .await;
    }

    let mut compared = BTreeMap::new();
    for id in [&ok, &bad] {
        let path = format!("/api/task/info/{id}");
        same_shape(
            &path,
            &get_json(our_port, &path).await,
            &get_json(flower_port, &path).await,
        );
        compared.insert("task/info", ());
        let path = format!("/api/task/result/{id}");
        same_shape(
            &path,
            &get_json(our_port, &path).await,
            &get_json(flower_port, &path).await,
        );
        compared.insert("task/result", ());
    }
    let ours = get_json(our_port, "/api/tasks").await;
    let theirs = get_json(flower_port, "/api/tasks").await;
    for id in [&ok, &bad] {
        same_shape(
            &format!("/api/tasks[{id}]"),
            &ours[id.as_str()],
            &theirs[id.as_str()],
        );
    }
    // Flower's filters: exact name, received window (Flower reads it in
    // the server's local time, ours in UTC: the tests run in UTC), and
    // `children` in every task dict.
    let window = |from: i64, to: i64| {
        let fmt = |d: i64| {
            (chrono::Utc::now() + chrono::Duration::seconds(d))
                .format("%Y-%m-%d%%20%H:%M")
                .to_string()
        };
        format!("received_start={}&received_end={}", fmt(from), fmt(to))
    };
    for path in [
        "/api/tasks?taskname=cnc.add".to_owned(),
        "/api/tasks?taskname=cnc".to_owned(),
        "/api/tasks?taskname=CNC.Add".to_owned(),
        "/api/tasks?taskname=cnc.mul&limit=1".to_owned(),
        format!("/api/tasks?{}", window(-86_400, 86_400)),
        format!("/api/tasks?taskname=cnc.add&{}", window(-86_400, 86_400)),
        "/api/tasks?received_start=2000-01-01%2000:00&received_end=2000-01-02%2000:00".to_owned(),
        "/api/tasks?sort_by=name&limit=2&offset=1".to_owned(),
    ] {
        let (o, f) = (
            get_json(our_port, &path).await,
            get_json(flower_port, &path).await,
        );
        let ids = |v: &Value| {
            let mut k: Vec<String> = v
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            k.sort();
            k
        };
        assert_eq!(ids(&o), ids(&f), "{path}\nours:   {o}\nFlower: {f}");
        for id in ids(&f) {
            same_shape(&format!("{path}[{id}]"), &o[id.as_str()], &f[id.as_str()]);
            assert_eq!(
                o[id.as_str()]["children"],
                f[id.as_str()]["children"],
                "{path}[{id}].children"
            );
        }
    }
    let listed = get_json(our_port, "/api/tasks").await;
    assert_eq!(listed[ok.as_str()]["children"], json!([kid.clone()]));
    let path = "/api/tasks?state=FAILURE&limit=5";
    let (o, f) = (
        get_json(our_port, path).await,
        get_json(flower_port, path).await,
    );
    assert_eq!(
        o.as_object().map(|m| m.keys().collect::<Vec<_>>()),
        f.as_object().map(|m| m.keys().collect::<Vec<_>>()),
        "{path}"
    );
    let path = "/api/task/types";
    let (o, f) = (
        get_json(our_port, path).await,
        get_json(flower_port, path).await,
    );
    same_shape(path, &o, &f);
    let mut ot: Vec<String> = serde_json::from_value(o["task-types"].clone()).unwrap_or_default();
    let mut ft: Vec<String> = serde_json::from_value(f["task-types"].clone()).unwrap_or_default();
    ot.sort();
    ft.sort();
    assert_eq!(ot, ft, "seen task types");
    let path = "/api/workers?refresh=1";
    let (o, f) = (
        get_json(our_port, path).await,
        get_json(flower_port, path).await,
    );
    same_shape(
        &format!("{path}[{node}]"),
        &o[node.as_str()],
        &f[node.as_str()],
    );
    assert_eq!(
        o[node.as_str()]["registered"],
        f[node.as_str()]["registered"],
        "registered lists"
    );
    let path = "/api/workers?status=1";
    let (o, f) = (
        get_json(our_port, path).await,
        get_json(flower_port, path).await,
    );
    assert_eq!(o[node.as_str()], f[node.as_str()], "{path}");
    let path = "/api/queues/length";
    same_shape(
        path,
        &get_json(our_port, path).await,
        &get_json(flower_port, path).await,
    );
    let (os, ob) = http_get(our_port, "/healthcheck").await;
    let (fs, fb) = http_get(flower_port, "/healthcheck").await;
    assert_eq!((os, ob), (fs, fb), "/healthcheck");

    // Actions: the same answers from both (ours needs the CSRF token).
    let token = get_json(our_port, "/api/v1/csrf").await["csrf_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let ours_h = format!("X-CSRF-Token: {token}\r\n");
    let post_both = |path: String, body: &'static str| {
        let ours_h = ours_h.clone();
        async move {
            let (os, ob) = http_post(our_port, &path, body, &ours_h).await;
            let (fs, fb) = http_post(flower_port, &path, body, "").await;
            assert_eq!(os, fs, "POST {path}: ours {ob} / Flower {fb}");
            let parse =
                |b: &str| serde_json::from_str::<Value>(b).unwrap_or(Value::String(b.to_owned()));
            (parse(&ob), parse(&fb))
        }
    };
    for path in [
        "/api/task/async-apply/cnc.add",
        "/api/task/send-task/cnc.add",
        "/api/task/apply/cnc.add",
    ] {
        let (o, f) = post_both(path.to_owned(), r#"{"args": [1, 2]}"#).await;
        same_shape(path, &o, &f);
    }
    // Abort a finished task: both store nothing new (SUCCESS is kept) and
    // answer the same.
    let path = format!("/api/task/abort/{ok}");
    let (o, f) = post_both(path.clone(), "").await;
    assert_eq!(o, f, "{path}");
    let path = format!("/api/task/result/{ok}");
    assert_eq!(
        get_json(our_port, &path).await["state"],
        json!("SUCCESS"),
        "{path} after abort"
    );
    let path = format!("/api/task/revoke/{ok}?terminate=false");
    let (o, f) = post_both(path.clone(), "").await;
    assert_eq!(o, f, "{path}");
    let path = format!("/api/worker/pool/grow/{node}?n=1");
    let (o, f) = post_both(path.clone(), "").await;
    assert_eq!(o, f, "{path}");
    let path = format!("/api/worker/pool/shrink/{node}?n=1");
    let (o, f) = post_both(path.clone(), "").await;
    assert_eq!(o, f, "{path}");
    for path in [
        format!("/api/worker/queue/add-consumer/{node}?queue=extra"),
        format!("/api/worker/queue/cancel-consumer/{node}?queue=extra"),
        format!("/api/task/rate-limit/cnc.add?workername={node}&ratelimit=5/m"),
        format!("/api/task/timeout/cnc.sleep?workername={node}&soft=5&hard=10"),
        format!("/api/worker/pool/autoscale/{node}?min=1&max=2"),
    ] {
        let (o, f) = post_both(path.clone(), "").await;
        same_shape(&path, &o, &f);
    }
    drop(flower);
}

/// An `AbortableTask` for the worker, in a module of its own (the shared
/// test app stays as it is): it polls `is_aborted()` and, once it sees
/// `ABORTED` in the result backend, returns its marker argument.
const ABORTABLE_MODULE: &str = r#"
import time

from celery.contrib.abortable import AbortableTask

from cnc_testapp import app


@app.task(name='cnc.abortable', bind=True, base=AbortableTask)
def abortable(self, marker):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if self.is_aborted():
            return marker
        time.sleep(0.05)
    return 'never aborted'
"#;

/// `POST /api/task/abort/{id}` against a real worker running an
/// `AbortableTask`: the task sees `ABORTED` and ends with its marker, so
/// the state went where Celery looks for it; and nothing was revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_reaches_a_running_abortable_task() {
    let db = RedisDb::acquire().expect("redis db");
    let url = db.url();
    let tag = cnc_testsupport::unique("ab");
    let node = format!("w1@{tag}");

    // The worker imports the extra module through Celery's `--include`
    // (`CELERY_WORKER_INCLUDE`: Celery's CLI reads options from
    // `CELERY_<COMMAND>_<OPTION>`), found on PYTHONPATH before the app.
    let extra = tempfile::tempdir().expect("tempdir");
    std::fs::write(extra.path().join("cnc_abortable.py"), ABORTABLE_MODULE).expect("module");
    let pythonpath = format!("{}:{}", extra.path().display(), celery_app_dir().display());
    let opts = WorkerOpts::new(&node, &url)
        .backend(&url)
        .queues(&["celery"])
        .concurrency(1)
        .env("CELERY_WORKER_INCLUDE", "cnc_abortable")
        .env("PYTHONPATH", pythonpath);
    let worker = tokio::task::spawn_blocking(move || CeleryWorker::start(opts))
        .await
        .expect("join")
        .expect("worker");

    let (broker, app) = connect_app(&url).await;
    let backend = app.backend.clone().expect("backend");
    let control = app.control.clone();
    let ctx = Context {
        store: Arc::new(MemoryStore::new()),
        bus: EventBus::new(16),
        logs: Arc::new(RecentLogs::new(10)),
        status: StatusBoard::new(),
    };
    let state = cnc_web::WebState::new(FrontendConfig::default(), vec![app], ctx);
    let token = state.csrf_token().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let svc = cnc_web::router(state).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, svc).await.expect("serve");
    });

    let marker = cnc_testsupport::unique("aborted-");
    let m = SendTask::new("cnc.abortable")
        .args(vec![json!(marker.clone())])
        .build();
    broker
        .send_task(&m.queue, m.to_message())
        .await
        .expect("send");
    let id = m.id;
    // Running: the worker stored STARTED (task_track_started).
    wait("the task to start", 60, || {
        let (backend, id) = (backend.clone(), id.clone());
        async move {
            backend
                .get(&id)
                .await
                .ok()
                .flatten()
                .filter(|r| r.status == "STARTED")
                .map(|_| ())
        }
    })
    .await;

    let headers = format!("X-CSRF-Token: {token}\r\n");
    let (status, body) = http_post(port, &format!("/api/task/abort/{id}"), "", &headers).await;
    assert_eq!(status, 200, "{body}\nworker log:\n{}", worker.log_text());
    assert_eq!(
        serde_json::from_str::<Value>(&body).ok(),
        Some(json!({ "message": format!("Aborted '{id}'") }))
    );

    // The task saw ABORTED and returned its marker (Celery then stores the
    // return value as SUCCESS over the ABORTED state).
    let r = wait("the task to return its marker", 60, || {
        let (backend, id) = (backend.clone(), id.clone());
        async move {
            backend
                .get(&id)
                .await
                .ok()
                .flatten()
                .filter(|r| r.status == "SUCCESS")
        }
    })
    .await;
    assert_eq!(
        r.result,
        json!(marker),
        "worker log:\n{}",
        worker.log_text()
    );

    // Abort is not revoke: the worker holds no revoked id.
    let replies = control
        .call(
            &cnc_broker::Target::node(&node),
            cnc_broker::protocol::control::ControlRequest::revoked(),
        )
        .await
        .expect("inspect revoked");
    let reply = replies
        .iter()
        .find(|r| r.hostname == node)
        .expect("worker replies");
    assert_eq!(reply.payload, json!([]), "revoked ids");

    // A finished task keeps its SUCCESS (Celery's rule).
    let (status, _) = http_post(port, &format!("/api/task/abort/{id}"), "", &headers).await;
    assert_eq!(status, 200);
    let again = backend.get(&id).await.expect("get").expect("result");
    assert_eq!(
        (again.status.as_str(), &again.result),
        ("SUCCESS", &json!(marker))
    );
}
