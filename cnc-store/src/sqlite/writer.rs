//! The single writer of the SQLite store.
//!
//! One OS thread owns the only read-write connection. Each `apply` is one
//! `BEGIN IMMEDIATE` transaction that:
//!
//! 1. validates events ([`cnc_model::store::check_event`]);
//! 2. inserts each task event with `INSERT OR IGNORE` into `task_events`,
//!    whose primary key is the event's identity: an ignored insert is a
//!    duplicate and is not folded again;
//! 3. folds new events into the task, loaded from a bounded cache of recent
//!    tasks or from the database ([`cnc_model::fold`]);
//! 4. writes each touched task once, updating only the columns (and so the
//!    indexes) that changed, the per-(name, worker, state) counts and the
//!    per-minute aggregates as deltas, and queues changed search text in
//!    `search_pending`.
//!
//! On any error the transaction rolls back and the in-memory state touched
//! by the batch is dropped, so the database and the cache never disagree.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::Value;

use cnc_model::fold::{apply_task_event, apply_worker_event, task_from_event, worker_from_event};
use cnc_model::store::check_event;
use cnc_model::{
    ApplyReport, CleanupReport, Event, Schedule, SkipReason, StoreResult, Task, TaskEvent,
    TaskState, Timestamp, Worker, WorkerStatus, WorkerStatusChange,
};

use super::error::{corrupt, map_err};
use super::ids::{MERGED_KEY, MergeRound, Mode, TaskIds};
use super::search::IndexCmd;

/// `(seq, id, name, worker, state)` of a task about to be removed.
type CleanupRow = (i64, String, Option<String>, Option<String>, String);

/// A task held by the writer.
struct Slot {
    seq: i64,
    /// Boxed: a `Task` is about 1 KiB inline, and the cache's hash table
    /// keeps up to twice its capacity in buckets (churn leaves tombstones),
    /// so inline tasks made the table alone 34 MB at 10,000 entries.
    task: Box<Task>,
}

/// Bounded FIFO cache of recently written tasks: most events of a task
/// arrive within seconds, so most folds never read the database.
struct TaskCache {
    map: HashMap<String, Slot>,
    order: VecDeque<String>,
    cap: usize,
}

impl TaskCache {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn insert(&mut self, id: String, slot: Slot) {
        if self.map.insert(id.clone(), slot).is_none() {
            self.order.push_back(id);
        }
    }

