//! A refused request's credential never reaches the logs (docs/security.md#credential-privacy):
//! forged tokens in the header, the query and the cookie, a valid token refused for another reason,
//! a wrong client secret, a wrong password, an unknown refresh token and a wrong admin secret. The
//! gateway's lines are captured at TRACE, every level, through the test harness.

mod common;

use common::logs::capture_logs;
use common::oauth::*;
use common::*;

const SECRET: &str = "log-hygiene-client-secret-0123";
const ALICE_PASSWORD: &str = "alice-password";
const WRONG_SECRET: &str = "wrong-secret-guess-4711";
const WRONG_PASSWORD: &str = "wrong-password-guess-4712";
const BOGUS_REFRESH: &str = "bogus-refresh-token-4713-abcdefghijklmnopqrstuvwxyz";
const WRONG_ADMIN: &str = "wrong-admin-secret-4714";

#[tokio::test]
async fn refused_credentials_never_reach_the_logs() {
    let logs = capture_logs();
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("users: users.yaml\n");
    config.alice(ALICE_PASSWORD, "[read]");
    let svc = hashed(SECRET);
    config.api(
        "movies",
        &format!(
            r#"listen_path: /movies/
upstream: {{ url: "{}" }}
auth: {{ type: oauth2, query: access_token, cookie: tg_access, required_scopes: [read] }}
oauth:
  grant_types: [client_credentials, password, refresh_token]
  scopes: [read, write]
  clients:
    - client_id: svc
      secret_hash: "{svc}"
      grant_types: [client_credentials]
      scopes: [read, write]
    - client_id: public-app
      grant_types: [password, refresh_token]
      scopes: [read]
"#,
            upstream.url()
        ),
    );
    let gw = TestGateway::start(config).await;
    let token_url = gw.url("/movies/oauth/token");

    let issued = post_form(
        &token_url,
        Some(&basic("svc", SECRET)),
        &[("grant_type", "client_credentials"), ("scope", "write")],
    )
    .await;
    assert_eq!(issued.status, 200, "{}", issued.text());
    // Valid, but without the required `read` scope: refused with 403 for what it lacks.
    let token = issued.json()["access_token"].as_str().unwrap().to_string();
    let forged = format!("{token}x");

    let bearer = format!("Bearer {forged}");
    let cookie = format!("tg_access={forged}");
    for refused in [
        get_with(&gw.url("/movies/a"), &[("authorization", &bearer)]).await,
        get(&gw.url(&format!("/movies/b?access_token={forged}"))).await,
        get_with(&gw.url("/movies/c"), &[("cookie", &cookie)]).await,
    ] {
        assert_eq!(refused.status, 401, "{}", refused.text());
    }
    let scopeless = get_with(
        &gw.url("/movies/d"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(scopeless.status, 403, "{}", scopeless.text());
    let twice = get_with(
        &gw.url(&format!("/movies/e?access_token={token}")),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(twice.status, 400, "{}", twice.text());

    let wrong_secret = post_form(
        &token_url,
        Some(&basic("svc", WRONG_SECRET)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(wrong_secret.status, 401, "{}", wrong_secret.text());
    let wrong_password = post_form(
        &token_url,
        None,
        &[
            ("grant_type", "password"),
            ("client_id", "public-app"),
            ("username", "alice"),
            ("password", WRONG_PASSWORD),
        ],
    )
    .await;
    assert_eq!(wrong_password.status, 400, "{}", wrong_password.text());
    let bogus_refresh = post_form(
        &token_url,
        None,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "public-app"),
            ("refresh_token", BOGUS_REFRESH),
        ],
    )
    .await;
    assert_eq!(bogus_refresh.status, 400, "{}", bogus_refresh.text());
    let admin = get_with(
        &gw.admin_url("/apis"),
        &[("authorization", &format!("Bearer {WRONG_ADMIN}"))],
    )
    .await;
    assert_eq!(admin.status, 401, "{}", admin.text());

    let text = logs.text();
    // The capture works: the refusals are there, as security events and access lines.
    for event in ["client_auth_failed", "login_failed"] {
        assert!(
            logs.events()
                .iter()
                .any(|e| e["fields"]["security"] == event),
            "no {event} event captured in {text}"
        );
    }
    for path in [
        "/movies/a",
        "/movies/b",
        "/movies/c",
        "/movies/d",
        "/movies/e",
    ] {
        assert!(text.contains(path), "no line for {path} in {text}");
    }
    // And no credential is in them, at any level.
    for (what, secret) in [
        ("a forged token", forged.as_str()),
        ("a valid token refused for its scope", token.as_str()),
        ("the client secret", SECRET),
        ("a wrong client secret", WRONG_SECRET),
        ("a wrong password", WRONG_PASSWORD),
        ("an unknown refresh token", BOGUS_REFRESH),
        ("a wrong admin secret", WRONG_ADMIN),
    ] {
        assert!(!text.contains(secret), "{what} reached the logs: {text}");
    }
    // Not even a piece of a token: its signature (the part after the last dot) identifies it too.
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !text.contains(signature),
        "a token's signature reached the logs"
    );
}
