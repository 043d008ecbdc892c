//! The fold from Celery events to task and worker state.
//!
//! This is the one place that decides what a task's state is; every store
//! adapter calls it, so all of them agree. The rules follow Celery's own
//! `celery.events.state` and improve on it where Celery is known to go wrong
//! with events that arrive late or out of order:
//!
//! * **Final states win over late progress.** SUCCESS, FAILURE and REVOKED
//!   are never overwritten by a late `task-sent`, `task-received`,
//!   `task-started`, `task-retried` or `task-rejected`. Between two final
//!   states Celery's precedence decides (SUCCESS > FAILURE > REVOKED).
//! * **Forward progress uses Celery's precedence** (STARTED > RECEIVED >
//!   PENDING), not timestamps, so a client whose clock runs ahead of the
//!   worker's cannot keep a task PENDING.
//! * **Retry and reject cycles use time.** Celery lets RETRY overwrite
//!   anything, so a late `task-retried` can turn a SUCCESS back into RETRY.
//!   Here RETRY/REJECTED replace (or are replaced by) another non-final
//!   state only when the event is not older than the current state, or when
//!   a `task-received` carries a higher `retries` count (a redelivery).
//! * **Nothing is lost on a merge.** An event that does not set the state
//!   still records its own timestamp (`received_at`, ...), fills descriptive
//!   fields that are still empty (name, args, root id...), and counts.
//!
//! De-duplication is the caller's job (stores keep an event key, see
//! [`crate::model::TaskEvent::dedup_key`]): folding the same `task-retried`
//! twice would count two retries.

use serde_json::Value;

use crate::model::{
    Task, TaskEvent, TaskEventKind, TaskState, Timestamp, Worker, WorkerEvent, WorkerEventKind,
    WorkerStatus, WorkerStatusChange,
};

/// What folding one event changed, for write planning and live updates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskChange {
    /// The task did not exist before this event.
    pub created: bool,
    /// The state moved.
    pub state_changed: bool,
    /// The state moved into a ready (final) state.
    pub finished: bool,
    /// Searchable text (name, args, kwargs, result, exception) changed.
    pub text_changed: bool,
}

/// A new task built from its first event.
pub fn task_from_event(event: &TaskEvent) -> (Task, TaskChange) {
    let mut task = Task::new(event.uuid.clone(), event.timestamp);
    task.updated_at = f64::NEG_INFINITY;
    let mut change = apply_task_event(&mut task, event, true);
    if task.updated_at == f64::NEG_INFINITY {
        task.updated_at = event.timestamp;
    }
    change.created = true;
    (task, change)
}

fn fill(slot: &mut Option<String>, value: &Option<String>) -> bool {
    if slot.is_none() && value.is_some() {
        slot.clone_from(value);
        true
    } else {
        false
    }
}

fn set(slot: &mut Option<String>, value: &Option<String>) -> bool {
    if value.is_some() && slot != value {
        slot.clone_from(value);
        true
    } else {
        false
    }
}

fn latest(slot: &mut Option<Timestamp>, t: Timestamp) {
    if slot.is_none_or(|old| t > old) {
        *slot = Some(t);
    }
}

fn is_final(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Success | TaskState::Failure | TaskState::Revoked
    )
}

fn is_cycle(state: TaskState) -> bool {
    matches!(state, TaskState::Retry | TaskState::Rejected)
}

/// Does an event moving to `new` at `ts` replace the current state?
fn overrides(
    task: &Task,
    new: TaskState,
    event: &TaskEvent,
    fresh: bool,
    prior_retries: u64,
) -> bool {
    if fresh {
        return true;
    }
    let cur = task.state;
    // A delivery with a higher retry count than we knew of is a redelivery
    // after a retry, whatever the clocks say.
    let r = event.retries.unwrap_or(0);
    let redelivery = new == TaskState::Received
        && r > 0
        && (r > prior_retries || (cur == TaskState::Retry && r >= task.retried_events));
    match (is_final(cur), is_final(new)) {
        (false, true) => true,
        (true, true) => new.precedence() <= cur.precedence(),
        (true, false) => false,
        (false, false) => {
            if redelivery {
                true
            } else if is_cycle(new) || is_cycle(cur) {
                event.timestamp >= task.updated_at
            } else {
                new.precedence() <= cur.precedence()
            }
        }
    }
}

