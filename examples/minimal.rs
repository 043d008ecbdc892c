//! The smallest embedding: watch one broker, keep history in SQLite
//! (`celery_cnc.db`), serve the web UI on 127.0.0.1:8000 when the build has
//! the `web` feature. Ctrl-C stops cleanly.
//!
//! `cargo run -p cnc-examples --example minimal -- redis://127.0.0.1:6379/0`

use cnc_core::CeleryCnc;
use cnc_core::config::{CeleryApp, CeleryCncConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let cfg = CeleryCncConfig::builder()
        .app(CeleryApp::new("app", broker))
        .build()?;
    CeleryCnc::new(cfg).run().await?;
    Ok(())
}
