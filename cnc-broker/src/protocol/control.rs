//! Remote control (pidbox): requests, and the replies workers send back
//! (README section 4).
//!
//! A request goes to the `celery.pidbox` fanout exchange (Redis: `PUBLISH
//! /{db}.celery.pidbox`). When a reply is wanted it carries a `ticket` and a
//! `reply_to` naming the caller's oid; every worker that runs it sends one
//! [`ControlReply`] whose body is `{hostname: payload}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::DecodeError;
use super::event::json_kind;
use super::json::{parse_as, to_python_json};
use super::message::{Message, new_uuid};
use super::names::{DEFAULT_CONTROL_EXCHANGE, pidbox_exchange, reply_exchange};

/// Where replies go: the reply exchange and the caller's oid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    /// `reply.celery.pidbox`.
    pub exchange: String,
    /// The caller's oid.
    pub routing_key: String,
}

/// One remote control request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRequest {
    /// Command name (`ping`, `revoke`, ...).
    pub method: String,
    /// Command arguments.
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// Node names to run it on; `None` means every worker.
    #[serde(default)]
    pub destination: Option<Vec<String>>,
    /// Alternative targeting by pattern (used when `destination` is null).
    #[serde(default)]
    pub pattern: Option<String>,
    /// `glob` or `pcre`, with `pattern`.
    #[serde(default)]
    pub matcher: Option<String>,
    /// Correlates the replies; present only when a reply is wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Where replies go; present only when a reply is wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyTo>,
}