/// Fold one task event into `task`. `fresh` is true for the task's first event.
///
/// Returns what changed. The caller must not fold the same event twice.
pub fn apply_task_event(task: &mut Task, event: &TaskEvent, fresh: bool) -> TaskChange {
    let mut change = TaskChange::default();
    let ts = event.timestamp;
    if ts > 0.0 && (ts < task.created_at || task.created_at <= 0.0) {
        task.created_at = ts;
    }
    task.clock = task.clock.max(event.clock);

    // Per-state timestamps and counters are kept whatever the precedence says.
    match &event.kind {
        TaskEventKind::Sent => latest(&mut task.sent_at, ts),
        TaskEventKind::Received => latest(&mut task.received_at, ts),
        TaskEventKind::Started => latest(&mut task.started_at, ts),
        TaskEventKind::Succeeded => latest(&mut task.succeeded_at, ts),
        TaskEventKind::Failed => latest(&mut task.failed_at, ts),
        TaskEventKind::Retried => {
            latest(&mut task.retried_at, ts);
            task.retried_events += 1;
        }
        TaskEventKind::Revoked => latest(&mut task.revoked_at, ts),
        TaskEventKind::Rejected => latest(&mut task.rejected_at, ts),
        TaskEventKind::Other(_) => {}
    }
    let prior_retries = task.retries;
    let retries = event.retries.unwrap_or(0).max(task.retried_events);
    task.retries = task.retries.max(retries);

    // Descriptive fields: filled when empty, whatever the precedence.
    for (slot, value) in [
        (&mut task.name, &event.name),
        (&mut task.args, &event.args),
        (&mut task.kwargs, &event.kwargs),
    ] {
        change.text_changed |= fill(slot, value);
    }
    for (slot, value) in [
        (&mut task.root_id, &event.root_id),
        (&mut task.parent_id, &event.parent_id),
        (&mut task.group_id, &event.group_id),
        (&mut task.chord_id, &event.chord_id),
        (&mut task.eta, &event.eta),
        (&mut task.expires, &event.expires),
        (&mut task.queue, &event.queue),
        (&mut task.exchange, &event.exchange),
        (&mut task.routing_key, &event.routing_key),
    ] {
        fill(slot, value);
    }
    if event.is_from_client() {
        fill(&mut task.client, &event.hostname);
    } else if !matches!(event.kind, TaskEventKind::Other(_)) {
        fill(&mut task.worker, &event.hostname);
    }
    if !event.extra.is_empty() {
        let mut merged = match task.extra.take() {
            Some(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        for (k, v) in &event.extra {
            merged.insert(k.clone(), v.clone());
        }
        task.extra = Some(Value::Object(merged));
    }

    let Some(new_state) = TaskState::from_event(&event.kind) else {
        return change;
    };
    if !overrides(task, new_state, event, fresh, prior_retries) {
        return change;
    }

    // The event sets the state: its own fields win.
    if task.state != new_state || fresh {
        change.state_changed = true;
        change.finished = new_state.is_ready() && (fresh || !task.state.is_ready());
    }
    task.state = new_state;
    task.updated_at = ts;
    if !event.is_from_client() {
        set(&mut task.worker, &event.hostname);
    }
    match &event.kind {
        TaskEventKind::Succeeded => {
            change.text_changed |= set(&mut task.result, &event.result);
            if event.runtime.is_some() {
                task.runtime = event.runtime;
            }
        }
        TaskEventKind::Failed | TaskEventKind::Retried => {
            change.text_changed |= set(&mut task.exception, &event.exception);
            set(&mut task.traceback, &event.traceback);
        }
        TaskEventKind::Revoked => {
            task.terminated = event.terminated.or(task.terminated);
            task.signum = event.signum.or(task.signum);
            task.expired = event.expired.or(task.expired);
        }
        TaskEventKind::Rejected => task.requeue = event.requeue.or(task.requeue),
        TaskEventKind::Received => {
            for (slot, value) in [
                (&mut task.eta, &event.eta),
                (&mut task.expires, &event.expires),
            ] {
                set(slot, value);
            }
        }
        _ => {}
    }
    change
}

/// Fold a sequence of events for one task, starting from `task` (None = unknown).
/// Convenience for tests and simple adapters.
pub fn fold_task<'a>(
    mut task: Option<Task>,
    events: impl IntoIterator<Item = &'a TaskEvent>,
) -> Option<Task> {
    for event in events {
        match task.as_mut() {
            Some(t) => {
                apply_task_event(t, event, false);
            }
            None => task = Some(task_from_event(event).0),
        }
    }
    task
}

/// Fold one worker event into `worker`. Returns the status transition it
/// caused, if any, for the worker's history.
pub fn apply_worker_event(worker: &mut Worker, event: &WorkerEvent) -> Option<WorkerStatusChange> {
    let ts = event.timestamp;
    worker.clock = worker.clock.max(event.clock);
    if ts > 0.0 && ts < worker.first_seen {
        worker.first_seen = ts;
    }
    let newer_than_offline = worker.offline_since.is_none_or(|off| ts > off);
    let newer_than_online = worker.online_since.is_none_or(|on| ts >= on)
        && worker.last_heartbeat.is_none_or(|hb| ts >= hb);
    let mut transition = None;
    match event.kind {
        WorkerEventKind::Online | WorkerEventKind::Heartbeat => {
            if let Some(freq) = event.freq.filter(|f| f.is_finite() && *f > 0.0) {
                worker.freq = freq;
            }
            if event.pid.is_some() {
                worker.pid = event.pid;
            }
            if let Some(a) = event.active {
                worker.active = a;
            }
            if let Some(p) = event.processed {
                worker.processed = p;
            }
            if event.loadavg.is_some() {
                worker.loadavg.clone_from(&event.loadavg);
            }
            fill(&mut worker.sw_ident, &event.sw_ident);
            set(&mut worker.sw_ver, &event.sw_ver);
            fill(&mut worker.sw_sys, &event.sw_sys);
            if event.utcoffset.is_some() {
                worker.utcoffset = event.utcoffset;
            }
            if worker.last_heartbeat.is_none_or(|hb| ts > hb) {
                worker.last_heartbeat = Some(ts);
            }
            if worker.status == WorkerStatus::Offline && newer_than_offline {
                worker.status = WorkerStatus::Online;
                worker.online_since = Some(ts);
                transition = Some(event.kind);
            } else if event.kind == WorkerEventKind::Online && newer_than_offline {
                // A restart without an offline in between (killed, then started).
                worker.online_since = Some(ts);
            }
        }
        WorkerEventKind::Offline | WorkerEventKind::Lost => {
            if worker.status == WorkerStatus::Online && newer_than_online {
                let lost = event.kind == WorkerEventKind::Lost;
                let expired = worker
                    .last_heartbeat
                    .is_none_or(|hb| ts > hb + worker.expiry_window());
                if !lost || expired {
                    worker.status = WorkerStatus::Offline;
                    worker.offline_since = Some(ts);
                    worker.active = 0;
                    transition = Some(event.kind);
                }
            }
        }
    }
    transition.map(|kind| WorkerStatusChange {
        hostname: worker.hostname.clone(),
        status: worker.status,
        timestamp: ts,
        reason: kind.as_str().to_owned(),
    })
}

/// A worker built from its first event, and its first transition.
pub fn worker_from_event(event: &WorkerEvent) -> (Worker, Option<WorkerStatusChange>) {
    let mut worker = Worker::new(event.hostname.clone(), event.timestamp);
    let change = apply_worker_event(&mut worker, event);
    (worker, change)
}

/// Synthetic `worker-lost` events for workers whose last heartbeat is older
/// than `2 x freq` at `now`. The ingest pipeline applies them so the history
/// records when a worker silently died.
pub fn expired_workers<'a>(
    workers: impl IntoIterator<Item = &'a Worker>,
    now: Timestamp,
) -> Vec<WorkerEvent> {
    workers
        .into_iter()
        .filter(|w| w.status == WorkerStatus::Online && w.status_at(now) == WorkerStatus::Offline)
        .map(|w| WorkerEvent::new(WorkerEventKind::Lost, w.hostname.clone(), now))
        .collect()
}

#[cfg(test)]
mod tests;
