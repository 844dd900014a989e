//! A user's login sessions of the builtin login page (OpenID Connect, docs/design.md §9c):
//! `GET /users/{username}/login-sessions` lists them on every API, `DELETE` ends them all (the next
//! authorization request of those browsers shows the password form again).

use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::error::{GatewayError, json_response};
use crate::http_util::Body;
use crate::oauth::server::MAX_USERNAME_BYTES;
use crate::proxy::gateway::Gateway;

use super::{now, storage};

fn check_username(username: &str) -> Result<(), GatewayError> {
    if username.is_empty() || username.len() > MAX_USERNAME_BYTES {
        return Err(GatewayError::InvalidInput(format!(
            "username: 1-{MAX_USERNAME_BYTES} bytes"
        )));
    }
    Ok(())
}

/// `GET /users/{username}/login-sessions`: live ones, oldest first. `id` is the SHA-256 of the
/// cookie's id (the store never holds the cookie): it names a session without letting anyone use it.
pub(super) async fn list(
    gateway: &Gateway,
    username: &str,
) -> Result<Response<Body>, GatewayError> {
    check_username(username)?;
    let sessions = gateway
        .auth
        .store
        .user_login_sessions(username, now())
        .await
        .map_err(storage)?;
    let listed: Vec<Value> = sessions
        .into_iter()
        .map(|(id, s)| {
            json!({"id": id, "api": s.api_id, "auth_time": s.auth_time, "expires_at": s.expires_at})
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"username": username, "login_sessions": listed}),
    ))
}

/// `DELETE /users/{username}/login-sessions`: ends them all; `ended` counts the live ones.
pub(super) async fn end(gateway: &Gateway, username: &str) -> Result<Response<Body>, GatewayError> {
    check_username(username)?;
    let ended = gateway
        .auth
        .store
        .end_user_login_sessions(username, now())
        .await
        .map_err(storage)?;
    tracing::info!(target: crate::logging::SECURITY_TARGET, security = "login_sessions_ended", ended, "a user's login sessions were ended through the admin API");
    Ok(json_response(
        StatusCode::OK,
        &json!({"username": username, "ended": ended}),
    ))
}
