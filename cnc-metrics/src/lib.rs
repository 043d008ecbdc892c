//! # cnc-metrics: celery-cnc's exporters
//!
//! Two components the orchestrator runs beside ingest, each fed by its own
//! subscription to the event bus (what ingest wrote, batch by batch):
//!
//! * [`PrometheusComponent`] (`prometheus`): its own HTTP listener serving
//!   [`PrometheusExporter::render`]. Three sets of names: our
//!   `celery_cnc_*` families (tasks by state and name, runtime and queue
//!   wait histograms, workers, queue depths, self-metrics of listeners, bus,
//!   store writes and components); Flower's `flower_*` names (flag
//!   `flower_compat`, on by default); celery-exporter's `celery_*` names
//!   (flag `celery_exporter_compat`), with the same labels as those projects
//!   so existing Grafana dashboards and alerts keep working.
//! * [`OtelComponent`] (`open_telemetry`): one span per task over OTLP
//!   (gRPC or HTTP/protobuf), ids derived from Celery's ids so a chain or a
//!   chord started by a task is one trace ([`otel::ids`]), plus metrics
//!   mirroring the `celery_cnc_*` set.
//!
//! ## Design choices
//!
//! * **Aggregates in memory, updated by `observe`.** Both exporters
//!   implement [`cnc_model::exporter::Exporter`]: `observe` takes one short
//!   lock and updates maps. A scrape reads those maps and the listeners'
//!   atomic counters; it never queries the store or a broker. Queue depths
//!   come from a refresh task on `queue_refresh_interval`.
//! * **Our own text encoder, not `prometheus-client`.** That crate only
//!   writes OpenMetrics, whose counter convention (`# TYPE x counter` with
//!   samples `x_total`) fails `promtool check metrics` (it lints the classic
//!   format and reports "no help text"), and cannot express Flower's
//!   `flower_events_created` gauge as Flower serves it. Flower and
//!   celery-exporter both serve the classic text format 0.0.4 (Python's
//!   client), so we do too, with label values escaped once at series
//!   creation so a scrape only copies bytes.
//! * **Bounded cardinality.** No task id is ever a label. Series of a node
//!   (worker or client) are removed `offline_worker_ttl` after it was last
//!   heard from while not alive. With `task_names` set, other names are
//!   counted as `other`. The table of unfinished tasks (needed because
//!   Celery's later events carry no name or queue) is bounded and counts
//!   what it evicts.
//! * **OTLP built directly from `opentelemetry-proto`.** Spans end in the
//!   past (event timestamps) with ids we derive, so they are assembled as
//!   protobuf messages and sent with the generated tonic clients (gRPC) or
//!   hyper (HTTP/protobuf). Finished spans wait in a bounded queue drained
//!   by the export task; a dead endpoint fills it, then spans are dropped
//!   and counted ([`OtelStats`]), and the bus subscriber never waits.
//! * **State outlives restarts.** Aggregates are created in `new`, not in
//!   `build`, so an orchestrator restart of the component keeps counters
//!   monotonic.

mod core;
pub mod error;
pub mod otel;
pub mod prometheus;
pub mod text;
mod track;

pub use error::{ErrorKind, MetricsError, MetricsResult};
pub use otel::{OtelComponent, OtelExporter, OtelStats};
pub use prometheus::{PrometheusComponent, PrometheusExporter, QueueStat, Scrape};

/// Batches smaller than this are observed on the runtime thread.
const INLINE_BATCH: usize = 256;

/// Fold one bus batch into `exporter`. A large batch takes milliseconds
/// of CPU (a few microseconds per event): on a runtime worker it would hold
/// that thread and starve the ingest tasks sharing the runtime (on a 2-core
/// box both workers, one per exporter), so it runs on the blocking pool
/// and the subscriber waits for it, keeping batches in order.
pub(crate) async fn observe_batch<E>(
    exporter: &std::sync::Arc<E>,
    batch: std::sync::Arc<cnc_model::bus::WrittenBatch>,
) where
    E: cnc_model::exporter::Exporter + Send + Sync + 'static,
{
    if batch.events.len() < INLINE_BATCH {
        exporter.observe_batch(&batch);
        return;
    }
    let ex = exporter.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || ex.observe_batch(&batch)).await {
        tracing::error!(exporter = exporter.name(), error = %e, "observing a batch");
    }
}

/// The message of `e` and each of its causes, `: `-joined.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
