//! Redis rate limits by leases (docs/design.md §9e,
//! docs/redis.md#rate-limits-and-quotas-by-leases): 2 and 4 gateway nodes started through the
//! library on one `redis-server` the harness starts, one session driven hard through all of them,
//! evenly or skewed 90/10. What docs/redis.md promises is what is asserted: - a quota is never
//! exceeded across nodes, and once the leases have settled it was spent exactly; - over the run,
//! the nodes together admit at most `rate × (run + lifetime) / per + rate` (exact GCRA   admits
//! `rate × run / per + rate`: the burst plus the rate) and, while the demand stays above the  
//! limit, at least `rate × run / per − 2 × nodes × lease`; - a busy session costs Redis at most
//! 0.05 script calls per request.
//!
//! Counting admitted requests over a measured interval, never latency: the interval runs from
//! before the first request is sent to after the last answer, so it contains every admission, and
//! the bounds hold however slow the machine is. The short scenarios run with `cargo test`; the
//! whole matrix (5, 50 and 500 requests/s, quotas of 100 and 10,000, 2 and 4 nodes, even and 90/10)
//! is `benches/load/lease-accuracy.sh` (`--ignored`), whose figures are in docs/benchmarks.md.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::oauth::*;
use common::redis::{RedisServer, unique_prefix};
use common::*;
use http_body_util::Full;
use hyper::Request;

const SECRET: &str = "accuracy-secret-0123456789";

/// The lease lifetime docs/redis.md gives for a rate limit per second: a tenth of the period.
const LIFETIME: Duration = Duration::from_millis(100);

/// Nodes sharing one Redis, and a token of one session (every request counts against it).
struct Nodes {
    gateways: Vec<TestGateway>,
    token: String,
    prefix: String,
}

