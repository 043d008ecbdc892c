//! Aggregates: task names, runtime stats, throughput, distributions, heatmap.

use crate::model::{Event, StatsQuery, TaskEventKind as K, TaskState, ThroughputQuery, TimeRange};
use crate::store::StoreErrorKind;
use crate::testkit::StoreFactory;
use crate::testkit::generator::GenConfig;
use crate::testkit::reference::Reference;
use crate::{RuntimeStats, ThroughputBucket};

use super::query::dataset;
use super::{T0, apply, assert_json, fails_with, ok, ready, task_events, tev};

/// Scopes used by the aggregate checks: none, name, worker, time, combined,
/// and one that matches nothing.
fn scopes(names: &[String], workers: &[String], start: f64) -> Vec<(String, StatsQuery)> {
    let q = StatsQuery::default;
    vec![
        ("no scope".into(), q()),
        (
            "name".into(),
            StatsQuery {
                name: Some(names[0].clone()),
                ..q()
            },
        ),
        (
            "another name".into(),
            StatsQuery {
                name: Some(names[2].clone()),
                ..q()
            },
        ),
        (
            "worker".into(),
            StatsQuery {
                worker: Some(workers[1].clone()),
                ..q()
            },
        ),
        (
            "time".into(),
            StatsQuery {
                time: Some(TimeRange::between(start + 900.0, start + 3000.0)),
                ..q()
            },
        ),
        (
            "time since".into(),
            StatsQuery {
                time: Some(TimeRange::since(start + 4000.0)),
                ..q()
            },
        ),
        (
            "name + worker + time".into(),
            StatsQuery {
                name: Some(names[0].clone()),
                worker: Some(workers[0].clone()),
                time: Some(TimeRange::between(start, start + 5000.0)),
            },
        ),
        (
            "name substring (exact match required)".into(),
            StatsQuery {
                name: Some("app.tasks".into()),
                ..q()
            },
        ),
        (
            "nothing".into(),
            StatsQuery {
                name: Some("no.such.task".into()),
                ..q()
            },
        ),
    ]
}

/// Runtime stats equal within float summation order: everything exact but
/// `avg` (relative 1e-9).
#[track_caller]
fn assert_stats(got: &RuntimeStats, expected: &RuntimeStats, what: &str) {
    assert_eq!(got.count, expected.count, "{what}: count");
    assert_eq!(got.min, expected.min, "{what}: min");
    assert_eq!(got.max, expected.max, "{what}: max");
    assert_eq!(got.p50, expected.p50, "{what}: p50 (nearest rank)");
    assert_eq!(got.p95, expected.p95, "{what}: p95 (nearest rank)");
    assert_eq!(got.p99, expected.p99, "{what}: p99 (nearest rank)");
    match (got.avg, expected.avg) {
        (None, None) => {}
        (Some(a), Some(e)) => assert!(
            (a - e).abs() <= 1e-9 * e.abs().max(1.0),
            "{what}: avg {a} != {e}"
        ),
        (a, e) => panic!("{what}: avg {a:?} != {e:?}"),
    }
}

/// `task_names()` is the unscoped name distribution: every name once with
/// its task count, most frequent first, ties by name; unnamed tasks left out.
pub async fn check_task_names(factory: &dyn StoreFactory) {
    let (store, mut model, _) = dataset(factory, 81, 300).await;
    let ties = ["tie.b", "tie.a", "tie.b", "tie.a", "tie.c"];
    let events: Vec<Event> = ties
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut e = tev(K::Received, &format!("tie-{i}"), 10.0, 5_000_000 + i as u64);
            e.name = Some((*n).to_owned());
            Event::Task(e)
        })
        .collect();
    apply(&*store, &mut model, &events, "tied names").await;
    let got = ok(store.task_names().await, "task_names()");
    assert_json(&got, &model.task_names(), "task_names()");
    let pos = |n: &str| got.iter().position(|c| c.name == n);
    assert!(
        pos("tie.a") < pos("tie.b") && pos("tie.b") < pos("tie.c"),
        "ties by name ascending"
    );
    assert!(got.iter().all(|c| !c.name.is_empty()), "no empty name");
}

