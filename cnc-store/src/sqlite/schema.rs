//! Versioned schema of the SQLite store.
//!
//! * v1: tasks (JSON body + the columns filters need), task events, workers,
//!   worker history, schedules.
//! * v2: the aggregates (`task_counts`, `agg_minute`) that make dashboards
//!   O(buckets) instead of O(tasks), and `search_pending`, the durable queue of
//!   tasks whose search text must be (re)indexed. Migrating v1 -> v2
//!   backfills both from the stored tasks.
//!
//! * v3: `tasks_worker_state`, so a task list filtered by worker and state
//!   (and a name on top, the rare triple) walks only that pair's tasks,
//!   newest first, instead of one filter's tasks checking the others.
//!
//! * v4: the writer's random-order indexes go. `tasks_id` (random UUIDs: one
//!   dirty page per new task) becomes `task_ids` plus an in-memory level
//!   merged in sorted ranges (see `ids.rs`); `tasks_runtime (name, runtime)`
//!   becomes `tasks_runtime_done (name, succeeded_at, runtime)`, which grows
//!   at each name's tail and covers the stats query's name + time window.
//!   For the task list: `(worker, state, name)` and `(name, state)` join
//!   v3's `(worker, state)`, so a rare state with a name, or all three
//!   filters, walk only matching entries, newest first, without reading a
//!   row to check a column (measured: a rare state with a name read every
//!   task of the name, 100 ms at 300,000 tasks); `seq_minute` keeps the lowest and highest `seq`
//!   created in each minute, so a time window's `seq` bounds cost a few
//!   rows instead of a scan of the window in the `created_at` index.
//!
//! The full-text index itself lives in a separate file (`<db>-search`), see
//! `search.rs`; it can always be rebuilt from the main database.

use rusqlite::{Connection, OptionalExtension, Transaction};

use cnc_model::{SCHEMA_VERSION, StoreError, StoreErrorKind, StoreResult};

use super::error::map_err;

const V3: &str = r#"
CREATE INDEX IF NOT EXISTS tasks_worker_state ON tasks(worker, state);
"#;

