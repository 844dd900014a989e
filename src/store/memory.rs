//! The in-process store: everything in hash maps behind one mutex, for a single gateway node.
//!
//! # Locking
//!
//! Two locks, always taken in this order: `state` (a `Mutex`), then `revoked` (an `RwLock`).
//!
//! * Every trait operation runs in one `state` critical section, so each is atomic with respect to
//!   every other (taking a code, rotating a refresh token, revoking a session, counting failures).
//! * The revocation set has its own `RwLock` because `is_revoked` runs on the proxy hot path for every
//!   request with a token: it takes only a read lock there and never waits for the `state` mutex.
//! * Every *writer* of `revoked` holds `state` first. So while an operation holds `state`, nobody else
//!   can change the revocation set, and a read of it taken under `state` stays true for the rest of that
//!   operation. That is what makes "rotation racing a revocation" safe: whichever of the two takes
//!   `state` first completes entirely before the other starts; if the rotation wins, the revocation then
//!   deletes the new token too; if the revocation wins, the rotation sees it and answers `Invalid`.
//!
//! No lock is ever held across an `.await` (there is none inside: every method is synchronous work
//! wrapped in an async signature).
//!
//! # Poisoned locks
//!
//! A lock is poisoned only if a thread panicked while holding it. The critical sections here do
//! nothing but hash-map operations, clones and saturating arithmetic, so a panic inside one would be a
//! bug, not an expected failure. We recover the guard with `PoisonError::into_inner` instead of
//! answering `StoreError::Unavailable`, because:
//!
//! * mapping poison to `Unavailable` would turn one panic into a permanent outage of every OAuth
//!   endpoint until the process restarts, and `is_revoked` (which returns `bool`) could then only fail
//!   closed (every token revoked) or open (none revoked) — both worse;
//! * the multi-step mutations are ordered so that any prefix of them leaves the state *more*
//!   restrictive, never less: a rotation spends the old token before storing the new one, a revocation
//!   records the revoked sid before deleting the session's tokens. A half-finished operation can lose a
//!   token, never resurrect one.
//!
//! # Expiry and purging
//!
//! Expiry is judged against the caller's `now` (entries are live while `now < expires_at`), never the
//! wall clock, so tests control time. Expired entries are also *removed*, lazily: every write counts,
//! and once the writes since the last sweep reach the number of stored entries (at least
//! [`SWEEP_MIN_WRITES`]), one sweep drops everything expired. That is O(1) amortised per write and
//! bounds the dead weight to roughly the size of the live data. The sweep uses the latest `now` any call
//! has passed (clocks are assumed not to go backwards); operations without a `now` (e.g. `put_session`)
//! use that too. No background task is needed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;

use super::{
    Admission, Attempt, AuthCode, CodeTake, Guess, LoginSession, PolicyWrite, RefreshToken,
    Release, Rotation, Session, StatelessCount, StatelessIssue, Store, StoreResult, StoredClient,
    StoredPolicy,
};
use crate::token::AccessClaims;

/// How long a rotated refresh token that never expires (`refresh_token.ttl: never`) is remembered as a
/// tombstone for reuse detection: 30 days after its rotation. Tokens that do expire are remembered
/// until their own expiry (after which presenting them is merely `Invalid`: they could not be used
/// anyway). Never-expiring tombstones need *some* bound or they would accumulate forever; a stolen
/// token replayed more than 30 days after its legitimate rotation is reported as `Invalid` instead of
/// `Reused` (still refused, only the session is not revoked for it).
pub const ROTATED_NEVER_EXPIRING_KEEP_SECS: u64 = 30 * 24 * 3600;

/// Minimum number of writes between two sweeps of expired entries (so a small store is not swept on
/// every write).
pub const SWEEP_MIN_WRITES: usize = 1024;

/// An authorization code, or what is left of it once spent.
#[derive(Debug, Clone)]
enum CodeEntry {
    Live(AuthCode),
    /// Spent: only the session it started is kept, so a second redemption can name it.
    Spent {
        sid: String,
        expires_at: u64,
    },
}

impl CodeEntry {
    fn expires_at(&self) -> u64 {
        match self {
            CodeEntry::Live(code) => code.expires_at,
            CodeEntry::Spent { expires_at, .. } => *expires_at,
        }
    }
}

/// A refresh token, or its tombstone once rotated.
#[derive(Debug, Clone)]
enum RefreshEntry {
    Live(RefreshToken),
    /// Rotated: presenting it again before `keep_until` is reuse.
    Rotated {
        sid: String,
        keep_until: u64,
    },
}

impl RefreshEntry {
    fn is_expired(&self, now: u64) -> bool {
        match self {
            RefreshEntry::Live(token) => token_expired(token, now),
            RefreshEntry::Rotated { keep_until, .. } => now >= *keep_until,
        }
    }
}

fn token_expired(token: &RefreshToken, now: u64) -> bool {
    token.expires_at.is_some_and(|exp| now >= exp)
}

/// Login failures of one key in the current window.
#[derive(Debug, Clone, Copy)]
struct FailureWindow {
    count: u32,
    /// First failure of the window + the window length; the count resets at or after this.
    ends_at: u64,
}

