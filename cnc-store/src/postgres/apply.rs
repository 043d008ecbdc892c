//! The write path: `apply`, worker info, schedules, retention.
//!
//! # How `apply` works
//!
//! Validation, NUL cleaning, in-batch de-duplication and event JSON are done
//! in Rust before a connection is taken. Then, in one transaction:
//!
//! 1. insert every event into `task_events` in key order, `ON CONFLICT DO
//!    NOTHING RETURNING` the key: the returned keys are the new events (an
//!    event another instance is inserting right now makes us wait for its
//!    commit, then counts as a duplicate);
//! 2. `SELECT ... FOR UPDATE` the existing rows of the touched tasks, in id
//!    order;
//! 3. fold the new events in batch order with [`cnc_model::fold`];
//! 4. write every touched task with one `INSERT ... SELECT FROM unnest(...)
//!    ON CONFLICT (id) DO UPDATE ... WHERE tasks.seq = EXCLUDED.seq`, in id
//!    order. New tasks get sequence numbers reserved in first-seen order, so
//!    the seen order follows event order while rows are still written in id
//!    order. If another instance created one of "our new" tasks in the
//!    meantime, the guard refuses the overwrite, fewer rows are written than
//!    sent, and the whole transaction is retried (it then loads that row);
//! 5. queue the tasks whose searchable text changed in `search_pending`
//!    (seq order); the background indexer (`search.rs`) writes
//!    `task_search` later, within the contract's `search_lag`, so the costly
//!    trigram GIN index is off this path;
//! 6. aggregate deltas (per-minute finished counts, retries, name counts),
//!    then workers and their history, each set-based and in key order.
//!
//! All locks are taken in one global order (event keys, tasks, search queue,
//! aggregates, workers; each sorted), so concurrent writers wait for each other but
//! cannot deadlock; PostgreSQL's deadlock and serialization errors are still
//! retried, a few times, to be safe.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use cnc_model::fold::{apply_task_event, apply_worker_event, task_from_event, worker_from_event};
use cnc_model::model::{
    Event, Schedule, Task, TaskEvent, TaskEventKind, Timestamp, Worker, WorkerEvent, WorkerStatus,
    WorkerStatusChange,
};
use cnc_model::store::{
    ApplyReport, CleanupReport, SkipReason, StoreError, StoreErrorKind, StoreResult, check_event,
};
use deadpool_postgres::{GenericClient, Transaction};
use serde_json::Value;

use super::error::{self, pg};
use super::{PostgresStore, search};

/// Attempts of one `apply` before giving up with [`StoreErrorKind::Busy`].
const MAX_ATTEMPTS: u32 = 8;

// ---------------------------------------------------------------------------
// Text cleaning: PostgreSQL text cannot hold U+0000.

/// Replace U+0000 with U+FFFD, in place.
pub(crate) fn clean(s: &mut String) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
    }
}

/// `s` without U+0000.
pub(crate) fn cleaned(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn value_has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(value_has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || value_has_nul(v)),
        _ => false,
    }
}

fn clean_value(v: &mut Value) {
    match v {
        Value::String(s) => clean(s),
        Value::Array(a) => a.iter_mut().for_each(clean_value),
        Value::Object(m) => {
            if m.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(m);
                for (mut k, v) in old {
                    clean(&mut k);
                    m.insert(k, v);
                }
            }
            m.values_mut().for_each(clean_value);
        }
        _ => {}
    }
}

fn opt_has_nul(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| s.contains('\0'))
}

fn clean_opt(s: &mut Option<String>) {
    if let Some(s) = s {
        clean(s);
    }
}

fn clean_task_event(e: &TaskEvent) -> Cow<'_, TaskEvent> {
    let strings = [
        &e.hostname,
        &e.name,
        &e.args,
        &e.kwargs,
        &e.result,
        &e.exception,
        &e.traceback,
        &e.root_id,
        &e.parent_id,
        &e.group_id,
        &e.chord_id,
        &e.eta,
        &e.expires,
        &e.queue,
        &e.exchange,
        &e.routing_key,
    ];
    let dirty = e.uuid.contains('\0')
        || e.kind.as_str().contains('\0')
        || strings.into_iter().any(opt_has_nul)
        || e.extra
            .iter()
            .any(|(k, v)| k.contains('\0') || value_has_nul(v));
    if !dirty {
        return Cow::Borrowed(e);
    }
    let mut e = e.clone();
    clean(&mut e.uuid);
    if let TaskEventKind::Other(k) = &mut e.kind {
        clean(k);
    }
    for s in [
        &mut e.hostname,
        &mut e.name,
        &mut e.args,
        &mut e.kwargs,
        &mut e.result,
        &mut e.exception,
        &mut e.traceback,
        &mut e.root_id,
        &mut e.parent_id,
        &mut e.group_id,
        &mut e.chord_id,
        &mut e.eta,
        &mut e.expires,
        &mut e.queue,
        &mut e.exchange,
        &mut e.routing_key,
    ] {
        clean_opt(s);
    }
    let mut extra = Value::Object(std::mem::take(&mut e.extra));
    clean_value(&mut extra);
    if let Value::Object(m) = extra {
        e.extra = m;
    }
    Cow::Owned(e)
}

