//! [`PrometheusExporter`]: in-memory aggregates updated by `observe`, and
//! the text a scrape gets.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use cnc_broker::StreamStats;
use cnc_model::bus::{EventBus, WrittenBatch};
use cnc_model::component::{ComponentState, StatusBoard};
use cnc_model::config::PrometheusConfig;
use cnc_model::exporter::Exporter;
use cnc_model::{Event, TaskEventKind, TaskState, Timestamp, WorkerEventKind};
use parking_lot::Mutex;

use crate::OtelStats;
use crate::core::{CoreAggregates, QUEUE_WAIT_BUCKETS, WRITE_BUCKETS, queue_wait};
use crate::text::{
    Cached, HistFamily, Histogram, Kind, SeriesText, TextWriter, clean_bounds, format_le,
    histogram_into, sample_into,
};
use crate::track::{Label, LabelMap, Update, exception_class, host_of};

/// Unfinished tasks remembered per exporter (to label later events).
pub(crate) const TRACKED_TASKS: usize = 100_000;

/// Distinct queue names remembered from `task-sent` events.
pub const MAX_SENT_QUEUES: usize = 1_000;

/// One queue's figures from the last refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStat {
    /// Queue name.
    pub queue: String,
    /// Ready messages.
    pub messages: u64,
    /// Consumers attached (RabbitMQ only).
    pub consumers: Option<u64>,
    /// Workers consuming it (from `active_queues`), when asked.
    pub workers: Option<u64>,
    /// Pool processes of those workers (from `stats`), when asked.
    pub processes: Option<u64>,
}

/// Reads one counter of a listener snapshot.
type CounterOf = fn(&cnc_broker::StreamCounters) -> u64;

/// Where the self-metrics come from, attached by the component.
#[derive(Debug, Default, Clone)]
struct Sources {
    otel: Option<Arc<OtelStats>>,
    brokers: Vec<(Label, Arc<StreamStats>)>,
    bus: Option<EventBus>,
    status: Option<StatusBoard>,
}

/// celery-exporter's per-(name, hostname, queue) task counters.
const CE_KINDS: [(&str, &str); 7] = [
    (
        "celery_task_sent_total",
        "Sent when a task message is published.",
    ),
    (
        "celery_task_received_total",
        "Sent when the worker receives a task.",
    ),
    (
        "celery_task_started_total",
        "Sent just before the worker executes the task.",
    ),
    (
        "celery_task_succeeded_total",
        "Sent if the task executed successfully.",
    ),
    (
        "celery_task_rejected_total",
        "The task was rejected by the worker, possibly to be re-queued or moved to a dead letter queue.",
    ),
    (
        "celery_task_revoked_total",
        "Sent if the task has been revoked.",
    ),
    (
        "celery_task_retried_total",
        "Sent if the task failed, but will be retried in the future.",
    ),
];

fn ce_index(kind: &TaskEventKind) -> Option<usize> {
    Some(match kind {
        TaskEventKind::Sent => 0,
        TaskEventKind::Received => 1,
        TaskEventKind::Started => 2,
        TaskEventKind::Succeeded => 3,
        TaskEventKind::Rejected => 4,
        TaskEventKind::Revoked => 5,
        TaskEventKind::Retried => 6,
        _ => return None,
    })
}

#[derive(Debug, Default, Clone, Copy)]
struct CeCounters {
    counts: [u64; 7],
    /// Which counters have a series (task-sent is not zero-initialised).
    present: [bool; 7],
}

/// Flower's families, labelled by node name (`worker`) and task name.
#[derive(Debug, Default)]
struct Flower {
    /// Count and creation time: `flower_events_total` and `_created`.
    events: LabelMap<(Label, Label, Label), Cached<(u64, f64), 2>>,
    runtime: LabelMap<(Label, Label), Cached<Histogram>>,
    prefetch_time: LabelMap<(Label, Label), Cached<f64>>,
    prefetched: LabelMap<(Label, Label), Cached<f64>>,
    online: LabelMap<Label, f64>,
    executing: LabelMap<Label, f64>,
}

/// celery-exporter's families, labelled by host (part after `@`).
#[derive(Debug, Default)]
struct CeleryExporter {
    /// One part per counter of [`CE_KINDS`].
    tasks: LabelMap<(Label, Label, Label), Cached<CeCounters, 7>>,
    failed: LabelMap<(Label, Label, Label, Label), Cached<u64>>,
    runtime: LabelMap<(Label, Label, Label), Cached<Histogram>>,
    queue_wait: LabelMap<(Label, Label, Label), Cached<Histogram>>,
    worker_up: LabelMap<Label, f64>,
    worker_active: LabelMap<Label, f64>,
}

#[derive(Debug)]
struct State {
    core: CoreAggregates,
    flower: Flower,
    ce: CeleryExporter,
    /// Every node seen (workers and clients): last local time.
    nodes: LabelMap<Label, Timestamp>,
    queues: HashMap<String, Vec<QueueStat>>,
    /// Queues named in task-sent events (bounded).
    sent_queues: HashSet<String>,
    queue_refresh_errors: LabelMap<Label, u64>,
    queue_refreshed_at: LabelMap<Label, Timestamp>,
    batches: u64,
    events_written: u64,
    write_seconds: Histogram,
    lagged: u64,
    /// Chunks in the last scrape.
    last_chunks: usize,
    /// A series' label set while its histogram lines are written.
    scratch: String,
    /// Where re-rendered series text goes.
    text: SeriesText,
    /// Length of the last scrape.
    last_len: usize,
}

