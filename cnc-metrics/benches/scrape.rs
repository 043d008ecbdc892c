//! Scrape latency and observe cost of the exporters; prints its figures.
//!
//! Run with: `cargo bench -p cnc-metrics --bench scrape`
//!
//! * Scrape: 1,000 task names x 50 workers, p50/p99 of `render_pooled()`
//!   (what the endpoint does before its first byte), for each flag set,
//!   with each name run by 1 or 5 of the 50 workers (queues served by
//!   subsets) or by all 50 (worst case: every pair seen). Flower's and
//!   celery-exporter's families are per (worker, task), so their size is
//!   the number of pairs seen, not names + workers. Each case is timed with
//!   no events between scrapes (all text cached), with 1,000 events between
//!   scrapes, and with every pair's series changed (all re-rendered).
//!   `CNC_BENCH_SCRAPE=<part of a case name>` runs only matching cases,
//!   `CNC_BENCH_CHURN=idle|some|all` only one of the three.
//! * Observe: events/s and ns/event of `observe_batch` for the Prometheus
//!   exporter, the OpenTelemetry exporter, and both.

use std::time::{Duration, Instant};

use cnc_metrics::{OtelExporter, PrometheusExporter};
use cnc_model::bus::WrittenBatch;
use cnc_model::config::{OpenTelemetryConfig, PrometheusConfig};
use cnc_model::exporter::Exporter;
use cnc_model::{ApplyReport, Event, TaskEvent, TaskEventKind, WorkerEvent, WorkerEventKind};

const NAMES: usize = 1_000;
const WORKERS: usize = 50;

fn worker(w: usize) -> String {
    format!("celery@worker-{w:02}.prod.example")
}

/// One task's events: sent, received, started, succeeded.
fn life(id: usize, name: usize, w: usize, t: f64) -> [Event; 4] {
    let uuid = format!("{id:08x}-0000-4000-8000-{id:012x}");
    let host = worker(w);
    let mut sent = TaskEvent::new(TaskEventKind::Sent, &uuid, t).with_hostname("gen1@api");
    sent.name = Some(format!("app.tasks.module_{}.task_{name}", name % 37));
    sent.queue = Some(format!("q{}", name % 10));
    sent.args = Some("(1, 2)".into());
    let mut recv = TaskEvent::new(TaskEventKind::Received, &uuid, t + 0.01).with_hostname(&host);
    recv.name = sent.name.clone();
    let start = TaskEvent::new(TaskEventKind::Started, &uuid, t + 0.02).with_hostname(&host);
    let mut done = TaskEvent::new(TaskEventKind::Succeeded, &uuid, t + 0.05).with_hostname(&host);
    done.runtime = Some(0.001 * (id % 500) as f64);
    done.result = Some("3".into());
    [
        Event::Task(sent),
        Event::Task(recv),
        Event::Task(start),
        Event::Task(done),
    ]
}

fn heartbeats(t: f64) -> Vec<Event> {
    (0..WORKERS)
        .map(|w| {
            let mut h = WorkerEvent::new(WorkerEventKind::Heartbeat, worker(w), t);
            h.active = Some(3);
            h.freq = Some(2.0);
            h.processed = Some(1000);
            h.loadavg = Some(vec![1.0, 0.5, 0.25]);
            Event::Worker(h)
        })
        .collect()
}