fn clean_worker_event(e: &WorkerEvent) -> Cow<'_, WorkerEvent> {
    let dirty = e.hostname.contains('\0')
        || [&e.sw_ident, &e.sw_ver, &e.sw_sys]
            .into_iter()
            .any(opt_has_nul)
        || e.extra
            .iter()
            .any(|(k, v)| k.contains('\0') || value_has_nul(v));
    if !dirty {
        return Cow::Borrowed(e);
    }
    let mut e = e.clone();
    clean(&mut e.hostname);
    for s in [&mut e.sw_ident, &mut e.sw_ver, &mut e.sw_sys] {
        clean_opt(s);
    }
    let mut extra = Value::Object(std::mem::take(&mut e.extra));
    clean_value(&mut extra);
    if let Value::Object(m) = extra {
        e.extra = m;
    }
    Cow::Owned(e)
}

// ---------------------------------------------------------------------------
// Preparation (no I/O).

/// Keys the events table stores, in the column order of its primary key.
struct PgKey<'a> {
    task_id: &'a str,
    kind: &'a str,
    hostname: &'a str,
    clock: i64,
    micros: i64,
}

struct Prepared<'a> {
    report: ApplyReport,
    tasks: Vec<Cow<'a, TaskEvent>>,
    /// JSON of each task event's `fields`.
    fields: Vec<String>,
    workers: Vec<Cow<'a, WorkerEvent>>,
}

/// The event's fields as stored: its JSON minus what lives on the task.
fn event_fields(e: &TaskEvent) -> StoreResult<String> {
    let mut v = serde_json::to_value(e).map_err(|err| error::encode("a task event", err))?;
    if let Value::Object(m) = &mut v {
        for k in [
            "type",
            "uuid",
            "hostname",
            "timestamp",
            "clock",
            "name",
            "args",
            "kwargs",
        ] {
            m.remove(k);
        }
    }
    serde_json::to_string(&v).map_err(|err| error::encode("a task event", err))
}

fn key_of(e: &TaskEvent) -> PgKey<'_> {
    PgKey {
        task_id: &e.uuid,
        kind: e.kind.as_str(),
        hostname: e.hostname.as_deref().unwrap_or(""),
        // Lamport clocks are u64; stored bit-for-bit in a bigint.
        clock: e.clock as i64,
        micros: (e.timestamp * 1e6).round() as i64,
    }
}

fn prepare(events: &[Event]) -> StoreResult<Prepared<'_>> {
    let mut p = Prepared {
        report: ApplyReport::default(),
        tasks: Vec::new(),
        fields: Vec::new(),
        workers: Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    for event in events {
        if let Some(reason) = check_event(event) {
            tracing::debug!(
                reason = reason.as_str(),
                kind = event.kind_str(),
                "skipped event"
            );
            p.report.skip(reason);
            continue;
        }
        match event {
            Event::Task(e) => {
                let e = clean_task_event(e);
                if !seen.insert(e.dedup_key()) {
                    p.report.skip(SkipReason::Duplicate);
                    continue;
                }
                p.fields.push(event_fields(&e)?);
                p.tasks.push(e);
            }
            Event::Worker(e) => p.workers.push(clean_worker_event(e)),
            Event::Unknown(_) => p.report.skip(SkipReason::UnknownType),
        }
    }
    Ok(p)
}

// ---------------------------------------------------------------------------
// apply

enum Failure {
    /// Roll back and run the whole batch again.
    Retry(StoreError),
    /// Give up.
    Fail(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Fail(e)
    }
}

fn db(what: &'static str) -> impl Fn(tokio_postgres::Error) -> Failure {
    move |e| {
        if error::retryable(&e) {
            Failure::Retry(pg(what, e))
        } else {
            Failure::Fail(pg(what, e))
        }
    }
}

pub(crate) async fn apply(store: &PostgresStore, events: &[Event]) -> StoreResult<ApplyReport> {
    let prep = prepare(events)?;
    if prep.tasks.is_empty() && prep.workers.is_empty() {
        // Still refuse work on a closed store.
        drop(store.conn().await?);
        return Ok(prep.report);
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut conn = store.conn().await?;
        let tx = conn
            .transaction()
            .await
            .map_err(|e| pg("starting a transaction", e))?;
        match apply_tx(&tx, &prep).await {
            Ok(report) => {
                tx.commit().await.map_err(|e| pg("committing a batch", e))?;
                return Ok(report);
            }
            Err(Failure::Fail(e)) => return Err(e),
            Err(Failure::Retry(e)) => {
                drop(tx);
                if attempt >= MAX_ATTEMPTS {
                    return Err(StoreError::new(
                        StoreErrorKind::Busy,
                        format!("postgres: batch still conflicting after {attempt} attempts"),
                    )
                    .with_source(e));
                }
                tracing::debug!(attempt, error = %e, "retrying a conflicting batch");
                tokio::time::sleep(Duration::from_millis(
                    5 * u64::from(attempt) + fastrand_jitter(),
                ))
                .await;
            }
        }
    }
}

