//! End-to-end event ingest: real Celery-format events published to the local
//! broker at fixed rates, received by our event stream. Prints the highest
//! rate at which 100% of the offered events came out of the stream.
//!
//! Run with: `cargo bench -p cnc-benches --bench broker_ingest`
//!
//! * Redis: `../shared/bench/gen_events.py` (Celery's own EventDispatcher
//!   renders every message; one event per PUBLISH) with the test venv's
//!   Python, on a leased Redis db.
//! * RabbitMQ: Rust publishers (lapin, via `AmqpBroker::event_publisher`),
//!   several connections in parallel (`gen_events.py` speaks Redis only),
//!   sending pre-rendered Celery event bodies to the `celeryev` exchange,
//!   each paced per millisecond, on a fresh vhost.
//!
//! Env: `CNC_INGEST_SECONDS` (default 2) seconds of events per step;
//! `CNC_AMQP_PUBLISHERS` (default 4) publisher connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cnc_broker::amqp::{AmqpBroker, AmqpOptions};
use cnc_broker::protocol::encode_event;
use cnc_broker::redis::{RedisBroker, RedisOptions};
use cnc_broker::{Broker, EventStreamOptions, StreamStats};
use cnc_model::{Event, TaskEvent, TaskEventKind};

struct Step {
    target: f64,
    offered: u64,
    delivered: u64,
    dropped: u64,
    decode_errors: u64,
    achieved: f64,
}

impl Step {
    fn loss_free(&self) -> bool {
        self.delivered == self.offered && self.dropped == 0 && self.decode_errors == 0
    }
}

/// Subscribe and count delivered events in a background task.
async fn subscribe(
    broker: &dyn Broker,
) -> (
    Arc<AtomicU64>,
    Arc<StreamStats>,
    tokio::task::JoinHandle<()>,
) {
    let opts = EventStreamOptions {
        capacity: 1 << 20,
        enable_events_every: None,
        ..EventStreamOptions::default()
    };
    let stats = opts.stats.clone();
    let mut stream = broker.events(opts).await.expect("subscribe");
    let count = Arc::new(AtomicU64::new(0));
    let c2 = count.clone();
    let task = tokio::spawn(async move {
        while let Some(Ok(_)) = stream.next().await {
            c2.fetch_add(1, Ordering::Relaxed);
        }
    });
    (count, stats, task)
}

/// Wait until `count` reaches `expected` or stops moving for 2 s.
async fn settle(count: &AtomicU64, expected: u64) -> u64 {
    let mut last = count.load(Ordering::Relaxed);
    let mut still = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = count.load(Ordering::Relaxed);
        if now >= expected {
            return now;
        }
        if now != last {
            last = now;
            still = Instant::now();
        } else if still.elapsed() > Duration::from_secs(2) {
            return now;
        }
    }
}

async fn redis_step(url: &str, python: &std::path::Path, rate: f64, secs: f64) -> Step {
    let broker = RedisBroker::connect(url, RedisOptions::default())
        .await
        .expect("redis");
    let (count, stats, task) = subscribe(&broker).await;
    let events = (rate * secs) as u64;
    let summary = cnc_benches::run_gen_events(python, url, events, rate).await;
    let offered = cnc_benches::offered_events(&summary);
    let delivered = settle(&count, offered).await;
    task.abort();
    let c = stats.snapshot();
    Step {
        target: rate,
        offered,
        delivered,
        dropped: c.dropped,
        decode_errors: c.decode_errors_total(),
        achieved: summary["achieved_message_rate"].as_f64().unwrap_or(0.0),
    }
}

fn rendered_events(n: usize) -> Vec<(String, Vec<u8>)> {
    let kinds = [
        TaskEventKind::Received,
        TaskEventKind::Started,
        TaskEventKind::Succeeded,
    ];
    (0..n)
        .map(|i| {
            let mut ev = TaskEvent::new(
                kinds[i % 3].clone(),
                format!("{:032x}", i),
                cnc_model::now(),
            )
            .with_hostname(format!("w{}@bench", i % 8))
            .with_clock(i as u64);
            ev.name = Some("app.tasks.send_email".into());
            ev.args = Some(format!(
                "('user-{i}@example.com', {})",
                "'x' * 40, ".repeat(6)
            ));
            ev.kwargs = Some("{'priority': 'high', 'template': 'welcome'}".into());
            ev.result = Some("{'sent': True, 'id': 12345}".into());
            ev.pid = Some(4242);
            ev.utcoffset = Some(0.0);
            let enc = encode_event(&Event::Task(ev));
            (enc.routing_key, enc.body)
        })
        .collect()
}

