//! Open connections per client address, so one address cannot take every slot of a listener.
//!
//! IPv4 addresses count one by one; IPv6 addresses by /64, the smallest block a single subscriber is
//! usually given (anyone holding one /64 holds 2^64 addresses). An IPv4-mapped IPv6 peer counts as its
//! IPv4 address. The map holds one entry per address with an open connection and the entry goes when
//! the count drops to 0, so its size is bounded by the listener's `max_connections`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    V6Prefix(u64),
}

impl Key {
    fn of(ip: IpAddr) -> Key {
        match ip {
            IpAddr::V4(v4) => Key::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::V4(u32::from(v4)),
                // The upper 64 bits: the network prefix.
                None => Key::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

pub struct PerIp {
    max: usize,
    open: Mutex<HashMap<Key, usize>>,
}

/// One open connection of an address; dropping it gives the slot back.
pub struct Slot {
    owner: Arc<PerIp>,
    key: Key,
}

impl PerIp {
    pub fn new(max: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a new connection from `ip`, or `None` when the address already has `max` open.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = Key::of(ip);
        // A poisoned lock only means another connection panicked mid-update; the counts are plain
        // integers and still usable.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            owner: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_gets_at_most_max_and_others_are_unaffected() {
        let per_ip = PerIp::new(2);
        let a1 = per_ip.try_acquire(ip("10.0.0.1"));
        let a2 = per_ip.try_acquire(ip("10.0.0.1"));
        assert!(a1.is_some() && a2.is_some());
        assert!(per_ip.try_acquire(ip("10.0.0.1")).is_none());
        assert!(per_ip.try_acquire(ip("10.0.0.2")).is_some());
        drop(a1);
        assert!(per_ip.try_acquire(ip("10.0.0.1")).is_some());
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let per_ip = PerIp::new(1);
        let _a = per_ip.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert!(per_ip.try_acquire(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(per_ip.try_acquire(ip("2001:db8:1:3::1")).is_some());
        let _b = per_ip.try_acquire(ip("192.0.2.7")).unwrap();
        assert!(per_ip.try_acquire(ip("::ffff:192.0.2.7")).is_none());
    }

    #[test]
    fn entries_go_when_the_last_connection_closes() {
        let per_ip = PerIp::new(4);
        let slots: Vec<Slot> = (0..50)
            .filter_map(|i| per_ip.try_acquire(IpAddr::from([10, 0, 0, i])))
            .collect();
        assert_eq!(per_ip.addresses(), 50);
        drop(slots);
        assert_eq!(per_ip.addresses(), 0);
    }
}
