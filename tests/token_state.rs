//! Token state that does not grow with traffic (docs/design.md §9f), with the in-memory store over
//! real sockets: stateless client_credentials tokens and their revocation (one token, or every
//! token of a client by a per-client cutoff), the cap on sessions per user, and the per-client
//! limit on the token endpoint. The same behaviours across two nodes on Redis are in
//! `redis_nodes.rs`; memory per token is measured in `token_memory.rs`.

mod common;

use common::oauth::*;
use common::*;
use serde_json::{Value, json};

const APP_SECRET: &str = "app-secret-0123456789";
const SERVICE_SECRET: &str = "service-secret-0123456789";
const ALICE_PASSWORD: &str = "alice-password";

/// `movies` with `oauth_extra` added to its `oauth` block. Clients: `app` (password + refresh),
/// `service` and `batch` (client_credentials), `kiosk` (password only: its tokens are stateless).
/// User: alice.
async fn gateway(oauth_extra: &str) -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("users: users.yaml\n");
    let [app, service, alice] = hashes([APP_SECRET, SERVICE_SECRET, ALICE_PASSWORD]);
    config.write(
        "users.yaml",
        &format!("- username: alice\n  password_hash: \"{alice}\"\n  scopes: [read, write]\n"),
    );
    config.api(
        "movies",
        &format!(
            r#"listen_path: /movies/
upstream: {{ url: "{}" }}
auth: {{ type: oauth2 }}
oauth:
  grant_types: [client_credentials, password, refresh_token]
  scopes: [read, write]
{oauth_extra}  clients:
    - {{ client_id: app, secret_hash: "{app}", grant_types: [password, refresh_token], scopes: [read, write] }}
    - {{ client_id: service, secret_hash: "{service}", grant_types: [client_credentials], scopes: [read] }}
    - {{ client_id: batch, secret_hash: "{service}", grant_types: [client_credentials], scopes: [read] }}
    - {{ client_id: kiosk, secret_hash: "{app}", grant_types: [password], scopes: [read] }}
"#,
            upstream.url()
        ),
    );
    (TestGateway::start(config).await, upstream)
}

async fn token(
    gw: &TestGateway,
    client: &str,
    secret: &str,
    pairs: &[(&str, &str)],
) -> TestResponse {
    post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic(client, secret)),
        pairs,
    )
    .await
}

