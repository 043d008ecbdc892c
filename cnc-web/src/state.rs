//! Shared state of the router: config, apps, the service context, the
//! templates and a short-lived cache of worker inspect replies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cnc_broker::protocol::control::ControlRequest;
use cnc_broker::{AppConnection, Target};
use cnc_model::component::Context;
use cnc_model::config::FrontendConfig;
use serde_json::{Map, Value};

use crate::error::{WebError, WebResult};

/// The inspect methods Flower collects per worker, in its order.
pub(crate) const INSPECT_METHODS: [&str; 8] = [
    "stats",
    "active_queues",
    "registered",
    "scheduled",
    "active",
    "reserved",
    "revoked",
    "conf",
];

/// How long inspect replies are reused without `refresh`.
const INSPECT_TTL: Duration = Duration::from_secs(10);

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct WebState {
    pub(crate) inner: Arc<Inner>,
    pub(crate) base: Arc<str>,
}

pub(crate) struct Inner {
    pub(crate) config: FrontendConfig,
    pub(crate) apps: Vec<AppConnection>,
    pub(crate) ctx: Context,
    pub(crate) csrf: String,
    pub(crate) templates: minijinja::Environment<'static>,
    pub(crate) inspect: tokio::sync::Mutex<Option<(Instant, Inspected)>>,
    pub(crate) sse_clients: std::sync::atomic::AtomicU64,
}

/// Inspect replies per worker: `{hostname: {method: payload, "timestamp": t}}`.
pub(crate) type Inspected = BTreeMap<String, Map<String, Value>>;

impl std::fmt::Debug for WebState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebState")
            .field("base", &self.base)
            .field("apps", &self.inner.apps.len())
            .finish_non_exhaustive()
    }
}

