//! Requests crafted to reach an upstream the way the gateway did not authorise (docs/design.md
//! §9a): paths that an upstream reads differently from a prefix match (`;` parameters,
//! percent-encoding), headers that an upstream reads as the gateway's own (`X_User_Id`,
//! `X-Real-IP`), and foreign Host names. Over real sockets, against a gateway started through the
//! library and a recording upstream.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::oauth::*;
use common::*;

const SECRET: &str = "client-secret-0123456789";

fn secret_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| tollgate::secrets::hash_secret(SECRET).expect("hash"))
}

/// The nested layout of the report: `/pub/` open to everyone, `/pub/admin/` protected by tokens of
/// its own authorization server (client `ops`, client_credentials), forwarding `sub` as X-User-Id.
/// Neither strips its listen path, so the upstream sees the full path that was routed.
/// `pub_extra` adds lines to the open API.
async fn nested_apis(upstream: &Upstream, pub_extra: &str, gateway_extra: &str) -> TestGateway {
    let config = ConfigDir::new(gateway_extra);
    config.api(
        "pub",
        &format!(
            "listen_path: /pub/\nstrip_listen_path: false\nupstream: {{ url: \"{}\" }}\nauth: {{ type: none }}\n{pub_extra}",
            upstream.url()
        ),
    );
    config.api(
        "admin",
        &format!(
            "listen_path: /pub/admin/\n\
             strip_listen_path: false\n\
             upstream: {{ url: \"{}\" }}\n\
             auth: {{ type: oauth2, forward_claims: {{ X-User-Id: sub }} }}\n\
             oauth:\n  grant_types: [client_credentials]\n  scopes: [read]\n  clients:\n    \
             - {{ client_id: ops, secret_hash: \"{}\", grant_types: [client_credentials], scopes: [read] }}\n",
            upstream.url(),
            secret_hash()
        ),
    );
    TestGateway::start(config).await
}

