//! `celery-cnc`: monitor Celery brokers into a store and query the history.
//!
//! This is the thin first shell over the library: `run` starts one event
//! listener per unique broker and a single writer that folds events into the
//! store in batches (1,000 events or 100 ms, whichever comes first); `tasks`
//! and `workers` read the stored history. The full service (components,
//! web UI, metrics, remote control commands) grows on top of this.
//!
//! Exit codes: 0 success, 1 runtime failure (a broker or store error), 2 bad
//! usage (clap).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cnc_broker::{Backoff, BrokerOptions, EventStreamOptions};
use cnc_core::{DbController, Event, TaskFilter, TaskQuery, TaskState, TimeRange};
use cnc_store::sqlite::{SqliteConfig, SqliteStore};
use tokio::sync::mpsc;

/// Command-and-control for Celery clusters.
#[derive(Debug, Parser)]
#[command(name = "celery-cnc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Listen to Celery events on one or more brokers and store them.
    Run {
        /// Broker URL (`redis://host:6379/0`, `amqp://user:pass@host:5672//`); repeat for several.
        #[arg(long = "broker", required = true)]
        brokers: Vec<String>,
        /// SQLite database file.
        #[arg(long, default_value = "celery_cnc.db")]
        db: PathBuf,
        /// Delete the stored history on start.
        #[arg(long)]
        purge_db: bool,
        /// Events per write batch.
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        /// Longest wait before a partial batch is written, in milliseconds.
        #[arg(long, default_value_t = 100)]
        batch_interval_ms: u64,
    },
    /// List stored tasks, newest first, as JSON lines.
    Tasks {
        /// SQLite database file.
        #[arg(long, default_value = "celery_cnc.db")]
        db: PathBuf,
        /// Only tasks in this state (repeatable).
        #[arg(long = "state")]
        states: Vec<TaskState>,
        /// Only tasks run by this worker.
        #[arg(long)]
        worker: Option<String>,
        /// Task name, or part of it.
        #[arg(long)]
        name: Option<String>,
        /// Only tasks first seen in the last N seconds.
        #[arg(long)]
        since: Option<f64>,
        /// Text in the name, args, kwargs, result or exception.
        #[arg(long)]
        search: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// List stored workers as JSON lines.
    Workers {
        /// SQLite database file.
        #[arg(long, default_value = "celery_cnc.db")]
        db: PathBuf,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match dispatch(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("celery-cnc: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Run {
            brokers,
            db,
            purge_db,
            batch_size,
            batch_interval_ms,
        } => {
            run(
                brokers,
                db,
                purge_db,
                batch_size.max(1),
                Duration::from_millis(batch_interval_ms.max(1)),
            )
            .await
        }
        Command::Tasks {
            db,
            states,
            worker,
            name,
            since,
            search,
            limit,
        } => {
            let store = open_read_only(&db).await?;
            let filter = TaskFilter {
                states,
                worker,
                name,
                time: since.map(|s| TimeRange::since(cnc_core::now() - s)),
                search,
                ..TaskFilter::default()
            };
            let page = store.tasks(&TaskQuery::newest(filter, limit)).await?;
            for t in page.tasks {
                println!("{}", serde_json::to_string(&t)?);
            }
            store.close().await?;
            Ok(())
        }
        Command::Workers { db } => {
            let store = open_read_only(&db).await?;
            let now = cnc_core::now();
            for mut w in store.workers().await? {
                w.status = w.status_at(now);
                println!("{}", serde_json::to_string(&w)?);
            }
            store.close().await?;
            Ok(())
        }
    }
}

async fn open_read_only(db: &PathBuf) -> Result<SqliteStore> {
    if !db.exists() {
        anyhow::bail!(
            "no database at {} (start `celery-cnc run` first)",
            db.display()
        );
    }
    let mut cfg = SqliteConfig::new(db);
    cfg.read_only = true;
    let store =
        SqliteStore::open(cfg).with_context(|| format!("opening the database {}", db.display()))?;
    store
        .initialize()
        .await
        .with_context(|| format!("reading the database {}", db.display()))?;
    Ok(store)
}

async fn open(db: &PathBuf) -> Result<SqliteStore> {
    let store = SqliteStore::open(SqliteConfig::new(db))
        .with_context(|| format!("opening the database {}", db.display()))?;
    store
        .initialize()
        .await
        .with_context(|| format!("preparing the database {}", db.display()))?;
    Ok(store)
}

async fn run(
    brokers: Vec<String>,
    db: PathBuf,
    purge: bool,
    batch_size: usize,
    interval: Duration,
) -> Result<()> {
    let store = open(&db).await?;
    if purge {
        store.purge().await.context("purging the database")?;
        tracing::info!(db = %db.display(), "database purged on start");
    }
    let (tx, mut rx) = mpsc::channel::<Event>(65_536);
    // One listener per unique broker URL.
    let unique: BTreeSet<String> = brokers.into_iter().collect();
    for url in unique {
        let shown = cnc_broker::url::redact(&url);
        let broker = cnc_broker::connect(&url, BrokerOptions::default())
            .await
            .with_context(|| format!("connecting to {shown}"))?;
        broker
            .healthcheck()
            .await
            .with_context(|| format!("broker {shown} is not healthy"))?;
        tracing::info!(broker = %shown, "listening for Celery events");
        let mut stream = cnc_broker::stream::reconnecting(
            broker,
            EventStreamOptions::default(),
            Backoff::default(),
        );
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(broker = %shown, error = %err, "event stream interrupted; reconnecting")
                    }
                }
            }
        });
    }
    drop(tx);
    let mut batch: Vec<Event> = Vec::with_capacity(batch_size);
    let mut written = 0u64;
    let mut last_log = Instant::now();
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        let deadline = tokio::time::sleep(interval);
        tokio::pin!(deadline);
        let stop = loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break true,
                item = rx.recv() => match item {
                    Some(e) => {
                        batch.push(e);
                        if batch.len() >= batch_size {
                            break false;
                        }
                    }
                    None => break true,
                },
                _ = &mut deadline => break false,
            }
        };
        if stop {
            // Drain what is already queued, then write the last batch.
            while let Ok(e) = rx.try_recv() {
                batch.push(e);
            }
        }
        if !batch.is_empty() {
            let report = store.apply(&batch).await.context("writing a batch")?;
            written += report.applied;
            if report.skipped_total() > report.skipped_for(cnc_core::SkipReason::Duplicate) {
                tracing::warn!(skipped = ?report.skipped, "events skipped");
            }
            batch.clear();
        }
        if last_log.elapsed() >= Duration::from_secs(10) {
            tracing::info!(events_written = written, "ingest");
            last_log = Instant::now();
        }
        if stop {
            break;
        }
    }
    tracing::info!(events_written = written, "stopping: last batch written");
    store.flush_search().await?;
    store.close().await?;
    Ok(())
}
