//! The `celery_cnc_*` task and worker aggregates, shared by both exporters
//! (Prometheus renders them as text, OpenTelemetry as OTLP metrics).

use cnc_model::{
    Event, TaskEvent, TaskEventKind, TaskState, Timestamp, WorkerEvent, WorkerEventKind,
};

use crate::text::{Cached, Histogram};
use crate::track::{Interner, Label, LabelMap, NamePolicy, TaskInfo, Tracker, Update};

/// Buckets of queue wait times, seconds (celery-exporter's defaults).
pub(crate) const QUEUE_WAIT_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Buckets of batch write latency, seconds.
pub(crate) const WRITE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Label of an unknown queue.
pub(crate) const UNKNOWN: &str = "unknown";

/// What we know about one worker.
#[derive(Debug, Clone)]
pub(crate) struct WorkerStat {
    /// Said online (online/heartbeat) and not offline/lost since.
    pub online: bool,
    /// Local time of its last event.
    pub last_seen: Timestamp,
    /// Heartbeat interval.
    pub freq: f64,
    /// Tasks executing, from the last heartbeat.
    pub active: u64,
    /// Tasks processed since it started.
    pub processed: u64,
    /// 1/5/15-minute load averages.
    pub loadavg: Option<[f64; 3]>,
}

impl WorkerStat {
    /// Alive at `now`: online and heard from within `2 x freq` (plus slack
    /// for batching).
    pub(crate) fn alive(&self, now: Timestamp) -> bool {
        self.online && now - self.last_seen <= (2.0 * self.freq).max(2.0) + 5.0
    }
}

/// The `celery_cnc_*` aggregates of tasks and workers.
#[derive(Debug)]
pub(crate) struct CoreAggregates {
    pub names: NamePolicy,
    pub labels: Interner,
    pub tracker: Tracker,
    pub runtime_bounds: Vec<f64>,
    /// Tasks that entered each state, by (name, state).
    pub tasks_total: LabelMap<(Label, TaskState), Cached<u64>>,
    /// Unfinished tasks by (name, state).
    pub in_progress: LabelMap<(Label, TaskState), Cached<i64>>,
    /// Runtime of succeeded tasks by name.
    pub runtime: LabelMap<Label, Cached<Histogram>>,
    /// Queue wait (sent, else received, to started) by (name, queue).
    pub queue_wait: LabelMap<(Label, Label), Cached<Histogram>>,
    /// Workers by escaped hostname.
    pub workers: LabelMap<Label, WorkerStat>,
    /// Events observed.
    pub events_observed: u64,
    scratch: Vec<TaskInfo>,
}

impl CoreAggregates {
    pub(crate) fn new(runtime_bounds: Vec<f64>, allow: Option<&[String]>, capacity: usize) -> Self {
        Self {
            names: NamePolicy::new(allow),
            labels: Interner::default(),
            tracker: Tracker::new(capacity),
            runtime_bounds,
            tasks_total: LabelMap::default(),
            in_progress: LabelMap::default(),
            runtime: LabelMap::default(),
            queue_wait: LabelMap::default(),
            workers: LabelMap::default(),
            events_observed: 0,
            scratch: Vec::new(),
        }
    }

    /// The label of a task's name (allow-list applied; `unknown` when the
    /// name was never seen).
    pub(crate) fn name_label(&mut self, name: Option<&str>) -> Label {
        let raw = name.map_or(UNKNOWN, |n| self.names.label(n));
        self.labels.get(raw)
    }

    /// Fold one event in. Returns the tracker's view of a task event so
    /// callers can update their own families.
    pub(crate) fn observe(&mut self, event: &Event, now: Timestamp) -> Option<Update> {
        self.events_observed += 1;
        match event {
            Event::Task(e) => Some(self.observe_task(e)),
            Event::Worker(w) => {
                self.worker_event(w, now);
                None
            }
            Event::Unknown(_) => None,
        }
    }

