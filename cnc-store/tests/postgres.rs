//! The PostgreSQL store against the local server: the conformance suite plus
//! what only this adapter has (v1 -> v2 migration with data, two instances
//! sharing one schema, password redaction, write throughput).
//!
//! Server: `postgres://postgres@127.0.0.1:5432/test`, or `$CNC_TEST_POSTGRES_URL`.
//! Every store lives in its own random schema, dropped when the store is
//! dropped (`PostgresConfig::temporary`).
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::time::Instant;

use cnc_model::model::{
    Event, StatsQuery, TaskEvent, TaskEventKind, TaskFilter, TaskQuery, TaskState, ThroughputQuery,
};
use cnc_model::testkit::StoreFactory;
use cnc_model::testkit::generator::{self, GenConfig};
use cnc_model::testkit::reference::Reference;
use cnc_model::{DbController, SCHEMA_VERSION, StoreErrorKind};
use cnc_store::postgres::{PostgresConfig, PostgresStore};

fn url() -> String {
    std::env::var("CNC_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn random_schema() -> String {
    format!("cnc_t_{}_{:016x}", std::process::id(), fastrand::u64(..))
}

fn config(schema: &str) -> PostgresConfig {
    let mut c = PostgresConfig::new(url()).with_schema(schema);
    c.temporary = true;
    c.pool_size = 4;
    c
}

async fn store_in(schema: &str) -> PostgresStore {
    match PostgresStore::connect(config(schema)).await {
        Ok(s) => s,
        Err(e) => panic!("cannot connect to the test PostgreSQL ({}): {e:?}", url()),
    }
}

/// A raw client on `schema`, for writing rows by hand.
async fn raw(schema: &str) -> tokio_postgres::Client {
    let mut cfg: tokio_postgres::Config = url().parse().expect("test URL");
    cfg.options(format!("-c search_path={schema}"));
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// One store per check, each in its own schema.
struct Pg;

#[async_trait::async_trait]
impl StoreFactory for Pg {
    async fn fresh(&self) -> Arc<dyn DbController> {
        Arc::new(store_in(&random_schema()).await)
    }
}

cnc_model::conformance_tests!(Pg);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_database_with_data_migrates_to_v2() {
    let schema = random_schema();
    let store = store_in(&schema).await;
    store.migrate(0, 1).await.expect("migrate 0 -> 1");
    assert_eq!(store.schema_version().await.expect("version"), 1);

    // v1 rows, written by hand: a finished task, a retried one, their
    // events, the names table, a worker and a schedule.
    let mut done = cnc_model::model::Task::new("t-done", 1_767_571_230.0);
    done.name = Some("app.add".into());
    done.state = TaskState::Success;
    done.worker = Some("w1@h".into());
    done.args = Some("(1, 2)".into());
    done.result = Some("3".into());
    done.succeeded_at = Some(1_767_571_290.5);
    done.updated_at = 1_767_571_290.5;
    done.runtime = Some(0.25);
    let mut retried = cnc_model::model::Task::new("t-retry", 1_767_571_300.0);
    retried.name = Some("app.fetch".into());
    retried.state = TaskState::Retry;
    retried.worker = Some("w1@h".into());
    retried.retried_at = Some(1_767_571_310.0);
    retried.retries = 1;
    retried.retried_events = 1;
    let c = raw(&schema).await;
    for (seq, t) in [(1_i64, &done), (2, &retried)] {
        c.execute(
            "INSERT INTO tasks (id, seq, name, state, worker, created_at, updated_at, \
             succeeded_at, runtime, search_text, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &t.id,
                &seq,
                &t.name,
                &t.state.as_str(),
                &t.worker,
                &t.created_at,
                &t.updated_at,
                &t.succeeded_at,
                &t.runtime,
                &t.search_text().to_lowercase(),
                &serde_json::to_string(t).expect("json"),
            ],
        )
        .await
        .expect("insert v1 task");
    }
    c.batch_execute(
        "INSERT INTO task_events (task_id, kind, hostname, clock, micros, ts, fields) VALUES \
         ('t-done', 'task-succeeded', 'w1@h', 3, 1767571290500000, 1767571290.5, '{\"result\":\"3\"}'), \
         ('t-retry', 'task-retried', 'w1@h', 5, 1767571310000000, 1767571310.0, '{}'); \
         INSERT INTO task_names (name) VALUES ('app.add'), ('app.fetch'); \
         INSERT INTO schedules (name, data) VALUES ('nightly', \
           '{\"name\":\"nightly\",\"task\":\"app.add\",\"spec\":{\"type\":\"interval\",\"every\":60.0},\
             \"args\":[],\"kwargs\":{},\"queue\":null,\"priority\":null,\"expires\":null,\
             \"enabled\":true,\"last_run_at\":null,\"total_run_count\":0,\"description\":null,\
             \"created_at\":1.0,\"updated_at\":1.0}');",
    )
    .await
    .expect("insert v1 rows");

    store.migrate(1, 2).await.expect("migrate 1 -> 2");
    assert_eq!(store.schema_version().await.expect("version"), 2);
    store.initialize().await.expect("initialize is a no-op now");

    assert_eq!(
        store.task("t-done").await.expect("task"),
        Some(done.clone())
    );
    let page = store
        .tasks(&TaskQuery::newest(
            TaskFilter {
                name: Some("ADD".into()),
                ..TaskFilter::default()
            },
            10,
        ))
        .await
        .expect("tasks");
    assert_eq!(page.tasks, vec![done.clone()]);
    // The search text moved to `task_search` with the migration: found at
    // once, without waiting for the indexer.
    let found = store
        .count_tasks(&TaskFilter {
            search: Some("(1, 2".into()),
            ..TaskFilter::default()
        })
        .await
        .expect("search");
    assert_eq!(found, 1);
    let names = store.task_names().await.expect("names");
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.count == 1));
    // The v2 aggregates were back-filled from v1 rows.
    let buckets = store
        .throughput(&ThroughputQuery {
            scope: StatsQuery::default(),
            from: 1_767_571_200.0,
            to: 1_767_571_200.0 + 600.0,
            bucket_seconds: 60,
        })
        .await
        .expect("throughput");
    assert_eq!(buckets.len(), 10);
    assert_eq!(buckets[1].succeeded, 1, "{buckets:?}");
    assert_eq!(buckets[1].retried, 1, "{buckets:?}");
    assert_eq!(
        store
            .heatmap(&StatsQuery::default())
            .await
            .expect("heatmap")
            .total(),
        1
    );
    assert_eq!(store.task_events("t-done").await.expect("events").len(), 1);
    assert!(store.schedule("nightly").await.expect("schedule").is_some());
    let stats = store
        .runtime_stats(&StatsQuery::default())
        .await
        .expect("stats");
    assert_eq!(stats.count, 1);

    // And the migrated store keeps working: finish the retried task.
    let mut ok = TaskEvent::new(TaskEventKind::Succeeded, "t-retry", 1_767_571_400.0)
        .with_hostname("w1@h")
        .with_clock(9);
    ok.runtime = Some(1.0);
    store.apply(&[Event::Task(ok)]).await.expect("apply");
    let t = store.task("t-retry").await.expect("task").expect("exists");
    assert_eq!(t.state, TaskState::Success);
    assert_eq!(t.retries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_is_refused() {
    let schema = random_schema();
    let store = store_in(&schema).await;
    store.initialize().await.expect("initialize");
    raw(&schema)
        .await
        .execute(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, 0)",
            &[&(SCHEMA_VERSION as i32 + 1)],
        )
        .await
        .expect("fake a newer version");
    let err = store.initialize().await.expect_err("must refuse");
    assert_eq!(err.kind(), StoreErrorKind::SchemaTooNew);
    assert!(err.to_string().contains("newer"), "{err}");
    assert_eq!(
        store.schema_version().await.expect("version"),
        SCHEMA_VERSION + 1
    );
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut out = format!("{err} / {err:?}");
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(&format!(" / {e} / {e:?}"));
        cur = e.source();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_show() {
    // A port nobody listens on: the connection error must not carry it.
    let mut bad = PostgresConfig::new("postgres://postgres:s3cr3t-pw@127.0.0.1:1/test");
    bad.connect_timeout = std::time::Duration::from_secs(2);
    assert!(!format!("{bad:?}").contains("s3cr3t-pw"));
    let err = PostgresStore::connect(bad)
        .await
        .expect_err("nobody listens there");
    assert_eq!(err.kind(), StoreErrorKind::Connection, "{err:?}");
    let text = chain(&err);
    assert!(!text.contains("s3cr3t-pw"), "{text}");

    // An unparsable URL with a password in it.
    let err = PostgresStore::connect(PostgresConfig::new(
        "postgres://postgres:s3cr3t-pw@127.0.0.1:notaport/test",
    ))
    .await
    .expect_err("bad port");
    assert!(!chain(&err).contains("s3cr3t-pw"));

    // A working store (trust auth ignores the password): not in `info()`.
    let with_pw = url().replacen("postgres@", "postgres:s3cr3t-pw@", 1);
    let mut cfg = PostgresConfig::new(with_pw).with_schema(random_schema());
    cfg.temporary = true;
    if let Ok(store) = PostgresStore::connect(cfg).await {
        let info = store.info();
        assert!(!info.location.contains("s3cr3t-pw"), "{}", info.location);
        assert!(info.location.contains("***"), "{}", info.location);
        assert!(!format!("{store:?}").contains("s3cr3t-pw"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_a_schema_without_deadlock_or_loss() {
    let schema = random_schema();
    let a = Arc::new(store_in(&schema).await);
    let mut cfg_b = config(&schema);
    cfg_b.temporary = false; // `a` drops the schema
    let b = Arc::new(PostgresStore::connect(cfg_b).await.expect("connect b"));
    a.initialize().await.expect("init a");
    b.initialize().await.expect("init b");

    let g = generator::generate(&GenConfig {
        seed: 7,
        tasks: 1500,
        ..GenConfig::default()
    });
    let events = g.events;
    // Overlapping batches: instance A takes windows starting at 0, B at
    // an offset, each window 300 events long and advancing 200, so about half
    // of all events are applied by both, at the same time.
    let windows = |start: usize| {
        let mut out = Vec::new();
        let mut i = start;
        while i < events.len() {
            out.push(events[i..(i + 300).min(events.len())].to_vec());
            i += 200;
        }
        out
    };
    let (wa, wb) = (windows(0), windows(100));
    let (sa, sb) = (a.clone(), b.clone());
    let ta = tokio::spawn(async move {
        for batch in wa {
            sa.apply(&batch).await.expect("apply on a");
        }
    });
    let tb = tokio::spawn(async move {
        for batch in wb {
            sb.apply(&batch).await.expect("apply on b");
        }
    });
    ta.await.expect("a");
    tb.await.expect("b");

    // Same as one instance applying everything once.
    let mut model = Reference::new();
    model.apply(&events);
    let count = a.count_tasks(&TaskFilter::default()).await.expect("count");
    assert_eq!(count as usize, model.len());
    for t in model.all() {
        let stored = a.task(&t.id).await.expect("task").expect("stored");
        assert_eq!(&stored, t, "task {} differs", t.id);
        let events = a.task_events(&t.id).await.expect("events");
        assert_eq!(events.len(), model.events_of(&t.id).len());
    }
    // Aggregates agree with the tasks.
    let q = ThroughputQuery {
        scope: StatsQuery::default(),
        from: 1_767_571_200.0 - 3600.0,
        to: 1_767_571_200.0 + 4.0 * 3600.0,
        bucket_seconds: 600,
    };
    assert_eq!(
        a.throughput(&q).await.expect("throughput"),
        model.throughput(&q).expect("model throughput")
    );
    assert_eq!(a.task_names().await.expect("names"), model.task_names());

    // Both indexers drained the search queue between them, and search
    // agrees with the reference.
    let c = raw(&schema).await;
    wait_for_empty_queue(&c).await;
    for t in model.all().into_iter().take(20) {
        let text = t.search_text().to_lowercase();
        let needle: String = text.chars().take(6).collect();
        let filter = TaskFilter {
            search: Some(needle.clone()),
            ..TaskFilter::default()
        };
        assert_eq!(
            a.count_tasks(&filter).await.expect("search") as usize,
            model.matching(&filter).len(),
            "search {needle:?}"
        );
    }
    drop(b);
}

/// Poll until `search_pending` is empty (the indexers caught up).
async fn wait_for_empty_queue(c: &tokio_postgres::Client) {
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n: i64 = c
            .query_one("SELECT count(*) FROM search_pending", &[])
            .await
            .expect("queue length")
            .get(0);
        if n == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "search queue not drained: {n}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn row_count(c: &tokio_postgres::Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_is_indexed_in_the_background_and_cleaned_up() {
    let schema = random_schema();
    let store = store_in(&schema).await;
    store.initialize().await.expect("init");
    let c = raw(&schema).await;
    let mut got = TaskEvent::new(TaskEventKind::Received, "s-final", 1_000.0)
        .with_hostname("w@h")
        .with_clock(1);
    got.name = Some("app.Needle".into());
    got.args = Some("('Ärger-Final',)".into());
    let mut ok = TaskEvent::new(TaskEventKind::Succeeded, "s-final", 1_001.0)
        .with_hostname("w@h")
        .with_clock(2);
    ok.result = Some("'Done-Result'".into());
    let mut run = TaskEvent::new(TaskEventKind::Received, "s-running", 1_000.5)
        .with_hostname("w@h")
        .with_clock(3);
    run.name = Some("app.needle".into());
    store
        .apply(&[Event::Task(got), Event::Task(ok), Event::Task(run)])
        .await
        .expect("apply");
    // Queued in the batch transaction; the running task waits the index
    // delay (the final one may already be indexed).
    assert!(row_count(&c, "search_pending").await >= 1);
    let search = |needle: &str| TaskFilter {
        search: Some(needle.into()),
        ..TaskFilter::default()
    };
    // Within the search lag: both indexed, the queue drained.
    let deadline = Instant::now() + store.info().search_lag;
    loop {
        let n = store.count_tasks(&search("NEEDLE")).await.expect("search");
        if n == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "not indexed in time: {n}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        store.count_tasks(&search("ärger")).await.expect("search"),
        1
    );
    assert_eq!(
        store
            .count_tasks(&search("done-res"))
            .await
            .expect("search"),
        1
    );
    wait_for_empty_queue(&c).await;
    assert_eq!(row_count(&c, "task_search").await, 2);

    // A change requeues the task; cleanup removes text and queue rows.
    let mut fail = TaskEvent::new(TaskEventKind::Failed, "s-running", 1_002.0)
        .with_hostname("w@h")
        .with_clock(4);
    fail.exception = Some("Boom".into());
    store.apply(&[Event::Task(fail)]).await.expect("apply");
    store.cleanup(1_001.5).await.expect("cleanup");
    assert_eq!(row_count(&c, "task_search").await, 1);
    store.cleanup(1e12).await.expect("cleanup");
    assert_eq!(row_count(&c, "task_search").await, 0);
    assert_eq!(row_count(&c, "search_pending").await, 0);

    // Purge empties both as well.
    let mut again = TaskEvent::new(TaskEventKind::Received, "s-again", 2_000.0)
        .with_hostname("w@h")
        .with_clock(5);
    again.name = Some("app.again".into());
    store.apply(&[Event::Task(again)]).await.expect("apply");
    store.purge().await.expect("purge");
    assert_eq!(row_count(&c, "search_pending").await, 0);
    assert_eq!(row_count(&c, "task_search").await, 0);
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_store_refuses_work() {
    let store = store_in(&random_schema()).await;
    store.initialize().await.expect("init");
    store.close().await.expect("close");
    let err = store.task("x").await.expect_err("closed");
    assert_eq!(err.kind(), StoreErrorKind::Closed);
}

/// Write throughput: 200k generated events in batches of 1,000.
/// Run with `cargo test -p cnc-store --no-default-features --features postgres
/// --release --test postgres -- --ignored --nocapture write_throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints events/s"]
async fn write_throughput() {
    let schema = random_schema();
    let store = store_in(&schema).await;
    store.initialize().await.expect("init");
    // `CNC_BENCH_SQL` runs extra SQL on the fresh schema first, to compare
    // variants (e.g. `DROP INDEX tasks_search` to see the trigram index cost).
    if let Ok(sql) = std::env::var("CNC_BENCH_SQL") {
        raw(&schema)
            .await
            .batch_execute(&sql)
            .await
            .expect("bench sql");
    }
    let g = generator::generate(&GenConfig {
        seed: 42,
        tasks: 45_000,
        task_names: 50,
        workers: 8,
        span: 86_400.0,
        ..GenConfig::default()
    });
    let events: Vec<Event> = g.events.into_iter().take(200_000).collect();
    let started = Instant::now();
    let mut applied = 0;
    for batch in events.chunks(1_000) {
        applied += store.apply(batch).await.expect("apply").applied;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "postgres apply: {} events ({} applied) in {secs:.2}s = {:.0} events/s",
        events.len(),
        applied,
        events.len() as f64 / secs
    );
}
