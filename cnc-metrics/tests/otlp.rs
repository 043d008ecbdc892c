//! OpenTelemetry export against real OTLP receivers built here from the
//! official protobuf definitions: a tonic gRPC collector and an
//! HTTP/protobuf one. Spans of a real chain and a real chord (run by real
//! Celery workers on Redis) arrive with the right trace and parent ids;
//! metrics arrive; a dead endpoint drops and counts without slowing
//! `observe`.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cnc_metrics::otel::ids;
use cnc_metrics::{OtelComponent, OtelExporter};
use cnc_model::config::{OpenTelemetryConfig, OtlpProtocol};
use cnc_model::exporter::Exporter;
use cnc_model::{Event, TaskEvent, TaskEventKind};
use cnc_testsupport::{CeleryWorker, RedisDb, WorkerOpts};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// What a receiver got.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    headers: Arc<Mutex<Vec<String>>>,
}

impl Received {
    fn add_traces(&self, req: ExportTraceServiceRequest) {
        let mut s = self.spans.lock().expect("lock");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.clone());
            assert_eq!(
                service,
                Some(any_value::Value::StringValue("cnc-test".into())),
                "resource carries service.name"
            );
            for ss in rs.scope_spans {
                s.extend(ss.spans);
            }
        }
    }

    fn span(&self, task_id: &str) -> Option<Span> {
        let want = ids::span_id(task_id).to_vec();
        self.spans
            .lock()
            .expect("lock")
            .iter()
            .find(|s| s.span_id == want)
            .cloned()
    }

    fn metric_names(&self) -> Vec<String> {
        self.metrics
            .lock()
            .expect("lock")
            .iter()
            .flat_map(|r| r.resource_metrics.iter())
            .flat_map(|r| r.scope_metrics.iter())
            .flat_map(|s| s.metrics.iter())
            .map(|m| m.name.clone())
            .collect()
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Some(v) = request.metadata().get("x-api-key") {
            self.headers
                .lock()
                .expect("lock")
                .push(v.to_str().unwrap_or("").to_owned());
        }
        self.add_traces(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics
            .lock()
            .expect("lock")
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A gRPC OTLP receiver on a free port.
async fn grpc_receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let rec = Received::default();
    let incoming = futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    });
    let router = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(rec.clone()))
        .add_service(MetricsServiceServer::new(rec.clone()));
    tokio::spawn(async move {
        let _ = router.serve_with_incoming(incoming).await;
    });
    (format!("http://{addr}"), rec)
}

/// An HTTP/protobuf OTLP receiver (`/v1/traces`, `/v1/metrics`).
async fn http_receiver() -> (String, Received) {
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let rec = Received::default();
    let r2 = rec.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let rec = r2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let rec = rec.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let ctype = req
                                .headers()
                                .get(hyper::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            assert_eq!(ctype, "application/x-protobuf");
                            let body = req.into_body().collect().await.expect("body").to_bytes();
                            match path.as_str() {
                                "/v1/traces" => rec.add_traces(
                                    ExportTraceServiceRequest::decode(body).expect("decode traces"),
                                ),
                                "/v1/metrics" => rec.metrics.lock().expect("lock").push(
                                    ExportMetricsServiceRequest::decode(body)
                                        .expect("decode metrics"),
                                ),
                                other => panic!("unexpected path {other}"),
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                bytes::Bytes::new(),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), rec)
}

fn config(endpoint: &str, protocol: OtlpProtocol) -> OpenTelemetryConfig {
    let mut c = OpenTelemetryConfig {
        endpoint: endpoint.to_owned(),
        protocol,
        service_name: "cnc-test".into(),
        export_interval: Duration::from_millis(300),
        ..OpenTelemetryConfig::default()
    };
    c.headers.insert("x-api-key".into(), "sekret".into());
    c.resource_attributes
        .insert("deployment.environment".into(), "test".into());
    c
}

fn attr(span: &Span, key: &str) -> Option<any_value::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone())
}

fn s(v: &str) -> Option<any_value::Value> {
    Some(any_value::Value::StringValue(v.to_owned()))
}

