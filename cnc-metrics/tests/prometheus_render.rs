//! The Prometheus exporter without brokers: synthetic events, scrape text
//! checked by promtool, flags, the allow-list, the offline-worker TTL, and
//! the HTTP listener.

mod common;

use std::time::Duration;

use cnc_metrics::{PrometheusComponent, PrometheusExporter};
use cnc_model::config::PrometheusConfig;
use cnc_model::exporter::Exporter;
use cnc_model::{Event, TaskEvent, TaskEventKind, TaskState, WorkerEvent, WorkerEventKind};
use common::{has, promtool_check, sample};

fn task(kind: TaskEventKind, id: &str, host: &str, ts: f64) -> TaskEvent {
    TaskEvent::new(kind, id, ts).with_hostname(host)
}

/// A task's life: sent → received → started → succeeded (or failed).
fn life(id: &str, name: &str, worker: &str, t0: f64, fail: bool) -> Vec<Event> {
    let mut sent = task(TaskEventKind::Sent, id, "gen42@client", t0);
    sent.name = Some(name.into());
    sent.queue = Some("celery".into());
    let mut recv = task(TaskEventKind::Received, id, worker, t0 + 0.5);
    recv.name = Some(name.into());
    let start = task(TaskEventKind::Started, id, worker, t0 + 1.0);
    let end = if fail {
        let mut f = task(TaskEventKind::Failed, id, worker, t0 + 1.2);
        f.exception = Some("ValueError('boom')".into());
        f.traceback = Some("Traceback...".into());
        f
    } else {
        let mut s = task(TaskEventKind::Succeeded, id, worker, t0 + 1.25);
        s.runtime = Some(0.25);
        s
    };
    vec![
        Event::Task(sent),
        Event::Task(recv),
        Event::Task(start),
        Event::Task(end),
    ]
}

fn heartbeat(worker: &str, active: u64) -> Event {
    let mut h = WorkerEvent::new(WorkerEventKind::Heartbeat, worker, cnc_model::now());
    h.active = Some(active);
    h.freq = Some(2.0);
    h.processed = Some(10);
    h.loadavg = Some(vec![0.5, 0.25, 0.125]);
    Event::Worker(h)
}

fn all_flags() -> PrometheusConfig {
    PrometheusConfig {
        celery_exporter_compat: true,
        runtime_buckets: vec![0.1, 0.5, 1.0],
        ..PrometheusConfig::default()
    }
}