fn batch(events: Vec<Event>) -> WrittenBatch {
    WrittenBatch {
        seq: 0,
        events,
        report: ApplyReport::default(),
        written_at: cnc_model::now(),
        write_seconds: 0.01,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What happens between two timed scrapes.
#[derive(Debug, Clone, Copy)]
enum Churn {
    /// Nothing: every series is served from its cached text.
    Idle,
    /// 250 tasks (1,000 events) on pairs already seen, plus heartbeats.
    Some,
    /// One more task on every pair seen, plus heartbeats: every per-pair
    /// series is re-rendered (what a scrape sees when tasks ran on every
    /// pair since the last one).
    All,
}

fn scrape(
    label: &str,
    workers_per_name: usize,
    flower: bool,
    celery_exporter: bool,
    rounds: usize,
) {
    if let Ok(only) = std::env::var("CNC_BENCH_SCRAPE") {
        if !label.contains(only.as_str()) {
            return;
        }
    }
    let cfg = PrometheusConfig {
        flower_compat: flower,
        celery_exporter_compat: celery_exporter,
        ..PrometheusConfig::default()
    };
    let ex = std::sync::Arc::new(PrometheusExporter::new(&cfg));
    let now = cnc_model::now();
    ex.observe_batch(&batch(heartbeats(now)));
    let mut id = 0;
    let mut events = Vec::new();
    let mut pairs = Vec::new();
    for name in 0..NAMES {
        for k in 0..workers_per_name {
            let w = (name + k * (WORKERS / workers_per_name)) % WORKERS;
            pairs.push((name, w));
            events.extend(life(id, name, w, now - 10.0));
            id += 1;
        }
        if events.len() > 10_000 {
            ex.observe_batch(&batch(std::mem::take(&mut events)));
        }
    }
    ex.observe_batch(&batch(events));
    let first = ex.render();
    let series = first.lines().filter(|l| !l.starts_with('#')).count();
    let churns: Vec<Churn> = match std::env::var("CNC_BENCH_CHURN").as_deref() {
        Ok("idle") => vec![Churn::Idle],
        Ok("some") => vec![Churn::Some],
        Ok("all") => vec![Churn::All],
        _ => vec![Churn::Idle, Churn::Some, Churn::All],
    };
    for churn in churns {
        let mut times = Vec::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..rounds {
            let mut events = heartbeats(cnc_model::now());
            let lives = match churn {
                Churn::Idle => 0,
                Churn::Some => 250,
                Churn::All => pairs.len(),
            };
            for i in 0..lives {
                let (name, w) = if lives == pairs.len() {
                    pairs[i]
                } else {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    pairs[(rng % pairs.len() as u64) as usize]
                };
                events.extend(life(id, name, w, now - 5.0));
                id += 1;
            }
            if !matches!(churn, Churn::Idle) {
                for c in events.chunks(10_000) {
                    ex.observe_batch(&batch(c.to_vec()));
                }
            }
            // What the HTTP endpoint does before sending the first byte.
            let t = Instant::now();
            let text = ex.render_pooled();
            times.push(t.elapsed());
            std::hint::black_box(text.len());
            drop(text);
        }
        times.sort();
        let what = match churn {
            Churn::Idle => "no events between scrapes",
            Churn::Some => "1,000 events between scrapes",
            Churn::All => "every pair's series changed",
        };
        println!(
            "scrape {label}, {what}: {NAMES} names x {WORKERS} workers, {} pairs, {series} samples, {:.1} MB: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({rounds} scrapes)",
            pairs.len(),
            first.len() as f64 / 1e6,
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        );
    }
    // Copying the text out (what a client needs to receive anyway), for
    // scale: the endpoint does this while it sends.
    let t = Instant::now();
    let text = ex.render_pooled().to_text();
    println!(
        "  one scrape copied into one buffer: {:.1} ms ({} bytes)",
        t.elapsed().as_secs_f64() * 1e3,
        text.len()
    );
}

fn observe_rate(label: &str, exporters: &[&dyn Exporter], batches: &[WrittenBatch], n: usize) {
    let t = Instant::now();
    for b in batches {
        for e in exporters {
            e.observe_batch(b);
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "observe {label}: {n} events in {:.3} s = {:.0} events/s, {:.0} ns/event",
        s,
        n as f64 / s,
        s * 1e9 / n as f64
    );
}

fn main() {
    // `CNC_BENCH_OBSERVE_ONLY=1` skips the scrapes (for profiling observe).
    if std::env::var_os("CNC_BENCH_OBSERVE_ONLY").is_none() {
        scrapes();
    }
    observes();
}

fn scrapes() {
    scrape(
        "celery_cnc only, each name on 5 workers",
        5,
        false,
        false,
        200,
    );
    scrape(
        "celery_cnc only, every pair seen",
        WORKERS,
        false,
        false,
        200,
    );
    scrape(
        "defaults (celery_cnc + Flower), each name on 1 worker",
        1,
        true,
        false,
        100,
    );
    scrape(
        "defaults (celery_cnc + Flower), each name on 5 workers",
        5,
        true,
        false,
        60,
    );
    scrape("all three sets, each name on 5 workers", 5, true, true, 60);
    scrape(
        "all three sets, every pair seen (worst case)",
        WORKERS,
        true,
        true,
        10,
    );
}

fn observes() {
    // Observe: 50,000 tasks (200,000 events) in batches of 1,000.
    let now = cnc_model::now();
    let mut all = Vec::new();
    for id in 0..50_000 {
        all.extend(life(
            id,
            id % NAMES,
            id % WORKERS,
            now - 100.0 + id as f64 * 1e-3,
        ));
    }
    let n = all.len();
    let batches: Vec<WrittenBatch> = all.chunks(1000).map(|c| batch(c.to_vec())).collect();
    let prom_cfg = PrometheusConfig {
        celery_exporter_compat: true,
        ..PrometheusConfig::default()
    };
    let otel_cfg = OpenTelemetryConfig {
        max_queue: 1 << 20,
        ..OpenTelemetryConfig::default()
    };
    let p = PrometheusExporter::new(&prom_cfg);
    observe_rate("prometheus (all three name sets)", &[&p], &batches, n);
    let o = OtelExporter::new(&otel_cfg);
    observe_rate("opentelemetry (spans + metrics)", &[&o], &batches, n);
    let p = PrometheusExporter::new(&prom_cfg);
    let o = OtelExporter::new(&otel_cfg);
    observe_rate("both", &[&p, &o], &batches, n);
    let t = Instant::now();
    let mut spans = 0;
    while let Some((req, k)) = o.take_spans(2048) {
        spans += k;
        std::hint::black_box(prost_len(&req));
    }
    println!(
        "otel: {spans} spans encoded in {:.3} s",
        t.elapsed().as_secs_f64()
    );
}

fn prost_len(
    req: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) -> usize {
    use prost::Message;
    req.encoded_len()
}