/// Names and bucket tails of the histogram families, built once.
#[derive(Debug)]
struct HistFamilies {
    runtime: HistFamily,
    queue_wait: HistFamily,
    flower_runtime: HistFamily,
    ce_runtime: HistFamily,
    ce_queue_wait: HistFamily,
}

impl HistFamilies {
    fn new(runtime_bounds: &[f64]) -> Self {
        let runtime: Vec<String> = runtime_bounds.iter().map(|b| format_le(*b)).collect();
        let wait: Vec<String> = QUEUE_WAIT_BUCKETS.iter().map(|b| format_le(*b)).collect();
        Self {
            runtime: HistFamily::new("celery_cnc_task_runtime_seconds", &runtime),
            queue_wait: HistFamily::new("celery_cnc_task_queue_wait_seconds", &wait),
            flower_runtime: HistFamily::new("flower_task_runtime_seconds", &runtime),
            ce_runtime: HistFamily::new("celery_task_runtime", &runtime),
            ce_queue_wait: HistFamily::new("celery_task_queue_wait_time", &wait),
        }
    }
}

/// Scrape buffers kept for reuse.
const POOLED_BUFFERS: usize = 2;

/// One scrape's text (see [`PrometheusExporter::render_pooled`]): a list
/// of chunks, most of them series text cached by the exporter and shared,
/// not copied. Its chunk list goes back to the exporter when dropped.
#[derive(Debug)]
pub struct Scrape {
    chunks: Vec<Bytes>,
    len: usize,
    home: std::sync::Weak<PrometheusExporter>,
}

impl Scrape {
    /// The text's chunks, in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// Length of the text in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no text.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The text in one buffer (a copy).
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(self.len);
        for c in &self.chunks {
            // Every chunk is whole lines of text the exporter wrote.
            s.push_str(std::str::from_utf8(c).unwrap_or_default());
        }
        s
    }
}

impl Drop for Scrape {
    fn drop(&mut self) {
        if let Some(home) = self.home.upgrade() {
            let mut chunks = std::mem::take(&mut self.chunks);
            chunks.clear();
            let mut pool = home.pool.lock();
            if pool.len() < POOLED_BUFFERS {
                pool.push(chunks);
            }
        }
    }
}

/// Prometheus aggregates and scrape text; an [`Exporter`].
///
/// `observe` updates in-memory maps under one short lock; `render` writes
/// the text format from them. Nothing here touches the store or a broker:
/// queue depths arrive through [`PrometheusExporter::set_queues`] from the
/// component's refresh task.
#[derive(Debug)]
pub struct PrometheusExporter {
    flower: bool,
    celery_exporter: bool,
    ttl: f64,
    runtime_bounds: Vec<f64>,
    write_le: Vec<String>,
    hist: HistFamilies,
    state: Mutex<State>,
    sources: Mutex<Sources>,
    pool: Mutex<Vec<Vec<Bytes>>>,
}

impl PrometheusExporter {
    /// Aggregates for `config` (flags, buckets, allow-list, TTL).
    pub fn new(config: &PrometheusConfig) -> Self {
        let bounds = clean_bounds(&config.runtime_buckets);
        Self {
            flower: config.flower_compat,
            celery_exporter: config.celery_exporter_compat,
            ttl: config.offline_worker_ttl.as_secs_f64(),
            runtime_bounds: bounds.clone(),
            write_le: WRITE_BUCKETS.iter().map(|b| format_le(*b)).collect(),
            hist: HistFamilies::new(&bounds),
            state: Mutex::new(State {
                core: CoreAggregates::new(bounds, config.task_names.as_deref(), TRACKED_TASKS),
                flower: Flower::default(),
                ce: CeleryExporter::default(),
                nodes: LabelMap::default(),
                queues: HashMap::new(),
                sent_queues: HashSet::new(),
                queue_refresh_errors: LabelMap::default(),
                queue_refreshed_at: LabelMap::default(),
                batches: 0,
                events_written: 0,
                write_seconds: Histogram::new(WRITE_BUCKETS.len()),
                lagged: 0,
                last_chunks: 0,
                scratch: String::new(),
                text: SeriesText::default(),
                last_len: 0,
            }),
            sources: Mutex::new(Sources::default()),
            pool: Mutex::new(Vec::new()),
        }
    }

    /// Read broker listener counters at scrape time, labelled `broker`.
    /// A listener shared by several apps is attached once.
    pub fn attach_broker(&self, broker: &str, stats: Arc<StreamStats>) {
        let mut s = self.sources.lock();
        if s.brokers.iter().any(|(_, st)| Arc::ptr_eq(st, &stats)) {
            return;
        }
        let label = Label::new(crate::text::escape_label(broker));
        s.brokers.push((label, stats));
    }

    /// Read bus totals and component statuses at scrape time.
    pub fn attach_service(&self, bus: EventBus, status: StatusBoard) {
        let mut s = self.sources.lock();
        s.bus = Some(bus);
        s.status = Some(status);
    }

