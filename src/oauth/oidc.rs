//! OpenID Connect (docs/design.md §9c; OIDC Core 1.0, Discovery 1.0, RP-Initiated Logout 1.0), free of HTTP:
//! the identity scopes, the OIDC parameters of an authorization request, ID-token claims, the
//! userinfo claims and the discovery document. The HTTP side is in `oidc_handlers.rs`; the login
//! session cookie in `login_session.rs`.
//!
//! Invariants:
//! - An ID token is issued only for a session that began with an authorization code whose scope
//!   held `openid` on an API with `oauth.openid: true` (the code then carries an [`OidcGrant`]), at
//!   the code exchange and at every refresh whose scope still holds `openid`.
//! - `auth_time` and `nonce` come from the sign-in and never change on refresh (OIDC Core §12.2).
//! - Which identity claims leave the server is decided by the scopes alone ([`identity_claims`]), the
//!   same way for the ID token and for userinfo.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use serde_json::{Map, Value, json};

use crate::config::{ApiDef, OAuthConfig, SigningAlgorithm, User};
use crate::store::{OidcGrant, Session};

use super::clients::Client;
use super::server::AuthServer;
use crate::error::oauth::{OAuthError, OAuthErrorCode};
use crate::secrets;
use crate::token::keys::KeySet;

pub use crate::config::OIDC_SCOPES;
/// The scope that makes a request an OpenID Connect request.
pub const OPENID: &str = "openid";
/// Longest `nonce` accepted: it is stored with the code and the session, so it is bounded. 255 is
/// far above what any RP sends (typically 16–43 characters of randomness).
pub const MAX_NONCE_BYTES: usize = 255;
/// Longest `login_hint` used to pre-fill the form (a longer one is ignored, like a hint should be).
pub const MAX_LOGIN_HINT_BYTES: usize = 256;
/// The JWS `typ` of an ID token (OIDC Core does not define one; `JWT` is what RPs expect).
pub const ID_TOKEN_TYP: &str = "JWT";
/// Claims `profile` and `email` release (OIDC Core §5.4), and what discovery lists.
pub const PROFILE_CLAIMS: [&str; 2] = ["name", "preferred_username"];
pub const EMAIL_CLAIMS: [&str; 2] = ["email", "email_verified"];

pub fn has_openid(scope: &str) -> bool {
    scope.split(' ').any(|s| s == OPENID)
}

// --- the authorization request's OIDC parameters (OIDC Core §3.1.2.1)

/// `prompt`, as far as it changes what the authorization endpoint does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    /// `none`: never show a page; no usable login session → `login_required`.
    pub none: bool,
    /// `login` (and `select_account`, since there is one account per browser): the password form
    /// even with a login session.
    pub login: bool,
    /// `consent`: the consent page even for a `skip_consent` client.
    pub consent: bool,
}

/// The OIDC parameters of a valid authorization request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OidcParams {
    pub nonce: Option<String>,
    pub prompt: Prompt,
    /// Seconds since the last password entry beyond which a login session is not used.
    pub max_age: Option<u64>,
    pub login_hint: Option<String>,
}

impl OidcParams {
    /// Whether a login session that began at `auth_time` may stand in for the password form now.
    pub fn session_usable(&self, auth_time: u64, now: u64) -> bool {
        if self.prompt.login {
            return false;
        }
        match self.max_age {
            // `max_age=0` asks for a fresh password entry, like `prompt=login` (OIDC Core §3.1.2.1).
            Some(0) => false,
            Some(max) => now.saturating_sub(auth_time) <= max,
            None => true,
        }
    }
}