/// A few milliseconds of jitter without a dependency: sub-second clock noise.
fn fastrand_jitter() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos() % 7))
}

/// The per-minute aggregate row a finished task counts in.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct MinuteKey {
    minute: i64,
    name: String,
    worker: String,
    state: &'static str,
}

fn minute_of(t: Timestamp) -> i64 {
    (t / 60.0).floor() as i64
}

fn minute_key(task: &Task) -> Option<MinuteKey> {
    task.finished_at().map(|t| MinuteKey {
        minute: minute_of(t),
        name: task.name.clone().unwrap_or_default(),
        worker: task.worker.clone().unwrap_or_default(),
        state: task.state.as_str(),
    })
}

struct Slot {
    task: Task,
    /// Sequence number: loaded for existing tasks, reserved for new ones.
    seq: i64,
    existed: bool,
    before: Option<MinuteKey>,
    had_name: bool,
    /// The searchable text as loaded (empty for new tasks), to tell whether
    /// the task must be queued for the search indexer.
    search_before: String,
}

async fn apply_tx(tx: &Transaction<'_>, prep: &Prepared<'_>) -> Result<ApplyReport, Failure> {
    let mut report = prep.report.clone();

    // 1. Events: the primary key de-duplicates.
    let mut new_events = vec![false; prep.tasks.len()];
    if !prep.tasks.is_empty() {
        let keys: Vec<PgKey<'_>> = prep.tasks.iter().map(|e| key_of(e)).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.task_id).collect();
        let kinds: Vec<&str> = keys.iter().map(|k| k.kind).collect();
        let hosts: Vec<&str> = keys.iter().map(|k| k.hostname).collect();
        let clocks: Vec<i64> = keys.iter().map(|k| k.clock).collect();
        let micros: Vec<i64> = keys.iter().map(|k| k.micros).collect();
        let ts: Vec<f64> = prep.tasks.iter().map(|e| e.timestamp).collect();
        let fields: Vec<&str> = prep.fields.iter().map(String::as_str).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO task_events (task_id, kind, hostname, clock, micros, ts, fields) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], \
                     $5::int8[], $6::float8[], $7::text[]) \
                     AS u(task_id, kind, hostname, clock, micros, ts, fields) \
                 ORDER BY task_id COLLATE \"C\", kind COLLATE \"C\", hostname COLLATE \"C\", \
                     clock, micros \
                 ON CONFLICT (task_id, kind, hostname, clock, micros) DO NOTHING \
                 RETURNING task_id, kind, hostname, clock, micros",
            )
            .await
            .map_err(db("preparing the event insert"))?;
        let rows = tx
            .query(
                &stmt,
                &[&ids, &kinds, &hosts, &clocks, &micros, &ts, &fields],
            )
            .await
            .map_err(db("storing events"))?;
        let mut index: HashMap<(&str, &str, &str, i64, i64), usize> =
            HashMap::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            index.insert((k.task_id, k.kind, k.hostname, k.clock, k.micros), i);
        }
        for row in &rows {
            let k: (&str, &str, &str, i64, i64) =
                (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
            if let Some(&i) = index.get(&k) {
                new_events[i] = true;
            }
        }
        let dups = new_events.iter().filter(|n| !**n).count();
        for _ in 0..dups {
            report.skip(SkipReason::Duplicate);
        }
    }

    // 2. Load the touched tasks, locked, in id order.
    let mut order: Vec<&str> = Vec::new();
    let mut first_touch: HashMap<&str, usize> = HashMap::new();
    for (e, _) in prep.tasks.iter().zip(&new_events).filter(|(_, n)| **n) {
        if let Entry::Vacant(v) = first_touch.entry(e.uuid.as_str()) {
            v.insert(order.len());
            order.push(e.uuid.as_str());
        }
    }
    let mut slots: Vec<Option<Slot>> = Vec::new();
    slots.resize_with(order.len(), || None);
    if !order.is_empty() {
        let stmt = tx
            .prepare_cached(
                "SELECT id, seq, data FROM tasks WHERE id = ANY($1::text[]) \
                 ORDER BY id COLLATE \"C\" FOR UPDATE",
            )
            .await
            .map_err(db("preparing the task load"))?;
        let rows = tx
            .query(&stmt, &[&order])
            .await
            .map_err(db("loading tasks"))?;
        for row in rows {
            let id: &str = row.get(0);
            let seq: i64 = row.get(1);
            let data: &str = row.get(2);
            let task: Task = serde_json::from_str(data).map_err(|e| error::corrupt("task", e))?;
            if let Some(&i) = first_touch.get(id) {
                slots[i] = Some(Slot {
                    before: minute_key(&task),
                    had_name: task.name.is_some(),
                    search_before: task.search_text(),
                    task,
                    seq,
                    existed: true,
                });
            }
        }
    }

    // 3. Fold, in batch order. New tasks get reserved sequence numbers in
    //    first-seen order.
    let new_count = slots.iter().filter(|s| s.is_none()).count();
    let mut seqs = Vec::new();
    if new_count > 0 {
        let stmt = tx
            .prepare_cached(
                "SELECT nextval(pg_get_serial_sequence('tasks', 'seq')) \
                 FROM generate_series(1, $1::int8)",
            )
            .await
            .map_err(db("preparing the sequence"))?;
        let rows = tx
            .query(&stmt, &[&(new_count as i64)])
            .await
            .map_err(db("reserving sequence numbers"))?;
        seqs = rows.iter().map(|r| r.get::<_, i64>(0)).collect();
        seqs.sort_unstable();
    }
    let mut next_seq = seqs.into_iter();
    let mut retries: HashMap<i64, i64> = HashMap::new();
    for (e, _) in prep.tasks.iter().zip(&new_events).filter(|(_, n)| **n) {
        let Some(&i) = first_touch.get(e.uuid.as_str()) else {
            continue;
        };
        match &mut slots[i] {
            Some(slot) => {
                apply_task_event(&mut slot.task, e, false);
            }
            empty @ None => {
                let (task, _) = task_from_event(e);
                let seq = next_seq.next().ok_or_else(|| {
                    Failure::Fail(StoreError::new(
                        StoreErrorKind::Backend,
                        "postgres: sequence reservation came back short",
                    ))
                })?;
                *empty = Some(Slot {
                    task,
                    seq,
                    existed: false,
                    before: None,
                    had_name: false,
                    search_before: String::new(),
                });
            }
        }
        report.applied += 1;
        if e.kind == TaskEventKind::Retried {
            *retries.entry(minute_of(e.timestamp)).or_default() += 1;
        }
    }
    let slots: Vec<Slot> = slots.into_iter().flatten().collect();
    for slot in &slots {
        if slot.existed {
            report.tasks_updated += 1;
        } else {
            report.tasks_created += 1;
        }
        report.changed_tasks.push(slot.task.id.clone());
    }

    // 4. Write the tasks back, set-based, and queue changed search texts.
    if !slots.is_empty() {
        write_tasks(tx, &slots).await?;
        queue_search(tx, &slots).await?;
    }

    // 5. Aggregates.
    let mut minutes: HashMap<MinuteKey, i64> = HashMap::new();
    let mut names: HashMap<&str, i64> = HashMap::new();
    for slot in &slots {
        let after = minute_key(&slot.task);
        if slot.before != after {
            if let Some(k) = &slot.before {
                *minutes.entry(k.clone()).or_default() -= 1;
            }
            if let Some(k) = after {
                *minutes.entry(k).or_default() += 1;
            }
        }
        if !slot.had_name {
            if let Some(n) = &slot.task.name {
                *names.entry(n.as_str()).or_default() += 1;
            }
        }
    }
    write_aggregates(tx, minutes, names, retries).await?;

    // 6. Workers.
    if !prep.workers.is_empty() {
        apply_workers(tx, &prep.workers, &mut report).await?;
    }
    Ok(report)
}

