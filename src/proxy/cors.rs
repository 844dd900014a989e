//! CORS for an API with a `cors` block (docs/design.md §9b): the gateway answers browsers' preflights itself,
//! before the OAuth endpoints, credentials and limits (a preflight never carries credentials), and
//! sets the CORS headers of every answer of the API, its OAuth endpoints and its errors included.
//!
//! An origin that is not allowed gets no CORS header at all, so the browser blocks the page from
//! reading the answer; the request itself is handled as any other (CORS protects the page's reader,
//! not the server).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::config::CorsConfig;
use crate::http_util::{Body, empty};

/// The answer to a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`); `None`
/// for any other request. `Access-Control-Allow-Origin` and `-Credentials` are added by [`decorate`],
/// which runs on every answer.
pub fn preflight<B>(cors: &CorsConfig, req: &Request<B>) -> Option<Response<Body>> {
    let headers = req.headers();
    if req.method() != Method::OPTIONS
        || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?;
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    if allowed_origin(cors, origin).is_some() {
        let out = response.headers_mut();
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            cors.allowed_methods.clone(),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            cors.allowed_headers.clone(),
        );
        out.insert(header::ACCESS_CONTROL_MAX_AGE, cors.max_age.clone());
    }
    Some(response)
}

/// Sets the CORS headers of an answer to a request from `origin`: the upstream's own CORS headers
/// are replaced by the block's, so that the two cannot disagree.
pub fn decorate(cors: &CorsConfig, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    headers.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
    headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
    headers.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
    if cors.allowed_origins.is_some() {
        // The answer depends on the Origin: a shared cache must not hand one origin's to another.
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    let Some(allow) = origin.and_then(|o| allowed_origin(cors, o)) else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    if cors.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(exposed) = &cors.exposed_headers {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
    }
}

/// The `Access-Control-Allow-Origin` value for `origin`: the origin itself when listed, `*` when any
/// origin is allowed, nothing otherwise.
fn allowed_origin(cors: &CorsConfig, origin: &HeaderValue) -> Option<HeaderValue> {
    match &cors.allowed_origins {
        None => Some(HeaderValue::from_static("*")),
        Some(list) => {
            let origin_bytes = origin.as_bytes();
            list.iter()
                .any(|o| o.as_bytes() == origin_bytes)
                .then(|| origin.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: Option<&[&str]>, credentials: bool) -> CorsConfig {
        CorsConfig {
            allowed_origins: origins.map(|o| o.iter().map(|s| s.to_string()).collect()),
            allowed_methods: HeaderValue::from_static("GET, POST"),
            allowed_headers: HeaderValue::from_static("Authorization"),
            exposed_headers: Some(HeaderValue::from_static("X-RateLimit-Remaining")),
            allow_credentials: credentials,
            max_age: HeaderValue::from_static("600"),
        }
    }

    fn preflight_request(origin: &str) -> Request<()> {
        Request::options("/m/x")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .body(())
            .unwrap()
    }

    #[test]
    fn a_listed_origin_is_echoed_with_vary_and_credentials() {
        let c = cors(Some(&["https://app.example"]), true);
        let mut headers = HeaderMap::new();
        headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        decorate(
            &c,
            Some(&HeaderValue::from_static("https://app.example")),
            &mut headers,
        );
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(headers["access-control-allow-credentials"], "true");
        assert_eq!(
            headers["access-control-expose-headers"],
            "X-RateLimit-Remaining"
        );
        assert_eq!(headers["vary"], "Origin");
    }

    #[test]
    fn another_origin_gets_no_cors_header_even_from_the_upstream() {
        let c = cors(Some(&["https://app.example"]), true);
        let mut headers = HeaderMap::new();
        headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        decorate(
            &c,
            Some(&HeaderValue::from_static("https://evil.example")),
            &mut headers,
        );
        assert!(headers.get("access-control-allow-origin").is_none());
        assert!(headers.get("access-control-allow-credentials").is_none());
        assert_eq!(headers["vary"], "Origin");
    }

    #[test]
    fn any_origin_is_a_star_without_credentials() {
        let c = cors(None, false);
        let mut headers = HeaderMap::new();
        decorate(
            &c,
            Some(&HeaderValue::from_static("https://x.example")),
            &mut headers,
        );
        assert_eq!(headers["access-control-allow-origin"], "*");
        assert!(headers.get("access-control-allow-credentials").is_none());
    }

    #[test]
    fn only_preflights_are_answered_and_only_allowed_origins_get_the_lists() {
        let c = cors(Some(&["https://app.example"]), false);
        let answer = preflight(&c, &preflight_request("https://app.example")).unwrap();
        assert_eq!(answer.status(), 204);
        assert_eq!(
            answer.headers()["access-control-allow-methods"],
            "GET, POST"
        );
        assert_eq!(
            answer.headers()["access-control-allow-headers"],
            "Authorization"
        );
        assert_eq!(answer.headers()["access-control-max-age"], "600");

        let refused = preflight(&c, &preflight_request("https://evil.example")).unwrap();
        assert_eq!(refused.status(), 204);
        assert!(refused.headers().is_empty());

        let plain_options = Request::options("/m/x")
            .header("origin", "https://app.example")
            .body(())
            .unwrap();
        assert!(preflight(&c, &plain_options).is_none());
    }
}
