//! The authorization endpoint (RFC 6749 §3.1, §4.1; PKCE RFC 7636; `iss` RFC 9207; RFC 9700 §2.1, §4.1)
//! and the admin API's `authorize-client` for an external identity provider.
//!
//! The OAuth rules are in [`validate_authorize_request`], [`redirect_uri_matches`] and the CSRF
//! functions, free of HTTP; the handlers below only parse, call and shape the answer:
//!
//! - Until the client and its redirect URI are known to be genuine, nothing is ever sent to the
//!   redirect URI: an unknown/missing `client_id` or an unregistered `redirect_uri` is a 400 HTML page.
//!   After that, every problem goes back to the client as `error`, `error_description`, `state` (when
//!   sent, exactly as sent) and `iss`.
//! - `login: builtin`: GET answers the login and consent page; its form posts back here with the
//!   request's parameters in hidden fields and a CSRF token bound to them (HMAC, 10 minutes). A wrong
//!   password shows the page again (status 200: a 401 would need a `WWW-Authenticate` challenge that a
//!   form login does not have); success is a **303** (never 307, which would re-post the password to
//!   the client) to `redirect_uri?code=..&state=..&iss=..`.
//! - `login: {redirect: URL}`: GET answers 307 to the identity provider with the original query; the
//!   provider signs the user in and asks for a code through [`authorize_client`].

use std::collections::HashSet;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::config::{ApiDef, GrantType, LoginMode, OAuthConfig, PkceMode, Policy, User};
use crate::error::{GatewayError, json_response};
use crate::http_util::{Body, empty};
use crate::policy::Resolved;
use crate::store::{AuthCode, StoreError};

use super::Ctx;
use super::clients::Client;
use super::login_page::{self, LoginPage};
use super::oidc::{self, OidcParams};
use super::pkce;
use super::server::{LoginError, MAX_USERNAME_BYTES, client_scopes, resolve_scope};
use crate::clock::now;
use crate::error::oauth::{OAuthError, OAuthErrorCode};
use crate::http_util::{FormError, read_form};
use crate::secrets;

/// How long a login form stays valid.
pub const CSRF_TTL_SECS: u64 = 10 * 60;
/// Bytes of randomness in a code (docs/design.md §4: at least 256 bits).
const CODE_BYTES: usize = 32;
/// Bytes of randomness in a session id.
const SID_BYTES: usize = 16;

/// The authorization request's parameters (RFC 6749 §4.1.1, RFC 7636 §4.3). A parameter sent
/// without a value counts as absent (RFC 6749 §3.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizeParams {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    /// OpenID Connect (OIDC Core §3.1.2.1); ignored unless the API is an OpenID Provider.
    pub nonce: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
    pub login_hint: Option<String>,
    /// Names of parameters sent more than once (RFC 6749 §3.1 forbids it); the first value is kept.
    pub repeated: Vec<String>,
}

impl AuthorizeParams {
    /// The names, in the order the page's hidden fields and the CSRF token carry them.
    const NAMES: [&'static str; 11] = [
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
        "nonce",
        "prompt",
        "max_age",
        "login_hint",
    ];

    /// From decoded name/value pairs (a query string, a form). Unknown parameters are ignored
    /// (RFC 6749 §3.1), but they too may not repeat.
    pub fn from_pairs<I, K, V>(pairs: I) -> AuthorizeParams
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut params = AuthorizeParams::default();
        let mut seen = HashSet::new();
        for (name, value) in pairs {
            let (name, value) = (name.as_ref(), value.as_ref());
            if !seen.insert(name.to_string()) {
                if !params.repeated.iter().any(|n| n == name) {
                    params.repeated.push(name.to_string());
                }
                continue;
            }
            if value.is_empty() {
                continue;
            }
            if let Some(slot) = params.slot(name) {
                *slot = Some(value.to_string());
            }
        }
        params
    }

    /// From a query string (`a=1&b=2`).
    pub fn from_query(query: &str) -> AuthorizeParams {
        AuthorizeParams::from_pairs(form_urlencoded::parse(query.as_bytes()))
    }

    fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "client_id" => &mut self.client_id,
            "redirect_uri" => &mut self.redirect_uri,
            "response_type" => &mut self.response_type,
            "scope" => &mut self.scope,
            "state" => &mut self.state,
            "code_challenge" => &mut self.code_challenge,
            "code_challenge_method" => &mut self.code_challenge_method,
            "nonce" => &mut self.nonce,
            "prompt" => &mut self.prompt,
            "max_age" => &mut self.max_age,
            "login_hint" => &mut self.login_hint,
            _ => return None,
        })
    }

    fn values(&self) -> [Option<&str>; 11] {
        [
            self.client_id.as_deref(),
            self.redirect_uri.as_deref(),
            self.response_type.as_deref(),
            self.scope.as_deref(),
            self.state.as_deref(),
            self.code_challenge.as_deref(),
            self.code_challenge_method.as_deref(),
            self.nonce.as_deref(),
            self.prompt.as_deref(),
            self.max_age.as_deref(),
            self.login_hint.as_deref(),
        ]
    }

    /// The parameters that were sent, as name/value pairs (the page's hidden fields).
    pub fn sent(&self) -> Vec<(&'static str, &str)> {
        Self::NAMES
            .iter()
            .zip(self.values())
            .filter_map(|(name, value)| value.map(|v| (*name, v)))
            .collect()
    }

    fn is_repeated(&self, name: &str) -> bool {
        self.repeated.iter().any(|n| n == name)
    }

    /// The `client_id` worth looking up: present, not repeated, syntactically a client id (docs/design.md §4a).
    pub fn lookup_client_id(&self) -> Option<&str> {
        let id = self.client_id.as_deref()?;
        let well_formed =
            (1..=128).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7E).contains(&b));
        (well_formed && !self.is_repeated("client_id")).then_some(id)
    }

    /// `state` to send back: exactly as sent, never invented, and not when it was sent twice (there is
    /// no telling which one the client would check).
    fn echo_state(&self) -> Option<String> {
        if self.is_repeated("state") {
            None
        } else {
            self.state.clone()
        }
    }
}

