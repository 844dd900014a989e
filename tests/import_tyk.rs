//! `tollgate import tyk`: each Tyk fixture (tests/fixtures/tyk/, written from Tyk's documented classic
//! API definition and policy schema) is converted, passes the same check as `tollgate check`, and is
//! served: a request through the imported API reaches its upstream with the token in the same place
//! and the same limits as in the Tyk definition.

mod common;

use std::path::{Path, PathBuf};

use common::oauth::post_form;
use common::*;
use tollgate::import::{ImportSummary, import_tyk};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tyk");
/// The upstream host the fixtures name; replaced by the test upstream's address before importing.
const FIXTURE_UPSTREAM: &str = "http://upstream.example:8000";
const FIXTURE_HOOK: &str = "https://hooks.example.com";

/// Copies fixtures into `into`, with the upstream (and notification receiver) pointed at `upstream`
/// (and `hook`), as an operator would have them on the machine that runs tollgate.
fn staged(names: &[&str], into: &Path, upstream: &str, hook: &str) -> Vec<PathBuf> {
    names
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(Path::new(FIXTURES).join(name)).unwrap();
            let path = into.join(name);
            std::fs::write(
                &path,
                text.replace(FIXTURE_UPSTREAM, upstream)
                    .replace(FIXTURE_HOOK, hook),
            )
            .unwrap();
            path
        })
        .collect()
}

fn report(summary: &ImportSummary) -> Vec<String> {
    summary
        .dropped
        .iter()
        .map(|d| {
            format!(
                "{}: {}",
                Path::new(&d.file).file_name().unwrap().to_string_lossy(),
                d.path
            )
        })
        .collect()
}

fn imported(dir: &Path, id: &str) -> String {
    std::fs::read_to_string(dir.join(format!("api-definitions/{id}.yaml"))).unwrap()
}

#[test]
fn every_fixture_converts_and_passes_check_on_its_own() {
    for name in [
        "keyless-open.json",
        "oauth2-movies.json",
        "auth-token-lb.json",
        "hmac-basic-plugin.json",
        "dashboard-export.json",
    ] {
        let out = tempfile::tempdir().unwrap();
        let file = Path::new(FIXTURES).join(name);
        let summary =
            import_tyk(&[file], None, out.path(), false).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            summary.wrote_gateway_yaml,
            "{name}: a folder without gateway.yaml gets one"
        );
        let config = tollgate::Config::load(&summary.gateway_yaml)
            .unwrap_or_else(|e| panic!("{name}: the import does not pass the check:\n{e}"));
        assert_eq!(config.api_count(), summary.api_files.len(), "{name}");
        assert!(config.api_count() >= 1, "{name}");
        let written = std::fs::read_to_string(out.path().join("import-report.txt")).unwrap();
        assert_eq!(
            written.lines().count(),
            summary.dropped.len() + 1,
            "{name}: the report file lists every line (after its heading)"
        );
    }
}

#[test]
fn policies_are_imported_with_their_limits_and_access() {
    let out = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = ["oauth2-movies.json", "auth-token-lb.json"]
        .iter()
        .map(|n| Path::new(FIXTURES).join(n))
        .collect();
    let policies = Path::new(FIXTURES).join("policies.json");
    let summary = import_tyk(&files, Some(&policies), out.path(), false).unwrap();
    assert_eq!(summary.policy_count, 2, "the inactive policy is left out");
    let config = tollgate::Config::load(&summary.gateway_yaml).unwrap_or_else(|e| panic!("{e}"));
    let gold = config
        .runtime
        .policies
        .iter()
        .find(|p| p.id == "gold")
        .unwrap();
    assert_eq!(gold.access, ["movies-api", "reviews"]);
    let rate = gold.rate_limit.unwrap();
    assert_eq!((rate.rate, rate.per.as_secs()), (100, 1));
    let quota = gold.quota.unwrap();
    assert_eq!((quota.max, quota.period.as_secs()), (4, 3600));
    let bronze = config
        .runtime
        .policies
        .iter()
        .find(|p| p.id == "bronze")
        .unwrap();
    assert_eq!(bronze.quota, None, "quota_max -1 is Tyk's unlimited");
    assert_eq!(bronze.rate_limit.unwrap().per.as_secs(), 60);

    let lines = report(&summary);
    for expected in [
        "policies.json: gold.access_rights.reviews-0002.allowed_urls",
        "policies.json: gold.throttle_interval",
        "policies.json: gold.throttle_retry_limit",
        "policies.json: gold.tags",
        "policies.json: retired",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected} missing from {lines:#?}"
        );
    }
    // The partitions of the gold policy are all off: nothing to report.
    assert!(
        !lines.iter().any(|l| l.contains("partitions")),
        "{lines:#?}"
    );
}

