//! Configuration of a celery-cnc service: [`CeleryCncConfig`].
//!
//! One value describes the whole service. Each optional section
//! (`logging`, `beat`, `prometheus`, `open_telemetry`, `frontend`) turns its
//! component on when present and off when `None`; a component that is off is
//! never built. Defaults make the smallest config work: file logging on,
//! SQLite at `celery_cnc.db`, the web UI on 127.0.0.1:8000, everything else
//! off.
//!
//! The same value comes from a builder ([`CeleryCncConfig::builder`]), from a
//! TOML file, from `CELERY_CNC__*` environment variables and from command
//! line flags, layered `defaults < file < env < flags` by [`ConfigLoader`].
//! Unknown fields are rejected and every error is reported at once
//! ([`ConfigErrors`]). Durations are written the human way (`"100ms"`,
//! `"7days"`); in TOML a section can be switched off with `frontend = false`.

mod load;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

pub use load::{ConfigError, ConfigErrors, ConfigLoader, ENV_PREFIX, ensure_dir};

/// The whole service configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CeleryCncConfig {
    /// The Celery apps to watch. Apps sharing a broker URL share one
    /// listener.
    pub apps: Vec<CeleryApp>,
    /// The service's own logs. `None`: logs go to stderr only.
    #[serde(deserialize_with = "section")]
    pub logging: Option<LoggingConfig>,
    /// The store. Always on: everything reads it.
    pub database: DatabaseConfig,
    /// The ingest pipeline: batching, worker refresh, repair.
    pub ingest: IngestConfig,
    /// The beat scheduler. Off by default.
    #[serde(deserialize_with = "section")]
    pub beat: Option<BeatConfig>,
    /// The Prometheus exporter. Off by default.
    #[serde(deserialize_with = "section")]
    pub prometheus: Option<PrometheusConfig>,
    /// The OpenTelemetry exporter. Off by default.
    #[serde(deserialize_with = "section")]
    pub open_telemetry: Option<OpenTelemetryConfig>,
    /// The web UI and JSON API. On by default, 127.0.0.1:8000.
    #[serde(deserialize_with = "section")]
    pub frontend: Option<FrontendConfig>,
}

impl Default for CeleryCncConfig {
    fn default() -> Self {
        Self {
            apps: Vec::new(),
            logging: Some(LoggingConfig::default()),
            database: DatabaseConfig::default(),
            ingest: IngestConfig::default(),
            beat: None,
            prometheus: None,
            open_telemetry: None,
            frontend: Some(FrontendConfig::default()),
        }
    }
}

impl CeleryCncConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Self::default(),
        }
    }

    /// Unique broker URLs, in first-seen order: one listener each.
    pub fn unique_brokers(&self) -> Vec<&str> {
        let mut seen = Vec::<&str>::new();
        for app in &self.apps {
            if !seen.contains(&app.broker_url.as_str()) {
                seen.push(&app.broker_url);
            }
        }
        seen
    }

    /// Check values that parse but make no sense. Every problem is
    /// returned, not just the first.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut err = |path: &str, message: String| {
            errors.push(ConfigError {
                path: path.to_owned(),
                message,
            })
        };
        let mut names = std::collections::BTreeSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let at = format!("apps[{i}]");
            if app.name.trim().is_empty() {
                err(&format!("{at}.name"), "must not be empty".into());
            } else if !names.insert(app.name.as_str()) {
                err(
                    &format!("{at}.name"),
                    format!("`{}` is used by two apps", app.name),
                );
            }
            if let Err(m) = check_url(
                &app.broker_url,
                &["redis", "rediss", "amqp", "amqps", "memory"],
            ) {
                err(&format!("{at}.broker_url"), m);
            }
            if let Some(b) = &app.result_backend
                && let Err(m) = check_url(
                    b,
                    &["redis", "rediss", "db+sqlite", "db+postgresql", "memory"],
                )
            {
                err(&format!("{at}.result_backend"), m);
            }
        }
        if let Err(m) = self.database.backend() {
            err("database.url", m);
        }
        if self.ingest.batch_size == 0 {
            err("ingest.batch_size", "must be at least 1".into());
        }
        if self.ingest.batch_interval.is_zero() {
            err("ingest.batch_interval", "must be more than 0".into());
        }
        if self.ingest.channel_capacity < self.ingest.batch_size {
            err(
                "ingest.channel_capacity",
                "must be at least ingest.batch_size".into(),
            );
        }
        if let Some(f) = &self.frontend {
            if f.port == 0 {
                err("frontend.port", "must not be 0".into());
            }
            if let Some(auth) = &f.basic_auth
                && !auth.contains(':')
            {
                err("frontend.basic_auth", "expected `user:password`".into());
            }
        }
        if let Some(p) = &self.prometheus {
            if p.port == 0 {
                err("prometheus.port", "must not be 0".into());
            }
            if !p.path.starts_with('/') {
                err("prometheus.path", "must start with `/`".into());
            }
            if p.runtime_buckets.windows(2).any(|w| w[0] >= w[1]) {
                err(
                    "prometheus.runtime_buckets",
                    "must be strictly increasing".into(),
                );
            }
            if let (Some(f), Some(p)) = (&self.frontend, &self.prometheus)
                && f.port == p.port
                && f.host == p.host
            {
                err(
                    "prometheus.port",
                    format!("{} is the web UI's port too", p.port),
                );
            }
        }
        if let Some(o) = &self.open_telemetry
            && let Err(m) = check_url(&o.endpoint, &["http", "https"])
        {
            err("open_telemetry.endpoint", m);
        }
        if let Some(b) = &self.beat
            && let Some(app) = &b.app
            && !self.apps.iter().any(|a| &a.name == app)
        {
            err("beat.app", format!("no app named `{app}`"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// A summary safe to show: every URL redacted, secrets replaced.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        for app in &mut c.apps {
            app.broker_url = redact_url(&app.broker_url);
            app.result_backend = app.result_backend.as_deref().map(redact_url);
        }
        c.database.url = redact_url(&c.database.url);
        if let Some(f) = &mut c.frontend {
            if let Some(auth) = &mut f.basic_auth {
                let user = auth.split(':').next().unwrap_or_default().to_owned();
                *auth = format!("{user}:***");
            }
            if f.bearer_token.is_some() {
                f.bearer_token = Some("***".into());
            }
        }
        if let Some(o) = &mut c.open_telemetry {
            o.endpoint = redact_url(&o.endpoint);
            for v in o.headers.values_mut() {
                *v = "***".into();
            }
        }
        c
    }
}

fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "`{}` is not a URL (expected one of: {})",
            redact_url(url),
            schemes.join("://, ") + "://"
        ));
    };
    if !schemes.contains(&scheme) {
        return Err(format!(
            "unsupported scheme `{scheme}` (expected one of: {})",
            schemes.join(", ")
        ));
    }
    if rest.is_empty() && !scheme.starts_with("db+") && scheme != "memory" {
        return Err("the URL has no host".into());
    }
    Ok(())
}

/// Replace the password in `scheme://user:password@host/...` with `***`.
/// Anything that is not such a URL comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            // `redis://password@host` is how some write a bare password.
            None if scheme.starts_with("redis") => format!("{scheme}://***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Builder for [`CeleryCncConfig`], see [`CeleryCncConfig::builder`].
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: CeleryCncConfig,
}

impl ConfigBuilder {
    /// Watch one more Celery app.
    pub fn app(mut self, app: CeleryApp) -> Self {
        self.config.apps.push(app);
        self
    }
    /// Logging, or `None` for stderr only.
    pub fn logging(mut self, logging: impl Into<Option<LoggingConfig>>) -> Self {
        self.config.logging = logging.into();
        self
    }
    /// The store.
    pub fn database(mut self, database: DatabaseConfig) -> Self {
        self.config.database = database;
        self
    }
    /// Ingest tuning.
    pub fn ingest(mut self, ingest: IngestConfig) -> Self {
        self.config.ingest = ingest;
        self
    }
    /// The beat scheduler, or `None`.
    pub fn beat(mut self, beat: impl Into<Option<BeatConfig>>) -> Self {
        self.config.beat = beat.into();
        self
    }
    /// The Prometheus exporter, or `None`.
    pub fn prometheus(mut self, prometheus: impl Into<Option<PrometheusConfig>>) -> Self {
        self.config.prometheus = prometheus.into();
        self
    }
    /// The OpenTelemetry exporter, or `None`.
    pub fn open_telemetry(mut self, otel: impl Into<Option<OpenTelemetryConfig>>) -> Self {
        self.config.open_telemetry = otel.into();
        self
    }
    /// The web UI, or `None`.
    pub fn frontend(mut self, frontend: impl Into<Option<FrontendConfig>>) -> Self {
        self.config.frontend = frontend.into();
        self
    }
    /// Validate and return the config.
    pub fn build(self) -> Result<CeleryCncConfig, ConfigErrors> {
        self.config.validate()?;
        Ok(self.config)
    }
}

/// One Celery app: where its broker and results live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CeleryApp {
    /// A short name shown in the UI and used in logs.
    pub name: String,
    /// `redis://…` or `amqp://…`.
    pub broker_url: String,
    /// `redis://…`, `db+sqlite:///path` or `db+postgresql://…`; used to read
    /// results and repair tasks stuck in a non-final state.
    #[serde(default)]
    pub result_backend: Option<String>,
    /// Queue for tasks sent without one (Celery's `task_default_queue`).
    #[serde(default)]
    pub default_queue: Option<String>,
    /// Redis `global_keyprefix` transport option.
    #[serde(default)]
    pub key_prefix: Option<String>,
}

