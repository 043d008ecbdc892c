//! Reads of the SQLite store. Each runs on a pooled read connection (WAL:
//! readers never wait for the writer) with the search file attached as `s`.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use cnc_model::{
    Heatmap, NameCount, RuntimeStats, Schedule, StateCount, StatsQuery, StoreError, StoreResult,
    StoredEvent, Task, TaskFilter, TaskPage, TaskQuery, TaskRelation, TaskSortField, TaskState,
    ThroughputBucket, ThroughputQuery, TimeRange, Worker, WorkerStatus, WorkerStatusChange,
};

use super::error::{corrupt, map_err};
use super::ids::{Mode, TaskIds};
use super::search;
use super::writer::{created_minute, final_states_sql};

fn parse_task(body: &str) -> StoreResult<Task> {
    serde_json::from_str(body).map_err(|e| corrupt("task", e))
}

/// SQL pieces of a task filter.
struct Where {
    from: String,
    conds: Vec<String>,
    params: Vec<SqlValue>,
    /// The FTS index drives the scan (search of 3+ characters).
    fts: bool,
    /// `seq` bounds of a time window (`>= x`, `<= y`), to bound the FTS
    /// index's rowids too.
    seq_bounds: Vec<String>,
}

impl Where {
    fn param(&mut self, v: SqlValue) -> String {
        self.params.push(v);
        format!("?{}", self.params.len())
    }
}

/// Task names (from the counts table) whose lower-case form contains `needle`.
fn names_matching(conn: &Connection, needle: &str) -> StoreResult<Vec<String>> {
    let needle = needle.to_lowercase();
    let mut st = conn
        .prepare_cached("SELECT DISTINCT name FROM task_counts WHERE name <> '' AND count > 0")
        .map_err(map_err)?;
    let names: Vec<String> = st
        .query_map([], |r| r.get(0))
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    Ok(names
        .into_iter()
        .filter(|n| n.to_lowercase().contains(&needle))
        .collect())
}

