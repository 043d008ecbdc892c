//! Deterministic trace and span ids from Celery task ids.
//!
//! * trace id: the root task id. Celery ids are UUIDs, so the trace id is
//!   the root's 16 UUID bytes (a trace id you can read back as the root
//!   task id). An id that is not a UUID is hashed (two FNV-1a 64 halves).
//! * span id: FNV-1a 64 of the task id text (never zero).
//!
//! Every celery-cnc instance, and every restart, derives the same ids, so a
//! parent span id is known from `parent_id` alone, before (or without) the
//! parent's own span being exported.

/// FNV-1a, 64 bits, seeded.
fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut h = seed;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The 16 bytes of a UUID in text form (with or without dashes).
fn uuid_bytes(id: &str) -> Option<[u8; 16]> {
    let mut out = [0u8; 16];
    let mut n = 0usize;
    let mut hi: Option<u8> = None;
    for c in id.bytes() {
        if c == b'-' {
            continue;
        }
        let v = (c as char).to_digit(16)? as u8;
        match hi.take() {
            None => hi = Some(v),
            Some(h) => {
                *out.get_mut(n)? = (h << 4) | v;
                n += 1;
            }
        }
    }
    (n == 16 && hi.is_none()).then_some(out)
}

/// The trace id of a task whose root task is `root_id`.
pub fn trace_id(root_id: &str) -> [u8; 16] {
    if let Some(b) = uuid_bytes(root_id).filter(|b| b.iter().any(|x| *x != 0)) {
        return b;
    }
    let a = fnv1a(FNV_OFFSET, root_id.as_bytes());
    let b = fnv1a(a ^ 0x9e37_79b9_7f4a_7c15, root_id.as_bytes());
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    if out == [0; 16] {
        out[15] = 1;
    }
    out
}

/// The span id of task `task_id`.
pub fn span_id(task_id: &str) -> [u8; 8] {
    let h = fnv1a(FNV_OFFSET, task_id.as_bytes());
    let h = if h == 0 { 1 } else { h };
    h.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_roots_are_their_bytes() {
        let t = trace_id("df47a342-da3b-4c93-a011-f570bbf5e799");
        assert_eq!(t[0], 0xdf);
        assert_eq!(t[15], 0x99);
        assert_eq!(t, trace_id("df47a342da3b4c93a011f570bbf5e799"));
    }

    #[test]
    fn other_ids_hash_stably() {
        let a = trace_id("not-a-uuid");
        assert_eq!(a, trace_id("not-a-uuid"));
        assert_ne!(a, trace_id("not-a-uuid2"));
        assert_ne!(a, [0; 16]);
        assert_eq!(span_id("x"), span_id("x"));
        assert_ne!(span_id("x"), span_id("y"));
        // Fixed value: ids must not change between releases.
        assert_eq!(span_id("a"), 0xaf63_dc4c_8601_ec8c_u64.to_be_bytes());
    }
}