/// A request that passed every check: everything needed to show the page or to issue a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidAuthorize {
    pub client_id: String,
    pub redirect_uri: String,
    /// The scope as requested (`None`: the client's default, i.e. all its scopes).
    pub scope: Option<String>,
    /// The scopes the client may have (its own, narrowed by its policy).
    pub client_scopes: Vec<String>,
    /// What the client would get: the requested scopes, or all of the client's (before the user's own
    /// scopes narrow them at login).
    pub offered_scopes: Vec<String>,
    pub state: Option<String>,
    /// A valid S256 challenge.
    pub code_challenge: Option<String>,
    /// `nonce`, `prompt`, `max_age`, `login_hint` (defaults unless the API is an OpenID Provider).
    pub oidc: OidcParams,
    /// The client's `skip_consent`.
    pub skip_consent: bool,
}

/// Why an authorization request is refused, and how the answer must travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or the redirect URI cannot be trusted: show the user a 400 page, never redirect.
    Page(String),
    /// Send the error back to the client at its (validated) redirect URI (RFC 6749 §4.1.2.1).
    Redirect {
        redirect_uri: String,
        code: OAuthErrorCode,
        description: String,
        state: Option<String>,
    },
}

impl AuthorizeError {
    /// As an OAuth error (for the admin API's JSON answer).
    fn into_oauth(self) -> OAuthError {
        match self {
            AuthorizeError::Page(description) => OAuthError::invalid_request(description),
            AuthorizeError::Redirect {
                code, description, ..
            } => OAuthError::new(code, description),
        }
    }
}

/// Validates an authorization request against its client (`None`: no such client) and the API's
/// OAuth settings. The client and redirect URI come first: until both check out, every failure is a
/// [`AuthorizeError::Page`].
pub fn validate_authorize_request(
    params: &AuthorizeParams,
    client: Option<&Client>,
    oauth: &OAuthConfig,
    policy: Option<&Policy>,
) -> Result<ValidAuthorize, AuthorizeError> {
    let page = |message: &str| AuthorizeError::Page(message.to_string());
    if params.is_repeated("client_id") {
        return Err(page("The client_id parameter is repeated."));
    }
    let Some(client_id) = params.client_id.as_deref() else {
        return Err(page(
            "The request does not name the application (client_id is missing).",
        ));
    };
    let client = match client {
        Some(client) if client.client_id == client_id => client,
        _ => return Err(page("The application (client_id) is not known here.")),
    };
    if params.is_repeated("redirect_uri") {
        return Err(page("The redirect_uri parameter is repeated."));
    }
    let Some(redirect_uri) = params.redirect_uri.as_deref() else {
        return Err(page("The request has no redirect_uri."));
    };
    if !client
        .redirect_uris
        .iter()
        .any(|registered| redirect_uri_matches(registered, redirect_uri))
    {
        return Err(page(
            "The redirect_uri is not registered for this application.",
        ));
    }

    // From here on the redirect URI is the client's own: errors go back to it.
    let fail = |code: OAuthErrorCode, description: &str| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.to_string(),
        code,
        description: description.to_string(),
        state: params.echo_state(),
    };
    use OAuthErrorCode::{
        InvalidRequest, InvalidScope, UnauthorizedClient, UnsupportedResponseType,
    };
    if let Some(name) = params.repeated.first() {
        // Only known names go into the description (it must stay within RFC 6749's character set).
        let description = match AuthorizeParams::NAMES.iter().find(|n| *n == name) {
            Some(known) => format!("the {known} parameter is repeated"),
            None => "a parameter is repeated".to_string(),
        };
        return Err(fail(InvalidRequest, &description));
    }
    match params.response_type.as_deref() {
        None => {
            return Err(fail(
                InvalidRequest,
                "the response_type parameter is missing",
            ));
        }
        Some("code") => {}
        Some(_) => {
            return Err(fail(
                UnsupportedResponseType,
                "only response_type=code is supported",
            ));
        }
    }
    if !oauth.grant_types.contains(&GrantType::AuthorizationCode) {
        return Err(fail(
            UnauthorizedClient,
            "the authorization code grant is not enabled for this API",
        ));
    }
    if !client.allows(GrantType::AuthorizationCode) {
        return Err(fail(
            UnauthorizedClient,
            "the client may not use the authorization code grant",
        ));
    }
    let allowed = client_scopes(client, policy);
    let offered = resolve_scope(params.scope.as_deref(), &allowed, None).map_err(|_| {
        fail(
            InvalidScope,
            "the requested scope is unknown or not allowed for this client",
        )
    })?;
    let challenge = match (
        params.code_challenge.as_deref(),
        params.code_challenge_method.as_deref(),
    ) {
        (_, Some("plain")) => {
            return Err(fail(
                InvalidRequest,
                "code_challenge_method plain is not accepted; use S256",
            ));
        }
        (_, Some(method)) if method != "S256" => {
            return Err(fail(
                InvalidRequest,
                "unsupported code_challenge_method; use S256",
            ));
        }
        (Some(challenge), Some(_)) => {
            if !pkce::valid_challenge(challenge) {
                return Err(fail(
                    InvalidRequest,
                    "code_challenge must be the base64url SHA-256 of the code_verifier (43 characters)",
                ));
            }
            Some(challenge.to_string())
        }
        // RFC 7636 §4.3: no method means plain, which is never accepted.
        (Some(_), None) => {
            return Err(fail(
                InvalidRequest,
                "code_challenge_method is missing (plain is not accepted); use S256",
            ));
        }
        (None, Some(_)) => {
            return Err(fail(
                InvalidRequest,
                "code_challenge_method was sent without a code_challenge",
            ));
        }
        (None, None) => None,
    };
    if challenge.is_none() {
        if client.is_public() {
            return Err(fail(
                InvalidRequest,
                "public clients must send a code_challenge (PKCE with S256)",
            ));
        }
        if oauth.pkce == PkceMode::Required {
            return Err(fail(
                InvalidRequest,
                "a code_challenge (PKCE with S256) is required",
            ));
        }
    }
    let oidc = if oauth.openid {
        oidc::check_params(
            params.nonce.as_deref(),
            params.prompt.as_deref(),
            params.max_age.as_deref(),
            params.login_hint.as_deref(),
        )
        .map_err(|description| fail(InvalidRequest, &description))?
    } else {
        OidcParams::default()
    };
    Ok(ValidAuthorize {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_string(),
        scope: params.scope.clone(),
        client_scopes: allowed,
        offered_scopes: offered,
        state: params.state.clone(),
        code_challenge: challenge,
        oidc,
        skip_consent: client.skip_consent,
    })
}

