//! One session through the admin API (docs/design.md §6): `GET /sessions/{sid}` shows the session
//! with what is left of its rate limit and quota as the proxy path counted them; `DELETE
//! /sessions/{sid}` revokes it. Over real sockets, with the in-memory store and limiter.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use common::oauth::*;
use common::*;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

const APP_SECRET: &str = "app-secret-0123456789";
const SERVICE_SECRET: &str = "service-secret-0123456789";
const ALICE_PASSWORD: &str = "alice-password";

/// `movies`: an OAuth API with a quota of 10 a day per session and no rate limit of its own.
/// Clients: `app` (password + refresh, policy `gold`, which sets a rate limit) and `service`
/// (client_credentials, no policy). User: alice. `books` accepts `movies` tokens and has its own
/// quota of 5 a day.
async fn gateway() -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("users: users.yaml\npolicies: policies.yaml\n");
    let [app, service, alice] = hashes([APP_SECRET, SERVICE_SECRET, ALICE_PASSWORD]);
    config.write(
        "users.yaml",
        &format!("- username: alice\n  password_hash: \"{alice}\"\n  scopes: [read, write]\n"),
    );
    config.write(
        "policies.yaml",
        "- id: gold\n  rate_limit: { rate: 1000, per: 1s }\n",
    );
    config.api(
        "movies",
        &format!(
            r#"listen_path: /movies/
upstream: {{ url: "{}" }}
auth: {{ type: oauth2 }}
quota: {{ max: 10, period: 1d }}
oauth:
  grant_types: [client_credentials, password, refresh_token]
  scopes: [read, write]
  clients:
    - client_id: app
      secret_hash: "{app}"
      grant_types: [password, refresh_token]
      scopes: [read, write]
      policy: gold
    - client_id: service
      secret_hash: "{service}"
      grant_types: [client_credentials]
      scopes: [read]
"#,
            upstream.url()
        ),
    );
    config.api(
        "books",
        &format!(
            "listen_path: /books/\nupstream: {{ url: \"{}\" }}\nauth: {{ type: oauth2, accept_from: [movies] }}\nquota: {{ max: 5, period: 1d }}\n",
            upstream.url()
        ),
    );
    (TestGateway::start(config).await, upstream)
}

