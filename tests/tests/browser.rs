//! The UI in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/browser.sh`) against real Celery
//! workers on Redis: filter the task list by typing, read a traceback, send
//! a task from the form and watch it succeed live, terminate a running task,
//! grow a pool, and check hostile task arguments stay inert. Screenshots go
//! to `target/screenshots/`.
//!
//! The UI is served by the real service: `CeleryCnc` with its frontend
//! component, ingest and worker refresh, as `celery-cnc run` starts it.
//!
//! Skipped (with a message) only when Chromium is missing and
//! `CNC_REQUIRE_BROWSER` is unset; CI sets it, so there it must run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cnc_core::broker::Broker;
use cnc_core::broker::protocol::task::SendTask;
use cnc_core::config::{CeleryApp, CeleryCncConfig, DatabaseConfig, FrontendConfig, IngestConfig};
use cnc_core::{CeleryCnc, DbController, TaskState};
use cnc_testsupport::{CeleryWorker, RedisDb, WorkerOpts};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

fn find_browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var_os("CNC_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from))
        .find(|p| p.exists())?;
    let driver = std::env::var_os("CNC_CHROMEDRIVER")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/bin/chromedriver")])
        .find(|p| p.exists())?;
    Some((chromium, driver))
}

/// chromedriver, killed on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn start_browser(chromium: &Path, driver: &Path, profile: &Path) -> (Driver, Client) {
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let guard = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium.to_string_lossy(),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("webdriver session");
    (guard, client)
}

/// Polls `f` until it gives a value. The timeouts are generous: CI runs
/// this test beside the whole suite on two cores, and Chromium, the
/// workers and the service all share them.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn shot(c: &Client, name: &str) {
    let dir = cnc_testsupport::target_dir().join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
}

async fn send(broker: &Arc<dyn Broker>, task: SendTask) -> String {
    let msg = task.build();
    broker
        .send_task(&msg.queue, msg.to_message())
        .await
        .expect("send");
    msg.id
}

