//! Celery events as celery-cnc sees them.
//!
//! The structs mirror Celery's event dictionaries field for field (same
//! names, see `../shared/protocol/README.md` section 3c), so a decoded event
//! body deserialises straight into them with serde. Fields Celery may add in
//! the future, or that custom senders attach, are kept in `extra` and stored,
//! never dropped. Python-repr values (`args`, `kwargs`, `result`,
//! `exception`) stay text: they are not JSON and are never parsed as such.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lenient;

/// Seconds since the Unix epoch, UTC, as Celery puts them on the wire.
pub type Timestamp = f64;

/// Which task event this is. Maps one to one onto Celery's `task-*` types.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum TaskEventKind {
    /// `task-sent`: published by a client (only with `task_send_sent_event`).
    Sent,
    /// `task-received`: a worker took the message.
    Received,
    /// `task-started`: execution began in the pool.
    Started,
    /// `task-succeeded`: returned a value.
    Succeeded,
    /// `task-failed`: raised.
    Failed,
    /// `task-retried`: raised `Retry`; the same id will be received again.
    Retried,
    /// `task-revoked`: revoked, terminated or expired.
    Revoked,
    /// `task-rejected`: rejected by the worker (`Reject`, unknown task...).
    Rejected,
    /// Any other `task-*` type (custom events sent with `send_event`). Kept and
    /// stored; it does not move the task's state.
    Other(String),
}

impl TaskEventKind {
    /// The Celery type string, e.g. `task-succeeded`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Sent => "task-sent",
            Self::Received => "task-received",
            Self::Started => "task-started",
            Self::Succeeded => "task-succeeded",
            Self::Failed => "task-failed",
            Self::Retried => "task-retried",
            Self::Revoked => "task-revoked",
            Self::Rejected => "task-rejected",
            Self::Other(s) => s,
        }
    }

    /// Parse a Celery type string. Anything unknown becomes `Other`.
    pub fn parse(s: &str) -> Self {
        match s {
            "task-sent" => Self::Sent,
            "task-received" => Self::Received,
            "task-started" => Self::Started,
            "task-succeeded" => Self::Succeeded,
            "task-failed" => Self::Failed,
            "task-retried" => Self::Retried,
            "task-revoked" => Self::Revoked,
            "task-rejected" => Self::Rejected,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl From<String> for TaskEventKind {
    fn from(s: String) -> Self {
        Self::parse(&s)
    }
}

impl From<TaskEventKind> for String {
    fn from(k: TaskEventKind) -> Self {
        k.as_str().to_owned()
    }
}

/// One `task-*` event, with Celery's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// The event type.
    #[serde(rename = "type")]
    pub kind: TaskEventKind,
    /// Task id (`uuid` on the wire).
    pub uuid: String,
    /// Node that sent the event (`w1@host`; clients send `gen<pid>@host`).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub hostname: Option<String>,
    /// Sender's `time.time()`.
    #[serde(default, deserialize_with = "lenient::f64_or_zero")]
    pub timestamp: Timestamp,
    /// Sender's offset in hours, positive west of UTC.
    #[serde(
        default,
        deserialize_with = "lenient::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub utcoffset: Option<f64>,
    /// Sender's process id.
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub pid: Option<i64>,
    /// Lamport clock of the sender.
    #[serde(default, deserialize_with = "lenient::u64_or_zero")]
    pub clock: u64,
    /// Registered task name (`task-sent`, `task-received`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
    /// Python repr of the positional arguments.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub args: Option<String>,
    /// Python repr of the keyword arguments.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub kwargs: Option<String>,
    /// Python repr of the return value (`task-succeeded`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub result: Option<String>,
    /// Python repr of the exception (`task-failed`, `task-retried`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub exception: Option<String>,
    /// Traceback text (`task-failed`, `task-retried`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub traceback: Option<String>,
    /// Id of the first task of the workflow.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub root_id: Option<String>,
    /// Id of the task that published this one.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub parent_id: Option<String>,
    /// Group id, when the sender knows it (our own sends, custom events).
    /// Celery's stock events do not carry it.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub group_id: Option<String>,
    /// Id of the chord callback this task is a header member of, when known.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub chord_id: Option<String>,
    /// Retry count of this delivery.
    #[serde(
        default,
        deserialize_with = "lenient::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub retries: Option<u64>,
    /// ETA, ISO-8601 text as sent.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub eta: Option<String>,
    /// Expiry, ISO-8601 text as sent.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires: Option<String>,
    /// Seconds spent running (`task-succeeded`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub runtime: Option<f64>,
    /// Queue the task was sent to (`task-sent`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub queue: Option<String>,
    /// Exchange the task was sent to (`task-sent`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub exchange: Option<String>,
    /// Routing key the task was sent with (`task-sent`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub routing_key: Option<String>,
    /// `task-revoked`: the task was terminated while running.
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub terminated: Option<bool>,
    /// `task-revoked`: the signal used to terminate it.
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub signum: Option<i64>,
    /// `task-revoked`: the task expired before it ran.
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub expired: Option<bool>,
    /// `task-rejected`: the message was requeued.
    #[serde(
        default,
        deserialize_with = "lenient::opt_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub requeue: Option<bool>,
    /// Every other field of the event, preserved as sent.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl TaskEvent {
    /// A minimal event of `kind` for task `uuid` at `timestamp`; other fields empty.
    pub fn new(kind: TaskEventKind, uuid: impl Into<String>, timestamp: Timestamp) -> Self {
        Self {
            kind,
            uuid: uuid.into(),
            hostname: None,
            timestamp,
            utcoffset: None,
            pid: None,
            clock: 0,
            name: None,
            args: None,
            kwargs: None,
            result: None,
            exception: None,
            traceback: None,
            root_id: None,
            parent_id: None,
            group_id: None,
            chord_id: None,
            retries: None,
            eta: None,
            expires: None,
            runtime: None,
            queue: None,
            exchange: None,
            routing_key: None,
            terminated: None,
            signum: None,
            expired: None,
            requeue: None,
            extra: Map::new(),
        }
    }

    /// Builder-style setter for the sending host.
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Builder-style setter for the Lamport clock.
    pub fn with_clock(mut self, clock: u64) -> Self {
        self.clock = clock;
        self
    }

    /// The identity used to recognise a duplicate delivery of this event:
    /// same task, type, sender, clock and timestamp (to the microsecond).
    pub fn dedup_key(&self) -> EventKey {
        EventKey {
            task_id: self.uuid.clone(),
            kind: self.kind.as_str().to_owned(),
            hostname: self.hostname.clone().unwrap_or_default(),
            clock: self.clock,
            micros: (self.timestamp * 1e6).round() as i64,
        }
    }

    /// True when the event came from a client, not a worker (`task-sent`): its
    /// hostname names the publisher, so it never sets the task's worker.
    pub fn is_from_client(&self) -> bool {
        matches!(self.kind, TaskEventKind::Sent)
    }
}

/// Identity of one task event for de-duplication (see [`TaskEvent::dedup_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey {
    /// Task id.
    pub task_id: String,
    /// Event type string.
    pub kind: String,
    /// Sender.
    pub hostname: String,
    /// Sender's Lamport clock.
    pub clock: u64,
    /// Timestamp in whole microseconds.
    pub micros: i64,
}

