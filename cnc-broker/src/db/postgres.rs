//! The database result backend on PostgreSQL (`db+postgresql://…`), via
//! tokio-postgres with a small deadpool pool.
//!
//! Plain TCP only (`NoTls`): a URL asking for `sslmode=require` fails to
//! connect with a clear error. The table's columns are discovered from
//! `information_schema` on first use and again after an error; a table that
//! does not exist yet (no worker has stored a result) reads as empty.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::{
    DbTable, DbUrl, Dialect, Queries, decodable, no_name_column, parse_url, row_to_result,
    undecodable,
};
use crate::api::{ResultBackend, TaskResult};
use crate::error::{BrokerError, BrokerResult, ErrorKind};
use crate::protocol::result::DbTaskRow;
use crate::url::redact;

/// How long connecting (and waiting for a pooled connection) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Celery's SQLAlchemy result backend stored in PostgreSQL.
pub struct PostgresResultBackend {
    pool: Pool,
    shown: String,
    table: DbTable,
    queries: Mutex<Option<Arc<Queries>>>,
}

impl std::fmt::Debug for PostgresResultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresResultBackend")
            .field("url", &self.shown)
            .field("table", &self.table)
            .finish()
    }
}

impl PostgresResultBackend {
    /// Connect to a `db+postgresql://` URL (table options from its query,
    /// see [`super::parse_url`]) and check that the server answers.
    pub async fn connect(url: &str) -> BrokerResult<Self> {
        match parse_url(url)? {
            (DbUrl::Postgres { conn }, table) => Self::connect_with(url, &conn, table).await,
            _ => Err(BrokerError::new(
                ErrorKind::InvalidUrl,
                format!("not a db+postgresql URL: {}", redact(url)),
            )),
        }
    }

    async fn connect_with(url: &str, conn: &str, table: DbTable) -> BrokerResult<Self> {
        let shown = redact(url);
        let mut pg = tokio_postgres::Config::from_str(conn).map_err(|_| {
            // The parser's message may quote the string: keep it out.
            BrokerError::new(ErrorKind::InvalidUrl, format!("bad PostgreSQL URL {shown}"))
        })?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("celery-cnc result reader");
        }
        let manager = Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(4)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| {
                BrokerError::new(
                    ErrorKind::InvalidInput,
                    format!("{shown}: cannot build the pool"),
                )
                .with_source(e)
            })?;
        let backend = Self {
            pool,
            shown,
            table,
            queries: Mutex::new(None),
        };
        backend.healthcheck().await?;
        Ok(backend)
    }

    async fn client(&self) -> BrokerResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            let kind = match &e {
                PoolError::Timeout(_) => ErrorKind::Timeout,
                _ => ErrorKind::Connection,
            };
            BrokerError::new(kind, format!("{}: cannot connect", self.shown)).with_source(e)
        })
    }

    fn pg_err(&self, what: &str, e: tokio_postgres::Error) -> BrokerError {
        let kind = match e.code() {
            None => ErrorKind::Connection,
            Some(c)
                if *c == SqlState::QUERY_CANCELED
                    || *c == SqlState::LOCK_NOT_AVAILABLE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                ErrorKind::Timeout
            }
            Some(c)
                if *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CRASH_SHUTDOWN
                    || *c == SqlState::CANNOT_CONNECT_NOW
                    || *c == SqlState::TOO_MANY_CONNECTIONS =>
            {
                ErrorKind::Connection
            }
            Some(_) => ErrorKind::Rejected,
        };
        BrokerError::new(kind, format!("{}: {what} failed", self.shown)).with_source(e)
    }

    /// The table's statements; `None` when the table does not exist (yet).
    async fn queries(
        &self,
        client: &deadpool_postgres::Object,
    ) -> BrokerResult<Option<Arc<Queries>>> {
        if let Some(q) = self.cached() {
            return Ok(Some(q));
        }
        let rows = client
            .query(
                "SELECT column_name::text, column_default IS NOT NULL FROM information_schema.columns \
                 WHERE table_schema = COALESCE($1::text, current_schema()::text) AND table_name = $2",
                &[&self.table.schema, &self.table.name],
            )
            .await
            .map_err(|e| self.pg_err("read the table's columns", e))?;
        let columns: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if columns.is_empty() {
            return Ok(None);
        }
        // SQLAlchemy fills `id` from Celery's `task_id_sequence` itself (no
        // server default); a table with a default (serial) needs nothing.
        let id_has_default = rows
            .iter()
            .any(|r| r.get::<_, String>(0) == "id" && r.get::<_, bool>(1));
        let sequence = DbTable {
            name: "task_id_sequence".to_owned(),
            schema: self.table.schema.clone(),
        }
        .qualified()
        .replace('\'', "''");
        let id_expr = format!("nextval('{sequence}')");
        let q = Arc::new(
            Queries::build(
                Dialect::Postgres,
                &self.table,
                &columns,
                (!id_has_default).then_some(id_expr.as_str()),
            )
            .map_err(|msg| {
                BrokerError::new(ErrorKind::Rejected, format!("{}: {msg}", self.shown))
            })?,
        );
        if let Ok(mut slot) = self.queries.lock() {
            *slot = Some(q.clone());
        }
        Ok(Some(q))
    }

    fn cached(&self) -> Option<Arc<Queries>> {
        self.queries.lock().ok().and_then(|q| q.clone())
    }

    fn forget_columns(&self) {
        if let Ok(mut slot) = self.queries.lock() {
            *slot = None;
        }
    }

    /// A pooled client and the table's statements; `None` when the table
    /// does not exist (yet).
    async fn prepare(&self) -> BrokerResult<Option<(deadpool_postgres::Object, Arc<Queries>)>> {
        let client = self.client().await?;
        Ok(self.queries(&client).await?.map(|q| (client, q)))
    }

    /// The outcome of one statement; `None` when the table vanished. An
    /// error drops the discovered columns (the table may have been migrated).
    fn outcome<T>(
        &self,
        what: &str,
        r: Result<T, tokio_postgres::Error>,
    ) -> BrokerResult<Option<T>> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                self.forget_columns();
                if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
                    return Ok(None);
                }
                Err(self.pg_err(what, e))
            }
        }
    }

    /// Store the state `ABORTED` for `task_id` as Celery's
    /// `AbortableAsyncResult.abort()` does on this backend (result `null`,
    /// the other columns cleared): a stored `SUCCESS` is kept, anything else replaced, a
    /// missing row inserted (its `id` from `task_id_sequence`, as SQLAlchemy
    /// does). Fails with [`ErrorKind::NotFound`] while the table does not
    /// exist (only Celery creates it).
    pub async fn store_aborted(&self, task_id: &str) -> BrokerResult<()> {
        let missing = || {
            BrokerError::new(
                ErrorKind::NotFound,
                format!(
                    "{}: no result table yet (a worker creates it): cannot store ABORTED",
                    self.shown
                ),
            )
        };
        let Some((c, q)) = self.prepare().await? else {
            return Err(missing());
        };
        let r = c.execute(&q.abort_update, &[&task_id]).await;
        if self.outcome("store ABORTED", r)?.ok_or_else(missing)? == 0 {
            let r = c.execute(&q.abort_insert, &[&task_id]).await;
            self.outcome("store ABORTED", r)?.ok_or_else(missing)?;
        }
        Ok(())
    }
}