fn args(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl ControlRequest {
    /// A request for `method` with `arguments`, to all workers, no reply.
    pub fn new(method: impl Into<String>, arguments: Map<String, Value>) -> Self {
        Self {
            method: method.into(),
            arguments,
            destination: None,
            pattern: None,
            matcher: None,
            ticket: None,
            reply_to: None,
        }
    }

    /// Only these workers.
    pub fn to(mut self, destination: Vec<String>) -> Self {
        self.destination = Some(destination);
        self
    }

    /// Only workers matching `pattern` (`matcher` = `glob` or `pcre`).
    pub fn matching(mut self, pattern: impl Into<String>, matcher: impl Into<String>) -> Self {
        self.pattern = Some(pattern.into());
        self.matcher = Some(matcher.into());
        self
    }

    /// Ask for replies to `oid` through the default control exchange, with a
    /// fresh ticket.
    pub fn with_reply(self, oid: &str) -> Self {
        self.with_reply_via(oid, DEFAULT_CONTROL_EXCHANGE)
    }

    /// Ask for replies to `oid` through `reply.<control_exchange>.pidbox`.
    pub fn with_reply_via(mut self, oid: &str, control_exchange: &str) -> Self {
        self.ticket = Some(new_uuid());
        self.reply_to = Some(ReplyTo {
            exchange: reply_exchange(control_exchange),
            routing_key: oid.to_owned(),
        });
        self
    }

    /// Whether workers will reply.
    pub fn wants_reply(&self) -> bool {
        self.ticket.is_some() && self.reply_to.is_some()
    }

    /// With a destination list, the number of replies to wait for (stop
    /// collecting early once all arrived); `None` means wait for the timeout.
    pub fn expected_replies(&self) -> Option<usize> {
        self.destination.as_ref().map(Vec::len)
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        to_python_json(self)
    }

    /// The message to publish: headers `clock` (int, the caller's Lamport
    /// clock) and `expires` (float epoch seconds = now + timeout),
    /// `delivery_mode` 2, exchange `<control_exchange>.pidbox`, routing key
    /// `""`.
    pub fn to_message(&self, clock: u64, expires: f64, control_exchange: &str) -> Message {
        let mut msg = Message::json(self.body());
        msg.headers.insert("clock".into(), Value::from(clock));
        msg.headers.insert(
            "expires".into(),
            serde_json::Number::from_f64(expires).map_or(Value::Null, Value::Number),
        );
        msg.properties.delivery_mode = Some(2);
        msg.properties.priority = Some(0);
        msg.properties.delivery_info.exchange = pidbox_exchange(control_exchange);
        msg
    }

    /// Parse a request (as a worker, or a tool watching the pidbox, sees it).
    pub fn from_message(msg: &Message) -> Result<Self, DecodeError> {
        msg.ensure_json()?;
        let v: Value = parse_as("control request", &msg.body)?;
        if !v.get("method").is_some_and(Value::is_string) {
            return Err(DecodeError::MissingField("method"));
        }
        Self::deserialize(v).map_err(|e| DecodeError::bad("control request", e.to_string()))
    }

    /// `ping` -> `{"ok": "pong"}`.
    pub fn ping() -> Self {
        Self::new("ping", Map::new())
    }
    /// `stats` -> see [`WorkerStats`].
    pub fn stats() -> Self {
        Self::new("stats", Map::new())
    }
    /// `active` -> list of [`TaskRequest`].
    pub fn active() -> Self {
        Self::new("active", args(json!({"safe": null})))
    }
    /// `reserved` -> list of [`TaskRequest`].
    pub fn reserved() -> Self {
        Self::new("reserved", Map::new())
    }
    /// `scheduled` -> list of [`ScheduledRequest`].
    pub fn scheduled() -> Self {
        Self::new("scheduled", Map::new())
    }
    /// `registered`, optionally with task attributes (`rate_limit`, `queue`...).
    pub fn registered(taskinfoitems: &[&str]) -> Self {
        Self::new(
            "registered",
            args(json!({ "taskinfoitems": taskinfoitems })),
        )
    }
    /// `active_queues` -> list of [`QueueInfo`].
    pub fn active_queues() -> Self {
        Self::new("active_queues", Map::new())
    }
    /// `conf`: settings changed from the defaults (or all of them).
    pub fn conf(with_defaults: bool) -> Self {
        Self::new("conf", args(json!({ "with_defaults": with_defaults })))
    }
    /// `revoked` -> list of ids.
    pub fn revoked() -> Self {
        Self::new("revoked", Map::new())
    }
    /// `query_task` -> `{id: [state, request]}`.
    pub fn query_task(ids: &[String]) -> Self {
        Self::new("query_task", args(json!({ "ids": ids })))
    }
    /// `report` -> `{"ok": text}`.
    pub fn report() -> Self {
        Self::new("report", Map::new())
    }
    /// `clock` -> `{"clock": n}`.
    pub fn clock() -> Self {
        Self::new("clock", Map::new())
    }
    /// `pool_grow`.
    pub fn pool_grow(n: u32) -> Self {
        Self::new("pool_grow", args(json!({ "n": n })))
    }
    /// `pool_shrink`.
    pub fn pool_shrink(n: u32) -> Self {
        Self::new("pool_shrink", args(json!({ "n": n })))
    }
    /// `autoscale` (an error from workers without `--autoscale`).
    pub fn autoscale(max: u32, min: u32) -> Self {
        Self::new("autoscale", args(json!({ "max": max, "min": min })))
    }
    /// `add_consumer` for `queue`, with Celery's defaults (direct exchange
    /// named like the queue, routing key = queue).
    pub fn add_consumer(queue: &str) -> Self {
        Self::add_consumer_with(queue, None, "direct", None)
    }
    /// `add_consumer` with every argument.
    pub fn add_consumer_with(
        queue: &str,
        exchange: Option<&str>,
        exchange_type: &str,
        routing_key: Option<&str>,
    ) -> Self {
        Self::new(
            "add_consumer",
            args(json!({
                "queue": queue,
                "exchange": exchange,
                "exchange_type": exchange_type,
                "routing_key": routing_key,
            })),
        )
    }
    /// `cancel_consumer`.
    pub fn cancel_consumer(queue: &str) -> Self {
        Self::new("cancel_consumer", args(json!({ "queue": queue })))
    }
    /// `rate_limit` (`"5/s"`, `"10/m"`, `"1/h"`, or a number per second).
    pub fn rate_limit(task_name: &str, rate_limit: &str) -> Self {
        Self::new(
            "rate_limit",
            args(json!({ "task_name": task_name, "rate_limit": rate_limit })),
        )
    }
    /// `time_limit` in seconds.
    pub fn time_limit(task_name: &str, hard: Option<f64>, soft: Option<f64>) -> Self {
        let num = |v: Option<f64>| match v {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            Some(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            None => Value::Null,
        };
        Self::new(
            "time_limit",
            args(json!({ "task_name": task_name, "hard": num(hard), "soft": num(soft) })),
        )
    }
    /// `revoke`: one id is sent as a string, several as a list (as Celery
    /// does); `signal` defaults to `SIGTERM` and only matters with
    /// `terminate`.
    pub fn revoke(ids: &[String], terminate: bool, signal: Option<&str>) -> Self {
        let task_id = match ids {
            [one] => Value::String(one.clone()),
            many => json!(many),
        };
        Self::new(
            "revoke",
            args(json!({
                "task_id": task_id,
                "terminate": terminate,
                "signal": signal.unwrap_or("SIGTERM"),
            })),
        )
    }
    /// `shutdown`: send it **without** [`ControlRequest::with_reply`]; the
    /// worker answers nothing and emits `worker-offline`.
    pub fn shutdown() -> Self {
        Self::new("shutdown", Map::new())
    }
    /// `pool_restart` (needs `worker_pool_restarts=True` on the worker).
    pub fn pool_restart(modules: Option<Vec<String>>, reload: bool) -> Self {
        Self::new(
            "pool_restart",
            args(json!({ "modules": modules, "reload": reload, "reloader": null })),
        )
    }
    /// `enable_events`.
    pub fn enable_events() -> Self {
        Self::new("enable_events", Map::new())
    }
    /// `disable_events`.
    pub fn disable_events() -> Self {
        Self::new("disable_events", Map::new())
    }
    /// `heartbeat`: the reply payload is `null`, and the worker sends a
    /// `worker-heartbeat` event.
    pub fn heartbeat() -> Self {
        Self::new("heartbeat", Map::new())
    }
}

/// One reply message: the ticket it answers, and `{hostname: payload}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlReply {
    /// The request's ticket (header `ticket`).
    pub ticket: Option<String>,
    /// The worker's Lamport clock (header `clock`).
    pub clock: Option<u64>,
    /// `(hostname, payload)` pairs; Celery sends exactly one per message.
    pub replies: Vec<(String, Value)>,
}

impl ControlReply {
    /// Parse a reply message (ticket from the headers).
    pub fn from_message(msg: &Message) -> Result<Self, DecodeError> {
        msg.ensure_json()?;
        let mut reply = Self::from_body(&msg.body)?;
        reply.ticket = msg.header_str("ticket").map(str::to_owned);
        reply.clock = msg.headers.get("clock").and_then(lenient_u64);
        Ok(reply)
    }

    /// Parse a reply body `{hostname: payload}`.
    pub fn from_body(body: &[u8]) -> Result<Self, DecodeError> {
        let v: Value = parse_as("control reply", body)?;
        let Value::Object(map) = v else {
            return Err(DecodeError::bad(
                "control reply",
                format!("expected an object, got {}", json_kind(&v)),
            ));
        };
        Ok(Self {
            ticket: None,
            clock: None,
            replies: map.into_iter().collect(),
        })
    }

    /// Whether this answers `ticket`.
    pub fn answers(&self, ticket: &str) -> bool {
        self.ticket.as_deref() == Some(ticket)
    }
}

fn lenient_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The shape of a simple command's payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<'a> {
    /// `{"ok": ...}`.
    Ok(&'a Value),
    /// `{"error": "<repr of the exception>"}`.
    Error(&'a str),
    /// Any other payload (lists, objects, `null` from `heartbeat`).
    Other(&'a Value),
}

/// Classify a payload as `{"ok": ...}`, `{"error": ...}` or something else.
pub fn outcome(payload: &Value) -> Outcome<'_> {
    if let Value::Object(m) = payload
        && m.len() == 1
    {
        if let Some(ok) = m.get("ok") {
            return Outcome::Ok(ok);
        }
        if let Some(err) = m.get("error") {
            return Outcome::Error(err.as_str().unwrap_or("error"));
        }
    }
    Outcome::Other(payload)
}

/// One entry of a `registered` reply: `"demo.limited [rate_limit=10/m]"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredTask {
    /// Task name.
    pub name: String,
    /// Requested attributes, in order (`rate_limit` = `10/m`).
    pub attributes: Vec<(String, String)>,
}

impl RegisteredTask {
    /// Parse one entry; never fails (a malformed suffix stays in the name).
    pub fn parse(entry: &str) -> Self {
        let entry = entry.trim();
        if let Some(open) = entry.find(" [")
            && entry.ends_with(']')
        {
            let inner = &entry[open + 2..entry.len() - 1];
            let mut attributes: Vec<(String, String)> = Vec::new();
            for tok in inner.split(' ') {
                match tok.split_once('=') {
                    Some((k, v)) => attributes.push((k.to_owned(), v.to_owned())),
                    // A value containing spaces: glue it back on.
                    None => match attributes.last_mut() {
                        Some(last) => {
                            last.1.push(' ');
                            last.1.push_str(tok);
                        }
                        None => {
                            return Self {
                                name: entry.to_owned(),
                                attributes: Vec::new(),
                            };
                        }
                    },
                }
            }
            return Self {
                name: entry[..open].to_owned(),
                attributes,
            };
        }
        Self {
            name: entry.to_owned(),
            attributes: Vec::new(),
        }
    }

    /// An attribute's value.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn expect_list<'a>(what: &'static str, payload: &'a Value) -> Result<&'a Vec<Value>, DecodeError> {
    match payload {
        Value::Array(a) => Ok(a),
        other => Err(error_or_bad(what, other)),
    }
}

fn error_or_bad(what: &'static str, payload: &Value) -> DecodeError {
    match outcome(payload) {
        Outcome::Error(e) => DecodeError::bad(what, format!("worker error: {e}")),
        _ => DecodeError::bad(what, format!("unexpected {}", json_kind(payload))),
    }
}

/// Parse a `registered` payload.
pub fn parse_registered(payload: &Value) -> Result<Vec<RegisteredTask>, DecodeError> {
    Ok(expect_list("registered", payload)?
        .iter()
        .filter_map(Value::as_str)
        .map(RegisteredTask::parse)
        .collect())
}

/// Parse a `revoked` payload (ids).
pub fn parse_revoked(payload: &Value) -> Result<Vec<String>, DecodeError> {
    Ok(expect_list("revoked", payload)?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect())
}

/// Parse a `clock` payload.
pub fn parse_clock(payload: &Value) -> Result<u64, DecodeError> {
    payload
        .get("clock")
        .and_then(lenient_u64)
        .ok_or_else(|| error_or_bad("clock", payload))
}

/// One queue a worker consumes from (`active_queues`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QueueInfo {
    /// Queue name.
    pub name: String,
    /// Exchange (`name`, `type`, `durable`...).
    #[serde(default)]
    pub exchange: Option<Map<String, Value>>,
    /// Routing key.
    #[serde(default)]
    pub routing_key: Option<String>,
    /// Durable flag.
    #[serde(default)]
    pub durable: Option<bool>,
    /// Exclusive flag.
    #[serde(default)]
    pub exclusive: Option<bool>,
    /// Auto-delete flag.
    #[serde(default)]
    pub auto_delete: Option<bool>,
    /// `x-max-priority`, when declared.
    #[serde(default)]
    pub max_priority: Option<i64>,
    /// Every other field (`queue_arguments`, `message_ttl`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl QueueInfo {
    /// The exchange's name.
    pub fn exchange_name(&self) -> Option<&str> {
        self.exchange.as_ref()?.get("name")?.as_str()
    }
}

/// Parse an `active_queues` payload.
pub fn parse_active_queues(payload: &Value) -> Result<Vec<QueueInfo>, DecodeError> {
    expect_list("active_queues", payload)?
        .iter()
        .map(|q| {
            QueueInfo::deserialize(q).map_err(|e| DecodeError::bad("active_queues", e.to_string()))
        })
        .collect()
}

/// A task request as `active`, `reserved`, `scheduled` and `query_task`
/// report it. `args`/`kwargs` are real JSON here (not repr).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskRequest {
    /// Task id.
    pub id: String,
    /// Task name.
    #[serde(default)]
    pub name: Option<String>,
    /// Positional arguments.
    #[serde(default)]
    pub args: Value,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Value,
    /// Task type (the name).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Worker node.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Start time (epoch), null when not started.
    #[serde(default)]
    pub time_start: Option<f64>,
    /// Whether the message is acknowledged.
    #[serde(default)]
    pub acknowledged: Option<bool>,
    /// `exchange`, `routing_key`, `priority`, `redelivered`.
    #[serde(default)]
    pub delivery_info: Option<Map<String, Value>>,
    /// Pool process running it.
    #[serde(default)]
    pub worker_pid: Option<i64>,
    /// Other fields, preserved.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Parse an `active` or `reserved` payload.
pub fn parse_requests(payload: &Value) -> Result<Vec<TaskRequest>, DecodeError> {
    expect_list("requests", payload)?
        .iter()
        .map(|r| {
            TaskRequest::deserialize(r).map_err(|e| DecodeError::bad("request", e.to_string()))
        })
        .collect()
}

/// One `scheduled` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ScheduledRequest {
    /// ISO-8601 ETA.
    #[serde(default)]
    pub eta: Option<String>,
    /// The worker's timer priority (not the message priority).
    #[serde(default)]
    pub priority: Option<i64>,
    /// The request.
    pub request: TaskRequest,
}

