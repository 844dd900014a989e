//! The last 15 minutes of traffic per API, for `GET /stats?window=...` and the admin UI's overview.
//!
//! A ring of [`SLOTS`] slots of [`SLOT_SECS`] seconds each: requests, 4xx, 5xx, limiter refusals and a
//! small latency histogram per slot. Memory is fixed per API (about 15 KiB), and APIs come from the
//! configuration (unrouted requests share one ring), so the whole is bounded by the config, not by
//! traffic.
//!
//! Recording is a few relaxed atomic adds, with no lock: each slot carries the number of the 10-second
//! period it holds (`epoch`). The first writer of a new period claims the slot with a compare-exchange,
//! zeroes it and publishes the new epoch; writers that arrive during those few nanoseconds spin briefly,
//! and give up (drop one count) rather than wait on a thread that was descheduled mid-reset. Readers
//! take only slots whose epoch lies inside the window, so a slot not written for a while never shows
//! stale counts. The counts are therefore exact except for the rare writer racing a rollover, which is
//! fine for a dashboard (Prometheus `/metrics` keeps the exact totals).
//!
//! Time is a parameter (UNIX seconds), so the tests drive it without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

/// Seconds per slot.
pub const SLOT_SECS: u64 = 10;
/// Slots kept: 15 minutes.
pub const SLOTS: usize = 90;
/// The longest window that can be asked for, in seconds.
pub const MAX_WINDOW_SECS: u64 = SLOT_SECS * SLOTS as u64;

/// Upper bounds of the latency buckets, in microseconds; the last bucket takes everything slower.
const LATENCY_BOUNDS_MICROS: [u64; 15] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];
const BUCKETS: usize = LATENCY_BOUNDS_MICROS.len() + 1;

/// Marks a slot being zeroed by the writer that claimed it.
const RESETTING: u64 = u64::MAX;
/// How often a writer re-reads a slot being reset before it drops its count.
const SPINS: u32 = 64;