    fn trim(&mut self) {
        while self.map.len() > self.cap {
            match self.order.pop_front() {
                Some(id) => {
                    self.map.remove(&id);
                }
                None => break,
            }
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

/// The indexed columns of a task (and its finish time), as they were before
/// a batch touched it: all the writer needs to update only what changed and
/// to move the aggregates, without cloning the task's payload.
#[derive(Clone, PartialEq)]
struct Cols {
    name: Option<String>,
    state: TaskState,
    worker: Option<String>,
    created_at: f64,
    updated_at: f64,
    received_at: Option<f64>,
    started_at: Option<f64>,
    succeeded_at: Option<f64>,
    runtime: Option<f64>,
    root_id: Option<String>,
    parent_id: Option<String>,
    group_id: Option<String>,
    finished_at: Option<f64>,
}

impl Cols {
    fn of(t: &Task) -> Self {
        Self {
            name: t.name.clone(),
            state: t.state,
            worker: t.worker.clone(),
            created_at: t.created_at,
            updated_at: t.updated_at,
            received_at: t.received_at,
            started_at: t.started_at,
            succeeded_at: t.succeeded_at,
            runtime: t.runtime,
            root_id: t.root_id.clone(),
            parent_id: t.parent_id.clone(),
            group_id: t.group_id.clone(),
            finished_at: t.finished_at(),
        }
    }
}

/// What a task looked like before the batch touched it.
struct Before {
    existed: bool,
    cols: Cols,
    /// The search text (name, args, kwargs, result, exception) changed.
    text_changed: bool,
    retried: Vec<Timestamp>,
}

/// The writer's state; lives on the writer thread.
pub(crate) struct Writer {
    pub(crate) conn: Connection,
    cache: TaskCache,
    workers: HashMap<String, Worker>,
    next_seq: i64,
    acked: Arc<Mutex<Vec<(i64, i64)>>>,
    indexer: Option<std::sync::mpsc::Sender<IndexCmd>>,
    /// `UPDATE tasks` statements by the set of changed columns.
    update_sql: HashMap<u16, String>,
    /// The id index's memory level (see `ids.rs`), shared with readers.
    ids: Arc<TaskIds>,
    /// The merge of the memory level into `task_ids` in progress.
    round: Option<MergeRound>,
}

fn key(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

fn minute(t: Timestamp) -> i64 {
    (t / 60.0).floor() as i64
}

const FINAL_STATES: [TaskState; 4] = [
    TaskState::Success,
    TaskState::Failure,
    TaskState::Revoked,
    TaskState::Rejected,
];

/// The fields of a task event that `task_events.fields` keeps: everything
/// but what the row or the task already holds (`type`, `uuid`, `hostname`,
/// `timestamp`, `clock`, `name`, `args`, `kwargs`). Serialised straight from
/// the event, without building a `serde_json::Value` first.
#[derive(serde::Serialize)]
struct EventFields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    utcoffset: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exception: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceback: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    root_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chord_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exchange: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routing_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    terminated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signum: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expired: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requeue: Option<bool>,
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, Value>,
}

/// Event fields kept in `task_events.fields` (see [`EventFields`]); `None`
/// when there are none.
fn event_fields(e: &TaskEvent) -> StoreResult<Option<String>> {
    let f = EventFields {
        utcoffset: e.utcoffset,
        pid: e.pid,
        result: e.result.as_deref(),
        exception: e.exception.as_deref(),
        traceback: e.traceback.as_deref(),
        root_id: e.root_id.as_deref(),
        parent_id: e.parent_id.as_deref(),
        group_id: e.group_id.as_deref(),
        chord_id: e.chord_id.as_deref(),
        retries: e.retries,
        eta: e.eta.as_deref(),
        expires: e.expires.as_deref(),
        runtime: e.runtime,
        queue: e.queue.as_deref(),
        exchange: e.exchange.as_deref(),
        routing_key: e.routing_key.as_deref(),
        terminated: e.terminated,
        signum: e.signum,
        expired: e.expired,
        requeue: e.requeue,
        extra: &e.extra,
    };
    let empty = f.utcoffset.is_none()
        && f.pid.is_none()
        && f.result.is_none()
        && f.exception.is_none()
        && f.traceback.is_none()
        && f.root_id.is_none()
        && f.parent_id.is_none()
        && f.group_id.is_none()
        && f.chord_id.is_none()
        && f.retries.is_none()
        && f.eta.is_none()
        && f.expires.is_none()
        && f.runtime.is_none()
        && f.queue.is_none()
        && f.exchange.is_none()
        && f.routing_key.is_none()
        && f.terminated.is_none()
        && f.signum.is_none()
        && f.expired.is_none()
        && f.requeue.is_none()
        && f.extra.is_empty();
    if empty {
        return Ok(None);
    }
    serde_json::to_string(&f)
        .map(Some)
        .map_err(|err| corrupt("event", err))
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        cache_cap: usize,
        acked: Arc<Mutex<Vec<(i64, i64)>>>,
        indexer: Option<std::sync::mpsc::Sender<IndexCmd>>,
        ids: Arc<TaskIds>,
    ) -> StoreResult<Self> {
        let mut w = Self {
            conn,
            cache: TaskCache::new(cache_cap),
            workers: HashMap::new(),
            next_seq: 1,
            acked,
            indexer,
            update_sql: HashMap::new(),
            ids,
            round: None,
        };
        w.conn.set_prepared_statement_cache_capacity(128);
        w.reload()?;
        Ok(w)
    }

    /// Reload what the writer keeps in memory from the database, including
    /// the id index's memory level.
    pub(crate) fn reload(&mut self) -> StoreResult<()> {
        self.reload_state()?;
        self.reload_ids()
    }

    /// Rebuild the id index's memory level: the ids of tasks above
    /// `ids_merged_seq` (a rowid range). Before schema v4 (no `task_ids`),
    /// ids are found through the old `tasks_id` index instead.
    fn reload_ids(&mut self) -> StoreResult<()> {
        self.round = None;
        let has_ids: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'task_ids'",
                [],
                |r| r.get(0),
            )
            .map_err(map_err)?;
        if has_ids == 0 {
            self.ids.replace(HashMap::new());
            self.ids.set_mode(Mode::Legacy);
            return Ok(());
        }
        if self.ids.read_only() {
            self.ids.set_mode(Mode::Tail);
            return Ok(());
        }
        let merged = merged_seq(&self.conn)?;
        let mut st = self
            .conn
            .prepare("SELECT id, seq FROM tasks WHERE seq > ?1")
            .map_err(map_err)?;
        let map: HashMap<Box<str>, i64> = st
            .query_map([merged], |r| {
                Ok((r.get::<_, String>(0)?.into_boxed_str(), r.get(1)?))
            })
            .map_err(map_err)?
            .collect::<Result<_, _>>()
            .map_err(map_err)?;
        drop(st);
        self.ids.replace(map);
        self.ids.set_mode(Mode::Live);
        Ok(())
    }

    /// Reload the task cache and workers (the id index's memory level only
    /// changes after commits, so a failed batch leaves it right).
    fn reload_state(&mut self) -> StoreResult<()> {
        self.cache.clear();
        let has_tasks: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'tasks'",
                [],
                |r| r.get(0),
            )
            .map_err(map_err)?;
        if has_tasks == 0 {
            self.workers.clear();
            self.next_seq = 1;
            return Ok(());
        }
        let max: Option<i64> = self
            .conn
            .query_row("SELECT max(seq) FROM tasks", [], |r| r.get(0))
            .map_err(map_err)?;
        self.next_seq = self.next_seq.max(max.unwrap_or(0) + 1);
        let mut st = self
            .conn
            .prepare("SELECT body FROM workers")
            .map_err(map_err)?;
        let bodies: Vec<String> = st
            .query_map([], |r| r.get(0))
            .map_err(map_err)?
            .collect::<Result<_, _>>()
            .map_err(map_err)?;
        drop(st);
        self.workers.clear();
        for b in bodies {
            let w: Worker = serde_json::from_str(&b).map_err(|e| corrupt("worker", e))?;
            self.workers.insert(w.hostname.clone(), w);
        }
        Ok(())
    }