const V4: &str = r#"
CREATE TABLE IF NOT EXISTS task_ids (id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR REPLACE INTO task_ids (id, seq) SELECT id, seq FROM tasks ORDER BY id;
INSERT OR REPLACE INTO meta (key, value)
    SELECT 'ids_merged_seq', CAST(coalesce(max(seq), 0) AS TEXT) FROM tasks;
DROP INDEX IF EXISTS tasks_id;
DROP INDEX IF EXISTS tasks_runtime;
CREATE INDEX IF NOT EXISTS tasks_runtime_done ON tasks(name, succeeded_at, runtime) WHERE runtime IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_worker_state_name ON tasks(worker, state, name);
CREATE INDEX IF NOT EXISTS tasks_name_state ON tasks(name, state);
CREATE TABLE IF NOT EXISTS seq_minute (
    minute  INTEGER PRIMARY KEY,
    min_seq INTEGER NOT NULL,
    max_seq INTEGER NOT NULL
);
INSERT OR REPLACE INTO seq_minute (minute, min_seq, max_seq)
    SELECT CAST(created_at / 60 AS INTEGER), min(seq), max(seq) FROM tasks GROUP BY 1;
"#;

const V1: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL,
    name         TEXT,
    state        TEXT NOT NULL,
    worker       TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    received_at  REAL,
    started_at   REAL,
    succeeded_at REAL,
    runtime      REAL,
    root_id      TEXT,
    parent_id    TEXT,
    group_id     TEXT,
    body         TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_id ON tasks(id);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
CREATE INDEX IF NOT EXISTS tasks_worker ON tasks(worker);
CREATE INDEX IF NOT EXISTS tasks_name ON tasks(name);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks(created_at);
CREATE INDEX IF NOT EXISTS tasks_root ON tasks(root_id) WHERE root_id IS NOT NULL AND root_id <> id;
CREATE INDEX IF NOT EXISTS tasks_group ON tasks(group_id) WHERE group_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_parent ON tasks(parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_runtime ON tasks(name, runtime) WHERE runtime IS NOT NULL;
CREATE TABLE IF NOT EXISTS task_events (
    task_seq INTEGER NOT NULL,
    ts_us    INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    hostname TEXT NOT NULL,
    clock    INTEGER NOT NULL,
    ts       REAL NOT NULL,
    fields   TEXT,
    PRIMARY KEY (task_seq, ts_us, kind, hostname, clock)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    hostname TEXT PRIMARY KEY,
    status   TEXT NOT NULL,
    offline_since REAL,
    first_seen REAL NOT NULL,
    body     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS worker_history (
    id        INTEGER PRIMARY KEY,
    hostname  TEXT NOT NULL,
    status    TEXT NOT NULL,
    ts        REAL NOT NULL,
    reason    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS worker_history_host ON worker_history(hostname, ts);
CREATE TABLE IF NOT EXISTS schedules (name TEXT PRIMARY KEY, body TEXT NOT NULL);
"#;

const V2: &str = r#"
CREATE TABLE IF NOT EXISTS task_counts (
    name   TEXT NOT NULL,
    worker TEXT NOT NULL,
    state  TEXT NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (name, worker, state)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agg_minute (
    minute INTEGER NOT NULL,
    state  TEXT NOT NULL,
    name   TEXT NOT NULL,
    worker TEXT NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (minute, state, name, worker)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS search_pending (seq INTEGER PRIMARY KEY, since REAL NOT NULL, ver INTEGER NOT NULL DEFAULT 1);
"#;

/// Backfill of the v2 aggregates from v1 data.
const V2_BACKFILL: &str = r#"
DELETE FROM task_counts;
INSERT INTO task_counts (name, worker, state, count)
    SELECT coalesce(name, ''), coalesce(worker, ''), state, count(*) FROM tasks GROUP BY 1, 2, 3;
DELETE FROM agg_minute;
INSERT INTO agg_minute (minute, state, name, worker, count)
    SELECT CAST(f / 60 AS INTEGER), state, coalesce(name, ''), coalesce(worker, ''), count(*)
    FROM (SELECT state, name, worker,
                 CASE state
                     WHEN 'SUCCESS' THEN json_extract(body, '$.succeeded_at')
                     WHEN 'FAILURE' THEN json_extract(body, '$.failed_at')
                     WHEN 'REVOKED' THEN json_extract(body, '$.revoked_at')
                     WHEN 'REJECTED' THEN json_extract(body, '$.rejected_at')
                 END AS f
          FROM tasks)
    WHERE f IS NOT NULL
    GROUP BY 1, 2, 3, 4;
INSERT OR IGNORE INTO search_pending (seq, since, ver) SELECT seq, 0, 1 FROM tasks;
"#;

/// The version stored in the database; 0 when the database is empty.
pub(crate) fn read_version(conn: &Connection) -> StoreResult<u32> {
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(map_err)?
        > 0;
    if !has_table {
        return Ok(0);
    }
    let v: Option<i64> = conn
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .optional()
        .map_err(map_err)?
        .flatten();
    Ok(v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0))
}

fn step(tx: &Transaction<'_>, to: u32) -> StoreResult<()> {
    let sql = match to {
        1 => V1,
        2 => V2,
        3 => V3,
        4 => V4,
        other => {
            return Err(StoreError::new(
                StoreErrorKind::Migration,
                format!("no migration to schema version {other}"),
            ));
        }
    };
    tx.execute_batch(sql).map_err(|e| {
        StoreError::new(
            StoreErrorKind::Migration,
            format!("migration to v{to} failed"),
        )
        .with_source(e)
    })?;
    if to == 2 {
        tx.execute_batch(V2_BACKFILL).map_err(|e| {
            StoreError::new(
                StoreErrorKind::Migration,
                "backfilling v2 aggregates failed",
            )
            .with_source(e)
        })?;
    }
    tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [to])
        .map_err(map_err)?;
    Ok(())
}

/// Run migrations `from -> to` in one transaction.
pub(crate) fn migrate(conn: &mut Connection, from: u32, to: u32) -> StoreResult<()> {
    if to > SCHEMA_VERSION {
        return Err(StoreError::new(
            StoreErrorKind::SchemaTooNew,
            format!("this build knows schema versions up to {SCHEMA_VERSION}, not {to}"),
        ));
    }
    if from >= to {
        return Err(StoreError::invalid(format!(
            "cannot migrate from v{from} to v{to}"
        )));
    }
    let tx = conn.transaction().map_err(map_err)?;
    let current = read_version(&tx)?;
    if current != from {
        return Err(StoreError::new(
            StoreErrorKind::Migration,
            format!("database is at schema v{current}, not v{from}"),
        ));
    }
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(map_err)?;
    for v in from + 1..=to {
        step(&tx, v)?;
    }
    tx.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', ?1)",
        [format!("{:016x}{:016x}", fastrand_u64(), fastrand_u64())],
    )
    .map_err(map_err)?;
    tx.commit().map_err(map_err)
}

/// Bring a database to [`SCHEMA_VERSION`], refusing newer ones.
pub(crate) fn initialize(conn: &mut Connection) -> StoreResult<()> {
    let current = read_version(conn)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::new(
            StoreErrorKind::SchemaTooNew,
            format!(
                "the database has schema version {current}, newer than this celery-cnc \
                 understands ({SCHEMA_VERSION}); upgrade celery-cnc or use another database file"
            ),
        ));
    }
    if current < SCHEMA_VERSION {
        migrate(conn, current, SCHEMA_VERSION)?;
    }
    let tx = conn.transaction().map_err(map_err)?;
    tx.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', ?1)",
        [format!("{:016x}{:016x}", fastrand_u64(), fastrand_u64())],
    )
    .map_err(map_err)?;
    tx.commit().map_err(map_err)
}

/// The random id of this database, shared with its search index file so a
/// search file that belongs to another database is detected.
pub(crate) fn generation(conn: &Connection) -> StoreResult<String> {
    conn.query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| {
        r.get(0)
    })
    .map_err(map_err)
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
