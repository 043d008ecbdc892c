//! Statistics: exact runtime percentiles, throughput and heatmap from the
//! per-minute aggregates, distributions.

use cnc_model::model::{
    Heatmap, NameCount, RuntimeStats, StateCount, StatsQuery, TaskState, ThroughputBucket,
    ThroughputQuery,
};
use cnc_model::store::{StoreError, StoreErrorKind, StoreResult};
use deadpool_postgres::GenericClient;
use sea_query::{Cond, Condition, Expr, ExprTrait, JoinType, Order, Query};
use tokio_postgres::IsolationLevel;

use super::PostgresStore;
use super::apply::cleaned;
use super::error::pg;
use super::query::select;

/// Most buckets one throughput query may ask for.
const MAX_BUCKETS: u64 = 100_000;

/// Scope conditions on the tasks table; `time_col` gets the time range.
fn scope_cond(scope: &StatsQuery, time_col: &'static str) -> Condition {
    let mut cond = Cond::all();
    if let Some(n) = &scope.name {
        cond = cond.add(Expr::col("name").eq(cleaned(n).into_owned()));
    }
    if let Some(w) = &scope.worker {
        cond = cond.add(Expr::col("worker").eq(cleaned(w).into_owned()));
    }
    if let Some(range) = &scope.time {
        if let Some(from) = range.from {
            cond = cond.add(Expr::col(time_col).gte(from));
        }
        if let Some(to) = range.to {
            cond = cond.add(Expr::col(time_col).lt(to));
        }
    }
    cond
}

fn count(v: i64) -> u64 {
    Ord::max(v, 0) as u64
}

pub(crate) async fn task_names(store: &PostgresStore) -> StoreResult<Vec<NameCount>> {
    let conn = store.conn().await?;
    let rows = conn
        .query(
            "SELECT name, task_count FROM task_names WHERE task_count > 0 \
             ORDER BY task_count DESC, name",
            &[],
        )
        .await
        .map_err(|e| pg("reading task names", e))?;
    Ok(rows
        .iter()
        .map(|r| NameCount {
            name: r.get(0),
            count: count(r.get(1)),
        })
        .collect())
}

/// Exact: count/min/max/sum in one pass (the sum in ascending order, as
/// `RuntimeStats::from_sorted` adds), then the three nearest ranks picked by
/// `row_number()` over the sorted runtimes. `percentile_disc` is not used: it
/// picks the first value whose cumulative distribution reaches p, which
/// differs from `ceil(p * n)` when `p * n` lands on an integer through float
/// rounding. Both reads run in one snapshot.
pub(crate) async fn runtime_stats(
    store: &PostgresStore,
    query: &StatsQuery,
) -> StoreResult<RuntimeStats> {
    let mut conn = store.conn().await?;
    let tx = conn
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| pg("starting a read", e))?;
    let cond = || {
        scope_cond(query, "succeeded_at")
            .add(Expr::col("runtime").is_not_null())
            .add(Expr::cust(
                "runtime NOT IN ('NaN', 'Infinity', '-Infinity')",
            ))
    };
    let mut stmt = Query::select();
    stmt.expr(Expr::cust(
        "count(*), min(runtime), max(runtime), sum(runtime ORDER BY runtime)",
    ))
    .from("tasks")
    .cond_where(cond());
    let rows = select(&tx, "computing runtime stats", &stmt).await?;
    let Some(row) = rows.first() else {
        return Ok(RuntimeStats::default());
    };
    let n = count(row.get(0));
    if n == 0 {
        return Ok(RuntimeStats::default());
    }
    let min: Option<f64> = row.get(1);
    let max: Option<f64> = row.get(2);
    let sum: Option<f64> = row.get(3);
    let ranks = [50.0, 95.0, 99.0].map(|p| RuntimeStats::rank(p, n) as i64);
    let mut inner = Query::select();
    inner
        .expr(Expr::cust(
            "runtime, row_number() OVER (ORDER BY runtime) AS rn",
        ))
        .from("tasks")
        .cond_where(cond());
    let mut outer = Query::select();
    outer
        .columns(["rn", "runtime"])
        .from_subquery(inner, "ranked")
        .and_where(Expr::col("rn").is_in(ranks))
        .order_by("rn", Order::Asc);
    let picked = select(&tx, "computing runtime percentiles", &outer).await?;
    let pick = |rank: i64| {
        picked
            .iter()
            .find(|r| r.get::<_, i64>(0) == rank)
            .map(|r| r.get::<_, f64>(1))
    };
    tx.commit().await.map_err(|e| pg("finishing a read", e))?;
    Ok(RuntimeStats {
        count: n,
        min,
        max,
        avg: sum.map(|s| s / n as f64),
        p50: pick(ranks[0]),
        p95: pick(ranks[1]),
        p99: pick(ranks[2]),
    })
}

