//! Reads: tasks (sea-query for the dynamic task list), events, relations,
//! workers, schedules.

use cnc_model::model::{
    Schedule, StoredEvent, Task, TaskFilter, TaskPage, TaskQuery, TaskRelation, TaskSortField,
    Worker, WorkerStatus, WorkerStatusChange,
};
use cnc_model::store::{StoreError, StoreErrorKind, StoreResult};
use deadpool_postgres::GenericClient;
use sea_query::{
    Cond, Condition, Expr, ExprTrait, LikeExpr, NullOrdering, Order, PostgresQueryBuilder, Query,
    SelectStatement, Values,
};
use tokio_postgres::types::ToSql;

use super::PostgresStore;
use super::apply::cleaned;
use super::error::{self, pg};

/// sea-query values as tokio-postgres parameters.
pub(crate) struct Params(Vec<Box<dyn ToSql + Sync + Send>>);

impl Params {
    pub(crate) fn new(values: Values) -> StoreResult<Self> {
        use sea_query::Value;
        let mut out: Vec<Box<dyn ToSql + Sync + Send>> = Vec::with_capacity(values.0.len());
        for v in values.0 {
            let p: Box<dyn ToSql + Sync + Send> = match v {
                Value::Bool(b) => Box::new(b),
                Value::BigInt(i) => Box::new(i),
                Value::Int(i) => Box::new(i.map(i64::from)),
                Value::BigUnsigned(u) => Box::new(u.map(|u| i64::try_from(u).unwrap_or(i64::MAX))),
                Value::Unsigned(u) => Box::new(u.map(i64::from)),
                Value::Double(d) => Box::new(d),
                Value::String(s) => Box::new(s),
                other => {
                    return Err(StoreError::new(
                        StoreErrorKind::Backend,
                        format!("postgres: unsupported query parameter {other:?}"),
                    ));
                }
            };
            out.push(p);
        }
        Ok(Self(out))
    }

    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Run a sea-query select.
pub(crate) async fn select<C: GenericClient>(
    conn: &C,
    what: &str,
    stmt: &SelectStatement,
) -> StoreResult<Vec<tokio_postgres::Row>> {
    let (sql, values) = stmt.build(PostgresQueryBuilder);
    let params = Params::new(values)?;
    conn.query(sql.as_str(), &params.refs())
        .await
        .map_err(|e| pg(what, e))
}

fn decode_task(data: &str) -> StoreResult<Task> {
    serde_json::from_str(data).map_err(|e| error::corrupt("task", e))
}

pub(crate) async fn task(store: &PostgresStore, id: &str) -> StoreResult<Option<Task>> {
    let conn = store.conn().await?;
    let row = conn
        .query_opt(
            "SELECT data FROM tasks WHERE id = $1",
            &[&cleaned(id).as_ref()],
        )
        .await
        .map_err(|e| pg("reading a task", e))?;
    row.map(|r| decode_task(r.get(0))).transpose()
}

/// Escape `%`, `_` and `\` for a LIKE pattern with `\` as the escape.
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The WHERE condition of a filter. `None` when it can match nothing.
async fn filter_cond<C: GenericClient>(
    conn: &C,
    filter: &TaskFilter,
) -> StoreResult<Option<Condition>> {
    let mut cond = Cond::all();
    if !filter.states.is_empty() {
        cond = cond.add(Expr::col("state").is_in(filter.states.iter().map(|s| s.as_str())));
    }
    if let Some(w) = &filter.worker {
        cond = cond.add(Expr::col("worker").eq(cleaned(w).into_owned()));
    }
    if let Some(n) = &filter.name {
        // Resolve the substring against the small table of distinct names,
        // with the reference semantics (Rust lower-casing), then match
        // exactly so the (name, seq) index works.
        let needle = cleaned(n).to_lowercase();
        let rows = conn
            .query("SELECT name FROM task_names", &[])
            .await
            .map_err(|e| pg("resolving task names", e))?;
        let names: Vec<String> = rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .filter(|name| name.to_lowercase().contains(&needle))
            .collect();
        if names.is_empty() {
            return Ok(None);
        }
        cond = cond.add(Expr::col("name").is_in(names));
    }
    if let Some(range) = &filter.time {
        if let Some(from) = range.from {
            cond = cond.add(Expr::col("created_at").gte(from));
        }
        if let Some(to) = range.to {
            cond = cond.add(Expr::col("created_at").lt(to));
        }
    }
    if let Some(s) = &filter.search {
        let needle = cleaned(s).to_lowercase();
        if !needle.is_empty() {
            let pattern = format!("%{}%", like_escape(&needle));
            // The trigram index is on the side table; `seq` joins back.
            let mut sub = Query::select();
            sub.column("seq")
                .from("task_search")
                .and_where(Expr::col("text").like(LikeExpr::new(pattern).escape('\\')));
            cond = cond.add(Expr::col("seq").in_subquery(sub));
        }
    }
    for (col, want) in [
        ("root_id", &filter.root_id),
        ("group_id", &filter.group_id),
        ("parent_id", &filter.parent_id),
    ] {
        if let Some(v) = want {
            cond = cond.add(Expr::col(col).eq(cleaned(v).into_owned()));
        }
    }
    Ok(Some(cond))
}

fn parse_cursor(cursor: &str) -> StoreResult<i64> {
    cursor
        .strip_prefix("seq:")
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| StoreError::invalid("postgres: invalid task cursor"))
}

