//! Task messages, protocol v2 (README section 2): building them with every
//! `apply_async` option, canvas (chain, group, chord) as Celery publishes it,
//! and parsing them back (for purge-by-name/group and re-sending).

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::DecodeError;
use super::json::{parse_value, to_python_json};
use super::message::{Message, new_uuid};
use super::repr::{args_repr, kwargs_repr};

/// A signature: one canvas part as it appears inside `embed` (callbacks,
/// errbacks, chain steps, chord callback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// Registered task name.
    pub task: String,
    /// Positional arguments.
    #[serde(default, deserialize_with = "super::json::null_default")]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default, deserialize_with = "super::json::null_default")]
    pub kwargs: Map<String, Value>,
    /// `apply_async` options (`task_id`, `queue`, `group_id`, `reply_to`...).
    #[serde(default, deserialize_with = "super::json::null_default")]
    pub options: Map<String, Value>,
    /// `null`, `"chain"`, `"group"` or `"chord"`.
    #[serde(default)]
    pub subtask_type: Option<String>,
    /// An immutable signature (`.si()`) ignores its parent's result.
    #[serde(default, deserialize_with = "super::json::null_default")]
    pub immutable: bool,
    /// Other keys (`chord_size`...), preserved.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Signature {
    /// `task.s()`: no arguments yet.
    pub fn new(task: impl Into<String>) -> Self {
        Self {
            task: task.into(),
            args: Vec::new(),
            kwargs: Map::new(),
            options: Map::new(),
            subtask_type: None,
            immutable: false,
            extra: Map::new(),
        }
    }

    /// Set the positional arguments.
    pub fn with_args(mut self, args: Vec<Value>) -> Self {
        self.args = args;
        self
    }

    /// Set the keyword arguments.
    pub fn with_kwargs(mut self, kwargs: Map<String, Value>) -> Self {
        self.kwargs = kwargs;
        self
    }

    /// Make it immutable (`.si()`).
    pub fn immutable(mut self) -> Self {
        self.immutable = true;
        self
    }

    /// Set one option.
    pub fn with_option(mut self, key: &str, value: Value) -> Self {
        self.options.insert(key.to_owned(), value);
        self
    }

    /// `options.task_id`, when fixed in advance.
    pub fn task_id(&self) -> Option<&str> {
        self.options.get("task_id").and_then(Value::as_str)
    }

    /// Fix `options.task_id` when absent and return it.
    pub fn ensure_task_id(&mut self) -> String {
        if let Some(id) = self.task_id() {
            return id.to_owned();
        }
        let id = new_uuid();
        self.options
            .insert("task_id".into(), Value::String(id.clone()));
        id
    }

    /// Parse a signature from JSON.
    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        if !value.get("task").is_some_and(Value::is_string) {
            return Err(DecodeError::MissingField("task"));
        }
        Self::deserialize(value).map_err(|e| DecodeError::bad("signature", e.to_string()))
    }

    /// The JSON value Celery writes.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The third body element: what happens after the task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Embed {
    /// `link`: signatures applied to the result on success.
    #[serde(default)]
    pub callbacks: Option<Vec<Signature>>,
    /// `link_error`: signatures applied on failure.
    #[serde(default)]
    pub errbacks: Option<Vec<Signature>>,
    /// Remaining chain steps, **last step first** (the worker pops the end).
    #[serde(default)]
    pub chain: Option<Vec<Signature>>,
    /// Chord callback, on chord header members.
    #[serde(default)]
    pub chord: Option<Signature>,
    /// Other keys, preserved.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `timelimit` header: `[hard, soft]` seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeLimit {
    /// `time_limit`: the worker kills the task.
    pub hard: Option<f64>,
    /// `soft_time_limit`: the task gets `SoftTimeLimitExceeded`.
    pub soft: Option<f64>,
}

