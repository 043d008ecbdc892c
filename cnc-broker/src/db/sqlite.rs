//! The database result backend on SQLite (`db+sqlite:///path`), via
//! rusqlite.
//!
//! The file is opened read-write (deletes need it) without `CREATE`, with a
//! busy timeout so a worker writing at the same moment only delays us. It is
//! opened lazily: a file Celery has not created yet reads as an empty
//! backend. Every call runs on tokio's blocking pool; the one connection is
//! behind a mutex (SQLite serialises writers anyway). After an error the
//! connection and the discovered columns are dropped and rebuilt on the next
//! call. The journal mode is Celery's to choose and is left alone.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, Row};

use super::{DbTable, Dialect, Queries, decodable, no_name_column, row_to_result, undecodable};
use crate::api::{ResultBackend, TaskResult};
use crate::error::{BrokerError, BrokerResult, ErrorKind};
use crate::protocol::result::DbTaskRow;

/// How long a statement waits for a lock held by a writing worker.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Celery's SQLAlchemy result backend stored in a SQLite file.
pub struct SqliteResultBackend {
    path: PathBuf,
    shown: String,
    table: DbTable,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SqliteResultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteResultBackend")
            .field("path", &self.path)
            .field("table", &self.table)
            .finish()
    }
}

#[derive(Default)]
struct State {
    conn: Option<Connection>,
    queries: Option<Queries>,
}

/// What an operation found.
enum Found<T> {
    /// The file or the table does not exist (yet).
    Missing,
    /// The operation ran.
    Done(T),
}

