//! The authorization server's flows, free of HTTP: the token endpoint's grants, revocation,
//! introspection, tokeninfo and metadata. Handlers (`handlers.rs`) parse requests into these calls and
//! turn results into responses; storage is reached only through the `Store` trait.

use std::collections::BTreeSet;
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
    Attempt, CodeTake, GrantKind, Guess, RefreshToken, Release, Rotation, Session, Store,
    StoreError,
};

use super::clients::{Client, ClientAuth, SecretCache, SharedFlights, static_client};
use super::notify::{Notification, Notifier};
use super::pkce;
use crate::error::oauth::{OAuthError, OAuthErrorCode};
use crate::secrets::{self, Busy, VerifierPool};
use crate::token::Tokens;
use crate::token::jwt::{self, AccessClaims, TokenError};
use crate::token::keys::KeySet;

/// Failed logins allowed per (username, address) and per address within [`LOGIN_WINDOW_SECS`]; the
/// same for failed client authentications per (client_id, address) and per address (DESIGN §9a).
pub const MAX_LOGIN_FAILURES: u32 = 5;
pub const LOGIN_WINDOW_SECS: u64 = 15 * 60;
/// Longest username looked up or counted: a name becomes part of a storage key, so an unbounded one
/// would let a caller write keys of any size. Client ids are bounded by DESIGN §4a (128 characters).
pub const MAX_USERNAME_BYTES: usize = 256;
/// DESIGN §4a: client ids are 1–128 visible ASCII characters.
const MAX_CLIENT_ID_CHARS: usize = 128;
/// Bytes of randomness in refresh tokens and codes (DESIGN §4: at least 256 bits).
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

    /// `public_url` + listen path without its trailing `/` (DESIGN §4).
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

    /// Authenticates the caller of the token, revoke or introspect endpoint (RFC 6749 §2.3). Public
    /// clients identify themselves with `client_id` alone. A presented secret is a guess: it reserves
    /// an attempt per (client_id, address) and per address before anything checks it (DESIGN §9a),
    /// and a throttled caller gets 429 `slow_down` like a throttled login.
    pub async fn authenticate(
        &self,
        api: &ApiDef,
        auth: &ClientAuth,
        client_ip: &str,
        now: u64,
    ) -> Result<Client, OAuthError> {
        // Nothing sent at all is answered like Basic, so the client learns how to authenticate.
        let challenge = auth.via_basic || (auth.client_id.is_none() && auth.secret.is_none());
        let fail = || OAuthError::invalid_client(challenge);
        let client_id = auth.client_id.as_deref().ok_or_else(fail)?;
        if !valid_client_id(client_id) {
            // Cannot name a registered client, and must not become a storage key.
            return Err(OAuthError {
                description: format!(
                    "client_id must be 1-{MAX_CLIENT_ID_CHARS} visible ASCII characters"
                ),
                ..fail()
            });
        }
        let Some(secret) = &auth.secret else {
            // Nothing to guess: a public client names itself; a confidential one must prove itself.
            return match self.find_client(api, client_id).await? {
                Some(client) if client.is_public() => Ok(client),
                _ => Err(fail()),
            };
        };
        let address = throttle_address(client_ip);
        self.client_flights
            .run(&[&api.id, client_id, secret, &address], || {
                self.authenticate_secret(api, client_id, secret, &address, challenge, now)
            })
            .await
    }

    /// One guess at a client's secret: reserved before it is checked, released when it was right.
    async fn authenticate_secret(
        &self,
        api: &ApiDef,
        client_id: &str,
        secret: &str,
        address: &str,
        challenge: bool,
        now: u64,
    ) -> Result<Client, OAuthError> {
        let fail = || OAuthError::invalid_client(challenge);
        let scope = format!("client:{}", api.id);
        let guess = Guess {
            scope: &scope,
            address,
            subject: client_id,
        };
        if let Attempt::Throttled { retry_after_secs } = self.reserve(&guess, now).await? {
            self.verifier
                .stats
                .throttled_clients
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(target: SECURITY_TARGET, security = "client_auth_throttled", api = %api.id, client = %client_id, address, "client authentication refused by the failure limit");
            return Err(throttled(
                "too many failed client authentications; try again later",
                retry_after_secs,
            ));
        }
        // From here on the attempt counts as a failure unless released below.
        // An unknown client, or a public one pretending to have a secret, costs one argon2 check like a
        // wrong secret does, so response times do not tell which client ids exist.
        let client = self.find_client(api, client_id).await?;
        let Some((client, phc)) = client.and_then(|c| c.secret_hash.clone().map(|phc| (c, phc)))
        else {
            return match self.verifier.verify(None, secret.to_owned()).await {
                Ok(_) => {
                    tracing::warn!(target: SECURITY_TARGET, security = "client_auth_failed", api = %api.id, client = %client_id, address, "client authentication failed: no confidential client with this id");
                    Err(fail())
                }
                Err(Busy) => {
                    self.release(&guess, Release::NotEvaluated, now).await;
                    Err(busy())
                }
            };
        };
        let phc = &phc;
        let verified = if self
            .secret_cache
            .verified_recently(&api.id, client_id, phc, secret)
        {
            true
        } else {
            match self
                .verifier
                .verify(Some(phc.clone()), secret.to_owned())
                .await
            {
                Ok(true) => {
                    self.secret_cache.remember(&api.id, client_id, phc, secret);
                    true
                }
                Ok(false) => false,
                Err(Busy) => {
                    self.release(&guess, Release::NotEvaluated, now).await;
                    return Err(busy());
                }
            }
        };
        if !verified {
            tracing::warn!(target: SECURITY_TARGET, security = "client_auth_failed", api = %api.id, client = %client_id, address, "client authentication failed: wrong secret");
            return Err(fail());
        }
        self.release(&guess, Release::Success, now).await;
        Ok(client)
    }

    async fn reserve(&self, guess: &Guess<'_>, now: u64) -> Result<Attempt, StoreError> {
        // Never fail open: a storage error here refuses the attempt (503).
        self.store
            .reserve_attempt(guess, MAX_LOGIN_FAILURES, LOGIN_WINDOW_SECS, now)
            .await
    }

    /// Gives back a reserved attempt that was not a failure. A storage error is only logged: the
    /// secret was checked (or not at all), and the worst outcome is an attempt counted as a failure
    /// until its window ends.
    async fn release(&self, guess: &Guess<'_>, how: Release, now: u64) {
        if let Err(err) = self.store.release_attempt(guess, how, now).await {
            tracing::warn!(error = %err, scope = guess.scope, "could not release a guessing attempt");
        }
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
        let client = self
            .authenticate(api, &req.client, &req.client_ip, now)
            .await?;
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
        if client.is_public() {
            return Err(OAuthError::unauthorized_client(
                "public clients cannot use client_credentials",
            ));
        }
        let policy = self.client_policy(dir.policies, client).await?;
        let scope = resolve_scope(
            req.scope.as_deref(),
            &client_scopes(client, policy.as_deref()),
            None,
        )?;
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
            },
            now,
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
        // the user may have *now* (DESIGN §9a). Checked before rotation so that a refused refresh
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
        let mut session = match self.store.get_session(&old.sid).await? {
            Some(session) => session,
            None => return Err(OAuthError::invalid_grant("the session has ended")),
        };
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
        let Some(cutoff) = self.store.client_cutoff(api_id, client_id, now) else {
            return now;
        };
        if cutoff < now {
            return now;
        }
        let next = UNIX_EPOCH + Duration::from_secs(cutoff.saturating_add(1));
        let wait = next
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(Duration::from_secs(1));
        tokio::time::sleep(wait).await;
        cutoff.saturating_add(1)
    }

    /// Begins a session (one grant) and issues its first tokens: an access token, and a refresh token
    /// unless the grant is client_credentials (RFC 6749 §4.4.3) or the API and client do not allow one.
    ///
    /// A grant without a refresh token, other than an authorization code, stores nothing (DESIGN
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
            if let Err(err) = self
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

    /// Checks a username and password with failure limits per (username, address) and per address
    /// (also used by the login page). The attempt is reserved before the password is checked, so
    /// parallel guesses are evaluated at most [`MAX_LOGIN_FAILURES`] times per window. Unknown users
    /// cost the same argon2 work as known ones.
    pub async fn login<'u>(
        &self,
        api: &ApiDef,
        users: &'u [User],
        username: &str,
        password: &str,
        client_ip: &str,
        now: u64,
    ) -> Result<&'u User, LoginError> {
        if username.len() > MAX_USERNAME_BYTES {
            return Err(LoginError::UsernameTooLong);
        }
        let scope = format!("login:{}", api.id);
        let address = throttle_address(client_ip);
        let guess = Guess {
            scope: &scope,
            address: &address,
            subject: username,
        };
        let attempt = self.reserve(&guess, now).await.map_err(LoginError::Store)?;
        if let Attempt::Throttled { retry_after_secs } = attempt {
            self.verifier
                .stats
                .throttled_logins
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(target: SECURITY_TARGET, security = "login_throttled", api = %api.id, address = %address, "login refused by the failure limit");
            return Err(LoginError::Throttled { retry_after_secs });
        }
        // From here on the attempt counts as a failure unless released below.
        let user = users.iter().find(|u| u.username == username);
        let phc = user.map(|u| u.password_hash.clone());
        let verified = match self.verifier.verify(phc, password.to_string()).await {
            Ok(verified) => verified,
            Err(Busy) => {
                self.release(&guess, Release::NotEvaluated, now).await;
                return Err(LoginError::Busy);
            }
        };
        match user {
            Some(user) if verified && !user.disabled => {
                self.release(&guess, Release::Success, now).await;
                Ok(user)
            }
            _ => {
                // Never the username: people type their password into that field.
                tracing::warn!(target: SECURITY_TARGET, security = "login_failed", api = %api.id, address = %address, "login failed");
                Err(LoginError::Invalid)
            }
        }
    }

    /// RFC 7009. Unknown tokens and tokens of other clients are a silent success; a refresh token
    /// ends its whole session; an access token is revoked by its `jti`.
    pub async fn revoke(
        &self,
        api: &ApiDef,
        caller: &Client,
        token: &str,
        hint: Option<&str>,
        now: u64,
    ) -> Result<(), OAuthError> {
        let oauth = oauth_of(api)?;
        let refresh_first = hint != Some("access_token") && !jwt::looks_like_jwt(token);
        for as_refresh in [refresh_first, !refresh_first] {
            if as_refresh {
                let hash = secrets::sha256_hex(token.as_bytes());
                if let Some(record) = self.store.get_refresh(&hash, now).await? {
                    if record.api_id == api.id && record.client_id == caller.client_id {
                        self.store
                            .revoke_session(&record.sid, now + session_lifetime(oauth))
                            .await?;
                        self.notify_revoke(api, caller, &record.sid, record.username.clone());
                    }
                    return Ok(());
                }
            } else if let Ok(claims) = jwt::verify_signature(&self.tokens.keys, token) {
                if claims.aud == api.id && claims.client_id == caller.client_id && claims.exp > now
                {
                    self.store
                        .revoke_jti(&claims.jti, claims.exp + jwt::LEEWAY_SECS)
                        .await?;
                    self.notify_revoke(api, caller, &claims.sid, Some(claims.sub.clone()));
                }
                return Ok(());
            }
        }
        Ok(())
    }

    fn notify_revoke(&self, api: &ApiDef, caller: &Client, sid: &str, username: Option<String>) {
        self.notifier.send(
            api,
            Notification {
                notification_type: "revoke",
                api_id: api.id.clone(),
                client_id: caller.client_id.clone(),
                username,
                session_id: sid.to_string(),
                new_oauth_token: None,
                refresh_token: None,
                old_refresh_token: None,
                auth_code: None,
            },
        );
    }

    /// Validates an access token for `api` completely: signature (cached), header, claims,
    /// revocation.
    pub fn validate_access_token(
        &self,
        token: &str,
        api: &ApiDef,
        config: &RuntimeConfig,
        audiences: &[&str],
        now: u64,
    ) -> Result<Arc<AccessClaims>, TokenError> {
        let claims = self.tokens.verified(token)?;
        let issuer_matches = |aud: &str, iss: &str| {
            if aud == api.id {
                return self.tokens.issuer_is(&api.listen_path, iss);
            }
            config
                .apis
                .iter()
                .find(|a| a.id == aud)
                .is_some_and(|a| self.tokens.issuer_is(&a.listen_path, iss))
        };
        jwt::check_claims(&claims, issuer_matches, |aud| audiences.contains(&aud), now)?;
        if crate::store::access_revoked(self.store.as_ref(), &claims, now) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }

    /// RFC 7662. Anything not valid for this API is exactly `{"active": false}`.
    pub async fn introspect(
        &self,
        api: &ApiDef,
        config: &RuntimeConfig,
        token: &str,
        _hint: Option<&str>,
        now: u64,
    ) -> Result<Value, OAuthError> {
        let inactive = json!({"active": false});
        // A JWT is never a refresh token here, whatever the hint says (the hint is only a hint).
        if jwt::looks_like_jwt(token) {
            if let Ok(claims) =
                self.validate_access_token(token, api, config, &[api.id.as_str()], now)
            {
                // client_credentials tokens carry the client as `sub`; only user tokens have a username.
                let username = (claims.sub != claims.client_id).then(|| claims.sub.clone());
                let mut body = json!({
                    "active": true,
                    "scope": claims.scope,
                    "client_id": claims.client_id,
                    "sub": claims.sub,
                    "aud": claims.aud,
                    "iss": claims.iss,
                    "exp": claims.exp,
                    "iat": claims.iat,
                    "nbf": claims.nbf,
                    "jti": claims.jti,
                    "token_type": "bearer",
                });
                if let (Some(name), Some(obj)) = (username, body.as_object_mut()) {
                    obj.insert("username".into(), Value::String(name));
                }
                return Ok(body);
            }
            return Ok(inactive);
        }
        let hash = secrets::sha256_hex(token.as_bytes());
        let Some(record) = self.store.get_refresh(&hash, now).await? else {
            return Ok(inactive);
        };
        if record.api_id != api.id || self.store.is_revoked(&record.sid, "", now) {
            return Ok(inactive);
        }
        let mut body = json!({
            "active": true,
            "scope": record.scope,
            "client_id": record.client_id,
            "sub": record.username.clone().unwrap_or_else(|| record.client_id.clone()),
            "aud": api.id,
            "iss": self.issuer(api),
            "iat": record.issued_at,
            "token_type": "refresh_token",
        });
        if let Some(obj) = body.as_object_mut() {
            if let Some(exp) = record.expires_at {
                obj.insert("exp".into(), json!(exp));
            }
            if let Some(name) = record.username {
                obj.insert("username".into(), Value::String(name));
            }
        }
        Ok(body)
    }

    /// Axway's tokeninfo: `{audience, user_id, scope, expires_in}`.
    pub fn tokeninfo(
        &self,
        api: &ApiDef,
        config: &RuntimeConfig,
        token: &str,
        now: u64,
    ) -> Result<Value, OAuthError> {
        let claims = self
            .validate_access_token(token, api, config, &[api.id.as_str()], now)
            .map_err(|err| OAuthError::new(OAuthErrorCode::InvalidToken, err.to_string()))?;
        Ok(json!({
            "audience": claims.client_id,
            "user_id": claims.sub,
            "scope": claims.scope,
            "expires_in": claims.exp.saturating_sub(now),
        }))
    }

    /// RFC 8414 metadata for the API's issuer.
    pub fn metadata(&self, api: &ApiDef) -> Value {
        let issuer = self.issuer(api);
        let base = format!("{}{}", self.tokens.issuer(""), api.listen_path);
        let oauth = api.oauth.as_ref();
        let grants: Vec<&str> = oauth
            .map(|o| o.grant_types.iter().map(|g| g.as_str()).collect())
            .unwrap_or_default();
        let scopes: Vec<&str> = oauth
            .map(|o| o.scopes.iter().map(String::as_str).collect())
            .unwrap_or_default();
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{base}oauth/authorize"),
            "token_endpoint": format!("{base}oauth/token"),
            "revocation_endpoint": format!("{base}oauth/revoke"),
            "introspection_endpoint": format!("{base}oauth/introspect"),
            "jwks_uri": format!("{}/.well-known/jwks.json", self.tokens.issuer("")),
            "grant_types_supported": grants,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": scopes,
            "authorization_response_iss_parameter_supported": true,
        })
    }
}

