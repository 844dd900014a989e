//! Single-value checks shared by the gateway, API, user and policy validation. Each returns the
//! message that follows `FILE: field.path: ` on error.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderName, Uri};

use super::model::Cidr;

pub(crate) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| "not a socket address like 0.0.0.0:8080 or [::]:8080".to_owned())
}

pub(crate) const HTTP_URL: &str = "not an absolute http(s) URL";

/// An absolute `http`/`https` URL with a host, no user info and no fragment; a query only when
/// `allow_query`.
pub(crate) fn http_url(s: &str, allow_query: bool) -> Result<Uri, String> {
    if s.contains('#') {
        return Err("must not have a fragment (`#`)".to_owned());
    }
    let uri: Uri = s.parse().map_err(|_| HTTP_URL.to_owned())?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(HTTP_URL.to_owned());
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!("scheme must be http or https, not `{scheme}`"));
    }
    if authority.as_str().contains('@') {
        return Err("must not contain user info (`user@`)".to_owned());
    }
    if authority.host().is_empty() {
        return Err(HTTP_URL.to_owned());
    }
    if !allow_query && uri.query().is_some() {
        return Err("must not have a query (`?`)".to_owned());
    }
    Ok(uri)
}

/// A browser origin as a CORS allow list names it: `scheme://host[:port]`, nothing after. Returned
/// lowercase, which is how browsers serialise the `Origin` header.
pub(crate) fn origin(s: &str) -> Result<String, String> {
    const EXPECTED: &str = "must be an origin like https://app.example or http://localhost:3000 (no path, no trailing `/`), or `*`";
    let uri: Uri = s.parse().map_err(|_| EXPECTED.to_owned())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some(_), Some(authority))
            if !authority.as_str().contains('@')
                && !authority.host().is_empty()
                && format!("{}://{}", uri.scheme_str().unwrap_or(""), authority) == s =>
        {
            Ok(s.to_ascii_lowercase())
        }
        _ => Err(EXPECTED.to_owned()),
    }
}

/// `localhost`, or a loopback address (127.0.0.0/8, `[::1]`).
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A URL that tollgate sends secrets to (token notifications): `https`, or `http` to a loopback host
/// only, so that tokens never cross a network in clear.
pub(crate) fn secret_receiver_url(s: &str) -> Result<Uri, String> {
    let uri = http_url(s, true)?;
    if uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http"))
        && !is_loopback_host(uri.host().unwrap_or_default())
    {
        return Err("http is only allowed for loopback hosts (127.0.0.1, [::1], localhost); use https, since notifications carry tokens".to_owned());
    }
    Ok(uri)
}

/// An OAuth redirect URI (RFC 6749 §3.1.2, RFC 8252): absolute, no fragment; `http` only for a
/// loopback host, since a code sent over plain HTTP anywhere else can be read on the way. Private-use
/// schemes of native apps (`com.example.app:/cb`) are allowed.
pub(crate) fn redirect_uri(s: &str) -> Result<(), String> {
    const NOT_ABSOLUTE: &str = "not an absolute URL";
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(NOT_ABSOLUTE.to_owned());
    }
    let Some((scheme, rest)) = s.split_once(':') else {
        return Err(NOT_ABSOLUTE.to_owned());
    };
    let mut chars = scheme.chars();
    let scheme_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.is_empty() {
        return Err(NOT_ABSOLUTE.to_owned());
    }
    if s.contains('#') {
        return Err("must not have a fragment (`#`)".to_owned());
    }
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "http" | "https" => {
            let uri = http_url(s, true).map_err(|_| NOT_ABSOLUTE.to_owned())?;
            if scheme == "http" && !is_loopback_host(uri.host().unwrap_or_default()) {
                return Err("http is only allowed for loopback hosts (127.0.0.1, [::1], localhost); use https".to_owned());
            }
            Ok(())
        }
        // These run script or carry content in the browser that follows the redirect.
        "javascript" | "data" | "vbscript" | "file" => {
            Err(format!("scheme `{scheme}` is not allowed"))
        }
        _ => Ok(()),
    }
}

/// RFC 6749 §3.3 scope-token: one or more of %x21 / %x23-5B / %x5D-7E.
pub(crate) fn scope(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if s.bytes()
        .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
    {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a valid scope (visible ASCII characters except `\"` and `\\`, no spaces)"
        ))
    }
}

pub(crate) const ARGON2ID: &str =
    "not an argon2id PHC string (make one with `tollgate hash-secret`)";

