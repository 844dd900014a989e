//! deploy/grafana-dashboard.json charts the series that `/metrics` really exposes: every metric a
//! panel queries is one the gateway renders, and every metric the gateway renders has a panel.

mod common;

use std::collections::BTreeSet;

use common::oauth::{basic, post_form};
use common::*;

const DASHBOARD: &str = include_str!("../deploy/grafana-dashboard.json");
/// Rendered only once the Redis limiter has failed to count a request (tests/redis_nodes.rs sees it).
const REDIS_ONLY: &str = "tollgate_limiter_storage_errors_total";
/// Series of docs/design.md §9b (load-balanced `upstream.targets`), charted ahead of the build that
/// renders them: the panel stays empty until then. Once rendered, they are held to the same rule as
/// the rest.
const NOT_YET_RENDERED: &[&str] = &["tollgate_upstream_target_healthy"];

/// `tollgate_*` names in a PromQL expression, histogram series reduced to their metric.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(start) = rest.find("tollgate_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        into.insert(base.to_owned());
        rest = &tail[end..];
    }
}

fn panels(value: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    for panel in value["panels"].as_array().into_iter().flatten() {
        out.push(panel.clone());
        panels(panel, out);
    }
}

#[tokio::test]
async fn every_panel_queries_a_rendered_series_and_every_series_has_a_panel() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("valid JSON");
    let mut all = Vec::new();
    panels(&dashboard, &mut all);
    let mut queried = BTreeSet::new();
    for panel in &all {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{}: {expr}",
                panel["title"]
            );
            metric_names(expr, &mut queried);
        }
    }
    let ids: BTreeSet<u64> = all.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), all.len(), "panel ids are unique");

    // A gateway that has seen a little of everything: a token, a proxied request, a refusal, a 404.
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("");
    let hash = tollgate::secrets::hash_secret("dashboard-secret").unwrap();
    config.api(
        "movies",
        &format!(
            "listen_path: /movies/\nupstream: {{ url: \"{}\" }}\noauth:\n  grant_types: [client_credentials]\n  scopes: [read]\n  clients:\n    - client_id: svc\n      secret_hash: \"{hash}\"\n      grant_types: [client_credentials]\n      scopes: [read]\n",
            upstream.url()
        ),
    );
    let gateway = TestGateway::start(config).await;
    let token = post_form(
        &gateway.url("/movies/oauth/token"),
        Some(&basic("svc", "dashboard-secret")),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(token.status, 200, "{}", token.text());
    let token = token.json()["access_token"].as_str().unwrap().to_owned();
    let ok = get_with(
        &gateway.url("/movies/x"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(get(&gateway.url("/movies/x")).await.status, 401);
    assert_eq!(get(&gateway.url("/nowhere")).await.status, 404);

    let metrics = gateway.admin_get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let rendered: BTreeSet<String> = metrics
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    gateway.stop().await;

    let missing_panels: Vec<&String> = rendered.difference(&queried).collect();
    assert!(
        missing_panels.is_empty(),
        "rendered by /metrics but on no panel: {missing_panels:?}"
    );
    let unknown: Vec<&String> = queried
        .difference(&rendered)
        .filter(|name| *name != REDIS_ONLY && !NOT_YET_RENDERED.contains(&name.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "queried by the dashboard but not rendered: {unknown:?}"
    );
    assert!(queried.contains(REDIS_ONLY));
    assert!(
        include_str!("../src/admin/mod.rs").contains(&format!("# TYPE {REDIS_ONLY} counter")),
        "{REDIS_ONLY} is still rendered by the admin API"
    );
}
