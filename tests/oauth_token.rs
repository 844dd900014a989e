//! The token, revocation, introspection, tokeninfo, metadata and JWKS endpoints over real sockets,
//! including the TAG and Axway seed flows.

mod common;

use base64::Engine as _;
use bytes::Bytes;
use common::oauth::*;
use common::*;
use http::Request;
use http_body_util::Full;

const SERVICE_SECRET: &str = "service-secret-0123456789";
const APP_SECRET: &str = "app secret:with+specials";
const OTHER_SECRET: &str = "other-secret-0123456789";
const ALICE_PASSWORD: &str = "alice-password";

fn movies_api(upstream: &str, oauth_extra: &str) -> String {
    let [service, app, other] = hashes([SERVICE_SECRET, APP_SECRET, OTHER_SECRET]);
    format!(
        r#"listen_path: /movies/
upstream: {{ url: "{upstream}" }}
auth: {{ type: oauth2 }}
oauth:
  grant_types: [authorization_code, client_credentials, password, refresh_token]
  scopes: [read, write]
{oauth_extra}  clients:
    - client_id: service
      secret_hash: "{service}"
      grant_types: [client_credentials]
      scopes: [read, write]
      claims: {{ tier: gold }}
    - client_id: app
      secret_hash: "{app}"
      grant_types: [password, refresh_token]
      scopes: [read, write]
    - client_id: other
      secret_hash: "{other}"
      grant_types: [password, refresh_token, client_credentials]
      scopes: [read]
    - client_id: public-app
      grant_types: [password, refresh_token]
      scopes: [read]
    - client_id: web
      secret_hash: "{app}"
      redirect_uris: [http://127.0.0.1:3000/cb]
      grant_types: [authorization_code, refresh_token]
      scopes: [read, write]
    - client_id: web2
      secret_hash: "{app}"
      redirect_uris: [http://127.0.0.1:3000/cb]
      grant_types: [authorization_code, refresh_token]
      scopes: [read, write]
"#
    )
}

async fn oauth_gateway(oauth_extra: &str) -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("users: users.yaml\n");
    let alice = hashed(ALICE_PASSWORD);
    config.write(
        "users.yaml",
        &format!(
            "- username: alice\n  password_hash: \"{alice}\"\n  scopes: [read, write]\n  claims: {{ email: alice@example.com }}\n\
             - username: bob\n  password_hash: \"{alice}\"\n  scopes: [read]\n  disabled: true\n"
        ),
    );
    config.api("movies", &movies_api(&upstream.url(), oauth_extra));
    config.api(
        "books",
        &format!(
            "listen_path: /books/\nupstream: {{ url: \"{}\" }}\noauth:\n  grant_types: [client_credentials]\n  scopes: [read]\n  clients:\n    - client_id: service\n      secret_hash: \"{}\"\n      grant_types: [client_credentials]\n      scopes: [read]\n",
            upstream.url(),
            hashed(SERVICE_SECRET)
        ),
    );
    (TestGateway::start(config).await, upstream)
}

async fn password_grant(gw: &TestGateway, scope: Option<&str>) -> serde_json::Value {
    let mut pairs = vec![
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", ALICE_PASSWORD),
    ];
    if let Some(scope) = scope {
        pairs.push(("scope", scope));
    }
    let response = post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("app", APP_SECRET)),
        &pairs,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

async fn refresh(gw: &TestGateway, token: &str) -> TestResponse {
    post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("app", APP_SECRET)),
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

async fn introspect(gw: &TestGateway, token: &str) -> serde_json::Value {
    let response = post_form(
        &gw.url("/movies/oauth/introspect"),
        Some(&basic("service", SERVICE_SECRET)),
        &[("token", token)],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_no_store(&response);
    response.json()
}

#[tokio::test]
async fn client_credentials_issues_an_rfc9068_access_token() {
    let (gw, _upstream) = oauth_gateway("").await;
    let response = post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("service", SERVICE_SECRET)),
        &[("grant_type", "client_credentials"), ("scope", "read")],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_no_store(&response);
    let body = response.json();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["scope"], "read");
    assert_eq!(body["expires_in"], 1800);
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token for client_credentials"
    );
    let token = body["access_token"].as_str().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    let kid = header["kid"].as_str().unwrap().to_string();
    let c = jwt_claims(token);
    assert_eq!(c["iss"], "http://127.0.0.1:8080/movies");
    assert_eq!(c["sub"], "service");
    assert_eq!(c["aud"], "movies");
    assert_eq!(c["client_id"], "service");
    assert_eq!(c["tier"], "gold", "client claims are included");
    for claim in ["exp", "iat", "nbf"] {
        assert!(c[claim].is_u64(), "{claim}");
    }
    assert!(c["jti"].is_string() && c["sid"].is_string());

    // The token verifies with the published JWKS.
    let jwks = get(&gw.url("/.well-known/jwks.json")).await.json();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("the token's kid is published");
    assert_eq!(jwk["use"], "sig");
    let key: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&key).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["movies"]);
    validation.set_issuer(&["http://127.0.0.1:8080/movies"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation)
        .expect("verifies with JWKS");
    // The API-scoped JWKS location serves the same document.
    assert_eq!(
        get(&gw.url("/movies/.well-known/jwks.json")).await.json(),
        jwks
    );
}