impl CeleryApp {
    /// An app with a name and a broker URL.
    pub fn new(name: impl Into<String>, broker_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            broker_url: broker_url.into(),
            result_backend: None,
            default_queue: None,
            key_prefix: None,
        }
    }
    /// With a result backend.
    pub fn backend(mut self, url: impl Into<String>) -> Self {
        self.result_backend = Some(url.into());
        self
    }
    /// With a default queue.
    pub fn default_queue(mut self, queue: impl Into<String>) -> Self {
        self.default_queue = Some(queue.into());
        self
    }
}

/// How often log files rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    /// A new file every minute (for tests).
    Minutely,
    /// Every hour.
    Hourly,
    /// Every 24 hours.
    Daily,
    /// One file forever.
    Never,
}

/// The service's own logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Directory of the log files; created at start.
    pub directory: PathBuf,
    /// File name prefix: files are `<prefix>.<date>.log`.
    pub file_prefix: String,
    /// Rotation period.
    pub rotation: Rotation,
    /// Rotated files kept; older ones are deleted. `None`: keep all.
    pub max_files: Option<usize>,
    /// Filter in `tracing` syntax (`info`, `celery_cnc::ingest=debug`).
    pub level: String,
    /// Also write to stderr.
    pub stderr: bool,
    /// Entries kept in memory for the UI's Logs page.
    pub recent_capacity: usize,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            directory: PathBuf::from("logs"),
            file_prefix: "celery_cnc".into(),
            rotation: Rotation::Daily,
            max_files: Some(14),
            level: "info".into(),
            stderr: true,
            recent_capacity: 2000,
        }
    }
}

/// Which store, and how long history is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (or a bare path), `postgres://…`, or `memory://`.
    pub url: String,
    /// Wipe the stored history on start.
    pub purge_db: bool,
    /// Delete tasks, events and worker history older than this. `None`:
    /// keep everything.
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// How often the retention cleanup runs.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
    /// SQLite: refuse writes past this size (MiB); the store reports
    /// "full" instead of filling the disk.
    pub max_size_mib: Option<u64>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://celery_cnc.db".into(),
            purge_db: false,
            retention: None,
            cleanup_interval: Duration::from_secs(3600),
            max_size_mib: None,
        }
    }
}

/// Which store a [`DatabaseConfig`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseBackend {
    /// SQLite at this path.
    Sqlite(PathBuf),
    /// PostgreSQL at this URL.
    Postgres(String),
    /// In memory; lost on exit.
    Memory,
}

impl DatabaseConfig {
    /// SQLite at `path`.
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        Self {
            url: format!("sqlite://{}", path.into().display()),
            ..Self::default()
        }
    }
    /// PostgreSQL at `url`.
    pub fn postgres(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
    /// In memory.
    pub fn memory() -> Self {
        Self {
            url: "memory://".into(),
            ..Self::default()
        }
    }
    /// With `purge_db`.
    pub fn purge_on_start(mut self, purge: bool) -> Self {
        self.purge_db = purge;
        self
    }
    /// With a retention period.
    pub fn retention(mut self, keep: Duration) -> Self {
        self.retention = Some(keep);
        self
    }

    /// Parse [`Self::url`].
    pub fn backend(&self) -> Result<DatabaseBackend, String> {
        let url = self.url.trim();
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("`sqlite://` needs a path".into());
            }
            return Ok(DatabaseBackend::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseBackend::Postgres(url.to_owned()));
        }
        if url == "memory://" || url == "memory" {
            return Ok(DatabaseBackend::Memory);
        }
        if url.contains("://") || url.is_empty() {
            return Err(format!(
                "unsupported database `{}` (expected sqlite://PATH, postgres://… or memory://)",
                redact_url(url)
            ));
        }
        Ok(DatabaseBackend::Sqlite(PathBuf::from(url)))
    }
}

