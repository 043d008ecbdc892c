//! Result backend values (README section 5): the Redis backend's JSON
//! documents and key names, and the database backend's rows.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::DecodeError;
use super::json::{parse_as, parse_value, to_python_json};
use super::message::Limits;
use super::repr::py_repr;

/// States after which a task's result does not change.
pub const READY_STATES: [&str; 4] = ["SUCCESS", "FAILURE", "REVOKED", "REJECTED"];

/// One task's stored result: the value of `celery-task-meta-<id>` (Redis), or
/// a `celery_taskmeta` row (database backend) turned into the same shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMeta {
    /// `PENDING RECEIVED STARTED RETRY SUCCESS FAILURE REVOKED REJECTED IGNORED`.
    pub status: String,
    /// Return value; an exception object for FAILURE/RETRY/REVOKED;
    /// `{"pid", "hostname"}` for STARTED.
    #[serde(default)]
    pub result: Value,
    /// Python traceback text (FAILURE, RETRY).
    #[serde(default)]
    pub traceback: Option<String>,
    /// Result tuples of spawned tasks (see [`ResultRef`]). `null` as captured
    /// on some REVOKED results reads as empty.
    #[serde(default, deserialize_with = "super::json::null_default")]
    pub children: Vec<Value>,
    /// Completion time as stored: ISO-8601 with `+00:00` on Redis, a naive
    /// UTC `YYYY-MM-DD HH:MM:SS.ffffff` in the database. See
    /// [`ResultMeta::date_done_utc`].
    #[serde(default)]
    pub date_done: Option<String>,
    /// Task id.
    pub task_id: String,
    /// Parent task (retried tasks, chord callbacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Group (chord callbacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// `result_extended`: task name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `result_extended`: positional arguments (real JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// `result_extended`: keyword arguments (real JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwargs: Option<Value>,
    /// `result_extended`: worker node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// `result_extended`: retry count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    /// `result_extended`: queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Other fields (`stamps`...), preserved.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResultMeta {
    /// Parse a Redis `celery-task-meta-*` value (default [`Limits`]).
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_json_with(bytes, &Limits::default())
    }

    /// Parse a Redis `celery-task-meta-*` value.
    pub fn from_json_with(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        limits.check(bytes.len())?;
        let v = parse_value("result meta", bytes)?;
        Self::from_value(v)
    }

    /// Build from an already parsed JSON object.
    pub fn from_value(v: Value) -> Result<Self, DecodeError> {
        let Value::Object(m) = &v else {
            return Err(DecodeError::bad("result meta", "not an object"));
        };
        if !m.get("status").is_some_and(Value::is_string) {
            return Err(DecodeError::MissingField("status"));
        }
        if !m.get("task_id").is_some_and(Value::is_string) {
            return Err(DecodeError::MissingField("task_id"));
        }
        Self::deserialize(v).map_err(|e| DecodeError::bad("result meta", e.to_string()))
    }

    /// The JSON Celery's Redis backend writes.
    pub fn to_json(&self) -> Vec<u8> {
        to_python_json(self)
    }

    /// Whether the state is final.
    pub fn is_ready(&self) -> bool {
        READY_STATES.contains(&self.status.as_str())
    }

    /// The exception, when `result` is one.
    pub fn exception(&self) -> Option<ExceptionInfo> {
        ExceptionInfo::from_value(&self.result)
    }

    /// `date_done` as a UTC time, from either backend's format.
    pub fn date_done_utc(&self) -> Option<DateTime<Utc>> {
        parse_backend_time(self.date_done.as_deref()?)
    }

    /// The spawned tasks, parsed.
    pub fn children_refs(&self) -> Vec<ResultRef> {
        self.children.iter().filter_map(ResultRef::parse).collect()
    }
}

/// Parse a stored time: ISO-8601 with offset, or a naive UTC datetime with a
/// space or `T` separator.
pub fn parse_backend_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(n.and_utc());
        }
    }
    None
}

/// A serialized exception: `{"exc_type", "exc_message": [args], "exc_module"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionInfo {
    /// `ValueError`, `TaskRevokedError`, `NotRegistered`, `Reject`...
    pub exc_type: String,
    /// The exception's args (a list: `["boom"]`, `["not wanted", false]`).
    pub exc_message: Vec<Value>,
    /// `builtins`, `celery.exceptions`...
    pub exc_module: Option<String>,
}

