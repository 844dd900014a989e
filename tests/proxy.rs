//! The proxy path over real sockets: routing, strip, header rules, limits, upstream faults.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;

async fn gateway_with(apis: &[(&str, String)], extra: &str) -> TestGateway {
    let config = ConfigDir::new(extra);
    for (id, yaml) in apis {
        config.api(id, yaml);
    }
    TestGateway::start(config).await
}

/// An open API at /movies/ whose upstream has its own `timeout`.
fn api_with_timeout(upstream: &str, timeout: &str) -> String {
    format!(
        "listen_path: /movies/\nupstream: {{ url: \"{upstream}\", timeout: {timeout} }}\nauth: {{ type: none }}\n"
    )
}

#[tokio::test]
async fn requests_are_routed_by_listen_path_and_stripped() {
    let upstream = Upstream::start().await;
    let gw = gateway_with(
        &[
            ("movies", open_api("/movies/", &upstream.url())),
            ("movies-admin", open_api("/movies/admin/", &format!("{}/v1", upstream.url()))),
            (
                "books",
                format!(
                    "listen_path: /books/\nstrip_listen_path: false\nupstream: {{ url: \"{}/api\" }}\nauth: {{ type: none }}\n",
                    upstream.url()
                ),
            ),
        ],
        "",
    )
    .await;

    let cases = [
        ("/movies/42?x=1&y=2", "/42?x=1&y=2"),
        ("/movies", "/"),
        ("/movies/", "/"),
        ("/movies/admin/users", "/v1/users"),
        ("/books/7", "/api/books/7"),
    ];
    for (path, expected) in cases {
        let response = get(&gw.url(path)).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(upstream.last().target, expected, "{path}");
    }
}

#[tokio::test]
async fn listen_path_confusion_never_reaches_the_movies_upstream() {
    let upstream = Upstream::start().await;
    let gw = gateway_with(&[("movies", open_api("/movies/", &upstream.url()))], "").await;

    for (path, status) in [
        ("/movies-admin", 404),
        ("/MOVIES/", 404),
        ("/movie", 404),
        ("//movies/", 400),
        ("/movies/%2e%2e/other", 400),
        ("/movies/..", 400),
        ("/movies/./x", 400),
        ("/movies/%2fetc", 400),
        ("/movies/%5cetc", 400),
        ("/movies/%00", 400),
        ("/movies//x", 400),
    ] {
        let response = get(&gw.url(path)).await;
        assert_eq!(response.status, status, "{path}");
        let body = response.json();
        assert!(
            body["error"].is_string() && body["error_description"].is_string(),
            "{path}: {body}"
        );
    }
    // Backslashes cannot be sent through a URI type; write them raw.
    let raw = raw_exchange(
        gw.addr,
        b"GET /movies\\..\\admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(statuses(&raw), vec![400], "{raw}");
    assert_eq!(
        upstream.count(),
        0,
        "the upstream must not see any of these"
    );
}

#[tokio::test]
async fn unknown_path_is_a_json_404() {
    let upstream = Upstream::start().await;
    let gw = gateway_with(&[("movies", open_api("/movies/", &upstream.url()))], "").await;
    let response = get(&gw.url("/nothing/here")).await;
    assert_eq!(response.status, 404);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json()["error"], "not_found");
}

