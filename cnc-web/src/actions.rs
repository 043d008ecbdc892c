//! The actions behind both APIs and the pages: send, revoke, abort, retry,
//! worker controls. Each checks its input, talks to the broker (abort: to
//! the result backend), and is logged with who did what.

use std::sync::Arc;

use cnc_broker::protocol::control::{ControlRequest, Outcome, RegisteredTask, outcome};
use cnc_broker::protocol::task::{Expires, SendTask, parse_iso};
use cnc_broker::{ErrorKind, ResultBackend, Target, WorkerReply};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{WebError, WebResult};
use crate::security::Who;
use crate::state::WebState;

/// Signals a terminate may use.
pub(crate) const SIGNALS: [&str; 7] = [
    "SIGTERM", "SIGKILL", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2",
];

/// A task to send (own API and the send form).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendRequest {
    /// Registered task name.
    pub name: String,
    /// Positional arguments.
    #[serde(default)]
    pub args: Option<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Option<Value>,
    /// Queue; default: the task's own queue, else the app's default.
    #[serde(default)]
    pub queue: Option<String>,
    /// Seconds from now.
    #[serde(default)]
    pub countdown: Option<f64>,
    /// ISO-8601 time.
    #[serde(default)]
    pub eta: Option<String>,
    /// Seconds from now (number) or an ISO-8601 time (string).
    #[serde(default)]
    pub expires: Option<Value>,
    /// 0-9 (Redis buckets) or 0-255.
    #[serde(default)]
    pub priority: Option<u8>,
    /// App name (several apps configured).
    #[serde(default)]
    pub app: Option<String>,
    /// A fixed task id.
    #[serde(default)]
    pub task_id: Option<String>,
}

fn blank(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The queue a task is routed to by its registration (`registered` with the
/// `queue` attribute) or by the workers' `task_routes` setting.
pub(crate) async fn own_queue(state: &WebState, name: &str) -> Option<String> {
    let inspected = state.inspect(None, false).await.ok()?;
    for info in inspected.values() {
        if let Some(Value::Array(reg)) = info.get("registered") {
            for e in reg.iter().filter_map(Value::as_str) {
                let r = RegisteredTask::parse(e);
                if r.name == name
                    && let Some(q) = r.attribute("queue")
                    && q != "None"
                {
                    return Some(q.to_owned());
                }
            }
        }
        if let Some(routes) = info.get("conf").and_then(|c| c.get("task_routes"))
            && let Some(route) = routes.get(name)
        {
            match route {
                Value::String(q) => return Some(q.clone()),
                Value::Object(o) => {
                    if let Some(q) = o.get("queue").and_then(Value::as_str) {
                        return Some(q.to_owned());
                    }
                }
                _ => {}
            }
        }
    }
    None
}

/// Build and publish a task; returns its id and queue.
pub(crate) async fn send_task(
    state: &WebState,
    who: &Who,
    req: SendRequest,
) -> WebResult<(String, String)> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 512 {
        return Err(WebError::BadRequest(
            "task name must be 1-512 characters".into(),
        ));
    }
    let args = match req.args {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(WebError::BadRequest("args must be a JSON array".into())),
    };
    let kwargs = match req.kwargs {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(WebError::BadRequest("kwargs must be a JSON object".into())),
    };
    let app = state.app(req.app.as_deref())?;
    let mut b = SendTask::new(name).args(args).kwargs(kwargs);
    if let Some(c) = req.countdown {
        if !c.is_finite() || c < 0.0 {
            return Err(WebError::BadRequest(
                "countdown must be a number of seconds >= 0".into(),
            ));
        }
        b = b.countdown(c);
    }
    if let Some(eta) = blank(&req.eta) {
        let t = parse_iso(eta)
            .ok_or_else(|| WebError::BadRequest(format!("eta '{eta}' is not an ISO-8601 time")))?;
        b = b.eta(t);
    }
    match &req.expires {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            let s = n
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| {
                    WebError::BadRequest("expires must be seconds >= 0 or an ISO-8601 time".into())
                })?;
            b = b.expires(Expires::In(s));
        }
        Some(Value::String(s)) if s.trim().is_empty() => {}
        Some(Value::String(s)) => {
            let t = match s.trim().parse::<f64>() {
                Ok(secs) if secs.is_finite() && secs >= 0.0 => Expires::In(secs),
                _ => Expires::At(parse_iso(s.trim()).ok_or_else(|| {
                    WebError::BadRequest(format!(
                        "expires '{s}' is not seconds or an ISO-8601 time"
                    ))
                })?),
            };
            b = b.expires(t);
        }
        Some(_) => {
            return Err(WebError::BadRequest(
                "expires must be seconds >= 0 or an ISO-8601 time".into(),
            ));
        }
    }
    if let Some(p) = req.priority {
        b = b.priority(p);
    }
    if let Some(id) = blank(&req.task_id) {
        b = b.id(id);
    }
    let queue = match blank(&req.queue) {
        Some(q) => q.to_owned(),
        None => own_queue(state, name)
            .await
            .unwrap_or_else(|| app.default_queue.clone()),
    };
    let msg = b.queue(queue.clone()).origin("celery-cnc").build();
    let id = msg.id.clone();
    app.broker.send_task(&queue, msg.to_message()).await?;
    tracing::info!(target: crate::LOG_TARGET, who = %who, action = "send_task", task = name, task_id = %id, queue = %queue, app = %app.name, "task sent");
    Ok((id, queue))
}

