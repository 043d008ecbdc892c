//! The Redis hot path: kombu envelope, base64, then whatever the message is
//! (event batch, task, control request/reply). Must never panic.
#![no_main]

use cnc_broker::protocol::control::{ControlReply, ControlRequest};
use cnc_broker::protocol::message::{
    Limits, decode_redis_envelope_with, decode_redis_json_payload, encode_redis_envelope,
};
use cnc_broker::protocol::task::TaskMessage;
use cnc_broker::protocol::{decode_event_message, encode_event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_message_bytes: 1 << 20,
    };
    // Differential: the lean hot path (no header/property maps) agrees with
    // the full decoder whenever the full one accepts a JSON payload.
    let lean = decode_redis_json_payload(data, &limits);
    let Ok(msg) = decode_redis_envelope_with(data, &limits) else {
        return;
    };
    if msg.ensure_json().is_ok() {
        assert_eq!(lean.as_ref().ok(), Some(&msg.body), "lean vs full");
    }
    // Re-encoding what we decoded must decode to the same message.
    let again = encode_redis_envelope(&msg);
    let back = decode_redis_envelope_with(&again, &Limits::default()).expect("re-decode");
    assert_eq!(back.body, msg.body);
    if let Ok(batch) = decode_event_message(&msg, &limits) {
        for ev in &batch.events {
            let _ = encode_event(ev);
        }
    }
    if let Ok(t) = TaskMessage::from_message(&msg) {
        let _ = t.to_message();
    }
    let _ = ControlRequest::from_message(&msg);
    let _ = ControlReply::from_message(&msg);
});