#[derive(Debug)]
pub enum LoginError {
    Invalid,
    /// Too many failures from this address (for this user or any); the window ends in
    /// `retry_after_secs`.
    Throttled {
        retry_after_secs: u64,
    },
    /// Longer than [`MAX_USERNAME_BYTES`]: refused before it is looked up or counted.
    UsernameTooLong,
    /// The verification pool is full (DESIGN §9a): 503, try again shortly.
    Busy,
    Store(StoreError),
}

/// 429 `slow_down` with `Retry-After`: a throttled login or client authentication.
pub fn throttled(description: &str, retry_after_secs: u64) -> OAuthError {
    OAuthError {
        retry_after: Some(retry_after_secs.max(1)),
        ..OAuthError::new(OAuthErrorCode::SlowDown, description)
    }
}

/// 503 with `Retry-After`: every verification permit is taken and the queue is full.
pub fn busy() -> OAuthError {
    OAuthError {
        retry_after: Some(secrets::BUSY_RETRY_AFTER_SECS),
        ..OAuthError::new(
            OAuthErrorCode::TemporarilyUnavailable,
            "too many secret verifications at once; retry shortly",
        )
    }
}

/// DESIGN §4a: 1–128 visible ASCII characters (%x21–7E).
fn valid_client_id(id: &str) -> bool {
    (1..=MAX_CLIENT_ID_CHARS).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The address as the guessing throttles count it. IPv6 counts by its /64: one host usually holds a
/// whole /64, so counting single addresses would give it 2^64 budgets. IPv4-mapped IPv6 counts as the
/// IPv4 address.
pub fn throttle_address(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let net = u128::from(v6) & (u128::MAX << 64);
                format!("{}/64", std::net::Ipv6Addr::from(net))
            }
        },
        Ok(std::net::IpAddr::V4(v4)) => v4.to_string(),
        // Always an address in practice (the peer or a parsed X-Forwarded-For hop); anything else
        // is kept as it is, cut so it cannot make a large key.
        Err(_) => ip.chars().take(64).collect(),
    }
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

