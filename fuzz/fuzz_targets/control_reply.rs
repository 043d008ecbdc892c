//! Control reply bodies and every typed payload parser.
#![no_main]

use cnc_broker::protocol::control::{self, ControlReply, RegisteredTask, outcome};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = RegisteredTask::parse(s);
    }
    let Ok(reply) = ControlReply::from_body(data) else {
        return;
    };
    for (_, p) in &reply.replies {
        let _ = outcome(p);
        let _ = control::parse_registered(p);
        let _ = control::parse_active_queues(p);
        let _ = control::parse_stats(p);
        let _ = control::parse_requests(p);
        let _ = control::parse_scheduled(p);
        let _ = control::parse_query_task(p);
        let _ = control::parse_revoked(p);
        let _ = control::parse_clock(p);
    }
});
