//! The targets of one API: which one gets the next request (balancing), which ones may get it at all
//! (health), and the state that outlives a reload.
//!
//! Invariants:
//! - A target is *healthy* when its active check (if any) last said up and it is not ejected by the
//!   passive check. Only healthy targets are picked; when none is, the request gets 503.
//! - Health state ([`TargetHealth`]) belongs to a target's URL and active-check settings, not to a
//!   configuration: a reload that keeps both keeps the state (and its probe task); a reload that drops
//!   the target drops the state, which ends the task at once.
//! - Each target has its own connection pool; a reload builds new pools (the limits may have
//!   changed), as it always did for the single upstream.
//! - Every node judges for itself (as Envoy does): nothing here goes through Redis.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Request};
use tokio::sync::watch;

use crate::config::{ActiveCheck, Balance, Cidr, HashOn, PassiveCheck, TargetDef, Upstream};
use crate::proxy::forward::UpstreamClient;
use crate::proxy::headers::X_FORWARDED_FOR;

/// The targets of one API and how to choose among them.
pub struct Balancer {
    pub targets: Vec<Target>,
    strategy: Strategy,
    passive: Option<PassiveCheck>,
    /// The active check's interval: how long a client is told to wait when no target is healthy.
    probe_interval: Option<Duration>,
}

pub struct Target {
    pub def: TargetDef,
    /// `http://10.0.0.1:9000/v1`, for the admin API, metrics and logs.
    pub name: String,
    pub client: UpstreamClient,
    pub health: Arc<TargetHealth>,
    /// The `Host` header for this target (its URL's authority), made once instead of per request.
    pub host: Option<HeaderValue>,
}

enum Strategy {
    /// nginx's smooth weighted round robin: the current weight of each target.
    RoundRobin(Mutex<Vec<i64>>),
    /// Where the search for the least loaded target starts, so that ties rotate.
    LeastConnections(AtomicUsize),
    Hash {
        ring: Vec<(u64, u32)>,
        on: HashOn,
    },
}

/// The health of one target; shared by every configuration that has the target, and by its probe task.
pub struct TargetHealth {
    /// What the active check last concluded (true until it concludes otherwise).
    probe_up: AtomicBool,
    /// Milliseconds on [`clock`] until which passive checks keep the target out; 0 = not ejected.
    ejected_until: AtomicU64,
    /// Consecutive failures seen by passive checks.
    failures: AtomicU32,
    pub in_flight: AtomicUsize,
    /// Times the target was taken out, by either check.
    pub ejections: AtomicU64,
    /// The active check this state was made for: a reload that changes it starts afresh.
    active: Option<ActiveCheck>,
    /// Dropped with the state; the probe task sees its receiver close and ends.
    _stop: watch::Sender<()>,
    stop: watch::Receiver<()>,
}

