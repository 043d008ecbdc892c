//! Beat schedules: periodic tasks celery-cnc sends on its own.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::Timestamp;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ScheduleSpec {
    /// Every `every` seconds.
    Interval {
        /// Period in seconds (> 0).
        every: f64,
    },
    /// Celery crontab fields (`*`, lists, ranges, steps), in `timezone` (UTC by default).
    Crontab {
        /// Minute field.
        minute: String,
        /// Hour field.
        hour: String,
        /// Day-of-week field (0 or 7 = Sunday, or names).
        day_of_week: String,
        /// Day-of-month field.
        day_of_month: String,
        /// Month field.
        month_of_year: String,
        /// IANA zone name; None = UTC.
        #[serde(default)]
        timezone: Option<String>,
    },
    /// Once, at a point in time.
    Clocked {
        /// When, epoch seconds.
        at: Timestamp,
    },
}

/// A periodic task definition (the store keeps them; the beat component runs them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Unique name.
    pub name: String,
    /// Registered task name to send.
    pub task: String,
    /// When it fires.
    pub spec: ScheduleSpec,
    /// Positional args (JSON array).
    pub args: Value,
    /// Keyword args (JSON object).
    pub kwargs: Value,
    /// Target queue; None = the task's default.
    pub queue: Option<String>,
    /// Message priority.
    pub priority: Option<u8>,
    /// Seconds after sending that the message expires.
    pub expires: Option<f64>,
    /// Disabled schedules are kept but never fire.
    pub enabled: bool,
    /// Last time it fired.
    pub last_run_at: Option<Timestamp>,
    /// How often it fired.
    pub total_run_count: u64,
    /// Free text.
    pub description: Option<String>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

impl Schedule {
    /// An enabled schedule with empty args.
    pub fn new(
        name: impl Into<String>,
        task: impl Into<String>,
        spec: ScheduleSpec,
        now: Timestamp,
    ) -> Self {
        Self {
            name: name.into(),
            task: task.into(),
            spec,
            args: Value::Array(Vec::new()),
            kwargs: Value::Object(serde_json::Map::new()),
            queue: None,
            priority: None,
            expires: None,
            enabled: true,
            last_run_at: None,
            total_run_count: 0,
            description: None,
            created_at: now,
            updated_at: now,
        }
    }
}
