//! The authorization server's flows, free of HTTP: the token endpoint's grants, revocation,
//! introspection, tokeninfo and metadata. Handlers (`handlers.rs`) parse requests into these calls and
//! turn results into responses; storage is reached only through the `Store` trait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::config::{ApiDef, GrantType, OAuthConfig, Policy, RuntimeConfig, User};
use crate::limits::{Limiter, Refused};
use crate::logging::SECURITY_TARGET;
use crate::policy::{self, Resolved, StoredPolicies};
use crate::store::{
    Admission, Attempt, CodeTake, GrantKind, Guess, RefreshToken, Release, Rotation, Session,
    StatelessIssue, Store, StoreError,
};

mod guard;
mod introspection;
mod scope;

pub use guard::{LoginError, busy, throttle_address, throttled};
use guard::{Proof, Unadmitted};
pub use scope::{client_scopes, refreshed_scope, resolve_scope, split_scope, user_scopes};

use super::clients::{Client, ClientAuth, SecretCache, SharedFlights, static_client};
use super::notify::{Notification, Notifier};
use super::pkce;
use crate::error::oauth::{OAuthError, OAuthErrorCode};
use crate::secrets::{self, Busy, VerifierPool};
use crate::token::Tokens;
use crate::token::jwt::{self, AccessClaims, TokenError};
use crate::token::keys::KeySet;

/// Failed logins allowed per (username, address) and per address within [`LOGIN_WINDOW_SECS`]; the
/// same for failed client authentications per (client_id, address) and per address (docs/design.md §9a).
pub const MAX_LOGIN_FAILURES: u32 = 5;
pub const LOGIN_WINDOW_SECS: u64 = 15 * 60;
/// Longest username looked up or counted: a name becomes part of a storage key, so an unbounded one
/// would let a caller write keys of any size. Client ids are bounded by docs/design.md §4a (128 characters).
pub const MAX_USERNAME_BYTES: usize = 256;
/// docs/design.md §4a: client ids are 1–128 visible ASCII characters.
const MAX_CLIENT_ID_CHARS: usize = 128;
/// Bytes of randomness in refresh tokens and codes (docs/design.md §4: at least 256 bits).
const OPAQUE_TOKEN_BYTES: usize = 32;
/// How long a session is kept when its refresh tokens never expire.
const NEVER_EXPIRES_SECS: u64 = 10 * 365 * 24 * 3600;

pub struct AuthServer {
    /// Signing keys, issuer URL and the cache of verified access tokens (shared with the proxy).
    pub tokens: Tokens,
    pub store: Arc<dyn Store>,
    secret_cache: SecretCache,
    /// Identical client authentications in flight share one attempt and one verification.
    client_flights: SharedFlights<Result<Client, OAuthError>>,
    /// Every argon2 verification (client secrets, passwords) runs under this pool's permits.
    pub verifier: VerifierPool,
    pub notifier: Notifier,
    /// Policies created through the admin API, cached per store policy epoch (shared with the proxy).
    pub policies: StoredPolicies,
    /// Counts `oauth.token_rate_limit` (the proxy's limiter: Redis when configured).
    limiter: Arc<dyn Limiter>,
    pub stats: Arc<TokenStats>,
}

/// What the token endpoint did beyond issuing, for `/metrics`.
#[derive(Debug, Default)]
pub struct TokenStats {
    /// Access tokens issued, by grant (in the order of [`GrantType::ALL`]).
    pub issued: [AtomicU64; 4],
    /// Sessions ended because their user began one more than `oauth.max_sessions_per_user`.
    pub sessions_capped: AtomicU64,
    /// Token requests refused by `oauth.token_rate_limit` (429).
    pub token_requests_limited: AtomicU64,
    /// Access tokens issued without any stored state (client_credentials; grants without refresh).
    pub stateless_issued: AtomicU64,
}

