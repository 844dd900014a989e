//! Canonical path check and listen-path routing.
//!
//! The gateway never decodes or normalises a path: it refuses every path whose meaning could differ
//! between us and the upstream (dot segments, encoded separators, backslashes, empty segments). What is
//! left is routed as-is and forwarded as-is, so the path that was authorised is the path the upstream sees.

use std::collections::HashMap;
use std::sync::Arc;

/// Refuses paths that are not in canonical form. Returns a short reason for the 400 body.
pub fn check_canonical(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("the request path must start with '/'");
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err("backslashes are not allowed in the path"),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .ok_or("malformed percent-encoding in the path")?;
                let value = decode_hex_pair(hex).ok_or("malformed percent-encoding in the path")?;
                // Encoded dots, separators and control characters are how path confusion attacks hide
                // from a prefix match; nothing legitimate needs them in a routed path.
                if matches!(value, b'.' | b'/' | b'\\') || value < 0x20 || value == 0x7f {
                    return Err(
                        "encoded '.', '/', '\\' or control characters are not allowed in the path",
                    );
                }
                i += 3;
                continue;
            }
            b if b < 0x20 || b == 0x7f => {
                return Err("control characters are not allowed in the path");
            }
            _ => {}
        }
        i += 1;
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        match segment {
            "." | ".." => return Err("dot segments are not allowed in the path"),
            // An empty segment is only allowed as the trailing slash.
            "" if segments.peek().is_some() => {
                return Err("empty path segments ('//') are not allowed");
            }
            _ => {}
        }
    }
    Ok(())
}

fn decode_hex_pair(hex: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(hex[0])? * 16 + digit(hex[1])?) as u8)
}

/// Maps listen paths to APIs. The longest listen path matching on a segment boundary wins.
#[derive(Debug)]
pub struct Router<T> {
    /// Keyed by the listen path without its trailing `/` (`/movies/` → `/movies`, `/` → ``).
    by_prefix: HashMap<Box<str>, Arc<T>>,
}

impl<T> Router<T> {
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, Arc<T>)>) -> Self {
        let by_prefix = entries
            .into_iter()
            .map(|(listen_path, value)| (listen_path.trim_end_matches('/').into(), value))
            .collect();
        Router { by_prefix }
    }

    /// Finds the API for a canonical path. `/movies` and `/movies/x` match `/movies/`; `/movies-admin`
    /// does not. Costs one hash lookup per path segment at most.
    pub fn route(&self, path: &str) -> Option<&Arc<T>> {
        if self.by_prefix.is_empty() {
            return None;
        }
        // The whole path names the API itself (`/movies` for `/movies/`).
        if let Some(value) = self.by_prefix.get(path.trim_end_matches('/')) {
            return Some(value);
        }
        // Then every shorter prefix that ends just before a '/', longest first.
        let mut end = path.len();
        while let Some(slash) = path[..end].rfind('/') {
            if let Some(value) = self.by_prefix.get(&path[..slash]) {
                return Some(value);
            }
            end = slash;
        }
        None
    }
}

/// The path the upstream receives: the upstream URL's path prefix plus the request path, with the
/// listen path removed when `strip_listen_path` is set.
pub fn upstream_path(path: &str, listen_path: &str, strip: bool, prefix: &str) -> String {
    let rest = if strip {
        // `path` is known to start with the listen path minus its trailing '/'.
        let lp = listen_path.trim_end_matches('/');
        path.get(lp.len()..).unwrap_or("")
    } else {
        path
    };
    let mut out = String::with_capacity(prefix.len() + rest.len() + 1);
    out.push_str(prefix);
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_pass() {
        for path in [
            "/",
            "/movies/",
            "/movies",
            "/movies/a%20b",
            "/a/b.c/d",
            "/a/..b/",
            "/%41",
        ] {
            assert_eq!(check_canonical(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn non_canonical_paths_are_refused() {
        for path in [
            "/movies/../admin",
            "/movies/./x",
            "/movies/..",
            "/movies/%2e%2e/other",
            "/movies/%2E%2E/other",
            "/movies/%2fadmin",
            "/movies/%5cadmin",
            "/movies/%00",
            "/movies\\..\\admin",
            "//movies/",
            "/movies//x",
            "/movies/%zz",
            "/movies/%4",
            "movies",
        ] {
            assert!(check_canonical(path).is_err(), "{path} should be refused");
        }
    }

    fn router() -> Router<&'static str> {
        Router::new([
            ("/movies/", Arc::new("movies")),
            ("/movies/admin/", Arc::new("movies-admin")),
            ("/", Arc::new("root")),
        ])
    }

    #[test]
    fn longest_listen_path_on_a_segment_boundary_wins() {
        let r = router();
        let route = |p: &str| r.route(p).map(|v| **v);
        assert_eq!(route("/movies"), Some("movies"));
        assert_eq!(route("/movies/"), Some("movies"));
        assert_eq!(route("/movies/42"), Some("movies"));
        assert_eq!(route("/movies/admin"), Some("movies-admin"));
        assert_eq!(route("/movies/admin/x/y"), Some("movies-admin"));
        assert_eq!(route("/movies-admin"), Some("root"));
        assert_eq!(route("/MOVIES/"), Some("root"));
    }

    #[test]
    fn no_match_without_a_root_api() {
        let r = Router::new([("/movies/", Arc::new(1))]);
        assert!(r.route("/movies-admin").is_none());
        assert!(r.route("/").is_none());
        assert!(r.route("/MOVIES/").is_none());
        assert!(r.route("/movie").is_none());
    }

    #[test]
    fn upstream_paths() {
        assert_eq!(upstream_path("/movies/a", "/movies/", true, ""), "/a");
        assert_eq!(upstream_path("/movies/", "/movies/", true, ""), "/");
        assert_eq!(upstream_path("/movies", "/movies/", true, ""), "/");
        assert_eq!(upstream_path("/movies/a", "/movies/", true, "/v1"), "/v1/a");
        assert_eq!(upstream_path("/movies", "/movies/", true, "/v1"), "/v1");
        assert_eq!(
            upstream_path("/movies/a", "/movies/", false, ""),
            "/movies/a"
        );
        assert_eq!(
            upstream_path("/movies/a", "/movies/", false, "/v1"),
            "/v1/movies/a"
        );
        assert_eq!(upstream_path("/x/y", "/", true, "/v1"), "/v1/x/y");
    }
}
