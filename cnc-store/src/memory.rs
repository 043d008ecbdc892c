//! The in-memory store: the reference adapter.
//!
//! Everything lives in one [`parking_lot::RwLock`]ed struct. Each call takes
//! the lock once, does all its work synchronously and releases it before
//! returning, so no lock is ever held across an `.await` and a batch given to
//! `apply` is visible whole or not at all (readers wait for the write lock).
//! Nothing inside the lock can fail half-way, so "an error leaves the store
//! as before" holds trivially: the only error `apply` returns (closed store)
//! is decided before anything changes.
//!
//! Queries scan. That keeps the code a literal transcription of the contract
//! in [`cnc_model::store`] (filters are [`TaskFilter::matches`], percentiles
//! are [`RuntimeStats::from_runtimes`]), which is what a reference adapter is
//! for; it is fast enough for tests and small throw-away runs (tens of
//! thousands of tasks).
//!
//! Choices where the contract leaves room (the conformance suite checks the
//! same ones):
//!
//! * Non-default sorts put tasks without the sort value last, in both
//!   directions; names compare by bytes. `next_cursor` is only produced for
//!   the default sort (it is only valid there).
//! * The cursor is `m<seq>`: the seen sequence number of the last row.
//! * Throughput counts a task in the bucket whose `[start, start + w)` holds
//!   its finish time. Retries are counted from the stored `task-retried`
//!   events.
//! * `prune_workers` treats a worker that was never online (created by
//!   `set_worker_info`) as offline since it was first seen.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use cnc_model::fold;
use cnc_model::model::{
    Event, EventKey, Heatmap, NameCount, RuntimeStats, Schedule, StateCount, StatsQuery,
    StoredEvent, Task, TaskEvent, TaskFilter, TaskPage, TaskQuery, TaskRelation, TaskSort,
    TaskSortField, TaskState, ThroughputBucket, ThroughputQuery, Timestamp, Worker, WorkerStatus,
    WorkerStatusChange,
};
use cnc_model::store::{
    ApplyReport, CleanupReport, DbController, SCHEMA_VERSION, SkipReason, StoreError,
    StoreErrorKind, StoreInfo, StoreResult, check_event,
};
use parking_lot::RwLock;
use serde_json::Value;

/// Most buckets one throughput query may ask for (a year of minutes).
const MAX_BUCKETS: f64 = 527_040.0;

/// Keys of an event's JSON that are not kept in [`StoredEvent::fields`].
const NOT_IN_FIELDS: [&str; 8] = [
    "type",
    "uuid",
    "hostname",
    "timestamp",
    "clock",
    "name",
    "args",
    "kwargs",
];

/// A thread-safe store that keeps everything in memory and forgets it on
/// drop. The reference implementation of [`DbController`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    closed: bool,
    version: u32,
    /// Tasks by seen sequence number.
    tasks: BTreeMap<u64, Task>,
    /// Task id -> seen sequence number.
    seq_of: HashMap<String, u64>,
    next_seq: u64,
    /// Dedup keys of every stored task event.
    keys: HashSet<EventKey>,
    /// Stored events by task id, in arrival order.
    events: HashMap<String, Vec<StoredEvent>>,
    workers: BTreeMap<String, Worker>,
    /// Worker status changes in arrival order.
    history: Vec<WorkerStatusChange>,
    schedules: BTreeMap<String, Schedule>,
}

fn closed() -> StoreError {
    StoreError::new(StoreErrorKind::Closed, "the memory store is closed")
}

fn stored(event: &TaskEvent) -> StoredEvent {
    let mut fields = serde_json::to_value(event).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut fields {
        for key in NOT_IN_FIELDS {
            map.remove(key);
        }
        map.retain(|_, v| !v.is_null());
    }
    StoredEvent {
        task_id: event.uuid.clone(),
        kind: event.kind.as_str().to_owned(),
        timestamp: event.timestamp,
        hostname: event.hostname.clone(),
        clock: event.clock,
        fields,
    }
}