/// Build the WHERE clause; `None` when the filter can match nothing.
fn build_where(conn: &Connection, ids: &TaskIds, f: &TaskFilter) -> StoreResult<Option<Where>> {
    let mut w = Where {
        from: "tasks t".into(),
        conds: Vec::new(),
        params: Vec::new(),
        fts: false,
        seq_bounds: Vec::new(),
    };
    let mut single_name = false;
    if !f.states.is_empty() {
        let list: Vec<String> = f
            .states
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        w.conds.push(format!("t.state IN ({})", list.join(", ")));
    }
    if let Some(worker) = &f.worker {
        let p = w.param(SqlValue::Text(worker.clone()));
        w.conds.push(format!("t.worker = {p}"));
    }
    if let Some(name) = &f.name {
        let names = names_matching(conn, name)?;
        if names.is_empty() {
            return Ok(None);
        }
        single_name = names.len() == 1;
        let ps: Vec<String> = names
            .into_iter()
            .map(|n| w.param(SqlValue::Text(n)))
            .collect();
        w.conds.push(format!("t.name IN ({})", ps.join(", ")));
    }
    if let Some(TimeRange { from, to }) = f.time {
        let mut range = Vec::new();
        if let Some(from) = from {
            let p = w.param(SqlValue::Real(from));
            range.push(format!("created_at >= {p}"));
        }
        if let Some(to) = to {
            let p = w.param(SqlValue::Real(to));
            range.push(format!("created_at < {p}"));
        }
        if !range.is_empty() {
            let range = range.join(" AND ");
            // `+` keeps the planner off the created_at index for the
            // outer scan: a wide window through it meant reading and
            // sorting every task in the window. The seq bounds below
            // narrow whichever index serves the other filters (each ends
            // in seq), or the table's own rowid range.
            for c in range.split(" AND ") {
                w.conds.push(format!("+t.{c}"));
            }
            // Bound the scan by the window's first and last `seq`: tasks
            // are numbered in arrival order, so the newest-first scan
            // then starts inside the window instead of walking every
            // newer task (or sorting the whole window).
            w.seq_bounds = if ids.mode() == Mode::Legacy {
                vec![
                    format!(">= (SELECT min(seq) FROM tasks WHERE {range})"),
                    format!("<= (SELECT max(seq) FROM tasks WHERE {range})"),
                ]
            } else {
                // Schema v4: per-minute seq bounds, widened to whole
                // minutes (the exact created_at terms above still apply).
                let mut m = Vec::new();
                if let Some(from) = from {
                    let p = w.param(SqlValue::Integer(created_minute(from)));
                    m.push(format!("minute >= {p}"));
                }
                if let Some(to) = to {
                    let p = w.param(SqlValue::Integer(created_minute(to)));
                    m.push(format!("minute <= {p}"));
                }
                let m = m.join(" AND ");
                vec![
                    format!(">= (SELECT min(min_seq) FROM seq_minute WHERE {m})"),
                    format!("<= (SELECT max(max_seq) FROM seq_minute WHERE {m})"),
                ]
            };
            for b in &w.seq_bounds {
                w.conds.push(format!("t.seq {b}"));
            }
        }
    }
    if let Some(root) = &f.root_id {
        // The partial index covers descendants; the root itself by its
        // id, found first (-1: not stored).
        let root_seq = ids.lookup(conn, root).map_err(map_err)?.unwrap_or(-1);
        let p = w.param(SqlValue::Text(root.clone()));
        let s = w.param(SqlValue::Integer(root_seq));
        w.conds.push(format!(
            "t.seq IN (SELECT seq FROM tasks WHERE root_id = {p} AND root_id <> id
                       UNION ALL SELECT seq FROM tasks WHERE seq = {s} AND root_id = {p})"
        ));
    }
    if let Some(g) = &f.group_id {
        let p = w.param(SqlValue::Text(g.clone()));
        w.conds.push(format!("t.group_id = {p}"));
    }
    if let Some(parent) = &f.parent_id {
        let p = w.param(SqlValue::Text(parent.clone()));
        w.conds.push(format!("t.parent_id = {p}"));
    }
    if let Some(s) = f.search.as_deref().filter(|s| !s.is_empty()) {
        let lower = s.to_lowercase();
        if let Some(q) = search::query(&lower) {
            let p = w.param(SqlValue::Text(q));
            w.from = "s.task_fts f CROSS JOIN tasks t ON t.seq = f.rowid".into();
            w.conds.insert(0, format!("f.task_fts MATCH {p}"));
            w.fts = true;
            // FTS5 walks its rowids newest first from the window's end
            // instead of from the newest task.
            for b in std::mem::take(&mut w.seq_bounds) {
                w.conds.push(format!("f.rowid {b}"));
            }
        }
        let p = w.param(SqlValue::Text(lower));
        w.conds.push(format!("cnc_text_has(t.body, {p})"));
    }
    // Without statistics on values, the planner cannot tell a rare state
    // from a common one and may walk a single-column index (or a window's
    // rowid range) checking the others row by row: measured 100-160 ms at
    // 300,000 tasks for a rare state with a worker. The composite indexes
    // (each ending in seq) give exactly the matching tasks newest first.
    let single_state = f.states.len() == 1;
    let schema_v4 = ids.mode() != Mode::Legacy;
    if !w.fts && single_state {
        let index = match (f.worker.is_some(), single_name) {
            (true, true) if schema_v4 => Some("tasks_worker_state_name"),
            (true, _) => Some("tasks_worker_state"),
            (false, true) if schema_v4 => Some("tasks_name_state"),
            _ => None,
        };
        if let Some(ix) = index {
            w.from = format!("tasks t INDEXED BY {ix}");
        }
    } else if !w.fts && f.states.is_empty() && f.worker.is_some() && single_name && schema_v4 {
        // A worker and a name without a state: every state (the column
        // holds nothing else) over the triple index reads only the pair's
        // entries, one range per state, instead of every task of the
        // worker (or of a window) to check the name (measured 21-37 ms
        // at 1M tasks).
        let all: Vec<String> = TaskState::ALL
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        w.conds.push(format!("t.state IN ({})", all.join(", ")));
        w.from = "tasks t INDEXED BY tasks_worker_state_name".into();
    }
    Ok(Some(w))
}

fn where_sql(w: &Where) -> String {
    if w.conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", w.conds.join(" AND "))
    }
}

fn decode_cursor(c: &str) -> StoreResult<i64> {
    c.strip_prefix("s")
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(|| StoreError::invalid(format!("invalid cursor {c:?}")))
}