/// Checks `nonce`, `prompt`, `max_age` and `login_hint`. Errors are `invalid_request` descriptions,
/// sent to the (already validated) redirect URI.
pub fn check_params(
    nonce: Option<&str>,
    prompt: Option<&str>,
    max_age: Option<&str>,
    login_hint: Option<&str>,
) -> Result<OidcParams, String> {
    if let Some(nonce) = nonce
        && nonce.len() > MAX_NONCE_BYTES
    {
        return Err(format!("nonce is longer than {MAX_NONCE_BYTES} bytes"));
    }
    let mut parsed = Prompt::default();
    if let Some(prompt) = prompt {
        let mut count = 0;
        for value in prompt.split(' ').filter(|v| !v.is_empty()) {
            count += 1;
            match value {
                "none" => parsed.none = true,
                "login" | "select_account" => parsed.login = true,
                "consent" => parsed.consent = true,
                _ => return Err("prompt must be none, login, consent or select_account".into()),
            }
        }
        if parsed.none && count > 1 {
            return Err("prompt=none cannot be combined with other values".into());
        }
    }
    let max_age = match max_age {
        None => None,
        Some(text) => {
            let ok =
                !text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit());
            match text.parse::<u64>() {
                Ok(secs) if ok => Some(secs),
                _ => return Err("max_age must be a number of seconds".into()),
            }
        }
    };
    Ok(OidcParams {
        nonce: nonce.map(str::to_string),
        prompt: parsed,
        max_age,
        login_hint: login_hint
            .filter(|h| h.len() <= MAX_LOGIN_HINT_BYTES)
            .map(str::to_string),
    })
}

/// What a code issued for `scope` carries on an OpenID Provider (`None` when not an OIDC request).
pub fn grant_for(
    oauth: &OAuthConfig,
    scope: &str,
    nonce: Option<&str>,
    auth_time: u64,
    claims: Option<BTreeMap<String, Value>>,
) -> Option<OidcGrant> {
    (oauth.openid && has_openid(scope)).then(|| OidcGrant {
        auth_time,
        nonce: nonce.map(str::to_string),
        claims,
    })
}

// --- claims

/// The identity claims the scopes release (OIDC Core §5.4), from `source` (users.yaml's claims or an
/// external identity provider's). `preferred_username` defaults to the username; `email_verified`
/// to false when an email is released without it.
pub fn identity_claims(
    scope: &str,
    username: &str,
    source: &BTreeMap<String, Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    let scopes: Vec<&str> = scope.split(' ').collect();
    if scopes.contains(&"profile") {
        if let Some(name) = source.get("name") {
            out.insert("name".into(), name.clone());
        }
        let preferred = source
            .get("preferred_username")
            .cloned()
            .unwrap_or_else(|| Value::String(username.to_string()));
        out.insert("preferred_username".into(), preferred);
    }
    if scopes.contains(&"email")
        && let Some(email) = source.get("email")
    {
        out.insert("email".into(), email.clone());
        let verified = source
            .get("email_verified")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        out.insert("email_verified".into(), Value::Bool(verified));
    }
    out
}

/// `at_hash` (OIDC Core §3.1.3.6): the left half of the hash of the access token, base64url. The hash
/// is the one of the signing algorithm: SHA-256 for ES256 and RS256, SHA-512 for EdDSA with Ed25519.
pub fn at_hash(alg: SigningAlgorithm, access_token: &str) -> String {
    let algorithm = match alg {
        SigningAlgorithm::Es256 | SigningAlgorithm::Rs256 => &digest::SHA256,
        SigningAlgorithm::EdDsa => &digest::SHA512,
    };
    let hash = digest::digest(algorithm, access_token.as_bytes());
    let bytes = hash.as_ref();
    secrets::b64url(&bytes[..bytes.len() / 2])
}

/// Everything an ID token says, before signing.
pub struct IdTokenInput<'a> {
    pub issuer: String,
    pub client: &'a Client,
    pub session: &'a Session,
    pub grant: &'a OidcGrant,
    pub user: &'a User,
    pub access_token: &'a str,
    pub alg: SigningAlgorithm,
    pub ttl_secs: u64,
    pub now: u64,
}

pub fn id_token_claims(input: &IdTokenInput<'_>) -> Map<String, Value> {
    let source = input.grant.claims.as_ref().unwrap_or(&input.user.claims);
    let mut claims = identity_claims(&input.session.scope, &input.user.username, source);
    let registered = json!({
        "iss": input.issuer,
        "sub": input.user.username,
        "aud": input.client.client_id,
        "azp": input.client.client_id,
        "exp": input.now + input.ttl_secs,
        "iat": input.now,
        "auth_time": input.grant.auth_time,
        "at_hash": at_hash(input.alg, input.access_token),
    });
    if let Value::Object(registered) = registered {
        claims.extend(registered);
    }
    if let Some(nonce) = &input.grant.nonce {
        claims.insert("nonce".into(), Value::String(nonce.clone()));
    }
    claims
}

