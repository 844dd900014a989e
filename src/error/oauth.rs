//! OAuth errors (RFC 6749 §5.2), made by the flows and turned into responses by `crate::error`.

/// The `error` codes of RFC 6749 §4.1.2.1 and §5.2 (and RFC 7009 / 6750 where they add one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    AccessDenied,
    UnsupportedResponseType,
    UnsupportedTokenType,
    /// RFC 6750 §3.1, used by tokeninfo for a token that is not valid.
    InvalidToken,
    ServerError,
    TemporarilyUnavailable,
    /// Too many failed logins (not an RFC 6749 code; answered as 429).
    SlowDown,
    /// OIDC Core §3.1.2.6: `prompt=none` and nobody is signed in.
    LoginRequired,
    /// OIDC Core §3.1.2.6: `prompt=none` and the client needs the user's consent.
    ConsentRequired,
}

impl OAuthErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::AccessDenied => "access_denied",
            OAuthErrorCode::UnsupportedResponseType => "unsupported_response_type",
            OAuthErrorCode::UnsupportedTokenType => "unsupported_token_type",
            OAuthErrorCode::InvalidToken => "invalid_token",
            OAuthErrorCode::ServerError => "server_error",
            OAuthErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            OAuthErrorCode::SlowDown => "slow_down",
            OAuthErrorCode::LoginRequired => "login_required",
            OAuthErrorCode::ConsentRequired => "consent_required",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    pub code: OAuthErrorCode,
    pub description: String,
    /// The client tried HTTP Basic (or sent nothing): a 401 must carry `WWW-Authenticate: Basic`.
    pub basic_challenge: bool,
    /// Seconds for `Retry-After` (login throttling, storage outages).
    pub retry_after: Option<u64>,
}

impl OAuthError {
    pub fn new(code: OAuthErrorCode, description: impl Into<String>) -> OAuthError {
        OAuthError {
            code,
            description: description.into(),
            basic_challenge: false,
            retry_after: None,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::new(OAuthErrorCode::InvalidRequest, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> OAuthError {
        OAuthError::new(OAuthErrorCode::InvalidGrant, description)
    }

    pub fn invalid_scope(description: impl Into<String>) -> OAuthError {
        OAuthError::new(OAuthErrorCode::InvalidScope, description)
    }

    pub fn unauthorized_client(description: impl Into<String>) -> OAuthError {
        OAuthError::new(OAuthErrorCode::UnauthorizedClient, description)
    }

    pub fn invalid_client(basic: bool) -> OAuthError {
        OAuthError {
            basic_challenge: basic,
            ..OAuthError::new(
                OAuthErrorCode::InvalidClient,
                "client authentication failed",
            )
        }
    }

    pub fn status(&self) -> u16 {
        match self.code {
            OAuthErrorCode::InvalidClient => 401,
            OAuthErrorCode::SlowDown => 429,
            OAuthErrorCode::ServerError => 500,
            OAuthErrorCode::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

/// A storage failure inside an OAuth flow: the client is told to retry (RFC 6749 temporarily_unavailable).
impl From<crate::error::StoreError> for OAuthError {
    fn from(err: crate::error::StoreError) -> OAuthError {
        tracing::warn!(error = %err, "storage error in an OAuth flow");
        OAuthError {
            retry_after: Some(1),
            ..OAuthError::new(
                OAuthErrorCode::TemporarilyUnavailable,
                "storage is unavailable; retry later",
            )
        }
    }
}
