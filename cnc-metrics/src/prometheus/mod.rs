//! The Prometheus component: its own HTTP listener serving the aggregates
//! of a [`PrometheusExporter`], fed from the event bus, with queue figures
//! refreshed from the brokers on an interval (never per scrape).

mod exporter;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cnc_broker::{AppConnection, Target};
use cnc_model::bus::{BusMessage, EventBus};
use cnc_model::component::{
    CancellationToken, Component, ComponentError, ComponentInfo, ComponentResult, Context, Link,
};
use cnc_model::config::PrometheusConfig;
use cnc_model::exporter::Exporter;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinSet;

pub use exporter::{MAX_SENT_QUEUES, PrometheusExporter, QueueStat, Scrape};

use crate::text::CONTENT_TYPE;

/// How long one broker call of a queue refresh may take.
const REFRESH_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The `prometheus` component. See the crate docs.
#[derive(Debug)]
pub struct PrometheusComponent {
    config: PrometheusConfig,
    apps: Vec<AppConnection>,
    exporter: Arc<PrometheusExporter>,
    listener: Option<TcpListener>,
    rx: Option<broadcast::Receiver<BusMessage>>,
    bus: Option<EventBus>,
    local_addr: Option<SocketAddr>,
}

impl PrometheusComponent {
    /// The component for `config`, reading queue depths and listener
    /// counters of `apps`. The aggregates live as long as the component, so
    /// counters survive a restart of its listener.
    pub fn new(config: PrometheusConfig, apps: Vec<AppConnection>) -> Self {
        let exporter = Arc::new(PrometheusExporter::new(&config));
        for app in &apps {
            exporter.attach_broker(&app.broker_url, app.stream_stats.clone());
        }
        Self {
            config,
            apps,
            exporter,
            listener: None,
            rx: None,
            bus: None,
            local_addr: None,
        }
    }

    /// The aggregates (for tests, benchmarks and embedding).
    pub fn exporter(&self) -> Arc<PrometheusExporter> {
        self.exporter.clone()
    }

    /// The bound address once built (port 0 in the config picks one).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    fn url(&self) -> String {
        let addr = self
            .local_addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| format!("{}:{}", self.config.host, self.config.port));
        format!("http://{addr}{}", self.config.path)
    }

    /// A `scrape_configs` entry for prometheus.yml.
    pub fn scrape_config(&self) -> String {
        let addr = self
            .local_addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| format!("{}:{}", self.config.host, self.config.port));
        format!(
            "scrape_configs:\n  - job_name: celery-cnc\n    metrics_path: {}\n    static_configs:\n      - targets: ['{}']\n",
            self.config.path, addr
        )
    }
}

#[async_trait]
impl Component for PrometheusComponent {
    fn name(&self) -> &str {
        "prometheus"
    }

    async fn build(&mut self, ctx: &Context) -> ComponentResult<()> {
        if !self.config.path.starts_with('/') {
            return Err(ComponentError::fatal(format!(
                "prometheus path {:?} must start with '/'",
                self.config.path
            )));
        }
        let addr = format!("{}:{}", self.config.host, self.config.port);
        let listener = TcpListener::bind(&addr).await.map_err(|e| {
            ComponentError::new(format!("binding the Prometheus listener on {addr}")).with_source(e)
        })?;
        self.local_addr = listener.local_addr().ok();
        self.listener = Some(listener);
        self.rx = Some(ctx.bus.subscribe());
        self.bus = Some(ctx.bus.clone());
        self.exporter
            .attach_service(ctx.bus.clone(), ctx.status.clone());
        tracing::info!(url = %self.url(), "Prometheus metrics listening");
        Ok(())
    }

