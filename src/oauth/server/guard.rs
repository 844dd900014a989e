//! Who is calling: client authentication (secrets under the verification pool, identical attempts
//! shared) and user login, both behind the guessing throttles (docs/design.md §9a).

use super::*;

/// How a caller at the token, revoke or introspect endpoint proved who it is.
pub(super) enum Proof {
    /// Nothing is left to ask the guessing throttle: a public client (no secret, nothing to guess),
    /// or a secret that was reserved, verified and released.
    Settled,
    /// The secret matched the verified-secret cache, so it is right, but the guessing throttle has
    /// not been asked yet. Nothing may be answered before [`AuthServer::admit`] has (a throttled
    /// caller gets 429 whether its guess is right or not), else the cache would answer guesses
    /// without limit.
    Cached(Unadmitted),
}

/// A right guess (from the verified-secret cache) the guessing throttle has not admitted yet: where
/// it counts.
pub(super) struct Unadmitted {
    /// `client:<api id>`.
    scope: String,
    /// The caller's address as the throttle counts it.
    address: String,
}

impl AuthServer {
    /// Authenticates the caller of the token, revoke or introspect endpoint (RFC 6749 §2.3). Public
    /// clients identify themselves with `client_id` alone. A presented secret is a guess: it reserves
    /// an attempt per (client_id, address) and per address before argon2 checks it (docs/design.md §9a),
    /// and a throttled caller gets 429 `slow_down` like a throttled login. A secret that verified
    /// recently (the verified-secret cache) is right: it is admitted or refused by the same counters
    /// in one store call, with nothing to release.
    pub async fn authenticate(
        &self,
        api: &ApiDef,
        auth: &ClientAuth,
        client_ip: &str,
        now: u64,
    ) -> Result<Client, OAuthError> {
        let (client, proof, _) = self
            .identify(api, auth, client_ip, now, async |_: &Client| ())
            .await?;
        if let Proof::Cached(unadmitted) = &proof {
            self.admit(api, &client, unadmitted, None, now).await?;
        }
        Ok(client)
    }

