//! The service with its hosted components on: the web UI and Prometheus
//! are built by the orchestrator from the config, serve on their own
//! ports, and show in the component status.
#![cfg(all(feature = "web", feature = "metrics"))]

use std::sync::Arc;
use std::time::Duration;

use cnc_core::broker::memory::MemoryBroker;
use cnc_core::config::{
    CeleryApp, CeleryCncConfig, DatabaseConfig, FrontendConfig, IngestConfig, PrometheusConfig,
};
use cnc_core::{CeleryCnc, Event, TaskEvent, TaskEventKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plain HTTP/1.1 GET; returns (status, body).
async fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_and_prometheus_run_as_components() {
    let (web_port, prom_port) = (free_port(), free_port());
    let cfg = CeleryCncConfig::builder()
        .app(CeleryApp::new("mem", "memory://"))
        .database(DatabaseConfig::memory())
        .logging(None)
        .ingest(IngestConfig {
            batch_interval: Duration::from_millis(20),
            enable_events_interval: None,
            ..IngestConfig::default()
        })
        .frontend(FrontendConfig {
            port: web_port,
            ..FrontendConfig::default()
        })
        .prometheus(PrometheusConfig {
            port: prom_port,
            ..PrometheusConfig::default()
        })
        .build()
        .expect("config");
    let broker = MemoryBroker::new();
    let running = CeleryCnc::new(cfg)
        .with_broker("memory://", Arc::new(broker.clone()))
        .without_global_subscriber()
        .start()
        .await
        .expect("start");

    let names: Vec<String> = running.status().into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "logging",
            "store",
            "ingest",
            "listener.mem",
            "workers",
            "prometheus",
            "frontend"
        ]
    );

    // An event flows to both.
    for _ in 0..200 {
        let mut e =
            TaskEvent::new(TaskEventKind::Received, "t-1", cnc_core::now()).with_hostname("w1@h");
        e.name = Some("cnc.add".into());
        if broker.emit(Event::Task(e)) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut seen = false;
    for _ in 0..200 {
        let (status, body) = get(web_port, "/api/v1/tasks/t-1").await;
        if status == 200 && body.contains("cnc.add") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(seen, "the web API serves the ingested task");

    let (status, body) = get(web_port, "/api/components").await;
    assert_eq!(status, 200, "{body}");
    let comps: serde_json::Value = serde_json::from_str(&body).expect("json");
    let text = comps.to_string();
    assert!(
        text.contains("\"prometheus\"") && text.contains("\"frontend\""),
        "{text}"
    );

    let (status, body) = get(prom_port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("celery_cnc_"), "{body}");

    running.stop().await.expect("stop");
    // Stopped: the ports are closed.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", web_port))
            .await
            .is_err()
    );
}
