//! The one place where a gateway-made error becomes an HTTP response.
//!
//! Every handler returns `Result<Response, GatewayError>`; nothing else builds error bodies. Each variant
//! names one condition, and its status code, error code and headers are decided here, so the contract
//! table of DESIGN §5 can be read off this file.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::http_util::{Body, full};
use crate::oauth::error::OAuthError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no API is served at this path")]
    NotFound,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The Host is not in `allowed_hosts` (RFC 9110 §15.5.20).
    #[error("this gateway does not serve the requested host")]
    MisdirectedRequest,
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    /// The client stopped sending its request body for longer than `limits.body_read_timeout`.
    #[error("the request body was not received in time")]
    RequestTimeout,
    #[error("the upstream could not be reached")]
    BadGateway,
    #[error("the upstream did not answer in time")]
    GatewayTimeout,
    #[error("{description}")]
    Unavailable {
        description: &'static str,
        retry_after_secs: u64,
    },
    #[error("admin authentication required")]
    AdminUnauthorized,
    /// Invalid input to the admin API; the description names the field (`redirect_uris[0]: ...`).
    /// Unlike `BadRequest` the request was framed fine, so the connection stays open.
    #[error("{0}")]
    InvalidInput(String),
    /// An admin resource that does not exist (unknown API, API without `oauth`, unknown client).
    #[error("{0}")]
    NoSuchResource(String),
    /// The resource exists already (a client_id taken).
    #[error("{0}")]
    Conflict(String),
    /// The resource is defined in a file (an API definition, policies.yaml) and cannot be changed
    /// through the admin API.
    #[error("{0}")]
    ReadOnly(String),
    /// A stored policy that clients still name cannot be deleted without `?force=true`; the body lists
    /// them (`clients`: `[{"api", "client_id"}]`) so the operator can move them first.
    #[error("{description}")]
    PolicyInUse {
        description: String,
        clients: Vec<serde_json::Value>,
    },
    /// No credential (`error: None`) or a bad one (`invalid_token`) on the proxy path (RFC 6750 §3).
    #[error("{description}")]
    Unauthorized {
        realm: String,
        invalid_token: bool,
        description: String,
    },
    /// The token lacks a scope the API requires (RFC 6750 §3.1 `insufficient_scope`).
    #[error("the access token lacks the required scope '{scope}'")]
    InsufficientScope { realm: String, scope: String },
    /// A rate limit or quota is exhausted.
    #[error("{description}")]
    TooManyRequests {
        description: &'static str,
        limit: u64,
        remaining: u64,
        reset_secs: u64,
        retry_after_secs: u64,
    },
    #[error("internal error")]
    Internal,
    /// A refusal at the browser-facing authorization endpoint that must not be redirected to the
    /// client (unknown client, unregistered redirect URI, bad CSRF token) or that ends the login
    /// (throttled, storage down): an HTML page for the user, not JSON.
    #[error("{description}")]
    AuthorizePage {
        status: StatusCode,
        description: String,
        retry_after_secs: Option<u64>,
    },
    /// An OAuth endpoint's error (RFC 6749 §5.2 body, `no-store`).
    #[error(transparent)]
    OAuth(#[from] OAuthError),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NotFound => StatusCode::NOT_FOUND,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::BadGateway => StatusCode::BAD_GATEWAY,
            GatewayError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::AdminUnauthorized => StatusCode::UNAUTHORIZED,
            GatewayError::InvalidInput(_) => StatusCode::BAD_REQUEST,
            GatewayError::NoSuchResource(_) => StatusCode::NOT_FOUND,
            GatewayError::Conflict(_)
            | GatewayError::ReadOnly(_)
            | GatewayError::PolicyInUse { .. } => StatusCode::CONFLICT,
            GatewayError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            GatewayError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::AuthorizePage { status, .. } => *status,
            GatewayError::OAuth(err) => {
                StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
        }
    }

    /// The machine-readable `error` member of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::NotFound => "not_found",
            GatewayError::BadRequest(_) => "invalid_request",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::MisdirectedRequest => "misdirected_request",
            GatewayError::PayloadTooLarge { .. } => "request_too_large",
            GatewayError::RequestTimeout => "request_timeout",
            GatewayError::BadGateway => "bad_gateway",
            GatewayError::GatewayTimeout => "gateway_timeout",
            GatewayError::Unavailable { .. } => "temporarily_unavailable",
            GatewayError::AdminUnauthorized => "unauthorized",
            GatewayError::InvalidInput(_) => "invalid_request",
            GatewayError::NoSuchResource(_) => "not_found",
            GatewayError::Conflict(_) => "conflict",
            GatewayError::ReadOnly(_) => "read_only",
            GatewayError::PolicyInUse { .. } => "policy_in_use",
            GatewayError::Unauthorized {
                invalid_token: true,
                ..
            } => "invalid_token",
            GatewayError::Unauthorized { .. } => "unauthorized",
            GatewayError::InsufficientScope { .. } => "insufficient_scope",
            GatewayError::TooManyRequests { .. } => "rate_limited",
            GatewayError::Internal => "server_error",
            GatewayError::AuthorizePage { status, .. } => match status.as_u16() {
                429 => "slow_down",
                500..=599 => "temporarily_unavailable",
                _ => "invalid_request",
            },
            GatewayError::OAuth(err) => err.code.as_str(),
        }
    }

    /// Whether the connection should be closed after this answer: after a framing, size or timing
    /// problem the rest of the byte stream cannot be trusted to start a new request.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::BadRequest(_)
                | GatewayError::PayloadTooLarge { .. }
                | GatewayError::RequestTimeout
        )
    }

    pub fn into_response(self) -> Response<Body> {
        if let GatewayError::AuthorizePage {
            status,
            description,
            retry_after_secs,
        } = &self
        {
            let html = crate::oauth::login_page::error_page(*status, description);
            let mut response = crate::oauth::login_page::html_response(*status, html);
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(*secs));
            }
            return response;
        }
        let description = match &self {
            GatewayError::OAuth(err) => err.description.clone(),
            other => other.to_string(),
        };
        let mut body = error_body(self.code(), &description);
        if let (GatewayError::PolicyInUse { clients, .. }, Some(obj)) =
            (&self, body.as_object_mut())
        {
            obj.insert("clients".into(), serde_json::Value::from(clients.clone()));
        }
        let mut response = json_response(self.status(), &body);
        let headers = response.headers_mut();
        match &self {
            GatewayError::OAuth(err) => {
                if err.basic_challenge && err.status() == 401 {
                    headers.insert(
                        http::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"tollgate\", charset=\"UTF-8\""),
                    );
                }
                if let Some(secs) = err.retry_after {
                    headers.insert(RETRY_AFTER, HeaderValue::from(secs));
                }
            }
            GatewayError::Unavailable {
                retry_after_secs, ..
            } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            GatewayError::Unauthorized {
                realm,
                invalid_token,
                description,
            } => {
                let challenge = if *invalid_token {
                    format!(
                        "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{}\"",
                        quoted(realm),
                        quoted(description)
                    )
                } else {
                    // RFC 6750 §3.1: no error code when the request carried no credential.
                    format!("Bearer realm=\"{}\"", quoted(realm))
                };
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(http::header::WWW_AUTHENTICATE, value);
                }
            }
            GatewayError::InsufficientScope { realm, scope } => {
                let challenge = format!(
                    "Bearer realm=\"{}\", error=\"insufficient_scope\", scope=\"{}\"",
                    quoted(realm),
                    quoted(scope)
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(http::header::WWW_AUTHENTICATE, value);
                }
            }
            GatewayError::TooManyRequests {
                limit,
                remaining,
                reset_secs,
                retry_after_secs,
                ..
            } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                headers.insert("x-ratelimit-limit", HeaderValue::from(*limit));
                headers.insert("x-ratelimit-remaining", HeaderValue::from(*remaining));
                headers.insert("x-ratelimit-reset", HeaderValue::from(*reset_secs));
            }
            GatewayError::AdminUnauthorized => {
                headers.insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tollgate-admin\""),
                );
            }
            _ => {}
        }
        if self.closes_connection() {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Makes a value safe inside a quoted-string of an auth challenge.
fn quoted(value: &str) -> String {
    value
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

/// `{"error": code, "error_description": description}` — the shape of every gateway-made error.
pub fn error_body(code: &str, description: &str) -> serde_json::Value {
    serde_json::json!({ "error": code, "error_description": description })
}

pub fn json_response<T: serde::Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
) -> Response<Body> {
    // Serialising a `serde_json::Value` or one of our response structs (string keys only) cannot fail.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Gateway-made JSON (errors, tokens, introspection) is never cacheable.
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_json_body_with_code_and_description() {
        let cases = [
            GatewayError::NotFound,
            GatewayError::BadRequest("bad path"),
            GatewayError::PayloadTooLarge { limit: 10 },
            GatewayError::RequestTimeout,
            GatewayError::BadGateway,
            GatewayError::GatewayTimeout,
            GatewayError::Unavailable {
                description: "storage unreachable",
                retry_after_secs: 1,
            },
        ];
        for err in cases {
            let status = err.status();
            let code = err.code();
            let response = err.into_response();
            assert_eq!(response.status(), status);
            assert_eq!(
                response.headers()[CONTENT_TYPE],
                HeaderValue::from_static("application/json")
            );
            assert!(!code.is_empty());
        }
    }

    #[tokio::test]
    async fn policy_in_use_lists_the_clients_in_the_error_body() {
        use http_body_util::BodyExt;
        let client = serde_json::json!({"api": "movies", "client_id": "app", "read_only": false});
        let err = GatewayError::PolicyInUse {
            description: "policy `gold` is used by 1 client(s): movies/app".into(),
            clients: vec![client.clone()],
        };
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "error": "policy_in_use",
                "error_description": "policy `gold` is used by 1 client(s): movies/app",
                "clients": [client],
            })
        );
    }

    #[test]
    fn unavailable_carries_retry_after() {
        let response = GatewayError::Unavailable {
            description: "storage unreachable",
            retry_after_secs: 2,
        }
        .into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "2");
    }
}
