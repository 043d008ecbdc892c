//! Event payloads (object or `task.multi` array) straight from the bytes.
#![no_main]

use cnc_broker::protocol::{decode_event_body, encode_event_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = decode_event_body(data) {
        // What we encode from decoded events decodes again, to as many events.
        let enc = encode_event_batch(&batch.events);
        let again = decode_event_body(&enc.body).expect("our own encoding");
        assert_eq!(again.events.len(), batch.events.len());
    }
});
