//! The task list: filters, sorts, paging, search.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{
    Event, Task, TaskEvent, TaskEventKind as K, TaskFilter, TaskQuery, TaskSort, TaskSortField,
    TaskState as S, TimeRange,
};
use crate::store::{DbController, StoreErrorKind};
use crate::testkit::StoreFactory;
use crate::testkit::generator::{self, GenConfig, Generated};
use crate::testkit::reference::Reference;

use super::{
    T0, all_tasks, apply, apply_chunks, assert_tasks, fails_with, ok, ready, sent, task_events, tev,
};

/// A store and a model holding the same realistic data set: a generated
/// stream plus tasks that stop early (started-only without a name or
/// `received_at`, pending, received-only), so every state filter selects
/// something and sorts meet missing values.
pub(crate) async fn dataset(
    factory: &dyn StoreFactory,
    seed: u64,
    tasks: usize,
) -> (Arc<dyn DbController>, Reference, Generated) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    let g = generator::generate(&GenConfig {
        seed,
        tasks,
        task_names: 12,
        workers: 5,
        span: 7200.0,
        ..GenConfig::default()
    });
    apply_chunks(&*store, &mut model, &g.events, 250, "data set").await;
    // Tasks that stop early: started-only (no name, no received_at),
    // pending (sent only), received-only (waiting for an ETA) and retrying.
    let mut extra: Vec<TaskEvent> = Vec::new();
    for i in 0..7u32 {
        let dt = 100.0 + f64::from(i) * 60.0;
        let clock = 1_000_000 + u64::from(i) * 3;
        extra.push(tev(K::Started, &format!("orphan-{i}"), dt, clock));
        let name = &g.names[i as usize % g.names.len()];
        extra.push(sent(&format!("pending-{i}"), name, dt + 1.0, clock + 1));
        let mut r = tev(K::Received, &format!("waiting-{i}"), dt + 2.0, clock + 2);
        r.name = Some(name.clone());
        r.args = Some(format!("({i}, 'eta')"));
        r.eta = Some("2026-01-06T00:00:00+00:00".to_owned());
        extra.push(r.clone());
        let id = format!("retrying-{i}");
        r.uuid.clone_from(&id);
        r.clock = clock + 100;
        let mut retried = tev(K::Retried, &id, dt + 3.0, clock + 101);
        retried.exception = Some(format!("Retry('in {i}s: ConnectionError')"));
        extra.extend([r, retried]);
    }
    apply(
        &*store,
        &mut model,
        &task_events(extra),
        "started-only, pending and received-only tasks",
    )
    .await;
    (store, model, g)
}

/// Run a query and compare with the model's answer (and `count_tasks`).
async fn same_filter(
    store: &dyn DbController,
    model: &Reference,
    filter: &TaskFilter,
    what: &str,
) -> usize {
    let expected = model.matching(filter);
    let got = all_tasks(store, filter, what).await;
    assert_tasks(&got, &expected, &format!("tasks() with {what}"));
    let count = ok(store.count_tasks(filter).await, "count_tasks");
    assert_eq!(count, expected.len() as u64, "count_tasks with {what}");
    expected.len()
}

