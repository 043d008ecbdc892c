//! Aggregates for dashboards and charts.

use serde::{Deserialize, Serialize};

use super::event::Timestamp;
use super::query::TimeRange;
use super::task::TaskState;

/// Scope of a statistics query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Exact task name (None = all tasks).
    #[serde(default)]
    pub name: Option<String>,
    /// Exact worker (None = all workers).
    #[serde(default)]
    pub worker: Option<String>,
    /// On the task's finish time for runtime stats and throughput, on
    /// `created_at` for distributions.
    #[serde(default)]
    pub time: Option<TimeRange>,
}

/// Runtime statistics of finished tasks (those with a runtime), exact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeStats {
    /// Tasks with a runtime in scope.
    pub count: u64,
    /// Shortest runtime, seconds.
    pub min: Option<f64>,
    /// Longest runtime.
    pub max: Option<f64>,
    /// Mean runtime.
    pub avg: Option<f64>,
    /// Median (nearest-rank).
    pub p50: Option<f64>,
    /// 95th percentile (nearest-rank).
    pub p95: Option<f64>,
    /// 99th percentile (nearest-rank).
    pub p99: Option<f64>,
}

impl RuntimeStats {
    /// Exact statistics from runtimes (any order). Percentiles use the
    /// nearest-rank method: the value at rank `ceil(p/100 * n)` of the sorted
    /// list, so every adapter (SQL or not) can compute the same numbers.
    pub fn from_runtimes(mut values: Vec<f64>) -> Self {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        Self::from_sorted(&values)
    }

    /// Like [`RuntimeStats::from_runtimes`] for an already ascending slice.
    pub fn from_sorted(sorted: &[f64]) -> Self {
        let n = sorted.len();
        if n == 0 {
            return Self::default();
        }
        let sum: f64 = sorted.iter().sum();
        let pick = |p: f64| sorted[Self::rank(p, n as u64) as usize - 1];
        Self {
            count: n as u64,
            min: Some(sorted[0]),
            max: Some(sorted[n - 1]),
            avg: Some(sum / n as f64),
            p50: Some(pick(50.0)),
            p95: Some(pick(95.0)),
            p99: Some(pick(99.0)),
        }
    }

    /// Nearest rank (1-based) of percentile `p` among `n` values.
    pub fn rank(p: f64, n: u64) -> u64 {
        ((p / 100.0 * n as f64).ceil() as u64).clamp(1, n.max(1))
    }
}

/// Query for throughput buckets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputQuery {
    /// Scope (name, worker).
    pub scope: StatsQuery,
    /// Window start (inclusive).
    pub from: Timestamp,
    /// Window end (exclusive).
    pub to: Timestamp,
    /// Bucket width in seconds (at least 60: stores aggregate per minute).
    pub bucket_seconds: u64,
}

/// Tasks that reached a ready state in one bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThroughputBucket {
    /// Bucket start, aligned to a multiple of the bucket width since the epoch.
    pub start: Timestamp,
    /// Finished with SUCCESS.
    pub succeeded: u64,
    /// Finished with FAILURE.
    pub failed: u64,
    /// Revoked.
    pub revoked: u64,
    /// Rejected.
    pub rejected: u64,
    /// Retries recorded in the bucket.
    pub retried: u64,
}

impl ThroughputBucket {
    /// Tasks that finished in the bucket (every ready state).
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.revoked + self.rejected
    }
}

/// Count of tasks per state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateCount {
    /// The state.
    pub state: TaskState,
    /// Tasks in it.
    pub count: u64,
}

/// Count of tasks per name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NameCount {
    /// Task name.
    pub name: String,
    /// Tasks with it.
    pub count: u64,
}

/// Finished tasks by weekday x hour (UTC): `cells[weekday][hour]`, weekday 0 = Monday.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heatmap {
    /// 7 rows of 24 counts.
    pub cells: [[u64; 24]; 7],
}

impl Heatmap {
    /// The (weekday, hour) cell of a UTC timestamp; weekday 0 = Monday.
    pub fn cell_of(t: Timestamp) -> (usize, usize) {
        let secs = t.floor() as i64;
        let days = secs.div_euclid(86_400);
        let hour = (secs.rem_euclid(86_400) / 3600) as usize;
        // 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
        let weekday = (days + 3).rem_euclid(7) as usize;
        (weekday, hour)
    }

    /// Total of all cells.
    pub fn total(&self) -> u64 {
        self.cells.iter().flatten().sum()
    }
}
