//! The whole service's ingest: Celery-format events published to the local
//! Redis at a fixed rate (`../shared/bench/gen_events.py`, every message
//! rendered by Celery's own EventDispatcher), received by a running
//! `CeleryCnc` (one listener, the batch writer, SQLite in a temp dir) and
//! written to the store. For each run it prints:
//!
//! * whether every offered event was accepted and written (zero loss),
//! * event-to-store latency p50/p99 (the event's own timestamp, which the
//!   generator sets to its send time, to the end of the batch write),
//! * peak RSS of this process (the service; the generator is another
//!   process) and its CPU seconds.
//!
//! Run: `cargo bench -p cnc-benches --bench service_ingest`
//! Env: `CNC_SVC_EVENTS` (default `100000,1000000`), `CNC_SVC_RATES`
//! (default `100000,50000,25000`): for each event count the rates are
//! tried from the highest down until one is loss-free.
//!
//! `CNC_BENCH_EXPORTERS=on|off|both` (default `off`): with `on` the service
//! also runs the Prometheus exporter (all three name sets, on a free
//! port) and the OpenTelemetry exporter (OTLP/HTTP) sending to a local
//! receiver this bench starts, which reads every request and answers 200,
//! so spans and metrics are encoded and sent for real (not dropped). The
//! exporter components need cnc-core's `metrics` feature:
//! `cargo bench -p cnc-benches --bench service_ingest --features cnc-core/metrics`.
//! `both` measures off then on, per event count.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cnc_core::bus::BusMessage;
use cnc_core::config::{
    CeleryApp, CeleryCncConfig, DatabaseConfig, IngestConfig, OpenTelemetryConfig, OtlpProtocol,
    PrometheusConfig,
};
use cnc_core::{CeleryCnc, Event};
use cnc_testsupport::RedisDb;

fn env_list(name: &str, default: &str) -> Vec<f64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// (user + system) CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn reset_peak_rss() {
    // Linux: writing 5 resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A local OTLP/HTTP receiver: reads each request whole and answers 200
/// with an empty (valid) protobuf response. Counts requests and bytes.
#[derive(Default)]
struct Receiver {
    requests: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl Receiver {
    /// Listen on a free loopback port (one thread per connection).
    fn start() -> (Arc<Self>, std::net::SocketAddr) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the OTLP receiver");
        let addr = l.local_addr().expect("receiver address");
        let me = Arc::new(Self::default());
        let r = me.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let r = r.clone();
                std::thread::spawn(move || r.serve(conn));
            }
        });
        (me, addr)
    }

    fn serve(&self, conn: std::net::TcpStream) {
        use std::io::{BufRead, Read, Write};
        use std::sync::atomic::Ordering::Relaxed;
        let mut w = match conn.try_clone() {
            Ok(w) => w,
            Err(_) => return,
        };
        let mut r = std::io::BufReader::new(conn);
        loop {
            let mut len = 0usize;
            let mut line = String::new();
            // Request line and headers.
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            self.requests.fetch_add(1, Relaxed);
            self.bytes.fetch_add(len as u64, Relaxed);
            let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
            if w.write_all(reply).is_err() {
                return;
            }
        }
    }
}

/// A loopback port free right now (the config refuses port 0).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Exporters on or off in one run.
#[derive(Clone, Copy, PartialEq)]
enum Exporters {
    Off,
    On,
}

struct Run {
    events: u64,
    rate: f64,
    offered: u64,
    accepted: u64,
    written: u64,
    dropped: u64,
    decode_errors: u64,
    achieved: f64,
    p50_ms: f64,
    p99_ms: f64,
    rss_mib: f64,
    cpu_s: f64,
    wall_s: f64,
    /// OTLP requests and bytes the receiver got (exporters on).
    otlp: Option<(u64, u64)>,
}