/// One paced publisher: `total` events at `rate`, starting at `start`.
async fn publish_paced(
    publisher: cnc_broker::amqp::AmqpEventPublisher,
    bodies: Arc<Vec<(String, Vec<u8>)>>,
    offset: usize,
    rate: f64,
    total: u64,
    start: Instant,
) -> u64 {
    let mut sent = 0u64;
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
        while sent < due {
            let (rk, body) = &bodies[(offset + sent as usize) % bodies.len()];
            publisher.publish(rk, body).await.expect("publish");
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sent
}

/// `publishers` connections, each with its own channel, share the rate:
/// one connection's await-per-publish loop could not offer more than about
/// 25,000 events/s, which capped the figure below the consumer's.
async fn amqp_step(
    url: &str,
    bodies: &Arc<Vec<(String, Vec<u8>)>>,
    publishers: usize,
    rate: f64,
    secs: f64,
) -> Step {
    let broker = AmqpBroker::connect(url, AmqpOptions::default())
        .await
        .expect("amqp");
    let (count, stats, task) = subscribe(&broker).await;
    let total = (rate * secs) as u64;
    let mut pubs = Vec::with_capacity(publishers);
    for _ in 0..publishers {
        pubs.push(broker.event_publisher().await.expect("publisher"));
    }
    let n = publishers as u64;
    let start = Instant::now();
    let handles: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            // Split `total` exactly: the first `total % n` get one more.
            let share = total / n + u64::from((i as u64) < total % n);
            tokio::spawn(publish_paced(
                p,
                bodies.clone(),
                i * 1000,
                rate / n as f64,
                share,
                start,
            ))
        })
        .collect();
    let mut sent = 0u64;
    for h in handles {
        sent += h.await.expect("publisher task");
    }
    let achieved = sent as f64 / start.elapsed().as_secs_f64();
    let delivered = settle(&count, sent).await;
    task.abort();
    let c = stats.snapshot();
    Step {
        target: rate,
        offered: sent,
        delivered,
        dropped: c.dropped,
        decode_errors: c.decode_errors_total(),
        achieved,
    }
}

fn print(broker: &str, s: &Step) {
    println!(
        "broker_ingest {broker}: target {:.0} ev/s, achieved {:.0} msg/s, offered {}, delivered {}, dropped {}, decode errors {} -> {}",
        s.target,
        s.achieved,
        s.offered,
        s.delivered,
        s.dropped,
        s.decode_errors,
        if s.loss_free() { "loss-free" } else { "LOSS" }
    );
}

fn main() {
    let secs: f64 = std::env::var("CNC_INGEST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Redis, with Celery's own rendering.
        let python = cnc_testsupport::celery_venv().expect("celery venv");
        let db = cnc_testsupport::RedisDb::acquire().expect("redis db");
        let mut best_redis = None;
        for rate in [100_000.0, 150_000.0, 200_000.0, 300_000.0] {
            let s = redis_step(&db.url(), &python, rate, secs).await;
            print("redis", &s);
            if !s.loss_free() {
                break;
            }
            let r = s.achieved.min(s.target);
            best_redis = Some(best_redis.map_or(r, |b: f64| b.max(r)));
            if s.achieved < 0.9 * s.target {
                println!("broker_ingest redis: generator cannot offer more on this machine");
                break;
            }
        }
        match best_redis {
            Some(r) => println!("broker_ingest redis: highest loss-free rate {r:.0} events/s"),
            None => println!("broker_ingest redis: no loss-free rate (lost at 100000 events/s)"),
        }

        // RabbitMQ, with our own publishers in parallel.
        let vhost = cnc_testsupport::RabbitVhost::create().expect("vhost");
        let bodies = Arc::new(rendered_events(10_000));
        let publishers: usize = std::env::var("CNC_AMQP_PUBLISHERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4)
            .max(1);
        println!("broker_ingest rabbitmq: {publishers} publisher connections");
        let mut best_amqp = None;
        for rate in [
            10_000.0, 25_000.0, 50_000.0, 75_000.0, 100_000.0, 150_000.0,
        ] {
            let s = amqp_step(&vhost.url(), &bodies, publishers, rate, secs).await;
            print("rabbitmq", &s);
            if !s.loss_free() {
                break;
            }
            let r = s.achieved.min(s.target);
            best_amqp = Some(best_amqp.map_or(r, |b: f64| b.max(r)));
            if s.achieved < 0.9 * s.target {
                println!("broker_ingest rabbitmq: publisher cannot offer more on this machine");
                break;
            }
        }
        match best_amqp {
            Some(r) => println!(
                "broker_ingest rabbitmq: highest loss-free rate {r:.0} events/s ({publishers} publishers)"
            ),
            None => println!("broker_ingest rabbitmq: no loss-free rate (lost at 10000 events/s)"),
        }
    });
}
