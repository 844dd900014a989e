//! Storage: everything that must be shared between gateway nodes, behind one trait.
//!
//! Two implementations: `memory` (one process, the default) and `redis` (several nodes). Both pass the
//! same contract suite (`contract.rs`). Every operation that must be atomic is one call here, so the
//! callers (the OAuth flows) never read-modify-write: taking a code, rotating a refresh token with reuse
//! detection, revoking a session (which also kills its refresh tokens), reserving a guess at a secret,
//! admitting a guess known to be right together with the token it earns.
//!
//! Secrets never reach the store in clear: codes and refresh tokens are keyed by their SHA-256, client
//! secrets are argon2id PHC strings.
//!
//! Times are UNIX seconds (`u64`); `now` is passed in by the caller so tests control the clock.
//!
//! May import: `redis` (for `store::redis`), `token` (claims, for [`access_revoked`]), `error`, `config`.
//! Never `limits`, `oauth` or `auth`.

pub mod memory;
pub mod redis;

#[cfg(test)]
pub mod contract;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::GrantType;
use crate::token::AccessClaims;

pub use crate::error::storage::{StoreError, StoreResult};

/// One guess at a secret, as the guessing throttles count it (docs/design.md §9a): per (subject, address)
/// and per address, within one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guess<'a> {
    /// What is guessed, where: `login:<api id>` (passwords) or `client:<api id>` (client secrets).
    pub scope: &'a str,
    /// The caller's address as the gateway believes it (IPv6: its /64).
    pub address: &'a str,
    /// The username or client_id; callers cap its length before it becomes part of a key.
    pub subject: &'a str,
}

impl Guess<'_> {
    /// The per-address counter's key. Scope and address never contain `|` (API ids and IP addresses).
    pub fn address_key(&self) -> String {
        format!("{}|{}", self.scope, self.address)
    }

    /// The per-(subject, address) counter's key: the subject comes last, so any subject is unambiguous.
    pub fn subject_key(&self) -> String {
        format!("{}|{}|{}", self.scope, self.address, self.subject)
    }
}

/// The answer to [`Store::reserve_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Go ahead and verify; the attempt already counts.
    Reserved,
    /// A counter is at its limit: nothing was counted; its window ends in `retry_after_secs`.
    Throttled { retry_after_secs: u64 },
}

/// How a reserved attempt ended, when not as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The secret was right: the subject's counter at this address starts over (as a successful
    /// login always did) and the address gets this attempt back.
    Success,
    /// The secret was never checked (the verification pool was full): both counters get it back.
    NotEvaluated,
}

/// The answer to [`Store::admit_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead: the counters already read as after a successful attempt (nothing to release).
    Admitted,
    /// A counter is at its limit, exactly as [`Store::reserve_attempt`] would have found it: nothing
    /// was counted (neither the attempt nor the token); its window ends in `retry_after_secs`.
    Throttled { retry_after_secs: u64 },
}

/// A stateless access token counted in the same step as its caller's admission (see
/// [`Store::admit_attempt`]), as [`Store::count_stateless`] would count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatelessIssue<'a> {
    pub api_id: &'a str,
    pub client_id: &'a str,
    /// The token's `iat` (the count's `last_issued_at`).
    pub issued_at: u64,
}

/// An authorization code between the authorize and the token request, keyed by the code's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCode {
    pub api_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    /// Space-separated granted scopes.
    pub scope: String,
    pub username: String,
    pub code_challenge: Option<String>,
    /// The session the code's tokens will belong to; known in advance so that a second redemption
    /// can revoke what the first one issued.
    pub sid: String,
    pub expires_at: u64,
    /// Present when the code's scope holds `openid` on an OpenID Provider (absent in older records).
    /// Boxed: most codes have none, and `CodeTake` carries a code by value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<Box<OidcGrant>>,
}

/// What an OpenID Connect sign-in adds to a code, and then to the session it starts, so that ID
/// tokens issued at the code exchange and at every refresh say the same thing (OIDC Core §12.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcGrant {
    /// When the user last typed the password (`auth_time`).
    pub auth_time: u64,
    /// The authorization request's `nonce`, echoed in the ID token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Identity claims given by an external identity provider (`authorize-client`'s `claims`);
    /// `None`: the user's claims from users.yaml.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<BTreeMap<String, serde_json::Value>>,
}

