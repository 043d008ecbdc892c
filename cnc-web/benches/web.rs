//! Web UI benchmark: the JSON API, the task list page and the dashboard over
//! a large SQLite store, and Server-Sent Events fan-out.
//!
//! Run with: `cargo bench -p cnc-web --bench web`
//! Environment: `CNC_BENCH_TASKS` (default 1000000) tasks to load;
//! `CNC_BENCH_RUNS` (default 60) requests per case; `CNC_BENCH_DB` reuse
//! (or keep) a database file instead of a temporary one.
//!
//! Requests go through the whole router (security guard, handlers,
//! templates) in-process with `tower::ServiceExt::oneshot`, so the figures
//! exclude the TCP stack only. Prints one line per figure:
//! `web /api/tasks?limit=100 state=FAILURE: p50 .. ms, p99 .. ms`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use cnc_model::bus::{BusMessage, EventBus, WrittenBatch};
use cnc_model::component::{Context, StatusBoard};
use cnc_model::config::FrontendConfig;
use cnc_model::logs::RecentLogs;
use cnc_model::testkit::generator::{GenConfig, generate};
use cnc_model::{ApplyReport, DbController, Event, TaskEvent, TaskEventKind};
use cnc_store::sqlite::{SqliteConfig, SqliteStore};
use futures::StreamExt;
use http_body_util::BodyExt;
use tower::ServiceExt;

const START: f64 = 1_767_571_200.0; // 2026-01-05 00:00 UTC
const SPAN: f64 = 86_400.0;
const CHUNKS: usize = 20;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1].as_secs_f64() * 1e3
}

async fn load(store: &SqliteStore, tasks: usize) -> (Vec<String>, Vec<String>) {
    store.initialize().await.expect("initialize");
    let per_chunk = tasks.div_ceil(CHUNKS);
    let (mut names, mut workers) = (Vec::new(), Vec::new());
    let t = Instant::now();
    let mut events = 0usize;
    for chunk in 0..CHUNKS {
        let cfg = GenConfig {
            seed: 1000 + chunk as u64,
            tasks: per_chunk,
            task_names: 10,
            workers: 8,
            start: START + SPAN * chunk as f64 / CHUNKS as f64,
            span: SPAN / CHUNKS as f64,
            fail_ratio: 0.05,
            retry_ratio: 0.05,
            revoke_ratio: 0.01,
            reject_ratio: 0.005,
            workflow_ratio: 0.05,
            sent_events: true,
            heartbeat_interval: 120.0,
            worker_events: chunk == 0,
            args_size: 260,
        };
        let g = generate(&cfg);
        if chunk == 0 {
            names = g.names.clone();
            workers = g.workers.clone();
        }
        for batch in g.events.chunks(1000) {
            store.apply(batch).await.expect("apply");
        }
        events += g.events.len();
        eprintln!(
            "  loaded chunk {}/{CHUNKS} ({events} events, {:.0} s)",
            chunk + 1,
            t.elapsed().as_secs_f64()
        );
    }
    (names, workers)
}

async fn get(app: &Router, uri: &str) -> (u16, usize) {
    let req = Request::get(uri)
        .header(header::HOST, "localhost")
        .body(Body::empty())
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body.len())
}

async fn case(app: &Router, label: &str, uri: &str, runs: usize) -> f64 {
    let (status, _) = get(app, uri).await; // warm-up
    assert_eq!(status, 200, "{uri}");
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let (status, _) = get(app, uri).await;
        times.push(t.elapsed());
        assert_eq!(status, 200, "{uri}");
    }
    times.sort();
    let p99 = pct(&times, 99.0);
    println!(
        "web {label} {uri}: p50 {:.2} ms, p99 {:.2} ms ({runs} runs)",
        pct(&times, 50.0),
        p99
    );
    p99
}

