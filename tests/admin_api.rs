//! The admin API as a whole, over real sockets: its OpenAPI description is served behind the admin
//! secret and names every route the admin router serves, and the router serves exactly those routes
//! (`tollgate::admin::ROUTES`). Adding a route without documenting it fails here (and in the unit tests
//! of `src/admin/openapi.rs`).

mod common;

use std::collections::BTreeSet;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use tollgate::admin::{ROUTES, routes::placeholders};

async fn gateway() -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    let config = ConfigDir::new("");
    config.api("open", &open_api("/open/", &upstream.url()));
    (TestGateway::start(config).await, upstream)
}

/// (METHOD, path template) of every operation in an OpenAPI document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ] {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn served() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect()
}

/// A concrete path for a template, each placeholder a value that names nothing.
fn instantiate(template: &str) -> String {
    let mut path = template.to_owned();
    for name in placeholders(template) {
        path = path.replace(&format!("{{{name}}}"), &format!("no-such-{name}"));
    }
    path
}

#[tokio::test]
async fn the_openapi_document_is_served_behind_the_secret() {
    let (gw, _upstream) = gateway().await;
    assert_eq!(get(&gw.admin_url("/openapi.json")).await.status, 401);
    let wrong = get_with(
        &gw.admin_url("/openapi.json"),
        &[("authorization", "Bearer not-the-secret")],
    )
    .await;
    assert_eq!(wrong.status, 401);

    let response = gw.admin_get("/openapi.json").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    // Exactly the file in docs/.
    let file = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/admin-openapi.json"),
    )
    .expect("docs/admin-openapi.json");
    assert_eq!(response.text(), file);
    let doc = response.json();
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
}

#[tokio::test]
async fn every_route_the_router_serves_is_in_the_served_document() {
    let (gw, _upstream) = gateway().await;
    let doc = gw.admin_get("/openapi.json").await.json();
    let documented = operations(&doc);
    let served = served();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in /openapi.json: {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "in /openapi.json but not served: {unserved:?}"
    );
}

#[tokio::test]
async fn the_router_answers_every_listed_route_and_nothing_else() {
    let (gw, _upstream) = gateway().await;
    // What the router says for a path it does not serve.
    let unrouted = gw.admin_get("/no-such-route").await;
    assert_eq!(unrouted.status, 404);
    let unrouted_description = unrouted.json()["error_description"].clone();

    for route in ROUTES {
        let path = instantiate(route.path);
        let response = send(
            Request::builder()
                .method(route.method.clone())
                .uri(gw.admin_url(&path))
                .header("authorization", format!("Bearer {ADMIN_SECRET}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
        .await;
        let what = format!(
            "{} {path}: {} {}",
            route.method,
            response.status,
            response.text()
        );
        assert_ne!(response.status, 405, "{what}");
        assert_ne!(response.status, 401, "{what}");
        if response.status == 404 {
            // A handler's 404 (no such API, client or session), not the router's.
            assert_ne!(
                response.json()["error_description"],
                unrouted_description,
                "{what}"
            );
        }
    }

    // Other methods on a served path: 405 with the allowed ones.
    let patch = gw
        .admin_send("PATCH", "/apis/open/clients/someone", None)
        .await;
    assert_eq!(patch.status, 405, "{}", patch.text());
    assert_eq!(patch.header("allow"), Some("GET, PUT, DELETE"));
    let get_reload = gw.admin_get("/reload").await;
    assert_eq!(get_reload.status, 405);
    assert_eq!(get_reload.header("allow"), Some("POST"));
}