/// The dedup key of a stored event (the same as [`TaskEvent::dedup_key`]).
fn key_of(e: &StoredEvent) -> EventKey {
    EventKey {
        task_id: e.task_id.clone(),
        kind: e.kind.clone(),
        hostname: e.hostname.clone().unwrap_or_default(),
        clock: e.clock,
        micros: (e.timestamp * 1e6).round() as i64,
    }
}

fn encode_cursor(seq: u64) -> String {
    format!("m{seq}")
}

fn decode_cursor(cursor: &str) -> StoreResult<u64> {
    cursor
        .strip_prefix('m')
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| StoreError::invalid(format!("bad cursor {cursor:?}")))
}

/// Optional keys, `None` last in both directions.
fn nulls_last<T: PartialOrd>(a: Option<T>, b: Option<T>, descending: bool) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => {
            let o = a.partial_cmp(&b).unwrap_or(Ordering::Equal);
            if descending { o.reverse() } else { o }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn compare(sort: TaskSort, (sa, a): (u64, &Task), (sb, b): (u64, &Task)) -> Ordering {
    let d = sort.descending;
    let primary = match sort.field {
        TaskSortField::Seen => {
            if d {
                sb.cmp(&sa)
            } else {
                sa.cmp(&sb)
            }
        }
        TaskSortField::Created => nulls_last(Some(a.created_at), Some(b.created_at), d),
        TaskSortField::Received => nulls_last(a.received_at, b.received_at, d),
        TaskSortField::Started => nulls_last(a.started_at, b.started_at, d),
        TaskSortField::Runtime => nulls_last(a.runtime, b.runtime, d),
        TaskSortField::Name => nulls_last(a.name.as_deref(), b.name.as_deref(), d),
    };
    primary.then_with(|| sb.cmp(&sa))
}

fn in_scope(scope: &StatsQuery, task: &Task) -> bool {
    scope
        .name
        .as_deref()
        .is_none_or(|n| task.name.as_deref() == Some(n))
        && scope
            .worker
            .as_deref()
            .is_none_or(|w| task.worker.as_deref() == Some(w))
}

impl Inner {
    fn check_open(&self) -> StoreResult<()> {
        if self.closed { Err(closed()) } else { Ok(()) }
    }

    fn apply(&mut self, events: &[Event]) -> ApplyReport {
        let mut report = ApplyReport::default();
        let mut created: HashSet<&str> = HashSet::new();
        let mut updated: HashSet<&str> = HashSet::new();
        let mut changed: HashSet<&str> = HashSet::new();
        let mut touched: HashSet<&str> = HashSet::new();
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
                    let existing = self.seq_of.get(&e.uuid).copied();
                    match existing.and_then(|seq| self.tasks.get_mut(&seq)) {
                        Some(task) => {
                            fold::apply_task_event(task, e, false);
                            if !created.contains(e.uuid.as_str()) && updated.insert(&e.uuid) {
                                report.tasks_updated += 1;
                            }
                        }
                        None => {
                            let (task, _) = fold::task_from_event(e);
                            self.next_seq += 1;
                            self.seq_of.insert(e.uuid.clone(), self.next_seq);
                            self.tasks.insert(self.next_seq, task);
                            created.insert(&e.uuid);
                            report.tasks_created += 1;
                        }
                    }
                    if changed.insert(&e.uuid) {
                        report.changed_tasks.push(e.uuid.clone());
                    }
                    self.events
                        .entry(e.uuid.clone())
                        .or_default()
                        .push(stored(e));
                }
                Event::Worker(w) => {
                    report.applied += 1;
                    if touched.insert(&w.hostname) {
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
                // check_event already skipped these; kept for exhaustiveness.
                Event::Unknown(_) => report.skip(SkipReason::UnknownType),
            }
        }
        report
    }

    fn task(&self, id: &str) -> Option<&Task> {
        self.seq_of.get(id).and_then(|seq| self.tasks.get(seq))
    }

    fn tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
        let default_sort = query.sort == TaskSort::default();
        if query.cursor.is_some() && query.offset > 0 {
            return Err(StoreError::invalid("cursor and offset cannot be combined"));
        }
        if query.cursor.is_some() && !default_sort {
            return Err(StoreError::invalid(
                "cursor is only valid with the default sort (seen, descending)",
            ));
        }
        let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
        let limit = query.effective_limit() as usize;
        let offset = usize::try_from(query.offset).unwrap_or(usize::MAX);
        let filter = &query.filter;
        let rows: Vec<(u64, &Task)> = if default_sort {
            self.tasks
                .range(..after.unwrap_or(u64::MAX))
                .rev()
                .filter(|(_, t)| filter.matches(t))
                .skip(offset)
                .take(limit)
                .map(|(s, t)| (*s, t))
                .collect()
        } else {
            let mut all: Vec<(u64, &Task)> = self
                .tasks
                .iter()
                .filter(|(_, t)| filter.matches(t))
                .map(|(s, t)| (*s, t))
                .collect();
            all.sort_by(|a, b| compare(query.sort, *a, *b));
            all.into_iter().skip(offset).take(limit).collect()
        };
        let next_cursor = match rows.last() {
            Some((seq, _)) if default_sort && limit > 0 && rows.len() == limit => {
                Some(encode_cursor(*seq))
            }
            _ => None,
        };
        Ok(TaskPage {
            tasks: rows.into_iter().map(|(_, t)| t.clone()).collect(),
            next_cursor,
        })
    }

    fn task_events(&self, id: &str) -> Vec<StoredEvent> {
        let mut out = self.events.get(id).cloned().unwrap_or_default();
        out.sort_by(|a, b| {
            a.timestamp
                .total_cmp(&b.timestamp)
                .then(a.clock.cmp(&b.clock))
        });
        out
    }

    fn relations(&self, root: &str) -> Vec<TaskRelation> {
        let mut rows: Vec<(u64, &Task)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.id == root || t.root_id.as_deref() == Some(root))
            .map(|(s, t)| (*s, t))
            .collect();
        rows.sort_by(|(sa, a), (sb, b)| a.created_at.total_cmp(&b.created_at).then(sa.cmp(sb)));
        rows.into_iter().map(|(_, t)| TaskRelation::of(t)).collect()
    }

    fn worker_history(&self, hostname: &str, limit: u32) -> Vec<WorkerStatusChange> {
        let mut rows: Vec<(usize, &WorkerStatusChange)> = self
            .history
            .iter()
            .enumerate()
            .filter(|(_, c)| c.hostname == hostname)
            .collect();
        rows.sort_by(|(ia, a), (ib, b)| b.timestamp.total_cmp(&a.timestamp).then(ib.cmp(ia)));
        rows.into_iter()
            .take(limit as usize)
            .map(|(_, c)| c.clone())
            .collect()
    }

    fn prune_workers(&mut self, before: Timestamp) -> u64 {
        let gone: HashSet<String> = self
            .workers
            .values()
            .filter(|w| {
                w.status == WorkerStatus::Offline
                    && w.offline_since.unwrap_or(w.first_seen) < before
            })
            .map(|w| w.hostname.clone())
            .collect();
        self.workers.retain(|h, _| !gone.contains(h));
        self.history.retain(|c| !gone.contains(&c.hostname));
        gone.len() as u64
    }

    fn distribution_scope<'a>(&'a self, q: &'a StatsQuery) -> impl Iterator<Item = &'a Task> {
        self.tasks
            .values()
            .filter(move |t| in_scope(q, t) && q.time.is_none_or(|r| r.contains(t.created_at)))
    }

    fn name_distribution(&self, q: &StatsQuery) -> Vec<NameCount> {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for name in self.distribution_scope(q).filter_map(|t| t.name.as_deref()) {
            *counts.entry(name).or_default() += 1;
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

    fn state_distribution(&self, q: &StatsQuery) -> Vec<StateCount> {
        let mut counts = [0u64; TaskState::ALL.len()];
        for t in self.distribution_scope(q) {
            if let Some(i) = TaskState::ALL.iter().position(|s| *s == t.state) {
                counts[i] += 1;
            }
        }
        TaskState::ALL
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(state, count)| StateCount {
                state: *state,
                count,
            })
            .collect()
    }

    fn runtime_stats(&self, q: &StatsQuery) -> RuntimeStats {
        let runtimes = self
            .tasks
            .values()
            .filter(|t| in_scope(q, t))
            .filter(|t| {
                q.time
                    .is_none_or(|r| t.succeeded_at.is_some_and(|s| r.contains(s)))
            })
            .filter_map(|t| t.runtime)
            .collect();
        RuntimeStats::from_runtimes(runtimes)
    }

    fn throughput(&self, q: &ThroughputQuery) -> StoreResult<Vec<ThroughputBucket>> {
        if q.bucket_seconds == 0 || q.bucket_seconds % 60 != 0 {
            return Err(StoreError::invalid(format!(
                "bucket_seconds must be a positive multiple of 60, not {}",
                q.bucket_seconds
            )));
        }
        if !q.from.is_finite() || !q.to.is_finite() {
            return Err(StoreError::invalid("throughput range must be finite"));
        }
        let w = q.bucket_seconds as f64;
        let first = (q.from / w).floor() * w;
        let n = ((q.to - first) / w).ceil().max(0.0);
        if n > MAX_BUCKETS {
            return Err(StoreError::invalid(format!(
                "throughput range asks for {n} buckets (at most {MAX_BUCKETS})"
            )));
        }
        let n = n as usize;
        let mut buckets: Vec<ThroughputBucket> = (0..n)
            .map(|i| ThroughputBucket {
                start: first + i as f64 * w,
                ..ThroughputBucket::default()
            })
            .filter(|b| b.start < q.to)
            .collect();
        let len = buckets.len();
        let index = |t: Timestamp| {
            let i = ((t - first) / w).floor();
            (i >= 0.0 && (i as usize) < len).then_some(i as usize)
        };
        for task in self.tasks.values().filter(|t| in_scope(&q.scope, t)) {
            if let Some(i) = task.finished_at().and_then(index) {
                let b = &mut buckets[i];
                match task.state {
                    TaskState::Success => b.succeeded += 1,
                    TaskState::Failure => b.failed += 1,
                    TaskState::Revoked => b.revoked += 1,
                    TaskState::Rejected => b.rejected += 1,
                    _ => {}
                }
            }
            for e in self.events.get(&task.id).into_iter().flatten() {
                if e.kind == "task-retried" {
                    if let Some(i) = index(e.timestamp) {
                        buckets[i].retried += 1;
                    }
                }
            }
        }
        Ok(buckets)
    }

    fn heatmap(&self, q: &StatsQuery) -> Heatmap {
        let mut map = Heatmap::default();
        for t in self.tasks.values().filter(|t| in_scope(q, t)) {
            if let Some(f) = t
                .finished_at()
                .filter(|f| q.time.is_none_or(|r| r.contains(*f)))
            {
                let (day, hour) = Heatmap::cell_of(f);
                map.cells[day][hour] += 1;
            }
        }
        map
    }

    fn cleanup(&mut self, older_than: Timestamp) -> CleanupReport {
        let mut report = CleanupReport::default();
        let old: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.updated_at < older_than)
            .map(|(s, _)| *s)
            .collect();
        for seq in old {
            if let Some(task) = self.tasks.remove(&seq) {
                self.seq_of.remove(&task.id);
                for e in self.events.remove(&task.id).unwrap_or_default() {
                    self.keys.remove(&key_of(&e));
                    report.events += 1;
                }
                report.tasks += 1;
            }
        }
        let before = self.history.len();
        self.history.retain(|c| c.timestamp >= older_than);
        report.worker_history = (before - self.history.len()) as u64;
        report
    }

    fn purge(&mut self) {
        self.tasks.clear();
        self.seq_of.clear();
        self.keys.clear();
        self.events.clear();
        self.workers.clear();
        self.history.clear();
    }
}