/// A protocol v2 task message, headers and body, plus its routing.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// Registered task name (`task` header).
    pub task: String,
    /// Task id.
    pub id: String,
    /// Positional arguments (real JSON).
    pub args: Vec<Value>,
    /// Keyword arguments (real JSON).
    pub kwargs: Map<String, Value>,
    /// Callbacks, errbacks, chain, chord.
    pub embed: Embed,
    /// Display name override.
    pub shadow: Option<String>,
    /// ISO-8601 ETA.
    pub eta: Option<String>,
    /// ISO-8601 expiry.
    pub expires: Option<String>,
    /// Group id.
    pub group: Option<String>,
    /// Position in the group.
    pub group_index: Option<i64>,
    /// Retry count.
    pub retries: u64,
    /// `[hard, soft]`.
    pub timelimit: TimeLimit,
    /// First task of the workflow (its own id for a plain task).
    pub root_id: Option<String>,
    /// Task that published this one.
    pub parent_id: Option<String>,
    /// Python repr of args, for display.
    pub argsrepr: Option<String>,
    /// Python repr of kwargs, for display.
    pub kwargsrepr: Option<String>,
    /// `<name>@<host>` of the publisher.
    pub origin: Option<String>,
    /// Do not store the result. Usually a bool; `null` as captured from
    /// `send_task` (the README's table says bool: the capture wins).
    pub ignore_result: Option<bool>,
    /// Celery's `replaced_task_nesting` (0).
    pub replaced_task_nesting: i64,
    /// `stamped_headers` (null).
    pub stamped_headers: Value,
    /// `stamps` (`{}`).
    pub stamps: Value,
    /// Headers not listed above (`redelivered`, custom ones), preserved.
    pub extra_headers: Map<String, Value>,
    /// Queue (the routing key on the default exchange).
    pub queue: String,
    /// Exchange (`""`: the default exchange).
    pub exchange: String,
    /// Priority property.
    pub priority: Option<u8>,
    /// `reply_to` property (the publisher's oid; `""` is fine).
    pub reply_to: String,
    /// AMQP `expiration` (ms as a string), set with `expires`.
    pub expiration: Option<String>,
}

const KNOWN_HEADERS: [&str; 20] = [
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
    "lang",
];

