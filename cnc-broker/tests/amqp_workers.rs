//! Real Celery workers on RabbitMQ (results in Redis): the shared suite,
//! plus connection loss and hostile input on a live event stream. Each test
//! gets its own vhost (and Redis db for results), so tests run in parallel.
#![cfg(all(feature = "amqp", feature = "redis"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cnc_broker::amqp::{AmqpBroker, AmqpOptions};
use cnc_broker::protocol::{encode_event, event_message};
use cnc_broker::{Backoff, Broker, EventStreamOptions, reconnecting};
use cnc_model::{Event, TaskEvent, TaskEventKind};
use cnc_testsupport::{RabbitVhost, RedisDb};

fn synthetic(id: &str) -> Vec<u8> {
    let ev = Event::Task(
        TaskEvent::new(TaskEventKind::Started, id, cnc_model::now())
            .with_hostname("synthetic@test"),
    );
    event_message(encode_event(&ev), "synthetic@test").body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_real_workers() {
    let vhost = RabbitVhost::create().expect("vhost");
    let db = RedisDb::acquire().expect("redis db");
    let url = vhost.url();
    let broker: Arc<dyn Broker> = Arc::new(
        AmqpBroker::connect(
            &url,
            AmqpOptions {
                connection_name: Some("cnc-test".into()),
            },
        )
        .await
        .expect("connect"),
    );
    let backend = cnc_broker::connect_backend(&db.url())
        .await
        .expect("backend");
    let (seen, stats) = common::Seen::collect(&broker).await;
    let tag = cnc_testsupport::unique("a");
    let (_w1, _w2, n1, n2) = common::start_workers(&tag, &url, &db.url()).await;
    common::suite(broker.clone(), backend, &seen, &n1, &n2, &tag).await;
    // Depth of a queue with consumers, and of one that does not exist.
    let d = broker.queue_depth("celery").await.expect("depth");
    assert!(d.consumers.is_some_and(|c| c >= 1), "{d:?}");
    let missing = broker.queue_depth("no-such-queue").await;
    assert!(
        matches!(&missing, Err(e) if e.kind() == cnc_broker::ErrorKind::NotFound),
        "{missing:?}"
    );
    broker
        .healthcheck()
        .await
        .expect("still healthy after a 404");
    let c = stats.snapshot();
    assert_eq!(c.dropped, 0, "{c:?}");
    assert_eq!(c.decode_errors_total(), 0, "{c:?}");
}

/// Close our event connection from the server side: the stream reports the
/// loss, resubscribes, and later events arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_stream_reconnects_after_connection_loss() {
    let vhost = RabbitVhost::create().expect("vhost");
    let broker = Arc::new(
        AmqpBroker::connect(
            &vhost.url(),
            AmqpOptions {
                connection_name: Some("cnc-test".into()),
            },
        )
        .await
        .expect("connect"),
    );
    let opts = EventStreamOptions {
        enable_events_every: None,
        ..EventStreamOptions::default()
    };
    let mut stream = reconnecting(
        broker.clone(),
        opts,
        Backoff::new(Duration::from_millis(50), Duration::from_millis(500)),
    );
    let publish = |id: &'static str| {
        let broker = broker.clone();
        async move {
            for _ in 0..200 {
                let _ = broker
                    .publish_event_raw("task.started", "application/json", &synthetic(id))
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let p = tokio::spawn(publish("before"));
    expect_task(&mut stream, "before").await;
    p.abort();
    let closed = vhost.close_connections("cnc-test-events").expect("close");
    assert!(closed >= 1);
    let mut saw_error = false;
    for _ in 0..1000 {
        match tokio::time::timeout(Duration::from_secs(15), stream.next()).await {
            Ok(Some(Err(e))) => {
                assert!(e.is_temporary(), "{e}");
                saw_error = true;
                break;
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("stream did not report the loss: {other:?}"),
        }
    }
    assert!(saw_error);
    let p = tokio::spawn(publish("after"));
    expect_task(&mut stream, "after").await;
    p.abort();
    assert!(stream.stats().snapshot().reconnects >= 1);
}

async fn expect_task(stream: &mut cnc_broker::ReconnectingStream, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(Event::Task(t)))) if t.uuid == id => return,
            Ok(Some(_)) => continue,
            other => panic!("no event {id}: {other:?}"),
        }
    }
}

/// Garbage on the celeryev exchange is counted by reason; the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_bad_input_is_counted_and_skipped() {
    let vhost = RabbitVhost::create().expect("vhost");
    let broker = AmqpBroker::connect(&vhost.url(), AmqpOptions::default())
        .await
        .expect("connect");
    let opts = EventStreamOptions {
        enable_events_every: None,
        ..EventStreamOptions::default()
    };
    let stats = opts.stats.clone();
    let mut stream = broker.events(opts).await.expect("subscribe");
    let big_args = "x".repeat(10 * 1024 * 1024);
    let big_event = serde_json::json!({"type": "task-received", "uuid": "big", "args": big_args, "hostname": "h", "timestamp": 1.0, "clock": 1}).to_string();
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"this is not json".to_vec()),
        ("application/json", vec![0xff, 0xfe, 0x00, 0x01]),
        ("application/x-python-serialize", b"\x80\x03pickle".to_vec()),
        ("application/x-msgpack", b"\x81\xa1a\x01".to_vec()),
        ("application/json", b"[1, 2".to_vec()),
        ("application/json", b"{\"no\": \"type\"}".to_vec()),
        ("application/json", big_event.into_bytes()),
    ];
    let n_garbage = garbage.len() as u64;
    for (ct, body) in garbage {
        broker
            .publish_event_raw("task.multi", ct, &body)
            .await
            .expect("publish");
    }
    broker
        .publish_event_raw("task.started", "application/json", &synthetic("good"))
        .await
        .expect("publish");
    let ev = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("in time");
    assert!(
        matches!(&ev, Some(Ok(Event::Task(t))) if t.uuid == "good"),
        "{ev:?}"
    );
    let c = stats.snapshot();
    assert_eq!(c.received, n_garbage + 1, "{c:?}");
    assert_eq!(c.decode_errors_total(), n_garbage, "{c:?}");
    for reason in [
        "not_json",
        "unsupported_content_type",
        "truncated",
        "too_large",
    ] {
        assert!(
            c.decode_errors.contains_key(reason),
            "{reason} missing in {c:?}"
        );
    }
}