/// `runtime_stats` is exact: the same numbers as
/// [`RuntimeStats::from_runtimes`] over the tasks with a runtime in scope
/// (name and worker exact, `time` on `succeeded_at`).
pub async fn check_runtime_stats(factory: &dyn StoreFactory) {
    let (store, mut model, g) = dataset(factory, 83, 500).await;
    let start = GenConfig::default().start;
    for (what, q) in scopes(&g.names, &g.workers, start) {
        let got = ok(store.runtime_stats(&q).await, "runtime_stats");
        assert_stats(
            &got,
            &model.runtime_stats(&q),
            &format!("runtime_stats, scope {what}"),
        );
    }
    assert!(
        model.runtime_stats(&StatsQuery::default()).count > 100,
        "suite self-check"
    );
    // Runtimes 1..=100 s: nearest-rank percentiles are the ranks themselves.
    let mut events = Vec::new();
    for i in 1..=100u32 {
        let id = format!("rt-{i}");
        let mut r = tev(K::Received, &id, 10.0, u64::from(i) * 10);
        r.name = Some("rt.exact".into());
        let mut s = tev(
            K::Succeeded,
            &id,
            200.0 + f64::from(i),
            u64::from(i) * 10 + 1,
        );
        s.runtime = Some(f64::from(101 - i));
        events.push(r);
        events.push(s);
    }
    apply(&*store, &mut model, &task_events(events), "exact runtimes").await;
    let q = StatsQuery {
        name: Some("rt.exact".into()),
        ..StatsQuery::default()
    };
    let got = ok(store.runtime_stats(&q).await, "runtime_stats(rt.exact)");
    let expected = RuntimeStats {
        count: 100,
        min: Some(1.0),
        max: Some(100.0),
        avg: Some(50.5),
        p50: Some(50.0),
        p95: Some(95.0),
        p99: Some(99.0),
    };
    assert_stats(&got, &expected, "runtimes 1..=100");
    // `time` is on succeeded_at: runtimes 100..=91 succeeded in [T0+201, T0+211).
    let q = StatsQuery {
        time: Some(TimeRange::between(T0 + 201.0, T0 + 211.0)),
        ..q
    };
    let got = ok(
        store.runtime_stats(&q).await,
        "runtime_stats(rt.exact, time)",
    );
    assert_stats(
        &got,
        &RuntimeStats::from_runtimes((91..=100).map(f64::from).collect()),
        "time scope on succeeded_at",
    );
}

/// Throughput buckets: aligned starts, empty buckets included, counts by
/// finish time under the current state, retries by event time, scope on
/// the current name/worker, `scope.time` ignored, invalid widths refused.
pub async fn check_throughput(factory: &dyn StoreFactory) {
    let (store, model, g) = dataset(factory, 89, 500).await;
    let start = GenConfig::default().start;
    let end = start + 7200.0 + 600.0;
    let mut queries = Vec::new();
    for (w, from) in [
        (60u64, start - 630.0),
        (300, start - 17.5),
        (3600, start + 1234.0),
        (120, start),
    ] {
        queries.push((
            format!("width {w}, from {}", from - start),
            ThroughputQuery {
                scope: StatsQuery::default(),
                from,
                to: end,
                bucket_seconds: w,
            },
        ));
    }
    for (what, scope) in scopes(&g.names, &g.workers, start) {
        let mut scope = scope;
        scope.time = None;
        queries.push((
            format!("width 300, scope {what}"),
            ThroughputQuery {
                scope,
                from: start - 600.0,
                to: end,
                bucket_seconds: 300,
            },
        ));
    }
    let mut any_retried = false;
    let mut any_empty = false;
    for (what, q) in &queries {
        let got = ok(store.throughput(q).await, "throughput");
        let expected = model.throughput(q).unwrap_or_default();
        assert_json(&got, &expected, &format!("throughput {what}"));
        let w = q.bucket_seconds as f64;
        let first = (q.from / w).floor() * w;
        for (i, b) in got.iter().enumerate() {
            assert_eq!(
                b.start,
                first + i as f64 * w,
                "{what}: bucket {i} start is aligned"
            );
            assert!(b.start < q.to, "{what}: bucket {i} starts before `to`");
        }
        any_retried |= got.iter().any(|b| b.retried > 0);
        any_empty |= got.iter().any(|b| {
            *b == ThroughputBucket {
                start: b.start,
                ..Default::default()
            }
        });
    }
    assert!(
        any_retried && any_empty,
        "suite self-check: retries and empty buckets are covered"
    );
    // scope.time is ignored.
    let mut q = queries[0].1.clone();
    let base = ok(store.throughput(&q).await, "throughput");
    q.scope.time = Some(TimeRange::between(0.0, 1.0));
    assert_json(
        &ok(store.throughput(&q).await, "throughput"),
        &base,
        "throughput ignores scope.time",
    );
    // An aligned from == to: no bucket (start < to never holds).
    q.from = start;
    q.to = start;
    assert!(
        ok(store.throughput(&q).await, "throughput(from == to)").is_empty(),
        "no bucket when an aligned from equals to"
    );
    for w in [0u64, 1, 30, 59, 61, 90, 3601] {
        let q = ThroughputQuery {
            bucket_seconds: w,
            ..queries[0].1.clone()
        };
        fails_with(
            store.throughput(&q).await,
            &[StoreErrorKind::InvalidInput],
            &format!("bucket_seconds {w}"),
        );
    }

    // A task moving FAILURE -> SUCCESS moves its count; retries count by
    // their own timestamp.
    let store = ready(factory).await;
    let mut model = Reference::new();
    let q = ThroughputQuery {
        scope: StatsQuery::default(),
        from: T0,
        to: T0 + 600.0,
        bucket_seconds: 60,
    };
    let mut first = vec![
        tev(K::Received, "flip", 10.0, 1),
        tev(K::Started, "flip", 20.0, 2),
        tev(K::Failed, "flip", 30.0, 3),
    ];
    first.extend([
        tev(K::Received, "retry", 10.0, 4),
        tev(K::Retried, "retry", 70.0, 5),
        tev(K::Succeeded, "retry", 400.0, 6),
    ]);
    apply(
        &*store,
        &mut model,
        &task_events(first),
        "failed task and a retried one",
    )
    .await;
    let got = ok(store.throughput(&q).await, "throughput");
    assert_json(
        &got,
        &model.throughput(&q).unwrap_or_default(),
        "throughput before the flip",
    );
    assert_eq!(
        (got[0].failed, got[1].retried, got[6].succeeded),
        (1, 1, 1),
        "failure in [0,60), retry in [60,120), success in [360,420)"
    );
    apply(
        &*store,
        &mut model,
        &task_events(vec![tev(K::Succeeded, "flip", 200.0, 7)]),
        "late success",
    )
    .await;
    let got = ok(store.throughput(&q).await, "throughput");
    assert_json(
        &got,
        &model.throughput(&q).unwrap_or_default(),
        "throughput after FAILURE -> SUCCESS",
    );
    assert_eq!(
        (got[0].failed, got[3].succeeded),
        (0, 1),
        "the count moved from FAILURE at +30 s to SUCCESS at +200 s"
    );
    assert_eq!(got.iter().map(ThroughputBucket::finished).sum::<u64>(), 2);
}