#[derive(Debug, Default)]
struct Slot {
    /// The period (`unix_secs / SLOT_SECS`) this slot holds, or [`RESETTING`]; 0 = never written.
    epoch: AtomicU64,
    requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    refused: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Slot {
    fn zero(&self) {
        for counter in [
            &self.requests,
            &self.client_errors,
            &self.server_errors,
            &self.refused,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        for bucket in &self.latency {
            bucket.store(0, Ordering::Relaxed);
        }
    }
}

/// One API's ring of slots.
#[derive(Debug)]
pub struct Recent {
    slots: Box<[Slot]>,
}

impl Default for Recent {
    fn default() -> Recent {
        Recent {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

impl Recent {
    /// Counts one answered request.
    pub fn record(&self, now: u64, status: u16, latency: Duration) {
        let Some(slot) = self.slot_for(now) else {
            return;
        };
        slot.requests.fetch_add(1, Ordering::Relaxed);
        match status {
            400..=499 => {
                slot.client_errors.fetch_add(1, Ordering::Relaxed);
            }
            500..=599 => {
                slot.server_errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(BUCKETS - 1);
        slot.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request refused by a rate limit or a quota (it is also recorded as a 429).
    pub fn refused(&self, now: u64) {
        if let Some(slot) = self.slot_for(now) {
            slot.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The slot of `now`'s period, reset first when it still holds an older period.
    fn slot_for(&self, now: u64) -> Option<&Slot> {
        let epoch = now / SLOT_SECS;
        let slot = &self.slots[(epoch % SLOTS as u64) as usize];
        for _ in 0..SPINS {
            let seen = slot.epoch.load(Ordering::Acquire);
            if seen == epoch {
                return Some(slot);
            }
            if seen == RESETTING {
                std::hint::spin_loop();
                continue;
            }
            if seen > epoch {
                // The clock stepped back, or this writer was slow and the slot moved on a full turn:
                // the count belongs to a period no longer kept.
                return None;
            }
            if slot
                .epoch
                .compare_exchange(seen, RESETTING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                slot.zero();
                slot.epoch.store(epoch, Ordering::Release);
                return Some(slot);
            }
        }
        None
    }

    /// The `window_secs` up to `now` (rounded up to whole slots), oldest slot first.
    pub fn snapshot(&self, now: u64, window_secs: u64) -> Snapshot {
        let slots = window_secs.div_ceil(SLOT_SECS).clamp(1, SLOTS as u64);
        let last = now / SLOT_SECS;
        let first = last + 1 - slots.min(last + 1);
        let series = (first..=last)
            .map(|epoch| {
                let slot = &self.slots[(epoch % SLOTS as u64) as usize];
                let mut counts = Counts {
                    start: epoch * SLOT_SECS,
                    ..Counts::default()
                };
                if slot.epoch.load(Ordering::Acquire) == epoch {
                    counts.requests = slot.requests.load(Ordering::Relaxed);
                    counts.client_errors = slot.client_errors.load(Ordering::Relaxed);
                    counts.server_errors = slot.server_errors.load(Ordering::Relaxed);
                    counts.refused = slot.refused.load(Ordering::Relaxed);
                    for (to, from) in counts.latency.iter_mut().zip(&slot.latency) {
                        *to = from.load(Ordering::Relaxed);
                    }
                    // A rollover between the epoch check and the loads would mix periods: re-check.
                    if slot.epoch.load(Ordering::Acquire) != epoch {
                        counts = Counts {
                            start: epoch * SLOT_SECS,
                            ..Counts::default()
                        };
                    }
                }
                counts
            })
            .collect();
        Snapshot { series }
    }
}

/// One slot's counts, read out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// UNIX seconds at which the slot begins.
    pub start: u64,
    pub requests: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub refused: u64,
    latency: [u64; BUCKETS],
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.refused += other.refused;
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
    }

    /// The upper bound of the bucket holding the `q` quantile, in milliseconds; `None` without requests.
    /// Above the last bound, the last bound is reported (the answer is "over 10 s").
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the quantile, 1-based: p50 of 2 requests is the first, p99 of 100 the 99th.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let bound = LATENCY_BOUNDS_MICROS
                    .get(i)
                    .or(LATENCY_BOUNDS_MICROS.last())
                    .copied()
                    .unwrap_or(0);
                return Some(bound as f64 / 1000.0);
            }
        }
        None
    }

    fn json(&self) -> Value {
        json!({
            "requests": self.requests,
            "status_4xx": self.client_errors,
            "status_5xx": self.server_errors,
            "refused": self.refused,
            "p50_ms": self.quantile_ms(0.5),
            "p99_ms": self.quantile_ms(0.99),
        })
    }
}

/// A window of slots, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub series: Vec<Counts>,
}

impl Snapshot {
    /// The window's totals (and its latency quantiles over every request in it).
    pub fn total(&self) -> Counts {
        let mut total = Counts::default();
        for slot in &self.series {
            total.add(slot);
        }
        total.start = self.series.first().map(|s| s.start).unwrap_or(0);
        total
    }

    /// `{requests, status_4xx, ..., series: [{start, requests, ...}]}` as `GET /stats` shows it.
    pub fn json(&self) -> Value {
        let mut body = self.total().json();
        let series: Vec<Value> = self
            .series
            .iter()
            .map(|slot| {
                let mut v = slot.json();
                v["start"] = slot.start.into();
                v
            })
            .collect();
        body["series"] = series.into();
        body
    }
}

/// Parses `window`: `90s`, `5m`, `15m` (whole seconds or minutes), 1 s to 15 min.
pub fn parse_window(value: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "window: `{value}` is not a duration like 60s or 15m between 1s and {}m",
            MAX_WINDOW_SECS / 60
        )
    };
    let (digits, unit) = if let Some(d) = value.strip_suffix('s') {
        (d, 1)
    } else if let Some(d) = value.strip_suffix('m') {
        (d, 60)
    } else {
        return Err(invalid());
    };
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let secs = digits.parse::<u64>().map_err(|_| invalid())? * unit;
    if secs == 0 || secs > MAX_WINDOW_SECS {
        return Err(invalid());
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    #[test]
    fn counts_land_in_their_slot_and_the_window_sums_them() {
        let recent = Recent::default();
        recent.record(T0, 200, Duration::from_millis(1));
        recent.record(T0 + 1, 404, Duration::from_millis(2));
        recent.record(T0 + 11, 502, Duration::from_millis(30));
        recent.record(T0 + 11, 429, Duration::from_micros(100));
        recent.refused(T0 + 11);
        let snap = recent.snapshot(T0 + 12, 30);
        assert_eq!(snap.series.len(), 3);
        let total = snap.total();
        assert_eq!(
            (
                total.requests,
                total.client_errors,
                total.server_errors,
                total.refused
            ),
            (4, 2, 1, 1)
        );
        let last = snap.series.last().unwrap();
        assert_eq!(last.start, (T0 + 11) / SLOT_SECS * SLOT_SECS);
        assert_eq!((last.requests, last.refused), (2, 1));
    }

    #[test]
    fn a_slot_is_reused_after_fifteen_minutes_without_its_old_counts() {
        let recent = Recent::default();
        for _ in 0..5 {
            recent.record(T0, 200, Duration::from_millis(1));
        }
        // Exactly one turn of the ring later the same slot is written again: it starts from zero.
        let later = T0 + MAX_WINDOW_SECS;
        recent.record(later, 500, Duration::from_millis(1));
        let total = recent.snapshot(later, MAX_WINDOW_SECS).total();
        assert_eq!((total.requests, total.server_errors), (1, 1));
    }

    #[test]
    fn slots_older_than_the_window_are_not_shown() {
        let recent = Recent::default();
        recent.record(T0, 200, Duration::from_millis(1));
        assert_eq!(recent.snapshot(T0 + 5, 60).total().requests, 1);
        // Still in the ring, outside a 60 s window.
        assert_eq!(recent.snapshot(T0 + 120, 60).total().requests, 0);
        assert_eq!(recent.snapshot(T0 + 120, 900).total().requests, 1);
        // Nothing written for longer than the ring: nothing shown, though the slot was never reused.
        assert_eq!(recent.snapshot(T0 + 2000, 900).total().requests, 0);
    }

    #[test]
    fn a_count_for_a_period_already_gone_is_dropped() {
        let recent = Recent::default();
        recent.record(T0 + MAX_WINDOW_SECS, 200, Duration::ZERO);
        // The same slot, one turn earlier (a clock that stepped back).
        recent.record(T0, 200, Duration::ZERO);
        assert_eq!(
            recent.snapshot(T0 + MAX_WINDOW_SECS, 900).total().requests,
            1
        );
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        let recent = Recent::default();
        for _ in 0..98 {
            recent.record(T0, 200, Duration::from_micros(800));
        }
        recent.record(T0, 200, Duration::from_millis(40));
        recent.record(T0, 200, Duration::from_secs(60));
        let total = recent.snapshot(T0, 10).total();
        assert_eq!(total.quantile_ms(0.5), Some(1.0));
        assert_eq!(total.quantile_ms(0.99), Some(50.0));
        assert_eq!(total.quantile_ms(1.0), Some(10_000.0));
        assert_eq!(Counts::default().quantile_ms(0.5), None);
    }

    #[test]
    fn the_window_is_whole_slots_and_never_more_than_the_ring() {
        let recent = Recent::default();
        assert_eq!(recent.snapshot(T0, 1).series.len(), 1);
        assert_eq!(recent.snapshot(T0, 11).series.len(), 2);
        assert_eq!(recent.snapshot(T0, 900).series.len(), SLOTS);
        assert_eq!(recent.snapshot(T0, 10_000).series.len(), SLOTS);
        // Near the UNIX epoch there are fewer periods than slots.
        assert_eq!(recent.snapshot(25, 900).series.len(), 3);
    }

    #[test]
    fn the_json_has_totals_and_a_series() {
        let recent = Recent::default();
        recent.record(T0, 503, Duration::from_millis(3));
        let json = recent.snapshot(T0, 20).json();
        assert_eq!(json["requests"], 1);
        assert_eq!(json["status_5xx"], 1);
        assert_eq!(json["p50_ms"], 5.0);
        assert_eq!(json["series"].as_array().unwrap().len(), 2);
        assert_eq!(json["series"][1]["requests"], 1);
        assert_eq!(json["series"][0]["p99_ms"], Value::Null);
    }

    #[test]
    fn windows_are_parsed_and_bounded() {
        assert_eq!(parse_window("15m"), Ok(900));
        assert_eq!(parse_window("90s"), Ok(90));
        assert_eq!(parse_window("1s"), Ok(1));
        for bad in [
            "",
            "16m",
            "901s",
            "0m",
            "0s",
            "15",
            "m",
            "-5m",
            "1h",
            "5 m",
            "+5m",
            "99999999m",
        ] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn concurrent_writers_lose_no_count_within_a_period() {
        let recent = std::sync::Arc::new(Recent::default());
        // The period is claimed first, so the threads race on the counters, not on the rollover.
        recent.record(T0, 200, Duration::from_millis(1));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let recent = recent.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        recent.record(T0, 200, Duration::from_millis(1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(recent.snapshot(T0, 10).total().requests, 40_001);
    }
}
