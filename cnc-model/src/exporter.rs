//! Exporters: components that turn the event flow into metrics or traces.
//!
//! [`Exporter::observe`] is called for every event ingest wrote, in order,
//! from the exporter's own bus subscriber. It must be cheap and never
//! block: update in-memory aggregates (a scrape reads those) or push to a
//! bounded buffer that a background task exports (and count what it has to
//! drop). A slow exporter never slows ingest: the bus does not wait for it.

use std::fmt::Debug;

use crate::bus::WrittenBatch;
use crate::model::Event;

/// Turns events into metrics or traces.
pub trait Exporter: Send + Sync + Debug + 'static {
    /// Short name (`prometheus`, `otel`).
    fn name(&self) -> &str;

    /// One event as written. Cheap, non-blocking.
    fn observe(&self, event: &Event);

    /// A whole written batch; the default calls [`Self::observe`] for each
    /// event. Override to also use the batch's write latency or report.
    fn observe_batch(&self, batch: &WrittenBatch) {
        for e in &batch.events {
            self.observe(e);
        }
    }

    /// The exporter missed `n` bus messages (it lagged): resync what it
    /// can and count the gap.
    fn lagged(&self, n: u64) {
        let _ = n;
    }
}