async fn wait_spans(rec: &Received, ids: &[String]) -> HashMap<String, Span> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found: HashMap<String, Span> = ids
            .iter()
            .filter_map(|id| rec.span(id).map(|s| (id.clone(), s)))
            .collect();
        if found.len() == ids.len() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} spans arrived",
            found.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_and_chord_of_real_workers_are_traces() {
    let db = RedisDb::acquire().expect("redis db");
    let url = db.url();
    let app = common::redis_app("otel", &url).await;
    let (endpoint, rec) = grpc_receiver().await;
    let mut svc = common::Service::new();
    svc.ingest(&app).await;
    svc.start(OtelComponent::new(config(&endpoint, OtlpProtocol::Grpc)))
        .await;

    let tag = cnc_testsupport::unique("ot");
    let opts = WorkerOpts::new(format!("w1@{tag}"), &url)
        .backend(&url)
        .concurrency(2);
    let _worker = tokio::task::spawn_blocking(move || CeleryWorker::start(opts))
        .await
        .expect("join")
        .expect("start worker");

    // Real canvases, built by Celery itself: a chain of three, and a task
    // whose result feeds a chord (header of two, then the callback).
    let script = r#"
import uuid
from celery import chain, chord
from cnc_testapp import add, mul, tsum
ids = [str(uuid.uuid4()) for _ in range(7)]
chain(add.s(1, 2).set(task_id=ids[0]), mul.s(10).set(task_id=ids[1]),
      add.s(5).set(task_id=ids[2])).apply_async()
(add.s(1, 1).set(task_id=ids[3])
 | chord([mul.s(2).set(task_id=ids[4]), mul.s(3).set(task_id=ids[5])],
         tsum.s().set(task_id=ids[6]))).apply_async()
print(' '.join(ids))
"#;
    let env = [("CNC_BROKER", url.as_str()), ("CNC_BACKEND", url.as_str())];
    let out = tokio::task::spawn_blocking({
        let script = script.to_owned();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            cnc_testsupport::run_python(&script, &env)
        }
    })
    .await
    .expect("join")
    .expect("python canvas");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 7, "{ids:?}");

    let spans = wait_spans(&rec, &ids).await;
    let trace = |id: &str| spans[id].trace_id.clone();
    let parent = |id: &str| spans[id].parent_span_id.clone();
    let sid = |id: &str| ids::span_id(id).to_vec();

    // The chain: one trace, the root's UUID bytes; each step's parent is
    // the step before.
    let chain_trace = ids::trace_id(&ids[0]).to_vec();
    for id in &ids[0..3] {
        assert_eq!(
            trace(id),
            chain_trace,
            "chain step {id} in the chain's trace"
        );
    }
    assert!(parent(&ids[0]).is_empty(), "the chain's root has no parent");
    assert_eq!(parent(&ids[1]), sid(&ids[0]));
    assert_eq!(parent(&ids[2]), sid(&ids[1]));
    assert_eq!(spans[&ids[2]].name, "cnc.add");
    assert_eq!(attr(&spans[&ids[1]], "celery.state"), s("SUCCESS"));
    assert_eq!(
        attr(&spans[&ids[1]], "celery.worker"),
        s(&format!("w1@{tag}"))
    );
    assert_eq!(attr(&spans[&ids[1]], "celery.task_name"), s("cnc.mul"));

    // The chord started by a task: one trace; header members are children
    // of that task; the callback is a child of the header member that
    // completed the chord.
    let chord_trace = ids::trace_id(&ids[3]).to_vec();
    for id in &ids[3..7] {
        assert_eq!(trace(id), chord_trace, "chord member {id} in one trace");
    }
    assert_eq!(parent(&ids[4]), sid(&ids[3]));
    assert_eq!(parent(&ids[5]), sid(&ids[3]));
    let cb_parent = parent(&ids[6]);
    assert!(
        cb_parent == sid(&ids[4]) || cb_parent == sid(&ids[5]),
        "callback's parent is a header member"
    );
    assert_eq!(spans[&ids[6]].name, "cnc.tsum");
    for sp in spans.values() {
        assert!(sp.end_time_unix_nano >= sp.start_time_unix_nano);
        assert!(sp.start_time_unix_nano > 0);
        assert!(
            sp.events.iter().any(|e| e.name == "task-started"),
            "span events carry the task events"
        );
    }
    assert!(
        rec.headers
            .lock()
            .expect("lock")
            .iter()
            .all(|h| h == "sekret"),
        "configured headers are sent"
    );

    // Metrics mirroring the Prometheus set.
    let names = common::eventually("metrics", Duration::from_secs(20), async || {
        let n = rec.metric_names();
        n.iter().any(|m| m == "celery_cnc.tasks").then_some(n)
    })
    .await;
    for want in [
        "celery_cnc.tasks",
        "celery_cnc.task.runtime",
        "celery_cnc.workers.online",
        "celery_cnc.worker.tasks.active",
        "celery_cnc.otel.spans.dropped",
        "celery_cnc.component.up",
        "celery_cnc.bus.lagged_messages",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    svc.stop().await;
}