/// The ingest pipeline and the periodic jobs around it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Events per write batch.
    pub batch_size: usize,
    /// Longest wait before a partial batch is written.
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    /// Capacity of the channel between listeners and the writer, in events
    /// (also the size of each listener's own read buffer). When both are
    /// full the listener drops and counts (it never blocks the socket).
    pub channel_capacity: usize,
    /// Broadcast `enable_events` this often so workers started without
    /// `-E` report. `None`: never.
    #[serde(with = "humantime_serde")]
    pub enable_events_interval: Option<Duration>,
    /// Refresh every online worker's detail (stats, active_queues,
    /// registered, conf) this often; also done when a worker comes online.
    #[serde(with = "humantime_serde")]
    pub worker_refresh_interval: Duration,
    /// How long to wait for inspect replies.
    #[serde(with = "humantime_serde")]
    pub inspect_timeout: Duration,
    /// Forget workers offline for longer than this. `None`: keep them.
    #[serde(with = "humantime_serde")]
    pub prune_offline_workers_after: Option<Duration>,
    /// Tasks in a non-final state for longer than this are checked against
    /// the result backend. `None`: no repair.
    #[serde(with = "humantime_serde")]
    pub repair_after: Option<Duration>,
    /// How often the repair pass runs.
    #[serde(with = "humantime_serde")]
    pub repair_interval: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            batch_interval: Duration::from_millis(100),
            channel_capacity: 16_384,
            enable_events_interval: Some(Duration::from_secs(60)),
            worker_refresh_interval: Duration::from_secs(60),
            inspect_timeout: Duration::from_secs(1),
            prune_offline_workers_after: Some(Duration::from_secs(24 * 3600)),
            repair_after: Some(Duration::from_secs(600)),
            repair_interval: Duration::from_secs(60),
        }
    }
}

/// The beat scheduler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BeatConfig {
    /// A file of schedules loaded at start (TOML or JSON).
    pub schedule_path: Option<PathBuf>,
    /// Delete stored schedules on start (then load `schedule_path`).
    pub delete_schedules_on_boot: bool,
    /// The app whose broker receives scheduled tasks; the first app if
    /// `None`.
    pub app: Option<String>,
}

/// The Prometheus exporter: its own HTTP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Address to bind.
    pub host: String,
    /// Port to bind.
    pub port: u16,
    /// Path of the metrics page.
    pub path: String,
    /// Also export Flower's metric names.
    pub flower_compat: bool,
    /// Also export celery-exporter's metric names.
    pub celery_exporter_compat: bool,
    /// Task runtime histogram buckets, seconds.
    pub runtime_buckets: Vec<f64>,
    /// Remove an offline worker's series after this long.
    #[serde(with = "humantime_serde")]
    pub offline_worker_ttl: Duration,
    /// Only these task names get their own series; others are counted
    /// under `other`. `None`: all names.
    pub task_names: Option<Vec<String>>,
    /// How often queue depths are refreshed from the broker.
    #[serde(with = "humantime_serde")]
    pub queue_refresh_interval: Duration,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8001,
            path: "/metrics".into(),
            flower_compat: true,
            celery_exporter_compat: false,
            runtime_buckets: vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ],
            offline_worker_ttl: Duration::from_secs(600),
            task_names: None,
            queue_refresh_interval: Duration::from_secs(15),
        }
    }
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    /// gRPC (port 4317 by convention).
    Grpc,
    /// HTTP with protobuf bodies (port 4318).
    HttpProtobuf,
}

/// The OpenTelemetry exporter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenTelemetryConfig {
    /// OTLP endpoint, `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Extra request headers (auth tokens); redacted when shown.
    pub headers: BTreeMap<String, String>,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// More resource attributes.
    pub resource_attributes: BTreeMap<String, String>,
    /// How often metrics are exported.
    #[serde(with = "humantime_serde")]
    pub export_interval: Duration,
    /// Spans buffered for export; beyond this they are dropped and counted.
    pub max_queue: usize,
}

impl Default for OpenTelemetryConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: OtlpProtocol::Grpc,
            headers: BTreeMap::new(),
            service_name: "celery-cnc".into(),
            resource_attributes: BTreeMap::new(),
            export_interval: Duration::from_secs(10),
            max_queue: 65_536,
        }
    }
}

/// The web UI and JSON API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrontendConfig {
    /// Address to bind; loopback unless told otherwise.
    pub host: String,
    /// Port to bind.
    pub port: u16,
    /// Host header values accepted besides the bind address and
    /// `localhost` (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// `user:password` for HTTP basic auth (Flower's `--basic-auth`).
    pub basic_auth: Option<String>,
    /// A bearer token accepted in `Authorization: Bearer …`.
    pub bearer_token: Option<String>,
    /// Refuse every action (POST); pages and the API read only.
    pub read_only: bool,
    /// Pages poll this often when Server-Sent Events are unavailable.
    #[serde(with = "humantime_serde")]
    pub polling_interval: Duration,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8000,
            allowed_hosts: Vec::new(),
            basic_auth: None,
            bearer_token: None,
            read_only: false,
            polling_interval: Duration::from_secs(5),
            max_body_bytes: 1 << 20,
        }
    }
}

/// Deserialize an optional section: a table turns it on, `false` off,
/// `true` on with defaults.
fn section<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    // Not an untagged enum: that would swallow the table's own error (an
    // unknown field, a wrong type), which is the one the user needs.
    match toml::Value::deserialize(d)? {
        toml::Value::Boolean(on) => Ok(on.then(T::default)),
        table => T::deserialize(table)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests;