/// Exact string comparison (RFC 9700 §4.1.3), so case, a trailing `/`, an extra query, dot
/// segments, percent-encoding and userinfo tricks never match. The one exception (RFC 8252 §7.3):
/// for an `http` redirect to the loopback IP literals `127.0.0.1` and `[::1]`, the port may differ,
/// since native apps listen on an ephemeral port; everything else must still be identical.
pub fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    match (loopback_parts(registered), loopback_parts(requested)) {
        (Some((host_a, rest_a)), Some((host_b, rest_b))) => host_a == host_b && rest_a == rest_b,
        _ => false,
    }
}

/// For `http://127.0.0.1[:port]<rest>` or `http://[::1][:port]<rest>`: the host and the rest (path,
/// query). Anything else (another host, userinfo, a malformed port) is `None`.
fn loopback_parts(uri: &str) -> Option<(&'static str, &str)> {
    let after = uri.strip_prefix("http://")?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let (host, port) = if let Some(port) = authority.strip_prefix("[::1]") {
        ("[::1]", port)
    } else if let Some(port) = authority.strip_prefix("127.0.0.1") {
        ("127.0.0.1", port)
    } else {
        return None;
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|digits| {
            (1..=5).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.parse::<u16>().is_ok()
        });
    port_ok.then_some((host, rest))
}

/// `base` with `pairs` added to its query, form-urlencoded.
pub fn redirect_url(base: &str, pairs: &[(&str, &str)]) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    append_query(base, &query)
}

/// `base?query`, or `base&query` when `base` has a query of its own.
fn append_query(base: &str, query: &str) -> String {
    let separator = match base.find('?') {
        None => "?",
        Some(_) if base.ends_with('?') || base.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{base}{separator}{query}")
}

/// The error redirect of RFC 6749 §4.1.2.1 with RFC 9207's `iss`.
pub fn error_redirect_url(
    redirect_uri: &str,
    code: OAuthErrorCode,
    description: &str,
    state: Option<&str>,
    issuer: &str,
) -> String {
    let mut pairs = vec![("error", code.as_str()), ("error_description", description)];
    if let Some(state) = state {
        pairs.push(("state", state));
    }
    pairs.push(("iss", issuer));
    redirect_url(redirect_uri, &pairs)
}

/// The success redirect of RFC 6749 §4.1.2 with RFC 9207's `iss`.
pub fn code_redirect_url(
    redirect_uri: &str,
    code: &str,
    state: Option<&str>,
    issuer: &str,
) -> String {
    let mut pairs = vec![("code", code)];
    if let Some(state) = state {
        pairs.push(("state", state));
    }
    pairs.push(("iss", issuer));
    redirect_url(redirect_uri, &pairs)
}

// --- CSRF tokens of the login form

/// The bytes the token's HMAC covers: the API, every request parameter (length-prefixed, with absent
/// distinct from empty) and the issue time.
fn csrf_message(api_id: &str, params: &AuthorizeParams, issued_at: u64) -> Vec<u8> {
    let mut message = b"tollgate authorize csrf v1\0".to_vec();
    let mut push = |value: Option<&str>| match value {
        None => message.push(0),
        Some(value) => {
            message.push(1);
            message.extend_from_slice(&(value.len() as u64).to_be_bytes());
            message.extend_from_slice(value.as_bytes());
        }
    };
    push(Some(api_id));
    for value in params.values() {
        push(value);
    }
    message.extend_from_slice(&issued_at.to_be_bytes());
    message
}

/// `<issued_at>.<hex HMAC-SHA256>`, bound to the API and every parameter of the request.
/// `key` is the signing key's form key, so that a form served by one node is accepted by every node.
pub fn csrf_token(key: &[u8], api_id: &str, params: &AuthorizeParams, issued_at: u64) -> String {
    let mac = secrets::hmac_sha256_hex(key, &csrf_message(api_id, params, issued_at));
    format!("{issued_at}.{mac}")
}

/// True when `token` was made by [`csrf_token`] for these parameters within [`CSRF_TTL_SECS`].
pub fn verify_csrf(
    key: &[u8],
    token: Option<&str>,
    api_id: &str,
    params: &AuthorizeParams,
    now: u64,
) -> bool {
    let Some((issued, mac)) = token.and_then(|t| t.split_once('.')) else {
        return false;
    };
    if issued.is_empty() || !issued.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(issued_at) = issued.parse::<u64>() else {
        return false;
    };
    // A little slack for clock steps; nothing from the future beyond that.
    if issued_at > now + 5 || now.saturating_sub(issued_at) > CSRF_TTL_SECS {
        return false;
    }
    let expected = secrets::hmac_sha256_hex(key, &csrf_message(api_id, params, issued_at));
    secrets::constant_time_eq(expected.as_bytes(), mac.as_bytes())
}

// --- issuing a code

/// Creates and stores a code for `user`: granted scope = requested ∩ client ∩ user. On an OpenID
/// Provider the code also carries `auth_time`, the nonce and an identity provider's `claims`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn issue_code(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    oauth: &OAuthConfig,
    valid: &ValidAuthorize,
    user: &User,
    auth_time: u64,
    claims: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    now: u64,
) -> Result<String, StoreError> {
    // Validation already refused scopes outside the client's, so this cannot fail; fall back to
    // nothing rather than to more.
    let granted = resolve_scope(
        valid.scope.as_deref(),
        &valid.client_scopes,
        Some(&super::server::user_scopes(oauth, user)),
    )
    .unwrap_or_default();
    let granted_text = granted.join(" ");
    let oidc_grant = oidc::grant_for(
        oauth,
        &granted_text,
        valid.oidc.nonce.as_deref(),
        auth_time,
        claims,
    );
    let code = secrets::random_token(CODE_BYTES);
    let record = AuthCode {
        api_id: api.id.clone(),
        client_id: valid.client_id.clone(),
        redirect_uri: valid.redirect_uri.clone(),
        scope: granted_text,
        username: user.username.clone(),
        code_challenge: valid.code_challenge.clone(),
        sid: secrets::random_token(SID_BYTES),
        expires_at: now + oauth.code_ttl.as_secs(),
        oidc: oidc_grant.map(Box::new),
    };
    ctx.auth
        .store
        .put_code(&secrets::sha256_hex(code.as_bytes()), &record)
        .await?;
    tracing::info!(api = %api.id, client = %valid.client_id, user = %user.username, "authorization code issued");
    Ok(code)
}

