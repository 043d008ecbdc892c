//! Where the service's own logs go: the [`LogController`] trait.
//!
//! The orchestrator routes every `tracing` event of celery-cnc (targets
//! `celery_cnc::<component>`) to one controller as a [`LogEntry`]. The
//! default controller (in `cnc-core`) writes rotated files and keeps a
//! recent-entries feed; users can plug their own, e.g. to ship logs
//! elsewhere. [`RecentLogs`] is the in-memory feed any controller can
//! embed.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::model::Timestamp;

/// Severity, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    /// Very verbose.
    Trace,
    /// Verbose.
    Debug,
    /// Life events: start, stop, batches written.
    Info,
    /// Something went wrong and was handled.
    Warn,
    /// Something went wrong and was not.
    Error,
}

impl LogLevel {
    /// `INFO`, `WARN`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "TRACE",
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "TRACE" => Self::Trace,
            "DEBUG" => Self::Debug,
            "INFO" => Self::Info,
            "WARN" | "WARNING" => Self::Warn,
            "ERROR" => Self::Error,
            _ => return Err(format!("unknown log level `{s}`")),
        })
    }
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Assigned by the controller: increases by one per entry.
    pub seq: u64,
    /// When (epoch seconds).
    pub time: Timestamp,
    /// Severity.
    pub level: LogLevel,
    /// Namespace: `celery_cnc.<component>`.
    pub component: String,
    /// The message.
    pub message: String,
    /// Structured fields (`broker`, `error`, …), already redacted.
    pub fields: BTreeMap<String, String>,
}

/// Which recent entries to return.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogQuery {
    /// Only entries with a larger `seq` (for polling and live tails).
    pub after_seq: Option<u64>,
    /// Only this severity or worse.
    pub min_level: Option<LogLevel>,
    /// Only this namespace (`celery_cnc.ingest`) or its children.
    pub component: Option<String>,
    /// Only entries whose message or fields contain this (case-insensitive).
    pub contains: Option<String>,
    /// At most this many, newest last. 0 means 200.
    pub limit: usize,
}

impl LogQuery {
    /// Whether `e` passes the filters (not the limit).
    pub fn matches(&self, e: &LogEntry) -> bool {
        if self.after_seq.is_some_and(|s| e.seq <= s) {
            return false;
        }
        if self.min_level.is_some_and(|l| e.level < l) {
            return false;
        }
        if let Some(c) = &self.component
            && !(e.component == *c
                || e.component
                    .strip_prefix(c.as_str())
                    .is_some_and(|r| r.starts_with('.')))
        {
            return false;
        }
        if let Some(needle) = &self.contains {
            let needle = needle.to_lowercase();
            let hit = e.message.to_lowercase().contains(&needle)
                || e.fields
                    .values()
                    .any(|v| v.to_lowercase().contains(&needle));
            if !hit {
                return false;
            }
        }
        true
    }
}

/// Where the service's logs go.
pub trait LogController: Send + Sync + Debug + 'static {
    /// Record one entry. Must not block for long: it is called from the
    /// logging path of every component. `entry.seq` is ignored; the
    /// controller numbers entries.
    fn record(&self, entry: LogEntry);

    /// Recent entries for the Logs page, oldest first.
    fn recent(&self, query: &LogQuery) -> Vec<LogEntry>;

    /// Write out anything buffered (called at shutdown).
    fn flush(&self) {}
}

/// A bounded in-memory feed of recent entries; a [`LogController`] on its
/// own (for tests and embedding) and a part of richer ones.
#[derive(Debug)]
pub struct RecentLogs {
    inner: Mutex<(u64, VecDeque<LogEntry>)>,
    capacity: usize,
}

impl RecentLogs {
    /// Keep the newest `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new((0, VecDeque::with_capacity(capacity.min(4096)))),
            capacity: capacity.max(1),
        }
    }

    /// Append, numbering the entry; returns it as stored.
    pub fn push(&self, mut entry: LogEntry) -> LogEntry {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.0 += 1;
        entry.seq = g.0;
        if g.1.len() == self.capacity {
            g.1.pop_front();
        }
        g.1.push_back(entry.clone());
        entry
    }
}

impl LogController for RecentLogs {
    fn record(&self, entry: LogEntry) {
        self.push(entry);
    }

    fn recent(&self, query: &LogQuery) -> Vec<LogEntry> {
        let limit = if query.limit == 0 { 200 } else { query.limit };
        let g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut out: Vec<LogEntry> =
            g.1.iter()
                .rev()
                .filter(|e| query.matches(e))
                .take(limit)
                .cloned()
                .collect();
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(level: LogLevel, component: &str, message: &str) -> LogEntry {
        LogEntry {
            seq: 0,
            time: 1.0,
            level,
            component: component.into(),
            message: message.into(),
            fields: BTreeMap::new(),
        }
    }

    #[test]
    fn recent_is_bounded_numbered_and_filtered() {
        let logs = RecentLogs::new(3);
        logs.record(entry(LogLevel::Info, "celery_cnc.ingest", "one"));
        logs.record(entry(LogLevel::Warn, "celery_cnc.ingest", "two"));
        logs.record(entry(LogLevel::Info, "celery_cnc.web", "three"));
        logs.record(entry(LogLevel::Error, "celery_cnc.ingestx", "four"));
        let all = logs.recent(&LogQuery::default());
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [2, 3, 4],
            "oldest dropped"
        );
        let q = LogQuery {
            component: Some("celery_cnc.ingest".into()),
            ..Default::default()
        };
        assert_eq!(logs.recent(&q).len(), 1, "prefix must end at a dot");
        let q = LogQuery {
            min_level: Some(LogLevel::Warn),
            after_seq: Some(2),
            ..Default::default()
        };
        assert_eq!(logs.recent(&q)[0].message, "four");
        let q = LogQuery {
            contains: Some("THREE".into()),
            ..Default::default()
        };
        assert_eq!(logs.recent(&q).len(), 1);
    }
}
