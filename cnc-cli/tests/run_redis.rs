//! The README's main job, end to end: `celery-cnc run` on a real Redis with a
//! real Celery worker, then `celery-cnc tasks` / `workers` read the history,
//! which survives a restart; `--purge-db` empties it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cnc_testsupport::{CeleryWorker, RedisDb, WorkerOpts, run_python, unique, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_celery-cnc");

fn start_run(broker: &str, db: &std::path::Path, extra: &[&str]) -> Child {
    // No web UI (tests run in parallel: no fixed port) and logs on stderr.
    Command::new(BIN)
        .args(["run", "--no-web", "--broker", broker, "--db"])
        .arg(db)
        .args(extra)
        .env("CELERY_CNC__LOGGING", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start celery-cnc run")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plain HTTP/1.1 GET; the whole response, or `None` when not listening.
fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_with(port, path, "")
}

/// [`http_get`] with extra header lines (each ending in `\r\n`).
fn http_get_with(port: u16, path: &str, headers: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn interrupt(mut child: Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "celery-cnc run exited with {status}");
            return;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("celery-cnc run did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tasks(db: &std::path::Path, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["tasks", "--json", "--db"])
        .arg(db)
        .args(args)
        .output()
        .expect("tasks");
    assert!(
        out.status.success(),
        "tasks failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn run_stores_real_worker_history_that_survives_restart_and_purge() {
    let redis = RedisDb::acquire().expect("redis db");
    let url = redis.url();
    let worker_name = format!("{}@cnc-test", unique("w"));
    let mut opts = WorkerOpts::new(&worker_name, &url).backend(&url);
    opts.concurrency = 1;
    let _worker = CeleryWorker::start(opts).expect("celery worker");
    let db = tempfile::tempdir().expect("tmp").keep().join("cnc.db");

    // With the exporters compiled in, `--prometheus` serves metrics.
    let port = free_port();
    let prometheus = format!("127.0.0.1:{port}");
    let extra: Vec<&str> = if cfg!(feature = "metrics") {
        vec!["--prometheus", &prometheus]
    } else {
        vec![]
    };
    let run = start_run(&url, &db, &extra);
    std::thread::sleep(Duration::from_secs(2));
    if cfg!(feature = "metrics") {
        let page = wait_for(Duration::from_secs(20), || http_get(port, "/metrics"))
            .expect("the Prometheus page");
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("celery_cnc_"), "{page}");
    }
    let script = r#"
from cnc_testapp import app
ok = app.send_task('cnc.add', (2, 3))
assert ok.get(timeout=60) == 5
bad = app.send_task('cnc.fail_always', ('kaput',))
bad.get(timeout=60, propagate=False)
print(ok.id, bad.id)
"#;
    let out =
        run_python(script, &[("CNC_BROKER", &url), ("CNC_BACKEND", &url)]).expect("send tasks");
    let ids = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (ok_id, bad_id) = ids.split_once(' ').expect("two ids");

    let stored = wait_for(Duration::from_secs(30), || {
        let all = tasks(&db, &["--limit", "50"]);
        let state = |id: &str| {
            all.iter()
                .find(|t| t["id"] == id)
                .and_then(|t| t["state"].as_str().map(str::to_owned))
        };
        (state(ok_id).as_deref() == Some("SUCCESS") && state(bad_id).as_deref() == Some("FAILURE"))
            .then_some(all)
    })
    .expect("both tasks stored with their final state");
    let ok = stored.iter().find(|t| t["id"] == ok_id).expect("ok task");
    assert_eq!(ok["name"], "cnc.add");
    assert_eq!(ok["worker"], worker_name.as_str());
    assert_eq!(ok["result"], "5");
    let bad = stored
        .iter()
        .find(|t| t["id"] == bad_id)
        .expect("failed task");
    assert!(
        bad["traceback"]
            .as_str()
            .is_some_and(|tb| tb.contains("kaput")),
        "{bad}"
    );
    // Filters of the history command.
    let failed = tasks(&db, &["--state", "FAILURE"]);
    assert!(
        failed.iter().all(|t| t["state"] == "FAILURE") && failed.iter().any(|t| t["id"] == bad_id)
    );
    assert!(
        tasks(&db, &["--name", "fail_al"])
            .iter()
            .any(|t| t["id"] == bad_id)
    );
    interrupt(run);

    // History survives the restart of the service.
    let after = tasks(&db, &[]);
    assert!(after.iter().any(|t| t["id"] == ok_id));
    let out = Command::new(BIN)
        .args(["workers", "--db"])
        .arg(&db)
        .output()
        .expect("workers");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&worker_name));

    // --purge-db empties it.
    let run = start_run(&url, &db, &["--purge-db"]);
    std::thread::sleep(Duration::from_secs(2));
    interrupt(run);
    assert!(tasks(&db, &[]).is_empty(), "history left after --purge-db");
}

#[test]
fn an_unreachable_broker_is_one_readable_line() {
    let out = Command::new(BIN)
        .args([
            "run",
            "--no-web",
            "--broker",
            "redis://:hunter2@127.0.0.1:1/0",
            "--db",
        ])
        .arg(tempfile::tempdir().expect("tmp").keep().join("x.db"))
        .env("CELERY_CNC__LOGGING", "false")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert_eq!(
        last, "celery-cnc: cannot reach broker redis://:***@127.0.0.1:1/0: connection refused",
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("hunter2"),
        "{err}"
    );
}

/// `--port` and `--basic-auth` reach the web UI: the API answers 401
/// without the password and 200 with it.
#[cfg(feature = "web")]
#[test]
fn run_serves_the_web_ui_behind_basic_auth() {
    let redis = RedisDb::acquire().expect("redis db");
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("web.db");
    let port = free_port();
    let port_arg = port.to_string();
    let child = Command::new(BIN)
        .args(["run", "--broker", &redis.url(), "--port", &port_arg])
        .args(["--basic-auth", "admin:secret", "--db"])
        .arg(&db)
        .env("CELERY_CNC__LOGGING", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start celery-cnc run");
    let denied = wait_for(Duration::from_secs(30), || {
        http_get(port, "/api/components")
    })
    .expect("the web UI answers");
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    // base64("admin:secret")
    let ok = http_get_with(
        port,
        "/api/components",
        "Authorization: Basic YWRtaW46c2VjcmV0\r\n",
    )
    .expect("response");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    interrupt(child);
}