/// Checks that a stored hash is an argon2id PHC string the verifier will accept, so a typo shows up at
/// `tollgate check` rather than as a login that can never succeed.
pub(crate) fn argon2id(s: &str) -> Result<(), String> {
    let hash = argon2::PasswordHash::new(s).map_err(|_| ARGON2ID.to_owned())?;
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return Err(format!(
            "uses `{}`, but only argon2id is accepted",
            hash.algorithm
        ));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(ARGON2ID.to_owned());
    }
    let params = argon2::Params::try_from(&hash)
        .map_err(|e| format!("argon2id parameters are invalid: {e}"))?;
    argon2_cost(&params)
}

/// Largest argon2 memory cost accepted in a stored hash, in KiB (64 MiB; `tollgate hash-secret` uses
/// 19 MiB). The verifier runs with the hash's own parameters, so without a bound one pasted hash with
/// `m=4194304` would make every verification of it take 4 GiB, and `limits.secret_verifications`
/// would no longer bound memory.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 64 * 1024;
/// Largest argon2 time cost (passes) and parallelism (lanes) accepted in a stored hash.
pub const MAX_ARGON2_PASSES: u32 = 10;
pub const MAX_ARGON2_LANES: u32 = 8;

/// Whether the cost of verifying against a hash with these parameters is within the bounds above.
pub fn argon2_cost(params: &argon2::Params) -> Result<(), String> {
    if params.m_cost() > MAX_ARGON2_MEMORY_KIB
        || params.t_cost() > MAX_ARGON2_PASSES
        || params.p_cost() > MAX_ARGON2_LANES
    {
        return Err(format!(
            "argon2id parameters m={}, t={}, p={} exceed the accepted maximum m={MAX_ARGON2_MEMORY_KIB}, t={MAX_ARGON2_PASSES}, p={MAX_ARGON2_LANES} (make one with `tollgate hash-secret`)",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    Ok(())
}

pub(crate) fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("`{s}` is not a valid header name"))
}

/// `10.0.0.0/8`, `::1/128`, or a bare address for a single host.
pub(crate) fn cidr(s: &str) -> Result<Cidr, String> {
    const EXPECTED: &str = "not a CIDR like 10.0.0.0/8 or ::1/128";
    let (addr, prefix) = match s.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| EXPECTED.to_owned())?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => {
                    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
                    return Err(format!(
                        "prefix length {p} is out of range (0–{max} for {family})"
                    ));
                }
            }
        }
        Some(_) => return Err(EXPECTED.to_owned()),
    };
    Ok(Cidr { addr, prefix })
}

/// RFC 6749 Appendix A.1: client ids are visible ASCII; tollgate caps them at 128 characters.
pub(crate) fn client_id(s: &str) -> Result<(), String> {
    if (1..=128).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
        Ok(())
    } else {
        Err("must be 1–128 visible ASCII characters (no spaces)".to_owned())
    }
}

/// Ids of policies created through the admin API: the client id rule, so an id can be written in a
/// path segment, a header or a log line without escaping surprises. (policies.yaml only requires a
/// non-empty id, for compatibility with existing files.)
pub(crate) fn stored_policy_id(s: &str) -> Result<(), String> {
    client_id(s)
}

pub(crate) fn api_id(s: &str) -> Result<(), String> {
    if (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "`{s}` must be 1–64 characters of A-Z, a-z, 0-9, `_` and `-`"
        ))
    }
}

/// A listen path is compared against canonical request paths, so it must be canonical itself: one
/// that could never equal a canonical path would silently never match.
pub(crate) fn listen_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') || !s.ends_with('/') {
        return Err("must start and end with `/`".to_owned());
    }
    if let Some(c) = s.chars().find(|&c| {
        matches!(c, '%' | '\\' | '?' | '#') || c.is_whitespace() || c.is_control() || !c.is_ascii()
    }) {
        let shown = if c.is_whitespace() || c.is_control() {
            "whitespace or control characters".to_owned()
        } else {
            format!("`{c}`")
        };
        return Err(format!(
            "must not contain {shown} (`%`, `\\`, `?`, `#`, whitespace and non-ASCII characters are not allowed)"
        ));
    }
    if s.len() > 1 {
        let inner = &s[1..s.len() - 1];
        if inner
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err("must not contain empty, `.` or `..` segments".to_owned());
        }
    }
    Ok(())
}

/// Claims the gateway sets itself in every access token; configured claims may not replace them.
const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "sid",
    "typ",
    "cnf",
    "act",
];