fn read_row(row: &Row) -> Result<DbTaskRow, tokio_postgres::Error> {
    Ok(DbTaskRow {
        task_id: row.try_get::<_, Option<String>>(0)?.unwrap_or_default(),
        status: row.try_get(1)?,
        result: row.try_get(2)?,
        date_done: row.try_get(3)?,
        traceback: row.try_get(4)?,
        children: row.try_get(5)?,
        name: row.try_get(6)?,
        args: row.try_get(7)?,
        kwargs: row.try_get(8)?,
        worker: row.try_get(9)?,
        retries: row.try_get(10)?,
        queue: row.try_get(11)?,
    })
}

#[async_trait]
impl ResultBackend for PostgresResultBackend {
    fn redacted_url(&self) -> String {
        self.shown.clone()
    }

    async fn get(&self, task_id: &str) -> BrokerResult<Option<TaskResult>> {
        let Some((c, q)) = self.prepare().await? else {
            return Ok(None);
        };
        let r = match c.query(&q.get, &[&task_id]).await {
            Ok(rows) => rows.first().map(read_row).transpose(),
            Err(e) => Err(e),
        };
        let row = self.outcome("get", r)?.flatten();
        match row {
            Some(row) => row_to_result(&row)
                .map(Some)
                .map_err(|e| undecodable(task_id, &e)),
            None => Ok(None),
        }
    }

    async fn list(&self, limit: usize) -> BrokerResult<Vec<TaskResult>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let Some((c, q)) = self.prepare().await? else {
            return Ok(Vec::new());
        };
        let r = match c.query(&q.list, &[&limit]).await {
            Ok(rows) => rows.iter().map(read_row).collect::<Result<Vec<_>, _>>(),
            Err(e) => Err(e),
        };
        let rows = self.outcome("list", r)?.unwrap_or_default();
        Ok(decodable(rows, &self.shown))
    }

    async fn delete(&self, task_id: &str) -> BrokerResult<bool> {
        let Some((c, q)) = self.prepare().await? else {
            return Ok(false);
        };
        let r = c.execute(&q.delete, &[&task_id]).await;
        Ok(self.outcome("delete", r)?.unwrap_or(0) > 0)
    }

    async fn delete_by_name(&self, name: &str) -> BrokerResult<u64> {
        let Some((c, q)) = self.prepare().await? else {
            return Ok(0);
        };
        let Some(sql) = &q.delete_by_name else {
            return Err(no_name_column(&self.table));
        };
        let r = c.execute(sql, &[&name]).await;
        Ok(self.outcome("delete by name", r)?.unwrap_or(0))
    }

    async fn delete_all(&self) -> BrokerResult<u64> {
        let Some((c, q)) = self.prepare().await? else {
            return Ok(0);
        };
        let r = c.execute(&q.delete_all, &[]).await;
        Ok(self.outcome("delete all", r)?.unwrap_or(0))
    }

    /// [`Self::store_aborted`]: Celery's row update for
    /// `AbortableAsyncResult.abort()`.
    async fn mark_aborted(&self, task_id: &str) -> BrokerResult<()> {
        self.store_aborted(task_id).await
    }

    async fn healthcheck(&self) -> BrokerResult<()> {
        let client = self.client().await?;
        client
            .query_one("SELECT 1", &[])
            .await
            .map_err(|e| self.pg_err("healthcheck", e))?;
        Ok(())
    }
}
