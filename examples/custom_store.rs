//! A custom `DbController`: SQLite for everything, plus an append-only
//! audit file of every event the store accepted. Any type implementing
//! the trait plugs in with `CeleryCnc::with_store`; run the conformance
//! suite (`cnc_core::testkit`, feature `testkit`) against your own to check
//! it keeps the contract.
//!
//! `cargo run -p cnc-examples --example custom_store -- redis://127.0.0.1:6379/0`

use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use cnc_core::config::{CeleryApp, CeleryCncConfig};
use cnc_core::stores::sqlite::{SqliteConfig, SqliteStore};
use cnc_core::*;

/// SQLite plus an audit trail.
#[derive(Debug)]
struct AuditedStore {
    inner: SqliteStore,
    audit: tokio::sync::Mutex<std::fs::File>,
}

#[async_trait]
impl DbController for AuditedStore {
    fn info(&self) -> StoreInfo {
        self.inner.info()
    }
    async fn initialize(&self) -> StoreResult<()> {
        self.inner.initialize().await
    }
    async fn schema_version(&self) -> StoreResult<u32> {
        self.inner.schema_version().await
    }
    async fn migrate(&self, from: u32, to: u32) -> StoreResult<()> {
        self.inner.migrate(from, to).await
    }
    async fn apply(&self, events: &[Event]) -> StoreResult<ApplyReport> {
        let report = self.inner.apply(events).await?;
        // Audit only what the store accepted, after it committed.
        let mut file = self.audit.lock().await;
        for e in events {
            let line = serde_json::to_string(e).unwrap_or_default();
            file.write_all(line.as_bytes())
                .and_then(|()| file.write_all(b"\n"))
                .map_err(|e| StoreError::new(StoreErrorKind::Full, "audit file").with_source(e))?;
        }
        Ok(report)
    }
    async fn task(&self, id: &str) -> StoreResult<Option<Task>> {
        self.inner.task(id).await
    }
    async fn tasks(&self, q: &TaskQuery) -> StoreResult<TaskPage> {
        self.inner.tasks(q).await
    }
    async fn count_tasks(&self, f: &TaskFilter) -> StoreResult<u64> {
        self.inner.count_tasks(f).await
    }
    async fn task_events(&self, id: &str) -> StoreResult<Vec<StoredEvent>> {
        self.inner.task_events(id).await
    }
    async fn relations(&self, root: &str) -> StoreResult<Vec<TaskRelation>> {
        self.inner.relations(root).await
    }
    async fn workers(&self) -> StoreResult<Vec<Worker>> {
        self.inner.workers().await
    }
    async fn worker(&self, h: &str) -> StoreResult<Option<Worker>> {
        self.inner.worker(h).await
    }
    async fn worker_history(&self, h: &str, limit: u32) -> StoreResult<Vec<WorkerStatusChange>> {
        self.inner.worker_history(h, limit).await
    }
    async fn set_worker_info(&self, h: &str, info: serde_json::Value, at: f64) -> StoreResult<()> {
        self.inner.set_worker_info(h, info, at).await
    }
    async fn prune_workers(&self, before: f64) -> StoreResult<u64> {
        self.inner.prune_workers(before).await
    }
    async fn task_names(&self) -> StoreResult<Vec<NameCount>> {
        self.inner.task_names().await
    }
    async fn runtime_stats(&self, q: &StatsQuery) -> StoreResult<RuntimeStats> {
        self.inner.runtime_stats(q).await
    }
    async fn throughput(&self, q: &ThroughputQuery) -> StoreResult<Vec<ThroughputBucket>> {
        self.inner.throughput(q).await
    }
    async fn state_distribution(&self, q: &StatsQuery) -> StoreResult<Vec<StateCount>> {
        self.inner.state_distribution(q).await
    }
    async fn name_distribution(&self, q: &StatsQuery) -> StoreResult<Vec<NameCount>> {
        self.inner.name_distribution(q).await
    }
    async fn heatmap(&self, q: &StatsQuery) -> StoreResult<Heatmap> {
        self.inner.heatmap(q).await
    }
    async fn schedules(&self) -> StoreResult<Vec<Schedule>> {
        self.inner.schedules().await
    }
    async fn schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        self.inner.schedule(name).await
    }
    async fn upsert_schedule(&self, s: &Schedule) -> StoreResult<()> {
        self.inner.upsert_schedule(s).await
    }
    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        self.inner.delete_schedule(name).await
    }
    async fn delete_all_schedules(&self) -> StoreResult<u64> {
        self.inner.delete_all_schedules().await
    }
    async fn cleanup(&self, older_than: f64) -> StoreResult<CleanupReport> {
        self.inner.cleanup(older_than).await
    }
    async fn purge(&self) -> StoreResult<()> {
        self.inner.purge().await
    }
    async fn close(&self) -> StoreResult<()> {
        self.inner.close().await
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let store = AuditedStore {
        inner: SqliteStore::open(SqliteConfig::new("celery_cnc.db"))?,
        audit: tokio::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open("celery_cnc.audit.jsonl")?,
        ),
    };
    let cfg = CeleryCncConfig::builder()
        .app(CeleryApp::new("app", broker))
        .build()?;
    CeleryCnc::new(cfg)
        .with_store(Arc::new(store))
        .run()
        .await?;
    Ok(())
}
