//! Celery's database result backend, read from SQLite ([`sqlite`], feature
//! `db-sqlite`, via rusqlite) and PostgreSQL ([`postgres`], feature
//! `db-postgres`, via tokio-postgres and deadpool).
//!
//! Celery's SQLAlchemy backend (`db+sqlite:///results.db`,
//! `db+postgresql://user@host/db`) keeps one row per task in
//! `celery_taskmeta`, updated in place (protocol README 5b). This module
//! reads and deletes rows, and writes one thing: the `ABORTED` state of
//! `AbortableAsyncResult.abort()` (`store_aborted`, behind
//! `ResultBackend::mark_aborted`). It never creates or migrates tables,
//! because the schema belongs to Celery.
//!
//! Design choices, and why:
//!
//! * **Columns are discovered, not assumed.** Tables created by older Celery
//!   lack `children`, `stamps` or the `result_extended` columns; the reader
//!   asks the database which columns exist (once, until an error) and selects
//!   `NULL` for the missing ones. Deleting by task name needs the `name`
//!   column and is [`ErrorKind::Unsupported`]
//!   without it.
//! * **A missing table or SQLite file is an empty backend**, not an error:
//!   Celery creates them when a worker first stores a result, which may be
//!   after celery-cnc starts. The health check still says when the SQLite
//!   file is missing.
//! * **Blobs are JSON or nothing.** Result blobs hold JSON text written with
//!   the result serializer; a pickle (first byte `0x80`) is reported as
//!   undecodable ([`ErrorKind::Decode`] from `get`,
//!   skipped by `list`) and never unpickled.
//! * **Table names follow Celery's settings**: `database_table_names` and
//!   `database_table_schemas` map onto [`DbTable`], settable in code or with
//!   the URL query parameters `cnc_task_table` and `cnc_task_schema` (removed
//!   before connecting; Celery's own URL has no such parameters).

// The SQL building is shared by both dialects; with one feature off, parts
// of it go unused.
#![cfg_attr(
    not(all(feature = "db-sqlite", feature = "db-postgres")),
    allow(dead_code)
)]

#[cfg(feature = "db-postgres")]
pub mod postgres;
#[cfg(feature = "db-sqlite")]
pub mod sqlite;

use std::path::PathBuf;

use serde_json::Value;

use crate::api::TaskResult;
use crate::error::{BrokerError, BrokerResult, ErrorKind};
use crate::protocol::DecodeError;
use crate::protocol::result::{DB_TASK_COLUMNS, DB_TASK_TABLE, DbTaskRow};
use crate::url::redact;

/// Which task table to read: Celery's `database_table_names['task']` and
/// `database_table_schemas['task']`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTable {
    /// Table name (`celery_taskmeta` by default).
    pub name: String,
    /// Schema (PostgreSQL) or attached database (SQLite); `None`: the
    /// connection's default (`search_path`, `main`).
    pub schema: Option<String>,
}

impl Default for DbTable {
    fn default() -> Self {
        Self {
            name: DB_TASK_TABLE.to_owned(),
            schema: None,
        }
    }
}

impl DbTable {
    /// `"schema"."name"` or `"name"`, quoted for SQL.
    pub(crate) fn qualified(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }
}

/// A database backend URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// `db+sqlite:///relative.db` or `db+sqlite:////absolute/path.db`.
    Sqlite {
        /// The database file (relative paths are relative to the current
        /// directory, as for Celery).
        path: PathBuf,
    },
    /// `db+postgresql://…` (also `db+postgresql+psycopg2://`, `db+postgres://`).
    Postgres {
        /// A `postgresql://` URL for tokio-postgres (driver suffix and our
        /// own query parameters removed). Contains the password: never print.
        conn: String,
    },
}

