//! RabbitMQ smoke test of the one-shot commands: a real Celery worker on a
//! private vhost (results in a private Redis db), then `inspect ping`,
//! `send` + `result`, `events`, and `queues` with RabbitMQ's own consumer count.

mod common;

use cnc_testsupport::{CeleryWorker, RabbitVhost, RedisDb, WorkerOpts, unique};
use common::{json, ok};
use serde_json::json;

#[test]
fn rabbitmq_inspect_send_and_queues() {
    let vhost = RabbitVhost::create().expect("vhost");
    let redis = RedisDb::acquire().expect("redis db");
    let broker = vhost.url();
    let backend = redis.url();
    let (b, r) = (broker.as_str(), backend.as_str());
    let node = format!("w1@{}", unique("amqp"));
    let _worker = CeleryWorker::start(WorkerOpts::new(&node, b).backend(r)).expect("worker");

    let ping = json(&["inspect", "ping", "--broker", b, "-d", &node, "-t", "5"]);
    assert_eq!(ping, json!({ node.clone(): {"ok": "pong"} }));

    let events = std::process::Command::new(common::BIN)
        .args(["events", "--broker", b, "--type", "task-succeeded"])
        .args(["--count", "1", "--timeout", "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("events");
    // The subscription is set up before the task is sent.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let id = ok(&["send", "cnc.add", "--args", "[40, 2]", "--broker", b]);
    let res = json(&["result", id.trim(), "--backend", r, "--wait", "30"]);
    assert_eq!(res["result"], 42, "{res}");
    let out = events.wait_with_output().expect("events output");
    assert!(out.status.success(), "{:?}", out.status);
    let event: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON event");
    assert_eq!(event["uuid"], id.trim(), "{event}");
    assert_eq!(event["result"], "42", "{event}");

    let idle = format!("idle-{}", unique("q"));
    // RabbitMQ cannot list queues: the queue is named, and declared by send.
    ok(&[
        "send", "cnc.add", "--args", "[1, 2]", "--queue", &idle, "--broker", b,
    ]);
    ok(&[
        "send", "cnc.add", "--args", "[1, 3]", "--queue", &idle, "--broker", b,
    ]);
    let qs = json(&["queues", &idle, "--broker", b, "-t", "3"]);
    let find = |name: &str| {
        qs.as_array()
            .and_then(|a| a.iter().find(|q| q["queue"] == name).cloned())
            .unwrap_or_else(|| panic!("no {name} in {qs}"))
    };
    assert_eq!(find(&idle)["messages"], 2, "{qs}");
    assert_eq!(find(&idle)["consumers"], 0, "{qs}");
    assert_eq!(find("celery")["consumers"], 1, "{qs}");
    let table = ok(&["queues", &idle, "--broker", b]);
    assert!(table.lines().any(|l| l.starts_with(&idle)), "{table}");
    assert!(!table.contains("guest:guest"), "{table}");
}
