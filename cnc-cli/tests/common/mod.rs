//! Running the `celery-cnc` binary in tests.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::Duration;

use cnc_testsupport::{CeleryWorker, WorkerOpts};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_celery-cnc");

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// The whole output, for assertion messages.
    pub fn show(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Run `celery-cnc args...` with a clean `CELERY_CNC*` environment.
pub fn cnc(args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("CELERY_CNC") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run celery-cnc").into()
}

/// Run and expect exit 0; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let r = cnc(args);
    assert_eq!(r.code, 0, "celery-cnc {args:?}\n{}", r.show());
    r.stdout
}

/// Run with `--json` and expect exit 0; returns the parsed output.
pub fn json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = ok(&all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Run and expect exit `code`; returns the run.
pub fn fails(code: i32, args: &[&str]) -> Run {
    let r = cnc(args);
    assert_eq!(r.code, code, "celery-cnc {args:?}\n{}", r.show());
    assert!(!r.stderr.contains("panicked"), "{}", r.show());
    r
}

/// Start two workers in parallel: `w1@tag` on `celery`, `w2@tag` on
/// `celery` and `custom`.
pub fn two_workers(
    tag: &str,
    broker: &str,
    backend: &str,
) -> (CeleryWorker, CeleryWorker, String, String) {
    let n1 = format!("w1@{tag}");
    let n2 = format!("w2@{tag}");
    let o1 = WorkerOpts::new(&n1, broker)
        .backend(backend)
        .queues(&["celery"]);
    let o2 = WorkerOpts::new(&n2, broker)
        .backend(backend)
        .queues(&["celery", "custom"]);
    let a = std::thread::spawn(move || CeleryWorker::start(o1));
    let b = std::thread::spawn(move || CeleryWorker::start(o2));
    let w1 = a.join().expect("join").expect("start w1");
    let w2 = b.join().expect("join").expect("start w2");
    (w1, w2, n1, n2)
}

/// Poll every 300 ms for up to `secs`.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    cnc_testsupport::wait_for(Duration::from_secs(secs), || {
        let v = f();
        if v.is_none() {
            std::thread::sleep(Duration::from_millis(200));
        }
        v
    })
    .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}