impl MemoryStore {
    /// An empty store (schema version 0 until [`DbController::initialize`]).
    pub fn new() -> Self {
        Self::default()
    }

    fn read<T>(&self, f: impl FnOnce(&Inner) -> StoreResult<T>) -> StoreResult<T> {
        let inner = self.inner.read();
        inner.check_open()?;
        f(&inner)
    }

    fn write<T>(&self, f: impl FnOnce(&mut Inner) -> StoreResult<T>) -> StoreResult<T> {
        let mut inner = self.inner.write();
        inner.check_open()?;
        f(&mut inner)
    }
}

#[async_trait]
impl DbController for MemoryStore {
    fn info(&self) -> StoreInfo {
        StoreInfo {
            backend: "memory".to_owned(),
            location: "memory".to_owned(),
            search_lag: Duration::ZERO,
            persistent: false,
            shared: false,
        }
    }

    async fn initialize(&self) -> StoreResult<()> {
        self.write(|i| {
            if i.version > SCHEMA_VERSION {
                return Err(StoreError::new(
                    StoreErrorKind::SchemaTooNew,
                    format!(
                        "schema version {} is newer than {SCHEMA_VERSION}",
                        i.version
                    ),
                ));
            }
            i.version = SCHEMA_VERSION;
            Ok(())
        })
    }

