//! OpenID Connect over real sockets (DESIGN §9c, docs/oidc.md): ID tokens from the code grant and
//! refreshes, verified against the JWKS; userinfo with RFC 6750 errors; discovery at both paths; the
//! login-session cookie with `prompt`, `max_age`, `login_hint` and `skip_consent`; RP-initiated logout;
//! the admin API's login sessions; the external identity provider's claims; and one login session
//! shared by two nodes on one Redis.

mod common;

use std::sync::OnceLock;

use base64::Engine as _;
use bytes::Bytes;
use common::oauth::*;
use common::redis::{RedisServer, unique_prefix};
use common::*;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

const ALICE_PASSWORD: &str = "alice-password-0123";
const WEB_SECRET: &str = "web-secret-0123456789";
const ISSUER: &str = "http://127.0.0.1:8080/movies";
/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const WEB_CB: &str = "https://web.example/cb";
const SPA_CB: &str = "https://spa.example/cb";
const BYE: &str = "https://web.example/bye";

fn hashes() -> &'static [String; 2] {
    static HASHES: OnceLock<[String; 2]> = OnceLock::new();
    HASHES.get_or_init(|| {
        [ALICE_PASSWORD, WEB_SECRET].map(|s| tollgate::secrets::hash_secret(s).expect("hash"))
    })
}

/// `movies`: an OpenID Provider with the builtin login; clients `web` (confidential, needs consent,
/// has a logout URI), `spa` (public, `skip_consent`), `api-only` (no identity scopes). `idp`: the same
/// provider behind an external identity provider. `plain`: OAuth without `openid`. `short`: access
/// tokens of 1 s. Users alice (claims) and bob (no claims).
fn config(extra_gateway: &str, key: Option<&str>) -> ConfigDir {
    let [alice, web] = hashes();
    let config = ConfigDir::new(&format!("users: users.yaml\n{extra_gateway}"));
    config.write(
        "users.yaml",
        &format!(
            "- username: alice\n  password_hash: \"{alice}\"\n  scopes: [read]\n  claims: {{ email: alice@example.com, email_verified: true, name: Alice Liddell, tier: gold }}\n\
             - username: bob\n  password_hash: \"{alice}\"\n  scopes: [read]\n"
        ),
    );
    if let Some(key) = key {
        config.write("keys/signing.pem", key);
    }
    let clients = format!(
        r#"  clients:
    - client_id: web
      secret_hash: "{web}"
      redirect_uris: [{WEB_CB}]
      post_logout_redirect_uris: [{BYE}]
      grant_types: [authorization_code, refresh_token]
      scopes: [openid, profile, email, read]
    - client_id: spa
      redirect_uris: [{SPA_CB}]
      grant_types: [authorization_code, refresh_token]
      scopes: [openid, profile, email, read]
      skip_consent: true
    - client_id: api-only
      redirect_uris: [{SPA_CB}]
      grant_types: [authorization_code, password]
      scopes: [read]
"#
    );
    for (id, login, extra) in [
        ("movies", "builtin", ""),
        ("idp", "{ redirect: \"https://idp.example/login\" }", ""),
        ("short", "builtin", "  access_token: { ttl: 1s }\n"),
    ] {
        config.api(
            id,
            &format!(
                "listen_path: /{id}/\nupstream: {{ url: \"http://127.0.0.1:9\" }}\nauth: {{ type: oauth2 }}\n\
                 oauth:\n  openid: true\n  grant_types: [authorization_code, password, refresh_token]\n  pkce: required\n  login: {login}\n  scopes: [read]\n{extra}{clients}"
            ),
        );
    }
    config
}

async fn gateway() -> TestGateway {
    TestGateway::start(config("", None)).await
}

