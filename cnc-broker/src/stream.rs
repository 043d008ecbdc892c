//! Event streams: the bounded hand-off from a socket reader to the consumer,
//! its counters, and the reconnecting wrapper.
//!
//! A broker adapter spawns one reader task per stream. The reader decodes
//! each message and offers the events to a bounded channel with `try_send`:
//! when the consumer is slow the reader drops and counts instead of waiting,
//! so the socket is always drained (Redis disconnects slow pub/sub clients;
//! RabbitMQ event queues expire messages after 5 s anyway). When the
//! connection is lost the reader stores a temporary [`BrokerError`] and
//! closes the channel: the stream yields that error once, then ends.
//! [`reconnecting`] turns that into a stream that never ends, resubscribing
//! with the shared [`Backoff`].

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use cnc_model::Event;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::error::{BrokerError, BrokerResult};
use crate::protocol::{DecodeError, EventBatch};

/// Counters of one event stream (shared across reconnects). Cheap to update
/// from the reader: plain atomics, a lock only for decode errors.
#[derive(Debug, Default)]
pub struct StreamStats {
    received: AtomicU64,
    events: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    decode_errors: Mutex<BTreeMap<&'static str, u64>>,
}

/// A snapshot of [`StreamStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// Broker messages read from the socket.
    pub received: u64,
    /// Events decoded (a `task.multi` message gives several).
    pub events: u64,
    /// Events decoded but dropped because the consumer's channel was full.
    pub dropped: u64,
    /// Times the stream was re-established after a loss.
    pub reconnects: u64,
    /// Messages or batch items that could not be decoded, by
    /// [`DecodeError::reason`].
    pub decode_errors: BTreeMap<String, u64>,
}

impl StreamCounters {
    /// Sum of all decode errors.
    pub fn decode_errors_total(&self) -> u64 {
        self.decode_errors.values().sum()
    }
}

impl StreamStats {
    /// New, zeroed counters.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A consistent-enough snapshot (each counter read once).
    pub fn snapshot(&self) -> StreamCounters {
        StreamCounters {
            received: self.received.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            decode_errors: self
                .decode_errors
                .lock()
                .map(|m| m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
                .unwrap_or_default(),
        }
    }

    pub(crate) fn decode_error(&self, err: &DecodeError) {
        if let Ok(mut m) = self.decode_errors.lock() {
            *m.entry(err.reason()).or_default() += 1;
        }
    }

    pub(crate) fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// Options for [`crate::Broker::events`].
#[derive(Debug, Clone)]
pub struct EventStreamOptions {
    /// Capacity of the hand-off channel, in events. Default 65 536.
    pub capacity: usize,
    /// Counters; share one `Arc` across reconnects to keep totals.
    pub stats: Arc<StreamStats>,
    /// Broadcast `enable_events` this often so workers started without `-E`
    /// still send task events. `None` turns it off. Default 60 s (and once at
    /// subscribe time).
    pub enable_events_every: Option<Duration>,
    /// Size limits for decoding. Default: 1 MiB per message. Celery
    /// truncates the reprs in events (to about 1 KB each), so a bigger event
    /// message is not from a Celery worker; it is rejected unparsed and
    /// counted as `too_large`.
    pub limits: crate::protocol::Limits,
}

impl Default for EventStreamOptions {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            stats: StreamStats::new(),
            enable_events_every: Some(Duration::from_secs(60)),
            limits: crate::protocol::Limits {
                max_message_bytes: 1 << 20,
            },
        }
    }
}

/// The sending half used by adapter reader tasks.
#[derive(Debug, Clone)]
pub(crate) struct EventSink {
    tx: mpsc::Sender<Event>,
    stats: Arc<StreamStats>,
    end: Arc<Mutex<Option<BrokerError>>>,
}

impl EventSink {
    /// Count one received message and hand over what it decoded to.
    /// Returns false when the consumer has gone (stop reading).
    pub(crate) fn deliver(&self, decoded: Result<EventBatch, DecodeError>) -> bool {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        match decoded {
            Err(e) => {
                tracing::debug!(reason = e.reason(), error = %e, "undecodable event message");
                self.stats.decode_error(&e);
                true
            }
            Ok(batch) => {
                for item in &batch.errors {
                    tracing::debug!(reason = item.error.reason(), error = %item.error, "skipped event");
                    self.stats.decode_error(&item.error);
                }
                for ev in batch.events {
                    self.stats.events.fetch_add(1, Ordering::Relaxed);
                    match self.tx.try_send(ev) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return false,
                    }
                }
                true
            }
        }
    }

    /// Count events lost before they reached us (e.g. a lagging driver
    /// buffer) as dropped.
    pub(crate) fn lost(&self, n: u64) {
        self.stats.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// True when the consumer dropped the stream.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// End the stream with `err` (the consumer sees it after the buffered
    /// events).
    pub(crate) fn fail(self, err: BrokerError) {
        if let Ok(mut slot) = self.end.lock() {
            *slot = Some(err);
        }
    }
}

