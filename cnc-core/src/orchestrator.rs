//! The orchestrator: builds the components in order, supervises them, and
//! stops them in reverse.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cnc_broker::{AppConnection, Backoff, BrokerOptions, StreamStats};
use cnc_model::bus::EventBus;
use cnc_model::component::{
    CancellationToken, Component, ComponentInfo, ComponentResult, ComponentState, ComponentStatus,
    Context, StatusBoard,
};
use cnc_model::config::{CeleryCncConfig, ConfigErrors, DatabaseBackend};
use cnc_model::logs::{LogController, RecentLogs};
use cnc_model::{DbController, Event};
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ingest::{IngestCounters, IngestStats, ListenerComponent, WriterComponent};
use crate::jobs::{LossEstimate, LossTracker, RepairComponent, StoreComponent, WorkersComponent};
use crate::logging::{self, FileLogController, LoggingError};

const TARGET: &str = "celery_cnc::orchestrator";

/// How long a component gets to stop before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(40);

/// Why the service could not start (or stop cleanly). One readable line
/// each; secrets redacted.
#[derive(Debug, thiserror::Error)]
pub enum CncError {
    /// The configuration is invalid (every problem listed).
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The log directory could not be opened.
    #[error(transparent)]
    Logging(#[from] LoggingError),
    /// The store could not be opened, migrated or purged.
    #[error("store {location}: {source}")]
    Store {
        /// Where, redacted.
        location: String,
        /// What failed.
        #[source]
        source: cnc_model::StoreError,
    },
    /// A broker or result backend could not be reached.
    #[error("cannot reach {url}: {source}")]
    Broker {
        /// The URL, redacted.
        url: String,
        /// What failed.
        #[source]
        source: cnc_broker::BrokerError,
    },
    /// A component's set-up failed.
    #[error("{name} failed to start: {message}")]
    Component {
        /// The component.
        name: String,
        /// The error with its causes.
        message: String,
    },
    /// Waiting for a shutdown signal failed.
    #[error("cannot listen for shutdown signals: {0}")]
    Signal(#[source] std::io::Error),
}

/// A celery-cnc service, configured and ready to start.
pub struct CeleryCnc {
    config: CeleryCncConfig,
    store: Option<Arc<dyn DbController>>,
    logs: Option<Arc<dyn LogController>>,
    extra: Vec<Box<dyn Component>>,
    brokers: BTreeMap<String, Arc<dyn cnc_broker::Broker>>,
    shutdown: CancellationToken,
    global_subscriber: bool,
}

impl std::fmt::Debug for CeleryCnc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CeleryCnc")
            .field("config", &self.config.redacted())
            .finish_non_exhaustive()
    }
}

impl CeleryCnc {
    /// A service for `config`.
    pub fn new(config: CeleryCncConfig) -> Self {
        Self {
            config,
            store: None,
            logs: None,
            extra: Vec::new(),
            brokers: BTreeMap::new(),
            shutdown: CancellationToken::new(),
            global_subscriber: true,
        }
    }

    /// Use this broker for every app whose `broker_url` is `url`, instead
    /// of connecting (a custom [`cnc_broker::Broker`] adapter, or the
    /// in-memory broker in tests).
    pub fn with_broker(
        mut self,
        url: impl Into<String>,
        broker: Arc<dyn cnc_broker::Broker>,
    ) -> Self {
        self.brokers.insert(url.into(), broker);
        self
    }

    /// Use this store instead of the one `config.database` names (a custom
    /// [`DbController`]). `purge_db` and retention still apply.
    pub fn with_store(mut self, store: Arc<dyn DbController>) -> Self {
        self.store = Some(store);
        self
    }

    /// Send the service's logs to this controller instead of the default
    /// file controller.
    pub fn with_log_controller(mut self, logs: Arc<dyn LogController>) -> Self {
        self.logs = Some(logs);
        self
    }

    /// Run one more component, supervised like the built-in ones (started
    /// after the exporters, before the web UI).
    pub fn with_component(mut self, component: impl Component) -> Self {
        self.extra.push(Box::new(component));
        self
    }

    /// Do not install a global `tracing` subscriber (the host has its own;
    /// add [`logging::layer()`] to it).
    pub fn without_global_subscriber(mut self) -> Self {
        self.global_subscriber = false;
        self
    }

