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

/// The fixed hop-by-hop set (RFC 9110 §7.6.1, plus the `Keep-Alive` and `Proxy-Connection` of
/// HTTP/1.0 clients), in the order of the bits [`hop_by_hop_bit`] gives them.
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &PROXY_CONNECTION,
];

/// Removes `Connection`, every header it names, and the fixed hop-by-hop set.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Runs up to three times per proxied request (request twice, response once). One pass over the
    // names present finds which of the fixed set are there; only those are removed, each removal
    // costing a hash of its name. A typical upstream answer carries `Connection: keep-alive` and
    // nothing else of the set: one removal instead of ten.
    let present = headers
        .keys()
        .fold(0u16, |bits, name| bits | hop_by_hop_bit(name.as_str()));
    if present == 0 {
        return;
    }
    // The headers a `Connection` header names; collected first, as removing while iterating the
    // `Connection` values is not possible. Names of the fixed set are removed below anyway.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        if let Ok(value) = value.to_str() {
            for token in value.split(',') {
                let token = token.trim();
                if hop_by_hop_bit_folded(token) == 0
                    && let Ok(name) = HeaderName::from_bytes(token.as_bytes())
                {
                    named.push(name);
                }
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    for (bit, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << bit) != 0 {
            headers.remove(*name);
        }
    }
}

/// The bit of a (lower-case, as `HeaderName` keeps them) name in [`HOP_BY_HOP`], or 0.
fn hop_by_hop_bit(name: &str) -> u16 {
    match name {
        "connection" => 1,
        "keep-alive" => 1 << 1,
        "te" => 1 << 2,
        "trailer" => 1 << 3,
        "transfer-encoding" => 1 << 4,
        "upgrade" => 1 << 5,
        "proxy-authenticate" => 1 << 6,
        "proxy-authorization" => 1 << 7,
        "proxy-connection" => 1 << 8,
        _ => 0,
    }
}

/// [`hop_by_hop_bit`] for a token from a `Connection` value, which may be in any case. Compared in
/// place (no lower-cased copy to validate as UTF-8 again): this runs for every upstream answer's
/// `Connection: keep-alive`.
fn hop_by_hop_bit_folded(token: &str) -> u16 {
    HOP_BY_HOP
        .iter()
        .position(|name| name.as_str().eq_ignore_ascii_case(token))
        .map_or(0, |bit| 1 << bit)
}

/// The `X-Forwarded-For` value to send upstream. A trusted peer's incoming chain is kept and the peer
/// appended; from anyone else the incoming value is a claim we cannot check, so only the peer remains.
/// `peer_trusted`: the peer is in `trusted_proxies` (the caller knows it already).
pub fn forwarded_for(incoming: &HeaderMap, peer: IpAddr, peer_trusted: bool) -> HeaderValue {
    if peer_trusted {
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
/// IPv4, the common case, is written digit by digit: `write!` through `Display` cost about 1,300
/// instructions per request (docs/benchmarks.md).
pub fn peer_header_value(peer: IpAddr) -> HeaderValue {
    let mut text = [0u8; 64];
    let len = match peer {
        IpAddr::V4(v4) => ipv4_text(v4, &mut text),
        IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            // An IP address (at most 45 characters) always fits, and always forms a valid header value.
            if std::io::Write::write_fmt(&mut cursor, format_args!("{peer}")).is_err() {
                return HeaderValue::from_static("unknown");
            }
            usize::try_from(cursor.position()).unwrap_or(0)
        }
    };
    HeaderValue::from_bytes(&text[..len]).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Writes `a.b.c.d` at the start of `out` (15 bytes at most) and returns its length.
fn ipv4_text(ip: std::net::Ipv4Addr, out: &mut [u8; 64]) -> usize {
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            out[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            out[len] = b'0' + (octet / 10) % 10;
            len += 1;
        }
        out[len] = b'0' + octet % 10;
        len += 1;
    }
    len
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
    fn peer_addresses_as_header_values() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.100.9.199",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.1",
        ] {
            let parsed: IpAddr = ip.parse().expect("an address");
            assert_eq!(peer_header_value(parsed), ip, "{ip}");
        }
    }

    #[test]
    fn connection_tokens_match_the_fixed_set_in_any_case() {
        for (bit, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_bit(name.as_str()), 1 << bit, "{name}");
            let upper = name.as_str().to_ascii_uppercase();
            assert_eq!(hop_by_hop_bit_folded(&upper), 1 << bit, "{upper}");
        }
        assert_eq!(hop_by_hop_bit_folded("Keep-Alive"), 1 << 1);
        for other in [
            "",
            "x-user-id",
            "keep-alive2",
            "connectio",
            "proxy-authorization-x",
        ] {
            assert_eq!(hop_by_hop_bit_folded(other), 0, "{other}");
        }
    }

    #[test]
    fn every_fixed_hop_by_hop_header_goes_with_or_without_connection() {
        for name in HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            h.insert("x-kept", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(name), "{name} was forwarded");
            assert!(h.contains_key("x-kept"), "{name} took x-kept with it");
        }
        // A name the client spells in capitals in `Connection`, fixed-set or not.
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("Keep-Alive, X-Upper"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-upper", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "left: {h:?}");
    }

    #[test]
    fn untrusted_peer_xff_is_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(forwarded_for(&h, peer, false), "10.0.0.9");
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
            forwarded_for(&h, peer, trusted.iter().any(|c| c.contains(peer))),
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