/// Every filter of [`TaskFilter`] alone and combined returns exactly the
/// tasks [`TaskFilter::matches`] accepts, newest first, and `count_tasks`
/// agrees.
pub async fn check_filters(factory: &dyn StoreFactory) {
    let (store, model, g) = dataset(factory, 41, 600).await;
    let total = model.len();
    let start = GenConfig::default().start;
    let w0 = g.workers[0].clone();
    let w1 = g.workers[1].clone();
    let root = g.roots[0].clone();
    let group = g.groups[0].clone();
    let f = TaskFilter::default;
    let mut cases: Vec<(String, TaskFilter)> = vec![("no filter".into(), f())];
    for s in S::ALL {
        let n = model
            .matching(&TaskFilter {
                states: vec![s],
                ..f()
            })
            .len();
        assert!(n > 0, "suite self-check: the data set has {s} tasks");
        cases.push((
            format!("state {s}"),
            TaskFilter {
                states: vec![s],
                ..f()
            },
        ));
    }
    cases.extend([
        (
            "states SUCCESS|FAILURE".into(),
            TaskFilter {
                states: vec![S::Success, S::Failure],
                ..f()
            },
        ),
        (
            "worker w0".into(),
            TaskFilter {
                worker: Some(w0.clone()),
                ..f()
            },
        ),
        (
            "worker w1".into(),
            TaskFilter {
                worker: Some(w1.clone()),
                ..f()
            },
        ),
        (
            "worker prefix only (exact match required)".into(),
            TaskFilter {
                worker: Some(w0[..w0.len() - 3].to_owned()),
                ..f()
            },
        ),
        (
            "name 'email'".into(),
            TaskFilter {
                name: Some("email".into()),
                ..f()
            },
        ),
        (
            "name 'EMAIL' (case-insensitive)".into(),
            TaskFilter {
                name: Some("EMAIL".into()),
                ..f()
            },
        ),
        (
            "name 'tasks.s'".into(),
            TaskFilter {
                name: Some("tasks.s".into()),
                ..f()
            },
        ),
        (
            "name with no match".into(),
            TaskFilter {
                name: Some("no.such.task".into()),
                ..f()
            },
        ),
        (
            "time [start+600, start+1800)".into(),
            TaskFilter {
                time: Some(TimeRange::between(start + 600.0, start + 1800.0)),
                ..f()
            },
        ),
        (
            "time since start+3600".into(),
            TaskFilter {
                time: Some(TimeRange::since(start + 3600.0)),
                ..f()
            },
        ),
        (
            "time until start+900".into(),
            TaskFilter {
                time: Some(TimeRange {
                    from: None,
                    to: Some(start + 900.0),
                }),
                ..f()
            },
        ),
        (
            "root_id".into(),
            TaskFilter {
                root_id: Some(root.clone()),
                ..f()
            },
        ),
        (
            "group_id".into(),
            TaskFilter {
                group_id: Some(group.clone()),
                ..f()
            },
        ),
        (
            "parent_id".into(),
            TaskFilter {
                parent_id: Some(root.clone()),
                ..f()
            },
        ),
        (
            "SUCCESS on w0".into(),
            TaskFilter {
                states: vec![S::Success],
                worker: Some(w0.clone()),
                ..f()
            },
        ),
        (
            "name 'app' in a time range".into(),
            TaskFilter {
                name: Some("App".into()),
                time: Some(TimeRange::between(start + 1200.0, start + 4800.0)),
                ..f()
            },
        ),
        (
            "states + worker + name + time".into(),
            TaskFilter {
                states: vec![S::Success, S::Failure, S::Retry],
                worker: Some(w1.clone()),
                name: Some("tasks".into()),
                time: Some(TimeRange::between(start, start + 5000.0)),
                ..f()
            },
        ),
        (
            "root_id + SUCCESS".into(),
            TaskFilter {
                root_id: Some(root.clone()),
                states: vec![S::Success],
                ..f()
            },
        ),
        (
            "group_id + worker + search".into(),
            TaskFilter {
                group_id: Some(group),
                worker: Some(w0),
                search: Some("example".into()),
                ..f()
            },
        ),
        (
            "search + state".into(),
            TaskFilter {
                search: Some("readtimeout".into()),
                states: vec![S::Failure],
                ..f()
            },
        ),
    ]);
    // Boundaries of [from, to): a task created exactly at `from` is in, one
    // created exactly at `to` is out.
    let all = model.all();
    let (lo, hi) = (all[all.len() - 40].created_at, all[40].created_at);
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    assert!(lo < hi, "suite self-check: distinct creation times");
    let boundary = TaskFilter {
        time: Some(TimeRange::between(lo, hi)),
        ..f()
    };
    let inside = model.matching(&boundary);
    assert!(
        inside.iter().any(|t| t.created_at == lo) && !inside.iter().any(|t| t.created_at == hi),
        "suite self-check: [from, to) boundaries"
    );
    cases.push((
        "time [created_at of one task, created_at of another)".into(),
        boundary,
    ));
    let mut partial = 0;
    for (what, filter) in &cases {
        let n = if filter.search.is_some() {
            eventually_same(&*store, &model, filter, what).await
        } else {
            same_filter(&*store, &model, filter, what).await
        };
        if n > 0 && n < total {
            partial += 1;
        }
    }
    assert!(
        partial >= 15,
        "suite self-check: most filters must select a strict subset ({partial})"
    );
}