    /// [`AuthServer::authenticate`] up to the guessing throttle's answer for a secret found in the
    /// verified-secret cache ([`Proof::Cached`]), which the caller must get from
    /// [`AuthServer::admit`] before it answers anything: so the token endpoint can ask for the
    /// admission and the count of the token it issues in one store call.
    ///
    /// `prepare` runs on the client named, when it exists and a secret was presented, *before*
    /// anything looks at the secret: work the caller wants done ahead of the admission runs for
    /// right and wrong guesses alike, so a throttled caller's answer takes no longer because its
    /// guess was right. Its result comes back with the client (`None`: not run).
    pub(super) async fn identify<T>(
        &self,
        api: &ApiDef,
        auth: &ClientAuth,
        client_ip: &str,
        now: u64,
        prepare: impl AsyncFnOnce(&Client) -> T,
    ) -> Result<(Client, Proof, Option<T>), OAuthError> {
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
                Some(client) if client.is_public() => Ok((client, Proof::Settled, None)),
                _ => Err(fail()),
            };
        };
        let address = throttle_address(client_ip);
        // Looked up before the throttle is asked, since its stored hash keys the verified-secret
        // cache. Whatever it finds, the next step is one call to the throttle (admit on a cache hit,
        // reserve otherwise), which answers a throttled caller alike.
        let found = self.find_client(api, client_id).await?;
        let prepared = match &found {
            Some(client) => Some(prepare(client).await),
            None => None,
        };
        if let Some(client) = &found
            && let Some(phc) = &client.secret_hash
            && self
                .secret_cache
                .verified_recently(&api.id, client_id, phc, secret)
        {
            let scope = format!("client:{}", api.id);
            let unadmitted = Unadmitted { scope, address };
            return Ok((client.clone(), Proof::Cached(unadmitted), prepared));
        }
        let client = self
            .client_flights
            .run(&[&api.id, client_id, secret, &address], || {
                self.authenticate_secret(api, found, client_id, secret, &address, challenge, now)
            })
            .await?;
        Ok((client, Proof::Settled, prepared))
    }

    /// Asks the guessing throttle about a secret found in the verified-secret cache (so right):
    /// refused as a reservation would be (429), admitted without leaving anything to release, and
    /// `issued` counted in the same store call.
    pub(super) async fn admit(
        &self,
        api: &ApiDef,
        client: &Client,
        unadmitted: &Unadmitted,
        issued: Option<StatelessIssue<'_>>,
        now: u64,
    ) -> Result<(), OAuthError> {
        let Unadmitted { scope, address } = unadmitted;
        let guess = Guess {
            scope,
            address,
            subject: &client.client_id,
        };
        // Never fail open: a storage error refuses the attempt (503), as in `reserve`.
        match self
            .store
            .admit_attempt(&guess, MAX_LOGIN_FAILURES, LOGIN_WINDOW_SECS, now, issued)
            .await?
        {
            Admission::Admitted => Ok(()),
            Admission::Throttled { retry_after_secs } => {
                Err(self.client_throttled(api, &client.client_id, address, retry_after_secs))
            }
        }
    }

    /// The 429 of a throttled client authentication, counted and logged.
    fn client_throttled(
        &self,
        api: &ApiDef,
        client_id: &str,
        address: &str,
        retry_after_secs: u64,
    ) -> OAuthError {
        self.verifier
            .stats
            .throttled_clients
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(target: SECURITY_TARGET, security = "client_auth_throttled", api = %api.id, client = %client_id, address, "client authentication refused by the failure limit");
        throttled(
            "too many failed client authentications; try again later",
            retry_after_secs,
        )
    }

    /// One guess at a client's secret: reserved before it is checked, released when it was right.
    /// `found` is the client looked up by `client_id` (`None`: no such client).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn authenticate_secret(
        &self,
        api: &ApiDef,
        found: Option<Client>,
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
            return Err(self.client_throttled(api, client_id, address, retry_after_secs));
        }
        // From here on the attempt counts as a failure unless released below.
        // An unknown client, or a public one pretending to have a secret, costs one argon2 check like a
        // wrong secret does, so response times do not tell which client ids exist.
        let Some((client, phc)) = found.and_then(|c| c.secret_hash.clone().map(|phc| (c, phc)))
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
        // A concurrent authentication from another address may have verified it meanwhile.
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

    pub(super) async fn reserve(&self, guess: &Guess<'_>, now: u64) -> Result<Attempt, StoreError> {
        // Never fail open: a storage error here refuses the attempt (503).
        self.store
            .reserve_attempt(guess, MAX_LOGIN_FAILURES, LOGIN_WINDOW_SECS, now)
            .await
    }

    /// Gives back a reserved attempt that was not a failure. A storage error is only logged: the
    /// secret was checked (or not at all), and the worst outcome is an attempt counted as a failure
    /// until its window ends.
    pub(super) async fn release(&self, guess: &Guess<'_>, how: Release, now: u64) {
        if let Err(err) = self.store.release_attempt(guess, how, now).await {
            tracing::warn!(error = %err, scope = guess.scope, "could not release a guessing attempt");
        }
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
    /// The verification pool is full (docs/design.md §9a): 503, try again shortly.
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

/// docs/design.md §4a: 1–128 visible ASCII characters (%x21–7E).
pub(super) fn valid_client_id(id: &str) -> bool {
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
        // An IPv4 address that parsed is already in its one spelling (the parser refuses leading
        // zeros and anything but four decimal octets), so it is kept rather than formatted again.
        Ok(std::net::IpAddr::V4(_)) => ip.to_owned(),
        // Always an address in practice (the peer or a parsed X-Forwarded-For hop); anything else
        // is kept as it is, cut so it cannot make a large key.
        Err(_) => ip.chars().take(64).collect(),
    }
}
