//! The DbController conformance suite against the SQLite store, each check
//! on its own database file.
#![cfg(feature = "sqlite")]

use std::sync::Arc;

use cnc_model::DbController;
use cnc_model::testkit::StoreFactory;
use cnc_store::sqlite::{SqliteConfig, SqliteStore};

/// A new database file per check, in a directory that outlives the check.
struct Sqlite;

#[async_trait::async_trait]
impl StoreFactory for Sqlite {
    async fn fresh(&self) -> Arc<dyn DbController> {
        let dir = tempfile::Builder::new()
            .prefix("cnc-sqlite-")
            .tempdir()
            .expect("temp dir")
            .keep();
        Arc::new(
            SqliteStore::open(SqliteConfig::new(dir.join("cnc.db"))).expect("open sqlite store"),
        )
    }
}

cnc_model::conformance_tests!(Sqlite);
