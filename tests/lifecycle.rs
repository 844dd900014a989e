//! Running the gateway: TLS with HTTP/2, graceful shutdown, hot reload, admin API, `tollgate check`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Version};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::AsyncWriteExt;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn tls_listener_speaks_http2_and_http1_by_alpn() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let upstream = Upstream::start().await;
    let config = ConfigDir::new(&format!(
        "tls: {{ cert: \"{}\", key: \"{}\" }}\n",
        fixture("tls-cert.pem"),
        fixture("tls-key.pem")
    ));
    config.api("movies", &open_api("/movies/", &upstream.url()));
    let gw = TestGateway::start(config).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixture("tls-cert.pem")).unwrap())
        .unwrap();
    for expected in [Version::HTTP_2, Version::HTTP_11] {
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only();
        // The connector offers only the one protocol in ALPN, so the gateway's choice is forced.
        let https = if expected == Version::HTTP_2 {
            builder.enable_http2().build()
        } else {
            builder.enable_http1().build()
        };
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
        let response = client
            .request(
                Request::get(format!("https://localhost:{}/movies/tls", gw.addr.port()))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .expect("TLS request");
        assert_eq!(response.version(), expected);
        assert_eq!(response.status(), 200);
        let seen = upstream.last();
        assert_eq!(seen.target, "/tls");
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    }
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_then_stops() {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("limits: { shutdown_grace: 10s }\n");
    config.api("movies", &open_api("/movies/", &upstream.url()));
    let mut gw = TestGateway::start(config).await;

    let url = gw.url("/movies/slow");
    let in_flight =
        tokio::spawn(async move { get_with(&url, &[("x-test-delay-ms", "700")]).await });
    // Wait until the upstream has the request, so it is truly in flight when shutdown starts.
    assert!(eventually(Duration::from_secs(5), || async { upstream.count() == 1 }).await);
    gw.begin_shutdown();

    let response = in_flight.await.unwrap();
    assert_eq!(response.status, 200, "the in-flight request must complete");
    gw.join().await.expect("run returns cleanly");
    // After run() returned, nothing listens any more.
    assert!(tokio::net::TcpStream::connect(gw.addr).await.is_err());
}

/// A connection with no request in progress does not hold shutdown for the whole grace period, even
/// one that has sent half of its first head (hyper keeps reading such a head when asked to close): it
/// is dropped shortly after, and `run` returns long before `shutdown_grace` ends.
#[tokio::test]
async fn shutdown_drops_a_connection_with_half_a_head_without_waiting_for_the_grace() {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new(
        "limits: { shutdown_grace: 60s, header_read_timeout: 60s, idle_timeout: 60s }\n",
    );
    config.api("movies", &open_api("/movies/", &upstream.url()));
    let mut gw = TestGateway::start(config).await;

    let mut half = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    half.write_all(b"GET /movies/never HTTP/1.1\r\nHo")
        .await
        .unwrap();
    // Connections are accepted in order: once a later one is answered, the first is being served.
    assert_eq!(get(&gw.url("/movies/a")).await.status, 200);
    gw.begin_shutdown();
    // A bound that only catches a hang: the grace is 60 s, the connection goes within about 1 s.
    tokio::time::timeout(Duration::from_secs(20), gw.join())
        .await
        .expect("run returns without waiting out shutdown_grace for a connection with no request")
        .expect("run returns cleanly");
    assert_eq!(
        upstream.count(),
        1,
        "the half-sent request never reached the upstream"
    );
}

/// A request still in flight when `shutdown_grace` ends does not hold the process: `run` returns, and
/// the client's connection is closed rather than left hanging (its upstream would answer in a minute).
#[tokio::test]
async fn shutdown_grace_ends_a_request_that_outlives_it() {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("limits: { shutdown_grace: 1s }\n");
    config.api("movies", &open_api("/movies/", &upstream.url()));
    let mut gw = TestGateway::start(config).await;

    let addr = gw.addr;
    let in_flight = tokio::spawn(async move {
        raw_exchange(
            addr,
            b"GET /movies/slow HTTP/1.1\r\nHost: a\r\nx-test-delay-ms: 60000\r\n\r\n",
            Duration::from_secs(30),
        )
        .await
    });
    assert!(eventually(Duration::from_secs(5), || async { upstream.count() == 1 }).await);
    gw.begin_shutdown();
    // Generous bounds that only catch a hang: the grace is 1 s, the upstream would take 60 s.
    tokio::time::timeout(Duration::from_secs(20), gw.join())
        .await
        .expect("run returns once shutdown_grace has passed")
        .expect("run returns cleanly");
    let answered = tokio::time::timeout(Duration::from_secs(20), in_flight)
        .await
        .expect("the client's connection is closed, not left open")
        .expect("client task");
    assert!(
        !answered.contains(" 200 "),
        "the upstream's answer cannot have arrived: {answered}"
    );
}

#[tokio::test]
async fn admin_api_requires_the_secret() {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("");
    config.api("movies", &open_api("/movies/", &upstream.url()));
    let gw = TestGateway::start(config).await;

    assert_eq!(get(&gw.admin_url("/apis")).await.status, 401);
    let wrong = get_with(
        &gw.admin_url("/apis"),
        &[("authorization", "Bearer wrong-secret-wrong-secret")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("www-authenticate").is_some());

    let apis = gw.admin_get("/apis").await;
    assert_eq!(apis.status, 200);
    assert_eq!(apis.json()["apis"][0]["id"], "movies");
    assert_eq!(apis.json()["apis"][0]["listen_path"], "/movies/");
    assert_eq!(gw.admin_get("/health").await.json()["status"], "ok");
}

#[tokio::test]
async fn metrics_count_requests_by_api_and_status() {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("");
    config.api("movies", &open_api("/movies/", &upstream.url()));
    let gw = TestGateway::start(config).await;
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/movies/x")).await.status, 200);
    }
    assert_eq!(get(&gw.url("/nowhere")).await.status, 404);
    let metrics = gw.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("tollgate_requests_total{api=\"movies\",status=\"200\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_requests_total{api=\"\",status=\"404\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_request_duration_seconds_count{api=\"movies\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_upstream_duration_seconds_count{api=\"movies\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_bad_definition_on_reload_keeps_the_running_config() {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("");
    config.api("movies", &open_api("/movies/", &upstream.url()));
    let gw = TestGateway::start(config).await;
    assert_eq!(get(&gw.url("/movies/x")).await.status, 200);

    let cases: [(&str, &str, &str); 3] = [
        (
            "broken",
            "listen_path: [unclosed\n",
            "api-definitions/broken.yaml",
        ),
        (
            "typo",
            "listen_path: /typo/\nupstrem: { url: \"http://127.0.0.1:1\" }\n",
            "upstrem",
        ),
        ("dup", &open_api("/movies/", &upstream.url()), "listen_path"),
    ];
    for (id, yaml, expected) in cases {
        gw.config.api(id, yaml);
        let answer = gw.admin_post("/reload").await;
        assert_eq!(answer.status, 400, "{id}");
        let problems = answer.json()["problems"].to_string();
        assert!(problems.contains(expected), "{id}: {problems}");
        assert!(problems.contains(&format!("{id}.yaml")), "{id}: {problems}");
        // The running configuration still serves.
        assert_eq!(get(&gw.url("/movies/x")).await.status, 200, "{id}");
        gw.config.remove_api(id);
    }

    // An empty folder is refused too.
    gw.config.remove_api("movies");
    let answer = gw.admin_post("/reload").await;
    assert_eq!(answer.status, 400);
    assert_eq!(get(&gw.url("/movies/x")).await.status, 200);
}

#[tokio::test]
async fn a_good_change_is_applied_by_reload_and_by_the_file_watcher() {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("");
    config.api("movies", &open_api("/movies/", &upstream.url()));
    let gw = TestGateway::start(config).await;

    gw.config
        .api("books", &open_api("/books/", &upstream.url()));
    let answer = gw.admin_post("/reload").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(get(&gw.url("/books/1")).await.status, 200);

    // No explicit reload: the watcher notices the new file.
    gw.config
        .api("music", &open_api("/music/", &upstream.url()));
    let url = gw.url("/music/1");
    let applied = eventually(Duration::from_secs(10), || {
        let url = url.clone();
        async move { get(&url).await.status == 200 }
    })
    .await;
    assert!(applied, "the file watcher did not apply the new definition");
}

#[test]
fn check_names_the_file_and_field_of_every_problem() {
    let config = ConfigDir::new("");
    config.api(
        "movies",
        "listen_path: movies\nupstream: { url: \"not a url\" }\nauth: { type: none }\n",
    );
    config.api(
        "books",
        "listen_path: /books/\nupstream: { url: \"http://127.0.0.1:1\" }\nauth: { type: maybe }\n",
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "--config"])
        .arg(config.gateway_yaml())
        .output()
        .expect("run tollgate check");
    assert!(!output.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let has = |file: &str, field: &str| {
        lines
            .iter()
            .any(|l| l.contains(&format!("api-definitions/{file}.yaml: {field}")))
    };
    assert!(has("movies", "listen_path"), "{text}");
    assert!(has("movies", "upstream.url"), "{text}");
    assert!(has("books", "auth.type"), "{text}");
}

#[test]
fn check_prints_ok_with_counts() {
    let config = ConfigDir::new("");
    config.api("movies", &open_api("/movies/", "http://127.0.0.1:9"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "--config"])
        .arg(config.gateway_yaml())
        .output()
        .expect("run tollgate check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "ok: 1 apis, 0 clients");
}

#[test]
fn keygen_writes_a_private_key_readable_only_by_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k.pem");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["keygen", "--alg", "EdDSA", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
}

#[test]
fn hash_secret_prints_an_argon2id_phc_string() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("hash-secret")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("$argon2id$"));
}