#[tokio::test]
async fn hop_by_hop_and_connection_named_headers_are_removed_before_ours_are_added() {
    let upstream = Upstream::start().await;
    let gw = gateway_with(&[("movies", open_api("/movies/", &upstream.url()))], "").await;

    let response = get_with(
        &gw.url("/movies/x"),
        &[
            (
                "connection",
                "X-Forwarded-For, X-Request-Id, X-Private, keep-alive",
            ),
            ("x-private", "do not forward"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic abc"),
            ("x-test-response-connection", "1"),
            ("x-kept", "yes"),
        ],
    )
    .await;
    assert_eq!(response.status, 200);
    let seen = upstream.last();
    assert_eq!(seen.header("x-private"), None);
    assert_eq!(seen.header("keep-alive"), None);
    assert_eq!(seen.header("te"), None);
    assert_eq!(seen.header("proxy-authorization"), None);
    assert_eq!(seen.header("x-kept"), Some("yes"));
    // Our headers survive the client's attempt to name them in Connection.
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(seen.header("x-request-id").is_some());
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("host"),
        Some(upstream.addr.to_string().as_str())
    );
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(gw.addr.to_string().as_str())
    );
    // And the upstream's own hop-by-hop headers do not reach the client.
    assert_eq!(response.header("x-upstream-private"), None);
    assert_eq!(response.header("keep-alive"), None);
    assert_eq!(response.header("x-upstream-public"), Some("yes"));
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_replaced() {
    let upstream = Upstream::start().await;
    let gw = gateway_with(&[("movies", open_api("/movies/", &upstream.url()))], "").await;
    get_with(
        &gw.url("/movies/x"),
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("forwarded"), None);
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(gw.addr.to_string().as_str())
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_is_extended() {
    let upstream = Upstream::start().await;
    let gw = gateway_with(
        &[("movies", open_api("/movies/", &upstream.url()))],
        "trusted_proxies: [127.0.0.1/32]\n",
    )
    .await;
    get_with(
        &gw.url("/movies/x"),
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    let seen = upstream.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn request_ids_are_kept_when_valid_and_made_otherwise() {
    let upstream = Upstream::start().await;
    let gw = gateway_with(&[("movies", open_api("/movies/", &upstream.url()))], "").await;

    let response = get_with(&gw.url("/movies/x"), &[("x-request-id", "trace-abc-123")]).await;
    assert_eq!(response.header("x-request-id"), Some("trace-abc-123"));
    assert_eq!(
        upstream.last().header("x-request-id"),
        Some("trace-abc-123")
    );

    let response = get_with(
        &gw.url("/movies/x"),
        &[("x-request-id", "bad id with spaces")],
    )
    .await;
    let made = response
        .header("x-request-id")
        .expect("a request id")
        .to_string();
    assert_ne!(made, "bad id with spaces");
    assert_eq!(made.len(), 32);
    assert_eq!(upstream.last().header("x-request-id"), Some(made.as_str()));
}

#[tokio::test]
async fn bodies_stream_to_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = gateway_with(&[("movies", open_api("/movies/", &upstream.url()))], "").await;
    let body = vec![b'a'; 200_000];
    let response = send(
        Request::post(gw.url("/movies/upload"))
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["body_len"], 200_000);
    assert_eq!(upstream.last().method, "POST");
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let upstream = Upstream::start().await;
    let gw = gateway_with(
        &[("movies", open_api("/movies/", &upstream.url()))],
        "limits: { max_body_bytes: 1000 }\n",
    )
    .await;
    // Announced by Content-Length.
    let response = send(
        Request::post(gw.url("/movies/upload"))
            .body(Full::new(Bytes::from(vec![b'a'; 1001])))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["error"], "request_too_large");

    // Streamed with chunked encoding, so the size is only known while reading.
    let mut chunked =
        b"POST /movies/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'b'; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let raw = raw_exchange(gw.addr, &chunked, Duration::from_secs(5)).await;
    assert_eq!(statuses(&raw), vec![413], "{raw}");

    // Within the limit it goes through.
    let response = send(
        Request::post(gw.url("/movies/upload"))
            .body(Full::new(Bytes::from(vec![b'a'; 1000])))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn upstream_down_is_502_naming_the_api_not_the_address() {
    let logs = logs::capture_logs();
    let dead = closed_port().await;
    let gw = gateway_with(
        &[("movies", open_api("/movies/", &format!("http://{dead}")))],
        "",
    )
    .await;
    let response = never_hangs("a refused upstream", get(&gw.url("/movies/x"))).await;
    assert_eq!(response.status, 502);
    assert_eq!(
        response.json(),
        serde_json::json!({
            "error": "bad_gateway",
            "error_description": "the upstream of API `movies` refused the connection",
        })
    );
    assert!(
        !response.text().contains(&dead.port().to_string()),
        "the upstream's address reached the client: {}",
        response.text()
    );
    // The operator's log line names the API, the target and what happened.
    let line = logs
        .find("upstream request failed")
        .unwrap_or_else(|| panic!("no upstream log line in {}", logs.text()));
    assert_eq!(line["fields"]["api"], "movies", "{line}");
    assert_eq!(line["fields"]["cause"], "refused", "{line}");
    assert_eq!(line["fields"]["upstream"], dead.to_string(), "{line}");
}

/// A target that never completes the TCP handshake: past `limits.upstream_connect_timeout` the answer
/// is 504, not the 502 of a refusal (and not a wait for `upstream.timeout`, set far longer here).
#[tokio::test]
async fn upstream_connect_timeout_is_504_not_502() {
    let logs = logs::capture_logs();
    let hole = BlackHole::start().await;
    let gw = gateway_with(
        &[(
            "movies",
            api_with_timeout(&format!("http://{}", hole.addr), "60s"),
        )],
        "limits: { upstream_connect_timeout: 200ms }\n",
    )
    .await;
    let response = never_hangs("an upstream that never accepts", get(&gw.url("/movies/x"))).await;
    assert_eq!(response.status, 504, "{}", response.text());
    assert_eq!(
        response.json(),
        serde_json::json!({
            "error": "gateway_timeout",
            "error_description": "the upstream of API `movies` did not accept a connection in time",
        })
    );
    let line = logs
        .find("upstream request failed")
        .unwrap_or_else(|| panic!("no upstream log line in {}", logs.text()));
    assert_eq!(line["fields"]["api"], "movies", "{line}");
    assert_eq!(line["fields"]["cause"], "connect_timeout", "{line}");
}

/// The upstream accepts the request and never answers: 504 after `upstream.timeout` (300 ms here),
/// well before the upstream would answer (60 s) and before [`HANG`] calls it a hang.
#[tokio::test]
async fn upstream_that_hangs_is_504_after_the_timeout() {
    let upstream = Upstream::start().await;
    let gw = gateway_with(
        &[("movies", api_with_timeout(&upstream.url(), "300ms"))],
        "",
    )
    .await;
    let response = never_hangs(
        "an upstream that never answers",
        get_with(&gw.url("/movies/x"), &[("x-test-delay-ms", "60000")]),
    )
    .await;
    assert_eq!(response.status, 504);
    assert_eq!(
        response.json(),
        serde_json::json!({
            "error": "gateway_timeout",
            "error_description": "the upstream of API `movies` did not answer in time",
        })
    );
}

#[tokio::test]
async fn upstream_reset_mid_body_aborts_the_client_stream() {
    let upstream = resetting_upstream().await;
    let gw = gateway_with(
        &[(
            "movies",
            open_api("/movies/", &format!("http://{upstream}")),
        )],
        "",
    )
    .await;
    let response = client()
        .request(
            Request::get(gw.url("/movies/x"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .expect("response head");
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body()).await;
    assert!(
        body.is_err(),
        "a truncated upstream body must not look complete to the client"
    );
}

#[tokio::test]
async fn mock_upstream_answers_without_a_server() {
    let gw = gateway_with(
        &[(
            "hello",
            "listen_path: /hello/\nupstream:\n  mock: { status: 201, headers: { content-type: application/json, x-mock: yes }, body: '{\"ok\":true}' }\nauth: { type: none }\n".to_string(),
        )],
        "",
    )
    .await;
    let response = get(&gw.url("/hello/anything")).await;
    assert_eq!(response.status, 201);
    assert_eq!(response.header("x-mock"), Some("yes"));
    assert_eq!(response.json()["ok"], true);
}

#[tokio::test]
async fn health_is_served_by_the_gateway() {
    let upstream = Upstream::start().await;
    let gw = gateway_with(&[("movies", open_api("/movies/", &upstream.url()))], "").await;
    let response = get(&gw.url("/health")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["status"], "ok");
}
