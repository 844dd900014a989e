//! HTTP side of OpenID Connect (docs/design.md §9c): userinfo, discovery, RP-initiated logout, and the
//! login-session steps of the builtin authorization page. The rules are in `oidc.rs` and
//! `login_session.rs`; these handlers parse, call and shape the answer.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use super::Ctx;
use super::server::AuthServer;
use crate::config::{ApiDef, OAuthConfig, User};
use crate::error::{GatewayError, json_response};
use crate::http_util::Body;
use crate::logging::SECURITY_TARGET;

use super::authorize::{
    self, AuthorizeParams, ValidAuthorize, code_redirect_url, csrf_token, error_redirect_url,
    issue_code, login_page, redirect, storage_page,
};
use super::login_page::{self as page, LoginPage};
use super::login_session::{self, Step};
use super::oidc;
use crate::clock::now;
use crate::error::oauth::{OAuthError, OAuthErrorCode};
use crate::http_util::parse_pairs;

/// `GET|POST {lp}oauth/userinfo` (OIDC Core §5.3): the identity claims the access token's scopes
/// release. Errors per RFC 6750 §3: no token → 401 without an error code, a bad one → 401
/// `invalid_token`, a token without `openid` → 403 `insufficient_scope`.
pub async fn userinfo(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(GatewayError::MethodNotAllowed);
    }
    let realm = api.id.clone();
    let invalid = |description: &str| GatewayError::Unauthorized {
        realm: realm.clone(),
        invalid_token: true,
        description: description.to_string(),
    };
    let header_token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string());
    // RFC 6750 §2.2: a POST may carry the token in its form body instead (one method only, §2).
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let body_token = if req.method() == Method::POST && is_form {
        let (_, mut form) =
            crate::http_util::read_form(req, ctx.config.limits.body_read_timeout).await?;
        form.remove("access_token").filter(|t| !t.is_empty())
    } else {
        None
    };
    let token = match (header_token, body_token) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "send the access token in one place, not in the header and the body",
            )
            .into());
        }
        (Some(token), None) | (None, Some(token)) => Some(token),
        (None, None) => None,
    };
    let Some(token) = token.as_deref() else {
        return Err(GatewayError::Unauthorized {
            realm: realm.clone(),
            invalid_token: false,
            description: "an access token is required".into(),
        });
    };
    let now = now();
    let claims = ctx
        .auth
        .validate_access_token(token, api, ctx.config, &[api.id.as_str()], now)
        .map_err(|err| invalid(&err.to_string()))?;
    if !claims.scopes().any(|s| s == oidc::OPENID) {
        return Err(GatewayError::InsufficientScope {
            realm,
            scope: oidc::OPENID.into(),
        });
    }
    let Some(user) = ctx
        .config
        .users
        .iter()
        .find(|u| u.username == claims.sub && !u.disabled)
    else {
        return Err(invalid("the token's user does not exist or is disabled"));
    };
    // An external identity provider's claims live with the session; users.yaml's otherwise.
    // A stateless token's session is stored nowhere (docs/design.md §9f).
    let session = if crate::token::sid::parse_stateless_sid(&claims.sid).is_some() {
        None
    } else {
        ctx.auth
            .store
            .get_session(&claims.sid)
            .await
            .map_err(OAuthError::from)?
    };
    let idp_claims = session.and_then(|s| s.oidc).and_then(|o| o.claims);
    let source = idp_claims.as_ref().unwrap_or(&user.claims);
    let mut body = oidc::identity_claims(&claims.scope, &user.username, source);
    body.insert("sub".into(), Value::String(user.username.clone()));
    let mut response = json_response(StatusCode::OK, &Value::Object(body));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The OpenID Provider metadata of one API (also its RFC 8414 metadata).
