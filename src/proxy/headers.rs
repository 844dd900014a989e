//! Header rules for forwarding: hop-by-hop removal (RFC 9110 §7.6.1) and the `X-Forwarded-*` family.
//!
//! Order matters: hop-by-hop headers (including every header a client names in `Connection`) are removed
//! first, and only then are our own headers added, so `Connection: X-Forwarded-For` cannot remove them.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::Cidr;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes `Connection`, every header it names, and the fixed hop-by-hop set.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Runs up to three times per proxied request (request twice, response once) and usually finds
    // nothing: one pass over the names present is cheaper than hashing the ten names to remove. The
    // headers a `Connection` header names only matter when there is a `Connection` header.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Collect the names first: removing while iterating the `Connection` values is not possible.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        if let Ok(value) = value.to_str() {
            for token in value.split(',') {
                if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) {
                    named.push(name);
                }
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &PROXY_CONNECTION,
    ] {
        headers.remove(name);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == PROXY_CONNECTION
}

/// The `X-Forwarded-For` value to send upstream. A trusted peer's incoming chain is kept and the peer
/// appended; from anyone else the incoming value is a claim we cannot check, so only the peer remains.
pub fn forwarded_for(incoming: &HeaderMap, peer: IpAddr, trusted: &[Cidr]) -> HeaderValue {
    if trusted.iter().any(|cidr| cidr.contains(peer)) {
        let peer_text = peer.to_string();
        let chain: Vec<&str> = incoming
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if !chain.is_empty() {
            let joined = format!("{}, {}", chain.join(", "), peer_text);
            if let Ok(value) = HeaderValue::from_str(&joined) {
                return value;
            }
        }
    }
    peer_header_value(peer)
}

/// An IP address as a header value, formatted on the stack (one allocation, for the value itself).
pub fn peer_header_value(peer: IpAddr) -> HeaderValue {
    let mut text = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    // An IP address (at most 45 characters) always fits, and always forms a valid header value.
    if std::io::Write::write_fmt(&mut cursor, format_args!("{peer}")).is_ok() {
        let len = usize::try_from(cursor.position()).unwrap_or(0);
        if let Ok(value) = HeaderValue::from_bytes(&text[..len]) {
            return value;
        }
    }
    HeaderValue::from_static("unknown")
}

/// The client's address as the gateway believes it: the right-most untrusted hop of a trusted chain, or
/// the peer itself. Used for per-address limits (login failures), so a client cannot pick its own address.
pub fn client_ip(incoming: &HeaderMap, peer: IpAddr, trusted: &[Cidr]) -> IpAddr {
    if !trusted.iter().any(|cidr| cidr.contains(peer)) {
        return peer;
    }
    let hops: Vec<IpAddr> = incoming
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !trusted.iter().any(|cidr| cidr.contains(*ip)))
        .unwrap_or(peer)
}

/// Whether two header names are the same once ASCII case is folded and `_` is read as `-`: CGI,
/// WSGI, Rack, PHP and others map `X_User_Id` and `X-User-Id` to the same `HTTP_X_USER_ID`, so for
/// the upstream they are one header. No allocation.
pub fn same_normalised_name(a: &[u8], b: &[u8]) -> bool {
    let fold = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| fold(x) == fold(y))
}

/// Headers that claim something about the hops before the gateway (client address, scheme, host).
fn is_forwarding_header(name: &[u8]) -> bool {
    const PREFIX: &[u8] = b"x-forwarded-";
    name.get(..PREFIX.len())
        .is_some_and(|start| same_normalised_name(start, PREFIX))
        || [
            &b"forwarded"[..],
            b"x-real-ip",
            b"true-client-ip",
            b"x-client-ip",
        ]
        .iter()
        .any(|known| same_normalised_name(name, known))
}

/// Drops the client-sent headers an upstream could mistake for ones the gateway vouches for, by
/// their normalised name ([`same_normalised_name`]):
/// - from every peer, any spelling of a `forward_claims` header (the gateway sets those from the
///   token);
/// - from a peer outside `trusted_proxies`, the forwarding family (`X-Forwarded-*`, `Forwarded`,
///   `X-Real-IP`, `True-Client-IP`, `X-Client-IP`) in any spelling;
/// - from a trusted proxy, only non-canonical spellings of that family (`X_Forwarded_For`): a proxy
///   writes hyphens, so an underscore copy came from its client and would shadow the real one.
///
/// Runs once per proxied request: one pass over the names present, and no allocation unless a
/// header has to go.
pub fn drop_spoofable(headers: &mut HeaderMap, identity: &[(HeaderName, String)], trusted: bool) {
    let doomed = |name: &HeaderName| {
        let name = name.as_str().as_bytes();
        identity
            .iter()
            .any(|(own, _)| same_normalised_name(name, own.as_str().as_bytes()))
            || (is_forwarding_header(name) && (!trusted || name.contains(&b'_')))
    };
    // `Vec::new` does not allocate; only a match pushes.
    let mut remove: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if doomed(name) {
            remove.push(name.clone());
        }
    }
    for name in remove {
        headers.remove(name);
    }
}

/// The host part of a `Host` header or `:authority` (`Example.COM:8080` → `Example.COM`,
/// `[::1]:443` → `[::1]`) with one trailing dot removed, as sent (compare it ignoring ASCII case);
/// `None` when it is not a well-formed `host[:port]` (RFC 9110 §7.2: no user info, port digits only).
pub fn host_name(authority: &str) -> Option<&str> {
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']')?;
        let (host, rest) = authority.split_at(close + 1);
        let inner = &host[1..close];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        let port = match rest.strip_prefix(':') {
            Some(port) => port,
            None if rest.is_empty() => "",
            None => return None,
        };
        (host, port)
    } else {
        let (host, port) = authority.split_once(':').unwrap_or((authority, ""));
        let host = host.strip_suffix('.').unwrap_or(host);
        let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
        if !host.bytes().all(valid) {
            return None;
        }
        (host, port)
    };
    if host.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(host)
}

/// A request id is kept when a client sends a sane one (so traces join up across systems), else made.
pub fn valid_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        let (addr, prefix) = s.split_once('/').unwrap();
        Cidr {
            addr: addr.parse().unwrap(),
            prefix: prefix.parse().unwrap(),
        }
    }

    #[test]
    fn connection_named_headers_and_fixed_set_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret, x-other"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn untrusted_peer_xff_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(forwarded_for(&h, peer, &[]), "10.0.0.9");
        assert_eq!(client_ip(&h, peer, &[]), peer);
    }

    #[test]
    fn trusted_peer_xff_is_extended() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 10.0.0.2"),
        );
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let trusted = [cidr("10.0.0.0/8")];
        assert_eq!(
            forwarded_for(&h, peer, &trusted),
            "1.2.3.4, 10.0.0.2, 10.0.0.9"
        );
        assert_eq!(
            client_ip(&h, peer, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn request_ids() {
        assert!(valid_request_id(&HeaderValue::from_static("abc-123_x.y:z")));
        assert!(!valid_request_id(&HeaderValue::from_static("")));
        assert!(!valid_request_id(&HeaderValue::from_static("a b")));
    }
}
