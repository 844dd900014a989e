//! Access tokens, below both sides that use them: the authorization server (`oauth`) signs them and
//! the proxy (`auth`) verifies them. Owns the claims and their checks (`jwt`), the signing keys and
//! JWKS (`keys`), the cache of tokens whose signature verified (`cache`) and the session ids of
//! stateless grants (`sid`).
//!
//! May import: `config`, `secrets`. Never `auth`, `oauth`, `store` or anything above them: revocation
//! is the store's to answer (`store::access_revoked`), policies are `policy`'s.

pub mod cache;
pub mod jwt;
pub mod keys;
pub mod sid;

use std::sync::Arc;

/// RFC 9068 §2.1 `typ` of access tokens: signed with it (`jwt`), and its header pre-encoded per key (`keys`).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

pub use cache::TokenCache;
pub use jwt::{AccessClaims, TokenError};
pub use keys::{KeyError, KeySet};

/// The gateway as a token issuer: its keys, its public URL (issuers are that URL plus a listen path)
/// and the tokens it verified recently. One per gateway, shared by every API.
pub struct Tokens {
    pub keys: KeySet,
    /// `gateway.public_url` without a trailing `/`.
    public_url: String,
    /// Access tokens whose signature verified recently (the proxy path, introspection, tokeninfo).
    pub cache: TokenCache,
}

impl Tokens {
    pub fn new(keys: KeySet, public_url: &str, cache_entries: usize) -> Tokens {
        Tokens {
            keys,
            public_url: public_url.trim_end_matches('/').to_string(),
            cache: TokenCache::new(cache_entries),
        }
    }

    /// `public_url` + listen path without its trailing `/` (docs/design.md §4).
    pub fn issuer(&self, listen_path: &str) -> String {
        format!("{}{}", self.public_url, listen_path.trim_end_matches('/'))
    }

    /// Whether `iss` is the issuer of the API at `listen_path`, without building the issuer string
    /// (proxy hot path).
    pub fn issuer_is(&self, listen_path: &str, iss: &str) -> bool {
        iss.strip_prefix(self.public_url.as_str())
            .is_some_and(|rest| rest == listen_path.trim_end_matches('/'))
    }

    /// Signature and header of an access token, from the cache when it verified before. Only what
    /// cannot change is cached: time, audience and revocation are the callers' to check every time.
    pub fn verified(&self, token: &str) -> Result<Arc<AccessClaims>, TokenError> {
        if let Some(claims) = self.cache.get(token) {
            return Ok(claims);
        }
        let claims = Arc::new(jwt::verify_signature(&self.keys, token)?);
        self.cache.insert(token, claims.clone());
        Ok(claims)
    }
}
