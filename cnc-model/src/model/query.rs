//! Task list queries: filters, sorting and paging.

use serde::{Deserialize, Serialize};

use super::event::Timestamp;
use super::task::{Task, TaskState};

/// A closed-open time range `[from, to)` in epoch seconds; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeRange {
    /// Inclusive lower bound.
    pub from: Option<Timestamp>,
    /// Exclusive upper bound.
    pub to: Option<Timestamp>,
}

impl TimeRange {
    /// `[from, to)`.
    pub fn between(from: Timestamp, to: Timestamp) -> Self {
        Self {
            from: Some(from),
            to: Some(to),
        }
    }

    /// Everything at or after `from`.
    pub fn since(from: Timestamp) -> Self {
        Self {
            from: Some(from),
            to: None,
        }
    }

    /// True when `t` lies in the range.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|to| t < to)
    }
}

/// Filters of the task list. Every set field must match (AND); an empty
/// filter matches every task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFilter {
    /// Any of these states (empty = any state).
    #[serde(default)]
    pub states: Vec<TaskState>,
    /// Exact worker hostname.
    #[serde(default)]
    pub worker: Option<String>,
    /// Task name, matched as a case-insensitive substring ("email" finds
    /// `app.tasks.send_email`).
    #[serde(default)]
    pub name: Option<String>,
    /// On the task's `created_at` (first event seen).
    #[serde(default)]
    pub time: Option<TimeRange>,
    /// Fuzzy text: a case-insensitive substring of the name, args, kwargs,
    /// result or exception. Three characters or more use the full-text index.
    #[serde(default)]
    pub search: Option<String>,
    /// Exact root id (a whole workflow).
    #[serde(default)]
    pub root_id: Option<String>,
    /// Exact group id.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Exact parent id (direct children of a task).
    #[serde(default)]
    pub parent_id: Option<String>,
}

impl TaskFilter {
    /// True when `task` passes every set filter. The reference semantics that
    /// every adapter must reproduce (the in-memory store uses it directly).
    pub fn matches(&self, task: &Task) -> bool {
        if !self.states.is_empty() && !self.states.contains(&task.state) {
            return false;
        }
        if let Some(w) = &self.worker {
            if task.worker.as_deref() != Some(w.as_str()) {
                return false;
            }
        }
        if let Some(n) = &self.name {
            let needle = n.to_lowercase();
            if !task
                .name
                .as_deref()
                .is_some_and(|name| name.to_lowercase().contains(&needle))
            {
                return false;
            }
        }
        if let Some(range) = &self.time {
            if !range.contains(task.created_at) {
                return false;
            }
        }
        if let Some(s) = &self.search {
            let needle = s.to_lowercase();
            if !needle.is_empty() && !task.search_text().to_lowercase().contains(&needle) {
                return false;
            }
        }
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| have.as_deref() == Some(w.as_str()))
        };
        eq(&self.root_id, &task.root_id)
            && eq(&self.group_id, &task.group_id)
            && eq(&self.parent_id, &task.parent_id)
    }
}

/// What to sort the task list by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskSortField {
    /// Order of first sight by celery-cnc (the default, "newest first"). The
    /// cheapest order: every index ends in it.
    #[default]
    Seen,
    /// `created_at` (first event timestamp).
    Created,
    /// `received_at`.
    Received,
    /// `started_at`.
    Started,
    /// `runtime`.
    Runtime,
    /// Task name.
    Name,
}

/// Sort direction and field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSort {
    /// The field.
    pub field: TaskSortField,
    /// Descending (newest / largest first) when true.
    pub descending: bool,
}

impl Default for TaskSort {
    fn default() -> Self {
        Self {
            field: TaskSortField::Seen,
            descending: true,
        }
    }
}

/// A task list query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskQuery {
    /// Filters.
    pub filter: TaskFilter,
    /// Order.
    pub sort: TaskSort,
    /// Page size (adapters cap it at [`TaskQuery::MAX_LIMIT`]).
    pub limit: u32,
    /// Rows to skip (Flower-style paging). Prefer `cursor` for deep pages.
    pub offset: u64,
    /// Keyset cursor from a previous page's `next_cursor`: continue after it.
    /// Only valid with the default sort; it makes deep pages as fast as the first.
    pub cursor: Option<String>,
}

impl Default for TaskQuery {
    fn default() -> Self {
        Self {
            filter: TaskFilter::default(),
            sort: TaskSort::default(),
            limit: 100,
            offset: 0,
            cursor: None,
        }
    }
}

impl TaskQuery {
    /// Largest page an adapter returns.
    pub const MAX_LIMIT: u32 = 10_000;

    /// The newest `limit` tasks matching `filter`.
    pub fn newest(filter: TaskFilter, limit: u32) -> Self {
        Self {
            filter,
            limit,
            ..Self::default()
        }
    }

    /// `limit`, capped.
    pub fn effective_limit(&self) -> u32 {
        self.limit.min(Self::MAX_LIMIT)
    }
}

/// One page of the task list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    /// The tasks, in the requested order.
    pub tasks: Vec<Task>,
    /// Pass as `cursor` to get the next page (default sort only); `None` at the end.
    pub next_cursor: Option<String>,
}
