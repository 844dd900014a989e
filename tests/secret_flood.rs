//! A flood of wrong client secrets from many addresses (docs/design.md §9a
//! `limits.secret_verifications`): argon2 verifications run under a fixed number of permits, so the
//! memory they take stays bounded however many guesses arrive at once; callers beyond the permits
//! and the 64-place queue get 503 at once, and the real client is served again as soon as the flood
//! is over.
//!
//! In a file of its own so the test process's peak RSS (VmHWM) measures this flood and nothing
//! else.

mod common;

use std::sync::OnceLock;

use common::oauth::*;
use common::*;

const SERVICE_SECRET: &str = "service-secret-0123456789";
/// Guesses sent at once.
const FLOOD: usize = 400;
/// Permits configured in the test: argon2 runs on one thread, holding 19 MiB while it runs.
const PERMITS: usize = 1;
/// The bound the flood must stay under: permits × argon2 memory (19 MiB), times the allocator's
/// slack (glibc keeps up to about four argon2 buffers' worth resident per thread that ran argon2:
/// measured 80 MiB per permit in this test), plus about 10 MiB for 400 connections, with room to
/// spare. Without the pool the same flood raised the peak by 7.3 GiB.
const PEAK_INCREASE_LIMIT_KIB: u64 = 256 * 1024;

fn service_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| tollgate::secrets::hash_secret(SERVICE_SECRET).expect("hash"))
}

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

async fn token_request(url: String, secret: String, from: String) -> TestResponse {
    let body = "grant_type=client_credentials";
    send(
        http::Request::post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", basic("service", &secret))
            // The gateway trusts the test as a proxy, so every guess comes from its own address and
            // the per-address throttle does not stop the flood before the pool sees it.
            .header("x-forwarded-for", from)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_wrong_client_secrets_keeps_memory_bounded() {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new(&format!(
        // All 400 connections come from 127.0.0.1 (the addresses are in X-Forwarded-For), so the
        // per-address connection cap is lifted: this test is about the verification pool.
        "trusted_proxies: [127.0.0.1/32]\nlimits: {{ secret_verifications: {PERMITS}, max_connections_per_ip: 10000 }}\n"
    ));
    config.api(
        "movies",
        &format!(
            "listen_path: /movies/\nupstream: {{ url: \"{}\" }}\noauth:\n  grant_types: [client_credentials]\n  scopes: [read]\n  clients:\n    - client_id: service\n      secret_hash: \"{}\"\n      grant_types: [client_credentials]\n      scopes: [read]\n",
            upstream.url(),
            service_hash()
        ),
    );
    let gw = TestGateway::start(config).await;
    // Warm up: one verification, so one-time allocations (thread pools, the dummy hash) are not
    // counted as the flood's.
    let url = gw.url("/movies/oauth/token");
    let warm = token_request(url.clone(), "wrong-warm-up".into(), "10.255.0.1".into()).await;
    assert_eq!(warm.status, 401, "{}", warm.text());

    let rss_before = status_kib("VmRSS:");
    // Writing 5 resets the peak (VmHWM) to the current RSS (Linux 4.0+); where that is not allowed,
    // the peak so far (the warm-up) is the baseline.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let peak_before = status_kib("VmHWM:");

    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..FLOOD {
        let from = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256 + 1);
        // Each guess runs in its own task so all of them are in flight together.
        guesses.spawn(token_request(
            url.clone(),
            format!("wrong-secret-{i}"),
            from,
        ));
    }
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    while let Some(joined) = guesses.join_next().await {
        let response = joined.expect("a guess task panicked");
        let status = response.status.as_u16();
        assert!(
            status == 401 || status == 503,
            "a wrong secret got {status}: {}",
            response.text()
        );
        if status == 503 {
            assert!(
                response.header("retry-after").is_some(),
                "503 without Retry-After"
            );
            assert_eq!(response.json()["error"], "temporarily_unavailable");
        }
        *statuses.entry(status).or_default() += 1;
    }
    let peak_after = status_kib("VmHWM:");
    let increase = peak_after.saturating_sub(peak_before.max(rss_before));
    eprintln!(
        "flood of {FLOOD}: {statuses:?}; RSS before {rss_before} KiB, peak before {peak_before} KiB, peak after {peak_after} KiB, increase {increase} KiB"
    );
    assert!(
        statuses.get(&503).copied().unwrap_or(0) > 0,
        "no guess was turned away: {statuses:?}"
    );
    assert!(
        increase < PEAK_INCREASE_LIMIT_KIB,
        "the flood raised the peak RSS by {increase} KiB (limit {PEAK_INCREASE_LIMIT_KIB} KiB)"
    );

    // The flood is over: the real client is served.
    let real = token_request(url, SERVICE_SECRET.into(), "10.254.0.1".into()).await;
    assert_eq!(real.status, 200, "{}", real.text());
    gw.stop().await;
}
