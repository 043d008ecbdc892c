//! `tasks` and `workers`: read the stored history (the same filters as the
//! web UI), as a table or as JSON lines with `--json`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use cnc_core::config::{ConfigLoader, DatabaseBackend, DatabaseConfig};
use cnc_core::{DbController, TaskFilter, TaskQuery, TaskState, TimeRange};
use cnc_store::sqlite::{SqliteConfig, SqliteStore};

use crate::broker_cmd::out;
use crate::config_cmd::config_failure;
use crate::exit::{CmdResult, Failure, parse_duration};
use crate::table::Table;

/// Which store to read.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// The store: a SQLite file path, `sqlite://PATH` or `postgres://…`.
    /// Default: `database.url` of `--config` and `CELERY_CNC__DATABASE__URL`,
    /// as `run` uses it (`celery_cnc.db`).
    #[arg(long, value_name = "PATH|URL")]
    pub db: Option<String>,
    /// The config file `run` uses, for its `database.url`.
    #[arg(long, value_name = "FILE", conflicts_with = "db")]
    pub config: Option<PathBuf>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl DbArgs {
    /// The store `run` would write, from the flag, the file or the
    /// environment.
    fn store(&self) -> CmdResult<DatabaseBackend> {
        let cfg = match &self.db {
            Some(url) => DatabaseConfig {
                url: url.clone(),
                ..DatabaseConfig::default()
            },
            None => {
                let mut loader = ConfigLoader::new();
                if let Some(path) = &self.config {
                    loader = loader.file(path);
                }
                loader
                    .env(std::env::vars())
                    .load()
                    .map_err(config_failure)?
                    .database
            }
        };
        cfg.backend()
            .map_err(|m| Failure::usage(format!("--db: {m}")))
    }
}

/// `celery-cnc tasks`.
#[derive(Debug, Args)]
pub struct TasksArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Only tasks in this state (repeatable).
    #[arg(long = "state")]
    states: Vec<TaskState>,
    /// Only tasks run by this worker.
    #[arg(long)]
    worker: Option<String>,
    /// Task name, or part of it.
    #[arg(long)]
    name: Option<String>,
    /// Only tasks first seen in this last period (`3600`, `30m`, `2h`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    since: Option<std::time::Duration>,
    /// Text in the name, args, kwargs, result or exception.
    #[arg(long)]
    search: Option<String>,
    /// How many, newest first.
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

/// Open the store read-only (SQLite) or connect (PostgreSQL).
async fn open(args: &DbArgs) -> CmdResult<Arc<dyn DbController>> {
    let store: Arc<dyn DbController> = match args.store()? {
        DatabaseBackend::Postgres(url) => {
            let shown = cnc_broker::url::redact(&url);
            let cfg = cnc_store::postgres::PostgresConfig::new(url);
            Arc::new(
                cnc_store::postgres::PostgresStore::connect(cfg)
                    .await
                    .with_context(|| format!("connecting to the database {shown}"))?,
            )
        }
        DatabaseBackend::Sqlite(path) => {
            if !path.exists() {
                return Err(Failure::nothing(format!(
                    "no database at {} (start `celery-cnc run` first)",
                    path.display()
                )));
            }
            let mut cfg = SqliteConfig::new(&path);
            cfg.read_only = true;
            Arc::new(
                SqliteStore::open(cfg)
                    .with_context(|| format!("opening the database {}", path.display()))?,
            )
        }
        DatabaseBackend::Memory => {
            return Err(Failure::usage(
                "memory:// lives inside the running service; query it through its web API",
            ));
        }
    };
    store.initialize().await.context("reading the database")?;
    Ok(store)
}

fn time(ts: f64) -> String {
    chrono::DateTime::from_timestamp_millis((ts * 1000.0) as i64)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// `celery-cnc tasks`.
pub async fn tasks(args: TasksArgs) -> CmdResult {
    let store = open(&args.db).await?;
    let filter = TaskFilter {
        states: args.states,
        worker: args.worker,
        name: args.name,
        time: args
            .since
            .map(|s| TimeRange::since(cnc_core::now() - s.as_secs_f64())),
        search: args.search,
        ..TaskFilter::default()
    };
    let page = store
        .tasks(&TaskQuery::newest(filter, args.limit))
        .await
        .context("listing tasks")?;
    if args.db.json {
        for t in &page.tasks {
            out(&serde_json::to_string(t)?)?;
        }
    } else {
        let mut table = Table::new(&[
            "id", "name", "state", "worker", "created", "runtime", "args",
        ]);
        for t in &page.tasks {
            table.row([
                t.id.clone(),
                t.name.clone().unwrap_or_default(),
                t.state.to_string(),
                t.worker.clone().unwrap_or_default(),
                time(t.created_at),
                t.runtime.map(|r| format!("{r:.3}s")).unwrap_or_default(),
                t.args.clone().unwrap_or_default(),
            ]);
        }
        out(table.render().trim_end())?;
    }
    store.close().await.context("closing the database")?;
    Ok(())
}

/// `celery-cnc workers`.
pub async fn workers(args: DbArgs) -> CmdResult {
    let store = open(&args).await?;
    let now = cnc_core::now();
    let mut list = store.workers().await.context("listing workers")?;
    for w in &mut list {
        w.status = w.status_at(now);
    }
    if args.json {
        for w in &list {
            out(&serde_json::to_string(w)?)?;
        }
    } else {
        let mut table = Table::new(&[
            "worker",
            "status",
            "active",
            "processed",
            "last heartbeat",
            "version",
        ]);
        for w in &list {
            let status = serde_json::to_value(w.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", w.status));
            table.row([
                w.hostname.clone(),
                status,
                w.active.to_string(),
                w.processed.to_string(),
                w.last_heartbeat.map(time).unwrap_or_default(),
                w.sw_ver.clone().unwrap_or_default(),
            ]);
        }
        out(table.render().trim_end())?;
    }
    store.close().await.context("closing the database")?;
    Ok(())
}
