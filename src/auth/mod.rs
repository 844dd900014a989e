//! Protecting APIs on the proxy path (docs/design.md §5): find the credential, validate the token, check scopes.
//!
//! Validation runs on every proxied request, so it is built to cost a hash lookup for a token seen
//! before: the signature and static claims of a token are verified once and cached; the parts that can
//! change (expiry, revocation, which APIs accept it) are checked on every request.
//!
//! May import: `token` (verification), `policy`, `store` (revocation), `config`, `error`. Never `oauth`:
//! the proxy hands it the gateway's `Tokens`, not the authorization server.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Uri};

use crate::config::{ApiDef, AuthConfig, RuntimeConfig};
use crate::error::GatewayError;
use crate::store::Store;
use crate::token::{AccessClaims, TokenError, Tokens};

/// Where the credential was found (so it can be stripped from exactly there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    Query,
    Cookie,
}

/// Finds the access token: header, then query, then cookie. The same credential in several places is
/// refused (docs/design.md §5: two different credentials → 400; docs/security.md#token-challenges: the same token in two places → 400).
/// The token is borrowed from the request where it can be (the header, the usual place), so the proxy
/// path does not copy it.
pub fn extract<'r, B>(
    req: &'r Request<B>,
    auth: &AuthConfig,
) -> Result<Option<(Cow<'r, str>, Source)>, GatewayError> {
    let mut found = Found::default();
    if let Some(source) = &auth.header {
        for value in req.headers().get_all(&source.name) {
            let value = value
                .to_str()
                .map_err(|_| GatewayError::BadRequest("the credential header is not valid text"))?;
            match strip_prefix(value, &source.prefix) {
                Some(token) if !token.is_empty() => {
                    found.push(Cow::Borrowed(token), Source::Header)
                }
                // A header in another scheme (e.g. Basic) is not our credential.
                _ => {}
            }
        }
    }
    if let Some(name) = &auth.query
        && let Some(query) = req.uri().query()
    {
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if key == name.as_str() && !value.is_empty() {
                found.push(value, Source::Query);
            }
        }
    }
    if let Some(name) = &auth.cookie {
        for value in req.headers().get_all(header::COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for pair in value.split(';') {
                if let Some((key, value)) = pair.trim().split_once('=')
                    && key == name
                    && !value.is_empty()
                {
                    found.push(Cow::Borrowed(value), Source::Cookie);
                }
            }
        }
    }
    if found.more_than_one {
        return Err(GatewayError::BadRequest(
            "more than one credential in the request; send the access token once",
        ));
    }
    Ok(found.first)
}

/// The credentials `extract` found: the first, and whether there was another.
#[derive(Default)]
struct Found<'r> {
    first: Option<(Cow<'r, str>, Source)>,
    more_than_one: bool,
}

impl<'r> Found<'r> {
    fn push(&mut self, token: Cow<'r, str>, source: Source) {
        if self.first.is_some() {
            self.more_than_one = true;
        } else {
            self.first = Some((token, source));
        }
    }
}

/// `Bearer abc` with prefix `Bearer `: the scheme is case-insensitive (RFC 9110 §11.1).
fn strip_prefix<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix.is_empty() {
        return Some(value.trim());
    }
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| value[prefix.len()..].trim())
}

/// The request could not be rebuilt without its credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotStripped;