pub(crate) fn tasks(conn: &Connection, ids: &TaskIds, q: &TaskQuery) -> StoreResult<TaskPage> {
    if q.cursor.is_some() && q.offset > 0 {
        return Err(StoreError::invalid("cursor and offset cannot be combined"));
    }
    if q.cursor.is_some() && q.sort != cnc_model::TaskSort::default() {
        return Err(StoreError::invalid(
            "a cursor only works with the default (seen) order",
        ));
    }
    let limit = q.effective_limit();
    let Some(mut w) = build_where(conn, ids, &q.filter)? else {
        return Ok(TaskPage {
            tasks: Vec::new(),
            next_cursor: None,
        });
    };
    let dir = if q.sort.descending { "DESC" } else { "ASC" };
    if let Some(c) = &q.cursor {
        let seq = decode_cursor(c)?;
        let p = w.param(SqlValue::Integer(seq));
        w.conds.push(format!(
            "t.seq {} {p}",
            if q.sort.descending { "<" } else { ">" }
        ));
    }
    let seq_col = if w.fts { "f.rowid" } else { "t.seq" };
    let order = match q.sort.field {
        TaskSortField::Seen => format!("{seq_col} {dir}"),
        // Tasks without the value come last in both directions.
        TaskSortField::Created => format!("t.created_at {dir}, t.seq DESC"),
        TaskSortField::Received => {
            format!("t.received_at IS NULL, t.received_at {dir}, t.seq DESC")
        }
        TaskSortField::Started => format!("t.started_at IS NULL, t.started_at {dir}, t.seq DESC"),
        TaskSortField::Runtime => format!("t.runtime IS NULL, t.runtime {dir}, t.seq DESC"),
        TaskSortField::Name => format!("t.name IS NULL, t.name {dir}, t.seq DESC"),
    };
    let lp = w.param(SqlValue::Integer(i64::from(limit)));
    let op = w.param(SqlValue::Integer(
        i64::try_from(q.offset).unwrap_or(i64::MAX),
    ));
    let sql = format!(
        "SELECT t.seq, t.body FROM {}{} ORDER BY {order} LIMIT {lp} OFFSET {op}",
        w.from,
        where_sql(&w)
    );
    let mut st = conn.prepare_cached(&sql).map_err(map_err)?;
    let rows: Vec<(i64, String)> = st
        .query_map(params_from_iter(w.params.iter()), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    let next_cursor =
        (rows.len() as u32 == limit && limit > 0 && q.sort == cnc_model::TaskSort::default())
            .then(|| rows.last().map(|(seq, _)| format!("s{seq}")))
            .flatten();
    let tasks = rows
        .iter()
        .map(|(_, b)| parse_task(b))
        .collect::<StoreResult<_>>()?;
    Ok(TaskPage { tasks, next_cursor })
}

pub(crate) fn count_tasks(conn: &Connection, ids: &TaskIds, f: &TaskFilter) -> StoreResult<u64> {
    let Some(w) = build_where(conn, ids, f)? else {
        return Ok(0);
    };
    let sql = format!("SELECT count(*) FROM {}{}", w.from, where_sql(&w));
    let n: i64 = conn
        .prepare_cached(&sql)
        .and_then(|mut st| st.query_row(params_from_iter(w.params.iter()), |r| r.get(0)))
        .map_err(map_err)?;
    Ok(n.max(0) as u64)
}

pub(crate) fn task(conn: &Connection, ids: &TaskIds, id: &str) -> StoreResult<Option<Task>> {
    let Some(seq) = ids.lookup(conn, id).map_err(map_err)? else {
        return Ok(None);
    };
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM tasks WHERE seq = ?1")
        .and_then(|mut st| st.query_row([seq], |r| r.get(0)).optional())
        .map_err(map_err)?;
    body.map(|b| parse_task(&b)).transpose()
}

pub(crate) fn task_events(
    conn: &Connection,
    ids: &TaskIds,
    id: &str,
) -> StoreResult<Vec<StoredEvent>> {
    let Some(seq) = ids.lookup(conn, id).map_err(map_err)? else {
        return Ok(Vec::new());
    };
    let mut st = conn
        .prepare_cached(
            "SELECT kind, ts, hostname, clock, fields FROM task_events
             WHERE task_seq = ?1 ORDER BY ts_us, clock",
        )
        .map_err(map_err)?;
    let rows = st
        .query_map([seq], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, f64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .map_err(map_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, timestamp, hostname, clock, fields) = row.map_err(map_err)?;
        let fields = match fields {
            Some(f) => serde_json::from_str(&f).map_err(|e| corrupt("event", e))?,
            None => serde_json::Value::Object(serde_json::Map::new()),
        };
        out.push(StoredEvent {
            task_id: id.to_owned(),
            kind,
            timestamp,
            hostname: (!hostname.is_empty()).then_some(hostname),
            clock: clock.max(0) as u64,
            fields,
        });
    }
    Ok(out)
}

pub(crate) fn relations(
    conn: &Connection,
    ids: &TaskIds,
    root: &str,
) -> StoreResult<Vec<TaskRelation>> {
    let root_seq = ids.lookup(conn, root).map_err(map_err)?.unwrap_or(-1);
    let mut st = conn
        .prepare_cached(
            "SELECT body FROM tasks WHERE seq IN (
                 SELECT seq FROM tasks WHERE root_id = ?1 AND root_id <> id
                 UNION SELECT ?2)
             ORDER BY created_at, seq",
        )
        .map_err(map_err)?;
    let bodies: Vec<String> = st
        .query_map(rusqlite::params![root, root_seq], |r| r.get(0))
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    bodies
        .iter()
        .map(|b| parse_task(b).map(|t| TaskRelation::of(&t)))
        .collect()
}