/// A browser signed in at the builtin login page (docs/design.md §9c), stored under the SHA-256 of the
/// random id in its cookie: the store never holds the cookie itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginSession {
    pub api_id: String,
    pub username: String,
    /// When the user typed the password (OIDC `auth_time`).
    pub auth_time: u64,
    pub expires_at: u64,
}

/// What taking a code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeTake {
    /// First redemption: the code is now spent.
    Fresh(AuthCode),
    /// The code was redeemed before; the session it started (`sid`) must be revoked.
    AlreadyUsed {
        sid: String,
    },
    Unknown,
}

/// One grant: begins at a code exchange, password or client-credentials grant and lives on through its
/// refreshes. Rate limits and quotas count per session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub sid: String,
    pub api_id: String,
    pub client_id: String,
    /// `None` for client_credentials.
    pub username: Option<String>,
    pub scope: String,
    pub grant: GrantKind,
    pub created_at: u64,
    pub last_refresh_at: Option<u64>,
    pub refresh_count: u32,
    /// When the session's last token can have expired; the store may forget it after that.
    pub expires_at: u64,
    /// An OpenID Connect session (code grant with `openid`): what its refreshed ID tokens carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcGrant>,
}

/// Stateless access tokens issued to one client (they are stored nowhere, so they are counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatelessCount {
    pub issued: u64,
    /// When the latest one was issued; `None` when none was.
    pub last_issued_at: Option<u64>,
}

/// The grant that began a session (serialisable twin of `GrantType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    AuthorizationCode,
    ClientCredentials,
    Password,
}

impl From<GrantKind> for GrantType {
    fn from(kind: GrantKind) -> GrantType {
        match kind {
            GrantKind::AuthorizationCode => GrantType::AuthorizationCode,
            GrantKind::ClientCredentials => GrantType::ClientCredentials,
            GrantKind::Password => GrantType::Password,
        }
    }
}

/// A live refresh token, keyed by the token's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    pub sid: String,
    pub api_id: String,
    pub client_id: String,
    pub username: Option<String>,
    /// Space-separated scope the token may grant (narrowing on refresh makes it smaller).
    pub scope: String,
    /// How many refreshes happened before this token was issued (0 for the first).
    pub generation: u32,
    pub issued_at: u64,
    /// `None`: never expires (`refresh_token.ttl: never`).
    pub expires_at: Option<u64>,
}

/// What presenting a refresh token for rotation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The old token is spent and the new one stored; the old record is returned.
    Rotated(RefreshToken),
    /// The token was rotated before: reuse. The whole session has now been revoked.
    Reused { sid: String },
    /// Unknown, expired, or its session was revoked.
    Invalid,
}

/// A client created through the admin API (static YAML clients never enter the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredClient {
    pub api_id: String,
    pub client_id: String,
    /// argon2id PHC string; `None` for a public client.
    pub secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub policy: Option<String>,
    pub claims: BTreeMap<String, serde_json::Value>,
    pub created_at: u64,
}

/// A policy created through the admin API (policies.yaml ones never enter the store). It is validated
/// by the same rules as a policy in the file before it is stored; durations are in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPolicy {
    pub id: String,
    #[serde(default)]
    pub rate_limit: Option<StoredRateLimit>,
    #[serde(default)]
    pub quota: Option<StoredQuota>,
    /// `None`: the client's own scopes apply unchanged; `Some([])` grants none.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub access: Vec<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRateLimit {
    pub rate: u32,
    pub per_ms: u64,
    /// `local`, `allow` or `deny`.
    pub on_storage_error: String,
    /// Absent in records written before `rate_limit.exact` existed: leases, the default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exact: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredQuota {
    pub max: u64,
    pub period_ms: u64,
}