/// Which worker event this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkerEventKind {
    /// `worker-online`: the worker started.
    #[serde(rename = "worker-online")]
    Online,
    /// `worker-heartbeat`: periodic liveness (every `freq` seconds).
    #[serde(rename = "worker-heartbeat")]
    Heartbeat,
    /// `worker-offline`: warm shutdown.
    #[serde(rename = "worker-offline")]
    Offline,
    /// Not on the wire: celery-cnc saw no heartbeat for `2 x freq` seconds.
    /// Produced by [`crate::fold::expired_workers`].
    #[serde(rename = "worker-lost")]
    Lost,
}

impl WorkerEventKind {
    /// The type string (`worker-online`, ..., `worker-lost`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "worker-online",
            Self::Heartbeat => "worker-heartbeat",
            Self::Offline => "worker-offline",
            Self::Lost => "worker-lost",
        }
    }
}

/// One `worker-*` event, with Celery's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerEvent {
    /// The event type.
    #[serde(rename = "type")]
    pub kind: WorkerEventKind,
    /// Worker node name.
    pub hostname: String,
    /// Sender's `time.time()`.
    #[serde(default, deserialize_with = "lenient::f64_or_zero")]
    pub timestamp: Timestamp,
    /// Sender's offset in hours, positive west of UTC.
    #[serde(
        default,
        deserialize_with = "lenient::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub utcoffset: Option<f64>,
    /// Worker's main process id.
    #[serde(
        default,
        deserialize_with = "lenient::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub pid: Option<i64>,
    /// Lamport clock.
    #[serde(default, deserialize_with = "lenient::u64_or_zero")]
    pub clock: u64,
    /// Heartbeat interval in seconds (2.0 by default).
    #[serde(
        default,
        deserialize_with = "lenient::opt_f64",
        skip_serializing_if = "Option::is_none"
    )]
    pub freq: Option<f64>,
    /// Tasks executing now.
    #[serde(
        default,
        deserialize_with = "lenient::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub active: Option<u64>,
    /// Tasks processed since start.
    #[serde(
        default,
        deserialize_with = "lenient::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub processed: Option<u64>,
    /// 1, 5 and 15 minute load averages.
    #[serde(
        default,
        deserialize_with = "lenient::opt_loadavg",
        skip_serializing_if = "Option::is_none"
    )]
    pub loadavg: Option<Vec<f64>>,
    /// Software identity (`py-celery`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub sw_ident: Option<String>,
    /// Software version (`5.7.0`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub sw_ver: Option<String>,
    /// Operating system (`Linux`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub sw_sys: Option<String>,
    /// Every other field, preserved.
    #[serde(flatten, default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl WorkerEvent {
    /// A minimal worker event; other fields empty.
    pub fn new(kind: WorkerEventKind, hostname: impl Into<String>, timestamp: Timestamp) -> Self {
        Self {
            kind,
            hostname: hostname.into(),
            timestamp,
            utcoffset: None,
            pid: None,
            clock: 0,
            freq: None,
            active: None,
            processed: None,
            loadavg: None,
            sw_ident: None,
            sw_ver: None,
            sw_sys: None,
            extra: Map::new(),
        }
    }
}