async fn write_tasks(tx: &Transaction<'_>, slots: &[Slot]) -> Result<(), Failure> {
    let n = slots.len();
    let mut seq = Vec::with_capacity(n);
    let mut id = Vec::with_capacity(n);
    let mut name = Vec::with_capacity(n);
    let mut state = Vec::with_capacity(n);
    let mut worker = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut updated = Vec::with_capacity(n);
    let mut received = Vec::with_capacity(n);
    let mut started = Vec::with_capacity(n);
    let mut succeeded = Vec::with_capacity(n);
    let mut finished = Vec::with_capacity(n);
    let mut runtime = Vec::with_capacity(n);
    let mut root = Vec::with_capacity(n);
    let mut parent = Vec::with_capacity(n);
    let mut group = Vec::with_capacity(n);
    let mut data = Vec::with_capacity(n);
    for s in slots {
        let t = &s.task;
        seq.push(s.seq);
        id.push(t.id.as_str());
        name.push(t.name.as_deref());
        state.push(t.state.as_str());
        worker.push(t.worker.as_deref());
        created.push(t.created_at);
        updated.push(t.updated_at);
        received.push(t.received_at);
        started.push(t.started_at);
        succeeded.push(t.succeeded_at);
        finished.push(t.finished_at());
        runtime.push(t.runtime);
        root.push(t.root_id.as_deref());
        parent.push(t.parent_id.as_deref());
        group.push(t.group_id.as_deref());
        data.push(serde_json::to_string(t).map_err(|e| error::encode("a task", e))?);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO tasks (seq, id, name, state, worker, created_at, updated_at, \
                 received_at, started_at, succeeded_at, finished_at, runtime, root_id, \
                 parent_id, group_id, data) \
             SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::float8[], \
                 $11::float8[], $12::float8[], $13::text[], $14::text[], $15::text[], \
                 $16::text[]) \
                 AS u(seq, id, name, state, worker, created_at, updated_at, received_at, \
                 started_at, succeeded_at, finished_at, runtime, root_id, parent_id, group_id, \
                 data) \
             ORDER BY id COLLATE \"C\" \
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, state = EXCLUDED.state, \
                 worker = EXCLUDED.worker, created_at = EXCLUDED.created_at, \
                 updated_at = EXCLUDED.updated_at, received_at = EXCLUDED.received_at, \
                 started_at = EXCLUDED.started_at, succeeded_at = EXCLUDED.succeeded_at, \
                 finished_at = EXCLUDED.finished_at, runtime = EXCLUDED.runtime, \
                 root_id = EXCLUDED.root_id, parent_id = EXCLUDED.parent_id, \
                 group_id = EXCLUDED.group_id, data = EXCLUDED.data \
             WHERE tasks.seq = EXCLUDED.seq",
        )
        .await
        .map_err(db("preparing the task write"))?;
    let written = tx
        .execute(
            &stmt,
            &[
                &seq, &id, &name, &state, &worker, &created, &updated, &received, &started,
                &succeeded, &finished, &runtime, &root, &parent, &group, &data,
            ],
        )
        .await
        .map_err(db("writing tasks"))?;
    if written != n as u64 {
        // Another instance created one of our new tasks first.
        return Err(Failure::Retry(StoreError::new(
            StoreErrorKind::Busy,
            "postgres: a task was created concurrently",
        )));
    }
    Ok(())
}