impl ExceptionInfo {
    /// Recognise an exception object (needs `exc_type`). A non-list
    /// `exc_message` (older Celery wrote a string) becomes a one-item list.
    pub fn from_value(v: &Value) -> Option<Self> {
        let m = v.as_object()?;
        let exc_type = m.get("exc_type")?.as_str()?.to_owned();
        let exc_message = match m.get("exc_message") {
            Some(Value::Array(a)) => a.clone(),
            Some(Value::Null) | None => Vec::new(),
            Some(other) => vec![other.clone()],
        };
        Some(Self {
            exc_type,
            exc_message,
            exc_module: m
                .get("exc_module")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// Python-like display: `ValueError('boom')`, `Reject('not wanted', False)`.
    pub fn display(&self) -> String {
        let args: Vec<String> = self.exc_message.iter().map(py_repr).collect();
        format!("{}({})", self.exc_type, args.join(", "))
    }
}

/// A result reference from `children` / group metas: `[[id, parent], children]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRef {
    /// Task or group id.
    pub id: String,
    /// Parent tuple's id, when given.
    pub parent_id: Option<String>,
    /// Member results (groups), empty for a plain result.
    pub children: Vec<ResultRef>,
}

impl ResultRef {
    /// Parse `[[id, parent], children]` (a plain result has `null` children).
    pub fn parse(v: &Value) -> Option<Self> {
        let outer = v.as_array()?;
        let head = outer.first()?.as_array()?;
        let id = head.first()?.as_str()?.to_owned();
        let parent_id = head.get(1).and_then(|p| match p {
            Value::String(s) => Some(s.clone()),
            Value::Array(_) => ResultRef::parse_head(p),
            _ => None,
        });
        let children = outer
            .get(1)
            .and_then(Value::as_array)
            .map(|c| c.iter().filter_map(ResultRef::parse).collect())
            .unwrap_or_default();
        Some(Self {
            id,
            parent_id,
            children,
        })
    }

    fn parse_head(v: &Value) -> Option<String> {
        // A parent tuple is itself `[[id, parent], children]` or `[id, parent]`.
        let a = v.as_array()?;
        match a.first()? {
            Value::String(s) => Some(s.clone()),
            Value::Array(h) => h.first()?.as_str().map(str::to_owned),
            _ => None,
        }
    }
}

/// A group's saved result: `celery-taskset-meta-<gid>` on Redis is
/// `{"result": <tuple>}`; the database's `celery_tasksetmeta.result` blob is
/// the bare tuple (captured: `db-plain.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMeta {
    /// Group id.
    pub group_id: String,
    /// Member task ids, in order.
    pub members: Vec<String>,
}

impl GroupMeta {
    /// Parse a Redis `celery-taskset-meta-*` value or a database blob.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        let v = parse_value("group meta", bytes)?;
        let tuple = match &v {
            Value::Object(m) => m.get("result").ok_or(DecodeError::MissingField("result"))?,
            other => other,
        };
        let r = ResultRef::parse(tuple)
            .ok_or_else(|| DecodeError::bad("result", "not a group result tuple"))?;
        Ok(Self {
            group_id: r.id,
            members: r.children.into_iter().map(|c| c.id).collect(),
        })
    }

    /// The Redis value, as `GroupResult.save()` writes it.
    pub fn to_json(&self) -> Vec<u8> {
        let members: Vec<Value> = self
            .members
            .iter()
            .map(|id| serde_json::json!([[id, null], null]))
            .collect();
        to_python_json(&serde_json::json!({"result": [[self.group_id, null], members]}))
    }
}

/// One entry of a chord's `.j` zset: `[1, task_id, state, result]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChordPart {
    /// Task id of the header member.
    pub task_id: String,
    /// Its state.
    pub state: String,
    /// Its result.
    pub result: Value,
}

impl ChordPart {
    /// Parse one `.j` member.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (_, task_id, state, result): (Value, String, String, Value) =
            parse_as("chord part", bytes)?;
        Ok(Self {
            task_id,
            state,
            result,
        })
    }
}

/// Redis result backend key names (the backend's own `global_keyprefix`
/// option is applied when set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultKeys {
    /// Prefix for every key (empty by default).
    pub prefix: String,
}

/// Prefix of task result keys.
pub const TASK_META_PREFIX: &str = "celery-task-meta-";
/// Prefix of group result keys.
pub const TASKSET_META_PREFIX: &str = "celery-taskset-meta-";

impl ResultKeys {
    /// `celery-task-meta-<id>`; also the PUBLISH channel (no db prefix).
    pub fn task_meta(&self, task_id: &str) -> String {
        format!("{}{TASK_META_PREFIX}{task_id}", self.prefix)
    }
    /// SCAN pattern for all task results (never use KEYS).
    pub fn task_meta_pattern(&self) -> String {
        format!("{}{TASK_META_PREFIX}*", self.prefix)
    }
    /// The task id in a result key.
    pub fn task_id_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(TASK_META_PREFIX)
            .filter(|id| !id.is_empty())
    }
    /// `celery-taskset-meta-<gid>`.
    pub fn taskset_meta(&self, group_id: &str) -> String {
        format!("{}{TASKSET_META_PREFIX}{group_id}", self.prefix)
    }
    /// Chord size key `.s` (`SET .s <size> EX 86400` before sending the header).
    pub fn chord_size(&self, group_id: &str) -> String {
        format!("{}.s", self.taskset_meta(group_id))
    }
    /// Chord results `.j` (zset; a list when `result_chord_ordered` is off).
    pub fn chord_join(&self, group_id: &str) -> String {
        format!("{}.j", self.taskset_meta(group_id))
    }
    /// Chord extra-size counter `.t`.
    pub fn chord_total(&self, group_id: &str) -> String {
        format!("{}.t", self.taskset_meta(group_id))
    }
    /// Chord de-duplication set `.d` (kombu/celery 5.7 only).
    pub fn chord_dedup(&self, group_id: &str) -> String {
        format!("{}.d", self.taskset_meta(group_id))
    }
    /// Chord claim lock `.c` (5.7 only).
    pub fn chord_claim(&self, group_id: &str) -> String {
        format!("{}.c", self.taskset_meta(group_id))
    }
}

