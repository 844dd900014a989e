//! Canonical paths and listen-path routing.
//!
//! The gateway routes and forwards one path: the request path with percent-encoded *unreserved*
//! characters (RFC 3986 §2.3: letters, digits, `-` `.` `_` `~`) decoded, since every server reads
//! `%61dmin` as `admin` and a prefix match on the raw form would miss it. Nothing else is decoded or
//! normalised: paths whose meaning could still differ between us and the upstream (dot segments, literal
//! or decoded from `%2E`; encoded separators `%2F` `%5C`; control characters; backslashes; empty
//! segments) are refused, so the path that was authorised is the path the upstream sees.
//!
//! `;` starts "path parameters" in Tomcat, Spring, Jetty and others (`/admin;x/y` is served as
//! `/admin/y`); see [`check_semicolons`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// The canonical form of `path`: unreserved characters decoded, everything else exactly as sent.
/// Borrows when there is nothing to decode (the common case costs no allocation). Errors are short
/// reasons for the 400 body.
pub fn canonical(path: &str) -> Result<Cow<'_, str>, &'static str> {
    if !path.starts_with('/') {
        return Err("the request path must start with '/'");
    }
    let bytes = path.as_bytes();
    // Filled only from the first encoded unreserved character on.
    let mut decoded: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err("backslashes are not allowed in the path"),
            b'%' => {
                let value = bytes
                    .get(i + 1..i + 3)
                    .and_then(decode_hex_pair)
                    .ok_or("malformed percent-encoding in the path")?;
                // Encoded separators and control characters are how path confusion hides from a
                // prefix match; decoding them would change the path's structure, keeping them
                // encoded leaves the upstream to guess. Nothing legitimate needs them.
                if matches!(value, b'/' | b'\\') || value < 0x20 || value == 0x7f {
                    return Err(
                        "encoded '/', '\\' or control characters are not allowed in the path",
                    );
                }
                if is_unreserved(value) {
                    decoded
                        .get_or_insert_with(|| {
                            let mut out = Vec::with_capacity(bytes.len());
                            out.extend_from_slice(&bytes[..i]);
                            out
                        })
                        .push(value);
                } else if let Some(out) = decoded.as_mut() {
                    out.extend_from_slice(&bytes[i..i + 3]);
                }
                i += 3;
                continue;
            }
            b if b < 0x20 || b == 0x7f => {
                return Err("control characters are not allowed in the path");
            }
            b => {
                if let Some(out) = decoded.as_mut() {
                    out.push(b);
                }
            }
        }
        i += 1;
    }
    let path = match decoded {
        None => Cow::Borrowed(path),
        // Only ASCII bytes were decoded into a valid UTF-8 string, so this cannot fail; refusing
        // is still the answer if it ever did.
        Some(out) => {
            Cow::Owned(String::from_utf8(out).map_err(|_| "the request path is not valid UTF-8")?)
        }
    };
    check_segments(&path)?;
    Ok(path)
}

/// Refuses paths that are not in canonical form (see [`canonical`]).
pub fn check_canonical(path: &str) -> Result<(), &'static str> {
    canonical(path).map(|_| ())
}

/// Dot segments (also those decoded from `%2E`) and empty segments other than the trailing slash.
fn check_segments(path: &str) -> Result<(), &'static str> {
    let mut segments = path.get(1..).unwrap_or("").split('/').peekable();
    while let Some(segment) = segments.next() {
        match segment {
            "." | ".." => return Err("dot segments are not allowed in the path"),
            "" if segments.peek().is_some() => {
                return Err("empty path segments ('//') are not allowed");
            }
            _ => {}
        }
    }
    Ok(())
}

/// RFC 3986 §2.3: decoding these never changes what a URI means.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn decode_hex_pair(hex: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    let (high, low) = (*hex.first()?, *hex.get(1)?);
    u8::try_from(digit(high)? * 16 + digit(low)?).ok()
}

/// The path as servers that read `;` as the start of path parameters see it: `;...` removed from
/// every segment (`/pub/admin;x/y` → `/pub/admin/y`, `/a/..;/b` → `/a/../b`).
pub fn without_path_parameters(path: &str) -> Cow<'_, str> {
    if !path.contains(';') {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(segment.split(';').next().unwrap_or(""));
    }
    Cow::Owned(out)
}