/// Queue the tasks whose searchable text changed for the background indexer
/// (`search.rs`), in seq order (the lock order of `search_pending`). Final
/// tasks are due at once, others after [`search::INDEX_DELAY`]; a row
/// already queued keeps the earlier due time and gets a new `ver`, so an
/// indexer holding the older text does not drop the newer change.
async fn queue_search(tx: &Transaction<'_>, slots: &[Slot]) -> Result<(), Failure> {
    let mut queued: Vec<(i64, bool)> = slots
        .iter()
        .filter(|s| s.task.search_text() != s.search_before)
        .map(|s| (s.seq, s.task.finished_at().is_some()))
        .collect();
    if queued.is_empty() {
        return Ok(());
    }
    queued.sort_unstable();
    let seq: Vec<i64> = queued.iter().map(|(s, _)| *s).collect();
    let fin: Vec<bool> = queued.iter().map(|(_, f)| *f).collect();
    let delay = search::INDEX_DELAY.as_secs_f64();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO search_pending (seq, since, due) \
             SELECT u.seq, c.now, CASE WHEN u.fin THEN c.now ELSE c.now + $3::float8 END \
             FROM unnest($1::int8[], $2::bool[]) AS u(seq, fin), \
                 (SELECT extract(epoch FROM statement_timestamp())::float8 AS now) c \
             ORDER BY u.seq \
             ON CONFLICT (seq) DO UPDATE SET due = least(search_pending.due, EXCLUDED.due), \
                 ver = EXCLUDED.ver",
        )
        .await
        .map_err(db("preparing the search queue"))?;
    tx.execute(&stmt, &[&seq, &fin, &delay])
        .await
        .map_err(db("queueing search text"))?;
    Ok(())
}

