//! Components: the parts of a running service (ingest, web, exporters,
//! beat, …) and what the orchestrator needs to supervise them.
//!
//! A component's life: [`Component::build`] does all fallible set-up (bind
//! a port, open a connection) and is where bad config surfaces;
//! [`Component::run`] only runs, until the shutdown token fires;
//! [`Component::stop`] releases and flushes. When `run` fails the
//! orchestrator records the error, waits a capped backoff, and calls
//! `build` and `run` again; the [`StatusBoard`] shows all of it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
pub use tokio_util::sync::CancellationToken;

use crate::bus::EventBus;
use crate::logs::LogController;
use crate::model::Timestamp;
use crate::store::DbController;

/// A component failed. The message is shown in the UI: keep secrets out.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ComponentError {
    message: String,
    /// Retrying cannot help (bad config): the orchestrator gives up.
    pub fatal: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ComponentError {
    /// A failure worth retrying (a broker or port went away).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            fatal: false,
            source: None,
        }
    }
    /// A failure no retry can fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            fatal: true,
            ..Self::new(message)
        }
    }
    /// Attach the cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    /// The message and every cause, `: `-joined.
    pub fn chain(&self) -> String {
        let mut s = self.message.clone();
        let mut cur: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|e| e as _);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }
}

/// Shorthand for component results.
pub type ComponentResult<T> = Result<T, ComponentError>;

/// What the shared services of a running celery-cnc are. Every component
/// gets a clone at build time.
#[derive(Clone)]
pub struct Context {
    /// The store. Only the ingest component writes task events; others
    /// read, or write their own data (worker info, schedules).
    pub store: Arc<dyn DbController>,
    /// What ingest wrote, for live pages and exporters.
    pub bus: EventBus,
    /// The service's log controller (the Logs page reads its feed).
    pub logs: Arc<dyn LogController>,
    /// Every component's status.
    pub status: StatusBoard,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("store", &self.store.info().backend)
            .finish_non_exhaustive()
    }
}

/// A link a component offers (shown on the Settings/Components page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Label.
    pub label: String,
    /// URL.
    pub url: String,
}

/// What a component says about itself, safe to show (no secrets).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComponentInfo {
    /// Config summary with secrets redacted.
    pub config: Value,
    /// Where to reach it.
    pub links: Vec<Link>,
}

/// A part of the service the orchestrator supervises.
#[async_trait]
pub trait Component: Send + 'static {
    /// Stable name: `ingest`, `frontend`, `prometheus`, …; also the log
    /// namespace `celery_cnc.<name>`.
    fn name(&self) -> &str;

    /// All fallible set-up. Called before the first `run` and again before
    /// each restart.
    async fn build(&mut self, ctx: &Context) -> ComponentResult<()>;

    /// Do the work until `shutdown` is cancelled, then return `Ok`. An
    /// `Err` is a crash: the orchestrator restarts the component.
    async fn run(&mut self, shutdown: CancellationToken) -> ComponentResult<()>;

    /// Release and flush what `build` acquired. Called after `run` returns,
    /// also after a crash.
    async fn stop(&mut self) -> ComponentResult<()> {
        Ok(())
    }

    /// Config summary and links for the status page.
    fn info(&self) -> ComponentInfo {
        ComponentInfo::default()
    }
}

/// Up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    /// Not started yet, or `build` running.
    Starting,
    /// `run` is running.
    Up,
    /// Crashed; waiting to restart.
    Restarting,
    /// Gave up (a fatal error).
    Failed,
    /// Stopped on request.
    Stopped,
}

/// The status of one component, as served at `/api/components`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentStatus {
    /// Component name.
    pub name: String,
    /// Up, down, …
    pub state: ComponentState,
    /// Restarts after a crash.
    pub restarts: u64,
    /// The last error, with causes.
    pub last_error: Option<String>,
    /// When the last error happened.
    pub last_error_at: Option<Timestamp>,
    /// When it last came up.
    pub up_since: Option<Timestamp>,
    /// Safe config summary and links.
    pub info: ComponentInfo,
}

impl ComponentStatus {
    /// A fresh status for `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            state: ComponentState::Starting,
            restarts: 0,
            last_error: None,
            last_error_at: None,
            up_since: None,
            info: ComponentInfo::default(),
        }
    }
    /// Whether it is running.
    pub fn is_up(&self) -> bool {
        self.state == ComponentState::Up
    }
}

/// Names in start order, and the statuses by name.
type Board = (Vec<String>, BTreeMap<String, ComponentStatus>);

/// Shared, cheap-to-clone table of component statuses, in start order.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    inner: Arc<std::sync::RwLock<Board>>,
}

impl StatusBoard {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// Change the status of `name` (created if new) with `f`.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut ComponentStatus)) {
        let mut guard = match self.inner.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (order, map) = &mut *guard;
        if !map.contains_key(name) {
            order.push(name.to_owned());
        }
        f(map
            .entry(name.to_owned())
            .or_insert_with(|| ComponentStatus::new(name)));
    }

    /// One component's status.
    pub fn get(&self, name: &str) -> Option<ComponentStatus> {
        let guard = match self.inner.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.1.get(name).cloned()
    }

    /// All statuses, in start order.
    pub fn all(&self) -> Vec<ComponentStatus> {
        let guard = match self.inner.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard
            .0
            .iter()
            .filter_map(|n| guard.1.get(n).cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_keeps_start_order_and_updates() {
        let b = StatusBoard::new();
        b.update("store", |s| s.state = ComponentState::Up);
        b.update("ingest", |s| s.restarts = 2);
        b.update("store", |s| s.last_error = Some("x".into()));
        let all = b.all();
        assert_eq!(
            all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["store", "ingest"]
        );
        assert!(all[0].is_up());
        assert_eq!(all[0].last_error.as_deref(), Some("x"));
        assert_eq!(b.get("ingest").map(|s| s.restarts), Some(2));
    }

    #[test]
    fn error_chain_joins_causes() {
        let e = ComponentError::new("binding 127.0.0.1:8000")
            .with_source(std::io::Error::other("address in use"));
        assert_eq!(e.chain(), "binding 127.0.0.1:8000: address in use");
        assert!(!e.fatal);
        assert!(ComponentError::fatal("bad").fatal);
    }
}
