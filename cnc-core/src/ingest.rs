//! The ingest pipeline: one listener per unique broker → a bounded channel
//! → the single writer, which folds and writes batches and then publishes
//! them on the bus.
//!
//! * A listener ([`ListenerComponent`]) reads a reconnecting event stream.
//!   The stream's socket reader never waits (it drops and counts when its
//!   own buffer is full), so the listener may wait on the ingest channel:
//!   back-pressure stops at the stream's buffer, never at the socket.
//! * The writer ([`WriterComponent`]) takes up to `batch_size` events or
//!   whatever arrived within `batch_interval`, writes them in one `apply`,
//!   and publishes a [`WrittenBatch`]. A store error is retried with capped
//!   backoff holding on to the batch (a locked or full database never costs
//!   the events already taken); only an `InvalidInput` error, which no retry
//!   can fix, drops a batch, logged and counted.
//! * On stop the listeners go first; the writer then drains the channel and
//!   writes the last batch before it returns, so no accepted event is lost
//!   on a clean stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cnc_broker::{Backoff, Broker, EventStreamOptions, StreamStats};
use cnc_model::bus::{BusMessage, EventBus, WrittenBatch};
use cnc_model::component::{
    CancellationToken, Component, ComponentError, ComponentInfo, ComponentResult, Context,
};
use cnc_model::config::IngestConfig;
use cnc_model::{DbController, Event, StoreErrorKind};
use serde::Serialize;
use tokio::sync::mpsc;

const TARGET: &str = "celery_cnc::ingest";

/// Counters of the writer, shared with whoever wants them (the web
/// dashboard, exporters, tests).
#[derive(Debug, Default)]
pub struct IngestStats {
    accepted: AtomicU64,
    events_in: AtomicU64,
    events_written: AtomicU64,
    events_skipped: AtomicU64,
    batches: AtomicU64,
    store_errors: AtomicU64,
    events_dropped_invalid: AtomicU64,
    last_write_micros: AtomicU64,
}

/// A snapshot of [`IngestStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestCounters {
    /// Events the listeners put into the channel.
    pub accepted: u64,
    /// Events taken from the channel.
    pub events_in: u64,
    /// Events the store applied.
    pub events_written: u64,
    /// Events the store skipped (duplicates, malformed), see the logs.
    pub events_skipped: u64,
    /// Batches written.
    pub batches: u64,
    /// Failed write attempts (each retried).
    pub store_errors: u64,
    /// Events dropped because the store rejected their batch as invalid.
    pub events_dropped_invalid: u64,
    /// Duration of the last batch write, microseconds.
    pub last_write_micros: u64,
}

impl IngestStats {
    /// A snapshot.
    pub fn snapshot(&self) -> IngestCounters {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IngestCounters {
            accepted: l(&self.accepted),
            events_in: l(&self.events_in),
            events_written: l(&self.events_written),
            events_skipped: l(&self.events_skipped),
            batches: l(&self.batches),
            store_errors: l(&self.store_errors),
            events_dropped_invalid: l(&self.events_dropped_invalid),
            last_write_micros: l(&self.last_write_micros),
        }
    }
}

/// Reads one broker's events into the ingest channel.
pub struct ListenerComponent {
    name: String,
    broker_shown: String,
    broker: Arc<dyn Broker>,
    stats: Arc<StreamStats>,
    enable_events_every: Option<Duration>,
    capacity: usize,
    tx: mpsc::Sender<Event>,
    ingest: Arc<IngestStats>,
}

impl ListenerComponent {
    /// A listener for `broker` (shown as `broker_shown`, already redacted)
    /// sending into `tx`, counting into `stats`.
    pub fn new(
        name: String,
        broker_shown: String,
        broker: Arc<dyn Broker>,
        stats: Arc<StreamStats>,
        ingest: &IngestConfig,
        tx: mpsc::Sender<Event>,
        counters: Arc<IngestStats>,
    ) -> Self {
        Self {
            name,
            broker_shown,
            broker,
            stats,
            enable_events_every: ingest.enable_events_interval,
            capacity: ingest.channel_capacity,
            tx,
            ingest: counters,
        }
    }
}