impl Run {
    fn loss_free(&self) -> bool {
        self.accepted == self.offered
            && self.dropped == 0
            && self.decode_errors == 0
            && self.written == self.accepted
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run_once(
    python: &std::path::Path,
    events: u64,
    rate: f64,
    exporters: Exporters,
    receiver: &(Arc<Receiver>, std::net::SocketAddr),
) -> Run {
    let redis = RedisDb::acquire().expect("redis db");
    let dir = tempfile::tempdir().expect("tempdir");
    let (prometheus, otel) = match exporters {
        Exporters::Off => (None, None),
        Exporters::On => (
            Some(PrometheusConfig {
                port: free_port(),
                celery_exporter_compat: true,
                ..PrometheusConfig::default()
            }),
            Some(OpenTelemetryConfig {
                endpoint: format!("http://{}", receiver.1),
                protocol: OtlpProtocol::HttpProtobuf,
                export_interval: Duration::from_secs(1),
                ..OpenTelemetryConfig::default()
            }),
        ),
    };
    let cfg = CeleryCncConfig::builder()
        .app(CeleryApp::new("bench", redis.url()))
        .database(DatabaseConfig::sqlite(dir.path().join("cnc.db")))
        .logging(None)
        .frontend(None)
        .prometheus(prometheus)
        .open_telemetry(otel)
        .ingest(IngestConfig {
            enable_events_interval: None,
            ..IngestConfig::default()
        })
        .build()
        .expect("config");
    let (req0, bytes0) = {
        use std::sync::atomic::Ordering::Relaxed;
        (
            receiver.0.requests.load(Relaxed),
            receiver.0.bytes.load(Relaxed),
        )
    };
    reset_peak_rss();
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let running = CeleryCnc::new(cfg)
        .without_global_subscriber()
        .start()
        .await
        .expect("service starts");
    if exporters == Exporters::On {
        let names: Vec<String> = running.status().into_iter().map(|s| s.name).collect();
        for want in ["prometheus", "open_telemetry"] {
            assert!(
                names.iter().any(|n| n == want),
                "CNC_BENCH_EXPORTERS=on but no {want} component ({names:?}): build with --features cnc-core/metrics"
            );
        }
    }

    // Latency samples from the bus: written_at - event timestamp.
    let samples = Arc::new(Mutex::new(Vec::<f64>::with_capacity(1 << 16)));
    let mut rx = running.bus().subscribe();
    let s2 = samples.clone();
    let sampler = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            match rx.recv().await {
                Ok(BusMessage::Batch(b)) => {
                    let mut s = s2.lock().expect("samples");
                    for e in &b.events {
                        n += 1;
                        if n % 16 == 0
                            && let Event::Task(t) = e
                        {
                            s.push((b.written_at - t.timestamp) * 1000.0);
                        }
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    // Let the listener subscribe.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let summary = cnc_benches::run_gen_events(python, &redis.url(), events, rate).await;
    let offered = cnc_benches::offered_events(&summary);
    let achieved = summary["achieved_message_rate"]
        .as_f64()
        .unwrap_or(f64::NAN);
    // Event timestamps are the generator's planned send times; it started
    // this much later than planned, so subtract it from the latencies.
    let late_ms = summary["start_late_s"].as_f64().unwrap_or(0.0) * 1000.0;

    // Wait until everything offered was written, or nothing moves for 3 s.
    let mut last = 0;
    let mut still = Instant::now();
    loop {
        let c = running.ingest_counters();
        let done = c.events_written + c.events_skipped;
        if done >= offered {
            break;
        }
        if done != last {
            last = done;
            still = Instant::now();
        } else if still.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall_s = started.elapsed().as_secs_f64();
    let stats = running.apps()[0].stream_stats.snapshot();
    let rss_mib = peak_rss_mib();
    if exporters == Exporters::On {
        // The last spans leave on the export task's next tick.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let report = running.stop().await.expect("stop");
    let otlp = (exporters == Exporters::On).then(|| {
        use std::sync::atomic::Ordering::Relaxed;
        (
            receiver.0.requests.load(Relaxed) - req0,
            receiver.0.bytes.load(Relaxed) - bytes0,
        )
    });
    let cpu_s = cpu_seconds() - cpu0;
    sampler.abort();
    let mut lat = std::mem::take(&mut *samples.lock().expect("samples"));
    for l in &mut lat {
        *l -= late_ms;
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Run {
        events,
        rate,
        offered,
        accepted: report.ingest.accepted,
        written: report.ingest.events_written + report.ingest.events_skipped,
        dropped: stats.dropped,
        decode_errors: stats.decode_errors_total(),
        achieved,
        p50_ms: percentile(&lat, 50.0),
        p99_ms: percentile(&lat, 99.0),
        rss_mib,
        cpu_s,
        wall_s,
        otlp,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let python = cnc_testsupport::celery_venv().expect("celery venv");
    let counts = env_list("CNC_SVC_EVENTS", "100000,1000000");
    let rates = env_list("CNC_SVC_RATES", "100000,50000,25000");
    let modes = match std::env::var("CNC_BENCH_EXPORTERS").as_deref() {
        Ok("on") => vec![Exporters::On],
        Ok("both") => vec![Exporters::Off, Exporters::On],
        Ok("off") | Err(_) => vec![Exporters::Off],
        Ok(other) => panic!("CNC_BENCH_EXPORTERS={other}: expected on, off or both"),
    };
    let receiver = Receiver::start();
    println!(
        "service ingest (Redis -> CeleryCnc -> SQLite), generator: gen_events.py\n\
         {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>8} {:>7} {:>7}",
        "exporters",
        "events",
        "rate",
        "achieved",
        "offered",
        "written",
        "dropped",
        "loss",
        "p50 ms",
        "p99 ms",
        "RSS MiB",
        "CPU s",
        "wall s"
    );
    for &n in &counts {
        for &mode in &modes {
            let label = if mode == Exporters::On { "on" } else { "off" };
            let mut best = None;
            for &rate in &rates {
                let r = rt.block_on(run_once(&python, n as u64, rate, mode, &receiver));
                println!(
                    "{:>9} {:>9} {:>9.0} {:>9.0} {:>9} {:>9} {:>8} {:>8} {:>9.1} {:>9.1} {:>8.1} {:>7.1} {:>7.1}",
                    label,
                    r.events,
                    r.rate,
                    r.achieved,
                    r.offered,
                    r.written,
                    r.dropped,
                    if r.loss_free() { "none" } else { "LOSS" },
                    r.p50_ms,
                    r.p99_ms,
                    r.rss_mib,
                    r.cpu_s,
                    r.wall_s
                );
                if let Some((req, bytes)) = r.otlp {
                    println!(
                        "          OTLP receiver: {req} requests, {:.1} MB",
                        bytes as f64 / 1e6
                    );
                }
                if r.loss_free() {
                    best = Some(r);
                    break;
                }
            }
            match best {
                Some(r) => println!(
                    "=> {} events, exporters {label}: highest loss-free rate tried {:.0} events/s (achieved {:.0}); p50 {:.1} ms, p99 {:.1} ms; peak RSS {:.1} MiB; CPU {:.1} s",
                    n, r.rate, r.achieved, r.p50_ms, r.p99_ms, r.rss_mib, r.cpu_s
                ),
                None => {
                    println!("=> {n} events, exporters {label}: no loss-free rate among {rates:?}")
                }
            }
        }
    }
}