/// Parse a `db+…` result backend URL into where to connect and which table
/// to read. Errors name the URL only through [`redact`].
pub fn parse_url(url: &str) -> BrokerResult<(DbUrl, DbTable)> {
    let bad = |why: &str| {
        BrokerError::new(
            ErrorKind::InvalidUrl,
            format!("bad database backend URL {}: {why}", redact(url)),
        )
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(bad("no scheme"));
    };
    let scheme = scheme.to_ascii_lowercase();
    let dialect = scheme.strip_prefix("db+").unwrap_or(&scheme);
    let dialect = dialect.split('+').next().unwrap_or(dialect);
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let mut table = DbTable::default();
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("cnc_task_table", v)) if !v.is_empty() => table.name = v.to_owned(),
            Some(("cnc_task_schema", v)) if !v.is_empty() => table.schema = Some(v.to_owned()),
            Some(("cnc_task_table" | "cnc_task_schema", _)) => {
                return Err(bad("empty cnc_task_table or cnc_task_schema"));
            }
            _ => kept.push(pair),
        }
    }
    match dialect {
        "sqlite" => {
            // SQLAlchemy: `sqlite:///rel.db`, `sqlite:////abs.db`; the part
            // before the third slash is an (empty) host.
            let Some(path) = rest.strip_prefix('/') else {
                return Err(bad("expected db+sqlite:///path"));
            };
            if path.is_empty() || path == ":memory:" {
                return Err(bad(
                    "an in-memory SQLite database cannot be read from another process",
                ));
            }
            Ok((
                DbUrl::Sqlite {
                    path: PathBuf::from(path),
                },
                table,
            ))
        }
        "postgresql" | "postgres" => {
            let mut conn = format!("postgresql://{rest}");
            if !kept.is_empty() {
                conn.push('?');
                conn.push_str(&kept.join("&"));
            }
            Ok((DbUrl::Postgres { conn }, table))
        }
        other => Err(BrokerError::unsupported(format!(
            "database backend dialect {other:?} is not supported (expected sqlite or postgresql)"
        ))),
    }
}

/// Quote an SQL identifier (`"…"`, inner quotes doubled).
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The SQL dialect, for the few expressions that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn placeholder(self, n: usize) -> String {
        match self {
            Self::Sqlite => format!("?{n}"),
            Self::Postgres => format!("${n}"),
        }
    }
    fn blob_type(self) -> &'static str {
        match self {
            Self::Sqlite => "BLOB",
            Self::Postgres => "BYTEA",
        }
    }
}

/// How a selected column is typed.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Blob,
    Time,
    Int,
}

/// The columns read, in [`DbTaskRow`] order.
const READ_COLUMNS: [(&str, Kind); 12] = [
    ("task_id", Kind::Text),
    ("status", Kind::Text),
    ("result", Kind::Blob),
    ("date_done", Kind::Time),
    ("traceback", Kind::Text),
    ("children", Kind::Blob),
    ("name", Kind::Text),
    ("args", Kind::Blob),
    ("kwargs", Kind::Blob),
    ("worker", Kind::Text),
    ("retries", Kind::Int),
    ("queue", Kind::Text),
];

/// The statements for one table, built from its actual columns.
#[derive(Debug, Clone)]
pub(crate) struct Queries {
    /// `… WHERE task_id = $1`.
    pub get: String,
    /// `… ORDER BY id DESC LIMIT $1`.
    pub list: String,
    /// `DELETE … WHERE task_id = $1`.
    pub delete: String,
    /// `DELETE … WHERE name = $1`, when the table has `name`.
    pub delete_by_name: Option<String>,
    /// `DELETE FROM …`.
    pub delete_all: String,
    /// Store `ABORTED` over anything but `SUCCESS`, as Celery's
    /// `_store_result(task_id, None, "ABORTED")` does: result `null`, and
    /// every other column it writes cleared (no request context).
    pub abort_update: String,
    /// Insert the `ABORTED` row when there is none (a `SUCCESS` row or a
    /// racing insert wins: `ON CONFLICT DO NOTHING`).
    pub abort_insert: String,
}

