//! The background search indexer.
//!
//! # Why
//! Maintaining the trigram GIN index inside `apply` was about three quarters
//! of the write cost (about 3.5-4k events/s with it in the batch, 9.4k
//! without, on the 2-core dev machine). The contract lets full-text search
//! trail `apply` by [`StoreInfo::search_lag`](cnc_model::store::StoreInfo), so,
//! as in the SQLite store, the index lives on a side table (`task_search`)
//! written in the background:
//!
//! * `apply` queues the tasks whose searchable text changed in
//!   `search_pending` (seq, since, due, ver), in the batch transaction, so a
//!   crash never loses work. Final tasks are due at once, others after
//!   [`INDEX_DELAY`]: most tasks finish sooner and are indexed once.
//! * Every [`TICK`] the indexer of each store that ran `initialize` **claims**
//!   up to [`CHUNK`] due rows with `FOR UPDATE SKIP LOCKED`, pushing their due
//!   time [`LEASE`] ahead (one autocommit statement), so several celery-cnc
//!   instances sharing the database split the work and never wait for each
//!   other or for a writer. An instance that dies holding a claim only delays
//!   those rows by the lease.
//! * It lower-cases the text in Rust (the same `to_lowercase` as the
//!   reference filter), then in one statement locks the claimed rows whose
//!   `ver` is unchanged (waiting, in seq order: skipping would strand a row
//!   that another instance's claim scan locked for a moment, with its due
//!   time a lease ahead), deletes them and upserts their
//!   text into `task_search` (`unnest`, seq order). A task changed since the
//!   claim has a new `ver` (from a sequence, so it never repeats) and stays
//!   queued: its older text is not written. Rows whose task is gone (cleanup)
//!   lose their text.
//! * Neither statement keeps a transaction open across a round trip, so a
//!   suspended or aborted indexer (a store dropped on a single-threaded
//!   runtime) never holds locks that `DROP SCHEMA` or a writer would wait for.

use std::collections::HashMap;
use std::time::Duration;

use cnc_model::model::Task;
use deadpool_postgres::Pool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error;

/// How long a non-final task's text waits before it is indexed.
pub(crate) const INDEX_DELAY: Duration = Duration::from_millis(1200);
/// How often the indexer looks for due rows.
const TICK: Duration = Duration::from_millis(200);
/// Most rows claimed (and indexed) per round.
const CHUNK: i64 = 2_000;
/// How long a claim keeps other instances off a row.
const LEASE: Duration = Duration::from_secs(30);
/// How long `close` waits for a round in flight.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// A running indexer: its stop signal and task.
pub(crate) struct Indexer {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Indexer {
    /// Start indexing through `pool` on the current tokio runtime.
    pub(crate) fn start(pool: Pool) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let handle = tokio::spawn(async move {
            loop {
                // A stop signal (or a dropped sender) ends the loop.
                if tokio::time::timeout(TICK, stopped.changed()).await.is_ok() {
                    return;
                }
                loop {
                    match round(&pool).await {
                        Ok(n) if n >= CHUNK as usize && !*stopped.borrow() => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "postgres search indexing failed; will retry");
                            break;
                        }
                    }
                }
            }
        });
        Self { stop, handle }
    }

    /// Stop after the round in flight (bounded by [`STOP_WAIT`]).
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let mut handle = self.handle;
        if tokio::time::timeout(STOP_WAIT, &mut handle).await.is_err() {
            handle.abort();
        }
    }

    /// Stop now, without waiting (for `Drop`).
    pub(crate) fn abort(self) {
        let _ = self.stop.send(true);
        self.handle.abort();
    }
}

/// Claim, index and dequeue one chunk of due rows; returns how many were
/// claimed.
async fn round(pool: &Pool) -> Result<usize, cnc_model::store::StoreError> {
    let conn = pool.get().await.map_err(error::pool)?;
    let claim = conn
        .prepare_cached(
            "WITH c AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now), \
             due AS (SELECT p.seq FROM search_pending p, c WHERE p.due <= c.now \
                 ORDER BY p.due LIMIT $1 FOR UPDATE OF p SKIP LOCKED), \
             claimed AS (UPDATE search_pending p SET due = c.now + $2::float8 \
                 FROM due, c WHERE p.seq = due.seq RETURNING p.seq, p.ver) \
             SELECT claimed.seq, claimed.ver, t.data FROM claimed \
                 LEFT JOIN tasks t ON t.seq = claimed.seq",
        )
        .await
        .map_err(|e| error::pg("preparing the search claim", e))?;
    let rows = conn
        .query(&claim, &[&CHUNK, &LEASE.as_secs_f64()])
        .await
        .map_err(|e| error::pg("claiming search work", e))?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut work: HashMap<i64, (i64, Option<String>)> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let seq: i64 = row.get(0);
        let ver: i64 = row.get(1);
        let data: Option<&str> = row.get(2);
        let text = match data {
            Some(d) => {
                let task: Task = serde_json::from_str(d).map_err(|e| error::corrupt("task", e))?;
                Some(task.search_text().to_lowercase()).filter(|t| !t.is_empty())
            }
            None => None,
        };
        work.insert(seq, (ver, text));
    }
    let mut work: Vec<(i64, (i64, Option<String>))> = work.into_iter().collect();
    work.sort_unstable_by_key(|(seq, _)| *seq);
    let seq: Vec<i64> = work.iter().map(|(s, _)| *s).collect();
    let ver: Vec<i64> = work.iter().map(|(_, (v, _))| *v).collect();
    let text: Vec<Option<&str>> = work.iter().map(|(_, (_, t))| t.as_deref()).collect();
    let store = conn
        .prepare_cached(
            "WITH u AS (SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[]) \
                 AS u(seq, ver, text)), \
             held AS (SELECT p.seq FROM search_pending p JOIN u \
                 ON p.seq = u.seq AND p.ver = u.ver \
                 ORDER BY p.seq FOR UPDATE OF p), \
             done AS (DELETE FROM search_pending p USING held WHERE p.seq = held.seq \
                 RETURNING p.seq), \
             gone AS (DELETE FROM task_search s USING done, u \
                 WHERE s.seq = done.seq AND u.seq = done.seq AND u.text IS NULL) \
             INSERT INTO task_search (seq, text) \
                 SELECT u.seq, u.text FROM u JOIN done ON done.seq = u.seq \
                 WHERE u.text IS NOT NULL ORDER BY u.seq \
             ON CONFLICT (seq) DO UPDATE SET text = EXCLUDED.text",
        )
        .await
        .map_err(|e| error::pg("preparing the search write", e))?;
    conn.execute(&store, &[&seq, &ver, &text])
        .await
        .map_err(|e| error::pg("writing search text", e))?;
    Ok(rows.len())
}
