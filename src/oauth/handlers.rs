//! HTTP handlers of the OAuth endpoints (docs/design.md §4): parse the request, call the flow, shape the answer.
//! No OAuth rule lives here; they are all in `server.rs` (and `authorize.rs` for the authorize endpoint).

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::clock::now;
use crate::config::{ApiDef, GrantType};
use crate::error::{GatewayError, json_response};
use crate::http_util::{Body, empty, parse_pairs, read_form};

use super::Ctx;
use super::clients::ClientAuth;
use super::server::{AuthServer, Directory, TokenRequest};
use crate::error::oauth::OAuthError;

/// The endpoints an API with an `oauth` block serves under its listen path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Authorize,
    Token,
    Revoke,
    Introspect,
    TokenInfo,
    Metadata,
    Jwks,
    /// OpenID Connect (only on an API with `oauth.openid: true`, see [`Endpoint::served_by`]).
    Userinfo,
    Logout,
    OpenIdConfiguration,
}

impl Endpoint {
    /// `rest` is the request path after the listen path (`oauth/token` for `/movies/oauth/token`).
    pub fn from_rest(rest: &str) -> Option<Endpoint> {
        match rest.trim_end_matches('/') {
            "oauth/authorize" => Some(Endpoint::Authorize),
            "oauth/token" => Some(Endpoint::Token),
            "oauth/revoke" => Some(Endpoint::Revoke),
            "oauth/introspect" => Some(Endpoint::Introspect),
            "oauth/tokeninfo" => Some(Endpoint::TokenInfo),
            ".well-known/oauth-authorization-server" => Some(Endpoint::Metadata),
            ".well-known/jwks.json" => Some(Endpoint::Jwks),
            "oauth/userinfo" => Some(Endpoint::Userinfo),
            "oauth/logout" => Some(Endpoint::Logout),
            ".well-known/openid-configuration" => Some(Endpoint::OpenIdConfiguration),
            _ => None,
        }
    }

    /// Whether `api` serves this endpoint; the OpenID ones exist only on an OpenID Provider (on any
    /// other API those paths go to the upstream as before).
    pub fn served_by(self, api: &ApiDef) -> bool {
        match self {
            Endpoint::Userinfo | Endpoint::Logout | Endpoint::OpenIdConfiguration => {
                api.oauth.as_ref().is_some_and(|o| o.openid)
            }
            _ => api.oauth.is_some(),
        }
    }
}

pub async fn handle(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    match endpoint {
        Endpoint::Authorize => super::authorize::handle(ctx, api, req).await,
        Endpoint::Token => token(ctx, api, req).await,
        Endpoint::Revoke => revoke(ctx, api, req).await,
        Endpoint::Introspect => introspect(ctx, api, req).await,
        Endpoint::TokenInfo => tokeninfo(ctx, api, &req),
        Endpoint::Metadata => {
            only(&req, &[Method::GET, Method::HEAD])?;
            Ok(metadata_response(ctx.auth, api))
        }
        Endpoint::Jwks => {
            only(&req, &[Method::GET, Method::HEAD])?;
            Ok(jwks(ctx.auth))
        }
        Endpoint::Userinfo => {
            super::oidc_handlers::require_openid(api)?;
            super::oidc_handlers::userinfo(ctx, api, req).await
        }
        Endpoint::Logout => {
            super::oidc_handlers::require_openid(api)?;
            super::oidc_handlers::logout(ctx, api, req).await
        }
        Endpoint::OpenIdConfiguration => {
            super::oidc_handlers::require_openid(api)?;
            only(&req, &[Method::GET, Method::HEAD])?;
            Ok(super::oidc_handlers::discovery_response(ctx.auth, api))
        }
    }
}

/// The JWKS document (also served at `/.well-known/jwks.json`).
pub fn jwks(auth: &AuthServer) -> Response<Body> {
    public_json(json_response(StatusCode::OK, auth.tokens.keys.jwks()))
}

