//! The scope rules: what a client may ask for, what a user may grant, what a refresh keeps
//! (RFC 6749 §3.3, §6). Pure functions of the configuration.

use crate::config::{OAuthConfig, Policy, User};
use std::collections::BTreeSet;

use crate::error::oauth::OAuthError;

use crate::oauth::clients::Client;

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
