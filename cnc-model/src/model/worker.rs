//! Workers and their online/offline history.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::Timestamp;

/// Heartbeat interval Celery uses when a worker does not say (`freq`).
pub const DEFAULT_HEARTBEAT_FREQ: f64 = 2.0;

/// Whether a worker is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStatus {
    /// Heartbeats arrive.
    Online,
    /// Sent `worker-offline`, or no heartbeat for `2 x freq` seconds.
    Offline,
}

impl WorkerStatus {
    /// `online` / `offline`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
        }
    }
}

/// A worker as folded from its events (plus inspect data stored by the service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    /// Node name (`w1@host`).
    pub hostname: String,
    /// Stored status. Use [`Worker::status_at`] for the status at a given time:
    /// a worker that silently died stays `Online` here until the service
    /// records its loss.
    pub status: WorkerStatus,
    /// Heartbeat interval in seconds.
    pub freq: f64,
    /// Timestamp of the newest heartbeat / online event (sender's clock).
    pub last_heartbeat: Option<Timestamp>,
    /// When celery-cnc first saw it.
    pub first_seen: Timestamp,
    /// When it last came online.
    pub online_since: Option<Timestamp>,
    /// When it last went offline.
    pub offline_since: Option<Timestamp>,
    /// Main process id.
    pub pid: Option<i64>,
    /// Tasks executing at the last heartbeat.
    pub active: u64,
    /// Tasks processed, from the last heartbeat.
    pub processed: u64,
    /// Load averages from the last heartbeat.
    pub loadavg: Option<Vec<f64>>,
    /// Software identity.
    pub sw_ident: Option<String>,
    /// Software version.
    pub sw_ver: Option<String>,
    /// Operating system.
    pub sw_sys: Option<String>,
    /// Hours west of UTC.
    pub utcoffset: Option<f64>,
    /// Highest Lamport clock seen.
    pub clock: u64,
    /// Results of inspect calls (stats, active_queues, registered, conf) as
    /// stored by the service; `None` until first inspected.
    pub info: Option<Value>,
    /// When `info` was last refreshed.
    pub info_updated_at: Option<Timestamp>,
}

impl Worker {
    /// A worker first seen at `first_seen`, offline until an event says otherwise.
    pub fn new(hostname: impl Into<String>, first_seen: Timestamp) -> Self {
        Self {
            hostname: hostname.into(),
            status: WorkerStatus::Offline,
            freq: DEFAULT_HEARTBEAT_FREQ,
            last_heartbeat: None,
            first_seen,
            online_since: None,
            offline_since: None,
            pid: None,
            active: 0,
            processed: 0,
            loadavg: None,
            sw_ident: None,
            sw_ver: None,
            sw_sys: None,
            utcoffset: None,
            clock: 0,
            info: None,
            info_updated_at: None,
        }
    }

    /// Seconds without a heartbeat after which the worker counts as offline:
    /// `2 x freq`, as Celery's own state machine does.
    pub fn expiry_window(&self) -> f64 {
        let freq = if self.freq.is_finite() && self.freq > 0.0 {
            self.freq
        } else {
            DEFAULT_HEARTBEAT_FREQ
        };
        2.0 * freq
    }

    /// Status at time `now`: stored `Offline` stays offline; stored `Online`
    /// becomes offline once the last heartbeat is older than the expiry window.
    pub fn status_at(&self, now: Timestamp) -> WorkerStatus {
        match (self.status, self.last_heartbeat) {
            (WorkerStatus::Online, Some(hb)) if now > hb + self.expiry_window() => {
                WorkerStatus::Offline
            }
            (status, _) => status,
        }
    }
}

/// One online/offline transition of a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatusChange {
    /// Node name.
    pub hostname: String,
    /// New status.
    pub status: WorkerStatus,
    /// When (sender's clock for online/offline; the detection time for a loss).
    pub timestamp: Timestamp,
    /// What caused it: `worker-online`, `worker-heartbeat` (first heartbeat
    /// after being offline), `worker-offline`, or `worker-lost`.
    pub reason: String,
}