/// A JSON number for seconds: integral values as integers (`30`, not `30.0`).
fn secs_value(v: Option<f64>) -> Value {
    match v {
        None => Value::Null,
        Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
        Some(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
    }
}

fn opt_str_value(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

/// Python's `datetime.isoformat()` for a UTC time: microseconds, `+00:00`
/// (and no fraction when it is zero, as Python does).
pub fn iso_utc(t: DateTime<Utc>) -> String {
    let fmt = if t.timestamp_subsec_micros() == 0 {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Micros
    };
    t.to_rfc3339_opts(fmt, false)
}

/// Parse an ISO-8601 header value (`eta`, `expires`); naive values are UTC.
pub fn parse_iso(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

impl TaskMessage {
    /// The body `[args, kwargs, embed]` as JSON bytes.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a>(&'a [Value], &'a Map<String, Value>, &'a Embed);
        to_python_json(&Body(&self.args, &self.kwargs, &self.embed))
    }

    /// The application headers, with Celery's names and null for unset ones.
    pub fn headers(&self) -> Map<String, Value> {
        let mut h = Map::new();
        h.insert("lang".into(), "py".into());
        h.insert("task".into(), Value::String(self.task.clone()));
        h.insert("id".into(), Value::String(self.id.clone()));
        h.insert("shadow".into(), opt_str_value(&self.shadow));
        h.insert("eta".into(), opt_str_value(&self.eta));
        h.insert("expires".into(), opt_str_value(&self.expires));
        h.insert("group".into(), opt_str_value(&self.group));
        h.insert(
            "group_index".into(),
            self.group_index.map_or(Value::Null, Value::from),
        );
        h.insert("retries".into(), Value::from(self.retries));
        h.insert(
            "timelimit".into(),
            Value::Array(vec![
                secs_value(self.timelimit.hard),
                secs_value(self.timelimit.soft),
            ]),
        );
        h.insert("root_id".into(), opt_str_value(&self.root_id));
        h.insert("parent_id".into(), opt_str_value(&self.parent_id));
        h.insert("argsrepr".into(), opt_str_value(&self.argsrepr));
        h.insert("kwargsrepr".into(), opt_str_value(&self.kwargsrepr));
        h.insert("origin".into(), opt_str_value(&self.origin));
        h.insert(
            "ignore_result".into(),
            self.ignore_result.map_or(Value::Null, Value::Bool),
        );
        h.insert(
            "replaced_task_nesting".into(),
            Value::from(self.replaced_task_nesting),
        );
        h.insert("stamped_headers".into(), self.stamped_headers.clone());
        h.insert("stamps".into(), self.stamps.clone());
        for (k, v) in &self.extra_headers {
            h.entry(k.clone()).or_insert_with(|| v.clone());
        }
        h
    }

    /// The neutral [`Message`]: `correlation_id` = id, `delivery_mode` 2,
    /// `delivery_info` {exchange, routing_key = queue}, priority, expiration.
    /// Publish it to exchange `""` with routing key [`TaskMessage::queue`]
    /// (AMQP) or `LPUSH` it onto the queue's priority list (Redis).
    pub fn to_message(&self) -> Message {
        let mut msg = Message::json(self.body());
        msg.headers = self.headers();
        let p = &mut msg.properties;
        p.correlation_id = Some(self.id.clone());
        p.reply_to = Some(self.reply_to.clone());
        p.delivery_mode = Some(2);
        p.priority = Some(self.priority.unwrap_or(0));
        p.delivery_info.exchange = self.exchange.clone();
        p.delivery_info.routing_key = self.queue.clone();
        p.expiration = self.expiration.clone();
        msg
    }

    /// Parse a protocol v2 task message. Needs the `task` and `id` headers and
    /// a `[args, kwargs, embed]` body; unknown headers are kept. Routing comes
    /// from `delivery_info` (the queue is its routing key).
    pub fn from_message(msg: &Message) -> Result<Self, DecodeError> {
        msg.ensure_json()?;
        let h = &msg.headers;
        let task = match h.get("task") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => return Err(DecodeError::MissingField("task")),
            Some(_) => return Err(DecodeError::bad("task", "not a string")),
        };
        let id = match h.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => return Err(DecodeError::MissingField("id")),
            Some(_) => return Err(DecodeError::bad("id", "not a string")),
        };
        let TaskBody {
            args,
            kwargs,
            embed,
        } = parse_body(&msg.body)?;
        let s = |k: &str| h.get(k).and_then(Value::as_str).map(str::to_owned);
        let timelimit = match h.get("timelimit") {
            Some(Value::Array(a)) => TimeLimit {
                hard: a.first().and_then(Value::as_f64),
                soft: a.get(1).and_then(Value::as_f64),
            },
            _ => TimeLimit::default(),
        };
        let extra_headers = h
            .iter()
            .filter(|(k, _)| !KNOWN_HEADERS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Self {
            task,
            id,
            args,
            kwargs,
            embed,
            shadow: s("shadow"),
            eta: s("eta"),
            expires: s("expires"),
            group: s("group"),
            group_index: h.get("group_index").and_then(Value::as_i64),
            retries: h.get("retries").and_then(Value::as_u64).unwrap_or(0),
            timelimit,
            root_id: s("root_id"),
            parent_id: s("parent_id"),
            argsrepr: s("argsrepr"),
            kwargsrepr: s("kwargsrepr"),
            origin: s("origin"),
            ignore_result: h.get("ignore_result").and_then(Value::as_bool),
            replaced_task_nesting: h
                .get("replaced_task_nesting")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            stamped_headers: h.get("stamped_headers").cloned().unwrap_or(Value::Null),
            stamps: h
                .get("stamps")
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new())),
            extra_headers,
            queue: msg.properties.delivery_info.routing_key.clone(),
            exchange: msg.properties.delivery_info.exchange.clone(),
            priority: msg.properties.priority,
            reply_to: msg.properties.reply_to.clone().unwrap_or_default(),
            expiration: msg.properties.expiration.clone(),
        })
    }

    /// A copy to publish again: a new id (workers discard ids they saw
    /// revoked; README 2f), `root_id` following when it was the old id, and
    /// reprs, embed and routing kept.
    pub fn resend_with_new_id(&self) -> Self {
        let mut m = self.clone();
        let new_id = new_uuid();
        if m.root_id.as_deref() == Some(self.id.as_str()) {
            m.root_id = Some(new_id.clone());
        }
        m.extra_headers.remove("redelivered");
        m.id = new_id;
        m
    }
}