    /// Cancel this token to make [`CeleryCnc::run`] stop as on SIGTERM.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Start and run until SIGINT, SIGTERM or the [`Self::shutdown_token`],
    /// then stop cleanly: stop accepting, drain the event channel, write
    /// the last batch, close the store.
    pub async fn run(self) -> Result<(), CncError> {
        let token = self.shutdown.clone();
        let running = self.start().await?;
        let signal = wait_for_signal();
        tokio::select! {
            r = signal => {
                r.map_err(CncError::Signal)?;
                tracing::info!(target: TARGET, "shutdown signal received; stopping");
            }
            _ = token.cancelled() => {
                tracing::info!(target: TARGET, "shutdown requested; stopping");
            }
        }
        running.stop().await.map(|_| ())
    }

    /// Build every component in start order and return the running
    /// service. A component whose set-up fails stops the start (after the
    /// components already started are stopped) with that error.
    pub async fn start(self) -> Result<Running, CncError> {
        let CeleryCnc {
            config,
            store,
            logs,
            extra,
            brokers: given_brokers,
            shutdown,
            global_subscriber,
        } = self;
        config.validate()?;

        // 1. Logging.
        let level = config
            .logging
            .as_ref()
            .map(|l| l.level.clone())
            .unwrap_or_else(|| "info".into());
        let stderr = config.logging.as_ref().is_none_or(|l| l.stderr);
        // Where the logs go, as the `logging` component reports it: a
        // custom controller ignores `logging.directory`.
        let (logs, controller, directory): (Arc<dyn LogController>, _, _) =
            match (logs, &config.logging) {
                (Some(l), _) => (l, "custom", None),
                (None, Some(cfg)) => (
                    Arc::new(FileLogController::open(cfg)?),
                    "file",
                    Some(cfg.directory.display().to_string()),
                ),
                (None, None) => (Arc::new(RecentLogs::new(2000)), "memory", None),
            };
        logging::register(&logs);
        if global_subscriber && !logging::install(&level, stderr) {
            tracing::debug!(
                target: TARGET,
                "a tracing subscriber is already installed; add cnc_core::logging::layer() to it to feed the Logs page"
            );
        }

        // 2. Store.
        let store = match store {
            Some(s) => s,
            None => open_store(&config).await?,
        };
        let location = store.info().location;
        store.initialize().await.map_err(|source| CncError::Store {
            location: location.clone(),
            source,
        })?;
        if config.database.purge_db {
            store.purge().await.map_err(|source| CncError::Store {
                location: location.clone(),
                source,
            })?;
            tracing::info!(target: "celery_cnc::store", location = %location, "stored history purged on start (purge_db)");
        }

        // 3. Brokers: one connection and one listener per unique URL.
        let mut apps = Vec::new();
        let mut brokers: BTreeMap<String, (Arc<dyn cnc_broker::Broker>, Arc<StreamStats>)> =
            BTreeMap::new();
        for app in &config.apps {
            let shared = match brokers.get(&app.broker_url) {
                Some(b) => b.clone(),
                None => {
                    let broker = match given_brokers.get(&app.broker_url) {
                        Some(b) => b.clone(),
                        None => cnc_broker::connect(
                            &app.broker_url,
                            BrokerOptions {
                                key_prefix: app.key_prefix.clone().unwrap_or_default(),
                                connection_name: Some(format!("celery-cnc {}", app.name)),
                            },
                        )
                        .await
                        .map_err(|source| CncError::Broker {
                            url: cnc_broker::url::redact(&app.broker_url),
                            source,
                        })?,
                    };
                    let entry = (broker, StreamStats::new());
                    brokers.insert(app.broker_url.clone(), entry.clone());
                    entry
                }
            };
            let conn = AppConnection::with_broker(app, shared.0, shared.1)
                .await
                .map_err(|source| CncError::Broker {
                    url: app
                        .result_backend
                        .as_deref()
                        .map(cnc_broker::url::redact)
                        .unwrap_or_default(),
                    source,
                })?;
            apps.push(conn);
        }

        let status = StatusBoard::new();
        // Each message holds a whole batch: a small ring keeps memory
        // bounded; a subscriber that falls further behind resyncs.
        let bus = EventBus::new(64);
        let ctx = Context {
            store: store.clone(),
            bus: bus.clone(),
            logs: logs.clone(),
            status: status.clone(),
        };

        // 4. Components, in start order.
        let (tx, rx) = mpsc::channel::<Event>(config.ingest.channel_capacity);
        let ingest_stats = Arc::new(IngestStats::default());
        let losses = LossTracker::default();
        let mut components: Vec<Box<dyn Component>> = vec![
            Box::new(LoggingComponent {
                logs: logs.clone(),
                controller,
                directory,
            }),
            Box::new(StoreComponent::new(config.database.clone())),
            Box::new(WriterComponent::new(
                config.ingest.clone(),
                rx,
                ingest_stats.clone(),
            )),
        ];
        for (url, (broker, stats)) in &brokers {
            let names: Vec<&str> = config
                .apps
                .iter()
                .filter(|a| &a.broker_url == url)
                .map(|a| a.name.as_str())
                .collect();
            components.push(Box::new(ListenerComponent::new(
                format!("listener.{}", names.join("+")),
                cnc_broker::url::redact(url),
                broker.clone(),
                stats.clone(),
                &config.ingest,
                tx.clone(),
                ingest_stats.clone(),
            )));
        }
        if !apps.is_empty() {
            components.push(Box::new(WorkersComponent::new(
                config.ingest.clone(),
                apps.clone(),
                tx.clone(),
                losses.clone(),
            )));
        }
        if let Some(after) = config.ingest.repair_after
            && apps.iter().any(|a| a.backend.is_some())
        {
            components.push(Box::new(RepairComponent::new(
                after,
                config.ingest.repair_interval,
                apps.clone(),
                tx.clone(),
            )));
        }
        components.extend(crate::hosted::exporters(&config, &apps));
        components.extend(extra);
        components.extend(crate::hosted::frontend(&config, &apps));

        let mut running = Running {
            ctx,
            apps,
            ingest: ingest_stats,
            losses,
            supervised: Vec::new(),
            shutdown,
            _ingest_tx: tx,
        };
        for mut component in components {
            let name = component.name().to_owned();
            status.update(&name, |s| s.state = ComponentState::Starting);
            if let Err(e) = component.build(&running.ctx).await {
                let message = e.chain();
                status.update(&name, |s| {
                    s.state = ComponentState::Failed;
                    s.last_error = Some(message.clone());
                    s.last_error_at = Some(cnc_model::now());
                });
                tracing::error!(target: TARGET, component = %name, error = %message, "failed to start");
                // Stop what already runs, then report.
                let _ = running.stop_components().await;
                return Err(CncError::Component { name, message });
            }
            let token = CancellationToken::new();
            let handle = tokio::spawn(supervise(
                component,
                running.ctx.clone(),
                token.clone(),
                status.clone(),
            ));
            running.supervised.push(Supervised {
                name,
                token,
                handle,
            });
        }
        tracing::info!(
            target: TARGET,
            components = running.supervised.len(),
            brokers = brokers.len(),
            store = %location,
            "celery-cnc started"
        );
        Ok(running)
    }
}