    async fn schema_version(&self) -> StoreResult<u32> {
        self.read(|i| Ok(i.version))
    }

    async fn migrate(&self, from: u32, to: u32) -> StoreResult<()> {
        self.write(|i| {
            if from >= to || to > SCHEMA_VERSION {
                return Err(StoreError::invalid(format!(
                    "cannot migrate from {from} to {to} (this build knows up to {SCHEMA_VERSION})"
                )));
            }
            if i.version != from {
                return Err(StoreError::new(
                    StoreErrorKind::Migration,
                    format!("the store is at version {}, not {from}", i.version),
                ));
            }
            i.version = to;
            Ok(())
        })
    }

    async fn apply(&self, events: &[Event]) -> StoreResult<ApplyReport> {
        self.write(|i| Ok(i.apply(events)))
    }

    async fn task(&self, id: &str) -> StoreResult<Option<Task>> {
        self.read(|i| Ok(i.task(id).cloned()))
    }

    async fn tasks(&self, query: &TaskQuery) -> StoreResult<TaskPage> {
        self.read(|i| i.tasks(query))
    }

    async fn count_tasks(&self, filter: &TaskFilter) -> StoreResult<u64> {
        self.read(|i| Ok(i.tasks.values().filter(|t| filter.matches(t)).count() as u64))
    }