#[async_trait]
impl Component for ListenerComponent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn build(&mut self, _ctx: &Context) -> ComponentResult<()> {
        self.broker.healthcheck().await.map_err(|e| {
            ComponentError::new(format!("broker {} is not reachable", self.broker_shown))
                .with_source(e)
        })
    }

    async fn run(&mut self, shutdown: CancellationToken) -> ComponentResult<()> {
        let opts = EventStreamOptions {
            stats: self.stats.clone(),
            enable_events_every: self.enable_events_every,
            capacity: self.capacity,
            ..EventStreamOptions::default()
        };
        let mut stream = cnc_broker::reconnecting(self.broker.clone(), opts, Backoff::default());
        tracing::info!(target: TARGET, broker = %self.broker_shown, "listening for Celery events");
        loop {
            let item = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                item = stream.next() => item,
            };
            match item {
                Some(Ok(event)) => {
                    // Waiting here is safe: the stream's reader never waits.
                    // A cancel while waiting loses only this one event,
                    // which was never accepted into the channel.
                    tokio::select! {
                        biased;
                        sent = self.tx.send(event) => {
                            if sent.is_err() {
                                return Err(ComponentError::new("the ingest writer is gone"));
                            }
                            self.ingest.accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        _ = shutdown.cancelled() => break,
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(
                        target: TARGET,
                        broker = %self.broker_shown,
                        error = %e,
                        "event stream interrupted; reconnecting"
                    );
                }
                None => return Err(ComponentError::new("event stream ended")),
            }
        }
        tracing::info!(target: TARGET, broker = %self.broker_shown, "listener stopped");
        Ok(())
    }

    fn info(&self) -> ComponentInfo {
        let c = self.stats.snapshot();
        ComponentInfo {
            config: serde_json::json!({
                "broker": self.broker_shown,
                "received": c.received,
                "events": c.events,
                "dropped": c.dropped,
                "reconnects": c.reconnects,
                "decode_errors": c.decode_errors,
            }),
            links: Vec::new(),
        }
    }
}

/// The single writer.
pub struct WriterComponent {
    cfg: IngestConfig,
    rx: mpsc::Receiver<Event>,
    store: Option<Arc<dyn DbController>>,
    bus: Option<EventBus>,
    stats: Arc<IngestStats>,
    seq: u64,
    /// A batch taken from the channel but not yet written (kept across a
    /// crash and restart).
    pending: Vec<Event>,
}

impl WriterComponent {
    /// A writer reading `rx`.
    pub fn new(cfg: IngestConfig, rx: mpsc::Receiver<Event>, stats: Arc<IngestStats>) -> Self {
        Self {
            pending: Vec::with_capacity(cfg.batch_size),
            cfg,
            rx,
            store: None,
            bus: None,
            stats,
            seq: 0,
        }
    }