/// The three parts of a v2 body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskBody {
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Callbacks, errbacks, chain, chord.
    pub embed: Embed,
}

/// Parse a v2 body `[args, kwargs, embed]` (embed may be missing or null).
pub fn parse_body(body: &[u8]) -> Result<TaskBody, DecodeError> {
    let value = parse_value("task body", body)?;
    let Value::Array(mut parts) = value else {
        return Err(DecodeError::bad(
            "task body",
            "not a [args, kwargs, embed] array",
        ));
    };
    if parts.len() < 2 {
        return Err(DecodeError::bad("task body", "fewer than two elements"));
    }
    let embed = if parts.len() >= 3 {
        match parts.swap_remove(2) {
            Value::Null => Embed::default(),
            e => Embed::deserialize(e).map_err(|e| DecodeError::bad("embed", e.to_string()))?,
        }
    } else {
        Embed::default()
    };
    let kwargs = match parts.swap_remove(1) {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => return Err(DecodeError::bad("kwargs", "not an object")),
    };
    let args = match parts.swap_remove(0) {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        _ => return Err(DecodeError::bad("args", "not an array")),
    };
    Ok(TaskBody {
        args,
        kwargs,
        embed,
    })
}

/// When a task expires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expires {
    /// At this time.
    At(DateTime<Utc>),
    /// This many seconds after sending.
    In(f64),
}

/// A builder with every `apply_async` option; [`SendTask::build`] gives the
/// [`TaskMessage`].
#[derive(Debug, Clone, PartialEq)]
pub struct SendTask {
    name: String,
    id: Option<String>,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    eta: Option<DateTime<Utc>>,
    countdown: Option<f64>,
    expires: Option<Expires>,
    priority: Option<u8>,
    retries: u64,
    timelimit: TimeLimit,
    root_id: Option<String>,
    parent_id: Option<String>,
    group: Option<String>,
    group_index: Option<i64>,
    argsrepr: Option<String>,
    kwargsrepr: Option<String>,
    origin: Option<String>,
    ignore_result: Option<bool>,
    shadow: Option<String>,
    queue: String,
    exchange: String,
    reply_to: String,
    embed: Embed,
    extra_headers: Map<String, Value>,
    now: Option<DateTime<Utc>>,
}

