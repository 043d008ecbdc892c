//! Celery's database result backend read by our backend, with real Celery
//! workers writing it: SQLite (a file in a temporary directory) and
//! PostgreSQL (a fresh schema per test in database `test`, through
//! Celery's `database_table_schemas`). Workers use a leased Redis db as
//! their broker and `result_extended=True`, so rows carry the task name.
#![cfg(all(feature = "redis", feature = "db-sqlite", feature = "db-postgres"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cnc_broker::redis::{RedisBroker, RedisOptions};
use cnc_broker::{Broker, ErrorKind, ResultBackend};
use cnc_testsupport::{CeleryWorker, RedisDb, WorkerOpts};
use serde_json::json;

const PG: &str = "postgresql://postgres@127.0.0.1:5432/test";

async fn redis_broker(db: &RedisDb) -> Arc<dyn Broker> {
    Arc::new(
        RedisBroker::connect(&db.url(), RedisOptions::default())
            .await
            .expect("connect broker"),
    )
}

async fn start_worker(
    tag: &str,
    broker: &str,
    backend: &str,
    env: &[(&str, &str)],
) -> CeleryWorker {
    let mut opts = WorkerOpts::new(format!("db@{tag}"), broker)
        .backend(backend)
        .concurrency(1)
        .env("CNC_RESULT_EXTENDED", "1");
    opts.events = false;
    for (k, v) in env {
        opts = opts.env(*k, *v);
    }
    tokio::task::spawn_blocking(move || CeleryWorker::start(opts))
        .await
        .expect("join")
        .expect("start worker")
}

/// How Celery itself is pointed at the same results (for reading back
/// what we stored): environment for `run_python` with the test app.
struct CeleryEnv(Vec<(String, String)>);

impl CeleryEnv {
    /// `AbortableAsyncResult(id).state` for each id, as Celery reads it.
    async fn states(&self, ids: &[&str]) -> Vec<String> {
        let script = format!(
            "from celery.contrib.abortable import AbortableAsyncResult\n\
             from cnc_testapp import app\n\
             for i in {ids:?}:\n    \
                 r = AbortableAsyncResult(i, app=app)\n    \
                 print(r.state, r.is_aborted())\n"
        );
        let env = self.0.clone();
        let out = tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            cnc_testsupport::run_python(&script, &env)
        })
        .await
        .expect("join")
        .expect("celery reads the results");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The checks both dialects share. `insert_pickle(id)` stores a row whose