pub fn metadata_response(auth: &AuthServer, api: &ApiDef) -> Response<Body> {
    // An OpenID Provider's RFC 8414 metadata is its discovery document: both always agree.
    if api.oauth.as_ref().is_some_and(|o| o.openid) {
        return super::oidc_handlers::discovery_response(auth, api);
    }
    public_json(json_response(StatusCode::OK, &auth.metadata(api)))
}

/// Metadata and keys are public and may be cached briefly (keys rotate rarely).
fn public_json(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.remove(header::PRAGMA);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

fn only<B>(req: &Request<B>, methods: &[Method]) -> Result<(), GatewayError> {
    if methods.contains(req.method()) {
        Ok(())
    } else {
        Err(GatewayError::MethodNotAllowed)
    }
}

async fn token(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    only(&req, &[Method::POST])?;
    refuse_credentials_in_query(&req)?;
    let ip = ctx.client_ip.to_string();
    let (headers, mut form) = read_form(req, ctx.config.limits.body_read_timeout).await?;
    let client = client_auth(&headers, &mut form)?;
    let grant_type = form
        .remove("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("the grant_type parameter is missing"))?;
    let request = TokenRequest {
        grant_type,
        code: form.remove("code"),
        redirect_uri: form.remove("redirect_uri"),
        code_verifier: form.remove("code_verifier"),
        username: form.remove("username"),
        password: form.remove("password"),
        refresh_token: form.remove("refresh_token"),
        scope: form.remove("scope"),
        client,
        client_ip: ip,
    };
    let grant = request.grant_type.clone();
    let dir = Directory::from(ctx.config);
    let response = ctx.auth.token(api, &dir, request, now()).await?;
    if let Some(grant) = GrantType::parse(&grant) {
        ctx.auth.stats.count_issued(grant);
    }
    // Serialised straight from the struct: no intermediate `serde_json::Value` tree per token.
    Ok(json_response(StatusCode::OK, &response))
}

async fn revoke(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    only(&req, &[Method::POST])?;
    refuse_credentials_in_query(&req)?;
    let ip = ctx.client_ip.to_string();
    let (headers, mut form) = read_form(req, ctx.config.limits.body_read_timeout).await?;
    let auth = client_auth(&headers, &mut form)?;
    let token = form
        .remove("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::invalid_request("the token parameter is missing"))?;
    let caller = ctx.auth.authenticate(api, &auth, &ip, now()).await?;
    ctx.auth
        .revoke(
            api,
            &caller,
            &token,
            form.get("token_type_hint").map(String::as_str),
            now(),
        )
        .await?;
    let mut response = Response::new(empty());
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

async fn introspect(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    only(&req, &[Method::POST])?;
    refuse_credentials_in_query(&req)?;
    let admin_caller = is_admin(ctx, req.headers());
    let ip = ctx.client_ip.to_string();
    let (headers, mut form) = read_form(req, ctx.config.limits.body_read_timeout).await?;
    if !admin_caller {
        let auth = client_auth(&headers, &mut form)?;
        let caller = ctx.auth.authenticate(api, &auth, &ip, now()).await?;
        // RFC 7662 §2.1: only callers that can keep a secret may introspect.
        if caller.is_public() {
            return Err(OAuthError::invalid_client(auth.via_basic).into());
        }
    }
    let token = form
        .remove("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::invalid_request("the token parameter is missing"))?;
    let hint = form.get("token_type_hint").map(String::as_str);
    let body = ctx
        .auth
        .introspect(api, ctx.config, &token, hint, now())
        .await?;
    Ok(json_response(StatusCode::OK, &body))
}

fn tokeninfo(
    ctx: &Ctx<'_>,
    api: &ApiDef,
    req: &Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    only(req, &[Method::GET])?;
    let query = req.uri().query().unwrap_or("");
    let form = parse_pairs(query.as_bytes())?;
    let token = form
        .get("access_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::invalid_request("the access_token parameter is missing"))?;
    let body = ctx.auth.tokeninfo(api, ctx.config, token, now())?;
    Ok(json_response(StatusCode::OK, &body))
}

/// `Authorization: Bearer <admin secret>` (introspection by operators' tools).
fn is_admin(ctx: &Ctx<'_>, headers: &HeaderMap) -> bool {
    let Some(admin) = &ctx.settings.admin else {
        return false;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, secret)| {
            scheme.eq_ignore_ascii_case("bearer")
                && crate::secrets::secret_eq(secret.trim().as_bytes(), admin.secret.as_bytes())
        })
}

/// RFC 6749 §2.3.1 / §3.2: credentials and grants never travel in the URL.
fn refuse_credentials_in_query<B>(req: &Request<B>) -> Result<(), GatewayError> {
    let Some(query) = req.uri().query() else {
        return Ok(());
    };
    for (name, _) in form_urlencoded::parse(query.as_bytes()) {
        if matches!(
            name.as_ref(),
            "client_secret"
                | "client_id"
                | "password"
                | "code"
                | "refresh_token"
                | "token"
                | "code_verifier"
        ) {
            return Err(OAuthError::invalid_request(format!(
                "{name} must be sent in the request body, not in the URL"
            ))
            .into());
        }
    }
    Ok(())
}

/// Client credentials from HTTP Basic (form-urlencoded, then base64: RFC 6749 §2.3.1) and/or the form.
/// Using both methods is refused, except that a `client_id` in the body naming the same client is fine.
pub fn client_auth(
    headers: &HeaderMap,
    form: &mut HashMap<String, String>,
) -> Result<ClientAuth, GatewayError> {
    let form_id = form.remove("client_id");
    let form_secret = form.remove("client_secret");
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, rest)| rest.trim());
    let Some(encoded) = basic else {
        return Ok(ClientAuth {
            client_id: form_id,
            secret: form_secret,
            via_basic: false,
        });
    };
    let malformed = || GatewayError::from(OAuthError::invalid_client(true));
    let decoded = STANDARD.decode(encoded).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let id = form_decode(id).ok_or_else(malformed)?;
    let secret = form_decode(secret).ok_or_else(malformed)?;
    if form_secret.is_some() {
        return Err(
            OAuthError::invalid_request("use one client authentication method, not two").into(),
        );
    }
    if let Some(form_id) = form_id
        && form_id != id
    {
        return Err(
            OAuthError::invalid_request("client_id in the body differs from HTTP Basic").into(),
        );
    }
    Ok(ClientAuth {
        client_id: Some(id),
        secret: Some(secret),
        via_basic: true,
    })
}

/// The `application/x-www-form-urlencoded` decoding of one value: `+` is a space, `%XX` a byte.
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(value))).unwrap(),
        );
        headers
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut form = HashMap::new();
        let auth = client_auth(&basic("my%20app:s%3Ac+r%2Bt"), &mut form).unwrap();
        assert_eq!(auth.client_id.as_deref(), Some("my app"));
        assert_eq!(auth.secret.as_deref(), Some("s:c r+t"));
        assert!(auth.via_basic);
    }

    #[test]
    fn basic_plus_matching_body_client_id_is_accepted() {
        let mut form = HashMap::from([("client_id".to_string(), "app".to_string())]);
        assert!(client_auth(&basic("app:secret"), &mut form).is_ok());
        let mut form = HashMap::from([("client_id".to_string(), "other".to_string())]);
        assert!(client_auth(&basic("app:secret"), &mut form).is_err());
        let mut form = HashMap::from([("client_secret".to_string(), "x".to_string())]);
        assert!(client_auth(&basic("app:secret"), &mut form).is_err());
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(parse_pairs(b"a=1&b=2").is_ok());
        assert!(parse_pairs(b"a=1&a=2").is_err());
    }

    #[test]
    fn endpoints_by_path() {
        assert_eq!(Endpoint::from_rest("oauth/token"), Some(Endpoint::Token));
        assert_eq!(Endpoint::from_rest("oauth/token/"), Some(Endpoint::Token));
        assert_eq!(Endpoint::from_rest("oauth/tokens"), None);
        assert_eq!(
            Endpoint::from_rest(".well-known/jwks.json"),
            Some(Endpoint::Jwks)
        );
    }
}
