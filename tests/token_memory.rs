//! Memory per client_credentials token with the in-memory store (docs/design.md §9f): a burst of
//! tokens must not grow the process. Its own test binary (one test), so that nothing else runs in
//! the process while its resident size is read. Before stateless tokens each token left a session
//! behind: about 425 bytes of RSS per token (docs/benchmarks.md).

mod common;

use common::oauth::*;
use common::*;

const SERVICE_SECRET: &str = "service-secret-0123456789";
/// Tokens issued before the first reading: pools, caches and allocator arenas settle.
const WARM_UP: usize = 3_000;
const BURST: usize = 20_000;
const PARALLEL: usize = 8;
/// The bound of the issue: below 64 bytes per token after warm-up.
const MAX_BYTES_PER_TOKEN: usize = 64;

/// Resident set size of this process, from /proc/self/statm (pages).
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("resident pages");
    pages * 4096
}

async fn issue(gw: &TestGateway, count: usize) {
    let url = gw.url("/movies/oauth/token");
    client_credentials_burst(&url, "service", SERVICE_SECRET, count, PARALLEL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_client_credentials_tokens_does_not_grow_the_process() {
    let upstream = Upstream::start().await;
    let hash = tollgate::secrets::hash_secret(SERVICE_SECRET).expect("hash");
    let config = ConfigDir::new("");
    config.api(
        "movies",
        &format!(
            "listen_path: /movies/\nupstream: {{ url: \"{}\" }}\nauth: {{ type: oauth2 }}\noauth:\n  grant_types: [client_credentials]\n  scopes: [read]\n  clients:\n    - {{ client_id: service, secret_hash: \"{hash}\", grant_types: [client_credentials], scopes: [read] }}\n",
            upstream.url()
        ),
    );
    let gw = TestGateway::start(config).await;
    issue(&gw, WARM_UP).await;
    let before = rss_bytes();
    issue(&gw, BURST).await;
    let after = rss_bytes();
    let per_token = after.saturating_sub(before) / BURST;
    eprintln!("RSS {before} → {after} bytes over {BURST} tokens: {per_token} bytes per token");
    assert!(
        per_token < MAX_BYTES_PER_TOKEN,
        "RSS grew {per_token} bytes per token ({before} → {after} over {BURST} tokens)"
    );
    let listed = gw.admin_get("/apis/movies/clients/service/sessions").await;
    assert_eq!(
        listed.json()["stateless"]["issued"],
        (WARM_UP + BURST) as u64
    );
}