/// Check a signal name (`SIGTERM`, `TERM`, or a number 1-64).
pub(crate) fn check_signal(signal: Option<&str>) -> WebResult<Option<String>> {
    let Some(s) = signal.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if let Ok(n) = s.parse::<u8>() {
        if (1..=64).contains(&n) {
            return Ok(Some(n.to_string()));
        }
    }
    let up = s.to_ascii_uppercase();
    let full = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    if SIGNALS.contains(&full.as_str()) {
        Ok(Some(full))
    } else {
        Err(WebError::BadRequest(format!(
            "unknown signal '{s}' (expected one of {})",
            SIGNALS.join(", ")
        )))
    }
}

/// Revoke (and with `terminate`, kill) a task on every worker.
pub(crate) async fn revoke(
    state: &WebState,
    who: &Who,
    id: &str,
    terminate: bool,
    signal: Option<&str>,
) -> WebResult<()> {
    check_id(id)?;
    let signal = check_signal(signal)?;
    let req = ControlRequest::revoke(&[id.to_owned()], terminate, signal.as_deref());
    let brokers = state.brokers();
    if brokers.is_empty() {
        return Err(WebError::Unavailable("no Celery app is configured".into()));
    }
    for app in brokers {
        app.control.cast(&Target::All, req.clone()).await?;
    }
    tracing::info!(target: crate::LOG_TARGET, who = %who, action = if terminate { "terminate" } else { "revoke" }, task_id = id, signal = signal.as_deref().unwrap_or("-"), "task revoked");
    Ok(())
}

/// Ask a running `AbortableTask` to stop, as Flower does with
/// `AbortableAsyncResult(id).abort()`: store the state `ABORTED` in the
/// result backend, which the task polls with `self.is_aborted()`. No revoke
/// is sent (workers are not told); a result already stored as `SUCCESS` is
/// kept (Celery's rule, in [`cnc_broker::ResultBackend::mark_aborted`]).
///
/// The id alone does not say which app a task belongs to: with several
/// distinct backends, those already holding a result for `id` get the
/// state; when none does (the task has not started, or does not track
/// `STARTED`), every backend does. Succeeds when at least one stored it.
pub(crate) async fn abort(state: &WebState, who: &Who, id: &str) -> WebResult<()> {
    check_id(id)?;
    let mut backends: Vec<&Arc<dyn ResultBackend>> = Vec::new();
    for app in state.apps() {
        if let Some(b) = &app.backend
            && !backends
                .iter()
                .any(|o| Arc::ptr_eq(o, b) || o.redacted_url() == b.redacted_url())
        {
            backends.push(b);
        }
    }
    if backends.is_empty() {
        return Err(WebError::Unavailable("No result backend configured".into()));
    }
    if backends.len() > 1 {
        let mut holding = Vec::new();
        for b in &backends {
            if matches!(b.get(id).await, Ok(Some(_))) {
                holding.push(*b);
            }
        }
        if !holding.is_empty() {
            backends = holding;
        }
    }
    let mut stored = Vec::new();
    let mut failed = Vec::new();
    for b in backends {
        match b.mark_aborted(id).await {
            Ok(()) => stored.push(b.redacted_url()),
            Err(e) => {
                tracing::warn!(target: crate::LOG_TARGET, who = %who, action = "abort", task_id = id, backend = %b.redacted_url(), error = %e, "storing ABORTED failed");
                failed.push(e);
            }
        }
    }
    if !stored.is_empty() {
        tracing::info!(target: crate::LOG_TARGET, who = %who, action = "abort", task_id = id, backends = %stored.join(", "), "task abort requested (ABORTED stored)");
        return Ok(());
    }
    let Some(e) = failed.into_iter().next() else {
        return Err(WebError::Internal("abort: no backend tried".into()));
    };
    Err(match e.kind() {
        // The backend cannot write (a custom one) or has nowhere to write
        // yet (a database table no worker has created): the caller can
        // only fix the setup, so say what is missing.
        ErrorKind::Unsupported | ErrorKind::NotFound => WebError::Unavailable(format!(
            "cannot abort '{id}': {} (abort needs a result backend that can store the ABORTED state: Redis or a Celery database backend)",
            e.message()
        )),
        _ => e.into(),
    })
}

