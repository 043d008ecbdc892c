//! Text: any Unicode and large payloads round-trip and are searchable.

use serde_json::json;

use crate::model::{
    Event, Schedule, ScheduleSpec, TaskEventKind as K, TaskFilter, WorkerEvent,
    WorkerEventKind as WK,
};
use crate::testkit::StoreFactory;
use crate::testkit::reference::Reference;

use super::query::eventually_same;
use super::{
    T0, apply, assert_events, assert_json, assert_same_tasks, assert_task, json_matches, ok, ready,
    task_events, tev, text_matches,
};

/// Strings that break naive storage: emoji (astral plane, ZWJ sequences),
/// CJK, right-to-left text, combining marks, a NUL.
pub const AWKWARD_TEXTS: [&str; 8] = [
    "emoji \u{1F680}\u{1F525} family \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467} flag \u{1F1EB}\u{1F1F7}",
    "CJK 日本語のテキスト 中文字符 한국어",
    "RTL \u{5E9}\u{5DC}\u{5D5}\u{5DD} \u{639}\u{627}\u{644}\u{645} \u{202E}reversed\u{202C}",
    "combining e\u{301}cole n\u{303} A\u{30A} Z\u{335}\u{321}",
    "nul before\u{0}after",
    "quotes ' \" \\ ` % _ * ? [ ] ( ) { } ; -- /* */ MATCH OR AND NOT NEAR",
    "control \u{1}\u{7}\u{1B}[31m tabs\tand\nnewlines\r\n",
    "surrogate-adjacent \u{FFFD} \u{FEFF} \u{10FFFF} \u{E000}",
];

/// Unicode round-trips through task fields, events, workers and schedules
/// (exactly, except that U+0000 may become U+FFFD), and is searchable.
pub async fn check_unicode_round_trip(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    let mut events = Vec::new();
    for (i, text) in AWKWARD_TEXTS.iter().enumerate() {
        let id = format!("uni-{i}");
        let mut r = tev(K::Received, &id, i as f64, 10 * i as u64 + 1);
        r.name = Some(format!(
            "unicode.tasks.{}",
            text.split_whitespace().next().unwrap_or("x")
        ));
        r.args = Some(format!("('{text}',)"));
        r.kwargs = Some(format!("{{'k': '{text}'}}"));
        r.hostname = Some(format!("celery@wörker-{i}-\u{1F41D}"));
        let mut custom = tev(
            K::Other("task-note".into()),
            &id,
            i as f64 + 0.5,
            10 * i as u64 + 2,
        );
        custom.extra.insert(format!("key {text}"), json!(text));
        let mut f = tev(K::Failed, &id, i as f64 + 1.0, 10 * i as u64 + 3);
        f.exception = Some(format!("ValueError('{text}')"));
        f.traceback = Some(format!("Traceback:\n  {text}\n"));
        f.hostname.clone_from(&r.hostname);
        events.extend([r, custom, f]);
    }
    let mut ok_task = tev(K::Received, "uni-result", 20.0, 200);
    ok_task.name = Some("unicode.tasks.result".into());
    let mut done = tev(K::Succeeded, "uni-result", 21.0, 201);
    done.result = Some(format!("{{'text': '{}'}}", AWKWARD_TEXTS.join(" | ")));
    events.extend([ok_task, done]);
    apply(&*store, &mut model, &task_events(events), "unicode tasks").await;
    let mut w = WorkerEvent::new(WK::Online, "celery@wörker-\u{1F41D}-日本", T0);
    w.sw_sys = Some(AWKWARD_TEXTS[2].to_owned());
    apply(&*store, &mut model, &[Event::Worker(w)], "unicode worker").await;

    // Custom task ids (Celery accepts any string): Unicode and long ones.
    let long_id = format!("long-{}", "x".repeat(500));
    let odd_ids = [
        "任务-\u{1F680}-1",
        "id with spaces / and 'quotes'",
        long_id.as_str(),
    ];
    let mut odd = Vec::new();
    for (i, id) in odd_ids.iter().enumerate() {
        let mut r = tev(K::Received, id, 30.0 + i as f64, 300 + i as u64);
        r.name = Some("unicode.tasks.custom_id".into());
        r.root_id = Some(odd_ids[0].to_owned());
        odd.push(r);
        odd.push(tev(K::Started, id, 30.5 + i as f64, 310 + i as u64));
    }
    apply(&*store, &mut model, &task_events(odd), "custom task ids").await;
    for id in odd_ids {
        let got = ok(store.task(id).await, "task(custom id)");
        assert_task(got.as_ref(), model.task(id), "custom task id");
        let got = ok(store.task_events(id).await, "task_events(custom id)");
        assert_events(&got, &model.events_of(id), "events of a custom task id");
    }
    let got = ok(store.relations(odd_ids[0]).await, "relations(custom id)");
    assert_json(
        &got,
        &model.relations(odd_ids[0]),
        "relations of custom ids",
    );
    assert_eq!(got.len(), 3);

    assert_same_tasks(&*store, &model, "unicode").await;
    for i in 0..AWKWARD_TEXTS.len() {
        let id = format!("uni-{i}");
        let got = ok(store.task(&id).await, "task(id)");
        assert_task(got.as_ref(), model.task(&id), "unicode round trip");
        let got = ok(store.task_events(&id).await, "task_events(id)");
        assert_events(&got, &model.events_of(&id), "unicode in stored events");
    }
    let got = ok(store.task("uni-result").await, "task(id)").and_then(|t| t.result);
    let want = model
        .task("uni-result")
        .and_then(|t| t.result.clone())
        .unwrap_or_default();
    assert!(
        got.as_deref().is_some_and(|g| text_matches(g, &want)),
        "result text round trip"
    );
    let workers = ok(store.workers().await, "workers()");
    let expected: Vec<_> = model.workers().into_iter().cloned().collect();
    assert_json(&workers, &expected, "unicode worker");
    assert_json(
        &ok(store.task_names().await, "task_names"),
        &model.task_names(),
        "unicode task names",
    );

    let mut s = Schedule::new(
        "sched-\u{1F680}-日本",
        "unicode.tasks.run",
        ScheduleSpec::Interval { every: 5.0 },
        T0,
    );
    s.args = json!(AWKWARD_TEXTS);
    s.kwargs = json!({"k \u{1F525}": AWKWARD_TEXTS[3]});
    s.description = Some(AWKWARD_TEXTS.join("\n"));
    ok(store.upsert_schedule(&s).await, "upsert_schedule(unicode)");
    let got = ok(store.schedule(&s.name).await, "schedule(unicode name)");
    let got_v = serde_json::to_value(&got).unwrap_or_default();
    let want_v = serde_json::to_value(Some(&s)).unwrap_or_default();
    assert!(
        json_matches(&got_v, &want_v),
        "unicode schedule round trip: got {got_v}"
    );

    for needle in [
        "本語のテ",
        "\u{1F525}",
        "\u{5E9}\u{5DC}\u{5D5}",
        "e\u{301}cole",
        "한국어",
        "MATCH OR",
        "\" \\",
        "% _",
        "日",
        "\u{1F680}",
    ] {
        let filter = TaskFilter {
            search: Some(needle.to_owned()),
            ..TaskFilter::default()
        };
        let n = eventually_same(
            &*store,
            &model,
            &filter,
            &format!("unicode needle {needle:?}"),
        )
        .await;
        assert!(n >= 1, "suite self-check: {needle:?} matches something");
    }
}

