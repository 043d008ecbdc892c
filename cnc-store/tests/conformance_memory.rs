//! The DbController conformance suite against the in-memory store.
#![cfg(feature = "memory")]

use std::sync::Arc;

use cnc_model::DbController;
use cnc_model::testkit::StoreFactory;
use cnc_store::memory::MemoryStore;

/// A new MemoryStore per check.
struct Memory;

#[async_trait::async_trait]
impl StoreFactory for Memory {
    async fn fresh(&self) -> Arc<dyn DbController> {
        Arc::new(MemoryStore::new())
    }
}

cnc_model::conformance_tests!(Memory);