async fn write_aggregates(
    tx: &Transaction<'_>,
    minutes: HashMap<MinuteKey, i64>,
    names: HashMap<&str, i64>,
    retries: HashMap<i64, i64>,
) -> Result<(), Failure> {
    let mut minutes: Vec<(MinuteKey, i64)> = minutes.into_iter().filter(|(_, d)| *d != 0).collect();
    if !minutes.is_empty() {
        minutes.sort();
        let m: Vec<i64> = minutes.iter().map(|(k, _)| k.minute).collect();
        let name: Vec<&str> = minutes.iter().map(|(k, _)| k.name.as_str()).collect();
        let worker: Vec<&str> = minutes.iter().map(|(k, _)| k.worker.as_str()).collect();
        let state: Vec<&str> = minutes.iter().map(|(k, _)| k.state).collect();
        let delta: Vec<i64> = minutes.iter().map(|(_, d)| *d).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO task_minutes (minute, name, worker, state, count) \
                 SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[]) \
                 ON CONFLICT (minute, name, worker, state) \
                 DO UPDATE SET count = task_minutes.count + EXCLUDED.count",
            )
            .await
            .map_err(db("preparing the minute aggregates"))?;
        tx.execute(&stmt, &[&m, &name, &worker, &state, &delta])
            .await
            .map_err(db("updating minute aggregates"))?;
    }
    let mut names: Vec<(&str, i64)> = names.into_iter().collect();
    if !names.is_empty() {
        names.sort();
        let name: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
        let count: Vec<i64> = names.iter().map(|(_, c)| *c).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO task_names (name, task_count) \
                 SELECT * FROM unnest($1::text[], $2::int8[]) \
                 ON CONFLICT (name) DO UPDATE SET task_count = task_names.task_count + EXCLUDED.task_count",
            )
            .await
            .map_err(db("preparing the name counts"))?;
        tx.execute(&stmt, &[&name, &count])
            .await
            .map_err(db("updating name counts"))?;
    }
    let mut retries: Vec<(i64, i64)> = retries.into_iter().collect();
    if !retries.is_empty() {
        retries.sort();
        let m: Vec<i64> = retries.iter().map(|(m, _)| *m).collect();
        let c: Vec<i64> = retries.iter().map(|(_, c)| *c).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO retry_minutes (minute, count) \
                 SELECT * FROM unnest($1::int8[], $2::int8[]) \
                 ON CONFLICT (minute) DO UPDATE SET count = retry_minutes.count + EXCLUDED.count",
            )
            .await
            .map_err(db("preparing the retry aggregates"))?;
        tx.execute(&stmt, &[&m, &c])
            .await
            .map_err(db("updating retry aggregates"))?;
    }
    Ok(())
}

fn worker_json(w: &Worker) -> Result<String, Failure> {
    serde_json::to_string(w).map_err(|e| Failure::Fail(error::encode("a worker", e)))
}

async fn apply_workers(
    tx: &Transaction<'_>,
    events: &[Cow<'_, WorkerEvent>],
    report: &mut ApplyReport,
) -> Result<(), Failure> {
    let mut hosts: Vec<&str> = events.iter().map(|e| e.hostname.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    let stmt = tx
        .prepare_cached(
            "SELECT hostname, data FROM workers WHERE hostname = ANY($1::text[]) \
             ORDER BY hostname COLLATE \"C\" FOR UPDATE",
        )
        .await
        .map_err(db("preparing the worker load"))?;
    let rows = tx
        .query(&stmt, &[&hosts])
        .await
        .map_err(db("loading workers"))?;
    let mut workers: HashMap<String, (Worker, bool)> = HashMap::new();
    for row in rows {
        let data: &str = row.get(1);
        let w: Worker = serde_json::from_str(data).map_err(|e| error::corrupt("worker", e))?;
        workers.insert(w.hostname.clone(), (w, true));
    }
    let mut changes: Vec<WorkerStatusChange> = Vec::new();
    report.applied += events.len() as u64;
    for e in events {
        let change = match workers.get_mut(e.hostname.as_str()) {
            Some((w, _)) => apply_worker_event(w, e),
            None => {
                let (w, change) = worker_from_event(e);
                workers.insert(w.hostname.clone(), (w, false));
                change
            }
        };
        changes.extend(change);
    }
    report.workers_touched += workers.len() as u64;

    let mut all: Vec<(&Worker, bool)> = workers.values().map(|(w, e)| (w, *e)).collect();
    all.sort_by(|a, b| a.0.hostname.cmp(&b.0.hostname));
    for existed in [false, true] {
        let part: Vec<&Worker> = all
            .iter()
            .filter(|(_, e)| *e == existed)
            .map(|(w, _)| *w)
            .collect();
        if part.is_empty() {
            continue;
        }
        let host: Vec<&str> = part.iter().map(|w| w.hostname.as_str()).collect();
        let status: Vec<&str> = part.iter().map(|w| w.status.as_str()).collect();
        let hb: Vec<Option<f64>> = part.iter().map(|w| w.last_heartbeat).collect();
        let off: Vec<Option<f64>> = part.iter().map(|w| w.offline_since).collect();
        let data = part
            .iter()
            .map(|w| worker_json(w))
            .collect::<Result<Vec<String>, Failure>>()?;
        let sql = if existed {
            "UPDATE workers w SET status = u.status, last_heartbeat = u.hb, \
                 offline_since = u.off, data = u.data \
             FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::text[]) \
                 AS u(hostname, status, hb, off, data) \
             WHERE w.hostname = u.hostname"
        } else {
            "INSERT INTO workers (hostname, status, last_heartbeat, offline_since, data) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::text[]) \
                 AS u(hostname, status, hb, off, data) \
             ORDER BY hostname COLLATE \"C\" \
             ON CONFLICT (hostname) DO NOTHING"
        };
        let stmt = tx
            .prepare_cached(sql)
            .await
            .map_err(db("preparing the worker write"))?;
        let written = tx
            .execute(&stmt, &[&host, &status, &hb, &off, &data])
            .await
            .map_err(db("writing workers"))?;
        if written != part.len() as u64 {
            return Err(Failure::Retry(StoreError::new(
                StoreErrorKind::Busy,
                "postgres: a worker was created concurrently",
            )));
        }
    }

    if !changes.is_empty() {
        let host: Vec<&str> = changes.iter().map(|c| c.hostname.as_str()).collect();
        let status: Vec<&str> = changes.iter().map(|c| c.status.as_str()).collect();
        let ts: Vec<f64> = changes.iter().map(|c| c.timestamp).collect();
        let reason: Vec<&str> = changes.iter().map(|c| c.reason.as_str()).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO worker_history (hostname, status, ts, reason) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[])",
            )
            .await
            .map_err(db("preparing the worker history"))?;
        tx.execute(&stmt, &[&host, &status, &ts, &reason])
            .await
            .map_err(db("writing worker history"))?;
    }
    report.worker_changes.extend(changes);
    Ok(())
}