pub(crate) async fn tasks(store: &PostgresStore, query: &TaskQuery) -> StoreResult<TaskPage> {
    let default_sort = query.sort.field == TaskSortField::Seen && query.sort.descending;
    let cursor = match &query.cursor {
        Some(_) if !default_sort => {
            return Err(StoreError::invalid(
                "postgres: a cursor is only valid with the default sort",
            ));
        }
        Some(_) if query.offset > 0 => {
            return Err(StoreError::invalid(
                "postgres: a cursor cannot be combined with an offset",
            ));
        }
        Some(c) => Some(parse_cursor(c)?),
        None => None,
    };
    let limit = query.effective_limit();
    let conn = store.conn().await?;
    let Some(mut cond) = filter_cond(&conn, &query.filter).await? else {
        return Ok(TaskPage {
            tasks: Vec::new(),
            next_cursor: None,
        });
    };
    if let Some(c) = cursor {
        cond = cond.add(Expr::col("seq").lt(c));
    }
    let mut stmt = Query::select();
    stmt.columns(["seq", "data"]).from("tasks").cond_where(cond);
    let order = |desc: bool| if desc { Order::Desc } else { Order::Asc };
    // Tasks without the sort value go last in both directions (the suite's
    // reading of the contract).
    let nulls = |_desc: bool| NullOrdering::Last;
    let desc = query.sort.descending;
    let col = match query.sort.field {
        TaskSortField::Seen => None,
        TaskSortField::Created => Some("created_at"),
        TaskSortField::Received => Some("received_at"),
        TaskSortField::Started => Some("started_at"),
        TaskSortField::Runtime => Some("runtime"),
        TaskSortField::Name => Some("name"),
    };
    match col {
        None => {
            stmt.order_by("seq", order(desc));
        }
        Some(c) => {
            stmt.order_by_with_nulls(c, order(desc), nulls(desc));
            stmt.order_by("seq", Order::Desc);
        }
    }
    stmt.limit(u64::from(limit)).offset(query.offset);
    let rows = select(&conn, "listing tasks", &stmt).await?;
    let mut tasks = Vec::with_capacity(rows.len());
    let mut last_seq = None;
    for row in &rows {
        last_seq = Some(row.get::<_, i64>(0));
        tasks.push(decode_task(row.get(1))?);
    }
    let full = limit > 0 && tasks.len() == limit as usize;
    // "Some whenever the page is full" (the contract), whatever the sort;
    // only the default sort accepts it back.
    let next_cursor = if full {
        last_seq.map(|s| format!("seq:{s}"))
    } else {
        None
    };
    Ok(TaskPage { tasks, next_cursor })
}

pub(crate) async fn count_tasks(store: &PostgresStore, filter: &TaskFilter) -> StoreResult<u64> {
    let conn = store.conn().await?;
    let Some(cond) = filter_cond(&conn, filter).await? else {
        return Ok(0);
    };
    let mut stmt = Query::select();
    stmt.expr(Expr::cust("count(*)"))
        .from("tasks")
        .cond_where(cond);
    let rows = select(&conn, "counting tasks", &stmt).await?;
    Ok(rows
        .first()
        .map_or(0, |r| Ord::max(r.get::<_, i64>(0), 0) as u64))
}