impl SendTask {
    /// Send task `name` to the default queue `celery`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            id: None,
            args: Vec::new(),
            kwargs: Map::new(),
            eta: None,
            countdown: None,
            expires: None,
            priority: None,
            retries: 0,
            timelimit: TimeLimit::default(),
            root_id: None,
            parent_id: None,
            group: None,
            group_index: None,
            argsrepr: None,
            kwargsrepr: None,
            origin: None,
            ignore_result: Some(false),
            shadow: None,
            queue: super::names::DEFAULT_QUEUE.to_owned(),
            exchange: String::new(),
            reply_to: String::new(),
            embed: Embed::default(),
            extra_headers: Map::new(),
            now: None,
        }
    }

    /// Start from a signature: name, args, kwargs and its options
    /// (`task_id`, `queue`, `priority`, `countdown`, `eta`, `expires`,
    /// `time_limit`, `soft_time_limit`, `group_id`, `group_index`,
    /// `reply_to`, `shadow`, `ignore_result`).
    pub fn from_signature(sig: &Signature) -> Self {
        let o = &sig.options;
        let mut t = Self::new(sig.task.clone())
            .args(sig.args.clone())
            .kwargs(sig.kwargs.clone());
        let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
        t.id = s("task_id");
        if let Some(q) = s("queue") {
            t.queue = q;
        }
        if let Some(r) = s("reply_to") {
            t.reply_to = r;
        }
        t.shadow = s("shadow");
        t.group = s("group_id");
        t.group_index = o.get("group_index").and_then(Value::as_i64);
        t.priority = o
            .get("priority")
            .and_then(Value::as_u64)
            .map(|p| p.min(255) as u8);
        t.countdown = o.get("countdown").and_then(Value::as_f64);
        t.eta = s("eta").as_deref().and_then(parse_iso);
        t.expires = match o.get("expires") {
            Some(Value::Number(n)) => n.as_f64().map(Expires::In),
            Some(Value::String(x)) => parse_iso(x).map(Expires::At),
            _ => None,
        };
        t.timelimit.hard = o.get("time_limit").and_then(Value::as_f64);
        t.timelimit.soft = o.get("soft_time_limit").and_then(Value::as_f64);
        t.ignore_result = Some(
            o.get("ignore_result")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        );
        t
    }

    /// Fix the task id (default: a new uuid4).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// Positional arguments (a JSON array).
    pub fn args(mut self, args: Vec<Value>) -> Self {
        self.args = args;
        self
    }
    /// Keyword arguments (a JSON object).
    pub fn kwargs(mut self, kwargs: Map<String, Value>) -> Self {
        self.kwargs = kwargs;
        self
    }
    /// Run no earlier than `eta`.
    pub fn eta(mut self, eta: DateTime<Utc>) -> Self {
        self.eta = Some(eta);
        self
    }
    /// Run no earlier than `seconds` from now (becomes the `eta` header).
    pub fn countdown(mut self, seconds: f64) -> Self {
        self.countdown = Some(seconds);
        self
    }
    /// Expire at a time or after some seconds: `expires` header plus AMQP
    /// `expiration` in ms.
    pub fn expires(mut self, expires: Expires) -> Self {
        self.expires = Some(expires);
        self
    }
    /// Message priority (Redis buckets 0/3/6/9; AMQP needs `x-max-priority`).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }
    /// Retry count to send (0 for a new task).
    pub fn retries(mut self, retries: u64) -> Self {
        self.retries = retries;
        self
    }
    /// Hard time limit in seconds.
    pub fn time_limit(mut self, seconds: f64) -> Self {
        self.timelimit.hard = Some(seconds);
        self
    }
    /// Soft time limit in seconds.
    pub fn soft_time_limit(mut self, seconds: f64) -> Self {
        self.timelimit.soft = Some(seconds);
        self
    }
    /// Workflow root id (default: the task's own id).
    pub fn root_id(mut self, id: impl Into<String>) -> Self {
        self.root_id = Some(id.into());
        self
    }
    /// Parent task id.
    pub fn parent_id(mut self, id: impl Into<String>) -> Self {
        self.parent_id = Some(id.into());
        self
    }
    /// Group membership.
    pub fn group(mut self, group_id: impl Into<String>, index: Option<i64>) -> Self {
        self.group = Some(group_id.into());
        self.group_index = index;
        self
    }
    /// Override the computed `argsrepr`.
    pub fn argsrepr(mut self, repr: impl Into<String>) -> Self {
        self.argsrepr = Some(repr.into());
        self
    }
    /// Override the computed `kwargsrepr`.
    pub fn kwargsrepr(mut self, repr: impl Into<String>) -> Self {
        self.kwargsrepr = Some(repr.into());
        self
    }
    /// Publisher name (`<name>@<host>`).
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }
    /// Do not store the result (`None` sends `null`, as `send_task` does).
    pub fn ignore_result(mut self, ignore: Option<bool>) -> Self {
        self.ignore_result = ignore;
        self
    }
    /// Display name override.
    pub fn shadow(mut self, name: impl Into<String>) -> Self {
        self.shadow = Some(name.into());
        self
    }
    /// Target queue (routing key on the default exchange).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }
    /// Publish to this exchange instead of the default `""`.
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }
    /// `reply_to` property (default `""`).
    pub fn reply_to(mut self, oid: impl Into<String>) -> Self {
        self.reply_to = oid.into();
        self
    }
    /// Add a success callback (`link`).
    pub fn link(mut self, sig: Signature) -> Self {
        self.embed.callbacks.get_or_insert_with(Vec::new).push(sig);
        self
    }
    /// Add an error callback (`link_error`).
    pub fn link_error(mut self, sig: Signature) -> Self {
        self.embed.errbacks.get_or_insert_with(Vec::new).push(sig);
        self
    }
    /// Remaining chain steps **in execution order**; they are stored reversed
    /// (last first) as Celery does.
    pub fn chain(mut self, steps: Vec<Signature>) -> Self {
        let mut steps = steps;
        steps.reverse();
        self.embed.chain = if steps.is_empty() { None } else { Some(steps) };
        self
    }
    /// Chord callback (on chord header members).
    pub fn chord(mut self, callback: Signature) -> Self {
        self.embed.chord = Some(callback);
        self
    }
    /// An extra header.
    pub fn header(mut self, key: impl Into<String>, value: Value) -> Self {
        self.extra_headers.insert(key.into(), value);
        self
    }
    /// The time "now" for countdown/expires (default: the clock); for tests.
    pub fn now(mut self, now: DateTime<Utc>) -> Self {
        self.now = Some(now);
        self
    }

    /// Build the message.
    pub fn build(self) -> TaskMessage {
        let now = self.now.unwrap_or_else(Utc::now);
        let id = self.id.unwrap_or_else(new_uuid);
        let eta = match (self.eta, self.countdown) {
            (Some(t), _) => Some(t),
            (None, Some(c)) => Some(now + secs(c)),
            (None, None) => None,
        };
        let (expires, expiration) = match self.expires {
            None => (None, None),
            Some(e) => {
                let (at, left) = match e {
                    Expires::At(t) => (t, (t - now).num_milliseconds() as f64 / 1000.0),
                    Expires::In(s) => (now + secs(s), s),
                };
                let ms = (left * 1000.0).max(0.0) as i64;
                (Some(iso_utc(at)), Some(ms.to_string()))
            }
        };
        TaskMessage {
            argsrepr: Some(self.argsrepr.unwrap_or_else(|| args_repr(&self.args))),
            kwargsrepr: Some(self.kwargsrepr.unwrap_or_else(|| kwargs_repr(&self.kwargs))),
            root_id: Some(self.root_id.unwrap_or_else(|| id.clone())),
            task: self.name,
            args: self.args,
            kwargs: self.kwargs,
            embed: self.embed,
            shadow: self.shadow,
            eta: eta.map(iso_utc),
            expires,
            group: self.group,
            group_index: self.group_index,
            retries: self.retries,
            timelimit: self.timelimit,
            parent_id: self.parent_id,
            origin: self.origin,
            ignore_result: self.ignore_result,
            replaced_task_nesting: 0,
            stamped_headers: Value::Null,
            stamps: Value::Object(Map::new()),
            extra_headers: self.extra_headers,
            queue: self.queue,
            exchange: self.exchange,
            priority: Some(self.priority.unwrap_or(0)),
            reply_to: self.reply_to,
            expiration,
            id,
        }
    }
}