impl SqliteResultBackend {
    /// A backend reading `table` in the SQLite file at `path`. Nothing is
    /// opened yet (see the module docs).
    pub fn new(path: impl Into<PathBuf>, table: DbTable) -> Self {
        let path = path.into();
        Self {
            shown: format!("db+sqlite:///{}", path.display()),
            path,
            table,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// From a `db+sqlite:///path` URL.
    pub fn from_url(url: &str) -> BrokerResult<Self> {
        match super::parse_url(url)? {
            (super::DbUrl::Sqlite { path }, table) => Ok(Self::new(path, table)),
            _ => Err(BrokerError::new(
                ErrorKind::InvalidUrl,
                format!("not a db+sqlite URL: {}", crate::url::redact(url)),
            )),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` with the connection and the table's statements on the
    /// blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Connection, &Queries) -> rusqlite::Result<T> + Send + 'static,
    ) -> BrokerResult<Found<T>> {
        let state = self.state.clone();
        let path = self.path.clone();
        let table = self.table.clone();
        let shown = self.shown.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut st = state.lock().map_err(|_| {
                BrokerError::new(
                    ErrorKind::Connection,
                    format!("{shown}: connection poisoned"),
                )
            })?;
            let out = Self::run_locked(&mut st, &path, &table, f);
            if out.is_err() {
                // Reopen and rediscover next time (the file may have been
                // replaced, or the table migrated).
                *st = State::default();
            }
            out.map_err(|e| e.into_broker(what, &shown))
        })
        .await;
        match joined {
            Ok(r) => r,
            Err(e) => Err(BrokerError::new(
                ErrorKind::Connection,
                format!("{}: {what} did not complete", self.shown),
            )
            .with_source(e)),
        }
    }

    fn run_locked<T>(
        st: &mut State,
        path: &Path,
        table: &DbTable,
        f: impl FnOnce(&Connection, &Queries) -> rusqlite::Result<T>,
    ) -> Result<Found<T>, Failure> {
        if st.conn.is_none() {
            if !path.exists() {
                return Ok(Found::Missing);
            }
            st.conn = Some(open(path).map_err(Failure::Sqlite)?);
        }
        let Some(conn) = st.conn.as_ref() else {
            return Ok(Found::Missing);
        };
        if st.queries.is_none() {
            let columns = columns(conn, table).map_err(Failure::Sqlite)?;
            if columns.is_empty() {
                return Ok(Found::Missing);
            }
            st.queries = Some(
                Queries::build(Dialect::Sqlite, table, &columns, None).map_err(Failure::Schema)?,
            );
        }
        let Some(q) = st.queries.as_ref() else {
            return Ok(Found::Missing);
        };
        f(conn, q).map(Found::Done).map_err(Failure::Sqlite)
    }

    /// Store the state `ABORTED` for `task_id` as Celery's
    /// `AbortableAsyncResult.abort()` does on this backend (result `null`,
    /// the other columns cleared): a stored `SUCCESS` is kept, anything else replaced, a
    /// missing row inserted. Fails with [`ErrorKind::NotFound`] while the
    /// file or table does not exist (only Celery creates them).
    pub async fn store_aborted(&self, task_id: &str) -> BrokerResult<()> {
        let id = task_id.to_owned();
        let found = self
            .run("store ABORTED", move |c, q| {
                if c.execute(&q.abort_update, [&id])? == 0 {
                    c.execute(&q.abort_insert, [&id])?;
                }
                Ok(())
            })
            .await?;
        match found {
            Found::Done(()) => Ok(()),
            Found::Missing => Err(BrokerError::new(
                ErrorKind::NotFound,
                format!(
                    "{}: no result table yet (a worker creates it): cannot store ABORTED",
                    self.shown
                ),
            )),
        }
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// The table's column names; empty when it does not exist.
fn columns(conn: &Connection, table: &DbTable) -> rusqlite::Result<Vec<String>> {
    let schema = table.schema.clone().unwrap_or_else(|| "main".to_owned());
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1, ?2)")?;
    let names = stmt
        .query_map((&table.name, &schema), |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(names)
}

fn text(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    Ok(match row.get_ref(i)? {
        ValueRef::Null => None,
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
    })
}

fn blob(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<Vec<u8>>> {
    Ok(match row.get_ref(i)? {
        ValueRef::Null => None,
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(t.to_vec()),
        ValueRef::Integer(n) => Some(n.to_string().into_bytes()),
        ValueRef::Real(f) => Some(f.to_string().into_bytes()),
    })
}

fn read_row(row: &Row<'_>) -> rusqlite::Result<DbTaskRow> {
    Ok(DbTaskRow {
        task_id: text(row, 0)?.unwrap_or_default(),
        status: text(row, 1)?,
        result: blob(row, 2)?,
        date_done: text(row, 3)?,
        traceback: text(row, 4)?,
        children: blob(row, 5)?,
        name: text(row, 6)?,
        args: blob(row, 7)?,
        kwargs: blob(row, 8)?,
        worker: text(row, 9)?,
        retries: match row.get_ref(10)? {
            ValueRef::Integer(n) => Some(n),
            _ => None,
        },
        queue: text(row, 11)?,
    })
}

/// Why an operation failed, before it becomes a [`BrokerError`].
enum Failure {
    Sqlite(rusqlite::Error),
    Schema(String),
}

impl Failure {
    fn into_broker(self, what: &str, shown: &str) -> BrokerError {
        match self {
            Self::Schema(msg) => BrokerError::new(ErrorKind::Rejected, format!("{shown}: {msg}")),
            Self::Sqlite(e) => {
                let kind = match e.sqlite_error_code() {
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => ErrorKind::Timeout,
                    Some(ErrorCode::CannotOpen | ErrorCode::NotADatabase) => ErrorKind::Connection,
                    Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => ErrorKind::Rejected,
                    _ => ErrorKind::Rejected,
                };
                BrokerError::new(kind, format!("{shown}: {what} failed")).with_source(e)
            }
        }
    }
}

#[async_trait]
impl ResultBackend for SqliteResultBackend {
    fn redacted_url(&self) -> String {
        self.shown.clone()
    }

    async fn get(&self, task_id: &str) -> BrokerResult<Option<TaskResult>> {
        let id = task_id.to_owned();
        let found = self
            .run("get", move |c, q| {
                let mut stmt = c.prepare_cached(&q.get)?;
                let mut rows = stmt.query([&id])?;
                rows.next()?.map(read_row).transpose()
            })
            .await?;
        match found {
            Found::Done(Some(row)) => row_to_result(&row)
                .map(Some)
                .map_err(|e| undecodable(task_id, &e)),
            _ => Ok(None),
        }
    }

    async fn list(&self, limit: usize) -> BrokerResult<Vec<TaskResult>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let found = self
            .run("list", move |c, q| {
                let mut stmt = c.prepare_cached(&q.list)?;
                let rows = stmt
                    .query_map([limit], read_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await?;
        Ok(match found {
            Found::Done(rows) => decodable(rows, &self.shown),
            Found::Missing => Vec::new(),
        })
    }

    async fn delete(&self, task_id: &str) -> BrokerResult<bool> {
        let id = task_id.to_owned();
        let found = self
            .run("delete", move |c, q| c.execute(&q.delete, [&id]))
            .await?;
        Ok(matches!(found, Found::Done(n) if n > 0))
    }

    async fn delete_by_name(&self, name: &str) -> BrokerResult<u64> {
        let name = name.to_owned();
        let found = self
            .run("delete by name", move |c, q| {
                Ok(match &q.delete_by_name {
                    Some(sql) => Some(c.execute(sql, [&name])?),
                    None => None,
                })
            })
            .await?;
        match found {
            Found::Missing => Ok(0),
            Found::Done(Some(n)) => Ok(n as u64),
            Found::Done(None) => Err(no_name_column(&self.table)),
        }
    }

    async fn delete_all(&self) -> BrokerResult<u64> {
        let found = self
            .run("delete all", move |c, q| c.execute(&q.delete_all, ()))
            .await?;
        Ok(match found {
            Found::Done(n) => n as u64,
            Found::Missing => 0,
        })
    }

    /// [`Self::store_aborted`]: Celery's row update for
    /// `AbortableAsyncResult.abort()`.
    async fn mark_aborted(&self, task_id: &str) -> BrokerResult<()> {
        self.store_aborted(task_id).await
    }

    async fn healthcheck(&self) -> BrokerResult<()> {
        if !self.path.exists() {
            return Err(BrokerError::new(
                ErrorKind::NotFound,
                format!(
                    "{}: the database file does not exist (yet: a worker creates it when it first stores a result)",
                    self.shown
                ),
            ));
        }
        let path = self.path.clone();
        let shown = self.shown.clone();
        tokio::task::spawn_blocking(move || {
            let conn = open(&path).map_err(|e| Failure::Sqlite(e).into_broker("open", &shown))?;
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(|e| Failure::Sqlite(e).into_broker("healthcheck", &shown))
        })
        .await
        .map_err(|e| {
            BrokerError::connection("sqlite healthcheck did not complete").with_source(e)
        })?
    }
}