#[derive(Default)]
struct State {
    /// By code hash.
    codes: HashMap<String, CodeEntry>,
    /// By sid.
    sessions: HashMap<String, Session>,
    /// By token hash: live tokens and rotation tombstones.
    refresh: HashMap<String, RefreshEntry>,
    /// sid → hashes of its *live* refresh tokens, so revoking a session deletes them without a scan.
    live_refresh_by_sid: HashMap<String, HashSet<String>>,
    /// api_id → client_id → client. BTreeMaps so listings come out sorted by client_id.
    clients: BTreeMap<String, BTreeMap<String, StoredClient>>,
    /// id → policy; sorted, so listings come out sorted by id. Never expires (like clients).
    policies: BTreeMap<String, StoredPolicy>,
    failures: HashMap<String, FailureWindow>,
    /// (api_id, client_id, username) → that user's sessions with the client, oldest first, each as
    /// (sequence number, sid). At most `max_per_user` live ones (see `put_session`); sids whose
    /// session is gone are dropped at the next put for the same user and by the sweep.
    user_sessions: HashMap<(String, String, String), BTreeMap<u64, String>>,
    /// Orders sessions within one user's index (timestamps tie within a second).
    session_seq: u64,
    /// api_id → client_id → stateless tokens issued. Bounded by the number of clients: only an
    /// authenticated client is counted, and a deleted dynamic client's count goes with it.
    stateless: HashMap<String, HashMap<String, StatelessCount>>,
    writes_since_sweep: usize,
    /// The latest `now` seen: the clock used for purging.
    latest_now: u64,
}

/// Revoked sessions and access tokens: key → revoked while `now < until`.
#[derive(Default)]
struct Revoked {
    sids: HashMap<String, u64>,
    jtis: HashMap<String, u64>,
    /// api_id → client_id → per-client cutoff. Nested so that the proxy path looks one up by two
    /// `&str` without building a key.
    clients: HashMap<String, HashMap<String, Cutoff>>,
}

/// A per-client not-before time: tokens with `iat <= at` are revoked while `now < until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cutoff {
    pub at: u64,
    pub until: u64,
}

impl Cutoff {
    /// Neither time moves back: a later, shorter revocation never un-revokes what an earlier one covered.
    pub(crate) fn merge(&mut self, other: Cutoff) {
        self.at = self.at.max(other.at);
        self.until = self.until.max(other.until);
    }
}

/// The cutoff lookup shared by both stores' local maps.
pub(crate) fn live_cutoff(
    clients: &HashMap<String, HashMap<String, Cutoff>>,
    api_id: &str,
    client_id: &str,
    now: u64,
) -> Option<u64> {
    if clients.is_empty() {
        return None;
    }
    clients
        .get(api_id)
        .and_then(|per_api| per_api.get(client_id))
        .filter(|c| now < c.until)
        .map(|c| c.at)
}

/// Records a cutoff in a local map (merging with an earlier one of the same client).
pub(crate) fn insert_cutoff(
    clients: &mut HashMap<String, HashMap<String, Cutoff>>,
    api_id: &str,
    client_id: &str,
    cutoff: Cutoff,
) {
    clients
        .entry(api_id.to_string())
        .or_default()
        .entry(client_id.to_string())
        .and_modify(|c| c.merge(cutoff))
        .or_insert(cutoff);
}

/// Drops the cutoffs whose tokens have all expired.
pub(crate) fn prune_cutoffs(clients: &mut HashMap<String, HashMap<String, Cutoff>>, now: u64) {
    clients.retain(|_, per_api| {
        per_api.retain(|_, c| now < c.until);
        !per_api.is_empty()
    });
}

impl Revoked {
    fn sid_revoked(&self, sid: &str, now: u64) -> bool {
        // An empty key is never revoked: callers pass "" for "no jti" (refresh-token introspection),
        // and a stray revocation of "" must not revoke every such check.
        !sid.is_empty() && self.sids.get(sid).is_some_and(|&until| now < until)
    }

    fn jti_revoked(&self, jti: &str, now: u64) -> bool {
        !jti.is_empty() && self.jtis.get(jti).is_some_and(|&until| now < until)
    }
}

/// The single-process [`Store`]. Cheap to create; share it as `Arc<dyn Store>`.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    revoked: RwLock<Revoked>,
    /// Bumped by every policy write, under `state` (so a reader that sees the new epoch also sees
    /// the write).
    policy_epoch: AtomicU64,
    /// Login sessions of the builtin login page (their own lock; see the file).
    login_sessions: login_sessions::LoginSessions,
}

mod login_sessions;