/// result blob is a pickle, as old Celery versions wrote. ABORTED goes
/// through the trait (`ResultBackend::mark_aborted`, which the web UI's
/// abort calls), so the dyn wiring to `store_aborted` is what is tested.
async fn suite<F, Fut>(
    broker: &Arc<dyn Broker>,
    backend: &Arc<dyn ResultBackend>,
    insert_pickle: F,
    celery: CeleryEnv,
) where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    backend.healthcheck().await.expect("healthcheck");
    let ok = common::send(broker, "cnc.add", vec![json!(2), json!(3)], "celery").await;
    let bad = common::send(broker, "cnc.fail_always", vec![json!("boom")], "celery").await;
    let m1 = common::send(broker, "cnc.mul", vec![json!(3), json!(4)], "celery").await;
    let m2 = common::send(broker, "cnc.mul", vec![json!(5), json!(6)], "celery").await;

    let r = common::result(backend, &ok, "SUCCESS").await;
    assert_eq!(r.task_id, ok);
    assert_eq!(r.result, json!(5));
    assert_eq!(r.name.as_deref(), Some("cnc.add"));
    assert!(r.traceback.is_none(), "{r:?}");
    let done = r.date_done.as_deref().expect("date_done");
    assert!(
        cnc_broker::protocol::result::parse_backend_time(done).is_some(),
        "date_done {done:?}"
    );
    assert_eq!(r.raw["args"], json!([2, 3]), "{:?}", r.raw);
    assert_eq!(r.raw["queue"], json!("celery"), "{:?}", r.raw);
    assert!(
        r.raw["worker"]
            .as_str()
            .is_some_and(|w| w.starts_with("db@")),
        "{:?}",
        r.raw
    );

    let f = common::result(backend, &bad, "FAILURE").await;
    assert_eq!(f.name.as_deref(), Some("cnc.fail_always"));
    assert_eq!(f.result["exc_type"], json!("ValueError"), "{:?}", f.result);
    assert_eq!(f.result["exc_message"], json!(["boom"]), "{:?}", f.result);
    let tb = f.traceback.as_deref().expect("traceback");
    assert!(tb.starts_with("Traceback (most recent call last):"), "{tb}");
    assert!(tb.contains("ValueError: boom"), "{tb}");

    assert_eq!(
        common::result(backend, &m1, "SUCCESS").await.result,
        json!(12)
    );
    assert_eq!(
        common::result(backend, &m2, "SUCCESS").await.result,
        json!(30)
    );
    assert!(backend.get("no-such-task").await.expect("get").is_none());
    assert_eq!(backend.list(2).await.expect("list 2").len(), 2);

    // A pickled result is undecodable, never unpickled: `get` says so and
    // `list` leaves it out.
    let pickled = cnc_testsupport::unique("pickled-");
    insert_pickle(pickled.clone()).await;
    let e = backend
        .get(&pickled)
        .await
        .expect_err("pickle is undecodable");
    assert_eq!(e.kind(), ErrorKind::Decode, "{e}");
    assert!(e.to_string().contains("unsupported_content_type"), "{e}");

    let all = backend.list(100).await.expect("list");
    let mut ids: Vec<&str> = all.iter().map(|r| r.task_id.as_str()).collect();
    ids.sort_unstable();
    let mut want = vec![ok.as_str(), bad.as_str(), m1.as_str(), m2.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);

    // ABORTED, stored as Celery's AbortableAsyncResult.abort() stores it:
    // a SUCCESS is kept, anything else replaced, a missing row inserted.
    backend
        .mark_aborted(&ok)
        .await
        .expect("abort a finished task");
    assert_eq!(
        backend.get(&ok).await.expect("get").expect("row").status,
        "SUCCESS"
    );
    backend
        .mark_aborted(&bad)
        .await
        .expect("abort a failed task");
    let a = backend.get(&bad).await.expect("get").expect("row");
    assert_eq!(a.status, "ABORTED", "{a:?}");
    assert_eq!(a.result, serde_json::Value::Null, "{a:?}");
    assert!(a.traceback.is_none() && a.date_done.is_none(), "{a:?}");
    let fresh = cnc_testsupport::unique("aborted-");
    backend
        .mark_aborted(&fresh)
        .await
        .expect("abort an unknown task");
    assert_eq!(
        backend.get(&fresh).await.expect("get").expect("row").status,
        "ABORTED"
    );
    // Celery reads them back the same way.
    assert_eq!(
        celery.states(&[&ok, &bad, &fresh]).await,
        ["SUCCESS False", "ABORTED True", "ABORTED True"]
    );

    assert!(backend.delete(&ok).await.expect("delete"));
    assert!(backend.get(&ok).await.expect("get").is_none());
    assert!(!backend.delete(&ok).await.expect("delete again"));

    assert_eq!(backend.delete_by_name("cnc.mul").await.expect("by name"), 2);
    assert!(backend.get(&m1).await.expect("get").is_none());
    assert!(backend.get(&bad).await.expect("get").is_some());
    assert!(backend.get(&fresh).await.expect("get").is_some());
    assert_eq!(backend.delete_by_name("cnc.mul").await.expect("by name"), 0);

    // What is left: the aborted failure, the pickled row, the aborted
    // unknown task.
    assert_eq!(backend.delete_all().await.expect("delete all"), 3);
    assert!(backend.list(100).await.expect("list").is_empty());
    assert_eq!(backend.delete_all().await.expect("delete all"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backend_with_a_real_worker() {
    let db = RedisDb::acquire().expect("redis db");
    let broker = redis_broker(&db).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("results.db");
    // SQLAlchemy: three slashes, then the absolute path.
    let url = format!("db+sqlite:///{}", file.display());
    assert!(url.starts_with("db+sqlite:////"), "{url}");

    // Before any worker: no file yet. Reads are empty, the health check
    // says what is missing.
    let backend = cnc_broker::connect_backend(&url).await.expect("backend");
    assert_eq!(backend.redacted_url(), url);
    assert!(backend.get("x").await.expect("get").is_none());
    assert!(backend.list(10).await.expect("list").is_empty());
    assert_eq!(backend.delete_all().await.expect("delete all"), 0);
    let e = backend.healthcheck().await.expect_err("no file yet");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // Nowhere to store ABORTED until Celery creates the table.
    let e = backend.mark_aborted("x").await.expect_err("no table yet");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    let tag = cnc_testsupport::unique("s");
    let _w = start_worker(&tag, &db.url(), &url, &[]).await;
    let path = file.clone();
    let celery = CeleryEnv(vec![
        ("CNC_BROKER".into(), db.url()),
        ("CNC_BACKEND".into(), url.clone()),
        ("CNC_RESULT_EXTENDED".into(), "1".into()),
    ]);
    suite(
        &broker,
        &backend,
        |id| async move {
            let conn = rusqlite::Connection::open(&path).expect("open");
            conn.busy_timeout(Duration::from_secs(10))
                .expect("busy timeout");
            conn.execute(
                "INSERT INTO celery_taskmeta (task_id, status, result, date_done) \
             VALUES (?1, 'SUCCESS', ?2, '2026-01-01 00:00:00.000000')",
                (&id, b"\x80\x04K\x05.".as_slice()),
            )
            .expect("insert pickle");
        },
        celery,
    )
    .await;
}

/// A fresh schema in database `test`, dropped (with the worker's tables)
/// on drop.
struct PgSchema {
    name: String,
}

impl PgSchema {
    async fn create() -> Self {
        let name = cnc_testsupport::unique("cnc_rb_");
        let c = pg().await;
        c.batch_execute(&format!("CREATE SCHEMA \"{name}\""))
            .await
            .expect("create schema");
        Self { name }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([PG, "-q", "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name))
            .output();
    }
}

async fn pg() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(PG, tokio_postgres::NoTls)
        .await
        .expect("connect postgres");
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_with_a_real_worker() {
    let db = RedisDb::acquire().expect("redis db");
    let broker = redis_broker(&db).await;
    let schema = PgSchema::create().await;
    let celery_url = format!("db+{PG}");
    let url = format!("{celery_url}?cnc_task_schema={}", schema.name);

    let backend = cnc_broker::connect_backend(&url).await.expect("backend");
    // No table yet: empty, and healthy (the server answers).
    backend.healthcheck().await.expect("healthcheck");
    assert!(backend.get("x").await.expect("get").is_none());
    assert!(backend.list(10).await.expect("list").is_empty());
    let e = backend.mark_aborted("x").await.expect_err("no table yet");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    let tag = cnc_testsupport::unique("p");
    let _w = start_worker(
        &tag,
        &db.url(),
        &celery_url,
        &[("CNC_DB_SCHEMA", schema.name.as_str())],
    )
    .await;
    let table = format!("\"{}\".celery_taskmeta", schema.name);
    let celery = CeleryEnv(vec![
        ("CNC_BROKER".into(), db.url()),
        ("CNC_BACKEND".into(), celery_url.clone()),
        ("CNC_RESULT_EXTENDED".into(), "1".into()),
        ("CNC_DB_SCHEMA".into(), schema.name.clone()),
    ]);
    suite(
        &broker,
        &backend,
        |id| async move {
            pg().await
                .execute(
                    &format!(
                        "INSERT INTO {table} (id, task_id, status, result, date_done) \
                     VALUES (100000, $1, 'SUCCESS', $2, now())"
                    ),
                    &[&id, &b"\x80\x04K\x05.".as_slice()],
                )
                .await
                .expect("insert pickle");
        },
        celery,
    )
    .await;
}

/// Passwords never show: not in the URL we print, not in connect errors.
#[tokio::test]
async fn postgres_errors_hide_the_password() {
    let url = "db+postgresql://postgres:hunter2@127.0.0.1:1/test";
    let e = cnc_broker::connect_backend(url)
        .await
        .expect_err("nothing listens on port 1");
    assert!(e.is_temporary(), "{e:?}");
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let e = cnc_broker::connect_backend("db+postgresql://u:hunter2@[bad/test")
        .await
        .expect_err("bad URL");
    assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
}
