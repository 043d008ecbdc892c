//! The expected values: a plain, obviously-correct model of the contract.
//!
//! [`Reference`] folds the same events the suite gives the adapter, with
//! [`crate::fold`] and [`crate::store::check_event`], and answers every query
//! by scanning with [`TaskFilter::matches`], [`RuntimeStats::from_runtimes`],
//! [`Heatmap::cell_of`] and friends. The checks compare the adapter's answers
//! with these; they never compare an adapter with itself.
//!
//! It is deliberately written for clarity, not speed, and shares no code with
//! any adapter (the in-memory store in `cnc-store` is a separate
//! implementation, so the two check each other).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use crate::fold;
use crate::model::{
    Event, EventKey, Heatmap, NameCount, RuntimeStats, StateCount, StatsQuery, StoredEvent, Task,
    TaskEvent, TaskEventKind, TaskFilter, TaskRelation, TaskSort, TaskSortField, TaskState,
    ThroughputBucket, ThroughputQuery, Timestamp, Worker, WorkerStatus, WorkerStatusChange,
};
use crate::store::{ApplyReport, CleanupReport, SkipReason, check_event};

/// Keys the contract removes from a stored event's `fields`.
pub const EVENT_KEYS_NOT_IN_FIELDS: [&str; 8] = [
    "type",
    "uuid",
    "hostname",
    "timestamp",
    "clock",
    "name",
    "args",
    "kwargs",
];

/// An in-memory model of what a store must contain after a series of calls.
#[derive(Debug, Clone, Default)]
pub struct Reference {
    tasks: BTreeMap<u64, Task>,
    ids: HashMap<String, u64>,
    next_seq: u64,
    keys: HashSet<EventKey>,
    events: HashMap<String, Vec<TaskEvent>>,
    workers: BTreeMap<String, Worker>,
    history: Vec<WorkerStatusChange>,
}

/// The stored-event view of a task event, as the contract defines it.
pub fn stored_event(e: &TaskEvent) -> StoredEvent {
    StoredEvent {
        task_id: e.uuid.clone(),
        kind: e.kind.as_str().to_owned(),
        timestamp: e.timestamp,
        hostname: e.hostname.clone(),
        clock: e.clock,
        fields: event_fields(e),
    }
}

/// `fields` of a stored event: the event's JSON without the keys in
/// [`EVENT_KEYS_NOT_IN_FIELDS`] and without null values.
pub fn event_fields(e: &TaskEvent) -> Value {
    let mut value = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        for key in EVENT_KEYS_NOT_IN_FIELDS {
            map.remove(key);
        }
        map.retain(|_, v| !v.is_null());
    }
    value
}

/// Compare two optional sort keys: `None` last whatever the direction.
fn cmp_nulls_last<T: PartialOrd>(a: Option<T>, b: Option<T>, descending: bool) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => {
            let o = a.partial_cmp(&b).unwrap_or(Ordering::Equal);
            if descending { o.reverse() } else { o }
        }
    }
}