// --- HTTP

pub async fn handle(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let Some(oauth) = api.oauth.as_ref() else {
        return Err(GatewayError::NotFound);
    };
    match (req.method(), &oauth.login) {
        (&Method::GET, _) => authorize_get(ctx, api, oauth, &req).await,
        (&Method::POST, LoginMode::Builtin) => authorize_post(ctx, api, oauth, req).await,
        _ => Err(GatewayError::MethodNotAllowed),
    }
}

async fn authorize_get(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    oauth: &OAuthConfig,
    req: &Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let query = req.uri().query().unwrap_or("");
    let params = AuthorizeParams::from_query(query);
    let client = find_client(ctx, api, &params).await?;
    let policy = client_policy(ctx, client.as_ref()).await?;
    let valid = match validate_authorize_request(&params, client.as_ref(), oauth, policy.as_deref())
    {
        Ok(valid) => valid,
        Err(err) => return refuse(ctx, api, err, StatusCode::FOUND),
    };
    match &oauth.login {
        LoginMode::Redirect(idp) => {
            // The identity provider gets the request exactly as the client sent it.
            let location = if query.is_empty() {
                idp.clone()
            } else {
                append_query(idp, query)
            };
            redirect(StatusCode::TEMPORARY_REDIRECT, &location)
        }
        // Login sessions, `prompt` and `max_age` decide between the form and a code (oidc_handlers).
        LoginMode::Builtin => {
            super::oidc_handlers::builtin_get(ctx, api, oauth, req.headers(), &params, &valid).await
        }
    }
}

async fn authorize_post(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    oauth: &OAuthConfig,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let ip = ctx.client_ip.to_string();
    // The form is the whole request: the query string of a POST is not read.
    let (headers, mut form) = read_form(req, ctx.config.limits.body_read_timeout)
        .await
        .map_err(|err| match err {
            FormError::Body(body) => GatewayError::from(body),
            other => page_error(StatusCode::BAD_REQUEST, other.description(), None),
        })?;
    let csrf = form.remove("csrf_token");
    let consent_proof = form.remove("consent_proof");
    let action = form.remove("action");
    let username = form.remove("username").filter(|u| !u.is_empty());
    let password = form.remove("password").filter(|p| !p.is_empty());
    let params = AuthorizeParams::from_pairs(&form);
    let now = now();
    // OIDC Core §3.1.2.1: an OpenID Provider takes the authorization request by POST too. A POST with
    // none of the page's own fields is such a request, answered as its GET would be.
    if oauth.openid
        && (&csrf, &action, &username, &password, &consent_proof)
            == (&None, &None, &None, &None, &None)
    {
        return authorize_request_by_post(ctx, api, oauth, &headers, &params).await;
    }
    if !verify_csrf(
        ctx.auth.tokens.keys.form_key(),
        csrf.as_deref(),
        &api.id,
        &params,
        now,
    ) {
        return Err(page_error(
            StatusCode::BAD_REQUEST,
            "This sign-in form has expired or did not come from this server. Go back to the application and start again.",
            None,
        ));
    }
    let client = find_client(ctx, api, &params).await?;
    let policy = client_policy(ctx, client.as_ref()).await?;
    let valid = match validate_authorize_request(&params, client.as_ref(), oauth, policy.as_deref())
    {
        Ok(valid) => valid,
        Err(err) => return refuse(ctx, api, err, StatusCode::SEE_OTHER),
    };
    match action.as_deref() {
        Some("allow") => {}
        Some("deny") => {
            let location = error_redirect_url(
                &valid.redirect_uri,
                OAuthErrorCode::AccessDenied,
                "the user denied the request",
                valid.state.as_deref(),
                &ctx.auth.issuer(api),
            );
            return redirect(StatusCode::SEE_OTHER, &location);
        }
        _ => {
            return Err(page_error(
                StatusCode::BAD_REQUEST,
                "The form was sent without choosing to allow or deny.",
                None,
            ));
        }
    }
    // The consent form of a signed-in browser carries no password, only its proof (oidc_handlers).
    if let (None, None, Some(proof)) = (&username, &password, &consent_proof)
        && let Some(response) = super::oidc_handlers::consent_post(
            ctx,
            api,
            oauth,
            &headers,
            &valid,
            csrf.as_deref().unwrap_or(""),
            proof,
            now,
        )
        .await?
    {
        return Ok(response);
    }
    let (Some(username), Some(password)) = (username.as_deref(), password.as_deref()) else {
        return Ok(login_page(
            ctx.auth.tokens.keys.form_key(),
            api,
            &params,
            &valid,
            username.as_deref(),
            Some("Enter your username and password."),
            StatusCode::OK,
        ));
    };
    let user = match ctx
        .auth
        .login(api, &ctx.config.users, username, password, &ip, now)
        .await
    {
        Ok(user) => user,
        Err(LoginError::Invalid) => {
            tracing::info!(api = %api.id, client = %valid.client_id, "failed login on the authorization page");
            return Ok(login_page(
                ctx.auth.tokens.keys.form_key(),
                api,
                &params,
                &valid,
                Some(username),
                Some("Incorrect username or password."),
                StatusCode::OK,
            ));
        }
        Err(LoginError::Throttled { retry_after_secs }) => {
            return Err(page_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-in attempts. Wait a while and try again.",
                Some(retry_after_secs),
            ));
        }
        Err(LoginError::UsernameTooLong) => {
            return Ok(login_page(
                ctx.auth.tokens.keys.form_key(),
                api,
                &params,
                &valid,
                None,
                Some(&format!(
                    "The username is too long (at most {MAX_USERNAME_BYTES} bytes)."
                )),
                StatusCode::BAD_REQUEST,
            ));
        }
        Err(LoginError::Busy) => {
            return Err(page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is busy checking other sign-ins. Try again in a moment.",
                Some(crate::secrets::BUSY_RETRY_AFTER_SECS),
            ));
        }
        Err(LoginError::Store(err)) => return Err(storage_page(&err)),
    };
    let code = issue_code(ctx, api, oauth, &valid, user, now, None, now)
        .await
        .map_err(|err| storage_page(&err))?;
    let location = code_redirect_url(
        &valid.redirect_uri,
        &code,
        valid.state.as_deref(),
        &ctx.auth.issuer(api),
    );
    let mut response = redirect(StatusCode::SEE_OTHER, &location)?;
    super::oidc_handlers::start_login_session(ctx, api, oauth, &headers, user, &mut response, now)
        .await;
    Ok(response)
}