async fn open_store(config: &CeleryCncConfig) -> Result<Arc<dyn DbController>, CncError> {
    let backend = config.database.backend().map_err(|m| {
        ConfigErrors(vec![cnc_model::config::ConfigError {
            path: "database.url".into(),
            message: m,
        }])
    })?;
    match backend {
        DatabaseBackend::Memory => Ok(Arc::new(cnc_store::memory::MemoryStore::new())),
        #[cfg(feature = "sqlite")]
        DatabaseBackend::Sqlite(path) => {
            let mut cfg = cnc_store::sqlite::SqliteConfig::new(&path);
            cfg.max_size_mib = config.database.max_size_mib;
            // Sized for the service's memory goal (<= 100 MB at 1M tasks).
            cfg.cache_kib = 24 * 1024;
            cfg.task_cache = 10_000;
            let store =
                cnc_store::sqlite::SqliteStore::open(cfg).map_err(|source| CncError::Store {
                    location: path.display().to_string(),
                    source,
                })?;
            Ok(Arc::new(store))
        }
        #[cfg(feature = "postgres")]
        DatabaseBackend::Postgres(url) => {
            let store = cnc_store::postgres::PostgresStore::connect(
                cnc_store::postgres::PostgresConfig::new(url.clone()),
            )
            .await
            .map_err(|source| CncError::Store {
                location: cnc_model::config::redact_url(&url),
                source,
            })?;
            Ok(Arc::new(store))
        }
        #[allow(unreachable_patterns)]
        other => Err(CncError::Config(ConfigErrors(vec![
            cnc_model::config::ConfigError {
                path: "database.url".into(),
                message: format!("{other:?} support is not compiled in (enable its cargo feature)"),
            },
        ]))),
    }
}

