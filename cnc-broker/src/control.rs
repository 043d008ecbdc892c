//! The remote control client: one typed async call per Celery verb, on top
//! of [`Broker::broadcast`] (README section 4c). Requests are built by the
//! protocol module's [`ControlRequest`] constructors; this layer adds
//! targeting, the timeout and the expected reply count.
//!
//! Replies are returned per worker as [`WorkerReply`]s with the payload as
//! JSON (Celery's payloads are loosely typed: `stats.clock` is a string,
//! `heartbeat` answers `null`...); the `parse_*` helpers of
//! [`crate::protocol::control`] type them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::api::{BroadcastOptions, Broker, WorkerReply};
use crate::error::BrokerResult;
use crate::protocol::control::ControlRequest;

/// Who a command is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Target {
    /// Every worker.
    #[default]
    All,
    /// These node names; collection stops once all of them answered.
    Nodes(Vec<String>),
    /// Node names matching a glob pattern (`w1@*`).
    Glob(String),
}

impl Target {
    /// Target one node.
    pub fn node(name: impl Into<String>) -> Self {
        Self::Nodes(vec![name.into()])
    }

    fn apply(&self, req: ControlRequest) -> ControlRequest {
        match self {
            Self::All => req,
            Self::Nodes(n) => req.to(n.clone()),
            Self::Glob(p) => req.matching(p.clone(), "glob"),
        }
    }
}

/// Typed remote control over any [`Broker`].
#[derive(Debug, Clone)]
pub struct ControlClient {
    broker: Arc<dyn Broker>,
    timeout: Duration,
}

macro_rules! verbs {
    ($( $(#[$doc:meta])* $name:ident ( $($arg:ident : $ty:ty),* ) => $ctor:expr; )*) => {
        $(
            $(#[$doc])*
            pub async fn $name(&self, target: &Target $(, $arg: $ty)*) -> BrokerResult<Vec<WorkerReply>> {
                self.call(target, $ctor).await
            }
        )*
    };
}

impl ControlClient {
    /// A client with Celery's default reply timeout of 1 s.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Self {
            broker,
            timeout: Duration::from_secs(1),
        }
    }

    /// Change the reply timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Send `request` to `target` and collect replies until the timeout, or
    /// until every named node answered.
    pub async fn call(
        &self,
        target: &Target,
        request: ControlRequest,
    ) -> BrokerResult<Vec<WorkerReply>> {
        let request = target.apply(request);
        let opts = BroadcastOptions {
            timeout: self.timeout,
            limit: request.expected_replies(),
            reply: true,
        };
        self.broker.broadcast(&request, &opts).await
    }

    /// Send without waiting for replies.
    pub async fn cast(&self, target: &Target, request: ControlRequest) -> BrokerResult<()> {
        let request = target.apply(request);
        let opts = BroadcastOptions {
            timeout: self.timeout,
            limit: None,
            reply: false,
        };
        self.broker.broadcast(&request, &opts).await.map(|_| ())
    }

    verbs! {
        /// `ping`: `{"ok": "pong"}` per worker.
        ping() => ControlRequest::ping();
        /// `stats`: pool, broker, totals, rusage.
        stats() => ControlRequest::stats();
        /// `active`: running requests.
        active() => ControlRequest::active();
        /// `reserved`: prefetched, not started.
        reserved() => ControlRequest::reserved();
        /// `scheduled`: waiting for their ETA.
        scheduled() => ControlRequest::scheduled();
        /// `registered`, with task attributes such as `rate_limit`, `queue`.
        registered(attrs: &[&str]) => ControlRequest::registered(attrs);
        /// `active_queues`: kombu queue dicts.
        active_queues() => ControlRequest::active_queues();
        /// `conf`: settings (changed from the defaults unless `with_defaults`).
        conf(with_defaults: bool) => ControlRequest::conf(with_defaults);
        /// `revoked`: ids in the workers' revoked sets.
        revoked() => ControlRequest::revoked();
        /// `query_task`: where these ids are (active/reserved/scheduled).
        query_task(ids: &[String]) => ControlRequest::query_task(ids);
        /// `report`: a text report.
        report() => ControlRequest::report();
        /// `clock`: the Lamport clock.
        clock() => ControlRequest::clock();
        /// `pool_grow` by `n` processes.
        pool_grow(n: u32) => ControlRequest::pool_grow(n);
        /// `pool_shrink` by `n` processes.
        pool_shrink(n: u32) => ControlRequest::pool_shrink(n);
        /// `autoscale` to `max`/`min` (an error unless started with `--autoscale`).
        autoscale(max: u32, min: u32) => ControlRequest::autoscale(max, min);
        /// `add_consumer`: start consuming `queue`.
        add_consumer(queue: &str) => ControlRequest::add_consumer(queue);
        /// `cancel_consumer`: stop consuming `queue`.
        cancel_consumer(queue: &str) => ControlRequest::cancel_consumer(queue);
        /// `rate_limit` of a task (`"5/s"`, `"10/m"`; `"0"` removes it).
        rate_limit(task: &str, rate: &str) => ControlRequest::rate_limit(task, rate);
        /// `time_limit` of a task: hard and soft, in seconds.
        time_limit(task: &str, hard: Option<f64>, soft: Option<f64>) => ControlRequest::time_limit(task, hard, soft);
        /// `revoke` ids; with `terminate`, kill running ones with `signal`.
        revoke(ids: &[String], terminate: bool, signal: Option<&str>) => ControlRequest::revoke(ids, terminate, signal);
        /// `pool_restart` (needs `worker_pool_restarts=True`).
        pool_restart(modules: Option<Vec<String>>, reload: bool) => ControlRequest::pool_restart(modules, reload);
        /// `enable_events`: task events on.
        enable_events() => ControlRequest::enable_events();
        /// `disable_events`: task events off.
        disable_events() => ControlRequest::disable_events();
        /// `heartbeat`: ask for an immediate heartbeat event (replies `null`).
        heartbeat() => ControlRequest::heartbeat();
    }

    /// `shutdown`, sent without a reply as Celery does.
    pub async fn shutdown(&self, target: &Target) -> BrokerResult<()> {
        self.cast(target, ControlRequest::shutdown()).await
    }

    /// Queue names the workers consume, from `active_queues`.
    pub async fn active_queue_names(&self, target: &Target) -> BrokerResult<Vec<String>> {
        let mut out = std::collections::BTreeSet::new();
        for r in self.active_queues(target).await? {
            if let Value::Array(qs) = r.payload {
                for q in qs {
                    if let Some(n) = q.get("name").and_then(Value::as_str) {
                        out.insert(n.to_owned());
                    }
                }
            }
        }
        Ok(out.into_iter().collect())
    }
}

/// Every queue we can find: the broker's own list plus the workers'
/// `active_queues`, de-duplicated and sorted.
pub async fn discover_queues(broker: Arc<dyn Broker>) -> BrokerResult<Vec<String>> {
    let mut all: std::collections::BTreeSet<String> =
        broker.discover_queues().await?.into_iter().collect();
    let client = ControlClient::new(broker);
    all.extend(client.active_queue_names(&Target::All).await?);
    Ok(all.into_iter().collect())
}
