//! Signed-in browsers of the admin UI, and the throttle on failed sign-ins.
//!
//! A session is a random 256-bit id in a cookie; only its SHA-256 is kept, so a memory dump does not
//! hand out live cookies. Each session has its own CSRF token, compared in constant time. Sessions end
//! after `admin.ui_idle_timeout` without a request, at sign-out, and at restart (they live in this
//! process only: the admin listener of each node has its own). Their number is bounded: a new sign-in
//! beyond [`MAX_SESSIONS`] ends the session idle the longest, so memory stays fixed and a signed-in
//! operator can always get in (sign-in needs the admin secret anyway).
//!
//! Every function takes `now` (UNIX seconds), so the tests move time without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::secrets::{constant_time_eq, random_token, sha256};

/// Signed-in sessions kept at most.
pub const MAX_SESSIONS: usize = 64;
/// Failed sign-ins per address within [`FAILURE_WINDOW_SECS`] before that address is refused.
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW_SECS: u64 = 60;
/// Addresses tracked by the throttle at most; beyond it (after dropping expired entries) sign-ins
/// from new addresses are refused: failing closed bounds memory under a spray of addresses.
pub const MAX_TRACKED_ADDRESSES: usize = 4096;

struct Entry {
    csrf: String,
    last_seen: u64,
}

pub struct Sessions {
    idle_secs: u64,
    by_hash: Mutex<HashMap<[u8; 32], Entry>>,
}

/// A live session: its CSRF token (for the forms of the page being rendered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub csrf: String,
}

impl Sessions {
    pub fn new(idle_secs: u64) -> Sessions {
        Sessions {
            idle_secs: idle_secs.max(1),
            by_hash: Mutex::new(HashMap::new()),
        }
    }

    /// A new session: returns the cookie value (the only place the id exists in clear).
    pub fn create(&self, now: u64) -> String {
        let id = random_token(32);
        let entry = Entry {
            csrf: random_token(32),
            last_seen: now,
        };
        if let Ok(mut map) = self.by_hash.lock() {
            let idle = self.idle_secs;
            map.retain(|_, e| now.saturating_sub(e.last_seen) < idle);
            while map.len() >= MAX_SESSIONS {
                let oldest = map.iter().min_by_key(|(_, e)| e.last_seen).map(|(k, _)| *k);
                match oldest {
                    Some(key) => map.remove(&key),
                    None => break,
                };
            }
            map.insert(sha256(id.as_bytes()), entry);
        }
        id
    }