    /// Write `self.pending`, retrying transient store errors until it is
    /// written or `give_up` fires. Returns false when it gave up.
    async fn write_pending(
        &mut self,
        store: &Arc<dyn DbController>,
        bus: &EventBus,
        give_up: &CancellationToken,
    ) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            let started = Instant::now();
            match store.apply(&self.pending).await {
                Ok(report) => {
                    let took = started.elapsed();
                    let n = self.pending.len() as u64;
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .events_written
                        .fetch_add(report.applied, Ordering::Relaxed);
                    self.stats
                        .events_skipped
                        .fetch_add(n.saturating_sub(report.applied), Ordering::Relaxed);
                    self.stats
                        .last_write_micros
                        .store(took.as_micros() as u64, Ordering::Relaxed);
                    let dup = report.skipped_for(cnc_model::SkipReason::Duplicate);
                    if report.skipped_total() > dup {
                        tracing::warn!(
                            target: TARGET,
                            skipped = ?report.skipped,
                            "events skipped by the store"
                        );
                    }
                    self.seq += 1;
                    let batch = WrittenBatch {
                        seq: self.seq,
                        events: std::mem::take(&mut self.pending),
                        report,
                        written_at: cnc_model::now(),
                        write_seconds: took.as_secs_f64(),
                    };
                    bus.publish(BusMessage::Batch(Arc::new(batch)));
                    return true;
                }
                Err(e) if e.kind() == StoreErrorKind::InvalidInput => {
                    let n = self.pending.len() as u64;
                    self.stats
                        .events_dropped_invalid
                        .fetch_add(n, Ordering::Relaxed);
                    tracing::error!(
                        target: TARGET,
                        error = %e,
                        events = n,
                        "the store rejected a batch as invalid; dropped"
                    );
                    self.pending.clear();
                    return true;
                }
                Err(e) => {
                    self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        target: TARGET,
                        error = %e,
                        kind = ?e.kind(),
                        events = self.pending.len(),
                        retry_in_ms = delay.as_millis() as u64,
                        "batch write failed; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = give_up.cancelled() => return false,
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Component for WriterComponent {
    fn name(&self) -> &str {
        "ingest"
    }

    async fn build(&mut self, ctx: &Context) -> ComponentResult<()> {
        self.store = Some(ctx.store.clone());
        self.bus = Some(ctx.bus.clone());
        Ok(())
    }

    async fn run(&mut self, shutdown: CancellationToken) -> ComponentResult<()> {
        let (Some(store), Some(bus)) = (self.store.clone(), self.bus.clone()) else {
            return Err(ComponentError::fatal("ingest writer run before build"));
        };
        // Writes in progress at shutdown get a grace period to succeed.
        let never = CancellationToken::new();
        let mut last_log = Instant::now();
        let mut logged_written = self.stats.snapshot().events_written;
        loop {
            // A batch left over from a crash goes first.
            if !self.pending.is_empty() {
                self.write_pending(&store, &bus, &shutdown).await;
                if shutdown.is_cancelled() {
                    break;
                }
            }
            let deadline = tokio::time::sleep(self.cfg.batch_interval);
            tokio::pin!(deadline);
            let stop = loop {
                let room = self.cfg.batch_size - self.pending.len();
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break true,
                    n = self.rx.recv_many(&mut self.pending, room) => {
                        if n == 0 {
                            break true; // every sender is gone
                        }
                        self.stats.events_in.fetch_add(n as u64, Ordering::Relaxed);
                        if self.pending.len() >= self.cfg.batch_size {
                            break false;
                        }
                    }
                    _ = &mut deadline => break false,
                }
            };
            if stop {
                break;
            }
            self.write_pending(&store, &bus, &never).await;
            if last_log.elapsed() >= Duration::from_secs(10) {
                let c = self.stats.snapshot();
                tracing::info!(
                    target: TARGET,
                    events_written = c.events_written,
                    rate = ((c.events_written - logged_written) as f64
                        / last_log.elapsed().as_secs_f64()) as u64,
                    batches = c.batches,
                    last_write_ms = c.last_write_micros / 1000,
                    "batches written"
                );
                logged_written = c.events_written;
                last_log = Instant::now();
            }
        }
        // Stop: the listeners are already stopped. Drain what they put in
        // the channel, in batches, then return.
        let grace = CancellationToken::new();
        let timer = {
            let grace = grace.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                grace.cancel();
            })
        };
        loop {
            while self.pending.len() < self.cfg.batch_size {
                match self.rx.try_recv() {
                    Ok(e) => {
                        self.stats.events_in.fetch_add(1, Ordering::Relaxed);
                        self.pending.push(e);
                    }
                    Err(_) => break,
                }
            }
            if self.pending.is_empty() {
                break;
            }
            if !self.write_pending(&store, &bus, &grace).await {
                let mut lost = self.pending.len();
                while self.rx.try_recv().is_ok() {
                    lost += 1;
                }
                tracing::error!(
                    target: TARGET,
                    events = lost,
                    "the store kept failing during shutdown; events not written"
                );
                break;
            }
        }
        timer.abort();
        let c = self.stats.snapshot();
        tracing::info!(
            target: TARGET,
            events_written = c.events_written,
            batches = c.batches,
            "ingest stopped: last batch written"
        );
        Ok(())
    }

    fn info(&self) -> ComponentInfo {
        ComponentInfo {
            config: serde_json::json!({
                "batch_size": self.cfg.batch_size,
                "batch_interval_ms": self.cfg.batch_interval.as_millis() as u64,
                "channel_capacity": self.cfg.channel_capacity,
                "counters": self.stats.snapshot(),
            }),
            links: Vec::new(),
        }
    }
}
