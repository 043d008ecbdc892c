//! Shared helpers for the celery-cnc benchmarks.

use std::path::Path;

/// Run `../shared/bench/gen_events.py` with `python` against the Redis
/// broker `url`: `events` task events offered at `rate` per second. Returns
/// the generator's JSON summary (its last JSON line: `task_events`,
/// `worker_events`, `achieved_message_rate`, `start_late_s`, …). Panics
/// with the generator's stderr when it fails: this is benchmark set-up.
pub async fn run_gen_events(python: &Path, url: &str, events: u64, rate: f64) -> serde_json::Value {
    let gen_path = cnc_model::fixtures_dir().join("../../bench/gen_events.py");
    let (python, url) = (python.to_owned(), url.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(&gen_path)
            .args([
                "--broker",
                &url,
                "--events",
                &events.to_string(),
                "--rate",
                &rate.to_string(),
            ])
            .output()
    })
    .await
    .expect("join")
    .expect("run gen_events.py");
    assert!(
        out.status.success(),
        "gen_events.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("generator summary")
}

/// Events the generator planned to offer, from its summary.
pub fn offered_events(summary: &serde_json::Value) -> u64 {
    summary["task_events"].as_u64().unwrap_or(0) + summary["worker_events"].as_u64().unwrap_or(0)
}
