//! The OpenTelemetry component: one span per task, metrics mirroring the
//! Prometheus `celery_cnc_*` set, exported over OTLP (gRPC or HTTP/protobuf).
//!
//! [`OtelExporter::observe`] only updates memory: open spans by task id, the
//! shared aggregates, and a bounded queue of finished spans. The component's
//! export task drains that queue on its own schedule, so a slow or dead
//! endpoint fills the queue and then drops (counted in [`OtelStats`]); it
//! never slows the bus subscriber, let alone ingest.
//!
//! Spans are built as OTLP protobuf messages directly (not through the
//! `opentelemetry` SDK's tracer) because their ids must be derived from
//! Celery's ids ([`ids`]), their start and end times are the event
//! timestamps of the past, and buffering must be ours to bound and count.

pub mod ids;
mod transport;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cnc_model::bus::{BusMessage, EventBus, WrittenBatch};
use cnc_model::component::{
    CancellationToken, Component, ComponentError, ComponentInfo, ComponentResult, ComponentState,
    Context, Link, StatusBoard,
};
use cnc_model::config::{OpenTelemetryConfig, OtlpProtocol};
use cnc_model::exporter::Exporter;
use cnc_model::{Event, TaskEvent, TaskEventKind, TaskState, Timestamp};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram as PHistogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::core::{CoreAggregates, QUEUE_WAIT_BUCKETS, WRITE_BUCKETS};
use crate::error::MetricsResult;
use crate::text::{Histogram, clean_bounds};
use crate::track::Label;
pub(crate) use transport::Transport;

/// Spans sent per export request.
const SPANS_PER_REQUEST: usize = 2048;
/// How often finished spans are flushed.
const SPAN_FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Span events kept per span (a task retried many times keeps the first ones).
const EVENTS_PER_SPAN: usize = 64;
/// Longest text attribute (tracebacks), bytes.
const MAX_TEXT: usize = 8192;

/// Counters of the OpenTelemetry exporter (shared, lock-free).
#[derive(Debug, Default)]
pub struct OtelStats {
    /// Spans finished (task reached a final state).
    pub spans_finished: AtomicU64,
    /// Spans the endpoint accepted.
    pub spans_exported: AtomicU64,
    /// Spans dropped: queue full, or their export failed.
    pub spans_dropped: AtomicU64,
    /// Open spans forgotten because too many tasks were unfinished.
    pub spans_evicted: AtomicU64,
    /// Failed export requests (traces and metrics).
    pub export_errors: AtomicU64,
    /// Metric exports the endpoint accepted.
    pub metric_exports: AtomicU64,
}

impl OtelStats {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// A span being assembled from a task's events.
#[derive(Debug, Clone)]
struct OpenSpan {
    start: Timestamp,
    name: Option<String>,
    worker: Option<String>,
    queue: Option<String>,
    root_id: Option<String>,
    parent_id: Option<String>,
    group_id: Option<String>,
    retries: u64,
    events: Vec<span::Event>,
    dropped_events: u32,
    seq: u64,
}

#[derive(Debug)]
struct OtelState {
    core: CoreAggregates,
    open: HashMap<String, OpenSpan>,
    order: VecDeque<(String, u64)>,
    finished_ids: HashSet<String>,
    finished_order: VecDeque<String>,
    seq: u64,
    queue: VecDeque<Span>,
    batches: u64,
    events_written: u64,
    write_seconds: Histogram,
    lagged: u64,
}

/// Spans and metrics from the event flow; an [`Exporter`].
#[derive(Debug)]
pub struct OtelExporter {
    state: Mutex<OtelState>,
    stats: Arc<OtelStats>,
    /// Spans taken from the queue whose export has not finished.
    in_flight: AtomicU64,
    /// Bus totals and component statuses, attached at build.
    service: Mutex<Option<(EventBus, StatusBoard)>>,
    max_queue: usize,
    started_at: Timestamp,
    resource: Resource,
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn kv_str(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.to_owned()))
}

