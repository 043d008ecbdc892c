//! The service's own logs: the default [`FileLogController`] and the
//! `tracing` layer that feeds log controllers.
//!
//! Every component logs through `tracing` with target
//! `celery_cnc::<component>`; the [`layer`] turns each event into a
//! [`LogEntry`] in the namespace `celery_cnc.<component>` and hands it to
//! every registered [`LogController`]. The default controller writes
//! `[timestamp] [component] [level] message key=value` lines to files
//! rotated on a period (daily by default) and keeps the newest entries in
//! memory for the UI's Logs page.
//!
//! The layer is installed as the global subscriber when the service starts,
//! unless the host application already installed one; then add
//! [`layer()`] to the host's own subscriber to feed celery-cnc's controller.
//! Controllers are registered process-wide (weakly), so several services in
//! one process (tests) each get the logs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use cnc_model::config::{LoggingConfig, Rotation};
use cnc_model::logs::{LogController, LogEntry, LogLevel, LogQuery, RecentLogs};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Could not set up logging.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the log directory {dir}: {source}")]
pub struct LoggingError {
    dir: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// Files rotated on a period, plus the recent-entries feed.
#[derive(Debug)]
pub struct FileLogController {
    recent: RecentLogs,
    file: Mutex<tracing_appender::rolling::RollingFileAppender>,
    directory: std::path::PathBuf,
}

impl FileLogController {
    /// Create the directory if needed and open the current file.
    pub fn open(cfg: &LoggingConfig) -> Result<Self, LoggingError> {
        let err = |source: Box<dyn std::error::Error + Send + Sync>| LoggingError {
            dir: cfg.directory.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&cfg.directory).map_err(|e| err(Box::new(e)))?;
        let rotation = match cfg.rotation {
            Rotation::Minutely => tracing_appender::rolling::Rotation::MINUTELY,
            Rotation::Hourly => tracing_appender::rolling::Rotation::HOURLY,
            Rotation::Daily => tracing_appender::rolling::Rotation::DAILY,
            Rotation::Never => tracing_appender::rolling::Rotation::NEVER,
        };
        let mut builder = tracing_appender::rolling::RollingFileAppender::builder()
            .rotation(rotation)
            .filename_prefix(cfg.file_prefix.clone())
            .filename_suffix("log");
        if let Some(n) = cfg.max_files {
            builder = builder.max_log_files(n.max(1));
        }
        let file = builder
            .build(&cfg.directory)
            .map_err(|e| err(Box::new(e)))?;
        Ok(Self {
            recent: RecentLogs::new(cfg.recent_capacity),
            file: Mutex::new(file),
            directory: cfg.directory.clone(),
        })
    }

    /// Where the files are.
    pub fn directory(&self) -> &std::path::Path {
        &self.directory
    }
}

impl LogController for FileLogController {
    fn record(&self, entry: LogEntry) {
        let entry = self.recent.push(entry);
        let line = format_line(&entry);
        let mut file = match self.file.lock() {
            Ok(f) => f,
            Err(p) => p.into_inner(),
        };
        // A full disk must not take the service down: the entry is still
        // in the recent feed, and stderr (when on) has it too.
        let _ = file.write_all(line.as_bytes());
    }

    fn recent(&self, query: &LogQuery) -> Vec<LogEntry> {
        self.recent.recent(query)
    }

    fn flush(&self) {
        if let Ok(mut f) = self.file.lock() {
            let _ = f.flush();
        }
    }
}

/// `[2026-11-22T08:00:00.123Z] [celery_cnc.ingest] [INFO] message k=v\n`.
pub fn format_line(e: &LogEntry) -> String {
    let ts = chrono::DateTime::from_timestamp_micros((e.time * 1e6) as i64)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| format!("{:.3}", e.time));
    let mut line = format!(
        "[{ts}] [{}] [{}] {}",
        e.component,
        e.level.as_str(),
        e.message
    );
    for (k, v) in &e.fields {
        let _ = write!(line, " {k}={v}");
    }
    line.push('\n');
    line
}

fn registry() -> &'static RwLock<Vec<Weak<dyn LogController>>> {
    static CONTROLLERS: OnceLock<RwLock<Vec<Weak<dyn LogController>>>> = OnceLock::new();
    CONTROLLERS.get_or_init(|| RwLock::new(Vec::new()))
}