    /// Fold one task event in.
    pub(crate) fn observe_task(&mut self, e: &TaskEvent) -> Update {
        let mut evicted = std::mem::take(&mut self.scratch);
        let u = self.tracker.update(e, &mut evicted);
        for gone in evicted.drain(..) {
            if let (Some(s), Some(counted)) = (gone.state, gone.counted_as) {
                self.bump_in_progress(counted, s, -1);
            }
        }
        self.scratch = evicted;
        if u.late {
            return u;
        }
        let name = self.name_label(u.info.name.as_deref());
        if u.moved {
            if let Some(s) = u.info.state {
                *self
                    .tasks_total
                    .entry((name.clone(), s))
                    .or_default()
                    .get_mut() += 1;
                // Undo under the label the previous state was counted
                // with: the name may have become known since.
                if let (Some(p), Some(counted)) = (u.prev, u.info.counted_as.clone()) {
                    if !p.is_ready() {
                        self.bump_in_progress(counted, p, -1);
                    }
                }
                if !s.is_ready() {
                    self.bump_in_progress(name.clone(), s, 1);
                    self.tracker.set_counted_as(&e.uuid, name.clone());
                }
            }
        }
        match e.kind {
            TaskEventKind::Succeeded => {
                if let Some(rt) = e.runtime {
                    let b = &self.runtime_bounds;
                    self.runtime
                        .entry(name)
                        .or_insert_with(|| Cached::new(Histogram::new(b.len())))
                        .get_mut()
                        .observe(b, rt);
                }
            }
            TaskEventKind::Started => {
                if let Some(wait) = queue_wait(&u.info) {
                    let queue = self.labels.get(u.info.queue.as_deref().unwrap_or(UNKNOWN));
                    self.queue_wait
                        .entry((name, queue))
                        .or_insert_with(|| Cached::new(Histogram::new(QUEUE_WAIT_BUCKETS.len())))
                        .get_mut()
                        .observe(&QUEUE_WAIT_BUCKETS, wait);
                }
            }
            _ => {}
        }
        u
    }

    fn bump_in_progress(&mut self, name: Label, s: TaskState, by: i64) {
        let c = self.in_progress.entry((name, s)).or_default();
        let v = (**c + by).max(0);
        c.set(v);
    }

    fn worker_event(&mut self, w: &WorkerEvent, now: Timestamp) {
        let host = self.labels.get(&w.hostname);
        let st = self.workers.entry(host).or_insert_with(|| WorkerStat {
            online: false,
            last_seen: now,
            freq: 2.0,
            active: 0,
            processed: 0,
            loadavg: None,
        });
        st.last_seen = now;
        if let Some(f) = w.freq.filter(|f| f.is_finite() && *f > 0.0) {
            st.freq = f;
        }
        match w.kind {
            WorkerEventKind::Online | WorkerEventKind::Heartbeat => st.online = true,
            WorkerEventKind::Offline | WorkerEventKind::Lost => {
                st.online = false;
                st.active = 0;
            }
        }
        if let Some(a) = w.active {
            st.active = a;
        }
        if let Some(p) = w.processed {
            st.processed = p;
        }
        if let Some(l) = &w.loadavg {
            if l.len() == 3 {
                st.loadavg = Some([l[0], l[1], l[2]]);
            }
        }
    }

    /// Remove workers offline (or silent) for longer than `ttl` seconds;
    /// returns their labels so other families drop them too.
    pub(crate) fn prune_workers(&mut self, now: Timestamp, ttl: f64) -> Vec<Label> {
        let gone: Vec<Label> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.alive(now) && now - w.last_seen > ttl)
            .map(|(k, _)| k.clone())
            .collect();
        for g in &gone {
            self.workers.remove(g);
        }
        gone
    }

    /// Workers alive now.
    pub(crate) fn workers_online(&self, now: Timestamp) -> usize {
        self.workers.values().filter(|w| w.alive(now)).count()
    }
}