async fn token_request(gw: &TestGateway, auth: &str, pairs: &[(&str, &str)]) -> Value {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let response = send(
        Request::post(gw.url("/movies/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", auth)
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

/// alice's tokens through `app` (a password grant: access and refresh token).
async fn password_grant(gw: &TestGateway, scope: &str) -> Value {
    token_request(
        gw,
        &basic("app", APP_SECRET),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
            ("scope", scope),
        ],
    )
    .await
}

async fn refresh(gw: &TestGateway, refresh_token: &str) -> Value {
    token_request(
        gw,
        &basic("app", APP_SECRET),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// A client_credentials access token of `service`.
async fn service_token(gw: &TestGateway) -> String {
    let tokens = token_request(
        gw,
        &basic("service", SERVICE_SECRET),
        &[("grant_type", "client_credentials")],
    )
    .await;
    text(&tokens["access_token"]).to_owned()
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

/// The `sid` claim of an access token (its payload, not verified: the gateway verifies).
fn sid_claim(access_token: &str) -> String {
    let payload = access_token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: Value = serde_json::from_slice(&bytes).expect("claims");
    text(&claims["sid"]).to_owned()
}

/// A request through the proxy to `movies` with the access token.
async fn proxied(gw: &TestGateway, access_token: &str) -> TestResponse {
    proxied_to(gw, "movies", access_token).await
}

async fn proxied_to(gw: &TestGateway, api: &str, access_token: &str) -> TestResponse {
    get_with(
        &gw.url(&format!("/{api}/items")),
        &[("authorization", &format!("Bearer {access_token}"))],
    )
    .await
}

async fn session(gw: &TestGateway, sid: &str) -> Value {
    let response = gw.admin_get(&format!("/sessions/{sid}")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("cache-control"), Some("no-store"));
    response.json()
}

fn assert_error(response: &TestResponse, status: u16, error: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.json()["error"], error, "{}", response.text());
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn session_lookup_shows_client_user_scopes_policy_and_refreshes() {
    let (gw, _upstream) = gateway().await;
    let before = unix_now();
    let tokens = password_grant(&gw, "read").await;
    let sid = sid_claim(text(&tokens["access_token"]));

    let view = session(&gw, &sid).await;
    assert_eq!(view["sid"], sid.as_str());
    assert_eq!(view["api"], "movies");
    assert_eq!(view["client_id"], "app");
    assert_eq!(view["username"], "alice");
    assert_eq!(view["grant"], "password");
    assert_eq!(view["scope"], "read");
    assert_eq!(view["scopes"], json!(["read"]));
    assert_eq!(view["policy"], "gold");
    assert_eq!(view["refresh_count"], 0);
    assert_eq!(view["last_refresh_at"], Value::Null);
    assert_eq!(view["revoked"], false);
    assert_eq!(view["active"], true);
    assert_eq!(view["limits_api"], "movies");
    let created = view["created_at"].as_u64().expect("created_at");
    assert!((before..=unix_now()).contains(&created), "{view}");
    assert!(view["expires_at"].as_u64().expect("expires_at") > created);

    // The policy's rate limit replaces the API's (none); the API's quota applies (the policy sets
    // none).
    let rate = &view["rate_limit"];
    assert_eq!(rate["rate"], 1000, "{view}");
    assert_eq!(rate["per_ms"], 1000, "{view}");
    assert_eq!(rate["source"], "policy", "{view}");
    // The in-memory limiter cannot report a rate limit's headroom without counting (null); once it
    // can, the whole budget is left.
    assert!(
        rate["remaining"].is_null() || rate["remaining"] == 1000,
        "{view}"
    );
    let quota = &view["quota"];
    assert_eq!(quota["max"], 10, "{view}");
    assert_eq!(quota["period_secs"], 86_400, "{view}");
    assert_eq!(quota["source"], "api", "{view}");
    assert_eq!(quota["remaining"], 10, "{view}");

    // A refresh is counted, and the session keeps its identity.
    let before_refresh = unix_now();
    let refreshed = refresh(&gw, text(&tokens["refresh_token"])).await;
    assert_eq!(sid_claim(text(&refreshed["access_token"])), sid);
    let view = session(&gw, &sid).await;
    assert_eq!(view["refresh_count"], 1, "{view}");
    let last = view["last_refresh_at"].as_u64().expect("last_refresh_at");
    assert!((before_refresh..=unix_now()).contains(&last), "{view}");
    assert_eq!(view["created_at"], created);
    assert_eq!(view["username"], "alice");

    let second = refresh(&gw, text(&refreshed["refresh_token"])).await;
    assert_eq!(sid_claim(text(&second["access_token"])), sid);
    assert_eq!(session(&gw, &sid).await["refresh_count"], 2);
}

#[tokio::test]
async fn session_lookup_shows_the_quota_the_proxy_path_counted() {
    let (gw, upstream) = gateway().await;
    let token = service_token(&gw).await;
    let sid = sid_claim(&token);

    let view = session(&gw, &sid).await;
    assert_eq!(view["client_id"], "service");
    assert_eq!(view["username"], Value::Null);
    assert_eq!(view["grant"], "client_credentials");
    assert_eq!(view["policy"], Value::Null);
    assert_eq!(view["rate_limit"], Value::Null, "no rate limit applies");
    assert_eq!(view["quota"]["remaining"], 10, "{view}");

    const N: u64 = 4;
    let mut last = None;
    for _ in 0..N {
        let response = proxied(&gw, &token).await;
        assert_eq!(response.status, 200, "{}", response.text());
        last = response.header("x-ratelimit-remaining").map(str::to_owned);
    }
    assert_eq!(upstream.count(), N as usize);

    let view = session(&gw, &sid).await;
    let quota = &view["quota"];
    assert_eq!(quota["remaining"], 10 - N, "{view}");
    assert_eq!(quota["max"], 10);
    assert_eq!(quota["source"], "api");
    // The same number the proxy reported on its last answer.
    assert_eq!(
        last.as_deref(),
        Some((10 - N).to_string().as_str()),
        "X-RateLimit-Remaining"
    );
    let reset = quota["reset_secs"].as_u64().expect("reset_secs");
    assert!((86_000..=86_400).contains(&reset), "{view}");

    // Looking counts nothing.
    let again = session(&gw, &sid).await;
    assert_eq!(again["quota"]["remaining"], 10 - N);
    let response = proxied(&gw, &token).await;
    assert_eq!(
        response.header("x-ratelimit-remaining"),
        Some((10 - N - 1).to_string().as_str())
    );

    // A client_credentials token is stateless (docs/design.md §9f): every token of the client
    // shares one session id and so one budget. Fetching a new token does not reset the quota.
    let other = service_token(&gw).await;
    assert_eq!(sid_claim(&other), sid);
    assert_eq!(proxied(&gw, &other).await.status, 200);
    assert_eq!(session(&gw, &sid).await["quota"]["remaining"], 10 - N - 2);
    // A user's session, even with the same client, has its own budget.
    let alice = password_grant(&gw, "read").await;
    let alice_sid = sid_claim(text(&alice["access_token"]));
    assert_ne!(alice_sid, sid);

    // Spent: the proxy refuses, and the lookup shows nothing left.
    for _ in 0..(10 - N - 2) {
        assert_eq!(proxied(&gw, &token).await.status, 200);
    }
    assert_eq!(proxied(&gw, &token).await.status, 429);
    let spent = session(&gw, &sid).await;
    assert_eq!(spent["quota"]["remaining"], 0, "{spent}");
    assert!(
        spent["quota"]["reset_secs"].as_u64().unwrap() > 0,
        "{spent}"
    );
}

#[tokio::test]
async fn api_limits_count_per_api_and_policy_limits_across_apis() {
    let (gw, _upstream) = gateway().await;
    // `service` has no policy: each API's own quota counts per session and API.
    let token = service_token(&gw).await;
    let sid = sid_claim(&token);
    for _ in 0..2 {
        assert_eq!(proxied_to(&gw, "books", &token).await.status, 200);
    }
    assert_eq!(proxied(&gw, &token).await.status, 200);
    let books = gw.admin_get(&format!("/sessions/{sid}?api=books")).await;
    assert_eq!(books.status, 200, "{}", books.text());
    let books = books.json();
    assert_eq!(books["limits_api"], "books");
    assert_eq!(books["api"], "movies", "the session's own API stays");
    assert_eq!(books["quota"]["max"], 5, "{books}");
    assert_eq!(books["quota"]["remaining"], 3, "{books}");
    assert_eq!(books["quota"]["source"], "api");
    let movies = session(&gw, &sid).await;
    assert_eq!(movies["limits_api"], "movies");
    assert_eq!(movies["quota"]["remaining"], 9, "{movies}");

    // `app`'s policy sets a limit, so its session has one budget across APIs: the quota it falls
    // back to is counted once, whichever API is called. The API's quota still sets the size.
    let tokens = password_grant(&gw, "read").await;
    let access = text(&tokens["access_token"]);
    let sid = sid_claim(access);
    assert_eq!(proxied(&gw, access).await.status, 200);
    assert_eq!(proxied_to(&gw, "books", access).await.status, 200);
    let view = session(&gw, &sid).await;
    assert_eq!(view["quota"]["remaining"], 8, "{view}");
    assert_eq!(view["quota"]["source"], "api");
    assert_eq!(view["rate_limit"]["source"], "policy");
    let at_books = gw
        .admin_get(&format!("/sessions/{sid}?api=books"))
        .await
        .json();
    assert_eq!(at_books["quota"]["max"], 5, "{at_books}");
    assert_eq!(at_books["quota"]["remaining"], 3, "{at_books}");

    // Unknown APIs and other query parameters are refused, naming the parameter.
    let unknown = gw.admin_get(&format!("/sessions/{sid}?api=nope")).await;
    assert_error(&unknown, 400, "invalid_request");
    assert!(text(&unknown.json()["error_description"]).starts_with("api: "));
    let other = gw.admin_get(&format!("/sessions/{sid}?verbose=1")).await;
    assert_error(&other, 400, "invalid_request");
    assert!(text(&other.json()["error_description"]).starts_with("verbose: "));
}

#[tokio::test]
async fn deleting_a_session_revokes_its_tokens() {
    let (gw, _upstream) = gateway().await;
    let tokens = password_grant(&gw, "read write").await;
    let access = text(&tokens["access_token"]).to_owned();
    let sid = sid_claim(&access);
    let other = password_grant(&gw, "read").await;
    let other_access = text(&other["access_token"]).to_owned();
    assert_eq!(proxied(&gw, &access).await.status, 200);

    let revoked = gw
        .admin_send("DELETE", &format!("/sessions/{sid}"), None)
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(revoked.json(), json!({"sid": sid, "revoked": true}));

    // The access token is refused at once, and the refresh token no longer works.
    let refused = proxied(&gw, &access).await;
    assert_error(&refused, 401, "invalid_token");
    let www = refused.header("www-authenticate").unwrap_or_default();
    assert!(www.contains("invalid_token"), "{www}");
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "refresh_token"),
            ("refresh_token", text(&tokens["refresh_token"])),
        ])
        .finish();
    let refresh = send(
        Request::post(gw.url("/movies/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", basic("app", APP_SECRET))
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_error(&refresh, 400, "invalid_grant");

    // The session is gone from the listing and the lookup says it was revoked.
    let listed = gw.admin_get("/apis/movies/clients/app/sessions").await;
    assert_eq!(listed.status, 200);
    let sids: Vec<Value> = listed.json()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sid"].clone())
        .collect();
    assert!(!sids.contains(&json!(sid)), "{sids:?}");
    let lookup = gw.admin_get(&format!("/sessions/{sid}")).await;
    assert_error(&lookup, 404, "not_found");
    assert!(
        text(&lookup.json()["error_description"]).contains("revoked"),
        "{}",
        lookup.text()
    );

    // Revoking again is not an error; the other session of the same client is untouched.
    let again = gw
        .admin_send("DELETE", &format!("/sessions/{sid}"), None)
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(proxied(&gw, &other_access).await.status, 200);
    assert_eq!(
        session(&gw, &sid_claim(&other_access)).await["active"],
        true
    );
}

#[tokio::test]
async fn unknown_sessions_are_404() {
    let (gw, _upstream) = gateway().await;
    for sid in ["nope", "a%2Fb", "session%3Anope"] {
        let lookup = gw.admin_get(&format!("/sessions/{sid}")).await;
        assert_error(&lookup, 404, "not_found");
        assert!(
            text(&lookup.json()["error_description"]).contains("no session"),
            "{}",
            lookup.text()
        );
        let delete = gw
            .admin_send("DELETE", &format!("/sessions/{sid}"), None)
            .await;
        assert_error(&delete, 404, "not_found");
    }
    let wrong_method = gw.admin_send("PUT", "/sessions/nope", None).await;
    assert_error(&wrong_method, 405, "method_not_allowed");
    assert_eq!(wrong_method.header("allow"), Some("GET, DELETE"));
    // No listing of every session.
    assert_error(&gw.admin_get("/sessions").await, 404, "not_found");
}

#[tokio::test]
async fn the_admin_secret_is_required() {
    let (gw, _upstream) = gateway().await;
    let token = service_token(&gw).await;
    let sid = sid_claim(&token);
    let path = format!("/sessions/{sid}");
    for auth in [None, Some("Bearer wrong-secret"), Some("Basic abc")] {
        for method in ["GET", "DELETE"] {
            let mut req = Request::builder().method(method).uri(gw.admin_url(&path));
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            let response = send(req.body(Full::new(Bytes::new())).unwrap()).await;
            assert_error(&response, 401, "unauthorized");
            assert_eq!(
                response.header("www-authenticate"),
                Some("Bearer realm=\"tollgate-admin\"")
            );
            assert!(!response.text().contains("service"), "{}", response.text());
        }
    }
    // Nothing was revoked.
    assert_eq!(proxied(&gw, &token).await.status, 200);
    assert_eq!(session(&gw, &sid).await["active"], true);
}

#[tokio::test]
async fn a_client_credentials_session_is_stateless() {
    let (gw, _upstream) = gateway().await;
    let mut exp = 0;
    let mut sid = String::new();
    for _ in 0..3 {
        let issued = token_request(
            &gw,
            &basic("service", SERVICE_SECRET),
            &[("grant_type", "client_credentials")],
        )
        .await;
        assert!(issued["refresh_token"].is_null());
        let claims = jwt_claims(issued["access_token"].as_str().expect("access_token"));
        sid = claims["sid"].as_str().expect("sid").to_owned();
        exp = claims["exp"].as_u64().expect("exp");
    }
    // Nothing stored per token: the view is built from the id and the client's count, and ends with
    // the latest token (plus the validation leeway).
    let view = gw.admin_get(&format!("/sessions/{sid}")).await.json();
    assert_eq!(view["stateless"], true, "{view}");
    assert_eq!(view["issued"], 3, "{view}");
    assert_eq!(view["client_id"], "service", "{view}");
    assert_eq!(view["grant"], "client_credentials", "{view}");
    assert_eq!(view["active"], true, "{view}");
    let expires_at = view["expires_at"].as_u64().expect("expires_at");
    assert!(
        (exp..=exp + 5).contains(&expires_at),
        "session expires at {expires_at}, token at {exp}"
    );
    let listed = gw.admin_get("/apis/movies/clients/service/sessions").await;
    assert_eq!(listed.json()["sessions"], json!([]), "{}", listed.text());
    assert_eq!(listed.json()["stateless"]["sid"], sid.as_str());
    // There is no record to delete: the answer says what to do instead.
    let delete = gw
        .admin_send("DELETE", &format!("/sessions/{sid}"), None)
        .await;
    assert_error(&delete, 400, "invalid_request");
    assert!(delete.text().contains("stateless"), "{}", delete.text());

    // A password session keeps its refresh-token lifetime.
    let alice = password_grant(&gw, "read").await;
    let claims = jwt_claims(alice["access_token"].as_str().expect("access_token"));
    let view = gw
        .admin_get(&format!(
            "/sessions/{}",
            claims["sid"].as_str().expect("sid")
        ))
        .await
        .json();
    assert!(view["expires_at"].as_u64().expect("expires_at") > claims["exp"].as_u64().unwrap() + 5);
}