fn secs(s: f64) -> Duration {
    if s.is_finite() {
        Duration::microseconds((s * 1e6).clamp(-1e17, 1e17) as i64)
    } else {
        Duration::zero()
    }
}

/// `chain(a, b, c)()`: only the first step is published; the others get
/// their `task_id` fixed in advance (and `reply_to`), and ride in
/// `embed.chain` reversed. Returns the builder of the first step (set
/// queue, origin... on it before building) and the ids of all steps in order.
pub fn chain(steps: Vec<Signature>, reply_to: &str) -> Option<(SendTask, Vec<String>)> {
    let mut steps = steps.into_iter();
    let first = steps.next()?;
    let mut rest: Vec<Signature> = steps.collect();
    let mut first_task = SendTask::from_signature(&first);
    let first_id = first_task.id.clone().unwrap_or_else(new_uuid);
    first_task.id = Some(first_id.clone());
    let mut ids = vec![first_id];
    for s in &mut rest {
        ids.push(s.ensure_task_id());
        s.options
            .entry("reply_to")
            .or_insert_with(|| Value::String(reply_to.to_owned()));
    }
    Some((first_task.reply_to(reply_to).chain(rest), ids))
}

/// `group(sigs)()`: one message per member with header `group` = the group id
/// and `group_index` 0, 1, 2...; each member is its own root.
pub fn group(members: Vec<Signature>, group_id: Option<String>) -> (String, Vec<SendTask>) {
    let gid = group_id.unwrap_or_else(new_uuid);
    let tasks = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut t = SendTask::from_signature(m).group(gid.clone(), Some(i as i64));
            t.id = Some(t.id.clone().unwrap_or_else(new_uuid));
            t
        })
        .collect();
    (gid, tasks)
}

