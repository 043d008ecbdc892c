//! The adapter contract: [`Broker`] and [`ResultBackend`], and the plain data
//! they exchange.
//!
//! Both traits are dyn-safe (`#[async_trait]`) because users plug in their
//! own adapters. Operations a broker cannot do return
//! [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) instead of
//! panicking, and [`Capabilities`] says up front what to expect.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::BrokerResult;
use crate::protocol::Message;
use crate::protocol::control::ControlRequest;
use crate::stream::{EventStream, EventStreamOptions};

/// What an adapter can do, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// [`QueueDepth::consumers`] is filled (RabbitMQ).
    pub consumer_count: bool,
    /// [`Broker::discover_queues`] finds queues on the broker itself.
    pub broker_queue_discovery: bool,
    /// Selective purge keeps the order of the remaining messages even
    /// against concurrent publishers (Redis: atomic script).
    pub atomic_selective_purge: bool,
}

/// Which broker family an adapter speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BrokerKind {
    /// Redis (kombu virtual transport).
    Redis,
    /// RabbitMQ (AMQP 0-9-1).
    Amqp,
    /// The in-process broker.
    Memory,
}

/// How to collect replies to a broadcast.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastOptions {
    /// Stop collecting after this long (Celery's default is 1 s).
    pub timeout: Duration,
    /// Stop early after this many replies (set it to the destination's
    /// length when one was given). `None`: wait for the timeout.
    pub limit: Option<usize>,
    /// Ask for replies at all. `false` sends the command without ticket and
    /// `reply_to` and returns at once (how `shutdown` is sent).
    pub reply: bool,
}

impl Default for BroadcastOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            limit: None,
            reply: true,
        }
    }
}

/// One worker's reply to a control request.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerReply {
    /// The replying node.
    pub hostname: String,
    /// What it answered (`{"ok": "pong"}`, a list, an object, `null`...).
    pub payload: Value,
}

/// Length of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// Queue name.
    pub queue: String,
    /// Ready messages (not those held unacked by workers).
    pub messages: u64,
    /// Redis: messages per priority bucket 0, 3, 6, 9.
    pub by_priority: Option<[u64; 4]>,
    /// RabbitMQ: consumers attached.
    pub consumers: Option<u64>,
}

/// Which messages a purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeFilter {
    /// Every ready message of the queue.
    All,
    /// Only messages whose `task` header equals this name.
    TaskName(String),
    /// Only messages whose `group` header equals this id.
    GroupId(String),
}

impl PurgeFilter {
    /// The header the filter matches on, and the value.
    pub fn header(&self) -> Option<(&'static str, &str)> {
        match self {
            Self::All => None,
            Self::TaskName(n) => Some(("task", n)),
            Self::GroupId(g) => Some(("group", g)),
        }
    }

    /// True when `msg` is one this filter removes.
    pub fn matches(&self, msg: &Message) -> bool {
        match self.header() {
            None => true,
            Some((h, v)) => msg.header_str(h) == Some(v),
        }
    }
}

/// A broker adapter: events, tasks, remote control, queues.
#[async_trait]
pub trait Broker: Send + Sync + Debug + 'static {
    /// Which family this is.
    fn kind(&self) -> BrokerKind;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// The broker URL with the password hidden.
    fn redacted_url(&self) -> String;

    /// Subscribe to Celery events. The stream ends with a temporary error
    /// when the connection is lost (see [`crate::stream::reconnecting`]).
    async fn events(&self, opts: EventStreamOptions) -> BrokerResult<EventStream>;

    /// Publish a task message to `queue` (AMQP: default exchange, routing key
    /// = queue, after declaring the queue durable; Redis: LPUSH on the list
    /// of the message's priority bucket).
    async fn send_task(&self, queue: &str, message: Message) -> BrokerResult<()>;

    /// Broadcast a control request and collect the replies. The adapter
    /// adds a fresh ticket and its own `reply_to` when `opts.reply` is set
    /// (and strips them otherwise).
    async fn broadcast(
        &self,
        request: &ControlRequest,
        opts: &BroadcastOptions,
    ) -> BrokerResult<Vec<WorkerReply>>;

    /// Ready messages in `queue`.
    async fn queue_depth(&self, queue: &str) -> BrokerResult<QueueDepth>;

    /// Task queues known to the broker itself (Redis: the `_kombu.binding.*`
    /// sets; RabbitMQ cannot list queues over AMQP and returns an empty list).
    /// Combine with the workers' `active_queues` (see
    /// [`crate::control::ControlClient::active_queue_names`]).
    async fn discover_queues(&self) -> BrokerResult<Vec<String>>;

    /// Remove ready messages from `queue`; returns how many were removed.
    /// Messages held unacked by workers are never touched.
    async fn purge(&self, queue: &str, filter: &PurgeFilter) -> BrokerResult<u64>;

    /// Check the broker answers.
    async fn healthcheck(&self) -> BrokerResult<()>;
}

