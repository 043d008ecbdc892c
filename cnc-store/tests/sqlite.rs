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

fn count(path: &std::path::Path, sql: &str) -> i64 {
    raw(path).query_row(sql, [], |r| r.get(0)).expect(sql)
}

fn child(kind: K, id: &str, root: &str, ts: f64) -> Event {
    let Event::Task(mut e) = ev(kind, id, ts) else {
        unreachable!()
    };
    e.root_id = Some(root.into());
    e.parent_id = Some(root.into());
    Event::Task(e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v3_database_migrates_to_v4_with_the_id_index_moved() {
    let path = temp_db();
    let store = SqliteStore::open(SqliteConfig::new(&path)).expect("open");
    store.migrate(0, 3).await.expect("create v3");
    // Data written by a v3 build (ids through the old `tasks_id` index).
    let t0 = 1_700_000_000.0;
    let Event::Task(mut root) = ev(K::Received, "root-1", t0) else {
        unreachable!()
    };
    root.root_id = Some("root-1".into());
    let mut events = vec![Event::Task(root)];
    for i in 0..20 {
        let id = format!("child-{i:02}");
        events.push(child(K::Received, &id, "root-1", t0 + 1.0));
        let Event::Task(mut done) = child(K::Succeeded, &id, "root-1", t0 + 2.0) else {
            unreachable!()
        };
        done.runtime = Some(f64::from(i) / 10.0);
        events.push(Event::Task(done));
    }
    store.apply(&events).await.expect("apply at v3");
    assert_eq!(
        store.task("child-07").await.expect("task").map(|t| t.id),
        Some("child-07".into())
    );
    let index = |name: &str| {
        count(
            &path,
            &format!("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = '{name}'"),
        )
    };
    assert_eq!((index("tasks_id"), index("tasks_runtime")), (1, 1));

    store.migrate(3, 4).await.expect("v3 -> v4");
    assert_eq!(store.schema_version().await.expect("version"), 4);
    assert_eq!((index("tasks_id"), index("tasks_runtime")), (0, 0));
    assert_eq!(index("tasks_runtime_done"), 1);
    // Every id moved to `task_ids`, and the watermark says so.
    assert_eq!(count(&path, "SELECT count(*) FROM task_ids"), 21);
    assert_eq!(
        count(
            &path,
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'ids_merged_seq'"
        ),
        21
    );
    // Lookups by id, events and relations work on the migrated data...
    assert_eq!(
        store.task("child-07").await.expect("task").map(|t| t.state),
        Some(TaskState::Success)
    );
    assert_eq!(
        store.task_events("child-07").await.expect("events").len(),
        2
    );
    assert_eq!(
        store.relations("root-1").await.expect("relations").len(),
        21
    );
    let tree = store
        .count_tasks(&TaskFilter {
            root_id: Some("root-1".into()),
            ..TaskFilter::default()
        })
        .await
        .expect("count");
    assert_eq!(tree, 21, "the root and its 20 descendants");
    // ...and so does folding onto a migrated task (found through task_ids).
    store
        .apply(&[
            ev(K::Started, "root-1", t0 + 3.0),
            ev(K::Succeeded, "root-1", t0 + 4.0),
        ])
        .await
        .expect("apply at v4");
    assert_eq!(
        store.task("root-1").await.expect("task").map(|t| t.state),
        Some(TaskState::Success)
    );
    assert_eq!(
        store
            .count_tasks(&TaskFilter::default())
            .await
            .expect("count"),
        21
    );
    // Runtime stats use the new covering index.
    let stats = store
        .runtime_stats(&cnc_model::StatsQuery::default())
        .await
        .expect("stats");
    assert_eq!(stats.count, 20);
    assert_eq!(stats.max, Some(1.9));
    let plan: String = raw(&path)
        .query_row(
            "EXPLAIN QUERY PLAN SELECT runtime FROM tasks WHERE runtime IS NOT NULL AND name = 'n' AND succeeded_at >= 1",
            [],
            |r| r.get(3),
        )
        .expect("plan");
    assert!(plan.contains("COVERING INDEX tasks_runtime_done"), "{plan}");
    // The task list's filter pairs and triples walk composite indexes.
    let plan_of = |sql: &str| -> String {
        raw(&path)
            .query_row(&format!("EXPLAIN QUERY PLAN {sql}"), [], |r| r.get(3))
            .expect("plan")
    };
    let p = plan_of(
        "SELECT seq FROM tasks WHERE worker = 'w' AND state = 'RETRY' AND name = 'n' ORDER BY seq DESC LIMIT 100",
    );
    assert!(p.contains("COVERING INDEX tasks_worker_state_name"), "{p}");
    let p = plan_of(
        "SELECT seq FROM tasks WHERE name = 'n' AND state = 'RETRY' ORDER BY seq DESC LIMIT 100",
    );
    assert!(p.contains("tasks_name_state"), "{p}");
    // The per-minute seq bounds were backfilled: 21 tasks in 1 minute.
    assert_eq!(count(&path, "SELECT count(*) FROM seq_minute"), 1);
    assert_eq!(
        count(&path, "SELECT max_seq - min_seq + 1 FROM seq_minute"),
        21
    );
    // And a time window finds the tasks through them.
    let window = store
        .count_tasks(&TaskFilter {
            time: Some(cnc_model::TimeRange::between(t0 - 1.0, t0 + 1.5)),
            ..TaskFilter::default()
        })
        .await
        .expect("count");
    assert_eq!(window, 21);
    let none = store
        .count_tasks(&TaskFilter {
            time: Some(cnc_model::TimeRange::between(t0 + 3600.0, t0 + 7200.0)),
            ..TaskFilter::default()
        })
        .await
        .expect("count");
    assert_eq!(none, 0);
}

/// The id index's memory level merges into `task_ids` in rounds, survives a
/// restart (rebuilt from the newest tasks), and follows retention and purge;
/// a read-only store in another "process" finds merged and unmerged ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_ids_merge_in_rounds_and_survive_restarts() {
    let path = temp_db();
    let open = |path: &std::path::Path| {
        let mut cfg = SqliteConfig::new(path);
        cfg.id_merge_at = 40;
        SqliteStore::open(cfg).expect("open")
    };
    let store = open(&path);
    store.initialize().await.expect("init");
    let t0 = 1_700_000_000.0;
    let id = |i: u32| format!("{:08x}-task", i.wrapping_mul(2_654_435_761));
    // 300 tasks, 3 per batch: the 40-id threshold starts several rounds of
    // up to 64 ranges, one range per batch.
    for b in 0..100u32 {
        let batch: Vec<Event> = (0..3)
            .map(|k| ev(K::Received, &id(b * 3 + k), t0 + f64::from(b)))
            .collect();
        store.apply(&batch).await.expect("apply");
    }
    let merged = count(&path, "SELECT count(*) FROM task_ids");
    let watermark = count(
        &path,
        "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'ids_merged_seq'",
    );
    assert!(merged >= 40, "ids were merged: {merged}");
    assert!(watermark > 0, "at least one round completed");
    assert_eq!(
        count(
            &path,
            &format!(
                "SELECT count(*) FROM tasks WHERE seq <= {watermark} AND id NOT IN (SELECT id FROM task_ids)"
            )
        ),
        0,
        "every id up to the watermark is in task_ids"
    );
    assert!(merged < 300, "the newest ids are still only in memory");
    // Folding onto old (merged) and new (in memory) tasks.
    store
        .apply(&[
            ev(K::Started, &id(0), t0 + 200.0),
            ev(K::Started, &id(299), t0 + 200.0),
        ])
        .await
        .expect("apply");
    for i in 0..300 {
        let t = store.task(&id(i)).await.expect("task");
        assert!(t.is_some(), "task {i} ({}) found", id(i));
    }
    assert_eq!(
        store.task(&id(0)).await.expect("task").map(|t| t.state),
        Some(TaskState::Started)
    );
    assert_eq!(store.task("never-seen").await.expect("task"), None);
    assert!(
        store
            .task_events("never-seen")
            .await
            .expect("events")
            .is_empty()
    );

    // Another process, read-only, while this one runs.
    let mut ro = SqliteConfig::new(&path);
    ro.read_only = true;
    let reader = SqliteStore::open(ro).expect("open read-only");
    reader.initialize().await.expect("read-only init");
    for i in [0, 150, 299] {
        assert!(
            reader.task(&id(i)).await.expect("task").is_some(),
            "read-only finds task {i}"
        );
    }
    reader.close().await.expect("close reader");

    // Restart: the memory level comes back from the newest tasks.
    store.close().await.expect("close");
    let store = open(&path);
    store.initialize().await.expect("init again");
    for i in 0..300 {
        assert!(
            store.task(&id(i)).await.expect("task").is_some(),
            "task {i} after restart"
        );
    }
    store
        .apply(&[ev(K::Succeeded, &id(299), t0 + 300.0)])
        .await
        .expect("apply after restart");
    assert_eq!(
        store
            .count_tasks(&TaskFilter::default())
            .await
            .expect("count"),
        300,
        "no duplicate task"
    );

    // Retention removes ids from both levels: tasks 0..150 were last
    // updated before t0 + 50 (except task 0, started at t0 + 200).
    let removed = store.cleanup(t0 + 50.0).await.expect("cleanup");
    assert_eq!(removed.tasks, 149);
    assert!(store.task(&id(3)).await.expect("task").is_none());
    assert!(store.task(&id(0)).await.expect("task").is_some());
    assert_eq!(
        count(
            &path,
            "SELECT count(*) FROM task_ids WHERE id NOT IN (SELECT id FROM tasks)"
        ),
        0,
        "no id of a deleted task stays in task_ids"
    );
    // A re-created task (same id, new seq) is found.
    store
        .apply(&[ev(K::Received, &id(3), t0 + 400.0)])
        .await
        .expect("recreate");
    assert!(store.task(&id(3)).await.expect("task").is_some());

    store.purge().await.expect("purge");
    assert_eq!(count(&path, "SELECT count(*) FROM task_ids"), 0);
    assert!(store.task(&id(299)).await.expect("task").is_none());
    store
        .apply(&[ev(K::Received, "after-purge", t0)])
        .await
        .expect("apply after purge");
    assert!(store.task("after-purge").await.expect("task").is_some());
}