async fn admin_token(gw: &TestGateway) -> String {
    let response = post_form(
        &gw.url("/pub/admin/oauth/token"),
        Some(&basic("ops", SECRET)),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Paths

#[tokio::test]
async fn a_semicolon_cannot_carry_a_request_past_the_protected_api() {
    let upstream = Upstream::start().await;
    let gw = nested_apis(&upstream, "", "").await;

    // Tomcat and Spring serve `/pub/admin;x/y` as `/pub/admin/y`; here /pub/ matched it.
    for path in [
        "/pub/admin;x/y",
        "/pub/admin;/y",
        "/pub/x/..;/admin/y",
        "/pub/a;b",
    ] {
        let response = get(&gw.url(path)).await;
        assert_eq!(response.status, 400, "{path}");
        assert_eq!(response.json()["error"], "invalid_request", "{path}");
    }
    assert_eq!(
        upstream.count(),
        0,
        "the upstream must not see any of these"
    );
}

#[tokio::test]
async fn an_api_that_allows_semicolons_still_cannot_be_used_to_reach_another_one() {
    let upstream = Upstream::start().await;
    let gw = nested_apis(&upstream, "allow_semicolons: true\n", "").await;

    // Allowed where the route does not depend on it (a jsessionid, matrix parameters)...
    let response = get(&gw.url("/pub/files;jsessionid=42/a;v=1")).await;
    assert_eq!(response.status, 200);
    assert_eq!(upstream.last().target, "/pub/files;jsessionid=42/a;v=1");

    // ...but not where removing the parameters lands on the protected API, or resolves `..`.
    for path in ["/pub/admin;x/y", "/pub/x/..;/admin/y"] {
        let response = get(&gw.url(path)).await;
        assert_eq!(response.status, 400, "{path}");
    }
    // And the protected API, which does not allow them, refuses them on its own paths.
    let token = admin_token(&gw).await;
    let response = get_with(
        &gw.url("/pub/admin/y;x"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn encoded_unreserved_characters_are_routed_and_forwarded_decoded() {
    let upstream = Upstream::start().await;
    let gw = nested_apis(&upstream, "", "").await;

    // `%61dmin` is `admin` to every server: it routes to the protected API and needs its token.
    for path in ["/pub/%61dmin/y", "/pub/%61%64%6D%69%6E/y", "/pub/adm%69n"] {
        let response = get(&gw.url(path)).await;
        assert_eq!(response.status, 401, "{path}");
    }
    assert_eq!(upstream.count(), 0);

    let token = admin_token(&gw).await;
    let bearer = format!("Bearer {token}");
    let response = get_with(
        &gw.url("/pub/%61dmin/%7Euser?q=%61"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(response.status, 200);
    // The path that was routed is the path that is forwarded; the query is not touched.
    assert_eq!(upstream.last().target, "/pub/admin/~user?q=%61");
    assert_eq!(upstream.last().header("x-user-id"), Some("ops"));

    // Other encodings stay exactly as sent.
    let response = get(&gw.url("/pub/a%20b/%3B/%C3%A9")).await;
    assert_eq!(response.status, 200);
    assert_eq!(upstream.last().target, "/pub/a%20b/%3B/%C3%A9");
}

#[tokio::test]
async fn an_encoded_slash_or_dot_segment_is_never_decoded_into_structure() {
    let upstream = Upstream::start().await;
    let gw = nested_apis(&upstream, "", "").await;

    // `%2F` stays encoded: it is refused (docs/design.md §3), never turned into a separator that
    // would make `/pub/admin/y` out of a path /pub/ matched.
    for path in [
        "/pub/admin%2Fy",
        "/pub/admin%2fy",
        "/pub/x/%2E%2E/admin/y",
        "/pub/x/.%2e/admin/y",
        "/pub/%2E/admin/y",
        "/pub/admin%5Cy",
    ] {
        let response = get(&gw.url(path)).await;
        assert_eq!(response.status, 400, "{path}");
    }
    assert_eq!(upstream.count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Headers

#[tokio::test]
async fn an_underscore_copy_of_a_forwarded_claim_never_reaches_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = nested_apis(&upstream, "", "").await;
    let token = admin_token(&gw).await;

    let response = get_with(
        &gw.url("/pub/admin/me"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("X_User_Id", "admin"),
            ("x-user_id", "admin"),
            ("X-USER-ID", "admin"),
        ],
    )
    .await;
    assert_eq!(response.status, 200);
    let seen = upstream.last();
    // CGI, WSGI and Rack read all of these as HTTP_X_USER_ID: only ours may arrive.
    let user_ids: Vec<(&str, &str)> = seen
        .headers
        .iter()
        .filter(|(name, _)| name.as_str().replace('_', "-") == "x-user-id")
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap_or("")))
        .collect();
    assert_eq!(user_ids, vec![("x-user-id", "ops")]);

    // Headers that are neither forwarded claims nor forwarding claims pass as sent, underscores
    // and all.
    let response = get_with(&gw.url("/pub/x"), &[("x-custom_header", "kept")]).await;
    assert_eq!(response.status, 200);
    assert_eq!(upstream.last().header("x-custom_header"), Some("kept"));
}

#[tokio::test]
async fn client_address_headers_from_an_untrusted_client_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = nested_apis(&upstream, "", "").await;

    let response = get_with(
        &gw.url("/pub/x"),
        &[
            ("X-Real-IP", "10.0.0.1"),
            ("True-Client-IP", "10.0.0.1"),
            ("X-Client-IP", "10.0.0.1"),
            ("X_Forwarded_For", "10.0.0.1"),
            ("x-real_ip", "10.0.0.1"),
            ("X-Forwarded-Port", "443"),
            ("X-Forwarded-Prefix", "/internal"),
            ("Forwarded", "for=10.0.0.1"),
        ],
    )
    .await;
    assert_eq!(response.status, 200);
    let seen = upstream.last();
    let spoofed: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(_, value)| {
            value.as_bytes() == b"10.0.0.1" || *value == "443" || *value == "/internal"
        })
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(spoofed.is_empty(), "reached the upstream: {spoofed:?}");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test]
async fn a_trusted_proxy_keeps_its_forwarding_headers_but_not_underscore_copies() {
    let upstream = Upstream::start().await;
    let gw = nested_apis(&upstream, "", "trusted_proxies: [127.0.0.1/32]\n").await;

    let response = get_with(
        &gw.url("/pub/x"),
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Real-IP", "203.0.113.7"),
            ("X_Forwarded_For", "10.0.0.1"),
        ],
    )
    .await;
    assert_eq!(response.status, 200);
    let seen = upstream.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-real-ip"), Some("203.0.113.7"));
    // A proxy writes hyphens; an underscore copy came from its client.
    assert_eq!(seen.header("x_forwarded_for"), None);
}

// ---------------------------------------------------------------------------------------------
// Host

fn host_request(path: &str, host: Option<&str>, version: &str) -> Vec<u8> {
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    format!("GET {path} {version}\r\n{host}Connection: close\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn a_host_outside_allowed_hosts_is_misdirected() {
    let upstream = Upstream::start().await;
    let gw = nested_apis(
        &upstream,
        "",
        "allowed_hosts: [api.example.com, '*.apps.example.com', 127.0.0.1]\n",
    )
    .await;
    let wait = Duration::from_secs(5);
    let exchange = |path: &str, host: Option<&str>, version: &str| {
        let bytes = host_request(path, host, version);
        async move { raw_exchange(gw.addr, &bytes, wait).await }
    };

    for host in [
        "api.example.com",
        "API.Example.COM:8443",
        "api.example.com.",
        "x.apps.example.com",
        "a.b.apps.example.com:80",
        "127.0.0.1:9",
    ] {
        let raw = exchange("/pub/x", Some(host), "HTTP/1.1").await;
        assert_eq!(statuses(&raw), vec![200], "{host}: {raw}");
    }
    assert_eq!(upstream.count(), 6);

    for host in [
        "evil.example",
        "apps.example.com",
        "api.example.com.evil.example",
        "xapi.example.com",
    ] {
        let raw = exchange("/pub/x", Some(host), "HTTP/1.1").await;
        assert_eq!(statuses(&raw), vec![421], "{host}: {raw}");
        assert!(raw.contains("misdirected_request"), "{raw}");
    }
    for host in ["user@api.example.com", "api.example.com:x", "[::1"] {
        let raw = exchange("/pub/x", Some(host), "HTTP/1.1").await;
        assert_eq!(statuses(&raw), vec![400], "{host}: {raw}");
    }
    // HTTP/1.0 may omit Host; with allowed_hosts set there is nothing to check it against.
    let raw = exchange("/pub/x", None, "HTTP/1.0").await;
    assert!(
        raw.starts_with("HTTP/1.0 400") || raw.starts_with("HTTP/1.1 400"),
        "{raw}"
    );
    // An absolute-form target names a host too, and it is the one that counts (RFC 9112 §3.2.2).
    let raw = exchange(
        "http://evil.example/pub/x",
        Some("api.example.com"),
        "HTTP/1.1",
    )
    .await;
    assert_eq!(statuses(&raw), vec![421], "{raw}");
    assert_eq!(
        upstream.count(),
        6,
        "refused requests never reach the upstream"
    );

    // Load balancers probe /health by address: it is exempt.
    let raw = exchange("/health", Some("10.1.2.3:8080"), "HTTP/1.1").await;
    assert_eq!(statuses(&raw), vec![200], "{raw}");
}

#[tokio::test]
async fn without_allowed_hosts_any_host_is_served() {
    let upstream = Upstream::start().await;
    let gw = nested_apis(&upstream, "", "").await;
    let raw = raw_exchange(
        gw.addr,
        &host_request("/pub/x", Some("anything.example"), "HTTP/1.1"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(statuses(&raw), vec![200], "{raw}");
}