/// `count` nodes with the same files (API `acc`, answering itself, with `limits`), under a key
/// prefix of their own on `redis`.
async fn nodes(redis: &RedisServer, count: usize, limits: &str) -> Nodes {
    let prefix = unique_prefix();
    let hash = tollgate::secrets::hash_secret(SECRET).expect("hash");
    let config = ConfigDir::new(&redis.storage_yaml(&prefix, "2s"));
    config.write(
        "keys/signing.pem",
        &tollgate::token::keys::generate_pkcs8_pem(tollgate::config::SigningAlgorithm::Es256)
            .expect("signing key"),
    );
    config.api(
        "acc",
        &format!(
            r#"listen_path: /acc/
upstream:
  mock: {{ status: 200, body: ok }}
auth: {{ type: oauth2 }}
oauth:
  grant_types: [client_credentials]
  scopes: [read]
  clients:
    - client_id: load
      secret_hash: "{hash}"
      grant_types: [client_credentials]
      scopes: [read]
{limits}"#
        ),
    );
    let mut gateways = Vec::new();
    for _ in 1..count {
        gateways.push(TestGateway::start(config.same_files()).await);
    }
    gateways.insert(0, TestGateway::start(config).await);
    let response = post_form(
        &gateways[0].url("/acc/oauth/token"),
        Some(&basic("load", SECRET)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let token = response.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    Nodes {
        gateways,
        token,
        prefix,
    }
}

/// How the requests are spread over the nodes, in percent.
#[derive(Debug, Clone, Copy)]
enum Spread {
    Even,
    /// 90 % to the first node, the rest evenly over the others.
    Skewed,
}

impl Spread {
    fn node(self, i: u64, nodes: usize) -> usize {
        let n = nodes as u64;
        let node = match self {
            Spread::Even => i % n,
            Spread::Skewed if !i.is_multiple_of(10) => 0,
            Spread::Skewed => 1 + (i / 10) % (n - 1),
        };
        node as usize
    }
}

#[derive(Debug, Default)]
struct Load {
    admitted: u64,
    refused: u64,
    /// From before the first request was sent to after the last answer came.
    elapsed: Duration,
}

/// Sends requests from `workers` keep-alive clients, request `i` to the node `spread` picks, until
/// `stop(sent, elapsed)`. Anything but 200 and 429 fails the test.
async fn drive(
    nodes: &Nodes,
    spread: Spread,
    workers: usize,
    stop: impl Fn(u64, Duration) -> bool + Send + Sync + 'static,
) -> Load {
    let addrs: Arc<Vec<SocketAddr>> = Arc::new(nodes.gateways.iter().map(|g| g.addr).collect());
    let auth: Arc<str> = format!("Bearer {}", nodes.token).into();
    let next = Arc::new(AtomicU64::new(0));
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(stop);
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (addrs, auth, next) = (addrs.clone(), auth.clone(), next.clone());
            let (admitted, refused, stop) = (admitted.clone(), refused.clone(), stop.clone());
            tokio::spawn(async move {
                let client = client();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if stop(i, started.elapsed()) {
                        return;
                    }
                    let addr = addrs[spread.node(i, addrs.len())];
                    let request = Request::get(format!("http://{addr}/acc/x"))
                        .header("authorization", &*auth)
                        .body(Full::new(Bytes::new()))
                        .expect("request");
                    let response = collect(client.request(request).await.expect("send")).await;
                    match response.status.as_u16() {
                        200 => admitted.fetch_add(1, Ordering::Relaxed),
                        429 => refused.fetch_add(1, Ordering::Relaxed),
                        other => panic!("unexpected {other}: {}", response.text()),
                    };
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("worker");
    }
    Load {
        admitted: admitted.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

/// One session limited to `rate` requests a second, driven through `count` nodes for `run`:
/// asserts the promised bounds and returns the load for the report.
async fn rate_scenario(
    redis: &RedisServer,
    count: usize,
    rate: u64,
    spread: Spread,
    run: Duration,
) -> Load {
    let nodes = nodes(
        redis,
        count,
        &format!("rate_limit: {{ rate: {rate}, per: 1s }}\n"),
    )
    .await;
    let load = drive(&nodes, spread, 16, move |_, elapsed| elapsed >= run).await;
    let secs = load.elapsed.as_secs_f64();
    let lease = (rate as f64 * LIFETIME.as_secs_f64()).floor().max(1.0);
    let upper = rate as f64 * (secs + LIFETIME.as_secs_f64()) + rate as f64;
    let lower = rate as f64 * secs - 2.0 * count as f64 * lease;
    let admitted = load.admitted as f64;
    eprintln!(
        "rate {rate}/s, {count} nodes, {spread:?}: {} admitted, {} refused in {secs:.2} s; exact GCRA ≤ {:.0}, promised [{lower:.0}, {upper:.0}]",
        load.admitted,
        load.refused,
        rate as f64 * secs + rate as f64,
    );
    assert!(
        admitted <= upper.floor() + 1.0,
        "over-admission beyond the promise: {load:?}, at most {upper:.1}"
    );
    // The lower bound is promised while the demand is above the limit; a machine too busy to send
    // that much (500/s through 4 debug builds) admits everything it sent, which is checked above.
    if load.refused > 0 {
        assert!(
            admitted >= lower.ceil(),
            "under-admission beyond the promise: {load:?}, at least {lower:.1}"
        );
    } else {
        eprintln!("  (the demand stayed below the limit: nothing refused)");
    }
    load
}

/// One session with a quota of `max` an hour through `count` nodes: more than the quota is asked
/// for, no more than `max` passes; once the nodes' unspent blocks have gone back (a lease
/// lifetime), the rest of the quota is there to spend, to the unit, and Redis's counter says `max`.
async fn quota_scenario(redis: &RedisServer, count: usize, max: u64, spread: Spread) -> Load {
    let nodes = nodes(
        redis,
        count,
        &format!("quota: {{ max: {max}, period: 1h }}\n"),
    )
    .await;
    let asked = max + max / 5 + 20;
    let mut load = drive(&nodes, spread, 16, move |sent, _| sent >= asked).await;
    assert!(load.admitted <= max, "quota exceeded: {load:?}");
    assert!(load.refused > 0, "{load:?}");
    // Blocks still held on a node are given back within a lease lifetime (1 s for a quota alone)
    // plus a sweep; what is left can then be spent, one request at a time, from any node.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    while load.admitted < max && Instant::now() < deadline {
        let more = drive(&nodes, Spread::Even, 1, move |sent, _| sent >= 1).await;
        load.admitted += more.admitted;
        i += 1;
        if more.admitted == 0 {
            tokio::time::sleep(Duration::from_millis(50 + 10 * (i % 5))).await;
        }
    }
    assert_eq!(load.admitted, max, "units were lost: {load:?}");
    let after = drive(&nodes, spread, 4, |sent, _| sent >= 8).await;
    assert_eq!(after.admitted, 0, "quota exceeded at the end: {after:?}");
    // Settled: every unit Redis counts was spent.
    let mut conn = redis.connection().await;
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{}rl:*:quota", nodes.prefix))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let used: u64 = ::redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(used, max, "the counter is the exact count");
    eprintln!(
        "quota {max}, {count} nodes, {spread:?}: {} admitted of {} asked, counter {used}",
        load.admitted,
        asked + 8
    );
    load
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_50_a_second_within_the_promise() {
    let redis = RedisServer::start();
    let load = rate_scenario(&redis, 2, 50, Spread::Even, Duration::from_millis(1500)).await;
    assert!(load.refused > 0, "the demand never went above the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_skewed_90_10_share_5_a_second_within_the_promise() {
    let redis = RedisServer::start();
    let load = rate_scenario(&redis, 4, 5, Spread::Skewed, Duration::from_millis(1500)).await;
    assert!(load.refused > 0, "the demand never went above the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_of_100_over_two_skewed_nodes_is_never_exceeded_and_counted_exactly() {
    let redis = RedisServer::start();
    quota_scenario(&redis, 2, 100, Spread::Skewed).await;
}

/// A busy session (limits far above the load) costs Redis at most 0.05 calls a request: the
/// script calls the nodes make (`EVALSHA`, `EVAL`, `SCRIPT LOAD` in `INFO commandstats`; the
/// commands a script runs inside are counted there too, but are no round trip of their own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_session_costs_redis_under_a_twentieth_of_a_call_per_request() {
    let redis = RedisServer::start();
    let nodes = nodes(
        &redis,
        2,
        // A period over 10 s: leases live their longest (1 s), so the calls a second are few and
        // fixed, and the share per request does not depend on how fast this machine is today.
        "rate_limit: { rate: 100000000, per: 100s }\nquota: { max: 1000000000, period: 1d }\n",
    )
    .await;
    // Warm: the first lease of each node, the token's first check.
    drive(&nodes, Spread::Even, 2, |sent, _| sent >= 20).await;
    let before = redis_script_calls(&redis).await;
    let load = drive(&nodes, Spread::Even, 8, |sent, _| sent >= 3000).await;
    let calls = redis_script_calls(&redis).await - before;
    let per_request = calls as f64 / load.admitted as f64;
    eprintln!(
        "{calls} redis script calls for {} requests in {:.2} s: {per_request:.4} a request",
        load.admitted,
        load.elapsed.as_secs_f64()
    );
    assert_eq!(load.refused, 0);
    assert!(per_request <= 0.05, "{calls} calls for {load:?}");
}

/// Script calls Redis has answered, from `INFO commandstats`.
async fn redis_script_calls(redis: &RedisServer) -> u64 {
    let mut conn = redis.connection().await;
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .expect("INFO");
    info.lines()
        .filter(|line| {
            ["cmdstat_evalsha:", "cmdstat_eval:", "cmdstat_script|load:"]
                .iter()
                .any(|name| line.starts_with(name))
        })
        .filter_map(|line| {
            let calls = line.split("calls=").nth(1)?;
            calls.split(',').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// The whole matrix, with longer runs: `benches/load/lease-accuracy.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by benches/load/lease-accuracy.sh"]
async fn the_whole_matrix() {
    let redis = RedisServer::start();
    for count in [2, 4] {
        for spread in [Spread::Even, Spread::Skewed] {
            for rate in [5, 50, 500] {
                rate_scenario(&redis, count, rate, spread, Duration::from_secs(5)).await;
            }
            for max in [100, 10_000] {
                quota_scenario(&redis, count, max, spread).await;
            }
        }
    }
}
