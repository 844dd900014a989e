//! Session ids of stateless grants: the (API, client, user) a token counts under, spelled out in the id
//! itself because nothing is stored for it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The session id of a stateless grant: the same for every token of one (API, client, user), so
/// that rate limits and quotas count per client and user. It spells out the three names (base64url,
/// so that any byte of a username is safe in a key) because no record of it is stored: the admin API
/// reads them back from the id ([`parse_stateless_sid`]). The token already names all three.
pub fn stateless_sid(api_id: &str, client_id: &str, username: Option<&str>) -> String {
    let mut sid = format!(
        "{STATELESS_SID_PREFIX}{}.{}",
        URL_SAFE_NO_PAD.encode(api_id),
        URL_SAFE_NO_PAD.encode(client_id)
    );
    if let Some(user) = username {
        sid.push('.');
        sid.push_str(&URL_SAFE_NO_PAD.encode(user));
    }
    sid
}

/// Marks a stateless session id; random session ids never contain a dot.
const STATELESS_SID_PREFIX: &str = "st.";

/// The (API, client, user) a stateless session id names; `None` for any other id.
pub fn parse_stateless_sid(sid: &str) -> Option<(String, String, Option<String>)> {
    let rest = sid.strip_prefix(STATELESS_SID_PREFIX)?;
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|name| !name.is_empty())
    };
    let mut parts = rest.split('.');
    let api = decode(parts.next()?)?;
    let client = decode(parts.next()?)?;
    let user = match parts.next() {
        Some(part) => Some(decode(part)?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((api, client, user))
}