#[tokio::test]
async fn client_secret_in_the_form_works_too() {
    let (gw, _upstream) = oauth_gateway("").await;
    let response = post_form(
        &gw.url("/movies/oauth/token"),
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "service"),
            ("client_secret", SERVICE_SECRET),
        ],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json()["scope"],
        "read write",
        "no scope requested → the client's scopes"
    );
}

#[tokio::test]
async fn wrong_secrets_are_invalid_client() {
    let (gw, _upstream) = oauth_gateway("").await;
    let url = gw.url("/movies/oauth/token");
    let response = post_form(
        &url,
        Some(&basic("service", "wrong")),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_oauth_error(
        &response,
        401,
        "invalid_client",
        Said::Exactly("client authentication failed"),
    );
    assert!(
        response
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );

    let response = post_form(
        &url,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "service"),
            ("client_secret", "wrong"),
        ],
    )
    .await;
    assert_oauth_error(
        &response,
        401,
        "invalid_client",
        Said::Exactly("client authentication failed"),
    );

    let response = post_form(
        &url,
        Some(&basic("nobody", "x")),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_oauth_error(
        &response,
        401,
        "invalid_client",
        Said::Exactly("client authentication failed"),
    );

    // Nothing at all: 401 with a Basic challenge.
    let response = post_form(&url, None, &[("grant_type", "client_credentials")]).await;
    assert_oauth_error(
        &response,
        401,
        "invalid_client",
        Said::Exactly("client authentication failed"),
    );
    assert!(response.header("www-authenticate").is_some());
}