/// Removes the credential from where it was found, so the upstream never sees it. Fails closed: when
/// the URI cannot be rebuilt without the query credential, the request must not be forwarded.
pub fn strip<B>(
    req: &mut Request<B>,
    auth: &AuthConfig,
    source: Source,
) -> Result<(), NotStripped> {
    match source {
        Source::Header => {
            if let Some(h) = &auth.header {
                req.headers_mut().remove(&h.name);
            }
        }
        Source::Query => {
            if let Some(name) = &auth.query {
                let uri = req.uri();
                let kept: Vec<(String, String)> = uri
                    .query()
                    .map(|q| {
                        form_urlencoded::parse(q.as_bytes())
                            .filter(|(k, _)| k != name.as_str())
                            .map(|(k, v)| (k.into_owned(), v.into_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let path = uri.path().to_string();
                let new = if kept.is_empty() {
                    path
                } else {
                    let query = form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(kept)
                        .finish();
                    format!("{path}?{query}")
                };
                let mut parts = uri.clone().into_parts();
                parts.path_and_query = Some(new.parse().map_err(|_| NotStripped)?);
                *req.uri_mut() = Uri::from_parts(parts).map_err(|_| NotStripped)?;
            }
        }
        Source::Cookie => {
            if let Some(name) = &auth.cookie {
                let kept: Vec<String> = req
                    .headers()
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|pair| pair.split_once('=').is_none_or(|(k, _)| k != name))
                    .map(str::to_string)
                    .collect();
                req.headers_mut().remove(header::COOKIE);
                if !kept.is_empty()
                    && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
                {
                    req.headers_mut().insert(header::COOKIE, value);
                }
            }
        }
    }
    Ok(())
}

/// The APIs whose tokens this API accepts: itself, `accept_from`, and APIs whose clients' policies
/// grant access here are checked by the caller through `policy_access`.
pub fn audiences(api: &ApiDef) -> Vec<&str> {
    let mut out = vec![api.id.as_str()];
    out.extend(api.auth.accept_from.iter().map(String::as_str));
    out
}

/// Step one of validation: signature and header, from the cache when the token was seen before.
pub fn verified(tokens: &Tokens, token: &str) -> Result<Arc<AccessClaims>, TokenError> {
    tokens.verified(token)
}

/// Step two, on every request: time, issuer, audience (this API, `accept_from`, or an API the client's
/// policy grants), and revocation.
pub fn check(
    tokens: &Tokens,
    store: &dyn Store,
    config: &RuntimeConfig,
    api: &ApiDef,
    claims: &AccessClaims,
    policy_grants_access: bool,
    now: u64,
) -> Result<(), TokenError> {
    // The same rule as `audiences(api)` plus the policy's grant, without building the list.
    let accepts = |aud: &str| {
        aud == api.id || api.auth.accept_from.iter().any(|a| a == aud) || policy_grants_access
    };
    let issuer_matches = |aud: &str, iss: &str| {
        if aud == api.id {
            return tokens.issuer_is(&api.listen_path, iss);
        }
        config
            .apis
            .iter()
            .find(|a| a.id == aud)
            .is_some_and(|a| tokens.issuer_is(&a.listen_path, iss))
    };
    crate::token::jwt::check_claims(claims, issuer_matches, accepts, now)?;
    if crate::store::access_revoked(store, claims, now) {
        return Err(TokenError::Revoked);
    }
    Ok(())
}

/// The value of a claim as a header value: strings as they are, other JSON values in JSON form.
pub fn claim_value(claims: &AccessClaims, name: &str) -> Option<HeaderValue> {
    let text = match name {
        "iss" => claims.iss.clone(),
        "sub" => claims.sub.clone(),
        "aud" => claims.aud.clone(),
        "client_id" => claims.client_id.clone(),
        "scope" => claims.scope.clone(),
        "jti" => claims.jti.clone(),
        "sid" => claims.sid.clone(),
        "exp" => claims.exp.to_string(),
        "iat" => claims.iat.to_string(),
        "nbf" => claims.nbf.to_string(),
        other => match claims.extra.get(other)? {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => return None,
            value => value.to_string(),
        },
    };
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HeaderSource;

    fn auth(query: Option<&str>, cookie: Option<&str>) -> AuthConfig {
        AuthConfig {
            kind: crate::config::AuthType::OAuth2,
            header: Some(HeaderSource {
                name: header::AUTHORIZATION,
                prefix: "Bearer ".into(),
            }),
            query: query.map(str::to_string),
            cookie: cookie.map(str::to_string),
            strip_credentials: true,
            required_scopes: vec![],
            accept_from: vec![],
            forward_claims: vec![],
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let req = Request::get("/x")
            .header("authorization", "bEaReR abc")
            .body(())
            .unwrap();
        assert_eq!(
            extract(&req, &auth(None, None)).unwrap(),
            Some(("abc".into(), Source::Header))
        );
        let req = Request::get("/x")
            .header("authorization", "Basic abc")
            .body(())
            .unwrap();
        assert_eq!(extract(&req, &auth(None, None)).unwrap(), None);
    }

    #[test]
    fn two_credentials_are_refused() {
        let req = Request::get("/x?access_token=abc")
            .header("authorization", "Bearer abc")
            .body(())
            .unwrap();
        assert!(extract(&req, &auth(Some("access_token"), None)).is_err());
    }

    #[test]
    fn query_and_cookie_credentials_are_stripped() {
        let a = auth(Some("access_token"), Some("tg"));
        let mut req = Request::get("/x?a=1&access_token=abc&b=2")
            .body(())
            .unwrap();
        let (_, source) = extract(&req, &a).unwrap().unwrap();
        strip(&mut req, &a, source).unwrap();
        assert_eq!(req.uri().to_string(), "/x?a=1&b=2");

        let mut req = Request::get("/x")
            .header("cookie", "x=1; tg=abc; y=2")
            .body(())
            .unwrap();
        let (token, source) = extract(&req, &a).unwrap().unwrap();
        assert_eq!(token, "abc");
        strip(&mut req, &a, source).unwrap();
        assert_eq!(req.headers()["cookie"], "x=1; y=2");
    }
}
