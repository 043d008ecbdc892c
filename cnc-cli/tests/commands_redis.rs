//! The one-shot commands, run as the real binary against two real Celery
//! workers on a private Redis db. One worker pair serves every check, so
//! the whole file costs one worker start-up.

mod common;

use std::process::{Command, Stdio};

use cnc_testsupport::{RedisDb, unique};
use common::{BIN, eventually, fails, json, ok, two_workers};
use serde_json::{Value, json};

fn pool_size(stats: &Value, node: &str) -> usize {
    stats
        .pointer(&format!("/{}/pool/processes", node.replace('/', "~1")))
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

#[test]
fn one_shot_commands_against_two_real_workers() {
    let redis = RedisDb::acquire().expect("redis db");
    let url = redis.url();
    let b = url.as_str();
    let tag = unique("cli");
    let (_w1, _w2, n1, n2) = two_workers(&tag, b, b);
    let both = format!("{n1},{n2}");
    let both = both.as_str();

    // Events: a child streaming task events while the rest runs.
    let events = Command::new(BIN)
        .args([
            "events",
            "--broker",
            b,
            "--type",
            "task-",
            "--count",
            "3",
            "--timeout",
            "90",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start events");

    // inspect ping, JSON and table.
    let ping = json(&["inspect", "ping", "--broker", b, "-d", both, "-t", "5"]);
    assert_eq!(
        ping,
        json!({ n1.clone(): {"ok": "pong"}, n2.clone(): {"ok": "pong"} })
    );
    let table = ok(&["inspect", "ping", "--broker", b, "-d", both, "-t", "5"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("WORKER") && lines[0].contains("REPLY"),
        "{table}"
    );
    assert!(
        lines[1].starts_with(&n1) && lines[1].ends_with("pong"),
        "{table}"
    );
    assert!(lines[2].starts_with(&n2), "{table}");

    // stats
    let stats = json(&["inspect", "stats", "--broker", b, "-d", both, "-t", "5"]);
    assert_eq!(pool_size(&stats, &n1), 2, "{stats}");
    let table = ok(&["inspect", "stats", "--broker", b, "-d", &n1, "-t", "5"]);
    assert!(
        table.contains("PID") && table.contains(&n1) && table.contains("redis"),
        "{table}"
    );

    // registered, with attributes
    let reg = json(&[
        "inspect",
        "registered",
        "rate_limit",
        "--broker",
        b,
        "-d",
        both,
        "-t",
        "5",
    ]);
    assert!(
        reg[&n1]
            .to_string()
            .contains("cnc.limited [rate_limit=10/m]"),
        "{reg}"
    );
    let table = ok(&[
        "inspect",
        "registered",
        "rate_limit",
        "--broker",
        b,
        "-d",
        &n1,
        "-t",
        "5",
    ]);
    assert!(
        table
            .lines()
            .any(|l| l.contains("cnc.limited") && l.ends_with("rate_limit=10/m")),
        "{table}"
    );

    // active_queues
    let aq = json(&[
        "inspect",
        "active_queues",
        "--broker",
        b,
        "-d",
        both,
        "-t",
        "5",
    ]);
    assert!(aq[&n2].to_string().contains("\"custom\""), "{aq}");
    assert!(!aq[&n1].to_string().contains("\"custom\""), "{aq}");
    let table = ok(&[
        "inspect",
        "active-queues",
        "--broker",
        b,
        "-d",
        &n2,
        "-t",
        "5",
    ]);
    assert!(table.lines().any(|l| l.contains("custom")), "{table}");

    // send + result
    let id = ok(&["send", "cnc.add", "--args", "[2, 3]", "--broker", b]);
    let id = id.trim();
    assert_eq!(id.len(), 36, "{id}");
    let r = json(&["result", id, "--backend", b, "--wait", "30"]);
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(r["result"], 5, "{r}");
    let table = ok(&["result", id, "--backend", b]);
    assert!(table.contains("SUCCESS"), "{table}");
    let sent = json(&[
        "send",
        "cnc.echo",
        "--kwargs",
        r#"{"k": "v ✓"}"#,
        "--queue",
        "custom",
        "--broker",
        b,
    ]);
    assert_eq!(sent["queue"], "custom");
    let r = json(&[
        "result",
        sent["id"].as_str().expect("id"),
        "--backend",
        b,
        "--wait",
        "30",
    ]);
    assert_eq!(r["result"]["kwargs"], json!({"k": "v ✓"}), "{r}");

    // revoke --terminate of a sleeping task
    let sleeper = ok(&["send", "cnc.sleep", "--args", "[60]", "--broker", b]);
    let sleeper = sleeper.trim();
    eventually(30, "the sleeping task to be active", || {
        let active = json(&["inspect", "active", "--broker", b, "-d", both, "-t", "3"]);
        active.to_string().contains(sleeper).then_some(())
    });
    let rv = json(&[
        "revoke",
        sleeper,
        "--terminate",
        "--signal",
        "KILL",
        "--broker",
        b,
        "-d",
        both,
        "-t",
        "5",
    ]);
    assert_eq!(rv.as_object().map(|m| m.len()), Some(2), "{rv}");
    let r = json(&["result", sleeper, "--backend", b, "--wait", "30"]);
    assert_eq!(r["status"], "REVOKED", "{r}");
    let revoked = json(&["inspect", "revoked", "--broker", b, "-d", both, "-t", "5"]);
    assert!(revoked[&n1].to_string().contains(sleeper), "{revoked}");
    let active = json(&["inspect", "active", "--broker", b, "-d", both, "-t", "5"]);
    assert!(!active.to_string().contains(sleeper), "{active}");

    // control pool-grow shows in stats; pool-shrink undoes it
    let table = ok(&[
        "control",
        "pool-grow",
        "1",
        "--broker",
        b,
        "-d",
        &n1,
        "-t",
        "5",
    ]);
    assert!(table.contains(&n1), "{table}");
    eventually(20, "a pool of 3", || {
        let s = json(&["inspect", "stats", "--broker", b, "-d", &n1, "-t", "3"]);
        (pool_size(&s, &n1) == 3).then_some(())
    });
    ok(&[
        "control",
        "pool_shrink",
        "1",
        "--broker",
        b,
        "-d",
        &n1,
        "-t",
        "5",
    ]);
    eventually(20, "a pool of 2", || {
        let s = json(&["inspect", "stats", "--broker", b, "-d", &n1, "-t", "3"]);
        (pool_size(&s, &n1) == 2).then_some(())
    });

    // add-consumer: w1 then runs tasks sent to the new queue
    let extra = format!("extra-{tag}");
    let ac = json(&[
        "control",
        "add-consumer",
        &extra,
        "--broker",
        b,
        "-d",
        &n1,
        "-t",
        "5",
    ]);
    assert!(ac[&n1].to_string().contains("add consumer"), "{ac}");
    let aq = json(&[
        "inspect",
        "active_queues",
        "--broker",
        b,
        "-d",
        &n1,
        "-t",
        "5",
    ]);
    assert!(aq.to_string().contains(&extra), "{aq}");
    let id = ok(&[
        "send", "cnc.add", "--args", "[20, 22]", "--queue", &extra, "--broker", b,
    ]);
    let r = json(&["result", id.trim(), "--backend", b, "--wait", "30"]);
    assert_eq!(r["result"], 42, "{r}");
    ok(&[
        "control",
        "cancel-consumer",
        &extra,
        "--broker",
        b,
        "-d",
        &n1,
        "-t",
        "5",
    ]);

    // rate-limit shows in registered
    ok(&[
        "control",
        "rate-limit",
        "cnc.mul",
        "7/m",
        "--broker",
        b,
        "-d",
        both,
        "-t",
        "5",
    ]);
    let reg = json(&[
        "inspect",
        "registered",
        "rate_limit",
        "--broker",
        b,
        "-d",
        &n1,
        "-t",
        "5",
    ]);
    assert!(
        reg.to_string().contains("cnc.mul [rate_limit=7/m]"),
        "{reg}"
    );
    ok(&[
        "control",
        "rate-limit",
        "cnc.mul",
        "0",
        "--broker",
        b,
        "-d",
        both,
        "-t",
        "5",
    ]);
    // time-limit is acknowledged by both
    let tl = json(&[
        "control",
        "time-limit",
        "cnc.sleep",
        "5",
        "10",
        "--broker",
        b,
        "-d",
        both,
        "-t",
        "5",
    ]);
    assert!(tl.to_string().contains("time limits set"), "{tl}");

    // A worker's error reply is exit 1, with the error in the table.
    let err = fails(
        1,
        &[
            "control",
            "autoscale",
            "4",
            "2",
            "--broker",
            b,
            "-d",
            &n1,
            "-t",
            "5",
        ],
    );
    assert!(err.stdout.contains(&n1), "{}", err.show());
    assert!(err.stderr.contains("with an error"), "{}", err.show());

    // queues: depth of an idle queue, consumers of the others
    let idle = format!("idle-{tag}");
    for (task, args) in [
        ("cnc.add", "[1, 1]"),
        ("cnc.add", "[1, 2]"),
        ("cnc.add", "[1, 3]"),
        ("cnc.mul", "[2, 2]"),
        ("cnc.mul", "[2, 3]"),
    ] {
        ok(&[
            "send", task, "--args", args, "--queue", &idle, "--broker", b,
        ]);
    }
    ok(&[
        "send",
        "cnc.add",
        "--args",
        "[0, 0]",
        "--queue",
        &idle,
        "--priority",
        "9",
        "--broker",
        b,
    ]);
    let qs = json(&["queues", &idle, "--broker", b, "-t", "3"]);
    let by_name = |qs: &Value, name: &str| {
        qs.as_array()
            .and_then(|a| a.iter().find(|q| q["queue"] == name).cloned())
            .unwrap_or_else(|| panic!("no {name} in {qs}"))
    };
    let q = by_name(&qs, &idle);
    assert_eq!(q["messages"], 6, "{qs}");
    assert_eq!(q["by_priority"], json!([5, 0, 0, 1]), "{qs}");
    assert_eq!(q["consumers"], 0, "{qs}");
    let custom = by_name(&qs, "custom");
    assert_eq!(custom["workers"], json!([n2.clone()]), "{qs}");
    let celery = by_name(&qs, "celery");
    assert_eq!(celery["consumers"], 2, "{qs}");
    let table = ok(&["queues", &idle, "--broker", b]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&idle) && l.contains(" 6 ") && l.ends_with("5/0/0/1")),
        "{table}"
    );

    // purge --task leaves the other messages; it refuses without --yes
    let no = fails(2, &["purge", &idle, "--task", "cnc.add", "--broker", b]);
    assert!(no.stderr.contains("--yes"), "{}", no.show());
    let out = ok(&["purge", &idle, "--task", "cnc.add", "--yes", "--broker", b]);
    assert_eq!(out.trim(), format!("purged 4 messages from queue {idle}"));
    let q = by_name(&json(&["queues", &idle, "--broker", b]), &idle);
    assert_eq!(q["messages"], 2, "{q}");
    let p = json(&["purge", &idle, "--yes", "--broker", b]);
    assert_eq!(p["purged"], 2);

    // Not every named node answered: exit 3.
    let none = fails(
        3,
        &[
            "inspect",
            "ping",
            "--broker",
            b,
            "-d",
            &format!("nobody@{tag}"),
            "-t",
            "1",
        ],
    );
    assert!(none.stderr.contains("no worker replied"), "{}", none.show());
    let missing = fails(3, &["result", "no-such-id", "--backend", b]);
    assert!(missing.stderr.contains("no result"), "{}", missing.show());

    // events --count 3: three task events as JSON lines
    let out = events.wait_with_output().expect("events");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?} {text} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    for e in &lines {
        assert!(
            e["type"].as_str().is_some_and(|t| t.starts_with("task-")),
            "{e}"
        );
    }
    // events --timeout without enough events: exit 3
    let few = fails(
        3,
        &[
            "events",
            "--broker",
            b,
            "--type",
            "nothing-",
            "--count",
            "1",
            "--timeout",
            "1",
        ],
    );
    assert!(few.stderr.contains("0 of 1 events"), "{}", few.show());

    // shutdown: no reply; the workers stop.
    let out = ok(&["control", "shutdown", "--broker", b, "-d", &n2]);
    assert!(out.contains("shutdown sent"), "{out}");
    eventually(30, "w2 to stop answering", || {
        let r = common::cnc(&["inspect", "ping", "--broker", b, "-d", &n2, "-t", "1"]);
        (r.code == 3).then_some(())
    });
}