#[test]
fn auth_modes_without_an_equivalent_are_reported_and_the_api_stays_closed() {
    let out = tempfile::tempdir().unwrap();
    let file = Path::new(FIXTURES).join("hmac-basic-plugin.json");
    let summary = import_tyk(&[file], None, out.path(), false).unwrap();
    let lines = report(&summary);
    for expected in [
        "hmac-basic-plugin.json: use_basic_auth",
        "hmac-basic-plugin.json: enable_signature_checking",
        "hmac-basic-plugin.json: enable_coprocess_auth",
        "hmac-basic-plugin.json: custom_middleware.pre",
        "hmac-basic-plugin.json: custom_middleware.auth_check.name",
        "hmac-basic-plugin.json: hmac_allowed_algorithms",
        "hmac-basic-plugin.json: allowed_ips",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected} missing from {lines:#?}"
        );
    }
    let yaml = imported(out.path(), "payments-signed");
    assert!(
        yaml.contains("type: oauth2"),
        "fails closed, never open:\n{yaml}"
    );
}

#[test]
fn an_existing_output_is_not_overwritten_without_force() {
    let out = tempfile::tempdir().unwrap();
    let file = Path::new(FIXTURES).join("keyless-open.json");
    import_tyk(std::slice::from_ref(&file), None, out.path(), false).unwrap();
    std::fs::write(
        out.path().join("api-definitions/open-catalogue.yaml"),
        "# edited by hand\n",
    )
    .unwrap();
    let err = import_tyk(std::slice::from_ref(&file), None, out.path(), false).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("open-catalogue.yaml: already exists (use --force to overwrite)"),
        "{err}"
    );
    assert_eq!(imported(out.path(), "open-catalogue"), "# edited by hand\n");
    import_tyk(&[file], None, out.path(), true).unwrap();
    assert!(imported(out.path(), "open-catalogue").contains("listen_path: /open/"));
}

#[test]
fn input_that_is_not_json_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.json");
    std::fs::write(&file, "{\"name\": ").unwrap();
    let err = import_tyk(std::slice::from_ref(&file), None, dir.path(), false).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: not valid JSON", file.display())),
        "{err}"
    );
    assert!(
        !dir.path().join("api-definitions").exists(),
        "nothing is written"
    );
}

#[test]
fn input_over_the_size_bound_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.json");
    // Sparse: the bound is pushed on without writing 64 MiB to disk.
    let handle = std::fs::File::create(&file).unwrap();
    handle
        .set_len(tollgate::import::MAX_INPUT_BYTES + 1)
        .unwrap();
    let err = import_tyk(std::slice::from_ref(&file), None, dir.path(), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: larger than 64 MiB; not a Tyk definition?",
            file.display()
        )
    );
}