fn encode(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// An authorization request of `client` with `extra` parameters (they replace the defaults).
fn authorize_url(gw: &TestGateway, lp: &str, client: &str, extra: &[(&str, &str)]) -> String {
    let cb = if client == "web" { WEB_CB } else { SPA_CB };
    let mut pairs: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", cb),
        ("scope", "openid profile email"),
        ("state", "st-1"),
        ("nonce", "n-0S6_WzA2Mj"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    for (name, value) in extra {
        pairs.retain(|(n, _)| n != name);
        if !value.is_empty() {
            pairs.push((name, value));
        }
    }
    gw.url(&format!("{lp}oauth/authorize?{}", encode(&pairs)))
}

async fn get_cookie(url: &str, cookie: Option<&str>) -> TestResponse {
    let mut req = Request::get(url);
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    send(req.body(Full::new(Bytes::new())).unwrap()).await
}

async fn post_cookie(url: &str, cookie: Option<&str>, pairs: &[(String, String)]) -> TestResponse {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let mut req = Request::post(url).header("content-type", "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    send(req.body(Full::new(Bytes::from(body))).unwrap()).await
}

/// A query parameter of a redirect's `Location`.
fn location_param(response: &TestResponse, name: &str) -> Option<String> {
    let location = response.header("location").expect("a Location header");
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The `name=value` part of the login-session cookie a response sets.
fn session_cookie(response: &TestResponse) -> Option<String> {
    response
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tg_login_"))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
}

/// Fills the password form of `page` and posts it: the 303 with the code (and the cookie).
async fn submit_password(
    gw: &TestGateway,
    lp: &str,
    page: &TestResponse,
    user: &str,
) -> TestResponse {
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.text().contains("type=\"password\""),
        "not the password form: {}",
        page.text()
    );
    let mut form = hidden_fields(&page.text());
    form.push(("username".into(), user.into()));
    form.push(("password".into(), ALICE_PASSWORD.into()));
    form.push(("action".into(), "allow".into()));
    let response = post_cookie(&gw.url(&format!("{lp}oauth/authorize")), None, &form).await;
    assert_eq!(response.status, 303, "{}", response.text());
    response
}

/// A full sign-in with the password: (code, login-session cookie).
async fn sign_in(
    gw: &TestGateway,
    client: &str,
    extra: &[(&str, &str)],
) -> (String, Option<String>) {
    let page = get(&authorize_url(gw, "/movies/", client, extra)).await;
    let response = submit_password(gw, "/movies/", &page, "alice").await;
    (
        location_param(&response, "code").expect("a code"),
        session_cookie(&response),
    )
}

async fn exchange(gw: &TestGateway, lp: &str, client: &str, code: &str) -> TestResponse {
    let cb = if client == "web" { WEB_CB } else { SPA_CB };
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", cb),
        ("code_verifier", VERIFIER),
    ];
    let auth = if client == "web" {
        Some(basic("web", WEB_SECRET))
    } else {
        form.push(("client_id", client));
        None
    };
    post_form(&gw.url(&format!("{lp}oauth/token")), auth.as_deref(), &form).await
}

async fn tokens(gw: &TestGateway, client: &str, code: &str) -> Value {
    let response = exchange(gw, "/movies/", client, code).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

/// Verifies an ID token's signature against the gateway's JWKS (as an RP would) and returns its claims.
async fn verified_id_token(gw: &TestGateway, id_token: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(get(&gw.url("/.well-known/jwks.json")).await.json()).expect("jwks");
    let header = jsonwebtoken::decode_header(id_token).expect("header");
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("kid in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key");
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&["web", "spa"]);
    validation.set_issuer(&[ISSUER]);
    jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .expect("the ID token verifies against the JWKS")
        .claims
}

fn at_hash(access_token: &str) -> String {
    let digest = tollgate::secrets::sha256(access_token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// --- ID tokens

#[tokio::test]
async fn the_code_grant_gives_a_signed_id_token_with_every_claim() {
    let gw = gateway().await;
    let before = now();
    let (code, _) = sign_in(&gw, "web", &[]).await;
    let body = tokens(&gw, "web", &code).await;
    let claims = verified_id_token(&gw, body["id_token"].as_str().expect("id_token")).await;
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "web");
    assert_eq!(claims["azp"], "web");
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(
        claims["at_hash"],
        at_hash(body["access_token"].as_str().unwrap())
    );
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Alice Liddell");
    assert_eq!(claims["preferred_username"], "alice");
    // Only what the scopes release: not the user's other claims.
    assert_eq!(claims.get("tier"), None);
    let auth_time = claims["auth_time"].as_u64().unwrap();
    assert!(auth_time >= before && auth_time <= now());
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 1800);
    // The identity scopes are granted although the user's own scopes are only [read].
    assert_eq!(body["scope"], "openid profile email");
    gw.stop().await;
}

#[tokio::test]
async fn scopes_decide_the_released_claims_and_no_openid_means_no_id_token() {
    let gw = gateway().await;
    let (code, _) = sign_in(&gw, "web", &[("scope", "openid")]).await;
    let body = tokens(&gw, "web", &code).await;
    let claims = verified_id_token(&gw, body["id_token"].as_str().unwrap()).await;
    for absent in ["email", "email_verified", "name", "preferred_username"] {
        assert_eq!(claims.get(absent), None, "{absent}");
    }
    let (code, _) = sign_in(&gw, "web", &[("scope", "openid email"), ("nonce", "")]).await;
    let body = tokens(&gw, "web", &code).await;
    let claims = verified_id_token(&gw, body["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims.get("name"), None);
    // No nonce in the request, none in the token.
    assert_eq!(claims.get("nonce"), None);

    let (code, _) = sign_in(&gw, "web", &[("scope", "read")]).await;
    let body = tokens(&gw, "web", &code).await;
    assert_eq!(body.get("id_token"), None, "{body}");
    // The password grant is not OpenID Connect: no ID token even with openid.
    let password = post_form(
        &gw.url("/movies/oauth/token"),
        None,
        &[
            ("grant_type", "password"),
            ("client_id", "api-only"),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
        ],
    )
    .await;
    assert_eq!(password.status, 200, "{}", password.text());
    assert_eq!(password.json().get("id_token"), None);
    gw.stop().await;
}

#[tokio::test]
async fn a_refresh_gives_a_new_id_token_with_the_same_auth_time_and_nonce() {
    let gw = gateway().await;
    let (code, _) = sign_in(&gw, "web", &[]).await;
    let first = tokens(&gw, "web", &code).await;
    let first_claims = verified_id_token(&gw, first["id_token"].as_str().unwrap()).await;
    let refresh = |token: String, scope: Option<&'static str>| {
        let url = gw.url("/movies/oauth/token");
        async move {
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
            ];
            if let Some(scope) = scope {
                form.push(("scope", scope));
            }
            post_form(&url, Some(&basic("web", WEB_SECRET)), &form).await
        }
    };
    let second = refresh(first["refresh_token"].as_str().unwrap().into(), None).await;
    assert_eq!(second.status, 200, "{}", second.text());
    let second = second.json();
    let claims = verified_id_token(&gw, second["id_token"].as_str().expect("id_token")).await;
    assert_eq!(claims["auth_time"], first_claims["auth_time"]);
    assert_eq!(claims["nonce"], first_claims["nonce"]);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["at_hash"],
        at_hash(second["access_token"].as_str().unwrap())
    );
    // Narrowed to a scope without openid: no ID token any more.
    let third = refresh(
        second["refresh_token"].as_str().unwrap().into(),
        Some("email"),
    )
    .await;
    assert_eq!(third.status, 200, "{}", third.text());
    assert_eq!(third.json().get("id_token"), None);
    gw.stop().await;
}

#[tokio::test]
async fn bad_oidc_parameters_are_invalid_request_redirects() {
    let gw = gateway().await;
    let long_nonce = "n".repeat(256);
    for (name, value) in [
        ("nonce", long_nonce.as_str()),
        ("prompt", "bogus"),
        ("prompt", "none login"),
        ("max_age", "-1"),
        ("max_age", "1.5"),
    ] {
        let response = get(&authorize_url(&gw, "/movies/", "web", &[(name, value)])).await;
        assert_eq!(response.status, 302, "{name}={value}: {}", response.text());
        assert_eq!(
            location_param(&response, "error").as_deref(),
            Some("invalid_request"),
            "{name}={value}"
        );
        assert_eq!(location_param(&response, "state").as_deref(), Some("st-1"));
        assert_eq!(location_param(&response, "iss").as_deref(), Some(ISSUER));
    }
    // The longest nonce accepted is 255 bytes, and it comes back intact.
    let nonce = "n".repeat(255);
    let (code, _) = sign_in(&gw, "web", &[("nonce", &nonce)]).await;
    let body = tokens(&gw, "web", &code).await;
    assert_eq!(
        verified_id_token(&gw, body["id_token"].as_str().unwrap()).await["nonce"],
        nonce
    );
    gw.stop().await;
}

// --- userinfo

async fn userinfo(gw: &TestGateway, method: &str, token: Option<&str>) -> TestResponse {
    let mut req = Request::builder()
        .method(method)
        .uri(gw.url("/movies/oauth/userinfo"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    send(req.body(Full::new(Bytes::new())).unwrap()).await
}

#[tokio::test]
async fn userinfo_answers_the_scopes_claims_and_refuses_per_rfc_6750() {
    let gw = gateway().await;
    let (code, _) = sign_in(&gw, "web", &[("scope", "openid email read")]).await;
    let body = tokens(&gw, "web", &code).await;
    let access = body["access_token"].as_str().unwrap();
    for method in ["GET", "POST"] {
        let response = userinfo(&gw, method, Some(access)).await;
        assert_eq!(response.status, 200, "{method}: {}", response.text());
        assert_eq!(
            response.json(),
            json!({"sub": "alice", "email": "alice@example.com", "email_verified": true})
        );
        assert_eq!(response.header("cache-control"), Some("no-store"));
    }
    let none = userinfo(&gw, "GET", None).await;
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"movies\"")
    );
    let garbage = userinfo(&gw, "GET", Some("not-a-token")).await;
    assert_eq!(garbage.status, 401);
    assert!(
        garbage
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    // A token without openid: 403 insufficient_scope.
    let (code, _) = sign_in(&gw, "web", &[("scope", "read")]).await;
    let plain = tokens(&gw, "web", &code).await;
    let refused = userinfo(&gw, "GET", Some(plain["access_token"].as_str().unwrap())).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer realm=\"movies\", error=\"insufficient_scope\", scope=\"openid\"")
    );
    // Revoked (its whole session, through the refresh token): 401 invalid_token at once.
    let revoke = post_form(
        &gw.url("/movies/oauth/revoke"),
        Some(&basic("web", WEB_SECRET)),
        &[("token", body["refresh_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(revoke.status, 200);
    let revoked = userinfo(&gw, "GET", Some(access)).await;
    assert_eq!(revoked.status, 401);
    assert!(
        revoked
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    // PUT is not a userinfo method.
    assert_eq!(userinfo(&gw, "PUT", Some(access)).await.status, 405);
    gw.stop().await;
}

#[tokio::test]
async fn userinfo_refuses_an_expired_token() {
    let gw = gateway().await;
    let page = get(&authorize_url(&gw, "/short/", "web", &[])).await;
    let response = submit_password(&gw, "/short/", &page, "alice").await;
    let code = location_param(&response, "code").unwrap();
    let body = exchange(&gw, "/short/", "web", &code).await.json();
    let access = body["access_token"].as_str().unwrap().to_string();
    let url = gw.url("/short/oauth/userinfo");
    let bearer = format!("Bearer {access}");
    let headers = [("authorization", bearer.as_str())];
    let ask = || get_with(&url, &headers);
    assert_eq!(ask().await.status, 200);
    // ttl 1 s + the 5 s leeway.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let expired = ask().await;
    assert_eq!(expired.status, 401);
    assert!(
        expired
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\", error_description=\"the token has expired\""),
        "{:?}",
        expired.header("www-authenticate")
    );
    gw.stop().await;
}

// --- discovery

#[tokio::test]
async fn discovery_at_both_paths_agrees_with_the_rfc_8414_metadata() {
    let gw = gateway().await;
    let inside = get(&gw.url("/movies/.well-known/openid-configuration")).await;
    assert_eq!(inside.status, 200);
    let doc = inside.json();
    let outside = get(&gw.url("/.well-known/openid-configuration/movies"))
        .await
        .json();
    assert_eq!(doc, outside);
    let rfc8414 = get(&gw.url("/.well-known/oauth-authorization-server/movies"))
        .await
        .json();
    for field in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "scopes_supported",
        "code_challenge_methods_supported",
        "response_types_supported",
    ] {
        assert_eq!(doc[field], rfc8414[field], "{field}");
    }
    assert_eq!(doc["issuer"], ISSUER);
    assert_eq!(doc["userinfo_endpoint"], format!("{ISSUER}/oauth/userinfo"));
    assert_eq!(
        doc["end_session_endpoint"],
        format!("{ISSUER}/oauth/logout")
    );
    assert_eq!(doc["subject_types_supported"], json!(["public"]));
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        doc["scopes_supported"],
        json!(["read", "openid", "profile", "email"])
    );
    for claim in [
        "sub",
        "email",
        "email_verified",
        "name",
        "preferred_username",
        "auth_time",
        "nonce",
    ] {
        assert!(
            doc["claims_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(claim)),
            "{claim}"
        );
    }
    assert_eq!(doc["request_uri_parameter_supported"], false);
    gw.stop().await;
}

#[tokio::test]
async fn without_openid_the_oidc_paths_are_not_served() {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("");
    config.api(
        "plain",
        &format!(
            "listen_path: /plain/\nupstream: {{ url: \"{}\" }}\nauth: {{ type: none }}\n\
             oauth:\n  grant_types: [password]\n  scopes: [read]\n",
            upstream.url()
        ),
    );
    let gw = TestGateway::start(config).await;
    assert_eq!(
        get(&gw.url("/.well-known/openid-configuration/plain"))
            .await
            .status,
        404
    );
    // Under the listen path they are the upstream's paths, as before OIDC existed.
    for path in [
        "oauth/userinfo",
        "oauth/logout",
        ".well-known/openid-configuration",
    ] {
        assert_eq!(
            get(&gw.url(&format!("/plain/{path}"))).await.status,
            200,
            "{path}"
        );
        assert_eq!(upstream.last().target, format!("/{path}"));
    }
    let metadata = get(&gw.url("/plain/.well-known/oauth-authorization-server"))
        .await
        .json();
    assert_eq!(metadata.get("userinfo_endpoint"), None);
    gw.stop().await;
}

// --- login sessions

#[tokio::test]
async fn the_login_cookie_is_http_only_lax_and_scoped_to_the_listen_path() {
    let gw = gateway().await;
    let page = get(&authorize_url(&gw, "/movies/", "web", &[])).await;
    let response = submit_password(&gw, "/movies/", &page, "alice").await;
    let set_cookie = response
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tg_login_movies="))
        .expect("a login-session cookie")
        .to_string();
    assert!(set_cookie.contains("; HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("; SameSite=Lax"), "{set_cookie}");
    assert!(set_cookie.contains("; Path=/movies/"), "{set_cookie}");
    assert!(set_cookie.contains("; Max-Age=28800"), "{set_cookie}");
    // public_url is http here: no Secure (see the https case below).
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    gw.stop().await;

    let config = config("", None);
    let yaml = std::fs::read_to_string(config.gateway_yaml())
        .unwrap()
        .replace(
            "public_url: http://127.0.0.1:8080",
            "public_url: https://id.example",
        );
    config.write("gateway.yaml", &yaml);
    let gw = TestGateway::start(config).await;
    let page = get(&authorize_url(&gw, "/movies/", "web", &[])).await;
    let response = submit_password(&gw, "/movies/", &page, "alice").await;
    let set_cookie = response.header("set-cookie").unwrap().to_string();
    assert!(set_cookie.ends_with("; Secure"), "{set_cookie}");
    gw.stop().await;
}

#[tokio::test]
async fn a_signed_in_browser_skips_the_password_form() {
    let gw = gateway().await;
    let (code, cookie) = sign_in(&gw, "web", &[]).await;
    let cookie = cookie.expect("cookie");
    let first = tokens(&gw, "web", &code).await;
    let first_auth_time =
        verified_id_token(&gw, first["id_token"].as_str().unwrap()).await["auth_time"].clone();

    // skip_consent: a code at once, without any page.
    let spa = get_cookie(&authorize_url(&gw, "/movies/", "spa", &[]), Some(&cookie)).await;
    assert_eq!(spa.status, 302, "{}", spa.text());
    assert_eq!(location_param(&spa, "state").as_deref(), Some("st-1"));
    let spa_tokens = tokens(&gw, "spa", &location_param(&spa, "code").unwrap()).await;
    let claims = verified_id_token(&gw, spa_tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["aud"], "spa");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["auth_time"], first_auth_time,
        "auth_time is the password entry's"
    );

    // Consent needed: the page names the user and has no password field.
    let page = get_cookie(&authorize_url(&gw, "/movies/", "web", &[]), Some(&cookie)).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("signed-in-user\">alice<"), "{html}");
    assert!(!html.contains("type=\"password\""), "{html}");
    let mut form = hidden_fields(&html);
    assert!(form.iter().any(|(n, _)| n == "consent_proof"));
    form.push(("action".into(), "allow".into()));
    let allowed = post_cookie(&gw.url("/movies/oauth/authorize"), Some(&cookie), &form).await;
    assert_eq!(allowed.status, 303, "{}", allowed.text());
    let code = location_param(&allowed, "code").expect("code");
    assert_eq!(
        tokens(&gw, "web", &code).await["scope"],
        "openid profile email"
    );

    // The same consent form without the cookie, or with a forged proof, is not a sign-in.
    let without_cookie = post_cookie(&gw.url("/movies/oauth/authorize"), None, &form).await;
    assert_eq!(without_cookie.status, 200);
    assert!(without_cookie.text().contains("type=\"password\""));
    let forged: Vec<(String, String)> = form
        .iter()
        .map(|(n, v)| {
            if n == "consent_proof" {
                (n.clone(), "0".repeat(64))
            } else {
                (n.clone(), v.clone())
            }
        })
        .collect();
    let forged = post_cookie(&gw.url("/movies/oauth/authorize"), Some(&cookie), &forged).await;
    assert_eq!(forged.status, 200);
    assert!(forged.text().contains("type=\"password\""));
    // A cookie that is not a session of ours is no session.
    let bogus = get_cookie(
        &authorize_url(&gw, "/movies/", "spa", &[]),
        Some(&format!("tg_login_movies={}", "A".repeat(43))),
    )
    .await;
    assert_eq!(bogus.status, 200);
    assert!(bogus.text().contains("type=\"password\""));
    gw.stop().await;
}

#[tokio::test]
async fn prompt_none_max_age_prompt_login_and_login_hint() {
    let gw = gateway().await;
    // prompt=none without a session: login_required, back to the client.
    let none = get(&authorize_url(
        &gw,
        "/movies/",
        "spa",
        &[("prompt", "none")],
    ))
    .await;
    assert_eq!(none.status, 302);
    assert_eq!(
        location_param(&none, "error").as_deref(),
        Some("login_required")
    );
    assert_eq!(location_param(&none, "state").as_deref(), Some("st-1"));
    assert_eq!(location_param(&none, "iss").as_deref(), Some(ISSUER));

    let (_, cookie) = sign_in(&gw, "web", &[]).await;
    let cookie = cookie.unwrap();
    // prompt=none with a session: a code for a skip_consent client, consent_required otherwise.
    let ok = get_cookie(
        &authorize_url(&gw, "/movies/", "spa", &[("prompt", "none")]),
        Some(&cookie),
    )
    .await;
    assert_eq!(ok.status, 302);
    assert!(
        location_param(&ok, "code").is_some(),
        "{:?}",
        ok.header("location")
    );
    let consent = get_cookie(
        &authorize_url(&gw, "/movies/", "web", &[("prompt", "none")]),
        Some(&cookie),
    )
    .await;
    assert_eq!(
        location_param(&consent, "error").as_deref(),
        Some("consent_required")
    );
    // prompt=none and max_age=0: the session is too old by definition.
    let stale = get_cookie(
        &authorize_url(
            &gw,
            "/movies/",
            "spa",
            &[("prompt", "none"), ("max_age", "0")],
        ),
        Some(&cookie),
    )
    .await;
    assert_eq!(
        location_param(&stale, "error").as_deref(),
        Some("login_required")
    );

    // max_age=0 and prompt=login force the password form, pre-filled from login_hint.
    for extra in [
        [("max_age", "0"), ("login_hint", "alice")],
        [("prompt", "login"), ("login_hint", "alice")],
    ] {
        let page = get_cookie(
            &authorize_url(&gw, "/movies/", "spa", &extra),
            Some(&cookie),
        )
        .await;
        assert_eq!(page.status, 200);
        let html = page.text();
        assert!(html.contains("type=\"password\""), "{extra:?}");
        assert!(html.contains("name=\"username\" autocomplete=\"username\""));
        assert!(
            html.contains("value=\"alice\""),
            "login_hint pre-fills the username"
        );
        // Signing in again gives a new auth_time and a new session cookie.
        let response = submit_password(&gw, "/movies/", &page, "alice").await;
        let new_cookie = session_cookie(&response).expect("a new cookie");
        assert_ne!(new_cookie, cookie);
    }
    // A generous max_age uses the session.
    let aged = get_cookie(
        &authorize_url(&gw, "/movies/", "spa", &[("max_age", "3600")]),
        Some(&cookie),
    )
    .await;
    assert_eq!(aged.status, 302, "{}", aged.text());
    assert!(location_param(&aged, "code").is_some());
    // prompt=consent shows the consent page even to a skip_consent client.
    let (_, fresh) = sign_in(&gw, "web", &[]).await;
    let page = get_cookie(
        &authorize_url(&gw, "/movies/", "spa", &[("prompt", "consent")]),
        fresh.as_deref(),
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("signed-in-user"));
    gw.stop().await;
}

// --- logout

#[tokio::test]
async fn logout_ends_the_session_and_redirects_only_to_registered_uris() {
    let gw = gateway().await;
    let (code, cookie) = sign_in(&gw, "web", &[]).await;
    let cookie = cookie.unwrap();
    let id_token = tokens(&gw, "web", &code).await["id_token"]
        .as_str()
        .unwrap()
        .to_string();
    let logout = |query: String, cookie: Option<String>| {
        let url = gw.url(&format!("/movies/oauth/logout?{query}"));
        async move { get_cookie(&url, cookie.as_deref()).await }
    };

    // Refused, never redirected, and the session stays.
    let evil = logout(
        encode(&[
            ("id_token_hint", &id_token),
            ("post_logout_redirect_uri", "https://evil.example/"),
        ]),
        Some(cookie.clone()),
    )
    .await;
    assert_eq!(evil.status, 400);
    assert_eq!(evil.header("location"), None);
    assert!(
        evil.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let no_client = logout(
        encode(&[("post_logout_redirect_uri", BYE)]),
        Some(cookie.clone()),
    )
    .await;
    assert_eq!(no_client.status, 400);
    let forged_hint = logout(
        encode(&[
            ("id_token_hint", "e30.e30.sig"),
            ("post_logout_redirect_uri", BYE),
        ]),
        Some(cookie.clone()),
    )
    .await;
    assert_eq!(forged_hint.status, 400);
    let mismatch = logout(
        encode(&[
            ("id_token_hint", &id_token),
            ("client_id", "spa"),
            ("post_logout_redirect_uri", BYE),
        ]),
        Some(cookie.clone()),
    )
    .await;
    assert_eq!(mismatch.status, 400);
    let still = get_cookie(&authorize_url(&gw, "/movies/", "spa", &[]), Some(&cookie)).await;
    assert_eq!(
        still.status, 302,
        "the session survived the refused logouts"
    );

    let done = logout(
        encode(&[
            ("id_token_hint", &id_token),
            ("post_logout_redirect_uri", BYE),
            ("state", "bye-1"),
        ]),
        Some(cookie.clone()),
    )
    .await;
    assert_eq!(done.status, 302, "{}", done.text());
    assert_eq!(
        done.header("location"),
        Some("https://web.example/bye?state=bye-1")
    );
    let cleared = done.header("set-cookie").unwrap();
    assert!(
        cleared.starts_with("tg_login_movies=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    // The session is over in the store, whatever the browser does with its cookie.
    let after = get_cookie(&authorize_url(&gw, "/movies/", "spa", &[]), Some(&cookie)).await;
    assert_eq!(after.status, 200);
    assert!(after.text().contains("type=\"password\""));
    let none = get_cookie(
        &authorize_url(&gw, "/movies/", "spa", &[("prompt", "none")]),
        Some(&cookie),
    )
    .await;
    assert_eq!(
        location_param(&none, "error").as_deref(),
        Some("login_required")
    );
    // Without a redirect URI: a page.
    let plain = logout(String::new(), None).await;
    assert_eq!(plain.status, 200);
    assert!(plain.text().contains("signed out"));
    gw.stop().await;
}

// --- admin API

#[tokio::test]
async fn admin_lists_and_ends_a_users_login_sessions() {
    let gw = gateway().await;
    let (_, cookie) = sign_in(&gw, "web", &[]).await;
    let cookie = cookie.unwrap();
    let listed = gw.admin_get("/users/alice/login-sessions").await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let listed = listed.json();
    assert_eq!(listed["username"], "alice");
    let sessions = listed["login_sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["api"], "movies");
    let id = cookie.split_once('=').unwrap().1;
    // The listing names the session by the hash of its id, never the id itself.
    assert_eq!(
        sessions[0]["id"],
        tollgate::secrets::sha256_hex(id.as_bytes())
    );
    assert!(!listed.to_string().contains(id));
    assert_eq!(
        gw.admin_get("/users/nobody/login-sessions").await.json()["login_sessions"],
        json!([])
    );
    let too_long = gw
        .admin_get(&format!("/users/{}/login-sessions", "u".repeat(257)))
        .await;
    assert_eq!(too_long.status, 400);

    let ended = gw
        .admin_send("DELETE", "/users/alice/login-sessions", None)
        .await;
    assert_eq!(ended.status, 200, "{}", ended.text());
    assert_eq!(ended.json(), json!({"username": "alice", "ended": 1}));
    let after = get_cookie(&authorize_url(&gw, "/movies/", "spa", &[]), Some(&cookie)).await;
    assert_eq!(after.status, 200);
    assert!(after.text().contains("type=\"password\""));
    gw.stop().await;
}

// --- external identity provider

#[tokio::test]
async fn an_external_identity_providers_claims_and_nonce_reach_the_id_token_and_userinfo() {
    let gw = gateway().await;
    let body = json!({
        "client_id": "web", "redirect_uri": WEB_CB, "username": "bob",
        "scope": "openid email profile", "code_challenge": CHALLENGE, "code_challenge_method": "S256",
        "nonce": "idp-nonce", "claims": {"email": "bob@idp.example", "email_verified": true, "name": "Bob"}
    });
    let response = gw
        .admin_send("POST", "/apis/idp/oauth/authorize-client", Some(&body))
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let code = response.json()["code"].as_str().unwrap().to_string();
    let tokens = exchange(&gw, "/idp/", "web", &code).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let tokens = tokens.json();
    let id_token = tokens["id_token"].as_str().unwrap();
    let claims = jwt_claims(id_token);
    assert_eq!(claims["iss"], "http://127.0.0.1:8080/idp");
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["email"], "bob@idp.example");
    assert_eq!(claims["name"], "Bob");
    assert_eq!(claims["nonce"], "idp-nonce");
    let info = get_with(
        &gw.url("/idp/oauth/userinfo"),
        &[(
            "authorization",
            &format!("Bearer {}", tokens["access_token"].as_str().unwrap()),
        )],
    )
    .await;
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(info.json()["email"], "bob@idp.example");
    // The provider cannot set what the ID token sets itself.
    let mut bad = body.clone();
    bad["claims"] = json!({"sub": "mallory"});
    let refused = gw
        .admin_send("POST", "/apis/idp/oauth/authorize-client", Some(&bad))
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    gw.stop().await;
}

// --- two nodes, one Redis

#[tokio::test]
async fn a_login_session_started_on_one_node_is_honoured_and_ended_on_another() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let key = tollgate::token::keys::generate_pkcs8_pem(tollgate::config::SigningAlgorithm::Es256)
        .expect("key");
    let storage = redis.storage_yaml(&prefix, "500ms");
    let a = TestGateway::start(config(&storage, Some(&key))).await;
    let b = TestGateway::start(config(&storage, Some(&key))).await;

    let (code, cookie) = sign_in(&a, "web", &[]).await;
    let cookie = cookie.unwrap();
    let id_token = tokens(&a, "web", &code).await["id_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Node B honours it: a code without a page, for the same user and auth_time.
    let on_b = get_cookie(
        &authorize_url(&b, "/movies/", "spa", &[("prompt", "none")]),
        Some(&cookie),
    )
    .await;
    assert_eq!(on_b.status, 302);
    let code_b = location_param(&on_b, "code").expect("a code from node B");
    let spa = tokens(&b, "spa", &code_b).await;
    assert_eq!(
        verified_id_token(&b, spa["id_token"].as_str().unwrap()).await["sub"],
        "alice"
    );
    // Every login-session key in Redis has a TTL, and none holds the cookie's id.
    let id = cookie.split_once('=').unwrap().1;
    let keys = redis.keys_and_ttls(&prefix).await;
    let login_keys: Vec<_> = keys.iter().filter(|(k, _)| k.contains("{login}")).collect();
    assert_eq!(login_keys.len(), 2, "{keys:?}");
    assert!(
        login_keys
            .iter()
            .all(|(k, ttl)| *ttl > 0 && !k.contains(id)),
        "{login_keys:?}"
    );
    // Logout on B ends it on A.
    let out = get_cookie(
        &b.url(&format!(
            "/movies/oauth/logout?{}",
            encode(&[
                ("id_token_hint", &id_token),
                ("post_logout_redirect_uri", BYE)
            ])
        )),
        Some(&cookie),
    )
    .await;
    assert_eq!(out.status, 302);
    let on_a = get_cookie(
        &authorize_url(&a, "/movies/", "spa", &[("prompt", "none")]),
        Some(&cookie),
    )
    .await;
    assert_eq!(
        location_param(&on_a, "error").as_deref(),
        Some("login_required")
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn userinfo_takes_the_token_from_a_post_body_but_not_from_two_places() {
    let gw = gateway().await;
    let (code, _) = sign_in(&gw, "web", &[("scope", "openid profile")]).await;
    let body = tokens(&gw, "web", &code).await;
    let access = body["access_token"].as_str().unwrap();
    let url = gw.url("/movies/oauth/userinfo");
    let by_body = post_form(&url, None, &[("access_token", access)]).await;
    assert_eq!(by_body.status, 200, "{}", by_body.text());
    assert_eq!(
        by_body.json(),
        json!({"sub": "alice", "name": "Alice Liddell", "preferred_username": "alice"})
    );
    let both = post_form(
        &url,
        Some(&format!("Bearer {access}")),
        &[("access_token", access)],
    )
    .await;
    assert_eq!(both.status, 400, "{}", both.text());
    assert_eq!(both.json()["error"], "invalid_request");
    gw.stop().await;
}

#[tokio::test]
async fn an_authorization_request_may_come_by_post() {
    let gw = gateway().await;
    let url = authorize_url(&gw, "/movies/", "web", &[]);
    let query = url.split_once('?').unwrap().1;
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let page = post_cookie(&gw.url("/movies/oauth/authorize"), None, &pairs).await;
    assert_eq!(page.status, 200, "{}", page.text());
    // The same page as the GET: the form then posts back with its CSRF token as usual.
    let response = submit_password(&gw, "/movies/", &page, "alice").await;
    let code = location_param(&response, "code").expect("code");
    let claims = jwt_claims(
        tokens(&gw, "web", &code).await["id_token"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    // A POSTed request with an unregistered redirect URI: the 400 page, never a redirect.
    let mut bad = pairs.clone();
    bad.retain(|(n, _)| n != "redirect_uri");
    bad.push(("redirect_uri".into(), "https://evil.example/cb".into()));
    let refused = post_cookie(&gw.url("/movies/oauth/authorize"), None, &bad).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.header("location"), None);
    gw.stop().await;
}
