//! The authorization endpoint over real sockets: redirect URI and client checks, PKCE, error
//! redirects, the built-in login and consent form filled as a browser would, CSRF, escaping, login
//! throttling, the redirect login mode and the Tyk-style external identity provider flow through the
//! admin API's `authorize-client` (docs/security.md#contract-authorization-endpoint).

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use common::oauth::*;
use common::*;
use http::Request;
use http_body_util::Full;
use serde_json::json;

const ALICE_PASSWORD: &str = "correct horse battery staple";
const WEB_SECRET: &str = "web-secret-0123456789";
const ISSUER: &str = "http://127.0.0.1:8080/movies";
/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn clients_yaml() -> String {
    let web = hashed(WEB_SECRET);
    format!(
        r#"  clients:
    - client_id: spa
      redirect_uris:
        - https://app.example/cb
        - https://app.example/cb2?tenant=a
        - http://127.0.0.1/native
        - http://[::1]/native
      grant_types: [authorization_code, refresh_token]
      scopes: [read, write]
    - client_id: web
      secret_hash: "{web}"
      redirect_uris: [https://web.example/cb]
      grant_types: [authorization_code, password, refresh_token]
      scopes: [read]
"#
    )
}

/// `movies` (built-in login page, `pkce: optional`) and `idp` (login through an external identity
/// provider, `pkce: required`), both with the same clients; users alice, carol (read only), bob
/// (disabled).
async fn gateway() -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("users: users.yaml\n");
    let alice = hashed(ALICE_PASSWORD);
    config.write(
        "users.yaml",
        &format!(
            "- username: alice\n  password_hash: \"{alice}\"\n  scopes: [read, write]\n  claims: {{ email: alice@example.com }}\n\
             - username: carol\n  password_hash: \"{alice}\"\n  scopes: [read]\n\
             - username: bob\n  password_hash: \"{alice}\"\n  scopes: [read]\n  disabled: true\n"
        ),
    );
    config.api(
        "movies",
        &format!(
            "name: Movies API\nlisten_path: /movies/\nupstream: {{ url: \"{}\" }}\nauth: {{ type: oauth2 }}\n\
             oauth:\n  grant_types: [authorization_code, password, refresh_token]\n  pkce: optional\n  login: builtin\n  scopes: [read, write]\n{}",
            upstream.url(),
            clients_yaml()
        ),
    );
    config.api(
        "idp",
        &format!(
            "listen_path: /idp/\nupstream: {{ url: \"{}\" }}\nauth: {{ type: oauth2 }}\n\
             oauth:\n  grant_types: [authorization_code, password, refresh_token]\n  pkce: required\n  \
             login: {{ redirect: \"https://idp.example/login?realm=shop\" }}\n  scopes: [read, write]\n{}",
            upstream.url(),
            clients_yaml()
        ),
    );
    (TestGateway::start(config).await, upstream)
}

/// Parameters to set (`Some`) or remove (`None`).
type Changes<'a> = Vec<(&'a str, Option<&'a str>)>;

