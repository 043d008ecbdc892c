//! Decode throughput: Redis kombu envelope + base64 + event JSON ->
//! `cnc_model::Event`, over the captured fixtures and over a realistic
//! 24-event `task.multi` batch (a worker's full event buffer).
//!
//! Run with: `cargo bench -p cnc-benches --bench decode`
//!
//! Criterion reports per-benchmark times; the last line is the headline
//! figure, single-threaded (so per core): `decode: N events/s per core`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cnc_broker::protocol::message::{Limits, encode_redis_envelope};
use cnc_broker::protocol::{decode_redis_event, encode_event_batch, event_message};
use cnc_model::Event;
use criterion::{Criterion, Throughput};

/// Every `redis/event-*.json` capture, exact bytes, and its event count.
fn fixture_events() -> Vec<(Vec<u8>, usize)> {
    let dir = cnc_model::fixtures_dir().join("redis");
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("event-"))
        .collect();
    names.sort();
    for n in names {
        let bytes = std::fs::read(dir.join(&n)).expect("fixture");
        let batch = decode_redis_event(&bytes, &Limits::default()).expect("fixture decodes");
        out.push((bytes, batch.events.len()));
    }
    out
}

/// A `task.multi` envelope of 24 task events drawn from the captures
/// (received, started, succeeded, failed with traceback, ...), in a Redis
/// envelope exactly as a worker would publish it.
fn batch_24(fixtures: &[(Vec<u8>, usize)]) -> Vec<u8> {
    let mut task_events: Vec<Event> = Vec::new();
    for (bytes, _) in fixtures {
        let batch = decode_redis_event(bytes, &Limits::default()).expect("decodes");
        task_events.extend(
            batch
                .events
                .into_iter()
                .filter(|e| matches!(e, Event::Task(_))),
        );
    }
    let events: Vec<Event> = task_events.iter().cycle().take(24).cloned().collect();
    let enc = encode_event_batch(&events);
    encode_redis_envelope(&event_message(enc, "w1@demo"))
}

fn decode_all(fixtures: &[(Vec<u8>, usize)], limits: &Limits) -> usize {
    let mut n = 0;
    for (bytes, _) in fixtures {
        let batch = decode_redis_event(black_box(bytes), limits).expect("decodes");
        n += batch.events.len();
        black_box(&batch);
    }
    n
}

fn main() {
    let limits = Limits::default();
    let fixtures = fixture_events();
    let fixture_count: usize = fixtures.iter().map(|(_, n)| n).sum();
    let batch = batch_24(&fixtures);

    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("decode");
        g.throughput(Throughput::Elements(fixture_count as u64));
        g.bench_function("redis_event_fixtures", |b| {
            b.iter(|| decode_all(&fixtures, &limits))
        });
        g.throughput(Throughput::Elements(24));
        g.bench_function("redis_task_multi_24", |b| {
            b.iter(|| {
                let batch = decode_redis_event(black_box(&batch), &limits).expect("decodes");
                assert_eq!(batch.events.len(), 24);
                batch
            })
        });
        g.finish();
    }
    c.final_summary();

    // Headline figure: the realistic batch, plus the fixture mix, for ~2 s
    // each on this one thread.
    let rate = |f: &mut dyn FnMut() -> usize| {
        let start = Instant::now();
        let mut events = 0usize;
        while start.elapsed() < Duration::from_secs(2) {
            events += f();
        }
        events as f64 / start.elapsed().as_secs_f64()
    };
    let multi = rate(&mut || {
        decode_redis_event(black_box(&batch), &limits)
            .expect("decodes")
            .events
            .len()
    });
    let mix = rate(&mut || decode_all(&fixtures, &limits));
    println!(
        "decode (fixture mix, {} envelopes): {:.0} events/s per core",
        fixtures.len(),
        mix
    );
    println!(
        "decode (24-event task.multi, {} bytes): {:.0} events/s per core",
        batch.len(),
        multi
    );
    println!("decode: {multi:.0} events/s per core");
}