pub fn split_scope(scope: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    scope
        .split(' ')
        .filter(|s| !s.is_empty() && seen.insert(*s))
        .map(str::to_string)
        .collect()
}

/// The client's scopes, narrowed by its policy's `scopes` when the policy sets them.
/// The user's scopes as the scope rules see them on an OpenID Provider: the identity scopes are about
/// the user, so every user may grant them (what they release is still limited by
/// `oidc::identity_claims`).
pub fn user_scopes(oauth: &OAuthConfig, user: &User) -> Vec<String> {
    let mut scopes = user.scopes.clone();
    if oauth.openid {
        for s in crate::config::OIDC_SCOPES {
            if !scopes.iter().any(|x| x == s) {
                scopes.push(s.to_string());
            }
        }
    }
    scopes
}

pub fn client_scopes(client: &Client, policy: Option<&Policy>) -> Vec<String> {
    match policy.and_then(|p| p.scopes.as_ref()) {
        Some(allowed) => client
            .scopes
            .iter()
            .filter(|s| allowed.contains(s))
            .cloned()
            .collect(),
        None => client.scopes.clone(),
    }
}

/// The scopes of a refreshed token: those asked for (default: the session's), each of which must have
/// been granted to the session (RFC 6749 §6), narrowed to what the client (under its policy) and the user
/// may have at the time of the refresh. A scope taken away since the session began is dropped silently;
/// the response's `scope` says what is left.
pub fn refreshed_scope(
    session_scopes: &[String],
    requested: Option<&str>,
    client_scopes: &[String],
    user_scopes: Option<&[String]>,
) -> Result<Vec<String>, OAuthError> {
    let wanted = match requested.map(str::trim).filter(|s| !s.is_empty()) {
        None => session_scopes.to_vec(),
        Some(requested) => {
            let requested = split_scope(requested);
            if let Some(wider) = requested.iter().find(|s| !session_scopes.contains(s)) {
                return Err(OAuthError::invalid_scope(format!(
                    "scope '{wider}' was not granted to this session"
                )));
            }
            requested
        }
    };
    Ok(wanted
        .into_iter()
        .filter(|s| client_scopes.contains(s))
        .filter(|s| user_scopes.is_none_or(|user| user.contains(s)))
        .collect())
}

/// requested ∩ client ∩ user (RFC 6749 §3.3). Asking for a scope the client may not have is
/// `invalid_scope`; scopes the user lacks are left out silently (the response's `scope` says what was
/// granted). No request means everything the client (and user) may have.
pub fn resolve_scope(
    requested: Option<&str>,
    client_scopes: &[String],
    user_scopes: Option<&[String]>,
) -> Result<Vec<String>, OAuthError> {
    let requested = requested.map(split_scope).filter(|s| !s.is_empty());
    let wanted = match requested {
        Some(requested) => {
            if let Some(unknown) = requested.iter().find(|s| !client_scopes.contains(s)) {
                return Err(OAuthError::invalid_scope(format!(
                    "scope '{unknown}' is not allowed for this client"
                )));
            }
            requested
        }
        None => client_scopes.to_vec(),
    };
    Ok(match user_scopes {
        Some(user) => wanted.into_iter().filter(|s| user.contains(s)).collect(),
        None => wanted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