pub(crate) async fn throughput(
    store: &PostgresStore,
    query: &ThroughputQuery,
) -> StoreResult<Vec<ThroughputBucket>> {
    let w = query.bucket_seconds;
    if w == 0 || w % 60 != 0 {
        return Err(StoreError::invalid(
            "postgres: bucket_seconds must be a positive multiple of 60",
        ));
    }
    if !query.from.is_finite() || !query.to.is_finite() {
        return Err(StoreError::invalid(
            "postgres: throughput range must be finite",
        ));
    }
    let wf = w as f64;
    let first = (query.from / wf).floor() * wf;
    if first >= query.to {
        store.conn().await.map(drop)?;
        return Ok(Vec::new());
    }
    let n = ((query.to - first) / wf).ceil() as u64;
    if n > MAX_BUCKETS {
        return Err(StoreError::invalid(format!(
            "postgres: throughput asks for {n} buckets (at most {MAX_BUCKETS})"
        )));
    }
    let mut buckets: Vec<ThroughputBucket> = (0..n)
        .map(|i| ThroughputBucket {
            start: first + i as f64 * wf,
            ..ThroughputBucket::default()
        })
        .collect();
    // Drop a trailing bucket that float rounding may have added.
    buckets.retain(|b| b.start < query.to);
    let m0 = (first / 60.0) as i64;
    let m1 = m0 + (buckets.len() as i64) * (w as i64 / 60);
    let wm = w as i64 / 60;

    let mut conn = store.conn().await?;
    let tx = conn
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| pg("starting a read", e))?;

    let mut cond = Cond::all()
        .add(Expr::col("minute").gte(m0))
        .add(Expr::col("minute").lt(m1));
    if let Some(name) = &query.scope.name {
        cond = cond.add(Expr::col("name").eq(cleaned(name).into_owned()));
    }
    if let Some(worker) = &query.scope.worker {
        cond = cond.add(Expr::col("worker").eq(cleaned(worker).into_owned()));
    }
    let mut stmt = Query::select();
    stmt.expr(Expr::cust(format!("(minute - {m0}) / {wm}")))
        .column("state")
        .expr(Expr::cust("sum(count)::int8"))
        .from("task_minutes")
        .cond_where(cond)
        .add_group_by([Expr::cust("1"), Expr::cust("2")]);
    for row in select(&tx, "reading throughput", &stmt).await? {
        let idx: i64 = row.get(0);
        let state: &str = row.get(1);
        let c = count(row.get(2));
        let Some(b) = usize::try_from(idx).ok().and_then(|i| buckets.get_mut(i)) else {
            continue;
        };
        match state {
            "SUCCESS" => b.succeeded += c,
            "FAILURE" => b.failed += c,
            "REVOKED" => b.revoked += c,
            "REJECTED" => b.rejected += c,
            _ => {}
        }
    }

    // Retries: per-minute counts when unscoped; scoped by the task's
    // current name/worker, so joined to tasks then (retries are rare).
    let scoped = query.scope.name.is_some() || query.scope.worker.is_some();
    let rows = if scoped {
        let mut cond = Cond::all()
            .add(Expr::col(("e", "kind")).eq("task-retried"))
            .add(Expr::col(("e", "ts")).gte((m0 * 60) as f64))
            .add(Expr::col(("e", "ts")).lt((m1 * 60) as f64));
        if let Some(name) = &query.scope.name {
            cond = cond.add(Expr::col(("t", "name")).eq(cleaned(name).into_owned()));
        }
        if let Some(worker) = &query.scope.worker {
            cond = cond.add(Expr::col(("t", "worker")).eq(cleaned(worker).into_owned()));
        }
        let mut stmt = Query::select();
        // m0 and wm are integers computed here: safe to inline.
        stmt.expr(Expr::cust(format!(
            "(floor(e.ts / 60)::int8 - {m0}) / {wm}"
        )))
        .expr(Expr::cust("count(*)::int8"))
        .from_as("task_events", "e")
        .join_as(
            JoinType::InnerJoin,
            "tasks",
            "t",
            Expr::col(("t", "id")).equals(("e", "task_id")),
        )
        .cond_where(cond)
        .add_group_by([Expr::cust("1")]);
        select(&tx, "reading retries", &stmt).await?
    } else {
        tx.query(
            "SELECT (minute - $1) / $2, sum(count)::int8 FROM retry_minutes \
             WHERE minute >= $1 AND minute < $3 GROUP BY 1",
            &[&m0, &wm, &m1],
        )
        .await
        .map_err(|e| pg("reading retries", e))?
    };
    for row in rows {
        let idx: i64 = row.get(0);
        if let Some(b) = usize::try_from(idx).ok().and_then(|i| buckets.get_mut(i)) {
            b.retried += count(row.get(1));
        }
    }
    tx.commit().await.map_err(|e| pg("finishing a read", e))?;
    Ok(buckets)
}

