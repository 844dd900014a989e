//! Guessing secrets in parallel (docs/design.md §9a): failed logins count per (username, address)
//! and per address, failed client authentications per (client_id, address) and per address, and
//! every attempt is reserved before the secret is verified, so N parallel guesses are evaluated at
//! most the limit (5) times: on the memory store and on Redis. A flood from one address leaves the
//! real client, elsewhere, served; names too long to be keys are refused before they reach the
//! store.

mod common;

use std::net::SocketAddr;

use common::oauth::*;
use common::redis::{RedisServer, unique_prefix};
use common::*;

const SERVICE_SECRET: &str = "service-secret-0123456789";
const ALICE_PASSWORD: &str = "alice-password";
/// Failed attempts allowed per window (`MAX_LOGIN_FAILURES`).
const LIMIT: usize = 5;
const GUESSES: usize = 40;

/// An API with a confidential client (`service`) and a public one (`public-app`, so password
/// guesses verify nothing but the password), and the user alice. `storage` is a gateway.yaml block.
async fn gateway(storage: &str) -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    let service = hashed(SERVICE_SECRET);
    let config = ConfigDir::new(&format!("users: users.yaml\n{storage}"));
    config.alice(ALICE_PASSWORD, "[read]");
    config.api(
        "movies",
        &format!(
            r#"listen_path: /movies/
upstream: {{ url: "{}" }}
oauth:
  grant_types: [client_credentials, password]
  scopes: [read]
  clients:
    - client_id: service
      secret_hash: "{service}"
      grant_types: [client_credentials]
      scopes: [read]
    - client_id: public-app
      grant_types: [password]
      scopes: [read]
"#,
            upstream.url()
        ),
    );
    (TestGateway::start(config).await, upstream)
}

fn redis_storage(redis: &RedisServer, prefix: &str) -> String {
    redis.storage_yaml(prefix, "2s")
}

/// `tollgate_secret_verifications_total` from the admin API's /metrics.
async fn verifications(gw: &TestGateway) -> u64 {
    let metrics = gw.admin_get("/metrics").await.text();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("tollgate_secret_verifications_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no verification counter in {metrics}"))
}

async fn password_grant(url: String, password: String) -> TestResponse {
    post_form(
        &url,
        None,
        &[
            ("grant_type", "password"),
            ("client_id", "public-app"),
            ("username", "alice"),
            ("password", &password),
        ],
    )
    .await
}

async fn client_credentials(url: String, secret: String) -> TestResponse {
    post_form(
        &url,
        Some(&basic("service", &secret)),
        &[("grant_type", "client_credentials")],
    )
    .await
}

/// Sends `GUESSES` requests at once; returns how many got each status.
async fn in_parallel<F, Fut>(guess: F) -> std::collections::BTreeMap<u16, usize>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = TestResponse> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..GUESSES {
        tasks.spawn(guess(i));
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(response) = tasks.join_next().await {
        let response = response.expect("a guess task panicked");
        if response.status == 429 {
            assert_eq!(response.json()["error"], "slow_down");
            assert!(
                response.header("retry-after").is_some(),
                "429 without Retry-After"
            );
        }
        *statuses.entry(response.status.as_u16()).or_default() += 1;
    }
    statuses
}

async fn parallel_password_guesses(storage: &str) {
    let (gw, _upstream) = gateway(storage).await;
    let url = gw.url("/movies/oauth/token");
    let before = verifications(&gw).await;
    let statuses = in_parallel(|i| password_grant(url.clone(), format!("wrong-{i}"))).await;
    let evaluated = verifications(&gw).await - before;
    assert!(
        evaluated <= LIMIT as u64,
        "{evaluated} of {GUESSES} parallel guesses were verified: {statuses:?}"
    );
    let refused = statuses.get(&400).copied().unwrap_or(0);
    assert!(refused <= LIMIT, "{statuses:?}");
    assert_eq!(refused + statuses.get(&429).copied().unwrap_or(0), GUESSES);
    // The right password, right after: refused as throttled, without being checked.
    let right = password_grant(url, ALICE_PASSWORD.into()).await;
    assert_eq!(right.status, 429, "{}", right.text());
    assert_eq!(verifications(&gw).await - before, evaluated);
    gw.stop().await;
}

