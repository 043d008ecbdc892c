//! The checks, one `pub async fn` per rule of the contract.
//!
//! Each takes a [`StoreFactory`], builds the stores it needs with
//! [`StoreFactory::fresh`], and panics with a message naming the rule and
//! the first difference when the adapter disagrees with the
//! [`Reference`] model or with a literal
//! expectation. [`crate::conformance_tests!`] runs them all.

use std::fmt::Debug;
use std::sync::Arc;

use serde_json::Value;

use super::StoreFactory;
use super::reference::Reference;
use crate::model::{
    Event, StoredEvent, Task, TaskEvent, TaskEventKind, TaskFilter, TaskQuery, Timestamp,
};
use crate::store::{ApplyReport, DbController, StoreErrorKind, StoreResult};

mod admin;
mod concurrency;
mod events;
mod lifecycle;
mod query;
mod stats;
mod text;
mod workers;

pub use admin::*;
pub use concurrency::*;
pub use events::*;
pub use lifecycle::*;
pub use query::*;
pub use stats::*;
pub use text::*;
pub use workers::*;

/// 2026-01-05 00:00:00 UTC (a Monday): the base time of hand-written scenarios.
pub const T0: Timestamp = 1_767_571_200.0;

/// A fresh, initialised store.
pub(crate) async fn ready(factory: &dyn StoreFactory) -> Arc<dyn DbController> {
    let store = factory.fresh().await;
    ok(store.initialize().await, "initialize() on a fresh store");
    store
}

/// The value, or a panic naming the call and the error.
#[track_caller]
pub(crate) fn ok<T>(result: StoreResult<T>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error (kind {:?}): {e}", e.kind()),
    }
}

/// Assert the call failed with one of `kinds`.
#[track_caller]
pub(crate) fn fails_with<T: Debug>(result: StoreResult<T>, kinds: &[StoreErrorKind], what: &str) {
    match result {
        Ok(v) => panic!("{what}: expected an error of kind {kinds:?}, got Ok({v:?})"),
        Err(e) => assert!(
            kinds.contains(&e.kind()),
            "{what}: expected an error of kind {kinds:?}, got kind {:?}: {e}",
            e.kind()
        ),
    }
}

/// Apply `events` to the store and the model; the reports must agree.
pub(crate) async fn apply(
    store: &dyn DbController,
    model: &mut Reference,
    events: &[Event],
    what: &str,
) -> ApplyReport {
    let expected = model.apply(events);
    let actual = ok(store.apply(events).await, &format!("{what}: apply"));
    assert_report(&actual, &expected, what);
    actual
}

/// Apply in chunks of `chunk` events.
pub(crate) async fn apply_chunks(
    store: &dyn DbController,
    model: &mut Reference,
    events: &[Event],
    chunk: usize,
    what: &str,
) {
    for (i, batch) in events.chunks(chunk.max(1)).enumerate() {
        apply(store, model, batch, &format!("{what} (batch {i})")).await;
    }
}

/// Compare two apply reports field by field.
#[track_caller]
pub(crate) fn assert_report(actual: &ApplyReport, expected: &ApplyReport, what: &str) {
    let sorted = |r: &ApplyReport| {
        let mut s = r.skipped.clone();
        s.retain(|(_, n)| *n > 0);
        s.sort();
        s
    };
    assert_eq!(
        sorted(actual),
        sorted(expected),
        "{what}: ApplyReport.skipped (by reason)"
    );
    assert_eq!(
        actual.applied, expected.applied,
        "{what}: ApplyReport.applied"
    );
    assert_eq!(
        actual.tasks_created, expected.tasks_created,
        "{what}: ApplyReport.tasks_created"
    );
    assert_eq!(
        actual.tasks_updated, expected.tasks_updated,
        "{what}: ApplyReport.tasks_updated (distinct existing tasks that got an event)"
    );
    assert_eq!(
        actual.workers_touched, expected.workers_touched,
        "{what}: ApplyReport.workers_touched (distinct workers that got an event)"
    );
    assert_eq!(
        actual.changed_tasks, expected.changed_tasks,
        "{what}: ApplyReport.changed_tasks (each id once, first-touched order)"
    );
    assert_eq!(
        actual.worker_changes, expected.worker_changes,
        "{what}: ApplyReport.worker_changes"
    );
}

/// True when `actual` equals `expected`, allowing exactly the U+0000 ->
/// U+FFFD substitution in strings (and object keys).
pub fn json_matches(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::String(a), Value::String(e)) => text_matches(a, e),
        (Value::Array(a), Value::Array(e)) => {
            a.len() == e.len() && a.iter().zip(e).all(|(a, e)| json_matches(a, e))
        }
        (Value::Object(a), Value::Object(e)) => {
            a.len() == e.len()
                && e.iter().all(|(k, ev)| {
                    let av = a.get(k).or_else(|| a.get(&k.replace('\0', "\u{FFFD}")));
                    av.is_some_and(|av| json_matches(av, ev))
                })
        }
        (a, e) => a == e,
    }
}