/// `state_distribution` and `name_distribution` for a scope (`time` on
/// `created_at`): states in [`TaskState::ALL`] order without zeros, names by
/// count descending then name.
pub async fn check_distributions(factory: &dyn StoreFactory) {
    let (store, model, g) = dataset(factory, 97, 500).await;
    let start = GenConfig::default().start;
    for (what, q) in scopes(&g.names, &g.workers, start) {
        let got = ok(store.state_distribution(&q).await, "state_distribution");
        assert_json(
            &got,
            &model.state_distribution(&q),
            &format!("state_distribution, scope {what}"),
        );
        let order: Vec<usize> = got
            .iter()
            .filter_map(|c| TaskState::ALL.iter().position(|s| *s == c.state))
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{what}: states in TaskState::ALL order"
        );
        assert!(
            got.iter().all(|c| c.count > 0),
            "{what}: zero counts omitted"
        );
        let got = ok(store.name_distribution(&q).await, "name_distribution");
        assert_json(
            &got,
            &model.name_distribution(&q),
            &format!("name_distribution, scope {what}"),
        );
    }
    assert!(
        model.state_distribution(&StatsQuery::default()).len() >= 5,
        "suite self-check: many states"
    );
}

/// `heatmap` counts finished tasks by weekday and hour of `finished_at()`
/// ([`crate::Heatmap::cell_of`]), with `time` on the finish time.
pub async fn check_heatmap(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    let g = crate::testkit::generator::generate(&GenConfig {
        seed: 101,
        tasks: 600,
        span: 8.0 * 86_400.0,
        heartbeat_interval: 0.0,
        ..GenConfig::default()
    });
    super::apply_chunks(&*store, &mut model, &g.events, 500, "a week of tasks").await;
    let start = GenConfig::default().start;
    let mut list = scopes(&g.names, &g.workers, start);
    list.push((
        "two days".into(),
        StatsQuery {
            time: Some(TimeRange::between(start + 86_400.0, start + 3.0 * 86_400.0)),
            ..StatsQuery::default()
        },
    ));
    for (what, q) in list {
        let got = ok(store.heatmap(&q).await, "heatmap");
        assert_json(&got, &model.heatmap(&q), &format!("heatmap, scope {what}"));
    }
    let all = model.heatmap(&StatsQuery::default());
    let days = all
        .cells
        .iter()
        .filter(|row| row.iter().any(|c| *c > 0))
        .count();
    assert!(
        days == 7 && all.total() > 400,
        "suite self-check: every weekday has tasks"
    );
}
