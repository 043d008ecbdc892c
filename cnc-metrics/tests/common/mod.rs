//! Test wiring until the orchestrator lands: a memory store, an event bus,
//! and a tiny ingest loop (broker events → batch → store.apply → bus).
#![allow(dead_code)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cnc_broker::{AppConnection, Broker, EventStreamOptions};
use cnc_model::bus::{BusMessage, EventBus, WrittenBatch};
use cnc_model::component::{CancellationToken, Component, Context, StatusBoard};
use cnc_model::config::CeleryApp;
use cnc_model::{DbController, Event};
use tokio::task::JoinHandle;

/// Store, bus and status board of a test "service".
pub struct Service {
    pub ctx: Context,
    pub shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Default for Service {
    fn default() -> Self {
        Self::new()
    }
}

impl Service {
    pub fn new() -> Self {
        let store: Arc<dyn DbController> = Arc::new(cnc_store::memory::MemoryStore::new());
        Self {
            ctx: Context {
                store,
                bus: EventBus::new(1024),
                logs: Arc::new(cnc_model::logs::RecentLogs::new(100)),
                status: StatusBoard::new(),
            },
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    /// Build and run a component in the background (status kept on the
    /// board like the orchestrator will).
    pub async fn start(&mut self, mut c: impl Component) {
        c.build(&self.ctx).await.expect("build");
        self.run_built(c);
    }

    /// Run a component already built against `self.ctx`.
    pub fn run_built(&mut self, mut c: impl Component) {
        let name = c.name().to_owned();
        let token = self.shutdown.clone();
        let status = self.ctx.status.clone();
        status.update(&name, |s| {
            s.state = cnc_model::component::ComponentState::Up
        });
        self.tasks.push(tokio::spawn(async move {
            let r = c.run(token).await;
            status.update(&name, |s| {
                s.state = cnc_model::component::ComponentState::Stopped;
            });
            r.expect("component run");
            c.stop().await.expect("stop");
        }));
    }

    /// Publish events as one written batch (applied to the store first).
    pub async fn write(&self, events: Vec<Event>) {
        write_batch(&self.ctx, events, &AtomicU64::new(0)).await;
    }

    /// Ingest from `app`'s broker into the store and onto the bus.
    pub async fn ingest(&mut self, app: &AppConnection) {
        let opts = EventStreamOptions {
            stats: app.stream_stats.clone(),
            ..EventStreamOptions::default()
        };
        let mut stream = app.broker.events(opts).await.expect("subscribe");
        let ctx = self.ctx.clone();
        let token = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            let seq = AtomicU64::new(0);
            let mut batch = Vec::new();
            loop {
                let next = tokio::select! {
                    _ = token.cancelled() => return,
                    n = tokio::time::timeout(Duration::from_millis(50), stream.next()) => n,
                };
                match next {
                    Ok(Some(Ok(ev))) => {
                        batch.push(ev);
                        if batch.len() < 500 {
                            continue;
                        }
                    }
                    Ok(Some(Err(e))) => panic!("event stream: {e}"),
                    Ok(None) => return,
                    Err(_) => {}
                }
                if !batch.is_empty() {
                    write_batch(&ctx, std::mem::take(&mut batch), &seq).await;
                }
            }
        }));
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("component stops within 10 s")
                .expect("component task");
        }
    }
}

async fn write_batch(ctx: &Context, events: Vec<Event>, seq: &AtomicU64) {
    let t = Instant::now();
    let report = ctx.store.apply(&events).await.expect("apply");
    ctx.bus.publish(BusMessage::Batch(Arc::new(WrittenBatch {
        seq: seq.fetch_add(1, Ordering::Relaxed),
        events,
        report,
        written_at: cnc_model::now(),
        write_seconds: t.elapsed().as_secs_f64(),
    })));
}

/// An app on a Redis broker (no result backend reader needed here).
pub async fn redis_app(name: &str, url: &str) -> AppConnection {
    let broker: Arc<dyn Broker> = Arc::new(
        cnc_broker::redis::RedisBroker::connect(url, cnc_broker::redis::RedisOptions::default())
            .await
            .expect("connect redis"),
    );
    AppConnection::with_broker(
        &CeleryApp::new(name, url),
        broker,
        cnc_broker::StreamStats::new(),
    )
    .await
    .expect("app")
}

/// Poll `f` until it returns Some or `timeout` passes.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET a URL with a bare HTTP/1.1 request; returns (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = match text.split_once("\r\n\r\n") {
        Some((head, body))
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked") =>
        {
            dechunk(body)
        }
        Some((_, body)) => body.to_owned(),
        None => String::new(),
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Validate scrape text with `promtool check metrics`. Skips (returns
/// false) only when promtool is absent and `CNC_REQUIRE_PROMTOOL` is unset.
pub fn promtool_check(text: &str) -> bool {
    use std::io::Write;
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var_os("CNC_REQUIRE_PROMTOOL").is_some() {
                panic!(
                    "promtool not found and CNC_REQUIRE_PROMTOOL is set: run scripts/promtool.sh"
                );
            }
            eprintln!("SKIPPED promtool check: promtool not installed (run scripts/promtool.sh)");
            return false;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    // Exit 3 means the text parsed but lint found problems. celery-exporter's
    // own names `celery_active_{worker,process}_count` trip the "_count
    // suffix" rule; we must keep them for the celery-mixin dashboards. Any
    // other finding fails.
    const COMPAT_LINT: [&str; 2] = ["celery_active_process_count", "celery_active_worker_count"];
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let only_compat = out.status.code() == Some(3)
        && report.lines().filter(|l| !l.trim().is_empty()).all(|l| {
            COMPAT_LINT
                .iter()
                .any(|n| l.starts_with(&format!("{n} ")) && l.contains("\"_count\" suffix"))
        });
    assert!(
        out.status.success() || only_compat,
        "promtool check metrics failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// The value of the sample line starting with `prefix` (name and labels
/// exactly as rendered), if present.
pub fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Whether any line starts with `prefix`.
pub fn has(text: &str, prefix: &str) -> bool {
    text.lines().any(|l| l.starts_with(prefix))
}