/// Parse a `scheduled` payload.
pub fn parse_scheduled(payload: &Value) -> Result<Vec<ScheduledRequest>, DecodeError> {
    expect_list("scheduled", payload)?
        .iter()
        .map(|r| {
            ScheduledRequest::deserialize(r)
                .map_err(|e| DecodeError::bad("scheduled", e.to_string()))
        })
        .collect()
}

/// Parse a `query_task` payload: `(id, state, request)` where state is
/// `active`, `reserved` or `scheduled`.
pub fn parse_query_task(
    payload: &Value,
) -> Result<Vec<(String, String, TaskRequest)>, DecodeError> {
    let Value::Object(m) = payload else {
        return Err(error_or_bad("query_task", payload));
    };
    m.iter()
        .map(|(id, entry)| {
            let pair = entry
                .as_array()
                .filter(|a| a.len() == 2)
                .ok_or_else(|| DecodeError::bad("query_task", "entry is not [state, request]"))?;
            let state = pair[0].as_str().unwrap_or_default().to_owned();
            let req = TaskRequest::deserialize(&pair[1])
                .map_err(|e| DecodeError::bad("query_task", e.to_string()))?;
            Ok((id.clone(), state, req))
        })
        .collect()
}

/// The parts of a `stats` payload a dashboard shows; the rest is in `raw`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStats {
    /// Tasks run, by name.
    pub total: BTreeMap<String, u64>,
    /// Worker's main pid.
    pub pid: Option<i64>,
    /// Lamport clock. **A string on the wire** (`"101"`); parsed leniently.
    pub clock: Option<u64>,
    /// Seconds since start.
    pub uptime: Option<f64>,
    /// `pool.max-concurrency`.
    pub max_concurrency: Option<u64>,
    /// `pool.processes` (pids).
    pub processes: Vec<i64>,
    /// `pool.implementation`.
    pub pool_implementation: Option<String>,
    /// Prefetch count.
    pub prefetch_count: Option<u64>,
    /// The whole payload.
    pub raw: Value,
}

