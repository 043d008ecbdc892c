//! # cnc-store: where celery-cnc keeps history
//!
//! Adapters of [`cnc_model::DbController`], each behind a cargo feature:
//!
//! * `memory`: thread-safe and ephemeral, for tests and throw-away runs;
//! * `sqlite` (default): the embedded store, one file, WAL, one writer
//!   connection and a pool of readers, FTS5 trigram search;
//! * `postgres`: for users who outgrow one machine; several celery-cnc
//!   instances can share one database.
//!
//! All of them fold events with [`cnc_model::fold`], so they agree on every
//! task's state, and all of them pass the conformance suite in
//! `cnc_model::testkit`.

#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;