// Not derived: a derived `Debug` would dump every session, client secret hash and revocation into
// whatever log line formats the store. Sizes are all a reader of a log needs.
impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        let revoked = self.revoked_read();
        f.debug_struct("MemoryStore")
            .field("codes", &state.codes.len())
            .field("sessions", &state.sessions.len())
            .field("refresh_tokens", &state.refresh.len())
            .field(
                "clients",
                &state.clients.values().map(BTreeMap::len).sum::<usize>(),
            )
            .field("policies", &state.policies.len())
            .field("failure_keys", &state.failures.len())
            .field("revoked_sessions", &revoked.sids.len())
            .field("revoked_tokens", &revoked.jtis.len())
            .finish()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    // Poison recovery: see the module documentation for why `into_inner` rather than `Unavailable`.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn revoked_read(&self) -> RwLockReadGuard<'_, Revoked> {
        self.revoked.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes a policy without moving the policy epoch: what a lost invalidation would look like.
    #[cfg(test)]
    pub(crate) fn remove_policy_without_epoch(&self, id: &str) {
        self.state().policies.remove(id);
    }

    /// Callers must hold the `state` guard (lock order: state, then revoked).
    fn revoked_write(&self) -> RwLockWriteGuard<'_, Revoked> {
        self.revoked.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Revokes `sid` until at least `until` and deletes everything that could still mint tokens for
    /// it: its live refresh tokens and its session record. Rotation tombstones stay, so a replay of an
    /// old token is still reported as reuse. Must run under the `state` guard.
    fn revoke_session_locked(&self, state: &mut State, sid: &str, until: u64) {
        if sid.is_empty() {
            return;
        }
        // Record the revocation first: if anything below were interrupted, the session is already
        // refused everywhere (see "Poisoned locks").
        {
            let mut revoked = self.revoked_write();
            let entry = revoked.sids.entry(sid.to_string()).or_insert(0);
            // Never shorten an earlier revocation: a second, shorter `until` must not un-revoke
            // access tokens the first one covered.
            *entry = (*entry).max(until);
        }
        if let Some(hashes) = state.live_refresh_by_sid.remove(sid) {
            for hash in hashes {
                if matches!(state.refresh.get(&hash), Some(RefreshEntry::Live(t)) if t.sid == sid) {
                    state.refresh.remove(&hash);
                }
            }
        }
        // The session is over: forget its record, so it can neither be listed nor outlive the
        // revocation entry and reappear once that entry is purged.
        state.sessions.remove(sid);
    }

    /// Stores a live refresh token, keeping the sid index right even if `hash` held another
    /// session's token before (only possible through a hash collision or a caller bug).
    fn insert_live_refresh(state: &mut State, hash: &str, token: &RefreshToken) {
        if let Some(RefreshEntry::Live(previous)) = state.refresh.get(hash)
            && previous.sid != token.sid
        {
            let previous_sid = previous.sid.clone();
            remove_from_index(state, &previous_sid, hash);
        }
        state
            .refresh
            .insert(hash.to_string(), RefreshEntry::Live(token.clone()));
        state
            .live_refresh_by_sid
            .entry(token.sid.clone())
            .or_default()
            .insert(hash.to_string());
    }

    /// Counts one write and, when enough have accumulated, drops every expired entry.
    fn after_write(&self, state: &mut State) {
        state.writes_since_sweep = state.writes_since_sweep.saturating_add(1);
        let revoked_len = {
            let revoked = self.revoked_read();
            revoked.sids.len() + revoked.jtis.len()
        };
        let stored = state.codes.len()
            + state.sessions.len()
            + state.user_sessions.len()
            + state.refresh.len()
            + state.failures.len()
            + revoked_len;
        if state.writes_since_sweep >= stored.max(SWEEP_MIN_WRITES) {
            self.sweep(state);
        }
    }

    /// Drops every entry expired at `state.latest_now`. Clients never expire.
    fn sweep(&self, state: &mut State) {
        let now = state.latest_now;
        state.writes_since_sweep = 0;
        state.codes.retain(|_, entry| now < entry.expires_at());
        state.sessions.retain(|_, session| now < session.expires_at);
        state.failures.retain(|_, window| now < window.ends_at);
        let State {
            refresh,
            live_refresh_by_sid,
            ..
        } = state;
        refresh.retain(|hash, entry| {
            if !entry.is_expired(now) {
                return true;
            }
            if let RefreshEntry::Live(token) = entry
                && let Some(hashes) = live_refresh_by_sid.get_mut(&token.sid)
            {
                hashes.remove(hash);
            }
            false
        });
        live_refresh_by_sid.retain(|_, hashes| !hashes.is_empty());
        let State {
            sessions,
            user_sessions,
            ..
        } = state;
        user_sessions.retain(|_, index| {
            index.retain(|_, sid| sessions.contains_key(sid));
            !index.is_empty()
        });
        let mut revoked = self.revoked_write();
        revoked.sids.retain(|_, until| now < *until);
        revoked.jtis.retain(|_, until| now < *until);
        prune_cutoffs(&mut revoked.clients, now);
    }
}

fn remove_from_index(state: &mut State, sid: &str, hash: &str) {
    if let Some(hashes) = state.live_refresh_by_sid.get_mut(sid) {
        hashes.remove(hash);
        if hashes.is_empty() {
            state.live_refresh_by_sid.remove(sid);
        }
    }
}

fn observe(state: &mut State, now: u64) {
    state.latest_now = state.latest_now.max(now);
}

/// One more stateless token of the client (see [`Store::count_stateless`]), under the `state` guard.
fn count_stateless_locked(state: &mut State, api_id: &str, client_id: &str, now: u64) {
    // Looked up before inserting so that the common case allocates nothing.
    if let Some(count) = state
        .stateless
        .get_mut(api_id)
        .and_then(|per_api| per_api.get_mut(client_id))
    {
        count.issued = count.issued.saturating_add(1);
        count.last_issued_at = Some(now);
        return;
    }
    state
        .stateless
        .entry(api_id.to_string())
        .or_default()
        .insert(
            client_id.to_string(),
            StatelessCount {
                issued: 1,
                last_issued_at: Some(now),
            },
        );
}

