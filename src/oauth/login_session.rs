//! The builtin login page's session (docs/design.md §9c): after a password sign-in on an OpenID Provider, the
//! browser gets a cookie holding 256 random bits; the store keeps the session (user, `auth_time`,
//! expiry) under the SHA-256 of that id, never the id itself. A later authorization request of the
//! same browser may then skip the password form ([`next_step`] decides).
//!
//! The cookie is `HttpOnly` (no script reads it), `SameSite=Lax` (a cross-site POST does not carry
//! it, so a forged consent form finds no session), `Secure` when the public URL is https, and scoped
//! to the API's listen path. A new sign-in replaces the browser's previous session (no fixation).

use http::HeaderMap;
use http::header::{self, HeaderValue};

use crate::config::{ApiDef, OAuthConfig, User};
use crate::store::{LoginSession, Store, StoreError};

use super::oidc::OidcParams;
use crate::secrets;

/// Bytes of randomness in a login-session id.
const ID_BYTES: usize = 32;
/// The id's length in the cookie (base64url of [`ID_BYTES`]); anything else is not ours.
const ID_CHARS: usize = 43;
/// Live login sessions per user; one more ends the oldest (a bound on what sign-ins can store).
pub const MAX_LOGIN_SESSIONS_PER_USER: u32 = 32;
/// Cookies looked at per request: a bound on the work a request with thousands of cookies causes.
const MAX_COOKIE_PAIRS: usize = 64;

/// Whether the API keeps login sessions: an OpenID Provider with the builtin login and a non-zero
/// `oauth.login_session`.
pub fn enabled(oauth: &OAuthConfig) -> bool {
    oauth.openid
        && matches!(oauth.login, crate::config::LoginMode::Builtin)
        && !oauth.login_session.is_zero()
}

/// The cookie's name: per API, since nested listen paths would otherwise send two of the same name.
/// API ids are `[A-Za-z0-9_-]`, all valid in a cookie name.
pub fn cookie_name(api: &ApiDef) -> String {
    format!("tg_login_{}", api.id)
}

/// The login-session id the browser sent for this API, if it has the shape of one.
pub fn cookie_id(api: &ApiDef, headers: &HeaderMap) -> Option<String> {
    let name = cookie_name(api);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .take(MAX_COOKIE_PAIRS)
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim())
        .filter(|value| {
            value.len() == ID_CHARS
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
}

pub fn id_hash(id: &str) -> String {
    secrets::sha256_hex(id.as_bytes())
}

/// The browser's live login session on this API and its user (still in users.yaml and enabled).
pub async fn current<'u>(
    store: &dyn Store,
    api: &ApiDef,
    headers: &HeaderMap,
    users: &'u [User],
    now: u64,
) -> Result<Option<(LoginSession, &'u User)>, StoreError> {
    let Some(id) = cookie_id(api, headers) else {
        return Ok(None);
    };
    let Some(session) = store.get_login_session(&id_hash(&id), now).await? else {
        return Ok(None);
    };
    if session.api_id != api.id {
        return Ok(None);
    }
    Ok(users
        .iter()
        .find(|u| u.username == session.username && !u.disabled)
        .map(|user| (session, user)))
}

/// Starts a login session for `username` (ending the browser's previous one) and returns the
/// `Set-Cookie` value.
pub async fn begin(
    store: &dyn Store,
    api: &ApiDef,
    oauth: &OAuthConfig,
    headers: &HeaderMap,
    username: &str,
    secure: bool,
    now: u64,
) -> Result<HeaderValue, StoreError> {
    if let Some(old) = cookie_id(api, headers) {
        store.end_login_session(&id_hash(&old), now).await?;
    }
    let id = secrets::random_token(ID_BYTES);
    let ttl = oauth.login_session.as_secs().max(1);
    let session = LoginSession {
        api_id: api.id.clone(),
        username: username.to_string(),
        auth_time: now,
        expires_at: now + ttl,
    };
    store
        .put_login_session(&id_hash(&id), &session, MAX_LOGIN_SESSIONS_PER_USER)
        .await?;
    Ok(set_cookie(api, &id, ttl, secure))
}

/// `Set-Cookie` for a login-session id (`max_age` 0 removes it).
pub fn set_cookie(api: &ApiDef, id: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value = format!(
        "{}={id}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
        cookie_name(api),
        api.listen_path
    );
    // Every part is ASCII we made (API id, listen path checked by the config, base64url).
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("tg_login=; Max-Age=0"))
}

