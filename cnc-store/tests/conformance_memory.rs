//! The DbController conformance suite against the in-memory store.
#![cfg(feature = "memory")]

use std::sync::Arc;

use cnc_core::DbController;
use cnc_core::testkit::StoreFactory;
use cnc_store::memory::MemoryStore;

/// A new MemoryStore per check.
struct Memory;

#[async_trait::async_trait]
impl StoreFactory for Memory {
    async fn fresh(&self) -> Arc<dyn DbController> {
        Arc::new(MemoryStore::new())
    }
}

cnc_core::conformance_tests!(Memory);