impl WebState {
    /// State for `config`, the connected `apps` and the running service's
    /// `ctx` (store, bus, logs, status board).
    pub fn new(config: FrontendConfig, apps: Vec<AppConnection>, ctx: Context) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                apps,
                ctx,
                csrf: uuid::Uuid::new_v4().simple().to_string(),
                templates: crate::pages::environment(),
                inspect: tokio::sync::Mutex::new(None),
                sse_clients: std::sync::atomic::AtomicU64::new(0),
            }),
            base: Arc::from(""),
        }
    }

    /// Serve under a path prefix (`/cnc`) when the router is nested in
    /// another app: links, forms and scripts use it.
    pub fn with_base_path(mut self, base: &str) -> Self {
        let trimmed = base.trim().trim_end_matches('/');
        self.base = if trimmed.is_empty() {
            Arc::from("")
        } else if trimmed.starts_with('/') {
            Arc::from(trimmed)
        } else {
            Arc::from(format!("/{trimmed}"))
        };
        self
    }

    /// The prefix given to [`WebState::with_base_path`] (`""` by default).
    pub fn base_path(&self) -> &str {
        &self.base
    }

    /// The frontend config.
    pub fn config(&self) -> &FrontendConfig {
        &self.inner.config
    }

    /// The CSRF token every POST must carry (per process, random).
    pub fn csrf_token(&self) -> &str {
        &self.inner.csrf
    }

    pub(crate) fn ctx(&self) -> &Context {
        &self.inner.ctx
    }

    pub(crate) fn apps(&self) -> &[AppConnection] {
        &self.inner.apps
    }

    /// One app per distinct broker: control commands go once per broker.
    pub(crate) fn brokers(&self) -> Vec<&AppConnection> {
        let mut out: Vec<&AppConnection> = Vec::new();
        for a in &self.inner.apps {
            if !out.iter().any(|b| b.broker_url == a.broker_url) {
                out.push(a);
            }
        }
        out
    }

    /// The app named `name`, or the first one.
    pub(crate) fn app(&self, name: Option<&str>) -> WebResult<&AppConnection> {
        match name.filter(|n| !n.is_empty()) {
            Some(n) => self
                .inner
                .apps
                .iter()
                .find(|a| a.name == n)
                .ok_or_else(|| WebError::NotFound(format!("unknown app '{n}'"))),
            None => self.inner.apps.first().ok_or_else(|| {
                WebError::Unavailable("no Celery app is configured (no broker to talk to)".into())
            }),
        }
    }

    /// Send a control request to `target` on every broker; replies merged.
    pub(crate) async fn control(
        &self,
        target: &Target,
        request: ControlRequest,
    ) -> WebResult<Vec<cnc_broker::WorkerReply>> {
        let brokers = self.brokers();
        if brokers.is_empty() {
            return Err(WebError::Unavailable(
                "no Celery app is configured (no broker to talk to)".into(),
            ));
        }
        let calls = brokers
            .iter()
            .map(|a| a.control.call(target, request.clone()));
        let mut out = Vec::new();
        let mut last_err = None;
        for r in futures::future::join_all(calls).await {
            match r {
                Ok(mut replies) => out.append(&mut replies),
                Err(e) => last_err = Some(e),
            }
        }
        match (out.is_empty(), last_err) {
            (true, Some(e)) => Err(e.into()),
            _ => Ok(out),
        }
    }

    /// Inspect replies of every worker (or one), cached for a few seconds
    /// unless `refresh`. Also written to the store as the worker's info.
    pub(crate) async fn inspect(
        &self,
        worker: Option<&str>,
        refresh: bool,
    ) -> WebResult<Inspected> {
        let mut guard = self.inner.inspect.lock().await;
        if !refresh
            && let Some((at, data)) = guard.as_ref()
            && at.elapsed() < INSPECT_TTL
            && worker.is_none_or(|w| data.contains_key(w))
        {
            return Ok(match worker {
                Some(w) => data
                    .iter()
                    .filter(|(k, _)| k.as_str() == w)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                None => data.clone(),
            });
        }
        let target = worker.map_or(Target::All, Target::node);
        let requests = INSPECT_METHODS.map(|m| match m {
            "stats" => ControlRequest::stats(),
            "active_queues" => ControlRequest::active_queues(),
            "registered" => {
                ControlRequest::registered(&["queue", "exchange", "routing_key", "rate_limit"])
            }
            "scheduled" => ControlRequest::scheduled(),
            "active" => ControlRequest::active(),
            "reserved" => ControlRequest::reserved(),
            "revoked" => ControlRequest::revoked(),
            _ => ControlRequest::conf(false),
        });
        let results =
            futures::future::join_all(requests.into_iter().map(|r| self.control(&target, r))).await;
        let now = cnc_model::now();
        let mut data: Inspected = match (worker, guard.take()) {
            (Some(_), Some((_, old))) => old,
            _ => BTreeMap::new(),
        };
        let mut failures = 0;
        for (method, result) in INSPECT_METHODS.iter().zip(results) {
            match result {
                Ok(replies) => {
                    for r in replies {
                        let entry = data.entry(r.hostname.clone()).or_default();
                        entry.insert((*method).to_owned(), r.payload);
                        entry.insert("timestamp".into(), Value::from(now));
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(target: crate::LOG_TARGET, method, error = %e.public_message(), "inspect failed");
                }
            }
        }
        if failures == INSPECT_METHODS.len() {
            return Err(WebError::Unavailable(
                "could not reach any broker to inspect workers".into(),
            ));
        }
        for (host, info) in &data {
            if worker.is_none_or(|w| w == host)
                && let Err(e) = self
                    .ctx()
                    .store
                    .set_worker_info(host, Value::Object(info.clone()), now)
                    .await
            {
                tracing::warn!(target: crate::LOG_TARGET, worker = %host, error = %e, "could not store worker info");
            }
        }
        let out = match worker {
            Some(w) => data
                .iter()
                .filter(|(k, _)| k.as_str() == w)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            None => data.clone(),
        };
        *guard = Some((Instant::now(), data));
        Ok(out)
    }
}