/// Seconds from sent (else received) to started, excluding tasks with an
/// ETA (their wait is deliberate). Never negative (clock skew).
pub(crate) fn queue_wait(t: &TaskInfo) -> Option<f64> {
    if t.eta.is_some() {
        return None;
    }
    let started = t.started?;
    let from = t.sent.or(t.received)?;
    Some((started - from).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_runtime_and_wait() {
        let mut c = CoreAggregates::new(vec![0.1, 1.0], None, 100);
        let mut s = TaskEvent::new(TaskEventKind::Sent, "a", 10.0).with_hostname("gen1@c");
        s.name = Some("t.add".into());
        s.queue = Some("celery".into());
        c.observe(&Event::Task(s), 0.0);
        c.observe(
            &Event::Task(TaskEvent::new(TaskEventKind::Received, "a", 11.0).with_hostname("w@h")),
            0.0,
        );
        let name = c.labels.get("t.add");
        assert_eq!(*c.in_progress[&(name.clone(), TaskState::Received)], 1);
        c.observe(
            &Event::Task(TaskEvent::new(TaskEventKind::Started, "a", 12.5).with_hostname("w@h")),
            0.0,
        );
        let mut done = TaskEvent::new(TaskEventKind::Succeeded, "a", 13.0).with_hostname("w@h");
        done.runtime = Some(0.5);
        c.observe(&Event::Task(done), 0.0);
        assert_eq!(*c.tasks_total[&(name.clone(), TaskState::Success)], 1);
        assert_eq!(*c.in_progress[&(name.clone(), TaskState::Started)], 0);
        assert_eq!(c.runtime[&name].count, 1);
        let q = c.labels.get("celery");
        let w = &c.queue_wait[&(name, q)];
        assert_eq!(w.count, 1);
        assert!((w.sum - 2.5).abs() < 1e-9);
    }

    #[test]
    fn in_progress_does_not_drift_when_the_name_comes_late() {
        let mut c = CoreAggregates::new(vec![1.0], None, 100);
        // started (no name yet), then a late received with the name, then
        // the end.
        c.observe(
            &Event::Task(TaskEvent::new(TaskEventKind::Started, "a", 2.0).with_hostname("w@h")),
            0.0,
        );
        let mut r = TaskEvent::new(TaskEventKind::Received, "a", 1.0).with_hostname("w@h");
        r.name = Some("t.x".into());
        c.observe(&Event::Task(r), 0.0);
        c.observe(
            &Event::Task(TaskEvent::new(TaskEventKind::Succeeded, "a", 3.0).with_hostname("w@h")),
            0.0,
        );
        assert!(
            c.in_progress.values().all(|v| **v == 0),
            "{:?}",
            c.in_progress
        );
        let name = c.labels.get("t.x");
        assert_eq!(*c.tasks_total[&(name, TaskState::Success)], 1);
    }

    #[test]
    fn offline_workers_pruned_after_ttl() {
        let mut c = CoreAggregates::new(vec![1.0], None, 100);
        c.observe(
            &Event::Worker(WorkerEvent::new(WorkerEventKind::Online, "w1@h", 0.0)),
            100.0,
        );
        c.observe(
            &Event::Worker(WorkerEvent::new(WorkerEventKind::Online, "w2@h", 0.0)),
            100.0,
        );
        c.observe(
            &Event::Worker(WorkerEvent::new(WorkerEventKind::Offline, "w2@h", 0.0)),
            100.0,
        );
        assert_eq!(c.workers_online(101.0), 1);
        assert!(c.prune_workers(150.0, 60.0).is_empty());
        let gone = c.prune_workers(161.0, 60.0);
        // w1 went silent too (no heartbeat for 61 s): both go.
        assert_eq!(gone.len(), 2);
        assert!(c.workers.is_empty());
    }
}