/// A stream of decoded events from one subscription.
///
/// Yields `Ok(event)`s; after a connection loss it yields one `Err` (a
/// temporary [`BrokerError`]) and then ends. Dropping it stops the reader.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Event>,
    end: Arc<Mutex<Option<BrokerError>>>,
    stats: Arc<StreamStats>,
    tasks: Vec<JoinHandle<()>>,
    finished: bool,
}

impl EventStream {
    /// A connected pair: the sink for the reader, the stream for the consumer.
    pub(crate) fn channel(opts: &EventStreamOptions) -> (EventSink, Self) {
        let (tx, rx) = mpsc::channel(opts.capacity.max(1));
        let end = Arc::new(Mutex::new(None));
        let sink = EventSink {
            tx,
            stats: opts.stats.clone(),
            end: end.clone(),
        };
        let stream = Self {
            rx,
            end,
            stats: opts.stats.clone(),
            tasks: Vec::new(),
            finished: false,
        };
        (sink, stream)
    }

    /// Tie a background task's life to the stream (aborted on drop).
    pub(crate) fn attach(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }

    /// The stream's counters.
    pub fn stats(&self) -> &Arc<StreamStats> {
        &self.stats
    }

    /// The next event, the terminal error, or `None` at the end.
    pub async fn next(&mut self) -> Option<BrokerResult<Event>> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for EventStream {
    type Item = BrokerResult<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(ev)) => Poll::Ready(Some(Ok(ev))),
            Poll::Ready(None) => {
                self.finished = true;
                let err = self.end.lock().ok().and_then(|mut e| e.take());
                Poll::Ready(Some(Err(
                    err.unwrap_or_else(|| BrokerError::connection("event stream ended"))
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// An event stream that survives connection loss: on a temporary error it
/// waits (capped exponential [`Backoff`]) and subscribes again; other errors
/// are yielded and retried the same way. Counters are shared across
/// subscriptions ([`StreamCounters::reconnects`] counts the re-subscriptions).
///
/// Events published while disconnected are lost (Celery events are not
/// stored by the broker); the consumer sees the gap only as time.
pub fn reconnecting(
    broker: Arc<dyn crate::Broker>,
    opts: EventStreamOptions,
    backoff: Backoff,
) -> ReconnectingStream {
    let (tx, rx) = mpsc::channel::<BrokerResult<Event>>(opts.capacity.max(1));
    let stats = opts.stats.clone();
    let task = tokio::spawn(async move {
        let mut backoff = backoff;
        let mut first = true;
        loop {
            match broker.events(opts.clone()).await {
                Ok(mut stream) => {
                    if !first {
                        opts.stats.reconnected();
                    }
                    first = false;
                    backoff.reset();
                    while let Some(item) = stream.next().await {
                        let is_err = item.is_err();
                        if is_err {
                            // Report the loss, then reconnect.
                            if tx.send(item).await.is_err() {
                                return;
                            }
                            break;
                        }
                        // The inner stream already applied drop-on-full
                        // (its reader never waits); waiting here only
                        // back-pressures that bounded buffer.
                        if tx.send(item).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event subscription failed");
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = tx.closed() => return,
            }
        }
    });
    ReconnectingStream { rx, stats, task }
}

/// See [`reconnecting`]. Yields events and, between subscriptions, the
/// errors that ended them; never ends on its own.
#[derive(Debug)]
pub struct ReconnectingStream {
    rx: mpsc::Receiver<BrokerResult<Event>>,
    stats: Arc<StreamStats>,
    task: JoinHandle<()>,
}

impl ReconnectingStream {
    /// Counters shared by every subscription.
    pub fn stats(&self) -> &Arc<StreamStats> {
        &self.stats
    }

    /// The next event or error.
    pub async fn next(&mut self) -> Option<BrokerResult<Event>> {
        self.rx.recv().await
    }
}

impl Stream for ReconnectingStream {
    type Item = BrokerResult<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for ReconnectingStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
