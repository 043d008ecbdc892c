//! Helpers shared by the orchestrator and jobs tests: the service on the
//! in-memory broker.

use std::time::Duration;

use cnc_core::broker::memory::MemoryBroker;
use cnc_core::config::{CeleryApp, CeleryCncConfig, DatabaseConfig, IngestConfig};
use cnc_core::{Event, WorkerEvent, WorkerEventKind};

/// One app on `memory://`, no logging files or web UI, small fast batches.
pub fn config(db: DatabaseConfig) -> CeleryCncConfig {
    CeleryCncConfig::builder()
        .app(CeleryApp::new("mem", "memory://"))
        .database(db)
        .logging(None)
        .frontend(None)
        .ingest(IngestConfig {
            batch_size: 500,
            batch_interval: Duration::from_millis(20),
            enable_events_interval: None,
            worker_refresh_interval: Duration::from_secs(3600),
            ..IngestConfig::default()
        })
        .build()
        .expect("valid config")
}

/// Wait until the service's listener is subscribed to `broker`.
pub async fn wait_subscribed(broker: &MemoryBroker) {
    for _ in 0..200 {
        if broker.emit(Event::Worker(WorkerEvent::new(
            WorkerEventKind::Heartbeat,
            "probe@h",
            cnc_core::now(),
        ))) > 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the listener never subscribed");
}