/// A 1 MB args payload (and a 1 MB result) round-trips exactly and is
/// searchable near its end.
pub async fn check_large_payload(factory: &dyn StoreFactory) {
    let store = ready(factory).await;
    let mut model = Reference::new();
    let mut big = String::from("('NEEDLE-START-7f3a', '");
    let chunk = "lorem ipsum dolor sit amet 日本語 \u{1F680} ";
    while big.len() < 1_048_576 {
        big.push_str(chunk);
    }
    big.push_str("NEEDLE-END-MARKER-91c2')");
    let mut r = tev(K::Received, "big-1", 0.0, 1);
    r.name = Some("etl.tasks.load_batch".into());
    r.args = Some(big.clone());
    r.kwargs = Some(format!("{{'blob': '{}'}}", "k".repeat(300_000)));
    let mut s = tev(K::Succeeded, "big-1", 1.0, 2);
    s.result = Some(format!("'{}RESULT-TAIL-55aa'", "r".repeat(1_048_576)));
    s.runtime = Some(1.0);
    let small = tev(K::Received, "small-1", 0.5, 3);
    apply(
        &*store,
        &mut model,
        &task_events(vec![r, small, s]),
        "a 1 MB payload",
    )
    .await;
    let got =
        ok(store.task("big-1").await, "task(big)").unwrap_or_else(|| panic!("big task missing"));
    assert_eq!(
        got.args.as_deref().map(str::len),
        Some(big.len()),
        "args length"
    );
    assert!(
        got.args.as_deref() == Some(big.as_str()),
        "1 MB args round-trip exactly"
    );
    assert_task(Some(&got), model.task("big-1"), "1 MB task");
    let events = ok(store.task_events("big-1").await, "task_events(big)");
    assert_events(
        &events,
        &model.events_of("big-1"),
        "1 MB result in stored event fields",
    );
    for needle in [
        "needle-end-marker-91c2",
        "NEEDLE-START-7f3a",
        "result-tail-55AA",
    ] {
        let filter = TaskFilter {
            search: Some(needle.to_owned()),
            ..TaskFilter::default()
        };
        let n = eventually_same(
            &*store,
            &model,
            &filter,
            &format!("{needle:?} in a 1 MB payload"),
        )
        .await;
        assert_eq!(n, 1, "suite self-check");
    }
}
