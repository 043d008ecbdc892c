//! Store benchmark at scale: load 1,000,000 tasks (about 4.5 million Celery
//! events) in batches of 1,000, then time the queries the UI makes.
//!
//! Run with: `cargo bench -p cnc-benches --bench store`
//! Environment: `CNC_BENCH_TASKS` (default 1000000), `CNC_BENCH_STORE`
//! (`sqlite`, `postgres` or `both`; default `sqlite`), `CNC_BENCH_PG_URL`,
//! `CNC_BENCH_LOAD_ONLY` (set: measure the load, skip the SQLite queries),
//! `CNC_BENCH_SLOW_MS` (print the filters of task list queries slower than this).
//!
//! Prints one line per figure, e.g. `store/sqlite apply: 123456 events/s`.
//! The criterion group at the end measures a few queries again with
//! criterion's own statistics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cnc_model::testkit::generator::{GenConfig, Rng, generate};
use cnc_model::{
    DbController, StatsQuery, TaskFilter, TaskQuery, TaskState, ThroughputQuery, TimeRange,
};
use cnc_store::sqlite::{SqliteConfig, SqliteStore};
use criterion::Criterion;

const START: f64 = 1_767_571_200.0; // 2026-01-05 00:00 UTC
const SPAN: f64 = 86_400.0;
const CHUNKS: usize = 20;

struct Loaded {
    store: Arc<dyn DbController>,
    names: Vec<String>,
    workers: Vec<String>,
    needles: Vec<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn report(label: &str, mut times: Vec<Duration>) -> Duration {
    times.sort();
    let p50 = percentile(&times, 50.0);
    let p99 = percentile(&times, 99.0);
    println!(
        "{label}: p50 {:.2} ms, p99 {:.2} ms ({} runs)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        times.len()
    );
    p99
}

async fn load(store: Arc<dyn DbController>, label: &str, tasks: usize) -> Loaded {
    store.initialize().await.expect("initialize");
    let per_chunk = tasks.div_ceil(CHUNKS);
    let mut events_total = 0usize;
    let mut busy = Duration::ZERO;
    let mut batch_times = Vec::new();
    let mut names = Vec::new();
    let mut workers = Vec::new();
    let mut needles = Vec::new();
    let mut last_rate = 0.0;
    let wall = Instant::now();
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
            heartbeat_interval: 2.0 * 60.0,
            worker_events: chunk == 0,
            args_size: 260,
        };
        let generated = generate(&cfg);
        if chunk == 0 {
            names = generated.names.clone();
            workers = generated.workers.clone();
            // Needles a user would type: ids, emails, tenants, words, trace ids.
            let mut rng = Rng::new(7);
            for e in generated.events.iter().take(50_000) {
                if let cnc_model::Event::Task(t) = e {
                    if let Some(a) = &t.args {
                        if rng.chance(0.01) {
                            let len = 3 + rng.below(10) as usize;
                            let chars: Vec<char> = a.chars().collect();
                            if chars.len() > len + 2 {
                                let at = rng.below((chars.len() - len) as u64) as usize;
                                needles.push(chars[at..at + len].iter().collect());
                            }
                        }
                    }
                    if let Some(k) = &t.kwargs {
                        if rng.chance(0.005) {
                            if let Some(i) = k.find("trace_id': '") {
                                needles.push(k[i + 12..i + 20].to_owned());
                            }
                        }
                    }
                }
            }
            needles.extend(
                ["tenant-042", "bravo", "@example", "user12", "ReadTimeout"].map(String::from),
            );
        }
        let chunk_start = Instant::now();
        let chunk_events = generated.events.len();
        for batch in generated.events.chunks(1000) {
            let t = Instant::now();
            store.apply(batch).await.expect("apply");
            let dt = t.elapsed();
            busy += dt;
            batch_times.push(dt);
        }
        events_total += chunk_events;
        last_rate = chunk_events as f64 / chunk_start.elapsed().as_secs_f64();
        eprintln!(
            "  {label}: chunk {}/{CHUNKS}: {events_total} events, {:.0} events/s",
            chunk + 1,
            last_rate
        );
    }
    let total = wall.elapsed();
    println!(
        "store/{label} apply: {:.0} events/s over {events_total} events ({} tasks) in batches of 1000; \
         last 5% of the load at {:.0} events/s",
        events_total as f64 / busy.as_secs_f64(),
        tasks,
        last_rate
    );
    report(&format!("store/{label} apply batch of 1000"), batch_times);
    eprintln!("  {label}: load wall time {:.1} s", total.as_secs_f64());
    Loaded {
        store,
        names,
        workers,
        needles,
    }
}