/// Every sort field, ascending and descending, alone and with a filter,
/// gives the model's order: missing values last in both directions, ties by
/// seen order descending.
pub async fn check_sorts(factory: &dyn StoreFactory) {
    let (store, model, _) = dataset(factory, 43, 400).await;
    let fields = [
        TaskSortField::Seen,
        TaskSortField::Created,
        TaskSortField::Received,
        TaskSortField::Started,
        TaskSortField::Runtime,
        TaskSortField::Name,
    ];
    let filters = [
        ("no filter", TaskFilter::default()),
        (
            "state SUCCESS|FAILURE",
            TaskFilter {
                states: vec![S::Success, S::Failure],
                ..TaskFilter::default()
            },
        ),
    ];
    for field in fields {
        for descending in [true, false] {
            let sort = TaskSort { field, descending };
            for (fname, filter) in &filters {
                let what = format!("sort {field:?} descending={descending}, {fname}");
                let q = TaskQuery {
                    filter: filter.clone(),
                    sort,
                    limit: TaskQuery::MAX_LIMIT,
                    ..TaskQuery::default()
                };
                let got = ok(store.tasks(&q).await, &what).tasks;
                assert_tasks(&got, &model.sorted(filter, sort), &what);
                // The same sort, one offset page.
                let q = TaskQuery {
                    limit: 25,
                    offset: 40,
                    ..q
                };
                let got = ok(store.tasks(&q).await, &what).tasks;
                let expected: Vec<&Task> = model
                    .sorted(filter, sort)
                    .into_iter()
                    .skip(40)
                    .take(25)
                    .collect();
                assert_tasks(&got, &expected, &format!("{what}, offset 40 limit 25"));
            }
        }
    }
}

/// `offset` skips rows: walking pages by offset gives the whole list once,
/// and an offset past the end gives an empty page without a cursor.
pub async fn check_offset_paging(factory: &dyn StoreFactory) {
    let (store, model, _) = dataset(factory, 47, 300).await;
    let filter = TaskFilter {
        states: vec![S::Success, S::Failure, S::Revoked],
        ..TaskFilter::default()
    };
    for (fname, filter) in [
        ("no filter", TaskFilter::default()),
        ("final states", filter),
    ] {
        let expected = model.matching(&filter);
        let mut offset = 0u64;
        let mut seen: Vec<Task> = Vec::new();
        loop {
            let q = TaskQuery {
                filter: filter.clone(),
                limit: 33,
                offset,
                ..TaskQuery::default()
            };
            let page = ok(store.tasks(&q).await, "tasks(offset)");
            let want: Vec<&Task> = expected
                .iter()
                .skip(offset as usize)
                .take(33)
                .copied()
                .collect();
            assert_tasks(
                &page.tasks,
                &want,
                &format!("{fname}: page at offset {offset}"),
            );
            let full = page.tasks.len() == 33;
            assert_eq!(
                page.next_cursor.is_some(),
                full,
                "{fname}: next_cursor is Some exactly when the page is full (offset {offset})"
            );
            if page.tasks.is_empty() {
                break;
            }
            seen.extend(page.tasks);
            offset += 33;
        }
        assert_tasks(&seen, &expected, &format!("{fname}: all offset pages"));
        let q = TaskQuery {
            filter: filter.clone(),
            limit: 10,
            offset: expected.len() as u64 + 5,
            ..TaskQuery::default()
        };
        let page = ok(store.tasks(&q).await, "tasks(offset past the end)");
        assert!(
            page.tasks.is_empty() && page.next_cursor.is_none(),
            "{fname}: offset past the end"
        );
    }
}