/// Route celery-cnc's logs to `controller` (until it is dropped).
pub fn register(controller: &Arc<dyn LogController>) {
    let mut list = match registry().write() {
        Ok(l) => l,
        Err(p) => p.into_inner(),
    };
    list.retain(|w| w.strong_count() > 0);
    list.push(Arc::downgrade(controller));
}

/// The layer that feeds registered controllers; add it to your own
/// subscriber when your application installs one.
pub fn layer() -> ControllerLayer {
    ControllerLayer { _private: () }
}

/// See [`layer()`].
#[derive(Debug)]
pub struct ControllerLayer {
    _private: (),
}

/// Map a `tracing` target to a namespace: `celery_cnc::ingest` →
/// `celery_cnc.ingest`, `cnc_broker::redis` → `celery_cnc.broker.redis`;
/// other crates keep their target.
pub fn namespace(target: &str) -> String {
    if let Some(rest) = target.strip_prefix("cnc_") {
        return format!("celery_cnc.{}", rest.replace("::", "."));
    }
    target.replace("::", ".")
}

impl<S: tracing::Subscriber> Layer<S> for ControllerLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        let controllers: Vec<Arc<dyn LogController>> = match registry().read() {
            Ok(l) => l.iter().filter_map(Weak::upgrade).collect(),
            Err(p) => p.into_inner().iter().filter_map(Weak::upgrade).collect(),
        };
        if controllers.is_empty() {
            return;
        }
        let meta = event.metadata();
        let level = match *meta.level() {
            tracing::Level::TRACE => LogLevel::Trace,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::ERROR => LogLevel::Error,
        };
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        let entry = LogEntry {
            seq: 0,
            time: cnc_model::now(),
            level,
            component: namespace(meta.target()),
            message: visitor.message,
            fields: visitor.fields,
        };
        for c in controllers {
            c.record(entry.clone());
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: BTreeMap<String, String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields
                .insert(field.name().to_owned(), value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.insert(field.name().to_owned(), text);
        }
    }
}

/// Install the global subscriber: the controller layer (filtered by
/// `level`), plus stderr output when `stderr` is set. Returns `false` when
/// the host already installed a subscriber (then add [`layer()`] to it).
pub fn install(level: &str, stderr: bool) -> bool {
    let filter = || {
        tracing_subscriber::EnvFilter::try_new(level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let stderr_layer = stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter())
    });
    tracing_subscriber::registry()
        .with(layer().with_filter(filter()))
        .with(stderr_layer)
        .try_init()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_documented_format() {
        let mut fields = BTreeMap::new();
        fields.insert("broker".to_owned(), "redis://h/0".to_owned());
        let line = format_line(&LogEntry {
            seq: 1,
            time: 1_700_000_000.25,
            level: LogLevel::Warn,
            component: "celery_cnc.ingest".into(),
            message: "stream interrupted".into(),
            fields,
        });
        assert_eq!(
            line,
            "[2023-11-14T22:13:20.250Z] [celery_cnc.ingest] [WARN] stream interrupted broker=redis://h/0\n"
        );
    }

    #[test]
    fn namespaces() {
        assert_eq!(namespace("celery_cnc::ingest"), "celery_cnc.ingest");
        assert_eq!(namespace("cnc_broker::redis"), "celery_cnc.broker.redis");
        assert_eq!(namespace("lapin::channel"), "lapin.channel");
    }

    #[test]
    fn file_controller_writes_rotating_files_and_feeds_recent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LoggingConfig {
            directory: dir.path().join("logs"),
            ..LoggingConfig::default()
        };
        let c = FileLogController::open(&cfg).expect("open");
        c.record(LogEntry {
            seq: 0,
            time: cnc_model::now(),
            level: LogLevel::Info,
            component: "celery_cnc.store".into(),
            message: "opened".into(),
            fields: BTreeMap::new(),
        });
        c.flush();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("logs"))
            .expect("dir")
            .filter_map(Result::ok)
            .collect();
        assert_eq!(files.len(), 1);
        let name = files[0].file_name().to_string_lossy().into_owned();
        assert!(
            name.starts_with("celery_cnc.") && name.ends_with(".log"),
            "{name}"
        );
        let text = std::fs::read_to_string(files[0].path()).expect("read");
        assert!(text.contains("[celery_cnc.store] [INFO] opened"), "{text}");
        assert_eq!(c.recent(&LogQuery::default()).len(), 1);
    }
}
