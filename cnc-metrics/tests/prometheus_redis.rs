//! Real Celery workers on Redis: counters move as tasks run, queue depths
//! and self-metrics show, flags switch the families, and every scrape
//! passes `promtool check metrics`.

mod common;

use std::time::Duration;

use cnc_broker::protocol::task::SendTask;
use cnc_metrics::PrometheusComponent;
use cnc_model::config::PrometheusConfig;
use cnc_testsupport::{CeleryWorker, RedisDb, WorkerOpts};
use common::{eventually, has, http_get, promtool_check, sample};
use serde_json::json;

async fn send(app: &cnc_broker::AppConnection, task: SendTask) -> String {
    let msg = task.build();
    app.broker
        .send_task(&msg.queue, msg.to_message())
        .await
        .expect("send task");
    msg.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_real_workers() {
    let db = RedisDb::acquire().expect("redis db");
    let url = db.url();
    let app = common::redis_app("orders", &url).await;
    let mut svc = common::Service::new();
    svc.ingest(&app).await;

    // Two exporters on the same bus: defaults (ours + Flower) and
    // celery-exporter names only.
    let defaults = PrometheusConfig {
        port: 0,
        queue_refresh_interval: Duration::from_millis(300),
        ..PrometheusConfig::default()
    };
    let ce_only = PrometheusConfig {
        port: 0,
        flower_compat: false,
        celery_exporter_compat: true,
        queue_refresh_interval: Duration::from_millis(300),
        ..PrometheusConfig::default()
    };
    let mut a = PrometheusComponent::new(defaults, vec![app.clone()]);
    let mut b = PrometheusComponent::new(ce_only, vec![app.clone()]);
    cnc_model::component::Component::build(&mut a, &svc.ctx)
        .await
        .expect("build a");
    cnc_model::component::Component::build(&mut b, &svc.ctx)
        .await
        .expect("build b");
    let (addr_a, addr_b) = (
        a.local_addr().expect("addr a"),
        b.local_addr().expect("addr b"),
    );
    svc.run_built(a);
    svc.run_built(b);

    let tag = cnc_testsupport::unique("pm");
    let node = format!("w1@{tag}");
    let opts = WorkerOpts::new(&node, &url)
        .backend(&url)
        .queues(&["celery"])
        .concurrency(2);
    let _worker = tokio::task::spawn_blocking(move || CeleryWorker::start(opts))
        .await
        .expect("join")
        .expect("start worker");

    // Messages waiting in a queue no worker consumes show as depth. Sent by
    // Celery itself, so task-sent events name the queue.
    let env = [("CNC_BROKER".to_owned(), url.clone())];
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        cnc_testsupport::run_python(
            "from cnc_testapp import add\nfor i in range(3):\n    add.apply_async((1, 1), queue='parked')\n",
            &env,
        )
    })
    .await
    .expect("join")
    .expect("python sends");
    for i in 0..4 {
        send(
            &app,
            SendTask::new("cnc.add")
                .args(vec![json!(i), json!(1)])
                .queue("celery"),
        )
        .await;
    }
    send(&app, SendTask::new("cnc.fail_always").queue("celery")).await;

    let text = eventually(
        "4 successes and a failure",
        Duration::from_secs(60),
        async || {
            let (_, body) = http_get(addr_a, "/metrics").await;
            let ok = sample(
                &body,
                r#"celery_cnc_tasks_total{name="cnc.add",state="SUCCESS"}"#,
            );
            let failed = sample(
                &body,
                r#"celery_cnc_tasks_total{name="cnc.fail_always",state="FAILURE"}"#,
            );
            (ok == Some(4.0) && failed == Some(1.0)).then_some(body)
        },
    )
    .await;
    promtool_check(&text);
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"flower_events_total{{worker="{node}",type="task-succeeded",task="cnc.add"}}"#
            )
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"flower_task_runtime_seconds_count{{worker="{node}",task="cnc.add"}}"#)
        ),
        Some(4.0)
    );
    assert!(
        sample(
            &text,
            r#"celery_cnc_task_runtime_seconds_count{name="cnc.add"}"#
        ) == Some(4.0),
        "{text}"
    );
    assert!(has(
        &text,
        r#"celery_cnc_task_queue_wait_seconds_count{name="cnc.add",queue="#
    ));
    assert!(
        !text.contains("celery_task_"),
        "celery-exporter names are off by default"
    );
    // Self-metrics from the listener and the bus.
    let broker = app.broker_url.clone();
    let decoded = sample(
        &text,
        &format!(r#"celery_cnc_events_decoded_total{{broker="{broker}"}}"#),
    );
    assert!(decoded.is_some_and(|d| d >= 15.0), "{decoded:?}\n{text}");
    assert_eq!(
        sample(
            &text,
            &format!(r#"celery_cnc_events_dropped_total{{broker="{broker}"}}"#)
        ),
        Some(0.0)
    );
    assert!(sample(&text, "celery_cnc_events_written_total").is_some_and(|v| v >= 15.0));
    assert_eq!(
        sample(&text, "celery_cnc_bus_lagged_messages_total"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"celery_cnc_component_up{component="prometheus"}"#),
        Some(1.0)
    );

    // Worker and queue figures (heartbeats every 2 s; refresh every 300 ms).
    let text = eventually(
        "worker online and queue depths",
        Duration::from_secs(30),
        async || {
            let (_, body) = http_get(addr_a, "/metrics").await;
            let online = sample(
                &body,
                &format!(r#"flower_worker_online{{worker="{node}"}}"#),
            );
            let parked = sample(
                &body,
                r#"celery_cnc_queue_messages{app="orders",queue="parked"}"#,
            );
            let workers = sample(
                &body,
                r#"celery_cnc_queue_workers{app="orders",queue="celery"}"#,
            );
            (online == Some(1.0) && parked == Some(3.0) && workers == Some(1.0)).then_some(body)
        },
    )
    .await;
    promtool_check(&text);
    assert_eq!(sample(&text, "celery_cnc_workers_online"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            &format!(r#"celery_cnc_worker_up{{worker="{node}"}}"#)
        ),
        Some(1.0)
    );

    // The celery-exporter-only exporter.
    let host = node
        .split_once('@')
        .map(|(_, h)| h.to_owned())
        .expect("host");
    let text = eventually(
        "celery-exporter queue figures",
        Duration::from_secs(30),
        async || {
            let (_, body) = http_get(addr_b, "/metrics").await;
            let procs = sample(&body, r#"celery_active_process_count{queue_name="celery"}"#);
            // Queue depths come from their own refresh interval, not from
            // the events: wait for it as well.
            let parked = sample(&body, r#"celery_queue_length{queue_name="parked"}"#);
            (procs == Some(2.0) && parked == Some(3.0)).then_some(body)
        },
    )
    .await;
    promtool_check(&text);
    assert!(!text.contains("flower_"), "Flower names switched off");
    let l = format!(r#"{{name="cnc.add",hostname="{host}",queue_name="celery"}}"#);
    assert_eq!(
        sample(&text, &format!("celery_task_succeeded_total{l}")),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("celery_task_started_total{l}")),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"celery_task_failed_total{{name="cnc.fail_always",hostname="{host}",exception="ValueError",queue_name="celery"}}"#
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &format!("celery_task_runtime_count{l}")),
        Some(4.0)
    );
    assert_eq!(
        sample(&text, &format!(r#"celery_worker_up{{hostname="{host}"}}"#)),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"celery_queue_length{queue_name="parked"}"#),
        Some(3.0)
    );
    // task-sent comes from the client (gen<pid>@<host>): labelled with its host.
    assert!(
        text.lines().any(
            |l| l.starts_with(r#"celery_task_sent_total{name="cnc.add",hostname=""#)
                && l.ends_with(r#"queue_name="parked"} 3"#)
        ),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"celery_active_worker_count{queue_name="celery"}"#),
        Some(1.0)
    );
    svc.stop().await;
}