#[test]
fn every_family_renders_and_passes_promtool() {
    let ex = PrometheusExporter::new(&all_flags());
    ex.observe(&heartbeat("w1@box", 1));
    for i in 0..3 {
        for e in life(
            &format!("ok{i}"),
            "app.add",
            "w1@box",
            100.0 + i as f64,
            false,
        ) {
            ex.observe(&e);
        }
    }
    for e in life("bad", "app.add", "w1@box", 200.0, true) {
        ex.observe(&e);
    }
    // A task still running.
    let mut r = task(TaskEventKind::Received, "run", "w1@box", 300.0);
    r.name = Some("app.slow".into());
    ex.observe(&Event::Task(r));
    let text = ex.render();
    promtool_check(&text);

    // celery_cnc_*
    assert_eq!(
        sample(
            &text,
            r#"celery_cnc_tasks_total{name="app.add",state="SUCCESS"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"celery_cnc_tasks_total{name="app.add",state="FAILURE"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"celery_cnc_tasks_in_progress{name="app.slow",state="RECEIVED"}"#
        ),
        Some(1.0)
    );
    assert_eq!(ex.in_progress("app.add", TaskState::Started), 0);
    assert_eq!(
        sample(
            &text,
            r#"celery_cnc_task_runtime_seconds_bucket{name="app.add",le="0.5"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"celery_cnc_task_runtime_seconds_bucket{name="app.add",le="0.1"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"celery_cnc_task_queue_wait_seconds_count{name="app.add",queue="celery"}"#
        ),
        Some(4.0)
    );
    assert_eq!(sample(&text, "celery_cnc_workers_online"), Some(1.0));
    assert_eq!(
        sample(&text, r#"celery_cnc_worker_tasks_active{worker="w1@box"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"celery_cnc_worker_load_average{worker="w1@box",period="5m"}"#
        ),
        Some(0.25)
    );

    // Flower: same names and labels as flower/events.py.
    assert_eq!(
        sample(
            &text,
            r#"flower_events_total{worker="w1@box",type="task-succeeded",task="app.add"}"#
        ),
        Some(3.0)
    );
    // task-sent is labelled with the sending client, as Flower does.
    assert_eq!(
        sample(
            &text,
            r#"flower_events_total{worker="gen42@client",type="task-sent",task="app.add"}"#
        ),
        Some(4.0)
    );
    assert!(has(
        &text,
        r#"flower_events_created{worker="w1@box",type="task-started",task="app.add"} "#
    ));
    assert_eq!(
        sample(
            &text,
            r#"flower_task_runtime_seconds_count{worker="w1@box",task="app.add"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"flower_task_prefetch_time_seconds{worker="w1@box",task="app.add"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"flower_worker_prefetched_tasks{worker="w1@box",task="app.slow"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"flower_worker_online{worker="w1@box"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"flower_worker_number_of_currently_executing_tasks{worker="w1@box"}"#
        ),
        Some(1.0)
    );

    // celery-exporter: hostname is the part after '@'.
    let l = r#"{name="app.add",hostname="box",queue_name="celery"}"#;
    assert_eq!(
        sample(&text, &format!("celery_task_succeeded_total{l}")),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, &format!("celery_task_received_total{l}")),
        Some(4.0)
    );
    assert_eq!(
        sample(&text, &format!("celery_task_retried_total{l}")),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"celery_task_failed_total{name="app.add",hostname="box",exception="ValueError",queue_name="celery"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"celery_task_sent_total{name="app.add",hostname="client",queue_name="celery"}"#
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(&text, &format!("celery_task_runtime_count{l}")),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, r#"celery_worker_up{hostname="box"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"celery_worker_tasks_active{hostname="box"}"#),
        Some(1.0)
    );
    // No task id is ever a label.
    assert!(!text.contains("ok1") && !text.contains("\"bad\""), "{text}");
}

#[test]
fn otel_counters_are_served_when_attached() {
    let ex = PrometheusExporter::new(&PrometheusConfig::default());
    let otel = cnc_metrics::OtelExporter::new(&cnc_model::config::OpenTelemetryConfig::default());
    let stats = otel.stats();
    stats
        .spans_dropped
        .store(7, std::sync::atomic::Ordering::Relaxed);
    ex.attach_otel(stats);
    let text = ex.render();
    promtool_check(&text);
    assert_eq!(
        sample(&text, "celery_cnc_otel_spans_dropped_total"),
        Some(7.0)
    );
}

/// Sorted sample lines, without the time-dependent ones.
fn samples(text: &str) -> Vec<&str> {
    let mut v: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("timestamp_seconds"))
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn cached_series_text_follows_every_change() {
    // One exporter scraped between batches (series text cached and
    // re-rendered as values change) must serve what an exporter that saw
    // the same events and renders once serves.
    let cached = PrometheusExporter::new(&all_flags());
    let fresh = PrometheusExporter::new(&all_flags());
    let mut all = vec![heartbeat("w1@box", 1), heartbeat("w2@box2", 0)];
    for i in 0..40 {
        let worker = if i % 3 == 0 { "w2@box2" } else { "w1@box" };
        let name = format!("app.t{}", i % 4);
        all.extend(life(
            &format!("id{i}"),
            &name,
            worker,
            100.0 + i as f64,
            i % 7 == 0,
        ));
    }
    for (i, e) in all.iter().enumerate() {
        cached.observe_at(e, 1000.0);
        fresh.observe_at(e, 1000.0);
        if i % 9 == 0 {
            let _ = cached.render_at(1000.0);
        }
    }
    let (a, b) = (cached.render_at(1000.0), fresh.render_at(1000.0));
    promtool_check(&a);
    assert_eq!(samples(&a), samples(&b));
    // And family by family in the same order as a full render.
    let headers = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# TYPE"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(headers(&a), headers(&b));
}