/// `Set-Cookie` that removes the browser's login-session cookie.
pub fn clear_cookie(api: &ApiDef, secure: bool) -> HeaderValue {
    set_cookie(api, "", 0, secure)
}

/// What the authorization endpoint does for a valid request of a builtin-login OpenID Provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The login form (username and password).
    PasswordForm,
    /// The signed-in user only confirms (no password).
    ConsentForm,
    /// A code at once: signed in, and the client needs no consent.
    IssueCode,
    /// `prompt=none` and nobody usable is signed in.
    LoginRequired,
    /// `prompt=none` and the client needs consent.
    ConsentRequired,
}

/// OIDC Core §3.1.2.3: `prompt` and `max_age` against the login session that began at
/// `session_auth_time` (if any).
pub fn next_step(
    oidc: &OidcParams,
    session_auth_time: Option<u64>,
    skip_consent: bool,
    now: u64,
) -> Step {
    let usable = session_auth_time.is_some_and(|t| oidc.session_usable(t, now));
    match (usable, oidc.prompt.none) {
        (false, true) => Step::LoginRequired,
        (false, false) => Step::PasswordForm,
        (true, _) if skip_consent && !oidc.prompt.consent => Step::IssueCode,
        (true, true) => Step::ConsentRequired,
        (true, false) => Step::ConsentForm,
    }
}

/// The consent form's proof that it was served to the browser holding this login session: an HMAC
/// over the session's id hash and the form's CSRF token. A consent POST without a password must
/// carry it, so a form obtained elsewhere cannot be replayed through a signed-in browser.
pub fn consent_proof(form_key: &[u8], session_hash: &str, csrf: &str) -> String {
    let mut message = b"tollgate consent v1\0".to_vec();
    message.extend_from_slice(session_hash.as_bytes());
    message.push(0);
    message.extend_from_slice(csrf.as_bytes());
    secrets::hmac_sha256_hex(form_key, &message)
}

pub fn verify_consent_proof(form_key: &[u8], session_hash: &str, csrf: &str, proof: &str) -> bool {
    let expected = consent_proof(form_key, session_hash, csrf);
    secrets::constant_time_eq(expected.as_bytes(), proof.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::oidc::check_params;

    fn params(prompt: Option<&str>, max_age: Option<&str>) -> OidcParams {
        check_params(None, prompt, max_age, None).unwrap()
    }

    #[test]
    fn steps() {
        use Step::*;
        let now = 1000;
        assert_eq!(
            next_step(&params(None, None), None, false, now),
            PasswordForm
        );
        assert_eq!(
            next_step(&params(None, None), Some(900), false, now),
            ConsentForm
        );
        assert_eq!(
            next_step(&params(None, None), Some(900), true, now),
            IssueCode
        );
        assert_eq!(
            next_step(&params(Some("consent"), None), Some(900), true, now),
            ConsentForm
        );
        assert_eq!(
            next_step(&params(Some("login"), None), Some(900), true, now),
            PasswordForm
        );
        assert_eq!(
            next_step(&params(None, Some("0")), Some(now), true, now),
            PasswordForm
        );
        assert_eq!(
            next_step(&params(None, Some("50")), Some(900), true, now),
            PasswordForm
        );
        assert_eq!(
            next_step(&params(None, Some("100")), Some(900), true, now),
            IssueCode
        );
        assert_eq!(
            next_step(&params(Some("none"), None), None, true, now),
            LoginRequired
        );
        assert_eq!(
            next_step(&params(Some("none"), Some("0")), Some(now), true, now),
            LoginRequired
        );
        assert_eq!(
            next_step(&params(Some("none"), None), Some(900), false, now),
            ConsentRequired
        );
        assert_eq!(
            next_step(&params(Some("none"), None), Some(900), true, now),
            IssueCode
        );
    }

    #[test]
    fn consent_proof_binds_session_and_form() {
        let key = b"k";
        let proof = consent_proof(key, "h1", "csrf1");
        assert!(verify_consent_proof(key, "h1", "csrf1", &proof));
        assert!(!verify_consent_proof(key, "h2", "csrf1", &proof));
        assert!(!verify_consent_proof(key, "h1", "csrf2", &proof));
        assert!(!verify_consent_proof(key, "h1", "csrf1", "nope"));
    }
}
