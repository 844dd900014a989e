//! What the authorization server answers about tokens it issued: revocation (RFC 7009), introspection
//! (RFC 7662), tokeninfo, and its RFC 8414 metadata.

use super::*;

impl AuthServer {
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

    pub(super) fn notify_revoke(
        &self,
        api: &ApiDef,
        caller: &Client,
        sid: &str,
        username: Option<String>,
    ) {
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