pub(crate) async fn task_events(store: &PostgresStore, id: &str) -> StoreResult<Vec<StoredEvent>> {
    let conn = store.conn().await?;
    let rows = conn
        .query(
            "SELECT task_id, kind, hostname, clock, ts, fields FROM task_events \
             WHERE task_id = $1 ORDER BY ts, clock",
            &[&cleaned(id).as_ref()],
        )
        .await
        .map_err(|e| pg("reading task events", e))?;
    rows.iter()
        .map(|r| {
            let hostname: String = r.get(2);
            let fields: &str = r.get(5);
            Ok(StoredEvent {
                task_id: r.get(0),
                kind: r.get(1),
                hostname: (!hostname.is_empty()).then_some(hostname),
                clock: r.get::<_, i64>(3) as u64,
                timestamp: r.get(4),
                fields: serde_json::from_str(fields).map_err(|e| error::corrupt("event", e))?,
            })
        })
        .collect()
}

pub(crate) async fn relations(
    store: &PostgresStore,
    root_id: &str,
) -> StoreResult<Vec<TaskRelation>> {
    let conn = store.conn().await?;
    let rows = conn
        .query(
            "SELECT data FROM tasks WHERE root_id = $1 OR id = $1 ORDER BY created_at, seq",
            &[&cleaned(root_id).as_ref()],
        )
        .await
        .map_err(|e| pg("reading relations", e))?;
    rows.iter()
        .map(|r| decode_task(r.get(0)).map(|t| TaskRelation::of(&t)))
        .collect()
}

pub(crate) async fn workers(
    store: &PostgresStore,
    hostname: Option<&str>,
) -> StoreResult<Vec<Worker>> {
    let conn = store.conn().await?;
    let rows = match hostname {
        Some(h) => {
            conn.query(
                "SELECT data FROM workers WHERE hostname = $1",
                &[&cleaned(h).as_ref()],
            )
            .await
        }
        None => {
            conn.query("SELECT data FROM workers ORDER BY hostname", &[])
                .await
        }
    }
    .map_err(|e| pg("reading workers", e))?;
    rows.iter()
        .map(|r| serde_json::from_str(r.get(0)).map_err(|e| error::corrupt("worker", e)))
        .collect()
}

pub(crate) async fn worker_history(
    store: &PostgresStore,
    hostname: &str,
    limit: u32,
) -> StoreResult<Vec<WorkerStatusChange>> {
    let conn = store.conn().await?;
    let rows = conn
        .query(
            "SELECT hostname, status, ts, reason FROM worker_history WHERE hostname = $1 \
             ORDER BY ts DESC, id DESC LIMIT $2",
            &[&cleaned(hostname).as_ref(), &i64::from(limit)],
        )
        .await
        .map_err(|e| pg("reading worker history", e))?;
    rows.iter()
        .map(|r| {
            let status: &str = r.get(1);
            let status = match status {
                "online" => WorkerStatus::Online,
                "offline" => WorkerStatus::Offline,
                other => {
                    return Err(StoreError::new(
                        StoreErrorKind::Corrupt,
                        format!("postgres: unknown worker status {other:?}"),
                    ));
                }
            };
            Ok(WorkerStatusChange {
                hostname: r.get(0),
                status,
                timestamp: r.get(2),
                reason: r.get(3),
            })
        })
        .collect()
}

pub(crate) async fn schedules(
    store: &PostgresStore,
    name: Option<&str>,
) -> StoreResult<Vec<Schedule>> {
    let conn = store.conn().await?;
    let rows = match name {
        Some(n) => {
            conn.query(
                "SELECT data FROM schedules WHERE name = $1",
                &[&cleaned(n).as_ref()],
            )
            .await
        }
        None => {
            conn.query("SELECT data FROM schedules ORDER BY name", &[])
                .await
        }
    }
    .map_err(|e| pg("reading schedules", e))?;
    rows.iter()
        .map(|r| serde_json::from_str(r.get(0)).map_err(|e| error::corrupt("schedule", e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like() {
        assert_eq!(like_escape(r"50%_a\b"), r"50\%\_a\\b");
    }

    #[test]
    fn cursors() {
        assert_eq!(parse_cursor("seq:42").ok(), Some(42));
        assert!(parse_cursor("42").is_err());
        assert!(parse_cursor("seq:x").is_err());
    }
}