/// An authorization request sent by POST (OpenID Providers only): validated as a GET, then the same
/// page, code or error redirect (303, since the browser must not re-post to the client).
async fn authorize_request_by_post(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    oauth: &OAuthConfig,
    headers: &http::HeaderMap,
    params: &AuthorizeParams,
) -> Result<Response<Body>, GatewayError> {
    let client = find_client(ctx, api, params).await?;
    let policy = client_policy(ctx, client.as_ref()).await?;
    match validate_authorize_request(params, client.as_ref(), oauth, policy.as_deref()) {
        Ok(valid) => {
            super::oidc_handlers::builtin_get(ctx, api, oauth, headers, params, &valid).await
        }
        Err(err) => refuse(ctx, api, err, StatusCode::SEE_OTHER),
    }
}

/// The client named by the request, when the name is worth looking up.
async fn find_client(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    params: &AuthorizeParams,
) -> Result<Option<Client>, GatewayError> {
    let Some(client_id) = params.lookup_client_id() else {
        return Ok(None);
    };
    ctx.auth
        .find_client(api, client_id)
        .await
        .map_err(|err| storage_page(&err))
}

/// The client's policy, for the scopes the client may be offered; a storage error ends the sign-in as
/// `find_client`'s does.
async fn client_policy<'a>(
    ctx: &Ctx<'a>,
    client: Option<&Client>,
) -> Result<Option<Resolved<'a>>, GatewayError> {
    let Some(client) = client else {
        return Ok(None);
    };
    ctx.auth
        .client_policy(&ctx.config.policies, client)
        .await
        .map_err(|err| storage_page(&err))
}

pub(super) fn login_page(
    form_key: &[u8],
    api: &ApiDef,
    params: &AuthorizeParams,
    valid: &ValidAuthorize,
    username: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response<Body> {
    let hidden = params.sent();
    let csrf = csrf_token(form_key, &api.id, params, now());
    let action = format!("{}oauth/authorize", api.listen_path);
    let html = login_page::render(&LoginPage {
        api_name: &api.name,
        action: &action,
        client_id: &valid.client_id,
        redirect_uri: &valid.redirect_uri,
        scopes: &valid.offered_scopes,
        hidden: &hidden,
        csrf_token: &csrf,
        username,
        error,
        signed_in_as: None,
    });
    login_page::login_response(status, html, &valid.redirect_uri)
}

/// The answer to a refused request: a page, or a redirect with the error to the client.
fn refuse(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    err: AuthorizeError,
    status: StatusCode,
) -> Result<Response<Body>, GatewayError> {
    match err {
        AuthorizeError::Page(description) => {
            tracing::debug!(api = %api.id, reason = %description, "authorization request refused");
            Err(page_error(StatusCode::BAD_REQUEST, description, None))
        }
        AuthorizeError::Redirect {
            redirect_uri,
            code,
            description,
            state,
        } => {
            tracing::debug!(api = %api.id, error = code.as_str(), reason = %description, "authorization request refused");
            let location = error_redirect_url(
                &redirect_uri,
                code,
                &description,
                state.as_deref(),
                &ctx.auth.issuer(api),
            );
            redirect(status, &location)
        }
    }
}

fn page_error(
    status: StatusCode,
    description: impl Into<String>,
    retry_after_secs: Option<u64>,
) -> GatewayError {
    GatewayError::AuthorizePage {
        status,
        description: description.into(),
        retry_after_secs,
    }
}

pub(super) fn storage_page(err: &StoreError) -> GatewayError {
    tracing::warn!(error = %err, "storage error at the authorization endpoint");
    page_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-in is temporarily unavailable. Try again in a moment.",
        Some(1),
    )
}