pub(crate) fn claim_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        Err("claim names must not be empty".to_owned())
    } else if RESERVED_CLAIMS.contains(&s) {
        Err(format!(
            "claim `{s}` is set by the gateway and cannot be configured"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::PHC;

    #[test]
    fn socket_addrs() {
        assert!(socket_addr("0.0.0.0:8080").is_ok());
        assert!(socket_addr("[::1]:8081").is_ok());
        assert_eq!(
            socket_addr("localhost:8080"),
            Err("not a socket address like 0.0.0.0:8080 or [::]:8080".to_owned())
        );
        assert!(socket_addr("8080").is_err());
    }

    #[test]
    fn http_urls() {
        let uri = http_url("http://127.0.0.1:9000/v1", false).unwrap();
        assert_eq!(uri.path(), "/v1");
        assert!(http_url("https://example.com", false).is_ok());
        assert!(http_url("HTTPS://example.com", false).is_ok());
        assert_eq!(http_url("/relative", false), Err(HTTP_URL.to_owned()));
        assert_eq!(http_url("example.com", false), Err(HTTP_URL.to_owned()));
        assert_eq!(http_url("not a url", false), Err(HTTP_URL.to_owned()));
        assert_eq!(http_url("", false), Err(HTTP_URL.to_owned()));
        assert_eq!(
            http_url("ftp://example.com/", false),
            Err("scheme must be http or https, not `ftp`".to_owned())
        );
        assert_eq!(
            http_url("http://example.com/?a=1", false),
            Err("must not have a query (`?`)".to_owned())
        );
        assert!(http_url("http://example.com/?a=1", true).is_ok());
        assert_eq!(
            http_url("http://example.com/#x", true),
            Err("must not have a fragment (`#`)".to_owned())
        );
        assert_eq!(
            http_url("http://user:pw@example.com/", false),
            Err("must not contain user info (`user@`)".to_owned())
        );
    }

    #[test]
    fn secret_receivers_are_https_or_loopback() {
        for ok in [
            "https://hooks.example.com/tollgate",
            "http://127.0.0.1:7000/hook",
            "http://127.0.0.2/hook",
            "http://[::1]:7000/hook",
            "http://localhost/hook",
        ] {
            assert!(secret_receiver_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://hooks.example.com/tollgate",
            "http://10.0.0.1/hook",
            "http://localhost.example.com/hook",
        ] {
            assert!(
                secret_receiver_url(bad).is_err_and(|e| e.contains("use https")),
                "{bad}"
            );
        }
    }

    #[test]
    fn redirect_uris() {
        for ok in [
            "https://app.example/cb",
            "https://app.example/cb?x=1",
            "http://localhost:3000/callback",
            "http://127.0.0.1/cb",
            "http://[::1]:8000/cb",
            "com.example.app:/oauth2redirect",
        ] {
            assert_eq!(redirect_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/callback",
            "callback",
            "",
            "https://app.example/c b",
            "1http://x/",
            "http:",
        ] {
            assert_eq!(
                redirect_uri(bad),
                Err("not an absolute URL".to_owned()),
                "{bad}"
            );
        }
        assert_eq!(
            redirect_uri("https://app.example/cb#frag"),
            Err("must not have a fragment (`#`)".to_owned())
        );
        assert_eq!(
            redirect_uri("http://app.example/cb"),
            Err(
                "http is only allowed for loopback hosts (127.0.0.1, [::1], localhost); use https"
                    .to_owned()
            )
        );
        assert_eq!(
            redirect_uri("javascript:alert(1)"),
            Err("scheme `javascript` is not allowed".to_owned())
        );
    }

    #[test]
    fn scopes() {
        assert_eq!(scope("read"), Ok(()));
        assert_eq!(scope("movies:read"), Ok(()));
        assert_eq!(scope(""), Err("must not be empty".to_owned()));
        assert_eq!(
            scope("read write"),
            Err("`read write` is not a valid scope (visible ASCII characters except `\"` and `\\`, no spaces)".to_owned())
        );
        assert!(scope("a\"b").is_err());
        assert!(scope("a\\b").is_err());
        assert!(scope("é").is_err());
    }

    #[test]
    fn argon2id_hashes() {
        assert_eq!(argon2id(PHC), Ok(()));
        assert_eq!(argon2id("hunter2"), Err(ARGON2ID.to_owned()));
        assert_eq!(argon2id(""), Err(ARGON2ID.to_owned()));
        assert_eq!(
            argon2id("$argon2id$v=19$m=256,t=2,p=1"),
            Err(ARGON2ID.to_owned())
        );
        assert_eq!(
            argon2id(
                "$argon2i$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4"
            ),
            Err("uses `argon2i`, but only argon2id is accepted".to_owned())
        );
        assert!(argon2id("$argon2id$v=19$m=256,t=2,p=1,zz=3$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4").is_err());
        // Valid, but one verification would take 4 GiB.
        assert!(
            argon2id("$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4")
                .is_err_and(|e| e.contains("exceed the accepted maximum"))
        );
    }

    #[test]
    fn header_names() {
        assert_eq!(header_name("X-User-Id").unwrap().as_str(), "x-user-id");
        assert_eq!(
            header_name("Bad Header"),
            Err("`Bad Header` is not a valid header name".to_owned())
        );
        assert!(header_name("").is_err());
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            cidr("10.0.0.0/8"),
            Ok(Cidr {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 8
            })
        );
        assert_eq!(
            cidr("::1/128"),
            Ok(Cidr {
                addr: "::1".parse().unwrap(),
                prefix: 128
            })
        );
        assert_eq!(
            cidr("192.168.1.7"),
            Ok(Cidr {
                addr: "192.168.1.7".parse().unwrap(),
                prefix: 32
            })
        );
        assert_eq!(
            cidr("fd00::"),
            Ok(Cidr {
                addr: "fd00::".parse().unwrap(),
                prefix: 128
            })
        );
        assert_eq!(cidr("0.0.0.0/0").map(|c| c.prefix), Ok(0));
        assert_eq!(
            cidr("10.0.0.0/33"),
            Err("prefix length 33 is out of range (0–32 for IPv4)".to_owned())
        );
        assert_eq!(
            cidr("::/129"),
            Err("prefix length 129 is out of range (0–128 for IPv6)".to_owned())
        );
        assert_eq!(
            cidr("::/999999"),
            Err("prefix length 999999 is out of range (0–128 for IPv6)".to_owned())
        );
        for bad in [
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "host",
            "",
        ] {
            assert_eq!(
                cidr(bad),
                Err("not a CIDR like 10.0.0.0/8 or ::1/128".to_owned()),
                "{bad}"
            );
        }
    }

    #[test]
    fn client_ids() {
        assert_eq!(client_id("movies_app"), Ok(()));
        assert_eq!(client_id(&"x".repeat(128)), Ok(()));
        let msg = Err("must be 1–128 visible ASCII characters (no spaces)".to_owned());
        assert_eq!(client_id(""), msg);
        assert_eq!(client_id(&"x".repeat(129)), msg);
        assert_eq!(client_id("a b"), msg);
        assert_eq!(client_id("café"), msg);
    }

    #[test]
    fn api_ids() {
        assert_eq!(api_id("movies-v2_x"), Ok(()));
        assert_eq!(api_id(&"a".repeat(64)), Ok(()));
        assert_eq!(
            api_id("my movies"),
            Err("`my movies` must be 1–64 characters of A-Z, a-z, 0-9, `_` and `-`".to_owned())
        );
        assert!(api_id("").is_err());
        assert!(api_id(&"a".repeat(65)).is_err());
    }

    #[test]
    fn listen_paths() {
        for ok in ["/", "/movies/", "/a/b-c/", "/v1.0/"] {
            assert_eq!(listen_path(ok), Ok(()), "{ok}");
        }
        for bad in ["movies/", "/movies", ""] {
            assert_eq!(
                listen_path(bad),
                Err("must start and end with `/`".to_owned()),
                "{bad}"
            );
        }
        for bad in ["//", "/a//b/", "/./", "/a/../", "/../"] {
            assert_eq!(
                listen_path(bad),
                Err("must not contain empty, `.` or `..` segments".to_owned()),
                "{bad}"
            );
        }
        const TAIL: &str =
            "(`%`, `\\`, `?`, `#`, whitespace and non-ASCII characters are not allowed)";
        assert_eq!(
            listen_path("/a%2f/"),
            Err(format!("must not contain `%` {TAIL}"))
        );
        assert_eq!(
            listen_path("/a\\b/"),
            Err(format!("must not contain `\\` {TAIL}"))
        );
        assert_eq!(
            listen_path("/a?/"),
            Err(format!("must not contain `?` {TAIL}"))
        );
        assert_eq!(
            listen_path("/a#/"),
            Err(format!("must not contain `#` {TAIL}"))
        );
        assert_eq!(
            listen_path("/a b/"),
            Err(format!(
                "must not contain whitespace or control characters {TAIL}"
            ))
        );
        assert_eq!(
            listen_path("/é/"),
            Err(format!("must not contain `é` {TAIL}"))
        );
    }

    #[test]
    fn claim_names() {
        assert_eq!(claim_name("tier"), Ok(()));
        assert_eq!(
            claim_name("sub"),
            Err("claim `sub` is set by the gateway and cannot be configured".to_owned())
        );
        assert_eq!(
            claim_name(""),
            Err("claim names must not be empty".to_owned())
        );
    }
}
