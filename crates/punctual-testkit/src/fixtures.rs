//! Small builders that tests across the workspace share: a fixed `NOW`, deterministic job ids,
//! and names that are known to be valid.
//!
//! They panic on invalid input (they are for tests) and must not read the system clock, so a
//! failing test replays identically.

use punctual_core::{JobId, JobOptions, Kind, NewJob, NodeId, Payload, Queue, Timestamp};

/// A fixed instant (2025-11-29T07:06:40Z) for tests to start from and advance explicitly.
pub const NOW: Timestamp = Timestamp::from_millis(1_764_400_000_000);

/// A deterministic UUIDv7 id: `at`'s milliseconds in the time field, `sequence` in the random
/// bits. Ids sort by (`at`, `sequence`), as generated ids sort by creation time.
pub fn job_id(at: Timestamp, sequence: u64) -> JobId {
    assert!(sequence < 1 << 56, "the sequence fills 7 bytes");
    let millis = u64::try_from(at.as_millis()).expect("test instants are after 1970");
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = 0x70; // version 7
    bytes[8] = 0x80; // the RFC 9562 variant
    bytes[9..].copy_from_slice(&sequence.to_be_bytes()[1..]);
    JobId::from_bytes(bytes)
}

pub fn kind(name: &str) -> Kind {
    Kind::new(name).expect("a valid kind name")
}

pub fn queue(name: &str) -> Queue {
    Queue::new(name).expect("a valid queue name")
}

pub fn node(name: &str) -> NodeId {
    NodeId::new(name).expect("a valid node name")
}

/// A job of kind `kind` with a null payload, due at `run_at`, validated against `now`.
pub fn new_job(kind_name: &str, run_at: Timestamp, options: JobOptions, now: Timestamp) -> NewJob {
    NewJob::new(kind(kind_name), Payload::null(), run_at, options, now).expect("a valid new job")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_sort_by_time_then_sequence() {
        let later = NOW.add(std::time::Duration::from_millis(1));
        assert!(job_id(NOW, 1) < job_id(NOW, 2));
        assert!(job_id(NOW, 1_000) < job_id(later, 0));
        // Parses back as a well-formed UUIDv7.
        let text = job_id(NOW, 7).to_string();
        assert_eq!(text.as_bytes()[14], b'7');
        assert_eq!(text.parse::<JobId>(), Ok(job_id(NOW, 7)));
    }
}