/// Walk pages with `cursor` until `next_cursor` is `None`.
async fn walk(store: &dyn DbController, filter: &TaskFilter, limit: u32, what: &str) -> Vec<Task> {
    let mut out = Vec::new();
    let mut cursor = None;
    for page_no in 0.. {
        let q = TaskQuery {
            filter: filter.clone(),
            limit,
            cursor: cursor.take(),
            ..TaskQuery::default()
        };
        let page = ok(
            store.tasks(&q).await,
            &format!("{what}: cursor page {page_no}"),
        );
        let full = page.tasks.len() == limit as usize;
        assert_eq!(
            page.next_cursor.is_some(),
            full,
            "{what}: next_cursor must be Some exactly when the page is full (page {page_no}, {} rows)",
            page.tasks.len()
        );
        out.extend(page.tasks);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(page_no < 10_000, "{what}: cursor paging does not end");
    }
    out
}

/// Cursor paging across many pages equals one big page, with and without a
/// filter; a full last page leads to an empty page; rows added while paging
/// do not shift the pages that follow.
pub async fn check_cursor_paging(factory: &dyn StoreFactory) {
    let (store, mut model, g) = dataset(factory, 53, 500).await;
    for (fname, filter) in [
        ("no filter", TaskFilter::default()),
        (
            "SUCCESS",
            TaskFilter {
                states: vec![S::Success],
                ..TaskFilter::default()
            },
        ),
        (
            "name 'tasks'",
            TaskFilter {
                name: Some("tasks".into()),
                ..TaskFilter::default()
            },
        ),
    ] {
        let expected = model.matching(&filter);
        for limit in [1u32, 37, 100] {
            if limit == 1 && expected.len() > 200 {
                let first: Vec<Task> = {
                    let q = TaskQuery {
                        filter: filter.clone(),
                        limit: 1,
                        ..TaskQuery::default()
                    };
                    ok(store.tasks(&q).await, "tasks(limit 1)").tasks
                };
                assert_tasks(&first, &expected[..1], &format!("{fname}: limit 1"));
                continue;
            }
            let got = walk(&*store, &filter, limit, &format!("{fname}, limit {limit}")).await;
            assert_tasks(
                &got,
                &expected,
                &format!("{fname}: cursor pages of {limit} == one big page"),
            );
        }
    }
    // Exactly full last page: next_cursor is Some and leads to an empty page.
    let root = g.roots[0].clone();
    let filter = TaskFilter {
        root_id: Some(root),
        ..TaskFilter::default()
    };
    let n = model.matching(&filter).len() as u32;
    assert!(n >= 2, "suite self-check: a workflow has several tasks");
    let q = TaskQuery {
        filter: filter.clone(),
        limit: n,
        ..TaskQuery::default()
    };
    let page = ok(store.tasks(&q).await, "tasks(limit = matching rows)");
    assert_eq!(page.tasks.len() as u32, n);
    let cursor = page
        .next_cursor
        .unwrap_or_else(|| panic!("a full page must have a next_cursor"));
    let q = TaskQuery {
        filter,
        limit: n,
        cursor: Some(cursor),
        ..TaskQuery::default()
    };
    let page = ok(store.tasks(&q).await, "tasks(cursor after the last row)");
    assert!(
        page.tasks.is_empty(),
        "the page after the last row is empty"
    );
    assert!(
        page.next_cursor.is_none(),
        "an empty page has no next_cursor"
    );

    // Keyset stability: new tasks arriving between pages do not shift them.
    let q = TaskQuery {
        limit: 50,
        ..TaskQuery::default()
    };
    let first = ok(store.tasks(&q).await, "first page").next_cursor;
    let expected: Vec<Task> = model.all().into_iter().skip(50).take(50).cloned().collect();
    let newer: Vec<Event> = (0..20u32)
        .map(|i| {
            Event::Task(tev(
                K::Received,
                &format!("newer-{i}"),
                9000.0 + f64::from(i),
                2_000_000 + u64::from(i),
            ))
        })
        .collect();
    apply(&*store, &mut model, &newer, "tasks arriving between pages").await;
    let q = TaskQuery {
        limit: 50,
        cursor: first,
        ..TaskQuery::default()
    };
    let second = ok(store.tasks(&q).await, "second page").tasks;
    assert_tasks(
        &second,
        &expected.iter().collect::<Vec<_>>(),
        "cursor page after new tasks arrived",
    );
}

