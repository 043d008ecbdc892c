//! Celery events: decoding bodies (single objects and `task.multi` batches)
//! into [`cnc_model::Event`]s, and encoding events for tests, benches and the
//! load generator (README section 3).

use cnc_model::Event;
use serde_json::{Map, Value};

use super::error::DecodeError;
use super::json::{parse_value, to_python_json};
use super::message::{Limits, Message, decode_redis_json_payload};
use super::names::EVENT_EXCHANGE;

/// Routing key of batched task events.
pub const TASK_MULTI: &str = "task.multi";

/// One item of a body that could not be turned into an event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventItemError {
    /// Position in the `task.multi` array (0 for a single object).
    pub index: usize,
    /// What is wrong with it; [`DecodeError::reason`] gives the counter label.
    pub error: DecodeError,
}

/// What one event message decoded to: the good events, in order, and the
/// items that were skipped. A bad item never hides the good ones next to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventBatch {
    /// Decoded events (unknown types kept as [`Event::Unknown`]).
    pub events: Vec<Event>,
    /// Items that were not usable events.
    pub errors: Vec<EventItemError>,
}

/// Decode an event payload (JSON text): one event object, or a `task.multi`
/// array of them. A body that is not JSON, or JSON that is neither an object
/// nor an array, is an `Err`; problems with single items land in
/// [`EventBatch::errors`]. Repr fields (`args`, `result`, ...) stay text.
pub fn decode_event_body(body: &[u8]) -> Result<EventBatch, DecodeError> {
    let value = parse_value("event body", body)?;
    let mut batch = EventBatch::default();
    match value {
        Value::Array(items) => {
            batch.events.reserve(items.len());
            for (index, item) in items.into_iter().enumerate() {
                push_item(&mut batch, index, item);
            }
        }
        obj @ Value::Object(_) => push_item(&mut batch, 0, obj),
        other => {
            return Err(DecodeError::bad(
                "event body",
                format!("expected an object or an array, got {}", json_kind(&other)),
            ));
        }
    }
    Ok(batch)
}

fn push_item(batch: &mut EventBatch, index: usize, item: Value) {
    match Event::from_celery_value(item) {
        Ok(ev) => batch.events.push(ev),
        Err(e) => batch.errors.push(EventItemError {
            index,
            error: DecodeError::BadEvent(e),
        }),
    }
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decode the payload of an event [`Message`] (either broker), after checking
/// its size against `limits` and that it is JSON.
pub fn decode_event_message(msg: &Message, limits: &Limits) -> Result<EventBatch, DecodeError> {
    limits.check(msg.body.len())?;
    msg.ensure_json()?;
    decode_event_body(&msg.body)
}

/// The Redis hot path: envelope, base64 and event JSON in one call. Headers
/// and properties are skipped, not collected (see
/// [`decode_redis_json_payload`]).
pub fn decode_redis_event(bytes: &[u8], limits: &Limits) -> Result<EventBatch, DecodeError> {
    let body = decode_redis_json_payload(bytes, limits)?;
    decode_event_body(&body)
}

/// The routing key Celery uses for an event type: `-` becomes `.`
/// (`task-succeeded` -> `task.succeeded`).
pub fn event_routing_key(event_type: &str) -> String {
    event_type.replace('-', ".")
}

/// An encoded event: where it goes and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    /// Routing key (`worker.heartbeat`, `task.multi`, ...).
    pub routing_key: String,
    /// JSON payload.
    pub body: Vec<u8>,
}

/// The JSON object Celery would send for `event`.
pub fn event_to_value(event: &Event) -> Value {
    match event {
        Event::Unknown(u) => u.body.clone(),
        other => serde_json::to_value(other).unwrap_or(Value::Null),
    }
}

/// Encode one event as a single object with its own routing key, as Celery
/// sends `worker-*` and `task-sent`.
pub fn encode_event(event: &Event) -> EncodedEvent {
    EncodedEvent {
        routing_key: event_routing_key(event.kind_str()),
        body: to_python_json(&event_to_value(event)),
    }
}

/// Encode several task events as one `task.multi` array, as a worker's event
/// buffer does (up to 24 per batch in Celery).
pub fn encode_event_batch(events: &[Event]) -> EncodedEvent {
    let items: Vec<Value> = events.iter().map(event_to_value).collect();
    EncodedEvent {
        routing_key: TASK_MULTI.to_owned(),
        body: to_python_json(&items),
    }
}

/// Wrap an encoded event into a [`Message`] as Celery publishes it: header
/// `hostname`, `delivery_mode` 1, priority 0, exchange `celeryev`.
pub fn event_message(encoded: EncodedEvent, hostname: &str) -> Message {
    let mut msg = Message::json(encoded.body);
    let mut headers = Map::new();
    headers.insert("hostname".into(), Value::String(hostname.to_owned()));
    msg.headers = headers;
    msg.properties.delivery_mode = Some(1);
    msg.properties.priority = Some(0);
    msg.properties.delivery_info.exchange = EVENT_EXCHANGE.to_owned();
    msg.properties.delivery_info.routing_key = encoded.routing_key;
    msg
}