#[tokio::test]
async fn the_token_endpoint_refuses_malformed_requests() {
    let (gw, _upstream) = oauth_gateway("").await;
    let url = gw.url("/movies/oauth/token");
    let service = basic("service", SERVICE_SECRET);

    let response = get(&url).await;
    assert_eq!(response.status, 405);

    let response = post_form(&url, Some(&service), &[]).await;
    assert_oauth_error(
        &response,
        400,
        "invalid_request",
        Said::Exactly("the grant_type parameter is missing"),
    );

    let response = post_form(
        &url,
        Some(&service),
        &[
            ("grant_type", "client_credentials"),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    assert_oauth_error(
        &response,
        400,
        "invalid_request",
        Said::Exactly("the grant_type parameter is repeated"),
    );

    let response = post_form(&url, Some(&service), &[("grant_type", "urn:nope")]).await;
    assert_oauth_error(
        &response,
        400,
        "unsupported_grant_type",
        Said::Exactly("unsupported grant_type 'urn:nope'"),
    );

    let response = post_form(
        &url,
        Some(&service),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
        ],
    )
    .await;
    assert_oauth_error(
        &response,
        400,
        "unauthorized_client",
        Said::Exactly("the client may not use the grant type password"),
    );

    let response = post_form(
        &url,
        Some(&basic("other", OTHER_SECRET)),
        &[("grant_type", "client_credentials"), ("scope", "write")],
    )
    .await;
    assert_oauth_error(
        &response,
        400,
        "invalid_scope",
        Said::Exactly("scope 'write' is not allowed for this client"),
    );

    // Credentials in the query string.
    let response = post_form(
        &format!("{url}?client_id=service&client_secret={SERVICE_SECRET}"),
        None,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_oauth_error(
        &response,
        400,
        "invalid_request",
        Said::Exactly("client_id must be sent in the request body, not in the URL"),
    );

    // Basic plus a different client_id in the body.
    let response = post_form(
        &url,
        Some(&service),
        &[("grant_type", "client_credentials"), ("client_id", "other")],
    )
    .await;
    assert_oauth_error(
        &response,
        400,
        "invalid_request",
        Said::Exactly("client_id in the body differs from HTTP Basic"),
    );
    // Basic plus the same client_id is fine.
    let response = post_form(
        &url,
        Some(&service),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "service"),
        ],
    )
    .await;
    assert_eq!(response.status, 200);

    // A grant the API does not enable.
    let response = post_form(
        &gw.url("/books/oauth/token"),
        Some(&basic("service", SERVICE_SECRET)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
        ],
    )
    .await;
    assert_oauth_error(
        &response,
        400,
        "unauthorized_client",
        Said::Exactly("the grant type password is not enabled for this API"),
    );
}

#[tokio::test]
async fn password_grant_with_user_claims_and_narrowed_scope() {
    let (gw, _upstream) = oauth_gateway("").await;
    let body = password_grant(&gw, Some("read")).await;
    assert_eq!(body["scope"], "read");
    assert!(
        body["refresh_token"].as_str().unwrap().len() >= 43,
        "≥ 256 bits"
    );
    let c = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["email"], "alice@example.com");

    let url = gw.url("/movies/oauth/token");
    let wrong = post_form(
        &url,
        Some(&basic("app", APP_SECRET)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "nope"),
        ],
    )
    .await;
    assert_oauth_error(
        &wrong,
        400,
        "invalid_grant",
        Said::Exactly("invalid username or password"),
    );
    let disabled = post_form(
        &url,
        Some(&basic("app", APP_SECRET)),
        &[
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", ALICE_PASSWORD),
        ],
    )
    .await;
    assert_oauth_error(
        &disabled,
        400,
        "invalid_grant",
        Said::Exactly("invalid username or password"),
    );
    // A public client identifies itself with client_id only.
    let public = post_form(
        &url,
        None,
        &[
            ("grant_type", "password"),
            ("client_id", "public-app"),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
        ],
    )
    .await;
    assert_eq!(public.status, 200, "{}", public.text());
    assert_eq!(public.json()["scope"], "read");
}

#[tokio::test]
async fn repeated_failed_passwords_are_throttled() {
    let (gw, _upstream) = oauth_gateway("").await;
    let url = gw.url("/movies/oauth/token");
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = post_form(
            &url,
            Some(&basic("app", APP_SECRET)),
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "wrong"),
            ],
        )
        .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(&statuses[..5], &[400; 5]);
    assert_eq!(statuses[5], 429);
    // Even the right password is refused while throttled.
    let r = post_form(
        &url,
        Some(&basic("app", APP_SECRET)),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
        ],
    )
    .await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
}

