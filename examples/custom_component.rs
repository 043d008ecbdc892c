//! A custom component: a failure alert that watches the event bus and
//! prints every failed task (swap the `println!` for a pager or a chat
//! hook). It is supervised like the built-in components: a crash restarts
//! it with backoff, and its status shows in `/api/components`.
//!
//! `cargo run -p cnc-examples --example custom_component -- redis://127.0.0.1:6379/0`

use async_trait::async_trait;
use cnc_core::bus::BusMessage;
use cnc_core::bus::EventBus;
use cnc_core::component::{
    CancellationToken, Component, ComponentError, ComponentInfo, ComponentResult, Context,
};
use cnc_core::config::{CeleryApp, CeleryCncConfig};
use cnc_core::{CeleryCnc, Event, TaskEventKind};

/// Prints failed tasks.
struct FailureAlert {
    bus: Option<EventBus>,
    alerts: u64,
}

#[async_trait]
impl Component for FailureAlert {
    fn name(&self) -> &str {
        "failure-alert"
    }

    async fn build(&mut self, ctx: &Context) -> ComponentResult<()> {
        self.bus = Some(ctx.bus.clone());
        Ok(())
    }

    async fn run(&mut self, shutdown: CancellationToken) -> ComponentResult<()> {
        let bus = self
            .bus
            .clone()
            .ok_or_else(|| ComponentError::fatal("run before build"))?;
        let mut rx = bus.subscribe();
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                msg = rx.recv() => msg,
            };
            match msg {
                Ok(BusMessage::Batch(batch)) => {
                    for e in &batch.events {
                        if let Event::Task(t) = e
                            && t.kind == TaskEventKind::Failed
                        {
                            self.alerts += 1;
                            println!(
                                "ALERT task {} failed on {}: {}",
                                t.uuid,
                                t.hostname.as_deref().unwrap_or("?"),
                                t.exception.as_deref().unwrap_or("?")
                            );
                        }
                    }
                }
                Ok(_) => {}
                // We fell behind: count it and carry on from the newest.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => bus.note_lag(n),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }

    fn info(&self) -> ComponentInfo {
        ComponentInfo {
            config: serde_json::json!({ "alerts_sent": self.alerts }),
            links: Vec::new(),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let cfg = CeleryCncConfig::builder()
        .app(CeleryApp::new("app", broker))
        .build()?;
    CeleryCnc::new(cfg)
        .with_component(FailureAlert {
            bus: None,
            alerts: 0,
        })
        .run()
        .await?;
    Ok(())
}