impl Reference {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fold a batch, as `DbController::apply` must; returns the report the
    /// adapter must return.
    pub fn apply(&mut self, events: &[Event]) -> ApplyReport {
        let mut report = ApplyReport::default();
        let mut created: HashSet<String> = HashSet::new();
        let mut updated: HashSet<String> = HashSet::new();
        let mut changed: HashSet<String> = HashSet::new();
        let mut touched_workers: HashSet<String> = HashSet::new();
        for event in events {
            if let Some(reason) = check_event(event) {
                report.skip(reason);
                continue;
            }
            match event {
                Event::Task(e) => {
                    if !self.keys.insert(e.dedup_key()) {
                        report.skip(SkipReason::Duplicate);
                        continue;
                    }
                    report.applied += 1;
                    match self
                        .ids
                        .get(&e.uuid)
                        .and_then(|seq| self.tasks.get_mut(seq))
                    {
                        Some(task) => {
                            fold::apply_task_event(task, e, false);
                            if !created.contains(&e.uuid) && updated.insert(e.uuid.clone()) {
                                report.tasks_updated += 1;
                            }
                        }
                        None => {
                            let (task, _) = fold::task_from_event(e);
                            self.next_seq += 1;
                            self.ids.insert(e.uuid.clone(), self.next_seq);
                            self.tasks.insert(self.next_seq, task);
                            created.insert(e.uuid.clone());
                            report.tasks_created += 1;
                        }
                    }
                    if changed.insert(e.uuid.clone()) {
                        report.changed_tasks.push(e.uuid.clone());
                    }
                    self.events
                        .entry(e.uuid.clone())
                        .or_default()
                        .push(e.clone());
                }
                Event::Worker(w) => {
                    report.applied += 1;
                    if touched_workers.insert(w.hostname.clone()) {
                        report.workers_touched += 1;
                    }
                    let change = match self.workers.get_mut(&w.hostname) {
                        Some(worker) => fold::apply_worker_event(worker, w),
                        None => {
                            let (worker, change) = fold::worker_from_event(w);
                            self.workers.insert(w.hostname.clone(), worker);
                            change
                        }
                    };
                    if let Some(change) = change {
                        self.history.push(change.clone());
                        report.worker_changes.push(change);
                    }
                }
                Event::Unknown(_) => report.skip(SkipReason::UnknownType),
            }
        }
        report
    }

