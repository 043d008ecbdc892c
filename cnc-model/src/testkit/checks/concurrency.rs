//! Readers during writes: batches are visible whole.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::model::{Event, StatsQuery, TaskEventKind as K, TaskFilter, TaskQuery, TaskState};
use crate::store::DbController;
use crate::testkit::StoreFactory;
use crate::testkit::reference::Reference;

use super::{apply, assert_same_tasks, ok, ready, tev};

const BATCHES: usize = 40;
const PER_BATCH: usize = 25;

/// One batch: `PER_BATCH` tasks of group `grp-b`, each received, started and
/// succeeded.
fn batch(b: usize) -> Vec<Event> {
    let mut out = Vec::new();
    for i in 0..PER_BATCH {
        let id = format!("conc-{b:03}-{i:03}");
        let base = (b * PER_BATCH + i) as f64;
        let clock = (b * PER_BATCH + i) as u64 * 3;
        let mut r = tev(K::Received, &id, base, clock + 1);
        r.name = Some(format!("conc.tasks.t{}", i % 3));
        r.group_id = Some(format!("grp-{b:03}"));
        let mut s = tev(K::Succeeded, &id, base + 0.5, clock + 3);
        s.runtime = Some(0.25 + i as f64);
        out.extend([
            Event::Task(r),
            Event::Task(tev(K::Started, &id, base + 0.1, clock + 2)),
            Event::Task(s),
        ]);
    }
    out
}

/// One reader pass; returns an error message on a torn read.
async fn read_once(store: &dyn DbController, pass: usize) -> Result<usize, String> {
    let e = |what: &str, err: crate::StoreError| {
        format!("{what} failed during writes: {err} ({:?})", err.kind())
    };
    let page = store
        .tasks(&TaskQuery::newest(
            TaskFilter::default(),
            TaskQuery::MAX_LIMIT,
        ))
        .await
        .map_err(|x| e("tasks()", x))?;
    let mut groups: HashMap<String, usize> = HashMap::new();
    for t in &page.tasks {
        if t.state != TaskState::Success {
            return Err(format!(
                "task {} seen in state {} (a batch was torn)",
                t.id, t.state
            ));
        }
        *groups
            .entry(t.group_id.clone().unwrap_or_default())
            .or_default() += 1;
    }
    if let Some((g, n)) = groups.iter().find(|(_, n)| **n != PER_BATCH) {
        return Err(format!(
            "group {g} has {n} of {PER_BATCH} tasks visible (a batch was torn)"
        ));
    }
    let count = store
        .count_tasks(&TaskFilter::default())
        .await
        .map_err(|x| e("count_tasks()", x))?;
    if count % PER_BATCH as u64 != 0 {
        return Err(format!(
            "count_tasks() = {count}, not a multiple of the batch size {PER_BATCH}"
        ));
    }
    let group = format!("grp-{:03}", pass % BATCHES);
    let filter = TaskFilter {
        group_id: Some(group.clone()),
        ..TaskFilter::default()
    };
    let n = store
        .count_tasks(&filter)
        .await
        .map_err(|x| e("count_tasks(group)", x))?;
    if n != 0 && n != PER_BATCH as u64 {
        return Err(format!("group {group}: {n} tasks visible"));
    }
    let stats = store
        .runtime_stats(&StatsQuery::default())
        .await
        .map_err(|x| e("runtime_stats()", x))?;
    if stats.count % PER_BATCH as u64 != 0 {
        return Err(format!(
            "runtime_stats().count = {}, not a multiple of {PER_BATCH}",
            stats.count
        ));
    }
    let states = store
        .state_distribution(&StatsQuery::default())
        .await
        .map_err(|x| e("state_distribution()", x))?;
    let total: u64 = states.iter().map(|s| s.count).sum();
    if total % PER_BATCH as u64 != 0 || states.iter().any(|s| s.state != TaskState::Success) {
        return Err(format!(
            "state_distribution() = {states:?} shows a torn batch"
        ));
    }
    Ok(page.tasks.len())
}

/// Four readers query tasks, counts and stats in a loop while a writer
/// applies batches: no reader errors, none sees part of a batch, counts
/// never go back, and all data is there at the end.
pub async fn check_concurrent_readers(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..4 {
        let store = Arc::clone(&store);
        let done = Arc::clone(&done);
        readers.push(tokio::spawn(async move {
            let mut passes = 0usize;
            let mut last = 0usize;
            loop {
                let finished = done.load(Ordering::Acquire);
                let seen = read_once(&*store, passes + r).await?;
                if seen < last {
                    return Err(format!("reader {r}: {seen} tasks visible after {last}"));
                }
                last = seen;
                passes += 1;
                if finished && passes >= 3 {
                    return Ok(passes);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut model = Reference::new();
    for b in 0..BATCHES {
        apply(
            &*store,
            &mut model,
            &batch(b),
            &format!("concurrent batch {b}"),
        )
        .await;
        tokio::task::yield_now().await;
    }
    done.store(true, Ordering::Release);
    for (i, reader) in readers.into_iter().enumerate() {
        match reader.await {
            Ok(Ok(passes)) => assert!(passes >= 3, "reader {i} ran"),
            Ok(Err(msg)) => panic!("reader {i}: {msg}"),
            Err(join) => panic!("reader {i} panicked: {join}"),
        }
    }
    assert_same_tasks(&*store, &model, "after concurrent reads and writes").await;
    assert_eq!(
        ok(
            store.count_tasks(&TaskFilter::default()).await,
            "count_tasks"
        ),
        (BATCHES * PER_BATCH) as u64
    );
}