    async fn task_events(&self, id: &str) -> StoreResult<Vec<StoredEvent>> {
        self.read(|i| Ok(i.task_events(id)))
    }

    async fn relations(&self, root_id: &str) -> StoreResult<Vec<TaskRelation>> {
        self.read(|i| Ok(i.relations(root_id)))
    }

    async fn workers(&self) -> StoreResult<Vec<Worker>> {
        self.read(|i| Ok(i.workers.values().cloned().collect()))
    }

    async fn worker(&self, hostname: &str) -> StoreResult<Option<Worker>> {
        self.read(|i| Ok(i.workers.get(hostname).cloned()))
    }

    async fn worker_history(
        &self,
        hostname: &str,
        limit: u32,
    ) -> StoreResult<Vec<WorkerStatusChange>> {
        self.read(|i| Ok(i.worker_history(hostname, limit)))
    }

    async fn set_worker_info(&self, hostname: &str, info: Value, at: Timestamp) -> StoreResult<()> {
        self.write(|i| {
            let worker = i
                .workers
                .entry(hostname.to_owned())
                .or_insert_with(|| Worker::new(hostname, at));
            worker.info = Some(info);
            worker.info_updated_at = Some(at);
            Ok(())
        })
    }

    async fn prune_workers(&self, offline_before: Timestamp) -> StoreResult<u64> {
        self.write(|i| Ok(i.prune_workers(offline_before)))
    }

    async fn task_names(&self) -> StoreResult<Vec<NameCount>> {
        self.read(|i| Ok(i.name_distribution(&StatsQuery::default())))
    }

    async fn runtime_stats(&self, query: &StatsQuery) -> StoreResult<RuntimeStats> {
        self.read(|i| Ok(i.runtime_stats(query)))
    }

    async fn throughput(&self, query: &ThroughputQuery) -> StoreResult<Vec<ThroughputBucket>> {
        self.read(|i| i.throughput(query))
    }