/// Most claims, and longest JSON, an external identity provider may hand over per sign-in: they are
/// stored with the code and the session.
pub const MAX_IDP_CLAIMS: usize = 32;
pub const MAX_IDP_CLAIMS_BYTES: usize = 8 * 1024;

/// `authorize-client`'s `claims`: bounded, and never a claim the ID token sets itself.
pub fn check_idp_claims(claims: &BTreeMap<String, Value>) -> Result<(), String> {
    const RESERVED: [&str; 10] = [
        "iss",
        "sub",
        "aud",
        "azp",
        "exp",
        "iat",
        "nbf",
        "auth_time",
        "nonce",
        "at_hash",
    ];
    if claims.len() > MAX_IDP_CLAIMS {
        return Err(format!("claims: at most {MAX_IDP_CLAIMS} claims"));
    }
    if serde_json::to_vec(claims).map_or(usize::MAX, |v| v.len()) > MAX_IDP_CLAIMS_BYTES {
        return Err(format!(
            "claims: at most {MAX_IDP_CLAIMS_BYTES} bytes of JSON"
        ));
    }
    if let Some(name) = claims.keys().find(|k| RESERVED.contains(&k.as_str())) {
        return Err(format!(
            "claims.{name}: set by the server, not by the identity provider"
        ));
    }
    Ok(())
}

/// Longest `id_token_hint` looked at (an ID token of ours is well under 2 KiB).
const MAX_ID_TOKEN_HINT_BYTES: usize = 8 * 1024;

/// Checks an `id_token_hint` (RP-Initiated Logout §2): signed by one of our keys (alg from our key
/// table, never from the token) and issued by `issuer`. An expired hint is still a hint (the spec
/// lets the OP accept it). Returns its `aud` (the client); `None` for anything else.
pub fn verify_id_token_hint(keys: &KeySet, token: &str, issuer: &str) -> Option<String> {
    if token.len() > MAX_ID_TOKEN_HINT_BYTES {
        return None;
    }
    let header = jsonwebtoken::decode_header(token).ok()?;
    let key = header.kid.as_deref().and_then(|kid| keys.get(kid))?;
    if header.alg != key.jwt_algorithm() {
        return None;
    }
    let mut validation = jsonwebtoken::Validation::new(key.jwt_algorithm());
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(token, key.decoding_key(), &validation).ok()?;
    if data.claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return None;
    }
    // An access token is not an ID token, even though we signed it.
    data.claims.get("at_hash")?;
    match data.claims.get("aud") {
        Some(Value::String(aud)) => Some(aud.clone()),
        _ => None,
    }
}

/// `claims_supported` of the discovery document.
pub fn claims_supported() -> Vec<&'static str> {
    let mut claims = vec![
        "iss",
        "sub",
        "aud",
        "azp",
        "exp",
        "iat",
        "auth_time",
        "nonce",
        "at_hash",
    ];
    claims.extend(PROFILE_CLAIMS);
    claims.extend(EMAIL_CLAIMS);
    claims
}

impl AuthServer {
    /// The ID token of a token response, when the session is an OIDC one whose scope still holds
    /// `openid` (a refresh may have narrowed it away).
    pub fn id_token(
        &self,
        api: &ApiDef,
        client: &Client,
        session: &Session,
        user: Option<&User>,
        access_token: &str,
        now: u64,
    ) -> Result<Option<String>, OAuthError> {
        let (Some(oauth), Some(grant), Some(user)) = (&api.oauth, &session.oidc, user) else {
            return Ok(None);
        };
        if !oauth.openid || !has_openid(&session.scope) {
            return Ok(None);
        }
        let key = self.tokens.keys.current();
        let claims = id_token_claims(&IdTokenInput {
            issuer: self.issuer(api),
            client,
            session,
            grant,
            user,
            access_token,
            alg: key.alg,
            ttl_secs: oauth.access_token_ttl.as_secs(),
            now,
        });
        key.sign(ID_TOKEN_TYP, &claims).map(Some).map_err(|err| {
            tracing::error!(error = %err, "signing an ID token failed");
            OAuthError::new(OAuthErrorCode::ServerError, "could not sign the ID token")
        })
    }