    fn begin(&mut self) -> StoreResult<Transaction<'_>> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_err)
    }

    /// Apply one batch atomically.
    pub(crate) fn apply(&mut self, events: &[Event]) -> StoreResult<ApplyReport> {
        let mut touched: Vec<String> = Vec::new();
        let result = self.apply_inner(events, &mut touched);
        if result.is_err() {
            // The transaction rolled back: forget what the batch did in memory.
            for id in &touched {
                self.cache.map.remove(id);
            }
            if let Err(err) = self.reload_state() {
                tracing::error!(error = %err, "reloading writer state after a failed batch");
            }
        }
        self.cache.trim();
        result
    }

    fn apply_inner(
        &mut self,
        events: &[Event],
        touched: &mut Vec<String>,
    ) -> StoreResult<ApplyReport> {
        let phase_start = std::time::Instant::now();
        let mut report = ApplyReport::default();
        let mut before: HashMap<String, Before> = HashMap::new();
        let mut worker_dirty: Vec<String> = Vec::new();
        let mut history: Vec<WorkerStatusChange> = Vec::new();
        let acked: Vec<(i64, i64)> = std::mem::take(&mut *self.acked.lock());
        let mut next_seq = self.next_seq;

        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_err)?;
        {
            let mut ins_event = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO task_events (task_seq, ts_us, kind, hostname, clock, ts, fields)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(map_err)?;
            let mut load = tx
                .prepare_cached("SELECT body FROM tasks WHERE seq = ?1")
                .map_err(map_err)?;
            for event in events {
                if let Some(reason) = check_event(event) {
                    report.skip(reason);
                    continue;
                }
                match event {
                    Event::Task(e) => {
                        // Find the task: cache, database, or new.
                        if !self.cache.map.contains_key(&e.uuid) {
                            let row: Option<(i64, String)> =
                                match self.ids.lookup(&tx, &e.uuid).map_err(map_err)? {
                                    Some(seq) => load
                                        .query_row([seq], |r| r.get(0))
                                        .optional()
                                        .map_err(map_err)?
                                        .map(|body| (seq, body)),
                                    None => None,
                                };
                            if let Some((seq, body)) = row {
                                let task: Task = serde_json::from_str(&body)
                                    .map_err(|err| corrupt("task", err))?;
                                self.cache.insert(
                                    e.uuid.clone(),
                                    Slot {
                                        seq,
                                        task: Box::new(task),
                                    },
                                );
                            }
                        }
                        let seq = match self.cache.map.get(&e.uuid) {
                            Some(slot) => slot.seq,
                            None => next_seq,
                        };
                        let k = e.dedup_key();
                        let inserted = ins_event
                            .execute(params![
                                seq,
                                k.micros,
                                k.kind,
                                k.hostname,
                                k.clock as i64,
                                e.timestamp,
                                event_fields(e)?
                            ])
                            .map_err(map_err)?;
                        if inserted == 0 {
                            report.skip(SkipReason::Duplicate);
                            continue;
                        }
                        report.applied += 1;
                        match self.cache.map.get_mut(&e.uuid) {
                            Some(slot) => {
                                let b = before.entry(e.uuid.clone()).or_insert_with(|| {
                                    touched.push(e.uuid.clone());
                                    Before {
                                        existed: true,
                                        cols: Cols::of(&slot.task),
                                        text_changed: false,
                                        retried: Vec::new(),
                                    }
                                });
                                if matches!(e.kind, cnc_model::TaskEventKind::Retried) {
                                    b.retried.push(e.timestamp);
                                }
                                let change = apply_task_event(&mut slot.task, e, false);
                                b.text_changed |= change.text_changed;
                            }
                            None => {
                                let (task, _) = task_from_event(e);
                                next_seq += 1;
                                touched.push(e.uuid.clone());
                                let retried = if matches!(e.kind, cnc_model::TaskEventKind::Retried)
                                {
                                    vec![e.timestamp]
                                } else {
                                    Vec::new()
                                };
                                before.insert(
                                    e.uuid.clone(),
                                    Before {
                                        existed: false,
                                        cols: Cols::of(&task),
                                        text_changed: true,
                                        retried,
                                    },
                                );
                                self.cache.insert(
                                    e.uuid.clone(),
                                    Slot {
                                        seq,
                                        task: Box::new(task),
                                    },
                                );
                            }
                        }
                    }
                    Event::Worker(e) => {
                        report.applied += 1;
                        let change = match self.workers.get_mut(&e.hostname) {
                            Some(w) => apply_worker_event(w, e),
                            None => {
                                let (w, change) = worker_from_event(e);
                                self.workers.insert(e.hostname.clone(), w);
                                change
                            }
                        };
                        if !worker_dirty.contains(&e.hostname) {
                            worker_dirty.push(e.hostname.clone());
                        }
                        if let Some(c) = change {
                            history.push(c);
                        }
                    }
                    Event::Unknown(_) => report.skip(SkipReason::UnknownType),
                }
            }
        }

        let t_fold = phase_start.elapsed();
        // Write touched tasks and the aggregates.
        let now = cnc_model::now();
        let mut counts: HashMap<(String, String, &'static str), i64> = HashMap::new();
        let mut minutes: HashMap<(i64, &'static str, String, String), i64> = HashMap::new();
        let mut new_ids: Vec<(String, i64)> = Vec::new();
        // Lowest and highest seq created per minute (schema v4+).
        let mut seq_minutes: HashMap<i64, (i64, i64)> = HashMap::new();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO tasks (seq, id, name, state, worker, created_at, updated_at,
                        received_at, started_at, succeeded_at, runtime, root_id, parent_id, group_id, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .map_err(map_err)?;
            let mut pending = tx
                .prepare_cached(
                    "INSERT INTO search_pending (seq, since, ver) VALUES (?1, ?2, 1)
                     ON CONFLICT (seq) DO UPDATE SET ver = ver + 1",
                )
                .map_err(map_err)?;
            for id in touched.iter() {
                let (Some(slot), Some(b)) = (self.cache.map.get(id), before.get(id)) else {
                    continue;
                };
                let t = &slot.task;
                let body = serde_json::to_string(t).map_err(|e| corrupt("task", e))?;
                if b.existed {
                    report.tasks_updated += 1;
                    update_task(&tx, &mut self.update_sql, slot.seq, &b.cols, t, &body)?;
                } else {
                    report.tasks_created += 1;
                    new_ids.push((t.id.clone(), slot.seq));
                    insert
                        .execute(params![
                            slot.seq,
                            t.id,
                            t.name,
                            t.state.as_str(),
                            t.worker,
                            t.created_at,
                            t.updated_at,
                            t.received_at,
                            t.started_at,
                            t.succeeded_at,
                            t.runtime,
                            t.root_id,
                            t.parent_id,
                            t.group_id,
                            body
                        ])
                        .map_err(map_err)?;
                }
                if !b.existed || b.cols.created_at != t.created_at {
                    let m = seq_minutes
                        .entry(created_minute(t.created_at))
                        .or_insert((slot.seq, slot.seq));
                    m.0 = m.0.min(slot.seq);
                    m.1 = m.1.max(slot.seq);
                }
                report.changed_tasks.push(id.clone());
                // Search text.
                if b.text_changed {
                    pending.execute(params![slot.seq, now]).map_err(map_err)?;
                }
                // Count deltas.
                if b.existed {
                    *counts
                        .entry((
                            key(&b.cols.name).to_owned(),
                            key(&b.cols.worker).to_owned(),
                            b.cols.state.as_str(),
                        ))
                        .or_default() -= 1;
                    if let Some(f) = b.cols.finished_at {
                        *minutes
                            .entry((
                                minute(f),
                                b.cols.state.as_str(),
                                key(&b.cols.name).to_owned(),
                                key(&b.cols.worker).to_owned(),
                            ))
                            .or_default() -= 1;
                    }
                }
                *counts
                    .entry((
                        key(&t.name).to_owned(),
                        key(&t.worker).to_owned(),
                        t.state.as_str(),
                    ))
                    .or_default() += 1;
                if let Some(f) = t.finished_at() {
                    *minutes
                        .entry((
                            minute(f),
                            t.state.as_str(),
                            key(&t.name).to_owned(),
                            key(&t.worker).to_owned(),
                        ))
                        .or_default() += 1;
                }
                for r in &b.retried {
                    *minutes
                        .entry((
                            minute(*r),
                            TaskState::Retry.as_str(),
                            key(&t.name).to_owned(),
                            key(&t.worker).to_owned(),
                        ))
                        .or_default() += 1;
                }
            }
        }
        {
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO task_counts (name, worker, state, count) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name, worker, state) DO UPDATE SET count = count + excluded.count",
                )
                .map_err(map_err)?;
            for ((n, w, s), d) in counts {
                if d != 0 {
                    up.execute(params![n, w, s, d]).map_err(map_err)?;
                }
            }
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO agg_minute (minute, state, name, worker, count) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (minute, state, name, worker) DO UPDATE SET count = count + excluded.count",
                )
                .map_err(map_err)?;
            for ((m, s, n, w), d) in minutes {
                if d != 0 {
                    up.execute(params![m, s, n, w, d]).map_err(map_err)?;
                }
            }
            let mut del = tx
                .prepare_cached("DELETE FROM search_pending WHERE seq = ?1 AND ver = ?2")
                .map_err(map_err)?;
            for (seq, ver) in &acked {
                del.execute(params![seq, ver]).map_err(map_err)?;
            }
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO workers (hostname, status, offline_since, first_seen, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (hostname) DO UPDATE SET status = excluded.status,
                        offline_since = excluded.offline_since, first_seen = excluded.first_seen,
                        body = excluded.body",
                )
                .map_err(map_err)?;
            for h in &worker_dirty {
                if let Some(w) = self.workers.get(h) {
                    let body = serde_json::to_string(w).map_err(|e| corrupt("worker", e))?;
                    up.execute(params![
                        w.hostname,
                        w.status.as_str(),
                        w.offline_since,
                        w.first_seen,
                        body
                    ])
                    .map_err(map_err)?;
                    report.workers_touched += 1;
                }
            }
            let mut hist = tx
                .prepare_cached(
                    "INSERT INTO worker_history (hostname, status, ts, reason) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(map_err)?;
            for c in &history {
                hist.execute(params![
                    c.hostname,
                    c.status.as_str(),
                    c.timestamp,
                    c.reason
                ])
                .map_err(map_err)?;
            }
        }
        if self.ids.mode() == Mode::Live && !seq_minutes.is_empty() {
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO seq_minute (minute, min_seq, max_seq) VALUES (?1, ?2, ?3)
                     ON CONFLICT (minute) DO UPDATE SET min_seq = min(min_seq, excluded.min_seq),
                        max_seq = max(max_seq, excluded.max_seq)",
                )
                .map_err(map_err)?;
            for (m, (lo, hi)) in &seq_minutes {
                up.execute(params![m, lo, hi]).map_err(map_err)?;
            }
        }
        // The id index: a legacy schema still has `tasks_id`; otherwise one
        // range of a merge round goes into `task_ids` with this batch.
        let merging = if self.ids.mode() == Mode::Live {
            if self.round.is_none() && self.ids.pending() >= self.ids.merge_at() {
                self.round = Some(MergeRound::start(&self.ids, self.next_seq - 1));
            }
            match &self.round {
                Some(round) => {
                    let (range, last) = round.next_range();
                    let mut put = tx
                        .prepare_cached("INSERT OR REPLACE INTO task_ids (id, seq) VALUES (?1, ?2)")
                        .map_err(map_err)?;
                    for (id, seq) in &round.ids[range.clone()] {
                        // Deleted or re-created since the round started.
                        if self.ids.recent(id) == Some(*seq) {
                            put.execute(params![&**id, seq]).map_err(map_err)?;
                        }
                    }
                    if last {
                        tx.execute(
                            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                            params![MERGED_KEY, round.upto.to_string()],
                        )
                        .map_err(map_err)?;
                    }
                    Some((range, last))
                }
                None => None,
            }
        } else {
            None
        };
        let t_write = phase_start.elapsed();
        if let Err(e) = tx.commit().map_err(map_err) {
            // Put back the acknowledgements we could not record.
            self.acked.lock().extend(acked);
            return Err(e);
        }
        // After the commit: new ids become visible in memory, merged ones
        // leave it (readers then find them in `task_ids`).
        self.ids.add(new_ids);
        if let (Some((range, last)), Some(round)) = (merging, self.round.as_mut()) {
            self.ids.merged(&round.ids[range.clone()]);
            round.next = range.end;
            if last {
                self.round = None;
            }
        }
        tracing::debug!(
            fold_us = t_fold.as_micros() as u64,
            write_us = (t_write - t_fold).as_micros() as u64,
            commit_us = (phase_start.elapsed() - t_write).as_micros() as u64,
            events = events.len(),
            "sqlite batch phases"
        );
        self.next_seq = next_seq;
        report.worker_changes = history;
        let malformed = report.skipped_total() - report.skipped_for(SkipReason::Duplicate);
        if malformed > 0 {
            tracing::warn!(skipped = ?report.skipped, "sqlite store: skipped malformed or unknown events");
        }
        Ok(report)
    }

    /// Where cleanup sends the ids of removed tasks for the search index.
    pub(crate) fn set_indexer(&mut self, tx: Option<std::sync::mpsc::Sender<IndexCmd>>) {
        self.indexer = tx;
    }

    /// Record acknowledged search work when no batch comes to do it.
    pub(crate) fn drain_acked(&mut self) -> StoreResult<()> {
        let acked: Vec<(i64, i64)> = std::mem::take(&mut *self.acked.lock());
        if acked.is_empty() {
            return Ok(());
        }
        let r = (|| {
            let tx = self.begin()?;
            {
                let mut del = tx
                    .prepare_cached("DELETE FROM search_pending WHERE seq = ?1 AND ver = ?2")
                    .map_err(map_err)?;
                for (seq, ver) in &acked {
                    del.execute(params![seq, ver]).map_err(map_err)?;
                }
            }
            tx.commit().map_err(map_err)
        })();
        if r.is_err() {
            self.acked.lock().extend(acked);
        }
        r
    }

    /// Store inspect results for a worker.
    pub(crate) fn set_worker_info(
        &mut self,
        hostname: &str,
        info: Value,
        at: Timestamp,
    ) -> StoreResult<()> {
        let mut w = self
            .workers
            .get(hostname)
            .cloned()
            .unwrap_or_else(|| Worker::new(hostname, at));
        w.info = Some(info);
        w.info_updated_at = Some(at);
        let body = serde_json::to_string(&w).map_err(|e| corrupt("worker", e))?;
        self.conn
            .execute(
                "INSERT INTO workers (hostname, status, offline_since, first_seen, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (hostname) DO UPDATE SET body = excluded.body",
                params![
                    w.hostname,
                    w.status.as_str(),
                    w.offline_since,
                    w.first_seen,
                    body
                ],
            )
            .map_err(map_err)?;
        self.workers.insert(hostname.to_owned(), w);
        Ok(())
    }

    /// Remove workers offline since before `t`.
    pub(crate) fn prune_workers(&mut self, t: Timestamp) -> StoreResult<u64> {
        let gone: Vec<String> = self
            .workers
            .values()
            .filter(|w| {
                w.status == WorkerStatus::Offline && w.offline_since.unwrap_or(w.first_seen) < t
            })
            .map(|w| w.hostname.clone())
            .collect();
        let tx = self.begin()?;
        for h in &gone {
            tx.execute("DELETE FROM workers WHERE hostname = ?1", [h])
                .map_err(map_err)?;
            tx.execute("DELETE FROM worker_history WHERE hostname = ?1", [h])
                .map_err(map_err)?;
        }
        tx.commit().map_err(map_err)?;
        for h in &gone {
            self.workers.remove(h);
        }
        Ok(gone.len() as u64)
    }

    /// Schedules CRUD.
    pub(crate) fn upsert_schedule(&mut self, s: &Schedule) -> StoreResult<()> {
        let body = serde_json::to_string(s).map_err(|e| corrupt("schedule", e))?;
        self.conn
            .execute(
                "INSERT INTO schedules (name, body) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                params![s.name, body],
            )
            .map_err(map_err)?;
        Ok(())
    }

    pub(crate) fn delete_schedule(&mut self, name: &str) -> StoreResult<bool> {
        let n = self
            .conn
            .execute("DELETE FROM schedules WHERE name = ?1", [name])
            .map_err(map_err)?;
        Ok(n > 0)
    }

    pub(crate) fn delete_all_schedules(&mut self) -> StoreResult<u64> {
        let n = self
            .conn
            .execute("DELETE FROM schedules", [])
            .map_err(map_err)?;
        Ok(n as u64)
    }

    /// Retention: remove tasks last updated before `t`, in chunks so the
    /// writer never holds the lock for long.
    pub(crate) fn cleanup(&mut self, t: Timestamp) -> StoreResult<CleanupReport> {
        const CHUNK: i64 = 5_000;
        let mut report = CleanupReport::default();
        let live = self.ids.mode() == Mode::Live;
        loop {
            let tx = self.begin()?;
            let rows: Vec<CleanupRow> = {
                let mut st = tx
                    .prepare_cached(
                        "SELECT seq, id, name, worker, state FROM tasks WHERE updated_at < ?1 LIMIT ?2",
                    )
                    .map_err(map_err)?;
                st.query_map(params![t, CHUNK], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(map_err)?
                .collect::<Result<_, _>>()
                .map_err(map_err)?
            };
            if rows.is_empty() {
                tx.commit().map_err(map_err)?;
                break;
            }
            let mut counts: HashMap<(String, String, String), i64> = HashMap::new();
            {
                let mut del_ev = tx
                    .prepare_cached("DELETE FROM task_events WHERE task_seq = ?1")
                    .map_err(map_err)?;
                let mut del_task = tx
                    .prepare_cached("DELETE FROM tasks WHERE seq = ?1")
                    .map_err(map_err)?;
                let mut del_pending = tx
                    .prepare_cached("DELETE FROM search_pending WHERE seq = ?1")
                    .map_err(map_err)?;
                let mut del_id = if live {
                    Some(
                        tx.prepare_cached("DELETE FROM task_ids WHERE id = ?1 AND seq = ?2")
                            .map_err(map_err)?,
                    )
                } else {
                    None
                };
                for (seq, id, name, worker, state) in &rows {
                    report.events += del_ev.execute([seq]).map_err(map_err)? as u64;
                    report.tasks += del_task.execute([seq]).map_err(map_err)? as u64;
                    del_pending.execute([seq]).map_err(map_err)?;
                    if let Some(del_id) = del_id.as_mut() {
                        del_id.execute(params![id, seq]).map_err(map_err)?;
                    }
                    *counts
                        .entry((key(name).to_owned(), key(worker).to_owned(), state.clone()))
                        .or_default() += 1;
                }
                let mut dec = tx
                    .prepare_cached(
                        "UPDATE task_counts SET count = count - ?4 WHERE name = ?1 AND worker = ?2 AND state = ?3",
                    )
                    .map_err(map_err)?;
                for ((n, w, s), d) in &counts {
                    dec.execute(params![n, w, s, d]).map_err(map_err)?;
                }
            }
            tx.execute("DELETE FROM task_counts WHERE count <= 0", [])
                .map_err(map_err)?;
            tx.commit().map_err(map_err)?;
            for (_, id, ..) in &rows {
                self.cache.map.remove(id);
            }
            self.ids.remove(rows.iter().map(|r| r.1.as_str()));
            if let Some(ix) = &self.indexer {
                let _ = ix.send(IndexCmd::Delete(rows.iter().map(|r| r.0).collect()));
            }
        }
        self.cache
            .order
            .retain(|id| self.cache.map.contains_key(id));
        let tx = self.begin()?;
        tx.execute("DELETE FROM agg_minute WHERE minute < ?1", [minute(t)])
            .map_err(map_err)?;
        if live {
            // Minutes before the oldest task left can no longer bound any.
            tx.execute(
                "DELETE FROM seq_minute WHERE minute <
                    coalesce((SELECT CAST(min(created_at) / 60 AS INTEGER) FROM tasks), 9223372036854775807)",
                [],
            )
            .map_err(map_err)?;
        }
        report.worker_history = tx
            .execute("DELETE FROM worker_history WHERE ts < ?1", [t])
            .map_err(map_err)? as u64;
        tx.commit().map_err(map_err)?;
        Ok(report)
    }

    /// Remove everything but schedules.
    pub(crate) fn purge(&mut self) -> StoreResult<()> {
        let live = self.ids.mode() == Mode::Live;
        let tx = self.begin()?;
        tx.execute_batch(
            "DELETE FROM task_events; DELETE FROM tasks; DELETE FROM workers; DELETE FROM worker_history;
             DELETE FROM task_counts; DELETE FROM agg_minute; DELETE FROM search_pending;",
        )
        .map_err(map_err)?;
        if live {
            tx.execute("DELETE FROM seq_minute", []).map_err(map_err)?;
            tx.execute("DELETE FROM task_ids", []).map_err(map_err)?;
            tx.execute("DELETE FROM meta WHERE key = ?1", [MERGED_KEY])
                .map_err(map_err)?;
        }
        tx.commit().map_err(map_err)?;
        self.ids.replace(HashMap::new());
        self.round = None;
        self.acked.lock().clear();
        self.cache.clear();
        self.workers.clear();
        Ok(())
    }
}