pub fn discovery_response(auth: &AuthServer, api: &ApiDef) -> Response<Body> {
    let mut response = json_response(StatusCode::OK, &auth.discovery(api));
    let headers = response.headers_mut();
    headers.remove(header::PRAGMA);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

// --- the builtin authorization page with login sessions

/// GET of the builtin authorization page: the password form, the consent form of a signed-in
/// browser, a code at once, or (`prompt=none`) an error redirect.
pub async fn builtin_get(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    oauth: &OAuthConfig,
    headers: &HeaderMap,
    params: &AuthorizeParams,
    valid: &ValidAuthorize,
) -> Result<Response<Body>, GatewayError> {
    let now = now();
    let session = if login_session::enabled(oauth) {
        login_session::current(
            ctx.auth.store.as_ref(),
            api,
            headers,
            &ctx.config.users,
            now,
        )
        .await
        .map_err(|err| storage_page(&err))?
    } else {
        None
    };
    let step = login_session::next_step(
        &valid.oidc,
        session.as_ref().map(|(s, _)| s.auth_time),
        valid.skip_consent,
        now,
    );
    let issuer = ctx.auth.issuer(api);
    let error = |code: OAuthErrorCode, description: &str| {
        let location = error_redirect_url(
            &valid.redirect_uri,
            code,
            description,
            valid.state.as_deref(),
            &issuer,
        );
        redirect(StatusCode::FOUND, &location)
    };
    match (step, session) {
        (Step::LoginRequired, _) => error(
            OAuthErrorCode::LoginRequired,
            "the user is not signed in (prompt=none)",
        ),
        (Step::ConsentRequired, _) => error(
            OAuthErrorCode::ConsentRequired,
            "the user must approve this application (prompt=none)",
        ),
        (Step::IssueCode, Some((session, user))) => {
            let code = issue_code(ctx, api, oauth, valid, user, session.auth_time, None, now)
                .await
                .map_err(|err| storage_page(&err))?;
            let location =
                code_redirect_url(&valid.redirect_uri, &code, valid.state.as_deref(), &issuer);
            redirect(StatusCode::FOUND, &location)
        }
        (Step::ConsentForm, Some((_, user))) => {
            let hash = login_session::cookie_id(api, headers)
                .map(|id| login_session::id_hash(&id))
                .unwrap_or_default();
            Ok(consent_page(ctx, api, params, valid, user, &hash, now))
        }
        _ => Ok(login_page(
            ctx.auth.tokens.keys.form_key(),
            api,
            params,
            valid,
            valid.oidc.login_hint.as_deref(),
            None,
            StatusCode::OK,
        )),
    }
}

fn consent_page(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    params: &AuthorizeParams,
    valid: &ValidAuthorize,
    user: &User,
    session_hash: &str,
    now: u64,
) -> Response<Body> {
    let form_key = ctx.auth.tokens.keys.form_key();
    let hidden = params.sent();
    let csrf = csrf_token(form_key, &api.id, params, now);
    let proof = login_session::consent_proof(form_key, session_hash, &csrf);
    let action = format!("{}oauth/authorize", api.listen_path);
    let html = page::render(&LoginPage {
        api_name: &api.name,
        action: &action,
        client_id: &valid.client_id,
        redirect_uri: &valid.redirect_uri,
        scopes: &valid.offered_scopes,
        hidden: &hidden,
        csrf_token: &csrf,
        username: None,
        error: None,
        signed_in_as: Some((&user.username, &proof)),
    });
    page::login_response(StatusCode::OK, html, &valid.redirect_uri)
}

/// The consent form of a signed-in browser was allowed: a code for the session's user, when the
/// proof matches the browser's login session and the session still satisfies `prompt`/`max_age`.
/// `None`: the password form is shown instead.
#[allow(clippy::too_many_arguments)]
pub async fn consent_post(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    oauth: &OAuthConfig,
    headers: &HeaderMap,
    valid: &ValidAuthorize,
    csrf: &str,
    proof: &str,
    now: u64,
) -> Result<Option<Response<Body>>, GatewayError> {
    if !login_session::enabled(oauth) {
        return Ok(None);
    }
    let Some(id) = login_session::cookie_id(api, headers) else {
        return Ok(None);
    };
    let form_key = ctx.auth.tokens.keys.form_key();
    if !login_session::verify_consent_proof(form_key, &login_session::id_hash(&id), csrf, proof) {
        tracing::warn!(target: SECURITY_TARGET, security = "consent_proof_refused", api = %api.id, "consent form without a matching login session");
        return Ok(None);
    }
    let session = login_session::current(
        ctx.auth.store.as_ref(),
        api,
        headers,
        &ctx.config.users,
        now,
    )
    .await
    .map_err(|err| storage_page(&err))?;
    let Some((session, user)) = session else {
        return Ok(None);
    };
    if !valid.oidc.session_usable(session.auth_time, now) {
        return Ok(None);
    }
    let code = issue_code(ctx, api, oauth, valid, user, session.auth_time, None, now)
        .await
        .map_err(|err| storage_page(&err))?;
    let location = code_redirect_url(
        &valid.redirect_uri,
        &code,
        valid.state.as_deref(),
        &ctx.auth.issuer(api),
    );
    redirect(StatusCode::SEE_OTHER, &location).map(Some)
}

/// After a password sign-in: a login session and its cookie on `response`. A storage failure costs
/// only the session (the user signs in again next time), never the sign-in that just succeeded.
pub async fn start_login_session(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    oauth: &OAuthConfig,
    headers: &HeaderMap,
    user: &User,
    response: &mut Response<Body>,
    now: u64,
) {
    if !login_session::enabled(oauth) {
        return;
    }
    let secure = ctx.auth.issuer(api).starts_with("https:");
    match login_session::begin(
        ctx.auth.store.as_ref(),
        api,
        oauth,
        headers,
        &user.username,
        secure,
        now,
    )
    .await
    {
        Ok(cookie) => {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        Err(err) => {
            tracing::warn!(error = %err, api = %api.id, "could not store a login session");
        }
    }
}

// --- RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0)

/// `GET|POST {lp}oauth/logout`: ends the browser's login session. With `post_logout_redirect_uri`
/// the client must be known (`client_id`, or the `aud` of a valid `id_token_hint` issued here) and the
/// URI registered for it exactly; anything else is a 400 page, never a redirect.
pub async fn logout(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let page_error = |description: &str| GatewayError::AuthorizePage {
        status: StatusCode::BAD_REQUEST,
        description: description.to_string(),
        retry_after_secs: None,
    };
    let (headers, form) = match *req.method() {
        Method::GET => {
            let query = req.uri().query().unwrap_or("").to_string();
            let form = parse_pairs(query.as_bytes())
                .map_err(|_| page_error("A logout parameter is repeated."))?;
            (req.headers().clone(), form)
        }
        Method::POST => crate::http_util::read_form(req, ctx.config.limits.body_read_timeout)
            .await
            .map_err(|_| page_error("The logout request is not a valid form."))?,
        _ => return Err(GatewayError::MethodNotAllowed),
    };
    let get = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let issuer = ctx.auth.issuer(api);
    let hint_aud = match get("id_token_hint") {
        None => None,
        Some(hint) => Some(
            oidc::verify_id_token_hint(&ctx.auth.tokens.keys, hint, &issuer)
                .ok_or_else(|| page_error("The id_token_hint was not issued by this server."))?,
        ),
    };
    let client_id = match (get("client_id"), hint_aud.as_deref()) {
        (Some(a), Some(b)) if a != b => {
            return Err(page_error(
                "The client_id does not match the id_token_hint.",
            ));
        }
        (Some(id), _) | (None, Some(id)) => Some(id.to_string()),
        (None, None) => None,
    };
    let target = match get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let Some(client_id) = &client_id else {
                return Err(page_error(
                    "A post_logout_redirect_uri needs an id_token_hint or a client_id.",
                ));
            };
            let client = ctx
                .auth
                .find_client(api, client_id)
                .await
                .map_err(|err| storage_page(&err))?;
            let registered =
                client.is_some_and(|c| c.post_logout_redirect_uris.iter().any(|r| r == uri));
            if !registered {
                tracing::warn!(target: SECURITY_TARGET, security = "logout_redirect_refused", api = %api.id, client = %client_id, "unregistered post_logout_redirect_uri");
                return Err(page_error(
                    "The post_logout_redirect_uri is not registered for this application.",
                ));
            }
            Some(uri.to_string())
        }
    };
    if let Some(id) = login_session::cookie_id(api, &headers) {
        ctx.auth
            .store
            .end_login_session(&login_session::id_hash(&id), now())
            .await
            .map_err(|err| storage_page(&err))?;
    }
    let secure = issuer.starts_with("https:");
    let mut response = match target {
        Some(uri) => {
            let mut pairs = Vec::new();
            if let Some(state) = get("state") {
                pairs.push(("state", state));
            }
            let location = if pairs.is_empty() {
                uri
            } else {
                authorize::redirect_url(&uri, &pairs)
            };
            redirect(StatusCode::FOUND, &location)?
        }
        None => page::html_response(
            StatusCode::OK,
            page::message_page("Signed out", "You are signed out."),
        ),
    };
    response
        .headers_mut()
        .append(header::SET_COOKIE, login_session::clear_cookie(api, secure));
    Ok(response)
}

/// Not an endpoint of this API unless it is an OpenID Provider.
pub fn require_openid(api: &ApiDef) -> Result<&OAuthConfig, GatewayError> {
    match api.oauth.as_ref() {
        Some(oauth) if oauth.openid => Ok(oauth),
        _ => Err(GatewayError::NotFound),
    }
}