/// A task id must be a plausible id (no control characters, not huge).
pub(crate) fn check_id(id: &str) -> WebResult<()> {
    if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
        return Err(WebError::BadRequest("invalid task id".into()));
    }
    Ok(())
}

/// Send a new task with the same name, arguments and queue as `id` (a new
/// id, retries 0: max_retries does not apply to it).
pub(crate) async fn retry(state: &WebState, who: &Who, id: &str) -> WebResult<String> {
    check_id(id)?;
    let task = state
        .ctx()
        .store
        .task(id)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("Unknown task '{id}'")))?;
    let name = task.name.clone().ok_or_else(|| {
        WebError::BadRequest("the task's name is unknown: it cannot be retried".into())
    })?;
    let args = match task.args.as_deref() {
        None | Some("") => Value::Array(Vec::new()),
        Some(a) => crate::pyrepr::parse(a).map_err(|e| {
            WebError::BadRequest(format!(
                "the task's args cannot be read back ({e}): send it again from the form"
            ))
        })?,
    };
    let kwargs = match task.kwargs.as_deref() {
        None | Some("") => Value::Object(Map::new()),
        Some(k) => crate::pyrepr::parse(k).map_err(|e| {
            WebError::BadRequest(format!(
                "the task's kwargs cannot be read back ({e}): send it again from the form"
            ))
        })?,
    };
    let req = SendRequest {
        name,
        args: Some(args),
        kwargs: Some(kwargs),
        queue: task.queue.clone().or(task.routing_key.clone()),
        ..SendRequest::default()
    };
    let (new_id, _) = send_task(state, who, req).await?;
    tracing::info!(target: crate::LOG_TARGET, who = %who, action = "retry", task_id = id, new_task_id = %new_id, "task retried");
    Ok(new_id)
}

/// A worker control command (own API and the worker page).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Control {
    /// Add `n` pool processes.
    PoolGrow {
        #[serde(default = "one")]
        n: u32,
    },
    /// Remove `n` pool processes.
    PoolShrink {
        #[serde(default = "one")]
        n: u32,
    },
    /// Autoscale bounds.
    Autoscale { min: u32, max: u32 },
    /// Start consuming a queue.
    AddConsumer { queue: String },
    /// Stop consuming a queue.
    CancelConsumer { queue: String },
    /// Rate limit of a task (`10/m`, `0` removes it).
    RateLimit { task: String, rate: String },
    /// Time limits of a task, seconds.
    TimeLimit {
        task: String,
        #[serde(default)]
        hard: Option<f64>,
        #[serde(default)]
        soft: Option<f64>,
    },
    /// Warm shutdown.
    Shutdown,
    /// Restart the pool processes.
    PoolRestart,
}

fn one() -> u32 {
    1
}