/// Default table for task results (`database_table_names` can change it).
pub const DB_TASK_TABLE: &str = "celery_taskmeta";
/// Default table for group results.
pub const DB_GROUP_TABLE: &str = "celery_tasksetmeta";
/// Columns of the task table, in schema order.
pub const DB_TASK_COLUMNS: [&str; 14] = [
    "id",
    "task_id",
    "status",
    "result",
    "date_done",
    "traceback",
    "children",
    "name",
    "args",
    "kwargs",
    "worker",
    "retries",
    "queue",
    "stamps",
];

/// One `celery_taskmeta` row as read from SQLite or PostgreSQL (BLOB columns
/// as bytes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DbTaskRow {
    /// Task id.
    pub task_id: String,
    /// Status.
    pub status: Option<String>,
    /// Result BLOB (JSON text).
    pub result: Option<Vec<u8>>,
    /// Naive UTC datetime text.
    pub date_done: Option<String>,
    /// Traceback.
    pub traceback: Option<String>,
    /// Children BLOB.
    pub children: Option<Vec<u8>>,
    /// Name (extended).
    pub name: Option<String>,
    /// Args BLOB (extended).
    pub args: Option<Vec<u8>>,
    /// Kwargs BLOB (extended).
    pub kwargs: Option<Vec<u8>>,
    /// Worker (extended).
    pub worker: Option<String>,
    /// Retries (extended).
    pub retries: Option<i64>,
    /// Queue (extended).
    pub queue: Option<String>,
}

/// Decode one result BLOB: JSON text first; a pickle (first byte `0x80`) is
/// [`DecodeError::UnsupportedContentType`], never unpickled.
pub fn decode_blob(blob: &[u8]) -> Result<Value, DecodeError> {
    if blob.first() == Some(&0x80) {
        return Err(DecodeError::UnsupportedContentType(
            "application/x-python-serialize (pickle blob)".into(),
        ));
    }
    parse_value("result blob", blob)
}

impl DbTaskRow {
    /// Turn the row into the Redis-shaped [`ResultMeta`]. A pickle or broken
    /// `result` blob is an error; broken optional blobs are dropped.
    pub fn to_meta(&self) -> Result<ResultMeta, DecodeError> {
        let result = match &self.result {
            Some(b) => decode_blob(b)?,
            None => Value::Null,
        };
        let children = match self.children.as_deref().map(decode_blob) {
            Some(Ok(Value::Array(a))) => a,
            _ => Vec::new(),
        };
        Ok(ResultMeta {
            status: self.status.clone().unwrap_or_else(|| "PENDING".into()),
            result,
            traceback: self.traceback.clone(),
            children,
            date_done: self.date_done.clone(),
            task_id: self.task_id.clone(),
            parent_id: None,
            group_id: None,
            name: self.name.clone(),
            args: self.args.as_deref().and_then(|b| decode_blob(b).ok()),
            kwargs: self.kwargs.as_deref().and_then(|b| decode_blob(b).ok()),
            worker: self.worker.clone(),
            retries: self.retries.and_then(|r| u64::try_from(r).ok()),
            queue: self.queue.clone(),
            extra: Map::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickle_blob_is_reported() {
        let e = decode_blob(b"\x80\x04K\x05.").unwrap_err();
        assert_eq!(e.reason(), "unsupported_content_type");
    }

    #[test]
    fn exception_display() {
        let e = ExceptionInfo::from_value(&serde_json::json!({
            "exc_type": "Reject", "exc_message": ["not wanted", false], "exc_module": "celery.exceptions"
        }))
        .unwrap();
        assert_eq!(e.display(), "Reject('not wanted', False)");
    }

    #[test]
    fn keys() {
        let k = ResultKeys::default();
        assert_eq!(k.task_meta("x"), "celery-task-meta-x");
        assert_eq!(k.task_id_of("celery-task-meta-x"), Some("x"));
        assert_eq!(k.chord_size("g"), "celery-taskset-meta-g.s");
    }
}