    async fn run(&mut self, shutdown: CancellationToken) -> ComponentResult<()> {
        let (Some(listener), Some(mut rx)) = (self.listener.take(), self.rx.take()) else {
            return Err(ComponentError::new("prometheus: run before build"));
        };
        let bus = self.bus.clone();
        let exporter = self.exporter.clone();
        let path: Arc<str> = self.config.path.as_str().into();
        let mut conns = JoinSet::new();
        let refresh = tokio::spawn(refresh_loop(
            self.apps.clone(),
            exporter.clone(),
            self.config.queue_refresh_interval,
            shutdown.clone(),
        ));
        let result = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                msg = rx.recv() => match msg {
                    Ok(BusMessage::Batch(b)) => crate::observe_batch(&exporter, b).await,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        if let Some(bus) = &bus {
                            bus.note_lag(n);
                        }
                        exporter.lagged(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        break Err(ComponentError::new("prometheus: the event bus closed"));
                    }
                },
                acc = listener.accept() => match acc {
                    Ok((stream, _)) => {
                        let ex = exporter.clone();
                        let path = path.clone();
                        conns.spawn(async move {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let svc = hyper::service::service_fn(move |req| {
                                let ex = ex.clone();
                                let path = path.clone();
                                async move { Ok::<_, Infallible>(respond(&req, ex, &path).await) }
                            });
                            if let Err(e) = hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, svc)
                                .await
                            {
                                tracing::debug!(error = %e, "scrape connection ended");
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving.
                        tracing::warn!(error = %e, "accepting a scrape connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        };
        refresh.abort();
        conns.shutdown().await;
        result
    }

    async fn stop(&mut self) -> ComponentResult<()> {
        self.listener = None;
        self.rx = None;
        Ok(())
    }

    fn info(&self) -> ComponentInfo {
        let mut config = serde_json::to_value(&self.config).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut config {
            m.insert("url".into(), json!(self.url()));
            m.insert("scrape_config".into(), json!(self.scrape_config()));
        }
        ComponentInfo {
            config,
            links: vec![Link {
                label: "Prometheus metrics".into(),
                url: self.url(),
            }],
        }
    }
}

/// Bytes per body frame: cached series text is gathered into frames of
/// about this size so hyper writes a few large buffers, not one per series.
const FRAME_BYTES: usize = 256 * 1024;

/// The body of a scrape: its chunks, gathered into frames as the
/// connection asks for them (so the one copy into frames overlaps the
/// network write instead of delaying the first byte).
#[derive(Debug)]
struct ScrapeBody {
    scrape: Scrape,
    next: usize,
    left: usize,
}

impl ScrapeBody {
    fn new(scrape: Scrape) -> Self {
        let left = scrape.len();
        Self {
            scrape,
            next: 0,
            left,
        }
    }
}

impl Body for ScrapeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let chunks = this.scrape.chunks();
        let Some(first) = chunks.get(this.next) else {
            return std::task::Poll::Ready(None);
        };
        this.next += 1;
        let frame = if first.len() >= FRAME_BYTES {
            first.clone()
        } else {
            let mut buf = bytes::BytesMut::with_capacity(FRAME_BYTES + 64 * 1024);
            buf.extend_from_slice(first);
            while let Some(c) = chunks.get(this.next) {
                if buf.len() + c.len() > buf.capacity() {
                    break;
                }
                buf.extend_from_slice(c);
                this.next += 1;
            }
            buf.freeze()
        };
        this.left = this.left.saturating_sub(frame.len());
        std::task::Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.scrape.chunks().len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left as u64)
    }
}

/// A response body: a short message or a scrape.
type ReplyBody = Either<Full<Bytes>, ScrapeBody>;

/// Answer one HTTP request.
async fn respond<B>(
    req: &Request<B>,
    exporter: Arc<PrometheusExporter>,
    path: &str,
) -> Response<ReplyBody> {
    let reply = |status: StatusCode, ctype: &'static str, body: Bytes| {
        let mut r = Response::new(Either::Left(Full::new(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(ctype),
        );
        r
    };
    if req.uri().path() != path {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from(format!("celery-cnc metrics are at {path}\n")),
        );
    }
    match *req.method() {
        Method::GET => {
            // A large scrape takes milliseconds of CPU: keep it off the
            // runtime's worker threads.
            match tokio::task::spawn_blocking(move || exporter.render_pooled()).await {
                Ok(scrape) => {
                    let mut r = Response::new(Either::Right(ScrapeBody::new(scrape)));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static(CONTENT_TYPE),
                    );
                    r
                }
                Err(e) => {
                    tracing::error!(error = %e, "rendering the scrape");
                    reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain; charset=utf-8",
                        Bytes::from_static(b"rendering failed\n"),
                    )
                }
            }
        }
        Method::HEAD => reply(StatusCode::OK, CONTENT_TYPE, Bytes::new()),
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"GET only\n"),
        ),
    }
}