impl Queries {
    /// Build the statements; `columns` are the table's column names. Errors
    /// when the table lacks `task_id` or `status` (not a Celery table).
    /// `id_expr`: the value for `id` on insert when the database does not
    /// fill it (PostgreSQL: SQLAlchemy's client-side `task_id_sequence`);
    /// `None` leaves `id` out.
    pub(crate) fn build(
        dialect: Dialect,
        table: &DbTable,
        columns: &[String],
        id_expr: Option<&str>,
    ) -> Result<Self, String> {
        let has = |c: &str| columns.iter().any(|x| x.eq_ignore_ascii_case(c));
        for required in ["task_id", "status"] {
            if !has(required) {
                return Err(format!(
                    "table {} has no {required} column: not a Celery result table",
                    table.qualified()
                ));
            }
        }
        let exprs: Vec<String> = READ_COLUMNS
            .iter()
            .map(|&(col, kind)| {
                let q = quote_ident(col);
                match (has(col), kind, dialect) {
                    (true, Kind::Time, Dialect::Postgres) => {
                        format!("to_char({q}, 'YYYY-MM-DD HH24:MI:SS.US')")
                    }
                    (true, Kind::Time, Dialect::Sqlite) => format!("CAST({q} AS TEXT)"),
                    (true, Kind::Int, _) => format!("CAST({q} AS BIGINT)"),
                    (true, _, _) => q,
                    (false, Kind::Blob, d) => format!("CAST(NULL AS {})", d.blob_type()),
                    (false, Kind::Int, _) => "CAST(NULL AS BIGINT)".to_owned(),
                    (false, _, _) => "CAST(NULL AS TEXT)".to_owned(),
                }
            })
            .collect();
        let t = table.qualified();
        let select = format!("SELECT {} FROM {t}", exprs.join(", "));
        let p1 = dialect.placeholder(1);
        let order = if has("id") { "id" } else { "task_id" };
        // What Celery's `_update_result` writes for a state without a
        // request: the JSON `null` result, NULL in the other columns.
        let null_blob = match dialect {
            Dialect::Sqlite => "CAST('null' AS BLOB)",
            Dialect::Postgres => "convert_to('null', 'UTF8')",
        };
        let mut sets = vec![
            "status = 'ABORTED'".to_owned(),
            format!("result = {null_blob}"),
        ];
        // Every other column but the keys and `stamps`.
        for col in DB_TASK_COLUMNS
            .into_iter()
            .filter(|c| !["id", "task_id", "status", "result", "stamps"].contains(c))
        {
            if has(col) {
                sets.push(format!("{} = NULL", quote_ident(col)));
            }
        }
        let (id_col, id_val) = match id_expr {
            Some(e) if has("id") => ("id, ", format!("{e}, ")),
            _ => ("", String::new()),
        };
        Ok(Self {
            get: format!("{select} WHERE task_id = {p1}"),
            list: format!("{select} ORDER BY {order} DESC LIMIT {p1}"),
            delete: format!("DELETE FROM {t} WHERE task_id = {p1}"),
            delete_by_name: has("name").then(|| format!("DELETE FROM {t} WHERE name = {p1}")),
            delete_all: format!("DELETE FROM {t}"),
            abort_update: format!(
                "UPDATE {t} SET {} WHERE task_id = {p1} AND (status IS NULL OR status <> 'SUCCESS')",
                sets.join(", ")
            ),
            abort_insert: format!(
                "INSERT INTO {t} ({id_col}task_id, status, result) \
                 VALUES ({id_val}{p1}, 'ABORTED', {null_blob}) ON CONFLICT (task_id) DO NOTHING"
            ),
        })
    }
}

/// A row turned into the adapter's [`TaskResult`] (with the Redis-shaped
/// value as `raw`).
pub(crate) fn row_to_result(row: &DbTaskRow) -> Result<TaskResult, DecodeError> {
    let meta = row.to_meta()?;
    let raw = serde_json::to_value(&meta).unwrap_or(Value::Null);
    Ok(TaskResult {
        task_id: meta.task_id,
        status: meta.status,
        result: meta.result,
        traceback: meta.traceback,
        date_done: meta.date_done,
        name: meta.name,
        raw,
    })
}

/// The error for an undecodable stored row (`get`).
pub(crate) fn undecodable(task_id: &str, e: &DecodeError) -> BrokerError {
    BrokerError::decode(format!(
        "result of {task_id} is undecodable ({}): {e}",
        e.reason()
    ))
}

/// The rows of `list` that decode; the others are logged and skipped.
pub(crate) fn decodable(rows: Vec<DbTaskRow>, location: &str) -> Vec<TaskResult> {
    let mut skipped = 0usize;
    let out = rows
        .iter()
        .filter_map(|r| match row_to_result(r) {
            Ok(t) => Some(t),
            Err(e) => {
                skipped += 1;
                tracing::debug!(task_id = %r.task_id, reason = e.reason(), "undecodable stored result");
                None
            }
        })
        .collect();
    if skipped > 0 {
        tracing::info!(backend = %location, skipped, "skipped undecodable stored results (pickle or broken JSON)");
    }
    out
}