pub(crate) fn workers(conn: &Connection) -> StoreResult<Vec<Worker>> {
    let mut st = conn
        .prepare_cached("SELECT body FROM workers ORDER BY hostname")
        .map_err(map_err)?;
    let bodies: Vec<String> = st
        .query_map([], |r| r.get(0))
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    bodies
        .iter()
        .map(|b| serde_json::from_str(b).map_err(|e| corrupt("worker", e)))
        .collect()
}

pub(crate) fn worker(conn: &Connection, hostname: &str) -> StoreResult<Option<Worker>> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM workers WHERE hostname = ?1")
        .and_then(|mut st| st.query_row([hostname], |r| r.get(0)).optional())
        .map_err(map_err)?;
    body.map(|b| serde_json::from_str(&b).map_err(|e| corrupt("worker", e)))
        .transpose()
}

pub(crate) fn worker_history(
    conn: &Connection,
    hostname: &str,
    limit: u32,
) -> StoreResult<Vec<WorkerStatusChange>> {
    let mut st = conn
        .prepare_cached(
            "SELECT status, ts, reason FROM worker_history WHERE hostname = ?1
             ORDER BY ts DESC, id DESC LIMIT ?2",
        )
        .map_err(map_err)?;
    let rows = st
        .query_map(params![hostname, limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, f64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(map_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (status, timestamp, reason) = row.map_err(map_err)?;
        out.push(WorkerStatusChange {
            hostname: hostname.to_owned(),
            status: if status == "online" {
                WorkerStatus::Online
            } else {
                WorkerStatus::Offline
            },
            timestamp,
            reason,
        });
    }
    Ok(out)
}

fn scope_counts(q: &StatsQuery) -> (String, Vec<SqlValue>) {
    let mut conds = vec!["count <> 0".to_owned()];
    let mut ps = Vec::new();
    if let Some(n) = &q.name {
        ps.push(SqlValue::Text(n.clone()));
        conds.push(format!("name = ?{}", ps.len()));
    }
    if let Some(w) = &q.worker {
        ps.push(SqlValue::Text(w.clone()));
        conds.push(format!("worker = ?{}", ps.len()));
    }
    (conds.join(" AND "), ps)
}

fn scope_tasks(q: &StatsQuery, time_col: &str) -> (String, Vec<SqlValue>) {
    let mut conds = vec!["1".to_owned()];
    let mut ps = Vec::new();
    if let Some(n) = &q.name {
        ps.push(SqlValue::Text(n.clone()));
        conds.push(format!("name = ?{}", ps.len()));
    }
    if let Some(w) = &q.worker {
        ps.push(SqlValue::Text(w.clone()));
        conds.push(format!("worker = ?{}", ps.len()));
    }
    if let Some(TimeRange { from, to }) = q.time {
        if let Some(f) = from {
            ps.push(SqlValue::Real(f));
            conds.push(format!("{time_col} >= ?{}", ps.len()));
        }
        if let Some(t) = to {
            ps.push(SqlValue::Real(t));
            conds.push(format!("{time_col} < ?{}", ps.len()));
        }
    }
    (conds.join(" AND "), ps)
}

pub(crate) fn state_distribution(
    conn: &Connection,
    q: &StatsQuery,
) -> StoreResult<Vec<StateCount>> {
    let sql = if q.time.is_none() {
        let (w, ps) = scope_counts(q);
        (
            format!("SELECT state, sum(count) FROM task_counts WHERE {w} GROUP BY state"),
            ps,
        )
    } else {
        let (w, ps) = scope_tasks(q, "created_at");
        (
            format!("SELECT state, count(*) FROM tasks WHERE {w} GROUP BY state"),
            ps,
        )
    };
    let mut st = conn.prepare_cached(&sql.0).map_err(map_err)?;
    let rows: Vec<(String, i64)> = st
        .query_map(params_from_iter(sql.1.iter()), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    Ok(TaskState::ALL
        .into_iter()
        .filter_map(|s| {
            let n: i64 = rows
                .iter()
                .filter(|(st, _)| st == s.as_str())
                .map(|(_, n)| n)
                .sum();
            (n > 0).then_some(StateCount {
                state: s,
                count: n as u64,
            })
        })
        .collect())
}

pub(crate) fn name_distribution(conn: &Connection, q: &StatsQuery) -> StoreResult<Vec<NameCount>> {
    let sql = if q.time.is_none() {
        let (w, ps) = scope_counts(q);
        (
            format!(
                "SELECT name, sum(count) AS c FROM task_counts WHERE {w} AND name <> ''
                 GROUP BY name HAVING c > 0 ORDER BY c DESC, name ASC"
            ),
            ps,
        )
    } else {
        let (w, ps) = scope_tasks(q, "created_at");
        (
            format!(
                "SELECT name, count(*) AS c FROM tasks WHERE {w} AND name IS NOT NULL
                 GROUP BY name ORDER BY c DESC, name ASC"
            ),
            ps,
        )
    };
    let mut st = conn.prepare_cached(&sql.0).map_err(map_err)?;
    let rows = st
        .query_map(params_from_iter(sql.1.iter()), |r| {
            Ok(NameCount {
                name: r.get(0)?,
                count: r.get::<_, i64>(1)?.max(0) as u64,
            })
        })
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    Ok(rows)
}

pub(crate) fn runtime_stats(conn: &Connection, q: &StatsQuery) -> StoreResult<RuntimeStats> {
    let (w, ps) = scope_tasks(q, "succeeded_at");
    // Covered by `tasks_runtime_done (name, succeeded_at, runtime)`; sorted
    // here, which is faster than SQLite's sorter.
    let sql = format!("SELECT runtime FROM tasks WHERE runtime IS NOT NULL AND {w}");
    let mut st = conn.prepare_cached(&sql).map_err(map_err)?;
    let mut values: Vec<f64> = st
        .query_map(params_from_iter(ps.iter()), |r| r.get(0))
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    values.sort_unstable_by(f64::total_cmp);
    Ok(RuntimeStats::from_sorted(&values))
}

fn minute_rows(
    conn: &Connection,
    scope: &StatsQuery,
    from_min: i64,
    to_min: i64,
    states: &str,
) -> StoreResult<Vec<(i64, String, i64)>> {
    let mut ps: Vec<SqlValue> = vec![SqlValue::Integer(from_min), SqlValue::Integer(to_min)];
    let mut conds = vec![
        "minute >= ?1".to_owned(),
        "minute < ?2".to_owned(),
        format!("state IN ({states})"),
    ];
    if let Some(n) = &scope.name {
        ps.push(SqlValue::Text(n.clone()));
        conds.push(format!("name = ?{}", ps.len()));
    }
    if let Some(w) = &scope.worker {
        ps.push(SqlValue::Text(w.clone()));
        conds.push(format!("worker = ?{}", ps.len()));
    }
    let sql = format!(
        "SELECT minute, state, sum(count) FROM agg_minute WHERE {} GROUP BY minute, state",
        conds.join(" AND ")
    );
    let mut st = conn.prepare_cached(&sql).map_err(map_err)?;
    let rows = st
        .query_map(params_from_iter(ps.iter()), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    Ok(rows)
}

pub(crate) fn throughput(
    conn: &Connection,
    q: &ThroughputQuery,
) -> StoreResult<Vec<ThroughputBucket>> {
    let w = q.bucket_seconds;
    if w == 0 || w % 60 != 0 {
        return Err(StoreError::invalid(
            "bucket_seconds must be a positive multiple of 60",
        ));
    }
    if !(q.from.is_finite() && q.to.is_finite()) || q.to < q.from {
        return Err(StoreError::invalid(
            "throughput window must be finite with from <= to",
        ));
    }
    let wf = w as f64;
    let first = (q.from / wf).floor() * wf;
    let n = (((q.to - first) / wf).ceil().max(0.0)) as usize;
    if n > 100_000 {
        return Err(StoreError::invalid("too many buckets (more than 100,000)"));
    }
    let mut buckets: Vec<ThroughputBucket> = (0..n)
        .map(|i| ThroughputBucket {
            start: first + i as f64 * wf,
            ..Default::default()
        })
        .collect();
    if n == 0 {
        return Ok(buckets);
    }
    let from_min = (first / 60.0).floor() as i64;
    let to_min = from_min + (n as i64) * (w as i64 / 60);
    let states = format!("{}, 'RETRY'", final_states_sql());
    for (m, state, count) in minute_rows(conn, &q.scope, from_min, to_min, &states)? {
        let idx = ((m - from_min) / (w as i64 / 60)) as usize;
        let Some(b) = buckets.get_mut(idx) else {
            continue;
        };
        let c = count.max(0) as u64;
        match state.as_str() {
            "SUCCESS" => b.succeeded += c,
            "FAILURE" => b.failed += c,
            "REVOKED" => b.revoked += c,
            "REJECTED" => b.rejected += c,
            "RETRY" => b.retried += c,
            _ => {}
        }
    }
    Ok(buckets)
}

pub(crate) fn heatmap(conn: &Connection, q: &StatsQuery) -> StoreResult<Heatmap> {
    let mut map = Heatmap::default();
    let aligned = |t: Option<f64>| t.is_none_or(|t| (t / 60.0).fract() == 0.0);
    let range = q.time.unwrap_or_default();
    if aligned(range.from) && aligned(range.to) {
        let from_min = range.from.map_or(i64::MIN, |f| (f / 60.0) as i64);
        let to_min = range.to.map_or(i64::MAX, |t| (t / 60.0) as i64);
        for (m, _, count) in minute_rows(conn, q, from_min, to_min, &final_states_sql())? {
            let (d, h) = Heatmap::cell_of(m as f64 * 60.0);
            map.cells[d][h] += count.max(0) as u64;
        }
        return Ok(map);
    }
    // Unaligned window: exact, from the tasks themselves.
    let (w, ps) = scope_tasks(
        &StatsQuery {
            time: None,
            ..q.clone()
        },
        "created_at",
    );
    let sql = format!(
        "SELECT body FROM tasks WHERE {w} AND state IN ({})",
        final_states_sql()
    );
    let mut st = conn.prepare_cached(&sql).map_err(map_err)?;
    let bodies: Vec<String> = st
        .query_map(params_from_iter(ps.iter()), |r| r.get(0))
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    for b in bodies {
        let t = parse_task(&b)?;
        if let Some(f) = t.finished_at().filter(|f| range.contains(*f)) {
            let (d, h) = Heatmap::cell_of(f);
            map.cells[d][h] += 1;
        }
    }
    Ok(map)
}

pub(crate) fn schedules(conn: &Connection) -> StoreResult<Vec<Schedule>> {
    let mut st = conn
        .prepare_cached("SELECT body FROM schedules ORDER BY name")
        .map_err(map_err)?;
    let bodies: Vec<String> = st
        .query_map([], |r| r.get(0))
        .map_err(map_err)?
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    bodies
        .iter()
        .map(|b| serde_json::from_str(b).map_err(|e| corrupt("schedule", e)))
        .collect()
}

pub(crate) fn schedule(conn: &Connection, name: &str) -> StoreResult<Option<Schedule>> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM schedules WHERE name = ?1")
        .and_then(|mut st| st.query_row([name], |r| r.get(0)).optional())
        .map_err(map_err)?;
    body.map(|b| serde_json::from_str(&b).map_err(|e| corrupt("schedule", e)))
        .transpose()
}