pub(super) fn redirect(status: StatusCode, location: &str) -> Result<Response<Body>, GatewayError> {
    let location = HeaderValue::from_str(location).map_err(|_| GatewayError::Internal)?;
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

// --- admin: POST /apis/{api}/oauth/authorize-client

/// What an external identity provider sends once it has signed the user in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeClientRequest {
    client_id: String,
    redirect_uri: String,
    username: String,
    #[serde(default)]
    response_type: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    code_challenge: Option<String>,
    #[serde(default)]
    code_challenge_method: Option<String>,
    /// OpenID Connect: the request's `nonce`, passed on by the identity provider.
    #[serde(default)]
    nonce: Option<String>,
    /// OpenID Connect: the identity claims the provider vouches for (`email`, `name`, ...); they
    /// replace the user's users.yaml claims in this sign-in's ID tokens and userinfo.
    #[serde(default)]
    claims: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// `POST /apis/{api}/oauth/authorize-client` (docs/design.md §6): the identity provider of a `login: redirect`
/// API has signed `username` in and approved the request; validate it as the authorization endpoint
/// does, then answer `{code, redirect_to}` with the complete redirect for the user's browser.
pub async fn authorize_client(
    ctx: &Ctx<'_>,
    api_id: &str,
    body: &[u8],
) -> Result<Response<Body>, GatewayError> {
    let api = ctx
        .config
        .apis
        .iter()
        .find(|a| a.id == api_id)
        .ok_or_else(|| GatewayError::NoSuchResource(format!("no API with id '{api_id}'")))?;
    let Some(oauth) = api.oauth.as_ref() else {
        return Err(GatewayError::NoSuchResource(format!(
            "the API '{api_id}' is not an authorization server"
        )));
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let request: AuthorizeClientRequest =
        serde_path_to_error::deserialize(&mut de).map_err(|err| {
            let path = err.path().to_string();
            let field = if path == "." {
                "body".to_string()
            } else {
                path
            };
            GatewayError::InvalidInput(format!("{field}: {}", err.into_inner()))
        })?;
    de.end()
        .map_err(|err| GatewayError::InvalidInput(format!("body: {err}")))?;
    let params = AuthorizeParams::from_pairs(
        [
            ("client_id", Some(request.client_id)),
            ("redirect_uri", Some(request.redirect_uri)),
            // The identity provider may pass the original request on as it came, or leave it out.
            (
                "response_type",
                Some(request.response_type.unwrap_or_else(|| "code".into())),
            ),
            ("scope", request.scope),
            ("state", request.state),
            ("code_challenge", request.code_challenge),
            ("code_challenge_method", request.code_challenge_method),
            ("nonce", request.nonce),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v))),
    );
    let client = match params.lookup_client_id() {
        Some(id) => ctx
            .auth
            .find_client(api, id)
            .await
            .map_err(OAuthError::from)?,
        None => None,
    };
    let policy = match &client {
        Some(client) => ctx
            .auth
            .client_policy(&ctx.config.policies, client)
            .await
            .map_err(OAuthError::from)?,
        None => None,
    };
    let valid = validate_authorize_request(&params, client.as_ref(), oauth, policy.as_deref())
        .map_err(AuthorizeError::into_oauth)?;
    let user = ctx
        .config
        .users
        .iter()
        .find(|u| u.username == request.username && !u.disabled)
        .ok_or_else(|| OAuthError::invalid_request("the user does not exist or is disabled"))?;
    let now = now();
    if let Some(claims) = &request.claims {
        oidc::check_idp_claims(claims).map_err(GatewayError::InvalidInput)?;
    }
    let code = issue_code(ctx, api, oauth, &valid, user, now, request.claims, now)
        .await
        .map_err(OAuthError::from)?;
    let redirect_to = code_redirect_url(
        &valid.redirect_uri,
        &code,
        valid.state.as_deref(),
        &ctx.auth.issuer(api),
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({ "code": code, "redirect_to": redirect_to }),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn oauth(pkce: PkceMode) -> OAuthConfig {
        OAuthConfig {
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            pkce,
            login: LoginMode::Builtin,
            code_ttl: Duration::from_secs(60),
            access_token_ttl: Duration::from_secs(1800),
            refresh_token_ttl: None,
            max_refreshes: None,
            scopes: vec!["read".into(), "write".into()],
            notifications: None,
            clients: vec![],
            max_sessions_per_user: 100,
            token_rate_limit: None,
            openid: false,
            login_session: Duration::ZERO,
        }
    }

    fn client(public: bool) -> Client {
        Client {
            client_id: "app".into(),
            secret_hash: (!public).then(|| "$argon2id$...".to_string()),
            redirect_uris: vec![
                "https://app.example/cb".into(),
                "https://app.example/cb2?tenant=a".into(),
                "http://127.0.0.1/native".into(),
                "http://[::1]:8000/native".into(),
            ],
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            scopes: vec!["read".into(), "write".into()],
            policy: None,
            claims: Default::default(),
            post_logout_redirect_uris: vec![],
            skip_consent: false,
            dynamic: false,
        }
    }

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn good() -> Vec<(&'static str, String)> {
        vec![
            ("client_id", "app".into()),
            ("redirect_uri", "https://app.example/cb".into()),
            ("response_type", "code".into()),
            ("scope", "read".into()),
            ("state", "xyz".into()),
            ("code_challenge", CHALLENGE.into()),
            ("code_challenge_method", "S256".into()),
        ]
    }

    fn with(changes: &[(&'static str, Option<&str>)]) -> AuthorizeParams {
        let mut pairs = good();
        for (name, value) in changes {
            pairs.retain(|(n, _)| n != name);
            if let Some(value) = value {
                pairs.push((name, value.to_string()));
            }
        }
        AuthorizeParams::from_pairs(pairs)
    }

    fn check(
        params: &AuthorizeParams,
        client: Option<&Client>,
        pkce: PkceMode,
    ) -> Result<ValidAuthorize, AuthorizeError> {
        validate_authorize_request(params, client, &oauth(pkce), None)
    }

    fn redirect_error(
        result: Result<ValidAuthorize, AuthorizeError>,
    ) -> (OAuthErrorCode, Option<String>) {
        match result {
            Err(AuthorizeError::Redirect { code, state, .. }) => (code, state),
            other => panic!("expected an error redirect, got {other:?}"),
        }
    }

    fn is_page(result: Result<ValidAuthorize, AuthorizeError>) -> bool {
        matches!(result, Err(AuthorizeError::Page(_)))
    }

    #[test]
    fn a_good_request_is_valid() {
        let valid = check(&with(&[]), Some(&client(true)), PkceMode::Required).unwrap();
        assert_eq!(valid.redirect_uri, "https://app.example/cb");
        assert_eq!(valid.offered_scopes, vec!["read".to_string()]);
        assert_eq!(valid.state.as_deref(), Some("xyz"));
        assert_eq!(valid.code_challenge.as_deref(), Some(CHALLENGE));
        // No scope: everything the client may have.
        let valid = check(
            &with(&[("scope", None)]),
            Some(&client(true)),
            PkceMode::Required,
        )
        .unwrap();
        assert_eq!(
            valid.offered_scopes,
            vec!["read".to_string(), "write".to_string()]
        );
    }

    #[test]
    fn unknown_or_missing_client_is_a_page() {
        assert!(is_page(check(&with(&[]), None, PkceMode::Required)));
        assert!(is_page(check(
            &with(&[("client_id", None)]),
            Some(&client(true)),
            PkceMode::Required
        )));
        assert!(is_page(check(
            &with(&[("client_id", Some("other"))]),
            Some(&client(true)),
            PkceMode::Required
        )));
        let mut repeated = good();
        repeated.push(("client_id", "app".into()));
        assert!(is_page(check(
            &AuthorizeParams::from_pairs(repeated),
            Some(&client(true)),
            PkceMode::Required
        )));
    }

    #[test]
    fn redirect_uri_must_match_exactly() {
        for bad in [
            "https://APP.example/cb",
            "HTTPS://app.example/cb",
            "https://app.example/CB",
            "https://app.example/cb/",
            "https://app.example/cb?x=1",
            "https://app.example/cb#frag",
            "https://app.example/cb/../cb",
            "https://app.example/x/../cb",
            "https://app.example/%2e%2e/cb",
            "https://app.example/c%62",
            "https://app.example%2fcb",
            "https://app.example/cb%252f..",
            "https://app.example%2f@evil.example/cb",
            "https://app.example@evil.example/cb",
            "https://evil.example/https://app.example/cb",
            "https://app.example.evil.example/cb",
            "https://app.example:443/cb",
            "http://app.example/cb",
            "https://app.example/cb2",
            "https://app.example/cb2?tenant=b",
            "https://app.example/cb2?tenant=a&x=1",
            " https://app.example/cb",
        ] {
            assert!(
                !redirect_uri_matches("https://app.example/cb", bad),
                "{bad}"
            );
            let params = with(&[("redirect_uri", Some(bad))]);
            assert!(
                is_page(check(&params, Some(&client(true)), PkceMode::Required)),
                "{bad}"
            );
        }
        assert!(is_page(check(
            &with(&[("redirect_uri", None)]),
            Some(&client(true)),
            PkceMode::Required
        )));
        // A registered URI with its own query matches exactly.
        let params = with(&[("redirect_uri", Some("https://app.example/cb2?tenant=a"))]);
        assert!(check(&params, Some(&client(true)), PkceMode::Required).is_ok());
    }

    #[test]
    fn loopback_redirects_may_change_only_the_port() {
        assert!(redirect_uri_matches(
            "http://127.0.0.1/native",
            "http://127.0.0.1:51234/native"
        ));
        assert!(redirect_uri_matches(
            "http://127.0.0.1:80/native",
            "http://127.0.0.1:51234/native"
        ));
        assert!(redirect_uri_matches(
            "http://[::1]:8000/native",
            "http://[::1]:9/native"
        ));
        assert!(redirect_uri_matches(
            "http://[::1]:8000/native",
            "http://[::1]/native"
        ));
        for bad in [
            "http://127.0.0.1:51234/other",
            "http://127.0.0.1:51234/native/",
            "http://127.0.0.1:51234/native?x=1",
            "http://127.0.0.2:51234/native",
            "http://localhost:51234/native",
            "http://[::1]:51234/native",
            "https://127.0.0.1:51234/native",
            "http://127.0.0.1:99999/native",
            "http://127.0.0.1:/native",
            "http://127.0.0.1:+80/native",
            "http://127.0.0.1:80@evil.example/native",
            "http://127.0.0.1.evil.example/native",
            "http://user@127.0.0.1:80/native",
        ] {
            assert!(
                !redirect_uri_matches("http://127.0.0.1/native", bad),
                "{bad}"
            );
        }
        // Only the IP literals get this; `localhost` must match exactly.
        assert!(!redirect_uri_matches(
            "http://localhost/cb",
            "http://localhost:8080/cb"
        ));
        let params = with(&[("redirect_uri", Some("http://127.0.0.1:49152/native"))]);
        let valid = check(&params, Some(&client(true)), PkceMode::Required).unwrap();
        assert_eq!(valid.redirect_uri, "http://127.0.0.1:49152/native");
    }

    #[test]
    fn response_type_must_be_code() {
        let (code, state) = redirect_error(check(
            &with(&[("response_type", Some("token"))]),
            Some(&client(true)),
            PkceMode::Required,
        ));
        assert_eq!(code, OAuthErrorCode::UnsupportedResponseType);
        assert_eq!(state.as_deref(), Some("xyz"));
        let (code, _) = redirect_error(check(
            &with(&[("response_type", None)]),
            Some(&client(true)),
            PkceMode::Required,
        ));
        assert_eq!(code, OAuthErrorCode::InvalidRequest);
    }

    #[test]
    fn scope_beyond_the_client_is_invalid_scope() {
        for scope in ["admin", "read admin", "READ"] {
            let (code, _) = redirect_error(check(
                &with(&[("scope", Some(scope))]),
                Some(&client(true)),
                PkceMode::Required,
            ));
            assert_eq!(code, OAuthErrorCode::InvalidScope, "{scope}");
        }
    }

    #[test]
    fn the_client_must_be_allowed_the_code_grant() {
        let mut c = client(false);
        c.grant_types = vec![GrantType::RefreshToken];
        let (code, _) = redirect_error(check(&with(&[]), Some(&c), PkceMode::Required));
        assert_eq!(code, OAuthErrorCode::UnauthorizedClient);
    }

    #[test]
    fn pkce_rules() {
        let public = client(true);
        let confidential = client(false);
        let invalid = |changes: &[(&'static str, Option<&str>)], c: &Client, mode| {
            let (code, state) = redirect_error(check(&with(changes), Some(c), mode));
            assert_eq!(code, OAuthErrorCode::InvalidRequest, "{changes:?}");
            assert_eq!(state.as_deref(), Some("xyz"));
        };
        // Public clients always need a challenge; confidential ones when PKCE is required.
        let none = [("code_challenge", None), ("code_challenge_method", None)];
        invalid(&none, &public, PkceMode::Optional);
        invalid(&none, &confidential, PkceMode::Required);
        assert!(check(&with(&none), Some(&confidential), PkceMode::Optional).is_ok());
        // plain, unknown, lower-case, missing method: refused.
        for method in [Some("plain"), Some("s256"), Some("S512"), None] {
            invalid(
                &[("code_challenge_method", method)],
                &confidential,
                PkceMode::Optional,
            );
        }
        invalid(
            &[
                ("code_challenge", None),
                ("code_challenge_method", Some("plain")),
            ],
            &confidential,
            PkceMode::Optional,
        );
        invalid(
            &[("code_challenge", None)],
            &confidential,
            PkceMode::Optional,
        );
        // A challenge that cannot be an S256 digest.
        invalid(
            &[("code_challenge", Some("too-short"))],
            &public,
            PkceMode::Required,
        );
        invalid(
            &[("code_challenge", Some(&format!("{CHALLENGE}=")))],
            &public,
            PkceMode::Required,
        );
    }

    #[test]
    fn repeated_parameters_are_invalid_request() {
        let mut pairs = good();
        pairs.push(("scope", "write".into()));
        let (code, state) = redirect_error(check(
            &AuthorizeParams::from_pairs(pairs),
            Some(&client(true)),
            PkceMode::Required,
        ));
        assert_eq!(code, OAuthErrorCode::InvalidRequest);
        assert_eq!(state.as_deref(), Some("xyz"));
        // A repeated state is not echoed (which one would it be?).
        let mut pairs = good();
        pairs.push(("state", "other".into()));
        let (_, state) = redirect_error(check(
            &AuthorizeParams::from_pairs(pairs),
            Some(&client(true)),
            PkceMode::Required,
        ));
        assert_eq!(state, None);
        // Unknown parameters are ignored, but not repeated.
        let mut pairs = good();
        pairs.push(("display", "page".into()));
        assert!(
            check(
                &AuthorizeParams::from_pairs(pairs.clone()),
                Some(&client(true)),
                PkceMode::Required
            )
            .is_ok()
        );
        pairs.push(("display", "popup".into()));
        let result = check(
            &AuthorizeParams::from_pairs(pairs),
            Some(&client(true)),
            PkceMode::Required,
        );
        match result {
            Err(AuthorizeError::Redirect { description, .. }) => {
                assert_eq!(description, "a parameter is repeated")
            }
            other => panic!("{other:?}"),
        }
        let mut pairs = good();
        pairs.push(("redirect_uri", "https://app.example/cb".into()));
        assert!(is_page(check(
            &AuthorizeParams::from_pairs(pairs),
            Some(&client(true)),
            PkceMode::Required
        )));
    }

    #[test]
    fn empty_values_count_as_absent() {
        let params = AuthorizeParams::from_query("client_id=app&state=&scope=");
        assert_eq!(params.client_id.as_deref(), Some("app"));
        assert_eq!(params.state, None);
        assert_eq!(params.scope, None);
        assert!(params.repeated.is_empty());
    }

    #[test]
    fn redirect_urls_are_encoded_and_keep_the_registered_query() {
        assert_eq!(
            code_redirect_url(
                "https://app.example/cb",
                "c0de",
                Some("a b&c=d<"),
                "http://gw/movies"
            ),
            "https://app.example/cb?code=c0de&state=a+b%26c%3Dd%3C&iss=http%3A%2F%2Fgw%2Fmovies"
        );
        assert_eq!(
            code_redirect_url("https://app.example/cb?tenant=a", "c", None, "i"),
            "https://app.example/cb?tenant=a&code=c&iss=i"
        );
        assert_eq!(
            error_redirect_url(
                "https://app.example/cb",
                OAuthErrorCode::AccessDenied,
                "the user denied the request",
                Some("s"),
                "i"
            ),
            "https://app.example/cb?error=access_denied&error_description=the+user+denied+the+request&state=s&iss=i"
        );
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_request_and_expire() {
        const KEY: &[u8] = b"form key of the signing key";
        let params = with(&[]);
        let token = csrf_token(KEY, "movies", &params, 1000);
        assert!(verify_csrf(KEY, Some(&token), "movies", &params, 1000));
        assert!(verify_csrf(
            KEY,
            Some(&token),
            "movies",
            &params,
            1000 + CSRF_TTL_SECS
        ));
        assert!(!verify_csrf(
            KEY,
            Some(&token),
            "movies",
            &params,
            1001 + CSRF_TTL_SECS
        ));
        assert!(!verify_csrf(KEY, Some(&token), "movies", &params, 900));
        assert!(!verify_csrf(KEY, None, "movies", &params, 1000));
        assert!(!verify_csrf(KEY, Some(""), "movies", &params, 1000));
        assert!(!verify_csrf(KEY, Some("1000."), "movies", &params, 1000));
        assert!(!verify_csrf(KEY, Some(&token), "books", &params, 1000));
        for (name, value) in [
            ("client_id", Some("other")),
            ("redirect_uri", Some("https://app.example/cb2?tenant=a")),
            ("scope", Some("read write")),
            ("scope", None),
            ("state", Some("other")),
            ("state", None),
            ("code_challenge", None),
        ] {
            assert!(
                !verify_csrf(KEY, Some(&token), "movies", &with(&[(name, value)]), 1000),
                "{name}"
            );
        }
        // Moving the time into the MAC's input is not possible without the key.
        let (_, mac) = token.split_once('.').unwrap();
        assert!(!verify_csrf(
            KEY,
            Some(&format!("1500.{mac}")),
            "movies",
            &params,
            1500
        ));
        // Flipping a character of the MAC.
        let mut forged = token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        assert!(!verify_csrf(KEY, Some(&forged), "movies", &params, 1000));
        // A form signed with another deployment's key is refused.
        assert!(!verify_csrf(
            b"another signing key",
            Some(&token),
            "movies",
            &params,
            1000
        ));
    }

    #[test]
    fn csrf_message_is_unambiguous() {
        // Moving text from one parameter into the next must change the MAC input.
        let a = AuthorizeParams::from_pairs([("state", "ab"), ("code_challenge", "c")]);
        let b = AuthorizeParams::from_pairs([("state", "a"), ("code_challenge", "bc")]);
        assert_ne!(csrf_message("x", &a, 1), csrf_message("x", &b, 1));
        let c = AuthorizeParams::from_pairs([("state", "")]);
        let d = AuthorizeParams::default();
        assert_eq!(csrf_message("x", &c, 1), csrf_message("x", &d, 1));
    }
}