async fn queries(l: &Loaded, label: &str) {
    let mut rng = Rng::new(99);
    let states = [
        TaskState::Success,
        TaskState::Failure,
        TaskState::Retry,
        TaskState::Started,
    ];
    // Task list, newest 100, random combinations of state/worker/name/date.
    let mut times = Vec::new();
    let mut combos = Vec::new();
    for _ in 0..400 {
        let mut f = TaskFilter::default();
        if rng.chance(0.5) {
            f.states = vec![*rng.pick(&states).expect("states")];
        }
        if rng.chance(0.5) {
            f.worker = rng.pick(&l.workers).cloned();
        }
        if rng.chance(0.5) {
            let n = rng.pick(&l.names).cloned().unwrap_or_default();
            // Partial names as users type them.
            f.name = Some(n.rsplit('.').next().unwrap_or(&n).to_owned());
        }
        if rng.chance(0.5) {
            let from = START + rng.unit() * SPAN * 0.9;
            let len = [300.0, 600.0, 1800.0, 3600.0, 86_400.0][rng.below(5) as usize];
            f.time = Some(TimeRange::between(from, from + len));
        }
        combos.push(f);
    }
    // `CNC_BENCH_SLOW_MS`: print the filters of queries slower than this.
    let slow_ms: Option<f64> = std::env::var("CNC_BENCH_SLOW_MS")
        .ok()
        .and_then(|v| v.parse().ok());
    let show_slow = |what: &str, f: &TaskFilter, dt: Duration| {
        if slow_ms.is_some_and(|ms| dt.as_secs_f64() * 1e3 > ms) {
            eprintln!("  slow {what}: {:.1} ms {f:?}", dt.as_secs_f64() * 1e3);
        }
    };
    for f in &combos {
        let t = Instant::now();
        l.store
            .tasks(&TaskQuery::newest(f.clone(), 100))
            .await
            .expect("tasks");
        times.push(t.elapsed());
        show_slow("list", f, t.elapsed());
    }
    report(
        &format!("store/{label} task list newest 100, any filter combination"),
        times,
    );

    // Deep pages through the cursor.
    let mut times = Vec::new();
    let mut q = TaskQuery::newest(TaskFilter::default(), 100);
    for _ in 0..100 {
        let t = Instant::now();
        let page = l.store.tasks(&q).await.expect("page");
        times.push(t.elapsed());
        q.cursor = page.next_cursor;
    }
    report(
        &format!("store/{label} task list next page (cursor)"),
        times,
    );

    // Fuzzy search over args/kwargs.
    let mut times = Vec::new();
    for n in l.needles.iter().cycle().take(300) {
        let f = TaskFilter {
            search: Some(n.clone()),
            ..TaskFilter::default()
        };
        let t = Instant::now();
        l.store
            .tasks(&TaskQuery::newest(f, 100))
            .await
            .expect("search");
        times.push(t.elapsed());
    }
    report(
        &format!(
            "store/{label} fuzzy search (3-12 chars, {} needles)",
            l.needles.len()
        ),
        times,
    );

    // Search combined with filters.
    let mut times = Vec::new();
    for (n, f) in l.needles.iter().cycle().zip(combos.iter()).take(200) {
        let f = TaskFilter {
            search: Some(n.clone()),
            ..f.clone()
        };
        let t = Instant::now();
        l.store
            .tasks(&TaskQuery::newest(f.clone(), 100))
            .await
            .expect("search");
        times.push(t.elapsed());
        show_slow("search + filters", &f, t.elapsed());
    }
    report(&format!("store/{label} fuzzy search + filters"), times);

    // Stats.
    let mut times = Vec::new();
    for name in l.names.iter().cycle().take(30) {
        let t = Instant::now();
        l.store
            .runtime_stats(&StatsQuery {
                name: Some(name.clone()),
                ..StatsQuery::default()
            })
            .await
            .expect("stats");
        times.push(t.elapsed());
    }
    report(
        &format!("store/{label} runtime stats with percentiles, one task name"),
        times,
    );
    let mut times = Vec::new();
    for bucket in [60u64, 300, 600, 3600].iter().cycle().take(20) {
        let t = Instant::now();
        l.store
            .throughput(&ThroughputQuery {
                scope: StatsQuery::default(),
                from: START,
                to: START + SPAN,
                bucket_seconds: *bucket,
            })
            .await
            .expect("throughput");
        times.push(t.elapsed());
    }
    report(
        &format!("store/{label} throughput buckets over 24 h"),
        times,
    );
    let mut times = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        l.store
            .state_distribution(&StatsQuery::default())
            .await
            .expect("states");
        times.push(t.elapsed());
    }
    report(&format!("store/{label} state distribution"), times);
    let mut times = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        l.store
            .heatmap(&StatsQuery::default())
            .await
            .expect("heatmap");
        times.push(t.elapsed());
    }
    report(&format!("store/{label} heatmap weekday x hour"), times);
}