pub(crate) async fn state_distribution(
    store: &PostgresStore,
    query: &StatsQuery,
) -> StoreResult<Vec<StateCount>> {
    let conn = store.conn().await?;
    let mut stmt = Query::select();
    stmt.column("state")
        .expr(Expr::cust("count(*)"))
        .from("tasks")
        .cond_where(scope_cond(query, "created_at"))
        .group_by_col("state");
    let rows = select(&conn, "reading the state distribution", &stmt).await?;
    let mut counts = [0u64; TaskState::ALL.len()];
    for row in rows {
        let state: &str = row.get(0);
        let state: TaskState = state.parse().map_err(|e| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                "postgres: unknown stored task state",
            )
            .with_source(e)
        })?;
        if let Some(i) = TaskState::ALL.iter().position(|s| *s == state) {
            counts[i] += count(row.get(1));
        }
    }
    Ok(TaskState::ALL
        .iter()
        .zip(counts)
        .filter(|(_, c)| *c > 0)
        .map(|(s, c)| StateCount {
            state: *s,
            count: c,
        })
        .collect())
}

pub(crate) async fn name_distribution(
    store: &PostgresStore,
    query: &StatsQuery,
) -> StoreResult<Vec<NameCount>> {
    let conn = store.conn().await?;
    let mut stmt = Query::select();
    stmt.column("name")
        .expr(Expr::cust("count(*)"))
        .from("tasks")
        .cond_where(scope_cond(query, "created_at").add(Expr::col("name").is_not_null()))
        .group_by_col("name")
        .order_by_expr(Expr::cust("2"), Order::Desc)
        .order_by("name", Order::Asc);
    let rows = select(&conn, "reading the name distribution", &stmt).await?;
    Ok(rows
        .iter()
        .map(|r| NameCount {
            name: r.get(0),
            count: count(r.get(1)),
        })
        .collect())
}

fn aligned(t: Option<f64>) -> bool {
    t.is_none_or(|t| t.is_finite() && t.rem_euclid(60.0) == 0.0)
}

/// From the per-minute aggregates when the range falls on whole minutes (a
/// minute's weekday and hour are those of every second in it), else from
/// the tasks' `finished_at` column.
pub(crate) async fn heatmap(store: &PostgresStore, query: &StatsQuery) -> StoreResult<Heatmap> {
    let conn = store.conn().await?;
    let range = query.time.unwrap_or_default();
    let mut stmt = Query::select();
    if aligned(range.from) && aligned(range.to) {
        let mut cond = Cond::all();
        if let Some(n) = &query.name {
            cond = cond.add(Expr::col("name").eq(cleaned(n).into_owned()));
        }
        if let Some(w) = &query.worker {
            cond = cond.add(Expr::col("worker").eq(cleaned(w).into_owned()));
        }
        if let Some(from) = range.from {
            cond = cond.add(Expr::col("minute").gte((from / 60.0) as i64));
        }
        if let Some(to) = range.to {
            cond = cond.add(Expr::col("minute").lt((to / 60.0) as i64));
        }
        stmt.expr(Expr::cust("((minute / 1440 + 3) % 7)::int8"))
            .expr(Expr::cust("((minute % 1440) / 60)::int8"))
            .expr(Expr::cust("sum(count)::int8"))
            .from("task_minutes")
            .cond_where(cond);
    } else {
        stmt.expr(Expr::cust(
            "((floor(finished_at)::int8 / 86400 + 3) % 7)::int8",
        ))
        .expr(Expr::cust(
            "((floor(finished_at)::int8 % 86400) / 3600)::int8",
        ))
        .expr(Expr::cust("count(*)::int8"))
        .from("tasks")
        .cond_where(scope_cond(query, "finished_at").add(Expr::col("finished_at").is_not_null()));
    }
    stmt.add_group_by([Expr::cust("1"), Expr::cust("2")]);
    let rows = select(&conn, "reading the heatmap", &stmt).await?;
    let mut map = Heatmap::default();
    for row in rows {
        let wd: i64 = row.get(0);
        let h: i64 = row.get(1);
        let c = count(row.get(2));
        if let (Ok(wd), Ok(h)) = (usize::try_from(wd), usize::try_from(h)) {
            if let Some(cell) = map.cells.get_mut(wd).and_then(|r| r.get_mut(h)) {
                *cell += c;
            }
        }
    }
    Ok(map)
}
