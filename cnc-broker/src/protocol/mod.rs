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
//!   [`cnc_core::Event`], and back.
//! * [`names`]: keys, channels, exchanges, queues and their declare flags.
//! * [`task`]: protocol v2 task messages and canvas (chain, group, chord).
//! * [`control`]: remote control requests and replies (pidbox).
//! * [`result`]: result backend values (Redis keys, database rows).
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
