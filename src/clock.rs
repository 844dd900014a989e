//! The clocks, read in one place.
//!
//! - [`now`]: the wall clock. Every flow takes `now` (unix seconds) as an argument, so tests can hand
//!   any time to the flows and the store; only the HTTP edge reads it.
//! - [`Clock`]: the monotonic clock the in-process rate limiter counts periods on. Production uses the
//!   system's; a test starts the gateway with [`Clock::manual`] and moves it with
//!   [`ManualClock::advance`] instead of sleeping through a period.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the system clock is before it).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A monotonic clock: time elapsed since an origin of its own.
///
/// An enum rather than a trait object: the rate limiter reads it on every request, and a match on
/// two variants costs less than a dynamic call and can be inlined.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The system's monotonic clock, counted from when this clock was made.
    System(Instant),
    /// A clock that stands still until a test moves it.
    Manual(ManualClock),
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl Clock {
    pub fn system() -> Clock {
        Clock::System(Instant::now())
    }

    /// A clock standing at zero, and the handle that moves it.
    pub fn manual() -> (Clock, ManualClock) {
        let manual = ManualClock::default();
        (Clock::Manual(manual.clone()), manual)
    }

    /// Time since this clock's origin.
    pub fn elapsed(&self) -> Duration {
        match self {
            Clock::System(origin) => origin.elapsed(),
            Clock::Manual(manual) => manual.elapsed(),
        }
    }
}

/// The moving part of [`Clock::Manual`]; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// Moves the clock forward (it never goes back, like the system's monotonic clock).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update cannot fail with a closure that always returns Some.
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(by))
            });
    }

    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let (clock, manual) = Clock::manual();
        assert_eq!(clock.elapsed(), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(clock.elapsed(), Duration::ZERO);
        manual.clone().advance(Duration::from_millis(1500));
        assert_eq!(clock.elapsed(), Duration::from_millis(1500));
        manual.advance(Duration::MAX);
        assert_eq!(clock.elapsed(), Duration::from_nanos(u64::MAX));
    }
}