/// An event type celery-cnc does not model (neither `task-*` nor `worker-*`).
/// Kept whole so nothing a sender says is lost; stores may ignore it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnknownEvent {
    /// The `type` field as sent (may be empty if the sender sent none).
    pub kind: String,
    /// The whole event object.
    pub body: Value,
}

/// Everything the ingest pipeline moves: one decoded Celery event.
///
/// The variants are not boxed: nearly every event is a task or worker event,
/// and boxing them would cost an allocation per event on the ingest path for
/// the sake of the rare `Unknown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// A `task-*` event.
    Task(TaskEvent),
    /// A `worker-*` event.
    Worker(WorkerEvent),
    /// Anything else.
    Unknown(UnknownEvent),
}

impl Event {
    /// The event's type string.
    pub fn kind_str(&self) -> &str {
        match self {
            Self::Task(e) => e.kind.as_str(),
            Self::Worker(e) => e.kind.as_str(),
            Self::Unknown(e) => &e.kind,
        }
    }

    /// The event's timestamp (0.0 for unknown events without one).
    pub fn timestamp(&self) -> Timestamp {
        match self {
            Self::Task(e) => e.timestamp,
            Self::Worker(e) => e.timestamp,
            Self::Unknown(e) => e
                .body
                .get("timestamp")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        }
    }

    /// The sending node, when known.
    pub fn hostname(&self) -> Option<&str> {
        match self {
            Self::Task(e) => e.hostname.as_deref(),
            Self::Worker(e) => Some(&e.hostname),
            Self::Unknown(e) => e.body.get("hostname").and_then(Value::as_str),
        }
    }

    /// Build an event from one decoded Celery event object (the JSON body of
    /// an event message, or one element of a `task.multi` array).
    ///
    /// `task-*` types become [`Event::Task`], `worker-*` types
    /// [`Event::Worker`], anything else [`Event::Unknown`]. Errors name what is
    /// wrong (not an object, no `type`, no `uuid`...), for counting and logs.
    pub fn from_celery_value(value: Value) -> Result<Self, EventShapeError> {
        let Value::Object(map) = &value else {
            return Err(EventShapeError::NotAnObject);
        };
        let kind = match map.get("type") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(EventShapeError::BadType),
            None => return Err(EventShapeError::MissingType),
        };
        if kind.starts_with("task-") {
            match map.get("uuid") {
                Some(Value::String(s)) if !s.is_empty() => {}
                _ => return Err(EventShapeError::MissingTaskId),
            }
            serde_json::from_value::<TaskEvent>(value)
                .map(Event::Task)
                .map_err(|e| EventShapeError::Invalid(e.to_string()))
        } else if matches!(
            kind.as_str(),
            "worker-online" | "worker-heartbeat" | "worker-offline"
        ) {
            match map.get("hostname") {
                Some(Value::String(s)) if !s.is_empty() => {}
                _ => return Err(EventShapeError::MissingHostname),
            }
            serde_json::from_value::<WorkerEvent>(value)
                .map(Event::Worker)
                .map_err(|e| EventShapeError::Invalid(e.to_string()))
        } else {
            Ok(Event::Unknown(UnknownEvent { kind, body: value }))
        }
    }
}

/// Why a JSON value is not a usable Celery event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventShapeError {
    /// The value is not a JSON object.
    #[error("event is not a JSON object")]
    NotAnObject,
    /// No `type` field.
    #[error("event has no `type` field")]
    MissingType,
    /// `type` is not a string.
    #[error("event `type` is not a string")]
    BadType,
    /// A `task-*` event without a `uuid`.
    #[error("task event has no `uuid`")]
    MissingTaskId,
    /// A `worker-*` event without a `hostname`.
    #[error("worker event has no `hostname`")]
    MissingHostname,
    /// A field has a shape serde could not accept.
    #[error("event is malformed: {0}")]
    Invalid(String),
}

impl EventShapeError {
    /// A short, stable reason label for counters (`missing_type`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAnObject => "not_an_object",
            Self::MissingType => "missing_type",
            Self::BadType => "bad_type",
            Self::MissingTaskId => "missing_task_id",
            Self::MissingHostname => "missing_hostname",
            Self::Invalid(_) => "invalid_field",
        }
    }
}
