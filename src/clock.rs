//! The wall clock, read in one place: every flow takes `now` (unix seconds) as an argument, so tests
//! can hand any time to the flows and the store; only the HTTP edge reads the clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the system clock is before it).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