/// Parse a `stats` payload.
pub fn parse_stats(payload: &Value) -> Result<WorkerStats, DecodeError> {
    let Value::Object(m) = payload else {
        return Err(error_or_bad("stats", payload));
    };
    let pool = m.get("pool");
    Ok(WorkerStats {
        total: m
            .get("total")
            .and_then(Value::as_object)
            .map(|t| {
                t.iter()
                    .filter_map(|(k, v)| lenient_u64(v).map(|n| (k.clone(), n)))
                    .collect()
            })
            .unwrap_or_default(),
        pid: m.get("pid").and_then(Value::as_i64),
        clock: m.get("clock").and_then(lenient_u64),
        uptime: m.get("uptime").and_then(Value::as_f64),
        max_concurrency: pool
            .and_then(|p| p.get("max-concurrency"))
            .and_then(lenient_u64),
        processes: pool
            .and_then(|p| p.get("processes"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default(),
        pool_implementation: pool
            .and_then(|p| p.get("implementation"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        prefetch_count: m.get("prefetch_count").and_then(lenient_u64),
        raw: payload.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_entries() {
        let r = RegisteredTask::parse("demo.limited [rate_limit=10/m]");
        assert_eq!(r.name, "demo.limited");
        assert_eq!(r.attribute("rate_limit"), Some("10/m"));
        let r = RegisteredTask::parse("demo.x [queue=custom rate_limit=1/s]");
        assert_eq!(r.attributes.len(), 2);
        assert_eq!(RegisteredTask::parse("demo.add").attributes, vec![]);
        assert_eq!(RegisteredTask::parse("weird [").name, "weird [");
    }

    #[test]
    fn outcomes() {
        assert_eq!(outcome(&json!({"ok": "pong"})), Outcome::Ok(&json!("pong")));
        assert_eq!(
            outcome(&json!({"error": "KeyError('x')"})),
            Outcome::Error("KeyError('x')")
        );
        assert_eq!(outcome(&Value::Null), Outcome::Other(&Value::Null));
    }

    #[test]
    fn revoke_shapes() {
        let one = ControlRequest::revoke(&["a".into()], false, None);
        assert_eq!(one.arguments["task_id"], json!("a"));
        let many = ControlRequest::revoke(&["a".into(), "b".into()], true, Some("SIGKILL"));
        assert_eq!(many.arguments["task_id"], json!(["a", "b"]));
        assert_eq!(many.arguments["signal"], json!("SIGKILL"));
    }
}
