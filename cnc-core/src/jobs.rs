//! Periodic jobs around ingest, each a supervised component:
//!
//! * [`StoreComponent`] (`store`): retention cleanup on a schedule, and it
//!   closes the store last at shutdown;
//! * [`WorkersComponent`] (`workers`): worker detail (inspect stats,
//!   active_queues, registered with each task's queue and rate limit,
//!   conf) when a worker comes online and periodically; `worker-lost` for
//!   workers silent for 2 × their heartbeat interval; pruning of long-gone
//!   workers; the lost-event estimate per worker;
//! * [`RepairComponent`] (`repair`): tasks stuck in a non-final state past a
//!   threshold are reconciled from the result backend.
//!
//! Every store write of task or worker *events* goes through the ingest
//! channel (single writer); the jobs only send events into it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cnc_broker::protocol::control::parse_registered;
use cnc_broker::{AppConnection, Target, TaskResult};
use cnc_model::bus::{BusMessage, EventBus};
use cnc_model::component::{
    CancellationToken, Component, ComponentError, ComponentInfo, ComponentResult, Context,
};
use cnc_model::config::{DatabaseConfig, IngestConfig};
use cnc_model::{
    DbController, Event, TaskEvent, TaskEventKind, TaskFilter, TaskQuery, TaskState, TimeRange,
    WorkerEventKind,
};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

const STORE: &str = "celery_cnc::store";
const WORKERS: &str = "celery_cnc::workers";
const REPAIR: &str = "celery_cnc::repair";

/// Retention cleanup; closes the store at shutdown.
pub struct StoreComponent {
    cfg: DatabaseConfig,
    store: Option<Arc<dyn DbController>>,
    bus: Option<EventBus>,
}

impl StoreComponent {
    /// For the store the orchestrator opened.
    pub fn new(cfg: DatabaseConfig) -> Self {
        Self {
            cfg,
            store: None,
            bus: None,
        }
    }
}

#[async_trait]
impl Component for StoreComponent {
    fn name(&self) -> &str {
        "store"
    }

    async fn build(&mut self, ctx: &Context) -> ComponentResult<()> {
        self.store = Some(ctx.store.clone());
        self.bus = Some(ctx.bus.clone());
        Ok(())
    }

    async fn run(&mut self, shutdown: CancellationToken) -> ComponentResult<()> {
        let Some(store) = self.store.clone() else {
            return Err(ComponentError::fatal("store component run before build"));
        };
        let Some(keep) = self.cfg.retention else {
            shutdown.cancelled().await;
            return Ok(());
        };
        let mut tick = tokio::time::interval(self.cfg.cleanup_interval.max(Duration::from_secs(1)));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let cutoff = cnc_model::now() - keep.as_secs_f64();
            match store.cleanup(cutoff).await {
                Ok(r) => {
                    if r.tasks + r.events + r.worker_history > 0 {
                        tracing::info!(
                            target: STORE,
                            tasks = r.tasks,
                            events = r.events,
                            worker_history = r.worker_history,
                            "retention cleanup"
                        );
                        if let Some(bus) = &self.bus {
                            bus.publish(BusMessage::Resync);
                        }
                    }
                }
                Err(e) => tracing::warn!(target: STORE, error = %e, "retention cleanup failed"),
            }
        }
    }

    fn info(&self) -> ComponentInfo {
        let store_info = self.store.as_ref().map(|s| s.info());
        ComponentInfo {
            config: json!({
                "backend": store_info.as_ref().map(|i| i.backend.clone()),
                "location": store_info.as_ref().map(|i| i.location.clone()),
                "retention_s": self.cfg.retention.map(|d| d.as_secs()),
                "cleanup_interval_s": self.cfg.cleanup_interval.as_secs(),
            }),
            links: Vec::new(),
        }
    }
}