    /// The session of this cookie value, when it is live; its idle clock starts again.
    pub fn touch(&self, id: &str, now: u64) -> Option<Live> {
        let key = sha256(id.as_bytes());
        let mut map = self.by_hash.lock().ok()?;
        let entry = map.get_mut(&key)?;
        if now.saturating_sub(entry.last_seen) >= self.idle_secs {
            map.remove(&key);
            return None;
        }
        entry.last_seen = now.max(entry.last_seen);
        Some(Live {
            csrf: entry.csrf.clone(),
        })
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.by_hash.lock() {
            map.remove(&sha256(id.as_bytes()));
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_hash.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl Live {
    /// Whether a form's `csrf_token` is this session's, in constant time.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.csrf.as_bytes())
    }
}

/// Failed sign-ins per client address, in fixed windows.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl Throttle {
    /// Seconds until `ip` may try again, or `None` when it may try now.
    pub fn refused(&self, ip: IpAddr, now: u64) -> Option<u64> {
        let Ok(mut map) = self.failures.lock() else {
            return Some(FAILURE_WINDOW_SECS);
        };
        match map.get(&ip) {
            Some(&(start, n)) if now.saturating_sub(start) < FAILURE_WINDOW_SECS => {
                (n >= MAX_FAILURES).then(|| (start + FAILURE_WINDOW_SECS - now).max(1))
            }
            Some(_) => {
                map.remove(&ip);
                None
            }
            None if map.len() >= MAX_TRACKED_ADDRESSES => {
                map.retain(|_, (start, _)| now.saturating_sub(*start) < FAILURE_WINDOW_SECS);
                (map.len() >= MAX_TRACKED_ADDRESSES).then_some(FAILURE_WINDOW_SECS)
            }
            None => None,
        }
    }

    pub fn failed(&self, ip: IpAddr, now: u64) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() >= MAX_TRACKED_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, (start, _)| now.saturating_sub(*start) < FAILURE_WINDOW_SECS);
            if map.len() >= MAX_TRACKED_ADDRESSES {
                return;
            }
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.saturating_sub(entry.0) >= FAILURE_WINDOW_SECS {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    /// A successful sign-in forgets the address's failures.
    pub fn succeeded(&self, ip: IpAddr) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    #[test]
    fn a_session_lives_while_used_and_ends_when_idle() {
        let sessions = Sessions::new(600);
        let id = sessions.create(T0);
        let live = sessions.touch(&id, T0 + 599).expect("live");
        assert_eq!(live.csrf.len(), 43);
        // Each request restarts the idle clock.
        assert!(sessions.touch(&id, T0 + 1198).is_some());
        assert!(sessions.touch(&id, T0 + 1798).is_none());
        // Gone for good, also if the clock went back.
        assert!(sessions.touch(&id, T0 + 1).is_none());
        assert!(sessions.touch("not-a-session", T0).is_none());
    }

    #[test]
    fn sign_out_ends_the_session_and_ids_are_not_kept_in_clear() {
        let sessions = Sessions::new(600);
        let id = sessions.create(T0);
        let map = sessions.by_hash.lock().unwrap();
        assert!(map.contains_key(&sha256(id.as_bytes())));
        drop(map);
        sessions.remove(&id);
        assert!(sessions.touch(&id, T0).is_none());
    }

    #[test]
    fn sessions_are_bounded_and_the_longest_idle_goes_first() {
        let sessions = Sessions::new(10_000);
        let first = sessions.create(T0);
        let ids: Vec<String> = (1..MAX_SESSIONS as u64)
            .map(|i| sessions.create(T0 + i))
            .collect();
        // The first is used again, so the second is now the longest idle.
        assert!(sessions.touch(&first, T0 + 100).is_some());
        let newest = sessions.create(T0 + 101);
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.touch(&ids[0], T0 + 101).is_none());
        assert!(sessions.touch(&first, T0 + 101).is_some());
        assert!(sessions.touch(&newest, T0 + 101).is_some());
        for _ in 0..3 * MAX_SESSIONS {
            sessions.create(T0 + 200);
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
    }

    #[test]
    fn expired_sessions_are_dropped_on_the_next_sign_in() {
        let sessions = Sessions::new(60);
        for _ in 0..10 {
            sessions.create(T0);
        }
        sessions.create(T0 + 61);
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn csrf_tokens_are_per_session_and_compared_whole() {
        let sessions = Sessions::new(600);
        let a = sessions.touch(&sessions.create(T0), T0).unwrap();
        let b = sessions.touch(&sessions.create(T0), T0).unwrap();
        assert_ne!(a.csrf, b.csrf);
        assert!(a.csrf_matches(&a.csrf.clone()));
        assert!(!a.csrf_matches(&b.csrf));
        assert!(!a.csrf_matches(""));
        assert!(!a.csrf_matches(&a.csrf[..42]));
    }

    #[test]
    fn the_throttle_refuses_an_address_after_its_failures_for_the_window() {
        let throttle = Throttle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for i in 0..MAX_FAILURES {
            assert_eq!(throttle.refused(ip, T0 + u64::from(i)), None);
            throttle.failed(ip, T0 + u64::from(i));
        }
        assert_eq!(
            throttle.refused(ip, T0 + 10),
            Some(FAILURE_WINDOW_SECS - 10)
        );
        assert_eq!(throttle.refused(other, T0 + 10), None);
        assert_eq!(throttle.refused(ip, T0 + FAILURE_WINDOW_SECS), None);
        throttle.failed(ip, T0 + 61);
        throttle.succeeded(ip);
        assert_eq!(throttle.refused(ip, T0 + 62), None);
    }

    #[test]
    fn the_throttle_tracks_a_bounded_number_of_addresses() {
        let throttle = Throttle::default();
        for i in 0..MAX_TRACKED_ADDRESSES as u32 {
            throttle.failed(IpAddr::from(i.to_be_bytes()), T0);
        }
        let newcomer: IpAddr = "198.51.100.7".parse().unwrap();
        throttle.failed(newcomer, T0);
        assert_eq!(
            throttle.failures.lock().unwrap().len(),
            MAX_TRACKED_ADDRESSES
        );
        // Full of live entries: a new address is refused rather than tracked.
        assert_eq!(
            throttle.refused(newcomer, T0 + 1),
            Some(FAILURE_WINDOW_SECS)
        );
        // Once the window has passed, the old entries make room.
        assert_eq!(throttle.refused(newcomer, T0 + FAILURE_WINDOW_SECS), None);
    }
}
