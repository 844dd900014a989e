//! The admin API's own description: OpenAPI 3.1, kept as `docs/admin-openapi.json` and served at
//! `GET /openapi.json` (behind the admin secret, like every admin route).
//!
//! The tests below hold the document, the human-readable `docs/admin-api.md` and the route table
//! ([`super::ROUTES`]) together: a route that is served but not documented, or documented but not
//! served, fails them.

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderValue};

use crate::http_util::{Body, full};

/// The OpenAPI 3.1 document of the admin API, as served.
pub const DOCUMENT: &str = include_str!("../../docs/admin-openapi.json");

pub(super) fn response() -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(DOCUMENT.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::DOCUMENT;
    use crate::admin::routes::{ROUTES, placeholders};

    const OPERATIONS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("docs/admin-openapi.json is valid JSON")
    }

    /// (METHOD, path) of every operation in the document.
    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let paths = doc["paths"].as_object().expect("paths");
        let mut out = BTreeSet::new();
        for (path, item) in paths {
            let item = item.as_object().expect("path item");
            for method in OPERATIONS {
                if item.contains_key(method) {
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

    #[test]
    fn the_document_is_openapi_3_1() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
        assert!(doc["info"]["title"].is_string());
        assert!(doc["info"]["version"].is_string());
        // Every operation is behind the admin secret.
        assert_eq!(doc["security"], serde_json::json!([{"adminSecret": []}]));
        assert_eq!(
            doc["components"]["securitySchemes"]["adminSecret"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn every_served_route_is_documented_and_nothing_else() {
        let doc = document();
        let documented = documented(&doc);
        let served = served();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "served by the admin router but missing from docs/admin-openapi.json: {undocumented:?}"
        );
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            unserved.is_empty(),
            "in docs/admin-openapi.json but not served by the admin router: {unserved:?}"
        );
    }

    #[test]
    fn path_parameters_match_the_templates() {
        let doc = document();
        for route in ROUTES {
            let item = &doc["paths"][route.path];
            let operation = &item[route.method.as_str().to_lowercase()];
            // Parameters may sit on the path item or on the operation.
            let declared: BTreeSet<String> = [&item["parameters"], &operation["parameters"]]
                .into_iter()
                .filter_map(Value::as_array)
                .flatten()
                .map(|p| resolve_ref(&doc, p))
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(
                        p["required"], true,
                        "{}: path parameters are required",
                        route.path
                    );
                    p["name"].as_str().unwrap().to_owned()
                })
                .collect();
            let expected: BTreeSet<String> = placeholders(route.path)
                .into_iter()
                .map(str::to_owned)
                .collect();
            assert_eq!(declared, expected, "{} {}", route.method, route.path);
            let id = operation["operationId"].as_str();
            assert!(
                id.is_some(),
                "{} {} has no operationId",
                route.method,
                route.path
            );
            assert!(
                operation["responses"]["401"].is_object(),
                "{} {} does not document 401",
                route.method,
                route.path
            );
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local $ref");
            assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
        }
    }

    #[test]
    fn the_markdown_names_every_route() {
        let markdown = include_str!("../../docs/admin-api.md");
        for route in ROUTES {
            let heading = format!("`{} {}`", route.method, route.path);
            assert!(
                markdown
                    .lines()
                    .any(|l| l.starts_with('#') && l.contains(&heading)),
                "docs/admin-api.md has no heading for {heading}"
            );
        }
    }

    fn resolve_ref<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str() {
            Some(r) => doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling $ref {r}")),
            None => value,
        }
    }

    fn collect_refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "$ref"
                        && let Some(r) = v.as_str()
                    {
                        out.push(r.to_owned());
                    }
                    collect_refs(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