fn synthetic_failure(id: &str, parent: Option<&str>, root: &str) -> Vec<Event> {
    let mut r = TaskEvent::new(TaskEventKind::Received, id, 1_700_000_000.0).with_hostname("w1@h");
    r.name = Some("app.flaky".into());
    r.root_id = Some(root.into());
    r.parent_id = parent.map(str::to_owned);
    let mut rt = TaskEvent::new(TaskEventKind::Retried, id, 1_700_000_001.0).with_hostname("w1@h");
    rt.exception = Some("RuntimeError('transient')".into());
    let r2 = TaskEvent::new(TaskEventKind::Received, id, 1_700_000_002.0).with_hostname("w1@h");
    let st = TaskEvent::new(TaskEventKind::Started, id, 1_700_000_003.0).with_hostname("w1@h");
    let mut f = TaskEvent::new(TaskEventKind::Failed, id, 1_700_000_004.0).with_hostname("w1@h");
    f.exception = Some("ValueError('boom')".into());
    f.traceback = Some("Traceback (most recent call last): ...".into());
    [r, rt, r2, st, f].into_iter().map(Event::Task).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_with_failure_details() {
    let (endpoint, rec) = http_receiver().await;
    let mut svc = common::Service::new();
    svc.start(OtelComponent::new(config(
        &endpoint,
        OtlpProtocol::HttpProtobuf,
    )))
    .await;
    let root = "5f0c7b1e-8a6d-4a0e-9a43-1f2b3c4d5e6f";
    svc.write(synthetic_failure("child-1", Some(root), root))
        .await;
    let spans = wait_spans(&rec, &["child-1".to_owned()]).await;
    let sp = &spans["child-1"];
    assert_eq!(sp.trace_id, ids::trace_id(root).to_vec());
    assert_eq!(sp.parent_span_id, ids::span_id(root).to_vec());
    let status = sp.status.clone().expect("status");
    assert_eq!(status.code, 2, "error status");
    assert!(status.message.contains("ValueError"));
    assert_eq!(
        attr(sp, "celery.retries"),
        Some(any_value::Value::IntValue(1))
    );
    assert_eq!(attr(sp, "exception.type"), s("ValueError"));
    let exc = sp
        .events
        .iter()
        .find(|e| e.name == "exception")
        .expect("exception event");
    assert!(
        exc.attributes
            .iter()
            .any(|kv| kv.key == "exception.stacktrace")
    );
    assert!(sp.events.iter().any(|e| e.name == "task-retried"));
    assert_eq!(sp.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(sp.end_time_unix_nano, 1_700_000_004_000_000_000);
    common::eventually("metrics over http", Duration::from_secs(10), async || {
        rec.metric_names()
            .iter()
            .any(|n| n == "celery_cnc.tasks")
            .then_some(())
    })
    .await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_endpoint_drops_and_counts_without_slowing_observe() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut cfg = config(&format!("http://127.0.0.1:{port}"), OtlpProtocol::Grpc);
    cfg.max_queue = 100;
    let comp = OtelComponent::new(cfg);
    let ex: Arc<OtelExporter> = comp.exporter();
    let stats = ex.stats();
    let mut svc = common::Service::new();
    svc.start(comp).await;
    let t = Instant::now();
    for i in 0..5_000 {
        let id = format!("t{i}");
        let mut done = TaskEvent::new(
            TaskEventKind::Succeeded,
            &id,
            1_700_000_000.0 + f64::from(i),
        );
        done.runtime = Some(0.01);
        ex.observe(&Event::Task(done));
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "observe stayed cheap: {took:?}"
    );
    assert!(ex.queued() <= 100, "queue bounded: {}", ex.queued());
    common::eventually("drops counted", Duration::from_secs(20), async || {
        let dropped = stats
            .spans_dropped
            .load(std::sync::atomic::Ordering::Relaxed);
        (dropped >= 4_900).then_some(())
    })
    .await;
    assert_eq!(
        stats
            .spans_exported
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let t = Instant::now();
    svc.stop().await;
    assert!(t.elapsed() < Duration::from_secs(8), "shutdown bounded");
}

#[tokio::test]
async fn https_endpoint_is_a_fatal_build_error() {
    let svc = common::Service::new();
    let mut c = OtelComponent::new(OpenTelemetryConfig {
        endpoint: "https://collector.example:4317".into(),
        ..OpenTelemetryConfig::default()
    });
    let err = cnc_model::component::Component::build(&mut c, &svc.ctx)
        .await
        .expect_err("https");
    assert!(err.fatal);
}