#[tokio::test]
async fn tag_flow_password_introspect_refresh_reuse_revoke() {
    let (gw, _upstream) = oauth_gateway("").await;
    let first = password_grant(&gw, None).await;
    let access = first["access_token"].as_str().unwrap();
    let rt1 = first["refresh_token"].as_str().unwrap();

    let info = introspect(&gw, access).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["username"], "alice");
    assert_eq!(info["client_id"], "app");
    assert_eq!(info["token_type"], "bearer");
    for field in ["scope", "sub", "aud", "iss", "exp", "iat", "nbf", "jti"] {
        assert!(info.get(field).is_some(), "{field} missing: {info}");
    }

    let second = refresh(&gw, rt1).await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_no_store(&second);
    let second = second.json();
    let rt2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(rt1, rt2);
    let access2 = second["access_token"].as_str().unwrap();
    let (c1, c2) = (jwt_claims(access), jwt_claims(access2));
    for kept in ["sub", "client_id", "aud", "iss", "sid"] {
        assert_eq!(c1[kept], c2[kept], "{kept}");
    }
    assert_ne!(c1["jti"], c2["jti"]);

    // RT1 again: invalid_grant, and the whole session (RT2 and its access tokens) is revoked.
    let reuse = refresh(&gw, rt1).await;
    assert_oauth_error(
        &reuse,
        400,
        "invalid_grant",
        Said::Exactly("the refresh token was already used"),
    );
    assert_oauth_error(
        &refresh(&gw, rt2).await,
        400,
        "invalid_grant",
        Said::Exactly("invalid refresh token"),
    );
    assert_eq!(
        introspect(&gw, access2).await,
        serde_json::json!({"active": false})
    );
    assert_eq!(
        introspect(&gw, access).await,
        serde_json::json!({"active": false})
    );
}

#[tokio::test]
async fn revoking_a_refresh_token_ends_the_session() {
    let (gw, _upstream) = oauth_gateway("").await;
    let tokens = password_grant(&gw, None).await;
    let access = tokens["access_token"].as_str().unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap();
    let revoke = post_form(
        &gw.url("/movies/oauth/revoke"),
        Some(&basic("app", APP_SECRET)),
        &[("token", rt), ("token_type_hint", "access_token")],
    )
    .await;
    assert_eq!(revoke.status, 200);
    assert_eq!(
        introspect(&gw, access).await,
        serde_json::json!({"active": false})
    );
    assert_eq!(
        introspect(&gw, rt).await,
        serde_json::json!({"active": false})
    );
    assert_oauth_error(
        &refresh(&gw, rt).await,
        400,
        "invalid_grant",
        Said::Exactly("invalid refresh token"),
    );
}