/// A good request of the public client `spa`, with `changes` applied (`None` removes a parameter).
fn spa_request(changes: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", "spa"),
        ("redirect_uri", "https://app.example/cb"),
        ("scope", "read"),
        ("state", "s-123"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (name, value) in changes {
        pairs.retain(|(n, _)| n != name);
        if let Some(value) = value {
            pairs.push((name.to_string(), value.to_string()));
        }
    }
    pairs
}

fn encode(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn authorize(gw: &TestGateway, lp: &str, pairs: &[(String, String)]) -> TestResponse {
    get(&gw.url(&format!("{lp}oauth/authorize?{}", encode(pairs)))).await
}

async fn post_form(url: &str, auth: Option<&str>, pairs: &[(String, String)]) -> TestResponse {
    let mut req = Request::post(url).header("content-type", "application/x-www-form-urlencoded");
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    send(req.body(Full::new(Bytes::from(encode(pairs)))).unwrap()).await
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Location split into the URL before `?` and its decoded query parameters.
fn location(response: &TestResponse) -> (String, HashMap<String, String>) {
    let location = response
        .header("location")
        .unwrap_or_else(|| panic!("no Location: {} {}", response.status, response.text()));
    split_url(location)
}

fn split_url(url: &str) -> (String, HashMap<String, String>) {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let params = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    (base.to_string(), params)
}

/// Fills the login form of `page` and submits it.
async fn submit(
    gw: &TestGateway,
    page: &TestResponse,
    username: &str,
    password: &str,
    action: &str,
) -> TestResponse {
    assert_eq!(page.status, 200, "{}", page.text());
    let mut form = hidden_fields(&page.text());
    assert!(
        form.iter().any(|(n, _)| n == "csrf_token"),
        "{}",
        page.text()
    );
    form.push(("username".into(), username.into()));
    form.push(("password".into(), password.into()));
    form.push(("action".into(), action.into()));
    post_form(&gw.url("/movies/oauth/authorize"), None, &form).await
}

fn assert_page(response: &TestResponse, status: u16) {
    assert_eq!(response.status, status, "{}", response.text());
    assert!(
        response.header("location").is_none(),
        "a page must never redirect: {:?}",
        response.header("location")
    );
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(response.header("x-frame-options"), Some("DENY"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let csp = response.header("content-security-policy").expect("CSP");
    assert!(
        csp.starts_with("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
        "{csp}"
    );
}

fn assert_error_redirect(
    response: &TestResponse,
    status: u16,
    base: &str,
    error: &str,
    state: Option<&str>,
) {
    assert_eq!(response.status, status, "{}", response.text());
    let (url, params) = location(response);
    assert_eq!(url, base);
    assert_eq!(
        params.get("error").map(String::as_str),
        Some(error),
        "{params:?}"
    );
    assert!(
        params
            .get("error_description")
            .is_some_and(|d| !d.is_empty()),
        "{params:?}"
    );
    assert_eq!(params.get("state").map(String::as_str), state, "{params:?}");
    assert_eq!(params.get("iss").map(String::as_str), Some(ISSUER));
    assert!(!params.contains_key("code"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
}

/// The code grant at the token endpoint for the public client `spa`.
async fn redeem(gw: &TestGateway, code: &str, redirect_uri: &str, verifier: &str) -> TestResponse {
    post_form(
        &gw.url("/movies/oauth/token"),
        None,
        &owned(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", "spa"),
            ("code_verifier", verifier),
        ]),
    )
    .await
}

#[tokio::test]
async fn full_code_flow_with_the_login_form_and_pkce() {
    let (gw, upstream) = gateway().await;
    let page = authorize(
        &gw,
        "/movies/",
        &spa_request(&[("scope", Some("read write"))]),
    )
    .await;
    assert_page(&page, 200);
    let csp = page.header("content-security-policy").unwrap();
    // The redirect after the form may go to the client's origin (Chrome checks form-action there).
    assert!(
        csp.contains("form-action 'self' https://app.example;"),
        "{csp}"
    );
    let html = page.text();
    for needle in [
        "<label for=\"username\">",
        "autocomplete=\"username\"",
        "autocomplete=\"current-password\"",
        "<strong>spa</strong>",
        "<code>read</code>",
        "<code>write</code>",
        "Movies API",
        "action=\"/movies/oauth/authorize\"",
    ] {
        assert!(html.contains(needle), "missing {needle}: {html}");
    }

    let done = submit(&gw, &page, "alice", ALICE_PASSWORD, "allow").await;
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(done.header("cache-control"), Some("no-store"));
    let (base, params) = location(&done);
    assert_eq!(base, "https://app.example/cb");
    assert_eq!(params["state"], "s-123");
    assert_eq!(params["iss"], ISSUER);
    let code = &params["code"];
    assert!(code.len() >= 43, "a code carries at least 256 bits: {code}");

    let tokens = redeem(&gw, code, "https://app.example/cb", VERIFIER).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let body = tokens.json();
    assert!(body["refresh_token"].is_string());
    assert_eq!(body["scope"], "read write");
    let c = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["client_id"], "spa");
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["email"], "alice@example.com");

    // The token opens the API.
    let bearer = format!("Bearer {}", body["access_token"].as_str().unwrap());
    let response = get_with(
        &gw.url("/movies/films"),
        &[("authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstream.last().target, "/films");

    // The code works once.
    let again = redeem(&gw, code, "https://app.example/cb", VERIFIER).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn the_users_scopes_narrow_the_grant_and_a_wrong_verifier_fails() {
    let (gw, _upstream) = gateway().await;
    let page = authorize(
        &gw,
        "/movies/",
        &spa_request(&[("scope", Some("read write"))]),
    )
    .await;
    let done = submit(&gw, &page, "carol", ALICE_PASSWORD, "allow").await;
    assert_eq!(done.status, 303, "{}", done.text());
    let (_, params) = location(&done);
    let wrong = redeem(
        &gw,
        &params["code"],
        "https://app.example/cb",
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
    )
    .await;
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.json()["error"], "invalid_grant");

    let page = authorize(
        &gw,
        "/movies/",
        &spa_request(&[("scope", Some("read write"))]),
    )
    .await;
    let done = submit(&gw, &page, "carol", ALICE_PASSWORD, "allow").await;
    let (_, params) = location(&done);
    let tokens = redeem(&gw, &params["code"], "https://app.example/cb", VERIFIER).await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    assert_eq!(tokens.json()["scope"], "read");
}

#[tokio::test]
async fn registered_query_is_kept_and_confidential_clients_may_skip_pkce_when_optional() {
    let (gw, _upstream) = gateway().await;
    // A registered redirect URI with its own query: the code is added to it.
    let page = authorize(
        &gw,
        "/movies/",
        &spa_request(&[("redirect_uri", Some("https://app.example/cb2?tenant=a"))]),
    )
    .await;
    let done = submit(&gw, &page, "alice", ALICE_PASSWORD, "allow").await;
    assert_eq!(done.status, 303, "{}", done.text());
    let location_header = done.header("location").unwrap();
    assert!(
        location_header.starts_with("https://app.example/cb2?tenant=a&code="),
        "{location_header}"
    );

    // `pkce: optional`: a confidential client without a challenge (and no state: none comes back).
    let request = owned(&[
        ("response_type", "code"),
        ("client_id", "web"),
        ("redirect_uri", "https://web.example/cb"),
    ]);
    let page = authorize(&gw, "/movies/", &request).await;
    let done = submit(&gw, &page, "alice", ALICE_PASSWORD, "allow").await;
    assert_eq!(done.status, 303, "{}", done.text());
    let (base, params) = location(&done);
    assert_eq!(base, "https://web.example/cb");
    assert!(
        !params.contains_key("state"),
        "state is never invented: {params:?}"
    );
    let tokens = post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("web", WEB_SECRET)),
        &owned(&[
            ("grant_type", "authorization_code"),
            ("code", &params["code"]),
            ("redirect_uri", "https://web.example/cb"),
        ]),
    )
    .await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    assert_eq!(tokens.json()["scope"], "read");

    // `pkce: required` (the idp API): the same request is refused with a redirect.
    let refused = authorize(&gw, "/idp/", &request).await;
    assert_eq!(refused.status, 302);
    let (_, params) = location(&refused);
    assert_eq!(params["error"], "invalid_request");
    assert_eq!(params["iss"], "http://127.0.0.1:8080/idp");
}

#[tokio::test]
async fn redirect_uri_that_differs_in_any_way_is_a_400_page() {
    let (gw, _upstream) = gateway().await;
    for bad in [
        "https://APP.example/cb",
        "https://app.example/CB",
        "HTTPS://app.example/cb",
        "https://app.example/cb/",
        "https://app.example/cb?x=1",
        "https://app.example/cb?",
        "https://app.example/cb#x",
        "https://app.example/x/../cb",
        "https://app.example/cb/..",
        "https://app.example/%2e%2e/cb",
        "https://app.example/%63b",
        "https://app.example/cb%252f..",
        "https://app.example%2f@evil.example/cb",
        "https://app.example@evil.example/cb",
        "https://app.example.evil.example/cb",
        "https://evil.example/cb",
        "https://app.example:443/cb",
        "http://app.example/cb",
        "https://app.example/cb2",
        "https://app.example/cb2?tenant=b",
        "https://app.example/cb2?tenant=a&x=1",
        "http://127.0.0.1:8000/other",
        "http://localhost/native",
        "https://web.example/cb",
    ] {
        let response = authorize(
            &gw,
            "/movies/",
            &spa_request(&[("redirect_uri", Some(bad))]),
        )
        .await;
        assert_page(&response, 400);
        assert!(!response.text().contains("code="), "{bad}");
    }
    // Missing, empty, repeated.
    assert_page(
        &authorize(&gw, "/movies/", &spa_request(&[("redirect_uri", None)])).await,
        400,
    );
    assert_page(
        &authorize(&gw, "/movies/", &spa_request(&[("redirect_uri", Some(""))])).await,
        400,
    );
    let mut twice = spa_request(&[]);
    twice.push(("redirect_uri".into(), "https://app.example/cb".into()));
    assert_page(&authorize(&gw, "/movies/", &twice).await, 400);
    // The userinfo trick also as raw, un-reencoded query text.
    let raw = get(&gw.url(&format!(
        "/movies/oauth/authorize?response_type=code&client_id=spa&code_challenge={CHALLENGE}&code_challenge_method=S256&redirect_uri=https://app.example%252f@evil.example/cb"
    )))
    .await;
    assert_page(&raw, 400);
    // The same in the idp (redirect) mode: a page, not a 307 to the identity provider.
    let idp = authorize(
        &gw,
        "/idp/",
        &spa_request(&[("redirect_uri", Some("https://evil.example/cb"))]),
    )
    .await;
    assert_page(&idp, 400);
}

#[tokio::test]
async fn unknown_or_missing_client_is_a_400_page() {
    let (gw, _upstream) = gateway().await;
    for changes in [
        vec![("client_id", None)],
        vec![("client_id", Some(""))],
        vec![("client_id", Some("nobody"))],
        vec![("client_id", Some("SPA"))],
        vec![("client_id", None), ("redirect_uri", None)],
    ] {
        let response = authorize(&gw, "/movies/", &spa_request(&changes)).await;
        assert_page(&response, 400);
    }
    let mut twice = spa_request(&[]);
    twice.push(("client_id".into(), "spa".into()));
    assert_page(&authorize(&gw, "/movies/", &twice).await, 400);
    // Nothing at all.
    assert_page(&get(&gw.url("/movies/oauth/authorize")).await, 400);
}

#[tokio::test]
async fn an_http_redirect_uri_that_is_not_loopback_is_refused_at_registration() {
    let config = ConfigDir::new("");
    config.api(
        "shop",
        "listen_path: /shop/\nupstream: { url: \"http://127.0.0.1:9\" }\noauth:\n  grant_types: [authorization_code]\n  scopes: [read]\n  clients:\n    - { client_id: spa, redirect_uris: [\"http://app.example/cb\"], grant_types: [authorization_code], scopes: [read] }\n",
    );
    let err = TestGateway::try_start(config)
        .await
        .err()
        .expect("the configuration must be refused");
    assert!(
        err.contains("http is only allowed for loopback hosts"),
        "{err}"
    );
}

#[tokio::test]
async fn loopback_redirects_may_change_only_the_port() {
    let (gw, _upstream) = gateway().await;
    for uri in [
        "http://127.0.0.1:53123/native",
        "http://127.0.0.1/native",
        "http://[::1]:8080/native",
    ] {
        let page = authorize(
            &gw,
            "/movies/",
            &spa_request(&[("redirect_uri", Some(uri))]),
        )
        .await;
        assert_page(&page, 200);
    }
    let page = authorize(
        &gw,
        "/movies/",
        &spa_request(&[("redirect_uri", Some("http://127.0.0.1:53123/native"))]),
    )
    .await;
    let done = submit(&gw, &page, "alice", ALICE_PASSWORD, "allow").await;
    assert_eq!(done.status, 303, "{}", done.text());
    let (base, params) = location(&done);
    assert_eq!(base, "http://127.0.0.1:53123/native");
    // The token request names the same (port-varied) URI as the authorization request.
    let tokens = redeem(
        &gw,
        &params["code"],
        "http://127.0.0.1:53123/native",
        VERIFIER,
    )
    .await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    // The path, host and scheme still have to match.
    for bad in [
        "http://127.0.0.1:53123/native/",
        "http://127.0.0.2:53123/native",
        "https://127.0.0.1:53123/native",
        "http://127.0.0.1:53123@evil.example/native",
    ] {
        assert_page(
            &authorize(
                &gw,
                "/movies/",
                &spa_request(&[("redirect_uri", Some(bad))]),
            )
            .await,
            400,
        );
    }
}

#[tokio::test]
async fn pkce_problems_redirect_with_invalid_request() {
    let (gw, _upstream) = gateway().await;
    for changes in [
        // A public client without a challenge (even though this API has `pkce: optional`).
        vec![("code_challenge", None), ("code_challenge_method", None)],
        vec![("code_challenge_method", Some("plain"))],
        vec![("code_challenge_method", Some("S512"))],
        vec![("code_challenge_method", Some("s256"))],
        // A challenge without a method means plain.
        vec![("code_challenge_method", None)],
        vec![
            ("code_challenge", Some(VERIFIER)),
            ("code_challenge_method", Some("plain")),
        ],
        vec![("code_challenge", Some("short"))],
        vec![("code_challenge", None)],
    ] {
        let response = authorize(&gw, "/movies/", &spa_request(&changes)).await;
        assert_error_redirect(
            &response,
            302,
            "https://app.example/cb",
            "invalid_request",
            Some("s-123"),
        );
    }
}

#[tokio::test]
async fn error_redirects_carry_error_description_state_and_iss() {
    let (gw, _upstream) = gateway().await;
    let state = "a b&c=d/é<\"'>";
    let cases: [(Changes, &str); 6] = [
        (
            vec![("response_type", Some("token"))],
            "unsupported_response_type",
        ),
        (
            vec![("response_type", Some("code id_token"))],
            "unsupported_response_type",
        ),
        (vec![("response_type", None)], "invalid_request"),
        (vec![("scope", Some("admin"))], "invalid_scope"),
        (vec![("scope", Some("read admin"))], "invalid_scope"),
        (
            vec![("code_challenge_method", Some("plain"))],
            "invalid_request",
        ),
    ];
    for (mut changes, error) in cases {
        changes.push(("state", Some(state)));
        let response = authorize(&gw, "/movies/", &spa_request(&changes)).await;
        assert_error_redirect(&response, 302, "https://app.example/cb", error, Some(state));
    }
    // Without a state, none comes back.
    let response = authorize(
        &gw,
        "/movies/",
        &spa_request(&[("scope", Some("admin")), ("state", None)]),
    )
    .await;
    assert_error_redirect(
        &response,
        302,
        "https://app.example/cb",
        "invalid_scope",
        None,
    );
    // A repeated parameter, once the client and redirect URI are known good.
    let mut twice = spa_request(&[]);
    twice.push(("scope".into(), "write".into()));
    let response = authorize(&gw, "/movies/", &twice).await;
    assert_error_redirect(
        &response,
        302,
        "https://app.example/cb",
        "invalid_request",
        Some("s-123"),
    );
    // Onto a registered URI with a query.
    let response = authorize(
        &gw,
        "/movies/",
        &spa_request(&[
            ("redirect_uri", Some("https://app.example/cb2?tenant=a")),
            ("response_type", Some("token")),
        ]),
    )
    .await;
    assert!(
        response
            .header("location")
            .unwrap()
            .starts_with("https://app.example/cb2?tenant=a&error=unsupported_response_type&"),
        "{:?}",
        response.header("location")
    );
}

#[tokio::test]
async fn the_form_needs_its_csrf_token() {
    let (gw, _upstream) = gateway().await;
    let page = authorize(&gw, "/movies/", &spa_request(&[])).await;
    let fields = hidden_fields(&page.text());
    let credentials = owned(&[
        ("username", "alice"),
        ("password", ALICE_PASSWORD),
        ("action", "allow"),
    ]);
    let url = gw.url("/movies/oauth/authorize");

    // Missing.
    let mut form: Vec<_> = fields
        .iter()
        .filter(|(n, _)| n != "csrf_token")
        .cloned()
        .collect();
    form.extend(credentials.clone());
    assert_page(&post_form(&url, None, &form).await, 400);

    // Wrong.
    let mut form: Vec<_> = fields
        .iter()
        .map(|(n, v)| {
            if n == "csrf_token" {
                let flipped = if v.ends_with('0') { '1' } else { '0' };
                (n.clone(), format!("{}{flipped}", &v[..v.len() - 1]))
            } else {
                (n.clone(), v.clone())
            }
        })
        .collect();
    form.extend(credentials.clone());
    assert_page(&post_form(&url, None, &form).await, 400);

    // The right token with a parameter changed (bound to the request).
    for (name, value) in [
        ("state", "other"),
        ("scope", "read write"),
        ("redirect_uri", "https://app.example/cb2?tenant=a"),
    ] {
        let mut form: Vec<_> = fields
            .iter()
            .map(|(n, v)| {
                if n == name {
                    (n.clone(), value.to_string())
                } else {
                    (n.clone(), v.clone())
                }
            })
            .collect();
        form.extend(credentials.clone());
        assert_page(&post_form(&url, None, &form).await, 400);
    }

    // The token of another request.
    let other = authorize(&gw, "/movies/", &spa_request(&[("state", Some("other"))])).await;
    let other_token = hidden_fields(&other.text())
        .into_iter()
        .find(|(n, _)| n == "csrf_token")
        .unwrap()
        .1;
    let mut form: Vec<_> = fields
        .iter()
        .map(|(n, v)| {
            if n == "csrf_token" {
                (n.clone(), other_token.clone())
            } else {
                (n.clone(), v.clone())
            }
        })
        .collect();
    form.extend(credentials.clone());
    assert_page(&post_form(&url, None, &form).await, 400);

    // The untouched form still works.
    let mut form = fields.clone();
    form.extend(credentials);
    let done = post_form(&url, None, &form).await;
    assert_eq!(done.status, 303, "{}", done.text());
}

#[tokio::test]
async fn everything_echoed_into_the_page_is_escaped() {
    let (gw, _upstream) = gateway().await;
    let state = "\"><script>alert(1)</script><img src=x onerror=alert(2)>'";
    let page = authorize(&gw, "/movies/", &spa_request(&[("state", Some(state))])).await;
    assert_page(&page, 200);
    let html = page.text();
    assert!(!html.contains("<script>"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    // A wrong password echoes the username escaped, never the password.
    let failed = submit(&gw, &page, "<b>alice</b>", "hunter2-secret<i>", "allow").await;
    assert_eq!(failed.status, 200, "{}", failed.text());
    let html = failed.text();
    assert!(html.contains("Incorrect username or password"), "{html}");
    assert!(!html.contains("<b>alice</b>"));
    assert!(html.contains("&lt;b&gt;alice&lt;/b&gt;"));
    assert!(!html.contains("hunter2-secret"));
    assert!(!html.contains("<script>"));
    // The state survives the round trip through the form exactly.
    let done = submit(&gw, &failed, "alice", ALICE_PASSWORD, "allow").await;
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(location(&done).1["state"], state);
}

#[tokio::test]
async fn deny_sends_access_denied() {
    let (gw, _upstream) = gateway().await;
    let page = authorize(&gw, "/movies/", &spa_request(&[])).await;
    let mut form = hidden_fields(&page.text());
    form.push(("action".into(), "deny".into()));
    let denied = post_form(&gw.url("/movies/oauth/authorize"), None, &form).await;
    assert_error_redirect(
        &denied,
        303,
        "https://app.example/cb",
        "access_denied",
        Some("s-123"),
    );
}

#[tokio::test]
async fn the_form_rejects_other_content_and_methods() {
    let (gw, _upstream) = gateway().await;
    let page = authorize(&gw, "/movies/", &spa_request(&[])).await;
    // No action chosen.
    let mut form = hidden_fields(&page.text());
    form.extend(owned(&[
        ("username", "alice"),
        ("password", ALICE_PASSWORD),
    ]));
    assert_page(
        &post_form(&gw.url("/movies/oauth/authorize"), None, &form).await,
        400,
    );
    // Not a form body.
    let json = send(
        Request::post(gw.url("/movies/oauth/authorize"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from("{}")))
            .unwrap(),
    )
    .await;
    assert_page(&json, 400);
    // Empty credentials: the page again, no failure counted.
    let again = submit(&gw, &page, "", "", "allow").await;
    assert_eq!(again.status, 200);
    assert!(again.text().contains("Enter your username and password"));
    let put = send(
        Request::put(gw.url("/movies/oauth/authorize"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(put.status, 405);
    // The redirect login mode has no form to post.
    let post = post_form(&gw.url("/idp/oauth/authorize"), None, &spa_request(&[])).await;
    assert_eq!(post.status, 405);
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled_also_for_the_password_grant() {
    let (gw, _upstream) = gateway().await;
    let mut page = authorize(&gw, "/movies/", &spa_request(&[])).await;
    for attempt in 1..=5 {
        let failed = submit(&gw, &page, "alice", "wrong-password", "allow").await;
        assert_eq!(failed.status, 200, "attempt {attempt}: {}", failed.text());
        assert!(failed.text().contains("Incorrect username or password"));
        page = failed;
    }
    // The sixth attempt, even with the right password.
    let throttled = submit(&gw, &page, "alice", ALICE_PASSWORD, "allow").await;
    assert_page(&throttled, 429);
    assert!(throttled.header("retry-after").is_some());
    // The password grant shares the counter.
    let grant = post_form(
        &gw.url("/movies/oauth/token"),
        Some(&basic("web", WEB_SECRET)),
        &owned(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
        ]),
    )
    .await;
    assert_eq!(grant.status, 429, "{}", grant.text());
    assert!(grant.header("retry-after").is_some());
}

#[tokio::test]
async fn redirect_login_mode_answers_307_with_the_original_query() {
    let (gw, _upstream) = gateway().await;
    let raw_query = format!(
        "response_type=code&client_id=spa&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&scope=read+write&state=x%2By%20z&code_challenge={CHALLENGE}&code_challenge_method=S256"
    );
    let response = get(&gw.url(&format!("/idp/oauth/authorize?{raw_query}"))).await;
    assert_eq!(response.status, 307, "{}", response.text());
    assert_eq!(
        response.header("location"),
        Some(format!("https://idp.example/login?realm=shop&{raw_query}").as_str())
    );
    // Unknown client: a page, never a trip to the identity provider.
    let unknown = authorize(&gw, "/idp/", &spa_request(&[("client_id", Some("nobody"))])).await;
    assert_page(&unknown, 400);
    // Other problems go back to the client without a detour.
    let plain = authorize(
        &gw,
        "/idp/",
        &spa_request(&[("code_challenge_method", Some("plain"))]),
    )
    .await;
    assert_eq!(plain.status, 302);
    assert_eq!(location(&plain).1["error"], "invalid_request");
}

#[tokio::test]
async fn tyk_flow_through_an_external_identity_provider() {
    let (gw, _upstream) = gateway().await;
    // 1. The client sends the user to the gateway, which sends them on to the identity provider.
    let start = authorize(&gw, "/idp/", &spa_request(&[("scope", Some("read write"))])).await;
    assert_eq!(start.status, 307, "{}", start.text());
    let (idp, request) = location(&start);
    assert_eq!(idp, "https://idp.example/login");
    assert_eq!(request["realm"], "shop");

    // 2. The identity provider signs alice in and asks the gateway for a code.
    let body = json!({
        "client_id": request["client_id"],
        "redirect_uri": request["redirect_uri"],
        "response_type": request["response_type"],
        "username": "alice",
        "scope": request["scope"],
        "state": request["state"],
        "code_challenge": request["code_challenge"],
        "code_challenge_method": request["code_challenge_method"],
    });
    let issued = gw
        .admin_send("POST", "/apis/idp/oauth/authorize-client", Some(&body))
        .await;
    assert_eq!(issued.status, 200, "{}", issued.text());
    assert_eq!(issued.header("cache-control"), Some("no-store"));
    let issued = issued.json();
    let code = issued["code"].as_str().unwrap();
    let redirect_to = issued["redirect_to"].as_str().unwrap();
    let (base, params) = split_url(redirect_to);
    assert_eq!(base, "https://app.example/cb");
    assert_eq!(params["code"], code);
    assert_eq!(params["state"], "s-123");
    assert_eq!(params["iss"], "http://127.0.0.1:8080/idp");

    // 3. The client redeems the code at the idp API's token endpoint.
    let tokens = post_form(
        &gw.url("/idp/oauth/token"),
        None,
        &owned(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", "https://app.example/cb"),
            ("client_id", "spa"),
            ("code_verifier", VERIFIER),
        ]),
    )
    .await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let tokens = tokens.json();
    assert_eq!(tokens["scope"], "read write");
    let c = jwt_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], "idp");
}

#[tokio::test]
async fn authorize_client_validates_like_the_authorization_endpoint() {
    let (gw, _upstream) = gateway().await;
    let good = json!({
        "client_id": "spa",
        "redirect_uri": "https://app.example/cb",
        "username": "alice",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    });
    let with = |changes: serde_json::Value| {
        let mut body = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    let post = |body: serde_json::Value| {
        let gw = &gw;
        async move {
            gw.admin_send("POST", "/apis/idp/oauth/authorize-client", Some(&body))
                .await
        }
    };
    let ok = post(good.clone()).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(
        ok.json()["redirect_to"]
            .as_str()
            .unwrap()
            .starts_with("https://app.example/cb?code=")
    );
    for (changes, error) in [
        (json!({"client_id": "nobody"}), "invalid_request"),
        (
            json!({"redirect_uri": "https://app.example/cb/"}),
            "invalid_request",
        ),
        (
            json!({"redirect_uri": "https://app.example%2f@evil.example/cb"}),
            "invalid_request",
        ),
        (json!({"username": "bob"}), "invalid_request"),
        (json!({"username": "mallory"}), "invalid_request"),
        (json!({"code_challenge_method": "plain"}), "invalid_request"),
        (json!({"code_challenge_method": null}), "invalid_request"),
        (
            json!({"code_challenge": null, "code_challenge_method": null}),
            "invalid_request",
        ),
        (json!({"scope": "admin"}), "invalid_scope"),
        (
            json!({"response_type": "token"}),
            "unsupported_response_type",
        ),
        (json!({"code_chalenge": "typo"}), "invalid_request"),
        (json!({"username": null}), "invalid_request"),
    ] {
        let response = post(with(changes.clone())).await;
        assert_eq!(response.status, 400, "{changes}: {}", response.text());
        assert_eq!(
            response.json()["error"],
            error,
            "{changes}: {}",
            response.text()
        );
        assert!(response.header("location").is_none());
    }
    let unknown_api = gw
        .admin_send("POST", "/apis/nope/oauth/authorize-client", Some(&good))
        .await;
    assert_eq!(unknown_api.status, 404);
    // The admin secret is required.
    let anonymous = send(
        Request::post(gw.admin_url("/apis/idp/oauth/authorize-client"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(good.to_string())))
            .unwrap(),
    )
    .await;
    assert_eq!(anonymous.status, 401);
}