/// The `delete_by_name` error for tables without a `name` column.
pub(crate) fn no_name_column(table: &DbTable) -> BrokerError {
    BrokerError::unsupported(format!(
        "table {} has no name column (Celery older than 4.x): cannot delete by task name",
        table.qualified()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls() {
        let (u, t) = parse_url("db+sqlite:///results.db").unwrap();
        assert_eq!(
            u,
            DbUrl::Sqlite {
                path: "results.db".into()
            }
        );
        assert_eq!(t, DbTable::default());
        let (u, _) = parse_url("db+sqlite:////tmp/x/results.db?timeout=3").unwrap();
        assert_eq!(
            u,
            DbUrl::Sqlite {
                path: "/tmp/x/results.db".into()
            }
        );
        assert!(parse_url("db+sqlite://").is_err());
        assert!(parse_url("db+sqlite:///:memory:").is_err());
    }

    #[test]
    fn postgres_urls_hide_the_password() {
        let (u, t) = parse_url(
            "db+postgresql+psycopg2://u:secret@h:5432/d?cnc_task_schema=s1&connect_timeout=5&cnc_task_table=tm",
        )
        .unwrap();
        assert_eq!(
            u,
            DbUrl::Postgres {
                conn: "postgresql://u:secret@h:5432/d?connect_timeout=5".into()
            }
        );
        assert_eq!(t.name, "tm");
        assert_eq!(t.schema.as_deref(), Some("s1"));
        assert_eq!(t.qualified(), "\"s1\".\"tm\"");
        let e = parse_url("db+mysql://u:secret@h/d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mysql") && !e.contains("secret"), "{e}");
        let e = parse_url("db+postgresql://u:secret@h/d?cnc_task_table=")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn queries_follow_the_columns() {
        let old: Vec<String> = [
            "id",
            "task_id",
            "status",
            "result",
            "date_done",
            "traceback",
        ]
        .map(String::from)
        .to_vec();
        let q = Queries::build(Dialect::Postgres, &DbTable::default(), &old, None).unwrap();
        assert!(q.delete_by_name.is_none());
        assert!(q.get.contains("CAST(NULL AS BYTEA)"), "{}", q.get);
        assert!(q.get.ends_with("WHERE task_id = $1"), "{}", q.get);
        let q = Queries::build(Dialect::Sqlite, &DbTable::default(), &old, None).unwrap();
        assert!(q.list.ends_with("ORDER BY id DESC LIMIT ?1"), "{}", q.list);
        assert!(
            Queries::build(Dialect::Sqlite, &DbTable::default(), &["id".into()], None).is_err()
        );
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        let q = Queries::build(
            Dialect::Postgres,
            &DbTable::default(),
            &old,
            Some("nextval('s')"),
        )
        .unwrap();
        assert!(
            q.abort_insert
                .contains("(id, task_id, status, result) VALUES (nextval('s'), $1,"),
            "{}",
            q.abort_insert
        );
        assert!(q.abort_update.contains("traceback"), "{}", q.abort_update);
        assert!(!q.abort_update.contains("kwargs"), "{}", q.abort_update);
    }

    #[test]
    fn pickled_rows_are_undecodable() {
        let row = DbTaskRow {
            task_id: "t".into(),
            status: Some("SUCCESS".into()),
            result: Some(b"\x80\x04K\x05.".to_vec()),
            ..DbTaskRow::default()
        };
        let e = row_to_result(&row).unwrap_err();
        assert_eq!(undecodable("t", &e).kind(), ErrorKind::Decode);
        assert!(decodable(vec![row], "x").is_empty());
        let ok = DbTaskRow {
            task_id: "u".into(),
            status: Some("SUCCESS".into()),
            result: Some(b"5".to_vec()),
            name: Some("cnc.add".into()),
            ..DbTaskRow::default()
        };
        let r = row_to_result(&ok).unwrap();
        assert_eq!(r.result, serde_json::json!(5));
        assert_eq!(r.name.as_deref(), Some("cnc.add"));
    }
}