#[tokio::test]
async fn revoking_an_access_token_and_other_revocation_rules() {
    let (gw, _upstream) = oauth_gateway("").await;
    let tokens = password_grant(&gw, None).await;
    let access = tokens["access_token"].as_str().unwrap();
    let url = gw.url("/movies/oauth/revoke");

    // Another client's token: 200, and the token stays valid.
    let r = post_form(
        &url,
        Some(&basic("other", OTHER_SECRET)),
        &[("token", access)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(introspect(&gw, access).await["active"], true);

    // Unknown and garbage tokens: 200.
    for token in ["garbage", "a.b.c", "x"] {
        let r = post_form(&url, Some(&basic("app", APP_SECRET)), &[("token", token)]).await;
        assert_eq!(r.status, 200, "{token}");
    }
    // No token: invalid_request. Wrong client secret: invalid_client.
    assert_oauth_error(
        &post_form(&url, Some(&basic("app", APP_SECRET)), &[]).await,
        400,
        "invalid_request",
        Said::Exactly("the token parameter is missing"),
    );
    assert_oauth_error(
        &post_form(&url, Some(&basic("app", "nope")), &[("token", access)]).await,
        401,
        "invalid_client",
        Said::Exactly("client authentication failed"),
    );

    // The owner revokes it (with a wrong hint, which is only a hint).
    let r = post_form(
        &url,
        Some(&basic("app", APP_SECRET)),
        &[("token", access), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        introspect(&gw, access).await,
        serde_json::json!({"active": false})
    );
    // The refresh token of the session still works: only that access token was revoked.
    assert_eq!(
        refresh(&gw, tokens["refresh_token"].as_str().unwrap())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn introspection_requires_a_confidential_caller() {
    let (gw, _upstream) = oauth_gateway("").await;
    let tokens = password_grant(&gw, None).await;
    let access = tokens["access_token"].as_str().unwrap();
    let url = gw.url("/movies/oauth/introspect");
    assert_eq!(
        post_form(&url, None, &[("token", access)]).await.status,
        401
    );
    assert_eq!(
        post_form(&url, Some(&basic("app", "wrong")), &[("token", access)])
            .await
            .status,
        401
    );
    assert_eq!(
        post_form(
            &url,
            None,
            &[("token", access), ("client_id", "public-app")]
        )
        .await
        .status,
        401
    );
    // The admin secret as a bearer token is accepted (operators' tools).
    let admin = post_form(
        &url,
        Some(&format!("Bearer {ADMIN_SECRET}")),
        &[("token", access)],
    )
    .await;
    assert_eq!(admin.status, 200);
    assert_eq!(admin.json()["active"], true);
    // Anything but the exact admin secret is refused: a prefix, a longer value, another case.
    let shorter = &ADMIN_SECRET[..ADMIN_SECRET.len() - 1];
    let longer = format!("{ADMIN_SECRET}x");
    let upper = ADMIN_SECRET.to_uppercase();
    for wrong in [shorter, longer.as_str(), upper.as_str(), ""] {
        let refused = post_form(&url, Some(&format!("Bearer {wrong}")), &[("token", access)]).await;
        assert_eq!(refused.status, 401, "Bearer {wrong}: {}", refused.text());
    }
    // No token.
    assert_oauth_error(
        &post_form(&url, Some(&basic("app", APP_SECRET)), &[]).await,
        400,
        "invalid_request",
        Said::Exactly("the token parameter is missing"),
    );
    // Garbage, foreign (another API's token) → exactly {"active": false}.
    assert_eq!(
        introspect(&gw, "garbage").await,
        serde_json::json!({"active": false})
    );
    let books = post_form(
        &gw.url("/books/oauth/token"),
        Some(&basic("service", SERVICE_SECRET)),
        &[("grant_type", "client_credentials")],
    )
    .await
    .json();
    assert_eq!(
        introspect(&gw, books["access_token"].as_str().unwrap()).await,
        serde_json::json!({"active": false})
    );
    // A refresh token introspects as active with its own type.
    let rt = introspect(&gw, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(rt["active"], true);
    assert_eq!(rt["token_type"], "refresh_token");
}

#[tokio::test]
async fn refresh_rules_scope_other_client_and_limits() {
    let (gw, _upstream) = oauth_gateway("  refresh_token: { ttl: 30d, max_refreshes: 2 }\n").await;
    let tokens = password_grant(&gw, Some("read write")).await;
    let rt = tokens["refresh_token"].as_str().unwrap().to_string();
    let url = gw.url("/movies/oauth/token");

    // Another client's refresh token.
    let r = post_form(
        &url,
        Some(&basic("other", OTHER_SECRET)),
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
    )
    .await;
    assert_oauth_error(
        &r,
        400,
        "invalid_grant",
        Said::Exactly("the refresh token was issued to another client"),
    );
    // Narrowing works and shows in the new access token; widening is invalid_scope.
    let narrowed = post_form(
        &url,
        Some(&basic("app", APP_SECRET)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt),
            ("scope", "read"),
        ],
    )
    .await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.text());
    let narrowed = narrowed.json();
    assert_eq!(narrowed["scope"], "read");
    assert_eq!(
        jwt_claims(narrowed["access_token"].as_str().unwrap())["scope"],
        "read"
    );
    let rt2 = narrowed["refresh_token"].as_str().unwrap().to_string();
    let wider = post_form(
        &url,
        Some(&basic("app", APP_SECRET)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt2),
            ("scope", "read write"),
        ],
    )
    .await;
    assert_oauth_error(
        &wider,
        400,
        "invalid_scope",
        Said::Exactly("scope 'write' was not granted to this session"),
    );
    // max_refreshes: 2 → the second refresh works, the third is refused.
    let third = refresh(&gw, &rt2).await;
    assert_eq!(third.status, 200, "{}", third.text());
    let rt3 = third.json()["refresh_token"].as_str().unwrap().to_string();
    assert_oauth_error(
        &refresh(&gw, &rt3).await,
        400,
        "invalid_grant",
        Said::Exactly("the refresh limit of this session is reached"),
    );
}

#[tokio::test]
async fn no_refresh_tokens_when_max_refreshes_is_zero() {
    let (gw, _upstream) = oauth_gateway("  refresh_token: { ttl: 30d, max_refreshes: 0 }\n").await;
    let tokens = password_grant(&gw, None).await;
    assert!(tokens.get("refresh_token").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_refreshes_of_one_token_have_exactly_one_winner() {
    let (gw, _upstream) = oauth_gateway("").await;
    let tokens = password_grant(&gw, None).await;
    let rt = tokens["refresh_token"].as_str().unwrap().to_string();
    let url = gw.url("/movies/oauth/token");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (url, rt) = (url.clone(), rt.clone());
            tokio::spawn(async move {
                post_form(
                    &url,
                    Some(&basic("app", APP_SECRET)),
                    &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
                )
                .await
                .status
                .as_u16()
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        let status = task.await.unwrap();
        assert!(status == 200 || status == 400, "{status}");
        ok += usize::from(status == 200);
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn axway_tokeninfo() {
    let (gw, _upstream) = oauth_gateway("").await;
    let tokens = password_grant(&gw, Some("read")).await;
    let access = tokens["access_token"].as_str().unwrap();
    let info = get(&gw.url(&format!("/movies/oauth/tokeninfo?access_token={access}"))).await;
    assert_eq!(info.status, 200, "{}", info.text());
    let info = info.json();
    assert_eq!(info["audience"], "app");
    assert_eq!(info["user_id"], "alice");
    assert_eq!(info["scope"], "read");
    let expires_in = info["expires_in"].as_u64().unwrap();
    assert!(expires_in > 1700 && expires_in <= 1800);

    let bad = get(&gw.url("/movies/oauth/tokeninfo?access_token=nope")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].is_string() && bad.json()["error_description"].is_string());
    let missing = get(&gw.url("/movies/oauth/tokeninfo")).await;
    assert_eq!(missing.status, 400);
}

#[tokio::test]
async fn rfc8414_metadata_at_both_locations() {
    let (gw, _upstream) = oauth_gateway("").await;
    let a = get(&gw.url("/movies/.well-known/oauth-authorization-server")).await;
    let b = get(&gw.url("/.well-known/oauth-authorization-server/movies")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), b.json());
    let m = a.json();
    assert_eq!(m["issuer"], "http://127.0.0.1:8080/movies");
    assert_eq!(
        m["token_endpoint"],
        "http://127.0.0.1:8080/movies/oauth/token"
    );
    assert_eq!(
        m["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert_eq!(
        get(&gw.url("/.well-known/oauth-authorization-server/nothing"))
            .await
            .status,
        404
    );
}

/// A code for `web`, minted through the admin endpoint an external IdP uses.
async fn code_for_web(gw: &TestGateway, challenge: &str) -> String {
    let body = serde_json::json!({
        "client_id": "web",
        "redirect_uri": "http://127.0.0.1:3000/cb",
        "username": "alice",
        "scope": "read",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    });
    let response = send(
        Request::post(gw.admin_url("/apis/movies/oauth/authorize-client"))
            .header("authorization", format!("Bearer {ADMIN_SECRET}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["code"].as_str().unwrap().to_string()
}

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

async fn redeem(
    gw: &TestGateway,
    code: &str,
    verifier: Option<&str>,
    redirect_uri: &str,
) -> TestResponse {
    let mut pairs = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
    ];
    if let Some(v) = verifier {
        pairs.push(("code_verifier", v));
    }
    post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("web", APP_SECRET)),
        &pairs,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_redemptions_of_one_code_have_exactly_one_winner() {
    let (gw, _upstream) = oauth_gateway("").await;
    let gw = std::sync::Arc::new(gw);
    let code = code_for_web(&gw, CHALLENGE).await;
    // 16 authentications of one client at once, with its secret not yet verified: identical
    // credentials in flight share one guessing attempt and one argon2 check (docs/design.md §9a),
    // so the client's own burst is never throttled. The race under test is the code's.
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (gw, code) = (gw.clone(), code.clone());
            tokio::spawn(async move {
                redeem(&gw, &code, Some(VERIFIER), "http://127.0.0.1:3000/cb")
                    .await
                    .status
                    .as_u16()
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        let status = task.await.unwrap();
        assert!(status == 200 || status == 400, "{status}");
        ok += usize::from(status == 200);
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn a_second_redemption_revokes_what_the_first_issued() {
    let (gw, _upstream) = oauth_gateway("").await;
    let code = code_for_web(&gw, CHALLENGE).await;
    let first = redeem(&gw, &code, Some(VERIFIER), "http://127.0.0.1:3000/cb").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let tokens = first.json();
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(introspect(&gw, access).await["active"], true);

    let second = redeem(&gw, &code, Some(VERIFIER), "http://127.0.0.1:3000/cb").await;
    assert_oauth_error(
        &second,
        400,
        "invalid_grant",
        Said::Exactly("the authorization code was already used"),
    );
    assert_eq!(
        introspect(&gw, access).await,
        serde_json::json!({"active": false})
    );
    let rt = tokens["refresh_token"].as_str().unwrap();
    let refreshed = post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("web", APP_SECRET)),
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
    )
    .await;
    assert_oauth_error(
        &refreshed,
        400,
        "invalid_grant",
        Said::Exactly("invalid refresh token"),
    );
}

#[tokio::test]
async fn code_redemption_rules() {
    let (gw, _upstream) = oauth_gateway("").await;
    // Wrong verifier, missing verifier, malformed verifier.
    let code = code_for_web(&gw, CHALLENGE).await;
    let wrong = redeem(
        &gw,
        &code,
        Some("wrong-verifier-wrong-verifier-wrong-verifier-1"),
        "http://127.0.0.1:3000/cb",
    )
    .await;
    assert_oauth_error(
        &wrong,
        400,
        "invalid_grant",
        Said::Exactly("code_verifier does not match the code_challenge"),
    );
    let code = code_for_web(&gw, CHALLENGE).await;
    assert_oauth_error(
        &redeem(&gw, &code, None, "http://127.0.0.1:3000/cb").await,
        400,
        "invalid_grant",
        Said::Exactly("code_verifier is missing"),
    );
    let code = code_for_web(&gw, CHALLENGE).await;
    assert_oauth_error(
        &redeem(&gw, &code, Some("short"), "http://127.0.0.1:3000/cb").await,
        400,
        "invalid_request",
        Said::Exactly("code_verifier must be 43-128 characters of [A-Za-z0-9-._~]"),
    );
    // Another redirect_uri.
    let code = code_for_web(&gw, CHALLENGE).await;
    assert_oauth_error(
        &redeem(&gw, &code, Some(VERIFIER), "http://127.0.0.1:3000/other").await,
        400,
        "invalid_grant",
        Said::Exactly("redirect_uri does not match the authorization request"),
    );
    // Another client that may redeem codes, with the same redirect URI: only the code's owner check
    // stands between it and the tokens.
    let code = code_for_web(&gw, CHALLENGE).await;
    let other = post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("web2", APP_SECRET)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:3000/cb"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_oauth_error(
        &other,
        400,
        "invalid_grant",
        Said::Exactly("the code was issued to another client"),
    );
    // The RFC 7636 vector redeems.
    let code = code_for_web(&gw, CHALLENGE).await;
    assert_eq!(
        redeem(&gw, &code, Some(VERIFIER), "http://127.0.0.1:3000/cb")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn an_expired_code_is_invalid_grant() {
    let (gw, _upstream) = oauth_gateway("  code_ttl: 1s\n").await;
    let code = code_for_web(&gw, CHALLENGE).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_oauth_error(
        &redeem(&gw, &code, Some(VERIFIER), "http://127.0.0.1:3000/cb").await,
        400,
        "invalid_grant",
        Said::Exactly("unknown or expired authorization code"),
    );
}

/// RFC 9700 §2.1.1 (PKCE downgrade): a code issued without a challenge is refused when a verifier
/// is presented at the token endpoint, so an attacker cannot strip the challenge from the request
/// and keep the verifier; without a verifier the same kind of code redeems (`pkce: optional`,
/// confidential client).
#[tokio::test]
async fn a_verifier_for_a_code_without_a_challenge_is_refused() {
    let (gw, _upstream) = oauth_gateway("  pkce: optional\n").await;
    let code_without_challenge = || async {
        let body = serde_json::json!({
            "client_id": "web",
            "redirect_uri": "http://127.0.0.1:3000/cb",
            "username": "alice",
            "scope": "read",
        });
        let response = gw
            .admin_send("POST", "/apis/movies/oauth/authorize-client", Some(&body))
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()["code"].as_str().expect("code").to_string()
    };
    let code = code_without_challenge().await;
    let refused = redeem(&gw, &code, Some(VERIFIER), "http://127.0.0.1:3000/cb").await;
    assert_oauth_error(
        &refused,
        400,
        "invalid_grant",
        Said::Exactly("code_verifier sent but the authorization request had no code_challenge"),
    );
    let code = code_without_challenge().await;
    assert_eq!(
        redeem(&gw, &code, None, "http://127.0.0.1:3000/cb")
            .await
            .status,
        200
    );
}

/// Past their lifetimes: an access token is inactive at introspection and refused by the proxy once
/// `exp` + the 5 s leeway has passed; a refresh token past its own `ttl` is `invalid_grant` and
/// inactive.
#[tokio::test]
async fn expired_tokens_are_inactive_and_cannot_refresh() {
    let (gw, _upstream) =
        oauth_gateway("  access_token: { ttl: 1s }\n  refresh_token: { ttl: 1s }\n").await;
    let tokens = password_grant(&gw, Some("read")).await;
    let access = tokens["access_token"].as_str().expect("access_token");
    let refresh_token = tokens["refresh_token"].as_str().expect("refresh_token");
    assert_eq!(introspect(&gw, access).await["active"], true);
    // exp = iat + 1 s, accepted until exp + 5 s (docs/security.md#token-time-claims: at most 5 s of
    // skew).
    tokio::time::sleep(std::time::Duration::from_millis(7_100)).await;
    assert_eq!(
        introspect(&gw, access).await,
        serde_json::json!({"active": false})
    );
    let proxied = get_with(
        &gw.url("/movies/items"),
        &[("authorization", &format!("Bearer {access}"))],
    )
    .await;
    assert_eq!(proxied.status, 401, "{}", proxied.text());
    assert_eq!(
        introspect(&gw, refresh_token).await,
        serde_json::json!({"active": false})
    );
    assert_oauth_error(
        &refresh(&gw, refresh_token).await,
        400,
        "invalid_grant",
        Said::Exactly("invalid refresh token"),
    );
}