fn main() {
    let tasks: usize = std::env::var("CNC_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let which = std::env::var("CNC_BENCH_STORE").unwrap_or_else(|_| "sqlite".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // `cargo test --benches` runs this with --bench absent: keep it tiny then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let tasks = if quick { 2_000 } else { tasks };
    let dir = tempfile::Builder::new()
        .prefix("cnc-bench-store-")
        .tempdir()
        .expect("tempdir");
    if which == "sqlite" || which == "both" {
        let path = dir.path().join("bench.db");
        let store = SqliteStore::open(SqliteConfig::new(&path)).expect("open");
        let loaded = rt.block_on(load(Arc::new(store.clone()), "sqlite", tasks));
        let t = Instant::now();
        rt.block_on(store.flush_search()).expect("flush");
        println!(
            "store/sqlite search index caught up {:.2} s after the last batch ({} documents indexed)",
            t.elapsed().as_secs_f64(),
            store.indexed_documents()
        );
        if std::env::var_os("CNC_BENCH_LOAD_ONLY").is_none() {
            rt.block_on(queries(&loaded, "sqlite"));
        }
        println!(
            "store/sqlite database size: {:.0} MB for {tasks} tasks ({:.0} bytes per task, search index included)",
            store.disk_usage() as f64 / 1e6,
            store.disk_usage() as f64 / tasks as f64
        );
        if !quick {
            let mut c = Criterion::default()
                .sample_size(20)
                .measurement_time(Duration::from_secs(3))
                .without_plots();
            let s = loaded.store.clone();
            c.bench_function("sqlite task list newest 100 state=FAILURE", |b| {
                b.iter(|| {
                    rt.block_on(s.tasks(&TaskQuery::newest(
                        TaskFilter {
                            states: vec![TaskState::Failure],
                            ..TaskFilter::default()
                        },
                        100,
                    )))
                })
            });
            c.final_summary();
        }
        rt.block_on(store.close()).expect("close");
    }
    if which == "postgres" || which == "both" {
        let url = std::env::var("CNC_BENCH_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        match rt.block_on(postgres_store(&url)) {
            Some(store) => {
                let loaded = rt.block_on(load(store, "postgres", tasks));
                rt.block_on(queries(&loaded, "postgres"));
            }
            None => println!("store/postgres: skipped (cannot connect to {url})"),
        }
    }
}

async fn postgres_store(url: &str) -> Option<Arc<dyn DbController>> {
    postgres::open(url).await
}

mod postgres {
    //! Thin bridge to the PostgreSQL adapter's constructor.
    use std::sync::Arc;

    use cnc_model::DbController;

    pub async fn open(url: &str) -> Option<Arc<dyn DbController>> {
        let schema = format!("bench_{}", std::process::id());
        let cfg = cnc_store::postgres::PostgresConfig::new(url).with_schema(schema);
        match cnc_store::postgres::PostgresStore::connect(cfg).await {
            Ok(s) => Some(Arc::new(s)),
            Err(err) => {
                eprintln!("postgres: {err}");
                None
            }
        }
    }
}
