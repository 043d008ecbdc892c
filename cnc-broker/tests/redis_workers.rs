//! Real Celery workers on Redis: the shared suite, plus connection loss and
//! hostile input on a live event stream. Each test leases its own Redis db
//! (channels carry the db number), so tests run in parallel in isolation.
#![cfg(feature = "redis")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use cnc_broker::protocol::{encode_event, encode_redis_envelope, event_message};
use cnc_broker::redis::{RedisBroker, RedisOptions};
use cnc_broker::{Backoff, Broker, EventStreamOptions, reconnecting};
use cnc_model::{Event, TaskEvent, TaskEventKind};
use cnc_testsupport::{RedisDb, redis_cli};

fn synthetic(id: &str) -> Vec<u8> {
    let ev = Event::Task(
        TaskEvent::new(TaskEventKind::Started, id, cnc_model::now())
            .with_hostname("synthetic@test"),
    );
    encode_redis_envelope(&event_message(encode_event(&ev), "synthetic@test"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_real_workers() {
    let db = RedisDb::acquire().expect("redis db");
    let url = db.url();
    let broker: Arc<dyn Broker> = Arc::new(
        RedisBroker::connect(&url, RedisOptions::default())
            .await
            .expect("connect"),
    );
    let backend = cnc_broker::connect_backend(&url).await.expect("backend");
    let (seen, stats) = common::Seen::collect(&broker).await;
    let tag = cnc_testsupport::unique("r");
    let (_w1, _w2, n1, n2) = common::start_workers(&tag, &url, &url).await;
    common::suite(broker.clone(), backend, &seen, &n1, &n2, &tag).await;
    // Queue discovery from kombu's binding sets (the workers declared them).
    let q = broker.discover_queues().await.expect("discover");
    assert!(
        q.contains(&"celery".to_owned()) && q.contains(&"custom".to_owned()),
        "{q:?}"
    );
    let c = stats.snapshot();
    assert_eq!(c.dropped, 0, "{c:?}");
    assert_eq!(c.decode_errors_total(), 0, "{c:?}");
}

/// Kill our own subscriber connection (only ours: `CLIENT KILL ID`, so other
/// tests and workers on this Redis are untouched): the stream reports the
/// loss, resubscribes, and later events arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stream_reconnects_after_connection_loss() {
    let db = RedisDb::acquire().expect("redis db");
    let broker = Arc::new(
        RedisBroker::connect(&db.url(), RedisOptions::default())
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
    let publish_until_seen = |id: &'static str| {
        let broker = broker.clone();
        async move {
            for _ in 0..100 {
                broker
                    .publish_event_raw("task.started", synthetic(id))
                    .await
                    .expect("publish");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let p = tokio::spawn(publish_until_seen("before"));
    expect_task(&mut stream, "before").await;
    p.abort();
    // Find our psubscribe connection on this db and kill it.
    let list = redis_cli(&["CLIENT", "LIST", "TYPE", "pubsub"]).expect("client list");
    let ids: Vec<String> = list
        .lines()
        .filter(|l| l.contains(&format!(" db={} ", db.db())))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("id="))
                .map(str::to_owned)
        })
        .collect();
    assert!(!ids.is_empty(), "{list}");
    for id in &ids {
        redis_cli(&["CLIENT", "KILL", "ID", id]).expect("kill");
    }
    // The loss is reported...
    let mut saw_error = false;
    for _ in 0..1000 {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
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
    // ...and later events arrive on the new subscription.
    let p = tokio::spawn(publish_until_seen("after"));
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

/// Garbage on the events channel is counted by reason; the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_bad_input_is_counted_and_skipped() {
    let db = RedisDb::acquire().expect("redis db");
    let broker = RedisBroker::connect(&db.url(), RedisOptions::default())
        .await
        .expect("connect");
    let opts = EventStreamOptions {
        enable_events_every: None,
        ..EventStreamOptions::default()
    };
    let stats = opts.stats.clone();
    let mut stream = broker.events(opts).await.expect("subscribe");
    let env = |body: &str, ct: &str| {
        serde_json::json!({"body": body, "content-encoding": "utf-8", "content-type": ct,
            "headers": {}, "properties": {"body_encoding": "base64", "delivery_info": {"exchange": "celeryev", "routing_key": "task.multi"}, "delivery_tag": "x", "priority": 0, "delivery_mode": 1}})
        .to_string()
    };
    let big_args = "x".repeat(10 * 1024 * 1024);
    let big_event = serde_json::json!({"type": "task-received", "uuid": "big", "args": big_args, "hostname": "h", "timestamp": 1.0, "clock": 1}).to_string();
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let garbage: Vec<Vec<u8>> = vec![
        b"this is not json".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x01],
        env("!!!not base64!!!", "application/json").into_bytes(),
        env(&b64("\u{80}\u{03}pickle"), "application/x-python-serialize").into_bytes(),
        env(&b64("[1, 2"), "application/json").into_bytes(),
        env(&b64("{\"no\": \"type\"}"), "application/json").into_bytes(),
        env(&b64(&big_event), "application/json").into_bytes(),
    ];
    let n_garbage = garbage.len() as u64;
    for g in garbage {
        broker
            .publish_event_raw("task.multi", g)
            .await
            .expect("publish");
    }
    broker
        .publish_event_raw("task.started", synthetic("good"))
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
        "bad_base64",
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

/// `mark_aborted` on the Redis backend writes what Celery's
/// `AbortableAsyncResult(id).abort()` writes: the same bytes at
/// `celery-task-meta-<id>` (Celery's own abort is run next to ours and the
/// two values compared), a one-day expiry (Celery's default
/// `result_expires`), the same value published on the key's channel
/// (Celery's result consumer listens there); a stored `SUCCESS` stays, any
/// other state is replaced; and Celery reads it back as aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_stores_aborted_as_celery_does() {
    use fred::prelude::*;

    let db = RedisDb::acquire().expect("redis db");
    let url = db.url();
    let backend = cnc_broker::connect_backend(&url).await.expect("backend");
    let ours = cnc_testsupport::unique("ab-ours-");
    let theirs = cnc_testsupport::unique("ab-celery-");
    let done = cnc_testsupport::unique("ab-done-");
    let started = cnc_testsupport::unique("ab-started-");
    let key = |id: &str| format!("celery-task-meta-{id}");

    // Listen on our key's channel before writing.
    let sub = Builder::from_config(Config::from_url(&url).expect("url"))
        .build()
        .expect("subscriber");
    let mut rx = sub.message_rx();
    sub.init().await.expect("connect subscriber");
    sub.subscribe(key(&ours)).await.expect("subscribe");

    // Celery's side: its own abort, and results stored the way a worker
    // stores them (SUCCESS, STARTED).
    let setup = format!(
        "from celery.contrib.abortable import AbortableAsyncResult\n\
         from cnc_testapp import app\n\
         AbortableAsyncResult({theirs:?}, app=app).abort()\n\
         app.backend.store_result({done:?}, 5, 'SUCCESS')\n\
         app.backend.store_result({started:?}, None, 'STARTED')\n"
    );
    celery_script(setup, &url).await;

    backend
        .mark_aborted(&ours)
        .await
        .expect("abort unknown task");
    backend
        .mark_aborted(&done)
        .await
        .expect("abort finished task");
    backend
        .mark_aborted(&started)
        .await
        .expect("abort started task");

    let raw = |id: &str| {
        redis_cli(&["-n", &db.db().to_string(), "--no-raw", "GET", &key(id)])
            .expect("redis-cli get")
    };
    // Byte for byte what Celery wrote, ids aside.
    assert_eq!(
        raw(&ours).replace(&ours, "<id>"),
        raw(&theirs).replace(&theirs, "<id>"),
    );
    let stored: serde_json::Value =
        serde_json::from_str(&cnc_broker::api::aborted_meta(&ours)).expect("json");
    assert_eq!(
        stored,
        serde_json::json!({"status": "ABORTED", "result": null, "traceback": null,
            "children": null, "date_done": null, "task_id": ours})
    );
    let ttl: i64 = redis_cli(&["-n", &db.db().to_string(), "TTL", &key(&ours)])
        .expect("ttl")
        .trim()
        .parse()
        .expect("ttl number");
    assert!((86_300..=86_400).contains(&ttl), "ttl {ttl}");

    let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("published in time")
        .expect("message");
    assert_eq!(msg.channel.to_string(), key(&ours));
    assert_eq!(
        msg.value.as_string().as_deref(),
        Some(cnc_broker::api::aborted_meta(&ours).as_str())
    );
    let _ = sub.quit().await;

    // Ours reads them as written; Celery does too.
    let get = |id: String| {
        let backend = backend.clone();
        async move { backend.get(&id).await.expect("get").expect("stored") }
    };
    let r = get(ours.clone()).await;
    assert_eq!(
        (r.status.as_str(), &r.result),
        ("ABORTED", &serde_json::Value::Null)
    );
    assert_eq!(get(done.clone()).await.status, "SUCCESS");
    assert_eq!(get(started.clone()).await.status, "ABORTED");
    let check = format!(
        "from celery.contrib.abortable import AbortableAsyncResult\n\
         from cnc_testapp import app\n\
         for i in [{ours:?}, {done:?}, {started:?}]:\n    \
             r = AbortableAsyncResult(i, app=app)\n    \
             print(r.state, r.is_aborted())\n"
    );
    let lines: Vec<String> = celery_script(check, &url)
        .await
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines, ["ABORTED True", "SUCCESS False", "ABORTED True"]);
}

/// Run `script` with the test app's Python pointed at `url` (broker and
/// backend); its stdout.
async fn celery_script(script: String, url: &str) -> String {
    let url = url.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        cnc_testsupport::run_python(&script, &[("CNC_BROKER", &url), ("CNC_BACKEND", &url)])
    })
    .await
    .expect("join")
    .expect("celery script");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