impl Control {
    fn name(&self) -> &'static str {
        match self {
            Self::PoolGrow { .. } => "pool_grow",
            Self::PoolShrink { .. } => "pool_shrink",
            Self::Autoscale { .. } => "autoscale",
            Self::AddConsumer { .. } => "add_consumer",
            Self::CancelConsumer { .. } => "cancel_consumer",
            Self::RateLimit { .. } => "rate_limit",
            Self::TimeLimit { .. } => "time_limit",
            Self::Shutdown => "shutdown",
            Self::PoolRestart => "pool_restart",
        }
    }

    fn request(&self) -> WebResult<ControlRequest> {
        let text = |what: &str, s: &str| -> WebResult<String> {
            let t = s.trim();
            if t.is_empty() || t.len() > 255 || t.chars().any(char::is_control) {
                Err(WebError::BadRequest(format!(
                    "{what} must be 1-255 printable characters"
                )))
            } else {
                Ok(t.to_owned())
            }
        };
        let secs = |what: &str, v: Option<f64>| -> WebResult<Option<f64>> {
            match v {
                Some(s) if !s.is_finite() || s < 0.0 => {
                    Err(WebError::BadRequest(format!("{what} must be seconds >= 0")))
                }
                other => Ok(other),
            }
        };
        Ok(match self {
            Self::PoolGrow { n } | Self::PoolShrink { n } if *n == 0 || *n > 1000 => {
                return Err(WebError::BadRequest("n must be between 1 and 1000".into()));
            }
            Self::PoolGrow { n } => ControlRequest::pool_grow(*n),
            Self::PoolShrink { n } => ControlRequest::pool_shrink(*n),
            Self::Autoscale { min, max } => {
                if min > max {
                    return Err(WebError::BadRequest(
                        "autoscale min must not exceed max".into(),
                    ));
                }
                ControlRequest::autoscale(*max, *min)
            }
            Self::AddConsumer { queue } => ControlRequest::add_consumer(&text("queue", queue)?),
            Self::CancelConsumer { queue } => {
                ControlRequest::cancel_consumer(&text("queue", queue)?)
            }
            Self::RateLimit { task, rate } => {
                let rate = rate.trim();
                let ok = !rate.is_empty()
                    && rate.len() < 32
                    && rate
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '/' || c == '.');
                if !ok {
                    return Err(WebError::BadRequest(format!(
                        "rate limit '{rate}' is not like 10/m, 5/s, 100/h or 0"
                    )));
                }
                ControlRequest::rate_limit(&text("task", task)?, rate)
            }
            Self::TimeLimit { task, hard, soft } => ControlRequest::time_limit(
                &text("task", task)?,
                secs("hard", *hard)?,
                secs("soft", *soft)?,
            ),
            Self::Shutdown => ControlRequest::shutdown(),
            Self::PoolRestart => ControlRequest::pool_restart(None, false),
        })
    }
}

/// What a control call gave: the worker's answer.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ControlOutcome {
    /// Worker.
    pub worker: String,
    /// Command.
    pub action: &'static str,
    /// The worker's `ok` message (or a note for commands without reply).
    pub message: String,
    /// The raw replies.
    pub replies: Vec<Value>,
}

/// Check the worker is known to the store.
pub(crate) async fn known_worker(state: &WebState, worker: &str) -> WebResult<()> {
    if worker.is_empty() || worker.len() > 255 {
        return Err(WebError::BadRequest("invalid worker name".into()));
    }
    match state.ctx().store.worker(worker).await? {
        Some(_) => Ok(()),
        None => Err(WebError::NotFound(format!("Unknown worker '{worker}'"))),
    }
}

/// The first reply of `worker`, classified: ok message or refusal.
pub(crate) fn reply_of(worker: &str, replies: &[WorkerReply]) -> WebResult<String> {
    let Some(r) = replies.iter().find(|r| r.hostname == worker) else {
        return Err(WebError::Unavailable(format!(
            "no reply from '{worker}' in time (is it online?)"
        )));
    };
    match outcome(&r.payload) {
        Outcome::Ok(v) => Ok(v.as_str().map_or_else(|| v.to_string(), str::to_owned)),
        Outcome::Error(e) => Err(WebError::Refused(e.to_owned())),
        Outcome::Other(v) => Ok(v.to_string()),
    }
}

/// Run a control command on one worker.
pub(crate) async fn control(
    state: &WebState,
    who: &Who,
    worker: &str,
    cmd: Control,
) -> WebResult<ControlOutcome> {
    known_worker(state, worker).await?;
    let req = cmd.request()?;
    let action = cmd.name();
    let target = Target::node(worker);
    if matches!(cmd, Control::Shutdown) {
        for app in state.brokers() {
            app.control.shutdown(&target).await?;
        }
        tracing::info!(target: crate::LOG_TARGET, who = %who, action, worker, "worker shutdown sent");
        return Ok(ControlOutcome {
            worker: worker.to_owned(),
            action,
            message: "Shutting down!".into(),
            replies: Vec::new(),
        });
    }
    let replies = state.control(&target, req).await?;
    let result = reply_of(worker, &replies);
    match &result {
        Ok(m) => {
            tracing::info!(target: crate::LOG_TARGET, who = %who, action, worker, command = ?cmd, reply = %m, "worker control")
        }
        Err(e) => {
            tracing::warn!(target: crate::LOG_TARGET, who = %who, action, worker, command = ?cmd, error = %e, "worker control failed")
        }
    }
    let message = result?;
    Ok(ControlOutcome {
        worker: worker.to_owned(),
        action,
        message,
        replies: replies.into_iter().map(|r| r.payload).collect(),
    })
}