impl TokenStats {
    pub fn count_issued(&self, grant: GrantType) {
        if let Some(i) = GrantType::ALL.iter().position(|g| *g == grant) {
            self.issued[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A token request after form parsing (RFC 6749 §4.1.3, §4.3.2, §4.4.2, §6).
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub grant_type: String,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub client: ClientAuth,
    /// The client's address as the gateway believes it (for login-failure limits).
    pub client_ip: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
    /// OpenID Connect sessions only (see `oidc.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// A client_credentials token as it would be issued, worked out before the caller's secret is known
/// to be right (see [`AuthServer::plan_client_credentials`]).
struct Plan {
    /// Its `iat` (see [`AuthServer::issue_time`]).
    issued_at: u64,
    /// Its scope, or why the request is refused.
    granted: Result<Vec<String>, OAuthError>,
}

/// Everything that starts a session.
struct NewSession<'a> {
    api: &'a ApiDef,
    oauth: &'a OAuthConfig,
    client: &'a Client,
    user: Option<&'a User>,
    scope: Vec<String>,
    grant: GrantKind,
    /// Known in advance for authorization codes (so a reused code can revoke it).
    sid: Option<String>,
    code: Option<&'a str>,
    /// What an OpenID Connect code carried (auth_time, nonce, claims).
    oidc: Option<crate::store::OidcGrant>,
    /// A stateless token already counted with its caller's admission (`Store::admit_attempt`).
    counted: bool,
}

/// What the token endpoint needs from the running configuration besides the API.
pub struct Directory<'a> {
    pub users: &'a [User],
    pub policies: &'a [Policy],
}

impl<'a> From<&'a RuntimeConfig> for Directory<'a> {
    fn from(config: &'a RuntimeConfig) -> Self {
        Directory {
            users: &config.users,
            policies: &config.policies,
        }
    }
}

impl AuthServer {
    pub fn new(
        keys: KeySet,
        store: Arc<dyn Store>,
        limiter: Arc<dyn Limiter>,
        public_url: &str,
        notifier: Notifier,
        secret_verifications: usize,
    ) -> AuthServer {
        AuthServer {
            verifier: VerifierPool::new(secret_verifications),
            tokens: Tokens::new(keys, public_url, 100_000),
            policies: StoredPolicies::new(store.clone()),
            store,
            secret_cache: SecretCache::new(Duration::from_secs(600), 10_000),
            client_flights: SharedFlights::new(),
            notifier,
            limiter,
            stats: Arc::new(TokenStats::default()),
        }
    }

    /// `public_url` + listen path without its trailing `/` (docs/design.md §4).
    pub fn issuer(&self, api: &ApiDef) -> String {
        self.tokens.issuer(&api.listen_path)
    }