async fn parallel_client_secret_guesses(storage: &str) {
    let (gw, _upstream) = gateway(storage).await;
    let url = gw.url("/movies/oauth/token");
    let before = verifications(&gw).await;
    let statuses = in_parallel(|i| client_credentials(url.clone(), format!("wrong-{i}"))).await;
    let evaluated = verifications(&gw).await - before;
    assert!(
        evaluated <= LIMIT as u64,
        "{evaluated} of {GUESSES} parallel guesses were verified: {statuses:?}"
    );
    let refused = statuses.get(&401).copied().unwrap_or(0);
    assert!(refused <= LIMIT, "{statuses:?}");
    assert_eq!(refused + statuses.get(&429).copied().unwrap_or(0), GUESSES);
    let right = client_credentials(url, SERVICE_SECRET.into()).await;
    assert_eq!(right.status, 429, "{}", right.text());
    assert_eq!(right.json()["error"], "slow_down");
    assert_eq!(verifications(&gw).await - before, evaluated);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_password_guesses_are_evaluated_at_most_the_limit_memory() {
    parallel_password_guesses("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_password_guesses_are_evaluated_at_most_the_limit_redis() {
    let redis = RedisServer::shared();
    parallel_password_guesses(&redis_storage(&redis, &unique_prefix())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_client_secret_guesses_are_evaluated_at_most_the_limit_memory() {
    parallel_client_secret_guesses("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_client_secret_guesses_are_evaluated_at_most_the_limit_redis() {
    let redis = RedisServer::shared();
    parallel_client_secret_guesses(&redis_storage(&redis, &unique_prefix())).await;
}

/// Stateless tokens counted for `service` (admin API).
async fn issued(gw: &TestGateway) -> u64 {
    let listed = gw.admin_get("/apis/movies/clients/service/sessions").await;
    listed.json()["stateless"]["issued"]
        .as_u64()
        .unwrap_or_else(|| panic!("no stateless count in {}", listed.text()))
}

/// A secret the gateway verified before (the verified-secret cache spares argon2 for it, and takes
/// the one-call path to the store) is refused like any guess while its address is throttled: at the
/// token endpoint whatever the request would otherwise get (a token, or `invalid_scope`), and at
/// introspection; nothing is counted. Otherwise the cache would tell a throttled caller which guess
/// is right. Before, and from another address, it is served; a request refused for its scope is
/// not counted as a token.
async fn cached_secret_while_throttled(storage: &str) {
    let (gw, _upstream) = gateway(storage).await;
    let from = "127.0.0.9";
    let auth = basic("service", SERVICE_SECRET);
    let post = |path: &'static str, form: &'static [(&'static str, &'static str)]| {
        let auth = auth.clone();
        let addr = gw.addr;
        async move { post_form_from(addr, from, path, &[("authorization", &auth)], form).await }
    };
    const TOKEN: &[(&str, &str)] = &[("grant_type", "client_credentials")];
    const WIDE: &[(&str, &str)] = &[("grant_type", "client_credentials"), ("scope", "admin")];
    const INTROSPECT: &[(&str, &str)] = &[("token", "not-a-token")];
    // Verified once with argon2, then served from the cache.
    for _ in 0..2 {
        let served = post("/movies/oauth/token", TOKEN).await;
        assert_eq!(served.status, 200, "{}", served.text());
    }
    let verified = verifications(&gw).await;
    let wide = post("/movies/oauth/token", WIDE).await;
    assert_eq!(wide.status, 400, "{}", wide.text());
    assert_eq!(wide.json()["error"], "invalid_scope");
    assert_eq!(issued(&gw).await, 2, "a refused request counted as a token");
    for i in 0..LIMIT {
        let wrong = client_credentials_from(gw.addr, from, &format!("wrong-{i}")).await;
        assert_eq!(wrong.status, 401, "{}", wrong.text());
    }
    for (path, form) in [
        ("/movies/oauth/token", TOKEN),
        ("/movies/oauth/token", WIDE),
        ("/movies/oauth/introspect", INTROSPECT),
    ] {
        let throttled = post(path, form).await;
        assert_oauth_error(
            &throttled,
            429,
            "slow_down",
            Said::Exactly("too many failed client authentications; try again later"),
        );
        assert!(throttled.header("retry-after").is_some());
    }
    assert_eq!(
        issued(&gw).await,
        2,
        "a throttled request counted as a token"
    );
    assert_eq!(verifications(&gw).await, verified + LIMIT as u64);
    let elsewhere = client_credentials_from(gw.addr, "127.0.0.10", SERVICE_SECRET).await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.text());
    assert_eq!(issued(&gw).await, 3);
    assert_eq!(verifications(&gw).await, verified + LIMIT as u64);
    gw.stop().await;
}

#[tokio::test]
async fn a_cached_secret_is_refused_while_its_address_is_throttled_memory() {
    cached_secret_while_throttled("").await;
}

#[tokio::test]
async fn a_cached_secret_is_refused_while_its_address_is_throttled_redis() {
    let redis = RedisServer::shared();
    cached_secret_while_throttled(&redis_storage(&redis, &unique_prefix())).await;
}

/// A client_credentials request over a connection whose local end is bound to `from`.
async fn client_credentials_from(gateway: SocketAddr, from: &str, secret: &str) -> TestResponse {
    let auth = basic("service", secret);
    post_form_from(
        gateway,
        from,
        "/movies/oauth/token",
        &[("authorization", &auth)],
        &[("grant_type", "client_credentials")],
    )
    .await
}

/// A password grant of the public client from the address `from`, with extra headers.
async fn password_from(
    gw: &TestGateway,
    from: &str,
    headers: &[(&str, &str)],
    username: &str,
    password: &str,
) -> TestResponse {
    post_form_from(
        gw.addr,
        from,
        "/movies/oauth/token",
        headers,
        &[
            ("grant_type", "password"),
            ("client_id", "public-app"),
            ("username", username),
            ("password", password),
        ],
    )
    .await
}

/// The per-address counter on its own: wrong passwords spread over LIMIT different usernames from
/// one address are each a first failure for their (username, address), yet they use up the address,
/// so even alice's right password from there is throttled (her own count is zero); from another
/// address she is served.
#[tokio::test]
async fn guesses_spread_over_usernames_are_stopped_by_the_per_address_counter() {
    let (gw, _upstream) = gateway("").await;
    for i in 0..LIMIT {
        let wrong = password_from(&gw, "127.0.0.3", &[], &format!("user-{i}"), "guess").await;
        assert_oauth_error(
            &wrong,
            400,
            "invalid_grant",
            Said::Exactly("invalid username or password"),
        );
    }
    let throttled = password_from(&gw, "127.0.0.3", &[], "alice", ALICE_PASSWORD).await;
    assert_eq!(throttled.status, 429, "{}", throttled.text());
    assert!(throttled.header("retry-after").is_some());
    let elsewhere = password_from(&gw, "127.0.0.4", &[], "alice", ALICE_PASSWORD).await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.text());
}

/// The same for client authentication: LIMIT unknown client ids from one address spend the address;
/// the real client's right secret from there is throttled, from another address it is served.
#[tokio::test]
async fn client_ids_spread_over_one_address_are_stopped_by_the_per_address_counter() {
    let (gw, _upstream) = gateway("").await;
    for i in 0..LIMIT {
        let auth = basic(&format!("client-{i}"), "guess");
        let wrong = post_form_from(
            gw.addr,
            "127.0.0.5",
            "/movies/oauth/token",
            &[("authorization", &auth)],
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert_oauth_error(
            &wrong,
            401,
            "invalid_client",
            Said::Exactly("client authentication failed"),
        );
    }
    let throttled = client_credentials_from(gw.addr, "127.0.0.5", SERVICE_SECRET).await;
    assert_eq!(throttled.status, 429, "{}", throttled.text());
    let elsewhere = client_credentials_from(gw.addr, "127.0.0.6", SERVICE_SECRET).await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.text());
}

/// A client cannot pick the address its guesses count against: `X-Forwarded-For` from a peer that
/// is not in `trusted_proxies` is ignored, and every guess counts against the real peer, whatever
/// address each one claims.
#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_does_not_choose_the_throttled_address() {
    let (gw, _upstream) = gateway("").await;
    for i in 0..LIMIT {
        let claimed = format!("198.51.100.{i}");
        let wrong = password_from(
            &gw,
            "127.0.0.7",
            &[("x-forwarded-for", &claimed)],
            "alice",
            "guess",
        )
        .await;
        assert_eq!(wrong.status, 400, "{}", wrong.text());
    }
    let throttled = password_from(
        &gw,
        "127.0.0.7",
        &[("x-forwarded-for", "198.51.100.99")],
        "alice",
        ALICE_PASSWORD,
    )
    .await;
    assert_eq!(throttled.status, 429, "{}", throttled.text());
}

/// Behind a trusted proxy the address the proxy forwards is the one that counts: one client's
/// guesses through the proxy throttle that client, not the proxy's other clients.
#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_throttled() {
    let (gw, _upstream) = gateway("trusted_proxies: [127.0.0.8/32]\n").await;
    let attacker = [("x-forwarded-for", "198.51.100.1")];
    for _ in 0..LIMIT {
        let wrong = password_from(&gw, "127.0.0.8", &attacker, "alice", "guess").await;
        assert_eq!(wrong.status, 400, "{}", wrong.text());
    }
    let throttled = password_from(&gw, "127.0.0.8", &attacker, "alice", ALICE_PASSWORD).await;
    assert_eq!(throttled.status, 429, "{}", throttled.text());
    let other = [("x-forwarded-for", "198.51.100.2")];
    let served = password_from(&gw, "127.0.0.8", &other, "alice", ALICE_PASSWORD).await;
    assert_eq!(served.status, 200, "{}", served.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guessing_flood_from_one_address_leaves_the_real_client_served_from_another() {
    let (gw, _upstream) = gateway("").await;
    let url = gw.url("/movies/oauth/token");
    // The attacker at 127.0.0.1 guesses service's secret until it is throttled.
    let statuses = in_parallel(|i| client_credentials(url.clone(), format!("guess-{i}"))).await;
    assert!(
        statuses.get(&429).copied().unwrap_or(0) >= GUESSES - LIMIT,
        "{statuses:?}"
    );
    assert_eq!(
        client_credentials(url, SERVICE_SECRET.into()).await.status,
        429
    );
    // The real service, at 127.0.0.2, is served.
    let real = client_credentials_from(gw.addr, "127.0.0.2", SERVICE_SECRET).await;
    assert_eq!(real.status, 200, "{}", real.text());
    assert!(real.json()["access_token"].is_string());
    // And a wrong guess from there is its own first failure, not a throttled one.
    let typo = client_credentials_from(gw.addr, "127.0.0.2", "typo").await;
    assert_eq!(typo.status, 401, "{}", typo.text());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlong_usernames_and_client_ids_are_refused_before_they_become_keys() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix();
    let (gw, _upstream) = gateway(&redis_storage(&redis, &prefix)).await;
    let url = gw.url("/movies/oauth/token");
    let long_name = "a".repeat(10_000);
    let response = post_form(
        &url,
        None,
        &[
            ("grant_type", "password"),
            ("client_id", "public-app"),
            ("username", &long_name),
            ("password", "x"),
        ],
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(response.json()["error"], "invalid_request");
    assert_eq!(
        response.json()["error_description"],
        "the username is longer than 256 bytes"
    );
    let response = post_form(
        &url,
        Some(&basic(&long_name, "secret")),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(response.json()["error"], "invalid_client");
    assert_eq!(
        response.json()["error_description"],
        "client_id must be 1-128 visible ASCII characters"
    );
    // Nothing was counted, so nothing was stored.
    let keys = redis.keys_and_ttls(&prefix).await;
    assert!(
        keys.iter().all(|(k, _)| !k.contains("failures:")),
        "{keys:?}"
    );
    // A username of 256 bytes is still an ordinary (failed) login, and is counted.
    let longest = "b".repeat(256);
    let response = post_form(
        &url,
        None,
        &[
            ("grant_type", "password"),
            ("client_id", "public-app"),
            ("username", &longest),
            ("password", "x"),
        ],
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(response.json()["error"], "invalid_grant");
    let keys = redis.keys_and_ttls(&prefix).await;
    assert!(keys.iter().any(|(k, _)| k.ends_with(&longest)), "{keys:?}");
    gw.stop().await;
}

/// A service that starts its workers at once sends many token requests with the right secret before
/// any of them is verified. Identical credentials in flight share one attempt and one verification,
/// so the client's own burst is served in full and argon2 runs once.
async fn a_burst_of_the_right_secret_is_served_in_full(storage: &str) {
    let (gw, _upstream) = gateway(storage).await;
    let url = gw.url("/movies/oauth/token");
    let before = verifications(&gw).await;
    let statuses = in_parallel(|_| client_credentials(url.clone(), SERVICE_SECRET.into())).await;
    assert_eq!(
        statuses,
        std::collections::BTreeMap::from([(200, GUESSES)]),
        "every request of the burst is served"
    );
    // One flight verified the secret; requests that came after it found it in the secret cache.
    assert!(
        verifications(&gw).await - before <= 2,
        "{} verifications",
        verifications(&gw).await - before
    );
    // Nothing was counted as a failure: guesses from the same address still have their full budget.
    let typo = client_credentials(url, "typo".into()).await;
    assert_eq!(typo.status, 401, "{}", typo.text());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_the_right_secret_is_served_in_full_memory() {
    a_burst_of_the_right_secret_is_served_in_full("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_the_right_secret_is_served_in_full_redis() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix();
    a_burst_of_the_right_secret_is_served_in_full(&redis_storage(&redis, &prefix)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_client_costs_a_verification_like_a_wrong_secret() {
    let (gw, _upstream) = gateway("").await;
    let url = gw.url("/movies/oauth/token");
    let before = verifications(&gw).await;
    let wrong = client_credentials(url.clone(), "wrong-secret".into()).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert_eq!(verifications(&gw).await - before, 1);
    // An id that names no client, and a public client presenting a secret: the same answer and the
    // same argon2 cost, so timing does not tell which ids exist.
    for id in ["no-such-client", "public-app"] {
        let before = verifications(&gw).await;
        let response = post_form(
            &url,
            Some(&basic(id, "some-secret")),
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert_eq!(response.status, 401, "{id}: {}", response.text());
        assert_eq!(response.json()["error"], wrong.json()["error"]);
        assert_eq!(verifications(&gw).await - before, 1, "{id}");
    }
    gw.stop().await;
}