#[test]
fn flags_switch_families() {
    let cfg = PrometheusConfig {
        flower_compat: false,
        ..PrometheusConfig::default()
    };
    let ex = PrometheusExporter::new(&cfg);
    for e in life("a", "app.add", "w1@box", 100.0, false) {
        ex.observe(&e);
    }
    let text = ex.render();
    promtool_check(&text);
    assert!(has(&text, "celery_cnc_tasks_total{"));
    assert!(!text.contains("flower_"), "{text}");
    // The pooled render (what the endpoint serves) writes the same text,
    // also when reusing a returned buffer.
    let ex = std::sync::Arc::new(ex);
    for _ in 0..3 {
        assert_eq!(ex.render_pooled().to_text(), text);
    }
    assert!(!text.contains("celery_task_"), "{text}");

    let ex = PrometheusExporter::new(&PrometheusConfig::default());
    for e in life("a", "app.add", "w1@box", 100.0, false) {
        ex.observe(&e);
    }
    let text = ex.render();
    assert!(has(&text, "flower_events_total{"));
    assert!(
        !text.contains("celery_task_"),
        "default: celery-exporter names off"
    );
}

#[test]
fn allow_list_folds_other_names() {
    let cfg = PrometheusConfig {
        task_names: Some(vec!["app.add".into()]),
        celery_exporter_compat: true,
        ..PrometheusConfig::default()
    };
    let ex = PrometheusExporter::new(&cfg);
    for (i, name) in ["app.add", "app.x", "app.y"].iter().enumerate() {
        for e in life(&format!("t{i}"), name, "w1@box", 100.0, false) {
            ex.observe(&e);
        }
    }
    let text = ex.render();
    promtool_check(&text);
    assert_eq!(
        sample(
            &text,
            r#"celery_cnc_tasks_total{name="other",state="SUCCESS"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"celery_cnc_tasks_total{name="app.add",state="SUCCESS"}"#
        ),
        Some(1.0)
    );
    assert!(!text.contains("app.x") && !text.contains("app.y"), "{text}");
}