/// `limit` is capped at [`TaskQuery::MAX_LIMIT`].
pub async fn check_limit_cap(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    let n = TaskQuery::MAX_LIMIT as usize + 50;
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let mut e = tev(
                K::Received,
                &format!("cap-{i:05}"),
                i as f64 * 0.01,
                i as u64 + 1,
            );
            e.name = Some(format!("cap.tasks.t{}", i % 7));
            Event::Task(e)
        })
        .collect();
    apply_chunks(&*store, &mut model, &events, 2_500, "many tasks").await;
    for limit in [TaskQuery::MAX_LIMIT + 1, 20_000, u32::MAX] {
        let q = TaskQuery {
            limit,
            ..TaskQuery::default()
        };
        let page = ok(store.tasks(&q).await, "tasks(limit > MAX_LIMIT)");
        let expected: Vec<&Task> = model
            .all()
            .into_iter()
            .take(TaskQuery::MAX_LIMIT as usize)
            .collect();
        assert_tasks(
            &page.tasks,
            &expected,
            &format!("limit {limit} is capped at MAX_LIMIT"),
        );
        assert!(
            page.next_cursor.is_some(),
            "a page full at MAX_LIMIT has a next_cursor"
        );
        let rest = ok(
            store
                .tasks(&TaskQuery {
                    limit,
                    cursor: page.next_cursor,
                    ..TaskQuery::default()
                })
                .await,
            "tasks(after MAX_LIMIT rows)",
        );
        assert_eq!(rest.tasks.len(), 50, "the rest after a capped page");
        assert!(rest.next_cursor.is_none());
    }
    assert_eq!(
        ok(
            store.count_tasks(&TaskFilter::default()).await,
            "count_tasks"
        ),
        n as u64
    );
}

/// A cursor with an offset, a cursor with a non-default sort, and a cursor
/// that is not one are [`StoreErrorKind::InvalidInput`].
pub async fn check_invalid_queries(factory: &dyn StoreFactory) {
    let (store, _, _) = dataset(factory, 59, 60).await;
    let page = ok(
        store
            .tasks(&TaskQuery {
                limit: 10,
                ..TaskQuery::default()
            })
            .await,
        "tasks()",
    );
    let cursor = page
        .next_cursor
        .unwrap_or_else(|| panic!("a full page has a next_cursor"));
    let invalid = [StoreErrorKind::InvalidInput];
    let q = TaskQuery {
        limit: 10,
        offset: 10,
        cursor: Some(cursor.clone()),
        ..TaskQuery::default()
    };
    fails_with(store.tasks(&q).await, &invalid, "cursor with offset");
    for sort in [
        TaskSort {
            field: TaskSortField::Seen,
            descending: false,
        },
        TaskSort {
            field: TaskSortField::Created,
            descending: true,
        },
        TaskSort {
            field: TaskSortField::Name,
            descending: false,
        },
    ] {
        let q = TaskQuery {
            limit: 10,
            sort,
            cursor: Some(cursor.clone()),
            ..TaskQuery::default()
        };
        fails_with(
            store.tasks(&q).await,
            &invalid,
            &format!("cursor with sort {sort:?}"),
        );
    }
    for bad in ["definitely not a cursor", "\u{1F600}", "-1"] {
        let q = TaskQuery {
            limit: 10,
            cursor: Some(bad.to_owned()),
            ..TaskQuery::default()
        };
        fails_with(
            store.tasks(&q).await,
            &invalid,
            &format!("garbage cursor {bad:?}"),
        );
    }
}