    /// Also serve the OpenTelemetry exporter's counters (spans exported,
    /// dropped, …), so OTLP drops are visible even when the OTLP endpoint
    /// is what is down.
    pub fn attach_otel(&self, stats: Arc<OtelStats>) {
        self.sources.lock().otel = Some(stats);
    }

    /// Replace the queue figures of `app` (from the refresh task).
    pub fn set_queues(&self, app: &str, queues: Vec<QueueStat>) {
        let mut st = self.state.lock();
        let label = st.core.labels.get(app);
        st.queue_refreshed_at.insert(label, cnc_model::now());
        st.queues.insert(app.to_owned(), queues);
    }

    /// Count a failed refresh of `app`'s queues (the last figures stay).
    pub fn queue_refresh_failed(&self, app: &str) {
        let mut st = self.state.lock();
        let label = st.core.labels.get(app);
        *st.queue_refresh_errors.entry(label).or_default() += 1;
    }

    /// Queues named in `task-sent` events so far (at most
    /// [`MAX_SENT_QUEUES`]), for the queue refresh.
    pub fn queues_seen(&self) -> Vec<String> {
        let mut q: Vec<String> = self.state.lock().sent_queues.iter().cloned().collect();
        q.sort();
        q
    }

    /// Fold one event in at local time `now` (tests pass their own clock).
    pub fn observe_at(&self, event: &Event, now: Timestamp) {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let node = event.hostname().map(|h| st.core.labels.get(h));
        if let Some(n) = &node {
            st.nodes.insert(n.clone(), now);
        }
        if let Event::Task(e) = event {
            if let (TaskEventKind::Sent, Some(q)) = (&e.kind, &e.queue) {
                if st.sent_queues.len() < MAX_SENT_QUEUES && !st.sent_queues.contains(q) {
                    st.sent_queues.insert(q.clone());
                }
            }
        }
        let update = st.core.observe(event, now);
        match (event, update) {
            (Event::Task(e), Some(u)) => {
                let node = node.unwrap_or_else(|| st.core.labels.get(""));
                if self.flower {
                    self.flower_task(st, e, &u, &node, now);
                }
                if self.celery_exporter && !u.late {
                    self.ce_task(st, e, &u, &node);
                }
            }
            (Event::Worker(w), _) => {
                let Some(node) = node else { return };
                let (online, active) = match w.kind {
                    WorkerEventKind::Online | WorkerEventKind::Heartbeat => (1.0, w.active),
                    WorkerEventKind::Offline | WorkerEventKind::Lost => (0.0, Some(0)),
                };
                if self.flower {
                    st.flower.online.insert(node.clone(), online);
                    if w.kind == WorkerEventKind::Heartbeat {
                        if let Some(a) = w.active {
                            st.flower.executing.insert(node.clone(), a as f64);
                        }
                    }
                }
                if self.celery_exporter {
                    let host = st.core.labels.get(host_of(&node));
                    st.ce.worker_up.insert(host.clone(), online);
                    if w.kind != WorkerEventKind::Online {
                        if let Some(a) = active {
                            st.ce.worker_active.insert(host, a as f64);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn flower_task(
        &self,
        st: &mut State,
        e: &cnc_model::TaskEvent,
        u: &Update,
        node: &Label,
        now: Timestamp,
    ) {
        // Flower labels with the name in the event, else the known one, else "".
        let raw = e.name.as_deref().or(u.info.name.as_deref());
        let task = match raw {
            Some(n) => st.core.labels.get(st.core.names.label(n)),
            None => st.core.labels.get(""),
        };
        let kind = st.core.labels.get(e.kind.as_str());
        st.flower
            .events
            .entry((node.clone(), kind, task.clone()))
            .or_insert_with(|| Cached::new((0, now)))
            .get_mut()
            .0 += 1;
        if let Some(rt) = e.runtime.filter(|r| *r != 0.0) {
            let b = &self.runtime_bounds;
            st.flower
                .runtime
                .entry((node.clone(), task.clone()))
                .or_insert_with(|| Cached::new(Histogram::new(b.len())))
                .get_mut()
                .observe(b, rt);
        }
        if u.late || u.info.eta.is_some() {
            return;
        }
        let key = (node.clone(), task);
        match e.kind {
            TaskEventKind::Received if u.info.received.is_some() => {
                *st.flower.prefetched.entry(key).or_default().get_mut() += 1.0;
            }
            TaskEventKind::Started => {
                if let (Some(s), Some(r)) = (u.info.started, u.info.received) {
                    st.flower
                        .prefetch_time
                        .entry(key.clone())
                        .or_default()
                        .set(s - r);
                    *st.flower.prefetched.entry(key).or_default().get_mut() -= 1.0;
                }
            }
            TaskEventKind::Succeeded | TaskEventKind::Failed
                if u.info.started.is_some() && u.info.received.is_some() =>
            {
                st.flower.prefetch_time.entry(key).or_default().set(0.0);
            }
            _ => {}
        }
    }

    fn ce_task(&self, st: &mut State, e: &cnc_model::TaskEvent, u: &Update, node: &Label) {
        let Some(idx) = ce_index(&e.kind).or(match e.kind {
            TaskEventKind::Failed => Some(usize::MAX),
            _ => None,
        }) else {
            return;
        };
        let name = st.core.name_label(u.info.name.as_deref());
        let host = st.core.labels.get(host_of(node));
        let queue = st
            .core
            .labels
            .get(u.info.queue.as_deref().unwrap_or("celery"));
        let key = (name, host, queue);
        let c = st.ce.tasks.entry(key.clone()).or_default().get_mut();
        // celery-exporter creates every worker-side counter of these labels
        // (at zero) so rates exist; task-sent only when one was sent.
        for (i, p) in c.present.iter_mut().enumerate() {
            if i != 0 || idx == 0 {
                *p = true;
            }
        }
        if idx < 7 {
            c.counts[idx] += 1;
        }
        let empty = st.core.labels.get("");
        if e.kind != TaskEventKind::Sent {
            st.ce
                .failed
                .entry((key.0.clone(), key.1.clone(), empty, key.2.clone()))
                .or_default();
        }
        match e.kind {
            TaskEventKind::Failed => {
                let exc = st
                    .core
                    .labels
                    .get(exception_class(e.exception.as_deref().unwrap_or("")));
                *st.ce
                    .failed
                    .entry((key.0.clone(), key.1.clone(), exc, key.2.clone()))
                    .or_default()
                    .get_mut() += 1;
            }
            TaskEventKind::Succeeded => {
                if let Some(rt) = e.runtime {
                    let b = &self.runtime_bounds;
                    st.ce
                        .runtime
                        .entry(key)
                        .or_insert_with(|| Cached::new(Histogram::new(b.len())))
                        .get_mut()
                        .observe(b, rt);
                }
            }
            TaskEventKind::Started if u.info.sent.is_some() => {
                if let Some(w) = queue_wait(&u.info) {
                    st.ce
                        .queue_wait
                        .entry(key)
                        .or_insert_with(|| Cached::new(Histogram::new(QUEUE_WAIT_BUCKETS.len())))
                        .get_mut()
                        .observe(&QUEUE_WAIT_BUCKETS, w);
                }
            }
            _ => {}
        }
    }

    /// Drop series of nodes not heard from for longer than the TTL (and
    /// not alive).
    fn prune(&self, st: &mut State, now: Timestamp) {
        let gone_workers: HashSet<Label> =
            st.core.prune_workers(now, self.ttl).into_iter().collect();
        let core = &st.core;
        let gone: HashSet<Label> = st
            .nodes
            .iter()
            .filter(|(n, seen)| {
                now - **seen > self.ttl
                    && (gone_workers.contains(*n) || !core.workers.contains_key(*n))
            })
            .map(|(n, _)| n.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for n in &gone {
            st.nodes.remove(n);
        }
        let f = &mut st.flower;
        f.events.retain(|k, _| !gone.contains(&k.0));
        f.runtime.retain(|k, _| !gone.contains(&k.0));
        f.prefetch_time.retain(|k, _| !gone.contains(&k.0));
        f.prefetched.retain(|k, _| !gone.contains(&k.0));
        f.online.retain(|k, _| !gone.contains(k));
        f.executing.retain(|k, _| !gone.contains(k));
        let live_hosts: HashSet<&str> = st.nodes.keys().map(|n| host_of(n)).collect();
        let ce = &mut st.ce;
        ce.tasks.retain(|k, _| live_hosts.contains(&*k.1));
        ce.failed.retain(|k, _| live_hosts.contains(&*k.1));
        ce.runtime.retain(|k, _| live_hosts.contains(&*k.1));
        ce.queue_wait.retain(|k, _| live_hosts.contains(&*k.1));
        ce.worker_up.retain(|k, _| live_hosts.contains(&**k));
        ce.worker_active.retain(|k, _| live_hosts.contains(&**k));
        st.core.labels.retain(|_| false);
    }

    /// The scrape text (Prometheus text format 0.0.4).
    pub fn render(&self) -> String {
        self.render_at(cnc_model::now())
    }

    /// The scrape as chunks, most of them cached series text shared with
    /// the exporter (only series that changed since the last scrape are
    /// rendered again); the chunk list returns to the exporter when
    /// dropped. What the HTTP endpoint serves.
    pub fn render_pooled(self: &Arc<Self>) -> Scrape {
        let buf = self.pool.lock().pop().unwrap_or_default();
        let (chunks, len) = self.render_into(cnc_model::now(), buf);
        Scrape {
            chunks,
            len,
            home: Arc::downgrade(self),
        }
    }

    /// The scrape text as of local time `now`.
    pub fn render_at(&self, now: Timestamp) -> String {
        let (chunks, len) = self.render_into(now, Vec::new());
        let mut s = String::with_capacity(len);
        for c in &chunks {
            // Every chunk is whole lines of text written by this module.
            s.push_str(std::str::from_utf8(c).unwrap_or_default());
        }
        s
    }

    fn render_into(&self, now: Timestamp, mut buf: Vec<Bytes>) -> (Vec<Bytes>, usize) {
        let sources = self.sources.lock().clone();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        self.prune(st, now);
        buf.reserve(st.last_chunks);
        st.text.begin(st.last_len);
        let mut w = TextWriter::with_chunks(buf);
        self.render_core(st, &sources, now, &mut w);
        if self.flower {
            self.render_flower(st, &mut w);
        }
        if self.celery_exporter {
            self.render_ce(st, now, &mut w);
        }
        let (chunks, len) = w.finish_chunks();
        st.last_chunks = chunks.len();
        st.last_len = len;
        (chunks, len)
    }

    fn render_core(&self, st: &mut State, src: &Sources, now: Timestamp, w: &mut TextWriter) {
        let scratch = &mut st.scratch;
        let text = &mut st.text;
        let c = &mut st.core;
        w.family(
            "celery_cnc_tasks_total",
            Kind::Counter,
            "Tasks that entered each state, by task name.",
        );
        for ((name, state), v) in &mut c.tasks_total {
            w.chunk(v.part(0, text, |v, _, out| {
                sample_into(
                    out,
                    "celery_cnc_tasks_total",
                    &[("name", name), ("state", state.as_str())],
                    *v as f64,
                );
            }));
        }
        w.family(
            "celery_cnc_tasks_in_progress",
            Kind::Gauge,
            "Unfinished tasks by current state (PENDING, RECEIVED, STARTED, RETRY) and name.",
        );
        for ((name, state), v) in &mut c.in_progress {
            w.chunk(v.part(0, text, |v, _, out| {
                sample_into(
                    out,
                    "celery_cnc_tasks_in_progress",
                    &[("name", name), ("state", state.as_str())],
                    *v as f64,
                );
            }));
        }
        w.family(
            "celery_cnc_task_runtime_seconds",
            Kind::Histogram,
            "Runtime of succeeded tasks, seconds.",
        );
        for (name, h) in &mut c.runtime {
            w.chunk(h.part(0, text, |h, _, out| {
                histogram_into(out, &self.hist.runtime, &[("name", name)], h, scratch);
            }));
        }
        w.family(
            "celery_cnc_task_queue_wait_seconds",
            Kind::Histogram,
            "Time from sent (or received) to started, seconds; tasks with an ETA excluded.",
        );
        for ((name, queue), h) in &mut c.queue_wait {
            w.chunk(h.part(0, text, |h, _, out| {
                histogram_into(
                    out,
                    &self.hist.queue_wait,
                    &[("name", name), ("queue", queue)],
                    h,
                    scratch,
                );
            }));
        }
        let c = &st.core;
        w.family(
            "celery_cnc_workers_online",
            Kind::Gauge,
            "Workers online (heartbeat within 2 x freq).",
        );
        w.sample(
            "celery_cnc_workers_online",
            &[],
            c.workers_online(now) as f64,
        );
        w.family(
            "celery_cnc_worker_up",
            Kind::Gauge,
            "1 if the worker is online, 0 if offline (kept until offline_worker_ttl).",
        );
        for (host, ws) in &c.workers {
            let up = if ws.alive(now) { 1.0 } else { 0.0 };
            w.sample("celery_cnc_worker_up", &[("worker", host)], up);
        }
        w.family(
            "celery_cnc_worker_tasks_active",
            Kind::Gauge,
            "Tasks executing on the worker, from its last heartbeat.",
        );
        for (host, ws) in &c.workers {
            let a = if ws.alive(now) { ws.active as f64 } else { 0.0 };
            w.sample("celery_cnc_worker_tasks_active", &[("worker", host)], a);
        }
        w.family(
            "celery_cnc_worker_tasks_processed",
            Kind::Gauge,
            "Tasks the worker processed since it started (resets with the worker).",
        );
        for (host, ws) in &c.workers {
            w.sample(
                "celery_cnc_worker_tasks_processed",
                &[("worker", host)],
                ws.processed as f64,
            );
        }
        w.family(
            "celery_cnc_worker_load_average",
            Kind::Gauge,
            "The worker host's load average over 1, 5 and 15 minutes.",
        );
        for (host, ws) in &c.workers {
            if let Some(l) = ws.loadavg {
                for (period, v) in ["1m", "5m", "15m"].iter().zip(l) {
                    w.sample(
                        "celery_cnc_worker_load_average",
                        &[("worker", host), ("period", period)],
                        v,
                    );
                }
            }
        }
        self.render_queues(st, w);
        self.render_self(st, src, w);
    }

    fn render_queues(&self, st: &State, w: &mut TextWriter) {
        let mut apps: Vec<(&String, &Vec<QueueStat>)> = st.queues.iter().collect();
        apps.sort_by(|a, b| a.0.cmp(b.0));
        let esc = |s: &str| crate::text::escape_label(s);
        w.family(
            "celery_cnc_queue_messages",
            Kind::Gauge,
            "Ready messages in the queue (refreshed on an interval).",
        );
        for (app, qs) in &apps {
            let app = esc(app);
            for q in qs.iter() {
                let queue = esc(&q.queue);
                w.sample(
                    "celery_cnc_queue_messages",
                    &[("app", &app), ("queue", &queue)],
                    q.messages as f64,
                );
            }
        }
        w.family(
            "celery_cnc_queue_consumers",
            Kind::Gauge,
            "Consumers attached to the queue (RabbitMQ).",
        );
        for (app, qs) in &apps {
            let app = esc(app);
            for q in qs.iter() {
                if let Some(c) = q.consumers {
                    let queue = esc(&q.queue);
                    w.sample(
                        "celery_cnc_queue_consumers",
                        &[("app", &app), ("queue", &queue)],
                        c as f64,
                    );
                }
            }
        }
        w.family(
            "celery_cnc_queue_workers",
            Kind::Gauge,
            "Workers consuming the queue (from active_queues).",
        );
        for (app, qs) in &apps {
            let app = esc(app);
            for q in qs.iter() {
                if let Some(c) = q.workers {
                    let queue = esc(&q.queue);
                    w.sample(
                        "celery_cnc_queue_workers",
                        &[("app", &app), ("queue", &queue)],
                        c as f64,
                    );
                }
            }
        }
        w.family(
            "celery_cnc_queue_refresh_errors_total",
            Kind::Counter,
            "Failed refreshes of the queue figures.",
        );
        for (app, n) in &st.queue_refresh_errors {
            w.sample(
                "celery_cnc_queue_refresh_errors_total",
                &[("app", app)],
                *n as f64,
            );
        }
        w.family(
            "celery_cnc_queue_refreshed_timestamp_seconds",
            Kind::Gauge,
            "When the queue figures were last refreshed (epoch seconds).",
        );
        for (app, t) in &st.queue_refreshed_at {
            w.sample(
                "celery_cnc_queue_refreshed_timestamp_seconds",
                &[("app", app)],
                *t,
            );
        }
    }

    fn render_self(&self, st: &State, src: &Sources, w: &mut TextWriter) {
        let snaps: Vec<(&Label, cnc_broker::StreamCounters)> =
            src.brokers.iter().map(|(b, s)| (b, s.snapshot())).collect();
        let per_broker: [(&str, &str, CounterOf); 4] = [
            (
                "celery_cnc_broker_messages_received_total",
                "Event messages read from the broker.",
                |c| c.received,
            ),
            (
                "celery_cnc_events_decoded_total",
                "Events decoded from broker messages.",
                |c| c.events,
            ),
            (
                "celery_cnc_events_dropped_total",
                "Events decoded but dropped because ingest was behind.",
                |c| c.dropped,
            ),
            (
                "celery_cnc_broker_reconnects_total",
                "Times the event stream was re-established.",
                |c| c.reconnects,
            ),
        ];
        for (name, help, f) in per_broker {
            w.family(name, Kind::Counter, help);
            for (b, c) in &snaps {
                w.sample(name, &[("broker", b)], f(c) as f64);
            }
        }
        w.family(
            "celery_cnc_decode_errors_total",
            Kind::Counter,
            "Event messages or items that could not be decoded, by reason.",
        );
        for (b, c) in &snaps {
            for (reason, n) in &c.decode_errors {
                let r = crate::text::escape_label(reason);
                w.sample(
                    "celery_cnc_decode_errors_total",
                    &[("broker", b), ("reason", &r)],
                    *n as f64,
                );
            }
        }
        w.family(
            "celery_cnc_events_written_total",
            Kind::Counter,
            "Events in batches written to the store.",
        );
        w.sample(
            "celery_cnc_events_written_total",
            &[],
            st.events_written as f64,
        );
        w.family(
            "celery_cnc_batches_written_total",
            Kind::Counter,
            "Batches written to the store.",
        );
        w.sample("celery_cnc_batches_written_total", &[], st.batches as f64);
        w.family(
            "celery_cnc_batch_write_seconds",
            Kind::Histogram,
            "Time the store took to write one batch, seconds.",
        );
        w.histogram(
            "celery_cnc_batch_write_seconds",
            &[],
            &self.write_le,
            &st.write_seconds,
        );
        if let Some(bus) = &src.bus {
            w.family(
                "celery_cnc_bus_published_total",
                Kind::Counter,
                "Messages published on the event bus.",
            );
            w.sample(
                "celery_cnc_bus_published_total",
                &[],
                bus.published_total() as f64,
            );
            w.family(
                "celery_cnc_bus_lagged_messages_total",
                Kind::Counter,
                "Bus messages missed by lagging subscribers (all of them).",
            );
            w.sample(
                "celery_cnc_bus_lagged_messages_total",
                &[],
                bus.lagged_total() as f64,
            );
        }
        w.family(
            "celery_cnc_exporter_lagged_messages_total",
            Kind::Counter,
            "Bus messages this exporter missed.",
        );
        w.sample(
            "celery_cnc_exporter_lagged_messages_total",
            &[("exporter", "prometheus")],
            st.lagged as f64,
        );
        w.family(
            "celery_cnc_exporter_events_observed_total",
            Kind::Counter,
            "Events this exporter observed.",
        );
        w.sample(
            "celery_cnc_exporter_events_observed_total",
            &[("exporter", "prometheus")],
            st.core.events_observed as f64,
        );
        w.family(
            "celery_cnc_exporter_tasks_tracked",
            Kind::Gauge,
            "Unfinished tasks this exporter remembers (bounded).",
        );
        w.sample(
            "celery_cnc_exporter_tasks_tracked",
            &[("exporter", "prometheus")],
            st.core.tracker.len() as f64,
        );
        w.family(
            "celery_cnc_exporter_tasks_evicted_total",
            Kind::Counter,
            "Unfinished tasks forgotten because the table was full.",
        );
        w.sample(
            "celery_cnc_exporter_tasks_evicted_total",
            &[("exporter", "prometheus")],
            st.core.tracker.evicted as f64,
        );
        if let Some(o) = &src.otel {
            let get = |c: &std::sync::atomic::AtomicU64| {
                c.load(std::sync::atomic::Ordering::Relaxed) as f64
            };
            for (name, help, v) in [
                (
                    "celery_cnc_otel_spans_finished_total",
                    "Task spans finished.",
                    &o.spans_finished,
                ),
                (
                    "celery_cnc_otel_spans_exported_total",
                    "Task spans the OTLP endpoint accepted.",
                    &o.spans_exported,
                ),
                (
                    "celery_cnc_otel_spans_dropped_total",
                    "Task spans dropped (export queue full or export failed).",
                    &o.spans_dropped,
                ),
                (
                    "celery_cnc_otel_spans_evicted_total",
                    "Open spans forgotten because too many tasks were unfinished.",
                    &o.spans_evicted,
                ),
                (
                    "celery_cnc_otel_export_errors_total",
                    "Failed OTLP export requests.",
                    &o.export_errors,
                ),
            ] {
                w.family(name, Kind::Counter, help);
                w.sample(name, &[], get(v));
            }
        }
        if let Some(status) = &src.status {
            let all = status.all();
            w.family(
                "celery_cnc_component_up",
                Kind::Gauge,
                "1 if the component is running.",
            );
            for s in &all {
                let n = crate::text::escape_label(&s.name);
                let up = if s.state == ComponentState::Up {
                    1.0
                } else {
                    0.0
                };
                w.sample("celery_cnc_component_up", &[("component", &n)], up);
            }
            w.family(
                "celery_cnc_component_restarts_total",
                Kind::Counter,
                "Restarts of the component after a crash.",
            );
            for s in &all {
                let n = crate::text::escape_label(&s.name);
                w.sample(
                    "celery_cnc_component_restarts_total",
                    &[("component", &n)],
                    s.restarts as f64,
                );
            }
        }
    }

    fn render_flower(&self, st: &mut State, w: &mut TextWriter) {
        let scratch = &mut st.scratch;
        let text = &mut st.text;
        let f = &mut st.flower;
        fn events(
            (worker, kind, task): &(Label, Label, Label),
        ) -> impl FnMut(&(u64, f64), usize, &mut String) + '_ {
            move |(n, created), part, out| {
                let labels = [("worker", &**worker), ("type", &**kind), ("task", &**task)];
                if part == 0 {
                    sample_into(out, "flower_events_total", &labels, *n as f64);
                } else {
                    sample_into(out, "flower_events_created", &labels, *created);
                }
            }
        }
        w.family("flower_events_total", Kind::Counter, "Number of events");
        for (k, v) in &mut f.events {
            w.chunk(v.part(0, text, events(k)));
        }
        w.family("flower_events_created", Kind::Gauge, "Number of events");
        for (k, v) in &mut f.events {
            w.chunk(v.part(1, text, events(k)));
        }
        w.family(
            "flower_task_runtime_seconds",
            Kind::Histogram,
            "Task runtime",
        );
        for ((worker, task), h) in &mut f.runtime {
            w.chunk(h.part(0, text, |h, _, out| {
                histogram_into(
                    out,
                    &self.hist.flower_runtime,
                    &[("worker", worker), ("task", task)],
                    h,
                    scratch,
                );
            }));
        }
        w.family(
            "flower_task_prefetch_time_seconds",
            Kind::Gauge,
            "The time the task spent waiting at the celery worker to be executed.",
        );
        for ((worker, task), v) in &mut f.prefetch_time {
            w.chunk(v.part(0, text, |v, _, out| {
                sample_into(
                    out,
                    "flower_task_prefetch_time_seconds",
                    &[("worker", worker), ("task", task)],
                    *v,
                );
            }));
        }
        w.family(
            "flower_worker_prefetched_tasks",
            Kind::Gauge,
            "Number of tasks of given type prefetched at a worker",
        );
        for ((worker, task), v) in &mut f.prefetched {
            w.chunk(v.part(0, text, |v, _, out| {
                sample_into(
                    out,
                    "flower_worker_prefetched_tasks",
                    &[("worker", worker), ("task", task)],
                    *v,
                );
            }));
        }
        w.family("flower_worker_online", Kind::Gauge, "Worker online status");
        for (worker, v) in &f.online {
            w.sample("flower_worker_online", &[("worker", worker)], *v);
        }
        w.family(
            "flower_worker_number_of_currently_executing_tasks",
            Kind::Gauge,
            "Number of tasks currently executing at a worker",
        );
        for (worker, v) in &f.executing {
            w.sample(
                "flower_worker_number_of_currently_executing_tasks",
                &[("worker", worker)],
                *v,
            );
        }
    }

    fn render_ce(&self, st: &mut State, now: Timestamp, w: &mut TextWriter) {
        let scratch = &mut st.scratch;
        let text = &mut st.text;
        let ce = &mut st.ce;
        for (i, (name, help)) in CE_KINDS.iter().enumerate() {
            w.family(name, Kind::Counter, help);
            for ((task, host, queue), c) in &mut ce.tasks {
                w.chunk(c.part(i, text, |c, part, out| {
                    if c.present[part] {
                        sample_into(
                            out,
                            CE_KINDS[part].0,
                            &[("name", task), ("hostname", host), ("queue_name", queue)],
                            c.counts[part] as f64,
                        );
                    }
                }));
            }
            if i == 3 {
                w.family(
                    "celery_task_failed_total",
                    Kind::Counter,
                    "Sent if the execution of the task failed.",
                );
                for ((task, host, exc, queue), n) in &mut ce.failed {
                    w.chunk(n.part(0, text, |n, _, out| {
                        sample_into(
                            out,
                            "celery_task_failed_total",
                            &[
                                ("name", task),
                                ("hostname", host),
                                ("exception", exc),
                                ("queue_name", queue),
                            ],
                            *n as f64,
                        );
                    }));
                }
            }
        }
        w.family(
            "celery_task_runtime",
            Kind::Histogram,
            "Histogram of task runtime measurements.",
        );
        for ((task, host, queue), h) in &mut ce.runtime {
            w.chunk(h.part(0, text, |h, _, out| {
                histogram_into(
                    out,
                    &self.hist.ce_runtime,
                    &[("name", task), ("hostname", host), ("queue_name", queue)],
                    h,
                    scratch,
                );
            }));
        }
        w.family(
            "celery_task_queue_wait_time",
            Kind::Histogram,
            "Histogram of the time tasks spend waiting in the queue before being executed, excluding deliberate ETA/countdown delay.",
        );
        for ((task, host, queue), h) in &mut ce.queue_wait {
            w.chunk(h.part(0, text, |h, _, out| {
                histogram_into(
                    out,
                    &self.hist.ce_queue_wait,
                    &[("name", task), ("hostname", host), ("queue_name", queue)],
                    h,
                    scratch,
                );
            }));
        }
        let ce = &st.ce;
        // A worker silent past 2 x freq is down, as celery-exporter's timeout.
        let mut alive_hosts: HashMap<&str, bool> = HashMap::new();
        for (node, ws) in &st.core.workers {
            let e = alive_hosts.entry(host_of(node)).or_default();
            *e |= ws.alive(now);
        }
        w.family(
            "celery_worker_up",
            Kind::Gauge,
            "Indicates if a worker has recently sent a heartbeat.",
        );
        for (host, v) in &ce.worker_up {
            let up = match alive_hosts.get(&**host) {
                Some(false) => 0.0,
                _ => *v,
            };
            w.sample("celery_worker_up", &[("hostname", host)], up);
        }
        w.family(
            "celery_worker_tasks_active",
            Kind::Gauge,
            "The number of tasks the worker is currently processing",
        );
        for (host, v) in &ce.worker_active {
            let a = match alive_hosts.get(&**host) {
                Some(false) => 0.0,
                _ => *v,
            };
            w.sample("celery_worker_tasks_active", &[("hostname", host)], a);
        }
        let qs: Vec<&QueueStat> = st.queues.values().flatten().collect();
        let esc = |s: &str| crate::text::escape_label(s);
        w.family(
            "celery_queue_length",
            Kind::Gauge,
            "The number of message in broker queue.",
        );
        for q in &qs {
            w.sample(
                "celery_queue_length",
                &[("queue_name", &esc(&q.queue))],
                q.messages as f64,
            );
        }
        w.family(
            "celery_active_consumer_count",
            Kind::Gauge,
            "The number of active consumer in broker queue.",
        );
        for q in &qs {
            if let Some(c) = q.consumers {
                w.sample(
                    "celery_active_consumer_count",
                    &[("queue_name", &esc(&q.queue))],
                    c as f64,
                );
            }
        }
        w.family(
            "celery_active_worker_count",
            Kind::Gauge,
            "The number of active workers in broker queue.",
        );
        for q in &qs {
            w.sample(
                "celery_active_worker_count",
                &[("queue_name", &esc(&q.queue))],
                q.workers.unwrap_or(0) as f64,
            );
        }
        w.family(
            "celery_active_process_count",
            Kind::Gauge,
            "The number of active processes in broker queue.",
        );
        for q in &qs {
            w.sample(
                "celery_active_process_count",
                &[("queue_name", &esc(&q.queue))],
                q.processes.unwrap_or(0) as f64,
            );
        }
    }

    /// Unfinished tasks in `state` named `name` (for tests).
    pub fn in_progress(&self, name: &str, state: TaskState) -> i64 {
        let mut st = self.state.lock();
        let l = st.core.labels.get(name);
        st.core.in_progress.get(&(l, state)).map_or(0, |v| **v)
    }
}

impl Exporter for PrometheusExporter {
    fn name(&self) -> &str {
        "prometheus"
    }

    fn observe(&self, event: &Event) {
        self.observe_at(event, cnc_model::now());
    }

    fn observe_batch(&self, batch: &WrittenBatch) {
        {
            let mut st = self.state.lock();
            st.batches += 1;
            st.events_written += batch.events.len() as u64;
            st.write_seconds
                .observe(&WRITE_BUCKETS, batch.write_seconds.max(0.0));
        }
        let now = cnc_model::now();
        for e in &batch.events {
            self.observe_at(e, now);
        }
    }

    fn lagged(&self, n: u64) {
        self.state.lock().lagged += n;
    }
}