/// A chord as Celery publishes it with a native-join backend (Redis).
#[derive(Debug, Clone, PartialEq)]
pub struct ChordPlan {
    /// The chord's group id.
    pub group_id: String,
    /// The callback's task id (fixed in advance).
    pub callback_id: String,
    /// Header size: also write `celery-taskset-meta-<gid>.s` = size
    /// ([`crate::protocol::result::ResultKeys::chord_size`]) before sending.
    pub size: usize,
    /// One builder per header member.
    pub header: Vec<SendTask>,
}

/// `chord(header, callback)()`: every header message has `group` = the chord
/// group id, its `group_index`, and `embed.chord` = the callback, whose
/// options carry `task_id`, `reply_to` and `group_id`.
pub fn chord(
    header: Vec<Signature>,
    mut callback: Signature,
    group_id: Option<String>,
    reply_to: &str,
) -> ChordPlan {
    let (gid, tasks) = group(header, group_id);
    let callback_id = callback.ensure_task_id();
    callback
        .options
        .entry("reply_to")
        .or_insert_with(|| Value::String(reply_to.to_owned()));
    callback
        .options
        .insert("group_id".into(), Value::String(gid.clone()));
    let size = tasks.len();
    let header = tasks
        .into_iter()
        .map(|t| t.reply_to(reply_to).chord(callback.clone()))
        .collect();
    ChordPlan {
        group_id: gid,
        callback_id,
        size,
        header,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_basic() {
        let now = parse_iso("2026-11-22T04:38:18.319912+00:00").unwrap();
        let m = SendTask::new("demo.add")
            .args(vec![json!(4), json!(4)])
            .expires(Expires::In(2.0))
            .countdown(45.0)
            .time_limit(30.0)
            .soft_time_limit(20.0)
            .now(now)
            .build();
        assert_eq!(m.expiration.as_deref(), Some("2000"));
        assert_eq!(
            m.expires.as_deref(),
            Some("2026-11-22T04:38:20.319912+00:00")
        );
        assert_eq!(m.eta.as_deref(), Some("2026-11-22T04:39:03.319912+00:00"));
        assert_eq!(m.argsrepr.as_deref(), Some("(4, 4)"));
        assert_eq!(m.headers()["timelimit"], json!([30, 20]));
        let back = TaskMessage::from_message(&m.to_message()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn negative_expiry_is_zero() {
        let m = SendTask::new("x").expires(Expires::In(-5.0)).build();
        assert_eq!(m.expiration.as_deref(), Some("0"));
    }

    #[test]
    fn chain_reverses() {
        let (first, ids) = chain(
            vec![
                Signature::new("a").with_args(vec![json!(1)]),
                Signature::new("b"),
                Signature::new("c"),
            ],
            "oid",
        )
        .unwrap();
        let m = first.build();
        let c = m.embed.chain.as_ref().unwrap();
        assert_eq!(c[0].task, "c");
        assert_eq!(c[1].task, "b");
        assert_eq!(ids.len(), 3);
        assert_eq!(c[1].task_id(), Some(ids[1].as_str()));
    }
}