#[async_trait]
impl Store for MemoryStore {
    async fn put_code(&self, code_hash: &str, code: &AuthCode) -> StoreResult<()> {
        let mut state = self.state();
        state
            .codes
            .insert(code_hash.to_string(), CodeEntry::Live(code.clone()));
        self.after_write(&mut state);
        Ok(())
    }

    async fn take_code(&self, code_hash: &str, now: u64) -> StoreResult<CodeTake> {
        let mut state = self.state();
        observe(&mut state, now);
        let Some(entry) = state.codes.get_mut(code_hash) else {
            return Ok(CodeTake::Unknown);
        };
        if now >= entry.expires_at() {
            // Expired, spent or not: the tombstone is only kept for the code's own lifetime, after
            // which a replay is just an unknown code.
            state.codes.remove(code_hash);
            self.after_write(&mut state);
            return Ok(CodeTake::Unknown);
        }
        match entry {
            CodeEntry::Spent { sid, .. } => Ok(CodeTake::AlreadyUsed { sid: sid.clone() }),
            CodeEntry::Live(code) => {
                let code = code.clone();
                // Spent in the same critical section as the check: no second caller can see it live.
                *entry = CodeEntry::Spent {
                    sid: code.sid.clone(),
                    expires_at: code.expires_at,
                };
                self.after_write(&mut state);
                Ok(CodeTake::Fresh(code))
            }
        }
    }

    async fn put_session(&self, session: &Session, max_per_user: u32) -> StoreResult<Vec<String>> {
        let mut state = self.state();
        // A session revoked before its record arrives (a second redemption of its code racing the
        // first one's exchange) stays dead: storing it would make it show up as live.
        if self
            .revoked_read()
            .sid_revoked(&session.sid, state.latest_now)
        {
            return Ok(Vec::new());
        }
        state.sessions.insert(session.sid.clone(), session.clone());
        let mut ended = Vec::new();
        if let Some(username) = &session.username {
            state.session_seq += 1;
            let seq = state.session_seq;
            let key = (
                session.api_id.clone(),
                session.client_id.clone(),
                username.clone(),
            );
            let State {
                sessions,
                user_sessions,
                latest_now,
                ..
            } = &mut *state;
            let index = user_sessions.entry(key).or_default();
            // Sessions that ended some other way (revoked, expired) no longer count.
            index.retain(|_, sid| {
                sessions
                    .get(sid)
                    .is_some_and(|s| *latest_now < s.expires_at)
            });
            index.insert(seq, session.sid.clone());
            let cap = usize::try_from(max_per_user.max(1)).unwrap_or(usize::MAX);
            while index.len() > cap {
                let Some((_, oldest)) = index.pop_first() else {
                    break;
                };
                ended.push(oldest);
            }
            for sid in &ended {
                let until = state
                    .sessions
                    .get(sid)
                    .map_or(state.latest_now, |s| s.expires_at);
                self.revoke_session_locked(&mut state, sid, until);
            }
        }
        self.after_write(&mut state);
        Ok(ended)
    }

    async fn get_session(&self, sid: &str) -> StoreResult<Option<Session>> {
        // No `now` here: a session past its `expires_at` is returned until the next sweep drops it;
        // callers that care compare `expires_at` themselves. Revoked sessions are deleted, so `None`.
        Ok(self.state().sessions.get(sid).cloned())
    }

    async fn client_sessions(
        &self,
        api_id: &str,
        client_id: &str,
        now: u64,
    ) -> StoreResult<Vec<Session>> {
        let mut state = self.state();
        observe(&mut state, now);
        let revoked = self.revoked_read();
        // A scan: this is an admin listing, not a hot path, and an index per client would cost
        // memory and bookkeeping on every token request.
        let mut live: Vec<Session> = state
            .sessions
            .values()
            .filter(|s| s.api_id == api_id && s.client_id == client_id)
            .filter(|s| now < s.expires_at && !revoked.sid_revoked(&s.sid, now))
            .cloned()
            .collect();
        live.sort_by(|a, b| (a.created_at, &a.sid).cmp(&(b.created_at, &b.sid)));
        Ok(live)
    }

    async fn put_refresh(&self, token_hash: &str, token: &RefreshToken) -> StoreResult<()> {
        let mut state = self.state();
        // Dead on arrival if its session was already revoked (an exchange racing a revocation):
        // otherwise it would come back to life once the revocation entry expires.
        if self
            .revoked_read()
            .sid_revoked(&token.sid, state.latest_now)
        {
            return Ok(());
        }
        Self::insert_live_refresh(&mut state, token_hash, token);
        self.after_write(&mut state);
        Ok(())
    }

