//! Several gateway nodes sharing one Redis (docs/design.md §7, docs/security.md#contract-faults):
//! two gateways started through the library on 127.0.0.1:0 with the same configuration, signing key
//! and key prefix, and a `redis-server` the harness starts on a free port. Whatever one node
//! issues, counts or revokes, the other sees; when Redis goes away, what needs it answers 503 and
//! JWT validation goes on.

mod common;

use std::time::Duration;

use common::oauth::*;
use common::redis::{RedisServer, unique_prefix};
use common::*;
use serde_json::{Value, json};

const APP_SECRET: &str = "app-secret-0123456789";
const SERVICE_SECRET: &str = "service-secret-0123456789";
const ALICE_PASSWORD: &str = "alice-password";
/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// Two nodes, their Redis and their upstream.
struct Nodes {
    a: TestGateway,
    b: TestGateway,
    redis: RedisServer,
    upstream: Upstream,
}

/// The configuration both nodes run (`extra_api` lets a test change the `metered` API's limits):
/// - `movies`: OAuth, clients `service` (client_credentials), `app` (password, refresh) and `spa`
///   (public, authorization code + PKCE through an external identity provider); user alice.
/// - `portal`: the same with the built-in login page.
/// - `metered`: accepts `movies` tokens, counts a quota of 4 a day and a rate limit per session.
fn config(redis: &RedisServer, prefix: &str, upstream: &str, metered_limits: &str) -> ConfigDir {
    let [app, service, alice] = hashes([APP_SECRET, SERVICE_SECRET, ALICE_PASSWORD]);
    let config = ConfigDir::new(&format!(
        "users: users.yaml\n{}",
        redis.storage_yaml(prefix, "300ms")
    ));
    config.write(
        "users.yaml",
        &format!("- username: alice\n  password_hash: \"{alice}\"\n  scopes: [read, write]\n"),
    );
    // The key every node mounts (`generate: true` would give each node its own).
    config.write(
        "keys/signing.pem",
        &tollgate::token::keys::generate_pkcs8_pem(tollgate::config::SigningAlgorithm::Es256)
            .expect("generate a signing key"),
    );
    config.api(
        "movies",
        &format!(
            r#"listen_path: /movies/
upstream: {{ url: "{upstream}" }}
auth: {{ type: oauth2 }}
oauth:
  grant_types: [authorization_code, client_credentials, password, refresh_token]
  pkce: required
  login: {{ redirect: "https://idp.example/login" }}
  scopes: [read, write]
  clients:
    - client_id: service
      secret_hash: "{service}"
      grant_types: [client_credentials]
      scopes: [read]
    - client_id: app
      secret_hash: "{app}"
      grant_types: [password, refresh_token]
      scopes: [read, write]
    - client_id: spa
      redirect_uris: [https://app.example/cb]
      grant_types: [authorization_code, refresh_token]
      scopes: [read]
"#
        ),
    );
    // The same clients with the built-in login page.
    let movies = std::fs::read_to_string(config.path().join("api-definitions/movies.yaml"))
        .expect("movies.yaml");
    config.api(
        "portal",
        &movies
            .replace("listen_path: /movies/", "listen_path: /portal/")
            .replace(
                "login: { redirect: \"https://idp.example/login\" }",
                "login: builtin",
            ),
    );
    config.api(
        "metered",
        &format!(
            "listen_path: /metered/\nupstream: {{ url: \"{upstream}\" }}\nauth: {{ type: oauth2, accept_from: [movies] }}\n{metered_limits}"
        ),
    );
    config
}

const QUOTA_OF_FOUR: &str = "quota: { max: 4, period: 1d }\n";

async fn nodes_with(metered_limits: &str) -> Nodes {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let prefix = unique_prefix();
    let a = TestGateway::start(config(&redis, &prefix, &upstream.url(), metered_limits)).await;
    // Node B mounts the same files.
    let b = TestGateway::start(a.config.same_files()).await;
    Nodes {
        a,
        b,
        redis,
        upstream,
    }
}

async fn nodes() -> Nodes {
    nodes_with(QUOTA_OF_FOUR).await
}

async fn token(gw: &TestGateway, auth: &str, pairs: &[(&str, &str)]) -> TestResponse {
    post_form(&gw.url("/movies/oauth/token"), Some(auth), pairs).await
}

async fn service_token(gw: &TestGateway) -> String {
    let response = token(
        gw,
        &basic("service", SERVICE_SECRET),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

async fn alice_tokens(gw: &TestGateway) -> Value {
    let response = token(
        gw,
        &basic("app", APP_SECRET),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
        ],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

async fn refresh(gw: &TestGateway, refresh_token: &str) -> TestResponse {
    token(
        gw,
        &basic("app", APP_SECRET),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

async fn call(gw: &TestGateway, path: &str, access_token: &str) -> TestResponse {
    get_with(
        &gw.url(path),
        &[("authorization", &format!("Bearer {access_token}"))],
    )
    .await
}

fn str_field<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {value}"))
}

#[tokio::test]
async fn a_token_issued_on_one_node_works_on_the_other() {
    let nodes = nodes().await;
    let access = service_token(&nodes.a).await;
    let response = call(&nodes.b, "/movies/films", &access).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(nodes.upstream.last().target, "/films");
}

#[tokio::test]
async fn a_session_started_on_one_node_is_refreshed_on_the_other() {
    let nodes = nodes().await;
    let first = alice_tokens(&nodes.a).await;
    let refreshed = refresh(&nodes.b, str_field(&first, "refresh_token")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    let refreshed = refreshed.json();
    assert_eq!(
        jwt_claims(str_field(&refreshed, "access_token"))["sid"],
        jwt_claims(str_field(&first, "access_token"))["sid"],
        "a refresh continues the session"
    );
    // The rotated-out token is refused on the node that issued it.
    let reused = refresh(&nodes.a, str_field(&first, "refresh_token")).await;
    assert_eq!(reused.status, 400, "{}", reused.text());
    assert_eq!(reused.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn a_code_issued_on_one_node_is_redeemed_on_the_other() {
    let nodes = nodes().await;
    // The identity provider asks node A for a code (Tyk's flow)...
    let issued = nodes
        .a
        .admin_send(
            "POST",
            "/apis/movies/oauth/authorize-client",
            Some(&json!({
                "client_id": "spa",
                "redirect_uri": "https://app.example/cb",
                "response_type": "code",
                "username": "alice",
                "scope": "read",
                "state": "s-1",
                "code_challenge": CHALLENGE,
                "code_challenge_method": "S256",
            })),
        )
        .await;
    assert_eq!(issued.status, 200, "{}", issued.text());
    let code = issued.json()["code"].as_str().expect("code").to_string();
    // ...and the client's callback lands on node B.
    let redeem = async |gw: &TestGateway| {
        post_form(
            &gw.url("/movies/oauth/token"),
            None,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://app.example/cb"),
                ("client_id", "spa"),
                ("code_verifier", VERIFIER),
            ],
        )
        .await
    };
    let tokens = redeem(&nodes.b).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    assert_eq!(
        jwt_claims(str_field(&tokens.json(), "access_token"))["sub"],
        "alice"
    );
    // A code is good once, whichever node sees it next.
    let again = redeem(&nodes.a).await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert_eq!(again.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn a_login_page_served_by_one_node_is_accepted_by_the_other() {
    let nodes = nodes().await;
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", "spa"),
            ("redirect_uri", "https://app.example/cb"),
            ("scope", "read"),
            ("state", "s-2"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ])
        .finish();
    let page = get(&nodes.a.url(&format!("/portal/oauth/authorize?{query}"))).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let mut form = hidden_fields(&page.text());
    assert!(form.iter().any(|(name, _)| name == "csrf_token"));
    form.extend([
        ("username".to_string(), "alice".to_string()),
        ("password".to_string(), ALICE_PASSWORD.to_string()),
        ("action".to_string(), "allow".to_string()),
    ]);
    let form: Vec<(&str, &str)> = form.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    // The browser's POST lands on node B: the CSRF token is signed with a key every node derives
    // from the shared signing key.
    let done = post_form(&nodes.b.url("/portal/oauth/authorize"), None, &form).await;
    assert_eq!(done.status, 303, "{}", done.text());
    let location = done.header("location").expect("Location");
    assert!(
        location.starts_with("https://app.example/cb?"),
        "{location}"
    );
    assert!(location.contains("code="), "{location}");
}

#[tokio::test]
async fn a_client_created_on_one_node_is_used_on_the_other() {
    let nodes = nodes().await;
    let created = nodes
        .a
        .admin_send(
            "POST",
            "/apis/movies/clients",
            Some(&json!({"grant_types": ["client_credentials"], "scopes": ["read"]})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    let auth = basic(
        str_field(&created, "client_id"),
        str_field(&created, "client_secret"),
    );
    let issued = token(&nodes.b, &auth, &[("grant_type", "client_credentials")]).await;
    assert_eq!(issued.status, 200, "{}", issued.text());
    let access = str_field(&issued.json(), "access_token").to_string();
    assert_eq!(call(&nodes.a, "/movies/x", &access).await.status, 200);

    // Deleted on node B, its token stops working on node A.
    let client_id = str_field(&created, "client_id");
    let deleted = nodes
        .b
        .admin_send("DELETE", &format!("/apis/movies/clients/{client_id}"), None)
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert!(
        eventually(Duration::from_secs(2), || async {
            call(&nodes.a, "/movies/x", &access).await.status == 401
        })
        .await,
        "the deleted client's token still works on the other node"
    );
}

#[tokio::test]
async fn a_client_moved_to_another_policy_on_one_node_is_limited_on_the_other_at_once() {
    let nodes = nodes_with("").await;
    let created = nodes
        .a
        .admin_send(
            "POST",
            "/apis/movies/clients",
            Some(&json!({"client_id": "batch", "grant_types": ["client_credentials"], "scopes": ["read"]})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let auth = basic("batch", str_field(&created.json(), "client_secret"));
    let issued = token(&nodes.b, &auth, &[("grant_type", "client_credentials")]).await;
    let access = str_field(&issued.json(), "access_token").to_string();
    // No policy, no limits: node B serves (and has looked the client up).
    for _ in 0..3 {
        assert_eq!(call(&nodes.b, "/metered/x", &access).await.status, 200);
    }

    // Node A puts the client on a plan of one request an hour.
    let policy = nodes
        .a
        .admin_send(
            "POST",
            "/policies",
            Some(&json!({"id": "one-an-hour", "rate_limit": {"rate": 1, "per": "1h"}, "access": ["metered"]})),
        )
        .await;
    assert_eq!(policy.status, 201, "{}", policy.text());
    let moved = nodes
        .a
        .admin_send(
            "PUT",
            "/apis/movies/clients/batch",
            Some(&json!({"grant_types": ["client_credentials"], "scopes": ["read"], "policy": "one-an-hour"})),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text());

    // Node B applies it to the existing token on the next requests (pub/sub, no cache to expire).
    assert_eq!(call(&nodes.b, "/metered/x", &access).await.status, 200);
    let refused = call(&nodes.b, "/metered/x", &access).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
}

#[tokio::test]
async fn a_revocation_on_one_node_is_refused_on_the_other_within_100ms() {
    let nodes = nodes().await;
    let access = service_token(&nodes.a).await;
    // Node B has validated (and cached) the token.
    assert_eq!(call(&nodes.b, "/movies/x", &access).await.status, 200);

    let revoked = post_form(
        &nodes.a.url("/movies/oauth/revoke"),
        Some(&basic("service", SERVICE_SECRET)),
        &[("token", &access)],
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert!(
        eventually(PROPAGATION, || async {
            call(&nodes.b, "/movies/x", &access).await.status == 401
        })
        .await,
        "node B never refused the token node A revoked"
    );
}

#[tokio::test]
async fn quota_is_counted_across_both_nodes() {
    let nodes = nodes().await;
    let access = service_token(&nodes.a).await;
    for (i, node) in [&nodes.a, &nodes.b, &nodes.a, &nodes.b]
        .into_iter()
        .enumerate()
    {
        let response = call(node, "/metered/x", &access).await;
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        assert_eq!(
            response.header("x-ratelimit-remaining"),
            Some((3 - i).to_string().as_str())
        );
    }
    for node in [&nodes.a, &nodes.b] {
        let refused = call(node, "/metered/x", &access).await;
        assert_eq!(refused.status, 429, "{}", refused.text());
        assert!(refused.header("retry-after").is_some());
    }
    assert_eq!(nodes.upstream.count(), 4);
}

#[tokio::test]
async fn rate_limit_is_counted_across_both_nodes() {
    let nodes = nodes_with("rate_limit: { rate: 3, per: 1h }\n").await;
    let access = service_token(&nodes.b).await;
    for node in [&nodes.a, &nodes.b, &nodes.a] {
        assert_eq!(call(node, "/metered/x", &access).await.status, 200);
    }
    for node in [&nodes.b, &nodes.a] {
        let refused = call(node, "/metered/x", &access).await;
        assert_eq!(refused.status, 429, "{}", refused.text());
        assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    }
}

#[tokio::test]
async fn rotated_refresh_tokens_stay_refused_after_a_node_restart() {
    let nodes = nodes().await;
    let first = alice_tokens(&nodes.a).await;
    let second = refresh(&nodes.a, str_field(&first, "refresh_token")).await;
    assert_eq!(second.status, 200, "{}", second.text());
    let second = second.json();

    // Node A restarts with the same configuration: nothing of the session lived in its memory.
    let config = nodes.a.config.same_files();
    nodes.a.stop().await;
    let a = TestGateway::start(config).await;

    let third = refresh(&a, str_field(&second, "refresh_token")).await;
    assert_eq!(third.status, 200, "{}", third.text());
    let replay = refresh(&a, str_field(&first, "refresh_token")).await;
    assert_eq!(replay.status, 400, "{}", replay.text());
    assert_eq!(replay.json()["error"], "invalid_grant");
    // Reuse of a rotated token ends the session everywhere (RFC 9700 §4.14.2).
    let after_reuse = refresh(&nodes.b, str_field(&third.json(), "refresh_token")).await;
    assert_eq!(after_reuse.status, 400, "{}", after_reuse.text());
}

#[tokio::test]
async fn redis_down_needs_redis_answers_503_and_jwt_validation_goes_on() {
    let mut nodes = nodes_with("").await;
    let access = service_token(&nodes.a).await;
    let tokens = alice_tokens(&nodes.a).await;

    nodes.redis.stop();

    // A token validates from the key and the local revocation set: no Redis needed.
    let served = call(&nodes.b, "/movies/x", &access).await;
    assert_eq!(served.status, 200, "{}", served.text());
    // Everything that needs Redis answers 503 with Retry-After, never 401 and never a hang: each
    // waits at most the 300 ms storage timeout; [`HANG`] only tells a hang from slowness.
    let responses = never_hangs("requests that need a stopped Redis", async {
        [
            token(
                &nodes.a,
                &basic("service", SERVICE_SECRET),
                &[("grant_type", "client_credentials")],
            )
            .await,
            refresh(&nodes.b, str_field(&tokens, "refresh_token")).await,
            post_form(
                &nodes.a.url("/movies/oauth/revoke"),
                Some(&basic("app", APP_SECRET)),
                &[("token", str_field(&tokens, "refresh_token"))],
            )
            .await,
            post_form(
                &nodes.b.url("/movies/oauth/introspect"),
                Some(&basic("service", SERVICE_SECRET)),
                &[("token", str_field(&tokens, "refresh_token"))],
            )
            .await,
            // Login failures are counted in Redis: without it the password grant fails closed.
            token(
                &nodes.a,
                &basic("app", APP_SECRET),
                &[
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", "wrong"),
                ],
            )
            .await,
            get(&nodes.a.url("/health")).await,
            nodes.b.admin_get("/health").await,
        ]
    })
    .await;
    for response in responses {
        assert_eq!(response.status, 503, "{}", response.text());
        assert!(response.header("retry-after").is_some(), "{response:?}");
    }

    // The admin listener says why; the public one does not describe internals.
    let public = get(&nodes.a.url("/health")).await.json();
    assert_eq!(public["storage"]["status"], "unavailable");
    assert!(public["storage"]["error"].is_null(), "{public}");
    assert!(nodes.a.admin_get("/health").await.json()["storage"]["error"].is_string());

    // Redis comes back (empty: nothing was persisted); the nodes recover without a restart.
    nodes.redis.restart();
    for node in [&nodes.a, &nodes.b] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                get(&node.url("/health")).await.status == 200
            })
            .await,
            "a node did not recover"
        );
        let access = service_token(node).await;
        assert_eq!(call(node, "/movies/x", &access).await.status, 200);
    }
}

#[tokio::test]
async fn a_hanging_redis_is_bounded_by_the_timeout() {
    let nodes = nodes_with("").await;
    let access = service_token(&nodes.a).await;
    // Frozen: connections stay open and nothing answers.
    let frozen = nodes.redis.freeze();
    let issued = never_hangs(
        "the token endpoint on a frozen Redis",
        token(
            &nodes.a,
            &basic("service", SERVICE_SECRET),
            &[("grant_type", "client_credentials")],
        ),
    )
    .await;
    assert_eq!(issued.status, 503, "{}", issued.text());
    assert_eq!(call(&nodes.b, "/movies/x", &access).await.status, 200);
    drop(frozen);
    assert!(
        eventually(Duration::from_secs(10), || async {
            token(
                &nodes.a,
                &basic("service", SERVICE_SECRET),
                &[("grant_type", "client_credentials")],
            )
            .await
            .status
                == 200
        })
        .await
    );
}

/// `on_storage_error` decides what a rate limit does while Redis is unreachable, and `/metrics`
/// counts those requests.
#[tokio::test]
async fn limits_without_redis_follow_on_storage_error() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let config = config(&redis, &unique_prefix(), &upstream.url(), "");
    for (id, choice) in [("local", "local"), ("allow", "allow"), ("deny", "deny")] {
        config.api(
            id,
            &format!(
                "listen_path: /{id}/\nupstream: {{ url: \"{}\" }}\nauth: {{ type: oauth2, accept_from: [movies] }}\n\
                 rate_limit: {{ rate: 1, per: 1h, on_storage_error: {choice} }}\n",
                upstream.url()
            ),
        );
    }
    let mut redis = redis;
    let gw = TestGateway::start(config).await;
    let access = service_token(&gw).await;
    redis.stop();

    // local: this node's own limiter counts (1 an hour).
    assert_eq!(call(&gw, "/local/x", &access).await.status, 200);
    assert_eq!(call(&gw, "/local/x", &access).await.status, 429);
    // allow: uncounted.
    for _ in 0..3 {
        assert_eq!(call(&gw, "/allow/x", &access).await.status, 200);
    }
    // deny: 503 with Retry-After.
    let denied = call(&gw, "/deny/x", &access).await;
    assert_eq!(denied.status, 503, "{}", denied.text());
    assert!(denied.header("retry-after").is_some());

    let metrics = gw.admin_get("/metrics").await.text();
    for line in [
        "tollgate_limiter_storage_errors_total{on_storage_error=\"local\"} 2",
        "tollgate_limiter_storage_errors_total{on_storage_error=\"allow\"} 3",
        "tollgate_limiter_storage_errors_total{on_storage_error=\"deny\"} 1",
    ] {
        assert!(metrics.contains(line), "no `{line}` in\n{metrics}");
    }
}

/// What the nodes leave in Redis: a TTL on every key but clients (and policies), and no token, code
/// or secret in clear.
#[tokio::test]
async fn redis_holds_no_secret_in_clear_and_nothing_without_ttl() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let prefix = unique_prefix();
    let gw = TestGateway::start(config(&redis, &prefix, &upstream.url(), QUOTA_OF_FOUR)).await;
    let service_access = service_token(&gw).await;
    let tokens = alice_tokens(&gw).await;
    let refreshed = refresh(&gw, str_field(&tokens, "refresh_token"))
        .await
        .json();
    let created = gw
        .admin_send(
            "POST",
            "/apis/movies/clients",
            Some(&json!({"grant_types": ["client_credentials"], "scopes": ["read"]})),
        )
        .await
        .json();
    let issued = gw
        .admin_send(
            "POST",
            "/apis/movies/oauth/authorize-client",
            Some(&json!({
                "client_id": "spa", "redirect_uri": "https://app.example/cb", "response_type": "code",
                "username": "alice", "scope": "read", "code_challenge": CHALLENGE,
                "code_challenge_method": "S256",
            })),
        )
        .await
        .json();
    assert_eq!(call(&gw, "/metered/x", &service_access).await.status, 200);
    let revoked = post_form(
        &gw.url("/movies/oauth/revoke"),
        Some(&basic("service", SERVICE_SECRET)),
        &[("token", &service_access)],
    )
    .await;
    assert_eq!(revoked.status, 200);

    let keys = redis.keys_and_ttls(&prefix).await;
    assert!(
        keys.len() >= 5,
        "expected sessions, refresh tokens, code, limits: {keys:?}"
    );
    let without_ttl = redis.keys_without_ttl(&prefix).await;
    assert!(
        without_ttl.is_empty(),
        "keys without a TTL: {without_ttl:?}"
    );
    let everything = redis.dump(&prefix).await;
    for secret in [
        str_field(&tokens, "refresh_token"),
        str_field(&refreshed, "refresh_token"),
        str_field(&created, "client_secret"),
        str_field(&issued, "code"),
        &service_access,
        APP_SECRET,
        ALICE_PASSWORD,
    ] {
        assert!(!everything.contains(secret), "stored in clear: {secret}");
    }
}

/// Revoking every token of a client (a per-client cutoff, docs/design.md §9f) on node A: node B
/// refuses the client's stateless tokens within 100 ms, introspection there says inactive, a node
/// started afterwards loads the cutoff, and a token issued after the revocation works everywhere.
#[tokio::test]
async fn revoking_every_token_of_a_client_on_one_node_is_refused_on_the_other_within_100ms() {
    let nodes = nodes().await;
    let old = service_token(&nodes.a).await;
    let alice = alice_tokens(&nodes.a).await;
    // Node B has validated (and cached) the token.
    assert_eq!(call(&nodes.b, "/movies/x", &old).await.status, 200);

    let revoked = nodes
        .a
        .admin_send("DELETE", "/apis/movies/clients/service/sessions", None)
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert!(
        eventually(PROPAGATION, || async {
            call(&nodes.b, "/movies/x", &old).await.status == 401
        })
        .await,
        "node B never refused the client's tokens node A revoked"
    );
    let introspected = post_form(
        &nodes.b.url("/movies/oauth/introspect"),
        Some(&basic("service", SERVICE_SECRET)),
        &[("token", &old)],
    )
    .await;
    assert_eq!(introspected.json(), json!({"active": false}));
    // Another client's session is untouched.
    let alice_access = str_field(&alice, "access_token");
    assert_eq!(call(&nodes.b, "/movies/x", alice_access).await.status, 200);

    // A node that starts now loads the cutoff from Redis.
    let c = TestGateway::start(nodes.a.config.same_files()).await;
    assert_eq!(call(&c, "/movies/x", &old).await.status, 401);
    // A fresh token, issued on B (which learnt of the cutoff by message), works on every node.
    let fresh = service_token(&nodes.b).await;
    for node in [&nodes.a, &nodes.b, &c] {
        assert_eq!(call(node, "/movies/x", &fresh).await.status, 200);
    }
}

/// `max_sessions_per_user` across nodes: alice's third session, begun on node B, ends her first one
/// (begun on node A); node A refuses its tokens within 100 ms.
#[tokio::test]
async fn the_session_cap_is_shared_by_the_nodes() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let prefix = unique_prefix();
    let config = config(&redis, &prefix, &upstream.url(), QUOTA_OF_FOUR);
    let movies = config.path().join("api-definitions/movies.yaml");
    let yaml = std::fs::read_to_string(&movies).expect("movies.yaml");
    config.api(
        "movies",
        &yaml.replace(
            "  scopes: [read, write]\n  clients:",
            "  scopes: [read, write]\n  max_sessions_per_user: 2\n  clients:",
        ),
    );
    let a = TestGateway::start(config).await;
    let b = TestGateway::start(a.config.same_files()).await;

    let first = alice_tokens(&a).await;
    let second = alice_tokens(&a).await;
    let first_access = str_field(&first, "access_token");
    assert_eq!(call(&a, "/movies/x", first_access).await.status, 200);
    let third = alice_tokens(&b).await;
    assert!(
        eventually(PROPAGATION, || async {
            call(&a, "/movies/x", first_access).await.status == 401
        })
        .await,
        "node A never refused the token of the session node B ended"
    );
    let refreshed = refresh(&a, str_field(&first, "refresh_token")).await;
    assert_eq!(refreshed.status, 400, "{}", refreshed.text());
    for tokens in [&second, &third] {
        assert_eq!(
            call(&a, "/movies/x", str_field(tokens, "access_token"))
                .await
                .status,
            200
        );
    }
    let listed = b.admin_get("/apis/movies/clients/app/sessions").await;
    assert_eq!(listed.json()["sessions"].as_array().map(Vec::len), Some(2));
}

/// A burst of client_credentials tokens leaves Redis as it found it but for counters
/// (docs/design.md §9f): no key per token.
#[tokio::test]
async fn a_burst_of_client_credentials_tokens_adds_no_redis_keys() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let prefix = unique_prefix();
    let gw = TestGateway::start(config(&redis, &prefix, &upstream.url(), QUOTA_OF_FOUR)).await;
    // The first token creates the API's counter.
    service_token(&gw).await;
    let before = redis.keys_and_ttls(&prefix).await;
    let (_, used_before) = redis_memory(&redis).await;

    const BURST: usize = 1_000;
    client_credentials_burst(
        &gw.url("/movies/oauth/token"),
        "service",
        SERVICE_SECRET,
        BURST,
        8,
    )
    .await;

    let after = redis.keys_and_ttls(&prefix).await;
    let names = |keys: &[(String, i64)]| {
        let mut names: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
        names.sort();
        names
    };
    assert_eq!(names(&after), names(&before), "keys added by the burst");
    // Counters only: the API's count of stateless tokens and the caller's address in the guessing
    // throttle (docs/design.md §9a), each one key whatever the number of tokens.
    assert_eq!(
        names(&after),
        vec![
            format!("{prefix}failures:{{client:movies|127.0.0.1}}"),
            format!("{prefix}stateless:movies"),
        ],
    );
    let (_, used_after) = redis_memory(&redis).await;
    // The count's fields change value, not size; allow for Redis's own bookkeeping.
    assert!(
        used_after.saturating_sub(used_before) < 64 * 1024,
        "Redis memory grew from {used_before} to {used_after} bytes over {BURST} tokens"
    );
    let listed = gw.admin_get("/apis/movies/clients/service/sessions").await;
    assert_eq!(listed.json()["stateless"]["issued"], BURST as u64 + 1);
}

/// `INFO memory`'s `used_memory` (and the key count, for the message).
async fn redis_memory(redis: &RedisServer) -> (u64, u64) {
    let mut conn = redis.connection().await;
    let info: String = ::redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .expect("INFO memory");
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    let keys: u64 = ::redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .expect("DBSIZE");
    (keys, used)
}