    /// OpenID Provider metadata (Discovery 1.0 §3): the RFC 8414 metadata of the API (same issuer and
    /// endpoints) plus what OIDC adds. Served for `oauth-authorization-server` too, so that both
    /// documents agree.
    pub fn discovery(&self, api: &ApiDef) -> Value {
        let mut doc = self.metadata(api);
        let base = format!("{}{}", self.issuer(api), "/");
        let alg = self.tokens.keys.current().alg.as_str();
        if let Some(obj) = doc.as_object_mut() {
            for (name, value) in [
                ("userinfo_endpoint", json!(format!("{base}oauth/userinfo"))),
                ("end_session_endpoint", json!(format!("{base}oauth/logout"))),
                ("id_token_signing_alg_values_supported", json!([alg])),
                ("subject_types_supported", json!(["public"])),
                ("claims_supported", json!(claims_supported())),
                (
                    "prompt_values_supported",
                    json!(["none", "login", "consent", "select_account"]),
                ),
                ("claims_parameter_supported", json!(false)),
                ("request_parameter_supported", json!(false)),
                // Discovery §3: defaults to true when absent.
                ("request_uri_parameter_supported", json!(false)),
            ] {
                obj.insert(name.into(), value);
            }
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_vector() {
        // Expected values computed independently (Python hashlib, left half, base64url).
        let token = "jHkWEdUXMU1BwAsC4vtUsZwnNmSSUq2V";
        assert_eq!(
            at_hash(SigningAlgorithm::Rs256, token),
            "iBvhPgA4Py75NWs1St9b-g"
        );
        assert_eq!(
            at_hash(SigningAlgorithm::Es256, token),
            "iBvhPgA4Py75NWs1St9b-g"
        );
        assert_eq!(
            at_hash(SigningAlgorithm::EdDsa, token),
            "fB9CNBcyJI12oXR_b3KGo0ZG1Wxv03OsHJTwSoIhwnc"
        );
    }

    #[test]
    fn oidc_parameters() {
        let ok = check_params(
            Some("n-0S6_WzA2Mj"),
            Some("login"),
            Some("0"),
            Some("alice"),
        )
        .unwrap();
        assert!(ok.prompt.login);
        assert_eq!(ok.max_age, Some(0));
        assert!(!ok.session_usable(100, 100));
        let long = "n".repeat(MAX_NONCE_BYTES + 1);
        assert!(check_params(Some(&long), None, None, None).is_err());
        assert!(check_params(Some(&"n".repeat(MAX_NONCE_BYTES)), None, None, None).is_ok());
        for bad in ["bogus", "none login", "none consent"] {
            assert!(check_params(None, Some(bad), None, None).is_err(), "{bad}");
        }
        for bad in ["-1", "1.5", "", "12345678901", "abc"] {
            assert!(check_params(None, None, Some(bad), None).is_err(), "{bad}");
        }
        let aged = check_params(None, None, Some("60"), None).unwrap();
        assert!(aged.session_usable(100, 160));
        assert!(!aged.session_usable(100, 161));
        let hint = "h".repeat(MAX_LOGIN_HINT_BYTES + 1);
        assert_eq!(
            check_params(None, None, None, Some(&hint))
                .unwrap()
                .login_hint,
            None
        );
    }

    #[test]
    fn scopes_decide_the_claims() {
        let source: BTreeMap<String, Value> = [
            ("email".to_string(), json!("a@example.com")),
            ("name".to_string(), json!("Alice")),
            ("tier".to_string(), json!("gold")),
        ]
        .into();
        assert_eq!(identity_claims("openid", "alice", &source), Map::new());
        let email = identity_claims("openid email", "alice", &source);
        assert_eq!(email.get("email"), Some(&json!("a@example.com")));
        assert_eq!(email.get("email_verified"), Some(&json!(false)));
        assert_eq!(email.get("name"), None);
        let profile = identity_claims("openid profile", "alice", &source);
        assert_eq!(profile.get("name"), Some(&json!("Alice")));
        assert_eq!(profile.get("preferred_username"), Some(&json!("alice")));
        assert_eq!(profile.get("tier"), None);
    }
}