#[test]
fn offline_workers_series_removed_after_ttl() {
    let cfg = PrometheusConfig {
        offline_worker_ttl: Duration::from_secs(60),
        celery_exporter_compat: true,
        ..PrometheusConfig::default()
    };
    let ex = PrometheusExporter::new(&cfg);
    let t0 = 1_000_000.0;
    for w in ["w1@a", "w2@b"] {
        ex.observe_at(
            &Event::Worker(WorkerEvent::new(WorkerEventKind::Online, w, t0)),
            t0,
        );
        for e in life(&format!("x-{w}"), "app.add", w, t0, false) {
            ex.observe_at(&e, t0);
        }
    }
    ex.observe_at(
        &Event::Worker(WorkerEvent::new(WorkerEventKind::Offline, "w2@b", t0 + 1.0)),
        t0 + 1.0,
    );
    // w1 keeps beating.
    for k in 1..=40 {
        let t = t0 + 2.0 * f64::from(k);
        ex.observe_at(
            &Event::Worker(WorkerEvent::new(WorkerEventKind::Heartbeat, "w1@a", t)),
            t,
        );
    }
    let text = ex.render_at(t0 + 30.0);
    assert_eq!(
        sample(&text, r#"flower_worker_online{worker="w2@b"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"celery_cnc_worker_up{worker="w2@b"}"#),
        Some(0.0)
    );
    let text = ex.render_at(t0 + 80.0);
    promtool_check(&text);
    assert!(!text.contains("w2@b"), "w2's series must be gone:\n{text}");
    assert!(!text.contains("hostname=\"b\""), "{text}");
    assert!(text.contains("w1@a"));
    // The client that sent the tasks is forgotten too (no events for 80 s).
    assert!(!text.contains("gen42@client"), "{text}");
}

#[test]
fn hostile_label_values_are_escaped() {
    let ex = PrometheusExporter::new(&all_flags());
    for e in life("q", "we\"ird\\name\nx", "w\"1@bo\\x", 1.0, true) {
        ex.observe(&e);
    }
    let text = ex.render();
    promtool_check(&text);
    assert!(text.contains(r#"name="we\"ird\\name\nx""#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_scrapes_over_http() {
    let svc = common::Service::new();
    let cfg = PrometheusConfig {
        port: 0,
        ..PrometheusConfig::default()
    };
    let mut comp = PrometheusComponent::new(cfg, Vec::new());
    let ex = comp.exporter();
    cnc_model::component::Component::build(&mut comp, &svc.ctx)
        .await
        .expect("build");
    let addr = comp.local_addr().expect("bound");
    let info = cnc_model::component::Component::info(&comp);
    assert_eq!(info.links[0].url, format!("http://{addr}/metrics"));
    assert!(
        info.config["scrape_config"]
            .as_str()
            .is_some_and(|s| s.contains(&addr.to_string()))
    );
    // Hand the built component to the test service to run.
    let token = svc.shutdown.clone();
    let run = tokio::spawn(async move {
        cnc_model::component::Component::run(&mut comp, token)
            .await
            .expect("run");
    });
    svc.ctx.status.update("prometheus", |s| {
        s.state = cnc_model::component::ComponentState::Up;
        s.restarts = 2;
    });
    svc.write(life("h1", "app.add", "w1@box", 10.0, false))
        .await;
    let text = common::eventually(
        "the batch in a scrape",
        Duration::from_secs(10),
        async || {
            let (status, body) = common::http_get(addr, "/metrics").await;
            assert_eq!(status, 200);
            sample(
                &body,
                r#"celery_cnc_tasks_total{name="app.add",state="SUCCESS"}"#,
            )
            .is_some()
            .then_some(body)
        },
    )
    .await;
    promtool_check(&text);
    assert_eq!(sample(&text, "celery_cnc_batches_written_total"), Some(1.0));
    assert_eq!(sample(&text, "celery_cnc_events_written_total"), Some(4.0));
    assert_eq!(
        sample(&text, "celery_cnc_batch_write_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"celery_cnc_component_up{component="prometheus"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"celery_cnc_component_restarts_total{component="prometheus"}"#
        ),
        Some(2.0)
    );
    assert_eq!(common::http_get(addr, "/other").await.0, 404);
    assert_eq!(ex.in_progress("app.add", TaskState::Received), 0);
    // A scrape of many frames (cached series text gathered as it is sent)
    // arrives whole.
    for i in 0..3000 {
        let worker = format!("w{}@box", i % 20);
        for e in life(
            &format!("big{i}"),
            &format!("app.t{}", i % 150),
            &worker,
            20.0,
            false,
        ) {
            ex.observe(&e);
        }
    }
    let (status, body) = common::http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let text = ex.render();
    assert!(text.len() > 1 << 20, "{} bytes", text.len());
    assert_eq!(body.len(), text.len());
    assert_eq!(samples(&body), samples(&text));
    svc.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("stops")
        .expect("join");
}

#[tokio::test]
async fn a_taken_port_is_a_build_error() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let svc = common::Service::new();
    let mut comp = PrometheusComponent::new(
        PrometheusConfig {
            port,
            ..PrometheusConfig::default()
        },
        Vec::new(),
    );
    let err = cnc_model::component::Component::build(&mut comp, &svc.ctx)
        .await
        .expect_err("port in use");
    assert!(err.chain().contains(&port.to_string()), "{}", err.chain());
}