    /// The client's policy: policies.yaml first, then the stored ones. `None` also when the client names
    /// a policy that no longer exists (it is then on the API's defaults).
    pub async fn client_policy<'a>(
        &self,
        file_policies: &'a [Policy],
        client: &Client,
    ) -> Result<Option<Resolved<'a>>, StoreError> {
        policy::resolve(file_policies, &self.policies, client.policy.as_deref()).await
    }

    /// Static clients first (they are read-only), then the store.
    pub async fn find_client(
        &self,
        api: &ApiDef,
        client_id: &str,
    ) -> Result<Option<Client>, StoreError> {
        if let Some(client) = static_client(api, client_id) {
            return Ok(Some(client));
        }
        Ok(self
            .store
            .get_client(&api.id, client_id)
            .await?
            .map(Client::from))
    }

    /// The token endpoint (RFC 6749 §3.2).
    pub async fn token(
        &self,
        api: &ApiDef,
        dir: &Directory<'_>,
        req: TokenRequest,
        now: u64,
    ) -> Result<TokenResponse, OAuthError> {
        let oauth = oauth_of(api)?;
        let grant = GrantType::parse(&req.grant_type).ok_or_else(|| {
            OAuthError::new(
                OAuthErrorCode::UnsupportedGrantType,
                format!("unsupported grant_type '{}'", req.grant_type),
            )
        })?;
        // A client_credentials token that may be issued with one store call is worked out before
        // the secret is looked at (see `identify`): for a right guess and a wrong one alike.
        let plan = async |client: &Client| {
            if !issues_at_once(oauth, dir, grant, client) {
                return None;
            }
            Some(
                self.plan_client_credentials(api, oauth, dir, client, &req, now)
                    .await,
            )
        };
        let (client, proof, plan) = self
            .identify(api, &req.client, &req.client_ip, now, plan)
            .await?;
        if let Proof::Cached(unadmitted) = &proof {
            if let Some(Some(plan)) = plan {
                return self
                    .client_credentials_at_once(api, oauth, &client, plan, unadmitted, now)
                    .await;
            }
            self.admit(api, &client, unadmitted, None, now).await?;
        }
        grant_allowed(oauth, &client, grant)?;
        // Counted only once the client has proved who it is: nobody can spend another client's
        // budget by naming it.
        if let Some(limit) = &oauth.token_rate_limit {
            let key = format!("token:{}:{}", api.id, client.client_id);
            let decision = self.limiter.check(&key, Some(limit), None, now).await?;
            if let Some(
                Refused::RateLimit { retry_after_secs } | Refused::Quota { retry_after_secs },
            ) = decision.refused
            {
                self.stats
                    .token_requests_limited
                    .fetch_add(1, Ordering::Relaxed);
                return Err(throttled(
                    "too many token requests for this client; slow down",
                    retry_after_secs.max(1),
                ));
            }
        }
        let now = self.after_cutoff(&api.id, &client.client_id, now).await;
        let response = match grant {
            GrantType::ClientCredentials => {
                self.client_credentials(api, oauth, dir, &client, &req, now)
                    .await
            }
            GrantType::Password => self.password(api, oauth, dir, &client, &req, now).await,
            GrantType::AuthorizationCode => {
                self.authorization_code(api, oauth, dir, &client, &req, now)
                    .await
            }
            GrantType::RefreshToken => self.refresh(api, oauth, dir, &client, &req, now).await,
        }?;
        Ok(response)
    }

    async fn client_credentials(
        &self,
        api: &ApiDef,
        oauth: &OAuthConfig,
        dir: &Directory<'_>,
        client: &Client,
        req: &TokenRequest,
        now: u64,
    ) -> Result<TokenResponse, OAuthError> {
        let scope = self.client_credentials_scope(dir, client, req).await?;
        self.begin_session(
            NewSession {
                api,
                oauth,
                client,
                user: None,
                scope,
                grant: GrantKind::ClientCredentials,
                sid: None,
                code: None,
                oidc: None,
                counted: false,
            },
            now,
        )
        .await
    }

    /// What a client_credentials token of `client` may carry, or why it gets none.
    async fn client_credentials_scope(
        &self,
        dir: &Directory<'_>,
        client: &Client,
        req: &TokenRequest,
    ) -> Result<Vec<String>, OAuthError> {
        if client.is_public() {
            return Err(OAuthError::unauthorized_client(
                "public clients cannot use client_credentials",
            ));
        }
        let policy = self.client_policy(dir.policies, client).await?;
        resolve_scope(
            req.scope.as_deref(),
            &client_scopes(client, policy.as_deref()),
            None,
        )
    }

    /// What a client_credentials token of `client` would be, worked out without I/O (see
    /// [`issues_at_once`]) and before the secret is known to be right.
    async fn plan_client_credentials(
        &self,
        api: &ApiDef,
        oauth: &OAuthConfig,
        dir: &Directory<'_>,
        client: &Client,
        req: &TokenRequest,
        now: u64,
    ) -> Plan {
        let granted = match grant_allowed(oauth, client, GrantType::ClientCredentials) {
            Ok(()) => self.client_credentials_scope(dir, client, req).await,
            Err(err) => Err(err),
        };
        Plan {
            issued_at: self.issue_time(&api.id, &client.client_id, now),
            granted,
        }
    }

    /// The client_credentials grant for a secret found in the verified-secret cache, with one store
    /// call: the guessing throttle's admission and the token's count together (where the normal path
    /// takes three: reserve, release, count). The `plan` was worked out before the secret was looked
    /// at; whatever refuses the request is answered only once the throttle has admitted the caller,
    /// and a refused request is not counted.
    async fn client_credentials_at_once(
        &self,
        api: &ApiDef,
        oauth: &OAuthConfig,
        client: &Client,
        plan: Plan,
        unadmitted: &Unadmitted,
        now: u64,
    ) -> Result<TokenResponse, OAuthError> {
        let Plan { issued_at, granted } = plan;
        let issued = granted.is_ok().then_some(StatelessIssue {
            api_id: &api.id,
            client_id: &client.client_id,
            issued_at,
        });
        self.admit(api, client, unadmitted, issued, now).await?;
        let granted = granted?;
        wait_until(issued_at, now).await;
        self.begin_session(
            NewSession {
                api,
                oauth,
                client,
                user: None,
                scope: granted,
                grant: GrantKind::ClientCredentials,
                sid: None,
                code: None,
                oidc: None,
                counted: true,
            },
            issued_at,
        )
        .await
    }

    async fn password(
        &self,
        api: &ApiDef,
        oauth: &OAuthConfig,
        dir: &Directory<'_>,
        client: &Client,
        req: &TokenRequest,
        now: u64,
    ) -> Result<TokenResponse, OAuthError> {
        let username = required(&req.username, "username")?;
        let password = required(&req.password, "password")?;
        let user = self
            .login(api, dir.users, username, password, &req.client_ip, now)
            .await
            .map_err(|e| match e {
                LoginError::Throttled { retry_after_secs } => {
                    throttled("too many failed logins; try again later", retry_after_secs)
                }
                LoginError::Invalid => OAuthError::invalid_grant("invalid username or password"),
                LoginError::UsernameTooLong => OAuthError::invalid_request(format!(
                    "the username is longer than {MAX_USERNAME_BYTES} bytes"
                )),
                LoginError::Busy => busy(),
                LoginError::Store(err) => err.into(),
            })?;
        let policy = self.client_policy(dir.policies, client).await?;
        let scope = resolve_scope(
            req.scope.as_deref(),
            &client_scopes(client, policy.as_deref()),
            Some(&user_scopes(oauth, user)),
        )?;
        self.begin_session(
            NewSession {
                api,
                oauth,
                client,
                user: Some(user),
                scope,
                grant: GrantKind::Password,
                sid: None,
                code: None,
                oidc: None,
                counted: false,
            },
            now,
        )
        .await
    }

    async fn authorization_code(
        &self,
        api: &ApiDef,
        oauth: &OAuthConfig,
        dir: &Directory<'_>,
        client: &Client,
        req: &TokenRequest,
        now: u64,
    ) -> Result<TokenResponse, OAuthError> {
        let code = required(&req.code, "code")?;
        let redirect_uri = required(&req.redirect_uri, "redirect_uri")?;
        if let Some(verifier) = &req.code_verifier
            && !pkce::valid_verifier(verifier)
        {
            return Err(OAuthError::invalid_request(
                "code_verifier must be 43-128 characters of [A-Za-z0-9-._~]",
            ));
        }
        let code_hash = secrets::sha256_hex(code.as_bytes());
        let grant = match self.store.take_code(&code_hash, now).await? {
            CodeTake::Fresh(grant) => grant,
            CodeTake::AlreadyUsed { sid } => {
                // RFC 6749 §4.1.2: a code used twice revokes what the first use issued.
                self.store
                    .revoke_session(&sid, now + session_lifetime(oauth))
                    .await?;
                tracing::warn!(target: SECURITY_TARGET, security = "authorization_code_reused", api = %api.id, client = %client.client_id, "authorization code reused; session revoked");
                return Err(OAuthError::invalid_grant(
                    "the authorization code was already used",
                ));
            }
            CodeTake::Unknown => {
                return Err(OAuthError::invalid_grant(
                    "unknown or expired authorization code",
                ));
            }
        };
        if grant.api_id != api.id || grant.client_id != client.client_id {
            return Err(OAuthError::invalid_grant(
                "the code was issued to another client",
            ));
        }
        if grant.redirect_uri != redirect_uri {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        match (&grant.code_challenge, &req.code_verifier) {
            (Some(challenge), Some(verifier)) => {
                if !pkce::verify_s256(verifier, challenge) {
                    return Err(OAuthError::invalid_grant(
                        "code_verifier does not match the code_challenge",
                    ));
                }
            }
            (Some(_), None) => return Err(OAuthError::invalid_grant("code_verifier is missing")),
            (None, Some(_)) => {
                return Err(OAuthError::invalid_grant(
                    "code_verifier sent but the authorization request had no code_challenge",
                ));
            }
            (None, None) => {}
        }
        let user = dir
            .users
            .iter()
            .find(|u| u.username == grant.username && !u.disabled);
        let Some(user) = user else {
            return Err(OAuthError::invalid_grant("the user no longer exists"));
        };
        self.begin_session(
            NewSession {
                api,
                oauth,
                client,
                user: Some(user),
                scope: split_scope(&grant.scope),
                grant: GrantKind::AuthorizationCode,
                sid: Some(grant.sid.clone()),
                code: Some(code),
                oidc: grant.oidc.clone().map(|grant| *grant),
                counted: false,
            },
            now,
        )
        .await
    }

    async fn refresh(
        &self,
        api: &ApiDef,
        oauth: &OAuthConfig,
        dir: &Directory<'_>,
        client: &Client,
        req: &TokenRequest,
        now: u64,
    ) -> Result<TokenResponse, OAuthError> {
        let presented = required(&req.refresh_token, "refresh_token")?;
        let old_hash = secrets::sha256_hex(presented.as_bytes());
        let Some(old) = self.store.get_refresh(&old_hash, now).await? else {
            // Spent tokens are not returned by get_refresh; rotation below still detects reuse.
            return self.refresh_reuse_or_invalid(&old_hash, now).await;
        };
        if old.api_id != api.id || old.client_id != client.client_id {
            return Err(OAuthError::invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        if let Some(max) = oauth.max_refreshes
            && old.generation >= max
        {
            return Err(OAuthError::invalid_grant(
                "the refresh limit of this session is reached",
            ));
        }
        // The session keeps what it was granted only while the grant still stands: the user must
        // still exist and be enabled, and the scopes are narrowed to what the client, its policy and
        // the user may have *now* (docs/design.md §9a). Checked before rotation so that a refused refresh
        // leaves nothing half-done; a session whose user is gone is ended.
        let user = match old.username.as_deref() {
            None => None,
            Some(name) => match dir.users.iter().find(|u| u.username == name && !u.disabled) {
                Some(user) => Some(user),
                None => {
                    self.store
                        .revoke_session(&old.sid, now + session_lifetime(oauth))
                        .await?;
                    return Err(OAuthError::invalid_grant(
                        "the user no longer exists or is disabled",
                    ));
                }
            },
        };
        let policy = self.client_policy(dir.policies, client).await?;
        let scope = refreshed_scope(
            &split_scope(&old.scope),
            req.scope.as_deref(),
            &client_scopes(client, policy.as_deref()),
            user.map(|u| user_scopes(oauth, u)).as_deref(),
        )?;
        let scope_text = scope.join(" ");
        // Read before the rotation, not after: once this request has rotated the token, a parallel
        // request presenting the same token is a reuse and revokes the session; reading it afterwards
        // would then fail the one request that won (SECURITY.md: N parallel refreshes → exactly one
        // succeeds). A session revoked in between makes the rotation itself Invalid.
        let mut session = match self.store.get_session(&old.sid).await? {
            Some(session) => session,
            None => return Err(OAuthError::invalid_grant("the session has ended")),
        };
        let new_token = secrets::random_token(OPAQUE_TOKEN_BYTES);
        let new_hash = secrets::sha256_hex(new_token.as_bytes());
        let new_record = RefreshToken {
            scope: scope_text.clone(),
            generation: old.generation + 1,
            issued_at: now,
            expires_at: oauth.refresh_token_ttl.map(|ttl| now + ttl.as_secs()),
            ..old.clone()
        };
        match self
            .store
            .rotate_refresh(&old_hash, &new_hash, &new_record, now)
            .await?
        {
            Rotation::Rotated(_) => {}
            Rotation::Reused { sid } => {
                tracing::warn!(target: SECURITY_TARGET, security = "refresh_token_reused", api = %api.id, client = %client.client_id, sid = %sid, "refresh token reused; session revoked");
                return Err(OAuthError::invalid_grant(
                    "the refresh token was already used",
                ));
            }
            Rotation::Invalid => return Err(OAuthError::invalid_grant("invalid refresh token")),
        }
        session.scope = scope_text;
        let access = self.access_token(api, oauth, client, &session, user, now)?;
        let id_token = self.id_token(api, client, &session, user, &access, now)?;
        let response = TokenResponse {
            access_token: access,
            token_type: "bearer",
            expires_in: oauth.access_token_ttl.as_secs(),
            refresh_token: Some(new_token),
            scope: session.scope.clone(),
            id_token,
        };
        self.notifier.send(
            api,
            Notification {
                notification_type: "refresh",
                api_id: api.id.clone(),
                client_id: client.client_id.clone(),
                username: session.username.clone(),
                session_id: session.sid.clone(),
                new_oauth_token: Some(response.access_token.clone()),
                refresh_token: response.refresh_token.clone(),
                old_refresh_token: Some(presented.to_string()),
                auth_code: None,
            },
        );
        Ok(response)
    }

    async fn refresh_reuse_or_invalid(
        &self,
        old_hash: &str,
        now: u64,
    ) -> Result<TokenResponse, OAuthError> {
        // A rotation attempt on a spent token is how the store detects (and punishes) reuse.
        let probe = RefreshToken {
            sid: String::new(),
            api_id: String::new(),
            client_id: String::new(),
            username: None,
            scope: String::new(),
            generation: 0,
            issued_at: now,
            expires_at: Some(now),
        };
        let unused_hash = secrets::sha256_hex(secrets::random_token(OPAQUE_TOKEN_BYTES).as_bytes());
        match self
            .store
            .rotate_refresh(old_hash, &unused_hash, &probe, now)
            .await?
        {
            Rotation::Reused { .. } => Err(OAuthError::invalid_grant(
                "the refresh token was already used",
            )),
            _ => Err(OAuthError::invalid_grant("invalid refresh token")),
        }
    }

    /// A token issued in the same second as a client-wide revocation (`iat` = the cutoff) would be
    /// refused with the tokens it was meant to replace: such a request waits for the next second
    /// (at most one; only right after a revocation of this client).
    async fn after_cutoff(&self, api_id: &str, client_id: &str, now: u64) -> u64 {
        let issued_at = self.issue_time(api_id, client_id, now);
        wait_until(issued_at, now).await;
        issued_at
    }

    /// When a token requested at `now` is issued: `now`, or the second after a client-wide
    /// revocation of this same second (see [`AuthServer::after_cutoff`]). Local, no I/O.
    fn issue_time(&self, api_id: &str, client_id: &str, now: u64) -> u64 {
        match self.store.client_cutoff(api_id, client_id, now) {
            Some(cutoff) if cutoff >= now => cutoff.saturating_add(1),
            _ => now,
        }
    }

    /// Begins a session (one grant) and issues its first tokens: an access token, and a refresh token
    /// unless the grant is client_credentials (RFC 6749 §4.4.3) or the API and client do not allow one.
    ///
    /// A grant without a refresh token, other than an authorization code, stores nothing (docs/design.md
    /// §9f): the JWT is the whole state, so a client that fetches a token per call costs no memory.
    /// Its `sid` is derived from (API, client, user), so rate limits and quotas, which count per
    /// session, count per client (and user) for such tokens: fetching a new token does not reset
    /// them. A code grant keeps its stored session: its `sid` was fixed when the code was issued, so
    /// that a second redemption can revoke what the first one issued.
    async fn begin_session(
        &self,
        new: NewSession<'_>,
        now: u64,
    ) -> Result<TokenResponse, OAuthError> {
        let NewSession {
            api,
            oauth,
            client,
            user,
            scope,
            grant,
            sid,
            code,
            oidc,
            counted,
        } = new;
        let with_refresh = grant != GrantKind::ClientCredentials && issues_refresh(oauth, client);
        let stateless = !with_refresh && grant != GrantKind::AuthorizationCode;
        // A session without a refresh token ends with its access token.
        let lifetime = if with_refresh {
            session_lifetime(oauth)
        } else {
            oauth.access_token_ttl.as_secs() + jwt::LEEWAY_SECS
        };
        let username = user.map(|u| u.username.as_str());
        let sid = match sid {
            Some(sid) => sid,
            None if stateless => {
                crate::token::sid::stateless_sid(&api.id, &client.client_id, username)
            }
            None => secrets::random_token(16),
        };
        let session = Session {
            sid,
            api_id: api.id.clone(),
            client_id: client.client_id.clone(),
            username: user.map(|u| u.username.clone()),
            scope: scope.join(" "),
            grant,
            created_at: now,
            last_refresh_at: None,
            refresh_count: 0,
            expires_at: now + lifetime,
            oidc,
        };
        if stateless {
            // Only a count per client: the token is valid without it, so a storage failure here
            // costs a missed count, not the token.
            if !counted
                && let Err(err) = self
                    .store
                    .count_stateless(&api.id, &client.client_id, now)
                    .await
            {
                tracing::warn!(error = %err, api = %api.id, client = %client.client_id, "could not count a stateless token");
            }
            self.stats.stateless_issued.fetch_add(1, Ordering::Relaxed);
        } else {
            let ended = self
                .store
                .put_session(&session, oauth.max_sessions_per_user)
                .await?;
            if !ended.is_empty() {
                self.stats
                    .sessions_capped
                    .fetch_add(ended.len() as u64, Ordering::Relaxed);
                tracing::info!(target: SECURITY_TARGET, security = "sessions_capped", api = %api.id, client = %client.client_id, ended = ended.len(), "oldest sessions of a user ended (oauth.max_sessions_per_user)");
            }
        }
        let access_token = self.access_token(api, oauth, client, &session, user, now)?;
        let refresh_token = if with_refresh {
            let token = secrets::random_token(OPAQUE_TOKEN_BYTES);
            let record = RefreshToken {
                sid: session.sid.clone(),
                api_id: api.id.clone(),
                client_id: client.client_id.clone(),
                username: session.username.clone(),
                scope: session.scope.clone(),
                generation: 0,
                issued_at: now,
                expires_at: oauth.refresh_token_ttl.map(|ttl| now + ttl.as_secs()),
            };
            self.store
                .put_refresh(&secrets::sha256_hex(token.as_bytes()), &record)
                .await?;
            Some(token)
        } else {
            None
        };
        let id_token = self.id_token(api, client, &session, user, &access_token, now)?;
        let response = TokenResponse {
            access_token,
            token_type: "bearer",
            expires_in: oauth.access_token_ttl.as_secs(),
            refresh_token,
            scope: session.scope.clone(),
            id_token,
        };
        self.notify_new(api, &session, &response, code);
        Ok(response)
    }

    fn access_token(
        &self,
        api: &ApiDef,
        oauth: &OAuthConfig,
        client: &Client,
        session: &Session,
        user: Option<&User>,
        now: u64,
    ) -> Result<String, OAuthError> {
        // User claims first, then client claims (validation keeps both away from registered names).
        let mut extra = Map::new();
        if let Some(user) = user {
            extra.extend(user.claims.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        extra.extend(client.claims.iter().map(|(k, v)| (k.clone(), v.clone())));
        let claims = AccessClaims {
            iss: self.issuer(api),
            sub: session
                .username
                .clone()
                .unwrap_or_else(|| client.client_id.clone()),
            aud: api.id.clone(),
            client_id: client.client_id.clone(),
            scope: session.scope.clone(),
            exp: now + oauth.access_token_ttl.as_secs(),
            iat: now,
            nbf: now,
            jti: secrets::random_token(16),
            sid: session.sid.clone(),
            extra,
        };
        jwt::sign(&self.tokens.keys, &claims).map_err(|err| {
            tracing::error!(error = %err, "signing an access token failed");
            OAuthError::new(OAuthErrorCode::ServerError, "could not sign the token")
        })
    }

    fn notify_new(
        &self,
        api: &ApiDef,
        session: &Session,
        response: &TokenResponse,
        code: Option<&str>,
    ) {
        self.notifier.send(
            api,
            Notification {
                notification_type: "new",
                api_id: api.id.clone(),
                client_id: session.client_id.clone(),
                username: session.username.clone(),
                session_id: session.sid.clone(),
                new_oauth_token: Some(response.access_token.clone()),
                refresh_token: response.refresh_token.clone(),
                old_refresh_token: None,
                auth_code: code.map(str::to_string),
            },
        );
    }
}

/// Whether the API and the client allow `grant` (RFC 6749 §5.2 `unauthorized_client` otherwise).
fn grant_allowed(oauth: &OAuthConfig, client: &Client, grant: GrantType) -> Result<(), OAuthError> {
    if !oauth.grant_types.contains(&grant) {
        return Err(OAuthError::unauthorized_client(format!(
            "the grant type {} is not enabled for this API",
            grant.as_str()
        )));
    }
    if !client.allows(grant) {
        return Err(OAuthError::unauthorized_client(format!(
            "the client may not use the grant type {}",
            grant.as_str()
        )));
    }
    Ok(())
}

/// Whether a client_credentials request whose secret came from the verified-secret cache can be
/// admitted and counted in one store call ([`AuthServer::client_credentials_at_once`]). What can
/// refuse such a request is decided *before* the throttle answers (for every guess, right or wrong,
/// see `identify`), so it must be decided without I/O: reads or waits there would come before the
/// throttle's answer to every caller. Hence not with `oauth.token_rate_limit` (the limiter is a call
/// of its own, and spends the client's budget: made for admitted callers only), nor for a client
/// whose policy is stored rather than in policies.yaml (reading it may be a call).
fn issues_at_once(
    oauth: &OAuthConfig,
    dir: &Directory<'_>,
    grant: GrantType,
    client: &Client,
) -> bool {
    grant == GrantType::ClientCredentials
        && oauth.token_rate_limit.is_none()
        && client
            .policy
            .as_deref()
            .is_none_or(|id| id.is_empty() || dir.policies.iter().any(|p| p.id == id))
}

/// Waits until the wall clock reaches `issued_at` when that is later than `now` (see
/// [`AuthServer::after_cutoff`]): at most a second.
async fn wait_until(issued_at: u64, now: u64) {
    if issued_at <= now {
        return;
    }
    let next = UNIX_EPOCH + Duration::from_secs(issued_at);
    let wait = next
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .min(Duration::from_secs(1));
    tokio::time::sleep(wait).await;
}

fn oauth_of(api: &ApiDef) -> Result<&OAuthConfig, OAuthError> {
    api.oauth
        .as_ref()
        .ok_or_else(|| OAuthError::invalid_request("this API is not an authorization server"))
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, OAuthError> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(OAuthError::invalid_request(format!(
            "the {name} parameter is missing"
        ))),
    }
}

/// A session lives as long as its longest-lived token can.
fn session_lifetime(oauth: &OAuthConfig) -> u64 {
    let refresh = oauth
        .refresh_token_ttl
        .map(|t| t.as_secs())
        .unwrap_or(NEVER_EXPIRES_SECS);
    refresh.max(oauth.access_token_ttl.as_secs()) + jwt::LEEWAY_SECS
}

fn issues_refresh(oauth: &OAuthConfig, client: &Client) -> bool {
    oauth.grant_types.contains(&GrantType::RefreshToken)
        && client.allows(GrantType::RefreshToken)
        && oauth.max_refreshes != Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use guard::valid_client_id;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn scope_defaults_to_the_client_scopes() {
        assert_eq!(
            resolve_scope(None, &v(&["read", "write"]), None).unwrap(),
            v(&["read", "write"])
        );
        assert_eq!(
            resolve_scope(Some(""), &v(&["read"]), None).unwrap(),
            v(&["read"])
        );
    }

    #[test]
    fn scope_beyond_the_client_is_invalid_scope() {
        let err = resolve_scope(Some("read admin"), &v(&["read"]), None).unwrap_err();
        assert_eq!(err.code, OAuthErrorCode::InvalidScope);
    }

    #[test]
    fn user_scopes_narrow_silently() {
        let granted = resolve_scope(
            Some("read write"),
            &v(&["read", "write"]),
            Some(&v(&["read"])),
        )
        .unwrap();
        assert_eq!(granted, v(&["read"]));
    }

    #[test]
    fn throttle_addresses() {
        assert_eq!(throttle_address("192.0.2.7"), "192.0.2.7");
        // Other spellings of an IPv4 address are not addresses: kept as they are, never merged
        // into (or split from) the canonical one's budget by formatting.
        for odd in ["010.0.0.1", "1.2.3", "0x7f.0.0.1", " 1.2.3.4"] {
            assert!(odd.parse::<std::net::Ipv4Addr>().is_err(), "{odd}");
        }
        assert_eq!(throttle_address("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(
            throttle_address("2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            throttle_address("2001:db8:1:2::1"),
            throttle_address("2001:db8:1:2:ffff::9")
        );
        assert_eq!(throttle_address(&"x".repeat(1000)).len(), 64);
    }

    #[test]
    fn client_ids_per_design_4a() {
        assert!(valid_client_id("movies_app"));
        assert!(valid_client_id(&"a".repeat(128)));
        assert!(!valid_client_id(&"a".repeat(129)));
        assert!(!valid_client_id(""));
        assert!(!valid_client_id("my app"));
        assert!(!valid_client_id("café"));
    }

    #[test]
    fn duplicate_scopes_collapse() {
        assert_eq!(split_scope("read  read write"), v(&["read", "write"]));
    }
}
