//! The in-process event bus: what ingest wrote, for live pages and
//! exporters.
//!
//! A [`tokio::sync::broadcast`] channel of [`BusMessage`]s. Publishing never
//! waits for subscribers; a subscriber that falls more than the capacity
//! behind gets [`broadcast::error::RecvError::Lagged`] and must resync from
//! the store (the web UI tells its page to reload its data; exporters count
//! the gap). Lag is reported to [`EventBus::note_lag`] so it shows in the
//! self-metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::model::{Event, Timestamp};
use crate::store::ApplyReport;

/// One batch as written to the store.
#[derive(Debug, Clone, Serialize)]
pub struct WrittenBatch {
    /// Increases by one per batch since the service started.
    pub seq: u64,
    /// The events of the batch, in arrival order (skipped ones included;
    /// the report says which kinds were skipped).
    pub events: Vec<Event>,
    /// What the store did with them: changed task ids, worker transitions.
    pub report: ApplyReport,
    /// When the write finished (epoch seconds).
    pub written_at: Timestamp,
    /// How long the store took, seconds.
    pub write_seconds: f64,
}

/// What travels on the bus.
#[derive(Debug, Clone)]
pub enum BusMessage {
    /// A batch was written.
    Batch(Arc<WrittenBatch>),
    /// A worker's inspect detail (stats, queues, registered, conf) was
    /// refreshed in the store.
    WorkerInfo {
        /// The worker.
        hostname: String,
    },
    /// Something outside ingest changed stored data wholesale (purge,
    /// retention cleanup): subscribers should reload.
    Resync,
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<BusMessage>,
    lagged: Arc<AtomicU64>,
    published: Arc<AtomicU64>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl EventBus {
    /// A bus keeping up to `capacity` messages for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            lagged: Arc::new(AtomicU64::new(0)),
            published: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Publish; returns the number of subscribers that will see it.
    pub fn publish(&self, msg: BusMessage) -> usize {
        self.published.fetch_add(1, Ordering::Relaxed);
        self.tx.send(msg).unwrap_or(0)
    }

    /// A new subscriber, starting with the next message.
    pub fn subscribe(&self) -> broadcast::Receiver<BusMessage> {
        self.tx.subscribe()
    }

    /// Current subscribers.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// A subscriber missed `n` messages.
    pub fn note_lag(&self, n: u64) {
        self.lagged.fetch_add(n, Ordering::Relaxed);
    }

    /// Messages missed by lagging subscribers, in total.
    pub fn lagged_total(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }

    /// Messages published, in total.
    pub fn published_total(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slow_subscriber_sees_lag_then_resumes() {
        let bus = EventBus::new(2);
        let mut rx = bus.subscribe();
        for _ in 0..5 {
            bus.publish(BusMessage::Resync);
        }
        match rx.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => bus.note_lag(n),
            other => panic!("expected lag, got {other:?}"),
        }
        assert_eq!(bus.lagged_total(), 3);
        assert!(matches!(rx.recv().await, Ok(BusMessage::Resync)));
        assert_eq!(bus.published_total(), 5);
    }
}
