//! JWT access tokens (RFC 9068): minting and strict validation.
//!
//! Validation never trusts the token's header for anything but the `kid`: the key and its algorithm come
//! from our own key table (RFC 8725 §3.1), `crit` is refused because we implement no extension, and
//! `jku`/`jwk`/`x5u` are ignored. Claim rules are checked here rather than by the JWT library so that each
//! rule (numeric `exp`/`nbf`, leeway, `iss`, `aud`, `typ`) is explicit and has its own message.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::keys::KeySet;

pub use super::ACCESS_TOKEN_TYP;
/// Accepted clock skew (docs/security.md#token-time-claims: at most 5 s).
pub const LEEWAY_SECS: u64 = 5;

/// The claims of an access token (docs/design.md §4), plus the user's and the client's extra claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub jti: String,
    pub sid: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl AccessClaims {
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token header names an unknown key")]
    UnknownKey,
    #[error("the token's algorithm does not match its key")]
    WrongAlgorithm,
    #[error("the token has an unsupported critical header")]
    Critical,
    #[error("the token is not an access token (typ)")]
    WrongType,
    #[error("the token signature is invalid")]
    BadSignature,
    #[error("the token has no numeric {0} claim")]
    MissingClaim(&'static str),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token is not meant for this API")]
    WrongAudience,
    #[error("the token has been revoked")]
    Revoked,
}

pub fn sign(keys: &KeySet, claims: &AccessClaims) -> Result<String, jsonwebtoken::errors::Error> {
    keys.current().sign(ACCESS_TOKEN_TYP, claims)
}

/// Verifies signature and header; returns the claims as sent (not yet checked against time, issuer or
/// audience — see [`check_claims`]).
pub fn verify_signature(keys: &KeySet, token: &str) -> Result<AccessClaims, TokenError> {
    let header_b64 = token.split('.').next().ok_or(TokenError::Malformed)?;
    let header_json = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| TokenError::Malformed)?;
    let header: Value = serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
    if header.get("crit").is_some() {
        return Err(TokenError::Critical);
    }
    let typ = header.get("typ").and_then(Value::as_str).unwrap_or("");
    // RFC 9068 §4: "at+jwt" or its media-type form, compared case-insensitively.
    if !(typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP)
        || typ.eq_ignore_ascii_case("application/at+jwt"))
    {
        return Err(TokenError::WrongType);
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(TokenError::UnknownKey)?;
    let key = keys.get(kid).ok_or(TokenError::UnknownKey)?;
    if header.get("alg").and_then(Value::as_str) != Some(key.alg.as_str()) {
        return Err(TokenError::WrongAlgorithm);
    }
    let mut validation = jsonwebtoken::Validation::new(key.jwt_algorithm());
    // Claims are checked by `check_claims`; the library only verifies the signature here.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Value>(token, key.decoding_key(), &validation).map_err(
        |e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
            _ => TokenError::Malformed,
        },
    )?;
    let claims = data.claims;
    for name in ["exp", "nbf", "iat"] {
        if !claims.get(name).is_some_and(Value::is_u64) {
            return Err(TokenError::MissingClaim(name));
        }
    }
    serde_json::from_value(claims).map_err(|_| TokenError::Malformed)
}

/// Time, issuer and audience rules. `accepts(aud)` tells whether tokens for the API `aud` are
/// accepted; `issuer_matches(aud, iss)` whether `iss` is the issuer of the API `aud` (false for an
/// unknown API). Both are closures so that the proxy path checks them without building lists or
/// issuer strings for every request.
pub fn check_claims(
    claims: &AccessClaims,
    issuer_matches: impl Fn(&str, &str) -> bool,
    accepts: impl Fn(&str) -> bool,
    now: u64,
) -> Result<(), TokenError> {
    if claims.exp.saturating_add(LEEWAY_SECS) <= now {
        return Err(TokenError::Expired);
    }
    if claims.nbf > now.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::NotYetValid);
    }
    if !accepts(&claims.aud) {
        return Err(TokenError::WrongAudience);
    }
    // The issuer must be the one of the API named in `aud`: a token minted for A carries A's issuer.
    if issuer_matches(&claims.aud, &claims.iss) {
        Ok(())
    } else {
        Err(TokenError::WrongIssuer)
    }
}

/// Whether a presented string looks like a JWT (three dot-separated parts) rather than an opaque token.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}