/// Poll `tasks()` until it equals the model's answer or the search lag
/// (plus one second) has passed.
pub(crate) async fn eventually_same(
    store: &dyn DbController,
    model: &Reference,
    filter: &TaskFilter,
    what: &str,
) -> usize {
    let expected = model.matching(filter);
    let deadline = Instant::now() + store.info().search_lag + Duration::from_secs(1);
    loop {
        let got = all_tasks(store, filter, what).await;
        let count = ok(store.count_tasks(filter).await, "count_tasks");
        let same_ids =
            got.len() == expected.len() && got.iter().zip(&expected).all(|(a, b)| a.id == b.id);
        if (same_ids && count == expected.len() as u64) || Instant::now() >= deadline {
            assert_tasks(&got, &expected, &format!("search {what}"));
            assert_eq!(
                count,
                expected.len() as u64,
                "count_tasks with search {what}"
            );
            return expected.len();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Search finds case-insensitive substrings of name, args, kwargs, result
/// and exception: 3+ characters (the index) and 1-2 characters (a scan),
/// alone and with other filters, within `search_lag`.
pub async fn check_search(factory: &dyn StoreFactory) {
    let (store, mut model, _) = dataset(factory, 61, 300).await;
    // Needles taken from the data.
    let pick = |f: &dyn Fn(&Task) -> Option<String>| model.all().into_iter().find_map(f);
    let from_args = pick(&|t| t.args.as_ref().map(|a| a[1..8].to_owned())).unwrap_or_default();
    let from_kwargs = pick(&|t| {
        t.kwargs
            .as_ref()
            .and_then(|k| k.find("trace_id': '").map(|i| k[i + 12..i + 22].to_owned()))
    })
    .unwrap_or_default();
    let from_result = pick(&|t| {
        t.result
            .as_ref()
            .and_then(|r| r.find("'id': '").map(|i| r[i + 7..i + 15].to_uppercase()))
    })
    .unwrap_or_default();
    // One task whose text is only findable through each field.
    let mut e = tev(K::Failed, "search-special", 50.0, 3_000_000);
    e.exception = Some("QuuxlyError('Zorblax happened')".to_owned());
    let mut r = tev(K::Received, "search-special", 49.0, 3_000_001);
    r.name = Some("special.tasks.Frobnicate".to_owned());
    r.args = Some("('Snorkel-Args',)".to_owned());
    r.kwargs = Some("{'flumph': 'Kwargzilla'}".to_owned());
    apply(
        &*store,
        &mut model,
        &task_events(vec![r, e]),
        "a task for search",
    )
    .await;
    let s = |needle: &str| TaskFilter {
        search: Some(needle.to_owned()),
        ..TaskFilter::default()
    };
    let mut cases: Vec<(String, TaskFilter)> = [
        "send_em",
        "SEND_EMAIL",
        "readtimeout",
        "READTIMEOUT",
        "tenant-0",
        "example.com",
        "frobnic",
        "snorkel-args",
        "KWARGZILLA",
        "zorblax",
        "quuxlyerror",
        "user1",
        "no-such-needle-anywhere",
        "'status': 'ok'",
        "ab",
        "Zo",
        "7",
        "q",
        "",
        // Only in tracebacks, worker names or ids: not searched.
        "site-packages",
        "worker-0",
    ]
    .into_iter()
    .map(|n| (format!("{n:?}"), s(n)))
    .collect();
    let id_prefix = model.all()[0].id[..13].to_owned();
    cases.push((
        format!("{id_prefix:?} (a task id: not searched)"),
        s(&id_prefix),
    ));
    for needle in ["site-packages", "worker-0", &id_prefix] {
        assert!(
            model.matching(&s(needle)).is_empty(),
            "suite self-check: {needle:?}"
        );
    }
    for n in [from_args, from_kwargs, from_result] {
        assert!(n.len() >= 3, "suite self-check: needle {n:?}");
        cases.push((format!("{n:?} (from the data)"), s(&n)));
    }
    cases.push((
        "'tenant' + SUCCESS".into(),
        TaskFilter {
            search: Some("tenant".into()),
            states: vec![S::Success],
            ..TaskFilter::default()
        },
    ));
    cases.push((
        "'ok' + name 'email'".into(),
        TaskFilter {
            search: Some("ok".into()),
            name: Some("email".into()),
            ..TaskFilter::default()
        },
    ));
    let total = model.len();
    let mut partial = 0;
    for (what, filter) in &cases {
        let n = eventually_same(&*store, &model, filter, what).await;
        if n > 0 && n < total {
            partial += 1;
        }
    }
    assert!(
        partial >= 15,
        "suite self-check: most searches select a strict subset ({partial})"
    );
    let one = model.matching(&s("zorblax"));
    assert_eq!(
        one.len(),
        1,
        "suite self-check: exception text is searchable"
    );
    let _ = T0;
}