async fn client_token(gw: &TestGateway, client: &str) -> String {
    let response = token(
        gw,
        client,
        SERVICE_SECRET,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    text(&response.json()["access_token"]).to_owned()
}

async fn alice_signs_in(gw: &TestGateway, client: &str) -> Value {
    let response = token(
        gw,
        client,
        APP_SECRET,
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

async fn call(gw: &TestGateway, access_token: &str) -> http::StatusCode {
    get_with(
        &gw.url("/movies/items"),
        &[("authorization", &format!("Bearer {access_token}"))],
    )
    .await
    .status
}

async fn introspect(gw: &TestGateway, token: &str) -> Value {
    let response = post_form(
        &gw.url("/movies/oauth/introspect"),
        Some(&basic("service", SERVICE_SECRET)),
        &[("token", token)],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

async fn metric(gw: &TestGateway, name: &str) -> u64 {
    let text = gw.admin_get("/metrics").await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

#[tokio::test]
async fn client_credentials_tokens_are_stateless_and_counted_per_client() {
    let (gw, _upstream) = gateway("").await;
    let first = client_token(&gw, "service").await;
    let second = client_token(&gw, "service").await;
    assert_eq!(call(&gw, &first).await, 200);
    assert_eq!(call(&gw, &second).await, 200);
    // One session id per client: rate limits and quotas cannot be reset by fetching a new token.
    let sid = text(&jwt_claims(&first)["sid"]).to_owned();
    assert_eq!(jwt_claims(&second)["sid"], sid.as_str());
    assert_ne!(
        jwt_claims(&client_token(&gw, "batch").await)["sid"],
        sid.as_str()
    );

    let listed = gw.admin_get("/apis/movies/clients/service/sessions").await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["sessions"], json!([]), "no row per token");
    assert_eq!(listed.json()["stateless"]["issued"], 2);
    assert_eq!(listed.json()["stateless"]["sid"], sid.as_str());
    assert_eq!(
        metric(&gw, "tollgate_stateless_tokens_issued_total").await,
        3
    );
}

#[tokio::test]
async fn a_password_grant_without_refresh_is_stateless_too() {
    let (gw, _upstream) = gateway("").await;
    let kiosk = alice_signs_in(&gw, "kiosk").await;
    assert!(kiosk["refresh_token"].is_null());
    let access = text(&kiosk["access_token"]).to_owned();
    assert_eq!(call(&gw, &access).await, 200);
    let again = alice_signs_in(&gw, "kiosk").await;
    assert_eq!(
        jwt_claims(text(&again["access_token"]))["sid"],
        jwt_claims(&access)["sid"]
    );
    let listed = gw.admin_get("/apis/movies/clients/kiosk/sessions").await;
    assert_eq!(listed.json()["sessions"], json!([]));
    assert_eq!(listed.json()["stateless"]["issued"], 2);
    // The session view reads the names back from the id.
    let sid = text(&jwt_claims(&access)["sid"]).to_owned();
    let view = gw.admin_get(&format!("/sessions/{sid}")).await;
    assert_eq!(view.status, 200, "{}", view.text());
    assert_eq!(view.json()["username"], "alice");
    assert_eq!(view.json()["client_id"], "kiosk");
    assert_eq!(view.json()["grant"], "password");

    // With a refresh token the session is stored and listed as before.
    alice_signs_in(&gw, "app").await;
    let listed = gw.admin_get("/apis/movies/clients/app/sessions").await;
    assert_eq!(listed.json()["sessions"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn revoking_one_stateless_token_leaves_the_others() {
    let (gw, _upstream) = gateway("").await;
    let revoked = client_token(&gw, "service").await;
    let kept = client_token(&gw, "service").await;
    let response = post_form(
        &gw.url("/movies/oauth/revoke"),
        Some(&basic("service", SERVICE_SECRET)),
        &[("token", &revoked)],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(call(&gw, &revoked).await, 401);
    assert_eq!(introspect(&gw, &revoked).await, json!({"active": false}));
    assert_eq!(call(&gw, &kept).await, 200);
    assert_eq!(introspect(&gw, &kept).await["active"], true);
}

#[tokio::test]
async fn revoking_every_token_of_a_client_sets_a_cutoff() {
    let (gw, _upstream) = gateway("").await;
    let old = client_token(&gw, "batch").await;
    let other_client = client_token(&gw, "service").await;
    let alice = alice_signs_in(&gw, "app").await;
    let alice_access = text(&alice["access_token"]).to_owned();

    let revoked = gw
        .admin_send("DELETE", "/apis/movies/clients/batch/sessions", None)
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let not_before = revoked.json()["not_before"].as_u64().expect("not_before");
    assert!(jwt_claims(&old)["iat"].as_u64().expect("iat") < not_before);

    assert_eq!(call(&gw, &old).await, 401);
    assert_eq!(introspect(&gw, &old).await, json!({"active": false}));
    // Other clients are untouched.
    assert_eq!(call(&gw, &other_client).await, 200);
    assert_eq!(call(&gw, &alice_access).await, 200);
    // A token issued after the revocation works, even within the same second: the token endpoint
    // waits for the next second rather than issue a token the cutoff would catch.
    let fresh = client_token(&gw, "batch").await;
    assert!(jwt_claims(&fresh)["iat"].as_u64().expect("iat") >= not_before);
    assert_eq!(call(&gw, &fresh).await, 200);
    assert_eq!(introspect(&gw, &fresh).await["active"], true);
    let listed = gw.admin_get("/apis/movies/clients/batch/sessions").await;
    assert_eq!(listed.json()["stateless"]["not_before"], not_before);
}

#[tokio::test]
async fn a_user_beyond_the_session_cap_loses_the_oldest_session() {
    let (gw, _upstream) = gateway("  max_sessions_per_user: 2\n").await;
    let first = alice_signs_in(&gw, "app").await;
    let second = alice_signs_in(&gw, "app").await;
    assert_eq!(call(&gw, text(&first["access_token"])).await, 200);

    let third = alice_signs_in(&gw, "app").await;
    // The oldest session ended like a revocation: its access token is refused at once and its
    // refresh token no longer works.
    assert_eq!(call(&gw, text(&first["access_token"])).await, 401);
    assert_eq!(
        introspect(&gw, text(&first["refresh_token"])).await,
        json!({"active": false})
    );
    let refreshed = token(
        &gw,
        "app",
        APP_SECRET,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", text(&first["refresh_token"])),
        ],
    )
    .await;
    assert_eq!(refreshed.status, 400, "{}", refreshed.text());
    // The two newest live on.
    for tokens in [&second, &third] {
        assert_eq!(call(&gw, text(&tokens["access_token"])).await, 200);
    }
    let listed = gw.admin_get("/apis/movies/clients/app/sessions").await;
    assert_eq!(listed.json()["sessions"].as_array().map(Vec::len), Some(2));
    assert_eq!(metric(&gw, "tollgate_sessions_capped_total").await, 1);
    // Refreshing keeps a session (it is not a new one).
    let refreshed = token(
        &gw,
        "app",
        APP_SECRET,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", text(&second["refresh_token"])),
        ],
    )
    .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    assert_eq!(call(&gw, text(&third["access_token"])).await, 200);
}

#[tokio::test]
async fn the_session_cap_rejects_zero() {
    let config = ConfigDir::new("");
    config.api(
        "movies",
        "listen_path: /movies/\nupstream: { url: \"http://127.0.0.1:9\" }\nauth: { type: oauth2 }\noauth:\n  grant_types: [client_credentials]\n  max_sessions_per_user: 0\n",
    );
    let err = TestGateway::try_start(config)
        .await
        .err()
        .expect("max_sessions_per_user: 0 is refused");
    assert!(err.contains("movies.yaml"), "{err}");
    assert!(err.contains("oauth.max_sessions_per_user"), "{err}");
}

#[tokio::test]
async fn the_token_endpoint_limits_each_client() {
    let (gw, _upstream) = gateway("  token_rate_limit: { rate: 3, per: 1m }\n").await;
    // A wrong secret is refused before it is counted: nobody spends another client's budget.
    let wrong = token(
        &gw,
        "service",
        "not-the-secret",
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    for _ in 0..3 {
        client_token(&gw, "service").await;
    }
    let limited = token(
        &gw,
        "service",
        SERVICE_SECRET,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(limited.status, 429, "{}", limited.text());
    let retry_after: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert!(
        limited.json()["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("token requests")),
        "{}",
        limited.text()
    );
    // Another client has its own budget.
    client_token(&gw, "batch").await;
    assert_eq!(
        metric(&gw, "tollgate_token_requests_limited_total").await,
        1
    );
}
