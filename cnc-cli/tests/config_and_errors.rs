//! The configuration commands and the failure modes, run as the real
//! binary: gen-config round-trips, check-config shows the effective config
//! with secrets hidden, a bad config lists every error with exit 2, and an
//! unreachable broker is one readable line with exit 1.

mod common;

use cnc_core::config::{CeleryCncConfig, ConfigLoader};
use common::{cnc, fails, ok};

#[test]
fn gen_config_loads_back_to_the_defaults_and_passes_check_config() {
    let text = ok(&["gen-config"]);
    assert!(
        text.contains("[frontend]") && text.contains("# [prometheus]"),
        "{text}"
    );
    let cfg = ConfigLoader::new()
        .toml_str("gen-config", &text)
        .load()
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(cfg, CeleryCncConfig::default());

    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("cnc.toml");
    std::fs::write(&file, &text).expect("write");
    let file = file.to_str().expect("utf-8 path");
    // Valid, but nothing to watch yet: run would refuse, and so does check.
    let empty = fails(2, &["check-config", "--config", file]);
    assert!(
        empty.stderr.contains("nothing to watch"),
        "{}",
        empty.show()
    );
    let shown = ok(&[
        "check-config",
        "--config",
        file,
        "--broker",
        "redis://:hunter2@127.0.0.1:6379/5",
        "--basic-auth",
        "admin:swordfish",
        "--port",
        "9000",
        "--prometheus",
        "9100",
    ]);
    assert!(
        !shown.contains("hunter2") && !shown.contains("swordfish"),
        "{shown}"
    );
    let effective: toml::Table = shown.parse().unwrap_or_else(|e| panic!("{e}\n{shown}"));
    assert_eq!(effective["apps"][0]["name"].as_str(), Some("127.0.0.1/5"));
    assert_eq!(
        effective["apps"][0]["broker_url"].as_str(),
        Some("redis://:***@127.0.0.1:6379/5")
    );
    assert_eq!(effective["frontend"]["port"].as_integer(), Some(9000));
    assert_eq!(
        effective["frontend"]["basic_auth"].as_str(),
        Some("admin:***")
    );
    assert_eq!(effective["prometheus"]["port"].as_integer(), Some(9100));
    let as_json = ok(&[
        "check-config",
        "--config",
        file,
        "--broker",
        "redis://h/0",
        "--json",
        "--no-web",
    ]);
    let v: serde_json::Value = serde_json::from_str(&as_json).expect("json");
    assert!(v["frontend"].is_null(), "{v}");
}

#[test]
fn a_bad_config_lists_every_error_and_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[frontend]\nport = \"eighty\"\n\n[database]\nurl = \"mysql://root:topsecret@db/x\"\n\n\
         [ingest]\nbatch_size = 0\n\n[nonsense]\nx = 1\n",
    )
    .expect("write");
    let file = file.to_str().expect("utf-8 path");
    for cmd in ["check-config", "run"] {
        let r = fails(2, &[cmd, "--config", file, "--broker", "ftp://nowhere"]);
        let err = &r.stderr;
        assert!(
            err.starts_with("celery-cnc: 5 configuration errors:"),
            "{}",
            r.show()
        );
        for needle in [
            "frontend",
            "database.url",
            "ingest.batch_size",
            "nonsense",
            "apps[0].broker_url",
        ] {
            assert!(err.contains(needle), "{needle} missing\n{}", r.show());
        }
        assert!(!err.contains("topsecret"), "{}", r.show());
    }
    let missing = fails(2, &["check-config", "--config", "/nonexistent/cnc.toml"]);
    assert!(missing.stderr.contains("cannot read"), "{}", missing.show());
    // clap's own usage errors are exit 2 as well
    fails(2, &["run", "--prometheus", "port"]);
    fails(
        2,
        &[
            "send",
            "cnc.add",
            "--args",
            "{not json",
            "--broker",
            "redis://127.0.0.1:1/0",
        ],
    );
    fails(
        2,
        &[
            "send",
            "cnc.add",
            "--kwargs",
            "[1]",
            "--broker",
            "redis://127.0.0.1:1/0",
        ],
    );
    fails(2, &["purge", "celery", "--broker", "redis://127.0.0.1:1/0"]);
    let all = fails(
        2,
        &["control", "shutdown", "--broker", "redis://127.0.0.1:1/0"],
    );
    assert!(all.stderr.contains("--yes"), "{}", all.show());
    fails(
        2,
        &[
            "control",
            "autoscale",
            "1",
            "4",
            "--broker",
            "redis://127.0.0.1:1/0",
        ],
    );
    fails(2, &["inspect", "ping", "--broker", "ftp://127.0.0.1/0"]);
    let empty = fails(2, &["inspect", "ping", "--broker", ""]);
    assert_eq!(
        empty.stderr,
        "celery-cnc: no broker URL: pass --broker URL or set CELERY_CNC_BROKER\n"
    );
}

#[test]
fn an_unreachable_broker_is_one_line_and_exit_1() {
    for args in [
        &["inspect", "ping"][..],
        &["send", "cnc.add"],
        &["queues"],
        &["events", "--count", "1"],
        &["control", "pool-grow", "1"],
    ] {
        let mut all = args.to_vec();
        all.extend(["--broker", "redis://:hunter2@127.0.0.1:1/0"]);
        let r = fails(1, &all);
        assert_eq!(
            r.stderr,
            "celery-cnc: cannot reach broker redis://:***@127.0.0.1:1/0: connection refused\n",
            "{args:?}\n{}",
            r.show()
        );
    }
    let r = fails(
        1,
        &[
            "inspect",
            "ping",
            "--broker",
            "amqp://guest:guest@127.0.0.1:1//",
        ],
    );
    assert_eq!(
        r.stderr,
        "celery-cnc: cannot reach broker amqp://guest:***@127.0.0.1:1//: connection refused\n",
        "{}",
        r.show()
    );
    let r = cnc(&["result", "x", "--backend", "redis://127.0.0.1:1/0"]);
    assert_eq!(r.code, 1, "{}", r.show());
    assert_eq!(
        r.stderr,
        "celery-cnc: cannot reach result backend redis://127.0.0.1:1/0: connection refused\n"
    );
    // The history commands without a database: exit 3, one line.
    let r = fails(3, &["tasks", "--db", "/nonexistent/cnc.db"]);
    assert!(
        r.stderr.starts_with("celery-cnc: no database at"),
        "{}",
        r.show()
    );
}