/// 50 SSE clients while batches carrying 5,000 events/s flow for `secs`.
async fn sse(app: &Router, bus: &EventBus, clients: usize, rate: usize, secs: u64) {
    let received = Arc::new(AtomicU64::new(0));
    let resyncs = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let req = Request::get("/api/v1/events")
            .header(header::HOST, "localhost")
            .body(Body::empty())
            .expect("request");
        let resp = app.clone().oneshot(req).await.expect("sse");
        let mut body = resp.into_body().into_data_stream();
        let (received, resyncs, lat) = (received.clone(), resyncs.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    if frame.contains("event: batch") {
                        received.fetch_add(1, Ordering::Relaxed);
                        if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                            let v: serde_json::Value =
                                serde_json::from_str(data).unwrap_or_default();
                            if let Some(w) = v["written_at"].as_f64() {
                                let d = (cnc_model::now() - w).max(0.0);
                                if let Ok(mut l) = lat.lock() {
                                    l.push(Duration::from_secs_f64(d));
                                }
                            }
                        }
                    } else if frame.contains("event: resync") {
                        resyncs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 50 batches per second of rate/50 task events each.
    let per_batch = rate / 50;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let total_batches = secs * 50;
    let t = Instant::now();
    for seq in 0..total_batches {
        tick.tick().await;
        let now = cnc_model::now();
        let events: Vec<Event> = (0..per_batch)
            .map(|i| {
                let mut e = TaskEvent::new(TaskEventKind::Succeeded, format!("t{seq}-{i}"), now);
                e.hostname = Some("w1@bench".into());
                Event::Task(e)
            })
            .collect();
        let report = ApplyReport {
            changed_tasks: (0..per_batch).map(|i| format!("t{seq}-{i}")).collect(),
            ..ApplyReport::default()
        };
        bus.publish(BusMessage::Batch(Arc::new(WrittenBatch {
            seq,
            events,
            report,
            written_at: now,
            write_seconds: 0.0,
        })));
    }
    let elapsed = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let expected = total_batches * clients as u64;
    let got = received.load(Ordering::Relaxed);
    let mut l = lat.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort();
    println!(
        "web SSE {clients} clients at {:.0} events/s ({per_batch} events per batch, 50 batches/s, {secs} s): \
         {got} of {expected} batch deliveries, {} resyncs, delivery latency p50 {:.2} ms, p99 {:.2} ms, bus lag total {}",
        (total_batches as usize * per_batch) as f64 / elapsed,
        resyncs.load(Ordering::Relaxed),
        pct(&l, 50.0),
        pct(&l, 99.0),
        bus.lagged_total()
    );
    for t in tasks {
        t.abort();
    }
}

fn main() {
    let tasks = env_usize("CNC_BENCH_TASKS", 1_000_000);
    let runs = env_usize("CNC_BENCH_RUNS", 60);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = std::env::var_os("CNC_BENCH_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("web-bench.db"));
    let existed = path.exists();
    let store = SqliteStore::open(SqliteConfig::new(&path)).expect("open");
    rt.block_on(async {
        let (names, workers) = if existed {
            store.initialize().await.expect("initialize");
            let names = store.task_names().await.expect("names").into_iter().map(|n| n.name).collect();
            let workers = store.workers().await.expect("workers").into_iter().map(|w| w.hostname).collect();
            eprintln!("  reusing {}", path.display());
            (names, workers)
        } else {
            load(&store, tasks).await
        };
        store.flush_search().await.expect("flush search");
        let stored = store.count_tasks(&Default::default()).await.expect("count");
        println!("web bench: {stored} tasks in SQLite");
        let bus = EventBus::new(1024);
        let ctx = Context {
            store: Arc::new(store.clone()),
            bus: bus.clone(),
            logs: Arc::new(RecentLogs::new(10)),
            status: StatusBoard::new(),
        };
        let state = cnc_web::WebState::new(FrontendConfig::default(), Vec::new(), ctx);
        let app = cnc_web::router(state);
        let name = names.first().cloned().unwrap_or_default();
        let short = name.rsplit('.').next().unwrap_or(&name).chars().take(5).collect::<String>();
        let worker = workers.first().cloned().unwrap_or_default();
        let from = START + SPAN / 2.0;
        let combos = [
            ("no filter", String::new()),
            ("state", "state=FAILURE".to_owned()),
            ("worker", format!("worker={worker}")),
            ("name (partial)", format!("name={short}")),
            ("state+worker", format!("state=FAILURE&worker={worker}")),
            ("state+name", format!("state=FAILURE&name={short}")),
            ("state+worker+name", format!("state=REVOKED&worker={worker}&name={short}")),
            ("1h window", format!("from={from}&to={}", from + 3600.0)),
            ("1h window+state", format!("from={from}&to={}&state=FAILURE", from + 3600.0)),
            ("search", "search=tenant-042".to_owned()),
        ];
        let mut worst_api: f64 = 0.0;
        let mut worst_page: f64 = 0.0;
        for (label, q) in &combos {
            let sep = if q.is_empty() { "" } else { "&" };
            let p = case(&app, label, &format!("/api/v1/tasks?limit=100{sep}{q}"), runs).await;
            worst_api = worst_api.max(p);
        }
        for (label, q) in &combos {
            let p = case(&app, label, &format!("/tasks?{q}"), runs).await;
            worst_page = worst_page.max(p);
        }
        let flower = case(&app, "flower", "/api/tasks?limit=100", runs).await;
        let dash = case(&app, "dashboard", "/", runs).await;
        let dash_api = case(&app, "dashboard", "/api/v1/dashboard", runs).await;
        println!(
            "web summary: /api/v1/tasks?limit=100 worst p99 {worst_api:.2} ms (goal 20); task list page worst p99 {worst_page:.2} ms (goal 50); \
             Flower /api/tasks?limit=100 p99 {flower:.2} ms; dashboard page p99 {dash:.2} ms, API p99 {dash_api:.2} ms (goal 50)"
        );
        sse(&app, &bus, 50, 5000, 5).await;
    });
}