    async fn get_refresh(&self, token_hash: &str, now: u64) -> StoreResult<Option<RefreshToken>> {
        let mut state = self.state();
        observe(&mut state, now);
        let Some(RefreshEntry::Live(token)) = state.refresh.get(token_hash) else {
            // Unknown or rotated: a spent token is not a token any more (rotation detects reuse).
            return Ok(None);
        };
        if token_expired(token, now) || self.revoked_read().sid_revoked(&token.sid, now) {
            return Ok(None);
        }
        Ok(Some(token.clone()))
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        new: &RefreshToken,
        now: u64,
    ) -> StoreResult<Rotation> {
        let mut state = self.state();
        observe(&mut state, now);
        let old = match state.refresh.get(old_hash) {
            None => return Ok(Rotation::Invalid),
            Some(entry) if entry.is_expired(now) => {
                // Past its expiry (or, for a tombstone, past the time we remember it): invalid, and
                // there is no reason to keep it. Nothing is stored for `new`.
                if let Some(RefreshEntry::Live(token)) = state.refresh.remove(old_hash) {
                    remove_from_index(&mut state, &token.sid, old_hash);
                }
                self.after_write(&mut state);
                return Ok(Rotation::Invalid);
            }
            Some(RefreshEntry::Rotated { sid, keep_until }) => {
                // Reuse: someone holds a token that was already exchanged. Kill the whole session
                // for as long as any of its access tokens can live: the session's expires_at (it
                // slides with every rotation, see below). If the record is already gone, the
                // tombstone's own lifetime is the best bound we have.
                let sid = sid.clone();
                let keep_until = *keep_until;
                let until = state
                    .sessions
                    .get(&sid)
                    .map_or(keep_until, |s| s.expires_at.max(keep_until));
                self.revoke_session_locked(&mut state, &sid, until);
                self.after_write(&mut state);
                return Ok(Rotation::Reused { sid });
            }
            Some(RefreshEntry::Live(token)) => token.clone(),
        };
        // `revoked` is only written under `state`, which we hold: this answer stays true until we
        // return.
        if self.revoked_read().sid_revoked(&old.sid, now) {
            return Ok(Rotation::Invalid);
        }
        // Spend the old token first (see "Poisoned locks"), then store the successor.
        let keep_until = old
            .expires_at
            .unwrap_or_else(|| now.saturating_add(ROTATED_NEVER_EXPIRING_KEEP_SECS));
        state.refresh.insert(
            old_hash.to_string(),
            RefreshEntry::Rotated {
                sid: old.sid.clone(),
                keep_until,
            },
        );
        remove_from_index(&mut state, &old.sid, old_hash);
        Self::insert_live_refresh(&mut state, new_hash, new);
        if let Some(session) = state.sessions.get_mut(&old.sid) {
            session.refresh_count = session.refresh_count.saturating_add(1);
            // The session lives as long after its latest refresh as it did after its start (or its
            // previous refresh), and at least as long as the new token: otherwise a session that is
            // refreshed regularly would expire (and be forgotten, and its reuse revocation be too
            // short) while its tokens are still valid.
            let since = session.last_refresh_at.unwrap_or(session.created_at);
            let lifetime = session.expires_at.saturating_sub(since);
            let mut expires_at = session.expires_at.max(now.saturating_add(lifetime));
            if let Some(token_exp) = new.expires_at {
                expires_at = expires_at.max(token_exp);
            }
            session.expires_at = expires_at;
            session.last_refresh_at = Some(now);
        }
        self.after_write(&mut state);
        Ok(Rotation::Rotated(old))
    }

    async fn revoke_session(&self, sid: &str, until: u64) -> StoreResult<()> {
        let mut state = self.state();
        self.revoke_session_locked(&mut state, sid, until);
        self.after_write(&mut state);
        Ok(())
    }

    async fn revoke_jti(&self, jti: &str, until: u64) -> StoreResult<()> {
        if jti.is_empty() {
            return Ok(());
        }
        // `state` first, for the lock order and for the write count that drives purging.
        let mut state = self.state();
        {
            let mut revoked = self.revoked_write();
            let entry = revoked.jtis.entry(jti.to_string()).or_insert(0);
            *entry = (*entry).max(until);
        }
        self.after_write(&mut state);
        Ok(())
    }

    fn is_revoked(&self, sid: &str, jti: &str, now: u64) -> bool {
        let revoked = self.revoked_read();
        revoked.sid_revoked(sid, now) || revoked.jti_revoked(jti, now)
    }

    async fn revoke_client_tokens(
        &self,
        api_id: &str,
        client_id: &str,
        issued_up_to: u64,
        until: u64,
    ) -> StoreResult<()> {
        let mut state = self.state();
        {
            let mut revoked = self.revoked_write();
            let cutoff = Cutoff {
                at: issued_up_to,
                until,
            };
            insert_cutoff(&mut revoked.clients, api_id, client_id, cutoff);
        }
        self.after_write(&mut state);
        Ok(())
    }

    fn client_cutoff(&self, api_id: &str, client_id: &str, now: u64) -> Option<u64> {
        live_cutoff(&self.revoked_read().clients, api_id, client_id, now)
    }

    fn access_revoked(&self, claims: &AccessClaims, now: u64) -> bool {
        let revoked = self.revoked_read();
        revoked.sid_revoked(&claims.sid, now)
            || revoked.jti_revoked(&claims.jti, now)
            || live_cutoff(&revoked.clients, &claims.aud, &claims.client_id, now)
                .is_some_and(|cutoff| claims.iat <= cutoff)
    }

