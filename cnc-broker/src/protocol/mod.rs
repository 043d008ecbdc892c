//! # The Celery 5 wire protocol, as pure data and codecs
//!
//! No I/O happens here: the broker adapters move bytes, this module says what
//! the bytes mean and builds the bytes to send. Everything follows
//! `../shared/protocol/README.md` (the sample-backed reference) and is tested
//! against the real captures in `../shared/protocol/fixtures/`; where the two
//! disagree the captured bytes win, and a comment says so.
//!
//! * [`message`]: the neutral [`Message`] (body, headers, properties), the
//!   Redis kombu envelope codec and AMQP header typing ([`AmqpField`]).
//! * [`event`]: event bodies (objects and `task.multi` arrays) to
//!   [`cnc_model::Event`], and back.
//! * [`names`]: keys, channels, exchanges, queues and their declare flags.
//! * [`task`]: protocol v2 task messages and canvas (chain, group, chord).
//! * [`control`]: remote control requests and replies (pidbox).
//! * [`result`]: result backend values (Redis keys, database rows).
//!
//! ## Where the captures and the README disagree (the captures win)
//!
//! * `app.send_task(name, args=[1])` sends header `ignore_result: null` (the
//!   README's table says bool) and `argsrepr: "[1]"` (a list repr, not a
//!   tuple): [`task::TaskMessage::ignore_result`] is an `Option<bool>`.
//! * A `REVOKED` result stored with `result_extended` has `"children": null`
//!   (README: a list); it reads as an empty list.
//! * The database backend's `celery_tasksetmeta.result` blob is the bare
//!   result tuple, while Redis wraps it as `{"result": ...}`;
//!   [`result::GroupMeta::from_json`] takes both.
//!
//! ## Entry points for the adapters
//!
//! * Events: [`decode_redis_event`] (Redis hot path, no header maps built)
//!   or [`decode_event_message`] (any [`Message`]).
//! * Envelopes: [`decode_redis_envelope`] does not judge the payload's
//!   content type (a pickle task can still be listed or purged); every body
//!   decoder does, and reports pickle/msgpack/yaml as
//!   [`DecodeError::UnsupportedContentType`].
//! * AMQP: map lapin's field tables with [`AmqpField`] (its docs give the
//!   typing rules) and basic properties onto [`Properties`].
//!
//! Design rules: payloads stay `serde_json::Value`; unknown fields and unknown
//! event types are preserved; Python repr strings are never parsed as JSON;
//! non-JSON serializers (pickle, msgpack, yaml) are reported, never executed;
//! nothing panics on outside input, and every failure has a stable
//! [`DecodeError::reason`] label.

pub mod control;
pub mod error;
pub mod event;
pub mod json;
pub mod message;
pub mod names;
pub mod repr;
pub mod result;
pub mod task;

pub use control::{ControlReply, ControlRequest, ReplyTo};
pub use error::DecodeError;
pub use event::{
    EncodedEvent, EventBatch, EventItemError, decode_event_body, decode_event_message,
    decode_redis_event, encode_event, encode_event_batch, event_message, event_routing_key,
};
pub use message::{
    AmqpField, DeliveryInfo, Limits, Message, Properties, decode_redis_envelope,
    decode_redis_envelope_with, encode_redis_envelope,
};
pub use names::RedisNames;
pub use result::{ExceptionInfo, GroupMeta, ResultKeys, ResultMeta};
pub use task::{Embed, Expires, SendTask, Signature, TaskMessage, TimeLimit};
