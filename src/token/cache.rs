//! Tokens whose signature verified recently, so a token seen before costs a hash lookup.
//!
//! Only what cannot change is cached (the signed claims). Expiry, revocation and audience are checked
//! by the caller on every request, so a revoked or expired token is refused at once even when cached.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

use crate::token::jwt::AccessClaims;

/// Bytes from the end of the token that pick its slot: they lie in the signature, which differs
/// between any two tokens (ES256 and RS256 signatures are randomised or cover different claims).
const HASHED_TAIL: usize = 32;

pub struct TokenCache {
    max_entries: usize,
    /// Keyed (per process, randomly) so that nobody can aim tokens at one slot.
    hasher: RandomState,
    /// slot → (the whole token, its claims). A JWT is several hundred bytes; hashing only its tail and
    /// comparing the whole token on a hit costs a fraction of hashing all of it. Two tokens that share
    /// a slot simply replace each other (a miss costs one signature verification, never a wrong hit).
    entries: RwLock<HashMap<u64, Entry>>,
}

/// The whole token (compared on every hit) and its verified claims.
type Entry = (Box<str>, Arc<AccessClaims>);

impl TokenCache {
    pub fn new(max_entries: usize) -> TokenCache {
        TokenCache {
            max_entries,
            hasher: RandomState::new(),
            entries: RwLock::new(HashMap::new()),
        }
    }

    fn slot(&self, token: &str) -> u64 {
        let bytes = token.as_bytes();
        self.hasher
            .hash_one(&bytes[bytes.len().saturating_sub(HASHED_TAIL)..])
    }

    pub fn get(&self, token: &str) -> Option<Arc<AccessClaims>> {
        let slot = self.slot(token);
        let entries = self.entries.read().ok()?;
        match entries.get(&slot) {
            Some((cached, claims)) if **cached == *token => Some(claims.clone()),
            _ => None,
        }
    }

    pub fn insert(&self, token: &str, claims: Arc<AccessClaims>) {
        let slot = self.slot(token);
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= self.max_entries {
            // Tokens are short-lived; starting over is cheaper than tracking recency, and a miss only
            // costs one signature verification.
            entries.clear();
        }
        entries.insert(slot, (token.into(), claims));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jti: &str) -> Arc<AccessClaims> {
        Arc::new(AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            client_id: "c".into(),
            scope: String::new(),
            exp: 2,
            iat: 1,
            nbf: 1,
            jti: jti.into(),
            sid: "sid".into(),
            extra: Default::default(),
        })
    }

    #[test]
    fn a_hit_needs_the_whole_token_not_only_its_tail() {
        let cache = TokenCache::new(10);
        let tail = "x".repeat(HASHED_TAIL);
        let token = format!("header.payload.{tail}");
        cache.insert(&token, claims("one"));
        assert_eq!(cache.get(&token).unwrap().jti, "one");
        // Same tail (same slot), different token: a miss, never the other token's claims.
        assert!(cache.get(&format!("header.forged.{tail}")).is_none());
        assert!(cache.get("short").is_none());
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = TokenCache::new(2);
        for i in 0..3 {
            cache.insert(&format!("token-{i}"), claims(&i.to_string()));
        }
        assert!(cache.get("token-0").is_none());
        assert_eq!(cache.get("token-2").unwrap().jti, "2");
    }
}