async fn task_state(store: &Arc<dyn DbController>, id: &str) -> Option<TaskState> {
    store.task(id).await.ok().flatten().map(|t| t.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_drives_the_ui_against_real_workers() {
    let Some((chromium, driver)) = find_browser() else {
        if std::env::var_os("CNC_REQUIRE_BROWSER").is_some() {
            panic!(
                "CNC_REQUIRE_BROWSER is set but chromium/chromedriver are missing: run scripts/browser.sh"
            );
        }
        eprintln!(
            "SKIPPED browser tests: chromium and chromedriver not found (run scripts/browser.sh; set CNC_REQUIRE_BROWSER=1 to make this a failure)"
        );
        return;
    };
    let db = RedisDb::acquire().expect("redis db");
    let url = db.url();
    let tag = cnc_testsupport::unique("web");
    let node = format!("w1@{tag}");
    let opts = WorkerOpts::new(&node, &url)
        .backend(&url)
        .queues(&["celery", "custom"])
        .concurrency(2);
    let worker_start = tokio::task::spawn_blocking(move || CeleryWorker::start(opts));

    let port = free_port();
    let cfg = CeleryCncConfig::builder()
        .app(CeleryApp::new("test", &url).backend(&url))
        .database(DatabaseConfig::memory())
        .logging(None)
        .ingest(IngestConfig {
            batch_interval: Duration::from_millis(50),
            worker_refresh_interval: Duration::from_secs(5),
            ..IngestConfig::default()
        })
        .frontend(FrontendConfig {
            port,
            ..FrontendConfig::default()
        })
        .build()
        .expect("config");
    let running = CeleryCnc::new(cfg)
        .without_global_subscriber()
        .start()
        .await
        .expect("the service starts");
    let store = running.store().clone();
    let broker = running.apps()[0].broker.clone();
    let base = format!("http://localhost:{port}");

    let _worker = worker_start.await.expect("join").expect("worker starts");
    wait_for(
        "worker online in the store",
        Duration::from_secs(90),
        || {
            let store = store.clone();
            async move { store.workers().await.ok().filter(|w| !w.is_empty()) }
        },
    )
    .await;

    // Tasks to look at.
    let ok = send(
        &broker,
        SendTask::new("cnc.add").args(vec![json!(2), json!(3)]),
    )
    .await;
    let bad = send(
        &broker,
        SendTask::new("cnc.fail_always").args(vec![json!("kaboom")]),
    )
    .await;
    let evil = send(
        &broker,
        SendTask::new("cnc.echo").args(vec![
            json!("<script>window.__pwned=1</script>"),
            json!("\"><img src=x onerror=\"window.__pwned=2\">"),
        ]),
    )
    .await;
    for id in [&ok, &bad, &evil] {
        wait_for("tasks finished", Duration::from_secs(90), || {
            let store = store.clone();
            let id = id.clone();
            async move { task_state(&store, &id).await.filter(|s| s.is_ready()) }
        })
        .await;
    }

    let profile = tempfile::tempdir().expect("profile dir");
    let (_driver, c) = start_browser(&chromium, &driver, profile.path()).await;

    // Dashboard.
    c.goto(&format!("{base}/")).await.expect("dashboard");
    wait_for("live status", Duration::from_secs(30), || {
        let c = c.clone();
        async move { (text_of(&c, "#live-status").await == "live").then_some(()) }
    })
    .await;
    shot(&c, "dashboard").await;

    // Task list: typing a partial name filters without a submit.
    c.goto(&format!("{base}/tasks")).await.expect("tasks");
    let all = text_of(&c, "#task-results").await;
    assert!(
        all.contains("cnc.add") && all.contains("cnc.fail_always"),
        "{all}"
    );
    c.find(Locator::Css("input[name=name]"))
        .await
        .expect("name filter")
        .send_keys("fail_al")
        .await
        .expect("type");
    wait_for("filtered list", Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            let t = text_of(&c, "#task-results").await;
            (t.contains("cnc.fail_always") && !t.contains("cnc.add")).then_some(())
        }
    })
    .await;
    assert!(
        c.current_url()
            .await
            .expect("url")
            .as_str()
            .contains("name=fail_al")
    );
    shot(&c, "tasks-filtered").await;

    // Open the failed task and read its traceback.
    c.find(Locator::Css(&format!("a[href$='/tasks/{bad}']")))
        .await
        .expect("task link")
        .click()
        .await
        .expect("open task");
    let tb = wait_for("traceback", Duration::from_secs(30), || {
        let c = c.clone();
        async move { Some(text_of(&c, "#task-traceback").await).filter(|t| !t.is_empty()) }
    })
    .await;
    assert!(tb.contains("ValueError: kaboom"), "{tb}");
    assert_eq!(text_of(&c, "#task-state").await, "FAILURE");
    shot(&c, "task-failure").await;

    // Hostile arguments render as text and run nothing.
    c.goto(&format!("{base}/tasks/{evil}"))
        .await
        .expect("evil task");
    let args = text_of(&c, "#task-args").await;
    assert!(args.contains("<script>window.__pwned=1</script>"), "{args}");
    let probe = c
        .execute(
            "return [typeof window.__pwned, document.querySelectorAll('img').length, document.scripts.length];",
            vec![],
        )
        .await
        .expect("probe");
    assert_eq!(
        probe,
        json!(["undefined", 0, 1]),
        "hostile args became live markup"
    );
    c.goto(&format!("{base}/tasks"))
        .await
        .expect("list with evil args");
    let probe = c
        .execute(
            "return [typeof window.__pwned, document.querySelectorAll('img').length];",
            vec![],
        )
        .await
        .expect("probe");
    assert_eq!(probe, json!(["undefined", 0]));
    shot(&c, "hostile-args").await;

    // Send a task from the form and see it succeed live.
    c.goto(&format!("{base}/send")).await.expect("send page");
    let name = c.find(Locator::Css("#send-name")).await.expect("name");
    name.send_keys("cnc.on_custom").await.expect("type name");
    let queue = wait_for("queue prefilled", Duration::from_secs(15), || {
        let c = c.clone();
        async move {
            let v = c
                .find(Locator::Css("#send-queue"))
                .await
                .ok()?
                .prop("value")
                .await
                .ok()??;
            (!v.is_empty()).then_some(v)
        }
    })
    .await;
    assert_eq!(queue, "custom", "the task's own queue");
    name.clear().await.expect("clear");
    name.send_keys("cnc.add").await.expect("type name");
    let args_box = c.find(Locator::Css("#send-args")).await.expect("args");
    args_box.clear().await.expect("clear");
    args_box.send_keys("[20, 22").await.expect("bad json");
    let disabled = c
        .find(Locator::Css("#send-submit"))
        .await
        .expect("submit")
        .prop("disabled")
        .await
        .expect("prop");
    assert_eq!(
        disabled.as_deref(),
        Some("true"),
        "invalid JSON blocks sending"
    );
    assert!(text_of(&c, "#args-error").await.contains("Not valid JSON"));
    args_box.send_keys("]").await.expect("fix json");
    shot(&c, "send-form").await;
    c.find(Locator::Css("#send-submit"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("send");
    wait_for(
        "task page of the sent task",
        Duration::from_secs(60),
        || {
            let c = c.clone();
            async move {
                let u = c.current_url().await.ok()?;
                u.path().starts_with("/tasks/").then_some(())
            }
        },
    )
    .await;
    wait_for("SUCCESS shown live", Duration::from_secs(90), || {
        let c = c.clone();
        async move { (text_of(&c, "#task-state").await == "SUCCESS").then_some(()) }
    })
    .await;
    assert_eq!(text_of(&c, "#task-result").await, "42");
    shot(&c, "task-sent-success").await;

    // Terminate a running task, confirmed.
    let sleeper = send(&broker, SendTask::new("cnc.sleep").args(vec![json!(60)])).await;
    wait_for("sleeper started", Duration::from_secs(90), || {
        let store = store.clone();
        let id = sleeper.clone();
        async move {
            task_state(&store, &id)
                .await
                .filter(|s| *s == TaskState::Started)
        }
    })
    .await;
    c.goto(&format!("{base}/tasks/{sleeper}"))
        .await
        .expect("sleeper page");
    assert_eq!(text_of(&c, "#task-state").await, "STARTED");
    c.find(Locator::Css("[data-task-action=terminate]"))
        .await
        .expect("terminate button")
        .click()
        .await
        .expect("click");
    c.accept_alert().await.expect("confirm");
    wait_for("REVOKED shown live", Duration::from_secs(90), || {
        let c = c.clone();
        async move { (text_of(&c, "#task-state").await == "REVOKED").then_some(()) }
    })
    .await;
    shot(&c, "task-terminated").await;

    // Grow the pool from the worker page.
    c.goto(&format!("{base}/workers")).await.expect("workers");
    assert!(text_of(&c, "table.workers").await.contains(&node));
    shot(&c, "workers").await;
    c.goto(&format!("{base}/workers/{node}"))
        .await
        .expect("worker page");
    let before: u32 = text_of(&c, "#pool-size").await.parse().expect("pool size");
    c.find(Locator::Css("form[data-control=pool_grow] button"))
        .await
        .expect("grow")
        .click()
        .await
        .expect("click grow");
    c.accept_alert().await.expect("confirm");
    wait_for("result of the call shown", Duration::from_secs(45), || {
        let c = c.clone();
        async move { Some(text_of(&c, "#control-result").await).filter(|t| t.contains("pool_grow")) }
    })
    .await;
    wait_for("pool grew", Duration::from_secs(90), || {
        let c = c.clone();
        let want = (before + 1).to_string();
        async move {
            if text_of(&c, "#pool-size").await == want {
                return Some(());
            }
            // The page shows what the last inspect said; ask again.
            let _ = c.goto(c.current_url().await.ok()?.as_ref()).await;
            None
        }
    })
    .await;
    shot(&c, "worker-grown").await;
    let _ = c.close().await;
    running.stop().await.expect("the service stops cleanly");
}