async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// Run `component` until `token` fires, restarting it with capped backoff
/// after a crash (an error or a panic in `run`, or a failed rebuild).
async fn supervise(
    mut component: Box<dyn Component>,
    ctx: Context,
    token: CancellationToken,
    status: StatusBoard,
) {
    let name = component.name().to_owned();
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut built = true; // the first build was done by `start`
    loop {
        if !built {
            match AssertUnwindSafe(component.build(&ctx)).catch_unwind().await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let fatal = e.fatal;
                    record_error(&status, &name, &e.chain(), fatal);
                    if fatal {
                        return;
                    }
                    if !sleep_or_stop(&token, backoff.next_delay()).await {
                        status.update(&name, |s| s.state = ComponentState::Stopped);
                        return;
                    }
                    continue;
                }
                Err(_) => {
                    record_error(&status, &name, "panicked while building", false);
                    if !sleep_or_stop(&token, backoff.next_delay()).await {
                        status.update(&name, |s| s.state = ComponentState::Stopped);
                        return;
                    }
                    continue;
                }
            }
        }
        built = false;
        let info = component.info();
        status.update(&name, |s| {
            s.state = ComponentState::Up;
            s.up_since = Some(cnc_model::now());
            s.info = info;
        });
        tracing::info!(target: TARGET, component = %name, "started");
        let started = std::time::Instant::now();
        let outcome = AssertUnwindSafe(component.run(token.clone()))
            .catch_unwind()
            .await;
        if let Err(e) = component.stop().await {
            tracing::warn!(target: TARGET, component = %name, error = %e.chain(), "stop failed");
        }
        let info = component.info();
        status.update(&name, |s| s.info = info);
        if token.is_cancelled() {
            if let Ok(Err(e)) = &outcome {
                tracing::warn!(target: TARGET, component = %name, error = %e.chain(), "failed while stopping");
            }
            status.update(&name, |s| s.state = ComponentState::Stopped);
            tracing::info!(target: TARGET, component = %name, "stopped");
            return;
        }
        let (message, fatal) = match outcome {
            Ok(Ok(())) => ("returned before it was asked to stop".to_owned(), false),
            Ok(Err(e)) => (e.chain(), e.fatal),
            Err(panic) => (
                format!("panicked: {}", panic_message(panic.as_ref())),
                false,
            ),
        };
        record_error(&status, &name, &message, fatal);
        if fatal {
            return;
        }
        // A component that ran for a while before crashing starts over
        // from the shortest delay.
        if started.elapsed() > Duration::from_secs(60) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        status.update(&name, |s| {
            s.state = ComponentState::Restarting;
            s.restarts += 1;
        });
        tracing::warn!(
            target: TARGET,
            component = %name,
            error = %message,
            restart_in_ms = delay.as_millis() as u64,
            "component crashed; restarting"
        );
        if !sleep_or_stop(&token, delay).await {
            status.update(&name, |s| s.state = ComponentState::Stopped);
            return;
        }
    }
}