/// True when `actual` is `expected`, or `expected` with every U+0000
/// replaced by U+FFFD.
pub fn text_matches(actual: &str, expected: &str) -> bool {
    actual == expected || (expected.contains('\0') && actual == expected.replace('\0', "\u{FFFD}"))
}

/// The first field where two values differ, for messages.
fn first_difference(actual: &Value, expected: &Value) -> String {
    if let (Value::Object(a), Value::Object(e)) = (actual, expected) {
        for (k, ev) in e {
            let av = a.get(k).unwrap_or(&Value::Null);
            if !json_matches(av, ev) {
                return format!("field `{k}`: got {}, expected {}", short(av), short(ev));
            }
        }
        for (k, av) in a {
            if !e.contains_key(k) {
                return format!("unexpected field `{k}`: {}", short(av));
            }
        }
    }
    format!("got {}, expected {}", short(actual), short(expected))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}... ({} bytes)", &s[..cut], s.len())
    } else {
        s
    }
}

/// Assert two values are equal (with the NUL allowance), naming the first
/// differing field.
#[track_caller]
pub(crate) fn assert_json<T: serde::Serialize>(actual: &T, expected: &T, what: &str) {
    let a = serde_json::to_value(actual).unwrap_or(Value::Null);
    let e = serde_json::to_value(expected).unwrap_or(Value::Null);
    if !json_matches(&a, &e) {
        panic!("{what}: {}", first_difference(&a, &e));
    }
}

/// Assert stored events equal the model's; `null` values in the adapter's
/// `fields` are ignored (the contract does not say whether they are kept).
#[track_caller]
pub(crate) fn assert_events(actual: &[StoredEvent], expected: &[StoredEvent], what: &str) {
    let mut actual = actual.to_vec();
    for e in &mut actual {
        if let Value::Object(map) = &mut e.fields {
            map.retain(|_, v| !v.is_null());
        }
    }
    assert_json(&actual, &expected.to_vec(), what);
}

/// Assert the adapter's task equals the model's.
#[track_caller]
pub(crate) fn assert_task(actual: Option<&Task>, expected: Option<&Task>, what: &str) {
    match (actual, expected) {
        (None, None) => {}
        (Some(a), None) => panic!("{what}: task {} should not exist", a.id),
        (None, Some(e)) => panic!("{what}: task {} is missing", e.id),
        (Some(a), Some(e)) => assert_json(a, e, &format!("{what}: task {}", e.id)),
    }
}

/// Assert a list of tasks is exactly `expected`, same order, same content.
#[track_caller]
pub(crate) fn assert_tasks(actual: &[Task], expected: &[&Task], what: &str) {
    let a: Vec<&str> = actual.iter().map(|t| t.id.as_str()).collect();
    let e: Vec<&str> = expected.iter().map(|t| t.id.as_str()).collect();
    if a != e {
        let at = a
            .iter()
            .zip(&e)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(e.len()));
        panic!(
            "{what}: got {} tasks, expected {}; first difference at row {at}: got {:?}, expected {:?}",
            a.len(),
            e.len(),
            a.get(at),
            e.get(at)
        );
    }
    for (x, y) in actual.iter().zip(expected) {
        assert_task(Some(x), Some(y), what);
    }
}

/// Every task matching `filter`, newest first, in one page.
pub(crate) async fn all_tasks(
    store: &dyn DbController,
    filter: &TaskFilter,
    what: &str,
) -> Vec<Task> {
    let q = TaskQuery::newest(filter.clone(), TaskQuery::MAX_LIMIT);
    ok(store.tasks(&q).await, what).tasks
}

/// Compare every task of the store with the model (list and one by one).
pub(crate) async fn assert_same_tasks(store: &dyn DbController, model: &Reference, what: &str) {
    let all = all_tasks(store, &TaskFilter::default(), what).await;
    assert_tasks(&all, &model.all(), &format!("{what}: tasks() newest first"));
    let count = ok(store.count_tasks(&TaskFilter::default()).await, what);
    assert_eq!(count, model.len() as u64, "{what}: count_tasks(all)");
}

/// A task event for `id` at `T0 + dt`, from worker `w1@example.com`.
pub(crate) fn tev(kind: TaskEventKind, id: &str, dt: f64, clock: u64) -> TaskEvent {
    TaskEvent::new(kind, id, T0 + dt)
        .with_hostname("w1@example.com")
        .with_clock(clock)
}

/// `task-sent` by a client, with a name and args.
pub(crate) fn sent(id: &str, name: &str, dt: f64, clock: u64) -> TaskEvent {
    let mut e = TaskEvent::new(TaskEventKind::Sent, id, T0 + dt)
        .with_hostname("gen42@client.example.com")
        .with_clock(clock);
    e.name = Some(name.to_owned());
    e.args = Some(format!("('{id}',)"));
    e.kwargs = Some("{}".to_owned());
    e.queue = Some("celery".to_owned());
    e
}

/// Wrap task events.
pub(crate) fn task_events(events: Vec<TaskEvent>) -> Vec<Event> {
    events.into_iter().map(Event::Task).collect()
}
