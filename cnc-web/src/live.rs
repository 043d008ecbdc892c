//! Server-Sent Events from the in-process bus.
//!
//! Event types: `hello` (once, with the polling interval), `batch` (what a
//! written batch changed: task ids, worker transitions, a short summary of
//! its events), `worker` (inspect info refreshed), and `resync` (the client
//! missed messages, or stored data changed wholesale: reload everything).
//! A lagging subscriber is counted on the bus (`note_lag`) and told to
//! resync, never left with a silent gap.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use cnc_model::Event;
use cnc_model::bus::{BusMessage, WrittenBatch};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::state::WebState;

/// Task ids per `batch` event at most (the page reloads when more changed).
const MAX_IDS: usize = 500;
/// Event summaries per `batch` event at most.
const MAX_EVENTS: usize = 50;

/// The JSON of a `batch` event.
pub(crate) fn batch_json(b: &WrittenBatch) -> Value {
    let ids = &b.report.changed_tasks;
    let events: Vec<Value> = b
        .events
        .iter()
        .rev()
        .take(MAX_EVENTS)
        .rev()
        .map(|e| match e {
            Event::Task(t) => json!({
                "type": t.kind.as_str(), "uuid": t.uuid, "name": t.name,
                "hostname": t.hostname, "timestamp": t.timestamp,
            }),
            Event::Worker(w) => json!({
                "type": w.kind.as_str(), "hostname": w.hostname, "timestamp": w.timestamp,
            }),
            other => json!({ "type": "other", "timestamp": other.timestamp() }),
        })
        .collect();
    json!({
        "seq": b.seq,
        "written_at": b.written_at,
        "tasks": ids.iter().take(MAX_IDS).collect::<Vec<_>>(),
        "tasks_truncated": ids.len() > MAX_IDS,
        "workers": b.report.worker_changes,
        "events": events,
        "event_count": b.events.len(),
    })
}

struct Client {
    state: WebState,
    rx: tokio::sync::broadcast::Receiver<BusMessage>,
    hello: bool,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.state.inner.sse_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

fn event(name: &str, data: &Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

/// The event stream of one client.
pub(crate) fn stream(state: WebState) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let rx = state.ctx().bus.subscribe();
    state.inner.sse_clients.fetch_add(1, Ordering::Relaxed);
    let client = Client {
        state,
        rx,
        hello: false,
    };
    futures::stream::unfold(client, |mut c| async move {
        if !c.hello {
            c.hello = true;
            let ms = c.state.config().polling_interval.as_millis() as u64;
            let ev = event("hello", &json!({ "polling_interval_ms": ms }));
            return Some((Ok(ev), c));
        }
        let ev = match c.rx.recv().await {
            Ok(BusMessage::Batch(b)) => event("batch", &batch_json(&b)),
            Ok(BusMessage::WorkerInfo { hostname }) => {
                event("worker", &json!({ "hostname": hostname }))
            }
            Ok(BusMessage::Resync) => event("resync", &json!({ "reason": "data changed" })),
            Err(RecvError::Lagged(n)) => {
                c.state.ctx().bus.note_lag(n);
                tracing::debug!(target: crate::LOG_TARGET, missed = n, "SSE client lagged: resync");
                event("resync", &json!({ "reason": "lagged", "missed": n }))
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(ev), c))
    })
}

/// `GET /api/v1/events`.
pub(crate) async fn events(
    State(state): State<WebState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    Sse::new(stream(state)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
