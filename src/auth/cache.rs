//! Tokens whose signature verified recently, so a token seen before costs a hash lookup.
//!
//! Only what cannot change is cached (the signed claims). Expiry, revocation and audience are checked
//! by the caller on every request, so a revoked or expired token is refused at once even when cached.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::oauth::tokens::AccessClaims;

pub struct TokenCache {
    max_entries: usize,
    entries: RwLock<HashMap<Box<str>, Arc<AccessClaims>>>,
}

impl TokenCache {
    pub fn new(max_entries: usize) -> TokenCache {
        TokenCache {
            max_entries,
            entries: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, token: &str) -> Option<Arc<AccessClaims>> {
        self.entries.read().ok()?.get(token).cloned()
    }

    pub fn insert(&self, token: &str, claims: Arc<AccessClaims>) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= self.max_entries {
            // Tokens are short-lived; starting over is cheaper than tracking recency, and a miss only
            // costs one signature verification.
            entries.clear();
        }
        entries.insert(token.into(), claims);
    }
}