    /// One task.
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.ids.get(id).and_then(|seq| self.tasks.get(seq))
    }

    /// Every task, newest first (the default order).
    pub fn all(&self) -> Vec<&Task> {
        self.tasks.values().rev().collect()
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True when there is no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Tasks matching `filter`, sorted by `sort` (ties: seen order descending;
    /// tasks without the sort value last in both directions).
    pub fn sorted(&self, filter: &TaskFilter, sort: TaskSort) -> Vec<&Task> {
        let mut rows: Vec<(u64, &Task)> = self
            .tasks
            .iter()
            .filter(|(_, t)| filter.matches(t))
            .map(|(seq, t)| (*seq, t))
            .collect();
        rows.sort_by(|(sa, a), (sb, b)| {
            let d = sort.descending;
            let primary = match sort.field {
                TaskSortField::Seen => {
                    let o = sa.cmp(sb);
                    if d { o.reverse() } else { o }
                }
                TaskSortField::Created => cmp_nulls_last(Some(a.created_at), Some(b.created_at), d),
                TaskSortField::Received => cmp_nulls_last(a.received_at, b.received_at, d),
                TaskSortField::Started => cmp_nulls_last(a.started_at, b.started_at, d),
                TaskSortField::Runtime => cmp_nulls_last(a.runtime, b.runtime, d),
                TaskSortField::Name => cmp_nulls_last(a.name.as_deref(), b.name.as_deref(), d),
            };
            primary.then_with(|| sb.cmp(sa))
        });
        rows.into_iter().map(|(_, t)| t).collect()
    }

    /// Tasks matching `filter`, newest first.
    pub fn matching(&self, filter: &TaskFilter) -> Vec<&Task> {
        self.sorted(filter, TaskSort::default())
    }

    /// The stored events of a task, oldest first (timestamp, then clock).
    pub fn events_of(&self, id: &str) -> Vec<StoredEvent> {
        let mut out: Vec<StoredEvent> = self
            .events
            .get(id)
            .map(|evs| evs.iter().map(stored_event).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| {
            a.timestamp
                .total_cmp(&b.timestamp)
                .then(a.clock.cmp(&b.clock))
        });
        out
    }

    /// Number of stored task events.
    pub fn event_count(&self) -> usize {
        self.events.values().map(Vec::len).sum()
    }

    /// The workflow rooted at `root`: the root and every task whose `root_id`
    /// is `root`, by `created_at` then seen order.
    pub fn relations(&self, root: &str) -> Vec<TaskRelation> {
        self.tasks
            .iter()
            .filter(|(_, t)| t.id == root || t.root_id.as_deref() == Some(root))
            .map(|(seq, t)| (*seq, t))
            .collect::<Vec<_>>()
            .tap_sort(|(sa, a), (sb, b)| a.created_at.total_cmp(&b.created_at).then(sa.cmp(sb)))
            .into_iter()
            .map(|(_, t)| TaskRelation::of(t))
            .collect()
    }

    /// Workers by hostname.
    pub fn workers(&self) -> Vec<&Worker> {
        self.workers.values().collect()
    }

    /// One worker.
    pub fn worker(&self, hostname: &str) -> Option<&Worker> {
        self.workers.get(hostname)
    }

    /// A worker's status changes, newest first, at most `limit`.
    pub fn worker_history(&self, hostname: &str, limit: usize) -> Vec<WorkerStatusChange> {
        let mut rows: Vec<(usize, &WorkerStatusChange)> = self
            .history
            .iter()
            .enumerate()
            .filter(|(_, c)| c.hostname == hostname)
            .collect();
        rows.sort_by(|(ia, a), (ib, b)| b.timestamp.total_cmp(&a.timestamp).then(ib.cmp(ia)));
        rows.into_iter()
            .take(limit)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Every status change, in the order they happened.
    pub fn history(&self) -> &[WorkerStatusChange] {
        &self.history
    }

    /// `set_worker_info`: store inspect data, creating the worker if unknown.
    pub fn set_worker_info(&mut self, hostname: &str, info: Value, at: Timestamp) {
        let worker = self
            .workers
            .entry(hostname.to_owned())
            .or_insert_with(|| Worker::new(hostname, at));
        worker.info = Some(info);
        worker.info_updated_at = Some(at);
    }

    /// `prune_workers`: remove offline workers whose `offline_since` (or
    /// `first_seen` for a worker never seen online) is before `before`.
    pub fn prune_workers(&mut self, before: Timestamp) -> u64 {
        let gone: Vec<String> = self
            .workers
            .values()
            .filter(|w| {
                w.status == WorkerStatus::Offline
                    && w.offline_since.unwrap_or(w.first_seen) < before
            })
            .map(|w| w.hostname.clone())
            .collect();
        for h in &gone {
            self.workers.remove(h);
        }
        self.history.retain(|c| !gone.contains(&c.hostname));
        gone.len() as u64
    }

    fn in_scope(scope: &StatsQuery, task: &Task) -> bool {
        scope
            .name
            .as_ref()
            .is_none_or(|n| task.name.as_ref() == Some(n))
            && scope
                .worker
                .as_ref()
                .is_none_or(|w| task.worker.as_ref() == Some(w))
    }

    /// Distinct task names with counts, most frequent first, then by name.
    pub fn task_names(&self) -> Vec<NameCount> {
        self.name_distribution(&StatsQuery::default())
    }

    /// Runtime statistics for a scope (`time` on `succeeded_at`).
    pub fn runtime_stats(&self, q: &StatsQuery) -> RuntimeStats {
        RuntimeStats::from_runtimes(
            self.tasks
                .values()
                .filter(|t| Self::in_scope(q, t))
                .filter(|t| {
                    q.time
                        .is_none_or(|r| t.succeeded_at.is_some_and(|s| r.contains(s)))
                })
                .filter_map(|t| t.runtime)
                .collect(),
        )
    }

    /// Throughput buckets, or `None` when `bucket_seconds` is invalid.
    pub fn throughput(&self, q: &ThroughputQuery) -> Option<Vec<ThroughputBucket>> {
        let w = q.bucket_seconds;
        if w == 0 || w % 60 != 0 {
            return None;
        }
        let w = w as f64;
        let first = (q.from / w).floor() * w;
        let mut buckets = Vec::new();
        let mut start = first;
        while start < q.to {
            buckets.push(ThroughputBucket {
                start,
                ..ThroughputBucket::default()
            });
            start = first + buckets.len() as f64 * w;
        }
        let index = |t: Timestamp| -> Option<usize> {
            let i = ((t - first) / w).floor();
            (i >= 0.0 && (i as usize) < buckets.len()).then_some(i as usize)
        };
        let mut counts = vec![ThroughputBucket::default(); buckets.len()];
        for task in self.tasks.values().filter(|t| Self::in_scope(&q.scope, t)) {
            if let Some(i) = task.finished_at().and_then(index) {
                let b = &mut counts[i];
                match task.state {
                    TaskState::Success => b.succeeded += 1,
                    TaskState::Failure => b.failed += 1,
                    TaskState::Revoked => b.revoked += 1,
                    TaskState::Rejected => b.rejected += 1,
                    _ => {}
                }
            }
            for e in self.events.get(&task.id).into_iter().flatten() {
                if e.kind == TaskEventKind::Retried {
                    if let Some(i) = index(e.timestamp) {
                        counts[i].retried += 1;
                    }
                }
            }
        }
        for (b, c) in buckets.iter_mut().zip(counts) {
            *b = ThroughputBucket {
                start: b.start,
                ..c
            };
        }
        Some(buckets)
    }

    fn distribution_scope<'a>(&'a self, q: &'a StatsQuery) -> impl Iterator<Item = &'a Task> {
        self.tasks
            .values()
            .filter(|t| Self::in_scope(q, t))
            .filter(|t| q.time.is_none_or(|r| r.contains(t.created_at)))
    }

    /// Tasks per state (`time` on `created_at`), in [`TaskState::ALL`]
    /// order, zero counts omitted.
    pub fn state_distribution(&self, q: &StatsQuery) -> Vec<StateCount> {
        TaskState::ALL
            .iter()
            .map(|s| StateCount {
                state: *s,
                count: self.distribution_scope(q).filter(|t| t.state == *s).count() as u64,
            })
            .filter(|c| c.count > 0)
            .collect()
    }

    /// Tasks per name (`time` on `created_at`), count descending then name.
    pub fn name_distribution(&self, q: &StatsQuery) -> Vec<NameCount> {
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for t in self.distribution_scope(q) {
            if let Some(n) = &t.name {
                *counts.entry(n).or_default() += 1;
            }
        }
        let mut out: Vec<NameCount> = counts
            .into_iter()
            .map(|(name, count)| NameCount {
                name: name.to_owned(),
                count,
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
        out
    }

    /// Finished tasks by weekday and hour of `finished_at()` (`time` on it).
    pub fn heatmap(&self, q: &StatsQuery) -> Heatmap {
        let mut map = Heatmap::default();
        for t in self.tasks.values().filter(|t| Self::in_scope(q, t)) {
            if let Some(f) = t.finished_at() {
                if q.time.is_none_or(|r| r.contains(f)) {
                    let (d, h) = Heatmap::cell_of(f);
                    map.cells[d][h] += 1;
                }
            }
        }
        map
    }

    /// `cleanup(older_than)`: what must be removed, and the report.
    pub fn cleanup(&mut self, older_than: Timestamp) -> CleanupReport {
        let mut report = CleanupReport::default();
        let old: Vec<(u64, String)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.updated_at < older_than)
            .map(|(seq, t)| (*seq, t.id.clone()))
            .collect();
        for (seq, id) in old {
            self.tasks.remove(&seq);
            self.ids.remove(&id);
            for e in self.events.remove(&id).unwrap_or_default() {
                self.keys.remove(&e.dedup_key());
                report.events += 1;
            }
            report.tasks += 1;
        }
        let before = self.history.len();
        self.history.retain(|c| c.timestamp >= older_than);
        report.worker_history = (before - self.history.len()) as u64;
        report
    }

    /// `purge()`: everything but schedules goes.
    pub fn purge(&mut self) {
        let next_seq = self.next_seq;
        *self = Self {
            next_seq,
            ..Self::default()
        };
    }
}

/// `Vec::sort_by` as an expression.
trait TapSort<T> {
    fn tap_sort(self, cmp: impl FnMut(&T, &T) -> Ordering) -> Self;
}

impl<T> TapSort<T> for Vec<T> {
    fn tap_sort(mut self, cmp: impl FnMut(&T, &T) -> Ordering) -> Self {
        self.sort_by(cmp);
        self
    }
}