/// Columns of `tasks` that an update may change, in bit order.
const COLUMNS: [&str; 12] = [
    "name",
    "state",
    "worker",
    "created_at",
    "updated_at",
    "received_at",
    "started_at",
    "succeeded_at",
    "runtime",
    "root_id",
    "parent_id",
    "group_id",
];

/// Update only the columns that changed, so SQLite only touches the indexes
/// over them (a state change rewrites one index entry, not nine). The SQL
/// of each set of changed columns is built once.
fn update_task(
    tx: &Transaction<'_>,
    sql_cache: &mut HashMap<u16, String>,
    seq: i64,
    old: &Cols,
    new: &Task,
    body: &str,
) -> StoreResult<()> {
    use rusqlite::ToSql;
    let state = new.state.as_str();
    let mut values: Vec<&dyn ToSql> = Vec::with_capacity(14);
    values.push(&body);
    let changed = [
        new.name != old.name,
        new.state != old.state,
        new.worker != old.worker,
        new.created_at != old.created_at,
        new.updated_at != old.updated_at,
        new.received_at != old.received_at,
        new.started_at != old.started_at,
        new.succeeded_at != old.succeeded_at,
        new.runtime != old.runtime,
        new.root_id != old.root_id,
        new.parent_id != old.parent_id,
        new.group_id != old.group_id,
    ];
    let mask = changed
        .iter()
        .enumerate()
        .fold(0u16, |m, (bit, c)| if *c { m | 1 << bit } else { m });
    let cols: [&dyn ToSql; 12] = [
        &new.name,
        &state,
        &new.worker,
        &new.created_at,
        &new.updated_at,
        &new.received_at,
        &new.started_at,
        &new.succeeded_at,
        &new.runtime,
        &new.root_id,
        &new.parent_id,
        &new.group_id,
    ];
    for (bit, v) in cols.into_iter().enumerate() {
        if mask & (1 << bit) != 0 {
            values.push(v);
        }
    }
    values.push(&seq);
    let sql = sql_cache.entry(mask).or_insert_with(|| {
        let mut sql = String::from("UPDATE tasks SET body = ?1");
        let mut n = 1;
        for (bit, col) in COLUMNS.iter().enumerate() {
            if mask & (1 << bit) != 0 {
                n += 1;
                sql.push_str(&format!(", {col} = ?{n}"));
            }
        }
        sql.push_str(&format!(" WHERE seq = ?{}", n + 1));
        sql
    });
    let mut st = tx.prepare_cached(sql).map_err(map_err)?;
    st.execute(values.as_slice()).map_err(map_err)?;
    Ok(())
}

/// All final states as SQL literals, for queries.
pub(crate) fn final_states_sql() -> String {
    FINAL_STATES
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The highest `seq` whose id is merged into `task_ids` (0: none).
fn merged_seq(conn: &Connection) -> StoreResult<i64> {
    let v: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [MERGED_KEY], |r| {
            r.get(0)
        })
        .optional()
        .map_err(map_err)?;
    match v {
        None => Ok(0),
        Some(v) => v.parse().map_err(|e| {
            cnc_model::StoreError::new(
                cnc_model::StoreErrorKind::Corrupt,
                format!("stored meta {MERGED_KEY} {v:?} is not a number: {e}"),
            )
        }),
    }
}

/// The `seq_minute` key of a creation time, as the v4 backfill computes it
/// (`CAST(created_at / 60 AS INTEGER)`: truncation); readers bound windows
/// with the same key.
pub(crate) fn created_minute(t: Timestamp) -> i64 {
    (t / 60.0) as i64
}