    async fn state_distribution(&self, query: &StatsQuery) -> StoreResult<Vec<StateCount>> {
        self.read(|i| Ok(i.state_distribution(query)))
    }

    async fn name_distribution(&self, query: &StatsQuery) -> StoreResult<Vec<NameCount>> {
        self.read(|i| Ok(i.name_distribution(query)))
    }

    async fn heatmap(&self, query: &StatsQuery) -> StoreResult<Heatmap> {
        self.read(|i| Ok(i.heatmap(query)))
    }

    async fn schedules(&self) -> StoreResult<Vec<Schedule>> {
        self.read(|i| Ok(i.schedules.values().cloned().collect()))
    }

    async fn schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        self.read(|i| Ok(i.schedules.get(name).cloned()))
    }

    async fn upsert_schedule(&self, schedule: &Schedule) -> StoreResult<()> {
        self.write(|i| {
            i.schedules.insert(schedule.name.clone(), schedule.clone());
            Ok(())
        })
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        self.write(|i| Ok(i.schedules.remove(name).is_some()))
    }

    async fn delete_all_schedules(&self) -> StoreResult<u64> {
        self.write(|i| {
            let n = i.schedules.len() as u64;
            i.schedules.clear();
            Ok(n)
        })
    }

    async fn cleanup(&self, older_than: Timestamp) -> StoreResult<CleanupReport> {
        self.write(|i| Ok(i.cleanup(older_than)))
    }

    async fn purge(&self) -> StoreResult<()> {
        self.write(|i| {
            i.purge();
            Ok(())
        })
    }

    async fn close(&self) -> StoreResult<()> {
        self.write(|i| {
            i.closed = true;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnc_model::model::{TaskEventKind, TimeRange};

    fn ev(kind: TaskEventKind, id: &str, ts: f64) -> Event {
        Event::Task(TaskEvent::new(kind, id, ts).with_hostname("w@h"))
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)).ok(), Some(42));
        for bad in ["", "m", "42", "mx", "m-1"] {
            let err = decode_cursor(bad).err().map(|e| e.kind());
            assert_eq!(err, Some(StoreErrorKind::InvalidInput), "{bad:?}");
        }
    }

    #[test]
    fn nulls_sort_last_in_both_directions() {
        for d in [false, true] {
            assert_eq!(nulls_last(Some(1.0), None, d), Ordering::Less);
            assert_eq!(nulls_last(None, Some(1.0), d), Ordering::Greater);
        }
        assert_eq!(nulls_last(Some(1.0), Some(2.0), true), Ordering::Greater);
    }

    #[test]
    fn cleanup_forgets_dedup_keys_of_removed_events() {
        let mut inner = Inner::default();
        let batch = [ev(TaskEventKind::Received, "t", 100.0)];
        assert_eq!(inner.apply(&batch).tasks_created, 1);
        assert_eq!(inner.apply(&batch).skipped_for(SkipReason::Duplicate), 1);
        let report = inner.cleanup(200.0);
        assert_eq!((report.tasks, report.events), (1, 1));
        assert!(inner.keys.is_empty());
        // The same event is new again once its task is gone.
        assert_eq!(inner.apply(&batch).tasks_created, 1);
    }

    #[test]
    fn throughput_buckets_are_aligned_and_bounded() {
        let inner = Inner::default();
        let q = |from: f64, to: f64, w: u64| ThroughputQuery {
            scope: StatsQuery {
                time: Some(TimeRange::between(0.0, 1.0)),
                ..StatsQuery::default()
            },
            from,
            to,
            bucket_seconds: w,
        };
        let b = inner.throughput(&q(90.0, 240.0, 60)).unwrap_or_default();
        let starts: Vec<f64> = b.iter().map(|b| b.start).collect();
        assert_eq!(starts, [60.0, 120.0, 180.0]);
        assert!(
            inner
                .throughput(&q(0.0, 0.0, 60))
                .is_ok_and(|b| b.is_empty())
        );
        assert!(inner.throughput(&q(0.0, 1e12, 60)).is_err());
        assert!(inner.throughput(&q(f64::NAN, 10.0, 60)).is_err());
    }
}
