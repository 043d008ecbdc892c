//! # cnc-model: the vocabulary every celery-cnc crate shares
//!
//! celery-cnc watches and drives Celery clusters. This crate holds what every
//! part of it shares, with no database or broker driver in it:
//!
//! * [`model`]: tasks, events, workers, schedules, queries and aggregates,
//!   shaped like Celery's own data so decoding is a plain serde call;
//! * [`fold`]: the one implementation of "what state is this task in",
//!   Celery's precedence rules with fixes for late and out-of-order events;
//! * [`store`]: the [`store::DbController`] trait every store adapter
//!   implements (memory, SQLite and PostgreSQL live in `cnc-store`), with its
//!   concurrency contract;
//! * [`config`]: [`config::CeleryCncConfig`], layered from a builder, TOML,
//!   the environment and flags;
//! * [`component`], [`bus`], [`logs`], [`exporter`]: the contracts of a
//!   running service (supervised components, the in-process event bus, the
//!   log controller, exporters);
//! * `testkit` (feature `testkit`): the conformance suite every adapter must
//!   pass, published so third-party adapters can run it too.
//!
//! Users depend on `cnc-core`, which re-exports all of this together with
//! the orchestrator and the adapters. This crate exists apart from it only
//! to break a cycle: the adapters (`cnc-store`, `cnc-broker`, `cnc-web`,
//! `cnc-metrics`) need these types, and `cnc-core` needs the adapters so
//! that `CeleryCnc::new(cfg).run()` is the whole start-up of a service that
//! depends on `cnc-core` alone.

pub mod bus;
pub mod component;
pub mod config;
pub mod exporter;
pub mod fold;
pub mod lenient;
pub mod logs;
pub mod model;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use model::*;
pub use store::{
    ApplyReport, CleanupReport, DbController, SCHEMA_VERSION, SkipReason, StoreError,
    StoreErrorKind, StoreInfo, StoreResult,
};

/// Now, as epoch seconds.
pub fn now() -> model::Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Where the shared protocol fixtures live: `$CNC_FIXTURES` or
/// `<workspace>/../shared/protocol/fixtures`. For tests and benches.
pub fn fixtures_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("CNC_FIXTURES") {
        return dir.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/protocol/fixtures")
}