// ---------------------------------------------------------------------------
// Workers, schedules, retention.

pub(crate) async fn set_worker_info(
    store: &PostgresStore,
    hostname: &str,
    mut info: Value,
    at: Timestamp,
) -> StoreResult<()> {
    let hostname = cleaned(hostname);
    if hostname.trim().is_empty() {
        return Err(StoreError::invalid("postgres: empty worker hostname"));
    }
    if value_has_nul(&info) {
        // Stored as JSON text, where NUL survives; cleaned anyway so every
        // text the adapter hands back follows one rule.
        clean_value(&mut info);
    }
    let mut conn = store.conn().await?;
    let tx = conn
        .transaction()
        .await
        .map_err(|e| pg("starting a transaction", e))?;
    let fresh = Worker::new(hostname.as_ref(), at);
    let fresh_json = serde_json::to_string(&fresh).map_err(|e| error::encode("a worker", e))?;
    tx.execute(
        "INSERT INTO workers (hostname, status, data) VALUES ($1, $2, $3) \
         ON CONFLICT (hostname) DO NOTHING",
        &[
            &hostname.as_ref(),
            &WorkerStatus::Offline.as_str(),
            &fresh_json,
        ],
    )
    .await
    .map_err(|e| pg("creating a worker", e))?;
    let row = tx
        .query_one(
            "SELECT data FROM workers WHERE hostname = $1 FOR UPDATE",
            &[&hostname.as_ref()],
        )
        .await
        .map_err(|e| pg("loading a worker", e))?;
    let data: &str = row.get(0);
    let mut worker: Worker = serde_json::from_str(data).map_err(|e| error::corrupt("worker", e))?;
    worker.info = Some(info);
    worker.info_updated_at = Some(at);
    let json = serde_json::to_string(&worker).map_err(|e| error::encode("a worker", e))?;
    tx.execute(
        "UPDATE workers SET data = $2 WHERE hostname = $1",
        &[&hostname.as_ref(), &json],
    )
    .await
    .map_err(|e| pg("storing worker info", e))?;
    tx.commit()
        .await
        .map_err(|e| pg("committing worker info", e))
}