#[tokio::test]
async fn keyless_api_is_served_open_with_its_global_rate_limit_and_unstripped_path() {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("");
    let files = staged(&["keyless-open.json"], config.path(), &upstream.url(), "");
    import_tyk(&files, None, config.path(), false).unwrap();
    let gateway = TestGateway::start(config).await;

    // global_rate_limit {rate: 3, per: 60}: three requests a minute for the whole API.
    for i in 0..3 {
        let answer = get(&gateway.url(&format!("/open/items/{i}"))).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    // strip_listen_path false: the listen path reaches the upstream, under target_url's path.
    assert_eq!(upstream.last().target, "/v1/open/items/2");
    let fourth = get(&gateway.url("/open/items/3")).await;
    assert_eq!(fourth.status, 429);
    assert_eq!(upstream.count(), 3);
    gateway.stop().await;
}

#[tokio::test]
async fn oauth_and_auth_token_apis_are_served_with_their_token_places_and_policy_limits() {
    let upstream = Upstream::start().await;
    let hooks = Upstream::start().await;
    let config = ConfigDir::new("policies: policies.yaml\n");
    let files = staged(
        &["oauth2-movies.json", "auth-token-lb.json"],
        config.path(),
        &upstream.url(),
        &hooks.url(),
    );
    let policies = staged(&["policies.json"], config.path(), &upstream.url(), "");
    let summary = import_tyk(&files, Some(&policies[0]), config.path(), false).unwrap();
    assert!(
        !summary.wrote_gateway_yaml,
        "the folder's own gateway.yaml is kept"
    );
    let gateway = TestGateway::start(config).await;

    // Tyk's OAuth clients live in Tyk's store, not in the definition: the operator creates them again,
    // with the policy they had.
    let created = gateway
        .admin_send(
            "POST",
            "/apis/movies-api/clients",
            Some(&serde_json::json!({
                "client_id": "ticket-office",
                "grant_types": ["client_credentials"],
                "policy": "gold"
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let secret = created.json()["client_secret"].as_str().unwrap().to_owned();
    let token = post_form(
        &gateway.url("/movies/oauth/token"),
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "ticket-office"),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(token.status, 200, "{}", token.text());
    let token = token.json()["access_token"].as_str().unwrap().to_owned();

    // Reviews (Tyk auth token in `X-Api-Key` or the `tyk_key` cookie): the gold policy grants it.
    let by_key_header = get_with(&gateway.url("/reviews/1"), &[("x-api-key", &token)]).await;
    assert_eq!(by_key_header.status, 200, "{}", by_key_header.text());
    assert_eq!(
        upstream.last().target,
        "/api/1",
        "the first load-balanced target"
    );
    assert_eq!(
        upstream.last().header("x-api-key"),
        None,
        "the credential is stripped"
    );
    let cookie = format!("theme=dark; tyk_key={token}");
    let by_cookie = get_with(&gateway.url("/reviews/3"), &[("cookie", &cookie)]).await;
    assert_eq!(by_cookie.status, 200, "{}", by_cookie.text());
    assert_eq!(upstream.last().target, "/api/3");
    assert_eq!(
        upstream.last().header("cookie"),
        Some("theme=dark"),
        "only the credential cookie is stripped"
    );
    let bearer = format!("Bearer {token}");
    let elsewhere = get_with(&gateway.url("/reviews/2"), &[("authorization", &bearer)]).await;
    assert_eq!(
        elsewhere.status, 401,
        "the token is read where Tyk read it, only"
    );

    // Movies (Tyk OAuth, `use_param` access_token): header and query parameter.
    let by_header = get_with(&gateway.url("/movies/a"), &[("authorization", &bearer)]).await;
    assert_eq!(by_header.status, 200, "{}", by_header.text());
    let by_query = get(&gateway.url(&format!("/movies/b?access_token={token}&page=2"))).await;
    assert_eq!(by_query.status, 200, "{}", by_query.text());
    assert_eq!(upstream.last().target, "/b?page=2");

    // The gold policy's quota (quota_max 4 per hour) counts the session across both APIs, as Tyk's
    // non-partitioned policy did: 2 + 2 so far, so the next one is refused.
    let fifth = get_with(&gateway.url("/movies/c"), &[("authorization", &bearer)]).await;
    assert_eq!(fifth.status, 429, "{}", fifth.text());
    assert_eq!(upstream.count(), 4);

    // Without a token, both stay closed.
    assert_eq!(get(&gateway.url("/movies/e")).await.status, 401);
    assert_eq!(get(&gateway.url("/reviews/e")).await.status, 401);
    gateway.stop().await;
}

#[tokio::test]
async fn api_with_only_unsupported_auth_is_served_closed() {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("");
    let files = staged(
        &["hmac-basic-plugin.json"],
        config.path(),
        &upstream.url(),
        "",
    );
    import_tyk(&files, None, config.path(), false).unwrap();
    let gateway = TestGateway::start(config).await;
    let basic = get_with(
        &gateway.url("/payments/charge"),
        &[("authorization", "Basic dXNlcjpwYXNz")],
    )
    .await;
    assert_eq!(basic.status, 401);
    assert_eq!(
        upstream.count(),
        0,
        "nothing reaches the upstream without a tollgate token"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn dashboard_export_is_served_with_its_fractional_rate() {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("");
    let files = staged(
        &["dashboard-export.json"],
        config.path(),
        &upstream.url(),
        "",
    );
    let summary = import_tyk(&files, None, config.path(), false).unwrap();
    assert_eq!(summary.api_files.len(), 1, "the inactive API is left out");
    assert!(
        report(&summary)
            .contains(&"dashboard-export.json: apis[1].api_definition.active".to_owned())
    );
    let gateway = TestGateway::start(config).await;
    // rate 0.5 per 1s = 5 per 10s.
    for _ in 0..5 {
        assert_eq!(get(&gateway.url("/status/")).await.status, 200);
    }
    assert_eq!(upstream.last().target, "/health/");
    assert_eq!(get(&gateway.url("/status/")).await.status, 429);
    assert_eq!(get(&gateway.url("/search/")).await.status, 404);
    gateway.stop().await;
}
