//! Login sessions of the in-process store (see `Store::put_login_session`). Their own mutex: no
//! operation here touches tokens or sessions, so they need no ordering with `state`/`revoked`, and
//! every operation is one critical section (atomic like the rest of the store).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::store::LoginSession;

#[derive(Default)]
pub(super) struct LoginSessions {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By id hash.
    sessions: HashMap<String, LoginSession>,
    /// username → (sequence number → id hash), oldest first: the per-user bound and the admin listing.
    by_user: HashMap<String, BTreeMap<u64, String>>,
    seq: u64,
    /// Writes since the last sweep of expired sessions (amortised, as in `MemoryStore`).
    writes: usize,
}

impl LoginSessions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Poison recovery as in `MemoryStore` (see its module documentation).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn put(&self, id_hash: &str, session: &LoginSession, max_per_user: u32, now: u64) {
        let mut inner = self.lock();
        inner.writes += 1;
        if inner.writes >= inner.sessions.len().max(1024) {
            inner.writes = 0;
            inner.sweep(now);
        }
        inner.seq += 1;
        let seq = inner.seq;
        inner.sessions.insert(id_hash.to_string(), session.clone());
        let Inner {
            sessions, by_user, ..
        } = &mut *inner;
        let index = by_user.entry(session.username.clone()).or_default();
        index.insert(seq, id_hash.to_string());
        // Forget what is gone, then the oldest beyond the bound.
        index.retain(|_, hash| sessions.get(hash).is_some_and(|s| now < s.expires_at));
        while index.len() > max_per_user.max(1) as usize {
            if let Some((_, hash)) = index.pop_first() {
                sessions.remove(&hash);
            }
        }
    }

    pub(super) fn get(&self, id_hash: &str, now: u64) -> Option<LoginSession> {
        self.lock()
            .sessions
            .get(id_hash)
            .filter(|s| now < s.expires_at)
            .cloned()
    }

    pub(super) fn end(&self, id_hash: &str, now: u64) -> bool {
        let mut inner = self.lock();
        let Some(session) = inner.sessions.remove(id_hash) else {
            return false;
        };
        if let Some(index) = inner.by_user.get_mut(&session.username) {
            index.retain(|_, hash| hash != id_hash);
            if index.is_empty() {
                inner.by_user.remove(&session.username);
            }
        }
        now < session.expires_at
    }

    pub(super) fn of_user(&self, username: &str, now: u64) -> Vec<(String, LoginSession)> {
        let inner = self.lock();
        let Some(index) = inner.by_user.get(username) else {
            return Vec::new();
        };
        index
            .values()
            .filter_map(|hash| {
                inner
                    .sessions
                    .get(hash)
                    .filter(|s| now < s.expires_at)
                    .map(|s| (hash.clone(), s.clone()))
            })
            .collect()
    }

    pub(super) fn end_user(&self, username: &str, now: u64) -> u64 {
        let mut inner = self.lock();
        let Some(index) = inner.by_user.remove(username) else {
            return 0;
        };
        let mut ended = 0;
        for hash in index.values() {
            if let Some(session) = inner.sessions.remove(hash)
                && now < session.expires_at
            {
                ended += 1;
            }
        }
        ended
    }
}

impl Inner {
    fn sweep(&mut self, now: u64) {
        self.sessions.retain(|_, s| now < s.expires_at);
        let sessions = &self.sessions;
        self.by_user.retain(|_, index| {
            index.retain(|_, hash| sessions.contains_key(hash));
            !index.is_empty()
        });
    }
}
