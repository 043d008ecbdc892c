//! What the exporters remember about tasks in flight and label values.
//!
//! Celery's `task-started`, `task-succeeded`… events carry neither the task
//! name nor the queue: only `task-sent` and `task-received` do. Each exporter
//! keeps a bounded table of unfinished tasks (name, queue, sent/received/
//! started times, current state) to label later events, and forgets a task
//! when it finishes. The table is bounded: past its capacity the oldest
//! entries are evicted (counted), so a flood of tasks that never finish
//! cannot grow memory without limit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use cnc_model::{TaskEvent, TaskEventKind, TaskState, Timestamp};

use crate::text::escape_label;

/// An escaped label value, shared between series. Interned: two labels
/// from the same [`Interner`] are equal exactly when they are the same
/// allocation, so hashing and comparing use the pointer, not the text (the
/// aggregate maps are keyed by tuples of labels and hashed per event).
#[derive(Debug, Clone)]
pub(crate) struct Label(Arc<str>);

impl Label {
    /// A label outside any interner (compared by pointer like the others,
    /// so only use it where it is not a map key shared with interned ones).
    pub(crate) fn new(escaped: String) -> Self {
        Self(escaped.into())
    }

    fn shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }
}

impl std::ops::Deref for Label {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Label {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Label {}

impl std::hash::Hash for Label {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_usize(Arc::as_ptr(&self.0).cast::<u8>() as usize);
    }
}

/// A fast hasher for maps keyed by [`Label`] pointers and small integers
/// (FxHash's multiply-rotate). Not for keys an outsider chooses freely.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.hash = (self.hash.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Maps keyed by labels.
pub(crate) type LabelMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

/// Interns label values (escaped once) and applies the task-name allow-list.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    map: HashMap<Box<str>, Label>,
}

impl Interner {
    /// The escaped label for `raw`.
    pub(crate) fn get(&mut self, raw: &str) -> Label {
        if let Some(l) = self.map.get(raw) {
            return l.clone();
        }
        let l = Label::new(escape_label(raw));
        self.map.insert(raw.into(), l.clone());
        l
    }

    /// Forget labels no series uses any more (after pruning workers).
    pub(crate) fn retain(&mut self, keep: impl Fn(&Label) -> bool) {
        self.map.retain(|_, v| v.shared() || keep(v));
    }
}

/// The task-name allow-list: names outside it are counted as `other`.
#[derive(Debug, Default)]
pub(crate) struct NamePolicy {
    allow: Option<HashSet<String>>,
}

/// The label value of names outside the allow-list.
pub(crate) const OTHER: &str = "other";

impl NamePolicy {
    pub(crate) fn new(allow: Option<&[String]>) -> Self {
        Self {
            allow: allow.map(|a| a.iter().cloned().collect()),
        }
    }

    /// The name to use as a label value.
    pub(crate) fn label<'a>(&self, raw: &'a str) -> &'a str {
        match &self.allow {
            Some(set) if !set.contains(raw) => OTHER,
            _ => raw,
        }
    }
}

/// One unfinished task.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskInfo {
    /// Registered name, as sent.
    pub name: Option<Arc<str>>,
    /// Queue from `task-sent`.
    pub queue: Option<Arc<str>>,
    /// The worker that last reported on it.
    pub worker: Option<Arc<str>>,
    /// `task-sent` time.
    pub sent: Option<Timestamp>,
    /// `task-received` time.
    pub received: Option<Timestamp>,
    /// `task-started` time.
    pub started: Option<Timestamp>,
    /// Has an ETA or countdown (its wait is deliberate).
    pub eta: Option<Arc<str>>,
    /// Current state, if a state-moving event was seen.
    pub state: Option<TaskState>,
    /// Timestamp of the event that set `state`.
    pub state_at: Timestamp,
    /// Retry count of the latest delivery.
    pub retries: u64,
    /// The name label its current state is counted under in the
    /// in-progress gauge.
    pub counted_as: Option<Label>,
    seq: u64,
}