/// Per-worker estimate of lost task events.
///
/// A worker's heartbeat carries `processed`: tasks it accepted since it
/// started (Celery's `all_total_count`). Each accepted task also sends one
/// `task-started` event. From the first heartbeat we see on, the growth of
/// `processed` minus the `task-started` events we received from that worker
/// is what we lost (events dropped by the broker, a slow subscriber, or a
/// worker with task events off). Reset when the worker restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LossEstimate {
    /// `processed` at the first heartbeat seen (the baseline).
    pub baseline_processed: u64,
    /// `processed` at the latest heartbeat.
    pub processed: u64,
    /// `task-started` events received since the baseline.
    pub started_seen: u64,
    /// Estimated lost `task-started` events (never negative).
    pub lost: u64,
}

/// Lost-event estimates for every worker, updated from the bus.
#[derive(Debug, Clone, Default)]
pub struct LossTracker {
    inner: Arc<Mutex<HashMap<String, LossEstimate>>>,
}

impl LossTracker {
    /// Fold one event in.
    pub fn observe(&self, event: &Event) {
        let mut map = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        match event {
            Event::Task(t) if t.kind == TaskEventKind::Started => {
                if let Some(h) = &t.hostname
                    && let Some(e) = map.get_mut(h)
                {
                    e.started_seen += 1;
                    e.lost = (e.processed - e.baseline_processed).saturating_sub(e.started_seen);
                }
            }
            Event::Worker(w) => match w.kind {
                WorkerEventKind::Online => {
                    map.remove(&w.hostname);
                }
                WorkerEventKind::Heartbeat => {
                    let Some(processed) = w.processed else {
                        return;
                    };
                    let e = map.entry(w.hostname.clone()).or_insert(LossEstimate {
                        baseline_processed: processed,
                        processed,
                        started_seen: 0,
                        lost: 0,
                    });
                    if processed < e.processed {
                        // Restarted without a worker-online we saw.
                        *e = LossEstimate {
                            baseline_processed: processed,
                            processed,
                            ..LossEstimate::default()
                        };
                    }
                    e.processed = processed;
                    e.lost = (e.processed - e.baseline_processed).saturating_sub(e.started_seen);
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// The estimate for every worker seen.
    pub fn snapshot(&self) -> BTreeMap<String, LossEstimate> {
        let map = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Worker detail, liveness and pruning.
pub struct WorkersComponent {
    cfg: IngestConfig,
    apps: Vec<AppConnection>,
    tx: mpsc::Sender<Event>,
    losses: LossTracker,
    store: Option<Arc<dyn DbController>>,
    bus: Option<EventBus>,
}

impl WorkersComponent {
    /// Over the connected `apps`; synthetic events go into `tx`.
    pub fn new(
        cfg: IngestConfig,
        apps: Vec<AppConnection>,
        tx: mpsc::Sender<Event>,
        losses: LossTracker,
    ) -> Self {
        Self {
            cfg,
            apps,
            tx,
            losses,
            store: None,
            bus: None,
        }
    }

    /// One connection per unique broker (apps may share one).
    fn brokers(&self) -> Vec<&AppConnection> {
        let mut seen: Vec<&AppConnection> = Vec::new();
        for app in &self.apps {
            if !seen.iter().any(|a| Arc::ptr_eq(&a.broker, &app.broker)) {
                seen.push(app);
            }
        }
        seen
    }

    /// Inspect `target` on every broker and store what each worker said.
    async fn refresh(&self, target: &Target) -> usize {
        let (Some(store), Some(bus)) = (&self.store, &self.bus) else {
            return 0;
        };
        let losses = self.losses.snapshot();
        let mut refreshed = 0;
        for app in self.brokers() {
            let control = app.control.clone().with_timeout(self.cfg.inspect_timeout);
            let (stats, queues, registered, conf) = tokio::join!(
                control.stats(target),
                control.active_queues(target),
                control.registered(
                    target,
                    &["queue", "rate_limit", "time_limit", "soft_time_limit"]
                ),
                control.conf(target, false),
            );
            let mut per_worker: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
            let mut put =
                |key: &str, replies: Result<Vec<cnc_broker::WorkerReply>, _>| match replies {
                    Ok(replies) => {
                        for r in replies {
                            let value = if key == "registered" {
                                match parse_registered(&r.payload) {
                                    Ok(tasks) => Value::Array(
                                        tasks
                                            .into_iter()
                                            .map(|t| {
                                                let attrs: serde_json::Map<String, Value> = t
                                                    .attributes
                                                    .into_iter()
                                                    .map(|(k, v)| (k, Value::String(v)))
                                                    .collect();
                                                json!({ "name": t.name, "attributes": attrs })
                                            })
                                            .collect(),
                                    ),
                                    Err(_) => r.payload,
                                }
                            } else {
                                r.payload
                            };
                            per_worker
                                .entry(r.hostname)
                                .or_default()
                                .insert(key.to_owned(), value);
                        }
                    }
                    Err(e) => {
                        let e: cnc_broker::BrokerError = e;
                        tracing::warn!(
                            target: WORKERS,
                            broker = %app.broker_url,
                            call = key,
                            error = %e,
                            "inspect failed"
                        );
                    }
                };
            put("stats", stats);
            put("active_queues", queues);
            put("registered", registered);
            put("conf", conf);
            let app_names: Vec<&str> = self
                .apps
                .iter()
                .filter(|a| Arc::ptr_eq(&a.broker, &app.broker))
                .map(|a| a.name.as_str())
                .collect();
            for (hostname, mut info) in per_worker {
                info.insert("apps".into(), json!(app_names));
                info.insert("broker".into(), json!(app.broker_url));
                if let Some(l) = losses.get(&hostname) {
                    info.insert("lost_events".into(), json!(l));
                }
                match store
                    .set_worker_info(&hostname, Value::Object(info), cnc_model::now())
                    .await
                {
                    Ok(()) => {
                        refreshed += 1;
                        bus.publish(BusMessage::WorkerInfo { hostname });
                    }
                    Err(e) => {
                        tracing::warn!(target: WORKERS, worker = %hostname, error = %e, "storing worker detail failed")
                    }
                }
            }
        }
        refreshed
    }

    /// Record `worker-lost` for silent workers; prune long-gone ones.
    async fn liveness(&self) {
        let Some(store) = &self.store else { return };
        let now = cnc_model::now();
        match store.workers().await {
            Ok(workers) => {
                for lost in cnc_model::fold::expired_workers(&workers, now) {
                    tracing::warn!(
                        target: WORKERS,
                        worker = %lost.hostname,
                        "worker lost: no heartbeat for 2 x its interval"
                    );
                    if self.tx.send(Event::Worker(lost)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(target: WORKERS, error = %e, "reading workers failed"),
        }
        if let Some(after) = self.cfg.prune_offline_workers_after {
            match store.prune_workers(now - after.as_secs_f64()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(target: WORKERS, workers = n, "pruned offline workers"),
                Err(e) => tracing::warn!(target: WORKERS, error = %e, "pruning workers failed"),
            }
        }
    }
}

#[async_trait]
impl Component for WorkersComponent {
    fn name(&self) -> &str {
        "workers"
    }

    async fn build(&mut self, ctx: &Context) -> ComponentResult<()> {
        self.store = Some(ctx.store.clone());
        self.bus = Some(ctx.bus.clone());
        Ok(())
    }

    async fn run(&mut self, shutdown: CancellationToken) -> ComponentResult<()> {
        let Some(bus) = self.bus.clone() else {
            return Err(ComponentError::fatal("workers component run before build"));
        };
        let mut rx = bus.subscribe();
        let mut refresh = tokio::time::interval(self.cfg.worker_refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut liveness = tokio::time::interval(Duration::from_secs(2));
        liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                msg = rx.recv() => match msg {
                    Ok(BusMessage::Batch(batch)) => {
                        let mut online = Vec::new();
                        for e in &batch.events {
                            self.losses.observe(e);
                            if let Event::Worker(w) = e
                                && w.kind == WorkerEventKind::Online
                                && !online.contains(&w.hostname)
                            {
                                online.push(w.hostname.clone());
                            }
                        }
                        if !online.is_empty() {
                            let n = self.refresh(&Target::Nodes(online.clone())).await;
                            tracing::info!(target: WORKERS, workers = ?online, refreshed = n, "worker online: detail refreshed");
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => bus.note_lag(n),
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
                _ = refresh.tick() => {
                    let n = self.refresh(&Target::All).await;
                    tracing::debug!(target: WORKERS, refreshed = n, "worker detail refreshed");
                }
                _ = liveness.tick() => self.liveness().await,
            }
        }
    }

    fn info(&self) -> ComponentInfo {
        ComponentInfo {
            config: json!({
                "refresh_interval_s": self.cfg.worker_refresh_interval.as_secs(),
                "prune_offline_after_s": self.cfg.prune_offline_workers_after.map(|d| d.as_secs()),
                "lost_events": self.losses.snapshot(),
            }),
            links: Vec::new(),
        }
    }
}

/// Reconciles stuck tasks from result backends.
pub struct RepairComponent {
    after: Duration,
    interval: Duration,
    apps: Vec<AppConnection>,
    tx: mpsc::Sender<Event>,
    store: Option<Arc<dyn DbController>>,
    checked: HashMap<String, f64>,
    repaired_total: u64,
}

impl RepairComponent {
    /// Tasks unfinished for longer than `after` are checked every
    /// `interval` against the backends of `apps`.
    pub fn new(
        after: Duration,
        interval: Duration,
        apps: Vec<AppConnection>,
        tx: mpsc::Sender<Event>,
    ) -> Self {
        Self {
            after,
            interval,
            apps,
            tx,
            store: None,
            checked: HashMap::new(),
            repaired_total: 0,
        }
    }

    /// One pass; returns how many tasks were repaired.
    pub async fn pass(&mut self) -> usize {
        let Some(store) = self.store.clone() else {
            return 0;
        };
        let now = cnc_model::now();
        let threshold = now - self.after.as_secs_f64();
        self.checked.retain(|_, at| *at > threshold);
        let mut query = TaskQuery::newest(
            TaskFilter {
                states: vec![
                    TaskState::Pending,
                    TaskState::Received,
                    TaskState::Started,
                    TaskState::Retry,
                ],
                time: Some(TimeRange {
                    from: None,
                    to: Some(threshold),
                }),
                ..TaskFilter::default()
            },
            500,
        );
        let mut repaired = 0;
        let mut looked = 0;
        'pages: loop {
            let page = match store.tasks(&query).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(target: REPAIR, error = %e, "listing stuck tasks failed");
                    break;
                }
            };
            for task in &page.tasks {
                if task.updated_at > threshold || self.checked.contains_key(&task.id) {
                    continue;
                }
                looked += 1;
                self.checked.insert(task.id.clone(), now);
                for app in &self.apps {
                    let Some(backend) = &app.backend else {
                        continue;
                    };
                    match backend.get(&task.id).await {
                        Ok(Some(result)) => {
                            if let Some(event) = event_from_result(&result, now) {
                                tracing::info!(
                                    target: REPAIR,
                                    task = %task.id,
                                    was = task.state.as_str(),
                                    now = %result.status,
                                    app = %app.name,
                                    "repaired a stuck task from the result backend"
                                );
                                if self.tx.send(Event::Task(event)).await.is_err() {
                                    break 'pages;
                                }
                                repaired += 1;
                            }
                            break;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(target: REPAIR, app = %app.name, error = %e, "reading the result backend failed")
                        }
                    }
                }
                if looked >= 2000 {
                    break 'pages;
                }
            }
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        self.repaired_total += repaired as u64;
        repaired
    }
}

/// The event a final backend result stands for; `None` for non-final
/// statuses (PENDING, STARTED, RETRY).
pub fn event_from_result(r: &TaskResult, now: f64) -> Option<TaskEvent> {
    let kind = match r.status.as_str() {
        "SUCCESS" => TaskEventKind::Succeeded,
        "FAILURE" => TaskEventKind::Failed,
        "REVOKED" => TaskEventKind::Revoked,
        _ => return None,
    };
    let at = r
        .date_done
        .as_deref()
        .and_then(cnc_broker::protocol::task::parse_iso)
        .map(|t| t.timestamp_micros() as f64 / 1e6)
        .unwrap_or(now);
    let mut e = TaskEvent::new(kind.clone(), r.task_id.clone(), at);
    match kind {
        TaskEventKind::Succeeded => {
            e.result = Some(r.result.to_string());
        }
        TaskEventKind::Failed => {
            e.exception = Some(exception_text(&r.result));
            e.traceback = r.traceback.clone();
        }
        _ => {}
    }
    e.name = r.name.clone();
    e.extra
        .insert("cnc_repaired_from".into(), json!("result_backend"));
    Some(e)
}

/// `ValueError('boom')` from Celery's JSON exception object.
fn exception_text(v: &Value) -> String {
    let ty = v.get("exc_type").and_then(Value::as_str);
    let msg = v.get("exc_message");
    match (ty, msg) {
        (Some(ty), Some(Value::Array(parts))) => {
            let parts: Vec<String> = parts
                .iter()
                .map(|p| match p {
                    Value::String(s) => format!("{s:?}").replace('"', "'"),
                    other => other.to_string(),
                })
                .collect();
            format!("{ty}({})", parts.join(", "))
        }
        (Some(ty), Some(Value::String(s))) => format!("{ty}('{s}')"),
        (Some(ty), _) => format!("{ty}()"),
        _ => v.to_string(),
    }
}

#[async_trait]
impl Component for RepairComponent {
    fn name(&self) -> &str {
        "repair"
    }

    async fn build(&mut self, ctx: &Context) -> ComponentResult<()> {
        self.store = Some(ctx.store.clone());
        Ok(())
    }

    async fn run(&mut self, shutdown: CancellationToken) -> ComponentResult<()> {
        let mut tick = tokio::time::interval(self.interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    let n = self.pass().await;
                    if n > 0 {
                        tracing::info!(target: REPAIR, repaired = n, "repair pass");
                    }
                }
            }
        }
    }

    fn info(&self) -> ComponentInfo {
        ComponentInfo {
            config: json!({
                "after_s": self.after.as_secs(),
                "interval_s": self.interval.as_secs(),
                "backends": self.apps.iter().filter(|a| a.backend.is_some()).map(|a| a.name.clone()).collect::<Vec<_>>(),
                "repaired_total": self.repaired_total,
            }),
            links: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnc_model::WorkerEvent;

    fn hb(host: &str, processed: u64) -> Event {
        let mut w = WorkerEvent::new(WorkerEventKind::Heartbeat, host, 1.0);
        w.processed = Some(processed);
        Event::Worker(w)
    }

    fn started(host: &str) -> Event {
        Event::Task(TaskEvent::new(TaskEventKind::Started, "t", 1.0).with_hostname(host))
    }

    #[test]
    fn loss_estimate_counts_started_events_against_heartbeats() {
        let t = LossTracker::default();
        t.observe(&hb("w1", 10));
        t.observe(&started("w1"));
        t.observe(&started("w1"));
        t.observe(&hb("w1", 15));
        let s = t.snapshot();
        assert_eq!(s["w1"].lost, 3, "5 accepted, 2 seen");
        // Restart: processed goes back down.
        t.observe(&hb("w1", 1));
        assert_eq!(t.snapshot()["w1"].lost, 0);
        // A worker-online resets too.
        t.observe(&Event::Worker(WorkerEvent::new(
            WorkerEventKind::Online,
            "w1",
            2.0,
        )));
        assert!(!t.snapshot().contains_key("w1"));
    }

    #[test]
    fn backend_results_become_final_events() {
        let r = TaskResult {
            task_id: "abc".into(),
            status: "FAILURE".into(),
            result: json!({"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"}),
            traceback: Some("Traceback ...".into()),
            date_done: Some("2026-11-22T08:00:00.500000+00:00".into()),
            name: None,
            raw: Value::Null,
        };
        let e = event_from_result(&r, 5.0).expect("final");
        assert_eq!(e.kind, TaskEventKind::Failed);
        assert_eq!(e.exception.as_deref(), Some("ValueError('boom')"));
        assert!(
            (e.timestamp - 1_795_334_400.5).abs() < 1e-3,
            "{}",
            e.timestamp
        );
        let pending = TaskResult {
            status: "STARTED".into(),
            ..r
        };
        assert!(event_from_result(&pending, 5.0).is_none());
    }
}
