//! Tasks: the state celery-cnc folds out of task events.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::{TaskEventKind, Timestamp};

/// A task's state, with Celery's names (`celery.states`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskState {
    /// Sent by a client, not yet received by a worker.
    Pending,
    /// Received by a worker (maybe waiting for an ETA).
    Received,
    /// Executing.
    Started,
    /// Finished with a return value.
    Success,
    /// Finished with an exception.
    Failure,
    /// Raised `Retry`; will be received again.
    Retry,
    /// Revoked, terminated or expired.
    Revoked,
    /// Rejected by the worker.
    Rejected,
}

impl TaskState {
    /// Every state, in display order.
    pub const ALL: [TaskState; 8] = [
        Self::Pending,
        Self::Received,
        Self::Started,
        Self::Success,
        Self::Failure,
        Self::Retry,
        Self::Revoked,
        Self::Rejected,
    ];

    /// Celery's name: `SUCCESS`, `FAILURE`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Received => "RECEIVED",
            Self::Started => "STARTED",
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
            Self::Retry => "RETRY",
            Self::Revoked => "REVOKED",
            Self::Rejected => "REJECTED",
        }
    }

    /// Ready states are final: the task will not run again by itself
    /// (`celery.states.READY_STATES` plus REJECTED).
    pub fn is_ready(self) -> bool {
        matches!(
            self,
            Self::Success | Self::Failure | Self::Revoked | Self::Rejected
        )
    }

    /// The state a task event moves a task to, if any.
    pub fn from_event(kind: &TaskEventKind) -> Option<Self> {
        Some(match kind {
            TaskEventKind::Sent => Self::Pending,
            TaskEventKind::Received => Self::Received,
            TaskEventKind::Started => Self::Started,
            TaskEventKind::Succeeded => Self::Success,
            TaskEventKind::Failed => Self::Failure,
            TaskEventKind::Retried => Self::Retry,
            TaskEventKind::Revoked => Self::Revoked,
            TaskEventKind::Rejected => Self::Rejected,
            TaskEventKind::Other(_) => return None,
        })
    }

    /// Celery's precedence rank (`celery.states.PRECEDENCE`): lower ranks win.
    /// SUCCESS 0, FAILURE 1, (unknown 2), REVOKED 3, STARTED 4, RECEIVED 5,
    /// REJECTED 6, RETRY 7, PENDING 8.
    pub fn precedence(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Revoked => 3,
            Self::Started => 4,
            Self::Received => 5,
            Self::Rejected => 6,
            Self::Retry => 7,
            Self::Pending => 8,
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for [`TaskState::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown task state {0:?} (expected one of PENDING RECEIVED STARTED SUCCESS FAILURE RETRY REVOKED REJECTED)"
)]
pub struct UnknownState(pub String);

impl FromStr for TaskState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == upper)
            .ok_or(UnknownState(s.to_owned()))
    }
}

/// A task as folded from its events. Field names follow Celery / Flower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Task id.
    pub id: String,
    /// Registered name, once a `task-sent`/`task-received` was seen.
    pub name: Option<String>,
    /// Current state (see [`crate::fold`] for the precedence rules).
    pub state: TaskState,
    /// Worker that received / ran it.
    pub worker: Option<String>,
    /// Python repr of the positional args.
    pub args: Option<String>,
    /// Python repr of the keyword args.
    pub kwargs: Option<String>,
    /// Python repr of the result.
    pub result: Option<String>,
    /// Python repr of the last exception.
    pub exception: Option<String>,
    /// Traceback of the last failure or retry.
    pub traceback: Option<String>,
    /// Retries so far: the highest of the delivery's `retries` field and the
    /// number of distinct `task-retried` events seen.
    pub retries: u64,
    /// First task of the workflow.
    pub root_id: Option<String>,
    /// Task that published this one.
    pub parent_id: Option<String>,
    /// Group (or chord header group) id, when known.
    pub group_id: Option<String>,
    /// Chord callback id, when this task is a chord header member and it is known.
    pub chord_id: Option<String>,
    /// ETA as sent (ISO-8601).
    pub eta: Option<String>,
    /// Expiry as sent (ISO-8601).
    pub expires: Option<String>,
    /// Queue (from `task-sent`).
    pub queue: Option<String>,
    /// Exchange (from `task-sent`).
    pub exchange: Option<String>,
    /// Routing key (from `task-sent`).
    pub routing_key: Option<String>,
    /// Client that sent it (`task-sent` hostname).
    pub client: Option<String>,
    /// Earliest event timestamp seen for this task: the "created" time used by
    /// date-range filters.
    pub created_at: Timestamp,
    /// Timestamp of the event that set the current state.
    pub updated_at: Timestamp,
    /// `task-sent` time.
    pub sent_at: Option<Timestamp>,
    /// `task-received` time (the latest delivery).
    pub received_at: Option<Timestamp>,
    /// `task-started` time (the latest run).
    pub started_at: Option<Timestamp>,
    /// `task-succeeded` time.
    pub succeeded_at: Option<Timestamp>,
    /// `task-failed` time.
    pub failed_at: Option<Timestamp>,
    /// Latest `task-retried` time.
    pub retried_at: Option<Timestamp>,
    /// `task-revoked` time.
    pub revoked_at: Option<Timestamp>,
    /// `task-rejected` time.
    pub rejected_at: Option<Timestamp>,
    /// Seconds the task ran (`task-succeeded` `runtime`).
    pub runtime: Option<f64>,
    /// Distinct `task-retried` events folded in (feeds `retries`).
    pub retried_events: u64,
    /// Revoked by termination of the running process.
    pub terminated: Option<bool>,
    /// Signal used to terminate.
    pub signum: Option<i64>,
    /// Revoked because it expired.
    pub expired: Option<bool>,
    /// Rejected and requeued.
    pub requeue: Option<bool>,
    /// Highest Lamport clock seen.
    pub clock: u64,
    /// Fields of custom events and unknown fields, merged (last wins).
    pub extra: Option<Value>,
}

impl Task {
    /// An empty task in state PENDING, first seen at `created_at`.
    pub fn new(id: impl Into<String>, created_at: Timestamp) -> Self {
        Self {
            id: id.into(),
            name: None,
            state: TaskState::Pending,
            worker: None,
            args: None,
            kwargs: None,
            result: None,
            exception: None,
            traceback: None,
            retries: 0,
            root_id: None,
            parent_id: None,
            group_id: None,
            chord_id: None,
            eta: None,
            expires: None,
            queue: None,
            exchange: None,
            routing_key: None,
            client: None,
            created_at,
            updated_at: created_at,
            sent_at: None,
            received_at: None,
            started_at: None,
            succeeded_at: None,
            failed_at: None,
            retried_at: None,
            revoked_at: None,
            rejected_at: None,
            runtime: None,
            retried_events: 0,
            terminated: None,
            signum: None,
            expired: None,
            requeue: None,
            clock: 0,
            extra: None,
        }
    }

    /// When the task reached a ready state, if it has.
    pub fn finished_at(&self) -> Option<Timestamp> {
        match self.state {
            TaskState::Success => self.succeeded_at,
            TaskState::Failure => self.failed_at,
            TaskState::Revoked => self.revoked_at,
            TaskState::Rejected => self.rejected_at,
            _ => None,
        }
    }

    /// The text the fuzzy search looks in: name, args, kwargs, result, exception.
    pub fn search_text(&self) -> String {
        let parts = [
            self.name.as_deref(),
            self.args.as_deref(),
            self.kwargs.as_deref(),
            self.result.as_deref(),
            self.exception.as_deref(),
        ];
        let mut out = String::new();
        for p in parts.into_iter().flatten() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(p);
        }
        out
    }
}

/// One stored task event, as returned by `DbController::task_events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Task id.
    pub task_id: String,
    /// Event type (`task-started`, ...).
    pub kind: String,
    /// Sender's timestamp.
    pub timestamp: Timestamp,
    /// Sender.
    pub hostname: Option<String>,
    /// Sender's clock.
    pub clock: u64,
    /// The event's other fields as JSON (args/kwargs/name omitted: they are on
    /// the task).
    pub fields: Value,
}

/// How two tasks are related.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationKind {
    /// The root task of the workflow itself.
    Root,
    /// Published by its parent (chain step, callback, subtask).
    Child,
}

/// One node of a workflow (everything sharing a `root_id`), with its edges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRelation {
    /// Task id.
    pub task_id: String,
    /// Task name.
    pub name: Option<String>,
    /// Current state.
    pub state: TaskState,
    /// Root of the workflow.
    pub root_id: Option<String>,
    /// Parent (publisher) id.
    pub parent_id: Option<String>,
    /// Group id.
    pub group_id: Option<String>,
    /// Chord callback id.
    pub chord_id: Option<String>,
    /// Root or child.
    pub kind: RelationKind,
    /// First-seen time, for ordering.
    pub created_at: Timestamp,
}

impl TaskRelation {
    /// The relation view of a task.
    pub fn of(task: &Task) -> Self {
        let is_root = task.root_id.as_deref().is_none_or(|r| r == task.id);
        Self {
            task_id: task.id.clone(),
            name: task.name.clone(),
            state: task.state,
            root_id: task.root_id.clone(),
            parent_id: task.parent_id.clone(),
            group_id: task.group_id.clone(),
            chord_id: task.chord_id.clone(),
            kind: if is_root {
                RelationKind::Root
            } else {
                RelationKind::Child
            },
            created_at: task.created_at,
        }
    }
}