pub(crate) async fn prune_workers(
    store: &PostgresStore,
    offline_before: Timestamp,
) -> StoreResult<u64> {
    let conn = store.conn().await?;
    let row = conn
        .query_one(
            "WITH gone AS ( \
                 DELETE FROM workers \
                 WHERE status = 'offline' \
                   AND coalesce(offline_since, \
                                (data::json ->> 'first_seen')::float8) < $1 \
                 RETURNING hostname), \
             h AS (DELETE FROM worker_history wh USING gone WHERE wh.hostname = gone.hostname) \
             SELECT count(*) FROM gone",
            &[&offline_before],
        )
        .await
        .map_err(|e| pg("pruning workers", e))?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

pub(crate) async fn upsert_schedule(store: &PostgresStore, schedule: &Schedule) -> StoreResult<()> {
    let data = serde_json::to_string(schedule).map_err(|e| error::encode("a schedule", e))?;
    let conn = store.conn().await?;
    conn.execute(
        "INSERT INTO schedules (name, data) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET data = EXCLUDED.data",
        &[&cleaned(&schedule.name).as_ref(), &data],
    )
    .await
    .map_err(|e| pg("storing a schedule", e))?;
    Ok(())
}

pub(crate) async fn delete_schedules(
    store: &PostgresStore,
    name: Option<&str>,
) -> StoreResult<u64> {
    let conn = store.conn().await?;
    let n = match name {
        Some(name) => {
            conn.execute(
                "DELETE FROM schedules WHERE name = $1",
                &[&cleaned(name).as_ref()],
            )
            .await
        }
        None => conn.execute("DELETE FROM schedules", &[]).await,
    }
    .map_err(|e| pg("deleting schedules", e))?;
    Ok(n)
}

pub(crate) async fn cleanup(
    store: &PostgresStore,
    older_than: Timestamp,
) -> StoreResult<CleanupReport> {
    let mut conn = store.conn().await?;
    let tx = conn
        .transaction()
        .await
        .map_err(|e| pg("starting a transaction", e))?;
    // Lock the doomed rows in id order, as `apply` does, so a cleanup running
    // beside an ingest cannot deadlock with it.
    let row = tx
        .query_one(
            "WITH doomed AS ( \
                 SELECT id FROM tasks WHERE updated_at < $1 \
                 ORDER BY id COLLATE \"C\" FOR UPDATE), \
             d AS (DELETE FROM tasks t USING doomed WHERE t.id = doomed.id \
                   RETURNING t.id, t.name, t.seq), \
             e AS (DELETE FROM task_events ev USING d WHERE ev.task_id = d.id RETURNING 1), \
             n AS (UPDATE task_names tn SET task_count = tn.task_count - c.n \
                   FROM (SELECT name, count(*) AS n FROM d WHERE name IS NOT NULL \
                         GROUP BY name) c \
                   WHERE tn.name = c.name RETURNING 1) \
             SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM e), (SELECT count(*) FROM n), \
                 (SELECT coalesce(array_agg(seq), '{}') FROM d)",
            &[&older_than],
        )
        .await
        .map_err(|e| pg("removing old tasks", e))?;
    let tasks: i64 = row.get(0);
    let events: i64 = row.get(1);
    let seqs: Vec<i64> = row.get(3);
    // Their search rows: the queue first (locked in seq order, as the
    // indexer does), then the text, as separate statements. A background indexer holding one of these queue rows makes
    // us wait here, before we lock any `task_search` row, and it only writes
    // the text of rows it holds, so the two cannot deadlock.
    if !seqs.is_empty() {
        tx.execute(
            "DELETE FROM search_pending WHERE seq IN (SELECT seq FROM search_pending \
             WHERE seq = ANY($1::int8[]) ORDER BY seq FOR UPDATE)",
            &[&seqs],
        )
        .await
        .map_err(|e| pg("removing old search queue rows", e))?;
        tx.execute(
            "DELETE FROM task_search WHERE seq = ANY($1::int8[])",
            &[&seqs],
        )
        .await
        .map_err(|e| pg("removing old search text", e))?;
    }
    let history = tx
        .execute("DELETE FROM worker_history WHERE ts < $1", &[&older_than])
        .await
        .map_err(|e| pg("removing old worker history", e))?;
    // Minutes that ended before the cut-off.
    tx.execute(
        "DELETE FROM task_minutes WHERE (minute + 1) * 60 <= $1::float8",
        &[&older_than],
    )
    .await
    .map_err(|e| pg("removing old aggregates", e))?;
    tx.execute(
        "DELETE FROM retry_minutes WHERE (minute + 1) * 60 <= $1::float8",
        &[&older_than],
    )
    .await
    .map_err(|e| pg("removing old aggregates", e))?;
    tx.execute("DELETE FROM task_names WHERE task_count <= 0", &[])
        .await
        .map_err(|e| pg("removing unused names", e))?;
    tx.commit()
        .await
        .map_err(|e| pg("committing a cleanup", e))?;
    Ok(CleanupReport {
        tasks: tasks.max(0) as u64,
        events: events.max(0) as u64,
        worker_history: history,
    })
}

pub(crate) async fn purge(store: &PostgresStore) -> StoreResult<()> {
    let conn = store.conn().await?;
    conn.batch_execute(
        "TRUNCATE tasks, task_events, task_names, workers, worker_history, task_minutes, \
         retry_minutes, task_search, search_pending",
    )
    .await
    .map_err(|e| pg("purging", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnc_model::model::TaskState;

    #[test]
    fn cleans_nul() {
        let mut e = TaskEvent::new(TaskEventKind::Succeeded, "a\0b", 1.0);
        e.result = Some("x\0".into());
        e.extra.insert("k\0".into(), Value::String("v\0".into()));
        let c = clean_task_event(&e);
        assert_eq!(c.uuid, "a\u{FFFD}b");
        assert_eq!(c.result.as_deref(), Some("x\u{FFFD}"));
        assert_eq!(
            c.extra.get("k\u{FFFD}"),
            Some(&Value::String("v\u{FFFD}".into()))
        );
        let plain = TaskEvent::new(TaskEventKind::Sent, "a", 1.0);
        assert!(matches!(clean_task_event(&plain), Cow::Borrowed(_)));
    }

    #[test]
    fn minute_keys() {
        assert_eq!(minute_of(119.9), 1);
        assert_eq!(minute_of(120.0), 2);
        let mut t = Task::new("t", 100.0);
        assert!(minute_key(&t).is_none());
        t.state = TaskState::Success;
        t.succeeded_at = Some(130.0);
        assert_eq!(minute_key(&t).map(|k| k.minute), Some(2));
    }
}
