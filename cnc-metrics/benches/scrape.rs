//! Scrape latency and observe cost of the exporters; prints its figures.
//!
//! Run with: `cargo bench -p cnc-metrics --bench scrape`
//!
//! * Scrape: 1,000 task names x 50 workers, p50/p99 of `render()`, for
//!   each flag set, with each name run by 1 or 5 of the 50 workers (queues
//!   served by subsets) or by all 50 (worst case: every pair seen). Flower's
//!   and celery-exporter's families are per (worker, task), so their size
//!   is the number of pairs seen, not names + workers.
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

fn scrape(
    label: &str,
    workers_per_name: usize,
    flower: bool,
    celery_exporter: bool,
    rounds: usize,
) {
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
    for name in 0..NAMES {
        for k in 0..workers_per_name {
            let w = (name + k * (WORKERS / workers_per_name)) % WORKERS;
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
    let mut times = Vec::new();
    for _ in 0..rounds {
        // What the HTTP endpoint does: render into a reused buffer.
        let t = Instant::now();
        let text = ex.render_pooled();
        times.push(t.elapsed());
        std::hint::black_box(text.as_str().len());
        drop(text);
    }
    times.sort();
    println!(
        "scrape {label}: {NAMES} names x {WORKERS} workers, {} tasks, {series} samples, {:.1} MB: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({rounds} scrapes)",
        id,
        first.len() as f64 / 1e6,
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
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
