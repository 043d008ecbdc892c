//! Helpers shared by the end-to-end tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cnc_core::{DbController, TaskState};

/// Poll the store until task `id` is in `state`; fail after `timeout` with
/// what is stored.
pub async fn wait_task(
    store: &Arc<dyn DbController>,
    id: &str,
    state: TaskState,
    timeout: Duration,
) -> cnc_core::Task {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = store.task(id).await.expect("read task")
            && t.state == state
        {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never reached {state:?}; stored: {:?}",
            store.task(id).await.ok().flatten()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
