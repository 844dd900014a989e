//! CORS at the gateway over real sockets: preflights answered before auth and limits, the allowed
//! origin echoed on every answer (errors and the OAuth endpoints included), another origin left without
//! CORS headers. The same behaviour in a real browser: tests/browser/cors.py, run by scripts/test.sh.

mod common;

use bytes::Bytes;
use common::oauth::basic;
use common::*;
use http::Request;
use http_body_util::Full;

const SECRET: &str = "client-secret-0123456789";
const APP: &str = "https://app.example";

async fn start() -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    let hash = tollgate::secrets::hash_secret(SECRET).expect("hash");
    let config = ConfigDir::new("");
    config.api(
        "movies",
        &format!(
            "listen_path: /movies/\n\
             upstream: {{ url: \"{}\" }}\n\
             rate_limit: {{ rate: 1000, per: 1s }}\n\
             oauth:\n  grant_types: [client_credentials]\n  scopes: [read]\n  clients:\n    - {{ client_id: svc, secret_hash: \"{hash}\", grant_types: [client_credentials], scopes: [read] }}\n\
             cors:\n  allowed_origins: [\"{APP}\"]\n  allowed_methods: [GET, POST]\n  allowed_headers: [Authorization, Content-Type]\n  exposed_headers: [X-RateLimit-Remaining]\n  allow_credentials: true\n  max_age: 10m\n",
            upstream.url()
        ),
    );
    (TestGateway::start(config).await, upstream)
}

fn preflight(url: &str, origin: &str) -> Request<Full<Bytes>> {
    Request::options(url)
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn token(gw: &TestGateway, origin: &str) -> TestResponse {
    send(
        Request::post(gw.url("/movies/oauth/token"))
            .header("origin", origin)
            .header("authorization", basic("svc", SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(
                b"grant_type=client_credentials",
            )))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_preflight_is_answered_before_auth_and_never_reaches_the_upstream() {
    let (gw, upstream) = start().await;
    let response = send(preflight(&gw.url("/movies/films"), APP)).await;
    assert_eq!(response.status, 204);
    assert_eq!(response.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        response.header("access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        response.header("access-control-allow-headers"),
        Some("Authorization, Content-Type")
    );
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(response.header("access-control-max-age"), Some("600"));
    assert_eq!(response.header("vary"), Some("Origin"));
    assert_eq!(upstream.count(), 0);

    // Another origin's preflight: answered, but with nothing a browser would accept.
    let response = send(preflight(&gw.url("/movies/films"), "https://evil.example")).await;
    assert_eq!(response.status, 204);
    for name in [
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-credentials",
    ] {
        assert!(
            response.header(name).is_none(),
            "{name} sent to another origin"
        );
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn answers_echo_the_allowed_origin_errors_and_oauth_endpoints_included() {
    let (gw, upstream) = start().await;

    // The token endpoint follows the API's block: preflight and answer.
    let response = send(preflight(&gw.url("/movies/oauth/token"), APP)).await;
    assert_eq!(response.status, 204);
    assert_eq!(response.header("access-control-allow-origin"), Some(APP));
    let issued = token(&gw, APP).await;
    assert_eq!(issued.status, 200, "{}", issued.text());
    assert_eq!(issued.header("access-control-allow-origin"), Some(APP));
    let access_token = issued.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();

    // A proxied answer: origin echoed, credentials, exposed headers, Vary.
    let response = get_with(
        &gw.url("/movies/films"),
        &[
            ("origin", APP),
            ("authorization", &format!("Bearer {access_token}")),
        ],
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        response.header("access-control-expose-headers"),
        Some("X-RateLimit-Remaining")
    );
    assert!(response.header("x-ratelimit-remaining").is_some());
    assert_eq!(response.header("vary"), Some("Origin"));
    assert_eq!(upstream.count(), 1);

    // A gateway error is readable by the page too (it can tell a 401 from a network failure).
    let response = get_with(&gw.url("/movies/films"), &[("origin", APP)]).await;
    assert_eq!(response.status, 401);
    assert_eq!(response.header("access-control-allow-origin"), Some(APP));

    // Another origin: the request is handled, but no CORS header lets its page read the answer.
    let response = get_with(
        &gw.url("/movies/films"),
        &[
            ("origin", "https://evil.example"),
            ("authorization", &format!("Bearer {access_token}")),
        ],
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(response.header("access-control-allow-origin").is_none());
    assert!(
        response
            .header("access-control-allow-credentials")
            .is_none()
    );
    let evil_token = token(&gw, "https://evil.example").await;
    assert!(evil_token.header("access-control-allow-origin").is_none());
}