fn record_error(status: &StatusBoard, name: &str, message: &str, fatal: bool) {
    status.update(name, |s| {
        s.last_error = Some(message.to_owned());
        s.last_error_at = Some(cnc_model::now());
        if fatal {
            s.state = ComponentState::Failed;
        }
    });
    if fatal {
        tracing::error!(target: TARGET, component = %name, error = %message, "component failed; not restarting");
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Sleep `d`; false when the token fired first.
async fn sleep_or_stop(token: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

struct Supervised {
    name: String,
    token: CancellationToken,
    handle: JoinHandle<()>,
}

/// What a clean stop leaves behind.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StopReport {
    /// Final ingest counters: after a clean stop `accepted ==
    /// events_written + events_skipped + events_dropped_invalid`.
    pub ingest: IngestCounters,
    /// Final component statuses.
    pub components: Vec<ComponentStatus>,
}

/// A started service.
pub struct Running {
    ctx: Context,
    apps: Vec<AppConnection>,
    ingest: Arc<IngestStats>,
    losses: LossTracker,
    supervised: Vec<Supervised>,
    shutdown: CancellationToken,
    /// Keeps the ingest channel open until the writer is asked to stop.
    /// Without it, stopping the last producer (listeners, jobs) closes the
    /// channel, the writer returns on its own before its turn, and the
    /// supervisor records a crash and a restart on every clean stop. The
    /// writer still drains the channel when it is stopped, after every
    /// producer.
    _ingest_tx: mpsc::Sender<Event>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field(
                "components",
                &self.supervised.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Running {
    /// The shared services (store, bus, logs, status).
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn DbController> {
        &self.ctx.store
    }

    /// The event bus.
    pub fn bus(&self) -> &EventBus {
        &self.ctx.bus
    }

    /// The connected apps.
    pub fn apps(&self) -> &[AppConnection] {
        &self.apps
    }

    /// Every component's status, in start order.
    pub fn status(&self) -> Vec<ComponentStatus> {
        self.ctx.status.all()
    }

    /// The status of every component as JSON (what `/api/components`
    /// serves).
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::to_value(self.status()).unwrap_or(serde_json::Value::Null)
    }

    /// The ingest writer's counters.
    pub fn ingest_counters(&self) -> IngestCounters {
        self.ingest.snapshot()
    }

    /// Lost-event estimates per worker.
    pub fn lost_events(&self) -> BTreeMap<String, LossEstimate> {
        self.losses.snapshot()
    }

    /// A token that stops [`Running::wait`] callers; cancelled by
    /// [`CeleryCnc::shutdown_token`] too.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stop every component in reverse start order (the web UI first, the
    /// store last), drain the ingest channel, write the last batch and
    /// close the store.
    pub async fn stop(mut self) -> Result<StopReport, CncError> {
        self.stop_components().await;
        let location = self.ctx.store.info().location;
        let closed = self.ctx.store.close().await;
        let report = StopReport {
            ingest: self.ingest.snapshot(),
            components: self.ctx.status.all(),
        };
        tracing::info!(
            target: TARGET,
            events_written = report.ingest.events_written,
            "celery-cnc stopped"
        );
        self.ctx.logs.flush();
        closed.map_err(|source| CncError::Store { location, source })?;
        Ok(report)
    }

    async fn stop_components(&mut self) {
        while let Some(s) = self.supervised.pop() {
            s.token.cancel();
            let mut handle = s.handle;
            match tokio::time::timeout(STOP_GRACE, &mut handle).await {
                Ok(_) => {}
                Err(_) => {
                    tracing::error!(target: TARGET, component = %s.name, "did not stop in time; aborted");
                    handle.abort();
                }
            }
        }
        self.shutdown.cancel();
    }
}

/// The `logging` component: shows where logs go, flushes at stop.
struct LoggingComponent {
    logs: Arc<dyn LogController>,
    /// `file`, `memory` (no `logging` section) or `custom`.
    controller: &'static str,
    /// The log files' directory; only for the file controller.
    directory: Option<String>,
}

#[async_trait]
impl Component for LoggingComponent {
    fn name(&self) -> &str {
        "logging"
    }

    async fn build(&mut self, _ctx: &Context) -> ComponentResult<()> {
        Ok(())
    }

    async fn run(&mut self, shutdown: CancellationToken) -> ComponentResult<()> {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => self.logs.flush(),
            }
        }
    }

    async fn stop(&mut self) -> ComponentResult<()> {
        self.logs.flush();
        Ok(())
    }

    fn info(&self) -> ComponentInfo {
        ComponentInfo {
            config: serde_json::json!({
                "controller": self.controller,
                "directory": self.directory,
            }),
            links: Vec::new(),
        }
    }
}