/// Decides a canonical path that contains `;` against the API it routed to (`routed`). It passes
/// only when that API allows semicolons *and* the path with its path parameters removed is
/// canonical too and routes to the same API: otherwise an upstream that strips them (Tomcat,
/// Spring, Jetty) would serve a path another API, with other auth, owns (`/pub/admin;x/y` routes to
/// `/pub/` here but is `/pub/admin/y` to Tomcat).
pub fn check_semicolons<T>(
    router: &Router<T>,
    path: &str,
    routed: &Arc<T>,
    allow_semicolons: bool,
) -> Result<(), &'static str> {
    if !path.contains(';') {
        return Ok(());
    }
    if !allow_semicolons {
        return Err("';' is not allowed in the path of this API");
    }
    let stripped = without_path_parameters(path);
    check_segments(&stripped)
        .map_err(|_| "the path without its ';' parameters has dot or empty segments")?;
    match router.route(&stripped) {
        Some(other) if Arc::ptr_eq(other, routed) => Ok(()),
        _ => Err("the path without its ';' parameters belongs to another API"),
    }
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

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &Arc<T>> {
        self.by_prefix.values()
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
    upstream_target(path, listen_path, strip, prefix, None)
}

/// [`upstream_path`] with the query appended: the request target sent upstream, built in one
/// allocation of the right size that becomes the upstream URI's path-and-query as it is.
pub fn upstream_target(
    path: &str,
    listen_path: &str,
    strip: bool,
    prefix: &str,
    query: Option<&str>,
) -> String {
    let rest = if strip {
        // `path` is known to start with the listen path minus its trailing '/'.
        let lp = listen_path.trim_end_matches('/');
        path.get(lp.len()..).unwrap_or("")
    } else {
        path
    };
    let query_len = query.map_or(0, |q| q.len() + 1);
    let mut out = String::with_capacity(prefix.len() + rest.len() + 1 + query_len);
    out.push_str(prefix);
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
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
            "/movies/%2Fadmin",
            "/movies/%0a",
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

    #[test]
    fn unreserved_characters_are_decoded_and_nothing_else() {
        let cases = [
            ("/pub/%61dmin/y", "/pub/admin/y"),
            ("/pub/%41%5a%7E%2d%5F%30", "/pub/AZ~-_0"),
            ("/a%2Eb/c", "/a.b/c"),
            ("/a%20b/%3B/%25", "/a%20b/%3B/%25"),
            ("/%61%2541", "/a%2541"),
            ("/%C3%A9", "/%C3%A9"),
        ];
        for (raw, expected) in cases {
            assert_eq!(canonical(raw).as_deref(), Ok(expected), "{raw}");
        }
        assert!(matches!(canonical("/plain/path"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn decoded_dot_segments_are_refused_like_literal_ones() {
        for path in ["/a/%2E/b", "/a/%2e%2E/b", "/a/.%2e", "/a/%2E%2E"] {
            assert_eq!(
                canonical(path),
                Err("dot segments are not allowed in the path"),
                "{path}"
            );
        }
    }

    #[test]
    fn path_parameters_are_removed_per_segment() {
        assert_eq!(without_path_parameters("/pub/admin;x/y"), "/pub/admin/y");
        assert_eq!(without_path_parameters("/a/..;/b;c=d;e"), "/a/../b");
        assert_eq!(without_path_parameters("/;x"), "/");
        assert!(matches!(without_path_parameters("/a/b"), Cow::Borrowed(_)));
    }

    #[test]
    fn semicolons_need_the_api_to_allow_them_and_must_not_change_the_route() {
        let r = Router::new([
            ("/pub/", Arc::new("pub")),
            ("/pub/admin/", Arc::new("admin")),
        ]);
        let check = |path: &str, allow: bool| {
            let routed = r.route(path).expect("routed");
            check_semicolons(&r, path, routed, allow)
        };
        assert_eq!(check("/pub/x", false), Ok(()));
        assert!(check("/pub/admin;x/y", false).is_err());
        assert_eq!(
            check("/pub/admin;x/y", true),
            Err("the path without its ';' parameters belongs to another API")
        );
        assert!(check("/pub/x/..;/admin/y", true).is_err());
        assert_eq!(check("/pub/a;jsessionid=1/b", true), Ok(()));
        assert_eq!(check("/pub/admin/a;v=2", true), Ok(()));
        assert!(check("/pub/admin/a;v=2", false).is_err());
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
        assert_eq!(
            upstream_target("/movies", "/movies/", true, "", Some("a=1&b")),
            "/?a=1&b"
        );
        assert_eq!(
            upstream_target("/movies/x", "/movies/", true, "/v1", Some("")),
            "/v1/x?"
        );
    }
}