/// Counts a request in flight at a target until dropped (with the response body).
pub struct InFlight(Arc<TargetHealth>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Milliseconds since the first call, on the monotonic clock: ejection deadlines fit an atomic.
fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl TargetHealth {
    fn new(active: Option<ActiveCheck>) -> TargetHealth {
        let (stop_tx, stop_rx) = watch::channel(());
        TargetHealth {
            probe_up: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            in_flight: AtomicUsize::new(0),
            ejections: AtomicU64::new(0),
            active,
            _stop: stop_tx,
            stop: stop_rx,
        }
    }

    pub fn is_healthy(&self, now: u64) -> bool {
        self.probe_up.load(Relaxed) && self.ejected_until.load(Relaxed) <= now
    }

    pub fn probe_up(&self) -> bool {
        self.probe_up.load(Relaxed)
    }

    /// How long the passive check still keeps the target out.
    pub fn ejected_for(&self, now: u64) -> Duration {
        Duration::from_millis(self.ejected_until.load(Relaxed).saturating_sub(now))
    }

    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// A passive observation: a connect error, reset or 5xx (`failed`), or any other answer.
    pub fn observe(&self, failed: bool, passive: Option<&PassiveCheck>, target: &str) {
        if !failed {
            // Only written when it changes, so that healthy traffic does not bounce the cache line.
            if self.failures.load(Relaxed) != 0 {
                self.failures.store(0, Relaxed);
            }
            return;
        }
        let Some(passive) = passive else {
            return;
        };
        let failures = self.failures.fetch_add(1, Relaxed) + 1;
        if failures >= passive.unhealthy_after {
            self.failures.store(0, Relaxed);
            let until = clock()
                .saturating_add(u64::try_from(passive.eject_for.as_millis()).unwrap_or(u64::MAX));
            self.ejected_until.store(until, Relaxed);
            self.ejections.fetch_add(1, Relaxed);
            tracing::warn!(target = target, failures, eject_for = ?passive.eject_for, "upstream target ejected");
        }
    }
}

impl Balancer {
    /// The balancer of `api`, reusing the health state of targets that `previous` (the balancer of the
    /// same API in the configuration being replaced) had with the same URL and active check. Probe
    /// tasks are started for new states only, and end on `shutdown` or when their state is dropped.
    pub fn build(
        upstream: &Upstream,
        targets: &[TargetDef],
        shared: &UpstreamClient,
        previous: Option<&Balancer>,
        shutdown: &watch::Receiver<bool>,
    ) -> Balancer {
        let active = upstream.health_check.active.clone();
        let targets: Vec<Target> = targets
            .iter()
            .map(|def| {
                let name = def.name();
                let kept = previous.and_then(|p| {
                    p.targets
                        .iter()
                        .find(|t| t.name == name && t.health.active == active)
                        .map(|t| t.health.clone())
                });
                let health = kept.unwrap_or_else(|| {
                    let health = Arc::new(TargetHealth::new(active.clone()));
                    if let Some(check) = &active {
                        spawn_probe(&health, def, &name, check, shared, shutdown.clone());
                    }
                    health
                });
                Target {
                    host: def
                        .uri
                        .authority()
                        .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
                    def: def.clone(),
                    name,
                    client: shared.new_pool(),
                    health,
                }
            })
            .collect();
        let strategy = match &upstream.balance {
            Balance::RoundRobin => Strategy::RoundRobin(Mutex::new(vec![0; targets.len()])),
            Balance::LeastConnections => Strategy::LeastConnections(AtomicUsize::new(0)),
            Balance::Hash(on) => Strategy::Hash {
                ring: ring(&targets),
                on: on.clone(),
            },
        };
        Balancer {
            targets,
            strategy,
            passive: upstream.health_check.passive.clone(),
            probe_interval: active.map(|a| a.interval),
        }
    }

    pub fn passive(&self) -> Option<&PassiveCheck> {
        self.passive.as_ref()
    }

    /// The target for the next attempt: healthy, not in `tried` (bit i = target i), chosen by the
    /// API's strategy. `key` is the request's [`Balancer::hash_key`] (only read by `hash`).
    pub fn pick(&self, key: u64, tried: u64) -> Option<usize> {
        let now = clock();
        let usable = |i: usize| tried & (1 << i) == 0 && self.targets[i].health.is_healthy(now);
        if let [only] = self.targets.as_slice() {
            // The common case of one target: no lock, no arithmetic.
            return (tried == 0 && only.health.is_healthy(now)).then_some(0);
        }
        match &self.strategy {
            Strategy::RoundRobin(current) => {
                let mut current = current.lock().unwrap_or_else(|p| p.into_inner());
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for (i, target) in self.targets.iter().enumerate() {
                    if !usable(i) {
                        continue;
                    }
                    let weight = i64::from(target.def.weight);
                    current[i] += weight;
                    total += weight;
                    if best.is_none_or(|b| current[i] > current[b]) {
                        best = Some(i);
                    }
                }
                if let Some(b) = best {
                    current[b] -= total;
                }
                best
            }
            Strategy::LeastConnections(start) => {
                let n = self.targets.len();
                let first = start.fetch_add(1, Relaxed) % n;
                let mut best: Option<(usize, u64, u64)> = None;
                for i in (0..n).map(|k| (first + k) % n) {
                    if !usable(i) {
                        continue;
                    }
                    let target = &self.targets[i];
                    let load = target.health.in_flight.load(Relaxed) as u64;
                    let weight = u64::from(target.def.weight);
                    // load/weight < best_load/best_weight, without division.
                    if best.is_none_or(|(_, l, w)| load * w < l * weight) {
                        best = Some((i, load, weight));
                    }
                }
                best.map(|(i, _, _)| i)
            }
            Strategy::Hash { ring, .. } => {
                if ring.is_empty() {
                    return None;
                }
                let start = ring.partition_point(|(point, _)| *point < key);
                // Walk clockwise to the first usable target: an unhealthy target's keys go to the
                // targets after its points, everyone else's keys stay where they were.
                (0..ring.len())
                    .map(|k| ring[(start + k) % ring.len()].1 as usize)
                    .find(|&i| usable(i))
            }
        }
    }

    /// The hash of what `hash` hashes for this request; 0 for the other strategies. `claim` is the
    /// value of the configured claim when the request carried a token with it. Without the header or
    /// claim, the client's address is hashed.
    pub fn hash_key<B>(
        &self,
        req: &Request<B>,
        peer: IpAddr,
        trusted: &[Cidr],
        claim: Option<&[u8]>,
    ) -> u64 {
        let Strategy::Hash { on, .. } = &self.strategy else {
            return 0;
        };
        let given = match on {
            HashOn::ClientIp => None,
            HashOn::Header(name) => req
                .headers()
                .get(name)
                .map(|v| v.as_bytes())
                .filter(|v| !v.is_empty()),
            HashOn::Claim(_) => claim,
        };
        if let Some(given) = given {
            return hash64(given);
        }
        let octets = match client_ip(req.headers(), peer, trusted) {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        hash64(&octets)
    }

    /// The claim `hash` hashes on, when it hashes on one.
    pub fn hash_claim(&self) -> Option<&str> {
        match &self.strategy {
            Strategy::Hash {
                on: HashOn::Claim(claim),
                ..
            } => Some(claim),
            _ => None,
        }
    }

    /// How long a client should wait before trying again when no target is healthy: until the first
    /// ejection ends, or one probe interval; at least a second.
    pub fn retry_after_secs(&self) -> u64 {
        let now = clock();
        let ejection = self
            .targets
            .iter()
            .filter(|t| t.health.probe_up())
            .map(|t| t.health.ejected_for(now))
            .min();
        let wait = ejection
            .or(self.probe_interval)
            .unwrap_or(Duration::from_secs(1));
        wait.as_secs_f64().ceil().max(1.0) as u64
    }

    /// `GET /apis/{id}/targets`.
    pub fn describe(&self) -> serde_json::Value {
        let now = clock();
        let targets: Vec<serde_json::Value> = self
            .targets
            .iter()
            .map(|t| {
                let ejected = t.health.ejected_for(now);
                serde_json::json!({
                    "url": t.name,
                    "weight": t.def.weight,
                    "healthy": t.health.is_healthy(now),
                    "active_check": if t.health.active.is_none() { "off" } else if t.health.probe_up() { "up" } else { "down" },
                    "ejected_for_ms": u64::try_from(ejected.as_millis()).unwrap_or(u64::MAX),
                    "in_flight": t.health.in_flight.load(Relaxed),
                    "ejections": t.health.ejections.load(Relaxed),
                })
            })
            .collect();
        serde_json::json!({ "targets": targets })
    }

    /// `tollgate_upstream_target_healthy{api,target}` lines (1 healthy, 0 not).
    pub fn render_metrics(&self, api: &str, out: &mut String) {
        use std::fmt::Write;
        let now = clock();
        for t in &self.targets {
            let _ = writeln!(
                out,
                "tollgate_upstream_target_healthy{{api=\"{}\",target=\"{}\"}} {}",
                escape(api),
                escape(&t.name),
                u8::from(t.health.is_healthy(now))
            );
        }
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The client's address: the peer's, or, from a trusted proxy, the last address it names.
fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[Cidr]) -> IpAddr {
    if trusted.iter().any(|c| c.contains(peer)) {
        let last = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|v| v.trim().parse::<IpAddr>().ok())
            .next_back();
        if let Some(ip) = last {
            return ip;
        }
    }
    peer
}

/// Points on the ring per unit of weight. Weights are divided by their greatest common divisor first,
/// and the whole ring is kept near [`RING_POINTS`], so memory is bounded by the configuration limits
/// (64 targets × weight 1000 at worst, 64 000 points).
const POINTS_PER_WEIGHT: u64 = 160;
const RING_POINTS: u64 = 16_384;

/// The consistent-hashing ring: `weight × k` points per target, each at the hash of `name#n`. A
/// target's points depend only on its own name, so removing a target removes only its points: only the
/// keys that mapped to it move.
fn ring(targets: &[Target]) -> Vec<(u64, u32)> {
    let g = targets
        .iter()
        .map(|t| u64::from(t.def.weight))
        .fold(0, gcd)
        .max(1);
    let total: u64 = targets.iter().map(|t| u64::from(t.def.weight) / g).sum();
    let per_weight = (RING_POINTS / total.max(1)).clamp(1, POINTS_PER_WEIGHT);
    let mut ring = Vec::with_capacity((total * per_weight) as usize);
    for (i, t) in targets.iter().enumerate() {
        let points = u64::from(t.def.weight) / g * per_weight;
        for n in 0..points {
            let point = hash64(format!("{}#{n}", t.name).as_bytes());
            ring.push((point, i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// FNV-1a with a final avalanche (splitmix64's), the same on every node and every build, so that
/// several gateway nodes send a key to the same target.
fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// One task per target: probes `check.path` every `check.interval`; `unhealthy_after` failures in a
/// row take the target out, `healthy_after` successes bring it back. A probe succeeds on a 2xx or 3xx
/// answer within `check.timeout`. The task holds the state weakly and ends when it is dropped (reload
/// removed the target) or on shutdown.
fn spawn_probe(
    health: &Arc<TargetHealth>,
    def: &TargetDef,
    name: &str,
    check: &ActiveCheck,
    shared: &UpstreamClient,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // Only outside the gateway (a unit test building a runtime); nothing to probe with.
        return;
    };
    let uri =
        crate::proxy::forward::upstream_uri(&def.uri, format!("{}{}", def.path_prefix, check.path));
    let Ok(uri) = uri else {
        tracing::warn!(
            target = name,
            "the health check path does not form a URL; not probing"
        );
        return;
    };
    let weak: Weak<TargetHealth> = Arc::downgrade(health);
    let mut stop = health.stop.clone();
    let client = shared.new_pool();
    let check = check.clone();
    let name = name.to_owned();
    runtime.spawn(async move {
        let mut streak_up = 0u32;
        let mut streak_down = 0u32;
        loop {
            let up = client.probe(&uri, check.timeout).await;
            let Some(health) = weak.upgrade() else {
                return;
            };
            if up {
                streak_down = 0;
                streak_up = streak_up.saturating_add(1);
                if streak_up >= check.healthy_after && !health.probe_up.swap(true, Relaxed) {
                    tracing::info!(target = %name, "upstream target healthy again (active check)");
                }
            } else {
                streak_up = 0;
                streak_down = streak_down.saturating_add(1);
                if streak_down >= check.unhealthy_after && health.probe_up.swap(false, Relaxed) {
                    health.ejections.fetch_add(1, Relaxed);
                    tracing::warn!(target = %name, "upstream target unhealthy (active check)");
                }
            }
            drop(health);
            tokio::select! {
                _ = tokio::time::sleep(check.interval) => {}
                // Err: the sender went with the state.
                _ = stop.changed() => return,
                _ = crate::server::stopped(&mut shutdown) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamTarget;

    fn def(port: u16, weight: u32) -> TargetDef {
        TargetDef {
            uri: format!("http://127.0.0.1:{port}/").parse().unwrap(),
            path_prefix: String::new(),
            weight,
        }
    }

    fn balancer(balance: Balance, defs: &[TargetDef]) -> Balancer {
        let upstream = Upstream {
            target: UpstreamTarget::Targets(defs.to_vec()),
            preserve_host: false,
            timeout: None,
            balance,
            health_check: Default::default(),
            retries: 1,
            websockets: false,
        };
        let (_tx, rx) = watch::channel(false);
        let client = UpstreamClient::new(&crate::config::Limits::default());
        Balancer::build(&upstream, defs, &client, None, &rx)
    }

    #[test]
    fn smooth_round_robin_interleaves_by_weight() {
        let b = balancer(Balance::RoundRobin, &[def(1, 1), def(2, 3)]);
        let picks: Vec<usize> = (0..8).map(|_| b.pick(0, 0).unwrap()).collect();
        // Smooth: the weight-3 target never gets more than 3 in a row, and the order repeats.
        assert_eq!(picks, [1, 0, 1, 1, 1, 0, 1, 1]);
    }

    #[test]
    fn a_tried_or_ejected_target_is_skipped() {
        let b = balancer(Balance::RoundRobin, &[def(1, 1), def(2, 1)]);
        assert_eq!(b.pick(0, 0b01), Some(1));
        assert_eq!(b.pick(0, 0b11), None);
        let passive = PassiveCheck {
            unhealthy_after: 2,
            eject_for: Duration::from_secs(60),
        };
        b.targets[1].health.observe(true, Some(&passive), "t");
        assert!(
            b.targets[1].health.is_healthy(clock()),
            "one failure of two"
        );
        b.targets[1].health.observe(true, Some(&passive), "t");
        assert!(!b.targets[1].health.is_healthy(clock()));
        for _ in 0..5 {
            assert_eq!(b.pick(0, 0), Some(0));
        }
        assert_eq!(b.pick(0, 0b01), None);
        assert_eq!(b.targets[1].health.ejections.load(Relaxed), 1);
    }

    #[test]
    fn least_connections_prefers_the_least_loaded_by_weight() {
        let b = balancer(Balance::LeastConnections, &[def(1, 1), def(2, 2)]);
        let _a = b.targets[0].health.start();
        let _b1 = b.targets[1].health.start();
        // 1/1 against 1/2: the second.
        assert_eq!(b.pick(0, 0), Some(1));
        let _b2 = b.targets[1].health.start();
        let _b3 = b.targets[1].health.start();
        // 1/1 against 3/2: the first.
        assert_eq!(b.pick(0, 0), Some(0));
    }

    #[test]
    fn consistent_hashing_moves_only_the_removed_targets_keys() {
        let four = [def(1, 1), def(2, 1), def(3, 1), def(4, 1)];
        let all = balancer(Balance::Hash(HashOn::ClientIp), &four);
        let three = balancer(
            Balance::Hash(HashOn::ClientIp),
            &[def(1, 1), def(2, 1), def(4, 1)],
        );
        let mut moved = 0;
        let mut on_removed = 0;
        for k in 0..2000u32 {
            let key = hash64(&k.to_be_bytes());
            let before = all.targets[all.pick(key, 0).unwrap()].name.clone();
            let after = three.targets[three.pick(key, 0).unwrap()].name.clone();
            if before.ends_with(":3") {
                on_removed += 1;
            } else if before != after {
                moved += 1;
            }
        }
        assert_eq!(moved, 0, "keys of the remaining targets stayed");
        // Roughly a quarter of the keys were on the removed target.
        assert!((350..650).contains(&on_removed), "{on_removed}");
    }

    #[test]
    fn the_same_key_always_finds_the_same_target() {
        let b = balancer(
            Balance::Hash(HashOn::ClientIp),
            &[def(1, 1), def(2, 1), def(3, 2)],
        );
        for k in 0..100u32 {
            let key = hash64(&k.to_be_bytes());
            let first = b.pick(key, 0);
            assert!((0..10).all(|_| b.pick(key, 0) == first));
        }
    }
}