fn kv_int(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

fn nanos(ts: Timestamp) -> u64 {
    if ts.is_finite() && ts > 0.0 {
        (ts * 1e9) as u64
    } else {
        0
    }
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Undo Prometheus label escaping (labels are shared with the text format).
fn raw(label: &Label) -> String {
    if !label.contains('\\') {
        return String::from(&**label);
    }
    let mut out = String::with_capacity(label.len());
    let mut it = label.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl OtelExporter {
    /// An exporter for `config` (service name, resource attributes, queue
    /// bound).
    pub fn new(config: &OpenTelemetryConfig) -> Self {
        let mut attrs = vec![kv_str("service.name", &config.service_name)];
        for (k, v) in &config.resource_attributes {
            if k != "service.name" {
                attrs.push(kv_str(k, v));
            }
        }
        let bounds = clean_bounds(&cnc_model::config::PrometheusConfig::default().runtime_buckets);
        let cap = config.max_queue.max(16);
        Self {
            state: Mutex::new(OtelState {
                core: CoreAggregates::new(bounds, None, cap),
                open: HashMap::new(),
                order: VecDeque::new(),
                finished_ids: HashSet::new(),
                finished_order: VecDeque::new(),
                seq: 0,
                queue: VecDeque::new(),
                batches: 0,
                events_written: 0,
                write_seconds: Histogram::new(WRITE_BUCKETS.len()),
                lagged: 0,
            }),
            stats: Arc::new(OtelStats::default()),
            in_flight: AtomicU64::new(0),
            service: Mutex::new(None),
            max_queue: cap,
            started_at: cnc_model::now(),
            resource: Resource {
                attributes: attrs,
                ..Default::default()
            },
        }
    }

    /// The counters (exported, dropped, …).
    pub fn stats(&self) -> Arc<OtelStats> {
        self.stats.clone()
    }

    /// Finished spans waiting for export.
    pub fn queued(&self) -> usize {
        self.state.lock().queue.len()
    }

    fn observe_task(&self, st: &mut OtelState, e: &TaskEvent) {
        st.core.events_observed += 1;
        let update = st.core.observe_task(e);
        if st.finished_ids.contains(&e.uuid) || update.late {
            return;
        }
        if !st.open.contains_key(&e.uuid) {
            st.seq += 1;
            let seq = st.seq;
            st.order.push_back((e.uuid.clone(), seq));
            let start = match &e.kind {
                // A final event first: start when it ran, if known.
                TaskEventKind::Succeeded => e.timestamp - e.runtime.unwrap_or(0.0).max(0.0),
                _ => e.timestamp,
            };
            st.open.insert(
                e.uuid.clone(),
                OpenSpan {
                    start,
                    name: None,
                    worker: None,
                    queue: None,
                    root_id: None,
                    parent_id: None,
                    group_id: None,
                    retries: 0,
                    events: Vec::new(),
                    dropped_events: 0,
                    seq,
                },
            );
            self.evict(st);
        }
        let Some(sp) = st.open.get_mut(&e.uuid) else {
            return;
        };
        if e.timestamp > 0.0 && e.timestamp < sp.start {
            sp.start = e.timestamp;
        }
        if let Some(n) = &e.name {
            sp.name = Some(n.clone());
        }
        if let Some(q) = &e.queue {
            sp.queue = Some(q.clone());
        }
        if !e.is_from_client() {
            if let Some(h) = &e.hostname {
                sp.worker = Some(h.clone());
            }
        }
        for (slot, v) in [
            (&mut sp.root_id, &e.root_id),
            (&mut sp.parent_id, &e.parent_id),
            (&mut sp.group_id, &e.group_id),
        ] {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                *slot = Some(v.clone());
            }
        }
        if let Some(r) = e.retries {
            sp.retries = sp.retries.max(r);
        }
        if matches!(e.kind, TaskEventKind::Retried) {
            sp.retries += 1;
        }
        let mut attrs = Vec::new();
        if let Some(h) = &e.hostname {
            attrs.push(kv_str("celery.hostname", h));
        }
        let is_exc = matches!(e.kind, TaskEventKind::Failed | TaskEventKind::Retried);
        if is_exc {
            if let Some(x) = &e.exception {
                attrs.push(kv_str("exception.type", crate::track::exception_class(x)));
                attrs.push(kv_str("exception.message", &clip(x)));
            }
            if let Some(tb) = &e.traceback {
                attrs.push(kv_str("exception.stacktrace", &clip(tb)));
            }
        }
        if let Some(rt) = e.runtime {
            attrs.push(kv("celery.runtime", any_value::Value::DoubleValue(rt)));
        }
        if sp.events.len() < EVENTS_PER_SPAN {
            let name = if matches!(e.kind, TaskEventKind::Failed) {
                "exception".to_owned()
            } else {
                e.kind.as_str().to_owned()
            };
            sp.events.push(span::Event {
                time_unix_nano: nanos(e.timestamp),
                name,
                attributes: attrs,
                ..Default::default()
            });
        } else {
            sp.dropped_events += 1;
        }
        let final_state = TaskState::from_event(&e.kind).filter(|s| s.is_ready());
        if let Some(state) = final_state {
            if let Some(sp) = st.open.remove(&e.uuid) {
                st.finished_ids.insert(e.uuid.clone());
                st.finished_order.push_back(e.uuid.clone());
                while st.finished_order.len() > self.max_queue {
                    if let Some(old) = st.finished_order.pop_front() {
                        st.finished_ids.remove(&old);
                    }
                }
                let span = build_span(&e.uuid, sp, state, e);
                self.stats.spans_finished.fetch_add(1, Ordering::Relaxed);
                if st.queue.len() >= self.max_queue {
                    st.queue.pop_front();
                    self.stats.spans_dropped.fetch_add(1, Ordering::Relaxed);
                }
                st.queue.push_back(span);
            }
        }
    }

    fn evict(&self, st: &mut OtelState) {
        while st.open.len() > self.max_queue {
            let Some((id, seq)) = st.order.pop_front() else {
                break;
            };
            if st.open.get(&id).is_some_and(|s| s.seq == seq) {
                st.open.remove(&id);
                self.stats.spans_evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        if st.order.len() > 2 * self.max_queue + 1024 {
            let open = &st.open;
            st.order
                .retain(|(id, seq)| open.get(id).is_some_and(|s| s.seq == *seq));
        }
    }

    /// Take up to `max` finished spans as one export request (None if
    /// there are none).
    pub fn take_spans(&self, max: usize) -> Option<(ExportTraceServiceRequest, usize)> {
        let spans: Vec<Span> = {
            let mut st = self.state.lock();
            let n = st.queue.len().min(max);
            st.queue.drain(..n).collect()
        };
        if spans.is_empty() {
            return None;
        }
        let n = spans.len();
        Some((
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(self.resource.clone()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(scope()),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            },
            n,
        ))
    }

    /// The metrics as one OTLP request (cumulative temporality).
    pub fn metrics_request(&self) -> ExportMetricsServiceRequest {
        let now = cnc_model::now();
        let t = nanos(now);
        let start = nanos(self.started_at);
        let st = self.state.lock();
        let c = &st.core;
        let point = |attrs: Vec<KeyValue>, v: f64| NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: start,
            time_unix_nano: t,
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        };
        let int_point = |attrs: Vec<KeyValue>, v: i64| NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: start,
            time_unix_nano: t,
            value: Some(number_data_point::Value::AsInt(v)),
            ..Default::default()
        };
        let sum = |name: &str, desc: &str, unit: &str, pts: Vec<NumberDataPoint>| Metric {
            name: name.to_owned(),
            description: desc.to_owned(),
            unit: unit.to_owned(),
            data: Some(metric::Data::Sum(Sum {
                data_points: pts,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let gauge = |name: &str, desc: &str, unit: &str, pts: Vec<NumberDataPoint>| Metric {
            name: name.to_owned(),
            description: desc.to_owned(),
            unit: unit.to_owned(),
            data: Some(metric::Data::Gauge(Gauge { data_points: pts })),
            ..Default::default()
        };
        let hist_point = |attrs: Vec<KeyValue>, bounds: &[f64], h: &Histogram| HistogramDataPoint {
            attributes: attrs,
            start_time_unix_nano: start,
            time_unix_nano: t,
            count: h.count,
            sum: Some(h.sum),
            bucket_counts: {
                let mut b = h.counts.clone();
                let in_bounds: u64 = b.iter().sum();
                b.push(h.count.saturating_sub(in_bounds));
                b
            },
            explicit_bounds: bounds.to_vec(),
            ..Default::default()
        };
        let hist = |name: &str, desc: &str, pts: Vec<HistogramDataPoint>| Metric {
            name: name.to_owned(),
            description: desc.to_owned(),
            unit: "s".to_owned(),
            data: Some(metric::Data::Histogram(PHistogram {
                data_points: pts,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        };
        let mut metrics = vec![
            sum(
                "celery_cnc.tasks",
                "Tasks that entered each state, by task name.",
                "{task}",
                c.tasks_total
                    .iter()
                    .map(|((n, s), v)| {
                        int_point(
                            vec![kv_str("name", &raw(n)), kv_str("state", s.as_str())],
                            **v as i64,
                        )
                    })
                    .collect(),
            ),
            gauge(
                "celery_cnc.tasks.in_progress",
                "Unfinished tasks by current state and name.",
                "{task}",
                c.in_progress
                    .iter()
                    .map(|((n, s), v)| {
                        int_point(
                            vec![kv_str("name", &raw(n)), kv_str("state", s.as_str())],
                            **v,
                        )
                    })
                    .collect(),
            ),
            hist(
                "celery_cnc.task.runtime",
                "Runtime of succeeded tasks.",
                c.runtime
                    .iter()
                    .map(|(n, h)| hist_point(vec![kv_str("name", &raw(n))], &c.runtime_bounds, h))
                    .collect(),
            ),
            hist(
                "celery_cnc.task.queue_wait",
                "Time from sent (or received) to started; tasks with an ETA excluded.",
                c.queue_wait
                    .iter()
                    .map(|((n, q), h)| {
                        hist_point(
                            vec![kv_str("name", &raw(n)), kv_str("queue", &raw(q))],
                            &QUEUE_WAIT_BUCKETS,
                            h,
                        )
                    })
                    .collect(),
            ),
            gauge(
                "celery_cnc.workers.online",
                "Workers online.",
                "{worker}",
                vec![int_point(vec![], c.workers_online(now) as i64)],
            ),
            gauge(
                "celery_cnc.worker.up",
                "1 if the worker is online.",
                "1",
                c.workers
                    .iter()
                    .map(|(w, s)| {
                        int_point(vec![kv_str("worker", &raw(w))], i64::from(s.alive(now)))
                    })
                    .collect(),
            ),
            gauge(
                "celery_cnc.worker.tasks.active",
                "Tasks executing on the worker.",
                "{task}",
                c.workers
                    .iter()
                    .map(|(w, s)| {
                        let a = if s.alive(now) { s.active as i64 } else { 0 };
                        int_point(vec![kv_str("worker", &raw(w))], a)
                    })
                    .collect(),
            ),
            sum(
                "celery_cnc.events.written",
                "Events in batches written to the store.",
                "{event}",
                vec![int_point(vec![], st.events_written as i64)],
            ),
            sum(
                "celery_cnc.batches.written",
                "Batches written to the store.",
                "{batch}",
                vec![int_point(vec![], st.batches as i64)],
            ),
            hist(
                "celery_cnc.batch.write_time",
                "Time the store took to write one batch.",
                vec![hist_point(vec![], &WRITE_BUCKETS, &st.write_seconds)],
            ),
            sum(
                "celery_cnc.exporter.lagged_messages",
                "Bus messages this exporter missed.",
                "{message}",
                vec![int_point(
                    vec![kv_str("exporter", "otel")],
                    st.lagged as i64,
                )],
            ),
        ];
        if let Some((bus, status)) = self.service.lock().clone() {
            metrics.push(sum(
                "celery_cnc.bus.published",
                "Messages published on the event bus.",
                "{message}",
                vec![int_point(vec![], bus.published_total() as i64)],
            ));
            metrics.push(sum(
                "celery_cnc.bus.lagged_messages",
                "Bus messages missed by lagging subscribers.",
                "{message}",
                vec![int_point(vec![], bus.lagged_total() as i64)],
            ));
            let all = status.all();
            metrics.push(gauge(
                "celery_cnc.component.up",
                "1 if the component is running.",
                "1",
                all.iter()
                    .map(|c| {
                        int_point(
                            vec![kv_str("component", &c.name)],
                            i64::from(c.state == ComponentState::Up),
                        )
                    })
                    .collect(),
            ));
            metrics.push(sum(
                "celery_cnc.component.restarts",
                "Restarts of the component after a crash.",
                "{restart}",
                all.iter()
                    .map(|c| int_point(vec![kv_str("component", &c.name)], c.restarts as i64))
                    .collect(),
            ));
        }
        let s = &self.stats;
        for (name, desc, v) in [
            (
                "celery_cnc.otel.spans.finished",
                "Spans finished.",
                &s.spans_finished,
            ),
            (
                "celery_cnc.otel.spans.exported",
                "Spans exported.",
                &s.spans_exported,
            ),
            (
                "celery_cnc.otel.spans.dropped",
                "Spans dropped (queue full or export failed).",
                &s.spans_dropped,
            ),
            (
                "celery_cnc.otel.spans.evicted",
                "Open spans forgotten (too many unfinished tasks).",
                &s.spans_evicted,
            ),
            (
                "celery_cnc.otel.export.errors",
                "Failed export requests.",
                &s.export_errors,
            ),
        ] {
            metrics.push(sum(
                name,
                desc,
                "1",
                vec![point(vec![], OtelStats::get(v) as f64)],
            ));
        }
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "celery-cnc".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// Turn an assembled span into OTLP.
fn build_span(task_id: &str, sp: OpenSpan, state: TaskState, last: &TaskEvent) -> Span {
    let root = sp.root_id.as_deref().unwrap_or(task_id);
    let parent = sp
        .parent_id
        .as_deref()
        .filter(|p| *p != task_id)
        .map(|p| ids::span_id(p).to_vec())
        .unwrap_or_default();
    let mut attrs = vec![
        kv_str("celery.task_id", task_id),
        kv_str("celery.task_name", sp.name.as_deref().unwrap_or("")),
        kv_str("celery.state", state.as_str()),
        kv_int("celery.retries", sp.retries as i64),
        kv_str("celery.root_id", root),
    ];
    if let Some(p) = &sp.parent_id {
        attrs.push(kv_str("celery.parent_id", p));
    }
    if let Some(g) = &sp.group_id {
        attrs.push(kv_str("celery.group_id", g));
    }
    if let Some(w) = &sp.worker {
        attrs.push(kv_str("celery.worker", w));
    }
    if let Some(q) = &sp.queue {
        attrs.push(kv_str("messaging.destination.name", q));
    }
    attrs.push(kv_str("messaging.system", "celery"));
    if let Some(rt) = last.runtime {
        attrs.push(kv("celery.runtime", any_value::Value::DoubleValue(rt)));
    }
    let status = match state {
        TaskState::Success => Status {
            code: status::StatusCode::Ok as i32,
            ..Default::default()
        },
        _ => Status {
            code: status::StatusCode::Error as i32,
            message: match (&last.exception, state) {
                (Some(x), _) => clip(x),
                (None, s) => s.as_str().to_owned(),
            },
        },
    };
    if let Some(x) = &last.exception {
        attrs.push(kv_str("exception.type", crate::track::exception_class(x)));
    }
    let end = last.timestamp.max(sp.start);
    let flags = if parent.is_empty() {
        0x100 | 1
    } else {
        0x100 | 0x200 | 1
    };
    Span {
        trace_id: ids::trace_id(root).to_vec(),
        span_id: ids::span_id(task_id).to_vec(),
        parent_span_id: parent,
        // Sampled; a parent (another task, another process) is remote.
        flags,
        name: sp.name.unwrap_or_else(|| "celery.task".to_owned()),
        kind: span::SpanKind::Consumer as i32,
        start_time_unix_nano: nanos(sp.start),
        end_time_unix_nano: nanos(end),
        attributes: attrs,
        events: sp.events,
        dropped_events_count: sp.dropped_events,
        status: Some(status),
        ..Default::default()
    }
}

impl Exporter for OtelExporter {
    fn name(&self) -> &str {
        "otel"
    }

    fn observe(&self, event: &Event) {
        let now = cnc_model::now();
        let mut st = self.state.lock();
        match event {
            Event::Task(e) => self.observe_task(&mut st, e),
            other => {
                st.core.observe(other, now);
            }
        }
    }

    fn observe_batch(&self, batch: &WrittenBatch) {
        let now = cnc_model::now();
        let mut st = self.state.lock();
        st.batches += 1;
        st.events_written += batch.events.len() as u64;
        st.write_seconds
            .observe(&WRITE_BUCKETS, batch.write_seconds.max(0.0));
        for e in &batch.events {
            match e {
                Event::Task(t) => self.observe_task(&mut st, t),
                other => {
                    st.core.observe(other, now);
                }
            }
        }
    }

    fn lagged(&self, n: u64) {
        self.state.lock().lagged += n;
    }
}

/// The `open_telemetry` component. See the module docs.
#[derive(Debug)]
pub struct OtelComponent {
    config: OpenTelemetryConfig,
    exporter: Arc<OtelExporter>,
    transport: Option<Transport>,
    rx: Option<broadcast::Receiver<BusMessage>>,
    bus: Option<EventBus>,
}

impl OtelComponent {
    /// The component for `config`. Spans and aggregates live as long as the
    /// component, across restarts of its export task.
    pub fn new(config: OpenTelemetryConfig) -> Self {
        let exporter = Arc::new(OtelExporter::new(&config));
        Self {
            config,
            exporter,
            transport: None,
            rx: None,
            bus: None,
        }
    }

    /// The exporter (for tests, benchmarks and embedding).
    pub fn exporter(&self) -> Arc<OtelExporter> {
        self.exporter.clone()
    }

    /// Check `config` without building: endpoint scheme and headers.
    pub fn validate(config: &OpenTelemetryConfig) -> MetricsResult<()> {
        Transport::new(config).map(|_| ())
    }
}

/// Export what is due: all queued spans (in requests of
/// [`SPANS_PER_REQUEST`]) and, when `metrics`, the metrics.
async fn flush(exporter: &OtelExporter, transport: &mut Transport, metrics: bool) {
    while let Some((req, n)) = exporter.take_spans(SPANS_PER_REQUEST) {
        exporter.in_flight.store(n as u64, Ordering::Relaxed);
        let result = transport.export_traces(req).await;
        exporter.in_flight.store(0, Ordering::Relaxed);
        match result {
            Ok(()) => {
                exporter
                    .stats
                    .spans_exported
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                exporter.stats.export_errors.fetch_add(1, Ordering::Relaxed);
                exporter
                    .stats
                    .spans_dropped
                    .fetch_add(n as u64, Ordering::Relaxed);
                tracing::warn!(error = %crate::chain(&e), spans = n, "OTLP span export failed; spans dropped");
                // Do not hammer a dead endpoint: what queues meanwhile is
                // bounded and counted.
                break;
            }
        }
    }
    if metrics {
        match transport.export_metrics(exporter.metrics_request()).await {
            Ok(()) => {
                exporter
                    .stats
                    .metric_exports
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                exporter.stats.export_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %crate::chain(&e), "OTLP metrics export failed");
            }
        }
    }
}

#[async_trait]
impl Component for OtelComponent {
    fn name(&self) -> &str {
        "open_telemetry"
    }

    async fn build(&mut self, ctx: &Context) -> ComponentResult<()> {
        let t = Transport::new(&self.config).map_err(|e| {
            let msg = crate::chain(&e);
            ComponentError::fatal(msg)
        })?;
        self.transport = Some(t);
        *self.exporter.service.lock() = Some((ctx.bus.clone(), ctx.status.clone()));
        self.rx = Some(ctx.bus.subscribe());
        self.bus = Some(ctx.bus.clone());
        Ok(())
    }

    async fn run(&mut self, shutdown: CancellationToken) -> ComponentResult<()> {
        let (Some(mut transport), Some(mut rx)) = (self.transport.clone(), self.rx.take()) else {
            return Err(ComponentError::new("open_telemetry: run before build"));
        };
        let exporter = self.exporter.clone();
        let every = self.config.export_interval.max(Duration::from_millis(100));
        // The export task: its own schedule, so a slow endpoint never holds
        // up the bus subscriber below.
        let stop_export = CancellationToken::new();
        let export = {
            let exporter = exporter.clone();
            let stop = stop_export.clone();
            let mut transport = transport.clone();
            tokio::spawn(async move {
                let mut spans = tokio::time::interval(SPAN_FLUSH_EVERY);
                spans.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut metrics = tokio::time::interval(every);
                metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                metrics.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = spans.tick() => flush(&exporter, &mut transport, false).await,
                        _ = metrics.tick() => flush(&exporter, &mut transport, true).await,
                    }
                }
            })
        };
        let bus = self.bus.clone();
        let result = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                msg = rx.recv() => match msg {
                    Ok(BusMessage::Batch(b)) => crate::observe_batch(&exporter, b).await,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        if let Some(bus) = &bus {
                            bus.note_lag(n);
                        }
                        exporter.lagged(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        break Err(ComponentError::new("open_telemetry: the event bus closed"));
                    }
                },
            }
        };
        // The export task may be inside a request to a black-holed
        // endpoint: stop it where it is (its spans stay queued).
        stop_export.cancel();
        export.abort();
        let _ = export.await;
        let lost = exporter.in_flight.swap(0, Ordering::Relaxed);
        exporter
            .stats
            .spans_dropped
            .fetch_add(lost, Ordering::Relaxed);
        // Last flush, bounded: a dead endpoint must not hold up shutdown.
        let _ = tokio::time::timeout(
            Duration::from_secs(3),
            flush(&exporter, &mut transport, true),
        )
        .await;
        result
    }

    async fn stop(&mut self) -> ComponentResult<()> {
        self.rx = None;
        Ok(())
    }

    fn info(&self) -> ComponentInfo {
        let s = &self.exporter.stats;
        let headers: serde_json::Map<String, Value> = self
            .config
            .headers
            .keys()
            .map(|k| (k.clone(), json!("<redacted>")))
            .collect();
        ComponentInfo {
            config: json!({
                "endpoint": self.config.endpoint,
                "protocol": match self.config.protocol {
                    OtlpProtocol::Grpc => "grpc",
                    OtlpProtocol::HttpProtobuf => "http_protobuf",
                },
                "headers": headers,
                "service_name": self.config.service_name,
                "resource_attributes": self.config.resource_attributes,
                "export_interval_seconds": self.config.export_interval.as_secs_f64(),
                "max_queue": self.config.max_queue,
                "spans_exported": OtelStats::get(&s.spans_exported),
                "spans_dropped": OtelStats::get(&s.spans_dropped),
                "export_errors": OtelStats::get(&s.export_errors),
            }),
            links: vec![Link {
                label: "OTLP endpoint".into(),
                url: self.config.endpoint.clone(),
            }],
        }
    }
}