/// What one event did to the table.
#[derive(Debug)]
pub(crate) struct Update {
    /// The task after the event (removed from the table if it finished).
    pub info: TaskInfo,
    /// The state before the event.
    pub prev: Option<TaskState>,
    /// The event moved the state (false for late or custom events).
    pub moved: bool,
    /// The task had already finished: a late duplicate or straggler.
    pub late: bool,
}

/// Unfinished tasks by id, bounded.
#[derive(Debug)]
pub(crate) struct Tracker {
    tasks: HashMap<String, TaskInfo>,
    order: VecDeque<(String, u64)>,
    finished: HashSet<String>,
    finished_order: VecDeque<String>,
    capacity: usize,
    seq: u64,
    /// Tasks evicted before they finished.
    pub evicted: u64,
}

impl Tracker {
    /// A table holding up to `capacity` unfinished tasks (and as many
    /// recently finished ids, to recognise late events).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            tasks: HashMap::new(),
            order: VecDeque::new(),
            finished: HashSet::new(),
            finished_order: VecDeque::new(),
            capacity: capacity.max(16),
            seq: 0,
            evicted: 0,
        }
    }

    /// Unfinished tasks now.
    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Fold one task event in. `evicted` receives tasks pushed out by
    /// capacity (so gauges built on the table can be corrected).
    pub(crate) fn update(&mut self, e: &TaskEvent, evicted: &mut Vec<TaskInfo>) -> Update {
        if self.finished.contains(&e.uuid) {
            let info = TaskInfo {
                name: e.name.as_deref().map(Arc::from),
                worker: e.hostname.as_deref().map(Arc::from),
                ..TaskInfo::default()
            };
            return Update {
                info,
                prev: None,
                moved: false,
                late: true,
            };
        }
        let new_state = TaskState::from_event(&e.kind);
        let is_new = !self.tasks.contains_key(&e.uuid);
        if is_new {
            self.seq += 1;
            self.order.push_back((e.uuid.clone(), self.seq));
            self.tasks.insert(
                e.uuid.clone(),
                TaskInfo {
                    seq: self.seq,
                    ..TaskInfo::default()
                },
            );
        }
        let Some(t) = self.tasks.get_mut(&e.uuid) else {
            // Inserted just above when missing.
            return Update {
                info: TaskInfo::default(),
                prev: None,
                moved: false,
                late: false,
            };
        };
        if let Some(n) = &e.name {
            if t.name.as_deref() != Some(n.as_str()) {
                t.name = Some(Arc::from(n.as_str()));
            }
        }
        if let Some(q) = &e.queue {
            t.queue = Some(Arc::from(q.as_str()));
        }
        if let Some(eta) = &e.eta {
            t.eta = Some(Arc::from(eta.as_str()));
        }
        if let Some(r) = e.retries {
            t.retries = r;
        }
        if !e.is_from_client() {
            if let Some(h) = &e.hostname {
                if t.worker.as_deref() != Some(h.as_str()) {
                    t.worker = Some(Arc::from(h.as_str()));
                }
            }
        }
        match e.kind {
            TaskEventKind::Sent => t.sent = Some(e.timestamp),
            TaskEventKind::Received => {
                t.received = Some(e.timestamp);
                // A retried task is received again: it starts again too.
                t.started = None;
            }
            TaskEventKind::Started => t.started = Some(e.timestamp),
            _ => {}
        }
        let prev = t.state;
        let mut moved = false;
        if let Some(ns) = new_state {
            let accept = match prev {
                None => true,
                Some(p) => {
                    e.timestamp >= t.state_at
                        || ns.precedence() < p.precedence()
                        || matches!(e.kind, TaskEventKind::Received) && p == TaskState::Retry
                }
            };
            if accept && prev != Some(ns) {
                t.state = Some(ns);
                t.state_at = e.timestamp;
                moved = true;
            }
        }
        let finished = t.state.is_some_and(TaskState::is_ready);
        let info = if finished {
            let info = self.tasks.remove(&e.uuid).unwrap_or_default();
            self.remember_finished(&e.uuid);
            info
        } else {
            t.clone()
        };
        if is_new {
            self.evict(evicted);
        }
        Update {
            info,
            prev,
            moved,
            late: false,
        }
    }

    /// Record the label the task's current state is counted under.
    pub(crate) fn set_counted_as(&mut self, id: &str, label: Label) {
        if let Some(t) = self.tasks.get_mut(id) {
            t.counted_as = Some(label);
        }
    }

    fn remember_finished(&mut self, id: &str) {
        if self.finished.insert(id.to_owned()) {
            self.finished_order.push_back(id.to_owned());
        }
        while self.finished_order.len() > self.capacity {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    fn evict(&mut self, out: &mut Vec<TaskInfo>) {
        while self.tasks.len() > self.capacity {
            let Some((id, seq)) = self.order.pop_front() else {
                break;
            };
            if self.tasks.get(&id).is_some_and(|t| t.seq == seq) {
                if let Some(t) = self.tasks.remove(&id) {
                    self.evicted += 1;
                    out.push(t);
                }
            }
        }
        // Entries of finished tasks linger in `order`; compact now and then.
        if self.order.len() > 2 * self.capacity + 1024 {
            let tasks = &self.tasks;
            self.order
                .retain(|(id, seq)| tasks.get(id).is_some_and(|t| t.seq == *seq));
        }
    }
}

/// The host part of a Celery node name (`w1@host` → `host`), as
/// celery-exporter labels it.
pub(crate) fn host_of(node: &str) -> &str {
    match node.split_once('@') {
        Some((_, host)) => host,
        None => node,
    }
}

/// The class name of a Python exception repr (`ValueError('x')` →
/// `ValueError`), `UnknownException` otherwise (celery-exporter's rule).
pub(crate) fn exception_class(repr: &str) -> &str {
    let end = repr
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(repr.len());
    if end > 0 && repr[end..].starts_with('(') {
        &repr[..end]
    } else {
        "UnknownException"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: TaskEventKind, id: &str, ts: f64) -> TaskEvent {
        TaskEvent::new(kind, id, ts).with_hostname("w1@h")
    }

    #[test]
    fn labels_later_events_and_forgets_finished() {
        let mut t = Tracker::new(100);
        let mut ev_out = Vec::new();
        let mut r = ev(TaskEventKind::Received, "a", 1.0);
        r.name = Some("t.add".into());
        t.update(&r, &mut ev_out);
        let u = t.update(&ev(TaskEventKind::Started, "a", 2.0), &mut ev_out);
        assert_eq!(u.info.name.as_deref(), Some("t.add"));
        assert_eq!(u.prev, Some(TaskState::Received));
        let u = t.update(&ev(TaskEventKind::Succeeded, "a", 3.0), &mut ev_out);
        assert!(u.moved);
        assert_eq!(u.info.received, Some(1.0));
        assert_eq!(t.len(), 0);
        // A late started event is recognised, not tracked again.
        let u = t.update(&ev(TaskEventKind::Started, "a", 2.5), &mut ev_out);
        assert!(u.late);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn bounded_with_eviction() {
        let mut t = Tracker::new(16);
        let mut out = Vec::new();
        for i in 0..100 {
            t.update(
                &ev(TaskEventKind::Received, &format!("t{i}"), 1.0),
                &mut out,
            );
        }
        assert_eq!(t.len(), 16);
        assert_eq!(out.len(), 84);
        assert_eq!(t.evicted, 84);
    }

    #[test]
    fn late_received_does_not_move_back() {
        let mut t = Tracker::new(16);
        let mut out = Vec::new();
        t.update(&ev(TaskEventKind::Started, "a", 2.0), &mut out);
        let u = t.update(&ev(TaskEventKind::Received, "a", 1.0), &mut out);
        assert!(!u.moved);
        assert_eq!(u.info.state, Some(TaskState::Started));
    }

    #[test]
    fn helpers() {
        assert_eq!(host_of("w1@box"), "box");
        assert_eq!(host_of("box"), "box");
        assert_eq!(exception_class("ValueError('boom')"), "ValueError");
        assert_eq!(exception_class("weird"), "UnknownException");
        let p = NamePolicy::new(Some(&["a".to_owned()]));
        assert_eq!(p.label("a"), "a");
        assert_eq!(p.label("b"), OTHER);
    }
}