/// How `put_policy` writes: the existence check and the write are one atomic step in every backend,
/// so two nodes creating the same id at once cannot both succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyWrite {
    /// Only if no policy with this id is stored.
    Create,
    /// Only if a policy with this id is stored.
    Replace,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- authorization codes
    /// Stores a new code under its hash until `code.expires_at`.
    async fn put_code(&self, code_hash: &str, code: &AuthCode) -> StoreResult<()>;
    /// Atomically spends a code: the first caller gets `Fresh`, every later one `AlreadyUsed` (until the
    /// code's expiry), an unknown or expired code `Unknown`.
    async fn take_code(&self, code_hash: &str, now: u64) -> StoreResult<CodeTake>;

    // --- sessions
    /// Stores a session. A session with a user is also indexed per (API, client, user): when that
    /// index then holds more than `max_per_user` live sessions, the oldest are revoked (as
    /// [`Store::revoke_session`], until their own expiry) in the same atomic step, and their sids are
    /// returned. So sessions per user are O(`max_per_user`), whatever a script that signs in per call
    /// does.
    async fn put_session(&self, session: &Session, max_per_user: u32) -> StoreResult<Vec<String>>;
    async fn get_session(&self, sid: &str) -> StoreResult<Option<Session>>;
    /// Live (not revoked, not expired) sessions of one client of one API.
    async fn client_sessions(
        &self,
        api_id: &str,
        client_id: &str,
        now: u64,
    ) -> StoreResult<Vec<Session>>;

    // --- refresh tokens
    async fn put_refresh(&self, token_hash: &str, token: &RefreshToken) -> StoreResult<()>;
    async fn get_refresh(&self, token_hash: &str, now: u64) -> StoreResult<Option<RefreshToken>>;
    /// Atomically: if `old_hash` is live and its session not revoked, spend it, store `new` under
    /// `new_hash`, bump the session's refresh count and return `Rotated(old)`. If `old_hash` was already
    /// rotated, revoke its session (every refresh and access token of it) and return `Reused`.
    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        new: &RefreshToken,
        now: u64,
    ) -> StoreResult<Rotation>;

    // --- revocation
    /// Revokes a session: its refresh tokens stop working at once, and `is_revoked` reports it for
    /// access tokens until `until` (the latest expiry of any token of the session).
    async fn revoke_session(&self, sid: &str, until: u64) -> StoreResult<()>;
    /// Revokes one access token by its `jti` until its `exp`.
    async fn revoke_jti(&self, jti: &str, until: u64) -> StoreResult<()>;
    /// Local check without I/O (Redis keeps a local set fed by pub/sub): is this session or token revoked?
    fn is_revoked(&self, sid: &str, jti: &str, now: u64) -> bool;
    /// Revokes every access token of one client issued at or before `issued_up_to` (its `iat`), stateless
    /// or not: a per-client not-before time, remembered until `until` (when the last token it covers has
    /// expired). A later cutoff replaces an earlier one; neither time ever moves back. Every node learns of
    /// it (Redis: pub/sub, and a reload after every reconnect).
    async fn revoke_client_tokens(
        &self,
        api_id: &str,
        client_id: &str,
        issued_up_to: u64,
        until: u64,
    ) -> StoreResult<()>;
    /// Local check without I/O: the client's live cutoff, if any (tokens with `iat <=` it are revoked).
    fn client_cutoff(&self, api_id: &str, client_id: &str, now: u64) -> Option<u64>;
    /// Whether an access token was revoked: its session, itself (`jti`), or every token of its client up
    /// to its `iat` (a per-client cutoff). Local, no I/O, and one look at the node's revocation state:
    /// it runs on every proxied request.
    fn access_revoked(&self, claims: &AccessClaims, now: u64) -> bool;

    // --- stateless tokens (docs/design.md §9f): nothing is stored per token, only a count per client
    /// Counts one stateless access token issued to the client.
    async fn count_stateless(&self, api_id: &str, client_id: &str, now: u64) -> StoreResult<()>;
    /// What [`Store::count_stateless`] counted for the client (zero when nothing).
    async fn stateless_count(&self, api_id: &str, client_id: &str) -> StoreResult<StatelessCount>;

    // --- dynamic clients
    /// Creates or replaces a client.
    async fn put_client(&self, client: &StoredClient) -> StoreResult<()>;
    async fn get_client(&self, api_id: &str, client_id: &str) -> StoreResult<Option<StoredClient>>;
    async fn list_clients(&self, api_id: &str) -> StoreResult<Vec<StoredClient>>;
    /// Returns whether it existed. Its stateless-token count is forgotten with it.
    async fn delete_client(&self, api_id: &str, client_id: &str) -> StoreResult<bool>;

    // --- policies created through the admin API
    /// Writes `policy` if `mode` allows it (see [`PolicyWrite`]); returns whether it was written.
    /// Every node learns of the change (see [`Store::policy_epoch`]).
    async fn put_policy(&self, policy: &StoredPolicy, mode: PolicyWrite) -> StoreResult<bool>;
    /// Reads one policy from the backend itself (no cache): callers that need it per request cache
    /// it, keyed by `policy_epoch` (`policy::StoredPolicies`).
    async fn get_policy(&self, id: &str) -> StoreResult<Option<StoredPolicy>>;
    /// Every stored policy, sorted by id.
    async fn list_policies(&self) -> StoreResult<Vec<StoredPolicy>>;
    /// Returns whether it existed. Every node learns of the change.
    async fn delete_policy(&self, id: &str) -> StoreResult<bool>;
    /// The cheap way for a node to learn that stored policies changed, without I/O: a number that
    /// changes whenever this node learns of a change (its own writes at once; with Redis, another
    /// node's writes through pub/sub, and every loss or return of the subscription). `None` while the
    /// node cannot learn of changes (the Redis subscription is down): nothing cached may be trusted
    /// then. A cache filled while the epoch was `e` is valid while the epoch is still `Some(e)`.
    fn policy_epoch(&self) -> Option<u64>;

    // --- guessing throttles (failed logins and client authentications)
    /// Reserves one attempt at guessing a secret *before* it is verified: allowed when both counters
    /// of `guess` (per address, per subject and address) are below `limit` in their windows, and then
    /// both are counted, in one atomic step. So N parallel guesses are evaluated at most `limit` times
    /// per window. A window starts at the first attempt of its counter and lasts `window_secs`.
    /// Every reserved attempt counts as a failure unless [`Store::release_attempt`] says otherwise.
    async fn reserve_attempt(
        &self,
        guess: &Guess<'_>,
        limit: u32,
        window_secs: u64,
        now: u64,
    ) -> StoreResult<Attempt>;
    /// Ends a reserved attempt that was not a failure (see [`Release`]). Nothing happens to a counter
    /// whose window is over.
    async fn release_attempt(&self, guess: &Guess<'_>, how: Release, now: u64) -> StoreResult<()>;
    /// An attempt whose secret is already known to be right (it matched a secret verified before, in
    /// the token endpoint's verified-secret cache), admitted or refused in one atomic step: refused
    /// exactly when [`Store::reserve_attempt`] would refuse it, counting nothing; admitted, both
    /// counters end as a reservation released with [`Release::Success`] leaves them (the address's
    /// count unchanged, the subject's counter gone), and `issued`, if given, is counted as
    /// [`Store::count_stateless`] counts it. No reservation is left behind, so there is nothing to
    /// release.
    ///
    /// Why one call: a client_credentials token costs one round trip to Redis instead of three
    /// (reserve, release, count). Redis Cluster: two, since the count's key lives in another hash
    /// slot than the counters; there a failure of the count is logged, not returned, as the token
    /// endpoint treats a failed [`Store::count_stateless`].
    async fn admit_attempt(
        &self,
        guess: &Guess<'_>,
        limit: u32,
        window_secs: u64,
        now: u64,
        issued: Option<StatelessIssue<'_>>,
    ) -> StoreResult<Admission>;

    // --- login sessions of the builtin login page (OpenID Connect, docs/design.md §9c)
    /// Stores a login session under `id_hash` (the SHA-256 of its cookie's id) until its
    /// `expires_at`. A user has at most `max_per_user` live login sessions: storing one more forgets
    /// the oldest in the same atomic step, so a script that signs in per call costs O(max) state.
    async fn put_login_session(
        &self,
        id_hash: &str,
        session: &LoginSession,
        max_per_user: u32,
    ) -> StoreResult<()>;
    /// A live login session; `None` when unknown, ended or expired (`now >= expires_at`).
    async fn get_login_session(&self, id_hash: &str, now: u64)
    -> StoreResult<Option<LoginSession>>;
    /// Ends one login session; returns whether it was live.
    async fn end_login_session(&self, id_hash: &str, now: u64) -> StoreResult<bool>;
    /// A user's live login sessions on every API as (id hash, session), oldest first.
    async fn user_login_sessions(
        &self,
        username: &str,
        now: u64,
    ) -> StoreResult<Vec<(String, LoginSession)>>;
    /// Ends every login session of a user; returns how many were live.
    async fn end_user_login_sessions(&self, username: &str, now: u64) -> StoreResult<u64>;

    /// Whether the backend answers (for `/health`).
    async fn ping(&self) -> StoreResult<()>;
}

/// [`Store::access_revoked`], for callers holding a `&dyn Store`.
pub fn access_revoked(store: &dyn Store, claims: &AccessClaims, now: u64) -> bool {
    store.access_revoked(claims, now)
}
