//! # cnc-core: a Celery command-and-control center, embeddable
//!
//! ```no_run
//! use cnc_core::{CeleryCnc, config::{CeleryApp, CeleryCncConfig}};
//! # async fn start() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = CeleryCncConfig::builder()
//!     .app(CeleryApp::new("orders", "redis://127.0.0.1:6379/0"))
//!     .build()?;
//! CeleryCnc::new(cfg).run().await?;
//! # Ok(()) }
//! ```
//!
//! That is the whole start-up: the orchestrator builds the log controller,
//! the store, one event listener per unique broker feeding the single
//! ingest writer, and every component the config turns on, supervises them
//! (a crash is restarted with capped backoff and shows in the status), and
//! on SIGINT/SIGTERM stops them in reverse order after the last batch is
//! written.
//!
//! Everything in `cnc-model` is re-exported here (the domain model, the
//! fold, the store, component, log and exporter traits, the config), and so
//! are the adapter crates, as [`stores`] and
//! [`broker`].

pub use cnc_broker as broker;
pub use cnc_model::*;
pub use cnc_store as stores;

mod hosted;
pub mod ingest;
pub mod jobs;
pub mod logging;
mod orchestrator;

pub use orchestrator::{CeleryCnc, CncError, Running, StopReport};
