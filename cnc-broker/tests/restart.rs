//! The broker server itself restarted mid-stream: a private `redis-server`
//! and a private RabbitMQ node are killed (SIGKILL) and started again on the
//! same port while a reconnecting event stream and a real Celery worker are
//! connected. The stream must report the loss as a temporary error, come
//! back by itself, and deliver events the worker sends after the restart;
//! our command connection must recover too (a task sent after the restart
//! runs).
#![cfg(all(feature = "redis", feature = "amqp"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cnc_broker::amqp::{AmqpBroker, AmqpOptions};
use cnc_broker::redis::{RedisBroker, RedisOptions};
use cnc_broker::{Backoff, Broker, EventStreamOptions, ReconnectingStream, reconnecting};
use cnc_model::{Event, TaskEventKind};
use cnc_testsupport::{CeleryWorker, PrivateRabbit, PrivateRedis, WorkerOpts};
use serde_json::json;
use tokio::time::Instant;

/// Generous: a loaded 2-core CI machine, and Celery's own reconnect delays.
const WAIT: Duration = Duration::from_secs(120);

fn stream_of(broker: Arc<dyn Broker>) -> ReconnectingStream {
    let opts = EventStreamOptions {
        // The worker runs with -E; no broadcasts from us muddy the check.
        enable_events_every: None,
        ..EventStreamOptions::default()
    };
    reconnecting(
        broker,
        opts,
        Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
    )
}

async fn start_worker(name: String, url: String) -> CeleryWorker {
    let opts = WorkerOpts::new(name, url).concurrency(1);
    tokio::task::spawn_blocking(move || CeleryWorker::start(opts))
        .await
        .expect("join")
        .expect("start worker")
}

/// Wait for an event matching `pred`, skipping others (errors included:
/// between subscriptions the stream reports failed attempts).
async fn expect_event(
    stream: &mut ReconnectingStream,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(ev))) if pred(&ev) => return ev,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("reconnecting stream ended while waiting for {what}"),
            Err(_) => panic!("no {what} within {WAIT:?}"),
        }
    }
}

/// After the server died: the stream reports a temporary error.
async fn expect_loss(stream: &mut ReconnectingStream) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Err(e))) => {
                assert!(e.is_temporary(), "not a temporary error: {e}");
                return;
            }
            Ok(Some(Ok(_))) => continue,
            Ok(None) => panic!("reconnecting stream ended"),
            Err(_) => panic!("the stream did not report the lost server within {WAIT:?}"),
        }
    }
}

fn succeeded(id: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::Task(t) if t.uuid == id && t.kind == TaskEventKind::Succeeded)
}

fn worker_event(node: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::Worker(w) if w.hostname == node)
}

/// Send a task, retrying while our own command connection recovers from
/// the restart; returns its id.
async fn send_retrying(broker: &Arc<dyn Broker>, x: i64) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let msg = cnc_broker::protocol::SendTask::new("cnc.add")
            .args(vec![json!(x), json!(1)])
            .queue("celery")
            .build();
        // Bounded: a client that never reconnects must fail the test, not
        // hang it.
        let sent = tokio::time::timeout(
            Duration::from_secs(30),
            broker.send_task(&msg.queue, msg.to_message()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(cnc_broker::BrokerError::connection(
                "send_task hung for 30 s",
            ))
        });
        match sent {
            Ok(()) => return msg.id,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "send_task never recovered after the restart: {e}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Before, kill, restart, after: the common script for both brokers.
async fn restart_script(
    broker: Arc<dyn Broker>,
    node: &str,
    kill: impl FnOnce(),
    restart: impl FnOnce(),
) {
    let mut stream = stream_of(broker.clone());
    // A worker event first: it proves the subscription is live, so the
    // task's events cannot slip by before it.
    expect_event(
        &mut stream,
        "a worker event before the restart",
        worker_event(node),
    )
    .await;
    let before = send_retrying(&broker, 1).await;
    expect_event(
        &mut stream,
        "task-succeeded before the restart",
        succeeded(&before),
    )
    .await;

    kill();
    expect_loss(&mut stream).await;
    restart();

    // The worker reconnects by itself (Celery's broker_connection_retry),
    // its heartbeats resume, and a task we send afterwards runs.
    expect_event(
        &mut stream,
        "a worker event after the restart",
        worker_event(node),
    )
    .await;
    let after = send_retrying(&broker, 2).await;
    expect_event(
        &mut stream,
        "task-succeeded after the restart",
        succeeded(&after),
    )
    .await;
    assert!(
        stream.stats().snapshot().reconnects >= 1,
        "{:?}",
        stream.stats().snapshot()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_server_restart_mid_stream() {
    let server = Arc::new(std::sync::Mutex::new(
        PrivateRedis::start().expect("private redis-server"),
    ));
    let url = server.lock().expect("lock").url();
    let broker: Arc<dyn Broker> = Arc::new(
        RedisBroker::connect(&url, RedisOptions::default())
            .await
            .expect("connect"),
    );
    let node = format!("restart@{}", cnc_testsupport::unique("r"));
    let _worker = start_worker(node.clone(), url).await;
    let (s1, s2) = (server.clone(), server.clone());
    restart_script(
        broker,
        &node,
        move || s1.lock().expect("lock").kill(),
        move || {
            s2.lock()
                .expect("lock")
                .restart()
                .expect("restart redis-server")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_node_restart_mid_stream() {
    let node_guard = tokio::task::spawn_blocking(PrivateRabbit::start)
        .await
        .expect("join")
        .expect("private RabbitMQ node");
    let url = node_guard.url();
    let server = Arc::new(std::sync::Mutex::new(node_guard));
    let broker: Arc<dyn Broker> = Arc::new(
        AmqpBroker::connect(
            &url,
            AmqpOptions {
                connection_name: Some("cnc restart test".into()),
            },
        )
        .await
        .expect("connect"),
    );
    let node = format!("restart@{}", cnc_testsupport::unique("a"));
    let _worker = start_worker(node.clone(), url).await;
    let (s1, s2) = (server.clone(), server.clone());
    restart_script(
        broker,
        &node,
        move || s1.lock().expect("lock").kill(),
        move || {
            s2.lock()
                .expect("lock")
                .restart()
                .expect("restart the RabbitMQ node")
        },
    )
    .await;
}