/// Refresh queue figures of every app every `every` until cancelled.
async fn refresh_loop(
    apps: Vec<AppConnection>,
    exporter: Arc<PrometheusExporter>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut last: HashMap<String, Vec<QueueStat>> = HashMap::new();
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Queues named in task-sent events: the broker cannot list a queue
        // nobody consumes yet. Events do not say which app they came from,
        // so this only applies when there is one app.
        let seen = if apps.len() == 1 {
            exporter.queues_seen()
        } else {
            Vec::new()
        };
        for app in &apps {
            let prev = last.get(&app.name);
            match refresh_app(app, &seen, prev).await {
                Ok(stats) => {
                    last.insert(app.name.clone(), stats.clone());
                    exporter.set_queues(&app.name, stats);
                }
                Err(e) => {
                    tracing::warn!(app = %app.name, error = %e, "refreshing queue depths");
                    exporter.queue_refresh_failed(&app.name);
                }
            }
        }
    }
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error("broker call timed out")]
    Timeout,
    #[error(transparent)]
    Broker(#[from] cnc_broker::BrokerError),
}

async fn timed<T>(
    f: impl std::future::Future<Output = cnc_broker::BrokerResult<T>>,
) -> Result<T, RefreshError> {
    match tokio::time::timeout(REFRESH_CALL_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(RefreshError::Timeout),
    }
}

/// Queue figures of one app: every queue the broker lists, a worker
/// consumes or an event named (plus the default), its depth, and the
/// workers and pool processes consuming it. When no worker answered the
/// broadcast this time, the consumer figures of `prev` are kept (a missed
/// reply is not a lost worker; lost workers show in the worker families).
async fn refresh_app(
    app: &AppConnection,
    seen: &[String],
    prev: Option<&Vec<QueueStat>>,
) -> Result<Vec<QueueStat>, RefreshError> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    names.insert(app.default_queue.clone());
    names.extend(seen.iter().cloned());
    match timed(app.broker.discover_queues()).await {
        Ok(q) => names.extend(q),
        Err(e) => tracing::debug!(app = %app.name, error = %e, "queue discovery"),
    }
    // Workers per queue and their pool sizes (celery-exporter's figures).
    let mut workers: BTreeMap<String, u64> = BTreeMap::new();
    let mut processes: BTreeMap<String, u64> = BTreeMap::new();
    let replies = match timed(app.control.active_queues(&Target::All)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(app = %app.name, error = %e, "active_queues");
            Vec::new()
        }
    };

    let stats = if replies.is_empty() {
        Vec::new()
    } else {
        timed(app.control.stats(&Target::All))
            .await
            .unwrap_or_default()
    };
    let pool: BTreeMap<&str, u64> = stats
        .iter()
        .map(|r| {
            let n = r
                .payload
                .pointer("/pool/processes")
                .and_then(Value::as_array)
                .map_or(0, |a| a.len() as u64);
            (r.hostname.as_str(), n)
        })
        .collect();
    for r in &replies {
        let Some(list) = r.payload.as_array() else {
            continue;
        };
        for q in list {
            if let Some(name) = q.get("name").and_then(Value::as_str) {
                names.insert(name.to_owned());
                *workers.entry(name.to_owned()).or_default() += 1;
                *processes.entry(name.to_owned()).or_default() +=
                    pool.get(r.hostname.as_str()).copied().unwrap_or(0);
            }
        }
    }
    let answered = !replies.is_empty();
    if let Some(prev) = prev.filter(|_| !answered) {
        for p in prev {
            names.insert(p.queue.clone());
            workers.insert(p.queue.clone(), p.workers.unwrap_or(0));
            processes.insert(p.queue.clone(), p.processes.unwrap_or(0));
        }
    }
    let mut out = Vec::with_capacity(names.len());
    for q in names {
        let d = timed(app.broker.queue_depth(&q)).await?;
        out.push(QueueStat {
            workers: Some(workers.get(&q).copied().unwrap_or(0)),
            processes: Some(processes.get(&q).copied().unwrap_or(0)),
            queue: q,
            messages: d.messages,
            consumers: d.consumers,
        });
    }
    Ok(out)
}
