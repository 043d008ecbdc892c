//! Result backend values: task metas, group metas, chord parts, DB blobs.
#![no_main]

use cnc_broker::protocol::result::{ChordPart, GroupMeta, ResultMeta, decode_blob};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ResultMeta::from_json(data) {
        let _ = m.exception().map(|e| e.display());
        let _ = m.date_done_utc();
        let _ = m.children_refs();
        let back = ResultMeta::from_json(&m.to_json()).expect("our own encoding");
        assert_eq!(back.task_id, m.task_id);
    }
    let _ = GroupMeta::from_json(data);
    let _ = ChordPart::from_json(data);
    let _ = decode_blob(data);
});