    async fn count_stateless(&self, api_id: &str, client_id: &str, now: u64) -> StoreResult<()> {
        let mut state = self.state();
        observe(&mut state, now);
        count_stateless_locked(&mut state, api_id, client_id, now);
        Ok(())
    }

    async fn stateless_count(&self, api_id: &str, client_id: &str) -> StoreResult<StatelessCount> {
        Ok(self
            .state()
            .stateless
            .get(api_id)
            .and_then(|per_api| per_api.get(client_id))
            .copied()
            .unwrap_or_default())
    }

    async fn put_client(&self, client: &StoredClient) -> StoreResult<()> {
        let mut state = self.state();
        state
            .clients
            .entry(client.api_id.clone())
            .or_default()
            .insert(client.client_id.clone(), client.clone());
        Ok(())
    }

    async fn get_client(&self, api_id: &str, client_id: &str) -> StoreResult<Option<StoredClient>> {
        let state = self.state();
        Ok(state
            .clients
            .get(api_id)
            .and_then(|clients| clients.get(client_id))
            .cloned())
    }

    async fn list_clients(&self, api_id: &str) -> StoreResult<Vec<StoredClient>> {
        let state = self.state();
        Ok(state
            .clients
            .get(api_id)
            .map(|clients| clients.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn delete_client(&self, api_id: &str, client_id: &str) -> StoreResult<bool> {
        let mut state = self.state();
        let Some(clients) = state.clients.get_mut(api_id) else {
            return Ok(false);
        };
        let existed = clients.remove(client_id).is_some();
        if clients.is_empty() {
            state.clients.remove(api_id);
        }
        if let Some(per_api) = state.stateless.get_mut(api_id) {
            per_api.remove(client_id);
        }
        Ok(existed)
    }

    async fn put_policy(&self, policy: &StoredPolicy, mode: PolicyWrite) -> StoreResult<bool> {
        let mut state = self.state();
        let exists = state.policies.contains_key(&policy.id);
        let allowed = match mode {
            PolicyWrite::Create => !exists,
            PolicyWrite::Replace => exists,
        };
        if allowed {
            state.policies.insert(policy.id.clone(), policy.clone());
            self.policy_epoch.fetch_add(1, Ordering::AcqRel);
        }
        Ok(allowed)
    }

    async fn get_policy(&self, id: &str) -> StoreResult<Option<StoredPolicy>> {
        Ok(self.state().policies.get(id).cloned())
    }

    async fn list_policies(&self) -> StoreResult<Vec<StoredPolicy>> {
        Ok(self.state().policies.values().cloned().collect())
    }

    async fn delete_policy(&self, id: &str) -> StoreResult<bool> {
        let mut state = self.state();
        let existed = state.policies.remove(id).is_some();
        if existed {
            self.policy_epoch.fetch_add(1, Ordering::AcqRel);
        }
        Ok(existed)
    }

    fn policy_epoch(&self) -> Option<u64> {
        // One process: every change is known the moment it is made.
        Some(self.policy_epoch.load(Ordering::Acquire))
    }

    async fn reserve_attempt(
        &self,
        guess: &Guess<'_>,
        limit: u32,
        window_secs: u64,
        now: u64,
    ) -> StoreResult<Attempt> {
        let keys = [guess.address_key(), guess.subject_key()];
        // One lock around the check and the count: that is what makes the reservation atomic.
        let mut state = self.state();
        observe(&mut state, now);
        let wait = keys
            .iter()
            .filter_map(|key| state.failures.get(key))
            .filter(|window| now < window.ends_at && window.count >= limit)
            .map(|window| window.ends_at - now)
            .max();
        if let Some(retry_after_secs) = wait {
            return Ok(Attempt::Throttled { retry_after_secs });
        }
        for key in keys {
            match state.failures.get_mut(&key) {
                Some(window) if now < window.ends_at => {
                    window.count = window.count.saturating_add(1);
                }
                // No attempt yet, or the previous window is over: this one starts a new window.
                _ => {
                    let fresh = FailureWindow {
                        count: 1,
                        ends_at: now.saturating_add(window_secs),
                    };
                    state.failures.insert(key, fresh);
                }
            }
        }
        self.after_write(&mut state);
        Ok(Attempt::Reserved)
    }

    async fn release_attempt(&self, guess: &Guess<'_>, how: Release, now: u64) -> StoreResult<()> {
        let (address, subject) = (guess.address_key(), guess.subject_key());
        let mut state = self.state();
        let mut give_back = |key: &str| {
            if let Some(window) = state.failures.get_mut(key)
                && now < window.ends_at
            {
                window.count = window.count.saturating_sub(1);
            }
        };
        give_back(&address);
        match how {
            Release::NotEvaluated => give_back(&subject),
            Release::Success => {
                state.failures.remove(&subject);
            }
        }
        Ok(())
    }

    async fn admit_attempt(
        &self,
        guess: &Guess<'_>,
        limit: u32,
        window_secs: u64,
        now: u64,
        issued: Option<StatelessIssue<'_>>,
    ) -> StoreResult<Admission> {
        let (address, subject) = (guess.address_key(), guess.subject_key());
        // One lock around the check, the counters and the count, as in `reserve_attempt`.
        let mut state = self.state();
        observe(&mut state, now);
        let wait = [&address, &subject]
            .into_iter()
            .filter_map(|key| state.failures.get(key))
            .filter(|window| now < window.ends_at && window.count >= limit)
            .map(|window| window.ends_at - now)
            .max();
        if let Some(retry_after_secs) = wait {
            return Ok(Admission::Throttled { retry_after_secs });
        }
        // What a reservation and its release as a success leave: a live window of the address keeps
        // its count (+1 - 1); without one, a window begins with nothing counted in it.
        let live = state
            .failures
            .get(&address)
            .is_some_and(|window| now < window.ends_at);
        if !live {
            let fresh = FailureWindow {
                count: 0,
                ends_at: now.saturating_add(window_secs),
            };
            state.failures.insert(address, fresh);
        }
        state.failures.remove(&subject);
        if let Some(issued) = issued {
            observe(&mut state, issued.issued_at);
            count_stateless_locked(
                &mut state,
                issued.api_id,
                issued.client_id,
                issued.issued_at,
            );
        }
        self.after_write(&mut state);
        Ok(Admission::Admitted)
    }

    async fn put_login_session(
        &self,
        id_hash: &str,
        session: &LoginSession,
        max_per_user: u32,
    ) -> StoreResult<()> {
        // The session begins now: its auth_time is the caller's clock.
        self.login_sessions
            .put(id_hash, session, max_per_user, session.auth_time);
        Ok(())
    }

    async fn get_login_session(
        &self,
        id_hash: &str,
        now: u64,
    ) -> StoreResult<Option<LoginSession>> {
        Ok(self.login_sessions.get(id_hash, now))
    }

    async fn end_login_session(&self, id_hash: &str, now: u64) -> StoreResult<bool> {
        Ok(self.login_sessions.end(id_hash, now))
    }

    async fn user_login_sessions(
        &self,
        username: &str,
        now: u64,
    ) -> StoreResult<Vec<(String, LoginSession)>> {
        Ok(self.login_sessions.of_user(username, now))
    }

    async fn end_user_login_sessions(&self, username: &str, now: u64) -> StoreResult<u64> {
        Ok(self.login_sessions.end_user(username, now))
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::GrantKind;

    // The whole backend contract, one test per behaviour.
    crate::store::contract::store_contract_tests!(Arc::new(MemoryStore::new()));

    /// `run_all` itself works (it is what a backend without a test module of its own would call).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn run_all_passes() {
        crate::store::contract::run_all(|| async {
            Arc::new(MemoryStore::new()) as Arc<dyn Store>
        })
        .await;
    }

    const T0: u64 = 1_700_000_000;

    fn guess(subject: &str) -> Guess<'_> {
        Guess {
            scope: "login:api",
            address: "192.0.2.1",
            subject,
        }
    }

    fn token(sid: &str, expires_at: Option<u64>) -> RefreshToken {
        RefreshToken {
            sid: sid.into(),
            api_id: "api".into(),
            client_id: "client".into(),
            username: None,
            scope: "read".into(),
            generation: 0,
            issued_at: T0,
            expires_at,
        }
    }

    fn code(sid: &str, expires_at: u64) -> AuthCode {
        AuthCode {
            api_id: "api".into(),
            client_id: "client".into(),
            redirect_uri: "https://app.example/cb".into(),
            scope: "read".into(),
            username: "alice".into(),
            code_challenge: None,
            sid: sid.into(),
            expires_at,
            oidc: None,
        }
    }

    fn session(sid: &str, created_at: u64, expires_at: u64) -> Session {
        Session {
            sid: sid.into(),
            api_id: "api".into(),
            client_id: "client".into(),
            username: None,
            scope: "read".into(),
            grant: GrantKind::ClientCredentials,
            created_at,
            last_refresh_at: None,
            refresh_count: 0,
            expires_at,
            oidc: None,
        }
    }

    /// Expired codes, tombstones, sessions, failures and revocations are purged by the amortised
    /// sweep, while live data stays.
    #[tokio::test]
    async fn expired_entries_are_purged() {
        let store = MemoryStore::new();
        store
            .put_code("live", &code("s-live", T0 + 1_000_000))
            .await
            .unwrap();
        store
            .put_refresh("rt-forever", &token("s-live", None))
            .await
            .unwrap();
        for i in 0..2_000 {
            store
                .put_code(&format!("c{i}"), &code(&format!("s{i}"), T0 + 10))
                .await
                .unwrap();
            store
                .put_refresh(&format!("r{i}"), &token(&format!("s{i}"), Some(T0 + 10)))
                .await
                .unwrap();
            store
                .put_session(&session(&format!("s{i}"), T0, T0 + 10), 100)
                .await
                .unwrap();
            let subject = format!("k{i}");
            store
                .reserve_attempt(&guess(&subject), 5, 10, T0)
                .await
                .unwrap();
            store.revoke_jti(&format!("j{i}"), T0 + 10).await.unwrap();
        }
        // Later writes (at a time when all of the above has expired) trigger a sweep.
        for i in 0..10_000 {
            store
                .reserve_attempt(&guess("later"), u32::MAX, 1_000_000, T0 + 20 + (i % 2))
                .await
                .unwrap();
        }
        {
            let state = store.state();
            assert_eq!(state.codes.len(), 1);
            assert_eq!(state.refresh.len(), 1);
            assert_eq!(state.live_refresh_by_sid.len(), 1);
            assert!(state.sessions.is_empty());
            // The address counter of the later attempts and their subject's.
            assert_eq!(state.failures.len(), 2);
        }
        assert!(store.revoked_read().jtis.is_empty());
        assert!(store.take_code("live", T0 + 21).await.unwrap() != CodeTake::Unknown);
        assert!(
            store
                .get_refresh("rt-forever", T0 + 21)
                .await
                .unwrap()
                .is_some()
        );
    }

    /// A rotated never-expiring token is remembered for `ROTATED_NEVER_EXPIRING_KEEP_SECS`, then
    /// forgotten (a replay is then merely invalid); an expiring one until its own expiry.
    #[tokio::test]
    async fn rotation_tombstone_lifetime() {
        let store = MemoryStore::new();
        store
            .put_session(&session("s1", T0, T0 + 1_000), 100)
            .await
            .unwrap();
        store
            .put_refresh("forever", &token("s1", None))
            .await
            .unwrap();
        let rotated = store
            .rotate_refresh("forever", "next", &token("s1", None), T0)
            .await
            .unwrap();
        assert!(matches!(rotated, Rotation::Rotated(_)));
        let gone = T0 + ROTATED_NEVER_EXPIRING_KEEP_SECS;
        assert_eq!(
            store
                .rotate_refresh("forever", "x", &token("s1", None), gone)
                .await
                .unwrap(),
            Rotation::Invalid
        );
        assert!(!store.is_revoked("s1", "", gone));
        assert_eq!(
            store
                .rotate_refresh("forever", "x", &token("s1", None), gone - 1)
                .await
                .unwrap(),
            Rotation::Invalid,
            "the expired tombstone was dropped, not kept"
        );

        store
            .put_session(&session("s2", T0, T0 + 1_000), 100)
            .await
            .unwrap();
        store
            .put_refresh("short", &token("s2", Some(T0 + 100)))
            .await
            .unwrap();
        store
            .rotate_refresh("short", "short2", &token("s2", None), T0)
            .await
            .unwrap();
        assert_eq!(
            store
                .rotate_refresh("short", "x", &token("s2", None), T0 + 99)
                .await
                .unwrap(),
            Rotation::Reused { sid: "s2".into() }
        );
    }

    /// A second revocation with an earlier `until` does not shorten the first.
    #[tokio::test]
    async fn revocations_never_shorten() {
        let store = MemoryStore::new();
        store.revoke_session("s", T0 + 100).await.unwrap();
        store.revoke_session("s", T0 + 10).await.unwrap();
        assert!(store.is_revoked("s", "", T0 + 50));
        store.revoke_jti("j", T0 + 100).await.unwrap();
        store.revoke_jti("j", T0 + 10).await.unwrap();
        assert!(store.is_revoked("", "j", T0 + 50));
    }

    /// Empty keys never match: "" is what callers pass for "no jti".
    #[tokio::test]
    async fn empty_keys_are_never_revoked() {
        let store = MemoryStore::new();
        store.revoke_jti("", T0 + 100).await.unwrap();
        store.revoke_session("", T0 + 100).await.unwrap();
        assert!(!store.is_revoked("", "", T0));
        assert!(!store.is_revoked("sid", "", T0));
    }

    /// A session refreshed regularly stays alive as long after its latest refresh as its first
    /// lifetime was, so it is not forgotten while its tokens are valid.
    #[tokio::test]
    async fn session_expiry_slides_with_rotation() {
        let store = MemoryStore::new();
        store
            .put_session(&session("s", T0, T0 + 1_000), 100)
            .await
            .unwrap();
        store
            .put_refresh("r0", &token("s", Some(T0 + 900)))
            .await
            .unwrap();
        store
            .rotate_refresh("r0", "r1", &token("s", Some(T0 + 1_400)), T0 + 500)
            .await
            .unwrap();
        let s = store.get_session("s").await.unwrap().unwrap();
        assert_eq!(s.expires_at, T0 + 1_500);
        store
            .rotate_refresh("r1", "r2", &token("s", Some(T0 + 1_600)), T0 + 700)
            .await
            .unwrap();
        let s = store.get_session("s").await.unwrap().unwrap();
        // Lifetime after the previous refresh was 1_000: 700 + 1_000.
        assert_eq!(s.expires_at, T0 + 1_700);
        assert_eq!(s.refresh_count, 2);
    }

    /// A poisoned lock is recovered, not turned into an outage (see the module documentation).
    #[tokio::test]
    async fn poisoned_lock_is_recovered() {
        let store = Arc::new(MemoryStore::new());
        store.revoke_jti("j", T0 + 100).await.unwrap();
        let poisoner = store.clone();
        let _ = std::thread::spawn(move || {
            let _state = poisoner.state.lock();
            let _revoked = poisoner.revoked.write();
            panic!("poison both locks");
        })
        .join();
        assert!(store.state.is_poisoned() && store.revoked.is_poisoned());
        assert!(store.is_revoked("", "j", T0));
        store.ping().await.unwrap();
        assert_eq!(
            store.reserve_attempt(&guess("k"), 5, 10, T0).await.unwrap(),
            Attempt::Reserved
        );
    }
}