/// One stored task result (Redis `celery-task-meta-*` or a database row).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    /// Task id.
    pub task_id: String,
    /// `SUCCESS`, `FAILURE`, `RETRY`, `STARTED`, `REVOKED`...
    pub status: String,
    /// Return value or exception object, as stored.
    pub result: Value,
    /// Traceback text.
    pub traceback: Option<String>,
    /// Completion time (ISO-8601 text as stored).
    pub date_done: Option<String>,
    /// Task name (only with `result_extended`).
    pub name: Option<String>,
    /// The whole stored value.
    pub raw: Value,
}

impl TaskResult {
    /// Build from a Redis backend value (README 5a). `None` when it is not
    /// an object.
    pub fn from_redis_value(task_id: &str, value: Value) -> Option<Self> {
        let obj = value.as_object()?;
        let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Self {
            task_id: s("task_id").unwrap_or_else(|| task_id.to_owned()),
            status: s("status").unwrap_or_default(),
            result: obj.get("result").cloned().unwrap_or(Value::Null),
            traceback: s("traceback"),
            date_done: s("date_done"),
            name: s("name"),
            raw: value.clone(),
        })
    }
}

/// A Celery result backend: read and clear stored results, and store the
/// `ABORTED` state of an abort request ([`ResultBackend::mark_aborted`]).
#[async_trait]
pub trait ResultBackend: Send + Sync + Debug + 'static {
    /// The backend URL with the password hidden.
    fn redacted_url(&self) -> String;

    /// One result; `None` means PENDING or unknown.
    async fn get(&self, task_id: &str) -> BrokerResult<Option<TaskResult>>;

    /// Up to `limit` results, in no particular order.
    async fn list(&self, limit: usize) -> BrokerResult<Vec<TaskResult>>;

    /// Delete one result. True if it existed.
    async fn delete(&self, task_id: &str) -> BrokerResult<bool>;

    /// Delete the results of one task name (needs `result_extended`, which
    /// stores the name). Returns how many were deleted.
    async fn delete_by_name(&self, name: &str) -> BrokerResult<u64>;

    /// Delete every result. Returns how many were deleted.
    async fn delete_all(&self) -> BrokerResult<u64>;

    /// Check the backend answers.
    async fn healthcheck(&self) -> BrokerResult<()>;

    /// Store the state `ABORTED` for `task_id`, as Celery's
    /// `AbortableAsyncResult(task_id).abort()` does (`store_result(task_id,
    /// None, "ABORTED")`): a running `AbortableTask` sees it with
    /// `self.is_aborted()`. Like Celery, a result already stored as
    /// `SUCCESS` is left alone; anything else is replaced.
    ///
    /// The default answers [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported),
    /// for backends that cannot write.
    async fn mark_aborted(&self, task_id: &str) -> BrokerResult<()> {
        Err(crate::error::BrokerError::unsupported(format!(
            "storing ABORTED for task {task_id} is not supported by the result backend {}",
            self.redacted_url()
        )))
    }
}

/// The result meta Celery stores for an abort request, as its JSON
/// serializer writes it (`backends/base.py` `_get_result_meta` with no
/// request: `ABORTED` is not a ready state, so no `date_done`; no task
/// context, so `children` is `null`).
pub fn aborted_meta(task_id: &str) -> String {
    let id = serde_json::to_string(task_id).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        r#"{{"status": "ABORTED", "result": null, "traceback": null, "children": null, "date_done": null, "task_id": {id}}}"#
    )
}

/// Turn one reply message (`{hostname: payload}`) answering `ticket` into
/// replies; other tickets and undecodable replies are skipped.
pub(crate) fn push_replies(msg: &Message, ticket: &str, out: &mut Vec<WorkerReply>) {
    match crate::protocol::control::ControlReply::from_message(msg) {
        Ok(r) if r.answers(ticket) => {
            for (hostname, payload) in r.replies {
                out.push(WorkerReply { hostname, payload });
            }
        }
        Ok(_) => tracing::debug!("control reply for another ticket"),
        Err(e) => tracing::debug!(error = %e, "undecodable control reply"),
    }
}

/// The request as it goes on the wire: with a fresh ticket and `reply_to`
/// `oid` when replies are wanted, without both otherwise.
pub(crate) fn prepare_request(
    request: &ControlRequest,
    reply_oid: Option<&str>,
    control_exchange: &str,
) -> ControlRequest {
    let mut r = request.clone();
    r.ticket = None;
    r.reply_to = None;
    match reply_oid {
        Some(oid) => r.with_reply_via(oid, control_exchange),
        None => r,
    }
}
