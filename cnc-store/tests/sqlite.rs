//! SQLite-specific behaviour: migration of real v1 data, refusal of newer
//! schemas, locked and full databases, crash safety, persistence, search.
#![cfg(feature = "sqlite")]

use std::path::PathBuf;

use cnc_model::{
    DbController, Event, StoreErrorKind, TaskEvent, TaskEventKind as K, TaskFilter, TaskQuery,
    TaskState,
};
use cnc_store::sqlite::{SqliteConfig, SqliteStore};

fn temp_db() -> PathBuf {
    tempfile::Builder::new()
        .prefix("cnc-sqlite-")
        .tempdir()
        .expect("temp dir")
        .keep()
        .join("cnc.db")
}

fn ev(kind: K, id: &str, ts: f64) -> Event {
    let mut e = TaskEvent::new(kind, id, ts).with_hostname("w1@host");
    e.clock = (ts * 1000.0) as u64;
    Event::Task(e)
}

fn search(s: &str) -> TaskQuery {
    TaskQuery::newest(
        TaskFilter {
            search: Some(s.into()),
            ..TaskFilter::default()
        },
        100,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payload_is_searchable_after_flush() {
    let store = SqliteStore::open_path(temp_db()).await.expect("open");
    let mut big = String::from("('NEEDLE-START-7f3a', '");
    while big.len() < 1_048_576 {
        big.push_str("lorem ipsum dolor sit amet 日本語 \u{1F680} ");
    }
    big.push_str("NEEDLE-END-MARKER-91c2')");
    let Event::Task(mut r) = ev(K::Received, "big-1", 1_700_000_000.0) else {
        unreachable!()
    };
    r.name = Some("etl.load".into());
    r.args = Some(big);
    store
        .apply(&[Event::Task(r), ev(K::Succeeded, "big-1", 1_700_000_001.0)])
        .await
        .expect("apply");
    store.flush_search().await.expect("flush");
    for needle in [
        "needle-end-marker-91c2",
        "NEEDLE-START-7f3a",
        "日本語 \u{1F680}",
    ] {
        let page = store.tasks(&search(needle)).await.expect("search");
        assert_eq!(page.tasks.len(), 1, "{needle}");
    }
}

fn raw(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("raw connection");
    c.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_database_with_data_migrates_to_v2() {
    let path = temp_db();
    let store = SqliteStore::open(SqliteConfig::new(&path)).expect("open");
    assert_eq!(store.schema_version().await.expect("version"), 0);
    store.migrate(0, 1).await.expect("create v1");
    assert_eq!(store.schema_version().await.expect("version"), 1);
    // A v1 row as an older celery-cnc wrote it.
    let mut task = cnc_model::Task::new("legacy-1", 1_700_000_000.0);
    task.name = Some("legacy.tasks.export".into());
    task.state = TaskState::Success;
    task.worker = Some("old@host".into());
    task.args = Some("('quarterly-report-2019',)".into());
    task.succeeded_at = Some(1_700_000_005.0);
    task.runtime = Some(5.0);
    task.updated_at = 1_700_000_005.0;
    let body = serde_json::to_string(&task).expect("json");
    raw(&path)
        .execute(
            "INSERT INTO tasks (id, name, state, worker, created_at, updated_at, succeeded_at, runtime, body)
             VALUES ('legacy-1', 'legacy.tasks.export', 'SUCCESS', 'old@host', 1700000000, 1700000005, 1700000005, 5.0, ?1)",
            [body],
        )
        .expect("insert v1 row");
    store.migrate(1, 2).await.expect("v1 -> v2");
    assert_eq!(store.schema_version().await.expect("version"), 2);
    assert_eq!(
        store.task("legacy-1").await.expect("task").map(|t| t.state),
        Some(TaskState::Success)
    );
    // The v2 aggregates were backfilled from the v1 rows.
    let states = store
        .state_distribution(&Default::default())
        .await
        .expect("states");
    assert_eq!(states.len(), 1);
    assert_eq!((states[0].state, states[0].count), (TaskState::Success, 1));
    let buckets = store
        .throughput(&cnc_model::ThroughputQuery {
            scope: Default::default(),
            from: 1_700_000_000.0 - 100.0,
            to: 1_700_000_100.0,
            bucket_seconds: 3600,
        })
        .await
        .expect("throughput");
    assert_eq!(buckets.iter().map(|b| b.succeeded).sum::<u64>(), 1);
    // And the legacy task is searchable.
    store.flush_search().await.expect("flush");
    let page = store
        .tasks(&search("quarterly-REPORT"))
        .await
        .expect("search");
    assert_eq!(page.tasks.len(), 1);
    // Applying on top works.
    store
        .apply(&[ev(K::Received, "new-1", 1_700_000_010.0)])
        .await
        .expect("apply");
    assert_eq!(
        store
            .count_tasks(&TaskFilter::default())
            .await
            .expect("count"),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_with_a_clear_message() {
    let path = temp_db();
    let store = SqliteStore::open_path(&path).await.expect("open");
    store
        .apply(&[ev(K::Received, "t1", 1_700_000_000.0)])
        .await
        .expect("apply");
    store.close().await.expect("close");
    raw(&path)
        .execute("INSERT INTO schema_version (version) VALUES (99)", [])
        .expect("bump");
    let store = SqliteStore::open(SqliteConfig::new(&path)).expect("open");
    let err = store
        .initialize()
        .await
        .expect_err("newer schema must be refused");
    assert_eq!(err.kind(), StoreErrorKind::SchemaTooNew);
    assert!(err.to_string().contains("99"), "{err}");
    // Nothing was touched.
    let n: i64 = raw(&path)
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_is_a_busy_error_and_nothing_is_damaged() {
    let path = temp_db();
    let mut cfg = SqliteConfig::new(&path);
    cfg.busy_timeout = std::time::Duration::from_millis(200);
    let store = SqliteStore::open(cfg).expect("open");
    store.initialize().await.expect("init");
    store
        .apply(&[ev(K::Received, "before", 1_700_000_000.0)])
        .await
        .expect("apply");
    let locker = raw(&path);
    locker.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let err = store
        .apply(&[ev(K::Received, "during", 1_700_000_001.0)])
        .await
        .expect_err("locked database must fail the batch");
    assert_eq!(err.kind(), StoreErrorKind::Busy, "{err}");
    locker.execute_batch("ROLLBACK").expect("unlock");
    // The failed batch can simply be retried, and the earlier data is intact.
    store
        .apply(&[ev(K::Received, "during", 1_700_000_001.0)])
        .await
        .expect("retry");
    store
        .apply(&[ev(K::Started, "before", 1_700_000_002.0)])
        .await
        .expect("apply");
    assert_eq!(
        store
            .count_tasks(&TaskFilter::default())
            .await
            .expect("count"),
        2
    );
    assert_eq!(
        store.task("before").await.expect("task").map(|t| t.state),
        Some(TaskState::Started)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_is_an_error_and_stored_data_survives() {
    let path = temp_db();
    let mut cfg = SqliteConfig::new(&path);
    cfg.max_size_mib = Some(2);
    let store = SqliteStore::open(cfg).expect("open");
    store.initialize().await.expect("init");
    let mut stored = 0u32;
    let mut full = None;
    for batch in 0..400u32 {
        let events: Vec<Event> = (0..50)
            .map(|i| {
                let Event::Task(mut e) = ev(
                    K::Received,
                    &format!("t{batch}-{i}"),
                    1_700_000_000.0 + f64::from(batch),
                ) else {
                    unreachable!()
                };
                e.args = Some("x".repeat(2000));
                Event::Task(e)
            })
            .collect();
        match store.apply(&events).await {
            Ok(_) => stored += 50,
            Err(err) => {
                full = Some(err);
                break;
            }
        }
    }
    let err = full.expect("a 2 MiB cap must fill up");
    assert_eq!(err.kind(), StoreErrorKind::Full, "{err}");
    assert!(stored > 0);
    // Everything acknowledged before is there, the failed batch is not.
    assert_eq!(
        store
            .count_tasks(&TaskFilter::default())
            .await
            .expect("count"),
        u64::from(stored)
    );
    let ok: String = raw(&path)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(ok, "ok");
    // Freeing space makes writes work again.
    store.purge().await.expect("purge");
    store
        .apply(&[ev(K::Received, "after", 1_700_001_000.0)])
        .await
        .expect("apply after purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_search_survive_a_restart_and_a_lost_search_file() {
    let path = temp_db();
    {
        let store = SqliteStore::open_path(&path).await.expect("open");
        let Event::Task(mut r) = ev(K::Received, "persist-1", 1_700_000_000.0) else {
            unreachable!()
        };
        r.args = Some("('invoice-7731',)".into());
        store
            .apply(&[
                Event::Task(r),
                ev(K::Succeeded, "persist-1", 1_700_000_001.0),
            ])
            .await
            .expect("apply");
        store.flush_search().await.expect("flush");
        store.close().await.expect("close");
    }
    {
        let store = SqliteStore::open_path(&path).await.expect("reopen");
        assert_eq!(
            store
                .task("persist-1")
                .await
                .expect("task")
                .map(|t| t.state),
            Some(TaskState::Success)
        );
        assert_eq!(
            store
                .tasks(&search("invoice-77"))
                .await
                .expect("search")
                .tasks
                .len(),
            1
        );
        store.close().await.expect("close");
    }
    // The search file is derived data: delete it and it is rebuilt.
    let mut search_file = path.clone().into_os_string();
    search_file.push("-search");
    std::fs::remove_file(&search_file).expect("remove search file");
    let store = SqliteStore::open_path(&path).await.expect("reopen");
    store.flush_search().await.expect("flush");
    assert_eq!(
        store
            .tasks(&search("invoice-77"))
            .await
            .expect("search")
            .tasks
            .len(),
        1
    );
}

/// Not a test on its own: the child process of `kill_minus_nine_never_corrupts`.
#[test]
#[ignore = "run by kill_minus_nine_never_corrupts as a child process"]
fn kill9_child_writer() {
    let Some(path) = std::env::var_os("CNC_KILL9_DB") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = SqliteStore::open_path(PathBuf::from(path))
            .await
            .expect("open");
        for batch in 0u64.. {
            let events: Vec<Event> = (0..100)
                .map(|i| {
                    let Event::Task(mut e) = ev(
                        K::Received,
                        &format!("b{batch}-{i}"),
                        1_700_000_000.0 + batch as f64,
                    ) else {
                        unreachable!()
                    };
                    e.group_id = Some(format!("group-{batch}"));
                    e.args = Some(format!("('payload {batch} {i}',)"));
                    Event::Task(e)
                })
                .collect();
            store.apply(&events).await.expect("apply");
            println!("committed {batch}");
        }
    });
}

#[test]
fn kill_minus_nine_never_corrupts() {
    use std::io::BufRead;
    let path = temp_db();
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "kill9_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CNC_KILL9_DB", &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut committed = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(n) = line.strip_prefix("committed ") {
            committed.push(n.parse::<u64>().expect("batch number"));
            if committed.len() >= 60 {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(
        committed.len() >= 60,
        "child committed only {} batches",
        committed.len()
    );
    let ok: String = raw(&path)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(ok, "ok");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = SqliteStore::open_path(&path)
            .await
            .expect("reopen after kill -9");
        let total = store
            .count_tasks(&TaskFilter::default())
            .await
            .expect("count");
        assert_eq!(total % 100, 0, "a batch was half written: {total} tasks");
        for b in &committed {
            let f = TaskFilter {
                group_id: Some(format!("group-{b}")),
                ..TaskFilter::default()
            };
            assert_eq!(
                store.count_tasks(&f).await.expect("count"),
                100,
                "acknowledged batch {b} lost"
            );
        }
        // The store keeps working.
        store
            .apply(&[ev(K::Received, "after-crash", 1_800_000_000.0)])
            .await
            .expect("apply");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_database_migrates_to_v3_with_the_worker_state_index() {
    let path = temp_db();
    let store = SqliteStore::open(SqliteConfig::new(&path)).expect("open");
    store.migrate(0, 2).await.expect("create v2");
    let has_index = || {
        raw(&path)
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'tasks_worker_state'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .expect("query")
    };
    assert_eq!(has_index(), 0);
    store.migrate(2, 3).await.expect("v2 -> v3");
    assert_eq!(store.schema_version().await.expect("version"), 3);
    assert_eq!(has_index(), 1);
    // The planner uses it for the worker + state pair.
    let plan: String = raw(&path)
        .query_row(
            "EXPLAIN QUERY PLAN SELECT seq FROM tasks WHERE worker = 'w' AND state = 'REVOKED' ORDER BY seq DESC LIMIT 100",
            [],
            |r| r.get(3),
        )
        .expect("plan");
    assert!(plan.contains("tasks_worker_state"), "{plan}");
}
